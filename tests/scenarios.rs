//! Runs every scenario script in tests/scenarios/. Each file tells one story
//! from the Raft paper and shows, message by message, what the core does.
//! `RAFTKV_REWRITE=1 cargo test --test scenarios` rewrites the expected output
//! from what the code does now; review the diff before committing it.

use std::path::Path;

#[test]
fn scenarios() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let rewrite = std::env::var("RAFTKV_REWRITE").is_ok_and(|v| v == "1");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/scenarios exists")
        .map(|e| e.expect("readable directory").path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no scenarios in {}", dir.display());
    let failures: Vec<String> = paths.iter().filter_map(|p| raftkv::sim::script::run_file(p, rewrite).err()).collect();
    assert!(failures.is_empty(), "{} scenario(s) failed:\n{}", failures.len(), failures.join("\n"));
}
