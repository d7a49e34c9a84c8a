//! Validation across fields: names, references, dependency cycles, timing sanity.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use super::diagnostics::{k, path_string, typed, Diags, Seg};
use super::model::merge_tables;
use super::raw::{split, MonitorCommon, RawFile, ResourceCommon, MONITOR_COMMON, RESOURCE_COMMON};
use super::{
    api, aws, notify, timing, ActionPolicy, Config, Dur, FenceMethod, Group, KindCatalog, Monitor,
    MonitorTiming, Recovery, RecoveryTarget, Resource, Server, Witness, LOCAL_SERVER_TARGET,
    MAX_ACCEPT_KEY_FILES,
};

fn parse_interconnect(s: &str, default_port: u16) -> Result<SocketAddr, String> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(sa);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port));
    }
    Err(format!(
        "`{s}` is not an IP address (write `10.0.110.10` or `10.0.110.10:7421`; host names are not allowed for interconnects)"
    ))
}

fn check_name(d: &mut Diags<'_>, path: &[Seg], what: &str, name: &str) {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if !ok {
        d.err(
            path,
            format!(
                "{what} name `{name}` is not allowed: use 1 to 63 letters, digits, `-`, `_` or `.`"
            ),
        );
    }
}

/// Milliseconds in a minute, an hour, a day (per-key duration bounds).
mod ms {
    pub const MINUTE: u64 = 60_000;
    pub const HOUR: u64 = 60 * MINUTE;
    pub const DAY: u64 = 24 * HOUR;
}

/// A duration key with a tighter upper bound than
/// [`MAX_DURATION`](crate::config::MAX_DURATION): the error names the key (file, line and
/// key come with the diagnostic) and the allowed range.
fn check_max(d: &mut Diags<'_>, path: &[Seg], what: &str, v: Dur, max_ms: u64, range: &str) {
    if v.ms() > max_ms {
        d.err(
            path,
            format!("{what} {v} is too long: the allowed range is {range}"),
        );
    }
}

