//! Metrics: samples from the agent (monitor polling time, heartbeat round trip) and
//! figures derived from the event stream (group active, failover count, failover phase
//! times), aggregated per interval and sent in batches within the PutMetricData limits.
//!
//! | metric | unit | dimensions | from |
//! |---|---|---|---|
//! | `MonitorPollingTime` | Milliseconds | Cluster, Server, Monitor | every poll of an opted-in monitor |
//! | `HeartbeatRoundTrip` | Milliseconds | Cluster, Server, Peer, Path | heartbeat timestamp echoes |
//! | `GroupActive` | None (1 or 0) | Cluster, Server, Group | BTN-2102 / 1020 → 1, BTN-2104 → 0; sent every interval |
//! | `FailoverCount` | Count | Cluster, Server, Group | BTN-2107 (on the server taking over) |
//! | `FailoverPhaseTime` | Milliseconds | Cluster, Server, Group, Phase | see [`FailoverTracker`] |
//!
//! Aggregation keeps, per series, the distinct values (to 0.01 ms) and how often each
//! was seen, and sends them as `Values` / `Counts`, so CloudWatch computes exact
//! minimum, maximum, average, sum and sample count (and percentiles over the values).
//!
//! Everything here is pure except [`MetricsWorker`], which owns the queue, the timer and
//! delivery; wall-clock time (datum timestamps) is injected.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use baton_core::config::{CloudWatchSection, Config, MetricKind};
use baton_core::events::{
    GROUP_ACTIVATED, GROUP_ACTIVATING, GROUP_ACTIVATION_FAILED, GROUP_DEACTIVATED,
    GROUP_DEACTIVATING, GROUP_FAILOVER, GROUP_READOPTED, SERVER_DOWN, SERVER_UP,
};
use baton_core::Event;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::delivery::{backoff, wait_deadline, Counters, NotifierOptions};
use crate::sink::SinkError;

pub const MONITOR_POLLING_TIME: &str = "MonitorPollingTime";
pub const HEARTBEAT_ROUND_TRIP: &str = "HeartbeatRoundTrip";
pub const GROUP_ACTIVE: &str = "GroupActive";
pub const FAILOVER_COUNT: &str = "FailoverCount";
pub const FAILOVER_PHASE_TIME: &str = "FailoverPhaseTime";

/// PutMetricData limits: datums per call, request size, values per datum.
pub const MAX_DATUMS_PER_CALL: usize = 1000;
pub const MAX_REQUEST_BYTES: usize = 1_000_000;
pub const MAX_VALUES_PER_DATUM: usize = 150;
/// What [`chunk`] aims for, below the 1 MB limit (the estimate is conservative, but the
/// SDK adds its own framing).
const CHUNK_BYTES: usize = 900_000;

/// Wall-clock milliseconds since the Unix epoch (injected in tests).
pub type WallClock = Arc<dyn Fn() -> u64 + Send + Sync>;

pub fn system_wall_clock() -> WallClock {
    Arc::new(|| {
        crate::clock::wall()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    })
}

/// A measurement handed to the notifier by the agent.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    /// How long one poll of `monitor` took.
    MonitorPollingTime { monitor: String, ms: f64 },
    /// Round trip of a heartbeat to `peer` and back on interconnect `path`.
    HeartbeatRtt { peer: String, path: u8, ms: f64 },
}

impl Sample {
    pub fn kind(&self) -> MetricKind {
        match self {
            Sample::MonitorPollingTime { .. } => MetricKind::MonitorPollingTime,
            Sample::HeartbeatRtt { .. } => MetricKind::HeartbeatRtt,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Unit {
    Milliseconds,
    Count,
    None,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Milliseconds => "Milliseconds",
            Unit::Count => "Count",
            Unit::None => "None",
        }
    }
}

/// One metric series: name, unit and dimensions (Cluster and Server come first).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesKey {
    pub name: &'static str,
    pub unit: Unit,
    pub dims: Vec<(&'static str, String)>,
}

/// One `MetricDatum` of PutMetricData.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Datum {
    pub name: String,
    pub unit: Unit,
    pub dims: Vec<(String, String)>,
    pub values: Vec<f64>,
    pub counts: Vec<f64>,
    pub timestamp_ms: u64,
    /// 1 (high resolution) or 60.
    pub storage_resolution: i32,
}

