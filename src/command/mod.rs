//! From a request's arguments to what serves it (docs/commands.md).
//!
//! This is the gateway for client input: every command is looked up in the
//! command table ([`table`]), its arity checked there, and a data command
//! parsed into its typed form ([`crate::kv::Cmd`]), so past [`parse`] every
//! key is at most `KEY_BYTES_MAX` bytes, every value at most
//! `VALUE_BYTES_MAX`, every option valid. A request that fails gets its
//! error reply here and is never applied.
//!
//! | class | served |
//! | --- | --- |
//! | [`ClientCommand::Write`] | through the log, by its arguments; reply computed at apply |
//! | [`ClientCommand::Read`] | after a read index, or locally under READONLY |
//! | [`ClientCommand::Info`], [`ClientCommand::Raft`] | by the node's core thread |
//! | [`ClientCommand::Connection`] | by the connection (HELLO, CLIENT, MULTI, WATCH, CONFIG, ...) |
//! | [`ClientCommand::Reply`] | answered at once (PING, ECHO, TIME, COMMAND) |

pub mod args;
pub mod table;

pub use crate::auth::Category;
use crate::config::ADDR_BYTES_MAX;
use crate::kv::Cmd;
use crate::raft::NodeId;
use crate::resp::{Reply, parse_i64};
use table::{Class, Spec};

/// A parsed client request.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientCommand {
    /// A valid write, by its arguments, as the log carries it.
    Write(Vec<Vec<u8>>),
    Read(Cmd),
    /// Sections asked for, lowercased; empty means the default set.
    Info {
        sections: Vec<String>,
    },
    Raft(RaftCommand),
    /// `ROLE`.
    Role,
    /// `SENTINEL ...`, its subcommand and arity checked.
    Sentinel(Vec<Vec<u8>>),
    /// A command about the connection itself; its arity is checked.
    Connection {
        name: &'static str,
        args: Vec<Vec<u8>>,
    },
    /// Send this reply; nothing else to do.
    Reply(Reply),
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

/// What running a request needs of a client's role (README, Security): `read` may
/// run what changes nothing, `write` also writes, `admin` everything
/// (membership, `CLIENT KILL`, `CONFIG`, `FLUSHALL`). Unknown commands need
/// nothing: they fail anyway.
pub fn category(args: &[Vec<u8>]) -> Category {
    let Some(spec) = args.first().and_then(|n| table::lookup(n)) else { return Category::Read };
    match args.get(1).and_then(|s| table::lookup_sub(spec, s)) {
        Some(sub) => sub.category.max(spec.category),
        None => spec.category,
    }
}

/// The longest command name echoed back in an error (Redis's limit).
const NAME_ECHO_BYTES_MAX: usize = 128;

fn wrong_arity(name: &str) -> Reply {
    Reply::err(format!("wrong number of arguments for '{name}'"))
}

/// How a name from the client is quoted back in an error: lossy UTF-8, cut
/// at `NAME_ECHO_BYTES_MAX` bytes (the reply encoder blanks CR and LF).
pub fn echo_name(raw: &[u8]) -> String {
    let cut = &raw[..raw.len().min(NAME_ECHO_BYTES_MAX)];
    String::from_utf8_lossy(cut).into_owned()
}

/// The table's entry for a request, with its arity and (for a container
/// such as CLIENT) its subcommand checked.
pub fn resolve(args: &[Vec<u8>]) -> Result<&'static Spec, Reply> {
    let Some(first) = args.first() else {
        return Err(Reply::err("unknown command ''"));
    };
    let Some(spec) = table::lookup(first) else {
        return Err(Reply::err(format!("unknown command '{}'", echo_name(first))));
    };
    if !spec.arity_ok(args.len()) {
        return Err(wrong_arity(spec.name));
    }
    if spec.subcommands.is_empty() || (spec.name == "command" && args.len() == 1) {
        return Ok(spec);
    }
    let Some(sub) = table::lookup_sub(spec, &args[1]) else {
        let names: Vec<String> = spec.subcommands.iter().map(|s| s.name.replace('|', " ").to_uppercase()).collect();
        let listed = match names.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        };
        return Err(Reply::err(format!("unknown subcommand '{}'. Try {listed}.", echo_name(&args[1]))));
    };
    if !sub.arity_ok(args.len()) {
        return Err(wrong_arity(sub.name));
    }
    Ok(spec)
}

