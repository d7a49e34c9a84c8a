//! Mail over SMTP (lettre): one message per delivered batch, to every recipient.
//!
//! - Security: `starttls` (the upgrade is required, never skipped), `tls` (implicit TLS,
//!   SMTPS) or `none` (plain; a local relay or tests). TLS certificates are checked
//!   against the bundled web PKI roots.
//! - Authentication: optional (`username` + the password read from `password_file`).
//! - Subject: the event's subject line for one event, else `N events, most severe: ...`.
//! - Body: the text of each event (what it means, where to read more), most severe first.
//!
//! Errors: SMTP 5xx answers (recipient refused, authentication failed) are permanent;
//! 4xx answers, connection failures and timeouts are transient.

use std::time::Duration;

use async_trait::async_trait;
use baton_core::config::MailSecurity;
use baton_core::{Event, Severity};
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::filter::EventFilter;
use crate::render;
use crate::sink::{EventSink, SinkError};

/// What the mail sink needs (the config section with the password read from its file).
#[derive(Clone)]
pub struct MailSettings {
    pub server: String,
    pub port: u16,
    pub security: MailSecurity,
    /// User name and password.
    pub credentials: Option<(String, String)>,
    pub from: String,
    pub to: Vec<String>,
    pub timeout: Duration,
    pub subject_prefix: Option<String>,
    pub docs_url: Option<String>,
    pub filter: EventFilter,
}

impl std::fmt::Debug for MailSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("MailSettings")
            .field("server", &self.server)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("user", &self.credentials.as_ref().map(|c| &c.0))
            .field("to", &self.to)
            .finish()
    }
}

/// Setting up the mail sink failed (bad address, TLS setup). `code()` is stable.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("`{0}` is not a mail address")]
    Address(String),
    #[error("cannot set up the SMTP transport: {0}")]
    Transport(String),
}

impl MailError {
    pub fn code(&self) -> &'static str {
        match self {
            MailError::Address(_) => "mail-address",
            MailError::Transport(_) => "mail-transport",
        }
    }
}

pub struct MailSink {
    name: String,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    prefix: String,
    docs_url: Option<String>,
    filter: EventFilter,
    timeout: Duration,
}

impl std::fmt::Debug for MailSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailSink").field("to", &self.to).finish()
    }
}

impl MailSink {
    pub fn new(s: &MailSettings) -> Result<MailSink, MailError> {
        let parse = |a: &str| {
            a.parse::<Mailbox>()
                .map_err(|_| MailError::Address(a.to_string()))
        };
        let from = parse(&s.from)?;
        let to =
            s.to.iter()
                .map(|a| parse(a))
                .collect::<Result<Vec<_>, _>>()?;
        let builder = match s.security {
            MailSecurity::Starttls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&s.server)
                    .map_err(|e| MailError::Transport(e.to_string()))?
            }
            MailSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&s.server)
                .map_err(|e| MailError::Transport(e.to_string()))?,
            MailSecurity::None => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(s.server.clone())
            }
        };
        let mut builder = builder.port(s.port).timeout(Some(s.timeout));
        if let Some((user, pass)) = &s.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), pass.clone()));
        }
        Ok(MailSink {
            name: "mail".into(),
            transport: builder.build(),
            from,
            to,
            prefix: s
                .subject_prefix
                .clone()
                .unwrap_or_else(|| render::DEFAULT_PREFIX.to_string()),
            docs_url: s.docs_url.clone(),
            filter: s.filter.clone(),
            timeout: s.timeout,
        })
    }

    /// Subject and body of the message for `batch` (not empty).
    pub fn compose(&self, batch: &[Event]) -> (String, String) {
        let mut order: Vec<&Event> = batch.iter().collect();
        // Most severe first, then in the order they happened.
        order.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.seq.cmp(&b.seq)));
        let first = order[0];
        let subject = if batch.len() == 1 {
            render::subject(&self.prefix, first, 200)
        } else {
            let folded: u64 = batch.iter().map(render::occurrences).sum();
            render::truncate_ascii(
                &format!(
                    "{} {}/{} {} events, most severe {} {}: {}",
                    self.prefix,
                    first.cluster,
                    first.server,
                    folded,
                    first.id,
                    first.severity,
                    first.message
                ),
                200,
            )
        };
        let mut body = String::new();
        if batch.len() > 1 {
            body.push_str(&format!(
                "{} events from server {} of cluster {}:\n\n",
                batch.len(),
                first.server,
                first.cluster
            ));
            for ev in &order {
                body.push_str(&format!("  {}\n", ev.line()));
            }
            body.push_str("\n----------------------------------------------------------------\n\n");
        }
        for (i, ev) in order.iter().enumerate() {
            if i > 0 {
                body.push_str(
                    "\n----------------------------------------------------------------\n\n",
                );
            }
            body.push_str(&render::text(ev, self.docs_url.as_deref()));
        }
        (subject, body)
    }
}

