//! One meeting of the two mirror processes over an authenticated link: compare data
//! generations, merge dirty bitmaps, then replicate (the primary's writes), resync (the
//! source copies every region either side marked) and apply (the other side writes
//! what it receives and acknowledges it, in order).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::events::EventKind;
use crate::link::{Compression, Frame, LinkRx, LinkTx};
use crate::meta::DiskState;
use crate::proto::{self, decide, kind, status, Ack, Decision, Hello, StateMsg, WriteHdr};
use crate::volume::{Conn, Out, Volume};

/// An idle link says something this often...
const PING_EVERY: Duration = Duration::from_secs(1);
/// Regions a resync copies per blocking task (each is still its own frame).
const COPY_BATCH: usize = 16;
/// How often a primary tells the peer how much it may not have yet (StateMsg::Backlog).
const REPORT_EVERY: Duration = Duration::from_millis(500);
/// ...and one that says nothing for this long is dead (a peer host that vanished sends
/// no FIN).
const SILENCE: Duration = Duration::from_secs(5);

/// How the link compresses and throttles (from the resource's keys).
#[derive(Debug, Clone, Copy)]
pub struct LinkSettings {
    pub compression: Compression,
    /// Bytes per second for resync (0: no limit).
    pub bandwidth_limit: u64,
}

/// This side's hello, from the metadata and the state.
pub fn hello(vol: &Volume) -> Hello {
    let sb = vol.super_block();
    let st = vol.state();
    Hello {
        server: vol.settings.server.clone(),
        volume_id: hex::encode(sb.volume_id),
        size: sb.size,
        region_size: sb.region_size,
        current: sb.current,
        history: sb.history,
        disk: sb.disk,
        max_epoch: sb.max_epoch,
        primary: if st.fenced { None } else { st.primary },
        split_brain: sb.split_brain,
        discard_local: st.discard_local,
    }
}

