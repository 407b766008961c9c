//! Experiment 4: time from `kill -9` of the leader to the first write the
//! cluster acknowledges, for several election timeouts, as a client that
//! retries would see it. After the kill, two clients per surviving node
//! each send a SET, wait a short while for the reply, and on an error or a
//! timeout send again on a new connection; the first `+OK` ends the trial.
//! The new leader's term against the old tells how many election rounds it
//! took (pre-vote rounds do not raise the term; a term rise over one means
//! a split vote or a failed candidacy).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{Lab, chart};
use crate::bench::hist::{Histogram, ms};
use crate::bench::local::{ClusterOptions, LocalCluster};
use crate::bench::plot::Series;
use crate::bench::report::Report;
use crate::client::Conn;
use crate::resp::Reply;

pub const TIMEOUTS: [(u64, u64); 5] = [(0, 5), (2, 5), (12, 25), (150, 300), (300, 500)];
const CLUSTER_SIZE: u64 = 5;
/// A trial that saw no acknowledged write in this long failed.
const TRIAL_LIMIT: Duration = Duration::from_secs(15);

/// A heartbeat well under the shortest election timeout (Raft wants it an
/// order of magnitude smaller), but never more often than every 1 ms.
pub fn heartbeat_for(election_ms: (u64, u64)) -> u64 {
    (election_ms.0 / 3).clamp(1, 50)
}

struct Trial {
    to_first_write: Duration,
    terms: u64,
}

/// Clients per surviving node.
const CLIENTS_PER_NODE: usize = 4;
/// Trials that fail in a row before a setting is given up.
const FAILURES_MAX: usize = 3;

/// How long a client waits for one reply before it tries again: longer
/// than a commit takes while elections churn, short against an election.
fn retry_after(election_ms: (u64, u64)) -> Duration {
    Duration::from_millis(election_ms.0.clamp(5, 50))
}

fn trial(cluster: &mut LocalCluster, n: usize) -> Result<Trial, String> {
    let leader = cluster.wait_leader(Duration::from_secs(20))?;
    let term = |c: &LocalCluster, id| c.info(id).and_then(|i| i.get("term").and_then(|t| t.parse::<u64>().ok()));
    let old_term = term(cluster, leader).ok_or("no term from the leader")?;
    let survivors: Vec<String> =
        cluster.nodes.keys().filter(|&&id| id != leader).map(|&id| cluster.client_addr(id)).collect();
    let wait = retry_after(cluster.options.election_ms);
    let done = Arc::new(AtomicBool::new(false));
    let first: Arc<Mutex<Option<(Instant, String)>>> = Arc::default();
    let clients_total = survivors.len() * CLIENTS_PER_NODE;
    let go = Arc::new(std::sync::Barrier::new(clients_total + 1));
    let mut clients = Vec::new();
    for (i, addr) in survivors.iter().cycle().take(clients_total).enumerate() {
        let (addr, done, first, go) = (addr.clone(), done.clone(), first.clone(), go.clone());
        let survivors_len = survivors.len();
        clients.push(std::thread::spawn(move || {
            let mut conn: Option<Conn> = None;
            let value = format!("trial {n} client {i}");
            go.wait();
            std::thread::sleep(wait * (i / survivors_len) as u32 / CLIENTS_PER_NODE as u32);
            while !done.load(Ordering::Relaxed) {
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => match Conn::open_timeout(&addr, Duration::from_millis(200)) {
                        Ok(c) => {
                            c.set_read_timeout(Some(wait));
                            conn.insert(c)
                        }
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(1));
                            continue;
                        }
                    },
                };
                match c.call(&["SET", "election", &value]) {
                    Ok(Reply::Simple(ok)) if ok == "OK" => {
                        let mut f = first.lock();
                        if f.is_none() {
                            *f = Some((Instant::now(), addr.clone()));
                        }
                        done.store(true, Ordering::Relaxed);
                    }
                    Ok(_) => std::thread::sleep(Duration::from_micros(500)),
                    Err(_) => conn = None,
                }
            }
        }));
    }
    go.wait();
    let killed = Instant::now();
    cluster.kill(leader);
    let deadline = killed + TRIAL_LIMIT;
    while !done.load(Ordering::Relaxed) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    done.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    let found = first.lock().take();
    let result = match found {
        Some((at, _)) => {
            let new_leader = cluster.wait_leader(Duration::from_secs(20))?;
            let new_term = term(cluster, new_leader).ok_or("no term from the new leader")?;
            Ok(Trial { to_first_write: at - killed, terms: new_term.saturating_sub(old_term) })
        }
        None => Err(format!("no write was acknowledged within {TRIAL_LIMIT:?} of the kill")),
    };
    cluster.restart(leader)?;
    cluster.wait_leader(Duration::from_secs(20))?;
    // Let the restarted node catch up before the next kill.
    std::thread::sleep(Duration::from_millis(200 + 2 * cluster.options.election_ms.1));
    result
}

