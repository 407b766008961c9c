//! A TCP proxy in front of one node's raft port, for one sending node: the
//! way the process tests cut a link in one direction, and the way the
//! benchmarks make a follower slow (README, the peers file lets each node
//! have its own peers file, so a node can be told to reach a peer through
//! a proxy). Cutting closes every open connection and refuses new ones
//! until the link is healed.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

pub struct Proxy {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    /// Milliseconds each chunk of bytes is held before it is passed on: a
    /// slow link (a straggler).
    delay_ms: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    pub fn start(target: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let cut = Arc::new(AtomicBool::new(false));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (c, s, o, d) = (cut.clone(), stop.clone(), open.clone(), delay_ms.clone());
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(inbound) = inbound else { continue };
                if c.load(Ordering::SeqCst) {
                    continue; // dropped: the link is cut
                }
                let Ok(outbound) = TcpStream::connect_timeout(&target, Duration::from_secs(1)) else { continue };
                // As the nodes do: a proxy that waited to fill packets (Nagle
                // against delayed acks) would add 40 ms stalls of its own.
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let pair = [inbound.try_clone(), outbound.try_clone()];
                let [Ok(a), Ok(b)] = pair else { continue };
                o.lock().extend([a, b]);
                pump(&inbound, &outbound, d.clone());
                pump(&outbound, &inbound, d.clone());
            }
        });
        Ok(Proxy { addr, cut, delay_ms, stop, open })
    }

    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
        if cut {
            for s in self.open.lock().drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }

    pub fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }
}

fn pump(from: &TcpStream, to: &TcpStream, delay_ms: Arc<AtomicU64>) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else { return };
    std::thread::spawn(move || {
        let mut buf = [0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let delay = delay_ms.load(Ordering::Relaxed);
                    if delay > 0 {
                        std::thread::sleep(Duration::from_millis(delay));
                    }
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.set_cut(true);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}
