//! The core thread: the only owner of the Raft core and the state machine.
//! It selects over peer messages, client requests, the ticker and the log
//! writer's completions, feeds everything waiting into the core, then
//! carries out each `Ready`: send what may go at once, hand the write to the
//! log writer, apply, answer clients, serve reads. The core goes on while
//! the writer syncs; what waited for a write (an acknowledgement, a vote)
//! leaves when the writer says it is durable. Every request that arrived
//! while a sync ran is written by the next one (group commit), and a
//! leader's appends leave before its own sync.
//!
//! No Raft decision is made here: terms, votes and commit are the core's.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, select};

use super::client::{Answer, ReadRequest, Request, Submission};
use super::envelope::{self, Decoded, RequestId};
use super::logging::LogContext;
use super::pending::{AdminGoal, Pending, PendingAdmin, PendingRead, PendingWrite, Waiter, try_again};
use super::snapshots::{Snapshots, Taken};
use super::ticks::Ticks;
use crate::command::RaftCommand;
use crate::command::now_ms;
use crate::identity::{ClusterId, ClusterIdentity};
use crate::kv::sessions::{Origin, Seen};
use crate::kv::{KvStore, Stamp, WriteOp};
use crate::net::ratelimit::RateLimited;
use crate::peers::Peers;
use crate::raft::{
    Addrs, Body, Entry, Membership, MembershipChange, MembershipError, Message, NodeId, Payload, ProposeError, Raft,
    Ready, Role, Term, TransferError,
};
use crate::resp::Reply;
use crate::transport::Transport;
use crate::wal::{SnapshotFile, WalError};

use super::log_writer::{Completions, Done, LogWriter, Write, writer_gone};

/// Messages and requests handled before the core's work is carried out:
/// the batch one sync covers.
const BATCH_INPUTS_MAX: usize = 4096;

/// How long after a failed snapshot the next is tried unasked.
const SNAPSHOT_RETRY: Duration = Duration::from_secs(10);

/// A turn of the core thread longer than this is logged with where its time
/// went: heartbeats and answers wait for the whole turn, and a turn near an
/// election timeout costs a leader its followers.
const SLOW_TURN: Duration = Duration::from_millis(100);
/// Slow turns and late ticks come in runs when the machine is overloaded:
/// the first lines of a minute say what happened, the count says how often.
static SLOW_TURN_LOG: RateLimited = RateLimited::new(10, Duration::from_secs(60));
static LATE_TICK_LOG: RateLimited = RateLimited::new(10, Duration::from_secs(60));

/// Applying committed entries stops for the turn once the turn's work has
/// taken this long and nothing else is left to carry out: the rest is
/// applied in the next turns, with the messages that arrived meanwhile
/// (heartbeats, votes) stepped in between. A follower that fell behind
/// (a slow sync, a leader's burst) otherwise applied everything it had in
/// one turn, at 10 million keys about 20 us an entry (up to 3 ms while a
/// snapshot's view of the store was held, when its shards were one map
/// each), while its leader's heartbeats waited.
const APPLY_TURN_MAX: Duration = Duration::from_millis(10);
/// Committed entries one Ready applies at most; `APPLY_TURN_MAX` bounds
/// the Readys of a turn. Pipelined writes (8 connections, 32 deep) did 10%
/// more with 256 than with 32 (8 alternating rounds, 6 won): each Ready
/// costs a little.
const APPLY_ENTRIES_MAX: usize = 256;
/// The same while a view of the store is held (a snapshot being written, a
/// scan): the first write to each of the store's maps then copies it. With
/// 4,096 maps of 2,400 keys at 10 million keys, Readys of 160-256 entries
/// took 0.3-0.8 s (the slow-turn line); the maps are 16 times smaller now
/// (`kv::shards`), and this keeps such a Ready to a few ms.
const APPLY_ENTRIES_VIEWED_MAX: usize = 32;

/// Inputs taken in one turn stop after this long, so that what they
/// asked for (acknowledgements, answers) leaves before more is taken in: a
/// follower whose disk held it up for 100-200 ms found thousands of
/// appends waiting and took 95-115 ms to step them in one turn.
const INPUTS_TURN_MAX: Duration = Duration::from_millis(10);

/// The longest the core waits for input with nothing to do; the ticker
/// wakes it long before.
const IDLE_WAIT: Duration = Duration::from_secs(3600);

#[derive(Clone, Copy)]
enum Phase {
    Inputs,
    Written,
    SnapshotTaken,
    Work,
}

/// Where the `work` of one turn went, for the slow-turn line.
#[derive(Default)]
struct WorkSplit {
    entries: usize,
    readys: usize,
    in_readys: Duration,
    reads: Duration,
    snapshot: Duration,
}

/// Where one turn of the core loop spent its time.
#[derive(Default)]
struct Turn {
    started: Option<Instant>,
    last: Option<Instant>,
    spent: [Duration; 4],
}

impl Turn {
    fn start(&mut self) {
        let now = Instant::now();
        self.started = Some(now);
        self.last = Some(now);
    }

    fn mark(&mut self, phase: Phase) {
        let now = Instant::now();
        if let Some(last) = self.last.replace(now) {
            self.spent[phase as usize] += now - last;
        }
    }

    fn report(&self, w: &WorkSplit) {
        let Some(started) = self.started else { return };
        let took = started.elapsed();
        if took >= SLOW_TURN {
            let [inputs, written, taken, work] = self.spent;
            SLOW_TURN_LOG.warn(|| {
                format!(
                    "the core thread took {took:?} for one turn (messages and requests {inputs:?}, finished writes \
                 {written:?}, a finished snapshot {taken:?}, applying and sending {work:?}: {} entries applied in {} \
                 Readys taking {:?}, reads served in {:?}, starting a snapshot {:?})",
                    w.entries, w.readys, w.in_readys, w.reads, w.snapshot
                )
            });
        }
    }
}

