//! Experiment 6: etcd and raftkv side by side, in one run: 3 nodes each on
//! loopback, etcd at its defaults (it fsyncs every commit), ours with fsync
//! always; writes and linearizable reads of 100-byte values on 10,000 keys
//! at 1, 16 and 64 connections, all to the leader. etcd is loaded through
//! its v3 JSON gateway by wrk with a Lua script (POST /v3/kv/put and
//! /v3/kv/range; a range is linearizable unless asked otherwise), ours by
//! `bench`. Both are closed loops with one request in flight per connection.

use std::process::Command;
use std::time::Duration;

use super::{Lab, chart, measure, median_by, spec};
use crate::bench::load::{self, Workload};
use crate::bench::local::{ClusterOptions, EtcdCluster, LocalCluster, Scratch};
use crate::bench::plot::Series;
use crate::bench::report::{Report, thousands};

pub const CONNECTIONS: [usize; 3] = [1, 16, 64];
const KINDS: [&str; 2] = ["write", "read"];

/// Throughput and the latency percentiles both tools report.
#[derive(Clone, Copy, Default)]
pub(super) struct Point {
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The wrk script for one kind of request.
pub(super) fn script(kind: &str) -> String {
    let keys: Vec<String> =
        (0..load::LoadSpec::default().keys).map(|i| format!("\"{}\"", base64(&load::key(i)))).collect();
    let value = base64(&[b'v'; 100]);
    let body = if kind == "write" {
        format!("'{{\"key\":\"' .. k .. '\",\"value\":\"{value}\"}}'")
    } else {
        "'{\"key\":\"' .. k .. '\"}'".to_string()
    };
    let path = if kind == "write" { "/v3/kv/put" } else { "/v3/kv/range" };
    format!(
        "local keys = {{{}}}\nwrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n\
request = function()\n  local k = keys[math.random(#keys)]\n  return wrk.format(nil, \"{path}\", nil, {body})\nend\n",
        keys.join(",")
    )
}

/// "1.23ms", "635.00us", "1.02s" in milliseconds.
fn wrk_ms(v: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e3)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|x| x * scale)
}

fn parse_wrk(out: &str) -> Result<Point, String> {
    let mut p = Point::default();
    for line in out.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[..] {
            ["50%", v] => p.p50_ms = wrk_ms(v).ok_or("bad wrk p50")?,
            ["99%", v] => p.p99_ms = wrk_ms(v).ok_or("bad wrk p99")?,
            ["Requests/sec:", v] => p.ops_per_sec = v.parse().map_err(|_| "bad wrk Requests/sec")?,
            ["Non-2xx", "or", "3xx", "responses:", n] => p.errors += n.parse::<u64>().unwrap_or(1),
            ["Socket", "errors:", ..] => {
                p.errors += words.iter().filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok()).sum::<u64>()
            }
            _ => {}
        }
    }
    if p.ops_per_sec == 0.0 {
        return Err(format!("wrk reported no requests:\n{out}"));
    }
    Ok(p)
}

pub(super) fn wrk(url: &str, script: &std::path::Path, connections: usize, seconds: f64) -> Result<Point, String> {
    let out = Command::new("wrk")
        .arg(format!("-t{}", connections.min(2)))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", seconds.ceil() as u64))
        .arg("--latency")
        .arg("-s")
        .arg(script)
        .arg(url)
        .output()
        .map_err(|e| format!("running wrk: {e} (is it installed? scripts/deps.sh installs it)"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("wrk failed: {}{}", text, String::from_utf8_lossy(&out.stderr)));
    }
    parse_wrk(&text)
}

