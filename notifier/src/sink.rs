//! The sink trait and the sink that writes events to the agent's log.

use async_trait::async_trait;
use baton_core::{Event, Severity};
use thiserror::Error;

/// A delivery failed. The notifier retries `Transient` failures with backoff and drops
/// the batch on a `Permanent` one. `code()` is stable.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SinkError {
    /// Worth retrying: timeout, connection refused, throttling, 5xx.
    #[error("transient delivery failure: {0}")]
    Transient(String),
    /// Retrying will not help: bad credentials, rejected payload, 4xx.
    #[error("permanent delivery failure: {0}")]
    Permanent(String),
}

impl SinkError {
    /// Stable short code for events, the API and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            SinkError::Transient(_) => "sink-transient",
            SinkError::Permanent(_) => "sink-permanent",
        }
    }

    /// True when the notifier should retry the batch.
    pub fn is_transient(&self) -> bool {
        matches!(self, SinkError::Transient(_))
    }
}

/// A notification target. The notifier calls `deliver` from one task per sink, never
/// concurrently with itself, with batches of at most `max_batch` events in `seq` order.
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Short name shown in `baton status` and in the notifier's own log lines.
    fn name(&self) -> &str;

    /// Events below this severity are not queued for this sink.
    fn min_severity(&self) -> Severity {
        Severity::Info
    }

    /// Should `ev` be queued for this sink? Called by `publish` for every event, so it
    /// must be cheap. Default: the event reaches [`EventSink::min_severity`].
    fn accepts(&self, ev: &Event) -> bool {
        ev.severity >= self.min_severity()
    }

    /// Most events this sink takes in one `deliver` call (its API's batch limit), if it
    /// is lower than the notifier's `max_batch`.
    fn max_batch(&self) -> Option<usize> {
        None
    }

    /// Deliver a batch. Either the whole batch was accepted (`Ok`) or it is retried or
    /// dropped as a whole, so a sink may see an event twice after a partial failure.
    async fn deliver(&self, batch: &[Event]) -> Result<(), SinkError>;
}

/// Writes each event to `tracing` at the level of its severity: info → INFO,
/// warning → WARN, error → ERROR, critical → ERROR with `critical = true`.
///
/// Fields: `event_id`, `seq`, `group`, `resource`, `monitor`, `epoch` (absent ones are
/// omitted); the message is the event line (`BTN-2102 group g activated on node-1`).
#[derive(Debug, Clone)]
pub struct LogSink {
    name: String,
    min_severity: Severity,
}

impl LogSink {
    /// A sink named `log` that logs every event.
    pub fn new() -> LogSink {
        LogSink {
            name: "log".to_string(),
            min_severity: Severity::Info,
        }
    }

    /// Only log events at or above `min`.
    pub fn with_min_severity(mut self, min: Severity) -> LogSink {
        self.min_severity = min;
        self
    }

    /// Write one event to `tracing` (also usable without the notifier).
    pub fn log(ev: &Event) {
        let line = ev.line();
        let event_id = ev.id.as_str();
        let seq = ev.seq;
        let group = ev.group.as_deref();
        let resource = ev.resource.as_deref();
        let monitor = ev.monitor.as_deref();
        let epoch = ev.epoch;
        // tracing needs the level and the field set at compile time: one call per level.
        match ev.severity {
            Severity::Info => {
                tracing::info!(event_id, seq, group, resource, monitor, epoch, "{line}")
            }
            Severity::Warning => {
                tracing::warn!(event_id, seq, group, resource, monitor, epoch, "{line}")
            }
            Severity::Error => {
                tracing::error!(event_id, seq, group, resource, monitor, epoch, "{line}")
            }
            Severity::Critical => tracing::error!(
                event_id,
                seq,
                group,
                resource,
                monitor,
                epoch,
                critical = true,
                "{line}"
            ),
        }
    }
}

impl Default for LogSink {
    fn default() -> Self {
        LogSink::new()
    }
}

#[async_trait]
impl EventSink for LogSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn min_severity(&self) -> Severity {
        self.min_severity
    }

    async fn deliver(&self, batch: &[Event]) -> Result<(), SinkError> {
        for ev in batch {
            LogSink::log(ev);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;
    use baton_core::events::{GROUP_ACTIVATED, GROUP_FINAL_ACTION, SERVER_DOWN};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn log_sink_writes_level_fields_and_line() {
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let mut a = Event::new(&GROUP_ACTIVATED, "group web activated on node-1")
            .group("web")
            .epoch(7);
        a.seq = 11;
        let b = Event::new(&SERVER_DOWN, "server node-2 down");
        let c = Event::new(&GROUP_FINAL_ACTION, "final action stop-group for web")
            .group("web")
            .monitor("http");
        let sink = LogSink::new();
        assert_eq!(sink.name(), "log");
        sink.deliver(&[a, b, c]).await.unwrap();

        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert_eq!(lines[0]["level"], "INFO");
        assert_eq!(lines[0]["fields"]["event_id"], "BTN-2102");
        assert_eq!(lines[0]["fields"]["group"], "web");
        assert_eq!(lines[0]["fields"]["epoch"], 7);
        assert_eq!(lines[0]["fields"]["seq"], 11);
        assert_eq!(
            lines[0]["fields"]["message"],
            "BTN-2102 group web activated on node-1"
        );
        assert!(lines[0]["fields"].get("resource").is_none());
        assert!(lines[0]["fields"].get("critical").is_none());
        assert_eq!(lines[1]["level"], "WARN");
        assert_eq!(lines[1]["fields"]["event_id"], "BTN-1102");
        assert_eq!(lines[2]["level"], "ERROR");
        assert_eq!(lines[2]["fields"]["critical"], true);
        assert_eq!(lines[2]["fields"]["monitor"], "http");
    }

    #[test]
    fn error_codes_are_stable() {
        assert_eq!(SinkError::Transient("x".into()).code(), "sink-transient");
        assert_eq!(SinkError::Permanent("x".into()).code(), "sink-permanent");
        assert!(SinkError::Transient("x".into()).is_transient());
    }
}
