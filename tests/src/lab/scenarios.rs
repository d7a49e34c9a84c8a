//! The ten fault scenarios of the lab (modelled on Pacemaker's CTS, crmsh's
//! crash_test and EXPRESSCLUSTER's network partition test). Each builds a fresh lab,
//! injects its fault, checks what the scenario expects, and then, over the whole run,
//! that the group was never active on two servers at once:
//!
//! * **status**: every answer "online since `s` ms" proves the server was online during
//!   `[received - s, sent]`; intervals of two servers must not overlap;
//! * **events**: from `BTN-2101` (activating) or `BTN-1020` (re-adopted) to `BTN-2104`
//!   (deactivated), `BTN-2105` (activation failed) or `BTN-1021` (cleaned up), stamped by
//!   the agents with the host's clock; intervals of two servers must not overlap;
//! * **addresses**: the VIP, sampled on every server; two servers must never both have
//!   held it between two samples each.
//!
//! A server frozen by SIGSTOP cannot act: its frozen time is not counted for the status
//! check, and its resources are not counted until it has deactivated after resuming
//! (scenario 2 checks that it does, and that it never reports the group online after
//! resuming while another server runs it).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::observer::{ids, overlaps, Ms, Observed};
use super::{server, Lab, LabSpec, GROUP, VIP};
use crate::model::Event;

mod mirror;

/// Options of a run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Servers (scenarios 3 and 7 always use 2 plus the witness).
    pub servers: Option<usize>,
    /// Fault cycles in one lab (scenarios 1, 2, 5, 8, 9, 10).
    pub repeat: usize,
    /// How long the loss/jitter soak (scenario 6) lasts.
    pub duration: Duration,
    /// Add the witness to the scenarios that do not need it.
    pub witness: bool,
    /// Keep the lab's directory (logs, configuration) afterwards.
    pub keep: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            servers: None,
            repeat: 1,
            duration: Duration::from_secs(30),
            witness: false,
            keep: false,
        }
    }
}

/// The scenarios, by number.
pub const SCENARIOS: [(u8, &str); 18] = [
    (1, "SIGKILL the active agent"),
    (2, "pause the active agent past the timeout, then resume it"),
    (
        3,
        "cut every heartbeat path between two servers, witness present",
    ),
    (4, "asymmetric partition"),
    (5, "cut one of two paths"),
    (6, "20 % loss and 50 ms jitter on every path"),
    (7, "witness lost, then the peer lost"),
    (8, "restart every agent at once"),
    (9, "rolling restart"),
    (10, "partition heals"),
    (
        11,
        "SIGKILL the active server of a group with a sync mirror disk under writes",
    ),
    (
        12,
        "isolate the active server of a group with a sync mirror disk under writes",
    ),
    (
        13,
        "cut the mirror link under writes, heal: differential resync",
    ),
    (
        14,
        "fail over, write on the new primary, the old one returns: reverse resync",
    ),
    (
        15,
        "a stale mirror side refuses, is forced; both sides wrote: split brain",
    ),
    (16, "wrong key, random bytes and HTTP on the mirror port"),
    (17, "restart the mirror primary's agent under writes"),
    (
        18,
        "the mirror's secondary cut off, the primary writes alone and dies: the stale side refuses",
    ),
];

/// The last scenario's number.
pub const LAST: u8 = 18;

pub fn title(n: u8) -> &'static str {
    if n == 0 {
        return "observer self-check: a second VIP holder is caught";
    }
    SCENARIOS
        .iter()
        .find(|(k, _)| *k == n)
        .map_or("unknown scenario", |(_, t)| t)
}

/// What a scenario found.
#[derive(Debug, Clone, Default)]
pub struct ScenarioReport {
    pub number: u8,
    pub title: String,
    /// Why it did not run (not root, a tool or `baton witness` missing).
    pub skipped: Option<String>,
    pub failures: Vec<String>,
    /// Failover times (fault to `BTN-2102` on the new server), milliseconds.
    pub failover_ms: Vec<f64>,
    /// Measurements and observations worth printing.
    pub facts: Vec<String>,
    /// Lab notes, status changes, events and address changes, in time order.
    pub timeline: Vec<(Ms, String)>,
    pub dir: Option<PathBuf>,
    /// Agent log tails (on failure).
    pub logs: String,
}

impl ScenarioReport {
    pub fn passed(&self) -> bool {
        self.skipped.is_none() && self.failures.is_empty()
    }

    fn fail(&mut self, why: impl Into<String>) {
        self.failures.push(why.into());
    }

    fn fact(&mut self, what: impl Into<String>) {
        self.facts.push(what.into());
    }

