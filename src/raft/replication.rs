//! Log replication (paper §5.3) and the commit rule (§5.3, §5.4.2): the
//! leader's side (sending, pipelining, backtracking, committing) and the
//! follower's (the consistency check, replacing a conflicting suffix).

use super::core::{Dropped, Raft, Role};
use super::message::{AppendResp, Body, Entry, Payload};
use super::progress::ProgressState;
use super::quorum::quorum_value;
use super::types::{Index, NodeId, Term};

impl Raft {
    /// Leader: appends a new entry of the current term to its own log.
    pub(super) fn append_new(&mut self, payload: Payload) -> (Index, Term) {
        assert_eq!(self.role, Role::Leader, "only a leader appends new entries");
        let entry = Entry { term: self.term, index: self.log.last_index().next(), payload };
        let at = (entry.index, entry.term);
        self.log.append(std::slice::from_ref(&entry));
        if self.memberships.on_append(std::slice::from_ref(&entry)) {
            self.note_departures(at.0);
            self.rebuild_progress();
        }
        at
    }

    /// Leader, at each tick.
    pub(super) fn tick_leader(&mut self) {
        self.heartbeat_elapsed_ticks += 1;
        if self.cfg.check_quorum && !self.quorum_heard_recently() {
            let now = self.ticks;
            let heard: Vec<String> = self
                .progress
                .iter()
                .filter(|(id, _)| **id != self.id)
                .map(|(id, p)| format!("{id} {} ago", now - p.last_heard_tick))
                .collect();
            log::warn!(
                "{} t{}: no quorum heard from in an election timeout ({} ticks); stepping down (last heard, in ticks: {})",
                self.id,
                self.term,
                self.cfg.election_ticks_max,
                heard.join(", ")
            );
            self.become_follower(self.term, None);
            return;
        }
        self.tick_transfer();
        self.tick_snapshot_sends();
        if !self.departing.is_empty() {
            self.expire_departed();
        }
        if self.heartbeat_elapsed_ticks >= self.cfg.heartbeat_ticks {
            self.heartbeat_elapsed_ticks = 0;
            self.broadcast_heartbeat();
        }
    }

    /// Check-quorum: has a quorum been heard from within the longest
    /// election timeout? Checked at every tick, so a leader cut off from its
    /// quorum steps down by the time the last of its followers would have
    /// started an election. Not the shortest: on an overloaded machine
    /// (README, Scale) a leader's heartbeats reached its followers' cores
    /// 175-270 ms apart now and then, and with a 150 ms window the leader
    /// stepped down though every follower still followed it. Reads do not
    /// rest on this (each is confirmed by a quorum round), only how soon a
    /// cut-off leader gives up.
    fn quorum_heard_recently(&self) -> bool {
        let (me, now, window) = (self.id, self.ticks, self.cfg.election_ticks_max);
        super::quorum::is_quorum(self.memberships.current(), |id| {
            id == me || self.progress.get(&id).is_some_and(|p| now - p.last_heard_tick < window)
        })
    }

    pub(super) fn broadcast_heartbeat(&mut self) {
        let round = self.reads.round_sent();
        let committed = self.log.committed();
        let peers: Vec<(NodeId, Index)> =
            self.progress.iter().filter(|(id, _)| **id != self.id).map(|(id, p)| (*id, p.matched)).collect();
        for (to, matched) in peers {
            // Never tell a follower to commit beyond what it is known to hold.
            let commit = committed.min(matched);
            self.send(to, Body::Heartbeat { commit, read_round: round });
        }
    }

    /// Leader: sends whatever each follower can take now. Called when a
    /// `Ready` is assembled, so that every proposal and answer since the last
    /// one goes out in as few messages as possible.
    pub(super) fn flush_appends(&mut self) {
        let peers: Vec<NodeId> = self.progress.keys().copied().filter(|&id| id != self.id).collect();
        for to in peers {
            while self.send_append(to, false) {}
            let p = &self.progress[&to];
            // Followers learn of a new commit index at once: a follower that
            // forwarded a write answers its client only once it applied it.
            if p.commit_sent < self.log.committed() && !p.is_paused() {
                self.send_append(to, true);
            }
        }
    }

