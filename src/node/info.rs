//! `INFO`: the node's state as Redis-style `name:value` lines under
//! `# Section` headers (SPEC §3 lists the fields that must be there).

use std::fmt::Write as _;

use crate::kv::KvStore;
use crate::peers::Peers;
use crate::raft::{Membership, NodeId, Raft, Role};
use crate::wal::Wal;

/// A member's client address: from this node's peers file if it lists the
/// member, else from the configuration in the log.
pub fn client_addr_of(id: NodeId, membership: &Membership, peers: &Peers) -> Option<String> {
    match peers.get(id) {
        Some(p) => Some(p.client_addr.clone()),
        None => membership.addrs.get(&id).map(|a| a.client.clone()).filter(|a| !a.is_empty()),
    }
}

fn ids(set: impl IntoIterator<Item = NodeId>) -> String {
    set.into_iter().map(|id| id.0.to_string()).collect::<Vec<_>>().join(",")
}

fn role_name(raft: &Raft) -> &'static str {
    if !raft.membership().is_voter(raft.id()) {
        return "learner";
    }
    match raft.role() {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Candidate | Role::PreCandidate => "candidate",
    }
}

/// Which cluster this node belongs to, and whether its peers refuse it.
pub struct Cluster {
    pub id: Option<crate::identity::ClusterId>,
    pub refused: Option<String>,
}

/// What is on disk.
pub struct Storage<'a> {
    pub wal: &'a Wal,
    pub snapshot_bytes: u64,
}

/// `sections`: lowercased names asked for; empty, `all`, `default` or
/// `everything` mean every section. An unknown section is empty, as in Redis.
pub fn render(
    raft: &Raft,
    kv: &KvStore,
    storage: Storage<'_>,
    peers: &Peers,
    cluster: Cluster,
    sections: &[String],
) -> Vec<u8> {
    let wanted = |name: &str| {
        sections.is_empty() || sections.iter().any(|s| s == name || s == "all" || s == "default" || s == "everything")
    };
    let s = raft.status();
    let mut out = String::new();
    if wanted("raft") {
        let leader = s.leader.map_or(0, |l| l.0);
        let leader_client = s.leader.and_then(|l| client_addr_of(l, &s.membership, peers)).unwrap_or_default();
        let _ = write!(
            out,
            "# Raft\r\nnode_id:{}\r\nrole:{}\r\nterm:{}\r\nleader_id:{leader}\r\nleader_client_addr:{leader_client}\r\n\
             commit_index:{}\r\nlast_applied:{}\r\nlast_log_index:{}\r\nlast_log_term:{}\r\nsnapshot_index:{}\r\n\
             members:{}\r\nvoters_outgoing:{}\r\nlearners:{}\r\n",
            s.id.0,
            role_name(raft),
            s.term.0,
            s.committed.0,
            s.applied.0,
            s.last_index.0,
            s.last_term.0,
            s.snapshot_index.0,
            ids(s.membership.voters.iter().copied()),
            ids(s.membership.outgoing.iter().copied()),
            ids(s.membership.learners.iter().copied()),
        );
        let _ = write!(out, "cluster_id:{}\r\n", crate::identity::show(cluster.id));
        if let Some(why) = &cluster.refused {
            let _ = write!(out, "cluster_refused:{why}\r\n");
        }
    }
    if wanted("storage") {
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        let _ = write!(
            out,
            "# Storage\r\nlog_disk_bytes:{}\r\nlog_segments:{}\r\nsnapshot_disk_bytes:{}\r\n",
            storage.wal.disk_bytes(),
            storage.wal.segment_count(),
            storage.snapshot_bytes
        );
    }
    if wanted("keyspace") {
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        let _ = write!(out, "# Keyspace\r\nkeys:{}\r\n", kv.len());
    }
    out.into_bytes()
}
