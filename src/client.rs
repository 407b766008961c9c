//! A blocking RESP client: one connection, requests written whole, replies
//! parsed as they arrive. `bin/kv` and `bin/bench` speak through it; it also
//! pipelines (send several, then receive as many).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use crate::net::Stream;
use crate::resp::{Reply, encode_request, parse_reply};

/// How to reach a node that speaks TLS or wants a login (README, Security).
#[derive(Clone, Debug, Default)]
pub struct Security {
    /// TLS, trusting the CA this config holds (`net::tls::client_config`).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// `AUTH user password` as soon as connected.
    pub login: Option<(String, String)>,
}

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// An INFO reply's `field:value` lines as a map (section headers and blank
/// lines have no colon and are left out).
pub fn parse_info(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.trim_end_matches('\r').split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub struct Conn {
    stream: Stream,
    /// Bytes read but not yet parsed into a reply: `buf[pos..]`.
    buf: Vec<u8>,
    pos: usize,
    chunk: Box<[u8]>,
}

impl Conn {
    pub fn open(addr: &str) -> Result<Conn, String> {
        Conn::open_timeout(addr, CONNECT_TIMEOUT)
    }

    pub fn open_timeout(addr: &str, timeout: Duration) -> Result<Conn, String> {
        Conn::open_secure(addr, timeout, &Security::default())
    }

    /// Connects over TLS and logs in as `security` says.
    pub fn open_secure(addr: &str, timeout: Duration, security: &Security) -> Result<Conn, String> {
        let fail = |e: &dyn std::fmt::Display| format!("could not connect to {addr}: {e}");
        let targets = addr.to_socket_addrs().map_err(|e| fail(&e))?;
        let mut last_error = None;
        for target in targets {
            match TcpStream::connect_timeout(&target, timeout) {
                Ok(tcp) => {
                    // Each request is one write; do not wait to fill a packet.
                    let _ = tcp.set_nodelay(true);
                    let stream = match &security.tls {
                        Some(tls) => {
                            crate::net::tls::connect(tls, crate::net::tls::host_of(addr), tcp).map_err(|e| fail(&e))?
                        }
                        None => Stream::Plain(tcp),
                    };
                    let chunk = vec![0; READ_CHUNK_BYTES].into_boxed_slice();
                    let mut conn = Conn { stream, buf: Vec::new(), pos: 0, chunk };
                    if let Some((user, password)) = &security.login
                        && let Reply::Error(e) = conn.call(&["AUTH", user, password])?
                    {
                        return Err(format!("{addr}: AUTH as {user}: {e}"));
                    }
                    return Ok(conn);
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(match last_error {
            Some(e) => fail(&e),
            None => fail(&"the name resolves to no address"),
        })
    }

    /// A reply that takes longer than this fails with a timeout error.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) {
        let _ = self.stream.set_read_timeout(timeout);
    }

    pub fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Reply, String> {
        let mut request = Vec::new();
        encode_request(args, &mut request);
        self.send(&request)?;
        self.recv()
    }

    /// Writes already-encoded requests.
    pub fn send(&mut self, requests: &[u8]) -> Result<(), String> {
        self.stream.write_all(requests).map_err(|e| format!("sending the request: {e}"))
    }

    /// The next reply.
    pub fn recv(&mut self) -> Result<Reply, String> {
        loop {
            if let Some((reply, used)) = parse_reply(&self.buf[self.pos..]).map_err(|e| e.to_string())? {
                self.pos += used;
                if self.pos == self.buf.len() {
                    self.buf.clear();
                    self.pos = 0;
                }
                return Ok(reply);
            }
            let n = match self.stream.read(&mut self.chunk) {
                Ok(0) => return Err("the server closed the connection".to_string()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    return Err("timed out waiting for the reply".to_string());
                }
                Err(e) => return Err(format!("reading the reply: {e}")),
            };
            if self.pos > 0 {
                self.buf.drain(..self.pos);
                self.pos = 0;
            }
            self.buf.extend_from_slice(&self.chunk[..n]);
        }
    }
}
