//! Experiment: failover as clients see it. Clusters of 3 and 5 nodes, every
//! raft link through a proxy; one client per node writing `INCR`s through
//! that node, and one client that finds the leader as a Sentinel client
//! does (`SENTINEL get-master-addr-by-name raftkv` on any node) and writes
//! to it, finding it again when its connection fails or a request takes
//! longer than a second. The leader is killed (`kill -9`, then restarted),
//! paused (`SIGSTOP`, then `SIGCONT`) and cut off from its peers (then
//! healed), in turn, for several rounds each. For each client and each kind
//! of fault: the longest time between two acknowledged writes while the
//! fault lasted (the pause the client saw) and the errors it got.
//!
//! Before the faults, each cluster runs under the same clients alone for a
//! while, and the experiment reports whether the leader ever changed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{Lab, chart};
use crate::bench::hist::ms;
use crate::bench::local::{ClusterOptions, LocalCluster};
use crate::bench::plot::Series;
use crate::bench::report::Report;
use crate::client::Conn;
use crate::resp::Reply;

const SIZES: [u64; 2] = [3, 5];
const FAULTS: [Fault; 3] = [Fault::Kill, Fault::Pause, Fault::Isolate];
/// How long each fault lasts, and how long the cluster then settles.
const HOLD: Duration = Duration::from_millis(2000);
const SETTLE: Duration = Duration::from_millis(1500);
/// How long the clients run alone before the faults.
const STEADY: Duration = Duration::from_secs(20);
/// The Sentinel client's patience with one request.
const SENTINEL_READ_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    Kill,
    Pause,
    Isolate,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill -9",
            Fault::Pause => "SIGSTOP",
            Fault::Isolate => "isolated",
        }
    }

    /// For the chart's axis: nodes and this.
    fn short(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::Isolate => "cut off",
        }
    }
}

/// Who a client writes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Via {
    Node(u64),
    Sentinel,
}

/// One client's acknowledged writes and errors, timestamped.
#[derive(Default)]
struct Log {
    acks: Vec<Instant>,
    errors: Vec<(Instant, String)>,
}

fn error_kind(e: &str) -> String {
    let word = e.split_whitespace().next().unwrap_or("");
    match word {
        "TIMEOUT" | "TRYAGAIN" | "READONLY" | "ERR" => format!("-{word}"),
        _ => "connection".into(),
    }
}

/// Writes through one node until `stop`.
fn direct(addr: String, key: String, stop: Arc<AtomicBool>, log: Arc<Mutex<Log>>) {
    let mut conn: Option<Conn> = None;
    while !stop.load(Ordering::Relaxed) {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::open_timeout(&addr, Duration::from_millis(200)) {
                Ok(c) => {
                    c.set_read_timeout(Some(Duration::from_secs(30)));
                    conn.insert(c)
                }
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
            },
        };
        match c.call(&["INCR", &key]) {
            Ok(Reply::Integer(_)) => log.lock().acks.push(Instant::now()),
            Ok(Reply::Error(e)) => log.lock().errors.push((Instant::now(), error_kind(&e))),
            Ok(_) => {}
            Err(e) => {
                log.lock().errors.push((Instant::now(), error_kind(&e)));
                conn = None;
            }
        }
    }
}

/// The master's address as the nodes' Sentinel view says, asking them in
/// turn from `start`.
fn discover(addrs: &[String], start: usize) -> Option<String> {
    for i in 0..addrs.len() {
        let addr = &addrs[(start + i) % addrs.len()];
        let Ok(mut c) = Conn::open_timeout(addr, Duration::from_millis(100)) else { continue };
        c.set_read_timeout(Some(Duration::from_millis(200)));
        if let Ok(Reply::Array(Some(parts))) = c.call(&["SENTINEL", "get-master-addr-by-name", "raftkv"])
            && let [Reply::Bulk(Some(host)), Reply::Bulk(Some(port))] = &parts[..]
        {
            return Some(format!("{}:{}", String::from_utf8_lossy(host), String::from_utf8_lossy(port)));
        }
    }
    None
}

/// Writes to the leader as a Sentinel client finds it, until `stop`.
fn sentinel(addrs: Vec<String>, key: String, stop: Arc<AtomicBool>, log: Arc<Mutex<Log>>) {
    let mut conn: Option<Conn> = None;
    let mut asked = 0;
    while !stop.load(Ordering::Relaxed) {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => {
                asked += 1;
                let found =
                    discover(&addrs, asked).and_then(|a| Conn::open_timeout(&a, Duration::from_millis(200)).ok());
                match found {
                    Some(c) => {
                        c.set_read_timeout(Some(SENTINEL_READ_TIMEOUT));
                        conn.insert(c)
                    }
                    None => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                }
            }
        };
        match c.call(&["INCR", &key]) {
            Ok(Reply::Integer(_)) => log.lock().acks.push(Instant::now()),
            Ok(other) => {
                let e = match other {
                    Reply::Error(e) => e,
                    _ => "ERR unexpected reply".into(),
                };
                log.lock().errors.push((Instant::now(), error_kind(&e)));
                conn = None;
            }
            Err(e) => {
                log.lock().errors.push((Instant::now(), error_kind(&e)));
                conn = None;
            }
        }
    }
}

