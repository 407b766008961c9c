//! The client protocol: RESP2 requests and inline commands in, RESP2 replies
//! out (docs/commands.md).
//!
//! [`RequestParser`] is a push parser in the style of csv-core: the caller
//! hands it whatever bytes arrived and it reports how many it used and whether
//! a whole request is ready. It keeps its own partial state, so bytes it used
//! are never offered twice and a request trickling in one byte at a time costs
//! linear time. [`RequestReader`] wraps it around an `io::Read`.
//!
//! Two request forms are accepted, as Redis does:
//!
//! ```text
//! multibulk  = "*" count CRLF { "$" len CRLF bytes[len] CRLF }[count]
//! inline     = words LF            (words split as Redis's sdssplitargs)
//! ```
//!
//! A request whose first byte is `*` is multibulk, anything else is inline.
//! An empty inline line and a multibulk count of 0 or less are requests of no
//! arguments and are skipped silently, as Redis does. Bounds: a request of more
//! than `REQUEST_BYTES_MAX` bytes or `REQUEST_ARGS_MAX` arguments, an inline
//! line over [`INLINE_BYTES_MAX`], a bulk length that is negative or over
//! `REQUEST_BYTES_MAX` are protocol errors; after one the server closes the
//! connection (docs/commands.md), so the parser never resynchronizes. Key and value sizes
//! are the command layer's business (`crate::command`), so that an oversized
//! value gets `-ERR value too large` and the connection stays open.
//!
//! The reply side: [`Reply`] and its encoder for the server, and
//! [`parse_reply`] for clients (`bin/kv`, tests).

use std::fmt;
use std::io::{self, Read};
use std::sync::Arc;

use crate::config::{REQUEST_ARGS_MAX, REQUEST_BYTES_MAX};

/// The longest inline request line, newline excluded (Redis's
/// PROTO_INLINE_MAX_SIZE). Longer is `protocol error: too big inline request`.
pub const INLINE_BYTES_MAX: usize = 64 * 1024;

/// A `*N` or `$N` header line longer than this cannot hold a valid number
/// (an i64 has at most 20 characters), so it is refused at once.
const HEADER_BYTES_MAX: usize = 32;

/// Capacity reserved up front for a declared bulk or array length; the rest
/// grows as bytes actually arrive, so a lying header cannot make us allocate.
const PREALLOC_BYTES_MAX: usize = 64 * 1024;
const PREALLOC_ARGS_MAX: usize = 1024;

/// Nesting depth of a reply a client accepts; our server never nests deeper
/// than 2.
const REPLY_DEPTH_MAX: usize = 64;

/// The largest bulk string a client accepts in a reply.
pub const REPLY_BULK_BYTES_MAX: usize = 512 * 1024 * 1024;

// ---------------------------------------------------------------------------
// Errors

/// Why a request could not be parsed. `Display` of the kind is exactly the
/// text the client sees after `-ERR `.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtocolErrorKind {
    InvalidMultibulkLength,
    InvalidBulkLength,
    /// The byte found where a bulk string's `$` should be.
    ExpectedDollar(u8),
    /// The two bytes after a bulk string's data were not CRLF.
    ExpectedCrlf,
    UnbalancedQuotes,
    InlineTooBig,
    RequestTooLarge,
}

/// A protocol error and where it happened, counted in bytes from the start of
/// the connection's stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolError {
    pub kind: ProtocolErrorKind,
    pub offset: u64,
}

impl fmt::Display for ProtocolErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("protocol error: ")?;
        match self {
            ProtocolErrorKind::InvalidMultibulkLength => f.write_str("invalid multibulk length"),
            ProtocolErrorKind::InvalidBulkLength => f.write_str("invalid bulk length"),
            ProtocolErrorKind::ExpectedDollar(b) => {
                write!(f, "expected '$', got '{}'", printable_byte(*b))
            }
            ProtocolErrorKind::ExpectedCrlf => f.write_str("expected CRLF after bulk data"),
            ProtocolErrorKind::UnbalancedQuotes => f.write_str("unbalanced quotes in request"),
            ProtocolErrorKind::InlineTooBig => f.write_str("too big inline request"),
            ProtocolErrorKind::RequestTooLarge => f.write_str("request too large"),
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {} of the stream)", self.kind, self.offset)
    }
}

impl std::error::Error for ProtocolError {}

impl ProtocolError {
    /// The reply sent to the client before the connection is closed.
    pub fn reply(&self) -> Reply {
        Reply::Error(format!("ERR {}", self.kind))
    }
}

/// A byte as it may appear inside a one-line error: printable ASCII as is,
/// anything else escaped.
fn printable_byte(b: u8) -> String {
    if b.is_ascii_graphic() || b == b' ' { (b as char).to_string() } else { format!("\\x{b:02x}") }
}

// ---------------------------------------------------------------------------
// Request parser

/// What [`RequestParser::parse`] found in the bytes it used.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Every byte offered was used and the request is not complete yet.
    NeedMore,
    /// A whole request; its arguments are never empty.
    Request(Vec<Vec<u8>>),
}

/// One transition's result: bytes used, and the request if it completed.
type Step = (usize, Option<Vec<Vec<u8>>>);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Between requests.
    Start,
    /// Reading the `*N` line (the `*` is already used).
    Count,
    /// Reading a `$N` line, `$` included.
    BulkLen,
    /// Reading `left` more bytes of the current bulk string.
    BulkData { left: usize },
    /// Reading the CRLF after a bulk string; `seen` of its 2 bytes are read.
    BulkEnd { seen: u8 },
    /// Reading an inline line up to its `\n`.
    Inline,
}