fn block<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Run one session until the link ends. `me` is the hello this side sent.
pub async fn run<R, W>(
    vol: Arc<Volume>,
    mut tx: LinkTx<W>,
    mut rx: LinkRx<R>,
    me: Hello,
    peer: Hello,
    link: LinkSettings,
) -> Result<(), String>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let decision = decide(&me, &peer);
    if let Decision::Refuse(why) = &decision {
        vol.events.raise(EventKind::PeerMismatch, why.clone());
        {
            let mut st = vol.state();
            st.conn = Conn::Refused;
            st.last_error = Some(why.clone());
        }
        // Stay quiet a while rather than reconnecting in a loop.
        tokio::time::sleep(Duration::from_secs(10)).await;
        return Err(why.clone());
    }
    // A side that never held data takes the other's identity.
    if me.volume_id != peer.volume_id && decision == Decision::Target {
        if let Ok(id) = hex::decode(&peer.volume_id) {
            if let Ok(id) = <[u8; 16]>::try_from(id.as_slice()) {
                block(|| vol.update_meta(|s| s.volume_id = id)).map_err(|e| e.to_string())?;
            }
        }
    }
    // Bitmaps: each side marks what the other marked, so the source copies the union.
    let bitmap = vol.bitmap();
    // A store of unknown content has every bit set since its metadata was created, so
    // the union covers it.
    let mine = bitmap.to_bytes();
    tx.send(kind::BITMAP, &[], &mine, link.compression)
        .await
        .map_err(|e| e.to_string())?;
    tx.flush().await.map_err(|e| e.to_string())?;
    let mut frame = Frame::default();
    rx.recv(&mut frame).await.map_err(|e| e.to_string())?;
    if frame.kind != kind::BITMAP {
        return Err("the peer did not send its bitmap".into());
    }
    if decision == Decision::Target {
        start_discard_check(&vol, &peer);
    }
    if decision != Decision::SplitBrain {
        block(|| bitmap.merge(&frame.data)).map_err(|e| e.to_string())?;
    }
    if let Some(e) = peer.primary {
        if e > me.max_epoch {
            block(|| vol.update_meta(|s| s.max_epoch = s.max_epoch.max(e)))
                .map_err(|e| e.to_string())?;
        }
    }
    if decision == Decision::SplitBrain {
        return split_brain(&vol, &mut rx, &peer).await;
    }
    if me.discard_local || peer.discard_local {
        block(|| vol.update_meta(|s| s.split_brain = false)).map_err(|e| e.to_string())?;
        vol.state().discard_local = false;
    }

    let (out_tx, out_rx) = mpsc::channel::<Out>(1024);
    let session = {
        let mut st = vol.state();
        st.conn = Conn::Connected;
        st.session += 1;
        st.peer = Some(peer.server.clone());
        st.peer_primary = peer.primary.is_some();
        st.peer_disk = Some(peer.disk);
        st.out = Some(out_tx.clone());
        st.target = decision == Decision::Target;
        st.source = decision == Decision::Source;
        st.in_sync = false;
        st.kicked = false;
        st.last_error = None;
        if let (Some(mine), Some(theirs)) = (st.primary, peer.primary) {
            if theirs > mine {
                st.fenced = true;
            }
        }
        st.session
    };
    vol.events.raise(
        EventKind::Connected,
        format!(
            "mirror link to {} up; {}",
            peer.server,
            match decision {
                Decision::Source => "this side is the source of the resync",
                _ => "the peer is the source of the resync",
            }
        ),
    );
    let sender = tokio::spawn(send_loop(vol.clone(), tx, out_rx, link));
    let resync = (decision == Decision::Source)
        .then(|| tokio::spawn(resync_loop(vol.clone(), session, link)));
    let result = tokio::select! {
        r = recv_loop(vol.clone(), &mut rx, &out_tx) => r,
        _ = vol.kick.notified() => Err("the peer did not acknowledge in time".to_string()),
    };
    // The session is over: what was in flight stays dirty; waiting writers fall back.
    let (was_secondary, target) = {
        let mut st = vol.state();
        st.link_lost_ms = Some(crate::clock::unix_ms());
        st.conn = Conn::Disconnected;
        st.session += 1;
        st.out = None;
        st.in_sync = false;
        st.diverged = false;
        st.peer_disk = None;
        st.resync.running = false;
        let t = st.target;
        st.target = false;
        st.source = false;
        if let Err(e) = &result {
            st.last_error = Some(e.clone());
        }
        (st.primary.is_none(), t)
    };
    vol.lost_link();
    sender.abort();
    if let Some(r) = resync {
        r.abort();
    }
    if was_secondary && !target {
        let _ = block(|| {
            vol.update_meta(|s| {
                if s.disk == DiskState::UpToDate {
                    s.disk = DiskState::Consistent;
                }
            })
        });
    }
    vol.events.raise(
        EventKind::Disconnected,
        format!(
            "mirror link to {} down: {}",
            peer.server,
            result.as_ref().err().map_or("closed", |e| e.as_str())
        ),
    );
    vol.wake.notify_waiters();
    result
}

async fn split_brain<R: AsyncRead + Unpin>(
    vol: &Arc<Volume>,
    rx: &mut LinkRx<R>,
    peer: &Hello,
) -> Result<(), String> {
    let first = !vol.super_block().split_brain;
    block(|| vol.update_meta(|s| s.split_brain = true)).map_err(|e| e.to_string())?;
    {
        let mut st = vol.state();
        st.conn = Conn::SplitBrain;
        st.peer = Some(peer.server.clone());
        st.peer_disk = Some(peer.disk);
        st.last_error = Some("data split brain: both sides wrote since they last agreed".into());
    }
    if first {
        vol.events.raise(
            EventKind::SplitBrain,
            format!(
                "both this server and {} wrote data the other does not have (generations {:016x} and {:016x}); nothing is copied until an operator runs `baton mirror discard-local` on the side to overwrite",
                peer.server,
                vol.super_block().current,
                peer.current
            ),
        );
    }
    // Stay linked (the status shows the peer) until it goes or an operator decides.
    let mut frame = Frame::default();
    loop {
        tokio::select! {
            r = rx.recv(&mut frame) => {
                if let Err(e) = r {
                    vol.state().conn = Conn::Disconnected;
                    return Err(e.to_string());
                }
            }
            _ = vol.kick.notified() => {
                vol.state().conn = Conn::Disconnected;
                return Ok(());
            }
        }
    }
}

