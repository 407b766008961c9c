//! The attacks an operator fears, each tried against real nodes (README, Security):
//! forged and replayed peer frames, a buggy peer that knows the secret, a
//! data directory of another cluster, a flood of idle connections against
//! a restarted peer, clients without the right account, and TLS on both
//! ports. Every one must leave the cluster's data and service intact.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use raftkv::net::Secret;
use raftkv::net::handshake::{self, Local};
use raftkv::raft::{Body, Entry, Index, Membership, Message, NodeId, Payload, SnapshotMeta, Term};
use raftkv::resp::Reply;
use support::secure::{SECRET, Secure, USERS};
use support::{Client, ClientSecurity, TestCluster, text};

fn leader(c: &mut TestCluster) -> u64 {
    c.wait_for_leader(Duration::from_secs(15)).unwrap_or_else(|| panic!("no leader\n{}", c.logs()))
}

fn login(name: &str) -> ClientSecurity {
    let (user, password, _) = USERS.iter().find(|u| u.0 == name).expect("a test user");
    ClientSecurity { tls: None, login: Some((user.to_string(), password.to_string())) }
}

/// Writes `n` keys through the leader; returns them with their values.
fn write_keys(c: &TestCluster, leader: u64, prefix: &str, n: usize) -> Vec<(String, String)> {
    let mut conn = c.client(leader).expect("connect");
    (0..n)
        .map(|i| {
            let (k, v) = (format!("{prefix}{i}"), format!("value-{prefix}-{i}"));
            assert_eq!(text(&conn.cmd(&["SET", &k, &v]).expect("SET")), "OK", "{}", c.logs());
            (k, v)
        })
        .collect()
}

/// Every key has its value on every running node (linearizable reads).
fn assert_keys(c: &mut TestCluster, keys: &[(String, String)]) {
    for id in c.running() {
        let mut conn = c.client(id).expect("connect");
        for (k, v) in keys {
            let got = text(&conn.cmd(&["GET", k]).expect("GET"));
            assert_eq!(&got, v, "node {id}, key {k}\n{}", c.logs());
        }
    }
}

fn frame(from: u64, to: u64, term: u64, body: Body) -> Vec<u8> {
    let mut out = Vec::new();
    raftkv::wire::encode_frame(&Message { from: NodeId(from), to: NodeId(to), term: Term(term), body }, &mut out);
    out
}

/// Frames that would do harm if stepped: a command no client sent, an
/// empty snapshot that replaces everything, a term that leaves no next one,
/// a leadership transfer.
fn harmful_frames(from: u64, to: u64) -> Vec<u8> {
    let set = b"\x01forged".to_vec();
    let voters = Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]);
    let meta = SnapshotMeta { index: Index(1_000_000), term: Term(50), membership: voters };
    [
        frame(from, to, 50, Body::Propose { commands: vec![set] }),
        frame(from, to, 50, Body::InstallSnapshot { meta, offset: 0, data: Vec::new(), done: true }),
        frame(from, to, u64::MAX, Body::Heartbeat { commit: Index(0), read_round: 0 }),
        frame(from, to, 50, Body::TimeoutNow { last_index: Index(1), incarnation: 0 }),
        frame(
            from,
            to,
            50,
            Body::Append {
                prev_index: Index(0),
                prev_term: Term(0),
                entries: vec![Entry { term: Term(50), index: Index(1), payload: Payload::Noop }],
                commit: Index(1),
            },
        ),
    ]
    .concat()
}

/// What an attacker without the secret can do on a raft port: speak the
/// old protocol, the new one without a secret, or with a guessed one, then
/// send the frames anyway.
fn attack_raft_port(addr: &str, claim: u64, target: u64) {
    // The old, unauthenticated handshake of protocol version 2.
    if let Ok(mut s) = TcpStream::connect(addr) {
        let mut old = b"RKVP".to_vec();
        old.extend_from_slice(&2u16.to_le_bytes());
        old.extend_from_slice(&claim.to_le_bytes());
        old.extend_from_slice(&target.to_le_bytes());
        let _ = s.write_all(&old);
        let _ = s.write_all(&harmful_frames(claim, target));
    }
    let guessed = Secret::from_bytes(b"guessed-secret-0000000").unwrap();
    for secret in [None, Some(&guessed)] {
        let Ok(mut s) = TcpStream::connect(addr) else { continue };
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let local = Local { id: NodeId(claim), cluster: None, incarnation: 1, secret };
        let result = handshake::dial(&mut s, &local, NodeId(target));
        assert!(result.is_err(), "a handshake without the secret succeeded: {result:?}");
        let _ = s.write_all(&harmful_frames(claim, target));
    }
}

