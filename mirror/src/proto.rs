//! What the two mirror processes say to each other over the [`crate::link`]: the hello of
//! each side, the frames of replication and resync, and the decision who copies to whom.
//!
//! Hot frames (writes, copies, acknowledgements) have fixed little-endian headers in the
//! frame's `meta`; rare ones (hello, state) are JSON.

use serde::{Deserialize, Serialize};

use crate::meta::DiskState;

/// Frame kinds.
pub mod kind {
    /// An application write: [`WriteHdr`], data = the bytes.
    pub const WRITE: u8 = 1;
    /// Zeroes or a trim over a range: [`WriteHdr`] (`len` in the header), no data.
    pub const ZEROES: u8 = 2;
    /// Make everything received durable: [`WriteHdr`] with offset and len 0.
    pub const FLUSH: u8 = 3;
    /// A resync copy of one region: [`WriteHdr`] (offset = region start), data = the bytes.
    pub const COPY: u8 = 4;
    /// A resync of a region that holds only zeroes: [`WriteHdr`], no data.
    pub const COPY_ZERO: u8 = 5;
    /// Acknowledgement: [`Ack`].
    pub const ACK: u8 = 6;
    /// A change of state, JSON [`StateMsg`].
    pub const STATE: u8 = 7;
    /// The sender's dirty bitmap (in the handshake), data = the bytes.
    pub const BITMAP: u8 = 8;
}

/// Flags of [`WriteHdr`].
pub mod flag {
    /// Durable on the peer before it acknowledges (FUA).
    pub const FUA: u8 = 1;
    /// `ZEROES` is a trim.
    pub const TRIM: u8 = 2;
}

/// Header of WRITE, ZEROES, FLUSH, COPY and COPY_ZERO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteHdr {
    pub epoch: u64,
    pub seq: u64,
    pub offset: u64,
    pub len: u64,
    pub flags: u8,
}

pub const WRITE_HDR_LEN: usize = 33;

impl WriteHdr {
    pub fn encode(&self) -> [u8; WRITE_HDR_LEN] {
        let mut b = [0u8; WRITE_HDR_LEN];
        b[0..8].copy_from_slice(&self.epoch.to_le_bytes());
        b[8..16].copy_from_slice(&self.seq.to_le_bytes());
        b[16..24].copy_from_slice(&self.offset.to_le_bytes());
        b[24..32].copy_from_slice(&self.len.to_le_bytes());
        b[32] = self.flags;
        b
    }
    pub fn decode(b: &[u8]) -> Option<WriteHdr> {
        if b.len() != WRITE_HDR_LEN {
            return None;
        }
        let u = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        Some(WriteHdr {
            epoch: u(0),
            seq: u(8),
            offset: u(16),
            len: u(24),
            flags: b[32],
        })
    }
}

/// Status of an [`Ack`].
pub mod status {
    pub const OK: u8 = 0;
    /// The peer could not write it to its store.
    pub const IO_ERROR: u8 = 1;
    /// The frame's epoch is lower than the highest the peer has seen: the sender no
    /// longer holds the group (fencing).
    pub const STALE_EPOCH: u8 = 2;
    /// Out of the volume's bounds or otherwise not acceptable.
    pub const REFUSED: u8 = 3;
}

/// Acknowledgement of every frame up to `seq` (frames are applied in order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub seq: u64,
    pub status: u8,
}

impl Ack {
    pub fn encode(&self) -> [u8; 9] {
        let mut b = [0u8; 9];
        b[0..8].copy_from_slice(&self.seq.to_le_bytes());
        b[8] = self.status;
        b
    }
    pub fn decode(b: &[u8]) -> Option<Ack> {
        if b.len() != 9 {
            return None;
        }
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[0..8]);
        Some(Ack {
            seq: u64::from_le_bytes(a),
            status: b[8],
        })
    }
}

/// What each side says first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub server: String,
    pub volume_id: String,
    pub size: u64,
    pub region_size: u32,
    pub current: u64,
    pub history: [u64; 4],
    pub disk: DiskState,
    pub max_epoch: u64,
    /// Primary, with this epoch.
    pub primary: Option<u64>,
    pub split_brain: bool,
    /// The operator chose to throw this side's changes away (split brain resolution).
    pub discard_local: bool,
}

/// State changes sent during a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum StateMsg {
    /// The sender became primary at `epoch` (a primary peer with a lower epoch is fenced).
    Primary { epoch: u64 },
    /// The sender is secondary now.
    Secondary,
    /// The receiver no longer has everything (async queue full, replication paused).
    Outdated,
    /// Resync from the sender starts: `bytes` to copy.
    ResyncBegin { bytes: u64 },
    /// The receiver has everything the sender has, at generation `current`.
    InSync { current: u64, history: [u64; 4] },
    /// Nothing else to say: the link is alive (sent when idle).
    Ping,
    /// The sender (primary) has `bytes` that the receiver may not have yet: regions with
    /// writes in flight or out of sync (an upper bound). Sent about once a second; after
    /// an async takeover it is what the new primary reports as possibly missing.
    Backlog { bytes: u64 },
}

