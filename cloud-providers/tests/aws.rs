//! Driver-level tests of the AWS kinds against moto server (the real AWS SDK for Rust
//! over HTTP), behind the harness's middleware for fault injection and AZ states.
//! Each test starts its own emulator and builds its own VPC (two subnets, two ENIs,
//! two route tables with a VIP route, an Elastic IP, a private hosted zone).
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Tests measure the real time of real processes and sockets: they read the clock directly.
#![allow(clippy::disallowed_methods)]

use baton_providers::aws::AwsServices;
use std::sync::{Arc, Once};
use std::time::Duration;

use aws_sdk_ec2::types::AttributeBooleanValue;
use baton_core::config::AwsSection;
use baton_core::events::Event;
use baton_providers::aws::dns::AwsDnsDriver;
use baton_providers::aws::eip::AwsEipDriver;
use baton_providers::aws::vip::AwsVipDriver;
use baton_providers::aws::{preflight, AwsClients, AwsRegistry, AwsShared, EventSink};
use baton_providers::{
    ActionContext, CheckOutcome, Params, Probe, ProbeContext, ProviderError, Registry,
    ResourceDriver,
};
use baton_tests::moto::Moto;

const VIP: &str = "10.1.0.20";

fn env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for (k, v) in baton_tests::moto::aws_env("http://127.0.0.1:9") {
            if k != "AWS_ENDPOINT_URL" {
                std::env::set_var(k, v);
            }
        }
    });
}

struct Fx {
    moto: Moto,
    clients: AwsClients,
    vpc: String,
    eni1: String,
    eni2: String,
    ip1: String,
    ip2: String,
    rta: String,
    rtb: String,
    alloc: String,
    zone: String,
}

async fn fixture() -> Option<Fx> {
    env();
    let moto = Moto::start()?;
    let settings = AwsSection {
        endpoint_url: Some(moto.endpoint.clone()),
        region: Some("us-east-1".into()),
        call_timeout: baton_core::config::Dur::from_ms(5_000),
        ..AwsSection::default()
    };
    let clients = AwsClients::load(&settings).await;
    let ec2 = clients.ec2();
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .send()
        .await
        .unwrap()
        .vpc
        .unwrap()
        .vpc_id
        .unwrap();
    let mut enis = Vec::new();
    for (cidr, az) in [
        ("10.0.110.0/24", "us-east-1a"),
        ("10.0.120.0/24", "us-east-1b"),
    ] {
        let sn = ec2
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block(cidr)
            .availability_zone(az)
            .send()
            .await
            .unwrap()
            .subnet
            .unwrap()
            .subnet_id
            .unwrap();
        let ni = ec2
            .create_network_interface()
            .subnet_id(&sn)
            .send()
            .await
            .unwrap()
            .network_interface
            .unwrap();
        enis.push((
            ni.network_interface_id.unwrap(),
            ni.private_ip_address.unwrap(),
        ));
    }
    let mut rts = Vec::new();
    for _ in 0..2 {
        let rt = ec2
            .create_route_table()
            .vpc_id(&vpc)
            .send()
            .await
            .unwrap()
            .route_table
            .unwrap()
            .route_table_id
            .unwrap();
        ec2.create_route()
            .route_table_id(&rt)
            .destination_cidr_block(format!("{VIP}/32"))
            .network_interface_id(&enis[0].0)
            .send()
            .await
            .unwrap();
        rts.push(rt);
    }
    let alloc = ec2
        .allocate_address()
        .domain(aws_sdk_ec2::types::DomainType::Vpc)
        .send()
        .await
        .unwrap()
        .allocation_id
        .unwrap();
    let zone = clients
        .route53()
        .create_hosted_zone()
        .name("example.internal.")
        .caller_reference(format!("baton-{}", std::process::id()))
        .send()
        .await
        .unwrap()
        .hosted_zone
        .unwrap()
        .id
        .trim_start_matches("/hostedzone/")
        .to_string();
    Some(Fx {
        moto,
        clients,
        vpc,
        eni1: enis[0].0.clone(),
        ip1: enis[0].1.clone(),
        eni2: enis[1].0.clone(),
        ip2: enis[1].1.clone(),
        rta: rts[0].clone(),
        rtb: rts[1].clone(),
        alloc,
        zone,
    })
}

struct Events(tokio::sync::mpsc::Receiver<Event>, Vec<Event>);

impl Events {
    fn drain(&mut self) -> &[Event] {
        while let Ok(e) = self.0.try_recv() {
            self.1.push(e);
        }
        &self.1
    }
    fn ids(&mut self) -> Vec<String> {
        self.drain().iter().map(|e| e.id.clone()).collect()
    }
    fn count(&mut self, id: &str) -> usize {
        self.drain().iter().filter(|e| e.id == id).count()
    }
    fn find(&mut self, id: &str) -> Event {
        let all = self.drain().to_vec();
        all.iter().find(|e| e.id == id).cloned().unwrap_or_else(|| {
            panic!(
                "no {id} among {:?}",
                all.iter().map(|e| e.line()).collect::<Vec<_>>()
            )
        })
    }
}

fn shared(fx: &Fx) -> (Arc<AwsShared>, Events) {
    let (sink, rx) = EventSink::channel(1000);
    let settings = AwsSection {
        endpoint_url: Some(fx.moto.endpoint.clone()),
        region: Some("us-east-1".into()),
        imds: false,
        ..AwsSection::default()
    };
    let s = AwsShared::new(&settings)
        .with_clients(fx.clients.clone())
        .with_events(sink);
    (Arc::new(s), Events(rx, Vec::new()))
}

fn table(s: &str) -> Params {
    s.parse::<toml::Table>().unwrap()
}

fn ctx(server: &str, epoch: u64) -> ActionContext {
    ActionContext {
        cluster: "it".into(),
        group: "web".into(),
        resource: "vip".into(),
        server: server.into(),
        epoch,
        timeout: Duration::from_secs(20),
    }
}

fn pctx() -> ProbeContext {
    ProbeContext {
        cluster: "it".into(),
        server: "node-2".into(),
        monitor: "vipw".into(),
        timeout: Duration::from_secs(20),
        group_state: None,
    }
}

fn vip_params(fx: &Fx, eni: &str, extra: &str) -> Params {
    table(&format!(
        "ip = '{VIP}'\nvpc_id = '{}'\neni_id = '{eni}'\nlocal_address = false\n{extra}",
        fx.vpc
    ))
}

