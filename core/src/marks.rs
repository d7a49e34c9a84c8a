//! Data marks: which server of a `mirror-disk` resource holds its newest data, kept by
//! the whole cluster and not only by the two servers of the mirror.
//!
//! The mirror's own data generations (docs/src/mirroring.md) let two sides that meet
//! compare their data. They cannot help a side that meets nobody: if the secondary is
//! cut off, the primary writes alone, then dies, and the secondary later regains
//! quorum with the third server, it never learned that it is behind. So before a
//! primary acknowledges a write its peer does not get, its agent raises the mark of the
//! resource to "this server only" and waits until a quorum of votes (servers that echo
//! it in their heartbeats, or the witness that stored it) holds it. A server whose
//! agent sees a mark that excludes it refuses to promote its copy (BTN-7007) unless the
//! operator forces it. When both sides are in sync again, either raises the mark to
//! "both".
//!
//! A mark is a max-register: `seq << 2 | current`, where bit 0 of `current` is the
//! first of the mirror's two servers in name order and bit 1 the second; 0 (no mark
//! yet) means both. Every server keeps the highest value it has seen for each key
//! (`group/resource`), persists it with its epochs and sends it in every heartbeat and
//! witness request; the witness keeps the maximum of each key like an epoch.

use crate::config::Config;

/// The resource kind whose data marks the engine keeps.
pub const MIRROR_KIND: &str = "mirror-disk";

/// The key of resource `resource` of group `group`. Names have no `/`.
pub fn key(group: &str, resource: &str) -> String {
    format!("{group}/{resource}")
}

/// Is `key` a mark key (as opposed to a group's epoch in the same maps)?
pub fn is_mark_key(key: &str) -> bool {
    key.contains('/')
}

/// The mark keys of `cfg`: every `mirror-disk` resource.
pub fn keys(cfg: &Config) -> Vec<String> {
    cfg.groups
        .iter()
        .flat_map(|g| {
            g.resources
                .iter()
                .filter(|r| r.kind == MIRROR_KIND)
                .map(|r| key(&g.name, &r.name))
        })
        .collect()
}

/// Both servers hold the newest data.
pub const BOTH: u8 = 3;

/// A decoded mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub seq: u64,
    /// Bit 0: the first server in name order, bit 1: the second.
    pub current: u8,
}

impl Mark {
    pub fn decode(value: u64) -> Mark {
        match value {
            0 => Mark {
                seq: 0,
                current: BOTH,
            },
            v => Mark {
                seq: v >> 2,
                current: (v & 3) as u8,
            },
        }
    }

    /// Does the mark say the server with bit `bit` holds the newest data?
    pub fn includes(&self, bit: u8) -> bool {
        self.current & bit != 0
    }

    /// The value that records `current` after this mark; `None` when this mark already
    /// says so.
    pub fn raised(&self, current: u8) -> Option<u64> {
        (self.current != current).then(|| ((self.seq + 1) << 2) | u64::from(current & 3))
    }
}

/// The bit of server `me` in the mark of a mirror whose other server is `peer`.
pub fn bit(me: &str, peer: &str) -> u8 {
    if me < peer {
        1
    } else {
        2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_order_by_sequence_and_say_who_is_current() {
        let none = Mark::decode(0);
        assert!(none.includes(1) && none.includes(2));
        let a = none.raised(bit("a", "b")).unwrap_or(0);
        let ma = Mark::decode(a);
        assert!(ma.includes(bit("a", "b")) && !ma.includes(bit("b", "a")));
        assert_eq!(ma.raised(1), None);
        let both = ma.raised(BOTH).unwrap_or(0);
        assert!(both > a, "a later mark is a higher value");
        let b = Mark::decode(both).raised(bit("b", "a")).unwrap_or(0);
        assert!(b > both);
        assert!(!Mark::decode(b).includes(bit("a", "b")));
        assert!(crate::bounds::epoch_ok(b));
    }
}
