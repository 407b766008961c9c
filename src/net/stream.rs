//! A connection on either port: plain TCP or TLS over TCP, with the same
//! blocking `Read` and `Write` and the socket options that the threads of a
//! connection need. Which one a connection is was decided when it was made
//! (`TlsSettings`), so nothing downstream branches on it.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use rustls::{ClientConnection, ServerConnection, StreamOwned};

pub enum Stream {
    Plain(TcpStream),
    TlsServer(Box<StreamOwned<ServerConnection, TcpStream>>),
    TlsClient(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::TlsServer(s) => &s.sock,
            Stream::TlsClient(s) => &s.sock,
        }
    }

    pub fn is_tls(&self) -> bool {
        !matches!(self, Stream::Plain(_))
    }

    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.tcp().set_read_timeout(timeout)
    }

    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.tcp().set_write_timeout(timeout)
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().peer_addr()
    }

    /// Completes the TLS handshake now (a no-op for plain TCP), so that its
    /// failure is reported as such and within the caller's timeouts.
    pub fn complete_handshake(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(_) => Ok(()),
            Stream::TlsServer(s) => {
                while s.conn.is_handshaking() {
                    s.conn.complete_io(&mut s.sock)?;
                }
                Ok(())
            }
            Stream::TlsClient(s) => {
                while s.conn.is_handshaking() {
                    s.conn.complete_io(&mut s.sock)?;
                }
                Ok(())
            }
        }
    }

    /// Whether the other side has closed (or broken) a connection that only
    /// this side writes to, seen without blocking. A write-only sender
    /// learns of a closed connection only when a write fails, and the first
    /// write after the close is lost without an error: a sender that checks
    /// while idle reconnects before it has something to lose. Anything the
    /// other side sent is read and dropped (TLS records such as session
    /// tickets are consumed by the TLS layer).
    pub fn closed_by_peer(&mut self) -> bool {
        if self.tcp().set_nonblocking(true).is_err() {
            return true;
        }
        let mut buf = [0u8; 512];
        let closed = loop {
            match self.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break true,
            }
        };
        self.tcp().set_nonblocking(false).is_err() || closed
    }

    /// Says goodbye (a TLS close_notify) and closes both directions.
    pub fn close(&mut self) {
        match self {
            Stream::Plain(_) => {}
            Stream::TlsServer(s) => {
                s.conn.send_close_notify();
                let _ = s.conn.complete_io(&mut s.sock);
            }
            Stream::TlsClient(s) => {
                s.conn.send_close_notify();
                let _ = s.conn.complete_io(&mut s.sock);
            }
        }
        let _ = self.tcp().shutdown(Shutdown::Both);
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::TlsServer(s) => tls_read(s.read(buf)),
            Stream::TlsClient(s) => tls_read(s.read(buf)),
        }
    }
}

/// A peer that closes without close_notify has still closed: the end of the
/// stream, as with plain TCP (both ports frame their own messages, so a
/// truncation is seen there).
fn tls_read(r: io::Result<usize>) -> io::Result<usize> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
        other => other,
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::TlsServer(s) => s.write(buf),
            Stream::TlsClient(s) => s.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.write_all(buf),
            // Written to the socket now, not left in rustls's buffer.
            Stream::TlsServer(s) => s.write_all(buf).and_then(|()| s.flush()),
            Stream::TlsClient(s) => s.write_all(buf).and_then(|()| s.flush()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::TlsServer(s) => s.flush(),
            Stream::TlsClient(s) => s.flush(),
        }
    }
}
