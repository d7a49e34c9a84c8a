//! The engine's cost of scale (`bash bench/scale.sh` runs it beside the real agents):
//! for clusters of 3, 5, 8 and 16 servers with 1, 50 and 200 groups, all engines of the
//! cluster run in this process on a simulated clock, exchange their heartbeats every
//! interval and complete every resource action at once, until every group is online;
//! then, in the steady state, the time of one `step` for a heartbeat that evaluates, for
//! one that only moves clocks (quiet) and for a tick, the size of a heartbeat body (JSON,
//! before the wire's compression), and ten simulated seconds of one idle agent stepped as
//! its shell steps it: engine time, evaluations and ticks per second, beside the same
//! arrivals with every heartbeat evaluated and a tick `tick_every` after each
//! evaluation. The reference measured in the same run is the smallest cluster (3
//! servers, 1 group): each step figure is also given as a ratio to it. Not a test: it
//! reports figures, asserts nothing.
// A benchmark measures real time.
#![allow(clippy::disallowed_methods)]
// A benchmark of fixed inputs: a configuration that does not load is a bug to stop at.
#![allow(clippy::expect_used)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use baton_core::config::{load_str, AnyKind};
use baton_core::engine::{Action, Boot, CheckResult, Engine, GroupState, Input, PeerMessage};
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
        self.exchange(0);
    }

    /// At the current time, engines `from..` tick, then every engine's heartbeat is
    /// delivered on both paths to engines `from..`; returns the messages sent.
    fn exchange(&mut self, from: usize) -> Vec<PeerMessage> {
        let n = self.engines.len();
        for i in from..n {
            let a = self.engines[i].step(Millis(self.now), Input::Tick);
            self.answer(i, a);
        }
        let msgs: Vec<_> = self.engines.iter().map(|e| e.peer_message()).collect();
        for (sender, msg) in msgs.iter().enumerate() {
            for to in (from..n).filter(|&t| t != sender) {
                for path in 0..2 {
                    let a = self.engines[to].step(
                        Millis(self.now),
                        Input::Heartbeat {
                            from: format!("s{sender}"),
                            path,
                            msg: Box::new(msg.clone()),
                            newest: true,
                        },
                    );
                    self.answer(to, a);
                }
            }
        }
        msgs
    }

    fn all_online(&self) -> bool {
        let st = self.engines[0].status();
        st.groups.iter().all(|g| g.state == GroupState::Online)
    }
}

struct Row {
    servers: usize,
    groups: usize,
    /// One heartbeat step that evaluates the engine.
    heartbeat: Duration,
    /// One heartbeat step that only moves clocks (`same_but_clocks`, right after an
    /// evaluation).
    quiet: Duration,
    tick: Duration,
    body: usize,
    /// Engine time, evaluations and ticks per second of an idle agent, as its shell
    /// steps it.
    idle: Idle,
    /// The same arrivals with every heartbeat evaluated and a tick `tick_every` after
    /// each evaluation (the engine and shell before quiet heartbeats and evaluations
    /// timed by deadlines): the reference of the idle figures.
    idle_all: Idle,
}

