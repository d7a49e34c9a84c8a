//! The split-brain timing rules, derived from the heartbeat settings (pure arithmetic, so
//! `config check`, the engine and the docs use one definition).
//!
//! Assumptions (documented in docs/src/split-brain.md):
//! * clock *rates* differ by at most [`DRIFT_PPM`] (1 %); clocks are never compared
//!   across servers, only durations measured on each server's own monotonic clock;
//! * a heartbeat takes at most one heartbeat interval from sender to receiver (slower
//!   packets count as lost);
//! * a server whose agent loop stalls longer than the takeover bound is reset by a
//!   watchdog (systemd `WatchdogSec` or `/dev/watchdog`).
//!
//! With `i` the heartbeat interval, `T` the heartbeat timeout, `ρ` the drift:
//! * quorum lease `L = max(T/2, 2.5·i)` (at most `T`): a vote counts while its server was
//!   heard within `L` *and* that server's own last heartbeat says it hears us;
//! * self-fence deadline `F` (`[quorum] fence_timeout`, default `T/2`): a server that
//!   loses quorum has deactivated its groups within `F` or escalates
//!   (`[quorum] on_fence_timeout`);
//! * per group, `F_g = min(F, what the group's resources need to stop)` (its
//!   `fence_budget`, or the sum of its resources' stop timeouts and retries) and `W_g`
//!   derived from `F_g` as `W` is from `F` ([`Timing::for_group`]): a holder cut off
//!   from the majority has stopped group `g` within `F_g` or escalates then, so group
//!   `g` may be taken over after `T + W_g`;
//! * takeover wait `W` (`[quorum] takeover_wait`, default the smallest safe value): a
//!   server activates a group only after every down server has been silent for `T + W`,
//!   where `(T + W)(1 − ρ) ≥ (2L + F)(1 + ρ) + i`. A holder cut off at the worst moment
//!   (it still hears us but we no longer hear it) counts our vote for up to `2L` after
//!   we last heard it, then fences within `F`.

/// Largest clock-rate difference between two servers the rules tolerate: 1 %.
pub const DRIFT_PPM: u64 = 10_000;

/// The derived timing for one heartbeat timeout (the configured one, or a temporary one
/// set by `baton timeout set`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Timing {
    pub interval_ms: u64,
    pub timeout_ms: u64,
    /// Quorum lease `L`.
    pub lease_ms: u64,
    /// Self-fence deadline `F`.
    pub fence_ms: u64,
    /// Takeover wait `W` in force (configured or derived).
    pub takeover_wait_ms: u64,
    /// The smallest safe takeover wait for these settings.
    pub min_takeover_wait_ms: u64,
    /// How long a granted witness vote counts, from the moment its request was sent.
    pub witness_valid_ms: u64,
}

impl Timing {
    /// `fence` and `takeover` are the configured values (None: defaults).
    pub fn derive(
        interval_ms: u64,
        timeout_ms: u64,
        fence: Option<u64>,
        takeover: Option<u64>,
    ) -> Timing {
        // Saturating: the inputs are bounded by validation (7 days at most) but a
        // temporary timeout comes from a peer's intent too; nothing here may wrap.
        let lease_ms = (timeout_ms / 2)
            .max(interval_ms.saturating_mul(5) / 2)
            .min(timeout_ms);
        let fence_ms = fence.unwrap_or(timeout_ms / 2);
        let min_takeover_wait_ms = min_takeover_wait(interval_ms, timeout_ms, lease_ms, fence_ms);
        let takeover_wait_ms = takeover
            .unwrap_or(min_takeover_wait_ms)
            .max(min_takeover_wait_ms);
        // A grant counts from the request's send time for L·(1 − ρ)²: shorter, in real
        // time, than the witness keeps it on its own clock even if the two clocks run
        // 1 % apart in the unfavourable direction.
        let witness_valid_ms = (lease_ms.saturating_mul(1_000_000 - DRIFT_PPM) / 1_000_000)
            .saturating_mul(1_000_000 - DRIFT_PPM)
            / 1_000_000;
        Timing {
            interval_ms,
            timeout_ms,
            lease_ms,
            fence_ms,
            takeover_wait_ms,
            min_takeover_wait_ms,
            witness_valid_ms,
        }
    }

    /// The timing of one group whose resources need `budget_ms` to stop: the fence
    /// deadline `F_g = min(F, budget)` and the smallest `W_g` that satisfies the rule with
    /// `F_g` (or `takeover`, the configured wait, when larger). Lease, interval and
    /// timeout stay the agent's. Since `F_g ≤ F`, `W_g ≤ W`: a group never waits longer
    /// than the agent-wide rule says.
    pub fn for_group(&self, budget_ms: u64, takeover: Option<u64>) -> Timing {
        let fence_ms = self.fence_ms.min(budget_ms);
        let min_takeover_wait_ms =
            min_takeover_wait(self.interval_ms, self.timeout_ms, self.lease_ms, fence_ms);
        Timing {
            fence_ms,
            min_takeover_wait_ms,
            takeover_wait_ms: takeover
                .unwrap_or(min_takeover_wait_ms)
                .max(min_takeover_wait_ms),
            ..*self
        }
    }

