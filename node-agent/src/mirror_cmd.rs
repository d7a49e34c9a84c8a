//! `baton mirror ...`: the operator's view of the mirror processes on this server, and
//! the hidden `baton mirror-daemon` that the agent starts for each `mirror-disk`.
//!
//! These commands talk to the local mirror process through its control socket (like
//! `drbdadm` talks to the local kernel module): run them on the server in question, as
//! root (the state directory is root's).

use std::path::{Path, PathBuf};
use std::time::Duration;

use baton_mirror::control::{self, Request, Response, Status};

use crate::exit::{fail, Exit};
use crate::key::ClusterKey;

#[derive(clap::Subcommand, Debug)]
pub enum MirrorOp {
    /// Role, link, mode, disk state, out-of-sync bytes, resync progress and generations
    /// of this server's mirrors (or of RESOURCE).
    Status {
        resource: Option<String>,
        #[command(flatten)]
        at: MirrorAt,
        /// Keep showing it (once a second), with a progress bar while a resync runs.
        #[arg(long, short = 'f')]
        follow: bool,
        #[arg(long)]
        json: bool,
    },
    /// Pause replication (writes go on locally and are marked out of sync; the peer
    /// counts as behind until `resume` and the resync that follows).
    Pause {
        resource: String,
        #[command(flatten)]
        at: MirrorAt,
        #[arg(long)]
        json: bool,
    },
    /// Resume replication after `pause`.
    Resume {
        resource: String,
        #[command(flatten)]
        at: MirrorAt,
        #[arg(long)]
        json: bool,
    },
    /// Let this server become primary with the data it has although it is stale or in
    /// split brain (the next activation only). Writes made on the other side since they
    /// last agreed are then not on this side.
    ForcePrimary {
        resource: String,
        #[command(flatten)]
        at: MirrorAt,
        /// Confirm.
        #[arg(long)]
        yes: bool,
        #[arg(long)]
        json: bool,
    },
    /// Split brain: throw away this side's changes since the split; the peer's data is
    /// copied over them.
    DiscardLocal {
        resource: String,
        #[command(flatten)]
        at: MirrorAt,
        /// Confirm.
        #[arg(long)]
        yes: bool,
        #[arg(long)]
        json: bool,
    },
}

/// Which server's mirror processes: the configuration, this server's name and its state
/// directory.
#[derive(clap::Args, Debug, Clone)]
pub struct MirrorAt {
    #[command(flatten)]
    pub cfg: crate::args::ConfigArg,
    /// Name of this server in the configuration.
    #[arg(long, short = 's', env = "BATON_SERVER")]
    pub server: Option<String>,
    /// The agent's state directory (default: `[agent] state_dir`).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

/// Arguments of the hidden `baton mirror-daemon`.
#[derive(clap::Args, Debug, Clone)]
pub struct DaemonArgs {
    #[command(flatten)]
    pub cfg: crate::args::ConfigArg,
    #[command(flatten)]
    pub srv: crate::args::ServerArg,
    #[arg(long)]
    pub state_dir: PathBuf,
    #[arg(long)]
    pub group: String,
    #[arg(long)]
    pub resource: String,
}

/// Run the mirror process of one resource (started by the agent).
pub async fn daemon(a: DaemonArgs) -> Exit {
    let cfg = match crate::catalog::load_config(&a.cfg.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("baton mirror-daemon: {e}");
            return Exit::ConfigInvalid;
        }
    };
    let mut keys = Vec::new();
    for f in std::iter::once(&cfg.key_file).chain(cfg.accept_key_files.iter()) {
        match ClusterKey::load(crate::catalog::config_path(&a.cfg.config, f)) {
            Ok(k) => keys.push(k),
            Err(e) => {
                eprintln!("baton mirror-daemon: {e}");
                return Exit::KeyError;
            }
        }
    }
    let spec = match crate::mirror_kind::resolve(
        &cfg,
        &a.state_dir,
        &a.srv.server,
        &a.group,
        &a.resource,
        &keys,
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("baton mirror-daemon: {e}");
            return Exit::ConfigInvalid;
        }
    };
    match baton_mirror::daemon::run(spec).await {
        Ok(()) => Exit::Ok,
        Err(e) => {
            tracing::error!(code = e.code(), "{e}");
            eprintln!("baton mirror-daemon: {e} ({})", e.code());
            Exit::Failure
        }
    }
}

