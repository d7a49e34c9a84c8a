//! What the API handlers, the receivers and the helper tasks share with the agent's main
//! loop: the configuration, the keys and tokens, the alert log, the notifier, and the
//! channel into the loop ([`LoopMsg`]).

use crate::clock::Instant;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use baton_core::config::Config;
use baton_core::engine::{
    CheckResult, Command, CommandError, EngineStatus, Failure, PeerMessage, ProbeOutcome,
};
use baton_core::events::Event;
use baton_core::time::Millis;
use baton_notifier::{AlertLog, NotifierHandle};
use tokio::sync::{mpsc, oneshot};

use crate::api_types::AgentStatus;
use crate::key::ClusterKey;
use crate::wire::RejectCounters;

/// Messages into the agent's main loop.
pub(crate) enum LoopMsg {
    Heartbeat {
        from: String,
        path: usize,
        msg: Box<PeerMessage>,
        /// When the packet arrived (kernel timestamp), not when it was read.
        arrived: Instant,
        /// No packet with a higher sequence number came from this sender on any path.
        newest: bool,
    },
    /// Another datagram of a heartbeat already sent as [`LoopMsg::Heartbeat`]: its path
    /// is alive.
    PathHeard {
        from: String,
        path: usize,
        arrived: Instant,
    },
    WitnessReply {
        sent_at: Millis,
        granted: bool,
        epochs: BTreeMap<String, u64>,
        detail: String,
        /// The answer was refused as out of bounds (BTN-1140): what was wrong.
        refused: Option<String>,
    },
    Reachability {
        ok: bool,
        detail: String,
    },
    ActionDone {
        id: u64,
        result: Result<(), Failure>,
    },
    CheckDone {
        id: u64,
        result: CheckResult,
        detail: String,
    },
    ProbeDone {
        id: u64,
        outcome: ProbeOutcome,
    },
    Command {
        cmd: Command,
        reply: oneshot::Sender<Result<(), CommandError>>,
    },
    Status {
        reply: oneshot::Sender<EngineStatus>,
    },
    Event(Box<Event>),
    /// Raise a data mark (`baton_core::marks`): a mirror watcher records which server
    /// holds the newest data.
    Mark {
        key: String,
        value: u64,
    },
    /// The state writer thread finished writes.
    Persisted(crate::persist::Done),
    /// Take a pushed configuration live (`POST /v1/config`, checked by the handler).
    Reconfigure(Box<crate::config_push::Reconfigure>),
}

/// What the API handlers share with the main loop.
pub struct Shared {
    /// The configuration the agent runs (replaced by `baton config push`): read it with
    /// [`Shared::config`].
    pub running: std::sync::RwLock<Running>,
    /// The file the agent runs (`--config`), where a push stores the new one.
    pub config_file: std::path::PathBuf,
    /// One configuration push at a time on this agent.
    pub push_lock: tokio::sync::Mutex<()>,
    pub server: String,
    /// The tokens the API accepts (and the cluster key's, which the agent sends peers).
    pub tokens: crate::tokens::ApiTokens,
    pub key: ClusterKey,
    /// `key` and the keys also accepted during a rotation (`[cluster] accept_key_files`).
    pub ring: crate::key::KeyRing,
    pub(crate) tx: mpsc::Sender<LoopMsg>,
    pub alert_log: Mutex<AlertLog>,
    /// Reads the alert log for the API without taking `alert_log`'s lock.
    pub alert_reader: baton_notifier::AlertReader,
    pub counters: Mutex<RejectCounters>,
    pub notifier: SwapNotifier,
    pub started: Instant,
    pub auth_failures: Mutex<(u64, Option<Instant>)>,
    /// The client this agent asks its peers' APIs with (the cluster key's token, HTTPS
    /// when `[api]` has TLS).
    pub peer_client: crate::client::Client,
    /// The mirror processes of this server's `mirror-disk` resources: (group, resource,
    /// control socket).
    pub mirrors: Vec<(String, String, std::path::PathBuf)>,
    /// The scrape token and the Web UI's sessions.
    pub web: crate::web::WebState,
}

/// The running configuration, its text, and a configuration stored for the next
/// restart (`baton config push --stage`).
#[derive(Debug, Clone)]
pub struct Running {
    pub config: Arc<Config>,
    pub text: Arc<String>,
    pub staged_digest: Option<String>,
}

/// The notifier, replaced when a pushed configuration changes the sinks or metrics.
pub struct SwapNotifier(std::sync::RwLock<NotifierHandle>);

impl SwapNotifier {
    pub fn new(h: NotifierHandle) -> SwapNotifier {
        SwapNotifier(std::sync::RwLock::new(h))
    }

