//! Fan-out of events to the sinks.
//!
//! Every sink has its own bounded queue and its own task, so a slow or unreachable sink
//! never delays another, and [`NotifierHandle::publish`] never blocks or awaits: when a
//! sink's queue is full the event is dropped for that sink and counted (the alert log
//! still has it). The task takes what is queued (up to `max_batch`), delivers it, retries
//! transient failures with jittered exponential backoff and drops the batch on a
//! permanent failure or when its attempts are used up.
//!
//! Flapping alerts: with a `coalesce_window`, an event whose subject (id, group,
//! resource, monitor, peer) was delivered less than the window ago is held back; when
//! the window ends, the held repeats go out as one event with `occurrences`,
//! `last_seq` and `last_time_ms`. The first occurrence is never delayed, and shutdown
//! flushes what is held.
//!
//! Metrics (optional, [`Notifier::start_with_metrics`]) have their own bounded queue and
//! task ([`crate::metrics`]); [`NotifierHandle::metric`] never blocks either.
//!
//! All timing uses `tokio::time`, so it follows a paused test clock.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use baton_core::config::MetricKind;
use baton_core::events::{EVENTS_DROPPED, METRICS_DROPPED, SINK_REJECTED};
use baton_core::{Event, Severity};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio::time::Instant;

pub use crate::delivery::NotifierOptions;
use crate::delivery::{backoff, wait_deadline, Counters};
use crate::metrics::{
    Aggregator, MetricInput, MetricsOptions, MetricsPipeline, MetricsWorker, Sample,
};
use crate::sink::{EventSink, SinkError};

/// How long [`NotifierHandle::shutdown`] waits past its deadline for the sink tasks to
/// notice it before it aborts them (only a sink that blocks its thread needs this).
const SHUTDOWN_GRACE: Duration = Duration::from_millis(250);

/// Stand-in for an unbounded shutdown deadline (about 30 years).
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// Counters of one sink, for `baton status`.
///
/// Every event queued for the sink ends up in exactly one of `delivered`, `coalesced`
/// (folded into another delivered event) or `dropped`; until then it is `queued`.
/// `dropped` also counts events refused because the queue was full or closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SinkStats {
    pub name: String,
    pub delivered: u64,
    pub dropped: u64,
    pub failed_batches: u64,
    pub queued: u64,
    pub coalesced: u64,
    pub last_error: Option<String>,
}

/// What [`NotifierHandle::shutdown`] could not deliver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShutdownReport {
    /// The deadline passed with events still undelivered.
    pub timed_out: bool,
    pub sinks: Vec<SinkShutdown>,
}

impl ShutdownReport {
    /// Events left undelivered, all sinks together.
    pub fn undelivered(&self) -> u64 {
        self.sinks.iter().map(|s| s.undelivered).sum()
    }
}

/// One sink's share of a [`ShutdownReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SinkShutdown {
    pub name: String,
    /// Events still queued or in flight at the deadline (also counted in `dropped`).
    pub undelivered: u64,
}

struct Slot {
    name: String,
    min_severity: Severity,
    sink: Arc<dyn EventSink>,
    tx: mpsc::Sender<Event>,
    counters: Arc<Counters>,
}

/// The metrics sink's queue.
struct MetricsSlot {
    name: String,
    opts: MetricsOptions,
    tx: mpsc::Sender<MetricInput>,
    counters: Arc<Counters>,
}

struct Inner {
    slots: Vec<Slot>,
    metrics: Option<MetricsSlot>,
    /// `[metrics.prometheus]`: fed with every sample and event, read by `GET /metrics`.
    prometheus: Option<Arc<crate::prometheus::Prometheus>>,
    /// `Some(deadline)` once shutdown was requested.
    shutdown_tx: watch::Sender<Option<Instant>>,
    /// Set to true by the supervisor when every sink task has ended.
    done_rx: watch::Receiver<bool>,
    supervisor: AbortHandle,
}

/// Starts the sink tasks.
#[derive(Debug)]
pub struct Notifier;

impl Notifier {
    /// Start one queue and one task per sink. The returned `JoinHandle` ends when every
    /// sink task has ended (after [`NotifierHandle::shutdown`], or once every handle is
    /// dropped and the queues are drained); aborting it aborts the sink tasks.
    ///
    /// # Panics
    /// When called outside a Tokio runtime (like `tokio::spawn`).
    pub fn start(
        sinks: Vec<Arc<dyn EventSink>>,
        opts: NotifierOptions,
    ) -> (NotifierHandle, JoinHandle<()>) {
        Notifier::start_with_metrics(sinks, None, opts)
    }

