//! The invariant watcher: a thread that polls every agent's `GET /v1/status` all
//! through a scenario and checks that a group was never online on two servers at once.
//!
//! Polls of different agents are not simultaneous, so "at once" is decided from each
//! agent's own report: an agent that answers "online since `s` ms ago" was online for at
//! least the interval `[received - s, sent]` (its status was computed somewhere between
//! sending the request and receiving the answer, and its engine clock can only lag).
//! Two such intervals of different servers that overlap are a proven violation. Rounds
//! in which two agents merely both answered "online" are kept as suspects for the
//! failure message.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::http;

/// One agent's answer about the watched group.
#[derive(Debug, Clone)]
pub struct Obs {
    pub round: u64,
    pub server: String,
    /// Milliseconds since the watcher started.
    pub sent_ms: f64,
    pub recv_ms: f64,
    /// The agent's own state of the group.
    pub state: String,
    pub since_ms: u64,
    /// The group's epoch in the agent's summary.
    pub epoch: u64,
}

/// What the watcher saw.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub rounds: u64,
    pub obs: Vec<Obs>,
    /// Proven overlaps, described.
    pub overlaps: Vec<String>,
    /// Rounds in which two or more agents answered "online".
    pub suspect_rounds: Vec<u64>,
}

impl Report {
    fn compute(rounds: u64, obs: Vec<Obs>) -> Report {
        // Online intervals per server, merged.
        let mut iv: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for o in obs.iter().filter(|o| o.state == "online") {
            let lo = o.recv_ms - o.since_ms as f64;
            let hi = o.sent_ms;
            if lo < hi {
                iv.entry(o.server.clone()).or_default().push((lo, hi));
            }
        }
        for v in iv.values_mut() {
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut merged: Vec<(f64, f64)> = Vec::new();
            for (lo, hi) in v.drain(..) {
                match merged.last_mut() {
                    Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
                    _ => merged.push((lo, hi)),
                }
            }
            *v = merged;
        }
        let mut overlaps = Vec::new();
        let servers: Vec<&String> = iv.keys().collect();
        for (i, a) in servers.iter().enumerate() {
            for b in &servers[i + 1..] {
                for x in &iv[*a] {
                    for y in &iv[*b] {
                        let lo = x.0.max(y.0);
                        let hi = x.1.min(y.1);
                        if lo < hi {
                            overlaps.push(format!(
                                "{a} online during [{:.0}, {:.0}] ms and {b} online during [{:.0}, {:.0}] ms overlap by {:.0} ms",
                                x.0, x.1, y.0, y.1, hi - lo
                            ));
                        }
                    }
                }
            }
        }
        let mut per_round: BTreeMap<u64, usize> = BTreeMap::new();
        for o in obs.iter().filter(|o| o.state == "online") {
            *per_round.entry(o.round).or_default() += 1;
        }
        let suspect_rounds = per_round
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(r, _)| r)
            .collect();
        Report {
            rounds,
            obs,
            overlaps,
            suspect_rounds,
        }
    }

    /// State changes per server, one line each, for failure messages.
    pub fn timeline(&self) -> String {
        let mut last: BTreeMap<&str, (&str, u64)> = BTreeMap::new();
        let mut out = Vec::new();
        for o in &self.obs {
            let cur = (o.state.as_str(), o.epoch);
            if last.get(o.server.as_str()) != Some(&cur) {
                out.push(format!(
                    "    +{:>7.0} ms  {:<8} {:<12} (summary epoch {})",
                    o.recv_ms, o.server, o.state, o.epoch
                ));
                last.insert(o.server.as_str(), cur);
            }
        }
        out.join("\n")
    }

    /// Every server that the watcher saw online, in order of first sight.
    pub fn owners(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for o in self.obs.iter().filter(|o| o.state == "online") {
            if v.last() != Some(&o.server) {
                v.push(o.server.clone());
            }
        }
        v
    }

    /// Panic unless the group was seen, and never online on two servers at once.
    pub fn assert_never_two_online(&self) {
        assert!(
            self.rounds >= 3,
            "the watcher completed only {} polling rounds",
            self.rounds
        );
        assert!(
            self.overlaps.is_empty(),
            "the group was online on two servers at once:\n  {}\ntimeline:\n{}",
            self.overlaps.join("\n  "),
            self.timeline()
        );
        if !self.suspect_rounds.is_empty() {
            eprintln!(
                "note: {} polling round(s) saw two agents answer `online` without a proven overlap",
                self.suspect_rounds.len()
            );
        }
    }
}

