//! The S3 and DynamoDB witnesses against moto server (real AWS SDK for Rust, real
//! conditional requests): racing clients, takeover only after the observation time,
//! throttling, 5xx, a hanging endpoint and garbage leases never grant.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Tests measure the real time of real processes and sockets: they read the clock directly.
#![allow(clippy::disallowed_methods)]

use baton_providers::aws::AwsServices;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use baton_core::config::{AwsSection, Dur};
use baton_providers::aws::witness::{DynamoWitness, S3Witness};
use baton_providers::aws::AwsClients;
use baton_providers::witness::{hold_for, VoteRequest, WitnessClient};
use baton_tests::moto::{aws_env, Moto};

const LEASE: Duration = Duration::from_millis(300);
/// Generous: moto is Python on a small shared machine.
const DEADLINE: Duration = Duration::from_millis(1500);

fn hold() -> Duration {
    hold_for(LEASE) + 2 * DEADLINE
}

async fn clients(moto: &Moto) -> AwsClients {
    for (k, v) in aws_env(&moto.endpoint) {
        // Same values in every test of this binary.
        std::env::set_var(k, v);
    }
    AwsClients::load(&AwsSection {
        region: Some("us-east-1".into()),
        endpoint_url: Some(moto.endpoint.clone()),
        call_timeout: Dur::from_ms(1000),
        max_attempts: 2,
        ..AwsSection::default()
    })
    .await
}

fn req(server: &str, partition: &[&str]) -> VoteRequest {
    VoteRequest {
        cluster: "orders".into(),
        server: server.into(),
        partition: partition.iter().map(|s| s.to_string()).collect(),
        lease: LEASE,
        epochs: BTreeMap::from([(format!("g-{server}"), 7)]),
    }
}

async fn make_bucket(c: &AwsClients, bucket: &str) {
    c.s3().create_bucket().bucket(bucket).send().await.unwrap();
}

async fn make_table(c: &AwsClients, table: &str) {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    c.dynamodb()
        .create_table()
        .table_name(table)
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
}