    pub fn timeline_text(&self) -> String {
        self.timeline
            .iter()
            .map(|(t, w)| format!("  {:>9.3} s  {w}", t / 1000.0))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// p-th percentile (nearest rank) of `v`.
pub fn percentile(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s.get(rank.min(s.len()) - 1).copied()
}

impl fmt::Display for ScenarioReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = match (&self.skipped, self.failures.is_empty()) {
            (Some(why), _) => format!("SKIPPED: {why}"),
            (None, true) => "PASS".into(),
            (None, false) => "FAIL".into(),
        };
        writeln!(f, "scenario {} ({}): {verdict}", self.number, self.title)?;
        if !self.failover_ms.is_empty() {
            let v = &self.failover_ms;
            writeln!(
                f,
                "  failover times (fault -> BTN-2102 on the new server), {} run(s): p50 {:.0} ms, p99 {:.0} ms, min {:.0} ms, max {:.0} ms",
                v.len(),
                percentile(v, 50.0).unwrap_or(0.0),
                percentile(v, 99.0).unwrap_or(0.0),
                v.iter().copied().fold(f64::INFINITY, f64::min),
                v.iter().copied().fold(0.0, f64::max),
            )?;
        }
        for x in &self.facts {
            writeln!(f, "  - {x}")?;
        }
        for x in &self.failures {
            writeln!(f, "  FAILURE: {x}")?;
        }
        if let Some(d) = &self.dir {
            writeln!(f, "  lab directory kept: {}", d.display())?;
        }
        if !self.timeline.is_empty() {
            writeln!(f, "  timeline:\n{}", self.timeline_text())?;
        }
        if !self.failures.is_empty() && !self.logs.is_empty() {
            writeln!(f, "{}", self.logs)?;
        }
        Ok(())
    }
}

/// The lab a scenario runs in.
fn spec_for(n: u8, o: &Options) -> LabSpec {
    let mut s = LabSpec::new(&format!("s{n}"));
    match n {
        3 | 7 => {
            s.servers = 2;
            s.witness = true;
        }
        11..=18 => {
            // Two servers hold the mirror, the third votes.
            s.servers = 3;
            s.witness = o.witness;
            s.mirror = Some("sync".into());
        }
        _ => {
            s.servers = o.servers.unwrap_or(3);
            s.witness = o.witness;
        }
    }
    s
}

/// Run scenario `n`.
pub fn run(n: u8, o: &Options) -> ScenarioReport {
    let mut r = ScenarioReport {
        number: n,
        title: title(n).into(),
        ..ScenarioReport::default()
    };
    if !(1..=LAST).contains(&n) {
        r.fail(format!("there is no scenario {n} (1 to {LAST})"));
        return r;
    }
    let spec = spec_for(n, o);
    let mut lab = match Lab::build(spec) {
        Ok(l) => l,
        // Only a machine that lacks what the lab needs is a skip; any other set-up
        // error (an `ip` command, `baton keygen`, a config `config check` refuses) fails.
        Err(why) => {
            match super::unavailable() {
                Some(lacks) => r.skipped = Some(lacks),
                None => r.fail(format!("lab set-up failed: {why}")),
            }
            return r;
        }
    };
    let body = lab
        .observe()
        .and_then(|()| start(&mut lab))
        .and_then(|()| match n {
            1 => s1_kill(&mut lab, o, &mut r),
            2 => s2_pause(&mut lab, o, &mut r),
            3 => s3_cut_all_with_witness(&mut lab, &mut r),
            4 => s4_asymmetric(&mut lab, &mut r),
            5 => s5_cut_one_path(&mut lab, o, &mut r),
            6 => s6_loss_jitter(&mut lab, o, &mut r),
            7 => s7_witness_then_peer(&mut lab, &mut r),
            8 => s8_restart_all(&mut lab, o, &mut r),
            9 => s9_rolling(&mut lab, o, &mut r),
            10 => s10_heal(&mut lab, o, &mut r),
            11 => mirror::s11_kill(&mut lab, o, &mut r),
            12 => mirror::s12_isolated(&mut lab, o, &mut r),
            13 => mirror::s13_link_cut(&mut lab, o, &mut r),
            14 => mirror::s14_reverse_resync(&mut lab, o, &mut r),
            15 => mirror::s15_stale_and_split_brain(&mut lab, &mut r),
            16 => mirror::s16_refused_peers(&mut lab, &mut r),
            17 => mirror::s17_agent_restart(&mut lab, o, &mut r),
            _ => mirror::s18_stale_after_double_failure(&mut lab, &mut r),
        });
    if let Err(e) = body {
        r.fail(format!("scenario aborted: {e}"));
    }
    finish(&mut lab, &mut r);
    if o.keep || !r.failures.is_empty() && std::env::var_os("BATON_LAB_KEEP").is_some() {
        r.dir = Some(lab.keep_dir());
    }
    r
}

