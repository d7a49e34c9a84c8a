//! Property tests of the S3/DynamoDB lease documents (cloud-providers/src/aws/witness.rs),
//! input from outside: arbitrary bodies never panic, and an arbitrary lease document,
//! however extreme its counters, never grants a vote the rules do not allow. (Here, in
//! node-agent, because its test build already holds everything they need.)
//!
//! Longer runs: `PROPTEST_CASES=100000 cargo test -p baton-agent --test fuzz_lease`.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Tests measure the real time of real processes and sockets: they read the clock directly.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::time::Duration;

use baton_providers::clock::Instant;

use baton_providers::aws::witness::{plan, LeaseDoc, Observer, Plan};
use baton_providers::witness::{validate, VoteRequest};
use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    match std::env::var("PROPTEST_CASES") {
        Ok(_) => ProptestConfig::default(),
        Err(_) => ProptestConfig::with_cases(cases),
    }
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec!["a", "b", "c", "d"]).prop_map(str::to_string),
        ".{0,4}",
    ]
}

fn counter() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..5,
        any::<u64>(),
        prop::sample::select(vec![u64::MAX, u64::MAX - 1, 1 << 53, i64::MAX as u64]),
    ]
}

fn lease_doc() -> impl Strategy<Value = LeaseDoc> {
    (
        prop::sample::select(vec!["c", "other", ""]),
        prop::collection::vec(name(), 0..4),
        proptest::option::of(prop::collection::vec(name(), 0..4)),
        name(),
        counter(),
        prop::collection::btree_map(name(), counter(), 0..4),
        prop::collection::btree_map(name(), counter(), 0..4),
    )
        .prop_map(
            |(cluster, partition, pending, writer, seq, epochs, renewals)| LeaseDoc {
                cluster: cluster.into(),
                partition,
                pending,
                writer,
                seq,
                epochs,
                renewals,
            },
        )
}

fn request() -> impl Strategy<Value = (VoteRequest, Vec<String>)> {
    (
        prop::sample::select(vec!["a", "b", "c"]),
        prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "d"]), 0..4),
        // Requests above the epoch bound are refused before the rules run (see
        // `validate`); the rules are fuzzed with every request that passes it.
        prop::collection::btree_map("[a-z]{1,3}", 0..=baton_core::bounds::MAX_EPOCH, 0..3),
    )
        .prop_map(|(server, others, epochs)| {
            let mut partition: Vec<String> = others.iter().map(|s| s.to_string()).collect();
            partition.push(server.to_string());
            let r = VoteRequest {
                cluster: "c".into(),
                server: server.into(),
                partition,
                lease: Duration::from_secs(1),
                epochs,
            };
            let p = validate(&r).unwrap();
            (r, p)
        })
}

proptest! {
    #![proptest_config(config(2000))]

    /// An S3 object body: a lease document or an error, never a panic.
    #[test]
    fn s3_bodies_parse_or_fail(body in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        lease_doc().prop_map(|d| serde_json::to_vec(&d).unwrap()),
        (lease_doc(), any::<prop::sample::Index>()).prop_map(|(d, i)| {
            let b = serde_json::to_vec(&d).unwrap();
            b[..i.index(b.len() + 1)].to_vec()
        }),
    ]) {
        if let Ok(d) = serde_json::from_slice::<LeaseDoc>(&body) {
            // Whatever parses survives a round trip.
            let again = serde_json::to_vec(&d).unwrap();
            prop_assert_eq!(serde_json::from_slice::<LeaseDoc>(&again).unwrap(), d);
        }
    }

    /// Whatever the current document says: a server outside its partition is denied
    /// while the version is fresh, a server left out of a pending move is denied, and
    /// every write makes the sequence number and the writer's renewal counter grow
    /// (observers time grants by seeing them change). No panic at any counter value.
    #[test]
    fn an_arbitrary_lease_document_never_grants_what_the_rules_forbid(
        doc in lease_doc(),
        (req, partition) in request(),
        fresh in any::<bool>(),
    ) {
        let now = Instant::now();
        let hold = Duration::from_millis(1_420);
        let mut obs = Observer::default();
        if fresh {
            obs.observe("v1", &doc, now);
        }
        let me = &req.server;
        match plan(&obs, Some(("v1", &doc)), &req, &partition, now, hold) {
            Plan::Create(_) => prop_assert!(false, "created over an existing lease"),
            Plan::Deny(d) => prop_assert!(!d.is_empty()),
            Plan::Write { doc: new, .. } => {
                prop_assert!(fresh.then_some(()).is_none() || doc.partition.contains(me),
                    "{} outside {:?} took a fresh lease", me, doc.partition);
                if doc.partition.contains(me) {
                    if let Some(q) = &doc.pending {
                        prop_assert!(q.contains(me), "{} left out of the pending move {:?}", me, q);
                    }
                }
                prop_assert!(new.seq > doc.seq);
                let before = doc.renewals.get(me).copied().unwrap_or(0);
                prop_assert!(new.renewals[me] > before);
                // Epochs only grow.
                for (g, e) in &doc.epochs {
                    prop_assert!(new.epochs[g] >= *e);
                }
                prop_assert_eq!(&new.writer, me);
            }
        }
    }
}

#[test]
fn counters_at_the_maximum_are_denied_not_wrapped() {
    let (req, partition) = {
        let r = VoteRequest {
            cluster: "c".into(),
            server: "a".into(),
            partition: vec!["a".into()],
            lease: Duration::from_secs(1),
            epochs: BTreeMap::new(),
        };
        let p = validate(&r).unwrap();
        (r, p)
    };
    for (seq, mine) in [(u64::MAX, 1), (1, u64::MAX)] {
        let doc = LeaseDoc {
            cluster: "c".into(),
            partition: vec!["a".into()],
            pending: None,
            writer: "a".into(),
            seq,
            epochs: BTreeMap::new(),
            renewals: BTreeMap::from([("a".to_string(), mine)]),
        };
        let now = Instant::now();
        let mut obs = Observer::default();
        obs.observe("v", &doc, now);
        match plan(
            &obs,
            Some(("v", &doc)),
            &req,
            &partition,
            now,
            Duration::from_secs(1),
        ) {
            Plan::Deny(d) => assert!(d.contains("maximum"), "{d}"),
            other => panic!("{other:?}"),
        }
    }
}
