//! `baton config push` and `baton config diff` (issue 15) against real 3-agent clusters,
//! every server with its own copy of the configuration file (as on separate machines):
//!
//! * a change that can be taken live (a monitor added) is applied on every server, with
//!   the same digest everywhere, the previous file kept as `.prev`, and no group
//!   restarted (same epoch, no BTN-2101, the application not restarted);
//! * a change that needs a rolling restart, and an invalid file, are refused by every
//!   server (with the reason, with `file:line:column: key` diagnostics) and change
//!   nothing; `--dry-run` changes nothing; `--stage` stores without applying;
//! * with a server down the push is refused unless `--allow-partial`; with it, a new group
//!   starts on the servers that run it, and the server that comes back on the old file
//!   refuses to activate anything (digest minority) until it gets the push.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// The test waits on real processes: it reads the clock directly.
#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::time::Duration;

use baton_tests::{serial, wait_until, CliOut, Cluster, ClusterSpec, Signal, GROUP};

const T: Duration = Duration::from_secs(20);
const SERVERS: [&str; 3] = ["node-1", "node-2", "node-3"];

fn spec(name: &str, net: u8) -> ClusterSpec {
    let mut s = ClusterSpec::new(name, net);
    s.own_configs = true;
    s
}

/// The digest `baton config check` gives a file.
fn digest_of(c: &Cluster, file: &Path) -> String {
    let out = c.cli(&["config", "check", "--json", &file.to_string_lossy()]);
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("config check --json: {e}: {out:?}"));
    v["digest"].as_str().unwrap().to_string()
}

/// Each server's own reported digest (every server must answer).
fn digests(c: &Cluster) -> Vec<(String, String)> {
    let st = c.status();
    SERVERS
        .iter()
        .map(|s| {
            let a = st
                .agent(s)
                .unwrap_or_else(|| panic!("{s} did not answer: {}", st.summary(GROUP)));
            (s.to_string(), a.digest.clone())
        })
        .collect()
}

fn count(c: &Cluster, server: &str, id: &str) -> usize {
    c.alerts(server).iter().filter(|e| e.id == id).count()
}

fn push(c: &Cluster, file: &Path, extra: &[&str]) -> CliOut {
    let f = file.to_string_lossy().to_string();
    let mut args = vec!["config", "push", f.as_str()];
    args.extend_from_slice(extra);
    c.ctl(&args)
}

const MONITOR: &str = r#"
[[monitor]]
kind = "exec"
name = "pushed-check"
interval = "300ms"
timeout = "2s"
command = "true"
"#;

