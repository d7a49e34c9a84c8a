//! Configuration loader tests: a full valid file, defaults, warnings, and one test per
//! class of error, each checking the file, line, column, key and the wording.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::*;

/// The design's example (docs: "Configuration"), without the `[notify.sns]` and
/// `[metrics.cloudwatch]` sections, which this loader does not know yet.
const DESIGN: &str = r#"[cluster]
name = "orders"
key_file = "/etc/baton/cluster.key"   # authenticates heartbeats and peer API calls

[heartbeat]
interval = "200ms"
timeout = "1s"

[[server]]
name = "node-1"
priority = 1                          # lower is preferred
zone = "us-east-1a"
interconnects = ["10.0.110.10", "10.0.111.10"]
api = "10.0.110.10:7420"

[[server]]
name = "node-2"
priority = 2
zone = "us-east-1b"
interconnects = ["10.0.120.10", "10.0.121.10"]
api = "10.0.120.10:7420"

[quorum]                              # network partition resolution
witness = { kind = "http", url = "http://10.0.130.5:7430" }   # or s3 / dynamodb / none
ping = ["10.0.0.1"]                   # optional extra reachability checks
on_loss = "stop-groups"               # or shutdown / reboot

[[group]]
name = "failover1"
servers = ["node-1", "node-2"]        # failover order
failback = false

[[group.resource]]
kind = "aws-vip"
name = "awsvip1"
ip = "10.1.0.20"
vpc_id = "vpc-1234abcd"
[group.resource.server.node-1]
eni_id = "eni-0aaa"
[group.resource.server.node-2]
eni_id = "eni-0bbb"

[[group.resource]]
kind = "exec"
name = "app"
start = "/usr/local/bin/app start"
stop = "/usr/local/bin/app stop"
depends_on = ["awsvip1"]

[[monitor]]
kind = "aws-az"
name = "awsazw1"
interval = "60s"
timeout = "180s"
on_api_error = "warn"
recovery = { target = "local-server", final_action = "none" }
[monitor.server.node-1]
zone = "us-east-1a"
[monitor.server.node-2]
zone = "us-east-1b"

[notify.log]
min_severity = "warning"
"#;

/// The smallest cluster: `[cluster]` `c` and three servers `a`, `b`, `c` on 10.0.0.1-3,
/// no group. Shared with the tests of the sections (`api.rs`).
pub(super) const THREE_SERVERS: &str = r#"
[cluster]
name = "c"
key_file = "k"

[[server]]
name = "a"
interconnects = ["10.0.0.1"]
api = "10.0.0.1:7420"

[[server]]
name = "b"
interconnects = ["10.0.0.2"]
api = "10.0.0.2:7420"

[[server]]
name = "c"
interconnects = ["10.0.0.3"]
api = "10.0.0.3:7420"
"#;

fn load(text: &str) -> Result<Loaded, ConfigError> {
    load_str("baton.toml", text, &AnyKind)
}

fn ok(text: &str) -> Loaded {
    match load(text) {
        Ok(l) => l,
        Err(e) => panic!("{e}:\n{}", render(&e.diagnostics)),
    }
}

fn render(d: &[Diagnostic]) -> String {
    d.iter().map(|d| format!("  {d}\n")).collect()
}

/// Every error-level diagnostic of a file that must not load.
fn errors(text: &str) -> Vec<Diagnostic> {
    match load(text) {
        Ok(_) => panic!("loaded, but an error was expected"),
        Err(e) => {
            assert!(!e.diagnostics.is_empty());
            for d in &e.diagnostics {
                assert_eq!(d.file, "baton.toml");
                assert!(d.line >= 1 && d.column >= 1, "{d}");
                assert!(!d.message.contains('\n'), "one line: {d:?}");
            }
            e.diagnostics
                .into_iter()
                .filter(|d| d.level == Level::Error)
                .collect()
        }
    }
}

/// The only error of a file.
fn error(text: &str) -> Diagnostic {
    let e = errors(text);
    assert_eq!(e.len(), 1, "exactly one error expected:\n{}", render(&e));
    e.into_iter().next().unwrap()
}

/// 1-based (line, column) of the `nth` (0-based) occurrence of `needle` in `text`.
fn pos(text: &str, needle: &str, nth: usize) -> (usize, usize) {
    let off = text
        .match_indices(needle)
        .nth(nth)
        .unwrap_or_else(|| panic!("`{needle}` #{nth} not in the text"))
        .0;
    let before = &text[..off];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap().chars().count() + 1;
    (line, col)
}

fn replace(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "`{from}` not in the text");
    text.replacen(from, to, 1)
}

#[track_caller]
fn assert_at(d: &Diagnostic, text: &str, needle: &str, nth: usize, key: &str) {
    assert_eq!((d.line, d.column), pos(text, needle, nth), "{d}");
    assert_eq!(d.key, key, "{d}");
}

// ---------------------------------------------------------------------------------------
// Valid files
// ---------------------------------------------------------------------------------------

#[test]
fn design_example_loads_with_every_value() {
    let l = ok(DESIGN);
    // 2 servers and a witness: 3 votes, nothing to warn about.
    let keys: Vec<&str> = l.warnings.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(keys, [] as [&str; 0], "{}", render(&l.warnings));
    let c = l.config;
    assert_eq!(c.path, "baton.toml");
    assert_eq!(c.digest.len(), 64);
    assert!(c.digest.chars().all(|ch| ch.is_ascii_hexdigit()));
    assert_eq!(c.cluster_name, "orders");
    assert_eq!(c.key_file, PathBuf::from("/etc/baton/cluster.key"));
    assert_eq!(c.heartbeat.interval.ms(), 200);
    assert_eq!(c.heartbeat.timeout.ms(), 1_000);
    assert_eq!(c.heartbeat.startup_wait().ms(), 1_400);
    assert_eq!(c.heartbeat.port, DEFAULT_HEARTBEAT_PORT);
    assert_eq!(c.agent, AgentSection::default());

    assert_eq!(c.servers.len(), 2);
    let n2 = c.server("node-2").unwrap();
    assert_eq!(n2.priority, 2);
    assert_eq!(n2.zone.as_deref(), Some("us-east-1b"));
    assert_eq!(
        n2.interconnects,
        vec![
            "10.0.120.10:7421".parse::<SocketAddr>().unwrap(),
            "10.0.121.10:7421".parse().unwrap()
        ]
    );
    assert_eq!(n2.api, "10.0.120.10:7420".parse().unwrap());
    assert_eq!(c.server_index("node-2"), Some(1));
    assert_eq!(c.paths(), 2);

    assert_eq!(
        c.quorum.witness,
        Witness::Http {
            url: "http://10.0.130.5:7430".into()
        }
    );
    assert_eq!(c.quorum.ping, ["10.0.0.1"]);
    assert_eq!(c.quorum.on_loss, OnQuorumLoss::StopGroups);
    // Two servers and the witness.
    assert_eq!(c.votes(), 3);

    let g = c.group("failover1").unwrap();
    assert_eq!(g.servers, ["node-1", "node-2"]);
    assert_eq!(g.startup_servers, g.servers, "default: all");
    assert!(!g.failback);
    assert!(g.auto_start);
    let names: Vec<&str> = g.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["awsvip1", "app"]);
    let vip = &g.resources[0];
    assert_eq!(vip.kind, "aws-vip");
    assert_eq!(
        vip.params.get("ip").and_then(|v| v.as_str()),
        Some("10.1.0.20")
    );
    assert!(
        !vip.params.contains_key("kind"),
        "common keys are not params"
    );
    let p1 = vip.params_for("node-1");
    assert_eq!(p1.get("eni_id").and_then(|v| v.as_str()), Some("eni-0aaa"));
    assert_eq!(
        p1.get("vpc_id").and_then(|v| v.as_str()),
        Some("vpc-1234abcd")
    );
    assert_eq!(
        vip.params_for("node-2")
            .get("eni_id")
            .and_then(|v| v.as_str()),
        Some("eni-0bbb")
    );
    let app = &g.resources[1];
    assert_eq!(app.depends_on, ["awsvip1"]);
    assert_eq!(app.activation.timeout.ms(), 60_000);
    assert_eq!(app.activation.retries, 0);
    assert_eq!(app.activation.final_action, FinalAction::None);
    assert_eq!(app.failover_threshold, 1);
    assert_eq!(app.deactivation.timeout.ms(), 60_000);

    let m = c.monitor("awsazw1").unwrap();
    assert_eq!(m.kind, "aws-az");
    assert_eq!(m.interval.ms(), 60_000);
    assert_eq!(m.timeout.ms(), 180_000);
    assert_eq!(m.retries, 1);
    assert_eq!(m.on_api_error, OnApiError::Warn);
    assert_eq!(m.timing, MonitorTiming::Always, "local-server: no group");
    assert_eq!(m.group, None);
    let r = m.recovery.as_ref().unwrap();
    assert_eq!(r.target, RecoveryTarget::LocalServer);
    assert_eq!(r.final_action, FinalAction::None);
    assert_eq!(
        (r.script_retries, r.restart_retries, r.failover_retries),
        (0, 3, 1)
    );
    // reset_after: 10 × interval × (retries + 1), at least a minute.
    assert_eq!(r.reset_after.ms(), 1_200_000);
    assert_eq!(
        m.params_for("node-2").get("zone").and_then(|v| v.as_str()),
        Some("us-east-1b")
    );
    assert_eq!(
        c.notify.log,
        Some(LogSinkSection {
            min_severity: crate::Severity::Warning
        })
    );
}

