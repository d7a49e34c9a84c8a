//! The agent shell: feeds the engine, executes its actions, sends and receives
//! heartbeats, serves the API, persists state.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use baton_core::config::{Config, FinalAction};
use baton_core::engine::{
    Action, Boot, CheckResult, Command, Engine, Failure, GroupState, Input, PeerMessage,
    ProbeOutcome,
};
use baton_core::events::{self, Event};
use baton_core::time::Millis;
use baton_notifier::{AlertLog, Notifier, Sample};
use baton_providers::{
    process::{run_command, CommandSpec},
    ActionContext, CheckOutcome, Probe, ProbeContext, Registry, ResourceDriver, ResourceProbe,
};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{info, info_span, warn, Instrument};

use crate::key::ClusterKey;
use crate::shared::LoopMsg;
pub use crate::shared::Shared;
use crate::state::{OwnedGroup, Ownership, StateDir};
use crate::wire::{self, Acceptor, Envelope, RejectCounters};
use baton_providers::witness::{VoteRequest, WitnessClient, WitnessError};

/// Errors that stop the agent from starting. `code()` is stable.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] baton_core::config::ConfigError),
    #[error("server `{0}` is not defined in the configuration; servers: {1}")]
    UnknownServer(String, String),
    // The wrapped errors name their subject (key file, state directory, alert log)
    // themselves: a prefix here would repeat it.
    #[error(transparent)]
    Key(#[from] crate::key::KeyError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    AlertLog(#[from] baton_notifier::AlertLogError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot bind {what} on {addr}: {err}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        err: std::io::Error,
    },
    #[error("cannot build {what}: {msg}")]
    Build { what: String, msg: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Deactivation on shutdown did not finish in time; resources may still be active.
    #[error("the shutdown deadline passed with groups possibly still active")]
    ShutdownDeadline,
}

impl AgentError {
    pub fn code(&self) -> &'static str {
        match self {
            AgentError::Config(_) => "config-invalid",
            AgentError::UnknownServer(..) => "unknown-server",
            AgentError::Key(_) => "key-error",
            AgentError::State(_) => "state-error",
            AgentError::AlertLog(_) => "alert-log-error",
            AgentError::Tls(e) => e.code(),
            AgentError::Bind { .. } => "bind-failed",
            AgentError::Build { .. } => "build-failed",
            AgentError::Io(_) => "io-error",
            AgentError::ShutdownDeadline => "shutdown-deadline",
        }
    }

    /// The exit code of `baton agent` failing with this error.
    pub fn exit(&self) -> crate::exit::Exit {
        use crate::exit::Exit;
        match self {
            AgentError::Config(_) | AgentError::UnknownServer(..) => Exit::ConfigInvalid,
            AgentError::Key(_) | AgentError::Tls(_) => Exit::KeyError,
            _ => Exit::Failure,
        }
    }
}

#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub config: PathBuf,
    pub server: String,
    pub state_dir: Option<PathBuf>,
}

/// What a queued state write was for (to act on its failure).
enum PendingWrite {
    Epoch { group: String, epoch: u64 },
    Ownership { activating: Vec<(String, u64)> },
}

/// A provider error as the engine sees it: its stable code and its text.
fn failure(e: &baton_providers::ProviderError) -> Failure {
    Failure {
        code: e.code().to_string(),
        message: e.to_string(),
    }
}

fn unix_ms() -> u64 {
    // Wall-clock time is used only to stamp events and ownership records for people;
    // every decision runs on the monotonic clock.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
}

struct Runtime {
    cfg: Config,
    me: String,
    engine: Engine,
    t0: Instant,
    /// Writes the state directory's records off the main loop (kept open for its lock).
    persist: crate::persist::Persistence,
    /// Writes queued on `persist`, by sequence number.
    pending_writes: HashMap<u64, PendingWrite>,
    epochs: BTreeMap<String, u64>,
    shared: Arc<Shared>,
    tx: mpsc::Sender<LoopMsg>,
    drivers: DriverMap,
    probes: ProbeMap,
    sockets: Vec<Arc<UdpSocket>>,
    seq: u64,
    exit: Option<String>,
    rejected_reported: u64,
    last_reject_event: Option<Instant>,
    ownership: Ownership,
    last_drop_check: Instant,
    /// Groups whose newest epoch could not be written to the state directory.
    unpersisted: HashMap<String, u64>,
    /// Heartbeat round-trip measurement (when a metrics sink wants it).
    rtt: wire::SharedRtt,
    /// `[quorum] witness` client and whether a request is in flight.
    witness: Option<Arc<dyn WitnessClient>>,
    witness_busy: Arc<std::sync::atomic::AtomicBool>,
    /// `[agent] watchdog_device`, fed by the main loop (a stalled loop stops feeding it).
    watchdog_dev: Option<std::fs::File>,
    /// The last heartbeat could not be encoded (BTN-1111 raised, BTN-1112 when it can).
    hb_encode_failed: bool,
    /// The server is fencing itself: the watchdog device is no longer fed (nor disarmed).
    fencing: bool,
}

/// Write one SysRq command key (`b`: reset now, `o`: power off now) to the trigger file.
/// The file must exist (it is never created): a wrong path fails, and the caller falls
/// back to the force command.
fn write_sysrq(path: &std::path::Path, key: u8) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(&[key])?;
    f.flush()
}

