//! Engine tests: a small deterministic multi-engine harness (in the spirit of raft-rs's
//! test network) drives N engines built from one TOML file with a simulated clock,
//! heartbeats on every interconnect path that is not cut, and a fake executor that
//! answers the engines' actions. Invariants are checked after every single step.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::*;
use crate::config::{load_str, Config, FinalAction};
use crate::events::EventDef;
use crate::time::Millis;

mod bounds;
mod marks;

// ---------------------------------------------------------------------------------------
// Configurations
// ---------------------------------------------------------------------------------------

const INTERVAL: u64 = 200;
const TIMEOUT: u64 = 1000;
/// Default startup wait: timeout + 2 × interval.
const STARTUP: u64 = TIMEOUT + 2 * INTERVAL;

fn servers_toml(n: usize) -> String {
    (1..=n)
        .map(|i| {
            format!(
                "[[server]]\nname = \"node-{i}\"\ninterconnects = [\"10.0.1.{i}\", \"10.0.2.{i}\"]\napi = \"10.0.1.{i}:7420\"\n\n"
            )
        })
        .collect()
}

/// A cluster of `n` servers (two interconnect paths each) followed by `rest`.
fn cluster(n: usize, rest: &str) -> String {
    format!(
        "[cluster]\nname = \"test\"\nkey_file = \"/etc/baton/cluster.key\"\n\n[heartbeat]\ninterval = \"{INTERVAL}ms\"\ntimeout = \"{TIMEOUT}ms\"\n\n{}{rest}",
        servers_toml(n)
    )
}

/// Group `g1` on node-1, node-2, node-3 (in that order) with `vip` and `app` (app needs vip).
fn group_g1(extra_group: &str, extra_app: &str) -> String {
    format!(
        r#"
[[group]]
name = "g1"
servers = ["node-1", "node-2", "node-3"]
{extra_group}

[[group.resource]]
kind = "exec"
name = "app"
depends_on = ["vip"]
start = "/bin/app start"
{extra_app}

[[group.resource]]
kind = "floating-ip"
name = "vip"
ip = "10.1.0.20"
"#
    )
}

fn three(rest: &str) -> String {
    cluster(3, &format!("{}{rest}", group_g1("", "")))
}

/// Any kind, as [`crate::config::AnyKind`]; kind `cloud-ip` has a local self-fence stop of
/// [`CLOUD_IP_STOP_MS`] (as `aws-vip`).
const TEST_KINDS: crate::config::AnyKindWithLocalStop =
    crate::config::AnyKindWithLocalStop("cloud-ip", CLOUD_IP_STOP_MS);

const CLOUD_IP_STOP_MS: u64 = 30;

fn parse(text: &str) -> Config {
    match load_str("test.toml", text, &TEST_KINDS) {
        Ok(l) => l.config,
        Err(e) => panic!("{e}: {:#?}", e.diagnostics),
    }
}

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    Ok,
    Fail,
    ApiFail,
}

struct Node {
    name: String,
    cfg: Config,
    eng: Engine,
    alive: bool,
    /// Actions are not answered automatically (the test answers them).
    manual: bool,
    queue: VecDeque<Action>,
    log: Vec<(u64, Action)>,
    incarnation: u64,
    /// The state directory: highest epochs and owned groups, as persisted.
    disk: Boot,
}

struct Sim {
    now: u64,
    step_ms: u64,
    next_hb: u64,
    nodes: Vec<Node>,
    /// Cut links: (lower index, higher index, path).
    cuts: BTreeSet<(usize, usize, usize)>,
    /// One-way drops: (from, to), every path.
    deaf: BTreeSet<(usize, usize)>,
    paths: usize,
    groups: Vec<String>,
    /// (server, resource) → remaining failures (`u32::MAX`: forever).
    fail_act: BTreeMap<(String, String), u32>,
    fail_deact: BTreeMap<(String, String), u32>,
    /// (server, monitor) → probe result (default Ok).
    probes: BTreeMap<(String, String), Probe>,
    /// (server, resource) → forced check result (default: Active if active there).
    checks: BTreeMap<(String, String), CheckResult>,
    /// resource → servers where the fake executor has it active.
    active: BTreeMap<String, BTreeSet<String>>,
    /// Check "at most one live server has the group online/activating" after every step.
    /// Turned off only by the tests that build a double holder with equal epochs by hand.
    invariants: bool,
    /// Servers expected to overlap with a newer holder (cut off or paused while holding):
    /// their holds are left out of the single-holder count, but each must carry a strictly
    /// lower epoch than every other holder of the group (the fencing token protects that
    /// window, not the engine). The one-action-per-group check still covers them.
    stale: BTreeSet<String>,
    /// Percentage of heartbeat packets lost (per packet, per path), and the generator.
    /// Loss, not a partition: after two heartbeat rounds without any packet between two
    /// servers, the next one gets through (a server is never falsely declared down).
    loss_pct: u64,
    rng: u64,
    silent_rounds: BTreeMap<(usize, usize), u32>,
    /// Heartbeat rounds so far.
    hb_rounds: u64,
    /// A scripted witness: `Some(granted)` answers every request so; `None` never answers.
    witness_grants: Option<bool>,
    witness_epochs: BTreeMap<String, u64>,
}

fn fail(msg: &str) -> Failure {
    Failure {
        code: "command-failed".into(),
        message: msg.into(),
        cause: Cause::Command,
    }
}

impl Sim {
    fn new(text: &str) -> Sim {
        let cfg = parse(text);
        let n = cfg.servers.len();
        Sim::with_configs(vec![cfg; n])
    }

    /// One configuration per server (same server list; digests may differ).
    fn with_configs(cfgs: Vec<Config>) -> Sim {
        let names: Vec<String> = cfgs[0].servers.iter().map(|s| s.name.clone()).collect();
        let mut sim = Sim {
            now: 0,
            step_ms: 50,
            next_hb: 0,
            nodes: Vec::new(),
            cuts: BTreeSet::new(),
            deaf: BTreeSet::new(),
            paths: cfgs[0].paths(),
            groups: cfgs[0].groups.iter().map(|g| g.name.clone()).collect(),
            fail_act: BTreeMap::new(),
            fail_deact: BTreeMap::new(),
            probes: BTreeMap::new(),
            checks: BTreeMap::new(),
            active: BTreeMap::new(),
            invariants: true,
            stale: BTreeSet::new(),
            loss_pct: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
            silent_rounds: BTreeMap::new(),
            hb_rounds: 0,
            witness_grants: None,
            witness_epochs: BTreeMap::new(),
        };
        for (name, cfg) in names.into_iter().zip(cfgs) {
            let eng = Engine::new(cfg.clone(), &name, Boot::default(), Millis(0)).unwrap();
            sim.nodes.push(Node {
                name,
                cfg,
                eng,
                alive: true,
                manual: false,
                queue: VecDeque::new(),
                log: Vec::new(),
                incarnation: 0,
                disk: Boot::default(),
            });
        }
        sim
    }

    fn idx(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no server {name}"))
    }

    fn eng(&self, s: &str) -> &Engine {
        &self.nodes[self.idx(s)].eng
    }

    // ----- driving -----

    /// Feed one input to node `i` and record its actions (not answered yet).
    fn feed(&mut self, i: usize, input: Input) {
        let acts = self.nodes[i].eng.step(Millis(self.now), input);
        self.record(i, acts);
    }

    fn record(&mut self, i: usize, acts: Vec<Action>) {
        let now = self.now;
        for a in acts {
            let disk = &mut self.nodes[i].disk;
            match &a {
                Action::PersistEpoch { group, epoch } => {
                    let e = disk.epochs.entry(group.clone()).or_default();
                    *e = (*e).max(*epoch);
                }
                Action::PersistOwnership { groups, fencing } => {
                    disk.owned = groups.iter().map(|(g, (e, _))| (g.clone(), *e)).collect();
                    disk.fencing = *fencing;
                }
                _ => {}
            }
            self.nodes[i].log.push((now, a.clone()));
            self.nodes[i].queue.push_back(a);
        }
        self.check();
    }

    /// Answer node `i`'s queued actions until it has none left (unless it is manual).
    fn settle(&mut self, i: usize) {
        if self.nodes[i].manual {
            return;
        }
        while let Some(a) = self.nodes[i].queue.pop_front() {
            if let Some(input) = self.answer(i, &a) {
                self.feed(i, input);
            }
        }
    }

    /// Answer the oldest queued action of a manual node; returns it.
    fn answer_next(&mut self, s: &str) -> Option<Action> {
        let i = self.idx(s);
        let a = self.nodes[i].queue.pop_front()?;
        if let Some(input) = self.answer(i, &a) {
            self.feed(i, input);
        }
        Some(a)
    }

    /// Drop the queued actions of a node that are not resource, check, probe or script
    /// actions (events, persistence), returning what is left.
    fn pending(&mut self, s: &str) -> Vec<Action> {
        let i = self.idx(s);
        self.nodes[i].queue.retain(|a| {
            matches!(
                a,
                Action::Activate { .. }
                    | Action::Deactivate { .. }
                    | Action::Check { .. }
                    | Action::Probe { .. }
                    | Action::RecoveryScript { .. }
            )
        });
        self.nodes[i].queue.iter().cloned().collect()
    }

    /// Answer the queued start or stop of `resource` on a manual node; returns it.
    fn answer_resource(&mut self, s: &str, resource: &str) -> Action {
        let i = self.idx(s);
        let k = self.nodes[i]
            .queue
            .iter()
            .position(|a| match a {
                Action::Activate { resource: r, .. } | Action::Deactivate { resource: r, .. } => {
                    r == resource
                }
                _ => false,
            })
            .unwrap_or_else(|| panic!("no action queued for {resource} on {s}"));
        let a = self.nodes[i]
            .queue
            .remove(k)
            .expect("position is in the queue");
        if let Some(input) = self.answer(i, &a) {
            self.feed(i, input);
        }
        a
    }

    /// The resources of the queued starts (true) or stops (false) of a node.
    fn queued(&mut self, s: &str, activate: bool) -> Vec<String> {
        self.pending(s)
            .into_iter()
            .filter_map(|a| match a {
                Action::Activate { resource, .. } if activate => Some(resource),
                Action::Deactivate { resource, .. } if !activate => Some(resource),
                _ => None,
            })
            .collect()
    }

    fn set_manual(&mut self, s: &str, manual: bool) {
        let i = self.idx(s);
        self.nodes[i].manual = manual;
        if !manual {
            self.settle(i);
        }
    }

    fn take_failure(map: &mut BTreeMap<(String, String), u32>, s: &str, r: &str) -> bool {
        let key = (s.to_string(), r.to_string());
        match map.get_mut(&key) {
            Some(0) | None => false,
            Some(n) => {
                if *n != u32::MAX {
                    *n -= 1;
                }
                true
            }
        }
    }

    fn answer(&mut self, i: usize, a: &Action) -> Option<Input> {
        let s = self.nodes[i].name.clone();
        match a {
            Action::Activate { id, resource, .. } => {
                let result = if Sim::take_failure(&mut self.fail_act, &s, resource) {
                    Err(fail(&format!("{resource} did not start")))
                } else {
                    self.active
                        .entry(resource.clone())
                        .or_default()
                        .insert(s.clone());
                    Ok(())
                };
                Some(Input::ActionDone { id: *id, result })
            }
            Action::Deactivate { id, resource, .. } => {
                let result = if Sim::take_failure(&mut self.fail_deact, &s, resource) {
                    Err(fail(&format!("{resource} did not stop")))
                } else {
                    self.active.entry(resource.clone()).or_default().remove(&s);
                    Ok(())
                };
                Some(Input::ActionDone { id: *id, result })
            }
            Action::Check { id, resource, .. } => {
                let forced = self.checks.get(&(s.clone(), resource.clone())).copied();
                let result = forced.unwrap_or_else(|| {
                    if self.active.get(resource).is_some_and(|v| v.contains(&s)) {
                        CheckResult::Active
                    } else {
                        CheckResult::Inactive
                    }
                });
                Some(Input::CheckDone {
                    id: *id,
                    result,
                    detail: String::new(),
                })
            }
            Action::Probe { id, monitor, .. } => {
                let mode = self
                    .probes
                    .get(&(s, monitor.clone()))
                    .copied()
                    .unwrap_or(Probe::Ok);
                let outcome = match mode {
                    Probe::Ok => ProbeOutcome::Ok {
                        latency_ms: 5,
                        detail: None,
                    },
                    Probe::Fail | Probe::ApiFail => ProbeOutcome::Failed {
                        latency_ms: 7,
                        code: "check-failed".into(),
                        message: format!("{monitor} failed"),
                        api_error: mode == Probe::ApiFail,
                    },
                };
                Some(Input::ProbeDone { id: *id, outcome })
            }
            Action::RecoveryScript { id, .. } => Some(Input::ActionDone {
                id: *id,
                result: Ok(()),
            }),
            Action::AskWitness { epochs, .. } => {
                let granted = self.witness_grants?;
                if granted {
                    for (g, e) in epochs {
                        let x = self.witness_epochs.entry(g.clone()).or_default();
                        *x = (*x).max(*e);
                    }
                }
                Some(Input::WitnessReply {
                    sent_at: Millis(self.now),
                    granted,
                    epochs: self.witness_epochs.clone(),
                    detail: if granted {
                        "granted".into()
                    } else {
                        "witness down".into()
                    },
                })
            }
            _ => None,
        }
    }

    fn link_up(&self, a: usize, b: usize, p: usize) -> bool {
        !self.cuts.contains(&(a.min(b), a.max(b), p))
    }

    /// Is the next packet lost? (xorshift, deterministic per seed)
    fn lost(&mut self) -> bool {
        if self.loss_pct == 0 {
            return false;
        }
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng % 100 < self.loss_pct
    }

    fn heartbeats(&mut self) {
        for from in 0..self.nodes.len() {
            if !self.nodes[from].alive {
                continue;
            }
            let msg = self.nodes[from].eng.peer_message();
            let name = self.nodes[from].name.clone();
            for to in 0..self.nodes.len() {
                if to == from || !self.nodes[to].alive {
                    continue;
                }
                let silent = self.silent_rounds.get(&(from, to)).copied().unwrap_or(0);
                let mut delivered = false;
                for p in 0..self.paths {
                    let lost = silent < 2 && self.lost();
                    delivered |= !lost;
                    if self.link_up(from, to, p) && !lost && !self.deaf.contains(&(from, to)) {
                        self.feed(
                            to,
                            Input::Heartbeat {
                                from: name.clone(),
                                path: p,
                                msg: Box::new(msg.clone()),
                                newest: true,
                            },
                        );
                        self.settle(to);
                    }
                }
                self.silent_rounds
                    .insert((from, to), if delivered { 0 } else { silent + 1 });
            }
        }
    }

    /// One step of simulated time: a tick on every live node (timers fire first), then
    /// heartbeats when due.
    fn round(&mut self) {
        self.now += self.step_ms;
        for i in 0..self.nodes.len() {
            if self.nodes[i].alive {
                self.feed(i, Input::Tick);
                self.settle(i);
            }
        }
        if self.now >= self.next_hb {
            self.next_hb = self.now + INTERVAL;
            self.hb_rounds += 1;
            self.heartbeats();
        }
    }

    /// Run until the next heartbeat round has been delivered.
    fn next_hb_round(&mut self) {
        let n = self.hb_rounds;
        while self.hb_rounds == n {
            self.round();
        }
    }

