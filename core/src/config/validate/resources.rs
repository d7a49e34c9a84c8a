//! `[[group.resource]]`: the common keys, the kind-specific keys (checked by the
//! [`KindCatalog`]), `depends_on` references and the activation order.

use std::collections::{BTreeMap, BTreeSet};

use super::{check_max, check_name, ms, unknown_ref};
use crate::config::diagnostics::{k, path_string, typed, Diags, KeyPath, Seg};
use crate::config::model::merge_tables;
use crate::config::raw::{split, FenceStopMode, RawGroup, ResourceCommon, RESOURCE_COMMON};
use crate::config::{ActionPolicy, FenceStop, KindCatalog, Resource, LOCAL_SERVER_TARGET};

/// What a resource is checked against besides its own table.
pub(super) struct Context<'a> {
    /// Every group of the file.
    pub groups: &'a [RawGroup],
    /// How many interconnects each server has.
    pub paths: &'a BTreeMap<String, usize>,
    pub kinds: &'a dyn KindCatalog,
}

/// The resource at `rp` (`table`) of group `g`; `None` when its common keys do not
/// deserialise. `owners` (resource name → group, for the whole cluster) gains this
/// resource.
pub(super) fn validate(
    d: &mut Diags<'_>,
    rp: KeyPath,
    table: &toml::Table,
    g: &RawGroup,
    ctx: &Context<'_>,
    owners: &mut BTreeMap<String, String>,
) -> Option<(KeyPath, Resource)> {
    let (groups, kinds) = (ctx.groups, ctx.kinds);
    let (common, params) = split(table, RESOURCE_COMMON);
    let c = typed::<ResourceCommon>(d, &rp, toml::Value::Table(common))?;
    let mut np = rp.clone();
    np.push(k("name"));
    check_name(d, &np, "resource", &c.name);
    if c.name == LOCAL_SERVER_TARGET || groups.iter().any(|g| g.name == c.name) {
        d.err(
            &np,
            format!(
                "resource name `{}` is already used as a group name (recovery targets name either)",
                c.name
            ),
        );
    }
    if let Some(og) = owners.insert(c.name.clone(), g.name.clone()) {
        d.err(&np, format!("resource name `{}` is already used in group `{og}`: resource names are unique in the cluster", c.name));
    }
    for pol in [
        (c.activate_timeout, "activate_timeout"),
        (c.deactivate_timeout, "deactivate_timeout"),
    ] {
        let mut p = rp.clone();
        p.push(k(pol.1));
        if pol.0.ms() == 0 {
            d.err(&p, format!("{} must be longer than 0", pol.1));
        }
        check_max(d, &p, pol.1, pol.0, ms::DAY, "1ms to 1d");
    }
    for sname in c.server.keys() {
        if !g.servers.contains(sname) {
            let mut p = rp.clone();
            p.push(k("server"));
            p.push(k(sname));
            d.err(&p, format!("per-server settings for `{sname}`, which is not one of group `{}`'s servers ({})", g.name, g.servers.join(", ")));
        }
    }
    check_kind_keys(d, &rp, &c, &params, &g.servers, kinds);
    if kinds.uses_interconnect(&c.kind) {
        check_interconnect(d, &rp, &c, &params, &g.servers, ctx.paths);
    }
    let fence_stop = fence_stop(d, &rp, &c, kinds);
    Some((
        rp,
        Resource {
            kind: c.kind,
            name: c.name,
            depends_on: c.depends_on,
            activation: ActionPolicy {
                timeout: c.activate_timeout,
                retries: c.activate_retries,
                final_action: c.activate_final_action,
            },
            failover_threshold: c.failover_threshold,
            deactivation: ActionPolicy {
                timeout: c.deactivate_timeout,
                retries: c.deactivate_retries,
                final_action: c.deactivate_final_action,
            },
            fence_stop,
            params,
            server_params: c.server,
        },
    ))
}

