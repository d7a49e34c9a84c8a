//! Multi-agent scenarios: three real `baton agent` processes per test on loopback
//! (`127.0.N.x`, N distinct per test), driven through the `baton` CLI. The scenarios
//! share one test binary and run one at a time ([`serial`]): the machine may have only
//! two cores.
//!
//! Every scenario checks what `baton status --json` reports at each step, the events in
//! the agents' alert logs (`baton alerts --json`), the claim history of the group's
//! `local-claim` resource (epochs only grow, one owner per epoch), and, through the
//! invariant watcher, that the group was never online on two servers at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Tests measure the real time of real processes and sockets: they read the clock directly.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use baton_tests::nft::{self, Cut};
use baton_tests::{
    serial, wait_until, Cluster, ClusterSpec, ClusterStatus, Events, MonitorSpec, Signal, GROUP,
    MONITOR,
};

/// Generous bound for anything that should take a few heartbeat timeouts.
const T: Duration = Duration::from_secs(20);

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
}

/// Wait until every agent answers and sees every server up and ready on every path,
/// with matching configuration digests.
fn wait_all_up(c: &Cluster) -> ClusterStatus {
    wait_until(
        "every agent sees every server up and ready on every path",
        T,
        || {
            let st = c.try_status()?;
            if st.agents().len() != c.nodes.len() {
                return Err(st.summary(GROUP));
            }
            for a in st.agents() {
                for s in &a.servers {
                    if !(s.up
                        && s.ready
                        && s.quorum
                        && s.digest_matches
                        && s.paths.len() == c.spec.paths
                        && s.paths.iter().all(|p| p.up))
                    {
                        return Err(st.summary(GROUP));
                    }
                }
            }
            Ok(st)
        },
    )
}

/// Keep checking `check` against `baton status` for `dur` (used to show that something
/// does NOT happen: a bounded observation window, not a sleep).
fn hold_for(
    c: &Cluster,
    dur: Duration,
    what: &str,
    check: impl Fn(&ClusterStatus) -> Result<(), String>,
) {
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < dur {
        let st = c.status();
        if let Err(e) = check(&st) {
            panic!(
                "after {} ms, expected {what}: {e}\n{}",
                start.elapsed().as_millis(),
                st.summary(GROUP)
            );
        }
        n += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(n >= 2, "the observation window of {what} was too short");
}

/// The group is online on `server` alone, with `epoch`, as every agent agrees.
fn owner_is(server: &str, epoch: u64) -> impl Fn(&ClusterStatus) -> Result<(), String> + '_ {
    move |st| {
        let owner = st.sole_owner(GROUP);
        let found = st.group(GROUP).epoch;
        if owner.as_deref() == Some(server) && found == epoch {
            Ok(())
        } else {
            Err(format!(
                "group {GROUP} should be online on {server} alone with epoch {epoch}, \
                 found owner {owner:?} epoch {found}"
            ))
        }
    }
}

/// Stop the watcher and check the safety invariants of the whole scenario: never
/// online on two servers at once (agents' reports), the app never running on two
/// servers at once (its start/stop log), and claim epochs strictly increasing.
fn check_invariants(c: &mut Cluster) -> baton_tests::watch::Report {
    let rep = c.stop_watch();
    rep.assert_never_two_online();
    c.assert_app_exclusive();
    c.assert_claim_history();
    rep
}

fn healthy_start(c: &Cluster) {
    let st = wait_all_up(c);
    for a in st.agents() {
        assert!(
            a.ready && a.quorum && !a.refused && !a.suspended,
            "{}",
            st.summary(GROUP)
        );
        assert_eq!(a.heartbeat_timeout_ms, 1000);
    }
}

// ---------------------------------------------------------------------------------------
// 1. SIGKILL of the active agent
// ---------------------------------------------------------------------------------------

