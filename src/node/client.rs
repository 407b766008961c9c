//! Client connections: an accept thread and one thread per connection
//! speaking RESP (src/resp.rs) and handing commands to the core thread.
//! Between requests a plain-TCP connection parks with the poller
//! (`node::poller`), which reads its requests and submits the reads and
//! writes of the data itself; the thread takes over for everything else.
//!
//! A connection reads every request the client has pipelined, submits them
//! to the core in order, and writes the replies in order with one write.
//! Runs of writes (or of reads) are pipelined, but a read waits for the
//! connection's earlier writes to be answered, and a write for its earlier
//! reads: a Redis client expects the commands of one connection to take
//! effect in order, `SET k v` then `GET k` seeing `v` and `GET k` then
//! `SET k w` not seeing `w`, even pipelined.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::clients::{ClientInfo, Place, Registry};
use super::mailbox::{Mailbox, Settled, Wake};
use super::poller::{Park, Poller, Unparked, Verdict};

use super::session::{self, Multi, Queued, Session};
use crate::auth::{Role, Users};
use crate::command::table::Class;
use crate::command::{self, ClientCommand, RaftCommand};
use crate::kv::{Cmd, Watch};
use crate::limits::accept_failed;
use crate::net::ratelimit::RateLimited;
use crate::net::sys::Waker;
use crate::net::{Stream, TlsSettings};
use crate::resp::{self, PendingBudget, ReadError, Reply, RequestReader};

/// Requests read from one connection before their replies are written.
pub const PIPELINE_REQUESTS_MAX: usize = 1024;

/// README, Limits: the default `--maxclients`; one more is told so and closed (as
/// Redis does).
pub const CONNECTIONS_MAX: usize = 10_000;

/// What a connection asks of the core thread.
#[derive(Debug)]
pub enum Request {
    /// A valid write command, by its arguments.
    Write(Vec<Vec<u8>>),
    /// EXEC: the queued commands and the watched keys' marks.
    Exec {
        watches: Vec<Watch>,
        commands: Vec<Vec<Vec<u8>>>,
    },
    Read {
        op: ReadRequest,
        local: bool,
    },
    Info {
        sections: Vec<String>,
    },
    Raft(RaftCommand),
    Role,
    Sentinel(Vec<Vec<u8>>),
}

/// A read of the store.
#[derive(Debug)]
pub enum ReadRequest {
    Cmd(Cmd),
    /// WATCH: the keys' marks, as an array of integers.
    Watch(Vec<Vec<u8>>),
}

/// The core's answer to one request.
#[derive(Debug)]
pub enum Answer {
    Reply(Reply),
    /// Only the leader can do this: send the command to its client address.
    Forward {
        client_addr: String,
    },
}

/// A request with the way back to its connection.
#[derive(Debug)]
pub struct Submission {
    pub request: Request,
    pub seq: u64,
    pub reply_to: Mailbox,
}

#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// How long the core may take to answer before the connection gives up
    /// on it; the core answers `-TIMEOUT` itself well before this.
    pub answer_timeout: Duration,
    /// `--users`: every connection must authenticate. Without it, only
    /// loopback clients are served (protected mode, README, Security).
    pub users: Option<Arc<Users>>,
    /// TLS from the first byte.
    pub tls: Option<TlsSettings>,
    /// README, Limits: unsent replies a client may hold before it is disconnected.
    pub output_limit: usize,
    /// README, Limits: a client silent this long is closed (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// The connected clients and what the limits did.
    pub registry: Arc<Registry>,
    /// The node's budget for requests still arriving.
    pub pending: Arc<PendingBudget>,
    /// What CONFIG GET shows: the node's settings by Redis-style name.
    pub settings: Arc<Vec<(String, String)>>,
    /// The core's word on this node's role (for `-READONLY` after a
    /// demotion).
    pub role: Arc<super::logging::LogContext>,
}

/// The Redis version HELLO and INFO report: the one whose commands and
/// replies raftkv follows (client libraries choose features by it).
pub const REDIS_VERSION: &str = "7.2.0";

/// Replies are written to the socket in pieces of about this much.
const OUT_CHUNK_BYTES: usize = 64 * 1024;

/// How long a write waits before the connection looks at what piles up.
const WRITE_SLICE: Duration = Duration::from_millis(200);

/// A client must complete the TLS handshake within this.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// README, Security: what a client off loopback is told without `--users`.
const DENIED: &str = "-DENIED raftkv is in protected mode: without --users it serves clients on loopback addresses \
only. Start the node with --users FILE (lines `<name> <sha256 hex of password> <role>`, role read, write or admin) \
to serve clients from other hosts, who then authenticate with AUTH.\r\n";

/// Accepts client connections until `stop` is set (and a connection wakes
/// the accept call up).
pub fn spawn_listener(
    listener: TcpListener,
    to_core: Sender<Submission>,
    stop: Arc<AtomicBool>,
    opts: ClientOptions,
) -> io::Result<JoinHandle<()>> {
    let poller = match Poller::spawn(stop.clone()) {
        Ok(poller) => Some(poller),
        Err(e) => {
            log::warn!("cannot start the client poller ({e}); each connection reads on its own thread");
            None
        }
    };
    std::thread::Builder::new().name("client-accept".into()).spawn(move || {
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
            let addr = stream.peer_addr().map_or_else(|_| "?".to_string(), |a| a.to_string());
            let Some(place) = opts.registry.admit(addr) else {
                // README, Limits; a TLS client cannot read it, but is closed alike.
                let _ = (&stream).write_all(b"-ERR max number of clients reached\r\n");
                LIMIT_LOG.warn(|| format!("refusing a client: --maxclients {} reached", opts.registry.max_clients));
                continue;
            };
            let (to_core, opts, poller) = (to_core.clone(), opts.clone(), poller.clone());
            let spawned = std::thread::Builder::new().name("client".into()).spawn(move || {
                match open_connection(stream, &opts) {
                    Ok(Some(stream)) => {
                        if let Err(e) = serve(stream, to_core, &opts, &place, poller.as_ref()) {
                            log::debug!("client connection ended: {e}");
                        }
                    }
                    Ok(None) => {}
                    Err(e) => log::debug!("client connection refused: {e}"),
                }
                drop(place);
            });
            if let Err(e) = spawned {
                log::warn!("cannot start a thread for a client connection: {e}");
            }
        }
    })
}

