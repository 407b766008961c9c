//! The data commands (docs/commands.md) as typed values, parsed from a request's
//! arguments. The same parse runs where a command arrives (to answer a bad
//! request at once) and where a logged command is applied (the log holds
//! the arguments), so it must be deterministic: it reads no clock; a
//! relative expiry (`EX 10`) is made absolute from the `base` time the
//! proposing node wrote into the entry.
//!
//! Arity is checked before, from the command table (`crate::command`).

use crate::config::{KEY_BYTES_MAX, VALUE_BYTES_MAX};
use crate::resp::{Reply, parse_i64};

/// What `SET` (and `GETEX`) do to a key's deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ttl {
    /// No option: a `SET` clears any deadline; `GETEX` leaves it.
    Unchanged,
    /// `KEEPTTL`.
    Keep,
    /// `PERSIST` (GETEX): no deadline.
    Persist,
    /// An absolute deadline in milliseconds since the Unix epoch.
    At(u64),
}

/// `NX` / `XX` of SET.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cond {
    Always,
    /// Only if absent.
    Nx,
    /// Only if present.
    Xx,
}

/// `NX|XX|GT|LT` of EXPIRE: only without a deadline, only with one, only
/// to a later one (no deadline counts as infinite), only to an earlier one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExpireCond {
    pub nx: bool,
    pub xx: bool,
    pub gt: bool,
    pub lt: bool,
}

/// Seconds or milliseconds, for TTL/PTTL and EXPIRETIME/PEXPIRETIME.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Seconds,
    Millis,
}

/// A deadline a command asks for: milliseconds since the Unix epoch, which
/// may lie in the past (the key is then deleted) or before the epoch.
pub type Deadline = i64;

#[derive(Clone, Debug, PartialEq)]
pub enum Cmd {
    // Strings
    Get { key: Vec<u8> },
    Set { key: Vec<u8>, value: Vec<u8>, cond: Cond, get: bool, ttl: Ttl },
    SetNx { key: Vec<u8>, value: Vec<u8> },
    GetSet { key: Vec<u8>, value: Vec<u8> },
    GetDel { key: Vec<u8> },
    GetEx { key: Vec<u8>, ttl: Ttl },
    MGet { keys: Vec<Vec<u8>> },
    MSet { pairs: Vec<(Vec<u8>, Vec<u8>)>, nx: bool },
    Append { key: Vec<u8>, value: Vec<u8> },
    StrLen { key: Vec<u8> },
    GetRange { key: Vec<u8>, start: i64, end: i64 },
    SetRange { key: Vec<u8>, offset: usize, value: Vec<u8> },
    IncrBy { key: Vec<u8>, by: i64 },
    IncrByFloat { key: Vec<u8>, by: f64 },
    Cas { key: Vec<u8>, expected: Vec<u8>, new: Vec<u8> },
    // Keys
    Del { keys: Vec<Vec<u8>> },
    Exists { keys: Vec<Vec<u8>> },
    Expire { key: Vec<u8>, at: Deadline, cond: ExpireCond },
    Ttl { key: Vec<u8>, unit: Unit },
    ExpireTime { key: Vec<u8>, unit: Unit },
    Persist { key: Vec<u8> },
    Type { key: Vec<u8> },
    Rename { from: Vec<u8>, to: Vec<u8>, nx: bool },
    Keys { pattern: Vec<u8> },
    Scan { cursor: u64, pattern: Option<Vec<u8>>, count: usize, kind: Option<Vec<u8>> },
    RandomKey,
    DbSize,
    Flush,
    // Hashes
    HSet { key: Vec<u8>, pairs: Vec<(Vec<u8>, Vec<u8>)>, ok_reply: bool },
    HSetNx { key: Vec<u8>, field: Vec<u8>, value: Vec<u8> },
    HGet { key: Vec<u8>, field: Vec<u8> },
    HMGet { key: Vec<u8>, fields: Vec<Vec<u8>> },
    HGetAll { key: Vec<u8> },
    HDel { key: Vec<u8>, fields: Vec<Vec<u8>> },
    HExists { key: Vec<u8>, field: Vec<u8> },
    HLen { key: Vec<u8> },
    HKeys { key: Vec<u8> },
    HVals { key: Vec<u8> },
    HStrLen { key: Vec<u8>, field: Vec<u8> },
    HIncrBy { key: Vec<u8>, field: Vec<u8>, by: i64 },
    HScan { key: Vec<u8>, cursor: u64, pattern: Option<Vec<u8>>, count: usize },
    // Scripts
    Eval { script: ScriptRef, keys: Vec<Vec<u8>>, args: Vec<Vec<u8>>, read_only: bool },
    ScriptLoad { body: Vec<u8> },
    ScriptExists { shas: Vec<Vec<u8>> },
    ScriptFlush,
}

