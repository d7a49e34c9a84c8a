//! The engine's evaluation pass and result handling.

use std::collections::BTreeMap;

use super::*;

impl Engine {
    /// Re-evaluate everything after an input. Deterministic in (state, now).
    pub(super) fn evaluate(&mut self) {
        let out_before = self.out.len();
        self.wake = None;
        self.update_timeout_override();
        self.update_membership();
        self.recompute_quorum();
        self.update_refusal();
        // Most steps see no claim at all: then no group has a peer's claim to acknowledge.
        let peer_claims = self.peers.iter().enumerate().any(|(si, p)| {
            si != self.me
                && p.up
                && p.msg
                    .as_ref()
                    .is_some_and(|m| m.groups.iter().any(|r| r.state == GroupState::Claiming))
        });
        for gi in 0..self.groups.len() {
            self.update_ack(gi, peer_claims);
            self.group_logic(gi);
        }
        for mi in 0..self.monitors.len() {
            self.monitor_logic(mi);
        }
        self.self_fence_deadline();
        self.ask_witness();
        self.maybe_exit();
        self.persist_ownership();
        self.evaluated_at = self.now;
        // What this evaluation did may let the next one decide more (a group re-adopted
        // here may fail back, a stopped one start elsewhere): not steady until one
        // evaluation decided nothing.
        self.evaluation_acted = self.out.len() > out_before;
        self.evaluated_quorum = self.quorum;
        self.evaluated_up.clear();
        let up = self.peers.iter().map(|p| p.up);
        self.evaluated_up.extend(up);
    }

    /// About once per heartbeat interval (and at once while a claim waits for its
    /// acknowledgement), ask the witness for its vote for this server's partition.
    fn ask_witness(&mut self) {
        if !self.witness_configured() || !self.reach_ok || self.now < self.witness_next_ask {
            return;
        }
        self.witness_next_ask = self.now.plus(self.cfg.heartbeat.interval.ms());
        let mut partition: Vec<String> = (0..self.peers.len())
            .filter(|&si| si == self.me || self.heard_recently(si))
            .map(|si| self.cfg.servers[si].name.clone())
            .collect();
        partition.sort();
        let mut epochs: BTreeMap<String, u64> = (0..self.groups.len())
            .map(|gi| (self.cfg.groups[gi].name.clone(), self.known_max_epoch(gi)))
            .collect();
        // A claim is recorded at the witness under `group@server`: the witness's grant
        // acknowledges it only if no other server's claim of that epoch is recorded.
        for gi in 0..self.groups.len() {
            if let Local::Claiming { epoch } = self.groups[gi].local {
                epochs.insert(
                    format!("{}@{}", self.cfg.groups[gi].name, self.me_name()),
                    epoch,
                );
            }
        }
        // The witness keeps data marks like epochs (the maximum of each key).
        for (k, &v) in &self.marks {
            epochs.insert(k.clone(), v);
        }
        self.out.push(Action::AskWitness {
            partition,
            lease_ms: self.quorum_lease(),
            epochs,
        });
    }

    pub(super) fn on_witness_reply(
        &mut self,
        sent_at: Millis,
        granted: bool,
        epochs: BTreeMap<String, u64>,
        detail: String,
    ) {
        if !self.witness_configured() {
            return;
        }
        // An epoch above the bound is corrupt or forged: the answer counts as no grant and
        // nothing of it is learned.
        let (granted, epochs, detail) =
            match epochs.iter().find(|(_, &e)| !crate::bounds::epoch_ok(e)) {
                Some((k, e)) => {
                    let what = format!("epoch {e} for {k}");
                    self.report_out_of_bounds("the witness", what.clone());
                    (
                        false,
                        BTreeMap::new(),
                        format!("the witness answered with {what}, above the bound: refused"),
                    )
                }
                None => (granted, epochs, detail),
            };
        // Learn epochs the witness has recorded (a claim elsewhere this server missed),
        // and data marks.
        for (key, &e) in &epochs {
            if crate::marks::is_mark_key(key) {
                self.learn_mark(key, e);
            }
        }
        for (key, e) in &epochs {
            let g = key.split_once('@').map_or(key.as_str(), |(g, _)| g);
            if let Some(gi) = self.cfg.groups.iter().position(|x| x.name == g) {
                if *e > self.groups[gi].max_epoch {
                    self.groups[gi].max_epoch = *e;
                    self.out.push(Action::PersistEpoch {
                        group: g.to_string(),
                        epoch: *e,
                    });
                }
            }
        }
        if granted {
            let until = sent_at.plus(self.timing().witness_valid_ms);
            if until > self.now && self.witness_until.is_none_or(|t| until >= t) {
                self.witness_until = Some(until);
                self.witness_epochs = epochs;
            }
            self.witness_detail = detail;
        } else {
            // Denied (another partition holds it) or no answer: stop counting it now
            // rather than at the end of the last grant.
            self.witness_until = None;
            self.witness_epochs.clear();
            self.witness_detail = detail;
        }
        let held = self.witness_valid();
        let waited = self.now.since(self.started) >= self.cfg.heartbeat.startup_wait().ms();
        if waited && self.witness_reported != Some(held) {
            if held {
                self.emit(
                    &events::WITNESS_VOTE_GRANTED,
                    "the witness granted its vote to this server's partition".into(),
                    |e| e,
                );
            } else {
                let d = self.witness_detail.clone();
                self.emit(
                    &events::WITNESS_VOTE_LOST,
                    format!("the witness vote is not held by this server: {d}"),
                    |e| e.field("detail", d.clone()),
                );
            }
            self.witness_reported = Some(held);
        }
    }

    pub(super) fn on_reachability(&mut self, ok: bool, detail: String) {
        if ok == self.reach_ok {
            self.reach_detail = detail;
            return;
        }
        self.reach_ok = ok;
        self.reach_detail = detail.clone();
        self.urgent = true;
        if ok {
            self.emit(
                &events::REACHABILITY_OK,
                format!("reachability targets answer again ({detail}): this server counts its vote again"),
                |e| e.field("detail", detail.clone()),
            );
        } else {
            self.witness_until = None;
            self.emit(
                &events::REACHABILITY_LOST,
                format!("no [quorum] ping/http target answers ({detail}): this server gives up its vote"),
                |e| e.field("detail", detail.clone()),
            );
        }
    }

    /// A server that lost quorum must have deactivated each group `g` within that group's
    /// fence deadline `F_g` (at most the agent's `F`); otherwise it escalates (`[quorum]
    /// on_fence_timeout`): the others take group `g` over after `T + W_g`.
    fn self_fence_deadline(&mut self) {
        let holding = self.groups.iter().any(|g| g.local.state().holds());
        if self.quorum || !holding {
            self.fence_started = None;
            self.fence_escalated = false;
            self.fence_carried = false;
            return;
        }
        let started = *self.fence_started.get_or_insert(self.now);
        if self.fence_escalated {
            return;
        }
        let lost_ms = self.now.since(started);
        let carried = self.fence_carried;
        // The held groups past their own deadline, with it (every held group when the
        // clock ran before this start: its deadline may be over).
        let late: Vec<(String, u64)> = (0..self.groups.len())
            .filter(|&gi| self.groups[gi].local.state().holds())
            .map(|gi| (gi, self.group_timing(gi).fence_ms))
            .filter(|&(_, f)| carried || lost_ms >= f)
            .map(|(gi, f)| {
                let st = self.groups[gi].local.state().as_str();
                (
                    format!("{} ({st}, deadline {f} ms)", self.cfg.groups[gi].name),
                    f,
                )
            })
            .collect();
        let Some(fence) = late.iter().map(|l| l.1).min() else {
            return;
        };
        self.fence_escalated = true;
        let held: Vec<String> = late.into_iter().map(|l| l.0).collect();
        let which = match self.cfg.quorum.on_fence_timeout {
            crate::config::OnFenceTimeout::Reboot => Some(FinalAction::Reboot),
            crate::config::OnFenceTimeout::Shutdown => Some(FinalAction::Shutdown),
            crate::config::OnFenceTimeout::None => None,
        };
        let since = if carried {
            "before this agent restarted (its previous run was stopping groups without quorum when it ended)".to_string()
        } else {
            format!("{lost_ms} ms ago")
        };
        let msg = format!(
            "quorum lost {since} and still holding {}: self-fence deadline missed; {}",
            held.join(", "),
            which.map_or(
                "on_fence_timeout = none: only reporting".to_string(),
                |w| format!("running the {} command", w.as_str())
            )
        );
        self.emit(&events::FENCE_DEADLINE_MISSED, msg.clone(), |e| {
            e.field("fence_ms", fence)
        });
        if let Some(which) = which {
            self.out.push(Action::SystemCommand {
                which,
                reason: msg,
                fence: true,
            });
        }
    }

    /// Remaining self-fence budget of group `gi` while quorum is lost (None: quorum
    /// held).
    pub(super) fn fence_remaining(&self, gi: usize) -> Option<u64> {
        if self.quorum {
            return None;
        }
        let fence = self.group_timing(gi).fence_ms;
        Some(match self.fence_started {
            Some(t) => fence.saturating_sub(self.now.since(t)),
            None => fence,
        })
    }

    /// A server of group `gi` that is down and has not been silent long enough to have
    /// stopped the group or fenced itself (`T + W_g`, counted from when this agent started for a server it never
    /// heard): (server, ms left).
    fn takeover_block(&self, gi: usize) -> Option<(String, u64)> {
        // Silence counts from the last sign of life, heard directly or reported by a
        // peer (`hears`), and never from before this server last gained quorum: a holder
        // this server could not hear may have kept quorum (through others, or the
        // witness) until this server gained it.
        let after = self.group_timing(gi).takeover_after_ms();
        let floor = self.quorum_since.unwrap_or(self.now).max(self.started);
        self.cfg.groups[gi]
            .servers
            .iter()
            .filter_map(|s| self.server_idx(s))
            .filter(|&si| si != self.me && !self.peers[si].up)
            .filter_map(|si| {
                let since = [self.last_heard(si), self.peers[si].relayed]
                    .into_iter()
                    .flatten()
                    .fold(floor, Millis::max);
                let silent = self.now.since(since);
                (silent < after).then(|| (self.cfg.servers[si].name.clone(), after - silent))
            })
            .max_by_key(|x| x.1)
    }

