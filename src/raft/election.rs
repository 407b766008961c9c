//! Leader election (paper §5.2, §5.4.1), pre-vote (thesis §9.6) and the
//! start of a leadership transfer on the target's side (thesis §3.10).

use super::core::{Dropped, Raft, Role};
use super::message::{Body, Message};
use super::quorum::{VoteResult, vote_result};
use super::types::{Index, NodeId, Term};

impl Raft {
    /// A follower or candidate counts towards its election timeout.
    pub(super) fn tick_election(&mut self) {
        self.expire_forwarded_reads();
        self.election_elapsed_ticks += 1;
        if self.election_elapsed_ticks < self.election_timeout_ticks {
            return;
        }
        if self.promotable() {
            self.campaign(false);
        } else {
            // A learner or a removed node never campaigns; it keeps counting
            // so that its lease (`in_lease`) expires.
            self.reset_election_timer();
            self.leader = None;
            self.fail_forwarded_reads();
        }
    }

    /// Starts an election; `transfer` skips pre-vote because the leader asked
    /// for it (TimeoutNow).
    pub(super) fn campaign(&mut self, transfer: bool) {
        assert!(self.promotable(), "node {} is not a voter", self.id);
        if self.cfg.pre_vote && !transfer {
            self.become_pre_candidate();
        } else {
            self.become_candidate(transfer);
        }
    }

