//! Log compaction with real processes: snapshots taken past a threshold and
//! on `RAFT SNAPSHOT`, a node that was down catching up through
//! InstallSnapshot, and `kill -9` while a snapshot is being taken and while
//! one is being installed.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use raftkv::resp::Reply;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use support::{Client, TestCluster, text};

const LEADER_TIMEOUT: Duration = Duration::from_secs(15);

/// These tests load the machine (three nodes, four pipelining writers,
/// snapshots of 100,000 keys); one at a time, so that neither starves the
/// other's nodes into elections.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn leader(c: &mut TestCluster) -> u64 {
    c.wait_for_leader(LEADER_TIMEOUT).unwrap_or_else(|| panic!("no single leader\n{}", c.logs()))
}

fn seed() -> u64 {
    let seed = std::env::var("TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("seed {seed} (rerun with TEST_SEED={seed})");
    seed
}

fn key(k: u64) -> String {
    format!("key-{k:06}")
}

fn value(k: u64, round: u64) -> String {
    format!("value-{k}-{round}-{}", "x".repeat(40))
}

/// Writes whose outcome was unknown (a timeout, a lost connection): key ->
/// rounds whose value it may still hold, as such a write may take effect
/// after a later one.
type Uncertain = HashMap<u64, Vec<u64>>;

/// SETs keys `0..keys` to `value(k, round)` through node `id`, 500 to a
/// pipeline, on four connections at once, until every write is
/// acknowledged (a write that failed is sent again).
fn write_round(c: &TestCluster, id: u64, keys: u64, round: u64, uncertain: &mut Uncertain) {
    let addr = c.nodes[&id].client_addr.clone();
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut unknown = Vec::new();
                let mut left: Vec<u64> = (0..keys).filter(|k| k % 4 == t).collect();
                let deadline = Instant::now() + Duration::from_secs(120);
                while !left.is_empty() {
                    assert!(Instant::now() < deadline, "writes of round {round} never all succeeded");
                    let Ok(mut client) = Client::connect(&addr) else {
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    };
                    let mut failed = Vec::new();
                    for batch in left.chunks(500) {
                        let cmds: Vec<Vec<Vec<u8>>> = batch
                            .iter()
                            .map(|&k| vec![b"SET".to_vec(), key(k).into_bytes(), value(k, round).into_bytes()])
                            .collect();
                        match client.pipeline(&cmds) {
                            Ok(replies) => {
                                for (&k, reply) in batch.iter().zip(replies) {
                                    match reply {
                                        Reply::Simple(ok) if ok == "OK" => {}
                                        Reply::Error(e) if e.starts_with("TRYAGAIN") => failed.push(k),
                                        Reply::Error(e) if e.starts_with("TIMEOUT") => {
                                            unknown.push(k);
                                            failed.push(k);
                                        }
                                        other => panic!("SET {k}: {other:?}"),
                                    }
                                }
                            }
                            Err(_) => {
                                unknown.extend_from_slice(batch);
                                failed.extend_from_slice(batch);
                            }
                        }
                    }
                    if !failed.is_empty() {
                        println!("round {round}: {} writes to send again", failed.len());
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    left = failed;
                }
                unknown
            })
        })
        .collect();
    for t in threads {
        for k in t.join().expect("writer") {
            uncertain.entry(k).or_default().push(round);
        }
    }
}

/// Every key read back through node `id` has the value of `round` (or of
/// an earlier write whose outcome was unknown).
fn check_all(c: &TestCluster, id: u64, keys: u64, round: u64, readonly: bool, uncertain: &Uncertain) {
    let mut client = c.client(id).expect("connect");
    if readonly {
        assert_eq!(text(&client.cmd(&["READONLY"]).unwrap()), "OK");
    }
    let all: Vec<u64> = (0..keys).collect();
    for batch in all.chunks(1000) {
        let mut args = vec![b"MGET".to_vec()];
        args.extend(batch.iter().map(|&k| key(k).into_bytes()));
        let args: Vec<&[u8]> = args.iter().map(|a| &a[..]).collect();
        let Reply::Array(Some(values)) = client.cmd_bytes(&args).expect("MGET") else { panic!("MGET") };
        for (&k, v) in batch.iter().zip(values) {
            let mut allowed = vec![round];
            allowed.extend(uncertain.get(&k).into_iter().flatten().copied().filter(|&r| r < round));
            let ok = allowed.iter().any(|&r| v == Reply::Bulk(Some(value(k, r).into_bytes())));
            assert!(ok, "node {id} key {k}: {v:?}, expected round {round} (or one of {allowed:?})\n{}", c.logs());
        }
    }
}

