//! The one client every harness drives its agents with: `baton` commands (on this host
//! or inside a network namespace) against the cluster's configuration, the status and
//! alert readers built on them, and the `baton agent` command line with its log file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::model::{ClusterStatus, Event};
use crate::wait_until;

/// Exit code and output of one `baton` command.
#[derive(Debug, Clone)]
pub struct CliOut {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOut {
    /// Panic unless the command exited 0.
    pub fn ok(self, what: &str) -> CliOut {
        assert_eq!(
            self.code, 0,
            "`{what}` failed with exit code {}\nstdout: {}\nstderr: {}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    /// `Err` (naming `what`, with the output) unless the command exited 0.
    pub fn check(self, what: &str) -> Result<CliOut, String> {
        if self.code == 0 {
            Ok(self)
        } else {
            Err(format!(
                "`{what}` exited {}: {}{}",
                self.code, self.stdout, self.stderr
            ))
        }
    }
}

/// `bin`, run inside namespace `netns` if given, with a clean `BATON_*` environment.
fn command(bin: &Path, netns: Option<&str>) -> Command {
    let mut c = match netns {
        Some(ns) => crate::netns::command_in(ns, bin),
        None => Command::new(bin),
    };
    c.env_remove("BATON_CONFIG")
        .env_remove("BATON_SERVER")
        .stdin(Stdio::null());
    c
}

/// Run `baton ARGS` (with a clean `BATON_*` environment).
pub fn run_cli(bin: &Path, args: &[&str]) -> CliOut {
    Baton::new(bin, Path::new("")).cli(args)
}

/// The `baton` binary, the configuration file of a cluster and where its commands run.
#[derive(Debug, Clone)]
pub struct Baton {
    pub bin: PathBuf,
    /// The common configuration file (`-c` of every command that talks to the agents).
    pub config: PathBuf,
    /// The network namespace the commands run in (`None`: this one).
    pub netns: Option<String>,
}

impl Baton {
    pub fn new(bin: &Path, config: &Path) -> Baton {
        Baton {
            bin: bin.to_path_buf(),
            config: config.to_path_buf(),
            netns: None,
        }
    }

    /// The same client, running its commands inside namespace `ns`.
    pub fn in_netns(&self, ns: &str) -> Baton {
        Baton {
            netns: Some(ns.to_string()),
            ..self.clone()
        }
    }

    /// Run `baton ARGS`.
    pub fn cli(&self, args: &[&str]) -> CliOut {
        let out = command(&self.bin, self.netns.as_deref())
            .args(args)
            .env("BATON_LOG", "warn")
            .output()
            .unwrap_or_else(|e| {
                let place = self.netns.as_deref().unwrap_or("this namespace");
                panic!("cannot run {} in {place}: {e}", self.bin.display())
            });
        CliOut {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).to_string(),
        }
    }

    /// Run `baton ARGS -c CONFIG` (for every command that talks to the agents).
    pub fn ctl(&self, args: &[&str]) -> CliOut {
        let cfg = self.config.to_string_lossy().to_string();
        let mut v: Vec<&str> = args.to_vec();
        v.extend(["-c", cfg.as_str()]);
        self.cli(&v)
    }

    /// `baton keygen KEY`.
    pub fn keygen(&self, key: &Path) -> Result<(), String> {
        self.cli(&["keygen", &key.to_string_lossy()])
            .check("baton keygen")
            .map(drop)
    }

    /// `baton config check CONFIG`.
    pub fn check_config(&self) -> Result<(), String> {
        self.cli(&["config", "check", &self.config.to_string_lossy()])
            .check("baton config check")
            .map(drop)
    }

    /// `baton agent --config CONFIG --server SERVER --state-dir STATE_DIR` (in the
    /// client's namespace, `BATON_LOG=info`), its output appended to `log` after the
    /// line `header`.
    pub fn agent(
        &self,
        server: &str,
        config: &Path,
        state_dir: &Path,
        log: &Path,
        header: &str,
    ) -> Result<Command, String> {
        let (out, err) = open_log(log, header)?;
        let mut c = command(&self.bin, self.netns.as_deref());
        c.arg("agent")
            .arg("--config")
            .arg(config)
            .arg("--server")
            .arg(server)
            .arg("--state-dir")
            .arg(state_dir)
            .env("BATON_LOG", "info")
            .stdout(out)
            .stderr(err);
        Ok(c)
    }

    /// `baton status --json`, via the first server that answers (`via`: a given one).
    pub fn try_status_via(&self, via: Option<&str>) -> Result<ClusterStatus, String> {
        let mut args = vec!["status", "--json"];
        if let Some(s) = via {
            args.extend(["-s", s]);
        }
        let out = self.ctl(&args).check(&self.what("baton status", via))?;
        serde_json::from_str(&out.stdout)
            .map_err(|e| format!("cannot parse `baton status --json` ({e}): {}", out.stdout))
    }

    pub fn try_status(&self) -> Result<ClusterStatus, String> {
        self.try_status_via(None)
    }

    pub fn status(&self) -> ClusterStatus {
        self.try_status().unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn status_via(&self, server: &str) -> ClusterStatus {
        self.try_status_via(Some(server))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Wait until `group` is online on exactly one server, as every answering agent
    /// agrees, and that server is `on` (if given). Returns (owner, epoch, status).
    pub fn wait_group_owner(
        &self,
        group: &str,
        on: Option<&str>,
        timeout: Duration,
    ) -> (String, u64, ClusterStatus) {
        let what = match on {
            Some(s) => format!("group {group} is online on {s}"),
            None => format!("group {group} is online on one server"),
        };
        wait_until(&what, timeout, || {
            let st = self.try_status()?;
            match st.sole_owner(group) {
                Some(o) if on.is_none_or(|s| s == o) => {
                    let epoch = st.group(group).epoch;
                    Ok((o, epoch, st))
                }
                _ => Err(st.summary(group)),
            }
        })
    }

    /// `baton alerts --json --after 0 -s SERVER`: the server's whole alert log.
    pub fn try_alerts(&self, server: &str) -> Result<Vec<Event>, String> {
        let out = self
            .ctl(&["alerts", "--json", "--after", "0", "-s", server])
            .check(&self.what("baton alerts", Some(server)))?;
        crate::parse_event_lines(&out.stdout)
    }

    pub fn alerts(&self, server: &str) -> Vec<Event> {
        self.try_alerts(server).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Wait until `server`'s alert log has an event `id` matching `pred`; returns the log.
    pub fn wait_event(
        &self,
        server: &str,
        id: &str,
        timeout: Duration,
        pred: impl Fn(&Event) -> bool,
    ) -> Vec<Event> {
        wait_until(&format!("{server} raises {id}"), timeout, || {
            let evs = self.try_alerts(server)?;
            if evs.iter().any(|e| e.id == id && pred(e)) {
                Ok(evs)
            } else {
                Err(format!(
                    "events of {server} so far:\n{}",
                    crate::model::Events::lines(evs.as_slice())
                ))
            }
        })
    }

    /// [`Baton::wait_event`], returning the first event `id` matching `pred`.
    pub fn wait_one_event(
        &self,
        server: &str,
        id: &str,
        timeout: Duration,
        pred: impl Fn(&Event) -> bool,
    ) -> Event {
        self.wait_event(server, id, timeout, &pred)
            .into_iter()
            .find(|e| e.id == id && pred(e))
            .expect("wait_event returns a log holding the event")
    }

    /// `` `baton status -s SERVER` in NETNS `` for messages.
    fn what(&self, cmd: &str, server: Option<&str>) -> String {
        let mut w = cmd.to_string();
        if let Some(s) = server {
            w.push_str(&format!(" -s {s}"));
        }
        if let Some(ns) = &self.netns {
            w.push_str(&format!("` in `{ns}"));
        }
        w
    }
}

/// Open `path` for appending (creating it), write `header` as a line, and return two
/// handles (stdout and stderr of a process).
pub fn open_log(path: &Path, header: &str) -> Result<(File, File), String> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let _ = writeln!(f, "{header}");
    let g = f
        .try_clone()
        .map_err(|e| format!("cannot clone a log handle: {e}"))?;
    Ok((f, g))
}

/// The last `lines` lines of the file at `path` (empty if unreadable).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
