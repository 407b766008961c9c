use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use super::*;
use crate::raft::{Addrs, Entry, Membership, Payload, SnapshotMeta};

fn entries(n: u64) -> Vec<Entry> {
    (1..=n)
        .map(|i| Entry {
            index: Index(i),
            term: Term(2),
            payload: match i % 3 {
                0 => Payload::Noop,
                1 => Payload::command(vec![i as u8; i as usize]),
                _ => Payload::Membership(Membership::with_voters([NodeId(1), NodeId(2)])),
            },
        })
        .collect()
}

fn every_body() -> Vec<Body> {
    let mut meta_membership = Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]);
    meta_membership.addrs.insert(NodeId(1), Addrs { raft: "127.0.0.1:7001".into(), client: "127.0.0.1:6001".into() });
    vec![
        Body::PreVote { last_index: Index(9), last_term: Term(3) },
        Body::PreVoteResp { granted: true },
        Body::Vote { last_index: Index(9), last_term: Term(3), transfer: true },
        Body::VoteResp { granted: false },
        Body::Append { prev_index: Index(0), prev_term: Term(0), entries: vec![], commit: Index(0) },
        Body::Append { prev_index: Index(4), prev_term: Term(1), entries: entries(7), commit: Index(3) },
        Body::AppendResp(AppendResp {
            index: Index(5),
            rejected: true,
            hint_index: Index(2),
            hint_term: Term(1),
            incarnation: 7,
        }),
        Body::Heartbeat { commit: Index(8), read_round: 77 },
        Body::HeartbeatResp { read_round: 77 },
        Body::InstallSnapshot {
            meta: SnapshotMeta { index: Index(100), term: Term(4), membership: meta_membership },
            offset: 4096,
            data: vec![7; 1000],
            done: false,
        },
        Body::InstallSnapshotResp { index: Index(100), next_offset: 5096, installed: false },
        Body::TimeoutNow { last_index: Index(9), incarnation: 0xabc },
        Body::Propose { commands: vec![b"a".to_vec(), vec![], vec![0xff; 300]] },
        Body::ReadIndex { request: ReadId { incarnation: 0xfeed, seq: 12 } },
        Body::ReadIndexResp {
            request: ReadId { incarnation: 0xfeed, seq: 12 },
            index: Some(Index(44)),
            clock: 1_764_000_000_123,
        },
        Body::ReadIndexResp { request: ReadId { incarnation: u64::MAX, seq: 13 }, index: None, clock: 0 },
    ]
}

fn message(body: Body) -> Message {
    Message { from: NodeId(2), to: NodeId(1), term: Term(6), body }
}

fn frame(m: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(m, &mut out);
    out
}

#[test]
fn every_message_round_trips() {
    for body in every_body() {
        let m = message(body);
        let bytes = frame(&m);
        let (decoded, used) = decode_frame(&bytes, NodeId(2), NodeId(1)).unwrap().unwrap();
        assert_eq!((decoded, used), (m, bytes.len()));
    }
}

#[test]
fn frames_follow_each_other_in_a_stream() {
    let mut stream = Vec::new();
    let messages: Vec<Message> = every_body().into_iter().map(message).collect();
    for m in &messages {
        encode_frame(m, &mut stream);
    }
    let mut at = 0;
    for m in &messages {
        let (decoded, used) = decode_frame(&stream[at..], NodeId(2), NodeId(1)).unwrap().unwrap();
        assert_eq!(&decoded, m);
        at += used;
    }
    assert_eq!(at, stream.len());
}

#[test]
fn every_truncation_needs_more() {
    for body in every_body() {
        let bytes = frame(&message(body));
        for cut in 0..bytes.len() {
            assert_eq!(decode_frame(&bytes[..cut], NodeId(2), NodeId(1)), Ok(None), "cut at {cut}");
        }
    }
}

#[test]
fn every_flipped_bit_is_detected() {
    for body in every_body() {
        let bytes = frame(&message(body));
        for bit in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            match decode_frame(&bad, NodeId(2), NodeId(1)) {
                Err(_) => {}
                // A longer length waits for bytes that will not match.
                Ok(None) if bit < 32 => {}
                other => panic!("bit {bit} flipped went unnoticed: {other:?}"),
            }
        }
    }
}

#[test]
fn oversize_lengths_are_refused_before_reading_further() {
    let mut bytes = vec![0u8; 8];
    bytes[..4].copy_from_slice(&(FRAME_BYTES_MAX as u32).to_le_bytes());
    assert_eq!(decode_frame(&bytes, NodeId(2), NodeId(1)), Err(WireError::FrameTooLarge { len: FRAME_BYTES_MAX + 4 }));
    assert!(matches!(decode_frame(&[1, 0, 0, 0, 0], NodeId(2), NodeId(1)), Err(WireError::FrameTooSmall { .. })));
}

#[test]
fn random_bytes_never_panic() {
    let seed = 0x5eed_3001;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let valid: Vec<Vec<u8>> = every_body().into_iter().map(|b| frame(&message(b))).collect();
    for _ in 0..50_000 {
        let mut bytes = if rng.random_bool(0.5) {
            valid[rng.random_range(0..valid.len())].clone()
        } else {
            (0..rng.random_range(0..64)).map(|_| rng.random()).collect()
        };
        for _ in 0..rng.random_range(0..4) {
            if !bytes.is_empty() {
                let i = rng.random_range(0..bytes.len());
                bytes[i] = rng.random();
            }
        }
        // Re-sealing the checksum lets garbage reach the body decoder.
        if bytes.len() >= 9 && rng.random_bool(0.5) {
            let crc = crc32fast::hash(&bytes[8..]);
            bytes[4..8].copy_from_slice(&crc.to_le_bytes());
            let len = (bytes.len() - 4) as u32;
            bytes[..4].copy_from_slice(&len.to_le_bytes());
        }
        let _ = decode_frame(&bytes, NodeId(2), NodeId(1));
    }
}
