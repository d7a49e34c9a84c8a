//! The mirror process of one `mirror-disk` resource on one server. It runs beside the
//! agent (started by it, in a process group of its own) and outlives an agent restart,
//! so the application's NBD connection and the replication never depend on the agent
//! being up; the agent re-adopts it through the control socket.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::sync::Mutex as AsyncMutex;
use tokio::task::JoinHandle;

use crate::control::{Request, Response, ResyncStatus, Status, MAX_LINE};
use crate::events::{EventKind, EventLog};
use crate::link::{self, Compression, LinkKey};
use crate::meta::{DiskState, Meta};
use crate::nbd::{self, Export};
use crate::params::{CompressionKind, MirrorDiskParams, Mode};
use crate::session::{self, LinkSettings};
use crate::store::{BlockStore, FileStore};
use crate::volume::{Settings, Volume};

/// Where the application's NBD client connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NbdEndpoint {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl std::fmt::Display for NbdEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NbdEndpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            NbdEndpoint::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// Everything the process needs, resolved by the agent from the configuration.
#[derive(Clone)]
pub struct Spec {
    pub cluster: String,
    pub group: String,
    pub resource: String,
    pub server: String,
    pub peer: String,
    pub params: MirrorDiskParams,
    pub meta_path: PathBuf,
    pub listen: SocketAddr,
    pub peer_addr: SocketAddr,
    pub nbd: NbdEndpoint,
    pub control: PathBuf,
    /// The first connects; all are accepted (key rotation).
    pub keys: Vec<LinkKey>,
}

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spec")
            .field("group", &self.group)
            .field("resource", &self.resource)
            .field("server", &self.server)
            .field("listen", &self.listen)
            .field("peer_addr", &self.peer_addr)
            .finish()
    }
}

/// Why the process could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("backing store {path}: {why}")]
    Store { path: String, why: String },
    #[error("mirror metadata: {0}")]
    Meta(#[from] crate::meta::MetaError),
    #[error("cannot listen on {what}: {why}")]
    Bind { what: String, why: String },
}

impl DaemonError {
    pub fn code(&self) -> &'static str {
        match self {
            DaemonError::Store { .. } => "mirror_store",
            DaemonError::Meta(e) => e.code(),
            DaemonError::Bind { .. } => "mirror_bind",
        }
    }
}

/// Open (or create, sparse) the backing store; `(store, size, created)`.
pub fn open_store(p: &MirrorDiskParams) -> Result<(FileStore, u64, bool), DaemonError> {
    let path = &p.device;
    let err = |why: String| DaemonError::Store {
        path: path.display().to_string(),
        why,
    };
    let mut created = false;
    if !path.exists() {
        let Some(size) = p.size else {
            return Err(err(
                "does not exist (set `size` to have it created as a sparse file)".into(),
            ));
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| err(format!("cannot create its directory: {e}")))?;
        }
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| err(format!("cannot create: {e}")))?;
        f.set_len(size)
            .map_err(|e| err(format!("cannot size to {size} bytes: {e}")))?;
        f.sync_all().map_err(|e| err(e.to_string()))?;
        created = true;
    }
    let store = FileStore::open_sized(path, p.size).map_err(|e| err(e.to_string()))?;
    let size = store.size();
    if size == 0 || size % 4096 != 0 {
        return Err(err(format!(
            "its size ({size} bytes) must be a positive multiple of 4KiB"
        )));
    }
    Ok((store, size, created))
}

struct Daemon {
    spec: Spec,
    vol: Arc<Volume>,
    link: LinkSettings,
    session: AsyncMutex<Option<JoinHandle<()>>>,
    nbd: AsyncMutex<Option<JoinHandle<()>>>,
    force_primary: std::sync::atomic::AtomicBool,
    refused: std::sync::Mutex<(u64, Option<crate::clock::Instant>)>,
    stop: tokio::sync::Notify,
}