    /// Acknowledge at most one claim per epoch: the best claim of a new epoch by another
    /// server, unless this server holds the group itself.
    /// `peer_claims`: whether any up peer reports a group in `claiming` (else there is
    /// nothing to acknowledge).
    fn update_ack(&mut self, gi: usize, peer_claims: bool) {
        if let Local::Claiming { epoch } = self.groups[gi].local {
            if self.groups[gi].acked.as_ref().is_none_or(|a| a.1 < epoch) {
                self.groups[gi].acked = Some((self.me_name(), epoch));
            }
            return;
        }
        if !peer_claims || self.groups[gi].local.state().holds() {
            return;
        }
        let name = self.cfg.groups[gi].name.clone();
        let acked_epoch = self.groups[gi].acked.as_ref().map_or(0, |a| a.1);
        let best = (0..self.peers.len())
            .filter(|&si| si != self.me && self.peers[si].up)
            .filter_map(|si| {
                let r = self.peers[si].report(gi, &name)?;
                (r.state == GroupState::Claiming && r.epoch > acked_epoch).then_some((si, r.epoch))
            })
            .max_by_key(|&(si, e)| self.claim(si, e));
        if let Some((si, e)) = best {
            self.groups[gi].acked = Some((self.cfg.servers[si].name.clone(), e));
            self.urgent = true;
        }
    }

    /// Votes acknowledging `epoch` for group `gi`: this server, peers whose vote counts
    /// and who report it, the witness if its grant recorded it.
    fn claim_acks(&self, gi: usize, epoch: u64) -> usize {
        let name = &self.cfg.groups[gi].name;
        let me = self.me_name();
        let mut acks = usize::from(self.counts_vote(self.me));
        for si in 0..self.peers.len() {
            if si == self.me || !self.counts_vote(si) {
                continue;
            }
            let acked = self.peers[si].report(gi, name).is_some_and(|r| {
                r.ack
                    .as_ref()
                    .is_some_and(|(s, e)| **s == *me && *e == epoch)
            });
            acks += usize::from(acked);
        }
        if self.witness_valid() {
            let mine = format!("{name}@{me}");
            let prefix = format!("{name}@");
            let recorded = self.witness_epochs.get(&mine).is_some_and(|&e| e >= epoch);
            let rival = self
                .witness_epochs
                .iter()
                .any(|(k, &e)| k.starts_with(&prefix) && *k != mine && e >= epoch);
            acks += usize::from(recorded && !rival);
        }
        acks
    }

    fn update_timeout_override(&mut self) {
        let t = self.intents.timeout.clone();
        if t.version > self.timeout_seen_version {
            self.timeout_seen_version = t.version;
            if t.duration_ms > 0 {
                self.timeout_until = Some(self.now.plus(t.duration_ms));
                self.emit(
                    &events::TIMEOUT_SCALED,
                    format!(
                        "temporary timeouts for {} ms: heartbeat timeout {} ms, monitor timeouts × {}%",
                        t.duration_ms,
                        if t.heartbeat_timeout_ms > 0 { t.heartbeat_timeout_ms } else { self.cfg.heartbeat.timeout.ms() },
                        t.monitor_factor_pct
                    ),
                    |e| e.field("duration_ms", t.duration_ms).field("heartbeat_timeout_ms", t.heartbeat_timeout_ms).field("monitor_factor_pct", t.monitor_factor_pct),
                );
            } else if self.timeout_until.take().is_some() {
                self.emit(
                    &events::TIMEOUT_REVERTED,
                    "temporary timeouts cleared".into(),
                    |e| e,
                );
            }
        }
        if let Some(until) = self.timeout_until {
            if self.now >= until {
                self.timeout_until = None;
                self.emit(
                    &events::TIMEOUT_REVERTED,
                    "temporary timeouts expired; configured values apply again".into(),
                    |e| e,
                );
            }
        }
    }

    pub(super) fn update_membership(&mut self) {
        let timeout = self.hb_timeout();
        let now = self.now;
        for si in 0..self.peers.len() {
            if si == self.me {
                continue;
            }
            let npaths = self.peers[si].paths.len();
            let was_up = self.peers[si].up;
            let mut any = false;
            for p in 0..npaths {
                let up = self.peers[si].paths[p].is_some_and(|t| now.since(t) < timeout);
                self.peers[si].path_up[p] = up;
                any |= up;
            }
            self.peers[si].up = any;
            if any != was_up {
                self.urgent = true;
                // The server-level event covers every path.
                self.peers[si].path_reported_down.fill(false);
                self.peers[si].up_since = any.then_some(now);
            }
            if any && !was_up {
                let name = self.cfg.servers[si].name.clone();
                self.emit(&events::SERVER_UP, format!("server {name} is up"), |e| {
                    e.peer(&name)
                });
            } else if !any && was_up {
                let name = self.cfg.servers[si].name.clone();
                self.emit(
                    &events::SERVER_DOWN,
                    format!("server {name} is down: no heartbeat on any of {npaths} interconnect path(s) for {timeout} ms"),
                    |e| e.peer(&name).field("timeout_ms", timeout),
                );
            }
            if !any {
                continue;
            }
            // A path is reported down once it has been silent for the timeout while the
            // server was up (also a path that never came back with the server), and up
            // again only after having been reported down.
            let settled = self.peers[si]
                .up_since
                .is_some_and(|t| now.since(t) >= timeout);
            for p in 0..npaths {
                let up = self.peers[si].path_up[p];
                let reported_down = self.peers[si].path_reported_down[p];
                if up && reported_down {
                    self.peers[si].path_reported_down[p] = false;
                    let name = self.cfg.servers[si].name.clone();
                    self.emit(
                        &events::PATH_UP,
                        format!("interconnect path {p} to {name} is up"),
                        |e| e.peer(&name).field("path", p),
                    );
                } else if !up && !reported_down && settled {
                    self.peers[si].path_reported_down[p] = true;
                    let name = self.cfg.servers[si].name.clone();
                    self.emit(
                        &events::PATH_DOWN,
                        format!("interconnect path {p} to {name} is down (silent for {timeout} ms); other paths still work"),
                        |e| e.peer(&name).field("path", p),
                    );
                }
            }
        }
    }

    /// Votes this server counts now: servers (mutual hearing within the lease) plus the
    /// witness while its grant is valid.
    pub(super) fn votes_heard(&self) -> usize {
        (0..self.peers.len())
            .filter(|&si| self.counts_vote(si))
            .count()
            + usize::from(self.witness_valid())
    }

    pub(super) fn recompute_quorum(&mut self) {
        let now = self.now;
        let heard = self.votes_heard();
        let votes = self.cfg.votes();
        let q = heard * 2 > votes;
        if q && !self.quorum {
            // At startup the startup wait covers the settling time.
            let starting = now.since(self.started) < self.cfg.heartbeat.startup_wait().ms();
            self.quorum_since = Some(if starting { self.started } else { now });
        } else if !q {
            self.quorum_since = None;
        }
        self.quorum = q;
        // Report changes only once the startup wait is over (before that, silence is normal).
        let waited = self.now.since(self.started) >= self.cfg.heartbeat.startup_wait().ms();
        if waited && self.quorum_reported != Some(q) {
            if q && self.quorum_reported.is_some() {
                self.emit(
                    &events::QUORUM_REGAINED,
                    format!("quorum regained: {heard} of {votes} votes"),
                    |e| e,
                );
            } else if !q {
                let why = self.no_quorum_detail();
                self.emit(
                    &events::NO_QUORUM,
                    format!("no quorum: this server counts {heard} of {votes} votes and needs more than half; it will not run groups ({why})"),
                    |e| e.field("heard", heard).field("votes", votes),
                );
                // `[quorum] on_loss`: beyond stopping the groups (always done), shut the
                // server down or reboot it — only after having had quorum, so a server
                // booting alone does not power itself off.
                if self.quorum_reported == Some(true) {
                    let which = match self.cfg.quorum.on_loss {
                        crate::config::OnQuorumLoss::StopGroups => None,
                        crate::config::OnQuorumLoss::Shutdown => Some(FinalAction::Shutdown),
                        crate::config::OnQuorumLoss::Reboot => Some(FinalAction::Reboot),
                    };
                    if let Some(which) = which {
                        self.out.push(Action::SystemCommand {
                            which,
                            reason: format!(
                                "quorum lost ({heard} of {votes} votes): [quorum] on_loss"
                            ),
                            fence: true,
                        });
                    }
                }
            }
            self.quorum_reported = Some(q);
        }
    }

    /// Why each vote is or is not counted, for the no-quorum event.
    fn no_quorum_detail(&self) -> String {
        let me = &self.cfg.servers[self.me].name;
        let mut parts = Vec::new();
        for si in 0..self.peers.len() {
            let name = &self.cfg.servers[si].name;
            let why = if si == self.me {
                if self.reach_ok {
                    "counted".to_string()
                } else {
                    format!("given up: {}", self.reach_detail)
                }
            } else if self.counts_vote(si) {
                "counted".to_string()
            } else if !self.heard_recently(si) {
                "not heard".to_string()
            } else if self.peers[si].msg.as_ref().is_some_and(|m| !m.vote) {
                "gave up its vote".to_string()
            } else {
                format!("does not hear {me}")
            };
            parts.push(format!("{name}: {why}"));
        }
        if self.witness_configured() {
            parts.push(if self.witness_valid() {
                "witness: granted".to_string()
            } else {
                format!("witness: not granted ({})", self.witness_detail)
            });
        }
        parts.join("; ")
    }

