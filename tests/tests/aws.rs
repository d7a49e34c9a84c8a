//! The AWS scenarios of issue 4, each with two real `baton agent` processes against moto
//! server (the real AWS SDK over HTTP; faults and zone states injected by the harness's
//! middleware):
//! 1. VIP: the active agent is killed, every VIP route points at the standby's ENI.
//! 2. EIP: the allocation moves to the standby's ENI.
//! 3. DNS: the record holds the standby's address; a clean stop deletes it.
//! 4. A VIP route replaced by hand is reported (BTN-6002) and restored.
//! 5. API down with `on_api_error = warn`: warnings, no failover; throttling and 5xx
//!    during a failover's activation are retried and the failover completes.
//! 6. An impaired zone: the AZ monitor's recovery moves the group to the other zone.
//! 7. The seed's error cases (VIP inside the VPC CIDR, unknown ENI, no permission) as
//!    events, the group running where it can.
//!
//! And (issue 14) a holder of aws-vip + aws-eip + aws-dns cut off from the others
//! self-fences without one AWS call, within the group's fence deadline of one interval,
//! and the majority takes the three over after the group's `T + W_g`.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Tests measure the real time of real processes and sockets: they read the clock directly.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use baton_tests::aws::{AwsCluster, AwsWorld, World, VIP};
use baton_tests::{serial, Signal};

const T: Duration = Duration::from_secs(30);

fn vip_resource(w: &World, name: &str, ip: &str, extra: &str) -> String {
    format!(
        r#"
[[group.resource]]
kind = "aws-vip"
name = "{name}"
ip = "{ip}"
vpc_id = "{vpc}"
local_address = false
activate_timeout = "20s"
{extra}
[group.resource.server.node-1]
eni_id = "{e1}"
[group.resource.server.node-2]
eni_id = "{e2}"
"#,
        vpc = w.vpc,
        e1 = w.enis[0],
        e2 = w.enis[1]
    )
}

fn vip_monitor(w: &World) -> String {
    format!(
        r#"
[[monitor]]
kind = "aws-vip"
name = "vipw"
interval = "1s"
timeout = "10s"
retries = 0
on_api_error = "warn"
recovery = {{ target = "vip", restart_retries = 3, failover_retries = 1 }}
ip = "{VIP}"
vpc_id = "{vpc}"
local_address = false
eni_id = "{e2}"
[monitor.server.node-1]
eni_id = "{e1}"
"#,
        vpc = w.vpc,
        e1 = w.enis[0],
        e2 = w.enis[1]
    )
}

const AZ_MONITOR: &str = r#"
[[monitor]]
kind = "aws-az"
name = "azw"
interval = "1s"
timeout = "10s"
retries = 0
on_api_error = "warn"
recovery = { target = "local-server", restart_retries = 0, failover_retries = 1 }
zone = "us-east-1c"
[monitor.server.node-1]
zone = "us-east-1a"
[monitor.server.node-2]
zone = "us-east-1b"
"#;

fn group(name: &str) -> String {
    format!("\n[[group]]\nname = \"{name}\"\nservers = [\"node-1\", \"node-2\"]\n")
}

fn vip_body(w: &World, monitors: &str) -> String {
    format!(
        "{}{}{monitors}",
        group("web"),
        vip_resource(w, "vip", VIP, "")
    )
}

/// `aws-vip` (no local address), `aws-eip` and `aws-dns` of node-1 and node-2, each with
/// the common keys `extra` (ends with a newline when given).
fn vip_eip_dns(w: &World, extra: &str) -> String {
    format!(
        r#"
[[group.resource]]
kind = "aws-vip"
name = "vip"
ip = "{VIP}"
vpc_id = "{vpc}"
local_address = false
{extra}[group.resource.server.node-1]
eni_id = "{e1}"
[group.resource.server.node-2]
eni_id = "{e2}"

[[group.resource]]
kind = "aws-eip"
name = "eip"
allocation_id = "{alloc}"
{extra}[group.resource.server.node-1]
eni_id = "{e1}"
[group.resource.server.node-2]
eni_id = "{e2}"

[[group.resource]]
kind = "aws-dns"
name = "dns"
hosted_zone_id = "{zone}"
record_name = "db.example.internal."
ttl = 60
{extra}[group.resource.server.node-1]
ip = "{ip1}"
[group.resource.server.node-2]
ip = "{ip2}"
"#,
        vpc = w.vpc,
        alloc = w.alloc,
        zone = w.zone,
        e1 = w.enis[0],
        e2 = w.enis[1],
        ip1 = w.ips[0],
        ip2 = w.ips[1],
    )
}

