//! Replies, in either protocol a connection speaks: RESP2 by default, RESP3
//! after `HELLO 3` (docs/commands.md).
//!
//! A reply is built once, in RESP3's richer shape (a map is a map, a set a
//! set), and encoded for the connection: RESP2 flattens a map into an array
//! of alternating keys and values, a set into an array, a verbatim string
//! into a bulk string, as Redis does.

use std::fmt;
use std::sync::Arc;

/// The protocol a connection speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Proto {
    #[default]
    Resp2,
    Resp3,
}

impl Proto {
    pub fn version(self) -> i64 {
        match self {
            Proto::Resp2 => 2,
            Proto::Resp3 => 3,
        }
    }
}

#[derive(Clone, Debug)]
pub enum Reply {
    /// `+text`. The text must be one line; a CR or LF is sent as a space.
    Simple(String),
    /// `-text`, e.g. `ERR unknown command 'x'`; one line, as `Simple`.
    Error(String),
    Integer(i64),
    /// `$len` and the bytes; `None` is the null bulk (`$-1`, RESP3 `_`).
    Bulk(Option<Vec<u8>>),
    /// `*count` and the elements; `None` is the null array (`*-1`, RESP3 `_`).
    Array(Option<Vec<Reply>>),
    /// A bulk string shared with the store, so that reading a value (or
    /// five hundred) copies no byte on the core thread; sent as `Bulk`.
    Value(Arc<[u8]>),
    /// RESP3 `%`: pairs in the order given; RESP2 gets them flattened.
    Map(Vec<(Reply, Reply)>),
    /// RESP3 `~`; RESP2 gets an array.
    Set(Vec<Reply>),
    /// RESP3 `=` with the format `txt` (INFO, CLIENT LIST); RESP2 gets a
    /// bulk string.
    Verbatim(String),
    /// RESP3 `#t` or `#f`; RESP2 gets `:1` or `:0`.
    Bool(bool),
    /// RESP3 `,`; RESP2 gets a bulk string of the same text
    /// ([`double_text`]).
    Double(f64),
    /// RESP3 `(`: an integer of any size, in decimal; RESP2 gets a bulk
    /// string.
    BigNumber(String),
}

impl PartialEq for Reply {
    /// A shared value equals the bulk string of the same bytes.
    fn eq(&self, other: &Reply) -> bool {
        match (self, other) {
            (Reply::Simple(a), Reply::Simple(b)) | (Reply::Error(a), Reply::Error(b)) => a == b,
            (Reply::Verbatim(a), Reply::Verbatim(b)) | (Reply::BigNumber(a), Reply::BigNumber(b)) => a == b,
            (Reply::Bool(a), Reply::Bool(b)) => a == b,
            (Reply::Double(a), Reply::Double(b)) => a == b || (a.is_nan() && b.is_nan()),
            (Reply::Integer(a), Reply::Integer(b)) => a == b,
            (Reply::Array(a), Reply::Array(b)) => a == b,
            (Reply::Map(a), Reply::Map(b)) => a == b,
            (Reply::Set(a), Reply::Set(b)) => a == b,
            (Reply::Value(a), Reply::Value(b)) => a == b,
            (Reply::Bulk(a), Reply::Bulk(b)) => a == b,
            (Reply::Value(a), Reply::Bulk(Some(b))) | (Reply::Bulk(Some(b)), Reply::Value(a)) => a[..] == b[..],
            _ => false,
        }
    }
}

impl Eq for Reply {}

impl Reply {
    pub fn ok() -> Reply {
        Reply::Simple("OK".to_string())
    }

    /// `-ERR message`.
    pub fn err(message: impl fmt::Display) -> Reply {
        Reply::Error(format!("ERR {message}"))
    }

    pub fn bulk(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply::Bulk(Some(bytes.into()))
    }

    pub fn nil() -> Reply {
        Reply::Bulk(None)
    }

    pub fn array(items: Vec<Reply>) -> Reply {
        Reply::Array(Some(items))
    }

