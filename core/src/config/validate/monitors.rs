//! `[[monitor]]`: the common keys, the group a monitor belongs to, its recovery and the
//! kind-specific keys (checked by the [`KindCatalog`]).

use std::collections::BTreeSet;

use super::{check_max, check_name, ms, unknown_ref, Defined};
use crate::config::diagnostics::{k, path_string, typed, Diags, KeyPath, Seg};
use crate::config::model::merge_tables;
use crate::config::raw::{split, MonitorCommon, RawRecovery, MONITOR_COMMON};
use crate::config::{
    Dur, KindCatalog, Monitor, MonitorTiming, Recovery, RecoveryTarget, LOCAL_SERVER_TARGET,
};

/// The monitors whose common keys deserialise, in file order.
pub(super) fn validate(
    d: &mut Diags<'_>,
    raw: &[toml::Table],
    defined: &Defined<'_>,
    kinds: &dyn KindCatalog,
) -> Vec<Monitor> {
    let mut monitors = Vec::new();
    let mut names = BTreeSet::new();
    for (mi, table) in raw.iter().enumerate() {
        let mp = vec![k("monitor"), Seg::Index(mi)];
        if let Some(m) = monitor(d, &mp, table, &mut names, defined, kinds) {
            monitors.push(m);
        }
    }
    monitors
}

/// `key` of the monitor at `mp`.
fn at(mp: &[Seg], key: &str) -> KeyPath {
    let mut p = mp.to_vec();
    p.push(k(key));
    p
}

/// The monitor at `mp` (`table`); `names`: the names of the monitors before it.
fn monitor(
    d: &mut Diags<'_>,
    mp: &[Seg],
    table: &toml::Table,
    names: &mut BTreeSet<String>,
    defined: &Defined<'_>,
    kinds: &dyn KindCatalog,
) -> Option<Monitor> {
    let (common, params) = split(table, MONITOR_COMMON);
    let c = typed::<MonitorCommon>(d, mp, toml::Value::Table(common))?;
    let np = at(mp, "name");
    check_name(d, &np, "monitor", &c.name);
    if !names.insert(c.name.clone()) {
        d.err(&np, format!("monitor name `{}` is used twice", c.name));
    }
    check_durations(d, mp, &c);
    let mut group = implied_group(d, mp, &c, defined);
    if c.kind == "resource" && c.resource.is_none() {
        d.err(&at(mp, "kind"), "a monitor of kind `resource` needs `resource = \"NAME\"`: the group resource whose check it polls");
    } else if c.resource.is_none() && kinds.monitor_needs_resource(&c.kind) {
        d.err(
            &at(mp, "kind"),
            format!(
                "a monitor of kind `{}` needs `resource = \"NAME\"`: the resource it watches",
                c.kind
            ),
        );
    }
    let recovery = c
        .recovery
        .as_ref()
        .and_then(|r| recovery(d, mp, &c, r, defined, &mut group));
    let timing = c.timing.unwrap_or(if group.is_some() {
        MonitorTiming::Active
    } else {
        MonitorTiming::Always
    });
    if timing == MonitorTiming::Active && group.is_none() {
        d.err(&at(mp, "timing"), "timing `active` needs a group: set `group = \"NAME\"` or a recovery target that is a group or resource");
    }
    let all_servers: Vec<String> = match &group {
        Some(g) => defined
            .groups
            .iter()
            .find(|x| &x.name == g)
            .map(|x| x.servers.clone())
            .unwrap_or_default(),
        None => defined.servers.iter().map(|s| s.name.clone()).collect(),
    };
    for sname in c.server.keys() {
        if !defined.server_names.contains(sname) {
            let mut p = at(mp, "server");
            p.push(k(sname));
            d.err(
                &p,
                unknown_ref("server", sname, defined.server_names.iter()),
            );
        }
    }
    check_kind_keys(d, mp, &c, &params, &all_servers, kinds);
    Some(Monitor {
        kind: c.kind,
        name: c.name,
        interval: c.interval,
        timeout: c.timeout,
        retries: c.retries,
        wait_to_start: c.wait_to_start,
        timing,
        group,
        resource: c.resource,
        on_api_error: c.on_api_error,
        recovery,
        params,
        server_params: c.server,
    })
}

/// `interval`, `timeout` and `wait_to_start`.
fn check_durations(d: &mut Diags<'_>, mp: &[Seg], c: &MonitorCommon) {
    if c.interval.ms() == 0 {
        d.err(&at(mp, "interval"), "interval must be longer than 0");
    }
    if c.timeout.ms() == 0 {
        d.err(&at(mp, "timeout"), "timeout must be longer than 0");
    }
    check_max(
        d,
        &at(mp, "interval"),
        "interval",
        c.interval,
        ms::DAY,
        "1ms to 1d",
    );
    check_max(
        d,
        &at(mp, "timeout"),
        "timeout",
        c.timeout,
        ms::DAY,
        "1ms to 1d",
    );
    check_max(
        d,
        &at(mp, "wait_to_start"),
        "wait_to_start",
        c.wait_to_start,
        ms::DAY,
        "0s to 1d",
    );
}