#[test]
fn s1_vip_routes_follow_the_active_server() {
    let _g = serial();
    let Some(world) = AwsWorld::create() else {
        return;
    };
    let w = world.w.clone();
    let mut c = AwsCluster::start(&world, "vip", 61, &vip_body(&w, &vip_monitor(&w)));
    c.wait_owner("web", "node-1", T);
    world.wait_routes(&w.enis[0], T);
    c.wait_event("node-1", "BTN-6021", T, |_| true);
    c.kill("node-1", Signal::SIGKILL);
    let e = c.wait_owner("web", "node-2", T);
    world.wait_routes(&w.enis[1], T);
    let ev = c.wait_one_event("node-2", "BTN-6021", T, |_| true);
    assert!(ev.message.contains(&w.enis[1]), "{}", ev.message);
    assert!(e >= 2, "epoch {e}");
}

#[test]
fn s2_eip_moves_to_the_standby() {
    let _g = serial();
    let Some(world) = AwsWorld::create() else {
        return;
    };
    let w = world.w.clone();
    let body = format!(
        r#"{g}
[[group.resource]]
kind = "aws-eip"
name = "eip"
allocation_id = "{alloc}"
activate_timeout = "20s"
[group.resource.server.node-1]
eni_id = "{e1}"
[group.resource.server.node-2]
eni_id = "{e2}"

[[monitor]]
kind = "aws-eip"
name = "eipw"
interval = "1s"
timeout = "10s"
retries = 0
recovery = {{ target = "eip", restart_retries = 3 }}
allocation_id = "{alloc}"
eni_id = "{e2}"
[monitor.server.node-1]
eni_id = "{e1}"
"#,
        g = group("web"),
        alloc = w.alloc,
        e1 = w.enis[0],
        e2 = w.enis[1]
    );
    let mut c = AwsCluster::start(&world, "eip", 62, &body);
    c.wait_owner("web", "node-1", T);
    baton_tests::wait_until("the EIP is on node-1's ENI", T, || match world.eip()? {
        Some(e) if e == w.enis[0] => Ok(()),
        other => Err(format!("{other:?}")),
    });
    c.kill("node-1", Signal::SIGKILL);
    c.wait_owner("web", "node-2", T);
    baton_tests::wait_until("the EIP is on node-2's ENI", T, || match world.eip()? {
        Some(e) if e == w.enis[1] => Ok(()),
        other => Err(format!("{other:?}")),
    });
    c.wait_event("node-2", "BTN-6022", T, |_| true);
}

#[test]
fn s3_dns_record_follows_and_a_clean_stop_deletes_it() {
    let _g = serial();
    let Some(world) = AwsWorld::create() else {
        return;
    };
    let w = world.w.clone();
    let body = format!(
        r#"{g}
[[group.resource]]
kind = "aws-dns"
name = "dns"
hosted_zone_id = "{zone}"
record_name = "db.example.internal."
ttl = 60
delete_on_deactivate = true
activate_timeout = "20s"
[group.resource.server.node-1]
ip = "{ip1}"
[group.resource.server.node-2]
ip = "{ip2}"

[[monitor]]
kind = "aws-dns"
name = "dnsw"
interval = "1s"
timeout = "10s"
retries = 0
recovery = {{ target = "dns", restart_retries = 3 }}
hosted_zone_id = "{zone}"
record_name = "db.example.internal."
ip = "{ip2}"
[monitor.server.node-1]
ip = "{ip1}"
"#,
        g = group("web"),
        zone = w.zone,
        ip1 = w.ips[0],
        ip2 = w.ips[1]
    );
    let mut c = AwsCluster::start(&world, "dns", 63, &body);
    c.wait_owner("web", "node-1", T);
    let world = &world;
    let want = |ip: &str| {
        let ip = ip.to_string();
        move || match world.record()? {
            Some(v) if v == [ip.clone()] => Ok(()),
            other => Err(format!("{other:?}")),
        }
    };
    baton_tests::wait_until("the record holds node-1's address", T, want(&w.ips[0]));
    c.kill("node-1", Signal::SIGKILL);
    c.wait_owner("web", "node-2", T);
    baton_tests::wait_until("the record holds node-2's address", T, want(&w.ips[1]));
    let ev = c.wait_one_event("node-2", "BTN-6016", T, |e| e.message.contains(&w.ips[1]));
    assert!(ev.fields.contains_key("insync_ms"), "{ev:?}");
    c.kill("node-2", Signal::SIGTERM);
    c.wait_exit("node-2", T);
    assert_eq!(
        world.record().unwrap(),
        None,
        "a clean stop deletes the record"
    );
}

