//! One mirrored volume on one server: its store, its metadata, its role, and the write
//! path the NBD server calls ([`Volume`] is a [`BlockStore`]).
//!
//! A write on the primary: the regions it covers are marked in the dirty bitmap,
//! durably, before anything else; then it is written locally and handed to the link in
//! order (under the shared side of `io`, so a resync copy, which reads under the
//! exclusive side, is never overtaken by an older copy of the same region); in sync mode
//! it is acknowledged when the peer acknowledged it. A region's bit is cleared once every
//! frame that touched it was acknowledged and nothing about it was lost on the way.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use crate::clock::Instant;

use serde::Serialize;
use tokio::sync::{mpsc, Notify};

use crate::events::{EventKind, EventLog};
use crate::meta::{DiskState, Meta, Super};
use crate::params::{Mode, PeerLoss};
use crate::proto::{flag, kind, WriteHdr};
use crate::store::BlockStore;

/// A frame waiting for the link's sender.
#[derive(Debug)]
pub struct Out {
    pub kind: u8,
    pub hdr: Vec<u8>,
    pub data: Vec<u8>,
    /// Compress `data` with the volume's compression (resync and async).
    pub compress: bool,
}

/// Connection to the peer, as the status shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Conn {
    /// No link (the peer is away or unreachable).
    Disconnected,
    /// Linked and replicating.
    Connected,
    /// Linked but refusing to replicate: both sides wrote (see `split_brain`).
    SplitBrain,
    /// Linked but refused: not two halves of one volume (the reason is in `last_error`).
    Refused,
}

/// Progress of a resync (on both sides; the source counts).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Resync {
    pub running: bool,
    /// This side is the source.
    pub source: bool,
    pub total_bytes: u64,
    pub done_bytes: u64,
    /// Bytes that went over the link (data regions; zero regions cost nothing).
    pub sent_bytes: u64,
    pub started_ms: u64,
    /// When the last resync ended in sync (unix ms); `None` while one runs.
    pub finished_ms: Option<u64>,
    pub rate_bytes_per_s: u64,
    pub remaining_s: Option<u64>,
}

/// Mutable role and link state.
#[derive(Debug)]
pub struct State {
    pub primary: Option<u64>,
    /// A peer took over at a higher epoch: no write is acknowledged here any more.
    pub fenced: bool,
    pub conn: Conn,
    /// Incremented at every connect and disconnect; waiters notice a changed session.
    pub session: u64,
    pub peer: Option<String>,
    pub peer_disk: Option<DiskState>,
    /// Replication paused by an operator (writes go on locally, marked out of sync).
    pub paused: bool,
    /// The peer has everything (connected, nothing out of sync).
    pub in_sync: bool,
    /// This side is a resync target right now (its data is not usable until done).
    pub target: bool,
    /// This side is the source of the current session (it runs the resync).
    pub source: bool,
    /// Writes since the link was lost started a new data generation already.
    pub diverged: bool,
    /// Until when the agent confirmed this server holds the group with quorum.
    pub lease_until: Option<Instant>,
    /// Since when the agent's leases say the peer's server is down (heartbeats).
    pub peer_down_since: Option<Instant>,
    /// How long it must have been down before sync writes go on alone.
    pub peer_down_hold: Duration,
    pub resync: Resync,
    pub last_error: Option<String>,
    /// Sender of the current session's link.
    pub out: Option<mpsc::Sender<Out>>,
    pub promote_forced: bool,
    /// An operator chose to discard this side's changes (split brain resolution).
    pub discard_local: bool,
    /// The session was ended by a missed acknowledgement.
    pub kicked: bool,
    /// The peer was primary when last heard of (its hello or its last role message).
    pub peer_primary: bool,
    /// This process found the volume primary when it started (the previous one died as
    /// primary) and has not met the peer since: regions dirty here may hold writes the
    /// peer never got.
    pub died_primary: bool,
    /// Resync into a side that died as async primary: the copies are compared with
    /// what is here, to count what the failover lost (BTN-7020 when the resync is done).
    pub discard_check: Option<DiscardCheck>,
    /// The primary peer's last backlog report: (bytes it had not confirmed here, unix ms).
    pub peer_backlog: Option<(u64, u64)>,
    /// When the last link was lost (unix ms).
    pub link_lost_ms: Option<u64>,
    /// What this side knew of the old primary's unsent writes when it took over without
    /// it (async).
    pub takeover: Option<Takeover>,
}

