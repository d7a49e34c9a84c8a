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
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use baton_core::engine::Command;
use baton_core::events::{self, Event};
use serde::{Deserialize, Serialize};

use crate::key::{ClusterKey, Keys};
use crate::listen::LocalCaller;
use crate::runtime::{AgentStatus, Shared};
use baton_core::config::ApiRole;

/// Who is calling, as the API checks it (ordered by what they may do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Caller {
    Read,
    Operator,
    /// The cluster key's token: the agents themselves (and root with the key file).
    Peer,
}

impl Caller {
    fn of_role(r: ApiRole) -> Caller {
        match r {
            ApiRole::Read => Caller::Read,
            ApiRole::Operator => Caller::Operator,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Caller::Read => "read",
            Caller::Operator => "operator",
            Caller::Peer => "cluster key",
        }
    }
}

/// The tokens the API accepts, by role.
#[derive(Clone)]
pub struct ApiTokens {
    /// The primary key's token (sent to peers), then those of the other keys of the ring.
    peer: Vec<String>,
    operator: Vec<String>,
    read: Vec<String>,
}

/// Label of a role token derived from the cluster key (HMAC of it, lowercase hex).
fn role_label(role: ApiRole) -> Vec<u8> {
    format!("baton api token v1 role={}", role.as_str()).into_bytes()
}

/// The token of `role` derived from the cluster key (`baton token --role ROLE`).
pub fn derived_token(key: &ClusterKey, role: ApiRole) -> String {
    hex::encode(key.mac(&[&role_label(role)]))
}

impl ApiTokens {
    /// The tokens of every key of the ring (during a rotation a token of either key
    /// works), their derived role tokens (when `derived`) and the issued ones.
    pub fn new<K: Keys + ?Sized>(
        keys: &K,
        derived: bool,
        issued_read: Vec<String>,
        issued_operator: Vec<String>,
    ) -> ApiTokens {
        let mut read = issued_read;
        let mut operator = issued_operator;
        let mut peer = Vec::new();
        for key in keys.all() {
            peer.push(key.api_token());
            if derived {
                read.push(derived_token(key, ApiRole::Read));
                operator.push(derived_token(key, ApiRole::Operator));
            }
        }
        ApiTokens {
            peer,
            operator,
            read,
        }
    }

    /// The primary key's token (what the agent sends to its peers).
    pub fn peer(&self) -> &str {
        // `new` puts the primary key's token first; a ring always has a primary key.
        self.peer.first().map_or("", String::as_str)
    }

    /// The caller a presented token stands for. Every accepted token is compared, in
    /// constant time each, so the time taken does not tell which one nearly matched.
    pub fn caller(&self, presented: &str) -> Option<Caller> {
        let p = presented.trim().as_bytes();
        let mut found = None;
        let all = self
            .peer
            .iter()
            .map(|t| (Caller::Peer, t))
            .chain(self.operator.iter().map(|t| (Caller::Operator, t)))
            .chain(self.read.iter().map(|t| (Caller::Read, t)));
        for (c, t) in all {
            if constant_time_eq(p, t.as_bytes()) && found.is_none_or(|f| c > f) {
                found = Some(c);
            }
        }
        found
    }
}

/// Longest token file read (a token file of `/dev/zero` must not exhaust memory).
const MAX_TOKENS_FILE: u64 = 64 * 1024;
/// Shortest issued token accepted.
pub const MIN_TOKEN_LEN: usize = 32;