    fn update_refusal(&mut self) {
        // Count digests among up servers (self included).
        let mut counts: BTreeMap<&str, (usize, &str)> = BTreeMap::new();
        for (si, p) in self.peers.iter().enumerate() {
            let (digest, name) = if si == self.me {
                (self.cfg.digest.as_str(), self.cfg.servers[si].name.as_str())
            } else if p.up {
                match &p.msg {
                    Some(m) => (m.digest.as_str(), self.cfg.servers[si].name.as_str()),
                    None => continue,
                }
            } else {
                continue;
            };
            let e = counts.entry(digest).or_insert((0, name));
            e.0 += 1;
            if name < e.1 {
                e.1 = name;
            }
        }
        let best = counts
            .iter()
            .max_by(|a, b| a.1 .0.cmp(&b.1 .0).then(b.1 .1.cmp(a.1 .1)))
            .map(|(d, _)| d.to_string());
        let refused = best.is_some_and(|d| d != self.cfg.digest);
        // Report only once the startup wait is over: before that this server may not have
        // heard every peer yet, and a passing tie would raise a false alarm on a server
        // that turns out to be in the majority. (It cannot activate before then anyway.)
        let waited = self.now.since(self.started) >= self.cfg.heartbeat.startup_wait().ms();
        if refused && !self.refused_reported && waited {
            self.emit(
                &events::ACTIVATION_REFUSED_DIGEST,
                format!("server {} refuses to activate groups: its configuration differs from the other servers'", self.me_name()),
                |e| e,
            );
            self.refused_reported = true;
        }
        if !refused {
            self.refused_reported = false;
        }
        self.refused = refused;
    }

    /// Every up peer has group `gi` in its configuration (reports it in its heartbeats).
    pub(super) fn known_everywhere(&self, gi: usize) -> bool {
        let name = &self.cfg.groups[gi].name;
        self.peers
            .iter()
            .enumerate()
            .filter(|&(si, p)| si != self.me && p.up)
            .all(|(_, p)| p.report(gi, name).is_some())
    }

    /// The group must not run here now (operator stop, cluster stop, shutdown, no quorum).
    fn must_stop(&self, gi: usize) -> bool {
        !self.group_run(gi) || self.stopping() || self.leaving || !self.quorum
    }

    /// Resources that are (or may be) active when an activation stops at step `pos`:
    /// those of the steps up to and including `pos`, plus those outside the plan (a
    /// resource restart leaves the rest of the group running). In activation order.
    fn touched(&self, gi: usize, steps: &[Vec<usize>], pos: usize) -> Vec<usize> {
        let upto = steps.get(..=pos).unwrap_or(steps);
        (0..self.cfg.groups[gi].resources.len())
            .filter(|i| upto.iter().any(|s| s.contains(i)) || !steps.iter().any(|s| s.contains(i)))
            .collect()
    }

    /// The slots of one step, each with the id of the action that will start (or stop)
    /// its resource.
    fn new_slots(&mut self, step: &[usize]) -> Vec<Slot> {
        step.iter()
            .map(|&ri| Slot {
                ri,
                attempt: 0,
                inflight: Some(self.id()),
                failed: false,
            })
            .collect()
    }

    /// Issue the actions of a step's slots.
    fn push_slots(&mut self, gi: usize, activate: bool, epoch: u64, slots: &[Slot]) {
        for s in slots {
            if let Some(id) = s.inflight {
                self.push_resource_action(id, gi, activate, s.ri, epoch, s.attempt);
            }
        }
    }

    fn set_local(&mut self, gi: usize, l: Local) {
        if l.state() != self.groups[gi].local.state() {
            self.urgent = true;
        }
        self.groups[gi].local = l;
        self.groups[gi].since = self.now;
    }

    fn group_logic(&mut self, gi: usize) {
        let gname = self.cfg.groups[gi].name.clone();
        self.apply_group_start_intent(gi, &gname);
        let holders = self.holders(gi);
        let others: Vec<(usize, GroupState, u64)> =
            holders.iter().copied().filter(|h| h.0 != self.me).collect();
        if let Some(h) = others.first() {
            let name = &self.cfg.servers[h.0].name;
            // Most groups of a step are held elsewhere, by the same server as before.
            if self.groups[gi].last_holder.as_ref() != Some(name) {
                self.groups[gi].last_holder = Some(name.clone());
            }
            self.groups[gi].no_server_warned = false;
        }
        let must_stop = self.must_stop(gi);
        match self.groups[gi].local.clone() {
            Local::Adopting {
                epoch,
                pending,
                ok,
                checked,
                findings,
            } => {
                let done = checked && pending.is_empty();
                self.adopting_logic(gi, &gname, epoch, done, ok, &findings, &others, must_stop);
            }
            Local::Offline => self.offline_logic(gi, &gname, &holders, must_stop),
            Local::Online { epoch } => self.online_logic(gi, &gname, epoch, must_stop),
            Local::Failed { epoch } => {
                if self.yield_to_better_claim(gi, epoch) {
                    return;
                }
                if must_stop {
                    self.start_deactivation(gi, epoch, After::Release { exclude: false }, None);
                }
            }
            Local::Claiming { epoch } => self.claiming_logic(gi, &gname, epoch, &others, must_stop),
            Local::Stuck { .. } | Local::Activating { .. } | Local::Deactivating { .. } => {}
        }
    }

    /// `group start` clears the group's exclusions and its monitors' recovery counters
    /// (once per intent version), and retries a deactivation that failed (BTN-2106).
    fn apply_group_start_intent(&mut self, gi: usize, gname: &str) {
        if let Some(i) = self.intents.groups.get(gname).cloned() {
            if i.clear_exclusions && i.version > self.groups[gi].cleared_version {
                self.groups[gi].cleared_version = i.version;
                // `group start` after a failed deactivation (BTN-2106: the operator
                // stopped the resource by hand): try the deactivation again.
                if let Local::Stuck { epoch } = self.groups[gi].local {
                    self.start_deactivation(gi, epoch, After::Release { exclude: false }, None);
                }
                self.groups[gi].excluded = false;
                self.groups[gi].act_failovers.clear();
                self.groups[gi].no_server_warned = false;
                for mi in 0..self.monitors.len() {
                    if self.cfg.monitors[mi].group.as_deref() == Some(gname) {
                        let m = &mut self.monitors[mi];
                        m.scripts = 0;
                        m.restarts = 0;
                        m.failovers = 0;
                        m.exhausted = false;
                    }
                }
            }
        }
    }

    /// Re-adoption after an agent restart, once every resource was checked: keep the
    /// group if all is well and, after the startup wait, it is not held elsewhere and may
    /// run here; else clean it up. A group with a resource that did not check active is
    /// cleaned up at once, without the startup wait: it is cleaned up whatever that wait
    /// would show, and a server without quorum must have stopped it within the group's
    /// fence deadline, counted from the agent's start (an agent that waited, fenced itself
    /// by a reboot and came back to the same stopped resources would reboot again and
    /// again while its peers were down).
    #[allow(clippy::too_many_arguments)]
    fn adopting_logic(
        &mut self,
        gi: usize,
        gname: &str,
        epoch: u64,
        checked: bool,
        ok: bool,
        findings: &[String],
        others: &[(usize, GroupState, u64)],
        must_stop: bool,
    ) {
        let waited = self.now.since(self.started) >= self.cfg.heartbeat.startup_wait().ms();
        if !checked || (ok && !waited) {
            return;
        }
        let elsewhere = !others.is_empty();
        if ok && !elsewhere && !must_stop {
            self.set_local(gi, Local::Online { epoch });
            self.groups[gi].online_since = Some(self.now);
            self.emit(
                &events::GROUP_READOPTED,
                format!(
                    "group {gname} re-adopted on {} after an agent restart (epoch {epoch})",
                    self.me_name()
                ),
                |e| e.group(gname).epoch(epoch),
            );
        } else {
            let why = if elsewhere {
                format!("server {} now holds it", self.cfg.servers[others[0].0].name)
            } else if !ok {
                format!("not every resource checked active: {}", findings.join(", "))
            } else {
                "it should not run here now".to_string()
            };
            self.emit(&events::GROUP_READOPT_CLEANUP, format!("group {gname} was held before the restart but {why}; deactivating its resources here"), |e| e.group(gname).epoch(epoch));
            self.start_deactivation(gi, epoch, After::Release { exclude: false }, None);
        }
    }