/// Parses requests from a byte stream fed in pieces. One per connection.
#[derive(Debug)]
pub struct RequestParser {
    state: State,
    /// The partial header or inline line. Bounded by `INLINE_BYTES_MAX`.
    line: Vec<u8>,
    /// Arguments of the multibulk request being read.
    args: Vec<Vec<u8>>,
    /// Arguments still to read; meaningful in the bulk states.
    args_left: usize,
    /// Bytes used by the current request so far; at most `REQUEST_BYTES_MAX`.
    request_bytes: usize,
    /// Bytes used since the connection started, for error positions.
    stream_offset: u64,
}

impl Default for RequestParser {
    fn default() -> Self {
        RequestParser::new()
    }
}

impl RequestParser {
    pub fn new() -> RequestParser {
        RequestParser {
            state: State::Start,
            line: Vec::new(),
            args: Vec::new(),
            args_left: 0,
            request_bytes: 0,
            stream_offset: 0,
        }
    }

    /// True between requests: no byte of a next request has been used yet.
    pub fn is_idle(&self) -> bool {
        self.state == State::Start
    }

    /// Uses bytes from `input` until a request is complete or `input` runs
    /// out. Returns what was found and how many bytes were used: all of them
    /// with `NeedMore`, possibly fewer with `Request` (the rest belongs to the
    /// next request: call again with the remainder). After an error the
    /// parser must not be used again.
    pub fn parse(&mut self, input: &[u8]) -> Result<(Parsed, usize), ProtocolError> {
        let mut used = 0;
        while used < input.len() {
            let (step_used, done) = self.step(&input[used..])?;
            assert!(step_used > 0 || done.is_some(), "parser made no progress in state {:?}", self.state);
            used += step_used;
            self.stream_offset += step_used as u64;
            if let Some(args) = done {
                return Ok((Parsed::Request(args), used));
            }
        }
        Ok((Parsed::NeedMore, used))
    }

    /// One state transition over the start of `input` (never empty).
    fn step(&mut self, input: &[u8]) -> Result<Step, ProtocolError> {
        match self.state {
            State::Start => {
                self.request_bytes = 0;
                if input[0] == b'*' {
                    self.state = State::Count;
                    self.count_bytes(1)?;
                    Ok((1, None))
                } else {
                    self.state = State::Inline;
                    self.step_inline(input)
                }
            }
            State::Count => self.step_count(input),
            State::BulkLen => self.step_bulk_len(input),
            State::BulkData { left } => Ok((self.step_bulk_data(input, left)?, None)),
            State::BulkEnd { seen } => self.step_bulk_end(input, seen),
            State::Inline => self.step_inline(input),
        }
    }

    fn error(&self, kind: ProtocolErrorKind) -> ProtocolError {
        ProtocolError { kind, offset: self.stream_offset }
    }

    /// Adds `n` bytes to the current request, enforcing `REQUEST_BYTES_MAX`.
    fn count_bytes(&mut self, n: usize) -> Result<(), ProtocolError> {
        self.request_bytes += n;
        if self.request_bytes > REQUEST_BYTES_MAX {
            return Err(self.error(ProtocolErrorKind::RequestTooLarge));
        }
        Ok(())
    }

    /// Accumulates a header line up to its `\n`. Returns the bytes used and,
    /// once the line is whole, `true` (the line, without CR LF, is in
    /// `self.line`).
    fn take_header_line(&mut self, input: &[u8], too_long: ProtocolErrorKind) -> Result<(usize, bool), ProtocolError> {
        let (used, complete) = match input.iter().position(|&b| b == b'\n') {
            Some(at) => (at + 1, true),
            None => (input.len(), false),
        };
        let content = if complete { &input[..used - 1] } else { input };
        if self.line.len() + content.len() > HEADER_BYTES_MAX {
            return Err(self.error(too_long));
        }
        self.line.extend_from_slice(content);
        self.count_bytes(used)?;
        if complete && self.line.last() == Some(&b'\r') {
            self.line.pop();
        }
        Ok((used, complete))
    }

    fn step_count(&mut self, input: &[u8]) -> Result<Step, ProtocolError> {
        let invalid = ProtocolErrorKind::InvalidMultibulkLength;
        let (used, complete) = self.take_header_line(input, invalid.clone())?;
        if !complete {
            return Ok((used, None));
        }
        let count = parse_i64(&self.line).ok_or_else(|| self.error(invalid.clone()))?;
        self.line.clear();
        if count <= 0 {
            // Redis ignores an empty or null multibulk.
            self.state = State::Start;
            return Ok((used, None));
        }
        if count as u64 > REQUEST_ARGS_MAX as u64 {
            return Err(self.error(invalid));
        }
        self.args_left = count as usize;
        self.args = Vec::with_capacity(self.args_left.min(PREALLOC_ARGS_MAX));
        self.state = State::BulkLen;
        Ok((used, None))
    }

    fn step_bulk_len(&mut self, input: &[u8]) -> Result<Step, ProtocolError> {
        if self.line.is_empty() && input[0] != b'$' {
            return Err(self.error(ProtocolErrorKind::ExpectedDollar(input[0])));
        }
        let invalid = ProtocolErrorKind::InvalidBulkLength;
        let (used, complete) = self.take_header_line(input, invalid.clone())?;
        if !complete {
            return Ok((used, None));
        }
        let len = parse_i64(&self.line[1..]).ok_or_else(|| self.error(invalid.clone()))?;
        self.line.clear();
        if len < 0 || len as u64 > REQUEST_BYTES_MAX as u64 {
            return Err(self.error(invalid));
        }
        let len = len as usize;
        // Refuse now rather than after receiving 16 MiB we would refuse anyway.
        if self.request_bytes + len + 2 > REQUEST_BYTES_MAX {
            return Err(self.error(ProtocolErrorKind::RequestTooLarge));
        }
        self.args.push(Vec::with_capacity(len.min(PREALLOC_BYTES_MAX)));
        self.state = if len == 0 { State::BulkEnd { seen: 0 } } else { State::BulkData { left: len } };
        Ok((used, None))
    }

