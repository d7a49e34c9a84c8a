//! The clocks, read in one place for every crate that runs (the agent, the providers,
//! the notifier): `clippy.toml` disallows `Instant::now` and `SystemTime::now`
//! everywhere else, and each of those crates re-exports this module as its `clock`.
//! Every decision runs on [`Instant`], tokio's monotonic instant (one kind for all;
//! a paused test runtime controls it, and outside a runtime it is the system's
//! monotonic clock). The wall clock ([`wall`]) only stamps records for people and other
//! machines (events, ownership records, sequence bases, metric data, signatures,
//! certificate checks).

use std::time::{SystemTime, UNIX_EPOCH};

pub use tokio::time::Instant;

/// Now, on the monotonic clock.
#[allow(clippy::disallowed_methods)] // the one place it is read
pub fn now() -> Instant {
    Instant::now()
}

/// Now, on the wall clock (never for a timing decision).
#[allow(clippy::disallowed_methods)] // the one place it is read
pub fn wall() -> SystemTime {
    SystemTime::now()
}

/// Wall-clock milliseconds since the Unix epoch (0 before it).
pub fn unix_ms() -> u64 {
    wall()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
}
