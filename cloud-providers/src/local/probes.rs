//! The on-host monitor kinds: `process`, `tcp`, `http`, `exec`, `ping`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use super::procfs;
use crate::params::{check_env, key_error, non_blank, parse_params};
use crate::process::{duration_ms, execute, CommandSpec};
use crate::{ParamError, Params, Probe, ProbeContext, ProbeOk, ProviderError};

// ---------------------------------------------------------------- process

/// Keys of a `process` monitor: healthy while a process is running. Give exactly one
/// of `pid_file` and `name`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessParams {
    /// A pid file: healthy while the process it names exists and is not a zombie.
    pub pid_file: Option<PathBuf>,
    /// A process name: healthy while some process has this name (`/proc/PID/comm`) or
    /// this basename of its `argv[0]`, e.g. `nginx`.
    pub name: Option<String>,
}

/// The `process` monitor.
#[derive(Debug, Clone)]
pub struct ProcessProbe {
    pub params: ProcessParams,
}

impl ProcessProbe {
    pub fn from_params(params: &Params) -> Result<Self, ParamError> {
        let p: ProcessParams = parse_params(params)?;
        match (&p.pid_file, &p.name) {
            (Some(_), Some(_)) => Err(key_error(
                "name",
                "give either `pid_file` or `name`, not both",
            )),
            (None, None) => Err(ParamError::new(
                None,
                "missing required key: give `pid_file` or `name`",
            )),
            (None, Some(name)) if name.is_empty() || name.contains('/') => Err(key_error(
                "name",
                "`name` must be a process name like `nginx` (no path)",
            )),
            _ => Ok(ProcessProbe { params: p }),
        }
    }
}

#[async_trait]
impl Probe for ProcessProbe {
    fn kind(&self) -> &'static str {
        "process"
    }

    async fn probe(&self, _ctx: &ProbeContext) -> Result<ProbeOk, ProviderError> {
        let params = self.params.clone();
        tokio::task::spawn_blocking(move || -> Result<ProbeOk, ProviderError> {
            if let Some(path) = &params.pid_file {
                let pid = procfs::read_pid_file(path)
                    .map_err(ProviderError::Unhealthy)?
                    .ok_or_else(|| {
                        ProviderError::Unhealthy(format!(
                            "pid file {} does not exist",
                            path.display()
                        ))
                    })?;
                if procfs::pid_alive(pid) {
                    return Ok(ProbeOk {
                        detail: Some(format!("pid {pid}")),
                    });
                }
                return Err(ProviderError::Unhealthy(format!(
                    "process {pid} from pid file {} is not running",
                    path.display()
                )));
            }
            let name = params.name.unwrap_or_default();
            let pids = procfs::find_by_name(&name);
            match pids.first() {
                Some(pid) if pids.len() == 1 => Ok(ProbeOk {
                    detail: Some(format!("pid {pid}")),
                }),
                Some(pid) => Ok(ProbeOk {
                    detail: Some(format!("{} processes, first pid {pid}", pids.len())),
                }),
                None => Err(ProviderError::Unhealthy(format!(
                    "no process named `{name}` is running"
                ))),
            }
        })
        .await
        .map_err(|e| ProviderError::Other(format!("process probe task failed: {e}")))?
    }
}

// ---------------------------------------------------------------- tcp

/// Keys of a `tcp` monitor: healthy when a TCP connection to `host:port` opens within
/// the monitor's timeout (the connection is closed at once).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpParams {
    /// Host name or address to connect to (default `127.0.0.1`).
    #[serde(default = "default_host")]
    pub host: String,
    /// Required. TCP port, 1 to 65535.
    pub port: u16,
}

fn default_host() -> String {
    "127.0.0.1".into()
}

/// The `tcp` monitor.
#[derive(Debug, Clone)]
pub struct TcpProbe {
    pub params: TcpParams,
}

impl TcpProbe {
    pub fn from_params(params: &Params) -> Result<Self, ParamError> {
        let p: TcpParams = parse_params(params)?;
        non_blank("host", &p.host)?;
        if p.port == 0 {
            return Err(key_error("port", "port must be between 1 and 65535"));
        }
        Ok(TcpProbe { params: p })
    }

    fn target(&self) -> String {
        if self.params.host.contains(':') && !self.params.host.starts_with('[') {
            format!("[{}]:{}", self.params.host, self.params.port)
        } else {
            format!("{}:{}", self.params.host, self.params.port)
        }
    }
}

