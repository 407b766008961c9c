use std::collections::BTreeMap;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use super::sessions::{Once, Origin, Seen};
use super::*;
use crate::config::VALUE_BYTES_MAX;

fn words(line: &str) -> Vec<Vec<u8>> {
    crate::resp::split_args(line.as_bytes()).unwrap()
}

/// A store and a log index that goes up with every write, as on a node.
struct Node {
    kv: KvStore,
    index: u64,
}

impl Node {
    fn new() -> Node {
        Node { kv: KvStore::new(), index: 0 }
    }

    /// Applies a command proposed by the leader at time `ms`.
    fn at(&mut self, ms: u64, line: &str) -> Reply {
        self.index += 1;
        let op = WriteOp::Run { stamp: Stamp { ms, leader: true }, args: words(line) };
        let decoded = WriteOp::decode(&op.encode()).unwrap();
        assert_eq!(decoded, op);
        self.kv.apply(&decoded, self.index)
    }

    fn run(&mut self, line: &str) -> Reply {
        let ms = self.kv.clock();
        self.at(ms, line)
    }

    fn read(&self, line: &str) -> Reply {
        let cmd = crate::command::parse_data(&words(line), self.kv.clock()).unwrap();
        self.kv.read(&cmd, 0, 0)
    }
}

fn int(n: i64) -> Reply {
    Reply::Integer(n)
}

fn bulk(s: &str) -> Reply {
    Reply::bulk(s)
}

