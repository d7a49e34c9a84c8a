//! Deterministic simulation of whole clusters (issue 3, "Deterministic simulation").
//!
//! A discrete-event simulator drives the real engines of 2–7 servers (plus an optional
//! witness) through random fault schedules on a simulated clock and checks, after every
//! single event, the invariants of `docs/src/split-brain.md`:
//!
//! 1. a group's resources are never active on two servers at once *in the physical
//!    world* (the simulated executor: an activation counts as active from the moment it
//!    starts, a deactivation as inactive only once it has completed, a failed or
//!    timed-out action leaves the resource possibly active, a node reset kills
//!    everything on the node);
//! 2. a server only starts a resource while it holds quorum in its own view;
//! 3. the epochs of successive activations of a group strictly grow;
//! 4. once the faults stop (everything repaired), the cluster converges to exactly one
//!    holder per group, with every resource of the group active there and nowhere else.
//!
//! What is modelled:
//! - every server has its own clock running at a constant rate within ±1 % of true time
//!   (the engines are fed their own clock, never the true one);
//! - heartbeats every interval on every path (and at once when the engine asks), one-way
//!   delay 0..interval/2 (up to the interval during delay spikes), random loss, loss
//!   bursts, symmetric partitions, one-way (asymmetric) partitions, single-path cuts;
//! - node crashes (the resources die with the node, it boots again later from its state
//!   directory), agent crashes (the resources keep running, the agent restarts from its
//!   state directory), pauses (SIGSTOP: the agent steps nothing, packets queue with their
//!   arrival times and are delivered after the resume with those times, in-flight resource
//!   actions go on); an agent silent for longer than the watchdog bound is reset by the
//!   watchdog at the bound (its resources die);
//! - resource actions that take time (bounded by their timeouts: an action still running
//!   at its timeout is reported as timed out and leaves the resource as it was) and
//!   sometimes fail; `SystemCommand` reboot/shutdown resets the node;
//! - the witness (when `[quorum] witness` is configured): it grants its vote to one
//!   partition at a time for a lease on its own clock, denies everything during its first
//!   lease after a restart, can be down, restarted or cut off;
//! - application faults: a group's resources die where they run, or its monitor fails
//!   (where the group runs, or everywhere) although they run; the group's `exec` monitor
//!   (generated for most groups, with a random recovery ladder: script, restarts,
//!   failovers, then `stop-group` or `reboot`) sees it, recovery scripts fail as resource
//!   actions do;
//! - operator moves now and then.
//!
//! A schedule is a seed: the parameters (servers, paths, groups, timings, drifts) and the
//! timed fault list are generated from it with the simulator's own PRNG, so a failure is
//! replayed with `BATON_SIM_SEED=<seed> cargo test -p baton-core sim_replay -- --ignored --nocapture`
//! (which prints the schedule and a timeline). `BATON_SIM_SCHEDULES` sets how many
//! schedules `sim_random_schedules` runs (default 10,000 in an optimized build, as
//! `tests/run-all.sh` runs it, 500 in a debug build), `BATON_SIM_BASE_SEED` where their
//! seeds start. A failure also prints the schedule as Rust code: regression tests pin
//! schedules that way, so that changes to the generator do not change what they replay.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::rc::Rc;

use super::*;
use crate::config::{load_str, Config};
use crate::time::Millis;

// ---------------------------------------------------------------------------------------
// PRNG
// ---------------------------------------------------------------------------------------

/// SplitMix64: tiny, fast, and good enough to drive schedules. Its output depends only
/// on the seed, on every platform, forever (no external crate whose algorithm may change).
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
    fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.index(i + 1);
            v.swap(i, j);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Schedules
// ---------------------------------------------------------------------------------------

const US: u64 = 1000;
/// Documented bound on clock-rate drift: 1 % = 10,000 ppm.
const MAX_DRIFT_PPM: i64 = 10_000;

#[derive(Debug, Clone)]
struct GroupSpec {
    /// Failover order (server indices).
    servers: Vec<usize>,
    resources: usize,
    failback: bool,
    act_retries: u32,
    deact_retries: u32,
    /// An `exec` monitor of the group (`m<group index>`) and its recovery ladder.
    monitor: Option<MonitorSpec>,
    /// `fence_budget` of the group when declared (its self-fence deadline `F_g` and
    /// takeover wait `W_g` follow from it), and the longest normal stop of its resources
    /// then (within the budget; `SlowActions` faults go beyond it). `None`: `Params`.
    fence_budget_ms: Option<u64>,
    deact_max_ms: Option<u64>,
    /// `resource_order = "parallel"`: resources 0 and 1 have no dependency and start
    /// (and stop) together; resource 2, when there is one, depends on resource 0.
    /// Otherwise each resource depends on the one before it.
    parallel: bool,
    /// Every resource is of kind `cloud`: its self-fence stop is local only and takes at
    /// most [`CLOUD_STOP_MS`] (as `aws-eip`), so the group's fence deadline derived from
    /// its resources is the heartbeat interval (no `fence_budget`).
    cloud: bool,
}

/// The bound of a `cloud` resource's local self-fence stop ([`SIM_KINDS`]).
const CLOUD_STOP_MS: u64 = 40;

/// Any kind, as [`crate::config::AnyKind`]; kind `cloud` has a local self-fence stop of
/// [`CLOUD_STOP_MS`].
const SIM_KINDS: crate::config::AnyKindWithLocalStop =
    crate::config::AnyKindWithLocalStop("cloud", CLOUD_STOP_MS);

/// A group's monitor: healthy while every resource of the group runs on the server and
/// no `MonitorFails` fault holds; its recovery ladder (script, restart, failover, final
/// action) is the engine's.
#[derive(Debug, Clone)]
struct MonitorSpec {
    interval_ms: u64,
    retries: u32,
    /// A recovery script runs first (it fails as resource actions do; it repairs nothing).
    script: bool,
    script_retries: u32,
    restart_retries: u32,
    failover_retries: u32,
    final_action: &'static str,
}

/// Everything about a schedule except its faults.
#[derive(Debug, Clone)]
struct Params {
    servers: usize,
    paths: usize,
    witness: bool,
    interval_ms: u64,
    timeout_ms: u64,
    groups: Vec<GroupSpec>,
    /// Clock-rate drift of every server, then of the witness, in ppm (within ±1 %).
    drift_ppm: Vec<i64>,
    witness_drift_ppm: i64,
    witness_model: WitnessModel,
    act_timeout_ms: u64,
    deact_timeout_ms: u64,
    /// Longest normal duration of an activation / deactivation.
    act_max_ms: u64,
    deact_max_ms: u64,
    /// Percentage of resource actions that fail outside `FailActions` faults.
    fail_pct: u64,
    /// Percentage of local self-fence stops that overrun their bound and run until their
    /// timeout (what is left of the fence deadline): the server must escalate in time.
    fence_overrun_pct: u64,
    /// Background packet loss, percent.
    loss_pct: u64,
    /// `[quorum] ping` targets are configured (`ReachLost` faults take a server's vote).
    reach: bool,
    /// `[quorum] fence_timeout` and `takeover_wait` when set (else derived).
    fence_timeout_ms: Option<u64>,
    takeover_wait_ms: Option<u64>,
    /// Agent silence after which the watchdog resets the node.
    watchdog_ms: u64,
    /// Faults happen in `0..window_ms`; everything is repaired at `window_ms`.
    window_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Fault {
    /// The machine dies (its resources with it) and boots again after `down_ms`.
    Crash {
        node: usize,
        down_ms: u64,
    },
    /// The agent is killed; its resources keep running; it restarts after `restart_ms`
    /// (the watchdog resets the node first if that is longer than its bound).
    AgentCrash {
        node: usize,
        restart_ms: u64,
    },
    /// SIGSTOP for `ms`, then SIGCONT (a node reset at the watchdog bound if longer).
    Pause {
        node: usize,
        ms: u64,
    },
    /// Two sides (bit per server: side of server i is `sides >> i & 1`); the witness is
    /// on side `witness_side` (2: reachable from neither).
    Partition {
        sides: u8,
        witness_side: u8,
        ms: u64,
    },
    /// `to` stops hearing `from` (every path).
    OneWay {
        from: usize,
        to: usize,
        ms: u64,
    },
    /// One path between two servers is cut (both directions).
    PathCut {
        a: usize,
        b: usize,
        path: usize,
        ms: u64,
    },
    /// Packet loss on every link.
    Loss {
        pct: u64,
        ms: u64,
    },
    /// One-way delays up to the full heartbeat interval.
    Delay {
        ms: u64,
    },
    WitnessDown {
        ms: u64,
    },
    WitnessRestart,
    /// One server cannot reach the witness.
    WitnessCut {
        node: usize,
        ms: u64,
    },
    /// Resource actions on a server fail.
    FailActions {
        node: usize,
        ms: u64,
    },
    /// Resource actions on a server are slow (up to 1.5 × their timeout: some time out).
    SlowActions {
        node: usize,
        ms: u64,
    },
    /// A server's `[quorum] ping` targets stop answering: it gives up its vote.
    ReachLost {
        node: usize,
        ms: u64,
    },
    /// Operator: `baton group move GROUP` on a server.
    Move {
        node: usize,
        group: usize,
    },
    /// An on-path attacker restarts the agent of `node` (its in-memory replay guard
    /// starts empty), drops `from`'s heartbeats to it for `ms`, and replays to it the
    /// heartbeats of `from` it recorded before, oldest first, one per interval (each
    /// datagram once per path: the guard still rejects a repeat).
    Replay {
        node: usize,
        from: usize,
        ms: u64,
    },
    /// The application dies: the resources of `group` stop wherever they run (the
    /// group's monitor sees it; a check reports them inactive).
    AppDies {
        group: usize,
    },
    /// The monitor of `group` fails for `ms` although the application runs (a
    /// dependency it checks is down): on the servers running the group now, or on every
    /// server (`everywhere`: failovers do not help either).
    MonitorFails {
        group: usize,
        everywhere: bool,
        ms: u64,
    },
}

#[derive(Debug, Clone)]
struct Schedule {
    seed: u64,
    params: Params,
    /// (time in ms of true time, fault), in time order.
    faults: Vec<(u64, Fault)>,
}

impl Schedule {
    fn generate(seed: u64) -> Schedule {
        let mut rng = Rng::new(seed);
        let servers = [2, 2, 3, 3, 3, 4, 4, 5, 5, 6, 7][rng.index(11)];
        let paths = rng.range(1, 2) as usize;
        let witness = if servers == 2 {
            rng.chance(80)
        } else {
            rng.chance(40)
        };
        let interval_ms = [100, 150, 200, 250][rng.index(4)];
        let timeout_ms = interval_ms * rng.range(4, 6);
        let ngroups = rng.range(1, 3) as usize;
        let groups = (0..ngroups)
            .map(|_| {
                let mut order: Vec<usize> = (0..servers).collect();
                rng.shuffle(&mut order);
                let k = rng.range(2, servers as u64) as usize;
                order.truncate(k);
                GroupSpec {
                    servers: order,
                    resources: rng.range(1, 2) as usize,
                    failback: rng.chance(30),
                    act_retries: rng.range(0, 1) as u32,
                    deact_retries: rng.range(0, 1) as u32,
                    fence_budget_ms: None,
                    deact_max_ms: None,
                    parallel: false,
                    cloud: false,
                    monitor: rng.chance(60).then(|| MonitorSpec {
                        interval_ms: interval_ms * rng.range(2, 5),
                        retries: rng.range(0, 2) as u32,
                        script: rng.chance(40),
                        script_retries: rng.range(0, 1) as u32,
                        restart_retries: rng.range(0, 2) as u32,
                        failover_retries: rng.range(0, 2) as u32,
                        final_action: if rng.chance(80) {
                            "stop-group"
                        } else {
                            "reboot"
                        },
                    }),
                }
            })
            .collect();
        let drift = |rng: &mut Rng| -> i64 {
            match rng.below(4) {
                0 => MAX_DRIFT_PPM,
                1 => -MAX_DRIFT_PPM,
                _ => rng.below(2 * MAX_DRIFT_PPM as u64 + 1) as i64 - MAX_DRIFT_PPM,
            }
        };
        let drift_ppm = (0..servers).map(|_| drift(&mut rng)).collect();
        let witness_drift_ppm = drift(&mut rng);
        let fence_timeout_ms = rng
            .chance(30)
            .then(|| rng.range(interval_ms, 2 * timeout_ms));
        let tm =
            crate::config::timing::Timing::derive(interval_ms, timeout_ms, fence_timeout_ms, None);
        // A configured takeover wait is at least the derived minimum (`config check`).
        let takeover_wait_ms = rng
            .chance(20)
            .then(|| tm.min_takeover_wait_ms + rng.range(0, 2 * timeout_ms));
        let fence = tm.fence_ms;
        let act_timeout_ms = rng.range(5, 20) * 200;
        let deact_timeout_ms = rng.range(5, 20) * 200;
        let act_max_ms = rng.range(0, act_timeout_ms / 3);
        // Resources stop within the self-fence deadline (else the server escalates:
        // `SlowActions` faults cover that).
        let deact_max_ms = rng.range(0, fence * 4 / 5);
        // Some groups declare a budget below F: their resources stop within it, and the
        // others wait only T + W_g for them.
        let mut groups: Vec<GroupSpec> = groups;
        for g in &mut groups {
            if rng.chance(40) {
                let b = rng.range(interval_ms, fence);
                g.fence_budget_ms = Some(b);
                g.deact_max_ms = Some(rng.range(0, b * 4 / 5));
            } else if rng.chance(40) {
                // Others have only resources with a local self-fence stop: their fence
                // deadline is the interval (their normal stops keep the usual length).
                g.cloud = true;
            }
            // Some groups start independent resources together.
            if rng.chance(35) {
                g.parallel = true;
                g.resources = rng.range(2, 3) as usize;
            }
        }
        let fail_pct = if rng.chance(20) { rng.range(1, 15) } else { 0 };
        let fence_overrun_pct = if rng.chance(30) { rng.range(10, 60) } else { 0 };
        let loss_pct = if rng.chance(30) { rng.range(1, 10) } else { 0 };
        // The agent reports a stalled loop (and stops feeding the watchdogs) after the
        // quorum lease: the watchdog bound the timing rules can rely on.
        let watchdog_ms = tm.lease_ms;
        let startup = timeout_ms + 2 * interval_ms;
        let window_ms = startup + rng.range(2_000, 10_000);
        let params = Params {
            servers,
            paths,
            witness,
            interval_ms,
            timeout_ms,
            groups,
            drift_ppm,
            witness_drift_ppm,
            witness_model: if rng.chance(50) {
                WitnessModel::Simple
            } else {
                WitnessModel::Book
            },
            act_timeout_ms,
            deact_timeout_ms,
            act_max_ms,
            deact_max_ms,
            fail_pct,
            fence_overrun_pct,
            loss_pct,
            reach: rng.chance(25),
            fence_timeout_ms,
            takeover_wait_ms,
            watchdog_ms,
            window_ms,
        };
        let nfaults = rng.range(1, 6);
        let mut faults: Vec<(u64, Fault)> = (0..nfaults)
            .map(|_| {
                let at = rng.range(0, window_ms);
                (at, Schedule::fault(&mut rng, &params))
            })
            .collect();
        faults.sort_by_key(|f| f.0);
        Schedule {
            seed,
            params,
            faults,
        }
    }

