//! `[azure]`: how every Azure caller (the `azure-*` resources and monitors) builds
//! its client: the cloud and its endpoints, the identity, the subscription and resource
//! group defaults of the Azure kinds, timeouts. No secret is in the file: a service
//! principal's secret or certificate is read from the file named here.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::diagnostics::{k, Diags};
use super::Dur;

/// The Azure cloud: sets the Resource Manager endpoint, the Entra ID authority and the
/// token audience.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AzureCloud {
    #[default]
    Public,
    China,
    UsGovernment,
}

impl AzureCloud {
    /// The Resource Manager endpoint of the cloud.
    pub fn arm_endpoint(self) -> &'static str {
        match self {
            AzureCloud::Public => "https://management.azure.com",
            AzureCloud::China => "https://management.chinacloudapi.cn",
            AzureCloud::UsGovernment => "https://management.usgovcloudapi.net",
        }
    }

    /// The Entra ID (Azure AD) authority host of the cloud.
    pub fn authority(self) -> &'static str {
        match self {
            AzureCloud::Public => "https://login.microsoftonline.com",
            AzureCloud::China => "https://login.chinacloudapi.cn",
            AzureCloud::UsGovernment => "https://login.microsoftonline.us",
        }
    }

    /// The audience (resource) of Resource Manager tokens in the cloud. An endpoint
    /// override does not change it: the tokens are for the cloud's Resource Manager.
    pub fn arm_audience(self) -> &'static str {
        match self {
            AzureCloud::Public => "https://management.azure.com/",
            AzureCloud::China => "https://management.chinacloudapi.cn/",
            AzureCloud::UsGovernment => "https://management.usgovcloudapi.net/",
        }
    }
}

/// Whose identity the Azure calls use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AzureIdentity {
    /// The VM's managed identity through the instance metadata service (system-assigned,
    /// or the user-assigned one named by `client_id`).
    #[default]
    Managed,
    /// An app registration: `tenant_id`, `client_id` and a secret or certificate file.
    ServicePrincipal,
    /// The Azure CLI's login (`az account get-access-token`), for an operator's
    /// workstation.
    Cli,
}

/// The instance metadata service's address on every Azure VM.
pub const AZURE_IMDS_ENDPOINT: &str = "http://169.254.169.254";

/// `[azure]`: settings of the one Azure client factory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AzureSection {
    /// Default subscription of the Azure kinds (a kind's `subscription_id` overrides it).
    pub subscription_id: Option<String>,
    /// Default resource group of the Azure kinds (a kind's `resource_group` overrides it).
    pub resource_group: Option<String>,
    /// The Entra ID tenant (needed by a service principal; optional for `cli`).
    pub tenant_id: Option<String>,
    /// `public` (default), `china` or `usgovernment`: the endpoints below by default.
    pub cloud: AzureCloud,
    /// Resource Manager endpoint override (tests, private endpoints).
    pub endpoint: Option<String>,
    /// Entra ID authority host override (tests, sovereign clouds).
    pub authority: Option<String>,
    /// Instance metadata service override (tests). Default `http://169.254.169.254`.
    pub imds_endpoint: Option<String>,
    /// `managed` (default), `service-principal` or `cli`.
    pub identity: AzureIdentity,
    /// The app's client ID (`service-principal`), or the user-assigned managed
    /// identity's client ID (`managed`; omitted: the system-assigned identity).
    pub client_id: Option<String>,
    /// File holding the service principal's client secret (one line).
    pub client_secret_file: Option<PathBuf>,
    /// PEM file holding the service principal's certificate and its RSA private key.
    pub client_certificate_file: Option<PathBuf>,
    /// Timeout of one HTTP attempt. Default `10s`.
    pub call_timeout: Dur,
    /// Bound of one API call with its retries (throttling, 5xx). Default `30s`; an
    /// action's own timeout bounds it too.
    pub deadline: Dur,
}

impl Default for AzureSection {
    fn default() -> Self {
        AzureSection {
            subscription_id: None,
            resource_group: None,
            tenant_id: None,
            cloud: AzureCloud::Public,
            endpoint: None,
            authority: None,
            imds_endpoint: None,
            identity: AzureIdentity::Managed,
            client_id: None,
            client_secret_file: None,
            client_certificate_file: None,
            call_timeout: Dur::from_ms(10_000),
            deadline: Dur::from_ms(30_000),
        }
    }
}

impl AzureSection {
    /// The Resource Manager endpoint in use, without a trailing slash.
    pub fn arm_endpoint(&self) -> String {
        trim(self.endpoint.as_deref(), self.cloud.arm_endpoint())
    }

    /// The Entra ID authority host in use, without a trailing slash.
    pub fn authority_host(&self) -> String {
        trim(self.authority.as_deref(), self.cloud.authority())
    }

    /// The instance metadata endpoint in use, without a trailing slash.
    pub fn imds(&self) -> String {
        trim(self.imds_endpoint.as_deref(), AZURE_IMDS_ENDPOINT)
    }
}