#[async_trait]
impl Probe for TcpProbe {
    fn kind(&self) -> &'static str {
        "tcp"
    }

    async fn probe(&self, ctx: &ProbeContext) -> Result<ProbeOk, ProviderError> {
        let started = crate::clock::now();
        let connect = tokio::net::TcpStream::connect((self.params.host.as_str(), self.params.port));
        match tokio::time::timeout(ctx.timeout, connect).await {
            Err(_) => Err(ProviderError::Timeout(duration_ms(ctx.timeout))),
            Ok(Err(e)) => Err(ProviderError::Unhealthy(format!(
                "cannot connect to {}: {e}",
                self.target()
            ))),
            Ok(Ok(_stream)) => Ok(ProbeOk {
                detail: Some(format!(
                    "connected to {} in {} ms",
                    self.target(),
                    started.elapsed().as_millis()
                )),
            }),
        }
    }
}

// ---------------------------------------------------------------- http

/// The HTTP method of an `http` monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum HttpMethod {
    #[default]
    #[serde(rename = "GET", alias = "get")]
    Get,
    #[serde(rename = "HEAD", alias = "head")]
    Head,
}

impl HttpMethod {
    fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Head => "HEAD",
        }
    }
}

/// Keys of an `http` monitor: healthy when a request to `url` answers with an expected
/// status (and body, when `body_contains` or `body_regex` is set) within the monitor's
/// timeout. Proxy environment variables are ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpParams {
    /// Required. `http://` or `https://` URL to request.
    pub url: String,
    /// Expected status: a number or a list of numbers (default 200).
    #[serde(default = "default_status", deserialize_with = "status_list")]
    pub expect_status: Vec<u16>,
    /// Optional. Text the response body must contain (the first 1 MiB is read).
    pub body_contains: Option<String>,
    /// Optional. Regular expression (Rust `regex` syntax) the response body must match.
    pub body_regex: Option<String>,
    /// `GET` (default) or `HEAD` (no body checks with `HEAD`).
    #[serde(default)]
    pub method: HttpMethod,
    /// Verify the server's TLS certificate for `https://` URLs (default true; set false
    /// for self-signed health endpoints).
    #[serde(default = "default_true")]
    pub tls_verify: bool,
    /// Follow redirects (default false: a redirect's 3xx status is what is compared).
    #[serde(default)]
    pub follow_redirects: bool,
}

fn default_status() -> Vec<u16> {
    vec![200]
}

fn default_true() -> bool {
    true
}

/// A status code or a list of them.
fn status_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u16>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<u16>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an HTTP status like 200, or a list like [200, 204]")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Vec<u16>, E> {
            status(v).map(|s| vec![s])
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Vec<u16>, E> {
            status(i64::try_from(v).unwrap_or(i64::MAX)).map(|s| vec![s])
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u16>, A::Error> {
            let mut out = Vec::new();
            while let Some(v) = seq.next_element::<i64>()? {
                out.push(status(v)?);
            }
            if out.is_empty() {
                return Err(de::Error::custom("the list of expected statuses is empty"));
            }
            Ok(out)
        }
    }
    fn status<E: de::Error>(v: i64) -> Result<u16, E> {
        match u16::try_from(v) {
            Ok(s) if (100..=599).contains(&s) => Ok(s),
            _ => Err(E::custom(format!(
                "invalid HTTP status {v}: expected a number from 100 to 599"
            ))),
        }
    }
    d.deserialize_any(V)
}

const BODY_LIMIT: usize = 1 << 20;

/// The `http` monitor.
#[derive(Debug, Clone)]
pub struct HttpProbe {
    pub params: HttpParams,
    url: reqwest::Url,
    regex: Option<regex::Regex>,
    client: reqwest::Client,
}

