//! The simulator's state machine: a map of string registers driven by
//! readable text commands, so traces and scenario files stay legible.
//!
//! A command is `<client>#<seq> set <key> <value>` or
//! `<client>#<seq> cas <key> <expected> <new>` (`-` stands for absent).

use std::collections::BTreeMap;

use crate::raft::Index;

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Machine {
    pub map: BTreeMap<String, String>,
    pub applied: Index,
}

/// The result of applying one command, for the client that sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub client: u64,
    pub seq: u64,
    pub result: String,
}

pub fn command_set(client: u64, seq: u64, key: &str, value: &str) -> Vec<u8> {
    format!("{client}#{seq} set {key} {value}").into_bytes()
}

pub fn command_cas(client: u64, seq: u64, key: &str, expected: Option<&str>, new: &str) -> Vec<u8> {
    format!("{client}#{seq} cas {key} {} {new}", expected.unwrap_or("-")).into_bytes()
}

impl Machine {
    /// Applies a command; commands that do not parse (scenario files propose
    /// bare words) change nothing.
    pub fn apply(&mut self, index: Index, command: &[u8]) -> Option<Applied> {
        assert!(index > self.applied, "applying {index} after {}", self.applied);
        self.applied = index;
        let text = std::str::from_utf8(command).ok()?;
        let words: Vec<&str> = text.split(' ').collect();
        let (client, seq) = words.first()?.split_once('#')?;
        let (client, seq) = (client.parse().ok()?, seq.parse().ok()?);
        let result = match words.get(1..)? {
            ["set", key, value] => {
                self.map.insert(key.to_string(), value.to_string());
                "OK".to_string()
            }
            ["cas", key, expected, new] => {
                // As SPEC §3 and the KV store: an absent key never matches
                // (`-` in the command stands for "absent" and so never does).
                let current = self.map.get(*key).map(String::as_str);
                if current == Some(*expected) && *expected != "-" {
                    self.map.insert(key.to_string(), new.to_string());
                    "1".to_string()
                } else {
                    "0".to_string()
                }
            }
            _ => return None,
        };
        Some(Applied { client, seq, result })
    }

    /// Advances over an entry that carries no command.
    pub fn skip(&mut self, index: Index) {
        assert!(index > self.applied, "skipping {index} after {}", self.applied);
        self.applied = index;
    }

    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = format!("{}\n", self.applied.0);
        for (k, v) in &self.map {
            out.push_str(&format!("{k} {v}\n"));
        }
        out.into_bytes()
    }

    pub fn restore(data: &[u8]) -> Machine {
        let text = std::str::from_utf8(data).expect("simulator snapshots are text");
        let mut lines = text.lines();
        let applied = Index(lines.next().and_then(|l| l.parse().ok()).expect("snapshot header"));
        let map = lines.filter_map(|l| l.split_once(' ')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Machine { map, applied }
    }
}