/// Run until told to stop (control `shutdown`, or SIGTERM while secondary).
pub async fn run(spec: Spec) -> Result<(), DaemonError> {
    let (store, size, created) = open_store(&spec.params)?;
    let region = u32::try_from(spec.params.region_size).unwrap_or(65536);
    if let Some(dir) = spec.meta_path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| DaemonError::Store {
            path: dir.display().to_string(),
            why: e.to_string(),
        })?;
    }
    let meta = if spec.meta_path.exists()
        && std::fs::metadata(&spec.meta_path)
            .map(|m| m.len())
            .unwrap_or(0)
            > 0
    {
        let m = Meta::open(&spec.meta_path)?;
        let sb = m.super_block();
        if sb.size != size || sb.region_size != region {
            return Err(DaemonError::Store {
                path: spec.params.device.display().to_string(),
                why: format!(
                    "the metadata at {} is for a volume of {} bytes with {}-byte regions, the store has {size} bytes and the config says {region}",
                    spec.meta_path.display(),
                    sb.size,
                    sb.region_size
                ),
            });
        }
        m
    } else {
        let m = Meta::create(
            &spec.meta_path,
            size,
            region,
            rand::random(),
            crate::clock::unix_ms(),
        )?;
        let mut m = m;
        if !created {
            // A store we did not create holds unknown bytes: all of it differs from the
            // peer until the first resync.
            m.bitmap().mark_all()?;
        }
        // A new volume is usable as it is (zeroes, or the device's bytes the operator
        // chose); the first meeting decides who copies to whom.
        m.update(|s| s.disk = DiskState::Consistent)?;
        m
    };
    let settings = Settings {
        server: spec.server.clone(),
        mode: spec.params.mode,
        on_peer_loss: spec.params.on_peer_loss,
        ack_timeout: spec.params.ack_timeout,
        queue_size: spec.params.queue_size,
        bandwidth_limit: spec.params.bandwidth_limit,
    };
    let store: Arc<dyn BlockStore> = Arc::new(store);
    let vol = Arc::new(Volume::new(settings, store, meta, EventLog::default()));
    // A restarted process starts as secondary: the agent promotes it again if the
    // group is still here.
    vol.state().primary = None;
    vol.update_meta(|s| s.primary = false)
        .map_err(|e| DaemonError::Store {
            path: spec.meta_path.display().to_string(),
            why: e.to_string(),
        })?;
    let compression = match spec.params.compression {
        CompressionKind::None => Compression::None,
        CompressionKind::Lz4 => Compression::Lz4,
        CompressionKind::Zstd => Compression::Zstd(spec.params.zstd_level),
    };
    let d = Arc::new(Daemon {
        link: LinkSettings {
            compression,
            bandwidth_limit: spec.params.bandwidth_limit,
        },
        spec,
        vol,
        session: AsyncMutex::new(None),
        nbd: AsyncMutex::new(None),
        force_primary: std::sync::atomic::AtomicBool::new(false),
        refused: std::sync::Mutex::new((0, None)),
        stop: tokio::sync::Notify::new(),
    });
    let control = bind_control(&d.spec.control)?;
    let listener = TcpListener::bind(d.spec.listen)
        .await
        .map_err(|e| DaemonError::Bind {
            what: format!("mirror address {}", d.spec.listen),
            why: e.to_string(),
        })?;
    d.vol.events.raise(
        EventKind::Started,
        format!(
            "mirror process {} started: volume {} bytes, mirror link {} <-> {} ({}), NBD at {}",
            std::process::id(),
            size,
            d.spec.listen,
            d.spec.peer_addr,
            d.spec.peer,
            d.spec.nbd
        ),
    );
    let mut tasks = vec![
        tokio::spawn(accept_loop(d.clone(), listener)),
        tokio::spawn(control_loop(d.clone(), control)),
        tokio::spawn(persist_loop(d.clone())),
    ];
    if d.spec.server < d.spec.peer {
        tasks.push(tokio::spawn(connect_loop(d.clone())));
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| DaemonError::Bind {
            what: "SIGTERM".into(),
            why: e.to_string(),
        })?;
    tokio::select! {
        _ = d.stop.notified() => {}
        _ = term.recv() => {}
    }
    for t in &tasks {
        t.abort();
    }
    if let Some(h) = d.session.lock().await.take() {
        // End the session cleanly (the peer sees the link close), then make sure.
        let s = d.vol.state().session;
        d.vol.kick(s);
        d.vol.kick.notify_waiters();
        let abort = h.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), h)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    stop_nbd(&d).await;
    let _ = d.vol.store.flush();
    let _ = d.vol.bitmap().persist();
    let _ = std::fs::remove_file(&d.spec.control);
    Ok(())
}

