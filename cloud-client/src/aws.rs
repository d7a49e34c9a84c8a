//! The one AWS client factory: every AWS caller in Baton (the AWS resources and monitors
//! in `baton-providers`, the cloud witness, the SNS / CloudWatch sinks in
//! `baton-notifier`) builds its SDK clients from [`AwsClients`], so credentials, region,
//! endpoint override, timeouts and retry policy are decided once, and every failed call
//! is classified once ([`classify`], [`AwsFailure`]) and bounded by its deadline
//! ([`call`]). Service clients are built by their users from [`AwsClients::sdk_config`]
//! (this crate depends on no service SDK).
//!
//! - Credentials: the SDK's default chain (environment, shared profile / SSO, web
//!   identity, ECS, IMDSv2 instance role). Never from Baton's config file.
//! - Region: `[aws] region`, else the SDK chain (`AWS_REGION`, profile), else IMDSv2.
//! - `[aws] endpoint_url`: one override for every service (emulators, VPC endpoints).
//! - Proxy: the standard `HTTPS_PROXY` / `NO_PROXY` environment, honoured by the SDK's
//!   HTTP client.
//! - Retries are classified once, by the SDK's standard strategy: throttling
//!   (`RequestLimitExceeded`, `Throttling`, `SlowDown`, ...), transient 5xx and transport
//!   errors are retried with jittered exponential backoff up to `[aws] max_attempts`;
//!   client errors (4xx such as `UnauthorizedOperation`, `InvalidRouteTableID.NotFound`)
//!   are not. [`call`] bounds the whole call, retries included, by the action's deadline.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use baton_core::config::AwsSection;

/// Built once per agent (or per command); cheap to clone.
#[derive(Clone, Debug)]
pub struct AwsClients {
    sdk: SdkConfig,
    settings: AwsSection,
}

impl AwsClients {
    /// Resolve credentials provider, region and endpoint. Does not call AWS (credentials
    /// are fetched lazily by the first call), except IMDS for the region when none is set.
    pub async fn load(settings: &AwsSection) -> AwsClients {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(settings.max_attempts.max(1))
                    .with_initial_backoff(Duration::from_millis(100))
                    .with_max_backoff(Duration::from_secs(5)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_millis(settings.call_timeout.ms().min(3_000)))
                    .operation_attempt_timeout(Duration::from_millis(settings.call_timeout.ms()))
                    .build(),
            );
        if let Some(region) = &settings.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url.clone());
        }
        if let Some(profile) = &settings.profile {
            loader = loader.profile_name(profile.clone());
        }
        let sdk = loader.load().await;
        AwsClients {
            sdk,
            settings: settings.clone(),
        }
    }

    /// The shared SDK configuration, for crates that build clients of other services
    /// (the notifier's SNS and CloudWatch sinks).
    pub fn sdk_config(&self) -> &SdkConfig {
        &self.sdk
    }

    pub fn settings(&self) -> &AwsSection {
        &self.settings
    }

    /// The region in use, if one was found.
    pub fn region(&self) -> Option<String> {
        self.sdk.region().map(|r| r.to_string())
    }

    /// Whether S3 must use path-style addressing (an endpoint override is set: emulators
    /// and VPC endpoints do not serve virtual-hosted bucket names).
    pub fn s3_path_style(&self) -> bool {
        self.settings.endpoint_url.is_some()
    }

    /// A client for a region other than the default (a witness bucket in another region).
    pub fn with_region(&self, region: &str) -> AwsClients {
        let sdk = self
            .sdk
            .to_builder()
            .region(Region::new(region.to_string()))
            .build();
        AwsClients {
            sdk,
            settings: self.settings.clone(),
        }
    }
}

/// How a failed AWS call is classified (once, here) for events and `on_api_error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AwsFailure {
    /// The service did not answer usefully: timeout, transport error, throttling or 5xx
    /// after the retries. Monitors apply `on_api_error`.
    Unavailable {
        /// The operation called (`ReplaceRoute`, `sns.PublishBatch`).
        operation: String,
        /// AWS's error code when it answered with an error (`RequestLimitExceeded`;
        /// `Unknown` when it named none); `None` when there was no usable answer.
        code: Option<String>,
        /// The HTTP status of its answer, when there was one.
        status: Option<u16>,
        /// AWS's message, or what happened instead of an answer (`timed out`).
        message: String,
    },
    /// The service answered with a client error: the request or the setup is wrong
    /// (IDs, permissions, conditions).
    Rejected {
        operation: String,
        /// AWS's error code (`Unknown` when it named none).
        code: String,
        status: Option<u16>,
        /// AWS's message (may be empty).
        message: String,
    },
}

impl AwsFailure {
    /// AWS's error code of a rejection (an unavailability has none to act on).
    pub fn code(&self) -> Option<&str> {
        match self {
            AwsFailure::Rejected { code, .. } => Some(code),
            AwsFailure::Unavailable { .. } => None,
        }
    }

    /// The HTTP status of AWS's answer, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            AwsFailure::Unavailable { status, .. } | AwsFailure::Rejected { status, .. } => *status,
        }
    }

    /// What happened, without the words of the classification: `ReplaceRoute: timed out`,
    /// `ReplaceRoute: RequestLimitExceeded (HTTP 503): ...`, `ReplaceRoute: ...` (a
    /// rejection's message).
    pub fn detail(&self) -> String {
        match self {
            AwsFailure::Unavailable {
                operation,
                code,
                status,
                message,
            } => crate::unanswered(operation, code.as_deref(), *status, message),
            AwsFailure::Rejected {
                operation, message, ..
            } => format!("{operation}: {message}"),
        }
    }

    fn unavailable(operation: &str, message: impl Into<String>) -> AwsFailure {
        AwsFailure::Unavailable {
            operation: operation.to_string(),
            code: None,
            status: None,
            message: message.into(),
        }
    }
}

