//! The cluster as users run it: `node` processes on loopback, driven over
//! the Redis protocol, killed with SIGKILL, paused with SIGSTOP and
//! restarted. Every acknowledged write is checked afterwards.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use raftkv::resp::Reply;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use support::writers::{Acked, check_acked, run_writers};
use support::{TestCluster, text};

const LEADER_TIMEOUT: Duration = Duration::from_secs(15);

fn leader(c: &mut TestCluster) -> u64 {
    c.wait_for_leader(LEADER_TIMEOUT).unwrap_or_else(|| panic!("no single leader\n{}", c.logs()))
}

fn cmd(c: &TestCluster, id: u64, args: &[&str]) -> String {
    let mut client = c.client(id).unwrap_or_else(|e| panic!("connect to node {id}: {e}\n{}", c.logs()));
    text(&client.cmd(args).unwrap_or_else(|e| panic!("{args:?} on node {id}: {e}\n{}", c.logs())))
}

/// Retries a write until it is acknowledged (a `-TRYAGAIN` or `-TIMEOUT`
/// while a leader is being elected is expected); the write is idempotent.
fn set_eventually(c: &TestCluster, id: u64, key: &str, value: &str) {
    let deadline = Instant::now() + LEADER_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(mut client) = c.client(id)
            && let Ok(Reply::Simple(ok)) = client.cmd(&["SET", key, value])
        {
            assert_eq!(ok, "OK");
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("SET {key} {value} on node {id} never succeeded\n{}", c.logs());
}

fn get_eventually(c: &TestCluster, id: u64, key: &str, expected: &str) {
    let deadline = Instant::now() + LEADER_TIMEOUT;
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(mut client) = c.client(id)
            && let Ok(reply) = client.cmd(&["GET", key])
        {
            last = text(&reply);
            if last == expected {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("GET {key} on node {id}: {last:?}, expected {expected:?}\n{}", c.logs());
}

#[test]
fn three_and_five_nodes_elect_one_leader_and_every_node_serves() {
    for n in [3, 5] {
        let mut c = TestCluster::new(n);
        c.start_all();
        let leader = leader(&mut c);
        let follower = (1..=n).find(|&id| id != leader).unwrap();
        assert_eq!(cmd(&c, follower, &["SET", "greeting", "hello"]), "OK");
        // Reads are linearizable at every node: the write is visible at once.
        for id in 1..=n {
            assert_eq!(cmd(&c, id, &["GET", "greeting"]), "hello", "node {id}\n{}", c.logs());
        }
        let info = c.info(follower).unwrap();
        assert_eq!(info["role"], "follower");
        assert_eq!(info["leader_id"], leader.to_string());
        assert_eq!(info["leader_client_addr"], c.nodes[&leader].client_addr);
        assert_eq!(info["members"], (1..=n).map(|i| i.to_string()).collect::<Vec<_>>().join(","));
        assert_eq!(info["keys"], "1");
        // A READONLY connection reads the local copy (which has the write:
        // the linearizable read above waited for it to be applied).
        let mut local = c.client(follower).unwrap();
        assert_eq!(text(&local.cmd(&["READONLY"]).unwrap()), "OK");
        assert_eq!(text(&local.cmd(&["GET", "greeting"]).unwrap()), "hello");
        assert_eq!(text(&local.cmd(&["READWRITE"]).unwrap()), "OK");
        assert_eq!(text(&local.cmd(&["GET", "greeting"]).unwrap()), "hello");
        // SIGTERM and SIGINT are a clean shutdown.
        for id in 1..=n {
            let status = c.stop_with(id, if id % 2 == 0 { "INT" } else { "TERM" }).expect("node exits");
            assert_eq!(status.code(), Some(0), "node {id}\n{}", c.logs());
        }
    }
}

#[test]
fn a_killed_leader_is_replaced_and_catches_up_after_restart() {
    let mut c = TestCluster::new(3);
    c.start_all();
    let old = leader(&mut c);
    assert_eq!(cmd(&c, old, &["SET", "k", "1"]), "OK");
    c.kill(old);
    let started = Instant::now();
    let new = leader(&mut c);
    assert_ne!(new, old);
    println!("new leader {new} after {:?}", started.elapsed());
    let other = (1..=3).find(|&id| id != old && id != new).unwrap();
    set_eventually(&c, other, "k", "2");
    c.start(old);
    leader(&mut c);
    get_eventually(&c, old, "k", "2");
    let info = c.info(old).unwrap();
    assert_eq!(info["role"], "follower", "{info:?}");
}

/// A follower whose data directory is wiped, started again with the same id
/// and peers file: the leader still counts it as holding what it had
/// acknowledged, so nothing would be sent to it. Its first heartbeat tells
/// it otherwise; both sides log it, and it gets the log again with no new
/// write to push it.
#[test]
fn a_follower_that_lost_its_data_directory_says_so_and_catches_up() {
    let mut c = TestCluster::new(3);
    c.start_all();
    let l = leader(&mut c);
    for i in 0..50 {
        assert_eq!(cmd(&c, l, &["SET", &format!("k{i}"), &i.to_string()]), "OK");
    }
    let f = (1..=3).find(|&id| id != l).unwrap();
    get_eventually(&c, f, "k49", "49");
    c.kill(f);
    std::fs::remove_dir_all(&c.nodes[&f].data).unwrap();
    c.start(f);
    wait_logged(&c, f, "entries it acknowledged are lost");
    wait_logged(&c, l, &format!("node {f} restarted holding entries through 0 only"));
    let mut client = c.client(f).unwrap();
    assert_eq!(text(&client.cmd(&["READONLY"]).unwrap()), "OK");
    let deadline = Instant::now() + LEADER_TIMEOUT;
    while text(&client.cmd(&["GET", "k49"]).unwrap()) != "49" {
        assert!(Instant::now() < deadline, "node {f} never caught up\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    for i in 0..50 {
        assert_eq!(text(&client.cmd(&["GET", &format!("k{i}")]).unwrap()), i.to_string());
    }
    c.assert_none_exited();
}

#[test]
fn a_paused_leader_steps_down_when_resumed_and_takes_the_new_log() {
    let mut c = TestCluster::new(3);
    c.start_all();
    let old = leader(&mut c);
    assert_eq!(cmd(&c, old, &["SET", "k", "before"]), "OK");
    let old_term: u64 = c.info(old).unwrap()["term"].parse().unwrap();
    c.signal(old, "STOP");
    let others: Vec<u64> = (1..=3).filter(|&id| id != old).collect();
    // The others elect a new leader and take writes while it sleeps.
    let deadline = Instant::now() + LEADER_TIMEOUT;
    let new = loop {
        let leaders: Vec<u64> =
            others.iter().copied().filter(|&id| c.info(id).is_some_and(|i| i["role"] == "leader")).collect();
        if let [l] = leaders[..] {
            break l;
        }
        assert!(Instant::now() < deadline, "no new leader\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(50));
    };
    for i in 0..20 {
        set_eventually(&c, new, &format!("during-{i}"), "x");
    }
    set_eventually(&c, new, "k", "after");
    std::thread::sleep(Duration::from_secs(2));
    c.signal(old, "CONT");
    get_eventually(&c, old, "k", "after");
    let info = c.info(old).unwrap();
    assert_eq!(info["role"], "follower", "{info:?}");
    assert!(info["term"].parse::<u64>().unwrap() > old_term);
    assert_eq!(info["leader_id"], new.to_string());
    get_eventually(&c, old, "during-19", "x");
}

#[test]
fn killing_two_of_five_under_load_loses_no_acknowledged_write() {
    let seed: u64 = std::env::var("TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("seed {seed} (rerun with TEST_SEED={seed})");
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut c = TestCluster::new(5);
    c.start_all();
    leader(&mut c);
    let stop = Arc::new(AtomicBool::new(false));
    let writers = run_writers(&c, stop.clone(), 4, seed);
    for round in 0..3 {
        std::thread::sleep(Duration::from_millis(rng.random_range(300..1500)));
        let mut victims: Vec<u64> = (1..=5).collect();
        let first = victims.remove(rng.random_range(0..victims.len()));
        let second = victims.remove(rng.random_range(0..victims.len()));
        println!("round {round}: kill -9 nodes {first} and {second}");
        c.kill(first);
        std::thread::sleep(Duration::from_millis(rng.random_range(0..500)));
        c.kill(second);
        std::thread::sleep(Duration::from_millis(rng.random_range(500..2000)));
        c.start(first);
        c.start(second);
    }
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let acked: Vec<Acked> = writers.into_iter().map(|h| h.join().expect("writer")).collect();
    let total: u64 = acked.iter().map(|a| a.writes_ok).sum();
    println!("{total} writes acknowledged");
    assert!(total > 0, "no write was acknowledged\n{}", c.logs());
    check_acked(&mut c, &acked);
}

#[test]
fn killing_all_five_under_load_loses_no_acknowledged_write() {
    let seed: u64 = std::env::var("TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("seed {seed} (rerun with TEST_SEED={seed})");
    let mut c = TestCluster::new(5);
    c.start_all();
    leader(&mut c);
    let stop = Arc::new(AtomicBool::new(false));
    let writers = run_writers(&c, stop.clone(), 4, seed);
    std::thread::sleep(Duration::from_millis(1500));
    for id in 1..=5 {
        c.kill(id);
    }
    stop.store(true, Ordering::Relaxed);
    let acked: Vec<Acked> = writers.into_iter().map(|h| h.join().expect("writer")).collect();
    let total: u64 = acked.iter().map(|a| a.writes_ok).sum();
    println!("{total} writes acknowledged before the crash");
    assert!(total > 0, "no write was acknowledged\n{}", c.logs());
    c.start_all();
    check_acked(&mut c, &acked);
}

#[test]
fn pipelined_commands_take_effect_in_the_order_sent() {
    let mut c = TestCluster::new(3);
    c.start_all();
    let l = leader(&mut c);
    for id in [l, (1..=3).find(|&id| id != l).unwrap()] {
        let mut client = c.client(id).unwrap();
        let mut batch = Vec::new();
        let mut expected = Vec::new();
        for i in 0..50 {
            let k = format!("p{id}-{i}");
            for (args, reply) in [
                (vec!["SET", &k, "a"], "OK"),
                (vec!["GET", &k], "a"),
                (vec!["SET", &k, "b"], "OK"),
                (vec!["GET", &k], "b"),
                (vec!["INCR", &k], "-ERR value is not an integer"),
                (vec!["DEL", &k], "1"),
                (vec!["GET", &k], "(nil)"),
                (vec!["INCR", &k], "1"),
                (vec!["EXISTS", &k], "1"),
            ] {
                let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
                raftkv::resp::encode_request(&args, &mut batch);
                expected.push(reply.to_string());
            }
        }
        // All at once, as one write: the node reads them as one pipeline.
        client.send_raw(&batch).unwrap();
        for (n, want) in expected.iter().enumerate() {
            let got = text(&client.read_reply().unwrap());
            assert_eq!(&got, want, "node {id}, reply {n}");
        }
    }
    c.assert_none_exited();
}

/// Waits until node `id`'s log holds `line`.
fn wait_logged(c: &TestCluster, id: u64, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !c.log_of(id).contains(line) {
        assert!(Instant::now() < deadline, "node {id} never logged {line:?}\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Operators see a peer going down and coming back, and which leader each
/// node follows, once per change (not a line per reconnection attempt).
#[test]
fn peers_going_down_and_coming_back_and_new_leaders_are_logged() {
    let mut c = TestCluster::new(3);
    c.start_all();
    let l = leader(&mut c);
    let f = (1..=3).find(|&id| id != l).unwrap();
    let other = (1..=3).find(|&id| id != l && id != f).unwrap();
    let f_addr = c.nodes[&f].raft_addr.clone();
    wait_logged(&c, other, &format!("following leader {l}"));
    c.kill(f);
    wait_logged(&c, l, &format!("node {f} at {f_addr} is unreachable"));
    // Reconnection attempts go on (backing off up to 1 s) without a line
    // each.
    std::thread::sleep(Duration::from_secs(3));
    let unreachable = format!("node {f} at {f_addr} is unreachable");
    let log = c.log_of(l);
    assert_eq!(log.matches(&unreachable).count(), 1, "{log}");
    c.start(f);
    wait_logged(&c, l, &format!("node {f} at {f_addr} is reachable again"));
    wait_logged(&c, f, &format!("following leader {l}"));
    // A new leader is logged by the nodes that follow it.
    c.kill(l);
    let new = leader(&mut c);
    let follower = (1..=3).find(|&id| id != l && id != new).unwrap();
    wait_logged(&c, follower, &format!("following leader {new}"));
    c.assert_none_exited();
}

/// The leader's INFO replication lists every follower as Redis lists
/// replicas, with its match index, lag in entries and time since last
/// heard; a follower that stops answering turns `down`.
#[test]
fn info_replication_lists_every_follower_with_its_lag() {
    let mut c = TestCluster::new(3);
    c.start_all();
    let l = leader(&mut c);
    let others: Vec<u64> = (1..=3).filter(|&id| id != l).collect();
    c.client(l).unwrap().cmd(&["SET", "k", "v"]).unwrap();
    let replication = |c: &TestCluster| text(&c.client(l).unwrap().cmd(&["INFO", "replication"]).unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = replication(&c);
        let online = info.lines().filter(|l| l.starts_with("slave") && l.contains("state=online")).count();
        if online == 2 && info.contains("lag_entries=0") {
            assert!(info.contains("role:master"), "{info}");
            for id in &others {
                assert!(info.contains(&format!("id={id},")), "{info}");
            }
            break;
        }
        assert!(Instant::now() < deadline, "{info}");
        std::thread::sleep(Duration::from_millis(50));
    }
    c.kill(others[0]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !replication(&c)
        .lines()
        .any(|line| line.contains(&format!("id={},", others[0])) && line.contains("state=down"))
    {
        assert!(Instant::now() < deadline, "{}", replication(&c));
        std::thread::sleep(Duration::from_millis(50));
    }
}
