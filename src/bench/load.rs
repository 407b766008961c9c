//! The closed-loop load generator behind `bin/bench`: each connection sends
//! a pipeline of requests, waits for every reply, and goes again, so the
//! offered load is what the server can take. Latency is measured per
//! request, from the write of its pipeline to the parse of its reply.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use super::hist::Histogram;
use crate::client::Conn;
use crate::resp::{Reply, encode_request};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Workload {
    /// GET with probability `read_pct`%, else SET, on uniformly random keys.
    Mix { read_pct: u32 },
    /// SET of keys 0..keys, each once, in order across connections.
    Insert,
    /// GET of keys 0..keys, each once, checking the value `Insert` wrote.
    ReadBack,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stop {
    Seconds(f64),
    Ops(u64),
}

#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Client addresses; connection i goes to `targets[i % len]`.
    pub targets: Vec<String>,
    pub connections: usize,
    pub pipeline: usize,
    pub workload: Workload,
    pub keys: u64,
    /// The first key `Insert` and `ReadBack` take (to grow a store in steps).
    pub first_key: u64,
    pub value_size: usize,
    pub stop: Stop,
    pub seed: u64,
    /// Print throughput to stderr every few seconds.
    pub progress: bool,
    /// TLS and a login, for nodes that want them.
    pub security: crate::client::Security,
    /// Each connection sends `READONLY` first: reads from the node's own
    /// state, not linearizable (README, Guarantees).
    pub readonly: bool,
}

impl Default for LoadSpec {
    fn default() -> Self {
        LoadSpec {
            targets: vec!["127.0.0.1:6001".to_string()],
            connections: 16,
            pipeline: 1,
            workload: Workload::Mix { read_pct: 50 },
            keys: 10_000,
            first_key: 0,
            value_size: 100,
            stop: Stop::Seconds(10.0),
            seed: 1,
            progress: false,
            security: crate::client::Security::default(),
            readonly: false,
        }
    }
}

#[derive(Clone, Default)]
pub struct LoadResult {
    pub ops: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// `ReadBack` reads that did not find the value `Insert` wrote.
    pub wrong_values: u64,
    pub elapsed: Duration,
    pub latency: Histogram,
    pub reads: Histogram,
    pub writes: Histogram,
}

impl LoadResult {
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn summary(&self) -> String {
        let f = self.latency.figures_ms();
        let mut s = format!(
            "{} ops in {:.2} s: {:.0} ops/s; latency ms p50 {:.3} p90 {:.3} p99 {:.3} p99.9 {:.3} max {:.3}; errors {}",
            self.ops,
            self.elapsed.as_secs_f64(),
            self.ops_per_sec(),
            f.p50,
            f.p90,
            f.p99,
            f.p999,
            f.max,
            self.errors
        );
        if let Some(e) = &self.first_error {
            s.push_str(&format!(" (first: {e})"));
        }
        if self.wrong_values > 0 {
            s.push_str(&format!("; {} reads did not find the inserted value", self.wrong_values));
        }
        s
    }

    pub const CSV_HEADER: &'static str = "label,connections,pipeline,workload,value_size,ops,errors,seconds,ops_per_sec,\
p50_ms,p90_ms,p99_ms,p999_ms,max_ms,mean_ms";

    pub fn csv_row(&self, label: &str, spec: &LoadSpec) -> String {
        let f = self.latency.figures_ms();
        let workload = match spec.workload {
            Workload::Mix { read_pct } => format!("{read_pct}% reads"),
            Workload::Insert => "insert".to_string(),
            Workload::ReadBack => "read back".to_string(),
        };
        format!(
            "{label},{},{},{workload},{},{},{},{:.3},{:.1},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4}",
            spec.connections,
            spec.pipeline,
            spec.value_size,
            self.ops,
            self.errors,
            self.elapsed.as_secs_f64(),
            self.ops_per_sec(),
            f.p50,
            f.p90,
            f.p99,
            f.p999,
            f.max,
            f.mean
        )
    }
}

pub fn key(i: u64) -> Vec<u8> {
    format!("key:{i:012}").into_bytes()
}

/// The value `Insert` writes for key `i`: recognizable, `size` bytes.
pub fn value(i: u64, size: usize) -> Vec<u8> {
    let mut v = format!("{i}:").into_bytes();
    v.resize(size.max(v.len()), b'x');
    v
}

/// Shared between the connections of one run.
struct Shared {
    spec: LoadSpec,
    /// Next key index (`Insert`, `ReadBack`) or ops handed out (`Mix`).
    next: AtomicU64,
    done: AtomicU64,
    stop: AtomicBool,
    deadline: Option<Instant>,
}

impl Shared {
    /// Claims up to `n` op slots: the first index and how many.
    fn claim(&self, n: u64) -> Option<(u64, u64)> {
        if self.stop.load(Ordering::Relaxed) || self.deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        let limit = match (self.spec.workload, self.spec.stop) {
            (Workload::Insert | Workload::ReadBack, _) => self.spec.keys,
            (_, Stop::Ops(ops)) => ops,
            (_, Stop::Seconds(_)) => u64::MAX,
        };
        let first = self.next.fetch_add(n, Ordering::Relaxed);
        if first >= limit {
            return None;
        }
        Some((first, n.min(limit - first)))
    }
}