    fn fault(rng: &mut Rng, p: &Params) -> Fault {
        let n = p.servers;
        let node = rng.index(n);
        let other = (node + 1 + rng.index(n - 1)) % n;
        let t = p.timeout_ms;
        // Durations around the heartbeat timeout and the watchdog bound are the
        // interesting ones.
        let dur = |rng: &mut Rng| match rng.below(4) {
            0 => rng.range(p.interval_ms, t),
            1 => rng.range(t, 3 * t),
            2 => rng.range(3 * t, 10 * t),
            _ => rng.range(100, 8_000),
        };
        loop {
            // A group with a monitor, for the application faults.
            let monitored: Vec<usize> = (0..p.groups.len())
                .filter(|&g| p.groups[g].monitor.is_some())
                .collect();
            let f = match rng.below(22) {
                0 => Fault::Crash {
                    node,
                    down_ms: dur(rng),
                },
                1 => Fault::AgentCrash {
                    node,
                    restart_ms: rng.range(0, 2 * p.watchdog_ms),
                },
                2 | 3 => Fault::Pause {
                    node,
                    ms: match rng.below(3) {
                        0 => rng.range(1, p.watchdog_ms),
                        1 => rng.range(
                            p.watchdog_ms.saturating_sub(p.interval_ms),
                            p.watchdog_ms + p.interval_ms,
                        ),
                        _ => dur(rng),
                    },
                },
                4 | 5 => {
                    let mut sides = 0u8;
                    for i in 0..n {
                        if rng.chance(50) {
                            sides |= 1 << i;
                        }
                    }
                    Fault::Partition {
                        sides,
                        witness_side: rng.below(3) as u8,
                        ms: dur(rng),
                    }
                }
                6 => Fault::Partition {
                    // Isolate one server.
                    sides: 1 << node,
                    witness_side: rng.below(3) as u8,
                    ms: dur(rng),
                },
                7 => Fault::OneWay {
                    from: node,
                    to: other,
                    ms: dur(rng),
                },
                8 if p.paths > 1 => Fault::PathCut {
                    a: node,
                    b: other,
                    path: rng.index(p.paths),
                    ms: dur(rng),
                },
                9 => Fault::Loss {
                    pct: rng.range(10, 90),
                    ms: dur(rng),
                },
                10 => Fault::Delay { ms: dur(rng) },
                11 if p.witness => Fault::WitnessDown { ms: dur(rng) },
                12 if p.witness => Fault::WitnessRestart,
                13 if p.witness => Fault::WitnessCut { node, ms: dur(rng) },
                14 => {
                    if rng.chance(50) {
                        Fault::FailActions { node, ms: dur(rng) }
                    } else {
                        Fault::SlowActions { node, ms: dur(rng) }
                    }
                }
                15 => Fault::Move {
                    node,
                    group: rng.index(p.groups.len()),
                },
                16 if p.reach => Fault::ReachLost { node, ms: dur(rng) },
                17 => Fault::Replay {
                    node,
                    from: other,
                    ms: dur(rng),
                },
                18 | 19 if !monitored.is_empty() => Fault::AppDies {
                    group: monitored[rng.index(monitored.len())],
                },
                20 | 21 if !monitored.is_empty() => Fault::MonitorFails {
                    group: monitored[rng.index(monitored.len())],
                    everywhere: rng.chance(30),
                    ms: dur(rng),
                },
                _ => continue,
            };
            return f;
        }
    }

    fn config_text(&self) -> String {
        let p = &self.params;
        let mut s = String::new();
        let _ = write!(
            s,
            "[cluster]\nname = \"sim\"\nkey_file = \"/etc/baton/cluster.key\"\n\n[heartbeat]\ninterval = \"{}ms\"\ntimeout = \"{}ms\"\n\n",
            p.interval_ms, p.timeout_ms
        );
        s.push_str("[quorum]\n");
        if p.witness {
            s.push_str("witness = { kind = \"http\", url = \"http://10.0.9.1:7430\" }\n");
        }
        if p.reach {
            s.push_str("ping = [\"10.0.0.1\"]\n");
        }
        if let Some(f) = p.fence_timeout_ms {
            let _ = writeln!(s, "fence_timeout = \"{f}ms\"");
        }
        if let Some(w) = p.takeover_wait_ms {
            let _ = writeln!(s, "takeover_wait = \"{w}ms\"");
        }
        s.push('\n');
        for i in 0..p.servers {
            let ics: Vec<String> = (0..p.paths)
                .map(|k| format!("\"10.0.{}.{}\"", k + 1, i + 1))
                .collect();
            let _ = write!(
                s,
                "[[server]]\nname = \"{}\"\ninterconnects = [{}]\napi = \"10.0.1.{}:7420\"\n\n",
                server_name(i),
                ics.join(", "),
                i + 1
            );
        }
        for (gi, g) in p.groups.iter().enumerate() {
            let servers: Vec<String> = g
                .servers
                .iter()
                .map(|&i| format!("\"{}\"", server_name(i)))
                .collect();
            let _ = write!(
                s,
                "[[group]]\nname = \"{}\"\nservers = [{}]\nfailback = {}\n",
                group_name(gi),
                servers.join(", "),
                g.failback
            );
            if let Some(b) = g.fence_budget_ms {
                let _ = writeln!(s, "fence_budget = \"{b}ms\"");
            }
            if g.parallel {
                let _ = writeln!(s, "resource_order = \"parallel\"");
            }
            s.push('\n');
            for ri in 0..g.resources {
                let _ = write!(
                    s,
                    "[[group.resource]]\nkind = \"{}\"\nname = \"{}\"\nstart = \"/bin/true\"\nactivate_timeout = \"{}ms\"\nactivate_retries = {}\nactivate_final_action = \"stop-group\"\nfailover_threshold = 4\ndeactivate_timeout = \"{}ms\"\ndeactivate_retries = {}\n",
                    if g.cloud { "cloud" } else { "exec" },
                    resource_name(gi, ri),
                    p.act_timeout_ms,
                    g.act_retries,
                    p.deact_timeout_ms,
                    g.deact_retries
                );
                let dep = match (g.parallel, ri) {
                    (_, 0) | (true, 1) => None,
                    (true, _) => Some(0),
                    (false, _) => Some(ri - 1),
                };
                if let Some(d) = dep {
                    let _ = writeln!(s, "depends_on = [\"{}\"]", resource_name(gi, d));
                }
                s.push('\n');
            }
        }
        for (gi, g) in p.groups.iter().enumerate() {
            let Some(m) = &g.monitor else { continue };
            let script = if m.script {
                format!(
                    "script = \"/usr/local/bin/fix\", script_retries = {}, ",
                    m.script_retries
                )
            } else {
                String::new()
            };
            let _ = write!(
                s,
                "[[monitor]]\nkind = \"exec\"\nname = \"{}\"\ngroup = \"{}\"\ninterval = \"{}ms\"\nretries = {}\nrecovery = {{ target = \"{}\", {script}restart_retries = {}, failover_retries = {}, final_action = \"{}\" }}\n\n",
                monitor_name(gi),
                group_name(gi),
                m.interval_ms,
                m.retries,
                group_name(gi),
                m.restart_retries,
                m.failover_retries,
                m.final_action
            );
        }
        s
    }

    /// The schedule as Rust code, for a regression test that does not depend on the
    /// generator (which may change what a seed means).
    fn as_rust(&self) -> String {
        let params = format!("{:?}", self.params).replace('[', "vec![");
        let params = params
            .replace(
                "witness_model: Simple",
                "witness_model: WitnessModel::Simple",
            )
            .replace("witness_model: Book", "witness_model: WitnessModel::Book");
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(at, f)| format!("({at}, Fault::{f:?})"))
            .collect();
        format!(
            "Schedule {{ seed: {}, params: {params}, faults: vec![{}] }}",
            self.seed,
            faults.join(", ")
        )
    }

    fn describe(&self) -> String {
        let mut s = format!("seed {}\n{:#?}\nfaults:\n", self.seed, self.params);
        for (at, f) in &self.faults {
            let _ = writeln!(s, "  at {at:>6} ms: {f:?}");
        }
        s
    }
}

fn server_name(i: usize) -> String {
    format!("s{}", i + 1)
}

fn group_name(gi: usize) -> String {
    format!("g{}", gi + 1)
}

fn monitor_name(gi: usize) -> String {
    format!("m{gi}")
}

fn resource_name(gi: usize, ri: usize) -> String {
    format!("g{}r{}", gi + 1, ri + 1)
}

fn parse(text: &str) -> Config {
    match load_str("sim.toml", text, &SIM_KINDS) {
        Ok(l) => l.config,
        Err(e) => panic!("{e}: {:#?}\n{text}", e.diagnostics),
    }
}

// ---------------------------------------------------------------------------------------
// The simulated world
// ---------------------------------------------------------------------------------------

/// A clock running at `1 + ppm / 10^6` times true time, from `offset_us`.
#[derive(Debug, Clone, Copy)]
struct Clock {
    ppm: i64,
    offset_us: u64,
}

