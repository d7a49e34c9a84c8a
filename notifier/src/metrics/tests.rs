#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;

use baton_core::events::GROUP_ACTIVATION_FAILED;

use super::*;
use crate::dispatch::{Notifier, NotifierOptions};

fn opts() -> MetricsOptions {
    MetricsOptions {
        cluster: "prod".into(),
        server: "node-2".into(),
        kinds: MetricKind::ALL.to_vec(),
        monitors: vec!["http1".into()],
        groups: vec!["web".into()],
        interval: Duration::from_secs(60),
        high_resolution: false,
        queue_len: 100,
    }
}

fn at(def: &baton_core::events::EventDef, t: u64) -> Event {
    let mut e = Event::new(def, "x").group("web");
    e.time_ms = t;
    e
}

fn find<'a>(d: &'a [Datum], name: &str, dim: Option<(&str, &str)>) -> Vec<&'a Datum> {
    d.iter()
        .filter(|x| x.name == name)
        .filter(|x| dim.is_none_or(|(k, v)| x.dims.iter().any(|(a, b)| a == k && b == v)))
        .collect()
}

#[test]
fn polling_times_are_opt_in_and_aggregated_as_values_and_counts() {
    let mut a = Aggregator::new(opts());
    for ms in [12.0, 12.0, 30.004, 7.5] {
        assert!(a.add_sample(&Sample::MonitorPollingTime {
            monitor: "http1".into(),
            ms
        }));
    }
    assert!(!a.add_sample(&Sample::MonitorPollingTime {
        monitor: "tcp1".into(),
        ms: 1.0
    }));
    assert_eq!(a.pending(), 4);
    let (d, n) = a.take(1_700_000_000_000);
    // 4 polling samples + one GroupActive gauge.
    assert_eq!(n, 5);
    let p = find(&d, MONITOR_POLLING_TIME, None);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].values, vec![7.5, 12.0, 30.0]);
    assert_eq!(p[0].counts, vec![1.0, 2.0, 1.0]);
    assert_eq!(p[0].unit, Unit::Milliseconds);
    assert_eq!(p[0].timestamp_ms, 1_700_000_000_000);
    assert_eq!(p[0].storage_resolution, 60);
    assert_eq!(
        p[0].dims,
        vec![
            ("Cluster".to_string(), "prod".to_string()),
            ("Server".to_string(), "node-2".to_string()),
            ("Monitor".to_string(), "http1".to_string())
        ]
    );
    let g = find(&d, GROUP_ACTIVE, Some(("Group", "web")));
    assert_eq!(g[0].values, vec![0.0]);
    // Taken: empty again, but the gauge is sent every interval.
    let (d, n) = a.take(1_700_000_060_000);
    assert_eq!(n, 1);
    assert_eq!(d.len(), 1);
}

#[test]
fn many_distinct_values_split_into_datums_of_150() {
    let mut o = opts();
    o.kinds = vec![MetricKind::HeartbeatRtt];
    let mut a = Aggregator::new(o);
    for i in 0..400 {
        a.add_sample(&Sample::HeartbeatRtt {
            peer: "node-1".into(),
            path: 1,
            ms: f64::from(i) / 10.0,
        });
    }
    let (d, n) = a.take(0);
    assert_eq!(n, 400);
    assert_eq!(
        d.iter().map(|x| x.values.len()).collect::<Vec<_>>(),
        vec![150, 150, 100]
    );
    assert!(d[0].dims.contains(&("Path".to_string(), "1".to_string())));
    assert_eq!(d.iter().map(Datum::samples).sum::<u64>(), 400);
}

#[test]
fn chunks_respect_count_and_size_limits() {
    let d = |values: usize| Datum {
        name: "M".into(),
        unit: Unit::Milliseconds,
        dims: vec![("Cluster".into(), "c".repeat(200))],
        values: vec![1.0; values],
        counts: vec![1.0; values],
        timestamp_ms: 0,
        storage_resolution: 60,
    };
    let c = chunk((0..2500).map(|_| d(1)).collect());
    assert_eq!(
        c.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![1000, 1000, 500]
    );
    // 150-value datums are ~11 kB by the estimate: fewer per call.
    let c = chunk((0..300).map(|_| d(150)).collect());
    assert!(c.len() > 1);
    for part in &c {
        let bytes: usize = part.iter().map(Datum::estimated_bytes).sum();
        assert!(bytes <= MAX_REQUEST_BYTES, "{bytes}");
        assert!(part.len() <= MAX_DATUMS_PER_CALL);
    }
    assert_eq!(c.iter().map(Vec::len).sum::<usize>(), 300);
    assert!(chunk(Vec::new()).is_empty());
}

