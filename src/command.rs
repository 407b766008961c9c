//! From a request's arguments to a typed, validated command (SPEC §3).
//!
//! This is the gateway for client input: past [`parse`] every key is at most
//! `KEY_BYTES_MAX` bytes, every value at most `VALUE_BYTES_MAX`, every node id
//! positive and every address `host:port`. A request that fails gets its error
//! reply here and is never applied.
//!
//! Each command falls in one class, which tells the node how to serve it:
//!
//! | class | commands | served |
//! | --- | --- | --- |
//! | [`ClientCommand::Write`] | SET DEL INCR CAS MSET | through the log; reply computed at apply |
//! | [`ClientCommand::Read`] | GET EXISTS MGET DBSIZE | after a read index, or locally under READONLY |
//! | [`ClientCommand::Admin`] | INFO READONLY READWRITE QUIT RAFT ... | by the node itself |
//! | [`ClientCommand::Reply`] | PING ECHO COMMAND CONFIG GET SELECT CLIENT | answered at once, nothing touched |
//!
//! The last row exists so that `redis-cli` (which asks `COMMAND DOCS` when it
//! starts interactively) and `redis-benchmark` (which asks `CONFIG GET save`
//! and `CONFIG GET appendonly` before running) work quietly.

pub use crate::auth::Category;
use crate::config::{ADDR_BYTES_MAX, KEY_BYTES_MAX, VALUE_BYTES_MAX};
use crate::kv::{ReadOp, WriteOp};
use crate::raft::NodeId;
use crate::resp::{Reply, parse_i64};

/// A parsed client request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientCommand {
    Write(WriteOp),
    Read(ReadOp),
    Admin(AdminCommand),
    /// Send this reply; nothing else to do.
    Reply(Reply),
}

/// Commands the node answers from its own state or by asking the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminCommand {
    /// Sections asked for, lowercased; empty means the default set.
    Info {
        sections: Vec<String>,
    },
    /// This connection's reads are served from the local copy.
    ReadOnly,
    /// This connection's reads are linearizable again.
    ReadWrite,
    /// Reply `+OK`, then close the connection.
    Quit,
    Raft(RaftCommand),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RaftCommand {
    /// Add a member (a learner first, then a voter, as the core sees fit).
    Add {
        id: NodeId,
        raft_addr: String,
        client_addr: String,
    },
    Remove {
        id: NodeId,
    },
    Transfer {
        id: NodeId,
    },
    Snapshot,
}

/// What running a request needs of a client's role (SPEC §5): `read` may
/// run what changes nothing, `write` also writes, `admin` everything
/// (membership, `CLIENT KILL`, `CONFIG`).
pub fn category(args: &[Vec<u8>]) -> Category {
    let Some(name) = args.first() else { return Category::Read };
    let name = name.to_ascii_lowercase();
    match name.as_slice() {
        b"set" | b"del" | b"incr" | b"cas" | b"mset" => Category::Write,
        b"raft" | b"config" => Category::Admin,
        b"client" if args.get(1).is_some_and(|s| s.eq_ignore_ascii_case(b"kill")) => Category::Admin,
        _ => Category::Read,
    }
}

/// The longest command name echoed back in an error (Redis's limit).
const NAME_ECHO_BYTES_MAX: usize = 128;

/// How many arguments a command takes, its own name included (Redis's arity).
#[derive(Clone, Copy)]
enum Arity {
    Exactly(usize),
    AtLeast(usize),
    Between(usize, usize),
}

fn wrong_arity(name: &str) -> Reply {
    Reply::err(format!("wrong number of arguments for '{name}'"))
}

fn check_arity(name: &str, args: &[Vec<u8>], arity: Arity) -> Result<(), Reply> {
    let n = args.len();
    let ok = match arity {
        Arity::Exactly(k) => n == k,
        Arity::AtLeast(k) => n >= k,
        Arity::Between(lo, hi) => (lo..=hi).contains(&n),
    };
    if ok { Ok(()) } else { Err(wrong_arity(name)) }
}

/// How a name from the client is quoted back in an error: lossy UTF-8, cut
/// at `NAME_ECHO_BYTES_MAX` bytes (the reply encoder blanks CR and LF).
pub fn echo_name(raw: &[u8]) -> String {
    let cut = &raw[..raw.len().min(NAME_ECHO_BYTES_MAX)];
    String::from_utf8_lossy(cut).into_owned()
}

