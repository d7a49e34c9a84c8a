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
    /// An API (cloud or local) did not answer usefully; monitors apply `on_api_error`.
    #[error("API error: {0}")]
    Api(String),
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
            ProviderError::Api(_) => "api-error",
            ProviderError::Other(_) => "other",
        }
    }

    /// True when the failure is the API's, not the monitored target's (invariant 5).
    pub fn is_api_error(&self) -> bool {
        matches!(self, ProviderError::Api(_))
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
