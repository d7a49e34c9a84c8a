//! Prometheus: the figures the CloudWatch sink sends, kept for `GET /metrics`
//! (`[metrics.prometheus]`), from the same sources: the agent's samples
//! ([`Sample`], through [`crate::NotifierHandle::metric`]) and the event stream (through
//! [`crate::NotifierHandle::publish`], with the same [`FailoverTracker`]). What the engine
//! knows at the time of the scrape (quorum, epochs, servers, paths, sinks) is read then.
//!
//! | metric | type | labels | CloudWatch |
//! |---|---|---|---|
//! | `baton_monitor_polling_seconds` | histogram | monitor | `MonitorPollingTime` |
//! | `baton_heartbeat_rtt_seconds` | histogram | peer, path | `HeartbeatRoundTrip` |
//! | `baton_group_active` | gauge | group | `GroupActive` |
//! | `baton_failovers` | counter | group | `FailoverCount` |
//! | `baton_failover_phase_seconds` | histogram | group, phase | `FailoverPhaseTime` |
//! | `baton_alerts` | counter | severity | |
//! | `baton_quorum`, `baton_quorum_votes_heard`, `baton_quorum_votes_configured` | gauge | | |
//! | `baton_server_up` | gauge | peer | |
//! | `baton_interconnect_up` | gauge | peer, path | |
//! | `baton_group_epoch` | gauge | group | |
//! | `baton_group_state` | gauge (1 for the current state) | group, state | |
//! | `baton_monitor_state` | gauge (1 for the current state) | monitor, state | |
//! | `baton_cluster_suspended`, `baton_config_refused` | gauge | | |
//! | `baton_sink_delivered`, `baton_sink_dropped` | counter | sink | |
//! | `baton_sink_queued` | gauge | sink | |
//!
//! Every series carries `cluster` and `server`. Times are in seconds (Prometheus' base
//! unit); counters get the `_total` suffix in the exposition.

use std::sync::Mutex;

use baton_core::engine::EngineStatus;
use baton_core::Event;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::dispatch::SinkStats;
use crate::metrics::{FailoverTracker, Sample, FAILOVER_COUNT, FAILOVER_PHASE_TIME};

/// The content type of [`Prometheus::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(String, String)>;
type Hist = Family<Labels, Histogram, fn() -> Histogram>;
type FGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// Monitor polling: 1 ms to about 33 s.
fn polling_hist() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Heartbeat round trip: 0.1 ms to about 0.8 s.
fn rtt_hist() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 14))
}

/// Failover phases: 10 ms to about 80 s.
fn phase_hist() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 14))
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

/// The metrics kept between scrapes (samples and event-derived figures).
pub struct Prometheus {
    cluster: String,
    server: String,
    registry: Registry,
    polling: Hist,
    rtt: Hist,
    phases: Hist,
    failovers: Family<Labels, Counter>,
    alerts: Family<Labels, Counter>,
    group_active: Family<Labels, FGauge>,
    tracker: Mutex<FailoverTracker>,
}

impl std::fmt::Debug for Prometheus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prometheus")
            .field("cluster", &self.cluster)
            .field("server", &self.server)
            .finish()
    }
}

impl Prometheus {
    /// `groups`: the groups this server may run (their `baton_group_active` is 0 from the
    /// start, as CloudWatch's `GroupActive`).
    pub fn new(cluster: &str, server: &str, groups: &[String]) -> Prometheus {
        let mut registry = Registry::with_prefix_and_labels(
            "baton",
            [
                ("cluster".into(), cluster.to_string().into()),
                ("server".into(), server.to_string().into()),
            ]
            .into_iter(),
        );
        let polling: Hist = Family::new_with_constructor(polling_hist);
        let rtt: Hist = Family::new_with_constructor(rtt_hist);
        let phases: Hist = Family::new_with_constructor(phase_hist);
        let failovers = Family::<Labels, Counter>::default();
        let alerts = Family::<Labels, Counter>::default();
        let group_active = Family::<Labels, FGauge>::default();
        registry.register(
            "monitor_polling_seconds",
            "How long each poll of a monitor took (CloudWatch MonitorPollingTime)",
            polling.clone(),
        );
        registry.register(
            "heartbeat_rtt_seconds",
            "Heartbeat round trip to a peer on one interconnect path (CloudWatch HeartbeatRoundTrip)",
            rtt.clone(),
        );
        registry.register(
            "group_active",
            "1 while the group is active on this server (CloudWatch GroupActive)",
            group_active.clone(),
        );
        registry.register(
            "failovers",
            "Failovers of the group this server took over (CloudWatch FailoverCount)",
            failovers.clone(),
        );
        registry.register(
            "failover_phase_seconds",
            "Failover phases: Detection, Decision, Claim, Activation, Total on the server taking over, Deactivation on any (CloudWatch FailoverPhaseTime)",
            phases.clone(),
        );
        registry.register(
            "alerts",
            "Events recorded in this server's alert log, by severity",
            alerts.clone(),
        );
        for sev in ["info", "warning", "error", "critical"] {
            let _ = alerts.get_or_create(&labels(&[("severity", sev)]));
        }
        let tracker = FailoverTracker::new(groups);
        for (g, v) in &tracker.active {
            group_active.get_or_create(&labels(&[("group", g)])).set(*v);
        }
        Prometheus {
            cluster: cluster.to_string(),
            server: server.to_string(),
            registry,
            polling,
            rtt,
            phases,
            failovers,
            alerts,
            group_active,
            tracker: Mutex::new(tracker),
        }
    }

