//! The real `baton witness` process over HTTP, driven by the real client
//! (`HttpWitness`): grant, renew, deny, expiry, restart quiet period, forged, replayed,
//! garbage and oversized requests, wrong cluster key; and forged, replayed, garbage and
//! hanging witnesses on the client side.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Tests measure the real time of real processes and sockets: they read the clock directly.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use baton_agent::key::ClusterKey;
use baton_agent::witness::{HttpWitness, WireReply, WireVote, WitnessKey, SIGNATURE_HEADER};
use baton_providers::witness::{hold_for, VoteRequest, WitnessClient, WitnessError};
use common::{key, key_file, vote_request, WitnessProc};

const KEY_A: &str = common::KEY;
const KEY_B: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// The holder renews every 100 ms (plus two round trips): a 2 s lease keeps its grant
/// through a scheduling stall of well over a second on a loaded two-core machine, where
/// a 300 ms lease was lost by one slow renewal.
const LEASE: Duration = Duration::from_secs(2);
const DEADLINE: Duration = Duration::from_secs(2);

/// The witness of these tests: one or more key files, a listen address, a quiet period.
impl WitnessProc {
    fn start(key_file: &Path, listen: &str, quiet: &str) -> WitnessProc {
        WitnessProc::start_keys(&[key_file], listen, quiet)
    }

    fn start_keys(key_files: &[&Path], listen: &str, quiet: &str) -> WitnessProc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_baton"));
        cmd.args(["witness", "--listen", listen, "--startup-quiet", quiet]);
        for k in key_files {
            cmd.arg("--key-file").arg(k);
        }
        WitnessProc::spawn(cmd)
    }
}

/// The vote of `server` in cluster `orders` (group epoch 3).
fn req(server: &str, partition: &[&str]) -> VoteRequest {
    vote_request("orders", server, partition, LEASE, 3)
}

