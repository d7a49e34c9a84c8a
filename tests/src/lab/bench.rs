//! The lab's benchmark: scenario 1's failover time for Baton and, in the same run and
//! the same namespaces, for keepalived (VRRP) with the same nominal detection time,
//! measured by the same method; then false failovers of both under loss and jitter.
//!
//! * Every node runs `baton demo-app` on 0.0.0.0:8080 (outside either system), so the
//!   node holding a VIP answers `hello from node-N` on it. Baton moves [`VIP`] (group
//!   `web`: `floating-ip` + marker app), keepalived moves [`KA_VIP`] (one VRRP instance
//!   on `ea`, priorities 200, 190, ...). Both run all the time, side by side.
//! * A failover round kills the holder the same way for both: the daemon is SIGKILLed
//!   and its VIP removed (the machine died). The client (its own namespace on network
//!   a) polls `GET http://VIP:8080/` back to back (40 ms connect/read timeout) from
//!   before the kill until a different node answers: that is the failover time. Both
//!   announce the move with gratuitous ARP.
//! * Nominal detection time: Baton heartbeat 200 ms / timeout 600 ms; keepalived
//!   `advert_int 0.2` (VRRPv3), whose master-down interval is 3 × 0.2 s plus the skew
//!   time (up to 0.2 s).
//! * Soak: 20 % loss and 50 ± 50 ms delay on both interconnects of every node for the
//!   given time; a false failover is any new activation (Baton) or any new VIP holder
//!   (keepalived); time with two holders is reported too.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::observer::{enter_netns, overlaps, Ms};
use super::scenarios::percentile;
use super::{server, Lab, LabSpec, APP_PORT, KA_VIP, VIP};
use crate::http;

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub runs: usize,
    pub servers: usize,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub advert_ms: u64,
    /// Baton's floating IP duplicate check (adds about a second; keepalived has none).
    pub dad: bool,
    pub soak: Duration,
    pub keep: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            runs: 10,
            servers: 3,
            interval_ms: 200,
            timeout_ms: 600,
            advert_ms: 200,
            dad: false,
            soak: Duration::from_secs(60),
            keep: false,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct BenchReport {
    pub options: Option<BenchOptions>,
    /// Kill -> client answered by another node, per run.
    pub baton_ms: Vec<f64>,
    /// Kill -> BTN-2102 on the new node.
    pub baton_event_ms: Vec<f64>,
    pub keepalived_ms: Vec<f64>,
    pub soak_s: f64,
    pub baton_false: usize,
    pub baton_server_down: usize,
    pub baton_double_ms: f64,
    pub keepalived_false: usize,
    pub keepalived_double_ms: f64,
    pub notes: Vec<String>,
}

fn fmt_p(v: &[f64]) -> String {
    match (percentile(v, 50.0), percentile(v, 99.0)) {
        (Some(a), Some(b)) => format!(
            "p50 {a:.0} ms  p99 {b:.0} ms  min {:.0} ms  max {:.0} ms  ({} runs)",
            v.iter().copied().fold(f64::INFINITY, f64::min),
            v.iter().copied().fold(0.0, f64::max),
            v.len()
        ),
        _ => "no runs".into(),
    }
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let o = self.options.clone().unwrap_or_default();
        writeln!(
            f,
            "failover (scenario 1: the VIP holder dies; kill -> client answered by another node), {} servers",
            o.servers
        )?;
        writeln!(
            f,
            "  Baton      (heartbeat {} ms / timeout {} ms, duplicate check {}): {}",
            o.interval_ms,
            o.timeout_ms,
            if o.dad { "on" } else { "off" },
            fmt_p(&self.baton_ms)
        )?;
        writeln!(
            f,
            "             kill -> BTN-2102 on the new server: {}",
            fmt_p(&self.baton_event_ms)
        )?;
        writeln!(
            f,
            "  keepalived (VRRPv3 advert_int {:.1} s):              {}",
            o.advert_ms as f64 / 1000.0,
            fmt_p(&self.keepalived_ms)
        )?;
        let ratio = |p: f64| match (
            percentile(&self.baton_ms, p),
            percentile(&self.keepalived_ms, p),
        ) {
            (Some(b), Some(k)) if k > 0.0 => format!("{:.2}", b / k),
            _ => "-".into(),
        };
        writeln!(
            f,
            "  Baton / keepalived: p50 {}  p99 {}",
            ratio(50.0),
            ratio(99.0)
        )?;
        if self.soak_s > 0.0 {
            writeln!(
                f,
                "false failovers in {:.0} s of 20% loss + 50±50 ms delay on every interconnect:",
                self.soak_s
            )?;
            writeln!(
                f,
                "  Baton      {} (server-down events {}, time with two holders {:.0} ms)",
                self.baton_false, self.baton_server_down, self.baton_double_ms
            )?;
            writeln!(
                f,
                "  keepalived {} (time with two holders {:.0} ms)",
                self.keepalived_false, self.keepalived_double_ms
            )?;
        }
        for n in &self.notes {
            writeln!(f, "  note: {n}")?;
        }
        Ok(())
    }
}

