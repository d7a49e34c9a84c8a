//! `baton group start|stop|move --wait` (issue 15): the command returns when the cluster
//! has done it, with where the group is, or fails with the state it reached; and
//! `baton alerts` with its filters and ISO timestamps on the events those commands raised.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use baton_tests::{serial, Cluster, ClusterSpec, GROUP};

const T: Duration = Duration::from_secs(20);

#[test]
fn group_commands_wait_for_the_cluster() {
    let _serial = serial();
    let c = Cluster::start(ClusterSpec::new("wait", 189));
    c.wait_owner(Some("node-1"), T);

    // Move: returns once the group is online on the target, and says so.
    let out = c.ctl(&["group", "move", GROUP, "--to", "node-2", "--wait", "30s"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains(&format!("group {GROUP}: online on node-2")),
        "{out:?}"
    );
    let (owner, _, _) = c.wait_owner(None, Duration::from_secs(1));
    assert_eq!(owner, "node-2", "already there when the command returned");

    // Move without a target: anywhere but where it was.
    let out = c.ctl(&["group", "move", GROUP, "--wait", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["state"], "online");
    assert_ne!(v["active_on"], "node-2");
    assert!(v["waited_ms"].as_u64().is_some());

    // Stop: offline everywhere when it returns.
    let out = c.ctl(&["group", "stop", GROUP, "--wait"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("offline on -"), "{out:?}");

    // Start on a given server.
    let out = c.ctl(&["group", "start", GROUP, "--on", "node-3", "--wait", "30s"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("online on node-3"), "{out:?}");

    // A wait too short to see the stop through: it fails with the state reached.
    let out = c.ctl(&["group", "stop", GROUP, "--wait", "1ms", "--json"]);
    assert_eq!(out.code, 1, "{out:?}");
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(v["error"]["code"], "wait-timeout");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did not reach offline everywhere within 0.001 s"),
        "{v}"
    );
    // A bad duration is a usage error, and nothing is sent.
    let out = c.ctl(&["group", "start", GROUP, "--wait", "soon"]);
    assert_eq!(out.code, 2, "{out:?}");

    // The moves above left events: the alert filters (issue 15) pick them.
    let json_events = |args: &[&str]| -> Vec<serde_json::Value> {
        let mut v = vec!["alerts", "--json", "-s", "node-1"];
        v.extend_from_slice(args);
        let out = c.ctl(&v);
        assert_eq!(out.code, 0, "{out:?}");
        out.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let all = json_events(&[]);
    assert!(!all.is_empty());
    let of_group = json_events(&["--group", GROUP]);
    assert!(
        !of_group.is_empty(),
        "the moves raised events about {GROUP}"
    );
    assert!(of_group.iter().all(|e| e["group"] == GROUP), "{of_group:?}");
    let warnings = json_events(&["--severity", "warning"]);
    assert!(
        warnings.iter().all(|e| e["severity"] != "info"),
        "{warnings:?}"
    );
    assert_eq!(json_events(&["--since", "1h"]).len(), all.len());
    let out = c.ctl(&["alerts", "-s", "node-1", "--group", GROUP]);
    assert_eq!(out.code, 0, "{out:?}");
    // ISO 8601 timestamps, UTC.
    let line = out.stdout.lines().next().unwrap();
    let ts = line.split_whitespace().nth(1).unwrap();
    assert!(
        ts.len() == 24 && ts.as_bytes()[10] == b'T' && ts.ends_with('Z'),
        "{line}"
    );
    let out = c.ctl(&["alerts", "--severity", "loud"]);
    assert_eq!(out.code, 2, "{out:?}");
}

/// `baton cluster stop --wait` returns once no agent answers: every agent has exited.
#[test]
fn cluster_stop_waits_until_every_agent_has_exited() {
    let _serial = serial();
    let mut c = Cluster::start(ClusterSpec::new("stopwait", 169));
    c.wait_owner(Some("node-1"), T);
    let out = c.ctl(&["cluster", "stop", "--wait", "60s"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("cluster stopped: no agent answers"),
        "{out:?}"
    );
    // Already gone when the command returned.
    for s in ["node-1", "node-2", "node-3"] {
        c.wait_exit(s, Duration::from_secs(1));
    }
    // Nobody left to ask: a second stop with --wait says so and fails.
    let out = c.ctl(&["cluster", "stop", "--wait", "--json"]);
    assert_ne!(out.code, 0, "{out:?}");
}
