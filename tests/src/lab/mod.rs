//! The fault lab: N servers, each in its own network namespace with two interconnect
//! networks, real `baton agent` processes, and faults injected from outside.
//!
//! Topology (every namespace is named `bl<pid>x<k>-…`; nothing is added to the root
//! namespace, and dropping the [`Lab`] kills what runs inside and deletes them):
//!
//! ```text
//!   bl<pid>-sw : the switch: bridges bra (network a, 10.231.0.0/24),
//!                brb (network b, 10.232.0.0/24) and brm (management, 10.233.0.0/24)
//!   bl<pid>-nN : node-N, ea = 10.231.0.(10+N), eb = 10.232.0.(10+N) (interconnects),
//!                em = 10.233.0.(10+N) (the agent's API; never faulted)
//!   bl<pid>-wt : the witness (`baton witness`), 10.231.0.5:7430 on network a
//!   bl<pid>-cl : a client, 10.231.0.50 on network a (the benchmark's observer)
//! ```
//!
//! The group `web` holds a `floating-ip` (10.231.0.100/24 on `ea`, duplicate check off
//! by default so that the lab tests the engine's own guarantee rather than ARP) and an
//! `exec` marker app (a `sleep` whose starts and stops are logged). Every node also runs
//! a `baton demo-app` on 0.0.0.0:8080 outside Baton, so whoever holds a VIP answers
//! `hello from node-N` on it (the benchmark uses this for Baton and keepalived alike).
//!
//! The [`observer`] watches every server from inside its namespace and the
//! [`scenarios`] check, from the agents' status, their event streams and the addresses
//! actually held, that the group is never active on two servers at once.

pub mod bench;
pub mod impair;
pub mod observer;
pub mod scenarios;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::client::{self, Baton};
use crate::cluster::api_token;
use crate::config::ConfigText;
use crate::model::AgentStatus;
use crate::netns::{self, Netns};
use observer::{Exemptions, Ms, Observed, Observer, Target};

/// The group every scenario runs.
pub const GROUP: &str = "web";
/// Baton's floating IP.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 100);
/// keepalived's floating IP (benchmark).
pub const KA_VIP: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 101);
pub const WITNESS_ADDR: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 5);
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 50);
pub const WITNESS_PORT: u16 = 7430;
pub const API_PORT: u16 = 7420;
pub const HB_PORT: u16 = 7421;
pub const APP_PORT: u16 = 8080;
/// Name and port of the lab's `mirror-disk` resource (when the spec has one).
pub const MIRROR: &str = "data";
pub const MIRROR_PORT: u16 = 7790;
/// Third octet of networks a and b and of the management network.
const NET_A: u8 = 231;
const NET_B: u8 = 232;
const NET_M: u8 = 233;

/// Name of server index `i` (0-based).
pub fn server(i: usize) -> String {
    format!("node-{}", i + 1)
}

/// Address of server index `i` on network `net`.
fn node_addr(net: u8, i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, net, 0, 11 + u8::try_from(i).unwrap_or(200))
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
}

/// Why the lab cannot run here (not root, a tool missing), or `None`.
pub fn unavailable() -> Option<String> {
    if let Some(why) = netns::unavailable() {
        return Some(why);
    }
    for (tool, pkg) in [("nft", "nftables"), ("tc", "iproute2")] {
        if !netns::have(tool) {
            return Some(format!("`{tool}` is missing; install {pkg}"));
        }
    }
    None
}

