//! The Web UI: server-side rendered HTML plus one small script (`assets/app.js`) and one
//! stylesheet, both embedded in the binary; no external resources, a strict
//! Content-Security-Policy. See docs/src/webui.md.
//!
//! * `GET /ui/login`, `POST /ui/login`: log in with the name to record and an API token of
//!   the `read` or `operator` role (never the cluster key's token); an HttpOnly,
//!   SameSite=Strict session cookie is set, the token is not kept in the browser.
//! * `GET /ui/`: the dashboard; `GET /ui/live` its live part, polled every 2 s with
//!   `If-None-Match` (304 when nothing changed).
//! * `GET /ui/alerts`: the alert logs of every server that answers, filtered; each event
//!   id links to its page in the events reference.
//! * `GET /ui/failovers`: one timeline per failover (detection, decision, claim,
//!   activation, total), from the same events the metrics use.
//! * `GET /ui/events`: the events reference (the catalogue), the links' target unless
//!   `[notify] docs_url` names a published copy.
//! * `POST /ui/op`: an operation, confirmed first; sent through the API's own router with
//!   the session's role, as the CLI's requests are, and recorded as BTN-4030 naming who.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use baton_core::config::ApiRole;
use baton_core::events::{self, Event, Severity};
use serde::Deserialize;

use super::session::{Lookup, Session, COOKIE};
use crate::api_types::AgentStatus;
use crate::shared::Shared;
use crate::tokens::Caller;

/// Largest form accepted (login, operations).
pub const MAX_FORM: usize = 16 * 1024;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/", get(|| async { redirect("/ui/") }))
        .route("/ui", get(|| async { redirect("/ui/") }))
        .route("/ui/", get(dashboard))
        .route("/ui/live", get(live))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", axum::routing::post(logout))
        .route("/ui/alerts", get(alerts))
        .route("/ui/failovers", get(failovers))
        .route("/ui/events", get(events_ref))
        .route("/ui/op", axum::routing::post(op))
        .route(
            "/ui/static/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/static/app.css",
            get(|| async { asset(APP_CSS, "text/css; charset=utf-8") }),
        )
        .layer(DefaultBodyLimit::max(MAX_FORM))
        .layer(axum::middleware::map_response(security_headers))
}

async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    r
}

fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn etag_of(text: &str) -> String {
    use sha2::{Digest, Sha256};
    format!(
        "\"{}\"",
        &hex::encode(Sha256::digest(text.as_bytes()))[..32]
    )
}

fn asset(body: &'static str, ctype: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(ctype)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        body,
    )
        .into_response()
}

/// HTML-escape text and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// `2026-12-04 16:08:25` (UTC) from ms since the epoch.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// ms since the epoch of `YYYY-MM-DDTHH:MM` (a datetime-local field, taken as UTC).
pub fn parse_local(s: &str) -> Option<u64> {
    let (date, time) = s.trim().split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':').map(|x| x.parse::<i64>().ok());
    let (hh, mm) = (t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 {
        return None;
    }
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from((days * 86_400 + hh * 3600 + mm * 60) * 1000).ok()
}

// ---------------------------------------------------------------------------------------
// Sessions and pages
// ---------------------------------------------------------------------------------------

fn cookie_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

enum Auth {
    Ok(Session),
    Expired,
    None,
}

fn session(s: &Shared, headers: &HeaderMap) -> Auth {
    session_in(&s.web.sessions, headers)
}

fn session_in(sessions: &super::session::Sessions, headers: &HeaderMap) -> Auth {
    match cookie_id(headers).map(|id| sessions.get(&id)) {
        Some(Lookup::Valid(sess)) => Auth::Ok(sess),
        Some(Lookup::Expired) => Auth::Expired,
        _ => Auth::None,
    }
}

/// The session, or where to send the browser instead (the login page).
fn require(s: &Shared, headers: &HeaderMap) -> Result<Session, &'static str> {
    require_in(&s.web.sessions, headers)
}

fn require_in(
    sessions: &super::session::Sessions,
    headers: &HeaderMap,
) -> Result<Session, &'static str> {
    match session_in(sessions, headers) {
        Auth::Ok(x) => Ok(x),
        Auth::Expired => Err("/ui/login?expired=1"),
        Auth::None => Err("/ui/login"),
    }
}

fn page(s: &Shared, title: &str, sess: Option<&Session>, current: &str, body: &str) -> String {
    let nav = match sess {
        None => String::new(),
        Some(x) => {
            let link = |href: &str, label: &str| {
                let cur = if href == current {
                    " aria-current=\"page\""
                } else {
                    ""
                };
                format!("<li><a href=\"{href}\"{cur}>{label}</a></li>")
            };
            format!(
                "<nav aria-label=\"Main\"><ul>{}{}{}{}</ul></nav>\
                 <form class=\"logout\" method=\"post\" action=\"/ui/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                 <span class=\"who\">{} · {}</span> <button type=\"submit\">Log out</button></form>",
                link("/ui/", "Dashboard"),
                link("/ui/alerts", "Alert log"),
                link("/ui/failovers", "Failovers"),
                link("/ui/events", "Events reference"),
                esc(&x.csrf),
                esc(&x.user),
                x.role.as_str(),
            )
        }
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t} · Baton {c}</title><link rel=\"icon\" href=\"data:,\">\
         <link rel=\"stylesheet\" href=\"/ui/static/app.css\">\
         <script src=\"/ui/static/app.js\" defer></script></head>\
         <body><a class=\"skip\" href=\"#main\">Skip to content</a>\
         <header><p class=\"brand\">Baton · cluster <strong>{c}</strong> · via {srv}</p>{nav}</header>\
         <main id=\"main\" tabindex=\"-1\"><h1>{t}</h1>{body}</main>\
         <dialog id=\"confirm\" aria-labelledby=\"confirm-text\"><form method=\"dialog\"><p id=\"confirm-text\"></p>\
         <div class=\"actions\"><button value=\"cancel\" type=\"submit\">Cancel</button> <button value=\"ok\" type=\"submit\" class=\"danger\" id=\"confirm-ok\">Confirm</button></div></form></dialog>\
         </body></html>\n",
        t = esc(title),
        c = esc(&s.config().cluster_name),
        srv = esc(&s.server),
    )
}

