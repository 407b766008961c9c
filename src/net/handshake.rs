//! The peer handshake (README, Security): before the first Raft frame, each side
//! proves it knows the cluster secret, on fresh nonces from both, with
//! HMAC-SHA256; the secret itself never crosses the wire. The acceptor then
//! compares cluster ids and says whether the connection is accepted.
//!
//! ```text
//! dialer   -> HELLO      magic "RKVP" | version u16 (4) | from u64 | to u64 | cluster id [16] (zeros: none)
//!                        | incarnation u64 | nonce [32] | mode u8 (0 no secret, 1 secret)
//! acceptor -> CHALLENGE  1u8 | nonce [32] | mode u8 | mac [32] = H("raftkv acceptor", HELLO, nonce, mode)
//!          or REFUSAL    2u8 | status u8 | version u16 | id u64            (before any proof: says little)
//! dialer   -> PROOF      mac [32] = H("raftkv dialer", HELLO, CHALLENGE)
//! acceptor -> VERDICT    status u8 | id u64 | cluster id [16] | incarnation u64
//!                        | mac [32] = H("raftkv verdict", HELLO, CHALLENGE, the verdict before the mac)
//! ```
//!
//! Integers are little-endian; H is HMAC-SHA256 keyed with the secret, and
//! every mac is all zeros when there is no secret (peers are then loopback
//! only, or authenticated by mutual TLS underneath). Each mac covers both
//! nonces and the role of its sender, so nothing can be replayed from an
//! earlier connection or reflected back to its sender; the verdict's mac
//! covers the acceptor's id and cluster id.

use std::fmt;
use std::io::{self, Read, Write};

use hmac::{Hmac, KeyInit, Mac};
use rand::Rng;
use sha2::Sha256;

use super::secret::Secret;
use crate::identity::ClusterId;
use crate::raft::NodeId;

pub const MAGIC: [u8; 4] = *b"RKVP";
/// 4: ReadIndexResp carries the leader's clock (`crate::wire`).
pub const VERSION: u16 = 4;

const NONCE_BYTES: usize = 32;
const MAC_BYTES: usize = 32;
const HELLO_BYTES: usize = 4 + 2 + 8 + 8 + 16 + 8 + NONCE_BYTES + 1;
const CHALLENGE_BYTES: usize = NONCE_BYTES + 1 + MAC_BYTES;
const REFUSAL_BYTES: usize = 1 + 2 + 8;
const VERDICT_BYTES: usize = 1 + 8 + 16 + 8 + MAC_BYTES;

const CHALLENGE: u8 = 1;
const REFUSAL: u8 = 2;

/// How a connection ended up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    Accepted = 0,
    BadVersion = 1,
    Misdirected = 2,
    /// One side has a cluster secret and the other not.
    ModeMismatch = 3,
    AuthFailed = 4,
    ClusterMismatch = 5,
}

impl Status {
    fn from_u8(v: u8) -> Option<Status> {
        [
            Status::Accepted,
            Status::BadVersion,
            Status::Misdirected,
            Status::ModeMismatch,
            Status::AuthFailed,
            Status::ClusterMismatch,
        ]
        .into_iter()
        .find(|s| *s as u8 == v)
    }
}

/// What one side of a handshake brings.
pub struct Local<'a> {
    pub id: NodeId,
    pub cluster: Option<ClusterId>,
    /// This process (random at start), so a peer can tell it restarted.
    pub incarnation: u64,
    pub secret: Option<&'a Secret>,
}

/// What the other side turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub id: NodeId,
    pub cluster: Option<ClusterId>,
    pub incarnation: u64,
}

