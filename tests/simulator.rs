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

/// What the passing runs exercised, summed.
#[derive(Default)]
struct Reached {
    installed: AtomicU64,
    crashed_receiving: AtomicU64,
    admin: AtomicU64,
    across_restart: AtomicU64,
    rejected: AtomicU64,
    superseded: AtomicU64,
}

/// Runs seeds `0..count` on every core; returns how many passed, the first
/// failure, and what the runs reached.
fn run_seeds(count: u64, bug: Option<PlantedBug>, stop_at_first: bool) -> (u64, Option<Box<Failure>>, Reached) {
    run_seeds_counting(count, bug, stop_at_first, |_| true)
}

/// As `run_seeds`, but only failures that `counts` accepts are reported
/// (the others count as neither passed nor failed).
fn run_seeds_counting(
    count: u64,
    bug: Option<PlantedBug>,
    stop_at_first: bool,
    counts: impl Fn(&Failure) -> bool + Sync,
) -> (u64, Option<Box<Failure>>, Reached) {
    let next = AtomicU64::new(0);
    let passed = AtomicU64::new(0);
    let reached = Reached::default();
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
                            let s = &report.stats;
                            reached.installed.fetch_add(s.snapshots_installed, Ordering::Relaxed);
                            reached.crashed_receiving.fetch_add(s.crashes_mid_transfer, Ordering::Relaxed);
                            reached.admin.fetch_add(s.admin_accepted, Ordering::Relaxed);
                            reached.across_restart.fetch_add(s.delivered_across_restart, Ordering::Relaxed);
                            reached.rejected.fetch_add(s.snapshots_rejected, Ordering::Relaxed);
                            reached.superseded.fetch_add(s.transfers_superseded, Ordering::Relaxed);
                        }
                        Err(f) if !counts(&f) => {}
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
    (passed.into_inner(), first.into_inner(), reached)
}

#[test]
fn ten_thousand_seeds_keep_every_invariant() {
    let count = seeds();
    let (passed, failure, reached) = run_seeds(count, None, false);
    if let Some(f) = failure {
        panic!("{f}");
    }
    assert_eq!(passed, count);
    let installed = reached.installed.into_inner();
    let crashed_receiving = reached.crashed_receiving.into_inner();
    let admin = reached.admin.into_inner();
    let across_restart = reached.across_restart.into_inner();
    let rejected = reached.rejected.into_inner();
    let superseded = reached.superseded.into_inner();
    println!(
        "{passed} seeds passed; {installed} snapshots installed, {crashed_receiving} crashes mid-transfer, \
         {rejected} damaged snapshots rejected, {superseded} transfers superseded by another of the same \
         snapshot, {admin} membership changes and transfers, {across_restart} messages delivered to a later \
         process of their node"
    );
    // The fault mix must reach snapshot transfer, crashes in it, damaged
    // snapshots, membership changes, and messages outliving a restart.
    if count >= 10_000 {
        assert!(installed >= 1000 && crashed_receiving >= 20, "{installed} installs, {crashed_receiving} crashes");
        assert!(rejected >= 20, "{rejected} damaged snapshots rejected");
        assert!(superseded >= 20, "{superseded} transfers superseded by another of the same snapshot");
        assert!(admin >= 1000, "{admin} membership changes and transfers");
        assert!(across_restart >= 1000, "{across_restart} messages delivered across a restart");
    }
}

/// Each planted bug must be caught within a bounded number of seeds, and the
/// report must name the seed and how to replay it.
fn hunt(bug: PlantedBug) -> Box<Failure> {
    // A planted safety bug must be caught by a safety check: a run that
    // only stalls (the bug can also cost liveness), or a history the
    // linearizability checker gave up on, does not count.
    let (_, failure, _) = run_seeds_counting(3_000, Some(bug), true, |f| {
        !f.what.starts_with("liveness") && !f.what.contains("ran out of budget")
    });
    let f = failure.unwrap_or_else(|| panic!("{bug:?} was not caught in 3,000 seeds"));
    println!("{bug:?} caught at seed {} of the hunt", f.seed);
    let report = f.to_string();
    println!("{bug:?} caught:\n{report}");
    assert!(report.contains("--bug") && report.contains(&format!("{:#x}", f.seed)), "{report}");
    // The failure replays exactly from its seed.
    let again = simulate::run(f.seed, Some(bug), false).expect_err("a failing seed fails again");
    assert_eq!(again.what, f.what);
    f
}

#[test]
fn catches_a_membership_change_without_joint_consensus() {
    hunt(PlantedBug::SkipJointConsensus);
}

/// Issue: a restarted follower numbered its reads from 0 again and took
/// the leader's answer to its previous process's read for a new one.
#[test]
fn catches_read_ids_reused_across_restarts() {
    let f = hunt(PlantedBug::ReadIdsReused);
    assert!(f.what.starts_with("stale read"), "{}", f.what);
}

/// Issue: a write queued for forwarding survived a change of leader and was
/// applied after writes its connection sent later.
#[test]
fn catches_a_forward_queue_kept_across_leaders() {
    let f = hunt(PlantedBug::ForwardQueueKept);
    assert!(f.what.starts_with("per-connection order"), "{}", f.what);
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

/// Issue: a follower receiving a snapshot from a leader that died took the
/// next leader's chunks of the same snapshot for the rest of the first
/// transfer; the file it wrote was not the snapshot, and the node stopped.
#[test]
fn catches_snapshot_chunks_taken_by_index_alone() {
    let f = hunt(PlantedBug::SnapshotChunksByIndex);
    assert!(f.what.contains("storage"), "{}", f.what);
}

/// Issue: reads were judged by the store's clock alone. A key that an entry
/// brought in already past its deadline by the leader's clock (a deadline
/// from a slower clock, or a commit slower than the time to live) was seen by
/// reads that reached the leader after the deadline, on followers serving
/// past the read index too. Found by the simulator's drifting clocks.
#[test]
fn catches_reads_judged_without_the_leaders_clock() {
    let f = hunt(PlantedBug::ReadClockIgnored);
    assert!(f.what.starts_with("expiry"), "{}", f.what);
}