fn html(code: StatusCode, text: String) -> Response {
    (
        code,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------
// Login
// ---------------------------------------------------------------------------------------

#[derive(Debug, Deserialize, Default)]
struct LoginQuery {
    #[serde(default)]
    expired: Option<String>,
}

fn login_form(s: &Shared, message: Option<(&str, &str)>) -> String {
    let msg = message
        .map(|(class, m)| format!("<p class=\"{class}\" role=\"alert\">{}</p>", esc(m)))
        .unwrap_or_default();
    page(
        s,
        "Log in",
        None,
        "",
        &format!(
            "{msg}<form method=\"post\" action=\"/ui/login\" class=\"login\">\
             <p><label for=\"user\">Your name (recorded with your operations)</label>\
             <input id=\"user\" name=\"user\" required maxlength=\"64\" autocomplete=\"username\"></p>\
             <p><label for=\"token\">API token (<code>baton token --role operator</code> or <code>--role read</code>)</label>\
             <input id=\"token\" name=\"token\" type=\"password\" required maxlength=\"512\" autocomplete=\"current-password\"></p>\
             <p><button type=\"submit\">Log in</button></p></form>\
             <p class=\"note\">The token is checked once; the browser then holds a session cookie only. The cluster key's own token is refused here.</p>"
        ),
    )
}

async fn login_page(
    State(s): State<Arc<Shared>>,
    q: Result<Query<LoginQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let expired = q.is_ok_and(|Query(q)| q.expired.is_some());
    html(
        StatusCode::OK,
        login_form(
            &s,
            expired.then_some(("warn", "Your session expired: log in again.")),
        ),
    )
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    user: String,
    token: String,
}

fn peer_of(req_ext: &axum::http::Extensions) -> String {
    req_ext
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "the Unix socket".to_string(), |c| c.0.ip().to_string())
}

/// A POST from another site: its `Origin` (sent by browsers on POST) is not this host.
fn cross_site(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let bare = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or(origin);
    bare != host
}

fn too_large() -> Response {
    html(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("<!doctype html><title>Request too large</title><p>The form is larger than {MAX_FORM} bytes: nothing was done.</p>"),
    )
}

fn valid_user(u: &str) -> bool {
    let u = u.trim();
    !u.is_empty()
        && u.chars().count() <= 64
        && u.chars()
            .all(|c| c.is_alphanumeric() || " .-_@".contains(c))
}

async fn login(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let from = peer_of(req.extensions());
    let headers = req.headers().clone();
    let Ok(body) = axum::body::to_bytes(req.into_body(), MAX_FORM).await else {
        return too_large();
    };
    if cross_site(&headers) {
        return html(
            StatusCode::FORBIDDEN,
            login_form(
                &s,
                Some((
                    "error",
                    "Refused: the login form was sent from another site.",
                )),
            ),
        );
    }
    let Ok(f) = serde_urlencoded::from_bytes::<LoginForm>(&body) else {
        return html(
            StatusCode::BAD_REQUEST,
            login_form(&s, Some(("error", "Give your name and an API token."))),
        );
    };
    if !valid_user(&f.user) {
        return html(
            StatusCode::BAD_REQUEST,
            login_form(
                &s,
                Some((
                    "error",
                    "Your name: 1 to 64 letters, digits, spaces, or . - _ @",
                )),
            ),
        );
    }
    let user = f.user.trim().to_string();
    let now = crate::clock::now();
    if let super::session::Admit::Blocked {
        retry_after,
        report,
    } = s.web.logins.admit(&from, now)
    {
        let secs = retry_after.as_secs().max(1);
        if report {
            s.raise(
                Event::new(
                    &events::WEBUI_LOGIN_FAILED,
                    format!("Web UI login of `{user}` from {from} refused: {} failed logins from this address within {} s; every login from it is refused for {secs} s more (reported once)", super::session::LOGIN_FAILURES, super::session::LOGIN_WINDOW.as_secs()),
                )
                .field("user", user.clone())
                .field("from", from.clone())
                .field("blocked_s", secs),
            );
        }
        let mut r = html(
            StatusCode::TOO_MANY_REQUESTS,
            login_form(
                &s,
                Some((
                    "error",
                    &format!("Too many failed logins from your address: try again in {secs} s. Nothing was changed."),
                )),
            ),
        );
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let refused = |why: &str, msg: &str| {
        s.web.logins.failed(&from, now);
        s.raise(
            Event::new(
                &events::WEBUI_LOGIN_FAILED,
                format!("Web UI login of `{user}` from {from} refused: {why}"),
            )
            .field("user", user.clone())
            .field("from", from.clone()),
        );
        html(
            StatusCode::UNAUTHORIZED,
            login_form(&s, Some(("error", msg))),
        )
    };
    let role = match s.tokens.caller(&f.token) {
        None => return refused("wrong token", "Wrong token: nothing was changed. Use a token from `baton token --role operator` (or read)."),
        Some(Caller::Peer) => return refused("the cluster key's token", "The cluster key's own token is not accepted in a browser: use `baton token --role operator` (or read)."),
        Some(r) => r,
    };
    s.web.logins.succeeded(&from);
    let (id, sess) = s.web.sessions.create(&user, role, &from);
    s.raise(
        Event::new(
            &events::WEBUI_LOGIN,
            format!("{} logged in to the Web UI", sess.who()),
        )
        .field("user", user)
        .field("role", role.as_str())
        .field("from", from),
    );
    let secure = if s.config().api.tls() { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        s.web.sessions.ttl().as_secs()
    );
    let mut r = redirect("/ui/");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[derive(Debug, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let f: CsrfForm = serde_urlencoded::from_bytes(&body).unwrap_or(CsrfForm {
        csrf: String::new(),
    });
    if let (Some(id), Auth::Ok(sess)) = (cookie_id(&headers), session(&s, &headers)) {
        if crate::tokens::constant_time_eq(f.csrf.as_bytes(), sess.csrf.as_bytes())
            && !cross_site(&headers)
        {
            s.web.sessions.remove(&id);
        }
    }
    let mut r = redirect("/ui/login");
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("baton_session=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    r
}

// ---------------------------------------------------------------------------------------
// Dashboard
// ---------------------------------------------------------------------------------------

fn state_class(state: &str) -> &'static str {
    match state {
        "online" | "normal" | "up" | "up_to_date" | "connected" => "ok",
        "offline" | "idle" | "init" | "waiting" | "suspended" => "idle",
        "failed" | "stuck" | "error" | "down" => "bad",
        _ => "warn",
    }
}

fn badge(state: &str) -> String {
    format!(
        "<span class=\"badge {}\">{}</span>",
        state_class(state),
        esc(state)
    )
}

fn since(ms_ago: u64) -> String {
    let s = ms_ago / 1000;
    if s < 120 {
        format!("{s} s")
    } else if s < 7200 {
        format!("{} min", s / 60)
    } else {
        format!("{} h", s / 3600)
    }
}

fn op_form(
    csrf: &str,
    fields: &[(&str, &str)],
    label: &str,
    confirm: &str,
    danger: bool,
) -> String {
    let hidden: String = fields
        .iter()
        .map(|(k, v)| {
            format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                esc(k),
                esc(v)
            )
        })
        .collect();
    format!(
        "<form method=\"post\" action=\"/ui/op\" class=\"op\" data-confirm=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">{hidden}<button type=\"submit\"{}>{}</button></form>",
        esc(confirm),
        esc(csrf),
        if danger { " class=\"danger\"" } else { "" },
        esc(label)
    )
}

/// Another server's status as the dashboard shows it (`None`: its agent did not answer).
struct PeerView {
    server: String,
    status: Option<AgentStatus>,
}

/// `GET path` from every other server's agent at once (800 ms each), in the
/// configuration's order; `None` for one that did not answer.
async fn from_peers<T: serde::de::DeserializeOwned + Send + 'static>(
    s: &Shared,
    path: &str,
) -> Vec<(String, Option<T>)> {
    let mut futs = Vec::new();
    for srv in s.config().servers.iter().filter(|x| x.name != s.server) {
        let client = s.peer_client.clone();
        let (addr, path) = (srv.api, path.to_string());
        futs.push((
            srv.name.clone(),
            tokio::spawn(async move {
                client
                    .get::<T>(addr, &path, Duration::from_millis(800))
                    .await
                    .ok()
            }),
        ));
    }
    let mut out = Vec::new();
    for (server, f) in futs {
        out.push((server, f.await.ok().flatten()));
    }
    out
}

/// Every other server's status (`GET /v1/status`).
async fn peer_views(s: &Shared) -> Vec<PeerView> {
    from_peers::<AgentStatus>(s, "/v1/status")
        .await
        .into_iter()
        .map(|(server, status)| PeerView { server, status })
        .collect()
}

/// The live part of the dashboard (what `/ui/live` serves and the page embeds).
fn live_html(s: &Shared, st: &AgentStatus, peers: &[PeerView], sess: &Session) -> String {
    let e = &st.engine;
    let can = sess.role >= Caller::Operator;
    let csrf = sess.csrf.as_str();
    let mut o = String::new();
    // Cluster summary.
    o.push_str("<section aria-labelledby=\"h-cluster\"><h2 id=\"h-cluster\">Cluster</h2><dl class=\"facts\">");
    let fact = |o: &mut String, k: &str, v: String| {
        o.push_str(&format!("<div><dt>{k}</dt><dd>{v}</dd></div>"));
    };
    fact(
        &mut o,
        "Quorum",
        format!(
            "{} {} of {} votes",
            badge(if e.quorum { "online" } else { "failed" })
                .replace(">online<", ">quorum<")
                .replace(">failed<", ">no quorum<"),
            e.votes_heard,
            e.votes_total
        ),
    );
    fact(&mut o, "Witness", esc(&e.witness));
    fact(
        &mut o,
        "Monitoring",
        if e.suspended {
            badge("suspended")
        } else {
            badge("normal").replace(">normal<", ">active<")
        },
    );
    fact(
        &mut o,
        "Heartbeat timeout",
        format!(
            "{} ms{}",
            e.heartbeat_timeout_ms,
            e.timeout_override_remaining_ms
                .map(|r| format!(
                    " (temporary, {} left; monitors ×{}%)",
                    since(r),
                    e.monitor_factor_pct
                ))
                .unwrap_or_default()
        ),
    );
    if e.refused {
        fact(&mut o, "Configuration", badge("refused"));
    }
    o.push_str("</dl>");
    if can {
        o.push_str("<div class=\"actions\">");
        if e.suspended {
            o.push_str(&op_form(
                csrf,
                &[("op", "cluster-resume")],
                "Resume cluster",
                "Resume the cluster (monitors and failover back on)?",
                false,
            ));
        } else {
            o.push_str(&op_form(
                csrf,
                &[("op", "cluster-suspend")],
                "Suspend cluster",
                "Suspend the cluster? Monitors stop and no failover happens until it is resumed.",
                true,
            ));
        }
        if e.timeout_override_remaining_ms.is_some() {
            o.push_str(&op_form(
                csrf,
                &[("op", "timeout-clear")],
                "Clear temporary timeouts",
                "Return to the configured timeouts now?",
                false,
            ));
        }
        o.push_str("</div>");
        if e.timeout_override_remaining_ms.is_none() {
            o.push_str(&format!(
                "<form method=\"post\" action=\"/ui/op\" class=\"op inline\" data-confirm=\"Set the temporary timeouts?\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"op\" value=\"timeout-set\">\
                 <label for=\"t-hb\">Heartbeat timeout</label><input id=\"t-hb\" name=\"heartbeat\" value=\"30s\" size=\"6\" required>\
                 <label for=\"t-f\">Monitor factor %</label><input id=\"t-f\" name=\"factor\" value=\"300\" size=\"4\" inputmode=\"numeric\" required>\
                 <label for=\"t-for\">For</label><input id=\"t-for\" name=\"duration\" value=\"2h\" size=\"5\" required>\
                 <button type=\"submit\">Set temporary timeouts</button></form>",
                esc(csrf)
            ));
        }
    }
    o.push_str("</section>");
    // Servers.
    o.push_str("<section aria-labelledby=\"h-servers\"><h2 id=\"h-servers\">Servers</h2><div class=\"table-wrap\" tabindex=\"0\" role=\"region\" aria-label=\"Servers table\"><table><thead><tr><th scope=\"col\">Server</th><th scope=\"col\">State</th><th scope=\"col\">Interconnect paths</th><th scope=\"col\">Quorum</th><th scope=\"col\">Config</th></tr></thead><tbody>");
    for srv in &e.servers {
        let paths: Vec<String> = srv
            .paths
            .iter()
            .map(|p| {
                format!(
                    "{} {}",
                    p.path,
                    badge(if srv.is_self || p.up { "up" } else { "down" })
                )
            })
            .collect();
        o.push_str(&format!(
            "<tr data-server=\"{n}\"><th scope=\"row\">{n}{me}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            badge(if srv.up { "up" } else { "down" }),
            if srv.is_self { "(this server)".into() } else { paths.join(" ") },
            if srv.quorum { "yes" } else { "no" },
            if srv.digest_matches { "same" } else { "<strong>differs</strong>" },
            n = esc(&srv.name),
            me = if srv.is_self { " <small>(here)</small>" } else { "" },
        ));
    }
    o.push_str("</tbody></table></div></section>");
    // Groups.
    o.push_str("<section aria-labelledby=\"h-groups\"><h2 id=\"h-groups\">Groups</h2>");
    for g in &e.groups {
        let state = serde_json::to_value(g.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let running = s.config();
        let cfg = running.groups.iter().find(|x| x.name == g.name);
        o.push_str(&format!(
            "<article class=\"group\" data-group=\"{n}\" aria-labelledby=\"g-{n}\"><h3 id=\"g-{n}\">{n} {}</h3><dl class=\"facts\">",
            badge(&state),
            n = esc(&g.name)
        ));
        fact(
            &mut o,
            "Active on",
            format!(
                "<span class=\"owner\">{}</span>",
                esc(g.active_on.as_deref().unwrap_or("—"))
            ),
        );
        fact(&mut o, "Epoch", g.epoch.to_string());
        fact(&mut o, "Since", format!("{} ago", since(g.since_ms_ago)));
        fact(&mut o, "Desired", esc(&g.desired));
        if !g.excluded_on.is_empty() {
            fact(&mut o, "Excluded on", esc(&g.excluded_on.join(", ")));
        }
        o.push_str("</dl>");
        if let Some(cfg) = cfg {
            o.push_str(&format!("<div class=\"table-wrap\" tabindex=\"0\" role=\"region\" aria-label=\"Resources of group {}\"><table><caption>Resources</caption><thead><tr><th scope=\"col\">Resource</th><th scope=\"col\">Kind</th><th scope=\"col\">State</th></tr></thead><tbody>", esc(&g.name)));
            for r in &cfg.resources {
                let rs = if g.active_on.is_some() && state == "online" {
                    "online".to_string()
                } else {
                    state.clone()
                };
                o.push_str(&format!(
                    "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td></tr>",
                    esc(&r.name),
                    esc(&r.kind),
                    badge(&rs)
                ));
            }
            o.push_str("</tbody></table></div>");
        }
        if can {
            let n = g.name.as_str();
            o.push_str("<div class=\"actions\">");
            o.push_str(&op_form(
                csrf,
                &[("op", "group-start"), ("group", n)],
                "Start",
                &format!("Start group {n}?"),
                false,
            ));
            o.push_str(&op_form(
                csrf,
                &[("op", "group-stop"), ("group", n)],
                "Stop",
                &format!("Stop group {n}? Its service goes offline."),
                true,
            ));
            let servers = cfg.map(|c| c.servers.clone()).unwrap_or_default();
            let options: String = servers
                .iter()
                .filter(|x| g.active_on.as_deref() != Some(x.as_str()))
                .map(|x| format!("<option value=\"{0}\">{0}</option>", esc(x)))
                .collect();
            o.push_str(&format!(
                "<form method=\"post\" action=\"/ui/op\" class=\"op\" data-confirm=\"Move group {n} to the chosen server?\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"op\" value=\"group-move\"><input type=\"hidden\" name=\"group\" value=\"{n}\">\
                 <label for=\"mv-{n}\">Move to</label> <select id=\"mv-{n}\" name=\"to\">{options}</select> <button type=\"submit\">Move</button></form>",
                esc(csrf),
                n = esc(n)
            ));
            o.push_str("</div>");
        }
        o.push_str("</article>");
    }
    o.push_str("</section>");
    // Monitors of every server that answers (this one first).
    o.push_str("<section aria-labelledby=\"h-mon\"><h2 id=\"h-mon\">Monitors</h2>");
    let mut per_server: Vec<(&str, Option<&[baton_core::engine::MonitorStatus]>)> =
        vec![(s.server.as_str(), Some(e.monitors.as_slice()))];
    for p in peers {
        per_server.push((
            p.server.as_str(),
            p.status.as_ref().map(|x| x.engine.monitors.as_slice()),
        ));
    }
    if per_server
        .iter()
        .all(|(_, m)| m.is_some_and(<[_]>::is_empty))
    {
        o.push_str("<p>No monitors.</p>");
    } else {
        o.push_str("<div class=\"table-wrap\" tabindex=\"0\" role=\"region\" aria-label=\"Monitors table\"><table><thead><tr><th scope=\"col\">Monitor</th><th scope=\"col\">Server</th><th scope=\"col\">Kind</th><th scope=\"col\">State</th><th scope=\"col\">Last poll</th><th scope=\"col\">Last error</th><th scope=\"col\">Recoveries</th>");
        if can {
            o.push_str("<th scope=\"col\"><span class=\"sr\">Action</span></th>");
        }
        o.push_str("</tr></thead><tbody>");
        let cols = if can { 8 } else { 7 };
        for (srv, mons) in &per_server {
            let Some(mons) = mons else {
                o.push_str(&format!(
                    "<tr data-monitor-server=\"{srv}\"><td colspan=\"{cols}\">{srv}: {} (its agent does not answer)</td></tr>",
                    badge("down"),
                    srv = esc(srv)
                ));
                continue;
            };
            for m in mons.iter() {
                o.push_str(&format!(
                "<tr data-monitor-server=\"{}\"><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} restart(s), {} failover(s)</td>",
                esc(srv),
                esc(&m.name),
                esc(srv),
                esc(&m.kind),
                badge(&m.state),
                m.last_latency_ms.map(|l| format!("{l} ms")).unwrap_or_else(|| "—".into()),
                esc(m.last_error.as_deref().unwrap_or("")),
                m.restarts,
                m.failovers
            ));
                if can {
                    let (op, label) = if m.state == "suspended" {
                        ("monitor-resume", "Resume")
                    } else {
                        ("monitor-suspend", "Suspend")
                    };
                    o.push_str(&format!(
                        "<td>{}</td>",
                        op_form(
                            csrf,
                            &[("op", op), ("monitor", &m.name)],
                            label,
                            &format!("{label} monitor {} on every server?", m.name),
                            op == "monitor-suspend"
                        )
                    ));
                }
                o.push_str("</tr>");
            }
        }
        o.push_str("</tbody></table></div>");
    }
    o.push_str("</section>");
    if !st.mirrors.is_empty() {
        o.push_str("<section aria-labelledby=\"h-mir\"><h2 id=\"h-mir\">Mirror disks</h2><div class=\"table-wrap\" tabindex=\"0\" role=\"region\" aria-label=\"Mirror disks table\"><table><thead><tr><th scope=\"col\">Resource</th><th scope=\"col\">Role</th><th scope=\"col\">Link</th><th scope=\"col\">Disk</th><th scope=\"col\">In sync</th></tr></thead><tbody>");
        for m in &st.mirrors {
            o.push_str(&format!(
                "<tr><th scope=\"row\">{}/{}</th><td>{}</td><td>{}</td><td>{} / peer {}</td><td>{}</td></tr>",
                esc(&m.group),
                esc(&m.resource),
                esc(&m.role),
                badge(&m.connection),
                esc(&m.disk),
                esc(m.peer_disk.as_deref().unwrap_or("?")),
                if m.in_sync {
                    "yes".to_string()
                } else {
                    format!("no ({} bytes behind{})", m.out_of_sync_bytes, m.resync_pct.map(|p| format!(", resync {p}%")).unwrap_or_default())
                }
            ));
        }
        o.push_str("</tbody></table></div></section>");
    }
    o.push_str("<section aria-labelledby=\"h-sinks\"><h2 id=\"h-sinks\">Notification sinks</h2>");
    if st.sinks.is_empty() {
        o.push_str("<p>Events go to the alert log only.</p>");
    } else {
        o.push_str("<div class=\"table-wrap\" tabindex=\"0\" role=\"region\" aria-label=\"Notification sinks table\"><table><thead><tr><th scope=\"col\">Sink</th><th scope=\"col\">Delivered</th><th scope=\"col\">Dropped</th><th scope=\"col\">Queued</th><th scope=\"col\">Last error</th></tr></thead><tbody>");
        for k in &st.sinks {
            o.push_str(&format!(
                "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&k.name),
                k.delivered,
                k.dropped,
                k.queued,
                esc(k.last_error.as_deref().unwrap_or(""))
            ));
        }
        o.push_str("</tbody></table></div>");
    }
    o.push_str("</section>");
    o
}

/// The status with the moving parts (ages) removed: what the live part's ETag is over.
fn etag_basis(st: &AgentStatus, peers: &[PeerView], role: Caller) -> String {
    let mut v = serde_json::to_value(&st.engine).unwrap_or_default();
    if let Some(groups) = v.get_mut("groups").and_then(|g| g.as_array_mut()) {
        for g in groups {
            if let Some(m) = g.as_object_mut() {
                // Changes in whole minutes only (what the page shows past 2 minutes).
                let ago = m
                    .get("since_ms_ago")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0);
                m.insert("since_ms_ago".into(), (ago / 60_000).into());
            }
        }
    }
    if let Some(servers) = v.get_mut("servers").and_then(|g| g.as_array_mut()) {
        for srv in servers {
            if let Some(paths) = srv.get_mut("paths").and_then(|p| p.as_array_mut()) {
                for p in paths {
                    if let Some(m) = p.as_object_mut() {
                        m.remove("last_heard_ms_ago");
                    }
                }
            }
        }
    }
    if let Some(m) = v.as_object_mut() {
        m.remove("timeout_override_remaining_ms");
    }
    let sinks = serde_json::to_string(&st.sinks).unwrap_or_default();
    let mirrors = serde_json::to_string(&st.mirrors).unwrap_or_default();
    let peer_monitors: Vec<(&str, Option<&Vec<baton_core::engine::MonitorStatus>>)> = peers
        .iter()
        .map(|p| {
            (
                p.server.as_str(),
                p.status.as_ref().map(|x| &x.engine.monitors),
            )
        })
        .collect();
    let peer_monitors = serde_json::to_string(&peer_monitors).unwrap_or_default();
    format!("{v}{sinks}{mirrors}{peer_monitors}{}", role.as_str())
}

#[derive(Debug, Deserialize, Default)]
struct Flash {
    #[serde(default)]
    msg: Option<String>,
    #[serde(default)]
    err: Option<String>,
}

async fn dashboard(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    q: Result<Query<Flash>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let sess = match require(&s, &headers) {
        Ok(x) => x,
        Err(to) => return redirect(to),
    };
    let Some(st) = s.status().await else {
        return html(
            StatusCode::SERVICE_UNAVAILABLE,
            page(
                &s,
                "Dashboard",
                Some(&sess),
                "/ui/",
                "<p>The agent is stopping.</p>",
            ),
        );
    };
    let flash = match q.ok().map(|Query(f)| f) {
        Some(Flash { err: Some(e), .. }) => format!("<p class=\"error\">{}</p>", esc(&e)),
        Some(Flash { msg: Some(m), .. }) => format!("<p class=\"ok\">{}</p>", esc(&m)),
        _ => String::new(),
    };
    let peers = peer_views(&s).await;
    let live = live_html(&s, &st, &peers, &sess);
    let etag = etag_of(&etag_basis(&st, &peers, sess.role));
    let body = format!(
        "<div id=\"flash\" role=\"status\" aria-live=\"polite\">{flash}</div>\
         <p class=\"note\">Updated every 2 seconds. <span id=\"updated\"></span></p>\
         <div id=\"live\" data-etag=\"{}\">{live}</div>",
        esc(&etag)
    );
    html(
        StatusCode::OK,
        page(&s, "Dashboard", Some(&sess), "/ui/", &body),
    )
}

async fn live(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let sess = match session(&s, &headers) {
        Auth::Ok(x) => x,
        Auth::Expired => {
            return crate::api::error(
                StatusCode::UNAUTHORIZED,
                "session-expired",
                "the Web UI session expired: log in again",
            )
        }
        Auth::None => {
            return crate::api::error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "log in to the Web UI first",
            )
        }
    };
    let Some(st) = s.status().await else {
        return crate::api::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "agent-stopping",
            "the agent is stopping",
        );
    };
    let peers = peer_views(&s).await;
    let etag = etag_of(&etag_basis(&st, &peers, sess.role));
    let tag = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"\""));
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    if matches {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        r.headers_mut().insert(header::ETAG, tag);
        return r;
    }
    let body = live_html(&s, &st, &peers, &sess);
    let mut r = html(StatusCode::OK, body);
    r.headers_mut().insert(header::ETAG, tag);
    r
}

