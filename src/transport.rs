//! The peer network of one node: a sender thread per peer that owns the
//! outbound connection, and an accept thread with a reader per inbound
//! connection. No async runtime: blocking sockets with timeouts.
//!
//! Outbound: `send` never blocks. Each peer has a bounded queue; when it is
//! full the message is dropped and counted (Raft retransmits what matters).
//! The sender writes everything waiting in one buffer with one write, and
//! after a failed write drops that batch, reconnects with bounded
//! exponential backoff, and goes on: a frame is written at most once, so a
//! forwarded proposal is never applied twice.
//!
//! Inbound: a connection must present a valid handshake within a timeout;
//! its frames are decoded (`wire`) and handed to the core's bounded channel
//! (a full channel blocks the reader, so TCP pushes back on the peer). Bad
//! bytes end that connection only, with one log line.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use parking_lot::Mutex;
use rand::RngExt;

use crate::limits::accept_failed;
use crate::raft::{Message, NodeId};
use crate::wire::{self, HANDSHAKE_BYTES, Handshake};

#[derive(Clone, Debug)]
pub struct TransportOptions {
    /// Messages queued per peer before new ones are dropped.
    pub queue_messages_max: usize,
    /// Bytes written to a peer in one write, at most (plus one frame).
    pub batch_bytes_max: usize,
    pub connect_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// An inbound connection must handshake within this.
    pub handshake_timeout: Duration,
    /// How often blocked threads look at the stop flag.
    pub poll_interval: Duration,
    pub inbound_connections_max: usize,
}

impl Default for TransportOptions {
    fn default() -> TransportOptions {
        TransportOptions {
            queue_messages_max: 4096,
            batch_bytes_max: 1024 * 1024,
            connect_timeout: Duration::from_millis(500),
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_millis(100),
            inbound_connections_max: 256,
        }
    }
}

/// Counters, for INFO and tests.
#[derive(Debug, Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub dropped: AtomicU64,
    pub reconnects: AtomicU64,
    pub received: AtomicU64,
    pub bad_connections: AtomicU64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    pub sent: u64,
    pub dropped: u64,
    pub reconnects: u64,
    pub received: u64,
    pub bad_connections: u64,
}

struct PeerSender {
    addr: String,
    queue: Sender<Message>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

pub struct Transport {
    local: NodeId,
    opts: TransportOptions,
    peers: Mutex<BTreeMap<NodeId, PeerSender>>,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    listen_addr: SocketAddr,
    accept_thread: Option<JoinHandle<()>>,
}

impl Transport {
    /// `listener` is bound already, so that a bad address fails at startup.
    pub fn start(
        local: NodeId,
        listener: TcpListener,
        peers: BTreeMap<NodeId, String>,
        inbound: Sender<Message>,
        opts: TransportOptions,
    ) -> io::Result<Transport> {
        let listen_addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let accept_thread = {
            let (stop, counters, opts) = (stop.clone(), counters.clone(), opts.clone());
            std::thread::Builder::new()
                .name("peer-accept".into())
                .spawn(move || accept_loop(listener, local, inbound, stop, counters, opts))?
        };
        let transport = Transport {
            local,
            opts,
            peers: Mutex::new(BTreeMap::new()),
            stop,
            counters,
            listen_addr,
            accept_thread: Some(accept_thread),
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
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        match peer.queue.try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
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
            if id == self.local || peers.contains_key(&id) {
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
        let (queue, rx) = crossbeam_channel::bounded(self.opts.queue_messages_max);
        let stop = Arc::new(AtomicBool::new(false));
        let sender = PeerWriter {
            local: self.local,
            peer: id,
            addr: addr.clone(),
            queue: rx,
            stop: stop.clone(),
            all_stop: self.stop.clone(),
            counters: self.counters.clone(),
            opts: self.opts.clone(),
        };
        let thread = std::thread::Builder::new().name(format!("peer-send-{id}")).spawn(move || sender.run())?;
        Ok(PeerSender { addr, queue, stop, thread })
    }

    pub fn stats(&self) -> TransportStats {
        let c = &self.counters;
        TransportStats {
            sent: c.sent.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            reconnects: c.reconnects.load(Ordering::Relaxed),
            received: c.received.load(Ordering::Relaxed),
            bad_connections: c.bad_connections.load(Ordering::Relaxed),
        }
    }

    /// Stops every thread this transport started and waits for them (each
    /// looks at the stop flag at least every poll interval).
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept call.
        let _ = TcpStream::connect_timeout(&self.listen_addr, Duration::from_millis(200));
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
        let peers = std::mem::take(&mut *self.peers.lock());
        for (_, p) in peers {
            p.stop.store(true, Ordering::SeqCst);
            let _ = p.thread.join();
        }
    }
}

/// The sender thread of one peer.
struct PeerWriter {
    local: NodeId,
    peer: NodeId,
    addr: String,
    queue: Receiver<Message>,
    stop: Arc<AtomicBool>,
    all_stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    opts: TransportOptions,
}

impl PeerWriter {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.all_stop.load(Ordering::SeqCst)
    }

