//! The Azure scenarios of issue 12, each with three real `baton agent` processes (the
//! group on node-1 and node-2, node-3 a vote) against the Azure fake
//! (`tests/azure/fake.py`, checked against Microsoft's specs):
//! 1. `azure-dns`, `azure-vip` and `azure-lb-probe` together: the record and the routes
//!    follow a SIGKILL failover, and a prober connecting to both servers' probe ports
//!    every 50 ms never finds both answering.
//! 2. A Scheduled Event (Reboot) for the active server: `azure-events` moves the group
//!    before the event's time, then the old server approves the event.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Tests measure the real time of real processes and sockets: they read the clock directly.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_tests::azure::{AzureFake, RESOURCE_GROUP, SUBSCRIPTION, TENANT};
use baton_tests::cloud_cluster::CloudCluster;
use baton_tests::{serial, wait_until, Signal};
use serde_json::json;

const T: Duration = Duration::from_secs(30);
const APP: &str = "00000000-aaaa-bbbb-cccc-000000000009";
const IPS: [&str; 3] = ["10.0.1.4", "10.0.1.5", "10.0.1.6"];
const VIP: &str = "10.9.0.10";
const ROUTE: &str = "baton-vip-10-9-0-10";

struct World {
    fake: AzureFake,
    _dir: tempfile::TempDir,
    preamble: String,
}

fn world() -> Option<World> {
    let fake = AzureFake::start()?;
    fake.zone("example.com", false);
    fake.client_secret(APP, "s3cret");
    for (i, ip) in IPS.iter().enumerate() {
        fake.vm(
            &format!("node-{}", i + 1),
            ip,
            &format!("11111111-0000-0000-0000-00000000000{}", i + 1),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let ep = &fake.endpoint;
    let preamble = format!(
        r#"[azure]
subscription_id = "{SUBSCRIPTION}"
resource_group = "{RESOURCE_GROUP}"
tenant_id = "{TENANT}"
endpoint = "{ep}"
authority = "{ep}"
imds_endpoint = "{ep}"
identity = "service-principal"
client_id = "{APP}"
client_secret_file = "{}"
call_timeout = "2s"
deadline = "10s"
"#,
        secret.display()
    );
    Some(World {
        fake,
        _dir: dir,
        preamble,
    })
}

fn start(w: &World, name: &str, net: u8, body: &str) -> CloudCluster {
    CloudCluster::start_with(
        "azure",
        name,
        net,
        ["1", "2", "3"],
        &w.preamble,
        Box::new(|_: &str| Vec::new()),
        body,
    )
}

fn group() -> &'static str {
    "\n[[group]]\nname = \"web\"\nservers = [\"node-1\", \"node-2\"]\n"
}

/// Per-server keys `key = IPS[i]` for the group's servers, node-1 and node-2.
fn per_server(table: &str, key: &str) -> String {
    (0..2)
        .map(|i| format!("[{table}.server.node-{}]\n{key} = \"{}\"\n", i + 1, IPS[i]))
        .collect()
}

fn record(w: &World) -> Option<(String, String)> {
    let set = w.fake.record_set("example.com", false, "A", "db")?;
    let p = &set["properties"];
    Some((
        p["ARecords"][0]["ipv4Address"].as_str()?.to_string(),
        p["metadata"]["baton_epoch"].as_str()?.to_string(),
    ))
}

fn wait_moved(w: &World, to: &str, server: &str, timeout: Duration) {
    wait_until(
        &format!("the record and both routes to point at {to} ({server})"),
        timeout,
        || {
            let r = record(w).ok_or("no record")?;
            let a = w.fake.route_next_hop("rt-a", ROUTE, "web");
            let b = w.fake.route_next_hop("rt-b", ROUTE, "web");
            let ok = r.0 == to
                && r.1.ends_with(server)
                && a.0.as_deref() == Some(to)
                && b.0.as_deref() == Some(to)
                && a.1.as_deref().is_some_and(|m| m.ends_with(server));
            if ok {
                Ok(())
            } else {
                Err(format!("record {r:?}, rt-a {a:?}, rt-b {b:?}"))
            }
        },
    );
}

async fn answers(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_millis(40),
            tokio::net::TcpStream::connect(addr)
        )
        .await,
        Ok(Ok(_))
    )
}

