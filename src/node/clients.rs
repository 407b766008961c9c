//! The connected clients, as the node knows them: how many, how much each
//! holds (request bytes still arriving, replies not yet sent), and what the
//! limits did (SPEC §6). INFO `clients` and `stats` read it.

use std::collections::BTreeMap;
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

#[derive(Debug)]
pub struct Registry {
    pub max_clients: usize,
    pub counters: LimitCounters,
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

    /// Every connected client's figures, oldest first.
    pub fn list(&self) -> Vec<Arc<ClientInfo>> {
        self.entries.lock().values().cloned().collect()
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
