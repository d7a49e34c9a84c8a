//! Issue 16: `GET /metrics` (Prometheus, OpenMetrics text) and `GET /healthz` on real
//! agents: scraped after a failover and parsed by the Prometheus project's parser, the
//! figures the CloudWatch sink sends present with the right values, access refused
//! without the token or an allowed address, the health answer free of names.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use baton_tests::skip::skip;
use baton_tests::{serial, Cluster, ClusterSpec, MonitorSpec, Signal, GROUP};

const T: Duration = Duration::from_secs(20);
const SCRAPE_TOKEN: &str = "scrape-token-for-the-prometheus-server-0123456789";

fn write_secret(path: &Path, text: &str) {
    std::fs::write(path, format!("{text}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A raw GET from source address `from` (None: the kernel's choice, 127.0.0.1).
fn get_from(
    from: Option<&str>,
    to: SocketAddr,
    path: &str,
    bearer: Option<&str>,
) -> (u16, String, String) {
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    let mut s = match from {
        None => TcpStream::connect_timeout(&to, Duration::from_secs(3)).unwrap(),
        Some(ip) => {
            let fd = socket(
                AddressFamily::Inet,
                SockType::Stream,
                SockFlag::SOCK_CLOEXEC,
                None,
            )
            .unwrap();
            let src: std::net::SocketAddrV4 = format!("{ip}:0").parse().unwrap();
            bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(src)).unwrap();
            let SocketAddr::V4(dst) = to else {
                panic!("IPv4 only")
            };
            connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(dst)).unwrap();
            TcpStream::from(fd)
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n");
    if let Some(t) = bearer {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    // The agent answers with Content-Length (no chunking) for these endpoints.
    (status, head.to_string(), body.to_string())
}

/// `promtool ARGS` with `stdin`; None when promtool is not installed. (exit ok, output)
fn promtool(args: &[&str], stdin: Option<&str>) -> Option<(bool, String)> {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let input = child.stdin.take().unwrap();
    if let Some(t) = stdin {
        let mut input = input;
        input.write_all(t.as_bytes()).unwrap();
    } else {
        drop(input);
    }
    let out = child.wait_with_output().unwrap();
    Some((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    ))
}

/// The `baton_*` names in `text`, space-separated.
fn metric_names(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("baton_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        out.push(' ');
        out.push_str(&tail[..end]);
        rest = &tail[end..];
    }
    out
}

#[derive(Debug, serde::Deserialize)]
struct Sample {
    family: String,
    #[serde(rename = "type")]
    kind: String,
    name: String,
    labels: std::collections::BTreeMap<String, String>,
    value: f64,
}

/// Parse with `tests/web/parse_metrics.py` (prometheus_client's OpenMetrics parser).
fn parse(python: &Path, text: &str) -> Vec<Sample> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("web/parse_metrics.py");
    let mut child = Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the exposition does not parse: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

#[test]
fn metrics_are_scraped_parsed_and_guarded() {
    let _serial = serial();
    let Some(python) = baton_tests::moto::python() else {
        skip(
            "metrics_are_scraped_parsed_and_guarded",
            "no Python venv with prometheus_client (bash tests/moto/setup.sh)",
        );
        return;
    };
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("metrics.token");
    write_secret(&token_file, SCRAPE_TOKEN);
    let mut spec = ClusterSpec::new("metrics", 211).with_monitor(MonitorSpec::default());
    spec.extra_config = format!(
        "[metrics.prometheus]\nallow = [\"127.0.0.2/32\"]\nbearer_token_file = \"{}\"\n",
        token_file.display()
    );
    let mut c = Cluster::start(spec);
    c.wait_owner(Some("node-1"), T);
    // A failover: node-1 is killed, another server takes the group over.
    c.kill("node-1", Signal::SIGKILL);
    let (owner, epoch, _) = c.wait_owner(None, T);
    assert_ne!(owner, "node-1");
    let api = c.node(&owner).api;

    // Access: refused without a token, with a wrong one, and from an address not allowed.
    let (code, head, body) = get_from(None, api, "/metrics", None);
    assert_eq!(code, 401, "{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{head}"
    );
    assert!(body.contains("\"unauthorized\""), "{body}");
    assert!(!body.contains("baton_"), "{body}");
    let (code, _, _) = get_from(None, api, "/metrics", Some(&"0".repeat(64)));
    assert_eq!(code, 401);
    // Let in: the scrape token, an API read token, the allowed address without a token.
    let read = c.ctl(&["token", "--role", "read"]).ok("baton token").stdout;
    let (code, head, scraped) = get_from(None, api, "/metrics", Some(read.trim()));
    assert_eq!(code, 200, "{scraped}");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert_eq!(get_from(Some("127.0.0.2"), api, "/metrics", None).0, 200);

    // The figures: wait for the round trips and polls of the new owner to be observed.
    let samples = baton_tests::wait_until("heartbeat and monitor samples", T, || {
        let (code, _, text) = get_from(None, api, "/metrics", Some(SCRAPE_TOKEN));
        if code != 200 {
            return Err(format!("status {code}: {text}"));
        }
        let s = parse(&python, &text);
        let rtt = s
            .iter()
            .any(|x| x.name == "baton_heartbeat_rtt_seconds_count" && x.value >= 1.0);
        let polls = value(
            &s,
            "baton_monitor_polling_seconds_count",
            &[("monitor", "app-check")],
        );
        if rtt && polls.is_some_and(|v| v >= 1.0) {
            Ok(s)
        } else {
            Err("no round trip or poll observed yet".into())
        }
    });
    let on = |name: &str, labels: &[(&str, &str)]| {
        value(&samples, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?}"))
    };
    let base = [("cluster", "it-metrics"), ("server", owner.as_str())];
    assert_eq!(
        on("baton_group_active", &[base[0], base[1], ("group", GROUP)]),
        1.0
    );
    assert_eq!(on("baton_failovers_total", &[("group", GROUP)]), 1.0);
    assert_eq!(
        on(
            "baton_failover_phase_seconds_count",
            &[("group", GROUP), ("phase", "Total")]
        ),
        1.0
    );
    assert!(
        on(
            "baton_failover_phase_seconds_sum",
            &[("group", GROUP), ("phase", "Detection")]
        ) >= 1.0
    );
    assert_eq!(on("baton_group_epoch", &[("group", GROUP)]), epoch as f64);
    assert_eq!(on("baton_quorum", &[]), 1.0);
    assert_eq!(on("baton_quorum_votes_heard", &[]), 2.0);
    assert_eq!(on("baton_quorum_votes_configured", &[]), 3.0);
    assert_eq!(on("baton_server_up", &[("peer", "node-1")]), 0.0);
    assert_eq!(on("baton_server_up", &[("peer", owner.as_str())]), 1.0);
    assert_eq!(
        on(
            "baton_group_state",
            &[("group", GROUP), ("state", "online")]
        ),
        1.0
    );
    assert!(on("baton_alerts_total", &[("severity", "info")]) >= 1.0);
    assert!(on("baton_alerts_total", &[("severity", "warning")]) >= 2.0);
    // Types as Prometheus expects them.
    for (family, kind) in [
        ("baton_heartbeat_rtt_seconds", "histogram"),
        ("baton_monitor_polling_seconds", "histogram"),
        ("baton_failover_phase_seconds", "histogram"),
        ("baton_failovers", "counter"),
        ("baton_alerts", "counter"),
        ("baton_group_active", "gauge"),
    ] {
        let s = samples
            .iter()
            .find(|s| s.family == family)
            .unwrap_or_else(|| panic!("{family}"));
        assert_eq!(s.kind, kind, "{family}");
    }
    // Every metric the shipped dashboard and alerting rules use is one the agent serves.
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/src");
    let dashboard = std::fs::read_to_string(docs.join("grafana/baton-dashboard.json")).unwrap();
    let rules = std::fs::read_to_string(docs.join("prometheus/baton-alerts.yml")).unwrap();
    let served: std::collections::BTreeSet<&str> = samples
        .iter()
        .flat_map(|s| [s.family.as_str(), s.name.as_str()])
        .collect();
    let used = metric_names(&dashboard) + &metric_names(&rules);
    let used: std::collections::BTreeSet<&str> =
        used.split(' ').filter(|n| !n.is_empty()).collect();
    assert!(used.len() >= 12, "{used:?}");
    for name in used {
        let family = ["_bucket", "_sum", "_count", "_total"]
            .iter()
            .find_map(|suf| name.strip_suffix(suf))
            .unwrap_or(name);
        assert!(
            served.contains(name) || served.contains(family),
            "the docs use {name}, which the agent does not serve"
        );
    }

    // promtool (the Prometheus server's own checker, Debian's `prometheus` package, which
    // tests/run-all.sh installs) reads it too. It reads the older text format, where an
    // OpenMetrics counter's HELP (named without `_total`) does not count as the help of
    // its `_total` series: that remark is expected, any other is not.
    let (_, _, text) = get_from(None, api, "/metrics", Some(SCRAPE_TOKEN));
    match promtool(&["check", "metrics"], Some(&text)) {
        None => skip(
            "metrics_are_scraped_parsed_and_guarded",
            "promtool is not installed (Debian package prometheus)",
        ),
        Some((_, report)) => {
            let unexpected: Vec<&str> = report
                .lines()
                .filter(|l| !l.trim().is_empty() && !(l.contains("_total no help text")))
                .collect();
            assert!(unexpected.is_empty(), "promtool check metrics: {report}");
        }
    }

    // Health: no token needed, nothing about the cluster in the answer.
    let (code, head, body) = get_from(None, api, "/healthz", None);
    assert_eq!(code, 200, "{body}");
    assert!(head
        .to_ascii_lowercase()
        .contains("cache-control: no-store"));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v, serde_json::json!({"status": "ok"}));
    for secret in ["it-metrics", "node-", GROUP, env!("CARGO_PKG_VERSION")] {
        assert!(!body.contains(secret), "{body}");
    }
}

/// The alerting rules parse as Prometheus rules (`promtool check rules`), and the Grafana
/// dashboard is a dashboard: JSON with panels, each with a Prometheus query.
#[test]
fn alert_rules_and_dashboard_load() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/src");
    let rules = docs.join("prometheus/baton-alerts.yml");
    match promtool(&["check", "rules", &rules.to_string_lossy()], None) {
        None => skip(
            "alert_rules_and_dashboard_load",
            "promtool is not installed (Debian package prometheus)",
        ),
        Some((ok, report)) => {
            assert!(ok, "promtool check rules: {report}");
            assert!(report.contains("SUCCESS"), "{report}");
        }
    }
    let d: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(docs.join("grafana/baton-dashboard.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(d["uid"], "baton-cluster");
    let panels = d["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    for p in panels {
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{p}");
        for t in targets {
            assert!(t["expr"].as_str().unwrap().contains("baton_"), "{t}");
        }
        assert!(p["gridPos"]["w"].as_u64().unwrap() <= 24);
    }
}

/// `[metrics.prometheus]` errors from `baton config check` name file, line and key, like
/// every other section; without the section `/metrics` is 404 and `/healthz` still works.
#[test]
fn prometheus_config_is_checked_and_off_by_default() {
    let _serial = serial();
    let c = Cluster::start(ClusterSpec::new("nometrics", 212));
    c.wait_owner(Some("node-1"), T);
    let api = c.node("node-1").api;
    let (code, _, body) = get_from(None, api, "/metrics", Some(c.token()));
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("[metrics.prometheus]"), "{body}");
    assert_eq!(get_from(None, api, "/healthz", None).0, 200);

    let text = std::fs::read_to_string(&c.config).unwrap();
    let bad = c.dir.join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "{text}\n[metrics.prometheus]\nallow = [\"0.0.0.0/0\"]\nbearer_token_file = \"\"\n"
        ),
    )
    .unwrap();
    let out = c.cli(&["config", "check", &bad.to_string_lossy()]);
    assert_ne!(out.code, 0, "{out:?}");
    let all = format!("{}{}", out.stdout, out.stderr);
    let line = text.lines().count() + 3;
    assert!(
        all.contains(&format!("bad.toml:{line}:")) && all.contains("metrics.prometheus.allow[0]"),
        "{all}"
    );
    assert!(
        all.contains("metrics.prometheus.bearer_token_file"),
        "{all}"
    );
}
