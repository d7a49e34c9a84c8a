//! `GET /metrics` and `GET /healthz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::api::error;
use crate::listen::LocalCaller;
use crate::shared::Shared;

pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
}

/// Why a scrape is let in, or `None`.
fn scrape_allowed(s: &Shared, req: &Request) -> Option<&'static str> {
    let cfg = s.config();
    let p = cfg.metrics.prometheus.as_ref()?;
    if req.extensions().get::<LocalCaller>().is_some() {
        return Some("unix socket");
    }
    if let Some(ConnectInfo(addr)) = req.extensions().get::<ConnectInfo<SocketAddr>>() {
        if p.allow.iter().any(|n| n.contains(addr.ip())) {
            return Some("allowed address");
        }
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))?
        .trim();
    if let Some(t) = &s.web.scrape_token {
        if crate::tokens::constant_time_eq(presented.as_bytes(), t.as_bytes()) {
            return Some("scrape token");
        }
    }
    s.tokens.caller(presented).map(|_| "API token")
}

async fn metrics(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let Some(prom) = s.notifier.prometheus() else {
        return error(
            StatusCode::NOT_FOUND,
            "not-found",
            "/metrics is off: add a [metrics.prometheus] section to the configuration",
        );
    };
    if scrape_allowed(&s, &req).is_none() {
        tracing::info!(
            path = "/metrics",
            "scrape refused: address not allowed and no valid token"
        );
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "scraping needs an address in [metrics.prometheus] allow, or Authorization: Bearer with the scrape token or an API token",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"baton-metrics\""),
        );
        return r;
    }
    let status = s.status().await;
    let sinks = s.notifier.stats();
    let text = prom.render(status.as_ref().map(|st| &st.engine), &sinks);
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(baton_notifier::prometheus::CONTENT_TYPE),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        text,
    )
        .into_response()
}

/// `{"status": "ok"}` (200) while the agent's main loop answers within 2 s;
/// `{"status": "unavailable"}` (503) when it is stopping or stuck. No names, versions or
/// states: anyone who may connect may ask.
async fn healthz(State(s): State<Arc<Shared>>) -> Response {
    let alive = tokio::time::timeout(Duration::from_secs(2), s.engine_status())
        .await
        .ok()
        .flatten()
        .is_some_and(|st| !st.stopping);
    let (code, word) = if alive {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    };
    (
        code,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        axum::Json(serde_json::json!({ "status": word })),
    )
        .into_response()
}
