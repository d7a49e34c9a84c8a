//! `[[group]]`: names, servers and startup servers. The resources of each group are
//! checked in `resources.rs`.

use std::collections::{BTreeMap, BTreeSet};

use super::{check_name, resources, unknown_ref};
use crate::config::diagnostics::{k, Diags, Seg};
use crate::config::raw::RawGroup;
use crate::config::{Group, KindCatalog, LOCAL_SERVER_TARGET};

/// The validated groups and the names later sections refer to.
pub(super) struct Groups {
    /// In file order (every one, even with errors).
    pub(super) groups: Vec<Group>,
    pub(super) names: BTreeSet<String>,
    /// Resource name → the group it belongs to.
    pub(super) resources: BTreeMap<String, String>,
}

/// Every heartbeat carries every group: at most 200 fit.
pub(super) fn check_count(d: &mut Diags<'_>, groups: usize) {
    if groups > 200 {
        d.err(
            &[k("group")],
            format!("{} groups: every heartbeat carries every group, so at most 200 fit in one packet; split the cluster", groups),
        );
    }
}

/// `servers`: the names of the servers defined in the file; `paths`: how many
/// interconnects each has.
pub(super) fn validate(
    d: &mut Diags<'_>,
    raw: &[RawGroup],
    servers: &BTreeSet<String>,
    paths: &BTreeMap<String, usize>,
    kinds: &dyn KindCatalog,
) -> Groups {
    let mut out = Groups {
        groups: Vec::new(),
        names: BTreeSet::new(),
        resources: BTreeMap::new(),
    };
    for (gi, g) in raw.iter().enumerate() {
        let gp = vec![k("group"), Seg::Index(gi)];
        check_names(d, &gp, g, &mut out.names);
        check_servers(d, &gp, g, servers);
        let startup = startup_servers(d, &gp, g);
        let mut resources = Vec::new();
        for (ri, table) in g.resource.iter().enumerate() {
            let mut rp = gp.clone();
            rp.push(k("resource"));
            rp.push(Seg::Index(ri));
            let ctx = resources::Context {
                groups: raw,
                paths,
                kinds,
            };
            if let Some(r) = resources::validate(d, rp, table, g, &ctx, &mut out.resources) {
                resources.push(r);
            }
        }
        let ordered = resources::order(d, &gp, &g.name, resources, &out.resources);
        out.groups.push(Group {
            name: g.name.clone(),
            servers: g.servers.clone(),
            startup_servers: startup,
            failback: g.failback,
            auto_start: g.auto_start,
            fence_budget: g.fence_budget,
            resource_order: g.resource_order,
            resources: ordered,
        });
    }
    out
}

/// `fence_budget`: from the heartbeat interval (as `fence_timeout`) to the
/// agent's self-fence deadline `F` (`[quorum] fence_timeout`, default `T/2`), the bound
/// no group goes beyond.
pub(super) fn check_fence_budgets(
    d: &mut Diags<'_>,
    raw: &[RawGroup],
    q: &crate::config::QuorumSection,
    hb: &crate::config::HeartbeatSection,
) {
    let f = crate::config::timing::Timing::derive(
        hb.interval.ms(),
        hb.timeout.ms(),
        q.fence_timeout.map(|d| d.ms()),
        None,
    )
    .fence_ms;
    for (gi, g) in raw.iter().enumerate() {
        let Some(b) = g.fence_budget else { continue };
        let p = [k("group"), Seg::Index(gi), k("fence_budget")];
        if b.ms() < hb.interval.ms() {
            d.err(&p, format!("fence_budget {b} is shorter than the heartbeat interval {}: a server that restarts holding the group could not regain quorum before it runs out", hb.interval));
        } else if b.ms() > f {
            d.err(
                &p,
                format!(
                    "fence_budget {b} is longer than the agent's self-fence deadline of {f} ms ([quorum] fence_timeout, default half the heartbeat timeout), which bounds every group: lower it, or raise fence_timeout"
                ),
            );
        }
    }
}

/// The group's name: allowed, not reserved, not used by an earlier group (`names`).
fn check_names(d: &mut Diags<'_>, gp: &[Seg], g: &RawGroup, names: &mut BTreeSet<String>) {
    let mut p = gp.to_vec();
    p.push(k("name"));
    check_name(d, &p, "group", &g.name);
    if g.name == LOCAL_SERVER_TARGET {
        d.err(&p, format!("`{LOCAL_SERVER_TARGET}` is reserved"));
    }
    if !names.insert(g.name.clone()) {
        d.err(&p, format!("group name `{}` is used twice", g.name));
    }
}

/// `servers`: at least one, each defined and listed once.
fn check_servers(d: &mut Diags<'_>, gp: &[Seg], g: &RawGroup, servers: &BTreeSet<String>) {
    let mut seen = BTreeSet::new();
    if g.servers.is_empty() {
        let mut p = gp.to_vec();
        p.push(k("servers"));
        d.err(&p, format!("group `{}` lists no servers", g.name));
    }
    for (si, s) in g.servers.iter().enumerate() {
        let mut p = gp.to_vec();
        p.push(k("servers"));
        p.push(Seg::Index(si));
        if !servers.contains(s) {
            d.err(&p, unknown_ref("server", s, servers.iter()));
        }
        if !seen.insert(s.clone()) {
            d.err(
                &p,
                format!("server `{s}` is listed twice in group `{}`", g.name),
            );
        }
    }
}

/// `startup_servers` (default: all the group's servers), each one of the group's servers.
fn startup_servers(d: &mut Diags<'_>, gp: &[Seg], g: &RawGroup) -> Vec<String> {
    let startup = g
        .startup_servers
        .clone()
        .unwrap_or_else(|| g.servers.clone());
    for (si, s) in startup.iter().enumerate() {
        if !g.servers.contains(s) {
            let mut p = gp.to_vec();
            p.push(k("startup_servers"));
            p.push(Seg::Index(si));
            d.err(
                &p,
                format!(
                    "startup server `{s}` is not one of the group's servers ({})",
                    g.servers.join(", ")
                ),
            );
        }
    }
    startup
}
