//! The agent's side of mirroring: the `mirror-disk` resource kind (promote and demote
//! the mirror process of the resource), the `mirror-disk` and `mirror-connect` monitor
//! kinds, the process's start and re-adoption, its write lease and its events.
//!
//! The mirror process itself (`baton mirror-daemon`, [`baton_mirror::daemon`]) runs in
//! a process group of its own and outlives the agent; everything here talks to it
//! through its control socket `STATE_DIR/mirror/GROUP.RESOURCE.ctl`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use baton_core::config::{Config, Group, Resource};
use baton_core::events::Event;
use baton_mirror::control::{self, Request, Response, Status};
use baton_mirror::daemon::{NbdEndpoint, Spec};
use baton_mirror::link::LinkKey;
use baton_mirror::params::MirrorDiskParams;
use baton_providers::{
    ActionContext, CheckOutcome, ParamError, Params, Probe, ProbeContext, ProbeOk, ProviderError,
    ProviderRegistry, Registry, ResourceDriver,
};

use crate::key::ClusterKey;
use baton_core::marks::{self, Mark};

pub const RESOURCE_KIND: &str = "mirror-disk";
pub const MONITOR_KINDS: &[&str] = &["mirror-disk", "mirror-connect"];

const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// Every kind this build knows: the providers' and mirroring's.
#[derive(Debug)]
pub struct Kinds {
    pub providers: ProviderRegistry,
}

impl Kinds {
    pub fn new(providers: ProviderRegistry) -> Kinds {
        Kinds { providers }
    }
}

impl Registry for Kinds {
    fn resource_kinds(&self) -> Vec<&'static str> {
        let mut k = self.providers.resource_kinds();
        k.push(RESOURCE_KIND);
        k
    }
    fn monitor_kinds(&self) -> Vec<&'static str> {
        let mut k = self.providers.monitor_kinds();
        k.extend(MONITOR_KINDS);
        k
    }
    fn build_resource(
        &self,
        kind: &str,
        params: &Params,
    ) -> Result<Box<dyn ResourceDriver>, ParamError> {
        if kind == RESOURCE_KIND {
            // Validation only: the agent builds the real driver with the cluster's
            // context (`driver`).
            MirrorDiskParams::from_params(params)?;
            return Ok(Box::new(Unbound));
        }
        self.providers.build_resource(kind, params).map_err(|e| {
            if e.key.as_deref() == Some("kind") {
                ParamError::new(
                    e.key,
                    format!(
                        "unknown resource kind `{kind}`; known kinds: {}",
                        self.resource_kinds().join(", ")
                    ),
                )
            } else {
                e
            }
        })
    }
    fn build_probe(&self, kind: &str, params: &Params) -> Result<Box<dyn Probe>, ParamError> {
        if MONITOR_KINDS.contains(&kind) {
            if let Some(k) = params.keys().next() {
                return Err(ParamError::new(
                    Some(k.clone()),
                    format!("unknown key `{k}`; a {kind} monitor takes only the common keys (name its mirror-disk with `resource`)"),
                ));
            }
            return Ok(Box::new(UnboundProbe));
        }
        self.providers.build_probe(kind, params).map_err(|e| {
            if e.key.as_deref() == Some("kind") {
                ParamError::new(
                    e.key,
                    format!(
                        "unknown monitor kind `{kind}`; known kinds: {}",
                        self.monitor_kinds().join(", ")
                    ),
                )
            } else {
                e
            }
        })
    }
    fn check_group_servers(&self, kind: &str, servers: &[String]) -> Result<(), ParamError> {
        if kind == RESOURCE_KIND {
            return baton_mirror::params::check_group(servers);
        }
        Ok(())
    }
    fn monitor_needs_resource(&self, kind: &str) -> bool {
        MONITOR_KINDS.contains(&kind)
    }
    fn uses_interconnect(&self, kind: &str) -> bool {
        kind == RESOURCE_KIND
    }
    fn local_fence_stop_ms(&self, kind: &str) -> Option<u64> {
        self.providers.local_fence_stop_ms(kind)
    }
}

/// Stands in for a mirror-disk driver while a config is only checked.
#[derive(Debug)]
struct Unbound;

#[async_trait]
impl ResourceDriver for Unbound {
    fn kind(&self) -> &'static str {
        RESOURCE_KIND
    }
    async fn activate(&self, _: &ActionContext) -> Result<(), ProviderError> {
        Err(ProviderError::Other(
            "mirror-disk driver not bound to a cluster".into(),
        ))
    }
    async fn deactivate(&self, _: &ActionContext) -> Result<(), ProviderError> {
        Err(ProviderError::Other(
            "mirror-disk driver not bound to a cluster".into(),
        ))
    }
    async fn check(&self, _: &ActionContext) -> Result<CheckOutcome, ProviderError> {
        Err(ProviderError::Other(
            "mirror-disk driver not bound to a cluster".into(),
        ))
    }
}

