//! The Rust `redis` crate (redis-rs), at its defaults and with RESP3,
//! against a 3-node cluster (docs/commands.md): typed commands (its `incr` sends
//! INCRBY), SET options, hashes into maps, scans, pipelines, atomic
//! pipelines (MULTI/EXEC) and its `transaction` helper with WATCH, retried
//! after a change made through another node.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use redis::{Commands, ExistenceCheck, SetExpiry, SetOptions};
use support::TestCluster;

fn url(addr: &str, resp3: bool) -> String {
    if resp3 { format!("redis://{addr}/?protocol=resp3") } else { format!("redis://{addr}/") }
}

#[test]
fn the_redis_crate_works_at_its_defaults_and_with_resp3() {
    let mut c = TestCluster::new(3);
    c.start_all();
    c.wait_for_leader(Duration::from_secs(20)).unwrap_or_else(|| panic!("no leader\n{}", c.logs()));
    let addrs: Vec<String> = c.nodes.values().map(|n| n.client_addr.clone()).collect();
    for resp3 in [false, true] {
        let p = if resp3 { "r3:" } else { "r2:" };
        let mut a = redis::Client::open(url(&addrs[0], resp3)).unwrap().get_connection().unwrap();
        let mut b = redis::Client::open(url(&addrs[1], resp3)).unwrap().get_connection().unwrap();
        let key = |k: &str| format!("{p}{k}");

        let opts = SetOptions::default().conditional_set(ExistenceCheck::NX).with_expiration(SetExpiry::EX(100));
        let set: Option<String> = a.set_options(key("s"), "v", opts.clone()).unwrap();
        assert_eq!(set.as_deref(), Some("OK"));
        let again: Option<String> = a.set_options(key("s"), "w", opts).unwrap();
        assert_eq!(again, None, "SET NX on an existing key");
        let got: String = b.get(key("s")).unwrap();
        assert_eq!(got, "v");
        let ttl: i64 = a.ttl(key("s")).unwrap();
        assert!(ttl > 90 && ttl <= 100, "{ttl}");
        let n: i64 = a.incr(key("n"), 5).unwrap();
        assert_eq!(n, 5, "incr sends INCRBY");
        let n: i64 = a.decr(key("n"), 2).unwrap();
        assert_eq!(n, 3, "decr sends DECRBY");
        let f: f64 = a.incr(key("f"), 1.5).unwrap();
        assert_eq!(f, 1.5, "a float incr sends INCRBYFLOAT");

        let _: () = a.hset_multiple(key("h"), &[("f1", "1"), ("f2", "2")]).unwrap();
        let all: HashMap<String, String> = b.hgetall(key("h")).unwrap();
        assert_eq!(all, HashMap::from([("f1".into(), "1".into()), ("f2".into(), "2".into())]));
        let v: i64 = a.hincr(key("h"), "f1", 10).unwrap();
        assert_eq!(v, 11);

        let mut found: Vec<String> =
            a.scan_match::<_, String>(format!("{p}*")).unwrap().collect::<Result<_, _>>().unwrap();
        found.sort();
        assert_eq!(found, vec![key("f"), key("h"), key("n"), key("s")]);

        let (x, y): (i64, i64) = redis::pipe().incr(key("p"), 1).incr(key("p"), 1).query(&mut a).unwrap();
        assert_eq!((x, y), (1, 2), "a pipeline");
        let (x, y): (i64, String) = redis::pipe().atomic().incr(key("t"), 1).get(key("t")).query(&mut a).unwrap();
        assert_eq!((x, y.as_str()), (1, "1"), "an atomic pipeline is MULTI/EXEC");

        // WATCH: the helper retries when another node changed the key.
        let mut interfered = false;
        let (balance,): (i64,) = redis::transaction(&mut a, &[key("t")], |conn, pipe| {
            let current: i64 = conn.get(key("t"))?;
            if !interfered {
                interfered = true;
                let _: () = b.set(key("t"), 100).unwrap();
            }
            pipe.set(key("t"), current + 1).ignore().get(key("t")).query(conn)
        })
        .unwrap();
        assert_eq!(balance, 101, "the first EXEC aborted, the retry saw the other node's write");
    }
}