#[derive(Clone, Copy)]
struct Idle {
    ms_per_s: f64,
    evaluations_per_s: f64,
    /// Wake-ups of the shell for the engine alone (its ticks, not heartbeats).
    ticks_per_s: f64,
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

/// `seconds` of an idle agent (engine `s0`) stepped as its shell steps it: its own
/// heartbeat tick at the start of each interval, each peer's heartbeat at its own phase
/// in the interval (the first path's copy parsed, the second path's copy 1 ms later as a
/// repeat), and a tick at the engine's `next_evaluation` when nothing stepped it before.
/// Only `s0`'s steps are timed. With `old_shell`, the reference: every heartbeat is sent
/// as not the sender's newest, which is never quiet (every one evaluates), and the tick
/// comes whenever no step evaluated for `tick_every`, as before quiet heartbeats and
/// evaluations timed by the engine's deadlines.
fn idle(c: &mut Cluster, seconds: u64, old_shell: bool) -> Idle {
    let n = c.engines.len();
    let every = c.engines[0].tick_every().0;
    let mut busy = Duration::ZERO;
    let mut evaluations = 0u64;
    let mut ticks = 0u64;
    let mut timed = |c: &mut Cluster, at: u64, input: Input| {
        let before = c.engines[0].evaluated_at();
        let t = Instant::now();
        let a = c.engines[0].step(Millis(at), input);
        busy += t.elapsed();
        if c.engines[0].evaluated_at() != before {
            evaluations += 1;
        }
        c.answer(0, a);
    };
    for _ in 0..seconds * 1000 / INTERVAL {
        c.now += INTERVAL;
        let start = c.now;
        // The others as in `round`, untimed.
        let msgs = c.exchange(1);
        let mut events: Vec<(u64, Option<Input>)> = vec![(start, Some(Input::Tick))];
        for (j, msg) in msgs.iter().enumerate().skip(1) {
            let at = start + (j as u64 * INTERVAL) / n as u64;
            let from = format!("s{j}");
            events.push((
                at,
                Some(Input::Heartbeat {
                    from: from.clone(),
                    path: 0,
                    msg: Box::new(msg.clone()),
                    newest: !old_shell,
                }),
            ));
            events.push((at + 1, Some(Input::PathHeard { from, path: 1 })));
        }
        // The shell's ticks up to the end of the interval.
        events.push((start + INTERVAL, None));
        for (at, input) in events {
            loop {
                let due = if old_shell {
                    c.engines[0].evaluated_at().0 + every
                } else {
                    c.engines[0].next_evaluation().0
                };
                if due >= at {
                    break;
                }
                ticks += 1;
                timed(c, due, Input::Tick);
            }
            if let Some(input) = input {
                timed(c, at, input);
            }
        }
    }
    Idle {
        ms_per_s: busy.as_secs_f64() * 1e3 / seconds as f64,
        evaluations_per_s: evaluations as f64 / seconds as f64,
        ticks_per_s: ticks as f64 / seconds as f64,
    }
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
    // Heartbeats received by s0 from s1 within one `tick_every` after an evaluation, on a
    // clock that moves a little each time: as not the newest (evaluated), then as the
    // newest (quiet: the same message but for its clocks).
    let window = c.engines[0].tick_every().0 - 1;
    let hb = |c: &mut Cluster, newest: bool| {
        let a = c.engines[0].step(Millis(c.now), Input::Tick);
        std::hint::black_box(a);
        let t = Instant::now();
        for k in 0..iters {
            let now = Millis(c.now + u64::from(k) * window / u64::from(iters));
            let a = c.engines[0].step(
                now,
                Input::Heartbeat {
                    from: "s1".into(),
                    path: 0,
                    msg: Box::new(msg.clone()),
                    newest,
                },
            );
            std::hint::black_box(a);
        }
        t.elapsed() / iters
    };
    let heartbeat = hb(&mut c, false);
    let quiet = hb(&mut c, true);
    let t = Instant::now();
    for k in 0..iters {
        let now = Millis(c.now + window + u64::from(k) * window / u64::from(iters));
        let a = c.engines[0].step(now, Input::Tick);
        std::hint::black_box(a);
    }
    let tick = t.elapsed() / iters;
    c.round();
    let idle_all = idle(&mut c, 10, true);
    let idle = idle(&mut c, 10, false);
    Row {
        servers,
        groups,
        heartbeat,
        quiet,
        tick,
        body,
        idle,
        idle_all,
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
        "{:>7} {:>6}  {:>12} {:>6}  {:>8}  {:>7} {:>6}  {:>10} {:>6}  {:>16} {:>7} {:>7}  {:>14} {:>7} {:>7}",
        "servers",
        "groups",
        "heartbeat us",
        "ratio",
        "quiet us",
        "tick us",
        "ratio",
        "body bytes",
        "ratio",
        "idle engine ms/s",
        "evals/s",
        "ticks/s",
        "reference ms/s",
        "evals/s",
        "ticks/s"
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
            let (h, q, t, b) = (
                r.heartbeat.as_secs_f64() * 1e6,
                r.quiet.as_secs_f64() * 1e6,
                r.tick.as_secs_f64() * 1e6,
                r.body as f64,
            );
            let (h0, t0, b0) = *reference.get_or_insert((h, t, b));
            println!(
                "{:>7} {:>6}  {h:>12.1} {:>6.2}  {q:>8.1}  {t:>7.1} {:>6.2}  {:>10} {:>6.2}  {:>16.2} {:>7.1} {:>7.1}  {:>14.2} {:>7.1} {:>7.1}",
                r.servers,
                r.groups,
                h / h0,
                t / t0,
                r.body,
                b / b0,
                r.idle.ms_per_s,
                r.idle.evaluations_per_s,
                r.idle.ticks_per_s,
                r.idle_all.ms_per_s,
                r.idle_all.evaluations_per_s,
                r.idle_all.ticks_per_s,
            );
        }
    }
}