/// What a submitted request is, for keeping a connection's commands in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Write,
    Read,
    Other,
}

/// Where each reply of a pipelined batch comes from.
enum Slot {
    Ready(Reply),
    Waiting { seq: u64, args: Vec<Vec<u8>>, then: Then },
}

/// What the connection does with an answer before replying.
enum Then {
    Reply,
    /// WATCH: keep the marks, answer +OK.
    Watch(Vec<Vec<u8>>),
    /// EXEC: put the immediate replies back among the store's.
    Exec(Vec<(usize, Reply)>),
}

/// Says TLS if the node speaks it, and turns away clients off loopback in
/// protected mode (over TLS too, so that they can read why).
fn open_connection(tcp: TcpStream, opts: &ClientOptions) -> io::Result<Option<Stream>> {
    tcp.set_nodelay(true)?;
    let loopback = tcp.peer_addr()?.ip().is_loopback();
    let mut stream = match &opts.tls {
        Some(tls) => {
            tcp.set_read_timeout(Some(TLS_HANDSHAKE_TIMEOUT))?;
            tcp.set_write_timeout(Some(TLS_HANDSHAKE_TIMEOUT))?;
            let mut s = tls.accept_client(tcp)?;
            s.complete_handshake()?;
            s.set_read_timeout(None)?;
            s.set_write_timeout(None)?;
            s
        }
        None => Stream::Plain(tcp),
    };
    if opts.users.is_none() && !loopback {
        let _ = stream.write_all(DENIED.as_bytes());
        stream.close();
        return Ok(None);
    }
    Ok(Some(stream))
}

/// Who a connection is, once it authenticated (with `--users`).
struct Login {
    user: String,
    role: Role,
    /// Kept in memory only, to forward administrative commands to the
    /// leader's client port as the same user.
    password: Vec<u8>,
}

pub struct Connection {
    stream: RequestReader<Stream>,
    to_core: Sender<Submission>,
    mailbox: Mailbox,
    answers: HashMap<u64, Answer>,
    next_seq: u64,
    session: Session,
    slots: Vec<Slot>,
    /// The kind of the requests submitted since the last `resolve`.
    in_flight: Option<Kind>,
    out: Vec<u8>,
    opts: ClientOptions,
    login: Option<Login>,
    peer: String,
    info: Arc<ClientInfo>,
    /// Bytes of the answers received and not yet written (in `answers`).
    answers_bytes: usize,
    /// This connection wrote to this node while it led (`demoted`).
    wrote_to_leader: bool,
    /// The socket, for a poster to write replies to (plain TCP only).
    fd: Option<RawFd>,
    /// The batch handed to the mailbox (`finish_batch`), until it settles.
    armed: Option<Vec<Slot>>,
    /// When `armed` was handed over.
    armed_at: Instant,
    /// When the mailbox sent the last batch taken back as sent.
    replied_at: Instant,
    /// What the poller read and left to this connection's thread: the
    /// next request, or the error that ended reading.
    unread: Option<Result<Option<Vec<Vec<u8>>>, ReadError>>,
    /// This connection's thread and park, told when an armed batch comes
    /// back.
    wake: Wake,
}

/// How long a connection with a batch handed over waits for input before
/// it looks at the batch again: a bound on a lost wake (`sys::Waker`), far
/// above a reply's usual time so that waiting costs no wakeups.
const ARMED_POLL: Duration = Duration::from_millis(10);

/// Tells the mailbox the socket is closing, before it closes: declared
/// after the connection, it is dropped first.
struct CloseMailbox(Mailbox);

impl Drop for CloseMailbox {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Takes the socket out of the poller's set before it closes (declared
/// after the connection, it is dropped first).
struct Unwatch<'a>(&'a Poller, Arc<Park>);

impl Drop for Unwatch<'_> {
    fn drop(&mut self) {
        self.0.forget(&self.1);
    }
}

/// Reads of one connection's socket per poller wake-up at most: enough for
/// a pipeline, few enough that a client streaming requests does not hold
/// up the others.
const POLL_READS_MAX: usize = 4;