    /// A sample from the agent (every monitor's polling time, every round trip).
    pub fn sample(&self, s: &Sample) {
        match s {
            Sample::MonitorPollingTime { monitor, ms } => {
                if ms.is_finite() {
                    self.polling
                        .get_or_create(&labels(&[("monitor", monitor)]))
                        .observe(ms / 1000.0);
                }
            }
            Sample::HeartbeatRtt { peer, path, ms } => {
                if ms.is_finite() {
                    self.rtt
                        .get_or_create(&labels(&[("peer", peer), ("path", &path.to_string())]))
                        .observe(ms / 1000.0);
                }
            }
        }
    }

    /// An event recorded by this agent: counted by severity, and fed to the failover
    /// tracker.
    pub fn event(&self, ev: &Event) {
        self.alerts
            .get_or_create(&labels(&[("severity", ev.severity.as_str())]))
            .inc();
        let (done, active) = {
            let mut t = match self.tracker.lock() {
                Ok(t) => t,
                Err(p) => p.into_inner(),
            };
            let done = t.on_event(ev);
            (done, t.active.clone())
        };
        for (name, phase, group, value) in done {
            if name == FAILOVER_COUNT {
                self.failovers
                    .get_or_create(&labels(&[("group", &group)]))
                    .inc();
            } else if name == FAILOVER_PHASE_TIME {
                let phase = phase.unwrap_or("Total");
                self.phases
                    .get_or_create(&labels(&[("group", &group), ("phase", phase)]))
                    .observe(value / 1000.0);
            }
        }
        for (g, v) in active {
            self.group_active
                .get_or_create(&labels(&[("group", &g)]))
                .set(v);
        }
    }

    /// The OpenMetrics text of everything: what was collected, plus the engine's status
    /// (`None` while the agent is stopping) and the sinks' counters read now.
    pub fn render(&self, status: Option<&EngineStatus>, sinks: &[SinkStats]) -> String {
        let now = scrape_registry(&self.cluster, &self.server, status, sinks);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry);
        let _ = encode_registry(&mut out, &now);
        let _ = encode_eof(&mut out);
        out
    }
}

/// The figures read at scrape time, in a registry of their own.
fn scrape_registry(
    cluster: &str,
    server: &str,
    status: Option<&EngineStatus>,
    sinks: &[SinkStats],
) -> Registry {
    let mut r = Registry::with_prefix_and_labels(
        "baton",
        [
            ("cluster".into(), cluster.to_string().into()),
            ("server".into(), server.to_string().into()),
        ]
        .into_iter(),
    );
    let gauge = |r: &mut Registry, name: &str, help: &str| {
        let f = Family::<Labels, Gauge>::default();
        r.register(name, help, f.clone());
        f
    };
    let delivered = Family::<Labels, Counter>::default();
    let dropped = Family::<Labels, Counter>::default();
    r.register(
        "sink_delivered",
        "Events (metric samples for cloudwatch) each notification sink delivered",
        delivered.clone(),
    );
    r.register(
        "sink_dropped",
        "Events (metric samples for cloudwatch) each notification sink dropped: queue full, retries exhausted, refused",
        dropped.clone(),
    );
    let queued = gauge(&mut r, "sink_queued", "Events waiting in each sink's queue");
    for s in sinks {
        let l = labels(&[("sink", &s.name)]);
        delivered.get_or_create(&l).inc_by(s.delivered);
        dropped.get_or_create(&l).inc_by(s.dropped);
        queued
            .get_or_create(&l)
            .set(i64::try_from(s.queued).unwrap_or(i64::MAX));
    }
    let Some(st) = status else {
        return r;
    };
    let b = |v: bool| i64::from(v);
    let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
    let one = |r: &mut Registry, name: &str, help: &str, v: i64| {
        let g = Gauge::<i64>::default();
        g.set(v);
        r.register(name, help, g);
    };
    one(
        &mut r,
        "quorum",
        "1 while this server holds quorum",
        b(st.quorum),
    );
    one(
        &mut r,
        "quorum_votes_heard",
        "Votes this server counts now (servers heard, itself and the witness included)",
        n(st.votes_heard),
    );
    one(
        &mut r,
        "quorum_votes_configured",
        "Votes in the cluster",
        n(st.votes_total),
    );
    one(
        &mut r,
        "cluster_suspended",
        "1 while the cluster is suspended (no failover)",
        b(st.suspended),
    );
    one(
        &mut r,
        "config_refused",
        "1 while this server refuses to run groups (its configuration differs from its peers')",
        b(st.refused),
    );
    let up = gauge(
        &mut r,
        "server_up",
        "1 while this server hears the peer (itself: always 1)",
    );
    let path_up = gauge(
        &mut r,
        "interconnect_up",
        "1 while heartbeats from the peer arrive on the interconnect path",
    );
    for s in &st.servers {
        up.get_or_create(&labels(&[("peer", &s.name)])).set(b(s.up));
        if s.is_self {
            continue;
        }
        for p in &s.paths {
            path_up
                .get_or_create(&labels(&[("peer", &s.name), ("path", &p.path.to_string())]))
                .set(b(p.up));
        }
    }
    let epoch = gauge(
        &mut r,
        "group_epoch",
        "The group's epoch (fencing token) as this server knows it",
    );
    let state = gauge(
        &mut r,
        "group_state",
        "1 for the group's current state (cluster-wide summary)",
    );
    for g in &st.groups {
        epoch
            .get_or_create(&labels(&[("group", &g.name)]))
            .set(i64::try_from(g.epoch).unwrap_or(i64::MAX));
        state
            .get_or_create(&labels(&[
                ("group", &g.name),
                ("state", &state_name(&g.state)),
            ]))
            .set(1);
    }
    let mstate = gauge(
        &mut r,
        "monitor_state",
        "1 for the monitor's current state on this server",
    );
    for m in &st.monitors {
        mstate
            .get_or_create(&labels(&[("monitor", &m.name), ("state", &m.state)]))
            .set(1);
    }
    r
}

