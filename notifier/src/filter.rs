//! Which events a sink takes: a minimum severity, ids always included, ids never sent.

use baton_core::config::id_matches;
use baton_core::{Event, Severity};

/// `min_severity` / `include` / `exclude` of a `[notify.*]` section.
///
/// An event is taken when its id matches no `exclude` pattern and either its severity
/// reaches `min_severity` or its id matches an `include` pattern. Patterns are
/// `BTN-2102` or prefixes such as `BTN-21*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFilter {
    pub min_severity: Severity,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

impl EventFilter {
    /// Every event at or above `min`.
    pub fn min(min: Severity) -> EventFilter {
        EventFilter {
            min_severity: min,
            include: Vec::new(),
            exclude: Vec::new(),
        }
    }

    pub fn new(min: Severity, include: &[String], exclude: &[String]) -> EventFilter {
        EventFilter {
            min_severity: min,
            include: include.to_vec(),
            exclude: exclude.to_vec(),
        }
    }

    pub fn accepts(&self, ev: &Event) -> bool {
        if self.exclude.iter().any(|p| id_matches(p, &ev.id)) {
            return false;
        }
        ev.severity >= self.min_severity || self.include.iter().any(|p| id_matches(p, &ev.id))
    }

    /// The lowest severity this filter may let through (for the queue's pre-check).
    pub fn floor(&self) -> Severity {
        if self.include.is_empty() {
            self.min_severity
        } else {
            Severity::Info
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_core::events::{GROUP_ACTIVATED, GROUP_FAILOVER, MONITOR_WARNING, SERVER_DOWN};

    #[test]
    fn severity_include_and_exclude() {
        let f = EventFilter::new(
            Severity::Warning,
            &["BTN-2102".to_string()],
            &["BTN-30*".to_string()],
        );
        assert!(f.accepts(&Event::new(&GROUP_FAILOVER, "x")));
        assert!(f.accepts(&Event::new(&SERVER_DOWN, "x")));
        // Info, but included.
        assert!(f.accepts(&Event::new(&GROUP_ACTIVATED, "x")));
        // Warning, but excluded.
        assert!(!f.accepts(&Event::new(&MONITOR_WARNING, "x")));
        assert_eq!(f.floor(), Severity::Info);
        let f = EventFilter::min(Severity::Error);
        assert!(!f.accepts(&Event::new(&GROUP_FAILOVER, "x")));
        assert_eq!(f.floor(), Severity::Error);
    }
}