fn serve(
    stream: Stream,
    to_core: Sender<Submission>,
    opts: &ClientOptions,
    place: &Place,
    poller: Option<&Arc<Poller>>,
) -> io::Result<()> {
    let peer = place.info.addr.clone();
    stream.set_read_timeout(opts.idle_timeout)?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(stream.tcp());
    let plain = matches!(stream, Stream::Plain(_));
    // Plain TCP only: a TLS session's state belongs to the thread.
    let parking = poller.filter(|_| plain).map(|p| (p, p.park_for(fd)));
    let mut conn = Box::new(Connection {
        stream: RequestReader::new(stream).with_budget(opts.pending.clone()),
        to_core,
        mailbox: Mailbox::default(),
        answers: HashMap::new(),
        next_seq: 0,
        session: Session::default(),
        slots: Vec::new(),
        in_flight: None,
        out: Vec::new(),
        opts: opts.clone(),
        login: None,
        peer,
        info: place.info.clone(),
        answers_bytes: 0,
        wrote_to_leader: false,
        fd: plain.then_some(fd),
        armed: None,
        armed_at: Instant::now(),
        replied_at: Instant::now(),
        unread: None,
        wake: Wake { thread: Waker::current(), park: parking.as_ref().map(|(_, park)| park.clone()) },
    });
    let _closing = CloseMailbox(conn.mailbox.clone());
    let _unwatch = parking.as_ref().map(|(poller, park)| Unwatch(poller, park.clone()));
    let _killable = super::clients::SocketHandle::new(&place.info, fd);
    loop {
        if let Some((poller, park)) = &parking
            && conn.parkable()
        {
            let (back, idle) = park_until_needed(conn, poller, park);
            conn = back;
            if idle {
                conn.count_idle();
                conn.resolve()?;
                return conn.flush();
            }
        }
        // Block for one request (unless the poller left a batch to finish),
        // then take every one already read.
        let mut quit = false;
        let mut end = false;
        if conn.slots.is_empty() || (conn.has_input() && conn.slots.len() < PIPELINE_REQUESTS_MAX) {
            match next(&mut conn)? {
                Some(args) => quit |= conn.handle(args)?,
                None => end = true,
            }
        }
        while !quit && !end && conn.has_input() && conn.slots.len() < PIPELINE_REQUESTS_MAX {
            match next(&mut conn)? {
                Some(args) => quit |= conn.handle(args)?,
                None => end = true,
            }
        }
        if quit || end {
            conn.resolve()?;
            return conn.flush();
        }
        conn.finish_batch()?;
    }
}

/// Leaves the connection with the poller until its thread is needed;
/// whether it was idle past `--client-timeout`.
fn park_until_needed(mut conn: Box<Connection>, poller: &Poller, park: &Park) -> (Box<Connection>, bool) {
    let idle_limit = conn.opts.idle_timeout;
    let mut idle_deadline = idle_limit.map(|t| Instant::now() + t);
    loop {
        // The park also gives the connection back when a batch it has out
        // (armed here or by the poller) is overdue: the thread takes the
        // batch back, and `await_input` settles it.
        let (back, why) = park.wait(poller, conn, idle_deadline);
        conn = back;
        let Unparked::Deadline { idle } = why else { return (conn, false) };
        let overdue_at = conn.answer_deadline();
        let now = Instant::now();
        if overdue_at.is_some_and(|d| now >= d) {
            return (conn, false);
        }
        if let Some(limit) = idle_limit {
            // A client waiting for a reply is not idle (nor was it before
            // the poller: `await_input` waits for the batch first).
            if overdue_at.is_some() {
                idle_deadline = Some(now + limit);
                continue;
            }
            // Idle since its last request or the last reply the core sent
            // it, whichever came later.
            let idle = idle.min(conn.replied_at.elapsed());
            if idle >= limit {
                return (conn, true);
            }
            idle_deadline = Some(now + (limit - idle));
        }
    }
}

/// The next request, or `None` at the end of the connection. A protocol
/// error is answered and ends the connection (docs/commands.md).
fn next(conn: &mut Connection) -> io::Result<Option<Vec<Vec<u8>>>> {
    let result = match conn.unread.take() {
        Some(result) => result,
        None => {
            if conn.stream.buffered_bytes() == 0 {
                conn.await_input()?;
            }
            conn.stream.next_request()
        }
    };
    conn.info.input_bytes.store(conn.stream.pending_request_bytes(), Ordering::Relaxed);
    match result {
        Ok(request) => Ok(request),
        Err(ReadError::Io(e)) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
            // Silent for --client-timeout: closed, as Redis does.
            conn.count_idle();
            Ok(None)
        }
        Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::Other && e.to_string().contains("still arriving") => {
            conn.opts.registry.counters.input_disconnects.fetch_add(1, Ordering::Relaxed);
            LIMIT_LOG.warn(|| format!("disconnecting client {}: {e}", conn.peer));
            let reply = Reply::err(format!("request too large: {e}"));
            conn.slots.push(Slot::Ready(reply));
            conn.resolve()?;
            conn.flush()?;
            Ok(None)
        }
        Err(ReadError::Protocol(e)) => {
            conn.resolve()?;
            conn.slots.push(Slot::Ready(e.reply()));
            conn.resolve()?;
            conn.flush()?;
            Ok(None)
        }
        Err(ReadError::Io(e)) => Err(conn.finish_then(e)),
        Err(e) => Err(conn.finish_then(io::Error::other(e.to_string()))),
    }
}

impl Connection {
    /// A request read and not yet handled.
    fn has_input(&self) -> bool {
        self.unread.is_some() || self.stream.buffered_bytes() > 0
    }

    /// Nothing read is left to handle or reply to: the connection can wait
    /// for input with the poller.
    fn parkable(&self) -> bool {
        self.slots.is_empty() && !self.has_input() && self.out.is_empty()
    }

    /// Ends the connection from its thread with `e`, after replying to
    /// what was read (the poller could not go on with it).
    pub(super) fn fail(&mut self, e: io::Error) {
        self.unread = Some(Err(ReadError::Io(e)));
    }

    /// Closing for `--client-timeout`, as Redis does.
    fn count_idle(&self) {
        self.opts.registry.counters.idle_disconnects.fetch_add(1, Ordering::Relaxed);
        log::debug!("closing client {}: idle for {:?}", self.peer, self.opts.idle_timeout.unwrap_or_default());
    }

