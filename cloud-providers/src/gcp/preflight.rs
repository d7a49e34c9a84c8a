//! Preflight for Google Cloud configurations: `baton cloud check` ([`check`]) verifies
//! that what one server's Google Cloud resources and monitors name exists (managed zones
//! and their DNS names, instances and their interfaces, backend services and their
//! health checks, the metadata server) and, where the API has `testIamPermissions`,
//! that the credentials may do what the kinds need; `baton cloud iam-policy`
//! ([`custom_role`]) prints the least-privilege custom role the whole configuration
//! needs. Nothing is changed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use baton_cloud_client::gcp::{FailureKind, GcpClient, GcpFailure, GcpRequest};
use baton_core::config::Config;
use reqwest::Method;
use serde_json::{json, Value};

use super::dns::{check_record_name, GcpDnsParams};
use super::vip::{GcpVipParams, VipMode};
use super::GcpShared;
use crate::cloud::{Finding, PreflightFailure, Report, Status};
use crate::params::parse_params;
use crate::{ProbeContext, Registry};

/// Permissions of `gcp-dns` (resource and monitor).
pub const DNS_PERMISSIONS: &[&str] = &[
    "dns.changes.create",
    "dns.changes.get",
    // `baton cloud check` reads the zone (its DNS name and visibility).
    "dns.managedZones.get",
    "dns.resourceRecordSets.create",
    "dns.resourceRecordSets.delete",
    "dns.resourceRecordSets.list",
    "dns.resourceRecordSets.update",
];
/// Permissions of `gcp-vip`, route pattern.
pub const ROUTE_PERMISSIONS: &[&str] = &[
    "compute.globalOperations.get",
    "compute.instances.get",
    "compute.networks.updatePolicy",
    "compute.routes.create",
    "compute.routes.delete",
    "compute.routes.get",
];
/// Permissions of `gcp-vip`, alias pattern.
pub const ALIAS_PERMISSIONS: &[&str] = &[
    "compute.instances.get",
    "compute.instances.list",
    "compute.instances.updateNetworkInterface",
    "compute.zoneOperations.get",
];
/// Permissions of the `gcp-lb-probe` monitor.
pub const LB_PERMISSIONS: &[&str] = &[
    "compute.backendServices.get",
    "compute.healthChecks.get",
    "compute.regionBackendServices.get",
    "compute.regionHealthChecks.get",
];

impl PreflightFailure for GcpFailure {
    fn not_found(&self) -> bool {
        self.kind() == FailureKind::NotFound
    }
    fn denied(&self) -> bool {
        self.kind() == FailureKind::PermissionDenied
    }
    fn fix(&self) -> &'static str {
        "grant the role of `baton cloud iam-policy`"
    }
}

/// Check every Google Cloud resource and monitor `server` runs, with this client.
pub async fn check(
    cfg: &Config,
    server: &str,
    client: &GcpClient,
    per_call: Duration,
) -> Vec<Finding> {
    let mut all = Vec::new();
    let shared = Arc::new(GcpShared::new(&cfg.gcp).with_client(client.clone()));
    let project = client.project(per_call).await;
    for g in &cfg.groups {
        if !g.servers.iter().any(|s| s == server) {
            continue;
        }
        for r in &g.resources {
            if !r.kind.starts_with("gcp-") {
                continue;
            }
            let mut rep = Report::new(format!("resource {}/{}", g.name, r.name));
            let params = r.params_for(server);
            let own_project = params
                .get("project")
                .and_then(|v| v.as_str())
                .map(str::to_string);
            let project = match (own_project, &project) {
                (Some(p), _) => p,
                (None, Ok(p)) => p.clone(),
                (None, Err(f)) => {
                    rep.failed("project", f);
                    all.extend(rep.out);
                    continue;
                }
            };
            match r.kind.as_str() {
                "gcp-dns" => dns(&mut rep, client, &project, &params, per_call).await,
                "gcp-vip" => vip(&mut rep, cfg, client, &project, &params, per_call).await,
                "gcp-lb-probe" => rep.add(
                    "api",
                    Status::Ok,
                    "the resource calls no API (the gcp-lb-probe monitor checks the load balancer)",
                ),
                _ => {}
            }
            all.extend(rep.out);
        }
    }
    let registry = super::GcpRegistry::from_shared(shared);
    for m in &cfg.monitors {
        if !matches!(
            m.kind.as_str(),
            "gcp-lb-probe" | "gcp-maintenance" | "gcp-dns" | "gcp-vip"
        ) {
            continue;
        }
        // gcp-dns and gcp-vip monitors read what their resources write: checked above.
        if matches!(m.kind.as_str(), "gcp-dns" | "gcp-vip") {
            continue;
        }
        let mut rep = Report::new(format!("monitor {}", m.name));
        let params = m.params_for(server);
        match registry.build_probe(&m.kind, &params) {
            Err(e) => rep.add("keys", Status::Fail, e.to_string()),
            Ok(probe) => {
                let ctx = ProbeContext {
                    cluster: cfg.cluster_name.clone(),
                    server: server.to_string(),
                    monitor: m.name.clone(),
                    // No hanging GET: one plain read.
                    timeout: per_call.min(Duration::from_secs(1)),
                    group_state: None,
                };
                let check = if m.kind == "gcp-maintenance" {
                    "metadata-server"
                } else {
                    "backend-service"
                };
                match probe.probe(&ctx).await {
                    Ok(ok) => rep.add(check, Status::Ok, ok.detail.unwrap_or_default()),
                    Err(e) if e.is_api_error() => rep.add(check, Status::Fail, e.to_string()),
                    Err(e) if m.kind == "gcp-maintenance" => {
                        rep.add(
                            check,
                            Status::Warn,
                            format!("{e} (an event is announced now)"),
                        );
                    }
                    Err(e) => rep.add(check, Status::Fail, e.to_string()),
                }
            }
        }
        all.extend(rep.out);
    }
    all
}

