//! Failover as a client sees it (README, Failover): under steady `INCR`s
//! through every node, the leader is killed, paused and cut off in turn.
//! Clients through the other nodes see a pause no longer than an election
//! timeout plus 200 ms and no error, and every counter holds exactly the
//! increments acknowledged: a write forwarded to a leader that died is
//! carried to the next one and applied once.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raftkv::resp::Reply;
use support::{Client, TestCluster, text};

/// The slowest answer a client of a surviving node may wait for: the
/// election timeout's upper bound (`support::ELECTION_FLAGS`) plus 200 ms.
const WAIT_MAX: Duration = Duration::from_millis(300 + 200);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Kill,
    Pause,
    Isolate,
}

/// One request as its client saw it.
struct Seen {
    node: u64,
    start: Instant,
    took: Duration,
    outcome: Result<i64, String>,
}

/// A counter and what its client was told about it.
#[derive(Default)]
struct Count {
    acked: i64,
    /// Increments whose outcome the client does not know (a lost
    /// connection, an error).
    unknown: i64,
}

/// A client that `INCR`s its own counters through `node`, one request at a
/// time. After an answer it cannot trust it moves to a fresh counter, so
/// every counter with no unknown outcome must hold exactly what was
/// acknowledged, and each `INCR`'s answer must be the count so far.
fn incr_client(
    addr: String,
    node: u64,
    name: String,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> std::thread::JoinHandle<Vec<(String, Count)>> {
    std::thread::spawn(move || {
        let mut counters = vec![(format!("{name}-0"), Count::default())];
        let mut conn: Option<Client> = None;
        while !stop.load(Ordering::Relaxed) {
            let Some(c) = conn.as_mut() else {
                conn = Client::connect(&addr).ok();
                if conn.is_none() {
                    std::thread::sleep(Duration::from_millis(20));
                }
                continue;
            };
            let (key, count) = counters.last_mut().expect("a counter");
            let start = Instant::now();
            let reply = c.cmd(&["INCR", key]);
            let took = start.elapsed();
            let outcome = match reply {
                Ok(Reply::Integer(n)) => {
                    count.acked += 1;
                    assert_eq!(n, count.acked, "{key} through node {node}: INCR answered {n}: applied twice?");
                    Ok(n)
                }
                Ok(other) => Err(text(&other)),
                Err(e) => {
                    conn = None;
                    Err(format!("connection: {e}"))
                }
            };
            if outcome.is_err() {
                count.unknown += 1;
                let next = format!("{name}-{}", counters.len());
                counters.push((next, Count::default()));
            }
            seen.lock().expect("lock").push(Seen { node, start, took, outcome });
        }
        counters
    })
}

fn apply(c: &mut TestCluster, fault: Fault, leader: u64) {
    match fault {
        Fault::Kill => c.kill(leader),
        Fault::Pause => c.signal(leader, "STOP"),
        Fault::Isolate => {
            let others: Vec<u64> = c.nodes.keys().copied().filter(|&id| id != leader).collect();
            c.partition(&[&[leader], &others]);
        }
    }
}

fn undo(c: &mut TestCluster, fault: Fault, leader: u64) {
    match fault {
        Fault::Kill => c.start(leader),
        Fault::Pause => c.signal(leader, "CONT"),
        Fault::Isolate => c.heal(),
    }
}

#[test]
fn three_nodes_clients_of_surviving_nodes_see_a_leader_failure_as_a_short_pause_and_every_write_once() {
    leader_failures_under_incr(3);
}

#[test]
fn five_nodes_clients_of_surviving_nodes_see_a_leader_failure_as_a_short_pause_and_every_write_once() {
    leader_failures_under_incr(5);
}

/// Both tests measure waits: one cluster at a time on a small machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn leader_failures_under_incr(nodes: u64) {
    let _serial = ONE_AT_A_TIME.lock();
    let mut c = TestCluster::with_proxies(nodes);
    c.start_all();
    c.wait_for_leader(Duration::from_secs(15)).unwrap_or_else(|| panic!("no leader\n{}", c.logs()));
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = c
        .nodes
        .values()
        .flat_map(|n| [0, 1].map(|i| (n.client_addr.clone(), n.id, format!("n{}c{i}", n.id))))
        .map(|(addr, id, name)| incr_client(addr, id, name, stop.clone(), seen.clone()))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // Where each fault was: (node, from, until its node is back and settled).
    let mut windows = Vec::new();
    for fault in [Fault::Kill, Fault::Pause, Fault::Isolate, Fault::Kill, Fault::Pause, Fault::Isolate] {
        let leader = c.wait_for_leader(Duration::from_secs(15)).unwrap_or_else(|| panic!("no leader\n{}", c.logs()));
        let from = Instant::now();
        apply(&mut c, fault, leader);
        std::thread::sleep(Duration::from_millis(1500));
        undo(&mut c, fault, leader);
        c.wait_for_leader(Duration::from_secs(15)).unwrap_or_else(|| panic!("no leader after {fault:?}\n{}", c.logs()));
        std::thread::sleep(Duration::from_millis(1000));
        windows.push((leader, from, Instant::now(), fault));
    }
    stop.store(true, Ordering::Relaxed);
    let counters: Vec<(String, Count)> = clients.into_iter().flat_map(|h| h.join().expect("client thread")).collect();

    // Clients of the nodes that stayed up: short pauses, no error.
    let seen = seen.lock().expect("lock");
    let faulted = |s: &Seen| {
        windows.iter().any(|&(node, from, until, _)| s.node == node && s.start < until && s.start + s.took >= from)
    };
    let survivors: Vec<&Seen> = seen.iter().filter(|s| !faulted(s)).collect();
    let longest = survivors.iter().map(|s| s.took).max().unwrap_or_default();
    let errors: Vec<String> =
        survivors.iter().filter_map(|s| s.outcome.as_ref().err().map(|e| format!("node {}: {e}", s.node))).collect();
    let acked: i64 = counters.iter().map(|(_, n)| n.acked).sum();
    println!(
        "{} requests through surviving nodes, longest {longest:?}; {acked} increments acknowledged",
        survivors.len()
    );
    for &(node, from, until, fault) in &windows {
        let during = survivors.iter().filter(|s| s.start < until && s.start + s.took >= from);
        let worst = during.map(|s| s.took).max().unwrap_or_default();
        println!("{fault:?} of node {node}: longest wait through the others {worst:?}");
    }
    assert!(errors.is_empty(), "clients of surviving nodes got errors: {errors:?}\n{}", c.logs());
    assert!(longest <= WAIT_MAX, "a client of a surviving node waited {longest:?}\n{}", c.logs());
    assert!(acked > 100, "too few writes got through: {acked}\n{}", c.logs());

    // The nodes say what they carried over (INFO stats).
    let stat = |c: &TestCluster, id: u64, name: &str| -> u64 {
        c.info(id).and_then(|i| i.get(name).and_then(|v| v.parse().ok())).unwrap_or(0)
    };
    let again: u64 = c.running().iter().map(|&id| stat(&c, id, "writes_proposed_again")).sum();
    assert!(again > 0, "no node reports a write proposed again\n{}", c.logs());
    let leader = c.wait_for_leader(Duration::from_secs(15)).expect("a leader");
    assert!(stat(&c, leader, "client_sessions") >= nodes, "{:?}", c.info(leader));

    // Every counter holds what was acknowledged, on every node.
    for id in c.running() {
        let mut client = c.client(id).expect("connect");
        for (key, count) in &counters {
            let got = match client.cmd(&["GET", key]).expect("GET") {
                Reply::Bulk(None) => 0,
                reply => text(&reply).parse::<i64>().unwrap_or_else(|_| panic!("{key} = {reply:?}")),
            };
            assert!(
                got >= count.acked && got <= count.acked + count.unknown,
                "node {id}: {key} = {got}, acknowledged {} and {} unknown\n{}",
                count.acked,
                count.unknown,
                c.logs()
            );
        }
    }
}

