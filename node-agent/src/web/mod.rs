//! What the agent serves besides the JSON API, on the same port: `GET /metrics`
//! (Prometheus, `[metrics.prometheus]`), `GET /healthz` (for load balancers and
//! systemd-style checks; no token, nothing sensitive), and the Web UI under `/ui/`
//! (`[api.webui]`).
//!
//! These routes are outside the API's token check: `/metrics` has its own (an allowed
//! scraper address, the scrape token or any API token), `/healthz` has none, and the UI
//! uses an HttpOnly session cookie obtained by logging in with an API token.

use std::sync::Arc;

use axum::Router;

use crate::runtime::AgentError;
use crate::shared::Shared;

mod metrics;
pub mod session;
pub mod ui;

/// The Web UI's and the scrape endpoint's state, loaded at start.
pub struct WebState {
    /// `[metrics.prometheus] bearer_token_file`'s token.
    pub scrape_token: Option<String>,
    pub sessions: session::Sessions,
    /// Failed logins per source address.
    pub logins: session::LoginGuard,
}

impl WebState {
    /// Read the scrape token file (relative to the configuration file, like the key file;
    /// the same checks as the API's token files).
    pub fn load(
        cfg: &baton_core::config::Config,
        config_file: &std::path::Path,
    ) -> Result<WebState, AgentError> {
        let scrape_token = match cfg
            .metrics
            .prometheus
            .as_ref()
            .and_then(|p| p.bearer_token_file.as_ref())
        {
            None => None,
            Some(p) => {
                let path = crate::catalog::config_path(config_file, p);
                let mut t =
                    crate::tokens::load_tokens_file(&path).map_err(|msg| AgentError::Build {
                        what: "[metrics.prometheus] bearer_token_file".into(),
                        msg,
                    })?;
                if t.len() != 1 {
                    return Err(AgentError::Build {
                        what: "[metrics.prometheus] bearer_token_file".into(),
                        msg: format!(
                            "{} holds {} tokens: write exactly one",
                            path.display(),
                            t.len()
                        ),
                    });
                }
                t.pop()
            }
        };
        Ok(WebState {
            scrape_token,
            sessions: session::Sessions::new(cfg.api.webui.session_timeout.0),
            logins: session::LoginGuard::default(),
        })
    }

    /// No scrape token, sessions of 8 hours (tests).
    pub fn empty() -> WebState {
        WebState {
            scrape_token: None,
            sessions: session::Sessions::new(std::time::Duration::from_secs(8 * 3600)),
            logins: session::LoginGuard::default(),
        }
    }
}

/// The routes outside the API's token check.
pub fn routes(shared: Arc<Shared>) -> Router {
    let mut r = metrics::routes();
    if shared.config().api.webui.enabled {
        r = r.merge(ui::routes());
    }
    r.with_state(shared)
}