    fn run(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.round();
        }
    }

    /// Run until `pred` holds (checked after each round); false on timeout.
    fn run_until(&mut self, max_ms: u64, mut pred: impl FnMut(&Sim) -> bool) -> bool {
        let end = self.now + max_ms;
        while self.now < end {
            self.round();
            if pred(self) {
                return true;
            }
        }
        false
    }

    fn cmd(&mut self, s: &str, c: Command) -> Result<(), CommandError> {
        let i = self.idx(s);
        let acts = self.nodes[i].eng.command(Millis(self.now), c)?;
        self.record(i, acts);
        self.settle(i);
        Ok(())
    }

    // ----- faults -----

    fn cut(&mut self, a: &str, b: &str, path: usize) {
        let (a, b) = (self.idx(a), self.idx(b));
        self.cuts.insert((a.min(b), a.max(b), path));
    }

    fn cut_all(&mut self, a: &str, b: &str) {
        for p in 0..self.paths {
            self.cut(a, b, p);
        }
    }

    fn isolate(&mut self, a: &str) {
        let names: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        for b in names.iter().filter(|b| *b != a) {
            self.cut_all(a, b);
        }
    }

    fn heal(&mut self) {
        self.cuts.clear();
        self.deaf.clear();
    }

    /// `to` stops hearing `from` (only that direction).
    fn drop_one_way(&mut self, from: &str, to: &str) {
        let (f, t) = (self.idx(from), self.idx(to));
        self.deaf.insert((f, t));
    }

    /// The machine dies: the agent stops and the resources it ran are gone.
    fn kill(&mut self, s: &str) {
        let i = self.idx(s);
        self.nodes[i].alive = false;
        self.nodes[i].queue.clear();
        // The machine is gone with its resources: its next boot starts without the
        // previous run's fence clock (`Boot::fencing`, kept within one boot).
        self.nodes[i].disk.fencing = false;
        for v in self.active.values_mut() {
            v.remove(s);
        }
    }

    /// What the agent's state directory holds: epochs and owned groups.
    fn boot_state(&self, s: &str) -> Boot {
        let n = &self.nodes[self.idx(s)];
        Boot {
            incarnation: n.incarnation + 1,
            ..n.disk.clone()
        }
    }

    /// Start the agent again (after `kill`, or in place: its resources keep running).
    fn restart(&mut self, s: &str, boot: Boot) {
        let i = self.idx(s);
        let cfg = self.nodes[i].cfg.clone();
        self.nodes[i].eng = Engine::new(cfg, s, boot, Millis(self.now)).unwrap();
        self.nodes[i].incarnation += 1;
        self.nodes[i].alive = true;
        self.nodes[i].queue.clear();
        self.feed(i, Input::Tick);
        self.settle(i);
    }

    // ----- fake executor settings -----

    fn fail_activate(&mut self, s: &str, r: &str, times: u32) {
        self.fail_act.insert((s.into(), r.into()), times);
    }

    fn fail_deactivate(&mut self, s: &str, r: &str, times: u32) {
        self.fail_deact.insert((s.into(), r.into()), times);
    }

    fn probe(&mut self, s: &str, m: &str, p: Probe) {
        self.probes.insert((s.into(), m.into()), p);
    }

    // ----- observation -----

    fn state(&self, s: &str, g: &str) -> GroupState {
        // A group the server's configuration does not have (yet) is offline there.
        self.eng(s)
            .peer_message()
            .groups
            .into_iter()
            .find(|r| &*r.name == g)
            .map_or(GroupState::Offline, |r| r.state)
    }

    fn report(&self, s: &str, g: &str) -> GroupReport {
        self.eng(s)
            .peer_message()
            .groups
            .into_iter()
            .find(|r| &*r.name == g)
            .unwrap()
    }

    /// The live server on which `g` is online.
    fn online_on(&self, g: &str) -> Option<String> {
        self.nodes
            .iter()
            .filter(|n| n.alive)
            .find(|n| self.state(&n.name, g) == GroupState::Online)
            .map(|n| n.name.clone())
    }

    fn holders(&self, g: &str) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.alive && self.state(&n.name, g).holds())
            .map(|n| n.name.clone())
            .collect()
    }

    fn events(&self, s: &str) -> Vec<Event> {
        self.nodes[self.idx(s)]
            .log
            .iter()
            .filter_map(|(_, a)| match a {
                Action::Emit { event } => Some((**event).clone()),
                _ => None,
            })
            .collect()
    }

    fn count(&self, s: &str, def: &EventDef) -> usize {
        let code = def.code();
        self.events(s).iter().filter(|e| e.id == code).count()
    }

    fn has(&self, s: &str, def: &EventDef) -> bool {
        self.count(s, def) > 0
    }

    /// The first `def` event `s` raised (the test fails when there is none).
    fn event(&self, s: &str, def: &EventDef) -> Event {
        let code = def.code();
        self.events(s)
            .into_iter()
            .find(|e| e.id == code)
            .unwrap_or_else(|| panic!("{s} raised no {code}"))
    }

    fn actions(&self, s: &str) -> Vec<Action> {
        self.nodes[self.idx(s)]
            .log
            .iter()
            .map(|(_, a)| a.clone())
            .collect()
    }

    /// (resource, epoch, attempt) of every Activate action of `s`.
    fn activations(&self, s: &str) -> Vec<(String, u64, u32)> {
        self.actions(s)
            .into_iter()
            .filter_map(|a| match a {
                Action::Activate {
                    resource,
                    epoch,
                    attempt,
                    ..
                } => Some((resource, epoch, attempt)),
                _ => None,
            })
            .collect()
    }

    fn deactivations(&self, s: &str) -> Vec<(String, u64, u32)> {
        self.actions(s)
            .into_iter()
            .filter_map(|a| match a {
                Action::Deactivate {
                    resource,
                    epoch,
                    attempt,
                    ..
                } => Some((resource, epoch, attempt)),
                _ => None,
            })
            .collect()
    }

    fn probes_sent(&self, s: &str, m: &str) -> usize {
        self.actions(s)
            .iter()
            .filter(|a| matches!(a, Action::Probe { monitor, .. } if monitor == m))
            .count()
    }

    fn monitor(&self, s: &str, m: &str) -> MonitorStatus {
        self.eng(s)
            .status()
            .monitors
            .into_iter()
            .find(|x| x.name == m)
            .unwrap()
    }

    fn group_status(&self, s: &str, g: &str) -> GroupStatus {
        self.eng(s)
            .status()
            .groups
            .into_iter()
            .find(|x| x.name == g)
            .unwrap()
    }

    fn clear_logs(&mut self) {
        for n in &mut self.nodes {
            n.log.clear();
        }
    }

    // ----- invariants -----

    /// Let `server` keep a stale copy of its groups next to a newer holder (see `stale`).
    fn allow_stale_holder(&mut self, server: &str) {
        self.stale.insert(server.to_string());
    }

    /// Back to the full single-holder check.
    fn strict(&mut self) {
        self.stale.clear();
        self.invariants = true;
    }

    fn check(&self) {
        if self.invariants {
            self.check_single_holder();
        }
        self.check_one_action_per_group();
    }

    fn check_single_holder(&self) {
        for g in &self.groups {
            // (server, epoch) of every live server that has g online or activating.
            let holders: Vec<(&str, u64)> = self
                .nodes
                .iter()
                .filter(|n| n.alive)
                .filter_map(|n| {
                    let r = n
                        .eng
                        .peer_message()
                        .groups
                        .into_iter()
                        .find(|r| *r.name == **g)?;
                    matches!(r.state, GroupState::Online | GroupState::Activating)
                        .then_some((n.name.as_str(), r.epoch))
                })
                .collect();
            let current: Vec<&(&str, u64)> = holders
                .iter()
                .filter(|(s, _)| !self.stale.contains(*s))
                .collect();
            assert!(
                current.len() <= 1,
                "t={} ms: group {g} is online/activating on {holders:?}",
                self.now
            );
            for (s, e) in holders.iter().filter(|(s, _)| self.stale.contains(*s)) {
                for (o, oe) in holders.iter().filter(|(o, _)| o != s) {
                    assert!(
                        e < oe || self.stale.contains(*o),
                        "t={} ms: stale holder {s} of {g} has epoch {e}, not below {o}'s {oe}",
                        self.now
                    );
                }
            }
        }
        for (r, on) in &self.active {
            let live: Vec<&String> = on
                .iter()
                .filter(|s| !self.stale.contains(*s))
                .filter(|s| self.nodes.iter().any(|n| &n.name == *s && n.alive))
                .collect();
            assert!(
                live.len() <= 1,
                "t={} ms: resource {r} is active on {live:?}",
                self.now
            );
        }
    }

    fn check_one_action_per_group(&self) {
        // One resource action at a time per group and server (one per resource of a step
        // for a group with `resource_order = "parallel"`), never a start beside a stop.
        for n in &self.nodes {
            for g in &self.groups {
                let acts: Vec<(bool, &String)> = n
                    .queue
                    .iter()
                    .filter_map(|a| match a {
                        Action::Activate {
                            group, resource, ..
                        } if group == g => Some((true, resource)),
                        Action::Deactivate {
                            group, resource, ..
                        } if group == g => Some((false, resource)),
                        _ => None,
                    })
                    .collect();
                let parallel = n.cfg.groups.iter().any(|x| {
                    &x.name == g && x.resource_order == crate::config::ResourceOrder::Parallel
                });
                let distinct: BTreeSet<&String> = acts.iter().map(|a| a.1).collect();
                assert!(
                    (acts.len() <= 1 || parallel)
                        && distinct.len() == acts.len()
                        && acts.iter().all(|a| a.0 == acts[0].0),
                    "t={} ms: {} has these resource actions of {g} in flight: {acts:?}",
                    self.now,
                    n.name
                );
            }
        }
    }
}

/// A three-server cluster with g1 online on node-1 (epoch 1).
fn started(text: &str) -> Sim {
    let mut sim = Sim::new(text);
    assert!(sim.run_until(5_000, |s| s.online_on("g1").is_some()));
    // Let every server learn the new state.
    sim.run(2 * INTERVAL);
    sim
}

// ---------------------------------------------------------------------------------------
// Startup and placement
// ---------------------------------------------------------------------------------------

#[test]
fn group_starts_on_first_server_once_ready() {
    let mut sim = Sim::new(&three(""));
    sim.run(STARTUP - 100);
    assert!(
        sim.holders("g1").is_empty(),
        "nothing before the startup wait"
    );
    assert!(sim.activations("node-1").is_empty());
    sim.run(1_000);
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-1"));
    assert_eq!(sim.report("node-1", "g1").epoch, 1);
    for s in ["node-2", "node-3"] {
        assert!(sim.activations(s).is_empty(), "{s} activated something");
        assert_eq!(sim.report(s, "g1").max_epoch, 1, "{s} learned the epoch");
    }
    // The epoch is persisted before any resource is touched.
    let acts = sim.actions("node-1");
    let persist = acts
        .iter()
        .position(|a| matches!(a, Action::PersistEpoch { group, epoch: 1 } if group == "g1"))
        .unwrap();
    let first = acts
        .iter()
        .position(|a| matches!(a, Action::Activate { .. }))
        .unwrap();
    assert!(persist < first);
    let st = sim.group_status("node-3", "g1");
    assert_eq!(st.active_on.as_deref(), Some("node-1"));
    assert_eq!(st.state, GroupState::Online);
    assert_eq!(st.desired, "running");
}

#[test]
fn group_starts_on_first_server_of_its_own_order() {
    let text = cluster(
        3,
        r#"
[[group]]
name = "g1"
servers = ["node-2", "node-3", "node-1"]
[[group.resource]]
kind = "exec"
name = "app"
"#,
    );
    let mut sim = Sim::new(&text);
    sim.run(STARTUP + 1_000);
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-2"));
}