#[derive(Debug)]
struct UnboundProbe;

#[async_trait]
impl Probe for UnboundProbe {
    fn kind(&self) -> &'static str {
        "mirror-connect"
    }
    async fn probe(&self, _: &ProbeContext) -> Result<ProbeOk, ProviderError> {
        Err(ProviderError::Other(
            "mirror monitor not bound to a cluster".into(),
        ))
    }
}

/// The mirror directory of a state directory.
pub fn mirror_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("mirror")
}

/// The control socket of a resource's mirror process.
pub fn control_path(state_dir: &Path, group: &str, resource: &str) -> PathBuf {
    mirror_dir(state_dir).join(format!("{group}.{resource}.ctl"))
}

/// The link key of one mirror: the cluster key's MAC over the resource's identity, so
/// two mirrors of one cluster never share a key.
pub fn link_key(key: &ClusterKey, cluster: &str, group: &str, resource: &str) -> LinkKey {
    LinkKey(key.mac(&[
        b"baton mirror link v1",
        cluster.as_bytes(),
        group.as_bytes(),
        resource.as_bytes(),
    ]))
}

fn find<'a>(
    cfg: &'a Config,
    group: &str,
    resource: &str,
) -> Result<(&'a Group, &'a Resource), String> {
    let g = cfg
        .group(group)
        .ok_or_else(|| format!("no group `{group}` in the configuration"))?;
    let r = g
        .resources
        .iter()
        .find(|r| r.name == resource)
        .ok_or_else(|| format!("no resource `{resource}` in group `{group}`"))?;
    if r.kind != RESOURCE_KIND {
        return Err(format!(
            "resource `{resource}` is a {}, not a {RESOURCE_KIND}",
            r.kind
        ));
    }
    Ok((g, r))
}

fn mirror_addr(cfg: &Config, server: &str, p: &MirrorDiskParams) -> Result<SocketAddr, String> {
    if let Some(a) = p.address {
        return Ok(a);
    }
    let s = cfg
        .server(server)
        .ok_or_else(|| format!("no server `{server}`"))?;
    let ic = s.interconnects.get(p.interconnect).ok_or_else(|| {
        format!(
            "interconnect {} does not exist on server `{server}` (it has {}, numbered from 0)",
            p.interconnect,
            s.interconnects.len()
        )
    })?;
    Ok(SocketAddr::new(ic.ip(), p.port))
}

/// Everything the mirror process of `group`/`resource` on `me` needs.
pub fn resolve(
    cfg: &Config,
    state_dir: &Path,
    me: &str,
    group: &str,
    resource: &str,
    keys: &[ClusterKey],
) -> Result<Spec, String> {
    let (g, r) = find(cfg, group, resource)?;
    let peer = g
        .servers
        .iter()
        .find(|s| *s != me)
        .ok_or_else(|| format!("group `{group}` has no server besides `{me}`"))?
        .clone();
    if !g.servers.iter().any(|s| s == me) {
        return Err(format!("server `{me}` is not in group `{group}`"));
    }
    let mine = MirrorDiskParams::from_params(&r.params_for(me)).map_err(|e| e.to_string())?;
    let theirs = MirrorDiskParams::from_params(&r.params_for(&peer)).map_err(|e| e.to_string())?;
    let dir = mirror_dir(state_dir);
    let nbd = match (&mine.nbd_address, &mine.nbd_socket) {
        (Some(a), _) => NbdEndpoint::Tcp(*a),
        (None, Some(p)) => NbdEndpoint::Unix(p.clone()),
        (None, None) => NbdEndpoint::Unix(dir.join(format!("{group}.{resource}.nbd"))),
    };
    Ok(Spec {
        cluster: cfg.cluster_name.clone(),
        group: group.to_string(),
        resource: resource.to_string(),
        server: me.to_string(),
        listen: mirror_addr(cfg, me, &mine)?,
        peer_addr: mirror_addr(cfg, &peer, &theirs)?,
        peer,
        meta_path: mine
            .metadata
            .clone()
            .unwrap_or_else(|| dir.join(format!("{group}.{resource}.meta"))),
        nbd,
        control: control_path(state_dir, group, resource),
        keys: keys
            .iter()
            .map(|k| link_key(k, &cfg.cluster_name, group, resource))
            .collect(),
        params: mine,
    })
}