// ---------------------------------------------------------------------------------------
// Alert log, failovers, events reference
// ---------------------------------------------------------------------------------------

/// The last `n` events of every server that answers (this one's from its log), newest
/// first, and the servers that did not answer.
async fn all_alerts(s: &Shared, n: usize) -> (Vec<Event>, Vec<String>) {
    let reader = s.alert_reader.clone();
    let mut out = tokio::task::spawn_blocking(move || reader.tail(n))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let mut missing = Vec::new();
    for (name, r) in from_peers::<Vec<Event>>(s, &format!("/v1/alerts?tail={n}")).await {
        match r {
            Some(evs) => out.extend(evs),
            None => missing.push(name),
        }
    }
    out.sort_by(|a, b| b.time_ms.cmp(&a.time_ms).then(b.seq.cmp(&a.seq)));
    (out, missing)
}

fn doc_link(s: &Shared, id: &str) -> String {
    let anchor = id.to_lowercase();
    match &s.config().notify.docs_url {
        Some(u) => format!("{}#{anchor}", u.trim_end_matches('#')),
        None => format!("/ui/events#{anchor}"),
    }
}

#[derive(Debug, Deserialize, Default)]
struct AlertFilter {
    #[serde(default)]
    severity: String,
    #[serde(default)]
    group: String,
    #[serde(default)]
    server: String,
    #[serde(default)]
    q: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    limit: Option<usize>,
}

