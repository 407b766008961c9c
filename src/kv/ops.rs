//! Writes as they live in the replicated log.
//!
//! A write carries the command's arguments, not a typed form: every node
//! parses them again when it applies the entry ([`super::cmd::parse`] is
//! deterministic), so a command is added in one place. The proposing node
//! stamps its clock on the entry: it is the base of relative expiries
//! (`EX 10`) everywhere, and, when the proposer led, it moves the store's
//! clock (module docs of `kv`).
//!
//! All integers little-endian, via `crate::codec`:
//!
//! ```text
//! op     = tag:u8 body
//!          1 SET   key value                  (logs written before stamps;
//!          2 DEL   count:u32 key[count]        applied as the command with
//!          3 INCR  key                         that name, at time 0)
//!          4 CAS   key value(expected) value(new)
//!          5 MSET  count:u32 { key value }[count]
//!          6 RUN   stamp args
//!          7 EXEC  stamp count:u32 { key mark:u64 }[count] n:u32 args[n]
//!          8 EXPIRE stamp count:u32 key[count]
//! stamp  = ms:u64 leader:u8 (0|1)
//! args   = count:u32 arg[count]         1 <= count <= REQUEST_ARGS_MAX
//! arg    = len:u32 bytes[len]           len <= VALUE_BYTES_MAX
//! ```

use crate::codec::{DecodeError, Reader, Writer};
use crate::config::{KEY_BYTES_MAX, REQUEST_ARGS_MAX, VALUE_BYTES_MAX};

use super::WatchMark;

/// The proposer's clock, and whether it proposed as leader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stamp {
    /// Milliseconds since the Unix epoch.
    pub ms: u64,
    /// Only a leader's stamp moves the store's clock.
    pub leader: bool,
}

/// A key `WATCH`ed by the connection that ran `EXEC`, and its mark then.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watch {
    pub key: Vec<u8>,
    pub mark: WatchMark,
}

/// A write: it goes through the log and its reply is computed at apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp {
    /// One command, by its arguments (name first).
    Run { stamp: Stamp, args: Vec<Vec<u8>> },
    /// `EXEC`: the queued commands, applied together or (a watched key
    /// changed) not at all.
    Exec { stamp: Stamp, watches: Vec<Watch>, commands: Vec<Vec<Vec<u8>>> },
    /// The leader's sweep: delete these keys if their deadline has passed
    /// by the store's clock once this stamp is counted.
    Expire { stamp: Stamp, keys: Vec<Vec<u8>> },
}

const TAG_SET: u8 = 1;
const TAG_DEL: u8 = 2;
const TAG_INCR: u8 = 3;
const TAG_CAS: u8 = 4;
const TAG_MSET: u8 = 5;
const TAG_RUN: u8 = 6;
const TAG_EXEC: u8 = 7;
const TAG_EXPIRE: u8 = 8;

impl WriteOp {
    /// A command with no stamp (tests and tools).
    pub fn command(args: &[&[u8]]) -> WriteOp {
        WriteOp::Run { stamp: Stamp::default(), args: args.iter().map(|a| a.to_vec()).collect() }
    }

    /// The command's name, for logs.
    pub fn name(&self) -> String {
        match self {
            WriteOp::Run { args, .. } => String::from_utf8_lossy(&args[0]).to_ascii_uppercase(),
            WriteOp::Exec { .. } => "EXEC".into(),
            WriteOp::Expire { .. } => "expiry".into(),
        }
    }

    pub fn stamp(&self) -> Stamp {
        match self {
            WriteOp::Run { stamp, .. } | WriteOp::Exec { stamp, .. } | WriteOp::Expire { stamp, .. } => *stamp,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        self.encode_into(&mut Writer::new(&mut buf));
        buf
    }

    /// Appends the encoding; asserts the bounds `decode` will check.
    pub fn encode_into(&self, w: &mut Writer<'_>) {
        match self {
            WriteOp::Run { stamp, args } => {
                w.u8(TAG_RUN);
                write_stamp(w, stamp);
                write_args(w, args);
            }
            WriteOp::Exec { stamp, watches, commands } => {
                w.u8(TAG_EXEC);
                write_stamp(w, stamp);
                w.len_u32(watches.len());
                for watch in watches {
                    write_key(w, &watch.key);
                    w.u64(watch.mark);
                }
                w.len_u32(commands.len());
                commands.iter().for_each(|c| write_args(w, c));
            }
            WriteOp::Expire { stamp, keys } => {
                w.u8(TAG_EXPIRE);
                write_stamp(w, stamp);
                w.len_u32(keys.len());
                keys.iter().for_each(|k| write_key(w, k));
            }
        }
    }

    /// Decodes exactly one operation filling all of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<WriteOp, DecodeError> {
        let mut r = Reader::new(bytes);
        let op = WriteOp::decode_from(&mut r)?;
        r.finish()?;
        Ok(op)
    }

