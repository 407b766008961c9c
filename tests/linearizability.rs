//! Jepsen-style runs against real processes: clients issue GET, SET, CAS and
//! DEL on a few keys through random nodes while a nemesis kills (SIGKILL),
//! pauses (SIGSTOP) and restarts nodes and cuts links; every history is then
//! checked for linearizability with `raftkv::lincheck`. The nemesis draws
//! its schedule from a seed, printed so that a failing schedule can be run
//! again with TEST_SEED (the timing of real processes is not replayable, the
//! choices are).

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use raftkv::lincheck::{self, Budget, Call, Op, Outcome, Ret, Verdict};
use raftkv::resp::Reply;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use support::{Client, TestCluster};

const KEYS: u64 = 6;
const CLIENTS: u64 = 8;

fn seed() -> u64 {
    let seed = std::env::var("TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("seed {seed} (rerun with TEST_SEED={seed})");
    seed
}

/// What a reply means for the history.
fn outcome(call: &Call, reply: std::io::Result<Reply>) -> Outcome {
    let reply = match reply {
        Ok(r) => r,
        // A lost connection: the command may or may not have been applied.
        Err(_) => return Outcome::Unknown,
    };
    match (call, reply) {
        (_, Reply::Error(e)) if e.starts_with("TRYAGAIN") => Outcome::Failed,
        (_, Reply::Error(e)) if e.starts_with("TIMEOUT") => Outcome::Unknown,
        (Call::Read, Reply::Bulk(v)) => Outcome::Ok(Ret::Value(v)),
        (Call::Write(_), Reply::Simple(s)) if s == "OK" => Outcome::Ok(Ret::Done),
        (Call::Cas { .. } | Call::Delete, Reply::Integer(n)) if n == 0 || n == 1 => Outcome::Ok(Ret::Bool(n == 1)),
        (call, reply) => panic!("{call:?}: unexpected reply {reply:?}"),
    }
}

/// One client thread: random operations until `stop`, through random nodes;
/// a new logical client after every unknown outcome (it may still be in
/// flight, and a client has one operation at a time).
fn run_client(addrs: Vec<String>, seed: u64, w: u64, stop: Arc<AtomicBool>, start: Instant) -> Vec<Op> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ (w << 32));
    let mut ops = Vec::new();
    let mut client_id = w << 32;
    let mut conn: Option<Client> = None;
    let mut written: Vec<Vec<u8>> = Vec::new();
    let mut n = 0u64;
    let now = || start.elapsed().as_micros() as u64;
    while !stop.load(Ordering::Relaxed) {
        if conn.is_none() {
            conn = Client::connect(&addrs[rng.random_range(0..addrs.len())]).ok();
        }
        let Some(c) = conn.as_mut() else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        n += 1;
        let key = format!("k{}", rng.random_range(0..KEYS)).into_bytes();
        let value = format!("c{w}-{n}").into_bytes();
        let (call, args): (Call, Vec<Vec<u8>>) = match rng.random_range(0..10) {
            0..=3 => (Call::Read, vec![b"GET".to_vec(), key.clone()]),
            4..=6 => (Call::Write(value.clone()), vec![b"SET".to_vec(), key.clone(), value.clone()]),
            7 | 8 => {
                let expected = if written.is_empty() {
                    value.clone()
                } else {
                    written[rng.random_range(0..written.len())].clone()
                };
                let call = Call::Cas { expected: expected.clone(), new: value.clone() };
                (call, vec![b"CAS".to_vec(), key.clone(), expected, value.clone()])
            }
            _ => (Call::Delete, vec![b"DEL".to_vec(), key.clone()]),
        };
        written.push(value);
        if written.len() > 16 {
            written.remove(0);
        }
        let args: Vec<&[u8]> = args.iter().map(|a| &a[..]).collect();
        let invoked = now();
        let reply = c.cmd_bytes(&args);
        let completed = now();
        let lost = reply.is_err();
        let outcome = outcome(&call, reply);
        let unknown = outcome == Outcome::Unknown;
        ops.push(Op { client: client_id, key, call, invoked, completed, outcome });
        if unknown {
            client_id += 1;
        }
        if lost {
            conn = None;
        }
    }
    ops
}

