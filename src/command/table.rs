//! The command table: one entry per command, the single place a command is
//! declared. It drives parsing (which class serves it, arity), permissions
//! (the ACL category a role needs), `COMMAND` and `COMMAND DOCS`, and the
//! reference in `docs/commands.md`, which a test keeps equal to
//! [`reference_markdown`].

pub use crate::auth::Category;

/// Who serves a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Reads the data: after a read index, or locally under READONLY.
    Read,
    /// Changes the data: through the log, answered at apply.
    Write,
    /// The connection itself (HELLO, AUTH, CLIENT, MULTI, WATCH, ...).
    Connection,
    /// The node: its state or the Raft core (INFO, RAFT).
    Node,
    /// Answered at once from the arguments (PING, ECHO, COMMAND, ...).
    Immediate,
}

pub struct Spec {
    /// Lowercase, as COMMAND reports it; `parent|sub` for a subcommand.
    pub name: &'static str,
    /// Redis's arity: `n` exactly n arguments (the name counted), `-n` at
    /// least n.
    pub arity: i32,
    pub flags: &'static [&'static str],
    /// First key, last key (-1: the last argument), step; 0 0 0 for none.
    pub keys: (i32, i32, i32),
    pub class: Class,
    pub category: Category,
    /// Redis's documentation group.
    pub group: &'static str,
    /// The arguments after the name, for the docs.
    pub syntax: &'static str,
    pub summary: &'static str,
    pub subcommands: &'static [Spec],
}

impl Spec {
    pub fn arity_ok(&self, n: usize) -> bool {
        let n = n as i32;
        if self.arity >= 0 { n == self.arity } else { n >= -self.arity }
    }

    /// The ACL categories COMMAND reports.
    pub fn acl_categories(&self) -> Vec<String> {
        let mut out = vec![format!("@{}", self.group_category())];
        out.push(
            match self.category {
                Category::Read => "@read",
                Category::Write => "@write",
                Category::Admin => "@admin",
            }
            .to_string(),
        );
        if self.flags.contains(&"fast") {
            out.push("@fast".into());
        } else {
            out.push("@slow".into());
        }
        out
    }

    fn group_category(&self) -> &'static str {
        match self.group {
            "generic" => "keyspace",
            "transactions" => "transaction",
            g => g,
        }
    }
}

const R: Category = Category::Read;
const W: Category = Category::Write;
const A: Category = Category::Admin;
const NONE: (i32, i32, i32) = (0, 0, 0);
const ONE: (i32, i32, i32) = (1, 1, 1);
const ALL: (i32, i32, i32) = (1, -1, 1);

#[allow(clippy::too_many_arguments)]
const fn spec(
    name: &'static str,
    arity: i32,
    flags: &'static [&'static str],
    keys: (i32, i32, i32),
    class: Class,
    category: Category,
    group: &'static str,
    syntax: &'static str,
    summary: &'static str,
) -> Spec {
    Spec { name, arity, flags, keys, class, category, group, syntax, summary, subcommands: &[] }
}

const fn read(
    name: &'static str,
    arity: i32,
    fast: bool,
    keys: (i32, i32, i32),
    group: &'static str,
    syntax: &'static str,
    summary: &'static str,
) -> Spec {
    let flags: &'static [&'static str] = if fast { &["readonly", "fast"] } else { &["readonly"] };
    spec(name, arity, flags, keys, Class::Read, R, group, syntax, summary)
}

const fn write(
    name: &'static str,
    arity: i32,
    fast: bool,
    keys: (i32, i32, i32),
    group: &'static str,
    syntax: &'static str,
    summary: &'static str,
) -> Spec {
    let flags: &'static [&'static str] = if fast { &["write", "denyoom", "fast"] } else { &["write", "denyoom"] };
    spec(name, arity, flags, keys, Class::Write, W, group, syntax, summary)
}

const CONN_FLAGS: &[&str] = &["noscript", "loading", "stale", "fast"];
const TX_FLAGS: &[&str] = &["noscript", "loading", "stale", "fast", "allow_busy"];

const fn conn(
    name: &'static str,
    arity: i32,
    group: &'static str,
    syntax: &'static str,
    summary: &'static str,
) -> Spec {
    let flags = if matches!(group.as_bytes(), b"transactions") { TX_FLAGS } else { CONN_FLAGS };
    spec(name, arity, flags, NONE, Class::Connection, R, group, syntax, summary)
}