#[test]
fn s4_a_route_changed_by_hand_is_reported_and_restored() {
    let _g = serial();
    let Some(world) = AwsWorld::create() else {
        return;
    };
    let w = world.w.clone();
    let c = AwsCluster::start(&world, "hand", 64, &vip_body(&w, &vip_monitor(&w)));
    c.wait_owner("web", "node-1", T);
    world.wait_routes(&w.enis[0], T);
    // The monitor has seen a healthy state first.
    c.wait_monitors_normal("node-1", &["vipw"], T);
    world.replace_route(&w.rtbs[1], &w.enis[1]);
    let ev = c.wait_one_event("node-1", "BTN-6002", T, |_| true);
    assert!(
        ev.message.contains(&format!(
            "in {} points at {}, not ours {}",
            w.rtbs[1], w.enis[1], w.enis[0]
        )),
        "{}",
        ev.message
    );
    c.wait_event("node-1", "BTN-3011", T, |_| true);
    world.wait_routes(&w.enis[0], T);
    c.wait_owner("web", "node-1", T);
}

#[test]
fn s5_api_down_warns_without_failover_and_throttling_is_retried() {
    let _g = serial();
    let Some(world) = AwsWorld::create() else {
        return;
    };
    let w = world.w.clone();
    let monitors = format!("{}{AZ_MONITOR}", vip_monitor(&w));
    let mut c = AwsCluster::start(&world, "api", 65, &vip_body(&w, &monitors));
    let epoch = c.wait_owner("web", "node-1", T);
    world.wait_routes(&w.enis[0], T);
    c.wait_monitors_normal("node-1", &["vipw", "azw"], T);
    world.moto.fail("*", "ServiceUnavailable", 503, -1);
    let ev = c.wait_one_event("node-1", "BTN-3004", T, |_| true);
    assert!(ev.message.contains("on_api_error = warn"), "{}", ev.message);
    c.wait_event("node-1", "BTN-6005", T, |_| true);
    // Several polls later, still no failover.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let st = c.try_status_via(Some("node-2")).unwrap();
        assert_eq!(
            st.sole_owner("web").as_deref(),
            Some("node-1"),
            "{}",
            st.summary("web")
        );
        assert_eq!(st.group("web").epoch, epoch);
        std::thread::sleep(Duration::from_millis(500));
    }
    world.moto.clear_faults();
    // Throttling and a 5xx during the failover's activation: retried.
    world.moto.reset_calls();
    world
        .moto
        .fail("ReplaceRoute", "RequestLimitExceeded", 503, 2);
    world
        .moto
        .fail("DescribeRouteTables", "InternalError", 500, 1);
    c.kill("node-1", Signal::SIGKILL);
    c.wait_owner("web", "node-2", T);
    world.wait_routes(&w.enis[1], T);
    let calls = world.moto.calls();
    assert!(
        calls.get("ec2.ReplaceRoute").copied().unwrap_or(0) >= 4,
        "{calls:?}"
    );
    let log = world.moto.log();
    assert!(
        log.iter()
            .any(|(_, op, st)| op == "ec2.ReplaceRoute" && *st == 503),
        "{log:?}"
    );
}

#[test]
fn s6_impaired_zone_moves_the_group_to_the_other_zone() {
    let _g = serial();
    let Some(world) = AwsWorld::create() else {
        return;
    };
    let w = world.w.clone();
    let c = AwsCluster::start(&world, "az", 66, &vip_body(&w, AZ_MONITOR));
    c.wait_owner("web", "node-1", T);
    world.wait_routes(&w.enis[0], T);
    world.moto.set_zone_state("us-east-1a", "impaired");
    let ev = c.wait_one_event("node-1", "BTN-6013", T, |_| true);
    assert!(
        ev.message.contains("us-east-1a is impaired"),
        "{}",
        ev.message
    );
    c.wait_event("node-1", "BTN-3012", T, |_| true);
    c.wait_owner("web", "node-2", T);
    world.wait_routes(&w.enis[1], T);
}