#[test]
fn minimal_file_gets_the_documented_defaults() {
    // Interconnects with a port and over IPv6, too.
    let servers = replace(THREE_SERVERS, "[\"10.0.0.2\"]", "[\"10.0.0.2:9000\"]");
    let servers = replace(
        &servers,
        "interconnects = [\"10.0.0.3\"]\napi = \"10.0.0.3:7420\"",
        "interconnects = [\"[fd00::3]:7421\"]\napi = \"[fd00::3]:7420\"",
    );
    let text = servers
        + r#"
[[group]]
name = "g"
servers = ["b", "a"]
startup_servers = ["a"]
[[group.resource]]
kind = "exec"
name = "r"

[[monitor]]
kind = "exec"
name = "m"
group = "g"
script = "/bin/true"
recovery = { target = "r", script = "/bin/fix" }
"#;
    let l = ok(&text);
    assert!(l.warnings.is_empty(), "{}", render(&l.warnings));
    let c = l.config;
    assert_eq!(c.heartbeat, HeartbeatSection::default());
    assert_eq!(
        c.servers.iter().map(|s| s.priority).collect::<Vec<_>>(),
        [1, 2, 3],
        "priority defaults to the position"
    );
    assert_eq!(c.servers[1].interconnects[0].port(), 9000);
    assert!(c.servers[2].interconnects[0].is_ipv6());
    assert_eq!(c.quorum.witness, Witness::None);
    assert_eq!(c.votes(), 3);
    let g = &c.groups[0];
    assert_eq!(g.startup_servers, ["a"]);
    let m = &c.monitors[0];
    assert_eq!(m.interval.ms(), 30_000);
    assert_eq!(m.timeout.ms(), 60_000);
    assert_eq!(m.wait_to_start.ms(), 0);
    assert_eq!(
        m.timing,
        MonitorTiming::Active,
        "a group implies timing active"
    );
    assert_eq!(m.on_api_error, OnApiError::Warn);
    assert_eq!(
        m.params.get("script").and_then(|v| v.as_str()),
        Some("/bin/true")
    );
    let r = m.recovery.as_ref().unwrap();
    assert_eq!(
        r.target,
        RecoveryTarget::Resource {
            group: "g".into(),
            resource: "r".into()
        }
    );
    assert_eq!(r.script.as_deref(), Some("/bin/fix"));
    assert_eq!(r.script_retries, 1, "one script run when a script is given");
    assert_eq!(r.reset_after.ms(), 600_000);
}

#[test]
fn recovery_target_sets_the_group_of_a_monitor() {
    let text = format!(
        "{DESIGN}\n[[monitor]]\nkind = \"exec\"\nname = \"appmon\"\nrecovery = {{ target = \"failover1\", restart_retries = 2 }}\n"
    );
    let c = ok(&text).config;
    let m = c.monitor("appmon").unwrap();
    assert_eq!(m.group.as_deref(), Some("failover1"));
    assert_eq!(m.timing, MonitorTiming::Active);
    assert_eq!(
        m.recovery.as_ref().unwrap().target,
        RecoveryTarget::Group("failover1".into())
    );
}

#[test]
fn durations_accept_units_and_compounds() {
    for (s, ms) in [
        ("200ms", 200),
        ("5s", 5_000),
        ("2m", 120_000),
        ("1h", 3_600_000),
        ("1h30m", 5_400_000),
        (" 5s ", 5_000),
        // humantime's grammar is lenient: words and spaces are read too.
        ("5 sec", 5_000),
        ("1m 30s", 90_000),
    ] {
        assert_eq!(parse_duration(s).unwrap().ms(), ms, "{s}");
    }
    for s in ["", "  ", "5", "soon", "5 parsecs", "-1s", "s5"] {
        let e = parse_duration(s).unwrap_err();
        assert!(e.contains("like 200ms, 5s, 2m or 1h"), "{s}: {e}");
    }
    assert_eq!(Dur::from_ms(90_000).to_string(), "1m 30s");
}

// ---------------------------------------------------------------------------------------
// Warnings
// ---------------------------------------------------------------------------------------

#[test]
fn two_servers_without_witness_warn() {
    let text = replace(
        DESIGN,
        r#"witness = { kind = "http", url = "http://10.0.130.5:7430" }   # or s3 / dynamodb / none"#,
        "",
    );
    let l = ok(&text);
    let w = l.warnings.iter().find(|w| w.key == "quorum").unwrap();
    assert_eq!(w.level, Level::Warning);
    assert_at(w, &text, "quorum]", 0, "quorum");
    assert!(w.message.contains("no majority"), "{w}");
    assert!(w.to_string().contains(": warning at `quorum`: "), "{w}");
}

#[test]
fn even_vote_count_warns() {
    // 3 servers and the witness: 4 votes.
    let text = replace(
        DESIGN,
        "[quorum]",
        "[[server]]\nname = \"node-3\"\ninterconnects = [\"10.0.140.10\", \"10.0.141.10\"]\napi = \"10.0.140.10:7420\"\n\n[quorum]",
    );
    let l = ok(&text);
    let even: Vec<_> = l.warnings.iter().filter(|w| w.key == "quorum").collect();
    assert_eq!(even.len(), 1, "{}", render(&l.warnings));
    assert!(
        even[0].message.contains("4 votes, an even number"),
        "{}",
        even[0]
    );
}

#[test]
fn short_startup_wait_warns() {
    let text = replace(
        DESIGN,
        "timeout = \"1s\"",
        "timeout = \"1s\"\nstartup_wait = \"500ms\"",
    );
    let l = ok(&text);
    let w = l
        .warnings
        .iter()
        .find(|w| w.key == "heartbeat.startup_wait")
        .unwrap();
    assert_at(w, &text, "startup_wait", 0, "heartbeat.startup_wait");
    assert_eq!(l.config.heartbeat.startup_wait().ms(), 500);
}

// ---------------------------------------------------------------------------------------
// Errors, one class per test
// ---------------------------------------------------------------------------------------

#[test]
fn toml_syntax_error() {
    let text = replace(DESIGN, "name = \"orders\"", "name = \"orders");
    let e = load(&text).unwrap_err();
    assert_eq!(e.to_string(), "1 configuration error in baton.toml");
    assert_eq!(e.code(), "config-invalid");
    let d = error(&text);
    assert_eq!(d.line, 2);
    assert!(d.column >= 8, "{d}");
    assert_eq!(d.key, "");
    assert!(d.message.starts_with("this is not valid TOML: "), "{d}");
    assert!(d.to_string().starts_with("baton.toml:2:"), "{d}");

    let text = replace(DESIGN, "[heartbeat]", "[heartbeat");
    let d = error(&text);
    assert_eq!(d.line, pos(&text, "[heartbeat", 0).0);
    assert_eq!(
        d.message,
        "this is not valid TOML: invalid table header; expected `.`, `]`"
    );
    // A key defined twice is a syntax error too.
    let text = replace(
        DESIGN,
        "timeout = \"1s\"",
        "timeout = \"1s\"\ntimeout = \"2s\"",
    );
    let d = error(&text);
    assert_eq!(d.line, pos(&text, "timeout = \"2s\"", 0).0);
}

#[test]
fn empty_file_misses_the_cluster_section() {
    let d = error("");
    assert_eq!((d.line, d.column), (1, 1));
    assert_eq!(d.message, "missing required key `cluster`");
}