/// The group implied by `group` and `resource` (which must agree); the recovery target
/// may imply one later.
fn implied_group(
    d: &mut Diags<'_>,
    mp: &[Seg],
    c: &MonitorCommon,
    defined: &Defined<'_>,
) -> Option<String> {
    let mut group = c.group.clone();
    if let Some(gname) = &c.group {
        if !defined.group_names.contains(gname) {
            d.err(
                &at(mp, "group"),
                unknown_ref("group", gname, defined.group_names.iter()),
            );
        }
    }
    if let Some(r) = &c.resource {
        match defined.resources.get(r) {
            Some(g) => {
                if group.as_ref().is_some_and(|x| x != g) {
                    d.err(
                        &at(mp, "resource"),
                        format!(
                            "resource `{r}` belongs to group `{g}`, not to `{}`",
                            group.clone().unwrap_or_default()
                        ),
                    );
                }
                group = Some(g.clone());
            }
            None => d.err(
                &at(mp, "resource"),
                unknown_ref("resource", r, defined.resources.keys()),
            ),
        }
    }
    group
}

/// The monitor's recovery, `None` when its target is unknown (reported). A monitor
/// without a `group` gets the group of a group or resource target.
fn recovery(
    d: &mut Diags<'_>,
    mp: &[Seg],
    c: &MonitorCommon,
    r: &RawRecovery,
    defined: &Defined<'_>,
    group: &mut Option<String>,
) -> Option<Recovery> {
    let mut tp = mp.to_vec();
    tp.push(k("recovery"));
    tp.push(k("target"));
    let target = if r.target == LOCAL_SERVER_TARGET {
        RecoveryTarget::LocalServer
    } else if defined.group_names.contains(&r.target) {
        RecoveryTarget::Group(r.target.clone())
    } else if let Some(g) = defined.resources.get(&r.target) {
        RecoveryTarget::Resource {
            group: g.clone(),
            resource: r.target.clone(),
        }
    } else {
        let mut known: Vec<String> = defined.group_names.iter().cloned().collect();
        known.extend(defined.resources.keys().cloned());
        known.push(LOCAL_SERVER_TARGET.into());
        d.err(
            &tp,
            unknown_ref(
                "recovery target (a group, a resource or `local-server`)",
                &r.target,
                known.iter(),
            ),
        );
        return None;
    };
    if group.is_none() {
        *group = match &target {
            RecoveryTarget::Group(g) => Some(g.clone()),
            RecoveryTarget::Resource { group, .. } => Some(group.clone()),
            RecoveryTarget::LocalServer => None,
        };
    }
    Some(Recovery {
        target,
        script: r.script.clone(),
        script_retries: r.script_retries.unwrap_or(u32::from(r.script.is_some())),
        restart_retries: r.restart_retries,
        failover_retries: r.failover_retries,
        final_action: r.final_action,
        reset_after: r.reset_after.unwrap_or(Dur::from_ms(
            (c.interval.ms().saturating_mul(u64::from(c.retries) + 1))
                .saturating_mul(10)
                .max(60_000),
        )),
    })
}

/// Kind-specific keys, for every server the monitor runs on (with its overrides merged
/// in); a problem common to several servers is reported once. A `resource` monitor takes
/// none.
fn check_kind_keys(
    d: &mut Diags<'_>,
    mp: &[Seg],
    c: &MonitorCommon,
    params: &toml::Table,
    servers: &[String],
    kinds: &dyn KindCatalog,
) {
    if c.kind != "resource" {
        let known = kinds.monitor_kinds();
        if !known.is_empty() && !known.contains(&c.kind.as_str()) {
            let mut known: Vec<&str> = known.clone();
            known.push("resource");
            d.err(
                &at(mp, "kind"),
                format!(
                    "unknown monitor kind `{}`; known kinds: {}",
                    c.kind,
                    known.join(", ")
                ),
            );
        } else {
            let mut reported = BTreeSet::new();
            for s in servers {
                let merged = merge_tables(params, c.server.get(s));
                if let Err((key, msg)) = kinds.check_monitor(&c.kind, &merged) {
                    let mut p = mp.to_vec();
                    if let Some(key) = &key {
                        p.extend(key.split('.').map(k));
                    }
                    if reported.insert((path_string(&p), msg.clone())) {
                        d.err(&p, format!("{msg} (for server `{s}`)"));
                    }
                }
            }
        }
    } else if !params.is_empty() {
        let key = params.keys().next().cloned().unwrap_or_default();
        d.err(
            &at(mp, &key),
            format!("unknown key `{key}`: a `resource` monitor takes only the common monitor keys"),
        );
    }
}