pub(super) fn validate(
    d: &mut Diags<'_>,
    raw: RawFile,
    file: &str,
    digest: String,
    kinds: &dyn KindCatalog,
) -> Option<Config> {
    check_name(d, &[k("cluster"), k("name")], "cluster", &raw.cluster.name);

    // Heartbeat timing.
    let hb = raw.heartbeat.clone();
    if hb.interval.ms() < 10 {
        d.err(
            &[k("heartbeat"), k("interval")],
            format!(
                "heartbeat interval {} is too short: use at least 10ms",
                hb.interval
            ),
        );
    }
    if hb.timeout.ms() < hb.interval.ms().saturating_mul(3) {
        d.err(
            &[k("heartbeat"), k("timeout")],
            format!(
                "heartbeat timeout {} must be at least 3 times the interval {} (so that one or two lost packets do not mark a server down); try {}",
                hb.timeout,
                hb.interval,
                Dur::from_ms(hb.interval.ms().saturating_mul(5))
            ),
        );
    }
    check_max(
        d,
        &[k("heartbeat"), k("interval")],
        "heartbeat interval",
        hb.interval,
        ms::MINUTE,
        "10ms to 1m",
    );
    check_max(
        d,
        &[k("heartbeat"), k("timeout")],
        "heartbeat timeout",
        hb.timeout,
        10 * ms::MINUTE,
        "3 × interval to 10m",
    );
    if let Some(w) = hb.startup_wait {
        check_max(
            d,
            &[k("heartbeat"), k("startup_wait")],
            "startup_wait",
            w,
            ms::HOUR,
            "0s to 1h",
        );
    }
    if let Some(w) = hb.startup_wait {
        if w.ms() < hb.timeout.ms() {
            d.warn(
                &[k("heartbeat"), k("startup_wait")],
                format!("startup_wait {w} is shorter than the heartbeat timeout {}: a restarted server may start groups before it has heard its peers", hb.timeout),
            );
        }
    }

    // Agent.
    if raw.agent.alert_log_max_bytes < 4096 {
        d.err(&[k("agent"), k("alert_log_max_bytes")], format!("alert_log_max_bytes {} is too small: use at least 4096 (the default is 8388608, 8 MiB)", raw.agent.alert_log_max_bytes));
    }
    if raw.agent.alert_log_keep == 0 {
        d.err(
            &[k("agent"), k("alert_log_keep")],
            "alert_log_keep must be at least 1 (the file being written counts)",
        );
    }
    if raw.agent.shutdown_timeout.ms() == 0 {
        d.err(
            &[k("agent"), k("shutdown_timeout")],
            "shutdown_timeout must be longer than 0",
        );
    }
    check_max(
        d,
        &[k("agent"), k("shutdown_timeout")],
        "shutdown_timeout",
        raw.agent.shutdown_timeout,
        ms::HOUR,
        "1ms to 1h",
    );
    if !raw.agent.sysrq_trigger.is_absolute() {
        d.err(
            &[k("agent"), k("sysrq_trigger")],
            format!(
                "sysrq_trigger must be an absolute path (the default is /proc/sysrq-trigger), not `{}`",
                raw.agent.sysrq_trigger.display()
            ),
        );
    }
    for (key, cmd) in [
        ("force_reboot_command", &raw.agent.force_reboot_command),
        ("force_poweroff_command", &raw.agent.force_poweroff_command),
    ] {
        if cmd.trim().is_empty() {
            d.err(
                &[k("agent"), k(key)],
                format!("{key} must not be empty: it is what fences this server when the SysRq write fails"),
            );
        }
    }
    for (i, name) in raw.agent.script_env.iter().enumerate() {
        let valid = name
            .bytes()
            .enumerate()
            .all(|(j, b)| b == b'_' || b.is_ascii_alphabetic() || (j > 0 && b.is_ascii_digit()));
        if name.is_empty() || !valid {
            d.err(
                &[k("agent"), k("script_env"), Seg::Index(i)],
                format!("`{name}` is not an environment variable name (letters, digits and `_`, not starting with a digit)"),
            );
        }
    }
    if raw.agent.fence_method == FenceMethod::Command {
        d.warn(
            &[k("agent"), k("fence_method")],
            "fence_method = \"command\" fences with the orderly reboot_command / shutdown_command, which can take longer than the takeover wait: the other side may start the groups while they still run here",
        );
    }

    // Servers.
    let mut servers = Vec::new();
    let mut names = BTreeSet::new();
    let mut addrs: BTreeMap<SocketAddr, String> = BTreeMap::new();
    if raw.server.is_empty() {
        d.err(&[k("server")], "no `[[server]]` is defined: a cluster needs at least one server (two or more for failover)");
    }
    let mut npaths: Option<usize> = None;
    for (i, s) in raw.server.iter().enumerate() {
        let sp = [k("server"), Seg::Index(i)];
        let mut p = sp.to_vec();
        p.push(k("name"));
        check_name(d, &p, "server", &s.name);
        if s.name == LOCAL_SERVER_TARGET {
            d.err(&p, format!("`{LOCAL_SERVER_TARGET}` is reserved"));
        }
        if !names.insert(s.name.clone()) {
            d.err(&p, format!("server name `{}` is used twice", s.name));
        }
        let mut ics = Vec::new();
        if s.interconnects.is_empty() {
            let mut p = sp.to_vec();
            p.push(k("interconnects"));
            d.err(&p, format!("server `{}` has no interconnects: give at least one address (two on separate networks are recommended)", s.name));
        }
        for (j, ic) in s.interconnects.iter().enumerate() {
            let mut p = sp.to_vec();
            p.push(k("interconnects"));
            p.push(Seg::Index(j));
            match parse_interconnect(ic, hb.port) {
                Ok(sa) => {
                    if let Some(other) = addrs.insert(sa, s.name.clone()) {
                        d.err(
                            &p,
                            format!("interconnect address {sa} is also used by server `{other}`"),
                        );
                    }
                    ics.push(sa);
                }
                Err(m) => d.err(&p, m),
            }
        }
        match npaths {
            None => npaths = Some(s.interconnects.len()),
            Some(n) if n != s.interconnects.len() => {
                let mut p = sp.to_vec();
                p.push(k("interconnects"));
                d.err(&p, format!("server `{}` has {} interconnects but the first server has {n}: every server needs one address on each interconnect network, in the same order", s.name, s.interconnects.len()));
            }
            _ => {}
        }
        let mut pa = sp.to_vec();
        pa.push(k("api"));
        let api = match s.api.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                d.err(
                    &pa,
                    format!(
                        "api `{}` is not an address with a port, like `10.0.110.10:7420`",
                        s.api
                    ),
                );
                SocketAddr::from(([0, 0, 0, 0], 0))
            }
        };
        if let Some(other) = servers
            .iter()
            .find(|o: &&Server| o.api == api && api.port() != 0)
        {
            d.err(
                &pa,
                format!("api address {api} is also used by server `{}`", other.name),
            );
        }
        let priority = s
            .priority
            .unwrap_or(u32::try_from(i + 1).unwrap_or(u32::MAX));
        if let Some(other) = servers.iter().find(|o: &&Server| o.priority == priority) {
            let mut p = sp.to_vec();
            p.push(k(if s.priority.is_some() {
                "priority"
            } else {
                "name"
            }));
            d.err(
                &p,
                format!(
                    "priority {priority} is also the priority of server `{}`{}: priorities must differ (two servers holding a group after a partition keep the one with the lower value)",
                    other.name,
                    if s.priority.is_none() { " (a server without `priority` gets its position in the file)" } else { "" }
                ),
            );
        }
        servers.push(Server {
            name: s.name.clone(),
            priority,
            zone: s.zone.clone(),
            interconnects: ics,
            api,
        });
    }
    if raw.group.len() > 200 {
        d.err(
            &[k("group")],
            format!("{} groups: every heartbeat carries every group, so at most 200 fit in one packet; split the cluster", raw.group.len()),
        );
    }

    // Quorum.
    let q = raw.quorum.clone();
    match &q.witness {
        Witness::Http { url } if !(url.starts_with("http://") || url.starts_with("https://")) => {
            d.err(
                &[k("quorum"), k("witness"), k("url")],
                format!("witness url `{url}` must start with http:// or https://"),
            );
        }
        _ => {}
    }
    for (i, h) in q.http.iter().enumerate() {
        if !(h.starts_with("http://") || h.starts_with("https://")) {
            d.err(
                &[k("quorum"), k("http"), Seg::Index(i)],
                format!("`{h}` must start with http:// or https://"),
            );
        }
    }
    for (i, h) in q.ping.iter().enumerate() {
        if h.trim().is_empty() || h.contains(char::is_whitespace) {
            d.err(
                &[k("quorum"), k("ping"), Seg::Index(i)],
                format!("`{h}` is not a host name or address"),
            );
        }
    }
    let votes = servers.len() + usize::from(q.witness != Witness::None);
    let tm = timing::Timing::derive(
        hb.interval.ms(),
        hb.timeout.ms(),
        q.fence_timeout.map(|d| d.ms()),
        q.takeover_wait.map(|d| d.ms()),
    );
    if let Some(f) = q.fence_timeout {
        if f.ms() < hb.interval.ms() {
            d.err(&[k("quorum"), k("fence_timeout")], format!("fence_timeout {f} is shorter than the heartbeat interval {}: no resource could stop in time", hb.interval));
        }
        check_max(
            d,
            &[k("quorum"), k("fence_timeout")],
            "fence_timeout",
            f,
            10 * ms::MINUTE,
            "the heartbeat interval to 10m",
        );
    }
    if let Some(w) = q.takeover_wait {
        check_max(
            d,
            &[k("quorum"), k("takeover_wait")],
            "takeover_wait",
            w,
            ms::HOUR,
            "the derived minimum to 1h",
        );
        if w.ms() < tm.min_takeover_wait_ms {
            d.err(
                &[k("quorum"), k("takeover_wait")],
                format!(
                    "takeover_wait {w} is too short: with heartbeat interval {} (i), timeout {} (T), quorum lease {} ms (L) and fence_timeout {} ms (F), (T + W)·0.99 must be at least (2L + F)·1.01 + i, so W must be at least {} ms (see docs/src/split-brain.md)",
                    hb.interval, hb.timeout, tm.lease_ms, tm.fence_ms, tm.min_takeover_wait_ms
                ),
            );
        }
    }
    if let Some(ci) = q.check_interval {
        if ci.ms() < 100 {
            d.err(
                &[k("quorum"), k("check_interval")],
                "check_interval must be at least 100ms",
            );
        }
        check_max(
            d,
            &[k("quorum"), k("check_interval")],
            "check_interval",
            ci,
            10 * ms::MINUTE,
            "100ms to 10m",
        );
    }
    if servers.len() == 2 && q.witness == Witness::None {
        d.warn(&[k("quorum")], "a 2-server cluster has no majority when one server is lost: the survivor will not take over. Add a witness (`[quorum] witness`) or a third server");
    } else if votes % 2 == 0 && votes > 0 {
        d.warn(&[k("quorum")], format!("the cluster has {votes} votes, an even number: a split into two halves leaves neither side with a majority; use an odd number of votes (add or remove a witness)"));
    }

    // Groups and resources.
    let mut groups = Vec::new();
    let mut gnames = BTreeSet::new();
    let mut rnames: BTreeMap<String, String> = BTreeMap::new(); // resource -> group
    for (gi, g) in raw.group.iter().enumerate() {
        let gp = vec![k("group"), Seg::Index(gi)];
        let mut p = gp.clone();
        p.push(k("name"));
        check_name(d, &p, "group", &g.name);
        if g.name == LOCAL_SERVER_TARGET {
            d.err(&p, format!("`{LOCAL_SERVER_TARGET}` is reserved"));
        }
        if !gnames.insert(g.name.clone()) {
            d.err(&p, format!("group name `{}` is used twice", g.name));
        }
        let mut seen = BTreeSet::new();
        if g.servers.is_empty() {
            let mut p = gp.clone();
            p.push(k("servers"));
            d.err(&p, format!("group `{}` lists no servers", g.name));
        }
        for (si, s) in g.servers.iter().enumerate() {
            let mut p = gp.clone();
            p.push(k("servers"));
            p.push(Seg::Index(si));
            if !names.contains(s) {
                d.err(&p, unknown_ref("server", s, names.iter()));
            }
            if !seen.insert(s.clone()) {
                d.err(
                    &p,
                    format!("server `{s}` is listed twice in group `{}`", g.name),
                );
            }
        }
        let startup = g
            .startup_servers
            .clone()
            .unwrap_or_else(|| g.servers.clone());
        for (si, s) in startup.iter().enumerate() {
            if !g.servers.contains(s) {
                let mut p = gp.clone();
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
        let mut resources = Vec::new();
        for (ri, table) in g.resource.iter().enumerate() {
            let mut rp = gp.clone();
            rp.push(k("resource"));
            rp.push(Seg::Index(ri));
            let (common, params) = split(table, RESOURCE_COMMON);
            let Some(c) = typed::<ResourceCommon>(d, &rp, toml::Value::Table(common)) else {
                continue;
            };
            let mut np = rp.clone();
            np.push(k("name"));
            check_name(d, &np, "resource", &c.name);
            if c.name == LOCAL_SERVER_TARGET || raw.group.iter().any(|g| g.name == c.name) {
                d.err(&np, format!("resource name `{}` is already used as a group name (recovery targets name either)", c.name));
            }
            if let Some(og) = rnames.insert(c.name.clone(), g.name.clone()) {
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
            // Kind-specific keys, for every server of the group.
            let known = kinds.resource_kinds();
            if !known.is_empty() && !known.contains(&c.kind.as_str()) {
                let mut p = rp.clone();
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
                let mut reported = BTreeSet::new();
                for s in &g.servers {
                    let merged = merge_tables(&params, c.server.get(s));
                    if let Err((key, msg)) = kinds.check_resource(&c.kind, &merged) {
                        let mut p = rp.clone();
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
            resources.push((
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
                    params,
                    server_params: c.server,
                },
            ));
        }
        // depends_on references and cycles.
        let local: BTreeSet<String> = resources.iter().map(|(_, r)| r.name.clone()).collect();
        for (rp, r) in &resources {
            for (di, dep) in r.depends_on.iter().enumerate() {
                let mut p = rp.clone();
                p.push(k("depends_on"));
                p.push(Seg::Index(di));
                if dep == &r.name {
                    d.err(&p, format!("resource `{}` depends on itself", r.name));
                } else if !local.contains(dep) {
                    let other = rnames.get(dep).filter(|og| **og != g.name);
                    match other {
                        Some(og) => d.err(&p, format!("`{dep}` is a resource of group `{og}`; depends_on may only name resources of the same group (`{}`)", g.name)),
                        None => d.err(&p, unknown_ref("resource", dep, local.iter())),
                    }
                }
            }
        }
        let ordered =
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
                        .unwrap_or_else(|| gp.clone());
                    p.push(k("depends_on"));
                    d.err(
                        &p,
                        format!("depends_on forms a cycle: {}", cycle.join(" → ")),
                    );
                    resources.into_iter().map(|(_, r)| r).collect()
                }
            };
        groups.push(Group {
            name: g.name.clone(),
            servers: g.servers.clone(),
            startup_servers: startup,
            failback: g.failback,
            auto_start: g.auto_start,
            resources: ordered,
        });
    }

    // Monitors.
    let mut monitors = Vec::new();
    let mut mnames = BTreeSet::new();
    for (mi, table) in raw.monitor.iter().enumerate() {
        let mp = vec![k("monitor"), Seg::Index(mi)];
        let (common, params) = split(table, MONITOR_COMMON);
        let Some(c) = typed::<MonitorCommon>(d, &mp, toml::Value::Table(common)) else {
            continue;
        };
        let mut np = mp.clone();
        np.push(k("name"));
        check_name(d, &np, "monitor", &c.name);
        if !mnames.insert(c.name.clone()) {
            d.err(&np, format!("monitor name `{}` is used twice", c.name));
        }
        let at = |key: &str| {
            let mut p = mp.clone();
            p.push(k(key));
            p
        };
        if c.interval.ms() == 0 {
            d.err(&at("interval"), "interval must be longer than 0");
        }
        if c.timeout.ms() == 0 {
            d.err(&at("timeout"), "timeout must be longer than 0");
        }
        check_max(
            d,
            &at("interval"),
            "interval",
            c.interval,
            ms::DAY,
            "1ms to 1d",
        );
        check_max(
            d,
            &at("timeout"),
            "timeout",
            c.timeout,
            ms::DAY,
            "1ms to 1d",
        );
        check_max(
            d,
            &at("wait_to_start"),
            "wait_to_start",
            c.wait_to_start,
            ms::DAY,
            "0s to 1d",
        );
        // Group implied by `group`, `resource` or the recovery target.
        let mut group = c.group.clone();
        if let Some(gname) = &c.group {
            if !gnames.contains(gname) {
                d.err(&at("group"), unknown_ref("group", gname, gnames.iter()));
            }
        }
        if let Some(r) = &c.resource {
            match rnames.get(r) {
                Some(g) => {
                    if group.as_ref().is_some_and(|x| x != g) {
                        d.err(
                            &at("resource"),
                            format!(
                                "resource `{r}` belongs to group `{g}`, not to `{}`",
                                group.clone().unwrap_or_default()
                            ),
                        );
                    }
                    group = Some(g.clone());
                }
                None => d.err(&at("resource"), unknown_ref("resource", r, rnames.keys())),
            }
        }
        if c.kind == "resource" && c.resource.is_none() {
            d.err(&at("kind"), "a monitor of kind `resource` needs `resource = \"NAME\"`: the group resource whose check it polls");
        }
        let recovery = c.recovery.as_ref().and_then(|r| {
            let mut tp = mp.clone();
            tp.push(k("recovery"));
            tp.push(k("target"));
            let target = if r.target == LOCAL_SERVER_TARGET {
                RecoveryTarget::LocalServer
            } else if gnames.contains(&r.target) {
                RecoveryTarget::Group(r.target.clone())
            } else if let Some(g) = rnames.get(&r.target) {
                RecoveryTarget::Resource {
                    group: g.clone(),
                    resource: r.target.clone(),
                }
            } else {
                let mut known: Vec<String> = gnames.iter().cloned().collect();
                known.extend(rnames.keys().cloned());
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
                group = match &target {
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
        });
        let timing = c.timing.unwrap_or(if group.is_some() {
            MonitorTiming::Active
        } else {
            MonitorTiming::Always
        });
        if timing == MonitorTiming::Active && group.is_none() {
            d.err(&at("timing"), "timing `active` needs a group: set `group = \"NAME\"` or a recovery target that is a group or resource");
        }
        let all_servers: Vec<String> = match &group {
            Some(g) => raw
                .group
                .iter()
                .find(|x| &x.name == g)
                .map(|x| x.servers.clone())
                .unwrap_or_default(),
            None => servers.iter().map(|s| s.name.clone()).collect(),
        };
        for sname in c.server.keys() {
            if !names.contains(sname) {
                let mut p = at("server");
                p.push(k(sname));
                d.err(&p, unknown_ref("server", sname, names.iter()));
            }
        }
        if c.kind != "resource" {
            let known = kinds.monitor_kinds();
            if !known.is_empty() && !known.contains(&c.kind.as_str()) {
                let mut known: Vec<&str> = known.clone();
                known.push("resource");
                d.err(
                    &at("kind"),
                    format!(
                        "unknown monitor kind `{}`; known kinds: {}",
                        c.kind,
                        known.join(", ")
                    ),
                );
            } else {
                let mut reported = BTreeSet::new();
                for s in &all_servers {
                    let merged = merge_tables(&params, c.server.get(s));
                    if let Err((key, msg)) = kinds.check_monitor(&c.kind, &merged) {
                        let mut p = mp.clone();
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
                &at(&key),
                format!(
                    "unknown key `{key}`: a `resource` monitor takes only the common monitor keys"
                ),
            );
        }
        monitors.push(Monitor {
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
        });
    }

    notify::validate(d, &raw.notify, &raw.metrics, &monitors);
    aws::validate(d, &raw.aws);
    api::validate(d, &raw.api);
    if raw.cluster.accept_key_files.len() > MAX_ACCEPT_KEY_FILES {
        d.err(
            &[k("cluster"), k("accept_key_files")],
            format!(
                "{} accepted key files: at most {MAX_ACCEPT_KEY_FILES} (a rotation needs one)",
                raw.cluster.accept_key_files.len()
            ),
        );
    }
    for (i, f) in raw.cluster.accept_key_files.iter().enumerate() {
        if f == &raw.cluster.key_file || raw.cluster.accept_key_files[..i].contains(f) {
            d.err(
                &[k("cluster"), k("accept_key_files"), Seg::Index(i)],
                format!(
                    "`{}` is listed twice (key_file is always accepted)",
                    f.display()
                ),
            );
        }
    }

    let config = Config {
        path: file.to_string(),
        digest,
        cluster_name: raw.cluster.name,
        key_file: raw.cluster.key_file,
        accept_key_files: raw.cluster.accept_key_files,
        heartbeat: hb,
        agent: raw.agent,
        servers,
        quorum: q,
        groups,
        monitors,
        notify: raw.notify,
        metrics: raw.metrics,
        aws: raw.aws,
        api: raw.api,
    };
    // Every heartbeat must fit in one datagram (issue 9): bounded uncompressed.
    if let Err(msg) = crate::heartbeat::check_size(&config) {
        d.err(&[k("group")], msg);
    }
    Some(config)
}

fn unknown_ref<'a>(what: &str, name: &str, known: impl Iterator<Item = &'a String>) -> String {
    let known: Vec<&String> = known.collect();
    if known.is_empty() {
        format!("unknown {what} `{name}`: none is defined")
    } else {
        let list = known
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        format!("unknown {what} `{name}`; defined: {list}")
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
