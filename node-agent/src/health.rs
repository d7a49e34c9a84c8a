//! `baton status --check`: the cluster's health in one line and an exit code, for
//! monitoring systems (the Nagios plugin convention, as `crm_mon -s` gives it): 0 OK,
//! 1 WARNING (degraded: the service runs but something that protects it is missing),
//! 2 CRITICAL (a group that should run does not, a group runs twice, this server has no
//! quorum, a mirror is in split brain, or no agent answers).

use serde::Serialize;

use crate::api_types::ClusterStatus;
use baton_core::engine::GroupState;

/// How healthy the cluster is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok = 0,
    Warning = 1,
    Critical = 2,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Warning => "WARNING",
            Level::Critical => "CRITICAL",
        }
    }

    /// The plugin convention's exit code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// The verdict: the worst level found, a summary and every problem (worst first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    pub level: Level,
    pub summary: String,
    pub problems: Vec<(Level, String)>,
}

impl Health {
    /// `BATON WARNING - 2/3 servers up, 1/1 groups online: server node-3 down`.
    pub fn line(&self) -> String {
        let mut s = format!("BATON {} - {}", self.level.as_str(), self.summary);
        if !self.problems.is_empty() {
            let p: Vec<&str> = self.problems.iter().map(|p| p.1.as_str()).collect();
            s.push_str(": ");
            s.push_str(&p.join("; "));
        }
        s
    }

    /// No agent answered: nothing is known, and a cluster nobody can reach is critical.
    pub fn unreachable(why: &str) -> Health {
        Health {
            level: Level::Critical,
            summary: "no agent answers".into(),
            problems: vec![(Level::Critical, why.to_string())],
        }
    }
}

/// Judge a cluster status (as `GET /v1/cluster/status` returns it).
pub fn judge(st: &ClusterStatus) -> Health {
    let l = &st.local.engine;
    let mut p: Vec<(Level, String)> = Vec::new();
    let (w, c) = (Level::Warning, Level::Critical);
    if !l.quorum {
        p.push((
            c,
            format!(
                "{} has no quorum ({}/{} votes)",
                st.via, l.votes_heard, l.votes_total
            ),
        ));
    }
    if l.suspended {
        p.push((w, "cluster suspended: no failover".into()));
    }
    for s in &l.servers {
        if !s.up {
            p.push((w, format!("server {} down", s.name)));
            continue;
        }
        if !s.ready {
            p.push((w, format!("server {} starting", s.name)));
        }
        if !s.digest_matches {
            p.push((w, format!("server {} runs another configuration", s.name)));
        }
        if s.refused {
            p.push((w, format!("server {} refuses to act", s.name)));
        }
        let down: Vec<String> = s
            .paths
            .iter()
            .filter(|x| !x.up)
            .map(|x| x.path.to_string())
            .collect();
        if !s.is_self && !down.is_empty() {
            p.push((
                w,
                format!(
                    "server {} interconnect path {} down",
                    s.name,
                    down.join(",")
                ),
            ));
        }
    }
    for g in &l.groups {
        let holders = g.per_server.values().filter(|s| s.holds()).count();
        if holders > 1 {
            p.push((
                c,
                format!("group {} held by {holders} servers at once", g.name),
            ));
        }
        let running = g.desired == "running";
        match g.state {
            GroupState::Online => {}
            GroupState::Claiming | GroupState::Activating | GroupState::Deactivating if running => {
                p.push((w, format!("group {} {}", g.name, g.state.as_str())));
            }
            _ if running => p.push((c, format!("group {} {}", g.name, g.state.as_str()))),
            _ => {}
        }
        if !g.excluded_on.is_empty() {
            p.push((
                w,
                format!(
                    "group {} excluded on {} after failures",
                    g.name,
                    g.excluded_on.join(",")
                ),
            ));
        }
    }
    for m in &l.monitors {
        if m.state == "error" || m.state == "warning" {
            p.push((
                w,
                format!(
                    "monitor {} {}{}",
                    m.name,
                    m.state,
                    m.last_error
                        .as_deref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                ),
            ));
        }
    }
    for (srv, a) in std::iter::once((&st.via, Some(&st.local)))
        .chain(st.peers.iter().map(|x| (&x.server, x.status.as_ref())))
    {
        let Some(a) = a else { continue };
        for m in &a.mirrors {
            let name = format!("mirror {}/{} on {srv}", m.group, m.resource);
            if m.split_brain {
                p.push((c, format!("{name} in split brain")));
            } else if m.role == "primary" && !m.in_sync {
                p.push((
                    w,
                    format!(
                        "{name} not in sync ({}, {} bytes out of sync)",
                        m.connection, m.out_of_sync_bytes
                    ),
                ));
            }
            if m.paused {
                p.push((w, format!("{name} paused")));
            }
            if let Some(e) = &m.error {
                p.push((w, format!("{name}: {e}")));
            }
        }
    }
    for x in &st.peers {
        if let (None, Some(e)) = (&x.status, &x.error) {
            let up = l.servers.iter().any(|s| s.name == x.server && s.up);
            if up {
                p.push((w, format!("no status from {}: {e}", x.server)));
            }
        }
    }
    p.sort_by_key(|x| std::cmp::Reverse(x.0));
    let level = p.first().map_or(Level::Ok, |x| x.0);
    let up = l.servers.iter().filter(|s| s.up).count();
    let online = l
        .groups
        .iter()
        .filter(|g| g.state == GroupState::Online)
        .count();
    Health {
        level,
        summary: format!(
            "{up}/{} servers up, {online}/{} groups online, quorum {}/{} votes",
            l.servers.len(),
            l.groups.len(),
            l.votes_heard,
            l.votes_total
        ),
        problems: p,
    }
}
