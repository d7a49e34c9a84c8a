//! Property tests of the alert-log reader and of reopening a log for writing, on files
//! with arbitrary, truncated and corrupted content: no panic, damaged lines skipped,
//! every event returned is one that a file holds whole, and the next `seq` is higher
//! than every readable one.
//!
//! (Here, in node-agent, which reads the log for the API, because its test build already
//! holds everything they need.)
//!
//! Longer runs: `PROPTEST_CASES=100000 cargo test -p baton-agent --test fuzz_alert_log`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use baton_core::events::{Event, GROUP_ACTIVATED};
use baton_notifier::alert_log::{AlertLog, AlertReader, FILE_NAME, MAX_SEQ};
use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    match std::env::var("PROPTEST_CASES") {
        Ok(_) => ProptestConfig::default(),
        Err(_) => ProptestConfig::with_cases(cases),
    }
}

fn event(seq: u64, msg: &str) -> Event {
    let mut e = Event::new(&GROUP_ACTIVATED, msg.to_string()).group("g");
    e.seq = seq;
    e
}

/// One line of a log file: an event, garbage, an event cut short or with a byte changed.
fn line() -> impl Strategy<Value = Vec<u8>> {
    let seq = prop_oneof![
        1u64..50,
        any::<u64>(),
        prop::sample::select(vec![0, MAX_SEQ - 1, MAX_SEQ + 1, u64::MAX - 1, u64::MAX]),
    ];
    let ev = (seq, ".{0,12}").prop_map(|(s, m)| serde_json::to_vec(&event(s, &m)).unwrap());
    prop_oneof![
        4 => ev.clone(),
        1 => prop::collection::vec(any::<u8>(), 0..80),
        1 => (ev.clone(), any::<prop::sample::Index>())
            .prop_map(|(b, i)| b[..i.index(b.len() + 1)].to_vec()),
        1 => (ev, any::<prop::sample::Index>(), 1u8..=255).prop_map(|(mut b, i, x)| {
            let at = i.index(b.len());
            b[at] ^= x;
            b
        }),
    ]
}

/// A file: lines joined by newlines, the last one maybe unterminated (a torn write).
fn file() -> impl Strategy<Value = Vec<u8>> {
    (prop::collection::vec(line(), 0..12), any::<bool>()).prop_map(|(lines, torn)| {
        let mut out = Vec::new();
        for l in lines {
            out.extend_from_slice(&l);
            out.push(b'\n');
        }
        if torn && !out.is_empty() {
            out.pop();
        }
        out
    })
}

/// The events a reader may return from `bytes`: the whole lines that parse, with a
/// plausible seq.
fn readable(bytes: &[u8]) -> Vec<Event> {
    bytes
        .split(|b| *b == b'\n')
        .filter_map(|l| serde_json::from_slice::<Event>(l.trim_ascii()).ok())
        .filter(|e| e.seq <= MAX_SEQ)
        .collect()
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn reading_damaged_logs(
        current in file(),
        rotated in proptest::option::of(file()),
        after in prop_oneof![0u64..60, any::<u64>()],
        limit in 0usize..20,
        n in 0usize..20,
    ) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), &current).unwrap();
        let mut all = Vec::new();
        if let Some(r) = &rotated {
            std::fs::write(dir.path().join(format!("{FILE_NAME}.1")), r).unwrap();
            all.extend(readable(r));
        }
        all.extend(readable(&current));
        let reader = AlertReader::new(dir.path());
        let got = reader.read_since(after, limit).unwrap();
        prop_assert!(got.len() <= limit);
        for e in &got {
            prop_assert!(e.seq > after);
            prop_assert!(all.contains(e), "{:?} is not a whole line of the files", e);
        }
        let tail = reader.tail(n).unwrap();
        prop_assert!(tail.len() <= n);
        prop_assert_eq!(tail.len(), n.min(all.len()));
        for e in &tail {
            prop_assert!(all.contains(e));
        }
    }

    #[test]
    fn reopening_a_damaged_log_continues_above_every_readable_seq(
        current in file(),
        rotated in proptest::option::of(file()),
    ) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), &current).unwrap();
        let mut all = readable(&current);
        if let Some(r) = &rotated {
            std::fs::write(dir.path().join(format!("{FILE_NAME}.1")), r).unwrap();
            all.extend(readable(r));
        }
        let mut log = AlertLog::open(dir.path(), 1 << 20, 4).unwrap();
        let ev = log.append(event(0, "after reopening")).unwrap();
        // Above every readable line of the newest file holding one.
        let newest = if readable(&current).is_empty() {
            rotated.as_deref().map(readable).unwrap_or_default()
        } else {
            readable(&current)
        };
        for e in &newest {
            prop_assert!(ev.seq > e.seq, "{} after {}", ev.seq, e.seq);
        }
        // And the new line reads back.
        let back = AlertReader::new(dir.path()).tail(1).unwrap();
        prop_assert_eq!(back, vec![ev]);
    }
}

#[test]
fn a_line_with_the_largest_seq_does_not_stop_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = serde_json::to_vec(&event(7, "fine")).unwrap();
    text.push(b'\n');
    text.extend_from_slice(&serde_json::to_vec(&event(u64::MAX, "damaged")).unwrap());
    text.push(b'\n');
    std::fs::write(dir.path().join(FILE_NAME), &text).unwrap();
    let mut log = AlertLog::open(dir.path(), 1 << 20, 4).unwrap();
    assert_eq!(log.append(event(0, "next")).unwrap().seq, 8);
    let seqs: Vec<u64> = AlertReader::new(dir.path())
        .tail(10)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, vec![7, 8]);
}
