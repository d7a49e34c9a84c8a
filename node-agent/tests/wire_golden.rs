//! The heartbeat envelope against fixed bytes (wire versions 1 and 2).
//!
//! A change to the datagram layout, the MAC construction, the JSON field names or their
//! order changes these bytes and fails here: agents of different versions run side by
//! side during a rolling upgrade, so such a change must be deliberate (a new wire
//! version), never a side effect. The expected MACs and the version-2 body were computed
//! independently of Baton (Python's `hmac` and `zlib`, raw DEFLATE) from the JSON below.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use baton_agent::key::{ClusterKey, KeyRing};
use baton_agent::wire::{
    self, Compression, Envelope, RttStamp, Timed, WireError, HEADER_LEN, HEADER_LEN_KEYED, MAGIC,
    VERSION, VERSION_DEFLATE, VERSION_KEYED,
};
use baton_core::engine::{
    FlagIntent, GroupIntent, GroupReport, GroupState, Intents, PeerMessage, TimeoutIntent,
};

const KEY: &[u8] = b"golden heartbeat key: 0123456789abcdef";

fn key() -> ClusterKey {
    ClusterKey::from_bytes(KEY).unwrap()
}

/// A heartbeat as node-1 sends it on path 1 while it holds `web` with epoch 7.
fn envelope() -> Envelope<Timed<PeerMessage>> {
    Envelope {
        cluster: "prod".into(),
        from: "node-1".into(),
        path: 1,
        seq: 1_099_511_627_777,
        body: Timed {
            body: PeerMessage {
                digest: "5f2c".into(),
                incarnation: 42,
                ready: true,
                quorum: true,
                refused: false,
                leaving: false,
                groups: vec![GroupReport {
                    name: "web".into(),
                    state: GroupState::Online,
                    epoch: 7,
                    max_epoch: 7,
                    excluded: false,
                    seen_holder: Some(("node-1".into(), 7)),
                    state_ms: 1500,
                    ack: Some(("node-1".into(), 7)),
                }],
                intents: Intents {
                    groups: BTreeMap::from([(
                        "web".into(),
                        GroupIntent {
                            version: 3,
                            origin: "node-2".into(),
                            run: true,
                            ..GroupIntent::default()
                        },
                    )]),
                    suspended: FlagIntent::default(),
                    stopping: FlagIntent::default(),
                    monitors: BTreeMap::new(),
                    timeout: TimeoutIntent::default(),
                },
                hears: vec!["node-2".into(), "node-3".into()],
                heard: Some(BTreeMap::from([
                    ("node-2".into(), 9),
                    ("node-3".into(), 11),
                ])),
                // Absent, as from agents before it: the golden bytes stay as they were.
                heard_ago: None,
                vote: true,
                marks: Default::default(),
            },
            rtt: Some(RttStamp {
                t: 123_456,
                echo: BTreeMap::from([("node-2".into(), (99_000, 250))]),
            }),
            gv: None,
            gvs: None,
        },
    }
}

/// The envelope's JSON, byte for byte (field names and order are the wire format).
const JSON: &str = r#"{"cluster":"prod","from":"node-1","path":1,"seq":1099511627777,"body":{"digest":"5f2c","incarnation":42,"ready":true,"quorum":true,"refused":false,"leaving":false,"groups":[{"name":"web","state":"online","epoch":7,"max_epoch":7,"excluded":false,"seen_holder":["node-1",7],"state_ms":1500,"ack":["node-1",7]}],"intents":{"groups":{"web":{"version":3,"origin":"node-2","run":true,"prefer":null,"prefer_epoch":0,"clear_exclusions":false}},"suspended":{"version":0,"origin":"","on":false},"stopping":{"version":0,"origin":"","on":false},"monitors":{},"timeout":{"version":0,"origin":"","heartbeat_timeout_ms":0,"monitor_factor_pct":0,"duration_ms":0}},"hears":["node-2","node-3"],"heard":{"node-2":9,"node-3":11},"vote":true,"rtt":{"t":123456,"echo":{"node-2":[99000,250]}}}}"#;

/// HMAC-SHA256(KEY, "BTN1" | 0x01 | JSON).
const MAC_V1: &str = "5f8187e6a42abc11d5f8bba6e9efb98040291363c0b7f5463307b420331e6db1";