async fn send_loop<W: AsyncWrite + Unpin>(
    vol: Arc<Volume>,
    mut tx: LinkTx<W>,
    mut rx: mpsc::Receiver<Out>,
    link: LinkSettings,
) {
    let ping = serde_json::to_vec(&StateMsg::Ping).unwrap_or_default();
    // A primary reports its backlog at its first frame and then every REPORT_EVERY.
    let mut reported: Option<crate::clock::Instant> = None;
    loop {
        let first = match tokio::time::timeout(PING_EVERY, rx.recv()).await {
            Ok(Some(o)) => o,
            Ok(None) => return,
            Err(_) => Out {
                kind: kind::STATE,
                hdr: ping.clone(),
                data: Vec::new(),
                compress: false,
            },
        };
        let due = reported.is_none_or(|t| crate::clock::now().duration_since(t) >= REPORT_EVERY);
        if due {
            if let Some(b) = backlog(&vol) {
                reported = Some(crate::clock::now());
                if tx
                    .send(kind::STATE, &b, &[], Compression::None)
                    .await
                    .is_err()
                {
                    let s = vol.state().session;
                    vol.kick(s);
                    return;
                }
            }
        }
        let mut next = Some(first);
        while let Some(o) = next.take() {
            let c = if o.compress {
                link.compression
            } else {
                Compression::None
            };
            if tx.send(o.kind, &o.hdr, &o.data, c).await.is_err() {
                let s = vol.state().session;
                vol.kick(s);
                return;
            }
            vol.recycle(o);
            next = rx.try_recv().ok();
        }
        if tx.flush().await.is_err() {
            let s = vol.state().session;
            vol.kick(s);
            return;
        }
        let stats = tx.stats();
        let c = &vol.counters;
        c.link_bytes_sent.store(stats.wire_bytes, Ordering::Relaxed);
        c.link_raw_bytes_sent
            .store(stats.raw_bytes, Ordering::Relaxed);
        c.compression_skipped
            .store(stats.compression_skipped, Ordering::Relaxed);
    }
}

async fn recv_loop<R: AsyncRead + Unpin>(
    vol: Arc<Volume>,
    rx: &mut LinkRx<R>,
    out: &mpsc::Sender<Out>,
) -> Result<(), String> {
    let mut frame = Frame::default();
    let size = vol.size_bytes();
    loop {
        match tokio::time::timeout(SILENCE, rx.recv(&mut frame)).await {
            Ok(r) => r.map_err(|e| e.to_string())?,
            Err(_) => return Err(format!("the peer said nothing for {} s", SILENCE.as_secs())),
        }
        match frame.kind {
            kind::ACK => {
                let a = Ack::decode(&frame.meta).ok_or("bad acknowledgement")?;
                match a.status {
                    status::OK => vol.on_ack(a.seq),
                    status::STALE_EPOCH => {
                        vol.counters.refused_epoch.fetch_add(1, Ordering::Relaxed);
                        fence(&vol, "the peer refused a write of an older epoch");
                        return Err("fenced by the peer (higher epoch)".into());
                    }
                    s => {
                        return Err(format!(
                            "the peer could not apply a write (status {s}); replication stops until it reconnects"
                        ))
                    }
                }
            }
            kind::WRITE | kind::ZEROES | kind::FLUSH | kind::COPY | kind::COPY_ZERO => {
                let h = WriteHdr::decode(&frame.meta).ok_or("bad write header")?;
                let st = apply(&vol, frame.kind, &h, &frame.data, size);
                let ack = Ack {
                    seq: h.seq,
                    status: st,
                };
                out.send(Out {
                    kind: kind::ACK,
                    hdr: ack.encode().to_vec(),
                    data: Vec::new(),
                    compress: false,
                })
                .await
                .map_err(|_| "link sender gone".to_string())?;
                if st == status::STALE_EPOCH {
                    vol.counters.refused_epoch.fetch_add(1, Ordering::Relaxed);
                }
            }
            kind::STATE => {
                let m: StateMsg =
                    serde_json::from_slice(&frame.meta).map_err(|e| format!("bad state: {e}"))?;
                on_state(&vol, m)?;
            }
            kind::BITMAP => {}
            k => return Err(format!("unknown frame kind {k}")),
        }
    }
}

/// A primary's backlog report (what the peer may not have yet), as a STATE frame.
fn backlog(vol: &Volume) -> Option<Vec<u8>> {
    let primary = vol.state().primary.is_some();
    if !primary {
        return None;
    }
    let bytes = (vol.bitmap().dirty_count() * vol.region_size()).min(vol.size_bytes());
    serde_json::to_vec(&StateMsg::Backlog { bytes }).ok()
}

