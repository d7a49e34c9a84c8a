//! The sinks against real endpoints: moto (SNS → SQS, CloudWatch through the CBOR shim),
//! aiosmtpd, a local webhook receiver that checks signatures.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// Tests measure the real time of real processes and sockets: they read the clock directly.
#![allow(clippy::disallowed_methods)]

use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat, Statistic};
use baton_cloud_client::aws::AwsClients;
use baton_core::config::{AwsSection, Dur, MailSecurity};
use baton_core::events::{GROUP_ACTIVATED, GROUP_FAILOVER, SERVER_DOWN};
use baton_core::{Event, Severity};
use baton_notifier::cloudwatch::CloudWatchSink;
use baton_notifier::mail::{MailSettings, MailSink};
use baton_notifier::metrics::{MetricsOptions, MetricsPipeline, Sample};
use baton_notifier::sns::SnsSink;
use baton_notifier::webhook::{system_clock, WebhookSink};
use baton_notifier::{EventFilter, EventSink, Notifier, NotifierOptions};
use baton_tests::moto::{aws_env, Moto};
use baton_tests::notify::{SmtpOptions, SmtpServer, WebhookReceiver};

static ENV: Once = Once::new();

/// Test credentials for the SDK's default chain (the endpoint comes from `[aws]`).
fn aws_credentials() {
    ENV.call_once(|| {
        for (k, v) in aws_env("http://unused") {
            if k != "AWS_ENDPOINT_URL" {
                std::env::set_var(k, v);
            }
        }
    });
}

async fn clients(moto: &Moto) -> AwsClients {
    aws_credentials();
    AwsClients::load(&AwsSection {
        region: Some("us-east-1".into()),
        endpoint_url: Some(moto.endpoint.clone()),
        call_timeout: Dur::from_ms(3000),
        max_attempts: 2,
        imds: false,
        ..AwsSection::default()
    })
    .await
}

fn event(def: &baton_core::events::EventDef, seq: u64, msg: &str) -> Event {
    let mut e = Event::new(def, msg).group("web").peer("node-1");
    e.cluster = "prod".into();
    e.server = "node-2".into();
    e.seq = seq;
    e.time_ms = 1_714_564_800_000 + seq;
    e
}

/// A topic with an SQS queue subscribed; returns (topic ARN, queue URL).
async fn topic_and_queue(c: &AwsClients, name: &str) -> (String, String, aws_sdk_sqs::Client) {
    let sns = aws_sdk_sns::Client::new(c.sdk_config());
    let sqs = aws_sdk_sqs::Client::new(c.sdk_config());
    let topic = sns
        .create_topic()
        .name(name)
        .send()
        .await
        .unwrap()
        .topic_arn
        .unwrap();
    let q = sqs.create_queue().queue_name(name).send().await.unwrap();
    let url = q.queue_url.unwrap();
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap();
    let qarn = attrs
        .attributes
        .unwrap()
        .get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .unwrap()
        .clone();
    sns.subscribe()
        .topic_arn(&topic)
        .protocol("sqs")
        .endpoint(qarn)
        .send()
        .await
        .unwrap();
    (topic, url, sqs)
}

async fn drain(sqs: &aws_sdk_sqs::Client, url: &str, want: usize) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let start = Instant::now();
    while out.len() < want && start.elapsed() < Duration::from_secs(10) {
        let r = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        let msgs = r.messages.unwrap_or_default();
        if msgs.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for m in msgs {
            out.push(serde_json::from_str(m.body.as_deref().unwrap()).unwrap());
        }
    }
    out
}

