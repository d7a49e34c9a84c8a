//! The lab's observer: one thread per server, each inside that server's network
//! namespace (`setns`), so it reaches the agent's API on the management network and sees
//! the server's own addresses without spawning a process per sample.
//!
//! Every round (50 ms) a thread
//! * asks the agent `GET /v1/status` (300 ms timeout: a paused agent does not hold up
//!   anyone else's samples) and records the server's own state of the group;
//! * tests whether the Baton VIP (and the keepalived VIP) is an address of the server,
//!   by binding a UDP socket to it (succeeds only for a local address);
//! * every fourth round, reads the agent's new events with `GET /v1/alerts?after=SEQ`.
//!
//! [`Observed::check`] then proves, from three independent sources, that the group was
//! never active on two servers at once (see the module documentation of `lab`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::http;
use crate::model::{AgentStatus, Event};

/// Milliseconds since the lab started (monotonic).
pub type Ms = f64;

/// One status answer of one agent about the group.
#[derive(Debug, Clone)]
pub struct StatusObs {
    pub sent: Ms,
    pub recv: Ms,
    /// The server's own state of the group (`online`, `offline`, `activating`, ...).
    pub state: String,
    pub since_ms: u64,
    pub epoch: u64,
    pub quorum: bool,
    /// A mirror of the group is primary, not fenced, and served to the application here.
    pub mirror_writable: bool,
}

/// Everything one server's thread saw.
#[derive(Debug, Clone, Default)]
pub struct ServerLog {
    pub status: Vec<StatusObs>,
    /// The last full status answer.
    pub last: Option<AgentStatus>,
    /// When the last status answer arrived.
    pub last_at: Ms,
    /// Events of the agent, in sequence order (times are the agent's wall clock).
    pub events: Vec<Event>,
    /// Held-address intervals `[first sample held, last sample held]` per address.
    pub held: BTreeMap<Ipv4Addr, Vec<(Ms, Ms)>>,
    /// Address samples taken.
    pub samples: u64,
    pub errors: u64,
}

struct Shared {
    logs: Vec<Mutex<ServerLog>>,
    stop: AtomicBool,
}

/// A running observer. Stop it (or drop it) to join its threads.
pub struct Observer {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
    pub servers: Vec<String>,
}

/// What one thread watches.
pub struct Target {
    pub server: String,
    /// Network namespace to enter.
    pub netns: String,
    pub api: SocketAddr,
    /// Addresses whose presence on the server is sampled.
    pub addrs: Vec<Ipv4Addr>,
}

/// Enter network namespace `name` (this thread only).
pub fn enter_netns(name: &str) -> Result<(), String> {
    let f = std::fs::File::open(format!("/run/netns/{name}"))
        .map_err(|e| format!("cannot open /run/netns/{name}: {e}"))?;
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("setns into {name}: {e}"))
}

/// Is `addr` an address of the current network namespace?
pub fn is_local(addr: Ipv4Addr) -> bool {
    UdpSocket::bind((addr, 0)).is_ok()
}

impl Observer {
    /// Start one thread per target; `t0` is the lab's time origin.
    pub fn start(
        targets: Vec<Target>,
        token: String,
        group: String,
        t0: Instant,
    ) -> Result<Observer, String> {
        let shared = Arc::new(Shared {
            logs: targets
                .iter()
                .map(|_| Mutex::new(ServerLog::default()))
                .collect(),
            stop: AtomicBool::new(false),
        });
        let servers = targets.iter().map(|t| t.server.clone()).collect();
        let mut handles = Vec::new();
        for (i, t) in targets.into_iter().enumerate() {
            let shared = shared.clone();
            let token = token.clone();
            let group = group.clone();
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let h = std::thread::Builder::new()
                .name(format!("lab-observer-{}", t.server))
                .spawn(move || {
                    let entered = enter_netns(&t.netns);
                    let ok = entered.is_ok();
                    let _ = ready_tx.send(entered);
                    if ok {
                        observe(&shared, i, &t, &token, &group, t0);
                    }
                })
                .map_err(|e| format!("cannot start an observer thread: {e}"))?;
            handles.push(h);
            ready_rx
                .recv()
                .map_err(|_| "an observer thread died at start".to_string())??;
        }
        Ok(Observer {
            shared,
            handles,
            servers,
        })
    }

    /// A copy of what server index `i`'s thread saw so far.
    pub fn log(&self, i: usize) -> ServerLog {
        lock(&self.shared.logs[i]).clone()
    }

