//! Where the core's answers wait for one client connection: a queue and a
//! condition variable that the connection's thread sleeps on, and, for a
//! batch the connection hands over, the replies written to the client's
//! socket by the thread that posts the last answer.
//!
//! A channel would do the queue's job, but its receive spins and yields the
//! processor a few times before it sleeps. With a thread per connection
//! that adds up: under 64 connections of writes, threads yielding to each
//! other took a third of the leader's CPU time on two cores (perf, in the
//! README). A condition variable goes straight to sleep.
//!
//! # Replies written by the poster
//!
//! Waking the connection's thread only to copy a few bytes to its socket
//! costs a context switch per request, and with a thread per connection
//! those switches were most of the leader's CPU (README, Performance). So a
//! connection whose batch is plain (reads or writes answered with a reply,
//! no local replies between them) arms its mailbox with the batch's
//! sequence numbers and goes back to reading its socket. The poster of the
//! batch's last answer (the core thread, usually) encodes the replies in
//! order and sends them without blocking. Anything else hands the batch
//! back to the connection, which then replies as usual: an answer that is
//! not a plain reply, replies larger than [`DIRECT_BYTES_MAX`], or a socket
//! that does not take them all at once (a client that does not read).
//!
//! The socket is named by its descriptor and written only under the lock;
//! the connection marks the mailbox closed under the same lock before it
//! closes the socket, so a late answer never reaches a descriptor that was
//! reused.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::client::Answer;
use super::poller::Park;
use crate::net::sys::Waker;
use crate::resp::{Proto, Reply};

/// Replies a poster encodes and sends for one batch at most; above, the
/// connection's thread writes them (in chunks, see `client::emit`).
pub const DIRECT_BYTES_MAX: usize = 64 * 1024;

#[derive(Clone, Debug, Default)]
pub struct Mailbox(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    state: Mutex<State>,
    posted: Condvar,
}

#[derive(Debug, Default)]
struct State {
    answers: VecDeque<(u64, Answer)>,
    direct: Direct,
    /// The connection is gone: answers are dropped.
    closed: bool,
}

/// A batch of replies the poster writes itself.
#[derive(Debug, Default)]
enum Direct {
    #[default]
    Off,
    Armed(Batch),
    /// Every reply went out, at this instant (the client's idle time
    /// counts from it).
    Sent(Instant),
    /// The connection must finish the batch: write `unsent` (the batch's
    /// replies, encoded, that the socket did not take), or, if `None`,
    /// reply to the batch as usual from the answers in the queue.
    Back {
        unsent: Option<Vec<u8>>,
    },
}

#[derive(Debug)]
struct Batch {
    fd: RawFd,
    /// Who finishes the batch if it comes back.
    waker: Wake,
    proto: Proto,
    first: u64,
    replies: Vec<Option<Reply>>,
    missing: usize,
}

/// Who is told that an armed batch came back to be finished: the
/// connection's thread by a signal (when it waits for input in `poll` on
/// its socket), and its park (when it waits parked while the poller reads
/// its socket, `node::poller`).
#[derive(Clone, Debug)]
pub struct Wake {
    pub thread: Waker,
    pub park: Option<Arc<Park>>,
}

impl Wake {
    fn wake(&self) {
        if let Some(park) = &self.park {
            park.ring();
        }
        self.thread.wake();
    }
}

/// How a batch handed over with [`Mailbox::arm`] ended, for its connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Settled {
    /// Still armed (only from [`Mailbox::try_settle`]).
    Pending,
    Sent,
    /// Write these bytes to the socket; the batch is answered.
    Unsent(Vec<u8>),
    /// Reply to the batch as usual: its answers are (or will be) in the
    /// queue.
    Back,
}

impl Mailbox {
    /// Leaves the answer to request `seq`. Never blocks for long: the lock
    /// is held to push or pop, or for one non-blocking send.
    pub fn post(&self, seq: u64, answer: Answer) {
        let mut state = self.0.state.lock();
        if state.closed {
            return;
        }
        let slot = match &state.direct {
            Direct::Armed(batch) => seq
                .checked_sub(batch.first)
                .map(|i| i as usize)
                .filter(|&i| batch.replies.get(i).is_some_and(Option::is_none)),
            _ => None,
        };
        match (slot, answer) {
            (Some(i), Answer::Reply(reply)) => {
                let whole = match &mut state.direct {
                    Direct::Armed(batch) => {
                        batch.replies[i] = Some(reply);
                        batch.missing -= 1;
                        batch.missing == 0
                    }
                    _ => false,
                };
                if whole {
                    send_armed(&mut state);
                }
            }
            (Some(_), other) => {
                state.answers.push_back((seq, other));
                if let Direct::Armed(batch) = &state.direct {
                    batch.waker.wake();
                }
                hand_back(&mut state);
            }
            (None, answer) => state.answers.push_back((seq, answer)),
        }
        drop(state);
        self.0.posted.notify_one();
    }