fn select(name: &str, label: &str, current: &str, options: &[String]) -> String {
    let opts: String = std::iter::once(String::new())
        .chain(options.iter().cloned())
        .map(|o| {
            format!(
                "<option value=\"{0}\"{1}>{2}</option>",
                esc(&o),
                if o == current { " selected" } else { "" },
                if o.is_empty() {
                    "any".to_string()
                } else {
                    esc(&o)
                }
            )
        })
        .collect();
    format!("<p><label for=\"f-{name}\">{label}</label> <select id=\"f-{name}\" name=\"{name}\">{opts}</select></p>")
}

async fn alerts(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    q: Result<Query<AlertFilter>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let sess = match require(&s, &headers) {
        Ok(x) => x,
        Err(to) => return redirect(to),
    };
    let f = q.map(|Query(f)| f).unwrap_or_default();
    let limit = f.limit.unwrap_or(500).clamp(1, 5000);
    let (evs, missing) = all_alerts(&s, limit).await;
    let min_sev: Option<Severity> = f.severity.parse().ok();
    let since = parse_local(&f.since);
    let until = parse_local(&f.until);
    let needle = f.q.to_lowercase();
    let shown: Vec<&Event> = evs
        .iter()
        .filter(|e| min_sev.is_none_or(|m| e.severity >= m))
        .filter(|e| f.group.is_empty() || e.group.as_deref() == Some(f.group.as_str()))
        .filter(|e| f.server.is_empty() || e.server == f.server)
        .filter(|e| since.is_none_or(|t| e.time_ms >= t))
        .filter(|e| until.is_none_or(|t| e.time_ms < t + 60_000))
        .filter(|e| {
            needle.is_empty()
                || e.message.to_lowercase().contains(&needle)
                || e.id.to_lowercase().contains(&needle)
        })
        .collect();
    let groups: Vec<String> = s.config().groups.iter().map(|g| g.name.clone()).collect();
    let servers: Vec<String> = s.config().servers.iter().map(|g| g.name.clone()).collect();
    let sevs: Vec<String> = ["info", "warning", "error", "critical"]
        .iter()
        .map(|x| x.to_string())
        .collect();
    let mut o = format!(
        "<form method=\"get\" action=\"/ui/alerts\" class=\"filters\" role=\"search\" aria-label=\"Filter the alert log\">\
         <p><label for=\"f-q\">Search</label> <input id=\"f-q\" name=\"q\" value=\"{}\" type=\"search\"></p>{}{}{}\
         <p><label for=\"f-since\">From (UTC)</label> <input id=\"f-since\" name=\"since\" type=\"datetime-local\" value=\"{}\"></p>\
         <p><label for=\"f-until\">To (UTC)</label> <input id=\"f-until\" name=\"until\" type=\"datetime-local\" value=\"{}\"></p>\
         <p><button type=\"submit\">Filter</button> <a href=\"/ui/alerts\">Clear</a></p></form>",
        esc(&f.q),
        select("severity", "Severity at least", &f.severity, &sevs),
        select("group", "Group", &f.group, &groups),
        select("server", "Server", &f.server, &servers),
        esc(&f.since),
        esc(&f.until),
    );
    if !missing.is_empty() {
        o.push_str(&format!(
            "<p class=\"warn\">Not answering, their events are missing: {}</p>",
            esc(&missing.join(", "))
        ));
    }
    o.push_str(&format!(
        "<p>{} of the last {} events per server (newest first).</p><div class=\"table-wrap\" tabindex=\"0\" role=\"region\" aria-label=\"Alert log table\"><table class=\"alerts\"><thead><tr><th scope=\"col\">Time (UTC)</th><th scope=\"col\">Server</th><th scope=\"col\">Severity</th><th scope=\"col\">Event</th><th scope=\"col\">Message</th></tr></thead><tbody>",
        shown.len(),
        limit
    ));
    for e in shown {
        let sev = e.severity.as_str();
        o.push_str(&format!(
            "<tr class=\"sev-{sev}\"><td>{}</td><td>{}</td><td>{}</td><td><a class=\"event-id\" href=\"{}\">{}</a></td><td>{}</td></tr>",
            utc(e.time_ms),
            esc(&e.server),
            badge(match sev { "info" => "info", "warning" => "warning", _ => "error" }).replace(">error<", &format!(">{sev}<")),
            esc(&doc_link(&s, &e.id)),
            esc(&e.id),
            esc(&e.message)
        ));
    }
    o.push_str("</tbody></table></div>");
    html(
        StatusCode::OK,
        page(&s, "Alert log", Some(&sess), "/ui/alerts", &o),
    )
}

