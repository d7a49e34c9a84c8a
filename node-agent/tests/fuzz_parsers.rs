//! Property tests of the agent's parsers that take outside input: the API's command,
//! group-operation and alerts-query parsing, the witness's vote handler (its real Router,
//! served in-process on loopback) and the state files. Arbitrary input never panics, and is either accepted
//! as something well-formed or refused with a 4xx and a stable code.
//!
//! Each property runs a modest number of cases; for a longer run set PROPTEST_CASES:
//! `PROPTEST_CASES=100000 cargo test -p baton-agent --test fuzz_parsers --release`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::Query;
use axum::http::{StatusCode, Uri};
use baton_agent::api::{parse_alerts_query, parse_command, parse_group_op, AlertsRead};
use baton_agent::key::ClusterKey;
use baton_agent::state::StateDir;
use baton_agent::witness::{
    router, WireError, WireReply, WireVote, WitnessKey, WitnessKeys, SIGNATURE_HEADER,
};
use baton_core::engine::Command;
use proptest::prelude::*;
use serde_json::Value;

fn config(cases: u32) -> ProptestConfig {
    // PROPTEST_CASES, when set, wins over the default of each test.
    match std::env::var("PROPTEST_CASES") {
        Ok(_) => ProptestConfig::default(),
        Err(_) => ProptestConfig::with_cases(cases),
    }
}

// ---------------------------------------------------------------- generators

