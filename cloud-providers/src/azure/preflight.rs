//! Preflight for Azure configurations: `baton cloud check` ([`check`]) reads what one
//! server's Azure resources and monitors name (zones, record sets, route tables, load
//! balancers, the metadata service) and asks Azure which actions the identity may
//! perform on each resource group (`Microsoft.Authorization/permissions`), without
//! changing anything; `baton cloud iam-policy --cloud azure` ([`custom_role`]) prints
//! the least-privilege custom role the whole configuration needs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use baton_cloud_client::azure::{
    ArmRequest, AzureClient, AzureFailure, DNS_API_VERSION, IMDS_INSTANCE_API_VERSION,
    NETWORK_API_VERSION, PRIVATE_DNS_API_VERSION, SCHEDULED_EVENTS_API_VERSION,
};
use baton_core::config::Config;
use reqwest::Method;
use serde_json::{json, Value};

use super::dns::AzureDnsParams;
use super::lb_probe::{lb_problems, AzureLbProbeParams};
use super::vip::{AzureVipParams, RouteTable};
use crate::cloud::{Finding, PreflightFailure, Report, Status};
use crate::params::parse_params;

/// api-version of `Microsoft.Authorization/permissions` (the caller's own actions).
pub const PERMISSIONS_API_VERSION: &str = "2015-07-01";

/// The resource kinds and monitor kinds this module knows.
pub fn is_azure_kind(kind: &str) -> bool {
    kind.starts_with("azure-")
}

/// A resource group: (subscription, group).
type Rg = (String, String);

/// The actions one Azure resource or monitor needs, and where.
fn needs(kind: &str, params: &toml::Table, cfg: &Config) -> Option<(Rg, Vec<String>)> {
    let rg = |sub: &Option<String>, group: &Option<String>| -> Option<Rg> {
        Some((
            sub.clone().or_else(|| cfg.azure.subscription_id.clone())?,
            group.clone().or_else(|| cfg.azure.resource_group.clone())?,
        ))
    };
    match kind {
        "azure-dns" => {
            let p: AzureDnsParams = parse_params(params).ok()?;
            let zones = if p.private {
                "privateDnsZones"
            } else {
                "dnsZones"
            };
            let t = if p.cname.is_some() { "CNAME" } else { "A" };
            let base = format!("Microsoft.Network/{zones}");
            Some((
                rg(&p.subscription_id, &p.resource_group)?,
                vec![
                    format!("{base}/read"),
                    format!("{base}/{t}/read"),
                    format!("{base}/{t}/write"),
                    format!("{base}/{t}/delete"),
                ],
            ))
        }
        "azure-vip" => {
            let p: AzureVipParams = parse_params(params).ok()?;
            Some((
                rg(&p.subscription_id, &p.resource_group)?,
                vec![
                    "Microsoft.Network/routeTables/read".into(),
                    "Microsoft.Network/routeTables/write".into(),
                    "Microsoft.Network/locations/operations/read".into(),
                ],
            ))
        }
        "azure-lb-probe" => {
            let p: AzureLbProbeParams = parse_params(params).ok()?;
            p.load_balancer.as_ref()?;
            Some((
                rg(&p.subscription_id, &p.resource_group)?,
                vec!["Microsoft.Network/loadBalancers/read".into()],
            ))
        }
        _ => None,
    }
}

/// Every (kind, params) of the configuration that runs on `server` (all servers: `None`).
fn uses<'c>(cfg: &'c Config, server: Option<&str>) -> Vec<(String, &'c str, toml::Table)> {
    let mut out = Vec::new();
    for g in &cfg.groups {
        for s in &g.servers {
            if server.is_some_and(|x| x != s) {
                continue;
            }
            for r in g.resources.iter().filter(|r| is_azure_kind(&r.kind)) {
                out.push((
                    format!("resource {}/{}", g.name, r.name),
                    r.kind.as_str(),
                    r.params_for(s),
                ));
            }
        }
    }
    for m in cfg.monitors.iter().filter(|m| is_azure_kind(&m.kind)) {
        let servers: Vec<&str> = match server {
            Some(s) => vec![s],
            None => cfg.servers.iter().map(|s| s.name.as_str()).collect(),
        };
        for s in servers {
            out.push((
                format!("monitor {}", m.name),
                m.kind.as_str(),
                m.params_for(s),
            ));
        }
    }
    out
}

