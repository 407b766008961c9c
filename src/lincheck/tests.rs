use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use super::*;

fn op(client: u64, invoked: u64, completed: u64, call: Call, outcome: Outcome) -> Op {
    Op { client, key: b"x".to_vec(), call, invoked, completed, outcome }
}

fn w(v: &str) -> Call {
    Call::Write(v.as_bytes().to_vec())
}

fn cas(e: &str, n: &str) -> Call {
    Call::Cas { expected: e.as_bytes().to_vec(), new: n.as_bytes().to_vec() }
}

fn read_of(v: Option<&str>) -> Outcome {
    Outcome::Ok(Ret::Value(v.map(|s| s.as_bytes().to_vec())))
}

fn done() -> Outcome {
    Outcome::Ok(Ret::Done)
}

fn verdict(ops: &[Op]) -> Verdict {
    check(ops, Budget::default()).expect("well formed")
}

fn passes(ops: &[Op]) {
    assert_eq!(verdict(ops), Verdict::Linearizable, "\n{}", render(ops));
}

fn fails(ops: &[Op]) -> Vec<Op> {
    match verdict(ops) {
        Verdict::NotLinearizable { minimal, .. } => minimal,
        v => panic!("expected a violation, got {v:?}\n{}", render(ops)),
    }
}

#[test]
fn sequential_history_passes() {
    passes(&[
        op(1, 0, 1, Call::Read, read_of(None)),
        op(1, 2, 3, w("a"), done()),
        op(1, 4, 5, Call::Read, read_of(Some("a"))),
        op(1, 6, 7, cas("a", "b"), Outcome::Ok(Ret::Bool(true))),
        op(1, 8, 9, cas("a", "c"), Outcome::Ok(Ret::Bool(false))),
        op(1, 10, 11, Call::Delete, Outcome::Ok(Ret::Bool(true))),
        op(1, 12, 13, Call::Read, read_of(None)),
    ]);
}

#[test]
fn concurrent_writes_and_reads_may_see_either() {
    for seen in ["a", "b"] {
        passes(&[
            op(1, 0, 10, w("a"), done()),
            op(2, 0, 10, w("b"), done()),
            op(3, 11, 12, Call::Read, read_of(Some(seen))),
            op(4, 13, 14, Call::Read, read_of(Some(seen))),
        ]);
    }
}

#[test]
fn a_read_overlapping_a_write_sees_old_or_new() {
    for seen in [None, Some("a")] {
        passes(&[op(1, 0, 10, w("a"), done()), op(2, 5, 6, Call::Read, read_of(seen))]);
    }
}

#[test]
fn unknown_writes_may_or_may_not_take_effect() {
    passes(&[op(1, 0, 0, w("a"), Outcome::Unknown), op(2, 50, 51, Call::Read, read_of(Some("a")))]);
    passes(&[op(1, 0, 0, w("a"), Outcome::Unknown), op(2, 50, 51, Call::Read, read_of(None))]);
    // ...and late: after a later read saw nothing.
    passes(&[
        op(1, 0, 0, w("a"), Outcome::Unknown),
        op(2, 50, 51, Call::Read, read_of(None)),
        op(3, 60, 61, Call::Read, read_of(Some("a"))),
    ]);
}

#[test]
fn cas_chains() {
    passes(&[
        op(1, 0, 1, w("0"), done()),
        op(2, 2, 10, cas("0", "1"), Outcome::Ok(Ret::Bool(true))),
        op(3, 3, 9, cas("1", "2"), Outcome::Ok(Ret::Bool(true))),
        op(4, 4, 8, cas("0", "9"), Outcome::Ok(Ret::Bool(false))),
        op(5, 11, 12, Call::Read, read_of(Some("2"))),
    ]);
}

#[test]
fn a_stale_read_fails() {
    let minimal =
        fails(&[op(1, 0, 1, w("a"), done()), op(1, 2, 3, w("b"), done()), op(2, 4, 5, Call::Read, read_of(Some("a")))]);
    assert_eq!(minimal.len(), 3, "{}", render(&minimal));
}

#[test]
fn a_lost_write_fails() {
    fails(&[
        op(1, 0, 1, w("a"), done()),
        op(2, 2, 3, w("b"), done()),
        op(3, 4, 5, Call::Read, read_of(Some("a"))),
        op(3, 6, 7, Call::Read, read_of(Some("a"))),
    ]);
}

#[test]
fn a_cas_that_succeeded_on_a_wrong_value_fails() {
    fails(&[op(1, 0, 1, w("a"), done()), op(2, 2, 3, cas("z", "b"), Outcome::Ok(Ret::Bool(true)))]);
}

#[test]
fn reads_going_back_in_time_fail() {
    fails(&[
        op(1, 0, 10, w("b"), done()),
        op(2, 2, 3, Call::Read, read_of(Some("b"))),
        op(3, 4, 5, Call::Read, read_of(None)),
    ]);
}

#[test]
fn an_observed_failed_write_fails() {
    fails(&[op(1, 0, 1, w("a"), Outcome::Failed), op(2, 2, 3, Call::Read, read_of(Some("a")))]);
}

#[test]
fn keys_are_independent() {
    let mut ops = vec![op(1, 0, 1, w("a"), done())];
    let mut other = op(2, 2, 3, Call::Read, read_of(None));
    other.key = b"y".to_vec();
    ops.push(other);
    passes(&ops);
}

#[test]
fn malformed_histories_are_refused() {
    let e = check(&[op(1, 5, 4, w("a"), done())], Budget::default()).unwrap_err();
    assert!(e.0.contains("before invoking"), "{e}");
    let e = check(&[op(1, 0, 10, w("a"), done()), op(1, 5, 12, w("b"), done())], Budget::default()).unwrap_err();
    assert!(e.0.contains("still in flight"), "{e}");
}

