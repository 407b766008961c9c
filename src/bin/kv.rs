//! `kv`: a small client for people without redis-cli.
//!
//! ```text
//! kv [-a HOST:PORT] [--raw] [COMMAND [ARG ...]]
//! ```
//!
//! With a command, sends it, prints the reply the way redis-cli does on a
//! terminal (`OK`, `"b"`, `(integer) 1`, `(nil)`, `(error) ERR ...`, numbered
//! arrays) and exits: 0 after a reply, 1 after an error reply or when the
//! server cannot be reached, 2 on bad flags. Without one, reads lines from
//! standard input (prompting when it is a terminal), splits each into words as
//! the server splits inline commands (quotes allowed), sends each as a RESP
//! array and prints the reply, until end of input or `quit`.

use std::io::{self, BufRead, IsTerminal, Write};
use std::process::ExitCode;

use raftkv::client::Conn;
use raftkv::command::parse_addr;
use raftkv::resp::{Reply, split_args};

const ADDR_DEFAULT: &str = "127.0.0.1:6001";
const USAGE: &str = "usage: kv [-a HOST:PORT] [--raw] [COMMAND [ARG ...]]";

struct Options {
    addr: String,
    raw: bool,
    command: Vec<Vec<u8>>,
}

enum Flags {
    Run(Options),
    Help,
}

fn parse_flags(args: Vec<String>) -> Result<Flags, String> {
    let mut options = Options { addr: ADDR_DEFAULT.to_string(), raw: false, command: Vec::new() };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-a" | "--addr" => {
                let addr = args.next().ok_or(format!("{arg} needs a HOST:PORT value"))?;
                parse_addr(addr.as_bytes()).map_err(|_| format!("invalid address '{addr}': expected HOST:PORT"))?;
                options.addr = addr;
            }
            "--raw" => options.raw = true,
            "-h" | "--help" => return Ok(Flags::Help),
            "--" => break,
            flag if flag.starts_with('-') && flag.len() > 1 => {
                return Err(format!("unknown flag '{flag}'"));
            }
            _ => {
                options.command.push(arg.into_bytes());
                break;
            }
        }
    }
    options.command.extend(args.map(String::into_bytes));
    Ok(Flags::Run(options))
}

// ---------------------------------------------------------------------------
// Printing replies

/// A reply as redis-cli prints it on a terminal. `prefix` indents the lines
/// after the first of a nested array.
fn format_tty(reply: &Reply, prefix: &str, out: &mut Vec<u8>) {
    match reply {
        Reply::Simple(text) => out.extend_from_slice(text.as_bytes()),
        Reply::Error(text) => {
            out.extend_from_slice(b"(error) ");
            out.extend_from_slice(text.as_bytes());
        }
        Reply::Integer(n) => out.extend_from_slice(format!("(integer) {n}").as_bytes()),
        Reply::Bulk(Some(bytes)) => quote_bytes(bytes, out),
        Reply::Value(bytes) => quote_bytes(bytes, out),
        Reply::Bulk(None) | Reply::Array(None) => out.extend_from_slice(b"(nil)"),
        Reply::Map(_)
        | Reply::Set(_)
        | Reply::Verbatim(_)
        | Reply::Bool(_)
        | Reply::Double(_)
        | Reply::BigNumber(_) => {
            return format_tty(&reply.to_resp2(), prefix, out);
        }
        Reply::Array(Some(items)) if items.is_empty() => out.extend_from_slice(b"(empty array)"),
        Reply::Array(Some(items)) => {
            let width = items.len().to_string().len();
            let inner = format!("{prefix}{}", " ".repeat(width + 2));
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(prefix.as_bytes());
                }
                out.extend_from_slice(format!("{:>width$}) ", i + 1).as_bytes());
                format_tty(item, &inner, out);
            }
            return;
        }
    }
    out.push(b'\n');
}

/// Bytes in double quotes with C-style escapes, as redis-cli shows them.
fn quote_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &b in bytes {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x07 => out.extend_from_slice(b"\\a"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x20..=0x7e => out.push(b),
            _ => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
        }
    }
    out.push(b'"');
}

