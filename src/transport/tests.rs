use std::time::{Duration, Instant};

use super::*;
use crate::identity::ClusterId;
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
    start_with(id, l, peers, PeerSecurity::default(), Arc::new(ClusterIdentity::default()))
}

fn start_with(
    id: u64,
    l: TcpListener,
    peers: &[(u64, String)],
    security: PeerSecurity,
    identity: Arc<ClusterIdentity>,
) -> Node {
    let (tx, inbox) = crossbeam_channel::bounded(10_000);
    let peers = peers.iter().filter(|(p, _)| *p != id).map(|(p, a)| (NodeId(*p), a.clone())).collect();
    let incarnation = rand::random();
    let transport = Transport::start(NodeId(id), incarnation, l, peers, tx, fast(), security, identity).expect("start");
    Node { transport, inbox }
}

fn with_secret(key: &str) -> PeerSecurity {
    PeerSecurity { secret: Some(Secret::from_bytes(key.as_bytes()).unwrap()), tls: None }
}

/// Sends for a while; returns whether anything arrived.
fn reaches(from: &Node, to: &Node, msg: Message, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        from.transport.send(msg.clone());
        if to.inbox.recv_timeout(Duration::from_millis(50)).is_ok() {
            return true;
        }
    }
    false
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
    let local = |id| handshake::Local { id: NodeId(id), cluster: None, incarnation: 7, secret: None };
    let mut s = TcpStream::connect(b_addr).unwrap();
    assert!(handshake::dial(&mut s, &local(1), NodeId(7)).is_err(), "node 2 is not node 7");
    junk.push(s);
    let mut s = TcpStream::connect(b_addr).unwrap();
    handshake::dial(&mut s, &local(1), NodeId(2)).unwrap();
    let mut frame = Vec::new();
    wire::encode_frame(&heartbeat(1, 2, 5), &mut frame);
    let last = frame.len() - 1;
    frame[last] ^= 0xff;
    s.write_all(&frame).unwrap();
    junk.push(s);
    let mut s = TcpStream::connect(b_addr).unwrap();
    handshake::dial(&mut s, &local(1), NodeId(2)).unwrap();
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

#[test]
fn only_peers_that_know_the_secret_get_in() {
    let (la, lb, lc) = (listener(), listener(), listener());
    let addrs: Vec<(u64, String)> =
        [&la, &lb, &lc].iter().enumerate().map(|(i, l)| (i as u64 + 1, l.local_addr().unwrap().to_string())).collect();
    let b_addr = lb.local_addr().unwrap();
    let id = || Arc::new(ClusterIdentity::default());
    let a = start_with(1, la, &addrs, with_secret("the-cluster-secret-1"), id());
    let b = start_with(2, lb, &addrs, with_secret("the-cluster-secret-1"), id());
    let c = start_with(3, lc, &addrs, with_secret("a-wrong-secret-00000"), id());
    deliver(&a, &b, heartbeat(1, 2, 1));
    assert!(!reaches(&c, &b, heartbeat(3, 2, 1), Duration::from_millis(500)), "a wrong secret got in");
    // One who knows no secret at all, claiming to be node 1.
    let mut s = TcpStream::connect(b_addr).unwrap();
    let local = handshake::Local { id: NodeId(1), cluster: None, incarnation: 7, secret: None };
    assert!(matches!(handshake::dial(&mut s, &local, NodeId(2)), Err(HandshakeError::ModeMismatch { .. })));
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.transport.stats().auth_failures < 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(b.transport.stats().auth_failures >= 1, "{:?}", b.transport.stats());
    for n in [a, b, c] {
        n.transport.shutdown();
    }
}

/// Two nodes that each hold a cluster id refuse each other when the ids
/// differ; a node without one yet talks to anyone.
#[test]
fn peers_of_another_cluster_are_refused_both_ways() {
    let (la, lb, lc) = (listener(), listener(), listener());
    let addrs: Vec<(u64, String)> =
        [&la, &lb, &lc].iter().enumerate().map(|(i, l)| (i as u64 + 1, l.local_addr().unwrap().to_string())).collect();
    let (old, new) = (ClusterId::random(), ClusterId::random());
    let ident = |id| Arc::new(ClusterIdentity::new(id));
    let (ia, ic) = (ident(Some(new)), ident(Some(old)));
    let a = start_with(1, la, &addrs, PeerSecurity::default(), ia.clone());
    let b = start_with(2, lb, &addrs, PeerSecurity::default(), ident(None));
    let c = start_with(3, lc, &addrs, PeerSecurity::default(), ic.clone());
    deliver(&a, &b, heartbeat(1, 2, 1));
    deliver(&c, &b, heartbeat(3, 2, 1));
    assert!(!reaches(&c, &a, heartbeat(3, 1, 1), Duration::from_millis(500)), "another cluster got in");
    assert!(!reaches(&a, &c, heartbeat(1, 3, 1), Duration::from_millis(500)), "another cluster got in");
    assert!(a.transport.stats().cluster_refusals >= 1 && c.transport.stats().cluster_refusals >= 1);
    // Node 3 was refused by node 1 and saw node 2 without an id: not yet a
    // majority of three against it.
    let voters = [NodeId(1), NodeId(2), NodeId(3)];
    assert_eq!(ia.refused(NodeId(1), voters), None);
    assert_eq!(ic.refused(NodeId(3), voters), None);
    for n in [a, b, c] {
        n.transport.shutdown();
    }
}

/// Idle connections that never finish a handshake, and a flood of
/// authenticated ones from one peer, lock no one out: a restarted peer
/// always gets back in.
#[test]
fn idle_and_surplus_connections_lock_nobody_out() {
    let (la, lb) = (listener(), listener());
    let addrs = vec![(1, la.local_addr().unwrap().to_string()), (2, lb.local_addr().unwrap().to_string())];
    let b_addr = lb.local_addr().unwrap();
    let b = start(2, lb, &addrs);
    let mut idle = Vec::new();
    for _ in 0..300 {
        if let Ok(s) = TcpStream::connect(b_addr) {
            idle.push(s);
        }
    }
    let mut surplus = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(b_addr).unwrap();
        let local = handshake::Local { id: NodeId(1), cluster: None, incarnation: 1, secret: None };
        if handshake::dial(&mut s, &local, NodeId(2)).is_ok() {
            surplus.push(s);
        }
    }
    let a = start(1, la, &addrs);
    deliver(&a, &b, heartbeat(1, 2, 1));
    drop((idle, surplus));
    a.transport.shutdown();
    b.transport.shutdown();
}