/// Start the witness (if any) and every agent; wait for a first owner.
fn start(lab: &mut Lab) -> Result<(), String> {
    if lab.spec.witness {
        lab.start_witness()?;
    }
    lab.start_all()?;
    lab.note(&format!(
        "{} agents started (heartbeat {} ms / timeout {} ms{})",
        lab.spec.servers,
        lab.spec.interval_ms,
        lab.spec.timeout_ms,
        if lab.spec.witness { ", witness" } else { "" }
    ));
    let (o, e) = lab.wait_owner(None, Duration::from_secs(30))?;
    lab.note(&format!("{GROUP} online on {} (epoch {e})", server(o)));
    lab.wait_converged(Duration::from_secs(20))?;
    Ok(())
}

/// The whole-run checks: never active on two servers, by status, events and address.
fn finish(lab: &mut Lab, r: &mut ScenarioReport) {
    let end = lab.now();
    let obs = lab.stop_observer();
    let statuses: usize = obs.logs.iter().map(|l| l.status.len()).sum();
    let samples: u64 = obs.logs.iter().map(|l| l.samples).sum();
    r.fact(format!(
        "observer: {statuses} status answers, {samples} address samples, {} events",
        obs.logs.iter().map(|l| l.events.len()).sum::<usize>()
    ));
    if statuses < 10 {
        r.fail(format!("the observer got only {statuses} status answers"));
    }
    let ex = lab.exempt.clone();
    if lab.spec.mirror.is_some() {
        // The mirror check must have seen something, or it proves nothing.
        let seen: Vec<String> = obs
            .mirror_intervals(&ex)
            .iter()
            .filter(|(_, iv)| !iv.is_empty())
            .map(|(s, iv)| {
                format!(
                    "{s} {:.1} s",
                    iv.iter().map(|(lo, hi)| hi - lo).sum::<f64>() / 1000.0
                )
            })
            .collect();
        if seen.is_empty() {
            r.fail("the observer never saw the mirror writable on any server");
        } else {
            r.fact(format!("mirror writable (observed): {}", seen.join(", ")));
        }
    }
    for (what, per) in [
        ("status", obs.status_intervals(&ex)),
        (
            "events",
            obs.event_intervals(GROUP, lab.unix0, end, &lab.crashes, &ex),
        ),
        ("VIP", obs.addr_intervals(VIP, &ex)),
        ("mirror", obs.mirror_intervals(&ex)),
    ] {
        for (a, b, lo, hi) in overlaps(&per) {
            r.fail(format!(
                "DOUBLE ACTIVE ({what}): {a} and {b} both active during [{:.3} s, {:.3} s] ({:.0} ms)",
                lo / 1000.0,
                hi / 1000.0,
                hi - lo
            ));
        }
    }
    r.timeline = timeline(lab, &obs);
    if !r.failures.is_empty() {
        r.logs = lab.log_tails(40);
    }
}

fn timeline(lab: &Lab, obs: &Observed) -> Vec<(Ms, String)> {
    let mut t = lab.notes();
    t.extend(obs.status_changes());
    t.extend(obs.addr_changes(VIP, "VIP"));
    for (at, e) in obs.all_events(lab.unix0) {
        // Resource-level events add little to the picture.
        if e.id.starts_with("BTN-22") {
            continue;
        }
        t.push((at, format!("event   {} {} {}", e.server, e.id, e.message)));
    }
    t.sort_by(|a, b| a.0.total_cmp(&b.0));
    t
}

/// Events of server `i` with id `id` after lab time `after`.
fn events_after(lab: &Lab, i: usize, id: &str, after: Ms) -> Vec<Event> {
    lab.events(i)
        .into_iter()
        .filter(|e| e.id == id && e.group.as_deref().is_none_or(|g| g == GROUP))
        .filter(|e| lab.event_ms(e) >= after)
        .collect()
}

/// Wait until server `i` raised event `id` after `after`; its lab time.
fn wait_event(lab: &Lab, i: usize, id: &str, after: Ms, timeout: Duration) -> Result<Ms, String> {
    lab.wait(&format!("{} raises {id}", server(i)), timeout, |lab| {
        events_after(lab, i, id, after)
            .first()
            .map(|e| lab.event_ms(e))
            .ok_or_else(|| {
                lab.events(i)
                    .iter()
                    .rev()
                    .take(6)
                    .map(|e| format!("{} {}", e.id, e.message))
                    .collect::<Vec<_>>()
                    .join(" | ")
            })
    })
}

/// `BTN-2107`/`BTN-2101` events raised by any server after `after`.
fn activations_after(lab: &Lab, after: Ms) -> Vec<String> {
    (0..lab.spec.servers)
        .flat_map(|i| {
            events_after(lab, i, ids::ACTIVATING, after)
                .into_iter()
                .chain(events_after(lab, i, ids::FAILOVER, after))
                .map(move |e| format!("{} {} {}", server(i), e.id, e.message))
        })
        .collect()
}