/// When a node other than the old holder answered, and who.
type ProbeResult = Result<(Instant, String), String>;

/// Poll `GET http://addr:8080/` from the client namespace, from now on, until a node
/// other than `not` answers; returns the instant of that answer and who answered. The
/// receiver yields once the thread has entered the namespace (so polling has begun).
fn start_probe(
    ns: String,
    addr: Ipv4Addr,
    not: String,
    timeout: Duration,
) -> Result<mpsc::Receiver<ProbeResult>, String> {
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("lab-client".into())
        .spawn(move || {
            if let Err(e) = enter_netns(&ns) {
                let _ = ready_tx.send(Err(e));
                return;
            }
            let _ = ready_tx.send(Ok(()));
            let start = Instant::now();
            let to = SocketAddr::from((addr, APP_PORT));
            let per = Duration::from_millis(40);
            let not_body = format!("hello from {not}");
            loop {
                if start.elapsed() > timeout {
                    let _ = tx.send(Err(format!(
                        "no node other than {not} answered on {to} within {timeout:?}"
                    )));
                    return;
                }
                let t = Instant::now();
                if let Ok(r) = http::request(to, "GET", "/", None, None, per) {
                    let body = r.body.trim().to_string();
                    if r.status == 200 && body.starts_with("hello from ") && body != not_body {
                        let _ = tx.send(Ok((Instant::now(), body)));
                        return;
                    }
                }
                let spent = t.elapsed();
                if spent < Duration::from_millis(5) {
                    std::thread::sleep(Duration::from_millis(5) - spent);
                }
            }
        })
        .map_err(|e| format!("cannot start the client thread: {e}"))?;
    ready_rx
        .recv()
        .map_err(|_| "the client thread died".to_string())??;
    Ok(rx)
}

