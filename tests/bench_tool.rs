//! `bin/bench` and `bin/lab` as users run them: the load generator against
//! a real cluster (and its checks shown to fail when they should), and one
//! whole experiment end to end.

mod support;

use std::process::{Command, Output};
use std::time::Duration;

use support::{TestCluster, free_port, text};

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bench")).args(args).output().expect("run bench")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

#[test]
fn inserts_read_back_and_a_wrong_value_is_caught() {
    let mut c = TestCluster::new(3);
    c.start_all();
    let leader = c.wait_for_leader(Duration::from_secs(15)).unwrap_or_else(|| panic!("no leader\n{}", c.logs()));
    let addr = c.nodes[&leader].client_addr.clone();
    let dir = tempfile::tempdir().expect("temp dir");
    let csv = dir.path().join("out.csv");
    let csv = csv.to_str().expect("utf-8 path");
    let common = ["-a", &addr, "--keys", "2000", "-c", "4", "-P", "8", "--quiet", "--csv", csv];
    let insert = bench(&[&common[..], &["--insert", "--label", "insert"]].concat());
    assert!(insert.status.success(), "{}", stdout(&insert));
    assert!(stdout(&insert).starts_with("2000 ops in"), "{}", stdout(&insert));
    let read = bench(&[&common[..], &["--read-back", "--label", "read"]].concat());
    assert!(read.status.success(), "{}", stdout(&read));

    // One value changed behind the tool's back: the read-back must say so.
    let mut client = c.client(leader).expect("connect");
    assert_eq!(text(&client.cmd(&["SET", "key:000000000007", "other"]).expect("SET")), "OK");
    let read = bench(&[&common[..], &["--read-back", "--label", "read"]].concat());
    assert_eq!(read.status.code(), Some(1), "{}", stdout(&read));
    assert!(stdout(&read).contains("1 reads did not find the inserted value"), "{}", stdout(&read));

    let rows = std::fs::read_to_string(csv).expect("csv");
    let lines: Vec<&str> = rows.lines().collect();
    assert_eq!(lines.len(), 4, "a header and three rows:\n{rows}");
    assert!(
        lines[0].starts_with("label,connections,pipeline") && lines[1].starts_with("insert,4,8,insert,100,2000,0,")
    );
}

#[test]
fn a_mix_for_a_time_and_clear_errors() {
    let mut c = TestCluster::new(3);
    c.start_all();
    c.wait_for_leader(Duration::from_secs(15)).unwrap_or_else(|| panic!("no leader\n{}", c.logs()));
    // Connections spread over every node: followers forward the writes.
    let all: Vec<String> = c.nodes.values().map(|n| n.client_addr.clone()).collect();
    let out = bench(&["-a", &all.join(","), "-c", "6", "-r", "50", "--seconds", "1", "--quiet"]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains("ops/s; latency ms p50"), "{}", stdout(&out));

    let nobody = format!("127.0.0.1:{}", free_port());
    let out = bench(&["-a", &nobody, "-c", "1", "-n", "5", "--quiet"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("could not connect to"), "{}", stdout(&out));

    for bad in [&["-c", "0"][..], &["-r", "101"], &["--seconds", "-1"], &["--frobnicate"], &["-c"]] {
        let out = bench(bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", stdout(&out));
        assert!(stdout(&out).contains("usage: bench"), "{bad:?}");
    }
}

/// The stragglers experiment, short: clusters, proxies, loads, and the
/// CSV, plots and summary it must leave.
#[test]
fn an_experiment_writes_its_results() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_lab"))
        .args(["--seconds", "0.3", "--out"])
        .arg(dir.path())
        .arg("stragglers")
        .output()
        .expect("run lab");
    assert!(out.status.success(), "{}", stdout(&out));
    let md = std::fs::read_to_string(dir.path().join("stragglers.md")).expect("summary");
    assert!(md.contains("| slow leader | 20 | 0/100 read/write |"), "{md}");
    assert!(md.contains("![") && dir.path().join("stragglers-writes.svg").exists());
    let csv = std::fs::read_to_string(dir.path().join("stragglers.csv")).expect("csv");
    assert_eq!(csv.lines().count(), 1 + 2 * (1 + 4 * 3), "{csv}");
    let bad = Command::new(env!("CARGO_BIN_EXE_lab")).arg("nonsense").output().expect("run lab");
    assert_eq!(bad.status.code(), Some(2));
}