fn timeout_of(lab: &Lab, factor: u64, extra_ms: u64) -> Duration {
    Duration::from_millis(lab.spec.timeout_ms * factor + extra_ms)
}

/// Scenario 1: the active server dies (agent SIGKILLed, its app and VIP gone with it);
/// the group fails over to another server with a higher epoch; the dead server comes
/// back and the group stays where it is (no failback).
fn s1_kill(lab: &mut Lab, o: &Options, r: &mut ScenarioReport) -> Result<(), String> {
    for round in 0..o.repeat.max(1) {
        let (x, e) = lab.wait_owner(None, Duration::from_secs(20))?;
        lab.wait_converged(Duration::from_secs(20))?;
        let t = lab.crash(x)?;
        lab.note(&format!(
            "round {}: {} crashed (agent SIGKILLed, app and VIP removed)",
            round + 1,
            server(x)
        ));
        let (y, e2) = lab.wait_owner(Some(x), Duration::from_secs(20))?;
        if e2 <= e {
            r.fail(format!("epoch did not grow on failover: {e} -> {e2}"));
        }
        let at = wait_event(lab, y, ids::ACTIVATED, t, Duration::from_secs(5))?;
        r.failover_ms.push(at - t);
        lab.note(&format!(
            "{GROUP} online on {} (epoch {e2}), {:.0} ms after the crash",
            server(y),
            at - t
        ));
        lab.start_agent(x)?;
        lab.wait_converged(Duration::from_secs(20))?;
        lab.hold(timeout_of(lab, 1, 500), "the group must stay where it is");
        match lab.sole_owner() {
            Ok((z, e3)) if z == y && e3 == e2 => {}
            other => r.fail(format!(
                "after {} came back the group should stay on {} epoch {e2}: {other:?}",
                server(x),
                server(y)
            )),
        }
    }
    Ok(())
}

/// Scenario 2: the active agent is frozen (SIGSTOP) longer than the heartbeat timeout;
/// the group moves; when the agent resumes (SIGCONT) it must deactivate without ever
/// reporting the group online next to the new holder, and say so with events.
fn s2_pause(lab: &mut Lab, o: &Options, r: &mut ScenarioReport) -> Result<(), String> {
    for round in 0..o.repeat.max(1) {
        let (x, e) = lab.wait_owner(None, Duration::from_secs(20))?;
        lab.wait_converged(Duration::from_secs(20))?;
        let t_stop = lab.now();
        lab.signal(x, Signal::SIGSTOP)?;
        lab.note(&format!(
            "round {}: {} agent paused (SIGSTOP)",
            round + 1,
            server(x)
        ));
        let moved = lab.wait(
            "another server takes the group",
            Duration::from_secs(20),
            |lab| {
                let on = lab.online();
                match on.as_slice() {
                    [y] if *y != x => Ok(*y),
                    _ => Err(lab.summary()),
                }
            },
        );
        // Paused for at least three heartbeat timeouts in any case.
        let min_pause = Duration::from_millis(3 * lab.spec.timeout_ms);
        let paused = Duration::from_secs_f64((lab.now() - t_stop).max(0.0) / 1000.0);
        if paused < min_pause {
            std::thread::sleep(min_pause - paused);
        }
        let t_cont = lab.now();
        lab.signal(x, Signal::SIGCONT)?;
        lab.note(&format!(
            "{} agent resumed (SIGCONT) after {:.1} s",
            server(x),
            (t_cont - t_stop) / 1000.0
        ));
        lab.exempt
            .status
            .entry(x)
            .or_default()
            .push((t_stop, t_cont));
        let y = match moved {
            Ok(y) => y,
            Err(e) => {
                lab.exempt
                    .resources
                    .entry(x)
                    .or_default()
                    .push((t_stop, t_cont));
                return Err(e);
            }
        };
        let deact = wait_event(lab, x, ids::DEACTIVATED, t_cont, Duration::from_secs(10));
        let t_deact = deact.as_ref().map_or(lab.now(), |t| *t);
        lab.exempt
            .resources
            .entry(x)
            .or_default()
            .push((t_stop, t_deact));
        match deact {
            Ok(t) => {
                lab.note(&format!(
                    "{} deactivated {:.0} ms after resuming",
                    server(x),
                    t - t_cont
                ));
                r.fact(format!(
                    "round {}: resumed {} deactivated {:.0} ms after SIGCONT",
                    round + 1,
                    server(x),
                    t - t_cont
                ));
            }
            Err(e) => r.fail(format!("the resumed server did not deactivate: {e}")),
        }
        let (z, e2) = lab.wait_owner(Some(x), Duration::from_secs(20))?;
        if z != y || e2 <= e {
            r.fail(format!(
                "after the resume the group should stay on {} with an epoch above {e}: on {} epoch {e2}",
                server(y),
                server(z)
            ));
        }
        let again = events_after(lab, x, ids::ACTIVATING, t_cont);
        if !again.is_empty() {
            r.fail(format!(
                "the resumed server started an activation: {:?}",
                again.iter().map(|e| &e.message).collect::<Vec<_>>()
            ));
        }
        let said: Vec<String> = lab
            .events(x)
            .into_iter()
            .filter(|ev| lab.event_ms(ev) >= t_cont)
            .map(|ev| format!("{} {}", ev.id, ev.message))
            .collect();
        r.fact(format!(
            "round {}: events of the resumed server: {}",
            round + 1,
            said.join(" | ")
        ));
        if round + 1 < o.repeat {
            lab.wait_converged(Duration::from_secs(20))?;
        }
    }
    Ok(())
}