impl HttpProbe {
    pub fn from_params(params: &Params) -> Result<Self, ParamError> {
        let p: HttpParams = parse_params(params)?;
        let url = reqwest::Url::parse(&p.url)
            .map_err(|e| key_error("url", format!("invalid URL `{}`: {e}", p.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(key_error(
                "url",
                format!(
                    "unsupported URL scheme `{}`: use http:// or https://",
                    url.scheme()
                ),
            ));
        }
        if p.method == HttpMethod::Head && (p.body_contains.is_some() || p.body_regex.is_some()) {
            return Err(key_error(
                "method",
                "body_contains and body_regex need the GET method (HEAD responses have no body)",
            ));
        }
        let regex = match &p.body_regex {
            Some(r) => Some(regex::Regex::new(r).map_err(|e| {
                key_error("body_regex", format!("invalid regular expression: {e}"))
            })?),
            None => None,
        };
        let redirect = if p.follow_redirects {
            reqwest::redirect::Policy::limited(10)
        } else {
            reqwest::redirect::Policy::none()
        };
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(redirect)
            .danger_accept_invalid_certs(!p.tls_verify)
            .user_agent(concat!("baton-monitor/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ParamError::new(None, format!("cannot set up the HTTP client: {e}")))?;
        Ok(HttpProbe {
            params: p,
            url,
            regex,
            client,
        })
    }

    fn what(&self) -> String {
        format!("{} {}", self.params.method.as_str(), self.url)
    }

    async fn request(&self, timeout: Duration) -> Result<ProbeOk, ProviderError> {
        let method = match self.params.method {
            HttpMethod::Get => reqwest::Method::GET,
            HttpMethod::Head => reqwest::Method::HEAD,
        };
        let mut resp = self
            .client
            .request(method, self.url.clone())
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| self.request_error(&e, timeout))?;
        let status = resp.status().as_u16();
        if !self.params.expect_status.contains(&status) {
            let expected: Vec<String> = self
                .params
                .expect_status
                .iter()
                .map(u16::to_string)
                .collect();
            return Err(ProviderError::Unhealthy(format!(
                "{} returned {status}, expected {}",
                self.what(),
                expected.join(" or ")
            )));
        }
        if self.params.body_contains.is_none() && self.regex.is_none() {
            return Ok(ProbeOk {
                detail: Some(format!("status {status}")),
            });
        }
        let mut body = Vec::new();
        while body.len() < BODY_LIMIT {
            match resp.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => return Err(self.request_error(&e, timeout)),
            }
        }
        body.truncate(BODY_LIMIT);
        let body = String::from_utf8_lossy(&body);
        if let Some(want) = &self.params.body_contains {
            if !body.contains(want.as_str()) {
                return Err(ProviderError::Unhealthy(format!(
                    "{} returned {status} but the body does not contain {want:?}",
                    self.what()
                )));
            }
        }
        if let Some(re) = &self.regex {
            if !re.is_match(&body) {
                return Err(ProviderError::Unhealthy(format!(
                    "{} returned {status} but the body does not match /{}/",
                    self.what(),
                    re.as_str()
                )));
            }
        }
        Ok(ProbeOk {
            detail: Some(format!("status {status}, body matched")),
        })
    }

    fn request_error(&self, e: &reqwest::Error, timeout: Duration) -> ProviderError {
        if e.is_timeout() {
            return ProviderError::Timeout(duration_ms(timeout));
        }
        let what = if e.is_connect() {
            "cannot connect"
        } else {
            "request failed"
        };
        ProviderError::Unhealthy(format!("{} {what}: {}", self.what(), error_chain(e)))
    }
}

/// An error and its sources, most specific last, without repeats.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = cur {
        let s = err.to_string();
        // hyper's "client error (Connect)" only says which layer failed.
        let noise = s.starts_with("client error (");
        if !noise && !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = err.source();
    }
    // The outermost reqwest message ("error sending request for url (...)") repeats the
    // URL we already print; keep the causes when there are any.
    if parts.len() > 1 {
        parts.remove(0);
    }
    parts.join(": ")
}

#[async_trait]
impl Probe for HttpProbe {
    fn kind(&self) -> &'static str {
        "http"
    }

    async fn probe(&self, ctx: &ProbeContext) -> Result<ProbeOk, ProviderError> {
        match tokio::time::timeout(ctx.timeout, self.request(ctx.timeout)).await {
            Ok(r) => r,
            Err(_) => Err(ProviderError::Timeout(duration_ms(ctx.timeout))),
        }
    }
}

// ---------------------------------------------------------------- exec

/// Keys of an `exec` monitor: healthy when a shell command exits 0 within the
/// monitor's timeout (it is killed with its process group otherwise). The command gets
/// `BATON_CLUSTER`, `BATON_SERVER`, `BATON_MONITOR` and `BATON_TIMEOUT_MS`, plus `env`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecProbeParams {
    /// Required. Shell command line (`/bin/sh -c`). Exit 0 is healthy; any other status
    /// is unhealthy, reported with the last line of its stderr (or stdout).
    pub command: String,
    /// Optional. Working directory (default: the agent's).
    pub dir: Option<PathBuf>,
    /// Optional. Extra environment variables, as a table of strings.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// The `exec` monitor.
#[derive(Debug, Clone)]
pub struct ExecProbe {
    pub params: ExecProbeParams,
}

impl ExecProbe {
    pub fn from_params(params: &Params) -> Result<Self, ParamError> {
        let p: ExecProbeParams = parse_params(params)?;
        non_blank("command", &p.command)?;
        check_env("env", &p.env)?;
        Ok(ExecProbe { params: p })
    }
}