/// A running watcher; stop it to get the report.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    data: Arc<Mutex<(u64, Vec<Obs>)>>,
}

impl Watcher {
    /// Poll `targets` (server name, API address) every `every`.
    pub fn start(
        targets: Vec<(String, SocketAddr)>,
        token: String,
        group: String,
        every: Duration,
    ) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let data = Arc::new(Mutex::new((0u64, Vec::new())));
        let (stop2, data2) = (stop.clone(), data.clone());
        let handle = std::thread::Builder::new()
            .name("baton-watcher".into())
            .spawn(move || {
                let t0 = Instant::now();
                let ms = |t: Instant| t.duration_since(t0).as_secs_f64() * 1000.0;
                let mut round = 0u64;
                while !stop2.load(Ordering::Relaxed) {
                    round += 1;
                    let mut got = Vec::new();
                    for (name, addr) in &targets {
                        let sent = Instant::now();
                        let Ok(r) = http::request(
                            *addr,
                            "GET",
                            "/v1/status",
                            Some(&token),
                            None,
                            Duration::from_millis(500),
                        ) else {
                            continue;
                        };
                        let recv = Instant::now();
                        if r.status != 200 {
                            continue;
                        }
                        let Ok(v) = serde_json::from_str::<serde_json::Value>(&r.body) else {
                            continue;
                        };
                        let Some(g) = v["groups"]
                            .as_array()
                            .and_then(|gs| gs.iter().find(|g| g["name"] == group.as_str()))
                        else {
                            continue;
                        };
                        got.push(Obs {
                            round,
                            server: name.clone(),
                            sent_ms: ms(sent),
                            recv_ms: ms(recv),
                            state: g["per_server"][name.as_str()]
                                .as_str()
                                .unwrap_or("offline")
                                .to_string(),
                            since_ms: g["since_ms_ago"].as_u64().unwrap_or(0),
                            epoch: g["epoch"].as_u64().unwrap_or(0),
                        });
                    }
                    if let Ok(mut d) = data2.lock() {
                        d.0 = round;
                        d.1.extend(got);
                    }
                    std::thread::sleep(every);
                }
            })
            .ok();
        Watcher { stop, handle, data }
    }

    /// What was seen so far.
    pub fn report(&self) -> Report {
        let (rounds, obs) = match self.data.lock() {
            Ok(d) => (d.0, d.1.clone()),
            Err(p) => {
                let d = p.into_inner();
                (d.0, d.1.clone())
            }
        };
        Report::compute(rounds, obs)
    }

    /// Stop polling and return everything seen.
    pub fn stop(mut self) -> Report {
        self.halt();
        self.report()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(round: u64, server: &str, sent: f64, recv: f64, state: &str, since: u64) -> Obs {
        Obs {
            round,
            server: server.into(),
            sent_ms: sent,
            recv_ms: recv,
            state: state.into(),
            since_ms: since,
            epoch: 1,
        }
    }

    #[test]
    fn handover_is_not_an_overlap() {
        // node-1 online until ~1000, node-2 online from ~1100.
        let r = Report::compute(
            3,
            vec![
                o(1, "node-1", 900.0, 905.0, "online", 800),
                o(2, "node-1", 1050.0, 1055.0, "offline", 10),
                o(2, "node-2", 1200.0, 1205.0, "online", 90),
            ],
        );
        assert!(r.overlaps.is_empty(), "{:?}", r.overlaps);
        assert_eq!(r.owners(), vec!["node-1", "node-2"]);
    }

    #[test]
    fn proven_overlap_is_reported() {
        let r = Report::compute(
            2,
            vec![
                o(1, "node-1", 1000.0, 1005.0, "online", 900),
                o(1, "node-2", 1010.0, 1015.0, "online", 500),
            ],
        );
        assert_eq!(r.overlaps.len(), 1, "{:?}", r.overlaps);
        assert_eq!(r.suspect_rounds, vec![1]);
    }
}
