//! Experiment: the speed goals, side by side in one run. Every system runs
//! at once (raftkv with 3 nodes and with 1, Redis with appendfsync always,
//! etcd with 3 nodes) and each point is measured on each in turn, in
//! rounds; the median round counts. Then each goal is checked against what
//! was measured, and the table says met or missed with the figures.

use std::time::Duration;

use super::versus_etcd::{self, Point};
use super::{Lab, measure, median_by, preload, spec};
use crate::bench::cpu::{self, CpuUse};
use crate::bench::load::{LoadResult, LoadSpec, Workload};
use crate::bench::local::{ClusterOptions, EtcdCluster, LocalCluster, RedisServer, Scratch};
use crate::bench::report::{Report, thousands};

/// The points, in the order each round measures them.
const POINTS: [&str; 10] = [
    "raftkv 3 nodes: writes, 64 conn",
    "raftkv 1 node: writes, 64 conn",
    "Redis appendfsync always: writes, 64 conn",
    "etcd 3 nodes: writes, 64 conn",
    "raftkv 3 nodes: linearizable reads, 64 conn",
    "raftkv 3 nodes: READONLY reads, 64 conn",
    "etcd 3 nodes: linearizable reads, 64 conn",
    "raftkv 3 nodes: writes, 1 conn",
    "raftkv 3 nodes: linearizable reads, 1 conn",
    "raftkv 3 nodes: writes, 64 conn, -P 16",
];

/// `pids` (id, process) ordered with `leader`'s first.
fn leader_first(mut pids: Vec<(u64, u32)>, leader: u64) -> Vec<u32> {
    pids.sort_by_key(|&(id, _)| id != leader);
    pids.into_iter().map(|(_, pid)| pid).collect()
}

/// The processor time each point cost per request, and the throughput it
/// allows at most: what tells a system that is slow from one that ran out
/// of processors.
fn processor_time(report: &mut Report, medians: &[(Point, CpuUse)]) {
    report.text(
        "## Processor time per request\n\nFrom the kernel's accounting (`/proc`) over each point of the median \
round: how many of the machine's processors were busy (every process, the idle systems too), and the processor \
time per request of the system's servers (all its processes; the leader's alone) and of the load generator (the \
lab's threads, or wrk for etcd). The ceilings divide processors by those times: on this machine, if the servers \
and the load generator had every processor to themselves; and with the leader on a machine of its own of the \
same size, the followers and the clients elsewhere.",
    );
    let us = |c: Option<f64>, p: &Point| CpuUse::per_op_us(c, p.ops_per_sec);
    let show = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    let ceiling = |us: Option<f64>, processors: usize| {
        us.filter(|&u| u > 0.0).map_or("-".to_string(), |u| thousands(processors as f64 * 1e6 / u))
    };
    let rows: Vec<Vec<String>> = POINTS
        .iter()
        .zip(medians)
        .map(|(name, (p, used))| {
            let servers = us(used.servers_total(), p);
            let leader = us(used.leader(), p);
            let load = us(used.own, p);
            let both = servers.zip(load).map(|(s, l)| s + l);
            vec![
                name.to_string(),
                used.machine.map_or("-".to_string(), |m| format!("{m:.2} of {}", used.processors)),
                show(servers),
                show(leader),
                show(load),
                ceiling(both, used.processors),
                ceiling(leader, used.processors),
            ]
        })
        .collect();
    report.table(
        &[
            "point",
            "processors busy",
            "servers µs/request",
            "the leader's",
            "load generator's",
            "ceiling here, ops/s",
            "ceiling, leader alone",
        ],
        &rows,
    );
}

fn of(r: &LoadResult) -> Point {
    let f = r.latency.figures_ms();
    Point { ops_per_sec: r.ops_per_sec(), p50_ms: f.p50, p99_ms: f.p99, errors: r.errors }
}

