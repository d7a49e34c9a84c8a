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
fn wait_single_holder_for(
    lab: &Lab,
    addr: Ipv4Addr,
    stable: Duration,
    timeout: Duration,
) -> Result<usize, String> {
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
        if start.elapsed() > timeout {
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
    // keepalived's first master, and its failovers, take three advertisement
    // intervals and the skew: long ones when the search found a long interval.
    let ka_wait = Duration::from_millis(4 * o.advert_ms).max(Duration::from_secs(20));
    wait_single_holder_for(lab, KA_VIP, Duration::from_secs(1), ka_wait + ka_wait)?;
    let probe_timeout =
        ka_wait.max(Duration::from_millis(4 * o.timeout_ms)) + Duration::from_secs(10);
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
        let h = wait_single_holder_for(lab, KA_VIP, Duration::from_secs(1), ka_wait)?;
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
        // `nopreempt`: the new master keeps the address.
        std::thread::sleep(Duration::from_millis(500));
        wait_single_holder_for(lab, KA_VIP, Duration::from_secs(2), ka_wait)?;
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
    let ka_wait = Duration::from_millis(4 * o.advert_ms).max(Duration::from_secs(20));
    wait_single_holder_for(lab, KA_VIP, Duration::from_secs(1), ka_wait)?;
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
    (rep.keepalived_false, rep.keepalived_double_ms) = holder_changes(&obs, KA_VIP, t, t_end);
    let (vip_moves, baton_double_ms) = holder_changes(&obs, VIP, t, t_end);
    rep.baton_double_ms = baton_double_ms;
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

// --- The loss-proof search ------------------------------------------------------------

/// The loss-proof takeover benchmark: for Baton and for keepalived, the tightest timing
/// at which a soak of loss and jitter on every interconnect has no false failover, no
/// self-fence and no time with two holders; then the failover time of both at those
/// settings.
#[derive(Debug, Clone)]
pub struct SearchOptions {
    pub servers: usize,
    /// Length of the soak a setting must pass.
    pub soak: Duration,
    /// Failovers of each at the settings found (0: search only).
    pub runs: usize,
    /// Baton's candidates (heartbeat interval, timeout in ms), tightest first.
    pub baton: Vec<(u64, u64)>,
    /// keepalived's candidates (advertisement interval in ms), tightest first.
    pub adverts: Vec<u64>,
    pub loss_pct: u32,
    pub delay_ms: u32,
    pub jitter_ms: u32,
    pub keep: bool,
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions {
            servers: 3,
            soak: Duration::from_secs(600),
            runs: 20,
            baton: vec![
                (100, 300),
                (100, 500),
                (200, 600),
                (200, 1000),
                (300, 1500),
                (500, 2500),
                (1000, 5000),
            ],
            adverts: vec![200, 500, 1000, 2000, 5000, 10000, 20000, 40000],
            loss_pct: 20,
            delay_ms: 50,
            jitter_ms: 50,
            keep: false,
        }
    }
}

/// One candidate setting and what its soak showed.
#[derive(Debug, Clone)]
pub struct Trial {
    pub setting: String,
    /// Seconds soaked (less than the soak when it failed early).
    pub soaked_s: f64,
    /// What went wrong (empty: passed).
    pub failures: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct SearchReport {
    pub options: Option<SearchOptions>,
    pub baton_trials: Vec<Trial>,
    pub keepalived_trials: Vec<Trial>,
    /// The tightest passing settings.
    pub baton: Option<(u64, u64)>,
    pub advert: Option<u64>,
    /// Failovers at those settings.
    pub failover: Option<BenchReport>,
}

impl std::fmt::Display for SearchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let o = self.options.clone().unwrap_or_default();
        writeln!(
            f,
            "loss-proof search: {} servers, soak {} s of {} % loss + {} ± {} ms delay on every interconnect",
            o.servers,
            o.soak.as_secs(),
            o.loss_pct,
            o.delay_ms,
            o.jitter_ms
        )?;
        for (who, trials) in [
            ("Baton", &self.baton_trials),
            ("keepalived", &self.keepalived_trials),
        ] {
            for t in trials {
                writeln!(
                    f,
                    "  {who:<10} {:<28} {:>5.0} s  {}",
                    t.setting,
                    t.soaked_s,
                    verdict(t)
                )?;
            }
        }
        match self.baton {
            Some((i, t)) => writeln!(
                f,
                "  tightest passing: Baton heartbeat {i} ms / timeout {t} ms"
            )?,
            None => writeln!(f, "  tightest passing: Baton none of the candidates")?,
        }
        match self.advert {
            Some(a) => writeln!(
                f,
                "  tightest passing: keepalived advert_int {:.1} s",
                a as f64 / 1000.0
            )?,
            None => writeln!(f, "  tightest passing: keepalived none of the candidates")?,
        }
        if let Some(r) = &self.failover {
            writeln!(f, "failover at the settings found (clean network):")?;
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// `passed`, or `FAILED: ` and why.
fn verdict(t: &Trial) -> String {
    if t.failures.is_empty() {
        "passed".to_string()
    } else {
        format!("FAILED: {}", t.failures.join("; "))
    }
}

/// The address of keepalived's `k`-th search instance.
fn search_vip(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 231, 0, 110 + u8::try_from(k).unwrap_or(0))
}

pub fn search(o: &SearchOptions) -> Result<SearchReport, String> {
    if !crate::netns::have("keepalived") {
        return Err("keepalived is missing; install the Debian package keepalived".into());
    }
    if o.adverts.len() > 40 {
        return Err("at most 40 keepalived candidates".into());
    }
    let mut rep = SearchReport {
        options: Some(o.clone()),
        ..SearchReport::default()
    };
    // keepalived: every candidate at once, one VRRP instance each, for the whole soak.
    {
        let mut spec = LabSpec::new("bench");
        spec.servers = o.servers;
        let mut lab = Lab::build(spec)?;
        let instances: Vec<(Ipv4Addr, u64)> = o
            .adverts
            .iter()
            .enumerate()
            .map(|(k, a)| (search_vip(k), *a))
            .collect();
        lab.observe_also = instances.iter().map(|(a, _)| *a).collect();
        lab.observe()?;
        for i in 0..o.servers {
            lab.start_keepalived_instances(i, &instances)?;
        }
        lab.note("keepalived started with every candidate interval side by side");
        // A backup becomes master after three intervals without one (plus the skew).
        for (a, advert) in &instances {
            let first = Duration::from_millis(4 * advert + 10_000);
            wait_single_holder_for(&lab, *a, Duration::from_secs(2), first)?;
        }
        let t = lab.now();
        lab.netem_all(o.loss_pct, o.delay_ms, o.jitter_ms)?;
        lab.hold(o.soak, "keepalived soak: every candidate interval");
        let t_end = lab.now();
        lab.netem_clear()?;
        let obs = lab
            .observer
            .as_ref()
            .map(|ob| ob.snapshot())
            .ok_or_else(|| "no observer".to_string())?;
        for (addr, advert) in &instances {
            let (moves, double) = holder_changes(&obs, *addr, t, t_end);
            let mut failures = Vec::new();
            if moves > 0 {
                failures.push(format!("{moves} new masters"));
            }
            if double > 0.0 {
                failures.push(format!("{double:.0} ms with two holders"));
            }
            rep.keepalived_trials.push(Trial {
                setting: format!("advert_int {:.1} s", *advert as f64 / 1000.0),
                soaked_s: (t_end - t) / 1000.0,
                failures,
            });
        }
        lab.stop_keepalived();
        if o.keep {
            println!("lab directory kept: {}", lab.keep_dir().display());
        }
    }
    rep.advert = rep
        .keepalived_trials
        .iter()
        .zip(&o.adverts)
        .find(|(t, _)| t.failures.is_empty())
        .map(|(_, a)| *a);
    for t in &rep.keepalived_trials {
        println!(
            "  keepalived {} {:.0} s {}",
            t.setting,
            t.soaked_s,
            verdict(t)
        );
    }
    // Baton: one candidate at a time, tightest first, until one passes the whole soak.
    for &(interval, timeout) in &o.baton {
        let trial = baton_trial(o, interval, timeout)?;
        println!(
            "  Baton {} {:.0} s {}",
            trial.setting,
            trial.soaked_s,
            verdict(&trial)
        );
        let passed = trial.failures.is_empty();
        rep.baton_trials.push(trial);
        if passed {
            rep.baton = Some((interval, timeout));
            break;
        }
    }
    if o.runs > 0 {
        if let (Some((interval_ms, timeout_ms)), Some(advert_ms)) = (rep.baton, rep.advert) {
            let b = BenchOptions {
                runs: o.runs,
                servers: o.servers,
                interval_ms,
                timeout_ms,
                advert_ms,
                dad: false,
                soak: Duration::ZERO,
                keep: o.keep,
            };
            rep.failover = Some(run(&b)?);
        }
    }
    Ok(rep)
}

/// New holders of `addr` between `t` and `t_end`, and the time two servers held it.
fn holder_changes(
    obs: &super::observer::Observed,
    addr: Ipv4Addr,
    t: Ms,
    t_end: Ms,
) -> (usize, f64) {
    let per: Vec<(String, Vec<(Ms, Ms)>)> = obs
        .servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let iv = obs.logs[i].held.get(&addr).cloned().unwrap_or_default();
            (
                s.clone(),
                iv.iter()
                    .filter(|(lo, hi)| *hi >= t && *lo <= t_end)
                    .map(|(lo, hi)| (lo.max(t), hi.min(t_end)))
                    .collect(),
            )
        })
        .collect();
    let moves = obs
        .logs
        .iter()
        .map(|l| {
            l.held.get(&addr).map_or(0, |v| {
                v.iter().filter(|(lo, _)| *lo > t && *lo <= t_end).count()
            })
        })
        .sum();
    let double = overlaps(&per)
        .iter()
        .map(|(_, _, lo, hi)| hi - lo)
        .fold(0.0, |a, b| a + b);
    (moves, double)
}

