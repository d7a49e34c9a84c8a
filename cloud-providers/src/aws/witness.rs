//! Cloud witnesses: an S3 lease object ([`S3Witness`]) and a DynamoDB item
//! ([`DynamoWitness`]), both written with conditional requests through the AWS SDK.
//!
//! Servers share no clock with each other or with AWS, so a lease cannot carry an expiry
//! time. Expiry is judged by *observation*: every successful write bumps the writer's
//! counter in the lease document (`renewals`, preserved by every writer) and changes the
//! object's version (S3 ETag, DynamoDB `version`). A server assumes that another server's
//! grant may still be counted until it has seen that server's counter (or, to take over
//! from a partition it is not in, the whole version) unchanged for
//! `lease * 1.02 + 2 * deadline` on its own monotonic clock. Each write is conditional
//! on the version it read (S3 `If-Match` / `If-None-Match: *`, DynamoDB
//! `version = :v` / `attribute_not_exists(pk)`), so two servers racing on one version
//! produce exactly one winner; the loser's 412 / `ConditionalCheckFailedException` is a
//! denial.
//!
//! The rules of [`plan`] (pure, time injected) keep the invariant of
//! [`crate::witness`]: every server holding a valid grant is in the current holder
//! partition. All servers of a cluster must use the same lease.

use crate::aws::AwsServices;
use crate::clock::Instant;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use serde::{Deserialize, Serialize};

use super::client::{classify, http_status, AwsClients, AwsFailure};
use crate::witness::{
    check_epochs, check_name, check_servers, hold_for, merge_epochs, validate, VoteReply,
    VoteRequest, WitnessClient, WitnessError, MAX_EPOCHS,
};

/// Largest lease document read back (anything bigger is not ours).
const MAX_DOC: usize = 64 * 1024;

/// The lease document (S3 object body as JSON; DynamoDB item attributes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseDoc {
    pub cluster: String,
    /// The partition holding the vote, sorted.
    pub partition: Vec<String>,
    /// A switch to this partition waits until the servers it leaves out have lapsed;
    /// members of `partition` outside `pending` are denied meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Vec<String>>,
    /// The server that wrote this version.
    pub writer: String,
    /// Number of writes since the document was created.
    pub seq: u64,
    /// Max epoch per group seen by the witness.
    #[serde(default)]
    pub epochs: BTreeMap<String, u64>,
    /// Successful writes per server, preserved by every writer: lets a reader tell when
    /// a server last renewed even if it never saw the version that server wrote.
    #[serde(default)]
    pub renewals: BTreeMap<String, u64>,
}

/// What a client has observed of the lease, on its own clock.
#[derive(Debug, Default)]
pub struct Observer {
    /// Current version and when this client first saw it.
    version: Option<(String, Instant)>,
    /// Per server: its renewal counter and when this client first saw that value.
    counters: BTreeMap<String, (u64, Instant)>,
}

impl Observer {
    /// Record a read (or our own write) of `version` holding `doc`, at `now` (the
    /// instant the answer arrived).
    pub fn observe(&mut self, version: &str, doc: &LeaseDoc, now: Instant) {
        if self.version.as_ref().is_none_or(|(v, _)| v != version) {
            self.version = Some((version.to_string(), now));
        }
        for (w, n) in &doc.renewals {
            if self.counters.get(w).is_none_or(|(c, _)| c != n) {
                self.counters.insert(w.clone(), (*n, now));
            }
        }
    }

    /// How much longer `server`'s last grant may still be counted, or zero.
    fn server_remaining(&self, server: &str, hold: Duration, now: Instant) -> Duration {
        match self.counters.get(server) {
            Some((_, seen)) => (*seen + hold).saturating_duration_since(now),
            None => hold,
        }
    }

    /// How much longer any grant given under `version` may still be counted, or zero.
    fn version_remaining(&self, version: &str, hold: Duration, now: Instant) -> Duration {
        match &self.version {
            Some((v, seen)) if v == version => (*seen + hold).saturating_duration_since(now),
            _ => hold,
        }
    }
}

/// What a requester does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Create the lease (only if none exists).
    Create(LeaseDoc),
    /// Replace the current version with this document (only if it is still current).
    /// The grant is for `doc.partition`.
    Write { doc: LeaseDoc, detail: String },
    /// No write: the vote is held elsewhere.
    Deny(String),
}

