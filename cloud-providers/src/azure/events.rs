//! `azure-events`: the monitor of Azure Scheduled Events (the instance metadata
//! service's `/metadata/scheduledevents`), Pacemaker's `azure-events`.
//!
//! Azure announces maintenance that will pause (`Freeze`), restart (`Reboot`), move
//! (`Redeploy`) or remove (`Preempt` for Spot VMs, `Terminate`) a VM some minutes before
//! it happens (`NotBefore`). At each poll the monitor reads the document and keeps the
//! events of the configured types whose `Resources` name this VM:
//!
//! - while the monitor's group is held here, such an event is a failure whose message
//!   names the event and its time (BTN-8016): the monitor's recovery (configure
//!   `failover_retries`, with `restart_retries = 0` and `retries = 0`) moves the group to
//!   another server before the event starts;
//! - once the group is not here (it moved, or it never was), the monitor approves the
//!   event (`StartRequests`, BTN-8017) when `acknowledge` is on, so the platform may start
//!   the maintenance at once instead of waiting for `NotBefore`; with it off the event
//!   is only noted (BTN-8018) and starts at its time.
//!
//! Run it with `timing = "always"` so that it also polls where the group is not: that is
//! where it approves. An API failure is `ProviderError::Api` (`on_api_error` decides).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use baton_cloud_client::azure::{
    AzureClient, IMDS_INSTANCE_API_VERSION, SCHEDULED_EVENTS_API_VERSION,
};
use baton_core::events as ev;
use serde::Deserialize;
use serde_json::{json, Value};

use super::AzureShared;
use crate::cloud::{Deadline, Latch, Subject};
use crate::params::{key_error, parse_params};
use crate::{ParamError, Params, Probe, ProbeContext, ProbeOk, ProviderError};

/// The event types Azure documents.
pub const EVENT_TYPES: &[&str] = &["Freeze", "Reboot", "Redeploy", "Preempt", "Terminate"];

/// Keys of an `azure-events` monitor.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureEventsParams {
    /// The event types that move the group away (default: all five).
    pub events: Option<Vec<String>>,
    /// Approve an event once the group is not on this server (default true).
    #[serde(default = "default_true")]
    pub acknowledge: bool,
    /// This VM's name as the events list it (default: `compute.name` from the instance
    /// metadata service).
    pub vm_name: Option<String>,
}

fn default_true() -> bool {
    true
}

/// One scheduled event, as the metadata service gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledEvent {
    pub id: String,
    pub kind: String,
    pub status: String,
    pub not_before: String,
    pub resources: Vec<String>,
    pub description: String,
}