    fn step_bulk_data(&mut self, input: &[u8], left: usize) -> Result<usize, ProtocolError> {
        let used = left.min(input.len());
        self.count_bytes(used)?;
        let arg = self.args.last_mut().expect("a bulk string is open in BulkData");
        arg.extend_from_slice(&input[..used]);
        self.state = if used == left { State::BulkEnd { seen: 0 } } else { State::BulkData { left: left - used } };
        Ok(used)
    }

    fn step_bulk_end(&mut self, input: &[u8], seen: u8) -> Result<Step, ProtocolError> {
        let expected = if seen == 0 { b'\r' } else { b'\n' };
        if input[0] != expected {
            return Err(self.error(ProtocolErrorKind::ExpectedCrlf));
        }
        self.count_bytes(1)?;
        if seen == 0 {
            self.state = State::BulkEnd { seen: 1 };
            return Ok((1, None));
        }
        self.args_left -= 1;
        if self.args_left > 0 {
            self.state = State::BulkLen;
            return Ok((1, None));
        }
        self.state = State::Start;
        Ok((1, Some(std::mem::take(&mut self.args))))
    }

    fn step_inline(&mut self, input: &[u8]) -> Result<Step, ProtocolError> {
        let (used, complete) = match input.iter().position(|&b| b == b'\n') {
            Some(at) => (at + 1, true),
            None => (input.len(), false),
        };
        let content = if complete { &input[..used - 1] } else { input };
        if self.line.len() + content.len() > INLINE_BYTES_MAX {
            return Err(self.error(ProtocolErrorKind::InlineTooBig));
        }
        self.line.extend_from_slice(content);
        self.count_bytes(used)?;
        if !complete {
            return Ok((used, None));
        }
        // Like Redis, drop the CR of a CRLF before splitting, so that it never
        // lands inside a quoted word.
        if self.line.last() == Some(&b'\r') {
            self.line.pop();
        }
        let args = split_args(&self.line).map_err(|kind| self.error(kind))?;
        self.line.clear();
        self.state = State::Start;
        if args.is_empty() {
            return Ok((used, None));
        }
        if args.len() > REQUEST_ARGS_MAX {
            return Err(self.error(ProtocolErrorKind::InvalidMultibulkLength));
        }
        Ok((used, Some(args)))
    }
}

/// A decimal i64 as Redis's string2ll reads it: an optional `-`, no `+`, no
/// spaces, no leading zeros (except `0` itself), no overflow.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    let first = *digits.first()?;
    if !first.is_ascii_digit() || (first == b'0' && (digits.len() > 1 || negative)) {
        return None;
    }
    // Accumulate downwards so that i64::MIN is reachable.
    let mut value: i64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_sub(i64::from(b - b'0'))?;
    }
    if negative { Some(value) } else { value.checked_neg() }
}

// ---------------------------------------------------------------------------
// Inline splitting

