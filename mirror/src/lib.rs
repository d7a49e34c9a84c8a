//! The mirror disk (`mirror-disk` resource, issue 11): a block volume the application
//! reads and writes through NBD on the active server.
//!
//! This first part is the data path's front: an NBD server ([`nbd`]) speaking the fixed
//! newstyle handshake (`NBD_OPT_GO`, `NBD_OPT_INFO`, `NBD_OPT_EXPORT_NAME`, `NBD_OPT_LIST`,
//! `NBD_OPT_ABORT`) and the transmission commands READ, WRITE (with FUA), FLUSH, TRIM,
//! WRITE_ZEROES and DISC with simple replies, over a [`store::BlockStore`] (a file or a
//! block device). The link to the peer ([`link`]) carries replication traffic: a Noise
//! `NNpsk0` handshake on the link's pre-shared key, then encrypted, authenticated frames
//! with optional lz4 or zstd compression. Replication, the dirty bitmap and resync build
//! on them.
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
