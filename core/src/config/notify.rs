//! `[notify.*]` and `[metrics.*]`: where events and metrics go besides the alert log.
//! The sinks themselves live in the notifier crate; this is their validated configuration.

use serde::{Deserialize, Serialize};

use super::{Diags, Monitor};

/// `[notify]`: where events go besides the alert log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct NotifySection {
    /// Write events to the agent's log (stderr / journal). On by default.
    pub log: Option<LogSinkSection>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSinkSection {
    #[serde(default = "default_min_severity")]
    pub min_severity: crate::Severity,
}

fn default_min_severity() -> crate::Severity {
    crate::Severity::Info
}

/// `[metrics]`: where metrics go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {}

/// Checks the notify and metrics sections (called once the monitors are known, so that
/// per-monitor metric switches can name real monitors).
pub(super) fn validate(
    _d: &mut Diags<'_>,
    _notify: &NotifySection,
    _metrics: &MetricsSection,
    _monitors: &[Monitor],
) {
}
