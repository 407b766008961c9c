//! docs/commands.md through real connections to a 3-node cluster: RESP3 after
//! HELLO 3, transactions applied whole through the log, WATCH across nodes,
//! expiry seen on every node, and the redis-py suite
//! (tests/clients/redis_py.py) with the library's defaults.

mod support;

use std::process::Command;
use std::time::Duration;

use raftkv::resp::Reply;
use support::{TestCluster, text};

fn started(n: u64) -> (TestCluster, u64) {
    let mut c = TestCluster::new(n);
    c.start_all();
    let leader = c.wait_for_leader(Duration::from_secs(20)).unwrap_or_else(|| panic!("no leader\n{}", c.logs()));
    (c, leader)
}

/// Every string in a reply, depth first.
fn words(reply: &Reply) -> Vec<String> {
    match reply {
        Reply::Array(Some(items)) | Reply::Set(items) => items.iter().flat_map(words).collect(),
        Reply::Map(pairs) => pairs.iter().flat_map(|(k, v)| words(k).into_iter().chain(words(v))).collect(),
        other => vec![text(other)],
    }
}

#[test]
fn hello_3_switches_the_connection_to_resp3() {
    let (c, leader) = started(3);
    let follower = c.nodes.keys().copied().find(|&id| id != leader).unwrap();
    let mut client = c.client(follower).unwrap();
    let hello = client.cmd(&["HELLO", "3", "SETNAME", "compat"]).unwrap();
    let Reply::Map(fields) = hello else { panic!("HELLO 3 should answer a map, got {hello:?}") };
    assert!(fields.contains(&(Reply::bulk("proto"), Reply::Integer(3))), "{fields:?}");
    client.cmd(&["HSET", "h", "f", "v"]).unwrap();
    assert_eq!(client.cmd(&["HGETALL", "h"]).unwrap(), Reply::Map(vec![(Reply::bulk("f"), Reply::bulk("v"))]));
    assert_eq!(client.cmd(&["GET", "absent"]).unwrap(), Reply::nil());
    assert!(
        matches!(client.cmd(&["INFO", "keyspace"]).unwrap(), Reply::Verbatim(t) if t.contains("db0:keys=1,expires=0"))
    );
    assert_eq!(client.cmd(&["CLIENT", "GETNAME"]).unwrap(), Reply::bulk("compat"));
    // Booleans and doubles, where Redis gives them: from scripts.
    assert_eq!(client.cmd(&["EVAL", "redis.setresp(3); return false", "0"]).unwrap(), Reply::Bool(false));
    assert_eq!(client.cmd(&["EVAL", "return {double = 0.5}", "0"]).unwrap(), Reply::Double(0.5));
    // COMMAND DOCS with Redis 7's argument specs (redis-cli's hints).
    let docs = client.cmd(&["COMMAND", "DOCS", "set"]).unwrap();
    let Reply::Map(commands) = &docs else { panic!("COMMAND DOCS should answer a map, got {docs:?}") };
    let Some((_, Reply::Map(set))) = commands.first() else { panic!("no docs for SET: {docs:?}") };
    let arguments = set.iter().find(|(k, _)| *k == Reply::bulk("arguments")).map(|(_, v)| words(v));
    let arguments = arguments.unwrap_or_else(|| panic!("SET's docs have no arguments: {set:?}"));
    for part in ["key", "pure-token", "KEEPTTL", "oneof", "optional"] {
        assert!(arguments.iter().any(|w| w == part), "{part} not in {arguments:?}");
    }
    // The null of RESP3 on the wire.
    client.send_raw(b"*2\r\n$3\r\nGET\r\n$1\r\nx\r\n").unwrap();
    assert_eq!(client.read_reply().unwrap(), Reply::nil());
    client.send_raw(b"PING\r\n").unwrap();
    assert_eq!(client.read_reply().unwrap(), Reply::Simple("PONG".into()));
    // Back to RESP2.
    let hello = client.cmd(&["HELLO", "2"]).unwrap();
    assert!(matches!(hello, Reply::Array(Some(_))), "{hello:?}");
    assert!(matches!(client.cmd(&["HGETALL", "h"]).unwrap(), Reply::Array(Some(items)) if items.len() == 2));
    assert_eq!(text(&client.cmd(&["HELLO", "4"]).unwrap()), "-NOPROTO unsupported protocol version");
}

