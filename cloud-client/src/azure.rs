//! The one Azure client factory: every Azure caller in Baton (today the `azure-dns`
//! resource and monitor; later the route-table VIP, the load-balancer probe check,
//! Scheduled Events and `baton cloud check`) sends its Resource Manager requests through
//! an [`AzureClient`], so the identity, the endpoints, the timeouts and the retry policy
//! are decided once, and every failed call is classified once ([`AzureFailure`]).
//!
//! Typed REST calls over `reqwest` (rustls), no Azure SDK: see `docs/src/azure.md`, "Why
//! REST". The callers own the request and response shapes (serde structs beside their
//! kind); this module owns everything around them:
//!
//! - Identity ([`AzureSection::identity`]): the VM's managed identity through the
//!   instance metadata service (header `Metadata: true`, optional user-assigned
//!   `client_id`), a service principal with a secret or a certificate (an RS256 client
//!   assertion with the certificate's `x5t`), or the Azure CLI's login. Tokens are cached
//!   and fetched again before they expire (five minutes, or half their life when shorter).
//! - Endpoints: the cloud's Resource Manager, authority and IMDS, each overridable.
//! - Bounds: each HTTP attempt has `call_timeout`; a call with its retries has the
//!   smaller of `deadline` and the budget its caller gives (the action's time left).
//! - Retries: 429 and 5xx answers, timeouts and transport errors are retried while time
//!   remains, after the answer's `Retry-After` (seconds) or a jittered exponential
//!   backoff; an answer whose `Retry-After` does not fit in the time left ends the call.
//!   A 401 for an expired or invalid token fetches a new token once. Other 4xx answers are
//!   never retried.
//! - Classification: an ARM error body `{"error":{"code","message"}}` (and the Entra and
//!   IMDS shapes) gives the code; throttling and 5xx that outlived the retries, timeouts
//!   and transport errors are [`AzureFailure::Unavailable`], other answers
//!   [`AzureFailure::Rejected`] with the status (404 and 412 are what the callers act on).
//! - Long-running operations: [`AzureClient::wait_async_operation`] polls the
//!   `Azure-AsyncOperation` URL of an answer until `Succeeded` or `Failed`.

use std::fmt::Display;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use baton_core::config::{AzureIdentity, AzureSection};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::clock::{self, Instant};
use crate::retry::{noted, retrying, RetryFailure};

/// api-version of Azure DNS (public zones) calls.
pub const DNS_API_VERSION: &str = "2018-05-01";
/// api-version of Azure Private DNS calls.
pub const PRIVATE_DNS_API_VERSION: &str = "2018-09-01";
/// api-version of Network calls (route tables, load balancers, operation status).
pub const NETWORK_API_VERSION: &str = "2016-06-01";
/// api-version of the instance metadata service's token endpoint.
pub const IMDS_API_VERSION: &str = "2018-02-01";
/// api-version of the instance document (`/metadata/instance`).
pub const IMDS_INSTANCE_API_VERSION: &str = "2021-02-01";
/// api-version of Scheduled Events (`/metadata/scheduledevents`).
pub const SCHEDULED_EVENTS_API_VERSION: &str = "2020-07-01";

/// A token is fetched again this long before it expires (or at half its life).
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// How long an Azure CLI token is trusted when the CLI does not say (old versions).
const CLI_TOKEN_FALLBACK: Duration = Duration::from_secs(300);

/// How a failed Azure call is classified (once, here) for events and `on_api_error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AzureFailure {
    /// Azure did not answer usefully: timeout, transport error, throttling or 5xx after
    /// the retries. Monitors apply `on_api_error`.
    Unavailable {
        /// The operation called (`RecordSets.Get`, `Token.Imds`).
        operation: String,
        /// Azure's error code when it answered with one (`SubscriptionRequestsThrottled`).
        code: Option<String>,
        /// The HTTP status of its answer, when there was one.
        status: Option<u16>,
        /// Azure's message, or what happened instead of an answer (`timed out`).
        message: String,
    },
    /// Azure (or the local credential) answered with a refusal: the request or the set-up
    /// is wrong (a missing zone, a failed condition, a missing permission, no identity).
    Rejected {
        operation: String,
        /// Azure's error code (`NotFound`, `PreconditionFailed`, `AuthorizationFailed`,
        /// `invalid_client`), or one of Baton's for a local failure
        /// (`CredentialUnavailable`, `InvalidCertificate`, `AzureCliFailed`).
        code: String,
        status: Option<u16>,
        message: String,
    },
}

