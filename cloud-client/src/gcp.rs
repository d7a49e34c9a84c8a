//! The one Google Cloud client factory: every Google Cloud caller in Baton (today the
//! `gcp-dns` resource and monitor; later the route and alias-IP VIP, the load-balancer
//! probe check, maintenance events and `baton cloud check`) sends its Cloud DNS and
//! Compute Engine requests through a [`GcpClient`], so the credentials, the endpoints,
//! the timeouts and the retry policy are decided once, and every failed call is
//! classified once ([`GcpFailure`], [`FailureKind`]).
//!
//! Typed REST calls over `reqwest` (rustls), no Google Cloud client library: see
//! `docs/src/gcp.md`, "Why REST". The callers own the request and response shapes
//! (serde values beside their kind); this module owns everything around them:
//!
//! - Credentials ([`GcpSection::credentials`]): the VM's service account through the
//!   metadata server (header `Metadata-Flavor: Google`), a service-account key file (an
//!   RS256-signed JWT assertion exchanged at the token endpoint), or application default
//!   credentials (`GOOGLE_APPLICATION_CREDENTIALS`, else gcloud's
//!   `application_default_credentials.json`: a user's refresh token or a service-account
//!   key; else the metadata server). Tokens are cached and fetched again before they
//!   expire (five minutes, or half their life when shorter).
//! - Endpoints: Cloud DNS, Compute, the metadata server and the token endpoint, each
//!   overridable.
//! - Bounds: each HTTP attempt has `call_timeout`; a call with its retries has the
//!   smaller of `deadline` and the budget its caller gives (the action's time left).
//! - Retries: 429, 5xx, 403 `rateLimitExceeded` / `userRateLimitExceeded`, timeouts and
//!   transport errors are retried while time remains, after the answer's `Retry-After`
//!   (seconds) or a jittered exponential backoff; a `Retry-After` that does not fit in
//!   the time left ends the call. A 401 fetches a new token once. Other 4xx answers are
//!   never retried.
//! - Classification: Google's error body `{"error":{"code","message","errors":[{"reason"}],
//!   "status"}}` (and OAuth's `{"error","error_description"}`) gives the reason; the
//!   failure's [`FailureKind`] (unavailable, not found, permission denied, credentials,
//!   conflict, rejected) is decided in one place, [`classify`].

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use baton_core::config::{GcpCredentials, GcpSection, GCP_TOKEN_ENDPOINT};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::clock::{self, Instant};
use crate::retry::{noted, retrying, RetryFailure};

/// The OAuth scope Baton asks for: Google recommends `cloud-platform` with IAM roles
/// doing the restricting.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// The grant type of a service-account JWT assertion.
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// A token is fetched again this long before it expires (or at half its life).
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// First pause before reading a pending operation again; doubles up to 2 s.
const FIRST_POLL: Duration = Duration::from_millis(50);
/// Lifetime of the JWT assertion (Google accepts at most one hour).
const ASSERTION_LIFETIME_S: u64 = 3600;

/// What a refusal means for the caller: one stable class per failure, decided once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// No useful answer (timeout, transport, throttling, 5xx after the retries).
    Unavailable,
    /// 404: the project, zone, record or resource does not exist.
    NotFound,
    /// 403: the principal may not do this (IAM role, access scopes).
    PermissionDenied,
    /// No token could be had, or the API refused the token (401, OAuth errors, an
    /// unreadable key file, no service account on the VM).
    Credentials,
    /// 409 or 412: the state changed meanwhile (a condition failed, something exists).
    Conflict,
    /// Any other client error: the request or the set-up is wrong.
    Rejected,
}

impl FailureKind {
    /// Stable code (events, logs).
    pub fn code(self) -> &'static str {
        match self {
            FailureKind::Unavailable => "unavailable",
            FailureKind::NotFound => "not-found",
            FailureKind::PermissionDenied => "permission-denied",
            FailureKind::Credentials => "credentials",
            FailureKind::Conflict => "conflict",
            FailureKind::Rejected => "rejected",
        }
    }
}

/// How a failed Google Cloud call is classified (once, here) for events and
/// `on_api_error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GcpFailure {
    /// Google did not answer usefully: timeout, transport error, throttling or 5xx after
    /// the retries. Monitors apply `on_api_error`.
    Unavailable {
        /// The operation called (`dns.changes.create`, `token.metadata`).
        operation: String,
        /// Google's reason when it answered with one (`rateLimitExceeded`).
        reason: Option<String>,
        /// The HTTP status of its answer, when there was one.
        status: Option<u16>,
        /// Google's message, or what happened instead of an answer.
        message: String,
    },
    /// Google (or the local credential) answered with a refusal.
    Rejected {
        operation: String,
        kind: FailureKind,
        /// Google's reason (`notFound`, `conditionNotMet`, `alreadyExists`, `forbidden`,
        /// `invalid_grant`), or one of Baton's for a local failure
        /// (`credentialUnavailable`, `invalidKeyFile`).
        reason: String,
        status: Option<u16>,
        message: String,
    },
}

impl GcpFailure {
    fn unavailable(operation: &str, message: impl Into<String>) -> GcpFailure {
        GcpFailure::Unavailable {
            operation: operation.to_string(),
            reason: None,
            status: None,
            message: message.into(),
        }
    }

    fn credentials(operation: &str, reason: &str, message: impl Into<String>) -> GcpFailure {
        GcpFailure::Rejected {
            operation: operation.to_string(),
            kind: FailureKind::Credentials,
            reason: reason.to_string(),
            status: None,
            message: message.into(),
        }
    }

    /// The class of the failure.
    pub fn kind(&self) -> FailureKind {
        match self {
            GcpFailure::Unavailable { .. } => FailureKind::Unavailable,
            GcpFailure::Rejected { kind, .. } => *kind,
        }
    }