/// One failover as the events tell it, on the server that took the group over.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    pub group: String,
    pub from: Option<String>,
    pub to: String,
    pub start_ms: u64,
    /// (phase, ms), in order.
    pub phases: Vec<(&'static str, u64)>,
    pub total_ms: Option<u64>,
    pub epoch: Option<u64>,
    /// `failover` (the group's server was lost) or `move` (an operator's move or a
    /// failback: the old server stopped the group first).
    pub kind: &'static str,
}

/// Failovers from events (any order, any servers): the same phases as the metrics.
pub fn timelines(evs: &[Event]) -> Vec<Timeline> {
    let mut evs: Vec<&Event> = evs.iter().collect();
    evs.sort_by_key(|e| (e.time_ms, e.seq));
    let mut out = Vec::new();
    for (i, fo) in evs.iter().enumerate() {
        if fo.id != events::GROUP_FAILOVER.code() {
            continue;
        }
        let group = fo.group.clone().unwrap_or_default();
        let server = fo.server.clone();
        let same = |e: &&&Event| e.server == server && e.group.as_deref() == Some(group.as_str());
        let down = fo.peer.as_ref().and_then(|p| {
            evs[..i].iter().rev().find(|e| {
                e.server == server
                    && e.id == events::SERVER_DOWN.code()
                    && e.peer.as_ref() == Some(p)
            })
        });
        let after = &evs[i + 1..];
        let activating = after
            .iter()
            .find(|e| same(e) && e.id == events::GROUP_ACTIVATING.code());
        let activated = after.iter().find(|e| {
            same(e)
                && (e.id == events::GROUP_ACTIVATED.code()
                    || e.id == events::GROUP_ACTIVATION_FAILED.code())
        });
        let timeout = down
            .and_then(|d| d.fields.get("timeout_ms"))
            .and_then(serde_json::Value::as_u64);
        let mut phases = Vec::new();
        let start = match (down, timeout) {
            (Some(d), Some(t)) => {
                phases.push(("Detection", t));
                phases.push(("Decision", fo.time_ms.saturating_sub(d.time_ms)));
                d.time_ms.saturating_sub(t)
            }
            _ => fo.time_ms,
        };
        if let Some(a) = activating {
            phases.push(("Claim", a.time_ms.saturating_sub(fo.time_ms)));
            if let Some(b) = activated {
                phases.push(("Activation", b.time_ms.saturating_sub(a.time_ms)));
            }
        }
        let ok = activated.is_some_and(|b| b.id == events::GROUP_ACTIVATED.code());
        out.push(Timeline {
            group,
            from: fo.peer.clone(),
            to: server,
            start_ms: start,
            total_ms: ok.then(|| activated.map_or(0, |b| b.time_ms.saturating_sub(start))),
            phases,
            epoch: activated.and_then(|b| b.epoch),
            kind: "failover",
        });
    }
    out.extend(move_timelines(&evs));
    out.sort_by_key(|t| t.start_ms);
    out.reverse();
    out
}