/// Turns a request's arguments (never empty from the parser) into a command,
/// or the error reply that answers it.
pub fn parse(args: Vec<Vec<u8>>) -> Result<ClientCommand, Reply> {
    let spec = resolve(&args)?;
    match class_of(spec, &args) {
        Class::Read => crate::kv::parse_cmd(spec.name, &args, now_ms()).map(ClientCommand::Read),
        Class::Write => {
            crate::kv::parse_cmd(spec.name, &args, now_ms())?;
            Ok(ClientCommand::Write(args))
        }
        Class::Node if spec.name == "info" => Ok(ClientCommand::Info {
            sections: args[1..].iter().map(|s| String::from_utf8_lossy(s).to_ascii_lowercase()).collect(),
        }),
        Class::Node if spec.name == "role" => Ok(ClientCommand::Role),
        Class::Node if spec.name == "sentinel" => Ok(ClientCommand::Sentinel(args)),
        Class::Node => parse_raft(args).map(ClientCommand::Raft),
        Class::Connection => Ok(ClientCommand::Connection { name: spec.name, args }),
        Class::Immediate => immediate(spec, &args).map(ClientCommand::Reply),
    }
}

/// A data command (read or write) as the state machine runs it: from the
/// log at apply, or queued in a transaction. `base` is the proposer's
/// clock, for relative expiries.
pub fn parse_data(args: &[Vec<u8>], base: u64) -> Result<Cmd, Reply> {
    let spec = resolve(args)?;
    match class_of(spec, args) {
        Class::Read | Class::Write => crate::kv::parse_cmd(spec.name, args, base),
        _ => Err(Reply::err(format!("'{}' is not a data command", spec.name))),
    }
}

/// Who serves a request: its subcommand's class for a container (SCRIPT
/// LOAD writes, SCRIPT EXISTS reads), else the command's.
pub fn class_of(spec: &'static Spec, args: &[Vec<u8>]) -> Class {
    match args.get(1).and_then(|s| table::lookup_sub(spec, s)) {
        Some(sub) => sub.class,
        None => spec.class,
    }
}

/// This node's clock, ms since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn parse_raft(args: Vec<Vec<u8>>) -> Result<RaftCommand, Reply> {
    match args[1].to_ascii_lowercase().as_slice() {
        b"add" => Ok(RaftCommand::Add {
            id: parse_node_id(&args[2])?,
            raft_addr: parse_addr(&args[3])?,
            client_addr: parse_addr(&args[4])?,
        }),
        b"remove" => Ok(RaftCommand::Remove { id: parse_node_id(&args[2])? }),
        b"transfer" => Ok(RaftCommand::Transfer { id: parse_node_id(&args[2])? }),
        _ => Ok(RaftCommand::Snapshot),
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

/// Commands answered from their arguments alone.
fn immediate(spec: &'static Spec, args: &[Vec<u8>]) -> Result<Reply, Reply> {
    match spec.name {
        "ping" if args.len() > 2 => Err(wrong_arity("ping")),
        "ping" => Ok(match args.get(1) {
            None => Reply::Simple("PONG".to_string()),
            Some(message) => Reply::bulk(message.clone()),
        }),
        "echo" => Ok(Reply::bulk(args[1].clone())),
        "time" => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            Ok(Reply::array(vec![Reply::bulk(now.as_secs().to_string()), Reply::bulk(now.subsec_micros().to_string())]))
        }
        _ => Ok(command_info(args)),
    }
}

/// `COMMAND [COUNT|LIST|INFO|DOCS]`, from the table.
fn command_info(args: &[Vec<u8>]) -> Reply {
    let sub = args.get(1).map(|s| s.to_ascii_lowercase());
    let named = |args: &[Vec<u8>]| -> Vec<Option<&'static Spec>> {
        if args.len() <= 2 {
            table::COMMANDS.iter().map(Some).collect()
        } else {
            args[2..].iter().map(|n| table::lookup(n)).collect()
        }
    };
    match sub.as_deref() {
        None => Reply::array(table::COMMANDS.iter().map(command_entry).collect()),
        Some(b"count") => Reply::Integer(table::COMMANDS.len() as i64),
        Some(b"list") => Reply::array(table::COMMANDS.iter().map(|s| Reply::bulk(s.name)).collect()),
        Some(b"info") => {
            Reply::array(named(args).into_iter().map(|s| s.map_or(Reply::Array(None), command_entry)).collect())
        }
        _ => Reply::Map(named(args).into_iter().flatten().map(|s| (Reply::bulk(s.name), command_docs(s))).collect()),
    }
}

