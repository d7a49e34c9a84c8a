//! Event sinks. The agent records every event in the local alert log (the source of
//! truth) and hands it to the notifier, which fans it out to sinks through a bounded
//! queue that never blocks the caller.
//!
//! * [`AlertLog`]: the local, rotated JSON-lines alert log; assigns each event its `seq`.
//! * [`EventSink`]: what a notification target implements; [`LogSink`] writes to `tracing`.
//! * [`Notifier`]: one bounded queue and one task per sink, batching, retries with
//!   jittered exponential backoff, drop accounting ([`SinkStats`]) and a bounded flush
//!   on shutdown.
#![forbid(unsafe_code)]

pub mod alert_log;
pub mod dispatch;
pub mod sink;

pub use alert_log::{AlertLog, AlertLogError, AlertReader};
pub use dispatch::{
    Notifier, NotifierHandle, NotifierOptions, ShutdownReport, SinkShutdown, SinkStats,
};
pub use sink::{EventSink, LogSink, SinkError};
