//! A cluster of real agents on `127.0.N.x`.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sha2::Sha256;

use crate::client::{tail, Baton};
use crate::config::ConfigText;
use crate::http::{self, Response};
use crate::model::{Claim, ClusterStatus};
use crate::wait_until;
use crate::watch::{Report, Watcher};

/// The group every scenario runs.
pub const GROUP: &str = "web";
/// The optional `exec` monitor of the group.
pub const MONITOR: &str = "app-check";

/// The `app-check` monitor: fails on a server while `fail-SERVER` exists.
#[derive(Debug, Clone)]
pub struct MonitorSpec {
    pub interval: String,
    pub retries: u32,
    pub restart_retries: u32,
    pub failover_retries: u32,
}

impl Default for MonitorSpec {
    fn default() -> Self {
        MonitorSpec {
            interval: "200ms".into(),
            retries: 0,
            restart_retries: 2,
            failover_retries: 1,
        }
    }
}

/// A change applied to the configuration text.
pub type EditConfig = fn(&str) -> String;

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Short name, used in the cluster name and messages.
    pub name: String,
    /// Addresses are `127.0.NET.x`; every scenario uses its own.
    pub net: u8,
    pub servers: usize,
    /// Interconnect paths per server.
    pub paths: usize,
    pub monitor: Option<MonitorSpec>,
    /// One server runs a configuration changed by this function (digest mismatch); it
    /// is started after the others hear each other.
    pub variant: Option<(String, EditConfig)>,
    /// Appended to the configuration (sections the scenario needs, e.g. `[notify.sns]`).
    pub extra_config: String,
    /// Extra environment of every agent process (e.g. AWS test credentials).
    pub env: Vec<(String, String)>,
    /// Extra keys of the `[api]` table (which the harness writes: `socket_dir`).
    pub api_config: String,
    /// Extra keys of the `[heartbeat]` table (which the harness writes).
    pub heartbeat_config: String,
    /// The API serves HTTPS: `baton keygen --tls DIR/tls` before the agents start, and
    /// `[api] tls_*` pointing there (the harness then waits for the API with the CLI).
    pub tls: bool,
    /// Every server runs its own copy of the configuration (`DIR/baton-SERVER.toml`), as
    /// on separate machines (`baton config push` writes each server's file).
    pub own_configs: bool,
}

impl ClusterSpec {
    /// Three servers, two paths, no monitor.
    pub fn new(name: &str, net: u8) -> ClusterSpec {
        ClusterSpec {
            name: name.into(),
            net,
            servers: 3,
            paths: 2,
            monitor: None,
            variant: None,
            extra_config: String::new(),
            env: Vec::new(),
            api_config: String::new(),
            heartbeat_config: String::new(),
            tls: false,
            own_configs: false,
        }
    }

    pub fn with_monitor(mut self, m: MonitorSpec) -> ClusterSpec {
        self.monitor = Some(m);
        self
    }

    pub fn with_variant(mut self, server: &str, f: EditConfig) -> ClusterSpec {
        self.variant = Some((server.into(), f));
        self
    }
}

