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
pub const SCENARIOS: [(u8, &str); 12] = [
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
];

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
        11 | 12 => {
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
    if !(1..=12).contains(&n) {
        r.fail(format!("there is no scenario {n} (1 to 12)"));
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
            11 => s11_mirror_kill(&mut lab, o, &mut r),
            _ => s12_mirror_isolated(&mut lab, o, &mut r),
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

/// One 4 KiB write of `pattern` at `off` through qemu's NBD client; true when it was
/// acknowledged.
fn nbd_write(sock: &std::path::Path, off: u64, pattern: u8) -> bool {
    nbd_io(sock, &format!("write -P {pattern} {off} 4096"), "wrote")
}

/// Does the 4 KiB at `off` read back as `pattern`?
fn nbd_reads(sock: &std::path::Path, off: u64, pattern: u8) -> bool {
    nbd_io(sock, &format!("read -P {pattern} {off} 4096"), "read")
}

fn nbd_io(sock: &std::path::Path, cmd: &str, ok: &str) -> bool {
    std::process::Command::new("qemu-io")
        .args(["-f", "raw"])
        .arg(format!(
            "nbd+unix:///{}?socket={}",
            super::MIRROR,
            sock.display()
        ))
        .args(["-c", cmd])
        .output()
        .is_ok_and(|o| {
            let t = String::from_utf8_lossy(&o.stdout).to_string()
                + &String::from_utf8_lossy(&o.stderr);
            o.status.success()
                && t.contains(ok)
                && !t.contains("failed")
                && !t.contains("Pattern verification failed")
        })
}

/// Scenario 11: a group with a sync `mirror-disk` on two of three servers, a writer
/// recording every acknowledged write; the active server crashes (agent and mirror
/// process SIGKILLed); the group fails over, every acknowledged write reads back on the
/// new primary, and when the old server returns it is resynchronised by difference.
/// Besides the lab's usual checks, the observer checks that the mirror was never
/// writable (primary, not fenced, served) on two servers at once.
fn s11_mirror_kill(lab: &mut Lab, o: &Options, r: &mut ScenarioReport) -> Result<(), String> {
    need_qemu_io()?;
    for round in 0..o.repeat.max(1) {
        let (x, e) = lab.wait_owner(None, Duration::from_secs(30))?;
        lab.wait_converged(Duration::from_secs(20))?;
        wait_mirror_in_sync(lab, x)?;
        let w = MirrorWriter::start(lab.mirror_socket(x), round as u64);
        w.wait_acked(lab, 100)?;
        let t = lab.crash(x)?;
        lab.note(&format!(
            "round {}: {} crashed under writes (agent and mirror process SIGKILLed)",
            round + 1,
            server(x)
        ));
        let acked = w.finish(Duration::from_secs(30))?;
        let (y, e2) = lab.wait_owner(Some(x), Duration::from_secs(30))?;
        if e2 <= e {
            r.fail(format!("epoch did not grow on failover: {e} -> {e2}"));
        }
        let at = wait_event(lab, y, ids::ACTIVATED, t, Duration::from_secs(20))?;
        r.failover_ms.push(at - t);
        let lost = missing_on(&lab.mirror_socket(y), &acked);
        if lost.is_empty() {
            r.fact(format!(
                "round {}: all {} acknowledged writes read back on {}",
                round + 1,
                acked.len(),
                server(y)
            ));
        } else {
            r.fail(format!(
                "{} of {} acknowledged writes lost after the failover (offsets {:?})",
                lost.len(),
                acked.len(),
                &lost[..lost.len().min(8)]
            ));
        }
        lab.note(&format!(
            "{GROUP} online on {} (epoch {e2}) with the mirror, {:.0} ms after the crash",
            server(y),
            at - t
        ));
        lab.start_agent(x)?;
        wait_mirror_in_sync(lab, y)?;
        if !stores_equal(lab, x, y) {
            r.fail("the two stores differ after the resync");
        }
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

fn need_qemu_io() -> Result<(), String> {
    if std::process::Command::new("sh")
        .args(["-c", "command -v qemu-io"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        Ok(())
    } else {
        Err("qemu-io (Debian qemu-utils) is needed for the mirror scenarios".into())
    }
}

/// Wait until server `i` (the primary) reports its mirror connected and in sync.
fn wait_mirror_in_sync(lab: &Lab, i: usize) -> Result<(), String> {
    lab.wait(
        &format!("the mirror of {} is in sync", server(i)),
        Duration::from_secs(60),
        |lab| {
            let ok = lab.status(i).is_some_and(|s| {
                s.mirrors
                    .iter()
                    .any(|m| m.in_sync && m.connection == "connected")
            });
            if ok {
                Ok(())
            } else {
                Err(format!("{:?}", lab.status(i).map(|s| s.mirrors)))
            }
        },
    )
}

fn stores_equal(lab: &Lab, a: usize, b: usize) -> bool {
    matches!(
        (std::fs::read(lab.mirror_store(a)), std::fs::read(lab.mirror_store(b))),
        (Ok(x), Ok(y)) if x == y
    )
}

/// Offsets of `acked` whose last acknowledged pattern does not read back on `sock`.
fn missing_on(sock: &std::path::Path, acked: &BTreeMap<u64, u8>) -> Vec<u64> {
    acked
        .iter()
        .filter(|(off, p)| !nbd_reads(sock, **off, **p))
        .map(|(off, _)| *off)
        .collect()
}

/// A thread writing 4 KiB blocks over the first 2 MiB of the lab's mirror disk through
/// one server's NBD socket, recording the last acknowledged pattern of each offset; it
/// stops at its first failed write (the server stopped serving) or when told to.
struct MirrorWriter {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acked: std::sync::Arc<std::sync::Mutex<BTreeMap<u64, u8>>>,
    handle: std::thread::JoinHandle<()>,
}

impl MirrorWriter {
    fn start(sock: PathBuf, seed: u64) -> MirrorWriter {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let acked: std::sync::Arc<std::sync::Mutex<BTreeMap<u64, u8>>> = Default::default();
        let (s2, a2) = (stop.clone(), acked.clone());
        let handle = std::thread::spawn(move || {
            let mut k = 0u64;
            while !s2.load(Ordering::SeqCst) {
                let off = (k % 512) * 4096;
                let pattern = (1 + (k + seed) % 250) as u8;
                if !nbd_write(&sock, off, pattern) {
                    return;
                }
                a2.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(off, pattern);
                k += 1;
            }
        });
        MirrorWriter {
            stop,
            acked,
            handle,
        }
    }

    fn count(&self) -> usize {
        self.acked.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn wait_acked(&self, lab: &Lab, n: usize) -> Result<(), String> {
        lab.wait("writes are acknowledged", Duration::from_secs(20), |_| {
            if self.count() >= n {
                Ok(())
            } else {
                Err(format!("{} writes", self.count()))
            }
        })
    }

    /// Stop (a write in progress finishes or fails first, within `timeout`); what was
    /// acknowledged.
    fn finish(self, timeout: Duration) -> Result<BTreeMap<u64, u8>, String> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let start = std::time::Instant::now();
        while !self.handle.is_finished() {
            if start.elapsed() > timeout {
                return Err(format!(
                    "a write through the mirror neither finished nor failed within {} s",
                    timeout.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.handle.join();
        Ok(self.acked.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// Scenario 12: the active server of a group with a sync `mirror-disk` is cut off from
/// every peer (heartbeats and mirror link) while a writer writes through it. It loses
/// quorum and stops; the majority takes over. Whatever the isolated server acknowledged
/// must be on the new primary (sync: it acknowledges nothing the peer does not have, and
/// nothing at all once it has no lease). After the heal it rejoins as secondary and is
/// resynchronised.
fn s12_mirror_isolated(lab: &mut Lab, o: &Options, r: &mut ScenarioReport) -> Result<(), String> {
    need_qemu_io()?;
    let n = lab.spec.servers;
    for round in 0..o.repeat.max(1) {
        let (x, e) = lab.wait_owner(None, Duration::from_secs(30))?;
        lab.wait_converged(Duration::from_secs(20))?;
        wait_mirror_in_sync(lab, x)?;
        let w = MirrorWriter::start(lab.mirror_socket(x), 100 + round as u64);
        w.wait_acked(lab, 50)?;
        let t = lab.now();
        let rest: Vec<usize> = (0..n).filter(|i| *i != x).collect();
        lab.partition(&[vec![x], rest])?;
        lab.note(&format!(
            "round {}: {} isolated under writes",
            round + 1,
            server(x)
        ));
        // (The isolated server's own view is stale: ask the majority.)
        let y = lab.wait(
            "the majority runs the group and the isolated server does not",
            Duration::from_secs(30),
            |lab| match lab.online().as_slice() {
                [y] if *y != x => Ok(*y),
                _ => Err(lab.summary()),
            },
        )?;
        let e2 = lab
            .status(y)
            .and_then(|s| s.groups.iter().find(|g| g.name == GROUP).map(|g| g.epoch))
            .unwrap_or(0);
        if e2 <= e {
            r.fail(format!("epoch did not grow on failover: {e} -> {e2}"));
        }
        if let Err(e) = wait_event(lab, x, ids::DEACTIVATED, t, Duration::from_secs(20)) {
            r.fail(format!("the isolated server did not deactivate: {e}"));
        }
        let acked = w.finish(Duration::from_secs(150))?;
        let lost = missing_on(&lab.mirror_socket(y), &acked);
        if lost.is_empty() {
            r.fact(format!(
                "round {}: all {} writes the isolated {} acknowledged read back on {}",
                round + 1,
                acked.len(),
                server(x),
                server(y)
            ));
        } else {
            r.fail(format!(
                "{} of {} writes acknowledged by the isolated server are not on the new primary (offsets {:?})",
                lost.len(),
                acked.len(),
                &lost[..lost.len().min(8)]
            ));
        }
        lab.heal()?;
        lab.note("partition healed");
        lab.wait_converged(Duration::from_secs(20))?;
        wait_mirror_in_sync(lab, y)?;
        if !stores_equal(lab, x, y) {
            r.fail("the two stores differ after the resync");
        }
        match lab.sole_owner() {
            Ok((z, _)) if z == y => {}
            other => r.fail(format!(
                "after the heal the group should stay on {} alone: {other:?}",
                server(y)
            )),
        }
    }
    Ok(())
}