impl Datum {
    /// Samples this datum stands for.
    pub fn samples(&self) -> u64 {
        self.counts.iter().map(|c| *c as u64).sum()
    }

    /// A generous estimate of its encoded size (the query protocol's form is the
    /// largest of the three CloudWatch protocols).
    pub fn estimated_bytes(&self) -> usize {
        let dims: usize = self.dims.iter().map(|(k, v)| k.len() + v.len() + 80).sum();
        120 + self.name.len() + dims + self.values.len() * 70
    }
}

/// Split datums into PutMetricData calls of at most [`MAX_DATUMS_PER_CALL`] datums and
/// about [`CHUNK_BYTES`] bytes, keeping their order.
pub fn chunk(datums: Vec<Datum>) -> Vec<Vec<Datum>> {
    let mut out: Vec<Vec<Datum>> = Vec::new();
    let mut cur: Vec<Datum> = Vec::new();
    let mut bytes = 0;
    for d in datums {
        let b = d.estimated_bytes();
        if !cur.is_empty() && (cur.len() >= MAX_DATUMS_PER_CALL || bytes + b > CHUNK_BYTES) {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        bytes += b;
        cur.push(d);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Where aggregated metrics go (Amazon CloudWatch, or a test double).
#[async_trait]
pub trait MetricsSink: Send + Sync {
    /// Name in `baton status` (`cloudwatch`).
    fn name(&self) -> &str;
    /// Send one PutMetricData call's worth (already within the limits).
    async fn put(&self, data: &[Datum]) -> Result<(), SinkError>;
}

/// What the metrics pipeline sends, from `[metrics.cloudwatch]` and the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsOptions {
    pub cluster: String,
    pub server: String,
    pub kinds: Vec<MetricKind>,
    /// Monitors whose polling time is sent (`*` = every monitor).
    pub monitors: Vec<String>,
    /// Groups this server may run (their `GroupActive` is sent from the start).
    pub groups: Vec<String>,
    pub interval: Duration,
    pub high_resolution: bool,
    pub queue_len: usize,
}

impl MetricsOptions {
    pub fn from_config(cw: &CloudWatchSection, cfg: &Config, server: &str) -> MetricsOptions {
        MetricsOptions {
            cluster: cfg.cluster_name.clone(),
            server: server.to_string(),
            kinds: cw.metrics.clone(),
            monitors: cw.monitors.clone(),
            groups: cfg
                .groups
                .iter()
                .filter(|g| g.servers.iter().any(|s| s == server))
                .map(|g| g.name.clone())
                .collect(),
            interval: cw.interval.0,
            high_resolution: cw.high_resolution,
            queue_len: cw.queue_len.max(1),
        }
    }

    pub fn sends(&self, k: MetricKind) -> bool {
        self.kinds.contains(&k)
    }

    pub fn monitor_opted_in(&self, monitor: &str) -> bool {
        self.sends(MetricKind::MonitorPollingTime)
            && self.monitors.iter().any(|m| m == "*" || m == monitor)
    }

    /// Does the failover tracking need this event?
    pub fn wants_event(&self, ev: &Event) -> bool {
        let derived = self.sends(MetricKind::GroupActive)
            || self.sends(MetricKind::FailoverCount)
            || self.sends(MetricKind::FailoverPhaseTime);
        derived
            && (ev.module == "group"
                || ev.id == SERVER_DOWN.code()
                || ev.id == SERVER_UP.code()
                || ev.id == GROUP_READOPTED.code())
    }
}

/// A failover in progress on this server (the one taking the group over).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Takeover {
    /// BTN-2107 time.
    failover_ms: u64,
    /// When the lost server was declared down (BTN-1102), and the heartbeat timeout.
    down: Option<(u64, u64)>,
    /// BTN-2101 time.
    activating_ms: Option<u64>,
}

/// Failover count and phase times from the event stream of one server.
///
/// Phases (dimension `Phase`), measured on the server that takes the group over:
/// - `Detection`: the heartbeat timeout after which the lost server was declared down
///   (BTN-1102 `timeout_ms`; absent when the previous server gave the group up itself);
/// - `Decision`: from BTN-1102 to BTN-2107 (takeover wait, placement);
/// - `Claim`: from BTN-2107 to BTN-2101 (the epoch claim acknowledged by a quorum);
/// - `Activation`: from BTN-2101 to BTN-2102 (the resources started);
/// - `Total`: from the lost server's last heartbeat (BTN-1102 time minus the timeout), or
///   from BTN-2107, to BTN-2102.
///
/// And on any server: `Deactivation`, from BTN-2103 to BTN-2104.
#[derive(Debug, Default, Clone)]
pub struct FailoverTracker {
    down: HashMap<String, (u64, u64)>,
    takeovers: HashMap<String, Takeover>,
    deactivating: HashMap<String, u64>,
    /// Last known activity per group (1.0 / 0.0).
    pub active: BTreeMap<String, f64>,
}

impl FailoverTracker {
    pub fn new(groups: &[String]) -> FailoverTracker {
        FailoverTracker {
            active: groups.iter().map(|g| (g.clone(), 0.0)).collect(),
            ..FailoverTracker::default()
        }
    }

    /// Feed one event; returns the samples it completes: `(metric, phase, group, value)`.
    pub fn on_event(
        &mut self,
        ev: &Event,
    ) -> Vec<(&'static str, Option<&'static str>, String, f64)> {
        let mut out = Vec::new();
        let t = ev.time_ms;
        let id = ev.id.as_str();
        let group = ev.group.clone().unwrap_or_default();
        let diff = |a: u64, b: u64| b.saturating_sub(a) as f64;
        if id == SERVER_DOWN.code() {
            if let Some(p) = &ev.peer {
                let timeout = ev
                    .fields
                    .get("timeout_ms")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0);
                self.down.insert(p.clone(), (t, timeout));
            }
        } else if id == SERVER_UP.code() {
            if let Some(p) = &ev.peer {
                self.down.remove(p);
            }
        } else if id == GROUP_FAILOVER.code() {
            let down = ev.peer.as_ref().and_then(|p| self.down.get(p).copied());
            out.push((FAILOVER_COUNT, None, group.clone(), 1.0));
            if let Some((down_ms, timeout)) = down {
                if timeout > 0 {
                    out.push((
                        FAILOVER_PHASE_TIME,
                        Some("Detection"),
                        group.clone(),
                        timeout as f64,
                    ));
                }
                out.push((
                    FAILOVER_PHASE_TIME,
                    Some("Decision"),
                    group.clone(),
                    diff(down_ms, t),
                ));
            }
            self.takeovers.insert(
                group,
                Takeover {
                    failover_ms: t,
                    down,
                    activating_ms: None,
                },
            );
        } else if id == GROUP_ACTIVATING.code() {
            if let Some(tk) = self.takeovers.get_mut(&group) {
                tk.activating_ms = Some(t);
                out.push((
                    FAILOVER_PHASE_TIME,
                    Some("Claim"),
                    group,
                    diff(tk.failover_ms, t),
                ));
            }
        } else if id == GROUP_ACTIVATED.code() || id == GROUP_READOPTED.code() {
            self.active.insert(group.clone(), 1.0);
            if id == GROUP_ACTIVATED.code() {
                if let Some(tk) = self.takeovers.remove(&group) {
                    if let Some(a) = tk.activating_ms {
                        out.push((
                            FAILOVER_PHASE_TIME,
                            Some("Activation"),
                            group.clone(),
                            diff(a, t),
                        ));
                    }
                    let start = match tk.down {
                        Some((down_ms, timeout)) => down_ms.saturating_sub(timeout),
                        None => tk.failover_ms,
                    };
                    out.push((FAILOVER_PHASE_TIME, Some("Total"), group, diff(start, t)));
                }
            }
        } else if id == GROUP_ACTIVATION_FAILED.code() {
            self.takeovers.remove(&group);
        } else if id == GROUP_DEACTIVATING.code() {
            self.deactivating.insert(group, t);
        } else if id == GROUP_DEACTIVATED.code() {
            self.active.insert(group.clone(), 0.0);
            self.takeovers.remove(&group);
            if let Some(d) = self.deactivating.remove(&group) {
                out.push((FAILOVER_PHASE_TIME, Some("Deactivation"), group, diff(d, t)));
            }
        }
        out
    }
}

