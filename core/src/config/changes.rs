//! What differs between two configurations, key by key, and whether a running agent can
//! take each difference live (`baton config push`) or needs a rolling restart.
//!
//! The comparison is made on the parsed TOML (comments, layout and key order do not
//! count, like the digest). Arrays of tables whose entries all have a `name`
//! (`[[server]]`, `[[group]]`, `[[group.resource]]`, `[[monitor]]`) are compared entry by
//! entry by name, so a path reads `group[web].resource[app].start`; any other value is
//! compared whole.
//!
//! What can change live, and why the rest cannot:
//!
//! * `[[monitor]]` (added, removed, changed), `[notify.*]`, `[metrics.*]`, and a new
//!   `[[group]]` (without `mirror-disk` resources): the agent swaps them in place; no
//!   group is restarted.
//! * everything else needs every agent restarted, one after the other: see
//!   [`restart_reason`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How one key differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeKind {
    Added,
    Removed,
    Changed,
}

impl ChangeKind {
    pub fn sign(self) -> &'static str {
        match self {
            ChangeKind::Added => "+",
            ChangeKind::Removed => "-",
            ChangeKind::Changed => "~",
        }
    }
}

/// One difference between the running configuration and a new one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// `monitor[web-check].interval`, `group[db]`, `notify.webhook.url`.
    pub path: String,
    pub kind: ChangeKind,
    /// The value in the running configuration (TOML inline form; secrets hidden).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<String>,
    /// The value in the new configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<String>,
    /// Why this change needs a rolling restart; `None`: it is applied live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<String>,
}

impl Change {
    pub fn live(&self) -> bool {
        self.restart.is_none()
    }

    /// One line: `~ monitor[m].interval: "5s" -> "10s"` (and why it needs a restart).
    pub fn line(&self) -> String {
        let v = match (&self.old, &self.new) {
            (Some(o), Some(n)) => format!(": {o} -> {n}"),
            (None, Some(n)) => format!(" = {n}"),
            (Some(o), None) => format!(" (was {o})"),
            (None, None) => String::new(),
        };
        let why = match &self.restart {
            Some(r) => format!("  [needs a rolling restart: {r}]"),
            None => String::new(),
        };
        format!("{} {}{v}{why}", self.kind.sign(), self.path)
    }
}

/// The keys of `old` and `new` that differ (both parsed TOML tables), classified.
pub fn diff(old: &toml::Table, new: &toml::Table) -> Vec<Change> {
    let mut out = Vec::new();
    diff_tables("", old, new, &mut out);
    for c in &mut out {
        c.restart = restart_reason(c);
    }
    out
}

/// [`diff`] of two configuration texts. `Err`: one of them is not TOML.
pub fn diff_text(old: &str, new: &str) -> Result<Vec<Change>, String> {
    let o: toml::Table = toml::from_str(old).map_err(|e| format!("running configuration: {e}"))?;
    let n: toml::Table = toml::from_str(new).map_err(|e| format!("new configuration: {e}"))?;
    Ok(diff(&o, &n))
}