#[tokio::test]
async fn sns_messages_reach_an_sqs_subscriber_with_attributes() {
    let Some(moto) = Moto::start() else { return };
    let c = clients(&moto).await;
    let (topic, url, sqs) = topic_and_queue(&c, "baton-alerts").await;
    let sink = SnsSink::new(
        &c,
        &topic,
        EventFilter::min(Severity::Info),
        None,
        Some("https://docs.example.com/events.html"),
    );
    // 12 events: two PublishBatch calls (10 + 2).
    let mut batch: Vec<Event> = (1..=11)
        .map(|i| {
            event(
                &GROUP_FAILOVER,
                i,
                "group web fails over from node-1 to node-2",
            )
        })
        .collect();
    let mut last = event(&SERVER_DOWN, 12, "server node-1 is down");
    last.fields.insert("occurrences".into(), 3.into());
    batch.push(last);
    sink.deliver(&batch).await.unwrap();
    assert_eq!(moto.calls().get("sns.PublishBatch"), Some(&2));

    let got = drain(&sqs, &url, 12).await;
    assert_eq!(got.len(), 12);
    let m = got
        .iter()
        .find(|m| m["MessageAttributes"]["event_id"]["Value"] == "BTN-1102")
        .expect("the BTN-1102 message");
    assert_eq!(m["Type"], "Notification");
    assert_eq!(m["TopicArn"], topic.as_str());
    assert_eq!(
        m["Subject"],
        "Baton prod/node-2 BTN-1102 warning: server node-1 is down (x3)"
    );
    let attrs = &m["MessageAttributes"];
    assert_eq!(attrs["severity"]["Value"], "warning");
    assert_eq!(attrs["cluster"]["Value"], "prod");
    assert_eq!(attrs["server"]["Value"], "node-2");
    assert_eq!(attrs["group"]["Value"], "web");
    assert_eq!(attrs["occurrences"]["Type"], "Number");
    assert_eq!(attrs["occurrences"]["Value"], "3");
    // The SQS subscriber gets the event as JSON.
    let doc: serde_json::Value = serde_json::from_str(m["Message"].as_str().unwrap()).unwrap();
    assert_eq!(doc["id"], "BTN-1102");
    assert_eq!(doc["seq"], 12);
    assert_eq!(doc["occurrences"], 3);
    assert_eq!(
        doc["docs_url"],
        "https://docs.example.com/events.html#btn-1102"
    );
}

#[tokio::test]
async fn sns_throttling_is_retried_and_an_unknown_topic_is_permanent() {
    let Some(moto) = Moto::start() else { return };
    let c = clients(&moto).await;
    let (topic, url, sqs) = topic_and_queue(&c, "baton-retry").await;
    let sink: Arc<dyn EventSink> = Arc::new(SnsSink::new(
        &c,
        &topic,
        EventFilter::min(Severity::Warning),
        None,
        None,
    ));
    // Throttled more times than the SDK retries (2 attempts): the notifier retries.
    moto.fail("PublishBatch", "Throttling", 400, 3);
    let opts = NotifierOptions {
        retry_base: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        ..NotifierOptions::default()
    };
    let (h, _j) = Notifier::start(vec![sink], opts.clone());
    h.publish(event(&GROUP_FAILOVER, 1, "fails over"));
    // Below min_severity: never sent.
    h.publish(event(&GROUP_ACTIVATED, 2, "activated"));
    let got = drain(&sqs, &url, 1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["MessageAttributes"]["event_id"]["Value"], "BTN-2107");
    let s = &h.stats()[0];
    assert_eq!((s.delivered, s.dropped), (1, 0));
    assert!(
        s.last_error.as_deref().unwrap_or("").contains("Throttling"),
        "{s:?}"
    );

    let missing = "arn:aws:sns:us-east-1:123456789012:no-such-topic";
    let sink: Arc<dyn EventSink> = Arc::new(SnsSink::new(
        &c,
        missing,
        EventFilter::min(Severity::Info),
        None,
        None,
    ));
    let (h, _j) = Notifier::start(vec![sink], opts);
    h.publish(event(&GROUP_FAILOVER, 1, "fails over"));
    let start = Instant::now();
    while h.stats()[0].dropped == 0 && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = &h.stats()[0];
    assert_eq!(
        (s.delivered, s.dropped, s.failed_batches),
        (0, 1, 1),
        "{s:?}"
    );
    let ev = h.drop_events();
    assert_eq!(ev[0].id, "BTN-5005", "{ev:?}");
    assert!(ev[0].message.contains("NotFound"), "{}", ev[0].message);
}

fn cw_opts() -> MetricsOptions {
    MetricsOptions {
        cluster: "prod".into(),
        server: "node-2".into(),
        kinds: baton_core::config::MetricKind::ALL.to_vec(),
        monitors: vec!["http1".into()],
        groups: vec!["web".into()],
        interval: Duration::from_millis(300),
        high_resolution: false,
        queue_len: 1000,
    }
}

