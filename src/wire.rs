//! The peer protocol: Raft messages in length-prefixed, checksummed frames
//! over TCP. Decoding never blocks, never panics and never allocates more than
//! a frame's declared length, which is checked against its bound first.
//!
//! A connection starts with the handshake of `net::handshake` (which names
//! both ends and authenticates them); then frames, one way, from the dialer
//! (integers little-endian):
//!
//! ```text
//! len u32 (bytes after this field) | crc u32 (CRC32 of kind+body) | kind u8 | body
//! body = term u64, then by kind:
//!   1 PreVote             last_index u64, last_term u64
//!   2 PreVoteResp         granted u8
//!   3 Vote                last_index u64, last_term u64, transfer u8
//!   4 VoteResp            granted u8
//!   5 Append              prev_index u64, prev_term u64, commit u64, count u32, entry*count
//!   6 AppendResp          index u64, rejected u8, hint_index u64, hint_term u64, incarnation u64
//!   7 Heartbeat           commit u64, read_round u64
//!   8 HeartbeatResp       read_round u64
//!   9 InstallSnapshot     snapshot meta, offset u64, len u32, data, done u8
//!  10 InstallSnapshotResp index u64, next_offset u64, installed u8
//!  11 TimeoutNow          last_index u64, incarnation u64
//!  12 Propose             count u32, (len u32, command)*count
//!  13 ReadIndex           incarnation u64, seq u64 (the read's id)
//!  14 ReadIndexResp       incarnation u64, seq u64, present u8, index u64, clock u64
//! ```
//! Entries and snapshot metadata use `crate::codec`. `from` and `to` are not
//! in frames: they are the handshake's. The frame format belongs to the
//! handshake's protocol version.

use std::fmt;

use crate::codec::{DecodeError, Reader, Writer};
use crate::config::{
    APPEND_ENTRIES_MAX, COMMAND_BYTES_MAX, FRAME_BYTES_MAX, PROPOSE_COMMANDS_MAX, SNAPSHOT_CHUNK_BYTES_MAX,
};
use crate::raft::{AppendResp, Body, Index, Message, NodeId, ReadId, Term};

/// len + crc + kind.
const FRAME_HEADER_BYTES: usize = 4 + 4 + 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireError {
    FrameTooLarge { len: usize },
    FrameTooSmall { len: usize },
    Checksum { expected: u32, got: u32 },
    UnknownKind(u8),
    Body(DecodeError),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::FrameTooLarge { len } => write!(f, "frame of {len} bytes exceeds {FRAME_BYTES_MAX}"),
            WireError::FrameTooSmall { len } => write!(f, "frame of {len} bytes is shorter than any message"),
            WireError::Checksum { expected, got } => write!(f, "frame checksum {got:#010x}, expected {expected:#010x}"),
            WireError::UnknownKind(k) => write!(f, "unknown frame kind {k}"),
            WireError::Body(e) => write!(f, "bad frame body: {e}"),
        }
    }
}

impl std::error::Error for WireError {}

fn kind_of(body: &Body) -> u8 {
    match body {
        Body::PreVote { .. } => 1,
        Body::PreVoteResp { .. } => 2,
        Body::Vote { .. } => 3,
        Body::VoteResp { .. } => 4,
        Body::Append { .. } => 5,
        Body::AppendResp(_) => 6,
        Body::Heartbeat { .. } => 7,
        Body::HeartbeatResp { .. } => 8,
        Body::InstallSnapshot { .. } => 9,
        Body::InstallSnapshotResp { .. } => 10,
        Body::TimeoutNow { .. } => 11,
        Body::Propose { .. } => 12,
        Body::ReadIndex { .. } => 13,
        Body::ReadIndexResp { .. } => 14,
    }
}

fn encode_body(w: &mut Writer<'_>, body: &Body) {
    match body {
        Body::PreVote { last_index, last_term } => {
            w.u64(last_index.0);
            w.u64(last_term.0);
        }
        Body::PreVoteResp { granted } | Body::VoteResp { granted } => w.bool(*granted),
        Body::Vote { last_index, last_term, transfer } => {
            w.u64(last_index.0);
            w.u64(last_term.0);
            w.bool(*transfer);
        }
        Body::Append { prev_index, prev_term, entries, commit } => {
            w.u64(prev_index.0);
            w.u64(prev_term.0);
            w.u64(commit.0);
            w.len_u32(entries.len());
            for e in entries {
                w.entry(e);
            }
        }
        Body::AppendResp(r) => {
            w.u64(r.index.0);
            w.bool(r.rejected);
            w.u64(r.hint_index.0);
            w.u64(r.hint_term.0);
            w.u64(r.incarnation);
        }
        Body::Heartbeat { commit, read_round } => {
            w.u64(commit.0);
            w.u64(*read_round);
        }
        Body::HeartbeatResp { read_round } => w.u64(*read_round),
        Body::InstallSnapshot { meta, offset, data, done } => {
            w.snapshot_meta(meta);
            w.u64(*offset);
            w.bytes_u32(data);
            w.bool(*done);
        }
        Body::InstallSnapshotResp { index, next_offset, installed } => {
            w.u64(index.0);
            w.u64(*next_offset);
            w.bool(*installed);
        }
        Body::TimeoutNow { last_index, incarnation } => {
            w.u64(last_index.0);
            w.u64(*incarnation);
        }
        Body::Propose { commands } => {
            w.len_u32(commands.len());
            for c in commands {
                w.bytes_u32(c);
            }
        }
        Body::ReadIndex { request } => {
            w.u64(request.incarnation);
            w.u64(request.seq);
        }
        Body::ReadIndexResp { request, index, clock } => {
            w.u64(request.incarnation);
            w.u64(request.seq);
            w.bool(index.is_some());
            w.u64(index.map_or(0, |i| i.0));
            w.u64(*clock);
        }
    }
}