/// How to start a resource's mirror process.
#[derive(Debug, Clone)]
pub struct Launch {
    pub config: PathBuf,
    pub state_dir: PathBuf,
    pub server: String,
    pub group: String,
    pub resource: String,
    pub control: PathBuf,
    pub nbd_device: Option<PathBuf>,
    pub nbd: String,
    pub peer: String,
}

impl Launch {
    pub fn new(config: &Path, state_dir: &Path, server: &str, spec: &Spec) -> Launch {
        Launch {
            config: config.to_path_buf(),
            state_dir: state_dir.to_path_buf(),
            server: server.to_string(),
            group: spec.group.clone(),
            resource: spec.resource.clone(),
            control: spec.control.clone(),
            nbd_device: spec.params.nbd_device.clone(),
            nbd: spec.nbd.to_string(),
            peer: spec.peer.clone(),
        }
    }

    pub async fn call(&self, req: &Request) -> Result<Response, ProviderError> {
        control::call(&self.control, req, CONTROL_TIMEOUT)
            .await
            .map_err(|e| ProviderError::Other(format!("{} ({})", e, e.code())))
    }

    pub async fn status(&self) -> Result<Status, ProviderError> {
        match self.call(&Request::Status).await? {
            Response::Status(s) => Ok(*s),
            other => Err(ProviderError::Other(format!(
                "mirror process answered {other:?} to a status request"
            ))),
        }
    }

