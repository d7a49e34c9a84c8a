//! End to end, with real interfaces: three `baton agent` processes, each in its own
//! network namespace, move a `floating-ip` resource (and the HTTP app bound to it) on
//! failover, and a client in a fourth namespace follows it.
//!
//! Topology (every namespace is named `btf<pid>-…` and deleted at the end, also on
//! panic; nothing is added to the root namespace):
//!
//! ```text
//!   btf<pid>-sw : bridges bra (network a, 10.213.0.0/24) and brb (network b, 10.214.0.0/24)
//!   btf<pid>-nN : node-N, ea = 10.213.0.(10+N) on bra, eb = 10.214.0.(10+N) on brb
//!   btf<pid>-cl : the client, ec = 10.213.0.50 on bra
//! ```
//!
//! The group `web` = `floating-ip` `vip` (10.213.0.100/24, device found from the subnet)
//! + `exec` `app` (`baton demo-app --listen 10.213.0.100:8080`, depends on `vip`).
//!
//! Scenario: online on node-1, the client gets `hello from node-1` and has node-1's MAC
//! for the VIP; node-1 is lost (agent SIGKILLed, both links down: its VIP and app stay
//! behind, unreachable, as on a dead machine); node-2 takes the group with a higher
//! epoch, holds the VIP, the client's neighbour entry moves to node-2's MAC (gratuitous
//! ARP) and the client gets `hello from node-2`; BTN-2102 on node-2. Then node-1 comes
//! back: its interconnect link b first, then its agent with the same state directory,
//! which cleans up (BTN-1021, node-2 holds the group: stale VIP removed, stale
//! app stopped) before node-1's service link a comes up again; the group stays on
//! node-2. Throughout, a watcher polls `ip -j addr` of the three nodes and fails the
//! test if two of them that are connected to network a hold the VIP at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Tests measure the real time of real processes and sockets: they read the clock directly.
#![allow(clippy::disallowed_methods)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use baton_tests::bin::baton_bin;
use baton_tests::config::ConfigText;
use baton_tests::netns::{self, Netns};
use baton_tests::{wait_until, Baton, ClusterStatus, Event, Events, GROUP};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 100);
const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 50);
const APP_PORT: u16 = 8080;
const API_PORT: u16 = 7420;
const HB_PORT: u16 = 7421;
const NODES: usize = 3;
/// Bound for anything that takes a few heartbeat timeouts.
const T: Duration = Duration::from_secs(10);
/// The device the VIP goes to in every node namespace (network a).
const DEV_A: &str = "ea";
const DEV_B: &str = "eb";

fn server(i: usize) -> String {
    format!("node-{}", i + 1)
}

/// Address of node index `i` (0-based) on network a (`net = 213`) or b (`net = 214`).
fn node_addr(net: u8, i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, net, 0, 11 + u8::try_from(i).expect("few nodes"))
}

/// From the loss of node-1 until the client is served by node-2: detection (heartbeat
/// timeout 1 s), the duplicate address check (`arping -D`, up to 1 s), activation.
const CLIENT_FAILOVER: Duration = Duration::from_secs(8);

