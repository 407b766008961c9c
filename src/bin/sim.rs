//! Runs the deterministic simulator over many seeds, or replays one.
//!
//! ```text
//! sim [--seeds N] [--start S] [--threads T] [--bug NAME]   many seeds
//! sim --seed S [--bug NAME] [--trace] [--history FILE]     one seed, replayed
//!                                                          (FILE: its client history)
//! ```
//! Exit 0 when every run passed, 1 on the first failure (printed with the
//! command that replays it), 2 on bad arguments.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use raftkv::raft::PlantedBug;
use raftkv::sim::script::parse_bug;
use raftkv::sim::simulate;

struct Args {
    seeds: u64,
    start: u64,
    threads: u64,
    one: Option<u64>,
    bug: Option<PlantedBug>,
    trace: bool,
    history: Option<String>,
}

fn parse_u64(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("{s:?}: {e}"))
}

const USAGE: &str = "usage: sim [--seeds N] [--start S] [--threads T] [--bug NAME]   many seeds
       sim --seed S [--bug NAME] [--trace] [--history FILE]     one seed, replayed";

/// The arguments, or `None` for `--help`.
fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args { seeds: 1000, start: 0, threads: 2, one: None, bug: None, trace: false, history: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--seeds" => args.seeds = parse_u64(&value()?)?,
            "--start" => args.start = parse_u64(&value()?)?,
            "--threads" => args.threads = parse_u64(&value()?)?.max(1),
            "--seed" => args.one = Some(parse_u64(&value()?)?),
            "--bug" => args.bug = Some(parse_bug(&value()?)?),
            "--trace" => args.trace = true,
            "--history" => args.history = Some(value()?),
            "-h" | "--help" => return Ok(None),
            _ => return Err(format!("unknown argument {flag:?}\n{USAGE}")),
        }
    }
    Ok(Some(args))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("sim: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(seed) = args.one {
        if let Some(path) = &args.history {
            let (ops, _) = simulate::run_with_ops(seed, args.bug);
            let text = raftkv::lincheck::to_text(&simulate::to_lincheck(&ops));
            if let Err(e) = std::fs::write(path, text) {
                eprintln!("sim: {path}: {e}");
                return ExitCode::from(2);
            }
            println!("history of seed {seed:#x} written to {path} ({} operations)", ops.len());
        }
        return match simulate::run(seed, args.bug, args.trace) {
            Ok(r) => {
                for line in &r.trace {
                    println!("{line}");
                }
                println!(
                    "seed {seed:#x}: ok ({} nodes, {} ops, {} entries committed, {} messages, {} snapshots \
                     installed, {} transfers superseded)",
                    r.plan.size,
                    r.ops.len(),
                    r.committed,
                    r.messages_sent,
                    r.stats.snapshots_installed,
                    r.stats.transfers_superseded
                );
                ExitCode::SUCCESS
            }
            Err(f) => {
                println!("{f}");
                ExitCode::from(1)
            }
        };
    }
    let next = AtomicU64::new(args.start);
    let end = args.start + args.seeds;
    let failed = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..args.threads {
            s.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        return;
                    }
                    if let Err(f) = simulate::run(seed, args.bug, false) {
                        // Report only the first failure: it replays on its own.
                        if !failed.swap(true, Ordering::Relaxed) {
                            println!("{f}");
                        }
                        return;
                    }
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if n.is_multiple_of(10_000) {
                        eprintln!("{n} seeds passed");
                    }
                }
            });
        }
    });
    if failed.load(Ordering::Relaxed) {
        return ExitCode::from(1);
    }
    println!("{} seeds passed ({}..{})", done.load(Ordering::Relaxed), args.start, end);
    ExitCode::SUCCESS
}
