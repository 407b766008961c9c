//! `bench`: a closed-loop load generator that speaks RESP, for our nodes and
//! for anything else that does (redis-server).
//!
//! ```text
//! bench [-a HOST:PORT[,HOST:PORT...]] [-c CONNECTIONS] [-P PIPELINE]
//!       [-r READ_PERCENT | --insert | --read-back] [--keys N] [-d VALUE_BYTES]
//!       [--seconds S | -n OPS] [--seed N] [--csv FILE] [--label NAME] [--quiet]
//!       [--tls-ca FILE] [--user NAME --pass PASSWORD]
//! ```
//!
//! Connections are spread over the addresses in turn. Prints ops/s and
//! latency percentiles; with `--csv`, appends one row (and a header to a new
//! file). Exits 1 when any request failed, 2 on bad flags.

use std::io::Write;
use std::process::ExitCode;

use raftkv::bench::load::{self, LoadResult, LoadSpec, Stop, Workload};

const USAGE: &str = "usage: bench [-a HOST:PORT[,HOST:PORT...]] [-c CONNECTIONS] [-P PIPELINE] \
[-r READ_PERCENT | --insert | --read-back] [--keys N] [-d VALUE_BYTES] [--seconds S | -n OPS] [--seed N] \
[--csv FILE] [--label NAME] [--quiet] [--tls-ca FILE] [--user NAME --pass PASSWORD]";

struct Flags {
    spec: LoadSpec,
    csv: Option<String>,
    label: String,
}

fn parse(args: &[String]) -> Result<Option<Flags>, String> {
    let mut spec = LoadSpec { progress: true, ..LoadSpec::default() };
    let mut csv = None;
    let mut label = "bench".to_string();
    let (mut user, mut pass) = (None, None);
    let mut it = args.iter();
    fn num<T: std::str::FromStr>(flag: &str, v: Option<&String>) -> Result<T, String> {
        let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
        v.parse().map_err(|_| format!("{flag}: {v:?} is not a number"))
    }
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "-a" => {
                let v = it.next().ok_or("-a needs a value")?;
                spec.targets = v.split(',').map(str::to_string).collect();
            }
            "-c" => spec.connections = num(flag, it.next())?,
            "-P" => spec.pipeline = num(flag, it.next())?,
            "-r" => {
                let read_pct: u32 = num(flag, it.next())?;
                if read_pct > 100 {
                    return Err(format!("-r: {read_pct} is not a percentage"));
                }
                spec.workload = Workload::Mix { read_pct };
            }
            "--insert" => spec.workload = Workload::Insert,
            "--read-back" => spec.workload = Workload::ReadBack,
            "--keys" => spec.keys = num(flag, it.next())?,
            "-d" => spec.value_size = num(flag, it.next())?,
            "--seconds" => spec.stop = Stop::Seconds(num(flag, it.next())?),
            "-n" => spec.stop = Stop::Ops(num(flag, it.next())?),
            "--seed" => spec.seed = num(flag, it.next())?,
            "--csv" => csv = Some(it.next().ok_or("--csv needs a file")?.clone()),
            "--label" => label = it.next().ok_or("--label needs a value")?.clone(),
            "--quiet" => spec.progress = false,
            "--tls-ca" => {
                let ca = it.next().ok_or("--tls-ca needs a file")?;
                spec.security.tls = Some(raftkv::net::tls::client_config(std::path::Path::new(ca))?);
            }
            "--user" => user = Some(it.next().ok_or("--user needs a name")?.clone()),
            "--pass" => pass = Some(it.next().ok_or("--pass needs a password")?.clone()),
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    spec.security.login = match (user, pass) {
        (None, None) => None,
        (user, Some(pass)) => Some((user.unwrap_or_else(|| "default".to_string()), pass)),
        (Some(_), None) => return Err("--user needs --pass".to_string()),
    };
    if spec.connections == 0 || spec.pipeline == 0 || spec.keys == 0 {
        return Err("-c, -P and --keys must be at least 1".to_string());
    }
    if let Stop::Seconds(s) = spec.stop
        && !(s > 0.0 && s.is_finite())
    {
        return Err(format!("--seconds: {s} is not a positive duration"));
    }
    Ok(Some(Flags { spec, csv, label }))
}

fn append_csv(path: &str, result: &LoadResult, flags: &Flags) -> Result<(), String> {
    let new = std::fs::metadata(path).map(|m| m.len() == 0).unwrap_or(true);
    let mut f =
        std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| format!("opening {path}: {e}"))?;
    let mut text = String::new();
    if new {
        text.push_str(LoadResult::CSV_HEADER);
        text.push('\n');
    }
    text.push_str(&result.csv_row(&flags.label, &flags.spec));
    text.push('\n');
    f.write_all(text.as_bytes()).map_err(|e| format!("writing {path}: {e}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flags = match parse(&args) {
        Ok(Some(f)) => f,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("bench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = load::run(&flags.spec);
    println!("{}", result.summary());
    if let Some(path) = &flags.csv
        && let Err(e) = append_csv(path, &result, &flags)
    {
        eprintln!("bench: {e}");
        return ExitCode::FAILURE;
    }
    if result.errors > 0 || result.wrong_values > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