fn check_key(key: &[u8]) -> Result<(), Reply> {
    if key.len() > KEY_BYTES_MAX {
        return Err(Reply::err("key too large"));
    }
    Ok(())
}

fn check_value(value: &[u8]) -> Result<(), Reply> {
    if value.len() > VALUE_BYTES_MAX {
        return Err(Reply::err("value too large"));
    }
    Ok(())
}

/// Turns a request's arguments (never empty from the parser) into a command,
/// or the error reply that answers it.
pub fn parse(args: Vec<Vec<u8>>) -> Result<ClientCommand, Reply> {
    let Some(first) = args.first() else {
        return Err(Reply::err("unknown command ''"));
    };
    let name = first.to_ascii_lowercase();
    match name.as_slice() {
        b"get" | b"exists" | b"mget" | b"dbsize" => parse_read(&name, args).map(ClientCommand::Read),
        b"set" | b"del" | b"incr" | b"cas" | b"mset" => parse_write(&name, args).map(ClientCommand::Write),
        b"info" | b"readonly" | b"readwrite" | b"quit" | b"raft" => parse_admin(&name, args).map(ClientCommand::Admin),
        b"ping" | b"echo" | b"command" | b"config" | b"select" | b"client" => {
            parse_immediate(&name, args).map(ClientCommand::Reply)
        }
        _ => Err(Reply::err(format!("unknown command '{}'", echo_name(first)))),
    }
}

/// The name as a `&str`; every name that reaches the class parsers is ASCII.
fn name_str(name: &[u8]) -> &str {
    std::str::from_utf8(name).expect("command names in the table are ASCII")
}

