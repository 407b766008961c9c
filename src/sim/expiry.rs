//! The expiry promise, checked over a simulated history (docs/commands.md,
//! Expiry): a key is absent for every read linearized after its deadline by
//! the leader's clock, and present, once written, for every read before it.
//!
//! Each key with a deadline is written once (`OpKind::WriteTtl`), so its
//! history is a register that holds its value from the write until the
//! expiry and nothing after. With clocks that drift, "the leader's clock" is
//! the clock of whichever leader served the read: the simulator notes, per
//! tick, the lowest and highest clock a leader read to sweep, serve a read
//! or stamp an entry (`Cluster::leader_clocks`). A read that returns the
//! value must have been served by a leader whose clock had not reached the
//! deadline, so some noted reading during the read must be below it; a read
//! that misses a value written before it must come after some leader's clock
//! reached the deadline; and once a read misses it after the write, every
//! later read misses it too.

use std::collections::BTreeMap;

use super::simulate::{Op, OpKind, OpResult};

/// Keys with a deadline are named with this prefix.
pub const KEY_PREFIX: &str = "t";

pub fn is_expiring(key: &str) -> bool {
    key.starts_with(KEY_PREFIX)
}

/// The write of one key with a deadline, and the reads of it.
struct KeyHistory<'a> {
    write: Option<&'a Op>,
    reads: Vec<&'a Op>,
}

/// Checks every key with a deadline in `ops` against the leaders' clock
/// readings, by tick (lowest, highest).
pub fn check(ops: &[Op], leader_clocks: &BTreeMap<u64, (u64, u64)>) -> Result<(), String> {
    let mut keys: BTreeMap<&str, KeyHistory> = BTreeMap::new();
    for op in ops.iter().filter(|op| is_expiring(&op.key)) {
        let h = keys.entry(&op.key).or_insert(KeyHistory { write: None, reads: Vec::new() });
        match (&op.kind, &op.result) {
            (OpKind::WriteTtl { .. }, _) => {
                if h.write.replace(op).is_some() {
                    return Err(format!("expiry: the simulator wrote {} twice", op.key));
                }
            }
            (OpKind::Read, OpResult::Ok(_)) => h.reads.push(op),
            (OpKind::Read, _) => {}
            _ => return Err(format!("expiry: unexpected operation on {}: {op:?}", op.key)),
        }
    }
    for (key, h) in keys {
        check_key(key, &h, leader_clocks)?;
    }
    Ok(())
}

fn check_key(key: &str, h: &KeyHistory, leader_clocks: &BTreeMap<u64, (u64, u64)>) -> Result<(), String> {
    let Some(write) = h.write else { return Ok(()) };
    let OpKind::WriteTtl { value, deadline, .. } = &write.kind else { unreachable!("a write") };
    let completed = |op: &Op| op.completed.unwrap_or(u64::MAX);
    let seen = |op: &Op| matches!(&op.result, OpResult::Ok(Some(_)));
    // The first moment from which the write has certainly taken effect:
    // its acknowledgement, or the end of a read that saw it.
    let applied_by = std::iter::once(write)
        .filter(|w| matches!(w.result, OpResult::Ok(_)))
        .chain(h.reads.iter().copied().filter(|r| seen(r)))
        .map(completed)
        .min();
    let lowest = |from: u64, to: u64| leader_clocks.range(from..=to).map(|(_, (lo, _))| *lo).min();
    let highest_by = |to: u64| leader_clocks.range(..=to).map(|(_, (_, hi))| *hi).max();
    let mut missed_after_write: Option<&Op> = None;
    for r in h.reads.iter().copied() {
        let OpResult::Ok(got) = &r.result else { continue };
        match got {
            Some(v) if v != value => {
                return Err(format!("expiry: read of {key} returned {v:?}, never written (wrote {value:?})"));
            }
            Some(_) if write.result == OpResult::Failed || write.invoked > completed(r) => {
                return Err(format!(
                    "expiry: read of {key} at ticks {}..{} saw a write that did not happen",
                    r.invoked,
                    completed(r)
                ));
            }
            Some(_) => {
                if let Some(clock) = lowest(r.invoked, completed(r))
                    && clock >= *deadline
                {
                    return Err(format!(
                        "expiry: read of {key} at ticks {}..{} saw it, but every leader's clock that served a \
                         read then was at or past its deadline ({clock} >= {deadline} ms)",
                        r.invoked,
                        completed(r)
                    ));
                }
            }
            None if applied_by.is_some_and(|t| t < r.invoked) => {
                if highest_by(completed(r)).is_none_or(|clock| clock < *deadline) {
                    return Err(format!(
                        "expiry: read of {key} at ticks {}..{} missed it before its deadline ({deadline} ms) \
                         by every leader's clock so far",
                        r.invoked,
                        completed(r)
                    ));
                }
                if missed_after_write.is_none_or(|m| completed(m) > completed(r)) {
                    missed_after_write = Some(r);
                }
            }
            None => {}
        }
    }
    // No read that begins after a read found the key expired sees it again.
    if let Some(m) = missed_after_write
        && let Some(r) = h.reads.iter().find(|r| seen(r) && r.invoked > completed(m))
    {
        return Err(format!(
            "expiry: {key} came back: missed by a read at ticks {}..{}, seen by a later read at ticks {}..{}",
            m.invoked,
            completed(m),
            r.invoked,
            completed(r)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: OpKind, invoked: u64, completed: u64, result: OpResult) -> Op {
        Op { client: 1, key: "t0".into(), kind, invoked, completed: Some(completed), result }
    }

    fn write(deadline: u64) -> Op {
        op(OpKind::WriteTtl { value: "v".into(), px: 0, deadline }, 1, 2, OpResult::Ok(Some("OK".into())))
    }

    fn read(invoked: u64, completed: u64, seen: bool) -> Op {
        op(OpKind::Read, invoked, completed, OpResult::Ok(seen.then(|| "v".to_string())))
    }

    #[test]
    fn a_read_served_by_a_leader_past_the_deadline_must_miss_the_key() {
        let clocks = BTreeMap::from([(5, (100, 100)), (6, (110, 110))]);
        assert!(check(&[write(105), read(5, 6, true)], &clocks).is_ok(), "the leader at tick 5 was before it");
        let err = check(&[write(105), read(6, 7, true)], &clocks).unwrap_err();
        assert!(err.contains("at or past its deadline"), "{err}");
    }

    #[test]
    fn a_key_missed_before_its_deadline_by_every_clock_is_caught() {
        let clocks = BTreeMap::from([(5, (100, 100))]);
        let err = check(&[write(200), read(5, 6, false)], &clocks).unwrap_err();
        assert!(err.contains("before its deadline"), "{err}");
        // A read that may come before the write may miss it.
        assert!(check(&[write(200), read(1, 6, false)], &clocks).is_ok());
    }

    #[test]
    fn an_expired_key_never_comes_back() {
        let clocks = BTreeMap::from([(5, (300, 300)), (9, (90, 90))]);
        let err = check(&[write(200), read(5, 6, false), read(9, 10, true)], &clocks).unwrap_err();
        assert!(err.contains("came back"), "{err}");
    }
}
