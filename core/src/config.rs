//! The cluster configuration: one TOML file, the same on every server.
//!
//! Loading is two-phase: the text is parsed (syntax), deserialised into typed sections
//! (unknown keys, types, durations), then validated across fields (names, references,
//! dependency cycles, timing sanity). Every problem becomes a [`Diagnostic`] naming the
//! file, line, column and key. Kind-specific keys of resources and monitors are checked by
//! a [`KindCatalog`] supplied by the caller (the providers crate), so new kinds plug in
//! without touching this module.

use std::fmt;

use sha2::{Digest, Sha256};

pub mod api;
mod aws;
mod azure;
pub mod changes;
mod diagnostics;
mod duration;
mod gcp;
mod model;
mod notify;
mod raw;
pub mod timing;
mod validate;
pub mod web;
pub use api::{ApiRole, ApiSection, Cidr};
pub use aws::AwsSection;
pub use azure::{
    is_guid, is_resource_group, AzureCloud, AzureIdentity, AzureSection, AZURE_IMDS_ENDPOINT,
};
pub use diagnostics::{ConfigError, Diagnostic, Level};
pub use duration::{parse_duration, Dur, MAX_DURATION};
pub use gcp::{
    is_location, is_project_id, GcpCredentials, GcpSection, GCP_COMPUTE_ENDPOINT, GCP_DNS_ENDPOINT,
    GCP_METADATA_ENDPOINT, GCP_TOKEN_ENDPOINT,
};
pub use model::*;
pub use notify::{
    id_matches, CloudWatchSection, DeliverySection, LogSinkSection, MailSection, MailSecurity,
    MetricKind, MetricsSection, NotifySection, SnsSection, WebhookSection,
};
pub use validate::resources::topo_order;
pub use web::{PrometheusSection, WebUiSection};

use diagnostics::{escape_controls, finish_err, line_col, one_line, typed, Diags};
use raw::RawFile;

/// A successfully loaded configuration plus its warnings.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
}

/// Checks the kind-specific keys of resources and monitors. Implemented by the providers.
pub trait KindCatalog {
    fn resource_kinds(&self) -> Vec<&'static str>;
    fn monitor_kinds(&self) -> Vec<&'static str>;
    /// Validate a resource's kind-specific keys (already merged for one server).
    /// `Err((key, message))`, key relative to the resource table.
    fn check_resource(
        &self,
        kind: &str,
        params: &toml::Table,
    ) -> Result<(), (Option<String>, String)>;
    fn check_monitor(
        &self,
        kind: &str,
        params: &toml::Table,
    ) -> Result<(), (Option<String>, String)>;
    /// Checks of a resource kind that need its group's servers. Default: none.
    fn check_group_servers(&self, _kind: &str, _servers: &[String]) -> Result<(), String> {
        Ok(())
    }
    /// Does this resource kind carry traffic on an interconnect chosen by its
    /// `interconnect` key (numbered from 0, default 0, unless `address` is set)? The
    /// number is then checked against every server of the group. Default: no.
    fn uses_interconnect(&self, _kind: &str) -> bool {
        false
    }
    /// Monitor kinds that need the `resource` key (besides `resource`). Default: none.
    fn monitor_needs_resource(&self, _kind: &str) -> bool {
        false
    }
    /// A resource kind whose self-fence stop may be its local part only, with the time
    /// that part needs (ms): a kind whose cloud object holds one value, carries the
    /// group's epoch on every write, and is taken over by the next owner's fenced write
    /// whatever the previous owner did (so the previous owner's cloud call adds nothing
    /// to safety). `None` (default): its self-fence stop is its normal stop.
    fn local_fence_stop_ms(&self, _kind: &str) -> Option<u64> {
        None
    }
}

/// A catalog that accepts any kind (used by the engine's own tests).
pub struct AnyKind;

impl KindCatalog for AnyKind {
    fn resource_kinds(&self) -> Vec<&'static str> {
        vec![]
    }
    fn monitor_kinds(&self) -> Vec<&'static str> {
        vec![]
    }
    fn check_resource(&self, _: &str, _: &toml::Table) -> Result<(), (Option<String>, String)> {
        Ok(())
    }
    fn check_monitor(&self, _: &str, _: &toml::Table) -> Result<(), (Option<String>, String)> {
        Ok(())
    }
}