    /// A map with text keys, the shape of HELLO, CONFIG GET, COMMAND DOCS.
    pub fn map<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Reply)>) -> Reply {
        Reply::Map(pairs.into_iter().map(|(k, v)| (Reply::bulk(k.into().into_bytes()), v)).collect())
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// Appends the RESP2 encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        self.encode_as(Proto::Resp2, out)
    }

    /// Appends the encoding in `proto` to `out`.
    pub fn encode_as(&self, proto: Proto, out: &mut Vec<u8>) {
        let resp3 = proto == Proto::Resp3;
        match self {
            Reply::Simple(s) => encode_line(out, b'+', s),
            Reply::Error(s) => encode_line(out, b'-', s),
            Reply::Integer(n) => header(out, b':', *n),
            Reply::Bulk(None) | Reply::Array(None) if resp3 => out.extend_from_slice(b"_\r\n"),
            Reply::Bulk(None) => out.extend_from_slice(b"$-1\r\n"),
            Reply::Array(None) => out.extend_from_slice(b"*-1\r\n"),
            Reply::Bulk(Some(bytes)) => encode_bulk(out, b'$', bytes),
            Reply::Value(bytes) => encode_bulk(out, b'$', bytes),
            Reply::Verbatim(text) if resp3 => {
                header(out, b'=', text.len() as i64 + 4);
                out.extend_from_slice(b"txt:");
                out.extend_from_slice(text.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Reply::Verbatim(text) => encode_bulk(out, b'$', text.as_bytes()),
            Reply::Bool(b) if resp3 => out.extend_from_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
            Reply::Bool(b) => header(out, b':', *b as i64),
            Reply::Double(x) if resp3 => encode_line(out, b',', &double_text(*x)),
            Reply::Double(x) => encode_bulk(out, b'$', double_text(*x).as_bytes()),
            Reply::BigNumber(n) if resp3 => encode_line(out, b'(', n),
            Reply::BigNumber(n) => encode_bulk(out, b'$', n.as_bytes()),
            Reply::Array(Some(items)) => encode_items(out, b'*', items, proto),
            Reply::Set(items) => encode_items(out, if resp3 { b'~' } else { b'*' }, items, proto),
            Reply::Map(pairs) => {
                if resp3 {
                    header(out, b'%', pairs.len() as i64);
                } else {
                    header(out, b'*', 2 * pairs.len() as i64);
                }
                for (k, v) in pairs {
                    k.encode_as(proto, out);
                    v.encode_as(proto, out);
                }
            }
        }
    }

    /// The bytes `encode_as` would write, without writing them (the RESP2
    /// length, within a few bytes of RESP3's).
    pub fn encoded_len(&self) -> usize {
        let digits = |n: usize| n.to_string().len();
        match self {
            Reply::Simple(s) | Reply::Error(s) => 3 + s.len(),
            Reply::Integer(n) => 3 + n.to_string().len(),
            Reply::Bulk(None) | Reply::Array(None) => 5,
            Reply::Bulk(Some(b)) => 5 + digits(b.len()) + b.len(),
            Reply::Value(b) => 5 + digits(b.len()) + b.len(),
            Reply::Verbatim(t) | Reply::BigNumber(t) => 5 + digits(t.len()) + t.len(),
            Reply::Bool(_) => 4,
            Reply::Double(x) => 5 + 2 * double_text(*x).len(),
            Reply::Array(Some(items)) | Reply::Set(items) => {
                3 + digits(items.len()) + items.iter().map(Reply::encoded_len).sum::<usize>()
            }
            Reply::Map(pairs) => {
                3 + digits(2 * pairs.len())
                    + pairs.iter().map(|(k, v)| k.encoded_len() + v.encoded_len()).sum::<usize>()
            }
        }
    }

    /// What is left of `budget` bytes once the reply is encoded (either
    /// protocol), or `None` if it does not fit: a bound on what
    /// [`Reply::encoded_len`] says, a few bytes over an element, found
    /// without allocating and stopping as soon as the budget is spent,
    /// however large the reply.
    pub fn spend_within(&self, budget: usize) -> Option<usize> {
        // A header: a type byte, up to 20 digits, CRLF; data adds its CRLF.
        const HEAD: usize = 24;
        let items = |budget: usize, replies: &mut dyn Iterator<Item = &Reply>| {
            let mut left = budget.checked_sub(HEAD)?;
            for r in replies {
                left = r.spend_within(left)?;
            }
            Some(left)
        };
        match self {
            Reply::Simple(t) | Reply::Error(t) | Reply::Verbatim(t) | Reply::BigNumber(t) => {
                budget.checked_sub(HEAD + 8 + t.len())
            }
            Reply::Bulk(Some(b)) => budget.checked_sub(HEAD + 2 + b.len()),
            Reply::Value(b) => budget.checked_sub(HEAD + 2 + b.len()),
            Reply::Integer(_) | Reply::Bulk(None) | Reply::Array(None) | Reply::Bool(_) | Reply::Double(_) => {
                budget.checked_sub(2 * HEAD + 2)
            }
            Reply::Array(Some(list)) | Reply::Set(list) => items(budget, &mut list.iter()),
            Reply::Map(pairs) => items(budget, &mut pairs.iter().flat_map(|(k, v)| [k, v])),
        }
    }

    /// The reply as RESP2 carries it: maps and sets as arrays, verbatim
    /// text as a bulk string.
    pub fn to_resp2(&self) -> Reply {
        match self {
            Reply::Map(pairs) => Reply::array(pairs.iter().flat_map(|(k, v)| [k.to_resp2(), v.to_resp2()]).collect()),
            Reply::Set(items) | Reply::Array(Some(items)) => Reply::array(items.iter().map(Reply::to_resp2).collect()),
            Reply::Verbatim(text) | Reply::BigNumber(text) => Reply::bulk(text.as_bytes().to_vec()),
            Reply::Bool(b) => Reply::Integer(*b as i64),
            Reply::Double(x) => Reply::bulk(double_text(*x)),
            other => other.clone(),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    pub fn to_bytes_as(&self, proto: Proto) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_as(proto, &mut out);
        out
    }
}

/// A double as Redis writes it: the shortest text that reads back as the
/// same number, integral values without a fraction, `inf`, `-inf`, `nan`.
pub fn double_text(x: f64) -> String {
    if x.is_nan() {
        "nan".to_string()
    } else if x.is_infinite() {
        if x > 0.0 { "inf" } else { "-inf" }.to_string()
    } else if x == x.trunc() && x.abs() < 1e17 {
        format!("{}", x as i64)
    } else {
        format!("{x:?}")
    }
}

fn header(out: &mut Vec<u8>, kind: u8, n: i64) {
    out.push(kind);
    out.extend_from_slice(n.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn encode_bulk(out: &mut Vec<u8>, kind: u8, bytes: &[u8]) {
    header(out, kind, bytes.len() as i64);
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

fn encode_items(out: &mut Vec<u8>, kind: u8, items: &[Reply], proto: Proto) {
    header(out, kind, items.len() as i64);
    for item in items {
        item.encode_as(proto, out);
    }
}

/// A simple string or error line; a CR or LF inside (say, from a command
/// name echoed back) would end the line early and desynchronize the client,
/// so it becomes a space, as Redis does.
fn encode_line(out: &mut Vec<u8>, prefix: u8, text: &str) {
    out.push(prefix);
    out.extend(text.bytes().map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp3_shapes_flatten_for_resp2() {
        let hello = Reply::map([("proto", Reply::Integer(3)), ("modules", Reply::array(vec![]))]);
        assert_eq!(hello.to_bytes_as(Proto::Resp3), b"%2\r\n$5\r\nproto\r\n:3\r\n$7\r\nmodules\r\n*0\r\n");
        assert_eq!(hello.to_bytes(), b"*4\r\n$5\r\nproto\r\n:3\r\n$7\r\nmodules\r\n*0\r\n");
        let set = Reply::Set(vec![Reply::Simple("write".into())]);
        assert_eq!(set.to_bytes_as(Proto::Resp3), b"~1\r\n+write\r\n");
        assert_eq!(set.to_bytes(), b"*1\r\n+write\r\n");
        assert_eq!(Reply::nil().to_bytes_as(Proto::Resp3), b"_\r\n");
        assert_eq!(Reply::Array(None).to_bytes_as(Proto::Resp3), b"_\r\n");
        assert_eq!(Reply::Array(None).to_bytes(), b"*-1\r\n");
        let info = Reply::Verbatim("a:1\r\n".into());
        assert_eq!(info.to_bytes_as(Proto::Resp3), b"=9\r\ntxt:a:1\r\n\r\n");
        assert_eq!(info.to_bytes(), b"$5\r\na:1\r\n\r\n");
        for r in [hello, set, info, Reply::Integer(-12), Reply::bulk("xy")] {
            assert_eq!(r.encoded_len(), r.to_bytes().len(), "{r:?}");
        }
    }

    #[test]
    fn a_budget_bounds_either_encoding_and_stops_early() {
        let value = |n: usize| Reply::Value(vec![b'v'; n].into());
        let replies = [
            Reply::map([("a", Reply::Double(-1.0e-300)), ("b", Reply::Bool(true)), ("c", Reply::Integer(i64::MIN))]),
            Reply::Set(vec![Reply::BigNumber("1".repeat(100)), Reply::Verbatim("x\r\n".into())]),
            Reply::array(vec![value(1000), Reply::nil(), Reply::Array(None), Reply::Error("ERR e".into())]),
        ];
        for r in &replies {
            let worst = r.to_bytes().len().max(r.to_bytes_as(Proto::Resp3).len());
            let spent = 10_000 - r.spend_within(10_000).expect("fits");
            assert!(spent >= worst, "{r:?}: {spent} < {worst}");
            assert!(r.spend_within(worst / 2).is_none(), "{r:?}");
        }
        // Five hundred values of a megabyte: refused after the first.
        let big = Reply::array((0..500).map(|_| value(1 << 20)).collect());
        assert!(big.spend_within(64 * 1024).is_none());
    }
}