    /// Google's reason of a rejection (an unavailability has none to act on).
    pub fn reason(&self) -> Option<&str> {
        match self {
            GcpFailure::Rejected { reason, .. } => Some(reason),
            GcpFailure::Unavailable { .. } => None,
        }
    }

    /// The HTTP status of Google's answer, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            GcpFailure::Unavailable { status, .. } | GcpFailure::Rejected { status, .. } => *status,
        }
    }

    /// A rejection with this HTTP status.
    pub fn is_status(&self, status: u16) -> bool {
        matches!(self, GcpFailure::Rejected { status: Some(s), .. } if *s == status)
    }

    /// What happened, without the words of the classification.
    pub fn detail(&self) -> String {
        match self {
            GcpFailure::Unavailable {
                operation,
                reason,
                status,
                message,
            } => crate::unanswered(operation, reason.as_deref(), *status, message),
            GcpFailure::Rejected {
                operation, message, ..
            } => format!("{operation}: {message}"),
        }
    }
}

impl Display for GcpFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GcpFailure::Unavailable { .. } => {
                write!(f, "Google Cloud did not answer: {}", self.detail())
            }
            GcpFailure::Rejected { reason, .. } => write!(f, "{reason}: {}", self.detail()),
        }
    }
}

/// Which API a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// Cloud DNS v1: paths under `/dns/v1/`.
    Dns,
    /// Compute Engine v1: paths under `/compute/v1/`.
    Compute,
}

/// One Cloud DNS or Compute request.
#[derive(Debug, Clone)]
pub struct GcpRequest {
    operation: String,
    method: Method,
    api: Api,
    /// From the API's root: `/dns/v1/projects/...` (segments already escaped).
    path: String,
    query: Vec<(String, String)>,
    body: Option<Value>,
}

impl GcpRequest {
    /// A Cloud DNS request; `path` follows `/dns/v1/` (`projects/P/managedZones/Z/...`).
    pub fn dns(operation: &str, method: Method, path: &str) -> Self {
        GcpRequest::new(operation, method, Api::Dns, format!("/dns/v1/{path}"))
    }

    /// A Compute request; `path` follows `/compute/v1/` (`projects/P/global/routes`).
    pub fn compute(operation: &str, method: Method, path: &str) -> Self {
        GcpRequest::new(
            operation,
            method,
            Api::Compute,
            format!("/compute/v1/{path}"),
        )
    }

    fn new(operation: &str, method: Method, api: Api, path: String) -> Self {
        GcpRequest {
            operation: operation.to_string(),
            method,
            api,
            path,
            query: Vec::new(),
            body: None,
        }
    }

    /// Add a query parameter (escaped here).
    pub fn query(mut self, key: &str, value: &str) -> Self {
        self.query.push((key.to_string(), value.to_string()));
        self
    }

    pub fn json(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    pub fn operation(&self) -> &str {
        &self.operation
    }
}

/// A successful (2xx) answer.
#[derive(Debug, Clone)]
pub struct GcpResponse {
    pub status: u16,
    pub headers: HeaderMap,
    /// The JSON body (`Null` when empty; a text body as a JSON string).
    pub body: Value,
}

impl GcpResponse {
    /// The body as `T`; a body that does not fit is an unusable answer.
    pub fn json<T: DeserializeOwned>(&self, operation: &str) -> Result<T, GcpFailure> {
        serde_json::from_value(self.body.clone()).map_err(|e| GcpFailure::Unavailable {
            operation: operation.to_string(),
            reason: None,
            status: Some(self.status),
            message: format!("the response could not be read: {e}"),
        })
    }
}

/// What the environment says about credentials and the metadata server: the process's
/// environment ([`AdcEnv::from_process`]) or, in tests, given values.
#[derive(Debug, Clone, Default)]
pub struct AdcEnv {
    /// `GCE_METADATA_HOST` (`host[:port]`, as Google's client libraries read it): the
    /// metadata server when `[gcp] metadata_endpoint` is not set.
    pub metadata_host: Option<String>,
    /// `GOOGLE_APPLICATION_CREDENTIALS`.
    pub credentials_file: Option<PathBuf>,
    /// gcloud's configuration directory: `CLOUDSDK_CONFIG`, else `$HOME/.config/gcloud`.
    pub gcloud_dir: Option<PathBuf>,
}

impl AdcEnv {
    pub fn from_process() -> AdcEnv {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        AdcEnv {
            metadata_host: std::env::var("GCE_METADATA_HOST")
                .ok()
                .filter(|v| !v.trim().is_empty()),
            credentials_file: var("GOOGLE_APPLICATION_CREDENTIALS"),
            gcloud_dir: var("CLOUDSDK_CONFIG")
                .or_else(|| var("HOME").map(|h| h.join(".config/gcloud"))),
        }
    }

