//! Bounded HTTP serving, shared by the agent's API and `baton witness`.
//!
//! `axum::serve` reads headers for as long as a client likes, keeps idle connections open
//! forever and accepts until the process runs out of file descriptors; then the agent's own
//! work (monitor checks, resource actions, state writes) fails with `Too many open files`.
//! This module runs its own accept loop instead:
//!
//! - a connection from a source outside the allow-list is closed before any byte is read;
//! - a total and a per-source cap: over a cap the connection is accepted and closed at once
//!   (so the kernel's backlog does not fill), counted, and reported at most once a minute;
//!   the cluster's own servers (`trusted`) are not counted against the total;
//! - a header-read timeout (hyper's), an idle timeout (no request in progress) and a
//!   whole-request timeout (reading the body and answering);
//! - `EMFILE`/`ENFILE` on accept backs off briefly and keeps serving.
//!
//! Each request carries `axum::extract::ConnectInfo<SocketAddr>` with the peer's address,
//! as `into_make_service_with_connect_info` would insert it.
//!
//! [`raise_nofile`] and [`fit_caps`] size the caps to the open-file limit so that a reserve
//! of descriptors always remains for everything else the process does.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::Instant;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use baton_core::config::{ApiSection, Cidr};
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};

/// Largest buffer for a request's head (hyper's minimum is 8 KiB).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// A notice of the same kind at most this often.
const REPORT_EVERY: Duration = Duration::from_secs(60);
/// Back-off after a failed accept (doubles up to the maximum).
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_millis(500);
/// Descriptors kept free for everything but the API: the runtime, sockets, the alert log,
/// state writes, notifier connections.
pub const FD_RESERVE_BASE: u64 = 64;
/// And per resource and monitor (a child process holds up to three pipes while it runs).
pub const FD_RESERVE_PER_ACTION: u64 = 8;

/// What a server admits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Networks allowed to connect; `None` admits every address.
    pub allow: Option<Vec<Cidr>>,
    /// Addresses always admitted and not counted against `max_connections` (the
    /// cluster's servers); the per-source cap still applies to them.
    pub trusted: Vec<IpAddr>,
    pub max_connections: usize,
    pub max_per_source: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
}

impl Limits {
    /// The agent's API: `[api]`, plus the other servers' API and interconnect addresses
    /// (trusted) and this server's own addresses (allowed: the local CLI may use them).
    pub fn for_api(api: &ApiSection, cfg: &baton_core::config::Config, me: &str) -> Limits {
        let mut allow = api.allow.clone();
        let mut trusted = Vec::new();
        for s in &cfg.servers {
            let ips = std::iter::once(s.api.ip()).chain(s.interconnects.iter().map(|a| a.ip()));
            for ip in ips {
                let ip = ip.to_canonical();
                if s.name == me {
                    allow.push(Cidr::host(ip));
                } else if !trusted.contains(&ip) {
                    trusted.push(ip);
                }
            }
        }
        Limits {
            allow: Some(allow),
            trusted,
            max_connections: usize::try_from(api.max_connections).unwrap_or(usize::MAX),
            max_per_source: usize::try_from(api.max_connections_per_source).unwrap_or(usize::MAX),
            header_timeout: api.header_timeout.0,
            idle_timeout: api.idle_timeout.0,
            request_timeout: api.request_timeout.0,
        }
    }

    /// Descriptors the trusted sources may hold on top of `max_connections`.
    pub fn trusted_slots(&self) -> u64 {
        u64::try_from(self.trusted.len().saturating_mul(self.max_per_source)).unwrap_or(u64::MAX)
    }

    fn admits(&self, ip: IpAddr) -> bool {
        self.trusted.contains(&ip)
            || self
                .allow
                .as_ref()
                .is_none_or(|nets| nets.iter().any(|n| n.contains(ip)))
    }
}

