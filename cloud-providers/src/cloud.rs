//! What every cloud provider's drivers share: the sink their events go to, who an event
//! is about, a probe's raise-once memory, and an action's deadline.
//!
//! Drivers do not see the engine; they hand their events to an [`EventSink`], which the
//! agent drains into its alert log (`ProviderRegistry::take_events`). Every event is
//! also logged with `tracing`. A probe polling a broken API would raise the same event
//! at every poll, so probes go through a [`Latch`]: an event id is raised once until
//! the probe succeeds again.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_core::events::{Event, EventDef};
use baton_core::Severity;

use crate::clock::Instant;
use crate::error::ProviderError;
use crate::process::duration_ms;
use crate::{ActionContext, ProbeContext};

/// Where a cloud provider's events go. Cheap to clone; a sink nobody drains drops events when full.
#[derive(Debug, Clone, Default)]
pub struct EventSink {
    tx: Option<tokio::sync::mpsc::Sender<Event>>,
}

impl EventSink {
    /// A sink and the receiver the agent drains (bounded: events beyond `capacity`
    /// waiting are dropped, they are still logged).
    pub fn channel(capacity: usize) -> (EventSink, tokio::sync::mpsc::Receiver<Event>) {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
        (EventSink { tx: Some(tx) }, rx)
    }

    pub fn emit(&self, ev: Event) {
        match ev.severity {
            Severity::Info => tracing::info!(id = %ev.id, "{}", ev.message),
            Severity::Warning => tracing::warn!(id = %ev.id, "{}", ev.message),
            _ => tracing::error!(id = %ev.id, "{}", ev.message),
        }
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(ev);
        }
    }
}

/// Who an event is about.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    Action(&'a ActionContext),
    Probe(&'a ProbeContext),
}

impl Subject<'_> {
    pub fn event(&self, def: &EventDef, message: String) -> Event {
        match self {
            Subject::Action(c) => Event::new(def, message)
                .group(&c.group)
                .resource(&c.resource)
                .epoch(c.epoch),
            Subject::Probe(p) => Event::new(def, message).monitor(&p.monitor),
        }
    }

    /// `resource vip1` or `monitor vipw1`, for messages.
    pub fn name(&self) -> String {
        match self {
            Subject::Action(c) => format!("resource {}", c.resource),
            Subject::Probe(p) => format!("monitor {}", p.monitor),
        }
    }
}

/// Raise-once memory of a probe: an event id fires once until [`Latch::reset`].
#[derive(Debug, Default, Clone)]
pub struct Latch(Arc<Mutex<BTreeSet<u16>>>);

impl Latch {
    /// True the first time `id` is asked for since the last reset.
    pub fn first(&self, id: u16) -> bool {
        self.0
            .lock()
            .map(|mut s| s.insert(id))
            // A poisoned lock only means a panic elsewhere; raising again is harmless.
            .unwrap_or(true)
    }

    pub fn reset(&self) {
        if let Ok(mut s) = self.0.lock() {
            s.clear();
        }
    }
}

/// An action's deadline, shared by the API calls it makes.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    end: Instant,
    total: Duration,
}

impl Deadline {
    pub fn new(total: Duration) -> Deadline {
        Deadline {
            end: crate::clock::now() + total,
            total,
        }
    }

    pub fn remaining(&self) -> Result<Duration, ProviderError> {
        let left = self.end.saturating_duration_since(crate::clock::now());
        if left.is_zero() {
            Err(ProviderError::Timeout(duration_ms(self.total)))
        } else {
            Ok(left)
        }
    }
}

// ----- preflight (`baton cloud check`) ------------------------------------------------

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Works, but something deserves attention.
    Warn,
    /// Will fail at activation or monitoring.
    Fail,
    /// Could not be verified without changing something.
    Skip,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        }
    }
}

/// One line of `baton cloud check`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// `resource failover1/awsvip1` or `monitor awsazw1`.
    pub subject: String,
    /// What was checked: `vpc`, `eni`, `route-table`, `permission:ReplaceRoute`, ...
    pub check: String,
    pub status: Status,
    pub detail: String,
}

/// Worst status of a list (`Fail` > `Warn` > `Skip` > `Ok`).
pub fn worst(findings: &[Finding]) -> Status {
    let rank = |s: Status| match s {
        Status::Ok => 0,
        Status::Skip => 1,
        Status::Warn => 2,
        Status::Fail => 3,
    };
    findings
        .iter()
        .map(|f| f.status)
        .max_by_key(|s| rank(*s))
        .unwrap_or(Status::Ok)
}

/// A cloud failure as a preflight reports a read that failed.
pub trait PreflightFailure: std::fmt::Display {
    /// The resource does not exist.
    fn not_found(&self) -> bool;
    /// The credentials may not read it.
    fn denied(&self) -> bool;
    /// What to do about a refusal (`attach the policy of ...`).
    fn fix(&self) -> &'static str;
}

/// The findings about one subject (`resource web/vip`, `monitor azw`) of a preflight.
pub struct Report {
    pub subject: String,
    pub out: Vec<Finding>,
}

impl Report {
    pub fn new(subject: impl Into<String>) -> Report {
        Report {
            subject: subject.into(),
            out: Vec::new(),
        }
    }

    pub fn add(&mut self, check: &str, status: Status, detail: impl Into<String>) {
        self.out.push(Finding {
            subject: self.subject.clone(),
            check: check.to_string(),
            status,
            detail: detail.into(),
        });
    }

    /// A read call failed: not found / not permitted (and what to do) / unreachable.
    pub fn failed(&mut self, check: &str, f: &impl PreflightFailure) {
        let detail = if f.not_found() {
            format!("does not exist: {f}")
        } else if f.denied() {
            format!("not authorized: {f} ({})", f.fix())
        } else {
            f.to_string()
        };
        self.add(check, Status::Fail, detail);
    }
}