/// Meeting the peer as the target: in async mode, regions this side wrote as primary that
/// the peer never confirmed are about to be replaced by the peer's data (the writes an
/// async failover lost). Each copy is compared with what is here, and the resync's end
/// reports what differed (BTN-7020).
fn start_discard_check(vol: &Volume, peer: &Hello) {
    if vol.settings.mode != crate::params::Mode::Async {
        return;
    }
    let sb = vol.super_block();
    let mut st = vol.state();
    if !(st.died_primary || sb.primary) || sb.disk == DiskState::Inconsistent {
        // Not the old primary (the agent demotes it when it finds the group elsewhere,
        // hence `died_primary`), or a resync into it never finished.
        return;
    }
    let marked = (vol.bitmap().dirty_count() * vol.region_size()).min(vol.size_bytes());
    if marked == 0 {
        st.died_primary = false;
        return;
    }
    st.discard_check = Some(crate::volume::DiscardCheck {
        peer: peer.server.clone(),
        marked_bytes: marked,
        ..Default::default()
    });
}

/// A resync copy is about to overwrite `[offset, offset + len)`: count it when a discard
/// check runs and the data here differs (`data` empty: the copy is zeroes). Called
/// inside [`apply`]'s blocking section.
fn check_discard(vol: &Volume, offset: u64, len: u64, data: &[u8]) {
    if vol.state().discard_check.is_none() {
        return;
    }
    let mut here = vec![0u8; usize::try_from(len).unwrap_or(0)];
    // Unreadable here: it is replaced either way; count it as lost.
    let differs = match vol.store.read_at(&mut here, offset) {
        Ok(()) if data.is_empty() => here.iter().any(|b| *b != 0),
        Ok(()) => here != data,
        Err(_) => true,
    };
    if differs {
        if let Some(dc) = vol.state().discard_check.as_mut() {
            dc.differing_bytes += len;
            dc.differing_regions += 1;
        }
    }
}

/// The resync into this side is done: report what a discard check found.
fn finish_discard_check(vol: &Volume) {
    let dc = {
        let mut st = vol.state();
        st.died_primary = false;
        st.discard_check.take()
    };
    let Some(dc) = dc else { return };
    vol.counters
        .async_discarded_bytes
        .fetch_add(dc.differing_bytes, Ordering::Relaxed);
    if dc.differing_bytes > 0 {
        vol.events.raise(
            EventKind::AsyncDiscarded,
            format!(
                "{} took over while this server's last async writes were unconfirmed: {} bytes in {} regions written here differed from its data and were replaced ({} bytes were marked out of sync)",
                dc.peer, dc.differing_bytes, dc.differing_regions, dc.marked_bytes
            ),
        );
    }
}

fn fence(vol: &Volume, why: &str) {
    let mut st = vol.state();
    if st.fenced {
        return;
    }
    st.fenced = true;
    drop(st);
    vol.events.raise(
        EventKind::Fenced,
        format!("{why}: this server no longer holds the group; its writes are refused"),
    );
    vol.wake.notify_waiters();
}

/// Apply one frame from the peer; the acknowledgement's status.
fn apply(vol: &Volume, k: u8, h: &WriteHdr, data: &[u8], size: u64) -> u8 {
    let max_epoch = vol.super_block().max_epoch;
    if h.epoch < max_epoch {
        return status::STALE_EPOCH;
    }
    {
        let st = vol.state();
        if let Some(mine) = st.primary {
            if !st.fenced && h.epoch <= mine {
                // Two primaries: the lower (or equal) epoch of the sender loses.
                return status::STALE_EPOCH;
            }
        }
    }
    if k != kind::FLUSH && h.offset.checked_add(h.len).is_none_or(|end| end > size) {
        return status::REFUSED;
    }
    if h.epoch > max_epoch && block(|| vol.update_meta(|s| s.max_epoch = h.epoch)).is_err() {
        return status::IO_ERROR;
    }
    let fua = h.flags & proto::flag::FUA != 0;
    let r = block(|| match k {
        kind::WRITE | kind::COPY => {
            if data.len() as u64 != h.len {
                return Err(std::io::Error::other("length mismatch"));
            }
            if k == kind::COPY {
                check_discard(vol, h.offset, h.len, data);
            }
            vol.store.write_at(data, h.offset, fua)
        }
        kind::ZEROES if h.flags & proto::flag::TRIM != 0 => vol.store.trim(h.offset, h.len),
        kind::COPY_ZERO => {
            check_discard(vol, h.offset, h.len, &[]);
            vol.store.write_zeroes(h.offset, h.len, fua)
        }
        kind::ZEROES => vol.store.write_zeroes(h.offset, h.len, fua),
        _ => vol.store.flush(),
    });
    match r {
        Ok(()) => {
            if matches!(k, kind::COPY | kind::COPY_ZERO) {
                let mut st = vol.state();
                st.resync.done_bytes += h.len;
            }
            status::OK
        }
        Err(e) => {
            vol.events.raise(
                EventKind::DiskError,
                format!("writing what the peer sent: {e}"),
            );
            status::IO_ERROR
        }
    }
}