/// The script an EVAL runs: its body, or the SHA-1 of a loaded one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScriptRef {
    Body(Vec<u8>),
    Sha(String),
}

impl Cmd {
    /// Commands that may take long on a large store, served from a copy off
    /// the core thread.
    pub fn is_scan(&self) -> bool {
        matches!(self, Cmd::Keys { .. } | Cmd::Scan { .. } | Cmd::HScan { .. } | Cmd::HGetAll { .. })
    }

    /// Commands a script may not issue.
    pub fn is_script(&self) -> bool {
        matches!(self, Cmd::Eval { .. } | Cmd::ScriptLoad { .. } | Cmd::ScriptExists { .. } | Cmd::ScriptFlush)
    }
}

pub const NOT_AN_INTEGER_ARG: &str = "value is not an integer or out of range";
pub const NOT_A_FLOAT_ARG: &str = "value is not a valid float";

fn syntax() -> Reply {
    Reply::err("syntax error")
}

/// A key (or hash field) argument, refused past `KEY_BYTES_MAX`.
pub fn key(raw: &[u8]) -> Result<Vec<u8>, Reply> {
    if raw.len() > KEY_BYTES_MAX {
        return Err(Reply::err("key too large"));
    }
    Ok(raw.to_vec())
}

pub(crate) fn value(raw: &[u8]) -> Result<Vec<u8>, Reply> {
    if raw.len() > VALUE_BYTES_MAX {
        return Err(Reply::err("value too large"));
    }
    Ok(raw.to_vec())
}

fn int(raw: &[u8]) -> Result<i64, Reply> {
    parse_i64(raw).ok_or_else(|| Reply::err(NOT_AN_INTEGER_ARG))
}

/// A float as Redis reads one: decimal or exponent notation, `inf`; not NaN.
pub fn parse_float(raw: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(raw).ok()?;
    if text.is_empty() || text.trim() != text {
        return None;
    }
    let v: f64 = match text.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        t => t.parse().ok()?,
    };
    (!v.is_nan()).then_some(v)
}

fn float(raw: &[u8]) -> Result<f64, Reply> {
    parse_float(raw).ok_or_else(|| Reply::err(NOT_A_FLOAT_ARG))
}

