//! Little-endian binary encoding of the core's values, shared by the peer
//! protocol (`wire`) and the write-ahead log (`wal`).
//!
//! Decoding is the gateway where bytes from a socket or a disk become typed
//! values: every length is checked against its bound before anything is
//! allocated, every tag is checked, and no input makes it panic. Past this
//! point code may trust what it holds.
//!
//! Layouts (all integers little-endian):
//!
//! ```text
//! entry      = term:u64 index:u64 tag:u8 body
//!              tag 0 Noop:       (no body)
//!              tag 1 Command:    len:u32 bytes[len]
//!              tag 2 Membership: membership
//! membership = ids(voters) ids(outgoing) ids(learners)
//!              count:u32 { id:u64 str(raft) str(client) }[count]
//! ids        = count:u32 id:u64[count]
//! str        = len:u16 utf8[len]
//! hard state = term:u64 vote:u64 (0 = none) commit:u64
//! snap meta  = index:u64 term:u64 membership
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use byteorder::{ByteOrder, LittleEndian};

use crate::config::{ADDR_BYTES_MAX, COMMAND_BYTES_MAX, MEMBERS_MAX};
use crate::raft::{Addrs, Entry, HardState, Index, Membership, NodeId, Payload, SnapshotMeta, Term};

/// Why bytes could not be decoded, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    /// Byte offset into the decoded buffer.
    pub offset: usize,
    pub kind: DecodeErrorKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeErrorKind {
    /// The buffer ended in the middle of `what`.
    Truncated { what: &'static str },
    /// A length prefix over its bound.
    TooLarge { what: &'static str, len: usize, max: usize },
    /// A value no encoder writes: an unknown tag, bad UTF-8, a broken invariant.
    Invalid { what: &'static str, detail: String },
    /// Bytes left over after a complete value.
    Trailing { len: usize },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            DecodeErrorKind::Truncated { what } => {
                write!(f, "truncated {what} at byte {}", self.offset)
            }
            DecodeErrorKind::TooLarge { what, len, max } => {
                write!(f, "{what} of {len} bytes at byte {} exceeds the limit of {max}", self.offset)
            }
            DecodeErrorKind::Invalid { what, detail } => {
                write!(f, "invalid {what} at byte {}: {detail}", self.offset)
            }
            DecodeErrorKind::Trailing { len } => {
                write!(f, "{len} unexpected bytes after the value at byte {}", self.offset)
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// A cursor over a byte slice that never reads past its end.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn error(&self, kind: DecodeErrorKind) -> DecodeError {
        DecodeError { offset: self.pos, kind }
    }

    pub fn invalid(&self, what: &'static str, detail: impl Into<String>) -> DecodeError {
        self.error(DecodeErrorKind::Invalid { what, detail: detail.into() })
    }

    /// Fails unless every byte was consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            len => Err(self.error(DecodeErrorKind::Trailing { len })),
        }
    }

    pub fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < len {
            return Err(self.error(DecodeErrorKind::Truncated { what }));
        }
        let out = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(out)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(LittleEndian::read_u16(self.take(2, what)?))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(LittleEndian::read_u32(self.take(4, what)?))
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(LittleEndian::read_u64(self.take(8, what)?))
    }

    pub fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(self.invalid(what, format!("boolean byte {b}"))),
        }
    }

    /// A length prefix, checked against `max` before the caller allocates.
    pub fn len_u32(&mut self, what: &'static str, max: usize) -> Result<usize, DecodeError> {
        let at = self.pos;
        let len = self.u32(what)? as usize;
        if len > max {
            return Err(DecodeError { offset: at, kind: DecodeErrorKind::TooLarge { what, len, max } });
        }
        Ok(len)
    }

    /// A u32-length-prefixed byte string of at most `max` bytes.
    pub fn bytes_u32(&mut self, what: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.len_u32(what, max)?;
        self.take(len, what)
    }

    pub fn term(&mut self) -> Result<Term, DecodeError> {
        self.u64("term").map(Term)
    }

    pub fn index(&mut self) -> Result<Index, DecodeError> {
        self.u64("index").map(Index)
    }

    /// A node id that must name a node (not 0).
    pub fn node_id(&mut self, what: &'static str) -> Result<NodeId, DecodeError> {
        match self.u64(what)? {
            0 => Err(self.invalid(what, "node id 0")),
            id => Ok(NodeId(id)),
        }
    }

    fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let at = self.pos;
        let len = self.u16(what)? as usize;
        if len > ADDR_BYTES_MAX {
            return Err(DecodeError { offset: at, kind: DecodeErrorKind::TooLarge { what, len, max: ADDR_BYTES_MAX } });
        }
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.invalid(what, "not UTF-8"))
    }

    fn ids(&mut self, what: &'static str) -> Result<BTreeSet<NodeId>, DecodeError> {
        let count = self.len_u32(what, MEMBERS_MAX)?;
        let mut ids = BTreeSet::new();
        for _ in 0..count {
            let id = self.node_id(what)?;
            if !ids.insert(id) {
                return Err(self.invalid(what, format!("node {id} listed twice")));
            }
        }
        Ok(ids)
    }

    pub fn membership(&mut self) -> Result<Membership, DecodeError> {
        let voters = self.ids("voters")?;
        let outgoing = self.ids("outgoing voters")?;
        let learners = self.ids("learners")?;
        let count = self.len_u32("member addresses", MEMBERS_MAX)?;
        let mut addrs = BTreeMap::new();
        for _ in 0..count {
            let id = self.node_id("member id")?;
            let raft = self.string("raft address")?;
            let client = self.string("client address")?;
            addrs.insert(id, Addrs { raft, client });
        }
        let m = Membership { voters, outgoing, learners, addrs };
        m.validate().map_err(|e| self.invalid("membership", e))?;
        Ok(m)
    }

    pub fn entry(&mut self) -> Result<Entry, DecodeError> {
        let term = self.term()?;
        let index = self.index()?;
        if index == Index::ZERO {
            return Err(self.invalid("entry", "index 0"));
        }
        let payload = match self.u8("entry tag")? {
            0 => Payload::Noop,
            1 => Payload::command(self.bytes_u32("command", COMMAND_BYTES_MAX)?.to_vec()),
            2 => Payload::Membership(self.membership()?),
            tag => return Err(self.invalid("entry tag", format!("unknown tag {tag}"))),
        };
        Ok(Entry { term, index, payload })
    }

    pub fn hard_state(&mut self) -> Result<HardState, DecodeError> {
        let term = self.term()?;
        let vote = match self.u64("vote")? {
            0 => None,
            id => Some(NodeId(id)),
        };
        let commit = self.index()?;
        Ok(HardState { term, vote, commit })
    }

    pub fn snapshot_meta(&mut self) -> Result<SnapshotMeta, DecodeError> {
        let index = self.index()?;
        let term = self.term()?;
        let membership = self.membership()?;
        Ok(SnapshotMeta { index, term, membership })
    }
}

