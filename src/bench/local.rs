//! Servers started for a measurement and stopped after it: a cluster of our
//! nodes (optionally with a delaying proxy on every link), a Redis server,
//! an etcd cluster. Everything runs on loopback ports that were free, in a
//! fresh directory under the system's temp dir (a real disk here: fsync
//! costs what it costs), and is killed by process id when dropped.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::{Conn, parse_info};
use crate::proxy::Proxy;
use crate::resp::Reply;

/// A port nobody listens on right now, below the kernel's ephemeral range
/// (32768 and up on Linux), so that no outgoing connection can be handed it
/// while a node is down and about to restart on it. Ports are taken in turn
/// from a random start, so a process does not hand one out twice soon.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 10_000;
    const HIGH: u32 = 32_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let _ = NEXT.compare_exchange(0, LOW + rand::random::<u32>() % (HIGH - LOW), Ordering::SeqCst, Ordering::SeqCst);
    loop {
        let port = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = (LOW + (port.wrapping_sub(LOW)) % (HIGH - LOW)) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A fresh directory, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(what: &str) -> Result<Scratch, String> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("raftkv-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A program next to this one (`bin/node` beside `bin/lab`), or found on
/// PATH.
pub fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .map(|p| p.with_file_name(name))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

fn spawn(cmd: &mut Command, log: &Path) -> Result<Child, String> {
    let out = File::create(log).map_err(|e| format!("creating {}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("starting {:?}: {e}", cmd.get_program()))
}

fn stop(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// The last lines of a log file, for error messages.
pub fn tail(log: &Path, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(log) {
        let _ = f.read_to_string(&mut text);
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub size: u64,
    pub election_ms: (u64, u64),
    pub heartbeat_ms: u64,
    pub fsync: &'static str,
    /// Every link through a proxy that can delay it.
    pub proxies: bool,
    /// A cluster secret, accounts, TLS on both ports (README, Security).
    pub secure: Secure,
    /// Another build of the node (a baseline to compare with); by default
    /// `bin/node` beside this program.
    pub node: Option<PathBuf>,
}

/// What of README, Security a local cluster turns on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Secure {
    pub secret: bool,
    pub users: bool,
    pub tls: bool,
}

/// The account a secure local cluster has (an administrator).
pub const BENCH_USER: (&str, &str) = ("bench", "bench-password-4e1c");

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            size: 3,
            election_ms: (150, 300),
            heartbeat_ms: 50,
            fsync: "always",
            proxies: false,
            secure: Secure::default(),
            node: None,
        }
    }
}

pub struct LocalNode {
    pub raft_addr: String,
    pub client_addr: String,
    child: Option<Child>,
}

pub struct LocalCluster {
    pub options: ClusterOptions,
    pub nodes: BTreeMap<u64, LocalNode>,
    /// The proxy node `.0` reaches node `.1` through.
    pub proxies: BTreeMap<(u64, u64), Proxy>,
    /// How clients connect (TLS, a login) when the cluster is secure.
    pub client: crate::client::Security,
    /// The nodes' flags for it.
    secure_flags: Vec<String>,
    scratch: Scratch,
}

/// Makes a secret, an account and certificates (with the project's
/// `scripts/certs.sh`) in `dir`; returns the nodes' flags and how a client
/// connects.
fn secure_files(dir: &Path, secure: Secure) -> Result<(Vec<String>, crate::client::Security), String> {
    let mut flags = Vec::new();
    let mut client = crate::client::Security::default();
    let write = |name: &str, text: String| -> Result<String, String> {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
        Ok(path.display().to_string())
    };
    if secure.secret {
        flags.extend(["--cluster-secret".to_string(), write("secret", "bench-cluster-secret-61d0a9".into())?]);
    }
    if secure.users {
        let digest: String = crate::auth::sha256(BENCH_USER.1.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        flags.extend(["--users".to_string(), write("users", format!("{} {digest} admin\n", BENCH_USER.0))?]);
        client.login = Some((BENCH_USER.0.to_string(), BENCH_USER.1.to_string()));
    }
    if secure.tls {
        let script = sibling("..").join("scripts/certs.sh");
        let out = Command::new(&script).arg(dir).output().map_err(|e| format!("{}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!("{}: {}", script.display(), String::from_utf8_lossy(&out.stderr)));
        }
        for (flag, file) in [("--tls-cert", "node.pem"), ("--tls-key", "node.key"), ("--tls-ca", "ca.pem")] {
            flags.extend([flag.to_string(), dir.join(file).display().to_string()]);
        }
        client.tls = Some(crate::net::tls::client_config(&dir.join("ca.pem"))?);
    }
    Ok((flags, client))
}

impl LocalCluster {
    /// Starts the nodes and waits for a leader.
    pub fn start(options: ClusterOptions) -> Result<LocalCluster, String> {
        let scratch = Scratch::new("cluster")?;
        let mut nodes = BTreeMap::new();
        for id in 1..=options.size {
            let raft_addr = format!("127.0.0.1:{}", free_port());
            let client_addr = format!("127.0.0.1:{}", free_port());
            nodes.insert(id, LocalNode { raft_addr, client_addr, child: None });
        }
        let (secure_flags, client) = secure_files(&scratch.0, options.secure)?;
        let mut c = LocalCluster { options, nodes, proxies: BTreeMap::new(), client, secure_flags, scratch };
        for from in c.nodes.keys().copied().collect::<Vec<_>>() {
            let mut text = String::new();
            for (&id, n) in &c.nodes {
                let raft = if id != from && c.options.proxies {
                    let target = n.raft_addr.parse().map_err(|e| format!("{e}"))?;
                    let p = Proxy::start(target).map_err(|e| format!("starting a proxy: {e}"))?;
                    let addr = p.addr.to_string();
                    c.proxies.insert((from, id), p);
                    addr
                } else {
                    n.raft_addr.clone()
                };
                text.push_str(&format!("{id} {raft} {}\n", n.client_addr));
            }
            let path = c.peers_file(from);
            std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
        }
        for id in 1..=c.options.size {
            c.restart(id)?;
        }
        c.wait_leader(Duration::from_secs(20))?;
        Ok(c)
    }

    fn peers_file(&self, id: u64) -> PathBuf {
        self.scratch.0.join(format!("peers-{id}.txt"))
    }

    /// Node `id`'s data directory.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.scratch.0.join(format!("node-{id}"))
    }

    /// The last `lines` lines node `id` logged.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        tail(&self.log(id), lines)
    }

    fn log(&self, id: u64) -> PathBuf {
        self.scratch.0.join(format!("node-{id}.log"))
    }

    /// Starts node `id` (again, after a kill: same data directory).
    pub fn restart(&mut self, id: u64) -> Result<(), String> {
        let o = &self.options;
        let mut cmd = Command::new(o.node.clone().unwrap_or_else(|| sibling("node")));
        cmd.arg("--id")
            .arg(id.to_string())
            .arg("--peers")
            .arg(self.peers_file(id))
            .arg("--data")
            .arg(self.data_dir(id))
            .arg("--election-timeout")
            .arg(format!("{}-{}", o.election_ms.0, o.election_ms.1))
            .arg("--heartbeat")
            .arg(o.heartbeat_ms.to_string())
            .arg("--fsync")
            .arg(o.fsync)
            .arg("--log-level")
            .arg("warn")
            .args(&self.secure_flags);
        let log = self.log(id);
        let child = spawn(&mut cmd, &log)?;
        if let Some(n) = self.nodes.get_mut(&id) {
            stop(&mut n.child);
            n.child = Some(child);
        }
        Ok(())
    }

    /// `kill -9`.
    pub fn kill(&mut self, id: u64) {
        if let Some(n) = self.nodes.get_mut(&id) {
            stop(&mut n.child);
        }
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.child.is_some())
    }

    pub fn client_addr(&self, id: u64) -> String {
        self.nodes.get(&id).map(|n| n.client_addr.clone()).unwrap_or_default()
    }

    /// The process ids of the running nodes, in id order.
    pub fn pids(&self) -> Vec<(u64, u32)> {
        self.nodes.iter().filter_map(|(&id, n)| Some((id, n.child.as_ref()?.id()))).collect()
    }

    /// Node `id`'s INFO as field → value.
    pub fn info(&self, id: u64) -> Option<BTreeMap<String, String>> {
        info_secure(&self.client_addr(id), &self.client)
    }

    /// Waits until exactly one running node leads and every running node
    /// follows it.
    pub fn wait_leader(&self, timeout: Duration) -> Result<u64, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let running: Vec<u64> = self.nodes.keys().copied().filter(|&id| self.is_running(id)).collect();
            let infos: Vec<_> = running.iter().filter_map(|&id| self.info(id).map(|i| (id, i))).collect();
            let leaders: Vec<u64> =
                infos.iter().filter(|(_, i)| i.get("role").is_some_and(|r| r == "leader")).map(|(id, _)| *id).collect();
            if let [leader] = leaders[..]
                && infos.len() == running.len()
                && infos.iter().all(|(_, i)| i.get("leader_id") == Some(&leader.to_string()))
            {
                return Ok(leader);
            }
            if Instant::now() >= deadline {
                let logs: Vec<String> =
                    self.nodes.keys().map(|&id| format!("--- node {id}\n{}", tail(&self.log(id), 10))).collect();
                return Err(format!("no leader within {timeout:?}\n{}", logs.join("\n")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal by name (STOP, CONT) to node `id`.
    pub fn signal(&self, id: u64, signal: &str) -> Result<(), String> {
        let pid = self.nodes.get(&id).and_then(|n| n.child.as_ref()).map(|c| c.id());
        let pid = pid.ok_or_else(|| format!("node {id} is not running"))?;
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .map_err(|e| format!("kill -{signal} {pid}: {e}"))?;
        if !status.success() {
            return Err(format!("kill -{signal} {pid} failed"));
        }
        Ok(())
    }

    /// Cuts (or heals) every raft link to and from node `id`.
    pub fn isolate(&self, id: u64, cut: bool) {
        for (&(from, to), p) in &self.proxies {
            if from == id || to == id {
                p.set_cut(cut);
            }
        }
    }

    /// Delays every link to and from node `id` by `delay` each way.
    pub fn slow_node(&self, id: u64, delay: Duration) {
        for (&(from, to), p) in &self.proxies {
            if from == id || to == id {
                p.set_delay(delay);
            }
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for n in self.nodes.values_mut() {
            stop(&mut n.child);
        }
    }
}

/// INFO of the server at `addr` as field → value.
pub fn info(addr: &str) -> Option<BTreeMap<String, String>> {
    info_secure(addr, &crate::client::Security::default())
}

/// INFO over TLS or with a login.
pub fn info_secure(addr: &str, security: &crate::client::Security) -> Option<BTreeMap<String, String>> {
    let mut c = Conn::open_secure(addr, Duration::from_millis(500), security).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(2)));
    match c.call(&["INFO"]).ok()? {
        Reply::Bulk(Some(text)) => Some(parse_info(&String::from_utf8_lossy(&text))),
        _ => None,
    }
}

/// One redis-server, AOF on with the given appendfsync policy.
pub struct RedisServer {
    pub addr: String,
    child: Option<Child>,
    _scratch: Scratch,
}

impl RedisServer {
    pub fn start(appendfsync: &str) -> Result<RedisServer, String> {
        let scratch = Scratch::new("redis")?;
        let port = free_port();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"])
            .args(["--appendfsync", appendfsync, "--daemonize", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&scratch.0);
        let child = spawn(&mut cmd, &scratch.0.join("redis.log"))?;
        let addr = format!("127.0.0.1:{port}");
        let server = RedisServer { addr, child: Some(child), _scratch: scratch };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Conn::open(&server.addr).and_then(|mut c| c.call(&["PING"])).is_err() {
            if Instant::now() >= deadline {
                return Err(format!("redis-server did not answer on {}", server.addr));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// An etcd cluster at its default settings (fsync on every commit), on
/// loopback.
pub struct EtcdCluster {
    pub client_urls: Vec<String>,
    children: Vec<Option<Child>>,
    scratch: Scratch,
}

impl EtcdCluster {
    pub fn start(size: usize) -> Result<EtcdCluster, String> {
        let scratch = Scratch::new("etcd")?;
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
        let initial: Vec<String> =
            ports.iter().enumerate().map(|(i, (_, peer))| format!("e{i}=http://127.0.0.1:{peer}")).collect();
        let mut c = EtcdCluster { client_urls: Vec::new(), children: Vec::new(), scratch };
        for (i, (client, peer)) in ports.iter().enumerate() {
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let mut cmd = Command::new("etcd");
            cmd.args(["--name", &format!("e{i}")])
                .arg("--data-dir")
                .arg(c.scratch.0.join(format!("e{i}")))
                .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &initial.join(","), "--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", "raftkv-bench", "--logger", "zap", "--log-level", "error"]);
            c.children.push(Some(spawn(&mut cmd, &c.scratch.0.join(format!("e{i}.log")))?));
            c.client_urls.push(client_url);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while c.leader().is_none() {
            if Instant::now() >= deadline {
                let log = tail(&c.scratch.0.join("e0.log"), 10);
                return Err(format!("etcd elected no leader in 30 s\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(c)
    }

    /// The index of the member that leads, when all agree.
    pub fn leader(&self) -> Option<usize> {
        let mut ids = Vec::new();
        for url in &self.client_urls {
            let body = http_post(url, "/v3/maintenance/status", "{}").ok()?;
            ids.push((json_string(&body, "member_id")?, json_string(&body, "leader")?));
        }
        let leader = &ids.first()?.1;
        if ids.iter().any(|(_, l)| l != leader) {
            return None;
        }
        ids.iter().position(|(m, _)| m == leader)
    }

    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().flatten().map(Child::id).collect()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            stop(c);
        }
    }
}

/// A one-shot HTTP/1.0 POST; the response body.
pub fn http_post(url: &str, path: &str, body: &str) -> Result<String, String> {
    let host = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(host).map_err(|e| format!("{host}: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let req = format!(
        "POST {path} HTTP/1.0\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).map_err(|e| e.to_string())?;
    let (head, body) = resp.split_once("\r\n\r\n").ok_or("no HTTP header end")?;
    if !head.starts_with("HTTP/1.") || !head.split(' ').nth(1).is_some_and(|c| c.starts_with('2')) {
        return Err(format!("{path}: {}", head.lines().next().unwrap_or("")));
    }
    Ok(body.to_string())
}

/// The string value of `"name":"..."` in a flat JSON text (etcd writes its
/// 64-bit ids as strings).
pub fn json_string(json: &str, name: &str) -> Option<String> {
    let at = json.find(&format!("\"{name}\":\""))? + name.len() + 4;
    let end = json[at..].find('"')?;
    Some(json[at..at + end].to_string())
}
