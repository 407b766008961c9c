//! Experiment 7: what security costs. The same 3-node cluster as plain TCP
//! on loopback, with a cluster secret and accounts (each connection
//! authenticates once; peers prove the secret once per connection), and
//! with TLS on both ports as well, measured side by side: writes and
//! linearizable reads at 1 and 64 connections.

use super::{CELL_HEADERS, Lab, cells, chart, measure, median, spec, workload_name};
use crate::bench::load::{LoadResult, LoadSpec, Workload};
use crate::bench::local::{ClusterOptions, LocalCluster, Secure};
use crate::bench::plot::Series;
use crate::bench::report::Report;

const SYSTEMS: [(&str, Secure); 3] = [
    ("plain TCP", Secure { secret: false, users: false, tls: false }),
    ("secret + accounts", Secure { secret: true, users: true, tls: false }),
    ("TLS + secret + accounts", Secure { secret: true, users: true, tls: true }),
];
const MIXES: [u32; 2] = [0, 100];
const CONNECTIONS: [usize; 2] = [1, 64];

pub fn run(lab: &Lab) -> Result<(), String> {
    let mut report = Report::new(&lab.out, "security", "The cost of TLS and authentication");
    report.text(&format!(
        "A 3-node cluster, fsync always, 100-byte values, 10,000 keys written first, {} s per point, all \
connections to the leader, one request at a time per connection. The three setups run at once and each point \
is measured on each in turn, {} rounds; the tables show the round with the median throughput. Accounts cost one \
AUTH per connection, the secret one handshake per peer connection; TLS encrypts every byte on both ports (the \
client's and the followers').",
        lab.seconds, lab.rounds
    ));
    report.csv(format!("round,system,{}", LoadResult::CSV_HEADER));
    let mut clusters = Vec::new();
    for (name, secure) in SYSTEMS {
        let c = LocalCluster::start(ClusterOptions { secure, ..ClusterOptions::default() })?;
        let leader = c.wait_leader(std::time::Duration::from_secs(10))?;
        let target = c.client_addr(leader);
        let preload = LoadSpec {
            targets: vec![target.clone()],
            connections: 8,
            pipeline: 32,
            workload: Workload::Insert,
            security: c.client.clone(),
            ..LoadSpec::default()
        };
        if let Some(e) = crate::bench::load::run(&preload).first_error {
            return Err(format!("preloading {name}: {e}"));
        }
        clusters.push((c, target));
    }
    let mut runs = vec![vec![vec![Vec::new(); CONNECTIONS.len()]; MIXES.len()]; SYSTEMS.len()];
    for round in 1..=lab.rounds {
        println!("== round {round} of {}", lab.rounds);
        for (m, &read_pct) in MIXES.iter().enumerate() {
            for (k, &connections) in CONNECTIONS.iter().enumerate() {
                for (s, (c, target)) in clusters.iter().enumerate() {
                    let workload = Workload::Mix { read_pct };
                    let mut spec = spec(vec![target.clone()], connections, workload, lab.seconds);
                    spec.security = c.client.clone();
                    let what = format!("{}, {}, {connections} conn", SYSTEMS[s].0, workload_name(workload));
                    let r = measure(&what, &spec);
                    report.csv(format!("{round},{},{}", SYSTEMS[s].0, r.csv_row(&workload_name(workload), &spec)));
                    runs[s][m][k].push(r);
                }
            }
        }
    }
    drop(clusters);
    let results: Vec<Vec<Vec<LoadResult>>> = runs
        .into_iter()
        .map(|per_mix| per_mix.into_iter().map(|r| r.into_iter().map(median).collect()).collect())
        .collect();
    let mut rows = Vec::new();
    for (m, &read_pct) in MIXES.iter().enumerate() {
        for (k, connections) in CONNECTIONS.iter().enumerate() {
            for (s, (name, _)) in SYSTEMS.iter().enumerate() {
                let r = &results[s][m][k];
                let plain = results[0][m][k].ops_per_sec().max(1e-9);
                let mut row =
                    vec![workload_name(Workload::Mix { read_pct }), connections.to_string(), name.to_string()];
                row.extend(cells(r));
                row.push(format!("{:.0}%", 100.0 * (r.ops_per_sec() / plain - 1.0)));
                rows.push(row);
            }
        }
    }
    let mut headers = vec!["workload", "connections", "setup"];
    headers.extend(CELL_HEADERS);
    headers.push("vs plain");
    report.table(&headers, &rows);
    for (m, &read_pct) in MIXES.iter().enumerate() {
        let title = format!("{}: throughput by setup", workload_name(Workload::Mix { read_pct }));
        let series = SYSTEMS
            .iter()
            .enumerate()
            .map(|(s, (name, _))| Series {
                name: name.to_string(),
                points: (0..CONNECTIONS.len()).map(|k| (k as f64, results[s][m][k].ops_per_sec())).collect(),
            })
            .collect();
        let categories = CONNECTIONS.iter().map(|c| c.to_string()).collect();
        report.chart(&format!("{read_pct}-reads"), &chart(&title, "connections", "ops/s", Some(categories), series))?;
    }
    report.finish()
}