struct Found {
    resource: String,
    control: PathBuf,
}

/// The mirror resources of this server (all, or the one named).
fn find(at: &MirrorAt, only: Option<&str>, json: bool) -> Result<Vec<Found>, Exit> {
    let cfg = crate::catalog::load_config(&at.cfg.config)
        .map_err(|e| fail(json, Exit::ConfigInvalid, "config-invalid", &e.to_string()))?;
    let state_dir = at
        .state_dir
        .clone()
        .unwrap_or_else(|| cfg.agent.state_dir.clone());
    let mut out = Vec::new();
    for g in &cfg.groups {
        if let Some(me) = &at.server {
            if !g.servers.contains(me) {
                continue;
            }
        }
        for r in &g.resources {
            if r.kind != crate::mirror_kind::RESOURCE_KIND {
                continue;
            }
            if only.is_some_and(|o| o != r.name) {
                continue;
            }
            out.push(Found {
                resource: r.name.clone(),
                control: crate::mirror_kind::control_path(&state_dir, &g.name, &r.name),
            });
        }
    }
    if out.is_empty() {
        return Err(fail(
            json,
            Exit::Usage,
            "unknown-resource",
            &match only {
                Some(r) => format!("no mirror-disk resource `{r}` in the configuration"),
                None => "no mirror-disk resource in the configuration".into(),
            },
        ));
    }
    Ok(out)
}

async fn call(path: &Path, req: &Request) -> Result<Response, control::ControlError> {
    control::call(path, req, Duration::from_secs(5)).await
}

pub async fn run(op: MirrorOp) -> Exit {
    match op {
        MirrorOp::Status {
            resource,
            at,
            follow,
            json,
        } => status(&at, resource.as_deref(), follow, json).await,
        MirrorOp::Pause { resource, at, json } => {
            simple(&at, &resource, Request::Pause, json, "replication paused").await
        }
        MirrorOp::Resume { resource, at, json } => {
            simple(&at, &resource, Request::Resume, json, "replication resumed").await
        }
        MirrorOp::ForcePrimary {
            resource,
            at,
            yes,
            json,
        } => {
            if !yes {
                return fail(json, Exit::Usage, "confirm", "this lets a stale or split-brain copy become primary: writes the other side has are not on it. Add --yes to confirm");
            }
            simple(
                &at,
                &resource,
                Request::ForcePrimary,
                json,
                "the next activation here accepts this server's data as it is; start the group here (`baton group stop GROUP` if its activation failed, then `baton group start GROUP --server SERVER`)",
            )
            .await
        }
        MirrorOp::DiscardLocal {
            resource,
            at,
            yes,
            json,
        } => {
            if !yes {
                return fail(json, Exit::Usage, "confirm", "this overwrites this server's changes since the split with the peer's data. Add --yes to confirm");
            }
            simple(
                &at,
                &resource,
                Request::DiscardLocal,
                json,
                "this side's changes are discarded: it resyncs from the peer",
            )
            .await
        }
    }
}

async fn simple(at: &MirrorAt, resource: &str, req: Request, json: bool, done: &str) -> Exit {
    let found = match find(at, Some(resource), json) {
        Ok(f) => f,
        Err(e) => return e,
    };
    for f in found {
        match call(&f.control, &req).await {
            Ok(Response::Ok) => {}
            Ok(Response::Error { code, message }) => {
                return fail(json, Exit::Refused, &code, &message)
            }
            Ok(other) => {
                return fail(
                    json,
                    Exit::Failure,
                    "mirror_protocol",
                    &format!("unexpected answer {other:?}"),
                )
            }
            Err(e) => return fail(json, Exit::Unreachable, e.code(), &e.to_string()),
        }
    }
    if json {
        println!("{}", serde_json::json!({"ok": true, "resource": resource}));
    } else {
        println!("{resource}: {done}");
    }
    Exit::Ok
}

