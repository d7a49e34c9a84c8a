//! Harness for the integration tests: real `baton agent` processes on loopback
//! addresses `127.0.N.x`, driven through the real `baton` CLI.
//!
//! * [`Cluster::start`] writes a key (with `baton keygen`) and a configuration into a
//!   temporary directory, checks it with `baton config check`, and starts one agent per
//!   server (logs in `node-N.log`). Dropping the cluster kills the agents and every
//!   application process the `exec` resource started (found through its pid files), and
//!   prints the tail of each agent log if the test is failing.
//! * The group `web` holds a `local-claim` resource (a shared claim file whose
//!   `.history` records every change of owner and epoch) and an `exec` resource that
//!   backgrounds `sleep 1000` and writes its pid to `app-SERVER.pid`.
//! * An optional `exec` monitor (`app-check`) fails on a server while the file
//!   `fail-SERVER` exists ([`Cluster::set_fail`]) and logs each poll to
//!   `polls-SERVER.log` ([`Cluster::polls`]).
//! * [`watch::Watcher`] polls every agent throughout a scenario and proves that the
//!   group was never online on two servers at once.
//! * [`netns::Netns`] owns network namespaces (root only) for the tests that need real
//!   interfaces; dropping it kills what runs inside them and deletes them.
//!
//! Find the binary with [`bin::baton_bin`]: next to the test executable's target
//! directory, or `BATON_BIN`.
// Tests measure the real time of real processes and sockets: they read the clock directly.
#![allow(clippy::disallowed_methods)]
// Panicking is how this harness reports a failed expectation.
#![allow(clippy::expect_used, clippy::unwrap_used)]

pub mod aws;
pub mod azure;
pub mod bin;
pub mod client;
pub mod cloud_cluster;
pub mod cluster;
pub mod config;
pub mod gcp;
pub mod http;
pub mod lab;
pub mod model;
pub mod moto;
pub mod netns;
pub mod nft;
pub mod notify;
pub mod skip;
pub mod watch;
pub mod web;

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use client::{Baton, CliOut};
pub use cluster::{Cluster, ClusterSpec, MonitorSpec, GROUP, MONITOR};
pub use model::{AgentStatus, Claim, ClusterStatus, Event, Events};
pub use nix::sys::signal::Signal;

/// A TCP port free on every one of `hosts` (loopback addresses) at the time of asking,
/// never the same twice in this process: tests run in parallel, and a port asked of the
/// kernel (`:0`) and released at once can be handed to the next test that asks.
pub fn free_port(hosts: &[&str]) -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let base = 30_000 + u16::try_from(std::process::id() % 1_000).unwrap_or(0) * 20;
    loop {
        let port = base + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 10_000;
        if hosts
            .iter()
            .all(|h| std::net::TcpListener::bind((*h, port)).is_ok())
        {
            return port;
        }
    }
}

/// Poll `f` every 100 ms until it returns `Ok`, or panic after `timeout` with `what` and
/// the last reason `f` gave.
pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        let t = Instant::now();
        match f() {
            Ok(v) => return v,
            Err(why) => {
                if start.elapsed() > timeout {
                    panic!(
                        "timed out after {:.1} s waiting until {what}; last state: {why}",
                        start.elapsed().as_secs_f64()
                    );
                }
            }
        }
        let spent = t.elapsed();
        if spent < Duration::from_millis(100) {
            std::thread::sleep(Duration::from_millis(100) - spent);
        }
    }
}

/// Serialises the multi-agent scenarios of one test binary (the machine may have only
/// two cores): take it first in every scenario. A panicking scenario does not poison
/// the next one.
/// Parse the output of `baton alerts --json` (one event per line).
pub fn parse_event_lines(stdout: &str) -> Result<Vec<Event>, String> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("bad event line ({e}): {l}")))
        .collect()
}

pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}