/// Is `baton witness` available in this build?
pub fn witness_available(bin: &std::path::Path) -> bool {
    Command::new(bin)
        .args(["witness", "--help"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// What to build.
#[derive(Debug, Clone)]
pub struct LabSpec {
    /// Short name (temporary directory, config's cluster name).
    pub name: String,
    pub servers: usize,
    pub witness: bool,
    pub client: bool,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    /// `check_duplicate` of the floating IP.
    pub check_duplicate: bool,
    /// A `mirror-disk` resource of this mode (`sync`, `async`) first in the group; the
    /// group then runs on the first two servers (the others vote).
    pub mirror: Option<String>,
}

impl LabSpec {
    /// Three servers at Baton's default heartbeat (200 ms / 1 s), no witness.
    pub fn new(name: &str) -> LabSpec {
        LabSpec {
            name: name.into(),
            servers: 3,
            witness: false,
            client: false,
            interval_ms: 200,
            timeout_ms: 1000,
            check_duplicate: false,
            mirror: None,
        }
    }
}

/// A nftables table installed in one namespace.
struct Rules {
    ns: String,
    table: String,
}

/// Namespaces, agents, faults; see the module documentation.
pub struct Lab {
    pub spec: LabSpec,
    pub bin: PathBuf,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub key: PathBuf,
    token: String,
    sw: String,
    /// Namespace of each server.
    pub nodes: Vec<String>,
    pub witness_ns: Option<String>,
    pub client_ns: Option<String>,
    agents: Vec<Option<Child>>,
    witness: Option<Child>,
    apps: Vec<Option<Child>>,
    keepalived: Vec<Option<Child>>,
    rules: Vec<Rules>,
    rule_serial: u32,
    netem: Vec<(String, String)>,
    hub: Option<impair::Hub>,
    pub t0: Instant,
    /// Wall clock (ms) at `t0`.
    pub unix0: u64,
    notes: Arc<Mutex<Vec<(Ms, String)>>>,
    pub observer: Option<Observer>,
    /// More addresses for the observer to watch (set before [`Lab::observe`]).
    pub observe_also: Vec<Ipv4Addr>,
    /// Lab times at which a server crashed with its resources removed.
    pub crashes: BTreeMap<usize, Vec<Ms>>,
    pub exempt: Exemptions,
    quiet: bool,
    // Dropped after `Drop::drop`, in this order: the namespaces, then the files.
    netns: Netns,
    tmp: Option<tempfile::TempDir>,
}

impl Lab {
    /// Build the namespaces, write the key and the configuration. Agents are not
    /// started.
    pub fn build(spec: LabSpec) -> Result<Lab, String> {
        if let Some(why) = unavailable() {
            return Err(why);
        }
        if spec.servers < 2 || spec.servers > 9 {
            return Err(format!("the lab runs 2 to 9 servers, not {}", spec.servers));
        }
        let bin = crate::bin::baton_bin();
        if spec.witness && !witness_available(&bin) {
            return Err("`baton witness` is not available in this build".into());
        }
        let tmp = tempfile::Builder::new()
            .prefix(&format!("baton-lab-{}-", spec.name))
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        let dir = tmp.path().to_path_buf();
        // Unique per lab: several labs of one process may exist one after the other
        // (or, in tests, at once).
        static SERIAL: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let k = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prefix = format!("bl{}x{k}-", std::process::id());
        let t0 = Instant::now();
        let mut lab = Lab {
            bin,
            config: dir.join("baton.toml"),
            key: dir.join("cluster.key"),
            token: String::new(),
            sw: format!("{prefix}sw"),
            nodes: (1..=spec.servers)
                .map(|i| format!("{prefix}n{i}"))
                .collect(),
            witness_ns: spec.witness.then(|| format!("{prefix}wt")),
            client_ns: spec.client.then(|| format!("{prefix}cl")),
            agents: (0..spec.servers).map(|_| None).collect(),
            witness: None,
            apps: (0..spec.servers).map(|_| None).collect(),
            keepalived: (0..spec.servers).map(|_| None).collect(),
            rules: Vec::new(),
            rule_serial: 0,
            netem: Vec::new(),
            hub: None,
            t0,
            unix0: unix_ms(),
            notes: Arc::new(Mutex::new(Vec::new())),
            observer: None,
            observe_also: Vec::new(),
            crashes: BTreeMap::new(),
            exempt: Exemptions::default(),
            quiet: std::env::var_os("BATON_LAB_QUIET").is_some(),
            netns: Netns::new(),
            dir,
            tmp: Some(tmp),
            spec,
        };
        // A namespace left over by an earlier run of the same pid (unlikely) is reused
        // by name and would fail `ip netns add`: say so clearly.
        let sw = lab.sw.clone();
        lab.netns
            .add(&sw)
            .map_err(|e| format!("cannot create a network namespace: {e}"))?;
        for br in ["bra", "brb", "brm"] {
            netns::ip(&["-n", &sw, "link", "add", br, "type", "bridge"])?;
            netns::ip(&["-n", &sw, "link", "set", br, "up"])?;
        }
        for i in 0..lab.spec.servers {
            let n = lab.nodes[i].clone();
            lab.netns.add(&n)?;
            for (net, dev, br, a) in [
                ("a", "ea", "bra", node_addr(NET_A, i)),
                ("b", "eb", "brb", node_addr(NET_B, i)),
                ("m", "em", "brm", node_addr(NET_M, i)),
            ] {
                lab.plug(&n, dev, &format!("n{}{net}", i + 1), br, a)?;
            }
        }
        if let Some(w) = lab.witness_ns.clone() {
            lab.netns.add(&w)?;
            lab.plug(&w, "ew", "wta", "bra", WITNESS_ADDR)?;
        }
        if let Some(c) = lab.client_ns.clone() {
            lab.netns.add(&c)?;
            lab.plug(&c, "ec", "cla", "bra", CLIENT_ADDR)?;
        }
        let baton = lab.baton();
        baton.keygen(&lab.key)?;
        lab.token = api_token(&lab.key);
        std::fs::write(&lab.config, lab.config_text())
            .map_err(|e| format!("cannot write the configuration: {e}"))?;
        baton
            .check_config()
            .map_err(|e| format!("the lab's configuration is rejected: {e}"))?;
        Ok(lab)
    }

    /// A veth pair: `dev` (with `addr`/24, up) in namespace `ns`, its peer `port`
    /// attached to bridge `br` in the switch namespace.
    fn plug(
        &self,
        ns: &str,
        dev: &str,
        port: &str,
        br: &str,
        addr: Ipv4Addr,
    ) -> Result<(), String> {
        let sw = self.sw.as_str();
        netns::ip(&[
            "-n", sw, "link", "add", port, "type", "veth", "peer", "name", dev, "netns", ns,
        ])?;
        netns::ip(&["-n", sw, "link", "set", port, "master", br, "up"])?;
        netns::ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
        netns::ip(&["-n", ns, "link", "set", dev, "up"])?;
        Ok(())
    }

    /// The client of the lab's configuration (run it in a namespace with
    /// [`Baton::in_netns`]).
    pub fn baton(&self) -> Baton {
        Baton::new(&self.bin, &self.config)
    }

    pub fn config_text(&self) -> String {
        let s = &self.spec;
        let mut c = ConfigText::new(
            &format!("the baton fault lab ({})", s.name),
            &format!("lab-{}", s.name),
        )
        .heartbeat(
            &format!("{}ms", s.interval_ms),
            &format!("{}ms", s.timeout_ms),
            "",
        )
        .host_safe(&self.dir, "10s", "");
        for i in 0..s.servers {
            c = c.server(
                &server(i),
                None,
                &[
                    format!("{}:{HB_PORT}", node_addr(NET_A, i)),
                    format!("{}:{HB_PORT}", node_addr(NET_B, i)),
                ],
                &format!("{}:{API_PORT}", node_addr(NET_M, i)),
            );
        }
        if s.witness {
            c = c.push(&format!(
                "\n[quorum]\nwitness = {{ kind = \"http\", url = \"http://{WITNESS_ADDR}:{WITNESS_PORT}\" }}\n"
            ));
        }
        let servers: Vec<String> = if s.mirror.is_some() {
            (0..2).map(server).collect()
        } else {
            (0..s.servers).map(server).collect()
        };
        c.group(GROUP, &servers)
            .push(&self.mirror_text())
            .push(&format!(
                r#"
[[group.resource]]
kind = "floating-ip"
name = "vip"
ip = "{VIP}"
prefix = 24
device = "ea"
check_duplicate = {dad}
arp_count = 3
activate_timeout = "5s"
deactivate_timeout = "5s"
"#,
                dad = s.check_duplicate,
            ))
            .marker_app(&self.dir, "vip", 100_000)
            .build()
    }

    /// The `mirror-disk` resource of the lab's group (empty without one): stores and NBD
    /// sockets in the lab's directory, mirror traffic on network b.
    fn mirror_text(&self) -> String {
        let Some(mode) = &self.spec.mirror else {
            return String::new();
        };
        let mut t = format!(
            r#"
[[group.resource]]
kind = "mirror-disk"
name = "{MIRROR}"
size = "16MiB"
mode = "{mode}"
interconnect = 1
port = {MIRROR_PORT}
ack_timeout = "1s"
connect_timeout = "2s"
activate_timeout = "20s"
deactivate_timeout = "20s"
"#
        );
        for i in 0..2 {
            t.push_str(&format!(
                "[group.resource.server.{}]\ndevice = \"{}\"\nnbd_socket = \"{}\"\n",
                server(i),
                self.mirror_store(i).display(),
                self.mirror_socket(i).display()
            ));
        }
        t
    }

    /// Server `i`'s backing store of the lab's mirror disk.
    pub fn mirror_store(&self, i: usize) -> PathBuf {
        self.dir.join(format!("disk-{}.img", server(i)))
    }

    /// The NBD socket server `i` serves the lab's mirror disk on while active.
    pub fn mirror_socket(&self, i: usize) -> PathBuf {
        self.dir.join(format!("nbd-{}.sock", server(i)))
    }

    /// Milliseconds since the lab started.
    pub fn now(&self) -> Ms {
        self.t0.elapsed().as_secs_f64() * 1000.0
    }

    /// Record `what` on the timeline (and print it unless quiet).
    pub fn note(&self, what: &str) {
        let at = self.now();
        if !self.quiet {
            println!("[{:>8.2} s] {what}", at / 1000.0);
        }
        self.notes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((at, format!("lab     {what}")));
    }

    pub fn notes(&self) -> Vec<(Ms, String)> {
        self.notes.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}.log", server(i)))
    }

    /// The line that opens each run of a process in its log.
    fn log_header(&self) -> String {
        format!("=== lab: starting at {:.2} s ===", self.now() / 1000.0)
    }

    fn open_log(&self, name: &str) -> Result<(std::fs::File, std::fs::File), String> {
        client::open_log(&self.dir.join(name), &self.log_header())
    }

    /// Start the observer over every server (before the agents, to see everything).
    pub fn observe(&mut self) -> Result<(), String> {
        let targets = (0..self.spec.servers)
            .map(|i| Target {
                server: server(i),
                netns: self.nodes[i].clone(),
                api: SocketAddr::from((node_addr(NET_M, i), API_PORT)),
                addrs: [VIP, KA_VIP]
                    .into_iter()
                    .chain(self.observe_also.iter().copied())
                    .collect(),
            })
            .collect();
        self.observer = Some(Observer::start(
            targets,
            self.token.clone(),
            GROUP.into(),
            self.t0,
        )?);
        Ok(())
    }

    /// Start server `i`'s agent (same configuration and state directory every time).
    pub fn start_agent(&mut self, i: usize) -> Result<(), String> {
        if self.agents[i].is_some() {
            return Err(format!("agent {} is already running", server(i)));
        }
        let child = self
            .baton()
            .in_netns(&self.nodes[i])
            .agent(
                &server(i),
                &self.config,
                &self.dir.join("state").join(server(i)),
                &self.log_path(i),
                &self.log_header(),
            )?
            .env("NO_COLOR", "1")
            // A transient systemd unit would run the mirror process outside the
            // server's namespace.
            .env("BATON_MIRROR_NO_SYSTEMD", "1")
            .spawn()
            .map_err(|e| format!("cannot start agent {}: {e}", server(i)))?;
        self.agents[i] = Some(child);
        Ok(())
    }

    /// Start every agent, and the service app of every node.
    pub fn start_all(&mut self) -> Result<(), String> {
        for i in 0..self.spec.servers {
            if self.apps[i].is_none() {
                self.start_app(i)?;
            }
        }
        for i in 0..self.spec.servers {
            self.start_agent(i)?;
        }
        Ok(())
    }

    /// `baton demo-app --listen 0.0.0.0:8080 --name node-N` in server `i`'s namespace.
    pub fn start_app(&mut self, i: usize) -> Result<(), String> {
        let (out, err) = self.open_log(&format!("demo-app-{}.log", server(i)))?;
        let child = netns::command_in(&self.nodes[i], &self.bin)
            .args([
                "demo-app",
                "--listen",
                &format!("0.0.0.0:{APP_PORT}"),
                "--name",
            ])
            .arg(server(i))
            .env("BATON_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start the demo app on {}: {e}", server(i)))?;
        self.apps[i] = Some(child);
        Ok(())
    }

    /// Start `baton witness` in the witness namespace.
    pub fn start_witness(&mut self) -> Result<(), String> {
        let Some(ns) = self.witness_ns.clone() else {
            return Err("this lab has no witness namespace".into());
        };
        let (out, err) = self.open_log("witness.log")?;
        let mut cmd = netns::command_in(&ns, &self.bin);
        cmd.args([
            "witness",
            "--listen",
            &format!("{WITNESS_ADDR}:{WITNESS_PORT}"),
        ])
        .arg("--key-file")
        .arg(&self.key);
        // A restarted witness grants nothing for a quiet time that must cover the
        // longest lease it may have granted before; the lab's leases are a few
        // heartbeat timeouts at most, so a minute (the default) is not needed.
        if self.witness_takes("--startup-quiet") {
            cmd.args([
                "--startup-quiet",
                &format!("{}ms", (3 * self.spec.timeout_ms).max(2000)),
            ]);
        }
        // The epochs it acknowledged survive a restart of the witness, as in production.
        if self.witness_takes("--state-file") {
            cmd.arg("--state-file")
                .arg(self.dir.join("witness-state.json"));
        }
        let child = cmd
            .env("BATON_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start the witness: {e}"))?;
        self.witness = Some(child);
        Ok(())
    }

    /// Does `baton witness` take `flag` (an older binary may not)?
    fn witness_takes(&self, flag: &str) -> bool {
        Command::new(&self.bin)
            .args(["witness", "--help"])
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(flag))
    }

    /// SIGKILL the witness.
    pub fn kill_witness(&mut self) {
        if let Some(mut c) = self.witness.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn agent_running(&mut self, i: usize) -> bool {
        self.agents[i]
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn agent_pid(&self, i: usize) -> Result<Pid, String> {
        let c = self.agents[i]
            .as_ref()
            .ok_or_else(|| format!("agent {} is not running", server(i)))?;
        Ok(Pid::from_raw(
            i32::try_from(c.id()).map_err(|_| "pid out of range".to_string())?,
        ))
    }

    /// Send `sig` to server `i`'s agent; after SIGKILL, reap it.
    pub fn signal(&mut self, i: usize, sig: Signal) -> Result<(), String> {
        let pid = self.agent_pid(i)?;
        kill(pid, sig).map_err(|e| format!("cannot send {sig} to agent {}: {e}", server(i)))?;
        if sig == Signal::SIGKILL {
            if let Some(mut c) = self.agents[i].take() {
                let _ = c.wait();
            }
        }
        Ok(())
    }

    /// SIGTERM server `i`'s agent and wait until it exits (it deactivates its groups).
    pub fn stop_agent(&mut self, i: usize, timeout: Duration) -> Result<(), String> {
        self.signal(i, Signal::SIGTERM)?;
        self.wait_exited(i, timeout)
    }

    /// Wait until server `i`'s agent has exited (after a signal).
    pub fn wait_exited(&mut self, i: usize, timeout: Duration) -> Result<(), String> {
        let start = Instant::now();
        while self.agent_running(i) {
            if start.elapsed() > timeout {
                return Err(format!(
                    "agent {} did not exit within {timeout:?}",
                    server(i)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.agents[i] = None;
        Ok(())
    }

    /// The server dies: its agent is SIGKILLed, and what it held goes with it (the
    /// marker app is killed, the VIP removed), as when a machine loses power. Returns
    /// the lab time of the crash.
    pub fn crash(&mut self, i: usize) -> Result<Ms, String> {
        self.signal(i, Signal::SIGKILL)?;
        let at = self.now();
        self.crash_cleanup(i);
        self.crashes.entry(i).or_default().push(at);
        Ok(at)
    }

    /// Remove what a dead agent left behind on server `i`: the marker app, the mirror
    /// process and the VIP.
    fn crash_cleanup(&self, i: usize) {
        let pid_file = self.dir.join(format!("app-{}.pid", server(i)));
        if let Ok(text) = std::fs::read_to_string(&pid_file) {
            if let Ok(pid) = text.trim().parse::<i32>() {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = std::fs::remove_file(&pid_file);
        }
        // Gratuitous ARP announcements still being sent for the dead agent.
        if let Ok(text) = netns::ip(&["netns", "pids", &self.nodes[i]]) {
            for pid in text
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmd = String::from_utf8_lossy(&cmd);
                // The mirror process runs apart from the agent (it survives the agent's
                // restarts); a machine that dies takes it along.
                if cmd.starts_with("arping") || cmd.contains("\0mirror-daemon\0") {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
        let _ = self.remove_addr(i, VIP);
    }

    /// Remove `addr` from server `i`'s `ea` if it is there.
    pub fn remove_addr(&self, i: usize, addr: Ipv4Addr) -> Result<(), String> {
        match netns::device_with(&self.nodes[i], addr)? {
            Some(dev) => netns::ip(&[
                "-n",
                &self.nodes[i],
                "addr",
                "del",
                &format!("{addr}/24"),
                "dev",
                &dev,
            ])
            .map(|_| ()),
            None => Ok(()),
        }
    }

    /// Run an nftables script in namespace `ns` as a table of its own; returns its name.
    fn add_rules(&mut self, ns: &str, chains: &str) -> Result<String, String> {
        self.rule_serial += 1;
        let table = format!("lab_{}", self.rule_serial);
        let script = format!("table inet {table} {{\n{chains}}}\n");
        let mut child = netns::command_in(ns, "nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run nft: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .map_err(|e| format!("cannot write to nft: {e}"))?;
        }
        let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "nft rejected the rules in {ns}: {}\n{script}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        self.rules.push(Rules {
            ns: ns.to_string(),
            table: table.clone(),
        });
        Ok(table)
    }

    /// Cut one interconnect path (`"a"` or `"b"`) of server `i`: every packet in and
    /// out of that interface is dropped.
    pub fn cut_path(&mut self, i: usize, path: &str) -> Result<(), String> {
        let dev = format!("e{path}");
        let ns = self.nodes[i].clone();
        self.add_rules(
            &ns,
            &format!(
                "  chain in {{ type filter hook input priority -10; policy accept; iifname \"{dev}\" drop; }}\n  chain out {{ type filter hook output priority -10; policy accept; oifname \"{dev}\" drop; }}\n"
            ),
        )?;
        self.note(&format!("cut path {path} of {}", server(i)));
        Ok(())
    }

    /// Interconnect addresses of server `j`.
    fn ic_addrs(j: usize) -> String {
        format!("{}, {}", node_addr(NET_A, j), node_addr(NET_B, j))
    }

    /// Cut every interconnect path between servers `i` and `j` (both directions; the
    /// rules live in `i`'s namespace).
    pub fn cut_between(&mut self, i: usize, j: usize) -> Result<(), String> {
        let ns = self.nodes[i].clone();
        let peers = Self::ic_addrs(j);
        self.add_rules(
            &ns,
            &format!(
                "  chain in {{ type filter hook input priority -10; policy accept; ip saddr {{ {peers} }} drop; }}\n  chain out {{ type filter hook output priority -10; policy accept; ip daddr {{ {peers} }} drop; }}\n"
            ),
        )?;
        self.note(&format!(
            "cut every path between {} and {}",
            server(i),
            server(j)
        ));
        Ok(())
    }

    /// Split the servers into `sides`: every path between servers of different sides
    /// is cut (the witness and the client stay reachable from every side).
    pub fn partition(&mut self, sides: &[Vec<usize>]) -> Result<(), String> {
        for (a, sa) in sides.iter().enumerate() {
            for sb in &sides[a + 1..] {
                for &i in sa {
                    for &j in sb {
                        self.cut_between(i, j)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Asymmetric partition: nothing server `i` sends on the interconnects reaches
    /// its peers, while it still hears them.
    pub fn mute(&mut self, i: usize) -> Result<(), String> {
        let ns = self.nodes[i].clone();
        let peers: Vec<String> = (0..self.spec.servers)
            .filter(|j| *j != i)
            .map(Self::ic_addrs)
            .collect();
        self.add_rules(
            &ns,
            &format!(
                "  chain out {{ type filter hook output priority -10; policy accept; ip daddr {{ {} }} drop; }}\n",
                peers.join(", ")
            ),
        )?;
        self.note(&format!(
            "asymmetric partition: {} hears its peers, they do not hear it",
            server(i)
        ));
        Ok(())
    }

    /// Remove every cut.
    pub fn heal(&mut self) -> Result<(), String> {
        for r in std::mem::take(&mut self.rules) {
            let out = netns::command_in(&r.ns, "nft")
                .args(["delete", "table", "inet", &r.table])
                .output()
                .map_err(|e| format!("cannot run nft: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "cannot delete nft table {} in {}: {}",
                    r.table,
                    r.ns,
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        self.note("healed: every cut removed");
        Ok(())
    }

    /// Does this kernel have `sch_netem`? (Tried on the switch namespace's loopback.)
    pub fn have_netem(&self) -> bool {
        let ok = Command::new("tc")
            .args([
                "-n", &self.sw, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
            ])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            let _ = Command::new("tc")
                .args(["-n", &self.sw, "qdisc", "del", "dev", "lo", "root"])
                .output();
        }
        ok
    }

    /// Loss and delay on both interconnects of every server: `loss_pct` % loss,
    /// `delay_ms` ± `jitter_ms` delay, each packet impaired once. With `tc netem` on
    /// each server's `ea` and `eb` where the kernel has it, else through the userspace
    /// hub of [`impair`].
    pub fn netem_all(
        &mut self,
        loss_pct: u32,
        delay_ms: u32,
        jitter_ms: u32,
    ) -> Result<(), String> {
        let how = if self.have_netem() {
            for i in 0..self.spec.servers {
                for dev in ["ea", "eb"] {
                    let ns = self.nodes[i].clone();
                    let out = Command::new("tc")
                        .args(["-n", &ns, "qdisc", "replace", "dev", dev, "root", "netem"])
                        .args(["loss", &format!("{loss_pct}%")])
                        .args(["delay", &format!("{delay_ms}ms"), &format!("{jitter_ms}ms")])
                        .output()
                        .map_err(|e| format!("cannot run tc: {e}"))?;
                    if !out.status.success() {
                        return Err(format!(
                            "tc netem on {dev} of {}: {}",
                            server(i),
                            String::from_utf8_lossy(&out.stderr).trim()
                        ));
                    }
                    self.netem.push((ns, dev.to_string()));
                }
            }
            "tc netem"
        } else {
            let ports = (0..self.spec.servers)
                .flat_map(|i| {
                    ["a", "b"].map(|net| impair::Port {
                        name: format!("n{}{net}", i + 1),
                        bridge: format!("br{net}"),
                    })
                })
                .collect();
            self.hub = Some(impair::Hub::start(
                &self.sw, ports, loss_pct, delay_ms, jitter_ms,
            )?);
            "the lab's userspace hub (this kernel has no sch_netem)"
        };
        self.note(&format!(
            "impaired every interconnect: {loss_pct}% loss, delay {delay_ms} ms ± {jitter_ms} ms, with {how}"
        ));
        Ok(())
    }

    /// Remove the loss and delay.
    pub fn netem_clear(&mut self) -> Result<(), String> {
        for (ns, dev) in std::mem::take(&mut self.netem) {
            let out = Command::new("tc")
                .args(["-n", &ns, "qdisc", "del", "dev", &dev, "root"])
                .output()
                .map_err(|e| format!("cannot run tc: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "tc qdisc del on {dev} in {ns}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        if let Some(h) = self.hub.take() {
            let st = h.stop()?;
            self.note(&format!(
                "hub stopped: {} frames, {} dropped ({:.1}%), {} copies sent",
                st.frames,
                st.dropped,
                100.0 * st.dropped as f64 / st.frames.max(1) as f64,
                st.sent
            ));
        }
        self.note("impairment removed");
        Ok(())
    }

    /// The latest status of server `i` (at most 1 s old), from the observer.
    pub fn status(&self, i: usize) -> Option<AgentStatus> {
        self.observer
            .as_ref()
            .and_then(|o| o.fresh(i, self.now(), 1000.0))
    }

    /// Servers that report the group online on themselves (fresh answers only).
    pub fn online(&self) -> Vec<usize> {
        (0..self.spec.servers)
            .filter(|&i| {
                self.status(i)
                    .is_some_and(|s| s.local_state(GROUP) == "online")
            })
            .collect()
    }

    /// The one server every answering agent agrees holds the group, with its epoch.
    pub fn sole_owner(&self) -> Result<(usize, u64), String> {
        let sts: Vec<AgentStatus> = (0..self.spec.servers)
            .filter_map(|i| self.status(i))
            .collect();
        let online: Vec<&AgentStatus> = sts
            .iter()
            .filter(|s| s.local_state(GROUP) == "online")
            .collect();
        if online.len() != 1 {
            return Err(self.summary());
        }
        let owner = online[0].server.clone();
        let epoch = online[0].group(GROUP).epoch;
        let agree = sts.iter().all(|s| {
            let g = s.group(GROUP);
            g.active_on.as_deref() == Some(owner.as_str())
        });
        if !agree {
            return Err(self.summary());
        }
        let i = (0..self.spec.servers)
            .find(|i| server(*i) == owner)
            .ok_or_else(|| format!("unknown server {owner}"))?;
        Ok((i, epoch))
    }

    /// One line per server, for messages.
    pub fn summary(&self) -> String {
        (0..self.spec.servers)
            .map(|i| match self.status(i) {
                None => format!("{}: no fresh status", server(i)),
                Some(s) => {
                    let g = s.group(GROUP);
                    let peers: Vec<String> = s
                        .servers
                        .iter()
                        .filter(|x| !x.is_self)
                        .map(|x| {
                            let p: String = x
                                .paths
                                .iter()
                                .map(|p| if p.up { '+' } else { '-' })
                                .collect();
                            format!("{}={}[{p}]", x.name, if x.up { "up" } else { "DOWN" })
                        })
                        .collect();
                    format!(
                        "{}: local {} | group on {} epoch {} | quorum {} ready {} | {}",
                        s.server,
                        s.local_state(GROUP),
                        g.active_on.as_deref().unwrap_or("-"),
                        g.epoch,
                        s.quorum,
                        s.ready,
                        peers.join(" ")
                    )
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Poll `f` every 50 ms until it returns `Ok`, or fail after `timeout`.
    pub fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&Lab) -> Result<T, String>,
    ) -> Result<T, String> {
        let start = Instant::now();
        loop {
            match f(self) {
                Ok(v) => return Ok(v),
                Err(why) if start.elapsed() > timeout => {
                    return Err(format!(
                        "timed out after {:.1} s waiting until {what}; last state: {why}",
                        start.elapsed().as_secs_f64()
                    ))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Wait until the group is online on exactly one server (optionally other than
    /// `not`), as every answering agent agrees.
    pub fn wait_owner(
        &self,
        not: Option<usize>,
        timeout: Duration,
    ) -> Result<(usize, u64), String> {
        let what = match not {
            Some(n) => format!("{GROUP} is online on one server other than {}", server(n)),
            None => format!("{GROUP} is online on one server"),
        };
        self.wait(&what, timeout, |lab| match lab.sole_owner()? {
            (o, _) if Some(o) == not => Err(lab.summary()),
            x => Ok(x),
        })
    }

    /// Wait until every listed server's agent answers and sees every other listed
    /// server up on both paths, ready and with quorum.
    pub fn wait_converged(&self, timeout: Duration) -> Result<(), String> {
        self.wait(
            "every server sees every server up, ready, with quorum",
            timeout,
            |lab| {
                for i in 0..lab.spec.servers {
                    let s = lab.status(i).ok_or_else(|| lab.summary())?;
                    let ok = s.ready
                        && s.quorum
                        && s.servers
                            .iter()
                            .all(|x| x.up && x.ready && x.paths.iter().all(|p| p.up));
                    if !ok {
                        return Err(lab.summary());
                    }
                }
                Ok(())
            },
        )
    }

    /// Hold for `d`, noting it.
    pub fn hold(&self, d: Duration, why: &str) {
        self.note(&format!("holding {:.1} s: {why}", d.as_secs_f64()));
        std::thread::sleep(d);
    }

    /// Stop the observer and return what it saw.
    pub fn stop_observer(&mut self) -> Observed {
        self.observer.take().map(Observer::stop).unwrap_or_default()
    }

    /// Events of server `i` seen so far by the observer.
    pub fn events(&self, i: usize) -> Vec<crate::model::Event> {
        self.observer
            .as_ref()
            .map(|o| o.log(i).events)
            .unwrap_or_default()
    }

    /// Lab time of an event.
    pub fn event_ms(&self, e: &crate::model::Event) -> Ms {
        Observed::event_ms(e, self.unix0)
    }

    /// The agents' WARN and ERROR log lines.
    pub fn agent_warnings(&self) -> Vec<String> {
        (0..self.spec.servers)
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

    /// The last `n` lines of each agent's log.
    pub fn log_tails(&self, n: usize) -> String {
        (0..self.spec.servers)
            .map(|i| {
                format!(
                    "--- tail of {} ---\n{}",
                    server(i),
                    client::tail(&self.log_path(i), n)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Keep the lab's directory (logs, config) after the lab is dropped.
    pub fn keep_dir(&mut self) -> PathBuf {
        if let Some(t) = self.tmp.take() {
            let _ = t.keep();
        }
        self.dir.clone()
    }

    // --- keepalived (benchmark) -----------------------------------------------------

    /// Write server `i`'s keepalived configuration: one VRRP instance on `ea` per
    /// `(address, advertisement interval in ms)`, virtual router ids 51, 52, ...
    fn keepalived_conf(&self, i: usize, instances: &[(Ipv4Addr, u64)]) -> Result<PathBuf, String> {
        let prio = 200 - 10 * i;
        let mut text = format!(
            r#"global_defs {{
  router_id {name}
  vrrp_version 3
  script_user root
  enable_script_security
}}
"#,
            name = server(i),
        );
        for (k, (addr, advert_ms)) in instances.iter().enumerate() {
            text.push_str(&format!(
                r#"vrrp_instance lab{k} {{
  state BACKUP
  nopreempt
  interface ea
  virtual_router_id {vrid}
  priority {prio}
  advert_int {adv:.3}
  virtual_ipaddress {{
    {addr}/24 dev ea
  }}
}}
"#,
                vrid = 51 + k,
                adv = *advert_ms as f64 / 1000.0,
            ));
        }
        let p = self.dir.join(format!("keepalived-{}.conf", server(i)));
        std::fs::write(&p, text).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
        Ok(p)
    }

    /// Start keepalived (VRRP only, in the foreground) in server `i`'s namespace, one
    /// VRRP instance for [`KA_VIP`] with advertisement interval `advert_ms`.
    pub fn start_keepalived(&mut self, i: usize, advert_ms: u64) -> Result<(), String> {
        self.start_keepalived_instances(i, &[(KA_VIP, advert_ms)])
    }

    /// Start keepalived in server `i`'s namespace with one VRRP instance per
    /// `(address, advertisement interval in ms)` (the loss-proof search runs several
    /// intervals side by side; [`Lab::observe_also`] makes the observer watch their
    /// addresses).
    pub fn start_keepalived_instances(
        &mut self,
        i: usize,
        instances: &[(Ipv4Addr, u64)],
    ) -> Result<(), String> {
        let conf = self.keepalived_conf(i, instances)?;
        let n = server(i);
        let (out, err) = self.open_log(&format!("keepalived-{n}.log"))?;
        let child = netns::command_in(&self.nodes[i], "keepalived")
            .args(["--dont-fork", "--log-console", "--vrrp", "--no-syslog"])
            .arg("--use-file")
            .arg(&conf)
            .arg("--pid")
            .arg(self.dir.join(format!("keepalived-{n}.pid")))
            .arg("--vrrp_pid")
            .arg(self.dir.join(format!("keepalived-vrrp-{n}.pid")))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start keepalived on {n}: {e}"))?;
        self.keepalived[i] = Some(child);
        Ok(())
    }

    /// SIGKILL server `i`'s keepalived (parent and VRRP child) and remove its VIP, as
    /// when the machine dies. Returns the lab time.
    pub fn crash_keepalived(&mut self, i: usize) -> Result<Ms, String> {
        let n = server(i);
        let mut c = self.keepalived[i]
            .take()
            .ok_or_else(|| format!("keepalived is not running on {n}"))?;
        let parent = Pid::from_raw(i32::try_from(c.id()).map_err(|_| "pid out of range")?);
        // Freeze the parent first: it would respawn a dead VRRP child, and a child
        // whose parent dies first gets SIGTERM (its parent-death signal) and leaves
        // gracefully (a priority-0 advertisement), which is not a machine dying.
        let _ = kill(parent, Signal::SIGSTOP);
        let children = self.children_of(i, c.id());
        for p in &children {
            let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
        }
        let _ = kill(parent, Signal::SIGKILL);
        let at = self.now();
        let _ = c.wait();
        // As after a reboot: no pid files (the killed child may linger as a zombie
        // nobody reaps, and keepalived would take it for a running daemon).
        for f in [
            format!("keepalived-{n}.pid"),
            format!("keepalived-vrrp-{n}.pid"),
        ] {
            let _ = std::fs::remove_file(self.dir.join(f));
        }
        self.remove_addr(i, KA_VIP)?;
        Ok(at)
    }

    /// Processes in server `i`'s namespace whose parent is `ppid`.
    fn children_of(&self, i: usize, ppid: u32) -> Vec<i32> {
        let Ok(text) = netns::ip(&["netns", "pids", &self.nodes[i]]) else {
            return Vec::new();
        };
        text.split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .ok()
                    .and_then(|s| {
                        s.rsplit(')')
                            .next()
                            .and_then(|t| t.split_whitespace().nth(1).map(String::from))
                    })
                    .is_some_and(|pp| pp == ppid.to_string())
            })
            .collect()
    }

    /// Is keepalived's VRRP process running on server `i`?
    pub fn keepalived_running(&mut self, i: usize) -> bool {
        let Some(c) = self.keepalived[i].as_mut() else {
            return false;
        };
        if !matches!(c.try_wait(), Ok(None)) {
            return false;
        }
        let id = c.id();
        !self.children_of(i, id).is_empty()
    }

    pub fn stop_keepalived(&mut self) {
        for i in 0..self.spec.servers {
            if self.keepalived[i].is_some() {
                let _ = self.crash_keepalived(i);
            }
        }
    }

    /// Servers holding `addr` right now (`ip -j addr`).
    pub fn holders(&self, addr: Ipv4Addr) -> Result<Vec<usize>, String> {
        let mut v = Vec::new();
        for i in 0..self.spec.servers {
            if netns::device_with(&self.nodes[i], addr)?.is_some() {
                v.push(i);
            }
        }
        Ok(v)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(o) = self.observer.take() {
            drop(o);
        }
        for c in self
            .agents
            .iter_mut()
            .chain(self.apps.iter_mut())
            .chain(self.keepalived.iter_mut())
            .chain(std::iter::once(&mut self.witness))
            .filter_map(Option::take)
        {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
        // `netns` (dropped next) kills everything left inside the namespaces (the
        // marker apps, arping, keepalived's VRRP child) and deletes them.
    }
}
