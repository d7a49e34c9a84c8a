//! Validation across fields: names, references, dependency cycles, timing sanity. Each
//! section has its own validator; [`validate`] runs them in a fixed order, which is the
//! order of the diagnostics (tests compare them).

use std::collections::{BTreeMap, BTreeSet};

use super::diagnostics::{k, Diags, Seg};
use super::raw::RawFile;
use super::{api, aws, azure, gcp, notify, web, Config, Dur, Group, KindCatalog, Server};

mod agent;
mod cluster;
mod groups;
mod heartbeat;
mod monitors;
mod quorum;
pub(super) mod resources;
mod servers;

/// Check `raw` and build the [`Config`]. Problems go to `d`; the caller decides from its
/// errors whether the configuration is usable.
pub(super) fn validate(
    d: &mut Diags<'_>,
    raw: RawFile,
    file: &str,
    digest: String,
    kinds: &dyn KindCatalog,
) -> Option<Config> {
    cluster::validate_name(d, &raw.cluster);
    heartbeat::validate(d, &raw.heartbeat);
    agent::validate(d, &raw.agent);
    let (servers, server_names) = servers::validate(d, &raw.server, raw.heartbeat.port);
    groups::check_count(d, raw.group.len());
    quorum::validate(d, &raw.quorum, &raw.heartbeat, servers.len());
    let paths: BTreeMap<String, usize> = raw
        .server
        .iter()
        .map(|s| (s.name.clone(), s.interconnects.len()))
        .collect();
    let groups = groups::validate(d, &raw.group, &server_names, &paths, kinds);
    groups::check_fence_budgets(d, &raw.group, &raw.quorum, &raw.heartbeat);
    let defined = Defined {
        servers: &servers,
        server_names: &server_names,
        groups: &groups.groups,
        group_names: &groups.names,
        resources: &groups.resources,
    };
    let monitors = monitors::validate(d, &raw.monitor, &defined, kinds);
    notify::validate(d, &raw.notify, &raw.metrics, &monitors);
    aws::validate(d, &raw.aws);
    azure::validate(d, &raw.azure);
    gcp::validate(d, &raw.gcp);
    api::validate(d, &raw.api);
    web::validate(d, raw.metrics.prometheus.as_ref(), &raw.api);
    cluster::validate_accept_key_files(d, &raw.cluster);

    let config = Config {
        path: file.to_string(),
        digest,
        cluster_name: raw.cluster.name,
        key_file: raw.cluster.key_file,
        accept_key_files: raw.cluster.accept_key_files,
        heartbeat: raw.heartbeat,
        agent: raw.agent,
        servers,
        quorum: raw.quorum,
        groups: groups.groups,
        monitors,
        notify: raw.notify,
        metrics: raw.metrics,
        aws: raw.aws,
        azure: raw.azure,
        gcp: raw.gcp,
        api: raw.api,
    };
    // Every heartbeat must fit in one datagram (issue 9): bounded uncompressed.
    if let Err(msg) = crate::heartbeat::check_size(&config) {
        d.err(&[k("group")], msg);
    }
    Some(config)
}

/// What the monitors may refer to: the servers, groups and resources defined before them.
struct Defined<'a> {
    /// In file order.
    servers: &'a [Server],
    server_names: &'a BTreeSet<String>,
    /// In file order.
    groups: &'a [Group],
    group_names: &'a BTreeSet<String>,
    /// Resource name → the group it belongs to.
    resources: &'a BTreeMap<String, String>,
}

/// A cluster, server, group, resource or monitor name: 1 to 63 letters, digits, `-`, `_`
/// or `.`.
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

/// The message for a reference to an undefined `what`, listing those that are defined.
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
