//! Warnings about hostile or broken peers and clients, rate-limited: a flood
//! of bad connections must not become a flood of log lines (or fill a disk).

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// At most `burst` lines per `window`; the rest are counted and reported
/// with the next line let through.
pub struct RateLimited {
    burst: u32,
    window: Duration,
    state: Mutex<(Instant, u32, u64)>,
}

impl RateLimited {
    pub fn new(burst: u32, window: Duration) -> RateLimited {
        RateLimited { burst, window, state: Mutex::new((Instant::now(), 0, 0)) }
    }

    /// Logs `line` at warn level unless over the limit.
    pub fn warn(&self, line: impl FnOnce() -> String) {
        self.log(log::Level::Warn, line);
    }

    /// Logs `line` at error level unless over the limit.
    pub fn error(&self, line: impl FnOnce() -> String) {
        self.log(log::Level::Error, line);
    }

    fn log(&self, level: log::Level, line: impl FnOnce() -> String) {
        let mut s = self.state.lock();
        let now = Instant::now();
        if now.duration_since(s.0) >= self.window {
            *s = (now, 0, s.2);
        }
        if s.1 >= self.burst {
            s.2 += 1;
            return;
        }
        s.1 += 1;
        let suppressed = std::mem::take(&mut s.2);
        drop(s);
        if suppressed > 0 {
            log::log!(level, "{} ({suppressed} similar lines suppressed)", line());
        } else {
            log::log!(level, "{}", line());
        }
    }
}
