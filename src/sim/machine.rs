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

/// The `(client, seq)` a command carries, if it is one of the above.
pub fn command_id(command: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(command).ok()?;
    let (client, seq) = text.split(' ').next()?.split_once('#')?;
    Some((client.parse().ok()?, seq.parse().ok()?))
}

impl Machine {
    /// Applies a command; commands that do not parse (scenario files propose
    /// bare words) change nothing.
    pub fn apply(&mut self, index: Index, command: &[u8]) -> Option<Applied> {
        assert!(index > self.applied, "applying {index} after {}", self.applied);
        self.applied = index;
        let (client, seq) = command_id(command)?;
        let text = std::str::from_utf8(command).ok()?;
        let words: Vec<&str> = text.split(' ').collect();
        let result = match words.get(1..)? {
            ["set", key, value] => {
                self.map.insert(key.to_string(), value.to_string());
                "OK".to_string()
            }
            ["cas", key, expected, new] => {
                // As docs/commands.md and the KV store: an absent key never matches
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

    /// The applied index, a line per key, and a checksum line, so that a
    /// damaged copy is told from a good one (as a real snapshot's CRC does).
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = format!("{}\n", self.applied.0);
        for (k, v) in &self.map {
            out.push_str(&format!("{k} {v}\n"));
        }
        let sum = crc32fast::hash(out.as_bytes());
        out.push_str(&format!("#{sum:08x}\n"));
        out.into_bytes()
    }

    /// Reads a snapshot back, checking it whole.
    pub fn load(data: &[u8]) -> Result<Machine, String> {
        let text = std::str::from_utf8(data).map_err(|e| format!("not text: {e}"))?;
        let body_len = text.trim_end_matches('\n').rfind('\n').map_or(0, |i| i + 1);
        let (body, sum_line) = text.split_at(body_len);
        let sum = sum_line.trim_end().strip_prefix('#').and_then(|h| u32::from_str_radix(h, 16).ok());
        if sum != Some(crc32fast::hash(body.as_bytes())) {
            return Err(format!("checksum line {sum_line:?} does not match"));
        }
        let mut lines = body.lines();
        let applied = Index(lines.next().and_then(|l| l.parse().ok()).ok_or("no applied index")?);
        let map = lines.filter_map(|l| l.split_once(' ')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Ok(Machine { map, applied })
    }

    /// Loads a snapshot the simulator itself made durable: damage there is a
    /// simulator bug.
    pub fn restore(data: &[u8]) -> Machine {
        Machine::load(data).unwrap_or_else(|e| panic!("a durable simulator snapshot is damaged: {e}"))
    }
}