    /// [`Notifier::start`], plus a metrics sink fed by [`NotifierHandle::metric`] and by
    /// the published events (failover tracking).
    pub fn start_with_metrics(
        sinks: Vec<Arc<dyn EventSink>>,
        metrics: Option<MetricsPipeline>,
        opts: NotifierOptions,
    ) -> (NotifierHandle, JoinHandle<()>) {
        Notifier::start_with_prometheus(sinks, metrics, None, opts)
    }

    /// [`Notifier::start_with_metrics`], plus the Prometheus figures, which get every
    /// sample (every monitor's polling time) and every published event.
    pub fn start_with_prometheus(
        sinks: Vec<Arc<dyn EventSink>>,
        metrics: Option<MetricsPipeline>,
        prometheus: Option<Arc<crate::prometheus::Prometheus>>,
        opts: NotifierOptions,
    ) -> (NotifierHandle, JoinHandle<()>) {
        let opts = opts.normalized();
        let (shutdown_tx, shutdown_rx) = watch::channel(None);
        let (done_tx, done_rx) = watch::channel(false);
        let mut slots = Vec::with_capacity(sinks.len());
        let mut workers = Vec::with_capacity(sinks.len());
        for sink in sinks {
            let (tx, rx) = mpsc::channel(opts.queue_len);
            let counters = Arc::new(Counters::default());
            let mut wopts = opts.clone();
            if let Some(m) = sink.max_batch() {
                wopts.max_batch = wopts.max_batch.min(m.max(1));
            }
            slots.push(Slot {
                name: sink.name().to_string(),
                min_severity: sink.min_severity(),
                sink: Arc::clone(&sink),
                tx,
                counters: Arc::clone(&counters),
            });
            workers.push(Worker {
                sink,
                rx,
                counters,
                opts: wopts,
                shutdown: shutdown_rx.clone(),
                batch: Batch::default(),
                recent: HashMap::new(),
            });
        }
        let mut metrics_slot = None;
        let mut metrics_worker = None;
        if let Some(p) = metrics {
            let (tx, rx) = mpsc::channel(p.options.queue_len.max(1));
            let counters = Arc::new(Counters::default());
            let name = p.sink.name().to_string();
            metrics_worker = Some(MetricsWorker {
                rx,
                agg: Aggregator::new(p.options.clone()),
                sink: p.sink,
                counters: Arc::clone(&counters),
                opts: opts.clone(),
                interval: p.options.interval.max(Duration::from_millis(10)),
                clock: p.clock,
                shutdown: shutdown_rx.clone(),
                in_flight: 0,
            });
            metrics_slot = Some(MetricsSlot {
                name,
                opts: p.options,
                tx,
                counters,
            });
        }
        let supervisor = tokio::spawn(async move {
            let mut set = JoinSet::new();
            let mut by_id = HashMap::new();
            for w in workers {
                let name = w.sink.name().to_string();
                let counters = Arc::clone(&w.counters);
                let h = set.spawn(w.run());
                by_id.insert(h.id(), (name, counters));
            }
            if let Some(w) = metrics_worker {
                let name = w.sink.name().to_string();
                let counters = Arc::clone(&w.counters);
                let h = set.spawn(w.run());
                by_id.insert(h.id(), (name, counters));
            }
            while let Some(res) = set.join_next_with_id().await {
                if let Err(e) = res {
                    if let Some((name, counters)) = by_id.get(&e.id()) {
                        // Its queue is gone with it: publish counts new events as dropped.
                        counters.set_error(format!("sink task ended abnormally: {e}"));
                        counters.sweep_queued(false);
                        tracing::error!(sink = %name, error = %e, "notifier task of a sink ended abnormally; its events are dropped from now on");
                    }
                }
            }
            let _ = done_tx.send(true);
        });
        let handle = NotifierHandle {
            inner: Arc::new(Inner {
                slots,
                metrics: metrics_slot,
                prometheus,
                shutdown_tx,
                done_rx,
                supervisor: supervisor.abort_handle(),
            }),
        };
        (handle, supervisor)
    }
}