/// Soak one Baton setting; stop at the first sign of failure.
fn baton_trial(o: &SearchOptions, interval: u64, timeout: u64) -> Result<Trial, String> {
    let setting = format!("heartbeat {interval} ms / timeout {timeout} ms");
    let mut spec = LabSpec::new("bench");
    spec.servers = o.servers;
    spec.interval_ms = interval;
    spec.timeout_ms = timeout;
    let mut lab = Lab::build(spec)?;
    lab.observe()?;
    lab.start_all()?;
    lab.wait_owner(None, Duration::from_secs(30))?;
    lab.wait_converged(Duration::from_secs(30))?;
    let t = lab.now();
    lab.netem_all(o.loss_pct, o.delay_ms, o.jitter_ms)?;
    lab.note(&format!("Baton soak: {setting}"));
    let mut failures = Vec::new();
    let start = Instant::now();
    while start.elapsed() < o.soak && failures.is_empty() {
        std::thread::sleep(Duration::from_secs(1));
        failures = baton_failures(&lab, t, lab.now())?;
    }
    let t_end = lab.now();
    lab.netem_clear()?;
    // Events of the last second reach the observer a little later.
    std::thread::sleep(Duration::from_millis(1500));
    if failures.is_empty() {
        failures = baton_failures(&lab, t, t_end)?;
    }
    if o.keep {
        println!("lab directory kept: {}", lab.keep_dir().display());
    }
    Ok(Trial {
        setting,
        soaked_s: (t_end - t) / 1000.0,
        failures,
    })
}

/// What counts against a Baton setting in a soak: a new activation (false failover),
/// a deactivation (the owner gave the group up: quorum lost), a self-fence or a missed
/// fence deadline, time with two holders of the VIP.
fn baton_failures(lab: &Lab, t: Ms, t_end: Ms) -> Result<Vec<String>, String> {
    let obs = lab
        .observer
        .as_ref()
        .map(|ob| ob.snapshot())
        .ok_or_else(|| "no observer".to_string())?;
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for i in 0..lab.spec.servers {
        for e in &obs.logs[i].events {
            let at = lab.event_ms(e);
            if at < t || at > t_end + 1000.0 {
                continue;
            }
            let what = match e.id.as_str() {
                "BTN-2101" => "activations (false failover)",
                "BTN-2103" => "deactivations",
                "BTN-1005" => "self-fences",
                "BTN-1135" => "fence deadlines missed",
                _ => continue,
            };
            *counts.entry(what).or_default() += 1;
        }
    }
    let mut v: Vec<String> = counts.iter().map(|(w, n)| format!("{n} {w}")).collect();
    let (_, double) = holder_changes(&obs, VIP, t, t_end);
    if double > 0.0 {
        v.push(format!("{double:.0} ms with two holders"));
    }
    Ok(v)
}
