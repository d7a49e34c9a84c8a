//! The decision engine: pure, deterministic, tick-driven.
//!
//! One `Engine` runs inside each agent and decides for its own server. It is fed
//! [`Input`]s stamped with the agent's monotonic time and returns [`Action`]s to execute
//! in order. Servers agree on placement because each computes the same function of the
//! same gossiped facts: which servers are up (heard on at least one interconnect path
//! within the heartbeat timeout), what each reports about its groups, and the operator
//! intents (last-writer-wins registers carried in every heartbeat).

mod run;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
mod types;

use std::collections::{BTreeMap, BTreeSet};

pub use types::*;

use crate::bounds;
use crate::config::{Config, FinalAction, MonitorTiming, OnApiError, RecoveryTarget};
use crate::events::{self, Event, EventDef};
use crate::time::Millis;

/// What the agent knew before it (re)started.
#[derive(Debug, Clone, Default)]
pub struct Boot {
    /// Changes on every start (the shell picks a random or time-based value).
    pub incarnation: u64,
    /// Highest epoch per group from the state directory.
    pub epochs: BTreeMap<String, u64>,
    /// Groups this server held when it stopped: group → epoch.
    pub owned: BTreeMap<String, u64>,
    /// The agent's previous run on this boot of the machine had lost quorum while it held
    /// groups and had not stopped them (its self-fence clock was running when it ended).
    /// Its fence deadline may have passed since: see `Engine::fence_carried`. The shell
    /// keeps this only within one boot of the machine (a reset stops local resources).
    pub fencing: bool,
}

#[derive(Debug, Clone)]
struct Peer {
    paths: Vec<Option<Millis>>,
    path_up: Vec<bool>,
    /// PATH_DOWN was reported for the path (so that its return is reported, and only
    /// then: a second path heard for the first time is not a path coming back).
    path_reported_down: Vec<bool>,
    /// Since when the server has been up (any path), on this server's clock.
    up_since: Option<Millis>,
    up: bool,
    msg: Option<PeerMessage>,
    /// `msg` reports the groups of this server's configuration in its order, so a
    /// group's report is at the group's index (checked once per message, not per lookup).
    aligned: bool,
    digest_warned: Option<String>,
    /// Last time an up peer reported hearing this server (second-hand liveness): a
    /// server known alive only through others is not silent just because this one
    /// cannot hear it.
    relayed: Option<Millis>,
}

impl Peer {
    /// The peer's report of group `name`, the `gi`-th group of this configuration.
    fn report(&self, gi: usize, name: &str) -> Option<&GroupReport> {
        let m = self.msg.as_ref()?;
        if self.aligned {
            m.groups.get(gi)
        } else {
            m.group(gi, name)
        }
    }
}

/// What happens after a deactivation plan completes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum After {
    /// Give the group up; optionally mark this server excluded.
    Release { exclude: bool },
    /// Activate the whole group again with a new epoch (recovery restart).
    Restart,
    /// Activate these resources again with the same epoch (resource restart).
    Reactivate(Vec<usize>),
}

/// One resource of the activation or deactivation step under way.
#[derive(Debug, Clone, PartialEq)]
struct Slot {
    ri: usize,
    attempt: u32,
    /// The action under way; `None` once the resource is done (`failed` says how).
    inflight: Option<ActionId>,
    failed: bool,
}

impl Slot {
    fn busy(slots: &[Slot]) -> bool {
        slots.iter().any(|s| s.inflight.is_some())
    }
}

#[derive(Debug, Clone)]
enum Local {
    Offline,
    Adopting {
        epoch: u64,
        /// Check actions not answered yet, with the resource each one checks.
        pending: BTreeMap<ActionId, String>,
        /// What the checks that did not say "active" found.
        findings: Vec<String>,
        ok: bool,
        checked: bool,
    },
    /// Starting the resources step by step ([`crate::config::Group::activation_steps`]):
    /// `slots` are the resources of step `pos`, started together.
    Activating {
        epoch: u64,
        steps: Vec<Vec<usize>>,
        pos: usize,
        slots: Vec<Slot>,
    },
    Online {
        epoch: u64,
    },
    /// A new epoch chosen, waiting for a quorum to acknowledge it.
    Claiming {
        epoch: u64,
    },
    /// Stopping the resources, the activation steps in reverse.
    Deactivating {
        epoch: u64,
        steps: Vec<Vec<usize>>,
        pos: usize,
        slots: Vec<Slot>,
        after: After,
    },
    Failed {
        epoch: u64,
    },
    Stuck {
        epoch: u64,
    },
}

impl Local {
    fn state(&self) -> GroupState {
        match self {
            Local::Offline => GroupState::Offline,
            Local::Claiming { .. } => GroupState::Claiming,
            Local::Adopting { .. } => GroupState::Adopting,
            Local::Activating { .. } => GroupState::Activating,
            Local::Online { .. } => GroupState::Online,
            Local::Deactivating { .. } => GroupState::Deactivating,
            Local::Failed { .. } => GroupState::Failed,
            Local::Stuck { .. } => GroupState::Stuck,
        }
    }
    fn epoch(&self) -> u64 {
        match self {
            Local::Offline => 0,
            Local::Adopting { epoch, .. }
            | Local::Activating { epoch, .. }
            | Local::Online { epoch }
            | Local::Claiming { epoch }
            | Local::Deactivating { epoch, .. }
            | Local::Failed { epoch }
            | Local::Stuck { epoch } => *epoch,
        }
    }
}

