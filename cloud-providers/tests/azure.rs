//! Driver-level tests of the Azure kinds (today `azure-dns`) and of the Azure client
//! against the Azure fake (`tests/azure/fake.py`): real
//! HTTP, Resource Manager record sets with ETags, Entra ID and IMDS tokens, faults; every
//! request and response checked against Microsoft's specs, and each test ends by
//! asserting that nothing failed that check.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Tests measure the real time of real calls: they read the clock directly.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_cloud_client::azure::{ArmRequest, AzureClient, NETWORK_API_VERSION};
use baton_core::config::{AzureIdentity, AzureSection, Dur};
use baton_core::events::Event;
use baton_providers::aws::EventSink;
use baton_providers::azure::dns::AzureDnsDriver;
use baton_providers::azure::vip::AzureVipDriver;
use baton_providers::azure::{AzureRegistry, AzureShared};
use baton_providers::{
    ActionContext, CheckOutcome, Params, ProbeContext, ProviderError, Registry, ResourceDriver,
};
use baton_tests::azure::{AzureFake, RESOURCE_GROUP, SUBSCRIPTION, TENANT};
use serde_json::json;

const ZONE: &str = "example.com";
const PRIVATE_ZONE: &str = "corp.internal";
const APP: &str = "00000000-aaaa-bbbb-cccc-000000000001";
const IP1: &str = "10.0.0.4";
const IP2: &str = "10.0.0.5";

struct Fx {
    fake: AzureFake,
    settings: AzureSection,
    _dir: tempfile::TempDir,
}

/// The fake with both zones, and settings for a service principal with a secret.
fn fixture() -> Option<Fx> {
    let fake = AzureFake::start()?;
    fake.zone(ZONE, false);
    fake.zone(PRIVATE_ZONE, true);
    fake.client_secret(APP, "s3cret");
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let settings = AzureSection {
        subscription_id: Some(SUBSCRIPTION.into()),
        resource_group: Some(RESOURCE_GROUP.into()),
        tenant_id: Some(TENANT.into()),
        endpoint: Some(fake.endpoint.clone()),
        authority: Some(fake.endpoint.clone()),
        imds_endpoint: Some(fake.endpoint.clone()),
        identity: AzureIdentity::ServicePrincipal,
        client_id: Some(APP.into()),
        client_secret_file: Some(secret),
        call_timeout: Dur::from_ms(2_000),
        deadline: Dur::from_ms(20_000),
        ..AzureSection::default()
    };
    Some(Fx {
        fake,
        settings,
        _dir: dir,
    })
}

/// Shared state with an event channel.
fn shared(settings: &AzureSection) -> (Arc<AzureShared>, tokio::sync::mpsc::Receiver<Event>) {
    let (sink, rx) = EventSink::channel(64);
    (Arc::new(AzureShared::new(settings).with_events(sink)), rx)
}

fn params(extra: &str) -> Params {
    format!("zone = '{ZONE}'\nrecord = 'db'\n{extra}")
        .parse::<toml::Table>()
        .unwrap()
}

fn driver(shared: &Arc<AzureShared>, extra: &str) -> AzureDnsDriver {
    AzureDnsDriver::from_params(&params(extra), shared.clone()).unwrap()
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
        timeout: Duration::from_secs(10),
        group_state: None,
    }
}

const T: Duration = Duration::from_secs(10);

fn ids(rx: &mut tokio::sync::mpsc::Receiver<Event>) -> Vec<String> {
    let mut v = Vec::new();
    while let Ok(e) = rx.try_recv() {
        v.push(e.id.to_string());
    }
    v
}