#[test]
fn unknown_key_with_did_you_mean() {
    let text = replace(DESIGN, "interval = \"200ms\"", "intervall = \"200ms\"");
    let d = error(&text);
    assert_at(&d, &text, "intervall", 0, "heartbeat.intervall");
    assert_eq!(
        d.message,
        "unknown key `intervall` (did you mean `interval`?); known keys here: interval, timeout, port, startup_wait, encrypt"
    );
    assert_eq!(
        d.to_string(),
        format!(
            "baton.toml:6:1: error at `heartbeat.intervall`: {}",
            d.message
        )
    );
    // In an array of tables, with the element's index in the key.
    let text = replace(DESIGN, "priority = 2", "priorty = 2");
    let d = error(&text);
    assert_at(&d, &text, "priorty", 0, "server[1].priorty");
    assert!(d.message.contains("(did you mean `priority`?)"), "{d}");
    // In an inline table.
    let text = replace(DESIGN, "final_action = \"none\"", "final_acton = \"none\"");
    let d = error(&text);
    assert_at(
        &d,
        &text,
        "final_acton",
        0,
        "monitor[0].recovery.final_acton",
    );
    assert!(d.message.contains("(did you mean `final_action`?)"), "{d}");
    // A table that takes two keys.
    let text = replace(DESIGN, "name = \"orders\"", "nmae = \"orders\"");
    let e = errors(&text);
    assert!(e.iter().any(|d| d.key == "cluster.nmae"
        && d.message.contains("(did you mean `name`?)")
        && d.message.contains("known keys here: name, key_file")));
    // A top-level section.
    let text = format!("{DESIGN}\n[alerting.cloudwatch]\nnamespace = \"Baton\"\n");
    let d = error(&text);
    assert_at(&d, &text, "alerting", 0, "alerting");
    assert!(
        d.message
            .starts_with("unknown key `alerting`; known keys here: cluster,"),
        "{d}"
    );
}

#[test]
fn unknown_key_far_from_any_known_key_has_no_hint() {
    let text = replace(DESIGN, "failback = false", "colour = \"blue\"");
    let d = error(&text);
    assert_at(&d, &text, "colour", 0, "group[0].colour");
    assert!(!d.message.contains("did you mean"), "{d}");
    assert!(d.message.contains("known keys here: name, servers"), "{d}");
}

#[test]
fn wrong_type() {
    let text = replace(DESIGN, "priority = 2", "priority = \"2\"");
    let d = error(&text);
    assert_at(&d, &text, "priority = \"2\"", 0, "server[1].priority");
    assert_eq!(
        d.message,
        "wrong type: found string \"2\", expected a whole number from 0 to 4294967295"
    );
    let text = replace(DESIGN, "failback = false", "failback = \"no\"");
    let d = error(&text);
    assert_eq!(d.key, "group[0].failback");
    assert_eq!(
        d.message,
        "wrong type: found string \"no\", expected a boolean"
    );
    let text = replace(
        DESIGN,
        "servers = [\"node-1\", \"node-2\"]",
        "servers = \"node-1\"",
    );
    let d = error(&text);
    assert_eq!(d.key, "group[0].servers");
    assert_eq!(
        d.message,
        "wrong type: found string \"node-1\", expected an array"
    );
    let text = replace(DESIGN, "timeout = \"1s\"", "timeout = \"1s\"\nport = 70000");
    let d = error(&text);
    assert_at(&d, &text, "port", 0, "heartbeat.port");
    assert!(
        d.message
            .ends_with("expected a whole number from 0 to 65535"),
        "{d}"
    );
    let text = replace(DESIGN, "final_action = \"none\"", "final_action = 5");
    let d = error(&text);
    assert_eq!(d.key, "monitor[0].recovery.final_action");
    assert_eq!(d.message, "wrong type: expected a string");
    let text = replace(DESIGN, "on_loss = \"stop-groups\"", "on_loss = \"explode\"");
    let d = error(&text);
    assert_at(&d, &text, "on_loss", 0, "quorum.on_loss");
    assert_eq!(
        d.message,
        "unknown value `explode`; expected one of: stop-groups, shutdown, reboot"
    );
}

#[test]
fn resource_order_sets_the_activation_steps() {
    let c = ok(DESIGN).config;
    let g = &c.groups[0];
    assert_eq!(g.resource_order, ResourceOrder::Sequential);
    let n = g.resources.len();
    let all: Vec<usize> = (0..n).collect();
    assert_eq!(
        g.activation_steps(&all),
        all.iter().map(|&i| vec![i]).collect::<Vec<_>>()
    );
    let text = replace(
        DESIGN,
        "failback = false\n",
        "failback = false\nresource_order = \"parallel\"\n",
    );
    let c = ok(&text).config;
    let g = &c.groups[0];
    assert_eq!(g.resource_order, ResourceOrder::Parallel);
    // One step per dependency depth: app depends on awsvip1.
    assert_eq!(g.activation_steps(&all), [vec![0], vec![1]]);
    assert_eq!(g.resources[1].name, "app");
    // Without the dependency both start (and stop) together; a subset keeps the steps.
    let text = replace(&text, "depends_on = [\"awsvip1\"]\n", "");
    let c = ok(&text).config;
    let g = &c.groups[0];
    assert_eq!(g.activation_steps(&all), [vec![0, 1]]);
    assert_eq!(g.activation_steps(&[1]), [vec![1]]);
    let text = replace(
        DESIGN,
        "failback = false\n",
        "failback = false\nresource_order = \"random\"\n",
    );
    let d = error(&text);
    assert_at(&d, &text, "resource_order", 0, "group[0].resource_order");
    assert_eq!(
        d.message,
        "unknown value `random`; expected one of: sequential or parallel"
    );
}

#[test]
fn missing_required_key() {
    let text = replace(DESIGN, "api = \"10.0.120.10:7420\"", "");
    let d = error(&text);
    assert_at(&d, &text, "[[server]]", 1, "server[1]");
    assert_eq!(d.message, "missing required key `api`");
}

#[test]
fn bad_durations() {
    // A bare integer.
    let text = replace(DESIGN, "timeout = \"1s\"", "timeout = 5");
    let d = error(&text);
    assert_at(&d, &text, "timeout = 5", 0, "heartbeat.timeout");
    assert_eq!(
        d.message,
        "a duration needs a unit: write \"5s\" or \"5ms\" (with quotes)"
    );
    // A number in a string, without a unit.
    let text = replace(DESIGN, "interval = \"60s\"", "interval = \"60\"");
    let d = error(&text);
    assert_at(&d, &text, "interval = \"60\"", 0, "monitor[0].interval");
    assert_eq!(
        d.message,
        "invalid duration '60': use a number and a unit, like 200ms, 5s, 2m or 1h"
    );
    // An unknown unit.
    let text = replace(DESIGN, "timeout = \"180s\"", "timeout = \"3 fortnights\"");
    let d = error(&text);
    assert_eq!(d.key, "monitor[0].timeout");
    assert!(
        d.message.starts_with("invalid duration '3 fortnights'"),
        "{d}"
    );
    // Zero where a positive duration is needed.
    let text = replace(DESIGN, "interval = \"60s\"", "interval = \"0s\"");
    let d = error(&text);
    assert_eq!(d.key, "monitor[0].interval");
    assert_eq!(d.message, "interval must be longer than 0");
    let text = replace(
        DESIGN,
        "depends_on = [\"awsvip1\"]",
        "depends_on = [\"awsvip1\"]\nactivate_timeout = \"0ms\"",
    );
    let d = error(&text);
    assert_at(
        &d,
        &text,
        "activate_timeout",
        0,
        "group[0].resource[1].activate_timeout",
    );
    // Far too short an interval.
    let text = replace(
        &replace(DESIGN, "interval = \"200ms\"", "interval = \"5ms\""),
        "timeout = \"1s\"",
        "timeout = \"100ms\"",
    );
    let d = error(&text);
    assert_eq!(d.key, "heartbeat.interval");
    assert!(d.message.contains("use at least 10ms"), "{d}");
}

#[test]
fn duplicate_server_name() {
    let text = replace(DESIGN, "name = \"node-2\"", "name = \"node-1\"");
    let e = errors(&text);
    let d = &e[0];
    assert_at(d, &text, "name = \"node-1\"", 1, "server[1].name");
    assert_eq!(d.message, "server name `node-1` is used twice");
}

#[test]
fn duplicate_group_name() {
    let text = format!("{DESIGN}\n[[group]]\nname = \"failover1\"\nservers = [\"node-2\"]\n");
    let d = error(&text);
    assert_at(&d, &text, "name = \"failover1\"", 1, "group[1].name");
    assert_eq!(d.message, "group name `failover1` is used twice");
}