#[test]
fn client_commands_name_list_and_kill_connections() {
    let (c, leader) = started(1);
    let mut me = c.client(leader).unwrap();
    let mut victim = c.client(leader).unwrap();
    victim.cmd(&["CLIENT", "SETNAME", "victim"]).unwrap();
    victim.cmd(&["CLIENT", "SETINFO", "LIB-NAME", "test"]).unwrap();
    let Reply::Integer(id) = victim.cmd(&["CLIENT", "ID"]).unwrap() else { panic!() };
    let list = text(&me.cmd(&["CLIENT", "LIST"]).unwrap());
    let line = list.lines().find(|l| l.contains("name=victim")).unwrap_or_else(|| panic!("{list}"));
    assert!(line.starts_with(&format!("id={id} ")) && line.contains("lib-name=test"), "{line}");
    assert!(text(&victim.cmd(&["CLIENT", "INFO"]).unwrap()).contains("cmd=client|info"));
    assert_eq!(me.cmd(&["CLIENT", "KILL", "ID", &id.to_string()]).unwrap(), Reply::Integer(1));
    assert!(victim.cmd(&["PING"]).is_err(), "a killed client's connection is closed");
    assert_eq!(me.cmd(&["CLIENT", "KILL", "ID", &id.to_string()]).unwrap(), Reply::Integer(0));
    assert_eq!(text(&me.cmd(&["CLIENT", "SETNAME", "a b"]).unwrap()).split(' ').next(), Some("-ERR"));
    assert_eq!(text(&me.cmd(&["CLIENT", "TRACKING", "ON"]).unwrap()).split(' ').next(), Some("-ERR"));
    assert_eq!(text(&me.cmd(&["CLIENT", "TRACKING", "OFF"]).unwrap()), "OK");
    let config = me.cmd(&["CONFIG", "GET", "raftkv-*"]).unwrap();
    let Reply::Array(Some(items)) = config else { panic!("{config:?}") };
    let at = items.iter().position(|i| *i == Reply::bulk("raftkv-election-timeout")).expect("listed");
    assert_eq!(items[at + 1], Reply::bulk("150-300"));
}