    /// Start the mirror process unless one answers; `Ok(true)` when it was started.
    pub async fn ensure(&self) -> Result<bool, ProviderError> {
        if self.status().await.is_ok() {
            return Ok(false);
        }
        let exe = std::env::current_exe()
            .map_err(|e| ProviderError::Other(format!("cannot find the baton binary: {e}")))?;
        let dir = mirror_dir(&self.state_dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| ProviderError::Other(format!("cannot create {}: {e}", dir.display())))?;
        let log_path = dir.join(format!("{}.{}.log", self.group, self.resource));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| {
                ProviderError::Other(format!("cannot open {}: {e}", log_path.display()))
            })?;
        let log2 = log
            .try_clone()
            .map_err(|e| ProviderError::Other(e.to_string()))?;
        // Under systemd, the agent's unit kills what is left in its cgroup when the
        // agent stops (`KillMode=mixed`, so that `exec`-started daemons do not outlive
        // it): the mirror process gets a transient unit of its own instead, so that
        // `systemctl restart baton` does not take the disk away. Elsewhere it is a child
        // in a process group of its own.
        let systemd = Path::new("/run/systemd/system").exists()
            && std::env::var_os("BATON_MIRROR_NO_SYSTEMD").is_none();
        let mut cmd = if systemd {
            let mut c = tokio::process::Command::new("systemd-run");
            c.arg(format!(
                "--unit=baton-mirror-{}-{}",
                self.group, self.resource
            ))
            .args(["--collect", "--quiet", "--property=KillMode=mixed", "--"])
            .arg(exe);
            c
        } else {
            tokio::process::Command::new(exe)
        };
        cmd.arg("mirror-daemon")
            .arg("--config")
            .arg(&self.config)
            .arg("--server")
            .arg(&self.server)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--group")
            .arg(&self.group)
            .arg("--resource")
            .arg(&self.resource)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2)
            // Its own process group: a signal to the agent's group (Ctrl-C, a kill of
            // the agent's group) does not reach it.
            .process_group(0)
            .kill_on_drop(false);
        let mut child = cmd
            .spawn()
            .map_err(|e| ProviderError::Other(format!("cannot start the mirror process: {e}")))?;
        // Reap it if it ends while this agent runs (after an agent restart, init does).
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        let deadline = crate::clock::now() + Duration::from_secs(10);
        loop {
            if self.status().await.is_ok() {
                return Ok(true);
            }
            if crate::clock::now() >= deadline {
                let tail = std::fs::read_to_string(&log_path)
                    .ok()
                    .and_then(|t| t.lines().last().map(str::to_string))
                    .unwrap_or_default();
                return Err(ProviderError::Other(format!(
                    "the mirror process did not come up within 10 s (log {}: {tail})",
                    log_path.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The `mirror-disk` resource: promote the mirror at the group's epoch (refused when this
/// side's data is stale), attach the kernel NBD device if configured; demote at
/// deactivation.
#[derive(Debug)]
pub struct MirrorDiskDriver {
    pub launch: Launch,
    pub agent: AgentHandle,
}

/// The agent's loop, which the promotion asks for the data mark (`None` where no agent
/// runs: unit tests).
#[derive(Clone, Default)]
pub struct AgentHandle(pub Option<Arc<crate::shared::Shared>>);

impl std::fmt::Debug for AgentHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "AgentHandle(agent)"
        } else {
            "AgentHandle(none)"
        })
    }
}

fn refused(code: String, message: String) -> ProviderError {
    ProviderError::Rejected {
        operation: "mirror promote".into(),
        code,
        status: None,
        message,
    }
}

impl MirrorDiskDriver {
    /// Refuse to promote a copy that the cluster's data mark says is behind (its peer
    /// wrote alone: `baton_core::marks`), unless the operator forced this side.
    async fn check_mark(&self) -> Result<(), ProviderError> {
        let Some(shared) = &self.agent.0 else {
            return Ok(());
        };
        let l = &self.launch;
        let key = marks::key(&l.group, &l.resource);
        let e = shared.engine_status().await.ok_or_else(|| {
            ProviderError::Other("the agent's loop did not answer for the data mark".into())
        })?;
        let m = e.marks.get(&key);
        let mark = Mark::decode(m.map_or(0, |m| m.value));
        if mark.includes(marks::bit(&l.server, &l.peer)) {
            return Ok(());
        }
        let s = l.status().await?;
        if s.force_primary {
            return Ok(());
        }
        let msg = format!(
            "refused to become primary: the cluster recorded (data mark {}, held by {}) that {} wrote data this side does not have; bring {} back, or accept this side's older data with `baton mirror force-primary {} --yes`",
            m.map_or(0, |m| m.value),
            m.map_or_else(String::new, |m| m.held_by.join(", ")),
            l.peer,
            l.peer,
            l.resource
        );
        shared.raise(mirror_event(
            shared,
            l,
            &baton_core::events::MIRROR_STALE_REFUSED,
            msg.clone(),
        ));
        Err(refused("mirror_stale".into(), msg))
    }
}

#[async_trait]
impl ResourceDriver for MirrorDiskDriver {
    fn kind(&self) -> &'static str {
        RESOURCE_KIND
    }

    async fn activate(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        self.launch.ensure().await?;
        self.check_mark().await?;
        match self
            .launch
            .call(&Request::Promote { epoch: ctx.epoch })
            .await?
        {
            Response::Ok => {}
            Response::Error { code, message } => return Err(refused(code, message)),
            other => {
                return Err(ProviderError::Other(format!(
                    "mirror process answered {other:?} to promote"
                )))
            }
        }
        if let Some(dev) = &self.launch.nbd_device {
            attach(dev, &self.launch).await?;
        }
        Ok(())
    }

    async fn deactivate(&self, _ctx: &ActionContext) -> Result<(), ProviderError> {
        if self.launch.status().await.is_err() {
            // No process: nothing is served.
            return Ok(());
        }
        if let Some(dev) = &self.launch.nbd_device {
            detach(dev).await?;
        }
        match self.launch.call(&Request::Demote).await? {
            Response::Ok => Ok(()),
            Response::Error { code, message } => Err(refused(code, message)),
            other => Err(ProviderError::Other(format!(
                "mirror process answered {other:?} to demote"
            ))),
        }
    }

    async fn check(&self, _ctx: &ActionContext) -> Result<CheckOutcome, ProviderError> {
        let Ok(s) = self.launch.status().await else {
            return Ok(CheckOutcome::Inactive);
        };
        if s.role != "primary" {
            return Ok(CheckOutcome::Inactive);
        }
        if s.fenced {
            return Ok(CheckOutcome::Degraded(
                "the peer took over at a higher epoch: writes are refused here".into(),
            ));
        }
        if !s.nbd_serving {
            return Ok(CheckOutcome::Degraded(format!(
                "primary but not serving NBD at {}",
                s.nbd
            )));
        }
        Ok(CheckOutcome::Active)
    }
}