/// Why a connection was closed unread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NotAllowed,
    TotalCap,
    SourceCap,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NotAllowed => "not in the allow-list",
            Refusal::TotalCap => "total connection cap reached",
            Refusal::SourceCap => "per-source connection cap reached",
        }
    }
}

/// Counters of one server (monotonic, except `open`).
#[derive(Debug, Default)]
pub struct Stats {
    pub open: AtomicU64,
    pub accepted: AtomicU64,
    pub not_allowed: AtomicU64,
    pub over_cap: AtomicU64,
    pub accept_errors: AtomicU64,
    pub timed_out: AtomicU64,
    /// TLS handshakes that failed (a client that does not trust the certificate, or that
    /// does not speak TLS).
    pub tls_failed: AtomicU64,
}

/// What the server reports (rate-limited: each kind at most once a minute).
#[derive(Debug, Clone)]
pub enum Notice {
    Refused {
        reason: Refusal,
        peer: SocketAddr,
        /// Totals so far.
        not_allowed: u64,
        over_cap: u64,
    },
    AcceptFailing {
        error: String,
        count: u64,
    },
}

/// Where notices go (the agent raises events; the witness logs).
pub type Reporter = Arc<dyn Fn(Notice) + Send + Sync>;

#[derive(Debug, Default)]
struct Table {
    /// Connections counted against `max_connections`.
    total: usize,
    per_source: HashMap<IpAddr, usize>,
}

/// Admission: allow-list and caps.
#[derive(Debug)]
pub struct Gate {
    limits: Limits,
    table: Mutex<Table>,
    stats: Arc<Stats>,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Slot {
    gate: Arc<Gate>,
    ip: IpAddr,
    counted: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.gate.table.lock().unwrap_or_else(|p| p.into_inner());
        if self.counted {
            t.total = t.total.saturating_sub(1);
        }
        if let Some(n) = t.per_source.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                t.per_source.remove(&self.ip);
            }
        }
        self.gate.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Gate {
    pub fn new(limits: Limits) -> Arc<Gate> {
        Arc::new(Gate {
            limits,
            table: Mutex::new(Table::default()),
            stats: Arc::new(Stats::default()),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Admit a connection from `ip`, or say why not (and count it).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        let ip = ip.to_canonical();
        let refused = |r: Refusal| {
            let c = match r {
                Refusal::NotAllowed => &self.stats.not_allowed,
                _ => &self.stats.over_cap,
            };
            c.fetch_add(1, Ordering::Relaxed);
            Err(r)
        };
        if !self.limits.admits(ip) {
            return refused(Refusal::NotAllowed);
        }
        let counted = !self.limits.trusted.contains(&ip);
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if t.per_source.get(&ip).copied().unwrap_or(0) >= self.limits.max_per_source {
            drop(t);
            return refused(Refusal::SourceCap);
        }
        if counted && t.total >= self.limits.max_connections {
            drop(t);
            return refused(Refusal::TotalCap);
        }
        if counted {
            t.total += 1;
        }
        *t.per_source.entry(ip).or_insert(0) += 1;
        drop(t);
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            gate: self.clone(),
            ip,
            counted,
        })
    }
}

/// Passes at most once per period.
#[derive(Debug, Default)]
struct Every(Option<Instant>);

impl Every {
    fn due(&mut self) -> bool {
        let now = crate::clock::now();
        let due = self.0.is_none_or(|t| now.duration_since(t) >= REPORT_EVERY);
        if due {
            self.0 = Some(now);
        }
        due
    }
}

/// Errors of `accept` that concern one connection only (the peer gave up already).
fn per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock
    )
}

/// Serve `app` on `listener` within `gate`'s limits until `shutdown` completes. Never
/// returns early: failed accepts (out of descriptors) back off and retry.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    gate: Arc<Gate>,
    report: Reporter,
    shutdown: impl Future<Output = ()>,
) {
    serve_tls(listener, app, gate, report, shutdown, None).await;
}

