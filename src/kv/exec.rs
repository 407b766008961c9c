//! What each data command does (docs/commands.md): writes on the store at a log
//! index, reads on any copy of the data. Replies and errors as Redis gives
//! them, `-WRONGTYPE` between strings and hashes.

use std::sync::Arc;

use super::cmd::{Cmd, Cond, ScriptRef, Ttl, Unit, parse_float};
use super::ops::WriteOp;
use super::sessions::{Once, Origin, Seen};
use super::{
    Bytes, Data, Hash, INCR_OVERFLOW, Item, Key, KvStore, NOT_AN_INTEGER, SHARD_COUNT, Value, WRONGTYPE, glob, script,
};
use crate::config::VALUE_BYTES_MAX;
use crate::resp::{Reply, parse_i64};

fn wrongtype() -> Reply {
    Reply::Error(WRONGTYPE.to_string())
}

fn too_big() -> Reply {
    Reply::err("string exceeds maximum allowed size (proto-max-bulk-len)")
}

/// How a float result is written back and answered: rounded to 15
/// significant digits (so 0.1 + 0.2 is `0.3`, as Redis's long double
/// arithmetic answers), then the shortest decimal of that, never in
/// exponent notation.
fn format_float(v: f64) -> String {
    let rounded: f64 = format!("{v:.14e}").parse().unwrap_or(v);
    format!("{rounded}")
}

impl KvStore {
    /// Applies one committed write at log index `index` and returns its
    /// reply (docs/commands.md).
    /// Applies a client's write at most once (`sessions`): `None` when it
    /// is a late copy nobody waits for, the first reply for a duplicate.
    pub fn apply_once(&mut self, once: &Once, op: &WriteOp, index: u64) -> Option<Reply> {
        match Arc::make_mut(&mut self.data.sessions).admit(once, index) {
            Seen::New => {}
            Seen::Done(reply) => return Some(reply),
            Seen::Passed => return None,
        }
        let reply = self.apply(op, index);
        Arc::make_mut(&mut self.data.sessions).record(once, &reply);
        Some(reply)
    }

    /// What is known of a write of `origin` (after a snapshot replaced the
    /// entries that would have answered it).
    pub fn seen(&self, origin: Origin, seq: u64) -> Seen {
        self.data.sessions.seen(origin, seq)
    }

    pub fn apply(&mut self, op: &WriteOp, index: u64) -> Reply {
        let stamp = op.stamp();
        if stamp.leader && stamp.ms > self.data.clock {
            self.data.clock = stamp.ms;
        }
        match op {
            WriteOp::Run { args, .. } => self.run(args, stamp.ms, index),
            WriteOp::Exec { watches, commands, .. } => {
                if watches.iter().any(|w| self.watch_mark(&w.key) != w.mark) {
                    return Reply::Array(None);
                }
                Reply::array(commands.iter().map(|c| self.run(c, stamp.ms, index)).collect())
            }
            WriteOp::Expire { keys, .. } => {
                let before = self.data.keys;
                keys.iter().for_each(|k| self.purge(k, index));
                Reply::Integer((before - self.data.keys) as i64)
            }
        }
    }

    /// One logged command: parsed again here, as on every node.
    fn run(&mut self, args: &[Vec<u8>], base: u64, index: u64) -> Reply {
        match crate::command::parse_data(args, base) {
            Ok(cmd) => self.execute(&cmd, index, base),
            Err(reply) => reply,
        }
    }

    /// Runs any data command at log index `index`, `base` being the
    /// proposer's clock; reads answer from the state as it is.
    pub fn execute(&mut self, cmd: &Cmd, index: u64, base: u64) -> Reply {
        match self.write(cmd, index, base) {
            Some(reply) => reply,
            None => query(&self.data, cmd, base, 0),
        }
    }

    /// A live string and its deadline, `None` when absent, `-WRONGTYPE`
    /// for a hash.
    fn string(&self, key: &[u8]) -> Result<Option<(Bytes, u64)>, Reply> {
        string(self.data.live(key)).map(|s| s.map(|(v, deadline)| (v.clone(), deadline)))
    }

