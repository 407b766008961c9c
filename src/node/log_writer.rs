//! The log writer: a thread that owns the write-ahead log once the node
//! runs. The core hands it each Ready's write and goes on stepping
//! messages, ticking and applying while the disk works (etcd's asynchronous
//! storage writes). A sync that takes 200 ms on a busy disk then delays
//! only what waits for it (this node's acknowledgements of new entries, its
//! vote) instead of freezing the node: heartbeats are still answered, so a
//! slow disk alone no longer makes a leader look dead to its followers, nor
//! a follower to its leader's check-quorum.
//!
//! Jobs are written in the order they were handed over, and everything
//! queued while one sync ran is covered by the next (group commit). The
//! answers a sync made true (a follower's acknowledgement of new entries,
//! a vote) leave from this thread as soon as it returns, straight to the
//! peers' sender threads: through the core they waited for its next turn,
//! one more thread handoff on every write's path. Each finished job then
//! comes back to the core in order, which tells the Raft core.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::net::ratelimit::RateLimited;
use crate::raft::{Entry, HardState, Index, Message, Persist, Term};
use crate::wal::{Wal, WalError};

/// Jobs one sync covers at most, so completions keep flowing under a
/// steady stream of writes.
const JOBS_PER_SYNC_MAX: usize = 1024;

/// A sync longer than this is worth a warning: acknowledgements and votes
/// wait for it.
const SLOW_SYNC: Duration = Duration::from_millis(100);

/// One Ready's write, and what waits for it.
pub struct Write {
    pub entries: Vec<Entry>,
    pub hard_state: Option<HardState>,
    pub must_sync: bool,
    /// Sent (by `spawn`'s `answers`) once the write is durable.
    pub messages: Vec<Message>,
    pub persist: Persist,
}

enum Job {
    Write(Write),
    MarkSnapshot { index: Index, term: Term },
}

/// A finished job, in the order the jobs were handed over.
pub enum Done {
    Written {
        persist: Persist,
    },
    /// The snapshot marker is durable and the segments it covers deleted.
    Marked {
        index: Index,
    },
}

pub type Completions = Result<Vec<Done>, WalError>;

/// What INFO shows of the disk, kept current by the writer.
#[derive(Default)]
pub struct StorageStats {
    pub log_disk_bytes: AtomicU64,
    pub log_segments: AtomicU64,
    pub syncs: AtomicU64,
    pub sync_micros_last: AtomicU64,
    pub sync_micros_max: AtomicU64,
    /// Free space on the log's filesystem, checked every few seconds.
    pub disk_free_bytes: AtomicU64,
}

pub struct LogWriter {
    jobs: Option<Sender<Job>>,
    done: Receiver<Completions>,
    /// Jobs handed over and not yet come back.
    in_flight: usize,
    stats: Arc<StorageStats>,
    thread: Option<JoinHandle<()>>,
}

impl LogWriter {
    /// `fsync`: whether a write is synced, or only handed to the kernel;
    /// `answers` sends a message to its peer once what it promises is
    /// durable.
    pub fn spawn(wal: Wal, fsync: bool, answers: impl Fn(Message) + Send + 'static) -> std::io::Result<LogWriter> {
        let (jobs, jobs_rx) = crossbeam_channel::unbounded();
        let (done_tx, done) = crossbeam_channel::unbounded();
        let stats = Arc::new(StorageStats::default());
        publish_sizes(&wal, &stats);
        check_space(&wal, &stats);
        let shared = stats.clone();
        let thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || run(wal, fsync, &jobs_rx, &done_tx, &shared, &answers))?;
        Ok(LogWriter { jobs: Some(jobs), done, in_flight: 0, stats, thread: Some(thread) })
    }

    pub fn write(&mut self, w: Write) {
        self.hand_over(Job::Write(w));
    }

    /// Marks a snapshot at `index` once every write handed over before it
    /// is durable, and deletes the segments it covers.
    pub fn mark_snapshot(&mut self, index: Index, term: Term) {
        self.hand_over(Job::MarkSnapshot { index, term });
    }

    fn hand_over(&mut self, job: Job) {
        // A send fails only when the writer stopped on a storage error,
        // which it reported as a completion the core reads next.
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(job);
        }
        self.in_flight += 1;
    }

    /// Where finished jobs arrive; pass what comes to `finished`.
    pub fn completions(&self) -> Receiver<Completions> {
        self.done.clone()
    }

    /// Counts the jobs that came back.
    pub fn finished(&mut self, done: &Completions) {
        if let Ok(batch) = done {
            self.in_flight = self.in_flight.saturating_sub(batch.len());
        }
    }

    /// Waits for the next completions (pass them to `finished`).
    pub fn wait(&self) -> Completions {
        self.done.recv().unwrap_or_else(|_| Err(writer_gone()))
    }

    pub fn is_idle(&self) -> bool {
        self.in_flight == 0
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    pub fn stats(&self) -> &StorageStats {
        &self.stats
    }
}