/// Appends the frame for `m` to `out`. The message must respect the bounds
/// (the core and the node guarantee it; checked here as a bug).
pub fn encode_frame(m: &Message, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 8]);
    let mut w = Writer::new(out);
    w.u8(kind_of(&m.body));
    w.u64(m.term.0);
    encode_body(&mut w, &m.body);
    let len = out.len() - start - 4;
    assert!(len + 4 <= FRAME_BYTES_MAX, "frame of {} bytes for {m}", len + 4);
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn decode_body(r: &mut Reader<'_>, kind: u8) -> Result<Body, DecodeError> {
    let index = |r: &mut Reader<'_>| r.u64("index").map(Index);
    let term = |r: &mut Reader<'_>| r.u64("term").map(Term);
    Ok(match kind {
        1 => Body::PreVote { last_index: index(r)?, last_term: term(r)? },
        2 => Body::PreVoteResp { granted: r.bool("granted")? },
        3 => Body::Vote { last_index: index(r)?, last_term: term(r)?, transfer: r.bool("transfer")? },
        4 => Body::VoteResp { granted: r.bool("granted")? },
        5 => {
            let (prev_index, prev_term, commit) = (index(r)?, term(r)?, index(r)?);
            let count = r.len_u32("entry count", APPEND_ENTRIES_MAX)?;
            let mut entries = Vec::with_capacity(count.min(64));
            for _ in 0..count {
                entries.push(r.entry()?);
            }
            Body::Append { prev_index, prev_term, entries, commit }
        }
        6 => Body::AppendResp(AppendResp {
            index: index(r)?,
            rejected: r.bool("rejected")?,
            hint_index: index(r)?,
            hint_term: term(r)?,
            incarnation: r.u64("incarnation")?,
        }),
        7 => Body::Heartbeat { commit: index(r)?, read_round: r.u64("read round")? },
        8 => Body::HeartbeatResp { read_round: r.u64("read round")? },
        9 => Body::InstallSnapshot {
            meta: r.snapshot_meta()?,
            offset: r.u64("offset")?,
            data: r.bytes_u32("snapshot chunk", SNAPSHOT_CHUNK_BYTES_MAX)?.to_vec(),
            done: r.bool("done")?,
        },
        10 => Body::InstallSnapshotResp {
            index: index(r)?,
            next_offset: r.u64("next offset")?,
            installed: r.bool("installed")?,
        },
        11 => Body::TimeoutNow { last_index: index(r)?, incarnation: r.u64("incarnation")? },
        12 => {
            let count = r.len_u32("command count", PROPOSE_COMMANDS_MAX)?;
            let mut commands = Vec::with_capacity(count.min(64));
            for _ in 0..count {
                commands.push(r.bytes_u32("command", COMMAND_BYTES_MAX)?.to_vec());
            }
            Body::Propose { commands }
        }
        13 => Body::ReadIndex { request: read_id(r)? },
        14 => {
            let request = read_id(r)?;
            let present = r.bool("present")?;
            let i = index(r)?;
            Body::ReadIndexResp { request, index: present.then_some(i), clock: r.u64("clock")? }
        }
        _ => unreachable!("kinds are checked before decoding"),
    })
}

fn read_id(r: &mut Reader<'_>) -> Result<ReadId, DecodeError> {
    Ok(ReadId { incarnation: r.u64("read incarnation")?, seq: r.u64("read seq")? })
}

/// Decodes one frame from the front of `buf`, for a connection whose
/// handshake said `from` and `to`. `Ok(None)`: more bytes are needed.
/// `Ok(Some((message, used)))`: a frame of `used` bytes.
pub fn decode_frame(buf: &[u8], from: NodeId, to: NodeId) -> Result<Option<(Message, usize)>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
    if len + 4 > FRAME_BYTES_MAX {
        return Err(WireError::FrameTooLarge { len: len + 4 });
    }
    // crc, kind and term at least.
    if len < FRAME_HEADER_BYTES - 4 + 8 {
        return Err(WireError::FrameTooSmall { len: len + 4 });
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    let expected = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    let payload = &buf[8..4 + len];
    let got = crc32fast::hash(payload);
    if got != expected {
        return Err(WireError::Checksum { expected, got });
    }
    let kind = payload[0];
    if !(1..=14).contains(&kind) {
        return Err(WireError::UnknownKind(kind));
    }
    let mut r = Reader::new(&payload[1..]);
    let term = r.u64("term").map(Term).map_err(WireError::Body)?;
    let body = decode_body(&mut r, kind).map_err(WireError::Body)?;
    r.finish().map_err(WireError::Body)?;
    Ok(Some((Message { from, to, term, body }, 4 + len)))
}

#[cfg(test)]
mod tests;
