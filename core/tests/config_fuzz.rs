//! Fuzzing the configuration loader: whatever the text, `load_str` returns (no panic),
//! and every diagnostic points at a real place (line ≥ 1, column ≥ 1) on one line.

use baton_core::config::{load_str, AnyKind, ConfigError, KindCatalog, Level, Loaded};
use proptest::prelude::*;

/// The design's example configuration (plus a few more sections), the seed for mutations.
const SEED: &str = r#"[cluster]
name = "orders"
key_file = "/etc/baton/cluster.key"   # authenticates heartbeats and peer API calls

[heartbeat]
interval = "200ms"
timeout = "1s"

[agent]
shutdown_timeout = "30s"

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
startup_servers = ["node-1"]
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
activate_retries = 2

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

[[monitor]]
kind = "resource"
name = "appmon"
resource = "app"
recovery = { target = "app", script = "/bin/fix", restart_retries = 2 }

[notify.log]
min_severity = "warning"
"#;

/// A catalog that rejects something, so the kind-check paths run too.
struct Picky;

impl KindCatalog for Picky {
    fn resource_kinds(&self) -> Vec<&'static str> {
        vec!["aws-vip", "exec"]
    }
    fn monitor_kinds(&self) -> Vec<&'static str> {
        vec!["aws-az"]
    }
    fn check_resource(&self, _: &str, p: &toml::Table) -> Result<(), (Option<String>, String)> {
        match p.get("eni_id") {
            Some(toml::Value::String(s)) if !s.starts_with("eni-") => {
                Err((Some("eni_id".into()), "not an ENI id".into()))
            }
            _ => Ok(()),
        }
    }
    fn check_monitor(&self, _: &str, p: &toml::Table) -> Result<(), (Option<String>, String)> {
        if p.contains_key("zone") {
            Ok(())
        } else {
            Err((Some("zone.x".into()), "zone is required".into()))
        }
    }
}

fn check(text: &str) {
    for kinds in [&AnyKind as &dyn KindCatalog, &Picky] {
        let r = load_str("fuzz.toml", text, kinds);
        check_result(text, &r);
    }
}

fn check_result(text: &str, r: &Result<Loaded, ConfigError>) {
    let lines = text.split('\n').count();
    let diags = match r {
        Ok(l) => {
            assert!(!l.config.servers.is_empty());
            assert_eq!(l.config.digest.len(), 64);
            &l.warnings
        }
        Err(e) => {
            assert!(
                e.diagnostics.iter().any(|d| d.level == Level::Error),
                "an error without an error diagnostic: {e:?}"
            );
            let _ = e.to_string();
            &e.diagnostics
        }
    };
    for d in diags {
        assert_eq!(d.file, "fuzz.toml");
        assert!(d.line >= 1, "line 0: {d:?}\n--- text ---\n{text}");
        assert!(
            d.line <= lines,
            "line past the end: {d:?}\n--- text ---\n{text}"
        );
        assert!(d.column >= 1, "column 0: {d:?}\n--- text ---\n{text}");
        assert!(!d.message.is_empty(), "{d:?}");
        assert!(
            !d.message.chars().any(char::is_control),
            "control characters: {d:?}"
        );
        assert!(
            !d.key.chars().any(char::is_control),
            "control characters: {d:?}"
        );
        let _ = d.to_string();
    }
}

#[derive(Debug, Clone)]
enum Edit {
    /// Replace the char at (position mod length).
    Replace(usize, char),
    /// Delete up to `len` chars from a position.
    Delete(usize, usize),
    /// Insert a snippet at a position.
    Insert(usize, String),
    SwapLines(usize, usize),
    DuplicateLine(usize),
    DropLine(usize),
}