/// [`serve`], over TLS when `tls` is given: the handshake must complete within the header
/// timeout (a client that connects and says nothing holds its slot no longer than one
/// that sends no headers).
pub async fn serve_tls(
    listener: TcpListener,
    app: Router,
    gate: Arc<Gate>,
    report: Reporter,
    shutdown: impl Future<Output = ()>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    tokio::pin!(shutdown);
    let mut refused_every = Every::default();
    let mut failing_every = Every::default();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                match gate.admit(peer.ip()) {
                    Ok(slot) => {
                        let _ = stream.set_nodelay(true);
                        let (app, gate) = (app.clone(), gate.clone());
                        match &tls {
                            None => {
                                tokio::spawn(connection(
                                    stream,
                                    ConnectInfo(peer),
                                    app,
                                    gate,
                                    slot,
                                ));
                            }
                            Some(acceptor) => {
                                let acceptor = acceptor.clone();
                                tokio::spawn(async move {
                                    let wait = gate.limits.header_timeout;
                                    match tokio::time::timeout(wait, acceptor.accept(stream)).await
                                    {
                                        Ok(Ok(s)) => {
                                            connection(s, ConnectInfo(peer), app, gate, slot).await;
                                        }
                                        Ok(Err(e)) => {
                                            gate.stats.tls_failed.fetch_add(1, Ordering::Relaxed);
                                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                        }
                                        Err(_) => {
                                            gate.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                                        }
                                    }
                                });
                            }
                        }
                    }
                    Err(reason) => {
                        // Closed unread: no buffer, no task, no timer.
                        drop(stream);
                        tracing::debug!(%peer, reason = reason.as_str(), "connection refused");
                        if refused_every.due() {
                            report(Notice::Refused {
                                reason,
                                peer,
                                not_allowed: gate.stats.not_allowed.load(Ordering::Relaxed),
                                over_cap: gate.stats.over_cap.load(Ordering::Relaxed),
                            });
                        }
                    }
                }
            }
            Err(e) if per_connection(&e) => {}
            Err(e) => {
                let pause = accept_failed(&gate, &mut failing_every, &report, &e, &mut backoff);
                tokio::select! {
                    () = &mut shutdown => return,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

/// A failed accept (not a per-connection error): count it, report it at most once a
/// minute, and return how long to pause before the next accept (the back-off doubles).
fn accept_failed(
    gate: &Gate,
    every: &mut Every,
    report: &Reporter,
    e: &std::io::Error,
    backoff: &mut Duration,
) -> Duration {
    let n = gate.stats.accept_errors.fetch_add(1, Ordering::Relaxed) + 1;
    if every.due() {
        report(Notice::AcceptFailing {
            error: e.to_string(),
            count: n,
        });
    }
    let pause = *backoff;
    *backoff = (*backoff * 2).min(ACCEPT_BACKOFF_MAX);
    pause
}

/// Requests in progress on a connection and when the last one ended.
#[derive(Debug)]
struct Activity {
    busy: AtomicUsize,
    last: Mutex<Instant>,
}

struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.last.lock().unwrap_or_else(|p| p.into_inner()) = crate::clock::now();
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

fn timeout_response() -> Response {
    (
        StatusCode::REQUEST_TIMEOUT,
        axum::Json(serde_json::json!({"error": {
            "code": "request-timeout",
            "message": "the request was not read and answered within the request timeout",
        }})),
    )
        .into_response()
}

/// Serve one connection; every request carries `ext` as an extension (the TCP peer's
/// `ConnectInfo`, or the Unix socket's [`LocalCaller`]).
async fn connection<S, E>(stream: S, ext: E, app: Router, gate: Arc<Gate>, slot: Slot)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    E: Clone + Send + Sync + 'static,
{
    let _slot = slot;
    let limits = &gate.limits;
    let activity = Arc::new(Activity {
        busy: AtomicUsize::new(0),
        last: Mutex::new(crate::clock::now()),
    });
    let tower = TowerToHyperService::new(app);
    let request_timeout = limits.request_timeout;
    let act = activity.clone();
    let stats = gate.stats.clone();
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ext.clone());
        act.busy.fetch_add(1, Ordering::Relaxed);
        let busy = Busy(act.clone());
        let fut = tower.call(req);
        let stats = stats.clone();
        async move {
            let _busy = busy;
            match tokio::time::timeout(request_timeout, fut).await {
                Ok(r) => r,
                Err(_) => {
                    stats.timed_out.fetch_add(1, Ordering::Relaxed);
                    Ok(timeout_response())
                }
            }
        }
    });
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true)
        .max_buf_size(MAX_HEAD_BYTES);
    let conn = b.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    // After a graceful shutdown starts, the connection has this long to finish writing.
    let mut closing: Option<Instant> = None;
    loop {
        let wake = match closing {
            Some(t) => t,
            None => {
                let last = *activity.last.lock().unwrap_or_else(|p| p.into_inner());
                if activity.busy.load(Ordering::Relaxed) > 0 {
                    crate::clock::now() + limits.idle_timeout
                } else {
                    last + limits.idle_timeout
                }
            }
        };
        tokio::select! {
            _ = conn.as_mut() => return,
            () = tokio::time::sleep_until(wake) => {
                if closing.is_some() {
                    gate.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                    return; // dropped: closed
                }
                let last = *activity.last.lock().unwrap_or_else(|p| p.into_inner());
                if activity.busy.load(Ordering::Relaxed) == 0
                    && crate::clock::now().duration_since(last) >= limits.idle_timeout
                {
                    conn.as_mut().graceful_shutdown();
                    closing = Some(crate::clock::now() + limits.header_timeout);
                }
            }
        }
    }
}