/// Values of one series in the current interval: value (in 1/100 ms) → count.
type Histogram = BTreeMap<i64, f64>;

/// Collects samples between two sends.
#[derive(Debug)]
pub struct Aggregator {
    opts: MetricsOptions,
    series: BTreeMap<SeriesKey, Histogram>,
    /// Samples held (not yet taken).
    pending: u64,
    pub tracker: FailoverTracker,
}

impl Aggregator {
    pub fn new(opts: MetricsOptions) -> Aggregator {
        Aggregator {
            tracker: FailoverTracker::new(&opts.groups),
            opts,
            series: BTreeMap::new(),
            pending: 0,
        }
    }

    pub fn pending(&self) -> u64 {
        self.pending
    }

    fn base_dims(&self) -> Vec<(&'static str, String)> {
        vec![
            ("Cluster", self.opts.cluster.clone()),
            ("Server", self.opts.server.clone()),
        ]
    }

    fn add(&mut self, key: SeriesKey, value: f64) {
        if !value.is_finite() {
            return;
        }
        let q = (value * 100.0).round() as i64;
        *self.series.entry(key).or_default().entry(q).or_insert(0.0) += 1.0;
        self.pending += 1;
    }

    /// Add one sample; false when its metric is not sent (not counted).
    pub fn add_sample(&mut self, s: &Sample) -> bool {
        let mut dims = self.base_dims();
        let (name, value) = match s {
            Sample::MonitorPollingTime { monitor, ms } => {
                if !self.opts.monitor_opted_in(monitor) {
                    return false;
                }
                dims.push(("Monitor", monitor.clone()));
                (MONITOR_POLLING_TIME, *ms)
            }
            Sample::HeartbeatRtt { peer, path, ms } => {
                if !self.opts.sends(MetricKind::HeartbeatRtt) {
                    return false;
                }
                dims.push(("Peer", peer.clone()));
                dims.push(("Path", path.to_string()));
                (HEARTBEAT_ROUND_TRIP, *ms)
            }
        };
        self.add(
            SeriesKey {
                name,
                unit: Unit::Milliseconds,
                dims,
            },
            value,
        );
        true
    }

