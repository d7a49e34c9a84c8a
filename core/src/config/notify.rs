//! `[notify.*]` and `[metrics.*]`: where events and metrics go besides the alert log.
//! The sinks themselves live in the notifier crate; this is their validated configuration.
//!
//! ```toml
//! [notify]
//! docs_url = "https://docs.example.com/baton/events.html"   # link in messages
//!
//! [notify.log]
//! min_severity = "info"
//!
//! [notify.sns]
//! topic_arn = "arn:aws:sns:us-east-1:123456789012:baton"
//! min_severity = "warning"          # default warning
//! include = ["BTN-2102"]            # also these ids, whatever their severity
//! exclude = ["BTN-30*"]             # never these (wins over include)
//!
//! [notify.mail]
//! server = "smtp.example.com"
//! security = "starttls"             # or "tls" (implicit, port 465) or "none"
//! username = "baton"
//! password_file = "/etc/baton/smtp.password"
//! from = "baton@example.com"
//! to = ["ops@example.com", "oncall@example.com"]
//!
//! [[notify.webhook]]
//! name = "slack"
//! url = "https://hooks.slack.com/services/T000/B000/XXXX"
//! secret_file = "/etc/baton/webhook.secret"
//!
//! [notify.delivery]                 # queues, retries, flap coalescing, shutdown flush
//! coalesce_window = "60s"
//!
//! [metrics.cloudwatch]
//! namespace = "Baton"
//! interval = "60s"
//! monitors = ["http1"]              # polling time is opt-in per monitor ("*" = all)
//! ```
//!
//! Secrets (SMTP password, webhook signing secret) are never written in this file: they
//! are read from the files named by `password_file` / `secret_file` (relative paths are
//! relative to the configuration file), so the file can be shared and its digest
//! compared between servers.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::diagnostics::{k, Diags, Seg};
use super::{Dur, Monitor};
use crate::events::CATALOGUE;
use crate::Severity;

/// `[notify]`: where events go besides the alert log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct NotifySection {
    /// Write events to the agent's log (stderr / journal). On by default.
    pub log: Option<LogSinkSection>,
    /// Base address of the event documentation (the `events.html` page of the docs);
    /// messages link to `DOCS_URL#btn-NNNN`. Default: no link, the id only.
    pub docs_url: Option<String>,
    /// `[notify.sns]`: publish events to an Amazon SNS topic.
    pub sns: Option<SnsSection>,
    /// `[notify.mail]`: send events by mail (SMTP).
    pub mail: Option<MailSection>,
    /// `[[notify.webhook]]`: POST events as signed JSON (one table per endpoint).
    pub webhook: Vec<WebhookSection>,
    /// `[notify.delivery]`: queues, retries, coalescing and the shutdown flush, shared by
    /// every sink.
    pub delivery: DeliverySection,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSinkSection {
    #[serde(default = "default_min_severity")]
    pub min_severity: crate::Severity,
}

fn default_min_severity() -> crate::Severity {
    crate::Severity::Info
}

fn warning() -> Severity {
    Severity::Warning
}

/// `[notify.sns]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnsSection {
    /// `arn:aws:sns:REGION:ACCOUNT:NAME`. The topic's region is taken from the ARN.
    pub topic_arn: String,
    /// Events below this severity are not sent (unless listed in `include`). Default
    /// `warning`.
    #[serde(default = "warning")]
    pub min_severity: Severity,
    /// Event ids sent whatever their severity: `BTN-2102`, or a prefix `BTN-21*`.
    #[serde(default)]
    pub include: Vec<String>,
    /// Event ids never sent (wins over `include` and `min_severity`).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Put before every subject. Default `Baton`.
    #[serde(default)]
    pub subject_prefix: Option<String>,
}

/// How the mail sink talks to its SMTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MailSecurity {
    /// Plain connection upgraded with STARTTLS (required, never falls back). Port 587.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS). Port 465.
    Tls,
    /// No encryption (a local relay, tests). Port 25.
    None,
}

impl MailSecurity {
    pub fn default_port(self) -> u16 {
        match self {
            MailSecurity::Starttls => 587,
            MailSecurity::Tls => 465,
            MailSecurity::None => 25,
        }
    }
}

fn mail_timeout() -> Dur {
    Dur::from_ms(10_000)
}

fn webhook_timeout() -> Dur {
    Dur::from_ms(5_000)
}

