//! The history checker (`support::history`) must be able to fail: each
//! violation it looks for, made by hand, is found.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use support::history::{History, Op, Outcome};

fn op(node: &str, key: &str, value: &str, at: Instant, ms: u64, outcome: Outcome) -> Op {
    Op {
        client: "c".into(),
        node: node.into(),
        key: key.into(),
        value: value.into(),
        invoked: at + Duration::from_millis(ms),
        completed: at + Duration::from_millis(ms + 1),
        outcome,
    }
}

fn data(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn a_clean_history_passes() {
    let h = History::new();
    let t0 = Instant::now();
    h.granted("A", t0, Duration::from_secs(10));
    h.record(op("A", "k1", "1", t0, 1, Outcome::Ok));
    h.record(op("A", "k2", "1", t0, 2, Outcome::Error("FENCED".into())));
    let v = h.check(&data(&[("k1", "1")]));
    assert!(v.clean(), "{}", v.report);
    assert_eq!((v.ok, v.errors, v.unknown), (1, 1, 0));
}

#[test]
fn an_acknowledgement_after_the_promotion_is_split_brain() {
    let h = History::new();
    let t0 = Instant::now();
    h.promoted("B", t0 + Duration::from_millis(10));
    h.record(op("A", "k", "1", t0, 20, Outcome::Ok));
    h.record(op("B", "j", "1", t0, 20, Outcome::Ok));
    let v = h.check(&data(&[("k", "1"), ("j", "1")]));
    assert_eq!(v.split_brain.len(), 1, "{}", v.report);
    assert_eq!(v.split_brain[0].node, "A");
}

#[test]
fn a_missing_acknowledged_write_is_lost_unless_a_later_write_explains_it() {
    let h = History::new();
    let t0 = Instant::now();
    h.record(op("A", "k", "1", t0, 1, Outcome::Ok));
    h.record(op("A", "gone", "1", t0, 1, Outcome::Ok));
    // An unknown-outcome write to k that overlapped or followed: it may
    // have overwritten k.
    h.record(op("A", "k", "2", t0, 5, Outcome::Unknown("timeout".into())));
    let v = h.check(&data(&[("k", "2")]));
    assert_eq!(v.lost.len(), 1, "{}", v.report);
    assert_eq!(v.lost[0].key, "gone");
    // A refused write explains nothing.
    let h = History::new();
    h.record(op("A", "k", "1", t0, 1, Outcome::Ok));
    h.record(op("A", "k", "2", t0, 5, Outcome::Error("FENCED".into())));
    assert_eq!(h.check(&data(&[("k", "2")])).lost.len(), 1);
}

#[test]
fn an_acknowledgement_outside_every_grant_is_late() {
    let h = History::new();
    let t0 = Instant::now();
    h.granted("A", t0, Duration::from_millis(100));
    h.record(op("A", "k1", "1", t0, 50, Outcome::Ok));
    h.record(op("A", "k2", "1", t0, 150, Outcome::Ok));
    let v = h.check(&data(&[("k1", "1"), ("k2", "1")]));
    assert_eq!(v.late.len(), 1, "{}", v.report);
    assert_eq!(v.late[0].key, "k2");
    assert!(v.report.contains("1 late"), "{}", v.report);
}

#[test]
fn a_refused_write_that_was_applied_is_found() {
    let h = History::new();
    let t0 = Instant::now();
    h.record(op("A", "k", "1", t0, 1, Outcome::Error("FENCED".into())));
    h.record(op("A", "j", "1", t0, 1, Outcome::Error("FENCED".into())));
    let v = h.check(&data(&[("k", "1")]));
    assert_eq!(v.applied_refused.len(), 1, "{}", v.report);
    assert!(!v.clean());
}
