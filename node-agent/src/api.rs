//! The agent's HTTP API (JSON). Every request over TCP needs `Authorization: Bearer TOKEN`:
//!
//! * the cluster key's token (`baton` computes it from the key file; the agents use it
//!   between themselves) may do everything;
//! * an `operator` token may read and send commands, a `read` token only read (status,
//!   cluster status, alerts). Role tokens are derived from the cluster key (`baton token
//!   --role ROLE`, unless `[api] derived_tokens = false`) or issued in token files
//!   (`[api] read_tokens_file`, `operator_tokens_file`).
//!
//! A request through the agent's Unix socket needs no token: it acts with
//! `[api] socket_role`, and the socket's file permissions decide who may connect.
//! Errors are `{"error": {"code": "...", "message": "..."}}` with stable codes
//! (`unauthorized` 401 for a missing or wrong token, `forbidden` 403 for a role that may
//! not do this).
//! The OpenAPI description is `docs/src/openapi.yaml`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use baton_core::engine::Command;
use baton_core::events::{self, Event};
use serde::Deserialize;

use crate::listen::LocalCaller;
use crate::shared::Shared;

pub use crate::api_types::{
    AgentStatus, AlertsQuery, ApiError, ClusterStatus, ErrorBody, PeerStatus,
};
pub use crate::tokens::{derived_token, load_tokens_file, ApiTokens, Caller, MIN_TOKEN_LEN};

pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(ErrorBody {
            error: ApiError {
                code: code.into(),
                message: message.into(),
            },
        }),
    )
        .into_response()
}

/// A request refused before it reaches the agent: HTTP status, stable code, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl Refused {
    fn bad_request(message: impl Into<String>) -> Refused {
        Refused {
            status: StatusCode::BAD_REQUEST,
            code: "bad-request",
            message: message.into(),
        }
    }

    fn into_response(self) -> Response {
        error(self.status, self.code, self.message)
    }
}

/// The body of `POST /v1/commands` as a command (pure: the handler's parsing, fuzzed in
/// node-agent/tests/fuzz_parsers.rs).
#[doc(hidden)]
pub fn parse_command(body: &[u8]) -> Result<Command, Refused> {
    let cmd: Command = serde_json::from_slice(body)
        .map_err(|e| Refused::bad_request(format!("the body is not a valid command: {e}")))?;
    if cmd == Command::Shutdown {
        return Err(Refused::bad_request("`shutdown` is a local signal (SIGTERM), not an API command; use `cluster-stop` to stop every agent"));
    }
    Ok(cmd)
}

/// `POST /v1/groups/{group}/{op}` with its (optional) body as a command (pure; fuzzed).
#[doc(hidden)]
pub fn parse_group_op(group: String, op: &str, body: &[u8]) -> Result<Command, Refused> {
    let b: GroupOpBody = if body.is_empty() {
        GroupOpBody::default()
    } else {
        serde_json::from_slice(body)
            .map_err(|e| Refused::bad_request(format!("invalid body: {e}")))?
    };
    match op {
        "start" => Ok(Command::GroupStart {
            group,
            on: b.on.or(b.to),
        }),
        "stop" => Ok(Command::GroupStop { group }),
        "move" if b.on.is_some() => Err(Refused::bad_request(
            "`move` takes the target server as `to`, not `on`",
        )),
        "move" => Ok(Command::GroupMove { group, to: b.to }),
        other => Err(Refused {
            status: StatusCode::NOT_FOUND,
            code: "not-found",
            message: format!("unknown group operation `{other}`: use start, stop or move"),
        }),
    }
}

/// What `GET /v1/alerts` reads, with its bounds applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertsRead {
    /// The last N events (1-10,000).
    Tail(usize),
    /// Up to `limit` (1-10,000) events after sequence number `after`.
    Since { after: u64, limit: usize },
}

/// The query of `GET /v1/alerts` (pure; fuzzed).
#[doc(hidden)]
pub fn parse_alerts_query(
    q: Result<Query<AlertsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<AlertsRead, Refused> {
    let Ok(Query(q)) = q else {
        return Err(Refused::bad_request(
            "query parameters: after=SEQ (number), limit=N (number), tail=N (number)",
        ));
    };
    Ok(match q.tail {
        Some(n) => AlertsRead::Tail(n.clamp(1, 10_000)),
        None => AlertsRead::Since {
            after: q.after,
            limit: q.limit.clamp(1, 10_000),
        },
    })
}

pub fn router(shared: Arc<Shared>) -> Router {
    // /metrics, /healthz and the Web UI check access themselves.
    crate::web::routes(shared.clone()).merge(api_router(shared))
}

fn api_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/cluster/status", get(cluster_status))
        .route("/v1/commands", post(command))
        .route("/v1/groups/{group}/{op}", post(group_op))
        .route("/v1/alerts", get(alerts))
        .route("/v1/config", get(config_get).post(config_post))
        .route("/v1/logs", get(logs))
        .route(
            "/v1/cluster/config",
            get(cluster_config_get).post(cluster_config_post),
        )
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "not-found",
                "no such endpoint; see docs/src/openapi.yaml",
            )
        })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "this endpoint does not take that HTTP method; see docs/src/openapi.yaml",
            )
        })
        .layer(middleware::from_fn_with_state(shared.clone(), auth))
        .layer(middleware::map_response(json_too_large))
        .with_state(shared)
}