impl AzureFailure {
    fn unavailable(operation: &str, message: impl Into<String>) -> AzureFailure {
        AzureFailure::Unavailable {
            operation: operation.to_string(),
            code: None,
            status: None,
            message: message.into(),
        }
    }

    fn rejected(operation: &str, code: &str, message: impl Into<String>) -> AzureFailure {
        AzureFailure::Rejected {
            operation: operation.to_string(),
            code: code.to_string(),
            status: None,
            message: message.into(),
        }
    }

    /// The error code of a rejection (an unavailability has none to act on).
    pub fn code(&self) -> Option<&str> {
        match self {
            AzureFailure::Rejected { code, .. } => Some(code),
            AzureFailure::Unavailable { .. } => None,
        }
    }

    /// The HTTP status of Azure's answer, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            AzureFailure::Unavailable { status, .. } | AzureFailure::Rejected { status, .. } => {
                *status
            }
        }
    }

    /// A rejection with this HTTP status (404: absent, 412: changed meanwhile).
    pub fn is_status(&self, status: u16) -> bool {
        matches!(self, AzureFailure::Rejected { status: Some(s), .. } if *s == status)
    }

    /// What happened, without the words of the classification.
    pub fn detail(&self) -> String {
        match self {
            AzureFailure::Unavailable {
                operation,
                code,
                status,
                message,
            } => crate::unanswered(operation, code.as_deref(), *status, message),
            AzureFailure::Rejected {
                operation, message, ..
            } => format!("{operation}: {message}"),
        }
    }
}

impl Display for AzureFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AzureFailure::Unavailable { .. } => {
                write!(f, "Azure did not answer: {}", self.detail())
            }
            AzureFailure::Rejected { code, .. } => write!(f, "{code}: {}", self.detail()),
        }
    }
}

/// One Resource Manager request (or a request to a URL an answer gave, such as an
/// operation status).
#[derive(Debug, Clone)]
pub struct ArmRequest {
    operation: String,
    method: Method,
    /// An ARM path (`/subscriptions/...`) or an absolute URL.
    target: String,
    api_version: Option<&'static str>,
    body: Option<Value>,
    headers: Vec<(&'static str, String)>,
}

impl ArmRequest {
    /// A request for `path` (from `/subscriptions/...`, segments already escaped) at
    /// `api_version`.
    pub fn new(operation: &str, method: Method, path: &str, api_version: &'static str) -> Self {
        ArmRequest {
            operation: operation.to_string(),
            method,
            target: path.to_string(),
            api_version: Some(api_version),
            body: None,
            headers: Vec::new(),
        }
    }

    /// A GET of an absolute URL an answer gave (it carries its own api-version).
    pub fn get_url(operation: &str, url: &str) -> Self {
        ArmRequest {
            operation: operation.to_string(),
            method: Method::GET,
            target: url.to_string(),
            api_version: None,
            body: None,
            headers: Vec::new(),
        }
    }

    pub fn json(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    /// Only if the resource still has this ETag (412 `PreconditionFailed` otherwise).
    pub fn if_match(mut self, etag: &str) -> Self {
        self.headers.push(("If-Match", etag.to_string()));
        self
    }

    /// Only if the resource does not exist (412 `PreconditionFailed` otherwise).
    pub fn if_none_match_any(mut self) -> Self {
        self.headers.push(("If-None-Match", "*".to_string()));
        self
    }

    pub fn operation(&self) -> &str {
        &self.operation
    }
}

/// A successful (2xx) answer.
#[derive(Debug, Clone)]
pub struct ArmResponse {
    pub status: u16,
    pub headers: HeaderMap,
    /// The JSON body (`Null` when empty).
    pub body: Value,
}

impl ArmResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as `T`; a body that does not fit is an unusable answer.
    pub fn json<T: DeserializeOwned>(&self, operation: &str) -> Result<T, AzureFailure> {
        serde_json::from_value(self.body.clone()).map_err(|e| AzureFailure::Unavailable {
            operation: operation.to_string(),
            code: None,
            status: Some(self.status),
            message: format!("the response could not be read: {e}"),
        })
    }
}

/// How a request is authenticated.
enum Credential {
    Managed {
        client_id: Option<String>,
    },
    Secret {
        tenant: String,
        client_id: String,
        secret: String,
    },
    Certificate {
        tenant: String,
        client_id: String,
        key: Arc<ring::signature::RsaKeyPair>,
        x5t: String,
    },
    Cli {
        tenant: Option<String>,
    },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret or the key.
        match self {
            Credential::Managed { client_id } => write!(f, "Managed({client_id:?})"),
            Credential::Secret { client_id, .. } => write!(f, "Secret({client_id})"),
            Credential::Certificate { client_id, x5t, .. } => {
                write!(f, "Certificate({client_id}, x5t {x5t})")
            }
            Credential::Cli { tenant } => write!(f, "Cli({tenant:?})"),
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
    settings: AzureSection,
    http: reqwest::Client,
    /// Without a proxy: the instance metadata service is link-local.
    imds_http: reqwest::Client,
    credential: Credential,
    token: tokio::sync::Mutex<Option<Token>>,
}

/// Built once per agent (or per command); cheap to clone.
#[derive(Debug, Clone)]
pub struct AzureClient {
    inner: Arc<Inner>,
}

type Attempt<T> = crate::retry::Attempt<T, AzureFailure>;

impl RetryFailure for AzureFailure {
    fn out_of_time(operation: &str) -> Self {
        AzureFailure::unavailable(operation, "no time left for the call")
    }

