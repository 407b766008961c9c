//! Experiment 5: stragglers. A 5-node cluster whose every link runs through
//! a proxy; the proxies of the slow nodes hold each chunk of bytes for a
//! delay before passing it on (both directions). Scenarios: one slow
//! follower, two, a slow majority (three followers), and a slow leader,
//! each at several delays, against the same cluster with no delay. Clients
//! talk to the leader directly.

use std::time::Duration;

use super::{CELL_HEADERS, Lab, cells, chart, measure, preload, spec, workload_name};
use crate::bench::load::{LoadResult, Workload};
use crate::bench::local::{ClusterOptions, LocalCluster};
use crate::bench::plot::Series;
use crate::bench::report::Report;

pub const DELAYS_MS: [u64; 3] = [1, 5, 20];
const SCENARIOS: [&str; 4] = ["one slow follower", "two slow followers", "slow majority (3 followers)", "slow leader"];
const LOADS: [Workload; 2] = [Workload::Mix { read_pct: 0 }, Workload::Mix { read_pct: 100 }];
const CONNECTIONS: usize = 16;

fn slow_set(scenario: usize, leader: u64, size: u64) -> Vec<u64> {
    let followers: Vec<u64> = (1..=size).filter(|&id| id != leader).collect();
    match scenario {
        0 => followers[..1].to_vec(),
        1 => followers[..2].to_vec(),
        2 => followers[..3].to_vec(),
        _ => vec![leader],
    }
}

pub fn run(lab: &Lab) -> Result<(), String> {
    let mut report = Report::new(&lab.out, "stragglers", "Stragglers: slow followers and a slow leader");
    report.text(&format!(
        "5 nodes, fsync always, every raft link through a delaying proxy (the delay applies to each chunk of \
bytes, in each direction, so a 5 ms link has a round trip of at least 10 ms). {CONNECTIONS} connections to the \
leader, 100-byte values, {} s per point.",
        lab.seconds
    ));
    report.csv(format!("scenario,delay_ms,{}", LoadResult::CSV_HEADER));
    let options = ClusterOptions { size: 5, proxies: true, ..ClusterOptions::default() };
    let cluster = LocalCluster::start(options)?;
    let mut leader = cluster.wait_leader(Duration::from_secs(20))?;
    preload(&cluster.client_addr(leader))?;
    let mut moves = Vec::new();
    let mut rows = Vec::new();
    // tput[load][scenario] = points over delay
    let mut tput: Vec<Vec<Vec<(f64, f64)>>> = vec![vec![Vec::new(); SCENARIOS.len()]; LOADS.len()];
    let point = |report: &mut Report, rows: &mut Vec<Vec<String>>, addr: &str, scenario: &str, delay: u64| {
        let mut out = Vec::new();
        for workload in LOADS {
            let spec = spec(vec![addr.to_string()], CONNECTIONS, workload, lab.seconds);
            let r = measure(&format!("{scenario}, {delay} ms, {}", workload_name(workload)), &spec);
            report.csv(format!("{scenario},{delay},{}", r.csv_row(&workload_name(workload), &spec)));
            let mut row = vec![scenario.to_string(), delay.to_string(), workload_name(workload)];
            row.extend(cells(&r));
            rows.push(row);
            out.push(r.ops_per_sec());
        }
        out
    };
    let baseline = point(&mut report, &mut rows, &cluster.client_addr(leader), "no delay", 0);
    for (s, scenario) in SCENARIOS.iter().enumerate() {
        for (l, t) in baseline.iter().enumerate() {
            tput[l][s].push((0.0, *t));
        }
        let slow = slow_set(s, leader, 5);
        for delay in DELAYS_MS {
            for &id in &slow {
                cluster.slow_node(id, Duration::from_millis(delay));
            }
            let addr = cluster.client_addr(leader);
            for (l, t) in point(&mut report, &mut rows, &addr, scenario, delay).into_iter().enumerate() {
                tput[l][s].push((delay as f64, t));
            }
            for &id in &slow {
                cluster.slow_node(id, Duration::ZERO);
            }
            // A leader that lost its office mid-point served the rest of it
            // by forwarding; say so, and aim the next point at the new one.
            let now = cluster.wait_leader(Duration::from_secs(20))?;
            if now != leader {
                moves.push(format!("{scenario}, {delay} ms: leadership moved from node {leader} to node {now}"));
                leader = now;
            }
        }
    }
    if moves.is_empty() {
        report.text("Leadership stayed with one node throughout.");
    } else {
        report.text(&format!(
            "Leader changes (the point was served partly through a follower):\n\n- {}",
            moves.join("\n- ")
        ));
    }
    let mut headers = vec!["scenario", "delay ms", "load"];
    headers.extend(CELL_HEADERS);
    report.table(&headers, &rows);
    for (l, workload) in LOADS.iter().enumerate() {
        let series = SCENARIOS
            .iter()
            .zip(std::mem::take(&mut tput[l]))
            .map(|(name, points)| Series { name: name.to_string(), points })
            .collect();
        let title = format!("Stragglers: {}, {CONNECTIONS} connections", workload_name(*workload));
        let stem = if l == 0 { "writes" } else { "reads" };
        report.chart(stem, &chart(&title, "delay per hop, ms", "ops/s", None, series))?;
    }
    report.finish()
}
