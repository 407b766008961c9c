//! Experiment 2: read/write mixes (100/0, 95/5, 50/50, 0/100) at 1, 16 and
//! 64 connections, on a 3-node cluster, on the non-replicated baseline (a
//! 1-node cluster of ours: same code, same fsync, no replication) and on
//! Redis with appendfsync always and everysec, all loaded by the same tool.

use super::{CELL_HEADERS, Lab, cells, chart, measure, median, preload, spec, workload_name};
use crate::bench::load::{LoadResult, Workload};
use crate::bench::local::{ClusterOptions, LocalCluster, RedisServer};
use crate::bench::plot::Series;
use crate::bench::report::Report;

pub const MIXES: [u32; 4] = [100, 95, 50, 0];
pub const CONNECTIONS: [usize; 3] = [1, 16, 64];

/// A server under test: stopped when dropped.
type Server = Box<dyn std::any::Any>;

const SYSTEMS: [&str; 4] =
    ["raftkv, 3 nodes", "raftkv, 1 node (baseline)", "Redis, appendfsync always", "Redis, appendfsync everysec"];

fn start(system: usize) -> Result<(Server, String), String> {
    let ours = |size| -> Result<(Server, String), String> {
        let c = LocalCluster::start(ClusterOptions { size, ..ClusterOptions::default() })?;
        let leader = c.wait_leader(std::time::Duration::from_secs(10))?;
        let addr = c.client_addr(leader);
        Ok((Box::new(c) as Server, addr))
    };
    let redis = |fsync| -> Result<(Server, String), String> {
        let r = RedisServer::start(fsync)?;
        let addr = r.addr.clone();
        Ok((Box::new(r) as Server, addr))
    };
    match system {
        0 => ours(3),
        1 => ours(1),
        2 => redis("always"),
        _ => redis("everysec"),
    }
}

pub fn run(lab: &Lab) -> Result<(), String> {
    let mut report = Report::new(&lab.out, "mixes", "Read/write mixes against a non-replicated baseline and Redis");
    report.text(&format!(
        "Closed loop, one request at a time per connection, 100-byte values, 10,000 keys (written before the \
reads), {} s per point, all connections to the leader. All four servers run at once and each point is measured \
on each in turn, {} rounds; the tables show the round with the median throughput. Our reads are linearizable (read index); Redis reads are \
from one process's memory. raftkv runs with fsync always; the baseline is a 1-node cluster of ours.",
        lab.seconds, lab.rounds
    ));
    report.csv(format!("round,system,{}", LoadResult::CSV_HEADER));
    let mut servers = Vec::new();
    for s in 0..SYSTEMS.len() {
        let (server, addr) = start(s)?;
        preload(&addr)?;
        servers.push((server, addr));
    }
    // runs[system][mix][connections]: one result per round
    let mut runs = vec![vec![vec![Vec::new(); CONNECTIONS.len()]; MIXES.len()]; SYSTEMS.len()];
    for round in 1..=lab.rounds {
        println!("== round {round} of {}", lab.rounds);
        for (m, &read_pct) in MIXES.iter().enumerate() {
            for (c, &connections) in CONNECTIONS.iter().enumerate() {
                for (s, (_, addr)) in servers.iter().enumerate() {
                    let workload = Workload::Mix { read_pct };
                    let spec = spec(vec![addr.clone()], connections, workload, lab.seconds);
                    let what = format!("{}, {}, {connections} conn", SYSTEMS[s], workload_name(workload));
                    let r = measure(&what, &spec);
                    report.csv(format!("{round},{},{}", SYSTEMS[s], r.csv_row(&workload_name(workload), &spec)));
                    runs[s][m][c].push(r);
                }
            }
        }
    }
    drop(servers);
    let results: Vec<Vec<Vec<LoadResult>>> = runs
        .into_iter()
        .map(|per_mix| per_mix.into_iter().map(|per_conn| per_conn.into_iter().map(median).collect()).collect())
        .collect();
    for (m, read_pct) in MIXES.iter().enumerate() {
        let title = workload_name(Workload::Mix { read_pct: *read_pct });
        let mut rows = Vec::new();
        for (s, name) in SYSTEMS.iter().enumerate() {
            for (c, connections) in CONNECTIONS.iter().enumerate() {
                let mut row = vec![name.to_string(), connections.to_string()];
                row.extend(cells(&results[s][m][c]));
                rows.push(row);
            }
        }
        report.text(&format!("## {title}"));
        let mut headers = vec!["system", "connections"];
        headers.extend(CELL_HEADERS);
        report.table(&headers, &rows);
        let series = SYSTEMS
            .iter()
            .enumerate()
            .map(|(s, name)| Series {
                name: name.to_string(),
                points: (0..CONNECTIONS.len()).map(|c| (c as f64, results[s][m][c].ops_per_sec())).collect(),
            })
            .collect();
        let categories = CONNECTIONS.iter().map(|c| c.to_string()).collect();
        report.chart(&format!("{read_pct}-reads"), &chart(&title, "connections", "ops/s", Some(categories), series))?;
    }
    report.text("## Ratios: 3-node raftkv over the 1-node baseline (throughput)");
    let mut rows = Vec::new();
    for (m, read_pct) in MIXES.iter().enumerate() {
        let mut row = vec![workload_name(Workload::Mix { read_pct: *read_pct })];
        for (ours, baseline) in results[0][m].iter().zip(&results[1][m]) {
            row.push(format!("{:.2}", ours.ops_per_sec() / baseline.ops_per_sec().max(1e-9)));
        }
        rows.push(row);
    }
    report.table(&["mix", "1 conn", "16 conn", "64 conn"], &rows);
    report.finish()
}
