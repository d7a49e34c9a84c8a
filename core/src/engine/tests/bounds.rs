//! Epochs and intent versions at their bounds (issue 9): values learned from a peer, the
//! witness or the state directory above [`bounds::MAX_EPOCH`] / [`bounds::MAX_VERSION`]
//! are refused with BTN-1140 (once a minute per source), nothing wraps, and a group whose
//! next epoch would exceed the bound is not claimed (BTN-1141).

use super::*;
use crate::bounds::{MAX_EPOCH, MAX_VERSION};
use crate::events::Severity;

/// A heartbeat as `from` would send it now, changed by `f` (a forged or corrupt packet).
fn forged(sim: &Sim, from: &str, f: impl FnOnce(&mut PeerMessage)) -> Input {
    let mut msg = sim.eng(from).peer_message();
    f(&mut msg);
    Input::Heartbeat {
        from: from.into(),
        path: 0,
        msg: Box::new(msg),
        newest: true,
    }
}

fn with_g1_epoch(e: u64) -> impl FnOnce(&mut PeerMessage) {
    move |m| {
        let r = m.groups.iter_mut().find(|r| &*r.name == "g1").unwrap();
        r.max_epoch = e;
        r.epoch = e;
    }
}

fn persisted_epochs(sim: &Sim, s: &str) -> Vec<u64> {
    sim.actions(s)
        .into_iter()
        .filter_map(|a| match a {
            Action::PersistEpoch { epoch, .. } => Some(epoch),
            _ => None,
        })
        .collect()
}

#[test]
fn peer_epochs_above_the_bound_are_refused_and_the_next_claim_still_grows() {
    let mut sim = started(&three(""));
    assert_eq!(sim.report("node-1", "g1").epoch, 1);
    sim.clear_logs();
    let n2 = sim.idx("node-2");
    for bad in [u64::MAX, u64::MAX - 1, MAX_EPOCH + 1] {
        let input = forged(&sim, "node-3", with_g1_epoch(bad));
        sim.feed(n2, input);
        sim.settle(n2);
        assert_eq!(sim.report("node-2", "g1").max_epoch, 1, "{bad} was learned");
    }
    // The same for an acknowledgement or a seen holder carrying the value.
    let input = forged(&sim, "node-3", |m| {
        m.groups[0].ack = Some(("node-3".into(), u64::MAX));
    });
    sim.feed(n2, input);
    let input = forged(&sim, "node-3", |m| {
        m.groups[0].seen_holder = Some(("node-1".into(), MAX_EPOCH + 1));
    });
    sim.feed(n2, input);
    sim.settle(n2);
    assert!(persisted_epochs(&sim, "node-2").iter().all(|&e| e <= 1));
    // One critical event for the source, not one per packet.
    assert_eq!(sim.count("node-2", &events::EPOCH_REFUSED), 1);
    let ev = sim
        .events("node-2")
        .into_iter()
        .find(|e| e.id == events::EPOCH_REFUSED.code())
        .unwrap();
    assert_eq!(ev.severity, Severity::Critical);
    assert!(ev.message.contains("server node-3"), "{}", ev.message);
    assert!(ev.message.contains(&u64::MAX.to_string()), "{}", ev.message);
    // A minute later the source is reported again.
    sim.run(61_000);
    let input = forged(&sim, "node-3", with_g1_epoch(u64::MAX));
    sim.feed(n2, input);
    sim.settle(n2);
    assert_eq!(sim.count("node-2", &events::EPOCH_REFUSED), 2);
    // Nobody learned anything: the next claim is epoch 2, not 0.
    sim.kill("node-1");
    assert!(sim.run_until(10_000, |s| s.online_on("g1").is_some()));
    let on = sim.online_on("g1").unwrap();
    assert_eq!(sim.report(&on, "g1").epoch, 2);
    assert!(sim.activations(&on).iter().all(|(_, e, _)| *e == 2));
}

