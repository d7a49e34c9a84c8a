//! Heartbeat sizes on the wire (issue 9): uncompressed (version 1) against compressed
//! (version 2), for a typical message and for the worst case `config check` bounds.
//!
//! `cargo test -p baton-agent --test heartbeat_size -- --ignored --nocapture` prints the
//! table (docs/src/architecture.md, "The heartbeat packet"); the non-ignored test checks
//! that the core's worst-case bound is not below a real encoded datagram.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use baton_agent::key::ClusterKey;
use baton_agent::wire::{self, Compression, Envelope, GroupsTag, RttStamp, Timed, MAX_DATAGRAM};
use baton_core::config::{load_str, AnyKind};
use baton_core::engine::{
    FlagIntent, GroupIntent, GroupReport, GroupState, Intents, PeerMessage, TimeoutIntent,
};

fn key() -> ClusterKey {
    ClusterKey::from_bytes(b"heartbeat size test key, 32 bytes+").unwrap()
}

fn pad(s: String, len: usize) -> String {
    format!("{s:x<len$}")
}

/// A configuration text of `servers` servers and `groups` groups with names of `len`.
fn config(servers: usize, groups: usize, len: usize) -> String {
    let names: Vec<String> = (1..=servers).map(|i| pad(format!("n{i}-"), len)).collect();
    let mut t = String::from("[cluster]\nname = \"c\"\nkey_file = \"k\"\n\n");
    for (i, n) in names.iter().enumerate() {
        t.push_str(&format!(
            "[[server]]\nname = \"{n}\"\ninterconnects = [\"10.0.0.{}\"]\napi = \"10.0.0.{}:7420\"\n\n",
            i + 1,
            i + 1
        ));
    }
    let list: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    for g in 1..=groups {
        t.push_str(&format!(
            "[[group]]\nname = \"{}\"\nservers = [{}]\n\n",
            pad(format!("g{g}-"), len),
            list.join(", ")
        ));
    }
    t
}

/// A heartbeat as a busy server sends it: every group reported (a third online here, the
/// rest held elsewhere), small epochs, a few operator intents, every peer heard.
fn typical(servers: usize, groups: usize, len: usize, worst: bool) -> PeerMessage {
    let big = |n: u64| if worst { u64::MAX } else { n };
    let names: Vec<String> = (1..=servers).map(|i| pad(format!("n{i}-"), len)).collect();
    let origin = format!("{}/{:016x}", names[0], big(0x0000_0003_1234_abcd));
    let mut intents = Intents {
        suspended: FlagIntent {
            version: big(2),
            origin: origin.clone(),
            on: false,
        },
        timeout: TimeoutIntent {
            version: big(0),
            origin: if worst { origin.clone() } else { String::new() },
            heartbeat_timeout_ms: big(0),
            monitor_factor_pct: if worst { u32::MAX } else { 0 },
            duration_ms: big(0),
        },
        ..Intents::default()
    };
    if worst {
        intents.stopping = intents.suspended.clone();
    }
    let groups: Vec<GroupReport> = (1..=groups)
        .map(|g| {
            let name = pad(format!("g{g}-"), len);
            if worst || g % 10 == 0 {
                intents.groups.insert(
                    name.clone(),
                    GroupIntent {
                        version: big(4),
                        origin: origin.clone(),
                        run: true,
                        prefer: Some(names[g % servers].clone()),
                        prefer_epoch: big(7),
                        clear_exclusions: false,
                    },
                );
            }
            let holder = &names[g % servers];
            let here = g % servers == 0;
            GroupReport {
                name: name.into(),
                state: if worst {
                    GroupState::Deactivating
                } else if here {
                    GroupState::Online
                } else {
                    GroupState::Offline
                },
                epoch: big(if here { 12 } else { 0 }),
                max_epoch: big(12),
                excluded: false,
                seen_holder: Some((holder.as_str().into(), big(12))),
                state_ms: big(86_400_000 + g as u64),
                ack: worst.then(|| (holder.as_str().into(), u64::MAX)),
            }
        })
        .collect();
    PeerMessage {
        digest: format!("sha256:{}", "ab".repeat(32)),
        incarnation: big(0x0000_0003_1234_abcd),
        ready: true,
        quorum: true,
        refused: false,
        leaving: false,
        groups,
        intents,
        hears: names[1..].to_vec(),
        heard: Some(
            names[1..]
                .iter()
                .map(|n| (n.clone(), big(0x0000_0002_5555_0000)))
                .collect(),
        ),
        heard_ago: Some(names[1..].iter().map(|n| (n.clone(), big(150))).collect()),
        vote: true,
        marks: Default::default(),
    }
}

