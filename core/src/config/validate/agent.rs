//! `[agent]`: the alert log, shutdown, fencing commands and the scripts' environment.

use super::{check_max, ms};
use crate::config::diagnostics::{k, Diags, Seg};
use crate::config::{AgentSection, FenceMethod};

pub(super) fn validate(d: &mut Diags<'_>, agent: &AgentSection) {
    if agent.alert_log_max_bytes < 4096 {
        d.err(&[k("agent"), k("alert_log_max_bytes")], format!("alert_log_max_bytes {} is too small: use at least 4096 (the default is 8388608, 8 MiB)", agent.alert_log_max_bytes));
    }
    if agent.alert_log_keep == 0 {
        d.err(
            &[k("agent"), k("alert_log_keep")],
            "alert_log_keep must be at least 1 (the file being written counts)",
        );
    }
    if agent.shutdown_timeout.ms() == 0 {
        d.err(
            &[k("agent"), k("shutdown_timeout")],
            "shutdown_timeout must be longer than 0",
        );
    }
    check_max(
        d,
        &[k("agent"), k("shutdown_timeout")],
        "shutdown_timeout",
        agent.shutdown_timeout,
        ms::HOUR,
        "1ms to 1h",
    );
    check_fencing(d, agent);
    check_script_env(d, agent);
    if agent.fence_method == FenceMethod::Command {
        d.warn(
            &[k("agent"), k("fence_method")],
            "fence_method = \"command\" fences with the orderly reboot_command / shutdown_command, which can take longer than the takeover wait: the other side may start the groups while they still run here",
        );
    }
}

/// The SysRq trigger and the immediate reboot / power-off commands.
fn check_fencing(d: &mut Diags<'_>, agent: &AgentSection) {
    if !agent.sysrq_trigger.is_absolute() {
        d.err(
            &[k("agent"), k("sysrq_trigger")],
            format!(
                "sysrq_trigger must be an absolute path (the default is /proc/sysrq-trigger), not `{}`",
                agent.sysrq_trigger.display()
            ),
        );
    }
    for (key, cmd) in [
        ("force_reboot_command", &agent.force_reboot_command),
        ("force_poweroff_command", &agent.force_poweroff_command),
    ] {
        if cmd.trim().is_empty() {
            d.err(
                &[k("agent"), k(key)],
                format!("{key} must not be empty: it is what fences this server when the SysRq write fails"),
            );
        }
    }
}

/// `script_env`: environment variable names.
fn check_script_env(d: &mut Diags<'_>, agent: &AgentSection) {
    for (i, name) in agent.script_env.iter().enumerate() {
        let valid = name
            .bytes()
            .enumerate()
            .all(|(j, b)| b == b'_' || b.is_ascii_alphabetic() || (j > 0 && b.is_ascii_digit()));
        if name.is_empty() || !valid {
            d.err(
                &[k("agent"), k("script_env"), Seg::Index(i)],
                format!("`{name}` is not an environment variable name (letters, digits and `_`, not starting with a digit)"),
            );
        }
    }
}