/// Splits one inline line into words as Redis does (sdssplitargs): words are
/// separated by whitespace; `"..."` groups a word and understands `\n \r \t
/// \b \a \\ \"` and `\xHH`; `'...'` groups a word and understands only `\'`.
/// A closing quote must be followed by whitespace or the end of the line.
/// Also used by `bin/kv` to read what a person types.
pub fn split_args(line: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolErrorKind> {
    let mut words = Vec::new();
    let mut pos = 0;
    loop {
        while pos < line.len() && is_space(line[pos]) {
            pos += 1;
        }
        if pos == line.len() {
            return Ok(words);
        }
        let (word, next) = split_word(line, pos)?;
        words.push(word);
        pos = next;
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Quote {
    None,
    Double,
    Single,
}

/// Reads one word starting at `pos` (not whitespace). Returns it and the
/// position after it.
fn split_word(line: &[u8], mut pos: usize) -> Result<(Vec<u8>, usize), ProtocolErrorKind> {
    let mut word = Vec::new();
    let mut quote = Quote::None;
    loop {
        let Some(&b) = line.get(pos) else {
            return match quote {
                Quote::None => Ok((word, pos)),
                _ => Err(ProtocolErrorKind::UnbalancedQuotes),
            };
        };
        match quote {
            Quote::None => match b {
                _ if is_space(b) => return Ok((word, pos)),
                b'"' => quote = Quote::Double,
                b'\'' => quote = Quote::Single,
                _ => word.push(b),
            },
            Quote::Double => match b {
                b'\\' => {
                    let (byte, len) = double_quote_escape(&line[pos..]);
                    word.push(byte);
                    pos += len - 1;
                }
                b'"' => {
                    closing_quote_ok(line, pos)?;
                    return Ok((word, pos + 1));
                }
                _ => word.push(b),
            },
            Quote::Single => match b {
                b'\\' if line.get(pos + 1) == Some(&b'\'') => {
                    word.push(b'\'');
                    pos += 1;
                }
                b'\'' => {
                    closing_quote_ok(line, pos)?;
                    return Ok((word, pos + 1));
                }
                _ => word.push(b),
            },
        }
        pos += 1;
    }
}

/// A closing quote must end the word.
fn closing_quote_ok(line: &[u8], quote_at: usize) -> Result<(), ProtocolErrorKind> {
    match line.get(quote_at + 1) {
        Some(&b) if !is_space(b) => Err(ProtocolErrorKind::UnbalancedQuotes),
        _ => Ok(()),
    }
}

/// Decodes the escape starting at `s[0] == '\\'` inside double quotes:
/// returns the byte and how many bytes of `s` it took. A backslash at the
/// very end stands for itself (the missing closing quote is reported after).
fn double_quote_escape(s: &[u8]) -> (u8, usize) {
    if s.len() >= 4
        && s[1] == b'x'
        && let (Some(hi), Some(lo)) = (hex_value(s[2]), hex_value(s[3]))
    {
        return (hi * 16 + lo, 4);
    }
    match s.get(1) {
        None => (b'\\', 1),
        Some(b'n') => (b'\n', 2),
        Some(b'r') => (b'\r', 2),
        Some(b't') => (b'\t', 2),
        Some(b'b') => (0x08, 2),
        Some(b'a') => (0x07, 2),
        Some(&other) => (other, 2),
    }
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

// ---------------------------------------------------------------------------
// Reading requests from a stream

/// Why [`RequestReader::next_request`] stopped.
#[derive(Debug)]
pub enum ReadError {
    Io(io::Error),
    Protocol(ProtocolError),
    /// The peer closed the connection in the middle of a request.
    EofInRequest {
        offset: u64,
    },
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "reading a request: {e}"),
            ReadError::Protocol(e) => write!(f, "{e}"),
            ReadError::EofInRequest { offset } => {
                write!(f, "connection closed inside a request at byte {offset}")
            }
        }
    }
}

impl std::error::Error for ReadError {}

/// Reads whole requests from a stream: the parser plus a read buffer.
pub struct RequestReader<R> {
    inner: R,
    parser: RequestParser,
    buf: Box<[u8]>,
    /// Bytes of `buf` read but not yet given to the parser: `buf[pos..end]`.
    pos: usize,
    end: usize,
    /// The node-wide budget for requests not yet whole, and what this
    /// connection holds of it.
    budget: Option<Arc<PendingBudget>>,
    charged: usize,
}

/// Bytes of requests that arrived in part, over every connection of a node:
/// a hundred clients that each send half of a 16 MiB request and stop must
/// not hold memory without bound. Past `max`, a connection that holds more
/// than `per_connection_floor` of it is closed.
#[derive(Debug)]
pub struct PendingBudget {
    pub used: std::sync::atomic::AtomicUsize,
    pub max: usize,
    pub per_connection_floor: usize,
}

impl<R> Drop for RequestReader<R> {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            b.used.fetch_sub(self.charged, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Bytes asked of the stream per read.
const READ_CHUNK_BYTES: usize = 64 * 1024;

impl<R: Read> RequestReader<R> {
    pub fn new(inner: R) -> RequestReader<R> {
        RequestReader {
            inner,
            parser: RequestParser::new(),
            buf: vec![0; READ_CHUNK_BYTES].into_boxed_slice(),
            pos: 0,
            end: 0,
            budget: None,
            charged: 0,
        }
    }

    /// Counts this connection's partial requests against `budget`.
    pub fn with_budget(mut self, budget: Arc<PendingBudget>) -> RequestReader<R> {
        self.budget = Some(budget);
        self
    }

    /// Bytes of the request now arriving (0 between requests).
    pub fn pending_request_bytes(&self) -> usize {
        if self.parser.is_idle() { 0 } else { self.parser.request_bytes }
    }

    /// Settles this connection's share of the budget; an error when the
    /// node holds too much partial request data and this one holds a lot.
    fn charge(&mut self) -> Result<(), ReadError> {
        use std::sync::atomic::Ordering;
        let Some(b) = &self.budget else { return Ok(()) };
        let now = self.pending_request_bytes();
        if now >= self.charged {
            b.used.fetch_add(now - self.charged, Ordering::Relaxed);
        } else {
            b.used.fetch_sub(self.charged - now, Ordering::Relaxed);
        }
        self.charged = now;
        if now > b.per_connection_floor && b.used.load(Ordering::Relaxed) > b.max {
            return Err(ReadError::Io(io::Error::other(format!(
                "the node holds more than {} bytes of requests still arriving; this one had {now}",
                b.max
            ))));
        }
        Ok(())
    }

    /// The next request, or `None` when the peer closed the connection
    /// between requests. Blocks only when no buffered byte completes one.
    pub fn next_request(&mut self) -> Result<Option<Vec<Vec<u8>>>, ReadError> {
        loop {
            if let Some(args) = self.next_buffered()? {
                return Ok(Some(args));
            }
            let n = loop {
                match self.inner.read(&mut self.buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(ReadError::Io(e)),
                }
            };
            if n == 0 {
                if self.parser.is_idle() {
                    return Ok(None);
                }
                let offset = self.parser.stream_offset;
                return Err(ReadError::EofInRequest { offset });
            }
            self.pos = 0;
            self.end = n;
        }
    }

    /// The next request among the bytes already read; `None` when they
    /// complete none (the parser keeps the part it has). Never reads.
    pub fn next_buffered(&mut self) -> Result<Option<Vec<Vec<u8>>>, ReadError> {
        while self.pos < self.end {
            let input = &self.buf[self.pos..self.end];
            let (parsed, used) = self.parser.parse(input).map_err(ReadError::Protocol)?;
            self.pos += used;
            self.charge()?;
            if let Parsed::Request(args) = parsed {
                return Ok(Some(args));
            }
            if used == 0 {
                break;
            }
        }
        Ok(None)
    }

    /// Reads more input with `read` (a non-blocking receive, say) once
    /// every byte read before is parsed; what `read` returned (0: the
    /// stream ended).
    pub fn fill_with(&mut self, read: impl FnOnce(&mut [u8]) -> io::Result<usize>) -> io::Result<usize> {
        debug_assert_eq!(self.pos, self.end, "unparsed input would be overwritten");
        let n = read(&mut self.buf)?;
        self.pos = 0;
        self.end = n;
        Ok(n)
    }

    /// Bytes already read from the stream and not yet parsed. When zero, the
    /// next `next_request` may block: a good moment to flush replies.
    pub fn buffered_bytes(&self) -> usize {
        self.end - self.pos
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }
}

pub use crate::reply::{Proto, Reply};

/// Appends `args` as a RESP array of bulk strings: how clients send requests.
pub fn encode_request<A: AsRef<[u8]>>(args: &[A], out: &mut Vec<u8>) {
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for arg in args {
        let arg = arg.as_ref();
        out.push(b'$');
        out.extend_from_slice(arg.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

// ---------------------------------------------------------------------------
// Reply parser, for clients

/// Why a reply from a server could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplyError {
    /// Byte offset into the buffer given to `parse_reply`.
    pub offset: usize,
    pub detail: String,
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed reply at byte {}: {}", self.offset, self.detail)
    }
}

impl std::error::Error for ReplyError {}

/// Parses one reply from the start of `buf`: `Ok(None)` when more bytes are
/// needed, else the reply and the bytes it took. Starts over on every call, so
/// a caller should call it again only after more bytes arrived.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, ReplyError> {
    let mut pos = 0;
    match reply_at(buf, &mut pos, 0)? {
        Some(reply) => Ok(Some((reply, pos))),
        None => Ok(None),
    }
}

fn reply_error(offset: usize, detail: impl Into<String>) -> ReplyError {
    ReplyError { offset, detail: detail.into() }
}

/// The line at `*pos` without its CRLF, advancing past it; `None` if the
/// line is not complete yet.
fn reply_line<'a>(buf: &'a [u8], pos: &mut usize) -> Result<Option<&'a [u8]>, ReplyError> {
    let start = *pos;
    let Some(at) = buf[start..].iter().position(|&b| b == b'\n') else {
        return Ok(None);
    };
    let end = start + at;
    if end == start || buf[end - 1] != b'\r' {
        return Err(reply_error(end, "line not ended by CRLF"));
    }
    *pos = end + 1;
    Ok(Some(&buf[start..end - 1]))
}

fn reply_at(buf: &[u8], pos: &mut usize, depth: usize) -> Result<Option<Reply>, ReplyError> {
    if depth > REPLY_DEPTH_MAX {
        return Err(reply_error(*pos, "arrays nested too deep"));
    }
    let start = *pos;
    let Some(&kind) = buf.get(start) else {
        return Ok(None);
    };
    *pos += 1;
    let Some(line) = reply_line(buf, pos)? else {
        return Ok(None);
    };
    let text = || String::from_utf8_lossy(line).into_owned();
    let number = || parse_i64(line).ok_or_else(|| reply_error(start + 1, "bad number"));
    match kind {
        b'+' => Ok(Some(Reply::Simple(text()))),
        b'-' => Ok(Some(Reply::Error(text()))),
        b':' => Ok(Some(Reply::Integer(number()?))),
        b'$' => reply_bulk(buf, pos, number()?, start),
        b'*' | b'>' => reply_array(buf, pos, number()?, start, depth),
        // RESP3, for clients that said HELLO 3.
        b'_' => Ok(Some(Reply::Bulk(None))),
        b'#' => match line {
            b"t" | b"f" => Ok(Some(Reply::Bool(line == b"t"))),
            _ => Err(reply_error(start + 1, "bad boolean")),
        },
        b',' => match std::str::from_utf8(line).ok().and_then(|t| t.parse::<f64>().ok()) {
            Some(x) => Ok(Some(Reply::Double(x))),
            None => Err(reply_error(start + 1, "bad double")),
        },
        b'(' => {
            let digits = line.strip_prefix(b"-").unwrap_or(line);
            match !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) {
                true => Ok(Some(Reply::BigNumber(text()))),
                false => Err(reply_error(start + 1, "bad big number")),
            }
        }
        b'~' => Ok(reply_array(buf, pos, number()?, start, depth)?.map(|r| match r {
            Reply::Array(Some(items)) => Reply::Set(items),
            other => other,
        })),
        b'%' => reply_map(buf, pos, number()?, start, depth),
        b'=' => Ok(reply_bulk(buf, pos, number()?, start)?.map(|r| match r {
            Reply::Bulk(Some(text)) => {
                let body = text.get(4..).unwrap_or_default();
                Reply::Verbatim(String::from_utf8_lossy(body).into_owned())
            }
            other => other,
        })),
        other => Err(reply_error(start, format!("unknown reply type '{}'", printable_byte(other)))),
    }
}

