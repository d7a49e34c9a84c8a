//! Property tests / fuzzing of the heartbeat decoder (`baton_agent::wire`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use baton_agent::key::ClusterKey;
use baton_agent::wire::{self, Envelope, WireError, HEADER_LEN, MAGIC, MAX_DATAGRAM, VERSION};
use proptest::prelude::*;
use serde_json::Value;

fn key() -> ClusterKey {
    ClusterKey::from_bytes(b"property test cluster key, >= 32 bytes").unwrap()
}

/// Datagram with a valid header and MAC around arbitrary body bytes.
fn sealed(k: &ClusterKey, body: &[u8]) -> Vec<u8> {
    let mac = k.mac(&[MAGIC, &[VERSION], body]);
    [&MAGIC[..], &[VERSION], &mac, body].concat()
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Finite floats only (JSON has no NaN/inf), and exactly representable in short
        // decimal form: without serde_json's `float_roundtrip` feature, parsing may be
        // off by one ulp for arbitrary f64, which would make equality checks flaky.
        any::<i32>().prop_map(|i| Value::from(f64::from(i) / 8.0)),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(".{0,10}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Bytes that look like JSON envelopes, nearly-valid ones, or junk.
fn arb_body_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        arb_json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        (arb_json(), any::<u64>(), any::<u8>()).prop_map(|(body, seq, path)| {
            serde_json::to_vec(&Envelope {
                cluster: "c".to_string(),
                from: "n".to_string(),
                path,
                seq,
                body,
            })
            .unwrap()
        }),
        // A valid envelope with a random cut and random byte spliced in.
        (arb_json(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(body, idx, b)| {
            let mut v = serde_json::to_vec(&Envelope {
                cluster: "c".to_string(),
                from: "n".to_string(),
                path: 0,
                seq: 1,
                body,
            })
            .unwrap();
            let i = idx.index(v.len());
            v[i] = b;
            v.truncate(v.len() - idx.index(v.len() / 2 + 1));
            v
        }),
        // Deep nesting, must hit serde_json's recursion limit, not the stack.
        (1usize..5000).prop_map(|n| {
            let mut v = "[".repeat(n).into_bytes();
            v.extend(std::iter::repeat_n(b']', n));
            v
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Arbitrary bytes never panic and never decode (no valid MAC without the key).
    #[test]
    fn decode_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let r = wire::decode::<Value>(&key(), &bytes);
        prop_assert!(r.is_err());
    }

    /// Bytes behind a valid magic and version reach the MAC check and fail there.
    #[test]
    fn decode_valid_header_random_rest_is_bad_mac(rest in prop::collection::vec(any::<u8>(), 0..2048)) {
        let mut pkt = [&MAGIC[..], &[VERSION]].concat();
        pkt.extend_from_slice(&rest);
        let r = wire::decode::<Value>(&key(), &pkt);
        let expected = if pkt.len() < HEADER_LEN { "too-short" } else { "bad-mac" };
        prop_assert_eq!(r.unwrap_err().code(), expected);
    }

    /// Arbitrary bodies with a VALID MAC exercise the JSON path: the result is either
    /// an envelope or `malformed`, never a panic.
    #[test]
    fn decode_authenticated_arbitrary_body(body in arb_body_bytes()) {
        let k = key();
        let pkt = sealed(&k, &body);
        match wire::decode::<Value>(&k, &pkt) {
            Ok(env) => {
                // What decoded re-encodes and decodes again (body compared loosely:
                // arbitrary floats may move by one ulp through serde_json's parser).
                let again = wire::encode(&k, &env).unwrap();
                let env2 = wire::decode::<Value>(&k, &again).unwrap();
                prop_assert_eq!((&env2.cluster, &env2.from, env2.path, env2.seq), (&env.cluster, &env.from, env.path, env.seq));
            }
            Err(WireError::Malformed { .. }) => {}
            Err(WireError::TooLarge { .. }) => prop_assert!(pkt.len() > MAX_DATAGRAM),
            Err(e) => prop_assert!(false, "unexpected error {:?}", e),
        }
        // A typed body too.
        match wire::decode::<Vec<u32>>(&k, &pkt) {
            Ok(_) | Err(WireError::Malformed { .. }) | Err(WireError::TooLarge { .. }) => {}
            Err(e) => prop_assert!(false, "unexpected error {:?}", e),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn envelope_round_trips(
        cluster in ".{0,40}",
        from in ".{0,40}",
        path in any::<u8>(),
        seq in any::<u64>(),
        body in arb_json(),
    ) {
        let k = key();
        let env = Envelope { cluster, from, path, seq, body };
        match wire::encode(&k, &env) {
            Ok(bytes) => {
                prop_assert!(bytes.len() <= MAX_DATAGRAM);
                prop_assert_eq!(wire::decode::<Value>(&k, &bytes).unwrap(), env);
            }
            Err(e) => prop_assert_eq!(e.code(), "too-large"),
        }
    }

    /// Any single-byte corruption of a valid datagram is rejected.
    #[test]
    fn corrupted_datagram_rejected(body in arb_json(), idx in any::<prop::sample::Index>(), x in 1u8..=255) {
        let k = key();
        let env = Envelope { cluster: "c".into(), from: "n".into(), path: 1, seq: 2, body };
        let mut bytes = wire::encode(&k, &env).unwrap();
        let i = idx.index(bytes.len());
        bytes[i] ^= x;
        let code = wire::decode::<Value>(&k, &bytes).unwrap_err().code();
        let expected = match i { 0..=3 => "bad-magic", 4 => "bad-version", _ => "bad-mac" };
        prop_assert_eq!(code, expected);
    }
}
