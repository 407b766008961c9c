//! What a client connection remembers between commands (docs/commands.md): the
//! protocol it speaks, READONLY, its name, the transaction it is queueing
//! and the keys it watches; and the commands about the connection itself
//! (CLIENT, CONFIG GET, SELECT) that need nothing from the core.

use std::sync::Arc;

use super::clients::{ClientInfo, Registry};
use crate::command::{self, ClientCommand, echo_name};
use crate::config::COMMAND_BYTES_MAX;
use crate::kv::Watch;
use crate::resp::{Proto, Reply, parse_i64};

/// Commands one transaction may queue.
pub const QUEUED_COMMANDS_MAX: usize = 100_000;

#[derive(Default)]
pub struct Session {
    pub proto: Proto,
    pub readonly: bool,
    /// Inside MULTI: what EXEC will run.
    pub multi: Option<Multi>,
    /// Keys WATCHed, with the mark each had then.
    pub watched: Vec<Watch>,
}

/// A transaction being queued.
#[derive(Default)]
pub struct Multi {
    /// Data commands, by their arguments, in order.
    pub commands: Vec<Vec<Vec<u8>>>,
    /// Replies of commands answered without the store (PING, ECHO, ...),
    /// and where they go among EXEC's replies.
    pub immediate: Vec<(usize, Reply)>,
    /// A command was refused while queueing: EXEC aborts.
    pub failed: bool,
    /// Bytes of the queued arguments, bounded by one log entry.
    pub bytes: usize,
}

/// What a command inside MULTI becomes.
pub enum Queued {
    /// `+QUEUED`, or the error that dooms the transaction.
    Reply(Reply),
    /// Not queued: the connection runs it now (EXEC, DISCARD, QUIT, RESET).
    RunNow,
}

impl Multi {
    pub fn len(&self) -> usize {
        self.commands.len() + self.immediate.len()
    }

    /// Queues one parsed request.
    pub fn queue(&mut self, parsed: &Result<ClientCommand, Reply>, args: &[Vec<u8>]) -> Queued {
        let refuse = |m: &mut Multi, reply: Reply| {
            m.failed = true;
            Queued::Reply(reply)
        };
        match parsed {
            Ok(ClientCommand::Connection { name: "exec" | "discard" | "quit" | "reset", .. }) => Queued::RunNow,
            Ok(ClientCommand::Connection { name: "multi", .. }) => {
                Queued::Reply(Reply::err("MULTI calls can not be nested"))
            }
            Ok(ClientCommand::Connection { name: "watch", .. }) => {
                Queued::Reply(Reply::err("WATCH inside MULTI is not allowed"))
            }
            Err(e) => refuse(self, e.clone()),
            Ok(ClientCommand::Write(_) | ClientCommand::Read(_)) => {
                let bytes: usize = args.iter().map(|a| a.len() + 8).sum();
                if self.len() >= QUEUED_COMMANDS_MAX || self.bytes + bytes > COMMAND_BYTES_MAX - 4096 {
                    return refuse(self, Reply::err("transaction too large: EXEC would exceed one log entry"));
                }
                self.bytes += bytes;
                self.commands.push(args.to_vec());
                Queued::Reply(Reply::Simple("QUEUED".into()))
            }
            Ok(ClientCommand::Reply(r)) => {
                self.immediate.push((self.len(), r.clone()));
                Queued::Reply(Reply::Simple("QUEUED".into()))
            }
            Ok(_) => refuse(
                self,
                Reply::err(format!("'{}' is not allowed inside a transaction", echo_name(&args[0]).to_lowercase())),
            ),
        }
    }
}

/// EXEC's replies: the store's, with the immediate ones put back in place.
pub fn merge_exec(reply: Reply, immediate: Vec<(usize, Reply)>) -> Reply {
    match reply {
        Reply::Array(Some(mut items)) => {
            for (at, r) in immediate {
                items.insert(at.min(items.len()), r);
            }
            Reply::array(items)
        }
        other => other,
    }
}

/// `SELECT index`: there is one database.
pub fn select(args: &[Vec<u8>]) -> Reply {
    match parse_i64(&args[1]) {
        Some(0) => Reply::ok(),
        Some(_) => Reply::err("DB index is out of range"),
        None => Reply::err("value is not an integer or out of range"),
    }
}

/// `CONFIG GET pattern...`: the node's settings whose names match.
pub fn config_get(args: &[Vec<u8>], settings: &[(String, String)]) -> Reply {
    let mut pairs = Vec::new();
    for (name, value) in settings {
        if args[2..].iter().any(|p| crate::kv::glob::matches(&p.to_ascii_lowercase(), name.as_bytes())) {
            pairs.push((Reply::bulk(name.as_bytes().to_vec()), Reply::bulk(value.as_bytes().to_vec())));
        }
    }
    Reply::Map(pairs)
}