#[test]
fn sigkill_of_active_agent_fails_over_to_next_server() {
    let _serial = serial();
    let mut c = Cluster::start(ClusterSpec::new("failover", 151));
    let (_, e1, st) = c.wait_owner(Some("node-1"), T);
    assert_eq!(e1, 1, "first activation of a fresh cluster has epoch 1");
    healthy_start(&c);
    // Status: every server's own report agrees; only node-1 runs the app.
    let g = st.group(GROUP);
    assert_eq!((g.desired.as_str(), g.excluded_on.len()), ("running", 0));
    for s in ["node-2", "node-3"] {
        assert_eq!(st.agent(s).unwrap().local_state(GROUP), "offline");
        assert!(c.app_pid(s).is_none());
    }
    assert!(c.app_pid("node-1").is_some(), "the app runs on node-1");
    assert_eq!(
        c.claim().map(|x| (x.owner, x.epoch)),
        Some(("node-1".into(), e1))
    );

    c.watch();
    let killed_at = unix_ms();
    let t = Instant::now();
    // The whole server is lost: its agent and its app.
    c.kill("node-1", Signal::SIGKILL);
    c.kill_app("node-1");

    let (_, e2, st) = c.wait_owner(Some("node-2"), T);
    let took = t.elapsed();
    eprintln!("failover after SIGKILL took {} ms", took.as_millis());
    assert_eq!(e2, e1 + 1, "the new activation carries the next epoch");

    // Status after the failover: node-1 down on every path, from both survivors.
    assert!(st.agent("node-1").is_none());
    let p = st.peers.iter().find(|p| p.server == "node-1");
    assert!(
        p.is_some_and(|p| p.error.is_some()) || st.via != "node-1",
        "node-1 must be reported unreachable: {}",
        st.summary(GROUP)
    );
    for a in st.agents() {
        let v = a.server_view("node-1");
        assert!(
            !v.up && v.paths.iter().all(|p| !p.up),
            "{}",
            st.summary(GROUP)
        );
        assert_eq!(a.group(GROUP).per_server["node-1"], "offline");
        assert!(a.quorum, "two of three votes keep quorum");
    }
    assert_eq!(st.agent("node-3").unwrap().local_state(GROUP), "offline");
    assert!(c.app_pid("node-2").is_some() && c.app_pid("node-3").is_none());

    // Events on the new owner: node-1 down, then activating and activated with e2.
    let ev2 = c.wait_event("node-2", "BTN-2102", T, |e| e.epoch == Some(e2));
    let down = ev2
        .iter()
        .find(|e| {
            e.id == "BTN-1102" && e.peer.as_deref() == Some("node-1") && e.time_ms >= killed_at
        })
        .unwrap_or_else(|| panic!("no BTN-1102 for node-1 on node-2:\n{}", ev2.lines()));
    let activating = ev2
        .iter()
        .find(|e| e.id == "BTN-2101" && e.epoch == Some(e2))
        .unwrap_or_else(|| panic!("no BTN-2101 on node-2:\n{}", ev2.lines()));
    let activated = ev2
        .iter()
        .find(|e| e.id == "BTN-2102" && e.epoch == Some(e2))
        .unwrap();
    assert!(
        down.seq < activating.seq && activating.seq < activated.seq,
        "{}",
        ev2.lines()
    );
    assert!(
        ev2.has("BTN-2107", |e| e.group.as_deref() == Some(GROUP)
            && e.peer.as_deref() == Some("node-1")),
        "a failover event names the previous holder:\n{}",
        ev2.lines()
    );
    // node-3 saw node-1 go down but did not activate.
    let ev3 = c.alerts("node-3");
    assert!(
        ev3.has("BTN-1102", |e| e.peer.as_deref() == Some("node-1")),
        "{}",
        ev3.lines()
    );
    assert_eq!(ev3.count("BTN-2101", |_| true), 0, "{}", ev3.lines());

    // The lost server comes back with its old state directory: it finds that node-2
    // now holds the group, cleans up its side, and does not take the group back.
    let seq1 = c.alerts("node-2").last_seq();
    c.restart("node-1");
    let ev1 = c.wait_event("node-1", "BTN-1021", T, |e| e.epoch == Some(e1));
    let st = wait_all_up(&c);
    assert_eq!(
        st.sole_owner(GROUP).as_deref(),
        Some("node-2"),
        "{}",
        st.summary(GROUP)
    );
    assert_eq!(st.group(GROUP).epoch, e2);
    assert_eq!(st.agent("node-1").unwrap().local_state(GROUP), "offline");
    let cleanup = ev1
        .iter()
        .filter(|e| e.id == "BTN-1021")
        .map(|e| e.seq)
        .max();
    assert!(
        !ev1.iter()
            .any(|e| e.id == "BTN-2101" && Some(e.seq) > cleanup),
        "{}",
        ev1.lines()
    );
    assert_eq!(
        c.claim().map(|x| (x.owner, x.epoch)),
        Some(("node-2".into(), e2))
    );
    assert!(c.app_pid("node-1").is_none() && c.app_pid("node-2").is_some());
    let ev2 = c.alerts("node-2").after(seq1);
    assert!(
        ev2.has("BTN-1101", |e| e.peer.as_deref() == Some("node-1")),
        "{}",
        ev2.lines()
    );
    assert_eq!(
        ev2.count("BTN-2103", |_| true),
        0,
        "no failback:\n{}",
        ev2.lines()
    );

    // Let the watcher see the new owner for a while, then check the invariants.
    wait_until("the watcher sees node-2 online", T, || {
        let n = c
            .watch_report()
            .obs
            .iter()
            .filter(|o| o.server == "node-2" && o.state == "online")
            .count();
        if n >= 5 {
            Ok(())
        } else {
            Err(format!("{n} observations"))
        }
    });
    let rep = check_invariants(&mut c);
    assert_eq!(rep.owners(), vec!["node-1", "node-2"], "{}", rep.timeline());
    assert_eq!(
        c.assert_claim_history(),
        vec![("node-1".to_string(), e1), ("node-2".to_string(), e2)]
    );
}

// ---------------------------------------------------------------------------------------
// 2. A failing monitor: restarts, then failover
// ---------------------------------------------------------------------------------------

fn wait_monitor(c: &Cluster, server: &str, state: &str) -> ClusterStatus {
    wait_until(
        &format!("monitor {MONITOR} is {state} on {server}"),
        T,
        || {
            let st = c.try_status()?;
            match st.agent(server) {
                Some(a) if a.monitor(MONITOR).state == state => Ok(st),
                _ => Err(st.summary(GROUP)),
            }
        },
    )
}