/// The A records and the epoch mark of a set as the fake holds it.
fn held(fake: &AzureFake, zone: &str, private: bool) -> Option<(Vec<String>, String)> {
    let set = fake.record_set(zone, private, "A", "db")?;
    let p = &set["properties"];
    let recs = if private {
        &p["aRecords"]
    } else {
        &p["ARecords"]
    };
    let ips = recs
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| r["ipv4Address"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default();
    let mark = p["metadata"]["baton_epoch"]
        .as_str()
        .unwrap_or("")
        .to_string();
    Some((ips, mark))
}

fn puts(fake: &AzureFake) -> usize {
    fake.requests()
        .iter()
        .filter(|(m, p, _)| m == "PUT" && p.ends_with("/A/db"))
        .count()
}

#[tokio::test]
async fn activate_check_monitor_and_deactivate_in_a_public_zone() {
    let Some(fx) = fixture() else { return };
    let (sh, mut rx) = shared(&fx.settings);
    let d = driver(&sh, &format!("ip = '{IP1}'\nttl = 60"));
    d.activate(&ctx("node-1", 1, T)).await.unwrap();
    assert_eq!(
        held(&fx.fake, ZONE, false),
        Some((vec![IP1.into()], "1 node-1".into()))
    );
    assert_eq!(
        d.check(&ctx("node-1", 1, T)).await.unwrap(),
        CheckOutcome::Active
    );
    // Idempotent: already ours, nothing written.
    let before = puts(&fx.fake);
    d.activate(&ctx("node-1", 1, T)).await.unwrap();
    assert_eq!(puts(&fx.fake), before);
    let reg = AzureRegistry::from_shared(sh.clone());
    let probe = reg
        .build_probe("azure-dns", &params(&format!("ip = '{IP1}'")))
        .unwrap();
    let ok = probe.probe(&probe_ctx("node-1")).await.unwrap();
    assert_eq!(
        ok.detail.as_deref(),
        Some("A record db in zone example.com = 10.0.0.4")
    );
    d.deactivate(&ctx("node-1", 1, T)).await.unwrap();
    assert_eq!(held(&fx.fake, ZONE, false), None);
    assert_eq!(
        d.check(&ctx("node-1", 1, T)).await.unwrap(),
        CheckOutcome::Inactive
    );
    let e = probe.probe(&probe_ctx("node-1")).await.unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
    // Deactivating an absent record is fine.
    d.deactivate(&ctx("node-1", 1, T)).await.unwrap();
    let ids = ids(&mut rx);
    assert!(ids.contains(&"BTN-8008".to_string()), "{ids:?}");
    assert!(ids.contains(&"BTN-8007".to_string()), "{ids:?}");
    fx.fake.assert_no_violations();
}

#[tokio::test]
async fn a_private_zone_follows_a_failover_and_the_old_owner_leaves_it_alone() {
    let Some(fx) = fixture() else { return };
    let (sh, _rx) = shared(&fx.settings);
    let zone = format!("zone = '{PRIVATE_ZONE}'\nprivate = true");
    let mk = |ip: &str| {
        AzureDnsDriver::from_params(
            &format!("{zone}\nrecord = 'db'\nip = '{ip}'")
                .parse::<toml::Table>()
                .unwrap(),
            sh.clone(),
        )
        .unwrap()
    };
    let (d1, d2) = (mk(IP1), mk(IP2));
    d1.activate(&ctx("node-1", 1, T)).await.unwrap();
    assert_eq!(
        held(&fx.fake, PRIVATE_ZONE, true),
        Some((vec![IP1.into()], "1 node-1".into()))
    );
    d2.activate(&ctx("node-2", 2, T)).await.unwrap();
    assert_eq!(
        held(&fx.fake, PRIVATE_ZONE, true),
        Some((vec![IP2.into()], "2 node-2".into()))
    );
    // The old owner's late deactivation does not delete the new owner's record.
    d1.deactivate(&ctx("node-1", 1, T)).await.unwrap();
    assert_eq!(
        held(&fx.fake, PRIVATE_ZONE, true),
        Some((vec![IP2.into()], "2 node-2".into()))
    );
    assert_eq!(
        d1.check(&ctx("node-1", 1, T)).await.unwrap(),
        CheckOutcome::Inactive
    );
    // A CNAME record set in the same zone.
    let c = AzureDnsDriver::from_params(
        &format!("{zone}\nrecord = 'app'\ncname = 'node-2.corp.internal'")
            .parse::<toml::Table>()
            .unwrap(),
        sh.clone(),
    )
    .unwrap();
    c.activate(&ctx("node-2", 2, T)).await.unwrap();
    let set = fx
        .fake
        .record_set(PRIVATE_ZONE, true, "CNAME", "app")
        .unwrap();
    assert_eq!(
        set["properties"]["cnameRecord"]["cname"],
        "node-2.corp.internal"
    );
    assert_eq!(
        c.check(&ctx("node-2", 2, T)).await.unwrap(),
        CheckOutcome::Active
    );
    fx.fake.assert_no_violations();
}

#[tokio::test]
async fn a_common_address_belongs_to_the_server_that_wrote_it() {
    let Some(fx) = fixture() else { return };
    let (sh, _rx) = shared(&fx.settings);
    // One address for every server (a load balancer frontend).
    let d = driver(&sh, "ip = '10.0.0.100'");
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
        held(&fx.fake, ZONE, false),
        Some((vec!["10.0.0.100".into()], "1 node-1".into()))
    );
    let probe = AzureRegistry::from_shared(sh.clone())
        .build_probe("azure-dns", &params("ip = '10.0.0.100'"))
        .unwrap();
    let e = probe.probe(&probe_ctx("node-2")).await.unwrap_err();
    assert!(
        e.to_string().contains("marked for epoch 1 by node-1"),
        "{e}"
    );
    fx.fake.assert_no_violations();
}

#[tokio::test]
async fn a_record_changed_by_hand_is_reported_and_repaired() {
    let Some(fx) = fixture() else { return };
    let (sh, mut rx) = shared(&fx.settings);
    let d = driver(&sh, &format!("ip = '{IP1}'"));
    d.activate(&ctx("node-1", 3, T)).await.unwrap();
    fx.fake.hand_edit(
        ZONE,
        false,
        "A",
        "db",
        json!({"ARecords": [{"ipv4Address": "10.9.9.9"}]}),
    );
    let probe = AzureRegistry::from_shared(sh.clone())
        .build_probe("azure-dns", &params(&format!("ip = '{IP1}'")))
        .unwrap();
    let e = probe.probe(&probe_ctx("node-1")).await.unwrap_err();
    assert!(matches!(e, ProviderError::Unhealthy(_)), "{e:?}");
    assert!(
        e.to_string().contains("holds 10.9.9.9, expected 10.0.0.4"),
        "{e}"
    );
    assert!(ids(&mut rx).contains(&"BTN-8007".to_string()));
    // The monitor's recovery restarts the resource: activation writes it back.
    d.activate(&ctx("node-1", 3, T)).await.unwrap();
    assert_eq!(
        held(&fx.fake, ZONE, false),
        Some((vec![IP1.into()], "3 node-1".into()))
    );
    probe.probe(&probe_ctx("node-1")).await.unwrap();
    fx.fake.assert_no_violations();
}

#[tokio::test]
async fn a_lower_epoch_never_overwrites_a_higher_one() {
    let Some(fx) = fixture() else { return };
    let (sh, mut rx) = shared(&fx.settings);
    driver(&sh, &format!("ip = '{IP2}'"))
        .activate(&ctx("node-2", 5, T))
        .await
        .unwrap();
    let d1 = driver(&sh, &format!("ip = '{IP1}'"));
    let before = puts(&fx.fake);
    let e = d1.activate(&ctx("node-1", 4, T)).await.unwrap_err();
    match &e {
        ProviderError::Fenced {
            epoch,
            ours,
            holder,
            ..
        } => {
            assert_eq!((*epoch, *ours, holder.as_str()), (5, 4, "node-2"));
        }
        other => panic!("expected Fenced, got {other:?}"),
    }
    assert_eq!(puts(&fx.fake), before, "nothing written");
    assert_eq!(
        held(&fx.fake, ZONE, false),
        Some((vec![IP2.into()], "5 node-2".into()))
    );
    assert!(ids(&mut rx).contains(&"BTN-8006".to_string()));
    fx.fake.assert_no_violations();
}