#[test]
fn multi_exec_applies_the_queue_as_one_entry_and_watch_holds_across_nodes() {
    let (c, leader) = started(3);
    let others: Vec<u64> = c.nodes.keys().copied().filter(|&id| id != leader).collect();
    let mut a = c.client(others[0]).unwrap();
    let mut b = c.client(others[1]).unwrap();
    assert_eq!(text(&a.cmd(&["MULTI"]).unwrap()), "OK");
    assert_eq!(text(&a.cmd(&["SET", "k", "1"]).unwrap()), "QUEUED");
    assert_eq!(text(&a.cmd(&["INCR", "k"]).unwrap()), "QUEUED");
    assert_eq!(text(&a.cmd(&["PING"]).unwrap()), "QUEUED");
    // Nothing queued is applied before EXEC, on any node.
    assert_eq!(b.cmd(&["GET", "k"]).unwrap(), Reply::nil());
    let replies = a.cmd(&["EXEC"]).unwrap();
    assert_eq!(
        replies,
        Reply::array(vec![Reply::ok(), Reply::Integer(2), Reply::Simple("PONG".into())]),
        "{}",
        c.logs()
    );
    assert_eq!(b.cmd(&["GET", "k"]).unwrap(), Reply::bulk("2"));
    // A command refused while queueing: EXECABORT, nothing applied.
    a.cmd(&["MULTI"]).unwrap();
    a.cmd(&["SET", "k", "9"]).unwrap();
    assert!(text(&a.cmd(&["SET", "k"]).unwrap()).starts_with("-ERR wrong number"));
    assert!(text(&a.cmd(&["EXEC"]).unwrap()).starts_with("-EXECABORT"));
    assert_eq!(b.cmd(&["GET", "k"]).unwrap(), Reply::bulk("2"));
    // WATCH on one node, a change through another: EXEC applies nothing.
    assert_eq!(text(&a.cmd(&["WATCH", "k"]).unwrap()), "OK");
    b.cmd(&["SET", "k", "changed"]).unwrap();
    a.cmd(&["MULTI"]).unwrap();
    a.cmd(&["SET", "k", "mine"]).unwrap();
    assert_eq!(a.cmd(&["EXEC"]).unwrap(), Reply::Array(None));
    assert_eq!(b.cmd(&["GET", "k"]).unwrap(), Reply::bulk("changed"));
    // Without a change in between, the watched transaction goes through.
    a.cmd(&["WATCH", "k"]).unwrap();
    a.cmd(&["MULTI"]).unwrap();
    a.cmd(&["SET", "k", "mine"]).unwrap();
    assert_eq!(a.cmd(&["EXEC"]).unwrap(), Reply::array(vec![Reply::ok()]));
    assert_eq!(b.cmd(&["GET", "k"]).unwrap(), Reply::bulk("mine"));
    assert_eq!(text(&a.cmd(&["EXEC"]).unwrap()), "-ERR EXEC without MULTI");
    assert_eq!(text(&a.cmd(&["DISCARD"]).unwrap()), "-ERR DISCARD without MULTI");
    a.cmd(&["MULTI"]).unwrap();
    assert_eq!(text(&a.cmd(&["MULTI"]).unwrap()), "-ERR MULTI calls can not be nested");
    assert_eq!(text(&a.cmd(&["DISCARD"]).unwrap()), "OK");
}

