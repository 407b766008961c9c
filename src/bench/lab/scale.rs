//! Experiment: scale with the data. A 3-node cluster (fsync always) grows
//! to each size in turn (100-byte values), and at each size reports: each
//! node's resident memory per key against the raw bytes of a key and its
//! value, the snapshot's time and size, one connection's write latency
//! while the leader takes that snapshot (against the same load without
//! one), a follower's restart time (load the snapshot, replay the log, catch
//! up), and the time a follower whose data directory was wiped takes to
//! catch up through InstallSnapshot (what a replaced disk or a new node
//! costs).

use std::time::{Duration, Instant};

use super::{Lab, chart};
use crate::bench::load::{self, LoadResult, LoadSpec, Stop, Workload};
use crate::bench::local::{ClusterOptions, LocalCluster};
use crate::bench::plot::Series;
use crate::bench::report::{Report, thousands};
use crate::client::Conn;

/// The sizes `make bench-scale` grows the store to.
pub const SIZES: [u64; 3] = [1_000_000, 3_000_000, 10_000_000];
const VALUE_BYTES: usize = 100;
/// Keys loaded at a time, and how many chunks may be loaded again after a
/// leader change before the experiment gives up.
const LOAD_CHUNK: u64 = 250_000;
const RELOADS_MAX: u32 = 20;
/// `load::key`: `key:` and twelve digits.
const KEY_BYTES: usize = 16;
/// How long a node may take to load, restart or catch up before the
/// experiment gives up on it: a minute, and a minute per million keys.
fn patience(keys: u64) -> Duration {
    Duration::from_secs(60 + 60 * keys / 1_000_000)
}

/// What one size measured.
struct Point {
    keys: u64,
    insert_per_sec: f64,
    reloads: u32,
    rss_mb: Vec<f64>,
    snapshot_s: f64,
    snapshot_mb: f64,
    quiet: LoadResult,
    during: LoadResult,
    restart_s: f64,
    catch_up_s: f64,
}

