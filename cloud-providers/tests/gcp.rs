//! Driver-level tests of the Google Cloud kinds (`gcp-dns`, `gcp-vip`, `gcp-lb-probe`) and of the Google Cloud
//! client against the Google Cloud fake (`tests/gcp/fake.py`): real HTTP, Cloud DNS
//! changes with exact deletions, metadata-server, service-account and application
//! default credentials, faults and a second writer; every request and response checked
//! against Google's discovery documents, and each test ends by asserting that nothing
//! failed that check.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Tests measure the real time of real calls: they read the clock directly.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_cloud_client::gcp::{AdcEnv, FailureKind, GcpClient, GcpRequest};
use baton_core::config::{Dur, GcpCredentials, GcpSection};
use baton_core::events::Event;
use baton_providers::cloud::EventSink;
use baton_providers::gcp::dns::GcpDnsDriver;
use baton_providers::gcp::lb::GcpLbProbeDriver;
use baton_providers::gcp::vip::GcpVipDriver;
use baton_providers::gcp::{GcpRegistry, GcpShared};
use baton_providers::{
    ActionContext, CheckOutcome, Params, ProbeContext, ProviderError, Registry, ResourceDriver,
};
use baton_tests::gcp::{GcpFake, PRIVATE_ZONE, PROJECT, PUBLIC_ZONE, SERVICE_ACCOUNT};
use serde_json::json;

const NAME: &str = "db.example.com.";
const TXT: &str = "_baton.db.example.com.";
/// The addresses of node-1 and node-2 in the fake's default world.
const IP1: &str = "10.128.0.2";
const IP2: &str = "10.128.0.3";
const T: Duration = Duration::from_secs(10);

/// Settings for the VM `instance` of the fake: its metadata server (credentials and
/// project from there), Cloud DNS and Compute at the fake.
fn settings(fake: &GcpFake, instance: &str) -> GcpSection {
    GcpSection {
        dns_endpoint: Some(fake.endpoint.clone()),
        compute_endpoint: Some(fake.endpoint.clone()),
        metadata_endpoint: Some(fake.vm_metadata(instance)),
        call_timeout: Dur::from_ms(2_000),
        deadline: Dur::from_ms(20_000),
        ..GcpSection::default()
    }
}

/// Shared state with an event channel.
fn shared(settings: &GcpSection) -> (Arc<GcpShared>, tokio::sync::mpsc::Receiver<Event>) {
    let (sink, rx) = EventSink::channel(64);
    (Arc::new(GcpShared::new(settings).with_events(sink)), rx)
}

fn params(zone: &str, name: &str, extra: &str) -> Params {
    format!("zone = '{zone}'\nrecord_name = '{name}'\n{extra}")
        .parse::<toml::Table>()
        .unwrap()
}

fn driver(shared: &Arc<GcpShared>, extra: &str) -> GcpDnsDriver {
    GcpDnsDriver::from_params(&params(PUBLIC_ZONE, NAME, extra), shared.clone()).unwrap()
}

fn ctx(server: &str, epoch: u64, timeout: Duration) -> ActionContext {
    ActionContext {
        cluster: "orders".into(),
        group: "web".into(),
        resource: "dns1".into(),
        server: server.into(),
        epoch,
        timeout,
    }
}

fn probe_ctx(server: &str) -> ProbeContext {
    ProbeContext {
        cluster: "orders".into(),
        server: server.into(),
        monitor: "dnsw1".into(),
        timeout: T,
        group_state: None,
    }
}

fn ids(rx: &mut tokio::sync::mpsc::Receiver<Event>) -> Vec<String> {
    let mut v = Vec::new();
    while let Ok(e) = rx.try_recv() {
        v.push(e.id.to_string());
    }
    v
}

/// The mark the fake holds for the name: `"baton epoch=N server=S group=web"`.
fn mark(epoch: u64, server: &str) -> Vec<String> {
    vec![format!("\"baton epoch={epoch} server={server} group=web\"")]
}

fn held(fake: &GcpFake) -> (Option<Vec<String>>, Option<Vec<String>>) {
    (
        fake.rrdatas(PUBLIC_ZONE, NAME, "A"),
        fake.rrdatas(PUBLIC_ZONE, TXT, "TXT"),
    )
}

fn changes(fake: &GcpFake) -> usize {
    fake.statuses("dns.changes.create").len()
}

#[tokio::test]
async fn activate_check_monitor_and_deactivate_in_a_public_zone() {
    let Some(fake) = GcpFake::start() else { return };
    let (sh, mut rx) = shared(&settings(&fake, "node-1"));
    let d = driver(&sh, &format!("ip = '{IP1}'\nttl = 60"));
    d.activate(&ctx("node-1", 1, T)).await.unwrap();
    assert_eq!(
        held(&fake),
        (Some(vec![IP1.into()]), Some(mark(1, "node-1")))
    );
    // The activation waited for the change to be done: the name servers answer it.
    assert_eq!(fake.answer(PUBLIC_ZONE, NAME, "A"), Some(vec![IP1.into()]));
    let a = fake.rrset(PUBLIC_ZONE, NAME, "A").unwrap();
    assert_eq!(a["ttl"], 60);
    assert_eq!(
        d.check(&ctx("node-1", 1, T)).await.unwrap(),
        CheckOutcome::Active
    );
    // Idempotent: already ours, nothing written.
    let before = changes(&fake);
    d.activate(&ctx("node-1", 1, T)).await.unwrap();
    assert_eq!(changes(&fake), before);
    let reg = GcpRegistry::from_shared(sh.clone());
    let probe = reg
        .build_probe(
            "gcp-dns",
            &params(PUBLIC_ZONE, NAME, &format!("ip = '{IP1}'")),
        )
        .unwrap();
    let ok = probe.probe(&probe_ctx("node-1")).await.unwrap();
    assert_eq!(
        ok.detail.as_deref(),
        Some("A record db.example.com. in zone public-zone = 10.128.0.2")
    );
    d.deactivate(&ctx("node-1", 1, T)).await.unwrap();
    // The A record is gone; the epoch record stays (an older epoch may not write later).
    assert_eq!(held(&fake), (None, Some(mark(1, "node-1"))));
    assert_eq!(fake.answer(PUBLIC_ZONE, NAME, "A"), None);
    assert_eq!(
        d.check(&ctx("node-1", 1, T)).await.unwrap(),
        CheckOutcome::Inactive
    );
    let e = probe.probe(&probe_ctx("node-1")).await.unwrap_err();
    assert!(matches!(e, ProviderError::Unhealthy(_)), "{e:?}");
    assert!(e.to_string().contains("does not exist"), "{e}");
    // Deactivating an absent record is fine, and writes nothing.
    let before = changes(&fake);
    d.deactivate(&ctx("node-1", 1, T)).await.unwrap();
    assert_eq!(changes(&fake), before);
    // Activating again at the same epoch replaces the epoch record it finds.
    d.activate(&ctx("node-1", 1, T)).await.unwrap();
    assert_eq!(
        held(&fake),
        (Some(vec![IP1.into()]), Some(mark(1, "node-1")))
    );
    let ids = ids(&mut rx);
    assert!(ids.contains(&"BTN-8108".to_string()), "{ids:?}");
    assert!(ids.contains(&"BTN-8107".to_string()), "{ids:?}");
    assert_eq!(
        fake.statuses("dns.changes.create"),
        [200, 200, 200],
        "activate, deactivate, activate"
    );
    fake.assert_no_violations();
}

#[tokio::test]
async fn a_private_zone_follows_a_failover_with_each_vm_s_own_address() {
    let Some(fake) = GcpFake::start() else { return };
    // No `ip`: each server's address comes from its own VM's metadata server.
    let (sh1, _rx1) = shared(&settings(&fake, "node-1"));
    let (sh2, _rx2) = shared(&settings(&fake, "node-2"));
    let name = "db.internal.example.";
    let mk = |sh: &Arc<GcpShared>| {
        GcpDnsDriver::from_params(&params(PRIVATE_ZONE, name, ""), sh.clone()).unwrap()
    };
    let (d1, d2) = (mk(&sh1), mk(&sh2));
    d1.activate(&ctx("node-1", 1, T)).await.unwrap();
    assert_eq!(
        fake.rrdatas(PRIVATE_ZONE, name, "A"),
        Some(vec![IP1.into()])
    );
    d2.activate(&ctx("node-2", 2, T)).await.unwrap();
    assert_eq!(
        fake.rrdatas(PRIVATE_ZONE, name, "A"),
        Some(vec![IP2.into()])
    );
    assert_eq!(
        fake.rrdatas(PRIVATE_ZONE, "_baton.db.internal.example.", "TXT"),
        Some(mark(2, "node-2"))
    );
    // The old owner's late deactivation does not delete the new owner's record.
    d1.deactivate(&ctx("node-1", 1, T)).await.unwrap();
    assert_eq!(
        fake.rrdatas(PRIVATE_ZONE, name, "A"),
        Some(vec![IP2.into()])
    );
    assert_eq!(
        d1.check(&ctx("node-1", 1, T)).await.unwrap(),
        CheckOutcome::Inactive
    );
    assert_eq!(
        d2.check(&ctx("node-2", 2, T)).await.unwrap(),
        CheckOutcome::Active
    );
    // The project came from the metadata server too.
    assert!(fake
        .statuses("metadata.project/project-id")
        .iter()
        .all(|s| *s == 200));
    assert!(!fake.statuses("metadata.project/project-id").is_empty());
    fake.assert_no_violations();
}

