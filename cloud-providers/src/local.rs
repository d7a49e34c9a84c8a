//! The on-host provider kinds: everything that needs no cloud.
//!
//! Resource kinds: `exec` (scripts), `floating-ip` (an address on a local interface),
//! `systemd` (a unit), `local-claim` (a file that simulates a cloud mutation, for
//! demos and fencing tests). Monitor kinds: `process`, `tcp`, `http`, `exec`, `ping`.
//! Each kind's keys are the documented fields of its `*Params` struct.

use crate::{ParamError, Params, Probe, Registry, ResourceDriver};

pub mod claim;
pub mod exec;
pub mod floating_ip;
pub mod probes;
pub mod procfs;
pub mod systemd;

/// Resource kinds this registry builds.
pub const RESOURCE_KINDS: &[&str] = &["exec", "floating-ip", "systemd", "local-claim"];
/// Monitor kinds this registry builds.
pub const MONITOR_KINDS: &[&str] = &["process", "tcp", "http", "exec", "ping"];

/// The registry of the on-host kinds.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalRegistry;

impl Registry for LocalRegistry {
    fn resource_kinds(&self) -> Vec<&'static str> {
        RESOURCE_KINDS.to_vec()
    }

    fn monitor_kinds(&self) -> Vec<&'static str> {
        MONITOR_KINDS.to_vec()
    }

    fn build_resource(
        &self,
        kind: &str,
        params: &Params,
    ) -> Result<Box<dyn ResourceDriver>, ParamError> {
        Ok(match kind {
            "exec" => Box::new(exec::ExecDriver::from_params(params)?),
            "floating-ip" => Box::new(floating_ip::FloatingIpDriver::from_params(params)?),
            "systemd" => Box::new(systemd::SystemdDriver::from_params(params)?),
            "local-claim" => Box::new(claim::LocalClaimDriver::from_params(params)?),
            other => {
                return Err(ParamError::new(
                    Some("kind".to_string()),
                    format!(
                        "unknown resource kind `{other}`; known kinds: {}",
                        RESOURCE_KINDS.join(", ")
                    ),
                ))
            }
        })
    }

    fn build_probe(&self, kind: &str, params: &Params) -> Result<Box<dyn Probe>, ParamError> {
        Ok(match kind {
            "process" => Box::new(probes::ProcessProbe::from_params(params)?),
            "tcp" => Box::new(probes::TcpProbe::from_params(params)?),
            "http" => Box::new(probes::HttpProbe::from_params(params)?),
            "exec" => Box::new(probes::ExecProbe::from_params(params)?),
            "ping" => Box::new(probes::PingProbe::from_params(params)?),
            other => {
                return Err(ParamError::new(
                    Some("kind".to_string()),
                    format!(
                        "unknown monitor kind `{other}`; known kinds: {}",
                        MONITOR_KINDS.join(", ")
                    ),
                ))
            }
        })
    }
}