/// Marks a request that came through the agent's Unix socket: whoever could connect to
/// it (file permissions) acts with this role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalCaller(pub baton_core::config::ApiRole);

/// Connections through the Unix socket at most (a local operator's CLI, a few at a time).
pub const MAX_SOCKET_CONNECTIONS: usize = 16;

/// Serve the agent's API on its Unix socket: every request carries [`LocalCaller`] with
/// `role`. The socket has no allow-list (file permissions decide who connects) but the
/// same timeouts as the TCP API and its own small connection cap.
pub async fn serve_unix(
    listener: UnixListener,
    app: Router,
    api: &ApiSection,
    role: baton_core::config::ApiRole,
    report: Reporter,
) {
    let gate = Gate::new(Limits {
        allow: None,
        trusted: Vec::new(),
        max_connections: MAX_SOCKET_CONNECTIONS,
        max_per_source: MAX_SOCKET_CONNECTIONS,
        header_timeout: api.header_timeout.0,
        idle_timeout: api.idle_timeout.0,
        request_timeout: api.request_timeout.0,
    });
    let local = IpAddr::from([127, 0, 0, 1]);
    let mut failing_every = Every::default();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                match gate.admit(local) {
                    Ok(slot) => {
                        tokio::spawn(connection(
                            stream,
                            LocalCaller(role),
                            app.clone(),
                            gate.clone(),
                            slot,
                        ));
                    }
                    Err(reason) => {
                        drop(stream);
                        tracing::debug!(reason = reason.as_str(), "socket connection refused");
                    }
                }
            }
            Err(e) if per_connection(&e) => {}
            Err(e) => {
                let pause = accept_failed(&gate, &mut failing_every, &report, &e, &mut backoff);
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// The open-file limit before and after [`raise_nofile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    pub before: u64,
    pub soft: u64,
    pub hard: u64,
}

/// Raise the soft open-file limit to the hard limit (capped at 1,048,576, the kernel's
/// usual `fs.nr_open`). Returns the limits in force afterwards.
pub fn raise_nofile() -> Result<NofileLimit, nix::Error> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let target = hard.min(1 << 20);
    if soft < target {
        setrlimit(Resource::RLIMIT_NOFILE, target, hard)?;
    }
    let (now, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    Ok(NofileLimit {
        before: soft,
        soft: now,
        hard,
    })
}