    /// The well-known file gcloud writes (`gcloud auth application-default login`).
    pub fn well_known_file(&self) -> Option<PathBuf> {
        self.gcloud_dir
            .as_ref()
            .map(|d| d.join("application_default_credentials.json"))
    }
}

/// How a request is authenticated.
enum Credential {
    Metadata,
    ServiceAccount {
        email: String,
        key: Arc<ring::signature::RsaKeyPair>,
        key_id: Option<String>,
        token_uri: String,
        project: Option<String>,
        file: PathBuf,
    },
    User {
        client_id: String,
        client_secret: String,
        refresh_token: String,
        token_uri: String,
        project: Option<String>,
        file: PathBuf,
    },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key, the secret or the refresh token.
        match self {
            Credential::Metadata => write!(f, "Metadata"),
            Credential::ServiceAccount { email, key_id, .. } => {
                write!(f, "ServiceAccount({email}, key {key_id:?})")
            }
            Credential::User { client_id, .. } => write!(f, "User(client {client_id})"),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    value: String,
    refresh_at: Instant,
    expires_at: Instant,
}

impl Token {
    fn new(value: String, lifetime: Duration) -> Token {
        let now = clock::now();
        let margin = REFRESH_MARGIN.min(lifetime / 2);
        Token {
            value,
            refresh_at: now + lifetime - margin,
            expires_at: now + lifetime,
        }
    }
}

#[derive(Debug)]
struct Inner {
    settings: GcpSection,
    http: reqwest::Client,
    /// Without a proxy: the metadata server is link-local.
    metadata_http: reqwest::Client,
    credential: Credential,
    /// The metadata server, without a trailing slash: `[gcp] metadata_endpoint`, else
    /// `GCE_METADATA_HOST`, else `http://169.254.169.254`.
    metadata_base: String,
    token: tokio::sync::Mutex<Option<Token>>,
    project: tokio::sync::OnceCell<String>,
}

/// Built once per agent (or per command); cheap to clone.
#[derive(Debug, Clone)]
pub struct GcpClient {
    inner: Arc<Inner>,
}

type Attempt<T> = crate::retry::Attempt<T, GcpFailure>;

impl RetryFailure for GcpFailure {
    fn out_of_time(operation: &str) -> Self {
        GcpFailure::unavailable(operation, "no time left for the call")
    }

    fn with_note(self, note: &str) -> Self {
        match self {
            GcpFailure::Unavailable {
                operation,
                reason,
                status,
                message,
            } => GcpFailure::Unavailable {
                operation,
                reason,
                status,
                message: noted(message, note),
            },
            // A 401 retried once with a new token that was refused again, or another
            // refusal: its message says enough.
            other => other,
        }
    }
}

impl GcpClient {
    /// Resolve the credentials (reading a key file) and the endpoints, with application
    /// default credentials looked for in the process's environment. Does not call
    /// Google: tokens are fetched by the first call.
    pub fn new(settings: &GcpSection) -> Result<GcpClient, GcpFailure> {
        GcpClient::with_env(settings, &AdcEnv::from_process())
    }

    /// As [`GcpClient::new`], application default credentials looked for in `env`.
    pub fn with_env(settings: &GcpSection, env: &AdcEnv) -> Result<GcpClient, GcpFailure> {
        let credential = credential(settings, env)?;
        let connect = Duration::from_millis(settings.call_timeout.ms().min(3_000));
        let build = |proxy: bool| {
            let mut b = reqwest::Client::builder().connect_timeout(connect);
            if !proxy {
                b = b.no_proxy();
            }
            b.build().map_err(|e| GcpFailure::Rejected {
                operation: "client".into(),
                kind: FailureKind::Rejected,
                reason: "clientNotBuilt".into(),
                status: None,
                message: format!("HTTP client: {e}"),
            })
        };
        Ok(GcpClient {
            inner: Arc::new(Inner {
                settings: settings.clone(),
                http: build(true)?,
                metadata_http: build(false)?,
                credential,
                metadata_base: match (&settings.metadata_endpoint, &env.metadata_host) {
                    (None, Some(host))
                        if host.starts_with("http://") || host.starts_with("https://") =>
                    {
                        host.trim_end_matches('/').to_string()
                    }
                    (None, Some(host)) => format!("http://{}", host.trim_end_matches('/')),
                    _ => settings.metadata(),
                },
                token: tokio::sync::Mutex::new(None),
                project: tokio::sync::OnceCell::new(),
            }),
        })
    }

    pub fn settings(&self) -> &GcpSection {
        &self.inner.settings
    }

    /// The credentials in use, for messages.
    pub fn identity(&self) -> String {
        match &self.inner.credential {
            Credential::Metadata => "the VM's service account (metadata server)".into(),
            Credential::ServiceAccount { email, file, .. } => {
                format!("service account {email} (key file {})", file.display())
            }
            Credential::User { file, .. } => {
                format!("the user login of {}", file.display())
            }
        }
    }

    /// The project of the calls that name none: `[gcp] project`, else the key file's
    /// `project_id` (or an ADC file's `quota_project_id`), else the metadata server's.
    pub async fn project(&self, budget: Duration) -> Result<String, GcpFailure> {
        if let Some(p) = &self.inner.settings.project {
            return Ok(p.clone());
        }
        let from_file = match &self.inner.credential {
            Credential::ServiceAccount { project, .. } | Credential::User { project, .. } => {
                project.clone()
            }
            Credential::Metadata => None,
        };
        if let Some(p) = from_file {
            return Ok(p);
        }
        self.inner
            .project
            .get_or_try_init(|| async {
                let p = self.metadata("project/project-id", budget).await?;
                Ok(p.trim().to_string())
            })
            .await
            .cloned()
    }

    /// Read a value of this VM's metadata server (`instance/network-interfaces/0/ip`),
    /// within `budget`.
    pub async fn metadata(&self, path: &str, budget: Duration) -> Result<String, GcpFailure> {
        self.metadata_watch(path, None, Duration::ZERO, budget)
            .await
            .map(|(v, _)| v)
    }

    /// Read a metadata value and its `ETag`. With `last_etag`, a hanging GET
    /// (`wait_for_change=true`): the metadata server answers as soon as the value's ETag
    /// differs from `last_etag` (at once when it differs already), or after `wait` with
    /// the value unchanged. Within `budget`.
    pub async fn metadata_watch(
        &self,
        path: &str,
        last_etag: Option<&str>,
        wait: Duration,
        budget: Duration,
    ) -> Result<(String, Option<String>), GcpFailure> {
        let end = clock::now() + budget.min(self.inner.settings.deadline.0 + wait);
        let op = format!("metadata.{path}");
        let mut url = format!("{}/computeMetadata/v1/{path}", self.inner.metadata_base);
        let mut limit = self.inner.settings.call_timeout.0;
        if let Some(etag) = last_etag {
            let secs = wait.as_secs().max(1);
            url.push_str(&format!(
                "?wait_for_change=true&timeout_sec={secs}&last_etag={}",
                escape(etag)
            ));
            limit += Duration::from_secs(secs);
        }
        let r = retrying(&op, end, || async {
            let rb = self
                .inner
                .metadata_http
                .get(&url)
                .header("Metadata-Flavor", "Google");
            self.exchange_within(&op, rb, end, limit).await
        })
        .await?;
        let etag = r
            .headers
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let value = match r.body {
            Value::String(s) => s,
            other => other.to_string(),
        };
        Ok((value, etag))
    }