fn keys_after_name(name: &str, args: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>, Reply> {
    check_arity(name, &args, Arity::AtLeast(2))?;
    let keys: Vec<Vec<u8>> = args.into_iter().skip(1).collect();
    keys.iter().try_for_each(|k| check_key(k))?;
    Ok(keys)
}

fn parse_read(name: &[u8], args: Vec<Vec<u8>>) -> Result<ReadOp, Reply> {
    let name = name_str(name);
    match name {
        "get" => {
            check_arity(name, &args, Arity::Exactly(2))?;
            let [_, key] = take_args(args);
            check_key(&key)?;
            Ok(ReadOp::Get { key })
        }
        "exists" => Ok(ReadOp::Exists { keys: keys_after_name(name, args)? }),
        "mget" => Ok(ReadOp::MGet { keys: keys_after_name(name, args)? }),
        _ => {
            check_arity(name, &args, Arity::Exactly(1))?;
            Ok(ReadOp::DbSize)
        }
    }
}

/// Moves exactly `N` arguments out; the caller checked the count.
fn take_args<const N: usize>(args: Vec<Vec<u8>>) -> [Vec<u8>; N] {
    let n = args.len();
    args.try_into().unwrap_or_else(|_| panic!("arity was checked: expected {N} arguments, have {n}"))
}

fn parse_write(name: &[u8], args: Vec<Vec<u8>>) -> Result<WriteOp, Reply> {
    let name = name_str(name);
    match name {
        "set" => {
            check_arity(name, &args, Arity::AtLeast(3))?;
            if args.len() > 3 {
                // EX, NX, GET and friends are not supported.
                return Err(Reply::err("syntax error"));
            }
            let [_, key, value] = take_args(args);
            check_key(&key)?;
            check_value(&value)?;
            Ok(WriteOp::Set { key, value })
        }
        "del" => Ok(WriteOp::Del { keys: keys_after_name(name, args)? }),
        "incr" => {
            check_arity(name, &args, Arity::Exactly(2))?;
            let [_, key] = take_args(args);
            check_key(&key)?;
            Ok(WriteOp::Incr { key })
        }
        "cas" => {
            check_arity(name, &args, Arity::Exactly(4))?;
            let [_, key, expected, new] = take_args(args);
            check_key(&key)?;
            check_value(&expected)?;
            check_value(&new)?;
            Ok(WriteOp::Cas { key, expected, new })
        }
        _ => parse_mset(name, args),
    }
}

fn parse_mset(name: &str, args: Vec<Vec<u8>>) -> Result<WriteOp, Reply> {
    check_arity(name, &args, Arity::AtLeast(3))?;
    if args.len().is_multiple_of(2) {
        return Err(wrong_arity(name));
    }
    let mut pairs = Vec::with_capacity(args.len() / 2);
    let mut rest = args.into_iter().skip(1);
    while let (Some(key), Some(value)) = (rest.next(), rest.next()) {
        check_key(&key)?;
        check_value(&value)?;
        pairs.push((key, value));
    }
    Ok(WriteOp::MSet { pairs })
}

fn parse_admin(name: &[u8], args: Vec<Vec<u8>>) -> Result<AdminCommand, Reply> {
    let name = name_str(name);
    match name {
        "info" => Ok(AdminCommand::Info {
            sections: args[1..].iter().map(|s| String::from_utf8_lossy(s).to_ascii_lowercase()).collect(),
        }),
        "readonly" => check_arity(name, &args, Arity::Exactly(1)).map(|_| AdminCommand::ReadOnly),
        "readwrite" => check_arity(name, &args, Arity::Exactly(1)).map(|_| AdminCommand::ReadWrite),
        // Redis accepts and ignores arguments to QUIT.
        "quit" => Ok(AdminCommand::Quit),
        _ => parse_raft(args).map(AdminCommand::Raft),
    }
}

fn parse_raft(args: Vec<Vec<u8>>) -> Result<RaftCommand, Reply> {
    check_arity("raft", &args, Arity::AtLeast(2))?;
    let sub = args[1].to_ascii_lowercase();
    match sub.as_slice() {
        b"add" => {
            check_arity("raft|add", &args, Arity::Exactly(5))?;
            Ok(RaftCommand::Add {
                id: parse_node_id(&args[2])?,
                raft_addr: parse_addr(&args[3])?,
                client_addr: parse_addr(&args[4])?,
            })
        }
        b"remove" => {
            check_arity("raft|remove", &args, Arity::Exactly(3))?;
            Ok(RaftCommand::Remove { id: parse_node_id(&args[2])? })
        }
        b"transfer" => {
            check_arity("raft|transfer", &args, Arity::Exactly(3))?;
            Ok(RaftCommand::Transfer { id: parse_node_id(&args[2])? })
        }
        b"snapshot" => {
            check_arity("raft|snapshot", &args, Arity::Exactly(2))?;
            Ok(RaftCommand::Snapshot)
        }
        _ => Err(Reply::err(format!(
            "unknown subcommand '{}'. Try RAFT ADD, RAFT REMOVE, RAFT TRANSFER or RAFT SNAPSHOT.",
            echo_name(&args[1])
        ))),
    }
}

/// A node id: a positive decimal integer.
pub fn parse_node_id(raw: &[u8]) -> Result<NodeId, Reply> {
    match parse_i64(raw) {
        Some(id) if id > 0 => Ok(NodeId(id as u64)),
        _ => Err(Reply::err(format!("invalid node id '{}': expected a positive integer", echo_name(raw)))),
    }
}

/// An address `host:port`: a non-empty host without spaces (an IPv6 host in
/// brackets), a port from 1 to 65535, at most `ADDR_BYTES_MAX` bytes.
pub fn parse_addr(raw: &[u8]) -> Result<String, Reply> {
    let bad = || Reply::err(format!("invalid address '{}': expected host:port", echo_name(raw)));
    let text = std::str::from_utf8(raw).map_err(|_| bad())?;
    if text.len() > ADDR_BYTES_MAX || text.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(bad());
    }
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let bracketed = host.len() > 2 && host.starts_with('[') && host.ends_with(']');
    if host.is_empty() || (host.contains(':') && !bracketed) {
        return Err(bad());
    }
    match parse_i64(port.as_bytes()) {
        Some(p) if (1..=65535).contains(&p) => Ok(text.to_string()),
        _ => Err(bad()),
    }
}

/// Commands answered without the store, the core or the connection's state.
fn parse_immediate(name: &[u8], args: Vec<Vec<u8>>) -> Result<Reply, Reply> {
    let name = name_str(name);
    match name {
        "ping" => {
            check_arity(name, &args, Arity::Between(1, 2))?;
            Ok(match args.into_iter().nth(1) {
                None => Reply::Simple("PONG".to_string()),
                Some(message) => Reply::bulk(message),
            })
        }
        "echo" => {
            check_arity(name, &args, Arity::Exactly(2))?;
            let [_, message] = take_args(args);
            Ok(Reply::bulk(message))
        }
        // redis-cli asks COMMAND DOCS for its hints and is content with none.
        "command" => Ok(Reply::array(Vec::new())),
        "config" => parse_config(args),
        "select" => {
            check_arity(name, &args, Arity::Exactly(2))?;
            match parse_i64(&args[1]) {
                Some(0) => Ok(Reply::ok()),
                Some(_) => Err(Reply::err("DB index is out of range")),
                None => Err(Reply::err("value is not an integer or out of range")),
            }
        }
        _ => parse_client(args),
    }
}