    /// The poller's turn with a parked connection whose socket has input
    /// (module docs of `poller`): reads what has arrived, submits the
    /// reads and writes of the data, and hands the batch to the mailbox.
    /// Never blocks: whatever might is left to the connection's thread.
    pub(super) fn poll_step(&mut self) -> Verdict {
        let Some(fd) = self.fd else { return Verdict::ToThread };
        // The reply to the last batch must leave first.
        if self.batch_still_out() {
            return Verdict::ToThread;
        }
        for _ in 0..POLL_READS_MAX {
            if self.has_input() {
                return Verdict::ToThread;
            }
            let mut drained = false;
            let read = self.stream.fill_with(|buf| {
                let n = crate::net::sys::recv_now(fd, buf)?;
                // Less than asked for: the socket held no more just now
                // (a receive to find that out would cost a system call).
                drained = n < buf.len();
                Ok(n)
            });
            match read {
                // The end of the stream, or an error: the thread reads it again.
                Ok(0) => return Verdict::ToThread,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Verdict::ToThread,
            }
            while self.slots.len() < PIPELINE_REQUESTS_MAX {
                let result = self.stream.next_buffered();
                self.info.input_bytes.store(self.stream.pending_request_bytes(), Ordering::Relaxed);
                match result {
                    Ok(None) => break,
                    // A full core queue would block the poller, and every
                    // client with it: the thread waits for room instead.
                    Ok(Some(args)) if self.served_by_poller(&args) && !self.to_core.is_full() => {
                        self.opts.registry.commands.by_poller.fetch_add(1, Ordering::Relaxed);
                        if !matches!(self.handle(args), Ok(false)) {
                            return Verdict::ToThread;
                        }
                    }
                    other => {
                        self.unread = Some(other);
                        return Verdict::ToThread;
                    }
                }
            }
            if drained {
                break;
            }
        }
        if self.has_input() {
            return Verdict::ToThread;
        }
        if self.slots.is_empty() || self.hand_over() { Verdict::Keep } else { Verdict::ToThread }
    }

    /// Whether a batch is still out; one the mailbox has sent is taken
    /// back first (and when it went out noted: the client is idle from
    /// then).
    fn batch_still_out(&mut self) -> bool {
        if self.armed.is_some() {
            let Some(at) = self.mailbox.take_sent() else { return true };
            self.replied_at = at;
            self.armed = None;
            self.in_flight = None;
        }
        false
    }

    /// When the batch still out will be overdue (its thread takes it back
    /// then), if one is; one already sent is taken back now.
    pub(super) fn answer_deadline(&mut self) -> Option<Instant> {
        if self.batch_still_out() { self.armed_deadline() } else { None }
    }

    /// The same without asking the mailbox whether the batch went out (the
    /// poller's path, which takes no mailbox lock for it).
    pub(super) fn armed_deadline(&self) -> Option<Instant> {
        self.armed.is_some().then(|| self.armed_at + self.opts.answer_timeout)
    }

    pub(super) fn mailbox(&self) -> &Mailbox {
        &self.mailbox
    }

    /// Whether handling `args` cannot block: a read or a write of the
    /// data, outside a transaction, of the kind already in flight (another
    /// kind waits for those answers first, `submit`).
    fn served_by_poller(&self, args: &[Vec<u8>]) -> bool {
        if self.session.multi.is_some() {
            return false;
        }
        let kind = match command::resolve(args).map(|spec| command::class_of(spec, args)) {
            Ok(Class::Read) => Kind::Read,
            Ok(Class::Write) => Kind::Write,
            _ => return false,
        };
        self.in_flight.is_none_or(|k| k == kind)
    }

    /// Handles one request; returns true when the connection must close.
    fn handle(&mut self, args: Vec<Vec<u8>>) -> io::Result<bool> {
        self.opts.registry.commands.processed.fetch_add(1, Ordering::Relaxed);
        {
            let mut meta = self.info.meta.lock();
            meta.cmd = session::command_name(&args);
            meta.last_active = Some(Instant::now());
            meta.multi = self.session.multi.as_ref().map_or(-1, |m| m.len() as i64);
        }
        if let Some(reply) = self.gate(&args) {
            if let Some(multi) = &mut self.session.multi
                && reply.is_error()
            {
                // Refused inside MULTI (NOAUTH, NOPERM): EXEC aborts.
                multi.failed = true;
            }
            self.slots.push(Slot::Ready(reply));
            return Ok(false);
        }
        // The arguments are kept past parsing only where they are used
        // again: queued in MULTI, or sent on to the leader (RAFT).
        let keep = self.session.multi.is_some() || args.first().is_some_and(|n| n.eq_ignore_ascii_case(b"raft"));
        let (parsed, args) =
            if keep { (command::parse(args.clone()), args) } else { (command::parse(args), Vec::new()) };
        if let Some(multi) = &mut self.session.multi
            && let Queued::Reply(reply) = multi.queue(&parsed, &args)
        {
            self.slots.push(Slot::Ready(reply));
            return Ok(false);
        }
        match parsed {
            Err(reply) | Ok(ClientCommand::Reply(reply)) => self.slots.push(Slot::Ready(reply)),
            Ok(ClientCommand::Write(_)) if let Some(reply) = self.demoted() => self.slots.push(Slot::Ready(reply)),
            Ok(ClientCommand::Write(write)) => self.submit(Kind::Write, Request::Write(write), args, Then::Reply)?,
            Ok(ClientCommand::Read(cmd)) => {
                let local = self.session.readonly;
                self.submit(Kind::Read, Request::Read { op: ReadRequest::Cmd(cmd), local }, args, Then::Reply)?;
            }
            Ok(ClientCommand::Info { sections }) => {
                self.submit(Kind::Other, Request::Info { sections }, args, Then::Reply)?
            }
            Ok(ClientCommand::Raft(cmd)) => self.submit(Kind::Other, Request::Raft(cmd), args, Then::Reply)?,
            Ok(ClientCommand::Role) => self.submit(Kind::Other, Request::Role, args, Then::Reply)?,
            Ok(ClientCommand::Sentinel(sub)) => self.submit(Kind::Other, Request::Sentinel(sub), args, Then::Reply)?,
            Ok(ClientCommand::Connection { name, args }) => return self.connection_command(name, args),
        }
        Ok(false)
    }

