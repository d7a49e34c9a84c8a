//! `baton status` as an operator reads it and `baton support-bundle` (issue 15), against a
//! real 3-agent cluster: each group's resources with their state on the holder, human
//! and ISO times, the reason with its event id for a server down, `--watch` snapshots,
//! and a bundle holding every server's status, events and configuration but no secret.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// The test waits on real processes: it reads the clock directly.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use baton_tests::{serial, wait_until, Cluster, ClusterSpec, MonitorSpec, GROUP, MONITOR};
use nix::sys::signal::Signal;

const T: Duration = Duration::from_secs(20);

const WEBHOOK_SECRET: &str = "whsec-5f1d2c9e7a";
const WEBHOOK_PASS: &str = "hookpass-81b3";
const WEBHOOK_PATH_TOKEN: &str = "T0K3N-path-4c1e";
const SMTP_PASSWORD: &str = "smtp-pw-90af17";

/// Every file under `dir` with its content.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn status_shows_resources_times_and_reasons_and_the_bundle_has_no_secret() {
    let _serial = serial();
    // Secrets live in files the configuration names (inline ones are refused).
    let secrets_dir = tempfile::tempdir().unwrap();
    let smtp_file = secrets_dir.path().join("smtp.password");
    let hook_file = secrets_dir.path().join("webhook.secret");
    std::fs::write(&smtp_file, format!("{SMTP_PASSWORD}\n")).unwrap();
    std::fs::write(&hook_file, format!("{WEBHOOK_SECRET}\n")).unwrap();
    let mut spec = ClusterSpec::new("stbundle", 193).with_monitor(MonitorSpec::default());
    spec.extra_config = format!(
        r#"
[notify.mail]
server = "127.0.193.250"
port = 9
username = "baton"
password_file = "{smtp}"
from = "baton@localhost"
to = ["ops@localhost"]
min_severity = "critical"

[[notify.webhook]]
name = "hook"
url = "http://baton:{WEBHOOK_PASS}@127.0.193.250:9/hooks/{WEBHOOK_PATH_TOKEN}?sig=q"
secret_file = "{hook}"
min_severity = "critical"
"#,
        smtp = smtp_file.display(),
        hook = hook_file.display(),
    );
    let mut c = Cluster::start(spec);
    c.wait_owner(Some("node-1"), T);

    // The group with its resource, online on its holder, and human times.
    let out = wait_until("the resource online in `baton status`", T, || {
        let out = c.ctl(&["status"]).ok("baton status");
        let line = out
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with("claim "))
            .map(str::to_string);
        match line {
            Some(l) if l.contains("online") && l.contains("node-1") => Ok(out.stdout),
            _ => Err(out.stdout),
        }
    });
    let group_line = out
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{GROUP} ")))
        .unwrap_or_else(|| panic!("no group line: {out}"));
    assert!(
        group_line.contains("online")
            && group_line.contains(" since ")
            && group_line.contains(" ago)"),
        "{group_line}"
    );
    assert!(out.contains("\nPROBLEMS\n  none\n"), "{out}");
    assert!(out.contains(MONITOR), "{out}");

    // --json: the API's fields plus ISO times, each group's resources.
    let out = c.ctl(&["status", "--json"]).ok("baton status --json");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let at = v["at"].as_str().unwrap();
    assert!(
        at.len() == 20 && at.ends_with('Z') && at.as_bytes()[10] == b'T',
        "{at}"
    );
    // The same with --json before the command.
    let early = c.ctl(&["--json", "status"]).ok("baton --json status");
    let w: serde_json::Value = serde_json::from_str(&early.stdout).unwrap();
    assert_eq!(
        w["local"]["groups"][0]["name"],
        v["local"]["groups"][0]["name"]
    );
    let g = &v["local"]["groups"][0];
    assert!(g["since_ms_ago"].is_u64(), "{g}");
    assert!(g["since"].as_str().unwrap().ends_with('Z'), "{g}");
    assert_eq!(g["resources"][0]["name"], "claim", "{g}");
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(0), "{v}");

    // The support bundle.
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("bundle.tar.gz");
    let out = c
        .ctl(&["support-bundle", "--output", &archive.to_string_lossy()])
        .ok("baton support-bundle");
    assert_eq!(out.stdout.trim(), archive.to_string_lossy(), "{out:?}");
    let unpacked = dir.path().join("x");
    std::fs::create_dir(&unpacked).unwrap();
    let st = Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(&unpacked)
        .status()
        .expect("tar (every Debian system has it)");
    assert!(st.success());
    let all = files(&unpacked);
    let find = |suffix: &str| {
        all.iter()
            .find(|(p, _)| p.ends_with(suffix))
            .map(|(_, d)| String::from_utf8_lossy(d).to_string())
            .unwrap_or_else(|| {
                panic!(
                    "no {suffix} in the bundle: {:?}",
                    all.iter().map(|(p, _)| p).collect::<Vec<_>>()
                )
            })
    };
    for n in ["node-1", "node-2", "node-3"] {
        let st: serde_json::Value =
            serde_json::from_str(&find(&format!("servers/{n}/status.json"))).unwrap();
        assert_eq!(st["server"], n);
        let evs: Vec<serde_json::Value> =
            serde_json::from_str(&find(&format!("servers/{n}/events.json"))).unwrap();
        assert!(
            evs.iter()
                .any(|e| e["id"] == "BTN-1001" && e["server"] == n),
            "{n}: no agent start event in {evs:?}"
        );
        let cfg = find(&format!("servers/{n}/config.toml"));
        assert!(
            cfg.contains("[notify.mail]") || cfg.contains("[notify]"),
            "{cfg}"
        );
        assert!(cfg.contains("hidden"), "{cfg}");
        assert!(cfg.contains(&smtp_file.display().to_string()), "{cfg}");
        assert!(find(&format!("servers/{n}/version.txt")).starts_with("baton "));
        // Its agent's own log lines, through GET /v1/logs.
        let log = find(&format!("servers/{n}/agent.log"));
        assert!(log.contains("BTN-1001"), "{n}: {log}");
    }
    let readme = find("README.txt");
    assert!(readme.contains("Not collected:"), "{readme}");
    assert!(find("cluster-status.json").contains("\"via\""));

    // No secret anywhere in it.
    let key = std::fs::read(c.dir.join("cluster.key")).unwrap();
    let key_trim = key.trim_ascii().to_vec();
    let mut secrets: Vec<(String, Vec<u8>)> = vec![
        ("the key file".into(), key_trim.clone()),
        ("the key in hex".into(), hex::encode(&key_trim).into_bytes()),
        ("the API token".into(), c.token().as_bytes().to_vec()),
        ("the webhook secret".into(), WEBHOOK_SECRET.into()),
        ("the webhook URL's password".into(), WEBHOOK_PASS.into()),
        (
            "the webhook URL's path token".into(),
            WEBHOOK_PATH_TOKEN.into(),
        ),
        ("the SMTP password".into(), SMTP_PASSWORD.into()),
    ];
    // The key's bytes when its file holds them in hex.
    if let Ok(raw) = hex::decode(&key_trim) {
        secrets.push(("the key's raw bytes".into(), raw));
    }
    // Sanity: the archive itself is compressed; the needle check is on the unpacked files.
    for (what, needle) in &secrets {
        for (p, data) in &all {
            assert!(!contains(data, needle), "{what} is in {p}");
        }
    }

    // A server down: the reason with the event that explains it.
    c.kill("node-3", Signal::SIGKILL);
    let out = wait_until("node-3 down with its event", T, || {
        let out = c.ctl(&["status", "-s", "node-1"]);
        if out
            .stdout
            .contains("server node-3 down  (BTN-1102 on node-1 at ")
        {
            Ok(out.stdout)
        } else {
            Err(out.stdout)
        }
    });
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("node-3 ") && l.contains(" DOWN ")),
        "{out}"
    );
    let out = c
        .ctl(&["status", "-s", "node-1", "--json"])
        .ok("status --json");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let p = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["problem"] == "server node-3 down")
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(p["event"]["id"], "BTN-1102", "{p}");
    assert!(p["event"]["time"].as_str().unwrap().ends_with('Z'), "{p}");

    // --watch without a terminal: successive snapshots separated by a line.
    let mut child = Command::new(&c.bin)
        .args(["status", "--watch", "200ms", "-s", "node-1", "-c"])
        .arg(&c.config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut headers = 0;
    let mut separators = 0;
    while headers < 3 {
        let Some(Ok(l)) = lines.next() else { break };
        if l.starts_with("Cluster it-stbundle (via node-1)") {
            headers += 1;
        }
        if l == "-".repeat(72) {
            separators += 1;
        }
        assert!(
            !l.contains('\x1b'),
            "no ANSI codes when not on a terminal: {l:?}"
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!((headers, separators), (3, 2));
}
