//! Key rotation without downtime (issue 9): the three documented steps, each a rolling
//! restart of the three agents, while a group runs. Every server hears every other one
//! at every moment (no heartbeat is rejected), the group is never online twice, the CLI
//! works throughout; afterwards an agent holding only the old key is not heard.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use baton_tests::{serial, wait_until, Cluster, ClusterSpec, Signal, GROUP};

const T: Duration = Duration::from_secs(20);

/// Every agent answers and sees every server up, and none has rejected a heartbeat.
fn all_hear_each_other(c: &Cluster, when: &str) {
    wait_until(
        &format!("every server hears every other ({when})"),
        T,
        || {
            for n in ["node-1", "node-2", "node-3"] {
                let st = c.try_status_via(Some(n))?;
                for m in ["node-1", "node-2", "node-3"] {
                    let v = st.local.server_view(m);
                    if !v.up || !v.ready {
                        return Err(format!("{n} sees {m}: up {}, ready {}", v.up, v.ready));
                    }
                }
            }
            Ok(())
        },
    );
    for n in ["node-1", "node-2", "node-3"] {
        let st = c.status_via(n);
        assert_eq!(
            st.local.packets_rejected.forged, 0,
            "{n} rejected heartbeats ({when}): {:?}",
            st.local.packets_rejected
        );
    }
}

/// Restart the agents one by one as the operations guide says: the servers that do not
/// hold the group, then move it away from its holder and restart that one.
fn rolling_restart(c: &mut Cluster, when: &str) {
    let (holder, _, _) = c.wait_owner(None, T);
    let others: Vec<String> = ["node-1", "node-2", "node-3"]
        .iter()
        .filter(|n| **n != holder)
        .map(|n| n.to_string())
        .collect();
    for n in &others {
        c.kill(n, Signal::SIGTERM);
        c.wait_exit(n, T);
        c.restart(n);
        all_hear_each_other(c, &format!("{when}: {n} restarted"));
    }
    let out = c.ctl(&["group", "move", GROUP, "--to", &others[0]]);
    assert_eq!(out.code, 0, "{out:?}");
    c.wait_owner(Some(&others[0]), T);
    c.kill(&holder, Signal::SIGTERM);
    c.wait_exit(&holder, T);
    c.restart(&holder);
    all_hear_each_other(c, &format!("{when}: {holder} restarted"));
}

fn set_accept(c: &Cluster, files: &[&str]) {
    set_accept_in(c, &c.config, files);
}

/// Write `file`: the cluster's configuration with `accept_key_files = FILES`.
fn set_accept_in(c: &Cluster, file: &std::path::Path, files: &[&str]) {
    let text = std::fs::read_to_string(&c.config).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("accept_key_files"))
        .collect();
    let mut out = Vec::new();
    for l in kept {
        out.push(l.to_string());
        if l.starts_with("key_file = ") && !files.is_empty() {
            let list: Vec<String> = files.iter().map(|f| format!("\"{f}\"")).collect();
            out.push(format!("accept_key_files = [{}]", list.join(", ")));
        }
    }
    std::fs::write(file, out.join("\n") + "\n").unwrap();
    let check = c.cli(&["config", "check", &file.to_string_lossy()]);
    assert_eq!(check.code, 0, "{check:?}");
}