    /// Commands about this connection (the table's `Connection` class
    /// other than AUTH and HELLO, which `gate` answers).
    fn connection_command(&mut self, name: &str, args: Vec<Vec<u8>>) -> io::Result<bool> {
        let reply = match name {
            "quit" => {
                self.slots.push(Slot::Ready(Reply::ok()));
                return Ok(true);
            }
            "readonly" | "readwrite" => {
                self.session.readonly = name == "readonly";
                Reply::ok()
            }
            "select" => session::select(&args),
            "multi" => {
                self.session.multi = Some(Multi::default());
                Reply::ok()
            }
            "exec" => return self.exec(args).map(|()| false),
            "discard" => match self.session.multi.take() {
                Some(_) => {
                    self.session.watched.clear();
                    Reply::ok()
                }
                None => Reply::err("DISCARD without MULTI"),
            },
            "watch" => match args[1..].iter().map(|k| crate::kv::key_arg(k)).collect::<Result<Vec<_>, _>>() {
                Err(e) => e,
                Ok(keys) => {
                    let op = ReadRequest::Watch(keys.clone());
                    let local = self.session.readonly;
                    return self
                        .submit(Kind::Read, Request::Read { op, local }, args, Then::Watch(keys))
                        .map(|()| false);
                }
            },
            "unwatch" => {
                self.session.watched.clear();
                Reply::ok()
            }
            "reset" => {
                self.session = Session::default();
                self.info.meta.lock().resp = 2;
                Reply::Simple("RESET".into())
            }
            "client" => session::client(&args, &self.info, &self.opts.registry),
            "config" => session::config_get(&args, &self.opts.settings),
            other => Reply::err(format!("'{other}' is not served here")),
        };
        self.slots.push(Slot::Ready(reply));
        Ok(false)
    }

    /// EXEC: the queue goes to the log as one entry, with the watches.
    fn exec(&mut self, args: Vec<Vec<u8>>) -> io::Result<()> {
        let Some(multi) = self.session.multi.take() else {
            self.slots.push(Slot::Ready(Reply::err("EXEC without MULTI")));
            return Ok(());
        };
        let watches = std::mem::take(&mut self.session.watched);
        if multi.failed {
            let reply = Reply::Error("EXECABORT Transaction discarded because of previous errors.".into());
            self.slots.push(Slot::Ready(reply));
            return Ok(());
        }
        if multi.commands.is_empty() && watches.is_empty() {
            let replies = multi.immediate.into_iter().map(|(_, r)| r).collect();
            self.slots.push(Slot::Ready(Reply::array(replies)));
            return Ok(());
        }
        if let Some(reply) = self.demoted() {
            self.slots.push(Slot::Ready(reply));
            return Ok(());
        }
        let request = Request::Exec { watches, commands: multi.commands };
        self.submit(Kind::Write, request, args, Then::Exec(multi.immediate))
    }

    /// Redis answers writes on a master demoted to a replica with
    /// `-READONLY`, which Sentinel clients take as the sign to ask for the
    /// new master. A connection that wrote to this node while it led gets
    /// that answer (the write is not applied) for its first write after the
    /// node stopped leading; its writes after that are forwarded to the
    /// leader, as on any follower.
    fn demoted(&mut self) -> Option<Reply> {
        if self.opts.role.leads() {
            self.wrote_to_leader = true;
            return None;
        }
        std::mem::take(&mut self.wrote_to_leader)
            .then(|| Reply::Error("READONLY You can't write against a read only replica.".into()))
    }

    /// Authentication and permissions (README, Security): answers AUTH and HELLO,
    /// and refuses what this connection may not run; `None` lets the
    /// request through.
    fn gate(&mut self, args: &[Vec<u8>]) -> Option<Reply> {
        let name = args.first().map(|n| n.to_ascii_lowercase()).unwrap_or_default();
        match name.as_slice() {
            b"auth" => return Some(self.auth(args)),
            b"hello" => return Some(self.hello(args)),
            b"quit" => return None,
            _ => {}
        }
        self.opts.users.as_ref()?;
        let Some(login) = &self.login else {
            return Some(Reply::Error("NOAUTH Authentication required.".into()));
        };
        if login.role.permits(command::category(args)) {
            return None;
        }
        let mut what = command::echo_name(&args[0]).to_ascii_lowercase();
        if let Some(sub) = args.get(1).filter(|_| matches!(name.as_slice(), b"client" | b"config" | b"raft")) {
            what = format!("{what}|{}", command::echo_name(sub).to_ascii_lowercase());
        }
        Some(Reply::Error(format!("NOPERM User {} has no permissions to run the '{what}' command", login.user)))
    }

    /// `AUTH [user] password`; a bare password is the user `default`.
    fn auth(&mut self, args: &[Vec<u8>]) -> Reply {
        let (user, password) = match args {
            [_, password] => (b"default".as_slice(), password),
            [_, user, password] => (user.as_slice(), password),
            _ => return Reply::err("wrong number of arguments for 'auth'"),
        };
        if self.opts.users.is_none() {
            return Reply::err(
                "AUTH <password> called without any password configured for the default user. Are you sure your \
                 configuration is correct?",
            );
        }
        match self.login_as(user, password) {
            Ok(()) => Reply::ok(),
            Err(reply) => reply,
        }
    }

    fn login_as(&mut self, user: &[u8], password: &[u8]) -> Result<(), Reply> {
        let users = self.opts.users.as_ref().expect("checked by the caller");
        let user = String::from_utf8_lossy(user).into_owned();
        match users.check(&user, password) {
            Some(role) => {
                self.login = Some(Login { user, role, password: password.to_vec() });
                Ok(())
            }
            None => {
                AUTH_FAILURES.warn(|| format!("failed AUTH as {user:?} from {}", self.peer));
                Err(Reply::Error("WRONGPASS invalid username-password pair or user is disabled.".into()))
            }
        }
    }