/// What a resync into a side that died as async primary replaces.
#[derive(Debug, Clone, Default)]
pub struct DiscardCheck {
    pub peer: String,
    /// Bytes of the regions marked out of sync here when the sides met.
    pub marked_bytes: u64,
    /// Bytes of copied regions whose content here differed (the writes lost).
    pub differing_bytes: u64,
    pub differing_regions: u64,
}

/// An async takeover without the old primary, as `baton mirror status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Takeover {
    pub epoch: u64,
    pub unix_ms: u64,
    /// What the old primary last reported as not confirmed here (`None`: no report).
    pub peer_backlog_bytes: Option<u64>,
    pub peer_report_unix_ms: Option<u64>,
    pub link_lost_unix_ms: Option<u64>,
}

/// Regions with frames in flight, and regions whose last change did not reach the peer.
#[derive(Debug, Default)]
struct Tracker {
    next_seq: u64,
    acked: u64,
    /// Frames sent and not yet acknowledged: (seq, first region, last region, async bytes).
    inflight: VecDeque<(u64, u64, u64, u64)>,
    pending: HashMap<u64, u32>,
    /// Regions written while connected whose write was not sent (async queue full,
    /// paused): an acknowledgement of another frame must not clear them.
    stale: std::collections::HashSet<u64>,
    /// Async: bytes of writes queued for the peer.
    queued: u64,
    /// Resync copies in flight.
    copies: u64,
    /// Incremented when a link is lost: a reservation of an older link is void.
    link_gen: u64,
}

/// Counters shown by `baton mirror status`.
#[derive(Debug, Default, Serialize)]
pub struct Counters {
    pub writes: AtomicU64,
    pub bytes_written: AtomicU64,
    pub writes_replicated: AtomicU64,
    pub writes_degraded: AtomicU64,
    pub refused_auth: AtomicU64,
    pub refused_protocol: AtomicU64,
    pub refused_epoch: AtomicU64,
    pub queue_full: AtomicU64,
    pub resync_bytes: AtomicU64,
    pub link_bytes_sent: AtomicU64,
    /// Bytes of data sent in this session before compression (with `link_bytes_sent`, the
    /// compression the link achieves).
    pub link_raw_bytes_sent: AtomicU64,
    /// Frames of this session sent as is because the data before them did not compress.
    pub compression_skipped: AtomicU64,
    /// Async: bytes of regions written here as primary that the peer never confirmed,
    /// replaced by the peer's data after it took over (BTN-7020).
    pub async_discarded_bytes: AtomicU64,
}

/// Settings of a volume the write path needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: String,
    pub mode: Mode,
    pub on_peer_loss: PeerLoss,
    pub ack_timeout: Duration,
    pub queue_size: u64,
    pub bandwidth_limit: u64,
}