fn envelope(servers: usize, len: usize, msg: &PeerMessage) -> Envelope<Timed<&PeerMessage>> {
    let names: Vec<String> = (1..=servers).map(|i| pad(format!("n{i}-"), len)).collect();
    Envelope {
        cluster: "c".into(),
        from: names[0].clone(),
        path: 0,
        seq: 1_764_000_000_000_000,
        body: Timed {
            body: msg,
            rtt: Some(RttStamp {
                t: 86_400_000_000,
                echo: names[1..]
                    .iter()
                    .map(|n| (n.clone(), (86_399_000_000, 150_000)))
                    .collect::<BTreeMap<_, _>>(),
            }),
            gv: Some(GroupsTag {
                v: 86_400,
                at: 86_400_000,
                brief: false,
            }),
            gvs: Some(
                names[1..]
                    .iter()
                    .map(|n| (n.clone(), (u64::MAX / 3, 86_400)))
                    .collect(),
            ),
        },
    }
}

fn sizes(servers: usize, groups: usize, len: usize, worst: bool) -> (usize, usize) {
    let k = key();
    let msg = typical(servers, groups, len, worst);
    let env = envelope(servers, len, &msg);
    let json = serde_json::to_vec(&env).unwrap().len() + wire::HEADER_LEN;
    let z = match wire::encode_with(&k, &env, Compression::Always) {
        Ok(b) => {
            let d: Envelope<Timed<PeerMessage>> = wire::decode(&k, &b).unwrap();
            assert_eq!(d.body.body, msg);
            b.len()
        }
        Err(_) => usize::MAX,
    };
    (json, z)
}

#[test]
#[ignore = "prints the table of heartbeat sizes; run with --ignored --nocapture"]
fn heartbeat_sizes() {
    println!("| servers | groups | name length | message | JSON (v1) bytes | compressed (v2) bytes | ratio |");
    println!("|---|---|---|---|---|---|---|");
    for (servers, groups, len) in [(3, 5, 8), (3, 50, 20), (7, 200, 63)] {
        for worst in [false, true] {
            let (json, z) = sizes(servers, groups, len, worst);
            let (zs, ratio) = if z == usize::MAX {
                (
                    "not sent (refused by `config check`)".to_string(),
                    "–".to_string(),
                )
            } else {
                (
                    z.to_string(),
                    format!("{:.1} %", z as f64 * 100.0 / json as f64),
                )
            };
            println!(
                "| {servers} | {groups} | {len} | {} | {json} | {zs} | {ratio} |",
                if worst { "worst case" } else { "typical" },
            );
        }
    }
}

/// The core's worst-case bound (what `config check` applies) is not below the size of a
/// real datagram of the worst-case message, encoded uncompressed.
#[test]
fn worst_case_bound_covers_a_real_datagram() {
    for (servers, groups, len) in [(3, 5, 8), (3, 50, 20), (7, 60, 63), (5, 100, 12)] {
        let loaded = load_str("t.toml", &config(servers, groups, len), &AnyKind).unwrap();
        let cfg = loaded.config;
        let bound = baton_core::heartbeat::worst_case_datagram_len(&cfg);
        assert!(bound <= MAX_DATAGRAM);
        let msg = baton_core::heartbeat::worst_case_message(&cfg);
        let longest = cfg
            .servers
            .iter()
            .map(|s| s.name.clone())
            .max_by_key(String::len)
            .unwrap();
        let env = Envelope {
            cluster: cfg.cluster_name.clone(),
            from: longest,
            path: u8::MAX,
            seq: u64::MAX,
            body: Timed {
                body: &msg,
                rtt: Some(RttStamp {
                    t: u64::MAX,
                    echo: cfg
                        .servers
                        .iter()
                        .map(|s| (s.name.clone(), (u64::MAX, u64::MAX)))
                        .collect(),
                }),
                gv: Some(GroupsTag {
                    v: u64::MAX,
                    at: u64::MAX,
                    brief: false,
                }),
                gvs: Some(
                    cfg.servers
                        .iter()
                        .map(|s| (s.name.clone(), (u64::MAX, u64::MAX)))
                        .collect(),
                ),
            },
        };
        let plain = wire::encode_with(&key(), &env, Compression::Never).unwrap();
        assert!(
            plain.len() <= bound,
            "{servers}/{groups}/{len}: {} > {bound}",
            plain.len()
        );
        assert!(
            bound - plain.len() < 16,
            "bound far from the real size: {} vs {bound}",
            plain.len()
        );
        // And it is sendable as is (Auto compresses it, well under the limit).
        let auto = wire::encode(&key(), &env).unwrap();
        assert!(auto.len() < plain.len());
    }
}