    fn voters_but_me(&self) -> Vec<NodeId> {
        let m = self.membership();
        m.voters
            .iter()
            .chain(m.outgoing.iter())
            .copied()
            .filter(|&id| id != self.id)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    fn become_pre_candidate(&mut self) {
        self.fail_forwarded_reads();
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes.clear();
        // A pre-vote changes nothing durable, so our own counts at once.
        self.votes.insert(self.id, true);
        self.reset_election_timer();
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        let proposed = self.term.next();
        for to in self.voters_but_me() {
            self.send_with_term(to, proposed, Body::PreVote { last_index, last_term });
        }
        log::debug!("{} started pre-vote for term {proposed}", self.id);
        self.check_election(true);
    }

    fn become_candidate(&mut self, transfer: bool) {
        self.fail_forwarded_reads();
        self.term = self.term.next();
        self.vote = Some(self.id);
        self.role = Role::Candidate;
        self.leader = None;
        self.votes.clear();
        self.reset_election_timer();
        // Our own vote counts only once the vote is durable: a candidate that
        // crashed before that could vote again in this term after restarting.
        self.out.msgs_after_persist.push(Message {
            from: self.id,
            to: self.id,
            term: self.term,
            body: Body::VoteResp { granted: true },
        });
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        for to in self.voters_but_me() {
            self.send(to, Body::Vote { last_index, last_term, transfer });
        }
        log::info!("{} started an election for term {}", self.id, self.term);
    }

    pub(super) fn handle_vote_request(&mut self, m: Message) -> Result<(), Dropped> {
        let (pre, last_index, last_term) = match m.body {
            Body::PreVote { last_index, last_term } => (true, last_index, last_term),
            Body::Vote { last_index, last_term, .. } => (false, last_index, last_term),
            _ => unreachable!("only vote requests are routed here"),
        };
        if pre && self.in_lease() {
            return self.drop_message(&m, Dropped::InLease);
        }
        // Paper figure 2: one vote per term, given first come first served; a
        // pre-vote for a later term promises nothing, so it is not limited.
        let can_vote =
            self.vote == Some(m.from) || (self.vote.is_none() && self.leader.is_none()) || (pre && m.term > self.term);
        let skip_log_check = self.cfg.planted_bug == Some(super::config::PlantedBug::VoteWithoutLogCheck);
        let granted =
            can_vote && (skip_log_check || self.log.is_up_to_date(last_index, last_term)) && !self.lost_entries();
        if pre {
            // A granted pre-vote echoes the term asked about; a refusal tells
            // the asker our term.
            let term = if granted { m.term } else { self.term };
            self.send_with_term(m.from, term, Body::PreVoteResp { granted });
        } else {
            if granted {
                self.vote = Some(m.from);
                self.election_elapsed_ticks = 0;
            }
            self.send(m.from, Body::VoteResp { granted });
        }
        log::debug!(
            "{} t{}: {} {} from {} (our last {}/{})",
            self.id,
            self.term,
            if granted { "granted" } else { "refused" },
            m.body.kind(),
            m.from,
            self.log.last_index(),
            self.log.last_term()
        );
        Ok(())
    }

    /// `pre`: a pre-vote answer. `term` is the answer's term.
    pub(super) fn handle_vote_response(
        &mut self,
        from: NodeId,
        term: Term,
        granted: bool,
        pre: bool,
    ) -> Result<(), Dropped> {
        let expected_role = if pre { Role::PreCandidate } else { Role::Candidate };
        let expected_term = if pre && granted { self.term.next() } else { self.term };
        if self.role != expected_role || term != expected_term {
            log::debug!("{} t{}: stale vote answer from {from}", self.id, self.term);
            return Err(Dropped::StaleResponse);
        }
        self.votes.insert(from, granted);
        self.check_election(pre);
        Ok(())
    }

    fn check_election(&mut self, pre: bool) {
        match vote_result(self.membership(), &self.votes) {
            VoteResult::Won if pre => self.become_candidate(false),
            VoteResult::Won => self.become_leader(),
            VoteResult::Lost => self.become_follower(self.term, None),
            VoteResult::Pending => {}
        }
    }

    /// The leader asks us to campaign at once. Obeyed only if it was meant
    /// for this process, comes from the leader we follow, our log still ends
    /// where the leader's did when it asked, and we heard from the leader
    /// within half the time a transfer is given. A TimeoutNow that waited in
    /// a sender's queue across our restart names the process before; one
    /// held up behind a cut link until the transfer was abandoned arrives
    /// after a silence (links are FIFO, so it comes before anything newer),
    /// or finds the log moved on (the leader appends a no-op when it
    /// abandons a transfer). A campaign on the strength of any of them would
    /// raise the term and depose a healthy leader.
    pub(super) fn handle_timeout_now(&mut self, m: Message) -> Result<(), Dropped> {
        let Body::TimeoutNow { last_index, incarnation } = m.body else {
            unreachable!("only TimeoutNow is routed here")
        };
        if !self.promotable() {
            return self.drop_message(&m, Dropped::UnexpectedForRole);
        }
        let current = incarnation == self.incarnation
            && self.leader == Some(m.from)
            && self.log.last_index() == last_index
            && self.log.last_term() == m.term
            && self.election_elapsed_ticks < self.cfg.election_ticks_min.div_ceil(2);
        if !current {
            return self.drop_message(&m, Dropped::StaleTransfer);
        }
        log::info!("{} t{}: leader {} handed over leadership", self.id, self.term, m.from);
        self.campaign(true);
        Ok(())
    }

    /// A vote request flagged as a transfer may bypass the lease (thesis
    /// §3.10), but only where it cannot be a stale one doing harm: the
    /// leader honours it only from the node it is handing over to; a
    /// follower only when it would grant it (the candidate's log is up to
    /// date with ours), so a refused candidate cannot raise our term and
    /// unseat the leader.
    pub(super) fn transfer_vote_welcome(&self, from: NodeId, last_index: Index, last_term: Term) -> bool {
        match self.role {
            Role::Leader => self.transfer.as_ref().is_some_and(|t| t.target == from),
            _ => self.log.is_up_to_date(last_index, last_term),
        }
    }

    /// Our own vote became durable: count it if the election is still ours.
    pub(super) fn on_own_vote_persisted(&mut self, term: Term) {
        if self.role == Role::Candidate && self.term == term {
            self.votes.insert(self.id, true);
            self.check_election(false);
        }
    }
}