/// Decide what `req` (with `partition`, validated and sorted) does given the current
/// lease (`None`: no lease object), from what this client observed. `hold` is how long a
/// grant may be counted after it was first observed: `lease * 1.02 + 2 * deadline`.
pub fn plan(
    obs: &Observer,
    current: Option<(&str, &LeaseDoc)>,
    req: &VoteRequest,
    partition: &[String],
    now: Instant,
    hold: Duration,
) -> Plan {
    let me = &req.server;
    let Some((version, doc)) = current else {
        let mut epochs = BTreeMap::new();
        merge_epochs(&mut epochs, &req.epochs);
        return Plan::Create(LeaseDoc {
            cluster: req.cluster.clone(),
            partition: partition.to_vec(),
            pending: None,
            writer: me.clone(),
            seq: 1,
            epochs,
            renewals: BTreeMap::from([(me.clone(), 1)]),
        });
    };
    // Every write must change the sequence number and the writer's renewal counter
    // (observers time grants by seeing them change): a document whose counters cannot
    // grow is not one Baton wrote, and is never written over.
    let mine = doc.renewals.get(me).copied().unwrap_or(0);
    let (Some(seq), Some(renewals)) = (doc.seq.checked_add(1), mine.checked_add(1)) else {
        return Plan::Deny(format!(
            "the lease document's counters are at their maximum (seq {}, renewals of {me} {mine}): it was not written by Baton; remove it",
            doc.seq
        ));
    };
    let next = |partition: Vec<String>, pending: Option<Vec<String>>| {
        let mut d = doc.clone();
        d.cluster = req.cluster.clone();
        d.partition = partition;
        d.pending = pending;
        d.writer = me.clone();
        d.seq = seq;
        merge_epochs(&mut d.epochs, &req.epochs);
        d.renewals.insert(me.clone(), renewals);
        d
    };
    if !doc.partition.contains(me) {
        let left = obs.version_remaining(version, hold, now);
        if left.is_zero() {
            return Plan::Write {
                doc: next(partition.to_vec(), None),
                detail: format!(
                    "took over from {:?}: the lease was unchanged for {} ms",
                    doc.partition,
                    hold.as_millis()
                ),
            };
        }
        return Plan::Deny(format!(
            "held by {:?}; a takeover needs the lease unchanged for {} ms more",
            doc.partition,
            left.as_millis()
        ));
    }
    if let Some(q) = &doc.pending {
        if !q.contains(me) {
            return Plan::Deny(format!(
                "the vote is moving from {:?} to {:?}, which does not include {me}",
                doc.partition, q
            ));
        }
    }
    // Servers left out of `partition` that may still count a grant.
    let candidates: BTreeSet<&String> = doc
        .renewals
        .keys()
        .chain(std::iter::once(&doc.writer))
        .collect();
    let blockers: Vec<(String, Duration)> = candidates
        .into_iter()
        .filter(|w| *w != me && !partition.contains(w))
        .map(|w| (w.clone(), obs.server_remaining(w, hold, now)))
        .filter(|(_, left)| !left.is_zero())
        .collect();
    if blockers.is_empty() {
        return Plan::Write {
            doc: next(partition.to_vec(), None),
            detail: if doc.partition == partition {
                "renewed".to_string()
            } else {
                format!("moved from {:?}", doc.partition)
            },
        };
    }
    let longest = blockers.iter().map(|b| b.1).max().unwrap_or_default();
    Plan::Write {
        doc: next(doc.partition.clone(), Some(partition.to_vec())),
        detail: format!(
            "renewed within {:?}; the move to {:?} waits {} ms for {} to lapse",
            doc.partition,
            partition,
            longest.as_millis(),
            blockers
                .iter()
                .map(|b| b.0.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A failed SDK call: our deadline, a conditional write that lost, or another failure.
enum CallError {
    Deadline,
    Lost,
    Missing,
    Failed(AwsFailure),
}

/// Run one SDK call within `budget`, classifying its failure. `lost` and `missing` name
/// the error codes that mean "the condition failed" and "no such object".
async fn aws<T, E, F>(
    op: &str,
    budget: Duration,
    fut: F,
    lost: &[&str],
    missing: &[&str],
) -> Result<T, CallError>
where
    F: std::future::Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    E: ProvideErrorMetadata + std::error::Error,
{
    match tokio::time::timeout(budget, fut).await {
        Err(_) => Err(CallError::Deadline),
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            let f = classify(op, &e);
            match f.code() {
                Some(c) if lost.contains(&c) => Err(CallError::Lost),
                Some(c) if missing.contains(&c) => Err(CallError::Missing),
                _ => {
                    // S3 answers a failed If-Match / If-None-Match with a bare 412.
                    if !lost.is_empty() && http_status(&e) == Some(412) {
                        Err(CallError::Lost)
                    } else {
                        Err(CallError::Failed(f))
                    }
                }
            }
        }
    }
}

fn call_error(e: CallError, deadline: Duration, what: &str) -> WitnessError {
    match e {
        CallError::Deadline => WitnessError::Timeout(deadline),
        CallError::Lost => WitnessError::Api(format!("{what}: unexpected condition failure")),
        CallError::Missing => WitnessError::Api(format!("{what} does not exist")),
        CallError::Failed(f) => WitnessError::Api(format!("{what}: {f}")),
    }
}

fn deny(holder: Vec<String>, epochs: BTreeMap<String, u64>, detail: String) -> VoteReply {
    VoteReply {
        granted: false,
        holder,
        epochs,
        detail,
    }
}

fn lock(m: &Mutex<Observer>) -> std::sync::MutexGuard<'_, Observer> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A lease document is input from outside (anyone with write access to the bucket or
/// table, or a damaged object): every field is checked before it is used. Names and
/// sizes as in a vote request (`BadReply`); epochs within [`baton_core::bounds::MAX_EPOCH`]
/// and counters (`seq`, `renewals`) within [`baton_core::bounds::MAX_VERSION`]
/// (`OutOfBounds`). A bad document never grants: the vote fails with the error.
pub fn check_doc(doc: &LeaseDoc, what: &str) -> Result<(), WitnessError> {
    let bad = |e: WitnessError| match e {
        WitnessError::InvalidRequest(m) => WitnessError::BadReply(format!("{what}: {m}")),
        e => e,
    };
    check_name("cluster", &doc.cluster).map_err(bad)?;
    check_name("server", &doc.writer).map_err(bad)?;
    check_servers(what, "`partition`", &doc.partition)?;
    if let Some(p) = &doc.pending {
        check_servers(what, "`pending`", p)?;
    }
    check_epochs(what, &doc.epochs)?;
    if doc.renewals.len() > MAX_EPOCHS {
        return Err(WitnessError::BadReply(format!(
            "{what}: `renewals` names {} servers, more than {MAX_EPOCHS}",
            doc.renewals.len()
        )));
    }
    for (w, &n) in &doc.renewals {
        check_name("server", w).map_err(bad)?;
        if !baton_core::bounds::version_ok(n) {
            return Err(WitnessError::OutOfBounds(format!(
                "{what}: renewal counter {n} of `{}` is above the bound {}",
                w.escape_debug(),
                baton_core::bounds::MAX_VERSION
            )));
        }
    }
    if !baton_core::bounds::version_ok(doc.seq) {
        return Err(WitnessError::OutOfBounds(format!(
            "{what}: sequence number {} is above the bound {}",
            doc.seq,
            baton_core::bounds::MAX_VERSION
        )));
    }
    Ok(())
}

fn check_cluster(doc: &LeaseDoc, req: &VoteRequest, what: &str) -> Result<(), WitnessError> {
    if doc.cluster != req.cluster {
        return Err(WitnessError::Rejected {
            code: "wrong-cluster".into(),
            message: format!(
                "{what} belongs to cluster `{}`, not `{}`: give each cluster its own lease",
                doc.cluster, req.cluster
            ),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------- S3

/// The S3 witness: one lease object per cluster.
#[derive(Debug)]
pub struct S3Witness {
    client: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    obs: Mutex<Observer>,
}

impl S3Witness {
    pub fn new(clients: &AwsClients, bucket: &str, key: &str) -> S3Witness {
        S3Witness {
            client: clients.s3(),
            bucket: bucket.to_string(),
            key: key.to_string(),
            obs: Mutex::new(Observer::default()),
        }
    }
}

impl S3Witness {
    fn what(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }
}

#[async_trait]
impl WitnessClient for S3Witness {
    fn kind(&self) -> &'static str {
        "s3"
    }

    async fn vote(&self, req: &VoteRequest, deadline: Duration) -> Result<VoteReply, WitnessError> {
        let start = crate::clock::now();
        let partition = validate(req)?;
        let what = self.what();
        let left = || deadline.saturating_sub(start.elapsed());
        let get = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .send();
        let current = match aws("GetObject", left(), get, &[], &["NoSuchKey"]).await {
            Ok(out) => {
                if out.content_length().unwrap_or(0) > MAX_DOC as i64 {
                    return Err(WitnessError::BadReply(format!(
                        "{what} is larger than {MAX_DOC} bytes: not a Baton lease"
                    )));
                }
                let etag = out.e_tag().unwrap_or_default().to_string();
                let body = match tokio::time::timeout(left(), out.body.collect()).await {
                    Err(_) => return Err(WitnessError::Timeout(deadline)),
                    Ok(Err(e)) => {
                        return Err(WitnessError::Api(format!("reading {what}: {e}")));
                    }
                    Ok(Ok(b)) => b.into_bytes(),
                };
                if etag.is_empty() {
                    return Err(WitnessError::BadReply(format!("{what} has no ETag")));
                }
                let doc: LeaseDoc = serde_json::from_slice(&body).map_err(|e| {
                    WitnessError::BadReply(format!("{what} is not a Baton lease document: {e}"))
                })?;
                check_doc(&doc, &what)?;
                check_cluster(&doc, req, &what)?;
                Some((etag, doc))
            }
            Err(CallError::Missing) => None,
            Err(e) => return Err(call_error(e, deadline, &what)),
        };
        let now = crate::clock::now();
        let hold = hold_for(req.lease) + 2 * deadline;
        let plan = {
            let mut obs = lock(&self.obs);
            if let Some((v, d)) = &current {
                obs.observe(v, d, now);
            }
            plan(
                &obs,
                current.as_ref().map(|(v, d)| (v.as_str(), d)),
                req,
                &partition,
                now,
                hold,
            )
        };
        let (doc, detail, put) = match plan {
            Plan::Deny(detail) => {
                let (holder, epochs) = current
                    .map(|(_, d)| (d.partition, d.epochs))
                    .unwrap_or_default();
                return Ok(deny(holder, epochs, detail));
            }
            Plan::Create(doc) => {
                let body = serde_json::to_vec(&doc).unwrap_or_default();
                let put = self
                    .client
                    .put_object()
                    .bucket(&self.bucket)
                    .key(&self.key)
                    .content_type("application/json")
                    .if_none_match("*")
                    .body(body.into());
                (doc, "created the lease".to_string(), put)
            }
            Plan::Write { doc, detail } => {
                let body = serde_json::to_vec(&doc).unwrap_or_default();
                let etag = current.as_ref().map(|c| c.0.clone()).unwrap_or_default();
                let put = self
                    .client
                    .put_object()
                    .bucket(&self.bucket)
                    .key(&self.key)
                    .content_type("application/json")
                    .if_match(etag)
                    .body(body.into());
                (doc, detail, put)
            }
        };
        // What is written is bounded too: a counter at its bound is not bumped past it.
        check_doc(&doc, &what)?;
        match aws(
            "PutObject",
            left(),
            put.send(),
            &["PreconditionFailed", "ConditionalRequestConflict"],
            &[],
        )
        .await
        {
            Ok(out) => {
                if let Some(etag) = out.e_tag() {
                    lock(&self.obs).observe(etag, &doc, crate::clock::now());
                }
                Ok(VoteReply {
                    granted: true,
                    holder: doc.partition,
                    epochs: doc.epochs,
                    detail,
                })
            }
            Err(CallError::Lost) => {
                let (holder, epochs) = current
                    .map(|(_, d)| (d.partition, d.epochs))
                    .unwrap_or_default();
                Ok(deny(
                    holder,
                    epochs,
                    format!("another server wrote {what} first"),
                ))
            }
            Err(e) => Err(call_error(e, deadline, &what)),
        }
    }
}

// ---------------------------------------------------------------- DynamoDB

/// The DynamoDB witness: one item (`pk` = item name, default the cluster name).
#[derive(Debug)]
pub struct DynamoWitness {
    client: aws_sdk_dynamodb::Client,
    table: String,
    item: String,
    obs: Mutex<Observer>,
}

impl DynamoWitness {
    pub fn new(clients: &AwsClients, table: &str, item: &str) -> DynamoWitness {
        DynamoWitness {
            client: clients.dynamodb(),
            table: table.to_string(),
            item: item.to_string(),
            obs: Mutex::new(Observer::default()),
        }
    }
}

impl DynamoWitness {
    fn what(&self) -> String {
        format!("DynamoDB item {}/{}", self.table, self.item)
    }
}

fn attr_s<'a>(item: &'a HashMap<String, AttributeValue>, k: &str) -> Result<&'a String, String> {
    item.get(k)
        .ok_or_else(|| format!("attribute `{k}` is missing"))?
        .as_s()
        .map_err(|_| format!("attribute `{k}` is not a string"))
}

fn attr_json<T: serde::de::DeserializeOwned + Default>(
    item: &HashMap<String, AttributeValue>,
    k: &str,
) -> Result<T, String> {
    match item.get(k) {
        None => Ok(T::default()),
        Some(v) => {
            let s = v
                .as_s()
                .map_err(|_| format!("attribute `{k}` is not a JSON string"))?;
            serde_json::from_str(s).map_err(|e| format!("attribute `{k}`: {e}"))
        }
    }
}

/// Item attributes → (version, document).
fn from_item(item: &HashMap<String, AttributeValue>) -> Result<(u64, LeaseDoc), String> {
    let version: u64 = item
        .get("version")
        .ok_or("attribute `version` is missing")?
        .as_n()
        .map_err(|_| "attribute `version` is not a number")?
        .parse()
        .map_err(|_| "attribute `version` is not a whole number")?;
    let partition = item
        .get("partition")
        .ok_or("attribute `partition` is missing")?
        .as_l()
        .map_err(|_| "attribute `partition` is not a list")?
        .iter()
        .map(|v| {
            v.as_s()
                .cloned()
                .map_err(|_| "`partition` holds a non-string")
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((
        version,
        LeaseDoc {
            cluster: attr_s(item, "cluster")?.clone(),
            partition,
            pending: attr_json(item, "pending")?,
            writer: attr_s(item, "writer")?.clone(),
            seq: version,
            epochs: attr_json(item, "epochs")?,
            renewals: attr_json(item, "renewals")?,
        },
    ))
}

fn to_item(pk: &str, doc: &LeaseDoc) -> HashMap<String, AttributeValue> {
    let mut m = HashMap::from([
        ("pk".to_string(), AttributeValue::S(pk.to_string())),
        (
            "cluster".to_string(),
            AttributeValue::S(doc.cluster.clone()),
        ),
        (
            "partition".to_string(),
            AttributeValue::L(
                doc.partition
                    .iter()
                    .map(|s| AttributeValue::S(s.clone()))
                    .collect(),
            ),
        ),
        ("writer".to_string(), AttributeValue::S(doc.writer.clone())),
        (
            "version".to_string(),
            AttributeValue::N(doc.seq.to_string()),
        ),
        ("epochs".to_string(), json(&doc.epochs)),
        ("renewals".to_string(), json(&doc.renewals)),
    ]);
    if let Some(p) = &doc.pending {
        m.insert("pending".to_string(), json(p));
    }
    m
}

/// A map or list of the document as a JSON string attribute.
fn json<T: Serialize>(v: &T) -> AttributeValue {
    AttributeValue::S(serde_json::to_string(v).unwrap_or_default())
}

#[async_trait]
impl WitnessClient for DynamoWitness {
    fn kind(&self) -> &'static str {
        "dynamodb"
    }

    async fn vote(&self, req: &VoteRequest, deadline: Duration) -> Result<VoteReply, WitnessError> {
        let start = crate::clock::now();
        let partition = validate(req)?;
        let what = self.what();
        let left = || deadline.saturating_sub(start.elapsed());
        let get = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(self.item.clone()))
            .consistent_read(true)
            .send();
        let current = match aws("GetItem", left(), get, &[], &[]).await {
            Ok(out) => match out.item() {
                None => None,
                Some(item) => {
                    let (version, doc) = from_item(item).map_err(|e| {
                        WitnessError::BadReply(format!("{what} is not a Baton lease: {e}"))
                    })?;
                    // `seq` is the item's version: bounded with the rest.
                    check_doc(&doc, &what)?;
                    check_cluster(&doc, req, &what)?;
                    Some((version, doc))
                }
            },
            Err(e) => return Err(call_error(e, deadline, &what)),
        };
        let now = crate::clock::now();
        let hold = hold_for(req.lease) + 2 * deadline;
        let plan = {
            let mut obs = lock(&self.obs);
            if let Some((v, d)) = &current {
                obs.observe(&v.to_string(), d, now);
            }
            let v = current.as_ref().map(|(v, _)| v.to_string());
            plan(
                &obs,
                v.as_deref().zip(current.as_ref().map(|c| &c.1)),
                req,
                &partition,
                now,
                hold,
            )
        };
        let put = self.client.put_item().table_name(&self.table);
        let (mut doc, detail, put) = match plan {
            Plan::Deny(detail) => {
                let (holder, epochs) = current
                    .map(|(_, d)| (d.partition, d.epochs))
                    .unwrap_or_default();
                return Ok(deny(holder, epochs, detail));
            }
            Plan::Create(doc) => (
                doc,
                "created the lease".to_string(),
                put.condition_expression("attribute_not_exists(pk)"),
            ),
            Plan::Write { doc, detail } => {
                let v = current.as_ref().map(|c| c.0).unwrap_or_default();
                (
                    doc,
                    detail,
                    put.condition_expression("version = :v")
                        .expression_attribute_values(":v", AttributeValue::N(v.to_string())),
                )
            }
        };
        // The version is the document's sequence number: it grows with every write
        // (`plan` denies when it cannot, so `checked_add` succeeds here).
        if let Some((v, _)) = &current {
            doc.seq = doc.seq.max(v.checked_add(1).unwrap_or(u64::MAX));
        }
        // What is written is bounded too: a counter at its bound is not bumped past it.
        check_doc(&doc, &what)?;
        let put = put.set_item(Some(to_item(&self.item, &doc)));
        match aws(
            "PutItem",
            left(),
            put.send(),
            &["ConditionalCheckFailedException"],
            &[],
        )
        .await
        {
            Ok(_) => {
                lock(&self.obs).observe(&doc.seq.to_string(), &doc, crate::clock::now());
                Ok(VoteReply {
                    granted: true,
                    holder: doc.partition,
                    epochs: doc.epochs,
                    detail,
                })
            }
            Err(CallError::Lost) => {
                let (holder, epochs) = current
                    .map(|(_, d)| (d.partition, d.epochs))
                    .unwrap_or_default();
                Ok(deny(
                    holder,
                    epochs,
                    format!("another server wrote {what} first"),
                ))
            }
            Err(e) => Err(call_error(e, deadline, &what)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(1);

    fn hold() -> Duration {
        hold_for(LEASE) + Duration::from_millis(400)
    }

    fn req(server: &str, partition: &[&str]) -> (VoteRequest, Vec<String>) {
        let r = VoteRequest {
            cluster: "c".into(),
            server: server.into(),
            partition: partition.iter().map(|s| s.to_string()).collect(),
            lease: LEASE,
            epochs: BTreeMap::from([(format!("g-{server}"), 1)]),
        };
        let p = validate(&r).unwrap();
        (r, p)
    }

    /// An in-memory lease store with versions, for the rules alone.
    struct Store {
        doc: Option<(u64, LeaseDoc)>,
    }

    impl Store {
        /// One vote by a client with observer `obs` at `now`: true if granted.
        fn vote(&mut self, obs: &mut Observer, server: &str, p: &[&str], now: Instant) -> bool {
            let (r, part) = req(server, p);
            if let Some((v, d)) = &self.doc {
                obs.observe(&v.to_string(), d, now);
            }
            let v = self.doc.as_ref().map(|(v, _)| v.to_string());
            let cur = v.as_deref().zip(self.doc.as_ref().map(|c| &c.1));
            match plan(obs, cur, &r, &part, now, hold()) {
                Plan::Deny(_) => false,
                Plan::Create(d) => {
                    self.doc = Some((1, d));
                    true
                }
                Plan::Write { doc, .. } => {
                    let v = self.doc.as_ref().map(|c| c.0).unwrap_or(0) + 1;
                    self.doc = Some((v, doc));
                    true
                }
            }
        }
        fn partition(&self) -> Vec<String> {
            self.doc.as_ref().unwrap().1.partition.clone()
        }
    }

    #[test]
    fn create_renew_and_deny_an_outsider() {
        let t0 = crate::clock::now();
        let mut s = Store { doc: None };
        let (mut a, mut b) = (Observer::default(), Observer::default());
        assert!(s.vote(&mut a, "a", &["a"], t0));
        assert!(s.vote(&mut a, "a", &["a"], t0 + Duration::from_millis(200)));
        assert!(!s.vote(&mut b, "b", &["b"], t0 + Duration::from_millis(300)));
        assert_eq!(s.partition(), vec!["a"]);
        // B must observe one unchanged version for the whole hold; A's renewals reset it.
        for i in 1..20 {
            let t = t0 + Duration::from_millis(300 + i * 200);
            assert!(s.vote(&mut a, "a", &["a"], t));
            assert!(!s.vote(&mut b, "b", &["b"], t + Duration::from_millis(10)));
        }
        // A stops renewing: B takes over only after the hold since it first saw the
        // last version.
        let last = t0 + Duration::from_millis(300 + 19 * 200 + 10);
        assert!(!s.vote(
            &mut b,
            "b",
            &["b"],
            last + hold() - Duration::from_millis(1)
        ));
        assert!(s.vote(&mut b, "b", &["b"], last + hold()));
        assert_eq!(s.partition(), vec!["b"]);
        let d = &s.doc.as_ref().unwrap().1;
        assert_eq!(d.epochs.get("g-a"), Some(&1));
        assert_eq!(d.epochs.get("g-b"), Some(&1));
        // A is now the outsider.
        assert!(!s.vote(&mut a, "a", &["a"], last + hold()));
    }

    #[test]
    fn growing_is_immediate_shrinking_waits_for_the_left_out() {
        let t0 = crate::clock::now();
        let ms = Duration::from_millis;
        let mut s = Store { doc: None };
        let (mut a, mut b) = (Observer::default(), Observer::default());
        assert!(s.vote(&mut a, "a", &["a", "b"], t0));
        assert!(s.vote(&mut b, "b", &["a", "b"], t0 + ms(10)));
        // Split: A asks for {a}. B (left out) renewed at t0+10: the move is pending, A's
        // grant is renewed within {a, b}.
        assert!(s.vote(&mut a, "a", &["a"], t0 + ms(100)));
        assert_eq!(s.partition(), vec!["a", "b"]);
        assert_eq!(
            s.doc.as_ref().unwrap().1.pending,
            Some(vec!["a".to_string()])
        );
        // B is denied while the move is pending, whatever it asks.
        assert!(!s.vote(&mut b, "b", &["b"], t0 + ms(150)));
        assert!(!s.vote(&mut b, "b", &["a", "b"], t0 + ms(160)));
        // A keeps renewing; the move completes once B's counter was unchanged for the
        // hold (A first saw B's last value at t0+100).
        let mut t = t0 + ms(100);
        while t < t0 + ms(100) + hold() {
            t += ms(200);
            assert!(s.vote(&mut a, "a", &["a"], t));
        }
        assert_eq!(s.partition(), vec!["a"]);
        assert_eq!(s.doc.as_ref().unwrap().1.pending, None);
        assert!(!s.vote(&mut b, "b", &["b"], t + ms(1)));
        // Heal: A grows the partition at once, B renews as a member again.
        assert!(s.vote(&mut a, "a", &["a", "b"], t + ms(2)));
        assert!(s.vote(&mut b, "b", &["a", "b"], t + ms(3)));
    }

    #[test]
    fn a_fresh_client_assumes_every_other_server_is_live() {
        let t0 = crate::clock::now();
        let mut s = Store { doc: None };
        let (mut a, mut b, mut a2) = (
            Observer::default(),
            Observer::default(),
            Observer::default(),
        );
        assert!(s.vote(&mut a, "a", &["a", "b"], t0));
        assert!(s.vote(&mut b, "b", &["a", "b"], t0));
        // A restarted long after B's last write: it never saw B's counter change, but
        // it must still wait a full hold from its own first observation.
        let late = t0 + Duration::from_secs(100);
        assert!(s.vote(&mut a2, "a", &["a"], late));
        assert_eq!(s.partition(), vec!["a", "b"]);
        assert!(s.vote(&mut a2, "a", &["a"], late + hold()));
        assert_eq!(s.partition(), vec!["a"]);
    }

    /// Random schedules of three servers with clocks up to 1 % fast or slow, random
    /// network delays (within the deadline) and interleaved read/write steps: every
    /// server that counts a grant (from its send, on its own clock, minus the margin) is
    /// always in the lease's partition.
    #[test]
    fn random_schedules_with_drift_keep_counted_grants_inside_the_holder() {
        use crate::witness::caller_valid_for;
        use rand::{Rng, SeedableRng};
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;

        const DEADLINE: Duration = Duration::from_millis(400);
        let servers = ["a", "b", "c"];
        enum Ev {
            Start(usize),
            Read(usize, Duration),
            Plan(usize, Duration, Option<(u64, LeaseDoc)>),
            Write(usize, Duration, Option<u64>, LeaseDoc),
        }
        for seed in 0..200u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let base = crate::clock::now();
            let rate: Vec<f64> = (0..3).map(|_| rng.gen_range(0.99..=1.01)).collect();
            // A server's own clock at real time `t` (since `base`).
            let local = |i: usize, t: Duration| base + t.mul_f64(rate[i]);
            let mut obs: Vec<Observer> = (0..3).map(|_| Observer::default()).collect();
            let mut store: Option<(u64, LeaseDoc)> = None;
            let mut counted: BTreeMap<usize, Duration> = BTreeMap::new();
            let mut q: BinaryHeap<Reverse<(Duration, u64)>> = BinaryHeap::new();
            let mut evs: HashMap<u64, Ev> = HashMap::new();
            let mut n = 0u64;
            let mut push = |q: &mut BinaryHeap<_>, evs: &mut HashMap<u64, Ev>, t, e| {
                n += 1;
                evs.insert(n, e);
                q.push(Reverse((t, n)));
            };
            for i in 0..3 {
                push(
                    &mut q,
                    &mut evs,
                    Duration::from_millis(rng.gen_range(0..50)),
                    Ev::Start(i),
                );
            }
            let mut steps = 0;
            while let Some(Reverse((t, id))) = q.pop() {
                steps += 1;
                if steps > 4000 {
                    break;
                }
                let d = |rng: &mut rand::rngs::StdRng| Duration::from_millis(rng.gen_range(0..90));
                match evs.remove(&id).unwrap() {
                    Ev::Start(i) => {
                        let t2 = t + d(&mut rng);
                        push(&mut q, &mut evs, t2, Ev::Read(i, t));
                    }
                    Ev::Read(i, sent) => {
                        let t2 = t + d(&mut rng);
                        push(&mut q, &mut evs, t2, Ev::Plan(i, sent, store.clone()));
                    }
                    Ev::Plan(i, sent, snap) => {
                        let mut p: Vec<&str> = servers
                            .iter()
                            .enumerate()
                            .filter(|(j, _)| *j == i || rng.gen_bool(0.6))
                            .map(|(_, s)| *s)
                            .collect();
                        p.sort();
                        let (r, part) = req(servers[i], &p);
                        let now = local(i, t);
                        if let Some((v, doc)) = &snap {
                            obs[i].observe(&v.to_string(), doc, now);
                        }
                        let v = snap.as_ref().map(|(v, _)| v.to_string());
                        let cur = v.as_deref().zip(snap.as_ref().map(|c| &c.1));
                        let hold = hold_for(LEASE) + 2 * DEADLINE;
                        match plan(&obs[i], cur, &r, &part, now, hold) {
                            Plan::Deny(_) => {
                                let next = t + Duration::from_millis(rng.gen_range(50..300));
                                push(&mut q, &mut evs, next, Ev::Start(i));
                            }
                            Plan::Create(doc) | Plan::Write { doc, .. } => {
                                let t2 = t + d(&mut rng);
                                push(
                                    &mut q,
                                    &mut evs,
                                    t2,
                                    Ev::Write(i, sent, snap.map(|s| s.0), doc),
                                );
                            }
                        }
                    }
                    Ev::Write(i, sent, expect, doc) => {
                        if store.as_ref().map(|s| s.0) == expect {
                            let v = expect.unwrap_or(0) + 1;
                            // The grant exists from now; it is counted from `sent`.
                            counted.insert(i, sent + caller_valid_for(LEASE).div_f64(rate[i]));
                            counted.retain(|_, until| *until > t);
                            for j in counted.keys() {
                                assert!(
                                    doc.partition.iter().any(|p| p == servers[*j]),
                                    "seed {seed}: {} counts a grant but the lease says {:?}",
                                    servers[*j],
                                    doc.partition
                                );
                            }
                            store = Some((v, doc.clone()));
                            obs[i].observe(&v.to_string(), &doc, local(i, t + d(&mut rng)));
                        }
                        // Sometimes a server stops asking for a while (crash, pause).
                        let pause = if rng.gen_bool(0.05) { 3000 } else { 0 };
                        let next = t + Duration::from_millis(rng.gen_range(50..300) + pause);
                        push(&mut q, &mut evs, next, Ev::Start(i));
                    }
                }
            }
        }
    }

    #[test]
    fn a_wrong_cluster_or_garbage_item_is_refused() {
        let doc = LeaseDoc {
            cluster: "other".into(),
            partition: vec!["a".into()],
            pending: None,
            writer: "a".into(),
            seq: 1,
            epochs: BTreeMap::new(),
            renewals: BTreeMap::new(),
        };
        let (r, _) = req("a", &["a"]);
        assert_eq!(check_cluster(&doc, &r, "x").unwrap_err().code(), "rejected");
        let item = to_item("c", &doc);
        assert_eq!(from_item(&item).unwrap().1, doc);
        let mut bad = item.clone();
        bad.insert("version".into(), AttributeValue::S("x".into()));
        assert!(from_item(&bad).is_err());
        let mut bad = item;
        bad.insert("epochs".into(), AttributeValue::S("{not json".into()));
        assert!(from_item(&bad).is_err());
    }
}