/// One command (or subcommand) as COMMAND DOCS describes it: Redis 7's
/// summary, group and argument specs, from the table.
fn command_docs(s: &'static Spec) -> Reply {
    let mut doc =
        vec![("summary", Reply::bulk(s.summary)), ("since", Reply::bulk("1.0.0")), ("group", Reply::bulk(s.group))];
    let command = s.name.rsplit('|').next().unwrap_or(s.name);
    // A container (CLIENT, SCRIPT) has its subcommands' instead. Every
    // other syntax line parses (a test of the table's); one that did not
    // would only lose its argument specs.
    let specs = match s.subcommands.is_empty() {
        true => args::parse(command, s.syntax).unwrap_or_default(),
        false => Vec::new(),
    };
    if !specs.is_empty() {
        doc.push(("arguments", Reply::array(specs.iter().map(args::Arg::reply).collect())));
    }
    if !s.subcommands.is_empty() {
        doc.push(("subcommands", Reply::map(s.subcommands.iter().map(|c| (c.name, command_docs(c))))));
    }
    Reply::map(doc)
}

/// One command as COMMAND INFO describes it (Redis 7's ten fields).
fn command_entry(s: &'static Spec) -> Reply {
    Reply::array(vec![
        Reply::bulk(s.name),
        Reply::Integer(s.arity as i64),
        Reply::Set(s.flags.iter().map(|f| Reply::Simple(f.to_string())).collect()),
        Reply::Integer(s.keys.0 as i64),
        Reply::Integer(s.keys.1 as i64),
        Reply::Integer(s.keys.2 as i64),
        Reply::Set(s.acl_categories().into_iter().map(Reply::Simple).collect()),
        Reply::array(vec![]),
        Reply::array(vec![]),
        Reply::array(s.subcommands.iter().map(command_entry).collect()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{KEY_BYTES_MAX, VALUE_BYTES_MAX};
    use crate::kv::{Cond, Ttl};
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

    fn words(line: &str) -> Vec<Vec<u8>> {
        split_args(line.as_bytes()).unwrap()
    }

    #[test]
    fn commands_parse_case_insensitively_into_their_class() {
        let cases: Vec<(&str, ClientCommand)> = vec![
            ("get k", ClientCommand::Read(Cmd::Get { key: b("k") })),
            ("GeT k", ClientCommand::Read(Cmd::Get { key: b("k") })),
            ("EXISTS a b a", ClientCommand::Read(Cmd::Exists { keys: vec![b("a"), b("b"), b("a")] })),
            ("MGET a b", ClientCommand::Read(Cmd::MGet { keys: vec![b("a"), b("b")] })),
            ("DBSIZE", ClientCommand::Read(Cmd::DbSize)),
            ("INFO", ClientCommand::Info { sections: vec![] }),
            ("info Replication RAFT", ClientCommand::Info { sections: vec!["replication".into(), "raft".into()] }),
            (
                "RAFT ADD 4 127.0.0.1:7004 localhost:6004",
                ClientCommand::Raft(RaftCommand::Add {
                    id: NodeId(4),
                    raft_addr: "127.0.0.1:7004".into(),
                    client_addr: "localhost:6004".into(),
                }),
            ),
            ("raft remove 2", ClientCommand::Raft(RaftCommand::Remove { id: NodeId(2) })),
            ("RAFT TRANSFER 3", ClientCommand::Raft(RaftCommand::Transfer { id: NodeId(3) })),
            ("RAFT SNAPSHOT", ClientCommand::Raft(RaftCommand::Snapshot)),
            ("PING", ClientCommand::Reply(Reply::Simple("PONG".into()))),
            ("ping \"hi there\"", ClientCommand::Reply(Reply::bulk("hi there"))),
            ("ECHO x", ClientCommand::Reply(Reply::bulk("x"))),
            ("COMMAND COUNT", ClientCommand::Reply(Reply::Integer(table::COMMANDS.len() as i64))),
            ("READONLY", ClientCommand::Connection { name: "readonly", args: words("READONLY") }),
            ("multi", ClientCommand::Connection { name: "multi", args: words("multi") }),
            ("CLIENT SETNAME me", ClientCommand::Connection { name: "client", args: words("CLIENT SETNAME me") }),
        ];
        for (line, expected) in cases {
            assert_eq!(run(line), Ok(expected), "{line}");
        }
        // Writes go to the log as they came, once they parse.
        for line in
            ["SET k v", "set k v NX PX 100", "DEL a b", "INCRBY n -3", "CAS k old new", "MSET a 1 b 2", "HSET h f v"]
        {
            assert_eq!(run(line), Ok(ClientCommand::Write(words(line))), "{line}");
        }
    }

    #[test]
    fn set_options_parse_as_redis_reads_them() {
        let base = 1_000_000;
        let set = |line: &str| parse_data(&words(line), base);
        let expect = |cond, get, ttl| Ok(Cmd::Set { key: b("k"), value: b("v"), cond, get, ttl });
        assert_eq!(set("SET k v"), expect(Cond::Always, false, Ttl::Unchanged));
        assert_eq!(set("SET k v NX"), expect(Cond::Nx, false, Ttl::Unchanged));
        assert_eq!(set("SET k v xx get"), expect(Cond::Xx, true, Ttl::Unchanged));
        assert_eq!(set("SET k v EX 10"), expect(Cond::Always, false, Ttl::At(base + 10_000)));
        assert_eq!(set("SET k v PX 10"), expect(Cond::Always, false, Ttl::At(base + 10)));
        assert_eq!(set("SET k v EXAT 10"), expect(Cond::Always, false, Ttl::At(10_000)));
        assert_eq!(set("SET k v PXAT 10 NX"), expect(Cond::Nx, false, Ttl::At(10)));
        assert_eq!(set("SET k v KEEPTTL"), expect(Cond::Always, false, Ttl::Keep));
        assert_eq!(set("SETEX k 5 v"), expect(Cond::Always, false, Ttl::At(base + 5_000)));
        for bad in ["SET k v NX XX", "SET k v EX 1 PX 1", "SET k v EX", "SET k v KEEPTTL EX 1", "SET k v FOO"] {
            assert_eq!(set(bad), Err(Reply::err("syntax error")), "{bad}");
        }
        assert_eq!(set("SET k v EX 0"), Err(Reply::err("invalid expire time in 'set' command")));
        assert_eq!(set("SET k v EX -1"), Err(Reply::err("invalid expire time in 'set' command")));
        assert_eq!(set("SET k v EX 9223372036854775807"), Err(Reply::err("invalid expire time in 'set' command")));
        assert_eq!(set("SET k v EX x"), Err(Reply::err("value is not an integer or out of range")));
    }

    #[test]
    fn error_texts_follow_spec() {
        let cases: &[(&str, &str)] = &[
            ("FOO a b", "ERR unknown command 'FOO'"),
            ("GET", "ERR wrong number of arguments for 'get'"),
            ("get a b", "ERR wrong number of arguments for 'get'"),
            ("SET k", "ERR wrong number of arguments for 'set'"),
            ("SET k v EX 10 NX XX", "ERR syntax error"),
            ("DEL", "ERR wrong number of arguments for 'del'"),
            ("EXISTS", "ERR wrong number of arguments for 'exists'"),
            ("INCR", "ERR wrong number of arguments for 'incr'"),
            ("INCR a b", "ERR wrong number of arguments for 'incr'"),
            ("INCRBY a b", "ERR value is not an integer or out of range"),
            ("INCRBYFLOAT a nan", "ERR value is not a valid float"),
            ("CAS k v", "ERR wrong number of arguments for 'cas'"),
            ("MGET", "ERR wrong number of arguments for 'mget'"),
            ("MSET", "ERR wrong number of arguments for 'mset'"),
            ("MSET a", "ERR wrong number of arguments for 'mset'"),
            ("MSET a 1 b", "ERR wrong number of arguments for 'mset'"),
            ("HSET h f", "ERR wrong number of arguments for 'hset'"),
            ("HSET h f v g", "ERR wrong number of arguments for 'hset'"),
            ("EXPIRE k 10 NX XX", "ERR NX and XX, GT or LT options at the same time are not compatible"),
            ("EXPIRE k 10 GT LT", "ERR GT and LT options at the same time are not compatible"),
            ("EXPIRE k 10 YY", "ERR Unsupported option YY"),
            ("SCAN x", "ERR invalid cursor"),
            ("SCAN 0 COUNT 0", "ERR syntax error"),
            ("SETRANGE k -1 v", "ERR offset is out of range"),
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
            ("CONFIG SET save x", "ERR unknown subcommand 'SET'. Try CONFIG GET."),
            ("CONFIG GET", "ERR wrong number of arguments for 'config|get'"),
        ];
        for (line, text) in cases {
            assert_eq!(error_of(line), *text, "{line}");
        }
        assert_eq!(
            run("RAFT ADD 4 [::1]:7004 h:6004").unwrap(),
            ClientCommand::Raft(RaftCommand::Add {
                id: NodeId(4),
                raft_addr: "[::1]:7004".into(),
                client_addr: "h:6004".into(),
            })
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
        assert_eq!(cmd(&[b"HSET", b"h", &key_over, b"v"]), too_large("key"));
        assert_eq!(cmd(&[b"HSET", b"h", b"f", &value_over]), too_large("value"));
        assert_eq!(cmd(&[b"SET", b"k", &value_over]).unwrap_err().to_bytes(), b"-ERR value too large\r\n");
    }

    #[test]
    fn binary_keys_and_values_pass_through() {
        let key: Vec<u8> = (0..=255).collect();
        let value = b"\x00\r\n\xff".to_vec();
        let args = vec![b"set".to_vec(), key.clone(), value.clone()];
        assert_eq!(parse(args.clone()).unwrap(), ClientCommand::Write(args.clone()));
        assert_eq!(
            parse_data(&args, 0).unwrap(),
            Cmd::Set { key, value, cond: Cond::Always, get: false, ttl: Ttl::Unchanged }
        );
    }

    #[test]
    fn categories_come_from_the_table() {
        assert_eq!(category(&words("GET k")), Category::Read);
        assert_eq!(category(&words("HSET h f v")), Category::Write);
        assert_eq!(category(&words("FLUSHALL")), Category::Admin);
        assert_eq!(category(&words("CLIENT KILL ID 3")), Category::Admin);
        assert_eq!(category(&words("CLIENT SETNAME x")), Category::Read);
        assert_eq!(category(&words("CONFIG GET save")), Category::Admin);
        assert_eq!(category(&words("RAFT SNAPSHOT")), Category::Admin);
        assert_eq!(category(&words("NOSUCH")), Category::Read);
    }

    /// Every command in the table parses with a minimal valid request, and
    /// the table's classes agree with what the state machine runs.
    #[test]
    fn the_table_and_the_parsers_agree() {
        for spec in table::COMMANDS {
            let mut names: Vec<String> = spec.subcommands.iter().map(|s| s.name.to_string()).collect();
            if names.is_empty() {
                names.push(spec.name.to_string());
            }
            for name in names {
                assert_eq!(name, name.to_lowercase());
                let sub = spec.subcommands.iter().find(|s| s.name == name);
                let class = sub.map_or(spec.class, |s| s.class);
                if matches!(class, Class::Read | Class::Write) {
                    // Data commands with their minimal arity and numeric
                    // arguments parse, so parse_data knows every one.
                    let n = sub.map_or(spec.arity, |s| s.arity).unsigned_abs() as usize;
                    let mut args: Vec<Vec<u8>> = name.split('|').map(|w| w.as_bytes().to_vec()).collect();
                    while args.len() < n {
                        // EVAL's numkeys counts the keys that follow.
                        args.push(if spec.name.starts_with("eval") && args.len() == 2 { b"0" } else { b"1" }.to_vec());
                    }
                    let got = parse_data(&args, 0);
                    assert!(got.is_ok(), "{name}: {got:?}");
                }
            }
        }
    }

    /// `docs/commands.md` holds the table's reference; regenerate with
    /// `RAFTKV_BLESS=1 cargo test --lib command::`.
    #[test]
    fn the_docs_list_every_command() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/commands.md");
        let doc = std::fs::read_to_string(path).unwrap_or_default();
        let (begin, end) = ("<!-- commands: generated from src/command/table.rs -->\n", "<!-- end of commands -->");
        let generated = table::reference_markdown();
        let current = doc.split_once(begin).and_then(|(_, rest)| rest.split_once(end)).map(|(t, _)| t);
        if current != Some(generated.as_str()) {
            if std::env::var_os("RAFTKV_BLESS").is_some() {
                let (head, tail) = match doc.split_once(begin) {
                    Some((h, rest)) => (h.to_string(), rest.split_once(end).map_or("", |(_, t)| t).to_string()),
                    None => (doc.clone(), "\n".to_string()),
                };
                std::fs::write(path, format!("{head}{begin}{generated}{end}{tail}")).unwrap();
            } else {
                panic!(
                    "docs/commands.md is out of date with the command table: RAFTKV_BLESS=1 cargo test --lib command::"
                );
            }
        }
    }
}