impl Runtime {
    fn now(&self) -> Millis {
        Millis(u64::try_from(self.t0.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn stamp(&self, mut ev: Event) -> Event {
        if ev.cluster.is_empty() {
            ev.cluster = self.cfg.cluster_name.clone();
        }
        if ev.server.is_empty() {
            ev.server = self.me.clone();
        }
        ev.time_ms = unix_ms();
        ev
    }

    fn record(&mut self, ev: Event) {
        let ev = self.stamp(ev);
        let stamped = match self.shared.alert_log.lock() {
            Ok(mut log) => match log.append(ev.clone()) {
                Ok(e) => e,
                Err(e) => {
                    warn!(error = %e, "cannot write the alert log");
                    ev
                }
            },
            Err(_) => ev,
        };
        self.shared.notifier.publish(stamped);
    }

    fn execute(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Emit { event } => self.record(*event),
                Action::PersistEpoch { group, epoch } => {
                    let current = self.epochs.get(&group).copied().unwrap_or(0);
                    if epoch > current {
                        // The higher value stays in memory even if its write fails (it
                        // may be on disk already if only the directory sync failed): the
                        // next successful write must never store a lower epoch.
                        self.epochs.insert(group.clone(), epoch);
                        let w = crate::persist::Write::Epochs(self.epochs.clone());
                        self.issue_write(w, PendingWrite::Epoch { group, epoch });
                    }
                }
                Action::PersistOwnership { groups } => {
                    let own = Ownership {
                        groups: groups
                            .into_iter()
                            .map(|(g, (epoch, st))| {
                                // Keep the original "since" while the epoch is unchanged.
                                let since = self
                                    .ownership
                                    .groups
                                    .get(&g)
                                    .filter(|o| o.epoch == epoch)
                                    .map_or_else(unix_ms, |o| o.since_unix_ms);
                                (
                                    g,
                                    OwnedGroup {
                                        epoch,
                                        since_unix_ms: since,
                                        state: st.as_str().to_string(),
                                    },
                                )
                            })
                            .collect(),
                    };
                    let activating = own
                        .groups
                        .iter()
                        .filter(|(_, o)| o.state == GroupState::Activating.as_str())
                        .map(|(g, o)| (g.clone(), o.epoch))
                        .collect();
                    self.ownership = own.clone();
                    let w = crate::persist::Write::Ownership(own);
                    self.issue_write(w, PendingWrite::Ownership { activating });
                }
                // Written off the main loop: an activation starts once the writes issued
                // before it (its epoch, the ownership record) have completed.
                a @ Action::Activate { .. } => {
                    if let Some(a) = self.persist.gate(a) {
                        self.start_activation(a);
                    }
                }
                Action::Deactivate {
                    id,
                    group,
                    resource,
                    epoch,
                    timeout_ms,
                    attempt,
                } => self.spawn_resource(
                    id,
                    group,
                    resource,
                    epoch,
                    timeout_ms,
                    attempt,
                    Op::Deactivate,
                ),
                Action::Check {
                    id,
                    group,
                    resource,
                    epoch,
                    timeout_ms,
                } => self.spawn_resource(id, group, resource, epoch, timeout_ms, 0, Op::Check),
                Action::Probe {
                    id,
                    monitor,
                    timeout_ms,
                } => self.spawn_probe(id, monitor, timeout_ms),
                Action::RecoveryScript {
                    id,
                    monitor,
                    script,
                    timeout_ms,
                } => {
                    let tx = self.tx.clone();
                    let env = vec![
                        ("BATON_CLUSTER".to_string(), self.cfg.cluster_name.clone()),
                        ("BATON_SERVER".to_string(), self.me.clone()),
                        ("BATON_MONITOR".to_string(), monitor.clone()),
                        ("BATON_ACTION".to_string(), "recover".to_string()),
                    ];
                    let span = info_span!("recovery_script", monitor = %monitor, server = %self.me);
                    tokio::spawn(
                        async move {
                            let spec = CommandSpec::shell(
                                format!("recovery script of monitor {monitor}"),
                                script,
                                Duration::from_millis(timeout_ms),
                            )
                            .with_env(env);
                            let result = run_command(&spec)
                                .await
                                .map(|_| ())
                                .map_err(|e| failure(&e));
                            let _ = tx.send(LoopMsg::ActionDone { id, result }).await;
                        }
                        .instrument(span),
                    );
                }
                Action::SystemCommand {
                    which,
                    reason,
                    fence: true,
                } => self.fence(which, &reason),
                Action::SystemCommand { which, reason, .. } => {
                    let cmd = match which {
                        FinalAction::Reboot => self.cfg.agent.reboot_command.clone(),
                        _ => self.cfg.agent.shutdown_command.clone(),
                    };
                    warn!(command = %cmd, %reason, "running final action command");
                    tokio::spawn(async move {
                        let spec = CommandSpec::shell(
                            "final action command",
                            cmd,
                            Duration::from_secs(60),
                        );
                        if let Err(e) = run_command(&spec).await {
                            warn!(error = %e, "final action command failed");
                        }
                    });
                }
                Action::Exit { reason } => {
                    info!(%reason, "agent exiting");
                    self.exit = Some(reason);
                }
                Action::AskWitness {
                    partition,
                    lease_ms,
                    epochs,
                } => self.ask_witness(partition, lease_ms, epochs),
            }
        }
    }

    /// Hand a state write to the writer thread and remember what it was for.
    fn issue_write(&mut self, w: crate::persist::Write, what: PendingWrite) {
        match self.persist.write(w) {
            Some(seq) => {
                self.pending_writes.insert(seq, what);
            }
            None => self.write_failed(what, "the state writer thread has stopped"),
        }
    }

    /// A state write failed: refuse activations that would rely on it.
    fn write_failed(&mut self, what: PendingWrite, err: &str) {
        match what {
            PendingWrite::Epoch { group, epoch } => {
                let ev = Event::new(&events::STATE_DIR_ERROR, format!("cannot persist epoch {epoch} of group {group}: {err}; its activation is refused here")).group(&group);
                self.record(ev);
                self.unpersisted.insert(group, epoch);
            }
            PendingWrite::Ownership { activating } => {
                // Not knowing after a crash that a group was held here would let it run
                // twice: refuse activations of the groups being started.
                for (g, e) in activating {
                    self.unpersisted.insert(g, e);
                }
                let ev = Event::new(
                    &events::STATE_DIR_ERROR,
                    format!("cannot persist ownership: {err}; activations are refused until it can be written"),
                );
                self.record(ev);
            }
        }
    }

    /// Results from the writer thread: note failures, then start the activations that
    /// were waiting for these writes.
    fn persisted(&mut self, done: crate::persist::Done) {
        for (seq, result) in &done.results {
            let Some(what) = self.pending_writes.remove(seq) else {
                continue;
            };
            match result {
                Ok(()) => {
                    if let PendingWrite::Epoch { group, .. } = &what {
                        self.unpersisted.remove(group);
                    }
                }
                Err(e) => self.write_failed(what, e),
            }
        }
        for a in self.persist.completed(&done) {
            self.start_activation(a);
        }
    }

    /// Start an activation whose writes have completed. An epoch that is not on disk is
    /// never used: every activation with it (retries included) fails until a later
    /// epoch is persisted.
    fn start_activation(&mut self, a: Action) {
        let Action::Activate {
            id,
            group,
            resource,
            epoch,
            timeout_ms,
            attempt,
        } = a
        else {
            return;
        };
        if self.unpersisted.get(&group).is_some_and(|&e| epoch >= e) {
            let tx = self.tx.clone();
            let result = Err(Failure {
                code: "state-dir".into(),
                message: "the group's epoch could not be persisted in the state directory".into(),
            });
            tokio::spawn(async move {
                let _ = tx.send(LoopMsg::ActionDone { id, result }).await;
            });
            return;
        }
        self.spawn_resource(
            id,
            group,
            resource,
            epoch,
            timeout_ms,
            attempt,
            Op::Activate,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn_resource(
        &self,
        id: u64,
        group: String,
        resource: String,
        epoch: u64,
        timeout_ms: u64,
        attempt: u32,
        op: Op,
    ) {
        let tx = self.tx.clone();
        let driver = self
            .drivers
            .get(&(group.clone(), resource.clone()))
            .cloned();
        let ctx = ActionContext {
            cluster: self.cfg.cluster_name.clone(),
            group: group.clone(),
            resource: resource.clone(),
            server: self.me.clone(),
            epoch,
            timeout: Duration::from_millis(timeout_ms),
        };
        let span = info_span!("resource_action", action = op.name(), group = %group, resource = %resource, server = %self.me, epoch, attempt);
        tokio::spawn(
            async move {
                let Some(driver) = driver else {
                    let f = Failure {
                        code: "no-driver".into(),
                        message: format!("no driver for resource {resource}"),
                    };
                    let _ = match op {
                        Op::Check => {
                            tx.send(LoopMsg::CheckDone {
                                id,
                                result: CheckResult::Error,
                                detail: f.message,
                            })
                            .await
                        }
                        _ => tx.send(LoopMsg::ActionDone { id, result: Err(f) }).await,
                    };
                    return;
                };
                // The driver enforces the timeout itself (and kills what it started); this
                // outer bound only protects the engine from a driver that never returns.
                let outer = ctx.timeout.saturating_add(Duration::from_secs(5));
                let started = Instant::now();
                match op {
                    Op::Activate | Op::Deactivate => {
                        let fut = async {
                            if op == Op::Activate {
                                driver.activate(&ctx).await
                            } else {
                                driver.deactivate(&ctx).await
                            }
                        };
                        let result = match tokio::time::timeout(outer, fut).await {
                            Ok(Ok(())) => Ok(()),
                            Ok(Err(e)) => Err(failure(&e)),
                            Err(_) => Err(Failure {
                                code: "timeout".into(),
                                message: format!("timed out after {} ms", ctx.timeout.as_millis()),
                            }),
                        };
                        info!(
                            ok = result.is_ok(),
                            took_ms = started.elapsed().as_millis() as u64,
                            "resource action finished"
                        );
                        let _ = tx.send(LoopMsg::ActionDone { id, result }).await;
                    }
                    Op::Check => {
                        let (result, detail) = match tokio::time::timeout(outer, driver.check(&ctx))
                            .await
                        {
                            Ok(Ok(CheckOutcome::Active)) => (CheckResult::Active, String::new()),
                            Ok(Ok(CheckOutcome::Inactive)) => {
                                (CheckResult::Inactive, "inactive".into())
                            }
                            Ok(Ok(CheckOutcome::Degraded(d))) => (CheckResult::Degraded, d),
                            Ok(Err(e)) => (CheckResult::Error, e.to_string()),
                            Err(_) => (CheckResult::Error, "check timed out".into()),
                        };
                        let _ = tx.send(LoopMsg::CheckDone { id, result, detail }).await;
                    }
                }
            }
            .instrument(span),
        );
    }

    fn spawn_probe(&self, id: u64, monitor: String, timeout_ms: u64) {
        let tx = self.tx.clone();
        let probe = self.probes.get(&monitor).cloned();
        let ctx = ProbeContext {
            cluster: self.cfg.cluster_name.clone(),
            server: self.me.clone(),
            monitor: monitor.clone(),
            timeout: Duration::from_millis(timeout_ms),
        };
        let span = info_span!("probe", monitor = %monitor, server = %self.me);
        let metrics = self
            .shared
            .notifier
            .wants_polling_time(&monitor)
            .then(|| self.shared.notifier.clone());
        tokio::spawn(
            async move {
                let started = Instant::now();
                let r = match probe {
                    // The probe enforces its own timeout (and kills what it started, with
                    // a grace period); this outer bound only catches a probe that hangs.
                    Some(p) => match tokio::time::timeout(
                        ctx.timeout.saturating_add(Duration::from_secs(3)),
                        p.probe(&ctx),
                    )
                    .await
                    {
                        Ok(r) => r,
                        Err(_) => Err(baton_providers::ProviderError::Timeout(timeout_ms)),
                    },
                    None => Err(baton_providers::ProviderError::Other(format!(
                        "no probe for monitor {monitor}"
                    ))),
                };
                let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                if let Some(n) = &metrics {
                    n.metric(Sample::MonitorPollingTime {
                        monitor: monitor.clone(),
                        ms: started.elapsed().as_secs_f64() * 1000.0,
                    });
                }
                let outcome = match r {
                    Ok(ok) => ProbeOutcome::Ok {
                        latency_ms,
                        detail: ok.detail,
                    },
                    Err(e) => ProbeOutcome::Failed {
                        latency_ms,
                        code: e.code().to_string(),
                        message: e.to_string(),
                        api_error: e.is_api_error(),
                    },
                };
                let _ = tx.send(LoopMsg::ProbeDone { id, outcome }).await;
            }
            .instrument(span),
        );
    }

    /// One witness request at a time; its answer (or failure: never a grant) comes back
    /// to the main loop stamped with the time it was sent.
    fn ask_witness(&self, partition: Vec<String>, lease_ms: u64, epochs: BTreeMap<String, u64>) {
        let Some(w) = self.witness.clone() else {
            return;
        };
        if self
            .witness_busy
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let busy = self.witness_busy.clone();
        let tx = self.tx.clone();
        let sent_at = self.now();
        let req = VoteRequest {
            cluster: self.cfg.cluster_name.clone(),
            server: self.me.clone(),
            partition,
            lease: Duration::from_millis(lease_ms),
            epochs,
        };
        // Answers later than half the lease are useless (the grant counts from sent_at).
        let deadline = Duration::from_millis((lease_ms / 2).max(50));
        tokio::spawn(async move {
            let msg = match w.vote(&req, deadline).await {
                Ok(r) => LoopMsg::WitnessReply {
                    sent_at,
                    granted: r.granted,
                    refused: None,
                    epochs: r.epochs,
                    detail: if r.granted {
                        "granted".into()
                    } else {
                        format!("held by partition [{}]: {}", r.holder.join(", "), r.detail)
                    },
                },
                Err(e) => LoopMsg::WitnessReply {
                    sent_at,
                    granted: false,
                    epochs: BTreeMap::new(),
                    detail: format!("{} ({})", e, e.code()),
                    refused: matches!(e, WitnessError::OutOfBounds(_)).then(|| e.to_string()),
                },
            };
            busy.store(false, std::sync::atomic::Ordering::Release);
            let _ = tx.send(msg).await;
        });
    }

    /// Fence this server: it must be gone before the others take its groups over, so
    /// reset (or power off) at once, not through the orderly `reboot_command`.
    fn fence(&mut self, which: FinalAction, reason: &str) {
        use baton_core::config::FenceMethod;
        let agent = &self.cfg.agent;
        let method = agent.fence_method;
        let power_off = which != FinalAction::Reboot;
        let (verb, force_cmd, orderly_cmd) = if power_off {
            (
                "powering off",
                agent.force_poweroff_command.clone(),
                agent.shutdown_command.clone(),
            )
        } else {
            (
                "resetting",
                agent.force_reboot_command.clone(),
                agent.reboot_command.clone(),
            )
        };
        let sysrq = agent.sysrq_trigger.clone();
        // A configured watchdog device is no longer fed: if what follows does not take
        // the server down, the watchdog does.
        self.fencing = true;
        let how = match method {
            FenceMethod::Sysrq => format!("SysRq via {}", sysrq.display()),
            FenceMethod::Force => format!("`{force_cmd}`"),
            FenceMethod::Command => format!("`{orderly_cmd}` (orderly: slow)"),
        };
        // Recorded (written to the alert log) before the reset, which leaves no time.
        let ev = Event::new(
            &events::SELF_FENCE,
            format!("self-fence: {verb} this server now with {how}: {reason}"),
        )
        .field("method", method.as_str());
        self.record(ev);
        tracing::error!(method = method.as_str(), %reason, "self-fence: {verb} this server now");
        let cmd = match method {
            FenceMethod::Sysrq => match write_sysrq(&sysrq, if power_off { b'o' } else { b'b' }) {
                // On a real server nothing runs after this; a test's file just records it.
                Ok(()) => return,
                Err(e) => {
                    let ev = Event::new(
                        &events::SELF_FENCE_FAILED,
                        format!(
                            "self-fence: cannot write {}: {e}; running `{force_cmd}` instead",
                            sysrq.display()
                        ),
                    );
                    self.record(ev);
                    force_cmd
                }
            },
            FenceMethod::Force => force_cmd,
            FenceMethod::Command => orderly_cmd,
        };
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let spec =
                CommandSpec::shell("self-fence command", cmd.clone(), Duration::from_secs(60));
            if let Err(e) = run_command(&spec).await {
                let ev = Event::new(
                    &events::SELF_FENCE_FAILED,
                    format!("self-fence command `{cmd}` failed: {e}"),
                );
                let _ = tx.send(LoopMsg::Event(Box::new(ev))).await;
            }
        });
    }

    fn feed_watchdog_device(&mut self) {
        use std::io::Write;
        if self.fencing {
            return;
        }
        if let Some(f) = self.watchdog_dev.as_mut() {
            if let Err(e) = f.write_all(b"\0").and_then(|()| f.flush()) {
                warn!(error = %e, "cannot feed the watchdog device");
            }
        }
    }

    async fn send_heartbeats(&mut self) {
        let msg = self.engine.peer_message();
        // A copy of the socket list (Arcs), so that events can be recorded in the loop.
        let sockets = self.sockets.clone();
        for (p, sock) in sockets.iter().enumerate() {
            self.seq += 1;
            let env = Envelope {
                cluster: self.cfg.cluster_name.clone(),
                from: self.me.clone(),
                path: u8::try_from(p).unwrap_or(u8::MAX),
                seq: self.seq,
                body: wire::Timed {
                    body: &msg,
                    rtt: wire::rtt_stamp(
                        &self.rtt,
                        u8::try_from(p).unwrap_or(u8::MAX),
                        u64::try_from(self.t0.elapsed().as_micros()).unwrap_or(u64::MAX),
                    ),
                },
            };
            let bytes = match wire::encode(&self.shared.ring, &env) {
                Ok(b) => {
                    if std::mem::take(&mut self.hb_encode_failed) {
                        self.record(Event::new(
                            &events::HEARTBEAT_SENDING,
                            format!("heartbeats fit in a datagram again ({} bytes)", b.len()),
                        ));
                    }
                    b
                }
                Err(e) => {
                    warn!(error = %e, "cannot encode heartbeat");
                    if !self.hb_encode_failed {
                        self.hb_encode_failed = true;
                        self.record(
                            Event::new(
                                &events::HEARTBEAT_TOO_LARGE,
                                format!(
                                    "cannot send heartbeats: {e}; peers stop hearing this server"
                                ),
                            )
                            .field("code", e.code()),
                        );
                    }
                    continue;
                }
            };
            for s in &self.cfg.servers {
                if s.name == self.me {
                    continue;
                }
                if let Some(addr) = s.interconnects.get(p) {
                    if let Err(e) = sock.send_to(&bytes, addr).await {
                        tracing::debug!(peer = %s.name, path = p, error = %e, "heartbeat send failed");
                    }
                }
            }
        }
    }

    /// Events a notification sink dropped (BTN-5001), checked every 10 s; they go to the
    /// alert log and the sinks like any other event.
    fn maybe_report_drops(&mut self) {
        if self.last_drop_check.elapsed() < Duration::from_secs(10) {
            return;
        }
        self.last_drop_check = Instant::now();
        for ev in self.shared.notifier.drop_events() {
            self.record(ev);
        }
    }

    fn maybe_report_rejects(&mut self) {
        let c = self.shared.counters.lock().map(|c| *c).unwrap_or_default();
        let total = c.total();
        if total > self.rejected_reported
            && self
                .last_reject_event
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        {
            self.rejected_reported = total;
            self.last_reject_event = Some(Instant::now());
            let ev = Event::new(
                &events::PACKETS_REJECTED,
                format!(
                    "heartbeat packets rejected so far: {} forged, {} replayed, {} malformed, {} wrong cluster, {} unknown sender, {} wrong path",
                    c.forged, c.replayed, c.malformed, c.wrong_cluster, c.unknown_sender, c.bad_path
                ),
            )
            .field("forged", c.forged)
            .field("replayed", c.replayed)
            .field("malformed", c.malformed);
            self.record(ev);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Activate,
    Deactivate,
    Check,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Activate => "activate",
            Op::Deactivate => "deactivate",
            Op::Check => "check",
        }
    }
}

type DriverMap = HashMap<(String, String), Arc<dyn ResourceDriver>>;
type ProbeMap = HashMap<String, Arc<dyn Probe>>;

fn build_drivers(
    cfg: &Config,
    me: &str,
    reg: &dyn Registry,
) -> Result<(DriverMap, ProbeMap), AgentError> {
    let mut drivers: DriverMap = HashMap::new();
    for g in &cfg.groups {
        if !g.servers.iter().any(|s| s == me) {
            continue;
        }
        for r in &g.resources {
            let d = reg
                .build_resource(&r.kind, &r.params_for(me))
                .map_err(|e| AgentError::Build {
                    what: format!("resource {}", r.name),
                    msg: e.to_string(),
                })?;
            drivers.insert((g.name.clone(), r.name.clone()), Arc::from(d));
        }
    }
    let mut probes: ProbeMap = HashMap::new();
    for m in &cfg.monitors {
        if m.kind == "resource" {
            let (Some(gname), Some(rname)) = (&m.group, &m.resource) else {
                continue;
            };
            if let Some(d) = drivers.get(&(gname.clone(), rname.clone())) {
                let action = ActionContext {
                    cluster: cfg.cluster_name.clone(),
                    group: gname.clone(),
                    resource: rname.clone(),
                    server: me.to_string(),
                    epoch: 0,
                    timeout: m.timeout.0,
                };
                probes.insert(
                    m.name.clone(),
                    Arc::new(ResourceProbe {
                        driver: d.clone(),
                        action,
                    }),
                );
            }
            continue;
        }
        let p = reg
            .build_probe(&m.kind, &m.params_for(me))
            .map_err(|e| AgentError::Build {
                what: format!("monitor {}", m.name),
                msg: e.to_string(),
            })?;
        probes.insert(m.name.clone(), Arc::from(p));
    }
    Ok((drivers, probes))
}

/// Read the API's certificate again when its files change (every
/// [`crate::tls::RELOAD_EVERY`] and at SIGHUP): BTN-4025 when a renewal was taken, BTN-4026
/// when the changed files cannot be used (the previous certificate is still served).
async fn reload_tls(cert: Arc<crate::tls::ServerCert>, shared: Arc<Shared>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).ok();
    let mut every = tokio::time::interval(crate::tls::RELOAD_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let hangup = async {
            match hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        let now = tokio::select! {
            _ = every.tick() => std::time::SystemTime::now(),
            // At SIGHUP the operator says the files are complete: no settling wait.
            _ = hangup => std::time::SystemTime::now() + Duration::from_secs(60),
        };
        let (c, k) = cert.files();
        match cert.reload_if_changed(now) {
            crate::tls::Reload::Unchanged => {}
            crate::tls::Reload::Reloaded => shared.raise(
                Event::new(
                    &events::API_TLS_RELOADED,
                    format!(
                        "API TLS certificate reloaded from {} and {}",
                        c.display(),
                        k.display()
                    ),
                )
                .field("cert_file", c.display().to_string()),
            ),
            crate::tls::Reload::Failed(e) => shared.raise(
                Event::new(
                    &events::API_TLS_RELOAD_FAILED,
                    format!("API TLS certificate not reloaded: {e}; the previous certificate is still served"),
                )
                .field("cert_file", c.display().to_string())
                .field("code", e.code()),
            ),
        }
    }
}

/// The API's tokens: the cluster key's, the derived role tokens and the issued ones
/// (token files relative to the configuration file's directory, like the key file).
fn api_tokens(
    cfg: &Config,
    config_file: &std::path::Path,
    key: &crate::key::KeyRing,
) -> Result<crate::tokens::ApiTokens, AgentError> {
    let load = |f: &Option<PathBuf>| -> Result<Vec<String>, AgentError> {
        match f {
            None => Ok(Vec::new()),
            Some(p) => {
                crate::tokens::load_tokens_file(&crate::catalog::config_path(config_file, p))
                    .map_err(|msg| AgentError::Build {
                        what: "API tokens".into(),
                        msg,
                    })
            }
        }
    };
    Ok(crate::tokens::ApiTokens::new(
        key,
        cfg.api.derived_tokens,
        load(&cfg.api.read_tokens_file)?,
        load(&cfg.api.operator_tokens_file)?,
    ))
}

/// Create the API's Unix socket (`[api] socket_dir`): the directory (0755) if missing, a
/// stale socket left by a dead agent replaced, the mode and group set before anyone can
/// connect (bound under a private name, then renamed into place). `Ok(None)`: sockets off.
fn bind_api_socket(
    cfg: &Config,
    me: &str,
) -> Result<Option<(tokio::net::UnixListener, PathBuf)>, String> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
    let Some(path) = cfg.api.socket_path(&cfg.cluster_name, me) else {
        return Ok(None);
    };
    let dir = &cfg.api.socket_dir;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| format!("cannot create socket directory {}: {e}", dir.display()))?;
    if let Ok(meta) = std::fs::symlink_metadata(&path) {
        if !meta.file_type().is_socket() {
            return Err(format!(
                "{} exists and is not a socket: remove it or change [api] socket_dir",
                path.display()
            ));
        }
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(format!(
                "another process listens on {} (a second agent for cluster {} and server {me}?)",
                path.display(),
                cfg.cluster_name
            ));
        }
    }
    let gid = match &cfg.api.socket_group {
        None => None,
        Some(g) => match nix::unistd::Group::from_name(g) {
            Ok(Some(gr)) => Some(gr.gid),
            Ok(None) => return Err(format!("socket_group `{g}` does not exist on this server")),
            Err(e) => return Err(format!("cannot look up socket_group `{g}`: {e}")),
        },
    };
    let tmp = dir.join(format!(
        ".{}-{me}.{}.tmp",
        cfg.cluster_name,
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let listener = tokio::net::UnixListener::bind(&tmp)
        .map_err(|e| format!("cannot bind {}: {e}", tmp.display()))?;
    let set_up = (|| -> std::io::Result<()> {
        if let Some(gid) = gid {
            std::os::unix::fs::chown(&tmp, None, Some(gid.as_raw()))?;
        }
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(cfg.api.socket_mode))?;
        std::fs::rename(&tmp, &path)
    })();
    if let Err(e) = set_up {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("cannot set up {}: {e}", path.display()));
    }
    Ok(Some((listener, path)))
}

