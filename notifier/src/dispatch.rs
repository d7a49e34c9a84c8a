//! Fan-out of events to the sinks.
//!
//! Every sink has its own bounded queue and its own task, so a slow or unreachable sink
//! never delays another, and [`NotifierHandle::publish`] never blocks or awaits: when a
//! sink's queue is full the event is dropped for that sink and counted (the alert log
//! still has it). The task takes what is queued (up to `max_batch`), delivers it, retries
//! transient failures with jittered exponential backoff and drops the batch on a
//! permanent failure or when its attempts are used up.
//!
//! All timing uses `tokio::time`, so it follows a paused test clock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_core::events::EVENTS_DROPPED;
use baton_core::{Event, Severity};
use rand::Rng;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::sink::{EventSink, SinkError};

/// How long [`NotifierHandle::shutdown`] waits past its deadline for the sink tasks to
/// notice it before it aborts them (only a sink that blocks its thread needs this).
const SHUTDOWN_GRACE: Duration = Duration::from_millis(250);

/// Stand-in for an unbounded shutdown deadline (about 30 years).
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// Tuning of the notifier. Zero sizes and attempts are raised to 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifierOptions {
    /// Events each sink's queue holds before new ones are dropped for it.
    pub queue_len: usize,
    /// Most events handed to one `deliver` call.
    pub max_batch: usize,
    /// Delay before the first retry; doubles per attempt, with jitter.
    pub retry_base: Duration,
    /// Upper bound of a retry delay.
    pub retry_max: Duration,
    /// Delivery attempts of one batch, the first included.
    pub max_attempts: u32,
    /// Fold repeats of the same event id and subject (group, resource, monitor, peer)
    /// whose `time_ms` is within this window of the first occurrence, when they wait in
    /// the same batch. The first occurrence is delivered with the fields `occurrences`,
    /// `last_seq` and `last_time_ms`. Zero (the default) turns folding off.
    pub coalesce_window: Duration,
}

impl Default for NotifierOptions {
    fn default() -> Self {
        NotifierOptions {
            queue_len: 1024,
            max_batch: 100,
            retry_base: Duration::from_millis(200),
            retry_max: Duration::from_secs(10),
            max_attempts: 5,
            coalesce_window: Duration::ZERO,
        }
    }
}

impl NotifierOptions {
    fn normalized(mut self) -> Self {
        self.queue_len = self.queue_len.max(1);
        self.max_batch = self.max_batch.max(1);
        self.max_attempts = self.max_attempts.max(1);
        self.retry_max = self.retry_max.max(self.retry_base);
        self
    }
}

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

#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    dropped: AtomicU64,
    failed_batches: AtomicU64,
    queued: AtomicU64,
    coalesced: AtomicU64,
    /// Dropped at the shutdown deadline.
    abandoned: AtomicU64,
    /// `dropped` as of the last [`NotifierHandle::drop_events`].
    reported_dropped: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Counters {
    fn set_error(&self, msg: String) {
        // A poisoned lock only means a panic elsewhere while holding it; the value is
        // still a plain Option<String>.
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(msg);
    }

    fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn sub_queued(&self, n: u64) {
        // Saturating: the shutdown sweep may have zeroed it already.
        let _ = self
            .queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
                Some(q.saturating_sub(n))
            });
    }

    /// Move whatever is still counted as queued to dropped (the sink task is gone);
    /// `at_shutdown` also counts it as left undelivered by the shutdown.
    fn sweep_queued(&self, at_shutdown: bool) {
        let q = self.queued.swap(0, Ordering::Relaxed);
        if q > 0 {
            Counters::add(&self.dropped, q);
            if at_shutdown {
                Counters::add(&self.abandoned, q);
            }
        }
    }
}

struct Slot {
    name: String,
    min_severity: Severity,
    tx: mpsc::Sender<Event>,
    counters: Arc<Counters>,
}

