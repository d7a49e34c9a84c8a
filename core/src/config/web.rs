//! `[metrics.prometheus]` (the agent's `/metrics` endpoint and who may scrape it) and
//! `[api.webui]` (the Web UI the agent serves on its API port).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::diagnostics::{k, Diags, Seg};
use super::{ApiSection, Cidr, Dur};

/// `[metrics.prometheus]`: `GET /metrics` on the API port answers in the OpenMetrics text
/// format. A scraper is let in when its address is in `allow`, or when it presents
/// `Authorization: Bearer TOKEN` with the token of `bearer_token_file` or any API token of
/// the `read` role or above. Without the section `/metrics` answers 404.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusSection {
    /// Networks whose scrapers need no token (e.g. the Prometheus server's address). They
    /// must be allowed to connect at all: `[api] allow` is checked first.
    pub allow: Vec<Cidr>,
    /// A file holding the scrapers' bearer token (one line, at least 32 visible
    /// characters; like the key file, not readable by others). Relative paths are relative
    /// to the configuration file.
    pub bearer_token_file: Option<PathBuf>,
}

fn yes() -> bool {
    true
}

fn session_default() -> Dur {
    Dur::from_ms(8 * 3_600_000)
}

/// `[api.webui]`: the Web UI at `/ui/` on the API port (same connection limits, same
/// TLS). Operators log in with an API token of the `read` or `operator` role; the browser
/// then holds an HttpOnly session cookie, never the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebUiSection {
    /// Serve the Web UI. Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// A session ends this long after the login (the user logs in again). Default `8h`,
    /// between 1m and 7 days.
    #[serde(default = "session_default")]
    pub session_timeout: Dur,
}

impl Default for WebUiSection {
    fn default() -> Self {
        WebUiSection {
            enabled: true,
            session_timeout: session_default(),
        }
    }
}

/// The shortest and longest session.
pub const MIN_SESSION_MS: u64 = 60_000;
pub const MAX_SESSION_MS: u64 = 7 * 24 * 3_600_000;

pub(super) fn validate(d: &mut Diags<'_>, prom: Option<&PrometheusSection>, api: &ApiSection) {
    let s = &api.webui.session_timeout;
    if s.ms() < MIN_SESSION_MS || s.ms() > MAX_SESSION_MS {
        d.err(
            &[k("api"), k("webui"), k("session_timeout")],
            format!("session_timeout {s} is out of bounds: use between 1m and 7d"),
        );
    }
    let Some(p) = prom else { return };
    let base = [k("metrics"), k("prometheus")];
    if let Some(f) = &p.bearer_token_file {
        if f.as_os_str().is_empty() {
            d.err(
                &path(&base, "bearer_token_file", None),
                "bearer_token_file is empty: name the file holding the scrapers' token, or remove the key",
            );
        }
    }
    for (i, net) in p.allow.iter().enumerate() {
        let at = path(&base, "allow", Some(i));
        if net.prefix() == 0 {
            d.err(
                &at,
                format!("`{net}` lets every address scrape without a token: name the Prometheus servers' networks, or use bearer_token_file"),
            );
        } else if !api.allow.iter().any(|a| a.contains(net.addr())) {
            d.warn(
                &at,
                format!("`{net}` is not in [api] allow, so connections from it are closed before /metrics is read: add it there too"),
            );
        }
    }
}

fn path(base: &[Seg], key: &str, i: Option<usize>) -> Vec<Seg> {
    let mut p = base.to_vec();
    p.push(k(key));
    if let Some(i) = i {
        p.push(Seg::Index(i));
    }
    p
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use crate::config::tests::THREE_SERVERS as BASE;
    use crate::config::{load_str, AnyKind, Level};

    #[test]
    fn prometheus_and_webui_load() {
        let text = format!(
            "{BASE}\n[api]\nallow = [\"127.0.0.0/8\", \"10.0.5.0/24\"]\n[api.webui]\nsession_timeout = \"1h\"\n[metrics.prometheus]\nallow = [\"10.0.5.7\"]\nbearer_token_file = \"metrics.token\"\n"
        );
        let l = load_str("baton.toml", &text, &AnyKind).unwrap();
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        let p = l.config.metrics.prometheus.as_ref().unwrap();
        assert_eq!(p.allow, vec!["10.0.5.7".parse().unwrap()]);
        assert_eq!(
            p.bearer_token_file.as_deref(),
            Some(std::path::Path::new("metrics.token"))
        );
        assert!(l.config.api.webui.enabled);
        assert_eq!(l.config.api.webui.session_timeout.ms(), 3_600_000);
        // Defaults: no Prometheus endpoint, the Web UI on with 8 h sessions.
        let l = load_str("baton.toml", BASE, &AnyKind).unwrap();
        assert!(l.config.metrics.prometheus.is_none());
        assert!(l.config.api.webui.enabled);
        assert_eq!(l.config.api.webui.session_timeout.ms(), 8 * 3_600_000);
        let l = load_str(
            "baton.toml",
            &format!("{BASE}\n[metrics.prometheus]\n"),
            &AnyKind,
        )
        .unwrap();
        assert_eq!(
            l.config.metrics.prometheus,
            Some(super::PrometheusSection::default())
        );
    }

    #[test]
    fn bad_values_name_file_line_and_key() {
        let cases = [
            (
                "[metrics.prometheus]\nallow = [\"0.0.0.0/0\"]",
                "metrics.prometheus.allow[0]",
                "every address",
                Level::Error,
            ),
            (
                "[metrics.prometheus]\nallow = [\"10.0.0.0/33\"]",
                "metrics.prometheus.allow",
                "prefix length",
                Level::Error,
            ),
            (
                "[metrics.prometheus]\nbearer_token_file = \"\"",
                "metrics.prometheus.bearer_token_file",
                "is empty",
                Level::Error,
            ),
            (
                "[metrics.prometheus]\ntoken = \"x\"",
                "metrics.prometheus",
                "token",
                Level::Error,
            ),
            (
                "[api.webui]\nsession_timeout = \"10s\"",
                "api.webui.session_timeout",
                "out of bounds",
                Level::Error,
            ),
            (
                "[api.webui]\nsession_timeout = \"30d\"",
                "api.webui.session_timeout",
                "too long",
                Level::Error,
            ),
            (
                "[api.webui]\nenable = false",
                "api.webui",
                "enable",
                Level::Error,
            ),
            (
                "[metrics.prometheus]\nallow = [\"10.0.5.0/24\"]",
                "metrics.prometheus.allow[0]",
                "not in [api] allow",
                Level::Warning,
            ),
        ];
        for (section, key, words, level) in cases {
            let text = format!("{BASE}\n{section}\n");
            let diags = match load_str("baton.toml", &text, &AnyKind) {
                Ok(l) => l.warnings,
                Err(e) => e.diagnostics,
            };
            let found: Vec<_> = diags.iter().filter(|d| d.level == level).collect();
            assert_eq!(found.len(), 1, "{section}: {diags:?}");
            let d = found[0];
            assert_eq!(d.file, "baton.toml");
            assert!(d.key.starts_with(key), "{section}: key {}", d.key);
            assert!(d.message.contains(words), "{section}: {}", d.message);
            let table = section.lines().next().unwrap();
            let line = text.lines().position(|l| l == table).unwrap() + 1;
            assert!(d.line >= line, "{section}: line {} < {line}", d.line);
        }
    }
}
