//! Disks that fill (README, Limits): replicas fill their disks at the same rate, so
//! a whole cluster runs out of space at about the same time. Each node
//! stops acknowledging and exits 1, saying why; once space is back, every
//! node restarts with every write that was acknowledged.
//!
//! Each node's data directory is its own small tmpfs (mounted by the test,
//! as root, and unmounted when it ends). Where tmpfs cannot be mounted the
//! test is skipped with a message, unless RAFTKV_REQUIRE_ROOT=1 (as in CI).

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::{Client, TestCluster, text};

/// Mounted filesystems, unmounted (lazily, so a straggler cannot keep one)
/// when dropped.
struct Mounts {
    dir: tempfile::TempDir,
    points: Vec<PathBuf>,
}

impl Mounts {
    fn mount(&mut self, name: &str, size_mb: u64) -> Result<PathBuf, String> {
        let point = self.dir.path().join(name);
        std::fs::create_dir_all(&point).map_err(|e| e.to_string())?;
        mount(&["-t", "tmpfs", "-o", &format!("size={size_mb}M"), "tmpfs"], &point)?;
        self.points.push(point.clone());
        Ok(point)
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        for p in &self.points {
            let _ = Command::new("umount").arg("-l").arg(p).status();
        }
    }
}

fn mount(args: &[&str], point: &Path) -> Result<(), String> {
    let out = Command::new("mount").args(args).arg(point).output().map_err(|e| format!("mount: {e}"))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
    }
}

fn mounts() -> Option<Mounts> {
    let mut m = Mounts { dir: tempfile::tempdir().expect("temp dir"), points: Vec::new() };
    match m.mount("probe", 1) {
        Ok(_) => Some(m),
        Err(e) => {
            assert!(
                std::env::var("RAFTKV_REQUIRE_ROOT").is_err(),
                "mounting tmpfs is required (RAFTKV_REQUIRE_ROOT) but failed: {e}"
            );
            eprintln!("skipped: cannot mount tmpfs here ({e}); run as root");
            None
        }
    }
}

fn value_of(i: u32) -> Vec<u8> {
    let mut v = vec![b'a' + (i % 26) as u8; 512 << 10];
    v[..4].copy_from_slice(&i.to_le_bytes());
    v
}

#[test]
fn a_cluster_whose_disks_fill_stops_and_restarts_with_every_acknowledged_write() {
    let Some(mut mounts) = mounts() else { return };
    let mut c = TestCluster::new(3);
    let ids: Vec<u64> = c.nodes.keys().copied().collect();
    for &id in &ids {
        // Two 64 MiB log segments fit, a third does not.
        let point = mounts.mount(&format!("node-{id}"), 160).unwrap_or_else(|e| panic!("mount: {e}"));
        c.nodes.get_mut(&id).expect("node").data = point.join("data");
    }
    c.start_all();
    c.wait_for_leader(Duration::from_secs(15)).unwrap_or_else(|| panic!("no leader\n{}", c.logs()));
    assert!(c.logs().contains("free of"), "the free space is logged at start\n{}", c.logs());

    // Write distinct 512 KiB values until the cluster stops answering.
    let addrs: Vec<String> = ids.iter().map(|id| c.nodes[id].client_addr.clone()).collect();
    let mut acked: BTreeMap<u32, ()> = BTreeMap::new();
    let mut failures = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut i = 0u32;
    while failures < 20 && Instant::now() < deadline {
        let addr = &addrs[i as usize % addrs.len()];
        let key = format!("k{i}");
        let ok = Client::connect(addr)
            .and_then(|mut conn| conn.cmd_bytes(&[b"SET", key.as_bytes(), &value_of(i)]))
            .is_ok_and(|r| text(&r) == "OK");
        match ok {
            true => {
                acked.insert(i, ());
                failures = 0;
            }
            false => {
                failures += 1;
                std::thread::sleep(Duration::from_millis(250));
            }
        }
        i += 1;
    }
    println!("{} writes of 512 KiB acknowledged before the disks filled", acked.len());
    assert!(acked.len() >= 100, "only {} writes before the cluster stopped\n{}", acked.len(), c.logs());

    // Nodes whose disk filled exit 1, saying why.
    std::thread::sleep(Duration::from_secs(2));
    let mut exited = Vec::new();
    for &id in &ids {
        if let Some(status) = c.exited(id) {
            assert_eq!(status.code(), Some(1), "node {id}: {status}\n{}", c.logs());
            exited.push(id);
        }
    }
    println!("nodes that exited on a full disk: {exited:?}");
    for line in c.logs().lines().filter(|l| l.contains("No space") || l.contains("free of")) {
        println!("{line}");
    }
    assert!(exited.len() >= 2, "a majority stops when the disks fill: {exited:?}\n{}", c.logs());
    assert!(c.logs().contains("No space left on device"), "{}", c.logs());
    assert!(c.logs().contains("free of"), "{}", c.logs());

    // Space comes back: every node restarts with every acknowledged write.
    for &id in &ids {
        let point = mounts.dir.path().join(format!("node-{id}"));
        mount(&["-o", "remount,size=1024M"], &point).unwrap_or_else(|e| panic!("remount: {e}"));
    }
    for &id in &exited {
        c.start(id);
    }
    let leader = c.wait_for_leader(Duration::from_secs(30)).unwrap_or_else(|| panic!("no leader\n{}", c.logs()));
    let mut conn = c.client(leader).expect("connect");
    assert_eq!(text(&conn.cmd(&["SET", "after", "space"]).unwrap()), "OK", "{}", c.logs());
    for &i in acked.keys() {
        let reply = conn.cmd(&["GET", &format!("k{i}")]).unwrap();
        let raftkv::resp::Reply::Bulk(Some(v)) = reply else { panic!("k{i} lost: {reply:?}\n{}", c.logs()) };
        assert!(v == value_of(i), "k{i} holds another value");
    }
    c.assert_none_exited();
}