#[test]
fn forged_peer_frames_without_the_secret_change_nothing() {
    let mut c = TestCluster::new(3);
    c.secure(Secure { secret: true, users: false, tls: false });
    c.start_all();
    let l = leader(&mut c);
    let keys = write_keys(&c, l, "k", 20);
    let term = c.info_u64(l, "term");
    for (&id, node) in &c.nodes {
        let claim = if id == 1 { 2 } else { 1 };
        attack_raft_port(&node.raft_addr, claim, id);
    }
    std::thread::sleep(Duration::from_millis(500));
    c.assert_none_exited();
    assert_eq!(leader(&mut c), l, "leadership moved\n{}", c.logs());
    assert_eq!(c.info_u64(l, "term"), term, "the term moved\n{}", c.logs());
    assert_keys(&mut c, &keys);
    let mut conn = c.client(l).unwrap();
    assert_eq!(text(&conn.cmd(&["DBSIZE"]).unwrap()), "20", "a forged command was applied");
    assert!(c.logs().contains("refused"), "refusals are logged\n{}", c.logs());
    assert!(!c.logs().contains(SECRET), "the secret is in a log");
}

/// A peer that knows the secret but sends nonsense (out-of-range terms and
/// indexes, a snapshot of a term above its own, a snapshot of garbage)
/// cannot panic a node or stop the cluster, and a node restarted after it
/// starts clean.
#[test]
fn a_buggy_peer_with_the_secret_cannot_panic_or_wedge_a_node() {
    let mut c = TestCluster::new(3);
    c.secure(Secure { secret: true, users: false, tls: false });
    c.start_all();
    let l = leader(&mut c);
    let keys = write_keys(&c, l, "k", 10);
    let target = (1..=3).find(|&id| id != l).unwrap();
    let claim = (1..=3).find(|&id| id != l && id != target).unwrap();
    let term = c.info_u64(l, "term");
    let secret = Secret::from_bytes(SECRET.as_bytes()).unwrap();
    let mut s = TcpStream::connect(&c.nodes[&target].raft_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let local = Local { id: NodeId(claim), cluster: None, incarnation: 99, secret: Some(&secret) };
    handshake::dial(&mut s, &local, NodeId(target)).expect("the secret opens the door");
    let voters = Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]);
    let meta = |index: u64, snap_term: u64| SnapshotMeta {
        index: Index(index),
        term: Term(snap_term),
        membership: voters.clone(),
    };
    let junk = [
        frame(claim, target, u64::MAX, Body::Heartbeat { commit: Index(u64::MAX), read_round: 0 }),
        frame(
            claim,
            target,
            term,
            Body::InstallSnapshot { meta: meta(u64::MAX, term), offset: 0, data: vec![1], done: true },
        ),
        frame(
            claim,
            target,
            term,
            Body::InstallSnapshot { meta: meta(100, term + 1000), offset: 0, data: vec![1], done: true },
        ),
        frame(
            claim,
            target,
            term,
            Body::InstallSnapshot { meta: meta(100, term), offset: u64::MAX, data: vec![1; 9], done: false },
        ),
        frame(
            claim,
            target,
            term,
            Body::AppendResp(raftkv::raft::AppendResp {
                index: Index(u64::MAX),
                rejected: true,
                hint_index: Index(u64::MAX),
                hint_term: Term(u64::MAX),
                incarnation: 0,
            }),
        ),
        frame(
            claim,
            target,
            term,
            Body::ReadIndexResp {
                request: raftkv::raft::ReadId { incarnation: 0, seq: 0 },
                index: Some(Index(u64::MAX)),
                clock: u64::MAX,
            },
        ),
    ]
    .concat();
    s.write_all(&junk).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    c.assert_none_exited();
    let l = leader(&mut c);
    let more = write_keys(&c, l, "after", 5);
    assert_keys(&mut c, &keys);
    assert_keys(&mut c, &more);
    // A snapshot of garbage from the buggy peer, after it claims to lead a
    // later term: refused whole, and the node's restart is clean.
    let term = c.info_u64(l, "term") + 1;
    let mut s = TcpStream::connect(&c.nodes[&target].raft_addr).unwrap();
    handshake::dial(&mut s, &local, NodeId(target)).expect("the secret opens the door");
    let garbage = frame(
        claim,
        target,
        term,
        Body::InstallSnapshot { meta: meta(1_000_000, term), offset: 0, data: b"not a snapshot".to_vec(), done: true },
    );
    s.write_all(&garbage).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    c.assert_none_exited();
    c.stop(target);
    c.start(target);
    leader(&mut c);
    c.assert_none_exited();
    assert_keys(&mut c, &keys);
    assert!(c.logs().contains("failed its check"), "the bad snapshot is reported\n{}", c.logs());
}