#[tokio::test]
async fn a_second_writer_between_read_and_write_is_read_again() {
    let Some(fx) = fixture() else { return };
    let (sh, mut rx) = shared(&fx.settings);
    // Someone creates the set between our GET (404) and our PUT (If-None-Match: *).
    fx.fake.fault(
        json!({"kind": "second_writer", "method": "PUT", "path": "/A/db$",
        "properties": {"ARecords": [{"ipv4Address": "10.7.7.7"}]}}),
    );
    let d1 = driver(&sh, &format!("ip = '{IP1}'"));
    d1.activate(&ctx("node-1", 1, T)).await.unwrap();
    assert_eq!(
        held(&fx.fake, ZONE, false),
        Some((vec![IP1.into()], "1 node-1".into()))
    );
    let statuses: Vec<u16> = fx
        .fake
        .requests()
        .iter()
        .filter(|(m, p, _)| m == "PUT" && p.ends_with("/A/db"))
        .map(|r| r.2)
        .collect();
    assert_eq!(
        statuses,
        [412, 200],
        "one refused write, then one after reading again"
    );
    assert!(ids(&mut rx).contains(&"BTN-8009".to_string()));
    // A newer owner writes between our GET and PUT: after reading again we are fenced.
    fx.fake.fault(
        json!({"kind": "second_writer", "method": "PUT", "path": "/A/db$",
        "properties": {"ARecords": [{"ipv4Address": IP2}],
                       "metadata": {"baton_epoch": "9 node-3", "baton_group": "web"}}}),
    );
    let d2 = driver(&sh, &format!("ip = '{IP2}'"));
    let e = d2.activate(&ctx("node-2", 2, T)).await.unwrap_err();
    assert!(matches!(e, ProviderError::Fenced { epoch: 9, .. }), "{e:?}");
    assert_eq!(
        held(&fx.fake, ZONE, false),
        Some((vec![IP2.into()], "9 node-3".into()))
    );
    fx.fake.assert_no_violations();
}

#[tokio::test]
async fn throttling_is_retried_within_the_deadline() {
    let Some(fx) = fixture() else { return };
    let (sh, _rx) = shared(&fx.settings);
    fx.fake.fault(
        json!({"method": "GET", "path": "/A/db$", "status": 429, "retry_after": 1, "count": 2}),
    );
    let d = driver(&sh, &format!("ip = '{IP1}'"));
    let t0 = Instant::now();
    d.activate(&ctx("node-1", 1, T)).await.unwrap();
    assert!(
        t0.elapsed() >= Duration::from_secs(2),
        "Retry-After honoured: {:?}",
        t0.elapsed()
    );
    assert_eq!(
        held(&fx.fake, ZONE, false),
        Some((vec![IP1.into()], "1 node-1".into()))
    );
    // A Retry-After longer than the time left ends the call at once, as an API error.
    fx.fake
        .fault(json!({"method": "GET", "path": "/A/db$", "status": 429, "retry_after": 30}));
    let t0 = Instant::now();
    let e = d
        .check(&ctx("node-1", 1, Duration::from_secs(5)))
        .await
        .unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert!(e.is_api_error(), "{e:?}");
    fx.fake.assert_no_violations();
}

#[tokio::test]
async fn server_errors_until_the_deadline_are_an_api_error() {
    let Some(fx) = fixture() else { return };
    let (sh, mut rx) = shared(&fx.settings);
    fx.fake
        .fault(json!({"path": "/A/db$", "status": 503, "count": -1}));
    let d = driver(&sh, &format!("ip = '{IP1}'"));
    let t0 = Instant::now();
    let e = d
        .activate(&ctx("node-1", 1, Duration::from_secs(3)))
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
            assert_eq!(operation, "RecordSets.Get");
            assert_eq!(code.as_deref(), Some("ServiceUnavailable"));
            assert_eq!(*status, Some(503));
        }
        other => panic!("expected an API error, got {other:?}"),
    }
    assert!(e.is_api_error() && e.code() == "api-error");
    // The monitor says the same: an API error, for on_api_error to judge.
    let probe = AzureRegistry::from_shared(sh.clone())
        .build_probe("azure-dns", &params(&format!("ip = '{IP1}'")))
        .unwrap();
    let mut pc = probe_ctx("node-1");
    pc.timeout = Duration::from_secs(2);
    assert!(probe.probe(&pc).await.unwrap_err().is_api_error());
    assert!(ids(&mut rx).contains(&"BTN-8001".to_string()));
    fx.fake.clear_faults();
    fx.fake.assert_no_violations();
}

#[tokio::test]
async fn managed_identity_and_certificate_identities_work() {
    let Some(fx) = fixture() else { return };
    // Managed identity through IMDS (a user-assigned one, named by client id).
    let mi = "00000000-aaaa-bbbb-cccc-000000000002";
    fx.fake.vm("vm-1", IP1, mi);
    let managed = AzureSection {
        identity: AzureIdentity::Managed,
        client_id: Some(mi.into()),
        client_secret_file: None,
        ..fx.settings.clone()
    };
    let (sh, _rx) = shared(&managed);
    driver(&sh, &format!("ip = '{IP1}'"))
        .activate(&ctx("node-1", 1, T))
        .await
        .unwrap();
    assert!(fx
        .fake
        .requests()
        .iter()
        .any(|(m, p, s)| m == "GET" && p == "/metadata/identity/oauth2/token" && *s == 200));
    // Another identity than the VM's: Azure's "Identity not found", a credentials event.
    let other = AzureSection {
        client_id: Some("00000000-aaaa-bbbb-cccc-000000000009".into()),
        ..managed.clone()
    };
    let (sh, mut rx) = shared(&other);
    let e = driver(&sh, &format!("ip = '{IP1}'"))
        .check(&ctx("node-1", 1, T))
        .await
        .unwrap_err();
    assert!(
        !e.is_api_error() && e.to_string().contains("Identity not found"),
        "{e}"
    );
    assert!(ids(&mut rx).contains(&"BTN-8004".to_string()));
    // A service principal with a certificate (RS256 client assertion, x5t).
    let Some((key, cert)) = certificate() else {
        return;
    };
    let app = "00000000-aaaa-bbbb-cccc-000000000003";
    fx.fake.client_certificate(app, &cert);
    let pem = fx._dir.path().join("sp.pem");
    std::fs::write(&pem, format!("{key}{cert}")).unwrap();
    let by_cert = AzureSection {
        client_id: Some(app.into()),
        client_secret_file: None,
        client_certificate_file: Some(pem),
        ..fx.settings.clone()
    };
    let client = AzureClient::new(&by_cert).unwrap();
    let sh = Arc::new(AzureShared::new(&by_cert).with_client(client));
    driver(&sh, &format!("ip = '{IP2}'"))
        .activate(&ctx("node-2", 2, T))
        .await
        .unwrap();
    assert_eq!(
        held(&fx.fake, ZONE, false),
        Some((vec![IP2.into()], "2 node-2".into()))
    );
    fx.fake.assert_no_violations();
}

