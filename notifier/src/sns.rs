//! Amazon SNS: one message per event, published in batches of up to ten (`PublishBatch`).
//!
//! - Subject: `PREFIX CLUSTER/SERVER BTN-NNNN SEVERITY: TEXT` (at most 100 printable
//!   ASCII characters, as SNS requires).
//! - Message (`MessageStructure = json`): the text body for e-mail and SMS subscribers
//!   (`default`), the event as a JSON document for `sqs`, `lambda`, `http(s)` and
//!   `email-json` subscribers.
//! - Message attributes, for subscription filter policies: `event_id`, `severity`,
//!   `cluster`, `server`, `module`, and `group` / `resource` / `monitor` when set;
//!   `occurrences` (Number) when repeats were folded.
//! - FIFO topics (`.fifo`): the message group is the cluster, the deduplication id is
//!   `SERVER-SEQ`.
//!
//! Errors: throttling, 5xx and network failures are transient (retried by the
//! notifier); authorization, unknown topic and invalid parameters are permanent.
//! Entries of a batch that SNS accepted are not sent again when the notifier retries the
//! rest. The `PublishBatch` calls of one delivery run concurrently (one after the other
//! for FIFO topics, which keep the order).

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::Poll;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sns::types::{MessageAttributeValue, PublishBatchRequestEntry};
use baton_cloud_client::aws::{call, AwsClients, AwsFailure};
use baton_core::{Event, Severity};

use crate::filter::EventFilter;
use crate::render;
use crate::sink::{EventSink, SinkError};

/// SNS's limit on entries per `PublishBatch`.
pub const SNS_BATCH: usize = 10;
/// SNS's limit on one message (and on a whole batch): 256 KiB.
const SNS_MAX_BYTES: usize = 256 * 1024;

pub struct SnsSink {
    name: String,
    client: aws_sdk_sns::Client,
    topic_arn: String,
    filter: EventFilter,
    prefix: String,
    docs_url: Option<String>,
    /// Bound of one API call, SDK retries included.
    deadline: Duration,
    /// `(server, seq)` of events of the batch being delivered that SNS already took.
    sent: Mutex<HashSet<(String, u64)>>,
}

impl std::fmt::Debug for SnsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnsSink")
            .field("topic_arn", &self.topic_arn)
            .finish()
    }
}

/// The region in a topic ARN (`arn:aws:sns:REGION:ACCOUNT:NAME`).
pub fn arn_region(arn: &str) -> Option<&str> {
    arn.split(':').nth(3).filter(|r| !r.is_empty())
}

impl SnsSink {
    /// Build from the shared AWS client factory; a topic in another region than the
    /// factory's gets a client for its own region.
    pub fn new(
        clients: &AwsClients,
        topic_arn: &str,
        filter: EventFilter,
        prefix: Option<&str>,
        docs_url: Option<&str>,
    ) -> SnsSink {
        let clients = match arn_region(topic_arn) {
            Some(r) if clients.region().as_deref() != Some(r) => clients.with_region(r),
            _ => clients.clone(),
        };
        let per_call = Duration::from_millis(clients.settings().call_timeout.ms());
        let attempts = clients.settings().max_attempts.max(1);
        SnsSink {
            name: "sns".into(),
            client: aws_sdk_sns::Client::new(clients.sdk_config()),
            topic_arn: topic_arn.to_string(),
            filter,
            prefix: prefix.unwrap_or(render::DEFAULT_PREFIX).to_string(),
            docs_url: docs_url.map(str::to_string),
            deadline: per_call * attempts + Duration::from_secs(1),
            sent: Mutex::new(HashSet::new()),
        }
    }

    fn fifo(&self) -> bool {
        self.topic_arn.ends_with(".fifo")
    }