    fn with_note(self, note: &str) -> Self {
        match self {
            AzureFailure::Unavailable {
                operation,
                code,
                status,
                message,
            } => AzureFailure::Unavailable {
                operation,
                code,
                status,
                message: noted(message, note),
            },
            // A 401 retried once with a new token that was refused again, or another
            // refusal: its message says enough.
            other => other,
        }
    }
}

impl AzureClient {
    /// Resolve the identity (reading a secret or certificate file) and the endpoints.
    /// Does not call Azure: tokens are fetched by the first call.
    pub fn new(settings: &AzureSection) -> Result<AzureClient, AzureFailure> {
        let credential = credential(settings)?;
        let connect = Duration::from_millis(settings.call_timeout.ms().min(3_000));
        let build = |proxy: bool| {
            let mut b = reqwest::Client::builder().connect_timeout(connect);
            if !proxy {
                b = b.no_proxy();
            }
            b.build().map_err(|e| {
                AzureFailure::rejected("client", "ClientNotBuilt", format!("HTTP client: {e}"))
            })
        };
        Ok(AzureClient {
            inner: Arc::new(Inner {
                settings: settings.clone(),
                http: build(true)?,
                imds_http: build(false)?,
                credential,
                token: tokio::sync::Mutex::new(None),
            }),
        })
    }

    pub fn settings(&self) -> &AzureSection {
        &self.inner.settings
    }

    /// The identity in use, for messages (`managed identity`, `service principal ID`).
    pub fn identity(&self) -> String {
        match &self.inner.credential {
            Credential::Managed { client_id: None } => {
                "the system-assigned managed identity".into()
            }
            Credential::Managed { client_id: Some(c) } => format!("managed identity {c}"),
            Credential::Secret { client_id, .. } | Credential::Certificate { client_id, .. } => {
                format!("service principal {client_id}")
            }
            Credential::Cli { .. } => "the Azure CLI login".into(),
        }
    }