/// Runs the load and returns what it measured.
pub fn run(spec: &LoadSpec) -> LoadResult {
    let start = Instant::now();
    let deadline = match spec.stop {
        Stop::Seconds(s) => Some(start + Duration::from_secs_f64(s)),
        Stop::Ops(_) => None,
    };
    let shared = Arc::new(Shared {
        spec: spec.clone(),
        next: AtomicU64::new(match spec.workload {
            Workload::Insert | Workload::ReadBack => spec.first_key,
            Workload::Mix { .. } => 0,
        }),
        done: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        deadline,
    });
    let workers: Vec<_> = (0..spec.connections.max(1))
        .map(|i| {
            let shared = shared.clone();
            std::thread::spawn(move || connection(&shared, i))
        })
        .collect();
    let reporter = spec.progress.then(|| {
        let shared = shared.clone();
        std::thread::spawn(move || progress(&shared, start))
    });
    let mut total = LoadResult::default();
    for w in workers {
        let r = w.join().unwrap_or_else(|_| LoadResult {
            errors: 1,
            first_error: Some("a load thread panicked".into()),
            ..Default::default()
        });
        total.ops += r.ops;
        total.errors += r.errors;
        total.wrong_values += r.wrong_values;
        total.first_error = total.first_error.or(r.first_error);
        total.latency.merge(&r.latency);
        total.reads.merge(&r.reads);
        total.writes.merge(&r.writes);
    }
    total.elapsed = start.elapsed();
    shared.stop.store(true, Ordering::Relaxed);
    if let Some(r) = reporter {
        let _ = r.join();
    }
    total
}

fn progress(shared: &Shared, start: Instant) {
    let mut last = (Instant::now(), 0);
    while !shared.stop.load(Ordering::Relaxed) {
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(100));
            if shared.stop.load(Ordering::Relaxed) {
                return;
            }
        }
        let done = shared.done.load(Ordering::Relaxed);
        let now = Instant::now();
        let rate = (done - last.1) as f64 / (now - last.0).as_secs_f64();
        eprintln!("[{:>5.1} s] {done} ops, {rate:.0} ops/s", start.elapsed().as_secs_f64());
        last = (now, done);
    }
}

/// Consecutive failed connection attempts after which a connection gives up.
const CONNECT_ATTEMPTS_MAX: u32 = 50;

fn readonly(c: &mut Conn) -> Result<(), String> {
    match c.call(&["READONLY"]) {
        Ok(r) if !r.is_error() => Ok(()),
        Ok(r) => Err(format!("READONLY: {r:?}")),
        Err(e) => Err(format!("READONLY: {e}")),
    }
}

fn connection(shared: &Shared, index: usize) -> LoadResult {
    let spec = &shared.spec;
    let target = &spec.targets[index % spec.targets.len()];
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(spec.seed.wrapping_mul(1_000_003).wrapping_add(index as u64));
    let mut result = LoadResult::default();
    let mut conn: Option<Conn> = None;
    let mut failures = 0;
    let write_value = vec![b'v'; spec.value_size];
    let mut batch = Vec::with_capacity(spec.pipeline * (spec.value_size + 64));
    let mut reads = Vec::with_capacity(spec.pipeline);
    let fail = |result: &mut LoadResult, e: String| {
        result.errors += 1;
        result.first_error.get_or_insert(e);
    };
    while let Some((first, n)) = shared.claim(spec.pipeline as u64) {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::open_secure(target, crate::client::CONNECT_TIMEOUT, &spec.security)
                .and_then(|mut c| if spec.readonly { readonly(&mut c).map(|()| c) } else { Ok(c) })
            {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    fail(&mut result, e);
                    failures += 1;
                    if failures >= CONNECT_ATTEMPTS_MAX {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            },
        };
        batch.clear();
        reads.clear();
        for i in first..first + n {
            let (is_read, k) = match spec.workload {
                Workload::Mix { read_pct } => {
                    (rng.random_range(0..100) < read_pct, rng.random_range(0..spec.keys.max(1)))
                }
                Workload::Insert => (false, i),
                Workload::ReadBack => (true, i),
            };
            let k_bytes = key(k);
            if is_read {
                encode_request(&[&b"GET"[..], &k_bytes], &mut batch);
            } else if spec.workload == Workload::Insert {
                encode_request(&[&b"SET"[..], &k_bytes, &value(k, spec.value_size)], &mut batch);
            } else {
                encode_request(&[&b"SET"[..], &k_bytes, &write_value], &mut batch);
            }
            reads.push((is_read, k));
        }
        let sent = Instant::now();
        if let Err(e) = c.send(&batch) {
            fail(&mut result, e);
            conn = None;
            continue;
        }
        for &(is_read, k) in &reads {
            match c.recv() {
                Ok(Reply::Error(e)) => fail(&mut result, e),
                Ok(reply) => {
                    let took = sent.elapsed();
                    failures = 0;
                    result.ops += 1;
                    result.latency.record(took);
                    if is_read {
                        result.reads.record(took);
                    } else {
                        result.writes.record(took);
                    }
                    if spec.workload == Workload::ReadBack && reply != Reply::Bulk(Some(value(k, spec.value_size))) {
                        result.wrong_values += 1;
                    }
                }
                Err(e) => {
                    fail(&mut result, e);
                    conn = None;
                    break;
                }
            }
        }
        shared.done.fetch_add(n, Ordering::Relaxed);
    }
    result
}
