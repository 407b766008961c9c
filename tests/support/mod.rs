//! Running real `node` processes the way users do, for the process-level
//! tests: free loopback ports, a temporary directory per cluster, logs kept
//! per node (printed when a test fails), and every process killed by its id
//! when the cluster is dropped.

#![allow(dead_code)]

pub mod load;
pub mod secure;
pub mod workloads;
pub mod writers;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use raftkv::proxy;
use raftkv::resp::{self, Reply};

pub use raftkv::bench::local::free_port;
pub use raftkv::client::parse_info;

pub struct TestNode {
    pub id: u64,
    pub raft_addr: String,
    pub client_addr: String,
    pub data: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl TestNode {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub peers_path: PathBuf,
    pub nodes: BTreeMap<u64, TestNode>,
    /// Extra flags every node gets.
    pub flags: Vec<String>,
    /// With `with_proxies`: the proxy node `.0` reaches node `.1` through.
    pub proxies: BTreeMap<(u64, u64), proxy::Proxy>,
    /// Environment variables every node gets.
    pub env: Vec<(String, String)>,
    /// How the harness's own clients connect (TLS, a login) to a secure
    /// cluster.
    pub client_security: ClientSecurity,
    /// A command the node is run under, e.g. `ip netns exec NS` (it must
    /// exec the node, so that the process id is the node's).
    pub wrapper: BTreeMap<u64, Vec<String>>,
}

/// TLS (trusting this CA) and a login for the harness's clients.
#[derive(Clone, Default)]
pub struct ClientSecurity {
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    pub login: Option<(String, String)>,
}

pub const ELECTION_FLAGS: [&str; 4] = ["--election-timeout", "150-300", "--heartbeat", "30"];

impl TestCluster {
    /// A cluster of `n` nodes (ids 1..=n), written to a peers file, not
    /// started yet.
    pub fn new(n: u64) -> TestCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            let node = TestNode {
                id,
                raft_addr: format!("127.0.0.1:{}", free_port()),
                client_addr: format!("127.0.0.1:{}", free_port()),
                data: dir.path().join(format!("node-{id}")),
                log: dir.path().join(format!("node-{id}.log")),
                child: None,
            };
            nodes.insert(id, node);
        }
        let peers_path = dir.path().join("peers.txt");
        let mut cluster = TestCluster {
            dir,
            peers_path,
            nodes,
            flags: ELECTION_FLAGS.iter().map(|s| s.to_string()).collect(),
            proxies: BTreeMap::new(),
            env: Vec::new(),
            client_security: ClientSecurity::default(),
            wrapper: BTreeMap::new(),
        };
        cluster.write_peers(&(1..=n).collect::<Vec<_>>());
        cluster
    }

    /// A cluster whose every link goes through a proxy that can cut it: each
    /// node gets its own peers file, with its own real address and the
    /// proxies' addresses for the others.
    pub fn with_proxies(n: u64) -> TestCluster {
        let mut c = TestCluster::new(n);
        for from in 1..=n {
            for to in (1..=n).filter(|&to| to != from) {
                let target = c.nodes[&to].raft_addr.parse().expect("raft addr");
                c.proxies.insert((from, to), proxy::Proxy::start(target).expect("start proxy"));
            }
            let mut text = String::from("# written by the test harness: peers through proxies\n");
            for (&id, node) in &c.nodes {
                let raft = if id == from { node.raft_addr.clone() } else { c.proxies[&(from, id)].addr.to_string() };
                text.push_str(&format!("{id} {raft} {}\n", node.client_addr));
            }
            std::fs::write(c.peers_file(from), text).expect("write peers file");
        }
        c
    }

    /// The peers file node `id` is started with.
    pub fn peers_file(&self, id: u64) -> PathBuf {
        if self.proxies.is_empty() { self.peers_path.clone() } else { self.dir.path().join(format!("peers-{id}.txt")) }
    }

    /// Cuts (or heals) the links so that only nodes in the same group talk.
    pub fn partition(&self, groups: &[&[u64]]) {
        let group_of = |id: u64| groups.iter().position(|g| g.contains(&id));
        for (&(from, to), p) in &self.proxies {
            let together = group_of(from).is_some() && group_of(from) == group_of(to);
            p.set_cut(!together);
        }
    }

    /// Cuts one direction: `from` can no longer send to `to`.
    pub fn cut(&self, from: u64, to: u64) {
        self.proxies[&(from, to)].set_cut(true);
    }

    /// Keeps exactly the links (both directions) that `linked` allows.
    pub fn links(&self, linked: impl Fn(u64, u64) -> bool) {
        for (&(from, to), p) in &self.proxies {
            p.set_cut(!(linked(from, to) || linked(to, from)));
        }
    }

    /// Two sides that cannot talk, and a bridge node that talks to both.
    pub fn bridge(&self, a: &[u64], b: &[u64], bridge: u64) {
        self.links(|x, y| {
            let side = |n: u64| {
                if n == bridge {
                    0
                } else if a.contains(&n) {
                    1
                } else if b.contains(&n) {
                    2
                } else {
                    3
                }
            };
            side(x) == 0 || side(y) == 0 || side(x) == side(y)
        });
    }

    /// Each node talks only to its two neighbours in `order`, a ring.
    pub fn ring(&self, order: &[u64]) {
        let n = order.len();
        let pos = |id: u64| order.iter().position(|&x| x == id);
        self.links(|x, y| match (pos(x), pos(y)) {
            (Some(i), Some(j)) => (i + 1) % n == j || (j + 1) % n == i,
            _ => false,
        });
    }

    /// Slows every link into and out of `id` (a straggler); zero heals.
    pub fn slow(&self, id: u64, delay: Duration) {
        for (&(from, to), p) in &self.proxies {
            if from == id || to == id {
                p.set_delay(delay);
            }
        }
    }

    pub fn heal(&self) {
        for p in self.proxies.values() {
            p.set_cut(false);
            p.set_delay(Duration::ZERO);
        }
    }

    /// Waits until every running node has applied what the leader
    /// committed, then checks that all of them hold the same values for
    /// `keys` (read locally, with READONLY).
    pub fn assert_converged(&mut self, keys: &[String]) {
        let leader =
            self.wait_for_leader(Duration::from_secs(20)).unwrap_or_else(|| panic!("no leader\n{}", self.logs()));
        let target = self.info(leader).and_then(|i| i["commit_index"].parse::<u64>().ok()).unwrap_or(0);
        let running = self.running();
        let deadline = Instant::now() + Duration::from_secs(30);
        for &id in &running {
            while self.info(id).and_then(|i| i["last_applied"].parse::<u64>().ok()).unwrap_or(0) < target {
                assert!(Instant::now() < deadline, "node {id} did not apply through {target}\n{}", self.logs());
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let mut maps = Vec::new();
        for &id in &running {
            let mut c = self.client(id).expect("connect");
            assert_eq!(text(&c.cmd(&["READONLY"]).expect("READONLY")), "OK");
            let mut args = vec!["MGET"];
            args.extend(keys.iter().map(String::as_str));
            let values = c.cmd(&args).expect("MGET");
            maps.push((id, values));
        }
        for pair in maps.windows(2) {
            assert_eq!(pair[0].1, pair[1].1, "nodes {} and {} differ\n{}", pair[0].0, pair[1].0, self.logs());
        }
    }

    /// Writes the peers file listing `ids`.
    pub fn write_peers(&mut self, ids: &[u64]) {
        let mut text = String::from("# written by the test harness\n");
        for id in ids {
            let n = &self.nodes[id];
            text.push_str(&format!("{} {} {}\n", n.id, n.raft_addr, n.client_addr));
        }
        std::fs::write(&self.peers_path, text).expect("write peers file");
    }

    /// Adds a node (not in the peers file yet) for membership tests.
    pub fn add_node(&mut self, id: u64) {
        let node = TestNode {
            id,
            raft_addr: format!("127.0.0.1:{}", free_port()),
            client_addr: format!("127.0.0.1:{}", free_port()),
            data: self.dir.path().join(format!("node-{id}")),
            log: self.dir.path().join(format!("node-{id}.log")),
            child: None,
        };
        self.nodes.insert(id, node);
    }

    pub fn node_command(&self, id: u64, extra: &[&str]) -> Command {
        let n = &self.nodes[&id];
        let mut cmd = match self.wrapper.get(&id) {
            Some(w) => {
                let mut cmd = Command::new(&w[0]);
                cmd.args(&w[1..]).arg(env!("CARGO_BIN_EXE_node"));
                cmd
            }
            None => Command::new(env!("CARGO_BIN_EXE_node")),
        };
        cmd.arg("--id").arg(id.to_string()).arg("--peers").arg(self.peers_file(id)).arg("--data").arg(&n.data);
        cmd.args(&self.flags).args(extra).stdin(Stdio::null());
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    pub fn start_with(&mut self, id: u64, extra: &[&str]) {
        assert!(!self.nodes.get_mut(&id).expect("known node").is_running(), "node {id} already runs");
        let log = OpenOptions::new().create(true).append(true).open(&self.nodes[&id].log).expect("log file");
        let mut cmd = self.node_command(id, extra);
        cmd.stdout(log.try_clone().expect("log file")).stderr(log);
        let child = cmd.spawn().expect("spawn node");
        self.nodes.get_mut(&id).expect("known node").child = Some(child);
    }

    pub fn start(&mut self, id: u64) {
        self.start_with(id, &[]);
    }

    pub fn start_all(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.start(id);
        }
    }

    /// `kill -9`.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.nodes.get_mut(&id).and_then(|n| n.child.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a signal by name (STOP, CONT, TERM, INT) to a running node.
    pub fn signal(&self, id: u64, signal: &str) {
        let pid = self.nodes[&id].pid().expect("node is running");
        let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().expect("kill");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    /// SIGTERM, then waits (bounded) for the exit status.
    pub fn stop(&mut self, id: u64) -> Option<ExitStatus> {
        self.stop_with(id, "TERM")
    }

    /// Sends `signal` (TERM or INT), then waits (bounded) for the exit status.
    pub fn stop_with(&mut self, id: u64, signal: &str) -> Option<ExitStatus> {
        self.signal(id, signal);
        let mut child = self.nodes.get_mut(&id)?.child.take()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit status of a node that exited by itself (it then counts as
    /// stopped), or None while it runs.
    pub fn exited(&mut self, id: u64) -> Option<ExitStatus> {
        let node = self.nodes.get_mut(&id)?;
        let status = node.child.as_mut()?.try_wait().ok()??;
        node.child = None;
        Some(status)
    }

    /// Panics, with the logs, if a node the test did not stop has exited.
    pub fn assert_none_exited(&mut self) {
        let mut exited = Vec::new();
        for n in self.nodes.values_mut() {
            if let Some(Ok(Some(status))) = n.child.as_mut().map(|c| c.try_wait()) {
                exited.push(format!("node {} exited by itself: {status}", n.id));
            }
        }
        assert!(exited.is_empty(), "{}\n{}", exited.join("\n"), self.logs());
    }

    pub fn running(&mut self) -> Vec<u64> {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        ids.into_iter().filter(|id| self.nodes.get_mut(id).is_some_and(|n| n.is_running())).collect()
    }

    pub fn client(&self, id: u64) -> io::Result<Client> {
        Client::connect_secure(&self.nodes[&id].client_addr, &self.client_security)
    }

    /// One INFO field as a number (0 if the node does not answer).
    pub fn info_u64(&self, id: u64, field: &str) -> u64 {
        self.info(id).and_then(|i| i.get(field).and_then(|v| v.parse().ok())).unwrap_or(0)
    }

    /// Bytes under a node's data directory.
    pub fn disk_bytes(&self, id: u64) -> u64 {
        fn walk(p: &std::path::Path) -> u64 {
            let Ok(entries) = std::fs::read_dir(p) else { return 0 };
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.nodes[&id].data)
    }

    /// INFO as a map, or None if the node does not answer.
    pub fn info(&self, id: u64) -> Option<BTreeMap<String, String>> {
        let mut c = self.client(id).ok()?;
        match c.cmd(&["INFO"]).ok()? {
            Reply::Bulk(Some(text)) => Some(parse_info(&String::from_utf8_lossy(&text))),
            _ => None,
        }
    }

    /// Waits for exactly one node to lead among the running ones, with the
    /// others following it; returns its id.
    pub fn wait_for_leader(&mut self, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let running = self.running();
            let infos: Vec<(u64, BTreeMap<String, String>)> =
                running.iter().filter_map(|&id| self.info(id).map(|i| (id, i))).collect();
            let leaders: Vec<u64> = infos.iter().filter(|(_, i)| i["role"] == "leader").map(|(id, _)| *id).collect();
            if let [leader] = leaders[..] {
                let agreed = infos.iter().all(|(_, i)| i["leader_id"] == leader.to_string());
                if agreed && infos.len() == running.len() {
                    return Some(leader);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Node `id`'s whole log so far (empty if it has none yet).
    pub fn log_of(&self, id: u64) -> String {
        std::fs::read_to_string(&self.nodes[&id].log).unwrap_or_default()
    }

    /// The last lines of every node's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in self.nodes.values() {
            let text = self.log_of(n.id);
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            out.push_str(&format!("---- node {} log (last {} lines)\n{}\n", n.id, tail.len(), tail.join("\n")));
        }
        out
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for n in self.nodes.values_mut() {
            if let Some(mut child) = n.child.take() {
                // A paused node must be resumed to die cleanly.
                let _ = Command::new("kill").arg("-CONT").arg(child.id().to_string()).status();
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A blocking RESP client with timeouts.
pub struct Client {
    stream: raftkv::net::Stream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: &str) -> io::Result<Client> {
        Client::connect_secure(addr, &ClientSecurity::default())
    }

    /// Over TLS and logged in, as `security` says.
    pub fn connect_secure(addr: &str, security: &ClientSecurity) -> io::Result<Client> {
        let sock = addr.parse().map_err(|e| io::Error::other(format!("{addr}: {e}")))?;
        let tcp = TcpStream::connect_timeout(&sock, Duration::from_secs(2))?;
        tcp.set_read_timeout(Some(Duration::from_secs(15)))?;
        tcp.set_nodelay(true)?;
        let stream = match &security.tls {
            Some(tls) => raftkv::net::tls::connect(tls, raftkv::net::tls::host_of(addr), tcp)?,
            None => raftkv::net::Stream::Plain(tcp),
        };
        let mut client = Client { stream, buf: Vec::new() };
        if let Some((user, password)) = &security.login {
            let reply = client.cmd(&["AUTH", user, password])?;
            if reply != Reply::ok() {
                return Err(io::Error::other(format!("AUTH as {user}: {reply:?}")));
            }
        }
        Ok(client)
    }

    pub fn cmd(&mut self, args: &[&str]) -> io::Result<Reply> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.cmd_bytes(&args)
    }

    pub fn cmd_bytes(&mut self, args: &[&[u8]]) -> io::Result<Reply> {
        let mut request = Vec::new();
        resp::encode_request(args, &mut request);
        self.send_raw(&request)?;
        self.read_reply()
    }

    /// Sends every command at once, then reads every reply, in order.
    pub fn pipeline(&mut self, cmds: &[Vec<Vec<u8>>]) -> io::Result<Vec<Reply>> {
        let mut request = Vec::new();
        for cmd in cmds {
            let args: Vec<&[u8]> = cmd.iter().map(|a| &a[..]).collect();
            resp::encode_request(&args, &mut request);
        }
        self.send_raw(&request)?;
        cmds.iter().map(|_| self.read_reply()).collect()
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    pub fn read_reply(&mut self) -> io::Result<Reply> {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match resp::parse_reply(&self.buf) {
                Ok(Some((reply, used))) => {
                    self.buf.drain(..used);
                    return Ok(reply);
                }
                Ok(None) => {}
                Err(e) => return Err(io::Error::other(e.to_string())),
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// A reply as a short string for assertions: `+OK` -> "OK", errors keep
/// their code, bulk strings their text, nil -> "(nil)".
pub fn text(reply: &Reply) -> String {
    match reply {
        Reply::Simple(s) => s.clone(),
        Reply::Error(e) => format!("-{e}"),
        Reply::Integer(i) => i.to_string(),
        Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
        Reply::Value(b) => String::from_utf8_lossy(b).into_owned(),
        Reply::Bulk(None) => "(nil)".to_string(),
        Reply::Array(a) => format!("{a:?}"),
        Reply::Verbatim(t) | Reply::BigNumber(t) => t.clone(),
        Reply::Bool(b) => b.to_string(),
        Reply::Double(x) => raftkv::reply::double_text(*x),
        Reply::Map(_) | Reply::Set(_) => format!("{reply:?}"),
    }
}

/// Whether a redis-py script could run: false, after saying so, when
/// redis-py is not installed and the run does not require it
/// (RAFTKV_REQUIRE_PYTHON_REDIS, set by `make test`).
pub fn redis_py_ran(out: &std::process::Output) -> bool {
    if !String::from_utf8_lossy(&out.stderr).contains("No module named 'redis'") {
        return true;
    }
    assert!(std::env::var("RAFTKV_REQUIRE_PYTHON_REDIS").is_err(), "redis-py is required but missing");
    eprintln!("skipped redis-py: not installed (scripts/deps.sh installs it)");
    false
}

/// Runs a redis-py check that prints `ok` when it passes; panics with its
/// error and the cluster's logs when it does not.
pub fn run_redis_py(python: &mut Command, c: &TestCluster) {
    let out = python.output().unwrap_or_else(|e| panic!("python3: {e}"));
    if !redis_py_ran(&out) {
        return;
    }
    assert_printed_ok("redis-py", &out, c);
}

/// A client suite passed: it exited cleanly and printed `ok`; otherwise
/// panics with its output and the cluster's logs.
pub fn assert_printed_ok(what: &str, out: &std::process::Output, c: &TestCluster) {
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "{what} failed:\n{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        c.logs()
    );
}
