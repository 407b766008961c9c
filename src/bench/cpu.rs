//! Processor time during a measurement: how busy the whole machine was and
//! how much of it each server process and the load generator used, from
//! the kernel's accounting in `/proc` (Linux). A throughput figure alone
//! cannot tell a system that is slow from one that is out of processors;
//! the time each request costs in processor time can.

use std::time::Instant;

unsafe extern "C" {
    fn sysconf(name: i32) -> i64;
}

/// `_SC_CLK_TCK` on Linux: the unit of the times in `/proc/*/stat`.
const SC_CLK_TCK: i32 = 2;

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant of the system and has no other effect.
    let t = unsafe { sysconf(SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// The busy and total times of all processors together, in ticks (the
/// first line of `/proc/stat`). Time stolen by the hypervisor counts as
/// neither: the machine did not have it.
fn machine() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let f: Vec<u64> = line.split_whitespace().filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...
    let &[user, nice, system, idle, iowait, irq, softirq, ..] = f.as_slice() else { return None };
    let busy = user + nice + system + irq + softirq;
    Some((busy, busy + idle + iowait))
}

/// User plus system time of every thread of a process and of its children
/// that it waited for (fields 14 to 17 of `/proc/<pid>/stat`, counted after
/// the command's name, which may itself hold spaces and parentheses), in
/// ticks. The children count so that a load generator run as a program
/// (wrk, for etcd) is charged to the process that ran it.
fn process(pid: &str) -> Option<u64> {
    times_of(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn times_of(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let times = rest.split_whitespace().skip(11).take(4).map(|f| f.parse::<u64>().ok());
    let times: Option<Vec<u64>> = times.collect();
    times.filter(|t| t.len() == 4).map(|t| t.iter().sum())
}

/// Readings taken when a measurement starts.
pub struct Meter {
    at: Instant,
    machine: Option<(u64, u64)>,
    servers: Vec<(u32, Option<u64>)>,
    own: Option<u64>,
}

/// What a measurement used, in processors (1.0 is one processor busy for
/// the whole time).
#[derive(Clone, Debug, Default)]
pub struct CpuUse {
    /// The whole machine, every process; `None` where `/proc` could not be
    /// read.
    pub machine: Option<f64>,
    /// Each server process, in the order given to [`Meter::start`].
    pub servers: Vec<Option<f64>>,
    /// This process and the programs it ran and waited for meanwhile: the
    /// load generator.
    pub own: Option<f64>,
    /// How many processors the machine has.
    pub processors: usize,
}

impl Meter {
    /// Starts measuring the machine, the processes `servers` and this one.
    pub fn start(servers: &[u32]) -> Meter {
        Meter {
            at: Instant::now(),
            machine: machine(),
            servers: servers.iter().map(|&pid| (pid, process(&pid.to_string()))).collect(),
            own: process("self"),
        }
    }

    pub fn stop(self) -> CpuUse {
        let seconds = self.at.elapsed().as_secs_f64().max(1e-9);
        let per_second = ticks_per_second();
        let used = |before: Option<u64>, after: Option<u64>| -> Option<f64> {
            Some(after?.checked_sub(before?)? as f64 / per_second / seconds)
        };
        let processors = std::thread::available_parallelism().map_or(1, |n| n.get());
        let machine = match (self.machine, machine()) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                Some((b1.saturating_sub(b0)) as f64 / (t1 - t0) as f64 * processors as f64)
            }
            _ => None,
        };
        CpuUse {
            machine,
            servers: self.servers.into_iter().map(|(pid, before)| used(before, process(&pid.to_string()))).collect(),
            own: used(self.own, process("self")),
            processors,
        }
    }
}

impl CpuUse {
    /// The first server process given (the leader, where there is one).
    pub fn leader(&self) -> Option<f64> {
        self.servers.first().copied().flatten()
    }

    /// The server processes together; `None` if any could not be read.
    pub fn servers_total(&self) -> Option<f64> {
        self.servers.iter().copied().sum()
    }

    /// Processor time per operation, in microseconds, at `ops_per_sec`.
    pub fn per_op_us(processors: Option<f64>, ops_per_sec: f64) -> Option<f64> {
        processors.filter(|_| ops_per_sec > 0.0).map(|p| p / ops_per_sec * 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_thread_shows_in_this_process_and_the_machine() {
        let meter = Meter::start(&[std::process::id()]);
        let until = Instant::now() + std::time::Duration::from_millis(300);
        let mut x = 0u64;
        while Instant::now() < until {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let used = meter.stop();
        let own = used.own.expect("this process's times");
        // One thread spun the whole time; the clock ticks are 10 ms here.
        assert!(own > 0.5, "this process used {own} processors");
        assert!(used.servers[0].is_some_and(|s| (s - own).abs() < 0.2), "{used:?}");
        assert!(used.machine.is_some_and(|m| m > 0.5), "{used:?}");
        assert_eq!(CpuUse::per_op_us(Some(0.5), 1000.0), Some(500.0));
        assert_eq!(CpuUse::per_op_us(Some(0.5), 0.0), None);
    }

    #[test]
    fn a_command_name_with_spaces_and_parentheses_is_skipped_whole() {
        let line = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 70 5 6 20 0 3 0 1 2 3";
        assert_eq!(times_of(line), Some(331));
        assert_eq!(times_of("42 (cut short) S 1 42"), None);
    }
}