    /// Send one request within `budget` (and `[azure] deadline`), retries included.
    pub async fn send(
        &self,
        req: &ArmRequest,
        budget: Duration,
    ) -> Result<ArmResponse, AzureFailure> {
        let end = clock::now() + budget.min(self.inner.settings.deadline.0);
        let renewed = std::sync::atomic::AtomicBool::new(false);
        let renewed = &renewed;
        retrying(&req.operation, end, || async {
            let token = match self.token(end).await {
                Ok(t) => t,
                Err(f) => return Attempt::Done(Err(f)),
            };
            let url = self.url(req);
            let mut rb = self
                .inner
                .http
                .request(req.method.clone(), &url)
                .bearer_auth(&token);
            for (k, v) in &req.headers {
                rb = rb.header(*k, v);
            }
            if let Some(b) = &req.body {
                rb = rb.json(b);
            }
            let attempt = self.exchange(&req.operation, rb, end).await;
            match attempt {
                Attempt::Done(Err(f))
                    if token_refused(&f) && !renewed.swap(true, Ordering::Relaxed) =>
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

    /// A GET of the instance metadata service (`path` from `/metadata/...`, with its
    /// query), within `budget`: the instance document or the Scheduled Events. No token:
    /// IMDS answers only the VM itself.
    pub async fn imds_get(
        &self,
        operation: &str,
        path: &str,
        budget: Duration,
    ) -> Result<ArmResponse, AzureFailure> {
        self.imds_call(operation, Method::GET, path, None, budget)
            .await
    }

    /// A POST to the instance metadata service (Scheduled Events' `StartRequests`).
    pub async fn imds_post(
        &self,
        operation: &str,
        path: &str,
        body: Value,
        budget: Duration,
    ) -> Result<ArmResponse, AzureFailure> {
        self.imds_call(operation, Method::POST, path, Some(body), budget)
            .await
    }

    async fn imds_call(
        &self,
        operation: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
        budget: Duration,
    ) -> Result<ArmResponse, AzureFailure> {
        let end = clock::now() + budget.min(self.inner.settings.deadline.0);
        let url = format!("{}{path}", self.inner.settings.imds());
        retrying(operation, end, || async {
            let mut rb = self
                .inner
                .imds_http
                .request(method.clone(), &url)
                .header("Metadata", "true");
            if let Some(b) = &body {
                rb = rb.json(b);
            }
            self.exchange(operation, rb, end).await
        })
        .await
    }

    /// Wait for the long-running operation an answer started (its
    /// `Azure-AsyncOperation` URL) to end, within `budget`. An answer without one was
    /// synchronous.
    pub async fn wait_async_operation(
        &self,
        operation: &str,
        started: &ArmResponse,
        budget: Duration,
    ) -> Result<(), AzureFailure> {
        let Some(url) = started.header("azure-asyncoperation").map(str::to_string) else {
            return Ok(());
        };
        let end = clock::now() + budget;
        let op = format!("{operation}.Status");
        let mut pause = retry_after(&started.headers).unwrap_or(Duration::from_secs(1));
        loop {
            let left = end.saturating_duration_since(clock::now());
            let resp = self.send(&ArmRequest::get_url(&op, &url), left).await?;
            let status = resp
                .body
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("");
            match status {
                "Succeeded" => return Ok(()),
                "Failed" | "Canceled" => {
                    let (code, message) = error_of(&resp.body);
                    return Err(AzureFailure::Rejected {
                        operation: operation.to_string(),
                        code: code.unwrap_or_else(|| format!("Operation{status}")),
                        status: Some(resp.status),
                        message: message.unwrap_or_else(|| format!("the operation ended {status}")),
                    });
                }
                _ => {}
            }
            pause = retry_after(&resp.headers).unwrap_or(pause);
            let left = end.saturating_duration_since(clock::now());
            if pause >= left {
                return Err(AzureFailure::unavailable(
                    operation,
                    format!(
                        "the operation was still {status} after {} ms",
                        budget.as_millis()
                    ),
                ));
            }
            tokio::time::sleep(pause).await;
        }
    }

    fn url(&self, req: &ArmRequest) -> String {
        let base = if req.target.starts_with("http://") || req.target.starts_with("https://") {
            req.target.clone()
        } else {
            format!("{}{}", self.inner.settings.arm_endpoint(), req.target)
        };
        match req.api_version {
            Some(v) if base.contains('?') => format!("{base}&api-version={v}"),
            Some(v) => format!("{base}?api-version={v}"),
            None => base,
        }
    }

    /// One HTTP attempt, bounded by `call_timeout` and `end`, classified.
    async fn exchange(
        &self,
        operation: &str,
        rb: reqwest::RequestBuilder,
        end: Instant,
    ) -> Attempt<ArmResponse> {
        let left = end.saturating_duration_since(clock::now());
        let limit = left.min(self.inner.settings.call_timeout.0);
        let fut = async {
            let resp = rb.send().await?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let bytes = resp.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, bytes))
        };
        match tokio::time::timeout(limit, fut).await {
            Err(_) => Attempt::Retry {
                failure: AzureFailure::unavailable(
                    operation,
                    format!("no answer within {} ms", limit.as_millis()),
                ),
                after: None,
            },
            Ok(Err(e)) => Attempt::Retry {
                failure: AzureFailure::unavailable(
                    operation,
                    format!("could not reach the endpoint ({})", plain(&e)),
                ),
                after: None,
            },
            Ok(Ok((status, headers, bytes))) => classify(operation, status, headers, &bytes),
        }
    }

    /// A valid token for Resource Manager (cached; fetched again before it expires).
    async fn token(&self, end: Instant) -> Result<String, AzureFailure> {
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
            Err(f) => Err(f),
        }
    }

    async fn fetch_token(&self, end: Instant) -> Result<Token, AzureFailure> {
        let s = &self.inner.settings;
        let audience = s.cloud.arm_audience();
        match &self.inner.credential {
            Credential::Managed { client_id } => {
                let op = "Token.ManagedIdentity";
                let mut url = format!(
                    "{}/metadata/identity/oauth2/token?api-version={IMDS_API_VERSION}&resource={}",
                    s.imds(),
                    query_escape(audience)
                );
                if let Some(c) = client_id {
                    url.push_str(&format!("&client_id={}", query_escape(c)));
                }
                let body = retrying(op, end, || async {
                    let rb = self.inner.imds_http.get(&url).header("Metadata", "true");
                    self.exchange(op, rb, end).await
                })
                .await?;
                token_of(op, &body.body)
            }
            Credential::Secret {
                tenant,
                client_id,
                secret,
            } => {
                let form = vec![
                    ("grant_type", "client_credentials".to_string()),
                    ("client_id", client_id.clone()),
                    ("client_secret", secret.clone()),
                    ("scope", format!("{audience}.default")),
                ];
                self.entra_token(tenant, form, end).await
            }
            Credential::Certificate {
                tenant,
                client_id,
                key,
                x5t,
            } => {
                let token_url = self.token_url(tenant);
                let assertion = client_assertion(key, x5t, client_id, &token_url)?;
                let form = vec![
                    ("grant_type", "client_credentials".to_string()),
                    ("client_id", client_id.clone()),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_string(),
                    ),
                    ("client_assertion", assertion),
                    ("scope", format!("{audience}.default")),
                ];
                self.entra_token(tenant, form, end).await
            }
            Credential::Cli { tenant } => cli_token(audience, tenant.as_deref(), end).await,
        }
    }