/// With `--snapshot-bytes 0`, snapshots larger than this are spaced by the
/// log's size (`maybe_snapshot`).
const SNAPSHOT_AMORTIZED_ABOVE: u64 = 64 << 20;

pub struct CoreSettings {
    pub id: NodeId,
    pub tick: Duration,
    /// Ticks per election timeout, for bounding catch-up.
    pub election_ticks_max: u64,
    /// Ticks owed that are run at once (`ticks`): a third of the shortest
    /// election timeout.
    pub tick_burst: u64,
    pub request_timeout: Duration,
    /// How long a request waits for a leader to be known before `-TRYAGAIN`.
    pub leader_wait: Duration,
    pub peers: Peers,
    /// Entries applied since the last snapshot that trigger the next; 0: never.
    pub snapshot_entries: u64,
    /// A planted bug, for tests that must see the linearizability checker
    /// fail: every read is served from local state, without read index.
    pub planted_local_reads: bool,
    /// This process, as peers and write envelopes name it.
    pub incarnation: u64,
    /// The cluster this node belongs to, shared with the transport.
    pub identity: Arc<ClusterIdentity>,
    /// The data directory, where the cluster id is kept.
    pub data_dir: std::path::PathBuf,
    /// The connected clients, for INFO.
    pub clients: Arc<super::clients::Registry>,
    /// Bytes of log applied since the last snapshot that trigger the next;
    /// 0: never by size.
    pub snapshot_bytes: u64,
}

/// A request that needs a leader and waits for one.
struct Parked {
    request: Request,
    waiter: Waiter,
    since: Instant,
}

pub struct Core {
    settings: CoreSettings,
    raft: Raft,
    writer: LogWriter,
    kv: KvStore,
    snapshots: Snapshots,
    /// Operators waiting for `RAFT SNAPSHOT`, with what was applied when
    /// each asked: the snapshot that answers must cover it.
    snapshot_waiters: Vec<(Waiter, crate::raft::Index)>,
    /// A snapshot taken, whose marker the log writer is making durable.
    marking: Option<SnapshotFile>,
    /// After a failed snapshot (a full disk), when to try again unasked.
    snapshot_retry_at: Option<Instant>,
    transport: Arc<Transport>,
    log_context: Arc<LogContext>,
    incarnation: u64,
    next_seq: u64,
    next_read_ctx: u64,
    pending: Pending,
    parked: VecDeque<Parked>,
    /// INFO and local (READONLY) reads, answered from this node's own state
    /// once the inputs taken with them have been carried out: the Raft core
    /// moves on as a message is stepped (a snapshot to install, an applied
    /// index), the map only when the Ready is carried out, and an answer in
    /// between would pair the new index with the old map.
    local: Vec<(Local, Waiter)>,
    ticks: Ticks,
    /// The configuration the transport was last given addresses for.
    membership_seen: Membership,
    /// The term in which this node, leading a cluster without an id yet,
    /// proposed one.
    cluster_id_proposed: Option<Term>,
    /// Bytes of the entries applied since the last snapshot began (so the
    /// log a restart replays, and the core keeps in memory, stays bounded
    /// by `--snapshot-bytes` whatever the write pattern).
    applied_bytes_since_snapshot: u64,
    /// Where this turn's `work` went (for the slow-turn log line).
    work_split: WorkSplit,
    /// The leader's expiry sweep.
    sweep: crate::expiry::Sweep,
    /// Scans (KEYS, SCAN, HGETALL, HSCAN) run on their own thread, on a
    /// copy of the store, so a large one never holds up the core.
    scanner: crossbeam_channel::Sender<(crate::kv::KvView, crate::kv::Cmd, Waiter, u64)>,
    /// The leader (and term) the waiting writes were last proposed to.
    write_target: Option<(Term, NodeId)>,
    /// Since when no leader is known, while writes wait.
    leaderless_since: Option<Instant>,
    /// When next to look for writes a live leader has not applied.
    resend_check_at: Instant,
    /// Writes proposed again, for INFO.
    writes_proposed_again: u64,
}

/// A request answered from this node's own state (see `Core::local`).
enum Local {
    Info {
        sections: Vec<String>,
    },
    Read(ReadRequest),
    /// ROLE, or SENTINEL with its arguments.
    Role,
    Sentinel(Vec<Vec<u8>>),
}

/// Why the core thread stopped.
#[derive(Debug)]
pub enum CoreExit {
    Stopped,
    Storage(WalError),
}

impl Core {
    pub fn new(
        settings: CoreSettings,
        raft: Raft,
        writer: LogWriter,
        kv: KvStore,
        snapshots: Snapshots,
        transport: Arc<Transport>,
        log_context: Arc<LogContext>,
    ) -> Core {
        let incarnation = settings.incarnation;
        let ticks = Ticks::new(settings.tick, settings.tick_burst, settings.election_ticks_max + 1, Instant::now());
        Core {
            settings,
            raft,
            writer,
            kv,
            snapshots,
            snapshot_waiters: Vec::new(),
            marking: None,
            snapshot_retry_at: None,
            transport,
            log_context,
            incarnation,
            next_seq: 0,
            next_read_ctx: 0,
            pending: Pending::default(),
            parked: VecDeque::new(),
            local: Vec::new(),
            ticks,
            membership_seen: Membership::default(),
            cluster_id_proposed: None,
            applied_bytes_since_snapshot: 0,
            work_split: WorkSplit::default(),
            sweep: crate::expiry::Sweep::default(),
            scanner: spawn_scanner(),
            write_target: None,
            leaderless_since: None,
            resend_check_at: Instant::now(),
            writes_proposed_again: 0,
        }
    }