impl Clock {
    fn local_us(&self, true_us: u64) -> u64 {
        let rate = (1_000_000 + self.ppm) as u128;
        self.offset_us + (u128::from(true_us) * rate / 1_000_000) as u64
    }
    fn local_ms(&self, true_us: u64) -> u64 {
        self.local_us(true_us) / US
    }
    /// True duration (µs, at least 1) of `local_ms` on this clock.
    fn true_us(&self, local_ms: u64) -> u64 {
        let rate = (1_000_000 + self.ppm) as u128;
        ((u128::from(local_ms) * 1_000 * 1_000_000).div_ceil(rate) as u64).max(1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Running,
    /// SIGSTOP: the engine exists but is not stepped.
    Paused,
    /// The agent is not running; the machine (and its resources) is.
    AgentDown,
    /// The machine is off or resetting: nothing runs.
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ep {
    Node(usize),
    Witness,
}

#[derive(Debug, Clone)]
enum Rule {
    /// Packets from `from` to `to` (on `path`, or every path) are dropped.
    Block {
        from: Ep,
        to: Ep,
        path: Option<usize>,
    },
    Loss(u64),
    Delay,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Activate,
    Deactivate,
    /// A self-fence stop of a `cloud` resource: its local part only.
    FenceStop,
    Check,
}

#[derive(Debug)]
enum Ev {
    Fault(usize),
    Tick {
        node: usize,
        gen: u64,
    },
    Hb {
        node: usize,
        gen: u64,
    },
    Deliver {
        to: usize,
        from: usize,
        path: usize,
        /// The sender's heartbeat number (one per round, never reset: the agent's wire
        /// sequence numbers keep growing across restarts).
        seq: u64,
        msg: Rc<PeerMessage>,
    },
    /// An input for the engine of `node` (agent incarnation `inc`), stamped with `stamp`
    /// (local ms) or with the time it is processed.
    Input {
        node: usize,
        inc: u64,
        stamp: Option<u64>,
        input: Input,
    },
    /// A resource action or check finishes (physical effect, then the engine's input).
    Done {
        node: usize,
        inc: u64,
        id: ActionId,
        op: Op,
        res: usize,
        ok: bool,
        timed_out: bool,
    },
    WitnessAsk {
        from: usize,
        inc: u64,
        req: u64,
        partition: Vec<String>,
        lease_ms: u64,
        epochs: BTreeMap<String, u64>,
        sent_at: u64,
    },
    /// The witness's answer reaches the shell of `node`.
    WitnessReply {
        node: usize,
        inc: u64,
        req: u64,
        input: Input,
    },
    WitnessTimeout {
        node: usize,
        inc: u64,
        req: u64,
        sent_at: u64,
    },
    Resume {
        node: usize,
        gen: u64,
    },
    /// The watchdog (or a reboot) resets the node.
    Reset {
        node: usize,
        gen: u64,
    },
    /// The machine boots (after a crash or reset).
    Boot {
        node: usize,
        gen: u64,
    },
    /// The agent starts again (after an agent crash).
    AgentStart {
        node: usize,
        gen: u64,
    },
    Heal(usize),
    /// The shell reports its reachability targets (after a change).
    Reach(usize),
    WitnessUp(u64),
    Repair,
    Converge,
}

struct Node {
    name: String,
    st: St,
    eng: Option<Engine>,
    /// Agent incarnation: bumped whenever an agent starts or dies.
    inc: u64,
    /// Timer generation: bumped on every state change, stale timers are dropped.
    gen: u64,
    /// The state directory.
    disk: Boot,
    clock: Clock,
    /// Inputs that arrived while the agent was paused: (stamp, input).
    inbox: Vec<(Option<u64>, Input)>,
    fail_until: u64,
    slow_until: u64,
    /// Since when the agent's loop has not run (paused or crashed), for the watchdog.
    silent_since: Option<u64>,
    /// The ping targets do not answer until then.
    unreachable_until: u64,
    /// Per group: its monitor fails on this node until then (`MonitorFails`).
    monitor_fail_until: Vec<u64>,
    /// The last heartbeats this node sent, as an attacker on the network records them
    /// (for `Fault::Replay`), with their heartbeat numbers.
    recorded: Vec<(u64, Rc<PeerMessage>)>,
    /// Heartbeat rounds sent so far.
    hb_seq: u64,
    /// Per sender: (this node's incarnation, the highest heartbeat number received from
    /// it in that incarnation), as the shell's replay guard keeps it, for `newest`.
    newest_from: BTreeMap<usize, (u64, u64)>,
}

/// How the simulated witness decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WitnessModel {
    /// The contract the engine is written against: one grant at a time; granted when
    /// there is no live grant or the requester is in the granted partition, which then
    /// becomes the requester's partition until now + lease; nothing during the first
    /// lease after a restart.
    Simple,
    /// `baton witness` (node-agent's `Book`): a grant per server held for
    /// lease × 1.02; a partition change waits until the servers it leaves out have lapsed
    /// (the others of the old partition keep renewing meanwhile).
    Book,
}

#[derive(Debug, Default)]
struct WitnessState {
    /// Simple: the partition holding the vote and when the grant expires (local µs).
    grant: Option<(BTreeSet<String>, u64)>,
    /// Book: per server, when its grant lapses (local µs); the granted partition; a
    /// partition change waiting for left-out holders to lapse.
    holders: BTreeMap<String, u64>,
    partition: Vec<String>,
    pending: Option<Vec<String>>,
    epochs: BTreeMap<String, u64>,
}

struct WitnessSim {
    up: bool,
    clock: Clock,
    gen: u64,
    /// Local µs at which the witness (re)started.
    started_us: u64,
    st: WitnessState,
}

impl WitnessSim {
    /// A vote request from `me` for `partition` (sorted, `me` in it) at local time
    /// `now` (µs): (granted, detail).
    fn vote(
        &mut self,
        model: WitnessModel,
        me: &str,
        partition: &[String],
        lease_ms: u64,
        now: u64,
    ) -> (bool, String) {
        let lease = lease_ms * US;
        let hold = lease * 102 / 100;
        let quiet = match model {
            WitnessModel::Simple => lease,
            WitnessModel::Book => hold + 1,
        };
        if now.saturating_sub(self.started_us) < quiet {
            return (false, "witness restarted less than a lease ago".into());
        }
        let st = &mut self.st;
        match model {
            WitnessModel::Simple => {
                let live = st.grant.as_ref().filter(|g| g.1 > now);
                if live.is_none_or(|g| g.0.contains(me)) {
                    st.grant = Some((partition.iter().cloned().collect(), now + lease));
                    (true, "granted".into())
                } else {
                    (false, "granted to another partition".into())
                }
            }
            WitnessModel::Book => {
                st.holders.retain(|_, exp| *exp > now);
                let expiry = now + hold;
                if st.holders.is_empty() {
                    st.partition = partition.to_vec();
                    st.pending = None;
                    st.holders.insert(me.to_string(), expiry);
                    return (true, "granted (no live grant)".into());
                }
                if !st.partition.iter().any(|p| p == me) {
                    return (false, format!("held by {:?}", st.partition));
                }
                if st
                    .pending
                    .as_ref()
                    .is_some_and(|q| !q.iter().any(|p| p == me))
                {
                    return (false, "the vote is moving to a partition without it".into());
                }
                let blocked = st.holders.keys().any(|h| h != me && !partition.contains(h));
                st.holders.insert(me.to_string(), expiry);
                if blocked {
                    st.pending = Some(partition.to_vec());
                    (true, "renewed; the move waits".into())
                } else {
                    st.partition = partition.to_vec();
                    st.pending = None;
                    (true, "granted".into())
                }
            }
        }
    }

    /// A restart: it remembers no grant; the epochs (and data marks) it acknowledged
    /// are kept, as `baton witness --state-file` keeps them (written before the reply
    /// that acknowledges them). Without them a server that claimed an epoch through the
    /// witness and is down at the restart could see the epoch claimed again.
    fn restart(&mut self, now_true: u64) {
        self.up = true;
        self.gen += 1;
        self.started_us = self.clock.local_us(now_true);
        let epochs = std::mem::take(&mut self.st.epochs);
        self.st = WitnessState {
            epochs,
            ..WitnessState::default()
        };
    }
}

/// One group activation as the world saw it (for invariant 3).
#[derive(Debug, Clone)]
struct LastActivation {
    node: usize,
    epoch: u64,
}

struct World {
    sched: Schedule,
    cfg: Config,
    rng: Rng,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Ev>,
    nodes: Vec<Node>,
    witness: Option<WitnessSim>,
    /// (rule id, rule, end µs)
    rules: Vec<(usize, Rule)>,
    next_rule: usize,
    /// Per resource (global index), the nodes on which it is (possibly) active.
    active: Vec<BTreeSet<usize>>,
    /// Per resource, the nodes whose agent was told its activation ended well and that
    /// issued no stop since (what a dependent may start on).
    ready: Vec<BTreeSet<usize>>,
    /// Per resource, the resources it depends on (global indices).
    res_deps: Vec<Vec<usize>>,
    /// Per resource: its group.
    res_group: Vec<usize>,
    res_index: BTreeMap<String, usize>,
    group_index: BTreeMap<String, usize>,
    last_act: Vec<Option<LastActivation>>,
    violation: Option<String>,
    repaired: bool,
    converged_since: Option<u64>,
    done: bool,
    deadline: u64,
    trace: Option<Vec<String>>,
    steps: u64,
    activations: Vec<(u64, usize, String, u64)>,
    /// `BATON_SIM_IGNORE=2`: do not stop at invariant 2 (to look for other problems
    /// behind a known one).
    ignore_quorum_check: bool,
    /// When the simulated operator last ran `baton group start`.
    last_start: u64,
    monitor: MonitorStats,
    /// Local self-fence stops the engines asked for.
    fence_stops: u64,
    /// Witness requests the shells still wait for.
    outstanding: BTreeSet<u64>,
    next_req: u64,
}

/// What a run found.
#[derive(Debug)]
struct Outcome {
    violation: Option<String>,
    /// Every group activation: (true ms, server, group, epoch).
    activations: Vec<(u64, usize, String, u64)>,
    /// What the monitors did: probes answered as failed, recovery scripts run, restarts
    /// and failovers the recovery ladder ordered.
    monitor: MonitorStats,
    /// Local self-fence stops the engines asked for.
    fence_stops: u64,
    steps: u64,
    sim_ms: u64,
    trace: Vec<String>,
}

#[derive(Debug, Default, Clone, Copy)]
struct MonitorStats {
    failed_probes: u64,
    scripts: u64,
    restarts: u64,
    failovers: u64,
}

impl std::ops::AddAssign for MonitorStats {
    fn add_assign(&mut self, o: MonitorStats) {
        self.failed_probes += o.failed_probes;
        self.scripts += o.scripts;
        self.restarts += o.restarts;
        self.failovers += o.failovers;
    }
}

impl World {
    fn new(sched: Schedule, trace: bool) -> World {
        let cfg = parse(&sched.config_text());
        let p = sched.params.clone();
        let mut rng = Rng::new(sched.seed ^ 0x5151_5151_5151_5151);
        let nodes = (0..p.servers)
            .map(|i| Node {
                name: server_name(i),
                st: St::Off,
                eng: None,
                inc: 0,
                gen: 0,
                disk: Boot::default(),
                clock: Clock {
                    ppm: p.drift_ppm[i],
                    offset_us: rng.range(0, 1_000_000_000),
                },
                inbox: Vec::new(),
                fail_until: 0,
                slow_until: 0,
                silent_since: None,
                unreachable_until: 0,
                monitor_fail_until: vec![0; p.groups.len()],
                recorded: Vec::new(),
                hb_seq: 0,
                newest_from: BTreeMap::new(),
            })
            .collect();
        let witness = p.witness.then(|| WitnessSim {
            up: true,
            clock: Clock {
                ppm: p.witness_drift_ppm,
                offset_us: rng.range(0, 1_000_000_000),
            },
            gen: 0,
            started_us: 0,
            st: WitnessState::default(),
        });
        let mut res_group = Vec::new();
        let mut res_index = BTreeMap::new();
        let mut group_index = BTreeMap::new();
        for (gi, g) in cfg.groups.iter().enumerate() {
            group_index.insert(g.name.clone(), gi);
            for r in &g.resources {
                res_index.insert(r.name.clone(), res_group.len());
                res_group.push(gi);
            }
        }
        let res_deps = cfg
            .groups
            .iter()
            .flat_map(|g| &g.resources)
            .map(|r| r.depends_on.iter().map(|d| res_index[d]).collect())
            .collect();
        let ngroups = cfg.groups.len();
        let mut w = World {
            cfg,
            rng,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            nodes,
            witness,
            rules: Vec::new(),
            next_rule: 0,
            active: vec![BTreeSet::new(); res_group.len()],
            ready: vec![BTreeSet::new(); res_group.len()],
            res_deps,
            res_group,
            res_index,
            group_index,
            last_act: vec![None; ngroups],
            violation: None,
            repaired: false,
            converged_since: None,
            done: false,
            deadline: 0,
            trace: trace.then(Vec::new),
            steps: 0,
            outstanding: BTreeSet::new(),
            next_req: 0,
            last_start: 0,
            monitor: MonitorStats::default(),
            fence_stops: 0,
            activations: Vec::new(),
            ignore_quorum_check: std::env::var("BATON_SIM_IGNORE").is_ok_and(|v| v.contains('2')),
            sched,
        };
        if let Some(wt) = &mut w.witness {
            // The witness may have run for a while already, or have just started.
            let local0 = wt.clock.local_us(0);
            wt.started_us = local0.saturating_sub(w.rng.range(0, 2 * p.timeout_ms * US));
        }
        // Servers power on within the first heartbeat interval, in any order.
        for i in 0..w.nodes.len() {
            let at = w.rng.range(0, p.interval_ms * US);
            w.at(at, Ev::Boot { node: i, gen: 0 });
        }
        for fi in 0..w.sched.faults.len() {
            let at = w.sched.faults[fi].0 * US;
            w.at(at, Ev::Fault(fi));
        }
        w.at(p.window_ms * US, Ev::Repair);
        w
    }

    fn p(&self) -> &Params {
        &self.sched.params
    }

    fn at(&mut self, t: u64, ev: Ev) {
        self.seq += 1;
        self.queue.insert((t.max(self.now), self.seq), ev);
    }

    fn after(&mut self, d: u64, ev: Ev) {
        self.at(self.now + d, ev);
    }

    fn log(&mut self, f: impl FnOnce() -> String) {
        if let Some(t) = &mut self.trace {
            let line = format!("{:>9.3} {}", self.now as f64 / 1000.0, f());
            t.push(line);
        }
    }

    fn local_ms(&self, n: usize) -> u64 {
        self.nodes[n].clock.local_ms(self.now)
    }

    fn run(mut self) -> Outcome {
        while let Some(((t, _), ev)) = self.queue.pop_first() {
            self.now = t;
            self.handle(ev);
            self.steps += 1;
            if self.violation.is_none() {
                self.check_physical();
            }
            if self.violation.is_some() || self.done {
                break;
            }
            if self.repaired && self.now > self.deadline {
                let why = self.convergence_problem().unwrap_or_default();
                self.violation = Some(format!(
                    "invariant 4: no convergence within {} ms of the repair: {why}",
                    (self.deadline - self.p().window_ms * US) / US
                ));
                break;
            }
        }
        if let Some(v) = &self.violation {
            let v = v.clone();
            self.log(|| format!("VIOLATION {v}"));
        }
        Outcome {
            violation: self.violation,
            activations: self.activations,
            monitor: self.monitor,
            fence_stops: self.fence_stops,
            steps: self.steps,
            sim_ms: self.now / US,
            trace: self.trace.unwrap_or_default(),
        }
    }

    // ----- event handling -----

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Fault(fi) => {
                let f = self.sched.faults[fi].1.clone();
                self.log(|| format!("FAULT {f:?}"));
                self.apply_fault(&f);
            }
            Ev::Tick { node, gen } => {
                if self.nodes[node].gen == gen && self.nodes[node].st == St::Running {
                    self.tick(node);
                    if self.nodes[node].gen == gen {
                        let d = self.nodes[node].clock.true_us(self.tick_ms());
                        self.after(d, Ev::Tick { node, gen });
                    }
                }
            }
            Ev::Hb { node, gen } => {
                if self.nodes[node].gen == gen && self.nodes[node].st == St::Running {
                    self.send_heartbeats(node);
                    let d = self.nodes[node].clock.true_us(self.p().interval_ms);
                    self.after(d, Ev::Hb { node, gen });
                }
            }
            Ev::Deliver {
                to,
                from,
                path,
                seq,
                msg,
            } => {
                let stamp = self.local_ms(to);
                let inc = self.nodes[to].inc;
                let newest = match self.nodes[to].newest_from.get(&from) {
                    Some(&(i, s)) if i == inc && s > seq => false,
                    _ => {
                        self.nodes[to].newest_from.insert(from, (inc, seq));
                        true
                    }
                };
                let input = Input::Heartbeat {
                    from: self.nodes[from].name.clone(),
                    path,
                    msg: Box::new((*msg).clone()),
                    newest,
                };
                match self.nodes[to].st {
                    St::Running => self.step(to, Some(stamp), input),
                    St::Paused => self.nodes[to].inbox.push((Some(stamp), input)),
                    St::AgentDown | St::Off => {}
                }
            }
            Ev::Input {
                node,
                inc,
                stamp,
                input,
            } => self.deliver_input(node, inc, stamp, input),
            Ev::Done {
                node,
                inc,
                id,
                op,
                res,
                ok,
                timed_out,
            } => {
                if self.nodes[node].inc != inc {
                    // The agent died: its action was killed with it (or the node reset).
                    return;
                }
                // The agent learns that the start ended well: dependents may start.
                if matches!(op, Op::Activate) && ok {
                    self.ready[res].insert(node);
                }
                let rname = self.res_name(res);
                let input = match op {
                    Op::Activate | Op::Deactivate | Op::FenceStop => {
                        // A local self-fence stop ends this server's hold as a full one
                        // does: the cloud object is the next owner's to take (by its
                        // fenced write, with a higher epoch: `check_activation`).
                        if matches!(op, Op::Deactivate | Op::FenceStop) && ok {
                            self.active[res].remove(&node);
                        }
                        let what = match op {
                            Op::Activate => "activation",
                            Op::FenceStop => "local self-fence stop",
                            _ => "deactivation",
                        };
                        self.log(|| {
                            format!(
                                "{} {what} of {rname} {}",
                                server_name(node),
                                if ok {
                                    "done"
                                } else if timed_out {
                                    "TIMED OUT"
                                } else {
                                    "FAILED"
                                }
                            )
                        });
                        Input::ActionDone {
                            id,
                            result: if ok {
                                Ok(())
                            } else {
                                Err(Failure {
                                    code: if timed_out {
                                        "timeout"
                                    } else {
                                        "command-failed"
                                    }
                                    .into(),
                                    message: format!("{rname}: simulated failure"),
                                    cause: if timed_out {
                                        Cause::Timeout
                                    } else {
                                        Cause::Command
                                    },
                                })
                            },
                        }
                    }
                    Op::Check => Input::CheckDone {
                        id,
                        result: if self.active[res].contains(&node) {
                            CheckResult::Active
                        } else {
                            CheckResult::Inactive
                        },
                        detail: String::new(),
                    },
                };
                self.deliver_input(node, inc, None, input);
            }
            Ev::WitnessAsk {
                from,
                inc,
                req,
                partition,
                lease_ms,
                epochs,
                sent_at,
            } => self.witness_ask(from, inc, req, partition, lease_ms, epochs, sent_at),
            Ev::WitnessReply {
                node,
                inc,
                req,
                input,
            } => {
                if self.outstanding.remove(&req) {
                    self.deliver_input(node, inc, None, input);
                }
            }
            Ev::WitnessTimeout {
                node,
                inc,
                req,
                sent_at,
            } => {
                if self.outstanding.remove(&req) {
                    let input = Input::WitnessReply {
                        sent_at: Millis(sent_at),
                        granted: false,
                        epochs: BTreeMap::new(),
                        detail: "no answer from the witness".into(),
                    };
                    self.deliver_input(node, inc, None, input);
                }
            }
            Ev::Resume { node, gen } => {
                if self.nodes[node].gen == gen && self.nodes[node].st == St::Paused {
                    self.resume(node);
                }
            }
            Ev::Reset { node, gen } => {
                if self.nodes[node].gen == gen
                    && matches!(self.nodes[node].st, St::Paused | St::AgentDown)
                {
                    self.log(|| format!("{} WATCHDOG RESET", server_name(node)));
                    self.power_off(node);
                    let d = self.rng.range(500, 3_000) * US;
                    let gen = self.nodes[node].gen;
                    self.after(d, Ev::Boot { node, gen });
                }
            }
            Ev::Boot { node, gen } => {
                if self.nodes[node].gen == gen && self.nodes[node].st == St::Off {
                    // A new boot of the machine: the reset stopped every resource, and
                    // the shell keeps `fencing` only within one boot.
                    self.nodes[node].disk.fencing = false;
                    self.start_agent(node);
                }
            }
            Ev::AgentStart { node, gen } => {
                if self.nodes[node].gen == gen && self.nodes[node].st == St::AgentDown {
                    self.start_agent(node);
                }
            }
            Ev::Heal(id) => {
                self.rules.retain(|r| r.0 != id);
                self.log(|| format!("heal rule {id}"));
            }
            Ev::WitnessUp(gen) => {
                if let Some(w) = &mut self.witness {
                    if w.gen == gen && !w.up {
                        w.restart(self.now);
                        self.log(|| "witness up (restarted: no grant, its epochs kept)".into());
                    }
                }
            }
            Ev::Reach(node) => self.report_reach(node),
            Ev::Repair => self.repair(),
            Ev::Converge => {
                if self.convergence_problem().is_none() {
                    let since = *self.converged_since.get_or_insert(self.now);
                    if self.now - since >= 2_000 * US {
                        self.done = true;
                    }
                } else {
                    self.converged_since = None;
                    // The operator repeats `baton group start` for a group held `stuck`
                    // or `failed` (a resource that failed during the repair).
                    if self.now >= self.last_start + 3_000 * US {
                        self.group_start_stuck();
                    }
                }
                self.after(250 * US, Ev::Converge);
            }
        }
    }