#[test]
fn duplicate_resource_name() {
    // Resource names are unique in the whole cluster, not only in their group.
    let text = format!(
        "{DESIGN}\n[[group]]\nname = \"failover2\"\nservers = [\"node-2\"]\n[[group.resource]]\nkind = \"exec\"\nname = \"app\"\n"
    );
    let d = error(&text);
    assert_at(&d, &text, "name = \"app\"", 1, "group[1].resource[0].name");
    assert_eq!(
        d.message,
        "resource name `app` is already used in group `failover1`: resource names are unique in the cluster"
    );
    // A resource may not take a group's name either (recovery targets name either).
    let text = format!(
        "{DESIGN}\n[[group]]\nname = \"failover2\"\nservers = [\"node-2\"]\n[[group.resource]]\nkind = \"exec\"\nname = \"failover1\"\n"
    );
    let d = error(&text);
    assert_eq!(d.key, "group[1].resource[0].name");
    assert!(d.message.contains("already used as a group name"), "{d}");
}

#[test]
fn duplicate_monitor_name() {
    let text = format!("{DESIGN}\n[[monitor]]\nkind = \"ping\"\nname = \"awsazw1\"\n");
    let d = error(&text);
    assert_at(&d, &text, "name = \"awsazw1\"", 1, "monitor[1].name");
    assert_eq!(d.message, "monitor name `awsazw1` is used twice");
}

#[test]
fn bad_names() {
    let text = replace(DESIGN, "name = \"failover1\"", "name = \"fail over\"");
    let d = error(&text);
    assert_eq!(d.key, "group[0].name");
    assert_eq!(
        d.message,
        "group name `fail over` is not allowed: use 1 to 63 letters, digits, `-`, `_` or `.`"
    );
    // A value with a line break is quoted escaped: a diagnostic stays on one line.
    let text = replace(DESIGN, "name = \"failover1\"", "name = \"fail\\nover\"");
    let d = error(&text);
    assert_eq!(
        d.message,
        "group name `fail\\nover` is not allowed: use 1 to 63 letters, digits, `-`, `_` or `.`"
    );
    let text = replace(DESIGN, "name = \"node-2\"", "name = \"local-server\"");
    let e = errors(&text);
    assert!(e
        .iter()
        .any(|d| d.key == "server[1].name" && d.message == "`local-server` is reserved"));
}

#[test]
fn unknown_server_in_group() {
    let text = replace(
        DESIGN,
        "servers = [\"node-1\", \"node-2\"]",
        "servers = [\"node-1\", \"node-3\"]",
    );
    let e = errors(&text);
    let d = &e[0];
    assert_at(d, &text, "\"node-3\"", 0, "group[0].servers[1]");
    assert_eq!(
        d.message,
        "unknown server `node-3`; defined: node-1, node-2"
    );
    // (node-2's per-server resource settings no longer match a group server.)
    assert_eq!(e[1].key, "group[0].resource[0].server.node-2");
    // Listed twice.
    let text = replace(
        DESIGN,
        "servers = [\"node-1\", \"node-2\"]",
        "servers = [\"node-1\", \"node-2\", \"node-1\"]",
    );
    let d = error(&text);
    assert_eq!(d.key, "group[0].servers[2]");
    assert_eq!(
        d.message,
        "server `node-1` is listed twice in group `failover1`"
    );
    // A startup server outside the group.
    let text = replace(DESIGN, "failback = false", "startup_servers = [\"node-9\"]");
    let d = error(&text);
    assert_at(&d, &text, "\"node-9\"", 0, "group[0].startup_servers[0]");
    assert_eq!(
        d.message,
        "startup server `node-9` is not one of the group's servers (node-1, node-2)"
    );
}

#[test]
fn unknown_depends_on() {
    let text = replace(
        DESIGN,
        "depends_on = [\"awsvip1\"]",
        "depends_on = [\"awsvip2\"]",
    );
    let d = error(&text);
    assert_at(
        &d,
        &text,
        "\"awsvip2\"",
        0,
        "group[0].resource[1].depends_on[0]",
    );
    assert_eq!(
        d.message,
        "unknown resource `awsvip2`; defined: app, awsvip1"
    );
    // A resource of another group.
    let text = format!(
        "{DESIGN}\n[[group]]\nname = \"failover2\"\nservers = [\"node-2\"]\n[[group.resource]]\nkind = \"exec\"\nname = \"db\"\ndepends_on = [\"app\"]\n"
    );
    let d = error(&text);
    assert_eq!(d.key, "group[1].resource[0].depends_on[0]");
    assert_eq!(
        d.message,
        "`app` is a resource of group `failover1`; depends_on may only name resources of the same group (`failover2`)"
    );
}

#[test]
fn cyclic_depends_on() {
    let text = replace(
        DESIGN,
        "vpc_id = \"vpc-1234abcd\"",
        "vpc_id = \"vpc-1234abcd\"\ndepends_on = [\"app\"]",
    );
    let d = error(&text);
    assert_at(
        &d,
        &text,
        "depends_on = [\"app\"]",
        0,
        "group[0].resource[0].depends_on",
    );
    assert_eq!(
        d.message,
        "depends_on forms a cycle: awsvip1 → app → awsvip1"
    );
    // A resource that names itself: one error, not two.
    let text = replace(
        DESIGN,
        "depends_on = [\"awsvip1\"]",
        "depends_on = [\"app\"]",
    );
    let d = error(&text);
    assert_at(
        &d,
        &text,
        "\"app\"]",
        0,
        "group[0].resource[1].depends_on[0]",
    );
    assert_eq!(d.message, "resource `app` depends on itself");
}

#[test]
fn per_server_override_for_a_non_member() {
    let text = replace(
        DESIGN,
        "[group.resource.server.node-2]",
        "[group.resource.server.node-3]",
    );
    let d = error(&text);
    assert_at(
        &d,
        &text,
        "node-3]",
        0,
        "group[0].resource[0].server.node-3",
    );
    assert_eq!(
        d.message,
        "per-server settings for `node-3`, which is not one of group `failover1`'s servers (node-1, node-2)"
    );
    let text = replace(DESIGN, "[monitor.server.node-2]", "[monitor.server.node-3]");
    let d = error(&text);
    assert_at(&d, &text, "node-3]", 0, "monitor[0].server.node-3");
    assert_eq!(
        d.message,
        "unknown server `node-3`; defined: node-1, node-2"
    );
}

#[test]
fn heartbeat_timeout_below_three_intervals() {
    let text = replace(DESIGN, "timeout = \"1s\"", "timeout = \"500ms\"");
    let d = error(&text);
    assert_at(&d, &text, "timeout = \"500ms\"", 0, "heartbeat.timeout");
    assert_eq!(
        d.message,
        "heartbeat timeout 500ms must be at least 3 times the interval 200ms (so that one or two lost packets do not mark a server down); try 1s"
    );
    // Exactly 3 × is fine.
    ok(&replace(DESIGN, "timeout = \"1s\"", "timeout = \"600ms\""));
}

#[test]
fn interconnect_count_mismatch() {
    let text = replace(
        DESIGN,
        "interconnects = [\"10.0.120.10\", \"10.0.121.10\"]",
        "interconnects = [\"10.0.120.10\"]",
    );
    let d = error(&text);
    assert_at(&d, &text, "interconnects", 1, "server[1].interconnects");
    assert_eq!(
        d.message,
        "server `node-2` has 1 interconnects but the first server has 2: every server needs one address on each interconnect network, in the same order"
    );
}

#[test]
fn bad_interconnect_addresses() {
    let text = replace(DESIGN, "\"10.0.121.10\"", "\"node2.example\"");
    let d = error(&text);
    assert_at(
        &d,
        &text,
        "\"node2.example\"",
        0,
        "server[1].interconnects[1]",
    );
    assert!(
        d.message
            .starts_with("`node2.example` is not an IP address"),
        "{d}"
    );
    let text = replace(DESIGN, "\"10.0.121.10\"", "\"10.0.111.10\"");
    let d = error(&text);
    assert_eq!(d.key, "server[1].interconnects[1]");
    assert_eq!(
        d.message,
        "interconnect address 10.0.111.10:7421 is also used by server `node-1`"
    );
}