fn reply_bulk(buf: &[u8], pos: &mut usize, len: i64, start: usize) -> Result<Option<Reply>, ReplyError> {
    if len == -1 {
        return Ok(Some(Reply::Bulk(None)));
    }
    if len < 0 || len as u64 > REPLY_BULK_BYTES_MAX as u64 {
        return Err(reply_error(start, format!("bad bulk length {len}")));
    }
    let len = len as usize;
    if buf.len() - *pos < len + 2 {
        return Ok(None);
    }
    let data = &buf[*pos..*pos + len];
    if &buf[*pos + len..*pos + len + 2] != b"\r\n" {
        return Err(reply_error(*pos + len, "bulk data not followed by CRLF"));
    }
    *pos += len + 2;
    Ok(Some(Reply::Bulk(Some(data.to_vec()))))
}

fn reply_array(
    buf: &[u8],
    pos: &mut usize,
    count: i64,
    start: usize,
    depth: usize,
) -> Result<Option<Reply>, ReplyError> {
    if count == -1 {
        return Ok(Some(Reply::Array(None)));
    }
    if count < 0 || count as u64 > REQUEST_ARGS_MAX as u64 {
        return Err(reply_error(start, format!("bad array length {count}")));
    }
    let count = count as usize;
    let mut items = Vec::with_capacity(count.min(PREALLOC_ARGS_MAX));
    for _ in 0..count {
        match reply_at(buf, pos, depth + 1)? {
            Some(item) => items.push(item),
            None => return Ok(None),
        }
    }
    Ok(Some(Reply::Array(Some(items))))
}