    /// Send one request within `budget` (and `[gcp] deadline`), retries included.
    pub async fn send(
        &self,
        req: &GcpRequest,
        budget: Duration,
    ) -> Result<GcpResponse, GcpFailure> {
        let s = &self.inner.settings;
        self.send_within(req, budget.min(s.deadline.0), s.call_timeout.0)
            .await
    }

    /// [`GcpClient::send`] within `budget`, each attempt bounded by `attempt` (a long
    /// call such as an operation's `wait` may take more than `call_timeout`).
    async fn send_within(
        &self,
        req: &GcpRequest,
        budget: Duration,
        attempt: Duration,
    ) -> Result<GcpResponse, GcpFailure> {
        let end = clock::now() + budget;
        let renewed = AtomicBool::new(false);
        let renewed = &renewed;
        let url = self.url(req);
        retrying(&req.operation, end, || async {
            let token = match self.token(end).await {
                Ok(t) => t,
                Err(f) => return Attempt::Done(Err(f)),
            };
            let mut rb = self
                .inner
                .http
                .request(req.method.clone(), &url)
                .bearer_auth(&token);
            if let Some(b) = &req.body {
                rb = rb.json(b);
            }
            match self.exchange_within(&req.operation, rb, end, attempt).await {
                Attempt::Done(Err(f))
                    if f.is_status(401) && !renewed.swap(true, Ordering::Relaxed) =>
                {
                    // An expired or revoked token: fetch a new one, once.
                    *self.inner.token.lock().await = None;
                    Attempt::Retry {
                        failure: f,
                        after: Some(Duration::ZERO),
                    }
                }
                other => other,
            }
        })
        .await
    }

    /// Follow the Compute operation an answer started (`compute#operation`) until it is
    /// `DONE`, within `budget`: `Ok` when it succeeded, its error classified like an
    /// answer's (`RESOURCE_NOT_FOUND` 404, `RESOURCE_ALREADY_EXISTS` 409,
    /// `CONDITION_NOT_MET` 412, ...) when it failed, unavailable when time ran out.
    /// Uses the operation's `wait` method, which Compute answers as soon as the
    /// operation is `DONE` (or after about two minutes): no polling interval is added.
    pub async fn wait_operation(
        &self,
        operation: &str,
        project: &str,
        started: &Value,
        budget: Duration,
    ) -> Result<(), GcpFailure> {
        let end = clock::now() + budget;
        let name = started["name"].as_str().unwrap_or_default();
        let last = |v: &Value, k: &str| {
            v[k].as_str()
                .and_then(|l| l.rsplit('/').next())
                .map(str::to_string)
        };
        let (op, path) = if let Some(zone) = last(started, "zone") {
            (
                "compute.zoneOperations.wait",
                format!("projects/{project}/zones/{zone}/operations/{name}/wait"),
            )
        } else if let Some(region) = last(started, "region") {
            (
                "compute.regionOperations.wait",
                format!("projects/{project}/regions/{region}/operations/{name}/wait"),
            )
        } else {
            (
                "compute.globalOperations.wait",
                format!("projects/{project}/global/operations/{name}/wait"),
            )
        };
        let req = GcpRequest::compute(op, Method::POST, &path);
        let mut current = started.clone();
        let mut pause = FIRST_POLL;
        loop {
            if current["status"].as_str() == Some("DONE") {
                return operation_result(operation, &current);
            }
            let left = end.saturating_duration_since(clock::now());
            if left.is_zero() {
                return Err(GcpFailure::unavailable(
                    operation,
                    format!(
                        "the operation {name} was still {} after {} ms",
                        current["status"].as_str().unwrap_or("?"),
                        budget.as_millis()
                    ),
                ));
            }
            let asked = clock::now();
            current = self.send_within(&req, left, left).await?.body;
            // A wait that came back early and not DONE (a proxy, an old API): pause
            // before asking again.
            if current["status"].as_str() != Some("DONE") && asked.elapsed() < pause {
                let left = end.saturating_duration_since(clock::now());
                tokio::time::sleep(pause.min(left)).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }

    fn url(&self, req: &GcpRequest) -> String {
        let s = &self.inner.settings;
        let base = match req.api {
            Api::Dns => s.dns(),
            Api::Compute => s.compute(),
        };
        let mut url = format!("{base}{}", req.path);
        for (i, (k, v)) in req.query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&escape(k));
            url.push('=');
            url.push_str(&escape(v));
        }
        url
    }

    /// One HTTP attempt, bounded by `call_timeout` and `end`, classified.
    async fn exchange(
        &self,
        operation: &str,
        rb: reqwest::RequestBuilder,
        end: Instant,
    ) -> Attempt<GcpResponse> {
        self.exchange_within(operation, rb, end, self.inner.settings.call_timeout.0)
            .await
    }

