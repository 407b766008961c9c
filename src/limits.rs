//! The open-file limit, and the resident memory a process uses (INFO, and
//! the tests that bound it). Every client connection is a socket and a thread;
//! a common soft limit of 1024 would refuse the thousand-and-first client
//! although the hard limit allows far more, so the node raises its soft
//! limit to the hard one at start, as Redis and etcd do.

/// An `accept` failed. Out of file descriptors (EMFILE, ENFILE) the pending
/// connection stays queued and the next `accept` fails at once, so the
/// caller backs off instead of spinning; the log says so once a second.
pub fn accept_failed(e: &std::io::Error) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_LOGGED: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if LAST_LOGGED.swap(now, Ordering::Relaxed) != now {
        log::warn!("accepting a connection failed: {e} (backing off)");
    }
    std::thread::sleep(std::time::Duration::from_millis(10));
}

/// `struct rlimit` on Linux (both fields `rlim_t`, an unsigned 64-bit value
/// on the 64-bit targets this builds for).
#[repr(C)]
struct RLimit {
    cur: u64,
    max: u64,
}

const RLIMIT_NOFILE: i32 = 7;

unsafe extern "C" {
    fn getrlimit(resource: i32, rlim: *mut RLimit) -> i32;
    fn setrlimit(resource: i32, rlim: *const RLimit) -> i32;
}

/// Raises the soft open-file limit to the hard limit; returns the limit in
/// force afterwards, or `None` if it could not be read.
pub fn raise_open_files() -> Option<u64> {
    let mut lim = RLimit { cur: 0, max: 0 };
    // SAFETY: `lim` is a valid, writable `struct rlimit`.
    if unsafe { getrlimit(RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.cur < lim.max {
        let raised = RLimit { cur: lim.max, max: lim.max };
        // SAFETY: `raised` is a valid `struct rlimit`; raising the soft limit
        // up to the hard one needs no privilege.
        if unsafe { setrlimit(RLIMIT_NOFILE, &raised) } == 0 {
            return Some(raised.cur);
        }
    }
    Some(lim.cur)
}

#[cfg(target_os = "linux")]
unsafe extern "C" {
    fn gettid() -> i32;
    fn setpriority(which: i32, who: u32, prio: i32) -> i32;
}

/// Runs the calling thread at a lower priority (nice 10), for background
/// work that takes a whole CPU for seconds (serializing a snapshot of
/// millions of keys), so that on a machine with few cores the core thread
/// and the peer links still run when they are due. Three nodes each
/// writing a snapshot on two cores stretched a core thread's turn of 30 ms
/// to over 100 ms (`make bench-scale`, at 3 million keys).
pub fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    {
        const PRIO_PROCESS: i32 = 0;
        // SAFETY: plain system calls on this thread's own id; on Linux a
        // thread id given to setpriority names that thread alone.
        let failed = unsafe { setpriority(PRIO_PROCESS, gettid() as u32, 10) } != 0;
        if failed {
            log::debug!("cannot lower a background thread's priority: {}", std::io::Error::last_os_error());
        }
    }
}

/// The resident memory of a process (`"self"` or a pid), from
/// `/proc/<process>/status`; `None` where it cannot be read.
pub fn resident_bytes(process: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{process}/status")).ok()?;
    let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok().map(|kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_limit_reaches_the_hard_limit() {
        let after = super::raise_open_files().expect("getrlimit works");
        assert_eq!(super::raise_open_files(), Some(after), "a second call changes nothing");
        assert!(after >= 1024, "{after}");
    }
}