pub struct Volume {
    pub settings: Settings,
    pub store: Arc<dyn BlockStore>,
    pub meta: Mutex<Meta>,
    pub state: Mutex<State>,
    tracker: Mutex<Tracker>,
    acked: Condvar,
    /// Writes hold it shared from the local write until the frame is queued; a resync
    /// copy holds it exclusive from the read until the frame is queued.
    pub io: RwLock<()>,
    /// Byte ranges between their local write and their frame's place in the link's
    /// queue: an overlapping write waits, so the peer applies overlapping writes in the
    /// order they hit the local store (the NBD server runs requests concurrently).
    writing: Mutex<Vec<(u64, u64)>>,
    written: Condvar,
    /// Buffers of frames the link sent, reused for the next writes' frames (no
    /// allocation per write once warm).
    buffers: Mutex<Vec<Vec<u8>>>,
    /// Held from a frame's sequence number to its place in the link's queue.
    send_order: Mutex<()>,
    pub counters: Counters,
    /// Woken when regions become dirty (the resync task waits on it) or the state changes.
    pub wake: Notify,
    /// Woken to end the current session.
    pub kick: Notify,
    pub events: EventLog,
    region_size: u64,
    size: u64,
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volume")
            .field("server", &self.settings.server)
            .field("size", &self.size)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks is a bug; the data (counters, flags) is
    // still meaningful, so go on rather than poison every later call.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn eio(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// Bytes of the volume set dirty on disk ahead of a sequential writer (see
/// [`crate::meta::Bitmap::set_lookahead`]): one bitmap sync per 4 MiB written in order.
const SEQUENTIAL_LOOKAHEAD: u64 = 4 << 20;

/// Frame buffers kept for reuse: at most this many, holding at most this many bytes.
const BUFFERS_KEPT: usize = 64;
const BUFFER_BYTES_KEPT: usize = 16 << 20;

/// How long a write may wait for the peer or a lease before it fails (the NBD client
/// sees EIO); a demotion or a fence ends the wait earlier.
const MAX_WRITE_WAIT: Duration = Duration::from_secs(120);

impl Volume {
    pub fn new(
        settings: Settings,
        store: Arc<dyn BlockStore>,
        meta: Meta,
        events: EventLog,
    ) -> Volume {
        let sb = meta.super_block().clone();
        let primary = sb.primary.then_some(sb.max_epoch);
        meta.bitmap()
            .set_lookahead((SEQUENTIAL_LOOKAHEAD / u64::from(sb.region_size)).max(1));
        Volume {
            settings,
            store,
            region_size: u64::from(sb.region_size),
            size: sb.size,
            meta: Mutex::new(meta),
            state: Mutex::new(State {
                primary,
                fenced: false,
                conn: Conn::Disconnected,
                session: 0,
                peer: None,
                peer_disk: None,
                paused: false,
                in_sync: false,
                target: false,
                source: false,
                diverged: false,
                lease_until: None,
                peer_down_since: None,
                peer_down_hold: Duration::ZERO,
                resync: Resync::default(),
                last_error: None,
                out: None,
                promote_forced: false,
                discard_local: false,
                kicked: false,
                peer_primary: false,
                died_primary: sb.primary,
                discard_check: None,
                peer_backlog: None,
                link_lost_ms: None,
                takeover: None,
            }),
            tracker: Mutex::new(Tracker {
                next_seq: 1,
                ..Tracker::default()
            }),
            acked: Condvar::new(),
            io: RwLock::new(()),
            writing: Mutex::new(Vec::new()),
            written: Condvar::new(),
            buffers: Mutex::new(Vec::new()),
            send_order: Mutex::new(()),
            counters: Counters::default(),
            wake: Notify::new(),
            kick: Notify::new(),
            events,
        }
    }

    pub fn region_size(&self) -> u64 {
        self.region_size
    }

    pub fn regions_of(&self, offset: u64, len: u64) -> (u64, u64) {
        let first = offset / self.region_size;
        let last = (offset + len.max(1) - 1) / self.region_size;
        (first, last)
    }

    pub fn super_block(&self) -> Super {
        lock(&self.meta).super_block().clone()
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Change the metadata durably.
    pub fn update_meta(&self, f: impl FnOnce(&mut Super)) -> io::Result<()> {
        lock(&self.meta)
            .update(f)
            .map_err(|e| eio(format!("mirror metadata: {e}")))
    }

    pub fn bitmap(&self) -> Arc<crate::meta::Bitmap> {
        lock(&self.meta).bitmap()
    }

    /// The writer side: only a primary that is not fenced writes.
    fn check_writable(&self) -> io::Result<u64> {
        let st = self.state();
        if st.fenced {
            return Err(eio(
                "mirror: a peer took over the group at a higher epoch; writes are refused here",
            ));
        }
        match st.primary {
            Some(e) if !st.target => Ok(e),
            Some(_) => Err(eio("mirror: this side is a resync target")),
            None => Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "mirror: not primary",
            )),
        }
    }

    /// Count regions `a..=b` as having a write in flight before the write marks them, so
    /// that an acknowledgement of an earlier frame cannot clear a bit this write set
    /// (the bitmap's contract). Returns the link generation of the reservation.
    fn reserve(&self, a: u64, b: u64) -> u64 {
        let mut t = lock(&self.tracker);
        for r in a..=b {
            *t.pending.entry(r).or_insert(0) += 1;
        }
        t.link_gen
    }