pub fn run(lab: &Lab, sizes: &[u64]) -> Result<(), String> {
    let mut report = Report::new(&lab.out, "scale", "Scale with the data");
    report.text(&format!(
        "3 nodes, fsync always, 100-byte values under 16-byte keys ({} raw bytes a key). The store grows to \
each size by pipelined SETs (8 connections, 32 deep, in chunks of 250,000 keys; a chunk that a leader change \
interrupted is loaded again at the new leader, and counted); then: resident memory of each node, `RAFT SNAPSHOT` on the \
leader (time, and the file's size), one connection's writes for {} s with no snapshot and again while the leader \
takes one, a follower killed and restarted (until it has applied what the leader had committed), and a follower \
killed, its data directory removed and started again (until it has applied what the leader had committed: it gets \
the leader's snapshot and the log after it).",
        KEY_BYTES + VALUE_BYTES,
        lab.seconds
    ));
    report.csv(
        "keys,insert_per_sec,reloads,rss_mb_max,bytes_per_key,raw_bytes_per_key,snapshot_s,snapshot_mb,\
write_p99_ms_quiet,write_p99_ms_snapshot,write_max_ms_snapshot,restart_s,catch_up_s"
            .to_string(),
    );
    let mut cluster = LocalCluster::start(ClusterOptions { size: 3, ..ClusterOptions::default() })?;
    let mut points = Vec::new();
    let mut have = 0;
    for &keys in sizes {
        let point = grow_and_measure(lab, &mut cluster, have, keys)?;
        have = keys;
        let rss_max = point.rss_mb.iter().copied().fold(0.0, f64::max);
        report.csv(format!(
            "{keys},{:.0},{},{rss_max:.1},{:.0},{},{:.2},{:.1},{:.2},{:.2},{:.2},{:.2},{:.2}",
            point.insert_per_sec,
            point.reloads,
            bytes_per_key(rss_max, keys),
            KEY_BYTES + VALUE_BYTES,
            point.snapshot_s,
            point.snapshot_mb,
            point.quiet.writes.figures_ms().p99,
            point.during.writes.figures_ms().p99,
            crate::bench::hist::ms(point.during.writes.max()),
            point.restart_s,
            point.catch_up_s,
        ));
        points.push(point);
    }
    let rows: Vec<Vec<String>> = points
        .iter()
        .map(|p| {
            let rss_max = p.rss_mb.iter().copied().fold(0.0, f64::max);
            let quiet = p.quiet.writes.figures_ms();
            let during = p.during.writes.figures_ms();
            vec![
                thousands(p.keys as f64),
                format!("{} ({})", thousands(p.insert_per_sec), p.reloads),
                p.rss_mb.iter().map(|m| format!("{m:.0}")).collect::<Vec<_>>().join(" / "),
                format!("{:.0} ({})", bytes_per_key(rss_max, p.keys), KEY_BYTES + VALUE_BYTES),
                format!("{:.2} s, {:.0} MB", p.snapshot_s, p.snapshot_mb),
                format!("{:.2} / {:.2}", quiet.p50, quiet.p99),
                format!("{:.2} / {:.2} / {:.1}", during.p50, during.p99, crate::bench::hist::ms(p.during.writes.max())),
                format!("{:.1} s", p.restart_s),
                format!("{:.1} s", p.catch_up_s),
            ]
        })
        .collect();
    report.table(
        &[
            "keys",
            "SETs/s loading (chunks again)",
            "RSS per node, MB",
            "bytes a key (raw)",
            "snapshot",
            "write p50 / p99 ms",
            "during snapshot p50 / p99 / max ms",
            "restart",
            "catch-up, empty disk",
        ],
        &rows,
    );
    let millions =
        |f: &dyn Fn(&Point) -> f64| -> Vec<(f64, f64)> { points.iter().map(|p| (p.keys as f64 / 1e6, f(p))).collect() };
    let times = vec![
        Series { name: "snapshot".into(), points: millions(&|p| p.snapshot_s) },
        Series { name: "restart".into(), points: millions(&|p| p.restart_s) },
        Series { name: "catch-up, empty disk".into(), points: millions(&|p| p.catch_up_s) },
    ];
    report.chart("times", &chart("Time against the data", "million keys", "seconds", None, times))?;
    let memory = vec![
        Series {
            name: "bytes a key (largest RSS)".into(),
            points: millions(&|p| bytes_per_key(p.rss_mb.iter().copied().fold(0.0, f64::max), p.keys)),
        },
        Series { name: "raw bytes a key".into(), points: millions(&|_| (KEY_BYTES + VALUE_BYTES) as f64) },
    ];
    report.chart("memory", &chart("Memory per key", "million keys", "bytes", None, memory))?;
    report.finish()
}

fn bytes_per_key(rss_mb: f64, keys: u64) -> f64 {
    rss_mb * 1024.0 * 1024.0 / keys.max(1) as f64
}