/// Descriptors reserved for everything but the API.
pub fn fd_reserve(resources_and_monitors: usize) -> u64 {
    let n = u64::try_from(resources_and_monitors).unwrap_or(u64::MAX);
    FD_RESERVE_BASE.saturating_add(n.saturating_mul(FD_RESERVE_PER_ACTION))
}

/// Lower the caps of `limits` so that `reserve` descriptors (and the trusted sources'
/// slots) always remain under the open-file limit `nofile`. Returns whether it lowered
/// them. The total never goes below 2 (one for the local CLI, one spare).
pub fn fit_caps(limits: &mut Limits, nofile: u64, reserve: u64) -> bool {
    let room = nofile
        .saturating_sub(reserve)
        .saturating_sub(limits.trusted_slots());
    let room = usize::try_from(room).unwrap_or(usize::MAX).max(2);
    if room >= limits.max_connections {
        return false;
    }
    limits.max_connections = room;
    limits.max_per_source = limits.max_per_source.min(room);
    true
}

/// Raise the open-file limit and log the result; on failure, log and carry on with the
/// current limit. Returns the soft limit in force.
pub fn raise_nofile_logged(who: &str) -> u64 {
    match raise_nofile() {
        Ok(l) => {
            tracing::info!(
                before = l.before,
                soft = l.soft,
                hard = l.hard,
                "{who}: open-file limit {} (was {}, hard limit {})",
                l.soft,
                l.before,
                l.hard
            );
            l.soft
        }
        Err(e) => {
            let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map_or(1024, |(s, _)| s);
            tracing::warn!(error = %e, soft, "{who}: cannot raise the open-file limit");
            soft
        }
    }
}

/// The agent's API limits (`[api]`), with the caps sized to the open-file limit, which is
/// raised first. Returns the event to raise when the caps had to be lowered (BTN-4023).
pub fn agent_api_limits(
    cfg: &baton_core::config::Config,
    me: &str,
) -> (Limits, Option<baton_core::events::Event>) {
    use baton_core::events::{self, Event};
    let nofile = raise_nofile_logged("agent");
    let actions = cfg.groups.iter().map(|g| g.resources.len()).sum::<usize>() + cfg.monitors.len();
    let reserve = fd_reserve(actions);
    let mut limits = Limits::for_api(&cfg.api, cfg, me);
    let (total, per) = (limits.max_connections, limits.max_per_source);
    if !fit_caps(&mut limits, nofile, reserve) {
        return (limits, None);
    }
    let ev = Event::new(
        &events::FD_LIMIT_LOW,
        format!(
            "open-file limit {nofile} cannot hold the API caps ({total} connections, {per} per source) plus {reserve} descriptors reserved for {actions} resources and monitors, state writes and sockets: API cap lowered to {} connections, {} per source",
            limits.max_connections, limits.max_per_source
        ),
    )
    .field("nofile", nofile)
    .field("reserve", reserve)
    .field("max_connections", u64::try_from(limits.max_connections).unwrap_or(u64::MAX))
    .field("max_connections_per_source", u64::try_from(limits.max_per_source).unwrap_or(u64::MAX));
    (limits, Some(ev))
}

/// Serve the agent's API: notices become events (BTN-4021, BTN-4022).
pub async fn serve_api(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shared: Arc<crate::shared::Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let local = listener.local_addr().ok();
    tracing::info!(
        listen = ?local,
        tls = tls.is_some(),
        max_connections = limits.max_connections,
        max_connections_per_source = limits.max_per_source,
        "API: listening"
    );
    let report: Reporter = Arc::new(move |n| shared.raise(notice_event(&n)));
    serve_tls(
        listener,
        app,
        Gate::new(limits),
        report,
        std::future::pending(),
        tls,
    )
    .await;
}