struct Inner {
    slots: Vec<Slot>,
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
        let opts = opts.normalized();
        let (shutdown_tx, shutdown_rx) = watch::channel(None);
        let (done_tx, done_rx) = watch::channel(false);
        let mut slots = Vec::with_capacity(sinks.len());
        let mut workers = Vec::with_capacity(sinks.len());
        for sink in sinks {
            let (tx, rx) = mpsc::channel(opts.queue_len);
            let counters = Arc::new(Counters::default());
            slots.push(Slot {
                name: sink.name().to_string(),
                min_severity: sink.min_severity(),
                tx,
                counters: Arc::clone(&counters),
            });
            workers.push(Worker {
                sink,
                rx,
                counters,
                opts: opts.clone(),
                shutdown: shutdown_rx.clone(),
                batch: Batch::default(),
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
        for slot in &self.inner.slots {
            if ev.severity < slot.min_severity {
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

    /// Counters of every sink, in the order the sinks were given.
    pub fn stats(&self) -> Vec<SinkStats> {
        self.inner
            .slots
            .iter()
            .map(|s| {
                let c = &s.counters;
                SinkStats {
                    name: s.name.clone(),
                    delivered: c.delivered.load(Ordering::Relaxed),
                    dropped: c.dropped.load(Ordering::Relaxed),
                    failed_batches: c.failed_batches.load(Ordering::Relaxed),
                    queued: c.queued.load(Ordering::Relaxed),
                    coalesced: c.coalesced.load(Ordering::Relaxed),
                    last_error: c.last_error(),
                }
            })
            .collect()
    }

    /// One `BTN-5001` (events dropped) event per sink that dropped events since the
    /// previous call, for the agent to record and publish on a timer. Not stamped
    /// (`seq`, `time_ms`, `server` are left for the caller).
    pub fn drop_events(&self) -> Vec<Event> {
        let mut out = Vec::new();
        for s in &self.inner.slots {
            let c = &s.counters;
            let total = c.dropped.load(Ordering::Relaxed);
            let before = c.reported_dropped.fetch_max(total, Ordering::Relaxed);
            if total > before {
                let new = total - before;
                let mut msg = format!("sink {} dropped {new} event(s) ({total} in total)", s.name);
                if let Some(err) = c.last_error() {
                    msg.push_str(&format!("; last error: {err}"));
                }
                out.push(
                    Event::new(&EVENTS_DROPPED, msg)
                        .field("sink", s.name.clone())
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
        let now = Instant::now();
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
            for s in &self.inner.slots {
                s.counters.sweep_queued(true);
            }
        }
        let sinks: Vec<SinkShutdown> = self
            .inner
            .slots
            .iter()
            .map(|s| SinkShutdown {
                name: s.name.clone(),
                undelivered: s.counters.abandoned.load(Ordering::Relaxed),
            })
            .collect();
        ShutdownReport {
            timed_out: !finished || sinks.iter().any(|s| s.undelivered > 0),
            sinks,
        }
    }
}

/// Wait until shutdown is requested and return its deadline. Never returns when every
/// handle is gone without a shutdown (the queues then close by themselves).
async fn wait_deadline(rx: &mut watch::Receiver<Option<Instant>>) -> Instant {
    if let Ok(v) = rx.wait_for(Option::is_some).await {
        if let Some(at) = *v {
            return at;
        }
    }
    std::future::pending().await
}

/// Jittered exponential backoff before retry number `attempt` (1 = first retry):
/// half of `min(retry_max, retry_base * 2^(attempt-1))` plus a random part of the other half.
fn backoff(opts: &NotifierOptions, attempt: u32) -> Duration {
    let exp = opts
        .retry_base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(24))
        .min(opts.retry_max);
    let half = exp / 2;
    let span = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    let jitter = Duration::from_nanos(rand::thread_rng().gen_range(0..=span));
    half + jitter
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
        self.items.push(Pending {
            last_seq: ev.seq,
            last_time_ms: ev.time_ms,
            occurrences: 1,
            event: ev,
        });
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
                    }
                };
                let Some(first) = next else { return };
                self.fill(first);
            }
            self.deliver_batch().await;
        }
    }

    /// Start a batch with `first` and add what is already queued, up to `max_batch`
    /// items (folded repeats do not count; at most `queue_len` events are taken).
    fn fill(&mut self, first: Event) {
        let window = self.opts.coalesce_window;
        let cap = self.opts.max_batch.max(self.opts.queue_len);
        self.batch.push(first, window);
        let mut taken = 1;
        while self.batch.len() < self.opts.max_batch && taken < cap {
            match self.rx.try_recv() {
                Ok(ev) => {
                    self.batch.push(ev, window);
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
                Err(e @ SinkError::Permanent(_)) => break Err(e.to_string()),
                Err(e @ SinkError::Transient(_)) => {
                    if attempt >= self.opts.max_attempts {
                        break Err(format!("{e} (gave up after {attempt} attempts)"));
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
            Err(msg) => {
                Counters::add(&c.dropped, total);
                Counters::add(&c.failed_batches, 1);
                tracing::warn!(sink = %self.sink.name(), events = total, error = %msg, "notification batch dropped");
                c.set_error(msg);
            }
        }
        c.sub_queued(total);
        self.batch.clear();
    }

    /// The shutdown deadline passed: count the batch in flight and the queue as dropped.
    fn abandon(&mut self) {
        self.rx.close();
        let mut n = self.batch.events;
        self.batch.clear();
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
