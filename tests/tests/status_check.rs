//! `baton status --check` (issue 15): one line and the monitoring plugins' exit code
//! against a real 3-agent cluster: OK while healthy, WARNING with a server down, CRITICAL
//! once the server asked has no quorum, CRITICAL when no agent answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// The test waits on real processes: it reads the clock directly.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use baton_tests::{serial, CliOut, Cluster, ClusterSpec};
use nix::sys::signal::Signal;

const T: Duration = Duration::from_secs(20);

/// Run `baton status --check ARGS` until `done` holds (or T passes); the last output.
fn check_until(c: &Cluster, args: &[&str], done: impl Fn(&CliOut) -> bool) -> CliOut {
    let start = Instant::now();
    let mut v = vec!["status", "--check"];
    v.extend_from_slice(args);
    loop {
        let out = c.ctl(&v);
        if done(&out) || start.elapsed() > T {
            return out;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn status_check_follows_the_monitoring_plugin_convention() {
    let _serial = serial();
    let mut c = Cluster::start(ClusterSpec::new("check", 188));
    c.wait_owner(Some("node-1"), T);

    let out = check_until(&c, &[], |o| o.code == 0);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .starts_with("BATON OK - 3/3 servers up, 1/1 groups online, quorum 3/3 votes"),
        "{out:?}"
    );
    assert_eq!(out.stdout.lines().count(), 1, "one line: {out:?}");
    let out = c.ctl(&["status", "--check", "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(
        (v["status"].as_str(), v["code"].as_u64()),
        (Some("ok"), Some(0))
    );
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(0));

    // One server down: degraded, and the line says which.
    c.kill("node-3", Signal::SIGKILL);
    // (Until the others declare it down, the line says only that it gives no status.)
    let out = check_until(&c, &["-s", "node-1"], |o| {
        o.stdout.contains("server node-3 down")
    });
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout
            .starts_with("BATON WARNING - 2/3 servers up, 1/1 groups online"),
        "{out:?}"
    );
    assert!(out.stdout.contains("server node-3 down"), "{out:?}");

    // A second one: the group's server has no quorum any more and stops it: critical.
    c.kill("node-2", Signal::SIGKILL);
    let out = check_until(&c, &["-s", "node-1"], |o| o.stdout.contains("no quorum"));
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stdout.starts_with("BATON CRITICAL - "), "{out:?}");
    assert!(
        out.stdout.contains("node-1 has no quorum (1/3 votes)"),
        "{out:?}"
    );

    // Nobody answers: critical too, not a usage error.
    c.kill("node-1", Signal::SIGKILL);
    let out = check_until(&c, &[], |o| o.stdout.contains("no agent answers"));
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stdout.contains("BATON CRITICAL - no agent answers"),
        "{out:?}"
    );
}
