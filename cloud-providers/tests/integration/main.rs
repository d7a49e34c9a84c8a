//! Integration tests of the on-host providers, in one binary to keep link time down.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Tests measure the real time of real processes and sockets: they read the clock directly.
#![allow(clippy::disallowed_methods)]

mod claim;
mod exec_resource;
mod floating_ip;
mod params;
mod probes;
mod process;

use std::path::Path;
use std::time::Duration;

use baton_providers::{ActionContext, Params, ProbeContext};

pub fn table(s: &str) -> Params {
    s.parse::<toml::Table>().unwrap()
}

pub fn ctx(server: &str, epoch: u64, timeout: Duration) -> ActionContext {
    ActionContext {
        cluster: "test-cluster".into(),
        group: "web".into(),
        resource: "app".into(),
        server: server.into(),
        epoch,
        timeout,
    }
}

pub fn pctx(timeout: Duration) -> ProbeContext {
    ProbeContext {
        cluster: "test-cluster".into(),
        server: "node-1".into(),
        monitor: "mon".into(),
        timeout,
        group_state: None,
    }
}

/// TOML basic string literal for a path or any text.
pub fn q(s: impl AsRef<str>) -> String {
    toml::Value::String(s.as_ref().to_string()).to_string()
}

pub fn qp(p: &Path) -> String {
    q(p.to_string_lossy())
}

/// Alive and not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let after = &stat[stat.rfind(')').unwrap() + 1..];
            !matches!(after.trim_start().chars().next(), Some('Z' | 'X'))
        }
        Err(_) => false,
    }
}

pub fn read_pid(p: &Path) -> u32 {
    for _ in 0..100 {
        if let Ok(s) = std::fs::read_to_string(p) {
            if let Ok(pid) = s.trim().parse() {
                return pid;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no pid in {}", p.display());
}

pub fn kill(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
}
