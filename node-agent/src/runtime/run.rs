//! The agent's main loop and its shutdown: ticks, heartbeats, signals and the messages
//! of the receivers, the API and the action tasks go into the engine; what it decides
//! comes out as actions the [`Runtime`] executes.

use super::*;

/// What the main loop waits on besides its channel.
pub(super) struct Timers {
    hb: tokio::time::Interval,
    /// When the loop's housekeeping (reject and drop reports, watchdog device, stall
    /// detector) last ran: about once per `Engine::tick_every`.
    house: Instant,
    /// systemd's watchdog (`WatchdogSec=`), fed at half its period.
    wd: tokio::time::Interval,
    sd_watchdog: bool,
    sigterm: tokio::signal::unix::Signal,
    sigint: tokio::signal::unix::Signal,
    /// When the shutdown must be over (set by SIGTERM, SIGINT or `cluster stop`).
    deadline: Option<tokio::time::Instant>,
    shutdown_timeout: Duration,
    /// Milliseconds since `t0` at the last tick, for the stall detector.
    progress: Arc<std::sync::atomic::AtomicU64>,
    /// Tests only (`BATON_TEST_STALL_FILE`, see [`test_stall`]).
    stall_file: Option<std::path::PathBuf>,
}

impl Timers {
    pub(super) fn new(
        cfg: &Config,
        progress: Arc<std::sync::atomic::AtomicU64>,
    ) -> Result<Timers, AgentError> {
        let hb_every = cfg.heartbeat.interval.0;
        let mut hb = tokio::time::interval(hb_every);
        hb.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watchdog_usec = 0u64;
        let sd_watchdog = sd_notify::watchdog_enabled(false, &mut watchdog_usec);
        let wd = tokio::time::interval(Duration::from_micros(if sd_watchdog {
            (watchdog_usec / 2).max(1000)
        } else {
            3_600_000_000
        }));
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Timers {
            hb,
            house: crate::clock::now(),
            wd,
            sd_watchdog,
            sigterm: signal(SignalKind::terminate())?,
            sigint: signal(SignalKind::interrupt())?,
            deadline: None,
            shutdown_timeout: cfg.agent.shutdown_timeout.0,
            progress,
            stall_file: std::env::var_os("BATON_TEST_STALL_FILE").map(Into::into),
        })
    }
}

/// Run until the engine or a signal says stop; returns the reason.
pub(super) async fn main_loop(
    rt: &mut Runtime,
    rx: &mut mpsc::Receiver<LoopMsg>,
    t: &mut Timers,
) -> String {
    loop {
        // The engine's next evaluation: when time alone may change what it decides
        // (a path's or a vote's silence, a monitor falling due, the end of a takeover
        // wait), or a tick `tick_every` after the last evaluation while anything of its
        // own is under way. An idle agent is then woken by its heartbeats, its peers'
        // and its monitors, not by evaluations that decide nothing.
        let next = rt.t0 + Duration::from_millis(rt.engine.next_evaluation().0);
        let actions: Vec<Action> = tokio::select! {
            _ = tokio::time::sleep_until(next) => {
                let now = rt.now();
                rt.engine.step(now, Input::Tick)
            }
            _ = t.hb.tick() => {
                // Step first: after a pause the heartbeat must say what is true now.
                let now = rt.now();
                let acts = rt.engine.step(now, Input::Tick);
                rt.send_heartbeats().await;
                acts
            }
            _ = t.wd.tick(), if t.sd_watchdog => {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                Vec::new()
            }
            _ = t.sigterm.recv() => rt.begin_shutdown(&mut t.deadline, t.shutdown_timeout),
            _ = t.sigint.recv() => rt.begin_shutdown(&mut t.deadline, t.shutdown_timeout),
            _ = async { match t.deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                let ev = Event::new(&events::AGENT_SHUTDOWN_DEADLINE, format!("shutdown deadline of {} ms passed; exiting with groups possibly still active", t.shutdown_timeout.as_millis()));
                rt.record(ev);
                return DEADLINE_REASON.to_string();
            }
            m = rx.recv() => {
                let Some(m) = m else { return "internal channel closed".to_string() };
                rt.on_message(m, t)
            }
        };
        rt.execute(actions);
        if rt.engine.take_urgent() {
            rt.send_heartbeats().await;
        }
        if t.house.elapsed() >= Duration::from_millis(rt.engine.tick_every().0) {
            t.house = crate::clock::now();
            rt.maybe_report_rejects();
            rt.maybe_report_drops();
            rt.feed_watchdog_device();
            t.progress.store(
                rt.t0.elapsed().as_millis() as u64,
                std::sync::atomic::Ordering::Release,
            );
            if let Some(f) = &t.stall_file {
                test_stall(f, &rt.me);
            }
        }
        if let Some(r) = rt.exit.take() {
            return r;
        }
    }
}

/// Tests only: with `BATON_TEST_STALL_FILE=PATH`, when the file `PATH.SERVER` appears,
/// the main loop blocks its thread for the milliseconds written in it, as CPU starvation
/// or a hung call would (the file is removed first: one stall per file). This is what the
/// stall watcher (BTN-1137) is for, and nothing else can stall the loop from outside
/// while the watcher's own thread keeps running.
fn test_stall(path: &std::path::Path, me: &str) {
    let mut f = path.as_os_str().to_owned();
    f.push(format!(".{me}"));
    let f = std::path::PathBuf::from(f);
    let Ok(text) = std::fs::read_to_string(&f) else {
        return;
    };
    let _ = std::fs::remove_file(&f);
    if let Ok(ms) = text.trim().parse::<u64>() {
        warn!(ms, "test hook: stalling the main loop");
        std::thread::sleep(Duration::from_millis(ms));
    }
}