#[tokio::test]
async fn cloudwatch_returns_the_polling_times_that_were_sent() {
    let Some(moto) = Moto::start() else { return };
    let c = clients(&moto).await;
    let sink = Arc::new(CloudWatchSink::new(&c, "BatonTest"));
    let (h, _j) = Notifier::start_with_metrics(
        Vec::new(),
        Some(MetricsPipeline {
            options: cw_opts(),
            sink: Arc::clone(&sink) as _,
            clock: baton_notifier::metrics::system_wall_clock(),
        }),
        NotifierOptions::default(),
    );
    let times = [12.0, 15.0, 15.0, 40.5, 7.25];
    for ms in times {
        h.metric(Sample::MonitorPollingTime {
            monitor: "http1".into(),
            ms,
        });
    }
    let r = h.shutdown(Duration::from_secs(10)).await;
    assert!(!r.timed_out, "{r:?}");
    let s = h
        .stats()
        .into_iter()
        .find(|s| s.name == "cloudwatch")
        .unwrap();
    assert_eq!((s.dropped, s.queued), (0, 0), "{s:?}");
    assert!(s.delivered >= 5);
    let calls = moto.calls();
    assert!(calls.contains_key("monitoring.PutMetricData"), "{calls:?}");

    let cw = sink.client();
    let dims = [
        ("Cluster", "prod"),
        ("Server", "node-2"),
        ("Monitor", "http1"),
    ]
    .map(|(k, v)| Dimension::builder().name(k).value(v).build());
    let now = std::time::SystemTime::now();
    let start = aws_smithy_types::DateTime::from(now - Duration::from_secs(600));
    let end = aws_smithy_types::DateTime::from(now + Duration::from_secs(600));
    let st = cw
        .get_metric_statistics()
        .namespace("BatonTest")
        .metric_name("MonitorPollingTime")
        .set_dimensions(Some(dims.to_vec()))
        .start_time(start)
        .end_time(end)
        .period(3600)
        .statistics(Statistic::SampleCount)
        .statistics(Statistic::Average)
        .statistics(Statistic::Maximum)
        .statistics(Statistic::Minimum)
        .send()
        .await
        .expect("GetMetricStatistics through the CBOR shim");
    let dp = st.datapoints();
    assert_eq!(dp.len(), 1, "{dp:?}");
    assert_eq!(dp[0].sample_count(), Some(5.0));
    assert_eq!(dp[0].maximum(), Some(40.5));
    assert_eq!(dp[0].minimum(), Some(7.25));
    let avg = dp[0].average().unwrap();
    assert!(
        (avg - times.iter().sum::<f64>() / 5.0).abs() < 1e-9,
        "{avg}"
    );

    let q = MetricDataQuery::builder()
        .id("poll")
        .metric_stat(
            MetricStat::builder()
                .metric(
                    Metric::builder()
                        .namespace("BatonTest")
                        .metric_name("MonitorPollingTime")
                        .set_dimensions(Some(dims.to_vec()))
                        .build(),
                )
                .period(3600)
                .stat("Maximum")
                .build(),
        )
        .build();
    let md = cw
        .get_metric_data()
        .metric_data_queries(q)
        .start_time(start)
        .end_time(end)
        .send()
        .await
        .expect("GetMetricData through the CBOR shim");
    let res = md.metric_data_results();
    assert_eq!(res.len(), 1);
    assert_eq!(res[0].values(), &[40.5]);
    assert_eq!(res[0].timestamps().len(), 1);

    // GroupActive (0: never activated here) was sent too.
    let ga = cw
        .get_metric_statistics()
        .namespace("BatonTest")
        .metric_name("GroupActive")
        .start_time(start)
        .end_time(end)
        .period(3600)
        .statistics(Statistic::Maximum)
        .send()
        .await
        .unwrap();
    assert_eq!(ga.datapoints()[0].maximum(), Some(0.0));
}

