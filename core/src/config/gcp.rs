//! `[gcp]`: how every Google Cloud caller (today the `gcp-dns` resource and monitor)
//! builds its client: the project and the zone and region defaults of the Google Cloud
//! kinds, the credentials, the endpoints (each overridable, for tests and private
//! access), timeouts. No secret is in the file: a service-account key is read from the
//! file named here.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::diagnostics::{k, Diags};
use super::Dur;

/// Whose credentials the Google Cloud calls use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum GcpCredentials {
    /// The VM's attached service account, through the metadata server (the default on
    /// Compute Engine).
    #[default]
    Metadata,
    /// A service-account key file (JSON, `"type": "service_account"`) named by
    /// `key_file`: an RS256-signed JWT assertion is exchanged for tokens.
    ServiceAccount,
    /// Application default credentials, as Google's client libraries find them:
    /// `GOOGLE_APPLICATION_CREDENTIALS`, else gcloud's
    /// `~/.config/gcloud/application_default_credentials.json` (a user's refresh token
    /// or a service-account key), else the metadata server.
    ApplicationDefault,
}

/// Cloud DNS's endpoint (the API's root; paths start with `/dns/v1/`).
pub const GCP_DNS_ENDPOINT: &str = "https://dns.googleapis.com";
/// Compute Engine's endpoint (paths start with `/compute/v1/`).
pub const GCP_COMPUTE_ENDPOINT: &str = "https://compute.googleapis.com";
/// The metadata server on every Compute Engine VM (paths start with
/// `/computeMetadata/v1/`). The address, not `metadata.google.internal`: no DNS needed.
pub const GCP_METADATA_ENDPOINT: &str = "http://169.254.169.254";
/// Google's OAuth 2.0 token endpoint.
pub const GCP_TOKEN_ENDPOINT: &str = "https://oauth2.googleapis.com/token";

/// `[gcp]`: settings of the one Google Cloud client factory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcpSection {
    /// Default project of the Google Cloud kinds (a kind's `project` overrides it).
    /// Unset: the service-account key's `project_id`, else the metadata server's.
    pub project: Option<String>,
    /// Default Compute zone of the kinds that name one (`us-central1-a`).
    pub zone: Option<String>,
    /// Default region of the kinds that name one (`us-central1`).
    pub region: Option<String>,
    /// `metadata` (default), `service-account` or `application-default`.
    pub credentials: GcpCredentials,
    /// The service-account key file (JSON) of `credentials = "service-account"`.
    pub key_file: Option<PathBuf>,
    /// Cloud DNS endpoint override (tests, Private Service Connect).
    pub dns_endpoint: Option<String>,
    /// Compute Engine endpoint override.
    pub compute_endpoint: Option<String>,
    /// Metadata server override (tests). Default: `GCE_METADATA_HOST` from the
    /// environment, else `http://169.254.169.254`.
    pub metadata_endpoint: Option<String>,
    /// OAuth token endpoint override (tests). Default: the key file's `token_uri`, else
    /// `https://oauth2.googleapis.com/token`.
    pub token_endpoint: Option<String>,
    /// Timeout of one HTTP attempt. Default `10s`.
    pub call_timeout: Dur,
    /// Bound of one API call with its retries (throttling, 5xx). Default `30s`; an
    /// action's own timeout bounds it too.
    pub deadline: Dur,
}

impl Default for GcpSection {
    fn default() -> Self {
        GcpSection {
            project: None,
            zone: None,
            region: None,
            credentials: GcpCredentials::Metadata,
            key_file: None,
            dns_endpoint: None,
            compute_endpoint: None,
            metadata_endpoint: None,
            token_endpoint: None,
            call_timeout: Dur::from_ms(10_000),
            deadline: Dur::from_ms(30_000),
        }
    }
}

impl GcpSection {
    /// The Cloud DNS endpoint in use, without a trailing slash.
    pub fn dns(&self) -> String {
        trim(self.dns_endpoint.as_deref(), GCP_DNS_ENDPOINT)
    }

    /// The Compute Engine endpoint in use, without a trailing slash.
    pub fn compute(&self) -> String {
        trim(self.compute_endpoint.as_deref(), GCP_COMPUTE_ENDPOINT)
    }

    /// The metadata server in use, without a trailing slash.
    pub fn metadata(&self) -> String {
        trim(self.metadata_endpoint.as_deref(), GCP_METADATA_ENDPOINT)
    }
}

fn trim(v: Option<&str>, default: &str) -> String {
    v.unwrap_or(default).trim_end_matches('/').to_string()
}

/// A project ID: 6 to 30 lower-case letters, digits and hyphens, starting with a letter,
/// not ending with a hyphen (`google.com:` style domain-scoped IDs are accepted too).
pub fn is_project_id(s: &str) -> bool {
    let id = s
        .rsplit_once(':')
        .map_or(s, |(domain, id)| if domain.is_empty() { "" } else { id });
    (6..=30).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && !id.ends_with('-')
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// A Compute zone (`us-central1-a`) when `zone`, else a region (`us-central1`):
/// lower-case letters, digits and hyphens in the shape Google names them.
pub fn is_location(s: &str, zone: bool) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let want = if zone { 3 } else { 2 };
    parts.len() == want
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
        && parts[1].ends_with(|c: char| c.is_ascii_digit())
}

