use thiserror::Error;

/// A resource action or probe failed. `code()` is stable and appears in events.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProviderError {
    /// The action did not finish within its deadline (what it started was killed).
    #[error("timed out after {0} ms")]
    Timeout(u64),
    /// A script or command ran and failed.
    #[error("{what} exited with status {status}: {stderr}")]
    CommandFailed {
        what: String,
        status: i32,
        stderr: String,
    },
    /// A command could not be started at all (missing binary, permission).
    #[error("could not run {what}: {reason}")]
    Spawn { what: String, reason: String },
    /// The probe ran and found the target unhealthy.
    #[error("{0}")]
    Unhealthy(String),
    /// An API (cloud or local) did not answer usefully: no answer in time, a transport
    /// error, throttling or a server error after the retries. Monitors apply
    /// `on_api_error`.
    #[error("API error: {}", baton_cloud_client::unanswered(.operation, .code.as_deref(), *.status, .message))]
    Api {
        /// The operation called (`ReplaceRoute`, `sns.PublishBatch`).
        operation: String,
        /// The API's error code when it answered with one (`RequestLimitExceeded`).
        code: Option<String>,
        /// The HTTP status of its answer, when there was one.
        status: Option<u16>,
        /// The API's message, or what happened instead of an answer (`timed out`).
        message: String,
    },
    /// The API answered with a refusal, a client error (an ID it does not know, a
    /// missing permission, a failed condition): the request or the setup is wrong. Not
    /// an API error for `on_api_error`: the answer was clear.
    #[error("{code}: {operation}: {message}")]
    Rejected {
        operation: String,
        /// The API's error code (`InvalidRouteTableID.NotFound`, `UnauthorizedOperation`).
        code: String,
        status: Option<u16>,
        /// The API's message (may be empty).
        message: String,
    },
    /// Fencing (design invariant 3): a newer epoch of the group holds the resource, so
    /// this activation did not write it (see [`crate::fencing`]). The message names the
    /// resource in its kind's words.
    #[error("{message}")]
    Fenced {
        /// The resource refused, as the message names it (`route table rtb-0a1b2c3d`).
        resource: String,
        /// The group whose epoch it carries.
        group: String,
        /// The server holding it at `epoch` (empty when its mark names none).
        holder: String,
        /// The holder's epoch, newer than `ours`.
        epoch: u64,
        /// This activation's epoch.
        ours: u64,
        /// What happened, starting with the name of the refusing resource or monitor.
        message: String,
    },
    /// Anything else, described.
    #[error("{0}")]
    Other(String),
}

impl ProviderError {
    /// Stable short code for events, the API and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            ProviderError::Timeout(_) => "timeout",
            ProviderError::CommandFailed { .. } => "command-failed",
            ProviderError::Spawn { .. } => "spawn-failed",
            ProviderError::Unhealthy(_) => "unhealthy",
            ProviderError::Api { .. } => "api-error",
            // The code these refusals have always had in events and `baton status`.
            ProviderError::Rejected { .. } => "other",
            ProviderError::Fenced { .. } => "fenced",
            ProviderError::Other(_) => "other",
        }
    }

    /// True when the failure is the API's, not the monitored target's (invariant 5).
    pub fn is_api_error(&self) -> bool {
        matches!(self, ProviderError::Api { .. })
    }
}

/// A kind-specific key is wrong. `key` is a dotted path relative to the entry's table
/// (e.g. `start` or `server.node-1.ip`), so the config loader can point at line and column.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{message}")]
pub struct ParamError {
    pub key: Option<String>,
    pub message: String,
}

impl ParamError {
    pub fn new(key: impl Into<Option<String>>, message: impl Into<String>) -> Self {
        ParamError {
            key: key.into(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_failures_keep_their_texts_and_codes() {
        let api = |code: Option<&str>, status, message: &str| ProviderError::Api {
            operation: "ReplaceRoute".into(),
            code: code.map(str::to_string),
            status,
            message: message.into(),
        };
        let e = api(Some("RequestLimitExceeded"), Some(503), "slow down");
        assert_eq!(
            e.to_string(),
            "API error: ReplaceRoute: RequestLimitExceeded (HTTP 503): slow down"
        );
        assert_eq!(e.code(), "api-error");
        assert!(e.is_api_error());
        assert_eq!(
            api(Some("Unknown"), Some(500), "").to_string(),
            "API error: ReplaceRoute: Unknown (HTTP 500)"
        );
        assert_eq!(
            api(None, Some(502), "the response could not be read").to_string(),
            "API error: ReplaceRoute: the response could not be read"
        );
        let e = ProviderError::Rejected {
            operation: "ReplaceRoute".into(),
            code: "InvalidRouteTableID.NotFound".into(),
            status: Some(400),
            message: "no such table".into(),
        };
        assert_eq!(
            e.to_string(),
            "InvalidRouteTableID.NotFound: ReplaceRoute: no such table"
        );
        assert_eq!(e.code(), "other");
        assert!(!e.is_api_error());
    }
}
