//! A real network (README, Security): three nodes in three Linux network namespaces,
//! on their own non-loopback addresses behind a bridge, with TLS on both
//! ports, a cluster secret and accounts; a fourth namespace plays the
//! attacker on the same network and tries what an attacker would: the old
//! unauthenticated peer protocol, TLS without a certificate or with one of
//! another CA, clients without an account, a wrong password, `RAFT ADD` of
//! its own node, a flood of idle connections while a node restarts. The
//! cluster must lose nothing and keep serving. A node on the network
//! without `--users` turns clients away (protected mode).
//!
//! The test makes its namespaces, a bridge and veth pairs with `ip` (as
//! root) and removes them when it ends. Where namespaces cannot be made it
//! is skipped with a message, unless RAFTKV_REQUIRE_NETNS=1 (as in CI).
//! Traffic goes only to the addresses of the namespaces it made.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use raftkv::net::handshake::{self, Local};
use raftkv::raft::NodeId;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use support::secure::USERS;
use support::{Client, ClientSecurity, TestCluster, free_port, text};

unsafe extern "C" {
    fn setns(fd: i32, nstype: i32) -> i32;
}

const CLONE_NEWNET: i32 = 0x4000_0000;

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Namespaces on one bridge, removed when dropped.
struct Net {
    prefix: String,
    subnet: String,
    names: Vec<String>,
}