/// Keys that the parsers know, and others.
fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "command",
            "group",
            "on",
            "to",
            "monitor",
            "heartbeat_timeout_ms",
            "monitor_factor_pct",
            "duration_ms",
            "cluster",
            "server",
            "partition",
            "lease_ms",
            "epochs",
            "nonce",
            "session",
            "seq",
        ])
        .prop_map(str::to_string),
        "[a-z_]{0,8}",
        ".{0,6}",
    ]
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop::sample::select(vec![0u64, 1, 300, 60_000, u32::MAX as u64, u64::MAX])
            .prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        prop::sample::select(vec![
            "group-start",
            "group-stop",
            "group-move",
            "cluster-suspend",
            "cluster-resume",
            "cluster-stop",
            "monitor-suspend",
            "monitor-resume",
            "timeout-set",
            "timeout-clear",
            "shutdown",
            "orders",
            "a",
            "b",
            "00112233445566778899aabbccddeeff",
        ])
        .prop_map(Value::from),
        ".{0,16}".prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(json_key(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Bytes: random, JSON text, JSON text cut short or with a byte flipped.
fn body_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        (json_value(), any::<prop::sample::Index>()).prop_map(|(v, i)| {
            let b = serde_json::to_vec(&v).unwrap();
            let cut = i.index(b.len() + 1);
            b[..cut].to_vec()
        }),
        (json_value(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(v, i, x)| {
            let mut b = serde_json::to_vec(&v).unwrap();
            if !b.is_empty() {
                let at = i.index(b.len());
                b[at] ^= x;
            }
            b
        }),
    ]
}

fn assert_refusal(status: StatusCode, code: &str, allowed: &[&str]) {
    assert!(status.is_client_error(), "status {status}");
    assert!(allowed.contains(&code), "code {code}");
}

// ---------------------------------------------------------------- API

proptest! {
    #![proptest_config(config(2000))]

    /// `POST /v1/commands`: a command that survives a round trip, or 400 bad-request;
    /// never `shutdown`.
    #[test]
    fn api_command_bodies(body in body_bytes()) {
        match parse_command(&body) {
            Ok(cmd) => {
                prop_assert_ne!(&cmd, &Command::Shutdown);
                let again = serde_json::to_vec(&cmd).unwrap();
                prop_assert_eq!(parse_command(&again).unwrap(), cmd);
            }
            Err(r) => {
                assert_refusal(r.status, r.code, &["bad-request"]);
                prop_assert!(!r.message.is_empty());
            }
        }
    }

    /// `POST /v1/groups/{group}/{op}`: a command for that group, or a 4xx with a code.
    #[test]
    fn api_group_op_bodies(
        group in ".{0,12}",
        op in prop_oneof![
            prop::sample::select(vec!["start", "stop", "move"]).prop_map(str::to_string),
            ".{0,8}",
        ],
        body in prop_oneof![Just(Vec::new()), body_bytes()],
    ) {
        match parse_group_op(group.clone(), &op, &body) {
            Ok(Command::GroupStart { group: g, .. })
            | Ok(Command::GroupStop { group: g })
            | Ok(Command::GroupMove { group: g, .. }) => prop_assert_eq!(g, group),
            Ok(other) => prop_assert!(false, "unexpected command {:?}", other),
            Err(r) => assert_refusal(r.status, r.code, &["bad-request", "not-found"]),
        }
    }

    /// `GET /v1/alerts?...`: bounded reads, or 400 bad-request.
    #[test]
    fn api_alerts_queries(
        q in prop_oneof![
            ".{0,40}",
            (
                prop::sample::select(vec!["after", "limit", "tail", "x"]),
                prop_oneof![
                    any::<u64>().prop_map(|n| n.to_string()),
                    any::<i64>().prop_map(|n| n.to_string()),
                    "[0-9]{18,30}",
                    ".{0,6}",
                ],
                prop::sample::select(vec!["after", "limit", "tail"]),
                any::<u64>(),
            )
                .prop_map(|(k1, v1, k2, v2)| format!("{k1}={v1}&{k2}={v2}")),
        ]
    ) {
        let Ok(uri) = Uri::try_from(format!("/v1/alerts?{q}")) else {
            return Ok(());
        };
        match parse_alerts_query(Query::try_from_uri(&uri)) {
            Ok(AlertsRead::Tail(n)) => prop_assert!((1..=10_000).contains(&n)),
            Ok(AlertsRead::Since { limit, .. }) => prop_assert!((1..=10_000).contains(&limit)),
            Err(r) => assert_refusal(r.status, r.code, &["bad-request"]),
        }
    }
}

// ---------------------------------------------------------------- witness

const KEY: &str = "6b1f0c5e2d9a4f7b8c3e1d0a9f8e7d6c5b4a39281706f5e4d3c2b1a098f7e6d5";

fn witness_key() -> WitnessKey {
    WitnessKey::for_cluster(&ClusterKey::from_bytes(KEY.as_bytes()).unwrap(), "orders")
}

fn witness_router() -> axum::Router {
    router(
        WitnessKeys::derived("orders", &["a", "b", "c"], witness_key()),
        Duration::ZERO,
    )
}

/// The witness's Router served on loopback by a runtime of its own (shared by the
/// cases: its replay table and grants carry over, which the properties allow).
struct Served {
    rt: tokio::runtime::Runtime,
    url: String,
    client: reqwest::Client,
}

fn served() -> &'static Served {
    static S: OnceLock<Served> = OnceLock::new();
    S.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let l = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}/v1/vote", l.local_addr().unwrap());
        rt.spawn(async move {
            let app = witness_router().into_make_service_with_connect_info::<SocketAddr>();
            axum::serve(l, app).await
        });
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        Served { rt, url, client }
    })
}

/// POST `body` with `headers` to the witness; (status, body), or None when the client
/// cannot send such headers.
fn call(body: Vec<u8>, headers: &[(String, String)]) -> Option<(StatusCode, Vec<u8>)> {
    let s = served();
    let mut b = s.client.post(&s.url).body(body);
    for (k, v) in headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let req = b.build().ok()?;
    s.rt.block_on(async {
        let resp = s.client.execute(req).await.unwrap();
        let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
        Some((status, resp.bytes().await.unwrap().to_vec()))
    })
}

/// A refusal from the witness: 4xx and a `{"error": {"code"}}` body.
fn witness_refusal(status: StatusCode, body: &[u8]) -> String {
    assert!(
        status.is_client_error(),
        "status {status}: {}",
        String::from_utf8_lossy(body)
    );
    let e: WireError = serde_json::from_slice(body).expect("an error body");
    assert!(!e.error.code.is_empty());
    e.error.code
}