fn keys(args: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, Reply> {
    args.iter().map(|k| key(k)).collect()
}

type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

fn pairs(args: &[Vec<u8>], name: &str) -> Result<Pairs, Reply> {
    if args.is_empty() || !args.len().is_multiple_of(2) {
        return Err(Reply::err(format!("wrong number of arguments for '{name}'")));
    }
    args.chunks(2).map(|p| Ok((key(&p[0])?, value(&p[1])?))).collect()
}

/// `n` units from `base` as an absolute deadline; `None` on overflow.
fn deadline_in(base: u64, n: i64, unit: Unit) -> Option<Deadline> {
    let ms = match unit {
        Unit::Seconds => n.checked_mul(1000)?,
        Unit::Millis => n,
    };
    (base as i64).checked_add(ms)
}

/// An expiry option's value: positive, and a deadline that fits.
fn expiry(base: u64, raw: &[u8], unit: Unit, absolute: bool, name: &str) -> Result<u64, Reply> {
    let invalid = || Reply::err(format!("invalid expire time in '{name}' command"));
    let n = int(raw)?;
    if n <= 0 {
        return Err(invalid());
    }
    let at = if absolute { deadline_in(0, n, unit) } else { deadline_in(base, n, unit) };
    at.filter(|&at| at > 0).map(|at| at as u64).ok_or_else(invalid)
}

/// Options of `SET key value ...`.
fn parse_set(args: &[Vec<u8>], base: u64) -> Result<Cmd, Reply> {
    let (k, v) = (key(&args[1])?, value(&args[2])?);
    let (mut cond, mut get, mut ttl) = (Cond::Always, false, Ttl::Unchanged);
    let mut i = 3;
    while i < args.len() {
        let opt = args[i].to_ascii_uppercase();
        let next = args.get(i + 1);
        match opt.as_slice() {
            b"NX" if cond == Cond::Always => cond = Cond::Nx,
            b"XX" if cond == Cond::Always => cond = Cond::Xx,
            b"GET" if !get => get = true,
            b"KEEPTTL" if ttl == Ttl::Unchanged => ttl = Ttl::Keep,
            b"EX" | b"PX" | b"EXAT" | b"PXAT" if ttl == Ttl::Unchanged => {
                let Some(raw) = next else { return Err(syntax()) };
                let unit = if opt[0] == b'E' { Unit::Seconds } else { Unit::Millis };
                ttl = Ttl::At(expiry(base, raw, unit, opt.len() == 4, "set")?);
                i += 1;
            }
            _ => return Err(syntax()),
        }
        i += 1;
    }
    Ok(Cmd::Set { key: k, value: v, cond, get, ttl })
}

fn parse_getex(args: &[Vec<u8>], base: u64) -> Result<Cmd, Reply> {
    let k = key(&args[1])?;
    let ttl = match args.len() {
        2 => Ttl::Unchanged,
        3 if args[2].eq_ignore_ascii_case(b"PERSIST") => Ttl::Persist,
        4 => {
            let opt = args[2].to_ascii_uppercase();
            match opt.as_slice() {
                b"EX" | b"PX" | b"EXAT" | b"PXAT" => {
                    let unit = if opt[0] == b'E' { Unit::Seconds } else { Unit::Millis };
                    Ttl::At(expiry(base, &args[3], unit, opt.len() == 4, "getex")?)
                }
                _ => return Err(syntax()),
            }
        }
        _ => return Err(syntax()),
    };
    Ok(Cmd::GetEx { key: k, ttl })
}

fn parse_expire(name: &str, args: &[Vec<u8>], base: u64) -> Result<Cmd, Reply> {
    let k = key(&args[1])?;
    let n = int(&args[2])?;
    let (unit, absolute) = match name {
        "expire" => (Unit::Seconds, false),
        "pexpire" => (Unit::Millis, false),
        "expireat" => (Unit::Seconds, true),
        _ => (Unit::Millis, true),
    };
    let at = deadline_in(if absolute { 0 } else { base }, n, unit)
        .ok_or_else(|| Reply::err(format!("invalid expire time in '{name}' command")))?;
    let mut cond = ExpireCond::default();
    for opt in &args[3..] {
        match opt.to_ascii_uppercase().as_slice() {
            b"NX" => cond.nx = true,
            b"XX" => cond.xx = true,
            b"GT" => cond.gt = true,
            b"LT" => cond.lt = true,
            _ => return Err(Reply::err(format!("Unsupported option {}", String::from_utf8_lossy(opt)))),
        }
    }
    if cond.nx && (cond.xx || cond.gt || cond.lt) {
        return Err(Reply::err("NX and XX, GT or LT options at the same time are not compatible"));
    }
    if cond.gt && cond.lt {
        return Err(Reply::err("GT and LT options at the same time are not compatible"));
    }
    Ok(Cmd::Expire { key: k, at, cond })
}

/// `cursor [MATCH p] [COUNT n] [TYPE t]` (TYPE only for SCAN).
type ScanOpts = (u64, Option<Vec<u8>>, usize, Option<Vec<u8>>);

fn parse_scan_opts(args: &[Vec<u8>], with_type: bool) -> Result<ScanOpts, Reply> {
    let cursor = std::str::from_utf8(&args[0])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| Reply::err("invalid cursor"))?;
    let (mut pattern, mut count, mut kind) = (None, 10usize, None);
    let mut rest = args[1..].chunks(2);
    for pair in rest.by_ref() {
        let [opt, val] = pair else { return Err(syntax()) };
        match opt.to_ascii_uppercase().as_slice() {
            b"MATCH" => pattern = Some(val.clone()).filter(|p| p != b"*"),
            b"COUNT" => match int(val)? {
                n if n >= 1 => count = n as usize,
                _ => return Err(syntax()),
            },
            b"TYPE" if with_type => kind = Some(val.to_ascii_lowercase()),
            _ => return Err(syntax()),
        }
    }
    Ok((cursor, pattern, count, kind))
}