#[tokio::test]
async fn a_common_address_belongs_to_the_server_that_wrote_it() {
    let Some(fake) = GcpFake::start() else { return };
    let (sh, _rx) = shared(&settings(&fake, "node-1"));
    // One address for every server (a load balancer frontend).
    let d = driver(&sh, "ip = '10.128.0.100'");
    d.activate(&ctx("node-1", 1, T)).await.unwrap();
    assert_eq!(
        d.check(&ctx("node-1", 1, T)).await.unwrap(),
        CheckOutcome::Active
    );
    // Another server's re-adoption does not take it for its own, and its deactivation
    // (even at a newer epoch) does not delete node-1's record.
    assert_eq!(
        d.check(&ctx("node-2", 2, T)).await.unwrap(),
        CheckOutcome::Inactive
    );
    d.deactivate(&ctx("node-2", 2, T)).await.unwrap();
    assert_eq!(
        held(&fake),
        (Some(vec!["10.128.0.100".into()]), Some(mark(1, "node-1")))
    );
    let probe = GcpRegistry::from_shared(sh.clone())
        .build_probe("gcp-dns", &params(PUBLIC_ZONE, NAME, "ip = '10.128.0.100'"))
        .unwrap();
    let e = probe.probe(&probe_ctx("node-2")).await.unwrap_err();
    assert!(
        e.to_string().contains("marked for epoch 1 by node-1"),
        "{e}"
    );
    fake.assert_no_violations();
}

#[tokio::test]
async fn a_record_changed_by_hand_is_reported_and_repaired() {
    let Some(fake) = GcpFake::start() else { return };
    let (sh, mut rx) = shared(&settings(&fake, "node-1"));
    let d = driver(&sh, &format!("ip = '{IP1}'"));
    d.activate(&ctx("node-1", 3, T)).await.unwrap();
    fake.hand_edit(PUBLIC_ZONE, NAME, "A", 300, Some(&["10.9.9.9"]));
    let probe = GcpRegistry::from_shared(sh.clone())
        .build_probe(
            "gcp-dns",
            &params(PUBLIC_ZONE, NAME, &format!("ip = '{IP1}'")),
        )
        .unwrap();
    let e = probe.probe(&probe_ctx("node-1")).await.unwrap_err();
    assert!(matches!(e, ProviderError::Unhealthy(_)), "{e:?}");
    assert!(
        e.to_string()
            .contains("holds 10.9.9.9, expected 10.128.0.2"),
        "{e}"
    );
    // Raised once while it lasts.
    probe.probe(&probe_ctx("node-1")).await.unwrap_err();
    let seen = ids(&mut rx);
    assert_eq!(
        seen.iter().filter(|i| *i == "BTN-8107").count(),
        1,
        "{seen:?}"
    );
    // The monitor's recovery restarts the resource: activation writes it back.
    d.activate(&ctx("node-1", 3, T)).await.unwrap();
    assert_eq!(
        held(&fake),
        (Some(vec![IP1.into()]), Some(mark(3, "node-1")))
    );
    probe.probe(&probe_ctx("node-1")).await.unwrap();
    // The epoch record deleted by hand: reported too, and repaired the same way.
    fake.hand_edit(PUBLIC_ZONE, TXT, "TXT", 300, None);
    let e = probe.probe(&probe_ctx("node-1")).await.unwrap_err();
    assert!(e.to_string().contains("no Baton epoch record"), "{e}");
    d.activate(&ctx("node-1", 3, T)).await.unwrap();
    probe.probe(&probe_ctx("node-1")).await.unwrap();
    fake.assert_no_violations();
}

#[tokio::test]
async fn a_lower_epoch_never_undoes_a_higher_one() {
    let Some(fake) = GcpFake::start() else { return };
    let (sh, mut rx) = shared(&settings(&fake, "node-1"));
    driver(&sh, &format!("ip = '{IP2}'"))
        .activate(&ctx("node-2", 5, T))
        .await
        .unwrap();
    let d1 = driver(&sh, &format!("ip = '{IP1}'"));
    let before = changes(&fake);
    let e = d1.activate(&ctx("node-1", 4, T)).await.unwrap_err();
    match &e {
        ProviderError::Fenced {
            epoch,
            ours,
            holder,
            ..
        } => assert_eq!((*epoch, *ours, holder.as_str()), (5, 4, "node-2")),
        other => panic!("expected Fenced, got {other:?}"),
    }
    assert_eq!(changes(&fake), before, "nothing written");
    assert_eq!(
        held(&fake),
        (Some(vec![IP2.into()]), Some(mark(5, "node-2")))
    );
    assert!(ids(&mut rx).contains(&"BTN-8106".to_string()));
    // Nor does its deactivation, nor (once the newer owner deactivated cleanly) a late
    // activation of the older epoch: the epoch record outlives the A record.
    d1.deactivate(&ctx("node-1", 4, T)).await.unwrap();
    assert_eq!(held(&fake).0, Some(vec![IP2.into()]));
    driver(&sh, &format!("ip = '{IP2}'"))
        .deactivate(&ctx("node-2", 5, T))
        .await
        .unwrap();
    assert_eq!(held(&fake), (None, Some(mark(5, "node-2"))));
    let e = d1.activate(&ctx("node-1", 4, T)).await.unwrap_err();
    assert!(matches!(e, ProviderError::Fenced { epoch: 5, .. }), "{e:?}");
    assert_eq!(held(&fake), (None, Some(mark(5, "node-2"))));
    fake.assert_no_violations();
}

#[tokio::test]
async fn a_second_writer_between_read_and_change_is_read_again() {
    let Some(fake) = GcpFake::start() else { return };
    let (sh, mut rx) = shared(&settings(&fake, "node-1"));
    let d1 = driver(&sh, &format!("ip = '{IP1}'"));
    // Someone creates the A record just after we read it as absent: our change adds it
    // too (409 alreadyExists); read again, then replace it exactly.
    fake.second_writer(
        "GET",
        "/rrsets$",
        json!({"type": "rrset", "zone": PUBLIC_ZONE, "name": NAME, "rrtype": "A", "ttl": 300,
               "rrdatas": ["10.7.7.7"]}),
    );
    d1.activate(&ctx("node-1", 1, T)).await.unwrap();
    assert_eq!(
        held(&fake),
        (Some(vec![IP1.into()]), Some(mark(1, "node-1")))
    );
    assert_eq!(
        fake.statuses("dns.changes.create"),
        [409, 200],
        "one refused change, then one after reading again"
    );
    // Someone changes it after we read it: our deletion no longer matches (412).
    fake.control("DELETE", "/_fake/log", None);
    fake.second_writer(
        "GET",
        "/rrsets$",
        json!({"type": "rrset", "zone": PUBLIC_ZONE, "name": NAME, "rrtype": "A", "ttl": 300,
               "rrdatas": ["10.8.8.8"]}),
    );
    driver(&sh, &format!("ip = '{IP2}'"))
        .activate(&ctx("node-2", 2, T))
        .await
        .unwrap();
    assert_eq!(fake.statuses("dns.changes.create"), [412, 200]);
    assert_eq!(
        held(&fake),
        (Some(vec![IP2.into()]), Some(mark(2, "node-2")))
    );
    let seen = ids(&mut rx);
    assert_eq!(
        seen.iter().filter(|i| *i == "BTN-8109").count(),
        2,
        "{seen:?}"
    );
    // A newer owner claims the name between our reads: after reading again we are
    // fenced, and its records are intact.
    fake.second_writer(
        "GET",
        "/rrsets$",
        json!({"type": "rrset", "zone": PUBLIC_ZONE, "name": TXT, "rrtype": "TXT", "ttl": 300,
               "rrdatas": ["\"baton epoch=9 server=node-3 group=web\""]}),
    );
    let e = driver(&sh, &format!("ip = '{IP1}'"))
        .activate(&ctx("node-1", 3, T))
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::Fenced { epoch: 9, .. }), "{e:?}");
    assert_eq!(
        held(&fake),
        (Some(vec![IP2.into()]), Some(mark(9, "node-3")))
    );
    fake.assert_no_violations();
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried_within_the_deadline() {
    let Some(fake) = GcpFake::start() else { return };
    let (sh, _rx) = shared(&settings(&fake, "node-1"));
    fake.fault(json!({"method": "GET", "path": "/rrsets$", "status": 429, "count": 2}));
    fake.fault(json!({"method": "POST", "path": "/changes$", "status": 503, "count": 1}));
    fake.fault(json!({"path": "/changes/", "status": 500, "count": 1}));
    let d = driver(&sh, &format!("ip = '{IP1}'"));
    let t0 = Instant::now();
    d.activate(&ctx("node-1", 1, T)).await.unwrap();
    assert!(t0.elapsed() < T, "{:?}", t0.elapsed());
    assert_eq!(
        held(&fake),
        (Some(vec![IP1.into()]), Some(mark(1, "node-1")))
    );
    // Four faults answered, and the change was made once.
    assert_eq!(fake.statuses("fault").len(), 4);
    assert_eq!(fake.statuses("dns.changes.create"), [200]);
    // Throttling at the metadata server's token too.
    fake.fault(json!({"path": "/service-accounts/default/token$", "status": 503, "count": 1}));
    let (fresh, _rx) = shared(&settings(&fake, "node-1"));
    assert_eq!(
        driver(&fresh, &format!("ip = '{IP1}'"))
            .check(&ctx("node-1", 1, T))
            .await
            .unwrap(),
        CheckOutcome::Active
    );
    fake.assert_no_violations();
}