#[test]
fn failing_monitor_restarts_then_fails_over() {
    let _serial = serial();
    let mut c =
        Cluster::start(ClusterSpec::new("recovery", 152).with_monitor(MonitorSpec::default()));
    let (_, e1, _) = c.wait_owner(Some("node-1"), T);
    let st = wait_monitor(&c, "node-1", "normal");
    for s in ["node-2", "node-3"] {
        assert_eq!(
            st.agent(s).unwrap().monitor(MONITOR).state,
            "idle",
            "the monitor polls only where the group runs"
        );
    }
    let m = st.agent("node-1").unwrap().monitor(MONITOR);
    assert_eq!((m.kind.as_str(), m.restarts, m.failovers), ("exec", 0, 0));
    c.watch();
    let seq0 = c.alerts("node-1").last_seq();

    // The application fails on node-1 only, and keeps failing there.
    c.set_fail("node-1", true);
    let (_, e4, st) = c.wait_owner(Some("node-2"), T);
    assert_eq!(
        e4,
        e1 + 3,
        "two restarts (each a new epoch), then the failover"
    );

    // Events on node-1: error, then restart, restart, failover, in that order (each
    // restart re-arms the monitor, so the error is detected again before each step).
    let ev1 = c.alerts("node-1").after(seq0);
    let ladder: Vec<&str> = ev1
        .iter()
        .filter(|e| ["BTN-3011", "BTN-3012", "BTN-3013"].contains(&e.id.as_str()))
        .map(|e| e.id.as_str())
        .collect();
    assert_eq!(
        ladder,
        vec!["BTN-3011", "BTN-3011", "BTN-3012"],
        "recovery ladder on node-1:\n{}",
        ev1.lines()
    );
    let first_error = ev1.iter().find(|e| e.id == "BTN-3001").map(|e| e.seq);
    let first_restart = ev1.iter().find(|e| e.id == "BTN-3011").map(|e| e.seq);
    assert!(
        first_error.is_some() && first_error < first_restart,
        "{}",
        ev1.lines()
    );
    assert!(ev1
        .iter()
        .all(|e| e.id != "BTN-3011" || e.monitor.as_deref() == Some(MONITOR)));
    let restarted: Vec<u64> = ev1
        .with_id("BTN-2101")
        .iter()
        .filter_map(|e| e.epoch)
        .collect();
    assert_eq!(
        restarted,
        vec![e1 + 1, e1 + 2],
        "each restart activates with a new epoch:\n{}",
        ev1.lines()
    );
    assert!(
        ev1.has("BTN-2104", |e| e.epoch == Some(e1 + 2)),
        "released after the failover:\n{}",
        ev1.lines()
    );

    // Status: the counters on node-1, the exclusion, the new owner.
    let a1 = st.agent("node-1").unwrap();
    let m = a1.monitor(MONITOR);
    assert_eq!((m.restarts, m.failovers), (2, 1), "{}", st.summary(GROUP));
    assert_eq!(m.state, "idle", "the group no longer runs on node-1");
    assert_eq!(a1.local_state(GROUP), "offline");
    assert!(
        st.group(GROUP).excluded_on.contains(&"node-1".to_string()),
        "node-1 gave the group up after a failure: {}",
        st.summary(GROUP)
    );
    let ev2 = c.alerts("node-2");
    assert!(
        ev2.has("BTN-2102", |e| e.epoch == Some(e4)),
        "{}",
        ev2.lines()
    );
    assert_eq!(c.alerts("node-3").count("BTN-2101", |_| true), 0);
    // The monitor runs on node-2 now and is healthy there.
    let st = wait_monitor(&c, "node-2", "normal");
    let m2 = st.agent("node-2").unwrap().monitor(MONITOR);
    assert_eq!((m2.restarts, m2.failovers), (0, 0));
    assert!(c.app_pid("node-1").is_none() && c.app_pid("node-2").is_some());
    let starts = c
        .app_events()
        .iter()
        .filter(|l| l.starts_with("start node-1"))
        .count();
    assert_eq!(
        starts,
        3,
        "started once, restarted twice on node-1: {:?}",
        c.app_events()
    );

    let rep = check_invariants(&mut c);
    assert_eq!(rep.owners().last().map(String::as_str), Some("node-2"));
    assert_eq!(
        c.assert_claim_history(),
        vec![
            ("node-1".to_string(), e1),
            ("node-1".to_string(), e1 + 1),
            ("node-1".to_string(), e1 + 2),
            ("node-2".to_string(), e4),
        ]
    );
}

// ---------------------------------------------------------------------------------------
// 3. Suspending a monitor and the cluster
// ---------------------------------------------------------------------------------------

#[test]
fn suspend_stops_polling_and_recovery_until_resumed() {
    let _serial = serial();
    let mut c =
        Cluster::start(ClusterSpec::new("suspend", 153).with_monitor(MonitorSpec::default()));
    let (_, e1, _) = c.wait_owner(Some("node-1"), T);
    wait_monitor(&c, "node-1", "normal");
    c.watch();

    // --- monitor suspend: no polling, state `suspended` everywhere.
    c.ctl(&["monitor", "suspend", MONITOR])
        .ok("baton monitor suspend");
    wait_until("every agent reports the monitor suspended", T, || {
        let st = c.try_status()?;
        let all = st.agents().len() == 3
            && st
                .agents()
                .iter()
                .all(|a| a.monitor(MONITOR).state == "suspended");
        if all {
            Ok(())
        } else {
            Err(st.summary(GROUP))
        }
    });
    c.wait_event("node-1", "BTN-3020", T, |e| {
        e.monitor.as_deref() == Some(MONITOR)
    });
    let p0 = c.polls("node-1");
    hold_for(
        &c,
        Duration::from_millis(1200),
        "the suspended monitor to stay suspended",
        |st| {
            owner_is("node-1", e1)(st)?;
            match st.agent("node-1").map(|a| a.monitor(MONITOR).state.clone()) {
                Some(s) if s == "suspended" => Ok(()),
                s => Err(format!("monitor state {s:?}")),
            }
        },
    );
    let p1 = c.polls("node-1");
    assert!(
        p1 <= p0 + 1,
        "a suspended monitor must not poll ({p0} → {p1} polls in 1.2 s at 200 ms)"
    );

    c.ctl(&["monitor", "resume", MONITOR])
        .ok("baton monitor resume");
    c.wait_event("node-1", "BTN-3021", T, |e| {
        e.monitor.as_deref() == Some(MONITOR)
    });
    wait_until("the resumed monitor polls again", T, || {
        let n = c.polls("node-1");
        if n >= p1 + 3 {
            Ok(())
        } else {
            Err(format!("{n} polls"))
        }
    });
    wait_monitor(&c, "node-1", "normal");

    // --- cluster suspend: the application fails but nothing recovers it.
    c.ctl(&["cluster", "suspend"]).ok("baton cluster suspend");
    wait_until("every agent reports the cluster suspended", T, || {
        let st = c.try_status()?;
        let all = st.agents().len() == 3
            && st
                .agents()
                .iter()
                .all(|a| a.suspended && a.monitor(MONITOR).state == "suspended");
        if all {
            Ok(())
        } else {
            Err(st.summary(GROUP))
        }
    });
    for s in ["node-1", "node-2", "node-3"] {
        c.wait_event(s, "BTN-4001", T, |_| true);
    }
    let text = c.ctl(&["status"]).ok("baton status");
    assert!(
        text.stdout.contains("SUSPENDED"),
        "text status shows the suspension:\n{}",
        text.stdout
    );
    let seq = c.alerts("node-1").last_seq();
    c.set_fail("node-1", true);
    let p2 = c.polls("node-1");
    hold_for(
        &c,
        Duration::from_millis(2000),
        "the group to stay on node-1 while suspended",
        owner_is("node-1", e1),
    );
    let p3 = c.polls("node-1");
    assert!(
        p3 <= p2 + 1,
        "no polling while the cluster is suspended ({p2} → {p3})"
    );
    let ev = c.alerts("node-1").after(seq);
    for id in ["BTN-3001", "BTN-3011", "BTN-3012", "BTN-2101", "BTN-2103"] {
        assert_eq!(
            ev.count(id, |_| true),
            0,
            "{id} while suspended:\n{}",
            ev.lines()
        );
    }
    assert!(c.app_pid("node-1").is_some());

    // --- resume: the failure is found and the recovery ladder runs.
    c.ctl(&["cluster", "resume"]).ok("baton cluster resume");
    c.wait_event("node-1", "BTN-4002", T, |e| e.seq > seq);
    let ev = c.wait_event("node-1", "BTN-3011", T, |e| e.seq > seq);
    assert!(ev.has("BTN-3001", |e| e.seq > seq), "{}", ev.lines());
    let (_, e4, st) = c.wait_owner(Some("node-2"), T);
    assert_eq!(e4, e1 + 3);
    assert!(st.agents().iter().all(|a| !a.suspended));
    check_invariants(&mut c);
}