    /// One HTTP attempt, bounded by `limit` and `end`, classified.
    async fn exchange_within(
        &self,
        operation: &str,
        rb: reqwest::RequestBuilder,
        end: Instant,
        limit: Duration,
    ) -> Attempt<GcpResponse> {
        let left = end.saturating_duration_since(clock::now());
        let limit = left.min(limit);
        let fut = async {
            let resp = rb.send().await?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let bytes = resp.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, bytes))
        };
        match tokio::time::timeout(limit, fut).await {
            Err(_) => Attempt::Retry {
                failure: GcpFailure::unavailable(
                    operation,
                    format!("no answer within {} ms", limit.as_millis()),
                ),
                after: None,
            },
            Ok(Err(e)) => Attempt::Retry {
                failure: GcpFailure::unavailable(
                    operation,
                    format!("could not reach the endpoint ({})", plain(&e)),
                ),
                after: None,
            },
            Ok(Ok((status, headers, bytes))) => classify(operation, status, headers, &bytes),
        }
    }

    /// A valid access token (cached; fetched again before it expires).
    async fn token(&self, end: Instant) -> Result<String, GcpFailure> {
        let mut cached = self.inner.token.lock().await;
        if let Some(t) = cached.as_ref().filter(|t| clock::now() < t.refresh_at) {
            return Ok(t.value.clone());
        }
        match self.fetch_token(end).await {
            Ok(t) => {
                let v = t.value.clone();
                *cached = Some(t);
                Ok(v)
            }
            // Refreshing early failed: the old token is still good for a while.
            Err(_) if cached.as_ref().is_some_and(|t| clock::now() < t.expires_at) => {
                Ok(cached.as_ref().map(|t| t.value.clone()).unwrap_or_default())
            }
            // Whatever refused a token is a credentials problem (an unavailable
            // endpoint stays unavailable).
            Err(GcpFailure::Rejected {
                operation,
                reason,
                status,
                message,
                ..
            }) => Err(GcpFailure::Rejected {
                operation,
                kind: FailureKind::Credentials,
                reason,
                status,
                message,
            }),
            Err(f) => Err(f),
        }
    }

    async fn fetch_token(&self, end: Instant) -> Result<Token, GcpFailure> {
        match &self.inner.credential {
            Credential::Metadata => {
                let op = "token.metadata";
                let url = format!(
                    "{}/computeMetadata/v1/instance/service-accounts/default/token",
                    self.inner.metadata_base
                );
                let r = retrying(op, end, || async {
                    let rb = self
                        .inner
                        .metadata_http
                        .get(&url)
                        .header("Metadata-Flavor", "Google");
                    self.exchange(op, rb, end).await
                })
                .await
                .map_err(|f| match f {
                    // No service account attached: the metadata server has no such path.
                    f if f.is_status(404) => GcpFailure::credentials(
                        op,
                        "noServiceAccount",
                        "the VM has no service account (the metadata server has no token): \
                         attach one, or set [gcp] credentials",
                    ),
                    f => f,
                })?;
                token_of(op, &r.body)
            }
            Credential::ServiceAccount {
                email,
                key,
                key_id,
                token_uri,
                ..
            } => {
                let op = "token.serviceAccount";
                let url = self.token_url(token_uri);
                let assertion = assertion(key, key_id.as_deref(), email, &url)?;
                let form = vec![
                    ("grant_type", JWT_BEARER.to_string()),
                    ("assertion", assertion),
                ];
                self.post_token(op, &url, form, end).await
            }
            Credential::User {
                client_id,
                client_secret,
                refresh_token,
                token_uri,
                ..
            } => {
                let op = "token.refreshToken";
                let url = self.token_url(token_uri);
                let form = vec![
                    ("grant_type", "refresh_token".to_string()),
                    ("client_id", client_id.clone()),
                    ("client_secret", client_secret.clone()),
                    ("refresh_token", refresh_token.clone()),
                ];
                self.post_token(op, &url, form, end).await
            }
        }
    }

    /// `[gcp] token_endpoint`, else the credential file's `token_uri`.
    fn token_url(&self, from_file: &str) -> String {
        self.inner
            .settings
            .token_endpoint
            .clone()
            .unwrap_or_else(|| from_file.to_string())
    }

    async fn post_token(
        &self,
        op: &str,
        url: &str,
        form: Vec<(&'static str, String)>,
        end: Instant,
    ) -> Result<Token, GcpFailure> {
        let r = retrying(op, end, || async {
            let rb = self.inner.http.post(url).form(&form);
            self.exchange(op, rb, end).await
        })
        .await?;
        token_of(op, &r.body)
    }
}

/// The outcome of a `DONE` Compute operation.
fn operation_result(operation: &str, op: &Value) -> Result<(), GcpFailure> {
    let Some(first) = op["error"]["errors"].get(0) else {
        return Ok(());
    };
    let status = op["httpErrorStatusCode"]
        .as_u64()
        .and_then(|s| u16::try_from(s).ok());
    let reason = first["code"]
        .as_str()
        .unwrap_or("OPERATION_FAILED")
        .to_string();
    let kind = match (status, reason.as_str()) {
        (Some(404), _) | (_, "RESOURCE_NOT_FOUND") => FailureKind::NotFound,
        (Some(409 | 412), _)
        | (_, "RESOURCE_ALREADY_EXISTS" | "CONDITION_NOT_MET" | "IP_IN_USE_BY_ANOTHER_RESOURCE") => {
            FailureKind::Conflict
        }
        (Some(403), _) => FailureKind::PermissionDenied,
        (Some(s), _) if s == 429 || s >= 500 => {
            return Err(GcpFailure::Unavailable {
                operation: operation.to_string(),
                reason: Some(reason),
                status,
                message: first["message"].as_str().unwrap_or_default().to_string(),
            })
        }
        _ => FailureKind::Rejected,
    };
    Err(GcpFailure::Rejected {
        operation: operation.to_string(),
        kind,
        reason,
        status,
        message: first["message"].as_str().unwrap_or_default().to_string(),
    })
}

/// Reasons of a 403 that mean "slow down", not "not allowed".
const RATE_LIMIT_REASONS: &[&str] = &["rateLimitExceeded", "userRateLimitExceeded"];

/// Classify one HTTP answer: success, retry (429, 5xx, rate-limit 403) or refusal, with
/// its [`FailureKind`]. The one place a failure gets its class.
fn classify(
    operation: &str,
    status: u16,
    headers: HeaderMap,
    bytes: &[u8],
) -> Attempt<GcpResponse> {
    let body: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
    };
    if (200..300).contains(&status) {
        return Attempt::Done(Ok(GcpResponse {
            status,
            headers,
            body,
        }));
    }
    let (reason, message) = error_of(&body);
    let throttled = status == 403
        && reason
            .as_deref()
            .is_some_and(|r| RATE_LIMIT_REASONS.contains(&r));
    if status == 429 || status >= 500 || throttled {
        return Attempt::Retry {
            after: retry_after(&headers),
            failure: GcpFailure::Unavailable {
                operation: operation.to_string(),
                reason: Some(reason.unwrap_or_else(|| "unknown".into())),
                status: Some(status),
                message: message.unwrap_or_default(),
            },
        };
    }
    let oauth = matches!(
        reason.as_deref(),
        Some(
            "invalid_grant"
                | "invalid_client"
                | "unauthorized_client"
                | "invalid_request"
                | "invalid_scope"
                | "unsupported_grant_type"
        )
    );
    let kind = match status {
        _ if oauth => FailureKind::Credentials,
        401 => FailureKind::Credentials,
        403 => FailureKind::PermissionDenied,
        404 => FailureKind::NotFound,
        409 | 412 => FailureKind::Conflict,
        _ => FailureKind::Rejected,
    };
    Attempt::Done(Err(GcpFailure::Rejected {
        operation: operation.to_string(),
        kind,
        reason: reason.unwrap_or_else(|| format!("http{status}")),
        status: Some(status),
        message: message.unwrap_or_default(),
    }))
}

