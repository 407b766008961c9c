//! Threads that read every idle client connection's requests (epoll), so
//! that a request does not wake a thread of its own.
//!
//! Each connection still has its thread (`node::client`), which owns the
//! connection and does everything that may block: transactions, replies it
//! writes itself, forwarding, a client that does not read. But between
//! requests a plain-TCP connection parks: it leaves itself in its [`Park`]
//! and sleeps there, and the poller, told by epoll that the socket has
//! input, takes the connection, reads, and submits what it can without
//! blocking (reads and writes of the data, whose replies the core then
//! sends itself, `node::mailbox`). Anything else (a command the connection
//! must answer itself, the end of the stream, a batch that came back) and
//! the poller hands the connection, with whatever it read, back to its
//! thread, which goes on as if it had read it.
//!
//! Measured in the README (Performance): under 64 connections a thread per
//! connection woke once per request, and on two vCPUs each wake-up was a
//! context switch; the poller takes the input of many connections per
//! wake-up.
//!
//! Who holds the connection is [`Owner`], changed only under the park's
//! lock; sockets are armed in epoll one event at a time (`EPOLLONESHOT`),
//! and re-armed only by whoever parks the connection again, so a
//! connection is never in two threads' hands. Lock order: a mailbox's lock
//! before a park's (the mailbox rings the park when a batch comes back);
//! the poller holds no park's lock while it works on the connection.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::client::Connection;
use crate::net::sys::{Epoll, Ready};

/// Sockets one epoll wait reports at most.
const EVENTS_MAX: usize = 256;

/// Threads waiting on the one epoll set (each socket still goes to one
/// thread at a time): on two vCPUs two measured better than one for reads
/// (README, Performance) and the same for writes.
const THREADS: usize = 2;

/// How often the poller looks at the node's stop flag.
const STOP_POLL: Duration = Duration::from_millis(250);

/// How often a poller thread looks for parked connections whose batch is
/// overdue (`State::overdue_at`).
const OVERDUE_SCAN: Duration = Duration::from_secs(1);

/// The poller and the connections parked with it.
pub struct Poller {
    epoll: Epoll,
    parks: Mutex<HashMap<u64, Arc<Park>>>,
    next_token: AtomicU64,
    /// Cleared when the poller's threads stop: nothing parks after.
    running: AtomicBool,
    /// When a thread last looked for overdue batches.
    scanned: Mutex<Instant>,
}

/// Where one connection waits while the poller watches its socket.
pub struct Park {
    token: u64,
    fd: RawFd,
    state: Mutex<State>,
    changed: Condvar,
    /// The connection's mailbox gave back a batch for its thread to finish.
    back: AtomicBool,
}

impl std::fmt::Debug for Park {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Park").field("token", &self.token).field("fd", &self.fd).finish()
    }
}

struct State {
    conn: Option<Box<Connection>>,
    owner: Owner,
    /// In the epoll set (added once, re-armed after).
    added: bool,
    /// When the poller last read input for the connection.
    last_input: Instant,
    /// The thread waits for the poller to put the connection back (a ring
    /// or its deadline came while the poller held it).
    wanted: bool,
    /// When the batch the connection has out will be overdue
    /// (`Connection::answer_deadline`), if one is. A poller thread wakes
    /// the connection's thread then, to take the batch back (or clears
    /// this, if the mailbox sent the batch meanwhile): the thread itself
    /// sleeps until its own deadline, or for good, so that idle
    /// connections cost no wake-ups. The safety net holds as long as a
    /// poller thread comes round to `wake_overdue`.
    overdue_at: Option<Instant>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    /// The connection's thread, which is not parked.
    Thread,
    /// In the park; the socket is armed in epoll.
    Parked,
    /// The poller is reading and submitting for it.
    Poller,
    /// The poller gave it back: the thread must go on with it.
    Returned,
}

/// What the poller decided after working on a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing needs the thread: park the connection again.
    Keep,
    /// The thread must take over (what was read is in the connection).
    ToThread,
}

