//! Client connections: an accept thread and one thread per connection
//! speaking RESP (src/resp.rs) and handing commands to the core thread.
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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;

use super::mailbox::Mailbox;

use crate::command::{self, AdminCommand, ClientCommand, RaftCommand};
use crate::kv::{ReadOp, WriteOp};
use crate::limits::accept_failed;
use crate::resp::{self, ReadError, Reply, RequestReader};

/// Requests read from one connection before their replies are written.
pub const PIPELINE_REQUESTS_MAX: usize = 1024;

/// Connections served at once; one more is told so and closed (as Redis does).
pub const CONNECTIONS_MAX: usize = 10_000;

/// What a connection asks of the core thread.
#[derive(Debug)]
pub enum Request {
    Write(WriteOp),
    Read { op: ReadOp, local: bool },
    Info { sections: Vec<String> },
    Raft(RaftCommand),
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
}

/// Accepts client connections until `stop` is set (and a connection wakes
/// the accept call up).
pub fn spawn_listener(
    listener: TcpListener,
    to_core: Sender<Submission>,
    stop: Arc<AtomicBool>,
    opts: ClientOptions,
) -> io::Result<JoinHandle<()>> {
    let open = Arc::new(AtomicUsize::new(0));
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
            if open.fetch_add(1, Ordering::SeqCst) >= CONNECTIONS_MAX {
                open.fetch_sub(1, Ordering::SeqCst);
                let _ = (&stream).write_all(b"-ERR max number of clients reached\r\n");
                continue;
            }
            let (to_core, open, opts) = (to_core.clone(), open.clone(), opts.clone());
            let spawned = std::thread::Builder::new().name("client".into()).spawn(move || {
                if let Err(e) = serve(stream, to_core, &opts) {
                    log::debug!("client connection ended: {e}");
                }
                open.fetch_sub(1, Ordering::SeqCst);
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
    Waiting { seq: u64, args: Vec<Vec<u8>> },
}

struct Connection {
    stream: TcpStream,
    to_core: Sender<Submission>,
    mailbox: Mailbox,
    answers: HashMap<u64, Answer>,
    next_seq: u64,
    readonly: bool,
    slots: Vec<Slot>,
    /// The kind of the requests submitted since the last `resolve`.
    in_flight: Option<Kind>,
    out: Vec<u8>,
    opts: ClientOptions,
}

fn serve(stream: TcpStream, to_core: Sender<Submission>, opts: &ClientOptions) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = RequestReader::new(stream.try_clone()?);
    let mut conn = Connection {
        stream,
        to_core,
        mailbox: Mailbox::default(),
        answers: HashMap::new(),
        next_seq: 0,
        readonly: false,
        slots: Vec::new(),
        in_flight: None,
        out: Vec::new(),
        opts: opts.clone(),
    };
    loop {
        // Block for one request, then take every one already buffered.
        let mut quit = false;
        let mut end = false;
        match next(&mut reader, &mut conn)? {
            Some(args) => quit |= conn.handle(args)?,
            None => end = true,
        }
        while !quit && !end && reader.buffered_bytes() > 0 && conn.slots.len() < PIPELINE_REQUESTS_MAX {
            match next(&mut reader, &mut conn)? {
                Some(args) => quit |= conn.handle(args)?,
                None => end = true,
            }
        }
        conn.resolve()?;
        conn.flush()?;
        if quit || end {
            return Ok(());
        }
    }
}

/// The next request, or `None` at the end of the connection. A protocol
/// error is answered and ends the connection (SPEC §3).
fn next<R: Read>(reader: &mut RequestReader<R>, conn: &mut Connection) -> io::Result<Option<Vec<Vec<u8>>>> {
    match reader.next_request() {
        Ok(request) => Ok(request),
        Err(ReadError::Protocol(e)) => {
            conn.resolve()?;
            conn.slots.push(Slot::Ready(e.reply()));
            conn.resolve()?;
            conn.flush()?;
            Ok(None)
        }
        Err(ReadError::Io(e)) => Err(e),
        Err(e) => Err(io::Error::other(e.to_string())),
    }
}

impl Connection {
    /// Handles one request; returns true when the connection must close.
    fn handle(&mut self, args: Vec<Vec<u8>>) -> io::Result<bool> {
        let parsed = command::parse(args.clone());
        match parsed {
            Err(reply) | Ok(ClientCommand::Reply(reply)) => self.slots.push(Slot::Ready(reply)),
            Ok(ClientCommand::Write(op)) => self.submit(Kind::Write, Request::Write(op), args)?,
            Ok(ClientCommand::Read(op)) => {
                let local = self.readonly;
                self.submit(Kind::Read, Request::Read { op, local }, args)?;
            }
            Ok(ClientCommand::Admin(admin)) => return self.handle_admin(admin, args),
        }
        Ok(false)
    }

    fn handle_admin(&mut self, admin: AdminCommand, args: Vec<Vec<u8>>) -> io::Result<bool> {
        match admin {
            AdminCommand::ReadOnly => {
                self.readonly = true;
                self.slots.push(Slot::Ready(Reply::ok()));
            }
            AdminCommand::ReadWrite => {
                self.readonly = false;
                self.slots.push(Slot::Ready(Reply::ok()));
            }
            AdminCommand::Quit => {
                self.slots.push(Slot::Ready(Reply::ok()));
                return Ok(true);
            }
            AdminCommand::Info { sections } => self.submit(Kind::Other, Request::Info { sections }, args)?,
            AdminCommand::Raft(cmd) => self.submit(Kind::Other, Request::Raft(cmd), args)?,
        }
        Ok(false)
    }

    fn submit(&mut self, kind: Kind, request: Request, args: Vec<Vec<u8>>) -> io::Result<()> {
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
        self.slots.push(Slot::Waiting { seq, args });
        Ok(())
    }

    /// Waits for every outstanding answer and encodes all replies, in order.
    fn resolve(&mut self) -> io::Result<()> {
        for slot in std::mem::take(&mut self.slots) {
            let reply = match slot {
                Slot::Ready(reply) => reply,
                Slot::Waiting { seq, args } => match self.wait_for(seq) {
                    Answer::Reply(reply) => reply,
                    Answer::Forward { client_addr } => forward(&client_addr, &args, self.opts.answer_timeout),
                },
            };
            reply.encode(&mut self.out);
        }
        self.in_flight = None;
        Ok(())
    }

    fn wait_for(&mut self, seq: u64) -> Answer {
        loop {
            if let Some(answer) = self.answers.remove(&seq) {
                return answer;
            }
            match self.mailbox.wait(self.opts.answer_timeout) {
                Some((s, answer)) => {
                    self.answers.insert(s, answer);
                }
                None => {
                    return Answer::Reply(Reply::Error("TIMEOUT the node did not answer in time".into()));
                }
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out)?;
            self.out.clear();
        }
        Ok(())
    }
}

/// Sends an administrative command to the leader's client port and relays
/// its one reply. If it cannot be sent the command was not applied
/// (`-TRYAGAIN`); if it was sent but not answered the outcome is unknown
/// (`-TIMEOUT`).
fn forward(client_addr: &str, args: &[Vec<u8>], timeout: Duration) -> Reply {
    let not_sent = |why: String| Reply::Error(format!("TRYAGAIN cannot reach the leader at {client_addr}: {why}"));
    let addr = match crate::peers::resolve(client_addr) {
        Ok(a) => a,
        Err(e) => return not_sent(e),
    };
    let mut stream = match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(s) => s,
        Err(e) => return not_sent(e.to_string()),
    };
    let mut request = Vec::new();
    resp::encode_request(args, &mut request);
    if let Err(e) = stream.write_all(&request) {
        return not_sent(e.to_string());
    }
    let _ = stream.set_read_timeout(Some(timeout + Duration::from_secs(1)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match resp::parse_reply(&buf) {
            Ok(Some((reply, _))) => return reply,
            Ok(None) => {}
            Err(e) => return Reply::Error(format!("ERR the leader sent a malformed reply: {e}")),
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return Reply::Error("TIMEOUT the leader did not answer in time".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