    /// `HELLO [protover [AUTH user password] [SETNAME name]]`: RESP2 only
    /// for now; the reply is Redis's map as a flat array.
    fn hello(&mut self, args: &[Vec<u8>]) -> Reply {
        let mut rest = args.iter().skip(1);
        let mut proto = self.session.proto;
        if let Some(v) = rest.next() {
            match crate::resp::parse_i64(v) {
                Some(2) => proto = crate::resp::Proto::Resp2,
                Some(3) => proto = crate::resp::Proto::Resp3,
                Some(_) => return Reply::Error("NOPROTO unsupported protocol version".into()),
                None => return Reply::err("Protocol version is not an integer or out of range"),
            }
        }
        let mut credentials = None;
        let mut name = None;
        while let Some(option) = rest.next() {
            match option.to_ascii_lowercase().as_slice() {
                b"auth" => match (rest.next(), rest.next()) {
                    (Some(user), Some(password)) => credentials = Some((user.clone(), password.clone())),
                    _ => return Reply::err("Syntax error in HELLO option 'auth'"),
                },
                b"setname" => match rest.next() {
                    Some(n) => name = Some(n.clone()),
                    None => return Reply::err("Syntax error in HELLO option 'setname'"),
                },
                _ => return Reply::err(format!("Syntax error in HELLO option '{}'", command::echo_name(option))),
            }
        }
        match (&credentials, &self.opts.users) {
            (Some((user, password)), Some(_)) => {
                if let Err(reply) = self.login_as(user, password) {
                    return reply;
                }
            }
            (Some(_), None) => {
                return Reply::err(
                    "AUTH <password> called without any password configured for the default user. Are you sure \
                     your configuration is correct?",
                );
            }
            (None, Some(_)) if self.login.is_none() => {
                return Reply::Error(
                    "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> \
                     AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol \
                     version at the same time"
                        .into(),
                );
            }
            _ => {}
        }
        if let Some(name) = name {
            let setname = vec![b"CLIENT".to_vec(), b"SETNAME".to_vec(), name];
            let reply = session::client(&setname, &self.info, &self.opts.registry);
            if reply.is_error() {
                return reply;
            }
        }
        self.session.proto = proto;
        {
            let mut meta = self.info.meta.lock();
            meta.resp = proto.version();
            if let Some(login) = &self.login {
                meta.user = login.user.clone();
            }
        }
        Reply::map([
            ("server", Reply::bulk("redis")),
            ("version", Reply::bulk(REDIS_VERSION)),
            ("proto", Reply::Integer(proto.version())),
            ("id", Reply::Integer(self.info.id as i64)),
            ("mode", Reply::bulk("standalone")),
            ("role", Reply::bulk("master")),
            ("modules", Reply::array(Vec::new())),
        ])
    }

    fn submit(&mut self, kind: Kind, request: Request, args: Vec<Vec<u8>>, then: Then) -> io::Result<()> {
        if self.in_flight.is_some_and(|k| k != kind || k == Kind::Other) {
            // Program order: this request must come after those before it.
            self.resolve()?;
        }
        self.in_flight = Some(kind);
        let seq = self.next_seq;
        self.next_seq += 1;
        let submission = Submission { request, seq, reply_to: self.mailbox.clone() };
        if self.to_core.send(submission).is_err() {
            self.slots.push(Slot::Ready(Reply::Error("TRYAGAIN no leader (the node is shutting down)".into())));
            return Ok(());
        }
        self.slots.push(Slot::Waiting { seq, args, then });
        Ok(())
    }

    /// Waits for the outstanding answers and writes the replies, in order,
    /// each as soon as it is ready (a pipeline of large replies is never
    /// held whole).
    fn resolve(&mut self) -> io::Result<()> {
        self.settle_armed()?;
        for slot in std::mem::take(&mut self.slots) {
            let reply = match slot {
                Slot::Ready(reply) => reply,
                Slot::Waiting { seq, args, then } => {
                    let reply = match self.wait_for(seq, answer_timeout(&args, self.opts.answer_timeout)) {
                        Answer::Reply(reply) => reply,
                        Answer::Forward { client_addr } => {
                            let login = self.login.as_ref().map(|l| (l.user.as_bytes(), &l.password[..]));
                            let via = Via { tls: self.opts.tls.as_ref(), login, timeout: self.opts.answer_timeout };
                            forward(&client_addr, &args, &via)
                        }
                    };
                    self.then(reply, then)
                }
            };
            self.emit(&reply)?;
        }
        self.in_flight = None;
        Ok(())
    }

    /// Replies to the batch just read: hands it to the mailbox when every
    /// reply comes from the core as it is (module docs of `mailbox`), and
    /// otherwise waits for the answers and writes them.
    fn finish_batch(&mut self) -> io::Result<()> {
        // A batch given back (too large, timed out) is not handed over
        // again: it would come back again, held meanwhile where the output
        // limit does not see it.
        let came_back = self.settle_armed()?;
        if !came_back && self.hand_over() {
            return Ok(());
        }
        self.resolve()?;
        self.flush()
    }

    /// Arms the mailbox with the batch read when every reply comes from
    /// the core as it is and nothing is out; whether it did.
    fn hand_over(&mut self) -> bool {
        let plain = |slot: &Slot| matches!(slot, Slot::Waiting { then: Then::Reply, .. });
        let handed = match (self.fd, self.slots.first()) {
            (Some(fd), Some(&Slot::Waiting { seq, .. }))
                if self.armed.is_none()
                    && matches!(self.in_flight, Some(Kind::Write | Kind::Read))
                    && self.out.is_empty()
                    && self.slots.iter().all(plain)
                    && !self.answers.keys().any(|&s| s >= seq) =>
            {
                self.mailbox.arm(fd, self.session.proto, seq, self.slots.len(), self.wake.clone())
            }
            _ => false,
        };
        if handed {
            self.armed = Some(std::mem::take(&mut self.slots));
            self.armed_at = Instant::now();
        }
        handed
    }