/// Like [`wait_until`], polling every 20 ms (for the client-side timings).
fn poll<R>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<R, String>) -> R {
    let start = Instant::now();
    loop {
        match f() {
            Ok(r) => return r,
            Err(why) => assert!(
                start.elapsed() < timeout,
                "timed out after {} waiting until {what}; last state: {why}",
                secs(start.elapsed())
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// What the VIP watcher saw.
#[derive(Debug, Default)]
struct VipLog {
    rounds: u64,
    errors: Vec<String>,
    last: [Option<bool>; NODES],
    ever: [bool; NODES],
    /// Transitions and the test's own notes, with the time since the lab started.
    timeline: Vec<(Duration, String)>,
    overlaps: Vec<String>,
}

/// Polls `ip -n NODE -j addr show` of every node every 50 ms.
struct VipWatch {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<VipLog>>,
    handle: Option<JoinHandle<()>>,
}

impl VipWatch {
    fn start(nodes: Vec<String>, connected: Arc<[AtomicBool; NODES]>, t0: Instant) -> VipWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(VipLog::default()));
        let (stop2, log2) = (stop.clone(), log.clone());
        let handle = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                let round = Instant::now();
                // A node counts as connected if it was at the start or at the end of the
                // round (the test marks node-1 disconnected before cutting it and
                // connected before restoring it, so this errs towards checking).
                let before: Vec<bool> =
                    connected.iter().map(|c| c.load(Ordering::SeqCst)).collect();
                // Per node: when it was sampled and the device holding the VIP.
                let mut held: [Option<(Duration, Option<String>)>; NODES] = Default::default();
                for (i, ns) in nodes.iter().enumerate() {
                    match netns::device_with(ns, VIP) {
                        Ok(d) => held[i] = Some((t0.elapsed(), d)),
                        Err(e) => log2.lock().unwrap().errors.push(e),
                    }
                }
                let after: Vec<bool> = connected.iter().map(|c| c.load(Ordering::SeqCst)).collect();
                let mut l = log2.lock().unwrap();
                l.rounds += 1;
                let at = t0.elapsed();
                for (i, h) in held.iter().enumerate() {
                    let Some((sampled, dev)) = h else { continue };
                    let sampled = *sampled;
                    let has = dev.is_some();
                    if l.last[i] != Some(has) {
                        let what = match dev {
                            Some(d) => format!("VIP present on {} ({d})", server(i)),
                            None => format!("VIP absent on {}", server(i)),
                        };
                        l.timeline.push((sampled, what));
                        l.last[i] = Some(has);
                    }
                    l.ever[i] |= has;
                }
                let holders: Vec<String> = (0..NODES)
                    .filter(|&i| (before[i] || after[i]) && matches!(held[i], Some((_, Some(_)))))
                    .map(server)
                    .collect();
                if holders.len() > 1 {
                    let r = l.rounds;
                    l.overlaps.push(format!(
                        "round {r} at {}: VIP on {holders:?}, all connected to network a",
                        secs(at)
                    ));
                }
                drop(l);
                let spent = round.elapsed();
                if spent < Duration::from_millis(50) {
                    std::thread::sleep(Duration::from_millis(50) - spent);
                }
            }
        });
        VipWatch {
            stop,
            log,
            handle: Some(handle),
        }
    }

    fn note(&self, at: Duration, what: String) {
        self.log.lock().unwrap().timeline.push((at, what));
    }

    fn timeline(&self) -> String {
        let l = self.log.lock().unwrap();
        let mut t = l.timeline.clone();
        t.sort_by_key(|(d, _)| *d);
        t.iter()
            .map(|(d, w)| format!("  {:>7}  {w}", secs(*d)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn finish(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for VipWatch {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Namespaces, bridges, agents; see the module documentation. Dropping it stops the
/// watcher, kills the agents, then (through [`Netns`]) every process left in the
/// namespaces (the apps, arping) and deletes the namespaces.
struct Lab {
    bin: PathBuf,
    dir: PathBuf,
    config: PathBuf,
    sw: String,
    client: String,
    /// Namespace of each node (index 0 = node-1).
    nodes: Vec<String>,
    agents: Vec<Option<Child>>,
    connected: Arc<[AtomicBool; NODES]>,
    watch: Option<VipWatch>,
    t0: Instant,
    // Dropped in this order, after `Drop::drop`: the namespaces, then the files.
    netns: Netns,
    _tmp: tempfile::TempDir,
}

impl Lab {
    /// Build the namespaces and write the configuration. `Err` only when the first
    /// namespace cannot be created (the test is then skipped).
    fn start() -> Result<Lab, String> {
        let bin = baton_bin();
        let t0 = Instant::now();
        let prefix = format!("btf{}-", std::process::id());
        let mut ns = Netns::new();
        let sw = format!("{prefix}sw");
        ns.add(&sw)
            .map_err(|e| format!("cannot create a network namespace: {e}"))?;
        let tmp = tempfile::Builder::new()
            .prefix("baton-it-netns-fip-")
            .tempdir()
            .expect("cannot create a temporary directory");
        let dir = tmp.path().to_path_buf();
        let mut lab = Lab {
            bin,
            config: dir.join("baton.toml"),
            dir,
            sw: sw.clone(),
            client: format!("{prefix}cl"),
            nodes: (1..=NODES).map(|i| format!("{prefix}n{i}")).collect(),
            agents: (0..NODES).map(|_| None).collect(),
            connected: Arc::new([const { AtomicBool::new(true) }; NODES]),
            watch: None,
            t0,
            netns: ns,
            _tmp: tmp,
        };
        for br in ["bra", "brb"] {
            netns::must_ip(&["-n", &sw, "link", "add", br, "type", "bridge"]);
            netns::must_ip(&["-n", &sw, "link", "set", br, "up"]);
        }
        for i in 0..NODES {
            let n = lab.nodes[i].clone();
            lab.netns.add(&n).unwrap_or_else(|e| panic!("{e}"));
            for (net, dev, br, a) in [
                ("a", DEV_A, "bra", node_addr(213, i)),
                ("b", DEV_B, "brb", node_addr(214, i)),
            ] {
                lab.plug(&n, dev, &format!("n{}{net}", i + 1), br, a);
            }
        }
        let c = lab.client.clone();
        lab.netns.add(&c).unwrap_or_else(|e| panic!("{e}"));
        lab.plug(&c, "ec", "cla", "bra", CLIENT_ADDR);

        let baton = lab.baton();
        baton
            .keygen(&lab.dir.join("cluster.key"))
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&lab.config, lab.config_text()).expect("write config");
        baton
            .check_config()
            .unwrap_or_else(|e| panic!("{e} (of the test's own configuration)"));
        Ok(lab)
    }

    /// A veth pair: `dev` (with `addr`/24, up) in namespace `ns`, its peer `port`
    /// attached to bridge `br` in the switch namespace.
    fn plug(&self, ns: &str, dev: &str, port: &str, br: &str, addr: Ipv4Addr) {
        let sw = self.sw.as_str();
        netns::must_ip(&[
            "-n", sw, "link", "add", port, "type", "veth", "peer", "name", dev, "netns", ns,
        ]);
        netns::must_ip(&["-n", sw, "link", "set", port, "master", br, "up"]);
        netns::must_ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]);
        netns::must_ip(&["-n", ns, "link", "set", dev, "up"]);
    }

    /// The client of the test's configuration (run it in a namespace with
    /// [`Baton::in_netns`]).
    fn baton(&self) -> Baton {
        Baton::new(&self.bin, &self.config)
    }

    fn config_text(&self) -> String {
        let d = self.dir.display();
        let exe = self.bin.display();
        let mut c = ConfigText::new(
            "the baton integration test netns_floating_ip",
            "it-netns-fip",
        )
        .heartbeat("100ms", "1s", "")
        .host_safe(
            &self.dir,
            "10s",
            // The client namespace runs `baton alerts` against the agents: an admin address.
            "allow = [\"127.0.0.0/8\", \"10.213.0.50/32\"]",
        );
        for i in 0..NODES {
            c = c.server(
                &server(i),
                None,
                &[
                    format!("{}:{HB_PORT}", node_addr(213, i)),
                    format!("{}:{HB_PORT}", node_addr(214, i)),
                ],
                &format!("{}:{API_PORT}", node_addr(213, i)),
            );
        }
        let servers: Vec<String> = (0..NODES).map(server).collect();
        let pid = format!("{d}/app-$BATON_SERVER.pid");
        c.group(GROUP, &servers)
            .push(&format!(
                r#"
[[group.resource]]
kind = "floating-ip"
name = "vip"
ip = "{VIP}"
prefix = 24
activate_timeout = "5s"
deactivate_timeout = "5s"

[[group.resource]]
kind = "exec"
name = "app"
depends_on = ["vip"]
start = '"{exe}" demo-app --listen {VIP}:{APP_PORT} --name "$BATON_SERVER" >> "{d}/app-$BATON_SERVER.log" 2>&1 & echo $! > "{pid}"'
stop = 'if [ -f "{pid}" ]; then kill $(cat "{pid}") 2>/dev/null; rm -f "{pid}"; fi; true'
check = '[ -f "{pid}" ] && kill -0 $(cat "{pid}") 2>/dev/null'
activate_timeout = "5s"
deactivate_timeout = "5s"
"#
            ))
            .build()
    }

    fn at(&self) -> Duration {
        self.t0.elapsed()
    }

    /// Print `what` with the time since the start, and put it on the watcher's timeline.
    fn note(&self, what: &str) {
        let at = self.at();
        println!("[{:>7}] {what}", secs(at));
        if let Some(w) = &self.watch {
            w.note(at, format!("-- {what}"));
        }
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}.log", server(i)))
    }

    fn spawn(&mut self, i: usize) {
        let child = self
            .baton()
            .in_netns(&self.nodes[i])
            .agent(
                &server(i),
                &self.config,
                &self.dir.join("state").join(server(i)),
                &self.log_path(i),
                &format!("=== test: starting agent {} ===", server(i)),
            )
            .unwrap_or_else(|e| panic!("{e}"))
            .env("NO_COLOR", "1")
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start agent {}: {e}", server(i)));
        self.agents[i] = Some(child);
    }

    /// Wait until node `i`'s agent answers its API from inside its own namespace.
    fn wait_api(&mut self, i: usize) {
        let ns = self.nodes[i].clone();
        let name = server(i);
        let start = Instant::now();
        loop {
            if let Some(c) = self.agents[i].as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("agent {name} exited with {st} during startup");
                }
            }
            if self.status(&ns, &name).is_ok() {
                return;
            }
            assert!(
                start.elapsed() < T,
                "agent {name} did not answer its API within {T:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn sigkill(&mut self, i: usize) {
        let mut c = self.agents[i]
            .take()
            .unwrap_or_else(|| panic!("agent {} is not running", server(i)));
        c.kill().expect("SIGKILL the agent");
        let _ = c.wait();
    }

    /// `baton status --json -s SERVER`, run inside namespace `ns`.
    fn status(&self, ns: &str, server: &str) -> Result<ClusterStatus, String> {
        self.baton().in_netns(ns).try_status_via(Some(server))
    }

    /// `baton alerts --json --after 0 -s SERVER`, run inside namespace `ns`.
    fn alerts(&self, ns: &str, server: &str) -> Result<Vec<Event>, String> {
        self.baton().in_netns(ns).try_alerts(server)
    }

    /// `curl http://VIP:8080/` from the client namespace.
    fn curl(&self) -> Result<String, String> {
        let url = format!("http://{VIP}:{APP_PORT}/");
        let out = netns::command_in(&self.client, "curl")
            .args(["-sS", "--noproxy", "*", "--max-time", "1", &url])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run curl: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(format!(
                "curl exited {:?}: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// The MAC the client's neighbour table has for the VIP.
    fn client_vip_mac(&self) -> Result<String, String> {
        match netns::neigh(&self.client, VIP)? {
            Some(n) => n
                .lladdr
                .clone()
                .ok_or_else(|| format!("entry without a MAC: {n:?}")),
            None => Err("no neighbour entry for the VIP".into()),
        }
    }

    /// Wait until the group is online on `owner` alone, as `via` (run in its own
    /// namespace) reports; returns the epoch and the status.
    fn wait_owner(&self, via: usize, owner: usize, min_epoch: u64) -> (u64, ClusterStatus) {
        let ns = &self.nodes[via];
        let want = server(owner);
        wait_until(
            &format!("{GROUP} is online on {want} alone (epoch > {min_epoch})"),
            T,
            || {
                let st = self.status(ns, &server(via))?;
                let epoch = st.group(GROUP).epoch;
                match st.sole_owner(GROUP) {
                    Some(o) if o == want && epoch > min_epoch => Ok((epoch, st)),
                    _ => Err(st.summary(GROUP)),
                }
            },
        )
    }

    fn vip_device(&self, i: usize) -> Option<String> {
        netns::device_with(&self.nodes[i], VIP).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The pid in node `i`'s app pid file, if that process is alive.
    fn app_alive(&self, i: usize) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.dir.join(format!("app-{}.pid", server(i))))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let state = stat.rsplit(')').next()?.split_whitespace().next()?;
        (state != "Z" && state != "X").then_some(pid)
    }

    fn link(&self, i: usize, dev: &str, up: bool) {
        netns::must_ip(&[
            "-n",
            &self.nodes[i],
            "link",
            "set",
            dev,
            if up { "up" } else { "down" },
        ]);
    }

    /// The agents' WARN and ERROR log lines (printed at the end, for the record).
    fn agent_warnings(&self) -> Vec<String> {
        (0..NODES)
            .flat_map(|i| {
                std::fs::read_to_string(self.log_path(i))
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                    .map(|l| format!("{}: {l}", server(i)))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn dump(&self) {
        eprintln!(
            "\n===== netns_floating_ip ({}; namespaces {:?}) =====",
            self.dir.display(),
            self.netns.names()
        );
        if let Some(w) = &self.watch {
            let l = w.log.lock().unwrap();
            eprintln!(
                "--- VIP watcher: {} rounds, overlaps {:?}, errors {:?}",
                l.rounds,
                l.overlaps,
                l.errors.iter().take(5).collect::<Vec<_>>()
            );
            drop(l);
            eprintln!("{}", w.timeline());
        }
        for i in 0..NODES {
            let tail = |p: &Path, n: usize| {
                let t = std::fs::read_to_string(p).unwrap_or_default();
                let all: Vec<&str> = t.lines().collect();
                all[all.len().saturating_sub(n)..].join("\n")
            };
            eprintln!(
                "--- tail of {} ---\n{}",
                server(i),
                tail(&self.log_path(i), 60)
            );
            let app = self.dir.join(format!("app-{}.log", server(i)));
            eprintln!("--- app log of {} ---\n{}", server(i), tail(&app, 10));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump();
        }
        if let Some(mut w) = self.watch.take() {
            w.finish();
        }
        for c in self.agents.iter_mut().filter_map(Option::take) {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
        // `netns` (dropped next) kills the apps and everything else left inside.
    }
}

/// Server indices: node-1 (first in the group's order), node-2, node-3.
const N1: usize = 0;
const N2: usize = 1;
const N3: usize = 2;

/// When node-1 was lost.
struct Loss {
    /// node-2's last event before.
    seq_before_kill: u64,
    t_kill: Instant,
    /// Wall clock (ms).
    kill_ms: u64,
}

/// How long each part of the failover took, for the closing report.
struct Timings {
    /// Kill of node-1 -> the client's neighbour entry names node-2.
    neigh: Duration,
    /// Kill of node-1 -> the client is answered by node-2.
    curl: Duration,
    /// Restart of node-1 -> its stale VIP and app are gone.
    clean: Duration,
}

#[test]
fn floating_ip_follows_failover_in_network_namespaces() {
    if let Some(why) = netns::unavailable() {
        baton_tests::skip::skip("netns_floating_ip", &why);
        return;
    }
    if !netns::have("curl") {
        baton_tests::skip::skip(
            "netns_floating_ip",
            "curl is not installed (the client uses it)",
        );
        return;
    }
    let arping = netns::iputils_arping();
    let mut lab = match Lab::start() {
        Ok(l) => l,
        Err(why) => {
            panic!("netns_floating_ip: set-up failed on a machine with network namespaces: {why}")
        }
    };
    lab.watch = Some(VipWatch::start(
        lab.nodes.clone(),
        lab.connected.clone(),
        lab.t0,
    ));
    lab.note("namespaces ready; starting the agents");
    if !arping {
        println!(
            "note: iputils arping is not installed: the agents send no gratuitous ARP; the \
             client's neighbour entry is flushed after the failover (as its expiry would) and \
             checked after its request"
        );
    }
    let macs: Vec<String> = (0..NODES)
        .map(|i| netns::mac(&lab.nodes[i], DEV_A))
        .collect();
    for i in 0..NODES {
        lab.spawn(i);
    }
    for i in 0..NODES {
        lab.wait_api(i);
    }

    let e1 = online_on_node_1(&lab, &macs);
    let loss = lose_node_1(&mut lab);
    let (neigh, curl) = client_follows_to_node_2(&lab, &macs, arping, &loss);
    let e2 = node_2_holds_the_group(&lab, e1, &loss);
    let clean = node_1_returns_and_cleans_up(&mut lab, e2, loss.seq_before_kill);
    no_failback(&lab, e2);
    the_vip_was_never_on_two_nodes(&mut lab, arping, &Timings { neigh, curl, clean });
}

/// The group online on node-1 with every path up, the VIP on node-1 alone, the client
/// answered by node-1 through node-1's MAC; returns the epoch.
fn online_on_node_1(lab: &Lab, macs: &[String]) -> u64 {
    // 1. Online on node-1 (first in the group's order); the client reaches it.
    let (e1, _) = lab.wait_owner(N2, N1, 0);
    lab.note(&format!("{GROUP} online on node-1, epoch {e1}"));
    wait_until("every agent sees every server on both paths", T, || {
        let st = lab.status(&lab.nodes[N2], &server(N2))?;
        let ok = st.agents().len() == NODES
            && st.agents().iter().all(|a| {
                a.servers
                    .iter()
                    .all(|s| s.up && s.paths.len() == 2 && s.paths.iter().all(|p| p.up))
            });
        if ok {
            Ok(())
        } else {
            Err(st.summary(GROUP))
        }
    });
    assert_eq!(
        lab.vip_device(N1).as_deref(),
        Some(DEV_A),
        "VIP on node-1's ea"
    );
    assert_eq!(
        lab.vip_device(N2),
        None,
        "VIP on node-2 before the failover"
    );
    assert_eq!(
        lab.vip_device(N3),
        None,
        "VIP on node-3 before the failover"
    );
    let answer = wait_until("the client gets an answer through the VIP", T, || {
        lab.curl()
    });
    assert_eq!(answer, "hello from node-1");
    lab.note(&format!("client: {answer:?}"));
    let mac_before = lab.client_vip_mac().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        mac_before, macs[N1],
        "the client's neighbour entry for the VIP is node-1's MAC"
    );
    e1
}

/// node-1's agent dies and its links go down; its VIP and app stay behind.
fn lose_node_1(lab: &mut Lab) -> Loss {
    // 2. Lose node-1: its agent dies and its links go down; its VIP and app stay behind.
    let seq_before_kill = lab
        .alerts(&lab.client, &server(N2))
        .unwrap_or_else(|e| panic!("{e}"))
        .last_seq();
    lab.connected[N1].store(false, Ordering::SeqCst);
    let t_kill = Instant::now();
    let kill_ms = unix_ms();
    lab.sigkill(N1);
    lab.link(N1, DEV_A, false);
    lab.link(N1, DEV_B, false);
    lab.note("node-1 lost: agent SIGKILLed, ea and eb down");
    assert!(
        lab.app_alive(N1).is_some(),
        "node-1's app outlives its agent (as on a machine that is cut off)"
    );
    Loss {
        seq_before_kill,
        t_kill,
        kill_ms,
    }
}

/// The client follows the VIP to node-2; returns how long its neighbour entry and its
/// first answer from node-2 took after the kill.
fn client_follows_to_node_2(
    lab: &Lab,
    macs: &[String],
    arping: bool,
    loss: &Loss,
) -> (Duration, Duration) {
    let t_kill = loss.t_kill;
    // 3. The client follows the VIP to node-2. With arping, the neighbour entry must
    //    change before the client sends anything (gratuitous ARP), so it is polled
    //    alone first; then the request.
    let mut t_neigh = Duration::ZERO;
    if arping {
        poll(
            "the client's neighbour entry for the VIP moves to node-2's MAC (gratuitous ARP)",
            CLIENT_FAILOVER.saturating_sub(t_kill.elapsed()),
            || match lab.client_vip_mac()? {
                m if m == macs[N2] => Ok(()),
                m => Err(format!(
                    "still {m} (node-1 {}, node-2 {})",
                    macs[N1], macs[N2]
                )),
            },
        );
        t_neigh = t_kill.elapsed();
        lab.note("client: neighbour entry for the VIP = node-2's MAC");
    } else {
        // Nothing announces the move: without this, the client would keep sending to
        // node-1's MAC until its entry expires (up to a minute).
        poll(
            "the VIP is on node-2",
            CLIENT_FAILOVER.saturating_sub(t_kill.elapsed()),
            || match lab.vip_device(N2) {
                Some(_) => Ok(()),
                None => Err("not yet".into()),
            },
        );
        let _ = netns::ip(&["-n", &lab.client, "neigh", "flush", &VIP.to_string()]);
        lab.note("no arping: client neighbour entry for the VIP flushed");
    }
    let answer = poll(
        "the client gets `hello from node-2` through the VIP",
        CLIENT_FAILOVER.saturating_sub(t_kill.elapsed()),
        || match lab.curl()? {
            a if a == "hello from node-2" => Ok(a),
            a => Err(a),
        },
    );
    let t_curl = t_kill.elapsed();
    lab.note(&format!("client: {answer:?}"));
    if !arping {
        let m = lab.client_vip_mac().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m, macs[N2], "client neighbour entry after its request");
        t_neigh = t_kill.elapsed();
        lab.note("client: neighbour entry for the VIP = node-2's MAC (after the request)");
    }
    (t_neigh, t_curl)
}

/// node-2 runs the group with a higher epoch than `e1` and logged it; returns the epoch.
fn node_2_holds_the_group(lab: &Lab, e1: u64, loss: &Loss) -> u64 {
    let (seq_before_kill, kill_ms) = (loss.seq_before_kill, loss.kill_ms);
    // node-2 runs the group with a higher epoch (node-2 and node-3 agree) and holds the
    // VIP; node-3 does not.
    let (e2, st) = lab.wait_owner(N2, N2, e1);
    lab.note(&format!("status: {GROUP} online on node-2, epoch {e2}"));
    assert!(
        !st.local.server_view("node-1").up,
        "node-2 sees node-1 down: {}",
        st.summary(GROUP)
    );
    assert_eq!(
        lab.vip_device(N2).as_deref(),
        Some(DEV_A),
        "VIP on node-2's ea"
    );
    assert_eq!(lab.vip_device(N3), None, "VIP on node-3 after the failover");
    let evs = lab
        .alerts(&lab.client, &server(N2))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        evs.has("BTN-2102", |e| e.group.as_deref() == Some(GROUP)
            && e.epoch == Some(e2)),
        "BTN-2102 (group activated, epoch {e2}) on node-2:\n{}",
        evs.lines()
    );

    // What node-2 logged, timed from the kill (the agents stamp events with the wall clock).
    let since_kill = |e: &Event| e.time_ms.saturating_sub(kill_ms);
    let steps: Vec<String> = ["BTN-1102", "BTN-2107", "BTN-2101", "BTN-2102"]
        .iter()
        .filter_map(|id| {
            evs.after(seq_before_kill)
                .iter()
                .find(|e| e.id == *id)
                .map(|e| format!("{id} +{} ms", since_kill(e)))
        })
        .collect();
    lab.note(&format!(
        "node-2 events after the kill: {}",
        steps.join(", ")
    ));
    e2
}

/// node-1 comes back and cleans up, seeing node-2 hold the group at `e2`; returns how
/// long the cleanup took after its restart.
fn node_1_returns_and_cleans_up(lab: &mut Lab, e2: u64, seq_before_kill: u64) -> Duration {
    // 4. node-1 comes back: interconnect b first, then its agent (same state dir),
    //    which must clean up (node-2 holds the group) before its service link
    //    a is up again.
    assert_eq!(
        lab.vip_device(N1).as_deref(),
        Some(DEV_A),
        "node-1 still holds its stale VIP before its agent restarts"
    );
    lab.link(N1, DEV_B, true);
    lab.note("node-1: eb up; restarting its agent");
    let t_restart = Instant::now();
    lab.spawn(N1);
    lab.wait_api(N1);
    let n1ns = lab.nodes[N1].clone();
    let evs = wait_until(
        "node-1 raises BTN-1021 (cleaned up after restart)",
        T,
        || {
            let evs = lab.alerts(&n1ns, &server(N1))?;
            if evs.has("BTN-1021", |e| e.group.as_deref() == Some(GROUP)) {
                Ok(evs)
            } else {
                Err(evs.lines())
            }
        },
    );
    let cleanup = evs.with_id("BTN-1021")[0].clone();
    lab.note(&format!("node-1: BTN-1021 {}", cleanup.message));
    // Its reason: node-2 holds the group, or (when its check answers before node-2's
    // heartbeat arrives: a group with a resource that did not check active is cleaned up
    // at once) the stale VIP on the device that is still down.
    assert!(
        cleanup.message.contains("node-2 now holds it")
            || cleanup
                .message
                .contains(&format!("vip degraded (address {VIP} is on device {DEV_A}")),
        "node-1 cleaned up because node-2 holds the group or its VIP is on a down device: {}",
        cleanup.message
    );
    wait_until("node-1's stale VIP and app are gone", T, || {
        match (lab.vip_device(N1), lab.app_alive(N1)) {
            (None, None) => Ok(()),
            other => Err(format!("(vip device, app pid) = {other:?}")),
        }
    });
    let t_clean = t_restart.elapsed();
    lab.note("node-1: stale VIP removed, stale app stopped");
    let st1 = lab
        .status(&n1ns, &server(N1))
        .unwrap_or_else(|e| panic!("{e}"));
    let g1 = st1.local.group(GROUP);
    assert_eq!(
        (
            g1.active_on.as_deref(),
            g1.epoch,
            st1.local.local_state(GROUP).as_str()
        ),
        (Some("node-2"), e2, "offline"),
        "node-1's view after its cleanup: {}",
        st1.summary(GROUP)
    );
    // node-1 is back on path 1 only: once that has lasted the heartbeat timeout, node-2
    // reports path 0 to node-1 down (BTN-1103) while the server is up.
    wait_until(
        "BTN-1103 for node-1's path 0 on node-2",
        Duration::from_secs(5),
        || {
            let evs = lab.alerts(&lab.client, &server(N2))?;
            let hit = evs.iter().any(|e| {
                e.id == "BTN-1103" && e.peer.as_deref() == Some("node-1") && e.seq > seq_before_kill
            });
            if hit {
                Ok(())
            } else {
                Err("not yet".to_string())
            }
        },
    );
    lab.connected[N1].store(true, Ordering::SeqCst);
    lab.link(N1, DEV_A, true);
    lab.note("node-1: ea up");
    wait_until(
        "every agent sees every server on both paths again",
        T,
        || {
            let st = lab.status(&lab.client, &server(N2))?;
            let ok = st.agents().len() == NODES
                && st.agents().iter().all(|a| {
                    a.servers
                        .iter()
                        .all(|s| s.up && s.paths.iter().all(|p| p.up))
                });
            if ok {
                Ok(())
            } else {
                Err(st.summary(GROUP))
            }
        },
    );
    lab.note("node-1 up on both paths");
    t_clean
}

fn no_failback(lab: &Lab, e2: u64) {
    // 5. No failback: for 2 s the group stays on node-2 with the same epoch.
    let hold = Instant::now();
    while hold.elapsed() < Duration::from_secs(2) {
        let st = lab
            .status(&lab.client, &server(N2))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (st.sole_owner(GROUP).as_deref(), st.group(GROUP).epoch),
            (Some("node-2"), e2),
            "the group stays on node-2: {}",
            st.summary(GROUP)
        );
        assert_eq!(lab.vip_device(N1), None, "VIP back on node-1");
        assert_eq!(lab.curl().as_deref(), Ok("hello from node-2"));
        std::thread::sleep(Duration::from_millis(200));
    }
    lab.note("group stayed on node-2 for 2 s");
}

fn the_vip_was_never_on_two_nodes(lab: &mut Lab, arping: bool, t: &Timings) {
    // 6. The VIP was never on two connected nodes at once, and never on node-3.
    let mut w = lab.watch.take().expect("watcher");
    w.finish();
    let timeline = w.timeline();
    let l = w.log.lock().unwrap();
    println!(
        "VIP watcher: {} rounds, {} errors; timeline:\n{timeline}",
        l.rounds,
        l.errors.len()
    );
    println!(
        "timings: kill -> client neighbour entry on node-2 {}{}; \
         kill -> client answered by node-2 {}; restart of node-1 -> cleaned up {}; total {}",
        secs(t.neigh),
        if arping { "" } else { " (after the request)" },
        secs(t.curl),
        secs(t.clean),
        secs(lab.at())
    );
    let warnings = lab.agent_warnings();
    println!(
        "agent log warnings and errors ({}):\n{}",
        warnings.len(),
        warnings.join("\n")
    );
    assert!(
        l.rounds > 20,
        "the VIP watcher ran only {} rounds",
        l.rounds
    );
    assert!(l.errors.is_empty(), "VIP watcher errors: {:?}", l.errors);
    assert!(
        l.overlaps.is_empty(),
        "the VIP was on two connected nodes at once:\n{}\ntimeline:\n{timeline}",
        l.overlaps.join("\n")
    );
    assert!(
        l.ever[N1] && l.ever[N2],
        "the watcher saw the VIP on node-1 and node-2"
    );
    assert!(!l.ever[N3], "the VIP was never on node-3:\n{timeline}");
}