/// The reason and message of an error body: Google's JSON API
/// `{"error":{"code","message","errors":[{"reason"}],"status"}}`, OAuth's
/// `{"error":"code","error_description":"..."}`, or text (the metadata server).
pub fn error_of(body: &Value) -> (Option<String>, Option<String>) {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    match body.get("error") {
        Some(e @ Value::Object(_)) => {
            let reason = e
                .get("errors")
                .and_then(|a| a.get(0))
                .and_then(|i| text(i.get("reason")))
                .or_else(|| text(e.get("status")));
            (reason, text(e.get("message")))
        }
        Some(Value::String(s)) => (Some(s.clone()), text(body.get("error_description"))),
        _ => (
            None,
            body.as_str().map(|s| s.trim().chars().take(200).collect()),
        ),
    }
}

/// `Retry-After` in seconds.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// The text of a transport error with its causes (reqwest's own is terse).
fn plain(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// Percent-escape a path segment or query value (RFC 3986 unreserved characters kept).
pub fn escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The token of a metadata server or token endpoint answer.
fn token_of(operation: &str, body: &Value) -> Result<Token, GcpFailure> {
    let value = body.get("access_token").and_then(Value::as_str);
    let life = body.get("expires_in").and_then(|v| match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    });
    match (value, life) {
        (Some(v), Some(l)) => Ok(Token::new(v.to_string(), Duration::from_secs(l))),
        _ => Err(GcpFailure::unavailable(
            operation,
            "the token answer has no access_token or expires_in",
        )),
    }
}

/// The credential `[gcp]` names, its files read now.
fn credential(s: &GcpSection, env: &AdcEnv) -> Result<Credential, GcpFailure> {
    match s.credentials {
        GcpCredentials::Metadata => Ok(Credential::Metadata),
        GcpCredentials::ServiceAccount => {
            let Some(f) = &s.key_file else {
                return Err(GcpFailure::credentials(
                    "credential",
                    "credentialUnavailable",
                    "credentials = \"service-account\" needs `key_file` in [gcp]",
                ));
            };
            match read_credential_file(f)? {
                c @ Credential::ServiceAccount { .. } => Ok(c),
                _ => Err(GcpFailure::credentials(
                    "credential",
                    "invalidKeyFile",
                    format!(
                        "{} is not a service-account key (\"type\": \"service_account\")",
                        f.display()
                    ),
                )),
            }
        }
        GcpCredentials::ApplicationDefault => {
            if let Some(f) = &env.credentials_file {
                // Named explicitly: it must be usable (Google's libraries fail too).
                return read_credential_file(f);
            }
            match env.well_known_file() {
                Some(f) if f.exists() => read_credential_file(&f),
                _ => Ok(Credential::Metadata),
            }
        }
    }
}

/// A service-account key or an `authorized_user` file (JSON).
fn read_credential_file(path: &Path) -> Result<Credential, GcpFailure> {
    let bad = |m: String| {
        GcpFailure::credentials(
            "credential",
            "invalidKeyFile",
            format!("{}: {m}", path.display()),
        )
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        GcpFailure::credentials(
            "credential",
            "credentialUnavailable",
            format!("cannot read the credentials file {}: {e}", path.display()),
        )
    })?;
    let v: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let need = |k: &str| field(k).ok_or_else(|| bad(format!("no `{k}`")));
    let token_uri = field("token_uri").unwrap_or_else(|| GCP_TOKEN_ENDPOINT.to_string());
    match field("type").as_deref() {
        Some("service_account") => {
            let pem = need("private_key")?;
            let der = pem_private_key(&pem).map_err(bad)?;
            let key = ring::signature::RsaKeyPair::from_pkcs8(&der)
                .or_else(|_| ring::signature::RsaKeyPair::from_der(&der))
                .map_err(|e| bad(format!("the private key is not a usable RSA key: {e}")))?;
            Ok(Credential::ServiceAccount {
                email: need("client_email")?,
                key: Arc::new(key),
                key_id: field("private_key_id"),
                token_uri,
                project: field("project_id"),
                file: path.to_path_buf(),
            })
        }
        Some("authorized_user") => Ok(Credential::User {
            client_id: need("client_id")?,
            client_secret: need("client_secret")?,
            refresh_token: need("refresh_token")?,
            token_uri,
            project: field("quota_project_id"),
            file: path.to_path_buf(),
        }),
        Some(other) => Err(bad(format!(
            "credentials of type `{other}` are not supported (service_account or authorized_user)"
        ))),
        None => Err(bad("no `type`".into())),
    }
}