/// [`AnyKind`] with one resource kind that has a local self-fence stop of the given
/// bound (the engine's tests and the simulation: a stand-in for `aws-eip`).
#[cfg(test)]
pub(crate) struct AnyKindWithLocalStop(pub &'static str, pub u64);

#[cfg(test)]
impl KindCatalog for AnyKindWithLocalStop {
    fn resource_kinds(&self) -> Vec<&'static str> {
        AnyKind.resource_kinds()
    }
    fn monitor_kinds(&self) -> Vec<&'static str> {
        AnyKind.monitor_kinds()
    }
    fn check_resource(&self, k: &str, p: &toml::Table) -> Result<(), (Option<String>, String)> {
        AnyKind.check_resource(k, p)
    }
    fn check_monitor(&self, k: &str, p: &toml::Table) -> Result<(), (Option<String>, String)> {
        AnyKind.check_monitor(k, p)
    }
    fn local_fence_stop_ms(&self, kind: &str) -> Option<u64> {
        (kind == self.0).then_some(self.1)
    }
}

/// Load and validate a configuration text. `file` is used in diagnostics.
pub fn load_str(file: &str, text: &str, kinds: &dyn KindCatalog) -> Result<Loaded, ConfigError> {
    let mut d = Diags {
        file,
        text,
        doc: None,
        out: Vec::new(),
    };
    // Phase 1: syntax.
    let doc = match toml_edit::ImDocument::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let off = e.span().map_or(0, |s| s.start);
            let (line, column) = line_col(text, off);
            let msg = escape_controls(&one_line(e.message()));
            return Err(ConfigError {
                file: file.to_string(),
                diagnostics: vec![Diagnostic {
                    level: Level::Error,
                    file: file.to_string(),
                    line,
                    column,
                    key: String::new(),
                    message: format!("this is not valid TOML: {msg}"),
                }],
            });
        }
    };
    d.doc = Some(doc);
    let table: toml::Table = match toml::from_str(text) {
        Ok(t) => t,
        Err(e) => {
            // toml_edit accepted the text, so this is rare (a limit of the deserializer);
            // point at the span it gives.
            let (line, column) = line_col(text, e.span().map_or(0, |s| s.start));
            d.out.push(Diagnostic {
                level: Level::Error,
                file: file.to_string(),
                line,
                column,
                key: String::new(),
                message: escape_controls(&format!(
                    "this is not valid TOML: {}",
                    one_line(e.message())
                )),
            });
            return Err(finish_err(d));
        }
    };
    let digest = canonical_digest(&digest_view(&table));
    let Some(raw) = typed::<RawFile>(&mut d, &[], toml::Value::Table(table)) else {
        return Err(finish_err(d));
    };
    let config = validate::validate(&mut d, raw, file, digest, kinds);
    match config {
        Some(config) if !d.has_errors() => Ok(Loaded {
            config,
            warnings: d.out,
        }),
        _ => Err(finish_err(d)),
    }
}

impl ConfigError {
    /// The error of a configuration file that could not be read (`core` reads no files:
    /// the agent does, and reports a failure with this).
    pub fn unreadable(file: &str, error: &dyn fmt::Display) -> ConfigError {
        ConfigError {
            file: file.to_string(),
            diagnostics: vec![Diagnostic {
                level: Level::Error,
                file: file.to_string(),
                line: 0,
                column: 0,
                key: String::new(),
                message: format!("cannot read the configuration file: {error}"),
            }],
        }
    }
}

/// The table as the digest sees it: without `[cluster] accept_key_files`, which differs
/// between servers while a key rotation goes from one server to the next. (A file without
/// it has the digest it always had.)
fn digest_view(table: &toml::Table) -> std::borrow::Cow<'_, toml::Table> {
    match table.get("cluster").and_then(|c| c.as_table()) {
        Some(c) if c.contains_key("accept_key_files") => {
            let mut t = table.clone();
            if let Some(toml::Value::Table(c)) = t.get_mut("cluster") {
                c.remove("accept_key_files");
            }
            std::borrow::Cow::Owned(t)
        }
        _ => std::borrow::Cow::Borrowed(table),
    }
}

/// SHA-256 of the canonical JSON form of the parsed table (keys sorted).
pub fn canonical_digest(table: &toml::Table) -> String {
    let json = serde_json::to_string(table).unwrap_or_default();
    let mut h = Sha256::new();
    h.update(json.as_bytes());
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests;
