//! `azure-dns`: an A record set (or a CNAME) in an Azure DNS zone, public or private,
//! that holds the active server's address (or name).
//!
//! The epoch mark is in the record set's own `metadata` (`baton_epoch = "<epoch>
//! <server>"`, `baton_group = "<group>"`): Azure changes a record set's records and its
//! metadata in one PUT under one ETag, so the mark can never describe other records than
//! the ones beside it (Route 53 needs a second, TXT record for this and a batch to keep
//! the two together).
//!
//! Activation reads the record set (its ETag, or 404), refuses when its mark is newer
//! than this activation's epoch (`Fenced`), and otherwise writes records and mark with
//! `If-Match: <etag>` (or `If-None-Match: *` when the set did not exist). A 412 means
//! another writer changed the set between the read and the write: nothing was
//! overwritten; it reads again and decides again, within the action's deadline.
//! Deactivation deletes the set (`If-Match`) when `delete_on_deactivate` is on and the set
//! is still this server's (its address, its mark, no newer epoch); otherwise it leaves it.
//!
//! The monitor of the same name checks that the set exists, holds this server's address
//! and carries this server's mark; the recovery it triggers (restarting the resource)
//! writes it again. A failing API is `ProviderError::Api` (`on_api_error` decides).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use async_trait::async_trait;
use baton_cloud_client::azure::{
    ArmRequest, AzureClient, DNS_API_VERSION, PRIVATE_DNS_API_VERSION,
};
use baton_core::events as ev;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{AzureShared, Scope};
use crate::cloud::{Deadline, Latch, Subject};
use crate::fencing::{self, Claim, Mark, Verdict};
use crate::params::{key_error, parse_params};
use crate::{
    ActionContext, CheckOutcome, ParamError, Params, Probe, ProbeContext, ProbeOk, ProviderError,
    ResourceDriver,
};

/// Metadata key of the epoch mark: `"<epoch> <server>"` ([`fencing::tag_value`]).
pub const EPOCH_KEY: &str = "baton_epoch";
/// Metadata key naming the group of the mark.
pub const GROUP_KEY: &str = "baton_group";
/// Writes refused with 412 (another writer each time) before the activation gives up.
const MAX_CONFLICTS: u32 = 5;

/// Keys of an `azure-dns` resource (and of the `azure-dns` monitor).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureDnsParams {
    /// Required. The zone's name (`example.com`, `corp.internal`).
    pub zone: String,
    /// Required. The record set's name relative to the zone (`db`, `db.eu`; `@` for the
    /// zone apex).
    pub record: String,
    /// A private DNS zone (`privateDnsZones`) rather than a public one (default false).
    #[serde(default)]
    pub private: bool,
    /// The zone's resource group (default: `[azure] resource_group`).
    pub resource_group: Option<String>,
    /// The zone's subscription (default: `[azure] subscription_id`).
    pub subscription_id: Option<String>,
    /// The address the A record holds while this server is active, usually set per
    /// server (or common, for a load balancer's frontend). One of `ip` and `cname`.
    pub ip: Option<String>,
    /// Instead of an A record: a CNAME record set pointing at this name (per server).
    pub cname: Option<String>,
    /// TTL of the record in seconds (default 300).
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    /// Delete the record set when the resource is deactivated (default true).
    #[serde(default = "default_true")]
    pub delete_on_deactivate: bool,
}

fn default_ttl() -> u32 {
    300
}
fn default_true() -> bool {
    true
}

/// What the record set holds while this server is active.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    A(String),
    Cname(String),
}

impl Target {
    pub fn record_type(&self) -> &'static str {
        match self {
            Target::A(_) => "A",
            Target::Cname(_) => "CNAME",
        }
    }

    fn value(&self) -> &str {
        match self {
            Target::A(v) | Target::Cname(v) => v,
        }
    }
}

/// A record set as Azure has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSet {
    pub etag: String,
    pub ttl: Option<u64>,
    /// The A records' addresses, or the CNAME's target.
    pub values: Vec<String>,
    pub metadata: BTreeMap<String, String>,
}