#[tokio::test]
async fn the_client_follows_a_long_running_operation() {
    let Some(fx) = fixture() else { return };
    fx.fake.control(
        "POST",
        "/_fake/route-tables",
        Some(
            json!({"subscription": SUBSCRIPTION, "resourceGroup": RESOURCE_GROUP,
                    "name": "rt-a", "location": "westeurope", "routes": []}),
        ),
    );
    let client = AzureClient::new(&fx.settings).unwrap();
    let path = format!(
        "/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.Network/routeTables/rt-a/routes/vip"
    );
    let put = ArmRequest::new(
        "Routes.CreateOrUpdate",
        reqwest::Method::PUT,
        &path,
        NETWORK_API_VERSION,
    )
    .json(
        json!({"properties": {"addressPrefix": "10.1.0.20/32", "nextHopType": "VirtualAppliance",
                                    "nextHopIpAddress": IP1}}),
    )
    .if_none_match_any();
    let started = client.send(&put, T).await.unwrap();
    assert!(
        started.header("azure-asyncoperation").is_some(),
        "{:?}",
        started.headers
    );
    assert_eq!(started.body["properties"]["provisioningState"], "Updating");
    client
        .wait_async_operation("Routes.CreateOrUpdate", &started, T)
        .await
        .unwrap();
    let get = ArmRequest::new(
        "Routes.Get",
        reqwest::Method::GET,
        &path,
        NETWORK_API_VERSION,
    );
    let route = client.send(&get, T).await.unwrap();
    assert_eq!(route.body["properties"]["provisioningState"], "Succeeded");
    // The same PUT with If-None-Match: * now finds the route: a refusal with its status.
    let e = client.send(&put, T).await.unwrap_err();
    assert!(e.is_status(412), "{e}");
    assert_eq!(e.code(), Some("PreconditionFailed"));
    fx.fake.assert_no_violations();
}

/// A self-signed RSA certificate and its PKCS#8 key, made by the venv's `cryptography`.
fn certificate() -> Option<(String, String)> {
    let py = baton_tests::moto::python()?;
    let script = r#"
import datetime
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
n = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "baton-test")])
now = datetime.datetime.now(datetime.timezone.utc)
c = (x509.CertificateBuilder().subject_name(n).issuer_name(n).public_key(k.public_key())
     .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
     .not_valid_after(now + datetime.timedelta(days=30)).sign(k, hashes.SHA256()))