/// The DER of the (first) private key block of a PEM text.
fn pem_private_key(pem: &str) -> Result<Vec<u8>, String> {
    let mut b64 = String::new();
    let mut inside = false;
    for line in pem.lines().map(str::trim) {
        if line.starts_with("-----BEGIN ") && line.contains("PRIVATE KEY") {
            inside = true;
        } else if line.starts_with("-----END ") && inside {
            return STANDARD
                .decode(b64.as_bytes())
                .map_err(|e| format!("the private key is not base64: {e}"));
        } else if inside {
            b64.push_str(line);
        }
    }
    Err("`private_key` holds no PEM PRIVATE KEY block".into())
}

/// The RS256 JWT a service account exchanges for an access token (RFC 7523).
fn assertion(
    key: &ring::signature::RsaKeyPair,
    key_id: Option<&str>,
    email: &str,
    audience: &str,
) -> Result<String, GcpFailure> {
    let now = clock::unix_ms() / 1000;
    let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
    if let Some(k) = key_id {
        header["kid"] = k.into();
    }
    let claims = serde_json::json!({
        "iss": email, "scope": CLOUD_PLATFORM_SCOPE, "aud": audience,
        "iat": now, "exp": now + ASSERTION_LIFETIME_S,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut sig = vec![0u8; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut sig,
    )
    .map_err(|_| {
        GcpFailure::credentials(
            "credential",
            "invalidKeyFile",
            "signing the JWT assertion failed",
        )
    })?;
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    fn attempt(status: u16, body: Value, retry: Option<&str>) -> Attempt<GcpResponse> {
        let mut h = HeaderMap::new();
        if let Some(r) = retry {
            h.insert("retry-after", r.parse().unwrap());
        }
        classify("dns.changes.create", status, h, body.to_string().as_bytes())
    }

    fn google(code: u16, reason: &str, message: &str) -> Value {
        json!({"error": {"code": code, "message": message,
            "errors": [{"domain": "global", "reason": reason, "message": message}], "status": "X"}})
    }

    fn refusal(status: u16, reason: &str) -> GcpFailure {
        match attempt(status, google(status, reason, "m"), None) {
            Attempt::Done(Err(f)) => f,
            _ => panic!("{status} {reason} is a refusal"),
        }
    }

    #[test]
    fn answers_are_classified_once() {
        match attempt(
            429,
            google(429, "rateLimitExceeded", "slow down"),
            Some("2"),
        ) {
            Attempt::Retry { failure, after } => {
                assert_eq!(after, Some(Duration::from_secs(2)));
                assert_eq!(
                    failure.to_string(),
                    "Google Cloud did not answer: dns.changes.create: rateLimitExceeded (HTTP 429): slow down"
                );
                assert_eq!(failure.kind(), FailureKind::Unavailable);
            }
            _ => panic!("429 is retried"),
        }
        assert!(matches!(
            attempt(503, google(503, "backendError", "x"), None),
            Attempt::Retry { after: None, .. }
        ));
        assert!(matches!(
            attempt(403, google(403, "userRateLimitExceeded", "x"), None),
            Attempt::Retry { .. }
        ));
        for (status, reason, kind) in [
            (404, "notFound", FailureKind::NotFound),
            (412, "conditionNotMet", FailureKind::Conflict),
            (409, "alreadyExists", FailureKind::Conflict),
            (403, "forbidden", FailureKind::PermissionDenied),
            (
                403,
                "insufficientPermissions",
                FailureKind::PermissionDenied,
            ),
            (401, "authError", FailureKind::Credentials),
            (400, "invalid", FailureKind::Rejected),
        ] {
            let f = refusal(status, reason);
            assert_eq!(f.kind(), kind, "{status} {reason}");
            assert_eq!(f.reason(), Some(reason));
            assert!(f.is_status(status));
        }
        let Attempt::Done(Err(f)) = attempt(
            400,
            json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}),
            None,
        ) else {
            panic!("an OAuth error is a refusal")
        };
        assert_eq!(f.kind(), FailureKind::Credentials);
        assert_eq!(
            f.to_string(),
            "invalid_grant: dns.changes.create: Invalid JWT Signature."
        );
        assert_eq!(FailureKind::Conflict.code(), "conflict");
        let Attempt::Done(Ok(r)) = attempt(200, json!({"status": "done"}), None) else {
            panic!("200 is an answer")
        };
        assert_eq!(r.body["status"], "done");
    }

    #[test]
    fn operations_end_classified() {
        assert!(operation_result("routes.insert", &json!({"status": "DONE"})).is_ok());
        let failed = |code: &str, status: u16| {
            operation_result(
                "routes.insert",
                &json!({"status": "DONE", "httpErrorStatusCode": status,
                        "error": {"errors": [{"code": code, "message": "m"}]}}),
            )
            .unwrap_err()
        };
        let f = failed("RESOURCE_ALREADY_EXISTS", 409);
        assert_eq!(
            (f.kind(), f.reason()),
            (FailureKind::Conflict, Some("RESOURCE_ALREADY_EXISTS"))
        );
        assert_eq!(
            failed("RESOURCE_NOT_FOUND", 404).kind(),
            FailureKind::NotFound
        );
        assert_eq!(
            failed("CONDITION_NOT_MET", 412).kind(),
            FailureKind::Conflict
        );
        assert_eq!(
            failed("INTERNAL_ERROR", 500).kind(),
            FailureKind::Unavailable
        );
        assert_eq!(failed("INVALID_USAGE", 400).kind(), FailureKind::Rejected);
    }

    #[test]
    fn error_bodies() {
        assert_eq!(
            error_of(&google(404, "notFound", "M")),
            (Some("notFound".into()), Some("M".into()))
        );
        assert_eq!(
            error_of(
                &json!({"error": {"code": 400, "message": "M", "status": "INVALID_ARGUMENT"}})
            ),
            (Some("INVALID_ARGUMENT".into()), Some("M".into()))
        );
        assert_eq!(
            error_of(&Value::String(
                "Missing Metadata-Flavor:Google header.\n".into()
            )),
            (None, Some("Missing Metadata-Flavor:Google header.".into()))
        );
        assert_eq!(error_of(&Value::Null), (None, None));
    }

    #[test]
    fn tokens_refresh_before_they_expire() {
        let t = token_of("t", &json!({"access_token": "a", "expires_in": 3599})).unwrap();
        assert_eq!(t.expires_at - t.refresh_at, REFRESH_MARGIN);
        let t = token_of("t", &json!({"access_token": "a", "expires_in": 60})).unwrap();
        assert_eq!(t.expires_at - t.refresh_at, Duration::from_secs(30));
        assert!(token_of("t", &json!({"access_token": "a"})).is_err());
    }

    #[test]
    fn escapes_and_pem() {
        assert_eq!(escape("db.example.com."), "db.example.com.");
        assert_eq!(escape("name = \"x\""), "name%20%3D%20%22x%22");
        assert_eq!(
            pem_private_key("-----BEGIN PRIVATE KEY-----\nAAEC\n-----END PRIVATE KEY-----\n")
                .unwrap(),
            vec![0, 1, 2]
        );
        assert!(pem_private_key("nothing").is_err());
    }

    #[test]
    fn credential_files_are_read_when_the_client_is_built() {
        let dir = std::env::temp_dir().join(format!("baton-gcp-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = GcpSection {
            credentials: GcpCredentials::ServiceAccount,
            key_file: Some(dir.join("missing.json")),
            ..GcpSection::default()
        };
        let e = GcpClient::new(&s).unwrap_err();
        assert_eq!(e.kind(), FailureKind::Credentials);
        assert!(e.to_string().contains("missing.json"), "{e}");
        let user = dir.join("adc.json");
        std::fs::write(
            &user,
            r#"{"type": "authorized_user", "client_id": "c", "client_secret": "s", "refresh_token": "r"}"#,
        )
        .unwrap();
        // A user login is not a service-account key.
        let s = GcpSection {
            key_file: Some(user.clone()),
            ..s
        };
        let e = GcpClient::new(&s).unwrap_err();
        assert_eq!(e.reason(), Some("invalidKeyFile"));
        // Application default credentials: the named file, else gcloud's, else metadata.
        let adc = GcpSection {
            credentials: GcpCredentials::ApplicationDefault,
            ..GcpSection::default()
        };
        let env = AdcEnv {
            metadata_host: None,
            credentials_file: Some(user.clone()),
            gcloud_dir: None,
        };
        let c = GcpClient::with_env(&adc, &env).unwrap();
        assert!(c.identity().contains("adc.json"), "{}", c.identity());
        let env = AdcEnv {
            metadata_host: None,
            credentials_file: None,
            gcloud_dir: Some(dir.join("nowhere")),
        };
        let c = GcpClient::with_env(&adc, &env).unwrap();
        assert!(c.identity().contains("metadata server"), "{}", c.identity());
        std::fs::write(&user, r#"{"type": "external_account"}"#).unwrap();
        let env = AdcEnv {
            metadata_host: None,
            credentials_file: Some(user),
            gcloud_dir: None,
        };
        let e = GcpClient::with_env(&adc, &env).unwrap_err();
        assert!(e.to_string().contains("external_account"), "{e}");
        // GCE_METADATA_HOST, as Google's libraries read it, unless [gcp] names one.
        let env = AdcEnv {
            metadata_host: Some("127.0.0.1:8080/_vm/node-2".into()),
            ..AdcEnv::default()
        };
        let c = GcpClient::with_env(&GcpSection::default(), &env).unwrap();
        assert_eq!(c.inner.metadata_base, "http://127.0.0.1:8080/_vm/node-2");
        let named = GcpSection {
            metadata_endpoint: Some("http://10.0.0.9/".into()),
            ..GcpSection::default()
        };
        let c = GcpClient::with_env(&named, &env).unwrap();
        assert_eq!(c.inner.metadata_base, "http://10.0.0.9");
        let c = GcpClient::with_env(&GcpSection::default(), &AdcEnv::default()).unwrap();
        assert_eq!(c.inner.metadata_base, "http://169.254.169.254");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_the_deadline() {
        let end = clock::now() + Duration::from_secs(10);
        let mut n = 0;
        let r: Result<(), _> = retrying("Op", end, || {
            n += 1;
            async {
                Attempt::Retry {
                    failure: GcpFailure::Unavailable {
                        operation: "Op".into(),
                        reason: Some("backendError".into()),
                        status: Some(500),
                        message: String::new(),
                    },
                    after: Some(Duration::from_secs(3)),
                }
            }
        })
        .await;
        // At 0, 3, 6 and 9 s; the pause after the fourth would pass the deadline.
        assert_eq!(n, 4);
        let e = r.unwrap_err();
        assert_eq!(e.status(), Some(500));
        assert!(e.to_string().contains("gave up after 4 attempt(s)"), "{e}");
    }
}