impl RecordSet {
    /// Read a GET answer (public `TTL`/`ARecords`/`CNAMERecord`, private
    /// `ttl`/`aRecords`/`cnameRecord`).
    pub fn from_json(body: &Value) -> RecordSet {
        let props = &body["properties"];
        let pick = |public: &str, private: &str| {
            let v = &props[public];
            if v.is_null() {
                props[private].clone()
            } else {
                v.clone()
            }
        };
        let mut values: Vec<String> = pick("ARecords", "aRecords")
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r["ipv4Address"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(c) = pick("CNAMERecord", "cnameRecord")["cname"].as_str() {
            values.push(c.to_string());
        }
        let metadata = props["metadata"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        RecordSet {
            etag: body["etag"].as_str().unwrap_or_default().to_string(),
            ttl: pick("TTL", "ttl").as_u64(),
            values,
            metadata,
        }
    }

    /// The epoch mark in the metadata (metadata keys are case-insensitive in Azure).
    pub fn mark(&self) -> Option<Mark> {
        self.metadata
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(EPOCH_KEY))
            .and_then(|(_, v)| fencing::parse_tag_value(v))
    }
}

/// Check the record set name: `@`, or labels of letters, digits, `-` and `_` in lower case.
pub fn check_record(name: &str) -> Result<(), ParamError> {
    if name == "@" {
        return Ok(());
    }
    if name.ends_with('.') {
        return Err(key_error(
            "record",
            format!(
                "`{name}` must be relative to the zone (`db`, not `db.example.com.`); `@` is the zone apex"
            ),
        ));
    }
    check_labels("record", name)
}

/// Check a zone name (written with or without the final dot); returns it without.
pub fn check_zone(name: &str) -> Result<String, ParamError> {
    let z = name.strip_suffix('.').unwrap_or(name);
    check_labels("zone", z)?;
    if !z.contains('.') {
        return Err(key_error(
            "zone",
            format!("`{name}` is not a zone name: expected a domain such as example.com"),
        ));
    }
    Ok(z.to_string())
}

fn check_labels(key: &str, name: &str) -> Result<(), ParamError> {
    if name.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(key_error(
            key,
            format!(
                "`{name}` must be in lower case (Azure DNS names are case-insensitive and the \
                 monitor compares them): write `{}`",
                name.to_ascii_lowercase()
            ),
        ));
    }
    for l in name.split('.') {
        let ok = !l.is_empty()
            && l.len() <= 63
            && l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !ok {
            return Err(key_error(
                key,
                format!(
                    "`{name}` has an invalid label `{l}`: use letters, digits, `-` and `_`, at most 63 each"
                ),
            ));
        }
    }
    Ok(())
}

/// The driver of an `azure-dns` resource.
#[derive(Debug)]
pub struct AzureDnsDriver {
    pub params: AzureDnsParams,
    zone: String,
    target: Target,
    scope: Scope,
    shared: Arc<AzureShared>,
}