#[derive(Debug)]
pub enum HandshakeError {
    Io(io::Error),
    /// Not a raftkv peer at all (a client, a scanner).
    BadMagic([u8; 4]),
    BadVersion {
        ours: u16,
        theirs: u16,
    },
    /// The dialer meant another node, or named itself oddly.
    Misdirected {
        from: u64,
        to: u64,
        local: NodeId,
    },
    ModeMismatch {
        ours_has_secret: bool,
    },
    /// The other side does not know the secret (or a message was tampered
    /// with): nothing it sent is trusted.
    AuthFailed,
    /// Both know the secret, but belong to different clusters.
    ClusterMismatch {
        peer: NodeId,
        ours: Option<ClusterId>,
        theirs: Option<ClusterId>,
    },
    Malformed(&'static str),
}

impl From<io::Error> for HandshakeError {
    fn from(e: io::Error) -> HandshakeError {
        HandshakeError::Io(e)
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::identity::show;
        match self {
            HandshakeError::Io(e) => write!(f, "{e}"),
            HandshakeError::BadMagic(m) => write!(f, "not a raftkv peer (it began with {m:02x?})"),
            HandshakeError::BadVersion { ours, theirs } => {
                write!(f, "peer protocol version {theirs}, this node speaks {ours}")
            }
            HandshakeError::Misdirected { from, to, local } => {
                write!(f, "node {from} dialed node {to}, but this is node {local} (check the peers files)")
            }
            HandshakeError::ModeMismatch { ours_has_secret: true } => {
                write!(f, "the other side has no cluster secret, this node has one (give every node --cluster-secret)")
            }
            HandshakeError::ModeMismatch { ours_has_secret: false } => {
                write!(f, "the other side has a cluster secret, this node has none (give every node --cluster-secret)")
            }
            HandshakeError::AuthFailed => write!(f, "authentication failed: it does not prove the cluster secret"),
            HandshakeError::ClusterMismatch { peer, ours, theirs } => write!(
                f,
                "node {peer} belongs to cluster {}, this node to cluster {} (a data directory of another cluster?)",
                show(*theirs),
                show(*ours)
            ),
            HandshakeError::Malformed(what) => write!(f, "malformed handshake: {what}"),
        }
    }
}

impl std::error::Error for HandshakeError {}

fn mac(secret: Option<&Secret>, parts: &[&[u8]]) -> [u8; MAC_BYTES] {
    let Some(secret) = secret else { return [0; MAC_BYTES] };
    let mut m = Hmac::<Sha256>::new_from_slice(secret.key()).expect("HMAC takes keys of any length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// Checks a mac in constant time (`verify_slice`); always true without a
/// secret.
fn mac_ok(secret: Option<&Secret>, parts: &[&[u8]], got: &[u8]) -> bool {
    let Some(secret) = secret else { return true };
    let mut m = Hmac::<Sha256>::new_from_slice(secret.key()).expect("HMAC takes keys of any length");
    for p in parts {
        m.update(p);
    }
    m.verify_slice(got).is_ok()
}

fn nonce() -> [u8; NONCE_BYTES] {
    let mut n = [0u8; NONCE_BYTES];
    rand::rng().fill_bytes(&mut n);
    n
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn cluster_at(b: &[u8], at: usize) -> Option<ClusterId> {
    ClusterId::from_bytes(b[at..at + 16].try_into().expect("16 bytes"))
}

fn hello(local: &Local<'_>, to: NodeId, nonce: &[u8; NONCE_BYTES]) -> [u8; HELLO_BYTES] {
    let mut b = [0u8; HELLO_BYTES];
    b[..4].copy_from_slice(&MAGIC);
    b[4..6].copy_from_slice(&VERSION.to_le_bytes());
    b[6..14].copy_from_slice(&local.id.0.to_le_bytes());
    b[14..22].copy_from_slice(&to.0.to_le_bytes());
    b[22..38].copy_from_slice(&ClusterId::option_bytes(local.cluster));
    b[38..46].copy_from_slice(&local.incarnation.to_le_bytes());
    b[46..78].copy_from_slice(nonce);
    b[78] = u8::from(local.secret.is_some());
    b
}

fn verdict_body(status: Status, local: &Local<'_>) -> [u8; VERDICT_BYTES - MAC_BYTES] {
    let mut b = [0u8; VERDICT_BYTES - MAC_BYTES];
    b[0] = status as u8;
    b[1..9].copy_from_slice(&local.id.0.to_le_bytes());
    b[9..25].copy_from_slice(&ClusterId::option_bytes(local.cluster));
    b[25..33].copy_from_slice(&local.incarnation.to_le_bytes());
    b
}

/// The dialer's side, on a stream whose timeouts the caller has set.
pub fn dial<S: Read + Write>(stream: &mut S, local: &Local<'_>, to: NodeId) -> Result<Peer, HandshakeError> {
    let hello = hello(local, to, &nonce());
    stream.write_all(&hello)?;
    stream.flush()?;
    let mut kind = [0u8; 1];
    stream.read_exact(&mut kind)?;
    match kind[0] {
        CHALLENGE => {}
        REFUSAL => {
            let mut r = [0u8; REFUSAL_BYTES];
            stream.read_exact(&mut r)?;
            return Err(refusal(&r, local, to));
        }
        _ => return Err(HandshakeError::Malformed("unknown answer to HELLO")),
    }
    let mut challenge = [0u8; 1 + CHALLENGE_BYTES];
    challenge[0] = CHALLENGE;
    stream.read_exact(&mut challenge[1..])?;
    let (their_nonce, mode, their_mac) = (&challenge[1..33], challenge[33], &challenge[34..34 + MAC_BYTES]);
    if mode != u8::from(local.secret.is_some()) {
        return Err(HandshakeError::ModeMismatch { ours_has_secret: local.secret.is_some() });
    }
    if !mac_ok(local.secret, &[b"raftkv acceptor", &hello, their_nonce, &[mode]], their_mac) {
        return Err(HandshakeError::AuthFailed);
    }
    stream.write_all(&mac(local.secret, &[b"raftkv dialer", &hello, &challenge]))?;
    stream.flush()?;
    let mut verdict = [0u8; VERDICT_BYTES];
    stream.read_exact(&mut verdict)?;
    let (body, verdict_mac) = verdict.split_at(VERDICT_BYTES - MAC_BYTES);
    let status = Status::from_u8(body[0]).ok_or(HandshakeError::Malformed("unknown verdict"))?;
    if status == Status::AuthFailed {
        // Refused before it could authenticate anything: no mac to check.
        return Err(HandshakeError::AuthFailed);
    }
    if !mac_ok(local.secret, &[b"raftkv verdict", &hello, &challenge, body], verdict_mac) {
        return Err(HandshakeError::AuthFailed);
    }
    let peer =
        Peer { id: crate::raft::NodeId(u64_at(body, 1)), cluster: cluster_at(body, 9), incarnation: u64_at(body, 25) };
    if peer.id != to {
        return Err(HandshakeError::Misdirected { from: local.id.0, to: to.0, local: peer.id });
    }
    match status {
        Status::Accepted => Ok(peer),
        Status::ClusterMismatch => {
            Err(HandshakeError::ClusterMismatch { peer: to, ours: local.cluster, theirs: peer.cluster })
        }
        _ => Err(HandshakeError::Malformed("unexpected verdict")),
    }
}

fn refusal(r: &[u8; REFUSAL_BYTES], local: &Local<'_>, to: NodeId) -> HandshakeError {
    let version = u16::from_le_bytes([r[1], r[2]]);
    let their_id = u64_at(r, 3);
    match Status::from_u8(r[0]) {
        Some(Status::BadVersion) => HandshakeError::BadVersion { ours: VERSION, theirs: version },
        Some(Status::Misdirected) => {
            HandshakeError::Misdirected { from: local.id.0, to: to.0, local: NodeId(their_id) }
        }
        Some(Status::ModeMismatch) => HandshakeError::ModeMismatch { ours_has_secret: local.secret.is_some() },
        _ => HandshakeError::Malformed("unknown refusal"),
    }
}

/// The acceptor's side. `local.cluster` is this node's id at the moment.
pub fn accept<S: Read + Write>(stream: &mut S, local: &Local<'_>) -> Result<Peer, HandshakeError> {
    let mut hello = [0u8; HELLO_BYTES];
    stream.read_exact(&mut hello[..4])?;
    let magic: [u8; 4] = hello[..4].try_into().expect("4 bytes");
    if magic != MAGIC {
        return Err(HandshakeError::BadMagic(magic));
    }
    stream.read_exact(&mut hello[4..])?;
    let version = u16::from_le_bytes([hello[4], hello[5]]);
    let (from, to) = (u64_at(&hello, 6), u64_at(&hello, 14));
    let refuse = |stream: &mut S, status: Status, e: HandshakeError| -> Result<Peer, HandshakeError> {
        let mut r = [0u8; 1 + REFUSAL_BYTES];
        r[0] = REFUSAL;
        r[1] = status as u8;
        r[2..4].copy_from_slice(&VERSION.to_le_bytes());
        r[4..12].copy_from_slice(&local.id.0.to_le_bytes());
        let _ = stream.write_all(&r).and_then(|()| stream.flush());
        Err(e)
    };
    if version != VERSION {
        return refuse(stream, Status::BadVersion, HandshakeError::BadVersion { ours: VERSION, theirs: version });
    }
    if to != local.id.0 || from == 0 || from == local.id.0 {
        return refuse(stream, Status::Misdirected, HandshakeError::Misdirected { from, to, local: local.id });
    }
    if hello[78] != u8::from(local.secret.is_some()) {
        let e = HandshakeError::ModeMismatch { ours_has_secret: local.secret.is_some() };
        return refuse(stream, Status::ModeMismatch, e);
    }
    let our_nonce = nonce();
    let mode = [u8::from(local.secret.is_some())];
    let mut challenge = [0u8; 1 + CHALLENGE_BYTES];
    challenge[0] = CHALLENGE;
    challenge[1..33].copy_from_slice(&our_nonce);
    challenge[33] = mode[0];
    challenge[34..].copy_from_slice(&mac(local.secret, &[b"raftkv acceptor", &hello, &our_nonce, &mode]));
    stream.write_all(&challenge)?;
    stream.flush()?;
    let mut proof = [0u8; MAC_BYTES];
    stream.read_exact(&mut proof)?;
    let verdict = |stream: &mut S, status: Status| -> io::Result<()> {
        let body = verdict_body(status, local);
        let tag = mac(local.secret, &[b"raftkv verdict", &hello, &challenge, &body]);
        stream.write_all(&[&body[..], &tag[..]].concat())?;
        stream.flush()
    };
    if !mac_ok(local.secret, &[b"raftkv dialer", &hello, &challenge], &proof) {
        let _ = verdict(stream, Status::AuthFailed);
        return Err(HandshakeError::AuthFailed);
    }
    let peer = Peer { id: NodeId(from), cluster: cluster_at(&hello, 22), incarnation: u64_at(&hello, 38) };
    if let (Some(ours), Some(theirs)) = (local.cluster, peer.cluster)
        && ours != theirs
    {
        let _ = verdict(stream, Status::ClusterMismatch);
        return Err(HandshakeError::ClusterMismatch { peer: peer.id, ours: local.cluster, theirs: peer.cluster });
    }
    verdict(stream, Status::Accepted)?;
    Ok(peer)
}

#[cfg(test)]
mod tests;