#[derive(Debug, Clone)]
struct GroupRt {
    local: Local,
    since: Millis,
    online_since: Option<Millis>,
    max_epoch: u64,
    last_epoch: u64,
    excluded: bool,
    /// Failovers caused by activation failures, per resource index.
    act_failovers: BTreeMap<usize, u32>,
    /// The intent version whose `clear_exclusions` was applied.
    cleared_version: u64,
    no_server_warned: bool,
    /// BTN-3014 was raised for a failover held back by suspension ...
    suppressed_warned: bool,
    /// The group's operator intent version when the loss was first seen here while
    /// suspended (commands after it lift the hold).
    suppressed_version: Option<u64>,
    last_holder: Option<String>,
    /// BTN-1136 was raised for the current takeover wait.
    takeover_wait_reported: bool,
    /// The one claim this server acknowledged for the highest epoch it acknowledged:
    /// (server, epoch). Never changes for the same epoch, so two claims of one epoch are
    /// never both acknowledged by the same voter.
    acked: Option<(String, u64)>,
    /// The resource whose activation or deactivation failed last (what `Failed` and
    /// `Stuck` point at in status).
    last_failed: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MonState {
    Init,
    Normal,
    Warning,
    Error,
}

#[derive(Debug, Clone)]
struct MonitorRt {
    state: MonState,
    next_due: Millis,
    inflight: Option<ActionId>,
    script_inflight: Option<ActionId>,
    fail_streak: u32,
    scripts: u32,
    restarts: u32,
    failovers: u32,
    exhausted: bool,
    normal_since: Option<Millis>,
    last_latency: Option<u64>,
    last_error: Option<String>,
    api_warned: bool,
    /// The group activation this monitor last saw (to restart wait_to_start).
    seen_activation: Option<Millis>,
}

impl GroupRt {
    fn offline(now: Millis, max_epoch: u64) -> GroupRt {
        GroupRt {
            local: Local::Offline,
            since: now,
            online_since: None,
            max_epoch,
            last_epoch: 0,
            excluded: false,
            act_failovers: BTreeMap::new(),
            cleared_version: 0,
            no_server_warned: false,
            suppressed_warned: false,
            suppressed_version: None,
            last_holder: None,
            takeover_wait_reported: false,
            acked: None,
            last_failed: None,
        }
    }
}

impl MonitorRt {
    fn new(next_due: Millis) -> MonitorRt {
        MonitorRt {
            state: MonState::Init,
            next_due,
            inflight: None,
            script_inflight: None,
            fail_streak: 0,
            scripts: 0,
            restarts: 0,
            failovers: 0,
            exhausted: false,
            normal_since: None,
            last_latency: None,
            last_error: None,
            api_warned: false,
            seen_activation: None,
        }
    }
}

/// The engine for one server.
#[derive(Debug)]
pub struct Engine {
    cfg: Config,
    me: usize,
    now: Millis,
    started: Millis,
    incarnation: u64,
    peers: Vec<Peer>,
    groups: Vec<GroupRt>,
    monitors: Vec<MonitorRt>,
    intents: Intents,
    timeout_until: Option<Millis>,
    timeout_seen_version: u64,
    next_id: ActionId,
    quorum: bool,
    quorum_reported: Option<bool>,
    refused: bool,
    refused_reported: bool,
    leaving: bool,
    exit_sent: bool,
    out: Vec<Action>,
    last_ownership: BTreeMap<String, (u64, GroupState)>,
    /// Something peers decide on changed (membership, a group's state here, an intent):
    /// the shell should send a heartbeat now rather than at the next interval.
    urgent: bool,
    /// The earliest instant at which a decision that waits for time may change (the
    /// end of a takeover wait): part of [`Engine::next_evaluation`], so the shell steps
    /// the engine then ([`Engine::next_wake`]).
    wake: Option<Millis>,
    /// When the engine last evaluated every group and monitor (see [`Engine::tick_every`]).
    evaluated_at: Millis,
    /// The last evaluation issued an action or an event (see [`Engine::steady_until`]).
    evaluation_acted: bool,
    /// The quorum and which servers were up at that evaluation.
    evaluated_quorum: bool,
    evaluated_up: Vec<bool>,
    /// Version of a `cluster stop` learned during this agent's startup wait: issued before
    /// it started, so it does not apply to it.
    stopping_ignored: u64,
    /// Since when this server has had quorum without interruption.
    quorum_since: Option<Millis>,
    /// Message for the next BTN-2103 (why the group is being deactivated), if not the
    /// plain one.
    deactivating_reason: Option<String>,
    /// A granted witness vote counts until then.
    witness_until: Option<Millis>,
    /// Highest epochs the witness acknowledged in its last grant.
    witness_epochs: BTreeMap<String, u64>,
    witness_next_ask: Millis,
    /// Why the witness vote is not held (last answer), for status and events.
    witness_detail: String,
    witness_reported: Option<bool>,
    /// `[quorum] ping` / `http` targets answer (true when none are configured).
    reach_ok: bool,
    reach_detail: String,
    /// When this server last lost quorum while holding groups (self-fence clock).
    fence_started: Option<Millis>,
    fence_escalated: bool,
    /// The previous run of this agent (same machine boot) ended with its self-fence clock
    /// running (`Boot::fencing`): it may have lost quorum long before this start, so the
    /// deadline of every group it held may be over. Until this server holds quorum or
    /// nothing, a held group without quorum escalates at once instead of getting a fresh
    /// `F_g` from this start (an agent crash between quorum loss and a stop, with a restart
    /// inside the watchdog's bound, would otherwise extend the deadline past a takeover).
    fence_carried: bool,
    /// The `fencing` flag of the last `PersistOwnership`.
    last_fencing: bool,
    /// When BTN-1140 (a value out of bounds refused) or BTN-1141 (epochs exhausted) was
    /// last raised, per source: at most once a minute each, not once per packet.
    bound_reported: BTreeMap<String, Millis>,
    /// Data marks ([`crate::marks`]): the highest value seen per key.
    marks: BTreeMap<String, u64>,
    /// The keys of this configuration's `mirror-disk` resources; marks of other keys are
    /// ignored.
    mark_keys: std::collections::BTreeSet<String>,
}

/// Why [`Engine::reconfigure`] refused a configuration. `code()` is stable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReconfigureError {
    #[error("{0} differs from the running configuration and cannot change without a restart")]
    Needs(String),
}

impl ReconfigureError {
    pub fn code(&self) -> &'static str {
        "restart-needed"
    }
}

/// Construction errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("server `{0}` is not defined in the configuration")]
    UnknownServer(String),
}