/// Scenario 3: two servers and the witness; every interconnect path between the
/// servers is cut (both still reach the witness). Exactly one side must run the group.
fn s3_cut_all_with_witness(lab: &mut Lab, r: &mut ScenarioReport) -> Result<(), String> {
    let (x, _) = lab.wait_owner(None, Duration::from_secs(20))?;
    lab.partition(&[vec![0], vec![1]])?;
    lab.hold(timeout_of(lab, 3, 2000), "let both sides decide");
    let settled = lab.wait(
        "exactly one side runs the group",
        Duration::from_secs(10),
        |lab| {
            let on = lab.online();
            if on.len() == 1 && (0..2).all(|i| lab.status(i).is_some()) {
                Ok(on[0])
            } else {
                Err(lab.summary())
            }
        },
    );
    match settled {
        Ok(s) => {
            r.fact(format!(
                "during the partition the group ran on {} (before: {})",
                server(s),
                server(x)
            ));
            lab.hold(Duration::from_secs(2), "the decision must hold");
            if lab.online() != vec![s] {
                r.fail(format!("the decision did not hold: {}", lab.summary()));
            }
        }
        Err(e) => r.fail(e),
    }
    lab.heal()?;
    lab.wait_converged(Duration::from_secs(20))?;
    let (z, _) = lab.wait_owner(None, Duration::from_secs(20))?;
    lab.note(&format!("after the heal {GROUP} runs on {}", server(z)));
    Ok(())
}

/// Scenario 4: what the active server sends on the interconnects is lost; it still
/// hears its peers. At most one server may run the group, during and after.
fn s4_asymmetric(lab: &mut Lab, r: &mut ScenarioReport) -> Result<(), String> {
    let (x, _) = lab.wait_owner(None, Duration::from_secs(20))?;
    let t = lab.now();
    lab.mute(x)?;
    lab.hold(timeout_of(lab, 3, 2000), "asymmetric partition");
    let on = lab.online();
    r.fact(format!(
        "during the asymmetric partition: online on {:?}; {}",
        on.iter().map(|i| server(*i)).collect::<Vec<_>>(),
        lab.summary()
    ));
    if on.len() > 1 {
        r.fail(format!("two servers online: {}", lab.summary()));
    }
    let acts = activations_after(lab, t);
    r.fact(format!("activations during the partition: {acts:?}"));
    lab.heal()?;
    lab.wait_converged(Duration::from_secs(20))?;
    let (z, _) = lab.wait_owner(None, Duration::from_secs(20))?;
    lab.note(&format!("after the heal {GROUP} runs on {}", server(z)));
    Ok(())
}

/// Scenario 5: one of the two interconnect paths of the active server is cut: the
/// path is reported down and nothing fails over.
fn s5_cut_one_path(lab: &mut Lab, o: &Options, r: &mut ScenarioReport) -> Result<(), String> {
    for round in 0..o.repeat.max(1) {
        let (x, e) = lab.wait_owner(None, Duration::from_secs(20))?;
        lab.wait_converged(Duration::from_secs(20))?;
        let t = lab.now();
        lab.cut_path(x, "b")?;
        lab.hold(timeout_of(lab, 3, 2000), "one path left");
        let peer = (x + 1) % lab.spec.servers;
        match wait_event(lab, peer, ids::PATH_DOWN, t, Duration::from_secs(5)) {
            Ok(_) => {}
            Err(e) => r.fail(format!("no path-down event: {e}")),
        }
        let acts = activations_after(lab, t);
        if !acts.is_empty() {
            r.fail(format!(
                "round {}: failover with one path left: {acts:?}",
                round + 1
            ));
        }
        match lab.sole_owner() {
            Ok((z, e2)) if z == x && e2 == e => {}
            other => r.fail(format!(
                "the group should stay on {} epoch {e}: {other:?}",
                server(x)
            )),
        }
        lab.heal()?;
        if let Err(e) = wait_event(lab, peer, ids::PATH_UP, t, Duration::from_secs(10)) {
            r.fail(format!("no path-up event after the heal: {e}"));
        }
    }
    Ok(())
}