    /// With a batch handed over and nothing buffered: waits for input,
    /// finishing the batch here if the mailbox gives it back.
    fn await_input(&mut self) -> io::Result<()> {
        let (Some(fd), Some(_)) = (self.fd, &self.armed) else { return Ok(()) };
        let overdue_at = self.armed_deadline();
        loop {
            let readable = crate::net::sys::readable_within(fd, ARMED_POLL)?;
            match self.mailbox.try_settle() {
                // The batch settles before anything else is written.
                Settled::Pending if readable => return Ok(()),
                Settled::Pending if overdue_at.is_some_and(|d| Instant::now() < d) => continue,
                Settled::Pending => {
                    let outcome = self.mailbox.settle(Duration::ZERO);
                    self.settled(outcome)?;
                }
                Settled::Sent => {
                    self.armed = None;
                    return Ok(());
                }
                outcome => self.settled(outcome)?,
            }
            self.resolve()?;
            return self.flush();
        }
    }

    /// Replies to what was read before a read failed (a client that
    /// half-closes in the middle of a request still gets the replies to
    /// those before it), then gives back the failure.
    fn finish_then(&mut self, e: io::Error) -> io::Error {
        match self.resolve().and_then(|()| self.flush()) {
            Ok(()) => e,
            Err(write) => write,
        }
    }

    /// Waits for a batch handed over to end, and takes it back; whether
    /// it came back to be answered here.
    fn settle_armed(&mut self) -> io::Result<bool> {
        if self.armed.is_none() {
            return Ok(false);
        }
        let outcome = self.mailbox.settle(self.opts.answer_timeout);
        let back = outcome == Settled::Back;
        self.settled(outcome)?;
        Ok(back)
    }

    /// Takes back a batch the mailbox is done with: written, to write, or
    /// to reply to as usual (ahead of the requests read since).
    fn settled(&mut self, outcome: Settled) -> io::Result<()> {
        let Some(armed) = self.armed.take() else { return Ok(()) };
        if outcome != Settled::Pending
            && let Some(park) = &self.wake.park
        {
            // Its ring, if it rang, is answered: the next park must not
            // return at once for it. (Every batch that rings settles here
            // before the connection parks again.)
            park.clear_back();
        }
        match outcome {
            Settled::Pending => self.armed = Some(armed),
            Settled::Sent => {}
            Settled::Unsent(bytes) => self.write_all(&bytes)?,
            Settled::Back => {
                let later = std::mem::replace(&mut self.slots, armed);
                self.slots.extend(later);
            }
        }
        Ok(())
    }

    fn then(&mut self, reply: Reply, then: Then) -> Reply {
        match (then, reply) {
            (Then::Reply, reply) => reply,
            (Then::Watch(keys), Reply::Array(Some(marks))) => {
                for (key, mark) in keys.into_iter().zip(marks) {
                    let Reply::Integer(mark) = mark else { continue };
                    if !self.session.watched.iter().any(|w| w.key == key) {
                        self.session.watched.push(Watch { key, mark: mark as u64 });
                    }
                }
                Reply::ok()
            }
            (Then::Watch(_), other) => other,
            (Then::Exec(immediate), reply) => session::merge_exec(reply, immediate),
        }
    }

    /// Encodes a reply into the output, writing out what is there once it
    /// reaches a chunk; a large value goes straight from the store's copy
    /// to the socket.
    fn emit(&mut self, reply: &Reply) -> io::Result<()> {
        match reply {
            Reply::Value(bytes) if bytes.len() >= OUT_CHUNK_BYTES => {
                self.out.extend_from_slice(format!("${}\r\n", bytes.len()).as_bytes());
                self.flush()?;
                self.write_all(bytes)?;
                self.out.extend_from_slice(b"\r\n");
            }
            Reply::Array(Some(items)) if reply.encoded_len() >= OUT_CHUNK_BYTES => {
                self.out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
                for item in items {
                    self.emit(item)?;
                }
            }
            _ => reply.encode_as(self.session.proto, &mut self.out),
        }
        if self.out.len() >= OUT_CHUNK_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn wait_for(&mut self, seq: u64, timeout: Duration) -> Answer {
        loop {
            if let Some(answer) = self.answers.remove(&seq) {
                self.answers_bytes -= answer_bytes(&answer);
                return answer;
            }
            match self.mailbox.wait(timeout) {
                Some((s, answer)) => self.keep(s, answer),
                None => {
                    return Answer::Reply(Reply::Error("TIMEOUT the node did not answer in time".into()));
                }
            }
        }
    }

    fn keep(&mut self, seq: u64, answer: Answer) {
        self.answers_bytes += answer_bytes(&answer);
        self.answers.insert(seq, answer);
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            let out = std::mem::take(&mut self.out);
            let result = self.write_all(&out);
            self.out = out;
            self.out.clear();
            result?;
        }
        Ok(())
    }

