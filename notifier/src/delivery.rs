//! What the event sinks and the metrics sink share: the notifier's options, the
//! per-sink counters, the shutdown deadline and the retry backoff. Both `dispatch` (the
//! event fan-out) and `metrics` (the metrics pipeline) use it; neither uses the other's
//! internals.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;
use tokio::sync::watch;
use tokio::time::Instant;

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
    pub(crate) fn normalized(mut self) -> Self {
        self.queue_len = self.queue_len.max(1);
        self.max_batch = self.max_batch.max(1);
        self.max_attempts = self.max_attempts.max(1);
        self.retry_max = self.retry_max.max(self.retry_base);
        self
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) delivered: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) failed_batches: AtomicU64,
    pub(crate) queued: AtomicU64,
    pub(crate) coalesced: AtomicU64,
    /// Dropped at the shutdown deadline.
    pub(crate) abandoned: AtomicU64,
    /// Batches dropped on a permanent error.
    pub(crate) permanent: AtomicU64,
    /// `dropped` as of the last [`NotifierHandle::drop_events`].
    pub(crate) reported_dropped: AtomicU64,
    /// `permanent` as of the last [`NotifierHandle::drop_events`].
    pub(crate) reported_permanent: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Counters {
    pub(crate) fn set_error(&self, msg: String) {
        // A poisoned lock only means a panic elsewhere while holding it; the value is
        // still a plain Option<String>.
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(msg);
    }

    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn sub_queued(&self, n: u64) {
        // Saturating: the shutdown sweep may have zeroed it already.
        let _ = self
            .queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
                Some(q.saturating_sub(n))
            });
    }

    /// Move whatever is still counted as queued to dropped (the sink task is gone);
    /// `at_shutdown` also counts it as left undelivered by the shutdown.
    pub(crate) fn sweep_queued(&self, at_shutdown: bool) {
        let q = self.queued.swap(0, Ordering::Relaxed);
        if q > 0 {
            Counters::add(&self.dropped, q);
            if at_shutdown {
                Counters::add(&self.abandoned, q);
            }
        }
    }
}

/// Wait until shutdown is requested and return its deadline. Never returns when every
/// handle is gone without a shutdown (the queues then close by themselves).
pub(crate) async fn wait_deadline(rx: &mut watch::Receiver<Option<Instant>>) -> Instant {
    if let Ok(v) = rx.wait_for(Option::is_some).await {
        if let Some(at) = *v {
            return at;
        }
    }
    std::future::pending().await
}

/// Jittered exponential backoff before retry number `attempt` (1 = first retry):
/// half of `min(retry_max, retry_base * 2^(attempt-1))` plus a random part of the other half.
pub(crate) fn backoff(opts: &NotifierOptions, attempt: u32) -> Duration {
    let exp = opts
        .retry_base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(24))
        .min(opts.retry_max);
    let half = exp / 2;
    let span = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    let jitter = Duration::from_nanos(rand::thread_rng().gen_range(0..=span));
    half + jitter
}
