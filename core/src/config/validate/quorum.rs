//! `[quorum]`: witness and reachability targets, self-fence and takeover timing, votes.

use super::{check_max, ms};
use crate::config::diagnostics::{k, Diags, Seg};
use crate::config::{timing, HeartbeatSection, QuorumSection, Witness};

/// `servers`: how many servers the cluster has (each is a vote).
pub(super) fn validate(
    d: &mut Diags<'_>,
    q: &QuorumSection,
    hb: &HeartbeatSection,
    servers: usize,
) {
    check_targets(d, q);
    check_timing(d, q, hb);
    check_votes(d, q, servers);
}

/// The witness URL, and the `http` and `ping` reachability targets.
fn check_targets(d: &mut Diags<'_>, q: &QuorumSection) {
    match &q.witness {
        Witness::Http { url } if !(url.starts_with("http://") || url.starts_with("https://")) => {
            d.err(
                &[k("quorum"), k("witness"), k("url")],
                format!("witness url `{url}` must start with http:// or https://"),
            );
        }
        _ => {}
    }
    for (i, h) in q.http.iter().enumerate() {
        if !(h.starts_with("http://") || h.starts_with("https://")) {
            d.err(
                &[k("quorum"), k("http"), Seg::Index(i)],
                format!("`{h}` must start with http:// or https://"),
            );
        }
    }
    for (i, h) in q.ping.iter().enumerate() {
        if h.trim().is_empty() || h.contains(char::is_whitespace) {
            d.err(
                &[k("quorum"), k("ping"), Seg::Index(i)],
                format!("`{h}` is not a host name or address"),
            );
        }
    }
}

/// `fence_timeout`, `takeover_wait` (at least the minimum the split-brain rules derive
/// from the heartbeat settings) and `check_interval`.
fn check_timing(d: &mut Diags<'_>, q: &QuorumSection, hb: &HeartbeatSection) {
    let tm = timing::Timing::derive(
        hb.interval.ms(),
        hb.timeout.ms(),
        q.fence_timeout.map(|d| d.ms()),
        q.takeover_wait.map(|d| d.ms()),
    );
    if let Some(f) = q.fence_timeout {
        if f.ms() < hb.interval.ms() {
            d.err(&[k("quorum"), k("fence_timeout")], format!("fence_timeout {f} is shorter than the heartbeat interval {}: no resource could stop in time", hb.interval));
        }
        check_max(
            d,
            &[k("quorum"), k("fence_timeout")],
            "fence_timeout",
            f,
            10 * ms::MINUTE,
            "the heartbeat interval to 10m",
        );
    }
    if let Some(w) = q.takeover_wait {
        check_max(
            d,
            &[k("quorum"), k("takeover_wait")],
            "takeover_wait",
            w,
            ms::HOUR,
            "the derived minimum to 1h",
        );
        if w.ms() < tm.min_takeover_wait_ms {
            d.err(
                &[k("quorum"), k("takeover_wait")],
                format!(
                    "takeover_wait {w} is too short: with heartbeat interval {} (i), timeout {} (T), quorum lease {} ms (L) and fence_timeout {} ms (F), (T + W)·0.99 must be at least (2L + F)·1.01 + i, so W must be at least {} ms (see docs/src/split-brain.md)",
                    hb.interval, hb.timeout, tm.lease_ms, tm.fence_ms, tm.min_takeover_wait_ms
                ),
            );
        }
    }
    if let Some(ci) = q.check_interval {
        if ci.ms() < 100 {
            d.err(
                &[k("quorum"), k("check_interval")],
                "check_interval must be at least 100ms",
            );
        }
        check_max(
            d,
            &[k("quorum"), k("check_interval")],
            "check_interval",
            ci,
            10 * ms::MINUTE,
            "100ms to 10m",
        );
    }
}

/// Warn when a lost server or a split into halves leaves no majority.
fn check_votes(d: &mut Diags<'_>, q: &QuorumSection, servers: usize) {
    let votes = servers + usize::from(q.witness != Witness::None);
    if servers == 2 && q.witness == Witness::None {
        d.warn(&[k("quorum")], "a 2-server cluster has no majority when one server is lost: the survivor will not take over. Add a witness (`[quorum] witness`) or a third server");
    } else if votes.is_multiple_of(2) && votes > 0 {
        d.warn(&[k("quorum")], format!("the cluster has {votes} votes, an even number: a split into two halves leaves neither side with a majority; use an odd number of votes (add or remove a witness)"));
    }
}
