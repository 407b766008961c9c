//! The peers file (README, the peers file): the cluster's initial configuration.
//!
//! ```text
//! # comments and blank lines are ignored
//! # <id> <raft host:port> <client host:port>
//! 1 127.0.0.1:7001 127.0.0.1:6001
//! ```
//!
//! Every problem is reported with the file and line it is on.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use crate::config::ADDR_BYTES_MAX;
use crate::raft::{Addrs, Membership, NodeId};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub id: NodeId,
    pub raft_addr: String,
    pub client_addr: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peers {
    pub path: PathBuf,
    pub peers: BTreeMap<NodeId, Peer>,
}

/// What is wrong with a peers file, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeersError {
    pub path: PathBuf,
    /// 1-based; 0 when the problem is the file as a whole.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for PeersError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path.display(), self.message)
        } else {
            write!(f, "{}:{}: {}", self.path.display(), self.line, self.message)
        }
    }
}

impl std::error::Error for PeersError {}

/// Checks that `addr` is `host:port` with a port in 1..=65535. The host is
/// not resolved here (a name may not resolve until the network is up).
pub fn check_addr(addr: &str) -> Result<(), String> {
    if addr.len() > ADDR_BYTES_MAX {
        return Err(format!("address of {} bytes is longer than {ADDR_BYTES_MAX}", addr.len()));
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(format!("address {addr:?} is not host:port"));
    };
    if host.is_empty() {
        return Err(format!("address {addr:?} has no host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("address {addr:?} has an invalid port {port:?}")),
    }
}

/// Resolves `host:port` to a socket address, for binding.
pub fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("cannot resolve {addr:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr:?} resolves to no address"))
}

impl Peers {
    pub fn load(path: &Path) -> Result<Peers, PeersError> {
        let text = std::fs::read_to_string(path).map_err(|e| PeersError {
            path: path.to_path_buf(),
            line: 0,
            message: format!("cannot read: {e}"),
        })?;
        Peers::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Peers, PeersError> {
        let error = |line: usize, message: String| PeersError { path: path.to_path_buf(), line, message };
        let mut peers: BTreeMap<NodeId, Peer> = BTreeMap::new();
        let mut lines_of: BTreeMap<String, usize> = BTreeMap::new();
        for (n, raw) in text.lines().enumerate() {
            let line = n + 1;
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let fields: Vec<&str> = content.split_whitespace().collect();
            let [id, raft_addr, client_addr] = fields[..] else {
                return Err(error(
                    line,
                    format!("expected `<id> <raft host:port> <client host:port>`, found {} field(s)", fields.len()),
                ));
            };
            let id = match id.parse::<u64>() {
                Ok(v) if v > 0 => NodeId(v),
                _ => return Err(error(line, format!("node id {id:?} is not a positive integer"))),
            };
            for addr in [raft_addr, client_addr] {
                check_addr(addr).map_err(|m| error(line, m))?;
                if let Some(first) = lines_of.insert(addr.to_string(), line) {
                    return Err(error(line, format!("address {addr} is already used on line {first}")));
                }
            }
            let peer = Peer { id, raft_addr: raft_addr.to_string(), client_addr: client_addr.to_string() };
            if peers.insert(id, peer).is_some() {
                return Err(error(line, format!("node id {id} appears twice")));
            }
        }
        if peers.is_empty() {
            return Err(error(0, "lists no nodes".to_string()));
        }
        Ok(Peers { path: path.to_path_buf(), peers })
    }

    pub fn get(&self, id: NodeId) -> Option<&Peer> {
        self.peers.get(&id)
    }

    /// The bootstrap configuration: every listed node a voter.
    pub fn membership(&self) -> Membership {
        let mut m = Membership::with_voters(self.peers.keys().copied());
        for p in self.peers.values() {
            m.addrs.insert(p.id, Addrs { raft: p.raft_addr.clone(), client: p.client_addr.clone() });
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Peers, PeersError> {
        Peers::parse(Path::new("peers.txt"), text)
    }

    #[test]
    fn the_spec_example_parses() {
        let p = parse(
            "# comments and blank lines are ignored\n\n# <id> <raft host:port> <client host:port>\n\
             1 127.0.0.1:7001 127.0.0.1:6001\n2 127.0.0.1:7002 127.0.0.1:6002  # trailing comment\n\
             3 127.0.0.1:7003 127.0.0.1:6003\n",
        )
        .unwrap();
        assert_eq!(p.peers.len(), 3);
        assert_eq!(p.get(NodeId(2)).unwrap().client_addr, "127.0.0.1:6002");
        assert_eq!(p.membership().voters.len(), 3);
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let cases = [
            (
                "1 127.0.0.1:7001\n",
                "peers.txt:1: expected `<id> <raft host:port> <client host:port>`, found 2 field(s)",
            ),
            ("\n0 a:1 b:2\n", "peers.txt:2: node id \"0\" is not a positive integer"),
            ("x a:1 b:2\n", "peers.txt:1: node id \"x\" is not a positive integer"),
            ("1 a:1 b:2\n1 c:3 d:4\n", "peers.txt:2: node id 1 appears twice"),
            ("1 a:1 b:2\n2 a:1 d:4\n", "peers.txt:2: address a:1 is already used on line 1"),
            ("1 a:70000 b:2\n", "peers.txt:1: address \"a:70000\" has an invalid port \"70000\""),
            ("1 a b:2\n", "peers.txt:1: address \"a\" is not host:port"),
            ("# nothing\n", "peers.txt: lists no nodes"),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text).unwrap_err().to_string(), expected, "{text:?}");
        }
    }
}