/// (table, ENI the VIP route points at, epoch tag) of every table.
async fn routes(fx: &Fx) -> Vec<(String, Option<String>, Option<String>)> {
    let out = fx
        .clients
        .ec2()
        .describe_route_tables()
        .route_table_ids(&fx.rta)
        .route_table_ids(&fx.rtb)
        .send()
        .await
        .unwrap();
    let mut v: Vec<_> = out
        .route_tables()
        .iter()
        .map(|rt| {
            let eni = rt
                .routes()
                .iter()
                .find(|r| r.destination_cidr_block() == Some(&format!("{VIP}/32")))
                .and_then(|r| r.network_interface_id().map(str::to_string));
            let tag = rt
                .tags()
                .iter()
                .find(|t| t.key() == Some("baton:web:epoch"))
                .and_then(|t| t.value().map(str::to_string));
            (rt.route_table_id().unwrap().to_string(), eni, tag)
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn vip_failover_points_every_route_at_the_new_owner() {
    let Some(fx) = fixture().await else { return };
    let (s, mut ev) = shared(&fx);
    let d1 = AwsVipDriver::from_params(&vip_params(&fx, &fx.eni1, ""), s.clone()).unwrap();
    let d2 = AwsVipDriver::from_params(&vip_params(&fx, &fx.eni2, ""), s.clone()).unwrap();
    d1.activate(&ctx("node-1", 1)).await.unwrap();
    assert!(routes(&fx)
        .await
        .iter()
        .all(|r| r.1.as_deref() == Some(fx.eni1.as_str())));
    assert_eq!(
        d1.check(&ctx("node-1", 1)).await.unwrap(),
        CheckOutcome::Active
    );
    fx.moto.reset_calls();
    d2.activate(&ctx("node-2", 2)).await.unwrap();
    let r = routes(&fx).await;
    assert_eq!(r.len(), 2);
    for (t, eni, tag) in &r {
        assert_eq!(eni.as_deref(), Some(fx.eni2.as_str()), "table {t}");
        assert_eq!(tag.as_deref(), Some("2 node-2"), "table {t}");
    }
    let calls = fx.moto.calls();
    assert_eq!(calls.get("ec2.ReplaceRoute"), Some(&2), "{calls:?}");
    assert_eq!(calls.get("ec2.CreateTags"), Some(&1), "{calls:?}");
    assert_eq!(
        d2.check(&ctx("node-2", 2)).await.unwrap(),
        CheckOutcome::Active
    );
    assert_eq!(
        d1.check(&ctx("node-1", 1)).await.unwrap(),
        CheckOutcome::Inactive
    );
    // Idempotent: a second activation changes nothing.
    fx.moto.reset_calls();
    d2.activate(&ctx("node-2", 2)).await.unwrap();
    let calls = fx.moto.calls();
    assert_eq!(calls.get("ec2.ReplaceRoute"), None, "{calls:?}");
    // Deactivation leaves the routes to the next owner.
    d2.deactivate(&ctx("node-2", 2)).await.unwrap();
    assert!(routes(&fx)
        .await
        .iter()
        .all(|r| r.1.as_deref() == Some(fx.eni2.as_str())));
    let routed = ev.find("BTN-6021");
    assert!(routed.fields.contains_key("took_ms"), "{routed:?}");
    // moto's ENIs have the source/destination check on: warned once per driver.
    assert_eq!(ev.count("BTN-6001"), 2, "{:?}", ev.ids());
}

#[tokio::test]
async fn vip_never_lets_a_lower_epoch_undo_a_higher_one() {
    let Some(fx) = fixture().await else { return };
    let (s, mut ev) = shared(&fx);
    let d1 = AwsVipDriver::from_params(&vip_params(&fx, &fx.eni1, ""), s.clone()).unwrap();
    let d2 = AwsVipDriver::from_params(&vip_params(&fx, &fx.eni2, ""), s.clone()).unwrap();
    d2.activate(&ctx("node-2", 5)).await.unwrap();
    let e = d1.activate(&ctx("node-1", 4)).await.unwrap_err();
    assert!(e.to_string().contains("epoch 5"), "{e}");
    assert!(
        matches!(&e, ProviderError::Fenced { epoch: 5, ours: 4, holder, group, .. }
            if holder == "node-2" && group == "web"),
        "{e:?}"
    );
    assert_eq!(e.code(), "fenced");
    assert!(routes(&fx)
        .await
        .iter()
        .all(|r| r.1.as_deref() == Some(fx.eni2.as_str())));
    let stale = ev.find("BTN-6012");
    assert_eq!(stale.epoch, Some(4));
    assert_eq!(stale.message, e.to_string());
    // A higher epoch takes it back.
    d1.activate(&ctx("node-1", 6)).await.unwrap();
    assert!(routes(&fx)
        .await
        .iter()
        .all(|r| r.1.as_deref() == Some(fx.eni1.as_str())));
}

#[tokio::test]
async fn vip_seed_error_cases_raise_their_events() {
    let Some(fx) = fixture().await else { return };
    let (s, mut ev) = shared(&fx);
    // VIP inside the VPC CIDR.
    let d = AwsVipDriver::from_params(
        &table(&format!(
            "ip = '10.0.5.5'\nvpc_id = '{}'\neni_id = '{}'\nlocal_address = false",
            fx.vpc, fx.eni1
        )),
        s.clone(),
    )
    .unwrap();
    let e = d.activate(&ctx("node-1", 1)).await.unwrap_err();
    assert!(e.to_string().contains("belongs to a VPC subnet"), "{e}");
    assert!(ev.find("BTN-6006").message.contains("10.0.0.0/16"));
    // Unknown VPC.
    let d = AwsVipDriver::from_params(
        &table(&format!(
            "ip = '{VIP}'\nvpc_id = 'vpc-0123456789abcdef0'\neni_id = '{}'\nlocal_address = false",
            fx.eni1
        )),
        s.clone(),
    )
    .unwrap();
    d.activate(&ctx("node-1", 1)).await.unwrap_err();
    assert!(ev
        .find("BTN-6007")
        .message
        .contains("vpc-0123456789abcdef0"));
    // Unknown ENI: the seed's "The networkInterface ID 'eni-...' does not exist".
    let (s2, mut ev2) = shared(&fx);
    let d = AwsVipDriver::from_params(&vip_params(&fx, "eni-0123456789abcdef0", ""), s2).unwrap();
    let e = d.activate(&ctx("node-1", 1)).await.unwrap_err();
    assert!(e.to_string().contains("eni-0123456789abcdef0"), "{e}");
    assert!(ev2
        .find("BTN-6007")
        .message
        .contains("networkInterface ID 'eni-0123456789abcdef0' does not exist"));
    // Missing permission on ReplaceRoute.
    let (s3, mut ev3) = shared(&fx);
    fx.moto
        .fail("ReplaceRoute", "UnauthorizedOperation", 403, -1);
    let d = AwsVipDriver::from_params(&vip_params(&fx, &fx.eni2, ""), s3).unwrap();
    let e = d.activate(&ctx("node-2", 1)).await.unwrap_err();
    assert!(e.to_string().contains("UnauthorizedOperation"), "{e}");
    assert!(
        !e.is_api_error(),
        "a client error is not the API being down"
    );
    assert!(ev3.find("BTN-6008").message.contains("ReplaceRoute"));
    fx.moto.clear_faults();
    // No route table holds the VIP route.
    let (s4, mut ev4) = shared(&fx);
    let d = AwsVipDriver::from_params(
        &table(&format!(
            "ip = '10.9.9.9'\nvpc_id = '{}'\neni_id = '{}'\nlocal_address = false",
            fx.vpc, fx.eni2
        )),
        s4,
    )
    .unwrap();
    d.activate(&ctx("node-2", 1)).await.unwrap_err();
    ev4.find("BTN-6011");
}

#[tokio::test]
async fn vip_throttling_and_5xx_are_retried_within_the_deadline() {
    let Some(fx) = fixture().await else { return };
    let (s, _ev) = shared(&fx);
    let d = AwsVipDriver::from_params(&vip_params(&fx, &fx.eni2, ""), s).unwrap();
    fx.moto.fail("ReplaceRoute", "RequestLimitExceeded", 503, 2);
    fx.moto.fail("DescribeRouteTables", "InternalError", 500, 1);
    fx.moto.reset_calls();
    d.activate(&ctx("node-2", 1)).await.unwrap();
    assert!(routes(&fx)
        .await
        .iter()
        .all(|r| r.1.as_deref() == Some(fx.eni2.as_str())));
    let calls = fx.moto.calls();
    assert_eq!(
        calls.get("ec2.ReplaceRoute"),
        Some(&4),
        "2 tables + 2 throttled: {calls:?}"
    );
}

#[tokio::test]
async fn vip_monitor_reports_a_hand_made_route_change_and_activation_repairs_it() {
    let Some(fx) = fixture().await else { return };
    let (s, mut ev) = shared(&fx);
    let reg = AwsRegistry::from_shared(s.clone());
    let d = AwsVipDriver::from_params(&vip_params(&fx, &fx.eni2, ""), s.clone()).unwrap();
    let probe = reg
        .build_probe("aws-vip", &vip_params(&fx, &fx.eni2, ""))
        .unwrap();
    d.activate(&ctx("node-2", 3)).await.unwrap();
    probe.probe(&pctx()).await.unwrap();
    fx.clients
        .ec2()
        .replace_route()
        .route_table_id(&fx.rtb)
        .destination_cidr_block(format!("{VIP}/32"))
        .network_interface_id(&fx.eni1)
        .send()
        .await
        .unwrap();
    for _ in 0..2 {
        let e = probe.probe(&pctx()).await.unwrap_err();
        assert!(matches!(e, ProviderError::Unhealthy(_)), "{e:?}");
        assert!(
            e.to_string().contains(&format!(
                "in {} points at {}, not ours {}",
                fx.rtb, fx.eni1, fx.eni2
            )),
            "{e}"
        );
    }
    assert_eq!(ev.count("BTN-6002"), 1, "raised once while it lasts");
    assert!(ev
        .find("BTN-6002")
        .message
        .contains("baton:web:epoch = 3 node-2"));
    // The recovery restarts the resource: activation points the route back.
    d.activate(&ctx("node-2", 3)).await.unwrap();
    probe.probe(&pctx()).await.unwrap();
    assert!(routes(&fx)
        .await
        .iter()
        .all(|r| r.1.as_deref() == Some(fx.eni2.as_str())));
}

#[tokio::test]
async fn vip_api_down_is_an_api_error_warned_once() {
    let Some(fx) = fixture().await else { return };
    let (s, mut ev) = shared(&fx);
    let reg = AwsRegistry::from_shared(s);
    let probe = reg
        .build_probe("aws-vip", &vip_params(&fx, &fx.eni1, ""))
        .unwrap();
    probe.probe(&pctx()).await.unwrap();
    fx.moto.fail("*", "ServiceUnavailable", 503, -1);
    for _ in 0..2 {
        let e = probe.probe(&pctx()).await.unwrap_err();
        assert!(e.is_api_error(), "{e:?}");
    }
    assert_eq!(ev.count("BTN-6005"), 1);
    fx.moto.clear_faults();
    probe.probe(&pctx()).await.unwrap();
}

#[tokio::test]
async fn vip_creates_missing_routes_in_configured_tables_and_skips_the_check_warning() {
    let Some(fx) = fixture().await else { return };
    let ec2 = fx.clients.ec2();
    let rtc = ec2
        .create_route_table()
        .vpc_id(&fx.vpc)
        .send()
        .await
        .unwrap()
        .route_table
        .unwrap()
        .route_table_id
        .unwrap();
    ec2.modify_network_interface_attribute()
        .network_interface_id(&fx.eni2)
        .source_dest_check(AttributeBooleanValue::builder().value(false).build())
        .send()
        .await
        .unwrap();
    let (s, mut ev) = shared(&fx);
    let d = AwsVipDriver::from_params(
        &vip_params(
            &fx,
            &fx.eni2,
            &format!("route_tables = ['{}', '{rtc}']", fx.rta),
        ),
        s,
    )
    .unwrap();
    d.activate(&ctx("node-2", 1)).await.unwrap();
    let out = ec2
        .describe_route_tables()
        .route_table_ids(&rtc)
        .send()
        .await
        .unwrap();
    let r = out.route_tables()[0]
        .routes()
        .iter()
        .find(|r| r.destination_cidr_block() == Some(&format!("{VIP}/32")))
        .and_then(|r| r.network_interface_id().map(str::to_string));
    assert_eq!(r.as_deref(), Some(fx.eni2.as_str()));
    // rtb is not in the list: untouched.
    let rb = routes(&fx).await;
    assert!(rb
        .iter()
        .any(|(t, e, _)| *t == fx.rtb && e.as_deref() == Some(fx.eni1.as_str())));
    assert_eq!(ev.count("BTN-6001"), 0, "{:?}", ev.ids());
    // An unknown configured table is an unknown ID.
    let (s, mut ev) = shared(&fx);
    let d = AwsVipDriver::from_params(
        &vip_params(&fx, &fx.eni2, "route_tables = ['rtb-0123456789abcdef0']"),
        s,
    )
    .unwrap();
    d.activate(&ctx("node-2", 2)).await.unwrap_err();
    ev.find("BTN-6007");
}

fn eip_params(fx: &Fx, eni: &str) -> Params {
    table(&format!("allocation_id = '{}'\neni_id = '{eni}'", fx.alloc))
}

async fn eip_eni(fx: &Fx) -> Option<String> {
    let out = fx
        .clients
        .ec2()
        .describe_addresses()
        .allocation_ids(&fx.alloc)
        .send()
        .await
        .unwrap();
    out.addresses()[0]
        .network_interface_id()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

#[tokio::test]
async fn eip_moves_to_the_new_owner_and_only_the_owner_disassociates() {
    let Some(fx) = fixture().await else { return };
    let (s, mut ev) = shared(&fx);
    let reg = AwsRegistry::from_shared(s.clone());
    let d1 = AwsEipDriver::from_params(&eip_params(&fx, &fx.eni1), s.clone()).unwrap();
    let d2 = AwsEipDriver::from_params(&eip_params(&fx, &fx.eni2), s.clone()).unwrap();
    d1.activate(&ctx("node-1", 1)).await.unwrap();
    assert_eq!(eip_eni(&fx).await.as_deref(), Some(fx.eni1.as_str()));
    fx.moto.reset_calls();
    d2.activate(&ctx("node-2", 2)).await.unwrap();
    assert_eq!(eip_eni(&fx).await.as_deref(), Some(fx.eni2.as_str()));
    assert_eq!(fx.moto.calls().get("ec2.AssociateAddress"), Some(&1));
    ev.find("BTN-6022");
    // The old owner's deactivation leaves the new association alone.
    d1.deactivate(&ctx("node-1", 1)).await.unwrap();
    assert_eq!(eip_eni(&fx).await.as_deref(), Some(fx.eni2.as_str()));
    // A lower epoch cannot take it back.
    let e = d1.activate(&ctx("node-1", 1)).await.unwrap_err();
    assert_eq!(e.code(), "fenced", "{e:?}");
    assert_eq!(ev.find("BTN-6012").message, e.to_string());
    assert_eq!(eip_eni(&fx).await.as_deref(), Some(fx.eni2.as_str()));
    // The monitor sees a disassociation made by hand.
    let probe = reg
        .build_probe("aws-eip", &eip_params(&fx, &fx.eni2))
        .unwrap();
    probe.probe(&pctx()).await.unwrap();
    let out = fx
        .clients
        .ec2()
        .describe_addresses()
        .allocation_ids(&fx.alloc)
        .send()
        .await
        .unwrap();
    let assoc = out.addresses()[0].association_id().unwrap().to_string();
    fx.clients
        .ec2()
        .disassociate_address()
        .association_id(assoc)
        .send()
        .await
        .unwrap();
    let e = probe.probe(&pctx()).await.unwrap_err();
    assert!(
        e.to_string().contains("The EIP address does not exist"),
        "{e}"
    );
    ev.find("BTN-6003");
    assert_eq!(
        d2.check(&ctx("node-2", 2)).await.unwrap(),
        CheckOutcome::Inactive
    );
    // Restart repairs; the owner's deactivation disassociates.
    d2.activate(&ctx("node-2", 2)).await.unwrap();
    probe.probe(&pctx()).await.unwrap();
    d2.deactivate(&ctx("node-2", 2)).await.unwrap();
    assert_eq!(eip_eni(&fx).await, None);
    // Unknown allocation.
    let (s, mut ev) = shared(&fx);
    let d = AwsEipDriver::from_params(
        &table(&format!(
            "allocation_id = 'eipalloc-0123456789abcdef0'\neni_id = '{}'",
            fx.eni1
        )),
        s,
    )
    .unwrap();
    d.activate(&ctx("node-1", 9)).await.unwrap_err();
    ev.find("BTN-6007");
}

fn dns_params(fx: &Fx, ip: &str, extra: &str) -> Params {
    table(&format!(
        "hosted_zone_id = '{}'\nrecord_name = 'db.example.internal.'\nip = '{ip}'\nttl = 60\n{extra}",
        fx.zone
    ))
}

async fn record(fx: &Fx, name: &str, ty: &str) -> Option<Vec<String>> {
    let out = fx
        .clients
        .route53()
        .list_resource_record_sets()
        .hosted_zone_id(&fx.zone)
        .send()
        .await
        .unwrap();
    out.resource_record_sets()
        .iter()
        .find(|r| r.name() == name && r.r#type().as_str() == ty)
        .map(|r| {
            r.resource_records()
                .iter()
                .map(|v| v.value().to_string())
                .collect()
        })
}

#[tokio::test]
async fn dns_record_follows_the_owner_with_its_epoch_and_is_deleted_on_deactivation() {
    let Some(fx) = fixture().await else { return };
    let (s, mut ev) = shared(&fx);
    let reg = AwsRegistry::from_shared(s.clone());
    let d1 = AwsDnsDriver::from_params(&dns_params(&fx, &fx.ip1, ""), s.clone(), false).unwrap();
    let d2 = AwsDnsDriver::from_params(&dns_params(&fx, &fx.ip2, ""), s.clone(), false).unwrap();
    d1.activate(&ctx("node-1", 1)).await.unwrap();
    assert_eq!(
        record(&fx, "db.example.internal.", "A").await,
        Some(vec![fx.ip1.clone()])
    );
    fx.moto.reset_calls();
    d2.activate(&ctx("node-2", 2)).await.unwrap();
    assert_eq!(
        record(&fx, "db.example.internal.", "A").await,
        Some(vec![fx.ip2.clone()])
    );
    assert_eq!(
        record(&fx, "_baton.db.example.internal.", "TXT").await,
        Some(vec!["\"baton epoch=2 server=node-2 group=web\"".to_string()])
    );
    let calls = fx.moto.calls();
    assert_eq!(
        calls.get("route53.ChangeResourceRecordSets"),
        Some(&1),
        "one batch: {calls:?}"
    );
    let upd = ev.find("BTN-6016");
    assert!(upd.fields.contains_key("insync_ms"), "{upd:?}");
    // Stale epochs are refused, the old owner's deactivation leaves the record alone.
    let e = d1.activate(&ctx("node-1", 1)).await.unwrap_err();
    assert_eq!(e.code(), "fenced", "{e:?}");
    assert_eq!(ev.find("BTN-6012").message, e.to_string());
    d1.deactivate(&ctx("node-1", 1)).await.unwrap();
    assert_eq!(
        record(&fx, "db.example.internal.", "A").await,
        Some(vec![fx.ip2.clone()])
    );
    // The monitor sees a record changed by hand.
    let probe = reg
        .build_probe("aws-dns", &dns_params(&fx, &fx.ip2, ""))
        .unwrap();
    probe.probe(&pctx()).await.unwrap();
    use aws_sdk_route53::types::*;
    let set = |ip: &str| {
        ResourceRecordSet::builder()
            .name("db.example.internal.")
            .r#type(RrType::A)
            .ttl(60)
            .resource_records(ResourceRecord::builder().value(ip).build().unwrap())
            .build()
            .unwrap()
    };
    fx.clients
        .route53()
        .change_resource_record_sets()
        .hosted_zone_id(&fx.zone)
        .change_batch(
            ChangeBatch::builder()
                .changes(
                    Change::builder()
                        .action(ChangeAction::Delete)
                        .resource_record_set(set(&fx.ip2))
                        .build()
                        .unwrap(),
                )
                .changes(
                    Change::builder()
                        .action(ChangeAction::Create)
                        .resource_record_set(set("10.0.99.99"))
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let e = probe.probe(&pctx()).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("IP address different from the setting"),
        "{e}"
    );
    assert!(ev.find("BTN-6004").message.contains("10.0.99.99"));
    // Restart repairs it (DELETE of the value found + CREATE).
    d2.activate(&ctx("node-2", 2)).await.unwrap();
    probe.probe(&pctx()).await.unwrap();
    // Clean stop with delete_on_deactivate: the record and its epoch record are gone.
    d2.deactivate(&ctx("node-2", 2)).await.unwrap();
    assert_eq!(record(&fx, "db.example.internal.", "A").await, None);
    assert_eq!(
        record(&fx, "_baton.db.example.internal.", "TXT").await,
        None
    );
    let e = probe.probe(&pctx()).await.unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
    // Unknown zone.
    let (s, mut ev) = shared(&fx);
    let d = AwsDnsDriver::from_params(
        &table(&format!(
            "hosted_zone_id = 'ZNOPE0000'\nrecord_name = 'db.example.internal.'\nip = '{}'",
            fx.ip1
        )),
        s,
        false,
    )
    .unwrap();
    d.activate(&ctx("node-1", 3)).await.unwrap_err();
    assert!(ev.find("BTN-6007").message.contains("No hosted zone found"));
}

#[tokio::test]
async fn dns_monitor_resolves_through_the_system_resolver() {
    let Some(fx) = fixture().await else { return };
    let zone = fx
        .clients
        .route53()
        .create_hosted_zone()
        .name("localhost.")
        .caller_reference("baton-localhost")
        .send()
        .await
        .unwrap()
        .hosted_zone
        .unwrap()
        .id
        .trim_start_matches("/hostedzone/")
        .to_string();
    // `localhost.` is answered by /etc/hosts, whatever moto's zone says.
    let (s, mut ev) = shared(&fx);
    let reg = AwsRegistry::from_shared(s.clone());
    let p = |ip: &str| {
        table(&format!(
            "hosted_zone_id = '{zone}'\nrecord_name = 'localhost.'\nip = '{ip}'\nresolve = true"
        ))
    };
    let d = AwsDnsDriver::from_params(&p("127.0.0.1"), s.clone(), true).unwrap();
    d.activate(&ctx("node-1", 1)).await.unwrap();
    let probe = reg.build_probe("aws-dns", &p("127.0.0.1")).unwrap();
    probe.probe(&pctx()).await.unwrap();
    // The record says 127.0.0.2 and so does the setting, but the resolver says 127.0.0.1.
    let d = AwsDnsDriver::from_params(&p("127.0.0.2"), s.clone(), true).unwrap();
    d.activate(&ctx("node-1", 2)).await.unwrap();
    let probe = reg.build_probe("aws-dns", &p("127.0.0.2")).unwrap();
    let e = probe.probe(&pctx()).await.unwrap_err();
    assert!(e.to_string().contains("different from the setting"), "{e}");
    assert!(ev.find("BTN-6017").message.contains("127.0.0.1"));
}

#[tokio::test]
async fn az_monitor_reports_impaired_and_invalid_zones() {
    let Some(fx) = fixture().await else { return };
    let (s, mut ev) = shared(&fx);
    let reg = AwsRegistry::from_shared(s);
    let probe = reg
        .build_probe("aws-az", &table("zone = 'us-east-1a'"))
        .unwrap();
    let ok = probe.probe(&pctx()).await.unwrap();
    assert_eq!(ok.detail.as_deref(), Some("us-east-1a is available"));
    fx.moto.set_zone_state("us-east-1a", "impaired");
    let e = probe.probe(&pctx()).await.unwrap_err();
    assert!(matches!(e, ProviderError::Unhealthy(_)), "{e:?}");
    assert!(ev
        .find("BTN-6013")
        .message
        .contains("us-east-1a is impaired"));
    fx.moto.clear_zone_states();
    probe.probe(&pctx()).await.unwrap();
    let bad = reg
        .build_probe("aws-az", &table("zone = 'us-east-1x'"))
        .unwrap();
    let e = bad.probe(&pctx()).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("Invalid availability zone: [us-east-1x]"),
        "{e}"
    );
    ev.find("BTN-6014");
    fx.moto
        .delay("DescribeAvailabilityZones", Duration::from_secs(3), 1);
    let short = ProbeContext {
        timeout: Duration::from_millis(500),
        ..pctx()
    };
    let e = probe.probe(&short).await.unwrap_err();
    assert!(e.is_api_error(), "a timeout is the API's failure: {e:?}");
}

/// A minimal IMDSv2: PUT token, then GETs with the token header.
async fn fake_imds(eni: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = l.accept().await else {
                return;
            };
            let eni = eni.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let line = req.lines().next().unwrap_or("").to_string();
                let body = if line.starts_with("PUT /latest/api/token") {
                    Some("TOKEN".to_string())
                } else if !req
                    .to_ascii_lowercase()
                    .contains("x-aws-ec2-metadata-token: token")
                {
                    None
                } else if line.starts_with("GET /latest/meta-data/mac ") {
                    Some("0a:00:00:00:00:01".into())
                } else if line.contains("/network/interfaces/macs/0a:00:00:00:00:01/interface-id") {
                    Some(eni)
                } else if line.contains("/placement/availability-zone ") {
                    Some("us-east-1b".into())
                } else {
                    None
                };
                let resp = match body {
                    Some(b) => format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-aws-ec2-metadata-token-ttl-seconds: 21600\r\nconnection: close\r\n\r\n{b}",
                        b.len()
                    ),
                    None => "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".into(),
                };
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn eni_and_zone_are_discovered_from_imdsv2_when_omitted() {
    let Some(fx) = fixture().await else { return };
    let url = fake_imds(fx.eni2.clone()).await;
    let (sink, rx) = EventSink::channel(100);
    let settings = AwsSection {
        endpoint_url: Some(fx.moto.endpoint.clone()),
        imds: true,
        ..AwsSection::default()
    };
    let s = Arc::new(
        AwsShared::new(&settings)
            .with_clients(fx.clients.clone())
            .with_imds_endpoint(&url)
            .with_events(sink),
    );
    let mut ev = Events(rx, Vec::new());
    let d = AwsVipDriver::from_params(
        &table(&format!(
            "ip = '{VIP}'\nvpc_id = '{}'\nlocal_address = false",
            fx.vpc
        )),
        s.clone(),
    )
    .unwrap();
    d.activate(&ctx("node-2", 1)).await.unwrap();
    assert!(routes(&fx)
        .await
        .iter()
        .all(|r| r.1.as_deref() == Some(fx.eni2.as_str())));
    assert!(ev.find("BTN-6019").message.contains(&fx.eni2));
    let reg = AwsRegistry::from_shared(s);
    let az = reg.build_probe("aws-az", &table("")).unwrap();
    assert_eq!(
        az.probe(&pctx()).await.unwrap().detail.as_deref(),
        Some("us-east-1b is available")
    );
}

#[tokio::test]
async fn preflight_checks_ids_and_permissions_and_policy_names_them() {
    let Some(fx) = fixture().await else { return };
    let cfg_text = format!(
        r#"
[cluster]
name = "pf"
key_file = "k"
[aws]
region = "us-east-1"
[[server]]
name = "node-1"
interconnects = ["127.0.0.1:7001"]
api = "127.0.0.1:7000"
[[server]]
name = "node-2"
interconnects = ["127.0.0.2:7001"]
api = "127.0.0.2:7000"
[[group]]
name = "web"
servers = ["node-1", "node-2"]
[[group.resource]]
kind = "aws-vip"
name = "vip"
ip = "{VIP}"
vpc_id = "{vpc}"
local_address = false
[group.resource.server.node-1]
eni_id = "{eni1}"
[group.resource.server.node-2]
eni_id = "{eni2}"
[[group.resource]]
kind = "aws-eip"
name = "eip"
allocation_id = "{alloc}"
[group.resource.server.node-1]
eni_id = "{eni1}"
[group.resource.server.node-2]
eni_id = "{eni2}"
[[group.resource]]
kind = "aws-dns"
name = "dns"
hosted_zone_id = "{zone}"
record_name = "db.example.internal."
[group.resource.server.node-1]
ip = "{ip1}"
[group.resource.server.node-2]
ip = "{ip2}"
[[monitor]]
kind = "aws-az"
name = "az"
[monitor.server.node-1]
zone = "us-east-1a"
[monitor.server.node-2]
zone = "us-east-1q"
"#,
        vpc = fx.vpc,
        eni1 = fx.eni1,
        eni2 = fx.eni2,
        alloc = fx.alloc,
        zone = fx.zone,
        ip1 = fx.ip1,
        ip2 = fx.ip2,
    );
    let loaded = baton_core::config::load_str("pf.toml", &cfg_text, &baton_core::config::AnyKind);
    let cfg = match loaded {
        Ok(l) => l.config,
        Err(e) => panic!("{e:?}"),
    };
    let found = preflight::check(&cfg, "node-1", &fx.clients, Duration::from_secs(10)).await;
    let show = || {
        found
            .iter()
            .map(|f| format!("{} {} {:?} {}", f.subject, f.check, f.status, f.detail))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        found.iter().all(|f| f.status != preflight::Status::Fail),
        "{}",
        show()
    );
    assert!(
        found
            .iter()
            .any(|f| f.check == "permission:AssociateAddress" && f.status == preflight::Status::Ok),
        "{}",
        show()
    );
    assert!(
        found
            .iter()
            .any(|f| f.check == "permission:CreateTags" && f.status == preflight::Status::Ok),
        "{}",
        show()
    );
    assert!(
        found
            .iter()
            .any(|f| f.check == "source-dest-check" && f.status == preflight::Status::Warn),
        "{}",
        show()
    );
    let found = preflight::check(&cfg, "node-2", &fx.clients, Duration::from_secs(10)).await;
    assert!(
        found.iter().any(|f| f.check == "zone"
            && f.status == preflight::Status::Fail
            && f.detail.contains("us-east-1q")),
        "{found:?}"
    );
    fx.moto
        .fail("AssociateAddress", "UnauthorizedOperation", 403, -1);
    let found = preflight::check(&cfg, "node-1", &fx.clients, Duration::from_secs(10)).await;
    assert!(
        found.iter().any(
            |f| f.check == "permission:AssociateAddress" && f.status == preflight::Status::Fail
        ),
        "{found:?}"
    );
    let policy = preflight::iam_policy(&cfg).to_string();
    for want in [
        "ec2:ReplaceRoute",
        &format!("vpc/{}", fx.vpc),
        &format!("elastic-ip/{}", fx.alloc),
        &format!("network-interface/{}", fx.eni2),
        &format!("hostedzone/{}", fx.zone),
        "_baton.db.example.internal",
        "ec2:DescribeAvailabilityZones",
        "baton:*",
    ] {
        assert!(policy.contains(want), "{want} missing from {policy}");
    }
}

/// Seconds since the Unix epoch (moto's log uses the same clock).
fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Per pattern: from "activate" to the change being visible at the emulator (the time
/// moto logged the mutating call), the activation's total time, API calls per failover,
/// and the raw SDK latency of the same mutating calls as the reference. Run by
/// `bench/aws.sh` (`BATON_BENCH_ROUNDS` failovers per pattern, default 20).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with bench/aws.sh"]
async fn bench_failover_per_pattern() {
    let Some(fx) = fixture().await else { return };
    let rounds: u64 = std::env::var("BATON_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let (s, _ev) = shared(&fx);
    let ec2 = fx.clients.ec2();
    let r53 = fx.clients.route53();
    // Warm up (moto's first EC2 and Route 53 calls are slow).
    let _ = ec2.describe_route_tables().send().await;
    let _ = r53
        .list_resource_record_sets()
        .hosted_zone_id(&fx.zone)
        .send()
        .await;
    let enis = [fx.eni1.clone(), fx.eni2.clone()];
    let vips: Vec<AwsVipDriver> = enis
        .iter()
        .map(|e| AwsVipDriver::from_params(&vip_params(&fx, e, ""), s.clone()).unwrap())
        .collect();
    let eips: Vec<AwsEipDriver> = enis
        .iter()
        .map(|e| AwsEipDriver::from_params(&eip_params(&fx, e), s.clone()).unwrap())
        .collect();
    // First activations (one-time checks) outside the measurement.
    vips[0].activate(&ctx("node-1", 1)).await.unwrap();
    eips[0].activate(&ctx("node-1", 1)).await.unwrap();
    let mut rows = Vec::new();
    for pattern in ["vip", "eip", "dns"] {
        let mut visible = Vec::new();
        let mut total = Vec::new();
        let mut calls = Vec::new();
        let mut raw = Vec::new();
        for i in 0..rounds {
            let epoch = i + 2;
            let who = usize::try_from(epoch % 2).unwrap();
            let server = ["node-1", "node-2"][who];
            // A DNS driver per round with its own address: moto refuses a CREATE that
            // repeats an earlier one (see the driver), which would time its fallback.
            let dns = AwsDnsDriver::from_params(
                &dns_params(&fx, &format!("10.0.{}.{}", 110 + who * 10, 10 + i), ""),
                s.clone(),
                false,
            )
            .unwrap();
            fx.moto.reset_calls();
            let t0 = now_s();
            let c = ctx(server, epoch);
            match pattern {
                "vip" => vips[who].activate(&c).await.unwrap(),
                "eip" => eips[who].activate(&c).await.unwrap(),
                _ => dns.activate(&c).await.unwrap(),
            }
            let t1 = now_s();
            let op = match pattern {
                "vip" => "ec2.ReplaceRoute",
                "eip" => "ec2.AssociateAddress",
                _ => "route53.ChangeResourceRecordSets",
            };
            let log = fx.moto.log();
            let seen = log
                .iter()
                .filter(|(_, o, st)| o == op && *st == 200)
                .map(|(t, _, _)| *t)
                .fold(f64::NAN, f64::max);
            visible.push((seen - t0) * 1000.0);
            total.push((t1 - t0) * 1000.0);
            calls.push(fx.moto.calls().values().sum::<u64>() as f64);
            // Reference: the same mutating calls through the SDK, nothing else (to the
            // target just set, so the next round still has a failover to do).
            let other = &enis[who];
            let r0 = now_s();
            match pattern {
                "vip" => {
                    for rt in [&fx.rta, &fx.rtb] {
                        ec2.replace_route()
                            .route_table_id(rt)
                            .destination_cidr_block(format!("{VIP}/32"))
                            .network_interface_id(other)
                            .send()
                            .await
                            .unwrap();
                    }
                }
                "eip" => {
                    ec2.associate_address()
                        .allocation_id(&fx.alloc)
                        .network_interface_id(other)
                        .allow_reassociation(true)
                        .send()
                        .await
                        .unwrap();
                }
                _ => {
                    use aws_sdk_route53::types::*;
                    let set = ResourceRecordSet::builder()
                        .name(format!("raw{i}.example.internal."))
                        .r#type(RrType::A)
                        .ttl(60)
                        .resource_records(
                            ResourceRecord::builder().value("10.9.9.9").build().unwrap(),
                        )
                        .build()
                        .unwrap();
                    r53.change_resource_record_sets()
                        .hosted_zone_id(&fx.zone)
                        .change_batch(
                            ChangeBatch::builder()
                                .changes(
                                    Change::builder()
                                        .action(ChangeAction::Create)
                                        .resource_record_set(set)
                                        .build()
                                        .unwrap(),
                                )
                                .build()
                                .unwrap(),
                        )
                        .send()
                        .await
                        .unwrap();
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
    println!("\nAWS failover per pattern against moto ({rounds} failovers each; times in ms, median / p90)");
    println!(
        "{:<8} {:>16} {:>16} {:>10} {:>16} {:>14}",
        "pattern", "visible", "activation", "API calls", "raw SDK calls", "visible / raw"
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
}

/// The local half of `aws-vip`: the VIP on an interface, in a network namespace of its
/// own (root only; skipped elsewhere).
#[tokio::test]
async fn vip_local_address_follows_activation_in_a_namespace() {
    let Some(fx) = fixture().await else { return };
    let ns = format!("btaws{}", std::process::id());
    let ip = |args: &[&str]| {
        std::process::Command::new("ip")
            .args(args)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ip(&["netns", "add", &ns]) {
        baton_tests::skip::skip(
            "vip_local_address_follows_activation_in_a_namespace",
            "`ip netns add` does not work here",
        );
        return;
    }
    struct Guard(String);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.0])
                .status();
        }
    }
    let _g = Guard(ns.clone());
    assert!(ip(&[
        "-n", &ns, "link", "add", "dum0", "type", "veth", "peer", "name", "dum1"
    ]));
    assert!(ip(&["-n", &ns, "link", "set", "dum0", "up"]));
    assert!(ip(&["-n", &ns, "link", "set", "dum1", "up"]));
    let has_vip = || {
        let out = std::process::Command::new("ip")
            .args(["-n", &ns, "-o", "addr", "show", "dev", "dum0"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(&format!("{VIP}/32"))
    };
    let (s, _ev) = shared(&fx);
    let params = table(&format!(
        "ip = '{VIP}'\nvpc_id = '{}'\neni_id = '{}'\ndevice = 'dum0'",
        fx.vpc, fx.eni2
    ));
    let d = AwsVipDriver::from_params(&params, s.clone())
        .unwrap()
        .with_netns(&ns);
    let probe = baton_providers::aws::vip::AwsVipProbe::from_params(&params, s)
        .unwrap()
        .with_netns(&ns);
    d.activate(&ctx("node-2", 1)).await.unwrap();
    assert!(has_vip());
    assert_eq!(
        d.check(&ctx("node-2", 1)).await.unwrap(),
        CheckOutcome::Active
    );
    probe.probe(&pctx()).await.unwrap();
    d.deactivate(&ctx("node-2", 1)).await.unwrap();
    assert!(!has_vip());
    // The routes stay with the last owner; the resource is inactive here.
    assert!(routes(&fx)
        .await
        .iter()
        .all(|r| r.1.as_deref() == Some(fx.eni2.as_str())));
    assert_eq!(
        d.check(&ctx("node-2", 1)).await.unwrap(),
        CheckOutcome::Inactive
    );
    let e = probe.probe(&pctx()).await.unwrap_err();
    assert!(e.to_string().contains("not on a local interface"), "{e}");
}

#[tokio::test]
async fn a_self_fence_stop_makes_no_cloud_call_and_the_next_owner_takes_over() {
    let Some(fx) = fixture().await else { return };
    let (s, _ev) = shared(&fx);
    let reg = AwsRegistry::from_shared(s.clone());
    for kind in ["aws-vip", "aws-eip", "aws-dns"] {
        assert!(reg.local_fence_stop_ms(kind).is_some(), "{kind}");
    }
    assert_eq!(reg.local_fence_stop_ms("aws-az"), None);
    let vip1 = AwsVipDriver::from_params(&vip_params(&fx, &fx.eni1, ""), s.clone()).unwrap();
    let vip2 = AwsVipDriver::from_params(&vip_params(&fx, &fx.eni2, ""), s.clone()).unwrap();
    let eip1 = AwsEipDriver::from_params(&eip_params(&fx, &fx.eni1), s.clone()).unwrap();
    let eip2 = AwsEipDriver::from_params(&eip_params(&fx, &fx.eni2), s.clone()).unwrap();
    let dns1 = AwsDnsDriver::from_params(&dns_params(&fx, &fx.ip1, ""), s.clone(), false).unwrap();
    let dns2 = AwsDnsDriver::from_params(&dns_params(&fx, &fx.ip2, ""), s.clone(), false).unwrap();
    let drivers: [(&dyn ResourceDriver, &dyn ResourceDriver); 3] =
        [(&vip1, &vip2), (&eip1, &eip2), (&dns1, &dns2)];
    for (d1, _) in drivers {
        d1.activate(&ctx("node-1", 1)).await.unwrap();
    }
    // node-1 fences itself: not one call to the cloud, and everything still says node-1
    // (delete_on_deactivate is on for the record: a normal stop would delete it).
    fx.moto.reset_calls();
    for (d1, _) in drivers {
        d1.fence_stop(&ctx("node-1", 1)).await.unwrap();
    }
    assert_eq!(fx.moto.calls(), Default::default());
    assert!(routes(&fx)
        .await
        .iter()
        .all(|r| r.1.as_deref() == Some(fx.eni1.as_str())));
    assert_eq!(eip_eni(&fx).await.as_deref(), Some(fx.eni1.as_str()));
    assert_eq!(
        record(&fx, "db.example.internal.", "A").await,
        Some(vec![fx.ip1.clone()])
    );
    // The next owner's fenced writes take all three over from node-1's claim.
    for (_, d2) in drivers {
        d2.activate(&ctx("node-2", 2)).await.unwrap();
        assert_eq!(
            d2.check(&ctx("node-2", 2)).await.unwrap(),
            CheckOutcome::Active,
            "{}",
            d2.kind()
        );
    }
    assert!(routes(&fx)
        .await
        .iter()
        .all(|r| r.1.as_deref() == Some(fx.eni2.as_str()) && r.2.as_deref() == Some("2 node-2")));
    assert_eq!(eip_eni(&fx).await.as_deref(), Some(fx.eni2.as_str()));
    assert_eq!(
        record(&fx, "db.example.internal.", "A").await,
        Some(vec![fx.ip2.clone()])
    );
    // And node-1's stale epoch cannot take any of them back.
    for (d1, _) in drivers {
        let e = d1.activate(&ctx("node-1", 1)).await.unwrap_err();
        assert_eq!(e.code(), "fenced", "{}: {e:?}", d1.kind());
    }
}

#[tokio::test]
async fn prepare_does_the_once_checks_before_the_first_activation() {
    let Some(fx) = fixture().await else { return };
    let (s, mut ev) = shared(&fx);
    // A standby's VIP: prepared at start (DescribeVpcs, DescribeNetworkInterfaces) ...
    let d = AwsVipDriver::from_params(&vip_params(&fx, &fx.eni2, ""), s.clone()).unwrap();
    fx.moto.reset_calls();
    d.prepare(&ctx("node-2", 0)).await.unwrap();
    let calls = fx.moto.calls();
    assert_eq!(calls.get("ec2.DescribeVpcs"), Some(&1), "{calls:?}");
    assert_eq!(
        calls.get("ec2.DescribeNetworkInterfaces"),
        Some(&1),
        "{calls:?}"
    );
    assert!(routes(&fx)
        .await
        .iter()
        .all(|r| r.1.as_deref() != Some(fx.eni2.as_str())));
    // ... so its takeover makes neither call: read, tag, replace, read back.
    fx.moto.reset_calls();
    d.activate(&ctx("node-2", 1)).await.unwrap();
    let calls = fx.moto.calls();
    assert_eq!(calls.get("ec2.DescribeVpcs"), None, "{calls:?}");
    assert_eq!(
        calls.get("ec2.DescribeNetworkInterfaces"),
        None,
        "{calls:?}"
    );
    assert_eq!(calls.get("ec2.ReplaceRoute"), Some(&2), "{calls:?}");
    // The other two kinds change nothing and call nothing when prepared.
    fx.moto.reset_calls();
    AwsEipDriver::from_params(&eip_params(&fx, &fx.eni2), s.clone())
        .unwrap()
        .prepare(&ctx("node-2", 0))
        .await
        .unwrap();
    AwsDnsDriver::from_params(&dns_params(&fx, &fx.ip2, ""), s.clone(), false)
        .unwrap()
        .prepare(&ctx("node-2", 0))
        .await
        .unwrap();
    assert_eq!(fx.moto.calls(), Default::default());
    // A standby with a wrong ENI is reported when it is prepared, not at its failover,
    // and nothing is cached: the activation checks (and fails) again.
    let bad = AwsVipDriver::from_params(&vip_params(&fx, "eni-0123456789abcdef0", ""), s).unwrap();
    let e = bad.prepare(&ctx("node-2", 0)).await.unwrap_err();
    assert!(e.to_string().contains("eni-0123456789abcdef0"), "{e}");
    assert!(ev
        .find("BTN-6007")
        .message
        .contains("networkInterface ID 'eni-0123456789abcdef0' does not exist"));
    bad.activate(&ctx("node-2", 2)).await.unwrap_err();
}
