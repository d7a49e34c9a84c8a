//! The fault lab's eighteen scenarios, a short run of each (root only; see
//! `tests/src/lab` and docs/src/lab.md). Each test builds its own network namespaces,
//! starts real agents, injects its fault and asserts the scenario's expectation plus,
//! over the whole run, that the group was never active on two servers at once (agent
//! status, event streams and the VIP as seen on every server).
//!
//! Not root, or `ip`/`nft`/`tc` missing: each test is recorded as skipped (a failure under
//! `BATON_REQUIRE_ALL=1`, which `tests/run-all.sh` sets); a lab that fails to build on a
//! machine that has all of that is a failure.
//! Long runs: `baton-lab run --scenario N --repeat N` (see docs/src/lab.md).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::Duration;

use baton_tests::lab::scenarios::{self, Options};
use baton_tests::lab::{self, witness_available};
use baton_tests::skip::skip;

fn run(n: u8, o: Options) {
    let _serial = baton_tests::serial();
    if let Some(why) = lab::unavailable() {
        skip(&format!("lab scenario {n}"), &why);
        return;
    }
    let r = scenarios::run(n, &o);
    println!("{r}");
    assert!(
        r.skipped.is_none(),
        "scenario {n} did not run on a machine that has what the lab needs: {:?}",
        r.skipped
    );
    assert!(
        r.passed(),
        "scenario {n} ({}) failed:\n  {}",
        r.title,
        r.failures.join("\n  ")
    );
}

/// Scenarios 3 and 7 need `baton witness`.
fn run_with_witness(n: u8) {
    let bin = baton_tests::bin::baton_bin();
    assert!(
        lab::unavailable().is_some() || witness_available(&bin),
        "scenario {n}: this build has no `baton witness`"
    );
    run(n, Options::default());
}

/// The checker itself: a VIP added by hand on a second server must be reported.
#[test]
fn s00_observer_catches_a_second_vip_holder() {
    let _serial = baton_tests::serial();
    if let Some(why) = lab::unavailable() {
        skip("lab observer self-check", &why);
        return;
    }
    let r = scenarios::self_check();
    println!("{r}");
    assert!(
        r.skipped.is_none(),
        "the observer self-check did not run on a machine that has what the lab needs: {:?}",
        r.skipped
    );
    assert!(
        r.passed(),
        "observer self-check failed:\n  {}",
        r.failures.join("\n  ")
    );
}

#[test]
fn s01_sigkill_active_agent_fails_over() {
    run(
        1,
        Options {
            repeat: 2,
            ..Options::default()
        },
    );
}

#[test]
fn s02_paused_agent_resumes_and_deactivates_without_overlap() {
    run(2, Options::default());
}

#[test]
fn s03_cut_all_paths_with_witness_one_side_active() {
    run_with_witness(3);
}

#[test]
fn s04_asymmetric_partition_at_most_one_active() {
    run(4, Options::default());
}

#[test]
fn s05_cut_one_of_two_paths_no_failover() {
    run(5, Options::default());
}

#[test]
fn s06_loss_and_jitter_no_failover() {
    run(
        6,
        Options {
            duration: Duration::from_secs(30),
            ..Options::default()
        },
    );
}

#[test]
fn s07_witness_then_peer_lost_survivor_stays_passive() {
    run_with_witness(7);
}

#[test]
fn s08_restart_all_agents_one_active_after() {
    run(8, Options::default());
}

#[test]
fn s09_rolling_restart_group_stays_up() {
    run(9, Options::default());
}

#[test]
fn s10_partition_heals_exactly_one_active() {
    run(10, Options::default());
}

#[test]
fn s11_mirror_disk_sigkill_under_writes_no_acknowledged_write_lost() {
    run(11, Options::default());
}

#[test]
fn s12_mirror_disk_isolated_primary_acknowledges_nothing_the_new_primary_lacks() {
    run(12, Options::default());
}

#[test]
fn s13_mirror_link_cut_differential_resync() {
    run(13, Options::default());
}

#[test]
fn s14_mirror_failover_reverse_differential_resync() {
    run(14, Options::default());
}

#[test]
fn s15_mirror_stale_side_refuses_forced_then_split_brain() {
    run(15, Options::default());
}

#[test]
fn s16_mirror_wrong_key_and_garbage_refused() {
    run(16, Options::default());
}

#[test]
fn s17_mirror_agent_restart_writes_go_on() {
    run(17, Options::default());
}

#[test]
fn s18_mirror_stale_secondary_refuses_after_the_primary_wrote_alone_and_died() {
    run(18, Options::default());
}