const SNIPPETS: &[&str] = &[
    "[",
    "]",
    "[[",
    "]]",
    "=",
    "\"",
    "'",
    "#",
    "\n",
    "{",
    "}",
    ",",
    ".",
    "\\",
    "\"\"\"",
    "'''",
    "\r\n",
    "\t",
    " ",
    "\u{0}",
    "é",
    "😀",
    "\u{feff}",
    "0x1F",
    "1e400",
    "inf",
    "nan",
    "-",
    "+",
    "1979-05-27T07:32:00Z",
    "server",
    "group",
    "monitor",
    "resource",
    "kind",
    "name = \"node-1\"",
    "depends_on = [\"app\"]",
    "timeout = 5",
    "interval = \"0s\"",
    "[[server]]\nname = \"x\"\n",
    "[[group]]\n",
    "[[group.resource]]\nkind = \"exec\"\n",
    "[group.resource.server.node-9]\n",
    "recovery = { target = \"nope\" }",
    "servers = []",
    "interconnects = []",
    "api = \"::\"",
    "priority = -1",
    "witness = { kind = \"s3\" }",
    "timing = \"active\"",
    "a.b.c = 1",
    "\"quoted key\" = 1",
    "startup_wait = \"1ms\"",
    "retries = 4294967296",
    "port = 0",
];

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<char>()).prop_map(|(p, c)| Edit::Replace(p, c)),
        (any::<usize>(), 1usize..40).prop_map(|(p, n)| Edit::Delete(p, n)),
        (
            any::<usize>(),
            prop_oneof![
                prop::sample::select(SNIPPETS).prop_map(String::from),
                ".{0,12}",
            ]
        )
            .prop_map(|(p, s)| Edit::Insert(p, s)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
        any::<usize>().prop_map(Edit::DuplicateLine),
        any::<usize>().prop_map(Edit::DropLine),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        match e {
            Edit::Replace(p, c) => {
                if !chars.is_empty() {
                    let i = p % chars.len();
                    chars[i] = *c;
                }
            }
            Edit::Delete(p, n) => {
                if !chars.is_empty() {
                    let i = p % chars.len();
                    let j = (i + n).min(chars.len());
                    chars.drain(i..j);
                }
            }
            Edit::Insert(p, s) => {
                let i = p % (chars.len() + 1);
                chars.splice(i..i, s.chars());
            }
            Edit::SwapLines(..) | Edit::DuplicateLine(_) | Edit::DropLine(_) => {
                let s: String = chars.iter().collect();
                let mut lines: Vec<String> = s.split('\n').map(String::from).collect();
                let n = lines.len();
                match e {
                    Edit::SwapLines(a, b) => lines.swap(a % n, b % n),
                    Edit::DuplicateLine(a) => {
                        let l = lines[a % n].clone();
                        lines.insert(a % n, l);
                    }
                    Edit::DropLine(a) if n > 1 => {
                        lines.remove(a % n);
                    }
                    _ => {}
                }
                chars = lines.join("\n").chars().collect();
            }
        }
    }
    chars.into_iter().collect()
}

#[test]
fn the_seed_is_valid() {
    let l = load_str("fuzz.toml", SEED, &AnyKind).unwrap();
    // Only the quorum advice (2 servers, witness and ping not used yet) is warned about.
    assert!(
        l.warnings.iter().all(|w| w.key.starts_with("quorum")),
        "{:?}",
        l.warnings
    );
    assert!(load_str("fuzz.toml", SEED, &Picky).is_ok());
}

#[test]
fn known_tricky_inputs() {
    for text in [
        "",
        "\n",
        "\u{feff}",
        "é = ",
        "[cluster]\nname = \"é",
        "a = \"\u{0}\"",
        "[[server]]\n[[server]]\n",
        "\r\n\r\n[cluster\r\n",
        "😀😀😀 = [",
        "x = 1\n\u{2028}\n[",
    ] {
        check(text);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,400}") {
        check(&text);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        check(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn toml_like_text_never_panics(
        parts in prop::collection::vec(prop::sample::select(SNIPPETS), 0..40)
    ) {
        check(&parts.concat());
    }

    #[test]
    fn mutated_valid_config_never_panics(edits in prop::collection::vec(edit(), 1..8)) {
        check(&apply(SEED, &edits));
    }
}