/// `CLIENT ...` (arity and subcommand checked by the table).
pub fn client(args: &[Vec<u8>], me: &ClientInfo, registry: &Arc<Registry>) -> Reply {
    let sub = args[1].to_ascii_lowercase();
    match sub.as_slice() {
        b"setname" => {
            let name = &args[2];
            if name.iter().any(|&b| b <= b' ' || b > b'~') {
                return Reply::err("Client names cannot contain spaces, newlines or special characters.");
            }
            me.meta.lock().name = String::from_utf8_lossy(name).into_owned();
            Reply::ok()
        }
        b"getname" => match me.meta.lock().name.clone() {
            n if n.is_empty() => Reply::nil(),
            n => Reply::bulk(n.into_bytes()),
        },
        b"id" => Reply::Integer(me.id as i64),
        b"info" => Reply::Verbatim(format!("{}\n", me.line())),
        b"list" => {
            let ids: Option<Vec<u64>> = match args.get(2).map(|a| a.to_ascii_lowercase()) {
                None => None,
                Some(a) if a == b"id" => {
                    Some(args[3..].iter().filter_map(|i| parse_i64(i)).map(|i| i as u64).collect())
                }
                Some(a) if a == b"type" && args.len() == 4 => None,
                Some(_) => return Reply::err("syntax error"),
            };
            let lines: String = registry
                .list()
                .iter()
                .filter(|c| ids.as_ref().is_none_or(|ids| ids.contains(&c.id)))
                .map(|c| format!("{}\n", c.line()))
                .collect();
            Reply::Verbatim(lines)
        }
        b"kill" => kill(args, me, registry),
        b"setinfo" => {
            let value = String::from_utf8_lossy(&args[3]).into_owned();
            if value.contains(' ') || value.contains('\n') {
                return Reply::err("lib-name and lib-ver cannot contain spaces or newlines");
            }
            match args[2].to_ascii_lowercase().as_slice() {
                b"lib-name" => me.meta.lock().lib_name = value,
                b"lib-ver" => me.meta.lock().lib_ver = value,
                _ => return Reply::err(format!("Unrecognized option '{}'", echo_name(&args[2]))),
            }
            Reply::ok()
        }
        b"no-evict" => match args[2].to_ascii_lowercase().as_slice() {
            b"on" | b"off" => Reply::ok(),
            _ => Reply::err("syntax error"),
        },
        _ => match args[2].to_ascii_lowercase().as_slice() {
            b"off" => Reply::ok(),
            _ => Reply::err("client-side caching (CLIENT TRACKING ON) is not offered by raftkv"),
        },
    }
}

/// `CLIENT KILL addr` (old form: +OK) or `CLIENT KILL ID id | ADDR addr |
/// SKIPME yes|no ...` (a count).
fn kill(args: &[Vec<u8>], me: &ClientInfo, registry: &Arc<Registry>) -> Reply {
    if args.len() == 3 {
        let addr = String::from_utf8_lossy(&args[2]);
        return match registry.list().into_iter().find(|c| c.addr == addr) {
            Some(c) => {
                c.kill();
                Reply::ok()
            }
            None => Reply::err("No such client"),
        };
    }
    let (mut id, mut addr, mut skip_me) = (None, None, true);
    for pair in args[2..].chunks(2) {
        let [opt, value] = pair else { return Reply::err("syntax error") };
        match opt.to_ascii_lowercase().as_slice() {
            b"id" => match parse_i64(value) {
                Some(n) if n > 0 => id = Some(n as u64),
                _ => return Reply::err("client-id should be greater than 0"),
            },
            b"addr" => addr = Some(String::from_utf8_lossy(value).into_owned()),
            b"skipme" => match value.to_ascii_lowercase().as_slice() {
                b"yes" => skip_me = true,
                b"no" => skip_me = false,
                _ => return Reply::err("syntax error"),
            },
            _ => return Reply::err("syntax error"),
        }
    }
    let mut killed = 0;
    for c in registry.list() {
        let chosen = id.is_none_or(|i| c.id == i) && addr.as_ref().is_none_or(|a| &c.addr == a);
        if chosen && !(skip_me && c.id == me.id) {
            c.kill();
            killed += 1;
        }
    }
    Reply::Integer(killed)
}

/// The name a command goes by in CLIENT LIST (`client|list`).
pub fn command_name(args: &[Vec<u8>]) -> String {
    let Some(spec) = args.first().and_then(|n| command::table::lookup(n)) else { return "unknown".into() };
    match args.get(1).and_then(|s| command::table::lookup_sub(spec, s)) {
        Some(sub) => sub.name.to_string(),
        None => spec.name.to_string(),
    }
}