#[test]
fn failover_phases_from_the_event_stream() {
    let mut t = FailoverTracker::new(&["web".to_string()]);
    let mut down = Event::new(&SERVER_DOWN, "node-1 down")
        .peer("node-1")
        .field("timeout_ms", 1000);
    down.time_ms = 10_000;
    assert!(t.on_event(&down).is_empty());
    let mut fo = at(&GROUP_FAILOVER, 10_400).peer("node-1");
    fo.time_ms = 10_400;
    let s = t.on_event(&fo);
    assert_eq!(
        s,
        vec![
            (FAILOVER_COUNT, None, "web".to_string(), 1.0),
            (
                FAILOVER_PHASE_TIME,
                Some("Detection"),
                "web".to_string(),
                1000.0
            ),
            (
                FAILOVER_PHASE_TIME,
                Some("Decision"),
                "web".to_string(),
                400.0
            ),
        ]
    );
    assert_eq!(
        t.on_event(&at(&GROUP_ACTIVATING, 10_450)),
        vec![(FAILOVER_PHASE_TIME, Some("Claim"), "web".to_string(), 50.0)]
    );
    assert_eq!(
        t.on_event(&at(&GROUP_ACTIVATED, 10_700)),
        vec![
            (
                FAILOVER_PHASE_TIME,
                Some("Activation"),
                "web".to_string(),
                250.0
            ),
            // From the last heartbeat (10 000 - 1000) to active.
            (
                FAILOVER_PHASE_TIME,
                Some("Total"),
                "web".to_string(),
                1700.0
            ),
        ]
    );
    assert_eq!(t.active["web"], 1.0);
    // A plain start (no failover) is not a failover.
    assert!(t.on_event(&at(&GROUP_ACTIVATING, 20_000)).is_empty());
    assert!(t.on_event(&at(&GROUP_ACTIVATED, 20_100)).is_empty());
    assert!(t.on_event(&at(&GROUP_DEACTIVATING, 30_000)).is_empty());
    assert_eq!(
        t.on_event(&at(&GROUP_DEACTIVATED, 30_300)),
        vec![(
            FAILOVER_PHASE_TIME,
            Some("Deactivation"),
            "web".to_string(),
            300.0
        )]
    );
    assert_eq!(t.active["web"], 0.0);
    // A failover whose activation fails leaves nothing pending.
    t.on_event(&at(&GROUP_FAILOVER, 40_000));
    t.on_event(&at(&GROUP_ACTIVATION_FAILED, 40_100));
    assert!(t.on_event(&at(&GROUP_ACTIVATED, 40_200)).is_empty());
}

#[test]
fn switched_off_metrics_are_not_sent() {
    let mut o = opts();
    o.kinds = vec![MetricKind::FailoverCount];
    let mut a = Aggregator::new(o.clone());
    let n = a.on_event(&at(&GROUP_FAILOVER, 1));
    assert_eq!(n, 1);
    assert!(!a.add_sample(&Sample::MonitorPollingTime {
        monitor: "http1".into(),
        ms: 1.0
    }));
    let (d, _) = a.take(5);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].name, FAILOVER_COUNT);
    assert_eq!(d[0].unit, Unit::Count);
    assert!(!o.wants_event(&Event::new(&SERVER_UP, "x")) || o.sends(MetricKind::FailoverCount));
}

/// Records what it is given; fails the first `fail` calls.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<Vec<Datum>>>,
    fail: Mutex<u32>,
    permanent: bool,
}

#[async_trait]
impl MetricsSink for Recorder {
    fn name(&self) -> &str {
        "cloudwatch"
    }
    async fn put(&self, data: &[Datum]) -> Result<(), SinkError> {
        let mut f = self.fail.lock().unwrap();
        if *f > 0 {
            *f -= 1;
            return Err(if self.permanent {
                SinkError::Permanent("AccessDenied".into())
            } else {
                SinkError::Transient("503".into())
            });
        }
        self.calls.lock().unwrap().push(data.to_vec());
        Ok(())
    }
}

fn pipeline(rec: &Arc<Recorder>, o: MetricsOptions) -> MetricsPipeline {
    MetricsPipeline {
        options: o,
        sink: Arc::clone(rec) as Arc<dyn MetricsSink>,
        clock: Arc::new(|| 1_000),
    }
}