impl AzureDnsDriver {
    pub fn from_params(params: &Params, shared: Arc<AzureShared>) -> Result<Self, ParamError> {
        let p: AzureDnsParams = parse_params(params)?;
        let zone = check_zone(&p.zone)?;
        check_record(&p.record)?;
        let target = match (&p.ip, &p.cname) {
            (Some(ip), None) => {
                ip.parse::<Ipv4Addr>().map_err(|_| {
                    key_error(
                        "ip",
                        format!("invalid address `{ip}`: expected an IPv4 address such as 10.0.110.10"),
                    )
                })?;
                Target::A(ip.clone())
            }
            (None, Some(c)) => {
                let c = c.strip_suffix('.').unwrap_or(c);
                check_labels("cname", c)?;
                Target::Cname(c.to_string())
            }
            (Some(_), Some(_)) => {
                return Err(key_error(
                    "cname",
                    "set one of `ip` (an A record) and `cname` (a CNAME record), not both",
                ))
            }
            (None, None) => {
                return Err(key_error(
                    "ip",
                    "missing required key `ip` (the address of this server; or `cname` for a CNAME record): \
                     set it for each server, or once for all",
                ))
            }
        };
        if p.ttl == 0 || p.ttl > 2_147_483_647 {
            return Err(key_error(
                "ttl",
                "ttl must be between 1 and 2147483647 seconds",
            ));
        }
        let scope = Scope::resolve(
            &shared,
            p.subscription_id.as_deref(),
            p.resource_group.as_deref(),
        )?;
        Ok(AzureDnsDriver {
            params: p,
            zone,
            target,
            scope,
            shared,
        })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// `record db in zone example.com` (private zones say so).
    fn name(&self) -> String {
        format!(
            "{} record {} in {}zone {}",
            self.target.record_type(),
            self.params.record,
            if self.params.private { "private " } else { "" },
            self.zone
        )
    }

    fn path(&self) -> Result<String, ProviderError> {
        Ok(format!(
            "{}/Microsoft.Network/{}/{}/{}/{}",
            self.scope.providers_path()?,
            if self.params.private {
                "privateDnsZones"
            } else {
                "dnsZones"
            },
            self.zone,
            self.target.record_type(),
            self.params.record
        ))
    }

    fn api_version(&self) -> &'static str {
        if self.params.private {
            PRIVATE_DNS_API_VERSION
        } else {
            DNS_API_VERSION
        }
    }

    fn request(&self, op: &str, method: Method) -> Result<ArmRequest, ProviderError> {
        Ok(ArmRequest::new(
            op,
            method,
            &self.path()?,
            self.api_version(),
        ))
    }

    async fn client(&self, subject: Subject<'_>) -> Result<&AzureClient, ProviderError> {
        self.shared
            .client()
            .await
            .map_err(|f| self.shared.report(subject, None, f))
    }

    /// The record set, or `None` when it does not exist.
    pub async fn read(
        &self,
        client: &AzureClient,
        dl: &Deadline,
        subject: Subject<'_>,
        latch: Option<&Latch>,
    ) -> Result<Option<RecordSet>, ProviderError> {
        let req = self.request("RecordSets.Get", Method::GET)?;
        match client.send(&req, dl.remaining()?).await {
            Ok(r) => Ok(Some(RecordSet::from_json(&r.body))),
            Err(f) if f.is_status(404) && f.code() == Some("NotFound") => Ok(None),
            Err(f) => Err(self.shared.report(subject, latch, f)),
        }
    }

    /// Does the set hold exactly this server's address (or target)?
    pub fn holds(&self, set: &RecordSet) -> bool {
        match &self.target {
            Target::A(ip) => set.values == [ip.clone()],
            Target::Cname(c) => {
                set.values.len() == 1 && set.values[0].trim_end_matches('.').eq_ignore_ascii_case(c)
            }
        }
    }

    /// Is the set this claim's: this server's address, marked by this server, and no
    /// newer epoch? (A common address alone does not say which server wrote it.)
    pub fn is_ours(&self, set: &RecordSet, claim: &Claim<'_>) -> bool {
        let mark = set.mark();
        self.holds(set)
            && mark.as_ref().is_some_and(|m| m.server == claim.server)
            && claim.may_write(mark.as_ref())
    }

    /// The body that points the set here with this claim's mark (other metadata kept).
    fn body(&self, claim: &Claim<'_>, current: Option<&RecordSet>) -> Value {
        let mut metadata: Map<String, Value> = current
            .map(|c| {
                c.metadata
                    .iter()
                    .filter(|(k, _)| {
                        !k.eq_ignore_ascii_case(EPOCH_KEY) && !k.eq_ignore_ascii_case(GROUP_KEY)
                    })
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect()
            })
            .unwrap_or_default();
        metadata.insert(
            EPOCH_KEY.into(),
            fencing::tag_value(claim.epoch, claim.server).into(),
        );
        metadata.insert(GROUP_KEY.into(), claim.group.into());
        let private = self.params.private;
        let mut props = Map::new();
        props.insert(
            (if private { "ttl" } else { "TTL" }).into(),
            self.params.ttl.into(),
        );
        props.insert("metadata".into(), Value::Object(metadata));
        match &self.target {
            Target::A(ip) => props.insert(
                (if private { "aRecords" } else { "ARecords" }).into(),
                json!([{ "ipv4Address": ip }]),
            ),
            Target::Cname(c) => props.insert(
                (if private {
                    "cnameRecord"
                } else {
                    "CNAMERecord"
                })
                .into(),
                json!({ "cname": c }),
            ),
        };
        json!({ "properties": props })
    }