async fn dns(
    rep: &mut Report,
    client: &GcpClient,
    project: &str,
    params: &toml::Table,
    per_call: Duration,
) {
    let Ok(p) = parse_params::<GcpDnsParams>(params) else {
        return;
    };
    let Ok(name) = check_record_name(&p.record_name) else {
        return;
    };
    let req = GcpRequest::dns(
        "dns.managedZones.get",
        Method::GET,
        &format!("projects/{project}/managedZones/{}", p.zone),
    );
    match client.send(&req, per_call).await {
        Err(f) => rep.failed("managed-zone", &f),
        Ok(r) => {
            let dns_name = r.body["dnsName"]
                .as_str()
                .unwrap_or_default()
                .to_lowercase();
            let visibility = r.body["visibility"].as_str().unwrap_or("public");
            if name == dns_name || name.ends_with(&format!(".{dns_name}")) {
                rep.add(
                    "managed-zone",
                    Status::Ok,
                    format!("{} ({visibility}, {dns_name}) holds {name}", p.zone),
                );
            } else {
                rep.add(
                    "managed-zone",
                    Status::Fail,
                    format!("{name} is not inside zone {} ({dns_name})", p.zone),
                );
            }
        }
    }
    let req = GcpRequest::dns(
        "dns.managedZones.testIamPermissions",
        Method::POST,
        &format!(
            "projects/{project}/managedZones/{}:testIamPermissions",
            p.zone
        ),
    )
    .json(json!({ "permissions": DNS_PERMISSIONS }));
    // Short: an endpoint without the method (an emulator) answers 501 until the deadline.
    let budget = per_call.min(Duration::from_secs(2));
    permissions(rep, client.send(&req, budget).await, DNS_PERMISSIONS);
}