/// `[notify.mail]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailSection {
    /// SMTP server host name or address.
    pub server: String,
    /// Default: 587 (`starttls`), 465 (`tls`), 25 (`none`).
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub security: MailSecurity,
    /// Authenticate with this user name (and the password in `password_file`).
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the SMTP password (first line; trailing newline ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Never accepted: present only to point at `password_file` with a clear error.
    #[serde(default, skip_serializing)]
    pub password: Option<String>,
    /// Sender address.
    pub from: String,
    /// One or more recipients.
    pub to: Vec<String>,
    #[serde(default = "warning")]
    pub min_severity: Severity,
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Whole SMTP exchange of one message. Default `10s`.
    #[serde(default = "mail_timeout")]
    pub timeout: Dur,
    /// Put before every subject. Default `Baton`.
    #[serde(default)]
    pub subject_prefix: Option<String>,
}

impl MailSection {
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or(self.security.default_port())
    }
}

/// `[[notify.webhook]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSection {
    /// Shown in `baton status` and used by `baton notify test NAME`. Default `webhook`
    /// (`webhook-2`, ... for the next ones).
    #[serde(default)]
    pub name: Option<String>,
    /// `https://...` (or `http://` for a receiver on the same host).
    pub url: String,
    /// File holding the HMAC-SHA256 key that signs each body
    /// (`X-Baton-Signature: sha256=HEX`). Without it the requests are not signed.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Never accepted: present only to point at `secret_file` with a clear error.
    #[serde(default, skip_serializing)]
    pub secret: Option<String>,
    #[serde(default = "warning")]
    pub min_severity: Severity,
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    /// One POST, connection included. Default `5s`.
    #[serde(default = "webhook_timeout")]
    pub timeout: Dur,
}

impl NotifySection {
    /// The name of the `i`-th webhook: its `name`, else `webhook` / `webhook-N`.
    pub fn webhook_name(&self, i: usize) -> String {
        match self.webhook.get(i).and_then(|w| w.name.clone()) {
            Some(n) => n,
            None if i == 0 => "webhook".to_string(),
            None => format!("webhook-{}", i + 1),
        }
    }
}

/// `[notify.delivery]`: how every sink's queue behaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverySection {
    /// Events each sink's queue holds; when full, new events are dropped for that sink
    /// (and counted). Default 1024.
    pub queue_len: usize,
    /// Delivery attempts of one batch, the first included. Default 5.
    pub max_attempts: u32,
    /// First retry delay (doubles per attempt, jittered). Default `500ms`.
    pub retry_base: Dur,
    /// Longest retry delay. Default `30s`.
    pub retry_max: Dur,
    /// Repeats of the same event (same id and subject) within this window after one was
    /// sent are held and sent as one message with a count. `0s` turns it off.
    /// Default `60s`.
    pub coalesce_window: Dur,
    /// On agent shutdown, how long the sinks may take to send what is queued. Default
    /// `5s`.
    pub shutdown_timeout: Dur,
}

impl Default for DeliverySection {
    fn default() -> Self {
        DeliverySection {
            queue_len: 1024,
            max_attempts: 5,
            retry_base: Dur::from_ms(500),
            retry_max: Dur::from_ms(30_000),
            coalesce_window: Dur::from_ms(60_000),
            shutdown_timeout: Dur::from_ms(5_000),
        }
    }
}

/// `[metrics]`: where metrics go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// `[metrics.cloudwatch]`: send metrics to Amazon CloudWatch.
    pub cloudwatch: Option<CloudWatchSection>,
    /// `[metrics.prometheus]`: serve `GET /metrics` on the API port.
    pub prometheus: Option<super::web::PrometheusSection>,
}

/// The metrics Baton can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MetricKind {
    /// `MonitorPollingTime` (ms) per monitor, for the monitors opted in by `monitors`.
    MonitorPollingTime,
    /// `HeartbeatRoundTrip` (ms) per peer and interconnect path.
    HeartbeatRtt,
    /// `GroupActive` (1 or 0) per group on this server.
    GroupActive,
    /// `FailoverCount` per group (failovers this server took over).
    FailoverCount,
    /// `FailoverPhaseTime` (ms) per group and phase.
    FailoverPhaseTime,
}