fn on_state(vol: &Volume, m: StateMsg) -> Result<(), String> {
    match m {
        StateMsg::Primary { epoch } => {
            let max = vol.super_block().max_epoch;
            if epoch > max {
                block(|| vol.update_meta(|s| s.max_epoch = epoch)).map_err(|e| e.to_string())?;
            }
            let mine = {
                let mut st = vol.state();
                st.peer_primary = true;
                st.primary
            };
            if mine.is_some_and(|e| e < epoch) {
                fence(vol, &format!("the peer became primary at epoch {epoch}"));
            }
        }
        StateMsg::Secondary => {
            // A clean demotion: everything it wrote came before this message.
            let mut st = vol.state();
            st.peer_primary = false;
            st.peer_backlog = None;
        }
        StateMsg::Ping => {}
        StateMsg::Backlog { bytes } => {
            vol.state().peer_backlog = Some((bytes, crate::clock::unix_ms()));
        }
        StateMsg::Outdated => {
            block(|| {
                vol.update_meta(|s| {
                    if s.disk != DiskState::Inconsistent {
                        s.disk = DiskState::Outdated
                    }
                })
            })
            .map_err(|e| e.to_string())?;
        }
        StateMsg::ResyncBegin { bytes } => {
            if bytes > 0 {
                block(|| vol.update_meta(|s| s.disk = DiskState::Inconsistent))
                    .map_err(|e| e.to_string())?;
            }
            let mut st = vol.state();
            st.target = true;
            st.resync = crate::volume::Resync {
                running: bytes > 0,
                source: false,
                total_bytes: bytes,
                started_ms: crate::clock::unix_ms(),
                ..Default::default()
            };
        }
        StateMsg::InSync { current, history } => {
            block(|| {
                vol.update_meta(|s| {
                    s.current = current;
                    s.history = history;
                    s.peer_current = current;
                    s.disk = DiskState::UpToDate;
                    s.split_brain = false;
                })
            })
            .map_err(|e| e.to_string())?;
            // Every bit this side had is covered by the copy.
            let bm = vol.bitmap();
            let mut r = bm.next_dirty(0);
            while let Some(i) = r {
                bm.clear_region(i);
                r = bm.next_dirty(i + 1);
            }
            let _ = block(|| bm.persist());
            finish_discard_check(vol);
            let mut st = vol.state();
            st.target = false;
            st.in_sync = true;
            st.resync.running = false;
        }
    }
    Ok(())
}