impl ScheduledEvent {
    /// The events of a Scheduled Events document.
    pub fn parse(doc: &Value) -> Vec<ScheduledEvent> {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        doc["Events"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| ScheduledEvent {
                        id: text(&e["EventId"]),
                        kind: text(&e["EventType"]),
                        status: text(&e["EventStatus"]),
                        not_before: text(&e["NotBefore"]),
                        resources: e["Resources"]
                            .as_array()
                            .map(|r| r.iter().map(text).collect())
                            .unwrap_or_default(),
                        description: text(&e["Description"]),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `Reboot 5b3c… (Scheduled, not before Mon, 19 Sep 2016 18:29:47 GMT)`.
    pub fn describe(&self) -> String {
        let when = if self.not_before.is_empty() {
            "started".to_string()
        } else {
            format!("{}, not before {}", self.status, self.not_before)
        };
        format!("{} {} ({when})", self.kind, self.id)
    }
}

/// The `azure-events` monitor.
#[derive(Debug)]
pub struct AzureEventsProbe {
    params: AzureEventsParams,
    types: Vec<String>,
    shared: Arc<AzureShared>,
    vm: tokio::sync::OnceCell<String>,
    /// Events approved (or noted) already: each only once.
    handled: Mutex<BTreeSet<String>>,
    latch: Latch,
}

impl AzureEventsProbe {
    pub fn from_params(params: &Params, shared: Arc<AzureShared>) -> Result<Self, ParamError> {
        let p: AzureEventsParams = parse_params(params)?;
        let types = match &p.events {
            None => EVENT_TYPES.iter().map(|s| s.to_string()).collect(),
            Some(list) if list.is_empty() => {
                return Err(key_error(
                    "events",
                    format!(
                        "list at least one event type ({}), or leave the key out for all",
                        EVENT_TYPES.join(", ")
                    ),
                ))
            }
            Some(list) => {
                let mut out = Vec::new();
                for (i, t) in list.iter().enumerate() {
                    let Some(known) = EVENT_TYPES.iter().find(|k| k.eq_ignore_ascii_case(t)) else {
                        return Err(key_error(
                            &format!("events.{i}"),
                            format!(
                                "unknown event type `{t}`: Azure schedules {}",
                                EVENT_TYPES.join(", ")
                            ),
                        ));
                    };
                    out.push(known.to_string());
                }
                out
            }
        };
        if let Some(v) = &p.vm_name {
            if v.is_empty() || v.len() > 64 {
                return Err(key_error("vm_name", "a VM name has 1 to 64 characters"));
            }
        }
        Ok(AzureEventsProbe {
            params: p,
            types,
            shared,
            vm: tokio::sync::OnceCell::new(),
            handled: Mutex::new(BTreeSet::new()),
            latch: Latch::default(),
        })
    }

    async fn vm_name(
        &self,
        client: &AzureClient,
        dl: &Deadline,
        subject: Subject<'_>,
    ) -> Result<String, ProviderError> {
        if let Some(v) = &self.params.vm_name {
            return Ok(v.clone());
        }
        self.vm
            .get_or_try_init(|| async {
                let path = format!("/metadata/instance?api-version={IMDS_INSTANCE_API_VERSION}");
                let doc = client
                    .imds_get("Imds.Instance", &path, dl.remaining()?)
                    .await
                    .map_err(|f| self.shared.report(subject, Some(&self.latch), f))?;
                doc.body["compute"]["name"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .ok_or_else(|| {
                        ProviderError::Other(format!(
                            "{}: the instance metadata gives no VM name; set `vm_name`",
                            subject.name()
                        ))
                    })
            })
            .await
            .cloned()
    }

    /// The events of the configured types for `vm`.
    pub fn relevant<'e>(&self, events: &'e [ScheduledEvent], vm: &str) -> Vec<&'e ScheduledEvent> {
        events
            .iter()
            .filter(|e| {
                self.types.iter().any(|t| t.eq_ignore_ascii_case(&e.kind))
                    && e.resources.iter().any(|r| r.eq_ignore_ascii_case(vm))
            })
            .collect()
    }

    fn first_time(&self, id: &str) -> bool {
        self.handled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string())
    }
}

#[async_trait]
impl Probe for AzureEventsProbe {
    fn kind(&self) -> &'static str {
        "azure-events"
    }

