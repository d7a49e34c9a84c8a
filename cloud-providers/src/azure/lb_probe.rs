//! `azure-lb-probe`: the probe-port pattern. An internal (or public) load balancer has
//! a frontend address (the VIP), a rule that sends its traffic to a backend pool holding
//! every server, and a health probe on a port no application uses. Only the active
//! server answers that port, so the load balancer sends the VIP's traffic there alone
//! (EXPRESSCLUSTER's Azure probe port resource; Pacemaker's `azure-lb`).
//!
//! The resource listens on `port` while the group is active here: a TCP probe succeeds
//! on the handshake (the connection is closed at once), an HTTP probe gets `200` for
//! `path` (and `404` for any other path). Deactivation closes the listening socket and
//! every open probe connection before anything else, so the load balancer marks this
//! server down after its `numberOfProbes` × `intervalInSeconds`; put the resource last
//! in the group so that it starts last and stops first. The listener lives in the
//! agent: an agent restart closes it until the group is adopted again (within one
//! probe interval, the load balancer keeps the server for `numberOfProbes` failures).
//!
//! The monitor of the same name reads the load balancer through the Azure API and
//! checks that a probe on `port` (of the configured protocol and path) exists and that a
//! load-balancing rule uses it; while the group is active here (`timing = "active"`)
//! it also connects to the port itself. What it finds wrong is said in its message and
//! in BTN-8014.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use baton_cloud_client::azure::{ArmRequest, NETWORK_API_VERSION};
use baton_core::events as ev;
use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;

use super::vip::check_network_name;
use super::{AzureShared, Scope};
use crate::cloud::{Deadline, Latch, Subject};
use crate::params::{key_error, parse_params};
use crate::probe_port::{Answer, ProbePort};
use crate::{
    ActionContext, CheckOutcome, ParamError, Params, Probe, ProbeContext, ProbeOk, ProviderError,
    ResourceDriver,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeProtocol {
    Tcp,
    Http,
}

impl ProbeProtocol {
    fn azure(self) -> &'static str {
        match self {
            ProbeProtocol::Tcp => "Tcp",
            ProbeProtocol::Http => "Http",
        }
    }
}

/// Keys of an `azure-lb-probe` resource (and of the `azure-lb-probe` monitor).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureLbProbeParams {
    /// Required. The port the load balancer's health probe connects to.
    pub port: u16,
    /// `tcp` (default: a completed handshake is healthy) or `http` (`200` for `path`).
    #[serde(default = "default_protocol")]
    pub protocol: ProbeProtocol,
    /// For `http`: the probe's request path (default `/`).
    pub path: Option<String>,
    /// The local address to listen on (default `0.0.0.0`, every address).
    pub bind: Option<String>,
    /// The load balancer whose probe and rule the monitor checks (required for the
    /// monitor; the resource does not call Azure).
    pub load_balancer: Option<String>,
    /// The probe's name in the load balancer (default: any probe on `port`).
    pub probe: Option<String>,
    /// A load-balancing rule that must use the probe (default: at least one does).
    pub rule: Option<String>,
    /// The load balancer's resource group (default: `[azure] resource_group`).
    pub resource_group: Option<String>,
    /// The load balancer's subscription (default: `[azure] subscription_id`).
    pub subscription_id: Option<String>,
}

fn default_protocol() -> ProbeProtocol {
    ProbeProtocol::Tcp
}

/// The checked keys shared by the resource and the monitor.
#[derive(Debug, Clone)]
struct Settings {
    params: AzureLbProbeParams,
    addr: SocketAddr,
    path: String,
}