/// `fence_stop`: `local` (the default where the kind has one) only for a kind with a
/// local self-fence stop ([`KindCatalog::local_fence_stop_ms`]); `full` for any kind.
fn fence_stop(
    d: &mut Diags<'_>,
    rp: &[Seg],
    c: &ResourceCommon,
    kinds: &dyn KindCatalog,
) -> FenceStop {
    match (c.fence_stop, kinds.local_fence_stop_ms(&c.kind)) {
        (Some(FenceStopMode::Full), _) | (None, None) => FenceStop::Full,
        (Some(FenceStopMode::Local) | None, Some(bound_ms)) => FenceStop::Local { bound_ms },
        (Some(FenceStopMode::Local), None) => {
            let mut p = rp.to_vec();
            p.push(k("fence_stop"));
            let local: Vec<&str> = kinds
                .resource_kinds()
                .into_iter()
                .filter(|kind| kinds.local_fence_stop_ms(kind).is_some())
                .collect();
            let which = if local.is_empty() {
                String::new()
            } else {
                format!(" ({})", local.join(", "))
            };
            d.err(
                &p,
                format!(
                    "fence_stop = \"local\" is only for kinds whose cloud object the next owner takes over whatever this server does{which}; the stop of kind `{}` is what ends it: use \"full\" or leave the key out",
                    c.kind
                ),
            );
            FenceStop::Full
        }
    }
}

/// A kind that carries traffic on one of the servers' interconnects (key
/// `interconnect`, numbered from 0, default 0, unless `address` is set): the number must
/// exist on every server of the group.
fn check_interconnect(
    d: &mut Diags<'_>,
    rp: &[Seg],
    c: &ResourceCommon,
    params: &toml::Table,
    servers: &[String],
    paths: &BTreeMap<String, usize>,
) {
    for s in servers {
        let own = c.server.get(s);
        let merged = merge_tables(params, own);
        if merged.contains_key("address") {
            continue;
        }
        let Some(&n) = paths.get(s) else { continue };
        let Some(i) = merged
            .get("interconnect")
            .map_or(Some(0), toml::Value::as_integer)
        else {
            continue; // a type error, reported by the kind's own check
        };
        if usize::try_from(i).is_ok_and(|i| i < n) {
            continue;
        }
        let mut p = rp.to_vec();
        if own.is_some_and(|o| o.contains_key("interconnect")) {
            p.push(k("server"));
            p.push(k(s));
        }
        p.push(k("interconnect"));
        d.err(
            &p,
            format!(
                "server `{s}` has {n} interconnect(s), numbered 0 to {}: there is no interconnect {i} (or set `address`)",
                n.saturating_sub(1)
            ),
        );
        return;
    }
}

/// Kind-specific keys, for every server of the group (with its overrides merged in); a
/// problem common to several servers is reported once.
fn check_kind_keys(
    d: &mut Diags<'_>,
    rp: &[Seg],
    c: &ResourceCommon,
    params: &toml::Table,
    servers: &[String],
    kinds: &dyn KindCatalog,
) {
    let known = kinds.resource_kinds();
    if !known.is_empty() && !known.contains(&c.kind.as_str()) {
        let mut p = rp.to_vec();
        p.push(k("kind"));
        d.err(
            &p,
            format!(
                "unknown resource kind `{}`; known kinds: {}",
                c.kind,
                known.join(", ")
            ),
        );
    } else {
        if let Err(msg) = kinds.check_group_servers(&c.kind, servers) {
            let mut p = rp.to_vec();
            p.push(k("kind"));
            d.err(&p, msg);
        }
        let mut reported = BTreeSet::new();
        for s in servers {
            let merged = merge_tables(params, c.server.get(s));
            if let Err((key, msg)) = kinds.check_resource(&c.kind, &merged) {
                let mut p = rp.to_vec();
                let overridden = key.as_deref().is_some_and(|kk| {
                    c.server
                        .get(s)
                        .is_some_and(|o| o.contains_key(kk.split('.').next().unwrap_or(kk)))
                });
                if overridden {
                    p.push(k("server"));
                    p.push(k(s));
                }
                if let Some(key) = &key {
                    p.extend(key.split('.').map(k));
                }
                let text = format!("{msg} (for server `{s}`)");
                if reported.insert((path_string(&p), msg.clone())) {
                    d.err(&p, text);
                }
            }
        }
    }
}

