//! The connected clients, as the node knows them: how many, how much each
//! holds (request bytes still arriving, replies not yet sent), and what the
//! limits did (README, Limits). INFO `clients` and `stats` read it.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::os::fd::{FromRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

/// One connection's figures, updated by its own thread.
#[derive(Debug)]
pub struct ClientInfo {
    pub id: u64,
    pub addr: String,
    pub since: Instant,
    /// Bytes of the request now arriving.
    pub input_bytes: AtomicUsize,
    /// Bytes of replies ready and not yet sent.
    pub output_bytes: AtomicUsize,
    /// What CLIENT LIST shows beside the figures.
    pub meta: Mutex<ClientMeta>,
    /// The socket's descriptor while the connection owns it, for CLIENT
    /// KILL to shut it down. Not a duplicate: a second descriptor per
    /// client would halve the clients the open-file limit allows.
    pub socket: Mutex<Option<RawFd>>,
    /// CLIENT KILL closed it: no longer listed or killed again while its
    /// thread winds down.
    pub killed: std::sync::atomic::AtomicBool,
}

/// A connection's name and habits (CLIENT SETNAME, SETINFO, HELLO).
#[derive(Debug, Default, Clone)]
pub struct ClientMeta {
    pub name: String,
    pub lib_name: String,
    pub lib_ver: String,
    pub user: String,
    pub resp: i64,
    /// The last command, as `name` or `name|sub`.
    pub cmd: String,
    pub last_active: Option<Instant>,
    /// Commands queued in MULTI, or -1 outside one.
    pub multi: i64,
}

impl ClientInfo {
    /// This connection as a line of CLIENT LIST, Redis's fields.
    pub fn line(&self) -> String {
        let m = self.meta.lock().clone();
        let now = Instant::now();
        let idle = m.last_active.map_or(0, |t| now.duration_since(t).as_secs());
        format!(
            "id={} addr={} name={} age={} idle={idle} flags=N db=0 sub=0 psub=0 ssub=0 multi={} qbuf={} \
             omem={} cmd={} user={} resp={} lib-name={} lib-ver={}",
            self.id,
            self.addr,
            m.name,
            now.duration_since(self.since).as_secs(),
            m.multi,
            self.input_bytes.load(Ordering::Relaxed),
            self.output_bytes.load(Ordering::Relaxed),
            if m.cmd.is_empty() { "NULL" } else { &m.cmd },
            if m.user.is_empty() { "default" } else { &m.user },
            m.resp.max(2),
            m.lib_name,
            m.lib_ver,
        )
    }

    /// Closes the connection from another thread (CLIENT KILL): shuts the
    /// socket down, which wakes its thread from a read.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Relaxed);
        let socket = self.socket.lock();
        if let Some(fd) = *socket {
            // SAFETY: the connection clears `socket` (under this lock)
            // before it closes the descriptor, so `fd` is still its open
            // socket here; ManuallyDrop keeps this borrowed handle from
            // closing it.
            let stream = std::mem::ManuallyDrop::new(unsafe { TcpStream::from_raw_fd(fd) });
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Clears `ClientInfo::socket` when dropped: declared after the stream it
/// names, it is dropped before the stream closes.
pub struct SocketHandle<'a>(pub &'a ClientInfo);

impl<'a> SocketHandle<'a> {
    pub fn new(info: &'a ClientInfo, fd: RawFd) -> SocketHandle<'a> {
        *info.socket.lock() = Some(fd);
        SocketHandle(info)
    }
}

impl Drop for SocketHandle<'_> {
    fn drop(&mut self) {
        *self.0.socket.lock() = None;
    }
}

/// What the limits did, since the node started.
#[derive(Debug, Default)]
pub struct LimitCounters {
    /// Connections refused past `--maxclients`.
    pub rejected: AtomicU64,
    /// Clients disconnected past `--client-output-limit`.
    pub output_disconnects: AtomicU64,
    /// Clients disconnected for holding too much of a request still arriving.
    pub input_disconnects: AtomicU64,
    /// Clients disconnected after `--client-timeout` of silence.
    pub idle_disconnects: AtomicU64,
}

/// Requests from clients, for INFO's stats.
#[derive(Debug, Default)]
pub struct CommandCounters {
    /// Every request read from a client (`total_commands_processed`).
    pub processed: AtomicU64,
    /// Those a client poller read and submitted, waking no connection
    /// thread (`node::poller`).
    pub by_poller: AtomicU64,
}

#[derive(Debug)]
pub struct Registry {
    pub max_clients: usize,
    pub counters: LimitCounters,
    pub commands: CommandCounters,
    next_id: AtomicU64,
    entries: Mutex<BTreeMap<u64, Arc<ClientInfo>>>,
}

/// A connection's place among the clients; given back when dropped.
pub struct Place {
    registry: Arc<Registry>,
    pub info: Arc<ClientInfo>,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.registry.entries.lock().remove(&self.info.id);
    }
}

impl Registry {
    pub fn new(max_clients: usize) -> Arc<Registry> {
        Arc::new(Registry {
            max_clients,
            counters: LimitCounters::default(),
            commands: CommandCounters::default(),
            next_id: AtomicU64::new(1),
            entries: Mutex::new(BTreeMap::new()),
        })
    }

    /// A place for a new connection, or `None` at `max_clients` (counted).
    pub fn admit(self: &Arc<Registry>, addr: String) -> Option<Place> {
        let mut entries = self.entries.lock();
        if entries.len() >= self.max_clients {
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let info = Arc::new(ClientInfo {
            id,
            addr,
            since: Instant::now(),
            input_bytes: AtomicUsize::new(0),
            output_bytes: AtomicUsize::new(0),
            meta: Mutex::new(ClientMeta { multi: -1, resp: 2, ..ClientMeta::default() }),
            socket: Mutex::new(None),
            killed: std::sync::atomic::AtomicBool::new(false),
        });
        entries.insert(id, info.clone());
        Some(Place { registry: self.clone(), info })
    }

    pub fn connected(&self) -> usize {
        self.entries.lock().len()
    }

    /// The largest request still arriving and the most replies unsent, over
    /// the connected clients.
    pub fn largest_buffers(&self) -> (usize, usize) {
        let entries = self.entries.lock();
        let input = entries.values().map(|c| c.input_bytes.load(Ordering::Relaxed)).max().unwrap_or(0);
        let output = entries.values().map(|c| c.output_bytes.load(Ordering::Relaxed)).max().unwrap_or(0);
        (input, output)
    }

    /// Every connected client's figures, oldest first (not those CLIENT
    /// KILL closed).
    pub fn list(&self) -> Vec<Arc<ClientInfo>> {
        self.entries.lock().values().filter(|c| !c.killed.load(Ordering::Relaxed)).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_bounded_counted_and_given_back() {
        let r = Registry::new(2);
        let a = r.admit("a".into()).unwrap();
        let _b = r.admit("b".into()).unwrap();
        assert!(r.admit("c".into()).is_none());
        assert_eq!(r.counters.rejected.load(Ordering::Relaxed), 1);
        a.info.output_bytes.store(77, Ordering::Relaxed);
        assert_eq!(r.largest_buffers(), (0, 77));
        drop(a);
        assert_eq!(r.connected(), 1);
        assert!(r.admit("d".into()).is_some());
    }
}