    /// Nobody holds the group: start it here if this server is the target and may.
    fn offline_logic(
        &mut self,
        gi: usize,
        gname: &str,
        holders: &[(usize, GroupState, u64)],
        must_stop: bool,
    ) {
        if !holders.is_empty() || must_stop || !self.ready() || !self.views_agree(gi) {
            return;
        }
        // A group never activated (one just added by `baton config push`) waits until
        // every up server has it in its configuration: a server still on the previous
        // one does not report the group, so nobody could tell whether it runs there.
        if self.known_max_epoch(gi) == 0 && !self.known_everywhere(gi) {
            return;
        }
        // Held by a server this one cannot hear, as a peer reports (partial
        // partition): not ours to take.
        if !self.unheard_holders(gi).is_empty() {
            return;
        }
        // A server that may run the group and whose last heartbeat does not echo this
        // agent's current incarnation may be showing an old state: a heartbeat recorded
        // before this agent restarted and replayed to it says the group is offline there
        // while it runs. Wait until it answers this incarnation.
        if self.unconfirmed_peer(gi).is_some() {
            return;
        }
        let lost = self.groups[gi]
            .last_holder
            .clone()
            .filter(|f| *f != self.me_name())
            .filter(|f| {
                self.server_idx(f)
                    .is_some_and(|i| !self.peers[i].up || self.peer_excluded(i, gi))
            });
        let target = self.target(gi);
        // While the cluster is suspended, a group whose server was lost is not
        // failed over; an operator command for the group issued after the loss
        // (start, move) still starts it. Every server notes the intent version at
        // the loss; the would-be target reports it once (BTN-3014).
        let lost_down = lost
            .clone()
            .filter(|f| self.server_idx(f).is_some_and(|i| !self.peers[i].up));
        match (self.suspended(), lost_down) {
            (true, Some(from)) => {
                let version = self.intents.groups.get(gname).map_or(0, |i| i.version);
                let rt = &mut self.groups[gi];
                if rt.suppressed_version.is_none() {
                    rt.suppressed_version = Some(version);
                }
                if rt.suppressed_version.is_some_and(|v| version <= v) {
                    if target == Some(self.me) && !self.groups[gi].suppressed_warned {
                        self.groups[gi].suppressed_warned = true;
                        self.emit(&events::RECOVERY_SUPPRESSED, format!("group {gname} lost its server {from} while the cluster is suspended: no failover until `baton cluster resume` or `baton group start {gname}`"), |e| e.group(gname).peer(&from));
                    }
                    return;
                }
            }
            _ => {
                self.groups[gi].suppressed_version = None;
                self.groups[gi].suppressed_warned = false;
            }
        }
        if target == Some(self.me) {
            if let Some((who, left)) = self.takeover_block(gi) {
                self.wake_at(self.now.plus(left));
                if !self.groups[gi].takeover_wait_reported {
                    self.groups[gi].takeover_wait_reported = true;
                    let tm = self.group_timing(gi);
                    self.emit(&events::TAKEOVER_WAIT, format!("group {gname}: waiting {left} ms more before activating, until server {who} has been silent for {} ms (heartbeat timeout {} + the group's takeover wait {}, for its fence deadline {} ms) and has stopped the group or fenced itself", tm.takeover_after_ms(), tm.timeout_ms, tm.takeover_wait_ms, tm.fence_ms), |e| e.group(gname).peer(&who).field("wait_ms", left));
                }
                return;
            }
        }
        self.groups[gi].takeover_wait_reported = false;
        match target {
            Some(t) if t == self.me => {
                if let Some(from) = lost {
                    self.emit(
                        &events::GROUP_FAILOVER,
                        format!("group {gname} fails over from {from} to {}", self.me_name()),
                        |e| e.group(gname).peer(&from),
                    );
                }
                self.start_activation(gi, None);
            }
            Some(_) => {}
            None => {
                // Only the first up server of the group reports it, to avoid N copies.
                let first_up = self.cfg.groups[gi]
                    .servers
                    .iter()
                    .filter_map(|s| self.server_idx(s))
                    .find(|&s| self.peers[s].up);
                if first_up == Some(self.me) && !self.groups[gi].no_server_warned {
                    self.groups[gi].no_server_warned = true;
                    self.emit(&events::GROUP_NO_SERVER, format!("group {gname} should run but no server can take it (down, excluded, starting or refusing)"), |e| e.group(gname));
                }
            }
        }
    }

    /// The group runs here: stop it when it must, yield to a better claim, follow an
    /// operator move or fail back to a preferred server.
    fn online_logic(&mut self, gi: usize, gname: &str, epoch: u64, must_stop: bool) {
        self.groups[gi].no_server_warned = false;
        if must_stop {
            self.start_deactivation(gi, epoch, After::Release { exclude: false }, None);
            return;
        }
        // A better claim elsewhere (after a partition heals, or reported by a peer
        // for a server this one cannot hear): yield.
        if self.yield_to_better_claim(gi, epoch) {
            return;
        }
        // Operator move.
        if let Some(i) = self.intents.groups.get(gname) {
            if let Some(p) = &i.prefer {
                if let Some(pi) = self.server_idx(p) {
                    if pi != self.me
                        && i.prefer_epoch >= self.known_max_epoch(gi)
                        && self.eligible(pi)
                    {
                        self.start_deactivation(gi, epoch, After::Release { exclude: false }, None);
                        return;
                    }
                }
            }
        }
        // Failback to a preferred server, unless an operator placed the group here
        // (`move --to` / `start --on`): failback must not undo a manual move.
        let placed_here = self
            .intents
            .groups
            .get(gname)
            .is_some_and(|i| i.prefer.as_deref() == Some(self.me_name().as_str()));
        if self.cfg.groups[gi].failback && !placed_here {
            let order: Vec<usize> = self.cfg.groups[gi]
                .servers
                .iter()
                .filter_map(|s| self.server_idx(s))
                .collect();
            let best = order
                .iter()
                .copied()
                .find(|&s| self.eligible(s) && !self.peer_excluded(s, gi));
            if let Some(b) = best {
                let my_pos = order
                    .iter()
                    .position(|&s| s == self.me)
                    .unwrap_or(usize::MAX);
                let b_pos = order.iter().position(|&s| s == b).unwrap_or(usize::MAX);
                if b != self.me && b_pos < my_pos {
                    let to = self.cfg.servers[b].name.clone();
                    self.emit(
                        &events::GROUP_MOVE,
                        format!("group {gname} fails back to {to}"),
                        |e| e.group(gname).field("to", to.clone()),
                    );
                    self.start_deactivation(gi, epoch, After::Release { exclude: false }, None);
                }
            }
        }
    }

    /// This server claimed the group with `epoch`: activate once a quorum acknowledged it,
    /// abandon the claim when someone else holds or claims it better, or it took too long.
    fn claiming_logic(
        &mut self,
        gi: usize,
        gname: &str,
        epoch: u64,
        others: &[(usize, GroupState, u64)],
        must_stop: bool,
    ) {
        let better = self
            .best_other_claim(gi)
            .filter(|&(si, e)| self.claim(si, e) > self.claim(self.me, epoch));
        let waited = self.now.since(self.groups[gi].since);
        let active_elsewhere = others
            .iter()
            .find(|h| h.1 != GroupState::Claiming)
            .map(|h| self.cfg.servers[h.0].name.clone());
        let why = if must_stop {
            Some("it may no longer run here (quorum lost, stopped or leaving)".to_string())
        } else if let Some(who) = active_elsewhere {
            Some(format!("server {who} holds it"))
        } else if let Some((si, e)) = better {
            Some(format!(
                "server {} claims it with a stronger claim (epoch {e})",
                self.cfg.servers[si].name
            ))
        } else if waited >= self.hb_timeout() {
            Some(format!(
                "a quorum did not acknowledge epoch {epoch} within {} ms",
                self.hb_timeout()
            ))
        } else {
            None
        };
        if let Some(why) = why {
            self.set_local(gi, Local::Offline);
            self.emit(
                &events::GROUP_CLAIM_ABANDONED,
                format!("group {gname}: claim with epoch {epoch} abandoned: {why}"),
                |e| e.group(gname).epoch(epoch),
            );
            return;
        }
        if self.claim_acks(gi, epoch) * 2 > self.cfg.votes() {
            self.begin_activation(gi, epoch);
        }
    }

    /// If another server holds group `gi` with a stronger claim than this server's
    /// `epoch`, deactivate it here and say so. Returns whether it yielded.
    fn yield_to_better_claim(&mut self, gi: usize, epoch: u64) -> bool {
        let Some((si, e)) = self.best_other_claim(gi) else {
            return false;
        };
        // A mere claim (not acknowledged yet) never makes an active holder yield.
        if self
            .holders(gi)
            .iter()
            .any(|h| h.0 == si && h.1 == GroupState::Claiming)
        {
            return false;
        }
        if self.claim(si, e) <= self.claim(self.me, epoch) {
            return false;
        }
        let gname = self.cfg.groups[gi].name.clone();
        let who = self.cfg.servers[si].name.clone();
        let theirs = self
            .holders(gi)
            .into_iter()
            .find(|h| h.0 == si)
            .map(|h| h.1);
        if self.groups[gi].local.state() == GroupState::Online
            && theirs.is_some_and(|st| matches!(st, GroupState::Online | GroupState::Activating))
        {
            self.emit(
                &events::GROUP_DUAL_ACTIVE,
                format!("group {gname} is active on {who} (epoch {e}) and here (epoch {epoch}): the older epoch yields, deactivating here"),
                |ev| ev.group(&gname).epoch(epoch).peer(&who).field("other_epoch", e),
            );
        }
        self.deactivating_reason = Some(format!(
            "group {gname} is also held by {who} with epoch {e} (here: {epoch}); deactivating here"
        ));
        self.start_deactivation(gi, epoch, After::Release { exclude: false }, None);
        true
    }

    /// Begin activating group `gi`: the whole group with a new epoch, or (`plan`) a subset
    /// with the current epoch.
    fn start_activation(&mut self, gi: usize, plan: Option<(u64, Vec<usize>)>) {
        let gname = self.cfg.groups[gi].name.clone();
        let (epoch, plan) = match plan {
            Some(p) => p,
            None => {
                // A new epoch is claimed first: persisted here, announced in heartbeats,
                // and used only once a quorum of votes has acknowledged it (group_logic,
                // `Claiming`), so no two activations ever share an epoch and a later
                // owner always knows it.
                let Some(epoch) = crate::bounds::next_epoch(self.known_max_epoch(gi)) else {
                    // Never wrap: a group whose next epoch would exceed the bound is
                    // not claimed.
                    if self.bound_report_due(&format!("exhausted {gname}")) {
                        self.emit(
                            &events::EPOCH_EXHAUSTED,
                            format!(
                                "group {gname}: its highest known epoch {} is the bound; a new epoch cannot be claimed, the group is not activated here",
                                self.known_max_epoch(gi)
                            ),
                            |e| e.group(&gname),
                        );
                    }
                    // After a restart's deactivation the group is down here: say so.
                    if self.groups[gi].local.state() != GroupState::Offline {
                        self.set_local(gi, Local::Offline);
                    }
                    return;
                };
                self.groups[gi].max_epoch = epoch;
                self.groups[gi].last_epoch = epoch;
                self.groups[gi].last_holder = Some(self.me_name());
                self.out.push(Action::PersistEpoch {
                    group: gname.clone(),
                    epoch,
                });
                self.set_local(gi, Local::Claiming { epoch });
                // The claim goes out at once, not with the next heartbeat: the peers
                // acknowledge at once too, and the activation begins when the
                // acknowledgements arrive (no interval is spent above the takeover floor).
                self.urgent = true;
                // The witness acknowledges epochs in its answers: ask it now.
                self.witness_next_ask = self.now;
                if self.claim_acks(gi, epoch) * 2 > self.cfg.votes() {
                    self.begin_activation(gi, epoch);
                }
                return;
            }
        };
        self.run_plan(gi, epoch, plan);
    }