#[test]
fn s7_seed_error_cases_are_events() {
    let _g = serial();
    let Some(world) = AwsWorld::create() else {
        return;
    };
    let w = world.w.clone();
    world
        .moto
        .fail("AssociateAddress", "UnauthorizedOperation", 403, -1);
    let body = format!(
        r#"{g1}{cidr}{g2}
[[group.resource]]
kind = "aws-vip"
name = "vip2"
ip = "10.1.0.30"
vpc_id = "{vpc}"
route_tables = ["{rtb}"]
local_address = false
activate_timeout = "20s"
[group.resource.server.node-1]
eni_id = "eni-0123456789abcdef0"
[group.resource.server.node-2]
eni_id = "{e2}"
{g3}
[[group.resource]]
kind = "aws-eip"
name = "eip"
allocation_id = "{alloc}"
activate_timeout = "20s"
[group.resource.server.node-1]
eni_id = "{e1}"
[group.resource.server.node-2]
eni_id = "{e2}"
"#,
        g1 = group("cidr"),
        cidr = vip_resource(&w, "vip1", "10.0.5.5", ""),
        g2 = group("eni"),
        g3 = group("perm"),
        vpc = w.vpc,
        rtb = w.rtbs[0],
        alloc = w.alloc,
        e1 = w.enis[0],
        e2 = w.enis[1]
    );
    let c = AwsCluster::start(&world, "errors", 67, &body);
    let ev = c.wait_one_event("node-1", "BTN-6006", T, |_| true);
    assert!(
        ev.message
            .contains("The VIP address 10.0.5.5 belongs to a VPC subnet"),
        "{}",
        ev.message
    );
    assert_eq!(ev.group.as_deref(), Some("cidr"));
    let ev = c.wait_one_event("node-1", "BTN-6007", T, |_| true);
    assert!(
        ev.message
            .contains("The networkInterface ID 'eni-0123456789abcdef0' does not exist"),
        "{}",
        ev.message
    );
    let ev = c.wait_one_event("node-1", "BTN-6008", T, |_| true);
    assert!(
        ev.message.contains("UnauthorizedOperation"),
        "{}",
        ev.message
    );
    assert_eq!(ev.group.as_deref(), Some("perm"));
    // The group with a wrong ENI on node-1 runs on node-2, whose ENI is right.
    c.wait_owner("eni", "node-2", T);
}

