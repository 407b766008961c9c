//! The seeded simulator over many seeds: real cores, a lossy, duplicating,
//! reordering, partitioning network, crashes that lose unsynced writes, and
//! the paper's invariants checked after every step. A failure prints the seed
//! and the command that replays it with a full trace.
//!
//! `SIM_SEEDS=N` changes how many seeds run (default 10,000); `make sim`
//! runs far more.

use std::sync::atomic::{AtomicU64, Ordering};

use raftkv::raft::PlantedBug;
use raftkv::sim::simulate::{self, Failure};

fn seeds() -> u64 {
    std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10_000)
}

/// Runs seeds `0..count` on every core; returns how many passed, the first
/// failure, and how often snapshots were installed and nodes crashed
/// while receiving one.
fn run_seeds(count: u64, bug: Option<PlantedBug>, stop_at_first: bool) -> (u64, Option<Box<Failure>>, [u64; 2]) {
    let next = AtomicU64::new(0);
    let passed = AtomicU64::new(0);
    let installed = AtomicU64::new(0);
    let crashed_receiving = AtomicU64::new(0);
    let first: parking_lot::Mutex<Option<Box<Failure>>> = parking_lot::Mutex::new(None);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= count || (stop_at_first && first.lock().is_some()) {
                        return;
                    }
                    match simulate::run(seed, bug, false) {
                        Ok(report) => {
                            passed.fetch_add(1, Ordering::Relaxed);
                            installed.fetch_add(report.stats.snapshots_installed, Ordering::Relaxed);
                            crashed_receiving.fetch_add(report.stats.crashes_mid_transfer, Ordering::Relaxed);
                        }
                        Err(f) => {
                            let mut first = first.lock();
                            if first.as_ref().is_none_or(|g| f.seed < g.seed) {
                                *first = Some(f);
                            }
                        }
                    }
                }
            });
        }
    });
    (passed.into_inner(), first.into_inner(), [installed.into_inner(), crashed_receiving.into_inner()])
}

#[test]
fn ten_thousand_seeds_keep_every_invariant() {
    let count = seeds();
    let (passed, failure, [installed, crashed_receiving]) = run_seeds(count, None, false);
    if let Some(f) = failure {
        panic!("{f}");
    }
    assert_eq!(passed, count);
    println!("{passed} seeds passed; {installed} snapshots installed, {crashed_receiving} crashes mid-transfer");
    // The fault mix must reach snapshot transfer, and crashes in it.
    if count >= 10_000 {
        assert!(installed >= 1000 && crashed_receiving >= 20, "{installed} installs, {crashed_receiving} crashes");
    }
}

/// Each planted bug must be caught within a bounded number of seeds, and the
/// report must name the seed and how to replay it.
fn hunt(bug: PlantedBug) {
    let (_, failure, _) = run_seeds(3_000, Some(bug), true);
    let f = failure.unwrap_or_else(|| panic!("{bug:?} was not caught in 3,000 seeds"));
    let report = f.to_string();
    println!("{bug:?} caught:\n{report}");
    assert!(report.contains("--bug") && report.contains(&format!("{:#x}", f.seed)), "{report}");
    // The failure replays exactly from its seed.
    let again = simulate::run(f.seed, Some(bug), false).expect_err("a failing seed fails again");
    assert_eq!(again.what, f.what);
}

#[test]
fn catches_commit_of_an_older_term_entry() {
    hunt(PlantedBug::CommitOlderTerm);
}

#[test]
fn catches_a_vote_without_the_log_check() {
    hunt(PlantedBug::VoteWithoutLogCheck);
}

#[test]
fn catches_an_acknowledgement_before_persistence() {
    hunt(PlantedBug::AckBeforePersist);
}

#[test]
fn catches_reads_served_without_a_quorum() {
    hunt(PlantedBug::ReadWithoutQuorum);
}