/// Read a file of issued tokens: one per line, `#` comments and blank lines ignored. The
/// file must not be readable or writable by others, each token has at least
/// [`MIN_TOKEN_LEN`] characters of visible ASCII.
pub fn load_tokens_file(path: &std::path::Path) -> Result<Vec<String>, String> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let f =
        std::fs::File::open(path).map_err(|e| format!("cannot read token file {shown}: {e}"))?;
    let meta = f
        .metadata()
        .map_err(|e| format!("cannot read token file {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("token file {shown} is not a regular file"));
    }
    let mode = meta.permissions().mode();
    if mode & 0o006 != 0 {
        return Err(format!(
            "token file {shown} is accessible to other users (mode {:03o}): chmod o-rwx {shown}",
            mode & 0o777
        ));
    }
    let mut text = String::new();
    f.take(MAX_TOKENS_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read token file {shown}: {e}"))?;
    if text.len() as u64 > MAX_TOKENS_FILE {
        return Err(format!(
            "token file {shown} is larger than {MAX_TOKENS_FILE} bytes"
        ));
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if t.len() < MIN_TOKEN_LEN || !t.chars().all(|c| c.is_ascii_graphic()) {
            return Err(format!(
                "{shown}:{}: a token must be at least {MIN_TOKEN_LEN} visible ASCII characters without spaces (e.g. `openssl rand -hex 32`)",
                i + 1
            ));
        }
        out.push(t.to_string());
    }
    Ok(out)
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ApiError {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ApiError,
}

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

/// Cluster-wide status: this server's view plus each peer's own report.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The server that answered.
    pub via: String,
    pub local: AgentStatus,
    /// Each peer's own status, or the error met fetching it.
    pub peers: Vec<PeerStatus>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PeerStatus {
    pub server: String,
    pub status: Option<AgentStatus>,
    pub error: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct AlertsQuery {
    #[serde(default)]
    after: u64,
    /// The last N events instead (`after` is ignored).
    #[serde(default)]
    tail: Option<usize>,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    100
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
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/cluster/status", get(cluster_status))
        .route("/v1/commands", post(command))
        .route("/v1/groups/{group}/{op}", post(group_op))
        .route("/v1/alerts", get(alerts))
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
        .with_state(shared)
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
            g.1 = Some(Instant::now());
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

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
    for srv in s.config.servers.iter().filter(|x| x.name != s.server) {
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
        for srv in s.config.servers.iter().filter(|x| x.name != s.server) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn key() -> ClusterKey {
        ClusterKey::from_bytes(b"unit test cluster key, 32 bytes at least").unwrap()
    }

    #[test]
    fn tokens_map_to_callers() {
        let k = key();
        let issued_op = "an issued operator token 0123456789".replace(' ', "-");
        let t = ApiTokens::new(&k, true, vec![], vec![issued_op.clone()]);
        assert_eq!(t.caller(&k.api_token()), Some(Caller::Peer));
        assert_eq!(
            t.caller(&derived_token(&k, ApiRole::Operator)),
            Some(Caller::Operator)
        );
        assert_eq!(
            t.caller(&derived_token(&k, ApiRole::Read)),
            Some(Caller::Read)
        );
        assert_eq!(t.caller(&issued_op), Some(Caller::Operator));
        // Surrounding whitespace is ignored; anything else is no caller.
        assert_eq!(
            t.caller(&format!(" {} ", derived_token(&k, ApiRole::Read))),
            Some(Caller::Read)
        );
        assert_eq!(t.caller(""), None);
        assert_eq!(t.caller(&"0".repeat(64)), None);
        assert_eq!(t.caller(&k.api_token()[..63]), None);
        // Derived tokens off: only the key's token and the issued ones.
        let t = ApiTokens::new(&k, false, vec![], vec![issued_op.clone()]);
        assert_eq!(t.caller(&derived_token(&k, ApiRole::Read)), None);
        assert_eq!(t.caller(&derived_token(&k, ApiRole::Operator)), None);
        assert_eq!(t.caller(&issued_op), Some(Caller::Operator));
        assert_eq!(t.caller(&k.api_token()), Some(Caller::Peer));
        // Fixed derivation: a change would invalidate every token handed out.
        assert_eq!(
            derived_token(&k, ApiRole::Read),
            hex::encode(k.mac(&[b"baton api token v1 role=read"]))
        );
        assert!(Caller::Read < Caller::Operator && Caller::Operator < Caller::Peer);
    }

    #[test]
    fn token_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        let write = |text: &str, mode: u32| {
            std::fs::write(&f, text).unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        let good = "x".repeat(MIN_TOKEN_LEN);
        write(&format!("# comment\n\n  {good}  \n{good}y\n"), 0o600);
        assert_eq!(
            load_tokens_file(&f).unwrap(),
            vec![good.clone(), format!("{good}y")]
        );
        write(&format!("{good}\n"), 0o640);
        assert!(load_tokens_file(&f).is_ok());
        write(&format!("{good}\n"), 0o644);
        let e = load_tokens_file(&f).unwrap_err();
        assert!(e.contains("accessible to other users (mode 644)"), "{e}");
        write("short\n", 0o600);
        let e = load_tokens_file(&f).unwrap_err();
        assert!(e.ends_with(&format!(":1: a token must be at least {MIN_TOKEN_LEN} visible ASCII characters without spaces (e.g. `openssl rand -hex 32`)")), "{e}");
        write(&format!("{good}\nwith space {good}\n"), 0o600);
        assert!(load_tokens_file(&f).unwrap_err().contains(":2: "));
        write(&"y".repeat(70_000), 0o600);
        let e = load_tokens_file(&f).unwrap_err();
        assert!(e.contains("larger than 65536 bytes"), "{e}");
        let e = load_tokens_file(&dir.path().join("missing")).unwrap_err();
        assert!(e.starts_with("cannot read token file"), "{e}");
        let e = load_tokens_file(dir.path()).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
    }
}
