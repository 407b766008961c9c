//! Writers for the process tests: threads that SET keys they own through
//! random nodes under faults, remembering what was acknowledged, and the
//! check that every acknowledged write survived, on every running node.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use raftkv::resp::Reply;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use super::{Client, TestCluster, text};

/// What the writers were told: for each key, the value of the last
/// acknowledged write and the values of writes after it whose outcome is
/// unknown (any of those may be what the key holds).
#[derive(Default)]
pub struct Acked {
    pub keys: BTreeMap<String, (Option<String>, Vec<String>)>,
    pub writes_ok: u64,
}

/// Writers that each own some keys and write increasing values to them
/// through random nodes, until told to stop.
pub fn run_writers(
    c: &TestCluster,
    stop: Arc<AtomicBool>,
    writers: u64,
    seed: u64,
) -> Vec<std::thread::JoinHandle<Acked>> {
    let addrs: Vec<String> = c.nodes.values().map(|n| n.client_addr.clone()).collect();
    (0..writers)
        .map(|w| {
            let (addrs, stop) = (addrs.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ w);
                let mut acked = Acked::default();
                let mut client: Option<Client> = None;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let key = format!("w{w}-k{}", rng.random_range(0..20));
                    let value = format!("{n}");
                    if client.is_none() {
                        client = Client::connect(&addrs[rng.random_range(0..addrs.len())]).ok();
                    }
                    let Some(conn) = client.as_mut() else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    let entry = acked.keys.entry(key.clone()).or_default();
                    match conn.cmd(&["SET", &key, &value]) {
                        Ok(Reply::Simple(_)) => {
                            // Unknown writes before it stay possible: one that
                            // timed out may still take effect later.
                            entry.0 = Some(value);
                            acked.writes_ok += 1;
                        }
                        Ok(Reply::Error(e)) if e.starts_with("TRYAGAIN") => {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Ok(_) | Err(_) => {
                            // -TIMEOUT or a lost connection: maybe applied.
                            entry.1.push(value);
                            client = None;
                        }
                    }
                }
                acked
            })
        })
        .collect()
}

/// Every key holds its last acknowledged value, or a later one whose
/// outcome was unknown, on every node.
pub fn check_acked(c: &mut TestCluster, acked: &[Acked]) {
    c.assert_none_exited();
    c.wait_for_leader(Duration::from_secs(15)).unwrap_or_else(|| panic!("no single leader\n{}", c.logs()));
    for a in acked {
        for (key, (last, maybe)) in &a.keys {
            let Some(last) = last else { continue };
            for id in c.running() {
                let mut client = c.client(id).expect("connect");
                let got = text(&client.cmd(&["GET", key]).expect("GET"));
                assert!(
                    got == *last || maybe.contains(&got),
                    "node {id}: {key} = {got:?}; last acknowledged {last:?}, unknown after it {maybe:?}\n{}",
                    c.logs()
                );
            }
        }
    }
}
