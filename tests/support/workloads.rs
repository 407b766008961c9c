//! Workloads beside the register history of the Jepsen-style suite, each
//! with an invariant checked as it runs (docs/commands.md):
//!
//! - bank: transfers between accounts as `WATCH`/`MULTI`/`EXEC`, never
//!   overdrawing; every read of all the balances at once (`MGET`) sums to
//!   the same total and shows no negative balance. A transaction applied in
//!   part, twice, or past a changed watch breaks one or the other.
//! - expiry: keys written with `PX`, each read back before and after its
//!   deadline by the one clock every node of a test shares: a read that
//!   ended before the earliest possible deadline sees the value, a read that
//!   began after the latest possible one sees nothing.
//! - counters: `INCR`s of counters each client owns, one at a time; every
//!   answer is the count acknowledged so far, and at the end each counter
//!   holds exactly its acknowledged increments (plus at most the one whose
//!   answer was lost, after which the client moves to a fresh counter). A
//!   write the cluster applied twice, through a node that proposed it again
//!   to a new leader, breaks both.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use raftkv::resp::Reply;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use super::Client;

pub const ACCOUNTS: usize = 5;
pub const BALANCE: i64 = 100;
/// How long written keys live in the expiry workload.
const TTL_MS: u64 = 300;
/// Clock granularity and SystemTime's step: the margin of the expiry checks.
const CLOCK_SLACK_MS: u64 = 5;