    pub fn transport(self) -> Arc<Transport> {
        self.transport
    }

    /// Runs until `stop()` says so or the disk fails.
    pub fn run(
        &mut self,
        inbound: &Receiver<Message>,
        requests: &Receiver<Submission>,
        stop: impl Fn() -> bool,
    ) -> CoreExit {
        self.update_transport_peers();
        let ticker = crossbeam_channel::tick(self.settings.tick);
        let snapshots_taken = self.snapshots.done.clone();
        let written = self.writer.completions();
        loop {
            let mut taken = None;
            let mut done = None;
            let mut turn = Turn::default();
            // Entries left to apply (`work`): look at the inputs, do not
            // wait for them.
            let wait = if self.raft.has_ready() { Duration::ZERO } else { IDLE_WAIT };
            select! {
                recv(inbound) -> m => if let Ok(m) = m { turn.start(); self.step(m) },
                recv(requests) -> r => if let Ok(r) = r { turn.start(); self.on_request(r) },
                recv(ticker) -> _ => {
                    turn.start();
                    // What peers said while this thread was held up (a
                    // long sync) comes before the time that passed: a
                    // leader must not count its followers silent because
                    // it had not read their answers yet.
                    for _ in 0..BATCH_INPUTS_MAX {
                        let Ok(m) = inbound.try_recv() else { break };
                        self.step(m);
                    }
                    self.on_tick()
                }
                recv(snapshots_taken) -> t => { turn.start(); taken = t.ok() },
                recv(written) -> d => { turn.start(); done = Some(d.unwrap_or_else(|_| Err(writer_gone()))) },
                default(wait) => turn.start(),
            }
            let inputs_from = Instant::now();
            for i in 0..BATCH_INPUTS_MAX {
                if i % 64 == 63 && inputs_from.elapsed() >= INPUTS_TURN_MAX {
                    break;
                }
                let mut idle = true;
                if let Ok(m) = inbound.try_recv() {
                    self.step(m);
                    idle = false;
                }
                if let Ok(r) = requests.try_recv() {
                    self.on_request(r);
                    idle = false;
                }
                if idle {
                    break;
                }
            }
            turn.mark(Phase::Inputs);
            let result = match done {
                Some(d) => self.on_written(d),
                None => Ok(()),
            };
            turn.mark(Phase::Written);
            let result = result.and_then(|()| match taken {
                Some(t) => self.on_snapshot_taken(t),
                None => Ok(()),
            });
            turn.mark(Phase::SnapshotTaken);
            let result = result.and_then(|()| self.work());
            turn.mark(Phase::Work);
            turn.report(&std::mem::take(&mut self.work_split));
            if let Err(e) = result {
                log::error!("storage failed: {e}; no further write will be acknowledged");
                self.pending.abandon("the node's storage failed");
                return CoreExit::Storage(e);
            }
            if stop() {
                self.shut_down();
                return CoreExit::Stopped;
            }
        }
    }

    fn shut_down(&mut self) {
        log::info!("shutting down");
        self.pending.abandon("the node is shutting down");
        for p in self.parked.drain(..) {
            p.waiter.reply(try_again("no leader (the node is shutting down)"));
        }
    }

    fn step(&mut self, m: Message) {
        if matches!(m.body, Body::ReadIndex { .. }) {
            self.sweep_expired();
        }
        // What was dropped and why is counted and logged by the core.
        let _ = self.raft.step(m);
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let late = self.ticks.since_wake(now);
        if late >= SLOW_TURN {
            LATE_TICK_LOG.warn(|| {
                format!("the core thread woke for a tick {late:?} after the last one (a long turn, or no CPU for it)")
            });
        }
        for _ in 0..self.ticks.due(now) {
            self.raft.tick();
        }
        // The core compacts a log it held for a follower at a tick.
        self.snapshots.release_held(self.raft.snapshot_index());
        self.pending.expire(now);
        self.check_waiting_writes(now);
        self.sweep_expired();
        self.retry_parked(now);
        if !self.pending.admin.is_empty() {
            self.check_admin();
        }
    }

    // ---- client requests ----

    fn on_request(&mut self, s: Submission) {
        let waiter = Waiter { reply_to: s.reply_to, seq: s.seq };
        if !matches!(s.request, Request::Info { .. } | Request::Raft(_) | Request::Role | Request::Sentinel(_))
            && let Some(why) = self.refused()
        {
            // README, Security: a node its peers refuse for its cluster id serves
            // nothing from its data, not even READONLY reads.
            waiter.reply(try_again(&why));
            return;
        }
        match s.request {
            Request::Info { sections } => self.local.push((Local::Info { sections }, waiter)),
            Request::Role => self.local.push((Local::Role, waiter)),
            Request::Sentinel(args) => self.local.push((Local::Sentinel(args), waiter)),
            Request::Read { op, local } if local || self.settings.planted_local_reads => {
                self.local.push((Local::Read(op), waiter))
            }
            request => {
                if matches!(request, Request::Read { .. }) {
                    // What expired by the leader's clock before this read
                    // arrived is gone for it (docs/commands.md).
                    self.sweep_expired();
                }
                self.submit(request, waiter, Instant::now())
            }
        }
    }

    /// Why this node must not serve data, if its peers refuse its cluster id.
    fn refused(&self) -> Option<String> {
        let m = self.raft.membership();
        let voters = m.voters.iter().chain(m.outgoing.iter()).copied();
        self.settings.identity.refused(self.settings.id, voters)
    }

