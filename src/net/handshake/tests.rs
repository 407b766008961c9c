use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::Duration;

use super::*;

fn secret(s: &str) -> Secret {
    Secret::from_bytes(s.as_bytes()).unwrap()
}

struct Side {
    id: u64,
    cluster: Option<ClusterId>,
    secret: Option<Secret>,
}

impl Side {
    fn local(&self) -> Local<'_> {
        Local { id: NodeId(self.id), cluster: self.cluster, incarnation: self.id * 1000, secret: self.secret.as_ref() }
    }
}

fn pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    for s in [&a, &b] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    (a, b)
}

/// Runs a handshake between a dialer (node `d.id`, dialing `to`) and an
/// acceptor; returns both results.
fn run(d: Side, a: Side, to: u64) -> (Result<Peer, HandshakeError>, Result<Peer, HandshakeError>) {
    let (mut ds, mut as_) = pair();
    let acceptor = thread::spawn(move || {
        let r = accept(&mut as_, &a.local());
        drop(as_);
        r
    });
    let dialed = dial(&mut ds, &d.local(), NodeId(to));
    drop(ds);
    (dialed, acceptor.join().unwrap())
}

#[test]
fn peers_with_the_same_secret_and_cluster_are_accepted_and_learn_each_other() {
    let id = ClusterId::random();
    let (d, a) = run(
        Side { id: 1, cluster: Some(id), secret: Some(secret("0123456789abcdef0123")) },
        Side { id: 2, cluster: Some(id), secret: Some(secret("0123456789abcdef0123")) },
        2,
    );
    assert_eq!(d.unwrap(), Peer { id: NodeId(2), cluster: Some(id), incarnation: 2000 });
    assert_eq!(a.unwrap(), Peer { id: NodeId(1), cluster: Some(id), incarnation: 1000 });
}

#[test]
fn without_secrets_on_both_sides_the_handshake_still_checks_ids() {
    let (d, a) = run(Side { id: 1, cluster: None, secret: None }, Side { id: 2, cluster: None, secret: None }, 2);
    assert!(d.is_ok() && a.is_ok());
    let (d, a) = run(Side { id: 1, cluster: None, secret: None }, Side { id: 2, cluster: None, secret: None }, 3);
    assert!(matches!(d, Err(HandshakeError::Misdirected { .. })), "{d:?}");
    assert!(matches!(a, Err(HandshakeError::Misdirected { .. })), "{a:?}");
}

#[test]
fn a_wrong_secret_fails_on_both_sides() {
    let (d, a) = run(
        Side { id: 1, cluster: None, secret: Some(secret("attacker-guess-000000")) },
        Side { id: 2, cluster: None, secret: Some(secret("0123456789abcdef0123")) },
        2,
    );
    assert!(matches!(d, Err(HandshakeError::AuthFailed)), "{d:?}");
    // The dialer gave up as soon as the acceptor's proof failed to check:
    // the acceptor saw the connection end without a proof.
    assert!(matches!(a, Err(HandshakeError::Io(_) | HandshakeError::AuthFailed)), "{a:?}");
}

#[test]
fn a_secret_on_one_side_only_is_refused_with_a_reason() {
    let (d, a) = run(
        Side { id: 1, cluster: None, secret: None },
        Side { id: 2, cluster: None, secret: Some(secret("0123456789abcdef0123")) },
        2,
    );
    assert!(matches!(d, Err(HandshakeError::ModeMismatch { ours_has_secret: false })), "{d:?}");
    assert!(matches!(a, Err(HandshakeError::ModeMismatch { ours_has_secret: true })), "{a:?}");
}

