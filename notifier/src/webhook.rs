//! Webhooks: one JSON POST per delivered batch, signed with HMAC-SHA256.
//!
//! Body:
//!
//! ```json
//! {"text": "*BTN-2107* warning prod/node-2: group web fails over ...",
//!  "cluster": "prod", "server": "node-2", "timestamp": 1714564800,
//!  "count": 1, "events": [{"id": "BTN-2107", "severity": "warning", ...}]}
//! ```
//!
//! `text` is what Slack- and Teams-style incoming webhooks display (one line per event);
//! `events` has every field of each event for programs.
//!
//! Headers: `Content-Type: application/json`, `X-Baton-Timestamp: UNIX_SECONDS` (the
//! same value as `timestamp` in the signed body, so a receiver can refuse old
//! deliveries), `X-Baton-Event-Count`, and, when a secret is configured,
//! `X-Baton-Signature: sha256=HEX` where HEX is HMAC-SHA256(secret, raw body bytes).
//!
//! Answers: 2xx delivered; 408, 425, 429, 5xx, timeouts and connection failures are
//! transient; other answers (4xx, redirects, which are not followed) are permanent.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use baton_core::{Event, Severity};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::filter::EventFilter;
use crate::render;
use crate::sink::{EventSink, SinkError};

/// Wall-clock seconds since the Unix epoch (injected in tests).
pub type UnixClock = Arc<dyn Fn() -> u64 + Send + Sync>;

pub fn system_clock() -> UnixClock {
    Arc::new(|| {
        crate::clock::wall()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    })
}

/// Header names.
pub const SIGNATURE_HEADER: &str = "X-Baton-Signature";
pub const TIMESTAMP_HEADER: &str = "X-Baton-Timestamp";

/// `sha256=HEX` of HMAC-SHA256(`secret`, `body`).
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length, so new_from_slice cannot fail.
    let mut m = match <Hmac<Sha256> as Mac>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

pub struct WebhookSink {
    name: String,
    url: String,
    secret: Option<Vec<u8>>,
    client: reqwest::Client,
    filter: EventFilter,
    docs_url: Option<String>,
    clock: UnixClock,
}

impl std::fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSink")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("signed", &self.secret.is_some())
            .finish()
    }
}

impl WebhookSink {
    pub fn new(
        name: &str,
        url: &str,
        secret: Option<Vec<u8>>,
        timeout: Duration,
        filter: EventFilter,
        docs_url: Option<&str>,
        clock: UnixClock,
    ) -> Result<WebhookSink, SinkError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("baton/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SinkError::Permanent(format!("cannot build the HTTP client: {e}")))?;
        Ok(WebhookSink {
            name: name.to_string(),
            url: url.to_string(),
            secret,
            client,
            filter,
            docs_url: docs_url.map(str::to_string),
            clock,
        })
    }

    /// The JSON body for `batch` at `timestamp`.
    pub fn body(&self, batch: &[Event], timestamp: u64) -> Vec<u8> {
        let text = batch
            .iter()
            .map(render::chat_line)
            .collect::<Vec<_>>()
            .join("\n");
        let first = batch.first();
        let v = json!({
            "text": text,
            "cluster": first.map(|e| e.cluster.clone()).unwrap_or_default(),
            "server": first.map(|e| e.server.clone()).unwrap_or_default(),
            "timestamp": timestamp,
            "count": batch.len(),
            "events": batch.iter().map(|e| render::event_json(e, self.docs_url.as_deref())).collect::<Vec<_>>(),
        });
        serde_json::to_vec(&v).unwrap_or_default()
    }
}

#[async_trait]
impl EventSink for WebhookSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn min_severity(&self) -> Severity {
        self.filter.floor()
    }

    fn accepts(&self, ev: &Event) -> bool {
        self.filter.accepts(ev)
    }

    fn max_batch(&self) -> Option<usize> {
        Some(50)
    }

    async fn deliver(&self, batch: &[Event]) -> Result<(), SinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        let ts = (self.clock)();
        let body = self.body(batch, ts);
        let mut req = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, ts.to_string())
            .header("X-Baton-Event-Count", batch.len().to_string());
        if let Some(secret) = &self.secret {
            req = req.header(SIGNATURE_HEADER, signature(secret, &body));
        }
        let resp = req.body(body).send().await.map_err(|e| {
            SinkError::Transient(format!("POST {}: {}", redact(&self.url), error_chain(e)))
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp.text().await.unwrap_or_default();
        let text: String = text.chars().take(200).collect();
        let msg = format!("POST {}: HTTP {status}: {}", redact(&self.url), text.trim());
        let code = status.as_u16();
        if matches!(code, 408 | 425 | 429) || status.is_server_error() {
            Err(SinkError::Transient(msg))
        } else {
            Err(SinkError::Permanent(msg))
        }
    }
}

/// Scheme and host (with its port) only: incoming-webhook URLs carry their token in the
/// path or the query, or credentials as `user:pass@`, none of which may end up in logs
/// and events.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    // The host follows the last `@` (a password may itself contain `@`... percent-encoded
    // or not).
    let host = authority.rsplit('@').next().unwrap_or("");
    format!("{scheme}://{host}/...")
}

fn error_chain(e: reqwest::Error) -> String {
    // reqwest puts the full URL (with its token) in its messages: drop it.
    let e = e.without_url();
    let mut s = e.to_string();
    let mut cur = std::error::Error::source(&e);
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn signature_is_the_documented_hmac() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact("https://hooks.slack.com/services/T0/B0/secret?x=1"),
            "https://hooks.slack.com/..."
        );
    }

    #[test]
    fn credentials_in_urls_are_redacted() {
        for url in [
            "https://alice:s3cr3t@hooks.example.com:8443/in/tok",
            "https://alice:s3cr3t@hooks.example.com:8443",
            "https://s3cr3t@hooks.example.com:8443?k=v",
            "https://alice:p@ss@s3cr3t@hooks.example.com:8443#frag",
        ] {
            let r = redact(url);
            assert_eq!(r, "https://hooks.example.com:8443/...", "{url}");
            assert!(!r.contains("s3cr3t") && !r.contains("alice"), "{r}");
        }
    }
}