    fn token_url(&self, tenant: &str) -> String {
        format!(
            "{}/{}/oauth2/v2.0/token",
            self.inner.settings.authority_host(),
            tenant
        )
    }

    async fn entra_token(
        &self,
        tenant: &str,
        form: Vec<(&'static str, String)>,
        end: Instant,
    ) -> Result<Token, AzureFailure> {
        let op = "Token.ServicePrincipal";
        let url = self.token_url(tenant);
        let resp = retrying(op, end, || async {
            let rb = self.inner.http.post(&url).form(&form);
            self.exchange(op, rb, end).await
        })
        .await?;
        token_of(op, &resp.body)
    }
}

/// Classify one HTTP answer: success, retry (429, 5xx) or refusal.
fn classify(
    operation: &str,
    status: u16,
    headers: HeaderMap,
    bytes: &[u8],
) -> Attempt<ArmResponse> {
    let body: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
    };
    if (200..300).contains(&status) {
        return Attempt::Done(Ok(ArmResponse {
            status,
            headers,
            body,
        }));
    }
    let (code, message) = error_of(&body);
    if status == 429 || status >= 500 {
        return Attempt::Retry {
            after: retry_after(&headers),
            failure: AzureFailure::Unavailable {
                operation: operation.to_string(),
                code: Some(code.unwrap_or_else(|| "Unknown".into())),
                status: Some(status),
                message: message.unwrap_or_default(),
            },
        };
    }
    Attempt::Done(Err(AzureFailure::Rejected {
        operation: operation.to_string(),
        code: code.unwrap_or_else(|| format!("HTTP{status}")),
        status: Some(status),
        message: message.unwrap_or_default(),
    }))
}

/// The code and message of an error body: ARM's `{"error":{"code","message"}}`, Entra's
/// and IMDS's `{"error":"code","error_description":"..."}`, IMDS's `{"error":"text"}`.
pub fn error_of(body: &Value) -> (Option<String>, Option<String>) {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    match body.get("error") {
        Some(e @ Value::Object(_)) => (text(e.get("code")), text(e.get("message"))),
        Some(Value::String(s)) => match text(body.get("error_description")) {
            Some(d) => (Some(s.clone()), Some(d)),
            None if !s.contains(' ') => (Some(s.clone()), None),
            None => (None, Some(s.clone())),
        },
        _ => (None, body.as_str().map(|s| s.chars().take(200).collect())),
    }
}

/// `Retry-After` in seconds (the form Azure sends).
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

fn token_refused(f: &AzureFailure) -> bool {
    matches!(f, AzureFailure::Rejected { status: Some(401), code, .. }
        if code == "ExpiredAuthenticationToken" || code == "InvalidAuthenticationToken")
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

fn query_escape(s: &str) -> String {
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

/// The token of an IMDS or Entra answer (`expires_in` a number or, from IMDS, a string).
fn token_of(operation: &str, body: &Value) -> Result<Token, AzureFailure> {
    let value = body.get("access_token").and_then(Value::as_str);
    let life = body.get("expires_in").and_then(|v| match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    });
    match (value, life) {
        (Some(v), Some(l)) => Ok(Token::new(v.to_string(), Duration::from_secs(l))),
        _ => Err(AzureFailure::unavailable(
            operation,
            "the token answer has no access_token or expires_in",
        )),
    }
}

/// The credential `[azure]` names, its files read now.
fn credential(s: &AzureSection) -> Result<Credential, AzureFailure> {
    let op = "credential";
    Ok(match s.identity {
        AzureIdentity::Managed => Credential::Managed {
            client_id: s.client_id.clone(),
        },
        AzureIdentity::Cli => Credential::Cli {
            tenant: s.tenant_id.clone(),
        },
        AzureIdentity::ServicePrincipal => {
            let missing = |k: &str| {
                AzureFailure::rejected(
                    op,
                    "CredentialUnavailable",
                    format!("identity = \"service-principal\" needs `{k}` in [azure]"),
                )
            };
            let tenant = s.tenant_id.clone().ok_or_else(|| missing("tenant_id"))?;
            let client_id = s.client_id.clone().ok_or_else(|| missing("client_id"))?;
            match (&s.client_secret_file, &s.client_certificate_file) {
                (Some(f), None) => Credential::Secret {
                    tenant,
                    client_id,
                    secret: read_secret(f)?,
                },
                (None, Some(f)) => {
                    let (key, x5t) = read_certificate(f)?;
                    Credential::Certificate {
                        tenant,
                        client_id,
                        key: Arc::new(key),
                        x5t,
                    }
                }
                _ => return Err(missing("client_secret_file` or `client_certificate_file")),
            }
        }
    })
}

fn read_file(path: &Path, what: &str) -> Result<String, AzureFailure> {
    std::fs::read_to_string(path).map_err(|e| {
        AzureFailure::rejected(
            "credential",
            "CredentialUnavailable",
            format!("cannot read the {what} file {}: {e}", path.display()),
        )
    })
}

fn read_secret(path: &Path) -> Result<String, AzureFailure> {
    let s = read_file(path, "client secret")?.trim().to_string();
    if s.is_empty() {
        return Err(AzureFailure::rejected(
            "credential",
            "CredentialUnavailable",
            format!("the client secret file {} is empty", path.display()),
        ));
    }
    Ok(s)
}

/// The RSA key and the certificate's SHA-1 thumbprint (`x5t`) from a PEM file holding
/// both (the form `az ad sp create-for-rbac --create-cert` writes).
fn read_certificate(path: &Path) -> Result<(ring::signature::RsaKeyPair, String), AzureFailure> {
    let text = read_file(path, "client certificate")?;
    let bad = |m: String| {
        AzureFailure::rejected(
            "credential",
            "InvalidCertificate",
            format!("{}: {m}", path.display()),
        )
    };
    let blocks = pem_blocks(&text).map_err(bad)?;
    let cert = blocks
        .iter()
        .find(|(label, _)| label == "CERTIFICATE")
        .ok_or_else(|| bad("no CERTIFICATE block".into()))?;
    let key_der = blocks
        .iter()
        .find(|(label, _)| label == "PRIVATE KEY" || label == "RSA PRIVATE KEY")
        .ok_or_else(|| bad("no PRIVATE KEY block (an RSA key, PKCS#8 or PKCS#1)".into()))?;
    let key = ring::signature::RsaKeyPair::from_pkcs8(&key_der.1)
        .or_else(|_| ring::signature::RsaKeyPair::from_der(&key_der.1))
        .map_err(|e| bad(format!("the private key is not a usable RSA key: {e}")))?;
    let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &cert.1);
    Ok((key, URL_SAFE_NO_PAD.encode(sha1.as_ref())))
}

/// The `(label, DER)` blocks of a PEM text.
fn pem_blocks(text: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines().map(str::trim) {
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            current = Some((label.to_string(), String::new()));
        } else if line.starts_with("-----END ") {
            if let Some((label, b64)) = current.take() {
                let der = STANDARD
                    .decode(b64.as_bytes())
                    .map_err(|e| format!("the {label} block is not base64: {e}"))?;
                out.push((label, der));
            }
        } else if let Some((_, b64)) = current.as_mut() {
            b64.push_str(line);
        }
    }
    Ok(out)
}

/// The RS256 client assertion Entra ID takes instead of a secret.
fn client_assertion(
    key: &ring::signature::RsaKeyPair,
    x5t: &str,
    client_id: &str,
    audience: &str,
) -> Result<String, AzureFailure> {
    use rand::Rng as _;
    let now = clock::unix_ms() / 1000;
    let jti: String = (0..16)
        .map(|_| format!("{:02x}", rand::thread_rng().gen::<u8>()))
        .collect();
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5t": x5t});
    let claims = serde_json::json!({
        "aud": audience, "iss": client_id, "sub": client_id, "jti": jti,
        "nbf": now, "iat": now, "exp": now + 600,
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
        AzureFailure::rejected(
            "credential",
            "InvalidCertificate",
            "signing the client assertion failed",
        )
    })?;
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
}

/// A token from the Azure CLI's login (`az account get-access-token`).
async fn cli_token(
    audience: &str,
    tenant: Option<&str>,
    end: Instant,
) -> Result<Token, AzureFailure> {
    let op = "Token.AzureCli";
    let mut cmd = tokio::process::Command::new("az");
    cmd.args([
        "account",
        "get-access-token",
        "--resource",
        audience,
        "-o",
        "json",
    ]);
    if let Some(t) = tenant {
        cmd.args(["--tenant", t]);
    }
    cmd.kill_on_drop(true).stdin(std::process::Stdio::null());
    let left = end.saturating_duration_since(clock::now());
    let out = match tokio::time::timeout(left, cmd.output()).await {
        Err(_) => return Err(AzureFailure::unavailable(op, "`az` did not answer in time")),
        Ok(Err(e)) => {
            return Err(AzureFailure::rejected(
                op,
                "AzureCliNotFound",
                format!("cannot run `az` (is the Azure CLI installed and on PATH?): {e}"),
            ))
        }
        Ok(Ok(o)) => o,
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(AzureFailure::rejected(
            op,
            "AzureCliFailed",
            format!(
                "`az account get-access-token` failed (run `az login`): {}",
                err.trim()
            ),
        ));
    }
    parse_cli_token(&out.stdout, clock::unix_ms() / 1000)
        .ok_or_else(|| AzureFailure::rejected(op, "AzureCliFailed", "`az` printed no accessToken"))
}

/// `accessToken` and its expiry (`expires_on`, Unix seconds, from CLI 2.54 on; older
/// versions print only a local `expiresOn`: trusted for five minutes).
fn parse_cli_token(stdout: &[u8], now_s: u64) -> Option<Token> {
    let v: Value = serde_json::from_slice(stdout).ok()?;
    let token = v.get("accessToken")?.as_str()?.to_string();
    let life = v
        .get("expires_on")
        .and_then(|e| e.as_u64().or_else(|| e.as_str()?.parse().ok()))
        .map(|e: u64| Duration::from_secs(e.saturating_sub(now_s)))
        .unwrap_or(CLI_TOKEN_FALLBACK);
    Some(Token::new(token, life))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    fn attempt(status: u16, body: Value, retry: Option<&str>) -> Attempt<ArmResponse> {
        let mut h = HeaderMap::new();
        if let Some(r) = retry {
            h.insert("retry-after", r.parse().unwrap());
        }
        classify("RecordSets.Get", status, h, body.to_string().as_bytes())
    }

    #[test]
    fn answers_are_classified_once() {
        let err = |c: &str, m: &str| json!({"error": {"code": c, "message": m}});
        match attempt(
            429,
            err("SubscriptionRequestsThrottled", "slow down"),
            Some("3"),
        ) {
            Attempt::Retry { failure, after } => {
                assert_eq!(after, Some(Duration::from_secs(3)));
                assert_eq!(
                    failure.to_string(),
                    "Azure did not answer: RecordSets.Get: SubscriptionRequestsThrottled (HTTP 429): slow down"
                );
                assert_eq!(failure.code(), None);
            }
            _ => panic!("429 is retried"),
        }
        assert!(matches!(
            attempt(503, json!({}), None),
            Attempt::Retry { after: None, .. }
        ));
        let Attempt::Done(Err(f)) = attempt(404, err("NotFound", "no set"), None) else {
            panic!("404 is a refusal")
        };
        assert!(f.is_status(404));
        assert_eq!(f.code(), Some("NotFound"));
        assert_eq!(f.to_string(), "NotFound: RecordSets.Get: no set");
        let Attempt::Done(Err(f)) = attempt(412, err("PreconditionFailed", "etag"), None) else {
            panic!("412 is a refusal")
        };
        assert!(f.is_status(412) && !f.is_status(404));
        let Attempt::Done(Ok(r)) = attempt(200, json!({"etag": "e"}), None) else {
            panic!("200 is an answer")
        };
        assert_eq!(r.body["etag"], "e");
    }

    #[test]
    fn error_bodies_of_every_endpoint() {
        assert_eq!(
            error_of(&json!({"error": {"code": "C", "message": "M"}})),
            (Some("C".into()), Some("M".into()))
        );
        assert_eq!(
            error_of(&json!({"error": "invalid_client", "error_description": "AADSTS7000215"})),
            (Some("invalid_client".into()), Some("AADSTS7000215".into()))
        );
        assert_eq!(
            error_of(&json!({"error": "Bad request. Required metadata header not specified"})),
            (
                None,
                Some("Bad request. Required metadata header not specified".into())
            )
        );
        assert_eq!(error_of(&Value::Null), (None, None));
    }

    #[test]
    fn tokens_refresh_before_they_expire() {
        let t = token_of("t", &json!({"access_token": "a", "expires_in": "3599"})).unwrap();
        assert_eq!(t.expires_at - t.refresh_at, REFRESH_MARGIN);
        let t = token_of("t", &json!({"access_token": "a", "expires_in": 60})).unwrap();
        assert_eq!(t.expires_at - t.refresh_at, Duration::from_secs(30));
        assert!(token_of("t", &json!({"access_token": "a"})).is_err());
        let t = parse_cli_token(
            br#"{"accessToken":"x","expires_on":1100,"expiresOn":"2024-01-01 00:00:00"}"#,
            1000,
        )
        .unwrap();
        assert_eq!(t.value, "x");
        assert_eq!(t.expires_at - t.refresh_at, Duration::from_secs(50));
        let t = parse_cli_token(
            br#"{"accessToken":"x","expiresOn":"2024-01-01 00:00:00"}"#,
            1000,
        )
        .unwrap();
        assert_eq!(
            t.expires_at - t.refresh_at,
            REFRESH_MARGIN.min(CLI_TOKEN_FALLBACK / 2)
        );
        assert!(parse_cli_token(b"{}", 0).is_none());
    }

    #[test]
    fn pem_and_escapes() {
        let b =
            pem_blocks("-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n").unwrap();
        assert_eq!(b, vec![("CERTIFICATE".to_string(), vec![0, 1, 2])]);
        assert!(pem_blocks("-----BEGIN X-----\n!!\n-----END X-----\n").is_err());
        assert_eq!(
            query_escape("https://management.azure.com/"),
            "https%3A%2F%2Fmanagement.azure.com%2F"
        );
    }

    #[test]
    fn files_are_read_when_the_client_is_built() {
        let s = AzureSection {
            identity: AzureIdentity::ServicePrincipal,
            tenant_id: Some("t".into()),
            client_id: Some("c".into()),
            client_secret_file: Some("/nonexistent/secret".into()),
            ..AzureSection::default()
        };
        let e = AzureClient::new(&s).unwrap_err();
        assert_eq!(e.code(), Some("CredentialUnavailable"));
        assert!(e.to_string().contains("/nonexistent/secret"), "{e}");
        let c = AzureClient::new(&AzureSection::default()).unwrap();
        assert_eq!(c.identity(), "the system-assigned managed identity");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_the_deadline() {
        let end = clock::now() + Duration::from_secs(10);
        let mut n = 0;
        let r: Result<(), _> = retrying("Op", end, || {
            n += 1;
            async {
                Attempt::Retry {
                    failure: AzureFailure::Unavailable {
                        operation: "Op".into(),
                        code: Some("InternalServerError".into()),
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
