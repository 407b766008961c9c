//! `ROLE` and the Sentinel commands, answered by every node with the
//! cluster as this node sees it, in Redis's shapes: the leader is the
//! master of the service `raftkv`, the other members its replicas, and
//! every other node a sentinel. Clients that find their master through
//! Sentinel (redis-py's `Sentinel`, ioredis's `sentinels`, go-redis's
//! failover client, Jedis's sentinel pool), given the nodes' client
//! addresses, reach the leader directly.

use std::time::Duration;

use super::info::client_addr_of;
use crate::peers::Peers;
use crate::raft::{NodeId, Raft, Role};
use crate::resp::Reply;

/// The one service the nodes answer for.
pub const SERVICE: &str = "raftkv";

/// A client address as Sentinel gives it: host and port apart.
fn split(addr: &str) -> (String, String) {
    match addr.rsplit_once(':') {
        Some((host, port)) => (host.trim_start_matches('[').trim_end_matches(']').to_string(), port.to_string()),
        None => (addr.to_string(), "0".to_string()),
    }
}

/// A member other than the leader, as the leader sees it.
pub struct Follower {
    pub id: NodeId,
    pub host: String,
    pub port: String,
    /// Its match index (0 where this node does not lead).
    pub matched: u64,
    /// Milliseconds since the leader last heard from it (leader only).
    pub silent_ms: Option<u64>,
    /// Not heard from for an election timeout.
    pub down: bool,
}

/// What a node needs to describe the cluster.
pub struct View<'a> {
    pub raft: &'a Raft,
    pub peers: &'a Peers,
    pub tick: Duration,
    pub election_timeout: Duration,
}

