//! Client sessions (the Raft thesis, §6.3): a write that reaches the log
//! twice takes effect once.
//!
//! A node proposes every client write with an id: the node, its process
//! (incarnation), a sequence number, and a floor: the lowest sequence
//! number that process was still waiting on when it proposed. When the
//! leader changes, the node proposes what it still waits on again, with the
//! same ids, so the log may hold a write twice. Applying an entry, the
//! store looks its id up here:
//!
//! - seen before: a no-op that answers what the first one answered;
//! - below its session's floor: a no-op (the process answered or gave up
//!   on it before proposing a later write, which was applied first: so a
//!   write a client was told timed out can never take effect after the
//!   writes that client sent next);
//! - otherwise the write is applied and its reply kept until the floor
//!   passes it.
//!
//! Everything here is replicated state: every node decides alike, and
//! snapshots keep it. It stays small: replies are kept only for writes
//! their node still waits on, and the least recently used session goes
//! when there are more than [`SESSIONS_MAX`].

use std::collections::BTreeMap;

use crate::codec::{DecodeError, Reader, Writer};
use crate::resp::Reply;

/// Sessions kept; a process that proposed nothing while this many others
/// did is forgotten (its late duplicates would apply again).
pub const SESSIONS_MAX: usize = 4096;
/// Replies kept per session. A process waiting on more writes than this
/// has its oldest treated as answered (their duplicates are no-ops).
pub const RESULTS_MAX: usize = 1 << 16;
/// Nesting of a kept reply (a script's result is at most 64 deep).
const REPLY_DEPTH_MAX: usize = 80;

/// The process that proposed a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    pub node: u64,
    pub incarnation: u64,
}

/// A write's id, as its entry carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Once {
    pub origin: Origin,
    pub seq: u64,
    /// Every write of `origin` numbered below this was answered (or given
    /// up) before this one was proposed.
    pub floor: u64,
}

