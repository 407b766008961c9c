//! Warnings about hostile or broken peers and clients, rate-limited: a flood
//! of bad connections must not become a flood of log lines (or fill a disk).

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// At most `burst` lines per `window`; the rest are counted and reported
/// with the next line let through.
pub struct RateLimited {
    burst: u32,
    window: Duration,
    /// When the window began (none yet), lines in it, lines suppressed.
    state: Mutex<(Option<Instant>, u32, u64)>,
}

impl RateLimited {
    /// A `const fn`, so that a warning's limit can be a `static` beside it.
    pub const fn new(burst: u32, window: Duration) -> RateLimited {
        RateLimited { burst, window, state: Mutex::new((None, 0, 0)) }
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
        match self.admit(Instant::now()) {
            None => {}
            Some(0) => log::log!(level, "{}", line()),
            Some(suppressed) => log::log!(level, "{} ({suppressed} similar lines suppressed)", line()),
        }
    }

    /// Whether a line at `now` is let through, and if so how many were
    /// suppressed since the last one that was.
    fn admit(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock();
        if s.0.is_none_or(|began| now.duration_since(began) >= self.window) {
            *s = (Some(now), 0, s.2);
        }
        if s.1 >= self.burst {
            s.2 += 1;
            return None;
        }
        s.1 += 1;
        Some(std::mem::take(&mut s.2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_per_window_then_the_count_of_what_was_suppressed() {
        static LIMIT: RateLimited = RateLimited::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(LIMIT.admit(t0), Some(0));
        assert_eq!(LIMIT.admit(t0 + Duration::from_secs(1)), Some(0));
        assert_eq!(LIMIT.admit(t0 + Duration::from_secs(2)), None);
        assert_eq!(LIMIT.admit(t0 + Duration::from_secs(59)), None);
        assert_eq!(LIMIT.admit(t0 + Duration::from_secs(60)), Some(2), "a new window says what was left out");
        assert_eq!(LIMIT.admit(t0 + Duration::from_secs(61)), Some(0));
        assert_eq!(LIMIT.admit(t0 + Duration::from_secs(62)), None);
    }
}