#[test]
fn bad_api_address() {
    let text = replace(
        DESIGN,
        "api = \"10.0.120.10:7420\"",
        "api = \"10.0.120.10\"",
    );
    let d = error(&text);
    assert_at(&d, &text, "api = \"10.0.120.10\"", 0, "server[1].api");
    assert_eq!(
        d.message,
        "api `10.0.120.10` is not an address with a port, like `10.0.110.10:7420`"
    );
    let text = replace(
        DESIGN,
        "api = \"10.0.120.10:7420\"",
        "api = \"10.0.110.10:7420\"",
    );
    let d = error(&text);
    assert_eq!(d.key, "server[1].api");
    assert_eq!(
        d.message,
        "api address 10.0.110.10:7420 is also used by server `node-1`"
    );
}

#[test]
fn bad_quorum_urls() {
    let text = replace(
        DESIGN,
        "url = \"http://10.0.130.5:7430\"",
        "url = \"10.0.130.5:7430\"",
    );
    let d = error(&text);
    assert_at(&d, &text, "url", 0, "quorum.witness.url");
    assert_eq!(
        d.message,
        "witness url `10.0.130.5:7430` must start with http:// or https://"
    );
    let text = replace(
        DESIGN,
        "witness = { kind = \"http\"",
        "witness = { kind = \"pigeon\"",
    );
    let d = error(&text);
    assert_eq!(d.key, "quorum.witness.kind");
    assert!(
        d.message
            .starts_with("unknown value `pigeon`; expected one of:"),
        "{d}"
    );
}

#[test]
fn monitor_recovery_target_unknown() {
    let text = replace(
        DESIGN,
        "target = \"local-server\"",
        "target = \"failover2\"",
    );
    let d = error(&text);
    assert_at(&d, &text, "target", 0, "monitor[0].recovery.target");
    assert_eq!(
        d.message,
        "unknown recovery target (a group, a resource or `local-server`) `failover2`; defined: failover1, app, awsvip1, local-server"
    );
}

#[test]
fn timing_active_without_group() {
    let text = replace(
        DESIGN,
        "on_api_error = \"warn\"",
        "on_api_error = \"warn\"\ntiming = \"active\"",
    );
    let d = error(&text);
    assert_at(&d, &text, "timing", 0, "monitor[0].timing");
    assert_eq!(
        d.message,
        "timing `active` needs a group: set `group = \"NAME\"` or a recovery target that is a group or resource"
    );
}

#[test]
fn monitor_group_unknown_or_inconsistent() {
    let text = format!("{DESIGN}\n[[monitor]]\nkind = \"exec\"\nname = \"m\"\ngroup = \"nope\"\n");
    let d = error(&text);
    assert_at(&d, &text, "group = \"nope\"", 0, "monitor[1].group");
    assert_eq!(d.message, "unknown group `nope`; defined: failover1");
    let text = format!(
        "{DESIGN}\n[[group]]\nname = \"g2\"\nservers = [\"node-2\"]\n\n[[monitor]]\nkind = \"resource\"\nname = \"m\"\ngroup = \"g2\"\nresource = \"app\"\n"
    );
    let d = error(&text);
    assert_eq!(d.key, "monitor[1].resource");
    assert_eq!(
        d.message,
        "resource `app` belongs to group `failover1`, not to `g2`"
    );
}

#[test]
fn resource_monitor_without_resource() {
    let text = format!("{DESIGN}\n[[monitor]]\nkind = \"resource\"\nname = \"m2\"\n");
    let d = error(&text);
    assert_at(&d, &text, "kind = \"resource\"", 0, "monitor[1].kind");
    assert_eq!(
        d.message,
        "a monitor of kind `resource` needs `resource = \"NAME\"`: the group resource whose check it polls"
    );
    let text =
        format!("{DESIGN}\n[[monitor]]\nkind = \"resource\"\nname = \"m2\"\nresource = \"nope\"\n");
    let d = error(&text);
    assert_eq!(d.key, "monitor[1].resource");
    assert_eq!(d.message, "unknown resource `nope`; defined: app, awsvip1");
    // A resource monitor takes only the common keys.
    let text = format!(
        "{DESIGN}\n[[monitor]]\nkind = \"resource\"\nname = \"m2\"\nresource = \"app\"\nurl = \"x\"\n"
    );
    let d = error(&text);
    assert_at(&d, &text, "url = \"x\"", 0, "monitor[1].url");
    // ...and is otherwise valid, gated by its resource's group.
    let c = ok(&format!(
        "{DESIGN}\n[[monitor]]\nkind = \"resource\"\nname = \"m2\"\nresource = \"app\"\n"
    ))
    .config;
    let m = c.monitor("m2").unwrap();
    assert_eq!(m.group.as_deref(), Some("failover1"));
    assert_eq!(m.timing, MonitorTiming::Active);
}

#[test]
fn several_errors_are_all_reported() {
    let text = replace(
        &replace(DESIGN, "timeout = \"1s\"", "timeout = \"500ms\""),
        "depends_on = [\"awsvip1\"]",
        "depends_on = [\"nope\"]",
    );
    let e = load(&text).unwrap_err();
    assert_eq!(
        e.diagnostics
            .iter()
            .filter(|d| d.level == Level::Error)
            .count(),
        2
    );
    assert_eq!(e.to_string(), "2 configuration errors in baton.toml");
    // In file order of checking: heartbeat first, then the group.
    assert_eq!(e.diagnostics[0].key, "heartbeat.timeout");
    assert_eq!(e.diagnostics[1].key, "group[0].resource[1].depends_on[0]");
}

#[test]
fn an_unreadable_file_is_one_error_naming_it() {
    let e = ConfigError::unreadable("/nonexistent/baton.toml", &"No such file or directory");
    assert_eq!(e.file, "/nonexistent/baton.toml");
    assert_eq!(e.diagnostics.len(), 1);
    assert_eq!(e.diagnostics[0].level, Level::Error);
    assert_eq!(
        e.diagnostics[0].message,
        "cannot read the configuration file: No such file or directory"
    );
}

// ---------------------------------------------------------------------------------------
// Kind catalogs
// ---------------------------------------------------------------------------------------

/// A catalog that knows two resource kinds and one monitor kind; `aws-vip` needs `eni_id`
/// and has a local self-fence stop of 100 ms.
struct Strict;

impl KindCatalog for Strict {
    fn resource_kinds(&self) -> Vec<&'static str> {
        vec!["aws-vip", "exec"]
    }
    fn monitor_kinds(&self) -> Vec<&'static str> {
        vec!["aws-az"]
    }
    fn check_resource(&self, kind: &str, p: &toml::Table) -> Result<(), (Option<String>, String)> {
        match (kind, p.get("eni_id").and_then(|v| v.as_str())) {
            ("aws-vip", None) => Err((None, "`eni_id` is required".into())),
            ("aws-vip", Some(e)) if !e.starts_with("eni-") => {
                Err((Some("eni_id".into()), format!("`{e}` is not an ENI id")))
            }
            _ => Ok(()),
        }
    }
    fn check_monitor(&self, _: &str, p: &toml::Table) -> Result<(), (Option<String>, String)> {
        if p.contains_key("zone") {
            Ok(())
        } else {
            Err((None, "`zone` is required".into()))
        }
    }
    fn local_fence_stop_ms(&self, kind: &str) -> Option<u64> {
        (kind == "aws-vip").then_some(100)
    }
}