/// Two clients race for an empty lease (exactly one wins), the winner renews, the
/// loser is denied until it has seen the lease unchanged for the hold, then takes over;
/// the old holder is then the outsider.
async fn race_and_takeover(a: &dyn WitnessClient, b: &dyn WitnessClient) {
    let (qa, qb) = (req("a", &["a"]), req("b", &["b"]));
    let (ra, rb) = tokio::join!(a.vote(&qa, DEADLINE), b.vote(&qb, DEADLINE));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert!(
        ra.granted != rb.granted,
        "exactly one of two racing clients wins: {ra:?} {rb:?}"
    );
    let (win, win_name, lose, lose_name) = if ra.granted {
        (a, "a", b, "b")
    } else {
        (b, "b", a, "a")
    };
    // The winner renews for longer than the hold; the loser is denied throughout.
    let start = Instant::now();
    let mut last_renewal_sent = Instant::now();
    while start.elapsed() < hold() + Duration::from_millis(300) {
        last_renewal_sent = Instant::now();
        let r = win
            .vote(&req(win_name, &[win_name]), DEADLINE)
            .await
            .unwrap();
        assert!(r.granted, "{r:?}");
        assert_eq!(r.holder, vec![win_name]);
        let r = lose
            .vote(&req(lose_name, &[lose_name]), DEADLINE)
            .await
            .unwrap();
        assert!(
            !r.granted,
            "the loser must not win while the holder renews: {r:?}"
        );
        assert_eq!(r.holder, vec![win_name]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The winner stops renewing; the loser takes over, never before the hold.
    let took = loop {
        let r = lose
            .vote(&req(lose_name, &[lose_name]), DEADLINE)
            .await
            .unwrap();
        if r.granted {
            assert_eq!(r.holder, vec![lose_name]);
            // Epochs of both servers were merged into the lease.
            assert_eq!(r.epochs.get("g-a"), Some(&7), "{r:?}");
            assert_eq!(r.epochs.get("g-b"), Some(&7), "{r:?}");
            break Instant::now();
        }
        assert!(
            last_renewal_sent.elapsed() < hold() * 3,
            "no takeover: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        took.duration_since(last_renewal_sent) >= hold(),
        "took over {} ms after the last renewal was sent; the hold is {} ms",
        took.duration_since(last_renewal_sent).as_millis(),
        hold().as_millis()
    );
    // The old holder is now outside the holder partition.
    let r = win
        .vote(&req(win_name, &[win_name]), DEADLINE)
        .await
        .unwrap();
    assert!(!r.granted, "{r:?}");
}

/// A split of {a, b}: the move to {a} waits for b to lapse; b is denied meanwhile.
async fn shrink_waits(a: &dyn WitnessClient, b: &dyn WitnessClient) {
    assert!(
        a.vote(&req("a", &["a", "b"]), DEADLINE)
            .await
            .unwrap()
            .granted
    );
    assert!(
        b.vote(&req("b", &["a", "b"]), DEADLINE)
            .await
            .unwrap()
            .granted
    );
    let r = a.vote(&req("a", &["a"]), DEADLINE).await.unwrap();
    assert!(r.granted, "{r:?}");
    assert_eq!(r.holder, vec!["a", "b"], "the move is pending: {r:?}");
    let r = b.vote(&req("b", &["b"]), DEADLINE).await.unwrap();
    assert!(!r.granted, "{r:?}");
    let start = Instant::now();
    loop {
        let r = a.vote(&req("a", &["a"]), DEADLINE).await.unwrap();
        assert!(r.granted, "{r:?}");
        if r.holder == vec!["a"] {
            break;
        }
        assert!(
            start.elapsed() < hold() * 3,
            "the move never happened: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!b.vote(&req("b", &["b"]), DEADLINE).await.unwrap().granted);
}

/// Faults never grant: each must be an error (or at most a denial), and the witness
/// works again once they are cleared.
async fn faults_never_grant(
    moto: &Moto,
    w: &dyn WitnessClient,
    read_op: &str,
    write_op: &str,
    throttle: (&str, u16),
) {
    assert!(w.vote(&req("a", &["a"]), DEADLINE).await.unwrap().granted);
    let cases: Vec<(&str, &str, u16)> = vec![
        (write_op, throttle.0, throttle.1),
        (write_op, "InternalError", 500),
        (read_op, throttle.0, throttle.1),
        (read_op, "ServiceUnavailable", 503),
    ];
    for (op, code, status) in cases {
        moto.fail(op, code, status, -1);
        let r = w.vote(&req("a", &["a"]), DEADLINE).await;
        match &r {
            Err(e) => assert!(
                ["api-error", "timeout"].contains(&e.code()),
                "{op} {code}: {e}"
            ),
            Ok(reply) => panic!("{op} {code} {status} must not answer a vote: {reply:?}"),
        }
        moto.clear_faults();
    }
    // A hanging endpoint: the client returns by its deadline with an error.
    moto.delay(read_op, Duration::from_secs(4), -1);
    let t = Instant::now();
    let r = w.vote(&req("a", &["a"]), Duration::from_millis(500)).await;
    assert_eq!(
        r.as_ref().map_err(|e| e.code()).unwrap_err(),
        "timeout",
        "{r:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    moto.clear_faults();
    moto.delay(write_op, Duration::from_secs(4), -1);
    let r = w.vote(&req("a", &["a"]), Duration::from_millis(800)).await;
    assert!(r.is_err(), "{r:?}");
    moto.clear_faults();
    // Back to normal (the slow write may have landed meanwhile: a is still the holder).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let r = w.vote(&req("a", &["a"]), DEADLINE).await.unwrap();
    assert!(r.granted, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_witness() {
    let Some(moto) = Moto::start() else { return };
    let c = clients(&moto).await;
    make_bucket(&c, "baton-witness").await;

    // Sanity: the emulator honours conditional writes (else nothing below means much).
    let s3 = c.s3();
    let put = |body: &'static str| {
        s3.put_object()
            .bucket("baton-witness")
            .key("probe")
            .body(body.as_bytes().to_vec().into())
    };
    let first = put("1").if_none_match("*").send().await.unwrap();
    assert!(put("2").if_none_match("*").send().await.is_err());
    let etag = first.e_tag().unwrap().to_string();
    put("3").if_match(&etag).send().await.unwrap();
    assert!(put("4").if_match(&etag).send().await.is_err());

    let a = S3Witness::new(&c, "baton-witness", "orders/race");
    let b = S3Witness::new(&c, "baton-witness", "orders/race");
    race_and_takeover(&a, &b).await;

    let a = S3Witness::new(&c, "baton-witness", "orders/shrink");
    let b = S3Witness::new(&c, "baton-witness", "orders/shrink");
    shrink_waits(&a, &b).await;

    let w = S3Witness::new(&c, "baton-witness", "orders/faults");
    faults_never_grant(&moto, &w, "GetObject", "PutObject", ("SlowDown", 503)).await;

    // Garbage in the lease object, a lease of another cluster, a missing bucket.
    s3.put_object()
        .bucket("baton-witness")
        .key("orders/garbage")
        .body(b"{not a lease".to_vec().into())
        .send()
        .await
        .unwrap();
    let w = S3Witness::new(&c, "baton-witness", "orders/garbage");
    assert_eq!(
        w.vote(&req("a", &["a"]), DEADLINE)
            .await
            .unwrap_err()
            .code(),
        "bad-reply"
    );
    let mut other = req("a", &["a"]);
    other.cluster = "billing".into();
    let w = S3Witness::new(&c, "baton-witness", "orders/race");
    assert_eq!(
        w.vote(&other, DEADLINE).await.unwrap_err().code(),
        "rejected"
    );
    let w = S3Witness::new(&c, "no-such-bucket", "x");
    assert_eq!(
        w.vote(&req("a", &["a"]), DEADLINE)
            .await
            .unwrap_err()
            .code(),
        "api-error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_witness() {
    let Some(moto) = Moto::start() else { return };
    let c = clients(&moto).await;
    make_table(&c, "baton-witness").await;

    let a = DynamoWitness::new(&c, "baton-witness", "race");
    let b = DynamoWitness::new(&c, "baton-witness", "race");
    race_and_takeover(&a, &b).await;

    let a = DynamoWitness::new(&c, "baton-witness", "shrink");
    let b = DynamoWitness::new(&c, "baton-witness", "shrink");
    shrink_waits(&a, &b).await;

    let w = DynamoWitness::new(&c, "baton-witness", "faults");
    faults_never_grant(
        &moto,
        &w,
        "GetItem",
        "PutItem",
        ("ProvisionedThroughputExceededException", 400),
    )
    .await;

    // A garbage item, another cluster's item, a missing table.
    use aws_sdk_dynamodb::types::AttributeValue;
    c.dynamodb()
        .put_item()
        .table_name("baton-witness")
        .item("pk", AttributeValue::S("garbage".into()))
        .item("version", AttributeValue::S("seven".into()))
        .send()
        .await
        .unwrap();
    let w = DynamoWitness::new(&c, "baton-witness", "garbage");
    assert_eq!(
        w.vote(&req("a", &["a"]), DEADLINE)
            .await
            .unwrap_err()
            .code(),
        "bad-reply"
    );
    let mut other = req("a", &["a"]);
    other.cluster = "billing".into();
    let w = DynamoWitness::new(&c, "baton-witness", "race");
    assert_eq!(
        w.vote(&other, DEADLINE).await.unwrap_err().code(),
        "rejected"
    );
    let w = DynamoWitness::new(&c, "no-such-table", "x");
    assert_eq!(
        w.vote(&req("a", &["a"]), DEADLINE)
            .await
            .unwrap_err()
            .code(),
        "api-error"
    );
}

/// Figures for the docs:
/// `cargo test -p baton-providers --test witness_aws -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: run with --ignored --nocapture"]
async fn measure_vote_round_trip() {
    let Some(moto) = Moto::start() else { return };
    let c = clients(&moto).await;
    make_bucket(&c, "baton-witness").await;
    make_table(&c, "baton-witness").await;
    let s3 = S3Witness::new(&c, "baton-witness", "m");
    let ddb = DynamoWitness::new(&c, "baton-witness", "m");
    for (name, w) in [("S3", &s3 as &dyn WitnessClient), ("DynamoDB", &ddb)] {
        let mut times = Vec::new();
        for _ in 0..100 {
            let t = Instant::now();
            assert!(w.vote(&req("a", &["a"]), DEADLINE).await.unwrap().granted);
            times.push(t.elapsed());
        }
        times.sort();
        println!(
            "{name} witness vote (read + conditional write) against moto, 100 votes: median {:?}, p99 {:?}",
            times[50], times[98]
        );
    }
}

// ---------------------------------------------------------------- bounds (issue 9)

const MAX_EPOCH: u64 = baton_core::bounds::MAX_EPOCH;
const MAX_VERSION: u64 = baton_core::bounds::MAX_VERSION;

/// A lease document as JSON (S3 body), held by `a`, with `epochs`, `seq` and `renewals`
/// written as raw JSON (so values past u64 can be written too).
fn lease_json(epochs: &str, seq: &str, renewals: &str) -> String {
    format!(
        r#"{{"cluster":"orders","partition":["a"],"writer":"a","seq":{seq},"epochs":{epochs},"renewals":{renewals}}}"#
    )
}

/// Votes of `a` against a lease document: (document, expected error code or None when
/// it must grant).
fn bound_cases() -> Vec<(String, Option<&'static str>)> {
    let e = |v: &str| lease_json(&format!(r#"{{"g1":{v}}}"#), "3", r#"{"a":3}"#);
    vec![
        (e(&MAX_EPOCH.to_string()), None),
        (e(&(MAX_EPOCH + 1).to_string()), Some("out-of-bounds")),
        (e(&(u64::MAX - 1).to_string()), Some("out-of-bounds")),
        (e(&u64::MAX.to_string()), Some("out-of-bounds")),
        (e("18446744073709551616"), Some("bad-reply")),
        (e("-1"), Some("bad-reply")),
        (
            lease_json("{}", &(MAX_VERSION + 1).to_string(), r#"{"a":3}"#),
            Some("out-of-bounds"),
        ),
        (
            lease_json("{}", "3", &format!(r#"{{"a":{}}}"#, u64::MAX)),
            Some("out-of-bounds"),
        ),
        (
            lease_json(&format!(r#"{{"{}":1}}"#, "g".repeat(200)), "3", "{}"),
            Some("bad-reply"),
        ),
        (
            lease_json("{}", "3", "{}").replace(
                r#""partition":["a"]"#,
                &format!(
                    r#""partition":[{}]"#,
                    (0..65)
                        .map(|i| format!("\"s{i}\""))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            ),
            Some("bad-reply"),
        ),
        (
            lease_json("{}", "3", "{}").replace(r#""partition":["a"]"#, r#""partition":[]"#),
            Some("bad-reply"),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_lease_documents_at_the_bounds() {
    // Own bucket and table names: the tests of this binary may share one emulator (the
    // endpoint is set through the process environment).
    let Some(moto) = Moto::start() else { return };
    let c = clients(&moto).await;
    make_bucket(&c, "baton-bounds").await;
    let s3 = c.s3();
    for (i, (doc, want)) in bound_cases().into_iter().enumerate() {
        let key = format!("orders/bounds-{i}");
        s3.put_object()
            .bucket("baton-bounds")
            .key(&key)
            .body(doc.clone().into_bytes().into())
            .send()
            .await
            .unwrap();
        let before = s3
            .head_object()
            .bucket("baton-bounds")
            .key(&key)
            .send()
            .await
            .unwrap();
        let w = S3Witness::new(&c, "baton-bounds", &key);
        let r = w.vote(&req("a", &["a"]), DEADLINE).await;
        match want {
            None => {
                let r = r.unwrap();
                assert!(r.granted, "{doc}: {r:?}");
                assert_eq!(r.epochs.get("g1"), Some(&MAX_EPOCH));
            }
            Some(code) => {
                assert_eq!(r.as_ref().map_err(|e| e.code()).unwrap_err(), code, "{doc}");
                // Nothing was written: the document is unchanged.
                let after = s3
                    .head_object()
                    .bucket("baton-bounds")
                    .key(&key)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(before.e_tag(), after.e_tag(), "{doc}");
            }
        }
    }
    // A request above the bound is refused before anything is read or written.
    let mut r = req("a", &["a"]);
    r.epochs.insert("g1".into(), MAX_EPOCH + 1);
    let w = S3Witness::new(&c, "baton-bounds", "orders/bounds-request");
    assert_eq!(
        w.vote(&r, DEADLINE).await.unwrap_err().code(),
        "invalid-request"
    );
    assert!(s3
        .head_object()
        .bucket("baton-bounds")
        .key("orders/bounds-request")
        .send()
        .await
        .is_err());
    // Counters at the bound are not written past it: a renewal counter of MAX_VERSION
    // makes the next renewal fail rather than wrap.
    let key = "orders/bounds-counter";
    s3.put_object()
        .bucket("baton-bounds")
        .key(key)
        .body(
            lease_json("{}", "3", &format!(r#"{{"a":{MAX_VERSION}}}"#))
                .into_bytes()
                .into(),
        )
        .send()
        .await
        .unwrap();
    let w = S3Witness::new(&c, "baton-bounds", key);
    assert_eq!(
        w.vote(&req("a", &["a"]), DEADLINE)
            .await
            .unwrap_err()
            .code(),
        "out-of-bounds"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_lease_items_at_the_bounds() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let Some(moto) = Moto::start() else { return };
    let c = clients(&moto).await;
    make_table(&c, "baton-bounds").await;
    let ddb = c.dynamodb();
    // (version, epochs JSON, renewals JSON, expected error code or None: grants)
    let cases: Vec<(String, String, &str, Option<&str>)> = vec![
        (
            "3".into(),
            format!(r#"{{"g1":{MAX_EPOCH}}}"#),
            r#"{"a":3}"#,
            None,
        ),
        (
            "3".into(),
            format!(r#"{{"g1":{}}}"#, MAX_EPOCH + 1),
            r#"{"a":3}"#,
            Some("out-of-bounds"),
        ),
        (
            "3".into(),
            format!(r#"{{"g1":{}}}"#, u64::MAX),
            r#"{"a":3}"#,
            Some("out-of-bounds"),
        ),
        (
            (MAX_VERSION + 1).to_string(),
            "{}".into(),
            r#"{"a":3}"#,
            Some("out-of-bounds"),
        ),
        (
            u64::MAX.to_string(),
            "{}".into(),
            r#"{"a":3}"#,
            Some("out-of-bounds"),
        ),
        (
            "18446744073709551616".into(),
            "{}".into(),
            r#"{"a":3}"#,
            Some("bad-reply"),
        ),
        (
            "3".into(),
            "{}".into(),
            r#"{"a":18446744073709551615}"#,
            Some("out-of-bounds"),
        ),
        // At the bound: read, but the write would pass it (version MAX_VERSION + 1).
        (
            MAX_VERSION.to_string(),
            "{}".into(),
            r#"{"a":3}"#,
            Some("out-of-bounds"),
        ),
    ];
    for (i, (version, epochs, renewals, want)) in cases.into_iter().enumerate() {
        let item = format!("bounds-{i}");
        ddb.put_item()
            .table_name("baton-bounds")
            .item("pk", AttributeValue::S(item.clone()))
            .item("cluster", AttributeValue::S("orders".into()))
            .item(
                "partition",
                AttributeValue::L(vec![AttributeValue::S("a".into())]),
            )
            .item("writer", AttributeValue::S("a".into()))
            .item("version", AttributeValue::N(version.clone()))
            .item("epochs", AttributeValue::S(epochs.clone()))
            .item("renewals", AttributeValue::S(renewals.into()))
            .send()
            .await
            .unwrap();
        let w = DynamoWitness::new(&c, "baton-bounds", &item);
        let r = w.vote(&req("a", &["a"]), DEADLINE).await;
        let stored = ddb
            .get_item()
            .table_name("baton-bounds")
            .key("pk", AttributeValue::S(item.clone()))
            .consistent_read(true)
            .send()
            .await
            .unwrap();
        let stored_version = stored.item().unwrap()["version"].as_n().unwrap().clone();
        match want {
            None => {
                let r = r.unwrap();
                assert!(r.granted, "{version} {epochs}: {r:?}");
                assert_eq!(r.epochs.get("g1"), Some(&MAX_EPOCH));
                assert_eq!(stored_version, "4");
            }
            Some(code) => {
                assert_eq!(
                    r.as_ref().map_err(|e| e.code()).unwrap_err(),
                    code,
                    "{version} {epochs} {renewals}"
                );
                assert_eq!(stored_version, version, "nothing written");
            }
        }
    }
}
