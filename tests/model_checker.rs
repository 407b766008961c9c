//! The bounded model checker: every interleaving of a three-node cluster up
//! to a depth, with the paper's invariants checked after every event. The
//! correct core passes; each planted bug is found, with the shortest trace.

use raftkv::raft::PlantedBug;
use raftkv::sim::explore::{Bounds, Outcome, explore};

fn run(name: &str, bounds: &Bounds) -> Outcome {
    let start = std::time::Instant::now();
    let outcome = explore(bounds);
    println!(
        "{name}: {} states, depth {}{}, {:.1?}",
        outcome.states,
        outcome.depth_reached,
        if outcome.truncated { " (state budget reached)" } else { "" },
        start.elapsed()
    );
    if let Some(trace) = &outcome.violation {
        println!("{}", trace.join("\n"));
    }
    outcome
}

fn with_bug(mut bounds: Bounds, bug: PlantedBug) -> Bounds {
    bounds.planted_bug = Some(bug);
    bounds
}

#[test]
fn figure8_start_correct_core_is_safe() {
    let o = run("figure 8 start, correct core", &Bounds::figure8());
    assert!(o.violation.is_none());
    assert!(!o.truncated, "the search must cover its whole depth");
}

#[test]
fn figure8_start_finds_commit_of_older_term() {
    let o = run("figure 8 start, planted bug", &with_bug(Bounds::figure8(), PlantedBug::CommitOlderTerm));
    let trace = o.violation.expect("the figure-8 bug is found");
    assert!(trace.last().unwrap().contains("violation"));
}

#[test]
fn fresh_start_correct_core_is_safe() {
    let o = run("fresh start, correct core", &Bounds::fresh());
    assert!(o.violation.is_none());
    assert!(!o.truncated, "the search must cover its whole depth");
}

#[test]
fn fresh_start_finds_vote_without_log_check() {
    let o = run("fresh start, vote bug", &with_bug(Bounds::fresh(), PlantedBug::VoteWithoutLogCheck));
    assert!(o.violation.is_some(), "the vote bug is found");
}

#[test]
fn fresh_start_finds_ack_before_persist() {
    let o = run("fresh start, persistence bug", &with_bug(Bounds::fresh(), PlantedBug::AckBeforePersist));
    assert!(o.violation.is_some(), "the persistence bug is found");
}

#[test]
fn reads_across_a_restart_correct_core_is_safe() {
    let o = run("reads across a restart, correct core", &Bounds::reads_across_restart());
    assert!(o.violation.is_none());
    assert!(!o.truncated, "the search must cover its whole depth");
}

#[test]
fn reads_across_a_restart_finds_read_ids_reused() {
    let o = run(
        "reads across a restart, read ids reused",
        &with_bug(Bounds::reads_across_restart(), PlantedBug::ReadIdsReused),
    );
    let trace = o.violation.expect("the stale read is found");
    assert!(trace.last().unwrap().contains("stale read"), "{}", trace.join("\n"));
}

#[test]
fn async_writes_correct_core_is_safe() {
    let o = run("writes under way, correct core", &Bounds::async_writes());
    assert!(o.violation.is_none());
    assert!(!o.truncated, "the search must cover its whole depth");
}

#[test]
fn async_writes_finds_leader_counting_unwritten_entries() {
    let o = run(
        "writes under way, leader counts unwritten entries",
        &with_bug(Bounds::async_writes(), PlantedBug::LeaderCountsUnwrittenEntries),
    );
    let trace = o.violation.expect("the lost write is found");
    assert!(trace.last().unwrap().contains("violation"), "{}", trace.join("\n"));
}
