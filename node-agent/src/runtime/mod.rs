//! The agent shell: feeds the engine, executes its actions, sends and receives
//! heartbeats, serves the API, persists state.

use crate::clock::Instant;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use baton_core::config::{Config, FinalAction};
use baton_core::engine::{
    Action, Boot, CheckResult, Command, Engine, Failure, GroupState, Input, ProbeOutcome,
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

mod reconf;
mod run;
mod start;

pub(crate) use start::notifier as build_notifier;

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

/// A provider error as the engine sees it: its stable code, its text and its cause.
fn failure(e: &baton_providers::ProviderError) -> Failure {
    use baton_core::engine::Cause;
    use baton_providers::ProviderError as P;
    let cause = match e {
        P::Timeout(_) => Cause::Timeout,
        P::Fenced { holder, epoch, .. } => Cause::Fenced {
            holder: holder.clone(),
            epoch: *epoch,
        },
        P::Api { .. } => Cause::ApiUnavailable,
        P::Rejected { code, .. } => Cause::Rejected { code: code.clone() },
        P::CommandFailed { .. } | P::Spawn { .. } => Cause::Command,
        _ => Cause::Other,
    };
    Failure {
        code: e.code().to_string(),
        message: e.to_string(),
        cause,
    }
}

fn unix_ms() -> u64 {
    // Wall-clock time is used only to stamp events and ownership records for people;
    // every decision runs on the monotonic clock.
    crate::clock::wall()
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
    /// This boot of the machine (`state::host_boot_id`), for `Ownership::fencing_boot`.
    boot_id: Option<String>,
    last_drop_check: Instant,
    /// Groups whose newest epoch could not be written to the state directory.
    unpersisted: HashMap<String, u64>,
    /// Heartbeat round-trip measurement (when a metrics sink wants it).
    rtt: wire::SharedRtt,
    /// The receivers' acceptor: which peers hold this server's group reports.
    acceptor: Arc<Mutex<wire::Acceptor>>,
    /// The version of this server's group reports (`wire`, "Group reports by change").
    versions: wire::GroupVersions,
    /// `[quorum] witness` client and whether a request is in flight.
    witness: Option<Arc<dyn WitnessClient>>,
    witness_busy: Arc<std::sync::atomic::AtomicBool>,
    /// `[agent] watchdog_device`, fed by the main loop (a stalled loop stops feeding it).
    watchdog_dev: Option<std::fs::File>,
    /// The last heartbeat could not be encoded (BTN-1111 raised, BTN-1112 when it can).
    hb_encode_failed: bool,
    /// The server is fencing itself: the watchdog device is no longer fed (nor disarmed).
    fencing: bool,
    /// What the mirror drivers need (to build those of a pushed configuration).
    mirror: crate::mirror_kind::MirrorCtx,
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
                Action::PersistOwnership { groups, fencing } => {
                    let own = Ownership {
                        fencing_boot: if fencing { self.boot_id.clone() } else { None },
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
                    fence,
                } => self.spawn_resource(
                    id,
                    group,
                    resource,
                    epoch,
                    timeout_ms,
                    attempt,
                    if fence { Op::FenceStop } else { Op::Deactivate },
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
            PendingWrite::Epoch { group, epoch } if baton_core::marks::is_mark_key(&group) => {
                // A data mark: kept in memory and sent; the next write of the epochs
                // file carries it again.
                let ev = Event::new(
                    &events::STATE_DIR_ERROR,
                    format!("cannot persist data mark {epoch} of mirror {group}: {err}; it is kept in memory and written with the next epoch"),
                );
                self.record(ev);
            }
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
            let result = Err(Failure::other(
                "state-dir",
                "the group's epoch could not be persisted in the state directory",
            ));
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
                    let f =
                        Failure::other("no-driver", format!("no driver for resource {resource}"));
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
                let started = crate::clock::now();
                match op {
                    Op::Activate | Op::Deactivate | Op::FenceStop => {
                        let fut = async {
                            match op {
                                Op::Activate => driver.activate(&ctx).await,
                                Op::FenceStop => driver.fence_stop(&ctx).await,
                                _ => driver.deactivate(&ctx).await,
                            }
                        };
                        let result = match tokio::time::timeout(outer, fut).await {
                            Ok(Ok(())) => Ok(()),
                            Ok(Err(e)) => Err(failure(&e)),
                            Err(_) => Err(Failure {
                                code: "timeout".into(),
                                message: format!("timed out after {} ms", ctx.timeout.as_millis()),
                                cause: baton_core::engine::Cause::Timeout,
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
        let group_state = self
            .cfg
            .monitor(&monitor)
            .and_then(|m| m.group.as_deref())
            .and_then(|g| self.engine.group_state(g));
        let ctx = ProbeContext {
            cluster: self.cfg.cluster_name.clone(),
            server: self.me.clone(),
            monitor: monitor.clone(),
            timeout: Duration::from_millis(timeout_ms),
            group_state,
        };
        let span = info_span!("probe", monitor = %monitor, server = %self.me);
        let metrics = self
            .shared
            .notifier
            .wants_polling_time(&monitor)
            .then(|| self.shared.notifier.current());
        tokio::spawn(
            async move {
                let started = crate::clock::now();
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
        let mut msg = self.engine.peer_message();
        let tag = self.versions.tag(&msg.groups, self.engine.now().0);
        // Which peers hold this server's current group reports (they get the message
        // without them: `wire`, "Group reports by change"), and what this server holds
        // of theirs.
        let (held, brief_to): (_, Vec<bool>) = match self.acceptor.lock() {
            Ok(a) => (
                a.held(),
                self.cfg
                    .servers
                    .iter()
                    .map(|s| {
                        s.name != self.me && a.echoed(&s.name) == Some((msg.incarnation, tag.v))
                    })
                    .collect(),
            ),
            Err(_) => (None, vec![false; self.cfg.servers.len()]),
        };
        let any_brief = brief_to.iter().any(|b| *b);
        let any_full = self
            .cfg
            .servers
            .iter()
            .zip(&brief_to)
            .any(|(s, b)| s.name != self.me && !b);
        // A copy of the socket list (Arcs), so that events can be recorded in the loop.
        let sockets = self.sockets.clone();
        // One message, one datagram per path in path order with consecutive sequence
        // numbers (`seq = first + path`): receivers parse it once per send
        // (`wire::Acceptor::accept_heartbeat`). Keep it so.
        let first = self.seq + 1;
        self.seq += sockets.len() as u64;
        let now_us = u64::try_from(self.t0.elapsed().as_micros()).unwrap_or(u64::MAX);
        fn envelope<'m>(
            rt: &Runtime,
            p: usize,
            seq: u64,
            now_us: u64,
            held: &Option<BTreeMap<String, (u64, u64)>>,
            msg: &'m baton_core::engine::PeerMessage,
            gv: wire::GroupsTag,
        ) -> Envelope<wire::Timed<&'m baton_core::engine::PeerMessage>> {
            let path = u8::try_from(p).unwrap_or(u8::MAX);
            Envelope {
                cluster: rt.cfg.cluster_name.clone(),
                from: rt.me.clone(),
                path,
                seq,
                body: wire::Timed {
                    body: msg,
                    rtt: wire::rtt_stamp(&rt.rtt, path, now_us),
                    gv: Some(gv),
                    gvs: held.clone(),
                },
            }
        }
        let mut brief = vec![None; sockets.len()];
        if any_brief {
            let groups = std::mem::take(&mut msg.groups);
            let gv = wire::GroupsTag {
                brief: true,
                ..tag.clone()
            };
            for (p, b) in brief.iter_mut().enumerate() {
                let env = envelope(self, p, first + p as u64, now_us, &held, &msg, gv.clone());
                *b = wire::encode_brief(&self.shared.ring, &env);
            }
            msg.groups = groups;
        }
        let envs: Vec<_> = (0..sockets.len())
            .map(|p| {
                (any_full || brief[p].is_none())
                    .then(|| envelope(self, p, first + p as u64, now_us, &held, &msg, tag.clone()))
            })
            .collect();
        let mut full = Vec::with_capacity(envs.len());
        for env in envs {
            full.push(env.and_then(|e| self.encode_heartbeat(&e)));
        }
        // Peer by peer, each peer's copies back to back: they reach it together (on
        // paths of like latency), and it takes both in one wake-up instead of two.
        for (s, b) in self.cfg.servers.iter().zip(&brief_to) {
            if s.name == self.me {
                continue;
            }
            for (p, sock) in sockets.iter().enumerate() {
                let bytes = match (b, &brief[p], &full[p]) {
                    (true, Some(x), _) | (_, _, Some(x)) => x,
                    _ => continue,
                };
                if let Some(addr) = s.interconnects.get(p) {
                    if let Err(e) = sock.send_to(bytes, addr).await {
                        tracing::debug!(peer = %s.name, path = p, error = %e, "heartbeat send failed");
                    }
                }
            }
        }
    }

    /// Encode a heartbeat, raising BTN-1111 when it cannot be (and BTN-1112 when it can
    /// again).
    fn encode_heartbeat(
        &mut self,
        env: &Envelope<wire::Timed<&baton_core::engine::PeerMessage>>,
    ) -> Option<Vec<u8>> {
        match wire::encode(&self.shared.ring, env) {
            Ok(b) => {
                if std::mem::take(&mut self.hb_encode_failed) {
                    self.record(Event::new(
                        &events::HEARTBEAT_SENDING,
                        format!("heartbeats fit in a datagram again ({} bytes)", b.len()),
                    ));
                }
                Some(b)
            }
            Err(e) => {
                warn!(error = %e, "cannot encode heartbeat");
                if !self.hb_encode_failed {
                    self.hb_encode_failed = true;
                    self.record(
                        Event::new(
                            &events::HEARTBEAT_TOO_LARGE,
                            format!("cannot send heartbeats: {e}; peers stop hearing this server"),
                        )
                        .field("code", e.code()),
                    );
                }
                None
            }
        }
    }

    /// Events a notification sink dropped (BTN-5001), checked every 10 s; they go to the
    /// alert log and the sinks like any other event.
    fn maybe_report_drops(&mut self) {
        if self.last_drop_check.elapsed() < Duration::from_secs(10) {
            return;
        }
        self.last_drop_check = crate::clock::now();
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
            self.last_reject_event = Some(crate::clock::now());
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
    /// A self-fence stop of a resource with a local one: `ResourceDriver::fence_stop`.
    FenceStop,
    Check,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Activate => "activate",
            Op::Deactivate => "deactivate",
            Op::FenceStop => "fence-stop",
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
    mirror: &crate::mirror_kind::MirrorCtx,
) -> Result<(DriverMap, ProbeMap), AgentError> {
    use crate::mirror_kind as mk;
    let mut drivers: DriverMap = HashMap::new();
    for g in &cfg.groups {
        if !g.servers.iter().any(|s| s == me) {
            continue;
        }
        for r in &g.resources {
            if r.kind == mk::RESOURCE_KIND {
                let launch = mk::launch_for(cfg, me, &g.name, &r.name, mirror).map_err(|msg| {
                    AgentError::Build {
                        what: format!("resource {}", r.name),
                        msg,
                    }
                })?;
                drivers.insert(
                    (g.name.clone(), r.name.clone()),
                    Arc::new(mk::MirrorDiskDriver {
                        launch,
                        agent: mirror.agent.clone(),
                    }),
                );
                continue;
            }
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
        if let Some(kind) = mk::MONITOR_KINDS.iter().find(|k| **k == m.kind) {
            let (Some(gname), Some(rname)) = (&m.group, &m.resource) else {
                continue;
            };
            if !drivers.contains_key(&(gname.clone(), rname.clone())) {
                // Not one of this server's groups: nothing to watch here.
                probes.insert(
                    m.name.clone(),
                    Arc::new(mk::NotHere {
                        kind,
                        group: gname.clone(),
                    }),
                );
                continue;
            }
            let launch =
                mk::launch_for(cfg, me, gname, rname, mirror).map_err(|msg| AgentError::Build {
                    what: format!("monitor {}", m.name),
                    msg,
                })?;
            probes.insert(m.name.clone(), Arc::new(mk::MirrorProbe { kind, launch }));
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

/// Run the agent until it is told to stop. Returns the reason it stopped.
pub async fn run_agent(opts: AgentOptions) -> Result<String, AgentError> {
    let l = start::load(&opts)?;
    let (sockets, api_listener) = start::bind(&l.server).await?;
    let cfg = l.cfg.clone();
    let me = l.me.clone();

    let (notifier, notifier_task, sink_failures) = start::notifier(&cfg, &me, &opts.config).await;

    let engine = start::engine(&cfg, &me, &l)?;
    let (tx, mut rx) = mpsc::channel::<LoopMsg>(4096);
    let mirrors = crate::mirror_kind::mirrors_of(&cfg, &me)
        .into_iter()
        .map(|(g, r)| {
            let ctl = crate::mirror_kind::control_path(l.state.path(), &g, &r);
            (g, r, ctl)
        })
        .collect();
    let shared = Arc::new(Shared {
        mirrors,
        running: std::sync::RwLock::new(crate::shared::Running {
            config: Arc::new(cfg.clone()),
            text: Arc::new(l.text.clone()),
            staged_digest: None,
        }),
        config_file: opts.config.clone(),
        push_lock: tokio::sync::Mutex::new(()),
        server: me.clone(),
        peer_client: crate::client::Client::new(l.tokens.peer(), &l.client_tls),
        tokens: l.tokens,
        key: l.key.clone(),
        ring: l.ring,
        tx: tx.clone(),
        alert_reader: l.alert_log.reader(),
        alert_log: Mutex::new(l.alert_log),
        counters: Mutex::new(RejectCounters::default()),
        notifier: crate::shared::SwapNotifier::new(notifier.clone()),
        started: crate::clock::now(),
        auth_failures: Mutex::new((0, None)),
        web: crate::web::WebState::load(&cfg, &opts.config)?,
    });
    if let Some(ev) = l.fd_event {
        shared.raise(ev);
    }
    let mirror = crate::mirror_kind::MirrorCtx {
        config_file: opts.config.clone(),
        state_dir: l.state.path().to_path_buf(),
        keys: {
            use crate::key::Keys;
            shared.ring.all().cloned().collect()
        },
        agent: crate::mirror_kind::AgentHandle(Some(shared.clone())),
    };
    let (drivers, probes) = start::drivers(&cfg, &me, &shared, &mirror)?;
    let t0 = crate::clock::now();
    let (rtt, acceptor) = start::spawn_receivers(&sockets, &shared, t0);
    let (api, socket) = start::spawn_api(&shared, api_listener, l.api_limits, l.server_cert)?;
    let witness = start::witness(&cfg, &l.key).await;
    start::spawn_reachability(&cfg, tx.clone());
    let watchdog_dev = start::open_watchdog(&cfg)?;
    // Scripts get a minimal environment plus these variables of the agent's.
    baton_providers::process::set_env_passthrough(cfg.agent.script_env.clone());
    let persist = start::start_persistence(l.state, tx.clone())?;
    let mut rt = Runtime {
        cfg: cfg.clone(),
        me: me.clone(),
        engine,
        t0,
        persist,
        pending_writes: HashMap::new(),
        epochs: l.epochs,
        shared: shared.clone(),
        tx,
        drivers,
        probes,
        sockets,
        seq: l.seq_base,
        exit: None,
        rejected_reported: 0,
        last_reject_event: None,
        ownership: l.ownership,
        boot_id: l.boot_id,
        last_drop_check: crate::clock::now(),
        unpersisted: HashMap::new(),
        rtt,
        acceptor,
        versions: wire::GroupVersions::new(),
        witness,
        witness_busy: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        watchdog_dev,
        hb_encode_failed: false,
        fencing: false,
        mirror,
    };
    rt.announce_start(&sink_failures);

    let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut timers = run::Timers::new(&cfg, progress.clone())?;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    start::spawn_stall_watch(&shared, progress, t0)?;
    let reason = run::main_loop(&mut rt, &mut rx, &mut timers).await;
    drop(notifier);
    let tasks = run::Tasks {
        api,
        socket,
        notifier_task,
    };
    run::shutdown(rt, tasks, reason).await
}

/// `now + d` without the panic of `Instant + Duration` on overflow (a huge configured
/// timeout made SIGTERM panic before anything was deactivated): a deadline past the
/// clock's range is capped at a year, which is "never" for an agent shutting down.
fn deadline_after(d: Duration) -> tokio::time::Instant {
    let now = crate::clock::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(now)
}

impl Runtime {
    /// BTN-1001 and the sinks that could not be set up (BTN-5004), then the actions the
    /// engine produced at construction (re-adoption checks).
    fn announce_start(&mut self, sink_failures: &[baton_notifier::build::SinkFailure]) {
        let started = Event::new(
            &events::AGENT_STARTED,
            format!(
                "agent {} started on {} (config {}…, pid {})",
                env!("CARGO_PKG_VERSION"),
                self.me,
                &self.cfg.digest[..12],
                std::process::id()
            ),
        )
        .field("digest", self.cfg.digest.clone());
        self.record(started);
        for f in sink_failures {
            self.record(f.event());
        }
        let initial = self.engine.step(Millis(0), Input::Tick);
        self.execute(initial);
    }

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