impl Drop for LogWriter {
    /// Lets the writer finish what it was given (nothing was promised
    /// about it, but there is no reason to lose it) and waits for it.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The writer stopped without saying why: it cannot, so this is a bug.
pub fn writer_gone() -> WalError {
    WalError::Failed { first: "the log writer thread stopped".into() }
}

/// How often the writer looks at the free space.
const SPACE_CHECK: Duration = Duration::from_secs(5);

fn run(
    mut wal: Wal,
    fsync: bool,
    jobs: &Receiver<Job>,
    done: &Sender<Completions>,
    stats: &StorageStats,
    answers: &dyn Fn(Message),
) {
    let mut space_checked = Instant::now();
    loop {
        let first = match jobs.recv_timeout(SPACE_CHECK) {
            Ok(job) => job,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                check_space(&wal, stats);
                space_checked = Instant::now();
                continue;
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
        };
        if space_checked.elapsed() >= SPACE_CHECK {
            check_space(&wal, stats);
            space_checked = Instant::now();
        }
        let mut batch = vec![first];
        while batch.len() < JOBS_PER_SYNC_MAX {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let result = write_batch(&mut wal, fsync, batch, stats, answers);
        publish_sizes(&wal, stats);
        let failed = result.is_err();
        if done.send(result).is_err() || failed {
            return;
        }
    }
}

fn write_batch(
    wal: &mut Wal,
    fsync: bool,
    batch: Vec<Job>,
    stats: &StorageStats,
    answers: &dyn Fn(Message),
) -> Completions {
    let mut finished = Vec::with_capacity(batch.len());
    let mut messages = Vec::new();
    let mut must_sync = false;
    for job in batch {
        match job {
            Job::Write(w) => {
                if !w.entries.is_empty() {
                    wal.append(&w.entries)?;
                }
                if let Some(hs) = &w.hard_state {
                    wal.set_hard_state(hs)?;
                }
                must_sync |= w.must_sync;
                messages.extend(w.messages);
                finished.push(Done::Written { persist: w.persist });
            }
            Job::MarkSnapshot { index, term } => {
                // The marker is synced with everything written before it.
                timed(stats, || wal.mark_snapshot(index, term))?;
                must_sync = false;
                finished.push(Done::Marked { index });
            }
        }
    }
    if must_sync {
        timed(stats, || if fsync { wal.sync() } else { wal.flush() })?;
    }
    // In the order the core made them.
    for m in messages {
        answers(m);
    }
    Ok(finished)
}

fn timed(stats: &StorageStats, f: impl FnOnce() -> Result<(), WalError>) -> Result<(), WalError> {
    let started = Instant::now();
    let result = f();
    let took = started.elapsed();
    let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    stats.syncs.fetch_add(1, Ordering::Relaxed);
    stats.sync_micros_last.store(micros, Ordering::Relaxed);
    stats.sync_micros_max.fetch_max(micros, Ordering::Relaxed);
    if took >= SLOW_SYNC {
        SLOW_SYNC_LOG
            .warn(|| format!("writing the log took {took:?}: acknowledgements and votes waited for it (a slow disk?)"));
    }
    result
}

static SLOW_SYNC_LOG: RateLimited = RateLimited::new(5, Duration::from_secs(60));

/// Records the free space, warning (at most once a minute) when it is low.
pub fn check_space(wal: &Wal, stats: &StorageStats) {
    let Ok((free, total)) = crate::wal::space::free_bytes(wal.dir()) else { return };
    stats.disk_free_bytes.store(free, Ordering::Relaxed);
    if free < crate::wal::space::LOW_SPACE_BYTES {
        LOW_SPACE_LOG.warn(|| {
            format!(
                "only {} free of {} on the disk of {}: the node stops when it cannot make its next log segment",
                super::info::human(free),
                super::info::human(total),
                wal.dir().display()
            )
        });
    }
}

static LOW_SPACE_LOG: RateLimited = RateLimited::new(1, Duration::from_secs(60));

fn publish_sizes(wal: &Wal, stats: &StorageStats) {
    stats.log_disk_bytes.store(wal.disk_bytes(), Ordering::Relaxed);
    stats.log_segments.store(wal.segment_count() as u64, Ordering::Relaxed);
}