pub(super) fn validate(d: &mut Diags<'_>, g: &GcpSection) {
    let at = |key: &str| [k("gcp"), k(key)];
    if let Some(p) = &g.project {
        if !is_project_id(p) {
            d.err(
                &at("project"),
                format!(
                    "`{p}` is not a project ID: 6 to 30 lower-case letters, digits and hyphens, \
                     starting with a letter (the ID, not the project's name or number)"
                ),
            );
        }
    }
    if let Some(z) = &g.zone {
        if !is_location(z, true) {
            d.err(
                &at("zone"),
                format!("`{z}` is not a Compute zone: expected a name such as us-central1-a"),
            );
        }
    }
    if let Some(r) = &g.region {
        if !is_location(r, false) {
            d.err(
                &at("region"),
                format!("`{r}` is not a region: expected a name such as us-central1"),
            );
        }
    }
    if let (Some(z), Some(r)) = (&g.zone, &g.region) {
        if is_location(z, true) && !z.starts_with(&format!("{r}-")) {
            d.err(&at("zone"), format!("zone `{z}` is not in region `{r}`"));
        }
    }
    for (key, url) in [
        ("dns_endpoint", &g.dns_endpoint),
        ("compute_endpoint", &g.compute_endpoint),
        ("metadata_endpoint", &g.metadata_endpoint),
        ("token_endpoint", &g.token_endpoint),
    ] {
        if let Some(url) = url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                d.err(
                    &at(key),
                    format!("{key} `{url}` must start with http:// or https://"),
                );
            }
        }
    }
    match (g.credentials, &g.key_file) {
        (GcpCredentials::ServiceAccount, None) => d.err(
            &at("credentials"),
            "credentials = \"service-account\" needs `key_file` (the service account's JSON key)",
        ),
        (GcpCredentials::Metadata, Some(_)) => d.err(
            &at("key_file"),
            "`key_file` is only used with credentials = \"service-account\" (credentials is \"metadata\")",
        ),
        (GcpCredentials::ApplicationDefault, Some(_)) => d.err(
            &at("key_file"),
            "`key_file` is only used with credentials = \"service-account\"; application default \
             credentials come from GOOGLE_APPLICATION_CREDENTIALS or gcloud's file",
        ),
        _ => {}
    }
    if g.call_timeout.ms() < 100 || g.call_timeout.ms() > 120_000 {
        d.err(
            &at("call_timeout"),
            "call_timeout must be between 100ms and 120s",
        );
    }
    if g.deadline.ms() < g.call_timeout.ms() || g.deadline.ms() > 600_000 {
        d.err(
            &at("deadline"),
            format!(
                "deadline must be at least call_timeout ({}) and at most 10m",
                g.call_timeout
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::super::{load_str, AnyKind, Diagnostic, Level, Loaded};
    use super::*;

    const BASE: &str = r#"[cluster]
name = "orders"
key_file = "cluster.key"

[[server]]
name = "node-1"
interconnects = ["10.0.110.10"]
api = "10.0.110.10:7420"

[[server]]
name = "node-2"
interconnects = ["10.0.120.10"]
api = "10.0.120.10:7420"

[[server]]
name = "node-3"
interconnects = ["10.0.130.10"]
api = "10.0.130.10:7420"
"#;

    fn load(extra: &str) -> (String, Result<Loaded, super::super::ConfigError>) {
        let text = format!("{BASE}\n{extra}");
        let r = load_str("baton.toml", &text, &AnyKind);
        (text, r)
    }

    fn ok(extra: &str) -> Loaded {
        match load(extra).1 {
            Ok(l) => l,
            Err(e) => panic!("{e}: {:?}", e.diagnostics),
        }
    }

    fn errors(extra: &str) -> (String, Vec<Diagnostic>) {
        let (text, r) = load(extra);
        match r {
            Ok(_) => panic!("expected an error for:\n{extra}"),
            Err(e) => (
                text,
                e.diagnostics
                    .into_iter()
                    .filter(|d| d.level == Level::Error)
                    .collect(),
            ),
        }
    }

    /// One error at `key`, on the line holding `needle`, with `words` in its message.
    #[track_caller]
    fn assert_error(extra: &str, key: &str, needle: &str, words: &str) {
        let (text, errs) = errors(extra);
        assert_eq!(errs.len(), 1, "{errs:?}");
        let d = &errs[0];
        assert_eq!(d.key, key, "{d}");
        assert_eq!(d.file, "baton.toml");
        let line = text
            .lines()
            .position(|l| l.contains(needle))
            .map(|i| i + 1)
            .unwrap_or_else(|| panic!("`{needle}` not in the text"));
        assert_eq!(d.line, line, "{d}");
        assert!(d.message.contains(words), "{d}");
    }

    #[test]
    fn defaults_without_a_section() {
        let g = ok("").config.gcp;
        assert_eq!(g, GcpSection::default());
        assert_eq!(g.dns(), "https://dns.googleapis.com");
        assert_eq!(g.compute(), "https://compute.googleapis.com");
        assert_eq!(g.metadata(), "http://169.254.169.254");
        assert_eq!(g.credentials, GcpCredentials::Metadata);
        assert_eq!(g.call_timeout.ms(), 10_000);
        assert_eq!(g.deadline.ms(), 30_000);
    }

    #[test]
    fn a_full_section_loads() {
        let g = ok("[gcp]\nproject = \"baton-test\"\nzone = \"us-central1-a\"\n\
             region = \"us-central1\"\ncredentials = \"service-account\"\n\
             key_file = \"/etc/baton/sa.json\"\ndns_endpoint = \"http://127.0.0.1:9999/\"\n\
             compute_endpoint = \"http://127.0.0.1:9999\"\nmetadata_endpoint = \"http://127.0.0.1:9999\"\n\
             token_endpoint = \"http://127.0.0.1:9999/token\"\ncall_timeout = \"5s\"\ndeadline = \"20s\"\n")
        .config
        .gcp;
        assert_eq!(g.credentials, GcpCredentials::ServiceAccount);
        assert_eq!(g.dns(), "http://127.0.0.1:9999");
        assert_eq!(g.project.as_deref(), Some("baton-test"));
        assert_eq!(g.deadline.ms(), 20_000);
        let adc = ok("[gcp]\ncredentials = \"application-default\"\n")
            .config
            .gcp;
        assert_eq!(adc.credentials, GcpCredentials::ApplicationDefault);
    }

    #[test]
    fn unknown_keys_and_values_are_located() {
        let (text, errs) = errors("[gcp]\nprojet = \"x\"\n");
        assert_eq!(errs.len(), 1, "{errs:?}");
        let d = &errs[0];
        assert_eq!(d.key, "gcp.projet");
        assert_eq!(
            d.line,
            text.lines().position(|l| l.starts_with("projet ")).unwrap() + 1
        );
        assert!(d.message.contains("(did you mean `project`?)"), "{d}");
        assert_error(
            "[gcp]\ncredentials = \"gcloud\"\n",
            "gcp.credentials",
            "credentials =",
            "gcloud",
        );
    }

    #[test]
    fn bad_values_are_located() {
        assert_error(
            "[gcp]\nproject = \"My Project\"\n",
            "gcp.project",
            "project =",
            "is not a project ID",
        );
        assert_error(
            "[gcp]\nproject = \"123456789012\"\n",
            "gcp.project",
            "project =",
            "not the project's name or number",
        );
        assert_error(
            "[gcp]\nzone = \"us-central1\"\n",
            "gcp.zone",
            "zone =",
            "is not a Compute zone",
        );
        assert_error(
            "[gcp]\nregion = \"us-central1-a\"\n",
            "gcp.region",
            "region =",
            "is not a region",
        );
        assert_error(
            "[gcp]\nregion = \"europe-west1\"\nzone = \"us-central1-a\"\n",
            "gcp.zone",
            "zone =",
            "not in region `europe-west1`",
        );
        assert_error(
            "[gcp]\ndns_endpoint = \"localhost:9\"\n",
            "gcp.dns_endpoint",
            "dns_endpoint",
            "must start with http://",
        );
        assert_error(
            "[gcp]\ntoken_endpoint = \"oauth2.googleapis.com\"\n",
            "gcp.token_endpoint",
            "token_endpoint",
            "must start with http://",
        );
        assert_error(
            "[gcp]\ncall_timeout = \"10ms\"\n",
            "gcp.call_timeout",
            "call_timeout",
            "between 100ms and 120s",
        );
        assert_error(
            "[gcp]\ncall_timeout = \"20s\"\ndeadline = \"10s\"\n",
            "gcp.deadline",
            "deadline",
            "at least call_timeout (20s)",
        );
    }

    #[test]
    fn credentials_need_their_keys() {
        assert_error(
            "[gcp]\ncredentials = \"service-account\"\n",
            "gcp.credentials",
            "credentials =",
            "needs `key_file`",
        );
        assert_error(
            "[gcp]\nkey_file = \"/etc/baton/sa.json\"\n",
            "gcp.key_file",
            "sa.json",
            "only used with credentials = \"service-account\"",
        );
        assert_error(
            "[gcp]\ncredentials = \"application-default\"\nkey_file = \"k.json\"\n",
            "gcp.key_file",
            "k.json",
            "GOOGLE_APPLICATION_CREDENTIALS",
        );
    }

    #[test]
    fn ids_and_locations() {
        assert!(is_project_id("baton-test"));
        assert!(is_project_id("example.com:baton-test"));
        assert!(!is_project_id("baton"));
        assert!(!is_project_id("baton-test-"));
        assert!(!is_project_id("1baton-test"));
        assert!(!is_project_id(":baton-test"));
        assert!(is_location("us-central1-a", true));
        assert!(is_location("europe-west3", false));
        assert!(!is_location("us-central-a", true));
        assert!(!is_location("US-central1", false));
    }
}
