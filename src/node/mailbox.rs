//! Where the core's answers wait for one client connection: a queue and a
//! condition variable that the connection's thread sleeps on.
//!
//! A channel would do the same job, but its receive spins and yields the
//! processor a few times before it sleeps. With a thread per connection
//! that adds up: under 64 connections of writes, threads yielding to each
//! other took a third of the leader's CPU time on two cores (perf, in the
//! README). A condition variable goes straight to sleep.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::client::Answer;

#[derive(Clone, Debug, Default)]
pub struct Mailbox(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    answers: Mutex<VecDeque<(u64, Answer)>>,
    posted: Condvar,
}

impl Mailbox {
    /// Leaves the answer to request `seq`. Never blocks for long: the lock
    /// is held only to push or pop.
    pub fn post(&self, seq: u64, answer: Answer) {
        self.0.answers.lock().push_back((seq, answer));
        self.0.posted.notify_one();
    }

    /// The next answer, or `None` if none came within `timeout`.
    pub fn wait(&self, timeout: Duration) -> Option<(u64, Answer)> {
        let deadline = Instant::now() + timeout;
        let mut answers = self.0.answers.lock();
        loop {
            if let Some(a) = answers.pop_front() {
                return Some(a);
            }
            if self.0.posted.wait_until(&mut answers, deadline).timed_out() {
                return answers.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::Reply;

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
}