#[test]
fn a_key_past_its_deadline_is_gone_on_every_node_and_after_a_restart() {
    let (mut c, leader) = started(3);
    let ids: Vec<u64> = c.nodes.keys().copied().collect();
    let mut l = c.client(leader).unwrap();
    assert_eq!(text(&l.cmd(&["SET", "short", "v", "PX", "400"]).unwrap()), "OK");
    assert_eq!(text(&l.cmd(&["SET", "long", "v", "EX", "1000"]).unwrap()), "OK");
    for &id in &ids {
        assert_eq!(c.client(id).unwrap().cmd(&["GET", "short"]).unwrap(), Reply::bulk("v"));
    }
    std::thread::sleep(Duration::from_millis(600));
    for &id in &ids {
        let mut client = c.client(id).unwrap();
        assert_eq!(client.cmd(&["GET", "short"]).unwrap(), Reply::nil(), "node {id}");
        assert_eq!(client.cmd(&["TTL", "short"]).unwrap(), Reply::Integer(-2), "node {id}");
    }
    // The sweep deleted it through the log, so every node stores only `long`.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ids.iter().any(|&id| c.info_u64(id, "keys") != 1) {
        assert!(std::time::Instant::now() < deadline, "the sweep did not delete the key\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Deadlines survive a restart (the log replays them) and a snapshot.
    l.cmd(&["RAFT", "SNAPSHOT"]).unwrap();
    c.kill(leader);
    c.start(leader);
    c.wait_for_leader(Duration::from_secs(20)).expect("leader after restart");
    let ttl = c.client(leader).unwrap().cmd(&["TTL", "long"]).unwrap();
    assert!(matches!(ttl, Reply::Integer(t) if t > 900 && t <= 1000), "{ttl:?}");
}

/// redis-py, installed by scripts/deps.sh, at its defaults (RESP3 in
/// redis-py 8): strings with every SET option, expiry, hashes, scans,
/// pipelines, transactions with and without WATCH (a conflict made through
/// another node), CONFIG, CLIENT, INFO.
#[test]
fn redis_py_works_with_its_defaults() {
    let (c, _) = started(3);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/redis_py.py");
    let addrs: Vec<String> = c.nodes.values().map(|n| n.client_addr.clone()).collect();
    support::run_redis_py(Command::new("python3").arg(script).args(&addrs), &c);
}

/// redis-benchmark's tests that raftkv's commands cover, HSET included,
/// against the leader and a follower: every request answered without an
/// error.
#[test]
fn redis_benchmark_runs_against_the_leader_and_a_follower() {
    if Command::new("redis-benchmark").arg("--version").output().is_err() {
        assert!(std::env::var("RAFTKV_REQUIRE_REDIS_TOOLS").is_err(), "redis-benchmark is required but missing");
        return;
    }
    let (c, leader) = started(3);
    let follower = c.nodes.keys().copied().find(|&id| id != leader).unwrap();
    for id in [leader, follower] {
        let (host, port) = c.nodes[&id].client_addr.rsplit_once(':').unwrap();
        let out = Command::new("redis-benchmark")
            .args(["-h", host, "-p", port, "-c", "8", "-n", "2000", "-P", "4", "-r", "1000", "-q"])
            .args(["-t", "ping,set,get,incr,mset,hset"])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("redis-benchmark");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "node {id}: {stdout}\n{stderr}");
        assert!(!stderr.contains("ERR") && !stdout.contains("ERR"), "node {id}: {stdout}\n{stderr}");
        for test in ["PING_INLINE", "SET", "GET", "INCR", "MSET (10 keys)", "HSET"] {
            assert!(stdout.contains(&format!("{test}: ")), "node {id}: {test} missing:\n{stdout}");
        }
    }
    let keys = c.info_u64(leader, "keys");
    assert!(keys > 0, "the benchmark's keys are stored");
}

/// node-redis (RESP2 by default, and RESP3) and ioredis, installed into
/// tests/clients/node_modules by scripts/deps.sh, at their defaults:
/// SET options, INCRBY, hashes into objects, scan iterators, pipelines,
/// MULTI/EXEC, WATCH with a conflict made through another node, expiry.
#[test]
fn node_redis_and_ioredis_work_with_their_defaults() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients");
    let installed = std::path::Path::new(dir).join("node_modules/ioredis").exists()
        && std::path::Path::new(dir).join("node_modules/redis").exists();
    if !installed || Command::new("node").arg("--version").output().is_err() {
        assert!(
            std::env::var("RAFTKV_REQUIRE_NODE_CLIENTS").is_err(),
            "node-redis and ioredis are required but missing (scripts/deps.sh installs them)"
        );
        eprintln!("skipped node-redis and ioredis: not installed (scripts/deps.sh installs them)");
        return;
    }
    let (c, _) = started(3);
    let addrs: Vec<String> = c.nodes.values().map(|n| n.client_addr.clone()).collect();
    let out = Command::new("node")
        .arg(format!("{dir}/node_clients.mjs"))
        .args(&addrs)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("node");
    support::assert_printed_ok("node client suite", &out, &c);
}