    /// The reserved write was not sent: the regions stay dirty (and, on a live link,
    /// stale: a later acknowledgement must not clear them).
    fn unreserve(&self, a: u64, b: u64, gen: u64, connected: bool) {
        let mut t = lock(&self.tracker);
        if t.link_gen != gen {
            // The link it was reserved on is gone; lost_link dropped the counts.
            return;
        }
        for r in a..=b {
            if let Some(n) = t.pending.get_mut(&r) {
                *n -= 1;
                if *n == 0 {
                    t.pending.remove(&r);
                }
            }
            if connected {
                t.stale.insert(r);
            }
        }
    }

    /// Queue a frame on the current link. `Some(seq)` when it was queued (and counts as
    /// in flight for `regions`); `None` when there is no link or (async) no room, in
    /// which case the regions stay dirty for the resync.
    fn ship(
        &self,
        k: u8,
        mut hdr: WriteHdr,
        data: &[u8],
        regions: Option<(u64, u64)>,
        gen: Option<u64>,
    ) -> Option<u64> {
        let (connected, blocked, out) = {
            let st = self.state();
            (
                st.conn == Conn::Connected,
                st.paused || st.target,
                st.out.clone(),
            )
        };
        if !connected || blocked {
            return None;
        }
        let out = out?;
        // Frames enter the link in sequence order; the tracker itself is held only for
        // the bookkeeping, never while the link's queue is full (acknowledgements, which
        // need it, must go on meanwhile, or the two sides' full queues wait on each other).
        let _order = lock(&self.send_order);
        let asyncq = self.settings.mode == Mode::Async && k == kind::WRITE;
        let queued = if asyncq { data.len() as u64 } else { 0 };
        let seq = {
            let mut t = lock(&self.tracker);
            if gen.is_some_and(|g| g != t.link_gen) {
                return None;
            }
            if asyncq && t.queued + queued > self.settings.queue_size {
                self.counters.queue_full.fetch_add(1, Ordering::Relaxed);
                drop(t);
                self.on_queue_full();
                return None;
            }
            let seq = t.next_seq;
            t.next_seq += 1;
            t.queued += queued;
            let (a, b) = regions.unwrap_or((u64::MAX, u64::MAX));
            t.inflight.push_back((seq, a, b, queued));
            seq
        };
        hdr.seq = seq;
        let frame = Out {
            kind: k,
            hdr: self.pooled(&hdr.encode()),
            data: self.pooled(data),
            compress: self.settings.mode == Mode::Async,
        };
        if out.blocking_send(frame).is_err() {
            self.unship(seq, queued, None);
            return None;
        }
        Some(seq)
    }

    /// Frame `seq` did not enter the link (it closed): take back its bookkeeping. The
    /// caller still holds `send_order`, so it is the newest frame, unless the link was
    /// lost meanwhile (then everything was dropped already).
    fn unship(&self, seq: u64, queued: u64, copy_of: Option<u64>) {
        let mut t = lock(&self.tracker);
        if t.inflight.back().is_some_and(|e| e.0 == seq) {
            t.inflight.pop_back();
            t.queued = t.queued.saturating_sub(queued);
            if t.next_seq == seq + 1 {
                t.next_seq = seq;
            }
            if let Some(r) = copy_of {
                t.copies = t.copies.saturating_sub(1);
                if let Some(n) = t.pending.get_mut(&r) {
                    *n -= 1;
                    if *n == 0 {
                        t.pending.remove(&r);
                    }
                }
            }
        }
    }

    /// A copy of `bytes` in a reused buffer.
    fn pooled(&self, bytes: &[u8]) -> Vec<u8> {
        let mut b = lock(&self.buffers).pop().unwrap_or_default();
        b.clear();
        b.extend_from_slice(bytes);
        b
    }

    /// A reused buffer of `len` zero bytes (a resync copy reads into it).
    pub fn zeroed_buffer(&self, len: usize) -> Vec<u8> {
        let mut b = lock(&self.buffers).pop().unwrap_or_default();
        b.clear();
        b.resize(len, 0);
        b
    }