/// Attach the kernel's NBD client to the volume (`nbd-client`); a clear error when the
/// kernel has no nbd module.
pub async fn attach(dev: &Path, launch: &Launch) -> Result<(), ProviderError> {
    if !Path::new("/sys/module/nbd").exists() {
        return Err(ProviderError::Other(format!(
            "cannot attach {}: the kernel's nbd module is not loaded (run `modprobe nbd`, or remove `nbd_device` and let the application speak NBD to {})",
            dev.display(),
            launch.nbd
        )));
    }
    let mut cmd = tokio::process::Command::new("nbd-client");
    match launch.nbd.split_once(':') {
        Some(("unix", p)) => {
            cmd.arg("-unix").arg(p);
        }
        Some(("tcp", a)) => {
            let (host, port) = a.rsplit_once(':').unwrap_or((a, "10809"));
            cmd.arg(host).arg(port);
        }
        _ => {}
    }
    cmd.arg(dev).arg("-N").arg(&launch.resource).arg("-persist");
    let out = cmd.output().await.map_err(|e| {
        ProviderError::Other(format!("cannot run nbd-client (package nbd-client): {e}"))
    })?;
    if !out.status.success() {
        return Err(ProviderError::Other(format!(
            "nbd-client failed to attach {}: {}",
            dev.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

async fn detach(dev: &Path) -> Result<(), ProviderError> {
    if !Path::new("/sys/module/nbd").exists() {
        return Ok(());
    }
    let out = tokio::process::Command::new("nbd-client")
        .arg("-d")
        .arg(dev)
        .output()
        .await
        .map_err(|e| ProviderError::Other(format!("cannot run nbd-client: {e}")))?;
    if !out.status.success() {
        return Err(ProviderError::Other(format!(
            "nbd-client failed to detach {}: {}",
            dev.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// `mirror-disk` monitor: the process answers, its store works, it is not fenced.
/// `mirror-connect` monitor: the link to the peer is up and not in split brain.
#[derive(Debug)]
pub struct MirrorProbe {
    pub kind: &'static str,
    pub launch: Launch,
}

#[async_trait]
impl Probe for MirrorProbe {
    fn kind(&self) -> &'static str {
        self.kind
    }
    async fn probe(&self, _ctx: &ProbeContext) -> Result<ProbeOk, ProviderError> {
        let s = self
            .launch
            .status()
            .await
            .map_err(|e| ProviderError::Unhealthy(format!("mirror process: {e}")))?;
        if self.kind == "mirror-connect" {
            return match s.connection {
                baton_mirror::volume::Conn::Connected => Ok(ProbeOk {
                    detail: Some(format!(
                        "{} to {}, {}",
                        if s.in_sync { "in sync" } else { "resyncing" },
                        s.peer,
                        s.mode
                    )),
                }),
                baton_mirror::volume::Conn::SplitBrain => Err(ProviderError::Unhealthy(
                    "mirror in split brain: both sides wrote (BTN-7006)".into(),
                )),
                _ => Err(ProviderError::Unhealthy(format!(
                    "mirror link to {} down{}",
                    s.peer,
                    s.last_error.map(|e| format!(": {e}")).unwrap_or_default()
                ))),
            };
        }
        if s.fenced {
            return Err(ProviderError::Unhealthy(
                "the peer took over at a higher epoch".into(),
            ));
        }
        Ok(ProbeOk {
            detail: Some(format!(
                "{} {}, disk {:?}, {} bytes out of sync",
                s.role, s.mode, s.disk, s.out_of_sync_bytes
            )),
        })
    }
}

/// A mirror monitor on a server outside the mirror's group: nothing to watch there.
#[derive(Debug)]
pub struct NotHere {
    pub kind: &'static str,
    pub group: String,
}

#[async_trait]
impl Probe for NotHere {
    fn kind(&self) -> &'static str {
        self.kind
    }
    async fn probe(&self, _ctx: &ProbeContext) -> Result<ProbeOk, ProviderError> {
        Ok(ProbeOk {
            detail: Some(format!("not a server of group {}", self.group)),
        })
    }
}

/// The mirror resources of this server's groups: (group, resource).
pub fn mirrors_of(cfg: &Config, me: &str) -> Vec<(String, String)> {
    cfg.groups
        .iter()
        .filter(|g| g.servers.iter().any(|s| s == me))
        .flat_map(|g| {
            g.resources
                .iter()
                .filter(|r| r.kind == RESOURCE_KIND)
                .map(|r| (g.name.clone(), r.name.clone()))
        })
        .collect()
}

/// Context the runtime gives the mirror drivers.
#[derive(Debug, Clone)]
pub struct MirrorCtx {
    pub config_file: PathBuf,
    pub state_dir: PathBuf,
    pub keys: Vec<ClusterKey>,
    pub agent: AgentHandle,
}

/// Build the `Launch` of a mirror resource.
pub fn launch_for(
    cfg: &Config,
    me: &str,
    group: &str,
    resource: &str,
    ctx: &MirrorCtx,
) -> Result<Launch, String> {
    let spec = resolve(cfg, &ctx.state_dir, me, group, resource, &ctx.keys)?;
    Ok(Launch::new(&ctx.config_file, &ctx.state_dir, me, &spec))
}

/// Keep a resource's mirror process running (re-adopting one that runs), renew its
/// write lease while this server holds the group with quorum, and raise its events in
/// the alert log.
pub async fn watch(
    launch: Launch,
    shared: Arc<crate::shared::Shared>,
    lease_ms: u64,
    hold_ms: u64,
    interval: Duration,
) {
    let mut seen: Option<u64> = None;
    let mut last_pid = None;
    loop {
        match launch.ensure().await {
            Ok(started) => {
                if let Ok(s) = launch.status().await {
                    if last_pid != Some(s.pid) {
                        if !started && last_pid.is_none() {
                            shared.raise(mirror_event(
                                &shared,
                                &launch,
                                &baton_core::events::MIRROR_STARTED,
                                format!(
                                    "adopted the running mirror process {} ({} {})",
                                    s.pid, s.role, s.mode
                                ),
                            ));
                        }
                        last_pid = Some(s.pid);
                        // A new process starts its event numbers again.
                        seen = if started {
                            Some(0)
                        } else {
                            seen.or(Some(s.events_seq))
                        };
                    }
                }
            }
            Err(e) => {
                tracing::warn!(group = %launch.group, resource = %launch.resource, "mirror process: {e}");
            }
        }
        if let Some(e) = shared.engine_status().await {
            let holds = e.quorum
                && e.groups.iter().any(|g| {
                    g.name == launch.group
                        && matches!(
                            g.per_server.get(&shared.server),
                            Some(baton_core::engine::GroupState::Activating)
                                | Some(baton_core::engine::GroupState::Online)
                                | Some(baton_core::engine::GroupState::Adopting)
                        )
                });
            let peer_down = holds
                && e.servers
                    .iter()
                    .filter(|s| !s.is_self && s.name == launch.peer)
                    .all(|s| !s.up);
            let key = marks::key(&launch.group, &launch.resource);
            let known = e.marks.get(&key);
            let mark = Mark::decode(known.map_or(0, |m| m.value));
            let bit = marks::bit(&launch.server, &launch.peer);
            if let Ok(s) = launch.status().await {
                if let Some(value) =
                    wanted_mark(mark, bit, &s, peer_down).and_then(|c| mark.raised(c))
                {
                    let _ = shared
                        .tx
                        .send(crate::shared::LoopMsg::Mark {
                            key: key.clone(),
                            value,
                        })
                        .await;
                }
            }
            if holds {
                // Sync writes go on without the peer only once a quorum remembers that
                // this side alone holds the newest data (`baton_core::marks`).
                let alone_known = mark.current == bit && known.is_some_and(|m| m.quorum);
                let _ = launch
                    .call(&Request::Lease {
                        ms: lease_ms,
                        peer_down: peer_down && alone_known,
                        hold_ms,
                    })
                    .await;
            }
        }
        if let Some(since) = seen {
            if let Ok(Response::Events { events }) = launch.call(&Request::Events { since }).await {
                for e in events {
                    seen = Some(e.seq);
                    shared.raise(mirror_event(&shared, &launch, e.kind.def(), e.message));
                }
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// The data mark this side wants recorded, from its mirror process's state. Only the
/// primary raises it: `BOTH` when linked and in sync (its peer has every write it
/// acknowledged); this side alone when it writes (or is about to write, `peer_down`)
/// what the peer does not get: the link is down or paused with regions out of sync,
/// or it was promoted while the mark excluded it (forced). `None`: leave it. (A
/// secondary's "in sync" can be stale: cut off, it may not have noticed yet that the
/// link is gone while the primary already writes alone.)
fn wanted_mark(mark: Mark, bit: u8, s: &Status, peer_down: bool) -> Option<u8> {
    use baton_mirror::volume::Conn;
    if s.role != "primary" || s.fenced {
        return None;
    }
    let connected = s.connection == Conn::Connected;
    if connected && s.in_sync && !s.split_brain && !s.paused && !peer_down {
        return Some(marks::BOTH);
    }
    let writes_alone = (!connected || s.paused) && (s.out_of_sync_bytes > 0 || !mark.includes(bit));
    (peer_down || writes_alone).then_some(bit)
}

fn mirror_event(
    shared: &crate::shared::Shared,
    launch: &Launch,
    def: &baton_core::events::EventDef,
    message: String,
) -> Event {
    let mut e = Event::new(def, message)
        .group(&launch.group)
        .resource(&launch.resource);
    e.cluster = shared.config().cluster_name.clone();
    e.server = shared.server.clone();
    e
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A mirror process's status: `role`, linked or not, in sync or not, bytes out of
    /// sync, paused.
    fn st(role: &str, connected: bool, in_sync: bool, dirty: u64, paused: bool) -> Status {
        serde_json::from_value(serde_json::json!({
            "cluster": "c", "group": "db", "resource": "data", "server": "a", "peer": "b",
            "pid": 1, "role": role, "epoch": 1, "max_epoch": 1, "fenced": false,
            "connection": if connected { "connected" } else { "disconnected" },
            "mode": "sync", "disk": "up_to_date", "peer_disk": null, "in_sync": in_sync,
            "out_of_sync_bytes": dirty, "size": 1, "region_size": 4096, "generation": "g",
            "history": [], "split_brain": false, "paused": paused, "force_primary": false,
            "lease_ms_left": null, "nbd": "", "nbd_serving": true,
            "resync": {"running": false, "source": false, "total_bytes": 0, "done_bytes": 0,
                       "sent_bytes": 0, "started_ms": 0, "finished_ms": null,
                       "rate_bytes_per_s": 0, "remaining_s": null},
            "counters": {}, "last_error": null, "events_seq": 0
        }))
        .unwrap()
    }

    #[test]
    fn only_the_primary_raises_the_data_mark_and_only_when_it_says_something_new() {
        let none = Mark::decode(0);
        let bit = marks::bit("a", "b");
        let alone = Mark::decode(none.raised(bit).unwrap());
        // Linked and in sync: both (already so with no mark).
        assert_eq!(
            wanted_mark(alone, bit, &st("primary", true, true, 0, false), false),
            Some(marks::BOTH)
        );
        assert_eq!(none.raised(marks::BOTH), None);
        // The peer's server is down: this side alone, before any write goes on.
        assert_eq!(
            wanted_mark(none, bit, &st("primary", true, true, 0, false), true),
            Some(bit)
        );
        // Link down with writes the peer lacks, or paused with some: this side alone.
        assert_eq!(
            wanted_mark(none, bit, &st("primary", false, false, 4096, false), false),
            Some(bit)
        );
        assert_eq!(
            wanted_mark(none, bit, &st("primary", true, false, 4096, true), false),
            Some(bit)
        );
        // Link down, nothing written yet: the mark stays (both still hold the newest data).
        assert_eq!(
            wanted_mark(none, bit, &st("primary", false, false, 0, false), false),
            None
        );
        // Promoted (forced) while the mark excluded it: this side alone at once.
        let other = Mark::decode(none.raised(marks::bit("b", "a")).unwrap());
        assert_eq!(
            wanted_mark(other, bit, &st("primary", false, false, 0, false), false),
            Some(bit)
        );
        // A secondary never raises it, even when it believes it is in sync: cut off, it may
        // not have noticed yet that the primary writes alone.
        assert_eq!(
            wanted_mark(
                alone,
                marks::bit("b", "a"),
                &st("secondary", true, true, 0, false),
                false
            ),
            None
        );
    }

    fn check(group_servers: &str, resource: &str, monitor: &str) -> Result<Config, String> {
        let text = format!(
            "[cluster]\nname = \"orders\"\nkey_file = \"k\"\n\n\
             [[server]]\nname = \"a\"\ninterconnects = [\"10.0.0.1\", \"10.1.0.1\"]\napi = \"10.0.0.1:7420\"\n\n\
             [[server]]\nname = \"b\"\ninterconnects = [\"10.0.0.2\", \"10.1.0.2\"]\napi = \"10.0.0.2:7420\"\n\n\
             [[server]]\nname = \"c\"\ninterconnects = [\"10.0.0.3\", \"10.1.0.3\"]\napi = \"10.0.0.3:7420\"\n\n\
             [[group]]\nname = \"db\"\nservers = {group_servers}\n\n\
             [[group.resource]]\nkind = \"mirror-disk\"\nname = \"data\"\n{resource}\n{monitor}"
        );
        let reg = crate::catalog::default_kinds();
        baton_core::config::load_str("baton.toml", &text, &crate::catalog::ProviderCatalog(&reg))
            .map(|l| l.config)
            .map_err(|e| {
                e.diagnostics
                    .iter()
                    .map(|d| format!("{}:{}: {}: {}", d.file, d.line, d.key, d.message))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
    }

    #[test]
    fn config_check_knows_the_mirror_kinds() {
        let ok = "device = \"/var/lib/baton/data.img\"\nsize = \"1GiB\"\ninterconnect = 1";
        let cfg = check(
            "[\"a\", \"b\"]",
            ok,
            "[[monitor]]\nkind = \"mirror-connect\"\nname = \"link\"\nresource = \"data\"\n",
        )
        .unwrap();
        // The addresses and paths the mirror process of `a` gets.
        let k = ClusterKey::from_bytes(b"0123456789abcdef0123456789abcdef").unwrap();
        let spec = resolve(&cfg, Path::new("/var/lib/baton"), "a", "db", "data", &[k]).unwrap();
        assert_eq!(spec.listen, "10.1.0.1:7790".parse().unwrap());
        assert_eq!(spec.peer_addr, "10.1.0.2:7790".parse().unwrap());
        assert_eq!(spec.peer, "b");
        assert_eq!(spec.control, Path::new("/var/lib/baton/mirror/db.data.ctl"));
        assert_eq!(
            spec.nbd.to_string(),
            "unix:/var/lib/baton/mirror/db.data.nbd"
        );
        assert_eq!(spec.keys.len(), 1);

        // Three servers: refused, at the resource's kind.
        let e = check("[\"a\", \"b\", \"c\"]", ok, "").unwrap_err();
        assert!(
            e.contains("group[0].resource[0].kind") && e.contains("exactly two servers"),
            "{e}"
        );
        // A bad key names itself and its line.
        let e = check("[\"a\", \"b\"]", "device = \"/d\"\nmode = \"fastest\"", "").unwrap_err();
        assert!(
            e.contains("group[0].resource[0].mode") && e.contains("unknown value `fastest`"),
            "{e}"
        );
        let e = check("[\"a\", \"b\"]", "size = \"1GiB\"", "").unwrap_err();
        assert!(e.contains("missing required key `device`"), "{e}");
        // Interconnects are numbered from 0: the servers have 0 and 1.
        let e = check("[\"a\", \"b\"]", "device = \"/d\"\ninterconnect = 2", "").unwrap_err();
        assert!(
            e.contains("baton.toml:28: group[0].resource[0].interconnect")
                && e.contains("has 2 interconnect(s), numbered 0 to 1"),
            "{e}"
        );
        // Per server, named under the server's table; `address` needs no interconnect.
        let e = check(
            "[\"a\", \"b\"]",
            "device = \"/d\"\n[group.resource.server.b]\ninterconnect = 5",
            "",
        )
        .unwrap_err();
        assert!(
            e.contains("group[0].resource[0].server.b.interconnect"),
            "{e}"
        );
        check(
            "[\"a\", \"b\"]",
            "device = \"/d\"\ninterconnect = 7\n[group.resource.server.a]\naddress = \"10.9.0.1:7790\"\n[group.resource.server.b]\naddress = \"10.9.0.2:7790\"",
            "",
        )
        .unwrap();
        // A mirror monitor without `resource`, or with a key of its own.
        let e = check(
            "[\"a\", \"b\"]",
            ok,
            "[[monitor]]\nkind = \"mirror-disk\"\nname = \"m\"\n",
        )
        .unwrap_err();
        assert!(e.contains("needs `resource = \"NAME\"`"), "{e}");
        let e = check(
            "[\"a\", \"b\"]",
            ok,
            "[[monitor]]\nkind = \"mirror-disk\"\nname = \"m\"\nresource = \"data\"\nport = 1\n",
        )
        .unwrap_err();
        assert!(e.contains("unknown key `port`"), "{e}");
    }

    #[tokio::test]
    async fn attaching_without_the_nbd_module_says_so() {
        let launch = Launch {
            config: PathBuf::from("/etc/baton/baton.toml"),
            state_dir: PathBuf::from("/var/lib/baton"),
            server: "a".into(),
            group: "db".into(),
            resource: "data".into(),
            control: PathBuf::from("/nonexistent/db.data.ctl"),
            nbd_device: Some(PathBuf::from("/dev/nbd0")),
            nbd: "unix:/var/lib/baton/mirror/db.data.nbd".into(),
            peer: "b".into(),
        };
        if Path::new("/sys/module/nbd").exists() {
            // This kernel has the module: the error path cannot be reached here (the
            // test machines' kernels do not have it).
            eprintln!("skipped: the nbd module is loaded on this machine");
            return;
        }
        let e = attach(Path::new("/dev/nbd0"), &launch).await.unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("nbd module is not loaded")
                && m.contains("modprobe nbd")
                && m.contains("/dev/nbd0"),
            "{m}"
        );
        // Detaching is a no-op then (nothing can be attached).
        assert!(detach(Path::new("/dev/nbd0")).await.is_ok());
    }

    #[test]
    fn link_keys_differ_per_mirror() {
        let k = ClusterKey::from_bytes(b"0123456789abcdef0123456789abcdef").unwrap();
        let a = link_key(&k, "c", "db", "data");
        let b = link_key(&k, "c", "db", "logs");
        assert_ne!(a.0, b.0);
        assert_eq!(a.0, link_key(&k, "c", "db", "data").0);
    }
}