/// Appends encodings to a byte vector. Encoding cannot fail: values inside the
/// process were validated on the way in, and bounds are asserted.
pub struct Writer<'a> {
    pub buf: &'a mut Vec<u8>,
}

impl<'a> Writer<'a> {
    pub fn new(buf: &'a mut Vec<u8>) -> Writer<'a> {
        Writer { buf }
    }

    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn bool(&mut self, v: bool) {
        self.u8(v as u8);
    }

    pub fn len_u32(&mut self, len: usize) {
        let len = u32::try_from(len).expect("length fits in u32: bounds are checked on entry");
        self.u32(len);
    }

    pub fn bytes_u32(&mut self, bytes: &[u8]) {
        self.len_u32(bytes.len());
        self.buf.extend_from_slice(bytes);
    }

    fn string(&mut self, s: &str) {
        assert!(s.len() <= ADDR_BYTES_MAX, "address of {} bytes", s.len());
        self.u16(s.len() as u16);
        self.buf.extend_from_slice(s.as_bytes());
    }

    fn ids(&mut self, ids: &BTreeSet<NodeId>) {
        self.len_u32(ids.len());
        for id in ids {
            self.u64(id.0);
        }
    }

    pub fn membership(&mut self, m: &Membership) {
        self.ids(&m.voters);
        self.ids(&m.outgoing);
        self.ids(&m.learners);
        self.len_u32(m.addrs.len());
        for (id, addrs) in &m.addrs {
            self.u64(id.0);
            self.string(&addrs.raft);
            self.string(&addrs.client);
        }
    }

    pub fn entry(&mut self, e: &Entry) {
        self.u64(e.term.0);
        self.u64(e.index.0);
        match &e.payload {
            Payload::Noop => self.u8(0),
            Payload::Command(data) => {
                self.u8(1);
                self.bytes_u32(data);
            }
            Payload::Membership(m) => {
                self.u8(2);
                self.membership(m);
            }
        }
    }

    pub fn hard_state(&mut self, hs: &HardState) {
        self.u64(hs.term.0);
        self.u64(hs.vote.map_or(0, |v| v.0));
        self.u64(hs.commit.0);
    }

    pub fn snapshot_meta(&mut self, meta: &SnapshotMeta) {
        self.u64(meta.index.0);
        self.u64(meta.term.0);
        self.membership(&meta.membership);
    }
}

/// Bytes an entry takes when encoded; used for message and record size budgets.
pub fn entry_encoded_bytes(e: &Entry) -> usize {
    const HEADER_BYTES: usize = 8 + 8 + 1;
    HEADER_BYTES
        + match &e.payload {
            Payload::Noop => 0,
            Payload::Command(data) => 4 + data.len(),
            Payload::Membership(m) => {
                let mut buf = Vec::new();
                Writer::new(&mut buf).membership(m);
                buf.len()
            }
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_membership() -> Membership {
        let mut m = Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]);
        m.outgoing = [NodeId(1), NodeId(2)].into_iter().collect();
        m.learners.insert(NodeId(9));
        m.addrs.insert(NodeId(9), Addrs { raft: "127.0.0.1:7009".into(), client: "127.0.0.1:6009".into() });
        m
    }