/// Builds a history that is linearizable by construction: each operation
/// takes effect at a random point inside its interval, in that order.
fn generate(seed: u64, clients: u64, ops_per_client: u64) -> Vec<Op> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut ops = Vec::new();
    let mut points = Vec::new();
    for c in 0..clients {
        let mut t = rng.random_range(0..20u64);
        for _ in 0..ops_per_client {
            let invoked = t;
            let completed = invoked + rng.random_range(1..40u64);
            let point = rng.random_range(invoked..=completed);
            let call = match rng.random_range(0..4) {
                0 | 1 => Call::Read,
                2 => w(&format!("v{}", rng.random_range(0..5))),
                _ => cas(&format!("v{}", rng.random_range(0..5)), &format!("v{}", rng.random_range(0..5))),
            };
            points.push((point, ops.len()));
            ops.push(Op { client: c, key: b"x".to_vec(), call, invoked, completed, outcome: Outcome::Unknown });
            t = completed + rng.random_range(1..10u64);
        }
    }
    points.sort();
    let mut state: State = None;
    for (_, i) in points {
        let (next, ret) = match &ops[i].call {
            Call::Read => (state.clone(), Ret::Value(state.clone())),
            Call::Write(v) => (Some(v.clone()), Ret::Done),
            Call::Cas { expected, new } if state.as_ref() == Some(expected) => (Some(new.clone()), Ret::Bool(true)),
            Call::Cas { .. } => (state.clone(), Ret::Bool(false)),
            Call::Delete => (None, Ret::Bool(state.is_some())),
        };
        state = next;
        ops[i].outcome = Outcome::Ok(ret);
    }
    ops
}

#[test]
fn random_linearizable_histories_pass_and_a_forged_read_fails() {
    let base = 0x11c4_ec00u64;
    for seed in base..base + 200 {
        let mut ops = generate(seed, 6, 12);
        assert_eq!(verdict(&ops), Verdict::Linearizable, "seed {seed:#x}\n{}", render(&ops));
        // A read of a value nobody ever wrote cannot be explained.
        let reads: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].call == Call::Read).collect();
        if let Some(&i) = reads.first() {
            ops[i].outcome = read_of(Some("never-written"));
            assert!(matches!(verdict(&ops), Verdict::NotLinearizable { .. }), "seed {seed:#x}");
        }
    }
}

#[test]
fn failing_histories_shrink_to_a_few_operations() {
    let mut ops = generate(0x5421, 8, 20);
    let n = ops.len();
    ops.push(op(99, 10_000, 10_001, w("late"), done()));
    ops.push(op(98, 10_002, 10_003, Call::Read, read_of(Some("v1"))));
    let minimal = fails(&ops);
    assert!(minimal.len() <= 4, "{} of {n} left:\n{}", minimal.len(), render(&minimal));
}

#[test]
fn a_larger_history_is_decided() {
    // Ten clients, a thousand operations on one key: bounded work.
    let ops = generate(0xb16, 10, 100);
    assert_eq!(verdict(&ops), Verdict::Linearizable);
}

#[test]
fn text_form_round_trips() {
    let mut ops = generate(7, 3, 5);
    ops.push(op(9, 1, 1, w("a b"), Outcome::Unknown));
    ops.push(op(10, 2, 3, Call::Delete, Outcome::Failed));
    ops.push(Op {
        client: 11,
        key: vec![0, 255],
        call: Call::Write(b"-".to_vec()),
        invoked: 4,
        completed: 5,
        outcome: done(),
    });
    for o in ops.iter_mut().filter(|o| o.outcome == Outcome::Unknown) {
        o.completed = u64::MAX;
    }
    let text = to_text(&ops);
    assert_eq!(from_text(&text).unwrap(), ops, "{text}");
    assert!(from_text("1 2 3 x fly -> ok").unwrap_err().starts_with("line 1: unknown call"));
}

#[test]
fn many_unknown_writes_stay_tractable() {
    // Forty writes whose outcome is unknown, interleaved with reads that
    // see some of them: the blind ones must not make the search explode.
    let mut ops = Vec::new();
    for i in 0..40u64 {
        ops.push(op(100 + i, i * 10, 0, w(&format!("u{i}")), Outcome::Unknown));
    }
    for i in 0..20u64 {
        let t = 1000 + i * 10;
        ops.push(op(i, t, t + 1, w(&format!("k{i}")), done()));
        ops.push(op(i, t + 2, t + 3, Call::Read, read_of(Some(&format!("k{i}")))));
    }
    ops.push(op(50, 2000, 2001, Call::Read, read_of(Some("u7"))));
    let budget = Budget { steps_max: 1_000_000 };
    assert_eq!(check(&ops, budget).unwrap(), Verdict::Linearizable);
    // A read of a blind write's value after a later known write is a
    // violation that the reduction must still see.
    ops.push(op(51, 2010, 2011, w("k-last"), done()));
    ops.push(op(52, 2020, 2021, Call::Read, read_of(Some("u7"))));
    ops.push(op(53, 2030, 2031, Call::Read, read_of(Some("k-last"))));
    assert!(matches!(check(&ops, budget).unwrap(), Verdict::NotLinearizable { .. }));
}

#[test]
fn a_value_only_an_unknown_cas_expected_is_not_treated_as_unobserved() {
    // The unknown write of "a" is needed by the unknown CAS a -> b, whose
    // result a later read shows: linearizable (found by the simulator).
    passes(&[
        op(1, 0, 0, w("a"), Outcome::Unknown),
        op(2, 5, 0, cas("a", "b"), Outcome::Unknown),
        op(3, 20, 30, Call::Read, read_of(Some("b"))),
    ]);
}