    /// The next answer, or `None` if none came within `timeout`.
    pub fn wait(&self, timeout: Duration) -> Option<(u64, Answer)> {
        let deadline = Instant::now() + timeout;
        let mut state = self.0.state.lock();
        loop {
            if let Some(a) = state.answers.pop_front() {
                return Some(a);
            }
            if self.0.posted.wait_until(&mut state, deadline).timed_out() {
                return state.answers.pop_front();
            }
        }
    }

    /// Hands the replies to requests `first..first + count`, already
    /// submitted, to whoever posts the last of their answers, to be sent
    /// on socket `fd` encoded as `proto`; if the batch comes back, the
    /// calling thread is woken (`Waker`). Returns false, arming nothing,
    /// when every answer is already here (the caller replies at once).
    ///
    /// The caller must not write to `fd` until [`Mailbox::settle`] (or
    /// `try_settle`) says the batch is over, and must call
    /// [`Mailbox::close`] before its thread ends or `fd` closes.
    pub fn arm(&self, fd: RawFd, proto: Proto, first: u64, count: usize, waker: Wake) -> bool {
        let mut state = self.0.state.lock();
        debug_assert!(matches!(state.direct, Direct::Off));
        let replies = (0..count).map(|_| None).collect();
        let mut batch = Batch { fd, waker, proto, first, replies, missing: count };
        let mut i = 0;
        while i < state.answers.len() {
            let seq = state.answers[i].0;
            let plain = matches!(state.answers[i].1, Answer::Reply(_));
            match seq.checked_sub(first).filter(|&k| k < count as u64) {
                Some(k) if plain => {
                    if let Some((_, Answer::Reply(r))) = state.answers.remove(i) {
                        batch.replies[k as usize] = Some(r);
                        batch.missing -= 1;
                    }
                }
                Some(_) => {
                    // Not a plain reply: the connection answers this batch.
                    give_back(&mut state.answers, &mut batch);
                    return false;
                }
                None => i += 1,
            }
        }
        if batch.missing == 0 {
            give_back(&mut state.answers, &mut batch);
            return false;
        }
        state.direct = Direct::Armed(batch);
        true
    }

    /// Waits up to `timeout` for the armed batch to end; past it, the batch
    /// is taken back (its answers so far queued) and `Back` returned.
    pub fn settle(&self, timeout: Duration) -> Settled {
        let deadline = Instant::now() + timeout;
        let mut state = self.0.state.lock();
        loop {
            match end_of(&mut state) {
                Settled::Pending => {}
                done => return done,
            }
            if self.0.posted.wait_until(&mut state, deadline).timed_out() {
                return match end_of(&mut state) {
                    Settled::Pending => {
                        hand_back(&mut state);
                        end_of(&mut state)
                    }
                    done => done,
                };
            }
        }
    }

    /// When the armed batch went out whole, if it did; then the mailbox is
    /// unarmed, otherwise left as it is (for the connection's thread to
    /// settle).
    pub fn take_sent(&self) -> Option<Instant> {
        let mut state = self.0.state.lock();
        let Direct::Sent(at) = state.direct else { return None };
        state.direct = Direct::Off;
        Some(at)
    }

    /// Whether the armed batch went out whole, leaving the mailbox as it
    /// is.
    pub fn sent(&self) -> bool {
        matches!(self.0.state.lock().direct, Direct::Sent(_))
    }

    /// Whether the armed batch has ended, without waiting.
    pub fn try_settle(&self) -> Settled {
        end_of(&mut self.0.state.lock())
    }

    /// The connection is closing its socket: nothing is written to it
    /// after this returns.
    pub fn close(&self) {
        let mut state = self.0.state.lock();
        state.closed = true;
        state.direct = Direct::Off;
        state.answers.clear();
    }
}

/// Sends the armed batch, now whole; wakes its connection if it comes back.
fn send_armed(state: &mut State) {
    if let Direct::Armed(batch) = std::mem::take(&mut state.direct) {
        let waker = batch.waker.clone();
        state.direct = send_batch(batch, &mut state.answers);
        if !matches!(state.direct, Direct::Sent(_)) {
            waker.wake();
        }
    }
}