/// The serde name of a state (`online`, `offline`).
fn state_name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use baton_core::events::{
        GROUP_ACTIVATED, GROUP_ACTIVATING, GROUP_FAILOVER, SERVER_DOWN, SINK_NOT_STARTED,
    };

    fn ev(def: &baton_core::events::EventDef, t: u64) -> Event {
        let mut e = Event::new(def, "x");
        e.time_ms = t;
        e
    }

    #[test]
    fn samples_and_events_become_series() {
        let p = Prometheus::new("c", "node-2", &["web".to_string()]);
        p.sample(&Sample::MonitorPollingTime {
            monitor: "m1".into(),
            ms: 12.0,
        });
        p.sample(&Sample::HeartbeatRtt {
            peer: "node-1".into(),
            path: 1,
            ms: 0.4,
        });
        let mut down = ev(&SERVER_DOWN, 10_000);
        down.peer = Some("node-1".into());
        down.fields.insert("timeout_ms".into(), 1000.into());
        p.event(&down);
        let mut fo = ev(&GROUP_FAILOVER, 10_500);
        fo.group = Some("web".into());
        fo.peer = Some("node-1".into());
        p.event(&fo);
        let mut a = ev(&GROUP_ACTIVATING, 10_600);
        a.group = Some("web".into());
        p.event(&a);
        let mut on = ev(&GROUP_ACTIVATED, 11_000);
        on.group = Some("web".into());
        p.event(&on);
        p.event(&ev(&SINK_NOT_STARTED, 11_100));
        let text = p.render(None, &[]);
        for want in [
            "# TYPE baton_monitor_polling_seconds histogram",
            "baton_monitor_polling_seconds_count{cluster=\"c\",server=\"node-2\",monitor=\"m1\"} 1",
            "baton_heartbeat_rtt_seconds_sum{cluster=\"c\",server=\"node-2\",peer=\"node-1\",path=\"1\"} 0.0004",
            "baton_failovers_total{cluster=\"c\",server=\"node-2\",group=\"web\"} 1",
            "baton_group_active{cluster=\"c\",server=\"node-2\",group=\"web\"} 1.0",
            "baton_failover_phase_seconds_sum{cluster=\"c\",server=\"node-2\",group=\"web\",phase=\"Total\"} 2.0",
            "baton_failover_phase_seconds_sum{cluster=\"c\",server=\"node-2\",group=\"web\",phase=\"Detection\"} 1.0",
            "baton_alerts_total{cluster=\"c\",server=\"node-2\",severity=\"critical\"} 0",
        ] {
            assert!(text.contains(want), "missing `{want}` in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1);
        // One count per event, whatever its severity.
        let counted: u64 = text
            .lines()
            .filter(|l| l.starts_with("baton_alerts_total{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(counted, 5, "{text}");
    }

    #[test]
    fn sinks_render_at_scrape_time() {
        let p = Prometheus::new("c", "s", &[]);
        let text = p.render(
            None,
            &[SinkStats {
                name: "webhook".into(),
                delivered: 7,
                dropped: 2,
                failed_batches: 1,
                queued: 3,
                coalesced: 0,
                last_error: None,
            }],
        );
        assert!(
            text.contains(
                "baton_sink_delivered_total{cluster=\"c\",server=\"s\",sink=\"webhook\"} 7"
            ),
            "{text}"
        );
        assert!(text
            .contains("baton_sink_dropped_total{cluster=\"c\",server=\"s\",sink=\"webhook\"} 2"));
        assert!(text.contains("baton_sink_queued{cluster=\"c\",server=\"s\",sink=\"webhook\"} 3"));
    }
}
