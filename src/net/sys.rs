//! What std does not offer for a client connection whose replies another
//! thread writes (`node::mailbox`) and whose requests another thread may
//! read (`node::poller`): a send and a receive that never block on a
//! socket left blocking for its own thread, a wait for input with a
//! timeout that leaves the socket's settings alone, a way to cut that wait
//! short from another thread (a signal whose handler does nothing: the
//! wait returns early, every other call is restarted or retried), and
//! epoll, to wait for input on many sockets at once.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Once;
use std::time::Duration;

const MSG_DONTWAIT: i32 = 0x40;
const MSG_NOSIGNAL: i32 = 0x4000;
const POLLIN: i16 = 0x1;
/// Ignored by default and used by nothing else here (Go's runtime picked it
/// for the same job): a stray one does no harm.
const SIGURG: i32 = 23;

#[repr(C)]
struct PollFd {
    fd: i32,
    events: i16,
    revents: i16,
}

unsafe extern "C" {
    fn send(fd: i32, buf: *const u8, len: usize, flags: i32) -> isize;
    fn recv(fd: i32, buf: *mut u8, len: usize, flags: i32) -> isize;
    fn epoll_create1(flags: i32) -> i32;
    fn epoll_ctl(epfd: i32, op: i32, fd: i32, event: *mut EpollEvent) -> i32;
    fn epoll_wait(epfd: i32, events: *mut EpollEvent, maxevents: i32, timeout: i32) -> i32;
    fn poll(fds: *mut PollFd, nfds: u64, timeout: i32) -> i32;
    fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
    fn pthread_self() -> usize;
    fn pthread_kill(thread: usize, sig: i32) -> i32;
}

extern "C" fn on_wake(_signum: i32) {}

/// A thread that [`readable_within`] can be woken in, by [`Waker::wake`].
#[derive(Clone, Copy, Debug)]
pub struct Waker(usize);

impl Waker {
    /// The calling thread; it must live until no one wakes it any more.
    pub fn current() -> Waker {
        static HANDLER: Once = Once::new();
        // SAFETY: the handler does nothing, so it is async-signal-safe;
        // glibc's `signal` installs it with SA_RESTART, and poll, which
        // never restarts, returns EINTR.
        HANDLER.call_once(|| unsafe {
            signal(SIGURG, on_wake);
        });
        // SAFETY: no preconditions.
        Waker(unsafe { pthread_self() })
    }

    /// Cuts the thread's wait in [`readable_within`] short. A wake that
    /// comes while the thread is not waiting is lost: it waits with a
    /// timeout.
    pub fn wake(self) {
        // SAFETY: the caller guarantees the thread is alive (module docs
        // of `node::mailbox`: it wakes only an armed connection's thread,
        // under the lock the thread takes before it ends).
        unsafe {
            pthread_kill(self.0, SIGURG);
        }
    }
}