/// The changes that need a rolling restart, one line each (empty: all live).
pub fn restart_needed(changes: &[Change]) -> Vec<String> {
    changes
        .iter()
        .filter(|c| !c.live())
        .map(Change::line)
        .collect()
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// The names of an array of tables that all have a distinct string `name`.
fn names(a: &[toml::Value]) -> Option<Vec<&str>> {
    let mut out = Vec::with_capacity(a.len());
    for v in a {
        let n = v.as_table()?.get("name")?.as_str()?;
        if out.contains(&n) {
            return None;
        }
        out.push(n);
    }
    Some(out)
}

fn diff_tables(prefix: &str, old: &toml::Table, new: &toml::Table, out: &mut Vec<Change>) {
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for k in keys {
        let path = join(prefix, k);
        match (old.get(k), new.get(k)) {
            (Some(o), Some(n)) => diff_values(&path, o, n, out),
            // A named array of tables added or removed whole: entry by entry, as when
            // the array was there (`monitor[m]`).
            (None, Some(v @ toml::Value::Array(_))) | (Some(v @ toml::Value::Array(_)), None)
                if v.as_array()
                    .and_then(|a| names(a))
                    .is_some_and(|n| !n.is_empty()) =>
            {
                let empty = toml::Value::Array(Vec::new());
                let (o, n) = if old.contains_key(k) {
                    (v, &empty)
                } else {
                    (&empty, v)
                };
                diff_values(&path, o, n, out);
            }
            (None, Some(n)) => out.push(leaf(path, ChangeKind::Added, None, Some(n))),
            (Some(o), None) => out.push(leaf(path, ChangeKind::Removed, Some(o), None)),
            (None, None) => {}
        }
    }
}

fn diff_values(path: &str, o: &toml::Value, n: &toml::Value, out: &mut Vec<Change>) {
    if o == n {
        return;
    }
    match (o, n) {
        (toml::Value::Table(a), toml::Value::Table(b)) => diff_tables(path, a, b, out),
        (toml::Value::Array(a), toml::Value::Array(b)) => match (names(a), names(b)) {
            (Some(na), Some(nb)) => {
                let by_name = |arr: &[toml::Value], ns: &[&str]| -> BTreeMap<String, toml::Table> {
                    ns.iter()
                        .zip(arr)
                        .filter_map(|(n, v)| Some((n.to_string(), v.as_table()?.clone())))
                        .collect()
                };
                let ma = by_name(a, &na);
                let mb = by_name(b, &nb);
                for (name, ta) in &ma {
                    let p = format!("{path}[{name}]");
                    match mb.get(name) {
                        Some(tb) => diff_tables(&p, ta, tb, out),
                        None => out.push(Change {
                            path: p,
                            kind: ChangeKind::Removed,
                            old: None,
                            new: None,
                            restart: None,
                        }),
                    }
                }
                for name in mb.keys().filter(|n| !ma.contains_key(*n)) {
                    out.push(Change {
                        path: format!("{path}[{name}]"),
                        kind: ChangeKind::Added,
                        old: None,
                        new: None,
                        restart: None,
                    });
                }
                // The same entries in another order (the order of servers and resources
                // means something).
                let common_a: Vec<&&str> = na.iter().filter(|n| mb.contains_key(**n)).collect();
                let common_b: Vec<&&str> = nb.iter().filter(|n| ma.contains_key(**n)).collect();
                if common_a != common_b {
                    out.push(Change {
                        path: format!("{path} (order)"),
                        kind: ChangeKind::Changed,
                        old: Some(format!("{na:?}")),
                        new: Some(format!("{nb:?}")),
                        restart: None,
                    });
                }
            }
            _ => out.push(leaf(
                path.to_string(),
                ChangeKind::Changed,
                Some(o),
                Some(n),
            )),
        },
        _ => out.push(leaf(
            path.to_string(),
            ChangeKind::Changed,
            Some(o),
            Some(n),
        )),
    }
}

/// Keys whose values are never shown (inline secrets).
fn secret_key(path: &str) -> bool {
    let last = path.rsplit('.').next().unwrap_or(path);
    matches!(last, "password" | "secret" | "token" | "api_token")
}

fn render(path: &str, v: &toml::Value) -> String {
    if secret_key(path) {
        return "(hidden)".into();
    }
    match v {
        toml::Value::String(s) => format!("{s:?}"),
        toml::Value::Table(_) | toml::Value::Array(_) => {
            let v = redacted(v);
            serde_json::to_string(&v).unwrap_or_else(|_| v.to_string())
        }
        other => other.to_string(),
    }
}

/// `v` with the values of secret keys inside it replaced (a whole section added).
fn redacted(v: &toml::Value) -> toml::Value {
    match v {
        toml::Value::Table(t) => toml::Value::Table(
            t.iter()
                .map(|(k, x)| {
                    let x = if secret_key(k) {
                        toml::Value::String("(hidden)".into())
                    } else {
                        redacted(x)
                    };
                    (k.clone(), x)
                })
                .collect(),
        ),
        toml::Value::Array(a) => toml::Value::Array(a.iter().map(redacted).collect()),
        other => other.clone(),
    }
}

/// Whether a key's string value is a secret in a copy of the configuration given away
/// (a support bundle): wider than [`secret_key`] (any key naming a password, secret or
/// token, except the files and endpoints that only point at one).
fn bundle_secret_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    (k.contains("password") || k.contains("secret") || k.contains("token"))
        && !k.ends_with("_file")
        && !k.ends_with("_endpoint")
        && !k.ends_with("_files")
}