/// Scenario 6: 20 % loss and 50 ms ± 50 ms delay on every interconnect of every server,
/// at Baton's default heartbeat (200 ms / 1 s): no failover.
fn s6_loss_jitter(lab: &mut Lab, o: &Options, r: &mut ScenarioReport) -> Result<(), String> {
    let (x, e) = lab.wait_owner(None, Duration::from_secs(20))?;
    let t = lab.now();
    lab.netem_all(20, 50, 50)?;
    lab.hold(o.duration, "loss and jitter");
    lab.netem_clear()?;
    lab.wait_converged(Duration::from_secs(20))?;
    let acts = activations_after(lab, t);
    let count = |id: &str| -> usize {
        (0..lab.spec.servers)
            .map(|i| events_after(lab, i, id, t).len())
            .sum()
    };
    r.fact(format!(
        "{:.0} s of 20% loss + 50±50 ms delay: {} activation/failover events, {} server-down, {} path-down events",
        o.duration.as_secs_f64(),
        acts.len(),
        count(ids::SERVER_DOWN),
        count(ids::PATH_DOWN)
    ));
    if !acts.is_empty() {
        r.fail(format!("false failover under loss and jitter: {acts:?}"));
    }
    match lab.sole_owner() {
        Ok((z, e2)) if z == x && e2 == e => {}
        other => r.fail(format!(
            "the group should stay on {} epoch {e}: {other:?}",
            server(x)
        )),
    }
    Ok(())
}

/// Scenario 7: two servers and the witness; the witness is lost, then the active
/// server. The survivor holds one vote of three: it must not activate, and must say
/// why. When the witness returns, the survivor has quorum again and takes the group.
fn s7_witness_then_peer(lab: &mut Lab, r: &mut ScenarioReport) -> Result<(), String> {
    let (x, e) = lab.wait_owner(None, Duration::from_secs(20))?;
    let y = 1 - x;
    lab.kill_witness();
    lab.note("witness killed");
    lab.hold(
        timeout_of(lab, 2, 0),
        "the servers notice the witness is gone",
    );
    if lab.online() != vec![x] {
        r.fail(format!(
            "losing only the witness changed the placement: {}",
            lab.summary()
        ));
    }
    let t = lab.crash(x)?;
    lab.note(&format!("{} crashed", server(x)));
    lab.hold(timeout_of(lab, 3, 3000), "the survivor must stay passive");
    if lab.online().contains(&y) || !events_after(lab, y, ids::ACTIVATING, t).is_empty() {
        r.fail(format!(
            "the survivor {} activated without quorum: {}",
            server(y),
            lab.summary()
        ));
    }
    match lab.status(y) {
        Some(s) if !s.quorum => {}
        Some(_) => r.fail(format!("the survivor reports quorum: {}", lab.summary())),
        None => r.fail("the survivor does not answer".to_string()),
    }
    let why: Vec<String> = lab
        .events(y)
        .into_iter()
        .filter(|ev| lab.event_ms(ev) >= t - 2.0 * lab.spec.timeout_ms as f64)
        .filter(|ev| ev.id == ids::NO_QUORUM || ev.id == ids::NO_SERVER)
        .map(|ev| format!("{} {}", ev.id, ev.message))
        .collect();
    if why.is_empty() {
        r.fail(format!(
            "the survivor did not say why it stays passive (no {} or {} event)",
            ids::NO_QUORUM,
            ids::NO_SERVER
        ));
    } else {
        r.fact(format!("the survivor says: {}", why.join(" | ")));
    }
    lab.start_witness()?;
    lab.note("witness restarted");
    let (z, e2) = lab.wait_owner(None, Duration::from_secs(20))?;
    if z != y || e2 <= e {
        r.fail(format!(
            "with the witness back the survivor should take the group: on {} epoch {e2}",
            server(z)
        ));
    }
    Ok(())
}