/// The answer of a `testIamPermissions` call: every permission granted, some missing,
/// or not verifiable here.
fn permissions(
    rep: &mut Report,
    answer: Result<baton_cloud_client::gcp::GcpResponse, GcpFailure>,
    wanted: &[&str],
) {
    match answer {
        Ok(r) => {
            let granted: BTreeSet<&str> = r.body["permissions"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let missing: Vec<&str> = wanted
                .iter()
                .copied()
                .filter(|p| !granted.contains(p))
                .collect();
            if missing.is_empty() {
                rep.add(
                    "permissions",
                    Status::Ok,
                    "every permission the kind needs is granted",
                );
            } else {
                rep.add(
                    "permissions",
                    Status::Fail,
                    format!(
                        "not granted: {} (grant the role of `baton cloud iam-policy`)",
                        missing.join(", ")
                    ),
                );
            }
        }
        Err(f) if f.kind() == FailureKind::PermissionDenied => rep.failed("permissions", &f),
        Err(f) => rep.add(
            "permissions",
            Status::Skip,
            format!("could not be verified: {f}"),
        ),
    }
}

async fn vip(
    rep: &mut Report,
    cfg: &Config,
    client: &GcpClient,
    project: &str,
    params: &toml::Table,
    per_call: Duration,
) {
    let Ok(p) = parse_params::<GcpVipParams>(params) else {
        return;
    };
    let instance = match &p.instance {
        Some(i) => Ok(i.clone()),
        None => client
            .metadata("instance/name", per_call)
            .await
            .map(|s| s.trim().to_string()),
    };
    let zone = match p.zone.clone().or_else(|| cfg.gcp.zone.clone()) {
        Some(z) => Ok(z),
        None => client
            .metadata("instance/zone", per_call)
            .await
            .map(|z| z.trim().rsplit('/').next().unwrap_or_default().to_string()),
    };
    let (instance, zone) = match (instance, zone) {
        (Ok(i), Ok(z)) => (i, z),
        (Err(f), _) | (_, Err(f)) => {
            rep.add(
                "instance",
                Status::Fail,
                format!("set `instance` and `zone`, or run the check on the server itself: {f}"),
            );
            return;
        }
    };
    let req = GcpRequest::compute(
        "compute.instances.get",
        Method::GET,
        &format!("projects/{project}/zones/{zone}/instances/{instance}"),
    );
    let inst = match client.send(&req, per_call).await {
        Ok(r) => r.body,
        Err(f) => {
            rep.failed("instance", &f);
            return;
        }
    };
    match p.mode {
        VipMode::Route => {
            if inst["canIpForward"].as_bool() == Some(true) {
                rep.add(
                    "instance",
                    Status::Ok,
                    format!("{instance} in {zone} forwards IP (next hop of {}/32)", p.ip),
                );
            } else {
                rep.add(
                    "instance",
                    Status::Fail,
                    format!(
                        "{instance} in {zone} does not forward IP: a route's next hop needs \
                         canIpForward (recreate the instance with --can-ip-forward)"
                    ),
                );
            }
        }
        VipMode::Alias => {
            let has_nic = inst["networkInterfaces"]
                .as_array()
                .is_some_and(|a| a.iter().any(|n| n["name"].as_str() == Some(&p.nic)));
            if has_nic {
                rep.add(
                    "instance",
                    Status::Ok,
                    format!("{instance} in {zone} has {}", p.nic),
                );
            } else {
                rep.add(
                    "instance",
                    Status::Fail,
                    format!("{instance} in {zone} has no network interface {}", p.nic),
                );
            }
        }
    }
    rep.add(
        "permissions",
        Status::Skip,
        "project-wide Compute permissions are not verifiable with the Compute API: compare the \
         service account's roles with `baton cloud iam-policy`",
    );
}

/// The least-privilege custom role for every Google Cloud kind of `cfg`: the
/// permissions of the kinds in use (`gcloud iam roles create ... --file`).
pub fn custom_role(cfg: &Config) -> Value {
    let mut perms: BTreeSet<&str> = BTreeSet::new();
    for g in &cfg.groups {
        for r in &g.resources {
            for s in &g.servers {
                let params = r.params_for(s);
                match r.kind.as_str() {
                    "gcp-dns" => perms.extend(DNS_PERMISSIONS),
                    "gcp-vip" => match parse_params::<GcpVipParams>(&params).map(|p| p.mode) {
                        Ok(VipMode::Alias) => perms.extend(ALIAS_PERMISSIONS),
                        _ => perms.extend(ROUTE_PERMISSIONS),
                    },
                    _ => {}
                }
            }
        }
    }
    for m in &cfg.monitors {
        match m.kind.as_str() {
            "gcp-dns" => perms.extend(DNS_PERMISSIONS),
            "gcp-lb-probe" => perms.extend(LB_PERMISSIONS),
            _ => {}
        }
    }
    json!({
        "title": "Baton",
        "description": format!("What the Google Cloud kinds of Baton cluster {} call.", cfg.cluster_name),
        "stage": "GA",
        "includedPermissions": perms.into_iter().collect::<Vec<_>>(),
    })
}

/// The role in the YAML form `gcloud iam roles create --file` reads.
pub fn custom_role_yaml(role: &Value) -> String {
    let mut s = String::new();
    for k in ["title", "description", "stage"] {
        s.push_str(&format!("{k}: {}\n", role[k]));
    }
    s.push_str("includedPermissions:\n");
    for p in role["includedPermissions"].as_array().into_iter().flatten() {
        if let Some(p) = p.as_str() {
            s.push_str(&format!("- {p}\n"));
        }
    }
    s
}

/// Does the configuration use a Google Cloud kind?
pub fn uses_gcp(cfg: &Config) -> bool {
    cfg.groups
        .iter()
        .flat_map(|g| &g.resources)
        .any(|r| r.kind.starts_with("gcp-"))
        || cfg.monitors.iter().any(|m| m.kind.starts_with("gcp-"))
}