    /// The `PublishBatch` entry of one event.
    fn entry(&self, idx: usize, ev: &Event) -> Result<PublishBatchRequestEntry, SinkError> {
        let text = render::text(ev, self.docs_url.as_deref());
        let doc = render::event_json(ev, self.docs_url.as_deref()).to_string();
        let structured = serde_json::json!({
            "default": text,
            "email": text,
            "sms": render::truncate_ascii(&ev.line(), 140),
            "sqs": doc,
            "lambda": doc,
            "http": doc,
            "https": doc,
            "email-json": doc,
            "firehose": doc,
        })
        .to_string();
        if structured.len() > SNS_MAX_BYTES {
            return Err(SinkError::Permanent(format!(
                "event {} seq {} is {} bytes, over the SNS message limit",
                ev.id,
                ev.seq,
                structured.len()
            )));
        }
        let mut b = PublishBatchRequestEntry::builder()
            .id(format!("e{idx}"))
            .subject(render::subject(&self.prefix, ev, 100))
            .message(structured)
            .message_structure("json");
        let attr = |v: &str| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
        };
        let mut attrs = vec![
            ("event_id", ev.id.clone()),
            ("severity", ev.severity.as_str().to_string()),
            ("cluster", ev.cluster.clone()),
            ("server", ev.server.clone()),
            ("module", ev.module.clone()),
        ];
        for (k, v) in [
            ("group", &ev.group),
            ("resource", &ev.resource),
            ("monitor", &ev.monitor),
        ] {
            if let Some(v) = v {
                attrs.push((k, v.clone()));
            }
        }
        for (k, v) in attrs {
            // SNS refuses empty attribute values.
            if v.is_empty() {
                continue;
            }
            let a = attr(&v).map_err(|e| SinkError::Permanent(e.to_string()))?;
            b = b.message_attributes(k, a);
        }
        let n = render::occurrences(ev);
        if n > 1 {
            let a = MessageAttributeValue::builder()
                .data_type("Number")
                .string_value(n.to_string())
                .build()
                .map_err(|e| SinkError::Permanent(e.to_string()))?;
            b = b.message_attributes("occurrences", a);
        }
        if self.fifo() {
            b = b
                .message_group_id(if ev.cluster.is_empty() {
                    "baton".to_string()
                } else {
                    ev.cluster.clone()
                })
                .message_deduplication_id(format!("{}-{}", ev.server, ev.seq));
        }
        b.build().map_err(|e| SinkError::Permanent(e.to_string()))
    }

    fn lock_sent(&self) -> std::sync::MutexGuard<'_, HashSet<(String, u64)>> {
        // A poisoned lock holds a plain set; keep using it.
        self.sent.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn publish_chunk(&self, chunk: &[&Event]) -> Result<(), SinkError> {
        let mut entries = Vec::with_capacity(chunk.len());
        for (i, ev) in chunk.iter().enumerate() {
            entries.push(self.entry(i, ev)?);
        }
        let fut = self
            .client
            .publish_batch()
            .topic_arn(&self.topic_arn)
            .set_publish_batch_request_entries(Some(entries))
            .send();
        let out = call("sns.PublishBatch", self.deadline, fut)
            .await
            .map_err(to_sink_error)?;
        {
            let mut sent = self.lock_sent();
            for ok in out.successful() {
                if let Some(i) = ok
                    .id()
                    .and_then(|id| id.strip_prefix('e')?.parse::<usize>().ok())
                {
                    if let Some(ev) = chunk.get(i).filter(|e| e.seq != 0) {
                        sent.insert((ev.server.clone(), ev.seq));
                    }
                }
            }
        }
        let failed = out.failed();
        if failed.is_empty() {
            return Ok(());
        }
        let first = &failed[0];
        let msg = format!(
            "SNS refused {} of {} messages: {}: {}",
            failed.len(),
            chunk.len(),
            first.code(),
            first.message().unwrap_or("")
        );
        if failed.iter().all(|f| f.sender_fault()) {
            Err(SinkError::Permanent(msg))
        } else {
            Err(SinkError::Transient(msg))
        }
    }
}

/// Run futures concurrently on the current task and return their outputs in order.
async fn join_all<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *o = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// Throttling, 5xx and network failures are worth retrying; client errors are not.
pub(crate) fn to_sink_error(f: AwsFailure) -> SinkError {
    match f {
        u @ AwsFailure::Unavailable { .. } => SinkError::Transient(u.detail()),
        r @ AwsFailure::Rejected { .. } => SinkError::Permanent(r.to_string()),
    }
}

#[async_trait]
impl EventSink for SnsSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn min_severity(&self) -> Severity {
        self.filter.floor()
    }

    fn accepts(&self, ev: &Event) -> bool {
        self.filter.accepts(ev)
    }

    fn max_batch(&self) -> Option<usize> {
        Some(SNS_BATCH * 5)
    }

    async fn deliver(&self, batch: &[Event]) -> Result<(), SinkError> {
        let todo: Vec<&Event> = {
            let sent = self.lock_sent();
            batch
                .iter()
                .filter(|e| e.seq == 0 || !sent.contains(&(e.server.clone(), e.seq)))
                .collect()
        };
        let chunks: Vec<&[&Event]> = todo.chunks(SNS_BATCH).collect();
        let result = if self.fifo() {
            // FIFO topics keep the order: one call after the other.
            let mut r = Ok(());
            for chunk in chunks {
                if let Err(e) = self.publish_chunk(chunk).await {
                    r = Err(e);
                    break;
                }
            }
            r
        } else {
            // Standard topics do not order messages: the calls of a batch run together.
            let results =
                join_all(chunks.into_iter().map(|c| self.publish_chunk(c)).collect()).await;
            let errors: Vec<SinkError> = results.into_iter().filter_map(Result::err).collect();
            match errors.iter().find(|e| e.is_transient()) {
                Some(t) => Err(t.clone()),
                None => errors.into_iter().next().map_or(Ok(()), Err),
            }
        };
        if !matches!(result, Err(SinkError::Transient(_))) {
            // Delivered, or dropped for good: the next batch starts afresh.
            self.lock_sent().clear();
        }
        result
    }
}
