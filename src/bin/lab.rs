//! `lab`: the performance experiments, each starting the servers it measures
//! and writing CSV, SVG plots and a markdown summary.
//!
//! ```text
//! lab [--out DIR] [--seconds S] [--rounds N] [--trials N] [--baseline-node PATH]
//!     [--scale-keys N,N,...] EXPERIMENT...
//! ```
//!
//! Experiments: insert, mixes, sizes, election, stragglers, failover, etcd,
//! security, limits, goals (the speed goals side by side), or all; and scale
//! (not in all: it grows the store to 10 million keys, `--scale-keys` for
//! other sizes).
//! `--seconds` is the length of each load point (default 3), `--rounds`
//! how often the side-by-side comparisons (mixes, etcd) repeat each point
//! (default 3, the median is reported), `--trials` the kills per election
//! timeout (default 20), `--baseline-node` the older build of the node that
//! limits compares with (all skips limits without it).
//! `bin/node` must sit next to `bin/lab` (`make build` puts it there);
//! mixes needs redis-server, etcd needs etcd and wrk (`scripts/deps.sh
//! bench` installs them).

use std::path::PathBuf;
use std::process::ExitCode;

use raftkv::bench::lab::{self, Lab};

const USAGE: &str = "usage: lab [--out DIR] [--seconds S] [--rounds N] [--trials N] [--baseline-node PATH] \
[--scale-keys N,N,...] EXPERIMENT...\nexperiments: insert mixes sizes election stragglers failover etcd security limits \
goals all scale";
const ALL: [&str; 10] =
    ["insert", "mixes", "sizes", "election", "stragglers", "failover", "etcd", "security", "limits", "goals"];

/// A flag's value as a number above zero.
fn positive<T: std::str::FromStr + PartialOrd + Default>(flag: &str, v: Option<&String>) -> Result<T, String> {
    match v.and_then(|v| v.parse::<T>().ok()) {
        Some(n) if n > T::default() => Ok(n),
        _ => Err(format!("{flag} needs a number above 0")),
    }
}

/// `--scale-keys`: growing sizes, comma-separated.
fn scale_keys(v: Option<&String>) -> Result<Vec<u64>, String> {
    let wrong = || "--scale-keys needs growing key counts, e.g. 100000,300000".to_string();
    let sizes: Vec<u64> =
        v.ok_or_else(wrong)?.split(',').map(|n| n.trim().parse().map_err(|_| wrong())).collect::<Result<_, _>>()?;
    match !sizes.is_empty() && sizes[0] > 0 && sizes.windows(2).all(|w| w[0] < w[1]) {
        true => Ok(sizes),
        false => Err(wrong()),
    }
}

/// `None` for --help.
fn parse(args: &[String]) -> Result<Option<(Lab, Vec<String>)>, String> {
    let mut lab = Lab {
        out: PathBuf::from("bench/results"),
        seconds: 3.0,
        trials: 20,
        rounds: 3,
        baseline_node: None,
        scale_keys: lab::scale::SIZES.to_vec(),
    };
    let mut chosen = Vec::new();
    let mut all = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--out" => lab.out = PathBuf::from(it.next().ok_or("--out needs a folder")?),
            "--seconds" => lab.seconds = positive(a, it.next())?,
            "--rounds" => lab.rounds = positive(a, it.next())?,
            "--trials" => lab.trials = positive(a, it.next())?,
            "--baseline-node" => {
                lab.baseline_node = Some(PathBuf::from(it.next().ok_or("--baseline-node needs a path")?))
            }
            "--scale-keys" => lab.scale_keys = scale_keys(it.next())?,
            "-h" | "--help" => return Ok(None),
            "all" => {
                all = true;
                chosen.extend(ALL.iter().map(|s| s.to_string()));
            }
            name if ALL.contains(&name) || name == "scale" => chosen.push(name.to_string()),
            other => return Err(format!("unknown experiment or flag {other:?}")),
        }
    }
    if chosen.is_empty() {
        return Err("name an experiment".to_string());
    }
    if all && lab.baseline_node.is_none() {
        println!("lab: skipping limits (it needs --baseline-node)");
        chosen.retain(|c| c != "limits");
    }
    Ok(Some((lab, chosen)))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (lab, chosen) = match parse(&args) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("lab: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
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
            "failover" => lab::failover::run(&lab),
            "security" => lab::security::run(&lab),
            "limits" => lab::limits::run(&lab),
            "scale" => lab::scale::run(&lab, &lab.scale_keys),
            "goals" => lab::goals::run(&lab),
            _ => lab::versus_etcd::run(&lab),
        };
        if let Err(e) = result {
            eprintln!("lab: {name}: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