/// Sends what the socket takes without waiting: `WouldBlock` when it takes
/// nothing. The socket's blocking mode is unchanged (its reader relies on
/// it).
pub fn send_now(fd: RawFd, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: `bytes` is valid for `len` bytes; a closed or wrong `fd` is an
    // error return, not undefined behaviour (callers keep it open).
    let n = unsafe { send(fd, bytes.as_ptr(), bytes.len(), MSG_DONTWAIT | MSG_NOSIGNAL) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

/// Waits up to `timeout` for `fd` to have input (or an end or error to
/// read); whether it does. A [`Waker::wake`] ends it early (false).
pub fn readable_within(fd: RawFd, timeout: Duration) -> io::Result<bool> {
    let mut pfd = PollFd { fd, events: POLLIN, revents: 0 };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid, writable pollfd.
    match unsafe { poll(&mut pfd, 1, ms) } {
        n if n < 0 => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted { Ok(false) } else { Err(e) }
        }
        0 => Ok(false),
        _ => Ok(true),
    }
}

/// Receives what has arrived without waiting: `WouldBlock` when nothing
/// has, `Ok(0)` at the end of the stream. The socket's blocking mode is
/// unchanged.
pub fn recv_now(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid and writable for `len` bytes; a closed or
    // wrong `fd` is an error return (callers keep it open).
    let n = unsafe { recv(fd, buf.as_mut_ptr(), buf.len(), MSG_DONTWAIT) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

const EPOLL_CLOEXEC: i32 = 0o2_000_000;
const EPOLL_CTL_ADD: i32 = 1;
const EPOLL_CTL_DEL: i32 = 2;
const EPOLL_CTL_MOD: i32 = 3;
const EPOLLIN: u32 = 0x1;
const EPOLLRDHUP: u32 = 0x2000;
const EPOLLONESHOT: u32 = 1 << 30;

/// The kernel's `struct epoll_event`, packed on x86-64 as its headers
/// declare it there.
#[cfg_attr(target_arch = "x86_64", repr(C, packed))]
#[cfg_attr(not(target_arch = "x86_64"), repr(C))]
#[derive(Clone, Copy)]
struct EpollEvent {
    events: u32,
    data: u64,
}

/// An epoll instance whose sockets report input once per arming
/// (`EPOLLONESHOT`): after an event, a socket stays quiet until
/// [`Epoll::arm`] is called for it again, so one thread at a time handles
/// it.
#[derive(Debug)]
pub struct Epoll(OwnedFd);

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: no pointers; a negative return is an error.
        let fd = unsafe { epoll_create1(EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is owned by nothing else.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Reports input (or its end) on `fd` once, as `token`; `first` adds
    /// the socket, otherwise it is armed again.
    pub fn arm(&self, fd: RawFd, token: u64, first: bool) -> io::Result<()> {
        let mut event = EpollEvent { events: EPOLLIN | EPOLLRDHUP | EPOLLONESHOT, data: token };
        let op = if first { EPOLL_CTL_ADD } else { EPOLL_CTL_MOD };
        // SAFETY: `event` is valid for the call.
        if unsafe { epoll_ctl(self.0.as_raw_fd(), op, fd, &mut event) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Stops watching `fd` (before it is closed, so that a reused number
    /// is never reported under the old token).
    pub fn remove(&self, fd: RawFd) {
        let mut event = EpollEvent { events: 0, data: 0 };
        // SAFETY: as in `arm`; failure (never added) is harmless.
        unsafe {
            epoll_ctl(self.0.as_raw_fd(), EPOLL_CTL_DEL, fd, &mut event);
        }
    }

    /// Waits up to `timeout` for sockets with input; their tokens are then
    /// in `ready`.
    pub fn wait(&self, ready: &mut Ready, timeout: Duration) -> io::Result<()> {
        ready.len = 0;
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        let max = ready.events.len().min(i32::MAX as usize) as i32;
        // SAFETY: `events` has room for `max` entries.
        let n = unsafe { epoll_wait(self.0.as_raw_fd(), ready.events.as_mut_ptr(), max, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted { Ok(()) } else { Err(e) };
        }
        ready.len = n as usize;
        Ok(())
    }
}

/// Room for the events one [`Epoll::wait`] returns.
pub struct Ready {
    events: Vec<EpollEvent>,
    len: usize,
}

impl Ready {
    pub fn with_capacity(max: usize) -> Ready {
        Ready { events: vec![EpollEvent { events: 0, data: 0 }; max.max(1)], len: 0 }
    }

    /// The tokens of the sockets the last wait reported.
    pub fn tokens(&self) -> impl Iterator<Item = u64> + '_ {
        self.events[..self.len].iter().map(|e| e.data)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};

    use super::*;

    #[test]
    fn epoll_reports_a_socket_once_per_arming_and_recv_now_never_waits() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        let fd = server.as_raw_fd();
        let epoll = Epoll::new().expect("epoll");
        let mut ready = Ready::with_capacity(4);
        let mut buf = [0u8; 8];
        assert_eq!(recv_now(fd, &mut buf).map_err(|e| e.kind()), Err(io::ErrorKind::WouldBlock));

        epoll.arm(fd, 7, true).expect("add");
        epoll.wait(&mut ready, Duration::from_millis(20)).expect("wait");
        assert_eq!(ready.tokens().count(), 0, "no input yet");
        client.write_all(b"abc").expect("write");
        epoll.wait(&mut ready, Duration::from_secs(5)).expect("wait");
        assert_eq!(ready.tokens().collect::<Vec<_>>(), vec![7]);
        // Unread input, but the arming is spent.
        epoll.wait(&mut ready, Duration::from_millis(20)).expect("wait");
        assert_eq!(ready.tokens().count(), 0, "one event per arming");
        epoll.arm(fd, 8, false).expect("re-arm");
        epoll.wait(&mut ready, Duration::from_secs(5)).expect("wait");
        assert_eq!(ready.tokens().collect::<Vec<_>>(), vec![8], "still unread: reported again");
        assert_eq!(recv_now(fd, &mut buf).expect("recv"), 3);
        assert_eq!(&buf[..3], b"abc");

        drop(client);
        epoll.arm(fd, 9, false).expect("re-arm");
        epoll.wait(&mut ready, Duration::from_secs(5)).expect("wait");
        assert_eq!(ready.tokens().collect::<Vec<_>>(), vec![9], "the end of the stream is input too");
        assert_eq!(recv_now(fd, &mut buf).expect("recv"), 0);
        epoll.remove(fd);
    }
}