impl Runtime {
    /// One message from the receivers, the API or a task: into the engine.
    fn on_message(&mut self, m: LoopMsg, t: &mut Timers) -> Vec<Action> {
        let now = self.now();
        match m {
            LoopMsg::Heartbeat {
                from,
                path,
                msg,
                arrived,
                newest,
            } => {
                let since = arrived.saturating_duration_since(self.t0).as_millis();
                let at = Millis(u64::try_from(since).unwrap_or(0));
                let input = Input::Heartbeat {
                    from,
                    path,
                    msg,
                    newest,
                };
                self.engine.step(at.min(now), input)
            }
            LoopMsg::PathHeard {
                from,
                path,
                arrived,
            } => {
                let since = arrived.saturating_duration_since(self.t0).as_millis();
                let at = Millis(u64::try_from(since).unwrap_or(0));
                self.engine
                    .step(at.min(now), Input::PathHeard { from, path })
            }
            LoopMsg::WitnessReply {
                sent_at,
                granted,
                epochs,
                detail,
                refused,
            } => {
                // An answer or lease document out of bounds (never a grant) is a critical
                // event, not only a lost vote.
                let mut acts = match refused {
                    Some(what) => self.engine.refused_input(now, "the witness", what),
                    None => Vec::new(),
                };
                let input = Input::WitnessReply {
                    sent_at,
                    granted,
                    epochs,
                    detail,
                };
                acts.extend(self.engine.step(now, input));
                acts
            }
            LoopMsg::Reachability { ok, detail } => {
                self.engine.step(now, Input::Reachability { ok, detail })
            }
            LoopMsg::ActionDone { id, result } => {
                self.engine.step(now, Input::ActionDone { id, result })
            }
            LoopMsg::CheckDone { id, result, detail } => self
                .engine
                .step(now, Input::CheckDone { id, result, detail }),
            LoopMsg::ProbeDone { id, outcome } => {
                self.engine.step(now, Input::ProbeDone { id, outcome })
            }
            LoopMsg::Command { cmd, reply } => {
                let stop = cmd == Command::ClusterStop;
                match self.engine.command(now, cmd) {
                    Ok(actions) => {
                        let _ = reply.send(Ok(()));
                        if stop && t.deadline.is_none() {
                            t.deadline = Some(deadline_after(t.shutdown_timeout));
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
                // Step first, so that a status read right after a pause reflects the
                // re-checked quorum, never the state from before the pause.
                let acts = self.engine.step(now, Input::Tick);
                let _ = reply.send(self.engine.status());
                acts
            }
            LoopMsg::Event(ev) => {
                self.record(*ev);
                Vec::new()
            }
            LoopMsg::Mark { key, value } => self.engine.step(now, Input::Mark { key, value }),
            LoopMsg::Persisted(done) => {
                self.persisted(done);
                Vec::new()
            }
            LoopMsg::Reconfigure(r) => self.reconfigure(*r),
        }
    }
}

/// What runs beside the loop and is stopped at the end.
pub(super) struct Tasks {
    pub api: tokio::task::JoinHandle<()>,
    pub socket: Option<tokio::task::JoinHandle<()>>,
    pub notifier_task: tokio::task::JoinHandle<()>,
}

/// After the loop: say goodbye to the peers, finish the state writes, record the stop,
/// stop the API and the notifier (bounded).
pub(super) async fn shutdown(
    mut rt: Runtime,
    tasks: Tasks,
    reason: String,
) -> Result<String, AgentError> {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    if let Some(mut f) = rt.watchdog_dev.take().filter(|_| !rt.fencing) {
        // Magic close: a clean stop disarms the watchdog device (not while fencing).
        use std::io::Write;
        let _ = f.write_all(b"V");
    }
    // Tell the peers once more (leaving / stopping flags) before going silent.
    for _ in 0..2 {
        rt.send_heartbeats().await;
        tokio::time::sleep(rt.cfg.heartbeat.interval.0).await;
    }
    // Let queued state writes finish (bounded: a hung disk must not hang the exit).
    if !rt.persist.close(Duration::from_secs(5)) {
        warn!("state writes still pending at exit");
    }
    let ev = Event::new(
        &events::AGENT_STOPPED,
        format!("agent on {} stopped: {reason}", rt.me),
    );
    rt.record(ev);
    if let Ok(log) = rt.shared.alert_log.lock() {
        let _ = log.sync();
    }
    tasks.api.abort();
    let cfg = &rt.cfg;
    if let Some(t) = tasks.socket {
        t.abort();
        if let Some(p) = cfg.api.socket_path(&cfg.cluster_name, &rt.me) {
            let _ = std::fs::remove_file(p);
        }
    }
    let _ = rt
        .shared
        .notifier
        .current()
        .shutdown(cfg.notify.delivery.shutdown_timeout.0)
        .await;
    tasks.notifier_task.abort();
    if reason == DEADLINE_REASON {
        return Err(AgentError::ShutdownDeadline);
    }
    Ok(reason)
}

pub(super) const DEADLINE_REASON: &str = "shutdown deadline passed";