fn trim(v: Option<&str>, default: &str) -> String {
    v.unwrap_or(default).trim_end_matches('/').to_string()
}

/// A GUID as Azure writes subscription, tenant and client IDs:
/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (hex digits).
pub fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// A resource group name: 1 to 90 letters, digits, `_ - . ( )`, not ending with `.`.
pub fn is_resource_group(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 90
        && !s.ends_with('.')
        && s.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '(' | ')'))
}

const GUID_HINT: &str = "expected a GUID like 00000000-0000-0000-0000-000000000000";

pub(super) fn validate(d: &mut Diags<'_>, az: &AzureSection) {
    let at = |key: &str| [k("azure"), k(key)];
    if let Some(s) = &az.subscription_id {
        if !is_guid(s) {
            d.err(
                &at("subscription_id"),
                format!("`{s}` is not a subscription ID: {GUID_HINT}"),
            );
        }
    }
    if let Some(g) = &az.resource_group {
        if !is_resource_group(g) {
            d.err(
                &at("resource_group"),
                format!(
                    "`{g}` is not a resource group name: 1 to 90 letters, digits, `_`, `-`, `.`, \
                     `(` and `)`, not ending with `.`"
                ),
            );
        }
    }
    if let Some(t) = &az.tenant_id {
        let domain = t.contains('.') && !t.contains(char::is_whitespace) && !t.contains('/');
        if !is_guid(t) && !domain {
            d.err(
                &at("tenant_id"),
                format!("`{t}` is not a tenant: {GUID_HINT}, or a domain such as contoso.onmicrosoft.com"),
            );
        }
    }
    if let Some(c) = &az.client_id {
        if !is_guid(c) {
            d.err(
                &at("client_id"),
                format!("`{c}` is not a client ID: {GUID_HINT}"),
            );
        }
    }
    for (key, url) in [
        ("endpoint", &az.endpoint),
        ("authority", &az.authority),
        ("imds_endpoint", &az.imds_endpoint),
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
    validate_identity(d, az);
    if az.call_timeout.ms() < 100 || az.call_timeout.ms() > 120_000 {
        d.err(
            &at("call_timeout"),
            "call_timeout must be between 100ms and 120s",
        );
    }
    if az.deadline.ms() < az.call_timeout.ms() || az.deadline.ms() > 600_000 {
        d.err(
            &at("deadline"),
            format!(
                "deadline must be at least call_timeout ({}) and at most 10m",
                az.call_timeout
            ),
        );
    }
}

fn validate_identity(d: &mut Diags<'_>, az: &AzureSection) {
    let at = |key: &str| [k("azure"), k(key)];
    let secret = az.client_secret_file.is_some();
    let cert = az.client_certificate_file.is_some();
    match az.identity {
        AzureIdentity::ServicePrincipal => {
            if az.tenant_id.is_none() {
                d.err(
                    &at("identity"),
                    "identity = \"service-principal\" needs `tenant_id`",
                );
            }
            if az.client_id.is_none() {
                d.err(
                    &at("identity"),
                    "identity = \"service-principal\" needs `client_id` (the app's client ID)",
                );
            }
            if secret == cert {
                d.err(
                    &at("identity"),
                    "identity = \"service-principal\" needs exactly one of `client_secret_file` \
                     and `client_certificate_file`",
                );
            }
        }
        AzureIdentity::Managed | AzureIdentity::Cli => {
            let name = if az.identity == AzureIdentity::Managed {
                "managed"
            } else {
                "cli"
            };
            for (key, set) in [
                ("client_secret_file", secret),
                ("client_certificate_file", cert),
            ] {
                if set {
                    d.err(
                        &at(key),
                        format!(
                            "`{key}` is only used with identity = \"service-principal\" (identity is \"{name}\")"
                        ),
                    );
                }
            }
            if az.identity == AzureIdentity::Cli && az.client_id.is_some() {
                d.err(
                    &at("client_id"),
                    "`client_id` is not used with identity = \"cli\" (the CLI's login is used)",
                );
            }
        }
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

    const SUB: &str = "11111111-2222-3333-4444-555555555555";

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
        let az = ok("").config.azure;
        assert_eq!(az, AzureSection::default());
        assert_eq!(az.arm_endpoint(), "https://management.azure.com");
        assert_eq!(az.authority_host(), "https://login.microsoftonline.com");
        assert_eq!(az.imds(), "http://169.254.169.254");
        assert_eq!(az.identity, AzureIdentity::Managed);
        assert_eq!(az.call_timeout.ms(), 10_000);
        assert_eq!(az.deadline.ms(), 30_000);
    }

    #[test]
    fn a_full_section_loads() {
        let az = ok(&format!(
            "[azure]\nsubscription_id = \"{SUB}\"\nresource_group = \"rg-baton\"\n\
             tenant_id = \"contoso.onmicrosoft.com\"\ncloud = \"usgovernment\"\n\
             identity = \"service-principal\"\nclient_id = \"{SUB}\"\n\
             client_certificate_file = \"/etc/baton/sp.pem\"\ncall_timeout = \"5s\"\n\
             deadline = \"20s\"\nendpoint = \"http://127.0.0.1:9999/\"\n"
        ))
        .config
        .azure;
        assert_eq!(az.cloud, AzureCloud::UsGovernment);
        assert_eq!(az.identity, AzureIdentity::ServicePrincipal);
        assert_eq!(az.arm_endpoint(), "http://127.0.0.1:9999");
        assert_eq!(az.authority_host(), "https://login.microsoftonline.us");
        assert_eq!(
            az.cloud.arm_audience(),
            "https://management.usgovcloudapi.net/"
        );
        assert_eq!(az.resource_group.as_deref(), Some("rg-baton"));
        let china = ok("[azure]\ncloud = \"china\"\nidentity = \"cli\"\n")
            .config
            .azure;
        assert_eq!(china.arm_endpoint(), "https://management.chinacloudapi.cn");
    }

    #[test]
    fn unknown_keys_and_values_are_located() {
        let (text, errs) = errors("[azure]\nsubscripton_id = \"x\"\n");
        assert_eq!(errs.len(), 1, "{errs:?}");
        let d = &errs[0];
        assert_eq!(d.key, "azure.subscripton_id");
        assert_eq!(
            d.line,
            text.lines()
                .position(|l| l.starts_with("subscripton_id "))
                .unwrap()
                + 1
        );
        assert!(
            d.message.contains("(did you mean `subscription_id`?)"),
            "{d}"
        );
        assert_error(
            "[azure]\ncloud = \"germany\"\n",
            "azure.cloud",
            "cloud =",
            "germany",
        );
        assert_error(
            "[azure]\nidentity = \"msi\"\n",
            "azure.identity",
            "identity =",
            "msi",
        );
    }

    #[test]
    fn bad_values_are_located() {
        assert_error(
            "[azure]\nsubscription_id = \"abc\"\n",
            "azure.subscription_id",
            "subscription_id",
            "is not a subscription ID",
        );
        assert_error(
            "[azure]\nresource_group = \"rg.\"\n",
            "azure.resource_group",
            "resource_group",
            "not a resource group name",
        );
        assert_error(
            "[azure]\nendpoint = \"localhost:9\"\n",
            "azure.endpoint",
            "endpoint",
            "must start with http://",
        );
        assert_error(
            "[azure]\nimds_endpoint = \"169.254.169.254\"\n",
            "azure.imds_endpoint",
            "imds_endpoint",
            "must start with http://",
        );
        assert_error(
            "[azure]\ncall_timeout = \"10ms\"\n",
            "azure.call_timeout",
            "call_timeout",
            "between 100ms and 120s",
        );
        assert_error(
            "[azure]\ncall_timeout = \"20s\"\ndeadline = \"10s\"\n",
            "azure.deadline",
            "deadline",
            "at least call_timeout (20s)",
        );
        assert_error(
            "[azure]\ntenant_id = \"not a tenant\"\n",
            "azure.tenant_id",
            "tenant_id",
            "is not a tenant",
        );
    }

    #[test]
    fn identities_need_their_keys() {
        assert_error(
            &format!(
                "[azure]\nidentity = \"service-principal\"\ntenant_id = \"{SUB}\"\nclient_id = \"{SUB}\"\n"
            ),
            "azure.identity",
            "identity =",
            "exactly one of `client_secret_file` and `client_certificate_file`",
        );
        assert_error(
            &format!(
                "[azure]\nidentity = \"service-principal\"\nclient_id = \"{SUB}\"\nclient_secret_file = \"s\"\n"
            ),
            "azure.identity",
            "identity =",
            "needs `tenant_id`",
        );
        assert_error(
            "[azure]\nclient_secret_file = \"s\"\n",
            "azure.client_secret_file",
            "client_secret_file",
            "only used with identity = \"service-principal\"",
        );
        assert_error(
            &format!("[azure]\nidentity = \"cli\"\nclient_id = \"{SUB}\"\n"),
            "azure.client_id",
            "client_id",
            "not used with identity = \"cli\"",
        );
        // A user-assigned managed identity.
        let az = ok(&format!("[azure]\nclient_id = \"{SUB}\"\n"))
            .config
            .azure;
        assert_eq!(az.client_id.as_deref(), Some(SUB));
    }

    #[test]
    fn guids() {
        assert!(is_guid(SUB));
        assert!(!is_guid("11111111-2222-3333-4444-55555555555"));
        assert!(!is_guid("g1111111-2222-3333-4444-555555555555"));
        assert!(is_resource_group("rg_(prod)-1.a"));
        assert!(!is_resource_group(""));
        assert!(!is_resource_group("a/b"));
    }
}