/// Parses the data command `name` (lowercase) from its arguments; the
/// caller checked the arity against the command table.
pub fn parse(name: &str, args: &[Vec<u8>], base: u64) -> Result<Cmd, Reply> {
    let k = || key(&args[1]);
    Ok(match name {
        "get" => Cmd::Get { key: k()? },
        "set" => parse_set(args, base)?,
        "setnx" => Cmd::SetNx { key: k()?, value: value(&args[2])? },
        "setex" | "psetex" => {
            let unit = if name == "setex" { Unit::Seconds } else { Unit::Millis };
            let at = expiry(base, &args[2], unit, false, name)?;
            Cmd::Set { key: k()?, value: value(&args[3])?, cond: Cond::Always, get: false, ttl: Ttl::At(at) }
        }
        "getset" => Cmd::GetSet { key: k()?, value: value(&args[2])? },
        "getdel" => Cmd::GetDel { key: k()? },
        "getex" => parse_getex(args, base)?,
        "mget" => Cmd::MGet { keys: keys(&args[1..])? },
        "mset" | "msetnx" => Cmd::MSet { pairs: pairs(&args[1..], name)?, nx: name == "msetnx" },
        "append" => Cmd::Append { key: k()?, value: value(&args[2])? },
        "strlen" => Cmd::StrLen { key: k()? },
        "getrange" | "substr" => Cmd::GetRange { key: k()?, start: int(&args[2])?, end: int(&args[3])? },
        "setrange" => {
            let offset = int(&args[2])?;
            if offset < 0 {
                return Err(Reply::err("offset is out of range"));
            }
            Cmd::SetRange { key: k()?, offset: offset as usize, value: value(&args[3])? }
        }
        "incr" => Cmd::IncrBy { key: k()?, by: 1 },
        "decr" => Cmd::IncrBy { key: k()?, by: -1 },
        "incrby" => Cmd::IncrBy { key: k()?, by: int(&args[2])? },
        "decrby" => {
            let by = int(&args[2])?.checked_neg().ok_or_else(|| Reply::err("decrement would overflow"))?;
            Cmd::IncrBy { key: k()?, by }
        }
        "incrbyfloat" => Cmd::IncrByFloat { key: k()?, by: float(&args[2])? },
        "cas" => Cmd::Cas { key: k()?, expected: value(&args[2])?, new: value(&args[3])? },
        "del" | "unlink" => Cmd::Del { keys: keys(&args[1..])? },
        "exists" => Cmd::Exists { keys: keys(&args[1..])? },
        "expire" | "pexpire" | "expireat" | "pexpireat" => parse_expire(name, args, base)?,
        "ttl" => Cmd::Ttl { key: k()?, unit: Unit::Seconds },
        "pttl" => Cmd::Ttl { key: k()?, unit: Unit::Millis },
        "expiretime" => Cmd::ExpireTime { key: k()?, unit: Unit::Seconds },
        "pexpiretime" => Cmd::ExpireTime { key: k()?, unit: Unit::Millis },
        "persist" => Cmd::Persist { key: k()? },
        "type" => Cmd::Type { key: k()? },
        "rename" | "renamenx" => Cmd::Rename { from: k()?, to: key(&args[2])?, nx: name == "renamenx" },
        "keys" => Cmd::Keys { pattern: args[1].clone() },
        "scan" => {
            let (cursor, pattern, count, kind) = parse_scan_opts(&args[1..], true)?;
            Cmd::Scan { cursor, pattern, count, kind }
        }
        "randomkey" => Cmd::RandomKey,
        "dbsize" => Cmd::DbSize,
        "flushdb" | "flushall" => {
            match args.get(1).map(|a| a.to_ascii_uppercase()) {
                None => {}
                Some(a) if args.len() == 2 && (a == b"ASYNC" || a == b"SYNC") => {}
                _ => return Err(syntax()),
            }
            Cmd::Flush
        }
        "hset" | "hmset" => Cmd::HSet { key: k()?, pairs: pairs(&args[2..], name)?, ok_reply: name == "hmset" },
        "hsetnx" => Cmd::HSetNx { key: k()?, field: key(&args[2])?, value: value(&args[3])? },
        "hget" => Cmd::HGet { key: k()?, field: key(&args[2])? },
        "hmget" => Cmd::HMGet { key: k()?, fields: keys(&args[2..])? },
        "hgetall" => Cmd::HGetAll { key: k()? },
        "hdel" => Cmd::HDel { key: k()?, fields: keys(&args[2..])? },
        "hexists" => Cmd::HExists { key: k()?, field: key(&args[2])? },
        "hlen" => Cmd::HLen { key: k()? },
        "hkeys" => Cmd::HKeys { key: k()? },
        "hvals" => Cmd::HVals { key: k()? },
        "hstrlen" => Cmd::HStrLen { key: k()?, field: key(&args[2])? },
        "hincrby" => Cmd::HIncrBy { key: k()?, field: key(&args[2])?, by: int(&args[3])? },
        "hscan" => {
            let (cursor, pattern, count, _) = parse_scan_opts(&args[2..], false)?;
            Cmd::HScan { key: k()?, cursor, pattern, count }
        }
        "eval" | "evalsha" | "eval_ro" | "evalsha_ro" => parse_eval(name, args)?,
        "script" => match args[1].to_ascii_lowercase().as_slice() {
            b"load" => Cmd::ScriptLoad { body: value(&args[2])? },
            b"exists" => Cmd::ScriptExists { shas: args[2..].to_vec() },
            _ => match args.get(2).map(|a| a.to_ascii_uppercase()) {
                None => Cmd::ScriptFlush,
                Some(a) if args.len() == 3 && (a == b"ASYNC" || a == b"SYNC") => Cmd::ScriptFlush,
                _ => return Err(syntax()),
            },
        },
        other => return Err(Reply::err(format!("unknown command '{other}'"))),
    })
}

/// `EVAL script numkeys [key ...] [arg ...]` and its SHA and read-only forms.
fn parse_eval(name: &str, args: &[Vec<u8>]) -> Result<Cmd, Reply> {
    let script = if name.starts_with("evalsha") {
        let sha = String::from_utf8_lossy(&args[1]).to_ascii_lowercase();
        ScriptRef::Sha(sha)
    } else {
        ScriptRef::Body(value(&args[1])?)
    };
    let numkeys = int(&args[2])?;
    if numkeys < 0 {
        return Err(Reply::err("Number of keys can't be negative"));
    }
    let numkeys = numkeys as usize;
    if numkeys > args.len() - 3 {
        return Err(Reply::err("Number of keys can't be greater than number of args"));
    }
    let keys = keys(&args[3..3 + numkeys])?;
    let rest = args[3 + numkeys..].iter().map(|a| value(a)).collect::<Result<_, _>>()?;
    Ok(Cmd::Eval { script, keys, args: rest, read_only: name.ends_with("_ro") })
}