    fn tick_ms(&self) -> u64 {
        // The agent's `tick_every` (a quarter of the heartbeat interval, within 10..=100
        // ms): its tick outside a steady state, and the cadence at which `tick` checks
        // that the steps the agent skips in one decide nothing.
        (self.p().interval_ms / 4).clamp(10, 100)
    }

    fn res_name(&self, res: usize) -> String {
        self.res_index
            .iter()
            .find(|(_, &i)| i == res)
            .map(|(n, _)| n.clone())
            .unwrap_or_default()
    }

    fn deliver_input(&mut self, node: usize, inc: u64, stamp: Option<u64>, input: Input) {
        if self.nodes[node].inc != inc {
            return;
        }
        match self.nodes[node].st {
            St::Running => self.step(node, stamp, input),
            St::Paused => self.nodes[node].inbox.push((stamp, input)),
            St::AgentDown | St::Off => {}
        }
    }

    /// Step node `n`'s engine and carry out what it asks.
    fn step(&mut self, n: usize, stamp: Option<u64>, input: Input) {
        let now = stamp.unwrap_or_else(|| self.local_ms(n));
        let Some(eng) = self.nodes[n].eng.as_mut() else {
            return;
        };
        let acts = eng.step(Millis(now), input);
        self.execute(n, acts);
        self.after_step(n);
    }

    /// A tick of the fixed cadence. The agent's shell steps its engine no sooner than
    /// [`Engine::next_evaluation`] when nothing else does, so a tick before that instant
    /// must decide nothing: no action or event, nothing urgent, a heartbeat that says
    /// what it said (but for its clocks). Else the engine left out a rule that depends
    /// on time, and the shell would act on it late.
    fn tick(&mut self, n: usize) {
        let now = self.local_ms(n);
        let Some(eng) = self.nodes[n].eng.as_mut() else {
            return;
        };
        let due = eng.steady_until().unwrap_or(Millis(0));
        let before = (Millis(now) < due && !eng.urgent()).then(|| eng.peer_message());
        let acts = eng.step(Millis(now), Input::Tick);
        if let Some(before) = before {
            let changed =
                !acts.is_empty() || eng.urgent() || !before.same_but_clocks(&eng.peer_message());
            if changed && self.violation.is_none() {
                self.violation = Some(format!(
                    "{} decided something at {now} ms, before its next evaluation at {} ms: {acts:?}",
                    server_name(n),
                    due.0
                ));
            }
        }
        self.execute(n, acts);
        self.after_step(n);
    }

    fn after_step(&mut self, n: usize) {
        if self.nodes[n].st != St::Running {
            return;
        }
        let urgent = self.nodes[n].eng.as_mut().is_some_and(|e| e.take_urgent());
        if urgent {
            self.send_heartbeats(n);
        }
    }

    fn command(&mut self, n: usize, cmd: Command) {
        if self.nodes[n].st != St::Running {
            return;
        }
        let now = self.local_ms(n);
        let Some(eng) = self.nodes[n].eng.as_mut() else {
            return;
        };
        match eng.command(Millis(now), cmd.clone()) {
            Ok(acts) => {
                self.log(|| format!("{} command {cmd:?}", server_name(n)));
                self.execute(n, acts);
                self.after_step(n);
            }
            Err(e) => self.log(|| format!("{} command {cmd:?} refused: {e}", server_name(n))),
        }
    }

    fn execute(&mut self, n: usize, acts: Vec<Action>) {
        let inc = self.nodes[n].inc;
        for a in acts {
            if self.nodes[n].inc != inc || self.violation.is_some() {
                // The node was reset by an earlier action of the batch.
                return;
            }
            match a {
                Action::PersistEpoch { group, epoch } => {
                    let e = self.nodes[n].disk.epochs.entry(group).or_default();
                    *e = (*e).max(epoch);
                }
                Action::PersistOwnership { groups, fencing } => {
                    self.nodes[n].disk.owned =
                        groups.into_iter().map(|(g, (e, _))| (g, e)).collect();
                    self.nodes[n].disk.fencing = fencing;
                }
                Action::Activate {
                    id,
                    group,
                    resource,
                    epoch,
                    timeout_ms,
                    ..
                } => {
                    self.check_activation(n, &group, &resource, epoch);
                    let res = self.res_index[&resource];
                    self.check_order(n, res, true);
                    self.active[res].insert(n);
                    self.log(|| {
                        format!(
                            "{} ACTIVATE {resource} of {group} epoch {epoch}",
                            server_name(n)
                        )
                    });
                    self.start_action(n, id, Op::Activate, res, timeout_ms);
                }
                Action::Deactivate {
                    id,
                    group,
                    resource,
                    epoch,
                    timeout_ms,
                    fence,
                    ..
                } => {
                    let res = self.res_index[&resource];
                    self.check_order(n, res, false);
                    self.ready[res].remove(&n);
                    // Only a `cloud` resource has a local self-fence stop.
                    if fence && !self.p().groups[self.res_group[res]].cloud {
                        self.violation.get_or_insert_with(|| {
                            format!("{} asked for a local self-fence stop of {resource}, whose kind has none", server_name(n))
                        });
                    }
                    self.log(|| {
                        format!(
                            "{} deactivate {resource} of {group} epoch {epoch}{}",
                            server_name(n),
                            if fence {
                                " (local self-fence stop)"
                            } else {
                                ""
                            }
                        )
                    });
                    let op = if fence {
                        self.fence_stops += 1;
                        Op::FenceStop
                    } else {
                        Op::Deactivate
                    };
                    self.start_action(n, id, op, res, timeout_ms);
                }
                Action::Check { id, resource, .. } => {
                    let res = self.res_index[&resource];
                    let d = self.rng.range(1, 50 * US);
                    self.after(
                        d,
                        Ev::Done {
                            node: n,
                            inc,
                            id,
                            op: Op::Check,
                            res,
                            ok: true,
                            timed_out: false,
                        },
                    );
                }
                Action::Probe { id, monitor, .. } => {
                    let outcome = match self.probe_failure(n, &monitor) {
                        None => ProbeOutcome::Ok {
                            latency_ms: 1,
                            detail: None,
                        },
                        Some(message) => {
                            self.monitor.failed_probes += 1;
                            self.log(|| {
                                format!("{} probe {monitor} FAILED: {message}", server_name(n))
                            });
                            ProbeOutcome::Failed {
                                latency_ms: 1,
                                code: "command-failed".into(),
                                message,
                                api_error: false,
                            }
                        }
                    };
                    let input = Input::ProbeDone { id, outcome };
                    self.after(
                        US,
                        Ev::Input {
                            node: n,
                            inc,
                            stamp: None,
                            input,
                        },
                    );
                }
                Action::RecoveryScript { id, monitor, .. } => {
                    self.monitor.scripts += 1;
                    let fail_pct = self.p().fail_pct;
                    let ok = self.now >= self.nodes[n].fail_until && !self.rng.chance(fail_pct);
                    self.log(|| {
                        format!(
                            "{} recovery script of {monitor} {}",
                            server_name(n),
                            if ok { "done" } else { "FAILED" }
                        )
                    });
                    let result = if ok {
                        Ok(())
                    } else {
                        Err(Failure {
                            code: "command-failed".into(),
                            message: format!("{monitor}: simulated script failure"),
                            cause: Cause::Command,
                        })
                    };
                    let input = Input::ActionDone { id, result };
                    self.after(
                        US,
                        Ev::Input {
                            node: n,
                            inc,
                            stamp: None,
                            input,
                        },
                    );
                }
                Action::SystemCommand { which, reason, .. } => {
                    self.log(|| format!("{} SYSTEM COMMAND {which:?}: {reason}", server_name(n)));
                    self.power_off(n);
                    // A reboot comes back by itself; a powered-off server at the repair.
                    if which == FinalAction::Reboot {
                        let d = self.rng.range(1_000, 4_000) * US;
                        let gen = self.nodes[n].gen;
                        self.after(d, Ev::Boot { node: n, gen });
                    }
                    return;
                }
                Action::Exit { reason } => {
                    self.log(|| format!("{} agent exits: {reason}", server_name(n)));
                    self.agent_down(n);
                    return;
                }
                Action::Emit { event } => {
                    if event.id == events::RECOVERY_RESTART.code() {
                        self.monitor.restarts += 1;
                    } else if event.id == events::RECOVERY_FAILOVER.code() {
                        self.monitor.failovers += 1;
                    }
                    self.log(|| format!("{} {} {}", server_name(n), event.id, event.message));
                }
                Action::AskWitness {
                    partition,
                    lease_ms,
                    epochs,
                } => self.ask_witness(n, partition, lease_ms, epochs),
            }
        }
    }

    fn start_action(&mut self, n: usize, id: ActionId, op: Op, res: usize, timeout_ms: u64) {
        let p = self.p();
        let (max, fail_pct) = (
            if matches!(op, Op::Activate) {
                p.act_max_ms
            } else if matches!(op, Op::FenceStop) {
                CLOUD_STOP_MS * 4 / 5
            } else {
                p.groups[self.res_group[res]]
                    .deact_max_ms
                    .unwrap_or(p.deact_max_ms)
            },
            p.fail_pct,
        );
        let node = &self.nodes[n];
        let slow = self.now < node.slow_until;
        let failing = self.now < node.fail_until;
        // After the repair resource actions work: they finish within their timeout (a
        // stop drawn up to 4/5 of the fence deadline may be longer than the
        // deactivation timeout, which is a failed stop).
        let max = if self.repaired {
            max.min(timeout_ms * 4 / 5)
        } else {
            max
        };
        let overrun = matches!(op, Op::FenceStop) && self.rng.chance(p.fence_overrun_pct);
        let mut d = if slow {
            self.rng.range(timeout_ms / 2, timeout_ms * 3 / 2)
        } else if overrun {
            timeout_ms
        } else {
            self.rng.range(0, max)
        };
        let mut ok = !failing && !self.rng.chance(fail_pct);
        let timed_out = d >= timeout_ms;
        if timed_out {
            d = timeout_ms;
            ok = false;
        }
        // The shell measures the timeout on the node's clock.
        let d = self.nodes[n].clock.true_us(d);
        let inc = self.nodes[n].inc;
        self.after(
            d,
            Ev::Done {
                node: n,
                inc,
                id,
                op,
                res,
                ok,
                timed_out,
            },
        );
    }

    fn send_heartbeats(&mut self, n: usize) {
        let Some(eng) = &self.nodes[n].eng else {
            return;
        };
        let msg = Rc::new(eng.peer_message());
        self.nodes[n].hb_seq += 1;
        let seq = self.nodes[n].hb_seq;
        let rec = &mut self.nodes[n].recorded;
        if rec.len() >= 64 {
            rec.remove(0);
        }
        rec.push((seq, msg.clone()));
        let interval = self.p().interval_ms * US;
        let paths = self.p().paths;
        for to in 0..self.nodes.len() {
            if to == n {
                continue;
            }
            for path in 0..paths {
                if !self.link(Ep::Node(n), Ep::Node(to), Some(path)) {
                    continue;
                }
                let d = self.delay(interval);
                self.after(
                    d,
                    Ev::Deliver {
                        to,
                        from: n,
                        path,
                        seq,
                        msg: msg.clone(),
                    },
                );
            }
        }
    }

    /// Does a packet get through (not blocked, not lost)?
    fn link(&mut self, from: Ep, to: Ep, path: Option<usize>) -> bool {
        let mut loss = self.p().loss_pct;
        for (_, r) in &self.rules {
            match r {
                Rule::Block {
                    from: f,
                    to: t,
                    path: p,
                } => {
                    if *f == from && *t == to && (p.is_none() || *p == path) {
                        return false;
                    }
                }
                Rule::Loss(pct) => loss = loss.max(*pct),
                Rule::Delay => {}
            }
        }
        !self.rng.chance(loss)
    }

    /// One-way delay: up to half the interval, up to the whole interval during spikes
    /// (the documented bound).
    fn delay(&mut self, interval_us: u64) -> u64 {
        let spike = self.rules.iter().any(|r| matches!(r.1, Rule::Delay));
        let max = if spike { interval_us } else { interval_us / 2 };
        self.rng.range(0, max)
    }

    // ----- node lifecycle -----

    fn start_agent(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        node.inc += 1;
        node.gen += 1;
        node.inbox.clear();
        let boot = Boot {
            incarnation: node.inc,
            epochs: node.disk.epochs.clone(),
            owned: node.disk.owned.clone(),
            fencing: node.disk.fencing,
        };
        let now = node.clock.local_ms(self.now);
        let eng = match Engine::new(self.cfg.clone(), &node.name, boot, Millis(now)) {
            Ok(e) => e,
            Err(e) => panic!("engine for {}: {e}", node.name),
        };
        node.eng = Some(eng);
        node.st = St::Running;
        node.silent_since = None;
        let owned = node.disk.owned.clone();
        self.log(|| format!("{} agent starts (owned {owned:?})", server_name(n)));
        self.start_timers(n);
        self.step(n, None, Input::Tick);
        if self.now < self.nodes[n].unreachable_until {
            self.report_reach(n);
        }
    }

    /// The shell tells the engine whether its reachability targets answer (at start,
    /// and when that changes).
    fn report_reach(&mut self, n: usize) {
        if !self.p().reach {
            return;
        }
        let ok = self.now >= self.nodes[n].unreachable_until;
        let inc = self.nodes[n].inc;
        let detail = if ok {
            "10.0.0.1 answers"
        } else {
            "10.0.0.1: no reply"
        };
        self.log(|| {
            format!(
                "{} reachability {}",
                server_name(n),
                if ok { "ok" } else { "LOST" }
            )
        });
        self.deliver_input(
            n,
            inc,
            None,
            Input::Reachability {
                ok,
                detail: detail.into(),
            },
        );
    }

    fn start_timers(&mut self, n: usize) {
        let gen = self.nodes[n].gen;
        let tick = self.nodes[n].clock.true_us(self.tick_ms());
        self.after(tick, Ev::Tick { node: n, gen });
        self.after(0, Ev::Hb { node: n, gen });
    }

    /// The agent stops (resources keep running); its pending results are lost.
    fn agent_down(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        node.eng = None;
        node.st = St::AgentDown;
        node.inc += 1;
        node.gen += 1;
        node.inbox.clear();
    }

    /// The machine is off: nothing runs, its resources are gone.
    fn power_off(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        node.silent_since = None;
        node.eng = None;
        node.st = St::Off;
        node.inc += 1;
        node.gen += 1;
        node.inbox.clear();
        for a in self.active.iter_mut().chain(self.ready.iter_mut()) {
            a.remove(&n);
        }
    }

