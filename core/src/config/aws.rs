//! `[aws]`: how every AWS caller (provider, cloud witness, notifier) builds its clients.

use serde::{Deserialize, Serialize};

use super::diagnostics::{k, Diags};
use super::Dur;

/// `[aws]`: settings of the one AWS client factory. Credentials are never in the file:
/// they come from the SDK's default chain (environment, shared profile, SSO, web identity,
/// IMDSv2 instance role).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsSection {
    /// Region. Default: the SDK's chain (`AWS_REGION`, profile), then IMDSv2.
    pub region: Option<String>,
    /// Endpoint override for every AWS service (emulators, VPC interface endpoints).
    pub endpoint_url: Option<String>,
    /// Shared-config profile to use instead of the default chain's choice.
    pub profile: Option<String>,
    /// Timeout of one API call attempt. Default `10s`.
    pub call_timeout: Dur,
    /// Attempts per API call for throttling and 5xx errors (jittered backoff, always
    /// within the action's own deadline). Default 4. Client errors are never retried.
    pub max_attempts: u32,
    /// Discover omitted ENI IDs and zones from the instance metadata service (IMDSv2) at
    /// start-up. Default true.
    pub imds: bool,
}

impl Default for AwsSection {
    fn default() -> Self {
        AwsSection {
            region: None,
            endpoint_url: None,
            profile: None,
            call_timeout: Dur::from_ms(10_000),
            max_attempts: 4,
            imds: true,
        }
    }
}

pub(super) fn validate(d: &mut Diags<'_>, aws: &AwsSection) {
    if let Some(url) = &aws.endpoint_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            d.err(
                &[k("aws"), k("endpoint_url")],
                format!("endpoint_url `{url}` must start with http:// or https://"),
            );
        }
    }
    if let Some(r) = &aws.region {
        let ok = !r.is_empty()
            && r.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            d.err(
                &[k("aws"), k("region")],
                format!("`{r}` is not a region name (for example `us-east-1`)"),
            );
        }
    }
    if aws.call_timeout.ms() < 100 || aws.call_timeout.ms() > 120_000 {
        d.err(
            &[k("aws"), k("call_timeout")],
            "call_timeout must be between 100ms and 120s",
        );
    }
    if aws.max_attempts == 0 || aws.max_attempts > 10 {
        d.err(
            &[k("aws"), k("max_attempts")],
            "max_attempts must be between 1 and 10",
        );
    }
}