/// A reply as `redis-cli --raw` prints it: bytes as they are, one element of
/// an array per line.
fn format_raw(reply: &Reply, out: &mut Vec<u8>) {
    match reply {
        Reply::Simple(text) | Reply::Error(text) => out.extend_from_slice(text.as_bytes()),
        Reply::Integer(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Reply::Bulk(Some(bytes)) => out.extend_from_slice(bytes),
        Reply::Value(bytes) => out.extend_from_slice(bytes),
        Reply::Bulk(None) | Reply::Array(None) => {}
        Reply::Map(_)
        | Reply::Set(_)
        | Reply::Verbatim(_)
        | Reply::Bool(_)
        | Reply::Double(_)
        | Reply::BigNumber(_) => {
            return format_raw(&reply.to_resp2(), out);
        }
        Reply::Array(Some(items)) => {
            for item in items {
                format_raw(item, out);
            }
            return;
        }
    }
    out.push(b'\n');
}

fn print_reply(reply: &Reply, raw: bool) {
    let mut out = Vec::new();
    if raw {
        format_raw(reply, &mut out);
    } else {
        format_tty(reply, "", &mut out);
    }
    let mut stdout = io::stdout().lock();
    // A closed stdout (kv ... | head) is not worth a panic.
    let _ = stdout.write_all(&out).and_then(|_| stdout.flush());
}

// ---------------------------------------------------------------------------
// Modes

fn run_once(options: &Options) -> ExitCode {
    let result = Conn::open(&options.addr).and_then(|mut c| c.call(&options.command));
    match result {
        Ok(reply) => {
            print_reply(&reply, options.raw);
            if reply.is_error() { ExitCode::from(1) } else { ExitCode::SUCCESS }
        }
        Err(message) => {
            eprintln!("kv: {message}");
            ExitCode::from(1)
        }
    }
}

fn run_interactive(options: &Options) -> ExitCode {
    let mut conn = match Conn::open(&options.addr) {
        Ok(c) => Some(c),
        Err(message) => {
            eprintln!("kv: {message}");
            return ExitCode::from(1);
        }
    };
    let prompt = io::stdin().is_terminal();
    let mut input = io::stdin().lock();
    let mut line = Vec::new();
    loop {
        if prompt {
            print!("{}> ", options.addr);
            let _ = io::stdout().flush();
        }
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => return ExitCode::SUCCESS,
            Ok(_) => {}
            Err(e) => {
                eprintln!("kv: reading standard input: {e}");
                return ExitCode::from(1);
            }
        }
        let Ok(words) = split_args(&line) else {
            eprintln!("Invalid argument(s)");
            continue;
        };
        match words.first() {
            None => continue,
            Some(w) if w.eq_ignore_ascii_case(b"quit") || w.eq_ignore_ascii_case(b"exit") => {
                return ExitCode::SUCCESS;
            }
            Some(_) => {}
        }
        send_interactive(&mut conn, options, &words);
    }
}

/// Sends one command, reconnecting first if the last connection was lost.
fn send_interactive(conn: &mut Option<Conn>, options: &Options, words: &[Vec<u8>]) {
    if conn.is_none() {
        match Conn::open(&options.addr) {
            Ok(c) => *conn = Some(c),
            Err(message) => {
                eprintln!("kv: {message}");
                return;
            }
        }
    }
    let Some(c) = conn.as_mut() else { return };
    match c.call(words) {
        Ok(reply) => print_reply(&reply, options.raw),
        Err(message) => {
            eprintln!("kv: {message}");
            *conn = None;
        }
    }
}

fn main() -> ExitCode {
    let options = match parse_flags(std::env::args().skip(1).collect()) {
        Ok(Flags::Run(options)) => options,
        Ok(Flags::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("kv: {message} ({USAGE})");
            return ExitCode::from(2);
        }
    };
    if options.command.is_empty() { run_interactive(&options) } else { run_once(&options) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tty(reply: &Reply) -> String {
        let mut out = Vec::new();
        format_tty(reply, "", &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn replies_print_like_redis_cli() {
        assert_eq!(tty(&Reply::ok()), "OK\n");
        assert_eq!(tty(&Reply::err("unknown command 'x'")), "(error) ERR unknown command 'x'\n");
        assert_eq!(tty(&Reply::Integer(-3)), "(integer) -3\n");
        assert_eq!(tty(&Reply::nil()), "(nil)\n");
        assert_eq!(tty(&Reply::bulk("b")), "\"b\"\n");
        assert_eq!(
            tty(&Reply::bulk(&b"a\"\\\n\r\t\x07\x08\x00\xff~"[..])),
            "\"a\\\"\\\\\\n\\r\\t\\a\\b\\x00\\xff~\"\n"
        );
        assert_eq!(tty(&Reply::array(vec![])), "(empty array)\n");
        assert_eq!(tty(&Reply::array(vec![Reply::bulk("a"), Reply::nil()])), "1) \"a\"\n2) (nil)\n");
    }

    #[test]
    fn long_and_nested_arrays_align_like_redis_cli() {
        let ten: Vec<Reply> = (1..=10).map(Reply::Integer).collect();
        let text = tty(&Reply::array(ten));
        assert!(text.starts_with(" 1) (integer) 1\n 2) "), "{text}");
        assert!(text.ends_with("10) (integer) 10\n"), "{text}");
        let nested = Reply::array(vec![Reply::array(vec![Reply::bulk("a"), Reply::bulk("b")]), Reply::bulk("c")]);
        assert_eq!(tty(&nested), "1) 1) \"a\"\n   2) \"b\"\n2) \"c\"\n");
    }

    #[test]
    fn raw_output_is_plain() {
        let mut out = Vec::new();
        let reply = Reply::array(vec![Reply::bulk("a"), Reply::nil(), Reply::Integer(2)]);
        format_raw(&reply, &mut out);
        assert_eq!(out, b"a\n\n2\n");
    }

    fn flags(args: &[&str]) -> Result<Flags, String> {
        parse_flags(args.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn flags_are_parsed_until_the_command() {
        let Ok(Flags::Run(o)) = flags(&["-a", "h:1", "--raw", "GET", "-a"]) else {
            panic!("flags should parse");
        };
        assert_eq!(o.addr, "h:1");
        assert!(o.raw);
        assert_eq!(o.command, vec![b"GET".to_vec(), b"-a".to_vec()]);
        let Ok(Flags::Run(o)) = flags(&[]) else {
            panic!("no flags should parse");
        };
        assert_eq!(o.addr, ADDR_DEFAULT);
        assert!(o.command.is_empty());
        assert!(matches!(flags(&["--help"]), Ok(Flags::Help)));
        assert_eq!(flags(&["-x"]).err().unwrap(), "unknown flag '-x'");
        assert_eq!(flags(&["-a"]).err().unwrap(), "-a needs a HOST:PORT value");
        assert_eq!(flags(&["-a", "nohost"]).err().unwrap(), "invalid address 'nohost': expected HOST:PORT");
    }
}