    fn run(self) {
        let mut backoff = self.opts.backoff_min;
        let mut was_connected = false;
        while !self.stopped() {
            match self.connect() {
                Ok(stream) => {
                    if was_connected {
                        self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    was_connected = true;
                    backoff = self.opts.backoff_min;
                    if let Err(e) = self.pump(stream) {
                        log::debug!("connection to node {} at {} lost: {e}", self.peer, self.addr);
                    }
                }
                Err(e) => {
                    log::debug!("cannot reach node {} at {}: {e}", self.peer, self.addr);
                    self.wait(backoff);
                    // Jitter keeps restarted peers from dialing in lockstep.
                    let jitter = rand::rng().random_range(0.5..1.5);
                    backoff = backoff.mul_f64(2.0 * jitter).clamp(self.opts.backoff_min, self.opts.backoff_max);
                }
            }
        }
    }

    /// Sleeps for `d`, dropping what piles up meanwhile beyond what a
    /// reconnected peer could use, and waking early on stop.
    fn wait(&self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until && !self.stopped() {
            std::thread::sleep(self.opts.poll_interval.min(until - Instant::now()));
        }
        let keep = self.opts.queue_messages_max / 4;
        while self.queue.len() > keep {
            if self.queue.try_recv().is_ok() {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn connect(&self) -> io::Result<TcpStream> {
        let addr = crate::peers::resolve(&self.addr).map_err(io::Error::other)?;
        let mut stream = TcpStream::connect_timeout(&addr, self.opts.connect_timeout)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(&wire::encode_handshake(Handshake { from: self.local, to: self.peer }))?;
        log::debug!("connected to node {} at {}", self.peer, self.addr);
        Ok(stream)
    }

    /// Writes queued messages until the connection fails or stop.
    fn pump(&self, mut stream: TcpStream) -> io::Result<()> {
        let mut buf = Vec::with_capacity(64 * 1024);
        while !self.stopped() {
            let first = match self.queue.recv_timeout(self.opts.poll_interval) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            };
            buf.clear();
            wire::encode_frame(&first, &mut buf);
            let mut count = 1;
            while buf.len() < self.opts.batch_bytes_max {
                match self.queue.try_recv() {
                    Ok(m) => {
                        wire::encode_frame(&m, &mut buf);
                        count += 1;
                    }
                    Err(_) => break,
                }
            }
            if let Err(e) = stream.write_all(&buf) {
                // The batch may be partly delivered; it is never resent.
                self.counters.dropped.fetch_add(count, Ordering::Relaxed);
                let _ = stream.shutdown(Shutdown::Both);
                return Err(e);
            }
            self.counters.sent.fetch_add(count, Ordering::Relaxed);
        }
        let _ = stream.shutdown(Shutdown::Both);
        Ok(())
    }
}

fn accept_loop(
    listener: TcpListener,
    local: NodeId,
    inbound: Sender<Message>,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    opts: TransportOptions,
) {
    let open = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                accept_failed(&e);
                continue;
            }
        };
        let peer = stream.peer_addr().map_or_else(|_| "?".to_string(), |a| a.to_string());
        if open.fetch_add(1, Ordering::SeqCst) >= opts.inbound_connections_max {
            open.fetch_sub(1, Ordering::SeqCst);
            log::warn!("refusing peer connection from {peer}: {} already open", opts.inbound_connections_max);
            continue;
        }
        let reader = Reader {
            local,
            peer,
            inbound: inbound.clone(),
            stop: stop.clone(),
            counters: counters.clone(),
            opts: opts.clone(),
        };
        let open_ = open.clone();
        let spawned = std::thread::Builder::new().name("peer-read".into()).spawn(move || {
            reader.run(stream);
            open_.fetch_sub(1, Ordering::SeqCst);
        });
        if let Err(e) = spawned {
            open.fetch_sub(1, Ordering::SeqCst);
            log::error!("cannot start a reader thread: {e}");
        }
    }
}

/// The reader of one inbound connection.
struct Reader {
    local: NodeId,
    peer: String,
    inbound: Sender<Message>,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    opts: TransportOptions,
}

impl Reader {
    fn run(self, mut stream: TcpStream) {
        let handshake = match self.handshake(&mut stream) {
            Ok(h) => h,
            Err(e) => {
                self.counters.bad_connections.fetch_add(1, Ordering::Relaxed);
                log::warn!("peer connection from {} refused: {e}", self.peer);
                return;
            }
        };
        if let Err(e) = self.read_frames(&mut stream, handshake) {
            log::debug!("peer connection from node {} ({}) ended: {e}", handshake.from, self.peer);
        }
        let _ = stream.shutdown(Shutdown::Both);
    }

    fn handshake(&self, stream: &mut TcpStream) -> io::Result<Handshake> {
        stream.set_read_timeout(Some(self.opts.handshake_timeout))?;
        let mut bytes = [0u8; HANDSHAKE_BYTES];
        stream.read_exact(&mut bytes)?;
        wire::decode_handshake(&bytes, self.local).map_err(io::Error::other)
    }

    fn read_frames(&self, stream: &mut TcpStream, h: Handshake) -> io::Result<()> {
        stream.set_read_timeout(Some(self.opts.poll_interval))?;
        let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
        let mut chunk = vec![0u8; 64 * 1024];
        // Offset of `buf[0]` in the stream, for error messages.
        let mut offset = HANDSHAKE_BYTES as u64;
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            let n = match stream.read(&mut chunk) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
                Err(e) => return Err(e),
            };
            buf.extend_from_slice(&chunk[..n]);
            let mut used_total = 0;
            loop {
                match wire::decode_frame(&buf[used_total..], h.from, self.local) {
                    Ok(Some((m, used))) => {
                        used_total += used;
                        self.counters.received.fetch_add(1, Ordering::Relaxed);
                        if self.inbound.send(m).is_err() {
                            return Ok(());
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.counters.bad_connections.fetch_add(1, Ordering::Relaxed);
                        log::warn!(
                            "dropping the connection from node {} ({}): {e} at byte {}",
                            h.from,
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