#[test]
fn s8_cloud_check_and_iam_policy_from_the_cli() {
    let _g = serial();
    let Some(world) = AwsWorld::create() else {
        return;
    };
    let w = world.w.clone();
    let c = AwsCluster::start(&world, "check", 68, &vip_body(&w, AZ_MONITOR));
    let run = |args: &[&str]| {
        let mut cmd = std::process::Command::new(&c.bin);
        cmd.args(args).arg("-c").arg(&c.config);
        for (k, v) in baton_tests::moto::aws_env(&world.moto.endpoint) {
            cmd.env(k, v);
        }
        cmd.output().expect("run baton")
    };
    let out = run(&["cloud", "check", "-s", "node-1", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(out.status.code(), Some(0));
    let checks: Vec<String> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| format!("{} {}", f["check"], f["status"]))
        .collect();
    // moto honours DryRun on CreateTags but ignores it on ReplaceRoute (the check
    // replaces a route with its own target, so nothing changes): a warning, not a pass.
    assert!(
        checks
            .iter()
            .any(|c| c == "\"permission:CreateTags\" \"ok\""),
        "{checks:?}"
    );
    assert!(
        checks
            .iter()
            .any(|c| c == "\"permission:ReplaceRoute\" \"warn\""),
        "{checks:?}"
    );
    world.wait_routes(&w.enis[0], T);
    let out = run(&["cloud", "check", "-s", "node-2"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("us-east-1b is available"), "{text}");
    world
        .moto
        .fail("DescribeVpcs", "UnauthorizedOperation", 403, -1);
    let out = run(&["cloud", "check", "-s", "node-1"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = run(&["cloud", "iam-policy", "--json"]);
    let policy: serde_json::Value = serde_json::from_slice(&out.stdout).expect("policy json");
    let text = policy.to_string();
    assert!(
        text.contains("ec2:ReplaceRoute") && text.contains(&w.vpc),
        "{text}"
    );
}

/// The three kinds at the default heartbeat: their self-fence stops are local, so the
/// group's fence deadline is the interval (200 ms) and its takeover bound `T + W_g` 1,427
/// ms (the agent's: 500 and 1,733). node-1's heartbeats are cut (nftables; its API calls
/// still reach moto): it loses quorum and stops the group without a single call to AWS
/// (no DisassociateAddress, no deletion of the record), within the deadline; node-2
/// takes all three over with its fenced writes after `T + W_g`, without the checks it
/// did when it started (`ResourceDriver::prepare`).
#[test]
fn s9_a_cut_off_holder_self_fences_without_aws_calls() {
    let _g = serial();
    if let Some(why) = baton_tests::nft::unavailable() {
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipped: {why}");
        return;
    }
    let Some(world) = AwsWorld::create() else {
        return;
    };
    let w = world.w.clone();
    let body = format!("{}{}", group("web"), vip_eip_dns(&w, ""));
    let c = AwsCluster::start_aws(&world, "fence", 76, &body, None);
    c.wait_owner("web", "node-1", T);
    world.wait_routes(&w.enis[0], T);
    baton_tests::wait_until("the EIP and the record are on node-1", T, || {
        match (world.eip()?, world.record()?) {
            (Some(e), Some(r)) if e == w.enis[0] && r == [w.ips[0].clone()] => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let st = c.try_status().unwrap();
    let g = st.local.groups.iter().find(|g| g.name == "web").unwrap();
    assert_eq!((g.fence_ms, g.takeover_after_ms), (200, 1427), "{g:?}");
    // Cut node-1's heartbeats to and from the others (UDP on the interconnect).
    let hb = |i: usize| {
        let api = c.nodes[i].api;
        std::net::SocketAddr::new(api.ip(), api.port() + 1)
    };
    let unix = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let t_cut = unix();
    let cut = baton_tests::nft::Cut::udp_pairs(&[(hb(0), hb(1)), (hb(0), hb(2))])
        .unwrap_or_else(|e| panic!("{e}"));
    let lost = c.wait_one_event("node-1", "BTN-1120", T, |_| true);
    let stopped = c.wait_one_event("node-1", "BTN-2104", T, |e| e.message.contains("web"));
    assert!(
        stopped.time_ms >= lost.time_ms && stopped.time_ms - lost.time_ms < 200,
        "stopped {} ms after quorum was lost",
        stopped.time_ms.saturating_sub(lost.time_ms)
    );
    // (`baton status` asks node-1, which is cut off: node-2's own event says it.)
    c.wait_one_event("node-2", "BTN-2102", T, |e| e.message.contains("web"));
    world.wait_routes(&w.enis[1], T);
    baton_tests::wait_until("the EIP and the record moved to node-2", T, || {
        match (world.eip()?, world.record()?) {
            (Some(e), Some(r)) if e == w.enis[1] && r == [w.ips[1].clone()] => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let wait = c.wait_one_event("node-2", "BTN-1136", T, |e| e.message.contains("web"));
    assert!(
        wait.message.contains("silent for 1427 ms"),
        "{}",
        wait.message
    );
    assert!(
        !c.alerts("node-1").iter().any(|e| e.id == "BTN-1135"),
        "node-1 missed its self-fence deadline"
    );
    // Not one call of node-1's stop reached moto: no disassociation, and the only
    // record change after the cut is node-2's takeover (DELETE + CREATE in one batch).
    let after: Vec<String> = world
        .moto
        .log()
        .into_iter()
        .filter(|(t, _, _)| *t >= t_cut)
        .map(|(_, op, _)| op)
        .collect();
    assert!(
        !after.iter().any(|op| op.ends_with("DisassociateAddress")),
        "{after:?}"
    );
    // node-2 did the checks done once when it started (`prepare`), not in its takeover.
    assert!(
        !after
            .iter()
            .any(|op| op.ends_with("DescribeVpcs") || op.ends_with("DescribeNetworkInterfaces")),
        "{after:?}"
    );
    assert_eq!(
        after
            .iter()
            .filter(|op| op.ends_with("ChangeResourceRecordSets"))
            .count(),
        1,
        "{after:?}"
    );
    drop(cut);
}

/// Benchmark (issue 14, benchmark 2), not a test: `bash bench/aws.sh` runs it. A group of
/// `aws-vip` + `aws-eip` + `aws-dns` at the default heartbeat (200 ms / 1 s); per run
/// the owner's agent is SIGKILLed and the time until all three are visible at moto (the
/// completion of the last mutating call, from moto's own log) is measured beside the
/// floor: the instant the survivor may activate, `T + W_g` after the lost server's last
/// heartbeat (from its BTN-1136: raised at `t` with `wait_ms` left). The group at the
/// defaults (the three kinds stop locally in a self-fence, so the group's fence deadline
/// is the interval; resources one after the other), with `resource_order = "parallel"`
/// (the three have no dependency: they start together), with `fence_stop = "full"` on
/// each (a self-fence stop that calls the cloud: the agent's fence deadline, the default
/// before local self-fence stops); then, with moto answering each of the three mutating
/// calls 100 ms late (a cloud API's latency; moto itself answers in a few ms, one
/// request at a time under Python's lock), one after the other and at once.
#[test]
#[ignore]
fn bench_takeover_vip_eip_dns() {
    let _g = serial();
    let rounds: usize = std::env::var("BATON_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let unix = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    println!("AWS takeover: aws-vip + aws-eip + aws-dns, heartbeat 200 ms / 1 s (defaults), {rounds} runs, SIGKILL of the owner's agent");
    const PARALLEL: &str = "resource_order = \"parallel\"\n";
    for (label, extra, full, late) in [
        ("defaults", "", false, false),
        ("resource_order = \"parallel\"", PARALLEL, false, false),
        ("fence_stop = \"full\" on each resource", "", true, false),
        ("mutating calls answered 100 ms late", "", false, true),
        (
            "resource_order = \"parallel\", mutating calls answered 100 ms late",
            PARALLEL,
            false,
            true,
        ),
    ] {
        // A world of its own: the routes carry the epochs of the last cluster's group,
        // which a new cluster (epochs from 1) must not overwrite (BTN-6012).
        let Some(world) = AwsWorld::create() else {
            panic!("moto is not installed: run `bash tests/moto/setup.sh` first");
        };
        let w = world.w.clone();
        if late {
            for op in [
                "ReplaceRoute",
                "AssociateAddress",
                "ChangeResourceRecordSets",
            ] {
                world.moto.delay(op, Duration::from_millis(100), -1);
            }
        }
        let body = format!(
            "\n[[group]]\nname = \"web\"\nservers = [\"node-1\", \"node-2\"]\n{extra}{}",
            vip_eip_dns(&w, if full { "fence_stop = \"full\"\n" } else { "" })
        );
        let mut c = AwsCluster::start_aws(&world, "bench", 69, &body, None);
        let mut owner = "node-1".to_string();
        c.wait_owner("web", &owner, T);
        let (mut visible, mut floor, mut above) = (Vec::new(), Vec::new(), Vec::new());
        let (mut to_claimed, mut activation) = (Vec::new(), Vec::new());
        let mut takeover_after = String::new();
        for run in 0..rounds {
            let idx = usize::from(owner == "node-2");
            let other = if idx == 0 { "node-2" } else { "node-1" };
            // Everything in place on the owner, and every agent up and ready.
            world.wait_routes(&w.enis[idx], T);
            baton_tests::wait_until("the EIP and the record are on the owner", T, || {
                match (world.eip()?, world.record()?) {
                    (Some(e), Some(r)) if e == w.enis[idx] && r == [w.ips[idx].clone()] => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            });
            baton_tests::wait_until("every agent sees every server up", T, || {
                let st = c.try_status()?;
                let all = |s: &baton_tests::model::AgentStatus| {
                    s.ready && s.quorum && s.servers.iter().all(|x| x.up && x.ready)
                };
                if all(&st.local) && st.peers.iter().all(|p| p.status.as_ref().is_some_and(all)) {
                    Ok(())
                } else {
                    Err("not yet".to_string())
                }
            });
            std::thread::sleep(Duration::from_millis(500));
            let t_kill = unix();
            c.kill(&owner, Signal::SIGKILL);
            c.wait_owner("web", other, T);
            world.wait_routes(&w.enis[1 - idx], T);
            baton_tests::wait_until("the EIP and the record moved", T, || {
                match (world.eip()?, world.record()?) {
                    (Some(e), Some(r)) if e == w.enis[1 - idx] && r == [w.ips[1 - idx].clone()] => {
                        Ok(())
                    }
                    other => Err(format!("{other:?}")),
                }
            });
            let log = world.moto.log();
            let last = |op: &str| {
                log.iter()
                    .filter(|(t, o, s)| *t >= t_kill && o.ends_with(op) && *s == 200)
                    .map(|(t, _, _)| *t)
                    .fold(None, |a: Option<f64>, t| Some(a.map_or(t, |a| a.max(t))))
            };
            let done = [
                "ReplaceRoute",
                "AssociateAddress",
                "ChangeResourceRecordSets",
            ]
            .iter()
            .map(|op| {
                last(op).unwrap_or_else(|| panic!("no successful {op} after the kill at moto"))
            })
            .fold(0.0, f64::max);
            let alerts = c.alerts(other);
            let after_kill = |id: &str| {
                alerts
                    .iter()
                    .rev()
                    .find(|e| e.id == id && e.time_ms as f64 >= t_kill * 1000.0 - 1.0)
                    .cloned()
            };
            let ev = after_kill("BTN-1136")
                .unwrap_or_else(|| panic!("{other} raised no BTN-1136 after the kill"));
            let activating = after_kill("BTN-2101").expect("BTN-2101 after the kill");
            let activated = after_kill("BTN-2102").expect("BTN-2102 after the kill");
            if takeover_after.is_empty() {
                takeover_after = ev
                    .message
                    .split("silent for ")
                    .nth(1)
                    .and_then(|s| s.split(" ms").next())
                    .unwrap_or("?")
                    .to_string();
            }
            let wait = ev
                .fields
                .get("wait_ms")
                .and_then(|v| v.as_f64())
                .unwrap_or(0.0);
            let floor_at = ev.time_ms as f64 / 1000.0 + wait / 1000.0;
            let v_ms = (done - t_kill) * 1000.0;
            let f_ms = (floor_at - t_kill) * 1000.0;
            visible.push(v_ms);
            floor.push(f_ms);
            above.push(v_ms - f_ms);
            to_claimed.push(activating.time_ms as f64 - floor_at * 1000.0);
            activation.push(activated.time_ms as f64 - activating.time_ms as f64);
            eprintln!(
                "  run {}: {owner} -> {other}: visible {v_ms:.0} ms, floor {f_ms:.0} ms",
                run + 1
            );
            c.restart(&owner);
            owner = other.to_string();
        }
        let p =
            |v: &[f64], q: f64| baton_tests::lab::scenarios::percentile(v, q).unwrap_or(f64::NAN);
        let ratio: Vec<f64> = above.iter().zip(&floor).map(|(a, f)| a / f).collect();
        println!("{label} (T + W_g = {takeover_after} ms after the last heartbeat):");
        println!(
            "  SIGKILL -> all three visible at moto: p50 {:.0} ms  p99 {:.0} ms  min {:.0}  max {:.0}",
            p(&visible, 50.0),
            p(&visible, 99.0),
            visible.iter().copied().fold(f64::INFINITY, f64::min),
            visible.iter().copied().fold(0.0, f64::max)
        );
        println!(
            "  SIGKILL -> the floor (T + W_g after the last heartbeat): p50 {:.0} ms  p99 {:.0} ms",
            p(&floor, 50.0),
            p(&floor, 99.0)
        );
        println!(
            "  above the floor: p50 {:.0} ms  p99 {:.0} ms  ({:.1} % / {:.1} % of the floor)",
            p(&above, 50.0),
            p(&above, 99.0),
            100.0 * p(&ratio, 50.0),
            100.0 * p(&ratio, 99.0)
        );
        println!(
            "    of which: the floor -> the claim acknowledged (BTN-2101) p50 {:.0} ms, the group's activation (BTN-2101 -> BTN-2102, three resources {}) p50 {:.0} ms",
            p(&to_claimed, 50.0),
            if extra.contains("parallel") {
                "at once"
            } else {
                "one after the other"
            },
            p(&activation, 50.0)
        );
        drop(c);
    }
}