/// A data directory of an older cluster, started with the same peers file
/// and secret, is refused by the new cluster and changes nothing there; it
/// serves nothing and says why.
#[test]
fn a_data_directory_of_another_cluster_cannot_join() {
    let mut c = TestCluster::new(3);
    c.secure(Secure { secret: true, users: false, tls: false });
    // The old cluster: a long history of its own.
    c.start_all();
    let l = leader(&mut c);
    write_keys(&c, l, "old", 50);
    let old_id = c.info(l).unwrap()["cluster_id"].clone();
    assert_ne!(old_id, "none");
    for id in 1..=3 {
        c.stop(id);
    }
    let old_dirs: Vec<_> = (1..=3).map(|id| c.nodes[&id].data.clone()).collect();
    // The new cluster, same addresses and secret, fresh directories.
    for id in 1..=3 {
        c.nodes.get_mut(&id).unwrap().data = c.dir.path().join(format!("new-{id}"));
    }
    c.start_all();
    let l = leader(&mut c);
    let keys = write_keys(&c, l, "k", 10);
    let new_id = c.info(l).unwrap()["cluster_id"].clone();
    assert_ne!(new_id, old_id);
    // Node 3 of the new cluster is replaced by node 3 of the old one.
    let stray = if l == 3 { 2 } else { 3 };
    c.kill(stray);
    c.nodes.get_mut(&stray).unwrap().data = old_dirs[stray as usize - 1].clone();
    c.start(stray);
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.info(stray).and_then(|i| i.get("cluster_refused").cloned()).is_none() {
        assert!(Instant::now() < deadline, "node {stray} was not told it is refused\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut conn = c.client(stray).unwrap();
    let reply = text(&conn.cmd(&["GET", "k0"]).unwrap());
    assert!(reply.starts_with("-TRYAGAIN") && reply.contains("cluster"), "{reply}");
    conn.cmd(&["READONLY"]).unwrap();
    let reply = text(&conn.cmd(&["GET", "old0"]).unwrap());
    assert!(reply.starts_with("-TRYAGAIN"), "READONLY reads are refused too: {reply}");
    // The new cluster lost nothing and goes on.
    let others: Vec<u64> = (1..=3).filter(|&id| id != stray).collect();
    for &id in &others {
        let mut conn = c.client(id).unwrap();
        for (k, v) in &keys {
            assert_eq!(&text(&conn.cmd(&["GET", k]).unwrap()), v, "node {id}\n{}", c.logs());
        }
        assert_eq!(text(&conn.cmd(&["GET", "old0"]).unwrap()), "(nil)", "an old entry reached node {id}");
        assert_eq!(c.info(id).unwrap()["cluster_id"], new_id);
    }
    assert!(c.logs().contains("belongs to cluster"), "both sides log the refusal\n{}", c.logs());
}

/// Hundreds of connections that never finish a handshake, and more
/// handshaken ones than a peer may hold, do not keep a restarted peer out.
#[test]
fn idle_connections_do_not_lock_a_restarted_peer_out() {
    let mut c = TestCluster::new(3);
    c.start_all();
    let l = leader(&mut c);
    let other = (1..=3).find(|&id| id != l).unwrap();
    let mut held = Vec::new();
    for &id in &[l, other] {
        let addr = c.nodes[&id].raft_addr.clone();
        for _ in 0..300 {
            if let Ok(s) = TcpStream::connect(&addr) {
                held.push(s);
            }
        }
        let claim = (1..=3).find(|&x| x != id).unwrap();
        for _ in 0..20 {
            let Ok(mut s) = TcpStream::connect(&addr) else { continue };
            let local = Local { id: NodeId(claim), cluster: None, incarnation: 5, secret: None };
            if handshake::dial(&mut s, &local, NodeId(id)).is_ok() {
                held.push(s);
            }
        }
    }
    let restarted = (1..=3).find(|&id| id != l && id != other).unwrap();
    c.kill(restarted);
    c.start(restarted);
    let keys = write_keys(&c, l, "k", 20);
    let target = c.info_u64(l, "commit_index");
    let deadline = Instant::now() + Duration::from_secs(15);
    while c.info_u64(restarted, "last_applied") < target {
        assert!(Instant::now() < deadline, "node {restarted} did not get back in\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_keys(&mut c, &keys);
    drop(held);
}

/// Accounts and roles (README, Security): nothing before AUTH, wrong passwords
/// refused, each role held to what it may run, administrative commands
/// forwarded to the leader as the same user, and no password in the logs.
#[test]
fn clients_authenticate_and_roles_limit_what_they_run() {
    let mut c = TestCluster::new(3);
    c.secure(Secure { secret: false, users: true, tls: false });
    c.client_security = login("alice");
    c.start_all();
    let l = leader(&mut c);
    let follower = (1..=3).find(|&id| id != l).unwrap();
    let addr = c.nodes[&follower].client_addr.clone();
    let mut anon = Client::connect(&addr).unwrap();
    assert_eq!(text(&anon.cmd(&["GET", "k"]).unwrap()), "-NOAUTH Authentication required.");
    assert_eq!(
        text(&anon.cmd(&["RAFT", "ADD", "9", "127.0.0.1:1", "127.0.0.1:2"]).unwrap()),
        "-NOAUTH Authentication required."
    );
    assert_eq!(text(&anon.cmd(&["PING"]).unwrap()), "-NOAUTH Authentication required.");
    let wrong = text(&anon.cmd(&["AUTH", "alice", "guess"]).unwrap());
    assert_eq!(wrong, "-WRONGPASS invalid username-password pair or user is disabled.");
    let reply = anon.cmd(&["HELLO", "2"]).unwrap();
    assert!(text(&reply).starts_with("-NOAUTH HELLO must be called"), "{reply:?}");
    // A bare password is the user `default` (a writer).
    assert_eq!(text(&anon.cmd(&["AUTH", "default-pw-11c8"]).unwrap()), "OK");
    assert_eq!(text(&anon.cmd(&["SET", "k", "by-default"]).unwrap()), "OK");
    let mut carol = Client::connect(&addr).unwrap();
    let hello = carol.cmd(&["HELLO", "2", "AUTH", "carol", "carol-pw-e402"]).unwrap();
    assert!(matches!(hello, Reply::Array(Some(_))), "{hello:?}");
    assert_eq!(text(&carol.cmd(&["GET", "k"]).unwrap()), "by-default");
    assert_eq!(
        text(&carol.cmd(&["SET", "k", "x"]).unwrap()),
        "-NOPERM User carol has no permissions to run the 'set' command"
    );
    let mut bob = Client::connect_secure(&addr, &login("bob")).unwrap();
    assert_eq!(text(&bob.cmd(&["INCR", "n"]).unwrap()), "1");
    assert_eq!(
        text(&bob.cmd(&["RAFT", "ADD", "9", "127.0.0.1:1", "127.0.0.1:2"]).unwrap()),
        "-NOPERM User bob has no permissions to run the 'raft|add' command"
    );
    // An administrator's transfer, sent to a follower, is forwarded to the
    // leader as alice.
    let mut alice = Client::connect_secure(&addr, &login("alice")).unwrap();
    let reply = text(&alice.cmd(&["RAFT", "TRANSFER", &follower.to_string()]).unwrap());
    assert_eq!(reply, "OK", "{}", c.logs());
    assert_eq!(leader(&mut c), follower);
    let logs = c.logs();
    for (_, password, _) in USERS {
        assert!(!logs.contains(password), "a password is in the logs");
    }
    let info = c.info(follower).unwrap();
    assert!(!format!("{info:?}").contains("pw-"), "a password is in INFO");
}

#[test]
fn bad_security_settings_stop_the_node_with_a_reason() {
    let c = TestCluster::new(1);
    let run = |extra: &[&str], peers: Option<&str>| {
        let mut cmd = c.node_command(1, extra);
        if let Some(text) = peers {
            let path = c.dir.path().join("peers-off-loopback.txt");
            std::fs::write(&path, text).unwrap();
            cmd.arg("--peers").arg(&path);
        }
        let out = cmd.output().expect("run node");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    // 192.0.2.0/24 is reserved for documentation: never routed, and the
    // node refuses before it would bind or send anything.
    let (code, err) = run(&[], Some("1 192.0.2.1:7001 127.0.0.1:6001\n"));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not a loopback address") && err.contains("--cluster-secret"), "{err}");
    let short = c.dir.path().join("short-secret");
    std::fs::write(&short, "tooshort\n").unwrap();
    let (code, err) = run(&["--cluster-secret", short.to_str().unwrap()], None);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("at least 16"), "{err}");
    let missing = c.dir.path().join("missing.pem");
    let m = missing.to_str().unwrap();
    let (code, err) = run(&["--tls-cert", m, "--tls-key", m, "--tls-ca", m], None);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--tls-cert") && err.contains("missing.pem"), "{err}");
    let users = c.dir.path().join("users");
    std::fs::write(&users, "alice nothex admin\n").unwrap();
    let (code, err) = run(&["--users", users.to_str().unwrap()], None);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("users:1") && err.contains("SHA-256"), "{err}");
}

fn redis_cli() -> Option<&'static str> {
    let found = Command::new("redis-cli").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(std::env::var("RAFTKV_REQUIRE_REDIS_TOOLS").is_err(), "redis-cli is required but missing");
        eprintln!("skipped: redis-cli not installed (scripts/deps.sh installs it)");
    }
    found.then_some("redis-cli")
}

/// TLS on both ports with accounts: the harness's own TLS client, redis-cli
/// with `--tls --cacert --user --pass`, and redis-py with `ssl=True`.
#[test]
fn redis_cli_and_redis_py_work_over_tls_with_accounts() {
    let mut c = TestCluster::new(3);
    let files = c.secure(Secure { secret: true, users: true, tls: true });
    c.client_security =
        ClientSecurity { tls: Some(raftkv::net::tls::client_config(&files.ca).unwrap()), login: login("alice").login };
    c.start_all();
    let l = leader(&mut c);
    let keys = write_keys(&c, l, "k", 5);
    assert_keys(&mut c, &keys);
    let follower = (1..=3).find(|&id| id != l).unwrap();
    let port = c.nodes[&follower].client_addr.rsplit_once(':').unwrap().1.to_string();
    // Plain TCP to a TLS port gets nothing it can use.
    let mut plain = TcpStream::connect(&c.nodes[&follower].client_addr).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    plain.write_all(b"PING\r\n").unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(!got.starts_with(b"+PONG"), "plain text was answered on a TLS port");
    if let Some(cli) = redis_cli() {
        let ca = files.ca.to_str().unwrap();
        let run = |args: &[&str]| {
            let out = Command::new(cli)
                .args([
                    "--tls",
                    "--cacert",
                    ca,
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "--user",
                    "bob",
                    "--pass",
                    "bob-pw-73aa",
                ])
                .args(["--no-auth-warning"])
                .args(args)
                .output()
                .expect("redis-cli");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        assert_eq!(run(&["SET", "tls-key", "over-tls"]), "OK", "{}", c.logs());
        assert_eq!(run(&["GET", "tls-key"]), "over-tls");
        assert_eq!(run(&["GET", "k0"]), "value-k-0");
    }
    let script = format!(
        "import redis\n\
         r = redis.Redis(host='127.0.0.1', port={port}, ssl=True, ssl_ca_certs='{}', username='bob', password='bob-pw-73aa', protocol=2)\n\
         r.set('py-key', 'from-python')\n\
         assert r.get('py-key') == b'from-python', r.get('py-key')\n\
         assert r.get('k1') == b'value-k-1'\n\
         print('ok')\n",
        files.ca.display()
    );
    support::run_redis_py(Command::new("python3").args(["-c", &script]), &c);
}
