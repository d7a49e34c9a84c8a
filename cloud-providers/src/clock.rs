//! The providers' one place that read the clocks: `clippy.toml` disallows
//! `Instant::now` and `SystemTime::now` everywhere else. Deadlines, retries and lease
//! observations run on [`Instant`], tokio's monotonic instant, the same kind as the
//! agent's and the notifier's (a paused test runtime controls it). The wall clock
//! ([`wall`]) only stamps records for people and other machines.

use std::time::{SystemTime, UNIX_EPOCH};

pub use tokio::time::Instant;

/// Now, on the monotonic clock.
#[allow(clippy::disallowed_methods)] // the one place the providers read it
pub fn now() -> Instant {
    Instant::now()
}

/// Now, on the wall clock (never for a timing decision).
#[allow(clippy::disallowed_methods)] // the one place the providers read it
pub fn wall() -> SystemTime {
    SystemTime::now()
}

/// Wall-clock milliseconds since the Unix epoch (0 before it).
pub fn unix_ms() -> u64 {
    wall()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
}