    /// A claim was acknowledged: activate the whole group with its epoch.
    fn begin_activation(&mut self, gi: usize, epoch: u64) {
        let gname = self.cfg.groups[gi].name.clone();
        self.emit(
            &events::GROUP_ACTIVATING,
            format!(
                "group {gname} activating on {} with epoch {epoch}",
                self.me_name()
            ),
            |e| e.group(&gname).epoch(epoch),
        );
        self.set_local(gi, Local::Offline);
        let plan = (0..self.cfg.groups[gi].resources.len()).collect();
        self.run_plan(gi, epoch, plan);
    }

    fn run_plan(&mut self, gi: usize, epoch: u64, plan: Vec<usize>) {
        self.groups[gi].last_holder = Some(self.me_name());
        if plan.is_empty() {
            self.finish_activation(gi, epoch);
            return;
        }
        // The group is recorded as held here (ownership persisted) before its first
        // resource is touched, so that a crash at any point is re-adopted or cleaned up.
        let steps = self.cfg.groups[gi].activation_steps(&plan);
        let slots = self.new_slots(&steps[0]);
        self.set_local(
            gi,
            Local::Activating {
                epoch,
                steps,
                pos: 0,
                slots: slots.clone(),
            },
        );
        self.persist_ownership();
        self.push_slots(gi, true, epoch, &slots);
    }

    fn finish_activation(&mut self, gi: usize, epoch: u64) {
        let gname = self.cfg.groups[gi].name.clone();
        let took = self.now.since(self.groups[gi].since);
        self.set_local(gi, Local::Online { epoch });
        self.groups[gi].online_since = Some(self.now);
        self.emit(
            &events::GROUP_ACTIVATED,
            format!(
                "group {gname} activated on {} (epoch {epoch}, {took} ms)",
                self.me_name()
            ),
            |e| e.group(&gname).epoch(epoch).field("took_ms", took),
        );
    }

    /// Begin deactivating: all resources, or (`subset`, activation order) only those, by
    /// the activation steps in reverse.
    fn start_deactivation(
        &mut self,
        gi: usize,
        epoch: u64,
        after: After,
        subset: Option<Vec<usize>>,
    ) {
        let gname = self.cfg.groups[gi].name.clone();
        let plan: Vec<usize> =
            subset.unwrap_or_else(|| (0..self.cfg.groups[gi].resources.len()).collect());
        let mut steps = self.cfg.groups[gi].activation_steps(&plan);
        steps.reverse();
        for s in &mut steps {
            s.reverse();
        }
        let reason = self.deactivating_reason.take();
        if matches!(after, After::Release { .. }) {
            let msg = reason
                .unwrap_or_else(|| format!("group {gname} deactivating on {}", self.me_name()));
            self.emit(&events::GROUP_DEACTIVATING, msg, |e| {
                e.group(&gname).epoch(epoch)
            });
        }
        if steps.is_empty() {
            self.finish_deactivation(gi, epoch, after);
            return;
        }
        let slots = self.new_slots(&steps[0]);
        self.push_slots(gi, false, epoch, &slots);
        self.set_local(
            gi,
            Local::Deactivating {
                epoch,
                steps,
                pos: 0,
                slots,
                after,
            },
        );
    }

    fn finish_deactivation(&mut self, gi: usize, epoch: u64, after: After) {
        let gname = self.cfg.groups[gi].name.clone();
        self.groups[gi].online_since = None;
        match after {
            After::Release { exclude } => {
                self.groups[gi].excluded |= exclude;
                self.groups[gi].last_epoch = epoch;
                self.set_local(gi, Local::Offline);
                self.emit(
                    &events::GROUP_DEACTIVATED,
                    format!("group {gname} deactivated on {}", self.me_name()),
                    |e| e.group(&gname).epoch(epoch),
                );
            }
            // A restart must not activate anything once the group may no longer run here
            // (quorum lost, stop or shutdown while the deactivation was under way).
            After::Restart if self.must_stop(gi) => {
                self.finish_deactivation(gi, epoch, After::Release { exclude: false });
            }
            After::Reactivate(plan) if self.must_stop(gi) => {
                let rest: Vec<usize> = (0..self.cfg.groups[gi].resources.len())
                    .filter(|i| !plan.contains(i))
                    .collect();
                self.start_deactivation(gi, epoch, After::Release { exclude: false }, Some(rest));
            }
            After::Restart => {
                self.set_local(gi, Local::Offline);
                self.start_activation(gi, None);
            }
            After::Reactivate(plan) => {
                self.start_activation(gi, Some((epoch, plan)));
            }
        }
    }

    fn issue(
        &mut self,
        gi: usize,
        activate: bool,
        ri: usize,
        epoch: u64,
        attempt: u32,
    ) -> ActionId {
        let id = self.id();
        self.push_resource_action(id, gi, activate, ri, epoch, attempt);
        id
    }

    fn push_resource_action(
        &mut self,
        id: ActionId,
        gi: usize,
        activate: bool,
        ri: usize,
        epoch: u64,
        attempt: u32,
    ) {
        let g = &self.cfg.groups[gi];
        let r = &g.resources[ri];
        let action = if activate {
            Action::Activate {
                id,
                group: g.name.clone(),
                resource: r.name.clone(),
                epoch,
                timeout_ms: r.activation.timeout.ms(),
                attempt,
            }
        } else {
            // While quorum is lost, a stop gets at most what is left of the fence
            // deadline, and a resource with a local self-fence stop runs only that.
            let left = self.fence_remaining(gi);
            Action::Deactivate {
                id,
                group: g.name.clone(),
                resource: r.name.clone(),
                epoch,
                timeout_ms: match left {
                    Some(left) => r.deactivation.timeout.ms().min(left.max(1)),
                    None => r.deactivation.timeout.ms(),
                },
                attempt,
                fence: left.is_some() && r.fence_stop.is_local(),
            }
        };
        self.out.push(action);
    }

    pub(super) fn on_action_done(&mut self, id: ActionId, result: Result<(), Failure>) {
        // Recovery scripts.
        if let Some(mi) = self
            .monitors
            .iter()
            .position(|m| m.script_inflight == Some(id))
        {
            self.monitors[mi].script_inflight = None;
            if let Err(f) = result {
                let name = self.cfg.monitors[mi].name.clone();
                self.monitors[mi].last_error =
                    Some(format!("recovery script failed: {}", f.message));
                self.emit(
                    &events::RECOVERY_SCRIPT_FAILED,
                    format!("recovery script of monitor {name} failed: {}", f.message),
                    |e| e.monitor(&name).field("code", f.code.clone()),
                );
            }
            return;
        }
        let Some(gi) = self.groups.iter().position(|g| match &g.local {
            Local::Activating { slots, .. } | Local::Deactivating { slots, .. } => {
                slots.iter().any(|s| s.inflight == Some(id))
            }
            _ => false,
        }) else {
            return;
        };
        let gname = self.cfg.groups[gi].name.clone();
        match self.groups[gi].local.clone() {
            Local::Activating {
                epoch,
                steps,
                pos,
                mut slots,
            } => {
                let Some(k) = slots.iter().position(|s| s.inflight == Some(id)) else {
                    return;
                };
                let (ri, attempt) = (slots[k].ri, slots[k].attempt);
                let res = self.cfg.groups[gi].resources[ri].clone();
                slots[k].inflight = None;
                match result {
                    Ok(()) => {
                        self.emit(
                            &events::RESOURCE_ACTIVATED,
                            format!("resource {} of group {gname} activated", res.name),
                            |e| e.group(&gname).resource(&res.name).epoch(epoch),
                        );
                    }
                    Err(f) => {
                        self.emit(
                            &events::RESOURCE_ACTIVATION_FAILED,
                            format!("resource {} of group {gname} failed to activate (attempt {} of {}): {}", res.name, attempt + 1, res.activation.retries + 1, f.message),
                            |e| failure_fields(e.group(&gname).resource(&res.name).epoch(epoch), &f),
                        );
                        self.groups[gi].last_failed = Some(ri);
                        // No retry once the group may not run here any more.
                        if !self.must_stop(gi) && attempt < res.activation.retries {
                            slots[k].attempt = attempt + 1;
                            slots[k].inflight = Some(self.issue(gi, true, ri, epoch, attempt + 1));
                        } else {
                            slots[k].failed = true;
                        }
                    }
                }
                if Slot::busy(&slots) {
                    // The rest of the step is still starting: nothing is decided (nor
                    // undone) before every action of the step has ended.
                    self.groups[gi].local = Local::Activating {
                        epoch,
                        steps,
                        pos,
                        slots,
                    };
                } else {
                    self.step_activated(gi, epoch, steps, pos, &slots);
                }
            }
            Local::Deactivating {
                epoch,
                steps,
                pos,
                mut slots,
                after,
            } => {
                let Some(k) = slots.iter().position(|s| s.inflight == Some(id)) else {
                    return;
                };
                let (ri, attempt) = (slots[k].ri, slots[k].attempt);
                let res = self.cfg.groups[gi].resources[ri].clone();
                slots[k].inflight = None;
                match result {
                    Ok(()) => {
                        self.emit(
                            &events::RESOURCE_DEACTIVATED,
                            format!("resource {} of group {gname} deactivated", res.name),
                            |e| e.group(&gname).resource(&res.name).epoch(epoch),
                        );
                    }
                    Err(f) => {
                        self.emit(
                            &events::RESOURCE_DEACTIVATION_FAILED,
                            format!("resource {} of group {gname} failed to deactivate (attempt {} of {}): {}", res.name, attempt + 1, res.deactivation.retries + 1, f.message),
                            |e| failure_fields(e.group(&gname).resource(&res.name).epoch(epoch), &f),
                        );
                        self.groups[gi].last_failed = Some(ri);
                        if attempt < res.deactivation.retries {
                            slots[k].attempt = attempt + 1;
                            slots[k].inflight = Some(self.issue(gi, false, ri, epoch, attempt + 1));
                        } else {
                            // At once, even while other stops of the step run: the group
                            // stays held here and the final action is not delayed.
                            self.set_local(gi, Local::Stuck { epoch });
                            self.emit(&events::GROUP_DEACTIVATION_FAILED, format!("group {gname} could not be deactivated on {}: resource {} is still up; the group stays held here", self.me_name(), res.name), |e| e.group(&gname).resource(&res.name).epoch(epoch));
                            if res.deactivation.final_action != FinalAction::None {
                                self.final_action(
                                    res.deactivation.final_action,
                                    None,
                                    epoch,
                                    format!("deactivation of resource {} failed", res.name),
                                    None,
                                );
                            }
                            return;
                        }
                    }
                }
                if Slot::busy(&slots) {
                    self.groups[gi].local = Local::Deactivating {
                        epoch,
                        steps,
                        pos,
                        slots,
                        after,
                    };
                } else if pos + 1 == steps.len() {
                    self.finish_deactivation(gi, epoch, after);
                } else {
                    let slots = self.new_slots(&steps[pos + 1]);
                    self.push_slots(gi, false, epoch, &slots);
                    self.groups[gi].local = Local::Deactivating {
                        epoch,
                        steps,
                        pos: pos + 1,
                        slots,
                        after,
                    };
                }
            }
            _ => {}
        }
    }