#[tokio::test]
async fn cloudwatch_throttling_is_retried() {
    let Some(moto) = Moto::start() else { return };
    let c = clients(&moto).await;
    let sink = Arc::new(CloudWatchSink::new(&c, "BatonRetry"));
    moto.fail("PutMetricData", "Throttling", 400, 3);
    let (h, _j) = Notifier::start_with_metrics(
        Vec::new(),
        Some(MetricsPipeline {
            options: cw_opts(),
            sink: sink as _,
            clock: baton_notifier::metrics::system_wall_clock(),
        }),
        NotifierOptions {
            retry_base: Duration::from_millis(50),
            ..NotifierOptions::default()
        },
    );
    h.metric(Sample::HeartbeatRtt {
        peer: "node-1".into(),
        path: 0,
        ms: 0.25,
    });
    let r = h.shutdown(Duration::from_secs(10)).await;
    assert!(!r.timed_out);
    let s = h
        .stats()
        .into_iter()
        .find(|s| s.name == "cloudwatch")
        .unwrap();
    assert_eq!(s.dropped, 0, "{s:?}");
    assert!(s.delivered >= 1);
    assert!(moto.calls()["monitoring.PutMetricData"] >= 4);
}

fn mail_settings(port: u16) -> MailSettings {
    MailSettings {
        server: "127.0.0.1".into(),
        port,
        security: MailSecurity::None,
        credentials: None,
        from: "baton@example.com".into(),
        to: vec!["ops@example.com".into(), "oncall@example.com".into()],
        timeout: Duration::from_secs(5),
        subject_prefix: Some("[Baton]".into()),
        docs_url: None,
        filter: EventFilter::min(Severity::Warning),
    }
}

#[tokio::test]
async fn mail_reaches_a_real_smtp_server_with_every_recipient() {
    let Some(smtp) = SmtpServer::start() else {
        return;
    };
    let sink = MailSink::new(&mail_settings(smtp.port)).unwrap();
    sink.deliver(&[event(
        &GROUP_FAILOVER,
        1,
        "group web fails over from node-1 to node-2",
    )])
    .await
    .unwrap();
    sink.deliver(&[
        event(&SERVER_DOWN, 2, "server node-1 is down"),
        event(
            &GROUP_FAILOVER,
            3,
            "group web fails over from node-1 to node-2",
        ),
    ])
    .await
    .unwrap();
    let m = smtp.messages();
    assert_eq!(m.len(), 2);
    assert_eq!(m[0].from, "baton@example.com");
    assert_eq!(m[0].to, vec!["ops@example.com", "oncall@example.com"]);
    assert_eq!(
        m[0].header("Subject").unwrap(),
        "[Baton] prod/node-2 BTN-2107 warning: group web fails over from node-1 to node-2"
    );
    assert!(
        m[0].raw.contains("BTN-2107 (warning) group web fails over"),
        "{}",
        m[0].raw
    );
    assert!(
        m[1].header("Subject").unwrap().contains("2 events"),
        "{}",
        m[1].raw
    );
}

#[tokio::test]
async fn mail_authenticates_and_a_bad_password_is_permanent() {
    let Some(smtp) = SmtpServer::start_with(SmtpOptions {
        auth: Some(("baton".into(), "s3cret".into())),
        ..SmtpOptions::default()
    }) else {
        return;
    };
    let mut s = mail_settings(smtp.port);
    s.credentials = Some(("baton".into(), "s3cret".into()));
    MailSink::new(&s)
        .unwrap()
        .deliver(&[event(&GROUP_FAILOVER, 1, "x")])
        .await
        .unwrap();
    let m = smtp.messages();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].login.as_deref(), Some("baton"));

    s.credentials = Some(("baton".into(), "wrong".into()));
    let e = MailSink::new(&s)
        .unwrap()
        .deliver(&[event(&GROUP_FAILOVER, 2, "x")])
        .await
        .unwrap_err();
    assert!(!e.is_transient(), "{e}");
    assert_eq!(smtp.messages().len(), 1);
}