/// Vote until granted (the quiet period), or panic after `limit`.
async fn until_granted(w: &HttpWitness, r: &VoteRequest, limit: Duration) {
    let start = Instant::now();
    loop {
        let rep = w.vote(r, DEADLINE).await.unwrap();
        if rep.granted {
            return;
        }
        assert!(start.elapsed() < limit, "never granted: {rep:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn grant_renew_deny_expire_and_move() {
    let dir = tempfile::tempdir().unwrap();
    let kf = key_file(dir.path(), "cluster.key", KEY_A);
    let w = WitnessProc::start(&kf, "127.0.0.1:0", "500ms");
    let a = HttpWitness::new(&w.url(), &key(KEY_A)).unwrap();
    let b = HttpWitness::new(&w.url(), &key(KEY_A)).unwrap();

    // Quiet period right after start: denied, and it says why.
    let r = a.vote(&req("a", &["a"]), DEADLINE).await.unwrap();
    assert!(!r.granted, "{r:?}");
    assert!(r.detail.contains("started recently"), "{}", r.detail);
    until_granted(&a, &req("a", &["a"]), Duration::from_secs(5)).await;

    // Renew while B is denied and told who holds the vote.
    let mut last_a = Instant::now();
    for _ in 0..8 {
        last_a = Instant::now();
        let r = a.vote(&req("a", &["a"]), DEADLINE).await.unwrap();
        assert!(r.granted && r.holder == vec!["a"], "{r:?}");
        let r = b.vote(&req("b", &["b"]), DEADLINE).await.unwrap();
        assert!(!r.granted, "{r:?}");
        assert_eq!(r.holder, vec!["a"]);
        assert!(r.detail.contains("held by"), "{}", r.detail);
        // The witness merged both servers' epochs.
        assert_eq!(r.epochs.get("g-a"), Some(&3));
        assert_eq!(r.epochs.get("g-b"), Some(&3));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A stops: B gets the vote after A's grant expired, never before.
    loop {
        let r = b.vote(&req("b", &["b"]), DEADLINE).await.unwrap();
        if r.granted {
            assert_eq!(r.holder, vec!["b"]);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        last_a.elapsed() >= hold_for(LEASE),
        "B was granted {} ms after A's last renewal was sent",
        last_a.elapsed().as_millis()
    );
    assert!(!a.vote(&req("a", &["a"]), DEADLINE).await.unwrap().granted);

    // Heal and split again: {a, b} held by both; B asks for {b}: renewed within
    // {a, b} and pending; A is denied; once A's grant lapsed the vote moves to {b}.
    until_granted(&b, &req("b", &["a", "b"]), Duration::from_secs(1)).await;
    assert!(
        a.vote(&req("a", &["a", "b"]), DEADLINE)
            .await
            .unwrap()
            .granted
    );
    let r = b.vote(&req("b", &["b"]), DEADLINE).await.unwrap();
    assert!(r.granted && r.holder == vec!["a", "b"], "{r:?}");
    assert!(!a.vote(&req("a", &["a"]), DEADLINE).await.unwrap().granted);
    let start = Instant::now();
    loop {
        let r = b.vote(&req("b", &["b"]), DEADLINE).await.unwrap();
        assert!(r.granted, "{r:?}");
        if r.holder == vec!["b"] {
            break;
        }
        assert!(
            start.elapsed() < hold_for(LEASE) + Duration::from_secs(3),
            "{r:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(w.log_contains("vote granted to a new partition"));
}

#[tokio::test]
async fn a_restarted_witness_is_quiet_first() {
    let dir = tempfile::tempdir().unwrap();
    let kf = key_file(dir.path(), "cluster.key", KEY_A);
    let w = WitnessProc::start(&kf, "127.0.0.1:0", "200ms");
    let addr = w.addr;
    let a = HttpWitness::new(&w.url(), &key(KEY_A)).unwrap();
    let b = HttpWitness::new(&w.url(), &key(KEY_A)).unwrap();
    until_granted(&a, &req("a", &["a"]), Duration::from_secs(5)).await;
    drop(w); // SIGKILL: the grant to A is forgotten
    let w = WitnessProc::start(&kf, &addr.to_string(), "1500ms");
    // B would win an empty witness, but the restarted one grants nothing yet.
    let r = b.vote(&req("b", &["b"]), DEADLINE).await.unwrap();
    assert!(!r.granted, "{r:?}");
    assert!(r.detail.contains("started recently"), "{}", r.detail);
    assert!(r.holder.is_empty(), "{r:?}");
    // The old client session is still accepted by the new process (no replay state).
    until_granted(&b, &req("b", &["b"]), Duration::from_secs(5)).await;
    assert!(!a.vote(&req("a", &["a"]), DEADLINE).await.unwrap().granted);
    drop(w);
}

/// The witness with a state file: the epochs it acknowledged are there after a restart
/// (SIGKILL), while the grant is not (quiet period first).
#[tokio::test]
async fn a_restarted_witness_keeps_the_epochs_of_its_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let kf = key_file(dir.path(), "cluster.key", KEY_A);
    let state = dir.path().join("state.json");
    let start = |listen: &str, quiet: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_baton"));
        cmd.args(["witness", "--listen", listen, "--startup-quiet", quiet])
            .arg("--key-file")
            .arg(&kf)
            .arg("--state-file")
            .arg(&state);
        WitnessProc::spawn(cmd)
    };
    let w = start("127.0.0.1:0", "200ms");
    let addr = w.addr;
    let a = HttpWitness::new(&w.url(), &key(KEY_A)).unwrap();
    // A claims epoch 7 of its group; the reply acknowledges it.
    let claim = vote_request("orders", "a", &["a"], LEASE, 7);
    until_granted(&a, &claim, Duration::from_secs(5)).await;
    let r = a.vote(&claim, DEADLINE).await.unwrap();
    assert_eq!(r.epochs.get("g-a"), Some(&7), "{r:?}");
    // On disk before the reply: the file holds it.
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(doc["clusters"]["orders"]["epochs"]["g-a"], 7, "{doc}");
    drop(w); // SIGKILL
    let w = start(&addr.to_string(), "1500ms");
    // B, which never heard of epoch 7, asks: even the quiet period's denial carries it.
    let b = HttpWitness::new(&w.url(), &key(KEY_A)).unwrap();
    let mut ask = vote_request("orders", "b", &["b"], LEASE, 1);
    ask.epochs.insert("g-a".into(), 0);
    let r = b.vote(&ask, DEADLINE).await.unwrap();
    assert!(!r.granted, "{r:?}");
    assert_eq!(r.epochs.get("g-a"), Some(&7), "{r:?}");
    assert!(w
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("epochs kept in the state file")));
    drop(w);
}

/// A state file that is not one stops the witness with exit status 3, naming the file,
/// and leaves the file as it was; one in a directory it cannot write stops it too.
#[test]
fn a_bad_state_file_stops_the_witness() {
    let dir = tempfile::tempdir().unwrap();
    let kf = key_file(dir.path(), "cluster.key", KEY_A);
    let state = dir.path().join("state.json");
    std::fs::write(
        &state,
        "{\"version\": 1, \"clusters\": {\"orders\": {\"epochs\": {\"g\": \"x\"}}}}",
    )
    .unwrap();
    let run = |path: &Path| {
        Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(["witness", "--listen", "127.0.0.1:0"])
            .arg("--key-file")
            .arg(&kf)
            .arg("--state-file")
            .arg(path)
            .output()
            .unwrap()
    };
    let out = run(&state);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!("witness state file {}", state.display()))
            && err.contains("not a witness state file"),
        "{err}"
    );
    assert!(std::fs::read_to_string(&state).unwrap().contains("\"x\""));
    let out = run(&dir.path().join("missing-dir").join("state.json"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("cannot write it"), "{err}");
}

fn wire(server: &str, seq: u64) -> WireVote {
    WireVote {
        cluster: "orders".into(),
        server: server.into(),
        partition: vec![server.into()],
        lease_ms: 300,
        epochs: BTreeMap::new(),
        nonce: "00112233445566778899aabbccddeeff".into(),
        session: "feedfacefeedface".into(),
        seq,
    }
}

async fn post(url: &str, body: Vec<u8>, sig: Option<String>) -> (u16, serde_json::Value) {
    let mut r = reqwest::Client::new()
        .post(format!("{url}/v1/vote"))
        .body(body);
    if let Some(s) = sig {
        r = r.header(SIGNATURE_HEADER, s);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let v = resp.json().await.unwrap_or(serde_json::Value::Null);
    (status, v)
}

fn code(v: &serde_json::Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn bad_requests_are_refused_with_stable_codes() {
    let dir = tempfile::tempdir().unwrap();
    let kf = key_file(dir.path(), "cluster.key", KEY_A);
    let w = WitnessProc::start(&kf, "127.0.0.1:0", "0s");
    let url = w.url();
    let wk = WitnessKey::from_cluster_key(&key(KEY_A));
    let other = WitnessKey::from_cluster_key(&key(KEY_B));
    let body = serde_json::to_vec(&wire("a", 1)).unwrap();

    // Unsigned, forged (another key), tampered.
    let (s, v) = post(&url, body.clone(), None).await;
    assert_eq!((s, code(&v)), (401, "bad-signature"), "{v}");
    let (s, v) = post(&url, body.clone(), Some(other.sign(&body))).await;
    assert_eq!((s, code(&v)), (401, "bad-signature"), "{v}");
    let mut tampered = body.clone();
    let sig = wk.sign(&body);
    tampered.extend_from_slice(b" ");
    let (s, v) = post(&url, tampered, Some(sig.clone())).await;
    assert_eq!((s, code(&v)), (401, "bad-signature"), "{v}");
    let (s, v) = post(&url, body.clone(), Some("not hex".into())).await;
    assert_eq!((s, code(&v)), (401, "bad-signature"), "{v}");

    // Genuine, then replayed.
    let (s, v) = post(&url, body.clone(), Some(sig.clone())).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["granted"], true, "{v}");
    let (s, v) = post(&url, body.clone(), Some(sig)).await;
    assert_eq!((s, code(&v)), (409, "replayed"), "{v}");
    let old = serde_json::to_vec(&wire("a", 0)).unwrap();
    let (s, v) = post(&url, old.clone(), Some(wk.sign(&old))).await;
    assert_eq!((s, code(&v)), (409, "replayed"), "{v}");

    // Signed garbage and invalid requests.
    for garbage in [
        b"hello".to_vec(),
        b"{}".to_vec(),
        b"[1,2,3]".to_vec(),
        vec![0xff, 0xfe, 0x00],
        serde_json::to_vec(&WireVote {
            partition: vec!["b".into()],
            ..wire("a", 10)
        })
        .unwrap(),
        serde_json::to_vec(&WireVote {
            lease_ms: 10,
            ..wire("a", 11)
        })
        .unwrap(),
        serde_json::to_vec(&WireVote {
            lease_ms: 3_600_000,
            ..wire("a", 12)
        })
        .unwrap(),
        serde_json::to_vec(&WireVote {
            nonce: "short".into(),
            ..wire("a", 13)
        })
        .unwrap(),
    ] {
        let (s, v) = post(&url, garbage.clone(), Some(wk.sign(&garbage))).await;
        assert_eq!(
            (s, code(&v)),
            (400, "bad-request"),
            "{v} for {}",
            String::from_utf8_lossy(&garbage)
        );
    }
    // Oversized.
    let big = vec![b'x'; 20 * 1024];
    let (s, v) = post(&url, big.clone(), Some(wk.sign(&big))).await;
    assert_eq!((s, code(&v)), (413, "too-large"), "{v}");

    // Health is open and shows no state; unknown paths have a code.
    let h = reqwest::get(format!("{url}/v1/health")).await.unwrap();
    assert_eq!(h.status().as_u16(), 200);
    let text = h.text().await.unwrap();
    assert!(!text.contains("orders"), "{text}");
    let r = reqwest::get(format!("{url}/v1/vote")).await.unwrap();
    assert_eq!(r.status().as_u16(), 405);
    let r = reqwest::get(format!("{url}/nope")).await.unwrap();
    assert_eq!(r.status().as_u16(), 404);

    // A client with the wrong cluster key is refused, never granted.
    let wrong = HttpWitness::new(&url, &key(KEY_B)).unwrap();
    match wrong.vote(&req("b", &["b"]), DEADLINE).await {
        Err(WitnessError::Rejected { code, .. }) => assert_eq!(code, "bad-signature"),
        other => panic!("{other:?}"),
    }
    // The witness is still alive and consistent: A (granted above) still holds it.
    let good = HttpWitness::new(&url, &key(KEY_A)).unwrap();
    let r = good.vote(&req("b", &["b"]), DEADLINE).await.unwrap();
    assert!(!r.granted && r.holder == vec!["a"], "{r:?}");
    assert!(w.log_contains("bad-signature"));
}

/// A fake witness answering every request with `status`, `body` and `sig`.
async fn fake(status: u16, body: Vec<u8>, sig: Option<String>) -> String {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let app = axum::Router::new().fallback(move || {
        let body = body.clone();
        let sig = sig.clone();
        async move {
            let mut r = (StatusCode::from_u16(status).unwrap(), body).into_response();
            if let Some(s) = sig {
                r.headers_mut().insert(SIGNATURE_HEADER, s.parse().unwrap());
            }
            r
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn forged_replayed_garbage_and_hanging_witnesses_never_grant() {
    let k = key(KEY_A);
    // Replies are signed with the per-cluster witness key of cluster "orders".
    let wk = WitnessKey::for_cluster(&k, "orders");
    let other = WitnessKey::for_cluster(&key(KEY_B), "orders");
    let granted = |nonce: &str| WireReply {
        nonce: nonce.into(),
        cluster: "orders".into(),
        server: "a".into(),
        granted: true,
        holder: vec!["a".into()],
        holder_remaining_ms: 300,
        epochs: BTreeMap::new(),
        detail: "forged".into(),
    };
    let body = serde_json::to_vec(&granted("00112233445566778899aabbccddeeff")).unwrap();
    let cases = [
        (
            "signed with another key",
            fake(200, body.clone(), Some(other.sign(&body))).await,
            "bad-signature",
        ),
        (
            "unsigned",
            fake(200, body.clone(), None).await,
            "bad-signature",
        ),
        // A genuine signature over a reply to another request (a replayed reply).
        (
            "replayed reply",
            fake(200, body.clone(), Some(wk.sign(&body))).await,
            "bad-signature",
        ),
        (
            "signed garbage",
            fake(200, b"garbage".to_vec(), Some(wk.sign(b"garbage"))).await,
            "bad-reply",
        ),
        (
            "html error page",
            fake(502, b"<html>bad gateway</html>".to_vec(), None).await,
            "bad-reply",
        ),
    ];
    for (what, url, want) in cases {
        let c = HttpWitness::new(&url, &k).unwrap();
        match c.vote(&req("a", &["a"]), DEADLINE).await {
            Err(e) => assert_eq!(e.code(), want, "{what}: {e}"),
            Ok(r) => panic!("{what}: counted {r:?}"),
        }
    }

    // A witness that accepts connections and never answers: a timeout by the deadline.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let hang = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    let c = HttpWitness::new(&format!("http://{addr}"), &k).unwrap();
    let t = Instant::now();
    let e = c
        .vote(&req("a", &["a"]), Duration::from_millis(400))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "timeout", "{e}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    hang.abort();

    // Nobody listening.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let c = HttpWitness::new(&format!("http://127.0.0.1:{port}"), &k).unwrap();
    let e = c.vote(&req("a", &["a"]), DEADLINE).await.unwrap_err();
    assert_eq!(e.code(), "unreachable", "{e}");

    // Invalid requests never leave the client.
    let e = c.vote(&req("a", &["b"]), DEADLINE).await.unwrap_err();
    assert_eq!(e.code(), "invalid-request");
}

#[test]
fn cli_witness_rejects_a_bad_key_file_and_duration() {
    let dir = tempfile::tempdir().unwrap();
    let short = key_file(dir.path(), "short.key", "short");
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["witness", "--listen", "127.0.0.1:0", "--key-file"])
        .arg(&short)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let good = key_file(dir.path(), "good.key", KEY_A);
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args([
            "witness",
            "--listen",
            "127.0.0.1:0",
            "--startup-quiet",
            "soon",
            "--key-file",
        ])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// Figures for the docs: `cargo test -p baton-agent --test witness -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "measurement: run with --ignored --nocapture"]
async fn measure_vote_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let kf = key_file(dir.path(), "cluster.key", KEY_A);
    let w = WitnessProc::start(&kf, "127.0.0.1:0", "0s");
    let a = HttpWitness::new(&w.url(), &key(KEY_A)).unwrap();
    let mut times = Vec::new();
    for _ in 0..500 {
        let t = Instant::now();
        assert!(
            a.vote(&req("a", &["a", "b"]), DEADLINE)
                .await
                .unwrap()
                .granted
        );
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "HTTP witness vote round trip over loopback, 500 votes: median {:?}, p99 {:?}, max {:?}",
        times[250], times[495], times[499]
    );
}

/// A fake witness that answers every request correctly signed and with the request's
/// nonce (a witness holding the cluster key), granting, with these epochs and holder.
async fn signed_granting(
    wk: WitnessKey,
    epochs: BTreeMap<String, u64>,
    holder: Vec<String>,
) -> String {
    use axum::response::IntoResponse;
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let (wk, epochs, holder) = (wk.clone(), epochs.clone(), holder.clone());
        async move {
            let v: WireVote = serde_json::from_slice(&body).unwrap();
            let reply = WireReply {
                nonce: v.nonce,
                cluster: v.cluster,
                server: v.server,
                granted: true,
                holder,
                holder_remaining_ms: 300,
                epochs,
                detail: "granted".into(),
            };
            let raw = serde_json::to_vec(&reply).unwrap();
            let mut r = raw.clone().into_response();
            r.headers_mut()
                .insert(SIGNATURE_HEADER, wk.sign(&raw).parse().unwrap());
            r
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn signed_replies_with_epochs_above_the_bound_never_grant() {
    const MAX_EPOCH: u64 = baton_core::bounds::MAX_EPOCH;
    let k = key(KEY_A);
    let wk = WitnessKey::for_cluster(&k, "orders");
    let a = || vec!["a".to_string()];
    /// (epochs, holder, expected error code or None: granted)
    type Case = (BTreeMap<String, u64>, Vec<String>, Option<&'static str>);
    let cases: Vec<Case> = vec![
        (BTreeMap::from([("g1".into(), MAX_EPOCH)]), a(), None),
        (
            BTreeMap::from([("g1@a".into(), MAX_EPOCH + 1)]),
            a(),
            Some("out-of-bounds"),
        ),
        (
            BTreeMap::from([("g1".into(), u64::MAX - 1)]),
            a(),
            Some("out-of-bounds"),
        ),
        (
            BTreeMap::from([("g1".into(), u64::MAX)]),
            a(),
            Some("out-of-bounds"),
        ),
        // Oversized or empty fields.
        (
            (0..1025).map(|i| (format!("g{i}"), 1)).collect(),
            a(),
            Some("bad-reply"),
        ),
        (BTreeMap::new(), Vec::new(), Some("bad-reply")),
        (
            BTreeMap::new(),
            (0..65).map(|i| format!("s{i}")).collect(),
            Some("bad-reply"),
        ),
    ];
    for (epochs, holder, want) in cases {
        let what = format!(
            "{} epochs, max {:?}, holder of {}",
            epochs.len(),
            epochs.values().max(),
            holder.len()
        );
        let url = signed_granting(wk.clone(), epochs, holder).await;
        let c = HttpWitness::new(&url, &k).unwrap();
        let r = c.vote(&req("a", &["a"]), DEADLINE).await;
        match (want, r) {
            (None, Ok(r)) => {
                assert!(r.granted, "{what}: {r:?}");
                assert_eq!(r.epochs.get("g1"), Some(&MAX_EPOCH));
            }
            (Some(code), Err(e)) => assert_eq!(e.code(), code, "{what}: {e}"),
            (want, r) => panic!("{what}: expected {want:?}, got {r:?}"),
        }
    }
}

/// A cluster config with `servers` whose key file holds `key`, in `dir`.
fn cluster_config(dir: &Path, cluster: &str, servers: &[&str], key: &str) -> PathBuf {
    key_file(dir, &format!("{cluster}.key"), key);
    let mut text = format!(
        "[cluster]\nname = \"{cluster}\"\nkey_file = \"{cluster}.key\"\n\n[quorum]\nwitness = {{ kind = \"http\", url = \"http://127.0.0.1:7430\" }}\n"
    );
    for (i, s) in servers.iter().enumerate() {
        text.push_str(&format!(
            "\n[[server]]\nname = \"{s}\"\npriority = {}\ninterconnects = [\"10.0.0.{}\"]\napi = \"10.0.0.{}:7420\"\n",
            i + 1,
            i + 1,
            i + 1
        ));
    }
    let p = dir.join(format!("{cluster}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

fn keygen_witness(out: &Path, config: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_baton"))
        .arg("keygen")
        .arg("--witness")
        .arg(out)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

fn in_cluster(cluster: &str, server: &str, partition: &[&str]) -> VoteRequest {
    VoteRequest {
        cluster: cluster.into(),
        ..req(server, partition)
    }
}

/// `baton keygen --witness` writes a derived key per cluster; a witness holding only
/// those serves two clusters with different keys, and grants only to their servers.
#[tokio::test]
async fn derived_witness_keys_serve_two_clusters_and_only_their_servers() {
    let dir = tempfile::tempdir().unwrap();
    let orders = cluster_config(dir.path(), "orders", &["a", "b"], KEY_A);
    let billing = cluster_config(
        dir.path(),
        "billing",
        &["x", "y", "z"],
        "another cluster key, long enough for the minimum",
    );
    let wo = dir.path().join("orders.witness");
    let wb = dir.path().join("billing.witness");
    for (out, cfg) in [(&wo, &orders), (&wb, &billing)] {
        let r = keygen_witness(out, cfg);
        assert!(r.status.success(), "{r:?}");
        let meta = std::fs::metadata(out).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    // The witness key file holds neither cluster key.
    let text = std::fs::read_to_string(&wo).unwrap();
    assert!(!text.contains(KEY_A), "{text}");
    assert!(text.contains("witness_key"), "{text}");
    // Never overwritten.
    let r = keygen_witness(&wo, &orders);
    assert_eq!(r.status.code(), Some(7), "{r:?}");
    assert_eq!(std::fs::read_to_string(&wo).unwrap(), text);

    let w = WitnessProc::start_keys(&[&wo, &wb], "127.0.0.1:0", "0s");
    assert!(!w.log_contains("deprecated"));
    let a = HttpWitness::new(&w.url(), &key(KEY_A)).unwrap();
    let x = HttpWitness::new(
        &w.url(),
        &key("another cluster key, long enough for the minimum"),
    )
    .unwrap();
    let r = a
        .vote(&in_cluster("orders", "a", &["a"]), DEADLINE)
        .await
        .unwrap();
    assert!(r.granted, "{r:?}");
    let r = x
        .vote(&in_cluster("billing", "x", &["x", "y"]), DEADLINE)
        .await
        .unwrap();
    assert!(r.granted && r.holder == vec!["x", "y"], "{r:?}");
    // One cluster's key does not sign for the other.
    match a.vote(&in_cluster("billing", "x", &["x"]), DEADLINE).await {
        Err(WitnessError::Rejected { code, .. }) => assert_eq!(code, "bad-signature"),
        other => panic!("{other:?}"),
    }
    // A made-up server, alone or in the partition, is refused with a code.
    for (server, partition) in [("mallory", &["mallory"][..]), ("b", &["b", "ghost"][..])] {
        match a
            .vote(&in_cluster("orders", server, partition), DEADLINE)
            .await
        {
            Err(WitnessError::Rejected { code, .. }) => assert_eq!(code, "unknown-server"),
            other => panic!("{server} {partition:?}: {other:?}"),
        }
    }
    assert!(w.log_line("ghost").contains("unknown-server"));
    // A cluster it has no key for.
    let body = serde_json::to_vec(&WireVote {
        cluster: "nope".into(),
        ..wire("a", 1)
    })
    .unwrap();
    let sig = WitnessKey::for_cluster(&key(KEY_A), "nope").sign(&body);
    let (s, v) = post(&w.url(), body, Some(sig)).await;
    assert_eq!((s, code(&v)), (403, "unknown-cluster"), "{v}");
    // The v1 signature (cluster key without the cluster name) is not accepted by a
    // witness that holds only derived keys.
    let body = serde_json::to_vec(&wire("a", 5)).unwrap();
    let sig = WitnessKey::from_cluster_key(&key(KEY_A)).sign(&body);
    let (s, v) = post(&w.url(), body, Some(sig)).await;
    assert_eq!((s, code(&v)), (401, "bad-signature"), "{v}");
    // A's grant stands after all that.
    let r = a
        .vote(&in_cluster("orders", "b", &["b"]), DEADLINE)
        .await
        .unwrap();
    assert!(!r.granted && r.holder == vec!["a"], "{r:?}");
}

/// Key rotation (docs/src/operations.md, step 2): the witness holds the old and the new
/// witness key file of the cluster, so agents signing with either key are served, by the
/// same book (one holder), and each reply verifies with the key its request used.
#[tokio::test]
async fn a_witness_with_both_keys_serves_agents_on_either_during_a_rotation() {
    const KEY_NEW: &str = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a29180f7e6d5c4b3a2918f7e6d5c4b3";
    let dir = tempfile::tempdir().unwrap();
    let old_dir = dir.path().join("old");
    let new_dir = dir.path().join("new");
    std::fs::create_dir_all(&old_dir).unwrap();
    std::fs::create_dir_all(&new_dir).unwrap();
    let old_cfg = cluster_config(&old_dir, "orders", &["a", "b", "c"], KEY_A);
    let new_cfg = cluster_config(&new_dir, "orders", &["a", "b", "c"], KEY_NEW);
    let (wo, wn) = (
        dir.path().join("old.witness"),
        dir.path().join("new.witness"),
    );
    for (out, cfg) in [(&wo, &old_cfg), (&wn, &new_cfg)] {
        let r = keygen_witness(out, cfg);
        assert!(r.status.success(), "{r:?}");
    }
    let w = WitnessProc::start_keys(&[&wo, &wn], "127.0.0.1:0", "0s");
    let switched = HttpWitness::new(&w.url(), &key(KEY_NEW)).unwrap();
    let not_yet = HttpWitness::new(&w.url(), &key(KEY_A)).unwrap();
    let r = switched
        .vote(&in_cluster("orders", "a", &["a", "b"]), DEADLINE)
        .await
        .unwrap();
    assert!(r.granted && r.holder == vec!["a", "b"], "{r:?}");
    // The same book: c, on the old key, alone is not granted while a and b hold it.
    let r = not_yet
        .vote(&in_cluster("orders", "c", &["c"]), DEADLINE)
        .await
        .unwrap();
    assert!(!r.granted && r.holder == vec!["a", "b"], "{r:?}");
    // b, still on the old key, is part of the holder: granted.
    let r = not_yet
        .vote(&in_cluster("orders", "b", &["a", "b"]), DEADLINE)
        .await
        .unwrap();
    assert!(r.granted, "{r:?}");
    // A third key (neither file) is refused.
    let stranger = HttpWitness::new(&w.url(), &key(KEY_B)).unwrap();
    match stranger
        .vote(&in_cluster("orders", "a", &["a"]), DEADLINE)
        .await
    {
        Err(WitnessError::Rejected { code, .. }) => assert_eq!(code, "bad-signature"),
        other => panic!("{other:?}"),
    }
}

/// The cluster key itself still works for this release, with a deprecation warning,
/// for clients of the per-cluster key and of the v1 key (rolling upgrade).
#[tokio::test]
async fn a_cluster_key_is_accepted_with_a_deprecation_warning() {
    let dir = tempfile::tempdir().unwrap();
    let kf = key_file(dir.path(), "cluster.key", KEY_A);
    let w = WitnessProc::start(&kf, "127.0.0.1:0", "0s");
    assert!(w.log_contains("witness-cluster-key-deprecated"));
    let a = HttpWitness::new(&w.url(), &key(KEY_A)).unwrap();
    assert!(a.vote(&req("a", &["a"]), DEADLINE).await.unwrap().granted);
    let body = serde_json::to_vec(&wire("a", 7)).unwrap();
    let sig = WitnessKey::from_cluster_key(&key(KEY_A)).sign(&body);
    let (s, v) = post(&w.url(), body, Some(sig)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["granted"], true, "{v}");
}

/// The witness logs the TCP peer of a request, not the `X-Forwarded-For` it claims.
#[tokio::test]
async fn the_log_names_the_tcp_peer_not_a_forwarded_for_header() {
    let dir = tempfile::tempdir().unwrap();
    let orders = cluster_config(dir.path(), "orders", &["a", "b"], KEY_A);
    let wo = dir.path().join("orders.witness");
    assert!(keygen_witness(&wo, &orders).status.success());
    let w = WitnessProc::start_keys(&[&wo], "127.0.0.1:0", "0s");
    let body = serde_json::to_vec(&wire("a", 1)).unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}/v1/vote", w.url()))
        .header("x-forwarded-for", "203.0.113.77")
        .header(SIGNATURE_HEADER, "00".repeat(32))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let line = w.log_line("bad-signature");
    assert!(line.contains("127.0.0.1:"), "{line}");
    assert!(!line.contains("203.0.113.77"), "{line}");
}

/// The agent process (not only the client): a witness answer whose epoch is above the
/// bound is a critical event (BTN-1140) on the server that asked, never a vote, and the
/// group is not taken over with it. Two servers and a witness; the fake witness signs
/// correctly, grants, and names an epoch past `MAX_EPOCH`; the holder is killed.
#[test]
fn an_agent_refuses_a_witness_answer_above_the_epoch_bound_with_a_critical_event() {
    use baton_tests::{Cluster, ClusterSpec, Signal, GROUP};
    use std::sync::{Arc, Mutex};
    let _serial = baton_tests::serial();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The key is known once the harness wrote it: until then the witness answers 503.
    let signer: Arc<Mutex<Option<WitnessKey>>> = Arc::new(Mutex::new(None));
    let url = {
        use axum::response::IntoResponse;
        let signer = signer.clone();
        let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
            let signer = signer.clone();
            async move {
                let Some(wk) = signer.lock().unwrap().clone() else {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response();
                };
                let v: WireVote = serde_json::from_slice(&body).unwrap();
                let reply = WireReply {
                    nonce: v.nonce,
                    cluster: v.cluster,
                    holder: vec![v.server.clone()],
                    server: v.server,
                    granted: true,
                    holder_remaining_ms: 2_000,
                    epochs: BTreeMap::from([(
                        GROUP.to_string(),
                        baton_core::bounds::MAX_EPOCH + 1,
                    )]),
                    detail: "granted".into(),
                };
                let raw = serde_json::to_vec(&reply).unwrap();
                let mut r = raw.clone().into_response();
                r.headers_mut()
                    .insert(SIGNATURE_HEADER, wk.sign(&raw).parse().unwrap());
                r
            }
        });
        rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(async move {
                let _ = axum::serve(l, app).await;
            });
            format!("http://{addr}")
        })
    };
    let mut spec = ClusterSpec::new("wbound", 169);
    spec.servers = 2;
    spec.extra_config = format!("\n[quorum]\nwitness = {{ kind = \"http\", url = \"{url}\" }}\n");
    let mut c = Cluster::start(spec);
    let cfg = baton_agent::catalog::load_config(&c.config).unwrap();
    let ck = ClusterKey::load(c.dir.join("cluster.key")).unwrap();
    *signer.lock().unwrap() = Some(WitnessKey::for_cluster(&ck, &cfg.cluster_name));
    let (owner, epoch, _) = c.wait_owner(None, Duration::from_secs(20));
    let other = if owner == "node-1" {
        "node-2"
    } else {
        "node-1"
    };
    c.kill(&owner, Signal::SIGKILL);
    let evs = c.wait_event(other, "BTN-1140", Duration::from_secs(20), |_| true);
    let ev = evs.iter().find(|e| e.id == "BTN-1140").unwrap();
    assert_eq!(ev.severity, "critical", "{ev:?}");
    assert!(ev.message.contains("witness"), "{ev:?}");
    // Well past the takeover time: the survivor never ran the group, and its epoch did
    // not move to (or wrap around) the refused one.
    std::thread::sleep(Duration::from_secs(5));
    let st = c.status_via(other);
    let g = st.local.groups.iter().find(|g| g.name == GROUP).unwrap();
    assert!(
        c.alerts(other).iter().all(|e| e.id != "BTN-2102"),
        "{other} activated the group: {:?}",
        c.alerts(other)
    );
    assert!(
        g.epoch <= epoch + 1,
        "epoch {} after a refused answer",
        g.epoch
    );
}