/// The longest time without an acknowledged write within `[from, until]`.
fn longest_gap(acks: &[Instant], from: Instant, until: Instant) -> Duration {
    let mut last = from;
    let mut gap = Duration::ZERO;
    for &a in acks.iter().filter(|&&a| a > from && a <= until) {
        gap = gap.max(a - last);
        last = a;
    }
    gap.max(until.saturating_duration_since(last).min(until - from))
}

fn apply(c: &mut LocalCluster, fault: Fault, leader: u64) -> Result<(), String> {
    match fault {
        Fault::Kill => {
            c.kill(leader);
            Ok(())
        }
        Fault::Pause => c.signal(leader, "STOP"),
        Fault::Isolate => {
            c.isolate(leader, true);
            Ok(())
        }
    }
}

fn undo(c: &mut LocalCluster, fault: Fault, leader: u64) -> Result<(), String> {
    match fault {
        Fault::Kill => c.restart(leader),
        Fault::Pause => c.signal(leader, "CONT"),
        Fault::Isolate => {
            c.isolate(leader, false);
            Ok(())
        }
    }
}

/// The worst a client saw over the rounds of one fault.
#[derive(Default)]
struct Worst {
    gap: Duration,
    errors: BTreeMap<String, usize>,
}

pub fn run(lab: &Lab) -> Result<(), String> {
    let rounds = lab.rounds.max(1);
    let mut report = Report::new(&lab.out, "failover", "Failover as clients see it");
    report.text(&format!(
        "Clusters of 3 and 5 nodes, fsync always, election timeout 150-300 ms, every raft link through a proxy. \
One client per node writes `INCR`s through it, one at a time; a Sentinel client asks the nodes \
`SENTINEL get-master-addr-by-name raftkv`, writes to that address, and asks again when its connection fails, \
an error comes, or a reply takes over {} s. The leader is killed (and restarted), paused (and resumed), and cut \
off from its peers (and healed), {rounds} rounds of each, {} s per fault and {} s to settle. \"Longest pause\" is \
the longest time between two acknowledged writes of a client while a fault lasted; \"faulted node\" is the \
client of the node the fault hit, which waits for that node to come back. Before the faults, each cluster ran \
{} s under the same clients with no fault: \"leader changes\" counts the terms it went through.",
        SENTINEL_READ_TIMEOUT.as_secs(),
        HOLD.as_secs_f64(),
        SETTLE.as_secs_f64(),
        STEADY.as_secs()
    ));
    report.csv("nodes,fault,round,client,faulted_node,longest_pause_ms,errors".to_string());
    let mut rows = Vec::new();
    let mut categories = Vec::new();
    let (mut others, mut sentinels) = (Vec::new(), Vec::new());
    let mut steady_rows = Vec::new();
    for size in SIZES {
        println!("== {size} nodes");
        let options = ClusterOptions { size, proxies: true, ..ClusterOptions::default() };
        let mut cluster = LocalCluster::start(options)?;
        let first = cluster.wait_leader(Duration::from_secs(20))?;
        let term = |c: &LocalCluster, id: u64| {
            c.info(id).and_then(|i| i.get("term").and_then(|t| t.parse::<u64>().ok())).unwrap_or(0)
        };
        let stop = Arc::new(AtomicBool::new(false));
        let addrs: Vec<String> = cluster.nodes.keys().map(|&id| cluster.client_addr(id)).collect();
        let mut logs: BTreeMap<Via, Arc<Mutex<Log>>> = BTreeMap::new();
        let mut threads = Vec::new();
        for &id in cluster.nodes.keys() {
            let log = Arc::new(Mutex::new(Log::default()));
            logs.insert(Via::Node(id), log.clone());
            let (addr, stop) = (cluster.client_addr(id), stop.clone());
            threads.push(std::thread::spawn(move || direct(addr, format!("failover:{id}"), stop, log)));
        }
        let log = Arc::new(Mutex::new(Log::default()));
        logs.insert(Via::Sentinel, log.clone());
        let (a, s) = (addrs.clone(), stop.clone());
        threads.push(std::thread::spawn(move || sentinel(a, "failover:sentinel".into(), s, log)));

        let term_before = term(&cluster, first);
        std::thread::sleep(STEADY);
        let leader_now = cluster.wait_leader(Duration::from_secs(5))?;
        let changes = term(&cluster, leader_now).saturating_sub(term_before);
        let acked: usize = logs.values().map(|l| l.lock().acks.len()).sum();
        println!("  {} s without faults: {changes} leader changes, {acked} writes", STEADY.as_secs());
        steady_rows.push(vec![size.to_string(), STEADY.as_secs().to_string(), acked.to_string(), changes.to_string()]);

        let mut worst: BTreeMap<(Fault, bool, Via), Worst> = BTreeMap::new();
        for fault in FAULTS {
            for round in 0..rounds {
                let leader = cluster.wait_leader(Duration::from_secs(20))?;
                let from = Instant::now();
                apply(&mut cluster, fault, leader)?;
                std::thread::sleep(HOLD);
                let healed = Instant::now();
                undo(&mut cluster, fault, leader)?;
                cluster.wait_leader(Duration::from_secs(20))?;
                std::thread::sleep(SETTLE);
                let until = Instant::now();
                for (&via, log) in &logs {
                    let log = log.lock();
                    let hit = via == Via::Node(leader);
                    // The client of the faulted node waits for the node; the
                    // others must not notice the heal.
                    let gap = longest_gap(&log.acks, from, if hit { until } else { healed });
                    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
                    for (_, e) in log.errors.iter().filter(|(t, _)| *t >= from && *t <= until) {
                        *errors.entry(e.clone()).or_default() += 1;
                    }
                    let who = match via {
                        Via::Node(id) => format!("node {id}"),
                        Via::Sentinel => "sentinel".into(),
                    };
                    let errs: Vec<String> = errors.iter().map(|(k, n)| format!("{k} x{n}")).collect();
                    report.csv(format!(
                        "{size},{},{round},{who},{hit},{:.1},{}",
                        fault.name(),
                        ms(gap),
                        errs.join(" ")
                    ));
                    let w = worst.entry((fault, hit, if hit { Via::Node(0) } else { via })).or_default();
                    w.gap = w.gap.max(gap);
                    for (k, n) in errors {
                        *w.errors.entry(k).or_default() += n;
                    }
                }
                println!("  {} of leader {leader}, round {round}: done", fault.name());
            }
        }
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            let _ = t.join();
        }
        for fault in FAULTS {
            let x = categories.len() as f64;
            categories.push(format!("{size}: {}", fault.short()));
            let mut other_gap = Duration::ZERO;
            let mut other_errors: BTreeMap<String, usize> = BTreeMap::new();
            for ((f, hit, via), w) in &worst {
                if *f != fault || *hit || *via == Via::Sentinel {
                    continue;
                }
                other_gap = other_gap.max(w.gap);
                for (k, n) in &w.errors {
                    *other_errors.entry(k.clone()).or_default() += n;
                }
            }
            let describe = |errors: &BTreeMap<String, usize>| {
                if errors.is_empty() {
                    "none".to_string()
                } else {
                    errors.iter().map(|(k, n)| format!("{k} x{n}")).collect::<Vec<_>>().join(", ")
                }
            };
            let empty = Worst::default();
            let s = worst.get(&(fault, false, Via::Sentinel)).unwrap_or(&empty);
            let f = worst.get(&(fault, true, Via::Node(0))).unwrap_or(&empty);
            others.push((x, ms(other_gap)));
            sentinels.push((x, ms(s.gap)));
            rows.push(vec![
                size.to_string(),
                fault.name().to_string(),
                format!("{:.0}", ms(other_gap)),
                describe(&other_errors),
                format!("{:.0}", ms(s.gap)),
                describe(&s.errors),
                format!("{:.0}", ms(f.gap)),
                describe(&f.errors),
            ]);
        }
    }
    report.table(&["nodes", "seconds without faults", "writes", "leader changes"], &steady_rows);
    report.table(
        &[
            "nodes",
            "fault",
            "other nodes' clients: longest pause ms",
            "their errors",
            "sentinel client: longest pause ms",
            "its errors",
            "faulted node's client: longest pause ms",
            "its errors",
        ],
        &rows,
    );
    // The faulted node's client waits for its node to come back (the
    // table has it); on the chart it would only flatten the others.
    let series = vec![
        Series { name: "clients of other nodes".into(), points: others },
        Series { name: "Sentinel client".into(), points: sentinels },
    ];
    let c = chart("Longest pause a client saw during a leader fault", "nodes: fault", "ms", Some(categories), series);
    report.chart("pause", &c)?;
    report.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_gap_counts_the_edges_of_the_window() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let acks = [at(5), at(10), at(300), at(310)];
        assert_eq!(longest_gap(&acks, at(0), at(400)), Duration::from_millis(290));
        // No write at all: the whole window.
        assert_eq!(longest_gap(&[], at(0), at(400)), Duration::from_millis(400));
        // The last write long before the end.
        assert_eq!(longest_gap(&acks[..2], at(0), at(400)), Duration::from_millis(390));
    }
}