    /// Answers what `local` holds; called once the Ready is carried out.
    fn answer_local(&mut self) {
        for (request, waiter) in std::mem::take(&mut self.local) {
            match request {
                Local::Info { sections } => {
                    let storage = super::info::Storage {
                        log: self.writer.stats(),
                        writes_queued: self.writer.in_flight(),
                        snapshot_bytes: self.snapshots.disk_bytes(),
                    };
                    let cluster = super::info::Cluster { id: self.settings.identity.get(), refused: self.refused() };
                    let log_bytes = self.raft.log_bytes();
                    let usage = super::info::Usage {
                        clients: &self.settings.clients,
                        log_bytes,
                        log_held_bytes: self.raft.compaction_held_bytes() as u64,
                        peers: self.transport.stats(),
                        tick: self.settings.tick,
                        election_timeout: self.election_timeout(),
                        writes_waiting: self.pending.writes.len(),
                        writes_proposed_again: self.writes_proposed_again,
                    };
                    let peers = &self.settings.peers;
                    let text = super::info::render(&self.raft, &self.kv, storage, peers, cluster, usage, &sections);
                    waiter.reply(Reply::Verbatim(String::from_utf8_lossy(&text).into_owned()));
                }
                // READONLY: this node's state and clock, as a Redis replica
                // hides keys past their deadline by its own clock.
                Local::Read(op) => self.answer_read(op, waiter, now_ms()),
                Local::Role => waiter.reply(self.sentinel_view().role()),
                Local::Sentinel(args) => waiter.reply(self.sentinel_view().sentinel(&args)),
            }
        }
    }

    /// The longest election timeout: how long a member may be silent
    /// before it counts as down.
    fn election_timeout(&self) -> Duration {
        self.settings.tick * self.settings.election_ticks_max as u32
    }

