//! Self-fencing and state writes with real agents (issue 9, must-fix 5 and 6).
//!
//! * A server that must fence itself resets at once: with `[quorum] on_loss = "reboot"`
//!   it writes `b` to `[agent] sysrq_trigger` — here a file in the test's directory (the
//!   harness configuration points every agent there, so no test can reach the real
//!   `/proc/sysrq-trigger`) — right when it loses quorum, and falls back to
//!   `force_reboot_command` when that write fails.
//! * An agent that crashes while its self-fence clock runs (quorum lost, a stop hanging)
//!   and is started again on the same boot escalates at its first step: the ownership
//!   record carries the boot id (`fencing_boot`), so the new run does not count a fresh
//!   fence deadline from its start.
//! * A slow state directory (`BATON_TEST_STATE_DELAY_MS`: every state write of the agent
//!   takes that long) does not delay heartbeats: no peer ever sees the writer down.
//! * A main loop that stalls (`BATON_TEST_STALL_FILE`: the loop blocks its thread for the
//!   time written in a file) is reported once by the stall watcher (BTN-1137) while it is
//!   still stalled, and the agent carries on when the loop runs again.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Tests measure the real time of real processes and sockets: they read the clock directly.
#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::time::{Duration, Instant};

use baton_tests::lab::unix_ms;
use baton_tests::{serial, wait_until, Cluster, ClusterSpec, Events, Signal, GROUP};

const T: Duration = Duration::from_secs(20);