/// Runs clients during `nemesis`, then heals everything, restarts every
/// node, lets the clients go on a little and checks the history.
fn check_under(c: &mut TestCluster, seed: u64, nemesis: impl FnOnce(&mut TestCluster, &mut Xoshiro256PlusPlus)) {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    c.start_all();
    c.wait_for_leader(Duration::from_secs(15)).unwrap_or_else(|| panic!("no leader\n{}", c.logs()));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let addrs: Vec<String> = c.nodes.values().map(|n| n.client_addr.clone()).collect();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|w| {
            let (addrs, stop) = (addrs.clone(), stop.clone());
            std::thread::spawn(move || run_client(addrs, seed, w, stop, start))
        })
        .collect();
    nemesis(c, &mut rng);
    c.assert_none_exited();
    c.heal();
    let ids: Vec<u64> = c.nodes.keys().copied().collect();
    for id in ids {
        if !c.running().contains(&id) {
            c.start(id);
        }
    }
    c.wait_for_leader(Duration::from_secs(20)).unwrap_or_else(|| panic!("no leader after healing\n{}", c.logs()));
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let ops: Vec<Op> = clients.into_iter().flat_map(|h| h.join().expect("client thread")).collect();
    let ok = ops.iter().filter(|o| matches!(o.outcome, Outcome::Ok(_))).count();
    let unknown = ops.iter().filter(|o| o.outcome == Outcome::Unknown).count();
    println!("{} operations: {ok} ok, {unknown} unknown, {} failed", ops.len(), ops.len() - ok - unknown);
    assert!(ok > 100, "too few operations succeeded ({ok})\n{}", c.logs());
    let path = c.dir.path().join("history.txt");
    std::fs::write(&path, lincheck::to_text(&ops)).expect("write history");
    match lincheck::check(&ops, Budget::default()).expect("well-formed history") {
        Verdict::Linearizable => {}
        Verdict::NotLinearizable { key, minimal } => {
            let kept = std::env::temp_dir().join(format!("raftkv-history-{seed}.txt"));
            let _ = std::fs::copy(&path, &kept);
            panic!(
                "not linearizable on key {}; whole history in {}; minimal:\n{}\n{}",
                lincheck::show(&key),
                kept.display(),
                lincheck::render(&minimal),
                c.logs()
            );
        }
        Verdict::Undecided { key } => panic!("the checker ran out of budget on key {}", lincheck::show(&key)),
    }
}

fn pause(rng: &mut Xoshiro256PlusPlus, lo: u64, hi: u64) {
    std::thread::sleep(Duration::from_millis(rng.random_range(lo..hi)));
}

fn leader_or_any(c: &mut TestCluster, rng: &mut Xoshiro256PlusPlus) -> u64 {
    c.assert_none_exited();
    let running = c.running();
    let leader = running.iter().copied().find(|&id| c.info(id).is_some_and(|i| i["role"] == "leader"));
    assert!(!running.is_empty(), "every node has exited\n{}", c.logs());
    leader.unwrap_or_else(|| running[rng.random_range(0..running.len())])
}

#[test]
fn linearizable_through_kills_and_pauses() {
    let seed = seed();
    let mut c = TestCluster::new(5);
    check_under(&mut c, seed, |c, rng| {
        for round in 0..6 {
            pause(rng, 300, 1200);
            match rng.random_range(0..3) {
                0 => {
                    // kill -9 up to two nodes (the leader often among them), restart later
                    let first = leader_or_any(c, rng);
                    let mut down = vec![first];
                    if rng.random_bool(0.5) {
                        let others: Vec<u64> = c.running().into_iter().filter(|&id| id != first).collect();
                        down.push(others[rng.random_range(0..others.len())]);
                    }
                    println!("round {round}: kill -9 {down:?}");
                    for &id in &down {
                        c.kill(id);
                    }
                    pause(rng, 500, 2000);
                    for &id in &down {
                        c.start(id);
                    }
                }
                1 => {
                    let id = leader_or_any(c, rng);
                    println!("round {round}: SIGSTOP {id}");
                    c.signal(id, "STOP");
                    pause(rng, 500, 2500);
                    c.signal(id, "CONT");
                }
                _ => {
                    let id = leader_or_any(c, rng);
                    println!("round {round}: SIGTERM and restart {id}");
                    c.stop(id);
                    c.start(id);
                }
            }
        }
    });
}

#[test]
fn linearizable_through_partitions() {
    let seed = seed();
    let mut c = TestCluster::with_proxies(5);
    check_under(&mut c, seed, |c, rng| {
        let all: Vec<u64> = (1..=5).collect();
        for round in 0..6 {
            pause(rng, 300, 1200);
            let leader = leader_or_any(c, rng);
            match rng.random_range(0..3) {
                0 => {
                    // The leader in a minority of one or two.
                    let mut minority = vec![leader];
                    if rng.random_bool(0.5) {
                        minority.push(*all.iter().find(|&&id| id != leader).expect("another node"));
                    }
                    let majority: Vec<u64> = all.iter().copied().filter(|id| !minority.contains(id)).collect();
                    println!("round {round}: partition {minority:?} | {majority:?}");
                    c.partition(&[&minority, &majority]);
                }
                1 => {
                    // Random halves.
                    let set: BTreeSet<u64> = all.iter().copied().filter(|_| rng.random_bool(0.5)).collect();
                    let a: Vec<u64> = set.iter().copied().collect();
                    let b: Vec<u64> = all.iter().copied().filter(|id| !set.contains(id)).collect();
                    println!("round {round}: partition {a:?} | {b:?}");
                    c.partition(&[&a, &b]);
                }
                _ => {
                    // One way only: the leader can hear but not speak to two nodes.
                    let targets: Vec<u64> = all.iter().copied().filter(|&id| id != leader).take(2).collect();
                    println!("round {round}: cut {leader} -> {targets:?}");
                    for t in targets {
                        c.cut(leader, t);
                    }
                }
            }
            pause(rng, 1000, 3000);
            println!("round {round}: heal");
            c.heal();
        }
    });
}
