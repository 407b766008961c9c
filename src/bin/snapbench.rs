//! `snapbench`: how long writes pause while a large store is snapshotted.
//!
//! ```text
//! snapbench [--keys N] [--dir DIR] [--out FILE]
//! ```
//!
//! Fills a store with N keys (default 1,000,000; 100-byte values), measures
//! the latency of single SETs to random keys with no snapshot running, then
//! takes a snapshot as the node does (a copy-on-write view on the applying
//! thread, serialized and fsynced by another) while the applying thread goes
//! on writing, and reports the pause to take the view and the write
//! latencies while the snapshot runs. Before that it reports how fast the
//! store loaded, the memory it holds, and how many random GETs a second one
//! thread does.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use raftkv::kv::{KvStore, WriteOp};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

fn set(k: u64, v: u64) -> WriteOp {
    WriteOp::command(&[b"SET", format!("key-{k:07}").as_bytes(), format!("{v:0100}").as_bytes()])
}

struct Latencies {
    micros: Vec<f64>,
    elapsed: Duration,
}

impl Latencies {
    fn line(&mut self, what: &str) -> String {
        self.micros.sort_by(f64::total_cmp);
        let at = |q: f64| self.micros[((self.micros.len() - 1) as f64 * q) as usize];
        format!(
            "{what:<28} {:>8} writes {:>10.0}/s  p50 {:>6.1} us  p99 {:>7.1} us  p99.9 {:>8.1} us  max {:>9.1} us\n",
            self.micros.len(),
            self.micros.len() as f64 / self.elapsed.as_secs_f64(),
            at(0.5),
            at(0.99),
            at(0.999),
            at(1.0)
        )
    }
}

/// Applies random SETs until `until` says stop, timing each.
fn write_while(
    kv: &mut KvStore,
    rng: &mut Xoshiro256PlusPlus,
    keys: u64,
    mut until: impl FnMut(usize) -> bool,
) -> Latencies {
    let start = Instant::now();
    let mut micros = Vec::new();
    let mut n = 0u64;
    while !until(micros.len()) {
        n += 1;
        let op = set(rng.random_range(0..keys), n);
        let t = Instant::now();
        kv.apply(&op, n);
        micros.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Latencies { micros, elapsed: start.elapsed() }
}

/// Random GETs a second for about a second: lookups only, where comparing
/// keys is most of the work.
fn lookups(kv: &KvStore, rng: &mut Xoshiro256PlusPlus, keys: u64) -> f64 {
    let names: Vec<String> = (0..1_000_000).map(|_| format!("key-{:07}", rng.random_range(0..keys))).collect();
    let start = Instant::now();
    let (mut found, mut n) = (0usize, 0usize);
    for chunk in names.chunks(10_000).cycle() {
        if start.elapsed() >= Duration::from_secs(1) {
            break;
        }
        found += chunk.iter().filter(|name| kv.get(name.as_bytes()).is_some()).count();
        n += chunk.len();
    }
    assert_eq!(found, n, "every key was loaded");
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut keys = 1_000_000u64;
    let mut dir = PathBuf::from("data/snapbench");
    let mut out: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match (a.as_str(), it.next()) {
            ("--keys", Some(v)) => match v.parse() {
                Ok(n) if n > 0 => keys = n,
                _ => {
                    eprintln!("snapbench: --keys: {v:?} is not a positive whole number");
                    return ExitCode::from(2);
                }
            },
            ("--dir", Some(v)) => dir = PathBuf::from(v),
            ("--out", Some(v)) => out = Some(PathBuf::from(v)),
            ("-h" | "--help", _) => {
                println!("usage: snapbench [--keys N] [--dir DIR] [--out FILE]");
                return ExitCode::SUCCESS;
            }
            _ => {
                eprintln!("usage: snapbench [--keys N] [--dir DIR] [--out FILE]");
                return ExitCode::from(2);
            }
        }
    }
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("snapbench: {}: {e}", dir.display());
        return ExitCode::from(1);
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
    let mut kv = KvStore::new();
    let rss_before = raftkv::limits::resident_bytes("self").unwrap_or(0);
    let t = Instant::now();
    for k in 0..keys {
        kv.apply(&set(k, 0), k + 1);
    }
    let load = t.elapsed();
    let rss = raftkv::limits::resident_bytes("self").unwrap_or(0).saturating_sub(rss_before);
    let lookups = lookups(&kv, &mut rng, keys);
    let mut baseline = write_while(&mut kv, &mut rng, keys, |n| n >= 500_000);

    let path = dir.join("snapshot.bin");
    let t = Instant::now();
    let view = kv.view();
    let view_pause = t.elapsed();
    let writer_path = path.clone();
    let snapshot = std::thread::spawn(move || -> std::io::Result<(u64, Duration)> {
        let started = Instant::now();
        let file = std::fs::File::create(&writer_path)?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        let bytes = view.write_to(&mut w)?;
        w.flush()?;
        w.get_ref().sync_all()?;
        Ok((bytes, started.elapsed()))
    });
    let mut during = write_while(&mut kv, &mut rng, keys, |_| snapshot.is_finished());
    let (bytes, took) = match snapshot.join() {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            eprintln!("snapbench: {}: {e}", path.display());
            return ExitCode::from(1);
        }
        Err(_) => {
            eprintln!("snapbench: the snapshot thread panicked");
            return ExitCode::from(1);
        }
    };
    let _ = std::fs::remove_file(&path);
    let mut text = format!(
        "# snapbench: {keys} keys, 100-byte values; snapshot of {:.1} MB written and fsynced in {:.2} s\n",
        bytes as f64 / 1e6,
        took.as_secs_f64()
    );
    text.push_str(&format!(
        "loading took {:.2} s ({:.0} SETs/s); the store holds {:.0} MB resident, {:.0} bytes a key\n",
        load.as_secs_f64(),
        keys as f64 / load.as_secs_f64(),
        rss as f64 / 1e6,
        rss as f64 / keys as f64
    ));
    text.push_str(&format!("random GETs, one thread: {lookups:.0}/s\n"));
    text.push_str(&format!(
        "taking the copy-on-write view paused the applying thread for {:.1} us\n",
        view_pause.as_secs_f64() * 1e6
    ));
    text.push_str(&baseline.line("no snapshot running"));
    text.push_str(&during.line("while the snapshot runs"));
    print!("{text}");
    if let Some(out) = out
        && let Err(e) = std::fs::write(&out, &text)
    {
        eprintln!("snapbench: {}: {e}", out.display());
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