    fn sample_entries() -> Vec<Entry> {
        vec![
            Entry { term: Term(1), index: Index(1), payload: Payload::Noop },
            Entry { term: Term(2), index: Index(2), payload: Payload::command(b"SET a b".to_vec()) },
            Entry { term: Term(3), index: Index(3), payload: Payload::Membership(sample_membership()) },
        ]
    }

    #[test]
    fn entries_round_trip_and_sizes_agree() {
        for e in sample_entries() {
            let mut buf = Vec::new();
            Writer::new(&mut buf).entry(&e);
            assert_eq!(buf.len(), entry_encoded_bytes(&e));
            let mut r = Reader::new(&buf);
            assert_eq!(r.entry().unwrap(), e);
            r.finish().unwrap();
        }
    }

    #[test]
    fn hard_state_and_meta_round_trip() {
        let hs = HardState { term: Term(7), vote: Some(NodeId(3)), commit: Index(42) };
        let meta = SnapshotMeta { index: Index(10), term: Term(4), membership: sample_membership() };
        let mut buf = Vec::new();
        Writer::new(&mut buf).hard_state(&hs);
        Writer::new(&mut buf).snapshot_meta(&meta);
        let mut r = Reader::new(&buf);
        assert_eq!(r.hard_state().unwrap(), hs);
        assert_eq!(r.snapshot_meta().unwrap(), meta);
        r.finish().unwrap();
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        for e in sample_entries() {
            let mut buf = Vec::new();
            Writer::new(&mut buf).entry(&e);
            for cut in 0..buf.len() {
                assert!(Reader::new(&buf[..cut]).entry().is_err(), "cut at {cut}");
            }
        }
    }

    #[test]
    fn oversized_length_is_refused_before_allocating() {
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf);
        w.u64(1);
        w.u64(1);
        w.u8(1);
        w.u32(u32::MAX);
        let err = Reader::new(&buf).entry().unwrap_err();
        assert!(matches!(err.kind, DecodeErrorKind::TooLarge { .. }), "{err}");
        assert_eq!(err.offset, 17);
    }

    #[test]
    fn invalid_membership_is_refused() {
        let mut m = sample_membership();
        m.learners.insert(NodeId(1));
        let mut buf = Vec::new();
        Writer::new(&mut buf).membership(&m);
        let err = Reader::new(&buf).membership().unwrap_err();
        assert!(err.to_string().contains("both a learner and a voter"), "{err}");
    }

    #[test]
    fn random_bytes_never_panic() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(7);
        for _ in 0..20_000 {
            let len = rng.random_range(0..64);
            let buf: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let _ = Reader::new(&buf).entry();
            let _ = Reader::new(&buf).membership();
            let _ = Reader::new(&buf).snapshot_meta();
        }
    }
}