#[async_trait]
impl EventSink for MailSink {
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
        let (subject, body) = self.compose(batch);
        let mut b = Message::builder().from(self.from.clone()).subject(subject);
        for to in &self.to {
            b = b.to(to.clone());
        }
        let msg = b
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| SinkError::Permanent(format!("cannot build the message: {e}")))?;
        // lettre bounds each SMTP command; this bounds the whole exchange.
        let whole = self.timeout * 3;
        match tokio::time::timeout(whole, self.transport.send(msg)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(classify(&e)),
            Err(_) => Err(SinkError::Transient(format!(
                "SMTP exchange took longer than {} ms",
                whole.as_millis()
            ))),
        }
    }
}

fn classify(e: &lettre::transport::smtp::Error) -> SinkError {
    let msg = format!("SMTP: {e}");
    if e.is_permanent() {
        SinkError::Permanent(msg)
    } else {
        SinkError::Transient(msg)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use baton_core::events::{GROUP_ACTIVATED, GROUP_FAILOVER};

    fn settings() -> MailSettings {
        MailSettings {
            server: "127.0.0.1".into(),
            port: 2525,
            security: MailSecurity::None,
            credentials: Some(("u".into(), "secret-pw".into())),
            from: "baton@example.com".into(),
            to: vec!["a@example.com".into(), "b@example.com".into()],
            timeout: Duration::from_secs(2),
            subject_prefix: None,
            docs_url: None,
            filter: EventFilter::min(Severity::Info),
        }
    }

    #[test]
    fn debug_never_shows_the_password() {
        assert!(!format!("{:?}", settings()).contains("secret-pw"));
    }

    #[test]
    fn bad_address_is_refused() {
        let mut s = settings();
        s.to.push("nope".into());
        assert_eq!(MailSink::new(&s).unwrap_err().code(), "mail-address");
    }

    #[tokio::test]
    async fn compose_puts_the_most_severe_first() {
        let sink = MailSink::new(&settings()).unwrap();
        let mut a = Event::new(&GROUP_ACTIVATED, "group web activated on node-2");
        a.seq = 2;
        a.cluster = "prod".into();
        a.server = "node-2".into();
        let mut b = Event::new(
            &GROUP_FAILOVER,
            "group web fails over from node-1 to node-2",
        );
        b.seq = 1;
        b.cluster = "prod".into();
        b.server = "node-2".into();
        let (subject, body) = sink.compose(std::slice::from_ref(&a));
        assert_eq!(
            subject,
            "Baton prod/node-2 BTN-2102 info: group web activated on node-2"
        );
        assert!(body.starts_with("BTN-2102 (info)"));
        let (subject, body) = sink.compose(&[a, b]);
        assert!(
            subject.starts_with("Baton prod/node-2 2 events, most severe BTN-2107 warning"),
            "{subject}"
        );
        let i = body.find("BTN-2107 (warning)").unwrap();
        let j = body.find("BTN-2102 (info)").unwrap();
        assert!(i < j, "{body}");
    }

    #[tokio::test]
    async fn unreachable_server_is_transient() {
        // Nothing listens on port 9 of 127.0.0.1 (discard): connection refused.
        let mut s = settings();
        s.port = 9;
        s.credentials = None;
        let sink = MailSink::new(&s).unwrap();
        let ev = Event::new(&GROUP_FAILOVER, "x");
        let e = sink.deliver(&[ev]).await.unwrap_err();
        assert!(e.is_transient(), "{e}");
    }
}