async fn status(at: &MirrorAt, only: Option<&str>, follow: bool, json: bool) -> Exit {
    let found = match find(at, only, json) {
        Ok(f) => f,
        Err(e) => return e,
    };
    loop {
        let mut all = Vec::new();
        let mut exit = Exit::Ok;
        for f in &found {
            match call(&f.control, &Request::Status).await {
                Ok(Response::Status(s)) => all.push(Ok(*s)),
                Ok(other) => all.push(Err((
                    f.resource.clone(),
                    format!("unexpected answer {other:?}"),
                ))),
                Err(e) => {
                    exit = Exit::Unreachable;
                    all.push(Err((f.resource.clone(), e.to_string())))
                }
            }
        }
        if json {
            let v: Vec<serde_json::Value> = all
                .iter()
                .map(|r| match r {
                    Ok(s) => serde_json::to_value(s).unwrap_or_default(),
                    Err((res, e)) => serde_json::json!({"resource": res, "error": {"code": "mirror_unreachable", "message": e}}),
                })
                .collect();
            println!(
                "{}",
                serde_json::json!({"ok": exit == Exit::Ok, "mirrors": v})
            );
        } else {
            for r in &all {
                match r {
                    Ok(s) => print!("{}", render(s)),
                    Err((res, e)) => println!("{res}: mirror process not reachable: {e}"),
                }
            }
        }
        if !follow {
            return exit;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        if !json {
            println!();
        }
    }
}

fn bytes(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// The text form of one mirror's status.
pub fn render(s: &Status) -> String {
    let mut o = String::new();
    let conn = match s.connection {
        baton_mirror::volume::Conn::Connected => "connected",
        baton_mirror::volume::Conn::Disconnected => "disconnected",
        baton_mirror::volume::Conn::SplitBrain => "SPLIT BRAIN",
        baton_mirror::volume::Conn::Refused => "refused",
    };
    o.push_str(&format!(
        "{} (group {}) on {}: {}{} {}, {} to {}, disk {:?}/{}\n",
        s.resource,
        s.group,
        s.server,
        s.role,
        s.epoch
            .map(|e| format!(" at epoch {e}"))
            .unwrap_or_default(),
        s.mode,
        conn,
        s.peer,
        s.disk,
        s.peer_disk
            .map_or("unknown".to_string(), |d| format!("{d:?}")),
    ));
    o.push_str(&format!(
        "  size {}, out of sync {}, generation {}{}{}{}\n",
        bytes(s.size),
        bytes(s.out_of_sync_bytes),
        s.generation,
        if s.paused { ", PAUSED" } else { "" },
        if s.fenced { ", FENCED" } else { "" },
        if s.split_brain { ", split brain" } else { "" },
    ));
    if s.resync.running {
        let r = &s.resync;
        let pct = (r.done_bytes.min(r.total_bytes) * 100)
            .checked_div(r.total_bytes)
            .map_or(0, |p| p as usize);
        let bar = format!("{}{}", "#".repeat(pct / 5), ".".repeat(20 - pct / 5));
        o.push_str(&format!(
            "  resync {} [{bar}] {pct}% {} of {}, {}/s, {} left\n",
            if r.source { "to peer" } else { "from peer" },
            bytes(r.done_bytes),
            bytes(r.total_bytes),
            bytes(r.rate_bytes_per_s),
            r.remaining_s.map_or("?".into(), |x| format!("{x}s")),
        ));
    }
    o.push_str(&format!(
        "  NBD {}{}\n",
        s.nbd,
        if s.nbd_serving { " (serving)" } else { "" }
    ));
    if let Some(t) = &s.takeover {
        o.push_str(&format!(
            "  async takeover at epoch {} without the old primary: {}\n",
            t.epoch,
            match t.peer_backlog_bytes {
                Some(b) => format!(
                    "it last reported {} not confirmed here; later writes may be missing too",
                    bytes(b)
                ),
                None => "its backlog was never reported; how much is missing is unknown".into(),
            }
        ));
    }
    let discarded = s
        .counters
        .get("async_discarded_bytes")
        .copied()
        .unwrap_or(0);
    if discarded > 0 {
        o.push_str(&format!(
            "  async writes discarded after the peer took over: {}\n",
            bytes(discarded)
        ));
    }
    if let Some(e) = &s.last_error {
        o.push_str(&format!("  last error: {e}\n"));
    }
    o
}