/// Takes an ended batch's outcome (and leaves the mailbox unarmed).
fn end_of(state: &mut State) -> Settled {
    match std::mem::take(&mut state.direct) {
        Direct::Off => Settled::Back,
        armed @ Direct::Armed(_) => {
            state.direct = armed;
            Settled::Pending
        }
        Direct::Sent(_) => Settled::Sent,
        Direct::Back { unsent: Some(bytes) } => Settled::Unsent(bytes),
        Direct::Back { unsent: None } => Settled::Back,
    }
}

/// Ends an armed batch unsent: the answers it holds go back to the queue,
/// in front of those that came after.
fn hand_back(state: &mut State) {
    if let Direct::Armed(mut batch) = std::mem::take(&mut state.direct) {
        give_back(&mut state.answers, &mut batch);
        state.direct = Direct::Back { unsent: None };
    }
}

fn give_back(answers: &mut VecDeque<(u64, Answer)>, batch: &mut Batch) {
    let first = batch.first;
    for (k, reply) in batch.replies.iter_mut().enumerate().rev() {
        if let Some(reply) = reply.take() {
            answers.push_front((first + k as u64, Answer::Reply(reply)));
        }
    }
}

/// Encodes a complete batch and sends what the socket takes now; a batch
/// too large goes back to its connection as answers.
fn send_batch(mut batch: Batch, answers: &mut VecDeque<(u64, Answer)>) -> Direct {
    let small = batch.replies.iter().flatten().try_fold(DIRECT_BYTES_MAX, |left, r| r.spend_within(left));
    if small.is_none() {
        // Not copied here: the connection writes large values in pieces,
        // straight from the store's copy.
        give_back(answers, &mut batch);
        return Direct::Back { unsent: None };
    }
    let mut out = Vec::new();
    for reply in batch.replies.iter().flatten() {
        reply.encode_as(batch.proto, &mut out);
    }
    let mut sent = 0;
    while sent < out.len() {
        match crate::net::sys::send_now(batch.fd, &out[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                out.drain(..sent);
                return Direct::Back { unsent: Some(out) };
            }
            // The connection is broken: its thread finds out reading.
            Err(_) => return Direct::Sent(Instant::now()),
        }
    }
    Direct::Sent(Instant::now())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    use super::*;

    fn here() -> Wake {
        Wake { thread: Waker::current(), park: None }
    }

    #[test]
    fn answers_arrive_in_order_across_threads_and_waiting_times_out() {
        let mailbox = Mailbox::default();
        let poster = mailbox.clone();
        let t = std::thread::spawn(move || {
            for seq in 0..1000 {
                poster.post(seq, Answer::Reply(Reply::Integer(seq as i64)));
            }
        });
        for seq in 0..1000 {
            let (got, answer) = mailbox.wait(Duration::from_secs(10)).expect("an answer");
            assert_eq!(got, seq);
            assert!(matches!(answer, Answer::Reply(Reply::Integer(n)) if n == seq as i64));
        }
        t.join().expect("poster");
        let start = Instant::now();
        assert!(mailbox.wait(Duration::from_millis(50)).is_none());
        assert!(start.elapsed() >= Duration::from_millis(50));
    }

    /// A connected pair on loopback: (the server's side, the client's).
    fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        client.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        (server, client)
    }

    /// The sequence numbers of the answers waiting in the queue, taken out.
    fn queued(mailbox: &Mailbox) -> Vec<u64> {
        std::iter::from_fn(|| mailbox.wait(Duration::ZERO)).map(|(seq, _)| seq).collect()
    }

    fn integer(n: i64) -> Answer {
        Answer::Reply(Reply::Integer(n))
    }

    fn read_exactly(client: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        client.read_exact(&mut buf).expect("the replies");
        buf
    }

    fn nothing_to_read(client: &TcpStream) -> bool {
        client.set_nonblocking(true).expect("nonblocking");
        let mut byte = [0; 1];
        let none = matches!((&*client).read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        client.set_nonblocking(false).expect("blocking");
        none
    }

    #[test]
    fn the_last_answer_of_a_batch_sends_the_replies_in_order() {
        let (server, mut client) = socket_pair();
        let mailbox = Mailbox::default();
        mailbox.post(10, integer(10));
        mailbox.post(3, integer(3));
        assert!(mailbox.arm(server.as_raw_fd(), Proto::Resp2, 10, 3, here()), "one answer of three was in");
        mailbox.post(12, integer(12));
        mailbox.post(13, integer(13));
        assert_eq!(mailbox.try_settle(), Settled::Pending);
        assert!(nothing_to_read(&client), "nothing before the batch is whole");
        mailbox.post(11, integer(11));
        assert_eq!(read_exactly(&mut client, 15), b":10\r\n:11\r\n:12\r\n");
        assert_eq!(mailbox.settle(Duration::from_secs(1)), Settled::Sent);
        assert!(nothing_to_read(&client));
        assert_eq!(queued(&mailbox), vec![3, 13], "answers outside the batch wait in the queue");
    }

    #[test]
    fn a_batch_with_every_answer_in_is_not_armed() {
        let (server, client) = socket_pair();
        let mailbox = Mailbox::default();
        mailbox.post(0, integer(0));
        mailbox.post(1, integer(1));
        assert!(!mailbox.arm(server.as_raw_fd(), Proto::Resp2, 0, 2, here()));
        assert_eq!(queued(&mailbox), vec![0, 1]);
        assert!(nothing_to_read(&client));
    }

    #[test]
    fn an_answer_that_is_not_a_reply_hands_the_batch_back_unsent() {
        let (server, client) = socket_pair();
        let mailbox = Mailbox::default();
        assert!(mailbox.arm(server.as_raw_fd(), Proto::Resp2, 0, 2, here()));
        mailbox.post(0, integer(0));
        mailbox.post(1, Answer::Forward { client_addr: "127.0.0.1:1".into() });
        assert_eq!(mailbox.settle(Duration::from_secs(1)), Settled::Back);
        let mut got = queued(&mailbox);
        got.sort_unstable();
        assert_eq!(got, vec![0, 1]);
        assert!(nothing_to_read(&client));
    }

    #[test]
    fn replies_too_large_to_send_here_come_back_as_answers() {
        let (server, client) = socket_pair();
        let mailbox = Mailbox::default();
        assert!(mailbox.arm(server.as_raw_fd(), Proto::Resp2, 0, 1, here()));
        mailbox.post(0, Answer::Reply(Reply::Value(vec![b'x'; DIRECT_BYTES_MAX].into())));
        assert_eq!(mailbox.settle(Duration::from_secs(1)), Settled::Back);
        assert!(
            matches!(mailbox.wait(Duration::ZERO), Some((0, Answer::Reply(Reply::Value(v)))) if v.len() == DIRECT_BYTES_MAX)
        );
        assert!(nothing_to_read(&client));
    }

    #[test]
    fn a_socket_that_takes_part_of_a_batch_leaves_the_rest_to_the_connection() {
        let (mut server, mut client) = socket_pair();
        let mailbox = Mailbox::default();
        let value = vec![b'v'; 50_000];
        let mut expected = Vec::new();
        // The client reads nothing until the socket's buffers are full.
        let unsent = (0..1000u64)
            .find_map(|seq| {
                assert!(mailbox.arm(server.as_raw_fd(), Proto::Resp2, seq, 1, here()));
                let reply = Reply::Value(value.clone().into());
                reply.encode_as(Proto::Resp2, &mut expected);
                mailbox.post(seq, Answer::Reply(reply));
                match mailbox.settle(Duration::from_secs(1)) {
                    Settled::Sent => None,
                    Settled::Unsent(bytes) => Some(bytes),
                    other => panic!("batch {seq}: {other:?}"),
                }
            })
            .expect("the socket filled up");
        let reader = std::thread::spawn(move || read_exactly(&mut client, expected.len()) == expected);
        server.write_all(&unsent).expect("the rest");
        assert!(reader.join().expect("reader"), "the client read every reply once, in order");
    }

    #[test]
    fn a_closed_mailbox_drops_answers_and_writes_nothing() {
        let (server, client) = socket_pair();
        let mailbox = Mailbox::default();
        assert!(mailbox.arm(server.as_raw_fd(), Proto::Resp2, 0, 1, here()));
        mailbox.close();
        mailbox.post(0, integer(0));
        mailbox.post(1, integer(1));
        assert!(mailbox.wait(Duration::ZERO).is_none());
        assert!(nothing_to_read(&client));
    }

    #[test]
    fn a_wake_ends_a_wait_for_input() {
        let (server, _client) = socket_pair();
        let fd = server.as_raw_fd();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            tx.send(crate::net::sys::Waker::current()).expect("send");
            crate::net::sys::readable_within(fd, Duration::from_secs(60)).expect("poll")
        });
        let waker = rx.recv().expect("the waiter's waker");
        // A wake that lands before the wait starts is lost: wake until one
        // lands (each is harmless).
        let start = Instant::now();
        while !waiter.is_finished() {
            assert!(start.elapsed() < Duration::from_secs(30), "the wait was never cut short");
            waker.wake();
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!waiter.join().expect("waiter"), "woken, with no input");
    }
}