fn account(i: usize) -> String {
    format!("bank:{i}")
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// What the side workloads saw; a violation is a message, not a panic, so
/// the suite reports it with the cluster's logs.
#[derive(Default, Debug)]
pub struct Report {
    pub transfers: u64,
    pub transfers_aborted: u64,
    pub audits: u64,
    pub expiry_checks: u64,
    pub increments: u64,
    /// Each counter: its key, the increments acknowledged, and whether one
    /// more may have been applied unanswered.
    pub counters: Vec<(String, i64, bool)>,
    pub violations: Vec<String>,
}

pub struct Side {
    threads: Vec<JoinHandle<Report>>,
}

/// Sets up the accounts (through `addrs[0]`, retried until a leader takes
/// it) and starts the workloads.
pub fn start(addrs: &[String], seed: u64, stop: Arc<AtomicBool>) -> Side {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut args: Vec<Vec<u8>> = vec![b"MSET".to_vec()];
        for i in 0..ACCOUNTS {
            args.push(account(i).into_bytes());
            args.push(BALANCE.to_string().into_bytes());
        }
        let args: Vec<&[u8]> = args.iter().map(|a| &a[..]).collect();
        let done = Client::connect(&addrs[0]).and_then(|mut c| c.cmd_bytes(&args)).is_ok_and(|r| r == Reply::ok());
        if done {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "could not set up the bank accounts");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut threads = Vec::new();
    for w in 0..3u64 {
        let (addrs, stop) = (addrs.to_vec(), stop.clone());
        threads.push(std::thread::spawn(move || transfers(addrs, seed ^ (0xba4c << 16) ^ w, stop)));
    }
    let (a, s) = (addrs.to_vec(), stop.clone());
    threads.push(std::thread::spawn(move || audits(a, seed ^ 0xa0d1, s)));
    let (a, s) = (addrs.to_vec(), stop.clone());
    threads.push(std::thread::spawn(move || expiry(a, seed ^ 0xe791, s)));
    for w in 0..2u64 {
        let (a, s) = (addrs.to_vec(), stop.clone());
        threads.push(std::thread::spawn(move || counters(a, seed ^ (0xc0 << 8) ^ w, s)));
    }
    Side { threads }
}

impl Side {
    pub fn stop(self) -> Report {
        let mut total = Report::default();
        for t in self.threads {
            let r = t.join().expect("side workload thread");
            total.transfers += r.transfers;
            total.transfers_aborted += r.transfers_aborted;
            total.audits += r.audits;
            total.expiry_checks += r.expiry_checks;
            total.increments += r.increments;
            total.counters.extend(r.counters);
            total.violations.extend(r.violations);
        }
        total
    }
}

fn connect(addrs: &[String], rng: &mut Xoshiro256PlusPlus) -> Option<Client> {
    Client::connect(&addrs[rng.random_range(0..addrs.len())]).ok()
}

fn int_of(reply: &Reply) -> Option<i64> {
    match reply {
        Reply::Bulk(Some(b)) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

/// One transfer: WATCH both accounts, read them, and move an amount the
/// source holds. Returns whether EXEC applied it (`None`: not known).
fn transfer(c: &mut Client, from: &str, to: &str, amount: i64) -> std::io::Result<Option<bool>> {
    let watched = c.cmd(&["WATCH", from, to])?;
    if watched != Reply::ok() {
        c.cmd(&["UNWATCH"])?;
        return Ok(None);
    }
    let (Some(a), Some(b)) = (int_of(&c.cmd(&["GET", from])?), int_of(&c.cmd(&["GET", to])?)) else {
        c.cmd(&["UNWATCH"])?;
        return Ok(None);
    };
    if a < amount {
        c.cmd(&["UNWATCH"])?;
        return Ok(Some(false));
    }
    c.cmd(&["MULTI"])?;
    c.cmd(&["SET", from, &(a - amount).to_string()])?;
    c.cmd(&["SET", to, &(b + amount).to_string()])?;
    Ok(match c.cmd(&["EXEC"])? {
        Reply::Array(Some(_)) => Some(true),
        Reply::Array(None) => Some(false),
        _ => None,
    })
}

/// Runs `step` on one connection to a random node until `stop`, with a
/// new connection after one is lost (`step` returning an error).
fn drive(
    addrs: &[String],
    seed: u64,
    stop: &AtomicBool,
    mut step: impl FnMut(&mut Client, &mut Xoshiro256PlusPlus, &mut Report) -> std::io::Result<()>,
) -> Report {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut report = Report::default();
    let mut conn = None;
    while !stop.load(Ordering::Relaxed) {
        if conn.is_none() {
            conn = connect(addrs, &mut rng);
        }
        let Some(c) = conn.as_mut() else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        if step(c, &mut rng, &mut report).is_err() {
            conn = None;
        }
    }
    report
}

fn transfers(addrs: Vec<String>, seed: u64, stop: Arc<AtomicBool>) -> Report {
    drive(&addrs, seed, &stop, |c, rng, report| {
        let from = rng.random_range(0..ACCOUNTS);
        let to = (from + rng.random_range(1..ACCOUNTS)) % ACCOUNTS;
        match transfer(c, &account(from), &account(to), rng.random_range(1..30))? {
            Some(true) => report.transfers += 1,
            Some(false) => report.transfers_aborted += 1,
            None => {}
        }
        Ok(())
    })
}

fn audits(addrs: Vec<String>, seed: u64, stop: Arc<AtomicBool>) -> Report {
    let names: Vec<String> = (0..ACCOUNTS).map(account).collect();
    let mut args: Vec<&str> = vec!["MGET"];
    args.extend(names.iter().map(|s| s.as_str()));
    drive(&addrs, seed, &stop, |c, rng, report| {
        if let Reply::Array(Some(values)) = c.cmd(&args)? {
            let balances: Vec<Option<i64>> = values.iter().map(int_of).collect();
            let total: i64 = balances.iter().flatten().sum();
            if balances.iter().any(|b| b.is_none_or(|b| b < 0)) || total != BALANCE * ACCOUNTS as i64 {
                report.violations.push(format!("bank: balances {balances:?} (total {total})"));
            }
            report.audits += 1;
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..5)));
        Ok(())
    })
}

/// Keys written with `PX TTL_MS`, read back at random times around their
/// deadline. The deadline lies between the write's invocation and its
/// reply, plus the TTL (the node that took it stamped its clock then).
fn expiry(addrs: Vec<String>, seed: u64, stop: Arc<AtomicBool>) -> Report {
    let mut n = 0u64;
    drive(&addrs, seed, &stop, |c, rng, report| {
        n += 1;
        let key = format!("ttl:{seed}:{n}");
        let invoked = now_ms();
        let reply = c.cmd(&["SET", &key, "v", "PX", &TTL_MS.to_string()])?;
        let acked = now_ms();
        if reply != Reply::ok() {
            return Ok(());
        }
        let (earliest, latest) = (invoked + TTL_MS, acked + TTL_MS);
        // Reads until a while past the deadline, from this connection and
        // from fresh ones to other nodes.
        while now_ms() < latest + 100 && !stop.load(Ordering::Relaxed) {
            let mut other = if rng.random_bool(0.5) { connect(&addrs, rng) } else { None };
            let reader = other.as_mut().unwrap_or(&mut *c);
            let begun = now_ms();
            let Ok(got) = reader.cmd(&["GET", &key]) else { break };
            let ended = now_ms();
            let present = match &got {
                Reply::Bulk(Some(_)) => true,
                Reply::Bulk(None) => false,
                _ => continue,
            };
            if ended + CLOCK_SLACK_MS < earliest && !present {
                report.violations.push(format!("expiry: {key} absent at {begun}-{ended}, before {earliest}"));
            }
            if begun > latest + CLOCK_SLACK_MS && present {
                report.violations.push(format!("expiry: {key} present at {begun}-{ended}, after {latest}"));
            }
            report.expiry_checks += 1;
            std::thread::sleep(Duration::from_millis(rng.random_range(0..40)));
        }
        Ok(())
    })
}

/// `INCR`s of this client's own counters (module docs).
fn counters(addrs: Vec<String>, seed: u64, stop: Arc<AtomicBool>) -> Report {
    let mut current = (format!("count:{seed}:0"), 0i64);
    let mut done: Vec<(String, i64, bool)> = Vec::new();
    let mut report = drive(&addrs, seed, &stop, |c, _, report| {
        let reply = c.cmd(&["INCR", &current.0]);
        if let Ok(Reply::Integer(n)) = reply {
            current.1 += 1;
            report.increments += 1;
            if n != current.1 {
                report
                    .violations
                    .push(format!("counters: INCR {} answered {n}, acknowledged {}", current.0, current.1));
                current.1 = n;
            }
            return Ok(());
        }
        // Not known whether it applied: a fresh counter from here.
        let (key, acked) = std::mem::replace(&mut current, (format!("count:{seed}:{}", done.len() + 1), 0));
        done.push((key, acked, true));
        reply.map(|_| ())
    });
    done.push((current.0, current.1, false));
    report.counters = done;
    report
}

/// Each counter holds its acknowledged increments (and at most the one
/// unanswered), read through `client`.
pub fn check_counters(client: &mut Client, report: &Report) -> Vec<String> {
    let mut wrong = Vec::new();
    for (key, acked, maybe) in &report.counters {
        let got = match client.cmd(&["GET", key]) {
            Ok(Reply::Bulk(None)) => 0,
            Ok(reply) => int_of(&reply).unwrap_or(-1),
            Err(e) => {
                wrong.push(format!("counters: GET {key}: {e}"));
                continue;
            }
        };
        if got < *acked || got > acked + i64::from(*maybe) {
            wrong.push(format!("counters: {key} = {got}, acknowledged {acked}, one unknown: {maybe}"));
        }
    }
    wrong
}