/// Copy every dirty region that no frame in flight covers, then tell the peer it has
/// everything; wait for new dirt; repeat. Runs on the source side of a session.
async fn resync_loop(vol: Arc<Volume>, session: u64, link: LinkSettings) {
    let bitmap = vol.bitmap();
    let region = vol.region_size();
    let size = vol.size_bytes();
    let mut announced = false;
    loop {
        if vol.state().session != session {
            return;
        }
        if vol.state().paused {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let started = crate::clock::now();
        let mut sent_in_pass = 0u64;
        let mut cursor = 0u64;
        let mut copied_any = false;
        let mut batch: Vec<u64> = Vec::with_capacity(COPY_BATCH);
        loop {
            // Up to COPY_BATCH dirty regions that no write in flight covers (its
            // acknowledgement will clear those), copied in one blocking task.
            batch.clear();
            while batch.len() < COPY_BATCH {
                let Some(r) = bitmap.next_dirty(cursor) else {
                    break;
                };
                cursor = r + 1;
                if !vol.in_flight(r) {
                    batch.push(r);
                }
            }
            if batch.is_empty() {
                break;
            }
            if vol.state().session != session {
                return;
            }
            if vol.state().paused {
                break;
            }
            if !announced {
                // Only regions nothing in flight covers need a copy: announce it now (the
                // peer is not usable until it completes).
                announced = true;
                let dirty = bitmap.dirty_count();
                let bytes = (dirty * region).min(size);
                {
                    let mut st = vol.state();
                    st.in_sync = false;
                    st.resync = crate::volume::Resync {
                        running: true,
                        source: true,
                        total_bytes: bytes,
                        started_ms: crate::clock::unix_ms(),
                        ..Default::default()
                    };
                }
                vol.send_state(&StateMsg::ResyncBegin { bytes });
                vol.events.raise(
                    EventKind::ResyncStarted,
                    format!("resync to the peer started: about {bytes} bytes in {dirty} regions"),
                );
            }
            let epoch = vol.super_block().max_epoch;
            let (v, regions) = (vol.clone(), batch.clone());
            let sent = tokio::task::spawn_blocking(move || {
                regions
                    .iter()
                    .map(|r| copy_region(&v, *r, epoch))
                    .collect::<Vec<_>>()
            })
            .await;
            let Ok(sent) = sent else { return };
            for (r, bytes) in batch.iter().zip(sent) {
                let Some(bytes) = bytes else { return };
                copied_any = true;
                sent_in_pass += bytes;
                let mut st = vol.state();
                st.resync.done_bytes += region.min(size - r * region);
                st.resync.sent_bytes += bytes;
                vol.counters
                    .resync_bytes
                    .fetch_add(bytes, Ordering::Relaxed);
            }
            {
                let mut st = vol.state();
                let el = crate::clock::unix_ms()
                    .saturating_sub(st.resync.started_ms)
                    .max(1);
                st.resync.rate_bytes_per_s = st.resync.done_bytes.saturating_mul(1000) / el;
                let left = st.resync.total_bytes.saturating_sub(st.resync.done_bytes);
                st.resync.remaining_s =
                    (st.resync.rate_bytes_per_s > 0).then(|| left / st.resync.rate_bytes_per_s);
            }
            if let Some(ms) = sent_in_pass
                .saturating_mul(1000)
                .checked_div(link.bandwidth_limit)
            {
                // Sleep until the bytes sent in this pass fit the limit.
                let due = Duration::from_millis(ms);
                let el = crate::clock::now().duration_since(started);
                if due > el {
                    tokio::time::sleep(due - el).await;
                }
            }
        }
        if copied_any {
            continue;
        }
        // Nothing left to copy: once everything in flight is acknowledged and nothing is
        // dirty, the peer has it all.
        if vol.copies_in_flight() == 0 && vol.stale_count() == 0 {
            let in_sync = vol.state().in_sync;
            if !in_sync || announced {
                let sb = vol.super_block();
                vol.send_state(&StateMsg::InSync {
                    current: sb.current,
                    history: sb.history,
                });
                let _ = block(|| vol.update_meta(|s| s.peer_current = s.current));
                let (done, sent, el_ms) = {
                    let mut st = vol.state();
                    st.in_sync = true;
                    let was = st.resync.running;
                    st.resync.running = false;
                    st.resync.finished_ms = Some(crate::clock::unix_ms());
                    let r = &st.resync;
                    (
                        was,
                        r.sent_bytes,
                        crate::clock::unix_ms().saturating_sub(r.started_ms),
                    )
                };
                if done {
                    vol.events.raise(
                        EventKind::ResyncDone,
                        format!("resync done: {sent} bytes sent in {el_ms} ms"),
                    );
                }
                announced = false;
            }
            tokio::select! {
                _ = vol.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        } else {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Read region `r` (under the exclusive side of the write lock, so no write is between
/// the read and the queueing) and queue it; the bytes that go on the link.
fn copy_region(vol: &Volume, r: u64, epoch: u64) -> Option<u64> {
    let region = vol.region_size();
    let offset = r * region;
    let len = region.min(vol.size_bytes() - offset) as usize;
    let mut buf = vol.zeroed_buffer(len);
    let _g = vol.io.write().unwrap_or_else(|p| p.into_inner());
    if let Err(e) = vol.store.read_at(&mut buf, offset) {
        vol.events.raise(
            EventKind::DiskError,
            format!("reading region {r} for the resync: {e}"),
        );
        return None;
    }
    let zero = buf.iter().all(|&b| b == 0);
    let n = if zero { 0 } else { len as u64 };
    vol.ship_copy(r, (!zero).then_some(buf), epoch)?;
    Some(n)
}