/// Moves (an operator's `group move`, a failback) from events sorted by time: the
/// request, the old server stopping the group, the new one claiming and starting it.
/// Phases span servers, so they are as exact as the servers' clocks agree.
fn move_timelines(evs: &[&Event]) -> Vec<Timeline> {
    let mut out = Vec::new();
    for (i, mv) in evs.iter().enumerate() {
        if mv.id != events::GROUP_MOVE.code() {
            continue;
        }
        let group = mv.group.clone().unwrap_or_default();
        let Some(to) = mv
            .fields
            .get("to")
            .and_then(serde_json::Value::as_str)
            .map(String::from)
        else {
            continue;
        };
        let ours = |e: &&&Event, def: &baton_core::EventDef| {
            e.group.as_deref() == Some(group.as_str()) && e.id == def.code()
        };
        // Up to the group's next move or failover: what follows belongs to that one.
        let after = &evs[i + 1..];
        let end = after
            .iter()
            .position(|e| ours(&e, &events::GROUP_MOVE) || ours(&e, &events::GROUP_FAILOVER))
            .unwrap_or(after.len());
        let after = &after[..end];
        // The first stop of the group elsewhere than the target, after the request.
        let Some((di, deactivating)) = after
            .iter()
            .enumerate()
            .find(|(_, e)| ours(e, &events::GROUP_DEACTIVATING) && e.server != to)
        else {
            continue;
        };
        let from = deactivating.server.clone();
        let rest = &after[di + 1..];
        let deactivated = rest
            .iter()
            .find(|e| ours(e, &events::GROUP_DEACTIVATED) && e.server == from);
        let activating = rest
            .iter()
            .find(|e| ours(e, &events::GROUP_ACTIVATING) && e.server == to);
        let activated = rest.iter().find(|e| {
            e.server == to
                && (ours(e, &events::GROUP_ACTIVATED) || ours(e, &events::GROUP_ACTIVATION_FAILED))
        });
        let mut phases = vec![("Request", deactivating.time_ms.saturating_sub(mv.time_ms))];
        if let Some(d) = deactivated {
            phases.push((
                "Deactivation",
                d.time_ms.saturating_sub(deactivating.time_ms),
            ));
            if let Some(a) = activating {
                phases.push(("Claim", a.time_ms.saturating_sub(d.time_ms)));
                if let Some(b) = activated {
                    phases.push(("Activation", b.time_ms.saturating_sub(a.time_ms)));
                }
            }
        }
        let ok = activated.is_some_and(|b| b.id == events::GROUP_ACTIVATED.code());
        out.push(Timeline {
            group,
            from: Some(from),
            to,
            start_ms: mv.time_ms,
            total_ms: ok.then(|| activated.map_or(0, |b| b.time_ms.saturating_sub(mv.time_ms))),
            phases,
            epoch: activated.and_then(|b| b.epoch),
            kind: "move",
        });
    }
    out
}

async fn failovers(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let sess = match require(&s, &headers) {
        Ok(x) => x,
        Err(to) => return redirect(to),
    };
    let (evs, missing) = all_alerts(&s, 2000).await;
    let tls = timelines(&evs);
    let mut o = String::from("<p>Each failover as the server taking the group over recorded it: detection (the heartbeat timeout), decision (takeover wait and placement), claim (the new epoch acknowledged by a quorum), activation (the resources started). The same phases as the <code>baton_failover_phase_seconds</code> metric. Each move (an operator's move, a failback): request (until the old server begins to stop the group), deactivation, claim, activation; its phases span two servers' clocks.</p>");
    if !missing.is_empty() {
        o.push_str(&format!(
            "<p class=\"warn\">Not answering, their failovers are missing: {}</p>",
            esc(&missing.join(", "))
        ));
    }
    if tls.is_empty() {
        o.push_str("<p id=\"no-failover\">No failover in the recent events.</p>");
    }
    for t in &tls {
        let total = t
            .total_ms
            .unwrap_or_else(|| t.phases.iter().map(|p| p.1).sum());
        o.push_str(&format!(
            "<article class=\"timeline\" data-group=\"{g}\" data-kind=\"{kind}\"><h2>Group {g}: {} → {} ({kind}) <small>{} UTC</small></h2><p>{}{}</p><ol class=\"phases\">",
            esc(t.from.as_deref().unwrap_or("?")),
            esc(&t.to),
            utc(t.start_ms),
            match t.total_ms {
                Some(ms) => format!("Online again after <strong class=\"total\">{ms} ms</strong>"),
                None => "<strong>Not activated</strong> (failed or still in progress)".into(),
            },
            t.epoch.map(|e| format!(", epoch {e}")).unwrap_or_default(),
            g = esc(&t.group),
            kind = t.kind,
        ));
        for (name, ms) in &t.phases {
            let pct = (ms * 100).checked_div(total.max(1)).unwrap_or(0).min(100);
            let step = (pct / 5) * 5;
            o.push_str(&format!(
                "<li><span class=\"phase\">{name}</span> <span class=\"ms\">{ms} ms</span><span class=\"bar w{step}\" aria-hidden=\"true\"></span></li>"
            ));
        }
        o.push_str("</ol></article>");
    }
    html(
        StatusCode::OK,
        page(&s, "Failovers", Some(&sess), "/ui/failovers", &o),
    )
}