/// Raw DEFLATE (RFC 1951, zlib level 6) of JSON, made by Python's zlib.
const DEFLATED: &str = concat!(
    "8d52db6e83300cfd173f330968e904bf5255280d06a2419ce6d275aafaef735260ddcbb43c104e62fb9ce3f80e720ace",
    "a385068ca50e32e82dcd8c3475f8563036c28fd0141938bcf09ed775551487f29d570667eabea0b943a706749ed3aabe",
    "949ca4b414560baf4843b32f33b02862a4b70133b804b2615e91c53e38eca0e9c5e4184f28ae4a0f1b1e2c05e3a039de",
    "418b1999e413cfcce1bcf011919e94463e404392a5b2ac59dcda1f843736d9bd303844dd8e3475d1f771b3fa7e5a8ab6",
    "33d315559e6720e4c7ef90c729baf3a8bd8bc65771f7248ab72b5a975cef3220ab06a5d766962cd106bdda36ec3bf2eb",
    "304d2b5a4533b1e436308ed2633db7887f3c586370067532f4c297bff031533c7a664453644c6ae9ffe267d2ca938db6",
    "1879352305ff57f2c85afd19856f97e0d4c17cabd4f642c6cd489f8ebb60d36c3cc3a2a758c16d9d8ead4a3f3b383def",
    "92d7e5aea9b7dba62838f94a71109669f249297f8a72b7af0efcfc72a4d7ec635de7fcb465959f1ebcbe01",
);

/// HMAC-SHA256(KEY, "BTN1" | 0x02 | DEFLATED).
const MAC_V2: &str = "3f46ca2f1e100681cbb4e6a22fde255125d7941ae2f677c95ec714d499aba811";

fn datagram(version: u8, mac: &str, body: &[u8]) -> Vec<u8> {
    [&b"BTN1"[..], &[version], &hex::decode(mac).unwrap(), body].concat()
}

/// HMAC-SHA256(KEY, "baton key id v1")[..4]: the key id of KEY in version 3.
const KEY_ID: &str = "d7c2722f";

/// HMAC-SHA256(KEY, "BTN1" | 0x03 | KEY_ID | 0x00 | JSON).
const MAC_V3: &str = "2851798938925a46f29d13970abd96cfbc3e38b88f60bb1a6cb69656c02e19b1";

const OTHER: &[u8] = b"the next cluster key of a rotation, 32+ bytes";

#[test]
fn constants() {
    assert_eq!(MAGIC, b"BTN1");
    assert_eq!((VERSION, VERSION_DEFLATE, VERSION_KEYED), (1, 2, 3));
    assert_eq!((HEADER_LEN, HEADER_LEN_KEYED), (37, 42));
    assert_eq!(hex::encode(key().key_id()), KEY_ID);
}