#[test]
fn an_epoch_at_the_bound_is_learned_and_the_group_is_not_claimed_past_it() {
    let mut sim = started(&three(""));
    sim.clear_logs();
    let n2 = sim.idx("node-2");
    let input = forged(&sim, "node-3", with_g1_epoch(MAX_EPOCH));
    sim.feed(n2, input);
    sim.settle(n2);
    assert_eq!(sim.report("node-2", "g1").max_epoch, MAX_EPOCH);
    assert!(!sim.has("node-2", &events::EPOCH_REFUSED));
    assert!(persisted_epochs(&sim, "node-2").contains(&MAX_EPOCH));
    // The holder keeps running; when it dies, nobody claims MAX_EPOCH + 1 or wraps to 0.
    sim.run(2 * INTERVAL);
    sim.kill("node-1");
    sim.run(10_000);
    assert_eq!(sim.online_on("g1"), None);
    for s in ["node-2", "node-3"] {
        assert!(sim.activations(s).is_empty(), "{s} activated");
        assert!(persisted_epochs(&sim, s)
            .iter()
            .all(|&e| e == MAX_EPOCH || e <= 1));
        assert_ne!(sim.state(s, "g1"), GroupState::Claiming);
    }
    // The server that would claim it says why, once a minute.
    let n = sim.count("node-2", &events::EPOCH_EXHAUSTED);
    assert_eq!(n, 1);
    sim.run(60_000);
    assert_eq!(sim.count("node-2", &events::EPOCH_EXHAUSTED), 2);
}

#[test]
fn intent_versions_above_the_bound_are_refused_and_at_the_bound_exhaust_commands() {
    let mut sim = started(&three(""));
    sim.clear_logs();
    let n2 = sim.idx("node-2");
    for bad in [u64::MAX, MAX_VERSION + 1] {
        let input = forged(&sim, "node-3", |m| {
            m.intents.suspended = FlagIntent {
                version: bad,
                origin: "node-3/0".into(),
                on: true,
            };
        });
        sim.feed(n2, input);
        sim.settle(n2);
        assert!(!sim.eng("node-2").status().suspended, "{bad} was learned");
    }
    let input = forged(&sim, "node-3", |m| {
        m.intents.groups.insert(
            "g1".into(),
            GroupIntent {
                version: 5,
                origin: "node-3/0".into(),
                run: true,
                prefer: Some("node-3".into()),
                prefer_epoch: u64::MAX,
                clear_exclusions: false,
            },
        );
    });
    sim.feed(n2, input);
    sim.settle(n2);
    assert_eq!(sim.count("node-2", &events::EPOCH_REFUSED), 1);
    // Commands still get a version above everything known.
    sim.cmd("node-2", Command::ClusterSuspend).unwrap();
    assert_eq!(
        sim.eng("node-2").peer_message().intents.suspended.version,
        1
    );
    // At the bound: learned, and the next command has no version left (refused, no wrap).
    let input = forged(&sim, "node-3", |m| {
        m.intents.suspended = FlagIntent {
            version: MAX_VERSION,
            origin: "node-3/0".into(),
            on: false,
        };
    });
    sim.feed(n2, input);
    sim.settle(n2);
    assert!(!sim.eng("node-2").status().suspended);
    let err = sim.cmd("node-2", Command::ClusterSuspend).unwrap_err();
    assert_eq!(err.code(), "invalid");
    assert!(err.to_string().contains("exhausted"), "{err}");
    assert!(!sim.eng("node-2").status().suspended);
}

#[test]
fn temporary_timeouts_above_seven_days_are_refused() {
    let mut sim = started(&three(""));
    let n2 = sim.idx("node-2");
    let input = forged(&sim, "node-3", |m| {
        m.intents.timeout = TimeoutIntent {
            version: 3,
            origin: "node-3/0".into(),
            heartbeat_timeout_ms: u64::MAX,
            monitor_factor_pct: 100,
            duration_ms: 60_000,
        };
    });
    sim.feed(n2, input);
    sim.settle(n2);
    assert_eq!(sim.eng("node-2").status().heartbeat_timeout_ms, TIMEOUT);
    assert!(sim.has("node-2", &events::EPOCH_REFUSED));
    let err = sim
        .cmd(
            "node-2",
            Command::TimeoutSet {
                heartbeat_timeout_ms: 8 * 24 * 3_600_000,
                monitor_factor_pct: 100,
                duration_ms: 60_000,
            },
        )
        .unwrap_err();
    assert_eq!(err.code(), "invalid");
}

