//! `INFO`: the node's state as Redis-style `name:value` lines under
//! `# Section` headers (docs/commands.md lists the fields that must be there).

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use crate::kv::KvStore;
use crate::peers::Peers;
use crate::raft::{Membership, NodeId, Raft, Role};

use super::log_writer::StorageStats;

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
    let m = raft.membership();
    if !m.contains(raft.id()) && !m.members().is_empty() {
        return "removed";
    }
    if !m.is_voter(raft.id()) {
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

/// The node's clients and memory, for the `clients`, `memory` and `stats`
/// sections.
pub struct Usage<'a> {
    pub clients: &'a super::clients::Registry,
    /// Bytes of the log entries the core holds in memory.
    pub log_bytes: u64,
    /// Of those, bytes kept past the newest snapshot for lagging followers.
    pub log_held_bytes: u64,
    /// The peer links: data queued, messages dropped on a full queue.
    pub peers: crate::transport::TransportStats,
    /// The core's tick and election timeout, for the times since followers
    /// were last heard from.
    pub tick: std::time::Duration,
    pub election_timeout: std::time::Duration,
    /// Client writes this node proposed and has not answered.
    pub writes_waiting: usize,
    /// Times this node proposed a waiting write again (README, Failover).
    pub writes_proposed_again: u64,
}

/// When this process started serving, for INFO `uptime_in_seconds`.
pub fn started() -> std::time::Instant {
    static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *STARTED.get_or_init(std::time::Instant::now)
}

pub(super) fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.2}G", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.2}M", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.2}K", b as f64 / 1024.0),
        b => format!("{b}B"),
    }
}