pub fn run(lab: &Lab) -> Result<(), String> {
    let mut report = Report::new(&lab.out, "etcd", "raftkv against etcd, 3 nodes each");
    report.text(&format!(
        "One run, one machine. etcd (Debian's etcd-server, at its defaults) is loaded by wrk through its v3 JSON \
gateway; raftkv (fsync always) by `bench`. 100-byte values, 10,000 keys, {} s per point, all connections to the \
leader; reads are linearizable on both (etcd: a range without serializable; ours: read index). Writes run before \
reads at each connection count. Both clusters run at once and every point is measured on each in turn, {} \
rounds; the table shows the round with the median throughput.",
        lab.seconds, lab.rounds
    ));
    report.csv("round,system,kind,connections,ops_per_sec,p50_ms,p99_ms,errors".to_string());
    let scratch = Scratch::new("wrk")?;
    for kind in KINDS {
        let path = scratch.0.join(format!("{kind}.lua"));
        std::fs::write(&path, script(kind)).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    let etcd_cluster = EtcdCluster::start(3)?;
    let etcd_url = etcd_cluster.client_urls[etcd_cluster.leader().ok_or("etcd has no leader")?].clone();
    let ours_cluster = LocalCluster::start(ClusterOptions { size: 3, ..ClusterOptions::default() })?;
    let ours_addr = ours_cluster.client_addr(ours_cluster.wait_leader(Duration::from_secs(10))?);
    // runs[system][kind][connections]: one point per round
    let mut runs = vec![vec![vec![Vec::new(); CONNECTIONS.len()]; KINDS.len()]; 2];
    for round in 1..=lab.rounds {
        println!("== round {round} of {}", lab.rounds);
        for (c, &connections) in CONNECTIONS.iter().enumerate() {
            for (k, kind) in KINDS.iter().enumerate() {
                let p = wrk(&etcd_url, &scratch.0.join(format!("{kind}.lua")), connections, lab.seconds)?;
                println!(
                    "  etcd, {kind}, {connections} conn: {:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms, errors {}",
                    p.ops_per_sec, p.p50_ms, p.p99_ms, p.errors
                );
                runs[0][k][c].push(p);
                let read_pct = if *kind == "write" { 0 } else { 100 };
                let spec = spec(vec![ours_addr.clone()], connections, Workload::Mix { read_pct }, lab.seconds);
                let r = measure(&format!("raftkv, {kind}, {connections} conn"), &spec);
                let f = r.latency.figures_ms();
                runs[1][k][c].push(Point {
                    ops_per_sec: r.ops_per_sec(),
                    p50_ms: f.p50,
                    p99_ms: f.p99,
                    errors: r.errors,
                });
                for (name, p) in [("etcd", &runs[0][k][c]), ("raftkv", &runs[1][k][c])] {
                    let p = p.last().copied().unwrap_or_default();
                    report.csv(format!(
                        "{round},{name},{kind},{connections},{:.1},{:.3},{:.3},{}",
                        p.ops_per_sec, p.p50_ms, p.p99_ms, p.errors
                    ));
                }
            }
        }
    }
    drop((etcd_cluster, ours_cluster));
    let pick = |system: usize| -> Vec<Vec<Point>> {
        let median = |points: &Vec<Point>| median_by(points.clone(), |p| p.ops_per_sec);
        runs[system].iter().map(|per_kind| per_kind.iter().map(median).collect()).collect()
    };
    let (etcd, ours) = (pick(0), pick(1));
    let mut rows = Vec::new();
    for (k, kind) in KINDS.iter().enumerate() {
        for (c, connections) in CONNECTIONS.iter().enumerate() {
            let (e, o) = (etcd[k][c], ours[k][c]);
            rows.push(vec![
                format!("{kind}s"),
                connections.to_string(),
                thousands(e.ops_per_sec),
                thousands(o.ops_per_sec),
                format!("**{:.1}x**", o.ops_per_sec / e.ops_per_sec.max(1e-9)),
                format!("{:.2} / {:.2}", e.p50_ms, o.p50_ms),
                format!("{:.2} / {:.2}", e.p99_ms, o.p99_ms),
                format!("{:.2}", o.p99_ms / e.p99_ms.max(1e-9)),
                format!("{} / {}", e.errors, o.errors),
            ]);
        }
    }
    report.table(
        &[
            "load",
            "connections",
            "etcd ops/s",
            "raftkv ops/s",
            "throughput ratio",
            "p50 ms etcd / raftkv",
            "p99 ms etcd / raftkv",
            "p99 ratio (raftkv/etcd)",
            "errors etcd / raftkv",
        ],
        &rows,
    );
    for (k, kind) in KINDS.iter().enumerate() {
        let series = [("etcd", &etcd[k]), ("raftkv", &ours[k])]
            .iter()
            .map(|(name, points)| Series {
                name: name.to_string(),
                points: points.iter().enumerate().map(|(c, p)| (c as f64, p.ops_per_sec)).collect(),
            })
            .collect();
        let categories = CONNECTIONS.iter().map(|c| c.to_string()).collect();
        let title = format!("{kind}s/s, 3 nodes, etcd and raftkv");
        report.chart(&format!("{kind}s"), &chart(&title, "connections", "ops/s", Some(categories), series))?;
    }
    report.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn wrk_output_is_read() {
        let out = "  Latency Distribution\n     50%  635.00us\n     75%    1.07ms\n     90%    1.54ms\n     99%    \
3.21ms\n  12345 requests in 5.00s, 1.00MB read\n  Non-2xx or 3xx responses: 3\nRequests/sec:   2469.00\n";
        let p = parse_wrk(out).unwrap();
        assert_eq!(p.ops_per_sec, 2469.0);
        assert!((p.p50_ms - 0.635).abs() < 1e-9 && (p.p99_ms - 3.21).abs() < 1e-9);
        assert_eq!(p.errors, 3);
        assert!(parse_wrk("nothing").is_err());
    }
}