pub fn run(lab: &Lab) -> Result<(), String> {
    let mut report = Report::new(&lab.out, "election", "Leader kill to first acknowledged write");
    report.text(&format!(
        "{CLUSTER_SIZE}-node cluster, fsync always, {} trials per setting. Each trial waits for a stable leader, \
kill -9s it and measures until a retrying client (four per surviving node, staggered) gets `+OK` for a SET; then \
restarts the killed node. After {FAILURES_MAX} failed trials in a row a setting is given up. The heartbeat is a third of the shortest timeout (1 ms at least, 50 ms at most). \"Rounds > 1\" \
counts trials where the new leader's term is more than one above the old: a split vote or a failed candidacy.",
        lab.trials
    ));
    report.csv("election_timeout_ms,heartbeat_ms,trial,ms_to_first_write,term_rise".to_string());
    let mut rows = Vec::new();
    let (mut medians, mut p99s) = (Vec::new(), Vec::new());
    let categories: Vec<String> = TIMEOUTS.iter().map(|(lo, hi)| format!("{lo}-{hi} ms")).collect();
    for (x, &election_ms) in TIMEOUTS.iter().enumerate() {
        let heartbeat_ms = heartbeat_for(election_ms);
        println!("== election timeout {}-{} ms, heartbeat {heartbeat_ms} ms", election_ms.0, election_ms.1);
        // A setting the node refuses is reported as refused, never as a
        // time.
        let flags = format!(
            "--id 1 --peers p --election-timeout {}-{} --heartbeat {heartbeat_ms}",
            election_ms.0, election_ms.1
        );
        if let Err(e) = crate::cli::parse(&flags.split(' ').map(String::from).collect::<Vec<_>>()) {
            println!("  refused by the node: {e}");
            let mut row = vec![categories[x].clone(), heartbeat_ms.to_string(), "0".into()];
            row.extend(["-", "-", "-", "-", "-"].map(String::from));
            row.push(format!("refused: {e}"));
            rows.push(row);
            continue;
        }
        let options = ClusterOptions { size: CLUSTER_SIZE, election_ms, heartbeat_ms, ..ClusterOptions::default() };
        let mut cluster = match LocalCluster::start(options) {
            Ok(c) => c,
            Err(e) => {
                println!("  the cluster never settled on a leader: {}", e.lines().next().unwrap_or(""));
                let mut row = vec![categories[x].clone(), heartbeat_ms.to_string(), "0".into()];
                row.extend(["-", "-", "-", "-", "-"].map(String::from));
                row.push("no stable leader at start".into());
                rows.push(row);
                continue;
            }
        };
        let mut h = Histogram::default();
        let (mut multi, mut failed, mut failed_in_row) = (0, 0, 0);
        for n in 0..lab.trials {
            if failed_in_row == FAILURES_MAX {
                println!("  {FAILURES_MAX} trials in a row failed: giving up this setting");
                break;
            }
            match trial(&mut cluster, n) {
                Ok(t) => {
                    println!("  trial {n}: {:.1} ms, term +{}", ms(t.to_first_write), t.terms);
                    report.csv(format!(
                        "{}-{},{heartbeat_ms},{n},{:.3},{}",
                        election_ms.0,
                        election_ms.1,
                        ms(t.to_first_write),
                        t.terms
                    ));
                    h.record(t.to_first_write);
                    failed_in_row = 0;
                    multi += usize::from(t.terms > 1);
                }
                Err(e) => {
                    println!("  trial {n}: failed: {e}");
                    report.csv(format!("{}-{},{heartbeat_ms},{n},,", election_ms.0, election_ms.1));
                    failed += 1;
                    failed_in_row += 1;
                }
            }
        }
        if h.count() == 0 {
            // Nothing to plot or average: say what happened instead.
            let mut row = vec![categories[x].clone(), heartbeat_ms.to_string(), "0".into()];
            row.extend(["-", "-", "-", "-", "-"].map(String::from));
            row.push(format!("{failed}: no write acknowledged within {TRIAL_LIMIT:?}"));
            rows.push(row);
            continue;
        }
        medians.push((x as f64, ms(h.quantile(0.5))));
        p99s.push((x as f64, ms(h.quantile(0.99))));
        rows.push(vec![
            categories[x].clone(),
            heartbeat_ms.to_string(),
            h.count().to_string(),
            format!("{:.1}", ms(h.mean())),
            format!("{:.1}", ms(h.quantile(0.5))),
            format!("{:.1}", ms(h.quantile(0.99))),
            format!("{:.1}", ms(h.max())),
            format!("{multi} of {}", h.count()),
            failed.to_string(),
        ]);
    }
    report.table(
        &[
            "election timeout",
            "heartbeat ms",
            "trials",
            "mean ms",
            "median ms",
            "p99 ms",
            "max ms",
            "rounds > 1",
            "failed",
        ],
        &rows,
    );
    let series = vec![Series { name: "median".into(), points: medians }, Series { name: "p99".into(), points: p99s }];
    let c = chart("Leader kill to first acknowledged write", "election timeout", "ms", Some(categories), series);
    report.chart("time", &c)?;
    report.finish()
}