/// BTN-3014 ("failover suppressed"): while the cluster is suspended, the holder's death
/// is reported on node-2 and the group is not taken over; `cluster resume` lets node-2
/// take it with the next epoch.
#[test]
fn suspended_cluster_does_not_fail_over_until_resumed() {
    let _serial = serial();
    let mut c = Cluster::start(ClusterSpec::new("suppressed", 158));
    let (_, e1, _) = c.wait_owner(Some("node-1"), T);
    healthy_start(&c);
    c.watch();
    c.ctl(&["cluster", "suspend"]).ok("baton cluster suspend");
    c.wait_event("node-2", "BTN-4001", T, |_| true);
    let s2 = c.alerts("node-2").last_seq();
    c.kill("node-1", Signal::SIGKILL);
    c.kill_app("node-1");
    c.wait_event("node-2", "BTN-3014", T, |e| {
        e.seq > s2 && e.group.as_deref() == Some(GROUP)
    });
    hold_for(
        &c,
        Duration::from_millis(1500),
        "no failover while suspended",
        |st| {
            let online = st.online_on(GROUP);
            if online.is_empty() {
                Ok(())
            } else {
                Err(format!("online on {online:?}"))
            }
        },
    );
    c.ctl(&["cluster", "resume", "-s", "node-3"])
        .ok("baton cluster resume");
    let (_, e, _) = c.wait_owner(Some("node-2"), T);
    assert_eq!(e, e1 + 1);
    let rep = c.stop_watch();
    rep.assert_never_two_online();
    c.assert_claim_history();
}

// ---------------------------------------------------------------------------------------
// 4. Configuration digest mismatch
// ---------------------------------------------------------------------------------------

#[test]
fn config_digest_mismatch_refuses_activation() {
    let _serial = serial();
    // node-1, the group's preferred server, runs a configuration with one other value.
    let spec = ClusterSpec::new("digest", 154)
        .with_monitor(MonitorSpec::default())
        .with_variant("node-1", |t| {
            assert!(t.contains("interval = \"200ms\""));
            t.replace("interval = \"200ms\"", "interval = \"300ms\"")
        });
    let mut c = Cluster::start(spec);
    c.watch();
    let (_, e, _) = c.wait_owner(Some("node-2"), T);
    assert_eq!(e, 1);

    let ev1 = c.wait_event("node-1", "BTN-1012", T, |_| true);
    for peer in ["node-2", "node-3"] {
        assert!(
            ev1.has("BTN-1011", |e| e.peer.as_deref() == Some(peer)),
            "{}",
            ev1.lines()
        );
    }
    assert_eq!(
        ev1.count("BTN-2101", |_| true),
        0,
        "the refusing server never activates:\n{}",
        ev1.lines()
    );
    // node-1 was up before the group was placed: it was passed over, not absent.
    let ev2 = c.alerts("node-2");
    let heard = ev2
        .iter()
        .find(|e| e.id == "BTN-1101" && e.peer.as_deref() == Some("node-1"))
        .map(|e| e.seq);
    let activating = ev2.iter().find(|e| e.id == "BTN-2101").map(|e| e.seq);
    assert!(heard.is_some() && heard < activating, "{}", ev2.lines());
    for s in ["node-2", "node-3"] {
        let ev = c.wait_event(s, "BTN-1011", T, |e| e.peer.as_deref() == Some("node-1"));
        assert_eq!(
            ev.count("BTN-1012", |_| true),
            0,
            "{s} is in the majority:\n{}",
            ev.lines()
        );
        assert_eq!(
            ev.count("BTN-1011", |e| e.peer.as_deref() != Some("node-1")),
            0,
            "{}",
            ev.lines()
        );
    }

    // Status from the majority's side.
    let st = c.status_via("node-2");
    let v1 = st.local.server_view("node-1");
    assert!(
        v1.up && !v1.digest_matches && v1.refused,
        "{}",
        st.summary(GROUP)
    );
    assert!(st.local.server_view("node-3").digest_matches);
    assert!(!st.local.refused);
    assert_eq!(st.group(GROUP).per_server["node-1"], "offline");
    // And from node-1's own side.
    let st1 = c.status_via("node-1");
    assert!(st1.local.refused, "{}", st1.summary(GROUP));
    assert_ne!(st1.local.digest, st.local.digest);
    for peer in ["node-2", "node-3"] {
        assert!(!st1.local.server_view(peer).digest_matches);
    }
    let text = c.ctl(&["status", "-s", "node-2"]).ok("baton status");
    assert!(text.stdout.contains("CONFIG DIFFERS"), "{}", text.stdout);

    // Moving the group to the refusing server is refused (exit 5), and nothing moves.
    let out = c.ctl(&["group", "move", GROUP, "--to", "node-1"]);
    assert_eq!(out.code, 5, "{}{}", out.stdout, out.stderr);
    hold_for(
        &c,
        Duration::from_millis(1200),
        "the group to stay on node-2",
        owner_is("node-2", e),
    );

    let rep = check_invariants(&mut c);
    assert_eq!(rep.owners(), vec!["node-2"]);
    assert_eq!(c.assert_claim_history(), vec![("node-2".to_string(), e)]);
}

// ---------------------------------------------------------------------------------------
// 5. One interconnect path cut
// ---------------------------------------------------------------------------------------

