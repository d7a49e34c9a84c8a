//! `baton status` as an operator reads it: groups with their resources, human times,
//! columns sized to the names, and for anything not healthy the reason with the event
//! that explains it (the latest matching one of the servers' alert logs).

use std::fmt::Write;
use std::time::{Duration, UNIX_EPOCH};

use baton_core::engine::GroupState;
use baton_core::events::Event;

use crate::api_types::{AgentStatus, ClusterStatus};

/// Something not healthy, with the event that explains it when one was found.
pub struct Problem<'a> {
    pub what: String,
    pub event: Option<&'a Event>,
}

/// `2m13s ago`-style duration (the largest two units).
pub fn ago(ms: u64) -> String {
    let s = ms / 1000;
    let (d, h, m, sec) = (s / 86400, (s / 3600) % 24, (s / 60) % 60, s % 60);
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m}m")
    } else if m > 0 {
        format!("{m}m{sec}s")
    } else if s > 0 {
        format!("{sec}s")
    } else {
        format!("{ms}ms")
    }
}

/// ISO 8601 (UTC, seconds) of a Unix time in ms.
pub fn iso(unix_ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(unix_ms)).to_string()
}

/// `14:02:11` (UTC) of a Unix time in ms.
pub fn clock(unix_ms: u64) -> String {
    let s = (unix_ms / 1000) % 86400;
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

/// The latest event among `events` with one of `ids` that `pred` accepts (events are in
/// the order the servers' logs were read, the answering server's first: its own event is
/// preferred when several servers logged the same thing).
fn latest<'a>(
    events: &'a [Event],
    ids: &[&str],
    pred: impl Fn(&Event) -> bool,
) -> Option<&'a Event> {
    let first = events.first().map(|e| e.server.as_str());
    events
        .iter()
        .filter(|e| ids.contains(&e.id.as_str()) && pred(e))
        .max_by_key(|e| (Some(e.server.as_str()) == first, e.time_ms, e.seq))
}

/// Every server's own status: the answering one first, then each peer that answered.
fn all(st: &ClusterStatus) -> Vec<(&str, &AgentStatus)> {
    let mut v = vec![(st.via.as_str(), &st.local)];
    for p in &st.peers {
        if let Some(a) = &p.status {
            v.push((p.server.as_str(), a));
        }
    }
    v
}