/// What the sessions know of a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Not applied yet.
    New,
    /// Applied; this was its reply.
    Done(Reply),
    /// Below its session's floor: applied long ago, or never to be.
    Passed,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sessions {
    map: BTreeMap<Origin, Session>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Session {
    floor: u64,
    /// The log index of the session's last entry, for eviction.
    last_index: u64,
    results: BTreeMap<u64, Reply>,
}

impl Session {
    fn raise_floor(&mut self, floor: u64) {
        if floor > self.floor {
            self.floor = floor;
            self.results = self.results.split_off(&floor);
        }
    }
}

impl Sessions {
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// What is known of `origin`'s write `seq`, without changing anything.
    pub fn seen(&self, origin: Origin, seq: u64) -> Seen {
        let Some(s) = self.map.get(&origin) else { return Seen::New };
        match s.results.get(&seq) {
            Some(reply) => Seen::Done(reply.clone()),
            None if seq < s.floor => Seen::Passed,
            None => Seen::New,
        }
    }

    /// Applying the entry of `once` at `index`: moves the session's floor
    /// and says whether the write is new.
    pub fn admit(&mut self, once: &Once, index: u64) -> Seen {
        if !self.map.contains_key(&once.origin) && self.map.len() >= SESSIONS_MAX {
            let oldest = self.map.iter().min_by_key(|(o, s)| (s.last_index, **o)).map(|(o, _)| *o);
            if let Some(o) = oldest {
                self.map.remove(&o);
            }
        }
        let session = self.map.entry(once.origin).or_default();
        session.last_index = index;
        session.raise_floor(once.floor);
        match session.results.get(&once.seq) {
            Some(reply) => Seen::Done(reply.clone()),
            None if once.seq < session.floor => Seen::Passed,
            None => Seen::New,
        }
    }

    /// The write `once`, admitted as new, was applied with `reply`.
    pub fn record(&mut self, once: &Once, reply: &Reply) {
        let Some(session) = self.map.get_mut(&once.origin) else { return };
        session.results.insert(once.seq, reply.clone());
        if session.results.len() > RESULTS_MAX
            && let Some((&lowest, _)) = session.results.first_key_value()
        {
            session.raise_floor(lowest + 1);
        }
    }

    pub fn encode_into(&self, w: &mut Writer<'_>) {
        w.len_u32(self.map.len());
        for (origin, s) in &self.map {
            w.u64(origin.node);
            w.u64(origin.incarnation);
            w.u64(s.floor);
            w.u64(s.last_index);
            w.len_u32(s.results.len());
            for (seq, reply) in &s.results {
                w.u64(*seq);
                encode_reply(w, reply);
            }
        }
    }

    pub fn decode_from(r: &mut Reader<'_>) -> Result<Sessions, DecodeError> {
        let mut sessions = Sessions::default();
        let n = r.len_u32("session count", SESSIONS_MAX)?;
        for _ in 0..n {
            let origin = Origin { node: r.u64("session node")?, incarnation: r.u64("session incarnation")? };
            let floor = r.u64("session floor")?;
            let last_index = r.u64("session index")?;
            let count = r.len_u32("session replies", RESULTS_MAX)?;
            let mut results = BTreeMap::new();
            for _ in 0..count {
                let seq = r.u64("reply seq")?;
                if seq < floor || results.insert(seq, decode_reply(r, 0)?).is_some() {
                    return Err(r.invalid("session reply", format!("seq {seq} kept twice or below floor {floor}")));
                }
            }
            if sessions.map.insert(origin, Session { floor, last_index, results }).is_some() {
                return Err(
                    r.invalid("session", format!("node {} incarnation {} twice", origin.node, origin.incarnation))
                );
            }
        }
        Ok(sessions)
    }
}

const R_SIMPLE: u8 = 1;
const R_ERROR: u8 = 2;
const R_INTEGER: u8 = 3;
const R_NULL: u8 = 4;
const R_BULK: u8 = 5;
const R_NULL_ARRAY: u8 = 6;
const R_ARRAY: u8 = 7;
const R_MAP: u8 = 8;
const R_SET: u8 = 9;
const R_VERBATIM: u8 = 10;
const R_BOOL: u8 = 11;
const R_DOUBLE: u8 = 12;
const R_BIG_NUMBER: u8 = 13;

fn encode_reply(w: &mut Writer<'_>, reply: &Reply) {
    let list = |w: &mut Writer<'_>, tag: u8, items: &[Reply]| {
        w.u8(tag);
        w.len_u32(items.len());
        items.iter().for_each(|i| encode_reply(w, i));
    };
    match reply {
        Reply::Simple(s) => {
            w.u8(R_SIMPLE);
            w.bytes_u32(s.as_bytes());
        }
        Reply::Error(s) => {
            w.u8(R_ERROR);
            w.bytes_u32(s.as_bytes());
        }
        Reply::Verbatim(s) => {
            w.u8(R_VERBATIM);
            w.bytes_u32(s.as_bytes());
        }
        Reply::BigNumber(s) => {
            w.u8(R_BIG_NUMBER);
            w.bytes_u32(s.as_bytes());
        }
        Reply::Bool(b) => {
            w.u8(R_BOOL);
            w.u8(*b as u8);
        }
        Reply::Double(x) => {
            w.u8(R_DOUBLE);
            w.u64(x.to_bits());
        }
        Reply::Integer(i) => {
            w.u8(R_INTEGER);
            w.u64(*i as u64);
        }
        Reply::Bulk(None) => w.u8(R_NULL),
        Reply::Bulk(Some(b)) => {
            w.u8(R_BULK);
            w.bytes_u32(b);
        }
        Reply::Value(b) => {
            w.u8(R_BULK);
            w.bytes_u32(b);
        }
        Reply::Array(None) => w.u8(R_NULL_ARRAY),
        Reply::Array(Some(items)) => list(w, R_ARRAY, items),
        Reply::Set(items) => list(w, R_SET, items),
        Reply::Map(pairs) => {
            w.u8(R_MAP);
            w.len_u32(pairs.len());
            for (k, v) in pairs {
                encode_reply(w, k);
                encode_reply(w, v);
            }
        }
    }
}