    /// Sends one Append to `to` if its progress allows. `allow_empty` sends one
    /// even with no new entries (a probe, or news of the commit index).
    /// Returns whether a message was sent.
    pub(super) fn send_append(&mut self, to: NodeId, allow_empty: bool) -> bool {
        let Some(p) = self.progress.get(&to) else {
            return false;
        };
        if p.is_paused() {
            return false;
        }
        let next = p.next;
        let prev_index = next.prev();
        let Some(prev_term) = self.log.term(prev_index) else {
            // What the follower needs next was compacted away.
            self.start_snapshot_send(to);
            return false;
        };
        let entries = if next <= self.log.last_index() {
            self.log.slice_from(next, self.cfg.append_entries_max, self.cfg.append_bytes_soft_max)
        } else {
            Vec::new()
        };
        if entries.is_empty() && !allow_empty {
            return false;
        }
        let commit = self.log.committed();
        let last = prev_index.plus(entries.len() as u64);
        let bytes: usize = entries
            .iter()
            .map(|e| match &e.payload {
                Payload::Command(c) => c.len(),
                _ => 0,
            })
            .sum();
        let p = self.progress.get_mut(&to).expect("checked above");
        p.on_sent(last, entries.len(), bytes);
        p.commit_sent = commit;
        self.send(to, Body::Append { prev_index, prev_term, entries, commit });
        true
    }

    /// Follower: the consistency check and append (paper figure 2,
    /// AppendEntries receiver implementation).
    pub(super) fn handle_append(
        &mut self,
        from: NodeId,
        msg_term: Term,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: Index,
    ) -> Result<(), Dropped> {
        if let Err(why) = check_append_shape(msg_term, prev_index, prev_term, &entries) {
            log::warn!("{} t{}: invalid Append from {from}: {why}", self.id, self.term);
            return Err(Dropped::Invalid);
        }
        if prev_index < self.log.committed() {
            // Everything through our commit index matches any leader's log;
            // say where we are and let the leader continue from there.
            let index = self.log.committed();
            self.send_append_ack(from, index);
            return Ok(());
        }
        if !self.log.matches(prev_index, prev_term) {
            let hint_index = self.log.last_index_with_term_at_most(prev_index.min(self.log.last_index()), prev_term);
            let hint_term = self.log.term(hint_index).unwrap_or(Term(0));
            let resp =
                AppendResp { index: prev_index, rejected: true, hint_index, hint_term, incarnation: self.incarnation };
            self.send(from, Body::AppendResp(resp));
            return Ok(());
        }
        let (last_new, first_appended) = match self.log.append_after(prev_index, &entries) {
            Ok(done) => done,
            Err(conflict) => {
                log::error!(
                    "{} t{}: leader {from} sent entry {} conflicting with our commit index {}; ignoring it",
                    self.id,
                    self.term,
                    conflict.index,
                    conflict.committed
                );
                return Err(Dropped::Invalid);
            }
        };
        if let Some(first) = first_appended {
            self.memberships.on_truncate(first);
            let appended: Vec<Entry> = entries.into_iter().filter(|e| e.index >= first).collect();
            self.memberships.on_append(&appended);
        }
        self.log.commit_to(commit.min(last_new).max(self.log.committed()));
        self.send_append_ack(from, last_new);
        Ok(())
    }

    fn on_lost_entries(&mut self, leader: NodeId, acknowledged: Index) {
        let last = self.log.last_index();
        if self.lost_through < acknowledged {
            log::error!(
                "{} t{}: leader {leader} counts this node as holding entries through {acknowledged}, but its log ends \
                 at {last}: entries it acknowledged are lost (data directory wiped or replaced?). Catching up; no \
                 votes from this node until its log reaches {acknowledged}",
                self.id,
                self.term
            );
            self.lost_through = acknowledged;
        }
        let hint_term = self.log.term(last).unwrap_or(Term(0));
        let resp = AppendResp {
            index: acknowledged,
            rejected: true,
            hint_index: last,
            hint_term,
            incarnation: self.incarnation,
        };
        self.send(leader, Body::AppendResp(resp));
    }

    /// Whether this node lost entries it acknowledged and has not caught up
    /// since (`lost_through`).
    pub(super) fn lost_entries(&self) -> bool {
        self.log.last_index() < self.lost_through
    }

    fn send_append_ack(&mut self, to: NodeId, index: Index) {
        let incarnation = self.incarnation;
        let resp = AppendResp { index, rejected: false, hint_index: Index::ZERO, hint_term: Term(0), incarnation };
        self.send(to, Body::AppendResp(resp));
    }

    pub(super) fn handle_heartbeat(&mut self, from: NodeId, commit: Index, read_round: u64) -> Result<(), Dropped> {
        let last = self.log.last_index();
        if commit > last {
            // A leader sends no commit index beyond what we acknowledged, and
            // an acknowledged entry is durable: we lost entries (the data
            // directory was wiped or replaced). Appends alone would never
            // tell it, as the leader believes we hold them; say so.
            self.on_lost_entries(from, commit);
        }
        let commit = commit.min(last);
        if commit > self.log.committed() {
            self.log.commit_to(commit);
        }
        self.send(from, Body::HeartbeatResp { read_round });
        Ok(())
    }