#[test]
fn local_fence_stops_count_their_bound_in_the_group_budget() {
    let strict = |text: &str| match load_str("baton.toml", text, &Strict) {
        Ok(l) => l,
        Err(e) => panic!("{e}:\n{}", render(&e.diagnostics)),
    };
    // The kind's default: a local self-fence stop for aws-vip, the normal one for exec.
    let l = strict(DESIGN);
    let rs = &l.config.groups[0].resources;
    assert_eq!(rs[0].fence_stop, FenceStop::Local { bound_ms: 100 });
    assert_eq!(rs[1].fence_stop, FenceStop::Full);
    // The exec's 60 s stop still dominates: the agent's timing.
    assert_eq!(l.config.groups[0].stop_budget_ms(), 60_100);
    assert_eq!(l.config.group_timing(0, 1000), l.config.timing(1000));
    // With a quick exec stop, the budget is 100 + 50 ms, floored at the interval.
    let quick = replace(
        DESIGN,
        "depends_on = [\"awsvip1\"]",
        "depends_on = [\"awsvip1\"]\ndeactivate_timeout = \"50ms\"",
    );
    let l = strict(&quick);
    assert_eq!(l.config.groups[0].stop_budget_ms(), 150);
    let g = l.config.group_timing(0, 1000);
    assert_eq!((g.fence_ms, g.takeover_after_ms()), (200, 1427));
    // Retries count each attempt at the bound; a deactivate_timeout below the bound wins.
    let retried = quick.replacen(
        "vpc_id = \"vpc-1234abcd\"",
        "vpc_id = \"vpc-1234abcd\"\ndeactivate_retries = 2",
        1,
    );
    assert_eq!(strict(&retried).config.groups[0].stop_budget_ms(), 350);
    let short = quick.replacen(
        "vpc_id = \"vpc-1234abcd\"",
        "vpc_id = \"vpc-1234abcd\"\ndeactivate_timeout = \"30ms\"",
        1,
    );
    assert_eq!(strict(&short).config.groups[0].stop_budget_ms(), 80);
    // `full` opts out: the 60 s deactivate_timeout counts again.
    let full = quick.replacen(
        "vpc_id = \"vpc-1234abcd\"",
        "vpc_id = \"vpc-1234abcd\"\nfence_stop = \"full\"",
        1,
    );
    let l = strict(&full);
    assert_eq!(l.config.groups[0].resources[0].fence_stop, FenceStop::Full);
    assert_eq!(l.config.group_timing(0, 1000).fence_ms, 500);
    // `local` on a kind without one: an error at the key, naming the kinds that have one.
    let bad = replace(
        DESIGN,
        "depends_on = [\"awsvip1\"]",
        "depends_on = [\"awsvip1\"]\nfence_stop = \"local\"",
    );
    let e = load_str("baton.toml", &bad, &Strict).unwrap_err();
    let d = &e.diagnostics[0];
    assert_at(d, &bad, "fence_stop", 0, "group[0].resource[1].fence_stop");
    assert!(
        d.message
            .contains("only for kinds whose cloud object the next owner takes over")
            && d.message.contains("(aws-vip)")
            && d.message.contains("kind `exec`"),
        "{d}"
    );
    // Not a mode: a typed error at the key.
    let bad = replace(
        DESIGN,
        "depends_on = [\"awsvip1\"]",
        "depends_on = [\"awsvip1\"]\nfence_stop = \"sometimes\"",
    );
    let e = load_str("baton.toml", &bad, &Strict).unwrap_err();
    assert_at(
        &e.diagnostics[0],
        &bad,
        "fence_stop",
        0,
        "group[0].resource[1].fence_stop",
    );
    // A catalog without local stops (the engine's tests): every resource stops in full.
    assert!(ok(DESIGN)
        .config
        .groups
        .iter()
        .flat_map(|g| &g.resources)
        .all(|r| r.fence_stop == FenceStop::Full));
}

#[test]
fn kind_catalog_checks_merged_per_server_keys() {
    assert!(load_str("baton.toml", DESIGN, &Strict).is_ok());
    let text = replace(DESIGN, "kind = \"exec\"", "kind = \"exce\"");
    let e = load_str("baton.toml", &text, &Strict).unwrap_err();
    let d = &e.diagnostics[0];
    assert_at(d, &text, "kind = \"exce\"", 0, "group[0].resource[1].kind");
    assert_eq!(
        d.message,
        "unknown resource kind `exce`; known kinds: aws-vip, exec"
    );
    // A bad per-server value is reported at the override, naming the server.
    let text = replace(DESIGN, "eni_id = \"eni-0bbb\"", "eni_id = \"i-0bbb\"");
    let e = load_str("baton.toml", &text, &Strict).unwrap_err();
    assert_eq!(
        e.diagnostics
            .iter()
            .filter(|d| d.level == Level::Error)
            .count(),
        1
    );
    let d = &e.diagnostics[0];
    assert_at(
        d,
        &text,
        "eni_id = \"i-0bbb\"",
        0,
        "group[0].resource[0].server.node-2.eni_id",
    );
    assert_eq!(d.message, "`i-0bbb` is not an ENI id (for server `node-2`)");
    // A key missing for every server is reported once.
    let text = replace(
        &replace(DESIGN, "eni_id = \"eni-0aaa\"", "note = \"a\""),
        "eni_id = \"eni-0bbb\"",
        "note = \"b\"",
    );
    let e = load_str("baton.toml", &text, &Strict).unwrap_err();
    assert_eq!(
        e.diagnostics
            .iter()
            .filter(|d| d.level == Level::Error)
            .count(),
        1,
        "{}",
        render(&e.diagnostics)
    );
    assert_eq!(e.diagnostics[0].key, "group[0].resource[0]");
    // Monitors: unknown kind (the built-in `resource` kind is listed too) and checks.
    let text = replace(DESIGN, "kind = \"aws-az\"", "kind = \"aws-azz\"");
    let e = load_str("baton.toml", &text, &Strict).unwrap_err();
    assert_eq!(
        e.diagnostics[0].message,
        "unknown monitor kind `aws-azz`; known kinds: aws-az, resource"
    );
    let text = replace(DESIGN, "[monitor.server.node-2]\nzone = \"us-east-1b\"", "");
    let e = load_str("baton.toml", &text, &Strict).unwrap_err();
    assert_eq!(e.diagnostics[0].key, "monitor[0]");
    assert_eq!(
        e.diagnostics[0].message,
        "`zone` is required (for server `node-2`)"
    );
}

// ---------------------------------------------------------------------------------------
// Digest
// ---------------------------------------------------------------------------------------