#[tokio::test]
async fn an_api_down_until_the_deadline_is_an_api_error_not_a_failure() {
    let Some(fake) = GcpFake::start() else { return };
    let (sh, mut rx) = shared(&settings(&fake, "node-1"));
    let d = driver(&sh, &format!("ip = '{IP1}'"));
    d.activate(&ctx("node-1", 1, T)).await.unwrap();
    fake.fault(json!({"path": "/rrsets$", "status": 503, "count": -1}));
    let t0 = Instant::now();
    let e = d
        .activate(&ctx("node-1", 2, Duration::from_secs(3)))
        .await
        .unwrap_err();
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "bounded by the action: {:?}",
        t0.elapsed()
    );
    match &e {
        ProviderError::Api {
            operation,
            code,
            status,
            ..
        } => {
            assert_eq!(operation, "dns.resourceRecordSets.list");
            assert_eq!(code.as_deref(), Some("backendError"));
            assert_eq!(*status, Some(503));
        }
        other => panic!("expected an API error, got {other:?}"),
    }
    assert!(e.is_api_error() && e.code() == "api-error");
    // The monitor says the same: an API error for on_api_error to judge (default warn:
    // no recovery), not an unhealthy record.
    let probe = GcpRegistry::from_shared(sh.clone())
        .build_probe(
            "gcp-dns",
            &params(PUBLIC_ZONE, NAME, &format!("ip = '{IP1}'")),
        )
        .unwrap();
    let mut pc = probe_ctx("node-1");
    pc.timeout = Duration::from_secs(2);
    let e = probe.probe(&pc).await.unwrap_err();
    assert!(e.is_api_error(), "{e:?}");
    assert!(ids(&mut rx).contains(&"BTN-8101".to_string()));
    fake.clear_faults();
    probe.probe(&pc).await.unwrap();
    // Nothing listening at all: the same, an API error.
    let dead = GcpSection {
        dns_endpoint: Some("http://127.0.0.1:9".into()),
        ..settings(&fake, "node-1")
    };
    let (sh, _rx) = shared(&dead);
    let probe = GcpRegistry::from_shared(sh)
        .build_probe(
            "gcp-dns",
            &params(PUBLIC_ZONE, NAME, &format!("ip = '{IP1}'")),
        )
        .unwrap();
    let e = probe.probe(&pc).await.unwrap_err();
    assert!(e.is_api_error(), "{e:?}");
    assert!(e.to_string().contains("could not reach"), "{e}");
    fake.assert_no_violations();
}

#[tokio::test]
async fn the_activation_waits_for_the_change_to_be_done() {
    let Some(fake) = GcpFake::start() else { return };
    fake.settings(json!({"dns_change_delay_ms": 1500}));
    let (sh, _rx) = shared(&settings(&fake, "node-1"));
    let t0 = Instant::now();
    driver(&sh, &format!("ip = '{IP1}'"))
        .activate(&ctx("node-1", 1, T))
        .await
        .unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(fake.answer(PUBLIC_ZONE, NAME, "A"), Some(vec![IP1.into()]));
    assert!(fake.statuses("dns.changes.get").len() >= 2);
    // Without waiting, the activation returns while the change is pending.
    let t0 = Instant::now();
    driver(&sh, &format!("ip = '{IP2}'\nwait_done = false"))
        .activate(&ctx("node-2", 2, T))
        .await
        .unwrap();
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(fake.answer(PUBLIC_ZONE, NAME, "A"), Some(vec![IP1.into()]));
    // A pending change outliving the action's timeout is a timeout.
    let e = driver(&sh, &format!("ip = '{IP1}'"))
        .activate(&ctx("node-1", 3, Duration::from_millis(800)))
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::Timeout(_)), "{e:?}");
    fake.assert_no_violations();
}

#[tokio::test]
async fn metadata_tokens_are_cached_and_renewed_after_a_401() {
    let Some(fake) = GcpFake::start() else { return };
    let (sh, _rx) = shared(&settings(&fake, "node-1"));
    let d = driver(&sh, &format!("ip = '{IP1}'"));
    d.activate(&ctx("node-1", 1, T)).await.unwrap();
    d.check(&ctx("node-1", 1, T)).await.unwrap();
    let tokens = "metadata.instance/service-accounts/default/token";
    assert_eq!(fake.statuses(tokens), [200], "one token for every call");
    // Every token revoked: the next call is refused once, fetches a new token, succeeds.
    fake.control("DELETE", "/_fake/tokens", None);
    assert_eq!(
        d.check(&ctx("node-1", 1, T)).await.unwrap(),
        CheckOutcome::Active
    );
    assert_eq!(fake.statuses(tokens), [200, 200]);
    assert!(fake.statuses("dns.resourceRecordSets.list").contains(&401));
    fake.assert_no_violations();
}

#[tokio::test]
async fn a_service_account_key_file_gets_tokens_from_the_token_endpoint() {
    let Some(fake) = GcpFake::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("sa.json");
    std::fs::write(&key, fake.service_account_key(SERVICE_ACCOUNT)).unwrap();
    // The key file's token_uri is the fake's; the project is the key's project_id; no
    // metadata server at all.
    let s = GcpSection {
        credentials: GcpCredentials::ServiceAccount,
        key_file: Some(key.clone()),
        metadata_endpoint: Some("http://127.0.0.1:9".into()),
        ..settings(&fake, "node-1")
    };
    let (sh, _rx) = shared(&s);
    driver(&sh, &format!("ip = '{IP1}'"))
        .activate(&ctx("node-1", 1, T))
        .await
        .unwrap();
    assert_eq!(held(&fake).0, Some(vec![IP1.into()]));
    assert_eq!(fake.statuses("oauth.token"), [200]);
    let principals: Vec<String> = fake
        .control("GET", "/_fake/log", None)
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["op"] == "dns.changes.create")
        .map(|e| e["principal"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(principals, [SERVICE_ACCOUNT]);
    // A key the account does not have (deleted, or another project's): invalid_grant,
    // a credentials failure, not an API error.
    let other = dir.path().join("other.json");
    let mut foreign: serde_json::Value =
        serde_json::from_str(&fake.service_account_key("other@baton-test.iam.gserviceaccount.com"))
            .unwrap();
    foreign["client_email"] = json!(SERVICE_ACCOUNT);
    foreign["private_key_id"] = json!("0000");
    std::fs::write(&other, foreign.to_string()).unwrap();
    let s = GcpSection {
        key_file: Some(other),
        token_endpoint: Some(fake.token_endpoint()),
        ..s
    };
    let (sh, mut rx) = shared(&s);
    let e = driver(&sh, &format!("ip = '{IP1}'"))
        .check(&ctx("node-1", 1, T))
        .await
        .unwrap_err();
    assert!(!e.is_api_error(), "{e:?}");
    assert!(e.to_string().contains("invalid_grant"), "{e}");
    assert!(ids(&mut rx).contains(&"BTN-8104".to_string()));
    fake.assert_no_violations();
}

#[tokio::test]
async fn application_default_credentials_of_a_workstation() {
    let Some(fake) = GcpFake::start() else { return };
    fake.seed(
        json!({"users": [{"client_id": "cid.apps.googleusercontent.com",
        "client_secret": "csecret", "refresh_token": "1//refresh", "account": "ops@example.com"}]}),
    );
    let dir = tempfile::tempdir().unwrap();
    let gcloud = dir.path().join("gcloud");
    std::fs::create_dir_all(&gcloud).unwrap();
    // gcloud's well-known file: a user's refresh token.
    std::fs::write(
        gcloud.join("application_default_credentials.json"),
        json!({"type": "authorized_user", "client_id": "cid.apps.googleusercontent.com",
               "client_secret": "csecret", "refresh_token": "1//refresh",
               "quota_project_id": PROJECT})
        .to_string(),
    )
    .unwrap();
    let s = GcpSection {
        credentials: GcpCredentials::ApplicationDefault,
        token_endpoint: Some(fake.token_endpoint()),
        metadata_endpoint: Some("http://127.0.0.1:9".into()),
        ..settings(&fake, "node-1")
    };
    let env = AdcEnv {
        metadata_host: None,
        credentials_file: None,
        gcloud_dir: Some(gcloud.clone()),
    };
    let client = GcpClient::with_env(&s, &env).unwrap();
    assert!(
        client.identity().contains("user login"),
        "{}",
        client.identity()
    );
    let sh = Arc::new(GcpShared::new(&s).with_client(client));
    driver(&sh, &format!("ip = '{IP1}'"))
        .activate(&ctx("node-1", 1, T))
        .await
        .unwrap();
    assert_eq!(fake.statuses("oauth.token"), [200]);
    // GOOGLE_APPLICATION_CREDENTIALS naming a service-account key wins over gcloud's.
    let key = dir.path().join("sa.json");
    std::fs::write(&key, fake.service_account_key(SERVICE_ACCOUNT)).unwrap();
    let env = AdcEnv {
        metadata_host: None,
        credentials_file: Some(key),
        gcloud_dir: Some(gcloud),
    };
    let client = GcpClient::with_env(&s, &env).unwrap();
    assert!(
        client.identity().contains(SERVICE_ACCOUNT),
        "{}",
        client.identity()
    );
    let sh = Arc::new(GcpShared::new(&s).with_client(client));
    assert_eq!(
        driver(&sh, &format!("ip = '{IP1}'"))
            .check(&ctx("node-1", 1, T))
            .await
            .unwrap(),
        CheckOutcome::Active
    );
    // A revoked refresh token: a credentials failure.
    let revoked = dir.path().join("revoked.json");
    std::fs::write(
        &revoked,
        json!({"type": "authorized_user", "client_id": "cid.apps.googleusercontent.com",
               "client_secret": "csecret", "refresh_token": "1//gone"})
        .to_string(),
    )
    .unwrap();
    let env = AdcEnv {
        metadata_host: None,
        credentials_file: Some(revoked),
        gcloud_dir: None,
    };
    let client = GcpClient::with_env(&s, &env).unwrap();
    let e = client
        .send(
            &GcpRequest::dns(
                "dns.managedZones.get",
                reqwest::Method::GET,
                &format!("projects/{PROJECT}/managedZones/{PUBLIC_ZONE}"),
            ),
            T,
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), FailureKind::Credentials, "{e}");
    assert_eq!(e.reason(), Some("invalid_grant"));
    fake.assert_no_violations();
}

