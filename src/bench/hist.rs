//! A latency histogram: log-linear buckets (exact below 256 ns, then 128
//! sub-buckets per power of two, so any reported value is within 0.8% of
//! what was recorded), fixed size, mergeable, no allocation per sample.

use std::time::Duration;

const EXACT: u64 = 256;
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
/// Enough buckets for any u64 nanosecond value.
const BUCKETS: usize = EXACT as usize + 64 * SUB as usize;

#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max_ns: u64,
    sum_ns: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: vec![0; BUCKETS], total: 0, max_ns: 0, sum_ns: 0 }
    }
}

fn bucket(ns: u64) -> usize {
    if ns < EXACT {
        return ns as usize;
    }
    let top = 63 - ns.leading_zeros(); // >= 8
    let shift = top - SUB_BITS;
    let mantissa = (ns >> shift) - SUB; // 0..SUB
    EXACT as usize + (shift as usize - 1) * SUB as usize + mantissa as usize
}

/// The middle of the values bucket `i` holds.
fn value(i: usize) -> u64 {
    if i < EXACT as usize {
        return i as u64;
    }
    let k = i - EXACT as usize;
    let shift = (k / SUB as usize + 1) as u32;
    let low = (SUB + (k % SUB as usize) as u64) << shift;
    low + (1u64 << shift) / 2
}

impl Histogram {
    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[bucket(ns)] += 1;
        self.total += 1;
        self.max_ns = self.max_ns.max(ns);
        self.sum_ns += ns as u128;
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max_ns = self.max_ns.max(other.max_ns);
        self.sum_ns += other.sum_ns;
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value below which a fraction `q` (0..=1) of the samples fall.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.total == 0 {
            return Duration::ZERO;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Duration::from_nanos(value(i).min(self.max_ns));
            }
        }
        self.max()
    }

    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max_ns)
    }

    pub fn mean(&self) -> Duration {
        if self.total == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos((self.sum_ns / self.total as u128) as u64)
    }
}

/// The figures every report shows, in milliseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Figures {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Histogram {
    pub fn figures_ms(&self) -> Figures {
        Figures {
            p50: ms(self.quantile(0.5)),
            p90: ms(self.quantile(0.9)),
            p99: ms(self.quantile(0.99)),
            p999: ms(self.quantile(0.999)),
            max: ms(self.max()),
            mean: ms(self.mean()),
        }
    }
}

/// Milliseconds, for tables.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_trip_within_one_percent() {
        let mut v = 1u64;
        while v < u64::MAX / 3 {
            let got = value(bucket(v));
            let err = (got as f64 - v as f64).abs() / v as f64;
            assert!(err < 0.008, "{v} -> {got}");
            assert!(bucket(v) < BUCKETS);
            v = v * 3 / 2 + 1;
        }
        assert!(bucket(u64::MAX) < BUCKETS);
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let mut h = Histogram::default();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let near = |d: Duration, us: f64| (d.as_secs_f64() * 1e6 - us).abs() / us < 0.01;
        assert!(near(h.quantile(0.5), 500.0), "{:?}", h.quantile(0.5));
        assert!(near(h.quantile(0.99), 990.0), "{:?}", h.quantile(0.99));
        assert_eq!(h.max(), Duration::from_micros(1000));
        assert!(near(h.mean(), 500.5));
        let mut other = Histogram::default();
        other.record(Duration::from_secs(2));
        h.merge(&other);
        assert_eq!(h.count(), 1001);
        assert_eq!(h.quantile(1.0), Duration::from_secs(2));
    }
}