/// The publishing side of the notifier; cheap to clone.
#[derive(Clone)]
pub struct NotifierHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NotifierHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifierHandle")
            .field(
                "sinks",
                &self
                    .inner
                    .slots
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl NotifierHandle {
    /// Queue `ev` for every sink whose minimum severity it reaches. Never blocks or
    /// awaits (callable from sync code and any thread): a sink whose queue is full, or
    /// that is shut down, does not get the event and counts it as dropped.
    pub fn publish(&self, ev: Event) {
        if let Some(p) = &self.inner.prometheus {
            p.event(&ev);
        }
        if let Some(m) = &self.inner.metrics {
            if m.opts.wants_event(&ev) {
                if let Err(e) = m.tx.try_send(MetricInput::Event(Box::new(ev.clone()))) {
                    Counters::add(&m.counters.dropped, 1);
                    if matches!(e, mpsc::error::TrySendError::Full(_)) {
                        tracing::debug!(sink = %m.name, event_id = %ev.id, "event dropped for the metrics queue");
                    }
                }
            }
        }
        for slot in &self.inner.slots {
            if ev.severity < slot.min_severity || !slot.sink.accepts(&ev) {
                continue;
            }
            // Count before sending so the sink task can never decrement first.
            Counters::add(&slot.counters.queued, 1);
            if let Err(e) = slot.tx.try_send(ev.clone()) {
                slot.counters.sub_queued(1);
                Counters::add(&slot.counters.dropped, 1);
                let why = match e {
                    mpsc::error::TrySendError::Full(_) => "queue full",
                    mpsc::error::TrySendError::Closed(_) => "sink stopped",
                };
                tracing::debug!(sink = %slot.name, event_id = %ev.id, seq = ev.seq, why, "event dropped for sink");
            }
        }
    }

    /// Hand a metric sample to the metrics sink, if one is configured and sends this
    /// metric (and, for polling times, this monitor). Never blocks: a full queue drops
    /// the sample and counts it.
    pub fn metric(&self, s: Sample) {
        if let Some(p) = &self.inner.prometheus {
            p.sample(&s);
        }
        let Some(m) = &self.inner.metrics else {
            return;
        };
        let wanted = match &s {
            Sample::MonitorPollingTime { monitor, .. } => m.opts.monitor_opted_in(monitor),
            other => m.opts.sends(other.kind()),
        };
        if !wanted {
            return;
        }
        Counters::add(&m.counters.queued, 1);
        if m.tx.try_send(MetricInput::Sample(s)).is_err() {
            m.counters.sub_queued(1);
            Counters::add(&m.counters.dropped, 1);
        }
    }

    /// Is a metrics sink configured that sends `kind` (or Prometheus, which keeps all)?
    pub fn wants_metric(&self, kind: MetricKind) -> bool {
        self.inner.prometheus.is_some()
            || self
                .inner
                .metrics
                .as_ref()
                .is_some_and(|m| m.opts.sends(kind))
    }

    /// Is the polling time of `monitor` sent (or kept for Prometheus)?
    pub fn wants_polling_time(&self, monitor: &str) -> bool {
        self.inner.prometheus.is_some()
            || self
                .inner
                .metrics
                .as_ref()
                .is_some_and(|m| m.opts.monitor_opted_in(monitor))
    }

    /// The Prometheus figures, when `[metrics.prometheus]` is configured.
    pub fn prometheus(&self) -> Option<&Arc<crate::prometheus::Prometheus>> {
        self.inner.prometheus.as_ref()
    }

    /// Every queue: the event sinks in the order given, then the metrics sink.
    fn all_counters(&self) -> Vec<(&str, &Arc<Counters>, bool)> {
        let mut v: Vec<(&str, &Arc<Counters>, bool)> = self
            .inner
            .slots
            .iter()
            .map(|s| (s.name.as_str(), &s.counters, false))
            .collect();
        if let Some(m) = &self.inner.metrics {
            v.push((m.name.as_str(), &m.counters, true));
        }
        v
    }

    /// Counters of every sink, in the order the sinks were given, then the metrics sink
    /// (whose counts are metric samples).
    pub fn stats(&self) -> Vec<SinkStats> {
        self.all_counters()
            .into_iter()
            .map(|(name, c, _)| SinkStats {
                name: name.to_string(),
                delivered: c.delivered.load(Ordering::Relaxed),
                dropped: c.dropped.load(Ordering::Relaxed),
                failed_batches: c.failed_batches.load(Ordering::Relaxed),
                queued: c.queued.load(Ordering::Relaxed),
                coalesced: c.coalesced.load(Ordering::Relaxed),
                last_error: c.last_error(),
            })
            .collect()
    }

    /// One `BTN-5001` (events dropped) event per sink that dropped events since the
    /// previous call, for the agent to record and publish on a timer. Not stamped
    /// (`seq`, `time_ms`, `server` are left for the caller).
    ///
    /// A sink whose endpoint refused a batch for good since the previous call gets one
    /// `BTN-5005` (sink rejects deliveries) instead; the metrics sink's drops are
    /// `BTN-5003` (metric samples dropped).
    pub fn drop_events(&self) -> Vec<Event> {
        let mut out = Vec::new();
        for (name, c, is_metrics) in self.all_counters() {
            let total = c.dropped.load(Ordering::Relaxed);
            let before = c.reported_dropped.fetch_max(total, Ordering::Relaxed);
            let perm = c.permanent.load(Ordering::Relaxed);
            let perm_before = c.reported_permanent.fetch_max(perm, Ordering::Relaxed);
            if total > before {
                let new = total - before;
                let what = if is_metrics {
                    "metric sample(s)"
                } else {
                    "event(s)"
                };
                let mut msg = format!("sink {name} dropped {new} {what} ({total} in total)");
                if let Some(err) = c.last_error() {
                    msg.push_str(&format!("; last error: {err}"));
                }
                let def = if perm > perm_before {
                    &SINK_REJECTED
                } else if is_metrics {
                    &METRICS_DROPPED
                } else {
                    &EVENTS_DROPPED
                };
                out.push(
                    Event::new(def, msg)
                        .field("sink", name.to_string())
                        .field("dropped", new)
                        .field("total_dropped", total),
                );
            }
        }
        out
    }

    /// Close the queues, let every sink deliver what is queued until `deadline` from
    /// now, and report (and count as dropped) what was still undelivered then. Events
    /// published afterwards are dropped. Delivery in flight at the deadline is cancelled.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let now = crate::clock::now();
        // A huge deadline means "wait as long as it takes": cap it instead of overflowing.
        let at = now.checked_add(deadline).unwrap_or(now + FAR_FUTURE);
        self.inner.shutdown_tx.send_replace(Some(at));
        let mut done = self.inner.done_rx.clone();
        let give_up = at.checked_add(SHUTDOWN_GRACE).unwrap_or(at);
        let finished = matches!(
            tokio::time::timeout_at(give_up, done.wait_for(|d| *d)).await,
            Ok(Ok(_))
        );
        if !finished {
            // A sink task did not honour the deadline (or the supervisor was aborted).
            self.inner.supervisor.abort();
            for (_, c, _) in self.all_counters() {
                c.sweep_queued(true);
            }
        }
        let sinks: Vec<SinkShutdown> = self
            .all_counters()
            .into_iter()
            .map(|(name, c, _)| SinkShutdown {
                name: name.to_string(),
                undelivered: c.abandoned.load(Ordering::Relaxed),
            })
            .collect();
        ShutdownReport {
            timed_out: !finished || sinks.iter().any(|s| s.undelivered > 0),
            sinks,
        }
    }
}