fn bind_control(path: &Path) -> Result<UnixListener, DaemonError> {
    let err = |why: String| DaemonError::Bind {
        what: format!("control socket {}", path.display()),
        why,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    // A socket left by a process that died: nobody answers on it.
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(err("another mirror process answers on it".into()));
    }
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path).map_err(|e| err(e.to_string()))?;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    Ok(l)
}

async fn persist_loop(d: Arc<Daemon>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let bm = d.vol.bitmap();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || bm.persist()).await {
            d.vol.events.raise(
                EventKind::DiskError,
                format!("writing the dirty bitmap: {e}"),
            );
        }
    }
}

fn refused(d: &Daemon, e: &link::LinkError) {
    let code = e.code();
    if code == "mirror_auth" {
        d.vol
            .counters
            .refused_auth
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    } else {
        d.vol
            .counters
            .refused_protocol
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let now = crate::clock::now();
    let mut g = d.refused.lock().unwrap_or_else(|p| p.into_inner());
    g.0 += 1;
    if g.1
        .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
    {
        let n = g.0;
        g.0 = 0;
        g.1 = Some(now);
        drop(g);
        d.vol.events.raise(
            EventKind::PeerRefused,
            format!("refused {n} connection(s) on the mirror port ({code}: {e}); nothing they sent was written"),
        );
    }
}

async fn accept_loop(d: Arc<Daemon>, listener: TcpListener) {
    loop {
        let Ok((stream, _addr)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let d2 = d.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let me = session::hello(&d2.vol);
            let Ok(bytes) = serde_json::to_vec(&me) else {
                return;
            };
            match link::accept(
                stream,
                &d2.spec.keys,
                &bytes,
                d2.spec.params.connect_timeout,
            )
            .await
            {
                Ok((tx, rx, peer)) => start_session(d2, tx, rx, me, &peer).await,
                Err(e) => refused(&d2, &e),
            }
        });
    }
}