    /// Every action of activation step `pos` has ended: go on with the next step, or
    /// finish, or undo what is (or may be) up when the group may not run here any more or
    /// a resource of the step failed for good.
    fn step_activated(
        &mut self,
        gi: usize,
        epoch: u64,
        steps: Vec<Vec<usize>>,
        pos: usize,
        slots: &[Slot],
    ) {
        let gname = self.cfg.groups[gi].name.clone();
        if self.must_stop(gi) {
            // Quorum lost (or stop / shutdown) during the activation: do not start the
            // next step, undo what is up.
            let touched = self.touched(gi, &steps, pos);
            self.start_deactivation(gi, epoch, After::Release { exclude: false }, Some(touched));
            return;
        }
        let Some(ri) = slots.iter().find(|s| s.failed).map(|s| s.ri) else {
            if pos + 1 == steps.len() {
                self.finish_activation(gi, epoch);
            } else {
                let slots = self.new_slots(&steps[pos + 1]);
                self.push_slots(gi, true, epoch, &slots);
                self.groups[gi].local = Local::Activating {
                    epoch,
                    steps,
                    pos: pos + 1,
                    slots,
                };
            }
            return;
        };
        // Undo what this plan touched, up to and including the failed resource's step,
        // and what stayed up outside the plan (resource restart).
        let res = self.cfg.groups[gi].resources[ri].clone();
        let touched = self.touched(gi, &steps, pos);
        let count = self.groups[gi].act_failovers.get(&ri).copied().unwrap_or(0);
        if count < res.failover_threshold {
            self.groups[gi].act_failovers.insert(ri, count + 1);
            self.emit(&events::GROUP_ACTIVATION_FAILED, format!("group {gname} could not be activated on {} because resource {} failed; handing it to the next server", self.me_name(), res.name), |e| e.group(&gname).resource(&res.name).epoch(epoch));
            self.start_deactivation(gi, epoch, After::Release { exclude: true }, Some(touched));
        } else {
            self.emit(&events::GROUP_ACTIVATION_FAILED, format!("group {gname} could not be activated on {} because resource {} failed; failover threshold {} reached", self.me_name(), res.name, res.failover_threshold), |e| e.group(&gname).resource(&res.name).epoch(epoch));
            self.final_action(
                res.activation.final_action,
                Some(gi),
                epoch,
                format!("activation of resource {} failed", res.name),
                Some(touched),
            );
        }
    }

    /// Execute a final action. `gi`: the group concerned (for stop-group / hold).
    fn final_action(
        &mut self,
        fa: FinalAction,
        gi: Option<usize>,
        epoch: u64,
        reason: String,
        touched: Option<Vec<usize>>,
    ) {
        let gname = gi.map(|g| self.cfg.groups[g].name.clone());
        self.emit(
            &events::GROUP_FINAL_ACTION,
            format!(
                "final action `{}` on {}: {reason}",
                fa.as_str(),
                self.me_name()
            ),
            |e| {
                let e = e.field("final_action", fa.as_str());
                match &gname {
                    Some(g) => e.group(g),
                    None => e,
                }
            },
        );
        match fa {
            FinalAction::None => {
                if let Some(gi) = gi {
                    if matches!(self.groups[gi].local, Local::Activating { .. }) {
                        // Leave what was activated; hold the group as failed (never moved).
                        self.set_local(gi, Local::Failed { epoch });
                    }
                }
            }
            FinalAction::StopGroup => {
                if let Some(gi) = gi {
                    let g = self.cfg.groups[gi].name.clone();
                    let prefer_epoch = self.known_max_epoch(gi);
                    // Versions are bounded (learned ones are within the bound): with none
                    // left the group is still stopped here, only the intent is not written.
                    match self.next_version() {
                        Some(version) => {
                            self.intents.groups.insert(
                                g,
                                GroupIntent {
                                    version,
                                    origin: self.intent_origin(),
                                    run: false,
                                    prefer: None,
                                    prefer_epoch,
                                    clear_exclusions: false,
                                },
                            );
                        }
                        None => self.report_out_of_bounds(
                            "operator intents",
                            format!("the next intent version for group {g}"),
                        ),
                    }
                    if self.groups[gi].local.state().holds()
                        && !matches!(
                            self.groups[gi].local,
                            Local::Deactivating { .. } | Local::Stuck { .. }
                        )
                    {
                        self.start_deactivation(
                            gi,
                            epoch,
                            After::Release { exclude: false },
                            touched,
                        );
                    }
                }
            }
            FinalAction::StopCluster => {
                if let Some(gi) = gi {
                    self.groups[gi].excluded = true;
                    if matches!(self.groups[gi].local, Local::Activating { .. }) {
                        self.start_deactivation(
                            gi,
                            epoch,
                            After::Release { exclude: true },
                            touched,
                        );
                    }
                }
                if !self.leaving {
                    self.leaving = true;
                    self.emit(
                        &events::AGENT_STOPPING,
                        format!("agent on {} stopping (final action)", self.me_name()),
                        |e| e,
                    );
                }
            }
            FinalAction::Shutdown | FinalAction::Reboot => {
                if let Some(gi) = gi {
                    if matches!(self.groups[gi].local, Local::Activating { .. }) {
                        self.set_local(gi, Local::Failed { epoch });
                    }
                }
                // A monitor's final action: the operator's orderly command.
                self.out.push(Action::SystemCommand {
                    which: fa,
                    reason,
                    fence: false,
                });
            }
        }
    }

    pub(super) fn on_check_done(&mut self, id: ActionId, result: CheckResult, detail: &str) {
        for gi in 0..self.groups.len() {
            if let Local::Adopting {
                pending,
                ok,
                findings,
                checked,
                ..
            } = &mut self.groups[gi].local
            {
                if let Some(resource) = pending.remove(&id) {
                    if result != CheckResult::Active {
                        *ok = false;
                        let what = match result {
                            CheckResult::Active => "active",
                            CheckResult::Inactive => "inactive",
                            CheckResult::Degraded => "degraded",
                            CheckResult::Error => "check failed",
                        };
                        findings.push(if detail.is_empty() {
                            format!("{resource} {what}")
                        } else {
                            format!("{resource} {what} ({detail})")
                        });
                    }
                    if pending.is_empty() {
                        *checked = true;
                    }
                    return;
                }
            }
        }
    }

    // --------------------------------------------------------------------------------
    // Monitors
    // --------------------------------------------------------------------------------

    pub(super) fn announce_monitor_flag(&mut self, mi: usize, on: bool) {
        let name = self.cfg.monitors[mi].name.clone();
        if on {
            self.emit(
                &events::MONITOR_SUSPENDED,
                format!("monitor {name} suspended"),
                |e| e.monitor(&name),
            );
        } else {
            self.monitors[mi].next_due = self.now;
            self.emit(
                &events::MONITOR_RESUMED,
                format!("monitor {name} resumed"),
                |e| e.monitor(&name),
            );
        }
    }

    fn monitor_suspended(&self, mi: usize) -> bool {
        self.suspended()
            || self
                .intents
                .monitors
                .get(&self.cfg.monitors[mi].name)
                .is_some_and(|f| f.on)
    }

    /// The group index gating a monitor with timing `active`.
    fn monitor_group(&self, mi: usize) -> Option<usize> {
        let g = self.cfg.monitors[mi].group.as_ref()?;
        self.cfg.groups.iter().position(|x| &x.name == g)
    }

    /// Is the monitor supposed to poll right now (ignoring suspension)?
    fn monitor_active(&self, mi: usize) -> bool {
        if self.leaving || self.stopping() {
            return false;
        }
        match self.cfg.monitors[mi].timing {
            MonitorTiming::Always => true,
            MonitorTiming::Active => self
                .monitor_group(mi)
                .is_some_and(|gi| matches!(self.groups[gi].local, Local::Online { .. })),
        }
    }