#[async_trait]
impl Probe for ExecProbe {
    fn kind(&self) -> &'static str {
        "exec"
    }

    async fn probe(&self, ctx: &ProbeContext) -> Result<ProbeOk, ProviderError> {
        let env = [
            ("BATON_CLUSTER".to_string(), ctx.cluster.clone()),
            ("BATON_SERVER".to_string(), ctx.server.clone()),
            ("BATON_MONITOR".to_string(), ctx.monitor.clone()),
            (
                "BATON_TIMEOUT_MS".to_string(),
                duration_ms(ctx.timeout).to_string(),
            ),
        ];
        let spec = CommandSpec::shell(
            format!("command of exec monitor `{}`", ctx.monitor),
            &self.params.command,
            ctx.timeout,
        )
        .with_env(env)
        .with_env(self.params.env.clone())
        .with_dir(self.params.dir.clone());
        let out = execute(&spec).await?;
        if out.success() {
            Ok(ProbeOk {
                detail: out.last_line().map(|l| l.chars().take(200).collect()),
            })
        } else {
            Err(ProviderError::Unhealthy(format!(
                "check command exited with status {}: {}",
                out.status,
                out.last_line().unwrap_or_else(|| "(no output)".into())
            )))
        }
    }
}

// ---------------------------------------------------------------- ping

/// Keys of a `ping` monitor: healthy when `host` answers ICMP echo (`ping` from
/// iputils-ping) within the monitor's timeout.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PingParams {
    /// Required. Host name or address to ping.
    pub host: String,
    /// How many echo requests to send (default 1, at most 10); healthy if any is answered.
    #[serde(default = "default_count")]
    pub count: u32,
}

fn default_count() -> u32 {
    1
}

/// The `ping` monitor.
#[derive(Debug, Clone)]
pub struct PingProbe {
    pub params: PingParams,
}

impl PingProbe {
    pub fn from_params(params: &Params) -> Result<Self, ParamError> {
        let p: PingParams = parse_params(params)?;
        let h = &p.host;
        if h.is_empty()
            || h.starts_with('-')
            || h.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(key_error("host", format!("invalid host `{h}`")));
        }
        if p.count == 0 || p.count > 10 {
            return Err(key_error("count", "count must be between 1 and 10"));
        }
        Ok(PingProbe { params: p })
    }
}

/// The average round trip from ping's summary line, e.g. "rtt min/avg/max/mdev = ...".
fn ping_rtt(stdout: &str) -> Option<String> {
    let line = stdout.lines().find(|l| l.contains("min/avg/max"))?;
    let values = line.split('=').nth(1)?.trim();
    let avg = values.split('/').nth(1)?;
    Some(format!("rtt avg {avg} ms"))
}

#[async_trait]
impl Probe for PingProbe {
    fn kind(&self) -> &'static str {
        "ping"
    }

    async fn probe(&self, ctx: &ProbeContext) -> Result<ProbeOk, ProviderError> {
        // Let ping give up by itself just before our deadline (whole seconds, at least 1).
        let secs = ctx.timeout.as_secs().max(1).to_string();
        let args = [
            "-n".to_string(),
            "-c".into(),
            self.params.count.to_string(),
            "-W".into(),
            secs.clone(),
            "-w".into(),
            secs,
            self.params.host.clone(),
        ];
        let spec = CommandSpec::argv(
            format!("ping {}", self.params.host),
            "ping",
            args,
            ctx.timeout,
        )
        .with_missing_hint("install the iputils-ping package");
        let out = execute(&spec).await?;
        if out.success() {
            Ok(ProbeOk {
                detail: ping_rtt(&out.stdout),
            })
        } else {
            let why = if out.status == 1 {
                "no reply".to_string()
            } else {
                out.last_line().unwrap_or_else(|| "(no output)".into())
            };
            Err(ProviderError::Unhealthy(format!(
                "ping {} failed: {why}",
                self.params.host
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtt() {
        let out = "PING 127.0.0.1 (127.0.0.1) 56(84) bytes of data.\n\
                   64 bytes from 127.0.0.1: icmp_seq=1 ttl=64 time=0.030 ms\n\n\
                   --- 127.0.0.1 ping statistics ---\n\
                   1 packets transmitted, 1 received, 0% packet loss, time 0ms\n\
                   rtt min/avg/max/mdev = 0.030/0.031/0.032/0.000 ms\n";
        assert_eq!(ping_rtt(out).as_deref(), Some("rtt avg 0.031 ms"));
        assert_eq!(ping_rtt("nothing"), None);
    }
}
