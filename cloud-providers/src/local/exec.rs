//! The `exec` resource kind: shell scripts that start, stop and check a resource.

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;
use serde::Deserialize;

use super::procfs;
use crate::params::{check_env, non_blank, parse_params};
use crate::process::{execute, run_command, CommandSpec};
use crate::{ActionContext, CheckOutcome, ParamError, Params, ProviderError, ResourceDriver};

/// Keys of an `exec` resource. Every command is a shell command line run with
/// `/bin/sh -c`, in its own process group, with the `BATON_*` variables (`BATON_CLUSTER`,
/// `BATON_GROUP`, `BATON_RESOURCE`, `BATON_SERVER`, `BATON_EPOCH`, `BATON_ACTION`,
/// `BATON_TIMEOUT_MS`, and `BATON_PID_FILE` when `pid_file` is set) plus `env`, and the
/// action's timeout: a command still running at the deadline is killed with its whole
/// process group.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecParams {
    /// Required. Command that starts the resource and returns once it is up. Start
    /// daemons in the background (`myapp >>/var/log/myapp.log 2>&1 &`): they are
    /// left running when the command exits; only a command that overruns its
    /// timeout is killed, with everything in its process group.
    pub start: String,
    /// Required. Command that stops the resource. It must succeed (exit 0) when the
    /// resource is already stopped.
    pub stop: String,
    /// Optional. Command that checks the resource without changing it: exit 0 means
    /// active, exit 1 or 3 (LSB "not running") means inactive, any other status means
    /// degraded (found, but not healthy).
    pub check: Option<String>,
    /// Optional. Pid file the start command writes. Without `check`, the resource is
    /// active while the process it names is alive (a missing file or a dead process
    /// means inactive). Given to the commands as `BATON_PID_FILE`. Without `check`
    /// nor `pid_file`, checks report "degraded: cannot verify".
    pub pid_file: Option<PathBuf>,
    /// Optional. Working directory of the commands (default: the agent's).
    pub dir: Option<PathBuf>,
    /// Optional. Extra environment variables for the commands, as a table of strings.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// Driver of an `exec` resource.
#[derive(Debug, Clone)]
pub struct ExecDriver {
    pub params: ExecParams,
}

impl ExecDriver {
    pub fn from_params(params: &Params) -> Result<Self, ParamError> {
        let p: ExecParams = parse_params(params)?;
        non_blank("start", &p.start)?;
        non_blank("stop", &p.stop)?;
        if let Some(check) = &p.check {
            non_blank("check", check)?;
        }
        check_env("env", &p.env)?;
        Ok(ExecDriver { params: p })
    }

    fn spec(&self, ctx: &ActionContext, action: &str, line: &str) -> CommandSpec {
        let mut env = ctx.env(action);
        if let Some(pid_file) = &self.params.pid_file {
            env.push((
                "BATON_PID_FILE".into(),
                pid_file.to_string_lossy().into_owned(),
            ));
        }
        env.extend(self.params.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        CommandSpec::shell(
            format!("{action} command of exec resource `{}`", ctx.resource),
            line,
            ctx.timeout,
        )
        .with_env(env)
        .with_dir(self.params.dir.clone())
    }
}

#[async_trait]
impl ResourceDriver for ExecDriver {
    fn kind(&self) -> &'static str {
        "exec"
    }

    async fn activate(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        let out = run_command(&self.spec(ctx, "start", &self.params.start)).await?;
        if out.output_detached {
            tracing::warn!(
                resource = %ctx.resource,
                "the start command of exec resource `{}` left a background process attached to its output; \
                 redirect that process's output (e.g. `myapp >>/var/log/myapp.log 2>&1 &`) so it does not \
                 depend on the agent",
                ctx.resource
            );
        }
        Ok(())
    }

    async fn deactivate(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        run_command(&self.spec(ctx, "stop", &self.params.stop)).await?;
        Ok(())
    }

    async fn check(&self, ctx: &ActionContext) -> Result<CheckOutcome, ProviderError> {
        if let Some(check) = &self.params.check {
            let out = execute(&self.spec(ctx, "check", check)).await?;
            return Ok(match out.status {
                0 => CheckOutcome::Active,
                1 | 3 => CheckOutcome::Inactive,
                status => CheckOutcome::Degraded(format!(
                    "check command exited with status {status}: {}",
                    out.last_line().unwrap_or_else(|| "(no output)".into())
                )),
            });
        }
        if let Some(pid_file) = &self.params.pid_file {
            let path = pid_file.clone();
            let found = tokio::task::spawn_blocking(move || {
                procfs::read_pid_file(&path).map(|pid| pid.map(|p| (p, procfs::pid_alive(p))))
            })
            .await
            .map_err(|e| ProviderError::Other(format!("pid file check failed: {e}")))?;
            return Ok(match found {
                Ok(Some((_, true))) => CheckOutcome::Active,
                Ok(Some((_, false))) | Ok(None) => CheckOutcome::Inactive,
                Err(why) => CheckOutcome::Degraded(why),
            });
        }
        Ok(CheckOutcome::Degraded(
            "no check command or pid_file configured: cannot verify".into(),
        ))
    }
}