    /// Writes `bytes` whole. While the client does not read, the answers
    /// that keep arriving are counted with what is unsent; past
    /// `--client-output-limit` the client is disconnected, as Redis's
    /// client-output-buffer-limit does (and past `--client-timeout` of not
    /// reading at all).
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        debug_assert!(self.armed.is_none(), "a poster may be writing to the socket");
        let stream = self.stream.get_mut();
        stream.set_write_timeout(Some(WRITE_SLICE))?;
        let mut sent = 0;
        let mut stalled: Option<Instant> = None;
        loop {
            let step = if sent < bytes.len() {
                self.stream.get_mut().write(&bytes[sent..])
            } else {
                self.stream.get_mut().flush().map(|()| 0)
            };
            match step {
                Ok(n) if sent < bytes.len() => {
                    sent += n;
                    stalled = None;
                }
                Ok(_) => return Ok(()),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    let since = *stalled.get_or_insert_with(Instant::now);
                    self.stalled_writing(bytes.len() - sent, since)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The client has not read for a while: take in the answers that came
    /// meanwhile and decide whether it holds too much.
    fn stalled_writing(&mut self, left: usize, since: Instant) -> io::Result<()> {
        while let Some((seq, answer)) = self.mailbox.wait(Duration::ZERO) {
            self.keep(seq, answer);
        }
        let unsent = left + self.out.len() + self.answers_bytes;
        self.info.output_bytes.store(unsent, Ordering::Relaxed);
        let counters = &self.opts.registry.counters;
        if unsent > self.opts.output_limit {
            counters.output_disconnects.fetch_add(1, Ordering::Relaxed);
            LIMIT_LOG.warn(|| {
                format!(
                    "disconnecting client {}: {unsent} bytes of replies unsent exceed --client-output-limit {}",
                    self.peer, self.opts.output_limit
                )
            });
            return Err(io::Error::other("client output limit"));
        }
        if self.opts.idle_timeout.is_some_and(|t| since.elapsed() > t) {
            counters.idle_disconnects.fetch_add(1, Ordering::Relaxed);
            return Err(io::Error::other("client did not read within --client-timeout"));
        }
        Ok(())
    }
}

/// How long a connection waits for the core's answer to `args`. The core
/// answers `RAFT SNAPSHOT` once the snapshot is durable, success or not:
/// serializing ten million keys takes longer than any request's timeout,
/// and the operator would be told `-TIMEOUT` for a snapshot still being
/// taken.
fn answer_timeout(args: &[Vec<u8>], usual: Duration) -> Duration {
    let snapshot =
        args.len() == 2 && args[0].eq_ignore_ascii_case(b"RAFT") && args[1].eq_ignore_ascii_case(b"SNAPSHOT");
    if snapshot { usual.max(SNAPSHOT_ANSWER_TIMEOUT) } else { usual }
}

/// `answer_timeout` for `RAFT SNAPSHOT`: a bound, in case the core never
/// answers, far beyond any snapshot this machine takes.
const SNAPSHOT_ANSWER_TIMEOUT: Duration = Duration::from_secs(3600);

fn answer_bytes(answer: &Answer) -> usize {
    match answer {
        Answer::Reply(r) => r.encoded_len(),
        Answer::Forward { .. } => 0,
    }
}

/// Clients refused or disconnected by a limit, logged without flooding.
static LIMIT_LOG: RateLimited = RateLimited::new(10, Duration::from_secs(60));

/// Failed logins, logged without flooding.
static AUTH_FAILURES: RateLimited = RateLimited::new(10, Duration::from_secs(60));

/// How a follower reaches the leader's client port for a client.
struct Via<'a> {
    tls: Option<&'a TlsSettings>,
    /// The client's own user and password, when the node has accounts.
    login: Option<(&'a [u8], &'a [u8])>,
    timeout: Duration,
}

/// Sends an administrative command to the leader's client port, as the
/// same user over the same kind of connection, and relays its one reply. If
/// it cannot be sent the command was not applied (`-TRYAGAIN`); if it was
/// sent but not answered the outcome is unknown (`-TIMEOUT`).
fn forward(client_addr: &str, args: &[Vec<u8>], via: &Via<'_>) -> Reply {
    let not_sent = |why: String| Reply::Error(format!("TRYAGAIN cannot reach the leader at {client_addr}: {why}"));
    let addr = match crate::peers::resolve(client_addr) {
        Ok(a) => a,
        Err(e) => return not_sent(e),
    };
    let tcp = match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(s) => s,
        Err(e) => return not_sent(e.to_string()),
    };
    let _ = tcp.set_read_timeout(Some(via.timeout + Duration::from_secs(1)));
    let mut stream = match via.tls {
        Some(tls) => match tls.connect(crate::net::tls::host_of(client_addr), tcp) {
            Ok(s) => s,
            Err(e) => return not_sent(e.to_string()),
        },
        None => Stream::Plain(tcp),
    };
    let mut buf = Vec::new();
    if let Some((user, password)) = via.login {
        let mut auth = Vec::new();
        resp::encode_request(&[b"AUTH".as_slice(), user, password], &mut auth);
        if let Err(e) = stream.write_all(&auth) {
            return not_sent(e.to_string());
        }
        match read_reply(&mut stream, &mut buf) {
            Reply::Simple(_) => {}
            Reply::Error(e) if e.starts_with("TIMEOUT") => return not_sent("it did not answer AUTH".into()),
            other => return other,
        }
    }
    let mut request = Vec::new();
    resp::encode_request(args, &mut request);
    if let Err(e) = stream.write_all(&request) {
        return not_sent(e.to_string());
    }
    read_reply(&mut stream, &mut buf)
}

/// One reply from the leader; what is left in `buf` belongs to the next.
fn read_reply(stream: &mut Stream, buf: &mut Vec<u8>) -> Reply {
    let mut chunk = [0u8; 4096];
    loop {
        match resp::parse_reply(buf) {
            Ok(Some((reply, used))) => {
                buf.drain(..used);
                return reply;
            }
            Ok(None) => {}
            Err(e) => return Reply::Error(format!("ERR the leader sent a malformed reply: {e}")),
        }
        match stream.read(&mut chunk) {
            // A signal (the node's SIGURG, README) is not the leader's answer.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(0) | Err(_) => return Reply::Error("TIMEOUT the leader did not answer in time".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