#[test]
fn startup_servers_limit_the_first_start_only() {
    let text = cluster(3, &group_g1(r#"startup_servers = ["node-3"]"#, ""));
    let mut sim = Sim::new(&text);
    sim.run(STARTUP + 1_000);
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-3"));
    assert!(sim.activations("node-1").is_empty());
    // Once the group has run (epoch > 0) the whole order applies: node-3 fails, node-1
    // (first in the order) takes over.
    sim.kill("node-3");
    assert!(sim.run_until(3_000, |s| s.online_on("g1").is_some()));
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-1"));
    assert_eq!(sim.report("node-1", "g1").epoch, 2);
}

#[test]
fn startup_servers_all_down_means_no_start_and_one_warning() {
    let text = cluster(3, &group_g1(r#"startup_servers = ["node-3"]"#, ""));
    let mut sim = Sim::new(&text);
    sim.kill("node-3");
    sim.run(STARTUP + 3_000);
    assert!(sim.holders("g1").is_empty());
    // Only the first up server of the group's order reports it, once.
    assert_eq!(sim.count("node-1", &events::GROUP_NO_SERVER), 1);
    assert_eq!(sim.count("node-2", &events::GROUP_NO_SERVER), 0);
}

#[test]
fn auto_start_false_waits_for_group_start() {
    let text = cluster(3, &group_g1("auto_start = false", ""));
    let mut sim = Sim::new(&text);
    sim.run(STARTUP + 3_000);
    assert!(sim.holders("g1").is_empty());
    assert_eq!(sim.group_status("node-1", "g1").desired, "stopped");
    sim.cmd(
        "node-3",
        Command::GroupStart {
            group: "g1".into(),
            on: Some("node-2".into()),
        },
    )
    .unwrap();
    assert!(sim.has("node-3", &events::GROUP_START_REQUESTED));
    assert!(sim.run_until(2_000, |s| s.online_on("g1").is_some()));
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-2"));
    assert_eq!(sim.group_status("node-1", "g1").desired, "running");
}

#[test]
fn new_engine_rejects_unknown_server() {
    let cfg = parse(&three(""));
    let err = Engine::new(cfg, "node-9", Boot::default(), Millis(0)).unwrap_err();
    assert_eq!(err, EngineError::UnknownServer("node-9".into()));
    assert!(err.to_string().contains("node-9"));
}

// ---------------------------------------------------------------------------------------
// Membership and quorum
// ---------------------------------------------------------------------------------------

#[test]
fn one_path_cut_is_path_down_without_failover() {
    let mut sim = started(&three(""));
    for s in ["node-1", "node-2", "node-3"] {
        assert_eq!(sim.count(s, &events::SERVER_UP), 2, "{s}");
        assert!(
            !sim.has(s, &events::PATH_UP),
            "{s}: first contact is not a path coming back"
        );
    }
    sim.clear_logs();
    sim.cut("node-1", "node-2", 0);
    sim.run(TIMEOUT + 2 * INTERVAL);
    for (me, peer) in [("node-1", "node-2"), ("node-2", "node-1")] {
        let ev: Vec<Event> = sim
            .events(me)
            .into_iter()
            .filter(|e| e.id == events::PATH_DOWN.code())
            .collect();
        assert_eq!(ev.len(), 1, "{me}: {ev:?}");
        assert_eq!(ev[0].peer.as_deref(), Some(peer));
        assert_eq!(ev[0].fields.get("path"), Some(&serde_json::json!(0)));
        assert!(!sim.has(me, &events::SERVER_DOWN));
    }
    assert!(!sim.has("node-3", &events::PATH_DOWN));
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-1"));
    assert_eq!(sim.report("node-1", "g1").epoch, 1);
    assert!(sim.activations("node-2").is_empty());
    let st = sim.eng("node-2").status();
    let n1 = st.servers.iter().find(|s| s.name == "node-1").unwrap();
    assert!(n1.up);
    assert!(!n1.paths[0].up);
    assert!(n1.paths[1].up);
    assert!(n1.paths[0].last_heard_ms_ago.unwrap() >= TIMEOUT);
    // The path comes back.
    sim.heal();
    sim.run(2 * INTERVAL);
    assert_eq!(sim.count("node-2", &events::PATH_UP), 1);
    assert!(sim.eng("node-2").status().servers[0].paths[0].up);
}

#[test]
fn all_paths_silent_is_server_down_and_failover_in_order() {
    let mut sim = started(&three(""));
    sim.clear_logs();
    sim.kill("node-1");
    sim.run(TIMEOUT - 2 * INTERVAL);
    assert!(sim.holders("g1").is_empty() || sim.holders("g1") == ["node-1"]);
    assert!(
        !sim.has("node-2", &events::SERVER_DOWN),
        "not before the timeout"
    );
    assert!(sim.run_until(2_000, |s| s.online_on("g1").is_some()));
    for s in ["node-2", "node-3"] {
        assert_eq!(sim.count(s, &events::SERVER_DOWN), 1, "{s}");
        assert!(
            !sim.has(s, &events::PATH_DOWN),
            "{s}: all paths → server down only"
        );
    }
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-2"));
    assert_eq!(sim.report("node-2", "g1").epoch, 2);
    assert!(sim.activations("node-3").is_empty());
    let fo = sim.event("node-2", &events::GROUP_FAILOVER);
    assert_eq!(fo.peer.as_deref(), Some("node-1"));
    // Every activation carries the new epoch, persisted first.
    assert!(sim.activations("node-2").iter().all(|(_, e, _)| *e == 2));
    // node-1 comes back (its resources died with it: re-adoption cleans up), then node-2
    // fails: node-1 is first in the order again and takes it with epoch 3.
    let boot = sim.boot_state("node-1");
    assert_eq!(boot.owned.get("g1"), Some(&1));
    sim.restart("node-1", boot);
    sim.run(STARTUP + 2 * INTERVAL);
    assert!(sim.has("node-1", &events::GROUP_READOPT_CLEANUP));
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-2"));
    sim.kill("node-2");
    assert!(sim.run_until(3_000, |s| s.online_on("g1").is_some()));
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-1"));
    assert_eq!(sim.report("node-1", "g1").epoch, 3);
}

#[test]
fn quorum_loss_isolated_server_deactivates_and_majority_takes_over() {
    let mut sim = started(&three(""));
    sim.clear_logs();
    sim.isolate("node-1");
    assert!(sim.run_until(3_000, |s| s.online_on("g1").as_deref() == Some("node-2")));
    assert!(sim.has("node-1", &events::NO_QUORUM));
    assert!(!sim.eng("node-1").status().quorum);
    assert_eq!(sim.state("node-1", "g1"), GroupState::Offline);
    assert_eq!(
        sim.deactivations("node-1")
            .iter()
            .map(|d| d.0.as_str())
            .collect::<Vec<_>>(),
        ["app", "vip"]
    );
    assert!(sim.eng("node-2").status().quorum);
    assert_eq!(sim.report("node-2", "g1").epoch, 2);
    // The isolated server never activates anything while alone.
    sim.run(5_000);
    assert!(sim.activations("node-1").is_empty());
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-2"));
    // Healed: quorum again, the group stays where it is (no failback configured).
    sim.heal();
    sim.run(2_000);
    assert!(sim.has("node-1", &events::QUORUM_REGAINED));
    assert!(sim.eng("node-1").status().quorum);
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-2"));
    assert_eq!(sim.report("node-1", "g1").max_epoch, 2);
}

#[test]
fn two_of_three_down_leaves_no_quorum_anywhere() {
    let mut sim = started(&three(""));
    sim.kill("node-2");
    sim.kill("node-3");
    sim.run(3_000);
    assert!(sim.holders("g1").is_empty());
    assert!(sim.has("node-1", &events::NO_QUORUM));
}

// ---------------------------------------------------------------------------------------
// Resource lifecycle
// ---------------------------------------------------------------------------------------

fn chain_group() -> String {
    // Declared out of order on purpose: activation follows depends_on, not the file.
    cluster(
        3,
        r#"
[[group]]
name = "g1"
servers = ["node-1", "node-2", "node-3"]

[[group.resource]]
kind = "exec"
name = "app"
depends_on = ["db", "vip"]

[[group.resource]]
kind = "exec"
name = "db"
depends_on = ["disk"]

[[group.resource]]
kind = "floating-ip"
name = "vip"

[[group.resource]]
kind = "exec"
name = "disk"
"#,
    )
}

#[test]
fn activation_in_dependency_order_one_at_a_time_and_reverse_deactivation() {
    let mut sim = Sim::new(&chain_group());
    sim.set_manual("node-1", true);
    sim.run(STARTUP + 100);
    // Exactly one resource action at a time: answer them one by one.
    let mut order = Vec::new();
    for _ in 0..4 {
        let pending = sim.pending("node-1");
        assert_eq!(pending.len(), 1, "{pending:?}");
        match sim.answer_next("node-1").unwrap() {
            Action::Activate {
                resource, epoch, ..
            } => {
                assert_eq!(epoch, 1);
                order.push(resource);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            sim.state("node-1", "g1"),
            if order.len() < 4 {
                GroupState::Activating
            } else {
                GroupState::Online
            }
        );
    }
    assert_eq!(order, ["disk", "db", "vip", "app"]);
    assert!(sim.pending("node-1").is_empty());
    sim.set_manual("node-1", false);
    sim.clear_logs();
    sim.cmd("node-2", Command::GroupStop { group: "g1".into() })
        .unwrap();
    sim.run(1_000);
    assert_eq!(
        sim.deactivations("node-1")
            .iter()
            .map(|d| d.0.as_str())
            .collect::<Vec<_>>(),
        ["app", "vip", "db", "disk"]
    );
    assert!(sim.holders("g1").is_empty());
    assert_eq!(sim.group_status("node-3", "g1").desired, "stopped");
    assert!(sim.has("node-1", &events::GROUP_DEACTIVATED));
    assert!(sim.has("node-2", &events::GROUP_STOP_REQUESTED));
    // Stopped means stopped: nobody starts it.
    sim.run(3_000);
    assert!(sim.holders("g1").is_empty());
}

fn parallel_group(extra: &str) -> String {
    cluster(
        3,
        &format!(
            r#"
[[group]]
name = "g1"
servers = ["node-1", "node-2", "node-3"]
resource_order = "parallel"

[[group.resource]]
kind = "exec"
name = "app"
depends_on = ["vip", "route"]

[[group.resource]]
kind = "floating-ip"
name = "vip"
{extra}

[[group.resource]]
kind = "exec"
name = "route"
"#
        ),
    )
}

fn resource_states(sim: &Sim, s: &str) -> Vec<(String, ResourceState)> {
    sim.group_status(s, "g1")
        .resources
        .into_iter()
        .map(|r| (r.name, r.state))
        .collect()
}

#[test]
fn parallel_group_starts_independent_resources_together_and_stops_them_in_reverse() {
    let mut sim = Sim::new(&parallel_group(""));
    sim.set_manual("node-1", true);
    sim.run(STARTUP + 100);
    // vip and route depend on nothing: both start at once; app waits for both.
    assert_eq!(sim.queued("node-1", true), ["vip", "route"]);
    assert_eq!(
        resource_states(&sim, "node-1"),
        [
            ("vip".to_string(), ResourceState::Activating),
            ("route".to_string(), ResourceState::Activating),
            ("app".to_string(), ResourceState::Offline),
        ]
    );
    sim.answer_resource("node-1", "route");
    assert_eq!(sim.queued("node-1", true), ["vip"]);
    assert_eq!(
        resource_states(&sim, "node-1")[1],
        ("route".to_string(), ResourceState::Online)
    );
    assert_eq!(sim.state("node-1", "g1"), GroupState::Activating);
    sim.answer_resource("node-1", "vip");
    assert_eq!(sim.queued("node-1", true), ["app"]);
    sim.answer_resource("node-1", "app");
    assert_eq!(sim.state("node-1", "g1"), GroupState::Online);
    assert!(sim.pending("node-1").is_empty());
    // Stop: app first, then vip and route together.
    sim.cmd("node-2", Command::GroupStop { group: "g1".into() })
        .unwrap();
    sim.run(500);
    assert_eq!(sim.queued("node-1", false), ["app"]);
    sim.answer_resource("node-1", "app");
    assert_eq!(sim.queued("node-1", false), ["route", "vip"]);
    assert_eq!(sim.state("node-1", "g1"), GroupState::Deactivating);
    sim.answer_resource("node-1", "vip");
    assert_eq!(sim.queued("node-1", false), ["route"]);
    assert_eq!(
        resource_states(&sim, "node-1"),
        [
            ("vip".to_string(), ResourceState::Offline),
            ("route".to_string(), ResourceState::Deactivating),
            ("app".to_string(), ResourceState::Offline),
        ]
    );
    sim.answer_resource("node-1", "route");
    sim.run(500);
    assert!(sim.holders("g1").is_empty());
    assert!(sim.has("node-1", &events::GROUP_DEACTIVATED));
}

#[test]
fn parallel_step_failure_waits_for_the_rest_of_the_step_then_hands_over() {
    let mut sim = Sim::new(&parallel_group(""));
    sim.fail_activate("node-1", "vip", u32::MAX);
    sim.set_manual("node-1", true);
    sim.run(STARTUP + 100);
    assert_eq!(sim.queued("node-1", true), ["vip", "route"]);
    // vip fails for good (no retries) while route is still starting: nothing is undone
    // (and route is not stopped) before route's start has ended.
    sim.answer_resource("node-1", "vip");
    assert!(sim.has("node-1", &events::RESOURCE_ACTIVATION_FAILED));
    assert!(sim.queued("node-1", false).is_empty());
    assert_eq!(sim.queued("node-1", true), ["route"]);
    assert_eq!(
        resource_states(&sim, "node-1")[0],
        ("vip".to_string(), ResourceState::Failed)
    );
    sim.answer_resource("node-1", "route");
    // Then both are stopped together, app (never started) is not touched.
    assert_eq!(sim.queued("node-1", false), ["route", "vip"]);
    assert!(sim.has("node-1", &events::GROUP_ACTIVATION_FAILED));
    sim.set_manual("node-1", false);
    sim.run(3_000);
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-2"));
    assert!(!sim.activations("node-1").iter().any(|(r, _, _)| r == "app"));
}

#[test]
fn parallel_step_retries_one_resource_while_the_other_is_up() {
    let mut sim = Sim::new(&parallel_group("activate_retries = 1"));
    sim.fail_activate("node-1", "vip", 1);
    sim.set_manual("node-1", true);
    sim.run(STARTUP + 100);
    sim.answer_resource("node-1", "route");
    sim.answer_resource("node-1", "vip");
    // The retry of vip, alone; app still waits.
    assert_eq!(sim.queued("node-1", true), ["vip"]);
    sim.answer_resource("node-1", "vip");
    assert_eq!(sim.queued("node-1", true), ["app"]);
    sim.answer_resource("node-1", "app");
    assert_eq!(sim.state("node-1", "g1"), GroupState::Online);
    assert_eq!(
        sim.activations("node-1"),
        [
            ("vip".to_string(), 1, 0),
            ("route".to_string(), 1, 0),
            ("vip".to_string(), 1, 1),
            ("app".to_string(), 1, 0),
        ]
    );
}

#[test]
fn parallel_step_under_way_when_quorum_is_lost_is_undone_once_it_ends() {
    let mut sim = Sim::new(&parallel_group(""));
    sim.set_manual("node-1", true);
    sim.run(STARTUP + 100);
    assert_eq!(sim.queued("node-1", true), ["vip", "route"]);
    sim.isolate("node-1");
    sim.run(1_000);
    assert!(!sim.eng("node-1").status().quorum);
    sim.answer_resource("node-1", "vip");
    // The step is still under way (route): nothing is stopped yet, nothing new starts.
    assert!(sim.queued("node-1", false).is_empty());
    sim.answer_resource("node-1", "route");
    assert_eq!(sim.queued("node-1", true), Vec::<String>::new());
    assert_eq!(sim.queued("node-1", false), ["route", "vip"]);
}

#[test]
fn activation_retries_then_fails_over_to_next_server() {
    let text = cluster(3, &group_g1("", "activate_retries = 2"));
    let mut sim = Sim::new(&text);
    sim.fail_activate("node-1", "app", u32::MAX);
    sim.run(STARTUP + 2_000);
    assert_eq!(
        sim.activations("node-1"),
        [
            ("vip".to_string(), 1, 0),
            ("app".to_string(), 1, 0),
            ("app".to_string(), 1, 1),
            ("app".to_string(), 1, 2),
        ]
    );
    assert_eq!(sim.count("node-1", &events::RESOURCE_ACTIVATION_FAILED), 3);
    assert_eq!(sim.count("node-1", &events::GROUP_ACTIVATION_FAILED), 1);
    // What was touched is deactivated, in reverse.
    assert_eq!(
        sim.deactivations("node-1")
            .iter()
            .map(|d| d.0.as_str())
            .collect::<Vec<_>>(),
        ["app", "vip"]
    );
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-2"));
    assert_eq!(sim.report("node-2", "g1").epoch, 2);
    assert!(sim.report("node-1", "g1").excluded);
    assert_eq!(sim.group_status("node-3", "g1").excluded_on, ["node-1"]);
}

#[test]
fn excluded_server_is_chosen_only_when_nobody_else_can() {
    let text = cluster(3, &group_g1("", ""));
    let mut sim = Sim::new(&text);
    sim.fail_activate("node-1", "app", 1);
    sim.run(STARTUP + 1_000);
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-2"));
    // node-2 dies: node-3 is preferred over the excluded node-1.
    sim.kill("node-2");
    assert!(sim.run_until(3_000, |s| s.online_on("g1").is_some()));
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-3"));
    assert_eq!(sim.report("node-3", "g1").epoch, 3);
}

#[test]
fn failover_threshold_reached_runs_the_final_action() {
    // Fails everywhere: node-1 → node-2 → node-3 hand it on; then every server is
    // excluded, node-1 (first) tries again and its threshold (1) is used up.
    let text = cluster(3, &group_g1("", ""));
    let mut sim = Sim::new(&text);
    for s in ["node-1", "node-2", "node-3"] {
        sim.fail_activate(s, "app", u32::MAX);
    }
    sim.run(STARTUP + 5_000);
    for s in ["node-2", "node-3"] {
        assert_eq!(sim.count(s, &events::GROUP_ACTIVATION_FAILED), 1, "{s}");
        assert!(!sim.has(s, &events::GROUP_FINAL_ACTION), "{s}");
    }
    assert_eq!(sim.count("node-1", &events::GROUP_ACTIVATION_FAILED), 2);
    let fa = sim.event("node-1", &events::GROUP_FINAL_ACTION);
    assert_eq!(
        fa.fields.get("final_action"),
        Some(&serde_json::json!("none"))
    );
    assert_eq!(fa.group.as_deref(), Some("g1"));
    // Final action `none`: held as failed on node-1, never moved.
    assert_eq!(sim.state("node-1", "g1"), GroupState::Failed);
    // Status points at the resource that failed.
    let res = sim.group_status("node-1", "g1").resources;
    let app = res.iter().find(|r| r.name == "app").unwrap();
    assert_eq!(app.state, ResourceState::Failed, "{res:?}");
    assert!(
        res.iter()
            .filter(|r| r.name != "app")
            .all(|r| r.state == ResourceState::Unknown),
        "{res:?}"
    );
    assert_eq!(sim.report("node-1", "g1").epoch, 4);
    sim.run(5_000);
    assert_eq!(sim.holders("g1"), ["node-1"]);
    assert_eq!(
        sim.activations("node-2").len(),
        2,
        "vip + app once, not again"
    );
    // `group start` clears exclusions and counters: it is tried again... after a stop.
    sim.fail_act.clear();
    sim.cmd("node-2", Command::GroupStop { group: "g1".into() })
        .unwrap();
    assert!(sim.run_until(2_000, |s| s.holders("g1").is_empty()));
    sim.cmd(
        "node-2",
        Command::GroupStart {
            group: "g1".into(),
            on: None,
        },
    )
    .unwrap();
    assert!(sim.run_until(2_000, |s| s.online_on("g1").is_some()));
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-1"));
    assert!(sim.group_status("node-1", "g1").excluded_on.is_empty());
}

#[test]
fn final_action_stop_group_stops_it_everywhere() {
    let text = cluster(
        3,
        &group_g1(
            "",
            "activate_final_action = \"stop-group\"\nfailover_threshold = 0",
        ),
    );
    let mut sim = Sim::new(&text);
    sim.fail_activate("node-1", "app", u32::MAX);
    sim.run(STARTUP + 3_000);
    assert!(sim.has("node-1", &events::GROUP_FINAL_ACTION));
    assert!(sim.holders("g1").is_empty());
    for s in ["node-1", "node-2", "node-3"] {
        assert_eq!(sim.group_status(s, "g1").desired, "stopped", "{s}");
    }
    assert!(sim.activations("node-2").is_empty());
    assert!(sim.active.values().all(|v| v.is_empty()));
}

#[test]
fn final_action_shutdown_asks_for_the_system_command() {
    let text = cluster(
        3,
        &group_g1(
            "",
            "activate_final_action = \"shutdown\"\nfailover_threshold = 0",
        ),
    );
    let mut sim = Sim::new(&text);
    sim.fail_activate("node-1", "app", u32::MAX);
    sim.run(STARTUP + 1_000);
    assert!(sim.actions("node-1").iter().any(|a| matches!(
        a,
        Action::SystemCommand {
            which: FinalAction::Shutdown,
            // A monitor's final action is the operator's orderly command, not a fence.
            fence: false,
            ..
        }
    )));
    assert_eq!(sim.state("node-1", "g1"), GroupState::Failed);
}

#[test]
fn deactivation_failure_leaves_the_group_stuck_and_never_active_elsewhere() {
    let text = cluster(
        3,
        r#"
[[group]]
name = "g1"
servers = ["node-1", "node-2", "node-3"]
[[group.resource]]
kind = "floating-ip"
name = "vip"
deactivate_retries = 1
[[group.resource]]
kind = "exec"
name = "app"
depends_on = ["vip"]
"#,
    );
    let mut sim = started(&text);
    sim.fail_deactivate("node-1", "vip", u32::MAX);
    sim.cmd(
        "node-1",
        Command::GroupMove {
            group: "g1".into(),
            to: Some("node-2".into()),
        },
    )
    .unwrap();
    sim.run(1_000);
    assert_eq!(
        sim.deactivations("node-1"),
        [
            ("app".to_string(), 1, 0),
            ("vip".to_string(), 1, 0),
            ("vip".to_string(), 1, 1),
        ]
    );
    assert_eq!(sim.state("node-1", "g1"), GroupState::Stuck);
    assert!(sim.has("node-1", &events::GROUP_DEACTIVATION_FAILED));
    sim.run(10_000);
    assert_eq!(sim.holders("g1"), ["node-1"]);
    assert!(sim.activations("node-2").is_empty());
    assert!(sim.activations("node-3").is_empty());
    let st = sim.group_status("node-2", "g1");
    assert_eq!(st.state, GroupState::Stuck);
    assert_eq!(st.active_on.as_deref(), Some("node-1"));
}

#[test]
fn stuck_group_is_retried_by_group_start_after_manual_cleanup() {
    let text = cluster(3, &group_g1("", "deactivate_retries = 0"));
    let mut sim = started(&text);
    sim.fail_deactivate("node-1", "app", u32::MAX);
    sim.cmd("node-2", Command::GroupStop { group: "g1".into() })
        .unwrap();
    sim.run(1_000);
    assert_eq!(sim.state("node-1", "g1"), GroupState::Stuck);
    // The operator stops the application by hand, then starts the group again
    // (BTN-2106's documented action): the deactivation is retried and the group runs.
    sim.fail_deact.clear();
    sim.cmd(
        "node-2",
        Command::GroupStart {
            group: "g1".into(),
            on: None,
        },
    )
    .unwrap();
    assert!(sim.run_until(3_000, |s| s.online_on("g1").is_some()));
    assert_eq!(sim.report(&sim.online_on("g1").unwrap(), "g1").epoch, 2);
}

// ---------------------------------------------------------------------------------------
// Monitors and the recovery ladder
// ---------------------------------------------------------------------------------------

fn with_monitor(monitor: &str) -> String {
    three(monitor)
}

#[test]
fn monitor_ladder_script_restart_failover_then_final_action() {
    let text = with_monitor(
        r#"
[[monitor]]
kind = "exec"
name = "appmon"
group = "g1"
interval = "1s"
retries = 1
recovery = { target = "g1", script = "/usr/local/bin/fix", script_retries = 1, restart_retries = 2, failover_retries = 1, final_action = "stop-group" }
"#,
    );
    let mut sim = started(&text);
    assert_eq!(sim.monitor("node-1", "appmon").state, "normal");
    assert_eq!(sim.monitor("node-2", "appmon").state, "idle");
    sim.clear_logs();
    sim.probe("node-1", "appmon", Probe::Fail);
    // Two failed polls (retries = 1) → error → recovery script.
    sim.run(2_000);
    assert!(sim.has("node-1", &events::MONITOR_ERROR));
    assert_eq!(sim.count("node-1", &events::RECOVERY_SCRIPT), 1);
    assert!(sim.actions("node-1").iter().any(
        |a| matches!(a, Action::RecoveryScript { script, .. } if script == "/usr/local/bin/fix")
    ));
    let m = sim.monitor("node-1", "appmon");
    assert_eq!((m.scripts, m.restarts, m.failovers), (1, 0, 0));
    assert_eq!(m.state, "error");
    assert_eq!(m.last_error.as_deref(), Some("appmon failed"));
    // Then two restarts on node-1, each with a new epoch.
    assert!(sim.run_until(10_000, |s| s.monitor("node-1", "appmon").restarts == 2));
    assert_eq!(sim.count("node-1", &events::RECOVERY_RESTART), 2);
    assert_eq!(sim.report("node-1", "g1").epoch, 3);
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-1"));
    // Then the failover: node-1 gives it up (excluded), node-2 takes it (epoch 4).
    assert!(sim.run_until(10_000, |s| s.online_on("g1").as_deref() == Some("node-2")));
    assert_eq!(sim.count("node-1", &events::RECOVERY_FAILOVER), 1);
    assert_eq!(sim.report("node-2", "g1").epoch, 4);
    assert!(sim.report("node-1", "g1").excluded);
    let m = sim.monitor("node-1", "appmon");
    assert_eq!((m.scripts, m.restarts, m.failovers), (1, 2, 1));
    assert_eq!(
        m.state, "idle",
        "timing active: not polled where the group is not"
    );
    // node-2's monitor is healthy and has its own counters.
    sim.run(5_000);
    let m2 = sim.monitor("node-2", "appmon");
    assert_eq!(m2.state, "normal");
    assert_eq!((m2.scripts, m2.restarts, m2.failovers), (0, 0, 0));
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-2"));
    // Now it fails everywhere: node-2 and node-3 go through their ladders, then node-1
    // (first in order, every server excluded) gets it back and its ladder is used up.
    sim.probe("node-2", "appmon", Probe::Fail);
    sim.probe("node-3", "appmon", Probe::Fail);
    assert!(sim.run_until(60_000, |s| s.has("node-1", &events::RECOVERY_EXHAUSTED)));
    for s in ["node-2", "node-3"] {
        let m = sim.monitor(s, "appmon");
        assert_eq!((m.scripts, m.restarts, m.failovers), (1, 2, 1), "{s}");
    }
    assert!(sim.has("node-1", &events::GROUP_FINAL_ACTION));
    // stop-group: stopped everywhere, nobody runs it.
    sim.run(3_000);
    assert!(sim.holders("g1").is_empty());
    assert_eq!(sim.group_status("node-3", "g1").desired, "stopped");
    assert!(sim.active.values().all(|v| v.is_empty()));
}

#[test]
fn monitor_retries_before_error_and_success_resets_the_streak() {
    let text = with_monitor(
        r#"
[[monitor]]
kind = "exec"
name = "appmon"
group = "g1"
interval = "1s"
retries = 2
recovery = { target = "g1", restart_retries = 1 }
"#,
    );
    let mut sim = started(&text);
    sim.clear_logs();
    sim.probe("node-1", "appmon", Probe::Fail);
    sim.run(2_000);
    let m = sim.monitor("node-1", "appmon");
    assert_eq!(m.state, "warning");
    assert_eq!(m.fail_streak, 2);
    assert_eq!(
        sim.count("node-1", &events::MONITOR_WARNING),
        1,
        "once per streak"
    );
    assert!(!sim.has("node-1", &events::MONITOR_ERROR));
    // One success: the streak starts over.
    sim.probe("node-1", "appmon", Probe::Ok);
    sim.run(1_000);
    assert_eq!(sim.monitor("node-1", "appmon").state, "normal");
    assert_eq!(sim.monitor("node-1", "appmon").fail_streak, 0);
    sim.probe("node-1", "appmon", Probe::Fail);
    sim.run(2_000);
    assert!(!sim.has("node-1", &events::MONITOR_ERROR));
    // The third failure in a row is an error and starts recovery (a restart).
    sim.run(1_000);
    assert!(sim.has("node-1", &events::MONITOR_ERROR));
    assert_eq!(sim.count("node-1", &events::RECOVERY_RESTART), 1);
    assert_eq!(sim.report("node-1", "g1").epoch, 2);
}

#[test]
fn monitor_without_recovery_reports_error_and_normal_again() {
    let text = with_monitor(
        r#"
[[monitor]]
kind = "ping"
name = "gw"
interval = "1s"
retries = 0
"#,
    );
    let mut sim = started(&text);
    sim.probe("node-2", "gw", Probe::Fail);
    sim.run(2_000);
    assert_eq!(sim.monitor("node-2", "gw").state, "error");
    assert_eq!(
        sim.count("node-2", &events::MONITOR_ERROR),
        1,
        "once per error"
    );
    assert!(!sim.has("node-1", &events::MONITOR_ERROR));
    sim.probe("node-2", "gw", Probe::Ok);
    sim.run(1_000);
    assert_eq!(sim.count("node-2", &events::MONITOR_NORMAL), 1);
    assert_eq!(sim.monitor("node-2", "gw").last_latency_ms, Some(5));
    assert_eq!(sim.monitor("node-2", "gw").last_error, None);
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-1"));
}

#[test]
fn wait_to_start_delays_the_first_poll_after_activation() {
    let text = with_monitor(
        r#"
[[monitor]]
kind = "exec"
name = "appmon"
group = "g1"
interval = "1s"
wait_to_start = "5s"
"#,
    );
    let mut sim = Sim::new(&text);
    assert!(sim.run_until(5_000, |s| s.online_on("g1").is_some()));
    let online_at = sim.now;
    sim.run(4_500);
    assert_eq!(sim.probes_sent("node-1", "appmon"), 0);
    assert_eq!(sim.monitor("node-1", "appmon").state, "waiting");
    sim.run(1_000);
    assert_eq!(sim.probes_sent("node-1", "appmon"), 1);
    let first = sim.nodes[0]
        .log
        .iter()
        .find(|(_, a)| matches!(a, Action::Probe { .. }))
        .unwrap()
        .0;
    assert_eq!(first, online_at + 5_000);
    assert_eq!(sim.monitor("node-1", "appmon").state, "normal");
    // After a failover the wait starts again on the new server.
    sim.kill("node-1");
    assert!(sim.run_until(5_000, |s| s.online_on("g1").is_some()));
    sim.run(4_000);
    assert_eq!(sim.probes_sent("node-2", "appmon"), 0);
    sim.run(1_100);
    assert_eq!(sim.probes_sent("node-2", "appmon"), 1);
}

#[test]
fn timing_active_polls_only_where_the_group_runs_always_polls_everywhere() {
    let text = with_monitor(
        r#"
[[monitor]]
kind = "exec"
name = "appmon"
group = "g1"
interval = "1s"

[[monitor]]
kind = "ping"
name = "gw"
interval = "1s"
timing = "always"
"#,
    );
    let mut sim = started(&text);
    sim.clear_logs();
    sim.run(5_000);
    assert!(sim.probes_sent("node-1", "appmon") >= 4);
    for s in ["node-2", "node-3"] {
        assert_eq!(sim.probes_sent(s, "appmon"), 0, "{s}");
        assert_eq!(sim.monitor(s, "appmon").state, "idle");
    }
    for s in ["node-1", "node-2", "node-3"] {
        assert!(sim.probes_sent(s, "gw") >= 4, "{s}");
        assert_eq!(sim.monitor(s, "gw").state, "normal");
    }
    // Probes carry the monitor's timeout (default 60s).
    assert!(sim.actions("node-1").iter().any(|a| matches!(
        a,
        Action::Probe { monitor, timeout_ms: 60_000, .. } if monitor == "gw"
    )));
}

fn api_monitor(policy: &str) -> String {
    with_monitor(&format!(
        r#"
[[monitor]]
kind = "aws-az"
name = "az"
interval = "1s"
retries = 0
on_api_error = "{policy}"
recovery = {{ target = "g1", restart_retries = 1 }}
"#
    ))
}

#[test]
fn on_api_error_warn_raises_one_warning_and_no_recovery() {
    let mut sim = started(&api_monitor("warn"));
    sim.clear_logs();
    sim.probe("node-1", "az", Probe::ApiFail);
    sim.run(5_000);
    assert_eq!(sim.count("node-1", &events::MONITOR_API_ERROR), 1);
    assert!(!sim.has("node-1", &events::MONITOR_ERROR));
    assert!(!sim.has("node-1", &events::RECOVERY_RESTART));
    assert_eq!(sim.report("node-1", "g1").epoch, 1);
    assert_eq!(
        sim.monitor("node-1", "az").last_error.as_deref(),
        Some("az failed")
    );
    // A real failure (not an API error) is still a failure.
    sim.probe("node-1", "az", Probe::Fail);
    sim.run(1_000);
    assert!(sim.has("node-1", &events::MONITOR_ERROR));
    assert_eq!(sim.count("node-1", &events::RECOVERY_RESTART), 1);
}

#[test]
fn on_api_error_ignore_is_silent() {
    let mut sim = started(&api_monitor("ignore"));
    sim.clear_logs();
    sim.probe("node-1", "az", Probe::ApiFail);
    sim.run(5_000);
    assert!(!sim.has("node-1", &events::MONITOR_API_ERROR));
    assert!(!sim.has("node-1", &events::MONITOR_ERROR));
    assert!(!sim.has("node-1", &events::MONITOR_WARNING));
    assert_eq!(sim.report("node-1", "g1").epoch, 1);
}

#[test]
fn on_api_error_recover_treats_api_errors_as_failures() {
    let mut sim = started(&api_monitor("recover"));
    sim.clear_logs();
    sim.probe("node-1", "az", Probe::ApiFail);
    sim.run(1_500);
    assert!(!sim.has("node-1", &events::MONITOR_API_ERROR));
    assert!(sim.has("node-1", &events::MONITOR_ERROR));
    assert_eq!(sim.count("node-1", &events::RECOVERY_RESTART), 1);
}

#[test]
fn cluster_suspend_stops_polling_and_recovery_everywhere() {
    let text = with_monitor(
        r#"
[[monitor]]
kind = "exec"
name = "appmon"
group = "g1"
interval = "1s"
retries = 0
recovery = { target = "g1", restart_retries = 1 }
"#,
    );
    let mut sim = started(&text);
    sim.cmd("node-3", Command::ClusterSuspend).unwrap();
    sim.run(500);
    for s in ["node-1", "node-2", "node-3"] {
        assert!(sim.eng(s).status().suspended, "{s}");
        assert_eq!(sim.count(s, &events::CLUSTER_SUSPENDED), 1, "{s}");
    }
    assert_eq!(sim.monitor("node-1", "appmon").state, "suspended");
    sim.clear_logs();
    sim.probe("node-1", "appmon", Probe::Fail);
    sim.run(10_000);
    assert_eq!(sim.probes_sent("node-1", "appmon"), 0);
    assert!(!sim.has("node-1", &events::RECOVERY_RESTART));
    assert_eq!(sim.report("node-1", "g1").epoch, 1);
    // Resumed: polling and recovery again.
    sim.cmd("node-2", Command::ClusterResume).unwrap();
    sim.run(2_000);
    assert!(sim.has("node-1", &events::CLUSTER_RESUMED));
    assert!(sim.probes_sent("node-1", "appmon") >= 1);
    assert!(sim.has("node-1", &events::RECOVERY_RESTART));
}

#[test]
fn monitor_suspend_stops_only_that_monitor() {
    let text = with_monitor(
        r#"
[[monitor]]
kind = "exec"
name = "appmon"
group = "g1"
interval = "1s"
retries = 0
recovery = { target = "g1", restart_retries = 1 }

[[monitor]]
kind = "ping"
name = "gw"
interval = "1s"
timing = "always"
"#,
    );
    let mut sim = started(&text);
    sim.cmd(
        "node-2",
        Command::MonitorSuspend {
            monitor: "appmon".into(),
        },
    )
    .unwrap();
    sim.run(500);
    assert!(sim.has("node-1", &events::MONITOR_SUSPENDED));
    sim.clear_logs();
    sim.probe("node-1", "appmon", Probe::Fail);
    sim.run(5_000);
    assert_eq!(sim.probes_sent("node-1", "appmon"), 0);
    assert!(sim.probes_sent("node-1", "gw") >= 4);
    assert_eq!(sim.monitor("node-1", "appmon").state, "suspended");
    assert_eq!(sim.monitor("node-1", "gw").state, "normal");
    assert_eq!(sim.report("node-1", "g1").epoch, 1);
    sim.cmd(
        "node-2",
        Command::MonitorResume {
            monitor: "appmon".into(),
        },
    )
    .unwrap();
    sim.run(1_000);
    assert!(sim.has("node-1", &events::MONITOR_RESUMED));
    assert!(sim.probes_sent("node-1", "appmon") >= 1);
    assert!(sim.has("node-1", &events::RECOVERY_RESTART));
    assert_eq!(
        sim.cmd(
            "node-1",
            Command::MonitorSuspend {
                monitor: "nope".into()
            }
        ),
        Err(CommandError::UnknownMonitor("nope".into()))
    );
}

#[test]
fn resource_restart_restarts_it_and_its_dependents_with_the_same_epoch() {
    let text = with_monitor(
        r#"
[[monitor]]
kind = "exec"
name = "vipmon"
group = "g1"
interval = "1s"
retries = 0
recovery = { target = "vip", restart_retries = 1, failover_retries = 0 }
"#,
    );
    let mut sim = started(&text);
    sim.clear_logs();
    sim.probe("node-1", "vipmon", Probe::Fail);
    sim.run(1_000);
    sim.probe("node-1", "vipmon", Probe::Ok);
    assert_eq!(sim.count("node-1", &events::RECOVERY_RESTART), 1);
    let ev = sim.event("node-1", &events::RECOVERY_RESTART);
    assert_eq!(ev.resource.as_deref(), Some("vip"));
    assert_eq!(
        sim.deactivations("node-1"),
        [("app".to_string(), 1, 0), ("vip".to_string(), 1, 0)]
    );
    assert_eq!(
        sim.activations("node-1"),
        [("vip".to_string(), 1, 0), ("app".to_string(), 1, 0)]
    );
    assert_eq!(sim.state("node-1", "g1"), GroupState::Online);
    assert_eq!(sim.report("node-1", "g1").epoch, 1);
}

#[test]
fn failed_resource_restart_releases_the_whole_group() {
    // app is restarted alone; its activation fails; the group is handed over. vip, which
    // stayed up during the restart, must be deactivated too before node-2 takes over.
    let text = with_monitor(
        r#"
[[monitor]]
kind = "exec"
name = "appmon"
group = "g1"
interval = "1s"
retries = 0
recovery = { target = "app", restart_retries = 1 }
"#,
    );
    let mut sim = started(&text);
    sim.clear_logs();
    sim.probe("node-1", "appmon", Probe::Fail);
    sim.fail_activate("node-1", "app", u32::MAX);
    assert!(sim.run_until(5_000, |s| s.online_on("g1").as_deref() == Some("node-2")));
    assert_eq!(
        sim.deactivations("node-1")
            .iter()
            .map(|d| d.0.as_str())
            .collect::<Vec<_>>(),
        ["app", "app", "vip"]
    );
    assert!(!sim.active["vip"].contains("node-1"));
    assert!(!sim.active["app"].contains("node-1"));
}

#[test]
fn restart_does_not_reactivate_after_quorum_is_lost() {
    let text = with_monitor(
        r#"
[[monitor]]
kind = "exec"
name = "appmon"
group = "g1"
interval = "1s"
retries = 0
recovery = { target = "g1", restart_retries = 1 }
"#,
    );
    let mut sim = started(&text);
    sim.probe("node-1", "appmon", Probe::Fail);
    sim.set_manual("node-1", true);
    // Answer node-1's actions by hand until the restart's first deactivation is pending.
    let end = sim.now + 3_000;
    loop {
        assert!(sim.now < end);
        let p = sim.pending("node-1");
        if p.iter().any(|a| matches!(a, Action::Deactivate { .. })) {
            break;
        }
        if p.is_empty() {
            sim.round();
        } else {
            sim.answer_next("node-1");
        }
    }
    assert!(sim.has("node-1", &events::RECOVERY_RESTART));
    // The deactivation hangs while node-1 is cut off; it loses quorum meanwhile. (The
    // majority may take over while node-1's resources are still being stopped: its copy
    // is stale, with a lower epoch; `takeover_waits_until_the_cut_off_holder_has_fenced_itself`
    // covers the wait that bounds this window.)
    sim.allow_stale_holder("node-1");
    sim.isolate("node-1");
    sim.run(2 * TIMEOUT);
    assert!(!sim.eng("node-1").status().quorum);
    sim.clear_logs();
    sim.set_manual("node-1", false);
    sim.run(500);
    assert!(
        sim.activations("node-1").is_empty(),
        "no activation without quorum: {:?}",
        sim.actions("node-1")
    );
    assert_eq!(sim.state("node-1", "g1"), GroupState::Offline);
    assert!(!sim.active["vip"].contains("node-1"));
}

#[test]
fn failed_activation_is_not_retried_without_quorum() {
    let mut sim = Sim::new(&cluster(
        3,
        &group_g1("", "").replace(
            "ip = \"10.1.0.20\"",
            "ip = \"10.1.0.20\"\nactivate_retries = 3",
        ),
    ));
    sim.set_manual("node-1", true);
    sim.run(STARTUP + 100);
    let p = sim.pending("node-1");
    assert!(matches!(&p[..], [Action::Activate { resource, .. }] if resource == "vip"));
    // node-1 keeps its stale copy while cut off; the majority's is newer.
    sim.allow_stale_holder("node-1");
    sim.isolate("node-1");
    sim.run(2 * TIMEOUT);
    sim.clear_logs();
    // The pending activation fails after quorum is gone: no retry, no exclusion.
    sim.fail_activate("node-1", "vip", u32::MAX);
    sim.set_manual("node-1", false);
    sim.run(500);
    assert!(
        sim.activations("node-1").is_empty(),
        "{:?}",
        sim.activations("node-1")
    );
    assert_eq!(sim.deactivations("node-1").len(), 1, "vip is cleaned up");
    assert_eq!(sim.state("node-1", "g1"), GroupState::Offline);
    assert!(!sim.report("node-1", "g1").excluded);
}

#[test]
fn activation_is_abandoned_when_quorum_is_lost_midway() {
    let mut sim = Sim::new(&three(""));
    sim.set_manual("node-1", true);
    sim.run(STARTUP + 100);
    // vip is being activated on node-1; it loses quorum before answering.
    let p = sim.pending("node-1");
    assert!(matches!(&p[..], [Action::Activate { resource, .. }] if resource == "vip"));
    // node-1 keeps its stale copy while cut off; the majority's is newer.
    sim.allow_stale_holder("node-1");
    sim.isolate("node-1");
    sim.run(2 * TIMEOUT);
    sim.set_manual("node-1", false);
    sim.run(500);
    assert!(
        !sim.activations("node-1").iter().any(|a| a.0 == "app"),
        "app must not be started without quorum"
    );
    assert_eq!(sim.state("node-1", "g1"), GroupState::Offline);
    assert!(!sim.active["vip"].contains("node-1"));
}

// ---------------------------------------------------------------------------------------
// Operator commands
// ---------------------------------------------------------------------------------------

fn mv(to: Option<&str>) -> Command {
    Command::GroupMove {
        group: "g1".into(),
        to: to.map(String::from),
    }
}

#[test]
fn group_move_to_a_named_server() {
    let mut sim = started(&three(""));
    sim.clear_logs();
    sim.cmd("node-2", mv(Some("node-3"))).unwrap();
    assert!(sim.has("node-2", &events::GROUP_MOVE));
    assert!(sim.run_until(2_000, |s| s.online_on("g1").as_deref() == Some("node-3")));
    assert_eq!(sim.report("node-3", "g1").epoch, 2);
    assert!(sim.activations("node-2").is_empty());
    assert!(
        !sim.report("node-1", "g1").excluded,
        "a move is not a failure"
    );
    // It stays there.
    sim.run(5_000);
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-3"));
    assert_eq!(sim.report("node-3", "g1").epoch, 2);
}

#[test]
fn group_move_to_next_walks_the_order_and_wraps() {
    let mut sim = started(&three(""));
    for (expect, epoch) in [("node-2", 2), ("node-3", 3), ("node-1", 4)] {
        sim.cmd("node-1", mv(None)).unwrap();
        assert!(
            sim.run_until(2_000, |s| s.online_on("g1").as_deref() == Some(expect)),
            "to {expect}"
        );
        assert_eq!(sim.report(expect, "g1").epoch, epoch);
        sim.run(1_000);
        assert_eq!(sim.online_on("g1").as_deref(), Some(expect), "stays");
    }
}

#[test]
fn group_move_errors() {
    let mut sim = started(&cluster(
        4,
        &format!(
            "{}\n[quorum]\nwitness = {{ kind = \"http\", url = \"http://10.0.9.9:7430\" }}\n",
            group_g1("", "")
        ),
    ));
    let err = |sim: &mut Sim, c: Command| sim.cmd("node-1", c).unwrap_err();
    assert_eq!(
        err(
            &mut sim,
            Command::GroupMove {
                group: "nope".into(),
                to: None
            }
        ),
        CommandError::UnknownGroup("nope".into())
    );
    assert_eq!(
        err(&mut sim, mv(Some("node-9"))),
        CommandError::UnknownServer("node-9".into())
    );
    let e = err(&mut sim, mv(Some("node-4")));
    assert_eq!(e.code(), "not-in-group");
    assert_eq!(
        e.to_string(),
        "server `node-4` is not in group `g1`'s server list"
    );
    sim.kill("node-3");
    sim.run(2 * TIMEOUT);
    let e = err(&mut sim, mv(Some("node-3")));
    assert_eq!(e.code(), "invalid");
    assert!(e.to_string().contains("node-3"), "{e}");
    sim.kill("node-2");
    sim.run(2 * TIMEOUT);
    // node-1, node-4 and no witness vote: 2 of 5 → no quorum, nobody eligible.
    assert_eq!(err(&mut sim, mv(None)), CommandError::NoTarget("g1".into()));
}

#[test]
fn group_stop_and_start_clear_exclusions() {
    let mut sim = Sim::new(&three(""));
    sim.fail_activate("node-1", "app", 1);
    sim.run(STARTUP + 1_000);
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-2"));
    assert!(sim.report("node-1", "g1").excluded);
    sim.cmd("node-3", Command::GroupStop { group: "g1".into() })
        .unwrap();
    assert!(sim.run_until(2_000, |s| s.holders("g1").is_empty()));
    assert!(sim.report("node-1", "g1").excluded, "stop keeps exclusions");
    sim.cmd(
        "node-3",
        Command::GroupStart {
            group: "g1".into(),
            on: None,
        },
    )
    .unwrap();
    // Start clears exclusions: first in the order again.
    assert!(sim.run_until(2_000, |s| s.online_on("g1").is_some()));
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-1"));
    assert!(!sim.report("node-1", "g1").excluded);
    assert_eq!(sim.report("node-1", "g1").epoch, 3);
    assert!(sim.group_status("node-2", "g1").excluded_on.is_empty());
    assert_eq!(
        sim.cmd(
            "node-3",
            Command::GroupStart {
                group: "g1".into(),
                on: Some("node-7".into())
            }
        ),
        Err(CommandError::UnknownServer("node-7".into()))
    );
}

fn failback(on: bool) -> String {
    cluster(3, &group_g1(&format!("failback = {on}"), ""))
}

#[test]
fn failback_on_returns_the_group_to_the_preferred_server() {
    let mut sim = started(&failback(true));
    sim.kill("node-1");
    assert!(sim.run_until(3_000, |s| s.online_on("g1").as_deref() == Some("node-2")));
    sim.restart("node-1", Boot::default());
    assert!(sim.run_until(5_000, |s| s.online_on("g1").as_deref() == Some("node-1")));
    assert_eq!(sim.report("node-1", "g1").epoch, 3);
    let ev = sim.event("node-2", &events::GROUP_MOVE);
    assert!(
        ev.message.contains("fails back to node-1"),
        "{}",
        ev.message
    );
}

#[test]
fn failback_off_leaves_the_group_where_it_is() {
    let mut sim = started(&failback(false));
    sim.kill("node-1");
    assert!(sim.run_until(3_000, |s| s.online_on("g1").as_deref() == Some("node-2")));
    sim.restart("node-1", Boot::default());
    sim.run(10_000);
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-2"));
    assert_eq!(sim.report("node-2", "g1").epoch, 2);
}

#[test]
fn failback_does_not_return_to_an_excluded_server() {
    let mut sim = Sim::new(&failback(true));
    sim.fail_activate("node-1", "app", 1);
    sim.run(STARTUP + 5_000);
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-2"));
    assert_eq!(sim.report("node-2", "g1").epoch, 2);
}

#[test]
fn manual_move_never_loops_back() {
    for fb in [false, true] {
        let mut sim = started(&failback(fb));
        sim.cmd("node-1", mv(Some("node-3"))).unwrap();
        assert!(sim.run_until(2_000, |s| s.online_on("g1").as_deref() == Some("node-3")));
        sim.run(10_000);
        assert_eq!(
            sim.online_on("g1").as_deref(),
            Some("node-3"),
            "failback = {fb}"
        );
        assert_eq!(sim.report("node-3", "g1").epoch, 2, "failback = {fb}");
        // Once moved, the request is spent: a later failover follows the order and the
        // group does not go back to node-3 by itself.
        sim.kill("node-3");
        assert!(sim.run_until(3_000, |s| s.online_on("g1").is_some()));
        assert_eq!(sim.online_on("g1").as_deref(), Some("node-1"));
        sim.restart("node-3", Boot::default());
        sim.run(5_000);
        assert_eq!(
            sim.online_on("g1").as_deref(),
            Some("node-1"),
            "failback = {fb}"
        );
    }
}

#[test]
fn timeout_set_applies_everywhere_and_reverts_by_itself() {
    let text = with_monitor(
        r#"
[[monitor]]
kind = "ping"
name = "gw"
interval = "1s"
timeout = "3s"
timing = "always"
"#,
    );
    let mut sim = started(&text);
    // Validation.
    let e = sim
        .cmd(
            "node-1",
            Command::TimeoutSet {
                heartbeat_timeout_ms: 300,
                monitor_factor_pct: 100,
                duration_ms: 1_000,
            },
        )
        .unwrap_err();
    assert_eq!(e.code(), "invalid");
    assert!(e.to_string().contains("3 × the heartbeat interval"), "{e}");
    assert!(sim
        .cmd(
            "node-1",
            Command::TimeoutSet {
                heartbeat_timeout_ms: 5_000,
                monitor_factor_pct: 200,
                duration_ms: 0,
            },
        )
        .is_err());
    sim.cmd(
        "node-2",
        Command::TimeoutSet {
            heartbeat_timeout_ms: 5_000,
            monitor_factor_pct: 200,
            duration_ms: 20_000,
        },
    )
    .unwrap();
    sim.run(INTERVAL * 2);
    for s in ["node-1", "node-2", "node-3"] {
        let st = sim.eng(s).status();
        assert_eq!(st.heartbeat_timeout_ms, 5_000, "{s}");
        assert_eq!(st.monitor_factor_pct, 200, "{s}");
        assert!(st.timeout_override_remaining_ms.unwrap() > 19_000, "{s}");
        assert_eq!(sim.count(s, &events::TIMEOUT_SCALED), 1, "{s}");
    }
    sim.clear_logs();
    sim.run(1_500);
    assert!(sim.actions("node-1").iter().any(|a| matches!(
        a,
        Action::Probe {
            timeout_ms: 6_000,
            ..
        }
    )));
    // A 3 s silence is not a failure under the temporary 5 s timeout.
    sim.kill("node-1");
    sim.run(3_000);
    assert!(!sim.has("node-2", &events::SERVER_DOWN));
    assert!(sim.activations("node-2").is_empty());
    sim.restart("node-1", sim.boot_state("node-1"));
    // The restarted server's resources died with it (kill): the check fails, it cleans up
    // and the group is placed again.
    assert!(sim.run_until(10_000, |s| s.online_on("g1").is_some()));
    // After 20 s everything is back to the configured values, with one event.
    sim.run(20_000);
    for s in ["node-2", "node-3"] {
        let st = sim.eng(s).status();
        assert_eq!(st.heartbeat_timeout_ms, TIMEOUT, "{s}");
        assert_eq!(st.monitor_factor_pct, 100, "{s}");
        assert_eq!(st.timeout_override_remaining_ms, None, "{s}");
        assert_eq!(sim.count(s, &events::TIMEOUT_REVERTED), 1, "{s}");
    }
    sim.clear_logs();
    sim.run(1_500);
    assert!(sim.actions("node-2").iter().any(|a| matches!(
        a,
        Action::Probe {
            timeout_ms: 3_000,
            ..
        }
    )));
}

#[test]
fn timeout_clear_reverts_at_once() {
    let mut sim = started(&three(""));
    sim.cmd(
        "node-1",
        Command::TimeoutSet {
            heartbeat_timeout_ms: 5_000,
            monitor_factor_pct: 0,
            duration_ms: 60_000,
        },
    )
    .unwrap();
    sim.run(500);
    assert_eq!(sim.eng("node-3").status().heartbeat_timeout_ms, 5_000);
    sim.cmd("node-3", Command::TimeoutClear).unwrap();
    sim.run(500);
    for s in ["node-1", "node-2", "node-3"] {
        assert_eq!(sim.eng(s).status().heartbeat_timeout_ms, TIMEOUT, "{s}");
        assert_eq!(sim.count(s, &events::TIMEOUT_REVERTED), 1, "{s}");
    }
}

#[test]
fn shutdown_deactivates_in_reverse_then_exits_and_the_next_server_takes_over() {
    let mut sim = started(&three(""));
    sim.clear_logs();
    sim.cmd("node-1", Command::Shutdown).unwrap();
    assert!(sim.has("node-1", &events::AGENT_STOPPING));
    let acts = sim.actions("node-1");
    let names: Vec<&str> = acts
        .iter()
        .filter_map(|a| match a {
            Action::Deactivate { resource, .. } => Some(resource.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["app", "vip"]);
    let exit = acts
        .iter()
        .position(|a| matches!(a, Action::Exit { .. }))
        .unwrap();
    let last_deact = acts
        .iter()
        .rposition(|a| matches!(a, Action::Deactivate { .. }))
        .unwrap();
    assert!(exit > last_deact);
    assert!(matches!(&acts[exit], Action::Exit { reason } if reason == "all groups are offline"));
    assert!(sim.eng("node-1").status().stopping);
    // While it is still alive (leaving), the others do not choose it; node-2 takes over.
    assert!(sim.run_until(2_000, |s| s.online_on("g1").as_deref() == Some("node-2")));
    assert!(sim.activations("node-1").is_empty());
    sim.kill("node-1");
    sim.run(3_000);
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-2"));
}

#[test]
fn cluster_stop_stops_every_group_and_every_agent() {
    let mut sim = started(&three(""));
    sim.clear_logs();
    sim.cmd("node-3", Command::ClusterStop).unwrap();
    sim.run(1_000);
    for s in ["node-1", "node-2", "node-3"] {
        assert_eq!(
            sim.actions(s)
                .iter()
                .filter(|a| matches!(a, Action::Exit { .. }))
                .count(),
            1,
            "{s}"
        );
        assert!(sim.activations(s).is_empty(), "{s}");
    }
    assert!(sim.holders("g1").is_empty());
    assert!(sim.has("node-3", &events::CLUSTER_STOP));
}

#[test]
fn shutdown_with_a_stuck_group_keeps_holding_it() {
    // A stuck group keeps the agent up (its peers see the group held and never start it
    // elsewhere) until the shell's shutdown deadline, or until a repair lets it stop.
    let text = cluster(3, &group_g1("", "deactivate_retries = 0"));
    let mut sim = started(&text);
    sim.fail_deactivate("node-1", "app", 1);
    sim.cmd("node-1", Command::Shutdown).unwrap();
    sim.run(2_000);
    assert_eq!(sim.state("node-1", "g1"), GroupState::Stuck);
    let exits = |sim: &Sim| {
        sim.actions("node-1")
            .into_iter()
            .filter(|a| matches!(a, Action::Exit { .. }))
            .count()
    };
    assert_eq!(exits(&sim), 0, "no exit while stuck");
    assert!(sim.activations("node-2").is_empty() && sim.activations("node-3").is_empty());
    // The operator repairs the resource and asks again: the deactivation is retried,
    // then the agent exits and the next server takes over.
    sim.cmd(
        "node-2",
        Command::GroupStart {
            group: "g1".into(),
            on: None,
        },
    )
    .unwrap();
    assert!(sim.run_until(3_000, |s| exits(s) == 1));
    assert!(sim.run_until(3_000, |s| s.online_on("g1").as_deref() == Some("node-2")));
}

// ---------------------------------------------------------------------------------------
// Configuration digest
// ---------------------------------------------------------------------------------------

fn other_config() -> Config {
    // Same servers and group, one value changed: another digest.
    let text = three("").replace("10.1.0.20", "10.1.0.21");
    let cfg = parse(&text);
    assert_ne!(cfg.digest, parse(&three("")).digest);
    cfg
}

#[test]
fn digest_minority_refuses_to_activate_and_everybody_warns() {
    // node-1 runs another configuration and is first in the group's order.
    let base = parse(&three(""));
    let mut sim = Sim::with_configs(vec![other_config(), base.clone(), base]);
    sim.run(STARTUP + 2_000);
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-2"));
    assert!(sim.activations("node-1").is_empty());
    assert_eq!(sim.count("node-1", &events::ACTIVATION_REFUSED_DIGEST), 1);
    assert!(sim.eng("node-1").status().refused);
    for s in ["node-2", "node-3"] {
        assert!(!sim.has(s, &events::ACTIVATION_REFUSED_DIGEST), "{s}");
        assert!(!sim.eng(s).status().refused, "{s}");
    }
    // Every server warns (once per peer and digest).
    assert_eq!(sim.count("node-1", &events::CONFIG_DIGEST_MISMATCH), 2);
    for s in ["node-2", "node-3"] {
        let ev: Vec<Event> = sim
            .events(s)
            .into_iter()
            .filter(|e| e.id == events::CONFIG_DIGEST_MISMATCH.code())
            .collect();
        assert_eq!(ev.len(), 1, "{s}");
        assert_eq!(ev[0].peer.as_deref(), Some("node-1"));
    }
    let st = sim.eng("node-2").status();
    let n1 = st.servers.iter().find(|x| x.name == "node-1").unwrap();
    assert!(!n1.digest_matches);
    assert!(n1.refused);
    // A refusing server cannot be chosen either.
    assert_eq!(
        sim.cmd("node-2", mv(Some("node-1"))).unwrap_err().code(),
        "invalid"
    );
}

#[test]
fn digest_tie_is_won_by_the_lowest_named_server() {
    let a = parse(&cluster(2, &group_g1("", "").replace(r#", "node-3""#, "")));
    let b = parse(
        &cluster(2, &group_g1("", "").replace(r#", "node-3""#, ""))
            .replace("10.1.0.20", "10.1.0.99"),
    );
    // node-1 runs b, node-2 runs a: a tie; node-1's digest wins.
    let mut sim = Sim::with_configs(vec![b, a]);
    sim.run(STARTUP + 2_000);
    assert!(!sim.eng("node-1").status().refused);
    assert!(sim.eng("node-2").status().refused);
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-1"));
    assert!(sim.has("node-2", &events::ACTIVATION_REFUSED_DIGEST));
    assert!(sim.has("node-1", &events::CONFIG_DIGEST_MISMATCH));
    assert!(sim.has("node-2", &events::CONFIG_DIGEST_MISMATCH));
}

// ---------------------------------------------------------------------------------------
// Re-adoption after an agent restart
// ---------------------------------------------------------------------------------------

#[test]
fn readoption_without_flap() {
    let mut sim = started(&three(""));
    let boot = sim.boot_state("node-1");
    assert_eq!(boot.owned.get("g1"), Some(&1));
    assert_eq!(boot.epochs.get("g1"), Some(&1));
    sim.clear_logs();
    // The agent restarts in place (its resources keep running), within the heartbeat
    // timeout: the peers never see it down.
    sim.restart("node-1", boot);
    let checks: Vec<String> = sim
        .actions("node-1")
        .into_iter()
        .filter_map(|a| match a {
            Action::Check {
                resource, epoch: 1, ..
            } => Some(resource),
            _ => None,
        })
        .collect();
    assert_eq!(checks.len(), 2, "{checks:?}");
    assert!(
        !sim.eng("node-1").status().ready,
        "not ready before the startup wait"
    );
    sim.run(STARTUP + 1_000);
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-1"));
    assert_eq!(sim.report("node-1", "g1").epoch, 1, "same epoch");
    assert!(sim.activations("node-1").is_empty(), "no flap");
    assert!(sim.deactivations("node-1").is_empty(), "no flap");
    for s in ["node-2", "node-3"] {
        assert!(sim.activations(s).is_empty(), "{s}");
    }
    let ev = sim.event("node-1", &events::GROUP_READOPTED);
    assert_eq!(ev.epoch, Some(1));
}

#[test]
fn readoption_cleans_up_when_another_server_holds_the_group() {
    let mut sim = started(&three(""));
    let boot = sim.boot_state("node-1");
    // node-1's agent hangs (no heartbeats, resources still up) long enough for node-2 to
    // take over; when it comes back it must not keep its copy. (Its resources and node-2's
    // overlap while it hangs: the fencing epoch, not the engine, protects that window.)
    sim.allow_stale_holder("node-1");
    sim.nodes[0].alive = false;
    assert!(sim.run_until(3_000, |s| s.online_on("g1").as_deref() == Some("node-2")));
    sim.clear_logs();
    sim.restart("node-1", boot);
    sim.run(STARTUP + 1_000);
    sim.strict();
    assert!(sim.has("node-1", &events::GROUP_READOPT_CLEANUP));
    let ev = sim.event("node-1", &events::GROUP_READOPT_CLEANUP);
    assert!(ev.message.contains("node-2 now holds it"), "{}", ev.message);
    assert_eq!(
        sim.deactivations("node-1")
            .iter()
            .map(|d| (d.0.as_str(), d.1))
            .collect::<Vec<_>>(),
        [("app", 1), ("vip", 1)]
    );
    assert!(sim.activations("node-1").is_empty());
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-2"));
    assert_eq!(sim.state("node-1", "g1"), GroupState::Offline);
    assert!(!sim.active["vip"].contains("node-1"));
    sim.run(3_000);
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-2"));
}

#[test]
fn a_server_fenced_while_re_adopting_without_quorum_does_not_fence_again_after_its_reboot() {
    // node-1 holds g1; its agent restarts in place (resources up) while node-2 and
    // node-3 are down. Without quorum it must have stopped g1 within the fence deadline,
    // counted from its start, which ends before the startup wait: it reboots.
    let mut sim = started(&three(""));
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-1"));
    sim.kill("node-2");
    sim.kill("node-3");
    let boot = sim.boot_state("node-1");
    sim.clear_logs();
    sim.restart("node-1", boot);
    assert!(sim.run_until(STARTUP, |s| s.has("node-1", &events::FENCE_DEADLINE_MISSED)));
    // The reboot stops its resources. The next start finds them stopped: it cleans the
    // group up at once, before the startup wait and the fence deadline, instead of
    // re-adopting, missing the deadline and rebooting again for as long as its peers
    // stay down.
    sim.kill("node-1");
    let boot = sim.boot_state("node-1");
    assert!(boot.owned.contains_key("g1"), "{:?}", boot.owned);
    sim.clear_logs();
    sim.restart("node-1", boot);
    sim.run(STARTUP + 3_000);
    assert!(
        !sim.has("node-1", &events::FENCE_DEADLINE_MISSED),
        "{:?}",
        sim.events("node-1")
    );
    assert!(!sim
        .actions("node-1")
        .iter()
        .any(|a| matches!(a, Action::SystemCommand { .. })));
    let ev = sim.event("node-1", &events::GROUP_READOPT_CLEANUP);
    assert!(
        ev.message.contains("not every resource checked active"),
        "{}",
        ev.message
    );
    assert_eq!(sim.state("node-1", "g1"), GroupState::Offline);
    assert!(sim.activations("node-1").is_empty());
    // Its peers come back: the group runs again, under a new epoch.
    let boot = sim.boot_state("node-2");
    sim.restart("node-2", boot);
    let boot = sim.boot_state("node-3");
    sim.restart("node-3", boot);
    assert!(sim.run_until(STARTUP + 5_000, |s| s.online_on("g1").is_some()));
}

#[test]
fn readoption_cleans_up_when_a_resource_is_not_active() {
    let mut sim = started(&three(""));
    let boot = sim.boot_state("node-1");
    sim.checks
        .insert(("node-1".into(), "app".into()), CheckResult::Degraded);
    sim.clear_logs();
    sim.restart("node-1", boot);
    // node-1 cleans it up at once (the check answered at once), before the startup
    // wait: the cleanup does not depend on what that wait would show.
    assert_eq!(sim.state("node-1", "g1"), GroupState::Offline);
    assert!(sim.has("node-1", &events::GROUP_READOPT_CLEANUP));
    sim.run(STARTUP + 3_000);
    let ev = sim.event("node-1", &events::GROUP_READOPT_CLEANUP);
    assert!(
        ev.message
            .contains("not every resource checked active: app degraded"),
        "{}",
        ev.message
    );
    // Cleaned up, then placed by the normal rules: node-1 is first, with a new epoch.
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-1"));
    assert_eq!(sim.report("node-1", "g1").epoch, 2);
    assert!(sim.activations("node-2").is_empty());
}

// ---------------------------------------------------------------------------------------
// Partitions
// ---------------------------------------------------------------------------------------

#[test]
fn non_transitive_partition_does_not_start_a_second_copy() {
    let mut sim = started(&three(""));
    // node-1 and node-2 cannot hear each other, node-3 hears both. node-2 (with node-3, a
    // majority) sees node-1 down, but node-3 reports that it still sees node-1 holding the
    // group: node-2 must not start a second copy.
    sim.cut_all("node-1", "node-2");
    sim.run(5_000);
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-1"));
    assert!(sim.activations("node-2").is_empty());
    assert!(sim.activations("node-3").is_empty());
    // Healing changes nothing.
    sim.heal();
    sim.run(2_000);
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-1"));
    assert_eq!(sim.report("node-1", "g1").epoch, 1);
}

#[test]
fn dual_holders_lower_epoch_yields() {
    // Built by hand: node-1 re-adopts epoch 4 and node-2 epoch 6 while they cannot hear
    // each other; node-3 hears both and relays what it sees, so the lower epoch yields
    // before the partition heals, and nothing changes when it does.
    let text = three("");
    let mut sim = Sim::new(&text);
    sim.allow_stale_holder("node-1");
    sim.cut_all("node-1", "node-2");
    for (server, epoch) in [("node-1", 4u64), ("node-2", 6)] {
        let boot = Boot {
            incarnation: 1,
            epochs: BTreeMap::from([("g1".to_string(), epoch)]),
            owned: BTreeMap::from([("g1".to_string(), epoch)]),
            fencing: false,
        };
        for s in ["vip", "app"] {
            sim.active
                .entry(s.into())
                .or_default()
                .insert(server.into());
        }
        sim.restart(server, boot);
    }
    sim.run(STARTUP + 2_000);
    assert_eq!(sim.state("node-1", "g1"), GroupState::Offline);
    assert_eq!(sim.state("node-2", "g1"), GroupState::Online);
    let ev = sim
        .events("node-1")
        .into_iter()
        .find(|e| e.message.contains("is also held by node-2 with epoch 6"))
        .unwrap();
    assert_eq!(ev.id, events::GROUP_DEACTIVATING.code());
    sim.heal();
    sim.run(2 * INTERVAL);
    sim.strict();
    sim.run(3_000);
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-2"));
    assert!(!sim.active["vip"].contains("node-1"));
    assert!(sim.active["vip"].contains("node-2"));
}

#[test]
fn dual_holders_with_equal_epochs_keep_the_preferred_priority() {
    // Built by hand: both servers re-adopt the group with the same epoch while they cannot
    // hear each other; node-3 hears both and relays what it sees, so the server with the
    // worse priority yields even before the partition heals.
    let text = three("");
    let mut sim = Sim::new(&text);
    // Two holders with the same epoch is the very state under test: the single-holder
    // check is off until the partition heals (the one-action-per-group check stays on).
    sim.invariants = false;
    sim.cut_all("node-1", "node-2");
    let boot = Boot {
        incarnation: 1,
        epochs: BTreeMap::from([("g1".to_string(), 5)]),
        owned: BTreeMap::from([("g1".to_string(), 5)]),
        fencing: false,
    };
    for s in ["vip", "app"] {
        sim.active
            .insert(s.into(), BTreeSet::from(["node-1".into(), "node-2".into()]));
    }
    sim.restart("node-1", boot.clone());
    sim.restart("node-2", boot);
    sim.run(STARTUP + 2_000);
    assert_eq!(sim.state("node-1", "g1"), GroupState::Online);
    assert_eq!(sim.state("node-2", "g1"), GroupState::Offline);
    sim.heal();
    sim.run(2 * INTERVAL);
    sim.strict();
    sim.run(2_000);
    // Same epoch: the server with the better (lower) priority keeps it.
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-1"));
    assert_eq!(sim.state("node-2", "g1"), GroupState::Offline);
    assert_eq!(sim.report("node-1", "g1").epoch, 5);
}

#[test]
fn takeover_waits_until_the_cut_off_holder_has_fenced_itself() {
    // node-1 holds the group and is cut off; its deactivation never finishes (manual
    // executor). The majority must not activate before node-1's self-fence deadline has
    // passed, and node-1, having missed it, escalates (reboot) before the takeover.
    let mut sim = started(&three(""));
    let tm = sim.eng("node-2").config().timing(TIMEOUT);
    sim.set_manual("node-1", true);
    sim.clear_logs();
    sim.isolate("node-1");
    sim.run(tm.takeover_after_ms() - 2 * INTERVAL);
    assert!(sim.active["vip"].contains("node-1"));
    assert!(
        sim.activations("node-2").is_empty(),
        "node-2 activated while node-1 may still run the group"
    );
    assert!(sim.has("node-2", &events::TAKEOVER_WAIT));
    assert!(sim.has("node-1", &events::FENCE_DEADLINE_MISSED));
    assert!(sim.actions("node-1").iter().any(|a| matches!(
        a,
        Action::SystemCommand {
            which: FinalAction::Reboot,
            fence: true,
            ..
        }
    )));
    // The reboot happens: node-1 is gone with its resources; node-2 takes over.
    sim.kill("node-1");
    assert!(
        sim.run_until(4 * INTERVAL + TIMEOUT, |s| s.online_on("g1").as_deref()
            == Some("node-2"))
    );
}

#[test]
fn takeover_wait_asks_to_be_woken_at_its_end() {
    // The shell steps the engine at `next_wake` instead of its next tick: the group is
    // claimed exactly when the floor is reached, not up to a tick later.
    let mut sim = started(&three(""));
    sim.kill("node-1");
    assert!(sim.run_until(5_000, |s| s.has("node-2", &events::TAKEOVER_WAIT)));
    let wake = sim
        .eng("node-2")
        .next_wake()
        .expect("a wake at the end of the takeover wait");
    assert!(wake.0 > sim.now + INTERVAL, "{wake:?} at {}", sim.now);
    // Up to just before the wake (heartbeats keep flowing), then step node-2 by hand.
    while sim.now + sim.step_ms < wake.0 - 1 {
        sim.round();
    }
    assert_eq!(sim.eng("node-2").next_wake(), Some(wake));
    let i = sim.idx("node-2");
    let claims = |acts: &[Action]| {
        acts.iter()
            .any(|a| matches!(a, Action::PersistEpoch { .. }))
    };
    let before = sim.nodes[i].eng.step(Millis(wake.0 - 1), Input::Tick);
    assert!(!claims(&before), "{before:?}");
    assert_eq!(sim.eng("node-2").next_wake(), Some(wake));
    let at = sim.nodes[i].eng.step(wake, Input::Tick);
    assert!(claims(&at), "{at:?}");
    assert_eq!(sim.eng("node-2").next_wake(), None);
}

#[test]
fn a_steady_engine_is_evaluated_when_time_decides_and_not_on_every_tick() {
    // The shell steps an engine at `next_evaluation` when nothing else does. In a steady
    // state that is the next instant a rule of time flips (here: the silence of its
    // peers), not `tick_every` after the last evaluation; a tick before it decides
    // nothing, the evaluation at it decides what time decided.
    let mut sim = started(&three(""));
    sim.run(2 * INTERVAL);
    let i = sim.idx("node-2");
    let every = sim.eng("node-2").tick_every().0;
    let start = sim.eng("node-2").now().0;
    assert!(
        sim.eng("node-2").steady_until().is_some(),
        "steady once every group is online"
    );
    // Nothing arrives any more (the others are silent from now on): step node-2 only as
    // its shell would, with a tick 1 ms early each time.
    let mut evaluations = 0;
    let (at, acts) = loop {
        let due = sim.eng("node-2").next_evaluation();
        assert!(
            sim.eng("node-2").steady_until() == Some(due),
            "still steady until something happened"
        );
        let early = sim.nodes[i].eng.step(Millis(due.0 - 1), Input::Tick);
        assert!(early.is_empty(), "1 ms before {due:?}: {early:?}");
        let acts = sim.nodes[i].eng.step(due, Input::Tick);
        evaluations += 1;
        if !acts.is_empty() {
            break (due.0, acts);
        }
        assert!(
            evaluations < 20,
            "nothing decided after {evaluations} evaluations"
        );
    };
    // The first decision of time: the quorum lease of the last peer heard ran out (its
    // vote no longer counts), at most one lease after the last heartbeat.
    let lease = sim.eng("node-2").quorum_lease();
    assert!(
        at > start && at <= start + lease,
        "at {at}, start {start}, lease {lease}"
    );
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::Emit { event } if event.id == events::NO_QUORUM.code())),
        "{acts:?}"
    );
    // With a tick every `tick_every` it would have taken more evaluations than that.
    assert!(
        evaluations < (at - start) / every,
        "{evaluations} evaluations in {} ms",
        at - start
    );
    // Not steady while it acts on it: the tick comes back.
    assert!(sim.eng("node-2").steady_until().is_none());
    assert_eq!(sim.eng("node-2").next_evaluation(), Millis(at + every));
}

// ---------------------------------------------------------------------------------------
// Random fault schedules
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Fault {
    Run(u64),
    Kill(usize),
    /// Start a dead server again from its state directory.
    Revive(usize),
    /// Restart a live agent in place (its resources keep running).
    AgentRestart(usize),
    FailActivate(usize, bool, u32),
    FailDeactivate(usize, bool, u32),
    Probe(usize, u8),
    Cmd(usize, u8),
}

fn fault() -> impl proptest::strategy::Strategy<Value = Fault> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (50u64..3_000).prop_map(Fault::Run),
        1 => (0usize..3).prop_map(Fault::Kill),
        1 => (0usize..3).prop_map(Fault::Revive),
        1 => (0usize..3).prop_map(Fault::AgentRestart),
        1 => (0usize..3, any::<bool>(), 0u32..3).prop_map(|(s, r, n)| Fault::FailActivate(s, r, n)),
        1 => (0usize..3, any::<bool>(), 0u32..3).prop_map(|(s, r, n)| Fault::FailDeactivate(s, r, n)),
        1 => (0usize..3, 0u8..3).prop_map(|(s, p)| Fault::Probe(s, p)),
        1 => (0usize..3, 0u8..8).prop_map(|(s, c)| Fault::Cmd(s, c)),
    ]
}

fn random_text() -> String {
    let group = group_g1(
        "failback = true",
        "activate_retries = 1\ndeactivate_retries = 1\nfailover_threshold = 2",
    )
    .replace(
        "ip = \"10.1.0.20\"",
        "ip = \"10.1.0.20\"\ndeactivate_retries = 1",
    );
    cluster(
        3,
        &(group
            + r#"
[[monitor]]
kind = "exec"
name = "appmon"
group = "g1"
interval = "500ms"
retries = 1
recovery = { target = "g1", restart_retries = 1, failover_retries = 1, final_action = "stop-group" }

[[monitor]]
kind = "exec"
name = "vipmon"
group = "g1"
interval = "700ms"
retries = 0
recovery = { target = "vip", restart_retries = 1, failover_retries = 0 }
"#),
    )
}

fn apply_fault(sim: &mut Sim, f: &Fault) {
    let name = |i: usize| format!("node-{}", i + 1);
    match f {
        Fault::Run(ms) => sim.run(*ms),
        Fault::Kill(i) => {
            // Keep a majority alive: crash-stop faults only while two others run.
            if sim.nodes.iter().filter(|n| n.alive).count() == 3 {
                sim.kill(&name(*i));
            }
        }
        Fault::Revive(i) => {
            if !sim.nodes[*i].alive {
                let boot = sim.boot_state(&name(*i));
                sim.restart(&name(*i), boot);
            }
        }
        Fault::AgentRestart(i) => {
            if sim.nodes[*i].alive {
                let boot = sim.boot_state(&name(*i));
                sim.restart(&name(*i), boot);
            }
        }
        Fault::FailActivate(i, app, n) => {
            sim.fail_activate(&name(*i), if *app { "app" } else { "vip" }, *n)
        }
        Fault::FailDeactivate(i, app, n) => {
            sim.fail_deactivate(&name(*i), if *app { "app" } else { "vip" }, *n)
        }
        Fault::Probe(i, p) => {
            let p = [Probe::Ok, Probe::Fail, Probe::ApiFail][*p as usize];
            let m = if *i == 0 { "vipmon" } else { "appmon" };
            sim.probe(&name(*i), m, p);
        }
        Fault::Cmd(i, c) => {
            if !sim.nodes[*i].alive {
                return;
            }
            let cmd = match c {
                0 => mv(None),
                1 => mv(Some(&name((*i + 1) % 3))),
                2 => Command::GroupStop { group: "g1".into() },
                3 => Command::GroupStart {
                    group: "g1".into(),
                    on: None,
                },
                4 => Command::ClusterSuspend,
                5 => Command::ClusterResume,
                6 => Command::MonitorSuspend {
                    monitor: "appmon".into(),
                },
                _ => Command::TimeoutSet {
                    heartbeat_timeout_ms: 2_000,
                    monitor_factor_pct: 150,
                    duration_ms: 5_000,
                },
            };
            let _ = sim.cmd(&name(*i), cmd);
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        // PROPTEST_CASES=N runs a longer campaign.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// Crash-stop faults, failing resources and monitors, and operator commands in any
    /// order: the group is never online/activating on two live servers, a resource is
    /// never active on two live servers, and once the faults stop the cluster converges
    /// to exactly one holder.
    #[test]
    fn random_schedules_keep_the_invariants(
        faults in proptest::collection::vec(fault(), 1..40),
        loss_pct in proptest::prop_oneof![proptest::strategy::Just(0u64), 1u64..40],
        seed in 1u64..u64::MAX,
    ) {
        let mut sim = Sim::new(&random_text());
        sim.loss_pct = loss_pct;
        sim.rng = seed;
        sim.run(STARTUP + 500);
        for f in &faults {
            apply_fault(&mut sim, f);
        }
        // Repair everything, then ask for the group to run.
        sim.loss_pct = 0;
        sim.fail_act.clear();
        sim.fail_deact.clear();
        sim.probes.clear();
        for i in 0..3 {
            if !sim.nodes[i].alive {
                let name = format!("node-{}", i + 1);
                let boot = sim.boot_state(&name);
                sim.restart(&name, boot);
            }
        }
        sim.run(STARTUP + 1_000);
        sim.cmd("node-1", Command::ClusterResume).unwrap();
        sim.cmd("node-1", Command::MonitorResume { monitor: "appmon".into() }).unwrap();
        sim.cmd("node-1", Command::GroupStop { group: "g1".into() }).unwrap();
        sim.run(3_000);
        sim.cmd("node-1", Command::GroupStart { group: "g1".into(), on: None }).unwrap();
        let converged = sim.run_until(20_000, |s| s.online_on("g1").is_some());
        proptest::prop_assert!(converged, "no holder after repair: {:?}", (0..3).map(|i| sim.state(&format!("node-{}", i + 1), "g1")).collect::<Vec<_>>());
        sim.run(5_000);
        proptest::prop_assert_eq!(sim.holders("g1").len(), 1);
    }
}

#[test]
fn preferred_server_still_starting_is_waited_for() {
    // Found by `random_schedules_keep_the_invariants`: node-1 asks to move the group to
    // node-2 and releases it; node-2 crashes before taking it; node-1 and node-2 restart
    // at the same instant. node-2 follows the move request, and node-1 must not skip the
    // preferred node-2 just because node-2's last heartbeat predates its readiness.
    let mut sim = Sim::new(&random_text());
    sim.run(STARTUP + 500);
    sim.clear_logs();
    for f in [
        Fault::Cmd(0, 0),
        Fault::Kill(1),
        Fault::Run(101),
        Fault::AgentRestart(0),
    ] {
        apply_fault(&mut sim, &f);
    }
    let boot = sim.boot_state("node-2");
    sim.restart("node-2", boot);
    sim.run(STARTUP + 1_000);
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-2"));
    assert!(sim.activations("node-1").is_empty());
}

#[test]
fn concurrent_commands_do_not_activate_twice() {
    // Found by `random_schedules_keep_the_invariants`: node-1 asks to move the group on
    // (to node-3, as node-2 is restarting) and releases it; in the same heartbeat interval
    // node-2 issues `group start`, which wins the last-writer-wins merge. node-3 must not
    // follow the move while node-1 follows the start.
    let mut sim = Sim::new(&random_text());
    sim.run(STARTUP + 500);
    sim.clear_logs();
    for f in [
        Fault::Kill(1),
        Fault::Revive(1),
        // Long enough for the restarted node-2 to regain quorum before the commands, as
        // in the schedule that found it (a restarted agent's peers' votes count once they
        // echo its new incarnation: one heartbeat round later than they used to).
        Fault::Run(301),
        Fault::Cmd(0, 0),
        Fault::Cmd(1, 3),
    ] {
        apply_fault(&mut sim, &f);
    }
    sim.run(3_000);
    assert_eq!(sim.holders("g1").len(), 1);
    let winner = sim.eng("node-3").peer_message().intents.groups["g1"].clone();
    assert!(
        winner.origin.starts_with("node-2/"),
        "the later writer (by origin) wins: {}",
        winner.origin
    );
    assert_eq!(winner.prefer, None);
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-1"));
    assert!(sim.activations("node-3").is_empty());
}

#[test]
fn an_epoch_learned_second_hand_is_not_a_free_group() {
    // Found by `random_schedules_keep_the_invariants` (with heartbeat loss): node-3 moves
    // the group from node-1 to node-2; node-2 activates it with epoch 2. node-1 hears of
    // epoch 2 from node-3 while node-2's own heartbeats to node-1 are lost: the move is
    // spent and node-1 sees no holder, but it must not start the group itself.
    let mut sim = started(&three(""));
    sim.next_hb_round();
    sim.cmd("node-3", mv(Some("node-2"))).unwrap();
    // Round 1: node-1 and node-2 learn the move; node-1 releases the group. Round 2:
    // node-1 hears node-2 (which knows the move, epoch 1); node-2 does not hear node-1.
    sim.drop_one_way("node-1", "node-2");
    sim.next_hb_round();
    assert_eq!(sim.state("node-1", "g1"), GroupState::Offline);
    sim.next_hb_round();
    assert!(sim.holders("g1").is_empty());
    // Round 3: the other way round. node-2 hears node-1's release and activates epoch 2;
    // node-3 learns epoch 2 and tells node-1; node-2's own heartbeats to node-1 are lost.
    sim.heal();
    sim.drop_one_way("node-2", "node-1");
    sim.next_hb_round();
    sim.run(INTERVAL);
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-2"));
    assert_eq!(sim.report("node-1", "g1").max_epoch, 2);
    assert_eq!(
        sim.group_status("node-1", "g1").per_server["node-2"],
        GroupState::Offline
    );
    assert_eq!(sim.activations("node-1").len(), 2, "only the first start");
    sim.heal();
    sim.run(1_000);
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-2"));
    assert_eq!(sim.report("node-2", "g1").epoch, 2);
}

// ---------------------------------------------------------------------------------------
// Suspension, quorum loss actions, temporary timeouts after a restart, planned moves
// ---------------------------------------------------------------------------------------

#[test]
fn suspended_cluster_does_not_fail_over_until_resumed() {
    let mut sim = started(&three(""));
    sim.cmd("node-2", Command::ClusterSuspend).unwrap();
    sim.run(2 * INTERVAL);
    sim.kill("node-1");
    sim.run(TIMEOUT + 2_000);
    assert_eq!(sim.online_on("g1"), None, "no failover while suspended");
    assert!(sim.activations("node-2").is_empty());
    assert_eq!(
        sim.count("node-2", &events::RECOVERY_SUPPRESSED),
        1,
        "raised once"
    );
    assert!(
        !sim.has("node-3", &events::RECOVERY_SUPPRESSED),
        "only the would-be target reports it"
    );
    sim.cmd("node-3", Command::ClusterResume).unwrap();
    assert!(sim.run_until(3_000, |s| s.online_on("g1").as_deref() == Some("node-2")));
    assert!(sim.has("node-2", &events::GROUP_FAILOVER));
}

#[test]
fn operator_start_works_while_suspended() {
    let mut sim = started(&three(""));
    sim.cmd("node-1", Command::ClusterSuspend).unwrap();
    sim.cmd(
        "node-1",
        Command::GroupMove {
            group: "g1".into(),
            to: Some("node-3".into()),
        },
    )
    .unwrap();
    assert!(sim.run_until(3_000, |s| s.online_on("g1").as_deref() == Some("node-3")));
    assert!(!sim.has("node-3", &events::RECOVERY_SUPPRESSED));
}

#[test]
fn planned_move_is_not_reported_as_a_failover() {
    let mut sim = started(&three(""));
    sim.clear_logs();
    sim.cmd(
        "node-1",
        Command::GroupMove {
            group: "g1".into(),
            to: Some("node-2".into()),
        },
    )
    .unwrap();
    assert!(sim.run_until(3_000, |s| s.online_on("g1").as_deref() == Some("node-2")));
    assert!(
        !sim.has("node-2", &events::GROUP_FAILOVER),
        "a move is not a failover"
    );
    assert!(sim.has("node-1", &events::GROUP_MOVE));
}

#[test]
fn quorum_loss_runs_the_on_loss_command_after_having_had_quorum() {
    let text = three("\n[quorum]\non_loss = \"reboot\"\n");
    let mut sim = started(&text);
    sim.isolate("node-3");
    sim.run(TIMEOUT + 3 * INTERVAL);
    let cmds: Vec<Action> = sim
        .actions("node-3")
        .into_iter()
        .filter(|a| matches!(a, Action::SystemCommand { .. }))
        .collect();
    assert_eq!(cmds.len(), 1, "{cmds:?}");
    assert!(
        matches!(&cmds[0], Action::SystemCommand { which: FinalAction::Reboot, reason, fence: true } if reason.contains("quorum lost")),
        "on_loss fences at once: {cmds:?}"
    );
    // The majority does not reboot.
    assert!(sim
        .actions("node-1")
        .iter()
        .all(|a| !matches!(a, Action::SystemCommand { .. })));
}

#[test]
fn a_server_booting_alone_does_not_run_the_on_loss_command() {
    let text = three("\n[quorum]\non_loss = \"shutdown\"\n");
    let mut sim = Sim::new(&text);
    sim.kill("node-2");
    sim.kill("node-3");
    sim.run(STARTUP + 2_000);
    assert!(sim.has("node-1", &events::NO_QUORUM));
    assert!(sim
        .actions("node-1")
        .iter()
        .all(|a| !matches!(a, Action::SystemCommand { .. })));
}

#[test]
fn restarted_server_gets_only_the_remaining_temporary_timeout() {
    let mut sim = started(&three(""));
    sim.cmd(
        "node-1",
        Command::TimeoutSet {
            heartbeat_timeout_ms: 5_000,
            monitor_factor_pct: 100,
            duration_ms: 10_000,
        },
    )
    .unwrap();
    sim.run(6_000);
    let boot = sim.boot_state("node-3");
    sim.kill("node-3");
    sim.restart("node-3", boot);
    sim.run(STARTUP);
    let left = sim
        .eng("node-3")
        .status()
        .timeout_override_remaining_ms
        .unwrap();
    assert!(
        left <= 4_000,
        "node-3 re-armed the full duration: {left} ms left"
    );
    assert!(sim.run_until(6_000, |s| s
        .eng("node-3")
        .status()
        .timeout_override_remaining_ms
        .is_none()));
    assert!(sim
        .eng("node-1")
        .status()
        .timeout_override_remaining_ms
        .is_none());
}

#[test]
fn status_shows_each_resource_on_the_holder() {
    let mut sim = started(&three(""));
    sim.run(2_000);
    let holder = sim.online_on("g1").expect("g1 online");
    for s in ["node-1", "node-2", "node-3"] {
        let res = sim.group_status(s, "g1").resources;
        assert!(!res.is_empty());
        let want = if s == holder {
            ResourceState::Online
        } else {
            ResourceState::Offline
        };
        assert!(res.iter().all(|r| r.state == want), "{s}: {res:?}");
    }
}

#[test]
fn status_since_is_the_holders_time_in_state() {
    let mut sim = started(&three(""));
    sim.run(5_000);
    let seen_from_3 = sim.group_status("node-3", "g1").since_ms_ago;
    let on_1 = sim.group_status("node-1", "g1").since_ms_ago;
    assert!(seen_from_3 >= 4_000, "node-3 reports {seen_from_3} ms");
    assert!(
        on_1.abs_diff(seen_from_3) <= 2 * INTERVAL,
        "{on_1} vs {seen_from_3}"
    );
}

#[test]
fn isolated_holder_self_fences_before_the_majority_takes_over() {
    let mut sim = started(&three(""));
    sim.isolate("node-1");
    // After the quorum lease (half the timeout) but before the timeout: node-1 has
    // stopped the group, the majority has not started it yet.
    sim.run(TIMEOUT * 3 / 4);
    assert_eq!(sim.state("node-1", "g1"), GroupState::Offline);
    assert!(sim.has("node-1", &events::NO_QUORUM));
    assert!(sim.activations("node-2").is_empty());
    assert!(!sim.active["vip"].contains("node-1"));
    // The majority waits the takeover wait after the timeout, then takes over.
    let tm = sim.eng("node-2").config().timing(TIMEOUT);
    assert!(
        sim.run_until(tm.takeover_after_ms(), |s| s.online_on("g1").as_deref()
            == Some("node-2"))
    );
}

#[test]
fn an_agent_restarted_while_its_fence_clock_ran_escalates_at_once_without_quorum() {
    // node-1 holds g1, is cut off, loses quorum and starts stopping g1, which hangs (manual
    // executor). Its agent crashes and comes back on the same boot of the machine (its
    // resources still up) before the watchdog resets it. The previous run's fence deadline
    // may be over by then: the new run must not get a fresh F_g from its start, or it
    // would still hold g1 when the majority takes it over.
    let mut sim = started(&three(""));
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-1"));
    sim.set_manual("node-1", true);
    sim.isolate("node-1");
    assert!(sim.run_until(2 * TIMEOUT, |s| s.has("node-1", &events::NO_QUORUM)));
    assert!(sim.active["vip"].contains("node-1"));
    let boot = sim.boot_state("node-1");
    assert!(boot.fencing, "the fence clock runs: it is on disk");
    assert!(boot.owned.contains_key("g1"));
    sim.clear_logs();
    sim.set_manual("node-1", false);
    sim.restart("node-1", boot);
    let ev = sim.event("node-1", &events::FENCE_DEADLINE_MISSED);
    assert!(
        ev.message.contains("before this agent restarted"),
        "{}",
        ev.message
    );
    assert!(sim.actions("node-1").iter().any(|a| matches!(
        a,
        Action::SystemCommand {
            which: FinalAction::Reboot,
            fence: true,
            ..
        }
    )));
}

#[test]
fn the_fence_clock_on_disk_is_cleared_with_quorum_and_by_a_new_boot() {
    // Quorum back: the flag goes (a later restart gets its F_g from its start again).
    let mut sim = started(&three(""));
    sim.set_manual("node-1", true);
    sim.isolate("node-1");
    assert!(sim.run_until(2 * TIMEOUT, |s| s.has("node-1", &events::NO_QUORUM)));
    assert!(sim.boot_state("node-1").fencing);
    sim.heal();
    assert!(sim.run_until(3 * TIMEOUT, |s| s.eng("node-1").status().quorum));
    assert!(!sim.boot_state("node-1").fencing);
    // A restart in place with quorum around re-adopts without any escalation.
    sim.set_manual("node-1", false);
    sim.run(2 * TIMEOUT);
    let holder = sim.online_on("g1").expect("g1 online");
    let boot = sim.boot_state(&holder);
    assert!(!boot.fencing);
    sim.clear_logs();
    sim.restart(&holder, boot);
    sim.run(STARTUP + 1_000);
    assert!(!sim.has(&holder, &events::FENCE_DEADLINE_MISSED));
    assert!(sim.has(&holder, &events::GROUP_READOPTED));
    // A machine that dies (a reset, a crash) boots without it.
    sim.set_manual(&holder, true);
    sim.isolate(&holder);
    assert!(sim.run_until(2 * TIMEOUT, |s| s.has(&holder, &events::NO_QUORUM)));
    assert!(sim.boot_state(&holder).fencing);
    sim.kill(&holder);
    assert!(!sim.boot_state(&holder).fencing);
}

#[test]
fn a_crashed_holder_is_taken_over_soon_after_the_floor_not_a_lease_later() {
    // The third server kept listing the dead holder in `hears` for up to a lease after it
    // last heard it; with `heard_ago` the claimer counts silence from that moment, so it
    // claims within a couple of heartbeat intervals of the floor T + W (the relay alone
    // used to add up to the lease, L = T/2 here).
    let mut sim = started(&three(""));
    let holder = sim.online_on("g1").expect("g1 online");
    let tm = sim.eng("node-2").config().group_timing(0, TIMEOUT);
    let killed = sim.now;
    sim.kill(&holder);
    let claimed = sim.run_until(tm.takeover_after_ms() + 3 * INTERVAL, |s| {
        s.nodes.iter().filter(|n| n.alive).any(|n| {
            matches!(
                s.state(&n.name, "g1"),
                GroupState::Claiming | GroupState::Activating | GroupState::Online
            )
        })
    });
    assert!(
        claimed,
        "no claim by {} ms after the crash",
        sim.now - killed
    );
    assert!(
        sim.now - killed <= tm.takeover_after_ms() + 2 * INTERVAL,
        "claimed {} ms after the crash, floor {} ms",
        sim.now - killed,
        tm.takeover_after_ms()
    );
}

#[test]
fn one_lost_heartbeat_never_costs_quorum() {
    // Heartbeat loss on every path (but never two in a row from both peers at once)
    // keeps quorum: the lease is at least 2.5 intervals.
    let mut sim = started(&three(""));
    sim.clear_logs();
    for _ in 0..10 {
        sim.cut_all("node-1", "node-2");
        sim.cut_all("node-1", "node-3");
        sim.run(INTERVAL);
        sim.heal();
        sim.run(2 * INTERVAL);
    }
    assert!(!sim.has("node-1", &events::NO_QUORUM));
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-1"));
}

#[test]
fn group_start_overrides_a_suspension_hold() {
    let mut sim = started(&three(""));
    sim.cmd("node-2", Command::ClusterSuspend).unwrap();
    sim.run(2 * INTERVAL);
    sim.kill("node-1");
    sim.run(TIMEOUT + 1_000);
    assert_eq!(sim.online_on("g1"), None);
    sim.cmd(
        "node-3",
        Command::GroupStart {
            group: "g1".into(),
            on: Some("node-3".into()),
        },
    )
    .unwrap();
    assert!(sim.run_until(3_000, |s| s.online_on("g1").as_deref() == Some("node-3")));
    assert!(sim.eng("node-3").status().suspended, "still suspended");
}

#[test]
fn heartbeat_is_urgent_after_state_changes_only() {
    let mut sim = started(&three(""));
    sim.nodes[0].eng.take_urgent();
    sim.run(2_000);
    assert!(
        !sim.nodes[0].eng.take_urgent(),
        "steady state: nothing urgent"
    );
    sim.cmd("node-1", Command::GroupStop { group: "g1".into() })
        .unwrap();
    assert!(sim.nodes[0].eng.take_urgent(), "a command is sent at once");
}

#[test]
fn a_claim_is_sent_at_once() {
    let mut sim = started(&three(""));
    let holder = sim.online_on("g1").expect("g1 online");
    sim.kill(&holder);
    // Step the others tick by tick: the step that enters Claiming asks for an immediate
    // heartbeat (the claim), not the next interval's.
    let mut claimed = false;
    for _ in 0..((TIMEOUT * 4) / 10) {
        sim.run(10);
        for n in sim.nodes.iter_mut().filter(|n| n.name != holder) {
            // Whatever made this step urgent before the claim is not the claim.
            if n.eng.status().groups[0].per_server.get(&n.name) != Some(&GroupState::Claiming) {
                n.eng.take_urgent();
                continue;
            }
            let claiming =
                n.eng.status().groups[0].per_server.get(&n.name) == Some(&GroupState::Claiming);
            let urgent = n.eng.take_urgent();
            if claiming && !claimed {
                assert!(
                    urgent,
                    "{} entered Claiming without sending the claim at once",
                    n.name
                );
                claimed = true;
            }
        }
        if claimed {
            break;
        }
    }
    assert!(claimed, "no server claimed g1 after its holder died");
}

#[test]
fn a_server_returning_on_one_path_only_reports_the_other_path_down() {
    let mut sim = started(&three(""));
    sim.kill("node-3");
    sim.run(TIMEOUT + 2 * INTERVAL);
    assert!(sim.has("node-1", &events::SERVER_DOWN));
    sim.clear_logs();
    // node-3 comes back, but path 1 between node-1 and node-3 stays cut.
    sim.cut("node-1", "node-3", 1);
    let boot = sim.boot_state("node-3");
    sim.restart("node-3", boot);
    sim.run(TIMEOUT + 3 * INTERVAL);
    assert!(sim.has("node-1", &events::SERVER_UP));
    let downs: Vec<Event> = sim
        .events("node-1")
        .into_iter()
        .filter(|e| e.id == events::PATH_DOWN.code())
        .collect();
    assert_eq!(downs.len(), 1, "{downs:?}");
    assert_eq!(downs[0].fields.get("path"), Some(&serde_json::json!(1)));
    sim.heal();
    sim.run(2 * INTERVAL);
    assert_eq!(sim.count("node-1", &events::PATH_UP), 1);
}

#[test]
fn regression_kill_standby_under_heavy_loss() {
    // Found by `random_schedules_keep_the_invariants` (Run 151, Kill node-2, Run 1701 at
    // 36 % heartbeat loss).
    let mut sim = Sim::new(&random_text());
    sim.loss_pct = 36;
    sim.rng = 8311485907488501716;
    sim.run(STARTUP + 500);
    for f in [Fault::Run(151), Fault::Kill(1), Fault::Run(1701)] {
        apply_fault(&mut sim, &f);
    }
}

#[test]
fn an_agent_started_after_a_cluster_stop_does_not_exit_because_of_it() {
    // node-1 cannot stop (its group is stuck) and keeps sending the `cluster stop`
    // intent; node-2 and node-3 stopped and are started again later: they stay up.
    let text = cluster(3, &group_g1("", "deactivate_retries = 0"));
    let mut sim = started(&text);
    sim.fail_deactivate("node-1", "app", u32::MAX);
    sim.cmd("node-2", Command::ClusterStop).unwrap();
    sim.run(2_000);
    assert_eq!(sim.state("node-1", "g1"), GroupState::Stuck);
    for s in ["node-2", "node-3"] {
        assert!(
            sim.actions(s)
                .iter()
                .any(|a| matches!(a, Action::Exit { .. })),
            "{s} stops"
        );
        sim.kill(s);
    }
    sim.clear_logs();
    for s in ["node-2", "node-3"] {
        let boot = sim.boot_state(s);
        sim.restart(s, boot);
    }
    sim.run(STARTUP + 2_000);
    for s in ["node-2", "node-3"] {
        assert!(
            !sim.actions(s)
                .iter()
                .any(|a| matches!(a, Action::Exit { .. })),
            "{s} must stay up"
        );
    }
    // The stuck group is still held by node-1 and never started elsewhere.
    assert!(sim.activations("node-2").is_empty() && sim.activations("node-3").is_empty());
}

#[test]
fn a_resumed_server_does_not_count_heartbeats_that_queued_during_its_pause() {
    // node-1 holds the group and its agent is stopped (SIGSTOP) for longer than the
    // takeover bound: its resources keep running, node-2 takes over. When node-1
    // resumes, the first thing it reads is a heartbeat that arrived during the pause
    // (stamped with its arrival time): it must not count it, must report the pause and
    // must deactivate at once, and then yield to node-2's newer epoch.
    let mut sim = started(&three(""));
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-1"));
    let tm = sim.eng("node-2").config().timing(TIMEOUT);
    let paused_at = sim.now;
    let stale = Box::new(sim.eng("node-2").peer_message());
    sim.allow_stale_holder("node-1"); // node-1's processes keep running during the pause
    sim.nodes[0].alive = false;
    sim.run(tm.takeover_after_ms() + 2_000);
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-2"));
    sim.clear_logs();
    // Resume: a heartbeat that arrived 100 ms into the pause is read first.
    sim.nodes[0].alive = true;
    let acts = sim.nodes[0].eng.step(Millis(sim.now), Input::Tick);
    sim.record(0, acts);
    let acts = sim.nodes[0].eng.step(
        Millis(paused_at + 100),
        Input::Heartbeat {
            from: "node-2".into(),
            path: 0,
            msg: stale,
            newest: true,
        },
    );
    sim.record(0, acts);
    assert!(sim.has("node-1", &events::AGENT_PAUSED));
    assert!(!sim.eng("node-1").status().quorum);
    assert!(
        sim.actions("node-1")
            .iter()
            .any(|a| matches!(a, Action::Deactivate { .. })),
        "{:?}",
        sim.actions("node-1")
    );
    sim.settle(0);
    sim.run(3_000);
    sim.strict();
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-2"));
    assert_eq!(sim.holders("g1").len(), 1);
    assert!(!sim.active["vip"].contains("node-1"));
}

#[test]
fn two_servers_with_a_witness_fail_over_and_a_lone_server_without_it_does_not() {
    let text = cluster(2, &group_g1("", ""))
        .replace(
            "servers = [\"node-1\", \"node-2\", \"node-3\"]",
            "servers = [\"node-1\", \"node-2\"]",
        )
        .replace(
            "[[group]]",
            "[quorum]\nwitness = { kind = \"http\", url = \"http://127.0.0.1:7430\" }\n\n[[group]]",
        );
    let mut sim = Sim::new(&text);
    // A witness that grants every request (as when only one side asks).
    sim.witness_grants = Some(true);
    sim.run(STARTUP + 2_000);
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-1"));
    let tm = sim.eng("node-2").config().timing(TIMEOUT);
    sim.kill("node-1");
    assert!(sim.run_until(tm.takeover_after_ms() + 2_000, |s| s
        .online_on("g1")
        .as_deref()
        == Some("node-2")));
    assert!(sim.eng("node-2").status().quorum);
    // Now the witness is lost too: node-2 has 1 of 3 votes and stops the group.
    sim.witness_grants = Some(false);
    sim.run(2 * TIMEOUT);
    assert!(!sim.eng("node-2").status().quorum);
    assert_eq!(sim.online_on("g1"), None);
    assert!(sim.has("node-2", &events::WITNESS_VOTE_LOST));
}

// ---------------------------------------------------------------------------------------
// Replayed heartbeats (issue 9)
// ---------------------------------------------------------------------------------------

/// A heartbeat of node-2 recorded while node-1 ran, replayed to node-1 after node-1
/// restarted (the wire replay guard is in memory and starts empty), while node-2 and
/// node-3 are down: it echoes node-1's previous incarnation, so node-1 does not count
/// node-2's vote and has no quorum.
#[test]
fn replayed_heartbeat_after_restart_gives_no_vote() {
    let mut sim = started(&three(""));
    let recorded = sim.eng("node-2").peer_message();
    assert!(recorded.hears.iter().any(|h| h == "node-1"));
    assert_eq!(
        recorded
            .heard
            .as_ref()
            .and_then(|h| h.get("node-1"))
            .copied(),
        Some(0)
    );
    sim.kill("node-2");
    sim.kill("node-3");
    let boot = sim.boot_state("node-1");
    assert_ne!(boot.incarnation, 0);
    sim.restart("node-1", boot);
    let i = sim.idx("node-1");
    for _ in 0..20 {
        for p in 0..sim.paths {
            sim.feed(
                i,
                Input::Heartbeat {
                    from: "node-2".into(),
                    path: p,
                    msg: Box::new(recorded.clone()),
                    newest: true,
                },
            );
            sim.settle(i);
        }
        sim.run(INTERVAL);
        let st = sim.eng("node-1").status();
        assert_eq!(st.votes_heard, 1, "the replayed vote counted");
        assert!(!st.quorum);
    }
    // The same message echoing node-1's current incarnation (a genuine, fresh one) counts.
    let mut fresh = recorded.clone();
    let inc = sim.nodes[i].incarnation;
    fresh
        .heard
        .get_or_insert_with(BTreeMap::new)
        .insert("node-1".into(), inc);
    sim.feed(
        i,
        Input::Heartbeat {
            from: "node-2".into(),
            path: 0,
            msg: Box::new(fresh),
            newest: true,
        },
    );
    sim.settle(i);
    assert_eq!(sim.eng("node-1").status().votes_heard, 2);
}

/// A restarted agent regains its peers' votes once they echo its new incarnation, and
/// an agent of an older version (no echo) is still trusted on its `hears`.
#[test]
fn restarted_agent_regains_votes_and_old_peers_count() {
    let mut sim = started(&three(""));
    sim.restart("node-1", sim.boot_state("node-1"));
    assert!(sim.run_until(3 * INTERVAL, |s| s.eng("node-1").status().votes_heard == 3));
    let mut old = sim.eng("node-2").peer_message();
    old.heard = None;
    let json = serde_json::to_value(&old).unwrap();
    assert!(json.get("heard").is_none());
    let back: PeerMessage = serde_json::from_value(json).unwrap();
    assert_eq!(back.heard, None);
    sim.kill("node-2");
    sim.kill("node-3");
    sim.run(2 * TIMEOUT);
    assert_eq!(sim.eng("node-1").status().votes_heard, 1);
    let i = sim.idx("node-1");
    sim.feed(
        i,
        Input::Heartbeat {
            from: "node-2".into(),
            path: 0,
            msg: Box::new(back),
            newest: true,
        },
    );
    sim.settle(i);
    assert_eq!(sim.eng("node-1").status().votes_heard, 2);
}

#[test]
fn a_heartbeat_overtaken_on_another_path_does_not_bring_back_a_released_group() {
    // The sender numbers its packets across its paths; one that is overtaken on a faster
    // path reaches the engine marked not newest. It still proves its path alive, but its
    // content (node-1 still holding g1, from before a move) must not replace what the
    // newer one said: node-3 would see node-1 hold the group again, and a server claiming
    // it would abandon its claim ("server node-1 holds it") and lose the move.
    let mut sim = started(&three(""));
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-1"));
    let held = Box::new(sim.eng("node-1").peer_message());
    sim.cmd(
        "node-1",
        Command::GroupMove {
            group: "g1".into(),
            to: Some("node-2".into()),
        },
    )
    .unwrap();
    sim.run(3_000);
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-2"));
    let view = |sim: &Sim| {
        sim.group_status("node-3", "g1")
            .per_server
            .get("node-1")
            .copied()
    };
    assert_eq!(view(&sim), Some(GroupState::Offline));
    let at = Millis(sim.now);
    let acts = sim.nodes[2].eng.step(
        at,
        Input::Heartbeat {
            from: "node-1".into(),
            path: 1,
            msg: held.clone(),
            newest: false,
        },
    );
    sim.record(2, acts);
    assert_eq!(
        view(&sim),
        Some(GroupState::Offline),
        "an older heartbeat's state was taken"
    );
    // The same packet as the newest one would be taken (what the engine did before).
    let acts = sim.nodes[2].eng.step(
        at,
        Input::Heartbeat {
            from: "node-1".into(),
            path: 1,
            msg: held,
            newest: true,
        },
    );
    sim.record(2, acts);
    assert_eq!(view(&sim), Some(GroupState::Online));
}

#[test]
fn a_fenced_failure_names_the_holder_in_its_event() {
    let def = &events::RESOURCE_ACTIVATION_FAILED;
    let fenced = Failure {
        code: "fenced".into(),
        message: "route table rtb-1 is claimed for group g1 at epoch 9 by node-3".into(),
        cause: Cause::Fenced {
            holder: "node-3".into(),
            epoch: 9,
        },
    };
    let e = super::run::failure_fields(Event::new(def, "x"), &fenced);
    assert_eq!(e.fields["code"], "fenced");
    assert_eq!(e.fields["holder"], "node-3");
    assert_eq!(e.fields["holder_epoch"], 9);
    let e = super::run::failure_fields(Event::new(def, "x"), &fail("exit 1"));
    assert_eq!(e.fields["code"], "command-failed");
    assert!(!e.fields.contains_key("holder"));
}

// ---------------------------------------------------------------------------------------
// Live reconfiguration (`baton config push`)
// ---------------------------------------------------------------------------------------

impl Sim {
    fn reconfigure(&mut self, s: &str, cfg: Config) -> Result<(), crate::engine::ReconfigureError> {
        let i = self.idx(s);
        let acts = self.nodes[i]
            .eng
            .reconfigure(Millis(self.now), cfg.clone())?;
        self.nodes[i].cfg = cfg;
        for g in &self.nodes[i].cfg.groups {
            if !self.groups.contains(&g.name) {
                self.groups.push(g.name.clone());
            }
        }
        self.record(i, acts);
        self.settle(i);
        Ok(())
    }
}

const G2: &str = r#"
[[group]]
name = "g2"
servers = ["node-2", "node-1", "node-3"]

[[group.resource]]
kind = "exec"
name = "app2"
start = "/bin/app2 start"
"#;

const M1: &str = r#"
[[monitor]]
kind = "exec"
name = "m1"
command = "/bin/check"
interval = "1s"
"#;

#[test]
fn reconfigure_adds_a_monitor_without_touching_the_group() {
    let mut sim = started(&three(""));
    let epoch = sim.report("node-1", "g1").epoch;
    let before = sim.activations("node-1").len();
    let new = parse(&three(M1));
    for s in ["node-1", "node-2", "node-3"] {
        sim.reconfigure(s, new.clone()).unwrap();
    }
    sim.run(5_000);
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-1"));
    assert_eq!(sim.report("node-1", "g1").epoch, epoch);
    assert_eq!(
        sim.activations("node-1").len(),
        before,
        "no resource restarted"
    );
    assert!(sim.deactivations("node-1").is_empty());
    assert!(sim.probes_sent("node-1", "m1") > 0, "the new monitor runs");
    for s in ["node-1", "node-2", "node-3"] {
        assert_eq!(sim.eng(s).status().digest, new.digest);
        assert!(!sim.eng(s).status().refused);
    }
}

#[test]
fn reconfigure_refuses_what_needs_a_restart_and_changes_nothing() {
    let mut sim = started(&three(""));
    let old = sim.eng("node-1").config().digest.clone();
    for (text, what) in [
        (three("").replace("10.1.0.20", "10.1.0.21"), "group g1"),
        (
            three("").replace(&format!("timeout = \"{TIMEOUT}ms\""), "timeout = \"5s\""),
            "[heartbeat]",
        ),
        (cluster(3, ""), "group g1 (removed)"),
    ] {
        let err = sim.reconfigure("node-1", parse(&text)).unwrap_err();
        assert!(err.to_string().starts_with(what), "{err}");
        assert_eq!(err.code(), "restart-needed");
        assert_eq!(sim.eng("node-1").config().digest, old);
    }
}

#[test]
fn a_pushed_group_starts_only_once_every_up_server_has_it() {
    let mut sim = started(&three(""));
    let epoch = sim.report("node-1", "g1").epoch;
    let new = parse(&three(G2));
    // Two of three servers run the new configuration: they are the majority (no
    // refusal), but node-3 does not know g2 yet.
    sim.reconfigure("node-1", new.clone()).unwrap();
    sim.reconfigure("node-2", new.clone()).unwrap();
    sim.run(5_000);
    assert_eq!(sim.online_on("g2"), None, "g2 must wait for node-3");
    assert!(sim.activations("node-2").is_empty());
    assert_eq!(sim.report("node-1", "g1").epoch, epoch);
    assert!(sim.eng("node-3").status().refused);
    sim.reconfigure("node-3", new).unwrap();
    sim.run(5_000);
    assert_eq!(sim.online_on("g2").as_deref(), Some("node-2"));
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-1"));
    assert_eq!(sim.report("node-1", "g1").epoch, epoch, "g1 not restarted");
}

#[test]
fn a_pushed_group_starts_without_a_down_server_and_is_never_run_by_it() {
    let mut sim = started(&three(""));
    sim.kill("node-3");
    sim.run(3_000);
    let new = parse(&three(G2));
    sim.reconfigure("node-1", new.clone()).unwrap();
    sim.reconfigure("node-2", new).unwrap();
    sim.run(5_000);
    assert_eq!(sim.online_on("g2").as_deref(), Some("node-2"));
    // node-3 comes back on the old configuration: it is the minority, refuses, and does
    // not know g2 at all; nothing moves.
    let boot = sim.boot_state("node-3");
    sim.restart("node-3", boot);
    sim.run(STARTUP + 3_000);
    assert!(sim.eng("node-3").status().refused);
    assert!(sim.has("node-3", &events::ACTIVATION_REFUSED_DIGEST));
    assert_eq!(sim.online_on("g2").as_deref(), Some("node-2"));
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-1"));
}

/// A repeat of a heartbeat on another path (the agent parses one datagram per send)
/// keeps only that path alive; it is ignored from a server never heard in full.
#[test]
fn a_path_heard_repeat_keeps_its_path_up() {
    let mut sim = Sim::new(&three(""));
    sim.run(STARTUP + 1_000);
    // Path 1 between node-1 and node-2 carries only repeats from node-2 from now on.
    sim.cut("node-1", "node-2", 1);
    let i = sim.idx("node-1");
    for _ in 0..(2 * TIMEOUT / INTERVAL) {
        sim.run(INTERVAL);
        sim.feed(
            i,
            Input::PathHeard {
                from: "node-2".into(),
                path: 1,
            },
        );
    }
    let st = sim.eng("node-1").status();
    let n2 = st.servers.iter().find(|s| s.name == "node-2").unwrap();
    assert!(n2.paths[1].up, "{n2:?}");
    assert!(!sim.has("node-1", &events::PATH_DOWN));
    // A repeat from an unknown server, from itself or on a path that does not exist:
    // nothing.
    for (from, path) in [("node-9", 0), ("node-1", 0), ("node-2", 7)] {
        sim.feed(
            i,
            Input::PathHeard {
                from: from.into(),
                path,
            },
        );
    }
    assert!(sim.eng("node-1").status().quorum);
}

/// The copy of a heartbeat on another path, right after an evaluation, only moves its
/// path's clock; the next evaluation comes at most `tick_every` after the last one, and
/// at once when the step finds a server gone or the quorum changed.
#[test]
fn a_repeat_right_after_an_evaluation_only_moves_its_path_clock() {
    let mut sim = Sim::new(&three(""));
    sim.run(STARTUP + 1_000);
    let i = sim.idx("node-1");
    let every = sim.eng("node-1").tick_every().0;
    assert_eq!(every, INTERVAL / 4);
    let repeat = || Input::PathHeard {
        from: "node-2".into(),
        path: 1,
    };
    let t = sim.now;
    sim.feed(i, Input::Tick);
    assert_eq!(sim.eng("node-1").evaluated_at(), Millis(t));
    sim.now = t + 5;
    sim.feed(i, repeat());
    assert_eq!(sim.eng("node-1").evaluated_at(), Millis(t));
    assert_eq!(sim.eng("node-1").now(), Millis(t + 5));
    // `tick_every` after the evaluation a repeat evaluates.
    sim.now = t + every;
    sim.feed(i, repeat());
    assert_eq!(sim.eng("node-1").evaluated_at(), Millis(t + every));
    // node-3 stops; node-1 hears only node-2's repeats, one a millisecond. The step that
    // finds node-3 down evaluates, whatever the time since the last evaluation.
    sim.kill("node-3");
    let mut quiet = 0;
    let mut down_at = None;
    for _ in 0..(TIMEOUT + 500) {
        sim.now += 1;
        let before = sim.eng("node-1").evaluated_at();
        sim.feed(i, repeat());
        let after = sim.eng("node-1").evaluated_at();
        assert!(sim.now - after.0 < every, "no evaluation for {every} ms");
        if after == before {
            quiet += 1;
        }
        if down_at.is_none() && sim.has("node-1", &events::SERVER_DOWN) {
            down_at = Some(sim.now);
            assert_eq!(
                after,
                Millis(sim.now),
                "the step that found node-3 down evaluated"
            );
        }
    }
    assert!(down_at.is_some());
    assert!(quiet > 1_000, "{quiet} quiet repeats");
}

/// A heartbeat that says what the sender's last one said but for its clocks, right after
/// an evaluation, only moves the clocks (the sender stays up without an evaluation per
/// heartbeat); one that says something new is acted on at once, and the next evaluation
/// comes at most `tick_every` after the last one either way.
#[test]
fn an_unchanged_heartbeat_right_after_an_evaluation_only_moves_the_clocks() {
    let mut sim = Sim::new(&three(""));
    sim.run(STARTUP + 1_000);
    assert_eq!(sim.online_on("g1").as_deref(), Some("node-1"));
    let i = sim.idx("node-1");
    let every = sim.eng("node-1").tick_every().0;
    let from_2 = |msg: PeerMessage, newest: bool| Input::Heartbeat {
        from: "node-2".into(),
        path: 0,
        msg: Box::new(msg),
        newest,
    };
    let t = sim.now;
    sim.feed(i, Input::Tick);
    assert_eq!(sim.eng("node-1").evaluated_at(), Millis(t));
    // node-2's clocks move (its groups' state_ms), nothing else: quiet.
    sim.now = t + 5;
    let j = sim.idx("node-2");
    sim.feed(j, Input::Tick);
    sim.feed(i, from_2(sim.eng("node-2").peer_message(), true));
    assert_eq!(sim.eng("node-1").evaluated_at(), Millis(t));
    assert_eq!(sim.eng("node-1").now(), Millis(t + 5));
    // `tick_every` after the evaluation the same heartbeat evaluates.
    sim.now = t + every;
    sim.feed(i, from_2(sim.eng("node-2").peer_message(), true));
    assert_eq!(sim.eng("node-1").evaluated_at(), Millis(t + every));
    // A heartbeat that says something new (node-2 no longer counts node-3 among the
    // servers it hears) evaluates at once, right after an evaluation.
    sim.now = t + every + 1;
    let mut msg = sim.eng("node-2").peer_message();
    assert!(msg.hears.iter().any(|h| h == "node-3"), "{:?}", msg.hears);
    msg.hears.retain(|h| h != "node-3");
    sim.feed(i, from_2(msg, true));
    assert_eq!(sim.eng("node-1").evaluated_at(), Millis(t + every + 1));
    // An older heartbeat (not the sender's newest) is never quiet: its epochs are learnt
    // and the step evaluates.
    sim.now = t + every + 2;
    sim.feed(i, from_2(sim.eng("node-2").peer_message(), false));
    assert_eq!(sim.eng("node-1").evaluated_at(), Millis(t + every + 2));
}

/// Every field of a heartbeat but the clocks makes it news.
#[test]
fn same_but_clocks_ignores_only_the_clocks() {
    let mut sim = Sim::new(&three(""));
    sim.run(STARTUP + 1_000);
    let a = sim.eng("node-1").peer_message();
    let mut b = a.clone();
    for r in &mut b.groups {
        r.state_ms += 1_000;
    }
    if let Some(h) = &mut b.heard_ago {
        for v in h.values_mut() {
            *v += 77;
        }
    }
    assert!(a.same_but_clocks(&b));
    type Change = Box<dyn Fn(&mut PeerMessage)>;
    let changes: Vec<(&str, Change)> = vec![
        ("digest", Box::new(|m| m.digest.push('x'))),
        ("incarnation", Box::new(|m| m.incarnation += 1)),
        ("ready", Box::new(|m| m.ready = !m.ready)),
        ("quorum", Box::new(|m| m.quorum = !m.quorum)),
        ("refused", Box::new(|m| m.refused = !m.refused)),
        ("leaving", Box::new(|m| m.leaving = !m.leaving)),
        ("vote", Box::new(|m| m.vote = !m.vote)),
        ("groups", Box::new(|m| m.groups.clear())),
        (
            "state",
            Box::new(|m| m.groups[0].state = GroupState::Deactivating),
        ),
        ("epoch", Box::new(|m| m.groups[0].epoch += 1)),
        ("max_epoch", Box::new(|m| m.groups[0].max_epoch += 1)),
        (
            "excluded",
            Box::new(|m| m.groups[0].excluded = !m.groups[0].excluded),
        ),
        ("seen_holder", Box::new(|m| m.groups[0].seen_holder = None)),
        (
            "ack",
            Box::new(|m| m.groups[0].ack = Some(("node-2".into(), 9))),
        ),
        ("name", Box::new(|m| m.groups[0].name = "other".into())),
        ("hears", Box::new(|m| m.hears.clear())),
        ("heard", Box::new(|m| m.heard = None)),
        ("heard_ago", Box::new(|m| m.heard_ago = None)),
        (
            "marks",
            Box::new(|m| {
                m.marks.insert("g1/disk".into(), 3);
            }),
        ),
        ("intents", Box::new(|m| m.intents.suspended.version += 1)),
    ];
    for (what, change) in changes {
        let mut c = b.clone();
        change(&mut c);
        assert!(!a.same_but_clocks(&c), "{what}");
        assert!(!c.same_but_clocks(&a), "{what}");
    }
}

#[test]
fn a_self_fence_stops_cloud_fenced_resources_locally_within_the_group_budget() {
    // `cip` has a local self-fence stop (30 ms); `app` stops in 40 ms at most. The
    // group's budget is 70 ms, floored at the interval: F_g = 200 ms, and the majority
    // takes over after T + W_g = 1,427 ms instead of the agent's 1,733.
    let text = cluster(
        3,
        r#"
[[group]]
name = "g1"
servers = ["node-1", "node-2", "node-3"]

[[group.resource]]
kind = "cloud-ip"
name = "cip"

[[group.resource]]
kind = "exec"
name = "app"
depends_on = ["cip"]
start = "/bin/app start"
deactivate_timeout = "40ms"
"#,
    );
    let mut sim = started(&text);
    let cfg = sim.eng("node-2").config().clone();
    let g = cfg.group_timing(0, TIMEOUT);
    assert_eq!((g.fence_ms, g.takeover_after_ms()), (200, 1427));
    assert_eq!(cfg.timing(TIMEOUT).takeover_after_ms(), 1733);
    // A move with quorum: every stop is the full one.
    sim.cmd(
        "node-1",
        Command::GroupMove {
            group: "g1".into(),
            to: Some("node-2".into()),
        },
    )
    .unwrap();
    assert!(sim.run_until(2_000, |s| s.online_on("g1").as_deref() == Some("node-2")));
    let stops = |sim: &Sim, s: &str| -> Vec<(String, bool, u64)> {
        sim.actions(s)
            .into_iter()
            .filter_map(|a| match a {
                Action::Deactivate {
                    resource,
                    fence,
                    timeout_ms,
                    ..
                } => Some((resource, fence, timeout_ms)),
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        stops(&sim, "node-1"),
        [
            ("app".to_string(), false, 40),
            ("cip".to_string(), false, 60_000)
        ]
    );
    sim.run(2 * INTERVAL);
    // Cut off: node-2 stops `app` in full and `cip` locally, each within what is left of
    // the 200 ms, before the majority may take over.
    sim.clear_logs();
    let cut = sim.now;
    sim.isolate("node-2");
    assert!(sim.run_until(TIMEOUT, |s| s.state("node-2", "g1") == GroupState::Offline));
    let st = stops(&sim, "node-2");
    assert_eq!(st.len(), 2, "{st:?}");
    assert_eq!((st[0].0.as_str(), st[0].1), ("app", false));
    assert_eq!((st[1].0.as_str(), st[1].1), ("cip", true));
    assert!(st.iter().all(|s| s.2 <= 200), "{st:?}");
    assert!(!sim.has("node-2", &events::FENCE_DEADLINE_MISSED));
    assert!(!sim.active["cip"].contains("node-2"));
    // The majority waits T + W_g of the group, not the agent's T + W.
    assert!(sim.run_until(2_000, |s| s.online_on("g1").is_some_and(|n| n != "node-2")));
    let took = sim.now - cut;
    assert!((1_427 - INTERVAL..1_733).contains(&took), "{took} ms");
}