/// Scenario 8: every agent is killed at once and started again at once (resources
/// left in place), then every agent is stopped at once and started again. Each time
/// exactly one server runs the group afterwards, and the VIP and the app exist once.
fn s8_restart_all(lab: &mut Lab, o: &Options, r: &mut ScenarioReport) -> Result<(), String> {
    let n = lab.spec.servers;
    for round in 0..o.repeat.max(1) {
        for (how, sig) in [("SIGKILL", Signal::SIGKILL), ("SIGTERM", Signal::SIGTERM)] {
            lab.wait_owner(None, Duration::from_secs(20))?;
            lab.wait_converged(Duration::from_secs(20))?;
            for i in 0..n {
                lab.signal(i, sig)?;
            }
            lab.note(&format!("round {}: every agent got {how}", round + 1));
            if sig == Signal::SIGTERM {
                for i in 0..n {
                    lab.wait_exited(i, Duration::from_secs(15))?;
                }
            }
            for i in 0..n {
                lab.start_agent(i)?;
            }
            lab.note("every agent started again");
            let (x, e) = lab.wait_owner(None, Duration::from_secs(30))?;
            lab.wait_converged(Duration::from_secs(20))?;
            lab.hold(timeout_of(lab, 1, 500), "settle");
            let holders = lab.holders(VIP)?;
            let apps: Vec<usize> = (0..n).filter(|i| app_alive(lab, *i)).collect();
            r.fact(format!(
                "after {how} of all: {GROUP} on {} epoch {e}, VIP on {:?}, app on {:?}",
                server(x),
                holders.iter().map(|i| server(*i)).collect::<Vec<_>>(),
                apps.iter().map(|i| server(*i)).collect::<Vec<_>>()
            ));
            if holders != vec![x] || apps != vec![x] {
                r.fail(format!(
                    "after {how} of all the VIP and the app should be on {} alone: VIP {holders:?}, app {apps:?}",
                    server(x)
                ));
            }
        }
    }
    Ok(())
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .and_then(|t| t.split_whitespace().next().map(|x| x == "Z" || x == "X"))
        })
        .unwrap_or(true)
}

/// Is the marker app of server `i` running?
fn app_alive(lab: &Lab, i: usize) -> bool {
    std::fs::read_to_string(lab.dir.join(format!("app-{}.pid", server(i))))
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        .is_some_and(|pid| !is_zombie(pid))
}

/// Scenario 9: every agent in turn is stopped (SIGTERM) and started again, waiting for
/// the cluster to converge in between. The group stays up: it moves only when its
/// holder is restarted (a planned move, not a failover), once per such restart.
fn s9_rolling(lab: &mut Lab, o: &Options, r: &mut ScenarioReport) -> Result<(), String> {
    let n = lab.spec.servers;
    let t = lab.now();
    let mut holder_restarts = 0;
    for _ in 0..o.repeat.max(1) {
        for i in 0..n {
            let (x, _) = lab.wait_owner(None, Duration::from_secs(20))?;
            lab.wait_converged(Duration::from_secs(20))?;
            lab.stop_agent(i, Duration::from_secs(15))?;
            lab.note(&format!(
                "{} stopped{}",
                server(i),
                if x == i { " (it held the group)" } else { "" }
            ));
            if x == i {
                holder_restarts += 1;
                // The stopped agent's own events are read once it runs again.
                lab.wait_owner(Some(i), Duration::from_secs(20))?;
            }
            lab.start_agent(i)?;
            lab.note(&format!("{} started again", server(i)));
        }
    }
    lab.wait_converged(Duration::from_secs(20))?;
    lab.wait_owner(None, Duration::from_secs(20))?;
    let moves: usize = (0..n)
        .map(|i| events_after(lab, i, ids::ACTIVATED, t).len())
        .sum();
    // Service gaps: each activation after the start, from the last deactivation
    // elsewhere before it.
    let mut gaps = Vec::new();
    for y in 0..n {
        for up in events_after(lab, y, ids::ACTIVATED, t) {
            let u = lab.event_ms(&up);
            let d = (0..n)
                .filter(|x| *x != y)
                .flat_map(|x| events_after(lab, x, ids::DEACTIVATED, t))
                .map(|e| lab.event_ms(&e))
                .filter(|d| *d <= u)
                .fold(f64::NEG_INFINITY, f64::max);
            if d.is_finite() {
                gaps.push(u - d);
            }
        }
    }
    let failovers: usize = (0..n)
        .map(|i| events_after(lab, i, ids::FAILOVER, t).len())
        .sum();
    r.fact(format!(
        "rolling restart: {moves} activation(s) for {holder_restarts} restart(s) of the holder, {failovers} failover event(s); service gaps (deactivated -> activated elsewhere): {:?} ms",
        gaps.iter().map(|g| g.round()).collect::<Vec<_>>()
    ));
    if moves > holder_restarts {
        r.fail(format!(
            "the group moved {moves} times for {holder_restarts} restarts of its holder"
        ));
    }
    if failovers > 0 {
        r.fail(format!(
            "a planned restart was handled as a failover ({failovers} BTN-2107)"
        ));
    }
    Ok(())
}