const fn sub(
    name: &'static str,
    arity: i32,
    class: Class,
    category: Category,
    group: &'static str,
    syntax: &'static str,
    summary: &'static str,
) -> Spec {
    spec(name, arity, &["loading", "stale"], NONE, class, category, group, syntax, summary)
}

const STR: &str = "string";
const GEN: &str = "generic";
const HASH: &str = "hash";

pub static COMMANDS: &[Spec] = &[
    // Strings
    read("get", 2, true, ONE, STR, "key", "The value of a key; null when absent."),
    write(
        "set",
        -3,
        false,
        ONE,
        STR,
        "key value [NX|XX] [GET] [EX s|PX ms|EXAT t|PXAT t|KEEPTTL]",
        "Sets a key's value, with a condition, a deadline, or the old value returned.",
    ),
    write("setnx", 3, true, ONE, STR, "key value", "Sets a key only if it is absent: 1 if set, 0 if not."),
    write("setex", 4, false, ONE, STR, "key seconds value", "Sets a key with a time to live in seconds."),
    write("psetex", 4, false, ONE, STR, "key milliseconds value", "Sets a key with a time to live in milliseconds."),
    write("getset", 3, true, ONE, STR, "key value", "Sets a key and returns its old value."),
    write("getdel", 2, true, ONE, STR, "key", "Returns a key's value and deletes the key."),
    write(
        "getex",
        -2,
        true,
        ONE,
        STR,
        "key [EX s|PX ms|EXAT t|PXAT t|PERSIST]",
        "Returns a key's value, changing its deadline.",
    ),
    read(
        "mget",
        -2,
        true,
        ALL,
        STR,
        "key [key ...]",
        "The values of several keys; null for absent ones and non-strings.",
    ),
    write("mset", -3, false, (1, -1, 2), STR, "key value [key value ...]", "Sets several keys at once."),
    write(
        "msetnx",
        -3,
        false,
        (1, -1, 2),
        STR,
        "key value [key value ...]",
        "Sets several keys only if none exists: 1 if set, 0 if not.",
    ),
    write("append", 3, true, ONE, STR, "key value", "Appends to a string; the new length."),
    read("strlen", 2, true, ONE, STR, "key", "The length of a string; 0 when absent."),
    read("getrange", 4, false, ONE, STR, "key start end", "A substring, by inclusive offsets (negative from the end)."),
    read("substr", 4, false, ONE, STR, "key start end", "GETRANGE under its old name."),
    write(
        "setrange",
        4,
        false,
        ONE,
        STR,
        "key offset value",
        "Overwrites part of a string, padding with zero bytes; the new length.",
    ),
    write("incr", 2, true, ONE, STR, "key", "Adds 1 to an integer (absent counts as 0); the new value."),
    write("decr", 2, true, ONE, STR, "key", "Subtracts 1 from an integer; the new value."),
    write("incrby", 3, true, ONE, STR, "key increment", "Adds an integer; the new value."),
    write("decrby", 3, true, ONE, STR, "key decrement", "Subtracts an integer; the new value."),
    write(
        "incrbyfloat",
        3,
        true,
        ONE,
        STR,
        "key increment",
        "Adds a floating-point number; the new value as a string.",
    ),
    write(
        "cas",
        4,
        true,
        ONE,
        STR,
        "key expected new",
        "raftkv's compare-and-set: 1 if the value was `expected` and is now `new`, else 0.",
    ),
    // Keys
    spec("del", -2, &["write"], ALL, Class::Write, W, GEN, "key [key ...]", "Deletes keys; how many existed."),
    spec(
        "unlink",
        -2,
        &["write", "fast"],
        ALL,
        Class::Write,
        W,
        GEN,
        "key [key ...]",
        "DEL, under the name Redis gives its non-blocking delete.",
    ),
    read("exists", -2, true, ALL, GEN, "key [key ...]", "How many of the keys exist (repeats count)."),
    spec(
        "expire",
        -3,
        &["write", "fast"],
        ONE,
        Class::Write,
        W,
        GEN,
        "key seconds [NX|XX|GT|LT]",
        "Sets a time to live in seconds: 1 if set, 0 if not.",
    ),
    spec(
        "pexpire",
        -3,
        &["write", "fast"],
        ONE,
        Class::Write,
        W,
        GEN,
        "key milliseconds [NX|XX|GT|LT]",
        "Sets a time to live in milliseconds.",
    ),
    spec(
        "expireat",
        -3,
        &["write", "fast"],
        ONE,
        Class::Write,
        W,
        GEN,
        "key unix-seconds [NX|XX|GT|LT]",
        "Sets a deadline in Unix seconds.",
    ),
    spec(
        "pexpireat",
        -3,
        &["write", "fast"],
        ONE,
        Class::Write,
        W,
        GEN,
        "key unix-milliseconds [NX|XX|GT|LT]",
        "Sets a deadline in Unix milliseconds.",
    ),
    read("ttl", 2, true, ONE, GEN, "key", "Seconds left to live; -1 without a deadline, -2 when absent."),
    read("pttl", 2, true, ONE, GEN, "key", "Milliseconds left to live; -1 without a deadline, -2 when absent."),
    read("expiretime", 2, true, ONE, GEN, "key", "The deadline in Unix seconds; -1 without one, -2 when absent."),
    read("pexpiretime", 2, true, ONE, GEN, "key", "The deadline in Unix milliseconds; -1 without one, -2 when absent."),
    spec(
        "persist",
        2,
        &["write", "fast"],
        ONE,
        Class::Write,
        W,
        GEN,
        "key",
        "Removes a key's deadline: 1 if it had one.",
    ),
    read("type", 2, true, ONE, GEN, "key", "`string`, `hash`, or `none`."),
    spec(
        "rename",
        3,
        &["write"],
        (1, 2, 1),
        Class::Write,
        W,
        GEN,
        "key newkey",
        "Renames a key, replacing newkey; keeps the deadline.",
    ),
    spec(
        "renamenx",
        3,
        &["write", "fast"],
        (1, 2, 1),
        Class::Write,
        W,
        GEN,
        "key newkey",
        "Renames a key only if newkey is absent: 1 if renamed.",
    ),
    read(
        "keys",
        2,
        false,
        NONE,
        GEN,
        "pattern",
        "Every key matching a glob pattern (served from a copy, off the core thread).",
    ),
    read(
        "scan",
        -2,
        false,
        NONE,
        GEN,
        "cursor [MATCH pattern] [COUNT n] [TYPE type]",
        "Iterates the keys: every key present for the whole scan is returned at least once.",
    ),
    read("randomkey", 1, false, NONE, GEN, "", "A random key; null when there is none."),
    // Hashes
    write(
        "hset",
        -4,
        true,
        ONE,
        HASH,
        "key field value [field value ...]",
        "Sets fields of a hash; how many were new.",
    ),
    write(
        "hmset",
        -4,
        true,
        ONE,
        HASH,
        "key field value [field value ...]",
        "HSET answering +OK, as older clients expect.",
    ),
    write("hsetnx", 4, true, ONE, HASH, "key field value", "Sets a field only if absent: 1 if set."),
    read("hget", 3, true, ONE, HASH, "key field", "A field's value; null when absent."),
    read("hmget", -3, true, ONE, HASH, "key field [field ...]", "Several fields' values."),
    read("hgetall", 2, false, ONE, HASH, "key", "Every field and value (a map in RESP3)."),
    spec(
        "hdel",
        -3,
        &["write", "fast"],
        ONE,
        Class::Write,
        W,
        HASH,
        "key field [field ...]",
        "Deletes fields; how many existed. An emptied hash is deleted.",
    ),
    read("hexists", 3, true, ONE, HASH, "key field", "1 if the field exists."),
    read("hlen", 2, true, ONE, HASH, "key", "How many fields."),
    read("hkeys", 2, false, ONE, HASH, "key", "Every field."),
    read("hvals", 2, false, ONE, HASH, "key", "Every value."),
    read("hstrlen", 3, true, ONE, HASH, "key field", "The length of a field's value."),
    write("hincrby", 4, true, ONE, HASH, "key field increment", "Adds an integer to a field; the new value."),
    read(
        "hscan",
        -3,
        false,
        ONE,
        HASH,
        "key cursor [MATCH pattern] [COUNT n]",
        "Iterates a hash's fields and values (in one reply).",
    ),
    // Scripts
    spec(
        "eval",
        -3,
        &["noscript", "stale", "skip_monitor", "may_replicate", "no_mandatory_keys", "movablekeys"],
        NONE,
        Class::Write,
        W,
        "scripting",
        "script numkeys [key ...] [arg ...]",
        "Runs a Lua 5.1 script, as one log entry on every node.",
    ),
    spec(
        "evalsha",
        -3,
        &["noscript", "stale", "skip_monitor", "may_replicate", "no_mandatory_keys", "movablekeys"],
        NONE,
        Class::Write,
        W,
        "scripting",
        "sha1 numkeys [key ...] [arg ...]",
        "Runs a loaded script by its SHA-1; -NOSCRIPT if none.",
    ),
    spec(
        "eval_ro",
        -3,
        &["noscript", "stale", "skip_monitor", "no_mandatory_keys", "movablekeys", "readonly"],
        NONE,
        Class::Read,
        R,
        "scripting",
        "script numkeys [key ...] [arg ...]",
        "Runs a script that only reads, served like a read.",
    ),
    spec(
        "evalsha_ro",
        -3,
        &["noscript", "stale", "skip_monitor", "no_mandatory_keys", "movablekeys", "readonly"],
        NONE,
        Class::Read,
        R,
        "scripting",
        "sha1 numkeys [key ...] [arg ...]",
        "EVAL_RO by SHA-1.",
    ),
    Spec {
        name: "script",
        arity: -2,
        flags: &["noscript"],
        keys: NONE,
        class: Class::Write,
        category: W,
        group: "scripting",
        syntax: "LOAD|EXISTS|FLUSH ...",
        summary: "The scripts loaded, the same on every node.",
        subcommands: &[
            sub("script|load", 3, Class::Write, W, "scripting", "script", "Loads a script on every node; its SHA-1."),
            sub(
                "script|exists",
                -3,
                Class::Read,
                R,
                "scripting",
                "sha1 [sha1 ...]",
                "1 for each script loaded, 0 otherwise.",
            ),
            sub("script|flush", -2, Class::Write, W, "scripting", "[ASYNC|SYNC]", "Forgets every script."),
        ],
    },
    // Transactions
    conn("multi", 1, "transactions", "", "Starts a transaction: the commands that follow are queued."),
    conn(
        "exec",
        1,
        "transactions",
        "",
        "Applies the queued commands as one log entry, or nothing if a watched key changed.",
    ),
    conn("discard", 1, "transactions", "", "Forgets the queued commands."),
    spec(
        "watch",
        -2,
        TX_FLAGS,
        ALL,
        Class::Connection,
        R,
        "transactions",
        "key [key ...]",
        "EXEC will apply nothing if one of these keys changes first.",
    ),
    conn("unwatch", 1, "transactions", "", "Forgets the watched keys."),
    // Connection
    spec("ping", -1, &["fast"], NONE, Class::Immediate, R, "connection", "[message]", "PONG, or the message."),
    spec("echo", 2, &["fast"], NONE, Class::Immediate, R, "connection", "message", "The message."),
    conn(
        "hello",
        -1,
        "connection",
        "[protover [AUTH username password] [SETNAME clientname]]",
        "Chooses RESP2 or RESP3, authenticates, names the connection; the server's description.",
    ),
    conn("auth", -2, "connection", "[user] password", "Authenticates the connection (with --users)."),
    conn("select", 2, "connection", "index", "Only database 0 exists."),
    conn("reset", 1, "connection", "", "Back to a fresh connection: no transaction, no watch, RESP2, READWRITE."),
    conn("quit", -1, "connection", "", "+OK, then the connection closes."),
    conn(
        "readonly",
        1,
        "connection",
        "",
        "This connection's reads come from the node's own copy: fast, possibly stale.",
    ),
    conn("readwrite", 1, "connection", "", "This connection's reads are linearizable again."),
    Spec {
        name: "client",
        arity: -2,
        flags: &["loading", "stale"],
        keys: NONE,
        class: Class::Connection,
        category: R,
        group: "connection",
        syntax: "subcommand [argument ...]",
        summary: "The connection's name and the connected clients.",
        subcommands: &[
            sub("client|setname", 3, Class::Connection, R, "connection", "name", "Names the connection."),
            sub("client|getname", 2, Class::Connection, R, "connection", "", "The connection's name."),
            sub("client|id", 2, Class::Connection, R, "connection", "", "The connection's id."),
            sub("client|info", 2, Class::Connection, R, "connection", "", "This connection, as a CLIENT LIST line."),
            sub(
                "client|list",
                -2,
                Class::Connection,
                R,
                "connection",
                "[TYPE normal] [ID id ...]",
                "Every connection, one line each.",
            ),
            sub(
                "client|kill",
                -3,
                Class::Connection,
                A,
                "connection",
                "ID id | ADDR ip:port",
                "Closes connections (admin role).",
            ),
            sub(
                "client|setinfo",
                4,
                Class::Connection,
                R,
                "connection",
                "LIB-NAME libname | LIB-VER libver",
                "What the client library says it is.",
            ),
            sub("client|no-evict", 3, Class::Connection, R, "connection", "ON|OFF", "Accepted; nothing is evicted."),
            sub(
                "client|tracking",
                -3,
                Class::Connection,
                R,
                "connection",
                "OFF",
                "Only OFF: client-side caching is not offered.",
            ),
        ],
    },
    // Server
    read("dbsize", 1, true, NONE, "server", "", "How many keys are stored."),
    spec("flushdb", -1, &["write"], NONE, Class::Write, A, "server", "[ASYNC|SYNC]", "Deletes every key (admin role)."),
    spec(
        "flushall",
        -1,
        &["write"],
        NONE,
        Class::Write,
        A,
        "server",
        "[ASYNC|SYNC]",
        "FLUSHDB: there is one database.",
    ),
    spec(
        "info",
        -1,
        &["loading", "stale"],
        NONE,
        Class::Node,
        R,
        "server",
        "[section ...]",
        "The node's state, Redis-style sections plus raft and storage.",
    ),
    spec(
        "role",
        1,
        &["noscript", "loading", "stale", "fast"],
        NONE,
        Class::Node,
        R,
        "server",
        "",
        "`master` with its replicas on the leader, `slave` with the leader's address elsewhere.",
    ),
    Spec {
        name: "sentinel",
        arity: -2,
        flags: &["loading", "stale"],
        keys: NONE,
        class: Class::Node,
        category: R,
        group: "sentinel",
        syntax: "subcommand [name]",
        summary: "Redis Sentinel's view of the cluster: the leader as the master of `raftkv`.",
        subcommands: &[
            sub(
                "sentinel|get-master-addr-by-name",
                3,
                Class::Node,
                R,
                "sentinel",
                "raftkv",
                "The leader's client address, host and port.",
            ),
            sub("sentinel|masters", 2, Class::Node, R, "sentinel", "", "The master's state, as Sentinel lists it."),
            sub("sentinel|master", 3, Class::Node, R, "sentinel", "raftkv", "The master's state."),
            sub(
                "sentinel|replicas",
                3,
                Class::Node,
                R,
                "sentinel",
                "raftkv",
                "The other members, with their offsets (log indexes).",
            ),
            sub("sentinel|slaves", 3, Class::Node, R, "sentinel", "raftkv", "SENTINEL REPLICAS under its old name."),
            sub(
                "sentinel|sentinels",
                3,
                Class::Node,
                R,
                "sentinel",
                "raftkv",
                "The other nodes, each answering these commands.",
            ),
            sub(
                "sentinel|ckquorum",
                3,
                Class::Node,
                R,
                "sentinel",
                "raftkv",
                "Always OK: the members are the sentinels.",
            ),
            sub("sentinel|myid", 2, Class::Node, R, "sentinel", "", "This node's id."),
        ],
    },
    spec(
        "time",
        1,
        &["loading", "stale", "fast"],
        NONE,
        Class::Immediate,
        R,
        "server",
        "",
        "This node's clock: seconds and microseconds.",
    ),
    Spec {
        name: "command",
        arity: -1,
        flags: &["loading", "stale"],
        keys: NONE,
        class: Class::Immediate,
        category: R,
        group: "server",
        syntax: "[COUNT|LIST|INFO name ...|DOCS name ...]",
        summary: "This table: every command with its arity, flags and keys.",
        subcommands: &[
            sub("command|count", 2, Class::Immediate, R, "server", "", "How many commands."),
            sub("command|list", -2, Class::Immediate, R, "server", "", "Every command's name."),
            sub("command|info", -2, Class::Immediate, R, "server", "[name ...]", "Entries of the table."),
            sub(
                "command|docs",
                -2,
                Class::Immediate,
                R,
                "server",
                "[name ...]",
                "Summaries, groups and argument specs.",
            ),
        ],
    },
    Spec {
        name: "config",
        arity: -2,
        flags: &["admin", "noscript", "loading", "stale"],
        keys: NONE,
        class: Class::Connection,
        category: A,
        group: "server",
        syntax: "GET parameter [parameter ...]",
        summary: "The node's settings, read only (admin role).",
        subcommands: &[sub(
            "config|get",
            -3,
            Class::Connection,
            A,
            "server",
            "parameter [parameter ...]",
            "Settings matching glob patterns.",
        )],
    },
    Spec {
        name: "raft",
        arity: -2,
        flags: &["admin", "noscript"],
        keys: NONE,
        class: Class::Node,
        category: A,
        group: "raft",
        syntax: "ADD|REMOVE|TRANSFER|SNAPSHOT ...",
        summary: "Membership, leadership and snapshots (admin role).",
        subcommands: &[
            sub(
                "raft|add",
                5,
                Class::Node,
                A,
                "raft",
                "id raft_addr client_addr",
                "Adds a member (joint consensus); +OK once committed.",
            ),
            sub("raft|remove", 3, Class::Node, A, "raft", "id", "Removes a member; +OK once committed."),
            sub("raft|transfer", 3, Class::Node, A, "raft", "id", "Hands leadership to a voter; +OK once it leads."),
            sub(
                "raft|snapshot",
                2,
                Class::Node,
                A,
                "raft",
                "",
                "Takes a snapshot here and compacts the log; +OK once one holding all applied when asked is durable.",
            ),
        ],
    },
];

