//! `lab`: the performance experiments, each starting the servers it measures
//! and writing CSV, SVG plots and a markdown summary.
//!
//! ```text
//! lab [--out DIR] [--seconds S] [--rounds N] [--trials N] EXPERIMENT...
//! ```
//!
//! Experiments: insert, mixes, sizes, election, stragglers, etcd, or all.
//! `--seconds` is the length of each load point (default 3), `--rounds`
//! how often the side-by-side comparisons (mixes, etcd) repeat each point
//! (default 3, the median is reported), `--trials` the kills per election
//! timeout (default 20).
//! `bin/node` must sit next to `bin/lab` (`make build` puts it there);
//! mixes needs redis-server, etcd needs etcd and wrk (`scripts/deps.sh
//! bench` installs them).

use std::path::PathBuf;
use std::process::ExitCode;

use raftkv::bench::lab::{self, Lab};

const USAGE: &str = "usage: lab [--out DIR] [--seconds S] [--rounds N] [--trials N] EXPERIMENT...\n\
experiments: insert mixes sizes election stragglers etcd all";
const ALL: [&str; 6] = ["insert", "mixes", "sizes", "election", "stragglers", "etcd"];

fn main() -> ExitCode {
    let mut lab = Lab { out: PathBuf::from("bench/results"), seconds: 3.0, trials: 20, rounds: 3 };
    let mut chosen = Vec::new();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let parsed = match a.as_str() {
            "--out" => it.next().map(|v| lab.out = PathBuf::from(v)).ok_or("--out needs a folder".to_string()),
            "--seconds" => match it.next().and_then(|v| v.parse::<f64>().ok()) {
                Some(s) if s > 0.0 => Ok(lab.seconds = s),
                _ => Err("--seconds needs a positive number".to_string()),
            },
            "--rounds" => match it.next().and_then(|v| v.parse::<usize>().ok()) {
                Some(n) if n > 0 => Ok(lab.rounds = n),
                _ => Err("--rounds needs a whole number above 0".to_string()),
            },
            "--trials" => match it.next().and_then(|v| v.parse::<usize>().ok()) {
                Some(n) if n > 0 => Ok(lab.trials = n),
                _ => Err("--trials needs a whole number above 0".to_string()),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "all" => Ok(chosen.extend(ALL.iter().map(|s| s.to_string()))),
            name if ALL.contains(&name) => Ok(chosen.push(name.to_string())),
            other => Err(format!("unknown experiment or flag {other:?}")),
        };
        if let Err(e) = parsed {
            eprintln!("lab: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    if chosen.is_empty() {
        eprintln!("lab: name an experiment\n{USAGE}");
        return ExitCode::from(2);
    }
    if let Err(e) = std::fs::create_dir_all(&lab.out) {
        eprintln!("lab: creating {}: {e}", lab.out.display());
        return ExitCode::FAILURE;
    }
    for name in chosen {
        println!("==== {name}");
        let result = match name.as_str() {
            "insert" => lab::insert::run(&lab),
            "mixes" => lab::mixes::run(&lab),
            "sizes" => lab::sizes::run(&lab),
            "election" => lab::election::run(&lab),
            "stragglers" => lab::stragglers::run(&lab),
            _ => lab::versus_etcd::run(&lab),
        };
        if let Err(e) = result {
            eprintln!("lab: {name}: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