/// Redis answers writes on a demoted master with `-READONLY`, and Sentinel
/// clients then ask for the new master: a connection that wrote to the
/// leader is told so once after the leader hands over, without the write
/// being applied; its next writes are forwarded as on any follower, and a
/// connection that never wrote to it as leader is not told.
#[test]
fn a_connection_that_wrote_to_a_demoted_leader_is_told_readonly_once() {
    let _serial = ONE_AT_A_TIME.lock();
    let mut c = TestCluster::new(3);
    c.start_all();
    let leader = c.wait_for_leader(Duration::from_secs(15)).unwrap_or_else(|| panic!("no leader\n{}", c.logs()));
    let mut writer = c.client(leader).expect("connect");
    let mut reader = c.client(leader).expect("connect");
    assert_eq!(text(&writer.cmd(&["SET", "k", "1"]).unwrap()), "OK");
    assert_eq!(text(&reader.cmd(&["GET", "k"]).unwrap()), "1");
    let next = c.nodes.keys().copied().find(|&id| id != leader).unwrap();
    let reply = c.client(leader).unwrap().cmd(&["RAFT", "TRANSFER", &next.to_string()]).unwrap();
    assert_eq!(text(&reply), "OK", "{}", c.logs());
    let got = text(&writer.cmd(&["SET", "k", "2"]).unwrap());
    assert!(got.starts_with("-READONLY"), "{got}");
    assert_eq!(text(&writer.cmd(&["GET", "k"]).unwrap()), "1", "a write answered -READONLY was applied");
    assert_eq!(text(&writer.cmd(&["SET", "k", "3"]).unwrap()), "OK");
    assert_eq!(text(&reader.cmd(&["SET", "k", "4"]).unwrap()), "OK");
    assert_eq!(text(&reader.cmd(&["GET", "k"]).unwrap()), "4");
}