async fn events_ref(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let sess = match require(&s, &headers) {
        Ok(x) => x,
        Err(to) => return redirect(to),
    };
    let mut o = String::from("<p>Every event Baton raises, with its cause and what to do (the same text as <code>baton events</code> and docs/events.md).</p>");
    for d in events::CATALOGUE {
        let code = d.code();
        o.push_str(&format!(
            "<section class=\"event\" id=\"{}\" tabindex=\"-1\"><h2>{code} {}</h2><p><span class=\"badge {}\">{}</span> module <code>{}</code></p><p><strong>Cause.</strong> {}</p><p><strong>Action.</strong> {}</p></section>",
            code.to_lowercase(),
            esc(d.title),
            match d.severity { Severity::Info => "idle", Severity::Warning => "warn", _ => "bad" },
            d.severity.as_str(),
            esc(d.module),
            esc(d.cause),
            esc(d.action),
        ));
    }
    html(
        StatusCode::OK,
        page(&s, "Events reference", Some(&sess), "/ui/events", &o),
    )
}

// ---------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------

#[derive(Debug, Deserialize, Default)]
struct OpForm {
    #[serde(default)]
    csrf: String,
    op: String,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    monitor: Option<String>,
    #[serde(default)]
    heartbeat: Option<String>,
    #[serde(default)]
    factor: Option<String>,
    #[serde(default)]
    duration: Option<String>,
    #[serde(default)]
    confirm: Option<String>,
}

/// The API request an operation is, and its description for people.
fn op_request(f: &OpForm) -> Result<(String, serde_json::Value, String), String> {
    let need = |v: &Option<String>, what: &str| {
        v.as_deref()
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("`{}` needs a {what}", f.op))
    };
    let dur = |v: &Option<String>, what: &str| -> Result<u64, String> {
        let t = need(v, what)?;
        humantime::parse_duration(&t)
            .map_err(|e| format!("{what} `{t}`: {e}"))
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    };
    Ok(match f.op.as_str() {
        "group-start" => {
            let g = need(&f.group, "group")?;
            (
                format!("/v1/groups/{g}/start"),
                serde_json::json!({}),
                format!("start group {g}"),
            )
        }
        "group-stop" => {
            let g = need(&f.group, "group")?;
            (
                format!("/v1/groups/{g}/stop"),
                serde_json::json!({}),
                format!("stop group {g}"),
            )
        }
        "group-move" => {
            let g = need(&f.group, "group")?;
            let to = need(&f.to, "target server")?;
            (
                format!("/v1/groups/{g}/move"),
                serde_json::json!({"to": to}),
                format!("move group {g} to {to}"),
            )
        }
        "cluster-suspend" | "cluster-resume" | "timeout-clear" => (
            "/v1/commands".into(),
            serde_json::json!({"command": f.op}),
            f.op.replace('-', " "),
        ),
        "monitor-suspend" | "monitor-resume" => {
            let m = need(&f.monitor, "monitor")?;
            (
                "/v1/commands".into(),
                serde_json::json!({"command": f.op, "monitor": m}),
                format!("{} monitor {m}", f.op.trim_start_matches("monitor-")),
            )
        }
        "timeout-set" => {
            let hb = dur(&f.heartbeat, "heartbeat timeout")?;
            let factor: u32 = need(&f.factor, "monitor factor")?
                .parse()
                .map_err(|_| "the monitor factor is a whole percentage, e.g. 300".to_string())?;
            let d = dur(&f.duration, "duration")?;
            (
                "/v1/commands".into(),
                serde_json::json!({"command": "timeout-set", "heartbeat_timeout_ms": hb, "monitor_factor_pct": factor, "duration_ms": d}),
                format!(
                    "set temporary timeouts: heartbeat {hb} ms, monitors ×{factor}%, for {d} ms"
                ),
            )
        }
        other => return Err(format!("unknown operation `{other}`")),
    })
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

fn op_answer(json: bool, code: StatusCode, ok: bool, message: &str) -> Response {
    if json {
        return (
            code,
            axum::Json(serde_json::json!({"ok": ok, "message": message})),
        )
            .into_response();
    }
    let q = serde_urlencoded::to_string([(if ok { "msg" } else { "err" }, message)])
        .unwrap_or_default();
    redirect(&format!("/ui/?{q}"))
}

