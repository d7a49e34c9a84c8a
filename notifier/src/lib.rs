//! Event sinks and metrics. The agent records every event in the local alert log (the
//! source of truth) and hands it to the notifier, which fans it out to sinks through
//! bounded queues that never block the caller.
//!
//! * [`AlertLog`]: the local, rotated JSON-lines alert log; assigns each event its `seq`.
//! * [`EventSink`]: what a notification target implements; [`LogSink`] writes to
//!   `tracing`, [`sns::SnsSink`] publishes to Amazon SNS, [`mail::MailSink`] sends mail
//!   over SMTP, [`webhook::WebhookSink`] POSTs signed JSON.
//! * [`Notifier`]: one bounded queue and one task per sink, batching, retries with
//!   jittered exponential backoff, coalescing of repeated (flapping) alerts, drop
//!   accounting ([`SinkStats`]) and a bounded flush on shutdown.
//! * [`metrics`]: monitor polling times, heartbeat round trips, group activity and
//!   failover figures, aggregated and sent to Amazon CloudWatch
//!   ([`cloudwatch::CloudWatchSink`]) in batches within the API's limits.
//! * [`prometheus`]: the same figures (and the engine's at scrape time) for
//!   `GET /metrics` (`[metrics.prometheus]`).
//! * [`build`]: the sinks a configuration asks for.
#![forbid(unsafe_code)]

pub mod alert_log;
pub mod build;
pub mod clock;
pub mod cloudwatch;
pub mod delivery;
pub mod dispatch;
pub mod filter;
pub mod mail;
pub mod metrics;
pub mod prometheus;
pub mod render;
pub mod sink;
pub mod sns;
pub mod webhook;

pub use alert_log::{AlertLog, AlertLogError, AlertReader};
pub use dispatch::{
    Notifier, NotifierHandle, NotifierOptions, ShutdownReport, SinkShutdown, SinkStats,
};
pub use filter::EventFilter;
pub use metrics::{MetricsPipeline, Sample};
pub use sink::{EventSink, LogSink, SinkError};
