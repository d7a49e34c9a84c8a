//! `gcp-lb-probe`: the active server answers the internal load balancer's health check
//! (EXPRESSCLUSTER's Google Cloud Virtual IP resource, Pacemaker's gcp-ilb): while the
//! group is active here, a listener on `port` accepts the health checker's connections
//! (`tcp`: accept and close; `http`: answer `200 OK` to any request), so the load
//! balancer sends the forwarding rule's traffic to this server only. Deactivation stops
//! the listener first and returns once the port is closed, so two servers never answer
//! at the same time through this resource. The resource needs no API call.
//!
//! The monitor of the same name checks through the Compute API that the backend service
//! exists and uses a health check on that port (with the protocol configured, and the
//! health check named when `health_check` is set): otherwise the load balancer would not
//! follow the active server (BTN-8113). A failing API is `ProviderError::Api`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use async_trait::async_trait;
use baton_cloud_client::gcp::{GcpClient, GcpRequest};
use baton_core::events as ev;
use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;

use super::{check_project, GcpShared};
use crate::cloud::{Deadline, Latch, Subject};
use crate::params::{key_error, parse_params};
use crate::probe_port::{Answer, ProbePort};
use crate::{
    ActionContext, CheckOutcome, ParamError, Params, Probe, ProbeContext, ProbeOk, ProviderError,
    ResourceDriver,
};

/// What the health check speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProbeProtocol {
    /// Accept the connection and close it (a TCP health check).
    #[default]
    Tcp,
    /// Answer `200 OK` to any request (an HTTP health check; any path).
    Http,
}

/// Keys of a `gcp-lb-probe` resource (and of the `gcp-lb-probe` monitor).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcpLbProbeParams {
    /// Required. The port the load balancer's health check probes.
    pub port: u16,
    /// `tcp` (default) or `http`.
    #[serde(default)]
    pub protocol: ProbeProtocol,
    /// The address to listen on (default `0.0.0.0`: every address).
    #[serde(default = "default_address")]
    pub address: IpAddr,
    /// The internal load balancer's backend service (required by the monitor).
    pub backend_service: Option<String>,
    /// The backend service's region (default `[gcp] region`; none: a global one).
    pub region: Option<String>,
    /// The health check the backend service must use (default: any on `port`).
    pub health_check: Option<String>,
    /// The backend service's project (default: `[gcp] project`, the key file's or the
    /// metadata server's).
    pub project: Option<String>,
}

fn default_address() -> IpAddr {
    IpAddr::from([0, 0, 0, 0])
}

/// The driver of a `gcp-lb-probe` resource.
#[derive(Debug)]
pub struct GcpLbProbeDriver {
    pub params: GcpLbProbeParams,
    port: ProbePort,
    shared: Arc<GcpShared>,
}

impl GcpLbProbeDriver {
    pub fn from_params(params: &Params, shared: Arc<GcpShared>) -> Result<Self, ParamError> {
        let p: GcpLbProbeParams = parse_params(params)?;
        if p.port == 0 {
            return Err(key_error("port", "port must be between 1 and 65535"));
        }
        for (key, v) in [
            ("backend_service", &p.backend_service),
            ("health_check", &p.health_check),
        ] {
            if let Some(v) = v {
                let ok = !v.is_empty()
                    && v.len() <= 63
                    && v.starts_with(|c: char| c.is_ascii_lowercase())
                    && !v.ends_with('-')
                    && v.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
                if !ok {
                    return Err(key_error(
                        key,
                        format!(
                            "`{v}` is not a Compute resource name: 1 to 63 lower-case letters, \
                             digits and `-`, starting with a letter"
                        ),
                    ));
                }
            }
        }
        if let Some(r) = &p.region {
            if !baton_core::config::is_location(r, false) {
                return Err(key_error(
                    "region",
                    format!("`{r}` is not a region: expected a name such as us-central1"),
                ));
            }
        }
        check_project(p.project.as_deref())?;
        let answer = match p.protocol {
            ProbeProtocol::Tcp => Answer::Tcp,
            ProbeProtocol::Http => Answer::Http { path: None },
        };
        Ok(GcpLbProbeDriver {
            port: ProbePort::new(SocketAddr::new(p.address, p.port), answer),
            params: p,
            shared,
        })
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.params.address, self.params.port)
    }

    fn is_listening(&self) -> bool {
        self.port.running()
    }

    async fn activate_inner(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        match self.port.start() {
            Ok(true) => {
                tracing::info!(addr = %self.addr(), protocol = ?self.params.protocol, "answering the load balancer's health check");
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(e) => {
                let msg = format!(
                    "resource {}: cannot listen on {} for the load balancer's health check: {e}",
                    ctx.resource,
                    self.addr()
                );
                self.shared.raise(
                    Subject::Action(ctx),
                    None,
                    &ev::GCP_LB_PROBE_FAILED,
                    msg.clone(),
                );
                Err(ProviderError::Other(msg))
            }
        }
    }

    async fn deactivate_inner(&self) -> Result<(), ProviderError> {
        // The socket and every health check in progress are closed on return.
        if self.port.stop().await {
            tracing::info!(addr = %self.addr(), "stopped answering the health check");
        }
        Ok(())
    }
}

