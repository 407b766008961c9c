//! What a node writes into the log for a client's write: the operation, and
//! who is waiting for its result. Every node applies every entry; only the
//! node named here answers, and only in the process that proposed it (the
//! incarnation changes at every start, so a restarted node never mistakes an
//! old entry for a new request).
//!
//! ```text
//! envelope = version:u8 (3) origin:u64 incarnation:u64 seq:u64 floor:u64 write-op
//!          | version:u8 (1) origin:u64 incarnation:u64 seq:u64 write-op
//!          | version:u8 (2) kind:u8 (1: the cluster's id) id:[16]
//! ```
//!
//! Version 3 is a client's write, applied at most once (`crate::kv::sessions`:
//! the floor is the lowest `seq` the origin still waited on). Version 1 is
//! applied every time it appears: the leader's expiry sweeps, which are
//! safe to repeat, and clients' writes logged before sessions existed.
//!
//! Version 2 entries are the node's own: the cluster id its first leader
//! proposes (`crate::identity`); every node applies them alike.

use crate::codec::{DecodeError, Reader, Writer};
use crate::identity::ClusterId;
use crate::kv::WriteOp;
use crate::kv::sessions::{Once, Origin};
use crate::raft::NodeId;

const VERSION: u8 = 1;
const VERSION_NODE: u8 = 2;
const VERSION_ONCE: u8 = 3;
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
    /// For a write applied at most once: the origin's lowest `seq` still
    /// waiting when it was proposed.
    pub floor: Option<u64>,
}

impl RequestId {
    /// The id the sessions know it by, if it is applied at most once.
    pub fn once(&self) -> Option<Once> {
        let floor = self.floor?;
        Some(Once { origin: Origin { node: self.origin.0, incarnation: self.incarnation }, seq: self.seq, floor })
    }
}

pub fn encode(id: RequestId, op: &WriteOp) -> Vec<u8> {
    let mut buf = Vec::with_capacity(40);
    let mut w = Writer::new(&mut buf);
    w.u8(if id.floor.is_some() { VERSION_ONCE } else { VERSION });
    w.u64(id.origin.0);
    w.u64(id.incarnation);
    w.u64(id.seq);
    if let Some(floor) = id.floor {
        w.u64(floor);
    }
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

fn read_id(r: &mut Reader<'_>) -> Result<RequestId, DecodeError> {
    let version = r.u8("envelope version")?;
    if version != VERSION && version != VERSION_ONCE {
        return Err(r.invalid("envelope version", format!("unknown version {version}")));
    }
    let origin = r.node_id("envelope origin")?;
    let incarnation = r.u64("envelope incarnation")?;
    let seq = r.u64("envelope seq")?;
    let floor = match version {
        VERSION_ONCE => Some(r.u64("envelope floor")?),
        _ => None,
    };
    Ok(RequestId { origin, incarnation, seq, floor })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let op = WriteOp::command(&[b"SET", b"k", b"v"]);
        for floor in [None, Some(40)] {
            let id = RequestId { origin: NodeId(3), incarnation: 0xdead_beef, seq: 42, floor };
            let bytes = encode(id, &op);
            assert_eq!(decode(&bytes).unwrap(), Decoded::Write(id, op.clone()));
            for cut in 0..bytes.len() {
                assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
        }
        let cluster = ClusterId::random();
        let bytes = encode_cluster_id(cluster);
        assert_eq!(decode(&bytes).unwrap(), Decoded::ClusterId(cluster));
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
