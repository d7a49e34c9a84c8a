//! The event catalogue: every state change and error an operator sees has a stable id,
//! a severity, the module that raises it, and a documented cause and action.
//!
//! Ids are never reused or renumbered. `docs/src/events.md` is generated from this table
//! (`baton events --markdown`) and a test keeps the two in step.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "info" => Ok(Severity::Info),
            "warning" => Ok(Severity::Warning),
            "error" => Ok(Severity::Error),
            "critical" => Ok(Severity::Critical),
            other => Err(format!(
                "unknown severity '{other}': expected info, warning, error or critical"
            )),
        }
    }
}

/// A catalogue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventDef {
    pub id: u16,
    pub severity: Severity,
    pub module: &'static str,
    /// Short title, also the docs heading.
    pub title: &'static str,
    pub cause: &'static str,
    pub action: &'static str,
}

impl EventDef {
    pub fn code(&self) -> String {
        format!("BTN-{:04}", self.id)
    }
}

macro_rules! catalogue {
    ($( $name:ident = $id:literal, $sev:ident, $module:literal, $title:literal, cause: $cause:literal, action: $action:literal; )*) => {
        $( pub const $name: EventDef = EventDef { id: $id, severity: Severity::$sev, module: $module, title: $title, cause: $cause, action: $action }; )*
        /// Every event Baton can raise, in id order.
        pub const CATALOGUE: &[EventDef] = &[$($name),*];
    };
}