impl Engine {
    pub fn new(cfg: Config, server: &str, boot: Boot, now: Millis) -> Result<Engine, EngineError> {
        let me = cfg
            .server_index(server)
            .ok_or_else(|| EngineError::UnknownServer(server.to_string()))?;
        let npaths = cfg.paths();
        let peers = cfg
            .servers
            .iter()
            .map(|_| Peer {
                paths: vec![None; npaths],
                path_up: vec![false; npaths],
                path_reported_down: vec![false; npaths],
                up_since: None,
                up: false,
                msg: None,
                aligned: false,
                digest_warned: None,
                relayed: None,
            })
            .collect();
        let mut out = Vec::new();
        let mut next_id = 1;
        // Epochs from the state directory above the bound are damaged: not learned (a
        // group held here is still checked and adopted or cleaned up, with the highest
        // epoch in range).
        let mut refused_boot = Vec::new();
        let mut boot = boot;
        boot.epochs.retain(|g, &mut e| {
            let ok = bounds::epoch_ok(e);
            if !ok {
                refused_boot.push(format!("group {g} epoch {e}"));
            }
            ok
        });
        for (g, e) in boot.owned.iter_mut() {
            if !bounds::epoch_ok(*e) {
                refused_boot.push(format!("group {g} owned epoch {e}"));
                *e = boot.epochs.get(g).copied().unwrap_or(0);
            }
        }
        let groups = cfg
            .groups
            .iter()
            .map(|g| {
                let max_epoch = boot.epochs.get(&g.name).copied().unwrap_or(0);
                let local = match boot.owned.get(&g.name) {
                    Some(&epoch) if !g.resources.is_empty() => {
                        let mut pending = BTreeMap::new();
                        for r in &g.resources {
                            let id = next_id;
                            next_id += 1;
                            pending.insert(id, r.name.clone());
                            out.push(Action::Check {
                                id,
                                group: g.name.clone(),
                                resource: r.name.clone(),
                                epoch,
                                timeout_ms: r.activation.timeout.ms(),
                            });
                        }
                        Local::Adopting {
                            epoch,
                            pending,
                            findings: Vec::new(),
                            ok: true,
                            checked: false,
                        }
                    }
                    _ => Local::Offline,
                };
                GroupRt {
                    local,
                    since: now,
                    online_since: None,
                    max_epoch: max_epoch.max(boot.owned.get(&g.name).copied().unwrap_or(0)),
                    last_epoch: boot.owned.get(&g.name).copied().unwrap_or(0),
                    excluded: false,
                    act_failovers: BTreeMap::new(),
                    cleared_version: 0,
                    no_server_warned: false,
                    suppressed_warned: false,
                    suppressed_version: None,
                    last_holder: None,
                    takeover_wait_reported: false,
                    acked: None,
                    last_failed: None,
                }
            })
            .collect();
        let monitors = cfg
            .monitors
            .iter()
            .map(|m| MonitorRt::new(now.plus(m.wait_to_start.ms())))
            .collect();
        let mut e = Engine {
            cfg,
            me,
            now,
            started: now,
            incarnation: boot.incarnation,
            peers,
            groups,
            monitors,
            intents: Intents::default(),
            timeout_until: None,
            timeout_seen_version: 0,
            next_id,
            quorum: false,
            quorum_reported: None,
            refused: false,
            refused_reported: false,
            leaving: false,
            exit_sent: false,
            out: Vec::new(),
            last_ownership: BTreeMap::new(),
            urgent: false,
            wake: None,
            evaluated_at: now,
            evaluation_acted: true,
            evaluated_quorum: false,
            evaluated_up: Vec::new(),
            quorum_since: None,
            stopping_ignored: 0,
            deactivating_reason: None,
            witness_until: None,
            witness_epochs: BTreeMap::new(),
            witness_next_ask: now,
            witness_detail: "no answer yet".into(),
            witness_reported: None,
            reach_ok: true,
            reach_detail: String::new(),
            fence_started: None,
            fence_escalated: false,
            fence_carried: boot.fencing,
            last_fencing: boot.fencing,
            bound_reported: BTreeMap::new(),
            marks: BTreeMap::new(),
            mark_keys: std::collections::BTreeSet::new(),
        };
        e.mark_keys = crate::marks::keys(&e.cfg).into_iter().collect();
        // Marks are persisted with the epochs (their keys contain a `/`).
        e.marks = boot
            .epochs
            .iter()
            .filter(|(k, _)| e.mark_keys.contains(*k))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        // Self is always "up" on every path.
        e.peers[me].up = true;
        e.out = out;
        for what in refused_boot {
            e.report_out_of_bounds("state directory", what);
        }
        e.recompute_quorum();
        Ok(e)
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Run `cfg` from now on, keeping the runtime state of what it shares with the
    /// running configuration (`baton config push`): groups carry over by name (none is
    /// restarted), a new group starts offline, monitors whose definition is unchanged keep
    /// their state, new and changed ones start over (their `wait_to_start` counts from
    /// now), removed ones are dropped (a probe still running for them is ignored when it
    /// ends). Only what can change live may differ: the cluster name, the servers, the
    /// heartbeat, quorum and agent settings and every existing group must be equal
    /// (`Err`, nothing changed, otherwise). The new digest goes out in the next
    /// heartbeat; a new group is not activated until every up server runs it
    /// (`offline_logic`).
    pub fn reconfigure(
        &mut self,
        now: Millis,
        cfg: Config,
    ) -> Result<Vec<Action>, ReconfigureError> {
        let old = &self.cfg;
        if cfg.cluster_name != old.cluster_name {
            return Err(ReconfigureError::Needs("the cluster name".into()));
        }
        if cfg.servers != old.servers {
            return Err(ReconfigureError::Needs("the servers".into()));
        }
        if cfg.heartbeat != old.heartbeat {
            return Err(ReconfigureError::Needs("[heartbeat]".into()));
        }
        if cfg.quorum != old.quorum {
            return Err(ReconfigureError::Needs("[quorum]".into()));
        }
        if cfg.agent != old.agent {
            return Err(ReconfigureError::Needs("[agent]".into()));
        }
        for g in &old.groups {
            match cfg.group(&g.name) {
                Some(n) if n == g => {}
                Some(_) => return Err(ReconfigureError::Needs(format!("group {}", g.name))),
                None => {
                    return Err(ReconfigureError::Needs(format!(
                        "group {} (removed)",
                        g.name
                    )))
                }
            }
        }
        if now > self.now {
            self.now = now;
        }
        let mut old_groups: BTreeMap<String, GroupRt> = old
            .groups
            .iter()
            .map(|g| g.name.clone())
            .zip(std::mem::take(&mut self.groups))
            .collect();
        self.groups = cfg
            .groups
            .iter()
            .map(|g| {
                old_groups
                    .remove(&g.name)
                    .unwrap_or_else(|| GroupRt::offline(self.now, 0))
            })
            .collect();
        let mut old_monitors: BTreeMap<String, (crate::config::Monitor, MonitorRt)> = old
            .monitors
            .iter()
            .cloned()
            .zip(std::mem::take(&mut self.monitors))
            .map(|(c, m)| (c.name.clone(), (c, m)))
            .collect();
        self.monitors = cfg
            .monitors
            .iter()
            .map(|m| match old_monitors.remove(&m.name) {
                Some((c, rt)) if &c == m => rt,
                _ => MonitorRt::new(self.now.plus(m.wait_to_start.ms())),
            })
            .collect();
        self.cfg = cfg;
        // The groups' indexes may have moved: reports are searched by name until each
        // peer's next message is checked against the new order.
        for p in &mut self.peers {
            p.aligned = false;
        }
        self.mark_keys = crate::marks::keys(&self.cfg).into_iter().collect();
        self.urgent = true;
        self.evaluate();
        Ok(std::mem::take(&mut self.out))
    }

    pub fn server_name(&self) -> &str {
        &self.cfg.servers[self.me].name
    }

    // --------------------------------------------------------------------------------
    // Main entry
    // --------------------------------------------------------------------------------

    /// Feed one input at time `now`; returns the actions to execute, in order.
    ///
    /// For a heartbeat, `now` is the packet's arrival time, which may be earlier than
    /// the last step's time (packets that queued while the agent was stopped): it counts
    /// as heard then, not when it was read.
    pub fn step(&mut self, now: Millis, input: Input) -> Vec<Action> {
        if now > self.now {
            let gap = now.since(self.now);
            self.now = now;
            if gap >= self.quorum_lease() && self.now.since(self.started) > gap {
                // The loop did not run for longer than the quorum lease (SIGSTOP, a
                // frozen VM, CPU starvation): what this server believed may be stale.
                self.emit(
                    &events::AGENT_PAUSED,
                    format!("agent loop did not run for {gap} ms (more than the quorum lease of {} ms): re-checking quorum before acting", self.quorum_lease()),
                    |e| e.field("gap_ms", gap),
                );
            }
            // Membership and quorum as of now, before the input is acted on (an action
            // result must not start the next resource on a quorum that has lapsed).
            self.update_membership();
            self.recompute_quorum();
        }
        let at = if now < self.now { now } else { self.now };
        if let Input::PathHeard { from, path } = &input {
            if self.path_heard_quietly(from, *path, at) {
                return std::mem::take(&mut self.out);
            }
        }
        match input {
            Input::Tick => {}
            Input::Heartbeat {
                from,
                path,
                msg,
                newest,
            } => {
                let quiet =
                    newest && self.out.is_empty() && self.heartbeat_may_be_quiet(&from, path, &msg);
                let urgent = self.urgent;
                self.on_heartbeat(&from, path, *msg, newest, at);
                // Nothing learnt: no epoch, mark or warning (all of them are actions or
                // events), nothing to send at once.
                if quiet && self.out.is_empty() && self.urgent == urgent {
                    // The servers it relays may count again (their clocks moved): quiet
                    // only if membership and quorum stay what the last evaluation saw.
                    self.update_membership();
                    self.recompute_quorum();
                    if self.out.is_empty() && self.as_evaluated() {
                        return Vec::new();
                    }
                }
            }
            Input::PathHeard { from, path } => self.on_path_heard(&from, path, at),
            Input::WitnessReply {
                sent_at,
                granted,
                epochs,
                detail,
            } => self.on_witness_reply(sent_at, granted, epochs, detail),
            Input::Reachability { ok, detail } => self.on_reachability(ok, detail),
            Input::Mark { key, value } => self.learn_mark(&key, value),
            Input::ActionDone { id, result } => self.on_action_done(id, result),
            Input::CheckDone { id, result, detail } => self.on_check_done(id, result, &detail),
            Input::ProbeDone { id, outcome } => self.on_probe_done(id, outcome),
        }
        self.evaluate();
        std::mem::take(&mut self.out)
    }

    /// Apply an operator command (received on this server's API).
    pub fn command(&mut self, now: Millis, cmd: Command) -> Result<Vec<Action>, CommandError> {
        if now > self.now {
            self.now = now;
            self.update_membership();
            self.recompute_quorum();
        }
        self.apply_command(cmd)?;
        self.urgent = true;
        self.evaluate();
        Ok(std::mem::take(&mut self.out))
    }

    /// The shell refused input from `source` because a value in it is above its bound
    /// (a witness answer or lease document, see `baton_core::bounds`): raise BTN-1140,
    /// at most once a minute per source. Nothing else changes.
    pub fn refused_input(&mut self, now: Millis, source: &str, what: String) -> Vec<Action> {
        if now > self.now {
            self.now = now;
        }
        self.report_out_of_bounds(source, what);
        std::mem::take(&mut self.out)
    }

    /// The time of the latest step (what [`Engine::peer_message`] reports times from).
    pub fn now(&self) -> Millis {
        self.now
    }

    /// When the engine wants to be stepped next for a deadline of its own (the end of a
    /// takeover wait), if still ahead: [`Engine::next_evaluation`] comes no later, so the
    /// group is claimed when the floor is reached, not at the next tick.
    pub fn next_wake(&self) -> Option<Millis> {
        self.wake.filter(|&w| w > self.now)
    }

    /// When the shell must step the engine next if no input does first: the earliest
    /// instant at which time alone may change what an evaluation decides, and never
    /// later than [`Engine::next_wake`].
    ///
    /// In a steady state ([`Engine::steady_until`]) that is the next instant one of
    /// the time rules flips (a path's or a vote's silence, a monitor falling due, …), so
    /// an idle agent is not woken between its heartbeats for evaluations that decide
    /// nothing. Otherwise (starting, claiming, activating, deactivating, fencing,
    /// stopping, without quorum) it is [`Engine::tick_every`] after the last evaluation,
    /// as with a fixed tick. The simulation checks, at a fixed tick, that every
    /// evaluation before this instant decides nothing.
    pub fn next_evaluation(&self) -> Millis {
        let at = self
            .steady_deadline()
            .unwrap_or(self.evaluated_at.plus(self.tick_every().0));
        self.with_wake(at)
    }

    /// `at`, or the engine's own deadline ([`Engine::next_wake`]) when that is earlier
    /// and the last evaluation came before it, even if it has passed since (a step that
    /// did not evaluate).
    fn with_wake(&self, at: Millis) -> Millis {
        match self.wake.filter(|&w| w > self.evaluated_at) {
            Some(w) => at.min(w),
            None => at,
        }
    }

    /// [`Engine::next_evaluation`] in a steady state: until then, an evaluation decides
    /// nothing (the simulation checks it); `None` when the state is not steady (then
    /// the shell ticks, and a tick may decide what time decided since the last one).
    pub fn steady_until(&self) -> Option<Millis> {
        self.steady_deadline().map(|at| self.with_wake(at))
    }

    /// In a steady state, the next instant after the last evaluation at which one of the
    /// rules that depend on time alone flips, or `None` when the state is not steady.
    ///
    /// Steady: past the startup wait, the last evaluation decided nothing (what it did
    /// may let the next one decide more), quorum held and settled, no self-fence clock,
    /// no stop, leave or refusal, and every group online or offline here (claims,
    /// activations, deactivations, re-adoptions and failed or stuck groups have timers
    /// of their own). The rules are then:
    /// - a path is up while heard within the heartbeat timeout (`t + T`), and a path that
    ///   is down is reported once its server has been up for `T` (`up_since + T`);
    /// - a server is heard recently (its vote counts, it is listed in `hears`) within
    ///   the quorum lease of its last heartbeat;
    /// - readiness: the startup wait, and `T` after quorum was (re)gained;
    /// - the temporary timeouts of `baton timeout set` end;
    /// - the witness: its grant ends, the next request is due;
    /// - a monitor falls due;
    /// - and, in [`Engine::steady_until`], the end of a takeover wait.
    ///
    /// A flip at or before the last evaluation was seen by it; one after it, even if it
    /// is already past (a step that did not evaluate), is returned, so the shell
    /// evaluates at once.
    fn steady_deadline(&self) -> Option<Millis> {
        let startup_end = self.started.plus(self.cfg.heartbeat.startup_wait().ms());
        let steady = self.now >= startup_end
            && !self.evaluation_acted
            && self.quorum
            && self.ready()
            && self.fence_started.is_none()
            && !self.fence_carried
            && !self.refused
            && !self.leaving
            && !self.exit_sent
            && !self.stopping()
            && self
                .groups
                .iter()
                .all(|g| matches!(g.local, Local::Online { .. } | Local::Offline));
        if !steady {
            return None;
        }
        let after = self.evaluated_at;
        let mut next: Option<Millis> = None;
        let mut flip = |t: Millis| {
            if t > after {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        let timeout = self.hb_timeout();
        let lease = self.quorum_lease();
        for (si, p) in self.peers.iter().enumerate() {
            if si == self.me {
                continue;
            }
            for heard in p.paths.iter().flatten() {
                flip(heard.plus(timeout));
            }
            if let Some(u) = p.up_since {
                flip(u.plus(timeout));
            }
            if let Some(t) = self.last_heard(si) {
                flip(t.plus(lease));
            }
        }
        // Steady now, but perhaps not yet at the last evaluation (a step since then that
        // did not evaluate): the ends of the waits `ready` checks are flips too.
        flip(startup_end);
        if let Some(q) = self.quorum_since {
            flip(q.plus(timeout));
        }
        if let Some(t) = self.timeout_until {
            flip(t);
        }
        if self.witness_configured() {
            if let Some(t) = self.witness_until {
                flip(t);
            }
            flip(self.witness_next_ask);
        }
        for m in &self.monitors {
            flip(m.next_due);
        }
        next
    }

    pub(super) fn wake_at(&mut self, at: Millis) {
        self.wake = Some(self.wake.map_or(at, |w| w.min(at)));
    }

    /// True (once) when this server's heartbeat content changed in a way its peers act on
    /// (a server came or went, a group changed state here, an operator command): sending
    /// it at once instead of at the next interval spares the peers up to one interval.
    pub fn take_urgent(&mut self) -> bool {
        std::mem::take(&mut self.urgent)
    }

    /// Whether [`Engine::take_urgent`] would return true (the simulation's check of the
    /// steps [`Engine::next_evaluation`] lets the shell skip).
    pub fn urgent(&self) -> bool {
        self.urgent
    }

    /// The payload of this server's next heartbeat.
    /// The state of group `name` on this server (`None` for an unknown group): what a
    /// monitor with a group is told at each poll.
    pub fn group_state(&self, name: &str) -> Option<GroupState> {
        self.cfg
            .groups
            .iter()
            .position(|g| g.name == name)
            .map(|i| self.groups[i].local.state())
    }

    pub fn peer_message(&self) -> PeerMessage {
        let (heard, heard_ago) = self.heard();
        PeerMessage {
            digest: self.cfg.digest.clone(),
            incarnation: self.incarnation,
            ready: self.ready(),
            quorum: self.quorum,
            refused: self.refused,
            leaving: self.leaving,
            groups: self
                .cfg
                .groups
                .iter()
                .zip(&self.groups)
                .enumerate()
                .map(|(gi, (g, rt))| GroupReport {
                    name: g.name.as_str().into(),
                    state: rt.local.state(),
                    epoch: rt.local.epoch().max(rt.last_epoch),
                    max_epoch: rt.max_epoch,
                    excluded: rt.excluded,
                    seen_holder: self
                        .holders(gi)
                        .first()
                        .map(|&(si, _, e)| (self.cfg.servers[si].name.as_str().into(), e)),
                    state_ms: self.now.since(rt.since),
                    ack: rt.acked.as_ref().map(|(s, e)| (s.as_str().into(), *e)),
                })
                .collect(),
            intents: self.outgoing_intents(),
            hears: self.hears(),
            heard: Some(heard),
            heard_ago: Some(heard_ago),
            vote: self.reach_ok,
            marks: self.marks.clone(),
        }
    }

    /// Raise data mark `key` to `value` if that is higher than what this server knows
    /// (persisted with the epochs, and sent at once so that peers echo it).
    pub(super) fn learn_mark(&mut self, key: &str, value: u64) {
        if !self.mark_keys.contains(key) || !bounds::epoch_ok(value) {
            return;
        }
        if self.marks.get(key).is_some_and(|&v| v >= value) {
            return;
        }
        self.marks.insert(key.to_string(), value);
        self.urgent = true;
        self.out.push(Action::PersistEpoch {
            group: key.to_string(),
            epoch: value,
        });
    }

    /// Who holds data mark `key` at `value` or above, among the votes that count now
    /// (this server, peers whose vote counts, the witness while its grant is valid).
    pub(super) fn mark_holders(&self, key: &str, value: u64) -> Vec<String> {
        let mut v = Vec::new();
        for si in 0..self.peers.len() {
            let has = if si == self.me {
                self.marks.get(key).is_some_and(|&x| x >= value)
            } else {
                self.counts_vote(si)
                    && self.peers[si]
                        .msg
                        .as_ref()
                        .and_then(|m| m.marks.get(key))
                        .is_some_and(|&x| x >= value)
            };
            if has && (si != self.me || self.reach_ok) {
                v.push(self.cfg.servers[si].name.clone());
            }
        }
        if self.witness_valid() && self.witness_epochs.get(key).is_some_and(|&x| x >= value) {
            v.push("witness".into());
        }
        v
    }

    /// Intents as sent: a temporary timeout carries the time it has left here, so that a
    /// server that learns of it later (or restarts) does not re-arm it for the full
    /// duration.
    fn outgoing_intents(&self) -> Intents {
        let mut i = self.intents.clone();
        if i.timeout.duration_ms > 0 {
            i.timeout.duration_ms = self.timeout_until.map_or(0, |t| t.since(self.now));
        }
        i
    }

    // --------------------------------------------------------------------------------
    // Helpers
    // --------------------------------------------------------------------------------

    fn id(&mut self) -> ActionId {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn emit(&mut self, def: &EventDef, msg: String, f: impl FnOnce(Event) -> Event) {
        let mut ev = f(Event::new(def, msg));
        ev.cluster = self.cfg.cluster_name.clone();
        ev.server = self.cfg.servers[self.me].name.clone();
        self.out.push(Action::Emit {
            event: Box::new(ev),
        });
    }

    /// Raise BTN-1140 for a value above its bound from `source` (refused, not learned),
    /// at most once a minute per source.
    pub(super) fn report_out_of_bounds(&mut self, source: &str, what: String) {
        if !self.bound_report_due(source) {
            return;
        }
        self.emit(
            &events::EPOCH_REFUSED,
            format!(
                "refused {what} from {source}: above the bound of {} (ignored, not learned)",
                bounds::MAX_EPOCH
            ),
            |e| e.field("source", source).field("value", what.clone()),
        );
    }

    /// Whether an out-of-bounds event for `key` may be raised now (once a minute per
    /// key); notes it as raised.
    pub(super) fn bound_report_due(&mut self, key: &str) -> bool {
        const EVERY_MS: u64 = 60_000;
        if self
            .bound_reported
            .get(key)
            .is_some_and(|&t| self.now.since(t) < EVERY_MS)
        {
            return false;
        }
        self.bound_reported.insert(key.to_string(), self.now);
        true
    }

    fn me_name(&self) -> String {
        self.cfg.servers[self.me].name.clone()
    }

    /// The origin of an intent written here: the server and its incarnation, so that an
    /// agent that restarted (and forgot its intents) never writes a second, different
    /// intent under a (version, origin) it used before.
    pub(super) fn intent_origin(&self) -> String {
        format!("{}/{:016x}", self.me_name(), self.incarnation)
    }

    fn hb_timeout(&self) -> u64 {
        if self.timeout_active() && self.intents.timeout.heartbeat_timeout_ms > 0 {
            self.intents.timeout.heartbeat_timeout_ms
        } else {
            self.cfg.heartbeat.timeout.ms()
        }
    }

    /// The split-brain timing rules for the heartbeat timeout in force
    /// (`config::timing`, docs/src/split-brain.md).
    pub(super) fn timing(&self) -> crate::config::timing::Timing {
        self.cfg.timing(self.hb_timeout())
    }

    /// The timing of group `gi`: its own self-fence deadline `F_g` and takeover wait
    /// `W_g` ([`Config::group_timing`](crate::config::Config::group_timing)).
    pub(super) fn group_timing(&self, gi: usize) -> crate::config::timing::Timing {
        self.cfg.group_timing(gi, self.hb_timeout())
    }

    /// How recently a server must have been heard for its vote to count toward this
    /// server's quorum: half the heartbeat timeout, but at least 2.5 heartbeat intervals
    /// (one lost heartbeat never costs a vote).
    pub(super) fn quorum_lease(&self) -> u64 {
        self.timing().lease_ms
    }

    /// When server `si` was last heard on any path.
    pub(super) fn last_heard(&self, si: usize) -> Option<Millis> {
        self.peers[si].paths.iter().flatten().copied().max()
    }

    /// Heard within the quorum lease.
    pub(super) fn heard_recently(&self, si: usize) -> bool {
        let lease = self.quorum_lease();
        self.peers[si].up
            && self
                .last_heard(si)
                .is_some_and(|t| self.now.since(t) < lease)
    }

    /// Servers heard within the quorum lease (not this one), as sent in heartbeats.
    fn hears(&self) -> Vec<String> {
        (0..self.peers.len())
            .filter(|&si| si != self.me && self.heard_recently(si))
            .map(|si| self.cfg.servers[si].name.clone())
            .collect()
    }

    /// The servers of `hears` with the incarnation of their last heartbeat received
    /// here (the echo that makes a peer's vote fresh, see [`PeerMessage::heard`]), and
    /// with how long ago (ms) they were last heard ([`PeerMessage::heard_ago`]).
    fn heard(&self) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
        let (mut inc, mut ago) = (BTreeMap::new(), BTreeMap::new());
        for si in (0..self.peers.len()).filter(|&si| si != self.me && self.heard_recently(si)) {
            let name = &self.cfg.servers[si].name;
            if let Some(m) = &self.peers[si].msg {
                inc.insert(name.clone(), m.incarnation);
            }
            if let Some(t) = self.last_heard(si) {
                ago.insert(name.clone(), self.now.since(t));
            }
        }
        (inc, ago)
    }

    /// Does `m` say that its sender hears this server, as this server is now? With the
    /// incarnation echo, only if it echoes this agent's current incarnation: a message
    /// sent before this agent (re)started, replayed to it, does not.
    fn hears_me(&self, m: &PeerMessage) -> bool {
        let me = &self.cfg.servers[self.me].name;
        match &m.heard {
            Some(heard) => heard.get(me) == Some(&self.incarnation),
            None => m.hears.iter().any(|h| h == me),
        }
    }

    /// Does server `si`'s vote count toward this server's quorum? Its own: while its
    /// reachability targets answer. A peer's: heard within the lease, it counts its own
    /// vote, and its last heartbeat says it hears this server too, echoing this agent's
    /// current incarnation.
    pub(super) fn counts_vote(&self, si: usize) -> bool {
        if si == self.me {
            return self.reach_ok;
        }
        self.heard_recently(si)
            && self.peers[si]
                .msg
                .as_ref()
                .is_some_and(|m| m.vote && self.hears_me(m))
    }

    pub(super) fn witness_configured(&self) -> bool {
        self.cfg.quorum.witness != crate::config::Witness::None
    }

    pub(super) fn witness_valid(&self) -> bool {
        self.witness_until.is_some_and(|t| self.now < t)
    }

    fn monitor_factor(&self) -> u64 {
        if self.timeout_active() && self.intents.timeout.monitor_factor_pct > 0 {
            u64::from(self.intents.timeout.monitor_factor_pct)
        } else {
            100
        }
    }

    fn timeout_active(&self) -> bool {
        self.timeout_until.is_some_and(|t| self.now < t)
    }

    fn ready(&self) -> bool {
        let waited = self.now.since(self.started) >= self.cfg.heartbeat.startup_wait().ms();
        let adopting_unchecked = self
            .groups
            .iter()
            .any(|g| matches!(g.local, Local::Adopting { checked: false, .. }));
        // After quorum is (re)gained, listen for one heartbeat timeout before acting, as
        // at startup: the others may have moved on while this server could not hear
        // them, and their latest reports may not have arrived yet.
        let settled = self
            .quorum_since
            .is_some_and(|t| self.now.since(t) >= self.hb_timeout());
        waited && !adopting_unchecked && settled
    }

    /// A `cluster stop` applies to this agent (see `stopping_ignored`).
    pub(super) fn stopping(&self) -> bool {
        self.intents.stopping.on && self.intents.stopping.version > self.stopping_ignored
    }

    fn suspended(&self) -> bool {
        self.intents.suspended.on
    }

    fn server_idx(&self, name: &str) -> Option<usize> {
        self.cfg.server_index(name)
    }

    /// Who holds group `gi` according to this server's view (alive servers only),
    /// as (server index, state, epoch), best claim first.
    fn holders(&self, gi: usize) -> Vec<(usize, GroupState, u64)> {
        let name = &self.cfg.groups[gi].name;
        let mut v = Vec::new();
        for (si, p) in self.peers.iter().enumerate() {
            if si == self.me {
                let l = &self.groups[gi].local;
                if l.state().holds() {
                    v.push((si, l.state(), l.epoch()));
                }
                continue;
            }
            if !p.up {
                continue;
            }
            if let Some(r) = p.report(gi, name) {
                if r.state.holds() {
                    v.push((si, r.state, r.epoch));
                }
            }
        }
        v.sort_by_key(|&(si, _, e)| std::cmp::Reverse(self.claim(si, e)));
        v
    }

    /// How strong a claim on a group is: a higher epoch wins, then the better (lower)
    /// server priority, then the server listed first in the configuration. Total, so two
    /// holders always agree which of them keeps the group.
    pub(super) fn claim(
        &self,
        si: usize,
        epoch: u64,
    ) -> (u64, std::cmp::Reverse<u32>, std::cmp::Reverse<usize>) {
        (
            epoch,
            std::cmp::Reverse(self.cfg.servers[si].priority),
            std::cmp::Reverse(si),
        )
    }

    /// The strongest claim on group `gi` by another server, heard directly or reported
    /// by a peer for a server this one cannot hear: (server index, epoch).
    pub(super) fn best_other_claim(&self, gi: usize) -> Option<(usize, u64)> {
        let direct = self
            .holders(gi)
            .into_iter()
            .filter(|h| h.0 != self.me)
            .map(|(si, _, e)| (si, e));
        direct
            .chain(self.unheard_holders(gi))
            .max_by_key(|&(si, e)| self.claim(si, e))
    }

    /// Holders of group `gi` that this server cannot hear but an up peer reports seeing
    /// (server index, epoch), best claim first. A server that this server hears directly
    /// is judged by its own report, never second-hand.
    fn unheard_holders(&self, gi: usize) -> Vec<(usize, u64)> {
        let name = &self.cfg.groups[gi].name;
        let mut v: Vec<(usize, u64)> = Vec::new();
        for (si, p) in self.peers.iter().enumerate() {
            if si == self.me || !p.up {
                continue;
            }
            let Some(r) = p.report(gi, name) else {
                continue;
            };
            let Some((h, e)) = &r.seen_holder else {
                continue;
            };
            let Some(hi) = self.server_idx(h) else {
                continue;
            };
            if hi == self.me || hi == si || self.peers[hi].up {
                continue;
            }
            if !v.iter().any(|x| x.0 == hi) {
                v.push((hi, *e));
            }
        }
        v.sort_by_key(|&(si, e)| std::cmp::Reverse(self.claim(si, e)));
        v
    }

    /// An up peer among group `gi`'s servers whose last heartbeat does not echo this
    /// agent's current incarnation ([`Engine::hears_me`]): what it reports may predate this
    /// agent's start (or be a replay of such a heartbeat), so its report of the group
    /// does not prove the group is not running there.
    pub(super) fn unconfirmed_peer(&self, gi: usize) -> Option<usize> {
        let g = &self.cfg.groups[gi];
        (0..self.peers.len()).find(|&si| {
            si != self.me
                && self.peers[si].up
                && g.servers.contains(&self.cfg.servers[si].name)
                && self.peers[si]
                    .msg
                    .as_ref()
                    .is_some_and(|m| !self.hears_me(m))
        })
    }

    fn peer_excluded(&self, si: usize, gi: usize) -> bool {
        if si == self.me {
            return self.groups[gi].excluded;
        }
        let name = &self.cfg.groups[gi].name;
        self.peers[si].report(gi, name).is_some_and(|r| r.excluded)
    }

    /// May server `si` be chosen to activate groups now (from this server's view)?
    fn eligible(&self, si: usize) -> bool {
        if si == self.me {
            return self.ready()
                && self.quorum
                && !self.refused
                && !self.leaving
                && !self.stopping();
        }
        let p = &self.peers[si];
        p.up && p
            .msg
            .as_ref()
            .is_some_and(|m| m.ready && m.quorum && !m.refused && !m.leaving)
    }

    /// Is peer `si` up but not yet past its startup wait and re-adoption checks?
    fn starting(&self, si: usize) -> bool {
        if si == self.me {
            return false;
        }
        let p = &self.peers[si];
        p.up && p
            .msg
            .as_ref()
            .is_some_and(|m| !m.ready && !m.refused && !m.leaving)
    }

    /// Do all up peers that run this configuration and have quorum report the same
    /// operator intent and the same highest epoch for group `gi` as this server?
    ///
    /// Placement is computed by every server from its own view; views that differ can
    /// make two servers each compute themselves as the target: two commands issued within
    /// one heartbeat interval on two servers (different intents until the last writer
    /// wins everywhere), or a server that learned a new epoch second-hand (from a third
    /// server's `max_epoch`) while the holder's own heartbeat was lost, so it does not see
    /// the holder. (It also means that a peer's exclusion flag is never stale with respect
    /// to a `group start` that cleared it.) Activations wait until the views agree.
    /// Peers without quorum do not decide and may not hear anybody (an asymmetric cut),
    /// so they are not waited for.
    fn views_agree(&self, gi: usize) -> bool {
        let name = &self.cfg.groups[gi].name;
        let intent = |i: &Intents| i.groups.get(name).map(|g| (g.version, g.origin.clone()));
        let mine = intent(&self.intents);
        let epoch = self.known_max_epoch(gi);
        self.peers
            .iter()
            .enumerate()
            .filter(|&(si, p)| si != self.me && p.up)
            .filter_map(|(_, p)| p.msg.as_ref())
            .filter(|m| m.digest == self.cfg.digest && m.quorum)
            .all(|m| {
                let theirs = m
                    .groups
                    .iter()
                    .find(|r| *r.name == **name)
                    .map_or(0, |r| r.max_epoch.max(r.epoch));
                intent(&m.intents) == mine && theirs == epoch
            })
    }

    /// The server that should activate group `gi` when nobody holds it.
    fn target(&self, gi: usize) -> Option<usize> {
        let g = &self.cfg.groups[gi];
        let intent = self.intents.groups.get(&g.name);
        let fresh_cluster = self.known_max_epoch(gi) == 0;
        let order: Vec<usize> = g
            .servers
            .iter()
            .filter(|s| !fresh_cluster || g.startup_servers.contains(s))
            .filter_map(|s| self.server_idx(s))
            .collect();
        if let Some(i) = intent {
            if let Some(p) = &i.prefer {
                if let Some(pi) = self.server_idx(p) {
                    // A preferred server that is still starting is waited for, as below.
                    if i.prefer_epoch >= self.known_max_epoch(gi)
                        && (self.eligible(pi) || self.starting(pi))
                        && g.servers.contains(p)
                    {
                        return Some(pi);
                    }
                }
            }
        }
        // A peer that is up but still starting is a candidate too: it becomes eligible
        // within its startup wait, and its last heartbeat may simply predate its
        // readiness. Skipping it would let two servers that become ready in the same
        // heartbeat interval both activate the group (each sees the other not ready).
        let eligible: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&s| self.eligible(s) || self.starting(s))
            .collect();
        eligible
            .iter()
            .copied()
            .find(|&s| !self.peer_excluded(s, gi))
            .or_else(|| eligible.first().copied())
    }

    fn known_max_epoch(&self, gi: usize) -> u64 {
        let name = &self.cfg.groups[gi].name;
        let mut m = self.groups[gi].max_epoch;
        for p in &self.peers {
            if let Some(r) = p.report(gi, name) {
                m = m.max(r.max_epoch).max(r.epoch);
            }
        }
        m
    }

    fn group_run(&self, gi: usize) -> bool {
        let g = &self.cfg.groups[gi];
        match self.intents.groups.get(&g.name) {
            Some(i) if i.version > 0 => i.run,
            _ => g.auto_start,
        }
    }

    // --------------------------------------------------------------------------------
    // Inputs
    // --------------------------------------------------------------------------------

    /// Outside a steady state, the longest the shell lets the engine go without an
    /// evaluation: it steps the engine with a tick when no input did for this long (a
    /// quarter of the heartbeat interval, 10 to 100 ms; see [`Engine::next_evaluation`]).
    pub fn tick_every(&self) -> Millis {
        Millis((self.cfg.heartbeat.interval.ms() / 4).clamp(10, 100))
    }

    /// When the engine last evaluated (the shell's next step without input is at
    /// [`Engine::next_evaluation`]).
    pub fn evaluated_at(&self) -> Millis {
        self.evaluated_at
    }

    /// The copy of a heartbeat on another path, heard right after an evaluation, on a
    /// path and from a server that were up and stay up, with this server's quorum as it
    /// was: only the path's time moves, and evaluating again would decide nothing new but
    /// what time alone decides. That is left to the next evaluation
    /// ([`Engine::next_evaluation`]: when a rule of time flips, or at most
    /// [`Engine::tick_every`] after the last one outside a steady state). True when the
    /// copy was taken so.
    fn path_heard_quietly(&mut self, from: &str, path: usize, at: Millis) -> bool {
        let Some(si) = self.server_idx(from) else {
            return false;
        };
        let quiet = self.quiet_from(si, path);
        if quiet {
            self.on_path_heard(from, path, at);
        }
        quiet
    }

    /// What makes news from server `si` on `path` quiet, whatever it says: the server and
    /// the path were up and stay up, the last evaluation is less than
    /// [`Engine::tick_every`] old, and membership and quorum are what it saw.
    fn quiet_from(&self, si: usize, path: usize) -> bool {
        si != self.me
            && self.peers[si].up
            && self.peers[si].path_up.get(path).copied().unwrap_or(false)
            && self.peers[si].msg.is_some()
            && self.as_evaluated()
    }

    /// The last evaluation is less than [`Engine::tick_every`] old, and membership and
    /// quorum are what it saw.
    fn as_evaluated(&self) -> bool {
        self.now.since(self.evaluated_at) < self.tick_every().0
            && self.quorum == self.evaluated_quorum
            && self
                .peers
                .iter()
                .map(|p| p.up)
                .eq(self.evaluated_up.iter().copied())
    }

    /// A heartbeat that says what the sender's last one said, but for its clocks
    /// ([`PeerMessage::same_but_clocks`]), heard right after an evaluation from a server
    /// and on a path that were up: like a repeat on another path
    /// ([`Engine::path_heard_quietly`]) it moves only the clocks (its path's, and those of
    /// the servers it relays), and what time decides is left to the next evaluation
    /// ([`Engine::next_evaluation`]). Checked before the heartbeat is taken in; whether it
    /// stayed quiet (nothing learnt, membership and quorum unchanged) is checked after.
    fn heartbeat_may_be_quiet(&self, from: &str, path: usize, msg: &PeerMessage) -> bool {
        let Some(si) = self.server_idx(from) else {
            return false;
        };
        self.quiet_from(si, path)
            && self.peers[si]
                .msg
                .as_ref()
                .is_some_and(|m| m.same_but_clocks(msg))
    }

    /// A repeat of a heartbeat already processed, on another path: only the path's clock.
    fn on_path_heard(&mut self, from: &str, path: usize, at: Millis) {
        let Some(si) = self.server_idx(from) else {
            return;
        };
        if si == self.me || path >= self.peers[si].paths.len() || self.peers[si].msg.is_none() {
            return;
        }
        if self.peers[si].paths[path].is_some_and(|t| t > at) {
            return;
        }
        self.peers[si].paths[path] = Some(at);
    }

    fn on_heartbeat(
        &mut self,
        from: &str,
        path: usize,
        msg: PeerMessage,
        newest: bool,
        at: Millis,
    ) {
        let Some(si) = self.server_idx(from) else {
            return;
        };
        if si == self.me || path >= self.peers[si].paths.len() {
            return;
        }
        // An epoch or intent version above the bound is corrupt or forged: the whole
        // heartbeat is ignored (learning part of it could hide a group the peer holds).
        if let Some(what) = bounds::peer_message_violation(&msg) {
            self.report_out_of_bounds(&format!("server {from}"), what);
            return;
        }
        // A packet older than the last one heard on this path (reordered, or read late)
        // does not move the path's clock back.
        let last = self.peers[si].paths[path];
        if last.is_some_and(|t| t > at) {
            return;
        }
        self.peers[si].paths[path] = Some(at);
        let lease = self.quorum_lease();
        for h in &msg.hears {
            if let Some(hi) = self.server_idx(h) {
                if hi != self.me && hi != si {
                    // The sender heard `h` `ago` ms before it sent this (at most a lease:
                    // it lists only servers heard within its lease). On this clock that
                    // is at least ago·(1 − ρ)² before `at`, whatever the two clocks'
                    // rates; without the field, `at` itself.
                    let ago = msg
                        .heard_ago
                        .as_ref()
                        .and_then(|m| m.get(h))
                        .map_or(0, |&a| a.min(lease));
                    let m = 1_000_000u64;
                    let rho = crate::config::timing::DRIFT_PPM;
                    let ago = ago.saturating_mul(m - rho) / m * (m - rho) / m;
                    let t = at.minus(ago);
                    let r = &mut self.peers[hi].relayed;
                    if r.is_none_or(|x| x < t) {
                        *r = Some(t);
                    }
                }
            }
        }
        self.merge_intents(&msg.intents);
        for (k, &v) in &msg.marks {
            self.learn_mark(k, v);
        }
        // Learn epochs.
        for (ri, r) in msg.groups.iter().enumerate() {
            // Same configuration, same order (digest agreement): one comparison.
            let gi = match self.cfg.groups.get(ri) {
                Some(g) if *g.name == *r.name => Some(ri),
                _ => self.cfg.groups.iter().position(|g| *g.name == *r.name),
            };
            if let Some(gi) = gi {
                let known = r.max_epoch.max(r.epoch);
                if known > self.groups[gi].max_epoch {
                    self.groups[gi].max_epoch = known;
                    // Acknowledge a claim at once (the claimer waits for a quorum of us).
                    self.urgent = true;
                    self.out.push(Action::PersistEpoch {
                        group: r.name.to_string(),
                        epoch: known,
                    });
                }
            }
        }
        if msg.digest != self.cfg.digest
            && self.peers[si].digest_warned.as_deref() != Some(msg.digest.as_str())
        {
            self.peers[si].digest_warned = Some(msg.digest.clone());
            let mine: String = self.cfg.digest.chars().take(12).collect();
            let theirs: String = msg.digest.chars().take(12).collect();
            self.emit(
                &events::CONFIG_DIGEST_MISMATCH,
                format!("server {from} runs configuration {theirs}…, this server runs {mine}…"),
                |e| {
                    e.peer(from)
                        .field("local_digest", mine.clone())
                        .field("peer_digest", theirs.clone())
                },
            );
        }
        // Epochs (a maximum) and intents (by version) above are learnt from any heartbeat;
        // the sender's state only from its newest one.
        if newest || self.peers[si].msg.is_none() {
            self.peers[si].aligned = msg.groups.len() == self.cfg.groups.len()
                && msg
                    .groups
                    .iter()
                    .zip(&self.cfg.groups)
                    .all(|(r, g)| *r.name == *g.name);
            self.peers[si].msg = Some(msg);
        }
    }

    fn merge_intents(&mut self, other: &Intents) {
        fn newer(v1: u64, o1: &str, v2: u64, o2: &str) -> bool {
            (v1, o1) > (v2, o2)
        }
        for (g, i) in &other.groups {
            if !self.cfg.groups.iter().any(|x| &x.name == g) {
                continue;
            }
            let cur = self.intents.groups.get(g);
            if cur.is_none_or(|c| newer(i.version, &i.origin, c.version, &c.origin)) {
                self.intents.groups.insert(g.clone(), i.clone());
            }
        }
        if newer(
            other.suspended.version,
            &other.suspended.origin,
            self.intents.suspended.version,
            &self.intents.suspended.origin,
        ) {
            let was = self.intents.suspended.on;
            self.intents.suspended = other.suspended.clone();
            self.announce_suspend(was);
        }
        if newer(
            other.stopping.version,
            &other.stopping.origin,
            self.intents.stopping.version,
            &self.intents.stopping.origin,
        ) {
            self.intents.stopping = other.stopping.clone();
            // A `cluster stop` issued before this agent started is not for it: an agent
            // still draining a stuck group keeps sending the intent, and an agent started
            // later must not exit because of it.
            if other.stopping.on
                && self.now.since(self.started) < self.cfg.heartbeat.startup_wait().ms()
            {
                self.stopping_ignored = other.stopping.version;
            }
        }
        for (m, i) in &other.monitors {
            if !self.cfg.monitors.iter().any(|x| &x.name == m) {
                continue;
            }
            let cur = self.intents.monitors.get(m);
            if cur.is_none_or(|c| newer(i.version, &i.origin, c.version, &c.origin)) {
                let was = cur.is_some_and(|c| c.on);
                self.intents.monitors.insert(m.clone(), i.clone());
                if was != i.on {
                    if let Some(mi) = self.cfg.monitors.iter().position(|x| &x.name == m) {
                        self.announce_monitor_flag(mi, i.on);
                    }
                }
            }
        }
        if newer(
            other.timeout.version,
            &other.timeout.origin,
            self.intents.timeout.version,
            &self.intents.timeout.origin,
        ) {
            self.intents.timeout = other.timeout.clone();
        }
    }

    fn announce_suspend(&mut self, was: bool) {
        let on = self.intents.suspended.on;
        if on != was {
            if on {
                self.emit(
                    &events::CLUSTER_SUSPENDED,
                    "cluster suspended: no monitoring, recovery or failover".into(),
                    |e| e,
                );
            } else {
                self.emit(&events::CLUSTER_RESUMED, "cluster resumed".into(), |e| e);
            }
        }
    }

    /// The version of the next intent written here, or `None` when it would exceed
    /// [`bounds::MAX_VERSION`] (learned intents are within it, so this needs a damaged
    /// or forged history).
    fn next_version(&self) -> Option<u64> {
        let i = &self.intents;
        let mut v = i
            .suspended
            .version
            .max(i.stopping.version)
            .max(i.timeout.version);
        for g in i.groups.values() {
            v = v.max(g.version);
        }
        for m in i.monitors.values() {
            v = v.max(m.version);
        }
        bounds::next_version(v)
    }

    fn apply_command(&mut self, cmd: Command) -> Result<(), CommandError> {
        let version = self.next_version().ok_or_else(|| {
            CommandError::Invalid(format!(
                "operator intent versions are exhausted (bound {})",
                bounds::MAX_VERSION
            ))
        })?;
        let origin = self.intent_origin();
        let monitor_on = matches!(cmd, Command::MonitorSuspend { .. });
        let gidx = |s: &Self, g: &str| {
            s.cfg
                .groups
                .iter()
                .position(|x| x.name == g)
                .ok_or_else(|| CommandError::UnknownGroup(g.to_string()))
        };
        match cmd {
            Command::GroupStart { group, on } => {
                let gi = gidx(self, &group)?;
                if let Some(s) = &on {
                    self.check_member(gi, s)?;
                }
                let prefer_epoch = self.known_max_epoch(gi);
                self.intents.groups.insert(
                    group.clone(),
                    GroupIntent {
                        version,
                        origin,
                        run: true,
                        prefer: on.clone(),
                        prefer_epoch,
                        clear_exclusions: true,
                    },
                );
                self.emit(
                    &events::GROUP_START_REQUESTED,
                    format!(
                        "group {group} start requested{}",
                        on.map(|s| format!(" on {s}")).unwrap_or_default()
                    ),
                    |e| e.group(&group),
                );
            }
            Command::GroupStop { group } => {
                let gi = gidx(self, &group)?;
                let prefer_epoch = self.known_max_epoch(gi);
                self.intents.groups.insert(
                    group.clone(),
                    GroupIntent {
                        version,
                        origin,
                        run: false,
                        prefer: None,
                        prefer_epoch,
                        clear_exclusions: false,
                    },
                );
                self.emit(
                    &events::GROUP_STOP_REQUESTED,
                    format!("group {group} stop requested"),
                    |e| e.group(&group),
                );
            }
            Command::GroupMove { group, to } => {
                let gi = gidx(self, &group)?;
                let to_idx = self.move_target(gi, &group, to.as_deref())?;
                let to_name = self.cfg.servers[to_idx].name.clone();
                let prefer_epoch = self.known_max_epoch(gi);
                self.intents.groups.insert(
                    group.clone(),
                    GroupIntent {
                        version,
                        origin,
                        run: true,
                        prefer: Some(to_name.clone()),
                        prefer_epoch,
                        clear_exclusions: false,
                    },
                );
                self.emit(
                    &events::GROUP_MOVE,
                    format!("group {group} move to {to_name} requested"),
                    |e| e.group(&group).field("to", to_name.clone()),
                );
            }
            Command::ClusterSuspend | Command::ClusterResume => {
                let was = self.intents.suspended.on;
                self.intents.suspended = FlagIntent {
                    version,
                    origin,
                    on: cmd == Command::ClusterSuspend,
                };
                self.announce_suspend(was);
            }
            Command::ClusterStop => {
                self.intents.stopping = FlagIntent {
                    version,
                    origin,
                    on: true,
                };
                self.emit(
                    &events::CLUSTER_STOP,
                    "cluster stop requested: every server stops its groups and its agent".into(),
                    |e| e,
                );
            }
            Command::MonitorSuspend { monitor } | Command::MonitorResume { monitor } => {
                let on = monitor_on;
                let mi = self
                    .cfg
                    .monitors
                    .iter()
                    .position(|m| m.name == monitor)
                    .ok_or_else(|| CommandError::UnknownMonitor(monitor.clone()))?;
                let was = self.intents.monitors.get(&monitor).is_some_and(|f| f.on);
                self.intents.monitors.insert(
                    monitor.clone(),
                    FlagIntent {
                        version,
                        origin,
                        on,
                    },
                );
                if was != on {
                    self.announce_monitor_flag(mi, on);
                }
            }
            Command::TimeoutSet {
                heartbeat_timeout_ms,
                monitor_factor_pct,
                duration_ms,
            } => {
                self.check_timeout_set(heartbeat_timeout_ms, duration_ms)?;
                self.intents.timeout = TimeoutIntent {
                    version,
                    origin,
                    heartbeat_timeout_ms,
                    monitor_factor_pct: if monitor_factor_pct == 0 {
                        100
                    } else {
                        monitor_factor_pct
                    },
                    duration_ms,
                };
            }
            Command::TimeoutClear => {
                self.intents.timeout = TimeoutIntent {
                    version,
                    origin,
                    heartbeat_timeout_ms: 0,
                    monitor_factor_pct: 100,
                    duration_ms: 0,
                };
            }
            Command::Shutdown => {
                if !self.leaving {
                    self.leaving = true;
                    self.emit(
                        &events::AGENT_STOPPING,
                        format!(
                            "agent on {} stopping: deactivating its groups",
                            self.me_name()
                        ),
                        |e| e,
                    );
                }
            }
        }
        Ok(())
    }

    /// Where `group move` sends group `gi`: the server named (a member that can take
    /// groups now), or the next eligible member after the holder (the first one when
    /// nobody holds it).
    fn move_target(&self, gi: usize, group: &str, to: Option<&str>) -> Result<usize, CommandError> {
        let holder = self.holders(gi).first().map(|h| h.0);
        match to {
            Some(s) => {
                self.check_member(gi, s)?;
                let si = self
                    .server_idx(s)
                    .ok_or_else(|| CommandError::UnknownServer(s.to_string()))?;
                if !self.eligible(si) {
                    return Err(CommandError::Invalid(format!("server `{s}` cannot take groups now (down, starting, refusing or without quorum)")));
                }
                Ok(si)
            }
            None => {
                let g = &self.cfg.groups[gi];
                let order: Vec<usize> = g
                    .servers
                    .iter()
                    .filter_map(|s| self.server_idx(s))
                    .collect();
                // The next server after the holder, or the first one when nobody
                // holds the group.
                let (start, skip) = match holder.and_then(|h| order.iter().position(|&x| x == h)) {
                    Some(p) => (p, 1),
                    None => (0, 0),
                };
                (skip..order.len())
                    .map(|k| order[(start + k) % order.len()])
                    .find(|&s| self.eligible(s))
                    .ok_or_else(|| CommandError::NoTarget(group.to_string()))
            }
        }
    }

    /// The bounds of `timeout set`: a duration, a heartbeat timeout of at least three
    /// intervals, both at most 7 days.
    fn check_timeout_set(
        &self,
        heartbeat_timeout_ms: u64,
        duration_ms: u64,
    ) -> Result<(), CommandError> {
        if duration_ms == 0 {
            return Err(CommandError::Invalid("--for must be longer than 0".into()));
        }
        let min_ms = self.cfg.heartbeat.interval.ms().saturating_mul(3);
        if heartbeat_timeout_ms > 0 && heartbeat_timeout_ms < min_ms {
            return Err(CommandError::Invalid(format!(
                "heartbeat timeout must be at least {min_ms} ms (3 × the heartbeat interval)"
            )));
        }
        if heartbeat_timeout_ms > bounds::MAX_DURATION_MS || duration_ms > bounds::MAX_DURATION_MS {
            return Err(CommandError::Invalid(format!(
                "the heartbeat timeout and --for are at most {} ms (7 days)",
                bounds::MAX_DURATION_MS
            )));
        }
        Ok(())
    }

    fn check_member(&self, gi: usize, s: &str) -> Result<(), CommandError> {
        if self.server_idx(s).is_none() {
            return Err(CommandError::UnknownServer(s.to_string()));
        }
        if !self.cfg.groups[gi].servers.iter().any(|x| x == s) {
            return Err(CommandError::NotInGroup {
                group: self.cfg.groups[gi].name.clone(),
                server: s.to_string(),
            });
        }
        Ok(())
    }
}
