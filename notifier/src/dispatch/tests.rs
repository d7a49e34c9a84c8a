#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::sync::atomic::AtomicUsize;
use std::sync::Mutex;

use async_trait::async_trait;
use baton_core::events::{
    GROUP_ACTIVATED, GROUP_ACTIVATION_FAILED, GROUP_FINAL_ACTION, SERVER_DOWN,
};

use super::*;

/// A scripted sink: optional delay per attempt, errors for the first attempts, an
/// error for every attempt, or a panic.
#[derive(Default)]
struct TestSink {
    name: String,
    min: Option<Severity>,
    delay: Duration,
    script: Mutex<VecDeque<SinkError>>,
    always: Option<SinkError>,
    panic: bool,
    attempts: AtomicUsize,
    attempt_times: Mutex<Vec<Instant>>,
    batches: Mutex<Vec<Vec<Event>>>,
}

impl TestSink {
    fn new(name: &str) -> TestSink {
        TestSink {
            name: name.to_string(),
            ..TestSink::default()
        }
    }
    fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
    fn min(mut self, s: Severity) -> Self {
        self.min = Some(s);
        self
    }
    fn fail_first(self, errs: Vec<SinkError>) -> Self {
        *self.script.lock().unwrap() = errs.into();
        self
    }
    fn always(mut self, e: SinkError) -> Self {
        self.always = Some(e);
        self
    }
    fn panicking(mut self) -> Self {
        self.panic = true;
        self
    }
    fn got(&self) -> Vec<Event> {
        self.batches.lock().unwrap().concat()
    }
    fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl EventSink for TestSink {
    fn name(&self) -> &str {
        &self.name
    }
    fn min_severity(&self) -> Severity {
        self.min.unwrap_or(Severity::Info)
    }
    async fn deliver(&self, batch: &[Event]) -> Result<(), SinkError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        self.attempt_times.lock().unwrap().push(crate::clock::now());
        if self.panic {
            panic!("test sink panics");
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if let Some(e) = self.script.lock().unwrap().pop_front() {
            return Err(e);
        }
        if let Some(e) = &self.always {
            return Err(e.clone());
        }
        self.batches.lock().unwrap().push(batch.to_vec());
        Ok(())
    }
}

fn ev(i: u64) -> Event {
    let mut e = Event::new(&GROUP_ACTIVATED, format!("group g{i} activated")).group("g");
    e.seq = i;
    e
}

fn start(sinks: &[&Arc<TestSink>], opts: NotifierOptions) -> (NotifierHandle, JoinHandle<()>) {
    let sinks: Vec<Arc<dyn EventSink>> = sinks
        .iter()
        .map(|s| Arc::clone(*s) as Arc<dyn EventSink>)
        .collect();
    Notifier::start(sinks, opts)
}

fn stat(h: &NotifierHandle, name: &str) -> SinkStats {
    h.stats().into_iter().find(|s| s.name == name).unwrap()
}

fn seqs(evs: &[Event]) -> Vec<u64> {
    evs.iter().map(|e| e.seq).collect()
}

#[tokio::test(start_paused = true)]
async fn slow_sink_blocks_neither_publish_nor_other_sinks() {
    let slow = Arc::new(TestSink::new("slow").delay(Duration::from_secs(3600)));
    let fast = Arc::new(TestSink::new("fast"));
    let (h, _join) = start(&[&slow, &fast], NotifierOptions::default());

    let t0 = crate::clock::now();
    for i in 1..=50 {
        h.publish(ev(i));
    }
    assert_eq!(crate::clock::now(), t0, "publish must not wait");

    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(seqs(&fast.got()), (1..=50).collect::<Vec<_>>());
    assert!(slow.got().is_empty());
    assert_eq!(slow.attempts(), 1, "one batch in flight");
    let s = stat(&h, "slow");
    assert_eq!((s.queued, s.delivered, s.dropped), (50, 0, 0));
    let f = stat(&h, "fast");
    assert_eq!((f.queued, f.delivered, f.dropped), (0, 50, 0));

    // Still immediate while the slow sink is stuck.
    let t1 = crate::clock::now();
    h.publish(ev(51));
    assert_eq!(crate::clock::now(), t1);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(fast.got().len(), 51);
    assert_eq!(stat(&h, "slow").queued, 51);
}

#[tokio::test(start_paused = true)]
async fn full_queue_drops_and_counts() {
    let slow = Arc::new(TestSink::new("slow").delay(Duration::from_secs(3600)));
    let roomy = Arc::new(TestSink::new("roomy"));
    let opts = NotifierOptions {
        queue_len: 4,
        ..NotifierOptions::default()
    };
    let (h, _join) = start(&[&slow, &roomy], opts);
    // The tasks have not run yet: the queues take 4 events each.
    for i in 1..=10 {
        h.publish(ev(i));
    }
    let s = stat(&h, "slow");
    assert_eq!((s.queued, s.dropped), (4, 6));

    tokio::time::sleep(Duration::from_secs(1)).await;
    // roomy drained its queue in the meantime but had dropped as well while nobody ran.
    assert_eq!(seqs(&roomy.got()), vec![1, 2, 3, 4]);
    for i in 11..=14 {
        h.publish(ev(i));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(roomy.got().len(), 8);
    let s = stat(&h, "slow");
    // The first 4 are in flight; 4 more fit in the queue.
    assert_eq!((s.queued, s.dropped, s.delivered), (8, 6, 0));

    let drops = h.drop_events();
    assert_eq!(drops.len(), 2);
    let d = drops.iter().find(|e| e.fields["sink"] == "slow").unwrap();
    assert_eq!(d.id, "BTN-5001");
    assert_eq!(d.fields["dropped"], 6);
    assert_eq!(d.fields["total_dropped"], 6);
    assert!(d.message.contains("slow"), "{}", d.message);
    assert!(h.drop_events().is_empty(), "reported once");
    h.publish(ev(15));
    let drops = h.drop_events();
    assert_eq!(drops.len(), 1);
    assert_eq!(drops[0].fields["dropped"], 1);
    assert_eq!(drops[0].fields["total_dropped"], 7);
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_with_growing_jittered_backoff() {
    let t = |m: &str| SinkError::Transient(m.to_string());
    let sink = Arc::new(TestSink::new("flaky").fail_first(vec![t("503"), t("503"), t("timeout")]));
    let (h, _join) = start(&[&sink], NotifierOptions::default());
    h.publish(ev(1));
    tokio::time::sleep(Duration::from_secs(30)).await;

    assert_eq!(seqs(&sink.got()), vec![1]);
    assert_eq!(sink.attempts(), 4);
    let s = stat(&h, "flaky");
    assert_eq!(
        (s.delivered, s.dropped, s.failed_batches, s.queued),
        (1, 0, 0, 0)
    );
    assert!(s.last_error.unwrap().contains("timeout"));

    // Retry k waits between half and all of 200ms * 2^(k-1).
    let times = sink.attempt_times.lock().unwrap().clone();
    for k in 1..times.len() {
        let gap = times[k] - times[k - 1];
        let full = Duration::from_millis(200) * (1 << (k - 1));
        assert!(
            gap >= full / 2 && gap <= full,
            "retry {k}: {gap:?} vs {full:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn backoff_is_capped_and_exhausted_batches_are_dropped() {
    let sink = Arc::new(TestSink::new("down").always(SinkError::Transient("refused".into())));
    let opts = NotifierOptions {
        max_attempts: 6,
        retry_base: Duration::from_secs(1),
        retry_max: Duration::from_secs(4),
        ..NotifierOptions::default()
    };
    let (h, _join) = start(&[&sink], opts);
    h.publish(ev(1));
    h.publish(ev(2));
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(sink.attempts(), 6);
    let times = sink.attempt_times.lock().unwrap().clone();
    for w in times.windows(2) {
        assert!(w[1] - w[0] <= Duration::from_secs(4));
    }
    let s = stat(&h, "down");
    assert_eq!(
        (s.delivered, s.dropped, s.failed_batches, s.queued),
        (0, 2, 1, 0)
    );
    assert!(s.last_error.unwrap().contains("gave up after 6 attempts"));

    // The sink task goes on with the next batch.
    h.publish(ev(3));
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(sink.attempts(), 12);
    assert_eq!(stat(&h, "down").failed_batches, 2);
}

#[tokio::test(start_paused = true)]
async fn permanent_failure_drops_without_retry() {
    let sink = Arc::new(TestSink::new("bad").fail_first(vec![SinkError::Permanent("403".into())]));
    let (h, _join) = start(&[&sink], NotifierOptions::default());
    h.publish(ev(1));
    h.publish(ev(2));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(sink.attempts(), 1);
    let s = stat(&h, "bad");
    assert_eq!(
        (s.delivered, s.dropped, s.failed_batches, s.queued),
        (0, 2, 1, 0)
    );
    assert!(s.last_error.unwrap().contains("403"));

    h.publish(ev(3));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(seqs(&sink.got()), vec![3]);
    assert_eq!(stat(&h, "bad").delivered, 1);
}

#[tokio::test(start_paused = true)]
async fn batches_hold_what_is_queued_up_to_max_batch() {
    let sink = Arc::new(TestSink::new("b"));
    let opts = NotifierOptions {
        max_batch: 3,
        ..NotifierOptions::default()
    };
    let (h, _join) = start(&[&sink], opts);
    for i in 1..=7 {
        h.publish(ev(i));
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    let sizes: Vec<usize> = sink.batches.lock().unwrap().iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![3, 3, 1]);
    assert_eq!(seqs(&sink.got()), (1..=7).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn shutdown_flushes_within_deadline() {
    let sink = Arc::new(TestSink::new("s").delay(Duration::from_secs(1)));
    let opts = NotifierOptions {
        max_batch: 1,
        ..NotifierOptions::default()
    };
    let (h, join) = start(&[&sink], opts);
    for i in 1..=3 {
        h.publish(ev(i));
    }
    let t0 = crate::clock::now();
    let report = h.shutdown(Duration::from_secs(10)).await;
    let took = t0.elapsed();
    assert!(!report.timed_out, "{report:?}");
    assert_eq!(report.undelivered(), 0);
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert_eq!(seqs(&sink.got()), vec![1, 2, 3]);
    join.await.unwrap();

    // After shutdown new events are refused and counted.
    h.publish(ev(4));
    let s = stat(&h, "s");
    assert_eq!((s.delivered, s.dropped, s.queued), (3, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn shutdown_deadline_counts_what_is_left() {
    let slow = Arc::new(TestSink::new("slow").delay(Duration::from_secs(1)));
    let fast = Arc::new(TestSink::new("fast"));
    let opts = NotifierOptions {
        max_batch: 1,
        ..NotifierOptions::default()
    };
    let (h, join) = start(&[&slow, &fast], opts);
    for i in 1..=5 {
        h.publish(ev(i));
    }
    let t0 = crate::clock::now();
    let report = h.shutdown(Duration::from_millis(2500)).await;
    let took = t0.elapsed();
    assert!(report.timed_out);
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(report.undelivered(), 3);
    assert_eq!(
        report.sinks,
        vec![
            SinkShutdown {
                name: "slow".into(),
                undelivered: 3
            },
            SinkShutdown {
                name: "fast".into(),
                undelivered: 0
            },
        ]
    );
    assert_eq!(seqs(&slow.got()), vec![1, 2]);
    assert_eq!(fast.got().len(), 5);
    let s = stat(&h, "slow");
    assert_eq!((s.delivered, s.dropped, s.queued), (2, 3, 0));
    assert!(s.last_error.unwrap().contains("shutdown deadline"));
    join.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_gives_up_retrying_at_the_deadline() {
    let sink = Arc::new(TestSink::new("down").always(SinkError::Transient("refused".into())));
    let opts = NotifierOptions {
        max_attempts: 100,
        ..NotifierOptions::default()
    };
    let (h, join) = start(&[&sink], opts);
    h.publish(ev(1));
    h.publish(ev(2));
    let report = h.shutdown(Duration::from_secs(5)).await;
    assert!(report.timed_out);
    assert_eq!(report.undelivered(), 2);
    assert!(sink.attempts() > 1 && sink.attempts() < 100);
    join.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn min_severity_filters_per_sink() {
    let loud = Arc::new(TestSink::new("loud").min(Severity::Warning));
    let all = Arc::new(TestSink::new("all"));
    let (h, _join) = start(&[&loud, &all], NotifierOptions::default());
    h.publish(ev(1)); // info
    let mut w = Event::new(&SERVER_DOWN, "server node-2 down").peer("node-2");
    w.seq = 2;
    h.publish(w);
    let mut e = Event::new(&GROUP_ACTIVATION_FAILED, "activation failed").group("g");
    e.seq = 3;
    h.publish(e);
    let mut c = Event::new(&GROUP_FINAL_ACTION, "final action").group("g");
    c.seq = 4;
    h.publish(c);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(seqs(&loud.got()), vec![2, 3, 4]);
    assert_eq!(seqs(&all.got()), vec![1, 2, 3, 4]);
    let s = stat(&h, "loud");
    assert_eq!((s.delivered, s.dropped), (3, 0));
}

#[tokio::test(start_paused = true)]
async fn repeats_are_folded_only_when_enabled() {
    fn burst(h: &NotifierHandle) {
        let mut seq = 0;
        let mut mk = |group: &str, t: u64| {
            seq += 1;
            let mut e = ev(seq).group(group);
            e.time_ms = t;
            e
        };
        for t in 0..5 {
            h.publish(mk("g", 1000 + t * 100));
        }
        h.publish(mk("other", 1200));
        h.publish(mk("g", 60_000)); // outside the window of the first
    }

    let sink = Arc::new(TestSink::new("c"));
    let opts = NotifierOptions {
        coalesce_window: Duration::from_secs(10),
        ..NotifierOptions::default()
    };
    let (h, _join) = start(&[&sink], opts);
    burst(&h);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let got = sink.got();
    assert_eq!(seqs(&got), vec![1, 6, 7]);
    assert_eq!(got[0].fields["occurrences"], 5);
    assert_eq!(got[0].fields["last_seq"], 5);
    assert_eq!(got[0].fields["last_time_ms"], 1400);
    assert!(got[1].fields.is_empty());
    let s = stat(&h, "c");
    assert_eq!((s.delivered, s.coalesced, s.queued), (3, 4, 0));

    let plain = Arc::new(TestSink::new("p"));
    let (h, _join) = start(&[&plain], NotifierOptions::default());
    burst(&h);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(plain.got().len(), 7);
    assert_eq!(stat(&h, "p").coalesced, 0);
}

#[tokio::test(start_paused = true)]
async fn dropping_every_handle_drains_and_ends() {
    let sink = Arc::new(TestSink::new("s").delay(Duration::from_secs(1)));
    let (h, join) = start(&[&sink], NotifierOptions::default());
    h.publish(ev(1));
    h.publish(ev(2));
    drop(h);
    join.await.unwrap();
    assert_eq!(seqs(&sink.got()), vec![1, 2]);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_sink_is_reported_and_others_go_on() {
    let bad = Arc::new(TestSink::new("bad").panicking());
    let good = Arc::new(TestSink::new("good"));
    let (h, join) = start(&[&bad, &good], NotifierOptions::default());
    h.publish(ev(1));
    tokio::time::sleep(Duration::from_millis(10)).await;
    h.publish(ev(2));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(good.got().len(), 2);
    let s = stat(&h, "bad");
    assert_eq!((s.delivered, s.dropped, s.queued), (0, 2, 0));
    assert!(s.last_error.unwrap().contains("abnormally"));
    let report = h.shutdown(Duration::from_secs(1)).await;
    assert!(!report.timed_out, "{report:?}");
    join.await.unwrap();
}

#[test]
fn backoff_bounds() {
    // Defaults: base 200 ms, cap 10 s; each delay is in [half, whole] of the doubled base.
    let opts = NotifierOptions::default();
    let ms = Duration::from_millis;
    let expected = [
        (1, ms(100), ms(200)),
        (2, ms(200), ms(400)),
        (3, ms(400), ms(800)),
        (4, ms(800), ms(1_600)),
        (5, ms(1_600), ms(3_200)),
        (6, ms(3_200), ms(6_400)),
        (7, ms(5_000), ms(10_000)),
        (39, ms(5_000), ms(10_000)),
        (u32::MAX, ms(5_000), ms(10_000)),
    ];
    for (attempt, lo, hi) in expected {
        let draws: Vec<Duration> = (0..200).map(|_| backoff(&opts, attempt)).collect();
        for d in &draws {
            assert!(*d >= lo && *d <= hi, "attempt {attempt}: {d:?}");
        }
        // The jitter spreads over the range (200 draws all in one fifth of it: ~1e-19).
        let span = hi - lo;
        let (min, max) = (draws.iter().min().unwrap(), draws.iter().max().unwrap());
        assert!(
            *min < lo + span / 5 && *max > hi - span / 5,
            "attempt {attempt}: {min:?}..{max:?}"
        );
    }
}

#[test]
fn zero_options_are_raised() {
    let o = NotifierOptions {
        queue_len: 0,
        max_batch: 0,
        max_attempts: 0,
        ..NotifierOptions::default()
    }
    .normalized();
    assert_eq!((o.queue_len, o.max_batch, o.max_attempts), (1, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn shutdown_after_the_tasks_were_aborted_counts_what_was_queued() {
    let sink = Arc::new(TestSink::new("s").delay(Duration::from_secs(3600)));
    let (h, join) = start(&[&sink], NotifierOptions::default());
    for i in 1..=3 {
        h.publish(ev(i));
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    join.abort();
    assert!(join.await.unwrap_err().is_cancelled());
    let report = h.shutdown(Duration::from_secs(1)).await;
    assert!(report.timed_out);
    assert_eq!(report.undelivered(), 3);
    let s = stat(&h, "s");
    assert_eq!((s.delivered, s.dropped, s.queued), (0, 3, 0));
    h.publish(ev(4));
    assert_eq!(stat(&h, "s").dropped, 4);
}

#[tokio::test(start_paused = true)]
async fn unbounded_shutdown_deadline_does_not_overflow() {
    let sink = Arc::new(TestSink::new("s").delay(Duration::from_secs(1)));
    let (h, join) = start(&[&sink], NotifierOptions::default());
    h.publish(ev(1));
    let report = h.shutdown(Duration::MAX).await;
    assert!(!report.timed_out);
    assert_eq!(seqs(&sink.got()), vec![1]);
    join.await.unwrap();
}

/// A sink that takes only events of group `g2` (its own `accepts`).
struct Picky(TestSink);

#[async_trait]
impl EventSink for Picky {
    fn name(&self) -> &str {
        "picky"
    }
    fn accepts(&self, ev: &Event) -> bool {
        ev.group.as_deref() == Some("g2")
    }
    fn max_batch(&self) -> Option<usize> {
        Some(2)
    }
    async fn deliver(&self, batch: &[Event]) -> Result<(), SinkError> {
        self.0.deliver(batch).await
    }
}

#[tokio::test(start_paused = true)]
async fn sinks_filter_with_accepts_and_cap_their_batches() {
    let picky = Arc::new(Picky(TestSink::new("picky")));
    let (h, _join) = Notifier::start(
        vec![Arc::clone(&picky) as Arc<dyn EventSink>],
        NotifierOptions::default(),
    );
    for i in 1..=7 {
        h.publish(ev(i).group(if i % 2 == 0 { "g1" } else { "g2" }));
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    let batches = picky.0.batches.lock().unwrap().clone();
    assert_eq!(
        batches.iter().map(|b| seqs(b)).collect::<Vec<_>>(),
        vec![vec![1, 3], vec![5, 7]]
    );
    let s = stat(&h, "picky");
    assert_eq!((s.delivered, s.dropped), (4, 0));
}

/// A monitor flapping error/normal every second for 30 s, with a 10 s window: the first
/// of each goes out at once, the repeats as one message per window with a count, the
/// latest state last; nothing is lost (delivered + coalesced = published).
#[tokio::test(start_paused = true)]
async fn flapping_alerts_are_coalesced_with_a_count() {
    use baton_core::events::{MONITOR_ERROR, MONITOR_NORMAL};
    let sink = Arc::new(TestSink::new("f"));
    let opts = NotifierOptions {
        coalesce_window: Duration::from_secs(10),
        ..NotifierOptions::default()
    };
    let (h, _join) = start(&[&sink], opts);
    let mut seq = 0;
    for i in 0..30u64 {
        seq += 1;
        let def = if i % 2 == 0 {
            &MONITOR_ERROR
        } else {
            &MONITOR_NORMAL
        };
        let mut e = Event::new(def, "flap").monitor("http1");
        e.seq = seq;
        e.time_ms = i * 1000;
        h.publish(e);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let first_two: Vec<u64> = seqs(&sink.got()).into_iter().take(2).collect();
    assert_eq!(first_two, vec![1, 2], "first occurrences are never delayed");
    let r = h.shutdown(Duration::from_secs(5)).await;
    assert!(!r.timed_out);
    let got = sink.got();
    let total: u64 = got
        .iter()
        .map(|e| {
            e.fields
                .get("occurrences")
                .and_then(|v| v.as_u64())
                .unwrap_or(1)
        })
        .sum();
    assert_eq!(total, 30);
    assert!(got.len() <= 10, "{} messages for 30 events", got.len());
    assert!(got.iter().any(|e| e.fields.contains_key("occurrences")));
    // The last message carries the latest state (the 30th event is a "normal").
    assert_eq!(got.last().unwrap().id, MONITOR_NORMAL.code());
    assert_eq!(got.last().unwrap().fields["last_seq"], 30);
    let s = stat(&h, "f");
    assert_eq!(s.delivered + s.coalesced, 30);
    assert_eq!((s.dropped, s.queued), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn held_repeats_count_as_dropped_when_the_deadline_passes() {
    let sink = Arc::new(TestSink::new("h"));
    let opts = NotifierOptions {
        coalesce_window: Duration::from_secs(60),
        ..NotifierOptions::default()
    };
    let (h, _join) = start(&[&sink], opts);
    h.publish(ev(1));
    tokio::time::sleep(Duration::from_millis(10)).await;
    h.publish(ev(2));
    h.publish(ev(3));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(seqs(&sink.got()), vec![1]);
    assert_eq!(stat(&h, "h").queued, 2);
    // Shutdown flushes the held repeats at once, as one event.
    let r = h.shutdown(Duration::from_secs(1)).await;
    assert!(!r.timed_out);
    let got = sink.got();
    assert_eq!(seqs(&got), vec![1, 2]);
    assert_eq!(got[1].fields["occurrences"], 2);
}