#[test]
fn push_applies_live_changes_and_refuses_the_rest_everywhere() {
    let _serial = serial();
    let mut c = Cluster::start(spec("push", 190));
    let (owner, epoch, _) = c.wait_owner(Some("node-1"), T);
    assert_eq!(owner, "node-1");
    let old_text = std::fs::read_to_string(&c.node("node-1").config).unwrap();
    let old_digest = digest_of(&c, &c.node("node-1").config.clone());
    let activating: Vec<usize> = SERVERS.iter().map(|s| count(&c, s, "BTN-2101")).collect();
    let app_before = c.app_events();

    // 1. A monitor added: live everywhere.
    let new = c.dir.join("new.toml");
    std::fs::write(&new, format!("{old_text}{MONITOR}")).unwrap();
    let new_digest = digest_of(&c, &new);
    assert_ne!(new_digest, old_digest);

    let diff = c.ctl(&["config", "diff", &new.to_string_lossy()]);
    assert_eq!(diff.code, 0, "{diff:?}");
    assert!(diff.stdout.contains("+ monitor[pushed-check]"), "{diff:?}");
    assert_eq!(diff.stdout.matches("differs").count(), 3, "{diff:?}");

    let dry = push(&c, &new, &["--dry-run"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(dry.stdout.contains("dry run, nothing changed"), "{dry:?}");
    assert!(digests(&c).iter().all(|(_, d)| *d == old_digest));

    let out = push(&c, &new, &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("applied on every server"), "{out:?}");
    assert!(out.stdout.contains("+ monitor[pushed-check]"), "{out:?}");
    for (s, d) in digests(&c) {
        assert_eq!(d, new_digest, "{s} runs the pushed configuration");
    }
    for s in SERVERS {
        let file = c.node(s).config.clone();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            format!("{old_text}{MONITOR}")
        );
        let prev = format!("{}.prev", file.display());
        assert_eq!(std::fs::read_to_string(prev).unwrap(), old_text, "{s}");
        c.wait_one_event(s, "BTN-1013", T, |e| {
            e.message.contains("monitor[pushed-check]")
        });
    }
    // The new monitor runs; the group was not touched.
    wait_until("the pushed monitor polls", T, || {
        let st = c.status();
        let m = st.local.monitors.iter().find(|m| m.name == "pushed-check");
        match m {
            Some(m) if m.state == "normal" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let st = c.status();
    assert_eq!(st.group(GROUP).active_on.as_deref(), Some("node-1"));
    assert_eq!(st.group(GROUP).epoch, epoch, "the group keeps its epoch");
    let after: Vec<usize> = SERVERS.iter().map(|s| count(&c, s, "BTN-2101")).collect();
    assert_eq!(
        after, activating,
        "no group activation (BTN-2101) after the push"
    );
    assert_eq!(
        c.app_events(),
        app_before,
        "the application was not restarted"
    );
    let diff = c.ctl(&["config", "diff", &new.to_string_lossy()]);
    assert_eq!(diff.stdout.matches(" same").count(), 3, "{diff:?}");

    // 1b. A notification sink added: live.
    let hook = c.dir.join("hook.toml");
    let secret = c.dir.join("hook.secret");
    std::fs::write(&secret, "pushed-s3cret\n").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let hook_text = format!(
        "{old_text}{MONITOR}\n[[notify.webhook]]\nurl = \"http://127.0.0.1:9/\"\nsecret_file = \"hook.secret\"\n"
    );
    std::fs::write(&hook, &hook_text).unwrap();
    let out = push(&c, &hook, &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("+ notify"), "{out:?}");
    for s in SERVERS {
        let st = c.ctl(&["status", "--json", "-s", s]);
        let v: serde_json::Value = serde_json::from_str(st.stdout.trim()).unwrap();
        let sinks: Vec<&str> = v["local"]["sinks"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|x| x["name"].as_str())
            .collect();
        assert!(sinks.contains(&"webhook"), "{s}: {sinks:?}");
    }
    let hook_digest = digest_of(&c, &hook);
    for (s, d) in digests(&c) {
        assert_eq!(d, hook_digest, "{s}");
    }
    // And back (the sink removed): the state of step 1.
    let out = push(&c, &new, &[]);
    assert_eq!(out.code, 0, "{out:?}");
    for (s, d) in digests(&c) {
        assert_eq!(d, new_digest, "{s}");
    }
    let st = c.status();
    assert_eq!(st.group(GROUP).epoch, epoch);
    assert_eq!(
        c.app_events(),
        app_before,
        "the application was not restarted"
    );

    // 2. A change that needs a rolling restart: refused with the reason, nothing changed.
    let hb = c.dir.join("heartbeat.toml");
    let hb_text =
        format!("{old_text}{MONITOR}").replacen("interval = \"100ms\"", "interval = \"150ms\"", 1);
    assert_ne!(
        hb_text,
        format!("{old_text}{MONITOR}"),
        "the harness's heartbeat interval"
    );
    std::fs::write(&hb, &hb_text).unwrap();
    let out = push(&c, &hb, &[]);
    assert_eq!(out.code, 5, "refused: {out:?}");
    assert!(
        out.stdout.contains("nothing was changed on any server"),
        "{out:?}"
    );
    assert_eq!(out.stdout.matches("restart-needed").count(), 3, "{out:?}");
    assert!(out.stdout.contains("heartbeat.interval"), "{out:?}");
    assert!(out.stdout.contains("quorum lease"), "the reason: {out:?}");
    for (s, d) in digests(&c) {
        assert_eq!(d, new_digest, "{s} unchanged");
        assert_eq!(
            std::fs::read_to_string(&c.node(&s).config).unwrap(),
            format!("{old_text}{MONITOR}")
        );
    }

    // 3. An invalid file: refused by every server, file:line:column and key named.
    let bad = c.dir.join("bad.toml");
    std::fs::write(
        &bad,
        format!("{old_text}{MONITOR}").replace("interval = \"300ms\"", "interval = \"soon\""),
    )
    .unwrap();
    let out = push(&c, &bad, &["--json"]);
    assert_eq!(out.code, 3, "config-invalid: {out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["outcome"], "refused");
    let servers = v["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 3);
    for r in servers {
        assert_eq!(r["error"]["code"], "config-invalid", "{r}");
        let d = r["diagnostics"][0].as_str().unwrap();
        let file = c
            .node(r["server"].as_str().unwrap())
            .config
            .display()
            .to_string();
        assert!(
            d.starts_with(&format!("{file}:")),
            "the server's own file named: {d}"
        );
        assert!(
            d.contains("monitor[1].interval") || d.contains("interval"),
            "{d}"
        );
    }
    for (s, d) in digests(&c) {
        assert_eq!(d, new_digest, "{s} unchanged");
    }
    for s in SERVERS {
        assert!(count(&c, s, "BTN-1014") >= 2, "{s} recorded the refusals");
    }

    // 4. --stage stores a restart-needed change without applying it.
    let out = push(&c, &hb, &["--stage"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("for the next restart"), "{out:?}");
    for (s, d) in digests(&c) {
        assert_eq!(d, new_digest, "{s} still runs the applied one");
        assert_eq!(
            std::fs::read_to_string(&c.node(&s).config).unwrap(),
            hb_text
        );
    }
    let diff = c.ctl(&["config", "diff", &hb.to_string_lossy()]);
    assert_eq!(
        diff.stdout.matches("staged for restart").count(),
        3,
        "{diff:?}"
    );
    assert!(diff.stdout.contains("~ heartbeat.interval"), "{diff:?}");
    let st = c.status();
    assert_eq!(st.group(GROUP).epoch, epoch);
    c.kill("node-3", Signal::SIGTERM);
}

#[test]
fn push_with_a_server_down_and_a_new_group() {
    let _serial = serial();
    let mut c = Cluster::start(spec("push-down", 191));
    let (_, epoch, _) = c.wait_owner(Some("node-1"), T);
    let old_text = std::fs::read_to_string(&c.node("node-1").config).unwrap();
    let d = c.dir.display().to_string();
    let group2 = format!(
        r#"
[[group]]
name = "web2"
servers = ["node-2", "node-1", "node-3"]

[[group.resource]]
kind = "local-claim"
name = "claim2"
path = "{d}/claim/web2.claim"
activate_timeout = "5s"
deactivate_timeout = "5s"
"#
    );
    let new = c.dir.join("new.toml");
    std::fs::write(&new, format!("{old_text}{group2}")).unwrap();
    let new_digest = digest_of(&c, &new);

    c.kill("node-3", Signal::SIGTERM);
    c.wait_exit("node-3", T);
    // Refused while a server does not answer: nothing changed.
    let out = push(&c, &new, &["-s", "node-1"]);
    assert_eq!(out.code, 5, "{out:?}");
    assert!(
        out.stdout.contains("node-3") && out.stdout.contains("unreachable"),
        "{out:?}"
    );
    assert!(out.stdout.contains("--allow-partial"), "{out:?}");
    for s in ["node-1", "node-2"] {
        assert_eq!(
            std::fs::read_to_string(&c.node(s).config).unwrap(),
            old_text
        );
    }

    // With --allow-partial: applied on the two that answer (exit 1: not everywhere).
    let out = push(&c, &new, &["-s", "node-1", "--allow-partial"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains("applied on some servers only"),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains("node-3 keep the previous configuration"),
        "{out:?}"
    );
    // The new group starts (every up server has it); the first one keeps running.
    let st = wait_until("web2 online on node-2", T, || {
        let st = c.try_status_via(Some("node-1"))?;
        if st.online_on("web2") == vec!["node-2".to_string()] {
            Ok(st)
        } else {
            Err(st.summary("web2"))
        }
    });
    assert_eq!(st.group(GROUP).epoch, epoch);
    assert_eq!(st.group(GROUP).active_on.as_deref(), Some("node-1"));

    // node-3 comes back on its old file: the minority, it refuses to activate groups.
    c.restart("node-3");
    c.wait_one_event("node-3", "BTN-1012", T, |_| true);
    let st = c.status_via("node-3");
    assert!(st.local.refused, "node-3 refuses: {}", st.summary(GROUP));
    assert_ne!(st.local.digest, new_digest);
    let st = c.status_via("node-1");
    assert_eq!(st.online_on("web2"), vec!["node-2".to_string()]);
    assert_eq!(st.online_on(GROUP), vec!["node-1".to_string()]);
    let diff = c.ctl(&["config", "diff", &new.to_string_lossy()]);
    assert!(diff.stdout.contains("+ group[web2]"), "{diff:?}");
    assert!(diff.stdout.contains("from what node-3 runs"), "{diff:?}");

    // Pushed again with every server up: node-3 takes it, nobody refuses, nothing moved.
    let out = push(&c, &new, &[]);
    assert_eq!(out.code, 0, "{out:?}");
    wait_until("node-3 no longer refuses", T, || {
        let st = c.try_status_via(Some("node-3"))?;
        if !st.local.refused && st.local.digest == new_digest {
            Ok(())
        } else {
            Err(st.summary(GROUP))
        }
    });
    let st = c.status_via("node-3");
    assert_eq!(st.group(GROUP).epoch, epoch);
    assert_eq!(st.online_on("web2"), vec!["node-2".to_string()]);
    assert_eq!(st.online_on(GROUP), vec!["node-1".to_string()]);
    for (s, d) in digests(&c) {
        assert_eq!(d, new_digest, "{s}");
    }
    c.assert_app_exclusive();
}
