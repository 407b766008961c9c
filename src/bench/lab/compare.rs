//! Setups of the same cluster measured side by side: every setup runs at
//! once, and each point is measured on each in turn, round after round, so
//! that all of them see the same weather on a shared machine; the tables
//! show the round with the median throughput.

use super::{CELL_HEADERS, Lab, cells, chart, measure, median, median_by, spec, workload_name};
use crate::bench::cpu::{CpuUse, Meter};
use crate::bench::load::{LoadResult, LoadSpec, Workload};
use crate::bench::local::{ClusterOptions, LocalCluster};
use crate::bench::plot::Series;
use crate::bench::report::Report;

/// One load, measured on every setup.
#[derive(Clone, Copy)]
pub struct Point {
    pub read_pct: u32,
    pub connections: usize,
    pub pipeline: usize,
}

impl Point {
    fn label(&self) -> String {
        match self.pipeline {
            1 => self.connections.to_string(),
            p => format!("{}x{p}", self.connections),
        }
    }
}

pub struct Comparison<'a> {
    /// File names: NAME.csv, NAME.md, NAME-<reads>-reads.svg.
    pub name: &'a str,
    pub title: &'a str,
    pub intro: String,
    pub setups: Vec<(String, ClusterOptions)>,
    pub points: Vec<Point>,
    /// The column comparing each setup with the first.
    pub versus: &'a str,
}

pub fn run(lab: &Lab, cmp: Comparison<'_>) -> Result<(), String> {
    let mut report = Report::new(&lab.out, cmp.name, cmp.title);
    report.text(&cmp.intro);
    report.csv(format!("round,system,{},servers_cpu_us_per_op", LoadResult::CSV_HEADER));
    let mut clusters = Vec::new();
    for (name, options) in &cmp.setups {
        let c = LocalCluster::start(options.clone())?;
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
    let mut runs = vec![vec![Vec::new(); cmp.points.len()]; cmp.setups.len()];
    // The servers' processor time per request, each round (`bench::cpu`):
    // steadier than throughput from round to round on a shared machine.
    let mut cpu: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); cmp.points.len()]; cmp.setups.len()];
    for round in 1..=lab.rounds {
        println!("== round {round} of {}", lab.rounds);
        for (k, point) in cmp.points.iter().enumerate() {
            for (s, (c, target)) in clusters.iter().enumerate() {
                let workload = Workload::Mix { read_pct: point.read_pct };
                let mut spec = spec(vec![target.clone()], point.connections, workload, lab.seconds);
                spec.pipeline = point.pipeline;
                spec.security = c.client.clone();
                let setup = &cmp.setups[s].0;
                let what = format!("{setup}, {}, {} conn", workload_name(workload), point.label());
                let pids: Vec<u32> = c.pids().into_iter().map(|(_, pid)| pid).collect();
                let meter = Meter::start(&pids);
                let r = measure(&what, &spec);
                let us = CpuUse::per_op_us(meter.stop().servers_total(), r.ops_per_sec());
                let shown = us.map_or(String::new(), |us| format!("{us:.1}"));
                report.csv(format!("{round},{setup},{},{shown}", r.csv_row(&workload_name(workload), &spec)));
                cpu[s][k].extend(us);
                runs[s][k].push(r);
            }
        }
    }
    drop(clusters);
    let results: Vec<Vec<LoadResult>> =
        runs.into_iter().map(|per_point| per_point.into_iter().map(median).collect()).collect();
    let mut rows = Vec::new();
    for (k, point) in cmp.points.iter().enumerate() {
        let first = results[0][k].ops_per_sec().max(1e-9);
        for (s, (name, _)) in cmp.setups.iter().enumerate() {
            let r = &results[s][k];
            let workload = workload_name(Workload::Mix { read_pct: point.read_pct });
            let mut row = vec![workload, point.label(), name.clone()];
            row.extend(cells(r));
            row.push(format!("{:+.0}%", 100.0 * (r.ops_per_sec() / first - 1.0)));
            let us = &cpu[s][k];
            let us = (!us.is_empty()).then(|| median_by(us.clone(), |&v| v));
            row.push(us.map_or("-".into(), |us| format!("{us:.1}")));
            rows.push(row);
        }
    }
    let mut headers = vec!["workload", "connections", "setup"];
    headers.extend(CELL_HEADERS);
    headers.push(cmp.versus);
    headers.push("servers µs/request");
    report.table(&headers, &rows);
    report.text(
        "Servers µs/request: processor time (user and system, from `/proc`) of the setup's node processes per \
request, median of the rounds.",
    );
    let mut mixes: Vec<u32> = cmp.points.iter().map(|p| p.read_pct).collect();
    mixes.dedup();
    for read_pct in mixes {
        let ks: Vec<usize> = (0..cmp.points.len()).filter(|&k| cmp.points[k].read_pct == read_pct).collect();
        let title = format!("{}: throughput by setup", workload_name(Workload::Mix { read_pct }));
        let series = cmp
            .setups
            .iter()
            .enumerate()
            .map(|(s, (name, _))| Series {
                name: name.clone(),
                points: ks.iter().enumerate().map(|(x, &k)| (x as f64, results[s][k].ops_per_sec())).collect(),
            })
            .collect();
        let categories = ks.iter().map(|&k| cmp.points[k].label()).collect();
        report.chart(&format!("{read_pct}-reads"), &chart(&title, "connections", "ops/s", Some(categories), series))?;
    }
    report.finish()
}
