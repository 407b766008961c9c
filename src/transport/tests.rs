use std::time::{Duration, Instant};

use super::*;
use crate::raft::{Body, Term};

fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind")
}

fn heartbeat(from: u64, to: u64, round: u64) -> Message {
    Message {
        from: NodeId(from),
        to: NodeId(to),
        term: Term(1),
        body: Body::Heartbeat { commit: crate::raft::Index(0), read_round: round },
    }
}

fn fast() -> TransportOptions {
    TransportOptions {
        backoff_min: Duration::from_millis(5),
        backoff_max: Duration::from_millis(50),
        poll_interval: Duration::from_millis(20),
        handshake_timeout: Duration::from_millis(500),
        ..TransportOptions::default()
    }
}

struct Node {
    transport: Transport,
    inbox: Receiver<Message>,
}

fn start(id: u64, l: TcpListener, peers: &[(u64, String)]) -> Node {
    let (tx, inbox) = crossbeam_channel::bounded(10_000);
    let peers = peers.iter().filter(|(p, _)| *p != id).map(|(p, a)| (NodeId(*p), a.clone())).collect();
    let transport = Transport::start(NodeId(id), l, peers, tx, fast()).expect("start");
    Node { transport, inbox }
}

/// Sends until one arrives (the sender may still be connecting).
fn deliver(from: &Node, to: &Node, msg: Message) -> Message {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        from.transport.send(msg.clone());
        if let Ok(m) = to.inbox.recv_timeout(Duration::from_millis(50)) {
            return m;
        }
    }
    panic!("{msg} was never delivered");
}