impl Settings {
    fn from_params(params: &Params) -> Result<Settings, ParamError> {
        let p: AzureLbProbeParams = parse_params(params)?;
        if p.port == 0 {
            return Err(key_error("port", "port must be between 1 and 65535"));
        }
        let ip: IpAddr = match &p.bind {
            Some(b) => b.parse().map_err(|_| {
                key_error(
                    "bind",
                    format!("invalid address `{b}`: expected a local IP address such as 10.0.1.4 or 0.0.0.0"),
                )
            })?,
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        let path = match (&p.protocol, &p.path) {
            (ProbeProtocol::Tcp, Some(_)) => {
                return Err(key_error(
                    "path",
                    "`path` is for `protocol = \"http\"`; a TCP probe has no path",
                ))
            }
            (_, Some(path)) if !path.starts_with('/') || path.contains(char::is_whitespace) => {
                return Err(key_error(
                    "path",
                    format!("`{path}` is not a request path: it starts with `/` and has no spaces"),
                ))
            }
            (_, Some(path)) => path.clone(),
            (_, None) => "/".into(),
        };
        for (key, v, what) in [
            ("load_balancer", &p.load_balancer, "a load balancer"),
            ("probe", &p.probe, "a probe"),
            ("rule", &p.rule, "a load-balancing rule"),
        ] {
            if let Some(v) = v {
                check_network_name(key, v, what)?;
            }
        }
        Ok(Settings {
            addr: SocketAddr::new(ip, p.port),
            path,
            params: p,
        })
    }
}

/// The driver of an `azure-lb-probe` resource.
#[derive(Debug)]
pub struct AzureLbProbeDriver {
    settings: Settings,
    shared: Arc<AzureShared>,
    port: ProbePort,
}

impl AzureLbProbeDriver {
    pub fn from_params(params: &Params, shared: Arc<AzureShared>) -> Result<Self, ParamError> {
        let settings = Settings::from_params(params)?;
        // The scope is checked here too, for the monitor sharing these keys.
        Scope::resolve(
            &shared,
            settings.params.subscription_id.as_deref(),
            settings.params.resource_group.as_deref(),
        )?;
        let answer = match settings.params.protocol {
            ProbeProtocol::Tcp => Answer::Tcp,
            ProbeProtocol::Http => Answer::Http {
                path: Some(settings.path.clone()),
            },
        };
        Ok(AzureLbProbeDriver {
            port: ProbePort::new(settings.addr, answer),
            settings,
            shared,
        })
    }

    /// The address the probe port listens on.
    pub fn addr(&self) -> SocketAddr {
        self.settings.addr
    }

    async fn activate_inner(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        let subject = Subject::Action(ctx);
        let started = self.port.start().map_err(|e| {
            let msg = format!(
                "{}: cannot listen on probe port {}: {e} (another process on the port, or `bind` not an address of this server)",
                subject.name(),
                self.settings.addr
            );
            self.shared
                .raise(subject, None, &ev::AZURE_LB_PROBE_PORT_FAILED, msg.clone());
            ProviderError::Other(msg)
        })?;
        if started {
            self.shared.events.emit(subject.event(
                &ev::AZURE_LB_PROBE_ANSWERING,
                format!(
                    "{}: answering the load balancer's {} probe on {}",
                    subject.name(),
                    self.settings.params.protocol.azure(),
                    self.settings.addr
                ),
            ));
        }
        Ok(())
    }

    async fn deactivate_inner(&self, ctx: &ActionContext) {
        // Closing the socket and the probes in progress first: the load balancer's next
        // probe fails.
        if self.port.stop().await {
            let subject = Subject::Action(ctx);
            self.shared.events.emit(subject.event(
                &ev::AZURE_LB_PROBE_ANSWERING,
                format!(
                    "{}: stopped answering the probe on {}",
                    subject.name(),
                    self.settings.addr
                ),
            ));
        }
    }
}

#[async_trait]
impl ResourceDriver for AzureLbProbeDriver {
    fn kind(&self) -> &'static str {
        "azure-lb-probe"
    }

    async fn activate(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        self.activate_inner(ctx).await
    }

    async fn deactivate(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        self.deactivate_inner(ctx).await;
        Ok(())
    }

    async fn check(&self, _ctx: &ActionContext) -> Result<CheckOutcome, ProviderError> {
        Ok(if self.port.running() {
            CheckOutcome::Active
        } else {
            CheckOutcome::Inactive
        })
    }
}

/// The `azure-lb-probe` monitor.
#[derive(Debug)]
pub struct AzureLbProbeMonitor {
    settings: Settings,
    load_balancer: String,
    scope: Scope,
    shared: Arc<AzureShared>,
    latch: Latch,
}