    /// Feed an event to the failover tracking; returns the samples it added.
    pub fn on_event(&mut self, ev: &Event) -> u64 {
        let mut n = 0;
        for (name, phase, group, value) in self.tracker.on_event(ev) {
            let kind = if name == FAILOVER_COUNT {
                MetricKind::FailoverCount
            } else {
                MetricKind::FailoverPhaseTime
            };
            if !self.opts.sends(kind) {
                continue;
            }
            let mut dims = self.base_dims();
            dims.push(("Group", group));
            if let Some(p) = phase {
                dims.push(("Phase", p.to_string()));
            }
            let unit = if kind == MetricKind::FailoverCount {
                Unit::Count
            } else {
                Unit::Milliseconds
            };
            self.add(SeriesKey { name, unit, dims }, value);
            n += 1;
        }
        n
    }

    /// Everything collected so far as datums stamped `now_ms` (plus one `GroupActive`
    /// per known group), and the number of samples they hold. Empties the aggregator.
    pub fn take(&mut self, now_ms: u64) -> (Vec<Datum>, u64) {
        if self.opts.sends(MetricKind::GroupActive) {
            let groups: Vec<(String, f64)> = self
                .tracker
                .active
                .iter()
                .map(|(g, v)| (g.clone(), *v))
                .collect();
            for (g, v) in groups {
                let mut dims = self.base_dims();
                dims.push(("Group", g));
                self.add(
                    SeriesKey {
                        name: GROUP_ACTIVE,
                        unit: Unit::None,
                        dims,
                    },
                    v,
                );
            }
        }
        let res = if self.opts.high_resolution { 1 } else { 60 };
        let mut out = Vec::new();
        for (key, hist) in std::mem::take(&mut self.series) {
            let pairs: Vec<(f64, f64)> = hist
                .into_iter()
                .map(|(q, c)| (q as f64 / 100.0, c))
                .collect();
            for part in pairs.chunks(MAX_VALUES_PER_DATUM) {
                out.push(Datum {
                    name: key.name.to_string(),
                    unit: key.unit,
                    dims: key
                        .dims
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.clone()))
                        .collect(),
                    values: part.iter().map(|p| p.0).collect(),
                    counts: part.iter().map(|p| p.1).collect(),
                    timestamp_ms: now_ms,
                    storage_resolution: res,
                });
            }
        }
        let n = std::mem::take(&mut self.pending);
        (out, n)
    }
}