    /// Refuse to overwrite a record set a newer epoch holds (BTN-8006).
    fn stale(&self, subject: Subject<'_>, claim: &Claim<'_>, holder: &Mark) -> ProviderError {
        let e = claim.fenced(&subject.name(), &self.name(), holder);
        self.shared
            .raise(subject, None, &ev::AZURE_STALE_EPOCH, e.to_string());
        e
    }

    /// A 412: another writer changed the set between our read and our write.
    fn conflict(&self, subject: Subject<'_>, n: u32) {
        self.shared.raise(
            subject,
            None,
            &ev::AZURE_DNS_CONFLICT,
            format!(
                "{}: {} changed while it was written (412, conflict {n}); reading it again",
                subject.name(),
                self.name()
            ),
        );
    }

    /// What is wrong with the set for this server, if anything.
    fn mismatch(&self, set: Option<&RecordSet>, server: &str) -> Option<String> {
        let Some(set) = set else {
            return Some(format!("{} does not exist", self.name()));
        };
        if !self.holds(set) {
            return Some(format!(
                "{} holds {}, expected {}",
                self.name(),
                if set.values.is_empty() {
                    "nothing".to_string()
                } else {
                    set.values.join(", ")
                },
                self.target.value()
            ));
        }
        match set.mark() {
            Some(m) if m.server == server => None,
            Some(m) => Some(format!(
                "{} is marked for epoch {} by {}, not this server",
                self.name(),
                m.epoch,
                m.server
            )),
            None => Some(format!("{} carries no Baton epoch mark", self.name())),
        }
    }

    async fn activate_inner(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        let subject = Subject::Action(ctx);
        let started = crate::clock::now();
        let dl = Deadline::new(ctx.timeout);
        let client = self.client(subject).await?;
        let claim = Claim::from(ctx);
        let mut conflicts = 0;
        loop {
            let current = self.read(client, &dl, subject, None).await?;
            let mark = current.as_ref().and_then(RecordSet::mark);
            let verdict = claim.verdict(mark.as_ref());
            if let Verdict::Refused(holder) = verdict {
                return Err(self.stale(subject, &claim, holder));
            }
            let done = current
                .as_ref()
                .is_some_and(|c| self.holds(c) && c.ttl == Some(u64::from(self.params.ttl)))
                && verdict == Verdict::Ours;
            if done {
                return Ok(());
            }
            let mut req = self
                .request("RecordSets.CreateOrUpdate", Method::PUT)?
                .json(self.body(&claim, current.as_ref()));
            req = match &current {
                Some(c) => req.if_match(&c.etag),
                None => req.if_none_match_any(),
            };
            match client.send(&req, dl.remaining()?).await {
                Ok(_) => {
                    let took = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                    let was = match &current {
                        Some(c) if !c.values.is_empty() => c.values.join(", "),
                        _ => "absent".into(),
                    };
                    self.shared.events.emit(
                        subject
                            .event(
                                &ev::AZURE_DNS_UPDATED,
                                format!(
                                    "{}: {} now holds {} (was {was}); {took} ms",
                                    subject.name(),
                                    self.name(),
                                    self.target.value()
                                ),
                            )
                            .field("took_ms", took),
                    );
                    return Ok(());
                }
                Err(f) if f.is_status(412) && conflicts + 1 < MAX_CONFLICTS => {
                    conflicts += 1;
                    self.conflict(subject, conflicts);
                }
                Err(f) => return Err(self.shared.report(subject, None, f)),
            }
        }
    }

