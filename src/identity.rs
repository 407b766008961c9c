//! Which cluster a node belongs to (README, Security). A cluster gets a random 128-bit
//! id when it first forms: its first leader proposes one, and the first such
//! entry applied wins, on every node alike (the id is replicated state, kept
//! in snapshots). Each node keeps it in its data directory and shows it in
//! `INFO`; peers compare ids at every handshake, so a data directory of an
//! older cluster started with the same peers file never joins, votes or
//! receives entries. A node without an id yet (a fresh member, a `--join`
//! node) talks to anyone and takes the id from the log it receives.
//!
//! A node also learns whether its peers refuse it: when a majority of its
//! configuration (itself counting as agreeing) has refused its id, it is the
//! stray one, serves no reads at all and says why to clients.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use parking_lot::Mutex;
use rand::Rng;

use crate::raft::NodeId;

/// A cluster's id; never zero (zero on the wire means "none yet").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterId(u128);

impl ClusterId {
    pub fn random() -> ClusterId {
        loop {
            let mut bytes = [0u8; 16];
            rand::rng().fill_bytes(&mut bytes);
            if let Some(id) = ClusterId::from_bytes(bytes) {
                return id;
            }
        }
    }

    pub fn from_bytes(bytes: [u8; 16]) -> Option<ClusterId> {
        let v = u128::from_be_bytes(bytes);
        (v != 0).then_some(ClusterId(v))
    }

    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// The wire form of an optional id: zeros for none.
    pub fn option_bytes(id: Option<ClusterId>) -> [u8; 16] {
        id.map_or([0; 16], ClusterId::to_bytes)
    }

    pub fn parse(text: &str) -> Result<ClusterId, String> {
        let t = text.trim();
        if t.len() != 32 {
            return Err(format!("{t:?} is not 32 hex digits"));
        }
        let v = u128::from_str_radix(t, 16).map_err(|_| format!("{t:?} is not 32 hex digits"))?;
        ClusterId::from_bytes(v.to_be_bytes()).ok_or_else(|| "a cluster id of zeros".to_string())
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Shows an optional id the way logs and `INFO` do.
pub fn show(id: Option<ClusterId>) -> String {
    id.map_or_else(|| "none".to_string(), |id| id.to_string())
}

/// The id this node holds, shared between the core thread (which learns it
/// from the log and persists it) and the transport (which checks it at
/// every handshake), and what peers said of it.
#[derive(Debug, Default)]
pub struct ClusterIdentity {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    id: Option<ClusterId>,
    /// Peers whose id differs from ours, with theirs, as last seen at a
    /// handshake; a peer that later handshakes with a matching id leaves.
    disagreeing: BTreeMap<NodeId, ClusterId>,
}

impl ClusterIdentity {
    pub fn new(id: Option<ClusterId>) -> ClusterIdentity {
        ClusterIdentity { state: Mutex::new(State { id, disagreeing: BTreeMap::new() }) }
    }

    pub fn get(&self) -> Option<ClusterId> {
        self.state.lock().id
    }

    /// Takes `id` if none is held yet; returns whether it did. The caller has
    /// made it durable first.
    pub fn adopt(&self, id: ClusterId) -> bool {
        let mut s = self.state.lock();
        if s.id.is_some() {
            return false;
        }
        s.id = Some(id);
        s.disagreeing.retain(|_, theirs| *theirs != id);
        true
    }

    /// A handshake with `peer` showed its id.
    pub fn observed(&self, peer: NodeId, theirs: Option<ClusterId>) {
        let mut s = self.state.lock();
        match (s.id, theirs) {
            (Some(ours), Some(theirs)) if ours != theirs => {
                s.disagreeing.insert(peer, theirs);
            }
            _ => {
                s.disagreeing.remove(&peer);
            }
        }
    }

    /// Why this node must not serve, if a majority of the `voters` it knows
    /// (counting itself as agreeing) belongs to another cluster.
    pub fn refused(&self, me: NodeId, voters: impl IntoIterator<Item = NodeId>) -> Option<String> {
        let s = self.state.lock();
        let ours = s.id?;
        let voters: Vec<NodeId> = voters.into_iter().collect();
        let against: Vec<&ClusterId> =
            voters.iter().filter(|&&v| v != me).filter_map(|v| s.disagreeing.get(v)).collect();
        let majority = voters.len() / 2 + 1;
        if against.is_empty() || against.len() < majority {
            return None;
        }
        Some(format!(
            "this node's data directory belongs to cluster {ours}, but its peers belong to cluster {} (a data \
             directory of another cluster?)",
            against[0]
        ))
    }
}

const FILE: &str = "cluster_id";

/// The id kept in a data directory, if any.
pub fn load(dir: &Path) -> Result<Option<ClusterId>, String> {
    let path = dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => ClusterId::parse(&text).map(Some).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Keeps `id` in the data directory durably (written, synced, renamed, the
/// directory synced), before the node acts on it.
pub fn store(dir: &Path, id: ClusterId) -> Result<(), String> {
    use std::io::Write;
    let (tmp, path) = (dir.join(format!("{FILE}.tmp")), dir.join(FILE));
    let fail = |what: &str, e: std::io::Error| format!("{}: {what}: {e}", path.display());
    let mut f = std::fs::File::create(&tmp).map_err(|e| fail("create", e))?;
    writeln!(f, "{id}").map_err(|e| fail("write", e))?;
    f.sync_all().map_err(|e| fail("fsync", e))?;
    std::fs::rename(&tmp, &path).map_err(|e| fail("rename", e))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| fail("fsync directory", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_and_parse_and_persist() {
        let id = ClusterId::random();
        assert_eq!(ClusterId::parse(&id.to_string()), Ok(id));
        assert!(ClusterId::parse("00000000000000000000000000000000").is_err());
        assert!(ClusterId::parse("xyz").is_err());
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()), Ok(None));
        store(dir.path(), id).unwrap();
        assert_eq!(load(dir.path()), Ok(Some(id)));
    }

    #[test]
    fn a_node_is_refused_only_by_a_majority() {
        let (ours, theirs) = (ClusterId::random(), ClusterId::random());
        let voters = [NodeId(1), NodeId(2), NodeId(3)];
        let me = ClusterIdentity::new(Some(ours));
        me.observed(NodeId(2), Some(theirs));
        assert_eq!(me.refused(NodeId(1), voters), None, "one stray peer does not make us the stray one");
        me.observed(NodeId(3), Some(theirs));
        assert!(me.refused(NodeId(1), voters).is_some_and(|why| why.contains(&theirs.to_string())));
        me.observed(NodeId(3), Some(ours));
        assert_eq!(me.refused(NodeId(1), voters), None);
        // Without an id of our own we are nobody's stray.
        let fresh = ClusterIdentity::new(None);
        fresh.observed(NodeId(2), Some(theirs));
        fresh.observed(NodeId(3), Some(theirs));
        assert_eq!(fresh.refused(NodeId(1), voters), None);
        assert!(fresh.adopt(theirs) && !fresh.adopt(ours));
        assert_eq!(fresh.refused(NodeId(1), voters), None);
    }
}