impl Display for AwsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AwsFailure::Unavailable { .. } => write!(f, "AWS did not answer: {}", self.detail()),
            AwsFailure::Rejected { code, .. } => write!(f, "{code}: {}", self.detail()),
        }
    }
}

/// Classify an SDK error. Throttling and 5xx that survived the retries count as the API
/// being unavailable, like timeouts and transport failures.
pub fn classify<E>(op: &str, err: &SdkError<E, HttpResponse>) -> AwsFailure
where
    E: ProvideErrorMetadata + std::error::Error,
{
    let status = http_status(err);
    match err {
        SdkError::ServiceError(se) => {
            let e = se.err();
            let code = e.code().unwrap_or("Unknown").to_string();
            let message = e.message().unwrap_or("").to_string();
            if is_throttling_code(&code) || status.is_some_and(|s| s >= 500) {
                AwsFailure::Unavailable {
                    operation: op.to_string(),
                    code: Some(code),
                    status,
                    message,
                }
            } else {
                AwsFailure::Rejected {
                    operation: op.to_string(),
                    code,
                    status,
                    message,
                }
            }
        }
        SdkError::TimeoutError(_) => AwsFailure::unavailable(op, "timed out"),
        SdkError::DispatchFailure(d) => AwsFailure::unavailable(
            op,
            format!(
                "could not reach the endpoint ({})",
                d.as_connector_error()
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "dispatch failure".into())
            ),
        ),
        SdkError::ResponseError(_) => AwsFailure::Unavailable {
            operation: op.to_string(),
            code: None,
            status,
            message: "the response could not be read".into(),
        },
        SdkError::ConstructionFailure(_) => AwsFailure::Rejected {
            operation: op.to_string(),
            code: "RequestNotBuilt".into(),
            status: None,
            message: "the request could not be built (missing or invalid parameter)".into(),
        },
        _ => AwsFailure::unavailable(op, "unexpected SDK failure"),
    }
}

/// The HTTP status of the answer, when there was one (a service error or an answer that
/// could not be read).
pub fn http_status<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

/// Error codes AWS uses for throttling (the SDK's standard classifier retries these).
pub fn is_throttling_code(code: &str) -> bool {
    matches!(
        code,
        "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "RequestThrottledException"
            | "TooManyRequestsException"
            | "ProvisionedThroughputExceededException"
            | "TransactionInProgressException"
            | "RequestLimitExceeded"
            | "BandwidthLimitExceeded"
            | "LimitExceededException"
            | "RequestThrottled"
            | "SlowDown"
            | "PriorRequestNotComplete"
            | "EC2ThrottledException"
    )
}

/// Run one SDK call (retries included) within `deadline`, classifying its failure.
pub async fn call<T, E, F>(op: &str, deadline: Duration, fut: F) -> Result<T, AwsFailure>
where
    F: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    E: ProvideErrorMetadata + std::error::Error,
{
    match tokio::time::timeout(deadline, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(classify(op, &e)),
        Err(_) => Err(AwsFailure::unavailable(
            op,
            format!(
                "no answer within {} ms (retries included)",
                deadline.as_millis()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::operation::replace_route::ReplaceRouteError;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    fn answer(
        status: u16,
        code: Option<&str>,
        message: &str,
    ) -> SdkError<ReplaceRouteError, HttpResponse> {
        let mut meta = ErrorMetadata::builder().message(message);
        if let Some(c) = code {
            meta = meta.code(c);
        }
        let raw = HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::empty());
        SdkError::service_error(ReplaceRouteError::generic(meta.build()), raw)
    }

    #[test]
    fn status_is_read_from_the_response() {
        let e = answer(503, Some("RequestLimitExceeded"), "slow down");
        assert_eq!(http_status(&e), Some(503));
        assert_eq!(
            classify("ReplaceRoute", &e).to_string(),
            "AWS did not answer: ReplaceRoute: RequestLimitExceeded (HTTP 503): slow down"
        );
        let f = classify("ReplaceRoute", &e);
        assert_eq!(f.status(), Some(503));
        assert_eq!(
            f.detail(),
            "ReplaceRoute: RequestLimitExceeded (HTTP 503): slow down"
        );
        let e = answer(500, None, "");
        assert_eq!(
            classify("ReplaceRoute", &e).to_string(),
            "AWS did not answer: ReplaceRoute: Unknown (HTTP 500)"
        );
        let e = answer(400, Some("InvalidRouteTableID.NotFound"), "no such table");
        let f = classify("ReplaceRoute", &e);
        assert_eq!(f.code(), Some("InvalidRouteTableID.NotFound"));
        assert_eq!(f.status(), Some(400));
        assert_eq!(
            f.to_string(),
            "InvalidRouteTableID.NotFound: ReplaceRoute: no such table"
        );
        let e: SdkError<ReplaceRouteError, HttpResponse> = SdkError::timeout_error("slow");
        assert_eq!(http_status(&e), None);
        assert_eq!(
            classify("ReplaceRoute", &e).to_string(),
            "AWS did not answer: ReplaceRoute: timed out"
        );
    }
}