    /// Whether a deadline has already passed by the store's clock.
    fn past(&self, deadline: u64) -> bool {
        deadline != 0 && deadline <= self.data.clock
    }

    fn put_string(&mut self, key: &[u8], value: &[u8], deadline: u64, index: u64) {
        if self.past(deadline) {
            // Set with a deadline already past: as good as set and expired.
            self.remove(key, index);
            return;
        }
        self.put(key, Item { value: Value::Str(Bytes::from(value)), deadline, version: index });
    }

    /// The live hash at `key` for changing (created empty if `create`).
    fn hash_mut(&mut self, key: &[u8], index: u64, create: bool) -> Result<bool, Reply> {
        match self.data.live(key) {
            Some(Item { value: Value::Hash(_), .. }) => Ok(true),
            Some(_) => Err(wrongtype()),
            None if create => {
                self.put(key, Item { value: Value::Hash(Arc::default()), deadline: 0, version: index });
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Changes the hash at `key` (which `hash_mut` found or made).
    fn with_hash<R>(&mut self, key: &[u8], index: u64, f: impl FnOnce(&mut Hash) -> R) -> R {
        let (r, empty) = self
            .modify(key, |item| {
                item.version = index;
                let Value::Hash(h) = &mut item.value else { unreachable!("checked by hash_mut") };
                let h = Arc::make_mut(h);
                let r = f(h);
                (r, h.fields.is_empty())
            })
            .expect("checked by hash_mut");
        if empty {
            self.remove(key, index);
        }
        r
    }

    /// Carries out a write command; `None` for a read.
    fn write(&mut self, cmd: &Cmd, index: u64, base: u64) -> Option<Reply> {
        let now = self.data.clock;
        if let Some(key) = write_key(cmd) {
            self.purge(key, index);
        }
        let reply = match cmd {
            Cmd::Set { key, value, cond, get, ttl } => {
                let old = match self.string(key) {
                    Ok(old) => old,
                    Err(e) if *get => return Some(e),
                    Err(_) => None,
                };
                let exists = self.data.live(key).is_some();
                let old_reply = || old.as_ref().map_or(Reply::nil(), |(v, _)| Reply::Value(v.clone()));
                let refused = (*cond == Cond::Nx && exists) || (*cond == Cond::Xx && !exists);
                if refused {
                    return Some(if *get { old_reply() } else { Reply::nil() });
                }
                let deadline = match ttl {
                    Ttl::At(d) => *d,
                    Ttl::Keep => self.data.live(key).map_or(0, |i| i.deadline),
                    Ttl::Unchanged | Ttl::Persist => 0,
                };
                let reply = if *get { old_reply() } else { Reply::ok() };
                self.put_string(key, value, deadline, index);
                reply
            }
            Cmd::SetNx { key, value } => {
                if self.data.live(key).is_some() {
                    return Some(Reply::Integer(0));
                }
                self.put_string(key, value, 0, index);
                Reply::Integer(1)
            }
            Cmd::GetSet { key, value } => match self.string(key) {
                Err(e) => e,
                Ok(old) => {
                    self.put_string(key, value, 0, index);
                    old.map_or(Reply::nil(), |(v, _)| Reply::Value(v))
                }
            },
            Cmd::GetDel { key } => match self.string(key) {
                Err(e) => e,
                Ok(None) => Reply::nil(),
                Ok(Some((v, _))) => {
                    self.remove(key, index);
                    Reply::Value(v)
                }
            },
            Cmd::GetEx { key, ttl } => match self.string(key) {
                Err(e) => e,
                Ok(None) => Reply::nil(),
                Ok(Some((v, deadline))) => {
                    let new = match ttl {
                        Ttl::At(d) => *d,
                        Ttl::Persist => 0,
                        Ttl::Unchanged | Ttl::Keep => deadline,
                    };
                    if new != deadline {
                        self.set_deadline(key, new, index);
                    }
                    Reply::Value(v)
                }
            },
            Cmd::MSet { pairs, nx } => {
                pairs.iter().for_each(|(k, _)| self.purge(k, index));
                if *nx && pairs.iter().any(|(k, _)| self.data.live(k).is_some()) {
                    return Some(Reply::Integer(0));
                }
                pairs.iter().for_each(|(k, v)| self.put_string(k, v, 0, index));
                if *nx { Reply::Integer(1) } else { Reply::ok() }
            }
            Cmd::Append { key, value } => match self.string(key) {
                Err(e) => e,
                Ok(old) => {
                    let (old, deadline) = old.unwrap_or_else(|| (Bytes::from(&b""[..]), 0));
                    if old.len() + value.len() > VALUE_BYTES_MAX {
                        return Some(too_big());
                    }
                    let mut new = old.to_vec();
                    new.extend_from_slice(value);
                    self.put_string(key, &new, deadline, index);
                    Reply::Integer(new.len() as i64)
                }
            },
            Cmd::SetRange { key, offset, value } => match self.string(key) {
                Err(e) => e,
                Ok(old) => {
                    let (old, deadline) = old.unwrap_or_else(|| (Bytes::from(&b""[..]), 0));
                    if value.is_empty() {
                        return Some(Reply::Integer(old.len() as i64));
                    }
                    let end = offset.saturating_add(value.len());
                    if end > VALUE_BYTES_MAX {
                        return Some(too_big());
                    }
                    let mut new = old.to_vec();
                    new.resize(new.len().max(end), 0);
                    new[*offset..end].copy_from_slice(value);
                    self.put_string(key, &new, deadline, index);
                    Reply::Integer(new.len() as i64)
                }
            },
            Cmd::IncrBy { key, by } => match self.string(key) {
                Err(e) => e,
                Ok(old) => {
                    let (current, deadline) = match &old {
                        None => (0, 0),
                        Some((v, d)) => match parse_i64(v) {
                            Some(n) => (n, *d),
                            None => return Some(Reply::Error(NOT_AN_INTEGER.into())),
                        },
                    };
                    let Some(next) = current.checked_add(*by) else {
                        return Some(Reply::Error(INCR_OVERFLOW.into()));
                    };
                    self.put_string(key, next.to_string().as_bytes(), deadline, index);
                    Reply::Integer(next)
                }
            },
            Cmd::IncrByFloat { key, by } => match self.string(key) {
                Err(e) => e,
                Ok(old) => {
                    let (current, deadline) = match &old {
                        None => (0.0, 0),
                        Some((v, d)) => match parse_float(v) {
                            Some(n) => (n, *d),
                            None => return Some(Reply::err("value is not a valid float")),
                        },
                    };
                    let next = current + by;
                    if !next.is_finite() {
                        return Some(Reply::err("increment would produce NaN or Infinity"));
                    }
                    let text = format_float(next);
                    self.put_string(key, text.as_bytes(), deadline, index);
                    Reply::bulk(text)
                }
            },
            Cmd::Cas { key, expected, new } => match self.string(key) {
                Err(e) => e,
                Ok(Some((v, _))) if v[..] == expected[..] => {
                    self.put_string(key, new, 0, index);
                    Reply::Integer(1)
                }
                Ok(_) => Reply::Integer(0),
            },
            Cmd::Del { keys } => {
                // Expired keys are purged first: they do not count.
                keys.iter().for_each(|k| self.purge(k, index));
                Reply::Integer(keys.iter().filter(|k| self.remove(k, index).is_some()).count() as i64)
            }
            Cmd::Expire { key, at, cond } => {
                let Some(current) = self.data.live(key).map(|i| i.deadline) else {
                    return Some(Reply::Integer(0));
                };
                let at_ms = (*at).max(0) as u64;
                let allowed = (!cond.nx || current == 0)
                    && (!cond.xx || current != 0)
                    && (!cond.gt || (current != 0 && at_ms > current))
                    && (!cond.lt || current == 0 || at_ms < current);
                if !allowed {
                    return Some(Reply::Integer(0));
                }
                if *at <= 0 || at_ms <= now.max(base) {
                    self.remove(key, index);
                } else {
                    self.set_deadline(key, at_ms, index);
                }
                Reply::Integer(1)
            }
            Cmd::Persist { key } => match self.data.live(key).map(|i| i.deadline) {
                Some(d) if d != 0 => {
                    self.set_deadline(key, 0, index);
                    Reply::Integer(1)
                }
                _ => Reply::Integer(0),
            },
            Cmd::Rename { from, to, nx } => {
                self.purge(to, index);
                if self.data.live(from).is_none() {
                    return Some(Reply::err("no such key"));
                }
                if from == to {
                    return Some(if *nx { Reply::Integer(0) } else { Reply::ok() });
                }
                if *nx && self.data.live(to).is_some() {
                    return Some(Reply::Integer(0));
                }
                let mut item = self.remove(from, index).expect("live above");
                item.version = index;
                self.remove(to, index);
                self.put(to, item);
                if *nx { Reply::Integer(1) } else { Reply::ok() }
            }
            Cmd::Flush => {
                let (clock, scripts) = (self.data.clock, self.data.scripts.clone());
                *self = KvStore::new();
                self.data.clock = clock;
                // Loaded scripts are not data: SCRIPT FLUSH forgets them.
                self.data.scripts = scripts;
                self.data.removed = Arc::new(vec![index; SHARD_COUNT]);
                Reply::ok()
            }
            Cmd::HSet { key, pairs, ok_reply } => {
                if let Err(e) = self.hash_mut(key, index, true) {
                    return Some(e);
                }
                let added = self.with_hash(key, index, |h| pairs.iter().filter(|(f, v)| h.insert(f, v)).count());
                if *ok_reply { Reply::ok() } else { Reply::Integer(added as i64) }
            }
            Cmd::HSetNx { key, field, value } => {
                if let Err(e) = self.hash_mut(key, index, true) {
                    return Some(e);
                }
                let had = hash(self.data.live(key)).ok().flatten().is_some_and(|h| h.fields.contains_key(&field[..]));
                if !had {
                    self.with_hash(key, index, |h| h.insert(field, value));
                }
                Reply::Integer(!had as i64)
            }
            Cmd::HDel { key, fields } => match self.hash_mut(key, index, false) {
                Err(e) => e,
                Ok(false) => Reply::Integer(0),
                Ok(true) => {
                    let n = self.with_hash(key, index, |h| fields.iter().filter(|f| h.remove(f)).count());
                    Reply::Integer(n as i64)
                }
            },
            Cmd::HIncrBy { key, field, by } => {
                // Checked before anything changes, so a refused increment
                // leaves the key (and a WATCH on it) as it was.
                let current = match hash(self.data.live(key)) {
                    Err(e) => return Some(e),
                    Ok(h) => match h.and_then(|h| h.fields.get(&field[..])) {
                        None => 0,
                        Some(v) => match parse_i64(v) {
                            Some(n) => n,
                            None => return Some(Reply::err("hash value is not an integer")),
                        },
                    },
                };
                let Some(next) = current.checked_add(*by) else {
                    return Some(Reply::Error(INCR_OVERFLOW.into()));
                };
                if let Err(e) = self.hash_mut(key, index, true) {
                    return Some(e);
                }
                self.with_hash(key, index, |h| h.insert(field, next.to_string().as_bytes()));
                Reply::Integer(next)
            }
            Cmd::Eval { script: which, keys, args, read_only: false } => {
                let body = match script_body(&self.data, which) {
                    Ok(b) => b,
                    Err(e) => return Some(e),
                };
                let mut call = |args: &[Vec<u8>]| -> Reply {
                    match script_command(args, base) {
                        Ok(cmd) => self.execute(&cmd, index, base),
                        Err(e) => e,
                    }
                };
                let reply = script::run(&body, keys, args, &mut call);
                if let (ScriptRef::Body(b), false) = (which, script::is_compile_error(&reply)) {
                    Arc::make_mut(&mut self.data.scripts).insert(script::sha1_hex(b), body);
                }
                reply
            }
            Cmd::ScriptLoad { body } => {
                if let Err(e) = script::compiles(body) {
                    return Some(e);
                }
                let sha = script::sha1_hex(body);
                Arc::make_mut(&mut self.data.scripts).insert(sha.clone(), Bytes::from(&body[..]));
                Reply::bulk(sha)
            }
            Cmd::ScriptFlush => {
                self.data.scripts = Arc::default();
                Reply::ok()
            }
            _ => return None,
        };
        Some(reply)
    }

    fn set_deadline(&mut self, key: &[u8], deadline: u64, index: u64) {
        if self.past(deadline) {
            self.remove(key, index);
            return;
        }
        self.modify(key, |item| {
            item.deadline = deadline;
            item.version = index;
        });
    }
}

/// The key a single-key write changes, to purge first if expired.
fn write_key(cmd: &Cmd) -> Option<&[u8]> {
    match cmd {
        Cmd::Set { key, .. }
        | Cmd::SetNx { key, .. }
        | Cmd::GetSet { key, .. }
        | Cmd::GetDel { key }
        | Cmd::GetEx { key, .. }
        | Cmd::Append { key, .. }
        | Cmd::SetRange { key, .. }
        | Cmd::IncrBy { key, .. }
        | Cmd::IncrByFloat { key, .. }
        | Cmd::Cas { key, .. }
        | Cmd::Expire { key, .. }
        | Cmd::Persist { key }
        | Cmd::HSet { key, .. }
        | Cmd::HSetNx { key, .. }
        | Cmd::HDel { key, .. }
        | Cmd::HIncrBy { key, .. } => Some(key),
        Cmd::Rename { from, .. } => Some(from),
        _ => None,
    }
}

/// A live item's hash fields, `None` when absent, `-WRONGTYPE` for a string.
fn hash(item: Option<&Item>) -> Result<Option<&Hash>, Reply> {
    match item {
        None => Ok(None),
        Some(Item { value: Value::Hash(h), .. }) => Ok(Some(h)),
        Some(_) => Err(wrongtype()),
    }
}

/// A string and its deadline, `None` when absent, `-WRONGTYPE` for a hash.
fn string(item: Option<&Item>) -> Result<Option<(&Bytes, u64)>, Reply> {
    match item {
        None => Ok(None),
        Some(Item { value: Value::Str(s), deadline, .. }) => Ok(Some((s, *deadline))),
        Some(_) => Err(wrongtype()),
    }
}

/// A script's body, from the call or from the scripts loaded.
fn script_body(data: &Data, which: &ScriptRef) -> Result<Bytes, Reply> {
    match which {
        ScriptRef::Body(b) => Ok(Bytes::from(&b[..])),
        ScriptRef::Sha(sha) => data
            .scripts
            .get(sha)
            .cloned()
            .ok_or_else(|| Reply::Error("NOSCRIPT No matching script. Please use EVAL.".into())),
    }
}

/// A command a script issues: a data command the write role may run,
/// whose effect is the same on every node. Not a script command, not
/// RANDOMKEY (its answer differs between nodes, and a script could write
/// by it), not an admin command (EVAL needs only the write role).
fn script_command(args: &[Vec<u8>], base: u64) -> Result<Cmd, Reply> {
    let cmd = crate::command::parse_data(args, base)?;
    let admin = crate::command::category(args) == crate::command::Category::Admin;
    if cmd.is_script() || admin || matches!(cmd, Cmd::RandomKey) {
        return Err(Reply::err("This Redis command is not allowed from script"));
    }
    Ok(cmd)
}

fn or_reply(r: Result<Reply, Reply>) -> Reply {
    r.unwrap_or_else(|e| e)
}

/// Serves a read command on `data`. A key is absent when its deadline is
/// at or before the store's clock or `at`, the leader's clock the read is
/// judged by (`crate::expiry`; 0 for none). `wall` is the serving node's
/// clock, for the numbers TTL and PTTL answer.
pub(super) fn query(data: &Data, cmd: &Cmd, wall: u64, at: u64) -> Reply {
    let at = data.clock.max(at);
    let now = at.max(wall);
    match cmd {
        Cmd::Get { key } => {
            or_reply(string(data.live_at(key, at)).map(|v| v.map_or(Reply::nil(), |(v, _)| Reply::Value(v.clone()))))
        }
        Cmd::MGet { keys } => Reply::array(
            keys.iter()
                .map(|k| match string(data.live_at(k, at)) {
                    Ok(Some((v, _))) => Reply::Value(v.clone()),
                    _ => Reply::nil(),
                })
                .collect(),
        ),
        Cmd::StrLen { key } => {
            or_reply(string(data.live_at(key, at)).map(|v| Reply::Integer(v.map_or(0, |(v, _)| v.len() as i64))))
        }
        Cmd::GetRange { key, start, end } => or_reply(string(data.live_at(key, at)).map(|v| {
            let v = v.map_or(&b""[..], |(v, _)| &v[..]);
            Reply::bulk(range(v, *start, *end).to_vec())
        })),
        Cmd::Exists { keys } => Reply::Integer(keys.iter().filter(|k| data.live_at(k, at).is_some()).count() as i64),
        Cmd::Ttl { key, unit } => match data.live_at(key, at) {
            None => Reply::Integer(-2),
            Some(i) if i.deadline == 0 => Reply::Integer(-1),
            Some(i) => {
                let ms = i.deadline.saturating_sub(now) as i64;
                Reply::Integer(match unit {
                    Unit::Millis => ms,
                    Unit::Seconds => (ms + 500) / 1000,
                })
            }
        },
        Cmd::ExpireTime { key, unit } => match data.live_at(key, at) {
            None => Reply::Integer(-2),
            Some(i) if i.deadline == 0 => Reply::Integer(-1),
            Some(i) => Reply::Integer(match unit {
                Unit::Millis => i.deadline as i64,
                Unit::Seconds => (i.deadline / 1000) as i64,
            }),
        },
        Cmd::Type { key } => Reply::Simple(data.live_at(key, at).map_or("none", |i| i.value.type_name()).to_string()),
        Cmd::Keys { pattern } => Reply::array(
            data.iter_live_at(at)
                .filter(|(k, _)| glob::matches(pattern, k))
                .map(|(k, _)| Reply::bulk(k.to_vec()))
                .collect(),
        ),
        Cmd::Scan { cursor, pattern, count, kind } => {
            scan(data, at, *cursor, pattern.as_deref(), *count, kind.as_deref())
        }
        Cmd::RandomKey => random_key(data, at),
        Cmd::DbSize => Reply::Integer(data.keys as i64),
        Cmd::HGet { key, field } => or_reply(
            hash(data.live_at(key, at))
                .map(|h| h.and_then(|h| h.fields.get(&field[..])).map_or(Reply::nil(), |v| Reply::Value(v.clone()))),
        ),
        Cmd::HMGet { key, fields } => or_reply(hash(data.live_at(key, at)).map(|h| {
            Reply::array(
                fields
                    .iter()
                    .map(|f| h.and_then(|h| h.fields.get(&f[..])).map_or(Reply::nil(), |v| Reply::Value(v.clone())))
                    .collect(),
            )
        })),
        Cmd::HGetAll { key } => or_reply(hash(data.live_at(key, at)).map(|h| {
            Reply::Map(
                h.iter()
                    .flat_map(|h| h.fields.iter())
                    .map(|(f, v)| (Reply::Value(f.clone()), Reply::Value(v.clone())))
                    .collect(),
            )
        })),
        Cmd::HExists { key, field } => or_reply(
            hash(data.live_at(key, at))
                .map(|h| Reply::Integer(h.is_some_and(|h| h.fields.contains_key(&field[..])) as i64)),
        ),
        Cmd::HLen { key } => {
            or_reply(hash(data.live_at(key, at)).map(|h| Reply::Integer(h.map_or(0, |h| h.fields.len() as i64))))
        }
        Cmd::HKeys { key } => {
            or_reply(hash(data.live_at(key, at)).map(|h| {
                Reply::array(h.iter().flat_map(|h| h.fields.keys()).map(|f| Reply::Value(f.clone())).collect())
            }))
        }
        Cmd::HVals { key } => or_reply(hash(data.live_at(key, at)).map(|h| {
            Reply::array(h.iter().flat_map(|h| h.fields.values()).map(|v| Reply::Value(v.clone())).collect())
        })),
        Cmd::HStrLen { key, field } => or_reply(
            hash(data.live_at(key, at))
                .map(|h| Reply::Integer(h.and_then(|h| h.fields.get(&field[..])).map_or(0, |v| v.len() as i64))),
        ),
        Cmd::HScan { key, pattern, .. } => or_reply(hash(data.live_at(key, at)).map(|h| {
            // One reply holds the whole hash: its cursor is 0 at once, and
            // every field is returned exactly once (Redis does the same for
            // small hashes).
            let mut items = Vec::new();
            for (f, v) in h.iter().flat_map(|h| h.fields.iter()) {
                if pattern.as_ref().is_none_or(|p| glob::matches(p, f)) {
                    items.push(Reply::Value(f.clone()));
                    items.push(Reply::Value(v.clone()));
                }
            }
            Reply::array(vec![Reply::bulk("0"), Reply::array(items)])
        })),
        Cmd::ScriptExists { shas } => Reply::array(
            shas.iter()
                .map(|s| {
                    Reply::Integer(data.scripts.contains_key(&String::from_utf8_lossy(s).to_ascii_lowercase()) as i64)
                })
                .collect(),
        ),
        Cmd::Eval { script: which, keys, args, read_only: true } => {
            let body = match script_body(data, which) {
                Ok(b) => b,
                Err(e) => return e,
            };
            let mut call = |args: &[Vec<u8>]| -> Reply {
                let writes = crate::command::table::lookup(&args[0])
                    .is_some_and(|s| s.class == crate::command::table::Class::Write);
                match script_command(args, wall) {
                    Ok(_) if writes => Reply::err("Write commands are not allowed from read-only scripts."),
                    Ok(cmd) => query(data, &cmd, wall, at),
                    Err(e) => e,
                }
            };
            script::run(&body, keys, args, &mut call)
        }
        _ => Reply::err("internal error: a write served as a read"),
    }
}

/// Redis's GETRANGE: negative offsets count from the end, both ends are
/// inclusive and clamped.
fn range(v: &[u8], start: i64, end: i64) -> &[u8] {
    let len = v.len() as i64;
    if len == 0 {
        return b"";
    }
    let start = if start < 0 { (len + start).max(0) } else { start };
    let end = if end < 0 { len + end } else { end.min(len - 1) };
    if end < 0 || start > end {
        return b"";
    }
    &v[start as usize..=end as usize]
}

/// The cursor is the next shard to read. Keys never move between shards,
/// so a key present from the first call to the last is returned at least
/// once, however the store changes in between (docs/commands.md). `count` is the
/// work per call, in keys looked at, as in Redis; whole shards are read.
fn scan(data: &Data, at: u64, cursor: u64, pattern: Option<&[u8]>, count: usize, kind: Option<&[u8]>) -> Reply {
    let mut keys = Vec::new();
    let mut looked = 0;
    let mut shard = cursor as usize;
    while shard < SHARD_COUNT && looked < count {
        for (k, item) in data.shards.shard(shard) {
            looked += 1;
            let wanted = item.live(at)
                && pattern.is_none_or(|p| glob::matches(p, k))
                && kind.is_none_or(|t| t == item.value.type_name().as_bytes());
            if wanted {
                keys.push(Reply::bulk(k.to_vec()));
            }
        }
        shard += 1;
    }
    let next = if shard >= SHARD_COUNT { 0 } else { shard };
    Reply::array(vec![Reply::bulk(next.to_string()), Reply::array(keys)])
}

fn random_key(data: &Data, at: u64) -> Reply {
    if data.keys == 0 {
        return Reply::nil();
    }
    let start = rand::random_range(0..SHARD_COUNT);
    for i in 0..SHARD_COUNT {
        let shard = data.shards.shard((start + i) % SHARD_COUNT);
        let live: Vec<&Key> = shard.filter(|(_, it)| it.live(at)).map(|(k, _)| k).collect();
        if !live.is_empty() {
            return Reply::bulk(live[rand::random_range(0..live.len())].to_vec());
        }
    }
    Reply::nil()
}
