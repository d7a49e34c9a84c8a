//! The Google Cloud scenarios of issue 13 with real `baton agent` processes against the
//! Google Cloud fake (`tests/gcp/fake.py`): two servers for the group and a third vote,
//! each agent with its own VM's metadata server.
//! 1. DNS and route VIP: the active agent is SIGKILLed; the record holds the standby's
//!    address (from its metadata server), the VIP route's next hop is the standby's
//!    instance, both with the new epoch; a clean stop deletes the record and the route.
//! 2. A maintenance event announced on the active server's VM moves the group first
//!    (the old server is still up); an alias IP follows it.
//! 3. The internal load balancer's health check: a prober every 50 ms never finds two
//!    servers answering, through a move and a SIGKILL of the owner.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Tests measure the real time of real processes and sockets: they read the clock directly.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use baton_tests::gcp::{start_cluster, GcpFake, PROJECT, PUBLIC_ZONE};
use baton_tests::{serial, Signal};
use serde_json::json;

const T: Duration = Duration::from_secs(30);
const NAME: &str = "db.example.com.";
const ROUTE: &str = "baton-10-1-0-20";

fn group() -> &'static str {
    "\n[[group]]\nname = \"web\"\nservers = [\"node-1\", \"node-2\"]\n"
}

/// The route's next hop instance and description.
fn route(fake: &GcpFake) -> Result<Option<(String, String)>, String> {
    let state = fake.control("GET", "/_fake/state", None);
    let r = &state["projects"][PROJECT]["routes"][ROUTE];
    if r.is_null() {
        return Ok(None);
    }
    Ok(Some((
        r["nextHopInstance"]
            .as_str()
            .unwrap_or("")
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_string(),
        r["description"].as_str().unwrap_or("").to_string(),
    )))
}

#[test]
fn s1_dns_record_and_vip_route_follow_a_sigkill_failover() {
    let _g = serial();
    let Some(fake) = GcpFake::start() else {
        return;
    };
    // No address, instance or zone in the file: each agent asks its VM's metadata server.
    let body = format!(
        r#"{g}
[[group.resource]]
kind = "gcp-dns"
name = "dns"
zone = "{PUBLIC_ZONE}"
record_name = "{NAME}"
ttl = 30
activate_timeout = "20s"

[[group.resource]]
kind = "gcp-vip"
name = "vip"
ip = "10.1.0.20"
activate_timeout = "20s"

[[monitor]]
kind = "gcp-dns"
name = "dnsw"
interval = "1s"
timeout = "10s"
retries = 0
on_api_error = "warn"
group = "web"
timing = "active"
recovery = {{ target = "dns", restart_retries = 3 }}
zone = "{PUBLIC_ZONE}"
record_name = "{NAME}"
"#,
        g = group()
    );
    let mut c = start_cluster(&fake, "fail", 91, &body);
    c.wait_owner("web", "node-1", T);
    baton_tests::wait_until("the record and the route are node-1's", T, || {
        let a = fake.rrdatas(PUBLIC_ZONE, NAME, "A");
        let r = route(&fake)?;
        match (&a, &r) {
            (Some(a), Some((hop, _))) if a == &["10.128.0.2"] && hop == "node-1" => Ok(()),
            _ => Err(format!("{a:?} {r:?}")),
        }
    });
    c.kill("node-1", Signal::SIGKILL);
    let epoch = c.wait_owner("web", "node-2", T);
    assert!(epoch >= 2, "epoch {epoch}");
    baton_tests::wait_until("the record and the route are node-2's", T, || {
        let a = fake.rrdatas(PUBLIC_ZONE, NAME, "A");
        let txt = fake.rrdatas(PUBLIC_ZONE, &format!("_baton.{NAME}"), "TXT");
        let r = route(&fake)?;
        let mark = format!("baton epoch={epoch} server=node-2 group=web");
        match (&a, &txt, &r) {
            (Some(a), Some(t), Some((hop, d)))
                if a == &["10.128.0.3"]
                    && t == &[format!("\"{mark}\"")]
                    && hop == "node-2"
                    && *d == mark =>
            {
                Ok(())
            }
            _ => Err(format!("{a:?} {txt:?} {r:?}")),
        }
    });
    // The name servers answer the new address (the activation waited for `done`).
    assert_eq!(
        fake.answer(PUBLIC_ZONE, NAME, "A"),
        Some(vec!["10.128.0.3".to_string()])
    );
    c.wait_event("node-2", "BTN-8108", T, |e| {
        e.message.contains("10.128.0.3")
    });
    c.wait_event("node-2", "BTN-8111", T, |_| true);
    // A clean stop of the owner deletes both.
    c.kill("node-2", Signal::SIGTERM);
    c.wait_exit("node-2", T);
    assert_eq!(fake.rrdatas(PUBLIC_ZONE, NAME, "A"), None);
    assert_eq!(route(&fake).unwrap(), None);
    fake.assert_no_violations();
}