/// The obviously correct version the store is checked against.
#[derive(Clone, Default)]
struct Model {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Model {
    fn apply(&mut self, args: &[Vec<u8>]) -> Reply {
        let name = String::from_utf8_lossy(&args[0]).to_lowercase();
        match name.as_str() {
            "set" => {
                self.map.insert(args[1].clone(), args[2].clone());
                Reply::ok()
            }
            "del" => Reply::Integer(args[1..].iter().filter(|k| self.map.remove(*k).is_some()).count() as i64),
            "incrby" => {
                let by: i64 = String::from_utf8_lossy(&args[2]).parse().unwrap();
                let old = self.map.get(&args[1]).map(|v| String::from_utf8_lossy(v).to_string());
                let n: i64 = match old {
                    None => 0,
                    Some(s) => match s.parse::<i64>() {
                        Ok(n) if n.to_string() == s => n,
                        _ => return Reply::Error("ERR value is not an integer".into()),
                    },
                };
                let Some(next) = n.checked_add(by) else {
                    return Reply::Error("ERR increment or decrement would overflow".into());
                };
                self.map.insert(args[1].clone(), next.to_string().into_bytes());
                Reply::Integer(next)
            }
            "cas" => {
                if self.map.get(&args[1]) == Some(&args[2]) {
                    self.map.insert(args[1].clone(), args[3].clone());
                    Reply::Integer(1)
                } else {
                    Reply::Integer(0)
                }
            }
            "append" => {
                let v = self.map.entry(args[1].clone()).or_default();
                v.extend_from_slice(&args[2]);
                Reply::Integer(v.len() as i64)
            }
            _ => {
                for p in args[1..].chunks(2) {
                    self.map.insert(p[0].clone(), p[1].clone());
                }
                Reply::ok()
            }
        }
    }
}

fn same_content(store: &KvStore, model: &Model) {
    assert_eq!(store.len(), model.map.len());
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = store.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
    pairs.sort();
    let expected: Vec<(Vec<u8>, Vec<u8>)> = model.map.clone().into_iter().collect();
    assert_eq!(pairs, expected);
}

fn random_key(rng: &mut Xoshiro256PlusPlus) -> Vec<u8> {
    // A small key space so that operations collide.
    format!("k{}", rng.random_range(0..40)).into_bytes()
}

fn random_value(rng: &mut Xoshiro256PlusPlus) -> Vec<u8> {
    match rng.random_range(0..6) {
        0 => rng.random_range(-5i64..5).to_string().into_bytes(),
        1 => (i64::MAX - rng.random_range(0..2)).to_string().into_bytes(),
        2 => b"007".to_vec(),
        3 => Vec::new(),
        _ => (0..rng.random_range(1..20)).map(|_| rng.random()).collect(),
    }
}

fn random_args(rng: &mut Xoshiro256PlusPlus, model: &Model) -> Vec<Vec<u8>> {
    let k = random_key(rng);
    match rng.random_range(0..11) {
        0..3 => vec![b"SET".to_vec(), k, random_value(rng)],
        3 => {
            let mut args = vec![b"DEL".to_vec(), k];
            args.extend((0..rng.random_range(0..3)).map(|_| random_key(rng)));
            args
        }
        4..6 => vec![b"INCRBY".to_vec(), k, rng.random_range(-3i64..4).to_string().into_bytes()],
        6..8 => {
            // Often the right expectation, so that CAS succeeds too.
            let expected = match model.map.get(&k) {
                Some(v) if rng.random_bool(0.6) => v.clone(),
                _ => random_value(rng),
            };
            vec![b"CAS".to_vec(), k, expected, random_value(rng)]
        }
        8 => vec![b"APPEND".to_vec(), k, random_value(rng)],
        _ => {
            let mut args = vec![b"MSET".to_vec(), k, random_value(rng)];
            for _ in 0..rng.random_range(0..3) {
                args.push(random_key(rng));
                args.push(random_value(rng));
            }
            args
        }
    }
}

fn random_read(rng: &mut Xoshiro256PlusPlus, store: &KvStore, model: &Model) {
    let keys: Vec<Vec<u8>> = (0..rng.random_range(1..4)).map(|_| random_key(rng)).collect();
    let expected_mget = Reply::array(keys.iter().map(|k| Reply::Bulk(model.map.get(k).cloned())).collect());
    let existing = keys.iter().filter(|k| model.map.contains_key(*k)).count() as i64;
    assert_eq!(store.read(&Cmd::MGet { keys: keys.clone() }, 0, 0), expected_mget);
    assert_eq!(store.read(&Cmd::Exists { keys: keys.clone() }, 0, 0), Reply::Integer(existing));
    assert_eq!(store.read(&Cmd::Get { key: keys[0].clone() }, 0, 0), Reply::Bulk(model.map.get(&keys[0]).cloned()));
    assert_eq!(store.read(&Cmd::DbSize, 0, 0), Reply::Integer(model.map.len() as i64));
}

fn seed_from_env(default: u64) -> u64 {
    std::env::var("KV_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// Replay a failure with `KV_SEED=<seed> cargo test --lib kv::tests::`.
#[test]
fn store_matches_a_btreemap_model() {
    let seed = seed_from_env(0x6b76_0001);
    println!("seed {seed}");
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut store = KvStore::new();
    let mut model = Model::default();
    for step in 0..50_000u64 {
        let args = random_args(&mut rng, &model);
        let op = WriteOp::Run { stamp: Stamp::default(), args: args.clone() };
        // Apply what came back from the log encoding, as a follower does.
        let decoded = WriteOp::decode(&op.encode()).unwrap();
        assert_eq!(decoded, op);
        let expected = model.apply(&args);
        let got = store.apply(&decoded, step + 1);
        assert_eq!(got, expected, "seed {seed} step {step}: {args:?}");
        random_read(&mut rng, &store, &model);
        if step % 5_000 == 0 {
            same_content(&store, &model);
            let mut bytes = Vec::new();
            store.write_snapshot(&mut bytes).unwrap();
            let loaded = KvStore::load(&bytes[..]).unwrap();
            assert_eq!(loaded, store, "seed {seed} step {step}");
        }
    }
    same_content(&store, &model);
}

#[test]
fn incr_follows_redis() {
    let mut n = Node::new();
    assert_eq!(n.run("INCR n"), int(1));
    assert_eq!(n.run("INCRBY n 10"), int(11));
    assert_eq!(n.run("DECR n"), int(10));
    assert_eq!(n.run("DECRBY n 20"), int(-10));
    assert_eq!(n.kv.get(b"n"), Some(&b"-10"[..]));
    for (value, reply) in [
        ("-1", int(0)),
        ("9223372036854775806", int(i64::MAX)),
        ("9223372036854775807", Reply::Error(INCR_OVERFLOW.into())),
        ("abc", Reply::Error("ERR value is not an integer".into())),
        (" 1", Reply::Error("ERR value is not an integer".into())),
        ("", Reply::Error("ERR value is not an integer".into())),
        ("99999999999999999999", Reply::Error("ERR value is not an integer".into())),
    ] {
        n.kv.apply(&WriteOp::command(&[b"SET", b"n", value.as_bytes()]), 1);
        assert_eq!(n.run("INCR n"), reply, "INCR on {value:?}");
    }
    // A failed INCR changes nothing.
    assert_eq!(n.kv.get(b"n"), Some(&b"99999999999999999999"[..]));
    assert_eq!(n.run("DECRBY m -9223372036854775808"), Reply::err("decrement would overflow"));
    assert_eq!(n.run("INCRBYFLOAT f 10.5"), bulk("10.5"));
    assert_eq!(n.run("INCRBYFLOAT f 0.1"), bulk("10.6"));
    assert_eq!(n.run("INCRBYFLOAT f -10.6"), bulk("0"));
    assert_eq!(n.run("INCRBYFLOAT f 5.0e3"), bulk("5000"));
}

#[test]
fn strings_follow_redis() {
    let mut n = Node::new();
    assert_eq!(n.run("SET k v NX"), Reply::ok());
    assert_eq!(n.run("SET k w NX"), Reply::nil());
    assert_eq!(n.run("SET k w NX GET"), bulk("v"));
    assert_eq!(n.run("SET k w XX GET"), bulk("v"));
    assert_eq!(n.run("SET absent w XX"), Reply::nil());
    assert_eq!(n.run("SETNX k x"), int(0));
    assert_eq!(n.run("SETNX k2 x"), int(1));
    assert_eq!(n.run("GETSET k2 y"), bulk("x"));
    assert_eq!(n.run("GETDEL k2"), bulk("y"));
    assert_eq!(n.run("GETDEL k2"), Reply::nil());
    assert_eq!(n.run("MSETNX a 1 k 2"), int(0));
    assert_eq!(n.run("MSETNX a 1 b 2"), int(1));
    assert_eq!(n.read("MGET a b nope"), Reply::array(vec![bulk("1"), bulk("2"), Reply::nil()]));
    assert_eq!(n.run("APPEND s Hello"), int(5));
    assert_eq!(n.run("APPEND s \" World\""), int(11));
    assert_eq!(n.read("STRLEN s"), int(11));
    assert_eq!(n.read("GETRANGE s 0 4"), bulk("Hello"));
    assert_eq!(n.read("GETRANGE s -5 -1"), bulk("World"));
    assert_eq!(n.read("GETRANGE s 5 1"), bulk(""));
    assert_eq!(n.read("GETRANGE s 0 100"), bulk("Hello World"));
    assert_eq!(n.run("SETRANGE s 6 Redis"), int(11));
    assert_eq!(n.read("GET s"), bulk("Hello Redis"));
    assert_eq!(n.run("SETRANGE pad 3 x"), int(4));
    assert_eq!(n.read("GET pad"), Reply::bulk(b"\0\0\0x".to_vec()));
    assert_eq!(n.run("SETRANGE none 3 \"\""), int(0));
    assert_eq!(n.read("EXISTS none"), int(0));
    let big = format!("SETRANGE s {} x", VALUE_BYTES_MAX);
    assert_eq!(n.run(&big), Reply::err("string exceeds maximum allowed size (proto-max-bulk-len)"));
    assert_eq!(n.read("TYPE s"), Reply::Simple("string".into()));
    assert_eq!(n.read("TYPE nope"), Reply::Simple("none".into()));
}

#[test]
fn hashes_follow_redis_and_types_do_not_mix() {
    let mut n = Node::new();
    assert_eq!(n.run("HSET h a 1 b 2"), int(2));
    assert_eq!(n.run("HSET h a 3 c 4"), int(1));
    assert_eq!(n.run("HMSET h d 5"), Reply::ok());
    assert_eq!(n.read("HGET h a"), bulk("3"));
    assert_eq!(n.read("HMGET h a x"), Reply::array(vec![bulk("3"), Reply::nil()]));
    assert_eq!(n.read("HLEN h"), int(4));
    assert_eq!(n.read("HKEYS h"), Reply::array(vec![bulk("a"), bulk("b"), bulk("c"), bulk("d")]));
    assert_eq!(n.read("HVALS h"), Reply::array(vec![bulk("3"), bulk("2"), bulk("4"), bulk("5")]));
    assert_eq!(
        n.read("HGETALL h"),
        Reply::Map(vec![
            (bulk("a"), bulk("3")),
            (bulk("b"), bulk("2")),
            (bulk("c"), bulk("4")),
            (bulk("d"), bulk("5"))
        ])
    );
    assert_eq!(n.read("HEXISTS h a"), int(1));
    assert_eq!(n.read("HSTRLEN h a"), int(1));
    assert_eq!(n.run("HSETNX h a 9"), int(0));
    assert_eq!(n.run("HSETNX h e 9"), int(1));
    assert_eq!(n.run("HINCRBY h a 10"), int(13));
    assert_eq!(n.run("HINCRBY h e -10"), int(-1));
    assert_eq!(n.run("HSET h s x"), int(1));
    let mark = n.kv.watch_mark(b"h");
    assert_eq!(n.run("HINCRBY h s 1"), Reply::err("hash value is not an integer"));
    assert_eq!(n.kv.watch_mark(b"h"), mark, "a refused HINCRBY changes nothing, not even the version");
    assert_eq!(
        n.read("HSCAN h 0 MATCH [ab]"),
        Reply::array(vec![bulk("0"), Reply::array(vec![bulk("a"), bulk("13"), bulk("b"), bulk("2")])])
    );
    assert_eq!(n.read("TYPE h"), Reply::Simple("hash".into()));
    let wrong = Reply::Error(WRONGTYPE.into());
    assert_eq!(n.read("GET h"), wrong);
    assert_eq!(n.run("INCR h"), wrong);
    assert_eq!(n.run("APPEND h x"), wrong);
    assert_eq!(n.run("SET h x GET"), wrong);
    assert_eq!(n.run("SET str x"), Reply::ok());
    assert_eq!(n.run("HSET str f v"), wrong);
    assert_eq!(n.read("HGET str f"), wrong);
    assert_eq!(n.read("MGET h str"), Reply::array(vec![Reply::nil(), bulk("x")]));
    assert_eq!(n.run("HDEL h a b c d e s nope"), int(6));
    assert_eq!(n.read("EXISTS h"), int(0), "an emptied hash is deleted");
    // SET replaces a hash whatever it was.
    n.run("HSET h a 1");
    assert_eq!(n.run("SET h plain"), Reply::ok());
    assert_eq!(n.read("GET h"), bulk("plain"));
    let before = n.kv.data_bytes();
    n.run("HSET big f1 0123456789 f2 0123456789");
    assert_eq!(n.kv.data_bytes(), before + 3 + 2 * (2 + 10));
    n.run("DEL big");
    assert_eq!(n.kv.data_bytes(), before);
}

#[test]
fn keys_rename_and_scan() {
    let mut n = Node::new();
    for i in 0..500 {
        n.run(&format!("SET key:{i} v"));
    }
    n.run("HSET hash:1 f v");
    assert_eq!(n.run("RENAME key:0 moved"), Reply::ok());
    assert_eq!(n.run("RENAME nope x"), Reply::err("no such key"));
    assert_eq!(n.run("RENAMENX key:1 moved"), int(0));
    assert_eq!(n.run("RENAMENX key:1 moved2"), int(1));
    let Reply::Array(Some(keys)) = n.read("KEYS moved*") else { panic!() };
    assert_eq!(keys.len(), 2);
    // SCAN returns every key exactly once here (nothing changes meanwhile),
    // with any COUNT.
    for count in [1, 10, 1000] {
        let mut seen = Vec::new();
        let mut cursor = "0".to_string();
        let mut calls = 0;
        loop {
            let Reply::Array(Some(parts)) = n.read(&format!("SCAN {cursor} COUNT {count} MATCH key:*")) else {
                panic!()
            };
            let [Reply::Bulk(Some(next)), Reply::Array(Some(keys))] = &parts[..] else { panic!("{parts:?}") };
            seen.extend(keys.iter().cloned());
            cursor = String::from_utf8(next.clone()).unwrap();
            calls += 1;
            if cursor == "0" {
                break;
            }
        }
        assert_eq!(seen.len(), 498, "COUNT {count}");
        if count == 1 {
            assert!(calls > 100, "COUNT bounds the work of one call");
        }
    }
    let Reply::Array(Some(parts)) = n.read("SCAN 0 COUNT 100000 TYPE hash") else { panic!() };
    assert_eq!(parts[1], Reply::array(vec![bulk("hash:1")]));
    assert!(matches!(n.read("RANDOMKEY"), Reply::Bulk(Some(_))));
    assert_eq!(n.run("FLUSHALL"), Reply::ok());
    assert_eq!(n.read("DBSIZE"), int(0));
    assert_eq!(n.read("RANDOMKEY"), Reply::nil());
}

#[test]
fn scan_returns_every_key_present_for_the_whole_scan_while_others_come_and_go() {
    let seed = seed_from_env(0x6b76_0004);
    println!("seed {seed}");
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut n = Node::new();
    for i in 0..2000 {
        n.run(&format!("SET stay:{i} v"));
    }
    let mut seen = std::collections::HashSet::new();
    let mut cursor = "0".to_string();
    loop {
        for _ in 0..20 {
            let k = rng.random_range(0..5000);
            if rng.random_bool(0.5) {
                n.run(&format!("SET churn:{k} v"));
            } else {
                n.run(&format!("DEL churn:{k}"));
            }
        }
        let Reply::Array(Some(parts)) = n.read(&format!("SCAN {cursor} COUNT 20")) else { panic!() };
        let [Reply::Bulk(Some(next)), Reply::Array(Some(keys))] = &parts[..] else { panic!() };
        for k in keys {
            let Reply::Bulk(Some(k)) = k else { panic!() };
            seen.insert(k.clone());
        }
        cursor = String::from_utf8(next.clone()).unwrap();
        if cursor == "0" {
            break;
        }
    }
    for i in 0..2000 {
        assert!(seen.contains(format!("stay:{i}").as_bytes()), "seed {seed}: stay:{i} missed");
    }
}

/// A read released by a leader whose clock passed a key's deadline does not
/// see the key, though the store's clock has not reached it (the entry that
/// set it was stamped by a slower clock, or committed after the deadline).
#[test]
fn a_read_is_judged_by_the_clock_of_the_leader_that_released_it() {
    let mut n = Node::new();
    let t = 1_700_000_000_000;
    n.at(t, "SET k v PX 100");
    n.at(t, "HSET h f v");
    n.run("PEXPIRE h 100");
    let read = |n: &Node, line: &str, at: u64| {
        let cmd = crate::command::parse_data(&words(line), t).unwrap();
        n.kv.read(&cmd, 0, at)
    };
    for (at, live) in [(0, true), (t + 99, true), (t + 100, false), (t + 5_000, false)] {
        let want = |r: Reply| if live { r } else { Reply::nil() };
        assert_eq!(read(&n, "GET k", at), want(bulk("v")), "at {at}");
        assert_eq!(read(&n, "HGET h f", at), want(bulk("v")), "at {at}");
        assert_eq!(read(&n, "EXISTS k h", at), int(if live { 2 } else { 0 }), "at {at}");
        assert_eq!(read(&n, "TTL k", at), int(if live { 0 } else { -2 }), "at {at}");
        let keys = read(&n, "KEYS *", at);
        assert_eq!(keys == Reply::array(vec![]), !live, "at {at}: {keys:?}");
        assert_eq!(n.kv.get_at(b"k", at).is_some(), live, "at {at}");
    }
    // The store itself is unchanged: only the sweep deletes.
    assert_eq!(n.kv.len(), 2);
}

#[test]
fn deadlines_follow_the_leaders_clock_only() {
    let mut n = Node::new();
    let t = 1_700_000_000_000;
    assert_eq!(n.at(t, "SET k v EX 10"), Reply::ok());
    assert_eq!(n.read("PTTL k"), int(10_000));
    assert_eq!(n.read("TTL k"), int(10));
    assert_eq!(n.read("PEXPIRETIME k"), int((t + 10_000) as i64));
    assert_eq!(n.read("EXPIRETIME k"), int(((t + 10_000) / 1000) as i64));
    assert_eq!(n.kv.expiring(), 1);
    // A follower's stamp moves nothing: the key is there whatever its
    // clock said.
    n.index += 1;
    let op = WriteOp::Run { stamp: Stamp { ms: t + 60_000, leader: false }, args: words("SET other x") };
    n.kv.apply(&op, n.index);
    assert_eq!(n.kv.clock(), t);
    assert_eq!(n.read("GET k"), bulk("v"));
    // The leader's clock passes the deadline: the key is absent for every
    // command at once, before the sweep deletes it.
    n.at(t + 10_000, "SET other y");
    assert_eq!(n.read("GET k"), Reply::nil());
    assert_eq!(n.read("EXISTS k"), int(0));
    assert_eq!(n.read("TTL k"), int(-2));
    assert_eq!(n.kv.len(), 2, "still stored until the sweep");
    assert_eq!(n.kv.due(0, t + 10_000, 10), vec![b"k".to_vec()]);
    assert!(n.kv.due(t + 10_000, t + 20_000, 10).is_empty());
    n.index += 1;
    let sweep =
        WriteOp::Expire { stamp: Stamp { ms: t + 10_001, leader: true }, keys: vec![b"k".to_vec(), b"other".to_vec()] };
    assert_eq!(n.kv.apply(&WriteOp::decode(&sweep.encode()).unwrap(), n.index), int(1));
    assert_eq!((n.kv.len(), n.kv.expiring()), (1, 0));
    // SET NX on an expired key sets it; INCR on one starts from 0.
    n.run("SET e 41 PX 5");
    n.at(t + 20_000, "PING");
    assert_eq!(n.run("INCR e"), int(1));
    assert_eq!(n.read("TTL e"), int(-1));
}

#[test]
fn expire_options_and_persist() {
    let mut n = Node::new();
    let t = 1_000_000;
    n.at(t, "SET k v");
    assert_eq!(n.run("EXPIRE k 100 XX"), int(0));
    assert_eq!(n.run("EXPIRE k 100 GT"), int(0), "no deadline counts as infinite");
    assert_eq!(n.run("EXPIRE k 100 NX"), int(1));
    assert_eq!(n.run("EXPIRE k 50 GT"), int(0));
    assert_eq!(n.run("EXPIRE k 200 GT"), int(1));
    assert_eq!(n.run("EXPIRE k 300 LT"), int(0));
    assert_eq!(n.run("PEXPIRE k 1000 LT"), int(1));
    assert_eq!(n.read("PTTL k"), int(1000));
    assert_eq!(n.run("SET k w KEEPTTL"), Reply::ok());
    assert_eq!(n.read("PTTL k"), int(1000));
    assert_eq!(n.run("GETEX k PERSIST"), bulk("w"));
    assert_eq!(n.read("TTL k"), int(-1));
    assert_eq!(n.run("GETEX k PXAT 2000000"), bulk("w"));
    assert_eq!(n.read("PEXPIRETIME k"), int(2_000_000));
    assert_eq!(n.run("PERSIST k"), int(1));
    assert_eq!(n.run("PERSIST k"), int(0));
    assert_eq!(n.run("EXPIRE nope 10"), int(0));
    // A deadline already past deletes the key.
    assert_eq!(n.run("EXPIRE k -1"), int(1));
    assert_eq!(n.read("EXISTS k"), int(0));
    n.run("SET k v");
    assert_eq!(n.run("PEXPIREAT k 5"), int(1));
    assert_eq!(n.kv.len(), 0);
    assert_eq!(n.run("SET k v PXAT 5"), Reply::ok());
    assert_eq!(n.read("EXISTS k"), int(0));
    // RENAME keeps the deadline; a plain SET drops it.
    n.run("SET k v EX 10");
    n.run("RENAME k j");
    assert_eq!(n.read("TTL j"), int(10));
    n.run("SET j v");
    assert_eq!(n.read("TTL j"), int(-1));
    assert_eq!(n.kv.expiring(), 0);
}

#[test]
fn transactions_apply_whole_or_not_at_all_by_watch_marks() {
    let mut n = Node::new();
    n.run("SET a 1");
    let exec = |n: &mut Node, watches: Vec<Watch>, lines: &[&str]| {
        n.index += 1;
        let op = WriteOp::Exec {
            stamp: Stamp { ms: n.kv.clock(), leader: true },
            watches,
            commands: lines.iter().map(|l| words(l)).collect(),
        };
        let decoded = WriteOp::decode(&op.encode()).unwrap();
        assert_eq!(decoded, op);
        n.kv.apply(&decoded, n.index)
    };
    let mark = |n: &Node, k: &str| Watch { key: k.as_bytes().to_vec(), mark: n.kv.watch_mark(k.as_bytes()) };
    let watches = vec![mark(&n, "a"), mark(&n, "absent")];
    assert_eq!(
        exec(&mut n, watches.clone(), &["INCR a", "GET a", "HSET a f v", "SET b 2"]),
        Reply::array(vec![int(2), bulk("2"), Reply::Error(WRONGTYPE.into()), Reply::ok()])
    );
    // `a` changed since those marks: nothing is applied.
    assert_eq!(exec(&mut n, watches, &["SET b 3"]), Reply::Array(None));
    assert_eq!(n.read("GET b"), bulk("2"));
    // A key created and deleted again since the watch counts as changed.
    let watches = vec![mark(&n, "ghost")];
    n.run("SET ghost 1");
    n.run("DEL ghost");
    assert_eq!(exec(&mut n, watches, &["SET b 4"]), Reply::Array(None));
    // A key that expires since the watch counts as changed.
    n.run("SET t v PX 100");
    let watches = vec![mark(&n, "t")];
    let later = n.kv.clock() + 200;
    n.at(later, "PING");
    assert_eq!(exec(&mut n, watches, &["SET b 5"]), Reply::Array(None));
    // Untouched marks let it through.
    let watches = vec![mark(&n, "a"), mark(&n, "t")];
    assert_eq!(exec(&mut n, watches, &["SET b 6"]), Reply::array(vec![Reply::ok()]));
}

#[test]
fn legacy_log_entries_still_apply() {
    // These bytes live in logs on disk from before stamps: SET k vv and
    // DEL a "".
    let set = WriteOp::decode(b"\x01\x01\x00\x00\x00k\x02\x00\x00\x00vv").unwrap();
    assert_eq!(set, WriteOp::command(&[b"SET", b"k", b"vv"]));
    let del = WriteOp::decode(b"\x02\x02\x00\x00\x00\x01\x00\x00\x00a\x00\x00\x00\x00").unwrap();
    assert_eq!(del, WriteOp::command(&[b"DEL", b"a", b""]));
    let mut kv = KvStore::new();
    assert_eq!(kv.apply(&set, 1), Reply::ok());
    assert_eq!(kv.get(b"k"), Some(&b"vv"[..]));
}

fn sample_ops() -> Vec<WriteOp> {
    vec![
        WriteOp::command(&[b"SET", b"k", b"v"]),
        WriteOp::Run { stamp: Stamp { ms: 77, leader: true }, args: words("SET k v EX 10") },
        WriteOp::Exec {
            stamp: Stamp { ms: 1, leader: false },
            watches: vec![Watch { key: b"w".to_vec(), mark: 3 }],
            commands: vec![words("INCR n"), words("GET n")],
        },
        WriteOp::Expire { stamp: Stamp { ms: 5, leader: true }, keys: vec![b"a".to_vec(), b"".to_vec()] },
    ]
}

#[test]
fn decoding_is_strict() {
    for op in sample_ops() {
        let bytes = op.encode();
        assert_eq!(WriteOp::decode(&bytes).unwrap(), op);
        for cut in 0..bytes.len() {
            assert!(WriteOp::decode(&bytes[..cut]).is_err(), "{op:?} cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(WriteOp::decode(&longer).is_err(), "{op:?} with a trailing byte");
    }
    let refused: &[&[u8]] = &[
        b"\x00",
        b"\x09",
        b"\x02\x00\x00\x00\x00",                                     // DEL of no keys
        b"\x05\x00\x00\x00\x00",                                     // MSET of no pairs
        b"\x03\x01\x00\x01\x00",                                     // INCR of a key over 64 KiB
        b"\x02\xff\xff\xff\xff\x00\x00\x00\x00",                     // a count over the bound
        b"\x06\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", // a command without arguments
        b"\x06\x00\x00\x00\x00\x00\x00\x00\x00\x02\x01\x00\x00\x00\x00\x00\x00\x00", // a flag of 2
    ];
    for bytes in refused {
        assert!(WriteOp::decode(bytes).is_err(), "{}", bytes.escape_ascii());
    }
}

#[test]
fn random_bytes_never_panic_the_decoder_or_the_store() {
    let seed = seed_from_env(0x6b76_0002);
    println!("seed {seed}");
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let samples: Vec<Vec<u8>> = sample_ops().iter().map(WriteOp::encode).collect();
    let mut kv = KvStore::new();
    for i in 0..50_000 {
        let mut bytes = samples[rng.random_range(0..samples.len())].clone();
        for _ in 0..rng.random_range(1..4) {
            let at = rng.random_range(0..bytes.len());
            bytes[at] = rng.random();
        }
        if let Ok(op) = WriteOp::decode(&bytes) {
            assert_eq!(op.encode(), bytes);
            // Whatever decodes applies without a panic (bad arguments are
            // answered with an error on every node alike).
            kv.apply(&op, i);
        }
        let len = rng.random_range(0..32);
        let noise: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let _ = WriteOp::decode(&noise);
    }
}

fn sample_store(keys: u32) -> KvStore {
    let mut n = Node::new();
    n.at(1_000, "PING");
    for i in 0..keys {
        let value = vec![(i % 251) as u8; (i % 37) as usize];
        let key = i.to_le_bytes().to_vec();
        n.index += 1;
        n.kv.apply(&WriteOp::command(&[b"SET", &key, &value]), n.index);
        if i % 7 == 0 {
            n.run(&format!("HSET h{i} f{i} v g x"));
        }
        if i % 11 == 0 {
            n.run(&format!("SET t{i} v EX {}", i + 1));
        }
        if i % 13 == 0 {
            n.kv.apply(&WriteOp::command(&[b"DEL", &key]), n.index);
        }
        if i % 17 == 0 {
            // Writes applied once, whose replies the snapshot keeps.
            let (node, seq) = (u64::from(i % 3), u64::from(i));
            let once = Once { origin: Origin { node, incarnation: 9 }, seq, floor: seq / 2 };
            n.index += 1;
            n.kv.apply_once(&once, &WriteOp::command(&[b"INCR", b"counted"]), n.index);
        }
    }
    n.kv
}

#[test]
fn snapshot_round_trips() {
    for store in [KvStore::new(), sample_store(500)] {
        let mut bytes = Vec::new();
        let written = store.write_snapshot(&mut bytes).unwrap();
        assert_eq!(written, bytes.len() as u64);
        assert_eq!(&bytes[..12], b"RKVSNAP\n\x04\x00\x00\x00");
        let loaded = KvStore::load(&bytes[..]).unwrap();
        assert_eq!(loaded, store);
        assert_eq!((loaded.len(), loaded.expiring(), loaded.clock()), (store.len(), store.expiring(), store.clock()));
        assert_eq!(loaded.data_bytes(), store.data_bytes());
        assert_eq!(loaded.watch_mark(&13u32.to_le_bytes()), store.watch_mark(&13u32.to_le_bytes()));
        // The same state always gives the same bytes.
        let mut again = Vec::new();
        loaded.write_snapshot(&mut again).unwrap();
        assert_eq!(again, bytes);
    }
}

#[test]
fn version_one_snapshots_still_load() {
    // RKVSNAP v1 holding k -> vv, as written before types and deadlines.
    let mut bytes = b"RKVSNAP\n\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00".to_vec();
    bytes.extend_from_slice(b"\x01\x00\x00\x00k\x02\x00\x00\x00vv");
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let kv = KvStore::load(&bytes[..]).unwrap();
    assert_eq!(kv.get(b"k"), Some(&b"vv"[..]));
    // RKVSNAP v3, empty, as written before sessions.
    let mut bytes = b"RKVSNAP\n\x03\x00\x00\x00".to_vec();
    bytes.extend_from_slice(&[0; 8 + 8 + 4 + 4]);
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(KvStore::load(&bytes[..]).unwrap(), KvStore::new());
}

#[test]
fn a_write_proposed_twice_applies_once() {
    let mut kv = KvStore::new();
    let incr = WriteOp::command(&[b"INCR", b"n"]);
    let once = |seq, floor| Once { origin: Origin { node: 2, incarnation: 5 }, seq, floor };
    assert_eq!(kv.apply_once(&once(0, 0), &incr, 1), Some(Reply::Integer(1)));
    assert_eq!(kv.apply_once(&once(1, 0), &incr, 2), Some(Reply::Integer(2)));
    // The copy sent to the next leader answers the first reply.
    assert_eq!(kv.apply_once(&once(0, 0), &incr, 3), Some(Reply::Integer(1)));
    // Another process of the same node is another session.
    let other = Once { origin: Origin { node: 2, incarnation: 6 }, seq: 0, floor: 0 };
    assert_eq!(kv.apply_once(&other, &incr, 4), Some(Reply::Integer(3)));
    // A write given up on (the floor passed it) never applies after.
    assert_eq!(kv.apply_once(&once(3, 3), &incr, 5), Some(Reply::Integer(4)));
    assert_eq!(kv.apply_once(&once(2, 2), &incr, 6), None);
    assert_eq!(kv.get(b"n"), Some(&b"4"[..]));
    // Snapshots keep it.
    let mut bytes = Vec::new();
    kv.write_snapshot(&mut bytes).unwrap();
    let mut loaded = KvStore::load(&bytes[..]).unwrap();
    assert_eq!(loaded.apply_once(&once(3, 3), &incr, 7), Some(Reply::Integer(4)));
    assert_eq!(loaded.seen(Origin { node: 2, incarnation: 5 }, 3), Seen::Done(Reply::Integer(4)));
    assert_eq!(loaded.get(b"n"), Some(&b"4"[..]));
}

#[test]
fn corrupt_snapshots_are_refused() {
    let mut bytes = Vec::new();
    sample_store(60).write_snapshot(&mut bytes).unwrap();
    // Every truncation.
    for cut in 0..bytes.len() {
        let err = KvStore::load(&bytes[..cut]).unwrap_err();
        assert!(matches!(err.kind, SnapshotErrorKind::Truncated { .. }), "cut at {cut}: {err}");
    }
    // Single-bit flips at every byte.
    for at in 0..bytes.len() {
        for bit in [0, 3, 7] {
            let mut bad = bytes.clone();
            bad[at] ^= 1 << bit;
            assert!(KvStore::load(&bad[..]).is_err(), "flip bit {bit} of byte {at}");
        }
    }
    let mut longer = bytes.clone();
    longer.push(0);
    let err = KvStore::load(&longer[..]).unwrap_err();
    assert!(matches!(err.kind, SnapshotErrorKind::Trailing), "{err}");
    assert_eq!(err.offset, bytes.len() as u64);
}

#[test]
fn snapshot_errors_say_what_and_where() {
    let mut bytes = Vec::new();
    sample_store(50).write_snapshot(&mut bytes).unwrap();
    let mut bad = bytes.clone();
    bad[8] = 9;
    let err = KvStore::load(&bad[..]).unwrap_err();
    assert_eq!(err.to_string(), "snapshot at byte 8: unsupported version 9 (this build reads 4)");
    let err = KvStore::load(&b"GARBAGE!...."[..]).unwrap_err();
    assert!(err.to_string().contains("not a key-value snapshot"), "{err}");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    let err = KvStore::load(&bytes[..]).unwrap_err();
    assert!(matches!(err.kind, SnapshotErrorKind::ChecksumMismatch { .. }), "{err}");
    assert_eq!(err.offset, last as u64 - 3);
}

#[test]
fn oversized_lengths_in_a_snapshot_are_refused() {
    let mut bytes =
        b"RKVSNAP\n\x02\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00".to_vec();
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    let err = KvStore::load(&bytes[..]).unwrap_err();
    assert!(matches!(err.kind, SnapshotErrorKind::TooLarge { what: "key", .. }), "{err}");
    assert_eq!(err.offset, 28);
}

/// The reason for the sharded copy-on-write layout: a view taken at one
/// moment is serialized on another thread while the original store keeps
/// applying writes, and the snapshot holds exactly the state at the
/// moment of the view.
#[test]
fn snapshot_runs_on_another_thread_while_writes_continue() {
    let seed = seed_from_env(0x6b76_0003);
    println!("seed {seed}");
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut store = KvStore::new();
    let mut model = Model::default();
    let mut index = 0;
    for i in 0..100_000u32 {
        let args = vec![b"SET".to_vec(), format!("key{i}").into_bytes(), i.to_le_bytes().to_vec()];
        model.apply(&args);
        index += 1;
        store.apply(&WriteOp::Run { stamp: Stamp::default(), args }, index);
    }
    let frozen = model.clone();
    let view = store.view();
    let writer = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        view.write_to(&mut bytes).map(|_| bytes)
    });
    for _ in 0..100_000 {
        let key = format!("key{}", rng.random_range(0..150_000u32)).into_bytes();
        let args =
            if rng.random_bool(0.2) { vec![b"DEL".to_vec(), key] } else { vec![b"SET".to_vec(), key, b"new".to_vec()] };
        index += 1;
        assert_eq!(
            store.apply(&WriteOp::Run { stamp: Stamp::default(), args: args.clone() }, index),
            model.apply(&args)
        );
    }
    let bytes = writer.join().expect("snapshot thread panicked").unwrap();
    same_content(&KvStore::load(&bytes[..]).unwrap(), &frozen);
    same_content(&store, &model);
}

#[test]
fn a_store_knows_while_a_view_of_it_lives() {
    let mut n = Node::new();
    assert!(!n.kv.is_viewed());
    let view = n.kv.view();
    let copy = view.clone();
    assert!(n.kv.is_viewed());
    n.run("SET k v");
    drop(view);
    assert!(n.kv.is_viewed(), "a clone of the view still shares the store's maps");
    drop(copy);
    assert!(!n.kv.is_viewed());
    n.run("SET k w");
    assert!(!n.kv.is_viewed(), "writes and their map copies do not count as views");
}

#[test]
fn scripts_run_as_redis_runs_them_and_alike_on_every_node() {
    let mut n = Node::new();
    let release = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";
    n.run("SET lock token");
    assert_eq!(n.run(&format!("EVAL \"{release}\" 1 lock other")), int(0));
    assert_eq!(n.run(&format!("EVAL \"{release}\" 1 lock token")), int(1));
    assert_eq!(n.read("EXISTS lock"), int(0));
    // EVAL caches the body; SCRIPT LOAD too; EVALSHA finds it.
    let sha = script::sha1_hex(release.as_bytes());
    assert_eq!(n.read(&format!("SCRIPT EXISTS {sha} 0000")), Reply::array(vec![int(1), int(0)]));
    assert_eq!(
        n.run("SCRIPT LOAD \"return ARGV[1] .. KEYS[1]\""),
        bulk(&script::sha1_hex(b"return ARGV[1] .. KEYS[1]"))
    );
    let loaded = script::sha1_hex(b"return ARGV[1] .. KEYS[1]");
    assert_eq!(n.run(&format!("EVALSHA {loaded} 1 k a")), bulk("ak"));
    assert_eq!(
        n.run("EVALSHA 0123456789012345678901234567890123456789 0"),
        Reply::Error("NOSCRIPT No matching script. Please use EVAL.".into())
    );
    // Conversions both ways.
    assert_eq!(
        n.run("EVAL \"return {1, 2.9, 'x', false, {ok='fine'}}\" 0"),
        Reply::array(vec![int(1), int(2), bulk("x"), Reply::nil(), Reply::Simple("fine".into())])
    );
    assert_eq!(n.run("EVAL \"return redis.call('incrby', 'n', 5)\" 0"), int(5));
    assert_eq!(n.run("EVAL \"return redis.status_reply('DONE')\" 0"), Reply::Simple("DONE".into()));
    assert_eq!(n.run("EVAL \"return redis.error_reply('MY failure')\" 0"), Reply::Error("MY failure".into()));
    n.run("HSET h f v");
    assert_eq!(n.run("EVAL \"return redis.call('get', 'h')\" 0"), Reply::Error(WRONGTYPE.into()));
    assert_eq!(n.run("EVAL \"return redis.pcall('get', 'h')['err']\" 0"), bulk(WRONGTYPE));
    assert_eq!(n.run("EVAL \"return redis.call('hgetall', 'h')\" 0"), Reply::array(vec![bulk("f"), bulk("v")]));
    assert_eq!(n.run("EVAL \"return redis.call('get', 'nope')\" 0"), Reply::nil());
    // What a script may not do.
    assert!(
        matches!(n.run("EVAL \"return os.time()\" 0"), Reply::Error(e) if e.starts_with("ERR Error running script"))
    );
    assert!(
        matches!(n.run("EVAL \"return redis.call('eval', 'return 1', 0)\" 0"), Reply::Error(e) if e.contains("not allowed from script"))
    );
    assert!(matches!(n.run("EVAL \"while true do end\" 0"), Reply::Error(e) if e.contains("instructions")));
    assert!(matches!(n.run("EVAL \"return (\" 0"), Reply::Error(e) if e.starts_with("ERR Error compiling script")));
    assert!(
        matches!(n.run("SCRIPT LOAD \"return (\""), Reply::Error(e) if e.starts_with("ERR Error compiling script"))
    );
    // math.random gives the same numbers on every run, so on every node.
    let draw = "EVAL \"return {math.random(100), math.random(100), math.random(100)}\" 0";
    assert_eq!(n.run(draw), n.run(draw));
    // A read-only script reads, and may not write.
    assert_eq!(n.read("EVAL_RO \"return redis.call('get', KEYS[1])\" 1 n"), bulk("5"));
    assert!(
        matches!(n.read("EVAL_RO \"return redis.call('set', 'x', 1)\" 0"), Reply::Error(e) if e.contains("read-only scripts"))
    );
    // Scripts survive a snapshot; SCRIPT FLUSH forgets them.
    let mut bytes = Vec::new();
    n.kv.write_snapshot(&mut bytes).unwrap();
    let loaded_kv = KvStore::load(&bytes[..]).unwrap();
    assert_eq!(loaded_kv, n.kv);
    assert_eq!(n.run("SCRIPT FLUSH"), Reply::ok());
    assert_eq!(n.read(&format!("SCRIPT EXISTS {sha}")), Reply::array(vec![int(0)]));
}

/// RESP3's types in scripts, as Redis converts them: `redis.setresp(3)`
/// hands the script maps, sets and booleans as RESP3 has them and turns its
/// booleans into RESP3 booleans; `{double = x}`, `{map = ...}` and the
/// like make those types whichever protocol the script chose, and a RESP2
/// client gets them as Redis gives them.
#[test]
fn scripts_speak_resp3_when_they_ask_for_it() {
    use crate::reply::Proto;
    let mut n = Node::new();
    n.run("HSET h f v");
    n.run("SET s x");
    assert_eq!(n.run("EVAL \"return true\" 0"), int(1));
    assert_eq!(n.run("EVAL \"redis.setresp(3); return true\" 0"), Reply::Bool(true));
    assert_eq!(n.run("EVAL \"redis.setresp(3); return false\" 0"), Reply::Bool(false));
    assert_eq!(n.run("EVAL \"redis.setresp(3); redis.setresp(2); return false\" 0"), Reply::nil());
    assert_eq!(n.run("EVAL \"redis.setresp(3); return redis.call('hgetall', 'h').map.f\" 0"), bulk("v"));
    assert_eq!(n.run("EVAL \"redis.setresp(3); return redis.call('get', 'nope') == nil\" 0"), Reply::Bool(true));
    assert_eq!(n.run("EVAL \"return redis.call('get', 'nope') == false\" 0"), int(1));
    assert_eq!(
        n.run("EVAL \"redis.setresp(3); return redis.call('hgetall', 'h')\" 0"),
        Reply::Map(vec![(bulk("f"), bulk("v"))])
    );
    assert!(
        matches!(n.run("EVAL \"redis.setresp(4)\" 0"), Reply::Error(e) if e.contains("RESP version must be 2 or 3"))
    );
    let double = n.run("EVAL \"return {double = 3.5}\" 0");
    assert_eq!(double, Reply::Double(3.5));
    assert_eq!(double.to_bytes_as(Proto::Resp3), b",3.5\r\n");
    assert_eq!(double.to_bytes_as(Proto::Resp2), b"$3\r\n3.5\r\n");
    assert_eq!(Reply::Double(f64::NEG_INFINITY).to_bytes_as(Proto::Resp3), b",-inf\r\n");
    assert_eq!(Reply::Double(2.0).to_bytes_as(Proto::Resp3), b",2\r\n");
    assert_eq!(Reply::Bool(true).to_bytes_as(Proto::Resp3), b"#t\r\n");
    assert_eq!(Reply::Bool(false).to_bytes_as(Proto::Resp2), b":0\r\n");
    let big = n.run("EVAL \"return {big_number = '123456789012345678901234567890'}\" 0");
    assert_eq!(big.to_bytes_as(Proto::Resp3), b"(123456789012345678901234567890\r\n");
    assert_eq!(big.to_bytes_as(Proto::Resp2), b"$30\r\n123456789012345678901234567890\r\n");
    assert_eq!(n.run("EVAL \"return {map = {a = 1}}\" 0"), Reply::Map(vec![(bulk("a"), int(1))]));
    assert_eq!(n.run("EVAL \"return {set = {m = true}}\" 0"), Reply::Set(vec![bulk("m")]));
    assert_eq!(
        n.run("EVAL \"return {verbatim_string = {format = 'txt', string = 'hi'}}\" 0"),
        Reply::Verbatim("hi".into())
    );
    // A client of ours reads each type back as it was sent.
    for reply in [Reply::Bool(true), Reply::Double(-0.25), Reply::BigNumber("-7".into())] {
        let bytes = reply.to_bytes_as(Proto::Resp3);
        assert_eq!(crate::resp::parse_reply(&bytes).unwrap().map(|(r, _)| r), Some(reply));
    }
}

/// What a script could do to make nodes differ, or stall or crash them all
/// alike, is refused (found in review).
#[test]
fn scripts_cannot_split_or_stall_the_cluster() {
    let mut n = Node::new();
    // A table that holds itself: an error, not a stack overflow.
    let reply = n.run("EVAL \"local t = {} t[1] = t return t\" 0");
    assert!(matches!(&reply, Reply::Error(e) if e.contains("nests too deep")), "{reply:?}");
    // RANDOMKEY answers differently on each node: not from a script.
    n.run("SET a 1");
    let reply = n.run("EVAL \"return redis.call('del', redis.call('randomkey'))\" 0");
    assert!(matches!(&reply, Reply::Error(e) if e.contains("not allowed from script")), "{reply:?}");
    // Admin commands need the admin role, which EVAL does not.
    let reply = n.run("EVAL \"return redis.call('flushall')\" 0");
    assert!(matches!(&reply, Reply::Error(e) if e.contains("not allowed from script")), "{reply:?}");
    assert_eq!(n.read("EXISTS a"), int(1));
    // tostring shows no address.
    assert_eq!(n.run("EVAL \"return tostring({}) .. tostring(print == nil) .. tostring(12)\" 0"), bulk("tabletrue12"));
    // Patterns whose worst case is out of bounds fail alike everywhere;
    // ordinary ones work, and plain finds are never limited.
    let reply = n.run("EVAL \"return string.find(string.rep('a', 100000), '.-.-.-.-b')\" 0");
    assert!(matches!(&reply, Reply::Error(e) if e.contains("pattern too complex")), "{reply:?}");
    let reply = n.run("EVAL \"return string.find('x', string.rep('a?', 200000))\" 0");
    assert!(matches!(&reply, Reply::Error(e) if e.contains("pattern too complex")), "{reply:?}");
    assert_eq!(n.run("EVAL \"return string.match('user:42', '^user:(%d+)$')\" 0"), bulk("42"));
    assert_eq!(n.run("EVAL \"return string.gsub('a-b-c', '-', '+')\" 0"), bulk("a+b+c"));
    assert_eq!(n.run("EVAL \"return string.find(string.rep('a', 1000000), 'a.-b', 1, true)\" 0"), Reply::nil());
    // A body that does not compile is not kept.
    n.run("EVAL \"return (\" 0");
    assert_eq!(n.read(&format!("SCRIPT EXISTS {}", script::sha1_hex(b"return ("))), Reply::array(vec![int(0)]));
    // FLUSHALL keeps loaded scripts, as Redis does.
    let sha = match n.run("SCRIPT LOAD \"return 1\"") {
        Reply::Bulk(Some(s)) => String::from_utf8(s).unwrap(),
        other => panic!("{other:?}"),
    };
    n.run("FLUSHALL");
    assert_eq!(n.run(&format!("EVALSHA {sha} 0")), int(1));
    // 0.1 + 0.2, as Redis answers it.
    assert_eq!(n.run("INCRBYFLOAT f 0.1"), bulk("0.1"));
    assert_eq!(n.run("INCRBYFLOAT f 0.2"), bulk("0.3"));
}
