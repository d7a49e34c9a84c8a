//! Notifier benchmark (run by `bench/notify.sh`; reports figures, asserts nothing).
//!
//! Publishes N events (default 10,000) at a steady rate (default 1,000/s) through the
//! notifier twice, in the same process and run:
//!
//! 1. reference: the log sink alone (tracing formats every event as JSON into a null
//!    writer), as an agent without `[notify.*]` sections runs;
//! 2. all sinks: log, Amazon SNS (moto; a topic without subscribers, because moto's
//!    SNS-to-SQS fan-out slows down as its queue grows and would measure moto), mail (aiosmtpd),
//!    a signed webhook (local receiver) and CloudWatch metrics (moto through the CBOR
//!    shim; every event also feeds the failover tracking, and as many polling-time
//!    samples as events are recorded).
//!
//! For each sink: events delivered / dropped, and event-to-publish latency (from
//! `publish()` to the sink's endpoint accepting the batch holding the event) p50 / p99 /
//! max. For each run: the process CPU time (user + system) from the first publish to the
//! last delivery, and the ratios to the reference.
//!
//! Arguments: `--events N`, `--rate PER_SECOND` (cargo's own `--bench` is ignored).
// Benchmarks measure real time: they read the clock directly.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use baton_cloud_client::aws::AwsClients;
use baton_core::config::{AwsSection, Dur, MailSecurity, MetricKind};
use baton_core::events::GROUP_FAILOVER;
use baton_core::{Event, Severity};
use baton_notifier::cloudwatch::CloudWatchSink;
use baton_notifier::mail::{MailSettings, MailSink};
use baton_notifier::metrics::{system_wall_clock, MetricsOptions, MetricsPipeline, Sample};
use baton_notifier::sns::SnsSink;
use baton_notifier::webhook::{system_clock, WebhookSink};
use baton_notifier::{
    EventFilter, EventSink, LogSink, Notifier, NotifierOptions, SinkError, SinkStats,
};
use baton_tests::moto::{aws_env, Moto};
use baton_tests::notify::{SmtpServer, WebhookReceiver};

/// Publish times (ns since the bench's start) by event seq, and per-sink latencies.
struct Clock {
    t0: Instant,
    published: Vec<AtomicU64>,
}

/// Wraps a sink and records, for every event of an accepted batch, the time since it
/// was published.
struct Measured {
    inner: Arc<dyn EventSink>,
    clock: Arc<Clock>,
    lat_us: std::sync::Mutex<Vec<u64>>,
}