    /// Silence after which a lost server's groups may be activated elsewhere: `T + W`.
    pub fn takeover_after_ms(&self) -> u64 {
        self.timeout_ms.saturating_add(self.takeover_wait_ms)
    }
}

/// Smallest `W` with `(T + W)(1 − ρ) ≥ (2L + F)(1 + ρ) + i`, rounded up to a millisecond.
pub fn min_takeover_wait(interval_ms: u64, timeout_ms: u64, lease_ms: u64, fence_ms: u64) -> u64 {
    let m = 1_000_000u64;
    let need = (lease_ms
        .saturating_mul(2)
        .saturating_add(fence_ms)
        .saturating_mul(m + DRIFT_PPM))
    .div_ceil(m)
    .saturating_add(interval_ms);
    let total = need.saturating_mul(m).div_ceil(m - DRIFT_PPM);
    total.saturating_sub(timeout_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_satisfy_the_rule() {
        for (i, t) in [(200, 1000), (100, 500), (50, 150), (1000, 30_000), (10, 30)] {
            let tm = Timing::derive(i, t, None, None);
            let lhs = (tm.timeout_ms + tm.takeover_wait_ms) as f64 * 0.99;
            let rhs = (2 * tm.lease_ms + tm.fence_ms) as f64 * 1.01 + i as f64;
            assert!(lhs >= rhs - 1e-9, "{i}/{t}: {tm:?}");
            // and it is the smallest such value (within rounding)
            let lhs1 = (tm.timeout_ms + tm.takeover_wait_ms - 2) as f64 * 0.99;
            assert!(
                tm.takeover_wait_ms == 0 || lhs1 < rhs,
                "{i}/{t}: not minimal {tm:?}"
            );
            assert!(tm.witness_valid_ms < tm.lease_ms);
        }
    }

    #[test]
    fn group_timing_follows_the_group_budget_within_the_agent_bound() {
        let agent = Timing::derive(200, 1000, None, None);
        // A group that stops in 50 ms: F_g = 50, the smallest W_g with the rule.
        let g = agent.for_group(50, None);
        assert_eq!((g.fence_ms, g.lease_ms, g.timeout_ms), (50, 500, 1000));
        assert_eq!(g.takeover_wait_ms, min_takeover_wait(200, 1000, 500, 50));
        assert!(g.takeover_wait_ms < agent.takeover_wait_ms);
        let lhs = (g.timeout_ms + g.takeover_wait_ms) as f64 * 0.99;
        assert!(lhs >= (2 * g.lease_ms + g.fence_ms) as f64 * 1.01 + 200.0);
        // A budget above F is cut to F: the agent's timing.
        assert_eq!(agent.for_group(60_000, None), agent);
        // A configured wait is kept when larger.
        assert_eq!(agent.for_group(50, Some(5_000)).takeover_wait_ms, 5_000);
        // Nothing to stop: the rule with F = 0.
        let none = agent.for_group(0, None);
        assert_eq!(none.fence_ms, 0);
        assert_eq!(none.takeover_wait_ms, min_takeover_wait(200, 1000, 500, 0));
        for b in [0, 1, 10, 100, 499, 500, 501, 10_000] {
            let g = agent.for_group(b, None);
            assert!(g.fence_ms <= agent.fence_ms && g.takeover_wait_ms <= agent.takeover_wait_ms);
        }
    }

    #[test]
    fn huge_inputs_saturate_instead_of_overflowing() {
        // A temporary timeout comes from a peer's intent: nothing here may panic or wrap.
        let tm = Timing::derive(u64::MAX, u64::MAX, Some(u64::MAX), Some(u64::MAX));
        assert_eq!(tm.takeover_after_ms(), u64::MAX);
        assert!(tm.witness_valid_ms <= tm.lease_ms);
        let tm = Timing::derive(u64::MAX / 2, 1000, None, None);
        assert_eq!(tm.lease_ms, 1000);
        assert!(min_takeover_wait(u64::MAX, 0, u64::MAX, u64::MAX) > 0);
    }

    #[test]
    fn default_figures() {
        let tm = Timing::derive(200, 1000, None, None);
        assert_eq!((tm.lease_ms, tm.fence_ms), (500, 500));
        assert_eq!(tm.takeover_wait_ms, 733);
        assert_eq!(tm.witness_valid_ms, 490);
        // a configured longer wait is kept, a shorter one is raised
        assert_eq!(
            Timing::derive(200, 1000, None, Some(5000)).takeover_wait_ms,
            5000
        );
        assert_eq!(
            Timing::derive(200, 1000, None, Some(1)).takeover_wait_ms,
            733
        );
    }
}
