//! Heavy load beside a test's checked clients, and the nodes' resident
//! memory sampled while it runs (issue: a leader's memory jumped by
//! hundreds of MB under 200 connections and slow links).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use raftkv::resp::Reply;

use super::Client;

/// `connections` connections spread over `addrs` in turn, each setting and
/// getting keys of its own (`keys` in all, 32-byte values) as fast as the
/// answers come, reconnecting after an error.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    pub fn start(addrs: &[String], connections: usize, keys: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let per = (keys / connections.max(1) as u64).max(1);
        let threads = (0..connections)
            .map(|i| {
                let addr = addrs[i % addrs.len()].clone();
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                std::thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn(move || run(&addr, i as u64 * per, per, &stop, &ok, &failed))
                    .expect("spawn a load thread")
            })
            .collect();
        Load { stop, ok, failed, threads }
    }

    /// Stops every connection; returns the requests answered and failed.
    pub fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        (self.ok.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }
}

fn run(addr: &str, first: u64, count: u64, stop: &AtomicBool, ok: &AtomicU64, failed: &AtomicU64) {
    let mut conn: Option<Client> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Some(c) = conn.as_mut() else {
            match Client::connect(addr) {
                Ok(c) => conn = Some(c),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
            continue;
        };
        let key = format!("load-{}", first + n % count);
        let value = format!("{:032}", n);
        let reply = if n.is_multiple_of(2) { c.cmd(&["SET", &key, &value]) } else { c.cmd(&["GET", &key]) };
        n += 1;
        match reply {
            Ok(Reply::Error(_)) => {
                failed.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(_) => {
                ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                failed.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
        }
    }
}

/// Every node of the cluster whose data lives under `dir`, found by its
/// command line (`--data DIR/node-ID`), sampled every `every`: milliseconds
/// since the start, node id, resident bytes.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<(u64, u64, u64)>>,
}

impl RssSampler {
    pub fn start(dir: &Path, every: Duration) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let dir = dir.to_path_buf();
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                let mut samples = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let at = start.elapsed().as_millis() as u64;
                    for (id, rss) in node_rss(&dir) {
                        samples.push((at, id, rss));
                    }
                    std::thread::sleep(every);
                }
                samples
            })
        };
        RssSampler { stop, thread }
    }

    pub fn stop(self) -> Vec<(u64, u64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("sampler thread")
    }
}

/// (node id, resident bytes) of each running node under `dir`.
fn node_rss(dir: &Path) -> Vec<(u64, u64)> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let pid = e.file_name();
        if !pid.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let Some(data) = args
            .windows(2)
            .find(|w| w[0] == b"--data")
            .map(|w| PathBuf::from(String::from_utf8_lossy(w[1]).into_owned()))
        else {
            continue;
        };
        if !data.starts_with(dir) {
            continue;
        }
        let Some(id) = data
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("node-"))
            .and_then(|n| n.parse().ok())
        else {
            continue;
        };
        if let Some(bytes) = raftkv::limits::resident_bytes(&pid.to_string_lossy()) {
            out.push((id, bytes));
        }
    }
    out
}

/// The peak of each node: (node id, bytes, milliseconds in).
pub fn peaks(samples: &[(u64, u64, u64)]) -> Vec<(u64, u64, u64)> {
    let mut ids: Vec<u64> = samples.iter().map(|s| s.1).collect();
    ids.sort_unstable();
    ids.dedup();
    ids.iter()
        .map(|&id| {
            let top = samples.iter().filter(|s| s.1 == id).max_by_key(|s| s.2).expect("a sample");
            (id, top.2, top.0)
        })
        .collect()
}

/// The samples as CSV (`ms,node,rss_bytes`).
pub fn csv(samples: &[(u64, u64, u64)]) -> String {
    let mut out = String::from("ms,node,rss_bytes\n");
    for (ms, id, rss) in samples {
        out.push_str(&format!("{ms},{id},{rss}\n"));
    }
    out
}