catalogue! {
    AGENT_STARTED = 1001, Info, "agent", "Agent started",
        cause: "The node agent started and loaded its configuration and state directory.",
        action: "None.";
    AGENT_STOPPING = 1002, Info, "agent", "Agent stopping",
        cause: "The agent received SIGTERM/SIGINT or `baton cluster stop` and is deactivating its groups in reverse dependency order before it exits.",
        action: "None. If the stop does not finish within the shutdown deadline, see BTN-1004.";
    AGENT_STOPPED = 1003, Info, "agent", "Agent stopped",
        cause: "The agent deactivated its groups and exited cleanly.",
        action: "None.";
    AGENT_SHUTDOWN_DEADLINE = 1004, Error, "agent", "Shutdown deadline passed",
        cause: "Deactivating the groups on shutdown took longer than the shutdown deadline; the agent exited with resources possibly still active.",
        action: "Check the resources of the named groups by hand; raise `[agent] shutdown_timeout` or the resources' deactivation timeouts.";
    SELF_FENCE = 1005, Critical, "agent", "Self-fence: resetting this server now",
        cause: "This server must be gone before the others take its groups over (`[quorum] on_loss` or `on_fence_timeout` is `reboot` or `shutdown`), so it resets or powers off at once as `[agent] fence_method` says (SysRq by default), without stopping services or syncing disks. The event is written to the alert log just before.",
        action: "After the server is back, find out why it lost quorum (BTN-1120 and the events before it) or why its groups did not stop in time (BTN-1135).";
    SELF_FENCE_FAILED = 1006, Critical, "agent", "Self-fence reset failed",
        cause: "Writing to `[agent] sysrq_trigger` failed (not root, no such file, a container without /proc/sysrq-trigger); the agent ran `[agent] force_reboot_command` / `force_poweroff_command` instead, or that failed too.",
        action: "Run the agent as root on the host, or set `[agent] fence_method` to a method that works here. A server that cannot fence itself can run its groups at the same time as the server that takes them over.";
    STATE_DIR_ERROR = 1010, Critical, "agent", "State directory error",
        cause: "The agent could not read or write its state directory (epochs, ownership, alert log).",
        action: "Check permissions and free space of the state directory. The agent refuses to activate groups until it can persist epochs.";
    CONFIG_DIGEST_MISMATCH = 1011, Error, "agent", "Configuration differs between servers",
        cause: "A heartbeat carried a configuration digest different from this server's: the servers do not run the same configuration file.",
        action: "Push the configuration to every server (`baton config push FILE`), or copy the same file to every server and restart the agents that run the old one. While digests differ, the server in the minority (or, on a tie, every server whose digest differs from the lowest-named server's) refuses to activate groups.";
    ACTIVATION_REFUSED_DIGEST = 1012, Error, "agent", "Activation refused: configuration mismatch",
        cause: "This server would activate a group but its configuration digest differs from its peers'.",
        action: "Distribute the same configuration file to every server (see BTN-1011).";
    CONFIG_APPLIED = 1013, Info, "agent", "Configuration applied",
        cause: "`baton config push` sent a configuration that this agent checked, stored next to the running one (the previous file kept as `.prev`) and took live: monitors, notification sinks, metrics, accepted keys or new groups changed; no group was restarted. The event lists the changed keys and the new digest.",
        action: "None. A new group starts once every up server runs a configuration that has it.";
    CONFIG_REFUSED = 1014, Warning, "agent", "Configuration push refused",
        cause: "`baton config push` sent a configuration that this agent did not take: it is invalid (the diagnostics name file, line and key), it changes something that needs a rolling restart (the reason is given), or its keys cannot be loaded. Nothing was changed.",
        action: "Fix the file and push again, or make the change with a rolling restart (docs: operations, Configuration changes).";
    GROUP_READOPTED = 1020, Info, "agent", "Group re-adopted after restart",
        cause: "The agent restarted while it owned the group; every resource checked active, so the group was adopted without a restart.",
        action: "None.";
    GROUP_READOPT_CLEANUP = 1021, Warning, "agent", "Group cleaned up after restart",
        cause: "The agent restarted while it owned the group, but some resources were not active or another server now holds the group; the local resources were deactivated.",
        action: "None; the group is placed again by the normal rules.";
    SERVER_UP = 1101, Info, "membership", "Server up",
        cause: "A heartbeat arrived from a server that was down or not yet seen.",
        action: "None.";
    SERVER_DOWN = 1102, Warning, "membership", "Server down",
        cause: "Every interconnect path to the server was silent for longer than the heartbeat timeout.",
        action: "Check the server and its agent. Groups it held fail over to the next server in their order.";
    PATH_DOWN = 1103, Warning, "membership", "Interconnect path down",
        cause: "One interconnect path to a server was silent for longer than the heartbeat timeout while another path still works.",
        action: "Check that network (interface, cable, security group, firewall). No failover happens while one path remains.";
    PATH_UP = 1104, Info, "membership", "Interconnect path up",
        cause: "Heartbeats arrive again on an interconnect path that was down.",
        action: "None.";
    PACKETS_REJECTED = 1110, Warning, "heartbeat", "Heartbeat packets rejected",
        cause: "Heartbeat packets failed authentication, were replays, were malformed or came from an unknown cluster or server. Counts are in `baton status`.",
        action: "Check that every server uses the same key file; look for another cluster or a scanner on the interconnect.";
    HEARTBEAT_TOO_LARGE = 1111, Critical, "heartbeat", "Heartbeat cannot be sent",
        cause: "This server's heartbeat could not be encoded into one datagram (too large even compressed, or not serialisable). Its peers stop hearing it: it loses their votes and they treat it as down.",
        action: "Run `baton config check`: it refuses configurations whose worst-case heartbeat does not fit. Reduce the number or the name lengths of groups, monitors or servers, or split the cluster.";
    HEARTBEAT_SENDING = 1112, Info, "heartbeat", "Heartbeats sent again",
        cause: "This server's heartbeat fits in a datagram again after BTN-1111.",
        action: "None.";
    NO_QUORUM = 1120, Error, "membership", "No quorum",
        cause: "This server hears fewer than a majority of the cluster's votes; it will not activate groups and stops those it runs.",
        action: "Restore the interconnects or the failed servers. See the quorum section of the configuration reference.";
    QUORUM_REGAINED = 1121, Info, "membership", "Quorum regained",
        cause: "This server hears a majority of votes again.",
        action: "None.";
    AGENT_PAUSED = 1130, Warning, "quorum", "Agent was paused or stalled",
        cause: "The agent's own clock jumped further between two steps of its main loop than the quorum lease: the process was stopped (SIGSTOP, a frozen VM) or starved of CPU. Its view of the cluster may be stale, so it re-checks quorum before acting: heartbeats that queued while it was stopped count with their real arrival times.",
        action: "Find out what stopped the process (VM migration or pause, swap storms, a debugger). If the pause was longer than the takeover wait the group may have moved; a watchdog (systemd WatchdogSec, [agent] watchdog_device) resets servers whose agent stalls.";
    WITNESS_VOTE_LOST = 1131, Warning, "quorum", "Witness vote not held",
        cause: "The witness did not grant its vote to this server: another partition holds it, or the witness did not answer (the message says which).",
        action: "If no partition is expected, check the network path to the witness and that it runs (`baton witness`, or the S3 bucket / DynamoDB table and the credentials).";
    WITNESS_VOTE_GRANTED = 1132, Info, "quorum", "Witness vote granted",
        cause: "The witness granted its vote to this server's partition.",
        action: "None.";
    REACHABILITY_LOST = 1133, Warning, "quorum", "Reachability targets unreachable: vote given up",
        cause: "None of the `[quorum] ping` / `[quorum] http` targets answered, so this server gives up its vote (it is probably the isolated side of a network partition).",
        action: "Check this server's network; the message lists what each target answered.";
    REACHABILITY_OK = 1134, Info, "quorum", "Reachability targets answer again",
        cause: "At least one `[quorum] ping` / `[quorum] http` target answers again; the server counts its own vote again.",
        action: "None.";
    FENCE_DEADLINE_MISSED = 1135, Critical, "quorum", "Self-fence deadline missed",
        cause: "This server lost quorum and its groups were not all deactivated within their fence deadline (`[quorum] fence_timeout`, or the group's own: its `fence_budget`, or the time its resources' stops may take, a local self-fence stop counting its kind's bound; `baton status --json` gives each group's `fence_ms`), or its agent restarted on the same boot while that deadline ran and still holds groups without quorum. The other side activates them after the takeover wait, so the server escalates as `[quorum] on_fence_timeout` says (reboot by default).",
        action: "Make the resources' stop commands finish within the fence timeout, or raise `fence_timeout` (the takeover wait grows with it). Find why the stop hung (the resource events before this one).";
    TAKEOVER_WAIT = 1136, Info, "quorum", "Waiting for a lost server to fence itself",
        cause: "The group's server is down; before activating the group elsewhere, this server waits until the lost server has been silent for the heartbeat timeout plus the takeover wait, so that it has stopped the group on its side (self-fence).",
        action: "None. See docs/src/split-brain.md for the timing rules.";
    LOOP_STALLED = 1137, Critical, "agent", "Agent loop stalled: watchdog not fed",
        cause: "The agent's main loop did not run for longer than its stall limit; the agent stops feeding the systemd watchdog and `/dev/watchdog` so the server is reset, as a server that cannot act on quorum loss must not keep its groups.",
        action: "Find what blocked the agent (CPU starvation, I/O hang). After the reset the groups run elsewhere.";
    EPOCH_REFUSED = 1140, Critical, "quorum", "Epoch or intent version out of bounds refused",
        cause: "A heartbeat, a witness answer, a witness lease object or the state directory carried an epoch or an operator intent version above 2^53 (the bound in docs/src/split-brain.md): corrupt or forged, as no cluster reaches it. Nothing of it was learned: a heartbeat carrying it was ignored (the peer counts as silent), a witness answer carrying it counts as no grant, a value in the state directory was ignored. Reported at most once a minute per source.",
        action: "Find the source named in the event: a peer running a damaged or modified agent or someone holding the cluster key on the interconnect, a tampered witness or lease object, a damaged state directory. Fix it; the values in range are used again at once.";
    EPOCH_EXHAUSTED = 1141, Critical, "group", "Group epochs exhausted",
        cause: "The group's highest known epoch is 2^53, the bound in docs/src/split-brain.md: a new epoch would exceed it, so this server does not claim the group rather than let epochs wrap to 0. Reported at most once a minute.",
        action: "This does not happen in normal operation (a claim per millisecond would take 285,000 years); a damaged state directory or lease object is the likely cause. Stop the cluster, remove the group's epoch from the state directory on every server and the witness lease objects, then start it again.";
    GROUP_ACTIVATING = 2101, Info, "group", "Group activating",
        cause: "The group is starting on this server with a new epoch.",
        action: "None.";
    GROUP_ACTIVATED = 2102, Info, "group", "Group activated",
        cause: "Every resource of the group is active on this server.",
        action: "None.";
    GROUP_DEACTIVATING = 2103, Info, "group", "Group deactivating",
        cause: "The group is stopping on this server (operator stop or move, failover, failback, shutdown or quorum loss).",
        action: "None.";
    GROUP_DEACTIVATED = 2104, Info, "group", "Group deactivated",
        cause: "Every resource of the group is inactive on this server.",
        action: "None.";
    GROUP_ACTIVATION_FAILED = 2105, Error, "group", "Group activation failed",
        cause: "A resource could not be activated after its retries; the group was deactivated here and, within the failover threshold, hands over to the next server.",
        action: "Read the resource event before this one (BTN-2202) for the failing command and its output.";
    GROUP_DEACTIVATION_FAILED = 2106, Critical, "group", "Group deactivation failed",
        cause: "A resource could not be deactivated after its retries. The group stays held by this server so that it is never active twice; the configured final action runs.",
        action: "Deactivate the resource by hand, then `baton group stop` and `baton group start` the group.";
    GROUP_FAILOVER = 2107, Warning, "group", "Group failing over",
        cause: "The server holding the group is down (silent on every path, which includes a server that lost quorum and stopped talking to this side) or gave the group up after a failure; this server is next in the group's order and takes it over.",
        action: "Find out why the previous server failed (events before this one).";
    GROUP_NO_SERVER = 2108, Error, "group", "No server can run the group",
        cause: "The group should run but no server in its order can take it: each is down, still starting, without quorum, leaving, or refusing (configuration mismatch). (Servers excluded after failures are still used when no other server is left.)",
        action: "Fix the failing servers or resources, then `baton group start GROUP` to clear the exclusions.";
    GROUP_MOVE = 2109, Info, "group", "Group move requested",
        cause: "An operator asked to move the group, or failback moves it back to a preferred server.",
        action: "None.";
    GROUP_STOP_REQUESTED = 2110, Info, "group", "Group stop requested",
        cause: "An operator stopped the group; it will not run anywhere until started again.",
        action: "None.";
    GROUP_START_REQUESTED = 2111, Info, "group", "Group start requested",
        cause: "An operator started the group; failure exclusions are cleared.",
        action: "None.";
    GROUP_FINAL_ACTION = 2112, Critical, "group", "Final action",
        cause: "Recovery is exhausted (activation, deactivation or monitor recovery); the configured final action is executed.",
        action: "Investigate the preceding errors. After a `stop-group` or `stop-cluster` final action, start the group or the agent again by hand.";
    GROUP_DUAL_ACTIVE = 2120, Error, "group", "Group active on two servers: older epoch yields",
        cause: "Two servers reported the group active at once (after a partition healed, or a paused server resumed). The server with the older epoch (fencing token) deactivates it at once; the newer owner keeps it.",
        action: "Check the data the group protects for writes from the older owner during the overlap; find the cause (a partition longer than the timeouts without quorum loss should be impossible: see docs/src/split-brain.md).";
    GROUP_CLAIM_ABANDONED = 2121, Info, "group", "Group activation claim abandoned",
        cause: "This server claimed the group with a new epoch but did not get the claim acknowledged by a quorum (another server claimed it with a stronger claim, quorum was lost, or the acknowledgements did not arrive in time). Nothing was started.",
        action: "None; placement is decided again.";
    RESOURCE_ACTIVATED = 2201, Info, "resource", "Resource activated",
        cause: "A resource activation succeeded.",
        action: "None.";
    RESOURCE_ACTIVATION_FAILED = 2202, Error, "resource", "Resource activation failed",
        cause: "A resource's activation failed or timed out. The text says which command and why; it is retried up to the resource's retry count.",
        action: "Check the resource's command, its output and its timeout.";
    RESOURCE_DEACTIVATED = 2203, Info, "resource", "Resource deactivated",
        cause: "A resource deactivation succeeded.",
        action: "None.";
    RESOURCE_DEACTIVATION_FAILED = 2204, Error, "resource", "Resource deactivation failed",
        cause: "A resource's deactivation failed or timed out; it is retried up to the resource's retry count.",
        action: "Check the resource's stop command, its output and its timeout.";
    MONITOR_ERROR = 3001, Error, "monitor", "Monitor detected an error",
        cause: "A monitor failed more times in a row than its retry count allows; recovery starts.",
        action: "Read the monitor's last error in `baton status`; recovery events follow.";
    MONITOR_NORMAL = 3002, Info, "monitor", "Monitor back to normal",
        cause: "A monitor that was in error succeeds again.",
        action: "None.";
    MONITOR_WARNING = 3003, Warning, "monitor", "Monitor poll failed",
        cause: "A monitor poll failed but the retry count is not yet used up.",
        action: "None unless it repeats.";
    MONITOR_API_ERROR = 3004, Warning, "monitor", "Monitor could not reach an API",
        cause: "The monitor's poll failed because an API (cloud or local) did not answer; with `on_api_error = \"warn\"` (default) or `\"ignore\"` this starts no recovery (invariant 5).",
        action: "Check the endpoint, credentials and network path to the API.";
    RECOVERY_SCRIPT = 3010, Warning, "recovery", "Recovery script",
        cause: "Recovery step 1: the monitor's recovery script runs.",
        action: "None.";
    RECOVERY_RESTART = 3011, Warning, "recovery", "Recovery: restart",
        cause: "Recovery step 2: the monitor's recovery target is deactivated and activated again on this server.",
        action: "None unless it repeats.";
    RECOVERY_FAILOVER = 3012, Error, "recovery", "Recovery: failover",
        cause: "Recovery step 3: restarts are used up; the monitor's target group is given up here and moves to the next server.",
        action: "Investigate why the application fails on this server.";
    RECOVERY_EXHAUSTED = 3013, Critical, "recovery", "Recovery exhausted",
        cause: "Recovery script, restarts and failovers are used up; the final action follows (BTN-2112).",
        action: "Investigate the monitored application.";
    RECOVERY_SUPPRESSED = 3014, Warning, "recovery", "Failover suppressed",
        cause: "The server holding a group was lost while the cluster is suspended, so the group is not failed over; it stays offline until the cluster is resumed.",
        action: "Resume the cluster (`baton cluster resume`) to let the group fail over, or start it by hand with `baton group start GROUP [--on SERVER]` (the cluster stays suspended).";
    RECOVERY_SCRIPT_FAILED = 3015, Warning, "recovery", "Recovery script failed",
        cause: "The monitor's recovery script exited non-zero or timed out. The recovery ladder goes on at the monitor's next error.",
        action: "Check the script and its output (in the event text); run it by hand with the same BATON_* environment.";
    MONITOR_SUSPENDED = 3020, Info, "monitor", "Monitor suspended",
        cause: "An operator suspended the monitor: it does not poll and starts no recovery.",
        action: "Resume it with `baton monitor resume NAME`.";
    MONITOR_RESUMED = 3021, Info, "monitor", "Monitor resumed",
        cause: "An operator resumed the monitor.",
        action: "None.";
    CLUSTER_SUSPENDED = 4001, Warning, "cluster", "Cluster suspended",
        cause: "An operator suspended the cluster: monitors stop polling (so no recovery runs) and a group whose server is lost is not failed over (BTN-3014); groups keep running and operator commands still work.",
        action: "Resume it with `baton cluster resume` when maintenance is over.";
    CLUSTER_RESUMED = 4002, Info, "cluster", "Cluster resumed",
        cause: "An operator resumed the cluster.",
        action: "None.";
    CLUSTER_STOP = 4003, Warning, "cluster", "Cluster stop requested",
        cause: "An operator asked every agent to stop its groups and exit.",
        action: "None.";
    TIMEOUT_SCALED = 4010, Warning, "cluster", "Timeouts temporarily changed",
        cause: "An operator set a temporary heartbeat timeout and monitor timeout factor (for planned load such as backups); they revert by themselves.",
        action: "None.";
    TIMEOUT_REVERTED = 4011, Info, "cluster", "Timeouts back to configured values",
        cause: "The temporary timeout change expired or was cleared.",
        action: "None.";
    API_AUTH_FAILED = 4020, Warning, "api", "API request rejected",
        cause: "An HTTP API request had no token or a wrong token.",
        action: "Use the cluster key file of this cluster, a role token (`baton token --role read|operator`) or the agent's Unix socket; look for unexpected clients.";
    API_CONNECTIONS_REFUSED = 4021, Warning, "api", "API connections refused",
        cause: "Connections to the HTTP API (or the witness) were closed at once, before any byte was read: the source address is not in the allow-list (`[api] allow`, the cluster's servers, loopback), or the total or per-source connection cap was reached. Raised at most once a minute with the counts; the connections already open and the agent's own work are not affected.",
        action: "If the source is legitimate, add its network to `[api] allow` or raise `[api] max_connections` / `max_connections_per_source`; otherwise look for a scan or flood from that source and block it upstream.";
    API_ACCEPT_FAILING = 4022, Error, "api", "API cannot accept connections",
        cause: "Accepting a connection on the HTTP API failed, usually because the process or the system ran out of file descriptors (EMFILE/ENFILE). The server backs off briefly and keeps serving; raised at most once a minute with the count.",
        action: "Check the open-file limit (`LimitNOFILE=` in the unit, BTN-4023 at start) and what holds descriptors (`ls /proc/PID/fd`).";
    FD_LIMIT_LOW = 4023, Warning, "agent", "Open-file limit too low: connection cap lowered",
        cause: "At start the agent raised its open-file limit to the hard limit, and that limit cannot hold the configured API connection caps plus the descriptors reserved for resource actions, monitors, state writes and sockets (64 plus 8 per resource and monitor). The API's connection cap was lowered so that the reserve always remains.",
        action: "Raise the hard limit (`LimitNOFILE=65536` in the systemd unit, as shipped) or lower `[api] max_connections`.";
    API_SOCKET_FAILED = 4024, Warning, "api", "API Unix socket not available",
        cause: "The agent could not create its Unix socket for the local CLI (`[api] socket_dir`): the directory could not be created, another process holds the socket, or `socket_group` does not exist. The TCP API works as before; local operators without the key file cannot use `baton` on this server.",
        action: "Fix what the message names (directory permissions, the group name, a second agent with the same cluster and server name) and restart the agent, or set `[api] socket_dir = \"\"` to run without the socket.";
    API_TLS_RELOADED = 4025, Info, "api", "API TLS certificate reloaded",
        cause: "The files of the API's TLS certificate (`[api] tls_cert_file`, `tls_key_file`) changed and the agent now serves the new certificate to new connections (checked every 30 s and at SIGHUP).",
        action: "None. Clients verify it against `[api] tls_ca_file`; `baton status` from another server shows whether they do.";
    API_TLS_RELOAD_FAILED = 4026, Warning, "api", "API TLS certificate not reloaded",
        cause: "The files of the API's TLS certificate changed but cannot be used (unreadable, not PEM, the key does not belong to the certificate, the key readable by others). The agent keeps serving the previous certificate; it reports a broken file once until the files change again.",
        action: "Fix what the message names (for example rerun `baton keygen --tls DIR -c CONFIG` and copy both files, then `chmod 600` the key), then send SIGHUP or wait 30 s.";
    WEBUI_OPERATION = 4030, Info, "webui", "Operation from the Web UI",
        cause: "An operator ran an operation from the Web UI (group start, stop or move, cluster suspend or resume, monitor suspend or resume, temporary timeouts). It went through the same API as `baton` and the engine raised its own event too; this one names who did it (the name given at login, the role of the token used, the browser's address) and whether the agent accepted it.",
        action: "None. If the operation was not expected, look at who ran it and revoke the token used (a token file entry, or rotate the cluster key for the derived tokens).";
    WEBUI_LOGIN = 4031, Info, "webui", "Web UI login",
        cause: "Someone logged in to the Web UI with an API token of the `read` or `operator` role; the event names them and their address. Their session lasts `[api.webui] session_timeout`.",
        action: "None.";
    WEBUI_LOGIN_FAILED = 4032, Warning, "webui", "Web UI login refused",
        cause: "A Web UI login was refused: the token is not one the API accepts, or it is the cluster key's own token (which never goes into a browser). After 5 failed logins from one address within 60 s, every login from that address (even with a right token) is refused with HTTP 429 for 60 s; that block is reported once, with the field `blocked_s`.",
        action: "Log in with a role token (`baton token --role read|operator`) or an issued one; if the attempts are unexpected, look at the address (`from`), and block it in front of the agent if they go on. A blocked address can log in again when the block ends (`Retry-After`); restarting the agent also clears it.";
    EVENTS_DROPPED = 5001, Warning, "notifier", "Events dropped",
        cause: "A notification sink could not keep up or was unreachable and events were dropped for it. The alert log keeps every event.",
        action: "Check the sink's endpoint; counts are in `baton status`.";
    NOTIFY_TEST = 5002, Info, "notifier", "Notification test",
        cause: "An operator ran `baton notify test`: this event was sent through every configured sink (or the one named) to check the delivery path end to end.",
        action: "None. If it did not arrive, read what `baton notify test` reported for the sink.";
    METRICS_DROPPED = 5003, Warning, "notifier", "Metric samples dropped",
        cause: "The metrics sink (Amazon CloudWatch) could not keep up or was unreachable, and metric samples were dropped (the sample queue was full, or PutMetricData failed after its retries). Alerts are not affected.",
        action: "Check the endpoint, the credentials (cloudwatch:PutMetricData) and the network path to CloudWatch; counts are in `baton status`. Fewer opted-in monitors or a longer `[metrics.cloudwatch] interval` lower the load.";
    SINK_NOT_STARTED = 5004, Error, "notifier", "Notification sink not started",
        cause: "A configured sink could not be set up when the agent started (its secret file is unreadable, or the AWS client could not be configured). The agent runs without it; the alert log keeps every event.",
        action: "Fix what the message names, then restart the agent; `baton notify test SINK` checks the sink without a restart.";
    SINK_REJECTED = 5005, Error, "notifier", "Notification sink rejects deliveries",
        cause: "A sink's endpoint refused a delivery with a permanent error (authorization, unknown topic, rejected recipient, HTTP 4xx), so retrying cannot help and the events were dropped for it.",
        action: "Fix the sink's configuration or permissions (the message has the endpoint's answer), then check it with `baton notify test SINK`.";
    AWS_SOURCE_DEST_CHECK = 6001, Warning, "aws", "Source/destination check is on",
        cause: "The ENI an `aws-vip` resource routes the VIP to has its source/destination check enabled: the instance drops packets addressed to the VIP although the route points at it.",
        action: "Disable Source/Dest. Check of the ENI of every server (EC2 console: Networking > Change source/destination check; or `aws ec2 modify-network-interface-attribute --no-source-dest-check`).";
    AWS_ROUTE_CHANGED = 6002, Warning, "aws", "VIP route changed by someone else",
        cause: "A route for the VIP in a route table no longer points at the active server's ENI (the event names the table and the target found), or the route is gone. Another cluster using the same VIP, or a manual change.",
        action: "None if recovery is configured: the monitor's recovery restarts the `aws-vip` resource, which points the route back. Check that no other cluster uses the same VIP.";
    AWS_EIP_CHANGED = 6003, Warning, "aws", "Elastic IP association changed by someone else",
        cause: "The Elastic IP is no longer associated with the active server's ENI (the event names what it is associated with, if anything).",
        action: "None if recovery is configured: the `aws-eip` resource is restarted and associates the address again. Check that no other cluster uses the same allocation ID.";
    AWS_DNS_RECORD_CHANGED = 6004, Warning, "aws", "DNS record missing or changed by someone else",
        cause: "The Route 53 A record of an `aws-dns` resource does not exist or holds another address than the active server's (the event says what was found).",
        action: "None if recovery is configured: the `aws-dns` resource is restarted and writes the record again. Check that no other cluster uses the same record name; on a fresh activation, give the monitor a `wait_to_start` longer than Route 53's propagation.";
    AWS_API_UNAVAILABLE = 6005, Warning, "aws", "AWS API did not answer",
        cause: "An AWS API call failed after its retries with throttling, a 5xx error, a timeout or a network error: the regional endpoint is down or unreachable (route table, NAT gateway, proxy, VPC endpoint), or the server is overloaded.",
        action: "Check the path to the regional endpoint (NAT gateway, proxy, VPC endpoint, security groups) and the AWS Health Dashboard. Monitors apply their `on_api_error` policy (default warn: no recovery).";
    AWS_VIP_IN_VPC_CIDR = 6006, Error, "aws", "The VIP address belongs to a VPC subnet",
        cause: "The `ip` of an `aws-vip` resource lies inside a CIDR block of its VPC; AWS routes such addresses to the subnet, never through a route table entry.",
        action: "Choose a VIP outside every CIDR block of the VPC (for example 10.1.0.20 for a VPC 10.0.0.0/16) and add a /32 route for it to the route tables.";
    AWS_ID_NOT_FOUND = 6007, Error, "aws", "AWS resource ID does not exist",
        cause: "AWS does not know an ID from the configuration: VPC, ENI, route table, Elastic IP allocation or hosted zone (the event quotes AWS's message, e.g. `The networkInterface ID 'eni-...' does not exist`), or it lives in another region or account.",
        action: "Correct the ID in the configuration (per server where it differs) and check `[aws] region`; `baton cloud check` verifies every ID.";
    AWS_PERMISSION_DENIED = 6008, Error, "aws", "Not authorized to perform the AWS operation",
        cause: "AWS refused an operation for lack of permission (`UnauthorizedOperation`, `AccessDenied`): the instance role or user lacks the action, or the policy restricts it to other resources (e.g. only some route tables).",
        action: "Attach the policy printed by `baton cloud iam-policy` to the instance role; it covers every route table, allocation and hosted zone of the configuration.";
    AWS_SETUP_ERROR = 6009, Error, "aws", "AWS credentials or region not usable",
        cause: "No usable credentials or region: no instance role and no keys in the environment or profile, expired or invalid keys, a wrong clock, or no region in `[aws] region`, the environment or the instance metadata.",
        action: "Attach an instance role (check http://169.254.169.254/latest/meta-data/iam/security-credentials/), or configure a profile; set `[aws] region`; check the clock (NTP).";
    AWS_REQUEST_REJECTED = 6010, Error, "aws", "AWS rejected the request",
        cause: "AWS answered an API call with a client error not covered by a more specific event (the event quotes AWS's code and message).",
        action: "Read AWS's message; correct the configuration or the AWS setup it names.";
    AWS_NO_VIP_ROUTE = 6011, Error, "aws", "No route table holds the VIP route",
        cause: "No route table of the VPC has a route for the VIP /32, and no `route_tables` list tells Baton where to create one.",
        action: "Add a route `VIP/32 -> ENI of the active server` to every route table whose subnets' clients use the VIP, or list the tables in `route_tables` (Baton then creates missing routes).";
    AWS_STALE_EPOCH = 6012, Error, "aws", "A newer owner holds the AWS resource",
        cause: "A route table, Elastic IP or DNS record carries a Baton epoch newer than this activation's: another server took the group later. This server refused to overwrite it (fencing).",
        action: "None: the newer owner keeps the resource. If it recurs, check `baton status` on every server for a split cluster.";
    AWS_ZONE_IMPAIRED = 6013, Error, "aws", "Availability zone not available",
        cause: "DescribeAvailabilityZones reports the monitored zone as impaired, unavailable or constrained.",
        action: "None if recovery is configured: the monitor's recovery moves the groups to a server in another zone. Follow the AWS Health Dashboard.";
    AWS_INVALID_ZONE = 6014, Error, "aws", "Invalid availability zone",
        cause: "The zone an `aws-az` monitor watches does not exist in the region (`Invalid availability zone: [...]`).",
        action: "Correct `zone` (per server) and `[aws] region`.";
    AWS_DNS_CHANGE_TIMEOUT = 6015, Error, "aws", "Route 53 change not in sync in time",
        cause: "A Route 53 change did not reach INSYNC within `insync_timeout` or the activation's timeout: Route 53 is slow or unreachable.",
        action: "The record may still become visible; the activation is retried by the recovery policy. Raise `insync_timeout` or the activation timeout if this recurs; check the path to Route 53.";
    AWS_DNS_UPDATED = 6016, Info, "aws", "Route 53 record updated",
        cause: "An `aws-dns` resource wrote its record (or deleted it on deactivation); the event gives the time until the change was INSYNC.",
        action: "None.";
    AWS_DNS_RESOLVE_FAILED = 6017, Warning, "aws", "DNS name does not resolve as expected",
        cause: "An `aws-dns` monitor with `resolve = true` could not resolve the name through the system resolver, or it resolved to another address (resolver settings, hosts file, negative cache, VPC not associated with the private hosted zone).",
        action: "Check the resolver settings and /etc/hosts, that the VPC is associated with the private hosted zone and has enableDnsSupport, and give the monitor a `wait_to_start` longer than Route 53's propagation.";
    AWS_DNS_CONFLICT = 6018, Error, "aws", "Route 53 change rejected: record changed concurrently",
        cause: "Route 53 rejected the DELETE-old + CREATE-new batch because the record no longer held the value read just before (another writer changed it in between). Nothing was overwritten.",
        action: "None: the activation is retried by its policy and reads the record again. If it recurs, look for another cluster writing the same record.";
    AWS_IMDS_DISCOVERED = 6019, Info, "aws", "Discovered from instance metadata",
        cause: "An ENI ID, zone or address omitted from the configuration was read from the instance metadata service (IMDSv2).",
        action: "None.";
    AWS_IMDS_FAILED = 6020, Error, "aws", "Instance metadata unavailable",
        cause: "A value omitted from the configuration (ENI ID, zone, address) could not be read from the instance metadata service: not on EC2, IMDS disabled or hop limit too low, or `AWS_EC2_METADATA_DISABLED` set.",
        action: "Set the value in the configuration for each server, or enable IMDSv2 on the instance.";
    AWS_VIP_ROUTED = 6021, Info, "aws", "VIP routed to this server",
        cause: "An `aws-vip` resource pointed every VIP route at this server's ENI; the event gives the tables changed and the time it took.",
        action: "None.";
    AWS_EIP_ASSOCIATED = 6022, Info, "aws", "Elastic IP associated with this server",
        cause: "An `aws-eip` resource associated the Elastic IP with this server's ENI; the event gives the time it took.",
        action: "None.";
    MIRROR_CONNECTED = 7001, Info, "mirror", "Mirror link up",
        cause: "The mirror processes of a `mirror-disk` resource on the group's two servers authenticated each other and compared their data generations; the message says which side copies to which (if any).",
        action: "None. `baton mirror status` shows the resync, if one runs.";
    MIRROR_DISCONNECTED = 7002, Warning, "mirror", "Mirror link down",
        cause: "The mirror link of a `mirror-disk` resource broke: the peer's server, its mirror process or the network between them is gone. On the primary, writes go on (sync mode: after `ack_timeout`, while this server holds the group with quorum; `on_peer_loss = \"suspend\"` makes them wait) and are marked in the dirty bitmap for a differential resync.",
        action: "Find out why the peer is away (`baton status`, the peer's alert log). When it comes back, only the regions written meanwhile are copied.";
    MIRROR_RESYNC_STARTED = 7003, Info, "mirror", "Mirror resync started",
        cause: "Regions differ between the two sides (written while the link was down, queued writes that did not fit, a new volume): they are copied from the source side in the background, at most `bandwidth_limit` per second. The target side's copy is not usable until the resync is done.",
        action: "None; follow it with `baton mirror status --follow`.";
    MIRROR_RESYNC_DONE = 7004, Info, "mirror", "Mirror resync done",
        cause: "Every region that differed was copied; both sides hold the same data generation again. The message gives the bytes copied and the rate.",
        action: "None.";
    MIRROR_DEGRADED = 7005, Warning, "mirror", "Mirror writes go on without the peer",
        cause: "The primary acknowledged a write the peer does not have (the peer is away, replication is paused, or, in async mode, the queue is full) and started a new data generation, so the peer knows it is behind when it returns and refuses to take over with old data.",
        action: "Bring the peer back (or resume replication); a differential resync follows.";
    MIRROR_SPLIT_BRAIN = 7006, Critical, "mirror", "Mirror data split brain",
        cause: "Both sides of a mirror wrote data the other does not have since they last agreed (typically a forced promotion while the other side was cut off but still writing). Nothing is copied automatically: each side keeps its data.",
        action: "Choose the side to keep; on the OTHER server run `baton mirror discard-local RESOURCE --yes` (its changes since the split are overwritten by a resync from the kept side). Back its data up first if it matters.";
    MIRROR_STALE_REFUSED = 7007, Error, "mirror", "Mirror refused to become primary: data stale",
        cause: "The group was to be activated on a server whose copy of the mirror is known to be behind the peer's (Outdated: the peer wrote without it; Inconsistent: a resync into it did not finish) or in split brain, or whose exclusion the cluster recorded in the mirror's data mark (the peer wrote alone while this server was cut off; the message names the mark and which servers hold it). Activating it would serve old data, so the resource's activation failed.",
        action: "Bring the server with the newer data back. If it is lost for good, accept the older data with `baton mirror force-primary RESOURCE --yes` on this server and start the group again (BTN-7008 records it).";
    MIRROR_FORCED_PRIMARY = 7008, Warning, "mirror", "Mirror forced primary with possibly stale data",
        cause: "An operator allowed a stale or split-brain side to become primary (`baton mirror force-primary`). It starts a new data generation: if the other side comes back with its own newer writes, that is a split brain (BTN-7006), never a silent overwrite.",
        action: "Check the application's data.";
    MIRROR_PEER_REFUSED = 7009, Warning, "mirror", "Mirror connection refused",
        cause: "Something connected to the mirror port that did not prove the cluster key (a peer with another key, a scanner, random bytes). Nothing it sent was written; raised at most once a minute with the counts.",
        action: "If it is the peer, give both servers the same key file (during a rotation, list the new key in `accept_key_files`); otherwise block the source.";
    MIRROR_PEER_MISMATCH = 7010, Error, "mirror", "Mirror peer holds another volume",
        cause: "The peer authenticated but its volume differs in size, region size or identity; nothing is replicated.",
        action: "Give both servers the same `size` and `region_size`; a peer with another volume's data must be emptied (new backing store and metadata) to join.";
    MIRROR_FENCED = 7011, Critical, "mirror", "Mirror fenced: another server took over",
        cause: "The peer became primary at a higher epoch: this server no longer holds the group, and its mirror refuses every write from now on (the peer refuses frames of the old epoch too), so no write is acknowledged here after the takeover.",
        action: "None: the agent deactivates the group here. The application on this server sees I/O errors until then.";
    MIRROR_PAUSED = 7012, Warning, "mirror", "Mirror replication paused",
        cause: "An operator paused replication (`baton mirror pause`, for a backup of the secondary, maintenance of the link). Writes go on locally and are marked out of sync; the peer knows it is behind and cannot take over.",
        action: "`baton mirror resume` when done: a differential resync follows.";
    MIRROR_RESUMED = 7013, Info, "mirror", "Mirror replication resumed",
        cause: "An operator resumed replication.",
        action: "None.";
    MIRROR_QUEUE_FULL = 7014, Warning, "mirror", "Mirror async queue full",
        cause: "In async mode, writes not yet acknowledged by the peer reached `queue_size`. Writes go on locally; the regions are marked out of sync and copied by a background resync, and the peer counts as behind until it completes.",
        action: "If it happens often, raise `queue_size`, the link's bandwidth or `bandwidth_limit`.";
    MIRROR_DISK_ERROR = 7015, Error, "mirror", "Mirror backing store error",
        cause: "Reading or writing the backing store or the metadata failed (a full or failing disk). The operation that failed was not acknowledged.",
        action: "Check the device and the filesystem that hold it (`dmesg`); the `mirror-disk` monitor fails over the group when configured to.";
    MIRROR_WRITES_SUSPENDED = 7016, Warning, "mirror", "Mirror writes waiting",
        cause: "Writes on the primary wait: the peer is away and either `on_peer_loss = \"suspend\"` or the agent has not confirmed that this server still holds the group with quorum (an isolated primary must not acknowledge writes the new primary will not have).",
        action: "Restore the link or let the group move; writes continue (or fail after 2 minutes).";
    MIRROR_STARTED = 7017, Info, "mirror", "Mirror process started",
        cause: "The agent started the mirror process of a `mirror-disk` resource (a process of its own, so the volume stays up when the agent restarts), or adopted one that was running.",
        action: "None.";
    MIRROR_SPLIT_BRAIN_RESOLVED = 7018, Warning, "mirror", "Mirror split brain resolved",
        cause: "An operator chose to discard this side's changes (`baton mirror discard-local`); it becomes the target of a resync from the peer.",
        action: "None.";
    MIRROR_ASYNC_TAKEOVER = 7019, Warning, "mirror", "Mirror async takeover: the newest writes of the old primary may be missing",
        cause: "An `async` mirror became primary here while the old primary had not handed over cleanly (it died, or the link to it was down). Writes the old primary acknowledged but had not sent yet are not here: the message gives what it last reported as not yet sent (its queue and out-of-sync regions) and when; writes it made after that report are missing too. `baton mirror status` shows the same under `takeover`.",
        action: "None if the application tolerates the loss of its last writes (the reason for `async`). When the old primary returns, its unsent writes are replaced by this side's data and counted (BTN-7020); use `sync` where no acknowledged write may be lost.";
    MIRROR_ASYNC_DISCARDED = 7020, Warning, "mirror", "Mirror async writes discarded after a takeover",
        cause: "This server returned after the peer took over in `async` mode, with regions it had written that the peer never confirmed. The resync from the peer replaced them; each copied region was compared with what was here first, so the figure is exact: the regions whose content differed held the writes the async failover lost (whole regions, `region_size` each). Raised when the resync is done, only when something differed.",
        action: "None for the mirror. If the application must know which of its last writes were lost, compare with its own log before the resync finishes.";
    AZURE_API_UNAVAILABLE = 8001, Warning, "azure", "Azure API did not answer",
        cause: "An Azure Resource Manager, Entra ID or instance metadata call failed after its retries with throttling (429), a 5xx error, a timeout or a network error, within `[azure] deadline` and the action's timeout: the endpoint is down or unreachable (route, NAT, proxy, private endpoint), or the subscription is throttled.",
        action: "Check the path to the endpoint (`[azure] endpoint`, proxy, NSG rules) and Azure's service health. Monitors apply their `on_api_error` policy (default warn: no recovery).";
    AZURE_NOT_FOUND = 8002, Error, "azure", "Azure resource does not exist",
        cause: "Azure does not know a name from the configuration: subscription, resource group, DNS zone (public or private), or the answer was another 404 (the event quotes Azure's code and message).",
        action: "Correct `zone`, `resource_group`, `subscription_id` or `private` (per resource, or the defaults in `[azure]`); a private zone needs `private = true`.";
    AZURE_PERMISSION_DENIED = 8003, Error, "azure", "Not authorized to perform the Azure operation",
        cause: "Azure refused an operation for lack of permission (`AuthorizationFailed`): the identity has no role assignment that allows it on the zone or resource group.",
        action: "Assign the identity a role with the record-set read/write/delete actions of the zone (DNS Zone Contributor, Private DNS Zone Contributor, or a custom role).";
    AZURE_CREDENTIALS = 8004, Error, "azure", "Azure identity not usable",
        cause: "No token for Resource Manager could be had, or Azure refused the token: no managed identity on the VM (or not the `client_id` named), a wrong, expired or unreadable service principal secret or certificate, no Azure CLI login, or a wrong tenant or cloud.",
        action: "Check `[azure] identity`, `tenant_id`, `client_id` and the secret or certificate file; on a VM, that the identity is assigned; for `cli`, run `az login`.";
    AZURE_REQUEST_REJECTED = 8005, Error, "azure", "Azure rejected the request",
        cause: "Azure answered a call with a client error not covered by a more specific event (the event quotes Azure's code and message).",
        action: "Read Azure's message; correct the configuration or the Azure set-up it names.";
    AZURE_STALE_EPOCH = 8006, Error, "azure", "A newer owner holds the Azure resource",
        cause: "A DNS record set carries a Baton epoch (its `baton_epoch` metadata) newer than this activation's: another server took the group later. This server refused to overwrite it (fencing).",
        action: "None: the newer owner keeps the resource. If it recurs, check `baton status` on every server for a split cluster.";
    AZURE_DNS_RECORD_CHANGED = 8007, Warning, "azure", "Azure DNS record missing or changed by someone else",
        cause: "The record set of an `azure-dns` resource does not exist, or holds another address or target than the active server's (the event says what was found).",
        action: "None if recovery is configured: the `azure-dns` resource is restarted and writes the record again. Check that no other cluster uses the same record.";
    AZURE_DNS_UPDATED = 8008, Info, "azure", "Azure DNS record updated",
        cause: "An `azure-dns` resource wrote its record set (or deleted it on deactivation); the event gives the time it took.",
        action: "None.";
    AZURE_DNS_CONFLICT = 8009, Warning, "azure", "Azure DNS record changed while it was written",
        cause: "A conditional write (If-Match on the ETag read just before) was refused with 412: another writer changed the record set in between. Nothing was overwritten; the resource read it again and decided again.",
        action: "None if it is rare. If it recurs, look for another cluster or tool writing the same record.";
    AZURE_VIP_ROUTED = 8010, Info, "azure", "Azure VIP routed to this server",
        cause: "An `azure-vip` resource pointed the route for its VIP in every listed route table at this server's private address (with the group's epoch in the table's tag) and added the address locally; the event gives how many tables changed and the time it took, the long-running operations included.",
        action: "None.";
    AZURE_VIP_ROUTE_CHANGED = 8011, Warning, "azure", "Azure VIP route missing or changed by someone else",
        cause: "The `azure-vip` monitor found a listed route table without the VIP's route, or with a route that sends the VIP elsewhere (another next hop, another type, another prefix); the event says what each table holds and who claimed it last.",
        action: "None if recovery is configured: the `azure-vip` resource is restarted and writes the route again. Look for another cluster or a deployment (Terraform, a pipeline) that owns the same route table and rewrites it.";
    AZURE_ROUTE_TABLE_CONFLICT = 8012, Warning, "azure", "Azure route table changed while it was written",
        cause: "A conditional write of a route table (If-Match on the ETag read just before) was refused with 412: someone changed the table (a route, a tag, another server's claim) between the read and the write. Nothing was overwritten; the resource read it again and decided again.",
        action: "None if it is rare. If it recurs, look for a tool that rewrites the table continuously.";
    AZURE_LB_PROBE_ANSWERING = 8013, Info, "azure", "Azure load balancer probe port opened or closed",
        cause: "An `azure-lb-probe` resource started answering the load balancer's health probe on its port (activation), or stopped (deactivation: the socket and every probe connection are closed first, and the load balancer takes this server out after its unhealthy threshold).",
        action: "None.";
    AZURE_LB_PROBE_PORT_FAILED = 8014, Error, "azure", "Azure load balancer probe port cannot be opened",
        cause: "An `azure-lb-probe` resource could not listen on its port: another process holds it, or `bind` is not an address of this server. The load balancer sees this server as down, so the activation fails.",
        action: "Free the port (`ss -ltnp sport = :PORT`) or choose another one in both the load balancer's probe and the resource; check `bind`.";
    AZURE_LB_MISCONFIGURED = 8015, Warning, "azure", "Azure load balancer does not probe the configured port",
        cause: "The `azure-lb-probe` monitor read the load balancer and found no probe on the configured port (or not the named one, or another protocol or path), or no load-balancing rule using it: the load balancer would not follow the active server. The message lists what it found.",
        action: "Correct the load balancer (probe port, protocol, path, the rule's probe) or the monitor's `port`, `probe` and `rule` keys. `baton cloud check` reports the same.";
    AZURE_SCHEDULED_EVENT = 8016, Warning, "azure", "Azure maintenance scheduled on the active server",
        cause: "The `azure-events` monitor found a Scheduled Event (Freeze, Reboot, Redeploy, Preempt or Terminate, as configured) for this VM while the monitor's group is held here. The poll fails so that the monitor's recovery moves the group away before the event's `NotBefore` time.",
        action: "None if the monitor's recovery fails the group over (`failover_retries` ≥ 1; `restart_retries = 0` and `retries = 0` so that no time is lost). Otherwise move the group now: `baton group move GROUP`.";
    AZURE_SCHEDULED_EVENT_APPROVED = 8017, Info, "azure", "Azure scheduled event approved",
        cause: "The `azure-events` monitor approved a Scheduled Event for this VM (`StartRequests`) because the monitor's group is not held here: the platform may start the maintenance at once instead of waiting for its `NotBefore` time.",
        action: "None. Set `acknowledge = false` to let every event wait for its time.";
    AZURE_SCHEDULED_EVENT_NOTED = 8018, Info, "azure", "Azure scheduled event for a server that does not hold the group",
        cause: "The `azure-events` monitor found a Scheduled Event for this VM while the monitor's group is not held here, and does not approve events (`acknowledge = false`), or the event has started already. Nothing needs to move; the server will be away during the event.",
        action: "None. Expect this server to be down for the event's duration; the cluster keeps its quorum only if the others are up.";
    GCP_API_UNAVAILABLE = 8101, Warning, "gcp", "Google Cloud API did not answer",
        cause: "A Cloud DNS, Compute Engine, OAuth token or metadata server call failed after its retries with throttling (429, or 403 `rateLimitExceeded`), a 5xx error, a timeout or a network error, within `[gcp] deadline` and the action's timeout: the endpoint is down or unreachable (no route to Google APIs, Private Google Access off, firewall, proxy), or the project's quota is exhausted.",
        action: "Check the path to the endpoint (`[gcp]` endpoints, Private Google Access on the subnetwork, egress firewall rules) and Google Cloud's service health. Monitors apply their `on_api_error` policy (default warn: no recovery).";
    GCP_NOT_FOUND = 8102, Error, "gcp", "Google Cloud resource does not exist",
        cause: "Google Cloud does not know a name from the configuration: the project, the managed zone, or another resource (the event quotes Google's reason and message).",
        action: "Correct `project` and `zone` (the managed zone's name, not its DNS name) on the resource, or `[gcp] project`.";
    GCP_PERMISSION_DENIED = 8103, Error, "gcp", "Not authorized to perform the Google Cloud operation",
        cause: "Google Cloud refused an operation for lack of permission (403 `forbidden`, or `insufficientPermissions` when the VM's access scopes do not include the API): the service account has no role that grants it on the project or zone.",
        action: "Grant the service account a role with the permissions the kind needs (for `gcp-dns`: `dns.changes.create`, `dns.changes.get`, `dns.resourceRecordSets.list`; see the least-privilege role in the Google Cloud page), and give the VM the `cloud-platform` access scope.";
    GCP_CREDENTIALS = 8104, Error, "gcp", "Google Cloud credentials not usable",
        cause: "No access token could be had, or Google refused it: no service account attached to the VM, an unreadable or malformed service-account key file, a deleted or disabled key (`invalid_grant`), an expired or revoked user login for application default credentials, or no application default credentials at all.",
        action: "Check `[gcp] credentials` and `key_file`; on a VM, that a service account is attached; for `application-default`, run `gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS.";
    GCP_REQUEST_REJECTED = 8105, Error, "gcp", "Google Cloud rejected the request",
        cause: "Google Cloud answered a call with a client error not covered by a more specific event (the event quotes Google's reason and message), for example a record name outside the managed zone.",
        action: "Read Google's message; correct the configuration or the Google Cloud set-up it names.";
    GCP_STALE_EPOCH = 8106, Error, "gcp", "A newer owner holds the Google Cloud resource",
        cause: "The epoch record (`_baton.<name>` TXT) beside a Cloud DNS record carries a Baton epoch newer than this activation's: another server took the group later. This server refused to overwrite it (fencing).",
        action: "None: the newer owner keeps the resource. If it recurs, check `baton status` on every server for a split cluster.";
    GCP_DNS_RECORD_CHANGED = 8107, Warning, "gcp", "Cloud DNS record missing or changed by someone else",
        cause: "The A record of a `gcp-dns` resource does not exist, holds another address than the active server's, or its epoch record does not name this server (the event says what was found).",
        action: "None if recovery is configured: the `gcp-dns` resource is restarted and writes the record again. Check that no other cluster or tool writes the same name.";
    GCP_DNS_UPDATED = 8108, Info, "gcp", "Cloud DNS record updated",
        cause: "A `gcp-dns` resource's change (the A record and its epoch record, or their deletion on deactivation) was applied and Cloud DNS reported it done; the event gives the time it took.",
        action: "None.";
    GCP_DNS_CONFLICT = 8109, Warning, "gcp", "Cloud DNS record changed while it was written",
        cause: "A Cloud DNS change was refused because the records it named as deletions were no longer exactly those in the zone (412 `conditionNotMet`, 404 for a deleted one, 409 `alreadyExists` for a created one): another writer changed them between the read and the change. Nothing was overwritten; the resource read them again and decided again.",
        action: "None if it is rare. If it recurs, look for another cluster or tool writing the same name.";
    GCP_VIP_CHANGED = 8110, Warning, "gcp", "Google Cloud VIP route missing or changed by someone else",
        cause: "The static route of a `gcp-vip` resource does not exist, sends the VIP to another instance, or its description does not carry this server's Baton epoch mark (the event says what was found).",
        action: "None if recovery is configured: the `gcp-vip` resource is restarted and puts the route back. Check that no other cluster or tool manages a route of the same name or destination.";
    GCP_VIP_MOVED = 8111, Info, "gcp", "Google Cloud VIP route moved",
        cause: "A `gcp-vip` resource replaced its static route so that the VIP's next hop is this server's instance (or deleted it on deactivation); the Compute operations were done. The event gives the time it took.",
        action: "None.";
    GCP_VIP_CONFLICT = 8112, Warning, "gcp", "Google Cloud VIP route changed while it was moved",
        cause: "While a `gcp-vip` resource replaced its route, the route was deleted or created by someone else (the delete found no route, or the insert found one: `RESOURCE_NOT_FOUND`, `RESOURCE_ALREADY_EXISTS`). The resource read it again and decided again.",
        action: "None if it is rare. If it recurs, look for another cluster or tool managing the same route.";
    GCP_LB_PROBE_MISMATCH = 8113, Warning, "gcp", "Internal load balancer does not probe Baton's port",
        cause: "The backend service of a `gcp-lb-probe` monitor uses no health check on the port the `gcp-lb-probe` resource answers (or not the health check named, or not with the protocol configured): the load balancer would not follow the active server (the event says what the backend service uses).",
        action: "Point the backend service's health check at the resource's `port` (`gcloud compute health-checks update tcp NAME --port PORT`), or correct `port`, `health_check` or `backend_service`.";
    GCP_LB_PROBE_FAILED = 8114, Error, "gcp", "Health-check port could not be opened",
        cause: "A `gcp-lb-probe` resource could not listen on its port: another process holds it, the address is not on this server, or a port below 1024 without the privilege to bind it.",
        action: "Free the port or choose another (and point the load balancer's health check at it); check `address`.";
    GCP_MAINTENANCE = 8115, Warning, "gcp", "Google Cloud maintenance or preemption announced",
        cause: "The metadata server of this server's VM announces a host maintenance event (`instance/maintenance-event` is MIGRATE_ON_HOST_MAINTENANCE or TERMINATE_ON_HOST_MAINTENANCE, about 60 s ahead) or a preemption of the Spot VM (`instance/preempted` is TRUE, about 30 s before it stops). The `gcp-maintenance` monitor reports it so the group moves first.",
        action: "None if recovery is configured (the group moves to another server before the event). Set `migrate = \"ignore\"` if live migrations should not move the group.";
}