/// What is on disk.
pub struct Storage<'a> {
    pub log: &'a StorageStats,
    /// Writes handed to the log writer and not yet durable.
    pub writes_queued: usize,
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
    usage: Usage<'_>,
    sections: &[String],
) -> Vec<u8> {
    let wanted = |name: &str| {
        sections.is_empty() || sections.iter().any(|s| s == name || s == "all" || s == "default" || s == "everything")
    };
    let s = raft.status();
    let mut out = String::new();
    if wanted("server") {
        let port = peers.get(s.id).and_then(|p| p.client_addr.rsplit_once(':').map(|(_, p)| p.to_string()));
        let uptime = started().elapsed().as_secs();
        let _ = write!(
            out,
            "# Server\r\nredis_version:{}\r\nraftkv_version:{}\r\nredis_mode:standalone\r\nos:{} {}\r\n\
             arch_bits:{}\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\n",
            super::client::REDIS_VERSION,
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::env::consts::ARCH,
            usize::BITS,
            std::process::id(),
            port.unwrap_or_default(),
            uptime / 86_400,
        );
    }
    if wanted("replication") {
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        // Redis's words: the leader is the master, the others replicas.
        let view = super::sentinel::View { raft, peers, tick: usage.tick, election_timeout: usage.election_timeout };
        if s.role == Role::Leader {
            let followers = view.followers();
            let _ = write!(out, "# Replication\r\nrole:master\r\nconnected_slaves:{}\r\n", followers.len());
            // Redis's replica lines, with raftkv's lag in entries and time
            // since the leader last heard from each.
            for (i, f) in followers.into_iter().enumerate() {
                let silent_ms = f.silent_ms.unwrap_or(0);
                let _ = write!(
                    out,
                    "slave{i}:id={},ip={},port={},state={},offset={},lag={},lag_entries={},last_contact_ms={silent_ms}\r\n",
                    f.id.0,
                    f.host,
                    f.port,
                    if f.down { "down" } else { "online" },
                    f.matched,
                    silent_ms / 1000,
                    s.last_index.0.saturating_sub(f.matched),
                );
            }
        } else {
            let (host, port) = s.leader.and_then(|l| view.addr(l)).unwrap_or_default();
            let link = if s.leader.is_some() { "up" } else { "down" };
            let _ = write!(
                out,
                "# Replication\r\nrole:slave\r\nmaster_host:{host}\r\nmaster_port:{port}\r\nmaster_link_status:{link}\r\n\
                 connected_slaves:0\r\n"
            );
        }
    }
    if wanted("persistence") {
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        let _ = write!(
            out,
            "# Persistence\r\nloading:0\r\naof_enabled:1\r\nrdb_bgsave_in_progress:0\r\nsnapshot_index:{}\r\n",
            s.snapshot_index.0
        );
    }
    if wanted("raft") {
        if !out.is_empty() {
            out.push_str("\r\n");
        }
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
        let log = storage.log;
        let _ = write!(
            out,
            "# Storage\r\nlog_disk_bytes:{}\r\nlog_segments:{}\r\nsnapshot_disk_bytes:{}\r\n\
             log_writes_queued:{}\r\nlog_syncs:{}\r\nlog_sync_last_us:{}\r\nlog_sync_max_us:{}\r\n\
             disk_free_bytes:{}\r\n",
            log.log_disk_bytes.load(Relaxed),
            log.log_segments.load(Relaxed),
            storage.snapshot_bytes,
            storage.writes_queued,
            log.syncs.load(Relaxed),
            log.sync_micros_last.load(Relaxed),
            log.sync_micros_max.load(Relaxed),
            log.disk_free_bytes.load(Relaxed),
        );
    }
    if wanted("keyspace") {
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        let _ = write!(out, "# Keyspace\r\nkeys:{}\r\nexpires:{}\r\n", kv.len(), kv.expiring());
        if !kv.is_empty() {
            let _ = write!(out, "db0:keys={},expires={},avg_ttl=0\r\n", kv.len(), kv.expiring());
        }
    }
    let c = usage.clients;
    let (largest_in, largest_out) = c.largest_buffers();
    if wanted("clients") {
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        let _ = write!(
            out,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nclient_recent_max_input_buffer:{largest_in}\r\n\
             client_recent_max_output_buffer:{largest_out}\r\nblocked_clients:0\r\n",
            c.connected(),
            c.max_clients
        );
    }
    if wanted("memory") {
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        let rss = crate::limits::resident_bytes("self").unwrap_or(0);
        let clients: u64 = c
            .list()
            .iter()
            .map(|i| {
                let load = |a: &std::sync::atomic::AtomicUsize| a.load(std::sync::atomic::Ordering::Relaxed) as u64;
                load(&i.input_bytes) + load(&i.output_bytes)
            })
            .sum();
        let _ = write!(
            out,
            "# Memory\r\nused_memory_rss:{rss}\r\nused_memory_rss_human:{}\r\nused_memory_dataset:{}\r\n\
             used_memory_dataset_human:{}\r\nlog_memory_bytes:{}\r\nlog_held_for_followers_bytes:{}\r\n\
             peer_queue_bytes:{}\r\nclient_buffers_bytes:{clients}\r\n",
            human(rss),
            kv.data_bytes(),
            human(kv.data_bytes() as u64),
            usage.log_bytes,
            usage.log_held_bytes,
            usage.peers.queued_bytes,
        );
    }
    if wanted("stats") {
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        let k = &c.counters;
        let _ = write!(
            out,
            "# Stats\r\nrejected_connections:{}\r\nclient_output_buffer_limit_disconnections:{}\r\n\
             client_query_buffer_limit_disconnections:{}\r\nclient_idle_disconnections:{}\r\n\
             peer_messages_sent:{}\r\npeer_messages_dropped:{}\r\npeer_messages_dropped_queue_full:{}\r\n\
             writes_waiting:{}\r\nwrites_proposed_again:{}\r\nclient_sessions:{}\r\n\
             total_commands_processed:{}\r\ncommands_read_by_poller:{}\r\n",
            load(&k.rejected),
            load(&k.output_disconnects),
            load(&k.input_disconnects),
            load(&k.idle_disconnects),
            usage.peers.sent,
            usage.peers.dropped,
            usage.peers.dropped_full,
            usage.writes_waiting,
            usage.writes_proposed_again,
            kv.sessions(),
            load(&c.commands.processed),
            load(&c.commands.by_poller),
        );
    }
    out.into_bytes()
}
