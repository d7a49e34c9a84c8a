//! `[heartbeat]`: interval and timeout, and their bounds.

use super::{check_max, ms};
use crate::config::diagnostics::{k, Diags};
use crate::config::{Dur, HeartbeatSection};

pub(super) fn validate(d: &mut Diags<'_>, hb: &HeartbeatSection) {
    if hb.interval.ms() < 10 {
        d.err(
            &[k("heartbeat"), k("interval")],
            format!(
                "heartbeat interval {} is too short: use at least 10ms",
                hb.interval
            ),
        );
    }
    if hb.timeout.ms() < hb.interval.ms().saturating_mul(3) {
        d.err(
            &[k("heartbeat"), k("timeout")],
            format!(
                "heartbeat timeout {} must be at least 3 times the interval {} (so that one or two lost packets do not mark a server down); try {}",
                hb.timeout,
                hb.interval,
                Dur::from_ms(hb.interval.ms().saturating_mul(5))
            ),
        );
    }
    check_max(
        d,
        &[k("heartbeat"), k("interval")],
        "heartbeat interval",
        hb.interval,
        ms::MINUTE,
        "10ms to 1m",
    );
    check_max(
        d,
        &[k("heartbeat"), k("timeout")],
        "heartbeat timeout",
        hb.timeout,
        10 * ms::MINUTE,
        "3 × interval to 10m",
    );
    if let Some(w) = hb.startup_wait {
        check_max(
            d,
            &[k("heartbeat"), k("startup_wait")],
            "startup_wait",
            w,
            ms::HOUR,
            "0s to 1h",
        );
    }
    if let Some(w) = hb.startup_wait {
        if w.ms() < hb.timeout.ms() {
            d.warn(
                &[k("heartbeat"), k("startup_wait")],
                format!("startup_wait {w} is shorter than the heartbeat timeout {}: a restarted server may start groups before it has heard its peers", hb.timeout),
            );
        }
    }
}