impl MetricKind {
    pub const ALL: [MetricKind; 5] = [
        MetricKind::MonitorPollingTime,
        MetricKind::HeartbeatRtt,
        MetricKind::GroupActive,
        MetricKind::FailoverCount,
        MetricKind::FailoverPhaseTime,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::MonitorPollingTime => "monitor-polling-time",
            MetricKind::HeartbeatRtt => "heartbeat-rtt",
            MetricKind::GroupActive => "group-active",
            MetricKind::FailoverCount => "failover-count",
            MetricKind::FailoverPhaseTime => "failover-phase-time",
        }
    }
}

fn all_metrics() -> Vec<MetricKind> {
    MetricKind::ALL.to_vec()
}

fn cw_interval() -> Dur {
    Dur::from_ms(60_000)
}

fn cw_queue() -> usize {
    10_000
}

/// `[metrics.cloudwatch]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudWatchSection {
    /// Custom namespace, e.g. `Baton` (must not start with `AWS/`).
    pub namespace: String,
    /// Samples are aggregated (values and counts) and sent once per interval.
    /// Default `60s`.
    #[serde(default = "cw_interval")]
    pub interval: Dur,
    /// Which metrics to send. Default: all of them.
    #[serde(default = "all_metrics")]
    pub metrics: Vec<MetricKind>,
    /// Monitors whose polling time is sent (the per-monitor opt-in); `["*"]` = every
    /// monitor. Default: none.
    #[serde(default)]
    pub monitors: Vec<String>,
    /// Store at one-second resolution (high-resolution custom metrics cost more).
    /// Default false (one minute).
    #[serde(default)]
    pub high_resolution: bool,
    /// Samples waiting for aggregation; beyond this they are dropped and counted.
    /// Default 10000.
    #[serde(default = "cw_queue")]
    pub queue_len: usize,
}

impl CloudWatchSection {
    pub fn sends(&self, m: MetricKind) -> bool {
        self.metrics.contains(&m)
    }

    /// Is the polling time of `monitor` sent?
    pub fn monitor_opted_in(&self, monitor: &str) -> bool {
        self.sends(MetricKind::MonitorPollingTime)
            && self.monitors.iter().any(|m| m == "*" || m == monitor)
    }
}

/// Does the event id `id` (`BTN-2102`) match `pattern` (`BTN-2102`, `BTN-21*`, `2102`)?
/// Patterns are checked by [`validate`]; an unparsable one matches nothing.
pub fn id_matches(pattern: &str, id: &str) -> bool {
    let p = pattern.trim();
    let p = if p.starts_with("BTN-") {
        p.to_string()
    } else {
        format!("BTN-{p}")
    };
    match p.strip_suffix('*') {
        Some(prefix) => id.starts_with(prefix),
        None => p == id,
    }
}

/// Checks the notify and metrics sections (called once the monitors are known, so that
/// per-monitor metric switches can name real monitors).
pub(super) fn validate(
    d: &mut Diags<'_>,
    notify: &NotifySection,
    metrics: &MetricsSection,
    monitors: &[Monitor],
) {
    if let Some(url) = &notify.docs_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            d.err(
                &[k("notify"), k("docs_url")],
                format!("docs_url `{url}` must start with http:// or https://"),
            );
        }
    }
    if let Some(sns) = &notify.sns {
        let base = [k("notify"), k("sns")];
        if let Err(m) = check_topic_arn(&sns.topic_arn) {
            d.err(&at(&base, "topic_arn"), m);
        }
        check_filter(d, &base, &sns.include, &sns.exclude);
        check_prefix(d, &base, sns.subject_prefix.as_deref());
    }
    if let Some(mail) = &notify.mail {
        check_mail(d, mail);
    }
    let mut names = BTreeSet::new();
    for (i, w) in notify.webhook.iter().enumerate() {
        let base = [k("notify"), k("webhook"), Seg::Index(i)];
        let name = notify.webhook_name(i);
        if w.name.is_some() {
            let ok = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok {
                d.err(
                    &at(&base, "name"),
                    format!("webhook name `{name}` must be 1-64 letters, digits, `-` or `_`"),
                );
            }
        }
        if !names.insert(name.clone()) {
            d.err(
                &at(&base, "name"),
                format!("two webhooks are named `{name}`; give each a different `name`"),
            );
        }
        check_webhook(d, &base, w);
    }
    check_delivery(d, &notify.delivery);
    if let Some(cw) = &metrics.cloudwatch {
        check_cloudwatch(d, cw, monitors);
    }
}

fn at(base: &[Seg], key: &str) -> Vec<Seg> {
    let mut p = base.to_vec();
    p.push(k(key));
    p
}