/// The entry for a command name, in any case.
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    COMMANDS.iter().find(|s| s.name.as_bytes().eq_ignore_ascii_case(name))
}

/// A container's subcommand, by name in any case.
pub fn lookup_sub(spec: &'static Spec, sub: &[u8]) -> Option<&'static Spec> {
    spec.subcommands.iter().find(|s| s.name.rsplit('|').next().is_some_and(|n| n.as_bytes().eq_ignore_ascii_case(sub)))
}

/// The command reference of `docs/commands.md`, generated from the table.
pub fn reference_markdown() -> String {
    let mut out = String::new();
    let mut group = "";
    for spec in COMMANDS {
        if spec.group != group {
            group = spec.group;
            out.push_str(&format!(
                "\n### {}\n\n| command | role | what it does |\n| --- | --- | --- |\n",
                group_title(group)
            ));
        }
        let role = |c: Category| match c {
            Category::Read => "read",
            Category::Write => "write",
            Category::Admin => "admin",
        };
        if spec.subcommands.is_empty() {
            let syntax = if spec.syntax.is_empty() { String::new() } else { format!(" {}", spec.syntax) };
            let cell = format!("{}{}", spec.name.to_uppercase(), syntax).replace('|', "\\|");
            out.push_str(&format!("| `{cell}` | {} | {} |\n", role(spec.category), spec.summary));
        }
        for s in spec.subcommands {
            let name = s.name.replace('|', " ").to_uppercase();
            let syntax = if s.syntax.is_empty() { String::new() } else { format!(" {}", s.syntax) };
            let cell = format!("{name}{syntax}").replace('|', "\\|");
            out.push_str(&format!("| `{cell}` | {} | {} |\n", role(s.category), s.summary));
        }
    }
    out
}

fn group_title(group: &str) -> &'static str {
    match group {
        "string" => "Strings",
        "generic" => "Keys",
        "hash" => "Hashes",
        "transactions" => "Transactions",
        "scripting" => "Scripts",
        "sentinel" => "Sentinel",
        "connection" => "Connection",
        "server" => "Server",
        _ => "Raft",
    }
}