#[async_trait]
impl ResourceDriver for GcpLbProbeDriver {
    fn kind(&self) -> &'static str {
        "gcp-lb-probe"
    }

    async fn activate(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        self.activate_inner(ctx).await
    }

    async fn deactivate(&self, _ctx: &ActionContext) -> Result<(), ProviderError> {
        self.deactivate_inner().await
    }

    async fn check(&self, _ctx: &ActionContext) -> Result<CheckOutcome, ProviderError> {
        Ok(if self.is_listening() {
            CheckOutcome::Active
        } else {
            CheckOutcome::Inactive
        })
    }
}

/// The `gcp-lb-probe` monitor.
#[derive(Debug)]
pub struct GcpLbProbeMonitor {
    params: GcpLbProbeParams,
    backend_service: String,
    shared: Arc<GcpShared>,
    latch: Latch,
}

impl GcpLbProbeMonitor {
    pub fn from_params(params: &Params, shared: Arc<GcpShared>) -> Result<Self, ParamError> {
        let d = GcpLbProbeDriver::from_params(params, shared.clone())?;
        let Some(backend_service) = d.params.backend_service.clone() else {
            return Err(key_error(
                "backend_service",
                "missing required key `backend_service` (the internal load balancer's backend service) for the monitor",
            ));
        };
        Ok(GcpLbProbeMonitor {
            params: d.params.clone(),
            backend_service,
            shared,
            latch: Latch::default(),
        })
    }

    fn region(&self) -> Option<String> {
        self.params
            .region
            .clone()
            .or_else(|| self.shared.settings().region.clone())
    }

    /// The health check's port and protocol (`TCP`, `HTTP`, ...), when it has one.
    fn port_of(hc: &Value) -> Option<(u64, String)> {
        let kind = hc["type"].as_str().unwrap_or_default().to_string();
        let spec = match kind.as_str() {
            "TCP" => &hc["tcpHealthCheck"],
            "HTTP" => &hc["httpHealthCheck"],
            "HTTPS" => &hc["httpsHealthCheck"],
            "HTTP2" => &hc["http2HealthCheck"],
            "SSL" => &hc["sslHealthCheck"],
            _ => return None,
        };
        spec["port"].as_u64().map(|p| (p, kind))
    }

    async fn get(
        &self,
        client: &GcpClient,
        op: &str,
        path: &str,
        dl: &Deadline,
        subject: Subject<'_>,
    ) -> Result<Value, ProviderError> {
        client
            .send(&GcpRequest::compute(op, Method::GET, path), dl.remaining()?)
            .await
            .map(|r| r.body)
            .map_err(|f| self.shared.report(subject, Some(&self.latch), f))
    }
}