/// Why a parked connection's thread woke up with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unparked {
    /// The poller read something it leaves to the thread.
    Input,
    /// The mailbox gave back a batch.
    Back,
    /// The deadline the thread set passed, or a batch it has out is
    /// overdue; `idle` is how long since the poller last read input.
    Deadline { idle: Duration },
    /// The socket could not be watched: go on as without a poller.
    Unwatched,
}

impl Poller {
    /// Starts the poller's threads; they end once `stop` is set, giving
    /// every parked connection back to its thread.
    pub fn spawn(stop: Arc<AtomicBool>) -> std::io::Result<Arc<Poller>> {
        let poller = Arc::new(Poller {
            epoll: Epoll::new()?,
            parks: Mutex::default(),
            next_token: AtomicU64::new(1),
            running: AtomicBool::new(true),
            scanned: Mutex::new(Instant::now()),
        });
        for started in 0..THREADS {
            let (run, stop) = (poller.clone(), stop.clone());
            let spawned = std::thread::Builder::new().name("client-poller".into()).spawn(move || run.run(&stop));
            match spawned {
                Ok(_) => {}
                Err(e) if started == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(poller)
    }

    /// A park for a connection on socket `fd`.
    pub fn park_for(&self, fd: RawFd) -> Arc<Park> {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let park = Arc::new(Park {
            token,
            fd,
            state: Mutex::new(State {
                conn: None,
                owner: Owner::Thread,
                added: false,
                last_input: Instant::now(),
                wanted: false,
                overdue_at: None,
            }),
            changed: Condvar::new(),
            back: AtomicBool::new(false),
        });
        self.parks.lock().insert(token, park.clone());
        park
    }

    /// The connection is ending (its thread holds it): its socket is no
    /// longer watched, before it closes.
    pub fn forget(&self, park: &Park) {
        self.parks.lock().remove(&park.token);
        if park.state.lock().added {
            self.epoll.remove(park.fd);
        }
    }

    fn run(&self, stop: &AtomicBool) {
        let mut ready = Ready::with_capacity(EVENTS_MAX);
        let mut tokens = Vec::with_capacity(EVENTS_MAX);
        while !stop.load(Ordering::SeqCst) {
            if let Err(e) = self.epoll.wait(&mut ready, STOP_POLL) {
                log::error!("the client poller cannot wait for input ({e}); connections read on their own threads");
                break;
            }
            tokens.clear();
            tokens.extend(ready.tokens());
            for &token in &tokens {
                let park = self.parks.lock().get(&token).cloned();
                if let Some(park) = park {
                    self.serve(&park);
                }
            }
            self.wake_overdue();
        }
        self.running.store(false, Ordering::SeqCst);
        let parks: Vec<Arc<Park>> = self.parks.lock().values().cloned().collect();
        for park in parks {
            park.give_back();
        }
    }

    /// Wakes the threads of parked connections whose batch is overdue, at
    /// most once per [`OVERDUE_SCAN`] and by one poller thread.
    fn wake_overdue(&self) {
        let now = Instant::now();
        {
            let Some(mut scanned) = self.scanned.try_lock() else { return };
            if now.duration_since(*scanned) < OVERDUE_SCAN {
                return;
            }
            *scanned = now;
        }
        let parks: Vec<Arc<Park>> = self.parks.lock().values().cloned().collect();
        for park in parks {
            let state = park.state.lock();
            let Some(overdue_at) = state.overdue_at.filter(|&d| state.owner == Owner::Parked && now >= d) else {
                continue;
            };
            let Some(mailbox) = state.conn.as_ref().map(|c| c.mailbox().clone()) else { continue };
            // The mailbox is asked without the park's lock (lock order).
            drop(state);
            if mailbox.sent() {
                // Its replies went out: nothing is overdue, and the
                // thread sleeps on.
                let mut state = park.state.lock();
                if state.owner == Owner::Parked && state.overdue_at == Some(overdue_at) {
                    state.overdue_at = None;
                }
            } else {
                park.changed.notify_all();
            }
        }
    }

    /// Reads and submits for a parked connection whose socket has input.
    fn serve(&self, park: &Park) {
        let mut conn = {
            let mut state = park.state.lock();
            if state.owner != Owner::Parked {
                // Its thread took it (a batch came back, a deadline): the
                // thread arms the socket again when it parks.
                return;
            }
            let Some(conn) = state.conn.take() else { return };
            state.owner = Owner::Poller;
            conn
        };
        // A bug that panics here must not take the poller, and every
        // parked client, with it: the connection's thread ends it.
        let verdict =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| conn.poll_step())).unwrap_or_else(|_| {
                log::error!("the client poller failed serving a connection; closing it");
                conn.fail(std::io::Error::other("the client poller failed serving this connection"));
                Verdict::ToThread
            });
        let overdue_at = conn.armed_deadline();
        let mut state = park.state.lock();
        state.conn = Some(conn);
        state.overdue_at = overdue_at;
        state.last_input = Instant::now();
        state.owner = Owner::Returned;
        let keep = verdict == Verdict::Keep && self.running.load(Ordering::SeqCst);
        if keep && self.epoll.arm(park.fd, park.token, !state.added).is_ok() {
            state.added = true;
            state.owner = Owner::Parked;
        }
        // The thread sleeps on: waking it is what the poller saves, unless
        // it has work (or a ring came while the poller held the connection).
        let wanted = std::mem::take(&mut state.wanted);
        let wake = wanted || state.owner == Owner::Returned || park.back.load(Ordering::Acquire);
        drop(state);
        if wake {
            park.changed.notify_all();
        }
    }
}

