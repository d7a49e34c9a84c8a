//! How large a heartbeat datagram of a configuration can get.
//!
//! A heartbeat carries a report of every group, every operator intent and the peers its
//! sender hears, so its size grows with the configuration. The agent's wire layer
//! (`baton_agent::wire`) compresses the JSON body when that makes it smaller, but the
//! worst case of compression is not computable, so the bound here is on the
//! *uncompressed* datagram: a configuration whose worst-case heartbeat does not fit in
//! [`MAX_DATAGRAM`] uncompressed is refused by validation (`config check`), and one that
//! fits can always be sent (the wire layer falls back to the uncompressed form when
//! compression does not help).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::config::Config;
use crate::engine::{
    FlagIntent, GroupIntent, GroupReport, GroupState, Intents, PeerMessage, TimeoutIntent,
};

/// Largest heartbeat datagram encoded or accepted, in bytes (the wire layer uses this).
pub const MAX_DATAGRAM: usize = 60_000;
/// Bytes of a datagram before its body, at most: magic (4), version (1), key id (4) and
/// flags (1) of the keyed version 3 (key rotation), MAC (32).
pub const HEADER_LEN: usize = 4 + 1 + 4 + 1 + 32;
/// What encryption (`[heartbeat] encrypt`) adds to a body: the nonce (12) and the
/// Poly1305 tag (16).
pub const ENCRYPTION_OVERHEAD: usize = 12 + 16;

/// The longest serialised form among `names` (JSON string escaping included).
fn longest<'a>(names: impl Iterator<Item = &'a String>) -> String {
    names
        .max_by_key(|n| serde_json::to_string(n).map_or(usize::MAX, |s| s.len()))
        .cloned()
        .unwrap_or_default()
}

/// The largest [`PeerMessage`] any server of `cfg` can send: every group reported in its
/// longest state with maximal epochs and times, the longest server name in every field
/// that names a server, every intent set with maximal versions, every server heard.
pub fn worst_case_message(cfg: &Config) -> PeerMessage {
    let server = longest(cfg.servers.iter().map(|s| &s.name));
    let origin = format!("{server}/{:016x}", u64::MAX);
    let max = u64::MAX;
    let groups = cfg
        .groups
        .iter()
        .map(|g| GroupReport {
            name: g.name.as_str().into(),
            state: GroupState::Deactivating,
            epoch: max,
            max_epoch: max,
            excluded: false,
            seen_holder: Some((server.as_str().into(), max)),
            state_ms: max,
            ack: Some((server.as_str().into(), max)),
        })
        .collect();
    let flag = FlagIntent {
        version: max,
        origin: origin.clone(),
        on: false,
    };
    let intents = Intents {
        groups: cfg
            .groups
            .iter()
            .map(|g| {
                (
                    g.name.clone(),
                    GroupIntent {
                        version: max,
                        origin: origin.clone(),
                        run: false,
                        prefer: Some(server.clone()),
                        prefer_epoch: max,
                        clear_exclusions: false,
                    },
                )
            })
            .collect(),
        suspended: flag.clone(),
        stopping: flag.clone(),
        monitors: cfg
            .monitors
            .iter()
            .map(|m| (m.name.clone(), flag.clone()))
            .collect(),
        timeout: TimeoutIntent {
            version: max,
            origin: origin.clone(),
            heartbeat_timeout_ms: max,
            monitor_factor_pct: u32::MAX,
            duration_ms: max,
        },
    };
    PeerMessage {
        digest: cfg.digest.clone(),
        incarnation: max,
        ready: false,
        quorum: false,
        refused: false,
        leaving: false,
        groups,
        intents,
        hears: cfg.servers.iter().map(|s| s.name.clone()).collect(),
        heard: Some(cfg.servers.iter().map(|s| (s.name.clone(), max)).collect()),
        heard_ago: Some(
            cfg.servers
                .iter()
                .map(|s| (s.name.clone(), crate::bounds::MAX_DURATION_MS))
                .collect(),
        ),
        vote: false,
        marks: crate::marks::keys(cfg)
            .into_iter()
            .map(|k| (k, crate::bounds::MAX_EPOCH))
            .collect(),
    }
}

/// Upper bound of the size in bytes of an uncompressed heartbeat datagram of `cfg`: the
/// header, the envelope (cluster, longest sender name, path, sequence number) and the
/// body ([`worst_case_message`] with a round-trip stamp echoing every server, the version
/// of its group reports and those it holds of every server).
pub fn worst_case_datagram_len(cfg: &Config) -> usize {
    let server = longest(cfg.servers.iter().map(|s| &s.name));
    let Ok(mut body) = serde_json::to_value(worst_case_message(cfg)) else {
        return usize::MAX;
    };
    let echo: BTreeMap<String, (u64, u64)> = cfg
        .servers
        .iter()
        .map(|s| (s.name.clone(), (u64::MAX, u64::MAX)))
        .collect();
    if let Value::Object(m) = &mut body {
        m.insert("rtt".into(), json!({ "t": u64::MAX, "echo": echo }));
        // The version of the group reports, and those held of every server (a brief
        // body, without the reports, is smaller).
        m.insert("gv".into(), json!({ "v": u64::MAX, "at": u64::MAX }));
        m.insert("gvs".into(), json!(echo));
    }
    let env = json!({
        "cluster": cfg.cluster_name,
        "from": server,
        "path": u8::MAX,
        "seq": u64::MAX,
        "body": body,
    });
    let overhead = if cfg.heartbeat.encrypt {
        HEADER_LEN + ENCRYPTION_OVERHEAD
    } else {
        HEADER_LEN
    };
    serde_json::to_vec(&env).map_or(usize::MAX, |v| overhead + v.len())
}

/// `Err(message)` when the worst-case heartbeat of `cfg` does not fit in one datagram.
pub fn check_size(cfg: &Config) -> Result<usize, String> {
    let len = worst_case_datagram_len(cfg);
    if len > MAX_DATAGRAM {
        return Err(format!(
            "the heartbeat of this configuration can reach {len} bytes ({} groups, {} monitors, {} servers), over the {MAX_DATAGRAM}-byte datagram limit: use fewer or shorter-named groups, monitors or servers",
            cfg.groups.len(),
            cfg.monitors.len(),
            cfg.servers.len()
        ));
    }
    Ok(len)
}