/// The event of a notice.
pub fn notice_event(n: &Notice) -> baton_core::events::Event {
    use baton_core::events::{self, Event};
    match n {
        Notice::Refused {
            reason,
            peer,
            not_allowed,
            over_cap,
        } => Event::new(
            &events::API_CONNECTIONS_REFUSED,
            format!(
                "API connections closed unread: {not_allowed} from addresses not in the allow-list, {over_cap} over the connection caps so far (latest: {peer}, {})",
                reason.as_str()
            ),
        )
        .field("peer", peer.to_string())
        .field("reason", reason.as_str())
        .field("not_allowed", *not_allowed)
        .field("over_cap", *over_cap),
        Notice::AcceptFailing { error, count } => Event::new(
            &events::API_ACCEPT_FAILING,
            format!("API cannot accept connections: {error} ({count} failed accepts so far); backing off and retrying"),
        )
        .field("error", error.clone())
        .field("count", *count),
    }
}

/// `baton witness` flags for the same limits as the agent's `[api]` section.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// Accept connections only from this network (repeatable), e.g. 10.0.0.0/16. Default:
    /// any address.
    #[arg(long = "allow", value_name = "CIDR")]
    pub allow: Vec<String>,
    /// Open connections at most (lowered at start if the open-file limit cannot hold it).
    #[arg(long, default_value_t = 256)]
    pub max_connections: u32,
    /// Open connections from one source address at most.
    #[arg(long, default_value_t = 16)]
    pub max_connections_per_source: u32,
    /// Time a client has to send a request's headers.
    #[arg(long, default_value = "5s")]
    pub header_timeout: String,
    /// An idle connection is closed after this.
    #[arg(long, default_value = "30s")]
    pub idle_timeout: String,
    /// Time for a whole request: reading its body and answering.
    #[arg(long, default_value = "10s")]
    pub request_timeout: String,
}

impl LimitArgs {
    /// The limits, or a message naming the bad flag.
    pub fn limits(&self) -> Result<Limits, String> {
        use baton_core::config::api::{check_caps, check_timeout};
        let mut allow = Vec::new();
        for a in &self.allow {
            allow.push(a.parse::<Cidr>().map_err(|m| format!("--allow: {m}"))?);
        }
        check_caps(self.max_connections, self.max_connections_per_source)
            .map_err(|(_, m)| format!("--{}", m.replace('_', "-")))?;
        let mut t = Vec::new();
        for (flag, v) in [
            ("header-timeout", &self.header_timeout),
            ("idle-timeout", &self.idle_timeout),
            ("request-timeout", &self.request_timeout),
        ] {
            let d = baton_core::config::parse_duration(v).map_err(|m| format!("--{flag}: {m}"))?;
            check_timeout(&format!("--{flag}"), d)?;
            t.push(d.0);
        }
        Ok(Limits {
            allow: (!allow.is_empty()).then_some(allow),
            trusted: Vec::new(),
            max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
            max_per_source: usize::try_from(self.max_connections_per_source).unwrap_or(usize::MAX),
            header_timeout: t[0],
            idle_timeout: t[1],
            request_timeout: t[2],
        })
    }
}