/// One server of the cluster.
pub struct Node {
    pub name: String,
    pub api: SocketAddr,
    /// Heartbeat address on each interconnect path.
    pub interconnects: Vec<SocketAddr>,
    /// The configuration file this server's agent runs.
    pub config: PathBuf,
    pub state_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

/// A running cluster; see the crate documentation. It is a [`Baton`] client of its
/// common configuration file (`bin`, `config`, `ctl`, `status`, `alerts`, ...).
pub struct Cluster {
    pub spec: ClusterSpec,
    pub dir: PathBuf,
    pub nodes: Vec<Node>,
    pub port: u16,
    baton: Baton,
    token: String,
    watcher: Option<Watcher>,
    _tmp: tempfile::TempDir,
}

/// `127.0.NET.(10 * (PATH + 1) + SERVER):PORT`.
pub(crate) fn addr(net: u8, path: usize, server: usize, port: u16) -> SocketAddr {
    let host = u8::try_from(10 * (path + 1) + server).expect("too many servers or paths");
    SocketAddr::from((Ipv4Addr::new(127, 0, net, host), port))
}

/// A TCP port `p` (API) with `p + 1` free for UDP (heartbeats) on every address of the
/// block. The start depends on the pid so that two concurrent runs of the suite do not
/// collide.
pub(crate) fn pick_port(net: u8, servers: usize, paths: usize) -> u16 {
    let pid = std::process::id();
    let mut p =
        20_000 + u16::try_from((pid.wrapping_mul(37) + u32::from(net) * 101) % 20_000).unwrap_or(0);
    p &= !1;
    for _ in 0..200 {
        let ok = (1..=servers).all(|s| {
            TcpListener::bind(addr(net, 0, s, p)).is_ok()
                && (0..paths).all(|path| UdpSocket::bind(addr(net, path, s, p + 1)).is_ok())
        });
        if ok {
            return p;
        }
        p = if p >= 39_990 { 20_000 } else { p + 2 };
    }
    panic!("no free port pair found on 127.0.{net}.x");
}

/// The API bearer token: hex HMAC-SHA256(key file content, "baton api token v1").
pub fn api_token(key_file: &Path) -> String {
    let raw = std::fs::read(key_file).expect("cannot read the cluster key");
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(raw.trim_ascii()).expect("HMAC key");
    m.update(b"baton api token v1");
    hex::encode(m.finalize().into_bytes())
}

/// SIGKILL the process named in `pid_file` if it is still the app (`sleep`).
fn kill_pid_file(pid_file: &Path) {
    let Ok(text) = std::fs::read_to_string(pid_file) else {
        return;
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if String::from_utf8_lossy(&cmdline).contains("sleep") {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

impl Cluster {
    /// Write the key and configuration, start every agent, and wait until every API
    /// answers.
    pub fn start(spec: ClusterSpec) -> Cluster {
        let bin = crate::bin::baton_bin();
        let tmp = tempfile::Builder::new()
            .prefix(&format!("baton-it-{}-", spec.name))
            .tempdir()
            .expect("cannot create a temporary directory");
        let dir = tmp.path().to_path_buf();
        std::fs::create_dir_all(dir.join("claim")).expect("mkdir claim");
        let key = dir.join("cluster.key");
        let config = dir.join("baton.toml");
        let baton = Baton::new(&bin, &config);
        baton.keygen(&key).unwrap_or_else(|e| panic!("{e}"));
        let port = pick_port(spec.net, spec.servers, spec.paths);
        // The self-fence's SysRq trigger (a plain file here; see `config_text`).
        std::fs::write(dir.join("sysrq-trigger"), b"").expect("write sysrq-trigger");
        let mut spec = spec;
        if spec.tls {
            let tls = dir.join("tls");
            spec.api_config.push_str(&format!(
                "tls_cert_file = \"{0}/{{server}}.crt\"\ntls_key_file = \"{0}/{{server}}.key\"\ntls_ca_file = \"{0}/ca.crt\"\n",
                tls.display()
            ));
        }
        let text = config_text(&spec, &dir, port);
        std::fs::write(&config, &text).expect("write config");
        if spec.tls {
            let tls = dir.join("tls");
            baton
                .ctl(&["keygen", "--tls", &tls.to_string_lossy()])
                .ok("baton keygen --tls");
        }
        baton
            .check_config()
            .unwrap_or_else(|e| panic!("{e} (of the harness's own configuration)"));
        let mut nodes = Vec::new();
        for i in 1..=spec.servers {
            let name = format!("node-{i}");
            let node_config = match &spec.variant {
                Some((s, f)) if *s == name => {
                    let p = dir.join(format!("baton-{name}.toml"));
                    std::fs::write(&p, f(&text)).expect("write variant config");
                    p
                }
                _ if spec.own_configs => {
                    let p = dir.join(format!("baton-{name}.toml"));
                    std::fs::write(&p, &text).expect("write the server's config");
                    p
                }
                _ => config.clone(),
            };
            nodes.push(Node {
                api: addr(spec.net, 0, i, port),
                interconnects: (0..spec.paths)
                    .map(|p| addr(spec.net, p, i, port + 1))
                    .collect(),
                config: node_config,
                state_dir: dir.join("state").join(&name),
                log: dir.join(format!("{name}.log")),
                name,
                child: None,
            });
        }
        let mut c = Cluster {
            token: api_token(&key),
            spec,
            dir,
            nodes,
            port,
            baton,
            watcher: None,
            _tmp: tmp,
        };
        // A server running a different configuration starts last, once the others hear
        // each other: while only it and one other server are up, their digests tie and
        // the tie rule (the lowest-named server's digest wins) would make the other one
        // refuse for a moment.
        let late = c.spec.variant.as_ref().map(|v| v.0.clone());
        let names: Vec<String> = c.nodes.iter().map(|n| n.name.clone()).collect();
        let early: Vec<String> = names
            .iter()
            .filter(|n| Some(*n) != late.as_ref())
            .cloned()
            .collect();
        for n in &early {
            let i = c.idx(n);
            c.spawn(i);
        }
        for n in &early {
            c.wait_api(n);
        }
        if let Some(late) = late {
            wait_until(
                "the first servers hear each other",
                Duration::from_secs(10),
                || {
                    for n in &early {
                        let st = c.try_status_via(Some(n))?;
                        for m in &early {
                            if !st.local.server_view(m).up {
                                return Err(st.summary(GROUP));
                            }
                        }
                    }
                    Ok(())
                },
            );
            let i = c.idx(&late);
            c.spawn(i);
            c.wait_api(&late);
        }
        c
    }

    fn idx(&self, server: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == server)
            .unwrap_or_else(|| panic!("no server {server} in this cluster"))
    }

    pub fn node(&self, server: &str) -> &Node {
        &self.nodes[self.idx(server)]
    }

    fn spawn(&mut self, i: usize) {
        let n = &self.nodes[i];
        let child = self
            .baton
            .agent(
                &n.name,
                &n.config,
                &n.state_dir,
                &n.log,
                &format!("=== harness: starting agent {} ===", n.name),
            )
            .unwrap_or_else(|e| panic!("{e}"))
            .envs(self.spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start agent {}: {e}", n.name));
        self.nodes[i].child = Some(child);
    }

    /// Wait until the agent of `server` answers its API (panics, with its log, if it
    /// exits instead).
    pub fn wait_api(&mut self, server: &str) {
        let i = self.idx(server);
        let addr = self.nodes[i].api;
        let token = self.token.clone();
        let start = Instant::now();
        loop {
            if let Some(c) = self.nodes[i].child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!(
                        "agent {server} exited with {st} during startup; its log:\n{}",
                        tail(&self.nodes[i].log, 40)
                    );
                }
            }
            let up = if self.spec.tls {
                self.ctl(&["status", "-s", server, "--json"]).code == 0
            } else {
                http::request(
                    addr,
                    "GET",
                    "/v1/status",
                    Some(&token),
                    None,
                    Duration::from_secs(1),
                )
                .is_ok_and(|r| r.status == 200)
            };
            if up {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "agent {server} did not answer on {addr} within 20 s; its log:\n{}",
                tail(&self.nodes[i].log, 40)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The API bearer token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Derive the API token again from `cluster.key` (after a test replaced the key).
    pub fn reload_token(&mut self) {
        self.token = api_token(&self.dir.join("cluster.key"));
    }

    /// Wait until the group is online on exactly one server, as every answering agent
    /// agrees, and that server is `on` (if given). Returns (owner, epoch, status).
    pub fn wait_owner(&self, on: Option<&str>, timeout: Duration) -> (String, u64, ClusterStatus) {
        self.wait_group_owner(GROUP, on, timeout)
    }

    /// A raw API request to `server` with the given bearer token.
    pub fn api(
        &self,
        server: &str,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Response {
        http::request(
            self.node(server).api,
            method,
            path,
            token,
            body,
            Duration::from_secs(3),
        )
        .unwrap_or_else(|e| panic!("API request {method} {path} to {server} failed: {e}"))
    }

    /// Send a signal to `server`'s agent; after SIGKILL, also reap it.
    pub fn kill(&mut self, server: &str, sig: Signal) {
        let i = self.idx(server);
        let Some(child) = self.nodes[i].child.as_mut() else {
            panic!("agent {server} is not running");
        };
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        kill(pid, sig).unwrap_or_else(|e| panic!("cannot signal agent {server}: {e}"));
        if sig == Signal::SIGKILL {
            let _ = child.wait();
            self.nodes[i].child = None;
        }
    }

    /// Is `server`'s agent process alive?
    pub fn is_running(&mut self, server: &str) -> bool {
        let i = self.idx(server);
        match self.nodes[i].child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Wait for `server`'s agent to exit by itself (after SIGTERM).
    pub fn wait_exit(&mut self, server: &str, timeout: Duration) {
        let i = self.idx(server);
        if let Some(c) = self.nodes[i].child.as_mut() {
            let start = Instant::now();
            while matches!(c.try_wait(), Ok(None)) {
                assert!(
                    start.elapsed() < timeout,
                    "agent {server} did not exit within {timeout:?}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.nodes[i].child = None;
    }

    /// Pids of this cluster's mirror processes (`baton mirror-daemon`), of one server or
    /// of all.
    pub fn mirror_pids(&self, server: Option<&str>) -> Vec<i32> {
        let dir = self.dir.to_string_lossy().to_string();
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir("/proc") else {
            return out;
        };
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let args: Vec<String> = raw
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).to_string())
                .collect();
            if !args.iter().any(|a| a == "mirror-daemon") || !args.iter().any(|a| a.contains(&dir))
            {
                continue;
            }
            if let Some(s) = server {
                let named = args.windows(2).any(|w| w[0] == "--server" && w[1] == s);
                if !named {
                    continue;
                }
            }
            out.push(pid);
        }
        out
    }

    /// Start `server`'s agent again (same configuration and state directory) and wait for
    /// its API.
    pub fn restart(&mut self, server: &str) {
        let i = self.idx(server);
        assert!(
            !self.is_running(server),
            "agent {server} is still running; kill it first"
        );
        self.spawn(i);
        self.wait_api(server);
    }

    /// Run `server`'s agent with another configuration file from its next start.
    pub fn set_node_config(&mut self, server: &str, config: &Path) {
        let i = self.idx(server);
        self.nodes[i].config = config.to_path_buf();
    }

    /// Start `server`'s agent again without waiting for anything.
    pub fn respawn(&mut self, server: &str) {
        let i = self.idx(server);
        self.spawn(i);
    }

    fn app_pid_file(&self, server: &str) -> PathBuf {
        self.dir.join(format!("app-{server}.pid"))
    }

    /// The pid of `server`'s application process, if its pid file names a live one.
    pub fn app_pid(&self, server: &str) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.app_pid_file(server))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Field 3 is the state; a zombie (Z) is not running.
        let state = stat.rsplit(')').next()?.split_whitespace().next()?;
        (state != "Z" && state != "X").then_some(pid)
    }

    /// Kill `server`'s application process (the server is lost with its agent).
    pub fn kill_app(&self, server: &str) {
        kill_pid_file(&self.app_pid_file(server));
        if let Ok(mut f) = OpenOptions::new()
            .append(true)
            .open(self.dir.join("app-events.log"))
        {
            let _ = writeln!(f, "killed {server} -");
        }
    }

    /// Replay `app-events.log` and check that the application never ran on two servers
    /// at once. A start line is written before the process starts and a stop line
    /// after it was killed, so the logged intervals contain the real ones.
    pub fn assert_app_exclusive(&self) {
        let lines = self.app_events();
        let mut running: Option<String> = None;
        for (i, l) in lines.iter().enumerate() {
            let mut w = l.split_whitespace();
            let (op, server) = (w.next().unwrap_or(""), w.next().unwrap_or("").to_string());
            match op {
                "start" => {
                    if let Some(r) = running.as_ref().filter(|r| **r != server) {
                        panic!(
                            "the app started on {server} (line {}) while it still ran on {r}:\n{}",
                            i + 1,
                            lines.join("\n")
                        );
                    }
                    running = Some(server);
                }
                "stop" | "killed" => {
                    if running.as_ref() == Some(&server) {
                        running = None;
                    }
                }
                _ => panic!("unexpected line in app-events.log: {l}"),
            }
        }
    }

    /// Lines of `app-events.log` (`start|stop SERVER EPOCH`), written by the exec resource.
    pub fn app_events(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("app-events.log"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    /// Make the `app-check` monitor fail (or pass again) on `server`.
    pub fn set_fail(&self, server: &str, fail: bool) {
        let p = self.dir.join(format!("fail-{server}"));
        if fail {
            std::fs::write(&p, b"fail\n").expect("write fail flag");
        } else {
            let _ = std::fs::remove_file(&p);
        }
    }

    /// How many times the `app-check` monitor polled on `server`.
    pub fn polls(&self, server: &str) -> usize {
        std::fs::read_to_string(self.dir.join(format!("polls-{server}.log")))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }

    fn claim_path(&self) -> PathBuf {
        self.dir.join("claim").join(format!("{GROUP}.claim"))
    }

    /// The current claim of the group's `local-claim` resource.
    pub fn claim(&self) -> Option<Claim> {
        let text = std::fs::read_to_string(self.claim_path()).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Every change of owner or epoch of the claim.
    pub fn claim_history(&self) -> Vec<Claim> {
        let mut p = self.claim_path().into_os_string();
        p.push(".history");
        std::fs::read_to_string(PathBuf::from(p))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad history line ({e}): {l}"))
            })
            .collect()
    }

    /// Check the claim history: epochs strictly increase (so one owner per epoch).
    /// Returns the (owner, epoch) pairs.
    pub fn assert_claim_history(&self) -> Vec<(String, u64)> {
        let h = self.claim_history();
        let pairs: Vec<(String, u64)> = h.iter().map(|c| (c.owner.clone(), c.epoch)).collect();
        for w in h.windows(2) {
            assert!(
                w[1].epoch > w[0].epoch,
                "claim epochs must strictly increase, found {:?} then {:?}; history: {pairs:?}",
                w[0],
                w[1]
            );
        }
        pairs
    }

    /// Send a UDP datagram to `server`'s heartbeat socket on `path`.
    pub fn send_udp(&self, server: &str, path: usize, bytes: &[u8]) {
        let to = self.node(server).interconnects[path];
        let s = UdpSocket::bind((Ipv4Addr::new(127, 0, self.spec.net, 99), 0))
            .or_else(|_| UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)))
            .expect("bind a UDP socket");
        s.send_to(bytes, to).expect("send UDP");
    }

    /// Start the invariant watcher over every server (replacing a running one).
    pub fn watch(&mut self) {
        let targets = self.nodes.iter().map(|n| (n.name.clone(), n.api)).collect();
        self.watcher = Some(Watcher::start(
            targets,
            self.token.clone(),
            GROUP.into(),
            Duration::from_millis(50),
        ));
        // Have a picture of the starting state before the scenario changes it.
        wait_until(
            "the watcher completes two polling rounds",
            Duration::from_secs(10),
            || {
                let r = self.watch_report();
                if r.rounds >= 2 {
                    Ok(())
                } else {
                    Err(format!("{} rounds", r.rounds))
                }
            },
        );
    }

    /// What the running watcher saw so far.
    pub fn watch_report(&self) -> Report {
        self.watcher
            .as_ref()
            .map(Watcher::report)
            .expect("the watcher is not running; call watch() first")
    }

    /// Stop the watcher and return what it saw.
    pub fn stop_watch(&mut self) -> Report {
        self.watcher
            .take()
            .map(Watcher::stop)
            .expect("the watcher is not running; call watch() first")
    }

    /// Print every agent's log tail (and the watcher's timeline).
    pub fn dump(&self) {
        eprintln!(
            "\n===== cluster {} ({}; net 127.0.{}.x, API port {}) =====",
            self.spec.name,
            self.dir.display(),
            self.spec.net,
            self.port
        );
        if let Some(w) = &self.watcher {
            eprintln!("--- watcher timeline ---\n{}", w.report().timeline());
        }
        eprintln!("--- claim history ---\n{:?}", self.claim_history());
        for n in &self.nodes {
            eprintln!("--- tail of {} ---\n{}", n.log.display(), tail(&n.log, 60));
            // Mirror processes log beside the state.
            if let Ok(rd) = std::fs::read_dir(n.state_dir.join("mirror")) {
                for e in rd.flatten() {
                    let p = e.path();
                    if p.extension().is_some_and(|x| x == "log") {
                        eprintln!("--- tail of {} ---\n{}", p.display(), tail(&p, 40));
                    }
                }
            }
        }
    }
}

impl Deref for Cluster {
    type Target = Baton;

    fn deref(&self) -> &Baton {
        &self.baton
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump();
        }
        if let Some(w) = self.watcher.take() {
            drop(w);
        }
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        // Mirror processes outlive their agents by design.
        for pid in self.mirror_pids(None) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        // Application processes started by the exec resource outlive a killed agent.
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "pid") {
                    kill_pid_file(&p);
                }
            }
        }
    }
}

