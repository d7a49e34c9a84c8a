//! The engine's cost of scale (`bash bench/scale.sh` runs it beside the real agents):
//! for clusters of 3, 5, 8 and 16 servers with 1, 50 and 200 groups, all engines of the
//! cluster run in this process on a simulated clock, exchange their heartbeats every
//! interval and complete every resource action at once, until every group is online;
//! then, in the steady state, the time of one `step` for a heartbeat received and for a
//! tick, and the size of a heartbeat body (JSON, before the wire's compression). The
//! reference measured in the same run is the smallest cluster (3 servers, 1 group): each
//! figure is also given as a ratio to it. Not a test: it reports figures, asserts nothing.
// A benchmark measures real time.
#![allow(clippy::disallowed_methods)]
// A benchmark of fixed inputs: a configuration that does not load is a bug to stop at.
#![allow(clippy::expect_used)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use baton_core::config::{load_str, AnyKind};
use baton_core::engine::{Action, Boot, CheckResult, Engine, GroupState, Input};
use baton_core::time::Millis;

const INTERVAL: u64 = 200;

fn config(servers: usize, groups: usize) -> String {
    let mut s = String::from(
        "[cluster]\nname = \"scale\"\nkey_file = \"/etc/baton/cluster.key\"\n\n[heartbeat]\ninterval = \"200ms\"\ntimeout = \"1s\"\n\n",
    );
    for i in 0..servers {
        let _ = write!(
            s,
            "[[server]]\nname = \"s{i}\"\ninterconnects = [\"10.0.1.{h}\", \"10.0.2.{h}\"]\napi = \"10.0.1.{h}:7420\"\n\n",
            h = i + 1
        );
    }
    for g in 0..groups {
        // Spread the groups: group g prefers server g mod n.
        let order: Vec<String> = (0..servers)
            .map(|k| format!("\"s{}\"", (g + k) % servers))
            .collect();
        let _ = write!(
            s,
            "[[group]]\nname = \"g{g:03}\"\nservers = [{}]\n\n[[group.resource]]\nkind = \"exec\"\nname = \"r{g:03}\"\nstart = \"true\"\n\n",
            order.join(", ")
        );
    }
    s
}

struct Cluster {
    engines: Vec<Engine>,
    now: u64,
}

impl Cluster {
    fn new(servers: usize, groups: usize) -> Cluster {
        let text = config(servers, groups);
        let cfg = load_str("scale.toml", &text, &AnyKind)
            .expect("the benchmark's configuration loads")
            .config;
        let engines = (0..servers)
            .map(|i| {
                let boot = Boot {
                    incarnation: 1 + i as u64,
                    epochs: BTreeMap::new(),
                    owned: BTreeMap::new(),
                    fencing: false,
                };
                Engine::new(cfg.clone(), &format!("s{i}"), boot, Millis(0)).expect("engine")
            })
            .collect();
        Cluster { engines, now: 0 }
    }

    /// Complete every action at once (resources start and stop, checks say active).
    fn answer(&mut self, i: usize, actions: Vec<Action>) {
        let mut todo = actions;
        while !todo.is_empty() {
            let mut next = Vec::new();
            for a in todo {
                let input = match a {
                    Action::Activate { id, .. }
                    | Action::Deactivate { id, .. }
                    | Action::RecoveryScript { id, .. } => Input::ActionDone { id, result: Ok(()) },
                    Action::Check { id, .. } => Input::CheckDone {
                        id,
                        result: CheckResult::Active,
                        detail: String::new(),
                    },
                    _ => continue,
                };
                next.extend(self.engines[i].step(Millis(self.now), input));
            }
            todo = next;
        }
    }

    /// One heartbeat interval: every engine ticks, then every heartbeat is delivered on
    /// both paths.
    fn round(&mut self) {
        self.now += INTERVAL;
        let n = self.engines.len();
        for i in 0..n {
            let a = self.engines[i].step(Millis(self.now), Input::Tick);
            self.answer(i, a);
        }
        let msgs: Vec<_> = self.engines.iter().map(|e| e.peer_message()).collect();
        for (from, msg) in msgs.iter().enumerate() {
            for to in (0..n).filter(|&t| t != from) {
                for path in 0..2 {
                    let a = self.engines[to].step(
                        Millis(self.now),
                        Input::Heartbeat {
                            from: format!("s{from}"),
                            path,
                            msg: Box::new(msg.clone()),
                            newest: true,
                        },
                    );
                    self.answer(to, a);
                }
            }
        }
    }

