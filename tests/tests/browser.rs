//! Issue 16: the Web UI in a real browser. Headless Chromium (Debian's package) driven by
//! playwright-core runs tests/browser/ui.mjs against a real 3-agent cluster; this test
//! starts the cluster, runs the script, and kills the agent it asks for. Screenshots go
//! to `$CARGO_TARGET_DIR/browser-artifacts/`; the figures (page weight, first paint) are
//! printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use baton_tests::skip::skip;
use baton_tests::{serial, Cluster, ClusterSpec, MonitorSpec, Signal};

const T: Duration = Duration::from_secs(20);
const NAME: &str = "the_web_ui_in_chromium";

fn node_modules() -> Option<PathBuf> {
    let dir = std::env::var_os("BATON_BROWSER_NODE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
                .join(".cache/baton-browser-node")
        })
        .join("node_modules");
    (dir.join("playwright-core").is_dir() && dir.join("axe-core").is_dir()).then_some(dir)
}

fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(".."));
    target.join("browser-artifacts")
}

#[test]
fn the_web_ui_in_chromium() {
    let _serial = serial();
    if !std::path::Path::new("/usr/bin/chromium").exists() {
        skip(
            NAME,
            "Debian's chromium is not installed (apt-get install chromium)",
        );
        return;
    }
    let Some(modules) = node_modules() else {
        skip(
            NAME,
            "playwright-core and axe-core are not installed (bash tests/browser/setup.sh)",
        );
        return;
    };
    if Command::new("node").arg("--version").output().is_err() {
        skip(NAME, "node is not installed");
        return;
    }
    let mut c =
        Cluster::start(ClusterSpec::new("browser", 215).with_monitor(MonitorSpec::default()));
    c.wait_owner(Some("node-1"), T);
    let token = c.ctl(&["token", "--role", "operator"]).ok("token").stdout;
    let out = artifacts();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser/ui.mjs");
    let mut child = Command::new("node")
        .arg(&script)
        .env("BATON_UI", format!("http://{}", c.node("node-1").api))
        .env("BATON_TOKEN", token.trim())
        .env("BATON_ARTIFACTS", &out)
        .env("BATON_NODE_MODULES", &modules)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut report = Vec::new();
    for line in stdout.lines() {
        let line = line.unwrap();
        println!("{line}");
        if let Some(server) = line.strip_prefix("KILL ") {
            c.kill(server.trim(), Signal::SIGKILL);
            writeln!(stdin, "KILLED").unwrap();
        }
        report.push(line);
    }
    let status = child.wait().unwrap();
    let last = report.last().cloned().unwrap_or_default();
    assert!(
        status.success() && last.ends_with(", 0 failed") && !last.starts_with("browser: 0 passed"),
        "the browser scenario failed ({status}); screenshots in {}:\n{}",
        out.display(),
        report.join("\n")
    );
    assert!(out.join("06-failovers.png").is_file());
}
