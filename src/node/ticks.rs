//! The Raft core's clock: how many ticks the core thread runs at each
//! wake-up of its ticker.
//!
//! A core thread held up (no CPU for it on a saturated machine, a long turn,
//! a SIGSTOP) owes many ticks at once. Run all of them before anything else
//! and a leader counts its followers silent for the whole time it could not
//! read them: their answers wait in its peer readers' sockets, which were
//! held up too. Measured (3 nodes on 2 vCPUs, 3 million pipelined SETs,
//! all nodes snapshotting at once): a leader's core ticked 220 ms after its
//! last tick, ran 50 ticks at once, found no follower heard from in 50 ticks
//! and stepped down, though both followers were alive. So the debt is paid
//! a few ticks a wake-up, with the inputs that arrived stepped in between;
//! more than an election timeout's worth of debt is forgiven, since it
//! changes nothing more. Owing a few ticks is the normal case (the ticker
//! wakes the core only between turns, and a loaded turn lasts 10-20 ms,
//! several ticks): up to a burst (a third of the shortest election timeout)
//! they are all run at once, so the Raft clock keeps pace with the wall
//! clock.

use std::time::{Duration, Instant};

/// The smallest burst: ticks always run at once.
const BURST_MIN: u64 = 4;

pub struct Ticks {
    tick: Duration,
    /// Ticks run at most per wake-up.
    burst: u64,
    /// Ticks owed beyond this are dropped.
    debt_max: u64,
    /// The instant up to which time has been ticked.
    ticked_to: Instant,
    /// The last call to `due`.
    woke: Instant,
}

impl Ticks {
    pub fn new(tick: Duration, burst: u64, debt_max: u64, now: Instant) -> Ticks {
        let burst = burst.max(BURST_MIN);
        Ticks {
            tick: tick.max(Duration::from_nanos(1)),
            burst,
            debt_max: debt_max.max(burst),
            ticked_to: now,
            woke: now,
        }
    }

    /// Ticks to run now, at most a burst; the rest are owed to the next
    /// wake-ups.
    pub fn due(&mut self, now: Instant) -> u64 {
        self.woke = now;
        let owed = (now.saturating_duration_since(self.ticked_to).as_nanos() / self.tick.as_nanos()) as u64;
        if owed > self.debt_max {
            self.ticked_to = now - self.tick * self.debt_max as u32;
        }
        let run = owed.min(self.debt_max).min(self.burst);
        self.ticked_to += self.tick * run as u32;
        run
    }

    /// Time since the last wake-up: a tick's length, unless the thread was
    /// held up.
    pub fn since_wake(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.woke)
    }

    /// How far behind the clock is: time not yet ticked.
    #[cfg(test)]
    fn behind(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.ticked_to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(3);
    /// The defaults: 150-300 ms election timeouts in ticks of 3 ms.
    const BURST: u64 = 16;
    const DEBT_MAX: u64 = 101;

    #[test]
    fn at_its_pace_the_clock_runs_one_tick_a_tick() {
        let start = Instant::now();
        let mut ticks = Ticks::new(TICK, BURST, DEBT_MAX, start);
        let total: u64 = (1..=1000).map(|n| ticks.due(start + TICK * n)).sum();
        assert_eq!(total, 1000);
        assert!(ticks.behind(start + TICK * 1000) < TICK);
    }

    #[test]
    fn a_held_up_thread_pays_its_debt_a_few_ticks_at_a_time() {
        let start = Instant::now();
        let mut ticks = Ticks::new(TICK, BURST, DEBT_MAX, start);
        // 220 ms held up: 73 ticks owed.
        let mut now = start + Duration::from_millis(220);
        assert_eq!(ticks.due(now), BURST);
        let mut total = BURST;
        let mut wakeups = 1;
        while ticks.behind(now) >= TICK {
            now += TICK;
            let run = ticks.due(now);
            assert!((1..=BURST).contains(&run), "{run}");
            total += run;
            wakeups += 1;
        }
        // Every tick owed is run, the ones that passed while paying too.
        assert_eq!(total, (now - start).as_nanos() as u64 / TICK.as_nanos() as u64);
        assert!((4..=6).contains(&wakeups), "{wakeups}");
    }

    #[test]
    fn wake_ups_a_busy_turn_apart_keep_the_clock_at_pace() {
        // The ticker wakes the core between turns of 30 ms: 10 ticks owed
        // each time, all run.
        let start = Instant::now();
        let mut ticks = Ticks::new(TICK, BURST, DEBT_MAX, start);
        let total: u64 = (1..=1000).map(|n| ticks.due(start + TICK * (10 * n))).sum();
        assert_eq!(total, 10_000);
    }

    #[test]
    fn a_debt_past_the_cap_is_forgiven() {
        let start = Instant::now();
        let mut ticks = Ticks::new(TICK, BURST, DEBT_MAX, start);
        let now = start + Duration::from_secs(10);
        let mut total = 0;
        for _ in 0..100 {
            total += ticks.due(now);
        }
        assert_eq!(total, 101, "ten seconds held up cost an election timeout's worth of ticks, no more");
        assert_eq!(ticks.due(now), 0);
    }
}
