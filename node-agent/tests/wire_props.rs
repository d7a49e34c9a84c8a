//! Property tests / fuzzing of the heartbeat decoder (`baton_agent::wire`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use baton_agent::key::ClusterKey;
use baton_agent::wire::{
    self, Compression, Envelope, WireError, HEADER_LEN, MAGIC, MAX_BODY, MAX_DATAGRAM, VERSION,
    VERSION_DEFLATE, VERSION_KEYED,
};
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
        // The version byte turned into the other unkeyed version fails at the MAC (it
        // covers the version); into the keyed version, at the key id the next bytes
        // then spell (not one of the ring's); any other value at the version check.
        let other_known = i == 4 && (bytes[4] == VERSION || bytes[4] == VERSION_DEFLATE);
        let expected = match i {
            0..=3 => "bad-magic",
            4 if bytes[4] == VERSION_KEYED => "unknown-key",
            4 if !other_known => "bad-version",
            _ => "bad-mac",
        };
        prop_assert_eq!(code, expected);
    }

    /// Version 2 (compressed) round-trips whatever the content; it is used only when
    /// smaller, and never exceeds the datagram limit.
    #[test]
    fn compressed_envelope_round_trips(
        cluster in ".{0,40}",
        from in ".{0,40}",
        path in any::<u8>(),
        seq in any::<u64>(),
        body in arb_json(),
        copies in 1usize..40,
    ) {
        let k = key();
        // Repeat the body to get compressible, larger payloads too.
        let body = Value::Array(vec![body; copies]);
        let env = Envelope { cluster, from, path, seq, body };
        let json_len = serde_json::to_vec(&env).unwrap().len();
        match wire::encode_with(&k, &env, Compression::Always) {
            Ok(bytes) => {
                prop_assert!(bytes.len() <= MAX_DATAGRAM);
                if bytes[4] == VERSION_DEFLATE {
                    prop_assert!(bytes.len() - HEADER_LEN < json_len);
                } else {
                    prop_assert_eq!(bytes.len() - HEADER_LEN, json_len);
                }
                prop_assert_eq!(wire::decode::<Value>(&k, &bytes).unwrap(), env.clone());
                // Auto decodes to the same envelope too.
                let auto = wire::encode(&k, &env).unwrap();
                prop_assert_eq!(wire::decode::<Value>(&k, &auto).unwrap(), env);
            }
            Err(e) => {
                prop_assert_eq!(e.code(), "too-large");
                prop_assert!(json_len > MAX_BODY);
            }
        }
    }

    /// Arbitrary authenticated version-2 bodies (random bytes, or DEFLATE of arbitrary
    /// bytes): an envelope, `bad-compression` or `malformed`, never a panic.
    #[test]
    fn decode_authenticated_arbitrary_compressed_body(
        raw in arb_body_bytes(),
        deflate in any::<bool>(),
    ) {
        let k = key();
        let body = if deflate { miniz_oxide_compress(&raw) } else { raw.clone() };
        let mac = k.mac(&[MAGIC, &[VERSION_DEFLATE], &body]);
        let pkt = [&MAGIC[..], &[VERSION_DEFLATE], &mac, &body].concat();
        match wire::decode::<Value>(&k, &pkt) {
            Ok(_) => prop_assert!(deflate),
            Err(WireError::Malformed { .. })
            | Err(WireError::BadCompression { .. })
            | Err(WireError::TooLarge { .. }) => {}
            Err(e) => prop_assert!(false, "unexpected error {:?}", e),
        }
    }
}

/// DEFLATE as the encoder does it (an authenticated sender compressing anything).
fn miniz_oxide_compress(raw: &[u8]) -> Vec<u8> {
    miniz_oxide::deflate::compress_to_vec(raw, 6)
}
