//! The peer network of one node: a sender thread per peer that owns the
//! outbound connection, and an accept thread with a reader per inbound
//! connection. No async runtime: blocking sockets with timeouts.
//!
//! Every connection begins with the handshake of `net::handshake` (over TLS
//! when the node has certificates): both sides prove the cluster secret, and
//! peers of another cluster are refused. Without a secret or TLS only
//! loopback peers are accepted. A connection still in its handshake holds
//! no peer's place: such connections are bounded in number (in all and per
//! host) and dropped after a short deadline, and each authenticated peer
//! has a few places of its own, the newest connection replacing the oldest,
//! so a restarted peer always gets back in.
//!
//! Outbound: `send` never blocks. Each peer has a bounded queue; when it is
//! full the message is dropped and counted (Raft retransmits what matters).
//! The sender writes everything waiting in one buffer with one write, and
//! after a failed write drops that batch, reconnects with bounded
//! exponential backoff, and goes on: a frame is written at most once, so a
//! forwarded proposal is never applied twice. When the peer it reconnects
//! to is a new process of that node, what was queued for the old one is
//! dropped rather than delivered to the new one.
//!
//! Inbound: frames are decoded (`wire`) and handed to the core's bounded
//! channel (a full channel blocks the reader, so TCP pushes back on the
//! peer). Bad bytes end that connection only, with one log line.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use parking_lot::Mutex;
use rand::RngExt;

use crate::identity::{ClusterIdentity, show};
use crate::limits::accept_failed;
use crate::net::handshake::{self, HandshakeError, Local, Peer};
use crate::net::ratelimit::RateLimited;
use crate::net::{Secret, Stream, TlsSettings};
use crate::raft::{Message, NodeId};
use crate::wire;

#[derive(Clone, Debug)]
pub struct TransportOptions {
    /// Messages queued per peer before new ones are dropped.
    pub queue_messages_max: usize,
    /// Bytes of data (appends, snapshot chunks, forwarded commands) queued
    /// per peer before new data is dropped: a peer behind a slow link must
    /// not make this node buffer without bound (Raft sends again what was
    /// lost).
    pub queue_bytes_max: usize,
    /// Bytes written to a peer in one write, at most (plus one frame).
    pub batch_bytes_max: usize,
    pub connect_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// A connection must complete its handshake (TLS included) within this.
    pub handshake_timeout: Duration,
    /// How often blocked threads look at the stop flag.
    pub poll_interval: Duration,
    /// Connections in their handshake at once, in all and from one host;
    /// more are closed at once.
    pub pending_max: usize,
    pub pending_per_host_max: usize,
    /// Authenticated connections one peer may hold; a newer one closes the
    /// oldest (a restarted peer's old connections are dead anyway).
    pub connections_per_peer_max: usize,
}

impl Default for TransportOptions {
    fn default() -> TransportOptions {
        TransportOptions {
            queue_messages_max: 4096,
            queue_bytes_max: 16 * 1024 * 1024,
            batch_bytes_max: 1024 * 1024,
            connect_timeout: Duration::from_millis(500),
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(2),
            poll_interval: Duration::from_millis(100),
            pending_max: 128,
            pending_per_host_max: 16,
            connections_per_peer_max: 4,
        }
    }
}

/// How peers prove who they are (README, Security).
#[derive(Clone, Debug, Default)]
pub struct PeerSecurity {
    pub secret: Option<Secret>,
    pub tls: Option<TlsSettings>,
}

impl PeerSecurity {
    /// With neither a secret nor TLS, only loopback peers can be trusted.
    pub fn loopback_only(&self) -> bool {
        self.secret.is_none() && self.tls.is_none()
    }
}