    fn all_online(&self) -> bool {
        let st = self.engines[0].status();
        st.groups.iter().all(|g| g.state == GroupState::Online)
    }
}

struct Row {
    servers: usize,
    groups: usize,
    heartbeat: Duration,
    tick: Duration,
    body: usize,
}

/// The largest group count up to `groups` whose configuration `config check` accepts
/// (the heartbeat's worst case must fit in one datagram).
fn largest_accepted(servers: usize, groups: usize) -> usize {
    let ok = |g: usize| load_str("scale.toml", &config(servers, g), &AnyKind).is_ok();
    if ok(groups) {
        return groups;
    }
    let (mut lo, mut hi) = (1, groups);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if ok(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

fn measure(servers: usize, groups: usize, iters: u32) -> Row {
    let mut c = Cluster::new(servers, groups);
    for _ in 0..200 {
        c.round();
        if c.all_online() {
            break;
        }
    }
    assert!(
        c.all_online(),
        "{servers} servers, {groups} groups: not all online"
    );
    for _ in 0..5 {
        c.round();
    }
    let msg = c.engines[1].peer_message();
    let body = serde_json::to_vec(&msg).map_or(0, |v| v.len());
    // Heartbeats received by s0 from s1, on a clock that moves a little each time.
    let t = Instant::now();
    for k in 0..iters {
        let now = Millis(c.now + u64::from(k % 50));
        let a = c.engines[0].step(
            now,
            Input::Heartbeat {
                from: "s1".into(),
                path: (k % 2) as usize,
                msg: Box::new(msg.clone()),
                newest: true,
            },
        );
        std::hint::black_box(a);
    }
    let heartbeat = t.elapsed() / iters;
    let t = Instant::now();
    for k in 0..iters {
        let a = c.engines[0].step(Millis(c.now + u64::from(k % 50)), Input::Tick);
        std::hint::black_box(a);
    }
    let tick = t.elapsed() / iters;
    Row {
        servers,
        groups,
        heartbeat,
        tick,
        body,
    }
}

fn main() {
    let iters: u32 = std::env::args()
        .skip_while(|a| a != "--iterations")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    println!(
        "engine step in the steady state (every group online), {iters} steps each, release build"
    );
    println!(
        "{:>7} {:>6}  {:>13} {:>6}  {:>9} {:>6}  {:>10} {:>6}  {:>16}",
        "servers",
        "groups",
        "heartbeat us",
        "ratio",
        "tick us",
        "ratio",
        "body bytes",
        "ratio",
        "engine ms/s idle"
    );
    let mut reference: Option<(f64, f64, f64)> = None;
    for servers in [3, 5, 8, 16] {
        for asked in [1, 50, 200] {
            let groups = largest_accepted(servers, asked);
            if groups < asked {
                println!(
                    "{servers:>7} {asked:>6}  refused by config check: the worst-case heartbeat of more than {groups} groups (names g000..) does not fit in one datagram; measured with {groups}"
                );
            }
            let r = measure(servers, groups, iters);
            let (h, t, b) = (
                r.heartbeat.as_secs_f64() * 1e6,
                r.tick.as_secs_f64() * 1e6,
                r.body as f64,
            );
            let (h0, t0, b0) = *reference.get_or_insert((h, t, b));
            // Engine time per second of an idle agent: 2 paths × (n − 1) heartbeats per
            // interval plus a tick every interval / 4 (10 to 100 ms) and one per
            // interval.
            let per_s = 1000.0 / INTERVAL as f64;
            let ticks = per_s * 4.0 + per_s;
            let busy_ms = (h * 2.0 * (r.servers - 1) as f64 * per_s + t * ticks) / 1000.0;
            println!(
                "{:>7} {:>6}  {h:>13.1} {:>6.2}  {t:>9.1} {:>6.2}  {:>10} {:>6.2}  {busy_ms:>16.2}",
                r.servers,
                r.groups,
                h / h0,
                t / t0,
                r.body,
                b / b0,
            );
        }
    }
}