fn at_index(base: &[Seg], key: &str, i: usize) -> Vec<Seg> {
    let mut p = at(base, key);
    p.push(Seg::Index(i));
    p
}

/// `arn:PARTITION:sns:REGION:ACCOUNT:NAME`.
fn check_topic_arn(arn: &str) -> Result<(), String> {
    let parts: Vec<&str> = arn.split(':').collect();
    let hint = "expected arn:aws:sns:REGION:ACCOUNT_ID:TOPIC, for example arn:aws:sns:us-east-1:123456789012:baton";
    if parts.len() != 6 || parts[0] != "arn" || !parts[1].starts_with("aws") || parts[2] != "sns" {
        return Err(format!("`{arn}` is not an SNS topic ARN; {hint}"));
    }
    let region_ok = !parts[3].is_empty()
        && parts[3]
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let account_ok = parts[4].len() == 12 && parts[4].chars().all(|c| c.is_ascii_digit());
    let name = parts[5];
    let name_ok = !name.is_empty()
        && name.len() <= 256
        && name
            .trim_end_matches(".fifo")
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !region_ok {
        return Err(format!(
            "`{arn}`: `{}` is not a region name; {hint}",
            parts[3]
        ));
    }
    if !account_ok {
        return Err(format!(
            "`{arn}`: the account id `{}` must be 12 digits; {hint}",
            parts[4]
        ));
    }
    if !name_ok {
        return Err(format!(
            "`{arn}`: the topic name `{name}` may hold only letters, digits, `-` and `_` (up to 256)"
        ));
    }
    Ok(())
}

/// A valid event id pattern: `BTN-NNNN`, `NNNN`, or a prefix ending in `*`.
fn check_pattern(p: &str) -> Result<(), String> {
    let body = p.strip_prefix("BTN-").unwrap_or(p);
    let (digits, wildcard) = match body.strip_suffix('*') {
        Some(d) => (d, true),
        None => (body, false),
    };
    let ok = digits.chars().all(|c| c.is_ascii_digit())
        && if wildcard {
            digits.len() <= 4
        } else {
            digits.len() == 4
        };
    if !ok {
        return Err(format!(
            "`{p}` is not an event id: use `BTN-2102`, or a prefix such as `BTN-21*`"
        ));
    }
    if !wildcard && !CATALOGUE.iter().any(|e| id_matches(p, &e.code())) {
        return Err(format!(
            "`{p}` is not a known event id (`baton events` lists them)"
        ));
    }
    Ok(())
}

fn check_filter(d: &mut Diags<'_>, base: &[Seg], include: &[String], exclude: &[String]) {
    for (key, list) in [("include", include), ("exclude", exclude)] {
        for (i, p) in list.iter().enumerate() {
            if let Err(m) = check_pattern(p) {
                d.err(&at_index(base, key, i), m);
            }
        }
    }
    for (i, p) in include.iter().enumerate() {
        if exclude.iter().any(|x| x == p) {
            d.warn(
                &at_index(base, "include", i),
                format!("`{p}` is both included and excluded; exclude wins"),
            );
        }
    }
}

fn check_prefix(d: &mut Diags<'_>, base: &[Seg], prefix: Option<&str>) {
    if let Some(p) = prefix {
        if p.len() > 40 || p.chars().any(char::is_control) {
            d.err(
                &at(base, "subject_prefix"),
                "subject_prefix must be at most 40 characters, on one line",
            );
        }
    }
}

/// A plausible mail address: `local@domain`, no spaces, commas or angle brackets.
fn mail_address_ok(a: &str) -> bool {
    let Some((local, domain)) = a.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !domain.starts_with('.')
        && !a
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, ',' | '<' | '>' | ';'))
}

fn check_timeout(d: &mut Diags<'_>, path: &[Seg], t: Dur) {
    if t.ms() < 100 || t.ms() > 300_000 {
        d.err(path, "timeout must be between 100ms and 5m");
    }
}