    fn monitor_logic(&mut self, mi: usize) {
        if !self.monitor_active(mi) {
            let m = &mut self.monitors[mi];
            m.state = MonState::Init;
            m.fail_streak = 0;
            m.seen_activation = None;
            return;
        }
        if self.cfg.monitors[mi].timing == MonitorTiming::Active {
            let gi = self.monitor_group(mi).unwrap_or(0);
            let since = self.groups[gi].online_since;
            if since != self.monitors[mi].seen_activation {
                self.monitors[mi].seen_activation = since;
                self.monitors[mi].next_due = since
                    .unwrap_or(self.now)
                    .plus(self.cfg.monitors[mi].wait_to_start.ms());
                self.monitors[mi].fail_streak = 0;
            }
        }
        if self.monitor_suspended(mi) {
            return;
        }
        let m = &self.monitors[mi];
        if m.inflight.is_some() || m.script_inflight.is_some() || self.now < m.next_due {
            return;
        }
        let cfgm = &self.cfg.monitors[mi];
        let timeout_ms = cfgm.timeout.ms().saturating_mul(self.monitor_factor()) / 100;
        let name = cfgm.name.clone();
        let interval = cfgm.interval.ms();
        let id = self.id();
        self.monitors[mi].inflight = Some(id);
        self.monitors[mi].next_due = self.now.plus(interval);
        self.out.push(Action::Probe {
            id,
            monitor: name,
            timeout_ms,
        });
    }

    pub(super) fn on_probe_done(&mut self, id: ActionId, outcome: ProbeOutcome) {
        let Some(mi) = self.monitors.iter().position(|m| m.inflight == Some(id)) else {
            return;
        };
        self.monitors[mi].inflight = None;
        if !self.monitor_active(mi) || self.monitor_suspended(mi) {
            return;
        }
        let cfgm = self.cfg.monitors[mi].clone();
        let name = cfgm.name.clone();
        match outcome {
            ProbeOutcome::Ok { latency_ms, .. } => {
                let m = &mut self.monitors[mi];
                m.last_latency = Some(latency_ms);
                m.last_error = None;
                m.fail_streak = 0;
                m.api_warned = false;
                let was_error = m.state == MonState::Error;
                m.state = MonState::Normal;
                let since = *m.normal_since.get_or_insert(self.now);
                let counters = m.scripts + m.restarts + m.failovers > 0 || m.exhausted;
                if counters
                    && self.now.since(since)
                        >= cfgm.recovery.as_ref().map_or(0, |r| r.reset_after.ms())
                {
                    m.scripts = 0;
                    m.restarts = 0;
                    m.failovers = 0;
                    m.exhausted = false;
                }
                if was_error {
                    self.emit(
                        &events::MONITOR_NORMAL,
                        format!("monitor {name} is normal again"),
                        |e| e.monitor(&name).field("latency_ms", latency_ms),
                    );
                }
            }
            ProbeOutcome::Failed {
                latency_ms,
                code,
                message,
                api_error,
            } => {
                self.monitors[mi].last_latency = Some(latency_ms);
                self.monitors[mi].last_error = Some(message.clone());
                if api_error && cfgm.on_api_error != OnApiError::Recover {
                    if cfgm.on_api_error == OnApiError::Warn && !self.monitors[mi].api_warned {
                        self.monitors[mi].api_warned = true;
                        self.emit(&events::MONITOR_API_ERROR, format!("monitor {name} could not reach its API: {message}; no recovery (on_api_error = warn)"), |e| e.monitor(&name).field("code", code.clone()));
                    }
                    return;
                }
                let m = &mut self.monitors[mi];
                m.fail_streak += 1;
                m.normal_since = None;
                if m.fail_streak <= cfgm.retries {
                    if m.state != MonState::Error {
                        let first = m.state != MonState::Warning;
                        m.state = MonState::Warning;
                        if first {
                            let (s, r) = (m.fail_streak, cfgm.retries);
                            self.emit(
                                &events::MONITOR_WARNING,
                                format!(
                                    "monitor {name} poll failed ({s} of {} allowed): {message}",
                                    r + 1
                                ),
                                |e| e.monitor(&name).field("code", code.clone()),
                            );
                        }
                    }
                    return;
                }
                m.fail_streak = 0;
                let first_error = m.state != MonState::Error;
                m.state = MonState::Error;
                if first_error {
                    self.emit(
                        &events::MONITOR_ERROR,
                        format!("monitor {name} detected an error: {message}"),
                        |e| {
                            e.monitor(&name)
                                .field("code", code.clone())
                                .field("latency_ms", latency_ms)
                        },
                    );
                }
                self.recover(mi);
            }
        }
    }

    fn recover(&mut self, mi: usize) {
        let cfgm = self.cfg.monitors[mi].clone();
        let name = cfgm.name.clone();
        let Some(rec) = cfgm.recovery.clone() else {
            return;
        };
        // Suspended monitors do not poll; this only guards a result that raced the
        // suspension.
        if self.suspended() || self.monitors[mi].exhausted {
            return;
        }
        let targets: Vec<usize> = match &rec.target {
            RecoveryTarget::Group(g) | RecoveryTarget::Resource { group: g, .. } => self
                .cfg
                .groups
                .iter()
                .position(|x| &x.name == g)
                .into_iter()
                .collect(),
            RecoveryTarget::LocalServer => (0..self.groups.len())
                .filter(|&gi| self.groups[gi].local.state().holds())
                .collect(),
        };
        // Only act on groups this server runs and that are not in transition.
        if targets.iter().any(|&gi| {
            matches!(
                self.groups[gi].local,
                Local::Activating { .. } | Local::Deactivating { .. } | Local::Adopting { .. }
            )
        }) {
            return;
        }
        let held: Vec<usize> = targets
            .into_iter()
            .filter(|&gi| {
                matches!(
                    self.groups[gi].local,
                    Local::Online { .. } | Local::Failed { .. }
                )
            })
            .collect();
        if held.is_empty() {
            return;
        }
        let m = &mut self.monitors[mi];
        if rec.script.is_some() && m.scripts < rec.script_retries {
            m.scripts += 1;
            let n = m.scripts;
            let id = self.id();
            self.monitors[mi].script_inflight = Some(id);
            let script = rec.script.clone().unwrap_or_default();
            self.emit(
                &events::RECOVERY_SCRIPT,
                format!(
                    "monitor {name}: running recovery script ({n} of {})",
                    rec.script_retries
                ),
                |e| e.monitor(&name),
            );
            self.out.push(Action::RecoveryScript {
                id,
                monitor: name,
                script,
                timeout_ms: cfgm.timeout.ms().saturating_mul(self.monitor_factor()) / 100,
            });
        } else if m.restarts < rec.restart_retries {
            m.restarts += 1;
            let n = m.restarts;
            for gi in held {
                let gname = self.cfg.groups[gi].name.clone();
                let epoch = self.groups[gi].local.epoch();
                match &rec.target {
                    RecoveryTarget::Resource { resource, .. } => {
                        let plan = self.dependents(gi, resource);
                        self.emit(&events::RECOVERY_RESTART, format!("monitor {name}: restarting resource {resource} of group {gname} ({n} of {})", rec.restart_retries), |e| e.monitor(&name).group(&gname).resource(resource));
                        self.start_deactivation(
                            gi,
                            epoch,
                            After::Reactivate(plan.clone()),
                            Some(plan),
                        );
                    }
                    _ => {
                        self.emit(
                            &events::RECOVERY_RESTART,
                            format!(
                                "monitor {name}: restarting group {gname} ({n} of {})",
                                rec.restart_retries
                            ),
                            |e| e.monitor(&name).group(&gname),
                        );
                        self.start_deactivation(gi, epoch, After::Restart, None);
                    }
                }
            }
        } else if m.failovers < rec.failover_retries {
            m.failovers += 1;
            let n = m.failovers;
            for gi in held {
                let gname = self.cfg.groups[gi].name.clone();
                let epoch = self.groups[gi].local.epoch();
                self.emit(
                    &events::RECOVERY_FAILOVER,
                    format!(
                        "monitor {name}: failing group {gname} over to another server ({n} of {})",
                        rec.failover_retries
                    ),
                    |e| e.monitor(&name).group(&gname),
                );
                self.start_deactivation(gi, epoch, After::Release { exclude: true }, None);
            }
        } else {
            m.exhausted = true;
            self.emit(
                &events::RECOVERY_EXHAUSTED,
                format!(
                    "monitor {name}: recovery exhausted (scripts {}, restarts {}, failovers {})",
                    rec.script_retries, rec.restart_retries, rec.failover_retries
                ),
                |e| e.monitor(&name),
            );
            let reason = format!("monitor {name} recovery exhausted");
            match rec.final_action {
                FinalAction::StopGroup => {
                    for gi in held {
                        let epoch = self.groups[gi].local.epoch();
                        self.final_action(
                            FinalAction::StopGroup,
                            Some(gi),
                            epoch,
                            reason.clone(),
                            None,
                        );
                    }
                }
                fa => self.final_action(fa, None, 0, reason, None),
            }
        }
    }

    /// Resource `name` and every resource that depends on it (transitively), in
    /// activation order.
    fn dependents(&self, gi: usize, name: &str) -> Vec<usize> {
        let rs = &self.cfg.groups[gi].resources;
        let mut set: BTreeSet<String> = BTreeSet::new();
        set.insert(name.to_string());
        for r in rs {
            if r.depends_on.iter().any(|d| set.contains(d)) {
                set.insert(r.name.clone());
            }
        }
        rs.iter()
            .enumerate()
            .filter(|(_, r)| set.contains(&r.name))
            .map(|(i, _)| i)
            .collect()
    }