#[tokio::test]
async fn refusals_are_classified_and_raise_their_events() {
    let Some(fake) = GcpFake::start() else { return };
    // A VM whose access scopes do not include Cloud DNS: 403 insufficientPermissions.
    fake.seed(
        json!({"instances": [{"name": "node-9", "zone": "us-central1-c",
        "networkIP": "10.128.0.9",
        "scopes": ["https://www.googleapis.com/auth/devstorage.read_only"]}]}),
    );
    let (sh, mut rx) = shared(&settings(&fake, "node-9"));
    let e = driver(&sh, "")
        .activate(&ctx("node-9", 1, T))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ProviderError::Rejected { status: Some(403), code, .. } if code == "insufficientPermissions"),
        "{e:?}"
    );
    assert!(ids(&mut rx).contains(&"BTN-8103".to_string()));
    // A managed zone that does not exist: not found.
    let (sh, mut rx) = shared(&settings(&fake, "node-1"));
    let d = GcpDnsDriver::from_params(&params("no-such-zone", NAME, ""), sh.clone()).unwrap();
    let e = d.activate(&ctx("node-1", 1, T)).await.unwrap_err();
    assert!(
        matches!(
            &e,
            ProviderError::Rejected {
                status: Some(404),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!e.is_api_error());
    assert!(ids(&mut rx).contains(&"BTN-8102".to_string()));
    // A name outside the zone: Cloud DNS's 400, a rejected request.
    let d = GcpDnsDriver::from_params(
        &params(PUBLIC_ZONE, "db.other.org.", &format!("ip = '{IP1}'")),
        sh.clone(),
    )
    .unwrap();
    let e = d.activate(&ctx("node-1", 1, T)).await.unwrap_err();
    assert!(
        matches!(
            &e,
            ProviderError::Rejected {
                status: Some(400),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(ids(&mut rx).contains(&"BTN-8105".to_string()));
    fake.assert_no_violations();
}

// ---------------------------------------------------------------------------------------
// gcp-vip (route pattern)
// ---------------------------------------------------------------------------------------

const VIP: &str = "10.1.0.20";
const ROUTE: &str = "baton-10-1-0-20";

fn vip(sh: &Arc<GcpShared>, extra: &str) -> GcpVipDriver {
    GcpVipDriver::from_params(
        &format!("ip = '{VIP}'\n{extra}")
            .parse::<toml::Table>()
            .unwrap(),
        sh.clone(),
    )
    .unwrap()
}

/// The route as the fake holds it: (next hop instance name, description).
fn route(fake: &GcpFake) -> Option<(String, String)> {
    let state = fake.control("GET", "/_fake/state", None);
    let r = &state["projects"][PROJECT]["routes"][ROUTE];
    if r.is_null() {
        return None;
    }
    let hop = r["nextHopInstance"]
        .as_str()
        .or(r["nextHopIp"].as_str())
        .unwrap_or("")
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_string();
    Some((hop, r["description"].as_str().unwrap_or("").to_string()))
}

fn route_mark(epoch: u64, server: &str) -> String {
    format!("baton epoch={epoch} server={server} group=web")
}

fn route_writes(fake: &GcpFake) -> usize {
    fake.statuses("compute.routes.insert").len() + fake.statuses("compute.routes.delete").len()
}

#[tokio::test]
async fn a_vip_route_follows_a_failover_to_each_vm() {
    let Some(fake) = GcpFake::start() else { return };
    // Instance and zone from each VM's metadata server.
    let (sh1, mut rx) = shared(&settings(&fake, "node-1"));
    let (sh2, _rx2) = shared(&settings(&fake, "node-2"));
    let (v1, v2) = (vip(&sh1, ""), vip(&sh2, ""));
    v1.activate(&ctx("node-1", 1, T)).await.unwrap();
    assert_eq!(
        route(&fake),
        Some(("node-1".into(), route_mark(1, "node-1")))
    );
    assert_eq!(
        v1.check(&ctx("node-1", 1, T)).await.unwrap(),
        CheckOutcome::Active
    );
    // Idempotent.
    let before = route_writes(&fake);
    v1.activate(&ctx("node-1", 1, T)).await.unwrap();
    assert_eq!(route_writes(&fake), before);
    let probe = GcpRegistry::from_shared(sh1.clone())
        .build_probe(
            "gcp-vip",
            &format!("ip = '{VIP}'").parse::<toml::Table>().unwrap(),
        )
        .unwrap();
    let ok = probe.probe(&probe_ctx("node-1")).await.unwrap();
    assert_eq!(
        ok.detail.as_deref(),
        Some("route baton-10-1-0-20 (10.1.0.20/32) -> instance node-1")
    );
    // Failover: node-2 replaces the route (delete, insert, each operation followed).
    v2.activate(&ctx("node-2", 2, T)).await.unwrap();
    assert_eq!(
        route(&fake),
        Some(("node-2".into(), route_mark(2, "node-2")))
    );
    assert_eq!(fake.statuses("compute.routes.delete"), [200]);
    assert_eq!(fake.statuses("compute.routes.insert"), [200, 200]);
    assert!(!fake.statuses("compute.globalOperations.wait").is_empty());
    // The old owner: inactive, its monitor says where the route went, its late
    // deactivation leaves the new owner's route.
    assert_eq!(
        v1.check(&ctx("node-1", 1, T)).await.unwrap(),
        CheckOutcome::Inactive
    );
    let e = probe.probe(&probe_ctx("node-1")).await.unwrap_err();
    assert!(e.to_string().contains("expected instance node-1"), "{e}");
    v1.deactivate(&ctx("node-1", 1, T)).await.unwrap();
    assert_eq!(
        route(&fake),
        Some(("node-2".into(), route_mark(2, "node-2")))
    );
    v2.deactivate(&ctx("node-2", 2, T)).await.unwrap();
    assert_eq!(route(&fake), None);
    let seen = ids(&mut rx);
    assert!(seen.contains(&"BTN-8111".to_string()), "{seen:?}");
    assert!(seen.contains(&"BTN-8110".to_string()), "{seen:?}");
    fake.assert_no_violations();
}

#[tokio::test]
async fn a_vip_route_of_a_newer_epoch_is_never_replaced() {
    let Some(fake) = GcpFake::start() else { return };
    let (sh1, mut rx) = shared(&settings(&fake, "node-1"));
    let (sh2, _rx2) = shared(&settings(&fake, "node-2"));
    vip(&sh2, "").activate(&ctx("node-2", 5, T)).await.unwrap();
    let before = route_writes(&fake);
    let e = vip(&sh1, "")
        .activate(&ctx("node-1", 4, T))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ProviderError::Fenced { epoch: 5, ours: 4, holder, .. } if holder == "node-2"),
        "{e:?}"
    );
    assert_eq!(route_writes(&fake), before, "nothing deleted or inserted");
    assert_eq!(
        route(&fake),
        Some(("node-2".into(), route_mark(5, "node-2")))
    );
    assert!(ids(&mut rx).contains(&"BTN-8106".to_string()));
    fake.assert_no_violations();
}

#[tokio::test]
async fn a_vip_route_changed_by_hand_is_reported_and_repaired() {
    let Some(fake) = GcpFake::start() else { return };
    let (sh, mut rx) = shared(&settings(&fake, "node-1"));
    // Instance and zone given in the configuration this time.
    let v = vip(&sh, "instance = 'node-1'\nzone = 'us-central1-a'");
    v.activate(&ctx("node-1", 3, T)).await.unwrap();
    fake.mutate(json!({"type": "route", "name": ROUTE, "delete": true}));
    fake.mutate(
        json!({"type": "route", "name": ROUTE, "destRange": format!("{VIP}/32"),
                       "nextHopIp": "10.128.0.50"}),
    );
    let probe = GcpRegistry::from_shared(sh.clone())
        .build_probe(
            "gcp-vip",
            &format!("ip = '{VIP}'\ninstance = 'node-1'\nzone = 'us-central1-a'")
                .parse::<toml::Table>()
                .unwrap(),
        )
        .unwrap();
    let e = probe.probe(&probe_ctx("node-1")).await.unwrap_err();
    assert!(matches!(e, ProviderError::Unhealthy(_)), "{e:?}");
    assert!(e.to_string().contains("10.128.0.50"), "{e}");
    assert!(ids(&mut rx).contains(&"BTN-8110".to_string()));
    // The recovery restarts the resource: the route by hand (no mark) is replaced.
    v.activate(&ctx("node-1", 3, T)).await.unwrap();
    assert_eq!(
        route(&fake),
        Some(("node-1".into(), route_mark(3, "node-1")))
    );
    probe.probe(&probe_ctx("node-1")).await.unwrap();
    fake.assert_no_violations();
}

#[tokio::test]
async fn a_vip_route_changed_while_it_is_moved_is_read_again() {
    let Some(fake) = GcpFake::start() else { return };
    let (sh1, mut rx) = shared(&settings(&fake, "node-1"));
    // Someone creates the route just after we read it as absent: our insert is refused
    // (409); read again, replace it.
    fake.second_writer(
        "GET",
        "/global/routes/baton-10-1-0-20$",
        json!({"type": "route", "name": ROUTE, "destRange": format!("{VIP}/32"),
               "nextHopIp": "10.128.0.50"}),
    );
    vip(&sh1, "").activate(&ctx("node-1", 1, T)).await.unwrap();
    assert_eq!(
        route(&fake),
        Some(("node-1".into(), route_mark(1, "node-1")))
    );
    assert_eq!(fake.statuses("compute.routes.insert"), [409, 200]);
    // Someone deletes it just after we read it: our delete finds nothing (404); read
    // again, insert.
    fake.second_writer(
        "GET",
        "/global/routes/baton-10-1-0-20$",
        json!({"type": "route", "name": ROUTE, "delete": true}),
    );
    let (sh2, _rx2) = shared(&settings(&fake, "node-2"));
    vip(&sh2, "").activate(&ctx("node-2", 2, T)).await.unwrap();
    assert_eq!(
        route(&fake),
        Some(("node-2".into(), route_mark(2, "node-2")))
    );
    assert_eq!(fake.statuses("compute.routes.delete"), [200, 404]);
    let seen = ids(&mut rx);
    assert!(seen.contains(&"BTN-8112".to_string()), "{seen:?}");
    fake.assert_no_violations();
}

#[tokio::test]
async fn vip_operations_are_followed_and_api_errors_retried_within_the_deadline() {
    let Some(fake) = GcpFake::start() else { return };
    fake.settings(json!({"operation_delay_ms": 800}));
    let (sh1, _rx) = shared(&settings(&fake, "node-1"));
    let (sh2, _rx2) = shared(&settings(&fake, "node-2"));
    vip(&sh1, "").activate(&ctx("node-1", 1, T)).await.unwrap();
    fake.fault(json!({"method": "GET", "path": "/global/routes/", "status": 503, "count": 2}));
    fake.fault(json!({"path": "/global/operations/", "status": 429, "count": 1}));
    let t0 = Instant::now();
    vip(&sh2, "").activate(&ctx("node-2", 2, T)).await.unwrap();
    // A delete and an insert, each DONE after 800 ms.
    assert!(
        t0.elapsed() >= Duration::from_millis(1600),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(
        route(&fake),
        Some(("node-2".into(), route_mark(2, "node-2")))
    );
    assert_eq!(fake.statuses("fault").len(), 3);
    // An operation outliving the action's timeout: a timeout, not a success.
    let e = vip(&sh1, "")
        .activate(&ctx("node-1", 3, Duration::from_millis(1000)))
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::Timeout(_)), "{e:?}");
    // An operation that fails inside (Compute's error in the operation): refused.
    fake.fault(json!({"method": "POST", "path": "/global/routes$", "count": 1,
        "operation_error": {"code": "INVALID_USAGE", "message": "Next hop instance must have IP forwarding enabled.",
                            "httpStatus": 400}}));
    let e = vip(&sh1, "")
        .activate(&ctx("node-1", 4, T))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ProviderError::Rejected { code, .. } if code == "INVALID_USAGE"),
        "{e:?}"
    );
    assert!(e.to_string().contains("IP forwarding"), "{e}");
    fake.assert_no_violations();
}