/// One queued event, possibly standing for several folded repeats.
#[derive(Debug)]
struct Pending {
    event: Event,
    occurrences: u64,
    last_seq: u64,
    last_time_ms: u64,
}

/// The events one `deliver` call gets. Folding of repeats happens here.
#[derive(Debug, Default)]
struct Batch {
    items: Vec<Pending>,
    /// Queued events this batch accounts for (items plus folded repeats).
    events: u64,
}

fn same_subject(a: &Event, b: &Event) -> bool {
    a.id == b.id
        && a.group == b.group
        && a.resource == b.resource
        && a.monitor == b.monitor
        && a.peer == b.peer
}

/// What makes two events "the same alert" for coalescing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SubjectKey {
    id: String,
    group: Option<String>,
    resource: Option<String>,
    monitor: Option<String>,
    peer: Option<String>,
}

impl SubjectKey {
    fn of(ev: &Event) -> SubjectKey {
        SubjectKey {
            id: ev.id.clone(),
            group: ev.group.clone(),
            resource: ev.resource.clone(),
            monitor: ev.monitor.clone(),
            peer: ev.peer.clone(),
        }
    }
}

/// A subject delivered recently, and the repeats held back since.
#[derive(Debug)]
struct Recent {
    sent_at: Instant,
    held: Option<Pending>,
}