#[tokio::test(start_paused = true)]
async fn worker_sends_every_interval_and_flushes_on_shutdown() {
    let rec = Arc::new(Recorder::default());
    let (h, _join) = Notifier::start_with_metrics(
        Vec::new(),
        Some(pipeline(&rec, opts())),
        NotifierOptions::default(),
    );
    assert!(h.wants_polling_time("http1"));
    assert!(!h.wants_polling_time("tcp1"));
    for ms in [5.0, 6.0] {
        h.metric(Sample::MonitorPollingTime {
            monitor: "http1".into(),
            ms,
        });
    }
    // Not opted in: not even queued.
    h.metric(Sample::MonitorPollingTime {
        monitor: "tcp1".into(),
        ms: 1.0,
    });
    h.publish(at(&GROUP_ACTIVATED, 500));
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert!(rec.calls.lock().unwrap().is_empty());
    tokio::time::sleep(Duration::from_secs(2)).await;
    {
        let calls = rec.calls.lock().unwrap();
        assert_eq!(calls.len(), 1);
        let p = find(&calls[0], MONITOR_POLLING_TIME, None);
        assert_eq!(p[0].values, vec![5.0, 6.0]);
        assert_eq!(find(&calls[0], GROUP_ACTIVE, None)[0].values, vec![1.0]);
    }
    let s = h
        .stats()
        .into_iter()
        .find(|s| s.name == "cloudwatch")
        .unwrap();
    assert_eq!((s.delivered, s.dropped, s.queued), (3, 0, 0));
    h.metric(Sample::HeartbeatRtt {
        peer: "node-1".into(),
        path: 0,
        ms: 0.4,
    });
    let r = h.shutdown(Duration::from_secs(5)).await;
    assert!(!r.timed_out, "{r:?}");
    let calls = rec.calls.lock().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        find(&calls[1], HEARTBEAT_ROUND_TRIP, None)[0].values,
        vec![0.4]
    );
}

#[tokio::test(start_paused = true)]
async fn failed_sends_are_retried_then_counted_and_reported() {
    let rec = Arc::new(Recorder {
        fail: Mutex::new(2),
        ..Recorder::default()
    });
    let mut o = opts();
    o.kinds = vec![MetricKind::MonitorPollingTime];
    let (h, _join) = Notifier::start_with_metrics(
        Vec::new(),
        Some(pipeline(&rec, o.clone())),
        NotifierOptions::default(),
    );
    h.metric(Sample::MonitorPollingTime {
        monitor: "http1".into(),
        ms: 5.0,
    });
    tokio::time::sleep(Duration::from_secs(70)).await;
    assert_eq!(rec.calls.lock().unwrap().len(), 1, "retried after two 503s");

    let rec = Arc::new(Recorder {
        fail: Mutex::new(100),
        permanent: true,
        ..Recorder::default()
    });
    let (h, _join) = Notifier::start_with_metrics(
        Vec::new(),
        Some(pipeline(&rec, o)),
        NotifierOptions::default(),
    );
    h.metric(Sample::MonitorPollingTime {
        monitor: "http1".into(),
        ms: 5.0,
    });
    tokio::time::sleep(Duration::from_secs(61)).await;
    let s = h
        .stats()
        .into_iter()
        .find(|s| s.name == "cloudwatch")
        .unwrap();
    assert_eq!((s.delivered, s.dropped, s.queued), (0, 1, 0));
    assert_eq!(
        *rec.fail.lock().unwrap(),
        99,
        "a permanent error is not retried"
    );
    let ev = h.drop_events();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].id, "BTN-5005");
    assert!(
        ev[0].message.contains("metric sample(s)"),
        "{}",
        ev[0].message
    );
    assert!(h.drop_events().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_full_sample_queue_drops_and_counts_without_blocking() {
    let rec = Arc::new(Recorder::default());
    let mut o = opts();
    o.queue_len = 5;
    let (h, _join) = Notifier::start_with_metrics(
        Vec::new(),
        Some(pipeline(&rec, o)),
        NotifierOptions::default(),
    );
    // The worker has not run yet: the queue takes 5, the rest are dropped.
    for i in 0..20 {
        h.metric(Sample::MonitorPollingTime {
            monitor: "http1".into(),
            ms: f64::from(i),
        });
    }
    let s = h
        .stats()
        .into_iter()
        .find(|s| s.name == "cloudwatch")
        .unwrap();
    assert_eq!((s.dropped, s.queued), (15, 5));
    let ev = h.drop_events();
    assert_eq!(ev[0].id, "BTN-5003");
}