    /// Decodes one operation from the reader's position.
    pub fn decode_from(r: &mut Reader<'_>) -> Result<WriteOp, DecodeError> {
        let legacy = |args: Vec<Vec<u8>>| Ok(WriteOp::Run { stamp: Stamp::default(), args });
        match r.u8("operation tag")? {
            TAG_SET => legacy(vec![b"SET".to_vec(), read_key(r)?, read_value(r)?]),
            TAG_DEL => {
                let count = read_count(r, "DEL key count")?;
                let mut args = vec![b"DEL".to_vec()];
                for _ in 0..count {
                    args.push(read_key(r)?);
                }
                legacy(args)
            }
            TAG_INCR => legacy(vec![b"INCR".to_vec(), read_key(r)?]),
            TAG_CAS => legacy(vec![b"CAS".to_vec(), read_key(r)?, read_value(r)?, read_value(r)?]),
            TAG_MSET => {
                let count = read_count(r, "MSET pair count")?;
                let mut args = vec![b"MSET".to_vec()];
                for _ in 0..count {
                    args.push(read_key(r)?);
                    args.push(read_value(r)?);
                }
                legacy(args)
            }
            TAG_RUN => Ok(WriteOp::Run { stamp: read_stamp(r)?, args: read_args(r)? }),
            TAG_EXEC => {
                let stamp = read_stamp(r)?;
                let n = r.len_u32("watch count", REQUEST_ARGS_MAX)?;
                let mut watches = Vec::with_capacity(n.min(r.remaining() / 12));
                for _ in 0..n {
                    watches.push(Watch { key: read_key(r)?, mark: r.u64("watch mark")? });
                }
                let n = r.len_u32("queued command count", REQUEST_ARGS_MAX)?;
                let mut commands = Vec::with_capacity(n.min(r.remaining() / 8));
                for _ in 0..n {
                    commands.push(read_args(r)?);
                }
                Ok(WriteOp::Exec { stamp, watches, commands })
            }
            TAG_EXPIRE => {
                let stamp = read_stamp(r)?;
                let count = read_count(r, "expired key count")?;
                let mut keys = Vec::with_capacity(count.min(r.remaining() / 4));
                for _ in 0..count {
                    keys.push(read_key(r)?);
                }
                Ok(WriteOp::Expire { stamp, keys })
            }
            tag => Err(r.invalid("operation tag", format!("unknown tag {tag}"))),
        }
    }
}

fn write_stamp(w: &mut Writer<'_>, stamp: &Stamp) {
    w.u64(stamp.ms);
    w.bool(stamp.leader);
}

fn read_stamp(r: &mut Reader<'_>) -> Result<Stamp, DecodeError> {
    Ok(Stamp { ms: r.u64("stamp")?, leader: r.bool("stamp leader flag")? })
}

fn write_args(w: &mut Writer<'_>, args: &[Vec<u8>]) {
    assert!(!args.is_empty(), "a command without a name");
    w.len_u32(args.len());
    for a in args {
        assert!(a.len() <= VALUE_BYTES_MAX, "argument of {} bytes", a.len());
        w.bytes_u32(a);
    }
}

fn read_args(r: &mut Reader<'_>) -> Result<Vec<Vec<u8>>, DecodeError> {
    let count = read_count(r, "argument count")?;
    let mut args = Vec::with_capacity(count.min(r.remaining() / 4));
    for _ in 0..count {
        args.push(r.bytes_u32("argument", VALUE_BYTES_MAX)?.to_vec());
    }
    Ok(args)
}

fn write_key(w: &mut Writer<'_>, key: &[u8]) {
    assert!(key.len() <= KEY_BYTES_MAX, "key of {} bytes", key.len());
    w.bytes_u32(key);
}

fn read_key(r: &mut Reader<'_>) -> Result<Vec<u8>, DecodeError> {
    Ok(r.bytes_u32("key", KEY_BYTES_MAX)?.to_vec())
}

fn read_value(r: &mut Reader<'_>) -> Result<Vec<u8>, DecodeError> {
    Ok(r.bytes_u32("value", VALUE_BYTES_MAX)?.to_vec())
}

fn read_count(r: &mut Reader<'_>, what: &'static str) -> Result<usize, DecodeError> {
    let count = r.len_u32(what, REQUEST_ARGS_MAX)?;
    if count == 0 {
        return Err(r.invalid(what, "zero"));
    }
    Ok(count)
}
