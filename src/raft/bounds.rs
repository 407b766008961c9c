//! What a peer may say at all (README, Security, "peer input is checked"): terms
//! and indexes far below the integer limits, so that no arithmetic on them
//! can overflow and a buggy peer cannot end the cluster's terms (a term of
//! 2^64-1 leaves no next one) or name an entry no log will ever hold.
//! Checked at the one way in, `Raft::step`, before any handler sees the
//! message; what each handler can check against its own state (an index
//! past what the sender can know) it checks itself.

use super::message::{Body, Message};
use super::types::{Index, Term};

/// No real cluster gets near: at one election a millisecond, 8,900 years.
pub const TERM_MAX: Term = Term(1 << 48);

/// Nor here: at a million entries a second, 146,000 years.
pub const INDEX_MAX: Index = Index(1 << 62);

fn term(t: Term, what: &str) -> Result<(), String> {
    if t > TERM_MAX { Err(format!("{what} {t} is beyond any term a cluster reaches")) } else { Ok(()) }
}

fn index(i: Index, what: &str) -> Result<(), String> {
    if i > INDEX_MAX { Err(format!("{what} {i} is beyond any index a log reaches")) } else { Ok(()) }
}

pub fn check(m: &Message) -> Result<(), String> {
    term(m.term, "term")?;
    match &m.body {
        Body::PreVote { last_index, last_term } | Body::Vote { last_index, last_term, .. } => {
            index(*last_index, "last index")?;
            term(*last_term, "last term")
        }
        Body::Append { prev_index, prev_term, entries, commit } => {
            index(*prev_index, "prev index")?;
            term(*prev_term, "prev term")?;
            index(*commit, "commit index")?;
            let last = Index(prev_index.0.saturating_add(entries.len() as u64));
            index(last, "last entry")
        }
        Body::AppendResp(r) => {
            index(r.index, "index")?;
            index(r.hint_index, "hint index")?;
            term(r.hint_term, "hint term")
        }
        Body::Heartbeat { commit, .. } => index(*commit, "commit index"),
        Body::InstallSnapshot { meta, .. } => {
            index(meta.index, "snapshot index")?;
            term(meta.term, "snapshot term")
        }
        Body::InstallSnapshotResp { index: i, .. } => index(*i, "index"),
        Body::TimeoutNow { last_index, .. } => index(*last_index, "last index"),
        Body::ReadIndexResp { index: Some(i), .. } => index(*i, "read index"),
        Body::PreVoteResp { .. }
        | Body::VoteResp { .. }
        | Body::HeartbeatResp { .. }
        | Body::Propose { .. }
        | Body::ReadIndex { .. }
        | Body::ReadIndexResp { index: None, .. } => Ok(()),
    }
}
