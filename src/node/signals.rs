//! SIGTERM and SIGINT ask for a clean shutdown (README, Running a node). The handler only
//! sets an atomic flag, the one thing a signal handler may safely do; the
//! core loop sees it within a tick. Without the libc crate, the C library's
//! `signal` (linked into every Rust program on Unix) is declared here.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

unsafe extern "C" {
    fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
}

extern "C" fn on_signal(_signum: i32) {
    STOP_REQUESTED.store(true, Ordering::SeqCst);
}

/// Installs the handlers. Call once, early in `main`.
pub fn install() {
    // SAFETY: `on_signal` is async-signal-safe (a single atomic store) and
    // lives for the whole program; `signal` has no other preconditions.
    unsafe {
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
    }
}

pub fn stop_requested() -> bool {
    STOP_REQUESTED.load(Ordering::SeqCst)
}

/// Asks for shutdown from inside the program (tests, fatal errors).
pub fn request_stop() {
    STOP_REQUESTED.store(true, Ordering::SeqCst);
}