/// The configuration text of `spec` (every path absolute, inside `dir`).
pub fn config_text(spec: &ClusterSpec, dir: &Path, port: u16) -> String {
    let d = dir.display();
    let mut c = ConfigText::new(
        &format!("the baton integration tests ({})", spec.name),
        &format!("it-{}", spec.name),
    )
    .heartbeat("100ms", "1s", &spec.heartbeat_config)
    .host_safe(dir, "10s", &spec.api_config);
    let servers: Vec<String> = (1..=spec.servers).map(|i| format!("node-{i}")).collect();
    for (i, name) in (1..=spec.servers).zip(&servers) {
        let ics: Vec<String> = (0..spec.paths)
            .map(|p| addr(spec.net, p, i, port + 1).to_string())
            .collect();
        c = c.server(name, None, &ics, &addr(spec.net, 0, i, port).to_string());
    }
    let mut s = c
        .group(GROUP, &servers)
        .push(&format!(
            r#"
[[group.resource]]
kind = "local-claim"
name = "claim"
path = "{d}/claim/{GROUP}.claim"
activate_timeout = "5s"
deactivate_timeout = "5s"
"#
        ))
        .marker_app(dir, "claim", 1000)
        .build();
    if let Some(m) = &spec.monitor {
        s.push_str(&format!(
            r#"
[[monitor]]
kind = "exec"
name = "{MONITOR}"
group = "{GROUP}"
interval = "{interval}"
timeout = "2s"
retries = {retries}
command = 'echo poll >> "{d}/polls-$BATON_SERVER.log"; test ! -e "{d}/fail-$BATON_SERVER"'
recovery = {{ target = "{GROUP}", restart_retries = {rr}, failover_retries = {fr} }}
"#,
            interval = m.interval,
            retries = m.retries,
            rr = m.restart_retries,
            fr = m.failover_retries,
        ));
    }
    if !spec.extra_config.is_empty() {
        s.push('\n');
        // Scenarios that need ports or files of their own name them so.
        s.push_str(
            &spec
                .extra_config
                .replace("@DIR@", &d.to_string())
                .replace("@PORT@", &port.to_string()),
        );
    }
    s
}