impl Park {
    /// Leaves `conn` here while the poller watches its socket, and waits
    /// until its thread must take it back: the poller returns it, its
    /// mailbox gives back a batch, `deadline` passes, or a batch it has
    /// out is overdue.
    pub fn wait(
        &self,
        poller: &Poller,
        mut conn: Box<Connection>,
        deadline: Option<Instant>,
    ) -> (Box<Connection>, Unparked) {
        // Before the park's lock: it looks at the mailbox (lock order).
        let overdue_at = conn.answer_deadline();
        let mut state = self.state.lock();
        // Checked under the park's lock, which the stopping poller takes
        // after clearing it (`give_back`).
        if !poller.running.load(Ordering::SeqCst) {
            return (conn, Unparked::Unwatched);
        }
        if let Err(e) = poller.epoll.arm(self.fd, self.token, !state.added) {
            log::debug!("cannot watch a client socket in epoll: {e}");
            return (conn, Unparked::Unwatched);
        }
        state.added = true;
        state.overdue_at = overdue_at;
        state.conn = Some(conn);
        state.owner = Owner::Parked;
        loop {
            let back = self.back.load(Ordering::Acquire);
            let now = Instant::now();
            let due = deadline.is_some_and(|d| now >= d) || state.overdue_at.is_some_and(|d| now >= d);
            let why = match state.owner {
                Owner::Returned => Some(Unparked::Input),
                Owner::Parked if back => Some(Unparked::Back),
                Owner::Parked if due => Some(Unparked::Deadline { idle: state.last_input.elapsed() }),
                _ => None,
            };
            if let Some(why) = why
                && let Some(conn) = state.conn.take()
            {
                state.owner = Owner::Thread;
                return (conn, why);
            }
            if state.owner == Owner::Poller && (back || due) {
                // It puts the connection back soon, and then says so.
                state.wanted = true;
                self.changed.wait(&mut state);
            } else if let Some(at) = deadline {
                self.changed.wait_until(&mut state, at);
            } else {
                // Until the poller, a ring, an overdue batch or the node
                // stopping wakes it.
                self.changed.wait(&mut state);
            }
        }
    }

    /// The batch that rang is settled: its ring is spent.
    pub fn clear_back(&self) {
        self.back.store(false, Ordering::Release);
    }

    /// The mailbox gave back a batch (called under the mailbox's lock).
    pub fn ring(&self) {
        self.back.store(true, Ordering::Release);
        let _state = self.state.lock();
        self.changed.notify_all();
    }

    /// The poller is stopping: a parked connection goes back to its thread.
    fn give_back(&self) {
        let mut state = self.state.lock();
        if state.owner == Owner::Parked {
            state.owner = Owner::Returned;
        }
        drop(state);
        self.changed.notify_all();
    }
}