/// Who copies to whom when two sides meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// This side is the source (the other side's regions marked in either bitmap are
    /// copied from here).
    Source,
    /// The peer is the source.
    Target,
    /// Both sides wrote since they last agreed: nothing is copied until an operator
    /// chooses the side to keep.
    SplitBrain,
    /// These are not two halves of one volume.
    Refuse(String),
}

fn knows(h: &Hello, gen: u64) -> bool {
    gen == 0 || h.current == gen || h.history.contains(&gen)
}

/// The decision of the side that said `me` meeting the side that said `peer`. Both
/// sides compute it and reach mirrored answers (`Source` on one, `Target` on the other),
/// with ties broken by server name.
pub fn decide(me: &Hello, peer: &Hello) -> Decision {
    if me.size != peer.size {
        return Decision::Refuse(format!(
            "the peer's volume is {} bytes, this one {} bytes",
            peer.size, me.size
        ));
    }
    if me.region_size != peer.region_size {
        return Decision::Refuse(format!(
            "the peer's region size is {}, this one {}",
            peer.region_size, me.region_size
        ));
    }
    if me.volume_id != peer.volume_id && me.current != 0 && peer.current != 0 {
        return Decision::Refuse(format!(
            "the peer holds another volume (id {}, this one {})",
            peer.volume_id, me.volume_id
        ));
    }
    // An operator's choice settles everything.
    match (me.discard_local, peer.discard_local) {
        (true, false) => return Decision::Target,
        (false, true) => return Decision::Source,
        _ => {}
    }
    let tie = || {
        if me.server < peer.server {
            Decision::Source
        } else {
            Decision::Target
        }
    };
    if me.split_brain || peer.split_brain {
        return Decision::SplitBrain;
    }
    let by_gen = if me.current == peer.current {
        None
    } else if knows(me, peer.current) {
        Some(Decision::Source)
    } else if knows(peer, me.current) {
        Some(Decision::Target)
    } else {
        return Decision::SplitBrain;
    };
    match (me.primary, peer.primary) {
        (Some(_), None) => match by_gen {
            Some(Decision::Target) => Decision::SplitBrain,
            _ => Decision::Source,
        },
        (None, Some(_)) => match by_gen {
            Some(Decision::Source) => Decision::SplitBrain,
            _ => Decision::Target,
        },
        (Some(a), Some(b)) => {
            // Two primaries: the higher epoch holds the group; the other is fenced.
            if a > b {
                Decision::Source
            } else if b > a {
                Decision::Target
            } else {
                Decision::SplitBrain
            }
        }
        (None, None) => match by_gen {
            Some(d) => d,
            None => {
                // Same data generation: prefer a side that was up to date.
                let good = |d: DiskState| matches!(d, DiskState::UpToDate | DiskState::Consistent);
                match (good(me.disk), good(peer.disk)) {
                    (true, false) => Decision::Source,
                    (false, true) => Decision::Target,
                    _ => tie(),
                }
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(server: &str, current: u64, history: [u64; 4]) -> Hello {
        Hello {
            server: server.into(),
            volume_id: "v".into(),
            size: 1 << 20,
            region_size: 65536,
            current,
            history,
            disk: DiskState::UpToDate,
            max_epoch: 1,
            primary: None,
            split_brain: false,
            discard_local: false,
        }
    }

    #[test]
    fn headers_round_trip() {
        let h = WriteHdr {
            epoch: 7,
            seq: u64::MAX,
            offset: 4096,
            len: 65536,
            flags: flag::FUA,
        };
        assert_eq!(WriteHdr::decode(&h.encode()), Some(h));
        assert_eq!(WriteHdr::decode(&[0; 5]), None);
        let a = Ack { seq: 9, status: 2 };
        assert_eq!(Ack::decode(&a.encode()), Some(a));
    }

    #[test]
    fn decisions_mirror_each_other() {
        let a = hello("a", 5, [3, 0, 0, 0]);
        let b = hello("b", 3, [0; 4]);
        assert_eq!(decide(&a, &b), Decision::Source);
        assert_eq!(decide(&b, &a), Decision::Target);
        // Both moved on from 3: split brain.
        let c = hello("b", 6, [3, 0, 0, 0]);
        assert_eq!(decide(&a, &c), Decision::SplitBrain);
        assert_eq!(decide(&c, &a), Decision::SplitBrain);
        // Discarding settles it.
        let mut d = c.clone();
        d.discard_local = true;
        assert_eq!(decide(&a, &d), Decision::Source);
        assert_eq!(decide(&d, &a), Decision::Target);
        // Equal generations: name breaks the tie, the same way on both sides.
        let e = hello("b", 5, [3, 0, 0, 0]);
        assert_eq!(decide(&a, &e), Decision::Source);
        assert_eq!(decide(&e, &a), Decision::Target);
        // A primary is the source, unless it is behind.
        let mut p = hello("b", 5, [3, 0, 0, 0]);
        p.primary = Some(4);
        assert_eq!(decide(&p, &a), Decision::Source);
        assert_eq!(decide(&a, &p), Decision::Target);
        let mut stale_primary = hello("b", 3, [0; 4]);
        stale_primary.primary = Some(4);
        assert_eq!(decide(&stale_primary, &a), Decision::SplitBrain);
        // Sizes differ: refused.
        let mut big = hello("b", 5, [0; 4]);
        big.size *= 2;
        assert!(matches!(decide(&a, &big), Decision::Refuse(_)));
    }
}