fn witness_pair() -> String {
    cluster(2, &group_g1("", ""))
        .replace(
            "servers = [\"node-1\", \"node-2\", \"node-3\"]",
            "servers = [\"node-1\", \"node-2\"]",
        )
        .replace(
            "[[group]]",
            "[quorum]\nwitness = { kind = \"http\", url = \"http://127.0.0.1:7430\" }\n\n[[group]]",
        )
}

#[test]
fn witness_epochs_above_the_bound_are_no_grant_and_not_learned() {
    let mut sim = Sim::new(&witness_pair());
    sim.witness_grants = Some(true);
    sim.run(STARTUP + 2_000);
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-1"));
    assert!(sim.eng("node-2").status().witness.starts_with("granted"));
    for bad in [u64::MAX, u64::MAX - 1, MAX_EPOCH + 1] {
        sim.clear_logs();
        sim.witness_epochs.insert("g1".into(), bad);
        sim.run(3 * INTERVAL);
        for s in ["node-1", "node-2"] {
            assert!(
                sim.eng(s).status().witness.starts_with("not-granted"),
                "{s}: {}",
                sim.eng(s).status().witness
            );
            assert_eq!(sim.report(s, "g1").max_epoch, 1, "{s} learned {bad}");
            assert!(persisted_epochs(&sim, s).iter().all(|&e| e <= 1));
        }
        assert!(sim.has("node-2", &events::EPOCH_REFUSED) || bad != u64::MAX);
    }
    assert!(sim.count("node-2", &events::EPOCH_REFUSED) <= 1);
    // A witness back in range grants again; the next claim grows from 1.
    sim.witness_epochs.insert("g1".into(), 1);
    sim.run(3 * INTERVAL);
    assert!(sim.eng("node-2").status().witness.starts_with("granted"));
    let tm = sim.eng("node-2").config().timing(TIMEOUT);
    sim.kill("node-1");
    assert!(sim.run_until(tm.takeover_after_ms() + 2_000, |s| s
        .online_on("g1")
        .as_deref()
        == Some("node-2")));
    assert_eq!(sim.report("node-2", "g1").epoch, 2);
    // At the bound: learned.
    sim.witness_epochs.insert("g1".into(), MAX_EPOCH);
    sim.run(3 * INTERVAL);
    assert_eq!(sim.report("node-2", "g1").max_epoch, MAX_EPOCH);
    assert!(sim.eng("node-2").status().witness.starts_with("granted"));
}

#[test]
fn state_directory_epochs_above_the_bound_are_ignored_at_boot() {
    let mut sim = started(&three(""));
    let mut boot = sim.boot_state("node-3");
    boot.epochs.insert("g1".into(), u64::MAX);
    sim.kill("node-3");
    sim.clear_logs();
    sim.restart("node-3", boot);
    assert_eq!(sim.report("node-3", "g1").max_epoch, 0);
    assert_eq!(sim.count("node-3", &events::EPOCH_REFUSED), 1);
    sim.run(2 * INTERVAL);
    assert_eq!(sim.report("node-3", "g1").max_epoch, 1);
    // An owned group with a damaged epoch is still checked (and cleaned up: node-1 holds
    // it), with an epoch in range.
    let mut boot = sim.boot_state("node-3");
    boot.owned.insert("g1".into(), u64::MAX);
    sim.kill("node-3");
    sim.restart("node-3", boot);
    assert!(sim
        .actions("node-3")
        .iter()
        .all(|a| !matches!(a, Action::Check { epoch, .. } if *epoch > MAX_EPOCH)));
    sim.run(STARTUP + 1_000);
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-1"));
    assert!(sim.report("node-3", "g1").max_epoch <= 1);
}