#[test]
fn one_path_cut_is_reported_without_failover() {
    if let Some(why) = nft::unavailable() {
        baton_tests::skip::skip("one_path_cut_is_reported_without_failover", &why);
        return;
    }
    let _serial = serial();
    let mut c = Cluster::start(ClusterSpec::new("pathcut", 155));
    let (_, e1, _) = c.wait_owner(Some("node-1"), T);
    healthy_start(&c);
    c.watch();
    let s1 = c.alerts("node-1").last_seq();
    let s2 = c.alerts("node-2").last_seq();
    let s3 = c.alerts("node-3").last_seq();

    let mut cut = Cut::udp_between(
        c.node("node-1").interconnects[1],
        c.node("node-2").interconnects[1],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let path1 = |e: &baton_tests::Event| e.fields.get("path").and_then(|p| p.as_u64()) == Some(1);
    c.wait_event("node-1", "BTN-1103", T, |e| {
        e.seq > s1 && e.peer.as_deref() == Some("node-2") && path1(e)
    });
    c.wait_event("node-2", "BTN-1103", T, |e| {
        e.seq > s2 && e.peer.as_deref() == Some("node-1") && path1(e)
    });

    // Status while cut: up, path 0 up, path 1 down, between node-1 and node-2 only.
    let st = wait_until(
        "status shows path 1 down between node-1 and node-2",
        T,
        || {
            let st = c.try_status()?;
            let ok = |a: &str, b: &str| {
                st.agent(a).is_some_and(|x| {
                    let v = x.server_view(b);
                    v.up && v.paths[0].up && !v.paths[1].up
                })
            };
            if ok("node-1", "node-2") && ok("node-2", "node-1") {
                Ok(st)
            } else {
                Err(st.summary(GROUP))
            }
        },
    );
    for (a, b) in [
        ("node-3", "node-1"),
        ("node-3", "node-2"),
        ("node-1", "node-3"),
        ("node-2", "node-3"),
    ] {
        let v = st.agent(a).unwrap().server_view(b);
        assert!(
            v.up && v.paths.iter().all(|p| p.up),
            "{a}→{b} is not cut: {}",
            st.summary(GROUP)
        );
    }
    assert!(st.agents().iter().all(|a| a.quorum));
    hold_for(
        &c,
        Duration::from_millis(1500),
        "no failover while one path works",
        owner_is("node-1", e1),
    );
    for (s, seq) in [("node-1", s1), ("node-2", s2), ("node-3", s3)] {
        let ev = c.alerts(s).after(seq);
        for id in ["BTN-1102", "BTN-2101", "BTN-2103", "BTN-1120"] {
            assert_eq!(
                ev.count(id, |_| true),
                0,
                "{id} on {s} with one path cut:\n{}",
                ev.lines()
            );
        }
    }

    cut.restore().unwrap_or_else(|e| panic!("{e}"));
    c.wait_event("node-1", "BTN-1104", T, |e| {
        e.seq > s1 && e.peer.as_deref() == Some("node-2") && path1(e)
    });
    c.wait_event("node-2", "BTN-1104", T, |e| {
        e.seq > s2 && e.peer.as_deref() == Some("node-1") && path1(e)
    });
    wait_all_up(&c);
    owner_is("node-1", e1)(&c.status()).unwrap();

    let rep = check_invariants(&mut c);
    assert_eq!(rep.owners(), vec!["node-1"]);
    assert_eq!(c.assert_claim_history(), vec![("node-1".to_string(), e1)]);
}

// ---------------------------------------------------------------------------------------
// 5b. The active server isolated on every path: quorum loss and fencing
// ---------------------------------------------------------------------------------------

/// A cluster whose active server (node-1) was cut off from both peers on every path
/// (UDP only: the APIs still answer, so the watcher sees every side), after the majority
/// took the group over.
struct Isolated {
    c: Cluster,
    e1: u64,
    e2: u64,
    /// ms between the isolated server's deactivation and the majority's activation
    /// (negative: the majority started first).
    margin: i64,
    s1: u64,
    to2: Cut,
    to3: Cut,
}

fn isolate_active_server(name: &str, net: u8) -> Isolated {
    let mut c = Cluster::start(ClusterSpec::new(name, net));
    let (_, e1, _) = c.wait_owner(Some("node-1"), T);
    healthy_start(&c);
    c.watch();
    let s1 = c.alerts("node-1").last_seq();
    let s2 = c.alerts("node-2").last_seq();
    let cut_to = |c: &Cluster, other: &str| {
        let pairs: Vec<_> = (0..c.spec.paths)
            .map(|p| {
                (
                    c.node("node-1").interconnects[p],
                    c.node(other).interconnects[p],
                )
            })
            .collect();
        Cut::udp_pairs(&pairs).unwrap_or_else(|e| panic!("{e}"))
    };
    let to2 = cut_to(&c, "node-2");
    let to3 = cut_to(&c, "node-3");

    // The majority takes over; the isolated server stops its copy.
    let st = wait_until("node-2 runs the group and node-1 has stopped it", T, || {
        let st = c.try_status_via(Some("node-2"))?;
        let ok = st.online_on(GROUP) == vec!["node-2".to_string()]
            && ["node-2", "node-3"].iter().all(|s| {
                st.agent(s)
                    .is_some_and(|a| a.group(GROUP).active_on.as_deref() == Some("node-2"))
            })
            && st.agent("node-1").is_some_and(|a| {
                // node-1 stops at the quorum lease (half the timeout) and sees its peers
                // down at the timeout, about when node-2 takes over.
                a.local_state(GROUP) == "offline"
                    && ["node-2", "node-3"].iter().all(|s| !a.server_view(s).up)
            });
        if ok {
            Ok(st)
        } else {
            Err(st.summary(GROUP))
        }
    });
    let e2 = st.agent("node-2").unwrap().group(GROUP).epoch;
    assert_eq!(e2, e1 + 1);
    let a1 = st.agent("node-1").unwrap();
    assert!(
        !a1.quorum,
        "node-1 hears 1 of 3 votes: {}",
        st.summary(GROUP)
    );
    for s in ["node-2", "node-3"] {
        let v = a1.server_view(s);
        assert!(
            !v.up && v.paths.iter().all(|p| !p.up),
            "{}",
            st.summary(GROUP)
        );
    }
    assert!(st.agent("node-2").unwrap().quorum && st.agent("node-3").unwrap().quorum);

    let ev1 = c.wait_event("node-1", "BTN-2104", T, |e| {
        e.seq > s1 && e.epoch == Some(e1)
    });
    let ev1 = ev1.after(s1);
    assert!(
        ev1.has("BTN-1120", |_| true),
        "node-1 reports the quorum loss:\n{}",
        ev1.lines()
    );
    for s in ["node-2", "node-3"] {
        assert!(
            ev1.has("BTN-1102", |e| e.peer.as_deref() == Some(s)),
            "{}",
            ev1.lines()
        );
    }
    assert_eq!(ev1.count("BTN-2101", |_| true), 0, "{}", ev1.lines());
    let ev2 = c.alerts("node-2").after(s2);
    assert!(
        ev2.has("BTN-1102", |e| e.peer.as_deref() == Some("node-1")),
        "{}",
        ev2.lines()
    );
    let fenced = ev1
        .iter()
        .find(|e| e.id == "BTN-2104")
        .map(|e| e.time_ms)
        .unwrap();
    let taken = ev2
        .iter()
        .find(|e| e.id == "BTN-2101" && e.epoch == Some(e2))
        .map(|e| e.time_ms)
        .unwrap_or_else(|| panic!("no BTN-2101 on node-2:\n{}", ev2.lines()));
    let margin = i64::try_from(taken).unwrap_or(0) - i64::try_from(fenced).unwrap_or(0);
    eprintln!("isolated owner stopped the group {margin} ms before the majority started it");

    // Epoch fencing: the isolated server's late deactivation left the new claim alone.
    assert_eq!(
        c.claim().map(|x| (x.owner, x.epoch)),
        Some(("node-2".into(), e2))
    );
    Isolated {
        c,
        e1,
        e2,
        margin,
        s1,
        to2,
        to3,
    }
}

#[test]
fn isolated_active_server_stops_and_majority_takes_over() {
    if let Some(why) = nft::unavailable() {
        baton_tests::skip::skip("isolated_active_server_stops_and_majority_takes_over", &why);
        return;
    }
    let _serial = serial();
    let Isolated {
        mut c,
        e1,
        e2,
        s1,
        mut to2,
        mut to3,
        ..
    } = isolate_active_server("isolate", 156);
    // Heal towards the new owner first: node-1 hears node-2 hold the group as it
    // regains quorum, and stays out. (Healing towards node-3 first is
    // `partial_heal_does_not_activate_a_second_copy`.)
    to2.restore().unwrap_or_else(|e| panic!("{e}"));
    c.wait_event("node-1", "BTN-1121", T, |e| e.seq > s1);
    to3.restore().unwrap_or_else(|e| panic!("{e}"));
    let st = wait_all_up(&c);
    assert_eq!(
        st.sole_owner(GROUP).as_deref(),
        Some("node-2"),
        "{}",
        st.summary(GROUP)
    );
    assert_eq!(st.group(GROUP).epoch, e2);
    hold_for(
        &c,
        Duration::from_millis(1000),
        "no failback after the partition heals",
        owner_is("node-2", e2),
    );
    let ev1 = c.alerts("node-1").after(s1);
    assert_eq!(ev1.count("BTN-2101", |_| true), 0, "{}", ev1.lines());

    let rep = c.stop_watch();
    c.assert_claim_history();
    assert_eq!(
        c.claim_history()
            .iter()
            .map(|x| (x.owner.as_str(), x.epoch))
            .collect::<Vec<_>>(),
        vec![("node-1", e1), ("node-2", e2)]
    );
    // The isolated server loses quorum after the quorum lease (half the timeout) and
    // stops its copy before the majority declares it down.
    rep.assert_never_two_online();
    c.assert_app_exclusive();
}

/// Invariant 2: the isolated server must have stopped the group before the majority
/// starts it.
#[test]
fn isolated_active_server_fences_before_takeover() {
    if let Some(why) = nft::unavailable() {
        baton_tests::skip::skip("isolated_active_server_fences_before_takeover", &why);
        return;
    }
    let _serial = serial();
    let mut iso = isolate_active_server("fence", 159);
    assert!(
        iso.margin > 0,
        "the majority started the group {} ms before the isolated server had stopped it",
        -iso.margin
    );
    iso.to2.restore().unwrap();
    iso.to3.restore().unwrap();
    check_invariants(&mut iso.c);
}

/// Invariant 1 under a partial partition: node-1 (isolated, group taken over by
/// node-2) regains quorum through node-3 while it still cannot hear node-2. It must
/// not start a second copy of the group that node-2 runs.
#[test]
fn partial_heal_does_not_activate_a_second_copy() {
    if let Some(why) = nft::unavailable() {
        baton_tests::skip::skip("partial_heal_does_not_activate_a_second_copy", &why);
        return;
    }
    let _serial = serial();
    let Isolated {
        mut c,
        e2,
        s1,
        mut to3,
        to2,
        ..
    } = isolate_active_server("partial", 160);
    to3.restore().unwrap_or_else(|e| panic!("{e}"));
    c.wait_event("node-1", "BTN-1121", T, |e| e.seq > s1);
    hold_for(
        &c,
        Duration::from_millis(2000),
        "node-2 alone runs the group",
        |st| {
            let online = st.online_on(GROUP);
            if online == vec!["node-2".to_string()]
                && st
                    .agent("node-2")
                    .is_some_and(|a| a.group(GROUP).epoch == e2)
            {
                Ok(())
            } else {
                Err(format!("online on {online:?}"))
            }
        },
    );
    let ev1 = c.alerts("node-1").after(s1);
    assert_eq!(
        ev1.count("BTN-2101", |_| true),
        0,
        "node-1 must not activate while node-3 sees node-2 hold the group:\n{}",
        ev1.lines()
    );
    drop(to2);
    check_invariants(&mut c);
}

// ---------------------------------------------------------------------------------------
// 7. Operations: restart and re-adoption, move, stop/start, bad tokens, forged packets,
//    graceful stop (SIGTERM) with handover, `baton cluster stop`
// ---------------------------------------------------------------------------------------

#[test]
fn restart_readopts_then_move_stop_start_and_bad_input() {
    let _serial = serial();
    let mut c = Cluster::start(ClusterSpec::new("ops", 157));
    let (_, e1, _) = c.wait_owner(Some("node-1"), T);
    healthy_start(&c);
    c.watch();

    // --- Agent restart within the heartbeat timeout: re-adoption without a flap.
    let app = c.app_pid("node-1").expect("the app runs on node-1");
    let seqs: Vec<u64> = ["node-1", "node-2", "node-3"]
        .iter()
        .map(|s| c.alerts(s).last_seq())
        .collect();
    let t = Instant::now();
    c.kill("node-1", Signal::SIGKILL);
    c.respawn("node-1");
    c.wait_api("node-1");
    let restart_ms = t.elapsed().as_millis();
    eprintln!("agent restarted and answering after {restart_ms} ms");
    let ev1 = c.wait_event("node-1", "BTN-1020", T, |e| e.seq > seqs[0]);
    assert!(
        ev1.has("BTN-1020", |e| e.seq > seqs[0] && e.epoch == Some(e1)),
        "{}",
        ev1.lines()
    );
    let (_, e, st) = c.wait_owner(Some("node-1"), T);
    assert_eq!(e, e1, "re-adoption keeps the epoch");
    assert!(st.agent("node-1").unwrap().uptime_ms < 60_000);
    assert_eq!(c.app_pid("node-1"), Some(app), "the app was not restarted");
    let after = c.alerts("node-1").after(seqs[0]);
    for id in ["BTN-2101", "BTN-1021", "BTN-2103"] {
        assert_eq!(
            after.count(id, |_| true),
            0,
            "{id} after the restart:\n{}",
            after.lines()
        );
    }
    for (i, s) in ["node-2", "node-3"].iter().enumerate() {
        let ev = c.alerts(s).after(seqs[i + 1]);
        assert_eq!(
            ev.count("BTN-1102", |e| e.peer.as_deref() == Some("node-1")),
            0,
            "{s} must not declare node-1 down across a quick restart (the agent answered \
             again {restart_ms} ms after the kill; the heartbeat timeout is 1000 ms):\n{}",
            ev.lines()
        );
        assert_eq!(ev.count("BTN-2101", |_| true), 0, "{}", ev.lines());
    }
    assert_eq!(
        c.app_events()
            .iter()
            .filter(|l| l.starts_with("start"))
            .count(),
        1,
        "{:?}",
        c.app_events()
    );

    // --- Manual move.
    c.ctl(&["group", "move", GROUP, "--to", "node-3"])
        .ok("baton group move");
    let (_, e2, st) = c.wait_owner(Some("node-3"), T);
    assert_eq!(e2, e1 + 1);
    assert_eq!(st.agent("node-1").unwrap().local_state(GROUP), "offline");
    let ev1 = c.alerts("node-1");
    assert!(
        ev1.has("BTN-2104", |e| e.epoch == Some(e1)),
        "{}",
        ev1.lines()
    );
    let ev3 = c.alerts("node-3");
    assert!(
        ev3.has("BTN-2102", |e| e.epoch == Some(e2)),
        "{}",
        ev3.lines()
    );
    let moved = ["node-1", "node-2", "node-3"].iter().any(|s| {
        c.alerts(s).has("BTN-2109", |e| {
            e.fields.get("to").and_then(|v| v.as_str()) == Some("node-3")
        })
    });
    assert!(moved, "BTN-2109 records the move request");
    assert!(c.app_pid("node-1").is_none() && c.app_pid("node-3").is_some());
    // Unknown targets are refused with stable exit codes.
    let out = c.ctl(&["group", "move", GROUP, "--to", "node-9"]);
    assert_eq!(out.code, 5, "unknown server: {}{}", out.stdout, out.stderr);
    let out = c.ctl(&["group", "move", "nope", "--json"]);
    assert_eq!(out.code, 5, "{}{}", out.stdout, out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["error"]["code"], "unknown-group");

    // --- Stop and start.
    c.ctl(&["group", "stop", GROUP]).ok("baton group stop");
    let st = wait_until("the group is stopped everywhere", T, || {
        let st = c.try_status()?;
        let stopped = st.agents().len() == 3
            && st.agents().iter().all(|a| {
                let g = a.group(GROUP);
                g.state == "offline" && g.active_on.is_none() && g.desired == "stopped"
            });
        if stopped {
            Ok(st)
        } else {
            Err(st.summary(GROUP))
        }
    });
    assert!(st.online_on(GROUP).is_empty());
    assert!(["node-1", "node-2", "node-3"]
        .iter()
        .all(|s| c.app_pid(s).is_none()));
    assert!(
        c.claim().is_none(),
        "the claim is released: {:?}",
        c.claim()
    );
    assert!(c.alerts("node-3").has("BTN-2104", |e| e.epoch == Some(e2)));
    c.ctl(&["group", "start", GROUP]).ok("baton group start");
    let (_, e3, st) = c.wait_owner(Some("node-1"), T);
    assert_eq!(e3, e2 + 1);
    assert_eq!(st.group(GROUP).desired, "running");

    // --- API with a wrong or missing token: 401, JSON error `unauthorized`, no effect.
    let wrong = "0".repeat(64);
    for token in [Some(wrong.as_str()), None] {
        let r = c.api("node-2", "GET", "/v1/status", token, None);
        assert_eq!(r.status, 401, "{}", r.body);
        let v = r.json().unwrap();
        assert_eq!(v["error"]["code"], "unauthorized", "{}", r.body);
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    let r = c.api(
        "node-2",
        "POST",
        "/v1/commands",
        Some(&wrong),
        Some(r#"{"command":"cluster-suspend"}"#),
    );
    assert_eq!(r.status, 401);
    assert!(
        !c.status().agents().iter().any(|a| a.suspended),
        "a rejected command changes nothing"
    );
    c.wait_event("node-2", "BTN-4020", T, |_| true);
    let r = c.api("node-2", "GET", "/v1/status", Some(c.token()), None);
    assert_eq!(r.status, 200);
    let r = c.api(
        "node-2",
        "POST",
        "/v1/commands",
        Some(c.token()),
        Some("{\"command\":\"no-such\"}"),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json().unwrap()["error"]["code"], "bad-request");
    for (method, path, body, status, code) in [
        ("POST", "/v1/commands", Some("not json"), 400, "bad-request"),
        ("GET", "/v1/commands", None, 405, "method-not-allowed"),
        ("GET", "/v1/nowhere", None, 404, "not-found"),
        ("POST", "/v1/groups/nope/start", None, 404, "unknown-group"),
        ("POST", "/v1/groups/web/explode", None, 404, "not-found"),
        (
            "POST",
            "/v1/groups/web/move",
            Some(r#"{"too":"node-3"}"#),
            400,
            "bad-request",
        ),
        (
            "GET",
            "/v1/alerts?after=minus-one",
            None,
            400,
            "bad-request",
        ),
    ] {
        let r = c.api("node-2", method, path, Some(c.token()), body);
        assert_eq!(r.status, status, "{method} {path}: {}", r.body);
        assert_eq!(
            r.json().unwrap()["error"]["code"],
            code,
            "{method} {path}: {}",
            r.body
        );
    }
    assert!(
        !c.status().agents().iter().any(|a| a.suspended),
        "malformed requests change nothing"
    );
    // The CLI with another cluster's key: exit 6.
    let other_key = c.dir.join("other.key");
    c.cli(&["keygen", &other_key.to_string_lossy()])
        .ok("keygen");
    let text = std::fs::read_to_string(&c.config).unwrap();
    let wrong_cfg = c.dir.join("wrong-key.toml");
    std::fs::write(
        &wrong_cfg,
        text.replace("key_file = \"cluster.key\"", "key_file = \"other.key\""),
    )
    .unwrap();
    let out = c.cli(&["status", "--json", "-c", &wrong_cfg.to_string_lossy()]);
    assert_eq!(out.code, 6, "{}{}", out.stdout, out.stderr);

    // --- Forged and malformed heartbeats: counted, harmless.
    let before = c.status_via("node-2").local.packets_rejected;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ unix_ms();
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut malformed = 0;
    for i in 0..20 {
        let len = 1 + (rnd() % 1400) as usize;
        let mut b: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
        if b.starts_with(b"BTN") {
            b[0] = b'X';
        }
        c.send_udp("node-2", i % 2, &b);
        malformed += 1;
    }
    // Right magic and version, wrong MAC.
    let mut forged = 0;
    for i in 0..10 {
        let mut b = b"BTN1\x01".to_vec();
        b.extend((0..32).map(|_| rnd() as u8));
        b.extend_from_slice(
            br#"{"cluster":"it-ops","from":"node-1","path":0,"seq":99999999999999,"body":{}}"#,
        );
        c.send_udp("node-2", i % 2, &b);
        forged += 1;
    }
    let st = wait_until("node-2 counts the rejected datagrams", T, || {
        let st = c.try_status_via(Some("node-2"))?;
        let r = st.local.packets_rejected;
        if r.malformed >= before.malformed + malformed && r.forged >= before.forged + forged {
            Ok(st)
        } else {
            Err(format!("{r:?} (before {before:?})"))
        }
    });
    assert!(c.is_running("node-2"), "node-2 survived the garbage");
    let r = st.local.packets_rejected;
    assert_eq!(
        (r.replayed, r.wrong_cluster, r.unknown_sender, r.bad_path),
        (0, 0, 0, 0)
    );
    c.wait_event("node-2", "BTN-1110", T, |_| true);
    wait_all_up(&c);
    owner_is("node-1", e3)(&c.status()).unwrap();

    // --- Graceful stop (SIGTERM) of the active agent: it hands the group over.
    let s2 = c.alerts("node-2").last_seq();
    c.kill("node-1", Signal::SIGTERM);
    c.wait_exit("node-1", Duration::from_secs(15));
    let (_, e4, st) = c.wait_owner(Some("node-2"), T);
    assert_eq!(e4, e3 + 1);
    assert!(st.agent("node-1").is_none());
    assert!(
        c.app_pid("node-1").is_none(),
        "the stopping agent stopped its app"
    );
    c.restart("node-1");
    let ev1 = c.alerts("node-1");
    let stopping = ev1.iter().rposition(|e| e.id == "BTN-1002");
    let released = ev1
        .iter()
        .rposition(|e| e.id == "BTN-2104" && e.epoch == Some(e3));
    let stopped = ev1.iter().rposition(|e| e.id == "BTN-1003");
    let restarted = ev1.iter().rposition(|e| e.id == "BTN-1001");
    assert!(
        stopping.is_some() && stopping < released && released < stopped && stopped < restarted,
        "stop sequence in node-1's alert log (kept across the restart):\n{}",
        ev1.lines()
    );
    let ev2 = c.alerts("node-2").after(s2);
    let taken = ev2
        .iter()
        .find(|e| e.id == "BTN-2101" && e.epoch == Some(e4))
        .unwrap();
    assert!(
        ev1[released.unwrap()].time_ms <= taken.time_ms,
        "node-2 activated before node-1 had released the group:\n{}\n{}",
        ev1.lines(),
        ev2.lines()
    );
    let st = wait_all_up(&c);
    assert_eq!(st.sole_owner(GROUP).as_deref(), Some("node-2"));

    // --- `baton cluster stop`: every agent stops its groups and exits.
    c.ctl(&["cluster", "stop"]).ok("baton cluster stop");
    for s in ["node-1", "node-2", "node-3"] {
        c.wait_exit(s, Duration::from_secs(15));
    }
    assert!(
        c.claim().is_none(),
        "the claim is released: {:?}",
        c.claim()
    );
    assert!(["node-1", "node-2", "node-3"]
        .iter()
        .all(|s| c.app_pid(s).is_none()));
    let out = c.ctl(&["status"]);
    assert_eq!(
        out.code, 4,
        "no agent answers any more: {}{}",
        out.stdout, out.stderr
    );

    let rep = check_invariants(&mut c);
    assert_eq!(
        rep.owners(),
        vec!["node-1", "node-3", "node-1", "node-2"],
        "{}",
        rep.timeline()
    );
    assert_eq!(
        c.assert_claim_history(),
        vec![
            ("node-1".to_string(), e1),
            ("node-3".to_string(), e2),
            ("node-1".to_string(), e3),
            ("node-2".to_string(), e4),
        ]
    );
}