async fn op(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let from = peer_of(req.extensions());
    let headers = req.headers().clone();
    let json = wants_json(&headers);
    let body = match axum::body::to_bytes(req.into_body(), MAX_FORM).await {
        Ok(b) => b,
        Err(_) => {
            return if json {
                crate::api::error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload-too-large",
                    format!("the form is larger than {MAX_FORM} bytes: nothing was done"),
                )
            } else {
                too_large()
            }
        }
    };
    let sess = match session(&s, &headers) {
        Auth::Ok(x) => x,
        Auth::Expired if json => {
            return crate::api::error(
                StatusCode::UNAUTHORIZED,
                "session-expired",
                "the Web UI session expired: log in again; nothing was done",
            )
        }
        Auth::Expired => return redirect("/ui/login?expired=1"),
        Auth::None if json => {
            return crate::api::error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "log in to the Web UI first; nothing was done",
            )
        }
        Auth::None => return redirect("/ui/login"),
    };
    let f: OpForm = match serde_urlencoded::from_bytes(&body) {
        Ok(f) => f,
        Err(e) => {
            return op_answer(
                json,
                StatusCode::BAD_REQUEST,
                false,
                &format!("the form is not valid ({e}): nothing was done"),
            )
        }
    };
    // CSRF: the form's token must be the session's, and a browser's Origin this host.
    if cross_site(&headers)
        || !crate::tokens::constant_time_eq(f.csrf.as_bytes(), sess.csrf.as_bytes())
    {
        tracing::warn!(user = %sess.user, from = %from, "Web UI operation refused: CSRF token or origin mismatch");
        let msg = "refused: the request did not come from this Web UI's own page (CSRF check); nothing was done";
        return if json {
            crate::api::error(StatusCode::FORBIDDEN, "csrf", msg)
        } else {
            html(StatusCode::FORBIDDEN, page(&s, "Refused", Some(&sess), "", &format!("<p class=\"error\">{}</p><p><a href=\"/ui/\">Back to the dashboard</a></p>", esc(msg))))
        };
    }
    if sess.role < Caller::Operator {
        return op_answer(json, StatusCode::FORBIDDEN, false, "a read token may only look: log in with an operator token to run operations; nothing was done");
    }
    let (path, payload, what) = match op_request(&f) {
        Ok(x) => x,
        Err(m) => {
            return op_answer(
                json,
                StatusCode::BAD_REQUEST,
                false,
                &format!("{m}; nothing was done"),
            )
        }
    };
    if f.confirm.as_deref() != Some("yes") {
        // Without the script: a confirmation page with the same form, confirmed.
        let mut fields = String::new();
        for (k, v) in
            serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body).unwrap_or_default()
        {
            if k != "confirm" {
                fields.push_str(&format!(
                    "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                    esc(&k),
                    esc(&v)
                ));
            }
        }
        let o = format!(
            "<form method=\"post\" action=\"/ui/op\">{fields}<input type=\"hidden\" name=\"confirm\" value=\"yes\"><p>Do you want to <strong>{}</strong>?</p><p><button type=\"submit\" class=\"danger\">Confirm</button> <a href=\"/ui/\">Cancel</a></p></form>",
            esc(&what)
        );
        return html(StatusCode::OK, page(&s, "Confirm", Some(&sess), "", &o));
    }
    // Through the API's own router, as the CLI's requests go (same checks, same codes),
    // with the session's role as the caller.
    let role = if sess.role >= Caller::Operator {
        ApiRole::Operator
    } else {
        ApiRole::Read
    };
    let mut api_req = Request::builder()
        .method("POST")
        .uri(&path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from(payload.to_string()))
        .unwrap_or_default();
    api_req
        .extensions_mut()
        .insert(crate::listen::LocalCaller(role));
    let answer = match tower::ServiceExt::oneshot(crate::api::router(s.clone()), api_req).await {
        Ok(r) => r,
        Err(e) => match e {},
    };
    let status = answer.status();
    let bytes = axum::body::to_bytes(answer.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let ok = status.is_success();
    let result = if ok {
        "accepted".to_string()
    } else {
        format!(
            "refused ({}): {}",
            v["error"]["code"].as_str().unwrap_or("error"),
            v["error"]["message"].as_str().unwrap_or("")
        )
    };
    s.raise(
        Event::new(
            &events::WEBUI_OPERATION,
            format!("{what} from the Web UI by {}: {result}", sess.who()),
        )
        .field("user", sess.user.clone())
        .field("role", sess.role.as_str())
        .field("from", sess.from.clone())
        .field("operation", f.op.clone())
        .field("accepted", ok),
    );
    let message = if ok {
        format!("Done: {what} (accepted; the dashboard follows it)")
    } else {
        format!("Not done: {what}: {result}")
    };
    op_answer(json, if ok { StatusCode::OK } else { status }, ok, &message)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn dates_and_escaping() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_796_400_505_000), "2026-12-04 16:08:25");
        assert_eq!(parse_local("2026-12-04T16:08"), Some(1_796_400_480_000));
        assert_eq!(
            parse_local("2024-02-29T00:00").map(utc),
            Some("2024-02-29 00:00:00".into())
        );
        assert_eq!(parse_local("nope"), None);
        assert_eq!(parse_local("2026-13-01T00:00"), None);
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert!(valid_user("Alice Smith"));
        assert!(!valid_user("<script>"));
        assert!(!valid_user(""));
    }

    fn ev(id: &baton_core::EventDef, server: &str, t: u64) -> Event {
        let mut e = Event::new(id, "x");
        e.server = server.into();
        e.time_ms = t;
        e.group = Some("web".into());
        e
    }

    #[test]
    fn failover_timelines_from_events() {
        let mut down = ev(&events::SERVER_DOWN, "node-2", 10_000);
        down.group = None;
        down.peer = Some("node-1".into());
        down.fields.insert("timeout_ms".into(), 1000.into());
        let mut fo = ev(&events::GROUP_FAILOVER, "node-2", 11_100);
        fo.peer = Some("node-1".into());
        let act = ev(&events::GROUP_ACTIVATING, "node-2", 11_110);
        let mut done = ev(&events::GROUP_ACTIVATED, "node-2", 11_150);
        done.epoch = Some(2);
        // Another server's events do not mix in.
        let other = ev(&events::GROUP_ACTIVATED, "node-3", 11_120);
        let t = timelines(&[done, other, act, fo, down]);
        assert_eq!(t.len(), 1);
        let t = &t[0];
        assert_eq!(
            (t.from.as_deref(), t.to.as_str()),
            (Some("node-1"), "node-2")
        );
        assert_eq!(
            t.phases,
            vec![
                ("Detection", 1000),
                ("Decision", 1100),
                ("Claim", 10),
                ("Activation", 40)
            ]
        );
        assert_eq!(t.total_ms, Some(2150));
        assert_eq!(t.epoch, Some(2));
        assert_eq!(t.kind, "failover");
    }

    #[test]
    fn move_timelines_from_events() {
        // alice moves web from node-1 to node-2 (the request is recorded on node-3).
        let mut mv = ev(&events::GROUP_MOVE, "node-3", 20_000);
        mv.fields.insert("to".into(), "node-2".into());
        let stopping = ev(&events::GROUP_DEACTIVATING, "node-1", 20_030);
        let stopped = ev(&events::GROUP_DEACTIVATED, "node-1", 20_230);
        let claiming = ev(&events::GROUP_ACTIVATING, "node-2", 20_260);
        let mut started = ev(&events::GROUP_ACTIVATED, "node-2", 20_300);
        started.epoch = Some(5);
        // A later move back that never started: a timeline of its own, not activated.
        let mut back = ev(&events::GROUP_MOVE, "node-3", 30_000);
        back.fields.insert("to".into(), "node-1".into());
        let stopping2 = ev(&events::GROUP_DEACTIVATING, "node-2", 30_010);
        let t = timelines(&[started, stopping2, back, claiming, stopped, stopping, mv]);
        assert_eq!(t.len(), 2);
        let (later, first) = (&t[0], &t[1]);
        assert_eq!(first.kind, "move");
        assert_eq!(
            (first.from.as_deref(), first.to.as_str()),
            (Some("node-1"), "node-2")
        );
        assert_eq!(
            first.phases,
            vec![
                ("Request", 30),
                ("Deactivation", 200),
                ("Claim", 30),
                ("Activation", 40)
            ]
        );
        assert_eq!((first.total_ms, first.epoch), (Some(300), Some(5)));
        assert_eq!(
            (later.from.as_deref(), later.to.as_str(), later.total_ms),
            (Some("node-2"), "node-1", None)
        );
        // A move that stopped nothing (already there) is no timeline.
        let mut noop = ev(&events::GROUP_MOVE, "node-1", 40_000);
        noop.fields.insert("to".into(), "node-1".into());
        assert!(timelines(&[noop]).is_empty());
    }

    #[test]
    fn an_expired_or_unknown_session_goes_to_the_login_page() {
        use super::super::session::Sessions;
        let sessions = Sessions::new(Duration::from_secs(3600));
        let (id, _) = sessions.create("alice", Caller::Operator, "127.0.0.1");
        let with = |cookie: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::COOKIE, HeaderValue::from_str(cookie).unwrap());
            h
        };
        let mine = with(&format!("theme=dark; {COOKIE}={id}"));
        assert_eq!(require_in(&sessions, &mine).unwrap().user, "alice");
        sessions.expire(&id);
        assert_eq!(
            require_in(&sessions, &mine).unwrap_err(),
            "/ui/login?expired=1"
        );
        // Once seen expired it is gone: an unknown session.
        assert_eq!(require_in(&sessions, &mine).unwrap_err(), "/ui/login");
        assert_eq!(
            require_in(&sessions, &with("baton_session=forged")).unwrap_err(),
            "/ui/login"
        );
        assert_eq!(
            require_in(&sessions, &HeaderMap::new()).unwrap_err(),
            "/ui/login"
        );
    }

    #[test]
    fn operations_become_api_requests() {
        let f = |op: &str, kv: &[(&str, &str)]| {
            let mut pairs = vec![("op", op)];
            pairs.extend_from_slice(kv);
            let q = serde_urlencoded::to_string(&pairs).unwrap();
            op_request(&serde_urlencoded::from_str::<OpForm>(&q).unwrap())
        };
        let (p, b, w) = f("group-move", &[("group", "web"), ("to", "node-2")]).unwrap();
        assert_eq!(
            (p.as_str(), w.as_str()),
            ("/v1/groups/web/move", "move group web to node-2")
        );
        assert_eq!(b, serde_json::json!({"to": "node-2"}));
        let (_, b, _) = f(
            "timeout-set",
            &[("heartbeat", "30s"), ("factor", "300"), ("duration", "2h")],
        )
        .unwrap();
        assert_eq!(b["heartbeat_timeout_ms"], 30_000);
        assert_eq!(b["duration_ms"], 7_200_000);
        assert!(f("group-move", &[("group", "web")])
            .unwrap_err()
            .contains("target server"));
        assert!(f(
            "timeout-set",
            &[("heartbeat", "soon"), ("factor", "3"), ("duration", "1h")]
        )
        .is_err());
        assert!(f("cluster-stop", &[])
            .unwrap_err()
            .contains("unknown operation"));
    }
}
