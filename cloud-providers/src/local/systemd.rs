//! The `systemd` resource kind: start, stop and check one unit with `systemctl`.

use std::path::PathBuf;

use async_trait::async_trait;
use serde::Deserialize;

use crate::params::{key_error, parse_params};
use crate::process::{execute, run_command, CommandSpec};
use crate::{ActionContext, CheckOutcome, ParamError, Params, ProviderError, ResourceDriver};

/// Keys of a `systemd` resource. Activation runs `systemctl start UNIT`, deactivation
/// `systemctl stop UNIT`, checks `systemctl is-active UNIT`. The unit should not be
/// enabled at boot: Baton decides where it runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemdParams {
    /// Required. The unit name, e.g. `nginx.service` (without a suffix, systemd
    /// assumes `.service`).
    pub unit: String,
}

/// Driver of a `systemd` resource.
#[derive(Debug, Clone)]
pub struct SystemdDriver {
    pub params: SystemdParams,
    /// The directory that exists when systemd is the init system.
    marker: PathBuf,
    /// The `systemctl` program (looked up in PATH).
    systemctl: String,
}

const SYSTEMD_MARKER: &str = "/run/systemd/system";
const HINT: &str = "install systemd (the systemctl command)";

impl SystemdDriver {
    pub fn from_params(params: &Params) -> Result<Self, ParamError> {
        let p: SystemdParams = parse_params(params)?;
        let u = &p.unit;
        if u.is_empty()
            || u.starts_with('-')
            || u.chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '/')
        {
            return Err(key_error(
                "unit",
                format!("invalid unit name `{u}`: expected something like `nginx.service`"),
            ));
        }
        Ok(SystemdDriver {
            params: p,
            marker: PathBuf::from(SYSTEMD_MARKER),
            systemctl: "systemctl".into(),
        })
    }

    /// The same driver with another systemd marker directory and `systemctl` program
    /// (tests: a host without systemd, a unit that does not exist).
    #[cfg(test)]
    fn with_host(mut self, marker: impl Into<PathBuf>, systemctl: impl Into<String>) -> Self {
        self.marker = marker.into();
        self.systemctl = systemctl.into();
        self
    }

    fn systemd_running(&self) -> Result<(), ProviderError> {
        if self.marker.is_dir() {
            Ok(())
        } else {
            Err(ProviderError::Other(format!(
                "systemd is not running on this host (no {}): the systemd resource kind needs systemd as the init system",
                self.marker.display()
            )))
        }
    }

    fn systemctl(&self, ctx: &ActionContext, verb: &str) -> CommandSpec {
        CommandSpec::argv(
            format!("systemctl {verb} {}", self.params.unit),
            self.systemctl.as_str(),
            ["--no-ask-password", verb, self.params.unit.as_str()],
            ctx.timeout,
        )
        .with_missing_hint(HINT)
    }
}

/// What `systemctl is-active` printed, as a check outcome.
pub(crate) fn outcome_of_state(unit: &str, state: &str) -> CheckOutcome {
    match state {
        "active" | "reloading" => CheckOutcome::Active,
        "inactive" => CheckOutcome::Inactive,
        "failed" => CheckOutcome::Degraded(format!("unit {unit} has failed")),
        "" => CheckOutcome::Degraded(format!("systemctl reported no state for unit {unit}")),
        other => CheckOutcome::Degraded(format!("unit {unit} is {other}")),
    }
}

