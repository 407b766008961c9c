//! Experiment 3: throughput and latency against cluster size, 3 to 11
//! nodes, all on this one machine (so larger clusters also share its two
//! cores: the curve shows replication fan-out plus CPU contention).

use super::{CELL_HEADERS, Lab, cells, chart, measure, median, preload, spec, workload_name};
use crate::bench::load::{LoadResult, Workload};
use crate::bench::local::{ClusterOptions, LocalCluster};
use crate::bench::plot::Series;
use crate::bench::report::Report;

pub const SIZES: [u64; 5] = [3, 5, 7, 9, 11];
const LOADS: [(Workload, usize); 3] =
    [(Workload::Mix { read_pct: 0 }, 64), (Workload::Mix { read_pct: 100 }, 64), (Workload::Mix { read_pct: 0 }, 1)];

pub fn run(lab: &Lab) -> Result<(), String> {
    let mut report = Report::new(&lab.out, "sizes", "Throughput and latency against cluster size");
    report.text(&format!(
        "A fresh cluster per size, fsync always, connections to the leader, 100-byte values, {} s per point; the \
loads run in turn, {} rounds, and the round with the median throughput is shown. Every node runs on this machine's two cores, so a bigger cluster also means \
more processes per core.",
        lab.seconds, lab.rounds
    ));
    report.csv(format!("round,nodes,{}", LoadResult::CSV_HEADER));
    // runs[load][size]: one result per round
    let mut runs = vec![vec![Vec::new(); SIZES.len()]; LOADS.len()];
    for (z, &size) in SIZES.iter().enumerate() {
        println!("== {size} nodes");
        let cluster = LocalCluster::start(ClusterOptions { size, ..ClusterOptions::default() })?;
        let addr = cluster.client_addr(cluster.wait_leader(std::time::Duration::from_secs(20))?);
        preload(&addr)?;
        for round in 1..=lab.rounds {
            for (i, &(workload, connections)) in LOADS.iter().enumerate() {
                let spec = spec(vec![addr.clone()], connections, workload, lab.seconds);
                let what = format!("round {round}, {}, {connections} conn", workload_name(workload));
                let r = measure(&what, &spec);
                report.csv(format!("{round},{size},{}", r.csv_row(&workload_name(workload), &spec)));
                runs[i][z].push(r);
            }
        }
    }
    let mut rows = Vec::new();
    let mut tput: Vec<Vec<(f64, f64)>> = vec![Vec::new(); LOADS.len()];
    let mut p99: Vec<Vec<(f64, f64)>> = vec![Vec::new(); LOADS.len()];
    for (z, size) in SIZES.iter().enumerate() {
        for (i, &(workload, connections)) in LOADS.iter().enumerate() {
            let r = median(std::mem::take(&mut runs[i][z]));
            tput[i].push((*size as f64, r.ops_per_sec()));
            p99[i].push((*size as f64, r.latency.figures_ms().p99));
            let mut row = vec![size.to_string(), format!("{}, {connections} conn", workload_name(workload))];
            row.extend(cells(&r));
            rows.push(row);
        }
    }
    let mut headers = vec!["nodes", "load"];
    headers.extend(CELL_HEADERS);
    report.table(&headers, &rows);
    let names: Vec<String> = LOADS.iter().map(|&(w, c)| format!("{}, {c} conn", workload_name(w))).collect();
    let series = |data: Vec<Vec<(f64, f64)>>| {
        data.into_iter().zip(&names).map(|(points, name)| Series { name: name.clone(), points }).collect()
    };
    report.chart("throughput", &chart("Throughput by cluster size", "nodes", "ops/s", None, series(tput)))?;
    report.chart("p99", &chart("p99 latency by cluster size", "nodes", "p99 ms", None, series(p99)))?;
    report.finish()
}