/// Check the `depends_on` of the resources of `group` (at `gp`) and put them in
/// activation order; on a cycle (reported) they stay in file order. `owners`: resource
/// name → group, for the whole cluster.
pub(super) fn order(
    d: &mut Diags<'_>,
    gp: &[Seg],
    group: &str,
    resources: Vec<(KeyPath, Resource)>,
    owners: &BTreeMap<String, String>,
) -> Vec<Resource> {
    check_depends_on(d, group, &resources, owners);
    match topo_order(&resources.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>()) {
        Ok(o) => o,
        Err(cycle) => {
            let idx = resources
                .iter()
                .position(|(_, r)| r.name == cycle[0])
                .unwrap_or(0);
            let mut p = resources
                .get(idx)
                .map(|(rp, _)| rp.clone())
                .unwrap_or_else(|| gp.to_vec());
            p.push(k("depends_on"));
            d.err(
                &p,
                format!("depends_on forms a cycle: {}", cycle.join(" → ")),
            );
            resources.into_iter().map(|(_, r)| r).collect()
        }
    }
}

/// `depends_on` names other resources of the same group.
fn check_depends_on(
    d: &mut Diags<'_>,
    group: &str,
    resources: &[(KeyPath, Resource)],
    owners: &BTreeMap<String, String>,
) {
    let local: BTreeSet<String> = resources.iter().map(|(_, r)| r.name.clone()).collect();
    for (rp, r) in resources {
        for (di, dep) in r.depends_on.iter().enumerate() {
            let mut p = rp.clone();
            p.push(k("depends_on"));
            p.push(Seg::Index(di));
            if dep == &r.name {
                d.err(&p, format!("resource `{}` depends on itself", r.name));
            } else if !local.contains(dep) {
                let other = owners.get(dep).filter(|og| og.as_str() != group);
                match other {
                    Some(og) => d.err(&p, format!("`{dep}` is a resource of group `{og}`; depends_on may only name resources of the same group (`{}`)", group)),
                    None => d.err(&p, unknown_ref("resource", dep, local.iter())),
                }
            }
        }
    }
}

/// Order resources so that every resource comes after those it depends on. On a cycle,
/// returns the names along the cycle.
pub fn topo_order(resources: &[Resource]) -> Result<Vec<Resource>, Vec<String>> {
    let idx: BTreeMap<&str, usize> = resources
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name.as_str(), i))
        .collect();
    // 0 = unvisited, 1 = on stack, 2 = done
    let mut mark = vec![0u8; resources.len()];
    let mut out = Vec::new();
    let mut stack: Vec<usize> = Vec::new();
    fn visit(
        i: usize,
        rs: &[Resource],
        idx: &BTreeMap<&str, usize>,
        mark: &mut [u8],
        stack: &mut Vec<usize>,
        out: &mut Vec<Resource>,
    ) -> Result<(), Vec<String>> {
        if mark[i] == 2 {
            return Ok(());
        }
        if mark[i] == 1 {
            let start = stack.iter().position(|&s| s == i).unwrap_or(0);
            let mut cyc: Vec<String> = stack[start..].iter().map(|&s| rs[s].name.clone()).collect();
            cyc.push(rs[i].name.clone());
            return Err(cyc);
        }
        mark[i] = 1;
        stack.push(i);
        for dep in &rs[i].depends_on {
            // A resource naming itself is reported on its own ("depends on itself").
            if let Some(&j) = idx.get(dep.as_str()).filter(|&&j| j != i) {
                visit(j, rs, idx, mark, stack, out)?;
            }
        }
        stack.pop();
        mark[i] = 2;
        out.push(rs[i].clone());
        Ok(())
    }
    for i in 0..resources.len() {
        visit(i, resources, &idx, &mut mark, &mut stack, &mut out)?;
    }
    Ok(out)
}
