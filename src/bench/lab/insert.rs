//! Experiment 1: insert 10,000 keys, then read them all back, on 3 and 5
//! nodes: the total time and the latency of each request, with one
//! connection (each request waits for the one before) and with 16.

use super::{Lab, cells, chart, measure};
use crate::bench::hist::ms;
use crate::bench::load::{LoadSpec, Stop, Workload};
use crate::bench::local::{ClusterOptions, LocalCluster};
use crate::bench::plot::Series;
use crate::bench::report::Report;

pub const KEYS: u64 = 10_000;

pub fn run(lab: &Lab) -> Result<(), String> {
    let mut report = Report::new(&lab.out, "insert", "10,000 inserts, then 10,000 reads");
    report.text(
        "Each run starts a fresh cluster (fsync always), SETs keys 0..9,999 with 100-byte values through the leader, \
then GETs every key back (linearizable reads) and checks each value.",
    );
    report.csv(format!("nodes,phase,{}", crate::bench::load::LoadResult::CSV_HEADER));
    let mut rows = Vec::new();
    let mut categories = Vec::new();
    let (mut insert_s, mut read_s) = (Vec::new(), Vec::new());
    for size in [3, 5] {
        for connections in [1, 16] {
            let cluster = LocalCluster::start(ClusterOptions { size, ..ClusterOptions::default() })?;
            let leader = cluster.wait_leader(std::time::Duration::from_secs(10))?;
            let x = categories.len() as f64;
            categories.push(format!("{size} nodes, {connections} conn"));
            for (phase, workload) in [("insert", Workload::Insert), ("read", Workload::ReadBack)] {
                let spec = LoadSpec {
                    targets: vec![cluster.client_addr(leader)],
                    connections,
                    workload,
                    keys: KEYS,
                    stop: Stop::Ops(KEYS),
                    ..LoadSpec::default()
                };
                let r = measure(&format!("{size} nodes, {connections} connections, {phase}"), &spec);
                if r.ops != KEYS || r.wrong_values > 0 {
                    return Err(format!("{phase} on {size} nodes: {}", r.summary()));
                }
                let total = r.elapsed.as_secs_f64();
                if phase == "insert" { &mut insert_s } else { &mut read_s }.push((x, total));
                report.csv(format!("{size},{phase},{}", r.csv_row(phase, &spec)));
                let mut row = vec![size.to_string(), connections.to_string(), phase.to_string(), format!("{total:.2}")];
                row.extend(cells(&r));
                row.push(format!("{:.3}", ms(r.latency.mean())));
                rows.push(row);
            }
        }
    }
    report.table(
        &["nodes", "connections", "phase", "total s", "ops/s", "p50 ms", "p99 ms", "p99.9 ms", "errors", "mean ms"],
        &rows,
    );
    let c = chart(
        "10,000 inserts, then 10,000 reads",
        "cluster, client connections",
        "seconds for all 10,000",
        Some(categories),
        vec![Series { name: "insert".into(), points: insert_s }, Series { name: "read back".into(), points: read_s }],
    );
    report.chart("total", &c)?;
    report.finish()
}