    /// The last status of server `i` if it is at most `max_age` old.
    pub fn fresh(&self, i: usize, now: Ms, max_age: Ms) -> Option<AgentStatus> {
        let l = lock(&self.shared.logs[i]);
        if now - l.last_at <= max_age {
            l.last.clone()
        } else {
            None
        }
    }

    /// Copies of every log.
    pub fn snapshot(&self) -> Observed {
        Observed {
            servers: self.servers.clone(),
            logs: (0..self.servers.len()).map(|i| self.log(i)).collect(),
        }
    }

    pub fn stop(mut self) -> Observed {
        self.halt();
        self.snapshot()
    }

    fn halt(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.halt();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn observe(shared: &Shared, i: usize, t: &Target, token: &str, group: &str, t0: Instant) {
    let ms = |at: Instant| at.duration_since(t0).as_secs_f64() * 1000.0;
    let mut round: u64 = 0;
    let mut after: u64 = 0;
    let mut open: BTreeSet<Ipv4Addr> = BTreeSet::new();
    while !shared.stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        round += 1;
        // Addresses first: cheap and never blocks.
        for a in &t.addrs {
            let at = ms(Instant::now());
            let held = is_local(*a);
            let mut l = lock(&shared.logs[i]);
            l.samples += 1;
            let v = l.held.entry(*a).or_default();
            if !held {
                open.remove(a);
            } else if open.contains(a) {
                if let Some(last) = v.last_mut() {
                    last.1 = at;
                }
            } else {
                v.push((at, at));
                open.insert(*a);
            }
        }
        let sent = Instant::now();
        match http::request(
            t.api,
            "GET",
            "/v1/status",
            Some(token),
            None,
            Duration::from_millis(300),
        ) {
            Ok(r) if r.status == 200 => {
                let recv = Instant::now();
                match serde_json::from_str::<AgentStatus>(&r.body) {
                    Ok(st) => {
                        let g = st.groups.iter().find(|g| g.name == group);
                        let obs = StatusObs {
                            sent: ms(sent),
                            recv: ms(recv),
                            state: g
                                .and_then(|g| g.per_server.get(&t.server).cloned())
                                .unwrap_or_else(|| "offline".into()),
                            since_ms: g.map_or(0, |g| g.since_ms_ago),
                            epoch: g.map_or(0, |g| g.epoch),
                            quorum: st.quorum,
                            mirror_writable: st.mirrors.iter().any(|m| {
                                m.group == group && m.role == "primary" && !m.fenced && m.serving
                            }),
                        };
                        let mut l = lock(&shared.logs[i]);
                        l.status.push(obs);
                        l.last = Some(st);
                        l.last_at = ms(recv);
                    }
                    Err(_) => lock(&shared.logs[i]).errors += 1,
                }
            }
            _ => {}
        }
        if round % 4 == 1 {
            let path = format!("/v1/alerts?after={after}&limit=1000");
            if let Ok(r) = http::request(
                t.api,
                "GET",
                &path,
                Some(token),
                None,
                Duration::from_millis(500),
            ) {
                if r.status == 200 {
                    if let Ok(evs) = serde_json::from_str::<Vec<Event>>(&r.body) {
                        if let Some(last) = evs.iter().map(|e| e.seq).max() {
                            after = after.max(last);
                        }
                        lock(&shared.logs[i]).events.extend(evs);
                    }
                }
            }
        }
        let spent = start.elapsed();
        if spent < Duration::from_millis(50) {
            std::thread::sleep(Duration::from_millis(50) - spent);
        }
    }
}

/// Intervals `[lo, hi]` in lab milliseconds.
pub type Intervals = Vec<(Ms, Ms)>;

/// Remove the `holes` from `iv`.
pub fn subtract(iv: &[(Ms, Ms)], holes: &[(Ms, Ms)]) -> Intervals {
    let mut cur: Intervals = iv.to_vec();
    for &(hl, hh) in holes {
        let mut next = Vec::new();
        for (lo, hi) in cur {
            if hh <= lo || hl >= hi {
                next.push((lo, hi));
                continue;
            }
            if lo < hl {
                next.push((lo, hl));
            }
            if hh < hi {
                next.push((hh, hi));
            }
        }
        cur = next;
    }
    cur
}

/// Sort and merge touching intervals.
pub fn merge(mut v: Intervals) -> Intervals {
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out: Intervals = Vec::new();
    for (lo, hi) in v {
        match out.last_mut() {
            Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// Overlaps between the intervals of different servers: (server a, server b, lo, hi).
pub fn overlaps(per: &[(String, Intervals)]) -> Vec<(String, String, Ms, Ms)> {
    let mut out = Vec::new();
    for (i, (a, ia)) in per.iter().enumerate() {
        for (b, ib) in &per[i + 1..] {
            for x in ia {
                for y in ib {
                    let lo = x.0.max(y.0);
                    let hi = x.1.min(y.1);
                    if lo < hi {
                        out.push((a.clone(), b.clone(), lo, hi));
                    }
                }
            }
        }
    }
    out
}

/// A copy of everything observed.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub servers: Vec<String>,
    pub logs: Vec<ServerLog>,
}

/// Windows in which a server's activity is not counted (it was frozen by SIGSTOP, or a
/// crash left its resources behind until they were cleaned up).
#[derive(Debug, Clone, Default)]
pub struct Exemptions {
    /// Per server index: windows for the status check.
    pub status: BTreeMap<usize, Intervals>,
    /// Per server index: windows for the event and address checks.
    pub resources: BTreeMap<usize, Intervals>,
}

/// Event ids the observer interprets.
pub mod ids {
    pub const READOPTED: &str = "BTN-1020";
    pub const READOPT_CLEANUP: &str = "BTN-1021";
    pub const SERVER_DOWN: &str = "BTN-1102";
    pub const PATH_DOWN: &str = "BTN-1103";
    pub const PATH_UP: &str = "BTN-1104";
    pub const NO_QUORUM: &str = "BTN-1120";
    pub const QUORUM_REGAINED: &str = "BTN-1121";
    pub const ACTIVATING: &str = "BTN-2101";
    pub const ACTIVATED: &str = "BTN-2102";
    pub const DEACTIVATING: &str = "BTN-2103";
    pub const DEACTIVATED: &str = "BTN-2104";
    pub const ACTIVATION_FAILED: &str = "BTN-2105";
    pub const FAILOVER: &str = "BTN-2107";
    pub const NO_SERVER: &str = "BTN-2108";
}

impl Observed {
    /// Lab time (ms) of an event, from its wall-clock stamp (`unix0` = wall clock at the
    /// lab's time origin; all namespaces share the host's clock).
    pub fn event_ms(e: &Event, unix0: u64) -> Ms {
        e.time_ms as f64 - unix0 as f64
    }

    /// Online intervals per server from the status answers: an agent that answered
    /// "online since `s` ms" was online during `[received - s, sent]`.
    pub fn status_intervals(&self, ex: &Exemptions) -> Vec<(String, Intervals)> {
        self.servers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let iv: Intervals = self.logs[i]
                    .status
                    .iter()
                    .filter(|o| o.state == "online")
                    .map(|o| (o.recv - o.since_ms as f64, o.sent))
                    .filter(|(lo, hi)| lo < hi)
                    .collect();
                let holes = ex.status.get(&i).cloned().unwrap_or_default();
                (s.clone(), merge(subtract(&merge(iv), &holes)))
            })
            .collect()
    }

    /// Per server, the intervals in which a mirror of the group was writable there
    /// (primary, not fenced, served): consecutive answers that said so, from the first
    /// one's request to the last one's answer.
    pub fn mirror_intervals(&self, ex: &Exemptions) -> Vec<(String, Intervals)> {
        self.servers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut iv: Intervals = Vec::new();
                let mut open = false;
                for o in &self.logs[i].status {
                    match (o.mirror_writable, open) {
                        (true, true) => {
                            if let Some(last) = iv.last_mut() {
                                last.1 = o.recv;
                            }
                        }
                        (true, false) => iv.push((o.sent, o.recv)),
                        _ => {}
                    }
                    open = o.mirror_writable;
                }
                let holes = ex.status.get(&i).cloned().unwrap_or_default();
                (s.clone(), merge(subtract(&merge(iv), &holes)))
            })
            .collect()
    }

    /// Active intervals per server from the event stream: from `activating` (or a
    /// re-adoption) to `deactivated` (or activation failed, or a re-adoption cleanup);
    /// `crashes` (per server, lab ms) close an open interval when the lab also removed
    /// what the server held; an interval still open ends at `end`.
    pub fn event_intervals(
        &self,
        group: &str,
        unix0: u64,
        end: Ms,
        crashes: &BTreeMap<usize, Vec<Ms>>,
        ex: &Exemptions,
    ) -> Vec<(String, Intervals)> {
        self.servers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                // (time, +1 open / -1 close)
                let mut marks: Vec<(Ms, i8)> = self.logs[i]
                    .events
                    .iter()
                    .filter(|e| e.group.as_deref() == Some(group))
                    .filter_map(|e| {
                        let t = Self::event_ms(e, unix0);
                        match e.id.as_str() {
                            ids::ACTIVATING | ids::READOPTED => Some((t, 1)),
                            ids::DEACTIVATED | ids::ACTIVATION_FAILED | ids::READOPT_CLEANUP => {
                                Some((t, -1))
                            }
                            _ => None,
                        }
                    })
                    .collect();
                if let Some(c) = crashes.get(&i) {
                    marks.extend(c.iter().map(|t| (*t, -1)));
                }
                marks.sort_by(|a, b| a.0.total_cmp(&b.0));
                let mut iv = Vec::new();
                let mut open: Option<Ms> = None;
                for (t, m) in marks {
                    match (m, open) {
                        (1, None) => open = Some(t),
                        (-1, Some(lo)) => {
                            iv.push((lo, t));
                            open = None;
                        }
                        _ => {}
                    }
                }
                if let Some(lo) = open {
                    iv.push((lo, end));
                }
                let holes = ex.resources.get(&i).cloned().unwrap_or_default();
                (s.clone(), merge(subtract(&iv, &holes)))
            })
            .collect()
    }

    /// Intervals in which each server held `addr` (between samples that saw it held).
    pub fn addr_intervals(&self, addr: Ipv4Addr, ex: &Exemptions) -> Vec<(String, Intervals)> {
        self.servers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let iv = self.logs[i].held.get(&addr).cloned().unwrap_or_default();
                let holes = ex.resources.get(&i).cloned().unwrap_or_default();
                (s.clone(), merge(subtract(&iv, &holes)))
            })
            .collect()
    }

    /// Index of a server by name.
    pub fn index(&self, server: &str) -> Option<usize> {
        self.servers.iter().position(|s| s == server)
    }

    /// Every event of every server, with its lab time, in time order.
    pub fn all_events(&self, unix0: u64) -> Vec<(Ms, Event)> {
        let mut v: Vec<(Ms, Event)> = self
            .logs
            .iter()
            .flat_map(|l| {
                l.events
                    .iter()
                    .map(|e| (Self::event_ms(e, unix0), e.clone()))
            })
            .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v
    }

    /// Changes of each server's reported state of the group, for the timeline.
    pub fn status_changes(&self) -> Vec<(Ms, String)> {
        let mut out = Vec::new();
        for (i, s) in self.servers.iter().enumerate() {
            let mut last: Option<(String, u64, bool)> = None;
            for o in &self.logs[i].status {
                let cur = (o.state.clone(), o.epoch, o.quorum);
                if last.as_ref() != Some(&cur) {
                    out.push((
                        o.recv,
                        format!(
                            "status  {s}: {} (epoch {}, quorum {})",
                            o.state, o.epoch, o.quorum
                        ),
                    ));
                    last = Some(cur);
                }
            }
        }
        out
    }

    /// Changes of address holding, for the timeline.
    pub fn addr_changes(&self, addr: Ipv4Addr, label: &str) -> Vec<(Ms, String)> {
        let mut out = Vec::new();
        for (i, s) in self.servers.iter().enumerate() {
            for (lo, hi) in self.logs[i].held.get(&addr).cloned().unwrap_or_default() {
                out.push((lo, format!("addr    {label} {addr} seen on {s}")));
                out.push((hi, format!("addr    {label} {addr} last seen on {s}")));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtract_and_overlap() {
        let iv = vec![(0.0, 100.0)];
        assert_eq!(
            subtract(&iv, &[(20.0, 30.0)]),
            vec![(0.0, 20.0), (30.0, 100.0)]
        );
        assert_eq!(subtract(&iv, &[(-5.0, 200.0)]), Vec::<(Ms, Ms)>::new());
        let per = vec![
            ("a".to_string(), vec![(0.0, 50.0)]),
            ("b".to_string(), vec![(50.0, 90.0)]),
            ("c".to_string(), vec![(80.0, 95.0)]),
        ];
        let o = overlaps(&per);
        assert_eq!(o.len(), 1);
        assert_eq!((o[0].0.as_str(), o[0].1.as_str()), ("b", "c"));
        assert_eq!(
            merge(vec![(5.0, 9.0), (0.0, 6.0), (20.0, 21.0)]),
            vec![(0.0, 9.0), (20.0, 21.0)]
        );
    }
}