/// Does the configuration use any Azure kind?
pub fn uses_azure(cfg: &Config) -> bool {
    !uses(cfg, None).is_empty()
}

/// The least-privilege custom role for the whole configuration, in the JSON shape of
/// `az role definition create --role-definition @role.json`.
pub fn custom_role(cfg: &Config) -> Value {
    let mut actions: BTreeSet<String> = BTreeSet::new();
    let mut scopes: BTreeSet<String> = BTreeSet::new();
    let mut unresolved = false;
    for (_, kind, params) in uses(cfg, None) {
        match needs(kind, &params, cfg) {
            Some(((sub, group), a)) => {
                scopes.insert(format!("/subscriptions/{sub}/resourceGroups/{group}"));
                actions.extend(a);
            }
            None => unresolved |= kind != "azure-events" && kind != "azure-lb-probe",
        }
    }
    if unresolved {
        scopes.insert("/subscriptions/<subscription-id>/resourceGroups/<resource-group>".into());
    }
    json!({
        "Name": format!("Baton cluster {}", cfg.cluster_name),
        "IsCustom": true,
        "Description": "What the Baton agents of this cluster change and read (generated by `baton cloud iam-policy --cloud azure`).",
        "Actions": actions,
        "NotActions": [],
        "DataActions": [],
        "NotDataActions": [],
        "AssignableScopes": scopes,
    })
}

/// Does an action pattern (`Microsoft.Network/*/read`) match `action`? Case-insensitive;
/// `*` matches any run of characters.
pub fn action_matches(pattern: &str, action: &str) -> bool {
    fn go(p: &[u8], a: &[u8]) -> bool {
        match p.split_first() {
            None => a.is_empty(),
            Some((b'*', rest)) => (0..=a.len()).any(|i| go(rest, &a[i..])),
            Some((c, rest)) => a
                .split_first()
                .is_some_and(|(d, tail)| c.eq_ignore_ascii_case(d) && go(rest, tail)),
        }
    }
    go(pattern.as_bytes(), action.as_bytes())
}