async fn connect_loop(d: Arc<Daemon>) {
    loop {
        let running = d
            .session
            .lock()
            .await
            .as_ref()
            .is_some_and(|h| !h.is_finished());
        if !running {
            let t = d.spec.params.connect_timeout;
            if let Ok(Ok(stream)) =
                tokio::time::timeout(t, connect_from(d.spec.listen, d.spec.peer_addr)).await
            {
                let _ = stream.set_nodelay(true);
                let me = session::hello(&d.vol);
                if let Ok(bytes) = serde_json::to_vec(&me) {
                    match link::connect(stream, &d.spec.keys[0], &bytes, t).await {
                        Ok((tx, rx, peer)) => start_session(d.clone(), tx, rx, me, &peer).await,
                        Err(e) => refused(&d, &e),
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Connect from this server's mirror address (the interconnect the configuration names),
/// not from whatever source address the routing table would pick.
async fn connect_from(local: SocketAddr, peer: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = if peer.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    sock.bind(SocketAddr::new(local.ip(), 0))?;
    sock.connect(peer).await
}

async fn start_session<R, W>(
    d: Arc<Daemon>,
    tx: link::LinkTx<W>,
    rx: link::LinkRx<R>,
    me: crate::proto::Hello,
    peer: &[u8],
) where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let peer: crate::proto::Hello = match serde_json::from_slice(peer) {
        Ok(h) => h,
        Err(e) => {
            d.vol
                .counters
                .refused_protocol
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!("mirror peer's hello is not understood: {e}");
            return;
        }
    };
    if peer.server != d.spec.peer {
        d.vol.events.raise(
            EventKind::PeerMismatch,
            format!(
                "a mirror peer calling itself `{}` connected; expected `{}`",
                peer.server, d.spec.peer
            ),
        );
        return;
    }
    let mut slot = d.session.lock().await;
    if let Some(old) = slot.take() {
        if !old.is_finished() {
            // The peer connected again: the old session is dead on its side.
            let s = d.vol.state().session;
            d.vol.kick(s);
            d.vol.kick.notify_waiters();
            let _ = tokio::time::timeout(Duration::from_secs(2), old).await;
        }
    }
    let vol = d.vol.clone();
    let link = d.link;
    *slot = Some(tokio::spawn(async move {
        if let Err(e) = session::run(vol, tx, rx, me, peer, link).await {
            tracing::info!("mirror session ended: {e}");
        }
    }));
}

async fn control_loop(d: Arc<Daemon>, l: UnixListener) {
    loop {
        let Ok((s, _)) = l.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let d2 = d.clone();
        tokio::spawn(async move {
            let (r, mut w) = s.into_split();
            let mut line = String::new();
            let mut r = BufReader::new(r).take(MAX_LINE as u64);
            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let resp = match serde_json::from_str::<Request>(&line) {
                Ok(req) => handle(&d2, req).await,
                Err(e) => Response::error("mirror_bad_request", e.to_string()),
            };
            if let Ok(mut b) = serde_json::to_vec(&resp) {
                b.push(b'\n');
                let _ = w.write_all(&b).await;
            }
        });
    }
}

async fn handle(d: &Arc<Daemon>, req: Request) -> Response {
    let vol = &d.vol;
    match req {
        Request::Status => Response::Status(Box::new(status(d).await)),
        Request::Events { since } => Response::Events {
            events: vol.events.since(since),
        },
        Request::Lease {
            ms,
            peer_down,
            hold_ms,
        } => {
            let now = crate::clock::now();
            let mut st = vol.state();
            st.lease_until = Some(now + Duration::from_millis(ms));
            st.peer_down_since = if peer_down {
                st.peer_down_since.or(Some(now))
            } else {
                None
            };
            st.peer_down_hold = Duration::from_millis(hold_ms);
            Response::Ok
        }
        Request::Promote { epoch } => promote(d, epoch).await,
        Request::Demote => {
            demote(d).await;
            Response::Ok
        }
        Request::Pause => {
            let was = std::mem::replace(&mut vol.state().paused, true);
            if !was {
                vol.state().in_sync = false;
                vol.send_state(&crate::proto::StateMsg::Outdated);
                vol.events.raise(
                    EventKind::Paused,
                    "replication paused: writes go on locally and are marked out of sync".into(),
                );
            }
            Response::Ok
        }
        Request::Resume => {
            let was = std::mem::replace(&mut vol.state().paused, false);
            if was {
                vol.events.raise(
                    EventKind::Resumed,
                    "replication resumed: the regions written meanwhile are copied".into(),
                );
                vol.wake.notify_waiters();
            }
            Response::Ok
        }
        Request::ForcePrimary => {
            d.force_primary
                .store(true, std::sync::atomic::Ordering::SeqCst);
            Response::Ok
        }
        Request::DiscardLocal => {
            if vol.state().primary.is_some() {
                return Response::error(
                    "mirror_primary",
                    "this side is primary: move the group to the side to keep first",
                );
            }
            let r = tokio::task::block_in_place(|| {
                vol.update_meta(|s| {
                    s.split_brain = false;
                    s.disk = DiskState::Outdated;
                })
            });
            if let Err(e) = r {
                return Response::error("mirror_meta_io", e.to_string());
            }
            vol.state().discard_local = true;
            vol.events.raise(
                EventKind::SplitBrainResolved,
                "this side's changes since the split are discarded: it resyncs from the peer"
                    .into(),
            );
            let session = vol.state().session;
            vol.kick(session);
            vol.kick.notify_waiters();
            Response::Ok
        }
        Request::Shutdown => {
            if vol.state().primary.is_some() {
                return Response::error(
                    "mirror_primary",
                    "the volume is primary here: demote first",
                );
            }
            d.stop.notify_one();
            Response::Ok
        }
    }
}

async fn promote(d: &Arc<Daemon>, epoch: u64) -> Response {
    let vol = &d.vol;
    let sb = vol.super_block();
    {
        let st = vol.state();
        if st.primary == Some(epoch) && !st.fenced {
            return Response::Ok;
        }
    }
    if epoch < sb.max_epoch {
        return Response::error(
            "mirror_stale_epoch",
            format!(
                "epoch {epoch} is older than {} seen by the mirror",
                sb.max_epoch
            ),
        );
    }
    let target = vol.state().target;
    let force = d
        .force_primary
        .swap(false, std::sync::atomic::Ordering::SeqCst);
    let stale = sb.split_brain
        || target
        || matches!(sb.disk, DiskState::Outdated | DiskState::Inconsistent);
    if stale && !force {
        let why = if sb.split_brain {
            "the mirror is in split brain (both sides wrote)".to_string()
        } else {
            format!(
                "this server's copy is {} (the peer has newer data)",
                match sb.disk {
                    DiskState::Inconsistent => "inconsistent: a resync into it did not finish",
                    _ => "outdated",
                }
            )
        };
        vol.events.raise(
            EventKind::StaleRefused,
            format!("refused to become primary at epoch {epoch}: {why}"),
        );
        return Response::error(
            if sb.split_brain {
                "mirror_split_brain"
            } else {
                "mirror_stale"
            },
            format!(
                "{why}; `baton mirror force-primary {} --yes` accepts this data",
                d.spec.resource
            ),
        );
    }
    let r = tokio::task::block_in_place(|| {
        vol.update_meta(|s| {
            s.max_epoch = epoch;
            s.primary = true;
            if !stale && s.disk == DiskState::Consistent {
                s.disk = DiskState::UpToDate;
            }
            if stale {
                s.history = [s.current, s.history[0], s.history[1], s.history[2]];
                s.current = crate::meta::new_generation(s.current, rand::random());
                s.split_brain = false;
                s.disk = DiskState::UpToDate;
            }
        })
    });
    if let Err(e) = r {
        return Response::error("mirror_meta_io", e.to_string());
    }
    if stale {
        vol.events.raise(
            EventKind::ForcedPrimary,
            format!(
                "became primary at epoch {epoch} with data an operator accepted as it is (forced)"
            ),
        );
        // A session in progress was built on the old generations.
        let s = vol.state().session;
        vol.kick(s);
        vol.kick.notify_waiters();
    }
    let renegotiate = {
        let mut st = vol.state();
        // Async, and the peer was primary when last heard of (no clean demotion, which
        // would have come after all its writes): its unsent writes may be missing.
        let takeover = d.spec.params.mode == Mode::Async && st.primary.is_none() && st.peer_primary;
        if takeover {
            let t = crate::volume::Takeover {
                epoch,
                unix_ms: crate::clock::unix_ms(),
                peer_backlog_bytes: st.peer_backlog.map(|b| b.0),
                peer_report_unix_ms: st.peer_backlog.map(|b| b.1),
                link_lost_unix_ms: (st.conn != crate::volume::Conn::Connected)
                    .then_some(st.link_lost_ms)
                    .flatten(),
            };
            vol.events
                .raise(EventKind::AsyncTakeover, takeover_message(&t));
            st.takeover = Some(t);
        }
        st.primary = Some(epoch);
        st.fenced = false;
        st.target = false;
        st.conn == crate::volume::Conn::Connected && !st.source
    };
    if renegotiate {
        // The peer ran this session's resync; the new primary must be the source: meet
        // again (writes meanwhile wait for it, or go into the bitmap).
        let s = vol.state().session;
        vol.kick(s);
        vol.kick.notify_waiters();
    }
    vol.send_state(&crate::proto::StateMsg::Primary { epoch });
    vol.wake.notify_waiters();
    if let Err(e) = start_nbd(d).await {
        return Response::error("mirror_bind", e);
    }
    Response::Ok
}

/// What an async takeover without the old primary may have lost, in words.
fn takeover_message(t: &crate::volume::Takeover) -> String {
    let lost = match t.link_lost_unix_ms {
        Some(ms) => format!(
            "the link was lost {} ms earlier",
            t.unix_ms.saturating_sub(ms)
        ),
        None => "the link still looked up: the old primary stopped answering".into(),
    };
    match (t.peer_backlog_bytes, t.peer_report_unix_ms) {
        (Some(b), Some(at)) => format!(
            "became primary at epoch {} without the old primary ({lost}): at its last report ({} ms before the takeover) it had {b} bytes not confirmed here; those and any write it made after that report may be missing",
            t.epoch,
            t.unix_ms.saturating_sub(at)
        ),
        _ => format!(
            "became primary at epoch {} without the old primary ({lost}); it never reported its backlog, so how much of its last writes is missing is unknown",
            t.epoch
        ),
    }
}

async fn demote(d: &Arc<Daemon>) {
    stop_nbd(d).await;
    let vol = &d.vol;
    let was = vol.state().primary.take();
    let _ = tokio::task::block_in_place(|| {
        let _ = vol.store.flush();
        vol.update_meta(|s| s.primary = false)
    });
    if was.is_some() {
        vol.send_state(&crate::proto::StateMsg::Secondary);
    }
    vol.state().fenced = false;
}

async fn start_nbd(d: &Arc<Daemon>) -> Result<(), String> {
    let mut slot = d.nbd.lock().await;
    if slot.as_ref().is_some_and(|h| !h.is_finished()) {
        return Ok(());
    }
    let export = Export {
        name: d.spec.resource.clone(),
        store: d.vol.clone(),
        read_only: false,
    };
    let exports = Arc::new(vec![export]);
    let handle = match &d.spec.nbd {
        NbdEndpoint::Unix(p) => {
            let _ = std::fs::remove_file(p);
            let l =
                UnixListener::bind(p).map_err(|e| format!("NBD socket {}: {e}", p.display()))?;
            let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600));
            tokio::spawn(async move {
                let mut conns = tokio::task::JoinSet::new();
                loop {
                    tokio::select! {
                        a = l.accept() => if let Ok((s, _)) = a {
                            let ex = exports.clone();
                            conns.spawn(async move { let _ = nbd::serve(s, &ex).await; });
                        },
                        Some(_) = conns.join_next(), if !conns.is_empty() => {}
                    }
                }
            })
        }
        NbdEndpoint::Tcp(a) => {
            let l = TcpListener::bind(a)
                .await
                .map_err(|e| format!("NBD address {a}: {e}"))?;
            tokio::spawn(async move {
                let mut conns = tokio::task::JoinSet::new();
                loop {
                    tokio::select! {
                        a = l.accept() => if let Ok((s, _)) = a {
                            let _ = s.set_nodelay(true);
                            let ex = exports.clone();
                            conns.spawn(async move { let _ = nbd::serve(s, &ex).await; });
                        },
                        Some(_) = conns.join_next(), if !conns.is_empty() => {}
                    }
                }
            })
        }
    };
    *slot = Some(handle);
    Ok(())
}

/// Stop serving: the listener and every client connection end (the JoinSet is dropped
/// with the task, which aborts the connections).
async fn stop_nbd(d: &Arc<Daemon>) {
    if let Some(h) = d.nbd.lock().await.take() {
        h.abort();
        let _ = h.await;
    }
    if let NbdEndpoint::Unix(p) = &d.spec.nbd {
        let _ = std::fs::remove_file(p);
    }
}

async fn status(d: &Arc<Daemon>) -> Status {
    let vol = &d.vol;
    let sb = vol.super_block();
    let bm = vol.bitmap();
    let dirty = bm.dirty_count();
    let nbd_serving = d
        .nbd
        .lock()
        .await
        .as_ref()
        .is_some_and(|h| !h.is_finished());
    let st = vol.state();
    let c = &vol.counters;
    let ld = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let counters = [
        ("writes", ld(&c.writes)),
        ("bytes_written", ld(&c.bytes_written)),
        ("writes_replicated", ld(&c.writes_replicated)),
        ("writes_degraded", ld(&c.writes_degraded)),
        ("refused_auth", ld(&c.refused_auth)),
        ("refused_protocol", ld(&c.refused_protocol)),
        ("refused_epoch", ld(&c.refused_epoch)),
        ("queue_full", ld(&c.queue_full)),
        ("resync_bytes", ld(&c.resync_bytes)),
        ("link_bytes_sent", ld(&c.link_bytes_sent)),
        ("link_raw_bytes_sent", ld(&c.link_raw_bytes_sent)),
        ("compression_skipped", ld(&c.compression_skipped)),
        ("async_discarded_bytes", ld(&c.async_discarded_bytes)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let now = crate::clock::now();
    Status {
        cluster: d.spec.cluster.clone(),
        group: d.spec.group.clone(),
        resource: d.spec.resource.clone(),
        server: d.spec.server.clone(),
        peer: d.spec.peer.clone(),
        pid: std::process::id(),
        role: if st.primary.is_some() {
            "primary"
        } else {
            "secondary"
        }
        .into(),
        epoch: st.primary,
        max_epoch: sb.max_epoch,
        fenced: st.fenced,
        connection: st.conn.clone(),
        mode: match d.spec.params.mode {
            Mode::Sync => "sync",
            Mode::Async => "async",
        }
        .into(),
        disk: sb.disk,
        peer_disk: st.peer_disk,
        in_sync: st.in_sync,
        out_of_sync_bytes: (dirty * u64::from(sb.region_size)).min(sb.size),
        size: sb.size,
        region_size: sb.region_size,
        generation: format!("{:016x}", sb.current),
        history: sb
            .history
            .iter()
            .filter(|g| **g != 0)
            .map(|g| format!("{g:016x}"))
            .collect(),
        split_brain: sb.split_brain,
        paused: st.paused,
        force_primary: d.force_primary.load(std::sync::atomic::Ordering::SeqCst),
        lease_ms_left: st
            .lease_until
            .map(|u| u.saturating_duration_since(now).as_millis() as u64),
        nbd: d.spec.nbd.to_string(),
        nbd_serving,
        resync: ResyncStatus::from(&st.resync),
        counters,
        last_error: st.last_error.clone(),
        events_seq: vol.events.last_seq(),
        takeover: st.takeover.clone(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn params(text: &str) -> MirrorDiskParams {
        MirrorDiskParams::from_params(&toml::from_str(text).unwrap()).unwrap()
    }

    #[test]
    fn stores_missing_or_too_small_are_refused_without_change() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("disk.img");
        // Missing, no size: refused, nothing created.
        let e = open_store(&params(&format!("device = \"{}\"", p.display()))).unwrap_err();
        assert_eq!(e.code(), "mirror_store");
        assert!(e.to_string().contains("does not exist"), "{e}");
        assert!(!p.exists());
        // Missing with a size: created sparse, fresh.
        let (_, size, created) = open_store(&params(&format!(
            "device = \"{}\"\nsize = \"1MiB\"",
            p.display()
        )))
        .unwrap();
        assert_eq!((size, created), (1 << 20, true));
        // Existing but smaller than `size`: refused, the file untouched.
        let e = open_store(&params(&format!(
            "device = \"{}\"\nsize = \"2MiB\"",
            p.display()
        )))
        .unwrap_err();
        assert!(e.to_string().contains("the volume needs 2097152"), "{e}");
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 1 << 20);
        // Existing, no size: its own size, not created.
        let (_, size, created) =
            open_store(&params(&format!("device = \"{}\"", p.display()))).unwrap();
        assert_eq!((size, created), (1 << 20, false));
    }
}