/// Vote bodies that are JSON objects close to a real request.
fn vote_like() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec!["orders", "billing", ""]),
        prop::sample::select(vec!["a", "b", "ghost", ""]),
        prop::collection::vec(
            prop::sample::select(vec!["a", "b", "c", "ghost", "a"]),
            0..5,
        ),
        prop::sample::select(vec![0u64, 99, 100, 300, 60_000, 60_001, u64::MAX]),
        prop::collection::btree_map("[a-z]{1,3}", any::<u64>(), 0..4),
        prop::sample::select(vec![
            "00112233445566778899aabbccddeeff",
            "short",
            "zzzzzzzzzzzzzzzzzzzz",
        ]),
        any::<u64>(),
        prop::collection::btree_map(json_key(), json_value(), 0..3),
    )
        .prop_map(
            |(cluster, server, partition, lease_ms, epochs, nonce, seq, extra)| {
                let mut v = serde_json::json!({
                    "cluster": cluster, "server": server, "partition": partition,
                    "lease_ms": lease_ms, "epochs": epochs, "nonce": nonce,
                    "session": "feedfacefeedface", "seq": seq,
                });
                for (k, x) in extra {
                    v[k] = x;
                }
                v
            },
        )
}

proptest! {
    #![proptest_config(config(512))]

    /// Arbitrary bodies and headers (and a signature or not) are refused with a code,
    /// never a 5xx, never a panic.
    #[test]
    fn witness_refuses_unsigned_garbage(
        body in prop_oneof![body_bytes(), vote_like().prop_map(|v| serde_json::to_vec(&v).unwrap())],
        headers in prop::collection::vec(
            (
                prop_oneof![
                    Just(SIGNATURE_HEADER.to_string()),
                    Just("x-forwarded-for".to_string()),
                    Just("content-type".to_string()),
                    "[a-z-]{1,12}",
                ],
                "[ -~]{0,80}",
            ),
            0..4,
        ),
    ) {
        let Some((status, out)) = call(body, &headers) else { return Ok(()) };
        // No header carries the right signature (a random string cannot match).
        let code = witness_refusal(status, &out);
        prop_assert!(
            ["bad-signature", "unknown-cluster", "too-large"].contains(&code.as_str()),
            "code {}", code
        );
    }

    /// Correctly signed bodies: a signed grant/deny reply for a valid request of a
    /// known server, else a 4xx with a code (a valid signature on garbage is refused).
    #[test]
    fn witness_signed_garbage_is_refused_with_a_code(
        value in prop_oneof![json_value(), vote_like()],
    ) {
        let body = serde_json::to_vec(&value).unwrap();
        let sig = witness_key().sign(&body);
        let (status, out) = call(body.clone(), &[(SIGNATURE_HEADER.to_string(), sig)]).unwrap();
        if status == StatusCode::OK {
            let v: WireVote = serde_json::from_slice(&body).expect("only a vote is granted");
            prop_assert_eq!(&v.cluster, "orders");
            prop_assert!(["a", "b", "c"].contains(&v.server.as_str()));
            prop_assert!(v.partition.iter().all(|p| ["a", "b", "c"].contains(&p.as_str())));
            let r: WireReply = serde_json::from_slice(&out).unwrap();
            prop_assert_eq!(r.nonce, v.nonce);
        } else {
            let code = witness_refusal(status, &out);
            prop_assert!(
                ["bad-request", "bad-signature", "unknown-cluster", "unknown-server", "replayed"]
                    .contains(&code.as_str()),
                "code {}", code
            );
        }
    }
}

#[test]
fn witness_refuses_oversized_bodies_with_a_code() {
    for size in [16 * 1024 + 1, 20 * 1024] {
        let body = vec![b'{'; size];
        let sig = witness_key().sign(&body);
        let (status, out) = call(body, &[(SIGNATURE_HEADER.to_string(), sig)]).unwrap();
        assert_eq!(witness_refusal(status, &out), "too-large");
    }
}

// ---------------------------------------------------------------- state files