/// What the notifier hands the metrics worker.
#[derive(Debug)]
pub(crate) enum MetricInput {
    Sample(Sample),
    Event(Box<Event>),
}

/// A metrics sink with its options, ready to start with the notifier.
pub struct MetricsPipeline {
    pub options: MetricsOptions,
    pub sink: Arc<dyn MetricsSink>,
    pub clock: WallClock,
}

impl std::fmt::Debug for MetricsPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsPipeline")
            .field("sink", &self.sink.name())
            .field("options", &self.options)
            .finish()
    }
}

type Flight = Pin<Box<dyn Future<Output = FlightResult> + Send>>;

#[derive(Debug, Default)]
struct FlightResult {
    delivered: u64,
    dropped: u64,
    last_error: Option<String>,
    permanent: bool,
}

/// Deliver chunks, each with retries and jittered backoff.
async fn deliver_all(
    sink: Arc<dyn MetricsSink>,
    chunks: Vec<Vec<Datum>>,
    opts: NotifierOptions,
) -> FlightResult {
    let mut r = FlightResult::default();
    for c in chunks {
        let n: u64 = c.iter().map(Datum::samples).sum();
        let mut attempt = 1;
        loop {
            match sink.put(&c).await {
                Ok(()) => {
                    r.delivered += n;
                    break;
                }
                Err(e) => {
                    if !e.is_transient() || attempt >= opts.max_attempts {
                        tracing::warn!(sink = %sink.name(), samples = n, error = %e, "metric data dropped");
                        r.permanent |= !e.is_transient();
                        r.dropped += n;
                        r.last_error = Some(e.to_string());
                        break;
                    }
                    let delay = backoff(&opts, attempt);
                    tracing::debug!(sink = %sink.name(), attempt, error = %e, "PutMetricData failed; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }
    r
}

/// The task behind the metrics sink: aggregates what arrives, sends every interval
/// (one send in flight at a time; what arrives meanwhile waits for the next), and on
/// shutdown sends what it holds within the deadline.
pub(crate) struct MetricsWorker {
    pub(crate) rx: mpsc::Receiver<MetricInput>,
    pub(crate) agg: Aggregator,
    pub(crate) sink: Arc<dyn MetricsSink>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) opts: NotifierOptions,
    pub(crate) interval: Duration,
    pub(crate) clock: WallClock,
    pub(crate) shutdown: watch::Receiver<Option<Instant>>,
    /// Samples in the send under way.
    pub(crate) in_flight: u64,
}

impl MetricsWorker {
    pub(crate) async fn run(mut self) {
        let mut signal = self.shutdown.clone();
        let timed_out = {
            let serve = self.serve();
            tokio::pin!(serve);
            let deadline = tokio::select! {
                () = &mut serve => None,
                at = wait_deadline(&mut signal) => Some(at),
            };
            match deadline {
                None => false,
                Some(at) => tokio::time::timeout_at(at, &mut serve).await.is_err(),
            }
        };
        if timed_out {
            self.abandon();
        }
    }

    fn receive(&mut self, m: MetricInput) {
        match m {
            MetricInput::Sample(s) => {
                // Counted as queued by `metric`; a sample of a metric not sent is settled
                // at once (the handle filters these already).
                if !self.agg.add_sample(&s) {
                    self.counters.sub_queued(1);
                }
            }
            MetricInput::Event(ev) => {
                let n = self.agg.on_event(&ev);
                Counters::add(&self.counters.queued, n);
            }
        }
    }

    fn start_flight(&mut self) -> Option<Flight> {
        let before = self.agg.pending();
        let (datums, n) = self.agg.take((self.clock)());
        // GroupActive gauges are made here: count them as queued too.
        Counters::add(&self.counters.queued, n.saturating_sub(before));
        if datums.is_empty() {
            return None;
        }
        self.in_flight = n;
        Some(Box::pin(deliver_all(
            Arc::clone(&self.sink),
            chunk(datums),
            self.opts.clone(),
        )))
    }

    fn settle(&mut self, r: FlightResult) {
        let c = &self.counters;
        Counters::add(&c.delivered, r.delivered);
        Counters::add(&c.dropped, r.dropped);
        if r.dropped > 0 {
            Counters::add(&c.failed_batches, 1);
        }
        if r.permanent {
            Counters::add(&c.permanent, 1);
        }
        if let Some(e) = r.last_error {
            c.set_error(e);
        }
        c.sub_queued(self.in_flight);
        self.in_flight = 0;
    }

    async fn serve(&mut self) {
        let start = crate::clock::now() + self.interval;
        let mut tick = tokio::time::interval_at(start, self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut flight: Option<Flight> = None;
        let mut due = false;
        loop {
            if due && flight.is_none() {
                due = false;
                flight = self.start_flight();
            }
            tokio::select! {
                biased;
                _ = wait_deadline(&mut self.shutdown) => break,
                r = async { match flight.as_mut() { Some(f) => f.await, None => std::future::pending().await } } => {
                    flight = None;
                    self.settle(r);
                }
                m = self.rx.recv() => match m {
                    Some(m) => self.receive(m),
                    // Every handle is gone: send what is held, then end.
                    None => break,
                },
                _ = tick.tick() => due = true,
            }
        }
        // Closing: take what is still queued, finish the send under way, send the rest.
        self.rx.close();
        while let Ok(m) = self.rx.try_recv() {
            self.receive(m);
        }
        if let Some(f) = flight.take() {
            let r = f.await;
            self.settle(r);
        }
        if let Some(f) = self.start_flight() {
            let r = f.await;
            self.settle(r);
        }
    }

    /// The shutdown deadline passed: what is held or in flight is dropped.
    fn abandon(&mut self) {
        self.rx.close();
        let mut n = 0;
        while let Ok(m) = self.rx.try_recv() {
            if matches!(m, MetricInput::Sample(_)) {
                n += 1;
            }
        }
        n += self.agg.pending() + self.in_flight;
        self.in_flight = 0;
        let _ = self.agg.take(0);
        if n > 0 {
            let c = &self.counters;
            Counters::add(&c.dropped, n);
            Counters::add(&c.abandoned, n);
            c.sub_queued(n);
            let msg = format!("shutdown deadline passed with {n} metric sample(s) unsent");
            tracing::warn!(sink = %self.sink.name(), samples = n, "{msg}");
            c.set_error(msg);
        }
        // Nothing else may be counted as queued once the task is gone.
        let _ = self.counters.queued.swap(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
