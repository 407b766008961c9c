//! The experiments of `bin/lab`, one module each. Every experiment starts
//! the servers it measures, loads them with [`crate::bench::load`], stops
//! them, and leaves CSV, plots and a markdown summary in the output folder.

pub mod compare;
pub mod election;
pub mod failover;
pub mod goals;
pub mod insert;
pub mod limits;
pub mod mixes;
pub mod scale;
pub mod security;
pub mod sizes;
pub mod stragglers;
pub mod versus_etcd;

use std::path::PathBuf;

use super::load::{self, LoadResult, LoadSpec, Stop, Workload};
use super::plot::{Chart, Series};
use super::report::thousands;

pub struct Lab {
    pub out: PathBuf,
    /// Seconds each load point runs.
    pub seconds: f64,
    /// Trials per election-timeout setting.
    pub trials: usize,
    /// Runs of each point in the side-by-side comparisons (mixes, etcd);
    /// the run with the median throughput is reported.
    pub rounds: usize,
    /// A build of the node to compare with (the limits experiment).
    pub baseline_node: Option<PathBuf>,
    /// The sizes the scale experiment grows the store to.
    pub scale_keys: Vec<u64>,
}

/// The run with the median throughput. The disk of a shared machine has
/// good and bad seconds; the comparisons run every system once per round,
/// point by point, so that each sees the same weather, and keep the median.
pub fn median(runs: Vec<LoadResult>) -> LoadResult {
    median_by(runs, LoadResult::ops_per_sec)
}

/// The element of median `throughput` (the default for none).
pub fn median_by<T: Default>(mut runs: Vec<T>, throughput: impl Fn(&T) -> f64) -> T {
    runs.sort_by(|a, b| throughput(a).total_cmp(&throughput(b)));
    let mid = runs.len() / 2;
    runs.into_iter().nth(mid).unwrap_or_default()
}

/// The load every experiment uses unless it says otherwise: 100-byte values
/// on 10,000 keys, one request at a time per connection.
pub fn spec(targets: Vec<String>, connections: usize, workload: Workload, seconds: f64) -> LoadSpec {
    LoadSpec { targets, connections, workload, stop: Stop::Seconds(seconds), ..LoadSpec::default() }
}

/// Writes every key once, so that reads find values.
pub fn preload(target: &str) -> Result<(), String> {
    let spec = LoadSpec {
        targets: vec![target.to_string()],
        connections: 8,
        pipeline: 32,
        workload: Workload::Insert,
        ..LoadSpec::default()
    };
    let r = load::run(&spec);
    match r.first_error {
        Some(e) => Err(format!("preloading {target}: {e}")),
        None => Ok(()),
    }
}

/// Runs a load and prints one line about it.
pub fn measure(what: &str, spec: &LoadSpec) -> LoadResult {
    let r = load::run(spec);
    println!("  {what}: {}", r.summary());
    r
}

/// The usual columns of a throughput table.
pub fn cells(r: &LoadResult) -> Vec<String> {
    let f = r.latency.figures_ms();
    vec![
        thousands(r.ops_per_sec()),
        format!("{:.2}", f.p50),
        format!("{:.2}", f.p99),
        format!("{:.2}", f.p999),
        r.errors.to_string(),
    ]
}

pub const CELL_HEADERS: [&str; 5] = ["ops/s", "p50 ms", "p99 ms", "p99.9 ms", "errors"];

pub fn workload_name(w: Workload) -> String {
    match w {
        Workload::Mix { read_pct } => format!("{read_pct}/{} read/write", 100 - read_pct),
        Workload::Insert => "insert".into(),
        Workload::ReadBack => "read back".into(),
    }
}

pub fn chart(title: &str, x_label: &str, y_label: &str, categories: Option<Vec<String>>, series: Vec<Series>) -> Chart {
    Chart { title: title.into(), x_label: x_label.into(), y_label: y_label.into(), categories, series }
}