fn check_mail(d: &mut Diags<'_>, mail: &MailSection) {
    let base = [k("notify"), k("mail")];
    let host_ok = !mail.server.trim().is_empty()
        && !mail
            .server
            .chars()
            .any(|c| c.is_whitespace() || c == '/' || c == '@');
    if !host_ok {
        d.err(
            &at(&base, "server"),
            format!(
                "`{}` is not a host name or address (give the port in `port`)",
                mail.server
            ),
        );
    }
    if mail.port == Some(0) {
        d.err(&at(&base, "port"), "port must be between 1 and 65535");
    }
    if mail.password.is_some() {
        d.err(
            &at(&base, "password"),
            "secrets are never written in the configuration: put the password in a file (mode 0600) and name it in `password_file`",
        );
    }
    match (&mail.username, &mail.password_file) {
        (Some(_), None) => d.err(
            &at(&base, "username"),
            "a username needs `password_file` (the file holding the SMTP password)",
        ),
        (None, Some(_)) => d.err(
            &at(&base, "password_file"),
            "`password_file` needs a `username` to authenticate with",
        ),
        (Some(_), Some(_)) if mail.security == MailSecurity::None => d.warn(
            &at(&base, "security"),
            "security = \"none\" sends the SMTP password unencrypted; use \"starttls\" or \"tls\"",
        ),
        _ => {}
    }
    if !mail_address_ok(&mail.from) {
        d.err(
            &at(&base, "from"),
            format!(
                "`{}` is not a mail address (write only `name@domain`)",
                mail.from
            ),
        );
    }
    if mail.to.is_empty() {
        d.err(&at(&base, "to"), "give at least one recipient");
    }
    for (i, a) in mail.to.iter().enumerate() {
        if !mail_address_ok(a) {
            d.err(
                &at_index(&base, "to", i),
                format!("`{a}` is not a mail address (write only `name@domain`)"),
            );
        }
    }
    check_filter(d, &base, &mail.include, &mail.exclude);
    check_timeout(d, &at(&base, "timeout"), mail.timeout);
    check_prefix(d, &base, mail.subject_prefix.as_deref());
}

fn check_webhook(d: &mut Diags<'_>, base: &[Seg], w: &WebhookSection) {
    let url = w.url.as_str();
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        None => d.err(
            &at(base, "url"),
            format!("url `{url}` must start with https:// (or http:// for a local receiver)"),
        ),
        Some(r) => {
            let host = r.split(['/', '?']).next().unwrap_or("");
            if host.is_empty() || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
                d.err(
                    &at(base, "url"),
                    format!("url `{url}` has no host, or contains spaces"),
                );
            } else if url.starts_with("http://") {
                let h = host.rsplit_once(':').map_or(host, |(h, _)| h);
                let local = h == "localhost" || h.starts_with("127.") || h == "[::1]" || h == "::1";
                if !local {
                    d.warn(
                        &at(base, "url"),
                        "plain http:// sends events unencrypted; use https://",
                    );
                }
            }
        }
    }
    if w.secret.is_some() {
        d.err(
            &at(base, "secret"),
            "secrets are never written in the configuration: put the signing key in a file (mode 0600) and name it in `secret_file`",
        );
    }
    check_filter(d, base, &w.include, &w.exclude);
    check_timeout(d, &at(base, "timeout"), w.timeout);
}

fn check_delivery(d: &mut Diags<'_>, dl: &DeliverySection) {
    let base = [k("notify"), k("delivery")];
    if dl.queue_len == 0 || dl.queue_len > 1_000_000 {
        d.err(
            &at(&base, "queue_len"),
            "queue_len must be between 1 and 1000000",
        );
    }
    if dl.max_attempts == 0 || dl.max_attempts > 20 {
        d.err(
            &at(&base, "max_attempts"),
            "max_attempts must be between 1 and 20",
        );
    }
    if dl.retry_base.ms() == 0 {
        d.err(&at(&base, "retry_base"), "retry_base must be more than 0");
    }
    if dl.retry_max < dl.retry_base {
        d.err(
            &at(&base, "retry_max"),
            format!(
                "retry_max ({}) must not be shorter than retry_base ({})",
                dl.retry_max, dl.retry_base
            ),
        );
    }
    if dl.retry_max.ms() > 600_000 {
        d.err(&at(&base, "retry_max"), "retry_max must be at most 10m");
    }
    if dl.coalesce_window.ms() > 3_600_000 {
        d.err(
            &at(&base, "coalesce_window"),
            "coalesce_window must be at most 1h",
        );
    }
    if dl.shutdown_timeout.ms() > 300_000 {
        d.err(
            &at(&base, "shutdown_timeout"),
            "shutdown_timeout must be at most 5m",
        );
    }
}