#[async_trait]
impl Probe for GcpLbProbeMonitor {
    fn kind(&self) -> &'static str {
        "gcp-lb-probe"
    }

    async fn probe(&self, ctx: &ProbeContext) -> Result<ProbeOk, ProviderError> {
        let subject = Subject::Probe(ctx);
        let latch = Some(&self.latch);
        let dl = Deadline::new(ctx.timeout);
        let client = self
            .shared
            .client()
            .await
            .map_err(|f| self.shared.report(subject, latch, f))?;
        let project = self
            .shared
            .project(
                self.params.project.as_deref(),
                client,
                dl.remaining()?,
                subject,
                latch,
            )
            .await?;
        let (op, path) = match self.region() {
            Some(r) => (
                "compute.regionBackendServices.get",
                format!(
                    "projects/{project}/regions/{r}/backendServices/{}",
                    self.backend_service
                ),
            ),
            None => (
                "compute.backendServices.get",
                format!(
                    "projects/{project}/global/backendServices/{}",
                    self.backend_service
                ),
            ),
        };
        let bs = self.get(client, op, &path, &dl, subject).await?;
        let mut seen = Vec::new();
        for link in bs["healthChecks"].as_array().into_iter().flatten() {
            let Some(link) = link.as_str() else { continue };
            let Some(rel) = link.find("projects/").map(|i| &link[i..]) else {
                continue;
            };
            let name = rel.rsplit('/').next().unwrap_or_default().to_string();
            if self
                .params
                .health_check
                .as_ref()
                .is_some_and(|h| *h != name)
            {
                seen.push(format!("{name} (not the one named)"));
                continue;
            }
            let op = if rel.contains("/regions/") {
                "compute.regionHealthChecks.get"
            } else {
                "compute.healthChecks.get"
            };
            let hc = self.get(client, op, rel, &dl, subject).await?;
            let wanted = match self.params.protocol {
                ProbeProtocol::Tcp => ["TCP", "TCP"],
                ProbeProtocol::Http => ["HTTP", "HTTP2"],
            };
            match Self::port_of(&hc) {
                Some((port, kind))
                    if port == u64::from(self.params.port) && wanted.contains(&kind.as_str()) =>
                {
                    self.latch.reset();
                    return Ok(ProbeOk {
                        detail: Some(format!(
                            "backend service {} uses health check {name} ({kind} port {port})",
                            self.backend_service
                        )),
                    });
                }
                Some((port, kind)) => seen.push(format!("{name} ({kind} port {port})")),
                None => seen.push(format!("{name} (no fixed port)")),
            }
        }
        let msg = format!(
            "{}: backend service {} uses no {} health check on port {}{}: it has {}",
            subject.name(),
            self.backend_service,
            match self.params.protocol {
                ProbeProtocol::Tcp => "TCP",
                ProbeProtocol::Http => "HTTP",
            },
            self.params.port,
            self.params
                .health_check
                .as_ref()
                .map(|h| format!(" named {h}"))
                .unwrap_or_default(),
            if seen.is_empty() {
                "none".to_string()
            } else {
                seen.join(", ")
            }
        );
        self.shared
            .raise(subject, latch, &ev::GCP_LB_PROBE_MISMATCH, msg.clone());
        Err(ProviderError::Unhealthy(msg))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn table(s: &str) -> Params {
        s.parse::<toml::Table>().unwrap()
    }

    fn shared() -> Arc<GcpShared> {
        Arc::new(GcpShared::new(&Default::default()))
    }

    #[test]
    fn params() {
        let d = GcpLbProbeDriver::from_params(&table("port = 7080"), shared()).unwrap();
        assert_eq!(d.params.protocol, ProbeProtocol::Tcp);
        assert_eq!(d.addr().to_string(), "0.0.0.0:7080");
        for (text, key) in [
            ("port = 0", "port"),
            ("port = 70000", "port"),
            ("port = 7080\nprotocol = 'udp'", "protocol"),
            ("port = 7080\naddress = 'x'", "address"),
            (
                "port = 7080\nbackend_service = 'Baton_ILB'",
                "backend_service",
            ),
            ("port = 7080\nregion = 'us-central1-a'", "region"),
            ("protocol = 'tcp'", "port"),
        ] {
            let e = GcpLbProbeDriver::from_params(&table(text), shared()).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{text}: {e}");
        }
        let e = GcpLbProbeMonitor::from_params(&table("port = 7080"), shared()).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("backend_service"));
    }

    #[test]
    fn health_check_ports() {
        let hc = serde_json::json!({"type": "HTTP", "httpHealthCheck": {"port": 8080}});
        assert_eq!(
            GcpLbProbeMonitor::port_of(&hc),
            Some((8080, "HTTP".to_string()))
        );
        let hc = serde_json::json!({"type": "TCP", "tcpHealthCheck": {"portSpecification": "USE_SERVING_PORT"}});
        assert_eq!(GcpLbProbeMonitor::port_of(&hc), None);
    }
}