    fn maybe_exit(&mut self) {
        if self.exit_sent || !(self.leaving || self.stopping()) {
            return;
        }
        // A `stuck` group keeps the agent up: while it runs, its peers see the group held
        // here and never start it elsewhere. The shell's shutdown deadline bounds the wait
        // (BTN-1004, exit status 1) if nobody repairs it (`baton group start` retries).
        let busy = self
            .groups
            .iter()
            .any(|g| !matches!(g.local, Local::Offline));
        if !busy {
            self.exit_sent = true;
            self.out.push(Action::Exit {
                reason: "all groups are offline".to_string(),
            });
        }
    }

    fn persist_ownership(&mut self) {
        // Most steps change nothing here: compare before building the map.
        let held = self
            .groups
            .iter()
            .filter(|rt| rt.local.state().holds())
            .count();
        let fencing = self.fence_started.is_some();
        if held == self.last_ownership.len()
            && fencing == self.last_fencing
            && self.cfg.groups.iter().zip(&self.groups).all(|(g, rt)| {
                let st = rt.local.state();
                !st.holds() || self.last_ownership.get(&g.name) == Some(&(rt.local.epoch(), st))
            })
        {
            return;
        }
        let mut m = BTreeMap::new();
        for (g, rt) in self.cfg.groups.iter().zip(&self.groups) {
            let st = rt.local.state();
            if st.holds() {
                m.insert(g.name.clone(), (rt.local.epoch(), st));
            }
        }
        if m != self.last_ownership || fencing != self.last_fencing {
            self.last_ownership = m.clone();
            self.last_fencing = fencing;
            self.out
                .push(Action::PersistOwnership { groups: m, fencing });
        }
    }

    // --------------------------------------------------------------------------------
    // Status
    // --------------------------------------------------------------------------------

    /// Each resource of group `gi` with its state on this server, from where the group's
    /// activation or deactivation plan stands.
    fn resource_states(&self, gi: usize) -> Vec<ResourceStatus> {
        let g = &self.cfg.groups[gi];
        let rt = &self.groups[gi];
        let n = g.resources.len();
        let mut st = vec![ResourceState::Offline; n];
        match &rt.local {
            Local::Offline | Local::Claiming { .. } => {}
            Local::Adopting { .. } => st = vec![ResourceState::Checking; n],
            Local::Online { .. } => st = vec![ResourceState::Online; n],
            Local::Activating {
                steps, pos, slots, ..
            } => plan_states(&mut st, steps, *pos, slots, true),
            Local::Deactivating {
                steps, pos, slots, ..
            } => plan_states(&mut st, steps, *pos, slots, false),
            Local::Failed { .. } | Local::Stuck { .. } => {
                st = vec![ResourceState::Unknown; n];
                if let Some(s) = rt.last_failed.and_then(|ri| st.get_mut(ri)) {
                    *s = ResourceState::Failed;
                }
            }
        }
        g.resources
            .iter()
            .zip(st)
            .map(|(r, state)| ResourceStatus {
                name: r.name.clone(),
                kind: r.kind.clone(),
                state,
            })
            .collect()
    }

    pub fn status(&self) -> EngineStatus {
        let now = self.now;
        let timeout = self.hb_timeout();
        let servers = self
            .cfg
            .servers
            .iter()
            .enumerate()
            .map(|(si, s)| {
                let p = &self.peers[si];
                let is_self = si == self.me;
                let m = p.msg.as_ref();
                ServerStatus {
                    name: s.name.clone(),
                    is_self,
                    up: p.up,
                    ready: if is_self {
                        self.ready()
                    } else {
                        p.up && m.is_some_and(|m| m.ready)
                    },
                    quorum: if is_self {
                        self.quorum
                    } else {
                        p.up && m.is_some_and(|m| m.quorum)
                    },
                    refused: if is_self {
                        self.refused
                    } else {
                        m.is_some_and(|m| m.refused)
                    },
                    digest_matches: is_self || m.is_none_or(|m| m.digest == self.cfg.digest),
                    paths: (0..p.paths.len())
                        .map(|pi| PathStatus {
                            path: pi,
                            up: is_self || p.paths[pi].is_some_and(|t| now.since(t) < timeout),
                            last_heard_ms_ago: if is_self {
                                Some(0)
                            } else {
                                p.paths[pi].map(|t| now.since(t))
                            },
                        })
                        .collect(),
                }
            })
            .collect();
        let groups = (0..self.groups.len())
            .map(|gi| {
                let g = &self.cfg.groups[gi];
                let tm = self.group_timing(gi);
                let holders = self.holders(gi);
                let mut per_server = BTreeMap::new();
                let mut excluded_on = Vec::new();
                for s in &g.servers {
                    let Some(si) = self.server_idx(s) else {
                        continue;
                    };
                    let st = if si == self.me {
                        self.groups[gi].local.state()
                    } else if self.peers[si].up {
                        self.peers[si]
                            .report(gi, &g.name)
                            .map_or(GroupState::Offline, |r| r.state)
                    } else {
                        GroupState::Offline
                    };
                    per_server.insert(s.clone(), st);
                    if self.peer_excluded(si, gi) && (si == self.me || self.peers[si].up) {
                        excluded_on.push(s.clone());
                    }
                }
                let (state, active_on, epoch) = match holders.first() {
                    Some(&(si, st, e)) => (st, Some(self.cfg.servers[si].name.clone()), e),
                    None => (GroupState::Offline, None, self.known_max_epoch(gi)),
                };
                GroupStatus {
                    name: g.name.clone(),
                    state,
                    active_on,
                    epoch,
                    since_ms_ago: match holders.first() {
                        Some(&(si, _, _)) if si != self.me => {
                            self.peers[si].report(gi, &g.name).map_or(0, |r| r.state_ms)
                        }
                        _ => now.since(self.groups[gi].since),
                    },
                    desired: if self.group_run(gi) {
                        "running".into()
                    } else {
                        "stopped".into()
                    },
                    excluded_on,
                    per_server,
                    fence_ms: tm.fence_ms,
                    takeover_after_ms: tm.takeover_after_ms(),
                    resources: self.resource_states(gi),
                }
            })
            .collect();
        let monitors = (0..self.monitors.len())
            .map(|mi| {
                let c = &self.cfg.monitors[mi];
                let m = &self.monitors[mi];
                let state = if self.monitor_suspended(mi) {
                    "suspended"
                } else if !self.monitor_active(mi) {
                    "idle"
                } else {
                    match m.state {
                        MonState::Init if now < m.next_due => "waiting",
                        MonState::Init => "init",
                        MonState::Normal => "normal",
                        MonState::Warning => "warning",
                        MonState::Error => "error",
                    }
                };
                MonitorStatus {
                    name: c.name.clone(),
                    kind: c.kind.clone(),
                    state: state.into(),
                    last_latency_ms: m.last_latency,
                    last_error: m.last_error.clone(),
                    fail_streak: m.fail_streak,
                    scripts: m.scripts,
                    restarts: m.restarts,
                    failovers: m.failovers,
                }
            })
            .collect();
        EngineStatus {
            cluster: self.cfg.cluster_name.clone(),
            server: self.me_name(),
            digest: self.cfg.digest.clone(),
            ready: self.ready(),
            quorum: self.quorum,
            votes_heard: self.votes_heard(),
            votes_total: self.cfg.votes(),
            witness: if !self.witness_configured() {
                "none".into()
            } else if self.witness_valid() {
                "granted".into()
            } else {
                format!("not-granted: {}", self.witness_detail)
            },
            reachable: self.reach_ok,
            timing: Some(self.timing()),
            refused: self.refused,
            suspended: self.suspended(),
            stopping: self.stopping() || self.leaving,
            heartbeat_timeout_ms: timeout,
            timeout_override_remaining_ms: self.timeout_until.map(|t| t.since(now)),
            monitor_factor_pct: u32::try_from(self.monitor_factor()).unwrap_or(100),
            servers,
            groups,
            monitors,
            marks: self
                .marks
                .iter()
                .map(|(k, &v)| {
                    let held_by = self.mark_holders(k, v);
                    let quorum = held_by.len() * 2 > self.cfg.votes();
                    (
                        k.clone(),
                        crate::engine::types::MarkStatus {
                            value: v,
                            held_by,
                            quorum,
                        },
                    )
                })
                .collect(),
        }
    }
}

/// The fields of an action failure's event: its code and, when a newer epoch refused it,
/// who holds the resource at which epoch (`holder`, `holder_epoch`).
pub(super) fn failure_fields(e: Event, f: &Failure) -> Event {
    let e = e.field("code", f.code.clone());
    match &f.cause {
        Cause::Fenced { holder, epoch } => e
            .field("holder", holder.clone())
            .field("holder_epoch", *epoch),
        _ => e,
    }
}

/// The states of the resources of a plan of `steps` standing at step `pos` (`slots`: the
/// resources of that step): the steps before it done, those after it not begun.
fn plan_states(
    st: &mut [ResourceState],
    steps: &[Vec<usize>],
    pos: usize,
    slots: &[Slot],
    activate: bool,
) {
    let (done, todo, busy) = if activate {
        (
            ResourceState::Online,
            ResourceState::Offline,
            ResourceState::Activating,
        )
    } else {
        (
            ResourceState::Offline,
            ResourceState::Online,
            ResourceState::Deactivating,
        )
    };
    for (k, step) in steps.iter().enumerate() {
        for &ri in step {
            if let Some(s) = st.get_mut(ri) {
                *s = match k.cmp(&pos) {
                    std::cmp::Ordering::Less => done,
                    std::cmp::Ordering::Greater => todo,
                    std::cmp::Ordering::Equal => match slots.iter().find(|x| x.ri == ri) {
                        Some(x) if x.inflight.is_some() => busy,
                        Some(x) if x.failed => ResourceState::Failed,
                        _ => done,
                    },
                };
            }
        }
    }
}