/// Version 3 (a key rotation is configured): the key id and flags before the MAC.
#[test]
fn version_3_encodes_to_these_bytes_and_decodes_from_them() {
    let ring = KeyRing::new(key(), vec![ClusterKey::from_bytes(OTHER).unwrap()]);
    let expected = [
        &b"BTN1\x03"[..],
        &hex::decode(KEY_ID).unwrap(),
        &[0],
        &hex::decode(MAC_V3).unwrap(),
        JSON.as_bytes(),
    ]
    .concat();
    let sent = wire::encode_with(&ring, &envelope(), Compression::Never).unwrap();
    assert_eq!(hex::encode(&sent), hex::encode(&expected));
    // Read by a node holding only that key, or a ring with it in any place.
    let got: Envelope<Timed<PeerMessage>> = wire::decode(&key(), &expected).unwrap();
    assert_eq!(got, envelope());
    let other_first = KeyRing::new(ClusterKey::from_bytes(OTHER).unwrap(), vec![key()]);
    let got: Envelope<Timed<PeerMessage>> = wire::decode(&other_first, &expected).unwrap();
    assert_eq!(got, envelope());
    // A node without the key: unknown key id, before any MAC or JSON work.
    let e = wire::decode::<Timed<PeerMessage>>(&ClusterKey::from_bytes(OTHER).unwrap(), &expected)
        .unwrap_err();
    assert_eq!(e.code(), "unknown-key", "{e}");
    assert!(e.to_string().contains(KEY_ID), "{e}");
    // A changed byte anywhere: the id names a key we hold, the MAC fails.
    for i in [9, 10, 42, expected.len() - 1] {
        let mut bad = expected.clone();
        bad[i] ^= 0x01;
        let e = wire::decode::<Timed<PeerMessage>>(&key(), &bad).unwrap_err();
        assert_eq!(e.code(), "bad-mac", "byte {i}");
    }
    // Compressed: flag bit 0, a body that inflates to the JSON.
    let z = wire::encode_with(&ring, &envelope(), Compression::Always).unwrap();
    assert_eq!(&z[..9], &expected[..9]);
    assert_eq!(z[9], 1);
    let got: Envelope<Timed<PeerMessage>> = wire::decode(&key(), &z).unwrap();
    assert_eq!(got, envelope());
    // Unknown flags are refused even with a good MAC.
    let body = JSON.as_bytes();
    let id = hex::decode(KEY_ID).unwrap();
    let mac = key().mac(&[b"BTN1", &[3], &id, &[2], body]);
    let odd = [&b"BTN1\x03"[..], &id, &[2], &mac, body].concat();
    let e = wire::decode::<Timed<PeerMessage>>(&key(), &odd).unwrap_err();
    assert_eq!(e.code(), "malformed", "{e}");
    // Too short for the keyed header.
    let e = wire::decode::<Timed<PeerMessage>>(&key(), &expected[..40]).unwrap_err();
    assert_eq!(e.code(), "too-short", "{e}");
}

/// During a rotation a ring accepts version 1 and 2 datagrams MAC'd with any of its keys;
/// a single key accepts only its own.
#[test]
fn a_ring_accepts_legacy_datagrams_of_each_of_its_keys() {
    let other = ClusterKey::from_bytes(OTHER).unwrap();
    let from_other = wire::encode_with(&other, &envelope(), Compression::Never).unwrap();
    assert_eq!(from_other[4], 1);
    let ring = KeyRing::new(key(), vec![other.clone()]);
    let got: Envelope<Timed<PeerMessage>> = wire::decode(&ring, &from_other).unwrap();
    assert_eq!(got, envelope());
    let e = wire::decode::<Timed<PeerMessage>>(&key(), &from_other).unwrap_err();
    assert_eq!(e, WireError::BadMac);
    // Without accepted keys a ring sends the legacy versions (old agents hear it).
    let single = KeyRing::new(key(), vec![]);
    assert_eq!(
        wire::encode_with(&single, &envelope(), Compression::Never).unwrap(),
        datagram(1, MAC_V1, JSON.as_bytes())
    );
}

#[test]
fn version_1_encodes_to_these_bytes_and_decodes_from_them() {
    let expected = datagram(1, MAC_V1, JSON.as_bytes());
    let sent = wire::encode_with(&key(), &envelope(), Compression::Never).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&sent[HEADER_LEN..]),
        JSON,
        "the JSON body changed"
    );
    assert_eq!(hex::encode(&sent), hex::encode(&expected));
    let got: Envelope<Timed<PeerMessage>> = wire::decode(&key(), &expected).unwrap();
    assert_eq!(got, envelope());
    // Auto sends a 771-byte body (at most COMPRESS_ABOVE, 1,200 bytes) uncompressed.
    let auto = wire::encode(&key(), &envelope()).unwrap();
    assert_eq!(auto, expected);
}

#[test]
fn version_2_decodes_from_these_bytes_and_encodes_to_an_equivalent_datagram() {
    let z = hex::decode(DEFLATED).unwrap();
    let expected = datagram(2, MAC_V2, &z);
    // Another DEFLATE implementation's output is read as the same envelope.
    let got: Envelope<Timed<PeerMessage>> = wire::decode(&key(), &expected).unwrap();
    assert_eq!(got, envelope());
    // Ours: the same header layout, a MAC over what is sent, a body that inflates to the
    // same JSON (the compressed bytes themselves may differ between DEFLATE encoders).
    let sent = wire::encode_with(&key(), &envelope(), Compression::Always).unwrap();
    assert_eq!(&sent[..5], b"BTN1\x02");
    let body = &sent[HEADER_LEN..];
    assert!(body.len() < JSON.len(), "{} >= {}", body.len(), JSON.len());
    assert_eq!(&sent[5..HEADER_LEN], &key().mac(&[b"BTN1", &[2], body])[..]);
    let inflated = miniz_oxide::inflate::decompress_to_vec(body).unwrap();
    assert_eq!(String::from_utf8(inflated).unwrap(), JSON);
}