#[test]
fn digest_ignores_comments_whitespace_and_layout() {
    let base = ok(DESIGN).config.digest;
    let stripped: String = DESIGN
        .lines()
        .map(|l| l.split(" #").next().unwrap().trim_end())
        .filter(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(stripped, DESIGN);
    assert_eq!(
        ok(&stripped).config.digest,
        base,
        "comments and blank lines"
    );
    let spaced = format!(
        "# Orders cluster\n\n{}\n\n# end\n",
        DESIGN.replace(" = ", "   =   ")
    );
    assert_eq!(ok(&spaced).config.digest, base, "spacing");
    // An inline table written as a table, keys in another order: same content.
    let layout = replace(
        &replace(
            DESIGN,
            "witness = { kind = \"http\", url = \"http://10.0.130.5:7430\" }   # or s3 / dynamodb / none\n",
            "",
        ),
        "on_loss = \"stop-groups\"               # or shutdown / reboot\n",
        "on_loss = \"stop-groups\"\n\n[quorum.witness]\nurl = \"http://10.0.130.5:7430\"\nkind = \"http\"\n",
    );
    assert_eq!(ok(&layout).config.digest, base, "inline vs table form");
    let reordered = replace(
        DESIGN,
        "interval = \"200ms\"\ntimeout = \"1s\"",
        "timeout = \"1s\"\ninterval = \"200ms\"",
    );
    assert_eq!(ok(&reordered).config.digest, base, "key order");
}

#[test]
fn digest_changes_with_any_value() {
    let base = ok(DESIGN).config.digest;
    for (from, to) in [
        ("interval = \"200ms\"", "interval = \"250ms\""),
        ("eni_id = \"eni-0bbb\"", "eni_id = \"eni-0bbc\""),
        ("failback = false", "failback = true"),
        ("priority = 2", "priority = 3"),
        (
            "start = \"/usr/local/bin/app start\"",
            "start = \"/usr/local/bin/app  start\"",
        ),
    ] {
        let other = ok(&replace(DESIGN, from, to)).config.digest;
        assert_ne!(other, base, "{from} → {to}");
    }
    // The same value written differently is the same value.
    let same = ok(&replace(
        DESIGN,
        "interval = \"200ms\"",
        "interval = '200ms'",
    ))
    .config
    .digest;
    assert_eq!(same, base);
    // Servers are an ordered list: swapping them is a different configuration.
    assert_ne!(
        canonical_digest(&toml::from_str("a = [1, 2]").unwrap()),
        canonical_digest(&toml::from_str("a = [2, 1]").unwrap())
    );
}

#[test]
fn topo_order_keeps_independent_resources_in_file_order() {
    let text = replace(DESIGN, "depends_on = [\"awsvip1\"]", "");
    let c = ok(&text).config;
    let names: Vec<&str> = c.groups[0]
        .resources
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(names, ["awsvip1", "app"]);
}

#[test]
fn duplicate_priorities_are_rejected() {
    let text = replace(DESIGN, "priority = 2", "priority = 1");
    let e = load(&text).unwrap_err();
    let d = e
        .diagnostics
        .iter()
        .find(|d| d.key == "server[1].priority")
        .unwrap();
    assert!(
        d.message
            .contains("priority 1 is also the priority of server `node-1`"),
        "{d}"
    );
}

#[test]
fn takeover_wait_below_the_derived_minimum_is_rejected_with_the_minimum() {
    let text = replace(
        DESIGN,
        "on_loss = \"stop-groups\"",
        "on_loss = \"stop-groups\"\ntakeover_wait = \"100ms\"",
    );
    let d = error(&text);
    assert_at(&d, &text, "takeover_wait", 0, "quorum.takeover_wait");
    assert!(d.message.contains("W must be at least 733 ms"), "{d}");
    // The minimum itself, a longer wait, a fence timeout and its escalation are fine.
    let l = ok(&replace(
        DESIGN,
        "on_loss = \"stop-groups\"",
        "on_loss = \"stop-groups\"\ntakeover_wait = \"733ms\"\nfence_timeout = \"500ms\"\non_fence_timeout = \"none\"",
    ));
    let tm = l.config.timing(1000);
    assert_eq!(
        (tm.lease_ms, tm.fence_ms, tm.takeover_wait_ms),
        (500, 500, 733)
    );
    assert_eq!(l.config.quorum.on_fence_timeout, OnFenceTimeout::None);
    // A longer fence timeout raises the minimum wait, so 733ms is now too short.
    let text = replace(
        DESIGN,
        "on_loss = \"stop-groups\"",
        "on_loss = \"stop-groups\"\ntakeover_wait = \"733ms\"\nfence_timeout = \"2s\"",
    );
    assert!(error(&text).message.contains("W must be at least 2263 ms"));
}

#[test]
fn fence_budget_sets_the_group_timing_within_the_agent_bound() {
    // Not declared: the resources' stop timeouts (60s each by default) exceed F, so the
    // group has the agent's timing.
    let l = ok(DESIGN);
    assert_eq!(l.config.group_timing(0, 1000), l.config.timing(1000));
    // Declared: F_g = 250 ms, and the takeover bound shrinks with it.
    let text = replace(
        DESIGN,
        "failback = false",
        "failback = false\nfence_budget = \"250ms\"",
    );
    let l = ok(&text);
    let g = l.config.group_timing(0, 1000);
    assert_eq!(g.fence_ms, 250);
    assert!(g.takeover_after_ms() < l.config.timing(1000).takeover_after_ms());
    // Derived from short stop timeouts (with retries), floored at the interval.
    let text = replace(
        DESIGN,
        "depends_on = [\"awsvip1\"]",
        "depends_on = [\"awsvip1\"]\ndeactivate_timeout = \"100ms\"\ndeactivate_retries = 1",
    );
    let text = text.replacen(
        "vpc_id = \"vpc-1234abcd\"",
        "vpc_id = \"vpc-1234abcd\"\ndeactivate_timeout = \"50ms\"",
        1,
    );
    assert_eq!(ok(&text).config.group_timing(0, 1000).fence_ms, 250);
    let text = text.replace("deactivate_retries = 1", "deactivate_retries = 0");
    assert_eq!(
        ok(&text).config.group_timing(0, 1000).fence_ms,
        200,
        "the interval"
    );
    // Out of range: below the interval, above F.
    for (v, why) in [
        ("100ms", "shorter than the heartbeat interval 200ms"),
        (
            "501ms",
            "longer than the agent's self-fence deadline of 500 ms",
        ),
    ] {
        let text = replace(
            DESIGN,
            "failback = false",
            &format!("failback = false\nfence_budget = \"{v}\""),
        );
        let d = error(&text);
        assert_at(&d, &text, "fence_budget", 0, "group[0].fence_budget");
        assert!(d.message.contains(why), "{d}");
    }
}

#[test]
fn the_witness_is_a_vote() {
    let l = ok(DESIGN);
    assert_eq!(l.config.votes(), 3);
    let text = replace(
        DESIGN,
        "witness = { kind = \"http\", url = \"http://10.0.130.5:7430\" }",
        "witness = { kind = \"none\" }",
    );
    assert_eq!(ok(&text).config.votes(), 2);
}

// ---------------------------------------------------------------------------------------
// Duration bounds (issue 9)
// ---------------------------------------------------------------------------------------

#[test]
fn durations_are_at_most_seven_days() {
    assert_eq!(parse_duration("7d").unwrap(), MAX_DURATION);
    for s in [
        "7d 1ms",
        "8d",
        "9300000000000000000s",
        "18446744073709551615s",
    ] {
        let e = parse_duration(s).unwrap_err();
        assert!(
            e.contains("at most 7 days") || e.contains("like 200ms"),
            "{s}: {e}"
        );
    }
}

#[test]
fn every_duration_key_has_an_upper_bound_naming_the_key_and_the_range() {
    const HUGE: &str = "9300000000000000000s";
    let hb = |key: &str, v: &str| {
        if key == "interval" {
            replace(
                DESIGN,
                "interval = \"200ms\"",
                &format!("interval = \"{v}\""),
            )
        } else if key == "timeout" {
            replace(DESIGN, "timeout = \"1s\"", &format!("timeout = \"{v}\""))
        } else {
            replace(
                DESIGN,
                "timeout = \"1s\"",
                &format!("timeout = \"1s\"\n{key} = \"{v}\""),
            )
        }
    };
    let agent = |v: &str| {
        replace(
            DESIGN,
            "[[server]]",
            &format!("[agent]\nshutdown_timeout = \"{v}\"\n\n[[server]]"),
        )
    };
    let quorum = |key: &str, v: &str| {
        replace(
            DESIGN,
            "on_loss = \"stop-groups\"",
            &format!("on_loss = \"stop-groups\"\n{key} = \"{v}\""),
        )
    };
    let resource = |key: &str, v: &str| {
        replace(
            DESIGN,
            "depends_on = [\"awsvip1\"]",
            &format!("depends_on = [\"awsvip1\"]\n{key} = \"{v}\""),
        )
    };
    let monitor = |key: &str, v: &str| {
        if key == "interval" {
            replace(DESIGN, "interval = \"60s\"", &format!("interval = \"{v}\""))
        } else if key == "timeout" {
            replace(DESIGN, "timeout = \"180s\"", &format!("timeout = \"{v}\""))
        } else {
            replace(
                DESIGN,
                "on_api_error = \"warn\"",
                &format!("on_api_error = \"warn\"\n{key} = \"{v}\""),
            )
        }
    };
    // (file, key, expected message fragment)
    let seven = "at most 7 days";
    let cases: Vec<(String, &str, &str)> = vec![
        (agent(HUGE), "agent.shutdown_timeout", seven),
        (
            agent("2h"),
            "agent.shutdown_timeout",
            "shutdown_timeout 2h is too long: the allowed range is 1ms to 1h",
        ),
        (hb("interval", HUGE), "heartbeat.interval", seven),
        (
            hb("interval", "2m"),
            "heartbeat.interval",
            "heartbeat interval 2m is too long: the allowed range is 10ms to 1m",
        ),
        (hb("timeout", HUGE), "heartbeat.timeout", seven),
        (
            hb("timeout", "11m"),
            "heartbeat.timeout",
            "heartbeat timeout 11m is too long: the allowed range is 3 × interval to 10m",
        ),
        (
            hb("startup_wait", "2h"),
            "heartbeat.startup_wait",
            "startup_wait 2h is too long: the allowed range is 0s to 1h",
        ),
        (quorum("fence_timeout", HUGE), "quorum.fence_timeout", seven),
        (
            quorum("fence_timeout", "11m"),
            "quorum.fence_timeout",
            "fence_timeout 11m is too long: the allowed range is the heartbeat interval to 10m",
        ),
        (
            quorum("takeover_wait", "2h"),
            "quorum.takeover_wait",
            "takeover_wait 2h is too long: the allowed range is the derived minimum to 1h",
        ),
        (
            quorum("check_interval", "11m"),
            "quorum.check_interval",
            "check_interval 11m is too long: the allowed range is 100ms to 10m",
        ),
        (
            resource("activate_timeout", HUGE),
            "group[0].resource[1].activate_timeout",
            seven,
        ),
        (
            resource("activate_timeout", "2d"),
            "group[0].resource[1].activate_timeout",
            "activate_timeout 2days is too long: the allowed range is 1ms to 1d",
        ),
        (
            resource("deactivate_timeout", "25h"),
            "group[0].resource[1].deactivate_timeout",
            "deactivate_timeout 1day 1h is too long: the allowed range is 1ms to 1d",
        ),
        (monitor("interval", HUGE), "monitor[0].interval", seven),
        (
            monitor("interval", "2d"),
            "monitor[0].interval",
            "interval 2days is too long: the allowed range is 1ms to 1d",
        ),
        (monitor("timeout", "8d"), "monitor[0].timeout", seven),
        (
            monitor("timeout", "2d"),
            "monitor[0].timeout",
            "timeout 2days is too long: the allowed range is 1ms to 1d",
        ),
        (
            monitor("wait_to_start", "2d"),
            "monitor[0].wait_to_start",
            "wait_to_start 2days is too long: the allowed range is 0s to 1d",
        ),
        (
            replace(
                DESIGN,
                "final_action = \"none\" }",
                &format!("final_action = \"none\", reset_after = \"{HUGE}\" }}"),
            ),
            "monitor[0].recovery.reset_after",
            seven,
        ),
    ];
    for (text, key, msg) in cases {
        let e = errors(&text);
        let d = e
            .iter()
            .find(|d| d.key == key)
            .unwrap_or_else(|| panic!("no error for {key}:\n{}", render(&e)));
        assert!(d.message.contains(msg), "{key}: {d}");
        assert_eq!(d.file, "baton.toml");
        // The line is the key's own line.
        let line = text.lines().nth(d.line - 1).unwrap();
        let last = key.rsplit('.').next().unwrap();
        assert!(line.contains(last), "{key}: line {} is `{line}`", d.line);
    }
    // The upper ends themselves are accepted.
    ok(&agent("1h"));
    ok(&monitor("interval", "1d"));
    ok(&quorum("check_interval", "10m"));
}

// ---------------------------------------------------------------------------------------
// Heartbeat size (issue 9)
// ---------------------------------------------------------------------------------------

/// `servers` servers and `groups` groups (each on every server), every name padded with
/// `x` to `len` characters.
fn sized_cluster(servers: usize, groups: usize, len: usize) -> String {
    let pad = |s: String| format!("{s:x<len$}");
    let names: Vec<String> = (1..=servers).map(|i| pad(format!("n{i}-"))).collect();
    let mut t = String::from("[cluster]\nname = \"c\"\nkey_file = \"k\"\n\n");
    for (i, n) in names.iter().enumerate() {
        t.push_str(&format!(
            "[[server]]\nname = \"{n}\"\ninterconnects = [\"10.0.0.{}\"]\napi = \"10.0.0.{}:7420\"\n\n",
            i + 1,
            i + 1
        ));
    }
    let list = names
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ");
    for g in 1..=groups {
        t.push_str(&format!(
            "[[group]]\nname = \"{}\"\nservers = [{list}]\n\n",
            pad(format!("g{g}-"))
        ));
    }
    t
}

#[test]
fn heartbeat_size_is_bounded_at_the_group_limit() {
    // 200 groups (the limit) with 63-character names (the longest allowed), 7 servers:
    // the worst-case heartbeat does not fit, and `config check` says so with the figure.
    let text = sized_cluster(7, 200, 63);
    let d = error(&text);
    assert_at(&d, &text, "group]]", 0, "group");
    assert!(
        d.message.contains("over the 60000-byte datagram limit"),
        "{d}"
    );
    let figure: usize = d
        .message
        .split("can reach ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no figure in {d}"));
    assert!(figure > crate::heartbeat::MAX_DATAGRAM, "{d}");
    // A configuration that is accepted always fits, even in its worst case.
    for (servers, groups, len) in [(3, 5, 8), (3, 50, 20), (7, 60, 63), (7, 100, 20)] {
        let l = ok(&sized_cluster(servers, groups, len));
        let n = crate::heartbeat::worst_case_datagram_len(&l.config);
        assert!(
            n <= crate::heartbeat::MAX_DATAGRAM,
            "{servers}/{groups}/{len}: {n}"
        );
        assert_eq!(crate::heartbeat::check_size(&l.config), Ok(n));
    }
    // The largest accepted number of groups of 63-character names on 7 servers is the
    // last one under the limit: one more is refused.
    let fits = (1..=200)
        .take_while(|&g| load(&sized_cluster(7, g, 63)).is_ok())
        .last()
        .unwrap();
    assert!(fits < 200 && fits > 50, "{fits}");
    let d = error(&sized_cluster(7, fits + 1, 63));
    assert!(d.message.contains("datagram limit"), "{d}");
}