/// Wait until exactly one server holds `addr` and keeps holding it for `stable`.
fn wait_single_holder(lab: &Lab, addr: Ipv4Addr, stable: Duration) -> Result<usize, String> {
    let start = Instant::now();
    let mut since: Option<(usize, Instant)> = None;
    loop {
        let h = lab.holders(addr)?;
        match (h.as_slice(), since) {
            ([x], Some((y, t))) if *x == y => {
                if t.elapsed() >= stable {
                    return Ok(*x);
                }
            }
            ([x], _) => since = Some((*x, Instant::now())),
            _ => since = None,
        }
        if start.elapsed() > Duration::from_secs(30) {
            return Err(format!("{addr} is not held by exactly one server: {h:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn run(o: &BenchOptions) -> Result<BenchReport, String> {
    if !crate::netns::have("keepalived") {
        return Err("keepalived is missing; install the Debian package keepalived".into());
    }
    let mut spec = LabSpec::new("bench");
    spec.servers = o.servers;
    spec.client = true;
    spec.interval_ms = o.interval_ms;
    spec.timeout_ms = o.timeout_ms;
    spec.check_duplicate = o.dad;
    let mut lab = Lab::build(spec)?;
    let r = bench_in(&mut lab, o);
    if o.keep {
        let d = lab.keep_dir();
        println!("lab directory kept: {}", d.display());
    }
    r
}

fn bench_in(lab: &mut Lab, o: &BenchOptions) -> Result<BenchReport, String> {
    let mut rep = BenchReport {
        options: Some(o.clone()),
        ..BenchReport::default()
    };
    let client = lab
        .client_ns
        .clone()
        .ok_or_else(|| "the bench lab has no client".to_string())?;
    lab.observe()?;
    lab.start_all()?;
    for i in 0..lab.spec.servers {
        lab.start_keepalived(i, o.advert_ms)?;
    }
    lab.note("Baton agents and keepalived started on every node");
    lab.wait_owner(None, Duration::from_secs(30))?;
    lab.wait_converged(Duration::from_secs(20))?;
    wait_single_holder(lab, KA_VIP, Duration::from_secs(1))?;
    let probe_timeout = Duration::from_secs(20);
    for run in 0..o.runs {
        // Baton.
        let (x, _) = lab.wait_owner(None, Duration::from_secs(20))?;
        lab.wait_converged(Duration::from_secs(20))?;
        let rx = start_probe(client.clone(), VIP, server(x), probe_timeout)?;
        std::thread::sleep(Duration::from_millis(100));
        let t_kill = Instant::now();
        let t = lab.crash(x)?;
        let (at, who) = rx
            .recv()
            .map_err(|_| "the client thread died".to_string())??;
        let ms = at.duration_since(t_kill).as_secs_f64() * 1000.0;
        rep.baton_ms.push(ms);
        let (y, _) = lab.wait_owner(Some(x), Duration::from_secs(20))?;
        let ev = lab.wait(
            "BTN-2102 on the new server",
            Duration::from_secs(5),
            |lab| {
                lab.events(y)
                    .iter()
                    .find(|e| e.id == "BTN-2102" && lab.event_ms(e) >= t)
                    .map(|e| lab.event_ms(e) - t)
                    .ok_or_else(|| "not yet".to_string())
            },
        )?;
        rep.baton_event_ms.push(ev);
        lab.note(&format!(
            "run {}: Baton {} -> {who}: client {ms:.0} ms, BTN-2102 {ev:.0} ms",
            run + 1,
            server(x)
        ));
        lab.start_agent(x)?;
        lab.wait_converged(Duration::from_secs(20))?;

        // keepalived.
        let h = wait_single_holder(lab, KA_VIP, Duration::from_secs(1))?;
        let rx = start_probe(client.clone(), KA_VIP, server(h), probe_timeout)?;
        std::thread::sleep(Duration::from_millis(100));
        let t_kill = Instant::now();
        lab.crash_keepalived(h)?;
        let (at, who) = rx
            .recv()
            .map_err(|_| "the client thread died".to_string())??;
        let ms = at.duration_since(t_kill).as_secs_f64() * 1000.0;
        rep.keepalived_ms.push(ms);
        lab.note(&format!(
            "run {}: keepalived {} -> {who}: client {ms:.0} ms",
            run + 1,
            server(h)
        ));
        lab.start_keepalived(h, o.advert_ms)?;
        let t_start = Instant::now();
        while !lab.keepalived_running(h) {
            if t_start.elapsed() > Duration::from_secs(10) {
                return Err(format!(
                    "keepalived on {} did not start its VRRP process again",
                    server(h)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // It preempts back if it has the highest priority; wait for calm.
        std::thread::sleep(Duration::from_millis(500));
        wait_single_holder(lab, KA_VIP, Duration::from_secs(2))?;
    }
    if !o.soak.is_zero() {
        soak(lab, o, &mut rep)?;
    }
    lab.stop_keepalived();
    Ok(rep)
}

fn soak(lab: &mut Lab, o: &BenchOptions, rep: &mut BenchReport) -> Result<(), String> {
    lab.wait_owner(None, Duration::from_secs(20))?;
    lab.wait_converged(Duration::from_secs(20))?;
    wait_single_holder(lab, KA_VIP, Duration::from_secs(1))?;
    let t: Ms = lab.now();
    lab.netem_all(20, 50, 50)?;
    lab.hold(
        o.soak,
        "soak: loss and jitter, Baton and keepalived side by side",
    );
    let t_end = lab.now();
    lab.netem_clear()?;
    rep.soak_s = (t_end - t) / 1000.0;
    let obs = lab
        .observer
        .as_ref()
        .map(|ob| ob.snapshot())
        .ok_or_else(|| "no observer".to_string())?;
    // Baton: new activations and server-down events during the soak.
    for i in 0..lab.spec.servers {
        for e in &obs.logs[i].events {
            let at = lab.event_ms(e);
            if at < t || at > t_end + 1000.0 {
                continue;
            }
            match e.id.as_str() {
                "BTN-2101" => rep.baton_false += 1,
                "BTN-1102" => rep.baton_server_down += 1,
                _ => {}
            }
        }
    }
    // Holder changes and double holding of each VIP during the soak.
    let window = |iv: &Vec<(Ms, Ms)>| -> Vec<(Ms, Ms)> {
        iv.iter()
            .filter(|(lo, hi)| *hi >= t && *lo <= t_end)
            .map(|(lo, hi)| (lo.max(t), hi.min(t_end)))
            .collect()
    };
    let per = |addr: Ipv4Addr| -> Vec<(String, Vec<(Ms, Ms)>)> {
        obs.servers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                (
                    s.clone(),
                    window(&obs.logs[i].held.get(&addr).cloned().unwrap_or_default()),
                )
            })
            .collect()
    };
    let acquisitions = |addr: Ipv4Addr| -> usize {
        obs.logs
            .iter()
            .map(|l| {
                l.held.get(&addr).map_or(0, |v| {
                    v.iter().filter(|(lo, _)| *lo > t && *lo <= t_end).count()
                })
            })
            .sum()
    };
    let double = |addr: Ipv4Addr| -> f64 {
        overlaps(&per(addr))
            .iter()
            .map(|(_, _, lo, hi)| hi - lo)
            .fold(0.0, |a, b| a + b)
    };
    rep.keepalived_false = acquisitions(KA_VIP);
    rep.keepalived_double_ms = double(KA_VIP);
    rep.baton_double_ms = double(VIP);
    let vip_moves = acquisitions(VIP);
    if vip_moves != rep.baton_false {
        rep.notes.push(format!(
            "Baton's VIP was acquired {vip_moves} times during the soak for {} activations",
            rep.baton_false
        ));
    }
    lab.note(&format!(
        "soak done: Baton {} false failovers, keepalived {}",
        rep.baton_false, rep.keepalived_false
    ));
    Ok(())
}