print(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                      serialization.NoEncryption()).decode(), end="")
print("=====")
print(c.public_bytes(serialization.Encoding.PEM).decode(), end="")
"#;
    let out = std::process::Command::new(py)
        .args(["-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (key, cert) = text.split_once("=====\n").unwrap();
    Some((key.to_string(), cert.to_string()))
}

// ----- azure-vip ---------------------------------------------------------------------

const VIP: &str = "10.9.0.10";
const ROUTE: &str = "baton-vip-10-9-0-10";

fn vip(shared: &Arc<AzureShared>, extra: &str) -> AzureVipDriver {
    let p =
        format!("ip = '{VIP}'\nroute_tables = ['rt-a', 'rt-b']\nlocal_address = false\n{extra}")
            .parse::<toml::Table>()
            .unwrap();
    AzureVipDriver::from_params(&p, shared.clone()).unwrap()
}

fn vip_probe(shared: &Arc<AzureShared>, extra: &str) -> Box<dyn baton_providers::Probe> {
    let p =
        format!("ip = '{VIP}'\nroute_tables = ['rt-a', 'rt-b']\nlocal_address = false\n{extra}")
            .parse::<toml::Table>()
            .unwrap();
    AzureRegistry::from_shared(shared.clone())
        .build_probe("azure-vip", &p)
        .unwrap()
}

/// Two route tables: `rt-a` with a default route of its own, `rt-b` empty.
fn tables(fake: &AzureFake) {
    fake.route_table(
        "rt-a",
        json!([{"name": "default", "addressPrefix": "0.0.0.0/0", "nextHopType": "Internet"}]),
    );
    fake.route_table("rt-b", json!([]));
}

fn hops(fake: &AzureFake) -> Vec<(Option<String>, Option<String>)> {
    ["rt-a", "rt-b"]
        .iter()
        .map(|t| fake.route_next_hop(t, ROUTE, "web"))
        .collect()
}

fn some(hop: &str, mark: &str) -> (Option<String>, Option<String>) {
    (Some(hop.to_string()), Some(mark.to_string()))
}

#[tokio::test]
async fn azure_vip_routes_follow_a_failover_and_a_lower_epoch_is_refused() {
    let Some(fx) = fixture() else { return };
    tables(&fx.fake);
    let (sh, mut rx) = shared(&fx.settings);
    let d1 = vip(&sh, &format!("next_hop = '{IP1}'"));
    let d2 = vip(&sh, &format!("next_hop = '{IP2}'"));
    d1.activate(&ctx("node-1", 1, T)).await.unwrap();
    assert_eq!(hops(&fx.fake), vec![some(IP1, "1 node-1"); 2]);
    // The table's own route is written back as it was.
    let a = fx.fake.route_table_state("rt-a").unwrap();
    assert_eq!(
        a["routes"]["default"]["properties"]["nextHopType"],
        "Internet"
    );
    assert_eq!(
        a["routes"][ROUTE]["properties"]["nextHopType"],
        "VirtualAppliance"
    );
    assert_eq!(
        a["state"], "Succeeded",
        "activation waited for the operation"
    );
    assert_eq!(
        d1.check(&ctx("node-1", 1, T)).await.unwrap(),
        CheckOutcome::Active
    );
    let p1 = vip_probe(&sh, &format!("next_hop = '{IP1}'"));
    p1.probe(&probe_ctx("node-1")).await.unwrap();
    // Activating again with the same claim writes nothing.
    let before = fx.fake.requests().len();
    d1.activate(&ctx("node-1", 1, T)).await.unwrap();
    let writes = fx.fake.requests()[before..]
        .iter()
        .filter(|(m, _, _)| m == "PUT")
        .count();
    assert_eq!(writes, 0);
    assert!(ids(&mut rx).contains(&"BTN-8010".to_string()));

    // node-2 takes over at epoch 2.
    d2.activate(&ctx("node-2", 2, T)).await.unwrap();
    assert_eq!(hops(&fx.fake), vec![some(IP2, "2 node-2"); 2]);
    assert_eq!(
        d1.check(&ctx("node-1", 1, T)).await.unwrap(),
        CheckOutcome::Inactive
    );
    let e = p1.probe(&probe_ctx("node-1")).await.unwrap_err();
    assert!(matches!(e, ProviderError::Unhealthy(_)), "{e:?}");
    assert!(e.to_string().contains("not to 10.0.0.4"), "{e}");
    assert!(ids(&mut rx).contains(&"BTN-8011".to_string()));
    // node-1, back with its old epoch, is refused and changes nothing.
    let e = d1.activate(&ctx("node-1", 1, T)).await.unwrap_err();
    assert!(matches!(e, ProviderError::Fenced { epoch: 2, .. }), "{e:?}");
    assert_eq!(hops(&fx.fake), vec![some(IP2, "2 node-2"); 2]);
    assert!(ids(&mut rx).contains(&"BTN-8006".to_string()));
    fx.fake.assert_no_violations();
}

#[tokio::test]
async fn azure_vip_route_changed_by_hand_is_reported_and_repaired() {
    let Some(fx) = fixture() else { return };
    tables(&fx.fake);
    let (sh, mut rx) = shared(&fx.settings);
    // No next_hop: this server's address comes from the instance metadata.
    fx.fake
        .vm("node-1", IP1, "11111111-0000-0000-0000-000000000001");
    let d = vip(&sh, "");
    d.activate(&ctx("node-1", 3, T)).await.unwrap();
    assert_eq!(hops(&fx.fake), vec![some(IP1, "3 node-1"); 2]);
    fx.fake.hand_edit_route(
        "rt-b",
        ROUTE,
        json!({"nextHopType": "VirtualAppliance", "nextHopIpAddress": "10.0.0.99"}),
    );
    let p = vip_probe(&sh, "");
    let e = p.probe(&probe_ctx("node-1")).await.unwrap_err();
    assert!(
        e.to_string().contains("rt-b") && e.to_string().contains("10.0.0.99"),
        "{e}"
    );
    assert!(!e.to_string().contains("rt-a"), "{e}");
    assert_eq!(
        d.check(&ctx("node-1", 3, T)).await.unwrap(),
        CheckOutcome::Degraded(
            "route baton-vip-10-9-0-10 in table rt-b sends 10.9.0.10/32 to VirtualAppliance 10.0.0.99, not to 10.0.0.4; tag baton:web:epoch = 3 node-1".into()
        )
    );
    // The recovery (a restart of the resource) writes it again.
    d.activate(&ctx("node-1", 3, T)).await.unwrap();
    assert_eq!(hops(&fx.fake), vec![some(IP1, "3 node-1"); 2]);
    p.probe(&probe_ctx("node-1")).await.unwrap();
    // A deleted route too.
    fx.fake.control(
        "DELETE",
        "/_fake/routes",
        Some(
            json!({"subscription": SUBSCRIPTION, "resourceGroup": RESOURCE_GROUP,
                    "routeTable": "rt-a", "name": ROUTE}),
        ),
    );
    let e = p.probe(&probe_ctx("node-1")).await.unwrap_err();
    assert!(e.to_string().contains("has no route"), "{e}");
    d.activate(&ctx("node-1", 3, T)).await.unwrap();
    assert_eq!(hops(&fx.fake), vec![some(IP1, "3 node-1"); 2]);
    let ids = ids(&mut rx);
    assert!(
        ids.iter().filter(|i| *i == "BTN-8011").count() >= 1,
        "{ids:?}"
    );
    fx.fake.assert_no_violations();
}

#[tokio::test]
async fn azure_vip_second_writer_is_read_again_and_a_newer_claim_wins() {
    let Some(fx) = fixture() else { return };
    tables(&fx.fake);
    let (sh, mut rx) = shared(&fx.settings);
    // Someone adds a route to rt-a between our read and our write.
    fx.fake.fault(json!({"kind": "second_writer", "method": "PUT", "path": "/routeTables/rt-a$",
        "route": "to-onprem", "properties": {"addressPrefix": "192.168.0.0/16", "nextHopType": "VirtualNetworkGateway"}}));
    let d1 = vip(&sh, &format!("next_hop = '{IP1}'"));
    d1.activate(&ctx("node-1", 1, T)).await.unwrap();
    assert_eq!(hops(&fx.fake), vec![some(IP1, "1 node-1"); 2]);
    let a = fx.fake.route_table_state("rt-a").unwrap();
    assert_eq!(
        a["routes"]["to-onprem"]["properties"]["nextHopType"], "VirtualNetworkGateway",
        "the other writer's route is kept"
    );
    let statuses: Vec<u16> = fx
        .fake
        .requests()
        .iter()
        .filter(|(m, p, _)| m == "PUT" && p.ends_with("/routeTables/rt-a"))
        .map(|r| r.2)
        .collect();
    assert_eq!(statuses, [412, 200]);
    assert!(ids(&mut rx).contains(&"BTN-8012".to_string()));
    // A newer owner claims rt-b between our read and our write: after reading again
    // we are fenced, and its claim stands.
    fx.fake.fault(json!({"kind": "second_writer", "method": "PUT", "path": "/routeTables/rt-b$",
        "route": ROUTE, "properties": {"addressPrefix": "10.9.0.10/32", "nextHopType": "VirtualAppliance", "nextHopIpAddress": "10.0.0.6"},
        "tags": {"baton:web:epoch": "9 node-3"}}));
    let d2 = vip(&sh, &format!("next_hop = '{IP2}'"));
    let e = d2.activate(&ctx("node-2", 2, T)).await.unwrap_err();
    assert!(matches!(e, ProviderError::Fenced { epoch: 9, .. }), "{e:?}");
    assert_eq!(
        fx.fake.route_next_hop("rt-b", ROUTE, "web"),
        some("10.0.0.6", "9 node-3")
    );
    fx.fake.assert_no_violations();
}

#[tokio::test]
async fn azure_vip_throttling_and_busy_tables_are_retried_and_an_outage_is_an_api_error() {
    let Some(fx) = fixture() else { return };
    tables(&fx.fake);
    let (sh, _rx) = shared(&fx.settings);
    fx.fake.fault(json!({"method": "GET", "path": "/routeTables/rt-b$", "status": 429, "retry_after": 1, "count": 1}));
    fx.fake.fault(json!({"method": "PUT", "path": "/routeTables/rt-a$", "status": 429, "code": "AnotherOperationInProgress", "retry_after": 1, "count": 1}));
    let d = vip(&sh, &format!("next_hop = '{IP1}'"));
    d.activate(&ctx("node-1", 1, T)).await.unwrap();
    assert_eq!(hops(&fx.fake), vec![some(IP1, "1 node-1"); 2]);
    fx.fake
        .fault(json!({"path": "/routeTables/", "status": 503, "count": -1}));
    let e = d
        .activate(&ctx("node-2", 2, Duration::from_secs(3)))
        .await
        .unwrap_err();
    assert!(e.is_api_error(), "{e:?}");
    let mut pc = probe_ctx("node-1");
    pc.timeout = Duration::from_secs(2);
    let e = vip_probe(&sh, &format!("next_hop = '{IP1}'"))
        .probe(&pc)
        .await
        .unwrap_err();
    assert!(e.is_api_error(), "{e:?}");
    fx.fake.clear_faults();
    assert_eq!(
        hops(&fx.fake),
        vec![some(IP1, "1 node-1"); 2],
        "nothing changed"
    );
    fx.fake.assert_no_violations();
}

// ----- azure-lb-probe ----------------------------------------------------------------

fn lb_params(extra: &str) -> Params {
    extra.parse::<toml::Table>().unwrap()
}

/// A port free on 127.0.0.11 and 127.0.0.12.
fn free_port() -> u16 {
    baton_tests::free_port(&["127.0.0.11", "127.0.0.12"])
}

async fn answers(addr: std::net::SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr)
        )
        .await,
        Ok(Ok(_))
    )
}