/// What a load balancer says about the probe on our port.
pub fn lb_problems(lb: &Value, p: &AzureLbProbeParams, path: &str) -> Vec<String> {
    let props = &lb["properties"];
    let empty = Vec::new();
    let probes = props["probes"].as_array().unwrap_or(&empty);
    let rules = props["loadBalancingRules"].as_array().unwrap_or(&empty);
    let name_of = |v: &Value| v["name"].as_str().unwrap_or_default().to_string();
    let mut problems = Vec::new();
    let candidates: Vec<&Value> = match &p.probe {
        Some(n) => probes
            .iter()
            .filter(|x| {
                x["name"]
                    .as_str()
                    .is_some_and(|m| m.eq_ignore_ascii_case(n))
            })
            .collect(),
        None => probes
            .iter()
            .filter(|x| x["properties"]["port"].as_u64() == Some(u64::from(p.port)))
            .collect(),
    };
    let listed = || {
        if probes.is_empty() {
            "none".to_string()
        } else {
            probes
                .iter()
                .map(|x| {
                    format!(
                        "{} ({} {})",
                        name_of(x),
                        x["properties"]["protocol"].as_str().unwrap_or("?"),
                        x["properties"]["port"]
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let Some(probe) = candidates.first() else {
        problems.push(match &p.probe {
            Some(n) => format!("it has no probe named {n} (probes: {})", listed()),
            None => format!("it has no probe on port {} (probes: {})", p.port, listed()),
        });
        return problems;
    };
    let pp = &probe["properties"];
    let pname = name_of(probe);
    if pp["port"].as_u64() != Some(u64::from(p.port)) {
        problems.push(format!(
            "probe {pname} checks port {}, not {}",
            pp["port"], p.port
        ));
    }
    let proto = pp["protocol"].as_str().unwrap_or_default();
    if !proto.eq_ignore_ascii_case(p.protocol.azure()) {
        problems.push(format!(
            "probe {pname} is {proto}, not {}",
            p.protocol.azure()
        ));
    } else if p.protocol == ProbeProtocol::Http && pp["requestPath"].as_str() != Some(path) {
        problems.push(format!(
            "probe {pname} requests {}, not {path}",
            pp["requestPath"].as_str().unwrap_or("no path")
        ));
    }
    let probe_id = probe["id"].as_str().unwrap_or_default();
    let using: Vec<&Value> = rules
        .iter()
        .filter(|r| {
            r["properties"]["probe"]["id"]
                .as_str()
                .is_some_and(|id| id.eq_ignore_ascii_case(probe_id))
        })
        .collect();
    match &p.rule {
        Some(rule) => {
            match rules.iter().find(|r| {
                r["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(rule))
            }) {
                None => problems.push(format!("it has no load-balancing rule named {rule}")),
                Some(r) if !using.iter().any(|u| std::ptr::eq(*u, r)) => {
                    let other = r["properties"]["probe"]["id"]
                        .as_str()
                        .and_then(|id| id.rsplit('/').next())
                        .unwrap_or("no probe");
                    problems.push(format!("rule {rule} uses {other}, not probe {pname}"));
                }
                Some(_) => {}
            }
        }
        None if using.is_empty() => problems.push(format!(
            "no load-balancing rule uses probe {pname}: the probe decides nothing"
        )),
        None => {}
    }
    problems
}

impl AzureLbProbeMonitor {
    pub fn from_params(params: &Params, shared: Arc<AzureShared>) -> Result<Self, ParamError> {
        let settings = Settings::from_params(params)?;
        let Some(load_balancer) = settings.params.load_balancer.clone() else {
            return Err(key_error(
                "load_balancer",
                "missing required key `load_balancer`: the monitor checks that load balancer's probe and rule",
            ));
        };
        let scope = Scope::resolve(
            &shared,
            settings.params.subscription_id.as_deref(),
            settings.params.resource_group.as_deref(),
        )?;
        Ok(AzureLbProbeMonitor {
            settings,
            load_balancer,
            scope,
            shared,
            latch: Latch::default(),
        })
    }

    /// Connect to our own probe port (the address it listens on, loopback for any).
    async fn answers(&self, timeout: Duration) -> Result<(), String> {
        let mut addr = self.settings.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("the probe port {addr} does not answer here: {e}")),
            Err(_) => Err(format!("the probe port {addr} did not answer in time")),
        }
    }
}

#[async_trait]
impl Probe for AzureLbProbeMonitor {
    fn kind(&self) -> &'static str {
        "azure-lb-probe"
    }

    async fn probe(&self, ctx: &ProbeContext) -> Result<ProbeOk, ProviderError> {
        let subject = Subject::Probe(ctx);
        let dl = Deadline::new(ctx.timeout);
        let client = self
            .shared
            .client()
            .await
            .map_err(|f| self.shared.report(subject, Some(&self.latch), f))?;
        let req = ArmRequest::new(
            "LoadBalancers.Get",
            Method::GET,
            &format!(
                "{}/Microsoft.Network/loadBalancers/{}",
                self.scope.providers_path()?,
                self.load_balancer
            ),
            NETWORK_API_VERSION,
        );
        let lb = client
            .send(&req, dl.remaining()?)
            .await
            .map_err(|f| self.shared.report(subject, Some(&self.latch), f))?;
        let problems = lb_problems(&lb.body, &self.settings.params, &self.settings.path);
        if !problems.is_empty() {
            let msg = format!(
                "{}: load balancer {}: {}",
                subject.name(),
                self.load_balancer,
                problems.join("; ")
            );
            self.shared.raise(
                subject,
                Some(&self.latch),
                &ev::AZURE_LB_MISCONFIGURED,
                msg.clone(),
            );
            return Err(ProviderError::Unhealthy(msg));
        }
        if ctx.group_state == Some(baton_core::engine::GroupState::Online) {
            self.answers(dl.remaining()?)
                .await
                .map_err(|why| ProviderError::Unhealthy(format!("{}: {why}", subject.name())))?;
        }
        self.latch.reset();
        Ok(ProbeOk {
            detail: Some(format!(
                "load balancer {} probes port {}",
                self.load_balancer, self.settings.params.port
            )),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    fn settings(s: &str) -> Result<Settings, ParamError> {
        Settings::from_params(&s.parse::<toml::Table>().unwrap())
    }

    #[test]
    fn params() {
        let s = settings("port = 7080").unwrap();
        assert_eq!(s.addr, "0.0.0.0:7080".parse().unwrap());
        assert_eq!(s.params.protocol, ProbeProtocol::Tcp);
        let s = settings("port = 7080\nprotocol = 'http'\npath = '/healthz'\nbind = '10.0.1.4'")
            .unwrap();
        assert_eq!(s.path, "/healthz");
        for (text, key) in [
            ("port = 0", "port"),
            ("port = 70000", "port"),
            ("port = 7080\npath = '/x'", "path"),
            ("port = 7080\nprotocol = 'http'\npath = 'x'", "path"),
            ("port = 7080\nprotocol = 'udp'", "protocol"),
            ("port = 7080\nbind = 'eth0'", "bind"),
            ("port = 7080\nload_balancer = 'lb/x'", "load_balancer"),
            ("port = 7080\nprobe_name = 'x'", "probe_name"),
        ] {
            let e = settings(text).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{text}: {e}");
        }
        let e = AzureLbProbeMonitor::from_params(
            &"port = 7080".parse::<toml::Table>().unwrap(),
            Arc::new(AzureShared::lenient()),
        )
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("load_balancer"));
    }

    fn lb(probe_port: u64, rule_probe: Option<&str>) -> Value {
        let base =
            "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/loadBalancers/ilb";
        let mut rule =
            json!({"name": "sql", "properties": {"frontendPort": 1433, "backendPort": 1433}});
        if let Some(p) = rule_probe {
            rule["properties"]["probe"] = json!({"id": format!("{base}/probes/{p}")});
        }
        json!({"properties": {
            "probes": [{"id": format!("{base}/probes/baton"), "name": "baton",
                "properties": {"protocol": "Tcp", "port": probe_port}}],
            "loadBalancingRules": [rule]}})
    }

    #[test]
    fn load_balancer_problems_are_named() {
        let p = settings("port = 26001").unwrap().params;
        assert!(lb_problems(&lb(26001, Some("baton")), &p, "/").is_empty());
        assert_eq!(
            lb_problems(&lb(26002, Some("baton")), &p, "/"),
            ["it has no probe on port 26001 (probes: baton (Tcp 26002))"]
        );
        assert_eq!(
            lb_problems(&lb(26001, None), &p, "/"),
            ["no load-balancing rule uses probe baton: the probe decides nothing"]
        );
        let named = settings("port = 26001\nprobe = 'baton'\nrule = 'sql'")
            .unwrap()
            .params;
        assert_eq!(
            lb_problems(&lb(26002, Some("other")), &named, "/"),
            [
                "probe baton checks port 26002, not 26001",
                "rule sql uses other, not probe baton"
            ]
        );
        let http = settings("port = 26001\nprotocol = 'http'\npath = '/up'")
            .unwrap()
            .params;
        assert_eq!(
            lb_problems(&lb(26001, Some("baton")), &http, "/up"),
            ["probe baton is Tcp, not Http"]
        );
    }
}