pub fn run(lab: &Lab) -> Result<(), String> {
    let mut report = Report::new(&lab.out, "goals", "The speed goals, side by side");
    report.text(&format!(
        "One run, one machine, every system running at once. raftkv with fsync always (3 nodes, and 1 node as the \
non-replicated baseline), Redis 7 with appendfsync always, etcd at its defaults (loaded by wrk through its JSON \
gateway). 100-byte values, 10,000 keys, {} s per point, all connections to the leader, one request in flight per \
connection unless `-P 16`. {} rounds, each point on each system in turn; the median round is shown.",
        lab.seconds, lab.rounds
    ));
    report.csv(
        "round,point,ops_per_sec,p50_ms,p99_ms,errors,machine_cpus,servers_cpus,leader_cpus,loadgen_cpus,processors"
            .to_string(),
    );
    let scratch = Scratch::new("goals")?;
    for kind in ["write", "read"] {
        let path = scratch.0.join(format!("{kind}.lua"));
        std::fs::write(&path, versus_etcd::script(kind)).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    let three = LocalCluster::start(ClusterOptions { size: 3, ..ClusterOptions::default() })?;
    let one = LocalCluster::start(ClusterOptions { size: 1, ..ClusterOptions::default() })?;
    let redis = RedisServer::start("always")?;
    let etcd = EtcdCluster::start(3)?;
    let etcd_url = etcd.client_urls[etcd.leader().ok_or("etcd has no leader")?].clone();
    let leader =
        |c: &LocalCluster| -> Result<String, String> { Ok(c.client_addr(c.wait_leader(Duration::from_secs(10))?)) };
    for addr in [leader(&three)?, leader(&one)?, redis.addr.clone()] {
        preload(&addr)?;
    }
    let etcd_script = |kind: &str| scratch.0.join(format!("{kind}.lua"));
    let mut runs: Vec<Vec<(Point, CpuUse)>> = vec![Vec::new(); POINTS.len()];
    for round in 1..=lab.rounds {
        println!("== round {round} of {}", lab.rounds);
        // Leaders are looked up each round: one may have changed.
        let (l3, l1) = (three.wait_leader(Duration::from_secs(10))?, one.wait_leader(Duration::from_secs(10))?);
        let (a3, a1) = (three.client_addr(l3), one.client_addr(l1));
        let etcd_leader = etcd.leader().unwrap_or(0);
        let ours = |addr: &str, connections, read_pct, pipeline, readonly| LoadSpec {
            pipeline,
            readonly,
            ..spec(vec![addr.to_string()], connections, Workload::Mix { read_pct }, lab.seconds)
        };
        for (i, name) in POINTS.iter().enumerate() {
            // The processes serving this point, the leader first.
            let servers = match i {
                1 => leader_first(one.pids(), l1),
                2 => redis.pid().into_iter().collect(),
                3 | 6 => leader_first(
                    etcd.pids().into_iter().enumerate().map(|(k, p)| (k as u64, p)).collect(),
                    etcd_leader as u64,
                ),
                _ => leader_first(three.pids(), l3),
            };
            let meter = cpu::Meter::start(&servers);
            let point = match i {
                0 => of(&measure(name, &ours(&a3, 64, 0, 1, false))),
                1 => of(&measure(name, &ours(&a1, 64, 0, 1, false))),
                2 => of(&measure(name, &ours(&redis.addr, 64, 0, 1, false))),
                3 | 6 => {
                    let kind = if i == 3 { "write" } else { "read" };
                    let p = versus_etcd::wrk(&etcd_url, &etcd_script(kind), 64, lab.seconds)?;
                    println!("  {name}: {:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms", p.ops_per_sec, p.p50_ms, p.p99_ms);
                    p
                }
                4 => of(&measure(name, &ours(&a3, 64, 100, 1, false))),
                5 => of(&measure(name, &ours(&a3, 64, 100, 1, true))),
                7 => of(&measure(name, &ours(&a3, 1, 0, 1, false))),
                8 => of(&measure(name, &ours(&a3, 1, 100, 1, false))),
                _ => of(&measure(name, &ours(&a3, 64, 0, 16, false))),
            };
            let used = meter.stop();
            let cpus = |c: Option<f64>| c.map_or(String::new(), |c| format!("{c:.3}"));
            report.csv(format!(
                "{round},{name},{:.1},{:.3},{:.3},{},{},{},{},{},{}",
                point.ops_per_sec,
                point.p50_ms,
                point.p99_ms,
                point.errors,
                cpus(used.machine),
                cpus(used.servers_total()),
                cpus(used.leader()),
                cpus(used.own),
                used.processors,
            ));
            runs[i].push((point, used));
        }
    }
    drop((three, one, redis, etcd));
    let medians: Vec<(Point, CpuUse)> = runs.into_iter().map(|r| median_by(r, |(p, _)| p.ops_per_sec)).collect();
    let m: Vec<Point> = medians.iter().map(|(p, _)| *p).collect();
    let rows: Vec<Vec<String>> = POINTS
        .iter()
        .zip(&m)
        .map(|(name, p)| {
            vec![
                name.to_string(),
                thousands(p.ops_per_sec),
                format!("{:.2}", p.p50_ms),
                format!("{:.2}", p.p99_ms),
                p.errors.to_string(),
            ]
        })
        .collect();
    report.table(&["point", "ops/s", "p50 ms", "p99 ms", "errors"], &rows);

    let row = |goal: &str, measured: String, met: bool| {
        vec![goal.to_string(), measured, if met { "met" } else { "missed" }.to_string()]
    };
    // A goal on the throughput of `a` against `b`, shown by `show`.
    let versus = |goal: &str, a: &Point, b: &Point, at_least: f64, show: &dyn Fn(f64) -> String| {
        let r = a.ops_per_sec / b.ops_per_sec.max(1e-9);
        let measured = format!("{} ({} vs {}/s)", show(r), thousands(a.ops_per_sec), thousands(b.ops_per_sec));
        row(goal, measured, r >= at_least)
    };
    let times = |digits: usize| move |r: f64| format!("{r:.digits$}x");
    let percent = |r: f64| format!("{:.1}%", 100.0 * r);
    let goals = vec![
        versus("3 nodes' writes at 64 conn >= Redis appendfsync always", &m[0], &m[2], 1.0, &times(2)),
        row("their p99 <= 3 ms", format!("{:.2} ms", m[0].p99_ms), m[0].p99_ms <= 3.0),
        versus("linearizable reads at 64 conn >= 10x etcd", &m[4], &m[6], 10.0, &times(1)),
        versus("... and within 20% of READONLY reads", &m[4], &m[5], 0.8, &percent),
        row("one connection's write p50 < 0.35 ms", format!("{:.3} ms", m[7].p50_ms), m[7].p50_ms < 0.35),
        row("one connection's read p50 < 0.15 ms", format!("{:.3} ms", m[8].p50_ms), m[8].p50_ms < 0.15),
        row(
            "-P 16 writes at 64 conn >= 150,000/s",
            format!("{}/s", thousands(m[9].ops_per_sec)),
            m[9].ops_per_sec >= 150_000.0,
        ),
        versus("3 nodes >= 75% of 1 node, writes at 64 conn", &m[0], &m[1], 0.75, &percent),
    ];
    report.text("## Against the goals");
    report.table(&["goal", "measured", ""], &goals);
    processor_time(&mut report, &medians);
    report.finish()
}