    async fn probe(&self, ctx: &ProbeContext) -> Result<ProbeOk, ProviderError> {
        let subject = Subject::Probe(ctx);
        let dl = Deadline::new(ctx.timeout);
        let client = self
            .shared
            .client()
            .await
            .map_err(|f| self.shared.report(subject, Some(&self.latch), f))?;
        let vm = self.vm_name(client, &dl, subject).await?;
        let path = format!("/metadata/scheduledevents?api-version={SCHEDULED_EVENTS_API_VERSION}");
        let doc = client
            .imds_get("ScheduledEvents.Get", &path, dl.remaining()?)
            .await
            .map_err(|f| self.shared.report(subject, Some(&self.latch), f))?;
        let events = ScheduledEvent::parse(&doc.body);
        let mine = self.relevant(&events, &vm);
        if mine.is_empty() {
            self.latch.reset();
            return Ok(ProbeOk {
                detail: Some(format!("no scheduled event for {vm}")),
            });
        }
        let list = mine
            .iter()
            .map(|e| e.describe())
            .collect::<Vec<_>>()
            .join("; ");
        if ctx.group_state.is_some_and(|s| s.holds()) {
            let msg = format!(
                "{}: Azure scheduled {list} for this VM ({vm}): moving the group away before it starts",
                subject.name()
            );
            self.shared.raise(
                subject,
                Some(&self.latch),
                &ev::AZURE_SCHEDULED_EVENT,
                msg.clone(),
            );
            return Err(ProviderError::Unhealthy(msg));
        }
        // The group is not here: approve (or note) each event once.
        let pending: Vec<&ScheduledEvent> = mine
            .iter()
            .copied()
            .filter(|e| e.status == "Scheduled")
            .collect();
        if self.params.acknowledge && !pending.is_empty() {
            let fresh: Vec<&&ScheduledEvent> = pending
                .iter()
                .filter(|e| {
                    !self
                        .handled
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .contains(&e.id)
                })
                .collect();
            if !fresh.is_empty() {
                let body = json!({
                    "StartRequests": fresh.iter().map(|e| json!({"EventId": e.id})).collect::<Vec<_>>()
                });
                client
                    .imds_post("ScheduledEvents.Start", &path, body, dl.remaining()?)
                    .await
                    .map_err(|f| self.shared.report(subject, Some(&self.latch), f))?;
                for e in fresh {
                    self.first_time(&e.id);
                    self.shared.events.emit(subject.event(
                        &ev::AZURE_SCHEDULED_EVENT_APPROVED,
                        format!(
                            "{}: approved Azure's {} for {vm}: no group of this monitor runs here",
                            subject.name(),
                            e.describe()
                        ),
                    ));
                }
            }
        } else {
            for e in &mine {
                if self.first_time(&e.id) {
                    self.shared.events.emit(subject.event(
                        &ev::AZURE_SCHEDULED_EVENT_NOTED,
                        format!(
                            "{}: Azure scheduled {} for {vm}; the group is not here",
                            subject.name(),
                            e.describe()
                        ),
                    ));
                }
            }
        }
        self.latch.reset();
        Ok(ProbeOk {
            detail: Some(format!("{list}; the group is not here")),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn build(s: &str) -> Result<AzureEventsProbe, ParamError> {
        AzureEventsProbe::from_params(
            &s.parse::<toml::Table>().unwrap(),
            Arc::new(AzureShared::lenient()),
        )
    }

    #[test]
    fn params_and_filtering() {
        let p = build("").unwrap();
        assert_eq!(p.types.len(), 5);
        assert!(p.params.acknowledge);
        let p = build("events = ['reboot', 'Redeploy']\nvm_name = 'node-1'").unwrap();
        assert_eq!(p.types, ["Reboot", "Redeploy"]);
        for (text, key) in [
            ("events = []", "events"),
            ("events = ['Reboot', 'Restart']", "events.1"),
            ("vm_name = ''", "vm_name"),
            ("acknowlege = false", "acknowlege"),
        ] {
            let e = build(text).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{text}: {e}");
        }
        let doc = json!({"DocumentIncarnation": 2, "Events": [
            {"EventId": "a", "EventType": "Reboot", "ResourceType": "VirtualMachine", "Resources": ["node-1"], "EventStatus": "Scheduled", "NotBefore": "Mon, 19 Sep 2016 18:29:47 GMT"},
            {"EventId": "b", "EventType": "Freeze", "ResourceType": "VirtualMachine", "Resources": ["node-1", "node-2"], "EventStatus": "Started", "NotBefore": ""},
            {"EventId": "c", "EventType": "Reboot", "ResourceType": "VirtualMachine", "Resources": ["node-2"], "EventStatus": "Scheduled", "NotBefore": "x"}]});
        let events = ScheduledEvent::parse(&doc);
        assert_eq!(events.len(), 3);
        let ids = |v: Vec<&ScheduledEvent>| v.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(p.relevant(&events, "node-1")), ["a"]);
        assert_eq!(
            ids(build("").unwrap().relevant(&events, "NODE-1")),
            ["a", "b"]
        );
        assert_eq!(
            events[0].describe(),
            "Reboot a (Scheduled, not before Mon, 19 Sep 2016 18:29:47 GMT)"
        );
        assert_eq!(events[1].describe(), "Freeze b (started)");
    }
}