    pub(super) fn handle_append_resp(&mut self, from: NodeId, r: AppendResp) -> Result<(), Dropped> {
        if r.index > self.log.last_index() || r.hint_index > r.index {
            log::warn!("{} t{}: AppendResp from {from} beyond our log: {r:?}", self.id, self.term);
            return Err(Dropped::Invalid);
        }
        if let Some(p) = self.progress.get_mut(&from) {
            // A new process that holds less than the old one acknowledged
            // lost its log; what it acknowledged no longer counts.
            if r.rejected && r.incarnation != p.incarnation && r.hint_index < p.matched {
                log::error!(
                    "{} t{}: node {from} restarted holding entries through {} only, having acknowledged {}: its \
                     data was lost; sending it the log again",
                    self.id,
                    self.term,
                    r.hint_index,
                    p.matched
                );
                p.forget_match(r.hint_index.next());
                p.incarnation = r.incarnation;
                self.send_append(from, true);
                return Ok(());
            }
            p.incarnation = r.incarnation;
        }
        if r.rejected {
            return self.on_append_rejected(from, r);
        }
        let last_index = self.log.last_index();
        let Some(p) = self.progress.get_mut(&from) else {
            return Err(Dropped::UnknownPeer);
        };
        if !p.on_match(r.index) {
            return Ok(());
        }
        // Answers that moved nothing (copies, stale ones) do not count.
        p.append_resp_tick = self.ticks;
        match p.state {
            ProgressState::Probe => p.become_replicate(),
            ProgressState::Snapshot { pending } if p.matched >= pending => {
                p.become_probe();
                p.become_replicate();
            }
            _ => {}
        }
        let caught_up = p.matched == last_index;
        if self.maybe_commit() {
            self.on_commit_advanced();
        }
        if caught_up {
            self.on_peer_caught_up(from);
        }
        self.on_membership_progress(from);
        self.release_departed(from);
        Ok(())
    }

    /// A member that left holds the configuration without it: it knows,
    /// and is sent nothing more.
    fn release_departed(&mut self, from: NodeId) {
        let Some(&removed_at) = self.departing.get(&from) else { return };
        let holds = self.progress.get(&from).is_some_and(|p| p.matched >= removed_at);
        if holds && !self.membership().contains(from) {
            log::info!("{} t{}: node {from} holds its removal; no longer replicating to it", self.id, self.term);
            self.departing.remove(&from);
            self.progress.remove(&from);
        } else if holds {
            // Added back since.
            self.departing.remove(&from);
        }
    }

    /// Members that left and have been silent for ten election timeouts
    /// (removed because they were down, most often) are given up on.
    fn expire_departed(&mut self) {
        let (now, window) = (self.ticks, 10 * self.cfg.election_ticks_max);
        let silent: Vec<NodeId> = self
            .departing
            .keys()
            .copied()
            .filter(|id| self.progress.get(id).is_none_or(|p| now.saturating_sub(p.last_heard_tick) >= window))
            .collect();
        for id in silent {
            self.departing.remove(&id);
            if !self.membership().contains(id) {
                self.progress.remove(&id);
            }
        }
    }

    fn on_append_rejected(&mut self, from: NodeId, r: AppendResp) -> Result<(), Dropped> {
        // The follower's log holds nothing matching after `hint_index`, and
        // at `hint_index` has a term of `hint_term`: our logs can only match
        // at the largest of our indexes at most that, with a term at most
        // that (or at the hint itself when we compacted that far).
        let next_guess = if r.hint_index >= self.log.snapshot_index() {
            self.log.last_index_with_term_at_most(r.hint_index, r.hint_term).next()
        } else {
            r.hint_index.next()
        };
        let Some(p) = self.progress.get_mut(&from) else {
            return Err(Dropped::UnknownPeer);
        };
        if p.on_reject(r.index, next_guess) {
            p.append_resp_tick = self.ticks;
            log::debug!("{} t{}: {from} rejected {}; next {}", self.id, self.term, r.index, p.next);
            self.send_append(from, true);
            Ok(())
        } else {
            Err(Dropped::StaleResponse)
        }
    }

    /// Commits the highest index a quorum holds, if it is of our term: older
    /// entries commit only indirectly (paper §5.4.2, figure 8).
    pub(super) fn maybe_commit(&mut self) -> bool {
        let progress = &self.progress;
        let q = Index(quorum_value(self.memberships.current(), |id| progress.get(&id).map_or(0, |p| p.matched.0)));
        if q <= self.log.committed() {
            return false;
        }
        if self.log.term(q) != Some(self.term) && !self.planted_bug_commit_any_term() {
            return false;
        }
        self.log.commit_to(q)
    }

    pub(super) fn on_commit_advanced(&mut self) {
        self.on_commit_for_reads();
        self.on_commit_for_membership();
    }