/// What is not healthy, as seen from the answering server (and each server's monitors).
pub fn problems<'a>(st: &ClusterStatus, events: &'a [Event]) -> Vec<Problem<'a>> {
    let l = &st.local.engine;
    let mut out = Vec::new();
    let mut add = |what: String, event: Option<&'a Event>| out.push(Problem { what, event });
    if !l.quorum {
        add(
            format!(
                "no quorum on {} ({}/{} votes)",
                l.server, l.votes_heard, l.votes_total
            ),
            latest(events, &["BTN-1120", "BTN-1131", "BTN-1133"], |e| {
                e.server == l.server
            }),
        );
    }
    if l.suspended {
        add(
            "cluster suspended: no monitoring, no failover".into(),
            latest(events, &["BTN-4001"], |_| true),
        );
    }
    for srv in &l.servers {
        if srv.is_self {
            continue;
        }
        let name = srv.name.as_str();
        let about = |e: &Event| e.peer.as_deref() == Some(name);
        if !srv.up {
            add(
                format!("server {name} down"),
                latest(events, &["BTN-1102"], about),
            );
            continue;
        }
        for p in srv.paths.iter().filter(|p| !p.up) {
            add(
                format!("path{} to {name} down (seen from {})", p.path, l.server),
                latest(events, &["BTN-1103"], about),
            );
        }
        if !srv.digest_matches {
            add(
                format!("server {name} runs another configuration"),
                latest(events, &["BTN-1011"], |_| true),
            );
        }
    }
    for p in &st.peers {
        // A server known down is said above; this is one that is up but gave no status.
        let down = l.servers.iter().any(|x| x.name == p.server && !x.up);
        if let Some(e) = p.error.as_ref().filter(|_| !down) {
            let name = p.server.as_str();
            add(
                format!("no status from {name}: {e}"),
                latest(events, &["BTN-1102"], |e| e.peer.as_deref() == Some(name)),
            );
        }
    }
    for g in &l.groups {
        let name = g.name.as_str();
        let of = |e: &Event| e.group.as_deref() == Some(name);
        for (srv, s) in &g.per_server {
            match s {
                GroupState::Failed => add(
                    format!("group {name} failed on {srv}"),
                    latest(events, &["BTN-2202", "BTN-2105", "BTN-2112"], of),
                ),
                GroupState::Stuck => add(
                    format!("group {name} stuck on {srv} (could not be stopped)"),
                    latest(events, &["BTN-2204", "BTN-2106"], of),
                ),
                _ => {}
            }
        }
        if g.desired == "running" && g.active_on.is_none() {
            add(
                format!("group {name} should run but runs nowhere"),
                latest(
                    events,
                    &["BTN-2108", "BTN-2105", "BTN-2202", "BTN-3014", "BTN-1141"],
                    of,
                ),
            );
        }
        let holders = g.per_server.values().filter(|s| s.holds()).count();
        if holders > 1 {
            add(
                format!("group {name} held by {holders} servers"),
                latest(events, &["BTN-2120"], of),
            );
        }
    }
    for (srv, a) in all(st) {
        for m in &a.engine.monitors {
            if m.state == "error" || m.state == "warning" {
                let mname = m.name.as_str();
                add(
                    format!(
                        "monitor {mname} on {srv} {}{}",
                        m.state,
                        m.last_error
                            .as_deref()
                            .map(|e| format!(": {e}"))
                            .unwrap_or_default()
                    ),
                    latest(
                        events,
                        &["BTN-3001", "BTN-3003", "BTN-3013", "BTN-3004"],
                        |e| e.monitor.as_deref() == Some(mname) && e.server == srv,
                    ),
                );
            }
        }
    }
    out
}

/// Left-aligned cell padded to `w`.
fn cell(s: &str, w: usize) -> String {
    format!("{s:<w$}")
}

fn width<'a>(title: &str, items: impl Iterator<Item = &'a str>) -> usize {
    items
        .map(|s| s.chars().count())
        .chain([title.len()])
        .max()
        .unwrap_or(0)
}