#[async_trait]
impl EventSink for Measured {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn min_severity(&self) -> Severity {
        self.inner.min_severity()
    }
    fn accepts(&self, ev: &Event) -> bool {
        self.inner.accepts(ev)
    }
    fn max_batch(&self) -> Option<usize> {
        self.inner.max_batch()
    }
    async fn deliver(&self, batch: &[Event]) -> Result<(), SinkError> {
        self.inner.deliver(batch).await?;
        let now = u64::try_from(self.clock.t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let mut l = self.lat_us.lock().unwrap();
        for ev in batch {
            if let Some(p) = self.clock.published.get(ev.seq as usize) {
                l.push(now.saturating_sub(p.load(Ordering::Relaxed)) / 1000);
            }
        }
        Ok(())
    }
}

/// Process CPU time (user + system), from /proc/self/stat (clock ticks of 10 ms).
fn cpu_seconds() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = s.rsplit(") ").next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn pct(v: &mut [u64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i] as f64 / 1000.0
}

struct RunResult {
    cpu_s: f64,
    wall_s: f64,
    /// CPU and wall time of the publishing window alone.
    pub_cpu_s: f64,
    pub_wall_s: f64,
    sinks: Vec<(SinkStats, Vec<u64>)>,
}

fn event(seq: u64) -> Event {
    let mut e = Event::new(
        &GROUP_FAILOVER,
        format!("group g{} fails over from node-1 to node-2", seq % 7),
    )
    .group(&format!("g{}", seq % 7))
    .peer("node-1");
    e.cluster = "bench".into();
    e.server = "node-2".into();
    e.seq = seq;
    e.time_ms = 1_700_000_000_000 + seq;
    e
}

async fn run(
    label: &str,
    sinks: Vec<Arc<dyn EventSink>>,
    metrics: Option<MetricsPipeline>,
    events: u64,
    rate: u64,
) -> RunResult {
    let clock = Arc::new(Clock {
        t0: Instant::now(),
        published: (0..=events).map(|_| AtomicU64::new(0)).collect(),
    });
    let measured: Vec<Arc<Measured>> = sinks
        .into_iter()
        .map(|s| {
            Arc::new(Measured {
                inner: s,
                clock: Arc::clone(&clock),
                lat_us: std::sync::Mutex::new(Vec::new()),
            })
        })
        .collect();
    let with_metrics = metrics.is_some();
    let (h, _join) = Notifier::start_with_metrics(
        measured
            .iter()
            .map(|m| Arc::clone(m) as Arc<dyn EventSink>)
            .collect(),
        metrics,
        NotifierOptions {
            queue_len: 20_000,
            coalesce_window: Duration::ZERO,
            ..NotifierOptions::default()
        },
    );
    let cpu0 = cpu_seconds();
    let wall0 = Instant::now();
    // Publish in ticks of 10 ms.
    let per_tick = (rate / 100).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut seq = 1;
    while seq <= events {
        tick.tick().await;
        for _ in 0..per_tick {
            if seq > events {
                break;
            }
            clock.published[seq as usize].store(
                u64::try_from(clock.t0.elapsed().as_nanos()).unwrap_or(0),
                Ordering::Relaxed,
            );
            h.publish(event(seq));
            if with_metrics {
                h.metric(Sample::MonitorPollingTime {
                    monitor: "http1".into(),
                    ms: 1.0 + (seq % 50) as f64 / 10.0,
                });
            }
            seq += 1;
        }
    }
    let pub_cpu_s = cpu_seconds() - cpu0;
    let pub_wall_s = wall0.elapsed().as_secs_f64();
    // Wait for the event sinks to settle (bounded), then flush the metrics.
    let limit = Instant::now() + Duration::from_secs(300);
    loop {
        let st = h.stats();
        let done = st
            .iter()
            .filter(|s| s.name != "cloudwatch")
            .all(|s| s.delivered + s.dropped + s.coalesced >= events);
        if done || Instant::now() > limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = h.shutdown(Duration::from_secs(60)).await;
    let wall_s = wall0.elapsed().as_secs_f64();
    let cpu_s = cpu_seconds() - cpu0;
    if report.timed_out {
        eprintln!(
            "{label}: shutdown left {} undelivered",
            report.undelivered()
        );
    }
    let stats = h.stats();
    let sinks = stats
        .into_iter()
        .map(|s| {
            let lat = measured
                .iter()
                .find(|m| m.name() == s.name)
                .map(|m| m.lat_us.lock().unwrap().clone())
                .unwrap_or_default();
            (s, lat)
        })
        .collect();
    RunResult {
        cpu_s,
        wall_s,
        pub_cpu_s,
        pub_wall_s,
        sinks,
    }
}

fn print_run(label: &str, r: &mut RunResult) {
    println!(
        "\n{label}: publishing {:.2} s with CPU {:.2} s ({:.1}% of one core); until every sink was done {:.2} s with CPU {:.2} s",
        r.pub_wall_s,
        r.pub_cpu_s,
        100.0 * r.pub_cpu_s / r.pub_wall_s,
        r.wall_s,
        r.cpu_s
    );
    println!(
        "  {:<11} {:>9} {:>8} {:>9} {:>9} {:>9}",
        "sink", "delivered", "dropped", "p50 ms", "p99 ms", "max ms"
    );
    for (s, lat) in r.sinks.iter_mut() {
        if s.name == "cloudwatch" {
            println!(
                "  {:<11} {:>9} {:>8}   (metric samples; sent once per interval)",
                s.name, s.delivered, s.dropped
            );
            continue;
        }
        let p50 = pct(lat, 0.5);
        let p99 = pct(lat, 0.99);
        let max = pct(lat, 1.0);
        println!(
            "  {:<11} {:>9} {:>8} {:>9.2} {:>9.2} {:>9.2}",
            s.name, s.delivered, s.dropped, p50, p99, max
        );
    }
}

#[tokio::main]
async fn main() {
    let mut events: u64 = 10_000;
    let mut rate: u64 = 1_000;
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--events" => {
                events = args[i + 1].parse().expect("--events N");
                i += 1;
            }
            "--rate" => {
                rate = args[i + 1].parse().expect("--rate N");
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    // The log sink formats every event (JSON) into a null writer, as the agent's log does.
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::sink)
        .with_max_level(tracing::Level::INFO)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    println!("notifier benchmark: {events} events at {rate}/s (warning, distinct subjects)");
    let mut reference = run(
        "reference",
        vec![Arc::new(LogSink::new())],
        None,
        events,
        rate,
    )
    .await;

    let moto = Moto::start().expect("moto (bash tests/moto/setup.sh)");
    let smtp = SmtpServer::start().expect("aiosmtpd (bash tests/moto/setup.sh)");
    let hook = WebhookReceiver::start(Some(b"bench-secret"));
    for (k, v) in aws_env(&moto.endpoint) {
        if k != "AWS_ENDPOINT_URL" {
            std::env::set_var(k, v);
        }
    }
    let clients = AwsClients::load(&AwsSection {
        region: Some("us-east-1".into()),
        endpoint_url: Some(moto.endpoint.clone()),
        call_timeout: Dur::from_ms(10_000),
        imds: false,
        ..AwsSection::default()
    })
    .await;
    let sns = aws_sdk_sns::Client::new(clients.sdk_config());
    let topic = sns
        .create_topic()
        .name("bench")
        .send()
        .await
        .unwrap()
        .topic_arn
        .unwrap();
    let all: Vec<Arc<dyn EventSink>> = vec![
        Arc::new(LogSink::new()),
        Arc::new(SnsSink::new(
            &clients,
            &topic,
            EventFilter::min(Severity::Warning),
            None,
            None,
        )),
        Arc::new(
            MailSink::new(&MailSettings {
                server: "127.0.0.1".into(),
                port: smtp.port,
                security: MailSecurity::None,
                credentials: None,
                from: "baton@example.com".into(),
                to: vec!["ops@example.com".into()],
                timeout: Duration::from_secs(10),
                subject_prefix: None,
                docs_url: None,
                filter: EventFilter::min(Severity::Warning),
            })
            .unwrap(),
        ),
        Arc::new(
            WebhookSink::new(
                "webhook",
                &hook.url,
                Some(b"bench-secret".to_vec()),
                Duration::from_secs(10),
                EventFilter::min(Severity::Warning),
                None,
                system_clock(),
            )
            .unwrap(),
        ),
    ];
    let metrics = MetricsPipeline {
        options: MetricsOptions {
            cluster: "bench".into(),
            server: "node-2".into(),
            kinds: MetricKind::ALL.to_vec(),
            monitors: vec!["http1".into()],
            groups: (0..7).map(|g| format!("g{g}")).collect(),
            interval: Duration::from_secs(1),
            high_resolution: true,
            queue_len: 20_000,
        },
        sink: Arc::new(CloudWatchSink::new(&clients, "BatonBench")),
        clock: system_wall_clock(),
    };
    let mut full = run("all sinks", all, Some(metrics), events, rate).await;

    print_run("reference (log sink only)", &mut reference);
    print_run("all sinks (log, SNS, mail, webhook, CloudWatch)", &mut full);
    let ref_lat = reference
        .sinks
        .iter_mut()
        .find(|(s, _)| s.name == "log")
        .map(|(_, l)| (pct(l, 0.5), pct(l, 0.99)))
        .unwrap_or((f64::NAN, f64::NAN));
    println!("\nratios to the reference (same run):");
    println!(
        "  CPU while publishing: {:.2} s / {:.2} s = {:.1}x; until done: {:.2} s / {:.2} s = {:.1}x ({:.0} us per event and sink-set)",
        full.pub_cpu_s,
        reference.pub_cpu_s,
        full.pub_cpu_s / reference.pub_cpu_s.max(0.01),
        full.cpu_s,
        reference.cpu_s,
        full.cpu_s / reference.cpu_s.max(0.01),
        1e6 * full.cpu_s / events as f64
    );
    for (s, lat) in full.sinks.iter_mut() {
        if s.name == "cloudwatch" {
            continue;
        }
        let (p50, p99) = (pct(lat, 0.5), pct(lat, 0.99));
        println!(
            "  {:<8} latency p50 {:.2} ms = {:.0}x, p99 {:.2} ms = {:.0}x the log sink alone",
            s.name,
            p50,
            p50 / ref_lat.0.max(0.001),
            p99,
            p99 / ref_lat.1.max(0.001)
        );
    }
    let sent_mail = smtp.messages().len();
    let posts = hook.deliveries().len();
    let puts = moto
        .calls()
        .iter()
        .filter(|(k, _)| k.ends_with("PublishBatch") || k.ends_with("PutMetricData"))
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!("  endpoint calls: {puts}, {sent_mail} mails, {posts} webhook POSTs");
}