    pub(super) fn handle_heartbeat_resp(&mut self, from: NodeId, read_round: u64) -> Result<(), Dropped> {
        if read_round > self.reads.round_sent() {
            // A round never sent: acknowledging it would confirm reads that
            // no heartbeat ever asked about.
            log::warn!("{} t{}: {from} acknowledged read round {read_round}, never sent", self.id, self.term);
            return Err(Dropped::Invalid);
        }
        let last_index = self.log.last_index();
        let (now, interval) = (self.ticks, self.cfg.heartbeat_ticks);
        let Some(p) = self.progress.get_mut(&from) else {
            return Err(Dropped::UnknownPeer);
        };
        p.read_round_acked = p.read_round_acked.max(read_round);
        // Room is made once, then again only after a heartbeat interval in
        // which no append was answered: heartbeats (sent for every
        // read-index round too) overtake appends on the link, and making
        // room at each answer sent a lagging follower a new append per
        // answer, hundreds of MB a second under read load (issue: heavy
        // load under faults).
        let stalled = p.room_made_tick.is_none_or(|t| now.saturating_sub(t.max(p.append_resp_tick)) >= interval);
        if p.matched < last_index && stalled {
            // Appends may have been lost: make room for one more, so that a
            // follower that only hears heartbeats still catches up.
            p.room_made_tick = Some(now);
            match p.state {
                ProgressState::Replicate if p.inflights.is_full() => p.inflights.free_first(),
                ProgressState::Probe => p.probe_sent = false,
                _ => {}
            }
            self.send_append(from, true);
        } else if p.matched < last_index {
            self.send_append(from, false);
        }
        self.check_reads();
        Ok(())
    }

    pub(super) fn handle_forwarded_proposals(&mut self, from: NodeId, commands: Vec<Vec<u8>>) -> Result<(), Dropped> {
        if self.transfer.is_some() {
            return Err(Dropped::Transferring);
        }
        if commands.len() > self.cfg.propose_commands_max {
            log::warn!("{} t{}: {} forwarded {} commands", self.id, self.term, from, commands.len());
            return Err(Dropped::Invalid);
        }
        for c in commands {
            self.append_new(Payload::command(c));
        }
        Ok(())
    }

    /// Sends queued proposals to the leader they were queued for, in the
    /// term they were queued in; if this node no longer follows that leader
    /// in that term, they are handed back as failures (never sent, so never
    /// appended by anyone): a write must not wait here through elections
    /// and surface after writes its client sent later.
    pub(super) fn flush_forwarded(&mut self) {
        if self.forward_queue.is_empty() {
            return;
        }
        let target = self.forward_target();
        if self.cfg.planted_bug == Some(super::config::PlantedBug::ForwardQueueKept) {
            if let Some((_, leader)) = target {
                self.send_forwarded(leader);
            }
            return;
        }
        match target {
            Some((term, leader)) if self.forward_to == Some((term, leader)) => self.send_forwarded(leader),
            _ => {
                let failed = std::mem::take(&mut self.forward_queue);
                log::debug!(
                    "{} t{}: {} queued proposals not forwarded: leader changed",
                    self.id,
                    self.term,
                    failed.len()
                );
                self.out.forward_failures.extend(failed);
                self.forward_to = None;
            }
        }
    }

    /// Where a proposal made now would be forwarded: the leader this node
    /// follows, in the current term.
    pub(super) fn forward_target(&self) -> Option<(Term, NodeId)> {
        let leader = self.leader.filter(|&l| l != self.id && self.role == Role::Follower)?;
        Some((self.term, leader))
    }

    fn send_forwarded(&mut self, leader: NodeId) {
        let queue = std::mem::take(&mut self.forward_queue);
        for chunk in queue.chunks(self.cfg.propose_commands_max) {
            self.send(leader, Body::Propose { commands: chunk.to_vec() });
        }
        self.forward_to = None;
    }

    fn planted_bug_commit_any_term(&self) -> bool {
        self.cfg.planted_bug == Some(super::config::PlantedBug::CommitOlderTerm)
    }
}

/// A leader's Append must describe a contiguous run of entries after
/// `prev_index`, with terms never going down and never above the message's.
fn check_append_shape(msg_term: Term, prev_index: Index, prev_term: Term, entries: &[Entry]) -> Result<(), String> {
    if prev_term > msg_term {
        return Err(format!("prev term {prev_term} above message term {msg_term}"));
    }
    let mut expected = prev_index.next();
    let mut term = prev_term;
    for e in entries {
        if e.index != expected {
            return Err(format!("entry {} where {} was expected", e.index, expected));
        }
        if e.term < term || e.term > msg_term {
            return Err(format!("entry {} has term {} out of [{term}, {msg_term}]", e.index, e.term));
        }
        expected = expected.next();
        term = e.term;
    }
    Ok(())
}
