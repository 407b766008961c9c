//! A damaged data directory is never silent (README, Running a node): a truncated or
//! deleted newest log segment, or a lost `node_id` file next to a log,
//! stops the node (exit 1, naming the file) instead of starting without
//! acknowledged writes.

mod support;

use std::time::Duration;

use support::{TestCluster, text};

/// A one-node cluster with `n` acknowledged keys, stopped.
fn stopped_node_with_keys(n: usize) -> TestCluster {
    let mut c = TestCluster::new(1);
    c.start(1);
    c.wait_for_leader(Duration::from_secs(15)).unwrap_or_else(|| panic!("no leader\n{}", c.logs()));
    let mut conn = c.client(1).unwrap();
    for i in 0..n {
        assert_eq!(text(&conn.cmd(&["SET", &format!("k{i}"), &"v".repeat(200)]).unwrap()), "OK");
    }
    assert_eq!(c.stop(1).and_then(|s| s.code()), Some(0));
    c
}

fn newest_segment(c: &TestCluster) -> std::path::PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(c.nodes[&1].data.join("wal"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segs.sort();
    segs.pop().expect("a segment")
}

fn start_fails(c: &TestCluster, what: &str) -> String {
    let out = c.node_command(1, &[]).output().expect("run node");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{what}: {err}");
    err
}

#[test]
fn a_truncated_newest_segment_stops_the_node() {
    let c = stopped_node_with_keys(300);
    let seg = newest_segment(&c);
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(len / 3).unwrap();
    let err = start_fails(&c, "truncated");
    assert!(err.contains(&seg.display().to_string()) && err.contains("truncated"), "{err}");
}

#[test]
fn a_deleted_newest_segment_stops_the_node() {
    let c = stopped_node_with_keys(300);
    let seg = newest_segment(&c);
    std::fs::remove_file(&seg).unwrap();
    let err = start_fails(&c, "deleted");
    assert!(err.contains(&seg.display().to_string()) && err.contains("missing"), "{err}");
}

#[test]
fn a_lost_node_id_next_to_a_log_stops_the_node_and_no_other_id_takes_the_directory() {
    let c = stopped_node_with_keys(10);
    std::fs::remove_file(c.nodes[&1].data.join("node_id")).unwrap();
    let err = start_fails(&c, "node_id deleted");
    assert!(err.contains("node_id") && err.contains("missing"), "{err}");
}