/// Resident memory of each node over time, as an SVG line chart, with the
/// bound as a red line and the faults as grey bands (start, end in ms).
pub fn svg(samples: &[(u64, u64, u64)], bound: u64, faults: &[(u64, u64)], title: &str) -> String {
    let (w, h, left, right, top, bottom) = (900.0, 380.0, 84.0, 110.0, 40.0, 50.0);
    let t_max = samples.iter().map(|s| s.0).max().unwrap_or(1).max(1) as f64;
    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    let top_mb = samples.iter().map(|s| mb(s.2)).fold(0.0, f64::max).max(mb(bound)) * 1.05;
    // Gridlines at a round step, five or six of them.
    let step = [10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0]
        .into_iter()
        .find(|s| top_mb / s <= 6.0)
        .unwrap_or(10_000.0);
    let ticks = (top_mb / step).ceil().max(1.0) as usize;
    let y_max = step * ticks as f64;
    let x = |ms: f64| left + (w - left - right) * ms / t_max;
    let y = |v: f64| h - bottom - (h - top - bottom) * v / y_max;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"22\" font-size=\"14\">{title}</text>\n"
    );
    for &(a, b) in faults {
        let (xa, xb) = (x(a as f64), x(b.max(a) as f64));
        out.push_str(&format!(
            "<rect x=\"{xa:.1}\" y=\"{top}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#eee\"/>\n",
            (xb - xa).max(1.0),
            h - top - bottom
        ));
    }
    for i in 0..=ticks {
        let v = step * i as f64;
        out.push_str(&format!(
            "<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{v:.0} MB</text>\n",
            w - right,
            y(v),
            y(v),
            left - 6.0,
            y(v) + 4.0
        ));
    }
    // Time labels at a round number of seconds, five to ten of them.
    let seconds = t_max / 1000.0;
    let t_step = [1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0]
        .into_iter()
        .find(|s| seconds / s <= 10.0)
        .unwrap_or(7200.0);
    let mut t = 0.0;
    while t <= seconds {
        out.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{t:.0} s</text>\n",
            x(t * 1000.0),
            h - bottom + 18.0
        ));
        t += t_step;
    }
    out.push_str(&format!(
        "<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#c00\" stroke-dasharray=\"6 4\"/>\n\
         <text x=\"{:.1}\" y=\"{:.1}\" fill=\"#c00\">bound {:.0} MB</text>\n",
        w - right,
        y(mb(bound)),
        y(mb(bound)),
        left + 6.0,
        y(mb(bound)) - 5.0,
        mb(bound)
    ));
    let colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
    let mut ids: Vec<u64> = samples.iter().map(|s| s.1).collect();
    ids.sort_unstable();
    ids.dedup();
    for (k, id) in ids.iter().enumerate() {
        let color = colors[k % colors.len()];
        // A gap in a node's samples (it was down) breaks its line.
        let mut path = String::new();
        let mut last: Option<u64> = None;
        for s in samples.iter().filter(|s| s.1 == *id) {
            let cmd = if last.is_some_and(|l| s.0 - l < 1500) { 'L' } else { 'M' };
            path.push_str(&format!("{cmd}{:.1},{:.1} ", x(s.0 as f64), y(mb(s.2))));
            last = Some(s.0);
        }
        out.push_str(&format!("<path d=\"{path}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\"/>\n"));
        let ly = top + 40.0 + 18.0 * k as f64;
        out.push_str(&format!(
            "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{ly:.1}\" y2=\"{ly:.1}\" stroke=\"{color}\" stroke-width=\"3\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\">node {id}</text>\n",
            w - right + 6.0,
            w - right + 26.0,
            w - right + 30.0,
            ly + 4.0
        ));
    }
    out.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">time (grey: a fault held)</text>\n\
         <text x=\"16\" y=\"{:.1}\" transform=\"rotate(-90 16 {:.1})\" text-anchor=\"middle\">resident memory</text>\n</svg>\n",
        (left + w - right) / 2.0,
        h - 12.0,
        (top + h - bottom) / 2.0,
        (top + h - bottom) / 2.0
    ));
    out
}
