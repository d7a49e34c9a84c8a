//! `gcp-maintenance` (monitor): this server's VM announces a host maintenance event or a
//! Spot VM preemption through its metadata server; the monitor turns it into a failure,
//! so its recovery moves the group before the event.
//!
//! Each poll is a hanging GET of `instance/maintenance-event` (`wait_for_change=true`
//! with the ETag of the value seen last, bounded by half the poll's timeout): the poll
//! answers as soon as the value changes, and the metadata server is not polled in a busy
//! loop. `instance/preempted` is read on every poll. `MIGRATE_ON_HOST_MAINTENANCE` (a
//! live migration, usually a pause of a few hundred milliseconds) moves the group too
//! unless `migrate = "ignore"`; `TERMINATE_ON_HOST_MAINTENANCE` and a preemption always
//! do. A metadata server that does not answer is an API error (`on_api_error`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use baton_core::events as ev;
use serde::Deserialize;

use super::GcpShared;
use crate::cloud::{Deadline, Latch, Subject};
use crate::params::parse_params;
use crate::{ParamError, Params, Probe, ProbeContext, ProbeOk, ProviderError};

const EVENT_PATH: &str = "instance/maintenance-event";
const PREEMPTED_PATH: &str = "instance/preempted";

/// What a live migration does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnMigrate {
    /// Fail the monitor: the group moves before the migration.
    #[default]
    Move,
    /// Stay: live migration keeps the VM running.
    Ignore,
}

/// Keys of a `gcp-maintenance` monitor.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcpMaintenanceParams {
    /// `move` (default) or `ignore`: what an announced live migration does.
    #[serde(default)]
    pub migrate: OnMigrate,
    /// Watch `instance/preempted` too (Spot and preemptible VMs; default true).
    #[serde(default = "default_true")]
    pub preemption: bool,
}

fn default_true() -> bool {
    true
}

/// The `gcp-maintenance` monitor.
#[derive(Debug)]
pub struct GcpMaintenanceProbe {
    pub params: GcpMaintenanceParams,
    shared: Arc<GcpShared>,
    /// The ETag of the maintenance event seen last (the next poll waits for a change).
    etag: Mutex<Option<String>>,
    latch: Latch,
}

impl GcpMaintenanceProbe {
    pub fn from_params(params: &Params, shared: Arc<GcpShared>) -> Result<Self, ParamError> {
        Ok(GcpMaintenanceProbe {
            params: parse_params(params)?,
            shared,
            etag: Mutex::new(None),
            latch: Latch::default(),
        })
    }

    /// Why the group should move, if it should.
    fn verdict(&self, event: &str, preempted: bool) -> Option<String> {
        if preempted {
            return Some("the Spot VM is being preempted (instance/preempted = TRUE)".into());
        }
        match event {
            "NONE" | "" => None,
            "MIGRATE_ON_HOST_MAINTENANCE" if self.params.migrate == OnMigrate::Ignore => None,
            other => Some(format!("host maintenance announced: {other}")),
        }
    }
}

#[async_trait]
impl Probe for GcpMaintenanceProbe {
    fn kind(&self) -> &'static str {
        "gcp-maintenance"
    }

    async fn probe(&self, ctx: &ProbeContext) -> Result<ProbeOk, ProviderError> {
        let subject = Subject::Probe(ctx);
        let latch = Some(&self.latch);
        let dl = Deadline::new(ctx.timeout);
        let client = self
            .shared
            .client()
            .await
            .map_err(|f| self.shared.report(subject, latch, f))?;
        let last = self.etag.lock().ok().and_then(|e| e.clone());
        // Wait for a change at most half the poll's time, whole seconds; a short poll
        // does not wait.
        let wait = Duration::from_secs(ctx.timeout.as_secs() / 2);
        let last = last.filter(|_| !wait.is_zero());
        let (event, etag) = client
            .metadata_watch(EVENT_PATH, last.as_deref(), wait, dl.remaining()?)
            .await
            .map_err(|f| self.shared.report(subject, latch, f))?;
        if let Ok(mut e) = self.etag.lock() {
            *e = etag;
        }
        let preempted = if self.params.preemption {
            client
                .metadata(PREEMPTED_PATH, dl.remaining()?)
                .await
                .map_err(|f| self.shared.report(subject, latch, f))?
                .trim()
                .eq_ignore_ascii_case("TRUE")
        } else {
            false
        };
        let event = event.trim();
        if let Some(why) = self.verdict(event, preempted) {
            let msg = format!("{}: {why}", subject.name());
            self.shared
                .raise(subject, latch, &ev::GCP_MAINTENANCE, msg.clone());
            return Err(ProviderError::Unhealthy(msg));
        }
        self.latch.reset();
        Ok(ProbeOk {
            detail: Some(format!("maintenance-event {event}")),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn build(s: &str) -> Result<GcpMaintenanceProbe, ParamError> {
        GcpMaintenanceProbe::from_params(
            &s.parse::<toml::Table>().unwrap(),
            Arc::new(GcpShared::new(&Default::default())),
        )
    }

    #[test]
    fn verdicts() {
        let p = build("").unwrap();
        assert_eq!(p.verdict("NONE", false), None);
        assert!(p.verdict("MIGRATE_ON_HOST_MAINTENANCE", false).is_some());
        assert!(p.verdict("TERMINATE_ON_HOST_MAINTENANCE", false).is_some());
        assert!(p.verdict("NONE", true).unwrap().contains("preempted"));
        let p = build("migrate = 'ignore'").unwrap();
        assert_eq!(p.verdict("MIGRATE_ON_HOST_MAINTENANCE", false), None);
        assert!(p.verdict("TERMINATE_ON_HOST_MAINTENANCE", false).is_some());
        let e = build("migrate = 'stay'").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("migrate"));
        let e = build("preemptoin = true").unwrap_err();
        assert!(e.message.contains("did you mean `preemption`?"), "{e}");
    }
}