/// A body over axum's limit (2 MB) is refused by its extractor with a plain-text 413:
/// answer the API's JSON error instead, like every other refusal.
async fn json_too_large(r: Response) -> Response {
    if r.status() != StatusCode::PAYLOAD_TOO_LARGE
        || r.headers()
            .get(axum::http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
    {
        return r;
    }
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
        "the request body is larger than the API accepts (2 MB): nothing was done",
    )
}

async fn auth(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    mut req: Request,
    next: Next,
) -> Response {
    let caller = if let Some(LocalCaller(role)) = req.extensions().get::<LocalCaller>() {
        Some(Caller::of_role(*role))
    } else {
        headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .and_then(|t| s.tokens.caller(t))
    };
    if let Some(caller) = caller {
        // Reading is GET; everything else is a command.
        let needs = if req.method() == axum::http::Method::GET {
            Caller::Read
        } else {
            Caller::Operator
        };
        if caller < needs {
            tracing::info!(path = %req.uri().path(), role = caller.as_str(), "API request refused: role may not do this");
            return error(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "a {} token may only read (status, alerts): commands need an operator token or the cluster key",
                    caller.as_str()
                ),
            );
        }
        req.extensions_mut().insert(caller);
        return next.run(req).await;
    }
    // One event per minute at most, with the count.
    let raise = {
        let mut g = match s.auth_failures.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        g.0 += 1;
        let due = g.1.is_none_or(|t| t.elapsed() >= Duration::from_secs(60));
        if due {
            g.1 = Some(crate::clock::now());
        }
        due.then_some(g.0)
    };
    if let Some(n) = raise {
        s.raise(
            Event::new(
                &events::API_AUTH_FAILED,
                format!(
                    "API request to {} rejected: missing or wrong token ({n} so far)",
                    req.uri().path()
                ),
            )
            .field("count", n),
        );
    }
    error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or wrong API token: use the cluster key file of this cluster, a role token (baton token --role read|operator), or the agent's Unix socket",
    )
}

async fn status(State(s): State<Arc<Shared>>) -> Response {
    match s.status().await {
        Some(st) => Json(st).into_response(),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "agent-stopping",
            "the agent is stopping",
        ),
    }
}

async fn cluster_status(State(s): State<Arc<Shared>>) -> Response {
    let Some(local) = s.status().await else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "agent-stopping",
            "the agent is stopping",
        );
    };
    let client = s.peer_client.clone();
    let mut futs = Vec::new();
    for srv in s.config().servers.iter().filter(|x| x.name != s.server) {
        let client = client.clone();
        let name = srv.name.clone();
        let addr = srv.api;
        futs.push(async move {
            match client
                .get::<AgentStatus>(addr, "/v1/status", Duration::from_millis(800))
                .await
            {
                Ok(st) => PeerStatus {
                    server: name,
                    status: Some(st),
                    error: None,
                },
                Err(e) => PeerStatus {
                    server: name,
                    status: None,
                    error: Some(e.to_string()),
                },
            }
        });
    }
    let peers = futures_join_all(futs).await;
    Json(ClusterStatus {
        via: s.server.clone(),
        local,
        peers,
    })
    .into_response()
}

/// Run the peer queries concurrently, keeping their order.
async fn futures_join_all<F>(futs: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

async fn run_command(s: &Shared, cmd: Command) -> Response {
    match s.command(cmd).await {
        Ok(Ok(())) => Json(serde_json::json!({"ok": true})).into_response(),
        Ok(Err(e)) => {
            let status = match e {
                baton_core::engine::CommandError::UnknownGroup(_)
                | baton_core::engine::CommandError::UnknownServer(_)
                | baton_core::engine::CommandError::UnknownMonitor(_) => StatusCode::NOT_FOUND,
                _ => StatusCode::CONFLICT,
            };
            error(status, e.code(), e.to_string())
        }
        Err(()) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "agent-stopping",
            "the agent is stopping",
        ),
    }
}

/// Header marking a command forwarded by a peer (it is not forwarded again).
pub const FORWARDED: &str = "x-baton-forwarded";