/// Counters, for INFO and tests.
#[derive(Debug, Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub dropped: AtomicU64,
    /// Of `dropped`: refused because the peer's queue was full.
    pub dropped_full: AtomicU64,
    pub reconnects: AtomicU64,
    pub received: AtomicU64,
    pub bad_connections: AtomicU64,
    pub auth_failures: AtomicU64,
    pub cluster_refusals: AtomicU64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    pub sent: u64,
    pub dropped: u64,
    pub dropped_full: u64,
    /// Data bytes queued for all peers now.
    pub queued_bytes: u64,
    pub reconnects: u64,
    pub received: u64,
    pub bad_connections: u64,
    pub auth_failures: u64,
    pub cluster_refusals: u64,
}

/// What every thread of the transport shares.
struct Shared {
    local: NodeId,
    incarnation: u64,
    security: PeerSecurity,
    identity: Arc<ClusterIdentity>,
    opts: TransportOptions,
    stop: AtomicBool,
    counters: Counters,
    /// Warnings about connections that fail their handshake.
    refusals: RateLimited,
}

impl Shared {
    fn local(&self) -> Local<'_> {
        Local {
            id: self.local,
            cluster: self.identity.get(),
            incarnation: self.incarnation,
            secret: self.security.secret.as_ref(),
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Counts and reports a failed handshake; a refusal for the cluster id
    /// is an operator's matter and is said loudly.
    fn handshake_failed(&self, who: &str, e: &HandshakeError) {
        match e {
            HandshakeError::ClusterMismatch { peer, theirs, .. } => {
                self.identity.observed(*peer, *theirs);
                self.counters.cluster_refusals.fetch_add(1, Ordering::Relaxed);
                self.refusals.error(|| format!("refusing {who}: {e}"));
            }
            HandshakeError::AuthFailed | HandshakeError::ModeMismatch { .. } => {
                self.counters.auth_failures.fetch_add(1, Ordering::Relaxed);
                self.refusals.warn(|| format!("peer connection {who} refused: {e}"));
            }
            HandshakeError::Io(io) if io.kind() == io::ErrorKind::WouldBlock => {
                self.counters.bad_connections.fetch_add(1, Ordering::Relaxed);
                self.refusals.warn(|| format!("peer connection {who} dropped: no handshake in time"));
            }
            _ => {
                self.counters.bad_connections.fetch_add(1, Ordering::Relaxed);
                self.refusals.warn(|| format!("peer connection {who} refused: {e}"));
            }
        }
    }
}

struct PeerSender {
    addr: String,
    queue: Sender<Message>,
    /// Data bytes queued for the peer, taken out when written or dropped.
    queued_bytes: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// Whether a message is data (large, and ordered among its kind) rather
/// than control (votes, heartbeats and answers: small, and sent ahead of
/// any data waiting, so that megabytes of appends never hold up a
/// heartbeat).
fn is_data(m: &Message) -> bool {
    matches!(
        m.body,
        crate::raft::Body::Append { .. }
            | crate::raft::Body::InstallSnapshot { .. }
            | crate::raft::Body::Propose { .. }
    )
}

/// The payload bytes of a data message (what the queue bound counts).
fn data_bytes(m: &Message) -> usize {
    use crate::raft::Body;
    match &m.body {
        Body::Append { entries, .. } => entries.iter().map(|e| 32 + crate::raft::entry_payload_bytes(e)).sum(),
        Body::InstallSnapshot { data, .. } => data.len(),
        Body::Propose { commands } => commands.iter().map(|c| 8 + c.len()).sum(),
        _ => 0,
    }
}

pub struct Transport {
    shared: Arc<Shared>,
    peers: Mutex<BTreeMap<NodeId, PeerSender>>,
    listen_addr: SocketAddr,
    accept_thread: Mutex<Option<JoinHandle<()>>>,
}

impl Transport {
    /// `listener` is bound already, so that a bad address fails at startup.
    /// `incarnation` names this process to peers (random at every start).
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        local: NodeId,
        incarnation: u64,
        listener: TcpListener,
        peers: BTreeMap<NodeId, String>,
        inbound: Sender<Message>,
        opts: TransportOptions,
        security: PeerSecurity,
        identity: Arc<ClusterIdentity>,
    ) -> io::Result<Transport> {
        let listen_addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            local,
            incarnation,
            security,
            identity,
            opts,
            stop: AtomicBool::new(false),
            counters: Counters::default(),
            refusals: RateLimited::new(10, Duration::from_secs(60)),
        });
        let accept_thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("peer-accept".into())
                .spawn(move || accept_loop(listener, inbound, shared))?
        };
        let transport = Transport {
            shared,
            peers: Mutex::new(BTreeMap::new()),
            listen_addr,
            accept_thread: Mutex::new(Some(accept_thread)),
        };
        transport.set_peers(peers);
        Ok(transport)
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    /// Queues a message for its peer; never blocks.
    pub fn send(&self, msg: Message) {
        let peers = self.peers.lock();
        let Some(peer) = peers.get(&msg.to) else {
            self.shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let bytes = data_bytes(&msg);
        let queued = peer.queued_bytes.load(Ordering::Relaxed);
        if bytes > 0 && queued > 0 && queued + bytes > self.shared.opts.queue_bytes_max {
            self.shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
            self.shared.counters.dropped_full.fetch_add(1, Ordering::Relaxed);
            return;
        }
        peer.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        match peer.queue.try_send(msg) {
            Ok(()) => {}
            Err(e) => {
                peer.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
                self.shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                if let TrySendError::Full(_) = e {
                    self.shared.counters.dropped_full.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Starts senders for new peers, stops those of removed ones, and
    /// re-dials a peer whose address changed.
    pub fn set_peers(&self, wanted: BTreeMap<NodeId, String>) {
        let mut peers = self.peers.lock();
        let stale: Vec<NodeId> =
            peers.iter().filter(|(id, p)| wanted.get(id) != Some(&p.addr)).map(|(id, _)| *id).collect();
        for id in stale {
            if let Some(p) = peers.remove(&id) {
                p.stop.store(true, Ordering::SeqCst);
                // Joined at shutdown would be simpler, but a removed peer's
                // thread ends within a poll interval by itself.
                drop(p.thread);
            }
        }
        for (id, addr) in wanted {
            if id == self.shared.local || peers.contains_key(&id) {
                continue;
            }
            match self.spawn_sender(id, addr.clone()) {
                Ok(p) => {
                    peers.insert(id, p);
                }
                Err(e) => log::error!("cannot start a sender thread for node {id}: {e}"),
            }
        }
    }

    fn spawn_sender(&self, id: NodeId, addr: String) -> io::Result<PeerSender> {
        let (queue, rx) = crossbeam_channel::bounded(self.shared.opts.queue_messages_max);
        let stop = Arc::new(AtomicBool::new(false));
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let sender = PeerWriter {
            peer: id,
            addr: addr.clone(),
            queue: rx,
            queued_bytes: queued_bytes.clone(),
            stop: stop.clone(),
            shared: self.shared.clone(),
            peer_incarnation: None,
            mismatch_logged: RateLimited::new(1, Duration::from_secs(30)),
        };
        let thread = std::thread::Builder::new().name(format!("peer-send-{id}")).spawn(move || sender.run())?;
        Ok(PeerSender { addr, queue, queued_bytes, stop, thread })
    }

    pub fn stats(&self) -> TransportStats {
        let c = &self.shared.counters;
        TransportStats {
            sent: c.sent.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            dropped_full: c.dropped_full.load(Ordering::Relaxed),
            queued_bytes: self.peers.lock().values().map(|p| p.queued_bytes.load(Ordering::Relaxed) as u64).sum(),
            reconnects: c.reconnects.load(Ordering::Relaxed),
            received: c.received.load(Ordering::Relaxed),
            bad_connections: c.bad_connections.load(Ordering::Relaxed),
            auth_failures: c.auth_failures.load(Ordering::Relaxed),
            cluster_refusals: c.cluster_refusals.load(Ordering::Relaxed),
        }
    }

    /// Stops every thread this transport started and waits for them (each
    /// looks at the stop flag at least every poll interval).
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept call.
        let _ = TcpStream::connect_timeout(&self.listen_addr, Duration::from_millis(200));
        let accept_thread = self.accept_thread.lock().take();
        if let Some(t) = accept_thread {
            let _ = t.join();
        }
        let peers = std::mem::take(&mut *self.peers.lock());
        for (_, p) in peers {
            p.stop.store(true, Ordering::SeqCst);
            let _ = p.thread.join();
        }
    }
}

/// Why an outbound connection was not made.
enum ConnectError {
    Unreachable(io::Error),
    Refused(HandshakeError),
}

/// The sender thread of one peer.
struct PeerWriter {
    peer: NodeId,
    addr: String,
    queue: Receiver<Message>,
    queued_bytes: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    /// The process of the peer last connected to.
    peer_incarnation: Option<u64>,
    mismatch_logged: RateLimited,
}

impl PeerWriter {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.shared.stopped()
    }

    fn run(mut self) {
        let mut backoff = self.shared.opts.backoff_min;
        let mut was_connected = false;
        // What the operator was last told: a line when the peer becomes
        // reachable or unreachable, not one per attempt.
        let mut reachable: Option<bool> = None;
        while !self.stopped() {
            match self.connect() {
                Ok((stream, peer)) => {
                    if was_connected {
                        self.shared.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    if !was_connected {
                        log::info!("connected to node {} at {}", self.peer, self.addr);
                    } else if reachable == Some(false) {
                        log::info!("node {} at {} is reachable again", self.peer, self.addr);
                    }
                    reachable = Some(true);
                    was_connected = true;
                    backoff = self.shared.opts.backoff_min;
                    self.on_connected(peer);
                    if let Err(e) = self.pump(stream) {
                        log::debug!("connection to node {} at {} lost: {e}", self.peer, self.addr);
                    }
                }
                Err(e) => {
                    match e {
                        ConnectError::Unreachable(e) => {
                            if reachable != Some(false) {
                                let what = if was_connected { "is unreachable" } else { "is not reachable yet" };
                                log::info!("node {} at {} {what}: {e}", self.peer, self.addr);
                                reachable = Some(false);
                            } else {
                                log::debug!("cannot reach node {} at {}: {e}", self.peer, self.addr);
                            }
                        }
                        ConnectError::Refused(e @ HandshakeError::ClusterMismatch { .. }) => {
                            self.shared.identity.observed(self.peer, cluster_of(&e));
                            self.shared.counters.cluster_refusals.fetch_add(1, Ordering::Relaxed);
                            self.mismatch_logged.error(|| format!("node {} at {} refused: {e}", self.peer, self.addr));
                        }
                        ConnectError::Refused(e) => {
                            self.shared.refusals.warn(|| format!("node {} at {}: {e}", self.peer, self.addr))
                        }
                    }
                    self.wait(backoff);
                    // Jitter keeps restarted peers from dialing in lockstep.
                    let jitter = rand::rng().random_range(0.5..1.5);
                    backoff =
                        backoff.mul_f64(2.0 * jitter).clamp(self.shared.opts.backoff_min, self.shared.opts.backoff_max);
                }
            }
        }
    }

    /// What was queued for a previous process of the peer is not for this
    /// one: it answers reads and transfers that process began.
    fn on_connected(&mut self, peer: Peer) {
        if self.peer_incarnation.is_some_and(|i| i != peer.incarnation) {
            let mut dropped = 0;
            while let Ok(m) = self.queue.try_recv() {
                self.forget(&m);
                dropped += 1;
            }
            self.shared.counters.dropped.fetch_add(dropped, Ordering::Relaxed);
            log::debug!("node {} restarted: dropped {dropped} messages queued for its previous process", self.peer);
        }
        self.peer_incarnation = Some(peer.incarnation);
    }

    /// Sleeps for `d`, dropping what piles up meanwhile beyond what a
    /// reconnected peer could use, and waking early on stop.
    fn wait(&self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until && !self.stopped() {
            std::thread::sleep(self.shared.opts.poll_interval.min(until - Instant::now()));
        }
        let keep = self.shared.opts.queue_messages_max / 4;
        while self.queue.len() > keep {
            if let Ok(m) = self.queue.try_recv() {
                self.forget(&m);
                self.shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A message left the queue (written or dropped).
    fn forget(&self, m: &Message) {
        self.queued_bytes.fetch_sub(data_bytes(m), Ordering::Relaxed);
    }

    fn connect(&self) -> Result<(Stream, Peer), ConnectError> {
        let unreachable = ConnectError::Unreachable;
        let addr = crate::peers::resolve(&self.addr).map_err(|e| unreachable(io::Error::other(e)))?;
        let tcp = TcpStream::connect_timeout(&addr, self.shared.opts.connect_timeout).map_err(unreachable)?;
        tcp.set_nodelay(true).map_err(unreachable)?;
        tcp.set_write_timeout(Some(Duration::from_secs(5))).map_err(unreachable)?;
        let deadline = Instant::now() + self.shared.opts.handshake_timeout;
        let mut stream = match &self.shared.security.tls {
            Some(tls) => tls.connect(crate::net::tls::host_of(&self.addr), tcp).map_err(unreachable)?,
            None => Stream::Plain(tcp),
        };
        let peer = handshake::dial(&mut Deadline { stream: &mut stream, deadline }, &self.shared.local(), self.peer)
            .map_err(|e| match e {
                HandshakeError::Io(io) => unreachable(io),
                other => ConnectError::Refused(other),
            })?;
        self.shared.identity.observed(self.peer, peer.cluster);
        Ok((stream, peer))
    }

    /// Writes queued messages until the connection fails or stop. What
    /// is queued is taken out at once and sorted into control and data,
    /// each kept in order; every write sends all the control waiting,
    /// then data up to a batch. (One queue, not one per kind: a thread
    /// blocked on one channel wakes faster than one selecting over two.)
    fn pump(&self, mut stream: Stream) -> io::Result<()> {
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut control = VecDeque::new();
        let mut data = VecDeque::new();
        let sort = |m: Message, control: &mut VecDeque<Message>, data: &mut VecDeque<Message>| match is_data(&m) {
            true => data.push_back(m),
            false => control.push_back(m),
        };
        while !self.stopped() {
            if control.is_empty() && data.is_empty() {
                match self.queue.recv_timeout(self.shared.opts.poll_interval) {
                    Ok(m) => sort(m, &mut control, &mut data),
                    Err(RecvTimeoutError::Timeout) => {
                        // The peer restarted or went away while we had
                        // nothing to say (a follower says nothing to other
                        // followers): reconnect now rather than lose the
                        // next message, a vote perhaps, to a dead socket.
                        if stream.closed_by_peer() {
                            stream.close();
                            return Err(io::Error::new(io::ErrorKind::ConnectionReset, "closed by the peer"));
                        }
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return Ok(()),
                }
            }
            // Data taken out stays within the queue's own bound.
            while data.len() < self.shared.opts.queue_messages_max {
                match self.queue.try_recv() {
                    Ok(m) => sort(m, &mut control, &mut data),
                    Err(_) => break,
                }
            }
            buf.clear();
            let mut count = 0;
            for m in control.drain(..) {
                wire::encode_frame(&m, &mut buf);
                count += 1;
            }
            while buf.len() < self.shared.opts.batch_bytes_max
                && let Some(m) = data.pop_front()
            {
                wire::encode_frame(&m, &mut buf);
                self.forget(&m);
                count += 1;
            }
            if let Err(e) = stream.write_all(&buf) {
                // The batch may be partly delivered, and what was taken
                // out is lost with the connection; nothing is resent.
                let lost = count + data.len() as u64;
                for m in data.drain(..) {
                    self.forget(&m);
                }
                self.shared.counters.dropped.fetch_add(lost, Ordering::Relaxed);
                stream.close();
                return Err(e);
            }
            self.shared.counters.sent.fetch_add(count, Ordering::Relaxed);
        }
        stream.close();
        Ok(())
    }
}

fn cluster_of(e: &HandshakeError) -> Option<crate::identity::ClusterId> {
    match e {
        HandshakeError::ClusterMismatch { theirs, .. } => *theirs,
        _ => None,
    }
}

/// Reads and writes within a deadline for the whole exchange, however
/// slowly the other side dribbles its bytes.
struct Deadline<'a> {
    stream: &'a mut Stream,
    deadline: Instant,
}

impl Deadline<'_> {
    fn left(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "handshake deadline passed"));
        }
        Ok(left)
    }
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.left()?;
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

impl Write for Deadline<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.left()?;
        self.stream.set_write_timeout(Some(left))?;
        self.stream.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let left = self.left()?;
        self.stream.set_write_timeout(Some(left))?;
        self.stream.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// Connections still in their handshake, counted in all and by host.
#[derive(Default)]
struct Pending {
    total: usize,
    by_host: HashMap<IpAddr, usize>,
}

/// A place among the pending connections, given back when dropped.
struct PendingPlace {
    pending: Arc<Mutex<Pending>>,
    host: IpAddr,
}

impl Drop for PendingPlace {
    fn drop(&mut self) {
        let mut p = self.pending.lock();
        p.total -= 1;
        if let Some(n) = p.by_host.get_mut(&self.host) {
            *n -= 1;
            if *n == 0 {
                p.by_host.remove(&self.host);
            }
        }
    }
}

fn enter_pending(pending: &Arc<Mutex<Pending>>, host: IpAddr, opts: &TransportOptions) -> Option<PendingPlace> {
    let mut p = pending.lock();
    let from_host = p.by_host.get(&host).copied().unwrap_or(0);
    if p.total >= opts.pending_max || from_host >= opts.pending_per_host_max {
        return None;
    }
    p.total += 1;
    *p.by_host.entry(host).or_default() += 1;
    Some(PendingPlace { pending: pending.clone(), host })
}

/// Each authenticated peer's open inbound connections, oldest first, by a
/// handle that can close them.
#[derive(Default)]
struct Places {
    next: u64,
    by_peer: HashMap<NodeId, VecDeque<(u64, TcpStream)>>,
}

/// An authenticated connection's place, given back when it ends.
struct PeerPlace {
    places: Arc<Mutex<Places>>,
    peer: NodeId,
    key: u64,
}

impl Drop for PeerPlace {
    fn drop(&mut self) {
        let mut p = self.places.lock();
        if let Some(q) = p.by_peer.get_mut(&self.peer) {
            q.retain(|(k, _)| *k != self.key);
            if q.is_empty() {
                p.by_peer.remove(&self.peer);
            }
        }
    }
}

/// Takes a place for `peer`, closing its oldest connection if it holds
/// them all.
fn take_place(places: &Arc<Mutex<Places>>, peer: NodeId, stream: &Stream, max: usize) -> PeerPlace {
    let mut p = places.lock();
    p.next += 1;
    let key = p.next;
    let q = p.by_peer.entry(peer).or_default();
    while q.len() >= max {
        if let Some((_, old)) = q.pop_front() {
            let _ = old.shutdown(Shutdown::Both);
        }
    }
    if let Ok(handle) = stream.tcp().try_clone() {
        q.push_back((key, handle));
    }
    PeerPlace { places: places.clone(), peer, key }
}

fn accept_loop(listener: TcpListener, inbound: Sender<Message>, shared: Arc<Shared>) {
    let pending = Arc::new(Mutex::new(Pending::default()));
    let places = Arc::new(Mutex::new(Places::default()));
    for tcp in listener.incoming() {
        if shared.stopped() {
            return;
        }
        let tcp = match tcp {
            Ok(s) => s,
            Err(e) => {
                accept_failed(&e);
                continue;
            }
        };
        let Ok(addr) = tcp.peer_addr() else { continue };
        if shared.security.loopback_only() && !addr.ip().is_loopback() {
            shared.counters.auth_failures.fetch_add(1, Ordering::Relaxed);
            shared.refusals.warn(|| {
                format!(
                    "refusing a peer connection from {addr}: without --cluster-secret or TLS only loopback peers \
                     are accepted"
                )
            });
            continue;
        }
        let Some(place) = enter_pending(&pending, addr.ip(), &shared.opts) else {
            shared.counters.bad_connections.fetch_add(1, Ordering::Relaxed);
            shared.refusals.warn(|| format!("refusing a peer connection from {addr}: too many handshakes under way"));
            continue;
        };
        let reader = Reader { peer: addr.to_string(), inbound: inbound.clone(), shared: shared.clone() };
        let places = places.clone();
        let spawned =
            std::thread::Builder::new().name("peer-read".into()).spawn(move || reader.run(tcp, place, &places));
        if let Err(e) = spawned {
            log::error!("cannot start a reader thread: {e}");
        }
    }
}

/// The reader of one inbound connection.
struct Reader {
    peer: String,
    inbound: Sender<Message>,
    shared: Arc<Shared>,
}

impl Reader {
    fn run(self, tcp: TcpStream, pending: PendingPlace, places: &Arc<Mutex<Places>>) {
        let (mut stream, peer) = match self.handshake(tcp) {
            Ok(done) => done,
            Err(e) => {
                self.shared.handshake_failed(&format!("from {}", self.peer), &e);
                return;
            }
        };
        drop(pending);
        self.shared.identity.observed(peer.id, peer.cluster);
        let _place = take_place(places, peer.id, &stream, self.shared.opts.connections_per_peer_max);
        if let Err(e) = self.read_frames(&mut stream, peer) {
            log::debug!("peer connection from node {} ({}) ended: {e}", peer.id, self.peer);
        }
        stream.close();
    }

    fn handshake(&self, tcp: TcpStream) -> Result<(Stream, Peer), HandshakeError> {
        let deadline = Instant::now() + self.shared.opts.handshake_timeout;
        tcp.set_nodelay(true)?;
        let mut stream = match &self.shared.security.tls {
            Some(tls) => tls.accept_peer(tcp)?,
            None => Stream::Plain(tcp),
        };
        stream.set_read_timeout(Some(self.shared.opts.handshake_timeout))?;
        stream.complete_handshake()?;
        let peer = handshake::accept(&mut Deadline { stream: &mut stream, deadline }, &self.shared.local())?;
        Ok((stream, peer))
    }

    fn read_frames(&self, stream: &mut Stream, peer: Peer) -> io::Result<()> {
        stream.set_read_timeout(Some(self.shared.opts.poll_interval))?;
        let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
        let mut chunk = vec![0u8; 64 * 1024];
        // Offset of `buf[0]` in the stream of frames, for error messages.
        let mut offset = 0u64;
        loop {
            if self.shared.stopped() {
                return Ok(());
            }
            if let (Some(ours), Some(theirs)) = (self.shared.identity.get(), peer.cluster)
                && ours != theirs
            {
                // We took our cluster's id after this connection began.
                log::error!(
                    "closing the connection from node {}: it belongs to cluster {theirs}, this node to {}",
                    peer.id,
                    show(Some(ours))
                );
                self.shared.identity.observed(peer.id, Some(theirs));
                return Ok(());
            }
            let n = match stream.read(&mut chunk) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                // Interrupted: a signal (the node's SIGURG, README), not the peer.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            };
            buf.extend_from_slice(&chunk[..n]);
            let mut used_total = 0;
            loop {
                match wire::decode_frame(&buf[used_total..], peer.id, self.shared.local) {
                    Ok(Some((m, used))) => {
                        used_total += used;
                        self.shared.counters.received.fetch_add(1, Ordering::Relaxed);
                        if self.inbound.send(m).is_err() {
                            return Ok(());
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.shared.counters.bad_connections.fetch_add(1, Ordering::Relaxed);
                        log::warn!(
                            "dropping the connection from node {} ({}): {e} at byte {}",
                            peer.id,
                            self.peer,
                            offset + used_total as u64
                        );
                        return Ok(());
                    }
                }
            }
            buf.drain(..used_total);
            offset += used_total as u64;
        }
    }
}

#[cfg(test)]
mod tests;