// ---------------------------------------------------------------------------------------
// gcp-vip (alias-IP pattern)
// ---------------------------------------------------------------------------------------

const ALIAS: &str = "10.128.0.100";

/// The alias ranges of an instance's nic0 as the fake holds them.
fn aliases(fake: &GcpFake, key: &str) -> Vec<String> {
    let state = fake.control("GET", "/_fake/state", None);
    state["projects"][PROJECT]["instances"][key]["networkInterfaces"][0]["aliasIpRanges"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["ipCidrRange"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn alias_vip(sh: &Arc<GcpShared>) -> GcpVipDriver {
    GcpVipDriver::from_params(
        &format!("ip = '{ALIAS}'\nmode = 'alias'")
            .parse::<toml::Table>()
            .unwrap(),
        sh.clone(),
    )
    .unwrap()
}

#[tokio::test]
async fn an_alias_ip_follows_a_failover_under_the_interfaces_fingerprints() {
    let Some(fake) = GcpFake::start() else { return };
    // node-1 already has another alias range, which stays.
    fake.mutate(
        json!({"type": "interface", "instance": "node-1", "aliasIpRanges": ["10.128.0.64/30"]}),
    );
    let (sh1, mut rx) = shared(&settings(&fake, "node-1"));
    let (sh2, _rx2) = shared(&settings(&fake, "node-2"));
    let (a1, a2) = (alias_vip(&sh1), alias_vip(&sh2));
    a1.activate(&ctx("node-1", 1, T)).await.unwrap();
    let range = format!("{ALIAS}/32");
    assert_eq!(
        aliases(&fake, "us-central1-a/node-1"),
        ["10.128.0.64/30".to_string(), range.clone()]
    );
    assert_eq!(
        a1.check(&ctx("node-1", 1, T)).await.unwrap(),
        CheckOutcome::Active
    );
    // Idempotent.
    a1.activate(&ctx("node-1", 1, T)).await.unwrap();
    assert_eq!(
        fake.statuses("compute.instances.updateNetworkInterface"),
        [200]
    );
    // Failover: taken from node-1 (its other range kept), then given to node-2.
    a2.activate(&ctx("node-2", 2, T)).await.unwrap();
    assert_eq!(aliases(&fake, "us-central1-a/node-1"), ["10.128.0.64/30"]);
    assert_eq!(
        aliases(&fake, "us-central1-b/node-2"),
        std::slice::from_ref(&range)
    );
    assert!(!fake.statuses("compute.zoneOperations.wait").is_empty());
    assert_eq!(
        a1.check(&ctx("node-1", 1, T)).await.unwrap(),
        CheckOutcome::Inactive
    );
    let probe = GcpRegistry::from_shared(sh1.clone())
        .build_probe(
            "gcp-vip",
            &format!("ip = '{ALIAS}'\nmode = 'alias'")
                .parse::<toml::Table>()
                .unwrap(),
        )
        .unwrap();
    let e = probe.probe(&probe_ctx("node-1")).await.unwrap_err();
    assert!(
        e.to_string().contains("is not on nic0 of instance node-1"),
        "{e}"
    );
    // The old owner's late deactivation changes nothing; the owner's removes it.
    a1.deactivate(&ctx("node-1", 1, T)).await.unwrap();
    assert_eq!(aliases(&fake, "us-central1-b/node-2"), [range]);
    a2.deactivate(&ctx("node-2", 2, T)).await.unwrap();
    assert!(aliases(&fake, "us-central1-b/node-2").is_empty());
    let seen = ids(&mut rx);
    assert!(seen.contains(&"BTN-8111".to_string()), "{seen:?}");
    assert!(seen.contains(&"BTN-8110".to_string()), "{seen:?}");
    fake.assert_no_violations();
}

#[tokio::test]
async fn an_interface_changed_meanwhile_is_read_again_not_overwritten() {
    let Some(fake) = GcpFake::start() else { return };
    let (sh1, _rx1) = shared(&settings(&fake, "node-1"));
    let (sh2, mut rx) = shared(&settings(&fake, "node-2"));
    alias_vip(&sh1)
        .activate(&ctx("node-1", 1, T))
        .await
        .unwrap();
    // Someone changes node-1's interface (a new alias range) just after we listed the
    // instances: our update under the old fingerprint is refused (412), nothing of
    // theirs is lost, and after reading again the move succeeds.
    fake.second_writer(
        "GET",
        "/aggregated/instances$",
        json!({"type": "interface", "instance": "node-1",
               "aliasIpRanges": [format!("{ALIAS}/32"), "10.128.0.64/30"]}),
    );
    alias_vip(&sh2)
        .activate(&ctx("node-2", 2, T))
        .await
        .unwrap();
    assert_eq!(
        fake.statuses("compute.instances.updateNetworkInterface"),
        [200, 412, 200, 200]
    );
    assert_eq!(aliases(&fake, "us-central1-a/node-1"), ["10.128.0.64/30"]);
    assert_eq!(
        aliases(&fake, "us-central1-b/node-2"),
        [format!("{ALIAS}/32")]
    );
    assert!(ids(&mut rx).contains(&"BTN-8112".to_string()));
    // A fingerprint that changes after the request was accepted: the operation ends
    // with CONDITION_NOT_MET, read again.
    fake.second_writer(
        "PATCH",
        "/updateNetworkInterface$",
        json!({"type": "fingerprint", "instance": "node-2"}),
    );
    let (sh3, mut rx3) = shared(&settings(&fake, "node-1"));
    alias_vip(&sh3)
        .activate(&ctx("node-1", 3, T))
        .await
        .unwrap();
    assert_eq!(
        aliases(&fake, "us-central1-a/node-1"),
        ["10.128.0.64/30".to_string(), format!("{ALIAS}/32")]
    );
    assert!(aliases(&fake, "us-central1-b/node-2").is_empty());
    let seen = ids(&mut rx3);
    assert!(seen.contains(&"BTN-8112".to_string()), "{seen:?}");
    fake.assert_no_violations();
}

// ---------------------------------------------------------------------------------------
// gcp-lb-probe
// ---------------------------------------------------------------------------------------

/// A port free on 127.0.0.1 and 127.0.0.2.
fn free_port() -> u16 {
    baton_tests::free_port(&["127.0.0.1", "127.0.0.2"])
}

fn answers(addr: &str) -> bool {
    std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(200)).is_ok()
}

fn lb_driver(sh: &Arc<GcpShared>, keys: &str) -> GcpLbProbeDriver {
    GcpLbProbeDriver::from_params(&keys.parse::<toml::Table>().unwrap(), sh.clone()).unwrap()
}

#[tokio::test]
async fn exactly_one_server_answers_the_health_check() {
    // No API is called: no fake needed. Two servers on one port, two addresses.
    let port = free_port();
    let sh = Arc::new(GcpShared::new(&GcpSection::default()));
    let d1 = lb_driver(&sh, &format!("port = {port}\naddress = '127.0.0.1'"));
    let d2 = lb_driver(&sh, &format!("port = {port}\naddress = '127.0.0.2'"));
    let (a1, a2) = (format!("127.0.0.1:{port}"), format!("127.0.0.2:{port}"));
    // A prober every 50 ms, as the load balancer's health checker would.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = {
        let (stop, a1, a2) = (stop.clone(), a1.clone(), a2.clone());
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                seen.push((answers(&a1), answers(&a2)));
                std::thread::sleep(Duration::from_millis(50));
            }
            seen
        })
    };
    for _ in 0..3 {
        d1.activate(&ctx("node-1", 1, T)).await.unwrap();
        assert_eq!(
            d1.check(&ctx("node-1", 1, T)).await.unwrap(),
            CheckOutcome::Active
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Stop first: the port is closed when deactivation returns.
        d1.deactivate(&ctx("node-1", 1, T)).await.unwrap();
        assert!(!answers(&a1));
        assert_eq!(
            d1.check(&ctx("node-1", 1, T)).await.unwrap(),
            CheckOutcome::Inactive
        );
        d2.activate(&ctx("node-2", 2, T)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        d2.deactivate(&ctx("node-2", 2, T)).await.unwrap();
        assert!(!answers(&a2));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = prober.join().unwrap();
    assert!(
        seen.iter().all(|(x, y)| !(*x && *y)),
        "both answered: {seen:?}"
    );
    assert!(
        seen.iter().any(|(x, _)| *x) && seen.iter().any(|(_, y)| *y),
        "{seen:?}"
    );
}

#[tokio::test]
async fn the_probe_port_answers_http_and_reports_a_port_in_use() {
    let port = free_port();
    let (sink, mut rx) = EventSink::channel(16);
    let sh = Arc::new(GcpShared::new(&GcpSection::default()).with_events(sink));
    let d = lb_driver(
        &sh,
        &format!("port = {port}\naddress = '127.0.0.1'\nprotocol = 'http'"),
    );
    d.activate(&ctx("node-1", 1, T)).await.unwrap();
    // Idempotent.
    d.activate(&ctx("node-1", 1, T)).await.unwrap();
    let r = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "active\n");
    // Another listener on the same port: refused, with its event.
    let other = lb_driver(&sh, &format!("port = {port}\naddress = '127.0.0.1'"));
    let e = other.activate(&ctx("node-1", 1, T)).await.unwrap_err();
    assert!(e.to_string().contains("cannot listen"), "{e}");
    assert!(ids(&mut rx).contains(&"BTN-8114".to_string()));
    d.deactivate(&ctx("node-1", 1, T)).await.unwrap();
    assert!(reqwest::get(format!("http://127.0.0.1:{port}/"))
        .await
        .is_err());
}

fn lb_monitor(sh: &Arc<GcpShared>, keys: &str) -> Box<dyn baton_providers::Probe> {
    GcpRegistry::from_shared(sh.clone())
        .build_probe("gcp-lb-probe", &keys.parse::<toml::Table>().unwrap())
        .unwrap()
}

#[tokio::test]
async fn the_lb_probe_monitor_checks_the_backend_service_and_its_health_check() {
    let Some(fake) = GcpFake::start() else { return };
    // The default world: regional backend service baton-ilb, TCP health check baton-hc on
    // port 7080; the region from [gcp].
    let s = GcpSection {
        region: Some("us-central1".into()),
        ..settings(&fake, "node-1")
    };
    let (sh, mut rx) = shared(&s);
    let ok = lb_monitor(&sh, "port = 7080\nbackend_service = 'baton-ilb'")
        .probe(&probe_ctx("node-1"))
        .await
        .unwrap();
    assert_eq!(
        ok.detail.as_deref(),
        Some("backend service baton-ilb uses health check baton-hc (TCP port 7080)")
    );
    // Another port, another protocol, another health check named: the load balancer
    // would not follow Baton.
    for keys in [
        "port = 8080\nbackend_service = 'baton-ilb'",
        "port = 7080\nprotocol = 'http'\nbackend_service = 'baton-ilb'",
        "port = 7080\nbackend_service = 'baton-ilb'\nhealth_check = 'other-hc'",
    ] {
        let e = lb_monitor(&sh, keys)
            .probe(&probe_ctx("node-1"))
            .await
            .unwrap_err();
        assert!(matches!(e, ProviderError::Unhealthy(_)), "{keys}: {e:?}");
        assert!(e.to_string().contains("baton-hc"), "{e}");
    }
    assert!(ids(&mut rx).contains(&"BTN-8113".to_string()));
    // A backend service that does not exist: a refusal, not an API error.
    let e = lb_monitor(&sh, "port = 7080\nbackend_service = 'nope'")
        .probe(&probe_ctx("node-1"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            ProviderError::Rejected {
                status: Some(404),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(ids(&mut rx).contains(&"BTN-8102".to_string()));
    // A global backend service with an HTTP health check.
    fake.seed(json!({
        "healthChecks": [{"name": "web-hc", "type": "HTTP", "port": 8081, "requestPath": "/healthz"}],
        "backendServices": [{"name": "web-ilb", "healthChecks": ["web-hc"], "backends": []}]
    }));
    let (global, _rx) = shared(&settings(&fake, "node-1"));
    lb_monitor(
        &global,
        "port = 8081\nprotocol = 'http'\nbackend_service = 'web-ilb'",
    )
    .probe(&probe_ctx("node-1"))
    .await
    .unwrap();
    // The API down: an API error for on_api_error.
    fake.fault(json!({"path": "/backendServices/", "status": 503, "count": -1}));
    let mut pc = probe_ctx("node-1");
    pc.timeout = Duration::from_secs(2);
    let e = lb_monitor(&sh, "port = 7080\nbackend_service = 'baton-ilb'")
        .probe(&pc)
        .await
        .unwrap_err();
    assert!(e.is_api_error(), "{e:?}");
    fake.clear_faults();
    fake.assert_no_violations();
}

// ---------------------------------------------------------------------------------------
// gcp-maintenance
// ---------------------------------------------------------------------------------------

fn maintenance_monitor(sh: &Arc<GcpShared>, keys: &str) -> Box<dyn baton_providers::Probe> {
    GcpRegistry::from_shared(sh.clone())
        .build_probe("gcp-maintenance", &keys.parse::<toml::Table>().unwrap())
        .unwrap()
}

#[tokio::test]
async fn a_maintenance_event_wakes_the_hanging_poll_and_fails_the_monitor() {
    let Some(fake) = GcpFake::start() else { return };
    let (sh, mut rx) = shared(&settings(&fake, "node-1"));
    let m = maintenance_monitor(&sh, "");
    let mut pc = probe_ctx("node-1");
    pc.timeout = Duration::from_secs(6);
    // The first poll reads the value; the next ones wait (3 s here) for a change.
    let ok = m.probe(&pc).await.unwrap();
    assert_eq!(ok.detail.as_deref(), Some("maintenance-event NONE"));
    let t0 = Instant::now();
    m.probe(&pc).await.unwrap();
    assert!(t0.elapsed() >= Duration::from_secs(3), "{:?}", t0.elapsed());
    // An event announced while a poll hangs: it answers at once.
    fake.control(
        "POST",
        "/_fake/maintenance",
        Some(
            json!({"instance": "node-1", "maintenanceEvent": "TERMINATE_ON_HOST_MAINTENANCE",
                    "after_ms": 500}),
        ),
    );
    let t0 = Instant::now();
    let e = m.probe(&pc).await.unwrap_err();
    assert!(
        t0.elapsed() < Duration::from_millis(2500),
        "{:?}",
        t0.elapsed()
    );
    assert!(matches!(e, ProviderError::Unhealthy(_)), "{e:?}");
    assert!(
        e.to_string().contains("TERMINATE_ON_HOST_MAINTENANCE"),
        "{e}"
    );
    assert!(ids(&mut rx).contains(&"BTN-8115".to_string()));
    // Another VM's metadata server knows nothing of it.
    let (other, _rx) = shared(&settings(&fake, "node-2"));
    maintenance_monitor(&other, "").probe(&pc).await.unwrap();
    // Over: healthy again.
    fake.control(
        "POST",
        "/_fake/maintenance",
        Some(json!({"instance": "node-1", "maintenanceEvent": "NONE"})),
    );
    m.probe(&pc).await.unwrap();
    // A live migration: moves the group unless told to ignore it.
    fake.control(
        "POST",
        "/_fake/maintenance",
        Some(json!({"instance": "node-1", "maintenanceEvent": "MIGRATE_ON_HOST_MAINTENANCE"})),
    );
    assert!(m.probe(&pc).await.is_err());
    maintenance_monitor(&sh, "migrate = 'ignore'")
        .probe(&pc)
        .await
        .unwrap();
    fake.assert_no_violations();
}

#[tokio::test]
async fn a_spot_preemption_fails_the_monitor_and_no_metadata_server_is_an_api_error() {
    let Some(fake) = GcpFake::start() else { return };
    fake.seed(
        json!({"instances": [{"name": "spot-1", "zone": "us-central1-c",
        "networkIP": "10.128.0.9", "spot": true}]}),
    );
    let (sh, _rx) = shared(&settings(&fake, "spot-1"));
    let m = maintenance_monitor(&sh, "");
    let mut pc = probe_ctx("spot-1");
    pc.timeout = Duration::from_secs(2);
    m.probe(&pc).await.unwrap();
    fake.control(
        "POST",
        "/_fake/maintenance",
        Some(json!({"instance": "spot-1", "preempted": true})),
    );
    let e = m.probe(&pc).await.unwrap_err();
    assert!(e.to_string().contains("preempted"), "{e}");
    // Not on Google Cloud (no metadata server): an API error, for on_api_error.
    let (none, _rx) = shared(&GcpSection {
        metadata_endpoint: Some("http://127.0.0.1:9".into()),
        ..settings(&fake, "node-1")
    });
    let e = maintenance_monitor(&none, "").probe(&pc).await.unwrap_err();
    assert!(e.is_api_error(), "{e:?}");
    fake.assert_no_violations();
}

// ---------------------------------------------------------------------------------------
// baton cloud check / iam-policy
// ---------------------------------------------------------------------------------------

fn preflight_config(fake: &GcpFake, kinds: &str) -> baton_core::config::Config {
    let text = format!(
        "[cluster]\nname = \"orders\"\nkey_file = \"k\"\n\n\
         [[server]]\nname = \"node-1\"\ninterconnects = [\"10.0.0.1\"]\napi = \"10.0.0.1:7420\"\n\
         [[server]]\nname = \"node-2\"\ninterconnects = [\"10.0.0.2\"]\napi = \"10.0.0.2:7420\"\n\
         [[server]]\nname = \"node-3\"\ninterconnects = [\"10.0.0.3\"]\napi = \"10.0.0.3:7420\"\n\n\
         [gcp]\nregion = \"us-central1\"\ndns_endpoint = \"{e}\"\ncompute_endpoint = \"{e}\"\n\
         metadata_endpoint = \"{m}\"\ncall_timeout = \"2s\"\n\n\
         [[group]]\nname = \"web\"\nservers = [\"node-1\", \"node-2\"]\n\n{kinds}",
        e = fake.endpoint,
        m = fake.vm_metadata("node-1"),
    );
    match baton_core::config::load_str("pf.toml", &text, &baton_core::config::AnyKind) {
        Ok(l) => l.config,
        Err(e) => panic!("{e}: {:?}", e.diagnostics),
    }
}

#[tokio::test]
async fn cloud_check_finds_what_exists_and_what_does_not() {
    use baton_providers::cloud::Status;
    use baton_providers::gcp::preflight;
    let Some(fake) = GcpFake::start() else { return };
    let cfg = preflight_config(
        &fake,
        "[[group.resource]]\nkind = \"gcp-dns\"\nname = \"dns1\"\nzone = \"public-zone\"\n\
         record_name = \"db.example.com.\"\n\n\
         [[group.resource]]\nkind = \"gcp-dns\"\nname = \"dns2\"\nzone = \"public-zone\"\n\
         record_name = \"db.other.org.\"\n\n\
         [[group.resource]]\nkind = \"gcp-dns\"\nname = \"dns3\"\nzone = \"no-zone\"\n\
         record_name = \"db.example.com.\"\n\n\
         [[group.resource]]\nkind = \"gcp-vip\"\nname = \"vip1\"\nip = \"10.1.0.20\"\n\n\
         [[group.resource]]\nkind = \"gcp-vip\"\nname = \"vip2\"\nip = \"10.128.0.100\"\n\
         mode = \"alias\"\nnic = \"nic1\"\n\n\
         [[group.resource]]\nkind = \"gcp-lb-probe\"\nname = \"ilb1\"\nport = 7080\n\n\
         [[monitor]]\nkind = \"gcp-lb-probe\"\nname = \"ilbw1\"\nport = 7080\n\
         backend_service = \"baton-ilb\"\n\n\
         [[monitor]]\nkind = \"gcp-lb-probe\"\nname = \"ilbw2\"\nport = 9999\n\
         backend_service = \"baton-ilb\"\n\n\
         [[monitor]]\nkind = \"gcp-maintenance\"\nname = \"maintw1\"\n",
    );
    assert!(preflight::uses_gcp(&cfg));
    let client = GcpClient::new(&cfg.gcp).unwrap();
    let found = preflight::check(&cfg, "node-1", &client, Duration::from_secs(2)).await;
    let status = |subject: &str, check: &str| {
        found
            .iter()
            .find(|f| f.subject == subject && f.check == check)
            .unwrap_or_else(|| panic!("no {subject} {check} in {found:#?}"))
            .status
    };
    assert_eq!(status("resource web/dns1", "managed-zone"), Status::Ok);
    assert_eq!(status("resource web/dns2", "managed-zone"), Status::Fail);
    assert_eq!(status("resource web/dns3", "managed-zone"), Status::Fail);
    // The fake grants everything unless told otherwise: testIamPermissions says so.
    assert_eq!(status("resource web/dns1", "permissions"), Status::Ok);
    // node-1 (from its metadata server) forwards IP; it has no nic1.
    assert_eq!(status("resource web/vip1", "instance"), Status::Ok);
    assert_eq!(status("resource web/vip2", "instance"), Status::Fail);
    assert_eq!(status("resource web/ilb1", "api"), Status::Ok);
    assert_eq!(status("monitor ilbw1", "backend-service"), Status::Ok);
    assert_eq!(status("monitor ilbw2", "backend-service"), Status::Fail);
    assert_eq!(status("monitor maintw1", "metadata-server"), Status::Ok);
    assert_eq!(baton_providers::cloud::worst(&found), Status::Fail);
    // The role: the permissions of the kinds in use, once each.
    let role = preflight::custom_role(&cfg);
    let perms: Vec<&str> = role["includedPermissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for p in [
        "dns.changes.create",
        "compute.routes.create",
        "compute.networks.updatePolicy",
        "compute.instances.updateNetworkInterface",
        "compute.regionBackendServices.get",
    ] {
        assert!(perms.contains(&p), "{p} not in {perms:?}");
    }
    let mut sorted = perms.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(perms, sorted);
    let yaml = preflight::custom_role_yaml(&role);
    assert!(yaml.starts_with("title: \"Baton\"\n"), "{yaml}");
    assert!(yaml.contains("\n- dns.changes.create\n"), "{yaml}");
    // The identity may only read record sets: the check names what is missing, and the
    // role printed above (given to it) is enough.
    fake.control(
        "POST",
        "/_fake/iam",
        Some(serde_json::json!({"principal": "*", "permissions": ["dns.resourceRecordSets.list", "dns.managedZones.get"]})),
    );
    let found = preflight::check(&cfg, "node-1", &client, Duration::from_secs(2)).await;
    let dns1 = found
        .iter()
        .find(|f| f.subject == "resource web/dns1" && f.check == "permissions")
        .unwrap();
    assert_eq!(dns1.status, Status::Fail);
    assert!(
        dns1.detail.contains(
            "not granted: dns.changes.create, dns.changes.get, dns.resourceRecordSets.create"
        ),
        "{}",
        dns1.detail
    );
    let all = perms.iter().map(|p| p.to_string()).collect::<Vec<_>>();
    fake.control(
        "POST",
        "/_fake/iam",
        Some(serde_json::json!({"principal": "*", "permissions": all})),
    );
    let found = preflight::check(&cfg, "node-1", &client, Duration::from_secs(2)).await;
    let dns1 = found
        .iter()
        .find(|f| f.subject == "resource web/dns1" && f.check == "permissions")
        .unwrap();
    assert_eq!(dns1.status, Status::Ok, "{}", dns1.detail);
    // Only what the discovery documents describe was sent (testIamPermissions included).
    fake.assert_no_violations();
}

// ---------------------------------------------------------------------------------------
// bench/gcp.sh
// ---------------------------------------------------------------------------------------

fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Per pattern (Cloud DNS record, route VIP, alias IP): from "activate" to the mutating
/// call arriving at the fake, the activation's total time (with the waits for `done`),
/// API calls per failover (tokens and metadata included), and as the reference the raw
/// latency of the same mutating call sent with a plain HTTP client in the same run. The
/// fake's change and operation delays are set to 0: what is measured is Baton's own
/// work. Run by `bench/gcp.sh` (`BATON_BENCH_ROUNDS` failovers per pattern, default 20).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with bench/gcp.sh"]
async fn bench_failover_per_pattern() {
    let Some(fake) = GcpFake::start() else { return };
    let rounds: u64 = std::env::var("BATON_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    fake.settings(json!({"dns_change_delay_ms": 0, "operation_delay_ms": 0}));
    fake.seed(json!({"instances": [{"name": "node-9", "zone": "us-central1-c", "networkIP": "10.128.0.9"}]}));
    let (sh, _rx) = shared(&settings(&fake, "node-1"));
    let servers = [
        ("node-1", "us-central1-a", IP1),
        ("node-2", "us-central1-b", IP2),
    ];
    let dns: Vec<GcpDnsDriver> = servers
        .iter()
        .map(|(_, _, ip)| driver(&sh, &format!("ip = '{ip}'")))
        .collect();
    let routes: Vec<GcpVipDriver> = servers
        .iter()
        .map(|(n, z, _)| vip(&sh, &format!("instance = '{n}'\nzone = '{z}'")))
        .collect();
    let alias: Vec<GcpVipDriver> = servers
        .iter()
        .map(|(n, z, _)| {
            GcpVipDriver::from_params(
                &format!("ip = '{ALIAS}'\nmode = 'alias'\ninstance = '{n}'\nzone = '{z}'")
                    .parse::<toml::Table>()
                    .unwrap(),
                sh.clone(),
            )
            .unwrap()
        })
        .collect();
    // First activations (token, project) outside the measurement, on node-2: the first
    // round moves everything to node-1.
    dns[1].activate(&ctx("node-2", 1, T)).await.unwrap();
    routes[1].activate(&ctx("node-2", 1, T)).await.unwrap();
    alias[1].activate(&ctx("node-2", 1, T)).await.unwrap();
    let token = fake.control("POST", "/_fake/tokens", Some(json!({"principal": "bench"})))
        ["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let http = reqwest::Client::new();
    let base = format!("{}/", fake.endpoint);
    let mut rows = Vec::new();
    for (pattern, op) in [
        ("dns", "dns.changes.create"),
        ("route", "compute.routes.insert"),
        ("alias", "compute.instances.updateNetworkInterface"),
    ] {
        let (mut visible, mut total, mut calls, mut raw) = (vec![], vec![], vec![], vec![]);
        for i in 0..rounds {
            let epoch = i + 2;
            let who = usize::try_from(epoch % 2).unwrap();
            let c = ctx(servers[who].0, epoch, T);
            fake.control("DELETE", "/_fake/log", None);
            fake.control("DELETE", "/_fake/calls", None);
            let t0 = now_s();
            match pattern {
                "dns" => dns[who].activate(&c).await.unwrap(),
                "route" => routes[who].activate(&c).await.unwrap(),
                _ => alias[who].activate(&c).await.unwrap(),
            }
            let t1 = now_s();
            let log = fake.control("GET", "/_fake/log", None);
            let seen = log
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["op"] == op && e["status"] == 200)
                .filter_map(|e| e["t"].as_f64())
                .fold(f64::NAN, f64::max);
            visible.push((seen - t0) * 1000.0);
            total.push((t1 - t0) * 1000.0);
            let n: u64 = fake
                .control("GET", "/_fake/calls", None)
                .as_object()
                .unwrap()
                .values()
                .filter_map(serde_json::Value::as_u64)
                .sum();
            calls.push(n as f64);
            // Reference: the same mutating call, plain.
            let (method, url, body) = match pattern {
                "dns" => (
                    reqwest::Method::POST,
                    format!("{base}dns/v1/projects/{PROJECT}/managedZones/{PUBLIC_ZONE}/changes"),
                    json!({"additions": [{"name": format!("raw{i}.example.com."), "type": "A",
                                          "ttl": 60, "rrdatas": ["10.9.9.9"]}]}),
                ),
                "route" => (
                    reqwest::Method::POST,
                    format!("{base}compute/v1/projects/{PROJECT}/global/routes"),
                    json!({"name": format!("raw-{i}"), "network": format!("projects/{PROJECT}/global/networks/default"),
                           "destRange": format!("10.2.0.{}/32", i % 250), "priority": 1000,
                           "nextHopInstance": format!("projects/{PROJECT}/zones/us-central1-c/instances/node-9")}),
                ),
                _ => {
                    let state = fake.control("GET", "/_fake/state", None);
                    let fp = state["projects"][PROJECT]["instances"]["us-central1-c/node-9"]
                        ["networkInterfaces"][0]["fingerprint"]
                        .as_str()
                        .unwrap()
                        .to_string();
                    (
                        reqwest::Method::PATCH,
                        format!("{base}compute/v1/projects/{PROJECT}/zones/us-central1-c/instances/node-9/updateNetworkInterface?networkInterface=nic0"),
                        json!({"fingerprint": fp, "aliasIpRanges": [{"ipCidrRange": format!("10.128.1.{}/32", i % 250)}]}),
                    )
                }
            };
            let r0 = now_s();
            let r = http
                .request(method, &url)
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.text().await.unwrap());
            raw.push((now_s() - r0) * 1000.0);
            if pattern == "alias" {
                // Let the raw update's operation land before the next fingerprint read.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        rows.push((pattern, visible, total, calls, raw));
    }
    let med = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    };
    let p90 = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        s[(s.len() * 9 / 10).min(s.len() - 1)]
    };
    println!(
        "\nGoogle Cloud failover per pattern against the fake ({rounds} failovers each; times in ms, median / p90)"
    );
    println!(
        "{:<8} {:>16} {:>16} {:>10} {:>16} {:>14}",
        "pattern", "visible", "activation", "API calls", "raw call", "visible / raw"
    );
    for (p, vis, tot, calls, raw) in &rows {
        println!(
            "{:<8} {:>7.1} / {:>6.1} {:>7.1} / {:>6.1} {:>10.1} {:>7.1} / {:>6.1} {:>14.2}",
            p,
            med(vis),
            p90(vis),
            med(tot),
            p90(tot),
            med(calls),
            med(raw),
            p90(raw),
            med(vis) / med(raw)
        );
    }
    fake.assert_no_violations();
}

/// With exactly the permissions of the printed custom role, every kind does its work
/// (the fake refuses a call whose permission is missing); without one, the call is
/// refused with its permission named.
#[tokio::test]
async fn the_printed_role_is_enough_for_every_kind() {
    use baton_providers::gcp::preflight;
    let Some(fake) = GcpFake::start() else { return };
    let cfg = preflight_config(
        &fake,
        &format!(
            "[[group.resource]]\nkind = \"gcp-dns\"\nname = \"dns1\"\nzone = \"{PUBLIC_ZONE}\"\n\
             record_name = \"{NAME}\"\n\n\
             [[group.resource]]\nkind = \"gcp-vip\"\nname = \"vip1\"\nip = \"{VIP}\"\n\n\
             [[group.resource]]\nkind = \"gcp-vip\"\nname = \"vip2\"\nip = \"{ALIAS}\"\nmode = \"alias\"\n\n\
             [[monitor]]\nkind = \"gcp-lb-probe\"\nname = \"ilbw1\"\nport = 7080\n\
             backend_service = \"baton-ilb\"\n"
        ),
    );
    let role = preflight::custom_role(&cfg);
    let perms: Vec<String> = role["includedPermissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    fake.control(
        "POST",
        "/_fake/iam",
        Some(json!({"principal": "*", "permissions": perms})),
    );
    let (sh1, _rx1) = shared(&settings(&fake, "node-1"));
    let (sh2, _rx2) = shared(&settings(&fake, "node-2"));
    let c1 = ctx("node-1", 1, T);
    let c2 = ctx("node-2", 2, T);
    for (d1, d2) in [
        (
            Box::new(driver(&sh1, "")) as Box<dyn ResourceDriver>,
            Box::new(driver(&sh2, "")) as Box<dyn ResourceDriver>,
        ),
        (Box::new(vip(&sh1, "")), Box::new(vip(&sh2, ""))),
        (Box::new(alias_vip(&sh1)), Box::new(alias_vip(&sh2))),
    ] {
        d1.activate(&c1).await.unwrap();
        assert_eq!(d1.check(&c1).await.unwrap(), CheckOutcome::Active);
        d2.activate(&c2).await.unwrap();
        assert_eq!(d2.check(&c2).await.unwrap(), CheckOutcome::Active);
        d2.deactivate(&c2).await.unwrap();
    }
    GcpRegistry::from_shared(sh1.clone())
        .build_probe(
            "gcp-lb-probe",
            &"port = 7080\nbackend_service = 'baton-ilb'\nregion = 'us-central1'"
                .parse::<toml::Table>()
                .unwrap(),
        )
        .unwrap()
        .probe(&probe_ctx("node-1"))
        .await
        .unwrap();
    // One permission less: the call that needs it is refused, and says which.
    let fewer: Vec<&String> = perms
        .iter()
        .filter(|p| *p != "dns.changes.create")
        .collect();
    fake.control(
        "POST",
        "/_fake/iam",
        Some(json!({"principal": "*", "permissions": fewer})),
    );
    let e = driver(&sh1, "")
        .activate(&ctx("node-1", 3, T))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("dns.changes.create"), "{e}");
    assert!(!e.is_api_error(), "a refusal, not an outage: {e:?}");
    fake.assert_no_violations();
}