    /// The link sent a frame: keep its buffers for the next ones (bounded).
    pub fn recycle(&self, frame: Out) {
        let mut pool = lock(&self.buffers);
        for b in [frame.hdr, frame.data] {
            let held: usize = pool.iter().map(Vec::capacity).sum();
            if b.capacity() > 0
                && pool.len() < BUFFERS_KEPT
                && held + b.capacity() <= BUFFER_BYTES_KEPT
            {
                pool.push(b);
            }
        }
    }

    fn on_queue_full(&self) {
        let first = {
            let mut st = self.state();
            let was = st.in_sync;
            st.in_sync = false;
            was
        };
        if first {
            self.events.raise(
                EventKind::QueueFull,
                "async queue full: writes are marked out of sync and copied by a resync".into(),
            );
            self.send_state(&crate::proto::StateMsg::Outdated);
        }
        self.wake.notify_one();
    }

    /// Send a state message on the current link (best effort).
    pub fn send_state(&self, m: &crate::proto::StateMsg) {
        let out = self.state().out.clone();
        if let (Some(out), Ok(json)) = (out, serde_json::to_vec(m)) {
            let _ = out.try_send(Out {
                kind: kind::STATE,
                hdr: json,
                data: Vec::new(),
                compress: false,
            });
        }
    }

    /// Sequence number of the next frame (resync copies take theirs here too).
    pub fn ship_copy(&self, region: u64, data: Option<Vec<u8>>, epoch: u64) -> Option<u64> {
        let out = {
            let st = self.state();
            if st.conn != Conn::Connected {
                return None;
            }
            st.out.clone()?
        };
        let _order = lock(&self.send_order);
        let seq = {
            let mut t = lock(&self.tracker);
            let seq = t.next_seq;
            t.next_seq += 1;
            t.stale.remove(&region);
            t.copies += 1;
            *t.pending.entry(region).or_insert(0) += 1;
            t.inflight.push_back((seq, region, region, u64::MAX));
            seq
        };
        let offset = region * self.region_size;
        let len = self.region_size.min(self.size - offset);
        let (k, data) = match data {
            Some(d) => (kind::COPY, d),
            None => (kind::COPY_ZERO, Vec::new()),
        };
        let hdr = WriteHdr {
            epoch,
            seq,
            offset,
            len,
            flags: 0,
        };
        let frame = Out {
            kind: k,
            hdr: self.pooled(&hdr.encode()),
            data,
            compress: true,
        };
        if out.blocking_send(frame).is_err() {
            self.unship(seq, 0, Some(region));
            return None;
        }
        Some(seq)
    }

    /// The peer acknowledged every frame up to `seq`: clear the regions nothing else is
    /// in flight for.
    pub fn on_ack(&self, seq: u64) {
        let bitmap = self.bitmap();
        let mut t = lock(&self.tracker);
        while let Some(&(s, a, b, bytes)) = t.inflight.front() {
            if s > seq {
                break;
            }
            t.inflight.pop_front();
            if bytes == u64::MAX {
                t.copies = t.copies.saturating_sub(1);
            } else {
                t.queued = t.queued.saturating_sub(bytes);
            }
            if a == u64::MAX {
                continue;
            }
            for r in a..=b {
                let left = match t.pending.get_mut(&r) {
                    Some(n) => {
                        *n -= 1;
                        *n
                    }
                    None => 0,
                };
                if left == 0 {
                    t.pending.remove(&r);
                    if !t.stale.contains(&r) {
                        bitmap.clear_region(r);
                    }
                }
            }
        }
        t.acked = t.acked.max(seq);
        drop(t);
        self.acked.notify_all();
    }

    /// A region with frames in flight is left to their acknowledgements.
    pub fn in_flight(&self, region: u64) -> bool {
        lock(&self.tracker).pending.contains_key(&region)
    }

    pub fn copies_in_flight(&self) -> u64 {
        lock(&self.tracker).copies
    }