fn check_cloudwatch(d: &mut Diags<'_>, cw: &CloudWatchSection, monitors: &[Monitor]) {
    let base = [k("metrics"), k("cloudwatch")];
    let ns = cw.namespace.as_str();
    if ns.is_empty() || ns.len() > 255 || !ns.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
        d.err(
            &at(&base, "namespace"),
            format!("namespace `{ns}` must be 1-255 printable ASCII characters"),
        );
    } else if ns.starts_with("AWS/") || ns.starts_with(':') {
        d.err(
            &at(&base, "namespace"),
            format!("namespace `{ns}` is reserved (it may not start with `AWS/` or `:`)"),
        );
    }
    let min_ms = if cw.high_resolution { 1_000 } else { 10_000 };
    if cw.interval.ms() < min_ms || cw.interval.ms() > 3_600_000 {
        d.err(
            &at(&base, "interval"),
            format!(
                "interval must be between {} and 1h",
                if cw.high_resolution { "1s" } else { "10s" }
            ),
        );
    }
    if cw.queue_len == 0 || cw.queue_len > 1_000_000 {
        d.err(
            &at(&base, "queue_len"),
            "queue_len must be between 1 and 1000000",
        );
    }
    let mut seen = BTreeSet::new();
    for (i, m) in cw.metrics.iter().enumerate() {
        if !seen.insert(*m) {
            d.warn(
                &at_index(&base, "metrics", i),
                format!("`{}` is listed twice", m.as_str()),
            );
        }
    }
    let mut seen = BTreeSet::new();
    for (i, m) in cw.monitors.iter().enumerate() {
        if m != "*" && !monitors.iter().any(|x| &x.name == m) {
            let known: Vec<&str> = monitors.iter().map(|x| x.name.as_str()).collect();
            d.err(
                &at_index(&base, "monitors", i),
                if known.is_empty() {
                    format!("unknown monitor `{m}`: none is defined")
                } else {
                    format!(
                        "unknown monitor `{m}`; defined: {} (or \"*\" for all)",
                        known.join(", ")
                    )
                },
            );
        }
        if !seen.insert(m.clone()) {
            d.warn(
                &at_index(&base, "monitors", i),
                format!("monitor `{m}` is listed twice"),
            );
        }
    }
    if !cw.monitors.is_empty() && !cw.sends(MetricKind::MonitorPollingTime) {
        d.warn(
            &at(&base, "monitors"),
            "monitors are listed but `monitor-polling-time` is not in `metrics`, so no polling time is sent",
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::super::{load_str, AnyKind, Diagnostic, Level, Loaded};
    use super::*;

    const BASE: &str = r#"[cluster]
name = "orders"
key_file = "cluster.key"

[[server]]
name = "node-1"
interconnects = ["10.0.110.10"]
api = "10.0.110.10:7420"

[[server]]
name = "node-2"
interconnects = ["10.0.120.10"]
api = "10.0.120.10:7420"

[[server]]
name = "node-3"
interconnects = ["10.0.130.10"]
api = "10.0.130.10:7420"

[[group]]
name = "web"
servers = ["node-1", "node-2"]

[[group.resource]]
kind = "exec"
name = "app"
start = "true"
stop = "true"

[[monitor]]
kind = "http"
name = "http1"
url = "http://127.0.0.1/"
recovery = { target = "web" }

[[monitor]]
kind = "tcp"
name = "tcp1"
address = "127.0.0.1:80"
recovery = { target = "web" }
"#;

    fn load(extra: &str) -> (String, Result<Loaded, super::super::ConfigError>) {
        let text = format!("{BASE}\n{extra}");
        let r = load_str("baton.toml", &text, &AnyKind);
        (text, r)
    }

    fn ok(extra: &str) -> Loaded {
        match load(extra).1 {
            Ok(l) => l,
            Err(e) => panic!("{e}: {:?}", e.diagnostics),
        }
    }

    /// The error diagnostics; panics when the text loads.
    fn errors(extra: &str) -> (String, Vec<Diagnostic>) {
        let (text, r) = load(extra);
        match r {
            Ok(_) => panic!("expected an error for:\n{extra}"),
            Err(e) => (
                text,
                e.diagnostics
                    .into_iter()
                    .filter(|d| d.level == Level::Error)
                    .collect(),
            ),
        }
    }

    /// One error at `key`, on the line holding `needle`, with `words` in its message.
    fn assert_error(extra: &str, key: &str, needle: &str, words: &str) {
        let (text, errs) = errors(extra);
        let d = errs
            .iter()
            .find(|d| d.key == key)
            .unwrap_or_else(|| panic!("no error at `{key}`: {errs:?}"));
        let line = text
            .lines()
            .position(|l| l.contains(needle))
            .map(|i| i + 1)
            .unwrap_or_else(|| panic!("`{needle}` not in the text"));
        assert_eq!(d.line, line, "{d}");
        assert!(d.message.contains(words), "{d}");
    }

    const FULL: &str = r#"[notify]
docs_url = "https://docs.example.com/baton/events.html"

[notify.sns]
topic_arn = "arn:aws:sns:us-east-1:123456789012:baton"
include = ["BTN-2102"]
exclude = ["BTN-30*"]

[notify.mail]
server = "smtp.example.com"
username = "baton"
password_file = "smtp.password"
from = "baton@example.com"
to = ["ops@example.com", "oncall@example.com"]

[[notify.webhook]]
name = "slack"
url = "https://hooks.example.com/services/T0/B0/X"
secret_file = "webhook.secret"

[[notify.webhook]]
url = "http://127.0.0.1:9000/hook"
min_severity = "info"

[notify.delivery]
coalesce_window = "30s"

[metrics.cloudwatch]
namespace = "Baton"
interval = "30s"
monitors = ["http1"]
"#;

    #[test]
    fn full_example_loads_with_defaults() {
        let l = ok(FULL);
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        let n = &l.config.notify;
        let sns = n.sns.as_ref().unwrap();
        assert_eq!(sns.min_severity, Severity::Warning);
        assert_eq!(sns.include, vec!["BTN-2102".to_string()]);
        let mail = n.mail.as_ref().unwrap();
        assert_eq!(mail.security, MailSecurity::Starttls);
        assert_eq!(mail.effective_port(), 587);
        assert_eq!(mail.to.len(), 2);
        assert_eq!(mail.timeout, Dur::from_ms(10_000));
        assert_eq!(n.webhook.len(), 2);
        assert_eq!(n.webhook_name(0), "slack");
        assert_eq!(n.webhook_name(1), "webhook-2");
        assert_eq!(n.webhook[1].min_severity, Severity::Info);
        assert_eq!(n.delivery.coalesce_window, Dur::from_ms(30_000));
        assert_eq!(n.delivery.queue_len, 1024);
        let cw = l.config.metrics.cloudwatch.as_ref().unwrap();
        assert_eq!(cw.metrics, MetricKind::ALL.to_vec());
        assert!(cw.monitor_opted_in("http1"));
        assert!(!cw.monitor_opted_in("tcp1"));
        assert!(!cw.high_resolution);
    }

    #[test]
    fn id_patterns_match_ids_and_prefixes() {
        assert!(id_matches("BTN-2102", "BTN-2102"));
        assert!(id_matches("2102", "BTN-2102"));
        assert!(id_matches("BTN-21*", "BTN-2107"));
        assert!(id_matches("BTN-*", "BTN-1001"));
        assert!(!id_matches("BTN-21*", "BTN-3001"));
        assert!(!id_matches("BTN-2102", "BTN-2103"));
    }

    #[test]
    fn bad_topic_arn_is_located() {
        assert_error(
            "[notify.sns]\ntopic_arn = \"arn:aws:sqs:us-east-1:123456789012:q\"\n",
            "notify.sns.topic_arn",
            "topic_arn",
            "is not an SNS topic ARN",
        );
        assert_error(
            "[notify.sns]\ntopic_arn = \"arn:aws:sns:us-east-1:1234:baton\"\n",
            "notify.sns.topic_arn",
            "topic_arn",
            "must be 12 digits",
        );
    }

    #[test]
    fn bad_event_ids_are_located() {
        assert_error(
            "[notify.sns]\ntopic_arn = \"arn:aws:sns:us-east-1:123456789012:b\"\ninclude = [\"BTN-21x\"]\n",
            "notify.sns.include[0]",
            "include",
            "is not an event id",
        );
        assert_error(
            "[notify.sns]\ntopic_arn = \"arn:aws:sns:us-east-1:123456789012:b\"\nexclude = [\"BTN-2102\", \"BTN-9998\"]\n",
            "notify.sns.exclude[1]",
            "exclude",
            "not a known event id",
        );
    }

    #[test]
    fn inline_secrets_are_refused() {
        assert_error(
            "[notify.mail]\nserver = \"smtp\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]\nusername = \"u\"\npassword = \"hunter2\"\n",
            "notify.mail.password",
            "password =",
            "password_file",
        );
        assert_error(
            "[[notify.webhook]]\nurl = \"https://h.example.com/x\"\nsecret = \"s\"\n",
            "notify.webhook[0].secret",
            "secret =",
            "secret_file",
        );
    }

    #[test]
    fn mail_needs_recipients_and_credentials_in_pairs() {
        assert_error(
            "[notify.mail]\nserver = \"smtp\"\nfrom = \"a@b.c\"\nto = []\n",
            "notify.mail.to",
            "to = []",
            "at least one recipient",
        );
        assert_error(
            "[notify.mail]\nserver = \"smtp\"\nfrom = \"a@b.c\"\nto = [\"ops@example.com\", \"not an address\"]\n",
            "notify.mail.to[1]",
            "to = [",
            "is not a mail address",
        );
        assert_error(
            "[notify.mail]\nserver = \"smtp\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]\nusername = \"u\"\n",
            "notify.mail.username",
            "username",
            "needs `password_file`",
        );
        let l = ok("[notify.mail]\nserver = \"smtp\"\nsecurity = \"none\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]\nusername = \"u\"\npassword_file = \"p\"\n");
        assert!(l
            .warnings
            .iter()
            .any(|w| w.key == "notify.mail.security" && w.message.contains("unencrypted")));
        let l = ok("[notify.mail]\nserver = \"smtp\"\nsecurity = \"tls\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]\n");
        assert_eq!(l.config.notify.mail.unwrap().effective_port(), 465);
    }

    #[test]
    fn webhook_checks() {
        assert_error(
            "[[notify.webhook]]\nurl = \"ftp://h/x\"\n",
            "notify.webhook[0].url",
            "ftp://",
            "must start with https://",
        );
        assert_error(
            "[[notify.webhook]]\nurl = \"https://a.example.com/\"\n[[notify.webhook]]\nurl = \"https://b.example.com/\"\nname = \"webhook\"\n",
            "notify.webhook[1].name",
            "name = \"webhook\"",
            "two webhooks are named `webhook`",
        );
        let l = ok("[[notify.webhook]]\nurl = \"http://hooks.example.com/x\"\n");
        assert!(l
            .warnings
            .iter()
            .any(|w| w.key == "notify.webhook[0].url" && w.message.contains("unencrypted")));
    }

    #[test]
    fn cloudwatch_checks() {
        assert_error(
            "[metrics.cloudwatch]\nnamespace = \"Baton\"\nmonitors = [\"http1\", \"nope\"]\n",
            "metrics.cloudwatch.monitors[1]",
            "monitors =",
            "unknown monitor `nope`; defined: http1, tcp1",
        );
        assert_error(
            "[metrics.cloudwatch]\nnamespace = \"AWS/EC2\"\n",
            "metrics.cloudwatch.namespace",
            "namespace",
            "reserved",
        );
        assert_error(
            "[metrics.cloudwatch]\nnamespace = \"Baton\"\ninterval = \"2s\"\n",
            "metrics.cloudwatch.interval",
            "interval",
            "between 10s and 1h",
        );
        let l = ok("[metrics.cloudwatch]\nnamespace = \"Baton\"\ninterval = \"2s\"\nhigh_resolution = true\nmonitors = [\"*\"]\nmetrics = [\"monitor-polling-time\", \"group-active\"]\n");
        let cw = l.config.metrics.cloudwatch.unwrap();
        assert!(cw.monitor_opted_in("tcp1"));
        assert!(!cw.sends(MetricKind::HeartbeatRtt));
        let (_, errs) =
            errors("[metrics.cloudwatch]\nnamespace = \"Baton\"\nmetrics = [\"cpu\"]\n");
        assert!(
            errs[0].key.starts_with("metrics.cloudwatch.metrics"),
            "{errs:?}"
        );
        assert!(errs[0].message.contains("monitor-polling-time"), "{errs:?}");
    }

    #[test]
    fn delivery_limits() {
        assert_error(
            "[notify.delivery]\nretry_base = \"2s\"\nretry_max = \"1s\"\n",
            "notify.delivery.retry_max",
            "retry_max",
            "must not be shorter than retry_base",
        );
        assert_error(
            "[notify.delivery]\nqueue_len = 0\n",
            "notify.delivery.queue_len",
            "queue_len",
            "between 1 and 1000000",
        );
    }
}
