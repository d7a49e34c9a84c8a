//! The mirror disk (`mirror-disk` resource, docs/src/mirroring.md): a block volume kept
//! on both servers of a group and served to the application through NBD on the active one.
//!
//! [`nbd`] is the NBD server (fixed newstyle handshake; READ, WRITE with FUA, FLUSH, TRIM,
//! WRITE_ZEROES, DISC) over a [`store::BlockStore`]; [`meta`] the per-server metadata
//! (data generations, dirty bitmap); [`link`] the Noise-encrypted link to the peer;
//! [`proto`] and [`session`] what the two sides say and decide when they meet;
//! [`volume`] the write path (bitmap, local write, replication); [`daemon`] and
//! [`control`] the mirror process the agent starts and drives through a control socket.
#![forbid(unsafe_code)]

pub mod control;
pub mod daemon;
pub mod events;
pub mod link;
pub mod meta;
pub mod nbd;
pub mod params;
pub mod proto;
pub mod session;
pub mod store;
pub mod volume;

pub use baton_providers::clock;