/// Look up a catalogue entry by numeric id.
pub fn lookup(id: u16) -> Option<&'static EventDef> {
    CATALOGUE.iter().find(|d| d.id == id)
}

/// One raised event. The engine fills the subject fields; the agent stamps `seq`, `time`
/// and `server` when it records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// `BTN-nnnn`
    pub id: String,
    pub severity: Severity,
    pub module: String,
    pub message: String,
    #[serde(default)]
    pub cluster: String,
    #[serde(default)]
    pub server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Structured extras (durations, counts, error codes).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, serde_json::Value>,
    /// Position in this server's alert log (assigned by the agent).
    #[serde(default)]
    pub seq: u64,
    /// Wall-clock time in ms since the Unix epoch (assigned by the agent).
    #[serde(default)]
    pub time_ms: u64,
}

impl Event {
    pub fn new(def: &EventDef, message: impl Into<String>) -> Event {
        Event {
            id: def.code(),
            severity: def.severity,
            module: def.module.to_string(),
            message: message.into(),
            cluster: String::new(),
            server: String::new(),
            group: None,
            resource: None,
            monitor: None,
            peer: None,
            epoch: None,
            fields: BTreeMap::new(),
            seq: 0,
            time_ms: 0,
        }
    }
    pub fn group(mut self, g: &str) -> Self {
        self.group = Some(g.to_string());
        self
    }
    pub fn resource(mut self, r: &str) -> Self {
        self.resource = Some(r.to_string());
        self
    }
    pub fn monitor(mut self, m: &str) -> Self {
        self.monitor = Some(m.to_string());
        self
    }
    pub fn peer(mut self, p: &str) -> Self {
        self.peer = Some(p.to_string());
        self
    }
    pub fn epoch(mut self, e: u64) -> Self {
        self.epoch = Some(e);
        self
    }
    pub fn field(mut self, k: &str, v: impl Into<serde_json::Value>) -> Self {
        self.fields.insert(k.to_string(), v.into());
        self
    }
    /// The one-line form used in logs: `BTN-2102 group failover1 activated on node-2`.
    pub fn line(&self) -> String {
        format!("{} {}", self.id, self.message)
    }
}

