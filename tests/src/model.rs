//! The JSON the tests read: `baton status --json`, `baton alerts --json` and the
//! `local-claim` history. These are written from the documented shapes rather than
//! imported from the agent, so a change of the output format fails the tests.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `baton status --json`: the answering server's own report and each peer's.
#[derive(Debug, Clone, Deserialize)]
pub struct ClusterStatus {
    pub via: String,
    pub local: AgentStatus,
    pub peers: Vec<PeerStatus>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PeerStatus {
    pub server: String,
    pub status: Option<AgentStatus>,
    pub error: Option<String>,
}

/// One agent's report (`GET /v1/status`): agent facts plus the engine status.
#[derive(Debug, Clone, Deserialize)]
pub struct AgentStatus {
    pub pid: u32,
    pub uptime_ms: u64,
    pub packets_rejected: RejectCounters,
    pub server: String,
    pub digest: String,
    pub ready: bool,
    pub quorum: bool,
    pub refused: bool,
    pub suspended: bool,
    pub heartbeat_timeout_ms: u64,
    pub servers: Vec<ServerStatus>,
    pub groups: Vec<GroupStatus>,
    pub monitors: Vec<MonitorStatus>,
    #[serde(default)]
    pub mirrors: Vec<MirrorBrief>,
}

/// One `mirror-disk` resource of the server, as the status shows it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MirrorBrief {
    pub group: String,
    pub resource: String,
    pub role: String,
    pub connection: String,
    pub in_sync: bool,
    pub fenced: bool,
    #[serde(default)]
    pub serving: bool,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct RejectCounters {
    pub forged: u64,
    pub replayed: u64,
    pub malformed: u64,
    pub wrong_cluster: u64,
    pub unknown_sender: u64,
    pub bad_path: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServerStatus {
    pub name: String,
    pub is_self: bool,
    pub up: bool,
    pub ready: bool,
    pub quorum: bool,
    pub refused: bool,
    pub digest_matches: bool,
    pub paths: Vec<PathStatus>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PathStatus {
    pub path: usize,
    pub up: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GroupStatus {
    pub name: String,
    /// Summary state across the cluster, from the reporting server's view.
    pub state: String,
    pub active_on: Option<String>,
    pub epoch: u64,
    pub since_ms_ago: u64,
    pub desired: String,
    pub excluded_on: Vec<String>,
    /// Each server's own state of the group as the reporting server knows it (its own
    /// entry is its local state).
    pub per_server: BTreeMap<String, String>,
    /// The group's self-fence deadline `F_g` and takeover bound `T + W_g` (ms).
    #[serde(default)]
    pub fence_ms: u64,
    #[serde(default)]
    pub takeover_after_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MonitorStatus {
    pub name: String,
    pub kind: String,
    pub state: String,
    pub last_error: Option<String>,
    pub fail_streak: u32,
    pub restarts: u32,
    pub failovers: u32,
}

impl ClusterStatus {
    /// Every report that was obtained: the answering server's first, then the peers'.
    pub fn agents(&self) -> Vec<&AgentStatus> {
        let mut v = vec![&self.local];
        v.extend(self.peers.iter().filter_map(|p| p.status.as_ref()));
        v
    }

    /// The report of `server` (its own), if it answered.
    pub fn agent(&self, server: &str) -> Option<&AgentStatus> {
        self.agents().into_iter().find(|a| a.server == server)
    }

    /// The answering server's view of a group.
    pub fn group(&self, name: &str) -> &GroupStatus {
        self.local.group(name)
    }

    /// Servers that report, each about itself, the group in state `online`.
    pub fn online_on(&self, group: &str) -> Vec<String> {
        self.agents()
            .into_iter()
            .filter(|a| a.local_state(group) == "online")
            .map(|a| a.server.clone())
            .collect()
    }

    /// The one server on which `group` is online, if every answering agent agrees.
    pub fn sole_owner(&self, group: &str) -> Option<String> {
        let online = self.online_on(group);
        if online.len() != 1 {
            return None;
        }
        let owner = online[0].clone();
        self.agents()
            .iter()
            .all(|a| {
                let g = a.group(group);
                g.state == "online" && g.active_on.as_deref() == Some(owner.as_str())
            })
            .then_some(owner)
    }

    /// One line for failure messages.
    pub fn summary(&self, group: &str) -> String {
        let mut s = format!("via {}:", self.via);
        for a in self.agents() {
            let g = a.group(group);
            let servers: Vec<String> = a
                .servers
                .iter()
                .map(|x| {
                    let paths: String = x
                        .paths
                        .iter()
                        .map(|p| if p.up { '+' } else { '-' })
                        .collect();
                    format!(
                        "{}={}{}[{paths}]{}",
                        x.name,
                        if x.up { "up" } else { "DOWN" },
                        if x.ready { "" } else { "(not ready)" },
                        if x.digest_matches {
                            ""
                        } else {
                            "(digest differs)"
                        }
                    )
                })
                .collect();
            let mons: Vec<String> = a
                .monitors
                .iter()
                .map(|m| format!("{}:{} r{} f{}", m.name, m.state, m.restarts, m.failovers))
                .collect();
            s.push_str(&format!(
                "\n  {}: local {} | group {} on {} epoch {} desired {} excluded {:?} | {} | monitors {}{}{}",
                a.server,
                a.local_state(group),
                g.state,
                g.active_on.as_deref().unwrap_or("-"),
                g.epoch,
                g.desired,
                g.excluded_on,
                servers.join(" "),
                mons.join(", "),
                if a.suspended { " SUSPENDED" } else { "" },
                if a.refused { " REFUSED" } else { "" },
            ));
        }
        for p in &self.peers {
            if let Some(e) = &p.error {
                s.push_str(&format!("\n  {}: no status ({e})", p.server));
            }
        }
        s
    }
}

impl AgentStatus {
    pub fn group(&self, name: &str) -> &GroupStatus {
        self.groups
            .iter()
            .find(|g| g.name == name)
            .unwrap_or_else(|| panic!("{} reports no group `{name}`", self.server))
    }

    /// This server's own state of `group`.
    /// (`offline` when the group is not in the server's configuration, e.g. one runs a
    /// configuration pushed to the others only.)
    pub fn local_state(&self, group: &str) -> String {
        self.groups
            .iter()
            .find(|g| g.name == group)
            .and_then(|g| g.per_server.get(&self.server).cloned())
            .unwrap_or_else(|| "offline".into())
    }

    /// This server's view of server `name`.
    pub fn server_view(&self, name: &str) -> &ServerStatus {
        self.servers
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("{} reports no server `{name}`", self.server))
    }

    pub fn monitor(&self, name: &str) -> &MonitorStatus {
        self.monitors
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("{} reports no monitor `{name}`", self.server))
    }
}

/// One event of `baton alerts --json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    pub id: String,
    pub severity: String,
    pub message: String,
    #[serde(default)]
    pub server: String,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub resource: Option<String>,
    #[serde(default)]
    pub monitor: Option<String>,
    #[serde(default)]
    pub peer: Option<String>,
    #[serde(default)]
    pub epoch: Option<u64>,
    #[serde(default)]
    pub fields: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub seq: u64,
    #[serde(default)]
    pub time_ms: u64,
}

/// Queries over one server's alert log.
pub trait Events {
    fn with_id(&self, id: &str) -> Vec<&Event>;
    fn has(&self, id: &str, pred: impl Fn(&Event) -> bool) -> bool;
    fn count(&self, id: &str, pred: impl Fn(&Event) -> bool) -> usize;
    /// Events after sequence number `seq`.
    fn after(&self, seq: u64) -> Vec<Event>;
    /// The last sequence number (0 when empty).
    fn last_seq(&self) -> u64;
    /// `BTN-nnnn message` lines, for failure messages.
    fn lines(&self) -> String;
}

impl Events for [Event] {
    fn with_id(&self, id: &str) -> Vec<&Event> {
        self.iter().filter(|e| e.id == id).collect()
    }
    fn has(&self, id: &str, pred: impl Fn(&Event) -> bool) -> bool {
        self.iter().any(|e| e.id == id && pred(e))
    }
    fn count(&self, id: &str, pred: impl Fn(&Event) -> bool) -> usize {
        self.iter().filter(|e| e.id == id && pred(e)).count()
    }
    fn after(&self, seq: u64) -> Vec<Event> {
        self.iter().filter(|e| e.seq > seq).cloned().collect()
    }
    fn last_seq(&self) -> u64 {
        self.iter().map(|e| e.seq).max().unwrap_or(0)
    }
    fn lines(&self) -> String {
        self.iter()
            .map(|e| format!("    #{} {} {} {}", e.seq, e.server, e.id, e.message))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// One line of a `local-claim` history file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Claim {
    pub owner: String,
    pub group: String,
    pub epoch: u64,
}
