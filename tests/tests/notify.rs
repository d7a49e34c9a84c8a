//! Notifications from real agents: the alerts of a real failover reach an SQS queue
//! subscribed to the SNS topic (moto), the agents' metrics reach CloudWatch, `baton
//! notify test` exercises every sink, and sinks that are down or stuck never delay a
//! failover.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Tests measure the real time of real processes and sockets: they read the clock directly.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use baton_tests::moto::{aws_env, Moto};
use baton_tests::notify::{
    cw_stats, sns_to_sqs, sqs_take, SmtpOptions, SmtpServer, WebhookReceiver,
};
use baton_tests::{serial, wait_until, Cluster, ClusterSpec, MonitorSpec, Signal, GROUP, MONITOR};

const T: Duration = Duration::from_secs(30);

fn env_of(endpoint: &str) -> Vec<(String, String)> {
    aws_env(endpoint)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

fn aws_section(endpoint: &str) -> String {
    format!(
        r#"
[aws]
region = "us-east-1"
endpoint_url = "{endpoint}"
imds = false
call_timeout = "2s"
max_attempts = 2
"#
    )
}

/// The `sinks` of each agent's `baton status --json`, by server.
fn sink_stats(c: &Cluster) -> Vec<(String, serde_json::Value)> {
    let out = c.ctl(&["status", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let mut all = vec![(
        v["local"]["server"].as_str().unwrap_or("").to_string(),
        v["local"]["sinks"].clone(),
    )];
    for p in v["peers"].as_array().cloned().unwrap_or_default() {
        if !p["status"].is_null() {
            all.push((
                p["server"].as_str().unwrap_or("").to_string(),
                p["status"]["sinks"].clone(),
            ));
        }
    }
    all
}

fn sink<'a>(sinks: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    sinks
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no sink {name} in {sinks}"))
}

fn attr(m: &serde_json::Value, k: &str) -> String {
    m["MessageAttributes"][k]["Value"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn failover_alerts_reach_sqs_through_sns_and_metrics_reach_cloudwatch() {
    let _serial = serial();
    let Some(moto) = Moto::start() else { return };
    let (topic, queue) = sns_to_sqs(&moto.endpoint, "baton-it");
    let mut spec = ClusterSpec::new("notify", 161).with_monitor(MonitorSpec::default());
    spec.env = env_of(&moto.endpoint);
    spec.extra_config = format!(
        r#"{aws}
[notify.sns]
topic_arn = "{topic}"
min_severity = "warning"
include = ["BTN-2102"]

[metrics.cloudwatch]
namespace = "BatonIT"
interval = "1s"
high_resolution = true
monitors = ["{MONITOR}"]
"#,
        aws = aws_section(&moto.endpoint)
    );
    let mut c = Cluster::start(spec);
    let (_, e1, _) = c.wait_owner(Some("node-1"), T);
    // The first activation was published (BTN-2102 is included although it is info).
    let mut seen = Vec::new();
    wait_until("the first activation is in the queue", T, || {
        seen.extend(sqs_take(&moto.endpoint, &queue));
        seen.iter()
            .find(|m| attr(m, "event_id") == "BTN-2102" && attr(m, "server") == "node-1")
            .cloned()
            .ok_or_else(|| format!("{} messages", seen.len()))
    });
    // Info events other than the included one are not sent.
    assert!(
        seen.iter()
            .all(|m| attr(m, "severity") != "info" || attr(m, "event_id") == "BTN-2102"),
        "{seen:?}"
    );

    c.kill("node-1", Signal::SIGKILL);
    c.kill_app("node-1");
    let (_, e2, _) = c.wait_owner(Some("node-2"), T);
    assert!(e2 > e1);

    let failover = wait_until("the failover alerts are in the queue", T, || {
        seen.extend(sqs_take(&moto.endpoint, &queue));
        let fo = seen
            .iter()
            .find(|m| attr(m, "event_id") == "BTN-2107" && attr(m, "server") == "node-2");
        let act = seen
            .iter()
            .find(|m| attr(m, "event_id") == "BTN-2102" && attr(m, "server") == "node-2");
        let downs: BTreeSet<String> = seen
            .iter()
            .filter(|m| attr(m, "event_id") == "BTN-1102")
            .map(|m| attr(m, "server"))
            .collect();
        match (fo, act) {
            (Some(f), Some(a)) if downs.contains("node-2") && downs.contains("node-3") => {
                Ok((f.clone(), a.clone()))
            }
            _ => Err(format!(
                "{:?}",
                seen.iter()
                    .map(|m| format!("{}@{}", attr(m, "event_id"), attr(m, "server")))
                    .collect::<Vec<_>>()
            )),
        }
    });
    let (fo, act) = failover;
    assert_eq!(attr(&fo, "severity"), "warning");
    assert_eq!(attr(&fo, "cluster"), "it-notify");
    assert_eq!(attr(&fo, "group"), GROUP);
    assert_eq!(attr(&fo, "module"), "group");
    assert!(
        fo["Subject"].as_str().unwrap().starts_with(
            "Baton it-notify/node-2 BTN-2107 warning: group web fails over from node-1"
        ),
        "{fo}"
    );
    let doc: serde_json::Value = serde_json::from_str(fo["Message"].as_str().unwrap()).unwrap();
    assert_eq!(doc["peer"], "node-1");
    assert_eq!(doc["group"], GROUP);
    let doc: serde_json::Value = serde_json::from_str(act["Message"].as_str().unwrap()).unwrap();
    assert_eq!(doc["epoch"], e2);

    // Metrics: polling times of the opted-in monitor on the new holder, the failover,
    // the group's activity and the heartbeat round trips.
    let ep = &moto.endpoint;
    let base = [("Cluster", "it-notify"), ("Server", "node-2")];
    wait_until("node-2's metrics are in CloudWatch", T, || {
        let poll = cw_stats(
            ep,
            "BatonIT",
            "MonitorPollingTime",
            &[base[0], base[1], ("Monitor", MONITOR)],
        );
        let count = cw_stats(
            ep,
            "BatonIT",
            "FailoverCount",
            &[base[0], base[1], ("Group", GROUP)],
        );
        let active = cw_stats(
            ep,
            "BatonIT",
            "GroupActive",
            &[base[0], base[1], ("Group", GROUP)],
        );
        let total = cw_stats(
            ep,
            "BatonIT",
            "FailoverPhaseTime",
            &[base[0], base[1], ("Group", GROUP), ("Phase", "Total")],
        );
        let rtt = cw_stats(
            ep,
            "BatonIT",
            "HeartbeatRoundTrip",
            &[base[0], base[1], ("Peer", "node-3"), ("Path", "1")],
        );
        let ok = poll.first().is_some_and(|d| {
            d["SampleCount"].as_f64() >= Some(1.0) && d["Maximum"].as_f64() > Some(0.0)
        }) && count
            .first()
            .is_some_and(|d| d["Sum"].as_f64() == Some(1.0))
            && active
                .first()
                .is_some_and(|d| d["Maximum"].as_f64() == Some(1.0))
            && total
                .first()
                .is_some_and(|d| d["Maximum"].as_f64() > Some(500.0))
            && rtt
                .first()
                .is_some_and(|d| d["SampleCount"].as_f64() > Some(5.0));
        if ok {
            eprintln!("polling time {poll:?}\nfailover total {total:?}\nheartbeat rtt {rtt:?}");
            Ok(())
        } else {
            Err(format!(
                "poll {poll:?} count {count:?} active {active:?} total {total:?} rtt {rtt:?}"
            ))
        }
    });
    // node-3 never ran the group: GroupActive 0, no polling time (the monitor polls only
    // where the group is active).
    let n3 = cw_stats(
        ep,
        "BatonIT",
        "GroupActive",
        &[base[0], ("Server", "node-3"), ("Group", GROUP)],
    );
    assert_eq!(n3[0]["Maximum"].as_f64(), Some(0.0), "{n3:?}");

    // `baton status` reports each sink's counts; nothing was dropped.
    for (server, sinks) in sink_stats(&c) {
        for name in ["log", "sns", "cloudwatch"] {
            let s = sink(&sinks, name);
            assert_eq!(s["dropped"], 0, "{server}: {s}");
            assert!(s["delivered"].as_u64() > Some(0), "{server}: {s}");
        }
    }
    let text = c.ctl(&["status"]);
    assert!(text.stdout.contains("NOTIFICATIONS"), "{}", text.stdout);
    assert!(text.stdout.contains(" sns "), "{}", text.stdout);
}

/// Every sink blackholed or stuck (SNS and CloudWatch answer after 30 s, the SMTP server
/// answers DATA after 30 s, the webhook's port refuses connections): the failover is
/// as fast as without sinks, the queues drop and count, and the agent still stops
/// within its flush deadline.
#[test]
fn stuck_or_dead_sinks_never_delay_a_failover() {
    let _serial = serial();
    let Some(moto) = Moto::start() else { return };
    let Some(smtp) = SmtpServer::start_with(SmtpOptions {
        delay: Duration::from_secs(30),
        ..SmtpOptions::default()
    }) else {
        return;
    };
    let (topic, _queue) = sns_to_sqs(&moto.endpoint, "baton-stuck");
    moto.delay("PublishBatch", Duration::from_secs(30), -1);
    moto.delay("PutMetricData", Duration::from_secs(30), -1);
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut spec = ClusterSpec::new("notify-stuck", 162).with_monitor(MonitorSpec::default());
    spec.env = env_of(&moto.endpoint);
    spec.extra_config = format!(
        r#"{aws}
[notify.sns]
topic_arn = "{topic}"
min_severity = "info"

[notify.mail]
server = "127.0.0.1"
port = {smtp}
security = "none"
from = "baton@example.com"
to = ["ops@example.com"]
min_severity = "info"
timeout = "20s"

[[notify.webhook]]
name = "dead"
url = "http://127.0.0.1:{dead}/hook"
min_severity = "info"

[notify.delivery]
queue_len = 4
coalesce_window = "0s"
shutdown_timeout = "1s"

[metrics.cloudwatch]
namespace = "BatonStuck"
interval = "1s"
high_resolution = true
monitors = ["*"]
queue_len = 50
"#,
        aws = aws_section(&moto.endpoint),
        smtp = smtp.port
    );
    let mut c = Cluster::start(spec);
    c.wait_owner(Some("node-1"), T);
    // The sinks are stuck before the failover: on node-2 (which takes over) SNS, mail and
    // CloudWatch each hold an event that cannot be delivered, and the dead webhook has
    // failed a delivery.
    wait_until(
        "node-2's sinks to be stuck behind their endpoints",
        T,
        || {
            let stats = sink_stats(&c);
            let (_, n2) = stats
                .iter()
                .find(|(s, _)| s == "node-2")
                .ok_or_else(|| "no status of node-2".to_string())?;
            for name in ["sns", "mail", "cloudwatch"] {
                let s = sink(n2, name);
                if s["queued"].as_u64() < Some(1) || s["delivered"] != 0 {
                    return Err(format!("{name}: {s}"));
                }
            }
            let d = sink(n2, "dead");
            if d["failed_batches"].as_u64() < Some(1) {
                return Err(format!("dead: {d}"));
            }
            Ok(())
        },
    );

    let t = Instant::now();
    c.kill("node-1", Signal::SIGKILL);
    c.kill_app("node-1");
    c.wait_owner(Some("node-2"), T);
    let took = t.elapsed();
    eprintln!(
        "failover with every sink stuck took {} ms",
        took.as_millis()
    );
    // The engine's own timing: from node-1 declared down to the group active, on node-2.
    let ev = c.alerts("node-2");
    let down = ev
        .iter()
        .rev()
        .find(|e| e.id == "BTN-1102")
        .expect("BTN-1102 on node-2");
    let active = ev
        .iter()
        .rev()
        .find(|e| e.id == "BTN-2102")
        .expect("BTN-2102 on node-2");
    let engine_ms = active.time_ms.saturating_sub(down.time_ms);
    eprintln!("node-1 down to group active on node-2: {engine_ms} ms");
    // A failover that waited for any sink would take 20-30 s (its delays).
    assert!(engine_ms < 10_000, "{engine_ms} ms");
    assert!(took < Duration::from_secs(15), "{took:?}");

    // The queues are full: events are dropped and counted (the alert log has them all).
    let stats = sink_stats(&c);
    let (_, n2) = stats.iter().find(|(s, _)| s == "node-2").unwrap();
    for name in ["sns", "mail", "dead"] {
        let s = sink(n2, name);
        assert!(s["dropped"].as_u64() > Some(0), "{name}: {s}");
        assert_eq!(s["delivered"], 0, "{name}: {s}");
    }
    assert!(sink(n2, "log")["delivered"].as_u64() > Some(0));
    // The drops themselves are reported as events (every 10 s).
    wait_until("node-2 reports the dropped events (BTN-5001)", T, || {
        let ev = c.try_alerts("node-2")?;
        ev.iter()
            .find(|e| e.id == "BTN-5001")
            .map(|_| ())
            .ok_or_else(|| "no BTN-5001 yet".to_string())
    });

    // Shutdown flushes within its deadline (1 s), then exits although sinks are stuck.
    let t = Instant::now();
    c.kill("node-2", Signal::SIGTERM);
    c.wait_exit("node-2", Duration::from_secs(20));
    eprintln!(
        "node-2 stopped in {} ms with every sink stuck",
        t.elapsed().as_millis()
    );
    assert!(smtp.messages().is_empty());
}

/// `baton notify test`: every sink, one sink, a broken sink, an unknown sink.
#[test]
fn notify_test_command_checks_every_sink() {
    let _serial = serial();
    let Some(moto) = Moto::start() else { return };
    let Some(smtp) = SmtpServer::start() else {
        return;
    };
    let secret = b"it-secret";
    let hook = WebhookReceiver::start(Some(secret));
    let (topic, queue) = sns_to_sqs(&moto.endpoint, "baton-test-cmd");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hook.secret"), secret).unwrap();
    let config = dir.path().join("baton.toml");
    let text = format!(
        r#"[cluster]
name = "it-notify-cmd"
key_file = "cluster.key"

[[server]]
name = "node-1"
interconnects = ["127.0.163.11:7421"]
api = "127.0.163.11:7420"

{aws}
[notify.sns]
topic_arn = "{topic}"

[notify.mail]
server = "127.0.0.1"
port = {smtp}
security = "none"
from = "baton@example.com"
to = ["ops@example.com", "dev@example.com"]

[[notify.webhook]]
name = "chat"
url = "{hook}"
secret_file = "hook.secret"

[metrics.cloudwatch]
namespace = "BatonCmd"
"#,
        aws = aws_section(&moto.endpoint),
        smtp = smtp.port,
        hook = hook.url,
    );
    std::fs::write(&config, &text).unwrap();
    let bin = baton_tests::bin::baton_bin();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&bin)
            .args(args)
            .envs(aws_env(&moto.endpoint))
            .env("BATON_LOG", "warn")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let cfg = config.to_string_lossy().to_string();
    let (code, out) = run(&[
        "notify", "test", "--config", &cfg, "--server", "node-1", "--json",
    ]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["ok"], true);
    let names: Vec<&str> = v["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sink"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["log", "sns", "mail", "chat", "cloudwatch"]);
    // Each endpoint got the test event.
    let msgs = sqs_take(&moto.endpoint, &queue);
    assert_eq!(msgs.len(), 1);
    assert_eq!(attr(&msgs[0], "event_id"), "BTN-5002");
    let mail = smtp.messages();
    assert_eq!(mail.len(), 1);
    assert_eq!(mail[0].to, vec!["ops@example.com", "dev@example.com"]);
    assert!(mail[0].header("Subject").unwrap().contains("BTN-5002"));
    let d = hook.deliveries();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].signature_ok, Some(true));
    assert_eq!(d[0].json()["events"][0]["id"], "BTN-5002");
    let st = cw_stats(
        &moto.endpoint,
        "BatonCmd",
        "NotifyTest",
        &[("Cluster", "it-notify-cmd"), ("Server", "node-1")],
    );
    assert_eq!(st[0]["Sum"].as_f64(), Some(1.0), "{st:?}");

    // One sink only, in text.
    let (code, out) = run(&[
        "notify", "test", "chat", "--config", &cfg, "--server", "node-1",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("chat") && out.contains(" ok "), "{out}");
    assert!(!out.contains("sns"), "{out}");
    assert_eq!(hook.deliveries().len(), 2);

    // A sink that fails: exit 1 with its error.
    drop(smtp);
    let (code, out) = run(&[
        "notify", "test", "mail", "--config", &cfg, "--server", "node-1", "--json",
    ]);
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["sinks"][0]["code"], "sink-transient");
    // Unknown sink: usage error; unknown server: configuration error.
    let (code, out) = run(&[
        "notify", "test", "pager", "--config", &cfg, "--server", "node-1", "--json",
    ]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("unknown-sink"), "{out}");
    let (code, _) = run(&["notify", "test", "--config", &cfg, "--server", "node-9"]);
    assert_eq!(code, 3);
    // An unreadable secret file: the sink is reported as not started.
    std::fs::remove_file(dir.path().join("hook.secret")).unwrap();
    let (code, out) = run(&[
        "notify", "test", "chat", "--config", &cfg, "--server", "node-1", "--json",
    ]);
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["sinks"][0]["code"], "not-started");
    assert!(
        v["sinks"][0]["error"]
            .as_str()
            .unwrap()
            .contains("secret_file"),
        "{out}"
    );
}
