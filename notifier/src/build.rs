//! From the configuration to running sinks: the `[notify.*]` sections become event
//! sinks, `[metrics.cloudwatch]` the metrics pipeline, `[notify.delivery]` the
//! notifier's options. AWS sinks get their clients from the one AWS client factory
//! (`baton_cloud_client::aws::AwsClients`), like the AWS provider.
//!
//! A sink that cannot be set up (unreadable secret file, AWS client not configured in
//! time) is left out and reported as a [`SinkFailure`]: the agent runs without it and
//! raises BTN-5004.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use baton_cloud_client::aws::AwsClients;
use baton_core::config::{Config, NotifySection};
use baton_core::events::SINK_NOT_STARTED;
use baton_core::{Event, Severity};

use crate::cloudwatch::CloudWatchSink;
use crate::dispatch::NotifierOptions;
use crate::filter::EventFilter;
use crate::mail::{MailSettings, MailSink};
use crate::metrics::{system_wall_clock, MetricsOptions, MetricsPipeline};
use crate::sink::{EventSink, LogSink};
use crate::sns::SnsSink;
use crate::webhook::{system_clock, WebhookSink};

/// How long the AWS client factory may take to resolve region and credentials
/// provider at start-up (it may ask the instance metadata service).
pub const AWS_LOAD_TIMEOUT: Duration = Duration::from_secs(5);

/// A configured sink that could not be set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkFailure {
    pub sink: String,
    pub message: String,
}

impl SinkFailure {
    /// The BTN-5004 event reporting it.
    pub fn event(&self) -> Event {
        Event::new(
            &SINK_NOT_STARTED,
            format!(
                "notification sink {} not started: {}",
                self.sink, self.message
            ),
        )
        .field("sink", self.sink.clone())
    }
}

/// What [`build`] made.
#[derive(Default)]
pub struct Built {
    pub sinks: Vec<Arc<dyn EventSink>>,
    pub metrics: Option<MetricsPipeline>,
    /// The CloudWatch sink itself (also inside `metrics`), for `baton notify test`.
    pub cloudwatch: Option<Arc<CloudWatchSink>>,
    pub failures: Vec<SinkFailure>,
}

impl std::fmt::Debug for Built {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Built")
            .field(
                "sinks",
                &self
                    .sinks
                    .iter()
                    .map(|s| s.name().to_string())
                    .collect::<Vec<_>>(),
            )
            .field("metrics", &self.metrics)
            .field("failures", &self.failures)
            .finish()
    }
}

/// The names of the sinks `cfg` configures, in the order [`build`] makes them.
pub fn sink_names(cfg: &Config) -> Vec<String> {
    let n = &cfg.notify;
    let mut v = vec!["log".to_string()];
    if n.sns.is_some() {
        v.push("sns".into());
    }
    if n.mail.is_some() {
        v.push("mail".into());
    }
    for i in 0..n.webhook.len() {
        v.push(n.webhook_name(i));
    }
    if cfg.metrics.cloudwatch.is_some() {
        v.push("cloudwatch".into());
    }
    v
}

/// `[notify.delivery]` as notifier options.
pub fn options(n: &NotifySection) -> NotifierOptions {
    let d = &n.delivery;
    NotifierOptions {
        queue_len: d.queue_len,
        retry_base: d.retry_base.0,
        retry_max: d.retry_max.0,
        max_attempts: d.max_attempts,
        coalesce_window: d.coalesce_window.0,
        ..NotifierOptions::default()
    }
}

/// `path`, relative to the configuration file's directory when relative.
pub fn resolve(base_dir: &Path, path: &Path) -> PathBuf {
    if path.is_relative() {
        base_dir.join(path)
    } else {
        path.to_path_buf()
    }
}

/// The secret in `path`: its content without trailing line breaks; never empty.
pub fn read_secret(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let s = text.trim_end_matches(['\n', '\r']).to_string();
    if s.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path) {
            if m.permissions().mode() & 0o077 != 0 {
                tracing::warn!(file = %path.display(), "secret file is readable by other users; chmod 600 it");
            }
        }
    }
    Ok(s)
}