    fn resume(&mut self, n: usize) {
        self.log(|| format!("{} resumed (SIGCONT)", server_name(n)));
        let node = &mut self.nodes[n];
        node.st = St::Running;
        node.silent_since = None;
        node.gen += 1;
        let gen = node.gen;
        let inc = node.inc;
        let inbox = std::mem::take(&mut node.inbox);
        // What woke up first is up to the scheduler: the timers fire somewhere among the
        // queued inputs (which keep their order).
        let tick_at = self.rng.index(inbox.len() + 1);
        let hb_at = self.rng.index(inbox.len() + 1);
        let mut i = 0;
        for (stamp, input) in inbox {
            if i == tick_at {
                self.after(0, Ev::Tick { node: n, gen });
            }
            if i == hb_at {
                self.after(0, Ev::Hb { node: n, gen });
            }
            self.after(
                0,
                Ev::Input {
                    node: n,
                    inc,
                    stamp,
                    input,
                },
            );
            i += 1;
        }
        if tick_at == i {
            self.after(0, Ev::Tick { node: n, gen });
        }
        if hb_at == i {
            self.after(0, Ev::Hb { node: n, gen });
        }
    }

    // ----- faults -----

    fn rule(&mut self, rule: Rule, ms: u64) {
        let id = self.next_rule;
        self.next_rule += 1;
        self.rules.push((id, rule));
        self.after(ms * US, Ev::Heal(id));
    }

    fn block_both(&mut self, a: Ep, b: Ep, path: Option<usize>, ms: u64) {
        self.rule(
            Rule::Block {
                from: a,
                to: b,
                path,
            },
            ms,
        );
        self.rule(
            Rule::Block {
                from: b,
                to: a,
                path,
            },
            ms,
        );
    }

    fn apply_fault(&mut self, f: &Fault) {
        if self.repaired {
            return;
        }
        match *f {
            Fault::Crash { node, down_ms } => {
                if self.nodes[node].st != St::Off {
                    self.power_off(node);
                    let gen = self.nodes[node].gen;
                    self.after(down_ms * US, Ev::Boot { node, gen });
                }
            }
            Fault::AgentCrash { node, restart_ms } => {
                if matches!(self.nodes[node].st, St::Running | St::Paused) {
                    // The watchdog counts from when the loop last ran (a crash of a
                    // paused agent continues its silence).
                    let since = self.nodes[node].silent_since.unwrap_or(self.now);
                    self.agent_down(node);
                    self.nodes[node].silent_since = Some(since);
                    let gen = self.nodes[node].gen;
                    let reset_at = since + self.p().watchdog_ms * US;
                    let restart_at = self.now + restart_ms * US;
                    if restart_at <= reset_at {
                        self.at(restart_at, Ev::AgentStart { node, gen });
                    } else {
                        self.at(reset_at, Ev::Reset { node, gen });
                    }
                }
            }
            Fault::Pause { node, ms } => {
                if self.nodes[node].st == St::Running {
                    let bound = self.p().watchdog_ms;
                    let nd = &mut self.nodes[node];
                    nd.st = St::Paused;
                    nd.gen += 1;
                    nd.silent_since = Some(self.now);
                    let gen = nd.gen;
                    if ms <= bound {
                        self.after(ms * US, Ev::Resume { node, gen });
                    } else {
                        self.after(bound * US, Ev::Reset { node, gen });
                    }
                }
            }
            Fault::Partition {
                sides,
                witness_side,
                ms,
            } => {
                let n = self.nodes.len();
                let side = |i: usize| (sides >> i) & 1;
                for a in 0..n {
                    for b in (a + 1)..n {
                        if side(a) != side(b) {
                            self.block_both(Ep::Node(a), Ep::Node(b), None, ms);
                        }
                    }
                    if self.witness.is_some() && side(a) != witness_side {
                        self.block_both(Ep::Node(a), Ep::Witness, None, ms);
                    }
                }
            }
            Fault::OneWay { from, to, ms } => self.rule(
                Rule::Block {
                    from: Ep::Node(from),
                    to: Ep::Node(to),
                    path: None,
                },
                ms,
            ),
            Fault::PathCut { a, b, path, ms } => {
                self.block_both(Ep::Node(a), Ep::Node(b), Some(path), ms)
            }
            Fault::Loss { pct, ms } => self.rule(Rule::Loss(pct), ms),
            Fault::Delay { ms } => self.rule(Rule::Delay, ms),
            Fault::WitnessDown { ms } => {
                if let Some(w) = &mut self.witness {
                    w.up = false;
                    w.gen += 1;
                    let gen = w.gen;
                    self.after(ms * US, Ev::WitnessUp(gen));
                }
            }
            Fault::WitnessRestart => {
                if let Some(w) = &mut self.witness {
                    w.up = false;
                    w.gen += 1;
                    let gen = w.gen;
                    self.after(US, Ev::WitnessUp(gen));
                }
            }
            Fault::WitnessCut { node, ms } => {
                if self.witness.is_some() {
                    self.block_both(Ep::Node(node), Ep::Witness, None, ms);
                }
            }
            Fault::FailActions { node, ms } => self.nodes[node].fail_until = self.now + ms * US,
            Fault::SlowActions { node, ms } => self.nodes[node].slow_until = self.now + ms * US,
            Fault::ReachLost { node, ms } => {
                let until = self.now + ms * US;
                self.nodes[node].unreachable_until = until;
                self.report_reach(node);
                self.after(ms * US, Ev::Reach(node));
            }
            Fault::Replay { node, from, ms } => {
                if self.nodes[node].st == St::Running {
                    self.rule(
                        Rule::Block {
                            from: Ep::Node(from),
                            to: Ep::Node(node),
                            path: None,
                        },
                        ms,
                    );
                    self.agent_down(node);
                    self.start_agent(node);
                    let interval = self.p().interval_ms * US;
                    let paths = self.p().paths;
                    // The most recent recordings (at most 16) that fit in the window,
                    // oldest first.
                    let rec = &self.nodes[from].recorded;
                    let n = usize::try_from(ms * US / interval).map_or(16, |n| n.min(16));
                    let recorded = rec[rec.len().saturating_sub(n)..].to_vec();
                    for (k, (seq, msg)) in recorded.into_iter().enumerate() {
                        let t = (k as u64 + 1) * interval;
                        for path in 0..paths {
                            self.after(
                                t,
                                Ev::Deliver {
                                    to: node,
                                    from,
                                    path,
                                    seq,
                                    msg: msg.clone(),
                                },
                            );
                        }
                    }
                }
            }
            Fault::Move { node, group } => {
                let g = group_name(group);
                self.command(node, Command::GroupMove { group: g, to: None });
            }
            Fault::AppDies { group } => {
                for r in 0..self.active.len() {
                    if self.res_group[r] == group {
                        // `ready` stays: the agent was told the start ended well, and
                        // learns of the death from its monitor, not before.
                        let died = std::mem::take(&mut self.active[r]);
                        let name = self.res_name(r);
                        self.log(|| format!("{name} DIED on {died:?}"));
                    }
                }
            }
            Fault::MonitorFails {
                group,
                everywhere,
                ms,
            } => {
                let until = self.now + ms * US;
                for n in 0..self.nodes.len() {
                    let runs = (0..self.active.len())
                        .any(|r| self.res_group[r] == group && self.active[r].contains(&n));
                    if everywhere || runs {
                        self.nodes[n].monitor_fail_until[group] = until;
                    }
                }
            }
        }
    }

    /// Why the monitor `monitor` fails on node `n` now (None: healthy).
    fn probe_failure(&self, n: usize, monitor: &str) -> Option<String> {
        let gi = monitor
            .strip_prefix('m')
            .and_then(|g| g.parse::<usize>().ok())
            .filter(|&g| g < self.p().groups.len())?;
        if self.now < self.nodes[n].monitor_fail_until[gi] {
            return Some("the checked dependency is down".into());
        }
        let down: Vec<String> = (0..self.active.len())
            .filter(|&r| self.res_group[r] == gi && !self.active[r].contains(&n))
            .map(|r| self.res_name(r))
            .collect();
        (!down.is_empty()).then(|| format!("not running: {}", down.join(", ")))
    }

    /// Faults stop: every link heals, every machine and agent runs, the witness is up,
    /// resource actions work; then `baton group start` for every group (clears exclusions,
    /// retries stuck deactivations, restarts groups a final action stopped).
    fn repair(&mut self) {
        self.log(|| "REPAIR: faults stop".into());
        self.repaired = true;
        self.rules.clear();
        self.sched.params.loss_pct = 0;
        self.sched.params.fail_pct = 0;
        self.sched.params.fence_overrun_pct = 0;
        if let Some(w) = &mut self.witness {
            if !w.up {
                w.restart(self.now);
            }
        }
        for n in 0..self.nodes.len() {
            self.nodes[n].fail_until = 0;
            self.nodes[n].slow_until = 0;
            self.nodes[n].monitor_fail_until.fill(0);
            if self.nodes[n].unreachable_until > self.now {
                self.nodes[n].unreachable_until = 0;
                if matches!(self.nodes[n].st, St::Running | St::Paused) {
                    self.report_reach(n);
                }
            }
            match self.nodes[n].st {
                St::Off | St::AgentDown => self.start_agent(n),
                St::Paused => self.resume(n),
                St::Running => {}
            }
        }
        for gi in 0..self.cfg.groups.len() {
            let group = group_name(gi);
            self.command(0, Command::GroupStart { group, on: None });
        }
        self.last_start = self.now;
        let p = self.p();
        let slowest = p.act_timeout_ms.max(p.deact_timeout_ms) * 3;
        self.deadline = self.now + (30_000 + slowest) * US;
        self.after(250 * US, Ev::Converge);
    }

    /// `baton group start` on the first server for every group held `stuck` or `failed`
    /// somewhere, or stopped by a final action.
    fn group_start_stuck(&mut self) {
        self.last_start = self.now;
        let Some(n) = self.nodes.iter().position(|n| n.st == St::Running) else {
            return;
        };
        for gi in 0..self.cfg.groups.len() {
            let g = group_name(gi);
            let stuck = self.nodes.iter().filter_map(|n| n.eng.as_ref()).any(|e| {
                let m = e.peer_message();
                let st = m.groups.iter().find(|r| *r.name == *g).map(|r| r.state);
                let stopped = m.intents.groups.get(&g).is_some_and(|i| !i.run);
                stopped || matches!(st, Some(GroupState::Stuck | GroupState::Failed))
            });
            if stuck {
                self.command(n, Command::GroupStart { group: g, on: None });
            }
        }
    }

    // ----- the witness -----