fn grow_and_measure(lab: &Lab, cluster: &mut LocalCluster, have: u64, keys: u64) -> Result<Point, String> {
    let leader = cluster.wait_leader(Duration::from_secs(20))?;
    let addr = cluster.client_addr(leader);
    println!("scale: {} keys", thousands(keys as f64));
    // In chunks: a leader change under the load fails some SETs
    // (`-READONLY` to a connection that wrote to the old leader), and
    // loading that chunk again at the new leader is harmless (each key gets
    // the same value) and completes it.
    let started = Instant::now();
    let mut reloads = 0;
    let mut target = addr.clone();
    let mut first = have;
    while first < keys {
        let end = (first + LOAD_CHUNK).min(keys);
        let spec = LoadSpec {
            targets: vec![target.clone()],
            connections: 8,
            pipeline: 32,
            workload: Workload::Insert,
            first_key: first,
            keys: end,
            value_size: VALUE_BYTES,
            stop: Stop::Seconds(patience(keys).as_secs_f64()),
            ..LoadSpec::default()
        };
        if let Some(e) = load::run(&spec).first_error {
            reloads += 1;
            if reloads > RELOADS_MAX {
                return Err(format!("loading {keys} keys: {e}, {reloads} times"));
            }
            println!("  keys {first}..{end}: {e}; loading them again at the leader");
            target = cluster.client_addr(cluster.wait_leader(Duration::from_secs(20))?);
            continue;
        }
        first = end;
    }
    let insert_per_sec = (keys - have) as f64 / started.elapsed().as_secs_f64();
    println!("  loaded: {insert_per_sec:.0} SETs/s ({reloads} chunks loaded again); waiting for every node to apply");
    // The leader may have changed under the load.
    let leader = cluster.wait_leader(Duration::from_secs(20))?;
    let addr = cluster.client_addr(leader);
    let ids: Vec<u64> = (1..=3).collect();
    for &id in &ids {
        wait_applied(cluster, id, committed(cluster, leader)?, keys)?;
    }
    let rss_mb =
        ids.iter().map(|&id| info_u64(cluster, id, "used_memory_rss").unwrap_or(0) as f64 / 1048576.0).collect();

    let writes = |seconds: f64| LoadSpec {
        targets: vec![addr.clone()],
        connections: 1,
        workload: Workload::Mix { read_pct: 0 },
        stop: Stop::Seconds(seconds),
        ..LoadSpec::default()
    };
    let quiet = load::run(&writes(lab.seconds));
    // The snapshot, with one connection writing beside it.
    let background = std::thread::spawn({
        let spec = writes(lab.seconds);
        move || load::run(&spec)
    });
    let started = Instant::now();
    let mut admin = Conn::open(&addr)?;
    admin.set_read_timeout(Some(patience(keys)));
    let reply = admin.call(&["RAFT", "SNAPSHOT"]).map_err(|e| format!("RAFT SNAPSHOT: {e}"))?;
    let snapshot_s = started.elapsed().as_secs_f64();
    if reply.is_error() {
        return Err(format!("RAFT SNAPSHOT: {reply:?}"));
    }
    let during = background.join().map_err(|_| "the writer beside the snapshot panicked".to_string())?;
    let snapshot_mb = info_u64(cluster, leader, "snapshot_disk_bytes").unwrap_or(0) as f64 / 1048576.0;

    // A follower restarted on its own disk.
    let follower = ids.iter().copied().find(|&id| id != leader).ok_or("no follower")?;
    println!("  snapshot: {snapshot_s:.2} s; restarting node {follower}");
    cluster.kill(follower);
    let started = Instant::now();
    cluster.restart(follower)?;
    wait_applied(cluster, follower, committed(cluster, leader)?, keys)?;
    let restart_s = started.elapsed().as_secs_f64();

    // The same follower with nothing: the leader's first heartbeat tells it
    // what it lost, and it is sent the snapshot and the log after it.
    println!("  restarted in {restart_s:.1} s; wiping node {follower}");
    cluster.kill(follower);
    let dir = cluster.data_dir(follower);
    std::fs::remove_dir_all(&dir).map_err(|e| format!("removing {}: {e}", dir.display()))?;
    let started = Instant::now();
    cluster.restart(follower)?;
    wait_applied(cluster, follower, committed(cluster, leader)?, keys)?;
    let catch_up_s = started.elapsed().as_secs_f64();

    println!(
        "  {insert_per_sec:.0} SETs/s, snapshot {snapshot_s:.2} s ({snapshot_mb:.0} MB), restart {restart_s:.1} s, \
         catch-up from nothing {catch_up_s:.1} s"
    );
    Ok(Point { keys, insert_per_sec, reloads, rss_mb, snapshot_s, snapshot_mb, quiet, during, restart_s, catch_up_s })
}

fn info_u64(cluster: &LocalCluster, id: u64, field: &str) -> Option<u64> {
    cluster.info(id)?.get(field)?.parse().ok()
}

fn committed(cluster: &LocalCluster, leader: u64) -> Result<u64, String> {
    info_u64(cluster, leader, "commit_index").ok_or_else(|| format!("node {leader} gave no commit_index"))
}

/// Until node `id` answers INFO with `last_applied` at least `index`.
fn wait_applied(cluster: &LocalCluster, id: u64, index: u64, keys: u64) -> Result<(), String> {
    let deadline = Instant::now() + patience(keys);
    while Instant::now() < deadline {
        if info_u64(cluster, id, "last_applied").is_some_and(|a| a >= index) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let logs: Vec<String> = (1..=3).map(|n| format!("node {n}:\n{}", cluster.log_tail(n, 10))).collect();
    Err(format!("node {id} did not apply {index} within {:?}; the logs end:\n{}", patience(keys), logs.join("\n")))
}