/// Scenario 10: the active server is cut off from every peer; it loses quorum and
/// deactivates (and says so), the majority runs the group; after the heal exactly one
/// server runs it and the isolated one stays deactivated.
fn s10_heal(lab: &mut Lab, o: &Options, r: &mut ScenarioReport) -> Result<(), String> {
    let n = lab.spec.servers;
    for round in 0..o.repeat.max(1) {
        let (x, _) = lab.wait_owner(None, Duration::from_secs(20))?;
        lab.wait_converged(Duration::from_secs(20))?;
        let t = lab.now();
        let rest: Vec<usize> = (0..n).filter(|i| *i != x).collect();
        lab.partition(&[vec![x], rest])?;
        lab.note(&format!("round {}: {} isolated", round + 1, server(x)));
        let y = lab.wait(
            "the majority runs the group and the isolated server does not",
            Duration::from_secs(20),
            |lab| {
                let on = lab.online();
                match on.as_slice() {
                    [y] if *y != x && lab.status(x).is_some() => Ok(*y),
                    _ => Err(lab.summary()),
                }
            },
        )?;
        for id in [ids::NO_QUORUM, ids::DEACTIVATED] {
            if let Err(e) = wait_event(lab, x, id, t, Duration::from_secs(5)) {
                r.fail(format!("the isolated server did not report: {e}"));
            }
        }
        lab.hold(Duration::from_secs(2), "partitioned");
        let t_heal = lab.now();
        lab.heal()?;
        lab.wait_converged(Duration::from_secs(20))?;
        lab.hold(timeout_of(lab, 1, 500), "settle after the heal");
        match lab.sole_owner() {
            Ok((z, _)) if z == y => {}
            other => r.fail(format!(
                "after the heal the group should stay on {} alone: {other:?}",
                server(y)
            )),
        }
        if let Err(e) = wait_event(lab, x, ids::QUORUM_REGAINED, t_heal, Duration::from_secs(5)) {
            r.fail(format!(
                "the isolated server did not report regaining quorum: {e}"
            ));
        }
        let said: Vec<String> = lab
            .events(x)
            .into_iter()
            .filter(|ev| lab.event_ms(ev) >= t)
            .filter(|ev| !ev.id.starts_with("BTN-22"))
            .map(|ev| format!("{} {}", ev.id, ev.message))
            .collect();
        r.fact(format!(
            "round {}: the isolated {} reported: {}",
            round + 1,
            server(x),
            said.join(" | ")
        ));
    }
    Ok(())
}

/// The observer's self-check: the VIP is added by hand on a second server for 600 ms
/// while the group runs; the whole-run check must report it as a double activation.
/// Passes when it does.
pub fn self_check() -> ScenarioReport {
    let mut r = ScenarioReport {
        number: 0,
        title: "observer self-check: a second VIP holder is caught".into(),
        ..ScenarioReport::default()
    };
    let mut lab = match Lab::build(spec_for(0, &Options::default())) {
        Ok(l) => l,
        // Only a machine that lacks what the lab needs is a skip; any other set-up
        // error (an `ip` command, `baton keygen`, a config `config check` refuses) fails.
        Err(why) => {
            match super::unavailable() {
                Some(lacks) => r.skipped = Some(lacks),
                None => r.fail(format!("lab set-up failed: {why}")),
            }
            return r;
        }
    };
    let body = lab.observe().and_then(|()| start(&mut lab)).and_then(|()| {
        let (x, _) = lab.wait_owner(None, Duration::from_secs(20))?;
        let y = (x + 1) % lab.spec.servers;
        let ns = lab.nodes[y].clone();
        crate::netns::ip(&["-n", &ns, "addr", "add", &format!("{VIP}/24"), "dev", "ea"])?;
        lab.note(&format!("VIP added by hand on {}", server(y)));
        std::thread::sleep(Duration::from_millis(600));
        lab.remove_addr(y, VIP)?;
        lab.note(&format!("VIP removed by hand from {}", server(y)));
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    });
    if let Err(e) = body {
        r.fail(format!("self-check aborted: {e}"));
        return r;
    }
    finish(&mut lab, &mut r);
    let caught = r
        .failures
        .iter()
        .any(|f| f.starts_with("DOUBLE ACTIVE (VIP)"));
    let others: Vec<String> = r
        .failures
        .iter()
        .filter(|f| !f.starts_with("DOUBLE ACTIVE (VIP)"))
        .cloned()
        .collect();
    r.failures = others;
    if caught {
        r.fact("the hand-made second VIP holder was reported as DOUBLE ACTIVE (VIP)");
    } else {
        r.fail("the observer did not report the hand-made second VIP holder");
    }
    r
}

/// Summary of several reports (for the CLI).
pub fn summary(reports: &[ScenarioReport]) -> String {
    let mut by: BTreeMap<u8, (usize, usize, usize)> = BTreeMap::new();
    for r in reports {
        let e = by.entry(r.number).or_default();
        if r.skipped.is_some() {
            e.2 += 1;
        } else if r.passed() {
            e.0 += 1;
        } else {
            e.1 += 1;
        }
    }
    by.iter()
        .map(|(n, (p, f, s))| {
            format!(
                "scenario {n:>2} ({}): {p} passed, {f} failed, {s} skipped",
                title(*n)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