/// CONFIG GET answers the two parameters redis-benchmark reads before it
/// runs (as a server without persistence settings would) and nothing else.
fn parse_config(args: Vec<Vec<u8>>) -> Result<Reply, Reply> {
    check_arity("config", &args, Arity::AtLeast(2))?;
    if !args[1].eq_ignore_ascii_case(b"get") {
        return Err(Reply::err(format!("unknown subcommand '{}'. Try CONFIG GET.", echo_name(&args[1]))));
    }
    check_arity("config|get", &args, Arity::AtLeast(3))?;
    let mut items = Vec::new();
    for param in &args[2..] {
        let param = param.to_ascii_lowercase();
        let value: &[u8] = match param.as_slice() {
            b"save" => b"",
            b"appendonly" => b"no",
            _ => continue,
        };
        items.push(Reply::bulk(param.clone()));
        items.push(Reply::bulk(value));
    }
    Ok(Reply::array(items))
}

/// CLIENT SETNAME and SETINFO, which client libraries send on connect, are
/// accepted and forgotten.
fn parse_client(args: Vec<Vec<u8>>) -> Result<Reply, Reply> {
    check_arity("client", &args, Arity::AtLeast(2))?;
    let sub = args[1].to_ascii_lowercase();
    match sub.as_slice() {
        b"setname" => check_arity("client|setname", &args, Arity::Exactly(3)).map(|_| Reply::ok()),
        b"setinfo" => check_arity("client|setinfo", &args, Arity::Exactly(4)).map(|_| Reply::ok()),
        _ => Err(Reply::err(format!(
            "unknown subcommand '{}'. Try CLIENT SETNAME or CLIENT SETINFO.",
            echo_name(&args[1])
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::split_args;

    fn run(line: &str) -> Result<ClientCommand, Reply> {
        parse(split_args(line.as_bytes()).unwrap())
    }

    /// The error reply as the client sees it, without `-` and CRLF.
    fn error_of(line: &str) -> String {
        match run(line) {
            Err(Reply::Error(text)) => text,
            other => panic!("{line:?} should fail, got {other:?}"),
        }
    }

    fn b(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[test]
    fn commands_parse_case_insensitively_into_their_class() {
        let cases: Vec<(&str, ClientCommand)> = vec![
            ("get k", ClientCommand::Read(ReadOp::Get { key: b("k") })),
            ("GeT k", ClientCommand::Read(ReadOp::Get { key: b("k") })),
            ("EXISTS a b a", ClientCommand::Read(ReadOp::Exists { keys: vec![b("a"), b("b"), b("a")] })),
            ("MGET a b", ClientCommand::Read(ReadOp::MGet { keys: vec![b("a"), b("b")] })),
            ("DBSIZE", ClientCommand::Read(ReadOp::DbSize)),
            ("SET k v", ClientCommand::Write(WriteOp::Set { key: b("k"), value: b("v") })),
            ("DEL a b", ClientCommand::Write(WriteOp::Del { keys: vec![b("a"), b("b")] })),
            ("INCR n", ClientCommand::Write(WriteOp::Incr { key: b("n") })),
            ("CAS k old new", ClientCommand::Write(WriteOp::Cas { key: b("k"), expected: b("old"), new: b("new") })),
            ("MSET a 1 b 2", ClientCommand::Write(WriteOp::MSet { pairs: vec![(b("a"), b("1")), (b("b"), b("2"))] })),
            ("INFO", ClientCommand::Admin(AdminCommand::Info { sections: vec![] })),
            (
                "info Replication RAFT",
                ClientCommand::Admin(AdminCommand::Info { sections: vec!["replication".into(), "raft".into()] }),
            ),
            ("READONLY", ClientCommand::Admin(AdminCommand::ReadOnly)),
            ("readwrite", ClientCommand::Admin(AdminCommand::ReadWrite)),
            ("QUIT", ClientCommand::Admin(AdminCommand::Quit)),
            (
                "RAFT ADD 4 127.0.0.1:7004 localhost:6004",
                ClientCommand::Admin(AdminCommand::Raft(RaftCommand::Add {
                    id: NodeId(4),
                    raft_addr: "127.0.0.1:7004".into(),
                    client_addr: "localhost:6004".into(),
                })),
            ),
            ("raft remove 2", ClientCommand::Admin(AdminCommand::Raft(RaftCommand::Remove { id: NodeId(2) }))),
            ("RAFT TRANSFER 3", ClientCommand::Admin(AdminCommand::Raft(RaftCommand::Transfer { id: NodeId(3) }))),
            ("RAFT SNAPSHOT", ClientCommand::Admin(AdminCommand::Raft(RaftCommand::Snapshot))),
            ("PING", ClientCommand::Reply(Reply::Simple("PONG".into()))),
            ("ping \"hi there\"", ClientCommand::Reply(Reply::bulk("hi there"))),
            ("ECHO x", ClientCommand::Reply(Reply::bulk("x"))),
            ("COMMAND DOCS", ClientCommand::Reply(Reply::array(vec![]))),
            ("COMMAND", ClientCommand::Reply(Reply::array(vec![]))),
            ("CONFIG GET save", ClientCommand::Reply(Reply::array(vec![Reply::bulk("save"), Reply::bulk("")]))),
            (
                "config get APPENDONLY maxmemory",
                ClientCommand::Reply(Reply::array(vec![Reply::bulk("appendonly"), Reply::bulk("no")])),
            ),
            ("SELECT 0", ClientCommand::Reply(Reply::ok())),
            ("CLIENT SETNAME me", ClientCommand::Reply(Reply::ok())),
            ("CLIENT SETINFO LIB-NAME redis-py", ClientCommand::Reply(Reply::ok())),
        ];
        for (line, expected) in cases {
            assert_eq!(run(line), Ok(expected), "{line}");
        }
    }

    #[test]
    fn error_texts_follow_spec() {
        let cases: &[(&str, &str)] = &[
            ("FOO a b", "ERR unknown command 'FOO'"),
            ("flushall", "ERR unknown command 'flushall'"),
            ("HELLO 3", "ERR unknown command 'HELLO'"),
            ("GET", "ERR wrong number of arguments for 'get'"),
            ("get a b", "ERR wrong number of arguments for 'get'"),
            ("SET k", "ERR wrong number of arguments for 'set'"),
            ("SET k v EX 10", "ERR syntax error"),
            ("SET k v NX", "ERR syntax error"),
            ("DEL", "ERR wrong number of arguments for 'del'"),
            ("EXISTS", "ERR wrong number of arguments for 'exists'"),
            ("INCR", "ERR wrong number of arguments for 'incr'"),
            ("INCR a b", "ERR wrong number of arguments for 'incr'"),
            ("CAS k v", "ERR wrong number of arguments for 'cas'"),
            ("MGET", "ERR wrong number of arguments for 'mget'"),
            ("MSET", "ERR wrong number of arguments for 'mset'"),
            ("MSET a", "ERR wrong number of arguments for 'mset'"),
            ("MSET a 1 b", "ERR wrong number of arguments for 'mset'"),
            ("DBSIZE x", "ERR wrong number of arguments for 'dbsize'"),
            ("PING a b", "ERR wrong number of arguments for 'ping'"),
            ("READONLY x", "ERR wrong number of arguments for 'readonly'"),
            ("RAFT", "ERR wrong number of arguments for 'raft'"),
            ("RAFT ADD 4 127.0.0.1:7004", "ERR wrong number of arguments for 'raft|add'"),
            ("RAFT REMOVE", "ERR wrong number of arguments for 'raft|remove'"),
            ("RAFT TRANSFER 1 2", "ERR wrong number of arguments for 'raft|transfer'"),
            ("RAFT SNAPSHOT now", "ERR wrong number of arguments for 'raft|snapshot'"),
            (
                "RAFT JOIN 4",
                "ERR unknown subcommand 'JOIN'. Try RAFT ADD, RAFT REMOVE, RAFT TRANSFER or RAFT SNAPSHOT.",
            ),
            ("RAFT REMOVE 0", "ERR invalid node id '0': expected a positive integer"),
            ("RAFT REMOVE -1", "ERR invalid node id '-1': expected a positive integer"),
            ("RAFT TRANSFER x", "ERR invalid node id 'x': expected a positive integer"),
            ("RAFT ADD 4 nohost 127.0.0.1:6004", "ERR invalid address 'nohost': expected host:port"),
            ("RAFT ADD 4 127.0.0.1:7004 :6004", "ERR invalid address ':6004': expected host:port"),
            ("RAFT ADD 4 127.0.0.1:0 h:1", "ERR invalid address '127.0.0.1:0': expected host:port"),
            ("RAFT ADD 4 h:65536 h:1", "ERR invalid address 'h:65536': expected host:port"),
            ("RAFT ADD 4 ::1:7000 h:1", "ERR invalid address '::1:7000': expected host:port"),
            ("SELECT 1", "ERR DB index is out of range"),
            ("CONFIG SET save x", "ERR unknown subcommand 'SET'. Try CONFIG GET."),
            ("CONFIG GET", "ERR wrong number of arguments for 'config|get'"),
        ];
        for (line, text) in cases {
            assert_eq!(error_of(line), *text, "{line}");
        }
        assert_eq!(
            run("RAFT ADD 4 [::1]:7004 h:6004").unwrap(),
            ClientCommand::Admin(AdminCommand::Raft(RaftCommand::Add {
                id: NodeId(4),
                raft_addr: "[::1]:7004".into(),
                client_addr: "h:6004".into(),
            }))
        );
    }

    #[test]
    fn unknown_names_are_echoed_safely() {
        let long = "x".repeat(1000);
        let text = error_of(&long);
        assert_eq!(text, format!("ERR unknown command '{}'", "x".repeat(128)));
        let reply = parse(vec![b"a\r\nb".to_vec()]).unwrap_err();
        assert_eq!(reply.to_bytes(), b"-ERR unknown command 'a  b'\r\n");
        assert_eq!(parse(vec![]).unwrap_err(), Reply::err("unknown command ''"));
    }

    #[test]
    fn sizes_are_checked_at_the_bound() {
        let key_max = vec![b'k'; KEY_BYTES_MAX];
        let key_over = vec![b'k'; KEY_BYTES_MAX + 1];
        let value_max = vec![b'v'; VALUE_BYTES_MAX];
        let value_over = vec![b'v'; VALUE_BYTES_MAX + 1];
        let too_large = |what: &str| Err(Reply::err(format!("{what} too large")));
        let cmd = |parts: &[&[u8]]| parse(parts.iter().map(|p| p.to_vec()).collect());

        assert!(cmd(&[b"SET", &key_max, &value_max]).is_ok());
        assert_eq!(cmd(&[b"SET", &key_over, b"v"]), too_large("key"));
        assert_eq!(cmd(&[b"SET", b"k", &value_over]), too_large("value"));
        assert_eq!(cmd(&[b"GET", &key_over]), too_large("key"));
        assert_eq!(cmd(&[b"DEL", b"a", &key_over]), too_large("key"));
        assert_eq!(cmd(&[b"EXISTS", &key_over]), too_large("key"));
        assert_eq!(cmd(&[b"MGET", b"a", &key_over]), too_large("key"));
        assert_eq!(cmd(&[b"INCR", &key_over]), too_large("key"));
        assert_eq!(cmd(&[b"CAS", &key_over, b"a", b"b"]), too_large("key"));
        assert_eq!(cmd(&[b"CAS", b"k", &value_over, b"b"]), too_large("value"));
        assert_eq!(cmd(&[b"CAS", b"k", b"a", &value_over]), too_large("value"));
        assert_eq!(cmd(&[b"MSET", b"a", b"1", &key_over, b"2"]), too_large("key"));
        assert_eq!(cmd(&[b"MSET", b"a", &value_over]), too_large("value"));
        assert_eq!(cmd(&[b"SET", b"k", &value_over]).unwrap_err().to_bytes(), b"-ERR value too large\r\n");
    }

    #[test]
    fn binary_keys_and_values_pass_through() {
        let key: Vec<u8> = (0..=255).collect();
        let value = b"\x00\r\n\xff".to_vec();
        let got = parse(vec![b"set".to_vec(), key.clone(), value.clone()]).unwrap();
        assert_eq!(got, ClientCommand::Write(WriteOp::Set { key, value }));
    }
}