/// Waits until node `id` has compacted its log past `index`. Snapshots are
/// taken beside the writes, one at a time: under a fast pipelined load the
/// last one can trail the writes by tens of thousands of entries when they
/// end.
fn wait_compacted(c: &TestCluster, id: u64, index: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.info_u64(id, "snapshot_index") <= index {
        assert!(Instant::now() < deadline, "node {id} did not compact past {index}\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until node `id` has applied everything node `leader` committed.
fn wait_caught_up(c: &TestCluster, id: u64, leader: u64) {
    let target = c.info_u64(leader, "commit_index");
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.info_u64(id, "last_applied") < target {
        assert!(Instant::now() < deadline, "node {id} did not catch up to {target}\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_node_that_was_down_catches_up_through_install_snapshot() {
    let _serial = ONE_AT_A_TIME.lock();
    let mut uncertain = Uncertain::new();
    let mut c = TestCluster::new(3);
    c.flags.extend(["--snapshot-entries".to_string(), "20000".to_string()]);
    c.start_all();
    let l = leader(&mut c);
    let down = (1..=3).find(|&id| id != l).unwrap();
    let up = (1..=3).find(|&id| id != l && id != down).unwrap();
    c.stop(down);
    // 200,000 writes: 50,000 keys, four times each; the log compacts
    // about ten times.
    let keys = 50_000;
    for round in 0..4 {
        write_round(&c, if round % 2 == 0 { l } else { up }, keys, round, &mut uncertain);
    }
    for id in [l, up] {
        wait_compacted(&c, id, 100_000);
    }
    c.start(down);
    wait_caught_up(&c, down, l);
    assert!(c.log_of(down).contains("installed snapshot"), "node {down} caught up without a snapshot\n{}", c.logs());
    check_all(&c, down, keys, 3, true, &uncertain);
    check_all(&c, down, keys, 3, false, &uncertain);
    for id in 1..=3 {
        let info = c.info(id).expect("INFO");
        println!(
            "node {id}: snapshot_index {} log_disk_bytes {} snapshot_disk_bytes {}, {} bytes in its data directory",
            info["snapshot_index"],
            info["log_disk_bytes"],
            info["snapshot_disk_bytes"],
            c.disk_bytes(id)
        );
        // One 64 MiB segment and one snapshot of a few MB: bounded, however
        // many times the keys are rewritten.
        assert!(c.disk_bytes(id) < 2 * 64 * 1024 * 1024 + 16 * 1024 * 1024, "node {id}: {}", c.disk_bytes(id));
    }
    // RAFT SNAPSHOT answers once this node has taken one.
    let mut client = c.client(down).unwrap();
    assert_eq!(text(&client.cmd(&["SET", "one-more", "write"]).unwrap()), "OK");
    let before = c.info_u64(down, "snapshot_index");
    assert_eq!(text(&client.cmd(&["RAFT", "SNAPSHOT"]).unwrap()), "OK");
    assert!(c.info_u64(down, "snapshot_index") > before);
    // One asked while another operator's snapshot is being written answers
    // only once a snapshot holds what was applied when it asked (the first
    // snapshot, 50,000 keys, takes tens of ms; the write and the ask take
    // about one).
    let mut first = c.client(down).unwrap();
    assert_eq!(text(&client.cmd(&["SET", "during", "the first snapshot"]).unwrap()), "OK");
    first.send_raw(b"RAFT SNAPSHOT\r\n").unwrap();
    assert_eq!(text(&client.cmd(&["SET", "after", "the first snapshot began"]).unwrap()), "OK");
    let asked_at = c.info_u64(down, "last_applied");
    assert_eq!(text(&client.cmd(&["RAFT", "SNAPSHOT"]).unwrap()), "OK");
    let covered = c.info_u64(down, "snapshot_index");
    assert!(
        covered >= asked_at,
        "RAFT SNAPSHOT answered with snapshot_index {covered} < {asked_at} applied when asked"
    );
    assert_eq!(text(&first.read_reply().unwrap()), "OK");
    c.assert_none_exited();
}

#[test]
fn kill_9_while_taking_and_while_installing_a_snapshot() {
    let _serial = ONE_AT_A_TIME.lock();
    let mut uncertain = Uncertain::new();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed());
    let mut c = TestCluster::new(3);
    c.flags.extend(["--snapshot-entries".to_string(), "0".to_string()]);
    c.start_all();
    let l = leader(&mut c);
    let keys = 100_000;
    write_round(&c, l, keys, 0, &mut uncertain);
    // Taking: ask for a snapshot and kill the node a moment later, three
    // times, on a follower and on the leader.
    for round in 0..3 {
        let victim = if round == 1 { leader(&mut c) } else { (1..=3).find(|&id| id != leader(&mut c)).unwrap() };
        let mut client = c.client(victim).unwrap();
        let taken_before = c.log_of(victim).matches("took snapshot").count();
        client.send_raw(b"RAFT SNAPSHOT\r\n").unwrap();
        let wait = rng.random_range(0..60);
        std::thread::sleep(Duration::from_millis(wait));
        c.kill(victim);
        let finished = c.log_of(victim).matches("took snapshot").count() > taken_before;
        println!("round {round}: kill -9 node {victim} {wait} ms into a snapshot (it had finished: {finished})");
        c.start(victim);
        let l = leader(&mut c);
        write_round(&c, l, keys, round + 1, &mut uncertain);
        wait_caught_up(&c, victim, l);
        check_all(&c, victim, keys, round + 1, true, &uncertain);
    }
    // Installing: a node falls behind a compacted log; it is killed while
    // the snapshot streams in, and comes back.
    let l = leader(&mut c);
    let down = (1..=3).find(|&id| id != l).unwrap();
    c.stop(down);
    write_round(&c, l, keys, 9, &mut uncertain);
    let mut client = c.client(l).unwrap();
    assert_eq!(text(&client.cmd(&["RAFT", "SNAPSHOT"]).unwrap()), "OK");
    let before = c.log_of(down).len();
    c.start(down);
    let deadline = Instant::now() + LEADER_TIMEOUT;
    while !c.log_of(down)[before..].contains("receiving snapshot") {
        assert!(Instant::now() < deadline, "node {down} never started receiving a snapshot\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(2));
    }
    let wait = rng.random_range(0..40);
    std::thread::sleep(Duration::from_millis(wait));
    c.kill(down);
    let installed = c.log_of(down)[before..].contains("installed snapshot");
    println!("kill -9 node {down} {wait} ms into receiving a snapshot (it had installed it: {installed})");
    c.start(down);
    wait_caught_up(&c, down, l);
    check_all(&c, down, keys, 9, true, &uncertain);
    check_all(&c, down, keys, 9, false, &uncertain);
    c.assert_none_exited();
}

/// Issue (heavy load under faults): a leader that snapshots faster than a
/// slow link carries a snapshot restarted its transfer to a lagging follower
/// with each new snapshot, and the follower never caught up; it also sent a
/// chunk again for every copy of an answer, and resent unanswered chunks
/// faster than the link carried them. The leader now finishes the snapshot
/// it began, keeps its log until the follower has the entries after it,
/// answers each request for a chunk once, and backs off its resends.
#[test]
fn a_follower_behind_a_slow_link_catches_up_while_the_leader_snapshots_faster() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let _serial = ONE_AT_A_TIME.lock();
    let mut uncertain = Uncertain::new();
    let mut c = TestCluster::with_proxies(3);
    c.flags.extend(["--snapshot-entries".to_string(), "2000".to_string()]);
    c.start_all();
    let l = leader(&mut c);
    let down = (1..=3).find(|&id| id != l).unwrap();
    c.stop(down);
    // Past two election timeouts the leader no longer keeps its log for it.
    std::thread::sleep(Duration::from_secs(1));
    let keys = 50_000;
    write_round(&c, l, keys, 0, &mut uncertain);
    wait_compacted(&c, l, keys / 2);
    // At most 1.6 MB/s into and out of the follower: a few seconds for the
    // snapshot, in which the leader takes one every 2,000 writes.
    c.slow(down, Duration::from_millis(40));
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (addr, stop, written) = (c.nodes[&l].client_addr.clone(), stop.clone(), written.clone());
        std::thread::spawn(move || {
            let mut client = Client::connect(&addr).expect("connect to the leader");
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let cmds: Vec<Vec<Vec<u8>>> = (0..200)
                    .map(|i| {
                        let k = (n + i) % keys;
                        vec![b"SET".to_vec(), format!("busy-{k}").into_bytes(), value(k, n).into_bytes()]
                    })
                    .collect();
                let replies = client.pipeline(&cmds).expect("pipeline to the leader");
                assert!(replies.iter().all(|r| *r == Reply::Simple("OK".into())), "{replies:?}");
                n += 200;
                written.store(n, Ordering::Relaxed);
                // About 2,000 writes a second: far less than the link
                // carries, but a snapshot every second.
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let taken_before = c.log_of(l).matches("took snapshot").count();
    c.start(down);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !c.log_of(down).contains("installed snapshot") {
        assert!(
            Instant::now() < deadline,
            "node {down} installed no snapshot in 60 s ({} snapshots taken by the leader meanwhile)\n{}",
            c.log_of(l).matches("took snapshot").count() - taken_before,
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // It goes on with entries while the writes go on.
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    let taken = c.log_of(l).matches("took snapshot").count() - taken_before;
    println!(
        "{} writes while node {down} caught up; the leader took {taken} snapshots",
        written.load(Ordering::Relaxed)
    );
    assert!(taken >= 3, "the leader took {taken} snapshots during the transfer: the test shows nothing");
    wait_caught_up(&c, down, l);
    c.heal();
    check_all(&c, down, keys, 0, true, &uncertain);
    c.assert_none_exited();
}