fn wait_quorum_everywhere(c: &Cluster) {
    wait_until("every agent has quorum and sees every server up", T, || {
        let st = c.try_status()?;
        let ok = st.agents().len() == c.nodes.len()
            && st
                .agents()
                .iter()
                .all(|a| a.quorum && a.servers.iter().all(|s| s.up && s.ready));
        if ok {
            Ok(())
        } else {
            Err(st.summary(GROUP))
        }
    });
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[test]
fn quorum_loss_with_on_loss_reboot_resets_at_once_through_sysrq() {
    let _serial = serial();
    let mut spec = ClusterSpec::new("fence", 241);
    spec.extra_config = "[quorum]\non_loss = \"reboot\"\n".into();
    let mut c = Cluster::start(spec);
    let trigger = c.dir.join("sysrq-trigger");
    let commands = c.dir.join("fence-commands.log");
    // The harness's configuration never names the real trigger.
    let text = std::fs::read_to_string(&c.config).unwrap();
    assert!(
        text.contains(&format!("sysrq_trigger = \"{}\"", trigger.display())),
        "{text}"
    );
    assert!(!text.contains("/proc/sysrq-trigger"));
    c.wait_owner(Some("node-1"), T);
    wait_quorum_everywhere(&c);
    assert_eq!(read(&trigger), "", "nothing fenced while healthy");
    let s1 = c.alerts("node-1").last_seq();

    // node-1 loses both peers: it has no quorum and must be gone before they could
    // take over (here nobody can, but the rule does not know that).
    let killed = Instant::now();
    c.kill("node-2", Signal::SIGKILL);
    c.kill("node-3", Signal::SIGKILL);
    wait_until("node-1 writes `b` to the SysRq trigger", T, || {
        let t = read(&trigger);
        if t.is_empty() {
            Err("nothing written yet".to_string())
        } else {
            Ok(t)
        }
    });
    let took = killed.elapsed();
    assert_eq!(read(&trigger), "b", "one immediate reset request");
    // The orderly `reboot_command` and the force fallback did not run.
    assert_eq!(read(&commands), "", "no command ran");
    let ev = c.alerts("node-1").after(s1);
    let lost = ev
        .iter()
        .find(|e| e.id == "BTN-1120")
        .unwrap_or_else(|| panic!("no BTN-1120:\n{}", ev.lines()))
        .time_ms;
    let fence = ev
        .iter()
        .find(|e| e.id == "BTN-1005")
        .unwrap_or_else(|| panic!("no BTN-1005 before the reset:\n{}", ev.lines()));
    assert!(fence.message.contains("sysrq"), "{}", fence.message);
    // The reset is requested as quorum is lost, not after an orderly stop.
    assert!(
        fence.time_ms.saturating_sub(lost) < 500,
        "fence {} ms after the quorum loss:\n{}",
        fence.time_ms.saturating_sub(lost),
        ev.lines()
    );
    eprintln!(
        "SysRq `b` written {} ms after the peers were killed",
        took.as_millis()
    );
    assert!(!ev.has("BTN-1006", |_| true), "{}", ev.lines());

    // When the trigger cannot be written, the force command runs instead.
    std::fs::remove_file(&trigger).unwrap();
    c.restart("node-2");
    c.restart("node-3");
    wait_quorum_everywhere(&c);
    let s2 = c.alerts("node-1").last_seq();
    c.kill("node-2", Signal::SIGKILL);
    c.kill("node-3", Signal::SIGKILL);
    wait_until("node-1 runs the force reboot command", T, || {
        let t = read(&commands);
        if t.is_empty() {
            Err("no command yet".to_string())
        } else {
            Ok(t)
        }
    });
    assert_eq!(read(&commands), "force-reboot\n");
    assert!(!trigger.exists(), "the trigger file is never created");
    // The events may reach the alert log just after the command ran.
    let ev = wait_until("node-1 reports the fence (BTN-1005, BTN-1006)", T, || {
        let ev = c.alerts("node-1").after(s2);
        if ev.has("BTN-1005", |_| true) && ev.has("BTN-1006", |_| true) {
            Ok(ev)
        } else {
            Err(ev.lines())
        }
    });
    assert!(ev.has("BTN-1005", |_| true), "{}", ev.lines());
    assert!(
        ev.has("BTN-1006", |e| e.message.contains("sysrq-trigger")),
        "{}",
        ev.lines()
    );
}

#[test]
fn slow_state_writes_do_not_delay_heartbeats() {
    let _serial = serial();
    let mut spec = ClusterSpec::new("slowdisk", 242);
    // Every state write takes 3 s: three heartbeat timeouts.
    spec.env = vec![("BATON_TEST_STATE_DELAY_MS".into(), "3000".into())];
    let c = Cluster::start(spec);
    let started = Instant::now();
    // The activation waits for its epoch write, so it takes the delay at least.
    let (owner, epoch, _) = c.wait_owner(Some("node-1"), T);
    assert_eq!((owner.as_str(), epoch), ("node-1", 1));
    wait_quorum_everywhere(&c);
    // Keep watching while more writes are slow (the ownership record after the
    // activation): nobody ever sees a peer down.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let st = c.try_status();
        if let Ok(st) = st {
            for a in st.agents() {
                assert!(
                    a.servers.iter().all(|s| s.up),
                    "a server was seen down: {}",
                    st.summary(GROUP)
                );
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for n in ["node-1", "node-2", "node-3"] {
        let ev = c.alerts(n);
        assert_eq!(
            ev.count("BTN-1102", |_| true),
            0,
            "{n} saw a server down (heartbeats stalled by a state write):\n{}",
            ev.lines()
        );
    }
    // The first resource starts only after the ownership record issued with the
    // activation is written: BTN-2101 (activating) to BTN-2102 (activated) takes the delay.
    let ev = c.alerts("node-1");
    let at = |id: &str| {
        ev.iter()
            .find(|e| e.id == id)
            .map(|e| e.time_ms)
            .unwrap_or_else(|| panic!("no {id}:\n{}", ev.lines()))
    };
    let (activating, online) = (at("BTN-2101"), at("BTN-2102"));
    assert!(
        online.saturating_sub(activating) >= 3000,
        "the activation did not wait for its state writes ({} ms):\n{}",
        online.saturating_sub(activating),
        ev.lines()
    );
    eprintln!(
        "group online {} ms after it started activating, {} ms after start",
        online.saturating_sub(activating),
        started.elapsed().as_millis()
    );
}

#[test]
fn an_agent_restarted_while_its_fence_clock_runs_escalates_at_its_first_step() {
    let _serial = serial();
    let mut spec = ClusterSpec::new("fenceclock", 243);
    // A second group whose stop hangs; the escalation only reports (no reset request),
    // so the agent keeps running with its fence clock on.
    spec.extra_config = r#"
[quorum]
on_fence_timeout = "none"

[[group]]
name = "slow"
servers = ["node-1", "node-2", "node-3"]

[[group.resource]]
kind = "exec"
name = "slowstop"
start = "true"
stop = "sleep 30"
deactivate_timeout = "20s"
"#
    .into();
    let mut c = Cluster::start(spec);
    c.wait_group_owner("slow", Some("node-1"), T);
    wait_quorum_everywhere(&c);
    let ownership = c.nodes[0].state_dir.join("ownership.json");
    assert!(
        !read(&ownership).contains("fencing_boot"),
        "{}",
        read(&ownership)
    );
    let s1 = c.alerts("node-1").last_seq();

    // node-1 loses quorum holding "slow", whose stop hangs: its fence clock runs, the
    // record says so (with this boot's id), and the deadline passes (reported only).
    c.kill("node-2", Signal::SIGKILL);
    c.kill("node-3", Signal::SIGKILL);
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .trim()
        .to_string();
    wait_until("node-1 records its running fence clock", T, || {
        let o = read(&ownership);
        let v: serde_json::Value = serde_json::from_str(&o).unwrap_or_default();
        if v["fencing_boot"].as_str() == Some(boot_id.as_str()) {
            Ok(())
        } else {
            Err(o)
        }
    });
    wait_until(
        "node-1 misses the fence deadline (reported only)",
        T,
        || {
            let ev = c.alerts("node-1").after(s1);
            if ev.has("BTN-1135", |e| e.message.contains("only reporting")) {
                Ok(())
            } else {
                Err(ev.lines())
            }
        },
    );

    // The agent crashes and comes back on the same boot: it escalates at its first step
    // instead of counting a new deadline from its start.
    let s2 = c.alerts("node-1").last_seq();
    c.kill("node-1", Signal::SIGKILL);
    let started = Instant::now();
    c.restart("node-1");
    let ev = wait_until("the restarted node-1 escalates", T, || {
        let ev = c.alerts("node-1").after(s2);
        if ev.has("BTN-1135", |_| true) {
            Ok(ev)
        } else {
            Err(ev.lines())
        }
    });
    let fence = ev.iter().find(|e| e.id == "BTN-1135").unwrap();
    assert!(
        fence.message.contains("before this agent restarted"),
        "{}",
        fence.message
    );
    eprintln!(
        "BTN-1135 {} ms after the restart was requested",
        started.elapsed().as_millis()
    );

    // Quorum back: the record loses the flag.
    c.restart("node-2");
    c.restart("node-3");
    wait_quorum_everywhere(&c);
    wait_until("node-1's record no longer says fencing", T, || {
        let o = read(&ownership);
        if o.contains("fencing_boot") {
            Err(o)
        } else {
            Ok(())
        }
    });
}

#[test]
fn a_stalled_main_loop_is_reported_by_the_stall_watcher_while_it_lasts() {
    let _serial = serial();
    let stall = std::env::temp_dir().join(format!("baton-test-stall-{}", std::process::id()));
    let mut spec = ClusterSpec::new("stall", 244);
    spec.env = vec![("BATON_TEST_STALL_FILE".into(), stall.display().to_string())];
    let c = Cluster::start(spec);
    c.wait_owner(Some("node-1"), T);
    wait_quorum_everywhere(&c);
    assert_eq!(c.alerts("node-2").count("BTN-1137", |_| true), 0);
    // node-2 (which holds nothing) stalls its loop for 3 s. The file appears whole
    // (renamed into place), so the agent never reads it half written.
    let file = format!("{}.node-2", stall.display());
    let partial = format!("{file}.tmp");
    std::fs::write(&partial, "3000").unwrap();
    let written = unix_ms();
    std::fs::rename(&partial, &file).unwrap();
    wait_until("node-2's loop took the stall file", T, || {
        if Path::new(&file).exists() {
            Err("still there".to_string())
        } else {
            Ok(())
        }
    });
    // Its API answers again once the loop runs: then the report is there.
    wait_until("node-2 reports its stalled loop", T, || {
        let ev = c.try_alerts("node-2")?;
        if ev.has("BTN-1137", |_| true) {
            Ok(())
        } else {
            Err(ev.lines())
        }
    });
    wait_quorum_everywhere(&c);
    let ev = c.alerts("node-2");
    let stalls = ev.with_id("BTN-1137");
    assert_eq!(stalls.len(), 1, "one stall, one report:\n{}", ev.lines());
    let e = stalls[0];
    let limit: u64 = e
        .message
        .split("(limit ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no limit in {:?}", e.message));
    let stalled = e.fields["stalled_ms"].as_u64().unwrap();
    assert!(stalled > limit, "{stalled} ms stalled, limit {limit} ms");
    // Raised by the watcher while the loop was still blocked (the loop itself could
    // only have said so after the 3 s), and not before the limit had passed.
    assert!(
        e.time_ms >= written + limit && e.time_ms < written + 3_000,
        "reported {} ms after the stall file was written (limit {limit} ms)",
        e.time_ms.saturating_sub(written)
    );
    for n in ["node-1", "node-3"] {
        assert_eq!(c.alerts(n).count("BTN-1137", |_| true), 0, "{n}");
    }
    // The group never moved.
    let (owner, epoch, _) = c.wait_owner(Some("node-1"), T);
    assert_eq!((owner.as_str(), epoch), ("node-1", 1));
    eprintln!(
        "stall reported {} ms after the file was written, {stalled} ms into it (limit {limit} ms)",
        e.time_ms.saturating_sub(written)
    );
}