/// A URL without what may authenticate: its userinfo, query and fragment are dropped,
/// and, inside `[notify]` (incoming-webhook URLs carry their token in the path), the path.
fn redact_url(s: &str, in_notify: bool) -> String {
    let Some((scheme, rest)) = s.split_once("://") else {
        return s.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host = authority.rsplit('@').next().unwrap_or("");
    let path = tail.split(['?', '#']).next().unwrap_or("");
    let changed = host.len() != authority.len() || path.len() != tail.len();
    let path = if in_notify && !path.is_empty() && path != "/" {
        "/(hidden)"
    } else {
        path
    };
    let mut out = format!("{scheme}://{host}{path}");
    if changed && !in_notify {
        out.push_str(" (credentials hidden)");
    }
    out
}

fn bundle_redacted(v: &toml::Value, key: &str, in_notify: bool) -> toml::Value {
    match v {
        toml::Value::Table(t) => toml::Value::Table(
            t.iter()
                .map(|(k, x)| (k.clone(), bundle_redacted(x, k, in_notify || k == "notify")))
                .collect(),
        ),
        toml::Value::Array(a) => toml::Value::Array(
            a.iter()
                .map(|x| bundle_redacted(x, key, in_notify))
                .collect(),
        ),
        toml::Value::String(_) if bundle_secret_key(key) => toml::Value::String("(hidden)".into()),
        toml::Value::String(s) if s.contains("://") => {
            toml::Value::String(redact_url(s, in_notify))
        }
        other => other.clone(),
    }
}

/// A configuration text with its secrets removed, for a support bundle: inline passwords,
/// secrets and tokens replaced by `(hidden)`, URLs without userinfo or query (and webhook
/// paths), comments dropped (they may quote a secret). Key and token *files* are only
/// named, never read. `None` when the text is not TOML (nothing of it is given then).
pub fn redact_for_bundle(text: &str) -> Option<String> {
    let v: toml::Value = toml::from_str(text).ok()?;
    let r = bundle_redacted(&v, "", false);
    toml::to_string_pretty(&r).ok()
}

fn leaf(
    path: String,
    kind: ChangeKind,
    o: Option<&toml::Value>,
    n: Option<&toml::Value>,
) -> Change {
    Change {
        old: o.map(|v| render(&path, v)),
        new: n.map(|v| render(&path, v)),
        path,
        kind,
        restart: None,
    }
}

/// Why `c` needs a rolling restart, or `None` when a running agent takes it live.
pub fn restart_reason(c: &Change) -> Option<String> {
    let p = c.path.as_str();
    let top = p.split(['.', '[', ' ']).next().unwrap_or(p);
    let r: &str = match top {
        "cluster" if p == "cluster.accept_key_files" => "the keys are loaded when the agent starts: push with --stage and restart each agent in turn (the digest does not change, so the servers agree all along; docs: operations, Key rotation)",
        "cluster" => "the cluster name and key authenticate every heartbeat and API call: follow the key rotation procedure (docs: operations, Key rotation), or restart every agent with the new file",
        "heartbeat" => "heartbeat timing sets the quorum lease, the takeover wait and the self-fence deadline, which every server must apply at the same time (for a temporary change use `baton timeout set`)",
        "agent" => "the [agent] settings (state directory, fencing, watchdog, alert log, shutdown) are read when the agent starts",
        "server" => "the servers, their interconnects and API addresses are bound when the agent starts and define the quorum",
        "quorum" => "quorum, witness and self-fence settings must change on every server at the same time",
        "api" => "the API listeners, TLS and tokens are set up when the agent starts",
        "aws" | "azure" | "gcp" => "the cloud clients of the resources are built when the agent starts",
        "monitor" | "notify" | "metrics" => return None,
        "group" => return group_reason(c),
        _ => "this section is read when the agent starts",
    };
    Some(r.to_string())
}

fn group_reason(c: &Change) -> Option<String> {
    let p = c.path.as_str();
    // `group[NAME]` alone: the whole group added or removed.
    let whole = p.starts_with("group[") && p.ends_with(']') && !p[6..].contains('[');
    match (whole, c.kind) {
        (true, ChangeKind::Added) => None,
        (true, ChangeKind::Removed) => Some(
            "a removed group may still be active on a server: stop it (baton group stop), then remove it with a rolling restart".into(),
        ),
        _ if p == "group (order)" => None,
        _ => Some(
            "the resources and placement of an existing group are held by its drivers while it runs: change them with a rolling restart (the group moves away from each server before its restart)".into(),
        ),
    }
}

/// The groups of `new` that `old` does not have which contain a resource of `kind`
/// (a `mirror-disk` resource starts a mirror process at agent start: not live).
pub fn added_groups_with_kind(old: &toml::Table, new: &toml::Table, kind: &str) -> Vec<String> {
    let groups = |t: &toml::Table| -> Vec<toml::Table> {
        t.get("group")
            .and_then(|g| g.as_array())
            .map(|a| a.iter().filter_map(|v| v.as_table().cloned()).collect())
            .unwrap_or_default()
    };
    let name = |t: &toml::Table| t.get("name").and_then(|n| n.as_str()).map(str::to_string);
    let old_names: Vec<String> = groups(old).iter().filter_map(name).collect();
    groups(new)
        .iter()
        .filter(|g| name(g).is_some_and(|n| !old_names.contains(&n)))
        .filter(|g| {
            g.get("resource")
                .and_then(|r| r.as_array())
                .is_some_and(|rs| {
                    rs.iter()
                        .any(|r| r.get("kind").and_then(|k| k.as_str()) == Some(kind))
                })
        })
        .filter_map(name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[cluster]
name = "c"
key_file = "k"

[heartbeat]
interval = "200ms"

[[server]]
name = "n1"
interconnects = ["127.0.0.1"]
api = "127.0.0.1:7420"

[[server]]
name = "n2"
interconnects = ["127.0.0.2"]
api = "127.0.0.2:7420"

[[group]]
name = "g"
servers = ["n1", "n2"]

[[group.resource]]
kind = "exec"
name = "app"
start = "true"
stop = "true"

[[monitor]]
kind = "exec"
name = "m"
command = "true"
interval = "5s"

[notify.webhook]
url = "http://127.0.0.1:1/"
secret = "s3cret"
"#;

    fn changes(from: &str, to: &str) -> Vec<Change> {
        diff_text(BASE, &BASE.replace(from, to)).unwrap()
    }

    #[test]
    fn same_text_and_layout_only_changes_are_no_change() {
        assert!(diff_text(BASE, BASE).unwrap().is_empty());
        let relaid = BASE.replace("interval = \"200ms\"", "interval = \"200ms\" # comment");
        assert!(diff_text(BASE, &relaid).unwrap().is_empty());
    }

    #[test]
    fn monitor_changes_are_live_and_named_by_entry() {
        let c = changes("interval = \"5s\"", "interval = \"10s\"");
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].path, "monitor[m].interval");
        assert_eq!(c[0].kind, ChangeKind::Changed);
        assert_eq!(c[0].old.as_deref(), Some("\"5s\""));
        assert_eq!(c[0].new.as_deref(), Some("\"10s\""));
        assert!(c[0].live());
        let added = diff_text(
            BASE,
            &format!("{BASE}\n[[monitor]]\nkind = \"exec\"\nname = \"m2\"\ncommand = \"true\"\n"),
        )
        .unwrap();
        assert_eq!(added.len(), 1);
        assert_eq!(added[0].path, "monitor[m2]");
        assert_eq!(added[0].kind, ChangeKind::Added);
        assert!(added[0].live());
    }

    #[test]
    fn a_named_array_added_whole_is_listed_by_entry() {
        let without = BASE.replace(
            "[[monitor]]\nkind = \"exec\"\nname = \"m\"\ncommand = \"true\"\ninterval = \"5s\"\n",
            "",
        );
        assert_ne!(without, BASE);
        let c = diff_text(&without, BASE).unwrap();
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].path, "monitor[m]");
        assert_eq!(c[0].kind, ChangeKind::Added);
        let c = diff_text(BASE, &without).unwrap();
        assert_eq!(c[0].path, "monitor[m]");
        assert_eq!(c[0].kind, ChangeKind::Removed);
        assert!(c[0].live());
    }

    #[test]
    fn notify_and_metrics_are_live_accepted_keys_are_staged() {
        let c = changes(
            "url = \"http://127.0.0.1:1/\"",
            "url = \"http://127.0.0.1:2/\"",
        );
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].path, "notify.webhook.url");
        assert!(c[0].live());
        // Keys are loaded at start: staged, then a rolling restart.
        let c = changes(
            "key_file = \"k\"",
            "key_file = \"k\"\naccept_key_files = [\"next\"]",
        );
        assert_eq!(c[0].path, "cluster.accept_key_files");
        assert!(c[0].restart.as_deref().unwrap().contains("--stage"));
        let m = diff_text(BASE, &format!("{BASE}\n[metrics.prometheus]\n")).unwrap();
        assert_eq!(m[0].path, "metrics");
        assert!(m[0].live());
    }

    #[test]
    fn restart_changes_say_why() {
        for (from, to, path) in [
            ("name = \"c\"", "name = \"d\"", "cluster.name"),
            ("key_file = \"k\"", "key_file = \"k2\"", "cluster.key_file"),
            (
                "interval = \"200ms\"",
                "interval = \"300ms\"",
                "heartbeat.interval",
            ),
            (
                "api = \"127.0.0.2:7420\"",
                "api = \"127.0.0.2:7421\"",
                "server[n2].api",
            ),
            (
                "start = \"true\"",
                "start = \"false\"",
                "group[g].resource[app].start",
            ),
            (
                "servers = [\"n1\", \"n2\"]",
                "servers = [\"n2\", \"n1\"]",
                "group[g].servers",
            ),
        ] {
            let c = changes(from, to);
            assert_eq!(c.len(), 1, "{c:?}");
            assert_eq!(c[0].path, path);
            let why = c[0].restart.as_deref().unwrap_or_default();
            assert!(!why.is_empty(), "{path} must need a restart");
            assert!(
                c[0].line().contains("needs a rolling restart"),
                "{}",
                c[0].line()
            );
        }
        let quorum =
            diff_text(BASE, &format!("{BASE}\n[quorum]\non_loss = \"shutdown\"\n")).unwrap();
        assert!(!quorum[0].live());
        let api = diff_text(BASE, &format!("{BASE}\n[api]\nsocket_dir = \"/x\"\n")).unwrap();
        assert!(!api[0].live());
    }

    #[test]
    fn a_new_group_is_live_a_removed_one_is_not() {
        let g2 = "\n[[group]]\nname = \"g2\"\nservers = [\"n2\", \"n1\"]\n\n[[group.resource]]\nkind = \"exec\"\nname = \"a2\"\nstart = \"true\"\nstop = \"true\"\n";
        let with = BASE.replace("[[monitor]]", &format!("{g2}\n[[monitor]]"));
        let add = diff_text(BASE, &with).unwrap();
        assert_eq!(add.len(), 1, "{add:?}");
        assert_eq!(add[0].path, "group[g2]");
        assert!(add[0].live());
        let remove = diff_text(&with, BASE).unwrap();
        assert_eq!(remove[0].path, "group[g2]");
        assert_eq!(remove[0].kind, ChangeKind::Removed);
        assert!(!remove[0].live());
        let old: toml::Table = toml::from_str(BASE).unwrap();
        let new: toml::Table = toml::from_str(&with.replace(
            "kind = \"exec\"\nname = \"a2\"",
            "kind = \"mirror-disk\"\nname = \"a2\"",
        ))
        .unwrap();
        assert_eq!(
            added_groups_with_kind(&old, &new, "mirror-disk"),
            vec!["g2"]
        );
        assert!(
            added_groups_with_kind(&old, &toml::from_str(&with).unwrap(), "mirror-disk").is_empty()
        );
    }

    #[test]
    fn server_order_is_a_change() {
        let swapped = BASE
            .replacen("name = \"n1\"", "name = \"nX\"", 1)
            .replacen("name = \"n2\"", "name = \"n1\"", 1)
            .replacen("name = \"nX\"", "name = \"n2\"", 1);
        let c = diff_text(BASE, &swapped).unwrap();
        assert!(
            c.iter().any(|c| c.path == "server (order)" && !c.live()),
            "{c:?}"
        );
    }

    #[test]
    fn bundle_copy_has_no_secret() {
        let t = r#"
# token abc123 in a comment
cluster_name = "c"
[notify.webhook]
url = "https://u:pw@hooks.example/T000/B000/XXXX?k=1"
secret = "s3cret"
[notify.email]
password = "smtp-pass"
password_file = "/etc/p"
[api]
health = "http://a:b@127.0.0.1/x?y=z"
derived_tokens = true
"#;
        let r = super::redact_for_bundle(t).unwrap();
        for s in [
            "abc123",
            "s3cret",
            "smtp-pass",
            "pw@",
            "XXXX",
            "k=1",
            "a:b",
            "y=z",
        ] {
            assert!(!r.contains(s), "{s} in {r}");
        }
        assert!(r.contains("/etc/p"), "{r}");
        assert!(r.contains("http://127.0.0.1/x (credentials hidden)"), "{r}");
        assert!(r.contains("derived_tokens = true"), "{r}");
    }

    #[test]
    fn secrets_are_hidden() {
        let c = changes("secret = \"s3cret\"", "secret = \"other\"");
        assert_eq!(c[0].path, "notify.webhook.secret");
        assert_eq!(c[0].old.as_deref(), Some("(hidden)"));
        assert_eq!(c[0].new.as_deref(), Some("(hidden)"));
        assert!(!c[0].line().contains("s3cret"));
        // Inside a section added whole, too.
        let c = diff_text(&BASE.replace("[notify.webhook]", "[notify.webhookx]"), BASE).unwrap();
        assert!(c.iter().all(|c| !c.line().contains("s3cret")), "{c:?}");
        assert!(c.iter().any(|c| c.line().contains("(hidden)")), "{c:?}");
    }
}