/// The catalogue as Markdown, for `docs/src/events.md`.
pub fn catalogue_markdown() -> String {
    let mut s = String::from(
        "# Events\n\nEvery event Baton raises has a stable id, a severity and the module that raised it. \
Events go to the local alert log (`baton alerts`), to the notification sinks and to the agent's log.\n\
This page is generated by `baton events --markdown`; do not edit it by hand.\n\n\
| id | severity | module | title |\n|---|---|---|---|\n",
    );
    for d in CATALOGUE {
        s.push_str(&format!(
            "| [{}](#{}) | {} | {} | {} |\n",
            d.code(),
            d.code().to_lowercase(),
            d.severity,
            d.module,
            d.title
        ));
    }
    for d in CATALOGUE {
        s.push_str(&format!(
            "\n## {}\n\n**{}** · severity `{}` · module `{}`\n\n**Cause.** {}\n\n**Action.** {}\n",
            d.code(),
            d.title,
            d.severity,
            d.module,
            d.cause,
            d.action
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_sorted() {
        let mut last = 0;
        for d in CATALOGUE {
            assert!(d.id > last, "{} out of order or duplicated", d.code());
            last = d.id;
        }
    }

    #[test]
    fn pinned_ids_do_not_move() {
        // Operators and alert rules match on these; they may never change.
        assert_eq!(GROUP_ACTIVATED.code(), "BTN-2102");
        assert_eq!(SERVER_DOWN.code(), "BTN-1102");
        assert_eq!(MONITOR_ERROR.code(), "BTN-3001");
        assert_eq!(CONFIG_DIGEST_MISMATCH.code(), "BTN-1011");
    }
}