    async fn deactivate_inner(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        if !self.params.delete_on_deactivate {
            return Ok(());
        }
        let subject = Subject::Action(ctx);
        let dl = Deadline::new(ctx.timeout);
        let client = self.client(subject).await?;
        let claim = Claim::from(ctx);
        let mut conflicts = 0;
        loop {
            let Some(current) = self.read(client, &dl, subject, None).await? else {
                return Ok(());
            };
            if !self.is_ours(&current, &claim) {
                tracing::info!(
                    record = %self.name(),
                    values = ?current.values,
                    mark = ?current.mark(),
                    "the record set is not ours (another address, another server's mark or a newer epoch); left alone"
                );
                return Ok(());
            }
            let req = self
                .request("RecordSets.Delete", Method::DELETE)?
                .if_match(&current.etag);
            match client.send(&req, dl.remaining()?).await {
                Ok(_) => {
                    self.shared.events.emit(subject.event(
                        &ev::AZURE_DNS_UPDATED,
                        format!(
                            "{}: {} ({}) deleted on deactivation",
                            subject.name(),
                            self.name(),
                            self.target.value()
                        ),
                    ));
                    return Ok(());
                }
                Err(f) if f.is_status(412) && conflicts + 1 < MAX_CONFLICTS => {
                    conflicts += 1;
                    self.conflict(subject, conflicts);
                }
                Err(f) => return Err(self.shared.report(subject, None, f)),
            }
        }
    }
}

#[async_trait]
impl ResourceDriver for AzureDnsDriver {
    fn kind(&self) -> &'static str {
        "azure-dns"
    }

    async fn activate(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        self.activate_inner(ctx).await
    }

    async fn fence_stop(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        crate::nothing_local_to_stop(ctx, "record set")
    }

    async fn deactivate(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        self.deactivate_inner(ctx).await
    }

    async fn check(&self, ctx: &ActionContext) -> Result<CheckOutcome, ProviderError> {
        let subject = Subject::Action(ctx);
        let dl = Deadline::new(ctx.timeout);
        let client = self.client(subject).await?;
        let current = self.read(client, &dl, subject, None).await?;
        // A set holding another address, marked by another server or by a newer epoch,
        // is not active here.
        Ok(match current {
            Some(c) if self.is_ours(&c, &Claim::from(ctx)) => CheckOutcome::Active,
            _ => CheckOutcome::Inactive,
        })
    }
}

/// The `azure-dns` monitor.
#[derive(Debug)]
pub struct AzureDnsProbe {
    driver: AzureDnsDriver,
    latch: Latch,
}

impl AzureDnsProbe {
    pub fn from_params(params: &Params, shared: Arc<AzureShared>) -> Result<Self, ParamError> {
        Ok(AzureDnsProbe {
            driver: AzureDnsDriver::from_params(params, shared)?,
            latch: Latch::default(),
        })
    }
}