#[tokio::test]
async fn webhook_posts_signed_json_and_retries_5xx() {
    let secret = b"webhook-secret".to_vec();
    let rx = WebhookReceiver::start(Some(&secret));
    let sink: Arc<dyn EventSink> = Arc::new(
        WebhookSink::new(
            "slack",
            &rx.url,
            Some(secret),
            Duration::from_secs(2),
            EventFilter::min(Severity::Warning),
            None,
            system_clock(),
        )
        .unwrap(),
    );
    rx.respond(&[503, 429]);
    let (h, _j) = Notifier::start(
        vec![sink],
        NotifierOptions {
            retry_base: Duration::from_millis(20),
            ..NotifierOptions::default()
        },
    );
    h.publish(event(
        &GROUP_FAILOVER,
        1,
        "group web fails over from node-1 to node-2",
    ));
    let r = h.shutdown(Duration::from_secs(5)).await;
    assert!(!r.timed_out);
    let d = rx.deliveries();
    assert_eq!(
        d.iter().map(|x| x.status).collect::<Vec<_>>(),
        vec![503, 429, 200]
    );
    let ok = &d[2];
    assert_eq!(ok.signature_ok, Some(true));
    let ts: u64 = ok.headers["x-baton-timestamp"].parse().unwrap();
    let body = ok.json();
    assert_eq!(body["timestamp"], ts);
    assert_eq!(body["count"], 1);
    assert_eq!(
        body["text"],
        "*BTN-2107* warning prod/node-2: group web fails over from node-1 to node-2"
    );
    assert_eq!(body["events"][0]["id"], "BTN-2107");
    assert_eq!(ok.headers["content-type"], "application/json");

    // A receiver with another secret sees a bad signature; a 4xx is permanent.
    let other = WebhookReceiver::start(Some(b"another"));
    other.respond(&[404]);
    let sink = WebhookSink::new(
        "w",
        &other.url,
        Some(b"webhook-secret".to_vec()),
        Duration::from_secs(2),
        EventFilter::min(Severity::Info),
        None,
        system_clock(),
    )
    .unwrap();
    let e = sink
        .deliver(&[event(&GROUP_FAILOVER, 2, "x")])
        .await
        .unwrap_err();
    assert!(!e.is_transient(), "{e}");
    assert!(e.to_string().contains("HTTP 404"), "{e}");
    assert!(
        !e.to_string().contains("/hook"),
        "the URL path is redacted: {e}"
    );
    assert_eq!(other.deliveries()[0].signature_ok, Some(false));
}

/// Down and slow endpoints never hold up the caller: publish returns at once while
/// every sink is stuck, and the shutdown deadline bounds the flush.
#[tokio::test]
async fn unreachable_and_slow_sinks_never_block_publish() {
    let slow_hook = WebhookReceiver::start(None);
    slow_hook.set_delay(Duration::from_secs(30));
    let Some(slow_smtp) = SmtpServer::start_with(SmtpOptions {
        delay: Duration::from_secs(30),
        ..SmtpOptions::default()
    }) else {
        return;
    };
    let dead_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let sinks: Vec<Arc<dyn EventSink>> = vec![
        Arc::new(MailSink::new(&mail_settings(slow_smtp.port)).unwrap()),
        Arc::new(
            WebhookSink::new(
                "slow",
                &slow_hook.url,
                None,
                Duration::from_secs(20),
                EventFilter::min(Severity::Info),
                None,
                system_clock(),
            )
            .unwrap(),
        ),
        Arc::new(
            WebhookSink::new(
                "dead",
                &format!("http://127.0.0.1:{dead_port}/x"),
                None,
                Duration::from_secs(1),
                EventFilter::min(Severity::Info),
                None,
                system_clock(),
            )
            .unwrap(),
        ),
    ];
    let (h, _j) = Notifier::start(
        sinks,
        NotifierOptions {
            queue_len: 100,
            ..NotifierOptions::default()
        },
    );
    let t = Instant::now();
    for i in 0..1000 {
        h.publish(event(&GROUP_FAILOVER, i + 1, "fails over"));
    }
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "publishing 1000 events took {took:?}"
    );
    let stats = h.stats();
    for s in &stats {
        // Queue of 100 (plus what the task already took): the rest was dropped, counted.
        assert!(s.dropped >= 1000 - 100 - 100, "{s:?}");
        assert_eq!(
            s.delivered + s.dropped + s.queued + s.coalesced,
            1000,
            "{s:?}"
        );
    }
    let t = Instant::now();
    let r = h.shutdown(Duration::from_millis(500)).await;
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(r.timed_out);
    assert!(r.undelivered() > 0);
    let drops = h.drop_events();
    assert_eq!(drops.len(), 3, "{drops:?}");
}