    /// The link is gone: everything in flight stays dirty; writers waiting for
    /// acknowledgements are woken.
    pub fn lost_link(&self) {
        let mut t = lock(&self.tracker);
        t.inflight.clear();
        t.pending.clear();
        t.stale.clear();
        t.queued = 0;
        t.copies = 0;
        t.link_gen += 1;
        drop(t);
        self.acked.notify_all();
    }

    /// Wait until `seq` is acknowledged in `session`; false when the session ended or the
    /// ack timeout passed.
    fn wait_ack(&self, seq: u64, session: u64) -> bool {
        let deadline = crate::clock::now() + self.settings.ack_timeout;
        let mut t = lock(&self.tracker);
        loop {
            if t.acked >= seq {
                return true;
            }
            if self.state().session != session {
                return false;
            }
            let now = crate::clock::now();
            if now >= deadline {
                return false;
            }
            let (g, _) = self
                .acked
                .wait_timeout(t, (deadline - now).min(Duration::from_millis(100)))
                .unwrap_or_else(|p| p.into_inner());
            t = g;
        }
    }

    /// A write that the peer did not take: may it be acknowledged anyway?
    fn degraded_ok(&self) -> io::Result<()> {
        self.counters
            .writes_degraded
            .fetch_add(1, Ordering::Relaxed);
        let start = crate::clock::now();
        let mut told = false;
        loop {
            let (lease_ok, fenced, primary, in_sync, peer_down, paused) = {
                let st = self.state();
                let lease_ok = st.lease_until.is_some_and(|u| u > crate::clock::now());
                (
                    lease_ok,
                    st.fenced,
                    st.primary.is_some(),
                    st.in_sync && st.conn == Conn::Connected,
                    st.peer_down_since.is_some_and(|t| {
                        crate::clock::now().duration_since(t) >= st.peer_down_hold
                    }),
                    st.paused,
                )
            };
            if fenced || !primary {
                return Err(eio("mirror: the group moved; the write is refused"));
            }
            let sync = self.settings.mode == Mode::Sync;
            let suspend = sync && self.settings.on_peer_loss == PeerLoss::Suspend;
            if in_sync {
                // Back and caught up (the resync copied the region with this write).
                return Ok(());
            }
            // Sync mode goes on alone only when the peer cannot take over with older
            // data: its server is down as the heartbeats say (it has no quorum to act on)
            // or an operator paused replication (the peer was told it is behind).
            if !suspend && lease_ok && (!sync || peer_down || paused) {
                self.diverge()?;
                return Ok(());
            }
            if !told {
                told = true;
                self.events.raise(
                    EventKind::WritesSuspended,
                    if suspend {
                        "writes wait for the peer (on_peer_loss = \"suspend\")".into()
                    } else if !lease_ok {
                        "writes wait: the peer is away and the agent has not confirmed that this server holds the group with quorum".into()
                    } else {
                        "writes wait: the mirror link is down but the peer's server is up (heartbeats); they go on when the link returns, when the peer's server is declared down, or after `baton mirror pause`".into()
                    },
                );
            }
            if crate::clock::now().duration_since(start) > MAX_WRITE_WAIT {
                return Err(eio(
                    "mirror: neither the peer nor the agent's lease came back",
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The first write the peer does not have in this disconnected period starts a new
    /// data generation (durable before the write is acknowledged), so the peer learns at
    /// the next meeting that it is behind, or that both sides wrote.
    fn diverge(&self) -> io::Result<()> {
        {
            let st = self.state();
            if st.diverged {
                return Ok(());
            }
        }
        let mut meta = lock(&self.meta);
        let mut st = self.state();
        if st.diverged {
            return Ok(());
        }
        let new = crate::meta::new_generation(meta.super_block().current, rand::random());
        meta.update(|s| {
            s.history = [s.current, s.history[0], s.history[1], s.history[2]];
            s.current = new;
        })
        .map_err(|e| eio(format!("mirror metadata: {e}")))?;
        st.diverged = true;
        st.in_sync = false;
        drop(st);
        drop(meta);
        self.events.raise(
            EventKind::Degraded,
            format!("writes go on without the peer (new data generation {new:016x}); the peer will be resynchronised"),
        );
        Ok(())
    }

    /// Wait until no write overlapping `[offset, offset + len)` is between its local write
    /// and its place in the link's queue, then hold the range until the guard drops.
    fn order(&self, offset: u64, len: u64) -> Ordered<'_> {
        let range = (offset, offset.saturating_add(len.max(1)));
        let overlaps = |r: &(u64, u64)| r.0 < range.1 && range.0 < r.1;
        let mut w = lock(&self.writing);
        while w.iter().any(overlaps) {
            w = self.written.wait(w).unwrap_or_else(|p| p.into_inner());
        }
        w.push(range);
        Ordered { vol: self, range }
    }

    fn do_write(&self, k: u8, data: &[u8], offset: u64, len: u64, flags: u8) -> io::Result<()> {
        let epoch = self.check_writable()?;
        let (a, b) = self.regions_of(offset, len);
        let gen = self.reserve(a, b);
        if let Err(e) = self.bitmap().mark(offset, len) {
            self.unreserve(a, b, gen, false);
            return Err(eio(format!("mirror bitmap: {e}")));
        }
        let session = self.state().session;
        let fua = flags & flag::FUA != 0;
        let ticket = {
            let _order = self.order(offset, len);
            let _g = self.io.read().unwrap_or_else(|p| p.into_inner());
            let local = match k {
                kind::WRITE => self.store.write_at(data, offset, fua),
                _ if flags & flag::TRIM != 0 => self.store.trim(offset, len).and_then(|()| {
                    if fua {
                        self.store.flush()
                    } else {
                        Ok(())
                    }
                }),
                _ => self.store.write_zeroes(offset, len, fua),
            };
            if let Err(e) = local {
                self.unreserve(a, b, gen, false);
                self.events.raise(
                    EventKind::DiskError,
                    format!("writing the backing store: {e}"),
                );
                return Err(e);
            }
            let hdr = WriteHdr {
                epoch,
                seq: 0,
                offset,
                len,
                flags,
            };
            let t = self.ship(k, hdr, data, Some((a, b)), Some(gen));
            if t.is_none() {
                let connected = self.state().conn == Conn::Connected;
                self.unreserve(a, b, gen, connected);
            }
            t
        };
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_written
            .fetch_add(len, Ordering::Relaxed);
        match ticket {
            Some(seq) if self.settings.mode == Mode::Sync => {
                if self.wait_ack(seq, session) {
                    self.check_writable()?;
                    self.counters
                        .writes_replicated
                        .fetch_add(1, Ordering::Relaxed);
                    Ok(())
                } else {
                    self.kick(session);
                    self.degraded_ok()
                }
            }
            Some(_) => {
                self.counters
                    .writes_replicated
                    .fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            None => {
                self.wake.notify_one();
                let connected = self.state().conn == Conn::Connected;
                if self.settings.mode == Mode::Async && connected {
                    // Queue full or paused: the peer knows it is behind (Outdated) and
                    // the resync follows; the write is acknowledged locally, in a new
                    // data generation (so a split brain is recognised if it comes to one).
                    self.diverge()
                } else {
                    self.degraded_ok()
                }
            }
        }
    }

    /// The peer did not acknowledge within `ack_timeout`: end the session (it counts as
    /// away; what was in flight stays dirty for the resync when it returns).
    pub fn kick(&self, session: u64) {
        let mut st = self.state();
        if st.session == session && st.conn == Conn::Connected {
            st.last_error = Some(format!(
                "the peer did not acknowledge within {} ms",
                self.settings.ack_timeout.as_millis()
            ));
            st.kicked = true;
            // From now on nothing counts as replicated in this session (a waiting writer
            // must not take the old `in_sync` for the peer having its write).
            st.in_sync = false;
        }
        drop(st);
        self.kick.notify_waiters();
    }

    /// Is any region dirty that no frame in flight will clean (what a resync copies)?
    pub fn stale_count(&self) -> usize {
        lock(&self.tracker).stale.len()
    }

    pub fn size_bytes(&self) -> u64 {
        self.size
    }
}

/// A write's byte range held by [`Volume::order`].
struct Ordered<'a> {
    vol: &'a Volume,
    range: (u64, u64),
}

impl Drop for Ordered<'_> {
    fn drop(&mut self) {
        let mut w = lock(&self.vol.writing);
        if let Some(i) = w.iter().position(|r| *r == self.range) {
            w.swap_remove(i);
        }
        drop(w);
        self.vol.written.notify_all();
    }
}

impl BlockStore for Volume {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.store.read_at(buf, offset)
    }

    fn write_at(&self, data: &[u8], offset: u64, fua: bool) -> io::Result<()> {
        let flags = if fua { flag::FUA } else { 0 };
        self.do_write(kind::WRITE, data, offset, data.len() as u64, flags)
    }

    fn flush(&self) -> io::Result<()> {
        let epoch = self.check_writable()?;
        let session = self.state().session;
        self.store.flush()?;
        if self.settings.mode != Mode::Sync {
            return Ok(());
        }
        let hdr = WriteHdr {
            epoch,
            seq: 0,
            offset: 0,
            len: 0,
            flags: 0,
        };
        match self.ship(kind::FLUSH, hdr, &[], None, None) {
            Some(seq) if self.wait_ack(seq, session) => self.check_writable().map(|_| ()),
            Some(_) => {
                self.kick(session);
                self.degraded_ok()
            }
            None => self.degraded_ok(),
        }
    }

    fn write_zeroes(&self, offset: u64, len: u64, fua: bool) -> io::Result<()> {
        let flags = if fua { flag::FUA } else { 0 };
        self.do_write(kind::ZEROES, &[], offset, len, flags)
    }

    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        self.do_write(kind::ZEROES, &[], offset, len, flag::TRIM)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FileStore;

    fn volume(dir: &std::path::Path) -> Volume {
        std::fs::File::create(dir.join("d.img"))
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let store = FileStore::open(&dir.join("d.img")).unwrap();
        let meta = Meta::create(&dir.join("m"), 1 << 20, 65536, [1; 16], 0).unwrap();
        let settings = Settings {
            server: "a".into(),
            mode: Mode::Sync,
            on_peer_loss: PeerLoss::Continue,
            ack_timeout: Duration::from_millis(100),
            queue_size: 1 << 20,
            bandwidth_limit: 0,
        };
        Volume::new(settings, Arc::new(store), meta, EventLog::default())
    }

    #[test]
    fn frame_buffers_are_reused_and_the_pool_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let vol = volume(dir.path());
        let frame = |v: &Volume, n: usize| Out {
            kind: kind::WRITE,
            hdr: v.pooled(&[1; 40]),
            data: v.pooled(&vec![2; n]),
            compress: false,
        };
        let f = frame(&vol, 65536);
        let data = f.data.as_ptr();
        vol.recycle(f);
        // The next write's frame gets the same memory back.
        let again = vol.pooled(&[3; 65536]);
        assert_eq!(again.as_ptr(), data);
        assert_eq!(again, vec![3; 65536]);
        for _ in 0..100 {
            let f = frame(&vol, 1 << 20);
            vol.recycle(f);
        }
        let pool = lock(&vol.buffers);
        assert!(pool.len() <= BUFFERS_KEPT);
        assert!(pool.iter().map(Vec::capacity).sum::<usize>() <= BUFFER_BYTES_KEPT);
    }

    #[test]
    fn overlapping_writes_take_their_turn_and_others_do_not_wait() {
        let dir = tempfile::tempdir().unwrap();
        let vol = volume(dir.path());
        let held = vol.order(4096, 8192);
        std::thread::scope(|s| {
            // Beside it: no wait.
            let beside = s.spawn(|| drop(vol.order(12288, 4096)));
            beside.join().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            let vol = &vol;
            let overlapping = s.spawn(move || {
                let g = vol.order(8192, 100);
                tx.send(()).unwrap();
                drop(g);
            });
            assert!(
                rx.recv_timeout(Duration::from_millis(300)).is_err(),
                "an overlapping write went ahead of one between its local write and the link"
            );
            drop(held);
            rx.recv_timeout(Duration::from_secs(10))
                .expect("the overlapping write goes on once the range is free");
            overlapping.join().unwrap();
        });
        assert!(lock(&vol.writing).is_empty());
    }
}
