//! What the mirror process has to tell the operator. It keeps the newest events in a
//! bounded log with sequence numbers; the agent fetches them through the control socket
//! (`events` since the last one it saw) and raises them in its alert log with the ids of
//! the event catalogue (`baton_core::events`, module `mirror`).

use std::collections::VecDeque;
use std::sync::Mutex;

use baton_core::events::{self, EventDef};
use serde::{Deserialize, Serialize};

/// Kinds of mirror events, each with its catalogue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Connected,
    Disconnected,
    ResyncStarted,
    ResyncDone,
    Degraded,
    SplitBrain,
    StaleRefused,
    ForcedPrimary,
    PeerRefused,
    PeerMismatch,
    Fenced,
    Paused,
    Resumed,
    QueueFull,
    DiskError,
    WritesSuspended,
    Started,
    SplitBrainResolved,
    AsyncTakeover,
    AsyncDiscarded,
}

impl EventKind {
    pub fn def(self) -> &'static EventDef {
        match self {
            EventKind::Connected => &events::MIRROR_CONNECTED,
            EventKind::Disconnected => &events::MIRROR_DISCONNECTED,
            EventKind::ResyncStarted => &events::MIRROR_RESYNC_STARTED,
            EventKind::ResyncDone => &events::MIRROR_RESYNC_DONE,
            EventKind::Degraded => &events::MIRROR_DEGRADED,
            EventKind::SplitBrain => &events::MIRROR_SPLIT_BRAIN,
            EventKind::StaleRefused => &events::MIRROR_STALE_REFUSED,
            EventKind::ForcedPrimary => &events::MIRROR_FORCED_PRIMARY,
            EventKind::PeerRefused => &events::MIRROR_PEER_REFUSED,
            EventKind::PeerMismatch => &events::MIRROR_PEER_MISMATCH,
            EventKind::Fenced => &events::MIRROR_FENCED,
            EventKind::Paused => &events::MIRROR_PAUSED,
            EventKind::Resumed => &events::MIRROR_RESUMED,
            EventKind::QueueFull => &events::MIRROR_QUEUE_FULL,
            EventKind::DiskError => &events::MIRROR_DISK_ERROR,
            EventKind::WritesSuspended => &events::MIRROR_WRITES_SUSPENDED,
            EventKind::Started => &events::MIRROR_STARTED,
            EventKind::SplitBrainResolved => &events::MIRROR_SPLIT_BRAIN_RESOLVED,
            EventKind::AsyncTakeover => &events::MIRROR_ASYNC_TAKEOVER,
            EventKind::AsyncDiscarded => &events::MIRROR_ASYNC_DISCARDED,
        }
    }
}

/// One event of the mirror process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MirrorEvent {
    pub seq: u64,
    pub kind: EventKind,
    pub message: String,
    pub unix_ms: u64,
}

/// The newest events (at most `CAP`).
#[derive(Debug, Default)]
pub struct EventLog {
    inner: Mutex<(u64, VecDeque<MirrorEvent>)>,
}

const CAP: usize = 256;

impl EventLog {
    pub fn raise(&self, kind: EventKind, message: String) {
        tracing::info!(event = kind.def().code(), "{message}");
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0 += 1;
        let seq = g.0;
        if g.1.len() == CAP {
            g.1.pop_front();
        }
        g.1.push_back(MirrorEvent {
            seq,
            kind,
            message,
            unix_ms: crate::clock::unix_ms(),
        });
    }

    /// Events after `seq`, oldest first.
    pub fn since(&self, seq: u64) -> Vec<MirrorEvent> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.1.iter().filter(|e| e.seq > seq).cloned().collect()
    }

    pub fn last_seq(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0
    }
}