impl Pending {
    fn new(ev: Event) -> Pending {
        Pending {
            last_seq: ev.seq,
            last_time_ms: ev.time_ms,
            occurrences: 1,
            event: ev,
        }
    }

    fn fold(&mut self, ev: &Event) {
        self.occurrences += 1;
        self.last_seq = ev.seq;
        self.last_time_ms = ev.time_ms;
    }
}

impl Batch {
    fn push(&mut self, ev: Event, window: Duration) {
        self.events += 1;
        if !window.is_zero() {
            let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
            if let Some(p) = self
                .items
                .iter_mut()
                .rev()
                .find(|p| same_subject(&p.event, &ev))
            {
                if ev.time_ms.saturating_sub(p.event.time_ms) <= window_ms {
                    p.occurrences += 1;
                    p.last_seq = ev.seq;
                    p.last_time_ms = ev.time_ms;
                    return;
                }
            }
        }
        self.items.push(Pending::new(ev));
    }

    /// Add held repeats as one item.
    fn push_pending(&mut self, p: Pending) {
        self.events += p.occurrences;
        self.items.push(p);
    }

    fn has_subject(&self, key: &SubjectKey) -> bool {
        self.items.iter().any(|p| SubjectKey::of(&p.event) == *key)
    }

    fn len(&self) -> usize {
        self.items.len()
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn clear(&mut self) {
        self.items.clear();
        self.events = 0;
    }

    fn to_events(&self) -> Vec<Event> {
        self.items
            .iter()
            .map(|p| {
                let mut ev = p.event.clone();
                if p.occurrences > 1 {
                    ev.fields.insert("occurrences".into(), p.occurrences.into());
                    ev.fields.insert("last_seq".into(), p.last_seq.into());
                    ev.fields
                        .insert("last_time_ms".into(), p.last_time_ms.into());
                }
                ev
            })
            .collect()
    }
}

struct Worker {
    sink: Arc<dyn EventSink>,
    rx: mpsc::Receiver<Event>,
    counters: Arc<Counters>,
    opts: NotifierOptions,
    shutdown: watch::Receiver<Option<Instant>>,
    /// The batch being delivered; kept here so that what a cancelled delivery held is
    /// still accounted for.
    batch: Batch,
    /// Subjects delivered within the coalescing window, with their held repeats.
    recent: HashMap<SubjectKey, Recent>,
}

impl Worker {
    async fn run(mut self) {
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

    /// Deliver batches until the queue is closed and drained. On the shutdown signal the
    /// queue is closed (publish then fails) and what it holds is still delivered.
    async fn serve(&mut self) {
        let mut closing = false;
        loop {
            if self.batch.is_empty() {
                self.release_held(crate::clock::now(), closing);
            }
            if self.batch.is_empty() {
                let hold_until = self.next_release();
                let next = if closing {
                    self.rx.recv().await
                } else {
                    tokio::select! {
                        biased;
                        _ = wait_deadline(&mut self.shutdown) => {
                            self.rx.close();
                            closing = true;
                            continue;
                        }
                        ev = self.rx.recv() => ev,
                        _ = async {
                            match hold_until {
                                Some(t) => tokio::time::sleep_until(t).await,
                                None => std::future::pending().await,
                            }
                        } => continue,
                    }
                };
                let Some(first) = next else {
                    // Queue closed and drained: flush what is held, then end.
                    self.release_held(crate::clock::now(), true);
                    if self.batch.is_empty() {
                        return;
                    }
                    self.deliver_batch().await;
                    continue;
                };
                self.fill(first);
                if self.batch.is_empty() {
                    // Everything taken was held back as a repeat.
                    continue;
                }
            }
            self.deliver_batch().await;
        }
    }

    /// Move held repeats whose window has ended (all of them when `all`) into the batch,
    /// and forget subjects whose window ended with nothing held.
    fn release_held(&mut self, now: Instant, all: bool) {
        let window = self.opts.coalesce_window;
        let mut released = Vec::new();
        self.recent.retain(|_, r| {
            let expired = now >= r.sent_at + window;
            if expired || all {
                if let Some(p) = r.held.take() {
                    released.push(p);
                    // The summary restarts the window.
                    r.sent_at = now;
                    return true;
                }
            }
            !expired
        });
        // In the order of their last occurrence, so that the latest state comes last.
        released.sort_by_key(|p| p.last_seq);
        for p in released {
            self.batch.push_pending(p);
        }
    }

    /// When the next held repeat is due.
    fn next_release(&self) -> Option<Instant> {
        let window = self.opts.coalesce_window;
        self.recent
            .values()
            .filter(|r| r.held.is_some())
            .map(|r| r.sent_at + window)
            .min()
    }

    /// Take `ev` into the batch, or hold it back as a repeat of a subject delivered
    /// within the coalescing window (and not in this batch).
    fn admit(&mut self, ev: Event) {
        let window = self.opts.coalesce_window;
        if !window.is_zero() {
            let key = SubjectKey::of(&ev);
            if let Some(r) = self.recent.get_mut(&key) {
                if crate::clock::now() < r.sent_at + window {
                    if !self.batch.has_subject(&key) {
                        match &mut r.held {
                            Some(p) => p.fold(&ev),
                            None => r.held = Some(Pending::new(ev)),
                        }
                        return;
                    }
                } else if let Some(p) = r.held.take() {
                    // The window ended while a batch was out: the held repeats go first,
                    // so that the newest occurrence stays last.
                    self.batch.push_pending(p);
                }
            }
        }
        self.batch.push(ev, window);
    }

    /// Events held back as repeats.
    fn held_events(&self) -> u64 {
        self.recent
            .values()
            .filter_map(|r| r.held.as_ref())
            .map(|p| p.occurrences)
            .sum()
    }

    /// Start a batch with `first` and add what is already queued, up to `max_batch`
    /// items (folded repeats do not count; at most `queue_len` events are taken).
    fn fill(&mut self, first: Event) {
        let cap = self.opts.max_batch.max(self.opts.queue_len);
        self.admit(first);
        let mut taken = 1;
        while self.batch.len() < self.opts.max_batch && taken < cap {
            match self.rx.try_recv() {
                Ok(ev) => {
                    self.admit(ev);
                    taken += 1;
                }
                Err(_) => break,
            }
        }
    }

    async fn deliver_batch(&mut self) {
        let events = self.batch.to_events();
        let total = self.batch.events;
        let mut attempt: u32 = 1;
        let outcome = loop {
            match self.sink.deliver(&events).await {
                Ok(()) => break Ok(()),
                Err(e @ SinkError::Permanent(_)) => break Err((e.to_string(), true)),
                Err(e @ SinkError::Transient(_)) => {
                    if attempt >= self.opts.max_attempts {
                        break Err((format!("{e} (gave up after {attempt} attempts)"), false));
                    }
                    self.counters.set_error(e.to_string());
                    let delay = backoff(&self.opts, attempt);
                    tracing::debug!(sink = %self.sink.name(), attempt, error = %e, delay_ms = delay.as_millis() as u64, "delivery failed; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        };
        // No await from here on: counters and batch change together.
        let c = &self.counters;
        match outcome {
            Ok(()) => {
                let n = events.len() as u64;
                Counters::add(&c.delivered, n);
                Counters::add(&c.coalesced, total.saturating_sub(n));
            }
            Err((msg, permanent)) => {
                Counters::add(&c.dropped, total);
                Counters::add(&c.failed_batches, 1);
                if permanent {
                    Counters::add(&c.permanent, 1);
                }
                tracing::warn!(sink = %self.sink.name(), events = total, error = %msg, "notification batch dropped");
                c.set_error(msg);
            }
        }
        c.sub_queued(total);
        if !self.opts.coalesce_window.is_zero() {
            let now = crate::clock::now();
            for p in &self.batch.items {
                self.recent
                    .entry(SubjectKey::of(&p.event))
                    .and_modify(|r| r.sent_at = now)
                    .or_insert(Recent {
                        sent_at: now,
                        held: None,
                    });
            }
        }
        self.batch.clear();
    }

    /// The shutdown deadline passed: count the batch in flight and the queue as dropped.
    fn abandon(&mut self) {
        self.rx.close();
        let mut n = self.batch.events + self.held_events();
        self.batch.clear();
        self.recent.clear();
        while self.rx.try_recv().is_ok() {
            n += 1;
        }
        if n > 0 {
            let c = &self.counters;
            Counters::add(&c.dropped, n);
            Counters::add(&c.abandoned, n);
            c.sub_queued(n);
            let msg = format!("shutdown deadline passed with {n} event(s) undelivered");
            tracing::warn!(sink = %self.sink.name(), events = n, "{msg}");
            c.set_error(msg);
        }
    }
}

#[cfg(test)]
mod tests;