    fn sentinel_view(&self) -> super::sentinel::View<'_> {
        super::sentinel::View {
            raft: &self.raft,
            peers: &self.settings.peers,
            tick: self.settings.tick,
            election_timeout: self.election_timeout(),
        }
    }

    /// Hands a request to the core, or parks it until a leader is known.
    fn submit(&mut self, request: Request, waiter: Waiter, since: Instant) {
        let result = match request {
            Request::Write(_) | Request::Exec { .. } => self.propose(request, waiter),
            Request::Read { op, .. } => self.read(PendingRead { op, waiter, clock: 0 }),
            Request::Raft(cmd) => self.admin(cmd, waiter),
            Request::Info { .. } | Request::Role | Request::Sentinel(_) => unreachable!("answered by answer_local"),
        };
        if let Err((request, waiter)) = result {
            self.parked.push_back(Parked { request, waiter, since });
        }
    }

    fn retry_parked(&mut self, now: Instant) {
        if self.parked.is_empty() {
            return;
        }
        let ready = self.raft.leader().is_some() && !self.raft.transferring();
        for p in std::mem::take(&mut self.parked) {
            if now.duration_since(p.since) >= self.settings.leader_wait {
                p.waiter.reply(try_again("no leader"));
            } else if ready {
                self.submit(p.request, p.waiter, p.since);
            } else {
                self.parked.push_back(p);
            }
        }
    }

    /// The stamp of an entry proposed now (`crate::kv`: time).
    fn stamp(&self) -> Stamp {
        Stamp { ms: now_ms(), leader: self.raft.role() == Role::Leader }
    }

    fn propose(&mut self, request: Request, waiter: Waiter) -> Result<(), (Request, Waiter)> {
        // Writes waiting from before a change of leader go first.
        self.follow_leader();
        let stamp = self.stamp();
        // Moved, not copied: a value may be megabytes.
        let op = match request {
            Request::Write(args) => WriteOp::Run { stamp, args },
            Request::Exec { watches, commands } => WriteOp::Exec { stamp, watches, commands },
            _ => unreachable!("only writes are proposed"),
        };
        let seq = self.next_seq;
        let floor = Some(self.pending.write_floor(seq));
        let id = RequestId { origin: self.settings.id, incarnation: self.incarnation, seq, floor };
        let entry = envelope::encode(id, &op);
        match self.raft.propose(entry.clone()) {
            Ok(_) => {
                self.next_seq += 1;
                let now = Instant::now();
                let sent_to = (self.raft.term(), self.raft.leader().unwrap_or(self.settings.id));
                let write = PendingWrite { waiter, entry, sent_to, sent_at: now };
                self.pending.add_write(seq, write, now + self.settings.request_timeout);
                Ok(())
            }
            Err(ProposeError::NoLeader | ProposeError::TransferInProgress) => {
                let request = match op {
                    WriteOp::Run { args, .. } => Request::Write(args),
                    WriteOp::Exec { watches, commands, .. } => Request::Exec { watches, commands },
                    WriteOp::Expire { .. } => unreachable!("the sweep is not a client's request"),
                };
                Err((request, waiter))
            }
        }
    }

    /// Leader: proposes the deletion of keys past their deadline by this
    /// node's clock, which reads from now on wait for (`crate::expiry`).
    fn sweep_expired(&mut self) {
        // Deleting expired keys again is harmless: no session.
        let id = RequestId { origin: self.settings.id, incarnation: self.incarnation, seq: u64::MAX, floor: None };
        self.sweep.run(&mut self.raft, &self.kv, now_ms(), |op| envelope::encode(id, &op));
    }

    /// Serves a read from this node's state: scans from a copy on the
    /// scanner thread, the rest here.
    fn answer_read(&mut self, op: ReadRequest, waiter: Waiter, clock: u64) {
        match op {
            ReadRequest::Cmd(cmd) if cmd.is_scan() => {
                let view = self.kv.view();
                if let Err(e) = self.scanner.send((view, cmd, waiter, clock)) {
                    let (_, _, waiter, _) = e.into_inner();
                    waiter.reply(Reply::err("the scanner thread is gone"));
                }
            }
            ReadRequest::Cmd(cmd) => waiter.reply(self.kv.read(&cmd, now_ms(), clock)),
            ReadRequest::Watch(keys) => {
                waiter.reply(Reply::array(keys.iter().map(|k| Reply::Integer(self.kv.watch_mark(k) as i64)).collect()))
            }
        }
    }

    fn read(&mut self, read: PendingRead) -> Result<(), (Request, Waiter)> {
        let ctx = self.next_read_ctx;
        match self.raft.read_index(ctx) {
            Ok(()) => {
                self.next_read_ctx += 1;
                let deadline = Instant::now() + self.settings.request_timeout;
                self.pending.add_read(ctx, read, deadline);
                Ok(())
            }
            Err(_) => Err((Request::Read { op: read.op, local: false }, read.waiter)),
        }
    }

    // ---- carrying out Ready ----

    fn work(&mut self) -> Result<(), WalError> {
        self.follow_leader();
        let started = Instant::now();
        while self.raft.has_ready() {
            if started.elapsed() >= APPLY_TURN_MAX && !self.raft.has_ready_besides_applying() {
                break;
            }
            let viewed = self.kv.is_viewed();
            self.raft.set_apply_entries_max(if viewed { APPLY_ENTRIES_VIEWED_MAX } else { APPLY_ENTRIES_MAX });
            let rd = self.raft.ready();
            self.carry_out(rd)?;
        }
        let readys_done = Instant::now();
        self.serve_reads();
        self.answer_local();
        let reads_done = Instant::now();
        self.maybe_propose_cluster_id();
        self.maybe_snapshot();
        let snapshot_done = Instant::now();
        self.work_split.in_readys += readys_done - started;
        self.work_split.reads += reads_done - readys_done;
        self.work_split.snapshot += snapshot_done - reads_done;
        if !self.pending.admin.is_empty() {
            self.check_admin();
        }
        let learner = !self.raft.membership().is_voter(self.settings.id);
        self.log_context.set(self.raft.role(), learner, self.raft.term().0);
        if *self.raft.membership() != self.membership_seen {
            self.update_transport_peers();
        }
        Ok(())
    }

    fn carry_out(&mut self, mut rd: Ready) -> Result<(), WalError> {
        self.snapshots.free(std::mem::take(&mut rd.discarded));
        for m in std::mem::take(&mut rd.messages) {
            self.send(m);
        }
        // A snapshot replaces the state machine and the log under
        // everything written before it: it waits for those writes, and
        // nothing more is fed in until it is durable.
        let whole = rd.snapshot.is_some() || !rd.snapshot_chunks.is_empty();
        if whole {
            self.wait_written()?;
        }
        let received = match rd.snapshot_chunks.is_empty() {
            true => None,
            false => self.snapshots.receive(std::mem::take(&mut rd.snapshot_chunks))?,
        };
        let installed = match rd.snapshot.clone() {
            Some(meta) => Some(self.install_snapshot(&meta)?),
            None => None,
        };
        let write = Write {
            entries: std::mem::take(&mut rd.entries),
            hard_state: rd.hard_state.take(),
            must_sync: rd.must_sync,
            messages: std::mem::take(&mut rd.persisted_messages),
            persist: rd.take_persist(),
        };
        let writes_nothing = write.entries.is_empty() && write.hard_state.is_none() && write.persist.is_empty();
        if writes_nothing && self.writer.is_idle() {
            // Answers (to heartbeats, to read-index rounds) that promise
            // only what is durable already: through the log writer they
            // would cost every linearizable read one more thread handoff.
            for m in write.messages {
                self.send(m);
            }
        } else if !writes_nothing || !write.messages.is_empty() {
            self.writer.write(write);
        }
        if whole {
            self.wait_written()?;
        }
        if let Some(file) = installed {
            self.snapshots.adopt(file, self.raft.snapshot_index());
        }
        let applied_any = !rd.committed_entries.is_empty();
        self.work_split.entries += rd.committed_entries.len();
        self.work_split.readys += 1;
        for e in std::mem::take(&mut rd.committed_entries) {
            self.apply(e)?;
        }
        if applied_any {
            // Before any read at these entries is released (`Raft`'s
            // `check_reads`): a key they brought in may be past its
            // deadline already (a deadline from a slower clock, or a
            // commit that took longer than the time to live).
            self.sweep_expired();
        }
        for r in std::mem::take(&mut rd.read_states) {
            self.pending.confirm(r.ctx, r.index, r.clock);
        }
        // Writes the core never sent to the leader they were queued for
        // wait in `pending` and go to the next leader (`follow_leader`).
        rd.forward_failures.clear();
        if let Some(ok) = received {
            self.raft.snapshot_received(ok);
        }
        for ctx in std::mem::take(&mut rd.read_failures) {
            self.reread(ctx);
        }
        Ok(())
    }

    /// Writes the log writer finished, in the order they were handed over.
    fn on_written(&mut self, done: Completions) -> Result<(), WalError> {
        self.writer.finished(&done);
        for d in done? {
            match d {
                Done::Written { persist } => self.raft.persisted(persist),
                Done::Marked { index } => self.on_marked(index),
            }
        }
        Ok(())
    }

    /// Until every write handed to the log writer is durable.
    fn wait_written(&mut self) -> Result<(), WalError> {
        while !self.writer.is_idle() {
            let done = self.writer.wait();
            self.on_written(done)?;
        }
        Ok(())
    }

    /// A new leader (or term): the writes still waiting are proposed to it
    /// again, with their ids, whether this node forwarded them to a leader
    /// that died or appended them itself as a leader that lost its office.
    /// Copies already in the log apply once (`crate::kv::sessions`).
    fn follow_leader(&mut self) {
        let Some(leader) = self.raft.leader() else { return };
        let target = (self.raft.term(), leader);
        if self.write_target == Some(target) || self.raft.transferring() {
            return;
        }
        self.write_target = Some(target);
        self.leaderless_since = None;
        let resent = self.resend_writes(Instant::now(), |w| w.sent_to != target);
        if resent > 0 {
            log::info!("proposed {resent} waiting writes again to leader {leader} of term {}", target.0);
        }
    }

    /// Proposes again the waiting writes `stale` picks; returns how many.
    fn resend_writes(&mut self, now: Instant, stale: impl Fn(&PendingWrite) -> bool) -> usize {
        let Some(leader) = self.raft.leader() else { return 0 };
        let target = (self.raft.term(), leader);
        let mut resent = 0;
        for w in self.pending.writes.values_mut().filter(|w| stale(w)) {
            if self.raft.propose(w.entry.clone()).is_err() {
                break;
            }
            w.sent_to = target;
            w.sent_at = now;
            resent += 1;
        }
        self.writes_proposed_again += resent as u64;
        resent
    }

    /// At a tick: writes forwarded to a leader that has not applied them
    /// within an election timeout go again (the message may have been lost
    /// with a connection); with no leader for longer than a request waits
    /// for one, the writes' outcome is unknown to this node and it says so.
    fn check_waiting_writes(&mut self, now: Instant) {
        if self.pending.writes.is_empty() {
            self.leaderless_since = None;
            return;
        }
        if self.raft.leader().is_none() {
            let since = *self.leaderless_since.get_or_insert(now);
            if now.duration_since(since) >= self.settings.leader_wait {
                let why = format!("no leader for {} ms", self.settings.leader_wait.as_millis());
                self.pending.time_out_writes(&why);
            }
            return;
        }
        self.leaderless_since = None;
        let retry = self.election_timeout();
        if now < self.resend_check_at || self.raft.role() == Role::Leader {
            return;
        }
        self.resend_check_at = now + retry / 4;
        let resent = self.resend_writes(now, |w| now.duration_since(w.sent_at) >= retry);
        if resent > 0 {
            log::debug!("proposed {resent} writes again: not applied within {retry:?}");
        }
    }

    fn send(&mut self, mut m: Message) {
        if let Body::InstallSnapshot { meta, offset, data, done } = &mut m.body
            && !self.snapshots.fill(meta, *offset, data, done)
        {
            return;
        }
        self.transport.send(m);
    }

    /// The first leader of a cluster names it: a random id, proposed once
    /// per term until one is applied (the first applied wins everywhere).
    fn maybe_propose_cluster_id(&mut self) {
        let term = self.raft.term();
        if self.raft.role() != Role::Leader
            || self.settings.identity.get().is_some()
            || self.cluster_id_proposed == Some(term)
            || self.raft.transferring()
        {
            return;
        }
        let id = ClusterId::random();
        if self.raft.propose(envelope::encode_cluster_id(id)).is_ok() {
            log::info!("proposing cluster id {id} for this new cluster");
            self.cluster_id_proposed = Some(term);
        }
    }

    /// An entry or a snapshot named the cluster: the first name a node
    /// learns is its cluster's for good, made durable before anything
    /// depends on it; later ones (another leader's proposal that lost the
    /// race) change nothing.
    fn learn_cluster_id(&mut self, id: ClusterId) -> Result<(), WalError> {
        match self.settings.identity.get() {
            None => {
                crate::identity::store(&self.settings.data_dir, id).map_err(|first| WalError::Failed { first })?;
                self.settings.identity.adopt(id);
                log::info!("this node belongs to cluster {id}");
            }
            Some(ours) if ours != id => log::debug!("cluster id {id} proposed late; the cluster is {ours}"),
            Some(_) => {}
        }
        Ok(())
    }

    // ---- snapshots ----

    /// Starts a snapshot when enough was applied since the last one, or an
    /// operator asked for one.
    fn maybe_snapshot(&mut self) {
        if self.snapshots.is_taking() || self.marking.is_some() {
            return;
        }
        let applied = self.raft.applied();
        let since = applied.0.saturating_sub(self.snapshots.index().0);
        let asked = (self.settings.snapshot_entries > 0 && since >= self.settings.snapshot_entries)
            || (self.settings.snapshot_bytes > 0 && self.applied_bytes_since_snapshot >= self.settings.snapshot_bytes);
        // A snapshot costs the whole store, whatever asked for it: one larger
        // than the byte threshold is taken again only once the log since
        // holds a quarter of it, so snapshots cost at most four bytes
        // written per byte of log at any size. By count alone a store of
        // ten million keys (1.1 GB) was written out again every 15 MB.
        let last = self.snapshots.disk_bytes();
        let small =
            if self.settings.snapshot_bytes > 0 { self.settings.snapshot_bytes } else { SNAPSHOT_AMORTIZED_ABOVE };
        let due = asked && (last <= small || self.applied_bytes_since_snapshot >= last / 4);
        let backing_off = self.snapshot_retry_at.is_some_and(|at| Instant::now() < at);
        if (!due || backing_off) && self.snapshot_waiters.is_empty() {
            return;
        }
        if since == 0 {
            // Nothing applied since the last one: it is as good as new.
            self.answer_snapshot_waiters(Reply::ok());
            return;
        }
        if let Some(meta) = self.raft.snapshot_meta_at(applied) {
            self.snapshots.start(meta, self.kv.view(), self.settings.identity.get());
            self.applied_bytes_since_snapshot = 0;
        }
    }

    /// A snapshot is durable: have the log writer mark it (deleting the
    /// segments it covers) after everything written before it; the
    /// in-memory log is cut and the operators waiting are answered when
    /// the marker is durable.
    fn on_snapshot_taken(&mut self, taken: Taken) -> Result<(), WalError> {
        match self.snapshots.finished(taken) {
            Ok(Some(file)) => {
                self.writer.mark_snapshot(file.meta.index, file.meta.term);
                self.marking = Some(file);
                return Ok(());
            }
            // One installed from the leader meanwhile is newer.
            Ok(None) => self.answer_covered_waiters(self.raft.snapshot_index()),
            Err(e) => {
                log::error!("taking a snapshot failed: {e}; trying again in {SNAPSHOT_RETRY:?}");
                self.snapshot_retry_at = Some(Instant::now() + SNAPSHOT_RETRY);
                self.answer_snapshot_waiters(Reply::err(format!("taking a snapshot failed: {e}")));
            }
        }
        Ok(())
    }

    /// The marker of a snapshot is durable.
    fn on_marked(&mut self, index: crate::raft::Index) {
        let Some(file) = self.marking.take_if(|f| f.meta.index == index) else {
            // The marker of a snapshot installed from the leader.
            return;
        };
        if index > self.raft.snapshot_index() {
            self.raft.compact(index);
        }
        self.snapshots.adopt(file, self.raft.snapshot_index());
        self.answer_covered_waiters(index);
    }

    /// Answers the operators whose `RAFT SNAPSHOT` a durable snapshot
    /// through `index` covers. One who asked while it was being written has
    /// writes it does not hold: they wait for the next, which
    /// `maybe_snapshot` starts at once for them.
    fn answer_covered_waiters(&mut self, index: crate::raft::Index) {
        for (w, _) in self.snapshot_waiters.extract_if(.., |(_, at)| *at <= index) {
            w.reply(Reply::ok());
        }
    }

    fn answer_snapshot_waiters(&mut self, reply: Reply) {
        for (w, _) in self.snapshot_waiters.drain(..) {
            w.reply(reply.clone());
        }
    }

    /// Follower: the leader's snapshot arrived whole; the state machine
    /// becomes what it holds. The log writer marks it next; the file is
    /// adopted once that is durable.
    fn install_snapshot(&mut self, meta: &crate::raft::SnapshotMeta) -> Result<SnapshotFile, WalError> {
        let (file, state) = self.snapshots.install(meta)?;
        log::info!("installed snapshot {}/{} from the leader: {} keys", meta.index, meta.term, state.kv.len());
        self.kv = state.kv;
        self.applied_bytes_since_snapshot = 0;
        if let Some(id) = state.cluster {
            self.learn_cluster_id(id)?;
        }
        self.writer.mark_snapshot(meta.index, meta.term);
        // Writes whose entries the snapshot covers: its sessions know.
        let origin = Origin { node: self.settings.id.0, incarnation: self.incarnation };
        let seqs: Vec<u64> = self.pending.writes.keys().copied().collect();
        for seq in seqs {
            match self.kv.seen(origin, seq) {
                Seen::Done(reply) => self.pending.answer_write(seq, reply),
                Seen::Passed => self.pending.answer_write(seq, super::pending::timeout()),
                Seen::New => {}
            }
        }
        Ok(file)
    }

    fn apply(&mut self, e: Entry) -> Result<(), WalError> {
        let Payload::Command(data) = &e.payload else { return Ok(()) };
        self.applied_bytes_since_snapshot += data.len() as u64;
        match envelope::decode(data) {
            Ok(Decoded::Write(id, op)) => {
                let reply = match id.once() {
                    Some(once) => self.kv.apply_once(&once, &op, e.index.0),
                    None => Some(self.kv.apply(&op, e.index.0)),
                };
                if let Some(reply) = reply
                    && id.origin == self.settings.id
                    && id.incarnation == self.incarnation
                {
                    self.pending.answer_write(id.seq, reply);
                }
            }
            Ok(Decoded::ClusterId(id)) => self.learn_cluster_id(id)?,
            // Every node skips the same bytes the same way, so the state
            // machines stay identical; the entry can only come from a bug.
            Err(err) => log::error!("skipping entry {} that does not decode: {err}", e.index),
        }
        Ok(())
    }

    /// A read lost its confirmation (the leader changed): ask again; a read
    /// has no effect, so asking twice is harmless.
    fn reread(&mut self, ctx: u64) {
        let Some(read) = self.pending.reads.remove(&ctx) else { return };
        match self.raft.read_index(ctx) {
            Ok(()) => {
                self.pending.reads.insert(ctx, read);
            }
            Err(_) => self.parked.push_back(Parked {
                request: Request::Read { op: read.op, local: false },
                waiter: read.waiter,
                since: Instant::now(),
            }),
        }
    }

    fn serve_reads(&mut self) {
        let applied = self.raft.applied();
        while let Some(read) = self.pending.next_servable(applied) {
            self.answer_read(read.op, read.waiter, read.clock);
        }
    }

    // ---- membership and leadership ----

    fn leader_client_addr(&self) -> Option<String> {
        let leader = self.raft.leader()?;
        super::info::client_addr_of(leader, self.raft.membership(), &self.settings.peers)
    }

    fn admin(&mut self, cmd: RaftCommand, waiter: Waiter) -> Result<(), (Request, Waiter)> {
        if let RaftCommand::Snapshot = cmd {
            // This node's own log: not forwarded.
            self.snapshot_waiters.push((waiter, self.raft.applied()));
            return Ok(());
        }
        let original = cmd.clone();
        if self.raft.role() != Role::Leader {
            return match self.leader_client_addr() {
                Some(client_addr) => {
                    waiter.answer(Answer::Forward { client_addr });
                    Ok(())
                }
                None => Err((Request::Raft(cmd), waiter)),
            };
        }
        let (goal, result) = match cmd {
            RaftCommand::Add { id, raft_addr, client_addr } => {
                let addrs = Addrs { raft: raft_addr, client: client_addr };
                (AdminGoal::Added(id), self.raft.change_membership(MembershipChange::AddVoter { id, addrs }))
            }
            RaftCommand::Remove { id } => {
                (AdminGoal::Removed(id), self.raft.change_membership(MembershipChange::Remove { id }))
            }
            RaftCommand::Transfer { id } => {
                let result = self.raft.transfer_leader(id).map_err(|e| match e {
                    TransferError::NotLeader => MembershipError::NotLeader,
                    TransferError::NotAVoter => MembershipError::NoVotersLeft,
                });
                if let Err(MembershipError::NoVotersLeft) = result {
                    waiter.reply(Reply::err(format!("node {id} is not a voter")));
                    return Ok(());
                }
                (AdminGoal::Leads(id), result)
            }
            RaftCommand::Snapshot => unreachable!("answered above"),
        };
        match result {
            Ok(()) => {
                let deadline = Instant::now() + self.settings.request_timeout;
                self.pending.admin.push(PendingAdmin { goal, waiter, deadline });
                self.check_admin();
            }
            // Leadership was lost in between: start over once a leader is known.
            Err(MembershipError::NotLeader) => return Err((Request::Raft(original), waiter)),
            Err(MembershipError::ChangeInProgress) => {
                waiter.reply(Reply::err("another membership change is in progress; try again when it is done"))
            }
            Err(MembershipError::TransferInProgress) => waiter.reply(try_again("a leadership transfer is in progress")),
            Err(MembershipError::NoVotersLeft) => waiter.reply(Reply::err("cannot remove the last voter")),
        }
        Ok(())
    }

    /// Answers the operators whose change is now committed.
    fn check_admin(&mut self) {
        let status = self.raft.status();
        let committed = &status.membership_committed;
        for a in std::mem::take(&mut self.pending.admin) {
            let done = match a.goal {
                AdminGoal::Added(id) => committed.voters.contains(&id) && !committed.is_joint(),
                AdminGoal::Removed(id) => !committed.contains(id) && !committed.is_joint(),
                AdminGoal::Leads(id) => status.leader == Some(id),
            };
            let abandoned = matches!(a.goal, AdminGoal::Leads(id)
                if status.role == Role::Leader && status.transfer_target != Some(id));
            if done {
                a.waiter.reply(Reply::ok());
            } else if abandoned {
                a.waiter.reply(Reply::err("the leadership transfer did not complete in time"));
            } else {
                self.pending.admin.push(a);
            }
        }
    }

    /// Peers are reached at the addresses of this node's own peers file when
    /// it lists them (README, the peers file: a node trusts its own copy), otherwise at the
    /// addresses the configuration in the log carries. Everyone the file
    /// lists stays reachable: a `--join` node has no configuration yet but
    /// must answer the leader, and a removed member may still be leading.
    fn update_transport_peers(&mut self) {
        let membership = self.raft.membership().clone();
        let me = self.settings.id;
        let (was, is) = (self.membership_seen.contains(me), membership.contains(me));
        if was && !is {
            log::info!("this node was removed from the cluster: it serves no data and does not campaign");
        } else if !was && is && !self.membership_seen.members().is_empty() {
            log::info!("this node was added to the cluster");
        }
        let mut peers = BTreeMap::new();
        let listed: Vec<NodeId> = self.settings.peers.peers.keys().copied().collect();
        // A member that just left is still told so (`Raft::departing`), at
        // the address the configuration it left had for it.
        let departing: Vec<NodeId> = self.raft.departing().collect();
        for id in membership.members().into_iter().chain(listed).chain(departing) {
            if id == self.settings.id {
                continue;
            }
            let addr = match self.settings.peers.get(id) {
                Some(p) => Some(p.raft_addr.clone()),
                None => {
                    membership.addrs.get(&id).or_else(|| self.membership_seen.addrs.get(&id)).map(|a| a.raft.clone())
                }
            };
            if let Some(addr) = addr.filter(|a| !a.is_empty()) {
                peers.insert(id, addr);
            }
        }
        self.transport.set_peers(peers);
        self.membership_seen = membership;
    }
}

/// The thread that serves scans from copies of the store. It ends when the
/// core drops its sender.
fn spawn_scanner() -> crossbeam_channel::Sender<(crate::kv::KvView, crate::kv::Cmd, Waiter, u64)> {
    let (tx, rx) = crossbeam_channel::unbounded::<(crate::kv::KvView, crate::kv::Cmd, Waiter, u64)>();
    let spawned = std::thread::Builder::new().name("scanner".into()).spawn(move || {
        for (view, cmd, waiter, clock) in rx {
            waiter.reply(view.read(&cmd, now_ms(), clock));
        }
    });
    if let Err(e) = spawned {
        log::error!("cannot start the scanner thread: {e}; scans will fail");
    }
    tx
}
