//! What heartbeat encryption costs (`bash bench/wire.sh`): encode + decode time and
//! datagram size of one heartbeat in each wire form, as ratios to the plain form
//! (version 1) measured in the same run. Not a test: it reports figures, asserts nothing.
// Tests measure the real time of real processes and sockets: they read the clock directly.
#![allow(clippy::disallowed_methods)]
// A benchmark of fixed inputs: a failed encode or decode is a bug to stop at.
#![allow(clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use baton_agent::key::{ClusterKey, KeyRing};
use baton_agent::wire::{self, Compression, Envelope, Timed};
use baton_core::engine::{GroupIntent, GroupReport, GroupState, Intents, PeerMessage};

/// A heartbeat of a 3-server cluster with `groups` groups, each with an intent.
fn message(groups: usize) -> Envelope<Timed<PeerMessage>> {
    let name = |i: usize| format!("orders-group-{i:02}");
    Envelope {
        cluster: "production-orders".into(),
        from: "node-1".into(),
        path: 0,
        seq: 1_099_511_627_777,
        body: Timed {
            body: PeerMessage {
                digest: "5f2c9a41b7e3d0c8a6f1e2d3c4b5a69788f7e6d5c4b3a2910f0e1d2c3b4a5968".into(),
                incarnation: 1_733_250_000_123_456,
                ready: true,
                quorum: true,
                refused: false,
                leaving: false,
                groups: (0..groups)
                    .map(|i| GroupReport {
                        name: name(i).into(),
                        state: if i % 3 == 0 {
                            GroupState::Online
                        } else {
                            GroupState::Offline
                        },
                        epoch: 41 + i as u64,
                        max_epoch: 41 + i as u64,
                        excluded: false,
                        seen_holder: Some(("node-1".into(), 41 + i as u64)),
                        state_ms: 86_400_000,
                        ack: Some(("node-1".into(), 41 + i as u64)),
                    })
                    .collect(),
                intents: Intents {
                    groups: (0..groups)
                        .map(|i| {
                            (
                                name(i),
                                GroupIntent {
                                    version: 7,
                                    origin: "node-2".into(),
                                    run: true,
                                    ..GroupIntent::default()
                                },
                            )
                        })
                        .collect(),
                    ..Intents::default()
                },
                hears: vec!["node-2".into(), "node-3".into()],
                heard: Some(BTreeMap::from([
                    ("node-2".into(), 1_733_250_000_222_222),
                    ("node-3".into(), 1_733_250_000_333_333),
                ])),
                heard_ago: Some(BTreeMap::from([
                    ("node-2".into(), 120),
                    ("node-3".into(), 180),
                ])),
                vote: true,
                marks: Default::default(),
            },
            rtt: None,
            gv: None,
            gvs: None,
        },
    }
}

/// (encode + decode time per heartbeat, datagram bytes).
fn measure(
    keys: &KeyRing,
    env: &Envelope<Timed<PeerMessage>>,
    compression: Compression,
    n: u32,
) -> (Duration, usize) {
    let mut len = 0;
    let t = Instant::now();
    for _ in 0..n {
        let b = wire::encode_with(keys, env, compression).expect("encode");
        len = b.len();
        let back: Envelope<Timed<PeerMessage>> = wire::decode(keys, &b).expect("decode");
        std::hint::black_box(back);
    }
    (t.elapsed() / n, len)
}

fn main() {
    let n: u32 = std::env::args()
        .skip_while(|a| a != "--iterations")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let key = ClusterKey::from_bytes(b"benchmark cluster key, at least 32 bytes").expect("key");
    let plain = KeyRing::new(key.clone(), vec![]);
    let encrypted = KeyRing::new(key, vec![]).with_encryption(true);
    println!("heartbeat encode + decode, {n} iterations each, release build");
    println!(
        "{:>6}  {:<28} {:>10} {:>7} {:>7} {:>7}",
        "groups", "form", "us/op", "ratio", "bytes", "ratio"
    );
    for groups in [1, 10, 50] {
        let env = message(groups);
        // Warm up, then the reference row is the first measured.
        measure(&plain, &env, Compression::Never, n / 10 + 1);
        let mut reference: Option<(Duration, usize)> = None;
        let rows = [
            ("v1 plain (reference)", &plain, Compression::Never),
            ("v2 compressed", &plain, Compression::Always),
            ("v3 encrypted", &encrypted, Compression::Never),
            ("v3 compressed + encrypted", &encrypted, Compression::Always),
        ];
        for (what, keys, c) in rows {
            let (t, l) = measure(keys, &env, c, n);
            let (t0, l0) = *reference.get_or_insert((t, l));
            println!(
                "{groups:>6}  {what:<28} {:>10.2} {:>7.2} {l:>7} {:>7.2}",
                t.as_secs_f64() * 1e6,
                t.as_secs_f64() / t0.as_secs_f64(),
                l as f64 / l0 as f64
            );
        }
    }
    // The receiver's parse of a heartbeat body: serde's `flatten` (the reference) and
    // the one-pass parse the agent uses (`wire::parse_timed_message`).
    println!("\nheartbeat body parse, {n} iterations each");
    println!(
        "{:>6}  {:<28} {:>10} {:>7}",
        "groups", "parse", "us/op", "ratio"
    );
    for groups in [1, 10, 50] {
        let env = message(groups);
        let text = serde_json::to_vec(&env.body).expect("encode");
        let flat = || {
            let t = Instant::now();
            for _ in 0..n {
                let m: Timed<PeerMessage> = serde_json::from_slice(&text).expect("parse");
                std::hint::black_box(m);
            }
            t.elapsed() / n
        };
        let one = || {
            let t = Instant::now();
            for _ in 0..n {
                std::hint::black_box(wire::parse_timed_message(&text).expect("parse"));
            }
            t.elapsed() / n
        };
        flat();
        let (f, o) = (flat(), one());
        for (what, t) in [("flatten (reference)", f), ("one pass", o)] {
            println!(
                "{groups:>6}  {what:<28} {:>10.2} {:>7.2}",
                t.as_secs_f64() * 1e6,
                t.as_secs_f64() / f.as_secs_f64()
            );
        }
    }
}