/// May `action` be done, given the permissions Azure lists (one entry per role: its
/// actions minus its notActions; entries add up)?
pub fn permitted(permissions: &Value, action: &str) -> bool {
    let list = |e: &Value, k: &str| -> Vec<String> {
        e[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    permissions["value"].as_array().is_some_and(|entries| {
        entries.iter().any(|e| {
            list(e, "actions").iter().any(|p| action_matches(p, action))
                && !list(e, "notActions")
                    .iter()
                    .any(|p| action_matches(p, action))
        })
    })
}

impl PreflightFailure for AzureFailure {
    fn not_found(&self) -> bool {
        self.status() == Some(404)
    }
    fn denied(&self) -> bool {
        self.status() == Some(403)
    }
    fn fix(&self) -> &'static str {
        "assign the role of `baton cloud iam-policy --cloud azure`"
    }
}

async fn get(
    client: &AzureClient,
    op: &str,
    path: &str,
    version: &'static str,
    per_call: Duration,
) -> Result<Value, AzureFailure> {
    client
        .send(&ArmRequest::new(op, Method::GET, path, version), per_call)
        .await
        .map(|r| r.body)
}

/// Check every Azure resource and monitor `server` runs, with this client.
pub async fn check(
    cfg: &Config,
    server: &str,
    client: &AzureClient,
    per_call: Duration,
) -> Vec<Finding> {
    let mut all = Vec::new();
    let mut perms: BTreeMap<Rg, Result<Value, String>> = BTreeMap::new();
    for (subject, kind, params) in uses(cfg, Some(server)) {
        let mut rep = Report::new(subject);
        let rg = needs(kind, &params, cfg);
        let prefix = rg.as_ref().map(|((s, g), _)| {
            format!("/subscriptions/{s}/resourceGroups/{g}/providers/Microsoft.Network")
        });
        match (kind, &prefix) {
            ("azure-dns", Some(prefix)) => {
                if let Ok(p) = parse_params::<AzureDnsParams>(&params) {
                    let (zones, version) = if p.private {
                        ("privateDnsZones", PRIVATE_DNS_API_VERSION)
                    } else {
                        ("dnsZones", DNS_API_VERSION)
                    };
                    let zone = p.zone.trim_end_matches('.');
                    let zpath = format!("{prefix}/{zones}/{zone}");
                    match get(client, "Zones.Get", &zpath, version, per_call).await {
                        Ok(_) => {
                            rep.add("zone", Status::Ok, format!("{zone} exists"));
                            let t = if p.cname.is_some() { "CNAME" } else { "A" };
                            let rpath = format!("{zpath}/{t}/{}", p.record);
                            match get(client, "RecordSets.Get", &rpath, version, per_call).await {
                                Ok(b) => rep.add(
                                    "record",
                                    Status::Ok,
                                    format!(
                                        "{t} {} exists (epoch mark: {})",
                                        p.record,
                                        b["properties"]["metadata"]["baton_epoch"]
                                            .as_str()
                                            .unwrap_or("none")
                                    ),
                                ),
                                Err(f) if f.status() == Some(404) => rep.add(
                                    "record",
                                    Status::Ok,
                                    format!("{t} {} absent: written at activation", p.record),
                                ),
                                Err(f) => rep.failed("record", &f),
                            }
                        }
                        Err(f) => rep.failed("zone", &f),
                    }
                }
            }
            ("azure-vip", Some(prefix)) => {
                if let Ok(p) = parse_params::<AzureVipParams>(&params) {
                    let route = p
                        .route_name
                        .clone()
                        .unwrap_or_else(|| format!("baton-vip-{}", p.ip.trim().replace('.', "-")));
                    for t in &p.route_tables {
                        let path = format!("{prefix}/routeTables/{t}");
                        match get(
                            client,
                            "RouteTables.Get",
                            &path,
                            NETWORK_API_VERSION,
                            per_call,
                        )
                        .await
                        {
                            Ok(b) => {
                                let table = RouteTable::from_json(&b, &route);
                                let detail = match &table.route {
                                    Some(r) => format!(
                                        "{t} exists; route {route} sends {} to {} {}",
                                        r.prefix,
                                        r.next_hop_type,
                                        r.next_hop.as_deref().unwrap_or("-")
                                    ),
                                    None => format!(
                                        "{t} exists; route {route} is created at activation"
                                    ),
                                };
                                rep.add("route-table", Status::Ok, detail);
                            }
                            Err(f) => rep.failed("route-table", &f),
                        }
                    }
                }
            }
            ("azure-lb-probe", Some(prefix)) => {
                if let Ok(p) = parse_params::<AzureLbProbeParams>(&params) {
                    let lb = p.load_balancer.clone().unwrap_or_default();
                    let path = format!("{prefix}/loadBalancers/{lb}");
                    match get(
                        client,
                        "LoadBalancers.Get",
                        &path,
                        NETWORK_API_VERSION,
                        per_call,
                    )
                    .await
                    {
                        Ok(b) => {
                            let problems = lb_problems(&b, &p, p.path.as_deref().unwrap_or("/"));
                            if problems.is_empty() {
                                rep.add(
                                    "load-balancer",
                                    Status::Ok,
                                    format!("{lb} probes port {} and a rule uses it", p.port),
                                );
                            } else {
                                rep.add(
                                    "load-balancer",
                                    Status::Fail,
                                    format!("{lb}: {}", problems.join("; ")),
                                );
                            }
                        }
                        Err(f) => rep.failed("load-balancer", &f),
                    }
                }
            }
            ("azure-lb-probe", None) => rep.add(
                "load-balancer",
                Status::Skip,
                "no `load_balancer` named: only the monitor checks it",
            ),
            ("azure-events", _) => {
                let path =
                    format!("/metadata/scheduledevents?api-version={SCHEDULED_EVENTS_API_VERSION}");
                match client
                    .imds_get("ScheduledEvents.Get", &path, per_call)
                    .await
                {
                    Ok(b) => rep.add(
                        "scheduled-events",
                        Status::Ok,
                        format!(
                            "the metadata service answers ({} event(s) now)",
                            b.body["Events"].as_array().map_or(0, Vec::len)
                        ),
                    ),
                    Err(f) => rep.failed("scheduled-events", &f),
                }
                let ipath = format!("/metadata/instance?api-version={IMDS_INSTANCE_API_VERSION}");
                if let Ok(b) = client.imds_get("Imds.Instance", &ipath, per_call).await {
                    rep.add(
                        "vm",
                        Status::Ok,
                        format!(
                            "this VM is {}",
                            b.body["compute"]["name"].as_str().unwrap_or("unnamed")
                        ),
                    );
                }
            }
            (_, None) => rep.add(
                "config",
                Status::Fail,
                "no subscription_id or resource_group: set them on the resource or in [azure]",
            ),
            _ => {}
        }
        if let Some((rg, actions)) = rg {
            if !perms.contains_key(&rg) {
                let path = format!(
                    "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Authorization/permissions",
                    rg.0, rg.1
                );
                let r = get(
                    client,
                    "Permissions.ListForResourceGroup",
                    &path,
                    PERMISSIONS_API_VERSION,
                    per_call,
                )
                .await
                .map_err(|f| f.to_string());
                perms.insert(rg.clone(), r);
            }
            match perms.get(&rg) {
                Some(Ok(p)) => {
                    for a in actions {
                        if permitted(p, &a) {
                            rep.add(&format!("permission:{a}"), Status::Ok, "allowed");
                        } else {
                            rep.add(
                                &format!("permission:{a}"),
                                Status::Fail,
                                format!(
                                    "not allowed on resource group {}: assign the role of `baton cloud iam-policy --cloud azure`",
                                    rg.1
                                ),
                            );
                        }
                    }
                }
                Some(Err(e)) => rep.add(
                    "permissions",
                    Status::Skip,
                    format!("could not list the identity's permissions: {e}"),
                ),
                None => {}
            }
        }
        all.extend(rep.out);
    }
    all
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn wildcards_and_not_actions() {
        assert!(action_matches("*", "Microsoft.Network/routeTables/write"));
        assert!(action_matches(
            "microsoft.network/*/read",
            "Microsoft.Network/routeTables/read"
        ));
        assert!(!action_matches(
            "Microsoft.Network/*/read",
            "Microsoft.Network/routeTables/write"
        ));
        assert!(action_matches(
            "Microsoft.Network/dnsZones/*",
            "Microsoft.Network/dnsZones/A/write"
        ));
        let p = json!({"value": [
            {"actions": ["Microsoft.Network/*"], "notActions": ["Microsoft.Network/routeTables/write"]},
            {"actions": ["*/read"], "notActions": []}]});
        assert!(permitted(&p, "Microsoft.Network/dnsZones/A/write"));
        assert!(!permitted(&p, "Microsoft.Network/routeTables/write"));
        assert!(permitted(&p, "Microsoft.Network/routeTables/read"));
        // Another role granting what the first one excludes does grant it.
        let q = json!({"value": [
            {"actions": ["Microsoft.Network/*"], "notActions": ["Microsoft.Network/routeTables/write"]},
            {"actions": ["Microsoft.Network/routeTables/*"]}]});
        assert!(permitted(&q, "Microsoft.Network/routeTables/write"));
        assert!(!permitted(&json!({}), "x"));
    }
}