/// The text of `baton status`: `now_ms` is the Unix time the status was read at.
pub fn render(st: &ClusterStatus, events: &[Event], now_ms: u64) -> String {
    let l = &st.local.engine;
    let mut s = String::new();
    let quorum = format!(
        "{} ({}/{} votes{}{})",
        if l.quorum { "yes" } else { "NO" },
        l.votes_heard,
        l.votes_total,
        if l.witness == "none" {
            String::new()
        } else {
            format!(", witness {}", l.witness)
        },
        if l.reachable {
            ""
        } else {
            ", ping/http targets unreachable: own vote given up"
        }
    );
    let _ = writeln!(
        s,
        "Cluster {} (via {})  config {}…  quorum {}  {}{}",
        l.cluster,
        st.via,
        l.digest.chars().take(12).collect::<String>(),
        quorum,
        if l.suspended { "SUSPENDED  " } else { "" },
        match l.timeout_override_remaining_ms {
            Some(ms) => format!(
                "temporary heartbeat timeout {} ms ({} left)",
                l.heartbeat_timeout_ms,
                ago(ms)
            ),
            None => String::new(),
        }
    );
    let _ = writeln!(s, "At {} UTC ({})", clock(now_ms), iso(now_ms));

    // Servers.
    let all = all(st);
    let version = |name: &str| {
        all.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, a)| a.version.clone())
            .unwrap_or_else(|| "-".into())
    };
    let w = width("SERVER", l.servers.iter().map(|x| x.name.as_str()));
    let _ = writeln!(s, "\nSERVERS");
    let _ = writeln!(
        s,
        "  {}  {:<5}  {:<8}  PATHS",
        cell("SERVER", w),
        "STATE",
        "READY"
    );
    for srv in &l.servers {
        let paths: Vec<String> = srv
            .paths
            .iter()
            .map(|p| {
                if srv.is_self {
                    format!("path{}=self", p.path)
                } else {
                    format!(
                        "path{}={}{}",
                        p.path,
                        if p.up { "up" } else { "DOWN" },
                        p.last_heard_ms_ago
                            .map(|ms| format!(" ({} ago)", ago(ms)))
                            .unwrap_or_else(|| " (never heard)".into())
                    )
                }
            })
            .collect();
        let _ = writeln!(
            s,
            "  {}  {:<5}  {:<8}  {}{}{}  version {}",
            cell(&srv.name, w),
            if srv.up { "up" } else { "DOWN" },
            if srv.ready {
                "ready"
            } else if srv.up {
                "starting"
            } else {
                "-"
            },
            paths.join("  "),
            if srv.digest_matches {
                ""
            } else {
                "  CONFIG DIFFERS"
            },
            if srv.is_self { "  (this server)" } else { "" },
            version(&srv.name),
        );
    }

    // Groups, each with its resources as the holder reports them.
    let _ = writeln!(s, "\nGROUPS");
    let holder_view = |g: &baton_core::engine::GroupStatus| {
        let on = g.active_on.as_deref()?;
        all.iter()
            .find(|(n, _)| *n == on)
            .and_then(|(_, a)| a.engine.groups.iter().find(|x| x.name == g.name))
            .map(|x| x.resources.clone())
    };
    let wn = width(
        "GROUP",
        l.groups
            .iter()
            .map(|g| g.name.as_str())
            .chain(
                l.groups
                    .iter()
                    .flat_map(|g| g.resources.iter().map(|r| r.name.as_str())),
            )
            .map(|x| x.trim_end())
            .collect::<Vec<_>>()
            .into_iter(),
    ) + 2;
    let ws = width("ON", l.servers.iter().map(|x| x.name.as_str()));
    let _ = writeln!(
        s,
        "  {}  {:<12}  {}  {:<5}  {:<9}  SINCE",
        cell("GROUP", wn),
        "STATE",
        cell("ON", ws),
        "EPOCH",
        "DESIRED"
    );
    for g in &l.groups {
        let since = now_ms.saturating_sub(g.since_ms_ago);
        let _ = writeln!(
            s,
            "  {}  {:<12}  {}  {:<5}  {:<9}  since {} ({} ago){}",
            cell(&g.name, wn),
            g.state.as_str(),
            cell(g.active_on.as_deref().unwrap_or("-"), ws),
            g.epoch,
            g.desired,
            clock(since),
            ago(g.since_ms_ago),
            if g.excluded_on.is_empty() {
                String::new()
            } else {
                format!("  excluded on {}", g.excluded_on.join(","))
            }
        );
        let (res, where_) = match holder_view(g) {
            Some(r) => (r, g.active_on.clone().unwrap_or_default()),
            None => (g.resources.clone(), st.via.clone()),
        };
        for r in &res {
            let _ = writeln!(
                s,
                "    {}  {:<12}  {}  {}",
                cell(&r.name, wn - 2),
                r.state.as_str(),
                cell(&where_, ws),
                r.kind
            );
        }
    }

    // Mirrors.
    if all.iter().any(|(_, a)| !a.mirrors.is_empty()) {
        let _ = writeln!(s, "\nMIRRORS");
        let w = width("SERVER", all.iter().map(|(n, _)| *n));
        for (srv, a) in &all {
            for m in &a.mirrors {
                let mut flags = Vec::new();
                if let Some(p) = m.resync_pct {
                    flags.push(format!("resync {p}%"));
                }
                if m.paused {
                    flags.push("PAUSED".into());
                }
                if m.fenced {
                    flags.push("FENCED".into());
                }
                if m.split_brain {
                    flags.push("SPLIT BRAIN".into());
                }
                if !m.in_sync && m.out_of_sync_bytes > 0 {
                    flags.push(format!("{} bytes out of sync", m.out_of_sync_bytes));
                }
                if let Some(e) = &m.error {
                    flags.push(e.clone());
                }
                let _ = writeln!(
                    s,
                    "  {}  {:<14} {:<10} {:<6} {:<13} disk {}/{}  {}",
                    cell(srv, w),
                    format!("{}/{}", m.group, m.resource),
                    m.role,
                    m.mode,
                    m.connection,
                    m.disk,
                    m.peer_disk.as_deref().unwrap_or("?"),
                    flags.join(", ")
                );
            }
        }
    }

    // Monitors.
    let _ = writeln!(s, "\nMONITORS");
    let w = width("SERVER", all.iter().map(|(n, _)| *n));
    let wm = width(
        "MONITOR",
        all.iter()
            .flat_map(|(_, a)| a.engine.monitors.iter().map(|m| m.name.as_str())),
    );
    let wk = width(
        "KIND",
        all.iter()
            .flat_map(|(_, a)| a.engine.monitors.iter().map(|m| m.kind.as_str())),
    );
    let _ = writeln!(
        s,
        "  {}  {}  {}  {:<9}  {:>8}  LAST ERROR",
        cell("SERVER", w),
        cell("MONITOR", wm),
        cell("KIND", wk),
        "STATE",
        "LATENCY"
    );
    for (srv, a) in &all {
        for m in &a.engine.monitors {
            let _ = writeln!(
                s,
                "  {}  {}  {}  {:<9}  {:>8}  {}",
                cell(srv, w),
                cell(&m.name, wm),
                cell(&m.kind, wk),
                m.state,
                m.last_latency_ms
                    .map(|l| format!("{l} ms"))
                    .unwrap_or_else(|| "-".into()),
                m.last_error.as_deref().unwrap_or("")
            );
        }
    }
    for p in &st.peers {
        if let Some(e) = &p.error {
            let _ = writeln!(s, "  {} (no status: {e})", cell(&p.server, w));
        }
    }

    // Notification sinks per server: delivered, dropped (counted, never silent), queued.
    let _ = writeln!(s, "\nNOTIFICATIONS");
    let wk = width(
        "SINK",
        all.iter()
            .flat_map(|(_, a)| a.sinks.iter().map(|k| k.name.as_str())),
    );
    for (srv, a) in &all {
        for k in &a.sinks {
            let _ = writeln!(
                s,
                "  {}  {}  delivered {:<7} dropped {:<6} queued {:<5}{}",
                cell(srv, w),
                cell(&k.name, wk),
                k.delivered,
                k.dropped,
                k.queued,
                k.last_error
                    .as_deref()
                    .map(|e| format!(" last error: {e}"))
                    .unwrap_or_default()
            );
        }
    }

    // Problems with the event that explains each.
    let probs = problems(st, events);
    let _ = writeln!(s, "\nPROBLEMS");
    if probs.is_empty() {
        let _ = writeln!(s, "  none");
    }
    for p in &probs {
        match p.event {
            Some(e) => {
                let _ = writeln!(
                    s,
                    "  {}  ({} on {} at {}, {} ago; baton alerts -s {} --after {})",
                    p.what,
                    e.id,
                    e.server,
                    clock(e.time_ms),
                    ago(now_ms.saturating_sub(e.time_ms)),
                    e.server,
                    e.seq.saturating_sub(1)
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "  {}  (no explaining event in the recent alert logs)",
                    p.what
                );
            }
        }
    }
    // Empty last columns leave no trailing blanks.
    s.lines().map(|l| format!("{}\n", l.trim_end())).collect()
}