fn decode_reply(r: &mut Reader<'_>, depth: usize) -> Result<Reply, DecodeError> {
    if depth > REPLY_DEPTH_MAX {
        return Err(r.invalid("kept reply", format!("nested deeper than {REPLY_DEPTH_MAX}")));
    }
    // Every element takes at least a byte, so a count above the bytes left
    // is a lie, caught before anything is allocated for it.
    let max = r.remaining();
    let text = |r: &mut Reader<'_>| -> Result<String, DecodeError> {
        let raw = r.bytes_u32("reply text", usize::MAX)?;
        String::from_utf8(raw.to_vec()).map_err(|_| r.invalid("reply text", "not UTF-8"))
    };
    let list = |r: &mut Reader<'_>| -> Result<Vec<Reply>, DecodeError> {
        let n = r.len_u32("reply elements", max)?;
        (0..n).map(|_| decode_reply(r, depth + 1)).collect()
    };
    Ok(match r.u8("reply kind")? {
        R_SIMPLE => Reply::Simple(text(r)?),
        R_ERROR => Reply::Error(text(r)?),
        R_VERBATIM => Reply::Verbatim(text(r)?),
        R_BIG_NUMBER => Reply::BigNumber(text(r)?),
        R_BOOL => match r.u8("reply boolean")? {
            0 => Reply::Bool(false),
            1 => Reply::Bool(true),
            other => return Err(r.invalid("reply boolean", format!("{other} is neither 0 nor 1"))),
        },
        R_DOUBLE => Reply::Double(f64::from_bits(r.u64("reply double")?)),
        R_INTEGER => Reply::Integer(r.u64("reply integer")? as i64),
        R_NULL => Reply::Bulk(None),
        R_BULK => Reply::Bulk(Some(r.bytes_u32("reply bulk", usize::MAX)?.to_vec())),
        R_NULL_ARRAY => Reply::Array(None),
        R_ARRAY => Reply::Array(Some(list(r)?)),
        R_SET => Reply::Set(list(r)?),
        R_MAP => {
            let n = r.len_u32("reply pairs", max)?;
            let mut pairs = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                pairs.push((decode_reply(r, depth + 1)?, decode_reply(r, depth + 1)?));
            }
            Reply::Map(pairs)
        }
        other => return Err(r.invalid("reply kind", format!("unknown kind {other}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn once(node: u64, seq: u64, floor: u64) -> Once {
        Once { origin: Origin { node, incarnation: 7 }, seq, floor }
    }

    #[test]
    fn a_write_applies_once_and_its_duplicate_answers_the_first_reply() {
        let mut s = Sessions::default();
        assert_eq!(s.admit(&once(1, 5, 5), 10), Seen::New);
        s.record(&once(1, 5, 5), &Reply::Integer(3));
        assert_eq!(s.admit(&once(1, 5, 5), 11), Seen::Done(Reply::Integer(3)));
        assert_eq!(s.seen(once(1, 5, 0).origin, 5), Seen::Done(Reply::Integer(3)));
        // Another node's write with the same number is its own.
        assert_eq!(s.admit(&once(2, 5, 5), 12), Seen::New);
        // The floor passing a write forgets its reply; a late copy is a no-op.
        assert_eq!(s.admit(&once(1, 6, 6), 13), Seen::New);
        assert_eq!(s.admit(&once(1, 5, 5), 14), Seen::Passed);
        // A write the node gave up on, arriving after a later write: no-op.
        assert_eq!(s.admit(&once(1, 9, 9), 15), Seen::New);
        assert_eq!(s.admit(&once(1, 8, 8), 16), Seen::Passed);
        // A floor never goes back.
        assert_eq!(s.admit(&once(1, 12, 3), 17), Seen::New);
        assert_eq!(s.seen(once(1, 0, 0).origin, 7), Seen::Passed);
    }

    #[test]
    fn sessions_and_replies_stay_bounded() {
        let mut s = Sessions::default();
        for node in 0..SESSIONS_MAX as u64 + 10 {
            s.admit(&once(node, 0, 0), node + 1);
        }
        assert_eq!(s.len(), SESSIONS_MAX);
        // The least recently used went.
        assert_eq!(s.seen(once(0, 0, 0).origin, 0), Seen::New);
        let mut s = Sessions::default();
        for seq in 0..RESULTS_MAX as u64 + 3 {
            s.admit(&once(1, seq, 0), seq);
            s.record(&once(1, seq, 0), &Reply::ok());
        }
        assert_eq!(s.map[&once(1, 0, 0).origin].results.len(), RESULTS_MAX);
        // Dropped replies still count as applied.
        assert_eq!(s.admit(&once(1, 0, 0), 1 << 20), Seen::Passed);
    }

    #[test]
    fn sessions_round_trip_and_reject_damage() {
        let mut s = Sessions::default();
        let replies = [
            Reply::ok(),
            Reply::Error("ERR x".into()),
            Reply::Integer(-4),
            Reply::Bulk(None),
            Reply::Bulk(Some(b"v".to_vec())),
            Reply::Array(None),
            Reply::Array(Some(vec![Reply::Integer(1), Reply::Array(Some(vec![Reply::Bulk(None)]))])),
            Reply::Map(vec![(Reply::Simple("k".into()), Reply::Integer(2))]),
            Reply::Set(vec![Reply::Simple("a".into())]),
            Reply::Verbatim("text".into()),
            Reply::Bool(true),
            Reply::Bool(false),
            Reply::Double(-2.5),
            Reply::Double(f64::INFINITY),
            Reply::BigNumber("-123456789012345678901234567890".into()),
        ];
        for (seq, reply) in replies.iter().enumerate() {
            s.admit(&once(3, seq as u64, 0), 1);
            s.record(&once(3, seq as u64, 0), reply);
        }
        s.admit(&once(4, 0, 9), 2);
        let mut buf = Vec::new();
        s.encode_into(&mut Writer::new(&mut buf));
        let mut r = Reader::new(&buf);
        assert_eq!(Sessions::decode_from(&mut r).unwrap(), s);
        r.finish().unwrap();
        for cut in 0..buf.len() {
            let mut r = Reader::new(&buf[..cut]);
            assert!(Sessions::decode_from(&mut r).and_then(|_| r.finish()).is_err(), "cut at {cut}");
        }
    }
}