#[tokio::test]
async fn azure_lb_probe_port_is_answered_by_exactly_one_server_through_a_move() {
    // No Azure call: the resource only listens. Two "servers" on 127.0.0.11 and .12.
    let sh = Arc::new(AzureShared::lenient());
    let port = free_port();
    let reg = AzureRegistry::from_shared(sh);
    let d1 = reg
        .build_resource(
            "azure-lb-probe",
            &lb_params(&format!("port = {port}\nbind = '127.0.0.11'")),
        )
        .unwrap();
    let d2 = reg
        .build_resource(
            "azure-lb-probe",
            &lb_params(&format!("port = {port}\nbind = '127.0.0.12'")),
        )
        .unwrap();
    let a1: std::net::SocketAddr = format!("127.0.0.11:{port}").parse().unwrap();
    let a2: std::net::SocketAddr = format!("127.0.0.12:{port}").parse().unwrap();
    // A prober that connects to both every 20 ms, as the load balancer would.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (x, y) = tokio::join!(answers(a1), answers(a2));
                seen.push((x, y));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            seen
        })
    };
    let c1 = ctx("node-1", 1, T);
    let c2 = ctx("node-2", 2, T);
    assert_eq!(d1.check(&c1).await.unwrap(), CheckOutcome::Inactive);
    d1.activate(&c1).await.unwrap();
    d1.activate(&c1).await.unwrap(); // again: still one listener
    assert_eq!(d1.check(&c1).await.unwrap(), CheckOutcome::Active);
    assert!(answers(a1).await && !answers(a2).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The move: stop here first, then start there.
    d1.deactivate(&c1).await.unwrap();
    assert!(!answers(a1).await, "closed at once");
    d2.activate(&c2).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    d2.deactivate(&c2).await.unwrap();
    assert_eq!(d2.check(&c2).await.unwrap(), CheckOutcome::Inactive);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = prober.await.unwrap();
    assert!(seen.len() >= 10, "{}", seen.len());
    assert!(
        !seen.contains(&(true, true)),
        "both answered at once: {seen:?}"
    );
    assert!(
        seen.contains(&(true, false)) && seen.contains(&(false, true)),
        "{seen:?}"
    );
}

#[tokio::test]
async fn azure_lb_probe_answers_http_on_its_path_and_reports_a_taken_port() {
    let (sink, mut rx) = EventSink::channel(16);
    let sh = Arc::new(AzureShared::lenient().with_events(sink));
    let port = free_port();
    let reg = AzureRegistry::from_shared(sh);
    let d = reg
        .build_resource(
            "azure-lb-probe",
            &lb_params(&format!(
                "port = {port}\nbind = '127.0.0.11'\nprotocol = 'http'\npath = '/up'"
            )),
        )
        .unwrap();
    d.activate(&ctx("node-1", 1, T)).await.unwrap();
    let get = |path: &str| {
        let url = format!("http://127.0.0.11:{port}{path}");
        async move { reqwest::get(url).await.unwrap().status().as_u16() }
    };
    assert_eq!(get("/up").await, 200);
    assert_eq!(get("/up?probe=1").await, 200);
    assert_eq!(get("/other").await, 404);
    // A slow client that sends nothing does not block the next probe.
    let _idle = tokio::net::TcpStream::connect(("127.0.0.11", port))
        .await
        .unwrap();
    assert_eq!(get("/up").await, 200);
    d.deactivate(&ctx("node-1", 1, T)).await.unwrap();
    assert!(reqwest::get(format!("http://127.0.0.11:{port}/up"))
        .await
        .is_err());
    // The port taken by another process: the activation fails and says so.
    let _other = std::net::TcpListener::bind(("127.0.0.11", port)).unwrap();
    let e = d.activate(&ctx("node-1", 1, T)).await.unwrap_err();
    assert!(e.to_string().contains("cannot listen on probe port"), "{e}");
    let ids = ids(&mut rx);
    assert!(
        ids.contains(&"BTN-8013".to_string()) && ids.contains(&"BTN-8014".to_string()),
        "{ids:?}"
    );
}

