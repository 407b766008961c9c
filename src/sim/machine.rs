//! The simulator's state machine: a map of string registers driven by
//! readable text commands, so traces and scenario files stay legible.
//!
//! A command is `<client>#<seq> set <key> <value>` or
//! `<client>#<seq> cas <key> <expected> <new>` (`-` stands for absent).
//!
//! Keys with a deadline live in the real store (`crate::kv`), so that the
//! simulator checks expiry as the node does it: `<client>#<seq> setpx <key>
//! <value> <ms> @<stamp>` is `SET key value PX ms` stamped with the
//! proposer's clock (`L` after the stamp: it proposed as leader), and
//! `sweep @<stamp> <key> ...` is the leader's sweep (`crate::expiry`).

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use crate::kv::{KvStore, Stamp, WriteOp};
use crate::raft::Index;

/// The snapshot line holding the store (no register key starts with `=`).
const KV_LINE: &str = "=kv";

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Machine {
    pub map: BTreeMap<String, String>,
    /// Keys written with a deadline; made at the first (an empty store has
    /// thousands of shards, and the model checker clones and hashes every
    /// state it meets).
    kv: Option<KvStore>,
    pub applied: Index,
}

impl Hash for Machine {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.map.hash(h);
        self.applied.hash(h);
        if let Some(kv) = &self.kv {
            kv.clock().hash(h);
            kv.iter().for_each(|pair| pair.hash(h));
        }
    }
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

pub fn command_setpx(client: u64, seq: u64, key: &str, value: &str, ms: u64, stamp: Stamp) -> Vec<u8> {
    format!("{client}#{seq} setpx {key} {value} {ms} {}", show_stamp(stamp)).into_bytes()
}

/// The leader's sweep, as `crate::expiry::Sweep` hands it out.
pub fn command_sweep(op: WriteOp) -> Vec<u8> {
    let WriteOp::Expire { stamp, keys } = op else { unreachable!("the sweep proposes only deletions") };
    let keys: Vec<String> = keys.iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
    format!("sweep {} {}", show_stamp(stamp), keys.join(" ")).into_bytes()
}

fn show_stamp(stamp: Stamp) -> String {
    format!("@{}{}", stamp.ms, if stamp.leader { "L" } else { "" })
}

fn parse_stamp(word: &str) -> Option<Stamp> {
    let ms = word.strip_prefix('@')?;
    let (ms, leader) = match ms.strip_suffix('L') {
        Some(ms) => (ms, true),
        None => (ms, false),
    };
    Some(Stamp { ms: ms.parse().ok()?, leader })
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
        let text = std::str::from_utf8(command).ok()?;
        let words: Vec<&str> = text.split(' ').collect();
        if let ["sweep", stamp, keys @ ..] = &words[..] {
            let keys = keys.iter().map(|k| k.as_bytes().to_vec()).collect();
            self.kv_mut().apply(&WriteOp::Expire { stamp: parse_stamp(stamp)?, keys }, index.0);
            return None;
        }
        let (client, seq) = command_id(command)?;
        let result = match words.get(1..)? {
            ["setpx", key, value, ms, stamp] => {
                let args = ["SET", key, value, "PX", ms].iter().map(|a| a.as_bytes().to_vec()).collect();
                let reply = self.kv_mut().apply(&WriteOp::Run { stamp: parse_stamp(stamp)?, args }, index.0);
                match reply {
                    crate::resp::Reply::Simple(s) => s,
                    other => format!("{other:?}"),
                }
            }
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

    /// A key's value, if it is there (and, for a key with a deadline, not
    /// expired by the store's clock or by `at`, the leader's clock a read is
    /// judged by).
    pub fn get(&self, key: &str, at: u64) -> Option<String> {
        match self.map.get(key) {
            Some(v) => Some(v.clone()),
            None => self.kv().get_at(key.as_bytes(), at).map(|v| String::from_utf8_lossy(v).into_owned()),
        }
    }

    /// The keys with a deadline (an empty store before the first).
    pub fn kv(&self) -> &KvStore {
        static EMPTY: std::sync::OnceLock<KvStore> = std::sync::OnceLock::new();
        self.kv.as_ref().unwrap_or_else(|| EMPTY.get_or_init(KvStore::new))
    }

    fn kv_mut(&mut self) -> &mut KvStore {
        self.kv.get_or_insert_with(KvStore::new)
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
        if let Some(kv) = &self.kv {
            let mut bytes = Vec::new();
            kv.write_snapshot(&mut bytes).expect("writing to memory");
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            out.push_str(&format!("{KV_LINE} {hex}\n"));
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
        let mut map = BTreeMap::new();
        let mut kv = None;
        for (k, v) in lines.filter_map(|l| l.split_once(' ')) {
            if k != KV_LINE {
                map.insert(k.to_string(), v.to_string());
                continue;
            }
            let bytes = (0..v.len())
                .step_by(2)
                .map(|i| v.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
                .collect::<Option<Vec<u8>>>()
                .ok_or("the store's line is not hex")?;
            kv = Some(KvStore::load(&bytes[..]).map_err(|e| format!("the store's snapshot: {e}"))?);
        }
        Ok(Machine { map, kv, applied })
    }

    /// Loads a snapshot the simulator itself made durable: damage there is a
    /// simulator bug.
    pub fn restore(data: &[u8]) -> Machine {
        Machine::load(data).unwrap_or_else(|e| panic!("a durable simulator snapshot is damaged: {e}"))
    }
}