    pub fn current(&self) -> NotifierHandle {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Put `h` in place; returns the one it replaces (to be shut down).
    pub fn replace(&self, h: NotifierHandle) -> NotifierHandle {
        let mut g = match self.0.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        std::mem::replace(&mut *g, h)
    }

    pub fn publish(&self, ev: Event) {
        self.current().publish(ev);
    }

    pub fn metric(&self, s: baton_notifier::Sample) {
        self.current().metric(s);
    }

    pub fn wants_metric(&self, k: baton_core::config::MetricKind) -> bool {
        self.current().wants_metric(k)
    }

    pub fn wants_polling_time(&self, monitor: &str) -> bool {
        self.current().wants_polling_time(monitor)
    }

    pub fn stats(&self) -> Vec<baton_notifier::SinkStats> {
        self.current().stats()
    }

    pub fn drop_events(&self) -> Vec<Event> {
        self.current().drop_events()
    }

    pub fn prometheus(&self) -> Option<Arc<baton_notifier::prometheus::Prometheus>> {
        self.current().prometheus().cloned()
    }
}

impl Shared {
    /// The configuration the agent runs now.
    pub fn config(&self) -> Arc<Config> {
        self.running().config
    }

    pub fn running(&self) -> Running {
        match self.running.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub(crate) fn set_running(&self, r: Running) {
        match self.running.write() {
            Ok(mut g) => *g = r,
            Err(p) => *p.into_inner() = r,
        }
    }

    /// Ask each local mirror process for its state (bounded: 2 s each).
    async fn mirror_briefs(&self) -> Vec<crate::api_types::MirrorBrief> {
        use baton_mirror::control::{call, Request, Response};
        let mut out = Vec::new();
        for (group, resource, ctl) in &self.mirrors {
            let mut b = crate::api_types::MirrorBrief {
                group: group.clone(),
                resource: resource.clone(),
                role: "unknown".into(),
                connection: "unknown".into(),
                mode: String::new(),
                disk: String::new(),
                peer_disk: None,
                in_sync: false,
                out_of_sync_bytes: 0,
                resync_pct: None,
                paused: false,
                fenced: false,
                split_brain: false,
                serving: false,
                error: None,
            };
            match call(ctl, &Request::Status, std::time::Duration::from_secs(2)).await {
                Ok(Response::Status(s)) => {
                    b.role = s.role.clone();
                    b.connection = serde_name(&s.connection);
                    b.mode = s.mode.clone();
                    b.disk = serde_name(&s.disk);
                    b.peer_disk = s.peer_disk.as_ref().map(serde_name);
                    b.in_sync = s.in_sync;
                    b.out_of_sync_bytes = s.out_of_sync_bytes;
                    b.resync_pct = s.resync.running.then(|| {
                        (s.resync.done_bytes.min(s.resync.total_bytes) * 100)
                            .checked_div(s.resync.total_bytes)
                            .unwrap_or(0)
                    });
                    b.paused = s.paused;
                    b.fenced = s.fenced;
                    b.split_brain = s.split_brain;
                    b.serving = s.nbd_serving;
                    b.error = s.last_error.clone();
                }
                Ok(other) => b.error = Some(format!("unexpected answer {other:?}")),
                Err(e) => b.error = Some(e.to_string()),
            }
            out.push(b);
        }
        out
    }

    pub(crate) async fn status(&self) -> Option<AgentStatus> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(LoopMsg::Status { reply: tx }).await.ok()?;
        let engine = rx.await.ok()?;
        Some(AgentStatus {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            uptime_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            packets_rejected: self.counters.lock().map(|c| *c).unwrap_or_default(),
            sinks: self.notifier.stats(),
            mirrors: self.mirror_briefs().await,
            engine,
        })
    }

    /// The engine's status alone (no mirror queries): `/healthz`, the Web UI.
    pub(crate) async fn engine_status(&self) -> Option<EngineStatus> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(LoopMsg::Status { reply: tx }).await.ok()?;
        rx.await.ok()
    }

    pub(crate) async fn command(&self, cmd: Command) -> Result<Result<(), CommandError>, ()> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(LoopMsg::Command { cmd, reply: tx })
            .await
            .map_err(|_| ())?;
        rx.await.map_err(|_| ())
    }

    /// Record an event raised outside the engine (the API, the receiver).
    pub(crate) fn raise(&self, ev: Event) {
        let _ = self.tx.try_send(LoopMsg::Event(Box::new(ev)));
    }
}

/// The serde name of a unit enum value (`up_to_date`, `split_brain`).
fn serde_name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}