fn reply_map(buf: &[u8], pos: &mut usize, count: i64, start: usize, depth: usize) -> Result<Option<Reply>, ReplyError> {
    if count < 0 || count as u64 > REQUEST_ARGS_MAX as u64 / 2 {
        return Err(reply_error(start, format!("bad map length {count}")));
    }
    let mut pairs = Vec::with_capacity((count as usize).min(PREALLOC_ARGS_MAX));
    for _ in 0..count {
        let Some(k) = reply_at(buf, pos, depth + 1)? else { return Ok(None) };
        let Some(v) = reply_at(buf, pos, depth + 1)? else { return Ok(None) };
        pairs.push((k, v));
    }
    Ok(Some(Reply::Map(pairs)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::Xoshiro256PlusPlus;
    use rand::{RngExt, SeedableRng};

    /// Feeds `input` whole and returns every request, or the first error.
    fn parse_all(input: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
        parse_chunked(input, input.len().max(1))
    }

    fn parse_chunked(input: &[u8], chunk: usize) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
        let mut parser = RequestParser::new();
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            let mut pos = 0;
            while pos < piece.len() {
                let (parsed, used) = parser.parse(&piece[pos..])?;
                pos += used;
                match parsed {
                    Parsed::Request(args) => out.push(args),
                    Parsed::NeedMore => assert_eq!(pos, piece.len()),
                }
            }
        }
        Ok(out)
    }

    fn words(ws: &[&str]) -> Vec<Vec<u8>> {
        ws.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    fn error_text(input: &[u8]) -> String {
        let err = parse_all(input).expect_err("input should be refused");
        String::from_utf8(err.reply().to_bytes()).unwrap()
    }

    #[test]
    fn multibulk_requests_are_binary_safe_and_pipelined() {
        let all_bytes: Vec<u8> = (0..=255).collect();
        let mut input = Vec::new();
        encode_request(&[&b"SET"[..], b"k\r\n", &all_bytes], &mut input);
        encode_request(&[&b"GET"[..], b""], &mut input);
        let got = parse_all(&input).unwrap();
        assert_eq!(got, vec![vec![b"SET".to_vec(), b"k\r\n".to_vec(), all_bytes], vec![b"GET".to_vec(), Vec::new()],]);
    }

    #[test]
    fn first_request_reports_only_its_own_bytes() {
        let input = b"*1\r\n$4\r\nPING\r\nPING\r\n";
        let mut parser = RequestParser::new();
        let (parsed, used) = parser.parse(input).unwrap();
        assert_eq!(parsed, Parsed::Request(words(&["PING"])));
        assert_eq!(used, 14);
        assert!(parser.is_idle());
        let (parsed, used) = parser.parse(&input[14..]).unwrap();
        assert_eq!(parsed, Parsed::Request(words(&["PING"])));
        assert_eq!(used, 6);
    }

    #[test]
    fn inline_requests_split_like_redis() {
        let cases: &[(&[u8], &[&str])] = &[
            (b"SET greeting hello\n", &["SET", "greeting", "hello"]),
            (b"SET greeting hello\r\n", &["SET", "greeting", "hello"]),
            (b"  GET \t k  \r\n", &["GET", "k"]),
            (b"SET k \"hello world\"\n", &["SET", "k", "hello world"]),
            (b"SET k \"\"\n", &["SET", "k", ""]),
            (b"SET k a\"b c\"\n", &["SET", "k", "ab c"]),
            (b"SET k 'it\\'s'\n", &["SET", "k", "it's"]),
            (b"SET k 'a\\nb'\n", &["SET", "k", "a\\nb"]),
            (b"SET k \"q\\\"q\\\\\"\n", &["SET", "k", "q\"q\\"]),
            (b"SET k \"\\n\\r\\t\\z\"\n", &["SET", "k", "\n\r\tz"]),
        ];
        for (input, expected) in cases {
            let got = parse_all(input).unwrap();
            assert_eq!(got, vec![words(expected)], "{}", input.escape_ascii());
        }
        let got = parse_all(b"SET k \"\\x00\\xfF\\xg1\\b\\a\"\n").unwrap();
        assert_eq!(got[0][2], vec![0x00, 0xff, b'x', b'g', b'1', 0x08, 0x07]);
    }

    #[test]
    fn empty_requests_are_skipped() {
        let input = b"\r\n\n   \t \r\n*0\r\n*-1\r\nPING\r\n";
        assert_eq!(parse_all(input).unwrap(), vec![words(&["PING"])]);
    }

    #[test]
    fn quote_errors_match_redis() {
        for input in
            [&b"SET k \"abc\n"[..], b"SET k 'abc\n", b"SET k \"abc\"def\n", b"SET k 'abc'def\n", b"SET k \"abc\\\"\n"]
        {
            assert_eq!(
                error_text(input),
                "-ERR protocol error: unbalanced quotes in request\r\n",
                "{}",
                input.escape_ascii()
            );
        }
    }

    #[test]
    fn malformed_multibulk_errors_match_redis() {
        let cases: &[(&[u8], &str)] = &[
            (b"*abc\r\n", "invalid multibulk length"),
            (b"*01\r\n", "invalid multibulk length"),
            (b"*1048577\r\n", "invalid multibulk length"),
            (b"*99999999999999999999999\r\n", "invalid multibulk length"),
            (b"*123456789012345678901234567890123", "invalid multibulk length"),
            (b"*1\r\n:1\r\n", "expected '$', got ':'"),
            (b"*1\r\n\r\n", "expected '$', got '\\x0d'"),
            (b"*1\r\n$-1\r\n", "invalid bulk length"),
            (b"*1\r\n$x\r\n", "invalid bulk length"),
            (b"*1\r\n$\r\n", "invalid bulk length"),
            (b"*1\r\n$16777217\r\n", "invalid bulk length"),
            (b"*1\r\n$3\r\nabcd\r\n", "expected CRLF after bulk data"),
        ];
        for (input, text) in cases {
            assert_eq!(error_text(input), format!("-ERR protocol error: {text}\r\n"), "{}", input.escape_ascii());
        }
    }

    #[test]
    fn oversized_requests_are_refused_before_their_bytes_arrive() {
        let big = REQUEST_BYTES_MAX - 100;
        let input = format!("*2\r\n$3\r\nSET\r\n${big}\r\n");
        let mut parser = RequestParser::new();
        let (parsed, _) = parser.parse(input.as_bytes()).unwrap();
        assert_eq!(parsed, Parsed::NeedMore);
        // The declared length is not allocated up front.
        let open = parser.args.last().unwrap();
        assert!(open.capacity() <= PREALLOC_BYTES_MAX, "{}", open.capacity());

        let input = format!("*3\r\n$3\r\nSET\r\n${big}\r\n{}\r\n$200\r\n", "x".repeat(big));
        assert_eq!(error_text(input.as_bytes()), "-ERR protocol error: request too large\r\n");
        let line = vec![b'a'; INLINE_BYTES_MAX + 1];
        assert_eq!(error_text(&line), "-ERR protocol error: too big inline request\r\n");
        let mut line = vec![b'a'; INLINE_BYTES_MAX];
        line.push(b'\n');
        assert_eq!(parse_all(&line).unwrap().len(), 1);
    }

    #[test]
    fn error_offsets_count_from_the_start_of_the_stream() {
        let input = b"PING\r\n*1\r\n:";
        let err = parse_all(input).unwrap_err();
        assert_eq!(err.offset, 10);
        assert!(err.to_string().contains("at byte 10"), "{err}");
    }

    /// A random request, and its bytes in multibulk or inline form.
    fn random_request(rng: &mut Xoshiro256PlusPlus) -> (Vec<Vec<u8>>, Vec<u8>) {
        let argc = rng.random_range(1..6);
        let inline = rng.random_bool(0.3);
        let args: Vec<Vec<u8>> = (0..argc)
            .map(|_| {
                let len = rng.random_range(if inline { 1..20 } else { 0..300 });
                (0..len).map(|_| if inline { rng.random_range(b'a'..=b'z') } else { rng.random() }).collect()
            })
            .collect();
        let mut bytes = Vec::new();
        if inline {
            bytes = args.join(&b' ');
            bytes.extend_from_slice(if rng.random_bool(0.5) { b"\r\n" } else { b"\n" });
        } else {
            encode_request(&args, &mut bytes);
        }
        (args, bytes)
    }

    #[test]
    fn any_chunking_gives_the_same_requests() {
        let seed = 0x5eed_0001;
        println!("seed {seed}");
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut expected = Vec::new();
        let mut input = Vec::new();
        for _ in 0..300 {
            let (args, bytes) = random_request(&mut rng);
            expected.push(args);
            input.extend_from_slice(&bytes);
        }
        for chunk in [1, 2, 3, 7, 64, 1000, input.len()] {
            assert_eq!(parse_chunked(&input, chunk).unwrap(), expected, "chunk {chunk}");
        }
    }

    /// A 2 MiB value fed one byte per call: linear work, so this finishes
    /// quickly; a parser that rescanned from the request's start would do
    /// about 2^41 byte visits and never finish.
    #[test]
    fn one_byte_at_a_time_is_linear() {
        let value = vec![b'v'; 2 * 1024 * 1024];
        let mut input = Vec::new();
        encode_request(&[&b"SET"[..], b"k", &value], &mut input);
        let got = parse_chunked(&input, 1).unwrap();
        assert_eq!(got[0][2].len(), value.len());
        let mut line = vec![b'a'; INLINE_BYTES_MAX - 1];
        line.push(b'\n');
        assert_eq!(parse_chunked(&line, 1).unwrap().len(), 1);
    }

    #[test]
    fn random_bytes_never_panic() {
        let seed = 0x5eed_0002;
        println!("seed {seed}");
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let alphabet = b"*$:\r\n0123-9 \"'\\xaz";
        for _ in 0..20_000 {
            let len = rng.random_range(0..40);
            let input: Vec<u8> =
                (0..len)
                    .map(|_| {
                        if rng.random_bool(0.8) { alphabet[rng.random_range(0..alphabet.len())] } else { rng.random() }
                    })
                    .collect();
            let _ = parse_chunked(&input, rng.random_range(1..8));
            let _ = parse_reply(&input);
            let _ = split_args(&input);
        }
    }

    #[test]
    fn request_reader_reads_requests_until_eof() {
        let mut input = b"PING\r\n".to_vec();
        encode_request(&["GET", "k"], &mut input);
        let mut reader = RequestReader::new(&input[..]);
        assert_eq!(reader.next_request().unwrap(), Some(words(&["PING"])));
        assert_eq!(reader.buffered_bytes(), input.len() - 6);
        assert_eq!(reader.next_request().unwrap(), Some(words(&["GET", "k"])));
        assert_eq!(reader.next_request().unwrap(), None);

        let mut reader = RequestReader::new(&b"*2\r\n$3\r\nGET\r\n"[..]);
        match reader.next_request() {
            Err(ReadError::EofInRequest { offset: 13 }) => {}
            other => panic!("expected EOF inside a request, got {other:?}"),
        }
    }

    #[test]
    fn request_reader_fed_in_pieces_never_reads_on_its_own() {
        let mut input = Vec::new();
        encode_request(&["SET", "k", "v"], &mut input);
        encode_request(&["GET", "k"], &mut input);
        // A reader whose stream must not be touched: input comes by fill_with.
        let mut reader = RequestReader::new(&b"never read"[..]);
        let mut got = Vec::new();
        for piece in input.chunks(5) {
            assert_eq!(reader.buffered_bytes(), 0);
            let n = reader
                .fill_with(|buf| {
                    buf[..piece.len()].copy_from_slice(piece);
                    Ok(piece.len())
                })
                .unwrap();
            assert_eq!(n, piece.len());
            while let Some(args) = reader.next_buffered().unwrap() {
                got.push(args);
            }
        }
        assert_eq!(got, vec![words(&["SET", "k", "v"]), words(&["GET", "k"])]);
        assert_eq!(reader.pending_request_bytes(), 0);
        assert!(reader.next_buffered().unwrap().is_none());
    }

    #[test]
    fn parse_i64_is_as_strict_as_redis() {
        let ok: &[(&str, i64)] =
            &[("0", 0), ("7", 7), ("-7", -7), ("9223372036854775807", i64::MAX), ("-9223372036854775808", i64::MIN)];
        for (s, n) in ok {
            assert_eq!(parse_i64(s.as_bytes()), Some(*n), "{s}");
        }
        for s in ["", "-", "+1", " 1", "1 ", "01", "-0", "1a", "9223372036854775808", "-9223372036854775809", "1.5"] {
            assert_eq!(parse_i64(s.as_bytes()), None, "{s:?}");
        }
    }

    #[test]
    fn replies_encode_exactly() {
        let cases: &[(Reply, &[u8])] = &[
            (Reply::ok(), b"+OK\r\n"),
            (Reply::Simple("PONG".into()), b"+PONG\r\n"),
            (Reply::err("unknown command 'x'"), b"-ERR unknown command 'x'\r\n"),
            (Reply::Error("ERR a\r\nb".into()), b"-ERR a  b\r\n"),
            (Reply::Integer(-12), b":-12\r\n"),
            (Reply::bulk("hello"), b"$5\r\nhello\r\n"),
            (Reply::bulk(""), b"$0\r\n\r\n"),
            (Reply::nil(), b"$-1\r\n"),
            (Reply::Array(None), b"*-1\r\n"),
            (Reply::array(vec![]), b"*0\r\n"),
            (Reply::array(vec![Reply::bulk("a"), Reply::nil(), Reply::Integer(1)]), b"*3\r\n$1\r\na\r\n$-1\r\n:1\r\n"),
        ];
        for (reply, bytes) in cases {
            assert_eq!(reply.to_bytes(), *bytes, "{reply:?}");
        }
    }

    fn random_reply(rng: &mut Xoshiro256PlusPlus, depth: usize) -> Reply {
        match rng.random_range(0..if depth < 3 { 7 } else { 5 }) {
            0 => Reply::Simple("OK".into()),
            1 => Reply::Error("ERR no".into()),
            2 => Reply::Integer(rng.random()),
            3 => Reply::nil(),
            4 => Reply::bulk((0..rng.random_range(0..50)).map(|_| rng.random()).collect::<Vec<u8>>()),
            5 => Reply::Array(None),
            _ => Reply::array((0..rng.random_range(0..5)).map(|_| random_reply(rng, depth + 1)).collect()),
        }
    }

    #[test]
    fn replies_round_trip_and_prefixes_are_incomplete() {
        let seed = 0x5eed_0003;
        println!("seed {seed}");
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        for _ in 0..2_000 {
            let reply = random_reply(&mut rng, 0);
            let bytes = reply.to_bytes();
            let mut with_next = bytes.clone();
            with_next.extend_from_slice(b"+next\r\n");
            assert_eq!(parse_reply(&with_next).unwrap(), Some((reply.clone(), bytes.len())));
            for cut in 0..bytes.len() {
                assert_eq!(parse_reply(&bytes[..cut]).unwrap(), None, "{reply:?} cut {cut}");
            }
        }
    }

    #[test]
    fn malformed_replies_are_errors() {
        for input in [&b"?x\r\n"[..], b"+OK\n", b":x\r\n", b"$-2\r\n", b"$1\r\nab\r\n", b"*-5\r\n"] {
            assert!(parse_reply(input).is_err(), "{}", input.escape_ascii());
        }
        let deep = "*1\r\n".repeat(REPLY_DEPTH_MAX + 2);
        assert!(parse_reply(deep.as_bytes()).is_err());
    }
}