#[test]
fn nodes_of_different_clusters_refuse_each_other_and_a_fresh_node_talks_to_anyone() {
    let s = || Some(secret("0123456789abcdef0123"));
    let (old, new) = (ClusterId::random(), ClusterId::random());
    let (d, a) =
        run(Side { id: 1, cluster: Some(old), secret: s() }, Side { id: 2, cluster: Some(new), secret: s() }, 2);
    match d {
        Err(HandshakeError::ClusterMismatch { ours, theirs, .. }) => assert_eq!((ours, theirs), (Some(old), Some(new))),
        other => panic!("{other:?}"),
    }
    assert!(matches!(a, Err(HandshakeError::ClusterMismatch { .. })), "{a:?}");
    let (d, a) = run(Side { id: 1, cluster: None, secret: s() }, Side { id: 2, cluster: Some(new), secret: s() }, 2);
    assert_eq!(d.unwrap().cluster, Some(new));
    assert_eq!(a.unwrap().cluster, None);
}

/// An attacker who recorded a whole handshake between two nodes replays the
/// dialer's messages to the acceptor: the acceptor's fresh nonce makes the
/// recorded proof worthless.
#[test]
fn a_recorded_handshake_cannot_be_replayed() {
    let key = "0123456789abcdef0123";
    // Record what the honest dialer sends.
    let (mut ds, mut as_) = pair();
    let acceptor = thread::spawn(move || {
        let a = Side { id: 2, cluster: None, secret: Some(secret(key)) };
        accept(&mut as_, &a.local()).map(|_| ())
    });
    let recorder = thread::spawn(move || {
        let d = Side { id: 1, cluster: None, secret: Some(secret(key)) };
        let mut tap = Tap { inner: &mut ds, written: Vec::new() };
        dial(&mut tap, &d.local(), NodeId(2)).unwrap();
        tap.written
    });
    let recorded = recorder.join().unwrap();
    acceptor.join().unwrap().unwrap();
    // Replay it to a new acceptor.
    let (mut attacker, mut as_) = pair();
    let acceptor = thread::spawn(move || {
        let a = Side { id: 2, cluster: None, secret: Some(secret(key)) };
        accept(&mut as_, &a.local())
    });
    attacker.write_all(&recorded).unwrap();
    let mut answer = Vec::new();
    let _ = attacker.read_to_end(&mut answer);
    assert!(matches!(acceptor.join().unwrap(), Err(HandshakeError::AuthFailed)));
    // The acceptor's own proof, sent back to it, is not a dialer's proof.
    let (mut attacker, mut as_) = pair();
    let acceptor = thread::spawn(move || {
        let a = Side { id: 2, cluster: None, secret: Some(secret(key)) };
        accept(&mut as_, &a.local())
    });
    attacker.write_all(&recorded[..HELLO_BYTES]).unwrap();
    let mut challenge = [0u8; 1 + CHALLENGE_BYTES];
    attacker.read_exact(&mut challenge).unwrap();
    attacker.write_all(&challenge[34..]).unwrap();
    assert!(matches!(acceptor.join().unwrap(), Err(HandshakeError::AuthFailed)));
}

#[test]
fn garbage_and_old_versions_are_told_apart() {
    let (mut attacker, mut as_) = pair();
    let acceptor = thread::spawn(move || {
        let a = Side { id: 2, cluster: None, secret: None };
        accept(&mut as_, &a.local())
    });
    attacker.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(matches!(acceptor.join().unwrap(), Err(HandshakeError::BadMagic(_))));
    let (mut old, mut as_) = pair();
    let acceptor = thread::spawn(move || {
        let a = Side { id: 2, cluster: None, secret: None };
        accept(&mut as_, &a.local())
    });
    let mut hello = hello(&Side { id: 1, cluster: None, secret: None }.local(), NodeId(2), &[7; NONCE_BYTES]);
    hello[4..6].copy_from_slice(&3u16.to_le_bytes());
    old.write_all(&hello).unwrap();
    assert!(matches!(acceptor.join().unwrap(), Err(HandshakeError::BadVersion { ours: 4, theirs: 3 })));
}

/// Copies what is written through it.
struct Tap<'a> {
    inner: &'a mut UnixStream,
    written: Vec<u8>,
}

impl Read for Tap<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

impl Write for Tap<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