#[async_trait]
impl Probe for AzureDnsProbe {
    fn kind(&self) -> &'static str {
        "azure-dns"
    }

    async fn probe(&self, ctx: &ProbeContext) -> Result<ProbeOk, ProviderError> {
        let subject = Subject::Probe(ctx);
        let d = &self.driver;
        let dl = Deadline::new(ctx.timeout);
        let client = d.client(subject).await?;
        let current = d.read(client, &dl, subject, Some(&self.latch)).await?;
        if let Some(why) = d.mismatch(current.as_ref(), &ctx.server) {
            let msg = format!("{}: {why}", subject.name());
            d.shared.raise(
                subject,
                Some(&self.latch),
                &ev::AZURE_DNS_RECORD_CHANGED,
                msg.clone(),
            );
            return Err(ProviderError::Unhealthy(msg));
        }
        self.latch.reset();
        Ok(ProbeOk {
            detail: Some(format!("{} = {}", d.name(), d.target.value())),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn table(s: &str) -> Params {
        s.parse::<toml::Table>().unwrap()
    }

    fn build(s: &str) -> Result<AzureDnsDriver, ParamError> {
        AzureDnsDriver::from_params(&table(s), Arc::new(AzureShared::lenient()))
    }

    const OK: &str = "zone = 'example.com'\nrecord = 'db'\nip = '10.0.0.4'";

    #[test]
    fn params() {
        let d = build(OK).unwrap();
        assert_eq!(d.params.ttl, 300);
        assert!(d.params.delete_on_deactivate && !d.params.private);
        assert_eq!(d.target, Target::A("10.0.0.4".into()));
        let d = build("zone = 'corp.internal.'\nrecord = '@'\ncname = 'node-1.corp.internal.'\nprivate = true").unwrap();
        assert_eq!(d.zone, "corp.internal");
        assert_eq!(d.target, Target::Cname("node-1.corp.internal".into()));
        for (text, key) in [
            ("zone = 'example.com'\nrecord = 'db'", "ip"),
            (&format!("{OK}\ncname = 'x.example.com'"), "cname"),
            (&format!("{OK}\nttl = 0"), "ttl"),
            (
                "zone = 'example.com'\nrecord = 'db.example.com.'\nip = '10.0.0.4'",
                "record",
            ),
            (
                "zone = 'Example.com'\nrecord = 'db'\nip = '10.0.0.4'",
                "zone",
            ),
            (
                "zone = 'example.com'\nrecord = 'db'\nip = '10.0.0.400'",
                "ip",
            ),
            (&format!("{OK}\nresource_group = 'a/b'"), "resource_group"),
            (&format!("{OK}\nsubscription_id = 'x'"), "subscription_id"),
            (&format!("{OK}\nrecrod = 'x'"), "recrod"),
        ] {
            let e = build(text).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{text}: {e}");
        }
        let e = build(&format!("{OK}\nrecrod = 'x'")).unwrap_err();
        assert!(e.message.contains("did you mean `record`?"), "{e}");
    }

    #[test]
    fn record_sets_of_both_zone_kinds() {
        let public = json!({"etag": "e1", "properties": {"TTL": 60, "ARecords": [{"ipv4Address": "10.0.0.4"}],
            "metadata": {"baton_epoch": "7 node-2", "baton_group": "web"}}});
        let s = RecordSet::from_json(&public);
        assert_eq!(s.etag, "e1");
        assert_eq!(s.ttl, Some(60));
        assert_eq!(s.values, ["10.0.0.4"]);
        assert_eq!(
            s.mark(),
            Some(Mark {
                epoch: 7,
                server: "node-2".into()
            })
        );
        let private =
            json!({"etag": "e2", "properties": {"ttl": 10, "cnameRecord": {"cname": "a.b.c"}}});
        let s = RecordSet::from_json(&private);
        assert_eq!(
            (s.ttl, s.values.clone(), s.mark()),
            (Some(10), vec!["a.b.c".to_string()], None)
        );
    }

    #[test]
    fn bodies_use_each_api_s_spelling_and_keep_other_metadata() {
        let d = build(OK).unwrap();
        let claim = Claim::new("web", 3, "node-1");
        let mut current = RecordSet::from_json(
            &json!({"etag": "e", "properties": {"metadata": {"owner": "ops", "baton_epoch": "2 node-2"}}}),
        );
        current.values.clear();
        let b = d.body(&claim, Some(&current));
        assert_eq!(
            b,
            json!({"properties": {"TTL": 300, "ARecords": [{"ipv4Address": "10.0.0.4"}],
                "metadata": {"owner": "ops", "baton_epoch": "3 node-1", "baton_group": "web"}}})
        );
        let p = build("zone = 'corp.internal'\nrecord = 'db'\nip = '10.0.0.4'\nprivate = true")
            .unwrap();
        let b = p.body(&claim, None);
        assert_eq!(b["properties"]["ttl"], 300);
        assert_eq!(b["properties"]["aRecords"][0]["ipv4Address"], "10.0.0.4");
    }
}