    /// The shell sends the request; without an answer within a heartbeat interval it
    /// reports `granted: false`.
    fn ask_witness(
        &mut self,
        n: usize,
        partition: Vec<String>,
        lease_ms: u64,
        epochs: BTreeMap<String, u64>,
    ) {
        let inc = self.nodes[n].inc;
        let sent_at = self.local_ms(n);
        if self.witness.is_none() {
            return;
        }
        self.next_req += 1;
        let req = self.next_req;
        self.outstanding.insert(req);
        let interval = self.p().interval_ms;
        if self.link(Ep::Node(n), Ep::Witness, None) {
            let d = self.delay(interval * US);
            self.after(
                d,
                Ev::WitnessAsk {
                    from: n,
                    inc,
                    req,
                    partition,
                    lease_ms,
                    epochs,
                    sent_at,
                },
            );
        }
        // The shell's request timeout: without an answer by then it reports
        // `granted: false` (and drops a later answer).
        let d = self.nodes[n].clock.true_us(interval);
        self.after(
            d,
            Ev::WitnessTimeout {
                node: n,
                inc,
                req,
                sent_at,
            },
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn witness_ask(
        &mut self,
        from: usize,
        inc: u64,
        req: u64,
        partition: Vec<String>,
        lease_ms: u64,
        epochs: BTreeMap<String, u64>,
        sent_at: u64,
    ) {
        let now = self.now;
        let Some(w) = &mut self.witness else {
            return;
        };
        if !w.up {
            return;
        }
        let local = w.clock.local_us(now);
        let requester = server_name(from);
        let model = self.sched.params.witness_model;
        let mut partition = partition;
        if !partition.contains(&requester) {
            partition.push(requester.clone());
        }
        partition.sort();
        let (granted, detail) = w.vote(model, &requester, &partition, lease_ms, local);
        for (g, e) in epochs {
            let x = w.st.epochs.entry(g).or_default();
            *x = (*x).max(e);
        }
        let epochs = w.st.epochs.clone();
        self.log(|| format!("witness {detail}: {requester} (epochs {epochs:?})"));
        if !self.link(Ep::Witness, Ep::Node(from), None) {
            return;
        }
        let interval = self.p().interval_ms * US;
        let d = self.delay(interval);
        let input = Input::WitnessReply {
            sent_at: Millis(sent_at),
            granted,
            epochs,
            detail,
        };
        self.after(
            d,
            Ev::WitnessReply {
                node: from,
                inc,
                req,
                input,
            },
        );
    }

    // ----- invariants -----

    /// Invariants 2 and 3, when node `n` starts resource `resource` of `group`.
    fn check_activation(&mut self, n: usize, group: &str, resource: &str, epoch: u64) {
        let quorum = self.nodes[n]
            .eng
            .as_ref()
            .is_some_and(|e| e.peer_message().quorum);
        if !quorum && !self.ignore_quorum_check {
            self.violation = Some(format!(
                "invariant 2: {} activates {resource} of {group} (epoch {epoch}) without quorum in its own view",
                server_name(n)
            ));
            return;
        }
        let gi = self.group_index[group];
        match &self.last_act[gi] {
            Some(l) if epoch < l.epoch || (epoch == l.epoch && l.node != n) => {
                self.violation = Some(format!(
                    "invariant 3: {} activates {group} with epoch {epoch} after {} activated it with epoch {}",
                    server_name(n),
                    server_name(l.node),
                    l.epoch
                ));
            }
            Some(l) if l.node == n && l.epoch == epoch => {}
            _ => {
                self.last_act[gi] = Some(LastActivation { node: n, epoch });
                self.activations
                    .push((self.now / US, n, group.to_string(), epoch));
            }
        }
    }

    /// Dependency order: a resource starts on node `n` only once every resource it
    /// depends on has started there (and not been stopped since); it stops there only
    /// once no resource depending on it is (possibly) active there.
    fn check_order(&mut self, n: usize, res: usize, activate: bool) {
        if self.violation.is_some() {
            return;
        }
        let name = self.res_name(res);
        if activate {
            if let Some(&d) = self.res_deps[res]
                .iter()
                .find(|&&d| !self.ready[d].contains(&n))
            {
                let dep = self.res_name(d);
                self.violation = Some(format!(
                    "dependency order: {} starts {name} while {dep}, which it depends on, is not active there",
                    server_name(n)
                ));
            }
        } else if let Some(r) = (0..self.res_deps.len())
            .find(|&r| self.res_deps[r].contains(&res) && self.active[r].contains(&n))
        {
            let dependent = self.res_name(r);
            self.violation = Some(format!(
                "dependency order: {} stops {name} while {dependent}, which depends on it, may be active there",
                server_name(n)
            ));
        }
    }

    /// Invariant 1: a group's resources are (possibly) active on one server at most.
    fn check_physical(&mut self) {
        for gi in 0..self.cfg.groups.len() {
            let mut on = BTreeSet::new();
            for (r, set) in self.active.iter().enumerate() {
                if self.res_group[r] == gi {
                    on.extend(set.iter().copied());
                }
            }
            if on.len() > 1 {
                let names: Vec<String> = on.iter().map(|&i| server_name(i)).collect();
                self.violation = Some(format!(
                    "invariant 1: group {} is active on {} at once",
                    group_name(gi),
                    names.join(" and ")
                ));
                return;
            }
        }
    }

    /// Invariant 4 (after the repair): `None` when every group runs on exactly one
    /// server with all its resources and nowhere else; else what is wrong.
    fn convergence_problem(&self) -> Option<String> {
        for (i, n) in self.nodes.iter().enumerate() {
            if n.st != St::Running {
                return Some(format!("{} is not running ({:?})", server_name(i), n.st));
            }
        }
        for (gi, g) in self.cfg.groups.iter().enumerate() {
            let mut online = Vec::new();
            let mut holding = Vec::new();
            for (i, n) in self.nodes.iter().enumerate() {
                let Some(eng) = &n.eng else { continue };
                let st = eng
                    .peer_message()
                    .groups
                    .into_iter()
                    .find(|r| *r.name == *g.name)
                    .map(|r| r.state);
                match st {
                    Some(GroupState::Online) => online.push(i),
                    Some(s) if s.holds() => holding.push((i, s)),
                    _ => {}
                }
            }
            if online.len() != 1 || !holding.is_empty() {
                return Some(format!(
                    "group {}: online on {online:?}, also held on {holding:?}",
                    g.name
                ));
            }
            let holder = online[0];
            for (r, set) in self.active.iter().enumerate() {
                if self.res_group[r] == gi && (set.len() != 1 || !set.contains(&holder)) {
                    return Some(format!(
                        "resource {} active on {set:?}, group online on {holder}",
                        self.res_name(r)
                    ));
                }
            }
        }
        None
    }
}

// ---------------------------------------------------------------------------------------
// Running schedules
// ---------------------------------------------------------------------------------------

fn run_seed(seed: u64, trace: bool) -> (Schedule, Outcome) {
    let sched = Schedule::generate(seed);
    let out = World::new(sched.clone(), trace).run();
    (sched, out)
}

/// Run a pinned schedule (a regression test); panics with the timeline on a violation.
fn check_schedule(sched: Schedule) -> Outcome {
    let out = World::new(sched.clone(), true).run();
    if let Some(v) = &out.violation {
        let tail: Vec<&str> = out
            .trace
            .iter()
            .rev()
            .take(200)
            .rev()
            .map(|s| s.as_str())
            .collect();
        panic!(
            "{v}\n{}\ntimeline (end):\n{}",
            sched.describe(),
            tail.join("\n")
        );
    }
    out
}

fn replay_command(seed: u64) -> String {
    format!("BATON_SIM_SEED={seed} cargo test -p baton-core sim_replay -- --ignored --nocapture")
}

/// Run one seed; on a violation, panic with the schedule, the replay command and the end
/// of the timeline.
fn check_seed(seed: u64) {
    let (sched, out) = run_seed(seed, false);
    if let Some(v) = out.violation {
        let (_, traced) = run_seed(seed, true);
        let tail: Vec<&String> = traced.trace.iter().rev().take(150).rev().collect();
        panic!(
            "{v}\n{}\nas a regression test: check_schedule({});\ntimeline (last {} lines):\n{}\nreplay: {}",
            sched.describe(),
            sched.as_rust(),
            tail.len(),
            tail.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n"),
            replay_command(seed)
        );
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Random schedules: every invariant holds after every event of every schedule.
///
/// 10,000 schedules in an optimized build (`tests/run-all.sh` runs this test with
/// `--release`: about a minute on two cores), 500 in a debug build (the plain workspace
/// `cargo test`, where an event costs about five times as much). `BATON_SIM_SCHEDULES`
/// overrides the count, `BATON_SIM_BASE_SEED` shifts the seeds (default 1..=count).
#[test]
fn sim_random_schedules() {
    let default = if cfg!(debug_assertions) { 500 } else { 10_000 };
    let count = env_u64("BATON_SIM_SCHEDULES").unwrap_or(default);
    let base = env_u64("BATON_SIM_BASE_SEED").unwrap_or(1);
    // Stop early after this many failing schedules per thread (the first is replayed).
    let max_failures = env_u64("BATON_SIM_MAX_FAILURES").unwrap_or(3) as usize;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8) as u64;
    #[allow(clippy::disallowed_methods)] // reports how long the exploration took; decides nothing
    let started = std::time::Instant::now();
    // Per thread: (events, simulated ms, failing (seed, violation), activations,
    // activations on another server than the group's previous one, monitor figures,
    // such moves of groups with a declared fence budget, of groups whose resources
    // start in parallel, and of groups whose resources all have a local self-fence stop;
    // local self-fence stops).
    type ThreadResult = (
        u64,
        u64,
        Vec<(u64, String)>,
        u64,
        u64,
        MonitorStats,
        u64,
        u64,
        (u64, u64),
    );
    let results: Vec<ThreadResult> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut steps = 0;
                    let mut sim_ms = 0;
                    let mut failures = Vec::new();
                    let (mut acts, mut moves, mut budget_moves, mut parallel_moves) = (0, 0, 0, 0);
                    let (mut cloud_moves, mut fence_stops) = (0, 0);
                    let mut mon = MonitorStats::default();
                    let mut i = t;
                    while i < count && failures.len() < max_failures {
                        let seed = base + i;
                        let (sched, out) = run_seed(seed, false);
                        let budgeted: BTreeSet<String> = (0..sched.params.groups.len())
                            .filter(|&gi| sched.params.groups[gi].fence_budget_ms.is_some())
                            .map(group_name)
                            .collect();
                        let parallel: BTreeSet<String> = (0..sched.params.groups.len())
                            .filter(|&gi| sched.params.groups[gi].parallel)
                            .map(group_name)
                            .collect();
                        let cloud: BTreeSet<String> = (0..sched.params.groups.len())
                            .filter(|&gi| sched.params.groups[gi].cloud)
                            .map(group_name)
                            .collect();
                        fence_stops += out.fence_stops;
                        steps += out.steps;
                        sim_ms += out.sim_ms;
                        acts += out.activations.len() as u64;
                        mon += out.monitor;
                        let mut last: BTreeMap<&str, usize> = BTreeMap::new();
                        for (_, node, g, _) in &out.activations {
                            if last.insert(g, *node).is_some_and(|p| p != *node) {
                                moves += 1;
                                if budgeted.contains(g.as_str()) {
                                    budget_moves += 1;
                                }
                                if parallel.contains(g.as_str()) {
                                    parallel_moves += 1;
                                }
                                if cloud.contains(g.as_str()) {
                                    cloud_moves += 1;
                                }
                            }
                        }
                        if let Some(v) = out.violation {
                            failures.push((seed, v));
                        }
                        i += threads;
                    }
                    (
                        steps,
                        sim_ms,
                        failures,
                        acts,
                        moves,
                        mon,
                        budget_moves,
                        parallel_moves,
                        (cloud_moves, fence_stops),
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("simulation thread"))
            .collect()
    });
    let steps: u64 = results.iter().map(|r| r.0).sum();
    let sim_ms: u64 = results.iter().map(|r| r.1).sum();
    let failures: Vec<&(u64, String)> = results.iter().flat_map(|r| &r.2).collect();
    let acts: u64 = results.iter().map(|r| r.3).sum();
    let moves: u64 = results.iter().map(|r| r.4).sum();
    let budget_moves: u64 = results.iter().map(|r| r.6).sum();
    let parallel_moves: u64 = results.iter().map(|r| r.7).sum();
    let cloud_moves: u64 = results.iter().map(|r| r.8 .0).sum();
    let fence_stops: u64 = results.iter().map(|r| r.8 .1).sum();
    let mut mon = MonitorStats::default();
    for r in &results {
        mon += r.5;
    }
    println!(
        "{count} schedules, {steps} events, {} s simulated, {acts} group activations ({moves} on another server than the previous one, {budget_moves} of them groups with their own fence budget, {parallel_moves} groups that start resources in parallel, {cloud_moves} groups whose resources stop locally in a self-fence; {fence_stops} local self-fence stops), monitors: {} failed polls, {} recovery scripts, {} restarts, {} failovers, in {:.1} s ({threads} threads)",
        sim_ms / 1000,
        mon.failed_probes,
        mon.scripts,
        mon.restarts,
        mon.failovers,
        started.elapsed().as_secs_f64()
    );
    if !failures.is_empty() {
        let list: Vec<String> = failures
            .iter()
            .map(|(s, v)| format!("  seed {s}: {v}\n    {}", replay_command(*s)))
            .collect();
        eprintln!("failing schedules:\n{}", list.join("\n"));
        // The first one again with its timeline (panics if it reproduces) ...
        check_seed(failures[0].0);
        // ... and a failure all the same if it did not.
        panic!(
            "{} failing schedule(s) (at most {max_failures} per thread are collected):\n{}",
            failures.len(),
            list.join("\n")
        );
    }
    // A simulator whose faults did nothing would pass the invariants trivially: the
    // schedules must really activate groups and move them between servers. (1,000
    // schedules gave 3,122 activations, 363 of them on another server than the group's
    // previous one.) Small runs (a replay of a few seeds) are not held to it.
    if count >= 200 {
        assert!(
            acts >= count,
            "only {acts} activations in {count} schedules: the simulation did not exercise failovers"
        );
        assert!(
            moves >= count / 5,
            "only {moves} moves to another server in {count} schedules: faults did not cause failovers"
        );
        // Groups with their own fence budget (a shorter takeover wait) must move too.
        assert!(
            budget_moves >= count / 20,
            "only {budget_moves} moves of groups with a fence budget in {count} schedules"
        );
        // So must groups whose resources stop locally in a self-fence (a fence deadline
        // of one interval), and such stops must happen.
        assert!(
            cloud_moves >= count / 20,
            "only {cloud_moves} moves of groups with local self-fence stops in {count} schedules"
        );
        assert!(
            fence_stops >= count / 20,
            "only {fence_stops} local self-fence stops in {count} schedules"
        );
        // So must groups whose independent resources start and stop together.
        assert!(
            parallel_moves >= count / 20,
            "only {parallel_moves} moves of groups with resource_order = \"parallel\" in {count} schedules"
        );
        // Application faults must reach the recovery ladder: failed polls, scripts,
        // restarts and monitor failovers. (10,000 schedules gave 8,178 failed polls, 577
        // scripts, 2,050 restarts and 949 failovers; the floors are about half of that.)
        for (what, n, floor) in [
            ("failed monitor polls", mon.failed_probes, count / 3),
            ("recovery scripts", mon.scripts, count / 40),
            ("recovery restarts", mon.restarts, count / 10),
            ("recovery failovers", mon.failovers, count / 25),
        ] {
            assert!(
                n >= floor,
                "only {n} {what} in {count} schedules (floor {floor}): the monitors were not exercised"
            );
        }
    }
}

/// Replays `BATON_SIM_SEED` with a full timeline. Ignored in a normal run (it needs a
/// seed): `BATON_SIM_SEED=N cargo test -p baton-core sim_replay -- --ignored --nocapture`.
#[test]
#[ignore = "replays BATON_SIM_SEED; run with --ignored"]
fn sim_replay() {
    let Some(seed) = env_u64("BATON_SIM_SEED") else {
        panic!("set BATON_SIM_SEED=N to replay schedule N");
    };
    let (sched, out) = run_seed(seed, true);
    println!("{}", sched.describe());
    println!("configuration:\n{}", sched.config_text());
    for l in &out.trace {
        println!("{l}");
    }
    println!(
        "{} events, {} ms simulated: {}",
        out.steps,
        out.sim_ms,
        out.violation.as_deref().unwrap_or("all invariants hold")
    );
    assert!(out.violation.is_none(), "{}", replay_command(seed));
}

#[test]
fn sim_prng_and_schedules_are_reproducible() {
    let mut a = Rng::new(42);
    let mut b = Rng::new(42);
    let xs: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
    let ys: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
    assert_eq!(xs, ys);
    // SplitMix64's published first output for seed 0.
    assert_eq!(Rng::new(0).next_u64(), 0xe220_a839_7b1d_cdaf);
    let s1 = Schedule::generate(7);
    let s2 = Schedule::generate(7);
    assert_eq!(s1.describe(), s2.describe());
    assert_eq!(s1.config_text(), s2.config_text());
    let (_, o1) = run_seed(7, true);
    let (_, o2) = run_seed(7, true);
    assert_eq!(o1.trace, o2.trace);
    assert_eq!(o1.steps, o2.steps);
}

#[test]
fn sim_clocks_drift_within_the_bound() {
    let fast = Clock {
        ppm: MAX_DRIFT_PPM,
        offset_us: 5,
    };
    let slow = Clock {
        ppm: -MAX_DRIFT_PPM,
        offset_us: 0,
    };
    assert_eq!(fast.local_us(1_000_000), 1_010_005);
    assert_eq!(slow.local_us(1_000_000), 990_000);
    // 1,000 local ms on a fast clock pass in less true time.
    assert_eq!(fast.true_us(1_000), 990_100);
    assert_eq!(slow.true_us(1_000), 1_010_102);
    for seed in 0..200 {
        let s = Schedule::generate(seed);
        assert!(s.params.drift_ppm.iter().all(|d| d.abs() <= MAX_DRIFT_PPM));
        assert!((2..=7).contains(&s.params.servers));
        assert!((1..=3).contains(&s.params.groups.len()));
    }
}

#[test]
fn sim_two_servers_and_a_witness_fail_over_after_a_crash() {
    // s1 runs g1; it crashes at 4 s: s2 takes over with the witness's vote (2 of 3).
    let sched = Schedule {
        seed: 11,
        params: Params {
            servers: 2,
            paths: 2,
            witness: true,
            interval_ms: 200,
            timeout_ms: 1000,
            groups: vec![GroupSpec {
                servers: vec![0, 1],
                resources: 2,
                failback: false,
                act_retries: 0,
                deact_retries: 0,
                fence_budget_ms: None,
                deact_max_ms: None,
                parallel: false,
                cloud: false,
                monitor: None,
            }],
            drift_ppm: vec![10_000, -10_000],
            witness_drift_ppm: 10_000,
            witness_model: WitnessModel::Book,
            act_timeout_ms: 2000,
            deact_timeout_ms: 2000,
            act_max_ms: 100,
            deact_max_ms: 100,
            fail_pct: 0,
            fence_overrun_pct: 0,
            loss_pct: 0,
            reach: false,
            fence_timeout_ms: None,
            takeover_wait_ms: None,
            watchdog_ms: 1000,
            window_ms: 10_000,
        },
        faults: vec![(
            4_000,
            Fault::Crash {
                node: 0,
                down_ms: 60_000,
            },
        )],
    };
    let out = check_schedule(sched);
    let act: Vec<(usize, u64)> = out.activations.iter().map(|a| (a.1, a.3)).collect();
    assert_eq!(act[..2], [(0, 1), (1, 2)], "{:?}", out.activations);
    // The takeover came after the timeout and the takeover wait, not before.
    let tm = crate::config::timing::Timing::derive(200, 1000, None, None);
    assert!(out.activations[1].0 >= 4_000 + tm.takeover_after_ms());
}

#[test]
fn sim_detects_a_double_activation_when_the_watchdog_is_missing() {
    // The checker itself: with no watchdog (a pause of 8 s is not cut short by a reset),
    // the paused holder keeps its resources while the others take over: invariant 1
    // must fire. (The generator never produces this: it violates an assumption.)
    let sched = Schedule {
        seed: 12,
        params: Params {
            servers: 3,
            paths: 1,
            witness: false,
            interval_ms: 200,
            timeout_ms: 1000,
            groups: vec![GroupSpec {
                servers: vec![0, 1, 2],
                resources: 1,
                failback: false,
                act_retries: 0,
                deact_retries: 0,
                fence_budget_ms: None,
                deact_max_ms: None,
                parallel: false,
                cloud: false,
                monitor: None,
            }],
            drift_ppm: vec![0, 0, 0],
            witness_drift_ppm: 0,
            witness_model: WitnessModel::Book,
            act_timeout_ms: 2000,
            deact_timeout_ms: 2000,
            act_max_ms: 100,
            deact_max_ms: 100,
            fail_pct: 0,
            fence_overrun_pct: 0,
            loss_pct: 0,
            reach: false,
            fence_timeout_ms: None,
            takeover_wait_ms: None,
            watchdog_ms: 60_000,
            window_ms: 15_000,
        },
        faults: vec![(4_000, Fault::Pause { node: 0, ms: 8_000 })],
    };
    let out = World::new(sched, false).run();
    let v = out.violation.expect("a double activation");
    assert!(
        v.starts_with("invariant 1: group g1 is active on s1 and s"),
        "{v}"
    );
}

// ---------------------------------------------------------------------------------------
// Regressions: schedules that found engine bugs (fixed in 1f7904f), pinned as code.
// ---------------------------------------------------------------------------------------

/// s2 holds g1 with quorum {s1, s2} while a one-way cut keeps s3 from hearing it; s3
/// knows the group is held only second-hand (s1's reports). When s2 is isolated, s3
/// takes over as soon as s1 reports s2 down: its own silence of s2 began at the one-way
/// cut, long past T + W, although s2 only lost quorum when s1 stopped hearing it and is
/// still within its self-fence deadline.
#[test]
fn sim_regression_takeover_wait_ignores_second_hand_holder() {
    check_schedule(Schedule {
        seed: 140,
        params: Params {
            servers: 3,
            paths: 2,
            witness: false,
            interval_ms: 150,
            timeout_ms: 750,
            groups: vec![
                GroupSpec {
                    servers: vec![1, 2],
                    resources: 2,
                    failback: false,
                    act_retries: 0,
                    deact_retries: 1,
                    fence_budget_ms: None,
                    deact_max_ms: None,
                    parallel: false,
                    cloud: false,
                    monitor: None,
                },
                GroupSpec {
                    servers: vec![0, 2, 1],
                    resources: 1,
                    failback: false,
                    act_retries: 0,
                    deact_retries: 0,
                    fence_budget_ms: None,
                    deact_max_ms: None,
                    parallel: false,
                    cloud: false,
                    monitor: None,
                },
            ],
            drift_ppm: vec![8503, 10000, -7454],
            witness_drift_ppm: 10000,
            witness_model: WitnessModel::Simple,
            act_timeout_ms: 2000,
            deact_timeout_ms: 4000,
            act_max_ms: 76,
            deact_max_ms: 918,
            fail_pct: 10,
            fence_overrun_pct: 0,
            loss_pct: 2,
            reach: false,
            fence_timeout_ms: Some(1325),
            takeover_wait_ms: None,
            watchdog_ms: 750,
            window_ms: 10213,
        },
        faults: vec![
            (
                1172,
                Fault::OneWay {
                    from: 1,
                    to: 2,
                    ms: 6128,
                },
            ),
            (
                2384,
                Fault::Partition {
                    sides: 0,
                    witness_side: 1,
                    ms: 504,
                },
            ),
            (
                5480,
                Fault::Partition {
                    sides: 5,
                    witness_side: 1,
                    ms: 7254,
                },
            ),
            (8628, Fault::Move { node: 2, group: 1 }),
            (9063, Fault::SlowActions { node: 0, ms: 2707 }),
            (
                9637,
                Fault::Partition {
                    sides: 0,
                    witness_side: 0,
                    ms: 3834,
                },
            ),
        ],
    });
}

/// s1 activates g2's first resource with quorum; the quorum lease of its last peer lapses
/// while the activation runs; the completion arrives before the next tick and the engine
/// starts the second resource on its stale quorum flag (quorum is recomputed only after
/// the input is handled).
#[test]
fn sim_regression_next_resource_started_on_a_stale_quorum() {
    check_schedule(Schedule {
        seed: 1302,
        params: Params {
            servers: 4,
            paths: 1,
            witness: false,
            interval_ms: 150,
            timeout_ms: 900,
            groups: vec![
                GroupSpec {
                    servers: vec![2, 1, 3, 0],
                    resources: 2,
                    failback: false,
                    act_retries: 0,
                    deact_retries: 1,
                    fence_budget_ms: None,
                    deact_max_ms: None,
                    parallel: false,
                    cloud: false,
                    monitor: None,
                },
                GroupSpec {
                    servers: vec![2, 0],
                    resources: 2,
                    failback: true,
                    act_retries: 0,
                    deact_retries: 1,
                    fence_budget_ms: None,
                    deact_max_ms: None,
                    parallel: false,
                    cloud: false,
                    monitor: None,
                },
            ],
            drift_ppm: vec![-4995, -10000, 5790, -5322],
            witness_drift_ppm: -10000,
            witness_model: WitnessModel::Simple,
            act_timeout_ms: 3200,
            deact_timeout_ms: 1800,
            act_max_ms: 669,
            deact_max_ms: 304,
            fail_pct: 0,
            fence_overrun_pct: 0,
            loss_pct: 0,
            reach: false,
            fence_timeout_ms: None,
            takeover_wait_ms: None,
            watchdog_ms: 900,
            window_ms: 9835,
        },
        faults: vec![
            (
                1640,
                Fault::Partition {
                    sides: 4,
                    witness_side: 0,
                    ms: 6037,
                },
            ),
            (
                3206,
                Fault::Partition {
                    sides: 2,
                    witness_side: 2,
                    ms: 6415,
                },
            ),
        ],
    });
}

/// Two servers claim the same epoch for g1 and both activate it. s2 cannot hear s3 (a
/// one-way cut); s3 lost quorum, deactivated g1, regained quorum when s1 rebooted. s2,
/// having waited T + W of s3's silence, claims epoch 2; s3, first in g1's order and ready
/// again, claims epoch 2 as well. s1 hears both and reports max_epoch 2, which each
/// claimer counts as s1's acknowledgement of *its own* claim: both reach "a quorum saw
/// epoch 2" and activate (invariant 3, and a double activation at the same instant).
#[test]
fn sim_regression_two_claims_of_one_epoch_both_acknowledged() {
    check_schedule(Schedule {
        seed: 9372,
        params: Params {
            servers: 3,
            paths: 1,
            witness: false,
            interval_ms: 200,
            timeout_ms: 1000,
            groups: vec![
                GroupSpec {
                    servers: vec![2, 1],
                    resources: 1,
                    failback: true,
                    act_retries: 0,
                    deact_retries: 1,
                    fence_budget_ms: None,
                    deact_max_ms: None,
                    parallel: false,
                    cloud: false,
                    monitor: None,
                },
                GroupSpec {
                    servers: vec![2, 1, 0],
                    resources: 1,
                    failback: false,
                    act_retries: 1,
                    deact_retries: 1,
                    fence_budget_ms: None,
                    deact_max_ms: None,
                    parallel: false,
                    cloud: false,
                    monitor: None,
                },
            ],
            drift_ppm: vec![-10000, 10000, 10000],
            witness_drift_ppm: 10000,
            witness_model: WitnessModel::Book,
            act_timeout_ms: 2000,
            deact_timeout_ms: 4000,
            act_max_ms: 201,
            deact_max_ms: 277,
            fail_pct: 0,
            fence_overrun_pct: 0,
            loss_pct: 0,
            reach: false,
            fence_timeout_ms: None,
            takeover_wait_ms: None,
            watchdog_ms: 1000,
            window_ms: 7206,
        },
        faults: vec![
            (2171, Fault::Pause { node: 0, ms: 1007 }),
            (
                3038,
                Fault::OneWay {
                    from: 2,
                    to: 1,
                    ms: 4860,
                },
            ),
            (4462, Fault::Delay { ms: 529 }),
            (6199, Fault::FailActions { node: 1, ms: 1168 }),
            (
                6333,
                Fault::Partition {
                    sides: 6,
                    witness_side: 0,
                    ms: 4468,
                },
            ),
        ],
    });
}

/// Two servers and a witness. s1 holds g1 and g2 with the witness's vote while s2 is cut
/// off; when the partition heals into a one-way cut (s2 still cannot hear s1), the witness
/// hands its vote to s2 (a member of the granted partition). s1 loses quorum and starts
/// to fence (its deadline F = 788 ms is longer than T = 500 ms); s2, which has not heard
/// s1 for seconds, takes over one settle period (T) after gaining quorum, while s1 is
/// still stopping g2. The takeover wait counts s2's silence of s1, which began long
/// before s2 had quorum, so it does not bound when s1 last had quorum.
#[test]
fn sim_regression_witness_hand_over_without_fence_wait() {
    check_schedule(Schedule {
        seed: 18303,
        params: Params {
            servers: 2,
            paths: 1,
            witness: true,
            interval_ms: 100,
            timeout_ms: 500,
            groups: vec![
                GroupSpec {
                    servers: vec![1, 0],
                    resources: 1,
                    failback: false,
                    act_retries: 1,
                    deact_retries: 0,
                    fence_budget_ms: None,
                    deact_max_ms: None,
                    parallel: false,
                    cloud: false,
                    monitor: None,
                },
                GroupSpec {
                    servers: vec![1, 0],
                    resources: 2,
                    failback: false,
                    act_retries: 0,
                    deact_retries: 0,
                    fence_budget_ms: None,
                    deact_max_ms: None,
                    parallel: false,
                    cloud: false,
                    monitor: None,
                },
            ],
            drift_ppm: vec![570, 170],
            witness_drift_ppm: 10000,
            witness_model: WitnessModel::Simple,
            act_timeout_ms: 2400,
            deact_timeout_ms: 1200,
            act_max_ms: 352,
            deact_max_ms: 458,
            fail_pct: 0,
            fence_overrun_pct: 0,
            loss_pct: 0,
            reach: false,
            fence_timeout_ms: Some(788),
            takeover_wait_ms: None,
            watchdog_ms: 250,
            window_ms: 7340,
        },
        faults: vec![
            (
                313,
                Fault::Partition {
                    sides: 1,
                    witness_side: 1,
                    ms: 4583,
                },
            ),
            (2841, Fault::Pause { node: 1, ms: 65 }),
            (
                4298,
                Fault::OneWay {
                    from: 0,
                    to: 1,
                    ms: 1577,
                },
            ),
            (
                5632,
                Fault::OneWay {
                    from: 0,
                    to: 1,
                    ms: 1401,
                },
            ),
            (6707, Fault::WitnessDown { ms: 6080 }),
            (
                7193,
                Fault::Crash {
                    node: 0,
                    down_ms: 208,
                },
            ),
        ],
    });
}

/// s1 asks for `group move` (version 1, origin s1), its agent crashes and restarts
/// (intents are not persisted), and while it is still cut off the operator runs
/// `group start` on it: the new intent gets version 1, origin s1 again. s2 keeps the
/// move (prefer s1), s1 the start (no preference): the two intents compare equal, so
/// neither replaces the other and `views_agree` is satisfied, but each server computes
/// the other as the target and the group never starts.
#[test]
fn sim_regression_restarted_agent_reuses_an_intent_version() {
    check_schedule(Schedule {
        seed: 577,
        params: Params {
            servers: 2,
            paths: 1,
            witness: false,
            interval_ms: 150,
            timeout_ms: 600,
            groups: vec![GroupSpec {
                servers: vec![1, 0],
                resources: 1,
                failback: false,
                act_retries: 1,
                deact_retries: 1,
                fence_budget_ms: None,
                deact_max_ms: None,
                parallel: false,
                cloud: false,
                monitor: None,
            }],
            drift_ppm: vec![2788, -3084],
            witness_drift_ppm: 10000,
            witness_model: WitnessModel::Simple,
            act_timeout_ms: 4000,
            deact_timeout_ms: 4000,
            act_max_ms: 316,
            deact_max_ms: 848,
            fail_pct: 0,
            fence_overrun_pct: 0,
            loss_pct: 0,
            reach: false,
            fence_timeout_ms: Some(1090),
            takeover_wait_ms: None,
            watchdog_ms: 600,
            window_ms: 10377,
        },
        faults: vec![
            (502, Fault::Pause { node: 1, ms: 2863 }),
            (
                2561,
                Fault::Partition {
                    sides: 1,
                    witness_side: 1,
                    ms: 1326,
                },
            ),
            (7597, Fault::Move { node: 0, group: 0 }),
            (
                8008,
                Fault::AgentCrash {
                    node: 0,
                    restart_ms: 753,
                },
            ),
            (
                8068,
                Fault::Partition {
                    sides: 1,
                    witness_side: 1,
                    ms: 3264,
                },
            ),
        ],
    });
}

/// The replay attack of issue 9: s1 holds g1; it is cut off from s2 and s3, and an
/// attacker restarts its agent (empty replay guard) and replays s2's heartbeats recorded
/// before, which say that s2 hears s1. Counting that vote would give s1 a quorum (2 of 3)
/// next to the real one of s2 and s3, which take the group over: twice active. The
/// replayed heartbeats echo s1's previous incarnation, so they give no vote.
#[test]
fn sim_regression_replayed_heartbeats_give_no_vote() {
    let out = check_schedule(Schedule {
        seed: 9,
        params: Params {
            servers: 3,
            paths: 2,
            witness: false,
            interval_ms: 200,
            timeout_ms: 1000,
            groups: vec![GroupSpec {
                servers: vec![0, 1, 2],
                resources: 1,
                failback: false,
                act_retries: 0,
                deact_retries: 0,
                fence_budget_ms: None,
                deact_max_ms: None,
                parallel: false,
                cloud: false,
                monitor: None,
            }],
            drift_ppm: vec![0, 0, 0],
            witness_drift_ppm: 0,
            witness_model: WitnessModel::Simple,
            act_timeout_ms: 2000,
            deact_timeout_ms: 4000,
            act_max_ms: 50,
            deact_max_ms: 50,
            fail_pct: 0,
            fence_overrun_pct: 0,
            loss_pct: 0,
            reach: false,
            fence_timeout_ms: None,
            takeover_wait_ms: None,
            watchdog_ms: 1000,
            window_ms: 20_000,
        },
        faults: vec![
            (
                8_000,
                Fault::Partition {
                    sides: 0b001,
                    witness_side: 2,
                    ms: 10_000,
                },
            ),
            (
                8_000,
                Fault::Replay {
                    node: 0,
                    from: 1,
                    ms: 10_000,
                },
            ),
        ],
    });
    assert!(out.violation.is_none());
}

/// A replay after a restart, seen from the placement side: an attacker restarts s2's
/// agent (empty replay guard), blocks s3's heartbeats to it and replays s3's heartbeats
/// recorded before, which show g2 offline on s3. Meanwhile s3 starts g2 and an operator
/// moves g2 to s2: s2 took the replayed reports as s3's current state and claimed the
/// group while it ran on s3 (twice active). A report that does not echo s2's current
/// incarnation no longer proves that the group is not running there.
#[test]
fn sim_regression_replayed_heartbeats_hide_a_holder() {
    let out = check_schedule(Schedule {
        seed: 123428,
        params: Params {
            servers: 7,
            paths: 1,
            witness: false,
            interval_ms: 200,
            timeout_ms: 1200,
            groups: vec![
                GroupSpec {
                    servers: vec![4, 6, 5, 0],
                    resources: 1,
                    failback: false,
                    act_retries: 1,
                    deact_retries: 0,
                    monitor: Some(MonitorSpec {
                        interval_ms: 400,
                        retries: 2,
                        script: false,
                        script_retries: 0,
                        restart_retries: 1,
                        failover_retries: 0,
                        final_action: "stop-group",
                    }),
                    fence_budget_ms: Some(390),
                    deact_max_ms: Some(267),
                    parallel: false,
                    cloud: false,
                },
                GroupSpec {
                    servers: vec![2, 1, 3, 5],
                    resources: 1,
                    failback: false,
                    act_retries: 0,
                    deact_retries: 0,
                    monitor: Some(MonitorSpec {
                        interval_ms: 600,
                        retries: 1,
                        script: false,
                        script_retries: 1,
                        restart_retries: 2,
                        failover_retries: 2,
                        final_action: "reboot",
                    }),
                    fence_budget_ms: None,
                    deact_max_ms: None,
                    parallel: false,
                    cloud: false,
                },
            ],
            drift_ppm: vec![-10000, 10000, -6623, 10000, -1696, -6011, 10000],
            witness_drift_ppm: -10000,
            witness_model: WitnessModel::Simple,
            act_timeout_ms: 3400,
            deact_timeout_ms: 2600,
            act_max_ms: 1133,
            deact_max_ms: 192,
            fail_pct: 6,
            fence_overrun_pct: 0,
            loss_pct: 0,
            reach: true,
            fence_timeout_ms: None,
            takeover_wait_ms: Some(2496),
            watchdog_ms: 600,
            window_ms: 6073,
        },
        faults: vec![
            (
                228,
                Fault::Replay {
                    node: 1,
                    from: 2,
                    ms: 2000,
                },
            ),
            (
                686,
                Fault::MonitorFails {
                    group: 1,
                    everywhere: true,
                    ms: 4552,
                },
            ),
            (
                1862,
                Fault::Replay {
                    node: 4,
                    from: 0,
                    ms: 5655,
                },
            ),
            (1881, Fault::Move { node: 3, group: 1 }),
            (4571, Fault::ReachLost { node: 5, ms: 3275 }),
            (
                4878,
                Fault::MonitorFails {
                    group: 1,
                    everywhere: false,
                    ms: 2195,
                },
            ),
        ],
    });
    assert!(out.violation.is_none());
}

/// Two servers and the witness: s1 claims g1 with epoch 1 through the witness (s2 is
/// down), then loses quorum and is reset; the witness restarts; s2, which never heard of
/// epoch 1, claims epoch 1 again with the restarted witness's acknowledgement. A witness
/// that forgets the epochs it acknowledged lets one epoch be claimed twice; it keeps them
/// (`baton witness --state-file`, written before the acknowledging reply).
#[test]
fn sim_regression_restarted_witness_forgets_an_acknowledged_epoch() {
    let out = check_schedule(Schedule {
        seed: 107740,
        params: Params {
            servers: 2,
            paths: 2,
            witness: true,
            interval_ms: 200,
            timeout_ms: 1200,
            groups: vec![GroupSpec {
                servers: vec![0, 1],
                resources: 2,
                failback: true,
                act_retries: 1,
                deact_retries: 1,
                monitor: Some(MonitorSpec {
                    interval_ms: 800,
                    retries: 2,
                    script: false,
                    script_retries: 1,
                    restart_retries: 1,
                    failover_retries: 2,
                    final_action: "stop-group",
                }),
                fence_budget_ms: None,
                deact_max_ms: None,
                parallel: false,
                cloud: false,
            }],
            drift_ppm: vec![-10000, 10000],
            witness_drift_ppm: 7563,
            witness_model: WitnessModel::Simple,
            act_timeout_ms: 2800,
            deact_timeout_ms: 1800,
            act_max_ms: 680,
            deact_max_ms: 249,
            fail_pct: 0,
            fence_overrun_pct: 0,
            loss_pct: 2,
            reach: true,
            fence_timeout_ms: Some(388),
            takeover_wait_ms: None,
            watchdog_ms: 600,
            window_ms: 7837,
        },
        faults: vec![
            (
                1095,
                Fault::AgentCrash {
                    node: 1,
                    restart_ms: 792,
                },
            ),
            (2181, Fault::WitnessDown { ms: 4843 }),
            (3903, Fault::WitnessRestart),
            (5357, Fault::Loss { pct: 43, ms: 5622 }),
            (
                6178,
                Fault::MonitorFails {
                    group: 0,
                    everywhere: false,
                    ms: 393,
                },
            ),
            (
                7193,
                Fault::Partition {
                    sides: 2,
                    witness_side: 0,
                    ms: 4639,
                },
            ),
        ],
    });
    assert!(out.violation.is_none());
}

/// Two servers restart their agents at once while holding groups (the `Replay` faults
/// restart an agent in place), then a long delay of the network keeps them apart. Without
/// quorum each had to stop its re-adopted groups within their fence deadline, counted from
/// its start, but it waited for the startup wait before deciding: it missed the deadline
/// and rebooted. After each reboot its resources checked inactive, yet it waited again,
/// missed the deadline again and rebooted again, the two servers in turn, long after the
/// repair (no convergence: invariant 4). A group with a resource that does not check
/// active is now cleaned up at once.
#[test]
fn sim_regression_re_adoption_of_stopped_resources_reboots_again_and_again() {
    let out = check_schedule(Schedule {
        seed: 410838,
        params: Params {
            servers: 2,
            paths: 2,
            witness: false,
            interval_ms: 150,
            timeout_ms: 750,
            groups: vec![
                GroupSpec {
                    servers: vec![1, 0],
                    resources: 1,
                    failback: false,
                    act_retries: 1,
                    deact_retries: 0,
                    monitor: Some(MonitorSpec {
                        interval_ms: 750,
                        retries: 1,
                        script: true,
                        script_retries: 0,
                        restart_retries: 1,
                        failover_retries: 2,
                        final_action: "stop-group",
                    }),
                    fence_budget_ms: Some(321),
                    deact_max_ms: Some(5),
                    parallel: false,
                    cloud: false,
                },
                GroupSpec {
                    servers: vec![0, 1],
                    resources: 2,
                    failback: false,
                    act_retries: 1,
                    deact_retries: 0,
                    monitor: Some(MonitorSpec {
                        interval_ms: 750,
                        retries: 0,
                        script: false,
                        script_retries: 0,
                        restart_retries: 1,
                        failover_retries: 2,
                        final_action: "stop-group",
                    }),
                    fence_budget_ms: None,
                    deact_max_ms: None,
                    parallel: false,
                    cloud: false,
                },
                GroupSpec {
                    servers: vec![1, 0],
                    resources: 1,
                    failback: false,
                    act_retries: 0,
                    deact_retries: 1,
                    monitor: Some(MonitorSpec {
                        interval_ms: 450,
                        retries: 2,
                        script: true,
                        script_retries: 0,
                        restart_retries: 2,
                        failover_retries: 2,
                        final_action: "reboot",
                    }),
                    fence_budget_ms: None,
                    deact_max_ms: None,
                    parallel: false,
                    cloud: false,
                },
            ],
            drift_ppm: vec![-8285, 10000],
            witness_drift_ppm: 2561,
            witness_model: WitnessModel::Simple,
            act_timeout_ms: 1800,
            deact_timeout_ms: 3600,
            act_max_ms: 166,
            deact_max_ms: 177,
            fail_pct: 0,
            fence_overrun_pct: 0,
            loss_pct: 0,
            reach: false,
            fence_timeout_ms: None,
            takeover_wait_ms: None,
            watchdog_ms: 375,
            window_ms: 9190,
        },
        faults: vec![
            (
                3511,
                Fault::Replay {
                    node: 0,
                    from: 1,
                    ms: 183,
                },
            ),
            (
                3522,
                Fault::Replay {
                    node: 1,
                    from: 0,
                    ms: 359,
                },
            ),
            (4938, Fault::Delay { ms: 5271 }),
        ],
    });
    assert!(out.violation.is_none());
}

/// s1 holds g1 with the witness's vote; a one-way cut silences it towards s2, it loses
/// quorum and starts stopping g1, and its agent crashes in the middle and is back 392 ms
/// later, inside the watchdog's bound (no reset: g1's resource still runs). The new run
/// re-adopted g1 and counted a fresh fence deadline from its start, which ended after
/// s2's takeover: twice active. The ownership record now says that the fence clock ran
/// (`Boot::fencing`), and the restarted agent escalates at once.
#[test]
fn sim_regression_a_restart_during_a_self_fence_keeps_its_deadline() {
    let out = check_schedule(Schedule {
        seed: 1050344,
        params: Params {
            servers: 2,
            paths: 2,
            witness: true,
            interval_ms: 250,
            timeout_ms: 1000,
            groups: vec![
                GroupSpec {
                    servers: vec![0, 1],
                    resources: 1,
                    failback: false,
                    act_retries: 0,
                    deact_retries: 0,
                    monitor: Some(MonitorSpec {
                        interval_ms: 1250,
                        retries: 1,
                        script: true,
                        script_retries: 1,
                        restart_retries: 1,
                        failover_retries: 2,
                        final_action: "stop-group",
                    }),
                    fence_budget_ms: None,
                    deact_max_ms: None,
                    parallel: false,
                    cloud: false,
                },
                GroupSpec {
                    servers: vec![1, 0],
                    resources: 2,
                    failback: false,
                    act_retries: 1,
                    deact_retries: 0,
                    monitor: Some(MonitorSpec {
                        interval_ms: 1000,
                        retries: 2,
                        script: false,
                        script_retries: 1,
                        restart_retries: 1,
                        failover_retries: 0,
                        final_action: "stop-group",
                    }),
                    fence_budget_ms: Some(461),
                    deact_max_ms: Some(206),
                    parallel: true,
                    cloud: false,
                },
                GroupSpec {
                    servers: vec![0, 1],
                    resources: 3,
                    failback: true,
                    act_retries: 0,
                    deact_retries: 0,
                    monitor: None,
                    fence_budget_ms: None,
                    deact_max_ms: None,
                    parallel: true,
                    cloud: false,
                },
            ],
            drift_ppm: vec![10000, -10000],
            witness_drift_ppm: 8273,
            witness_model: WitnessModel::Book,
            act_timeout_ms: 1200,
            deact_timeout_ms: 2800,
            act_max_ms: 6,
            deact_max_ms: 283,
            fail_pct: 0,
            fence_overrun_pct: 0,
            loss_pct: 0,
            reach: false,
            fence_timeout_ms: None,
            takeover_wait_ms: None,
            watchdog_ms: 625,
            window_ms: 10655,
        },
        faults: vec![
            (
                1527,
                Fault::PathCut {
                    a: 1,
                    b: 0,
                    path: 1,
                    ms: 2597,
                },
            ),
            (
                3412,
                Fault::OneWay {
                    from: 0,
                    to: 1,
                    ms: 6866,
                },
            ),
            (
                4652,
                Fault::AgentCrash {
                    node: 0,
                    restart_ms: 392,
                },
            ),
            (5060, Fault::FailActions { node: 1, ms: 4801 }),
            (
                6594,
                Fault::MonitorFails {
                    group: 1,
                    everywhere: false,
                    ms: 5884,
                },
            ),
            (
                6732,
                Fault::Crash {
                    node: 0,
                    down_ms: 444,
                },
            ),
        ],
    });
    assert!(out.violation.is_none());
}

/// A group whose resources all stop locally in a self-fence (fence deadline: one
/// interval) and a slow group beside it on the same holder. The holder is cut off one
/// way (the worst case of the timing rule: it still hears the others, they no longer
/// hear it), and every local self-fence stop overruns its bound. The holder must
/// escalate within the fast group's deadline, before the others take the fast group
/// over after its shorter `T + W_g`; the slow group waits the agent's `T + W`.
#[test]
fn sim_an_overrun_local_self_fence_stop_escalates_before_the_takeover() {
    let group = |cloud: bool| GroupSpec {
        servers: vec![0, 1, 2],
        resources: 2,
        failback: false,
        act_retries: 0,
        deact_retries: 0,
        fence_budget_ms: None,
        deact_max_ms: None,
        parallel: false,
        cloud,
        monitor: None,
    };
    // Every phase of the cut against the heartbeats, and the clocks at both ends of the
    // drift bound.
    let drifts = [
        [10_000, -10_000, -10_000],
        [0, 0, 0],
        [-10_000, 10_000, 10_000],
    ];
    for (drift, cut) in drifts
        .into_iter()
        .flat_map(|d| (0..200).step_by(10).map(move |o| (d, 4_000 + o)))
    {
        let sched = Schedule {
            seed: 7,
            params: Params {
                servers: 3,
                paths: 1,
                witness: false,
                interval_ms: 200,
                timeout_ms: 1000,
                groups: vec![group(true), group(false)],
                drift_ppm: drift.to_vec(),
                witness_drift_ppm: 0,
                witness_model: WitnessModel::Book,
                act_timeout_ms: 2000,
                deact_timeout_ms: 2000,
                act_max_ms: 50,
                deact_max_ms: 300,
                fail_pct: 0,
                fence_overrun_pct: 100,
                loss_pct: 0,
                reach: false,
                fence_timeout_ms: None,
                takeover_wait_ms: None,
                watchdog_ms: 500,
                window_ms: 12_000,
            },
            faults: vec![
                (
                    cut,
                    Fault::OneWay {
                        from: 0,
                        to: 1,
                        ms: 6_000,
                    },
                ),
                (
                    cut,
                    Fault::OneWay {
                        from: 0,
                        to: 2,
                        ms: 6_000,
                    },
                ),
            ],
        };
        let cfg = parse(&sched.config_text());
        assert_eq!(cfg.group_timing(0, 1000).fence_ms, 200, "the fast group");
        assert_eq!(cfg.group_timing(1, 1000).fence_ms, 500, "the slow group");
        let out = check_schedule(sched);
        assert!(
            out.fence_stops >= 2,
            "{} local self-fence stops",
            out.fence_stops
        );
        // Both groups moved off s1 after the cut.
        for g in ["g1", "g2"] {
            assert!(
                out.activations
                    .iter()
                    .any(|(t, n, gg, _)| *t > cut && *n != 0 && gg == g),
                "{g} was not taken over: {:?}",
                out.activations
            );
        }
        assert!(
            out.trace.iter().any(
                |l| l.contains("s1 SYSTEM COMMAND") && l.contains("self-fence deadline missed")
            ),
            "no escalation in the timeline"
        );
    }
}