impl View<'_> {
    pub fn addr(&self, id: NodeId) -> Option<(String, String)> {
        client_addr_of(id, self.raft.membership(), self.peers).map(|a| split(&a))
    }

    fn members(&self) -> Vec<NodeId> {
        self.raft.membership().members().into_iter().collect()
    }

    /// The members other than the leader (none while no leader is known),
    /// with what the leader knows of each.
    pub fn followers(&self) -> Vec<Follower> {
        let Some(leader) = self.raft.leader() else { return Vec::new() };
        let timeout = self.election_timeout.as_millis() as u64;
        self.members()
            .into_iter()
            .filter(|&id| id != leader)
            .filter_map(|id| {
                let (host, port) = self.addr(id)?;
                let progress = self.raft.progress_of(id);
                let silent_ms = progress
                    .map(|p| self.raft.ticks().saturating_sub(p.last_heard_tick) * self.tick.as_millis() as u64);
                let matched = progress.map_or(0, |p| p.matched.0);
                Some(Follower { id, host, port, matched, silent_ms, down: silent_ms.is_some_and(|ms| ms > timeout) })
            })
            .collect()
    }

    /// `ROLE`: `master` with the replicas' offsets on the leader, `slave`
    /// with the leader's address elsewhere (offsets are log indexes).
    pub fn role(&self) -> Reply {
        let s = self.raft.status();
        if s.role == Role::Leader {
            let replicas = self
                .followers()
                .into_iter()
                .map(|f| {
                    Reply::array(vec![Reply::bulk(f.host), Reply::bulk(f.port), Reply::bulk(f.matched.to_string())])
                })
                .collect();
            return Reply::array(vec![
                Reply::bulk("master"),
                Reply::Integer(s.committed.0 as i64),
                Reply::array(replicas),
            ]);
        }
        let (host, port) = s.leader.and_then(|l| self.addr(l)).unwrap_or_default();
        let state = if s.leader.is_some() { "connected" } else { "connect" };
        Reply::array(vec![
            Reply::bulk("slave"),
            Reply::bulk(host),
            Reply::Integer(port.parse().unwrap_or(0)),
            Reply::bulk(state),
            Reply::Integer(s.applied.0 as i64),
        ])
    }

    /// `SENTINEL <subcommand> ...` (arity and subcommand checked by the
    /// command table).
    pub fn sentinel(&self, args: &[Vec<u8>]) -> Reply {
        let sub = args[1].to_ascii_lowercase();
        let named = args.get(2).is_some_and(|n| n[..] == *SERVICE.as_bytes());
        let unknown = || Reply::err("No such master with that name");
        match sub.as_slice() {
            b"get-master-addr-by-name" if !named => Reply::Array(None),
            b"get-master-addr-by-name" => match self.master() {
                Some(m) => {
                    let (host, port) = (field(&m, "ip"), field(&m, "port"));
                    Reply::array(vec![Reply::bulk(host), Reply::bulk(port)])
                }
                None => Reply::Array(None),
            },
            b"masters" => Reply::array(self.master().into_iter().map(Reply::map).collect()),
            b"master" if named => self.master().map_or_else(unknown, Reply::map),
            b"replicas" | b"slaves" if named => Reply::array(self.replicas().into_iter().map(Reply::map).collect()),
            b"sentinels" if named => Reply::array(self.sentinels().into_iter().map(Reply::map).collect()),
            b"ckquorum" if named => {
                let n = self.members().len();
                Reply::Simple(format!("OK {n} usable Sentinels. Quorum and failover authorization can be reached"))
            }
            b"myid" => Reply::bulk(format!("{:040}", self.raft.id().0)),
            _ if args.len() < 3 => Reply::err(format!(
                "unknown subcommand '{}'. Try SENTINEL GET-MASTER-ADDR-BY-NAME, MASTERS, MASTER, REPLICAS, SENTINELS.",
                crate::command::echo_name(&args[1])
            )),
            _ => unknown(),
        }
    }

    /// The leader as Sentinel describes a master, if one is known.
    fn master(&self) -> Option<Vec<(&'static str, Reply)>> {
        let s = self.raft.status();
        let leader = s.leader?;
        let (host, port) = self.addr(leader)?;
        let others = self.members().len().saturating_sub(1);
        let timeout = self.election_timeout.as_millis().to_string();
        Some(state(vec![
            ("name", SERVICE.to_string()),
            ("ip", host),
            ("port", port),
            ("runid", format!("{:040}", leader.0)),
            ("flags", "master".into()),
            ("link-pending-commands", "0".into()),
            ("link-refcount", "1".into()),
            ("last-ping-sent", "0".into()),
            ("last-ok-ping-reply", "0".into()),
            ("last-ping-reply", "0".into()),
            ("down-after-milliseconds", timeout.clone()),
            ("info-refresh", "0".into()),
            ("role-reported", "master".into()),
            ("role-reported-time", "0".into()),
            ("config-epoch", s.term.0.to_string()),
            ("num-slaves", others.to_string()),
            ("num-other-sentinels", others.to_string()),
            ("quorum", (s.membership.voters.len() / 2 + 1).to_string()),
            ("failover-timeout", timeout),
            ("parallel-syncs", "1".into()),
        ]))
    }

    /// The members other than the leader, as replicas; the leader knows
    /// which are silent (`s_down` past an election timeout).
    fn replicas(&self) -> Vec<Vec<(&'static str, Reply)>> {
        let Some(leader) = self.raft.leader() else { return Vec::new() };
        let (master_host, master_port) = self.addr(leader).unwrap_or_default();
        self.followers()
            .into_iter()
            .map(|f| {
                state(vec![
                    ("name", format!("{}:{}", f.host, f.port)),
                    ("ip", f.host),
                    ("port", f.port),
                    ("runid", format!("{:040}", f.id.0)),
                    ("flags", if f.down { "slave,s_down".into() } else { "slave".into() }),
                    ("last-ok-ping-reply", f.silent_ms.unwrap_or(0).to_string()),
                    ("master-link-status", if f.down { "err".into() } else { "ok".into() }),
                    ("master-host", master_host.clone()),
                    ("master-port", master_port.clone()),
                    ("slave-priority", "100".into()),
                    ("slave-repl-offset", f.matched.to_string()),
                ])
            })
            .collect()
    }

    /// Every member but this node, as a sentinel (each answers these
    /// commands on its client port).
    fn sentinels(&self) -> Vec<Vec<(&'static str, Reply)>> {
        let me = self.raft.id();
        self.members()
            .into_iter()
            .filter(|&id| id != me)
            .filter_map(|id| {
                let (host, port) = self.addr(id)?;
                Some(state(vec![
                    ("name", format!("{:040}", id.0)),
                    ("ip", host),
                    ("port", port),
                    ("runid", format!("{:040}", id.0)),
                    ("flags", "sentinel".into()),
                ]))
            })
            .collect()
    }
}

fn state(fields: Vec<(&'static str, String)>) -> Vec<(&'static str, Reply)> {
    fields.into_iter().map(|(k, v)| (k, Reply::bulk(v))).collect()
}

fn field(state: &[(&'static str, Reply)], name: &str) -> Vec<u8> {
    match state.iter().find(|(k, _)| *k == name) {
        Some((_, Reply::Bulk(Some(v)))) => v.clone(),
        _ => Vec::new(),
    }
}
