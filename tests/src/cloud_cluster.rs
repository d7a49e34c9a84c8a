//! Three real agents against a cloud emulator, for the AWS (moto) and Azure (the Azure
//! fake) scenarios: [`CloudCluster`] starts them with the cloud's section and
//! environment, kills and restarts them, and waits for owners and monitors.

use std::net::SocketAddr;
use std::ops::Deref;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::client::{tail, Baton};
use crate::cluster::{addr, api_token, pick_port};
use crate::config::ConfigText;

/// The environment of the agent of a server (by name): variables to set (`Some`) or to
/// remove (`None`).
pub type AgentEnv = Box<dyn Fn(&str) -> Vec<(&'static str, Option<String>)>>;

/// One agent.
pub struct CloudNode {
    pub name: String,
    pub api: SocketAddr,
    pub log: PathBuf,
    pub state_dir: PathBuf,
    child: Option<Child>,
}

/// Three agents (two for the groups, one vote) against a cloud emulator (moto, the Azure
/// fake), running a configuration with the given groups and monitors. Monitors need values for node-3 too (common values do). It is a
/// [`Baton`] client of that configuration (`bin`, `config`, `ctl`, `alerts`, ...).
pub struct CloudCluster {
    pub dir: PathBuf,
    pub nodes: Vec<CloudNode>,
    baton: Baton,
    pub token: String,
    /// Each agent's environment (the emulator's endpoint, credentials).
    env: AgentEnv,
    _tmp: tempfile::TempDir,
}

impl CloudCluster {
    /// Three servers in three zones on 127.`net`.0.x; `preamble` is the cloud's section
    /// (after the heartbeat and host-safe settings), `body` the TOML of the groups and
    /// monitors; each agent gets `env` of its server's name. Heartbeat 100 ms / 1 s.
    pub fn start_with(
        cloud: &str,
        name: &str,
        net: u8,
        zones: [&str; 3],
        preamble: &str,
        env: AgentEnv,
        body: &str,
    ) -> CloudCluster {
        Self::start_with_heartbeat(
            cloud,
            name,
            net,
            zones,
            preamble,
            env,
            body,
            Some(("100ms", "1s")),
        )
    }

    /// As [`CloudCluster::start_with`], with the heartbeat interval and timeout given
    /// (`None`: the defaults, no `[heartbeat]` table).
    #[allow(clippy::too_many_arguments)]
    pub fn start_with_heartbeat(
        cloud: &str,
        name: &str,
        net: u8,
        zones: [&str; 3],
        preamble: &str,
        env: AgentEnv,
        body: &str,
        heartbeat: Option<(&str, &str)>,
    ) -> CloudCluster {
        let bin = crate::bin::baton_bin();
        let tmp = tempfile::Builder::new()
            .prefix(&format!("baton-{cloud}-{name}-"))
            .tempdir()
            .expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let key = dir.join("cluster.key");
        let config = dir.join("baton.toml");
        let baton = Baton::new(&bin, &config);
        baton.keygen(&key).unwrap_or_else(|e| panic!("{e}"));
        let port = pick_port(net, 3, 1);
        let mut text = ConfigText::new(
            &format!("the baton {cloud} tests ({name})"),
            &format!("{cloud}-{name}"),
        );
        if let Some((interval, timeout)) = heartbeat {
            text = text.heartbeat(interval, timeout, "");
        }
        let mut text = text.host_safe(&dir, "20s", "").push(preamble);
        for (s, zone) in (1..=3).zip(zones) {
            text = text.server(
                &format!("node-{s}"),
                Some(zone),
                &[addr(net, 0, s, port + 1).to_string()],
                &addr(net, 0, s, port).to_string(),
            );
        }
        std::fs::write(&config, text.push("\n").push(body).build()).expect("write config");
        baton.check_config().unwrap_or_else(|e| panic!("{e}"));
        let nodes = (1..=3)
            .map(|s| CloudNode {
                name: format!("node-{s}"),
                api: addr(net, 0, s, port),
                log: dir.join(format!("node-{s}.log")),
                state_dir: dir.join(format!("state-{s}")),
                child: None,
            })
            .collect();
        let mut c = CloudCluster {
            token: api_token(&key),
            dir,
            nodes,
            baton,
            env,
            _tmp: tmp,
        };
        for i in 0..3 {
            c.spawn(i);
        }
        c
    }

    fn idx(&self, server: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == server)
            .expect("known server")
    }

    fn spawn(&mut self, i: usize) {
        let n = &self.nodes[i];
        let mut cmd = self
            .baton
            .agent(
                &n.name,
                &self.baton.config,
                &n.state_dir,
                &n.log,
                &format!("=== harness: starting agent {} ===", n.name),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        for (k, v) in (self.env)(&n.name) {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let child = cmd.spawn().expect("start agent");
        self.nodes[i].child = Some(child);
    }

    /// Start `server`'s agent again (same state directory).
    pub fn restart(&mut self, server: &str) {
        let i = self.idx(server);
        self.spawn(i);
    }

    /// Wait until each of `server`'s monitors `names` has completed a healthy poll
    /// (state `normal`, which a monitor reaches only from a successful poll).
    pub fn wait_monitors_normal(&self, server: &str, names: &[&str], timeout: Duration) {
        crate::wait_until(
            &format!("{server}'s monitors {names:?} to report normal"),
            timeout,
            || {
                let st = self.try_status_via(Some(server))?;
                for n in names {
                    match st.local.monitors.iter().find(|m| m.name == *n) {
                        Some(m) if m.state == "normal" => {}
                        Some(m) => return Err(format!("{n} is {}", m.state)),
                        None => return Err(format!("no monitor {n} on {server}")),
                    }
                }
                Ok(())
            },
        );
    }

    /// Wait until group `group` is online on `on` alone; returns its epoch.
    pub fn wait_owner(&self, group: &str, on: &str, timeout: Duration) -> u64 {
        self.wait_group_owner(group, Some(on), timeout).1
    }

    /// Signal `server`'s agent; after SIGKILL also reap it.
    pub fn kill(&mut self, server: &str, sig: Signal) {
        let i = self.idx(server);
        if let Some(c) = self.nodes[i].child.as_mut() {
            let _ = kill(Pid::from_raw(i32::try_from(c.id()).unwrap_or(0)), sig);
            if sig == Signal::SIGKILL {
                let _ = c.wait();
                self.nodes[i].child = None;
            }
        }
    }

    /// Wait for `server`'s agent to exit (after SIGTERM).
    pub fn wait_exit(&mut self, server: &str, timeout: Duration) {
        let i = self.idx(server);
        if let Some(c) = self.nodes[i].child.as_mut() {
            let start = Instant::now();
            while matches!(c.try_wait(), Ok(None)) {
                assert!(
                    start.elapsed() < timeout,
                    "agent {server} did not exit in {timeout:?}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.nodes[i].child = None;
    }

    pub fn dump(&self) {
        for n in &self.nodes {
            eprintln!("--- tail of {} ---\n{}", n.log.display(), tail(&n.log, 80));
        }
    }
}

impl Deref for CloudCluster {
    type Target = Baton;

    fn deref(&self) -> &Baton {
        &self.baton
    }
}

impl Drop for CloudCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump();
        }
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