#[async_trait]
impl ResourceDriver for SystemdDriver {
    fn kind(&self) -> &'static str {
        "systemd"
    }

    async fn activate(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        self.systemd_running()?;
        run_command(&self.systemctl(ctx, "start")).await?;
        Ok(())
    }

    async fn deactivate(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        self.systemd_running()?;
        match run_command(&self.systemctl(ctx, "stop")).await {
            Ok(_) => Ok(()),
            // 5 = "unit not loaded": a unit that does not exist is not running.
            Err(ProviderError::CommandFailed {
                status: 5, stderr, ..
            }) => {
                tracing::warn!(unit = %self.params.unit, "stopping a unit that is not loaded: {stderr}");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn check(&self, ctx: &ActionContext) -> Result<CheckOutcome, ProviderError> {
        self.systemd_running()?;
        let out = execute(&self.systemctl(ctx, "is-active")).await?;
        let state = out.stdout.lines().next().unwrap_or("").trim();
        if state.is_empty() && !out.success() {
            return Err(ProviderError::CommandFailed {
                what: format!("systemctl is-active {}", self.params.unit),
                status: out.status,
                stderr: out.failure_text(),
            });
        }
        Ok(outcome_of_state(&self.params.unit, state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(s: &str) -> Params {
        s.parse::<toml::Table>().unwrap()
    }

    #[test]
    fn params() {
        assert!(SystemdDriver::from_params(&table("unit = 'nginx.service'")).is_ok());
        let e = SystemdDriver::from_params(&table("unit = '--now'")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("unit"));
        let e = SystemdDriver::from_params(&table("")).unwrap_err();
        assert_eq!(e.message, "missing required key `unit`");
    }

    #[test]
    fn states() {
        assert_eq!(outcome_of_state("a", "active"), CheckOutcome::Active);
        assert_eq!(outcome_of_state("a", "inactive"), CheckOutcome::Inactive);
        assert_eq!(
            outcome_of_state("a", "failed"),
            CheckOutcome::Degraded("unit a has failed".into())
        );
        assert_eq!(
            outcome_of_state("a", "activating"),
            CheckOutcome::Degraded("unit a is activating".into())
        );
    }

    fn ctx() -> ActionContext {
        ActionContext {
            cluster: "c".into(),
            group: "g".into(),
            resource: "r".into(),
            server: "s".into(),
            epoch: 1,
            timeout: std::time::Duration::from_secs(5),
        }
    }

    /// Runs everywhere: the host's systemd marker is replaced by a directory that does
    /// not exist, and `systemctl` by one that must never be called.
    #[tokio::test]
    async fn no_systemd_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let d = SystemdDriver::from_params(&table("unit = 'x.service'"))
            .unwrap()
            .with_host(dir.path().join("no-such-dir"), "/nonexistent/systemctl");
        for e in [
            d.activate(&ctx()).await.unwrap_err(),
            d.deactivate(&ctx()).await.unwrap_err(),
            d.check(&ctx()).await.unwrap_err(),
        ] {
            let msg = e.to_string();
            assert!(msg.contains("systemd is not running on this host"), "{msg}");
            assert!(msg.contains("no-such-dir"), "{msg}");
        }
    }

    /// A unit that does not exist, with `systemctl` answering as systemd does (exit 5,
    /// "Unit ... not found"): starting it fails with systemctl's words, stopping it is
    /// done (nothing runs), checking it says inactive.
    #[tokio::test]
    async fn a_unit_that_does_not_exist() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let calls = dir.path().join("calls");
        let fake = dir.path().join("systemctl");
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\necho \"$*\" >> {calls}\ncase \"$2\" in\n\
                 start) echo \"Failed to start $3: Unit $3 not found.\" >&2; exit 5;;\n\
                 stop) echo \"Failed to stop $3: Unit $3 not loaded.\" >&2; exit 5;;\n\
                 is-active) echo inactive; exit 3;;\nesac\nexit 1\n",
                calls = calls.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let d = SystemdDriver::from_params(&table("unit = 'no-such.service'"))
            .unwrap()
            .with_host(dir.path(), fake.to_string_lossy());
        let e = d.activate(&ctx()).await.unwrap_err();
        match &e {
            ProviderError::CommandFailed { status, stderr, .. } => {
                assert_eq!(*status, 5);
                assert!(
                    stderr.contains("Unit no-such.service not found"),
                    "{stderr}"
                );
            }
            other => panic!("expected CommandFailed, got {other:?}"),
        }
        d.deactivate(&ctx()).await.unwrap();
        assert_eq!(d.check(&ctx()).await.unwrap(), CheckOutcome::Inactive);
        let calls = std::fs::read_to_string(&calls).unwrap();
        assert_eq!(
            calls,
            "--no-ask-password start no-such.service\n\
             --no-ask-password stop no-such.service\n\
             --no-ask-password is-active no-such.service\n"
        );
    }
}