#[test]
fn three_nodes_exchange_messages_in_order() {
    let ls: Vec<TcpListener> = (0..3).map(|_| listener()).collect();
    let addrs: Vec<(u64, String)> =
        ls.iter().enumerate().map(|(i, l)| (i as u64 + 1, l.local_addr().unwrap().to_string())).collect();
    let nodes: Vec<Node> = ls.into_iter().enumerate().map(|(i, l)| start(i as u64 + 1, l, &addrs)).collect();
    let first = deliver(&nodes[0], &nodes[1], heartbeat(1, 2, 0));
    assert_eq!(first.from, NodeId(1));
    for round in 1..=500 {
        nodes[0].transport.send(heartbeat(1, 2, round));
    }
    let mut next = 1;
    while next <= 500 {
        match nodes[1].inbox.recv_timeout(Duration::from_secs(5)).expect("message").body {
            Body::Heartbeat { read_round: 0, .. } => {}
            Body::Heartbeat { read_round, .. } => {
                assert_eq!(read_round, next, "out of order");
                next += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    deliver(&nodes[2], &nodes[0], heartbeat(3, 1, 9));
    for n in nodes {
        n.transport.shutdown();
    }
}

#[test]
fn a_peer_that_starts_late_or_restarts_is_reached() {
    let (la, lb) = (listener(), listener());
    let b_addr = lb.local_addr().unwrap().to_string();
    drop(lb);
    let addrs = vec![(1, la.local_addr().unwrap().to_string()), (2, b_addr.clone())];
    let a = start(1, la, &addrs);
    for _ in 0..10 {
        a.transport.send(heartbeat(1, 2, 0));
    }
    std::thread::sleep(Duration::from_millis(100));
    let b = start(2, TcpListener::bind(&b_addr).expect("rebind"), &addrs);
    deliver(&a, &b, heartbeat(1, 2, 1));
    b.transport.shutdown();
    let b = start(2, TcpListener::bind(&b_addr).expect("rebind"), &addrs);
    deliver(&a, &b, heartbeat(1, 2, 2));
    assert!(a.transport.stats().sent > 0);
    a.transport.shutdown();
    b.transport.shutdown();
}

#[test]
fn a_full_queue_drops_instead_of_blocking() {
    let la = listener();
    // A peer that never listens.
    let dead = listener();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let a = start(1, la, &[(2, dead_addr)]);
    let started = Instant::now();
    for round in 0..100_000 {
        a.transport.send(heartbeat(1, 2, round));
    }
    assert!(started.elapsed() < Duration::from_secs(5), "send blocked");
    assert!(a.transport.stats().dropped > 0);
    a.transport.send(heartbeat(1, 9, 0));
    a.transport.shutdown();
}

#[test]
fn garbage_and_strangers_are_refused_while_peers_keep_talking() {
    let (la, lb) = (listener(), listener());
    let addrs = vec![(1, la.local_addr().unwrap().to_string()), (2, lb.local_addr().unwrap().to_string())];
    let b_addr = lb.local_addr().unwrap();
    let a = start(1, la, &addrs);
    let b = start(2, lb, &addrs);
    deliver(&a, &b, heartbeat(1, 2, 0));
    // Random bytes, an HTTP request, a handshake for another node, a valid
    // handshake followed by a corrupted frame, a half-sent frame, and a
    // hundred connections that never say anything.
    let mut junk: Vec<TcpStream> = Vec::new();
    let mut s = TcpStream::connect(b_addr).unwrap();
    s.write_all(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]).unwrap();
    junk.push(s);
    let mut s = TcpStream::connect(b_addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    junk.push(s);
    let mut s = TcpStream::connect(b_addr).unwrap();
    s.write_all(&wire::encode_handshake(Handshake { from: NodeId(1), to: NodeId(7) })).unwrap();
    junk.push(s);
    let mut s = TcpStream::connect(b_addr).unwrap();
    s.write_all(&wire::encode_handshake(Handshake { from: NodeId(1), to: NodeId(2) })).unwrap();
    let mut frame = Vec::new();
    wire::encode_frame(&heartbeat(1, 2, 5), &mut frame);
    let last = frame.len() - 1;
    frame[last] ^= 0xff;
    s.write_all(&frame).unwrap();
    junk.push(s);
    let mut s = TcpStream::connect(b_addr).unwrap();
    s.write_all(&wire::encode_handshake(Handshake { from: NodeId(1), to: NodeId(2) })).unwrap();
    s.write_all(&frame[..5]).unwrap();
    junk.push(s);
    for _ in 0..100 {
        junk.push(TcpStream::connect(b_addr).unwrap());
    }
    for round in 1..=20 {
        deliver(&a, &b, heartbeat(1, 2, round));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.transport.stats().bad_connections < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(b.transport.stats().bad_connections >= 4, "{:?}", b.transport.stats());
    drop(junk);
    let started = Instant::now();
    a.transport.shutdown();
    b.transport.shutdown();
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown took {:?}", started.elapsed());
}

#[test]
fn set_peers_follows_membership_changes() {
    let (la, lb, lc) = (listener(), listener(), listener());
    let (b_addr, c_addr) = (lb.local_addr().unwrap().to_string(), lc.local_addr().unwrap().to_string());
    let a = start(1, la, &[]);
    let b = start(2, lb, &[]);
    let c = start(3, lc, &[]);
    a.transport.send(heartbeat(1, 2, 0));
    assert!(b.inbox.recv_timeout(Duration::from_millis(200)).is_err(), "no route to 2 yet");
    a.transport.set_peers([(NodeId(2), b_addr), (NodeId(3), c_addr)].into_iter().collect());
    deliver(&a, &b, heartbeat(1, 2, 1));
    deliver(&a, &c, heartbeat(1, 3, 1));
    a.transport.set_peers(BTreeMap::new());
    std::thread::sleep(Duration::from_millis(100));
    while b.inbox.try_recv().is_ok() {}
    a.transport.send(heartbeat(1, 2, 2));
    assert!(b.inbox.recv_timeout(Duration::from_millis(300)).is_err(), "removed peer still reached");
    for n in [a, b, c] {
        n.transport.shutdown();
    }
}