fn corrupt_or_ok<T: std::fmt::Debug>(r: Result<T, baton_agent::state::StateError>) {
    if let Err(e) = r {
        assert_eq!(e.code(), "state-corrupt", "{e}");
        assert!(e.to_string().contains("corrupt"), "{e}");
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// Arbitrary contents of every state file: a value or `state-corrupt`, no panic.
    #[test]
    fn state_files_with_arbitrary_contents(body in body_bytes()) {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::open(dir.path()).unwrap();
        for name in ["epochs.json", "ownership.json", "meta.json"] {
            std::fs::write(dir.path().join(name), &body).unwrap();
        }
        corrupt_or_ok(sd.load_epochs());
        corrupt_or_ok(sd.load_ownership());
        corrupt_or_ok(sd.load_meta());
    }

    /// A stored epoch record cut short (a torn write) reads back whole or is refused:
    /// never as a lower epoch or a missing group. (A changed digit is not detected: the
    /// files carry no checksum.)
    #[test]
    fn a_torn_epoch_file_never_lowers_an_epoch(
        epochs in prop::collection::btree_map("[a-z]{1,6}", any::<u64>(), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::open(dir.path()).unwrap();
        sd.store_epochs(&epochs).unwrap();
        let path = dir.path().join("epochs.json");
        let mut raw = std::fs::read(&path).unwrap();
        raw.truncate(cut.index(raw.len() + 1));
        std::fs::write(&path, &raw).unwrap();
        match sd.load_epochs() {
            Ok(got) => prop_assert_eq!(got, epochs),
            Err(e) => prop_assert_eq!(e.code(), "state-corrupt"),
        }
    }

    /// The same group twice in the epoch file (the last one lower) is refused, not read
    /// as the lower epoch.
    #[test]
    fn a_repeated_group_in_the_epoch_file_is_refused(
        group in "[a-z]{1,6}",
        hi in 1u64..,
        lo_frac in 0.0f64..1.0,
        other in prop::collection::btree_map("[A-Z]{1,3}", any::<u64>(), 0..3),
    ) {
        let lo = ((hi as f64) * lo_frac) as u64;
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::open(dir.path()).unwrap();
        let mut text = format!("{{\"{group}\": {hi}");
        for (g, e) in &other {
            text.push_str(&format!(", \"{g}\": {e}"));
        }
        text.push_str(&format!(", \"{group}\": {lo}}}\n"));
        std::fs::write(dir.path().join("epochs.json"), text).unwrap();
        let e = sd.load_epochs().unwrap_err();
        prop_assert_eq!(e.code(), "state-corrupt");
        prop_assert!(e.to_string().contains("duplicate"), "{}", e);
        // The same for a group held in the ownership record.
        let own = format!(
            "{{\"groups\": {{\"{group}\": {{\"epoch\": {hi}, \"since_unix_ms\": 1, \"state\": \"active\"}}, \"{group}\": {{\"epoch\": {lo}, \"since_unix_ms\": 1, \"state\": \"active\"}}}}}}"
        );
        std::fs::write(dir.path().join("ownership.json"), own).unwrap();
        prop_assert_eq!(sd.load_ownership().unwrap_err().code(), "state-corrupt");
    }
}

#[test]
fn state_values_at_the_bounds_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let sd = StateDir::open(dir.path()).unwrap();
    let epochs = BTreeMap::from([("g".to_string(), u64::MAX), ("h".to_string(), 0)]);
    sd.store_epochs(&epochs).unwrap();
    assert_eq!(sd.load_epochs().unwrap(), epochs);
    // One more than u64::MAX, negative, fractional, exponent: refused.
    for text in [
        "{\"g\": 18446744073709551616}",
        "{\"g\": -1}",
        "{\"g\": 1.5}",
        "{\"g\": 1e3}",
        "{\"g\": null}",
        "[]",
        "",
    ] {
        std::fs::write(dir.path().join("epochs.json"), text).unwrap();
        assert_eq!(
            sd.load_epochs().unwrap_err().code(),
            "state-corrupt",
            "{text}"
        );
    }
}