#[test]
fn key_rotation_in_three_rolling_steps_without_downtime() {
    let _serial = serial();
    let mut c = Cluster::start(ClusterSpec::new("rotate", 166));
    c.wait_owner(Some("node-1"), T);
    c.watch();
    let digest = c.status().local.digest.clone();
    let dir = c.dir.clone();
    let old_fp = c.ctl(&["status", "--json"]);
    assert_eq!(old_fp.code, 0, "{old_fp:?}");

    // 1. A new key, accepted everywhere (sent by nobody yet).
    let next = dir.join("next.key");
    c.cli(&["keygen", &next.to_string_lossy()])
        .ok("baton keygen next.key");
    set_accept(&c, &["next.key"]);
    rolling_restart(&mut c, "step 1");

    // 2. Swap: the new key becomes key_file, the old one is still accepted.
    std::fs::rename(dir.join("cluster.key"), dir.join("prev.key")).unwrap();
    std::fs::rename(&next, dir.join("cluster.key")).unwrap();
    set_accept(&c, &["prev.key"]);
    c.reload_token();
    rolling_restart(&mut c, "step 2");

    // 3. The old key is no longer accepted.
    set_accept(&c, &[]);
    rolling_restart(&mut c, "step 3");

    // The configuration digest never changed: no server refused at any point.
    for n in ["node-1", "node-2", "node-3"] {
        assert_eq!(c.status_via(n).local.digest, digest, "{n}");
    }
    let rep = c.stop_watch();
    rep.assert_never_two_online();
    c.assert_claim_history();

    // An agent still on the old key alone is not heard: its heartbeats are forged to
    // the others, and theirs to it.
    let (holder, _, _) = c.wait_owner(None, T);
    let stray = ["node-1", "node-2", "node-3"]
        .into_iter()
        .find(|n| *n != holder)
        .unwrap();
    let before = c.status_via(&holder).local.packets_rejected.forged;
    let old_cfg = dir.join("old.toml");
    let text = std::fs::read_to_string(&c.config)
        .unwrap()
        .replace("key_file = \"cluster.key\"", "key_file = \"prev.key\"");
    std::fs::write(&old_cfg, text).unwrap();
    c.kill(stray, Signal::SIGTERM);
    c.wait_exit(stray, T);
    c.set_node_config(stray, &old_cfg);
    c.respawn(stray);
    wait_until(
        &format!("{holder} rejects {stray}'s old-key heartbeats"),
        T,
        || {
            let st = c.try_status_via(Some(&holder))?;
            let f = st.local.packets_rejected.forged;
            if f > before && !st.local.server_view(stray).up {
                Ok(())
            } else {
                Err(format!(
                    "forged {f}, {stray} up {}",
                    st.local.server_view(stray).up
                ))
            }
        },
    );
    // The holder keeps the group; the stray one (which also refuses the new key's API
    // token) runs nothing.
    let st = c.status_via(&holder);
    assert_eq!(st.online_on(GROUP), vec![holder.to_string()]);
    let out = c.ctl(&["status", "-s", stray]);
    assert_eq!(out.code, 6, "{out:?}");
}

/// The same three steps with the files distributed by `baton config push --stage`
/// (every server has its own copy of the configuration): each push is stored on every
/// server without being applied (keys load at start; the digest does not change), then
/// the rolling restart takes it.
#[test]
fn key_rotation_with_config_push() {
    let _serial = serial();
    let mut spec = ClusterSpec::new("rotate-push", 192);
    spec.own_configs = true;
    let mut c = Cluster::start(spec);
    c.wait_owner(Some("node-1"), T);
    c.watch();
    let digest = c.status().local.digest.clone();
    let dir = c.dir.clone();
    let pushed = dir.join("pushed.toml");
    let push = |c: &Cluster, files: &[&str]| {
        set_accept_in(c, &pushed, files);
        // Without --stage it is refused: the keys load at start.
        let out = c.ctl(&["config", "push", &pushed.to_string_lossy()]);
        assert_eq!(out.code, 5, "{out:?}");
        assert!(out.stdout.contains("cluster.accept_key_files"), "{out:?}");
        let out = c.ctl(&["config", "push", "--stage", &pushed.to_string_lossy()]);
        assert_eq!(out.code, 0, "{out:?}");
        let want = std::fs::read_to_string(&pushed).unwrap();
        for n in ["node-1", "node-2", "node-3"] {
            assert_eq!(
                std::fs::read_to_string(&c.node(n).config).unwrap(),
                want,
                "{n}"
            );
        }
    };

    // 1. A new key (copied to every server: here they share the directory), accepted.
    let next = dir.join("next.key");
    c.cli(&["keygen", &next.to_string_lossy()])
        .ok("baton keygen next.key");
    push(&c, &["next.key"]);
    rolling_restart(&mut c, "step 1");

    // 2. Swap the files on every server, push the list naming the old key, restart.
    std::fs::rename(dir.join("cluster.key"), dir.join("prev.key")).unwrap();
    std::fs::rename(&next, dir.join("cluster.key")).unwrap();
    c.reload_token();
    push(&c, &["prev.key"]);
    rolling_restart(&mut c, "step 2");

    // 3. Drop the old key.
    push(&c, &[]);
    rolling_restart(&mut c, "step 3");
    for n in ["node-1", "node-2", "node-3"] {
        assert_eq!(c.status_via(n).local.digest, digest, "{n}");
    }
    let rep = c.stop_watch();
    rep.assert_never_two_online();
    c.assert_claim_history();
}
