//! What a node writes into the log for a client's write: the operation, and
//! who is waiting for its result. Every node applies every entry; only the
//! node named here answers, and only in the process that proposed it (the
//! incarnation changes at every start, so a restarted node never mistakes an
//! old entry for a new request).
//!
//! ```text
//! envelope = version:u8 (1) origin:u64 incarnation:u64 seq:u64 write-op
//!          | version:u8 (2) kind:u8 (1: the cluster's id) id:[16]
//! ```
//!
//! Version 2 entries are the node's own: the cluster id its first leader
//! proposes (`crate::identity`); every node applies them alike.

use crate::codec::{DecodeError, Reader, Writer};
use crate::identity::ClusterId;
use crate::kv::WriteOp;
use crate::raft::NodeId;

const VERSION: u8 = 1;
const VERSION_NODE: u8 = 2;
const KIND_CLUSTER_ID: u8 = 1;

/// A decoded entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    Write(RequestId, WriteOp),
    ClusterId(ClusterId),
}

pub fn encode_cluster_id(id: ClusterId) -> Vec<u8> {
    let mut buf = vec![VERSION_NODE, KIND_CLUSTER_ID];
    buf.extend_from_slice(&id.to_bytes());
    buf
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestId {
    pub origin: NodeId,
    pub incarnation: u64,
    pub seq: u64,
}

pub fn encode(id: RequestId, op: &WriteOp) -> Vec<u8> {
    let mut buf = Vec::with_capacity(32);
    let mut w = Writer::new(&mut buf);
    w.u8(VERSION);
    w.u64(id.origin.0);
    w.u64(id.incarnation);
    w.u64(id.seq);
    op.encode_into(&mut w);
    buf
}

pub fn decode(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    let mut r = Reader::new(bytes);
    if bytes.first() == Some(&VERSION_NODE) {
        r.u8("envelope version")?;
        let kind = r.u8("entry kind")?;
        if kind != KIND_CLUSTER_ID {
            return Err(r.invalid("entry kind", format!("unknown node entry kind {kind}")));
        }
        let raw: [u8; 16] = r.take(16, "cluster id")?.try_into().expect("16 bytes");
        r.finish()?;
        let id = ClusterId::from_bytes(raw).ok_or_else(|| r.invalid("cluster id", "zero".to_string()))?;
        return Ok(Decoded::ClusterId(id));
    }
    let id = read_id(&mut r)?;
    let op = WriteOp::decode_from(&mut r)?;
    r.finish()?;
    Ok(Decoded::Write(id, op))
}

/// Only who is waiting: the operation is not decoded.
pub fn decode_id(bytes: &[u8]) -> Result<RequestId, DecodeError> {
    read_id(&mut Reader::new(bytes))
}

fn read_id(r: &mut Reader<'_>) -> Result<RequestId, DecodeError> {
    let version = r.u8("envelope version")?;
    if version != VERSION {
        return Err(r.invalid("envelope version", format!("unknown version {version}")));
    }
    let origin = r.node_id("envelope origin")?;
    let incarnation = r.u64("envelope incarnation")?;
    let seq = r.u64("envelope seq")?;
    Ok(RequestId { origin, incarnation, seq })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let id = RequestId { origin: NodeId(3), incarnation: 0xdead_beef, seq: 42 };
        let op = WriteOp::command(&[b"SET", b"k", b"v"]);
        let bytes = encode(id, &op);
        assert_eq!(decode(&bytes).unwrap(), Decoded::Write(id, op));
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let cluster = ClusterId::random();
        let bytes = encode_cluster_id(cluster);
        assert_eq!(decode(&bytes).unwrap(), Decoded::ClusterId(cluster));
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