/// `baton status --json`: the API's answer unchanged, with fields added (never renamed):
/// `at` (ISO 8601), each group's `since` (ISO 8601) and `problems` with their event.
pub fn json(st: &ClusterStatus, events: &[Event], now_ms: u64) -> serde_json::Value {
    let mut v = serde_json::to_value(st).unwrap_or_default();
    let probs: Vec<serde_json::Value> = problems(st, events)
        .iter()
        .map(|p| {
            serde_json::json!({
                "problem": p.what,
                "event": p.event.map(|e| serde_json::json!({
                    "id": e.id, "server": e.server, "seq": e.seq,
                    "time": iso(e.time_ms), "message": e.message,
                })),
            })
        })
        .collect();
    let add_since = |status: &mut serde_json::Value| {
        if let Some(gs) = status.get_mut("groups").and_then(|g| g.as_array_mut()) {
            for g in gs {
                let ago = g.get("since_ms_ago").and_then(|x| x.as_u64()).unwrap_or(0);
                g["since"] = serde_json::Value::String(iso(now_ms.saturating_sub(ago)));
            }
        }
    };
    if let Some(o) = v.as_object_mut() {
        o.insert("at".into(), serde_json::Value::String(iso(now_ms)));
        o.insert("problems".into(), serde_json::Value::Array(probs));
        if let Some(local) = o.get_mut("local") {
            add_since(local);
        }
        if let Some(peers) = o.get_mut("peers").and_then(|p| p.as_array_mut()) {
            for p in peers {
                if let Some(s) = p.get_mut("status").filter(|s| s.is_object()) {
                    add_since(s);
                }
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: &str = "a-server-with-a-rather-long-name";

    fn engine(server: &str, quorum: bool, group_on_2: &str, monitor: &str) -> serde_json::Value {
        serde_json::json!({
            "cluster": "c", "server": server, "digest": "0123456789abcdef", "ready": true,
            "quorum": quorum, "votes_heard": if quorum { 2 } else { 1 }, "votes_total": 3,
            "witness": "none", "refused": false, "suspended": false, "stopping": false,
            "heartbeat_timeout_ms": 1000, "timeout_override_remaining_ms": null,
            "monitor_factor_pct": 100,
            "servers": [
                {"name": "node-1", "is_self": server == "node-1", "up": true, "ready": true,
                 "quorum": quorum, "refused": false, "digest_matches": true,
                 "paths": [{"path": 0, "up": true, "last_heard_ms_ago": 0}]},
                {"name": "node-2", "is_self": server == "node-2", "up": true, "ready": true,
                 "quorum": quorum, "refused": false, "digest_matches": true,
                 "paths": [{"path": 0, "up": true, "last_heard_ms_ago": 12}]},
                {"name": LONG, "is_self": false, "up": false, "ready": false,
                 "quorum": false, "refused": false, "digest_matches": true,
                 "paths": [{"path": 0, "up": false, "last_heard_ms_ago": 133000}]},
            ],
            "groups": [{
                "name": "web", "state": group_on_2, "active_on": "node-2", "epoch": 4,
                "since_ms_ago": 133000, "desired": "running", "excluded_on": [],
                "per_server": {"node-1": "offline", "node-2": group_on_2, LONG: "offline"},
                "resources": [
                    {"name": "vip", "kind": "floating-ip",
                     "state": if server == "node-2" { "online" } else { "offline" }},
                    {"name": "app", "kind": "exec",
                     "state": if server == "node-2" { "failed" } else { "offline" }},
                ],
            }],
            "monitors": [{"name": "http", "kind": "http", "state": monitor,
                          "last_latency_ms": 3, "last_error": "HTTP 500", "fail_streak": 2,
                          "scripts": 0, "restarts": 0, "failovers": 0}],
        })
    }

    fn agent(engine: serde_json::Value) -> AgentStatus {
        let mut v = serde_json::json!({
            "version": "0.1.0", "pid": 1, "uptime_ms": 1,
            "packets_rejected": crate::wire::RejectCounters::default(),
            "sinks": [],
        });
        for (k, x) in engine.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"))
    }

    fn event(id: &str, server: &str, seq: u64, time_ms: u64, extra: serde_json::Value) -> Event {
        let mut v = serde_json::json!({"id": id, "severity": "error", "module": "m",
            "message": format!("{id} message"), "server": server, "seq": seq,
            "time_ms": time_ms});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn problems_carry_the_event_that_explains_them() {
        let now = 1_700_000_531_000;
        let st = ClusterStatus {
            via: "node-1".into(),
            local: agent(engine("node-1", false, "failed", "normal")),
            peers: vec![
                crate::api_types::PeerStatus {
                    server: "node-2".into(),
                    status: Some(agent(engine("node-2", true, "failed", "error"))),
                    error: None,
                },
                crate::api_types::PeerStatus {
                    server: LONG.into(),
                    status: None,
                    error: Some("connection refused".into()),
                },
            ],
        };
        let events = vec![
            // The answering server's log first.
            event(
                "BTN-1102",
                "node-1",
                7,
                now - 132_000,
                serde_json::json!({"peer": LONG}),
            ),
            event("BTN-1120", "node-1", 8, now - 5_000, serde_json::json!({})),
            event(
                "BTN-1102",
                "node-2",
                3,
                now - 131_000,
                serde_json::json!({"peer": LONG}),
            ),
            event(
                "BTN-2202",
                "node-2",
                9,
                now - 60_000,
                serde_json::json!({"group": "web", "resource": "app"}),
            ),
            event(
                "BTN-3001",
                "node-2",
                10,
                now - 10_000,
                serde_json::json!({"monitor": "http"}),
            ),
        ];
        let text = render(&st, &events, now);
        for want in [
            format!("  server {LONG} down  (BTN-1102 on node-1 at 22:19:59, 2m12s ago; baton alerts -s node-1 --after 6)"),
            "  no quorum on node-1 (1/3 votes)  (BTN-1120 on node-1".into(),
            "  group web failed on node-2  (BTN-2202 on node-2".into(),
            "  monitor http on node-2 error: HTTP 500  (BTN-3001 on node-2".into(),
            // The holder's view of the resources.
            format!("    app    failed        {:<w$}  exec", "node-2", w = LONG.len()),
            format!("    vip    online        {:<w$}  floating-ip", "node-2", w = LONG.len()),
            "since 22:19:58 (2m13s ago)".into(),
        ] {
            assert!(text.contains(&want), "`{want}` not in\n{text}");
        }
        // A server known down is not said twice.
        assert!(!text.contains("no status from"), "{text}");
        // Columns fit the long name.
        let rows: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("  node-1 ") && l.contains("ready"))
            .collect();
        assert_eq!(rows.len(), 1, "{text}");
        assert!(
            rows[0].starts_with(&format!("  {:<w$}  up", "node-1", w = LONG.len())),
            "{text}"
        );

        let v = json(&st, &events, now);
        assert_eq!(v["at"], "2023-11-14T22:22:11Z");
        assert_eq!(v["local"]["groups"][0]["since"], "2023-11-14T22:19:58Z");
        assert_eq!(v["local"]["groups"][0]["since_ms_ago"], 133000);
        let p = v["problems"].as_array().unwrap();
        assert!(
            p.iter()
                .any(|p| p["event"]["id"] == "BTN-2202"
                    && p["event"]["time"] == "2023-11-14T22:21:11Z"),
            "{v}"
        );
    }

    #[test]
    fn human_times() {
        assert_eq!(ago(133_000), "2m13s");
        assert_eq!(ago(450), "450ms");
        assert_eq!(ago(7_260_000), "2h1m");
        assert_eq!(clock(1_700_000_531_000), "22:22:11");
        assert_eq!(iso(1_700_000_531_000), "2023-11-14T22:22:11Z");
    }
}