/// Every node answers ROLE and the Sentinel commands with the cluster's
/// view; redis-py's `Sentinel(...).master_for('raftkv')` finds the leader
/// and follows it through leader kills (the errors that reach the
/// application are connection errors, which the library retries on) and
/// through a handover of leadership to a live node (the old leader answers
/// the connection's next write `-READONLY`, which the library retries).
#[test]
fn sentinel_clients_find_and_follow_the_leader() {
    let (mut c, leader) = started(3);
    let follower = c.nodes.keys().copied().find(|&id| id != leader).unwrap();
    let leader_addr = c.nodes[&leader].client_addr.clone();
    let (host, port) = leader_addr.rsplit_once(':').unwrap();
    let mut f = c.client(follower).unwrap();
    let addr = f.cmd(&["SENTINEL", "get-master-addr-by-name", "raftkv"]).unwrap();
    assert_eq!(addr, Reply::array(vec![Reply::bulk(host), Reply::bulk(port)]));
    assert_eq!(f.cmd(&["SENTINEL", "get-master-addr-by-name", "other"]).unwrap(), Reply::Array(None));
    let Reply::Array(Some(role)) = f.cmd(&["ROLE"]).unwrap() else { panic!() };
    assert_eq!(role[0], Reply::bulk("slave"));
    assert_eq!(role[1], Reply::bulk(host));
    let Reply::Array(Some(role)) = c.client(leader).unwrap().cmd(&["ROLE"]).unwrap() else { panic!() };
    assert_eq!(role[0], Reply::bulk("master"));
    assert!(matches!(&role[2], Reply::Array(Some(r)) if r.len() == 2), "{role:?}");
    let Reply::Array(Some(replicas)) = f.cmd(&["SENTINEL", "replicas", "raftkv"]).unwrap() else { panic!() };
    assert_eq!(replicas.len(), 2);
    let Reply::Array(Some(sentinels)) = f.cmd(&["SENTINEL", "sentinels", "raftkv"]).unwrap() else { panic!() };
    assert_eq!(sentinels.len(), 2);

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/redis_py_sentinel.py");
    let addrs: Vec<String> = c.nodes.values().map(|n| n.client_addr.clone()).collect();
    let child = Command::new("python3")
        .arg(script)
        .arg("15")
        .args(&addrs)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    // Two leader kills, each node back before the next, then a handover.
    for _ in 0..2 {
        std::thread::sleep(Duration::from_secs(3));
        let leader = c.wait_for_leader(Duration::from_secs(20)).expect("a leader");
        c.kill(leader);
        std::thread::sleep(Duration::from_secs(2));
        c.start(leader);
    }
    std::thread::sleep(Duration::from_secs(2));
    let old = c.wait_for_leader(Duration::from_secs(20)).expect("a leader");
    let new = c.nodes.keys().copied().find(|&id| id != old).unwrap();
    println!("handing leadership from node {old} to node {new}");
    let reply = c.client(old).unwrap().cmd(&["RAFT", "TRANSFER", &new.to_string()]).unwrap();
    assert_eq!(reply, Reply::ok(), "{}", c.logs());
    let out = child.wait_with_output().expect("python3");
    if !support::redis_py_ran(&out) {
        return;
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "sentinel client failed:\n{stdout}\n{stderr}\n{}", c.logs());
    let line = stdout.lines().last().unwrap_or_default();
    let field = |name: &str| -> i64 {
        let at = line.find(&format!("\"{name}\": ")).unwrap_or_else(|| panic!("{line}")) + name.len() + 4;
        line[at..].split([',', '}']).next().unwrap().trim().parse().unwrap_or(-1)
    };
    let (acked, last) = (field("acked"), field("final"));
    println!("sentinel client: {line}");
    assert!(acked > 50, "too few writes through the leader kills: {line}");
    // A write whose connection died under it is sent again by the library,
    // as a new write: it may be applied twice.
    assert!(last >= acked, "acknowledged increments lost: {line}\n{}", c.logs());
    // Where the client ends is redis-py's business: 8.1 retries a failed
    // command by reconnecting to the address it had (not through the
    // sentinels), so after -READONLY it may write through the old leader,
    // which forwards. The line says (`role`).
    let errors = &line[line.find("\"errors\"").unwrap()..];
    for name in ["ResponseError", "ReadOnlyError", "NoScriptError", "DataError"] {
        assert!(!errors.contains(name), "an error the library does not retry on reached the application: {line}");
    }
}