/// Serve the witness: caps sized to the open-file limit (raised first), notices logged.
pub async fn serve_witness(
    listener: TcpListener,
    app: Router,
    mut limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let nofile = raise_nofile_logged("witness");
    let (total, per) = (limits.max_connections, limits.max_per_source);
    if fit_caps(&mut limits, nofile, FD_RESERVE_BASE) {
        tracing::warn!(
            code = "fd-limit-low",
            nofile,
            "witness: open-file limit {nofile} cannot hold {total} connections ({per} per source) plus {FD_RESERVE_BASE} reserved descriptors: cap lowered to {} ({} per source)",
            limits.max_connections,
            limits.max_per_source
        );
    }
    tracing::info!(
        max_connections = limits.max_connections,
        max_connections_per_source = limits.max_per_source,
        allow = ?limits.allow.as_ref().map(|a| a.iter().map(ToString::to_string).collect::<Vec<_>>()),
        "witness: connection limits"
    );
    let report: Reporter = Arc::new(|n| {
        let ev = notice_event(&n);
        tracing::warn!(code = %ev.id, "witness: {}", ev.message.replacen("API ", "", 1));
    });
    serve(listener, app, Gate::new(limits), report, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    fn limits() -> Limits {
        Limits {
            allow: Some(vec!["10.0.0.0/16".parse().unwrap()]),
            trusted: vec!["192.0.2.1".parse().unwrap()],
            max_connections: 3,
            max_per_source: 2,
            header_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(600),
            request_timeout: Duration::from_millis(400),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn allow_list_admits_networks_and_trusted_only() {
        let g = Gate::new(limits());
        assert!(g.admit(ip("10.0.3.4")).is_ok());
        assert!(g.admit(ip("::ffff:10.0.3.5")).is_ok());
        assert!(g.admit(ip("192.0.2.1")).is_ok());
        assert_eq!(g.admit(ip("10.1.0.1")).unwrap_err(), Refusal::NotAllowed);
        assert_eq!(g.admit(ip("127.0.0.1")).unwrap_err(), Refusal::NotAllowed);
        assert_eq!(g.stats.not_allowed.load(Ordering::Relaxed), 2);
        let open = Gate::new(Limits {
            allow: None,
            ..limits()
        });
        assert!(open.admit(ip("203.0.113.7")).is_ok());
    }

    #[test]
    fn caps_per_source_and_total_and_slots_are_freed() {
        let g = Gate::new(limits());
        let a1 = g.admit(ip("10.0.0.1")).unwrap();
        let _a2 = g.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(g.admit(ip("10.0.0.1")).unwrap_err(), Refusal::SourceCap);
        let _b1 = g.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(g.admit(ip("10.0.0.3")).unwrap_err(), Refusal::TotalCap);
        // Trusted sources have their own slots beyond the total, per-source capped.
        let t1 = g.admit(ip("192.0.2.1")).unwrap();
        let _t2 = g.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(g.admit(ip("192.0.2.1")).unwrap_err(), Refusal::SourceCap);
        assert_eq!(g.stats.over_cap.load(Ordering::Relaxed), 3);
        assert_eq!(g.stats.open.load(Ordering::Relaxed), 5);
        drop(a1);
        drop(t1);
        assert!(g.admit(ip("10.0.0.3")).is_ok());
        assert!(g.admit(ip("192.0.2.1")).is_ok());
    }

    #[test]
    fn caps_shrink_to_keep_the_reserve() {
        let mut l = Limits {
            max_connections: 64,
            max_per_source: 8,
            ..limits()
        };
        // 1 trusted source x 8 slots; reserve 64 + 8 x 2.
        let reserve = fd_reserve(2);
        assert_eq!(reserve, 80);
        assert!(!fit_caps(&mut l.clone(), 1024, reserve));
        assert!(fit_caps(&mut l, 128, reserve));
        assert_eq!(l.max_connections, 128 - 80 - 8);
        assert_eq!(l.max_per_source, 8);
        let mut tiny = limits();
        assert!(fit_caps(&mut tiny, 50, reserve));
        assert_eq!((tiny.max_connections, tiny.max_per_source), (2, 2));
    }

    async fn start(l: Limits) -> (SocketAddr, Arc<Gate>, Arc<Mutex<Vec<Notice>>>) {
        let app = Router::new()
            .route(
                "/peer",
                get(|ConnectInfo(p): ConnectInfo<SocketAddr>| async move { p.to_string() }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let gate = Gate::new(l);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let report: Reporter = Arc::new(move |n: Notice| s2.lock().unwrap().push(n));
        tokio::spawn(serve(
            listener,
            app,
            gate.clone(),
            report,
            std::future::pending(),
        ));
        (addr, gate, seen)
    }

    fn local() -> Limits {
        Limits {
            allow: Some(vec!["127.0.0.0/8".parse().unwrap()]),
            trusted: vec![],
            ..limits()
        }
    }

    async fn get_path(c: &mut TcpStream, path: &str) -> String {
        c.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = c.read(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf[..n]).to_string()
    }

    /// Read until the server closes the connection; returns what was read.
    async fn until_closed(c: &mut TcpStream, within: Duration) -> Option<String> {
        let mut all = Vec::new();
        let mut buf = [0u8; 1024];
        let end = crate::clock::now() + within;
        loop {
            match tokio::time::timeout_at(end, c.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&all).to_string()),
                Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
                Err(_) => return None,
            }
        }
    }

    #[tokio::test]
    async fn handlers_see_the_peer_address() {
        let (addr, _, _) = start(local()).await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        let me = c.local_addr().unwrap();
        let r = get_path(&mut c, "/peer").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(r.ends_with(&me.to_string()), "{r} does not end with {me}");
    }

    #[tokio::test]
    async fn over_the_cap_is_closed_at_once_and_reported() {
        let (addr, gate, seen) = start(local()).await;
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let mut c = TcpStream::connect(addr).await.unwrap();
        // Closed without an answer, long before any timeout.
        let r = until_closed(&mut c, Duration::from_millis(250)).await;
        assert_eq!(r.as_deref(), Some(""));
        assert_eq!(gate.stats.over_cap.load(Ordering::Relaxed), 1);
        let seen = seen.lock().unwrap();
        assert!(matches!(
            seen.as_slice(),
            [Notice::Refused {
                reason: Refusal::SourceCap,
                over_cap: 1,
                ..
            }]
        ));
    }

    #[tokio::test]
    async fn slowloris_idle_and_slow_requests_are_cut_off() {
        let (addr, gate, _) = start(local()).await;
        // Headers one byte at a time, never finished: closed by the header timeout.
        let mut slow = TcpStream::connect(addr).await.unwrap();
        let t0 = crate::clock::now();
        let mut closed = false;
        for b in b"GET /peer HTTP/1.1\r\nhost: x\r\nx-pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        {
            if slow.write_all(&[*b]).await.is_err() {
                closed = true;
                break;
            }
            let mut buf = [0u8; 256];
            if let Ok(Ok(0) | Err(_)) =
                tokio::time::timeout(Duration::from_millis(50), slow.read(&mut buf)).await
            {
                closed = true;
                break;
            }
        }
        assert!(closed, "a slowloris client kept its connection");
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());

        // An idle connection (nothing sent) is closed by the idle or header timeout.
        let mut idle = TcpStream::connect(addr).await.unwrap();
        assert!(until_closed(&mut idle, Duration::from_secs(3))
            .await
            .is_some());

        // A connection idle after one answer is closed too.
        let mut kept = TcpStream::connect(addr).await.unwrap();
        assert!(get_path(&mut kept, "/peer")
            .await
            .starts_with("HTTP/1.1 200"));
        assert!(until_closed(&mut kept, Duration::from_secs(3))
            .await
            .is_some());

        // A handler that takes too long is answered 408 within the request timeout.
        let mut c = TcpStream::connect(addr).await.unwrap();
        let r = get_path(&mut c, "/slow").await;
        assert!(r.starts_with("HTTP/1.1 408"), "{r}");
        assert!(gate.stats.timed_out.load(Ordering::Relaxed) >= 1);

        // Every slot is free again.
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop((slow, idle, kept, c));
        let end = crate::clock::now() + Duration::from_secs(3);
        while gate.stats.open.load(Ordering::Relaxed) > 0 && crate::clock::now() < end {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(gate.stats.open.load(Ordering::Relaxed), 0);
    }
}