#[test]
fn fence_and_script_env_keys_default_and_validate() {
    let a = ok(DESIGN).config.agent;
    assert_eq!(a.fence_method, FenceMethod::Sysrq);
    assert_eq!(a.sysrq_trigger, PathBuf::from("/proc/sysrq-trigger"));
    assert_eq!(a.force_reboot_command, "reboot -f -f");
    assert_eq!(a.force_poweroff_command, "poweroff -f -f");
    assert!(a.script_env.is_empty());

    let good = format!(
        "{DESIGN}\n[agent]\nfence_method = \"force\"\nsysrq_trigger = \"/tmp/t/sysrq\"\nforce_reboot_command = \"echo r\"\nscript_env = [\"AWS_REGION\", \"_X1\"]\n"
    );
    let a = ok(&good).config.agent;
    assert_eq!(a.fence_method, FenceMethod::Force);
    assert_eq!(a.sysrq_trigger, PathBuf::from("/tmp/t/sysrq"));
    assert_eq!(a.script_env, ["AWS_REGION", "_X1"]);

    let bad = format!(
        "{DESIGN}\n[agent]\nsysrq_trigger = \"sysrq\"\nforce_poweroff_command = \" \"\nscript_env = [\"OK\", \"1BAD\", \"A-B\", \"\"]\n"
    );
    let e = errors(&bad);
    let keys: Vec<&str> = e.iter().map(|d| d.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "agent.sysrq_trigger",
            "agent.force_poweroff_command",
            "agent.script_env[1]",
            "agent.script_env[2]",
            "agent.script_env[3]",
        ],
        "{}",
        render(&e)
    );
    assert_at(&e[0], &bad, "sysrq_trigger", 0, "agent.sysrq_trigger");
    assert!(e[0].message.contains("absolute"), "{}", e[0]);
    assert!(e[2].message.contains("`1BAD`"), "{}", e[2]);

    // The orderly command as a fence is allowed, with a warning.
    let slow = format!("{DESIGN}\n[agent]\nfence_method = \"command\"\n");
    let l = ok(&slow);
    assert!(
        l.warnings
            .iter()
            .any(|w| w.key == "agent.fence_method" && w.message.contains("takeover wait")),
        "{}",
        render(&l.warnings)
    );
    let e = error(&format!("{DESIGN}\n[agent]\nfence_method = \"sysreq\"\n"));
    assert_eq!(e.key, "agent.fence_method");
}

#[test]
fn accept_key_files_do_not_change_the_digest_and_are_checked() {
    let plain = ok(DESIGN);
    let rotating = DESIGN.replacen(
        "key_file = \"/etc/baton/cluster.key\"",
        "key_file = \"/etc/baton/cluster.key\"\naccept_key_files = [\"/etc/baton/next.key\"]",
        1,
    );
    let l = ok(&rotating);
    assert_eq!(
        l.config.accept_key_files,
        vec![PathBuf::from("/etc/baton/next.key")]
    );
    // Servers in different steps of a rotation agree on the configuration.
    assert_eq!(l.config.digest, plain.config.digest);
    assert!(plain.config.accept_key_files.is_empty());
    // Any other change still changes the digest.
    let other = DESIGN.replacen("name = \"orders\"", "name = \"orders2\"", 1);
    assert_ne!(ok(&other).config.digest, plain.config.digest);

    let twice = DESIGN.replacen(
        "key_file = \"/etc/baton/cluster.key\"",
        "key_file = \"/etc/baton/cluster.key\"\naccept_key_files = [\"/etc/baton/cluster.key\"]",
        1,
    );
    let e = load(&twice).unwrap_err();
    let d = &e.diagnostics[0];
    assert_eq!(d.key, "cluster.accept_key_files[0]", "{d}");
    assert!(d.message.contains("listed twice"), "{d}");
    let many = DESIGN.replacen(
        "key_file = \"/etc/baton/cluster.key\"",
        "key_file = \"/etc/baton/cluster.key\"\naccept_key_files = [\"a\", \"b\", \"c\", \"d\"]",
        1,
    );
    let e = load(&many).unwrap_err();
    assert!(
        e.diagnostics
            .iter()
            .any(|d| d.key == "cluster.accept_key_files" && d.message.contains("at most 3")),
        "{e:?}"
    );
}