async fn command(
    State(s): State<Arc<Shared>>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let cmd = match parse_command(&body) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    // `cluster stop` must reach every agent even if heartbeats between some of them are
    // down, so it is also forwarded to every peer's API (once: forwarded requests are not
    // forwarded again). Other commands spread through the heartbeats as intents.
    // Only an agent (the cluster key's token) marks a request as forwarded.
    let forwarded = caller == Caller::Peer && headers.contains_key(FORWARDED);
    if cmd == Command::ClusterStop && !forwarded {
        let client = s.peer_client.clone();
        for srv in s.config().servers.iter().filter(|x| x.name != s.server) {
            let client = client.clone();
            let addr = srv.api;
            let me = s.server.clone();
            tokio::spawn(async move {
                let r = client
                    .post_with_header::<_, serde_json::Value>(
                        addr,
                        "/v1/commands",
                        &Command::ClusterStop,
                        (FORWARDED, &me),
                        Duration::from_secs(2),
                    )
                    .await;
                if let Err(e) = r {
                    tracing::info!(peer = %addr, error = %e, "could not forward cluster stop (the heartbeats carry it too)");
                }
            });
        }
    }
    run_command(&s, cmd).await
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct GroupOpBody {
    /// Target server of `move`.
    #[serde(default)]
    to: Option<String>,
    /// Server to start on (`start`); `to` is accepted too.
    #[serde(default)]
    on: Option<String>,
}

async fn group_op(
    State(s): State<Arc<Shared>>,
    Path((group, op)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let cmd = match parse_group_op(group, &op, &body) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    run_command(&s, cmd).await
}

async fn alerts(
    State(s): State<Arc<Shared>>,
    q: Result<Query<AlertsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let what = match parse_alerts_query(q) {
        Ok(w) => w,
        Err(r) => return r.into_response(),
    };
    // Read from files without the writer's lock, off the async workers: a long read
    // never holds up the agent's main loop, which appends events.
    let reader = s.alert_reader.clone();
    let read = tokio::task::spawn_blocking(move || match what {
        AlertsRead::Tail(n) => reader.tail(n),
        AlertsRead::Since { after, limit } => reader.read_since(after, limit),
    })
    .await;
    match read {
        Ok(Ok(evs)) => Json(evs).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.code(), e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

/// Reading the configuration text needs the operator role (it may hold secrets), though
/// it is a GET.
fn needs_operator(caller: Caller) -> Option<Response> {
    (caller < Caller::Operator).then(|| {
        error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "reading or pushing the configuration needs an operator token or the cluster key",
        )
    })
}

fn running_config(s: &Shared) -> crate::api_types::RunningConfig {
    let r = s.running();
    crate::api_types::RunningConfig {
        server: s.server.clone(),
        path: s.config_file.display().to_string(),
        digest: r.config.digest.clone(),
        text: (*r.text).clone(),
        staged_digest: r.staged_digest,
    }
}

async fn config_get(
    State(s): State<Arc<Shared>>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Response {
    if let Some(r) = needs_operator(caller) {
        return r;
    }
    Json(running_config(&s)).into_response()
}

/// `?lines=N` of `GET /v1/logs` (default 500, at most what the agent keeps).
#[derive(Debug, serde::Deserialize)]
struct LogsQuery {
    lines: Option<usize>,
}

/// The agent's own recent log lines, oldest first (operator role: they name paths,
/// addresses and commands).
async fn logs(
    axum::Extension(caller): axum::Extension<Caller>,
    axum::extract::Query(q): axum::extract::Query<LogsQuery>,
) -> Response {
    if let Some(r) = needs_operator(caller) {
        return r;
    }
    let n = q.lines.unwrap_or(500).min(crate::logbuf::KEPT);
    Json(serde_json::json!({
        "lines": crate::logbuf::tail(n),
        "kept": crate::logbuf::KEPT,
    }))
    .into_response()
}

async fn config_post(State(s): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let push: crate::api_types::ConfigPush = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return Refused::bad_request(format!("the body is not a configuration push: {e}"))
                .into_response()
        }
    };
    let _one = s.push_lock.lock().await;
    Json(crate::config_push::handle(&s, push).await).into_response()
}

async fn cluster_config_get(
    State(s): State<Arc<Shared>>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Response {
    use crate::api_types::{ClusterConfig, RunningConfig, ServerConfig};
    if let Some(r) = needs_operator(caller) {
        return r;
    }
    let mut futs = Vec::new();
    for srv in s.config().servers.iter().filter(|x| x.name != s.server) {
        let client = s.peer_client.clone();
        let name = srv.name.clone();
        let addr = srv.api;
        futs.push(async move {
            match client
                .get::<RunningConfig>(addr, "/v1/config", Duration::from_secs(2))
                .await
            {
                Ok(c) => ServerConfig {
                    server: name,
                    config: Some(c),
                    error: None,
                },
                Err(e) => ServerConfig {
                    server: name,
                    config: None,
                    error: Some(e.to_string()),
                },
            }
        });
    }
    let mut servers = vec![ServerConfig {
        server: s.server.clone(),
        config: Some(running_config(&s)),
        error: None,
    }];
    servers.extend(futures_join_all(futs).await);
    let order: Vec<String> = s.config().servers.iter().map(|x| x.name.clone()).collect();
    servers.sort_by_key(|c| order.iter().position(|n| n == &c.server));
    Json(ClusterConfig {
        via: s.server.clone(),
        servers,
    })
    .into_response()
}

/// Send `push` to every server (this one directly), in the configuration's order.
async fn push_all(
    s: &Arc<Shared>,
    push: &crate::api_types::ConfigPush,
    only: Option<&[String]>,
) -> Vec<crate::api_types::PushResult> {
    use crate::api_types::PushResult;
    let cfg = s.config();
    let mut futs = Vec::new();
    for srv in cfg.servers.iter().filter(|x| x.name != s.server) {
        if only.is_some_and(|o| !o.contains(&srv.name)) {
            continue;
        }
        let client = s.peer_client.clone();
        let name = srv.name.clone();
        let addr = srv.api;
        let push = push.clone();
        futs.push(async move {
            match client
                .post::<_, PushResult>(addr, "/v1/config", &push, Duration::from_secs(20))
                .await
            {
                Ok(r) => r,
                Err(e) => PushResult {
                    server: name,
                    ok: false,
                    outcome: "unreachable".into(),
                    digest_before: String::new(),
                    digest: String::new(),
                    new_digest: None,
                    changes: Vec::new(),
                    error: Some(ApiError {
                        code: "unreachable".into(),
                        message: format!("{e}"),
                    }),
                    diagnostics: Vec::new(),
                },
            }
        });
    }
    let mut out = Vec::new();
    if only.is_none_or(|o| o.contains(&s.server)) {
        let _one = s.push_lock.lock().await;
        out.push(crate::config_push::handle(s, push.clone()).await);
    }
    out.extend(futures_join_all(futs).await);
    let order: Vec<String> = cfg.servers.iter().map(|x| x.name.clone()).collect();
    out.sort_by_key(|r| order.iter().position(|n| n == &r.server));
    out
}

/// `POST /v1/cluster/config`: check the configuration on every server; if every server
/// takes it (and every server answers, unless `allow_partial`), apply (or stage) it on
/// each. A refusal anywhere changes nothing anywhere.
async fn cluster_config_post(State(s): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    use crate::api_types::{ClusterPush, ConfigPush, PushMode, PushReport};
    let req: ClusterPush = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return Refused::bad_request(format!("the body is not a configuration push: {e}"))
                .into_response()
        }
    };
    let check = ConfigPush {
        text: req.text.clone(),
        mode: PushMode::Check,
        stage: req.stage,
    };
    let checked = push_all(&s, &check, None).await;
    let new_digest = checked.iter().find_map(|r| r.new_digest.clone());
    let refused = checked.iter().any(|r| !r.ok && r.outcome != "unreachable");
    let missing: Vec<String> = checked
        .iter()
        .filter(|r| r.outcome == "unreachable")
        .map(|r| r.server.clone())
        .collect();
    let report = |ok: bool, outcome: &str, servers| PushReport {
        via: s.server.clone(),
        ok,
        outcome: outcome.into(),
        new_digest: new_digest.clone(),
        servers,
    };
    if req.dry_run {
        let ok = !refused && missing.is_empty();
        return Json(report(ok, "dry-run", checked)).into_response();
    }
    if refused || (!missing.is_empty() && !req.allow_partial) || missing.len() == checked.len() {
        return Json(report(false, "refused", checked)).into_response();
    }
    let up: Vec<String> = checked
        .iter()
        .filter(|r| r.ok)
        .map(|r| r.server.clone())
        .collect();
    let apply = ConfigPush {
        text: req.text,
        mode: if req.stage {
            PushMode::Stage
        } else {
            PushMode::Apply
        },
        stage: false,
    };
    let mut done = push_all(&s, &apply, Some(&up)).await;
    // The servers that did not answer the check are reported as such.
    done.extend(checked.into_iter().filter(|r| r.outcome == "unreachable"));
    let order: Vec<String> = s.config().servers.iter().map(|x| x.name.clone()).collect();
    done.sort_by_key(|r| order.iter().position(|n| n == &r.server));
    let all_ok = done.iter().all(|r| r.ok);
    let outcome = match (all_ok, req.stage) {
        (true, true) => "staged",
        (true, false) => "applied",
        (false, _) => "partial",
    };
    Json(report(all_ok, outcome, done)).into_response()
}
