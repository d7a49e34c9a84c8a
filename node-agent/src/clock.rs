//! The agent's clock: `baton_cloud_client::clock`, the one place every runtime crate
//! reads the time (see there, and `clippy.toml`).

pub use baton_cloud_client::clock::*;