pub async fn run_agent(opts: AgentOptions) -> Result<String, AgentError> {
    let loaded = crate::catalog::load(&opts.config)?;
    for w in &loaded.warnings {
        warn!("{w}");
    }
    let cfg = loaded.config;
    let me = opts.server.clone();
    let Some(server) = cfg.server(&me).cloned() else {
        let names = cfg
            .servers
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(AgentError::UnknownServer(me, names));
    };
    // Before anything opens files: raise the open-file limit, size the API caps to it.
    let (api_limits, fd_event) = crate::listen::agent_api_limits(&cfg, &me);
    let key_path = crate::catalog::config_path(&opts.config, &cfg.key_file);
    let key = ClusterKey::load(&key_path)?;
    for w in key.warnings() {
        warn!("{w}");
    }
    // Keys accepted besides key_file during a rotation (relative like key_file).
    let mut accepted = Vec::new();
    for f in &cfg.accept_key_files {
        let p = crate::catalog::config_path(&opts.config, f);
        let k = ClusterKey::load(&p)?;
        info!(file = %p.display(), fingerprint = %k.fingerprint(), "also accepting this key (key rotation)");
        accepted.push(k);
    }
    let ring =
        crate::key::KeyRing::new(key.clone(), accepted).with_encryption(cfg.heartbeat.encrypt);
    let tokens = api_tokens(&cfg, &opts.config, &ring)?;
    // TLS ([api] tls_cert_file): a certificate or CA that cannot be used stops the start.
    let client_tls = crate::tls::ClientTls::for_config(&cfg, &opts.config)?;
    let server_cert = match cfg.api.tls_files(&me) {
        None => None,
        Some((c, k)) => Some(crate::tls::ServerCert::load(
            &crate::catalog::config_path(&opts.config, &c),
            &crate::catalog::config_path(&opts.config, &k),
        )?),
    };
    let api_tls = server_cert.as_ref().map(|c| c.acceptor()).transpose()?;
    let state_path = opts
        .state_dir
        .clone()
        .unwrap_or_else(|| cfg.agent.state_dir.clone());
    let state = StateDir::open(&state_path)?;
    for w in state.warnings() {
        warn!("{w}");
    }
    let epochs = state.load_epochs()?;
    let ownership = state.load_ownership()?;
    let mut meta = state.load_meta()?;
    meta.boot_count += 1;
    meta.last_digest = Some(cfg.digest.clone());
    // Sequence numbers of this run start above every one the previous run could use;
    // stored (fsynced) before the first heartbeat (wire module docs).
    let seq_base = wire::next_seq_base(meta.seq_base, wire::initial_seq());
    meta.seq_base = Some(seq_base);
    state.store_meta(&meta)?;
    let alert_log = AlertLog::open(
        state.path().join("alerts"),
        cfg.agent.alert_log_max_bytes,
        usize::try_from(cfg.agent.alert_log_keep).unwrap_or(4),
    )?;

    let reg = baton_providers::registry(&cfg.aws);
    let (drivers, probes) = build_drivers(&cfg, &me, &reg)?;

    // Heartbeat sockets: one per interconnect path, bound to this server's address on it.
    let mut sockets = Vec::new();
    for addr in &server.interconnects {
        let s = UdpSocket::bind(addr)
            .await
            .map_err(|err| AgentError::Bind {
                what: "heartbeat socket",
                addr: *addr,
                err,
            })?;
        sockets.push(Arc::new(s));
    }
    let api_listener = tokio::net::TcpListener::bind(server.api)
        .await
        .map_err(|err| AgentError::Bind {
            what: "API",
            addr: server.api,
            err,
        })?;

    // Notification sinks and metrics ([notify.*], [metrics.*]); one that cannot be set
    // up is left out and reported (BTN-5004) once the agent runs.
    let config_dir = opts
        .config
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .to_path_buf();
    let built = baton_notifier::build::build(&cfg, &me, &config_dir, None).await;
    let sink_failures = built.failures;
    let (notifier, notifier_task) = Notifier::start_with_metrics(
        built.sinks,
        built.metrics,
        baton_notifier::build::options(&cfg.notify),
    );

    let (tx, mut rx) = mpsc::channel::<LoopMsg>(4096);
    let peer_client = crate::client::Client::new(tokens.peer(), &client_tls);
    let shared = Arc::new(Shared {
        config: cfg.clone(),
        server: me.clone(),
        tokens,
        key: key.clone(),
        ring: ring.clone(),
        tx: tx.clone(),
        alert_reader: alert_log.reader(),
        alert_log: Mutex::new(alert_log),
        counters: Mutex::new(RejectCounters::default()),
        notifier: notifier.clone(),
        started: Instant::now(),
        auth_failures: Mutex::new((0, None)),
        peer_client,
    });
    if let Some(ev) = fd_event {
        shared.raise(ev);
    }
    // Events the cloud drivers raise outside the engine (BTN-6xxx) go to the alert log.
    if let Some(mut provider_events) = reg.take_events() {
        let sh = shared.clone();
        tokio::spawn(async move {
            while let Some(ev) = provider_events.recv().await {
                sh.raise(ev);
            }
        });
    }

    let t0 = Instant::now();
    let incarnation = wire::incarnation(meta.boot_count, rand::random::<u32>());
    let boot = Boot {
        incarnation,
        epochs: epochs.clone(),
        owned: ownership
            .groups
            .iter()
            .map(|(g, o)| (g.clone(), o.epoch))
            .collect(),
    };
    let engine = Engine::new(cfg.clone(), &me, boot, Millis(0)).map_err(|e| AgentError::Build {
        what: "engine".into(),
        msg: e.to_string(),
    })?;

    // Receivers.
    let peers: Vec<String> = cfg
        .servers
        .iter()
        .filter(|s| s.name != me)
        .map(|s| s.name.clone())
        .collect();
    let acceptor = Arc::new(Mutex::new(Acceptor::new(cfg.cluster_name.clone(), peers)));
    let rtt: wire::SharedRtt = shared
        .notifier
        .wants_metric(baton_core::config::MetricKind::HeartbeatRtt)
        .then(|| Arc::new(Mutex::new(wire::RttTracker::new())));
    for (p, sock) in sockets.iter().enumerate() {
        let sock = sock.clone();
        let tx = tx.clone();
        let acceptor = acceptor.clone();
        let shared2 = shared.clone();
        let rtt2 = rtt.clone();
        if !crate::rxstamp::enable(&sock) {
            warn!(path = p, "no kernel receive timestamps on this socket: heartbeats count from when they are read");
        }
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            loop {
                let Ok((n, _from, arrived)) = crate::rxstamp::recv(&sock, &mut buf).await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let (res, newest) = {
                    let Ok(mut a) = acceptor.lock() else { continue };
                    let r = a.accept::<wire::Timed<PeerMessage>>(
                        &shared2.ring,
                        &buf[..n],
                        u8::try_from(p).unwrap_or(u8::MAX),
                    );
                    if let Ok(mut c) = shared2.counters.lock() {
                        *c = *a.counters();
                    }
                    // Sequence numbers grow across the sender's paths: one overtaken on a
                    // faster path is older than what the engine already knows.
                    let newest = r
                        .as_ref()
                        .is_ok_and(|env| a.newest(&env.from) == Some(env.seq));
                    (r, newest)
                };
                // Rejections are counted above; only good heartbeats wake the main loop.
                let msg = match res {
                    Ok(env) => {
                        let path8 = u8::try_from(p).unwrap_or(u8::MAX);
                        let now_us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
                        if let Some(ms) = wire::rtt_observe(
                            &rtt2,
                            &shared2.server,
                            &env.from,
                            path8,
                            env.body.rtt.as_ref(),
                            now_us,
                        ) {
                            shared2.notifier.metric(Sample::HeartbeatRtt {
                                peer: env.from.clone(),
                                path: path8,
                                ms,
                            });
                        }
                        LoopMsg::Heartbeat {
                            from: env.from,
                            path: p,
                            msg: Box::new(env.body.body),
                            arrived,
                            newest,
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, code = e.code(), "heartbeat rejected");
                        continue;
                    }
                };
                if tx.send(msg).await.is_err() {
                    break;
                }
            }
        });
    }

    // API.
    let api_shared = shared.clone();
    let api_task = tokio::spawn(async move {
        let app = crate::api::router(api_shared.clone());
        crate::listen::serve_api(api_listener, app, api_limits, api_shared, api_tls).await;
    });
    if let Some(cert) = server_cert {
        tokio::spawn(reload_tls(cert, shared.clone()));
    }
    // The Unix socket for the local CLI ([api] socket_dir); not fatal when it fails.
    let socket_task = match bind_api_socket(&cfg, &me) {
        Ok(None) => None,
        Ok(Some((listener, path))) => {
            info!(socket = %path.display(), role = cfg.api.socket_role.as_str(), "API: listening on the Unix socket");
            let sh = shared.clone();
            let api = cfg.api.clone();
            Some(tokio::spawn(async move {
                let app = crate::api::router(sh.clone());
                let report: crate::listen::Reporter =
                    Arc::new(move |n| sh.raise(crate::listen::notice_event(&n)));
                crate::listen::serve_unix(listener, app, &api, api.socket_role, report).await;
            }))
        }
        Err(msg) => {
            shared.raise(Event::new(&events::API_SOCKET_FAILED, msg));
            None
        }
    };

    // Quorum helpers: the witness client and the reachability checks.
    let aws = if matches!(
        cfg.quorum.witness,
        baton_core::config::Witness::S3 { .. } | baton_core::config::Witness::Dynamodb { .. }
    ) {
        Some(baton_providers::aws::AwsClients::load(&cfg.aws).await)
    } else {
        None
    };
    let witness_client: Option<Arc<dyn WitnessClient>> =
        crate::witness::witness_client(&cfg, &key, aws).map(Arc::from);
    let reach = crate::reach::Reachability::new(&cfg.quorum.ping, &cfg.quorum.http);
    if !reach.is_empty() {
        let every = cfg
            .quorum
            .check_interval
            .map_or(Duration::from_secs(1), |d| d.0);
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                t.tick().await;
                let r = reach.check(every).await;
                if tx
                    .send(LoopMsg::Reachability {
                        ok: r.ok,
                        detail: r.detail,
                    })
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
    }
    let watchdog_dev =
        match &cfg.agent.watchdog_device {
            Some(path) => Some(std::fs::OpenOptions::new().write(true).open(path).map_err(
                |e| AgentError::Build {
                    what: "watchdog device".into(),
                    msg: format!("{}: {e}", path.display()),
                },
            )?),
            None => None,
        };

    // Scripts get a minimal environment plus these variables of the agent's.
    baton_providers::process::set_env_passthrough(cfg.agent.script_env.clone());
    // State writes run on their own thread; results come back to the main loop.
    let persist = {
        let tx = tx.clone();
        let delay = std::env::var("BATON_TEST_STATE_DELAY_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis);
        let store: Arc<dyn crate::persist::StateStore> = Arc::new(state);
        crate::persist::Persistence::start(store, delay, move |done| {
            let _ = tx.blocking_send(LoopMsg::Persisted(done));
        })
        .map_err(|e| AgentError::Build {
            what: "state writer".into(),
            msg: e.to_string(),
        })?
    };
    let mut rt = Runtime {
        cfg: cfg.clone(),
        me: me.clone(),
        engine,
        t0,
        persist,
        pending_writes: HashMap::new(),
        epochs,
        shared: shared.clone(),
        tx: tx.clone(),
        drivers,
        probes,
        sockets,
        seq: seq_base,
        exit: None,
        rejected_reported: 0,
        last_reject_event: None,
        ownership: ownership.clone(),
        last_drop_check: Instant::now(),
        unpersisted: HashMap::new(),
        rtt,
        witness: witness_client,
        witness_busy: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        watchdog_dev,
        hb_encode_failed: false,
        fencing: false,
    };
    let started = Event::new(
        &events::AGENT_STARTED,
        format!(
            "agent {} started on {me} (config {}…, pid {})",
            env!("CARGO_PKG_VERSION"),
            &cfg.digest[..12],
            std::process::id()
        ),
    )
    .field("digest", cfg.digest.clone());
    rt.record(started);
    for f in &sink_failures {
        rt.record(f.event());
    }
    // Actions the engine produced at construction (re-adoption checks).
    let initial = rt.engine.step(Millis(0), Input::Tick);
    rt.execute(initial);

    let hb_every = cfg.heartbeat.interval.0;
    let tick_every = (hb_every / 4).clamp(Duration::from_millis(10), Duration::from_millis(100));
    let mut hb = tokio::time::interval(hb_every);
    hb.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tick = tokio::time::interval(tick_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let mut watchdog_usec = 0u64;
    let watchdog = sd_notify::watchdog_enabled(false, &mut watchdog_usec);
    let mut wd = tokio::time::interval(Duration::from_micros(if watchdog {
        (watchdog_usec / 2).max(1000)
    } else {
        3_600_000_000
    }));
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);

    // Loop-stall detector: a plain thread (not a tokio task, which a stalled runtime
    // would not run) that reports when the main loop has not progressed for longer than
    // the quorum lease. The watchdogs are fed only by the main loop itself, so a stalled
    // loop stops feeding them and the server is reset.
    let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));
    {
        let progress = progress.clone();
        let shared = shared.clone();
        let t0 = rt.t0;
        let limit = cfg.timing(cfg.heartbeat.timeout.ms()).lease_ms.max(100);
        let me2 = me.clone();
        let cluster = cfg.cluster_name.clone();
        std::thread::Builder::new()
            .name("baton-stall-watch".into())
            .spawn(move || {
                let mut reported = false;
                loop {
                    std::thread::sleep(Duration::from_millis(limit / 4));
                    let last = progress.load(std::sync::atomic::Ordering::Acquire);
                    let now = t0.elapsed().as_millis() as u64;
                    let stalled = now.saturating_sub(last);
                    if stalled > limit && last > 0 && !reported {
                        reported = true;
                        let mut ev = Event::new(&events::LOOP_STALLED, format!("agent main loop has not run for {stalled} ms (limit {limit} ms): the watchdog is no longer fed"))
                            .field("stalled_ms", stalled);
                        ev.cluster = cluster.clone();
                        ev.server = me2.clone();
                        ev.time_ms = unix_ms();
                        tracing::error!(stalled_ms = stalled, "agent main loop stalled");
                        if let Ok(mut log) = shared.alert_log.lock() {
                            let _ = log.append(ev.clone());
                        }
                        shared.notifier.publish(ev);
                    } else if stalled <= limit {
                        reported = false;
                    }
                }
            })
            .map_err(|e| AgentError::Build {
                what: "stall watcher thread".into(),
                msg: e.to_string(),
            })?;
    }

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut deadline: Option<tokio::time::Instant> = None;
    let shutdown_timeout = cfg.agent.shutdown_timeout.0;

    let reason = loop {
        let actions: Vec<Action> = tokio::select! {
            _ = tick.tick() => {
                rt.maybe_report_rejects();
                rt.maybe_report_drops();
                rt.feed_watchdog_device();
                progress.store(rt.t0.elapsed().as_millis() as u64, std::sync::atomic::Ordering::Release);
                let now = rt.now();
                rt.engine.step(now, Input::Tick)
            }
            _ = hb.tick() => {
                // Step first: after a pause the heartbeat must say what is true now.
                let now = rt.now();
                let acts = rt.engine.step(now, Input::Tick);
                rt.send_heartbeats().await;
                acts
            }
            _ = wd.tick(), if watchdog => {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                Vec::new()
            }
            _ = sigterm.recv() => rt.begin_shutdown(&mut deadline, shutdown_timeout),
            _ = sigint.recv() => rt.begin_shutdown(&mut deadline, shutdown_timeout),
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                let ev = Event::new(&events::AGENT_SHUTDOWN_DEADLINE, format!("shutdown deadline of {} ms passed; exiting with groups possibly still active", shutdown_timeout.as_millis()));
                rt.record(ev);
                break DEADLINE_REASON.to_string();
            }
            m = rx.recv() => {
                let Some(m) = m else { break "internal channel closed".to_string() };
                let now = rt.now();
                match m {
                    LoopMsg::Heartbeat { from, path, msg, arrived, newest } => {
                        let at = Millis(u64::try_from(arrived.saturating_duration_since(rt.t0).as_millis()).unwrap_or(0));
                        rt.engine.step(at.min(now), Input::Heartbeat { from, path, msg, newest })
                    }
                    LoopMsg::WitnessReply { sent_at, granted, epochs, detail, refused } => {
                        // An answer or lease document out of bounds (never a grant) is a
                        // critical event, not only a lost vote.
                        let mut acts = match refused {
                            Some(what) => rt.engine.refused_input(now, "the witness", what),
                            None => Vec::new(),
                        };
                        acts.extend(rt.engine.step(now, Input::WitnessReply { sent_at, granted, epochs, detail }));
                        acts
                    }
                    LoopMsg::Reachability { ok, detail } => rt.engine.step(now, Input::Reachability { ok, detail }),
                    LoopMsg::ActionDone { id, result } => rt.engine.step(now, Input::ActionDone { id, result }),
                    LoopMsg::CheckDone { id, result, detail } => rt.engine.step(now, Input::CheckDone { id, result, detail }),
                    LoopMsg::ProbeDone { id, outcome } => rt.engine.step(now, Input::ProbeDone { id, outcome }),
                    LoopMsg::Command { cmd, reply } => {
                        let stop = cmd == Command::ClusterStop;
                        match rt.engine.command(now, cmd) {
                            Ok(actions) => {
                                let _ = reply.send(Ok(()));
                                if stop && deadline.is_none() {
                                    deadline = Some(deadline_after(shutdown_timeout));
                                }
                                actions
                            }
                            Err(e) => {
                                let _ = reply.send(Err(e));
                                Vec::new()
                            }
                        }
                    }
                    LoopMsg::Status { reply } => {
                        // Step first, so that a status read right after a pause reflects
                        // the re-checked quorum, never the state from before the pause.
                        let acts = rt.engine.step(now, Input::Tick);
                        let _ = reply.send(rt.engine.status());
                        acts
                    }
                    LoopMsg::Event(ev) => {
                        rt.record(*ev);
                        Vec::new()
                    }
                    LoopMsg::Persisted(done) => {
                        rt.persisted(done);
                        Vec::new()
                    }
                }
            }
        };
        rt.execute(actions);
        if rt.engine.take_urgent() {
            rt.send_heartbeats().await;
        }
        if let Some(r) = rt.exit.take() {
            break r;
        }
    };
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    if let Some(mut f) = rt.watchdog_dev.take().filter(|_| !rt.fencing) {
        // Magic close: a clean stop disarms the watchdog device (not while fencing).
        use std::io::Write;
        let _ = f.write_all(b"V");
    }
    // Tell the peers once more (leaving / stopping flags) before going silent.
    for _ in 0..2 {
        rt.send_heartbeats().await;
        tokio::time::sleep(hb_every).await;
    }
    // Let queued state writes finish (bounded: a hung disk must not hang the exit).
    if !rt.persist.close(Duration::from_secs(5)) {
        warn!("state writes still pending at exit");
    }
    let ev = Event::new(
        &events::AGENT_STOPPED,
        format!("agent on {me} stopped: {reason}"),
    );
    rt.record(ev);
    if let Ok(log) = rt.shared.alert_log.lock() {
        let _ = log.sync();
    }
    api_task.abort();
    if let Some(t) = socket_task {
        t.abort();
        if let Some(p) = cfg.api.socket_path(&cfg.cluster_name, &me) {
            let _ = std::fs::remove_file(p);
        }
    }
    let _ = notifier
        .shutdown(cfg.notify.delivery.shutdown_timeout.0)
        .await;
    notifier_task.abort();
    if reason == DEADLINE_REASON {
        return Err(AgentError::ShutdownDeadline);
    }
    Ok(reason)
}

const DEADLINE_REASON: &str = "shutdown deadline passed";

/// `now + d` without the panic of `Instant + Duration` on overflow (a huge configured
/// timeout made SIGTERM panic before anything was deactivated): a deadline past the
/// clock's range is capped at a year, which is "never" for an agent shutting down.
fn deadline_after(d: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(now)
}

impl Runtime {
    fn begin_shutdown(
        &mut self,
        deadline: &mut Option<tokio::time::Instant>,
        timeout: Duration,
    ) -> Vec<Action> {
        if deadline.is_none() {
            *deadline = Some(deadline_after(timeout));
        }
        let now = self.now();
        self.engine
            .command(now, Command::Shutdown)
            .unwrap_or_default()
    }
}