#[test]
fn a1_record_routes_and_probe_port_follow_a_sigkill_failover() {
    let _g = serial();
    let Some(w) = world() else { return };
    w.fake.route_table(
        "rt-a",
        json!([{"name": "default", "addressPrefix": "0.0.0.0/0", "nextHopType": "Internet"}]),
    );
    w.fake.route_table("rt-b", json!([]));
    let net = 71;
    let probe_port = 26_071;
    let probe_addr =
        |s: u8| -> SocketAddr { format!("127.{net}.0.{s}:{probe_port}").parse().unwrap() };
    w.fake.control(
        "POST",
        "/_fake/load-balancers",
        Some(
            json!({"subscription": SUBSCRIPTION, "resourceGroup": RESOURCE_GROUP, "name": "ilb",
            "frontendIPConfigurations": [{"name": "frontend", "privateIPAddress": "10.0.1.100"}],
            "backendAddressPools": [{"name": "backend"}],
            "probes": [{"name": "baton", "protocol": "Tcp", "port": probe_port}],
            "loadBalancingRules": [{"name": "app", "protocol": "Tcp", "frontendPort": 80,
                "backendPort": 80, "probe": "baton", "backendAddressPool": "backend"}]}),
        ),
    );
    let body = format!(
        r#"{g}
[[group.resource]]
kind = "azure-dns"
name = "dns"
zone = "example.com"
record = "db"
ttl = 30
activate_timeout = "20s"
{dns_ips}
[[group.resource]]
kind = "azure-vip"
name = "vip"
ip = "{VIP}"
route_tables = ["rt-a", "rt-b"]
local_address = false
activate_timeout = "20s"
{hops}
[[group.resource]]
kind = "azure-lb-probe"
name = "probe"
port = {probe_port}
depends_on = ["dns", "vip"]
[group.resource.server.node-1]
bind = "127.{net}.0.1"
[group.resource.server.node-2]
bind = "127.{net}.0.2"

[[monitor]]
kind = "azure-lb-probe"
name = "probew"
interval = "1s"
timeout = "5s"
retries = 0
resource = "probe"
port = {probe_port}
load_balancer = "ilb"
rule = "app"
[monitor.server.node-1]
bind = "127.{net}.0.1"
[monitor.server.node-2]
bind = "127.{net}.0.2"
[monitor.server.node-3]
bind = "127.{net}.0.3"
"#,
        g = group(),
        dns_ips = per_server("group.resource", "ip"),
        hops = per_server("group.resource", "next_hop"),
    );
    let mut c = start(&w, "a1", net, &body);
    c.wait_owner("web", "node-1", T);
    wait_moved(&w, IPS[0], "node-1", T);
    c.wait_monitors_normal("node-1", &["probew"], T);
    c.wait_event("node-1", "BTN-8010", T, |_| true);
    // The prober: both servers' probe ports every 50 ms, as the load balancer would.
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let stop = stop.clone();
        let (a1, a2) = (probe_addr(1), probe_addr(2));
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let (x, y) = tokio::join!(answers(a1), answers(a2));
                    seen.push((x, y));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                seen
            })
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    c.kill("node-1", Signal::SIGKILL);
    let e = c.wait_owner("web", "node-2", T);
    wait_moved(&w, IPS[1], "node-2", T);
    let moved = t0.elapsed();
    wait_until("node-2's probe port to answer", T, || {
        std::net::TcpStream::connect_timeout(&probe_addr(2), Duration::from_millis(200))
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let seen = prober.join().unwrap();
    assert!(e >= 2, "epoch {e}");
    assert!(seen.len() >= 10, "{} probes", seen.len());
    let both = seen.iter().filter(|s| **s == (true, true)).count();
    assert_eq!(both, 0, "both servers answered the probe at once: {seen:?}");
    let first2 = seen.iter().position(|s| s.1).expect("node-2 answered");
    let last1 = seen.iter().rposition(|s| s.0).expect("node-1 answered");
    assert!(last1 < first2, "node-1 answered after node-2 did: {seen:?}");
    eprintln!(
        "SIGKILL -> record and routes moved: {} ms; probes: {} (node-1 last answered at #{last1}, node-2 first at #{first2})",
        moved.as_millis(),
        seen.len()
    );
    c.wait_event("node-2", "BTN-8010", T, |e| e.message.contains(IPS[1]));
    // The old owner's route and record are gone from its view: the routes' other entry
    // in rt-a is untouched.
    let a = w.fake.route_table_state("rt-a").unwrap();
    assert_eq!(
        a["routes"]["default"]["properties"]["nextHopType"],
        "Internet"
    );
    w.fake.assert_no_violations();
}

#[test]
fn a2_a_scheduled_reboot_moves_the_group_before_it_starts() {
    let _g = serial();
    let Some(w) = world() else { return };
    let body = format!(
        r#"{g}
[[group.resource]]
kind = "azure-dns"
name = "dns"
zone = "example.com"
record = "db"
ttl = 30
activate_timeout = "20s"
{dns_ips}
[[monitor]]
kind = "azure-events"
name = "maint"
group = "web"
timing = "always"
interval = "1s"
timeout = "5s"
retries = 0
recovery = {{ target = "web", restart_retries = 0, failover_retries = 1 }}
[monitor.server.node-1]
vm_name = "node-1"
[monitor.server.node-2]
vm_name = "node-2"
[monitor.server.node-3]
vm_name = "node-3"
"#,
        g = group(),
        dns_ips = per_server("group.resource", "ip"),
    );
    let c = start(&w, "a2", 72, &body);
    c.wait_owner("web", "node-1", T);
    c.wait_monitors_normal("node-1", &["maint"], T);
    c.wait_monitors_normal("node-2", &["maint"], T);
    // Azure announces a reboot of node-1 in 60 s.
    let ev = w.fake.control(
        "POST",
        "/_fake/scheduled-events",
        Some(json!({"EventType": "Reboot", "Resources": ["node-1"], "not_before_s": 60})),
    );
    let id = ev["EventId"].as_str().unwrap().to_string();
    let t0 = Instant::now();
    c.wait_owner("web", "node-2", T);
    let moved = t0.elapsed();
    assert!(
        moved < Duration::from_secs(60),
        "moved after the event's time: {moved:?}"
    );
    c.wait_event("node-1", "BTN-8016", T, |e| e.message.contains(&id));
    // Once the group is gone, node-1 approves the event and the platform starts it.
    c.wait_event("node-1", "BTN-8017", T, |e| e.message.contains(&id));
    let doc = w.fake.control("GET", "/_fake/scheduled-events", None);
    assert_eq!(doc["Events"][0]["EventStatus"], "Started", "{doc}");
    wait_until("the record to hold node-2's address", T, || {
        match record(&w) {
            Some((ip, _)) if ip == IPS[1] => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    eprintln!(
        "event announced -> group online on node-2: {} ms",
        moved.as_millis()
    );
    w.fake.assert_no_violations();
}

#[test]
fn a3_cloud_check_and_the_custom_role_from_the_cli() {
    let Some(w) = world() else { return };
    w.fake.route_table("rt-a", json!([]));
    w.fake.control(
        "POST",
        "/_fake/load-balancers",
        Some(
            json!({"subscription": SUBSCRIPTION, "resourceGroup": RESOURCE_GROUP, "name": "ilb",
            "probes": [{"name": "baton", "protocol": "Tcp", "port": 26073}],
            "loadBalancingRules": [{"name": "app", "frontendPort": 80, "probe": "baton"}]}),
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let bin = baton_tests::bin::baton_bin();
    let baton = baton_tests::Baton::new(&bin, &dir.path().join("baton.toml"));
    baton.keygen(&dir.path().join("cluster.key")).unwrap();
    let mut text = baton_tests::config::ConfigText::new("the baton Azure CLI test", "azure-cli")
        .heartbeat("100ms", "1s", "")
        .host_safe(dir.path(), "20s", "")
        .push(&w.preamble);
    for s in 1..=3u8 {
        text = text.server(
            &format!("node-{s}"),
            None,
            &[format!("127.73.0.{s}:27001")],
            &format!("127.73.0.{s}:27000"),
        );
    }
    let body = format!(
        r#"{g}
[[group.resource]]
kind = "azure-dns"
name = "dns"
zone = "example.com"
record = "db"
{dns_ips}
[[group.resource]]
kind = "azure-vip"
name = "vip"
ip = "{VIP}"
route_tables = ["rt-a", "rt-missing"]
local_address = false
{hops}
[[monitor]]
kind = "azure-lb-probe"
name = "probew"
port = 26073
load_balancer = "ilb"
rule = "app"
[[monitor]]
kind = "azure-events"
name = "maint"
"#,
        g = group(),
        dns_ips = per_server("group.resource", "ip"),
        hops = per_server("group.resource", "next_hop"),
    );
    std::fs::write(&baton.config, text.push("\n").push(&body).build()).unwrap();
    baton.check_config().unwrap_or_else(|e| panic!("{e}"));
    let run = |args: &[&str]| {
        std::process::Command::new(&bin)
            .args(args)
            .arg("-c")
            .arg(&baton.config)
            .output()
            .expect("run baton")
    };
    let findings = |out: &std::process::Output| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                format!(
                    "{} {} {}",
                    f["check"].as_str().unwrap(),
                    f["status"].as_str().unwrap(),
                    f["detail"].as_str().unwrap()
                )
            })
            .collect()
    };
    let has = |f: &[String], prefix: &str| f.iter().any(|x| x.starts_with(prefix));
    let out = run(&["cloud", "check", "-s", "node-1", "--json"]);
    assert_eq!(out.status.code(), Some(1), "rt-missing does not exist");
    let f = findings(&out);
    for want in [
        "zone ok example.com exists",
        "record ok A db absent",
        "route-table ok rt-a exists",
        "route-table fail does not exist",
        "load-balancer ok ilb probes port 26073",
        "permission:Microsoft.Network/routeTables/write ok",
        "permission:Microsoft.Network/dnsZones/A/write ok",
        "scheduled-events ok",
        "vm ok this VM is node-1",
    ] {
        assert!(has(&f, want), "{want}: {f:#?}");
    }
    // The least-privilege custom role, printed for the Azure kinds.
    let out = run(&["cloud", "iam-policy", "--json"]);
    let role: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let actions: Vec<&str> = role["Actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "Microsoft.Network/dnsZones/A/delete",
            "Microsoft.Network/dnsZones/A/read",
            "Microsoft.Network/dnsZones/A/write",
            "Microsoft.Network/dnsZones/read",
            "Microsoft.Network/loadBalancers/read",
            "Microsoft.Network/locations/operations/read",
            "Microsoft.Network/routeTables/read",
            "Microsoft.Network/routeTables/write",
        ]
    );
    assert_eq!(
        role["AssignableScopes"],
        json!([format!(
            "/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}"
        )])
    );
    // The identity gets exactly that role: every permission check passes, and the
    // reads it needs are allowed. With DNS rights only, the route tables are refused.
    w.fake.control(
        "POST",
        "/_fake/permissions",
        Some(
            json!({"subscription": SUBSCRIPTION, "resourceGroup": RESOURCE_GROUP,
            "permissions": [{"actions": role["Actions"], "notActions": []}]}),
        ),
    );
    let f = findings(&run(&["cloud", "check", "-s", "node-2", "--json"]));
    assert!(
        !f.iter()
            .any(|x| x.starts_with("permission:") && !x.contains(" ok ")),
        "{f:#?}"
    );
    assert!(has(&f, "route-table ok rt-a exists"), "{f:#?}");
    w.fake.control(
        "POST",
        "/_fake/permissions",
        Some(
            json!({"subscription": SUBSCRIPTION, "resourceGroup": RESOURCE_GROUP,
            "permissions": [{"actions": ["Microsoft.Network/dnsZones/*"], "notActions": []}]}),
        ),
    );
    let out = run(&["cloud", "check", "-s", "node-1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("permission:Microsoft.Network/routeTables/write")
            && text.contains("not allowed on resource group rg-baton"),
        "{text}"
    );
    assert!(text.contains("not authorized"), "{text}");
    assert_eq!(out.status.code(), Some(1));
    w.fake.assert_no_violations();
}