#[test]
fn s2_a_maintenance_event_on_the_active_server_moves_the_group_first() {
    let _g = serial();
    let Some(fake) = GcpFake::start() else {
        return;
    };
    let body = format!(
        r#"{g}
[[group.resource]]
kind = "gcp-vip"
name = "alias"
ip = "10.128.0.100"
mode = "alias"
activate_timeout = "20s"

[[monitor]]
kind = "gcp-maintenance"
name = "maintw"
interval = "1s"
timeout = "4s"
retries = 0
on_api_error = "warn"
group = "web"
timing = "active"
recovery = {{ target = "web", restart_retries = 0, failover_retries = 1 }}
"#,
        g = group()
    );
    let c = start_cluster(&fake, "maint", 92, &body);
    c.wait_owner("web", "node-1", T);
    let aliases = |key: &str| {
        let state = fake.control("GET", "/_fake/state", None);
        state["projects"][PROJECT]["instances"][key]["networkInterfaces"][0]["aliasIpRanges"]
            .to_string()
    };
    baton_tests::wait_until("the alias is on node-1", T, || {
        let a = aliases("us-central1-a/node-1");
        if a.contains("10.128.0.100/32") {
            Ok(())
        } else {
            Err(a)
        }
    });
    // Compute announces a termination of node-1's host.
    fake.control(
        "POST",
        "/_fake/maintenance",
        Some(json!({"instance": "node-1", "maintenanceEvent": "TERMINATE_ON_HOST_MAINTENANCE"})),
    );
    c.wait_event("node-1", "BTN-8115", T, |_| true);
    c.wait_owner("web", "node-2", T);
    baton_tests::wait_until("the alias moved to node-2", T, || {
        let (a1, a2) = (
            aliases("us-central1-a/node-1"),
            aliases("us-central1-b/node-2"),
        );
        if a2.contains("10.128.0.100/32") && !a1.contains("10.128.0.100/32") {
            Ok(())
        } else {
            Err(format!("node-1 {a1}, node-2 {a2}"))
        }
    });
    fake.assert_no_violations();
}

/// `addr:port` answers a TCP connect within 200 ms.
fn answers(addr: &str) -> bool {
    std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(200)).is_ok()
}

#[test]
fn s3_exactly_one_server_answers_the_health_check_through_moves_and_a_crash() {
    let _g = serial();
    let Some(fake) = GcpFake::start() else {
        return;
    };
    let port = std::net::TcpListener::bind("127.0.93.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let body = format!(
        r#"{g}
[[group.resource]]
kind = "gcp-lb-probe"
name = "ilb"
port = {port}
[group.resource.server.node-1]
address = "127.0.93.1"
[group.resource.server.node-2]
address = "127.0.93.2"

[[monitor]]
kind = "gcp-lb-probe"
name = "ilbw"
interval = "1s"
timeout = "5s"
retries = 0
on_api_error = "warn"
group = "web"
timing = "active"
port = 7080
backend_service = "baton-ilb"
region = "us-central1"
recovery = {{ target = "web", restart_retries = 1 }}
"#,
        g = group()
    );
    let mut c = start_cluster(&fake, "ilb", 93, &body);
    c.wait_owner("web", "node-1", T);
    let (a1, a2) = (format!("127.0.93.1:{port}"), format!("127.0.93.2:{port}"));
    baton_tests::wait_until("node-1 answers the health check", T, || {
        if answers(&a1) {
            Ok(())
        } else {
            Err("not yet".into())
        }
    });
    // The load balancer's prober, every 50 ms, from here on.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
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
    // A move, then a crash of the owner.
    let out = c.ctl(&["group", "move", "web", "--to", "node-2"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    c.wait_owner("web", "node-2", T);
    baton_tests::wait_until("node-2 answers the health check", T, || {
        if answers(&a2) {
            Ok(())
        } else {
            Err("not yet".into())
        }
    });
    // Long enough for the prober (one probe every 50 ms) to see node-2 answer.
    std::thread::sleep(Duration::from_millis(300));
    c.kill("node-2", Signal::SIGKILL);
    c.wait_owner("web", "node-1", T);
    baton_tests::wait_until("node-1 answers again", T, || {
        if answers(&a1) {
            Ok(())
        } else {
            Err("not yet".into())
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = prober.join().unwrap();
    assert!(
        seen.iter().all(|(x, y)| !(*x && *y)),
        "both servers answered at once: {seen:?}"
    );
    assert!(
        seen.iter().any(|(_, y)| *y),
        "node-2 never answered: {seen:?}"
    );
    // The monitor (on the active server) found the backend service's health check on
    // its port: no mismatch reported.
    let alerts = c.alerts("node-1");
    assert!(
        !alerts.iter().any(|e| e.id == "BTN-8113"),
        "{:?}",
        alerts.iter().map(|e| &e.message).collect::<Vec<_>>()
    );
    fake.assert_no_violations();
}