/// Build every configured sink (or only the one named `only`). `base_dir` is the
/// directory of the configuration file.
pub async fn build(cfg: &Config, server: &str, base_dir: &Path, only: Option<&str>) -> Built {
    let n = &cfg.notify;
    let wanted = |name: &str| only.is_none_or(|o| o == name);
    let docs = n.docs_url.as_deref();
    let mut out = Built::default();

    if wanted("log") {
        let min = n.log.as_ref().map_or(Severity::Info, |l| l.min_severity);
        out.sinks
            .push(Arc::new(LogSink::new().with_min_severity(min)));
    }

    let needs_aws = (n.sns.is_some() && wanted("sns"))
        || (cfg.metrics.cloudwatch.is_some() && wanted("cloudwatch"));
    let aws = if needs_aws {
        match tokio::time::timeout(AWS_LOAD_TIMEOUT, AwsClients::load(&cfg.aws)).await {
            Ok(c) => Ok(c),
            Err(_) => Err(format!(
                "the AWS client configuration (region, credentials provider) was not resolved within {} s",
                AWS_LOAD_TIMEOUT.as_secs()
            )),
        }
    } else {
        Err(String::new())
    };

    if let (Some(sns), true) = (&n.sns, wanted("sns")) {
        match &aws {
            Ok(clients) => out.sinks.push(Arc::new(SnsSink::new(
                clients,
                &sns.topic_arn,
                EventFilter::new(sns.min_severity, &sns.include, &sns.exclude),
                sns.subject_prefix.as_deref(),
                docs,
            ))),
            Err(e) => out.failures.push(SinkFailure {
                sink: "sns".into(),
                message: e.clone(),
            }),
        }
    }

    if let (Some(m), true) = (&n.mail, wanted("mail")) {
        let credentials = match (&m.username, &m.password_file) {
            (Some(u), Some(f)) => match read_secret(&resolve(base_dir, f)) {
                Ok(p) => Ok(Some((u.clone(), p))),
                Err(e) => Err(format!("password_file: {e}")),
            },
            _ => Ok(None),
        };
        let built = credentials.and_then(|credentials| {
            MailSink::new(&MailSettings {
                server: m.server.clone(),
                port: m.effective_port(),
                security: m.security,
                credentials,
                from: m.from.clone(),
                to: m.to.clone(),
                timeout: m.timeout.0,
                subject_prefix: m.subject_prefix.clone(),
                docs_url: n.docs_url.clone(),
                filter: EventFilter::new(m.min_severity, &m.include, &m.exclude),
            })
            .map_err(|e| e.to_string())
        });
        match built {
            Ok(s) => out.sinks.push(Arc::new(s)),
            Err(message) => out.failures.push(SinkFailure {
                sink: "mail".into(),
                message,
            }),
        }
    }

    for (i, w) in n.webhook.iter().enumerate() {
        let name = n.webhook_name(i);
        if !(wanted(&name) || wanted("webhook")) {
            continue;
        }
        let secret = match &w.secret_file {
            Some(f) => read_secret(&resolve(base_dir, f))
                .map(|s| Some(s.into_bytes()))
                .map_err(|e| format!("secret_file: {e}")),
            None => Ok(None),
        };
        let built = secret.and_then(|secret| {
            WebhookSink::new(
                &name,
                &w.url,
                secret,
                w.timeout.0,
                EventFilter::new(w.min_severity, &w.include, &w.exclude),
                docs,
                system_clock(),
            )
            .map_err(|e| e.to_string())
        });
        match built {
            Ok(s) => out.sinks.push(Arc::new(s)),
            Err(message) => out.failures.push(SinkFailure {
                sink: name,
                message,
            }),
        }
    }

    if let (Some(cw), true) = (&cfg.metrics.cloudwatch, wanted("cloudwatch")) {
        match &aws {
            Ok(clients) => {
                let sink = Arc::new(CloudWatchSink::new(clients, &cw.namespace));
                out.cloudwatch = Some(Arc::clone(&sink));
                out.metrics = Some(MetricsPipeline {
                    options: MetricsOptions::from_config(cw, cfg, server),
                    sink,
                    clock: system_wall_clock(),
                });
            }
            Err(e) => out.failures.push(SinkFailure {
                sink: "cloudwatch".into(),
                message: e.clone(),
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use baton_core::config::{load_str, AnyKind};

    const BASE: &str = r#"[cluster]
name = "c"
key_file = "k"

[[server]]
name = "a"
interconnects = ["127.0.0.1:7001"]
api = "127.0.0.1:7000"

[[group]]
name = "web"
servers = ["a"]
"#;

    fn config(extra: &str) -> Config {
        load_str("baton.toml", &format!("{BASE}\n{extra}"), &AnyKind)
            .unwrap()
            .config
    }

    #[tokio::test]
    async fn builds_what_is_configured_and_reports_what_cannot_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hook.secret"), "s3cret\n").unwrap();
        let cfg = config(
            r#"
[notify.mail]
server = "127.0.0.1"
port = 2525
security = "none"
username = "u"
password_file = "missing.password"
from = "a@b.c"
to = ["d@e.f"]

[[notify.webhook]]
name = "chat"
url = "http://127.0.0.1:9/x"
secret_file = "hook.secret"

[[notify.webhook]]
url = "http://127.0.0.1:9/y"
secret_file = "/nonexistent/secret"

[notify.delivery]
queue_len = 7
coalesce_window = "5s"
"#,
        );
        assert_eq!(sink_names(&cfg), vec!["log", "mail", "chat", "webhook-2"]);
        let b = build(&cfg, "a", dir.path(), None).await;
        let names: Vec<&str> = b.sinks.iter().map(|s| s.name()).collect();
        assert_eq!(names, vec!["log", "chat"]);
        assert!(b.metrics.is_none());
        assert_eq!(b.failures.len(), 2);
        assert_eq!(b.failures[0].sink, "mail");
        assert!(
            b.failures[0].message.contains("password_file"),
            "{:?}",
            b.failures
        );
        assert_eq!(b.failures[1].sink, "webhook-2");
        let ev = b.failures[0].event();
        assert_eq!(ev.id, "BTN-5004");
        assert_eq!(ev.fields["sink"], "mail");
        // Only one sink.
        let b = build(&cfg, "a", dir.path(), Some("chat")).await;
        assert_eq!(b.sinks.len(), 1);
        assert!(b.failures.is_empty());
        let o = options(&cfg.notify);
        assert_eq!(o.queue_len, 7);
        assert_eq!(o.coalesce_window, Duration::from_secs(5));
        assert_eq!(o.max_attempts, 5);
    }

    #[test]
    fn secrets_are_read_without_the_line_break_and_never_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, "abc\r\n").unwrap();
        assert_eq!(read_secret(&p).unwrap(), "abc");
        std::fs::write(&p, "\n").unwrap();
        assert!(read_secret(&p).unwrap_err().contains("is empty"));
        assert!(read_secret(&dir.path().join("none"))
            .unwrap_err()
            .contains("cannot read"));
        assert_eq!(
            resolve(Path::new("/etc/baton"), Path::new("x.secret")),
            PathBuf::from("/etc/baton/x.secret")
        );
        assert_eq!(
            resolve(Path::new("/etc/baton"), Path::new("/run/x")),
            PathBuf::from("/run/x")
        );
    }
}