#[test]
fn a_changed_byte_or_another_key_is_refused() {
    let expected = datagram(1, MAC_V1, JSON.as_bytes());
    for i in [0, 4, 5, 36, 37, expected.len() - 1] {
        let mut bad = expected.clone();
        bad[i] ^= 0x01;
        let e = wire::decode::<Timed<PeerMessage>>(&key(), &bad).unwrap_err();
        let want = match i {
            0 => "bad-magic",
            4 => "bad-version",
            _ => "bad-mac",
        };
        assert_eq!(e.code(), want, "byte {i}: {e}");
    }
    let other = ClusterKey::from_bytes(b"another cluster key, also 32 bytes long").unwrap();
    let e = wire::decode::<Timed<PeerMessage>>(&other, &expected).unwrap_err();
    assert_eq!(e, WireError::BadMac);
}

/// `[heartbeat] encrypt`: version 3 with the encrypted flag; nothing of the JSON is
/// readable; the same key decrypts it, a tampered body is refused by the MAC, a body
/// that does not decrypt (re-MAC'd by a key holder) is malformed.
#[test]
fn encrypted_heartbeats_hide_the_body_and_decrypt_with_the_key() {
    let ring = KeyRing::new(key(), vec![]).with_encryption(true);
    let sent = wire::encode_with(&ring, &envelope(), Compression::Never).unwrap();
    assert_eq!(&sent[..5], b"BTN1\x03");
    assert_eq!(hex::encode(&sent[5..9]), KEY_ID);
    assert_eq!(sent[9], 2, "encrypted, not compressed");
    // nonce + ciphertext + tag = JSON + 28 bytes.
    assert_eq!(sent.len(), HEADER_LEN_KEYED + JSON.len() + 28);
    let text = String::from_utf8_lossy(&sent);
    for word in ["prod", "node-1", "web", "online", "digest"] {
        assert!(!text.contains(word), "`{word}` readable");
    }
    // Two encodings differ (random nonce), both decrypt to the same envelope, also for a
    // node that does not encrypt itself.
    let again = wire::encode_with(&ring, &envelope(), Compression::Never).unwrap();
    assert_ne!(sent, again);
    for d in [&sent, &again] {
        let got: Envelope<Timed<PeerMessage>> = wire::decode(&key(), d).unwrap();
        assert_eq!(got, envelope());
    }
    // Compressed then encrypted.
    let z = wire::encode_with(&ring, &envelope(), Compression::Always).unwrap();
    assert_eq!(z[9], 3);
    assert!(z.len() < sent.len());
    let got: Envelope<Timed<PeerMessage>> = wire::decode(&key(), &z).unwrap();
    assert_eq!(got, envelope());
    // Another cluster's key: unknown key id.
    let other = ClusterKey::from_bytes(OTHER).unwrap();
    let e = wire::decode::<Timed<PeerMessage>>(&other, &sent).unwrap_err();
    assert_eq!(e.code(), "unknown-key");
    // A flipped ciphertext bit: the MAC refuses it before any decryption.
    let mut bad = sent.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert_eq!(
        wire::decode::<Timed<PeerMessage>>(&key(), &bad).unwrap_err(),
        WireError::BadMac
    );
    // A body that does not decrypt, with a valid MAC (only a key holder can make one).
    let body = &bad[HEADER_LEN_KEYED..];
    let mac = key().mac(&[&bad[..10], body]);
    let remac = [&bad[..10], &mac[..], body].concat();
    let e = wire::decode::<Timed<PeerMessage>>(&key(), &remac).unwrap_err();
    assert_eq!(e.code(), "malformed", "{e}");
    assert!(e.to_string().contains("does not decrypt"), "{e}");
}