impl Net {
    /// A switch namespace holding a bridge, and `hosts` namespaces each
    /// with one address on it: `10.199.S.(10+i)`.
    fn make(hosts: &[&str]) -> Result<Net, String> {
        let pid = std::process::id();
        let prefix = format!("rkv{}", pid % 100_000);
        let subnet = format!("10.199.{}", pid % 250 + 1);
        let mut net = Net { prefix: prefix.clone(), subnet, names: Vec::new() };
        let sw = format!("{prefix}-sw");
        ip(&["netns", "add", &sw])?;
        net.names.push(sw.clone());
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        for (i, host) in hosts.iter().enumerate() {
            let ns = format!("{prefix}-{host}");
            ip(&["netns", "add", &ns])?;
            net.names.push(ns.clone());
            let (inside, outside) = (format!("{prefix}h{i}"), format!("{prefix}s{i}"));
            ip(&["link", "add", &inside, "type", "veth", "peer", "name", &outside])?;
            ip(&["link", "set", &inside, "netns", &ns])?;
            ip(&["link", "set", &outside, "netns", &sw])?;
            ip(&["-n", &sw, "link", "set", &outside, "master", "br0"])?;
            ip(&["-n", &sw, "link", "set", &outside, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{}/24", net.addr(i)), "dev", &inside])?;
            ip(&["-n", &ns, "link", "set", &inside, "up"])?;
        }
        Ok(net)
    }

    fn addr(&self, host: usize) -> String {
        format!("{}.{}", self.subnet, 10 + host)
    }

    fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    /// Runs `f` on a thread that lives in `host`'s namespace: its sockets
    /// are that host's.
    fn inside<T: Send + 'static>(&self, host: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.ns(host));
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            use std::os::fd::AsRawFd;
            // SAFETY: a valid namespace file descriptor; only this thread
            // moves (setns changes the calling thread's namespace).
            let rc = unsafe { setns(file.as_raw_fd(), CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("thread in a namespace")
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.names.iter().rev() {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

fn namespaces_or_skip(hosts: &[&str]) -> Option<Net> {
    match Net::make(hosts) {
        Ok(net) => Some(net),
        Err(e) => {
            assert!(
                std::env::var("RAFTKV_REQUIRE_NETNS").is_err(),
                "network namespaces are required (RAFTKV_REQUIRE_NETNS) but cannot be made: {e}"
            );
            eprintln!("skipped: cannot make network namespaces here ({e}); run as root with iproute2");
            None
        }
    }
}

fn login(name: &str) -> Option<(String, String)> {
    USERS.iter().find(|u| u.0 == name).map(|(u, p, _)| (u.to_string(), p.to_string()))
}

#[test]
fn a_secure_cluster_on_a_real_network_withstands_an_attacker() {
    let hosts = ["n1", "n2", "n3", "attacker"];
    let Some(net) = namespaces_or_skip(&hosts) else { return };
    let mut c = TestCluster::new(3);
    let addrs: Vec<String> = (0..3).map(|i| net.addr(i)).collect();
    let files = support::secure::make_files(
        &c.dir.path().join("secure"),
        &addrs.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    for id in 1..=3u64 {
        let n = c.nodes.get_mut(&id).unwrap();
        n.raft_addr = format!("{}:{}", addrs[id as usize - 1], free_port());
        n.client_addr = format!("{}:{}", addrs[id as usize - 1], free_port());
        let ns = net.ns(hosts[id as usize - 1]);
        c.wrapper.insert(id, vec!["ip".into(), "netns".into(), "exec".into(), ns]);
    }
    c.write_peers(&[1, 2, 3]);
    for (flag, path) in [
        ("--cluster-secret", &files.secret),
        ("--users", &files.users),
        ("--tls-cert", &files.cert),
        ("--tls-key", &files.key),
        ("--tls-ca", &files.ca),
    ] {
        c.flags.extend([flag.to_string(), path.display().to_string()]);
    }
    let tls = raftkv::net::tls::client_config(&files.ca).unwrap();
    c.client_security = ClientSecurity { tls: Some(tls.clone()), login: login("alice") };
    c.start_all();
    // The operator works from the attacker's network too: a client with an
    // account is served from anywhere.
    let c = Arc::new(parking_lot::Mutex::new(c));
    let (leader, keys) = {
        let c = c.clone();
        net.inside("attacker", move || {
            let mut c = c.lock();
            let l = c.wait_for_leader(Duration::from_secs(20)).unwrap_or_else(|| panic!("no leader\n{}", c.logs()));
            let mut conn = c.client(l).unwrap();
            let keys: Vec<(String, String)> = (0..20).map(|i| (format!("k{i}"), format!("v{i}"))).collect();
            for (k, v) in &keys {
                assert_eq!(text(&conn.cmd(&["SET", k, v]).unwrap()), "OK");
            }
            (l, keys)
        })
    };
    let targets: Vec<(u64, String, String)> = {
        let c = c.lock();
        c.nodes.values().map(|n| (n.id, n.raft_addr.clone(), n.client_addr.clone())).collect()
    };
    let other_ca = support::secure::make_files(&c.lock().dir.path().join("other-ca"), &[]);
    let attacks = {
        let targets = targets.clone();
        let tls = tls.clone();
        // Trusts the cluster's CA (so it can talk to the nodes) but presents
        // a certificate of its own CA.
        let other = Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(raftkv::net::tls::roots(&files.ca).unwrap())
                .with_client_auth_cert(
                    CertificateDer::pem_file_iter(&other_ca.cert).unwrap().map(|c| c.unwrap()).collect(),
                    PrivateKeyDer::from_pem_file(&other_ca.key).unwrap(),
                )
                .unwrap(),
        );
        net.inside("attacker", move || attack(&targets, &tls, &other))
    };
    for line in &attacks {
        println!("attacker: {line}");
    }
    // Flood every raft port with idle connections and restart a follower:
    // it gets back in, and nothing was lost.
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    {
        let c = c.clone();
        let targets = targets.clone();
        let keys = keys.clone();
        net.inside("attacker", move || {
            let mut idle = Vec::new();
            for (_, raft, _) in &targets {
                for _ in 0..200 {
                    if let Ok(s) = TcpStream::connect_timeout(&raft.parse().unwrap(), Duration::from_millis(300)) {
                        idle.push(s);
                    }
                }
            }
            let mut c = c.lock();
            c.kill(follower);
            c.start(follower);
            let l = c.wait_for_leader(Duration::from_secs(20)).unwrap_or_else(|| panic!("no leader\n{}", c.logs()));
            let mut conn = c.client(l).unwrap();
            assert_eq!(text(&conn.cmd(&["SET", "after", "attack"]).unwrap()), "OK");
            let target = c.info_u64(l, "commit_index");
            let deadline = Instant::now() + Duration::from_secs(20);
            while c.info_u64(follower, "last_applied") < target {
                assert!(Instant::now() < deadline, "node {follower} did not get back in\n{}", c.logs());
                std::thread::sleep(Duration::from_millis(100));
            }
            for id in 1..=3 {
                let mut conn = c.client(id).unwrap();
                for (k, v) in &keys {
                    assert_eq!(&text(&conn.cmd(&["GET", k]).unwrap()), v, "node {id}\n{}", c.logs());
                }
                assert_eq!(text(&conn.cmd(&["GET", "after"]).unwrap()), "attack");
                assert_eq!(text(&conn.cmd(&["DBSIZE"]).unwrap()), "21", "node {id}: something forged was applied");
                let members = c.info(id).unwrap()["members"].clone();
                assert_eq!(members, "1,2,3", "node {id}: the membership changed");
            }
            c.assert_none_exited();
            drop(idle);
        });
    }
    // Protected mode on a real network: a node without --users turns away
    // a client from another host, and says how to fix it.
    let mut solo = TestCluster::new(1);
    let n1 = net.addr(0);
    {
        let n = solo.nodes.get_mut(&1).unwrap();
        n.raft_addr = format!("{n1}:{}", free_port());
        n.client_addr = format!("{n1}:{}", free_port());
    }
    solo.write_peers(&[1]);
    solo.wrapper.insert(1, vec!["ip".into(), "netns".into(), "exec".into(), net.ns("n1")]);
    solo.flags.extend(["--cluster-secret".to_string(), files.secret.display().to_string()]);
    solo.start(1);
    let addr = solo.nodes[&1].client_addr.clone();
    let denied = net.inside("attacker", move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(300)) {
                Ok(mut s) => {
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let _ = s.write_all(b"GET k\r\n");
                    let mut got = Vec::new();
                    let _ = s.read_to_end(&mut got);
                    return String::from_utf8_lossy(&got).into_owned();
                }
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
                Err(e) => panic!("the solo node never listened: {e}"),
            }
        }
    });
    assert!(denied.starts_with("-DENIED") && denied.contains("--users"), "{denied:?}");
    let logs = c.lock().logs();
    assert!(!logs.contains(support::secure::SECRET), "the secret is in a log");
}

/// Everything the attacker tries; each must fail. Returns what happened.
fn attack(
    targets: &[(u64, String, String)],
    tls: &Arc<rustls::ClientConfig>,
    other_ca: &Arc<rustls::ClientConfig>,
) -> Vec<String> {
    let mut seen = Vec::new();
    for (id, raft, client) in targets {
        let host = raftkv::net::tls::host_of(raft).to_string();
        let connect = |addr: &str| TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2));
        // The old peer protocol in plain text, to a TLS port.
        let mut s = connect(raft).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut old = b"RKVP".to_vec();
        old.extend_from_slice(&2u16.to_le_bytes());
        old.extend_from_slice(&9u64.to_le_bytes());
        old.extend_from_slice(&id.to_le_bytes());
        let _ = s.write_all(&old);
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        assert!(!buf[..n].starts_with(b"RKVP"), "a plain-text peer was answered");
        seen.push(format!("node {id}: plain-text peer handshake: {n} bytes back, no peer session"));
        // TLS with no client certificate: mutual TLS refuses it.
        let tcp = connect(raft).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut stream = raftkv::net::tls::connect(tls, &host, tcp).unwrap();
        let local = Local { id: NodeId(9), cluster: None, incarnation: 1, secret: None };
        let r = handshake::dial(&mut stream, &local, NodeId(*id));
        assert!(r.is_err(), "a peer without a certificate got in: {r:?}");
        seen.push(format!("node {id}: TLS without a client certificate: {}", r.unwrap_err()));
        // A certificate of another CA.
        let tcp = connect(raft).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut stream = raftkv::net::tls::connect(other_ca, &host, tcp).unwrap();
        let r = handshake::dial(&mut stream, &local, NodeId(*id));
        assert!(r.is_err(), "a certificate of another CA was accepted: {r:?}");
        seen.push(format!("node {id}: a certificate of another CA: {}", r.unwrap_err()));
        // Clients: nothing without an account, and no administration.
        let anon = ClientSecurity { tls: Some(tls.clone()), login: None };
        let mut conn = Client::connect_secure(client, &anon).unwrap();
        assert_eq!(text(&conn.cmd(&["GET", "k1"]).unwrap()), "-NOAUTH Authentication required.");
        let add = conn.cmd(&["RAFT", "ADD", "9", &format!("{host}:1"), &format!("{host}:2")]).unwrap();
        assert_eq!(text(&add), "-NOAUTH Authentication required.");
        let wrong = conn.cmd(&["AUTH", "alice", "not-her-password"]).unwrap();
        assert!(text(&wrong).starts_with("-WRONGPASS"), "{wrong:?}");
        let mut carol =
            Client::connect_secure(client, &ClientSecurity { tls: Some(tls.clone()), login: login("carol") }).unwrap();
        let add = text(&carol.cmd(&["RAFT", "ADD", "9", &format!("{host}:1"), &format!("{host}:2")]).unwrap());
        assert!(add.starts_with("-NOPERM"), "{add}");
        let del = text(&carol.cmd(&["DEL", "k1"]).unwrap());
        assert!(del.starts_with("-NOPERM"), "{del}");
        seen.push(format!("node {id}: clients: NOAUTH, WRONGPASS, NOPERM as expected"));
        // Plain text to the TLS client port.
        let mut s = connect(client).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(b"FLUSHALL\r\nGET k1\r\n");
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        assert!(!got.windows(2).any(|w| w == b"v1"), "a plain-text client read a value");
    }
    seen
}