#[tokio::test]
async fn azure_lb_probe_monitor_checks_the_load_balancer_and_the_port() {
    let Some(fx) = fixture() else { return };
    let (sh, mut rx) = shared(&fx.settings);
    let port = free_port();
    let seed = |probe_port: u16, rule_probe: Option<&str>| {
        let mut rule = json!({"name": "sql", "protocol": "Tcp", "frontendPort": 1433, "backendPort": 1433,
            "backendAddressPool": "backend"});
        if let Some(p) = rule_probe {
            rule["probe"] = json!(p);
        }
        fx.fake.control(
            "POST",
            "/_fake/load-balancers",
            Some(json!({"subscription": SUBSCRIPTION, "resourceGroup": RESOURCE_GROUP, "name": "ilb",
                "frontendIPConfigurations": [{"name": "frontend", "privateIPAddress": "10.0.0.100"}],
                "backendAddressPools": [{"name": "backend"}],
                "probes": [{"name": "baton", "protocol": "Tcp", "port": probe_port}],
                "loadBalancingRules": [rule]})),
        );
    };
    seed(port, Some("baton"));
    let keys = format!("port = {port}\nbind = '127.0.0.11'\nload_balancer = 'ilb'\nrule = 'sql'");
    let reg = AzureRegistry::from_shared(sh.clone());
    let monitor = reg
        .build_probe("azure-lb-probe", &lb_params(&keys))
        .unwrap();
    let d = reg
        .build_resource("azure-lb-probe", &lb_params(&keys))
        .unwrap();
    let mut pc = probe_ctx("node-1");
    // Standby: the load balancer is checked, the port is not.
    let ok = monitor.probe(&pc).await.unwrap();
    assert!(ok.detail.unwrap().contains("probes port"));
    // Active: the port must answer too.
    pc.group_state = Some(baton_core::engine::GroupState::Online);
    let e = monitor.probe(&pc).await.unwrap_err();
    assert!(e.to_string().contains("does not answer here"), "{e}");
    d.activate(&ctx("node-1", 1, T)).await.unwrap();
    monitor.probe(&pc).await.unwrap();
    // Someone moves the probe to another port, then detaches it from the rule.
    seed(port + 1, Some("baton"));
    let e = monitor.probe(&pc).await.unwrap_err();
    assert!(
        e.to_string().contains(&format!(
            "it has no probe on port {port} (probes: baton (Tcp {}))",
            port + 1
        )),
        "{e}"
    );
    seed(port, None);
    let e = monitor.probe(&pc).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("rule sql uses no probe, not probe baton"),
        "{e}"
    );
    assert!(ids(&mut rx).contains(&"BTN-8015".to_string()));
    // A load balancer that does not exist.
    let gone = reg
        .build_probe(
            "azure-lb-probe",
            &lb_params(&format!("port = {port}\nload_balancer = 'nope'")),
        )
        .unwrap();
    let e = gone.probe(&pc).await.unwrap_err();
    assert!(
        !e.is_api_error() && e.to_string().contains("ResourceNotFound"),
        "{e}"
    );
    d.deactivate(&ctx("node-1", 1, T)).await.unwrap();
    fx.fake.assert_no_violations();
}

// ----- azure-events ------------------------------------------------------------------

