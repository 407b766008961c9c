//! What std does not offer for a client connection whose replies another
//! thread writes (`node::mailbox`): a send that never blocks on a socket
//! left blocking for its own thread, a wait for input with a timeout that
//! leaves the socket's settings alone, and a way to cut that wait short
//! from another thread (a signal whose handler does nothing: the wait
//! returns early, every other call is restarted or retried).

use std::io;
use std::os::fd::RawFd;
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