#[tokio::test]
async fn azure_events_move_the_group_first_and_approve_once_it_is_gone() {
    use baton_core::engine::GroupState;
    let Some(fx) = fixture() else { return };
    fx.fake
        .vm("node-1", IP1, "11111111-0000-0000-0000-000000000001");
    fx.fake
        .vm("node-2", IP2, "11111111-0000-0000-0000-000000000002");
    let (sh1, mut rx1) = shared(&fx.settings);
    let s2 = AzureSection {
        imds_endpoint: Some(format!("{}/_vm/node-2", fx.fake.endpoint)),
        ..fx.settings.clone()
    };
    let (sh2, mut rx2) = shared(&s2);
    let p1 = AzureRegistry::from_shared(sh1)
        .build_probe("azure-events", &lb_params(""))
        .unwrap();
    let p2 = AzureRegistry::from_shared(sh2)
        .build_probe(
            "azure-events",
            &lb_params("acknowledge = false\nevents = ['Reboot', 'Redeploy']"),
        )
        .unwrap();
    let mut on1 = probe_ctx("node-1");
    on1.group_state = Some(GroupState::Online);
    let mut off2 = probe_ctx("node-2");
    off2.group_state = Some(GroupState::Offline);
    assert!(p1
        .probe(&on1)
        .await
        .unwrap()
        .detail
        .unwrap()
        .contains("no scheduled event for node-1"));
    // A reboot of node-1 in 5 minutes.
    let e = fx.fake.control(
        "POST",
        "/_fake/scheduled-events",
        Some(json!({"EventType": "Reboot", "Resources": ["node-1"], "not_before_s": 300})),
    );
    let id = e["EventId"].as_str().unwrap().to_string();
    let err = p1.probe(&on1).await.unwrap_err();
    assert!(matches!(err, ProviderError::Unhealthy(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains(&format!("Reboot {id} (Scheduled, not before")),
        "{err}"
    );
    assert!(ids(&mut rx1).contains(&"BTN-8016".to_string()));
    // node-2 is not concerned.
    assert!(p2
        .probe(&off2)
        .await
        .unwrap()
        .detail
        .unwrap()
        .contains("no scheduled event for node-2"));
    // The group moved: node-1 approves the event, once; the platform starts it.
    let mut off1 = probe_ctx("node-1");
    off1.group_state = Some(GroupState::Offline);
    p1.probe(&off1).await.unwrap();
    let doc = fx.fake.control("GET", "/_fake/scheduled-events", None);
    assert_eq!(doc["Events"][0]["EventStatus"], "Started", "{doc}");
    p1.probe(&off1).await.unwrap();
    let posts = fx
        .fake
        .requests()
        .iter()
        .filter(|(m, p, _)| m == "POST" && p.ends_with("/metadata/scheduledevents"))
        .count();
    assert_eq!(posts, 1);
    assert!(ids(&mut rx1).contains(&"BTN-8017".to_string()));
    // node-2 does not approve, and ignores the types it is not told to watch.
    fx.fake.control(
        "POST",
        "/_fake/scheduled-events",
        Some(json!({"EventType": "Freeze", "Resources": ["node-2"], "not_before_s": 300})),
    );
    assert!(p2
        .probe(&off2)
        .await
        .unwrap()
        .detail
        .unwrap()
        .contains("no scheduled event"));
    fx.fake.control(
        "POST",
        "/_fake/scheduled-events",
        Some(json!({"EventType": "Redeploy", "Resources": ["node-2"], "not_before_s": 300})),
    );
    let ok = p2.probe(&off2).await.unwrap();
    assert!(ok.detail.unwrap().contains("Redeploy"));
    p2.probe(&off2).await.unwrap();
    let noted: Vec<String> = ids(&mut rx2);
    assert_eq!(
        noted.iter().filter(|i| *i == "BTN-8018").count(),
        1,
        "{noted:?}"
    );
    let doc = fx.fake.control("GET", "/_fake/scheduled-events", None);
    let redeploy = doc["Events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["EventType"] == "Redeploy")
        .unwrap();
    assert_eq!(redeploy["EventStatus"], "Scheduled");
    // The metadata service down: an API error, for on_api_error to judge.
    fx.fake
        .fault(json!({"path": "/metadata/scheduledevents", "status": 503, "count": -1}));
    let mut short = on1.clone();
    short.timeout = Duration::from_secs(2);
    assert!(p1.probe(&short).await.unwrap_err().is_api_error());
    fx.fake.clear_faults();
    fx.fake.assert_no_violations();
}

// ----- benchmark (bench/azure.sh) ----------------------------------------------------

fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Per pattern: activation → the change visible at the fake (the end of the mutating
/// request, from the fake's own log), the activation's total time (a route table's
/// long-running operation included), the API calls per failover, and as the reference
/// the raw latency of the same mutating calls through the client in the same run.
#[tokio::test]
#[ignore = "a benchmark: bash bench/azure.sh"]
async fn bench_failover_per_pattern() {
    let Some(fx) = fixture() else { return };
    let rounds: u64 = std::env::var("BATON_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    tables(&fx.fake);
    let (sh, _rx) = shared(&fx.settings);
    let client = AzureClient::new(&fx.settings).unwrap();
    let ips = [IP1, IP2];
    let dns: Vec<AzureDnsDriver> = ips
        .iter()
        .map(|ip| driver(&sh, &format!("ip = '{ip}'")))
        .collect();
    let vips: Vec<AzureVipDriver> = ips
        .iter()
        .map(|ip| vip(&sh, &format!("next_hop = '{ip}'")))
        .collect();
    let port = free_port();
    let reg = AzureRegistry::from_shared(sh.clone());
    let probes: Vec<Box<dyn ResourceDriver>> = ["127.0.0.11", "127.0.0.12"]
        .iter()
        .map(|b| {
            reg.build_resource(
                "azure-lb-probe",
                &lb_params(&format!("port = {port}\nbind = '{b}'")),
            )
            .unwrap()
        })
        .collect();
    // Warm up: the token and the first calls outside the measurement.
    dns[0].activate(&ctx("node-1", 1, T)).await.unwrap();
    vips[0].activate(&ctx("node-1", 1, T)).await.unwrap();
    let log = || fx.fake.control("GET", "/_fake/requests", None);
    let mut rows = Vec::new();
    for pattern in ["dns", "vip", "lb-probe"] {
        let (mut visible, mut total, mut calls, mut raw) = (vec![], vec![], vec![], vec![]);
        for i in 0..rounds {
            let epoch = i + 2;
            let who = usize::try_from(epoch % 2).unwrap();
            let server = ["node-1", "node-2"][who];
            fx.fake.control("DELETE", "/_fake/requests", None);
            let c = ctx(server, epoch, T);
            let t0 = now_s();
            match pattern {
                "dns" => dns[who].activate(&c).await.unwrap(),
                "vip" => vips[who].activate(&c).await.unwrap(),
                _ => {
                    probes[1 - who].deactivate(&c).await.unwrap();
                    probes[who].activate(&c).await.unwrap();
                }
            }
            let t1 = now_s();
            if pattern == "lb-probe" {
                // Visible to a prober: the first connection that succeeds.
                let addr = format!("127.0.0.{}:{port}", 11 + who);
                while std::net::TcpStream::connect(&addr).is_err() {}
                visible.push((now_s() - t0) * 1000.0);
                calls.push(0.0);
            } else {
                let entries = log();
                let entries = entries.as_array().unwrap();
                let seen = entries
                    .iter()
                    .filter(|e| {
                        e["method"] == "PUT" && e["status"].as_u64().is_some_and(|s| s < 300)
                    })
                    .map(|e| e["t"].as_f64().unwrap() + e["duration_ms"].as_f64().unwrap() / 1000.0)
                    .fold(f64::NAN, f64::max);
                visible.push((seen - t0) * 1000.0);
                calls.push(entries.len() as f64);
            }
            total.push((t1 - t0) * 1000.0);
            // Reference: the same mutating calls through the client, nothing else.
            let r0 = now_s();
            match pattern {
                "dns" => {
                    let path = format!(
                        "/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.Network/dnsZones/{ZONE}/A/raw{i}"
                    );
                    let req = ArmRequest::new("RecordSets.CreateOrUpdate", reqwest::Method::PUT, &path, baton_cloud_client::azure::DNS_API_VERSION)
                        .json(json!({"properties": {"TTL": 60, "ARecords": [{"ipv4Address": "10.9.9.9"}]}}));
                    client.send(&req, T).await.unwrap();
                }
                "vip" => {
                    for t in ["rt-a", "rt-b"] {
                        let path = format!(
                            "/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.Network/routeTables/{t}/routes/raw{i}"
                        );
                        let req = ArmRequest::new("Routes.CreateOrUpdate", reqwest::Method::PUT, &path, NETWORK_API_VERSION)
                            .json(json!({"properties": {"addressPrefix": format!("10.8.{i}.1/32"), "nextHopType": "VirtualAppliance", "nextHopIpAddress": ips[who]}}));
                        // The fake refuses a write while the table's operation runs.
                        while fx.fake.route_table_state(t).unwrap()["state"] != "Succeeded" {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        let s0 = now_s();
                        client.send(&req, T).await.unwrap();
                        raw.push((now_s() - s0) * 1000.0);
                    }
                    let n = raw.len();
                    let pair = raw[n - 2] + raw[n - 1];
                    raw.truncate(n - 2);
                    raw.push(pair);
                    // The next activation must not meet these writes' operations.
                    for t in ["rt-a", "rt-b"] {
                        while fx.fake.route_table_state(t).unwrap()["state"] != "Succeeded" {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                    continue;
                }
                _ => {
                    let l = std::net::TcpListener::bind("127.0.0.13:0").unwrap();
                    let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
                }
            }
            raw.push((now_s() - r0) * 1000.0);
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
    println!("\nAzure failover per pattern against the Azure fake ({rounds} failovers each; times in ms, median / p90)");
    println!(
        "{:<9} {:>16} {:>16} {:>10} {:>16} {:>14}",
        "pattern", "visible", "activation", "API calls", "raw calls", "visible / raw"
    );
    for (p, vis, tot, calls, raw) in &rows {
        println!(
            "{:<9} {:>7.1} / {:>6.1} {:>7.1} / {:>6.1} {:>10.1} {:>7.1} / {:>6.1} {:>14.2}",
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
    fx.fake.assert_no_violations();
}
