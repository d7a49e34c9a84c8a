//! The `baton` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use baton_core::config::{parse_duration, Config, Level};
use baton_core::engine::{Command, GroupState};
use baton_core::events::Event;
use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::api_types::ClusterStatus;
use crate::client::{Client, ClientError};
use crate::key::ClusterKey;

use crate::exit::fail;
pub use crate::exit::Exit;

#[derive(Parser, Debug)]
#[command(
    name = "baton",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("BATON_COMMIT"), ")"),
    about = "Baton: high-availability cluster for the cloud",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

impl Cli {
    /// Parse the command line, accepting `--json` anywhere, also before the command
    /// (`baton --json status`): see [`json_after_command`].
    pub fn parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        <Cli as clap::Parser>::try_parse_from(json_after_command(args))
    }
}

/// `--json` given before the command goes after it, where every command that prints
/// JSON declares it: `baton --json group move web` is `baton group move --json web`.
/// Left where it is (and refused by the parser as before) when the command has no
/// `--json` or no command follows.
pub fn json_after_command(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    use clap::CommandFactory;
    let Some(pos) = args
        .iter()
        .skip(1)
        .position(|a| a == "--json")
        .map(|p| p + 1)
    else {
        return args;
    };
    // Only the leading options, before the first word.
    if args[1..pos]
        .iter()
        .any(|a| !a.to_string_lossy().starts_with('-'))
    {
        return args;
    }
    let mut cmd = Cli::command();
    let mut at = None;
    for (i, a) in args.iter().enumerate().skip(pos + 1) {
        let word = a.to_string_lossy();
        if word.starts_with('-') {
            break;
        }
        match cmd.find_subcommand(word.as_ref()) {
            Some(sub) => {
                let sub = sub.clone();
                cmd = sub;
                at = Some(i);
            }
            None => break,
        }
    }
    let Some(at) = at else {
        return args;
    };
    if !cmd.get_arguments().any(|a| a.get_long() == Some("json")) {
        return args;
    }
    let flag = args.remove(pos);
    args.insert(at, flag);
    args
}

#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    #[command(flatten)]
    pub cfg: crate::args::ConfigArg,
    /// Talk to this server's agent (default: the first one that answers).
    #[arg(long, short = 's')]
    pub server: Option<String>,
    /// Talk to the agent API at this address instead.
    #[arg(long)]
    pub api: Option<SocketAddr>,
    /// Authenticate with the API token in this file (a role token from `baton token`, or
    /// an issued one) instead of the cluster key. Without it, and without access to the
    /// key file, `baton` talks to the local agent through its Unix socket.
    #[arg(long, env = "BATON_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run the node agent for one server of the cluster.
    Agent {
        #[command(flatten)]
        cfg: crate::args::ConfigArg,
        #[command(flatten)]
        srv: crate::args::ServerArg,
        /// State directory (epochs, ownership, alert log); default from `[agent] state_dir`.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Log format on stderr.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        log_format: String,
    },
    /// Show servers (with each interconnect path), groups and monitors.
    Status {
        #[command(flatten)]
        t: Target,
        /// For monitoring systems: one line and the plugin convention's exit code, 0 OK,
        /// 1 WARNING (degraded: a server or path down, a monitor failing, a mirror not in
        /// sync), 2 CRITICAL (a group that should run does not or runs twice, no quorum,
        /// split brain, no agent answers).
        #[arg(long)]
        check: bool,
        /// Redraw every INTERVAL (default 2s) until Ctrl-C: the screen is cleared on a
        /// terminal, else the snapshots follow each other, separated by a line.
        #[arg(long, value_name = "INTERVAL", num_args = 0..=1, default_missing_value = "2s", conflicts_with = "check")]
        watch: Option<String>,
    },
    /// Collect, from every reachable server, status, recent events, the configuration with
    /// secrets removed and versions into one .tar.gz for a bug report.
    SupportBundle {
        /// Where to write it (default: baton-support-CLUSTER-TIME.tar.gz here).
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[command(flatten)]
        t: Target,
    },
    /// Start, stop or move a failover group.
    Group {
        #[command(subcommand)]
        op: GroupOp,
    },
    /// Suspend or resume monitoring and recovery cluster-wide, or stop every agent.
    Cluster {
        #[command(subcommand)]
        op: ClusterOp,
    },
    /// Suspend or resume one monitor.
    Monitor {
        #[command(subcommand)]
        op: MonitorOp,
    },
    /// Temporarily change timeouts (for planned load); they revert by themselves.
    Timeout {
        #[command(subcommand)]
        op: TimeoutOp,
    },
    /// Show the alert log of an agent.
    Alerts {
        #[command(flatten)]
        t: Target,
        /// Keep printing new events.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Show events after this sequence number (default: the last 20).
        #[arg(long)]
        after: Option<u64>,
        /// Only events of this severity or worse (info, warning, error, critical).
        #[arg(long, value_name = "SEVERITY")]
        severity: Option<String>,
        /// Only events about this group.
        #[arg(long)]
        group: Option<String>,
        /// Only events of the last DURATION (`10m`, `2h`, `1d`).
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        op: ConfigOp,
    },
    /// Notification sinks: send a test event through them.
    Notify {
        #[command(subcommand)]
        op: crate::notify_cmd::NotifyOp,
    },
    /// Print a shell completion script for `baton` (bash, zsh, fish, elvish, powershell)
    ///
    /// For example `baton completions bash > /usr/share/bash-completion/completions/baton`.
    Completions { shell: clap_complete::Shell },
    /// Print the man page of `baton` (roff), or write one page per command into a directory
    ///
    /// `baton man | man -l -` reads it; `baton man --dir /usr/share/man/man1` installs
    /// `baton.1` and `baton-COMMAND.1` for every command and subcommand.
    Man {
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Print the event catalogue.
    Events {
        /// As Markdown (the docs page).
        #[arg(long)]
        markdown: bool,
        #[arg(long)]
        json: bool,
    },
    /// Create a new random cluster key file, a cluster's witness key file (mode 0600), or
    /// the API's TLS certificates
    ///
    /// With `--witness OUT --config FILE`, write the witness key file of that cluster
    /// (its name, servers and the witness key derived from its cluster key) for
    /// `baton witness --key-file`.
    ///
    /// With `--tls DIR --config FILE`, write a cluster CA (`DIR/ca.crt`, `DIR/ca.key`; kept
    /// if already there) and for every server `DIR/SERVER.crt` and `DIR/SERVER.key` for its
    /// name and API address (replacing earlier ones: run it again to renew or after adding
    /// a server), for `[api] tls_cert_file`, `tls_key_file` and `tls_ca_file`.
    Keygen {
        #[arg(required_unless_present_any = ["witness", "tls"], conflicts_with_all = ["witness", "tls"])]
        file: Option<PathBuf>,
        /// Write the cluster's witness key file here (for `baton witness --key-file`).
        #[arg(long, value_name = "OUT", requires = "config", conflicts_with = "tls")]
        witness: Option<PathBuf>,
        /// Write the cluster CA and the servers' API certificates into this directory.
        #[arg(long, value_name = "DIR", requires = "config")]
        tls: Option<PathBuf>,
        /// The cluster's configuration (its name, servers and key file) for `--witness`
        /// and `--tls`.
        #[arg(long, short = 'c')]
        config: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the API token of a role, derived from the cluster key: `read` (status,
    /// alerts) or `operator` (also commands). Give it to `baton --token-file` or an HTTP
    /// client; it stays valid until the cluster key changes or `[api] derived_tokens =
    /// false`.
    Token {
        #[arg(long, value_parser = ["read", "operator"])]
        role: String,
        #[command(flatten)]
        cfg: crate::args::ConfigArg,
        /// Print JSON (`{"role": ..., "token": ...}`) instead of the bare token.
        #[arg(long)]
        json: bool,
    },
    /// Act on one resource of this server directly, without the agent (for tests and
    /// troubleshooting; the agent must not be running the group).
    Resource {
        #[arg(value_parser = ["activate", "deactivate", "check"])]
        op: String,
        group: String,
        resource: String,
        #[command(flatten)]
        cfg: crate::args::ConfigArg,
        #[command(flatten)]
        srv: crate::args::ServerArg,
        #[arg(long, default_value = "1")]
        epoch: u64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Cloud preflight: `check` the cloud resources and permissions (AWS, Azure, Google
    /// Cloud), print the `iam-policy` or custom role.
    Cloud {
        #[command(subcommand)]
        op: crate::cloud::CloudOp,
    },
    /// Run a local 3-server cluster on 127.0.0.x and show a failover (no root, no cloud).
    Demo {
        /// Keep the demo's files here instead of a temporary directory.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Heartbeat interval of the demo cluster.
        #[arg(long, default_value = "100ms")]
        interval: String,
        /// Heartbeat timeout of the demo cluster.
        #[arg(long, default_value = "500ms")]
        timeout: String,
        /// Address block: servers use 127.<N>.0.11-13 (path 0) and 127.<N>.1.11-13 (path 1).
        #[arg(long, default_value = "0")]
        net: u8,
        /// Base TCP port for the agents' APIs (three ports from here) and the app.
        #[arg(long, default_value = "17420")]
        port: u16,
        #[arg(long)]
        json: bool,
    },
    /// Run the HTTP witness: one extra quorum vote, granted to one partition at a time.
    Witness {
        /// Address to listen on, e.g. 0.0.0.0:7430.
        #[arg(long)]
        listen: SocketAddr,
        /// A witness key file from `baton keygen --witness`: repeat it for each cluster this
        /// witness serves, and for the old and the new file of one cluster during a key
        /// rotation. A cluster key file is still accepted, deprecated.
        #[arg(long, required = true)]
        key_file: Vec<PathBuf>,
        /// Grant nothing for this long after start (must cover the longest lease).
        #[arg(long, default_value = "60s")]
        startup_quiet: String,
        /// Keep the epochs and data marks this witness acknowledges in this file (written
        /// before each reply that acknowledges a new one), so a restart does not forget
        /// them. Without it they live in memory only (a warning at start).
        #[arg(long)]
        state_file: Option<PathBuf>,
        #[command(flatten)]
        limits: crate::listen::LimitArgs,
        /// Log format on stderr.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        log_format: String,
    },
    /// Mirror disks on this server: status, pause/resume, forced promotion, split brain.
    Mirror {
        #[command(subcommand)]
        op: crate::mirror_cmd::MirrorOp,
    },
    /// The mirror process of one `mirror-disk` resource (started by the agent).
    #[command(hide = true)]
    MirrorDaemon {
        #[command(flatten)]
        a: crate::mirror_cmd::DaemonArgs,
    },
    /// The small HTTP application used by the demo (answers GET / and /health).
    #[command(hide = true)]
    DemoApp {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum GroupOp {
    /// Start the group (clears failure exclusions); optionally on a given server.
    Start {
        group: String,
        #[arg(long)]
        on: Option<String>,
        /// Return only when the cluster has done it (or fail with the state it reached):
        /// `--wait` waits up to 60s, `--wait 5m` as long as given.
        #[arg(long, value_name = "TIMEOUT", num_args = 0..=1, default_missing_value = "60s")]
        wait: Option<String>,
        #[command(flatten)]
        t: Target,
    },
    /// Stop the group everywhere; it stays stopped until started.
    Stop {
        group: String,
        /// Return only when the cluster has done it (or fail with the state it reached):
        /// `--wait` waits up to 60s, `--wait 5m` as long as given.
        #[arg(long, value_name = "TIMEOUT", num_args = 0..=1, default_missing_value = "60s")]
        wait: Option<String>,
        #[command(flatten)]
        t: Target,
    },
    /// Move the group to another server (default: the next one in its order).
    Move {
        group: String,
        #[arg(long)]
        to: Option<String>,
        /// Return only when the cluster has done it (or fail with the state it reached):
        /// `--wait` waits up to 60s, `--wait 5m` as long as given.
        #[arg(long, value_name = "TIMEOUT", num_args = 0..=1, default_missing_value = "60s")]
        wait: Option<String>,
        #[command(flatten)]
        t: Target,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClusterOp {
    Suspend {
        #[command(flatten)]
        t: Target,
    },
    Resume {
        #[command(flatten)]
        t: Target,
    },
    /// Stop every group and every agent of the cluster.
    Stop {
        /// Return only when no agent of the cluster answers any more (every group
        /// stopped, every agent exited), or fail naming those still running: `--wait`
        /// waits up to 60s, `--wait 5m` as long as given.
        #[arg(long, value_name = "TIMEOUT", num_args = 0..=1, default_missing_value = "60s")]
        wait: Option<String>,
        #[command(flatten)]
        t: Target,
    },
}

#[derive(Subcommand, Debug)]
pub enum MonitorOp {
    Suspend {
        monitor: String,
        #[command(flatten)]
        t: Target,
    },
    Resume {
        monitor: String,
        #[command(flatten)]
        t: Target,
    },
}

#[derive(Subcommand, Debug)]
pub enum TimeoutOp {
    /// Set temporary timeouts, e.g. `baton timeout set --heartbeat 30s --for 2h`.
    Set {
        /// Heartbeat timeout while in force.
        #[arg(long)]
        heartbeat: Option<String>,
        /// Monitor timeouts are multiplied by this percentage (e.g. 300).
        #[arg(long)]
        monitor_factor: Option<u32>,
        /// How long the change stays in force.
        #[arg(long = "for")]
        duration: String,
        #[command(flatten)]
        t: Target,
    },
    /// Return to the configured timeouts now.
    Clear {
        #[command(flatten)]
        t: Target,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigOp {
    /// Validate a configuration file.
    Check {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Send a configuration file to every server: each checks it, stores it (keeping the
    /// previous file as FILE.prev) and takes it live; refused everywhere, with the
    /// reason, when any server refuses it (invalid, or a change that needs a rolling
    /// restart) or does not answer.
    Push {
        /// The new configuration file.
        file: PathBuf,
        /// Store it on every server for the next restart instead of applying it (for
        /// changes that need a rolling restart, and key rotation steps).
        #[arg(long)]
        stage: bool,
        /// Push to the servers that answer even if some do not (they keep the old
        /// configuration and refuse to activate groups until it is pushed to them).
        #[arg(long)]
        allow_partial: bool,
        /// Check on every server and show what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        t: Target,
    },
    /// Show what differs between a configuration file and what each server runs.
    Diff {
        /// The configuration file to compare.
        file: PathBuf,
        #[command(flatten)]
        t: Target,
    },
}

/// Print an error and return its exit code.
/// Exit code, stable error code and message (without the code) of a client error.
fn client_exit(e: &ClientError) -> (Exit, String) {
    match e {
        ClientError::Unreachable { .. } => (Exit::Unreachable, "unreachable".into()),
        ClientError::Timeout { .. } => (Exit::Unreachable, "timeout".into()),
        ClientError::Api {
            status: 401 | 403,
            code,
            ..
        } => (Exit::Unauthorized, code.clone()),
        ClientError::Api { code, .. } => (Exit::Refused, code.clone()),
        ClientError::Protocol { .. } => (Exit::Failure, "protocol".into()),
    }
}

fn client_message(e: &ClientError) -> String {
    match e {
        ClientError::Api { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

struct Conn {
    client: Client,
    addrs: Vec<SocketAddr>,
}

fn connect(t: &Target) -> Result<(Conn, Config), Exit> {
    let cfg = match crate::catalog::load_config(&t.cfg.config) {
        Ok(c) => c,
        Err(e) => {
            let first = e
                .diagnostics
                .first()
                .map(|d| d.to_string())
                .unwrap_or_default();
            return Err(fail(
                t.json,
                Exit::ConfigInvalid,
                "config-invalid",
                &format!("{e}: {first}"),
            ));
        }
    };
    let addrs = if let Some(a) = t.api {
        vec![a]
    } else if let Some(s) = &t.server {
        match cfg.server(s) {
            Some(s) => vec![s.api],
            None => {
                return Err(fail(
                    t.json,
                    Exit::Usage,
                    "unknown-server",
                    &format!("unknown server `{s}`"),
                ))
            }
        }
    } else {
        cfg.servers.iter().map(|s| s.api).collect()
    };
    // HTTPS when the agents serve TLS ([api] tls_cert_file), trusting [api] tls_ca_file.
    let tls = match crate::tls::ClientTls::for_config(&cfg, &t.cfg.config) {
        Ok(tls) => tls,
        Err(e) => return Err(fail(t.json, Exit::KeyError, e.code(), &e.to_string())),
    };
    // 1. A token file given: that token, over TCP.
    if let Some(f) = &t.token_file {
        let token = match read_token_file(f) {
            Ok(tok) => tok,
            Err(msg) => return Err(fail(t.json, Exit::KeyError, "token-file", &msg)),
        };
        return Ok((
            Conn {
                client: Client::new(&token, &tls),
                addrs,
            },
            cfg,
        ));
    }
    // 2. The cluster key, when this user can read it.
    let key_path = crate::catalog::config_path(&t.cfg.config, &cfg.key_file);
    let key_err = match ClusterKey::load(&key_path) {
        Ok(key) => {
            return Ok((
                Conn {
                    client: Client::new(&key.api_token(), &tls),
                    addrs,
                },
                cfg,
            ))
        }
        Err(e) => e,
    };
    // 3. The local agent's Unix socket (of the server asked for, else of any server of
    //    this cluster that has one here).
    if t.api.is_none() {
        let servers: Vec<&baton_core::config::Server> = cfg
            .servers
            .iter()
            .filter(|s| t.server.as_ref().is_none_or(|n| &s.name == n))
            .collect();
        for s in servers {
            let Some(path) = cfg.api.socket_path(&cfg.cluster_name, &s.name) else {
                continue;
            };
            if std::os::unix::net::UnixStream::connect(&path).is_ok() {
                return Ok((
                    Conn {
                        client: Client::unix(&path),
                        addrs: vec![s.api],
                    },
                    cfg,
                ));
            }
        }
    }
    let hint = match cfg.api.socket_path(&cfg.cluster_name, t.server.as_deref().unwrap_or("SERVER")) {
        Some(p) => format!(
            "; no agent socket to use instead ({} — is the agent running here, and may you open its socket?); or pass --token-file",
            p.display()
        ),
        None => "; or pass --token-file".into(),
    };
    Err(fail(
        t.json,
        Exit::KeyError,
        key_err.code(),
        &format!("{key_err}{hint}"),
    ))
}

/// Longest token file read.
const MAX_TOKEN_FILE: u64 = 4096;

/// The token in a file: its first non-empty, non-comment line.
fn read_token_file(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    let shown = path.display();
    let f =
        std::fs::File::open(path).map_err(|e| format!("cannot read token file {shown}: {e}"))?;
    let mut text = String::new();
    f.take(MAX_TOKEN_FILE)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read token file {shown}: {e}"))?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .ok_or_else(|| format!("token file {shown} holds no token"))
}

impl Conn {
    /// Talk to this one server from now on (a follow stays on the log it started with:
    /// sequence numbers belong to one server's alert log).
    fn pin(&mut self, addr: SocketAddr) {
        self.addrs = vec![addr];
    }

    /// The first address that accepts a connection (for `pin`).
    async fn first_answering(&self) -> Option<SocketAddr> {
        for a in &self.addrs {
            if tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(a))
                .await
                .is_ok_and(|r| r.is_ok())
            {
                return Some(*a);
            }
        }
        None
    }

    /// Try each address until one accepts the connection. Only a refused or unroutable
    /// connection falls through to the next server; a timeout does not (the request may
    /// have been applied, and must not be sent twice).
    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let mut last = None;
        for a in &self.addrs {
            match self.client.get(*a, path, Duration::from_secs(3)).await {
                Err(e @ ClientError::Unreachable { .. }) => last = Some(e),
                r => return r,
            }
        }
        Err(last.unwrap_or(ClientError::Unreachable {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            msg: "no server configured".into(),
        }))
    }
    async fn post<B: Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.post_within(path, body, Duration::from_secs(5)).await
    }

    async fn post_within<B: Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let mut last = None;
        for a in &self.addrs {
            match self.client.post(*a, path, body, timeout).await {
                Err(e @ ClientError::Unreachable { .. }) => last = Some(e),
                r => return r,
            }
        }
        Err(last.unwrap_or(ClientError::Unreachable {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            msg: "no server configured".into(),
        }))
    }
}

async fn send_command(t: &Target, cmd: Command, done: &str) -> Exit {
    let (conn, _) = match connect(t) {
        Ok(c) => c,
        Err(e) => return e,
    };
    match conn
        .post::<_, serde_json::Value>("/v1/commands", &cmd)
        .await
    {
        Ok(_) => {
            if t.json {
                println!("{}", serde_json::json!({"ok": true, "command": cmd}));
            } else {
                println!("{done}");
            }
            Exit::Ok
        }
        Err(e) => {
            let (exit, code) = client_exit(&e);
            fail(t.json, exit, &code, &client_message(&e))
        }
    }
}

pub async fn run(cli: Cli) -> Exit {
    match cli.cmd {
        Cmd::Agent { .. }
        | Cmd::Demo { .. }
        | Cmd::DemoApp { .. }
        | Cmd::Witness { .. }
        | Cmd::MirrorDaemon { .. } => {
            Exit::Failure // handled in main
        }
        Cmd::Status {
            t,
            check: false,
            watch,
        } => status(&t, watch.as_deref()).await,
        Cmd::Status { t, check: true, .. } => status_check(&t).await,
        Cmd::SupportBundle { output, t } => support_bundle(&t, output).await,
        Cmd::Group { op } => group_cmd(op).await,
        Cmd::Cluster { op } => cluster_cmd(op).await,
        Cmd::Monitor { op } => monitor_cmd(op).await,
        Cmd::Timeout { op } => timeout_cmd(op).await,
        Cmd::Alerts {
            t,
            follow,
            after,
            severity,
            group,
            since,
        } => {
            let filter = match AlertFilter::parse(severity, group, since) {
                Ok(f) => f,
                Err(msg) => return fail(t.json, Exit::Usage, "usage", &msg),
            };
            alerts(&t, follow, after, &filter).await
        }
        Cmd::Config {
            op: ConfigOp::Check { file, json },
        } => config_check(&file, json),
        Cmd::Config {
            op:
                ConfigOp::Push {
                    file,
                    stage,
                    allow_partial,
                    dry_run,
                    t,
                },
        } => {
            let opts = crate::api_types::ClusterPush {
                text: String::new(),
                dry_run,
                stage,
                allow_partial,
            };
            config_push(&file, opts, &t).await
        }
        Cmd::Config {
            op: ConfigOp::Diff { file, t },
        } => config_diff(&file, &t).await,
        Cmd::Events { markdown, json } => events_cmd(markdown, json),
        Cmd::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            // Into memory first: writing to a closed pipe (`| head`) is not a crash.
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd, "baton", &mut out);
            use std::io::Write;
            let _ = std::io::stdout().write_all(&out);
            Exit::Ok
        }
        Cmd::Man { dir } => man_cmd(dir.as_deref()),
        Cmd::Notify { op } => crate::notify_cmd::run(op).await,
        Cmd::Mirror { op } => crate::mirror_cmd::run(op).await,
        Cmd::Keygen {
            witness: Some(out),
            config,
            json,
            ..
        } => keygen_witness(&out, config, json),
        Cmd::Keygen {
            tls: Some(dir),
            config,
            json,
            ..
        } => keygen_tls(&dir, &config.unwrap_or_default(), json),
        Cmd::Keygen {
            file: Some(file),
            json,
            ..
        } => keygen_file(&file, json),
        Cmd::Keygen {
            file: None, json, ..
        } => fail(
            json,
            Exit::Usage,
            "usage",
            "keygen needs FILE, --witness OUT --config FILE or --tls DIR --config FILE",
        ),
        Cmd::Token { role, cfg, json } => token_cmd(&role, &cfg.config, json),
        Cmd::Resource {
            op,
            group,
            resource,
            cfg,
            srv,
            epoch,
            json,
        } => {
            let target = ResourceTarget {
                group: &group,
                resource: &resource,
                config: &cfg.config,
                server: &srv.server,
                epoch,
                json,
            };
            resource_cmd(&op, &target).await
        }
        Cmd::Cloud { op } => crate::cloud::run(op).await,
    }
}

async fn group_cmd(op: GroupOp) -> Exit {
    let (t, group, cmd, done, wait) = match op {
        GroupOp::Start { group, on, wait, t } => {
            let want = Want::Online(on.clone());
            let cmd = Command::GroupStart {
                group: group.clone(),
                on,
            };
            (
                t,
                group.clone(),
                cmd,
                format!("group {group}: start requested"),
                wait.map(|w| (w, want)),
            )
        }
        GroupOp::Stop { group, wait, t } => {
            let cmd = Command::GroupStop {
                group: group.clone(),
            };
            (
                t,
                group.clone(),
                cmd,
                format!("group {group}: stop requested"),
                wait.map(|w| (w, Want::Stopped)),
            )
        }
        GroupOp::Move { group, to, wait, t } => {
            let cmd = Command::GroupMove {
                group: group.clone(),
                to: to.clone(),
            };
            let want = Want::Moved { to, from: None };
            (
                t,
                group.clone(),
                cmd,
                format!("group {group}: move requested"),
                wait.map(|w| (w, want)),
            )
        }
    };
    let Some((timeout, mut want)) = wait else {
        return send_command(&t, cmd, &done).await;
    };
    let timeout = match wait_timeout(&t, &timeout) {
        Ok(d) => d,
        Err(exit) => return exit,
    };
    let (conn, _) = match connect(&t) {
        Ok(c) => c,
        Err(e) => return e,
    };
    // Where the group is before a move: it must end up elsewhere.
    if let Want::Moved { from, .. } = &mut want {
        match conn.get::<ClusterStatus>("/v1/cluster/status").await {
            Ok(st) => {
                *from = st
                    .local
                    .engine
                    .groups
                    .iter()
                    .find(|g| g.name == group)
                    .and_then(|g| g.active_on.clone());
            }
            Err(e) => {
                let (exit, code) = client_exit(&e);
                return fail(t.json, exit, &code, &client_message(&e));
            }
        }
    }
    if let Err(e) = conn
        .post::<_, serde_json::Value>("/v1/commands", &cmd)
        .await
    {
        let (exit, code) = client_exit(&e);
        return fail(t.json, exit, &code, &client_message(&e));
    }
    if !t.json {
        println!("{done}; waiting up to {} s", timeout.as_secs_f64());
    }
    let started = crate::clock::now();
    let mut last = String::from("no status yet");
    loop {
        if let Ok(st) = conn.get::<ClusterStatus>("/v1/cluster/status").await {
            if let Some(g) = st.local.engine.groups.iter().find(|g| g.name == group) {
                let here = format!(
                    "{} on {} (epoch {})",
                    g.state.as_str(),
                    g.active_on.as_deref().unwrap_or("-"),
                    g.epoch
                );
                let waited = crate::clock::now().duration_since(started);
                if want.reached(g) {
                    if t.json {
                        println!(
                            "{}",
                            serde_json::json!({"ok": true, "command": cmd, "group": group, "state": g.state, "active_on": g.active_on, "epoch": g.epoch, "waited_ms": waited.as_millis() as u64})
                        );
                    } else {
                        println!("group {group}: {here}, after {:.1} s", waited.as_secs_f64());
                    }
                    return Exit::Ok;
                }
                // A failed group will not get there by itself.
                if matches!(g.state, GroupState::Failed | GroupState::Stuck)
                    && !matches!(want, Want::Stopped)
                {
                    return fail(
                        t.json,
                        Exit::Failure,
                        "wait-failed",
                        &format!("group {group} is {here}: it will not reach {} by itself (see `baton alerts`)", want.describe()),
                    );
                }
                last = here;
            }
        }
        if crate::clock::now().duration_since(started) >= timeout {
            return fail(
                t.json,
                Exit::Failure,
                "wait-timeout",
                &format!(
                    "group {group} did not reach {} within {} s: it is {last}",
                    want.describe(),
                    timeout.as_secs_f64()
                ),
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// What `group … --wait` waits for.
#[derive(Debug, Clone)]
enum Want {
    /// Online (on this server, if given).
    Online(Option<String>),
    /// Offline everywhere.
    Stopped,
    /// Online on `to` (or on any server but `from`).
    Moved {
        to: Option<String>,
        from: Option<String>,
    },
}

impl Want {
    fn reached(&self, g: &baton_core::engine::GroupStatus) -> bool {
        let online = g.state == GroupState::Online;
        match self {
            Want::Online(None) => online,
            Want::Online(Some(s)) => online && g.active_on.as_deref() == Some(s),
            Want::Stopped => {
                g.state == GroupState::Offline && g.per_server.values().all(|s| !s.holds())
            }
            Want::Moved { to: Some(s), .. } => online && g.active_on.as_deref() == Some(s),
            Want::Moved { to: None, from } => online && g.active_on != *from,
        }
    }

    fn describe(&self) -> String {
        match self {
            Want::Online(None) => "online".into(),
            Want::Online(Some(s)) => format!("online on {s}"),
            Want::Stopped => "offline everywhere".into(),
            Want::Moved { to: Some(s), .. } => format!("online on {s}"),
            Want::Moved { to: None, from } => format!(
                "online on another server than {}",
                from.as_deref().unwrap_or("-")
            ),
        }
    }
}

async fn cluster_cmd(op: ClusterOp) -> Exit {
    match op {
        ClusterOp::Suspend { t } => {
            send_command(&t, Command::ClusterSuspend, "cluster suspended").await
        }
        ClusterOp::Resume { t } => {
            send_command(&t, Command::ClusterResume, "cluster resumed").await
        }
        ClusterOp::Stop { t, wait: None } => {
            send_command(
                &t,
                Command::ClusterStop,
                "cluster stop requested: every agent stops its groups and exits",
            )
            .await
        }
        ClusterOp::Stop { t, wait: Some(w) } => cluster_stop_wait(&t, &w).await,
    }
}

/// The value of `--wait`, or the usage error to exit with.
fn wait_timeout(t: &Target, timeout: &str) -> Result<std::time::Duration, Exit> {
    parse_duration(timeout).map(|d| d.0).map_err(|e| {
        fail(
            t.json,
            Exit::Usage,
            "usage",
            &format!("--wait {timeout}: {e}"),
        )
    })
}

/// `cluster stop --wait`: request the stop, then poll until no agent answers.
async fn cluster_stop_wait(t: &Target, timeout: &str) -> Exit {
    let timeout = match wait_timeout(t, timeout) {
        Ok(d) => d,
        Err(exit) => return exit,
    };
    let (conn, _) = match connect(t) {
        Ok(c) => c,
        Err(e) => return e,
    };
    if let Err(e) = conn
        .post::<_, serde_json::Value>("/v1/commands", &Command::ClusterStop)
        .await
    {
        let (exit, code) = client_exit(&e);
        return fail(t.json, exit, &code, &client_message(&e));
    }
    if !t.json {
        println!(
            "cluster stop requested: every agent stops its groups and exits; waiting up to {} s",
            timeout.as_secs_f64()
        );
    }
    let started = crate::clock::now();
    let mut last: String;
    loop {
        match conn.get::<ClusterStatus>("/v1/cluster/status").await {
            // No agent of the configuration answers any more: all have exited.
            Err(ClientError::Unreachable { .. }) => {
                let waited = crate::clock::now().duration_since(started);
                if t.json {
                    println!(
                        "{}",
                        serde_json::json!({"ok": true, "command": "cluster-stop", "waited_ms": waited.as_millis() as u64})
                    );
                } else {
                    println!(
                        "cluster stopped: no agent answers, after {:.1} s",
                        waited.as_secs_f64()
                    );
                }
                return Exit::Ok;
            }
            Err(e) => last = client_message(&e),
            Ok(st) => {
                let e = &st.local.engine;
                let running: Vec<&str> = e
                    .servers
                    .iter()
                    .filter(|s| s.up)
                    .map(|s| s.name.as_str())
                    .collect();
                let online: Vec<String> = e
                    .groups
                    .iter()
                    .filter_map(|g| g.active_on.as_ref().map(|on| format!("{} on {on}", g.name)))
                    .collect();
                last = format!(
                    "agents still running: {}; groups online: {}",
                    running.join(", "),
                    if online.is_empty() {
                        "none".into()
                    } else {
                        online.join(", ")
                    }
                );
            }
        }
        if crate::clock::now().duration_since(started) >= timeout {
            return fail(
                t.json,
                Exit::Failure,
                "wait-timeout",
                &format!(
                    "the cluster did not stop within {} s: {last}",
                    timeout.as_secs_f64()
                ),
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

async fn monitor_cmd(op: MonitorOp) -> Exit {
    match op {
        MonitorOp::Suspend { monitor, t } => {
            send_command(
                &t,
                Command::MonitorSuspend {
                    monitor: monitor.clone(),
                },
                &format!("monitor {monitor} suspended"),
            )
            .await
        }
        MonitorOp::Resume { monitor, t } => {
            send_command(
                &t,
                Command::MonitorResume {
                    monitor: monitor.clone(),
                },
                &format!("monitor {monitor} resumed"),
            )
            .await
        }
    }
}

async fn timeout_cmd(op: TimeoutOp) -> Exit {
    match op {
        TimeoutOp::Set {
            heartbeat,
            monitor_factor,
            duration,
            t,
        } => {
            let dur = match parse_duration(&duration) {
                Ok(d) => d,
                Err(m) => return fail(t.json, Exit::Usage, "bad-duration", &format!("--for: {m}")),
            };
            let hb = match heartbeat.as_deref().map(parse_duration).transpose() {
                Ok(h) => h,
                Err(m) => {
                    return fail(
                        t.json,
                        Exit::Usage,
                        "bad-duration",
                        &format!("--heartbeat: {m}"),
                    )
                }
            };
            if hb.is_none() && monitor_factor.is_none() {
                return fail(
                    t.json,
                    Exit::Usage,
                    "nothing-to-set",
                    "give --heartbeat DURATION and/or --monitor-factor PERCENT",
                );
            }
            let cmd = Command::TimeoutSet {
                heartbeat_timeout_ms: hb.map_or(0, |h| h.ms()),
                monitor_factor_pct: monitor_factor.unwrap_or(100),
                duration_ms: dur.ms(),
            };
            send_command(&t, cmd, &format!("temporary timeouts set for {dur}")).await
        }
        TimeoutOp::Clear { t } => {
            send_command(&t, Command::TimeoutClear, "temporary timeouts cleared").await
        }
    }
}

/// `baton events`: the catalogue as lines, Markdown (the docs page) or JSON.
/// `baton man`: the whole CLI as roff, from its clap definition.
fn man_cmd(dir: Option<&std::path::Path>) -> Exit {
    let cmd = <Cli as clap::CommandFactory>::command();
    match dir {
        None => {
            let mut out = Vec::new();
            if let Err(e) = clap_mangen::Man::new(cmd).render(&mut out) {
                return fail(
                    false,
                    Exit::Failure,
                    "man",
                    &format!("rendering the man page: {e}"),
                );
            }
            use std::io::Write;
            let _ = std::io::stdout().write_all(&out);
            Exit::Ok
        }
        Some(d) => {
            if let Err(e) = std::fs::create_dir_all(d) {
                return fail(
                    false,
                    Exit::Failure,
                    "man",
                    &format!("creating {}: {e}", d.display()),
                );
            }
            // One page for `baton`, then `baton-COMMAND[-SUB].1` for every (sub)command.
            fn pages(
                cmd: clap::Command,
                name: String,
                d: &std::path::Path,
            ) -> std::io::Result<usize> {
                let mut n = 0;
                for sub in cmd
                    .get_subcommands()
                    .filter(|c| !c.is_hide_set() && c.get_name() != "help")
                {
                    let sub_name = format!("{name}-{}", sub.get_name());
                    n += pages(sub.clone(), sub_name, d)?;
                }
                let mut out = Vec::new();
                clap_mangen::Man::new(cmd)
                    .title(name.clone())
                    .render(&mut out)?;
                std::fs::write(d.join(format!("{name}.1")), out)?;
                Ok(n + 1)
            }
            let mut cmd = cmd;
            cmd.build();
            match pages(cmd, "baton".into(), d) {
                Ok(n) => {
                    println!("wrote {n} man pages into {}", d.display());
                    Exit::Ok
                }
                Err(e) => fail(
                    false,
                    Exit::Failure,
                    "man",
                    &format!("writing into {}: {e}", d.display()),
                ),
            }
        }
    }
}

fn events_cmd(markdown: bool, json: bool) -> Exit {
    if markdown {
        print!("{}", baton_core::events::catalogue_markdown());
    } else if json {
        let v: Vec<_> = baton_core::events::CATALOGUE
            .iter()
            .map(|d| serde_json::json!({"id": d.code(), "severity": d.severity, "module": d.module, "title": d.title, "cause": d.cause, "action": d.action}))
            .collect();
        println!("{}", serde_json::Value::Array(v));
    } else {
        for d in baton_core::events::CATALOGUE {
            println!(
                "{}  {:<8} {:<11} {}",
                d.code(),
                d.severity.as_str(),
                d.module,
                d.title
            );
        }
    }
    Exit::Ok
}

/// `baton keygen --witness OUT -c CONFIG`.
fn keygen_witness(out: &std::path::Path, config: Option<PathBuf>, json: bool) -> Exit {
    let config = config.unwrap_or_default();
    match crate::witness::write_witness_key_file(out, &config) {
        Ok(cluster) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "cluster": cluster, "witness_key_file": out.display().to_string()})
                );
            } else {
                println!(
                    "wrote the witness key of cluster `{cluster}` to {} (mode 0600; give it to `baton witness --key-file`)",
                    out.display()
                );
            }
            Exit::Ok
        }
        Err(crate::witness::WitnessKeyError::Config(e)) => {
            for d in &e.diagnostics {
                eprintln!("{d}");
            }
            fail(json, Exit::ConfigInvalid, e.code(), &e.to_string())
        }
        Err(e) => fail(json, Exit::KeyError, e.code(), &e.to_string()),
    }
}

/// The configuration in `file`, or its diagnostics printed and exit 3.
fn load_config_or_report(file: &std::path::Path, json: bool) -> Result<Config, Exit> {
    crate::catalog::load_config(file).map_err(|e| {
        for d in &e.diagnostics {
            eprintln!("{d}");
        }
        fail(json, Exit::ConfigInvalid, e.code(), &e.to_string())
    })
}

/// `baton token --role ROLE`: the role token derived from the cluster key.
fn token_cmd(role: &str, config: &std::path::Path, json: bool) -> Exit {
    let cfg = match load_config_or_report(config, json) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    let key_path = crate::catalog::config_path(config, &cfg.key_file);
    let key = match ClusterKey::load(&key_path) {
        Ok(k) => k,
        Err(e) => return fail(json, Exit::KeyError, e.code(), &e.to_string()),
    };
    let api_role = if role == "read" {
        baton_core::config::ApiRole::Read
    } else {
        baton_core::config::ApiRole::Operator
    };
    if !cfg.api.derived_tokens {
        eprintln!("note: [api] derived_tokens = false: the agents do not accept this token");
    }
    let token = crate::tokens::derived_token(&key, api_role);
    if json {
        println!(
            "{}",
            serde_json::json!({"ok": true, "role": role, "token": token, "accepted": cfg.api.derived_tokens})
        );
    } else {
        println!("{token}");
    }
    Exit::Ok
}

/// `baton keygen FILE`: a new cluster key.
fn keygen_file(file: &std::path::Path, json: bool) -> Exit {
    match crate::key::generate_key_file(file) {
        Ok(()) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "key_file": file.display().to_string()})
                );
            } else {
                println!(
                    "wrote a new cluster key to {} (copy it to every server, mode 0600)",
                    file.display()
                );
            }
            Exit::Ok
        }
        Err(e) => fail(json, Exit::KeyError, e.code(), &e.to_string()),
    }
}

/// `baton keygen --tls DIR -c CONFIG`: the CA and the servers' certificates, and the
/// `[api]` lines that use them.
fn keygen_tls(dir: &std::path::Path, config: &std::path::Path, json: bool) -> Exit {
    let cfg = match load_config_or_report(config, json) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    let out = match crate::tls::issue(dir, &cfg) {
        Ok(out) => out,
        Err(e) => return fail(json, Exit::KeyError, e.code(), &e.to_string()),
    };
    if json {
        let servers: Vec<_> = out
            .servers
            .iter()
            .map(|(name, crt, key)| {
                serde_json::json!({"server": name, "cert_file": crt.display().to_string(), "key_file": key.display().to_string()})
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"ok": true, "ca_file": out.ca_cert.display().to_string(), "reused_ca": out.reused_ca, "servers": servers})
        );
        return Exit::Ok;
    }
    let ca = if out.reused_ca {
        "kept the CA"
    } else {
        "wrote a new CA"
    };
    println!(
        "{ca} {} (its key beside it: keep it off the servers)",
        out.ca_cert.display()
    );
    for (name, crt, key) in &out.servers {
        println!(
            "server {name}: {} and {} (mode 0600)",
            crt.display(),
            key.display()
        );
    }
    let d = dir.display();
    println!(
        "\nCopy ca.crt and each server's own .crt and .key to it, and set in {}:\n\n[api]\ntls_cert_file = \"{d}/{{server}}.crt\"\ntls_key_file = \"{d}/{{server}}.key\"\ntls_ca_file = \"{d}/ca.crt\"",
        config.display()
    );
    Exit::Ok
}

fn config_check(file: &std::path::Path, json: bool) -> Exit {
    match crate::catalog::load(file) {
        Ok(l) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "file": file.display().to_string(), "digest": l.config.digest, "warnings": l.warnings})
                );
            } else {
                for w in &l.warnings {
                    eprintln!("{w}");
                }
                println!(
                    "{}: OK — cluster `{}`, {} servers, {} groups, {} monitors, digest {}",
                    file.display(),
                    l.config.cluster_name,
                    l.config.servers.len(),
                    l.config.groups.len(),
                    l.config.monitors.len(),
                    &l.config.digest[..16]
                );
            }
            Exit::Ok
        }
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "file": file.display().to_string(), "error": {"code": e.code(), "message": e.to_string()}, "diagnostics": e.diagnostics})
                );
            } else {
                for d in &e.diagnostics {
                    eprintln!("{d}");
                }
                let n = e
                    .diagnostics
                    .iter()
                    .filter(|d| d.level == Level::Error)
                    .count();
                eprintln!("{}: {n} error(s); nothing was changed", file.display());
            }
            Exit::ConfigInvalid
        }
    }
}

async fn status(t: &Target, watch: Option<&str>) -> Exit {
    use std::io::{IsTerminal, Write};
    let (conn, cfg) = match connect(t) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let every = match watch.map(parse_duration) {
        None => None,
        Some(Ok(d)) if d.0 >= Duration::from_millis(100) => Some(d.0),
        Some(_) => {
            return fail(
                t.json,
                Exit::Usage,
                "usage",
                "--watch takes an interval of at least 100ms, e.g. 2s",
            )
        }
    };
    let tty = std::io::stdout().is_terminal();
    let mut first = true;
    loop {
        match conn.get::<ClusterStatus>("/v1/cluster/status").await {
            Ok(st) => {
                let events = status_events(&conn, &cfg, &st).await;
                let now = crate::clock::unix_ms();
                if t.json {
                    let v = crate::status_view::json(&st, &events, now);
                    if every.is_some() {
                        println!("{}", serde_json::to_string(&v).unwrap_or_default());
                    } else {
                        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                    }
                } else {
                    let text = crate::status_view::render(&st, &events, now);
                    if every.is_some() && tty {
                        print!("\x1b[H\x1b[2J{text}");
                    } else {
                        if !first {
                            println!("{}", "-".repeat(72));
                        }
                        print!("{text}");
                    }
                }
            }
            Err(e) => {
                let (exit, code) = client_exit(&e);
                if every.is_none() {
                    return fail(t.json, exit, &code, &client_message(&e));
                }
                // Watching: say it and keep trying (the cluster may come back).
                eprintln!("{}: {}", code, client_message(&e));
            }
        }
        let _ = std::io::stdout().flush();
        first = false;
        match every {
            Some(d) => tokio::time::sleep(d).await,
            None => return Exit::Ok,
        }
    }
}

/// The recent events of every server that answered (they explain what is not healthy).
/// Through the local Unix socket only the local server's log can be read.
async fn status_events(conn: &Conn, cfg: &Config, st: &ClusterStatus) -> Vec<Event> {
    let mut names = vec![st.via.clone()];
    if !conn.client.is_unix() {
        names.extend(
            st.peers
                .iter()
                .filter(|p| p.status.is_some())
                .map(|p| p.server.clone()),
        );
    }
    let mut out = Vec::new();
    for n in names {
        let Some(s) = cfg.server(&n) else { continue };
        if let Ok(mut evs) = conn
            .client
            .get::<Vec<Event>>(s.api, "/v1/alerts?tail=500", Duration::from_secs(3))
            .await
        {
            out.append(&mut evs);
        }
    }
    out
}

async fn support_bundle(t: &Target, output: Option<PathBuf>) -> Exit {
    let (conn, cfg) = match connect(t) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let servers: Vec<(String, SocketAddr)> = cfg
        .servers
        .iter()
        .filter(|s| t.server.as_ref().is_none_or(|n| &s.name == n))
        .map(|s| (s.name.clone(), s.api))
        .collect();
    match crate::support_bundle::collect(&conn.client, &cfg, &servers, output).await {
        Ok(b) => {
            if t.json {
                println!(
                    "{}",
                    serde_json::json!({"path": b.path, "servers": b.reached, "missing": b.missing})
                );
            } else {
                for m in &b.missing {
                    eprintln!("not collected: {m}");
                }
                println!("{}", b.path.display());
            }
            if b.reached.is_empty() {
                Exit::Failure
            } else {
                Exit::Ok
            }
        }
        Err(e) => fail(t.json, Exit::Failure, "bundle-write-failed", &e),
    }
}

/// `baton status --check`: the verdict of [`crate::health::judge`], printed as one line
/// (or JSON), its level as the exit code.
async fn status_check(t: &Target) -> Exit {
    use crate::health::{judge, Health, Level};
    let h = match connect(t) {
        Ok((conn, _)) => match conn.get::<ClusterStatus>("/v1/cluster/status").await {
            Ok(st) => judge(&st),
            Err(e) => Health::unreachable(&client_message(&e)),
        },
        Err(Exit::ConfigInvalid) => {
            println!("BATON UNKNOWN - the configuration is invalid (see above)");
            return Exit::ConfigInvalid;
        }
        Err(_) => Health::unreachable("cannot reach or authenticate to any agent (see above)"),
    };
    if t.json {
        let problems: Vec<serde_json::Value> = h
            .problems
            .iter()
            .map(|(l, m)| serde_json::json!({"level": l, "problem": m}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"status": h.level, "code": h.level.code(), "summary": h.summary, "problems": problems, "line": h.line()})
        );
    } else {
        println!("{}", h.line());
    }
    // The plugin convention's codes; they coincide with Exit's 0, 1 and 2.
    match h.level {
        Level::Ok => Exit::Ok,
        Level::Warning => Exit::Failure,
        Level::Critical => Exit::Usage,
    }
}

/// Human-readable status (without the events that explain problems; `baton status`
/// reads them too).
pub fn render_status(st: &ClusterStatus) -> String {
    crate::status_view::render(st, &[], crate::clock::unix_ms())
}

fn print_event(e: &Event, json: bool) {
    if json {
        println!("{}", serde_json::to_string(e).unwrap_or_default());
    } else {
        // ISO 8601, UTC, to the millisecond.
        let at = std::time::UNIX_EPOCH + Duration::from_millis(e.time_ms);
        println!(
            "{:>6} {} {:<8} {:<9} {}",
            e.seq,
            humantime::format_rfc3339_millis(at),
            e.severity.as_str(),
            e.server,
            e.line()
        );
    }
}

/// `baton alerts --severity/--group/--since`: which events to show.
#[derive(Debug, Default)]
struct AlertFilter {
    min: Option<baton_core::Severity>,
    group: Option<String>,
    /// Unix ms: nothing older.
    since_ms: Option<u64>,
}

impl AlertFilter {
    fn parse(
        severity: Option<String>,
        group: Option<String>,
        since: Option<String>,
    ) -> Result<AlertFilter, String> {
        use baton_core::Severity;
        let min = match severity.as_deref() {
            None => None,
            Some("info") => Some(Severity::Info),
            Some("warning") => Some(Severity::Warning),
            Some("error") => Some(Severity::Error),
            Some("critical") => Some(Severity::Critical),
            Some(other) => {
                return Err(format!(
                    "--severity {other}: use info, warning, error or critical"
                ))
            }
        };
        let since_ms = match since {
            None => None,
            Some(d) => {
                let d = parse_duration(&d).map_err(|e| format!("--since {d}: {e}"))?;
                Some(crate::clock::unix_ms().saturating_sub(d.ms()))
            }
        };
        Ok(AlertFilter {
            min,
            group,
            since_ms,
        })
    }

    fn active(&self) -> bool {
        self.min.is_some() || self.group.is_some() || self.since_ms.is_some()
    }

    fn keeps(&self, e: &Event) -> bool {
        self.min.is_none_or(|m| e.severity >= m)
            && self
                .group
                .as_ref()
                .is_none_or(|g| e.group.as_deref() == Some(g.as_str()))
            && self.since_ms.is_none_or(|t| e.time_ms >= t)
    }
}

async fn alerts(t: &Target, follow: bool, after: Option<u64>, filter: &AlertFilter) -> Exit {
    let (mut conn, _) = match connect(t) {
        Ok(c) => c,
        Err(e) => return e,
    };
    if let Some(a) = conn.first_answering().await {
        conn.pin(a);
    }
    // Without --after: the last 20 events (the last 20 that pass the filters, among the
    // last 5000), then everything after them.
    let tail = if filter.active() { 5000 } else { 20 };
    let path = |cursor: Option<u64>| match cursor {
        Some(c) => format!("/v1/alerts?after={c}&limit=1000"),
        None => format!("/v1/alerts?tail={tail}"),
    };
    let mut cursor = after;
    loop {
        match conn.get::<Vec<Event>>(&path(cursor)).await {
            Ok(evs) => {
                let kept: Vec<&Event> = evs.iter().filter(|e| filter.keeps(e)).collect();
                let skip = if cursor.is_none() {
                    kept.len().saturating_sub(20)
                } else {
                    0
                };
                for e in kept.into_iter().skip(skip) {
                    print_event(e, t.json);
                }
                for e in &evs {
                    cursor = Some(cursor.unwrap_or(0).max(e.seq));
                }
                cursor.get_or_insert(0);
            }
            Err(e) => {
                let (exit, code) = client_exit(&e);
                return fail(t.json, exit, &code, &client_message(&e));
            }
        }
        if !follow {
            return Exit::Ok;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What `baton resource` acts on.
#[derive(Clone, Copy)]
struct ResourceTarget<'a> {
    group: &'a str,
    resource: &'a str,
    config: &'a std::path::Path,
    server: &'a str,
    epoch: u64,
    json: bool,
}

async fn resource_cmd(op: &str, t: &ResourceTarget<'_>) -> Exit {
    let ResourceTarget {
        group,
        resource,
        config,
        server,
        epoch,
        json,
    } = *t;
    let cfg = match crate::catalog::load_config(config) {
        Ok(c) => c,
        Err(e) => {
            for d in &e.diagnostics {
                eprintln!("{d}");
            }
            return fail(json, Exit::ConfigInvalid, e.code(), &e.to_string());
        }
    };
    // The commands get the same environment as under the agent.
    baton_providers::process::set_env_passthrough(cfg.agent.script_env.clone());
    let Some(r) = cfg
        .group(group)
        .and_then(|g| g.resources.iter().find(|r| r.name == resource))
    else {
        return fail(
            json,
            Exit::Usage,
            "unknown-resource",
            &format!("no resource `{resource}` in group `{group}`"),
        );
    };
    let reg = baton_providers::registry(&cfg.aws, &cfg.azure, &cfg.gcp);
    let driver =
        match baton_providers::Registry::build_resource(&reg, &r.kind, &r.params_for(server)) {
            Ok(d) => d,
            Err(e) => return fail(json, Exit::ConfigInvalid, "bad-params", &e.to_string()),
        };
    let ctx = baton_providers::ActionContext {
        cluster: cfg.cluster_name.clone(),
        group: group.into(),
        resource: resource.into(),
        server: server.into(),
        epoch,
        timeout: if op == "deactivate" {
            r.deactivation.timeout.0
        } else {
            r.activation.timeout.0
        },
    };
    let res = match op {
        "activate" => driver.activate(&ctx).await.map(|_| "activated".to_string()),
        "deactivate" => driver
            .deactivate(&ctx)
            .await
            .map(|_| "deactivated".to_string()),
        _ => driver
            .check(&ctx)
            .await
            .map(|c| format!("{c:?}").to_lowercase()),
    };
    match res {
        Ok(s) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "group": group, "resource": resource, "server": server, "op": op, "result": s})
                );
            } else {
                println!("{resource}: {s}");
            }
            Exit::Ok
        }
        Err(e) => fail(json, Exit::Failure, e.code(), &format!("{resource}: {e}")),
    }
}

fn short(d: &str) -> &str {
    &d[..d.len().min(12)]
}

/// `baton config push FILE`.
async fn config_push(
    file: &std::path::Path,
    mut opts: crate::api_types::ClusterPush,
    t: &Target,
) -> Exit {
    use crate::api_types::PushReport;
    opts.text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => {
            return fail(
                t.json,
                Exit::ConfigInvalid,
                "config-unreadable",
                &format!("cannot read {}: {e}", file.display()),
            )
        }
    };
    let (conn, _) = match connect(t) {
        Ok(c) => c,
        Err(e) => return e,
    };
    // Every server checks, then applies: allow for the slowest peer's answers (20 s each
    // way).
    let report: PushReport = match conn
        .post_within("/v1/cluster/config", &opts, Duration::from_secs(50))
        .await
    {
        Ok(r) => r,
        Err(e) => {
            let (exit, code) = client_exit(&e);
            return fail(t.json, exit, &code, &client_message(&e));
        }
    };
    let invalid = report
        .servers
        .iter()
        .any(|r| r.error.as_ref().is_some_and(|e| e.code == "config-invalid"));
    let exit = match report.outcome.as_str() {
        _ if report.ok => Exit::Ok,
        _ if invalid => Exit::ConfigInvalid,
        "refused" if report.servers.iter().all(|r| r.outcome == "unreachable") => Exit::Unreachable,
        "refused" | "dry-run" => Exit::Refused,
        _ => Exit::Failure,
    };
    if t.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
        return exit;
    }
    let nd = match report.new_digest.as_deref() {
        Some(d) => format!("digest {}…", short(d)),
        None => "not valid".to_string(),
    };
    println!(
        "{}: {nd} via {}: {}",
        file.display(),
        report.via,
        match report.outcome.as_str() {
            "refused" => "refused, nothing was changed on any server",
            "partial" => "applied on some servers only",
            "applied" => "applied on every server, no group restarted",
            "staged" => "stored on every server for the next restart (restart each agent, one after the other)",
            "dry-run" if report.ok => "every server would take it (dry run, nothing changed)",
            "dry-run" => "not every server would take it (dry run, nothing changed)",
            o => o,
        }
    );
    let width = report
        .servers
        .iter()
        .map(|r| r.server.len())
        .max()
        .unwrap_or(0);
    for r in &report.servers {
        let detail = match &r.error {
            Some(e) => format!("{}: {}", e.code, e.message),
            None if r.outcome == "applied" => {
                format!("{}… -> {}…", short(&r.digest_before), short(&r.digest))
            }
            None => format!("runs {}…", short(&r.digest)),
        };
        println!("  {:width$}  {:10} {detail}", r.server, r.outcome);
        for d in &r.diagnostics {
            println!("      {d}");
        }
    }
    if report.outcome == "partial" || (report.outcome == "refused" && !report.ok) {
        let missing: Vec<&str> = report
            .servers
            .iter()
            .filter(|r| r.outcome == "unreachable")
            .map(|r| r.server.as_str())
            .collect();
        if !missing.is_empty() && report.outcome == "refused" {
            println!("  not every server answered ({}): push again when they are up, or with --allow-partial", missing.join(", "));
        } else if !missing.is_empty() {
            println!("  {} keep the previous configuration and refuse to activate groups while the others run this one: push again once they are up", missing.join(", "));
        }
    }
    if let Some(r) = report.servers.iter().find(|r| !r.changes.is_empty()) {
        println!("changes (from what {} runs):", r.server);
        for c in &r.changes {
            println!("  {}", c.line());
        }
    }
    exit
}

/// `baton config diff FILE`.
async fn config_diff(file: &std::path::Path, t: &Target) -> Exit {
    use crate::api_types::ClusterConfig;
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => {
            return fail(
                t.json,
                Exit::ConfigInvalid,
                "config-unreadable",
                &format!("cannot read {}: {e}", file.display()),
            )
        }
    };
    let digest = crate::catalog::load_text(file, &text)
        .map(|l| l.config.digest)
        .ok();
    let (conn, _) = match connect(t) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let cluster: ClusterConfig = match conn.get("/v1/cluster/config").await {
        Ok(c) => c,
        Err(e) => {
            let (exit, code) = client_exit(&e);
            return fail(t.json, exit, &code, &client_message(&e));
        }
    };
    // One diff per distinct running configuration.
    let mut by_digest: Vec<(
        String,
        Vec<String>,
        Vec<baton_core::config::changes::Change>,
    )> = Vec::new();
    for sc in &cluster.servers {
        let Some(c) = &sc.config else { continue };
        if let Some(e) = by_digest.iter_mut().find(|e| e.0 == c.digest) {
            e.1.push(sc.server.clone());
            continue;
        }
        let changes = match baton_core::config::changes::diff_text(&c.text, &text) {
            Ok(ch) => ch,
            Err(e) => return fail(t.json, Exit::ConfigInvalid, "config-invalid", &e),
        };
        by_digest.push((c.digest.clone(), vec![sc.server.clone()], changes));
    }
    if t.json {
        let servers: Vec<serde_json::Value> = cluster
            .servers
            .iter()
            .map(|sc| match &sc.config {
                Some(c) => serde_json::json!({
                    "server": sc.server, "digest": c.digest,
                    "same": Some(&c.digest) == digest.as_ref(),
                    "staged_digest": c.staged_digest,
                }),
                None => serde_json::json!({"server": sc.server, "error": sc.error}),
            })
            .collect();
        let diffs: Vec<serde_json::Value> = by_digest
            .iter()
            .map(|(d, s, c)| serde_json::json!({"digest": d, "servers": s, "changes": c}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "ok": true, "file": file.display().to_string(), "digest": digest,
                "servers": servers, "diffs": diffs,
            }))
            .unwrap_or_default()
        );
        return Exit::Ok;
    }
    match &digest {
        Some(d) => println!("{}: digest {}…", file.display(), short(d)),
        None => println!(
            "{}: not a valid configuration (baton config check {} says why)",
            file.display(),
            file.display()
        ),
    }
    let width = cluster
        .servers
        .iter()
        .map(|s| s.server.len())
        .max()
        .unwrap_or(0);
    for sc in &cluster.servers {
        match &sc.config {
            Some(c) => {
                let same = if Some(&c.digest) == digest.as_ref() {
                    "same"
                } else {
                    "differs"
                };
                let staged = c
                    .staged_digest
                    .as_deref()
                    .map(|s| format!(" (staged for restart: {}…)", short(s)))
                    .unwrap_or_default();
                println!(
                    "  {:width$}  runs {}…  {same}{staged}",
                    sc.server,
                    short(&c.digest)
                );
            }
            None => println!(
                "  {:width$}  unreachable: {}",
                sc.server,
                sc.error.as_deref().unwrap_or("")
            ),
        }
    }
    for (d, servers, changes) in &by_digest {
        if changes.is_empty() {
            continue;
        }
        println!(
            "{} from what {} run{} ({}…):",
            file.display(),
            servers.join(", "),
            if servers.len() == 1 { "s" } else { "" },
            short(d)
        );
        for c in changes {
            println!("  {}", c.line());
        }
    }
    Exit::Ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_pinned() {
        // Scripts depend on these values; they are documented in docs/src/operations.md
        // and may never change.
        let pinned = [
            (Exit::Ok, 0),
            (Exit::Failure, 1),
            (Exit::Usage, 2),
            (Exit::ConfigInvalid, 3),
            (Exit::Unreachable, 4),
            (Exit::Refused, 5),
            (Exit::Unauthorized, 6),
            (Exit::KeyError, 7),
        ];
        for (e, v) in pinned {
            assert_eq!(e.code(), v, "{e:?}");
        }
    }

    #[test]
    fn cli_parses_the_documented_commands() {
        for args in [
            vec!["baton", "status", "--json"],
            vec!["baton", "group", "move", "web", "--to", "node-2"],
            vec!["baton", "group", "start", "web", "--on", "node-1"],
            vec!["baton", "cluster", "suspend"],
            vec!["baton", "monitor", "resume", "web-http"],
            vec![
                "baton",
                "timeout",
                "set",
                "--heartbeat",
                "30s",
                "--for",
                "2h",
            ],
            vec!["baton", "alerts", "--follow"],
            vec!["baton", "config", "check", "x.toml", "--json"],
        ] {
            assert!(Cli::try_parse_from(&args).is_ok(), "{args:?}");
        }
        let e = Cli::try_parse_from(["baton", "group", "explode", "web"]).unwrap_err();
        assert!(e.use_stderr());
    }

    #[test]
    fn json_goes_anywhere() {
        for args in [
            vec!["baton", "--json", "status"],
            vec!["baton", "--json", "group", "move", "web", "--to", "node-2"],
            vec!["baton", "--json", "config", "check", "x.toml"],
            vec!["baton", "status", "--json"],
        ] {
            let cli = Cli::parse_args(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            let printed = format!("{cli:?}");
            assert!(printed.contains("json: true"), "{args:?}: {printed}");
        }
        // A command without --json, or no command: refused as before.
        assert!(Cli::parse_args(["baton", "--json", "keygen-nothing"]).is_err());
        assert!(Cli::parse_args(["baton", "--json"]).is_err());
        assert_eq!(
            json_after_command(
                ["baton", "--json", "group", "stop", "web"]
                    .map(Into::into)
                    .to_vec()
            ),
            ["baton", "group", "stop", "--json", "web"]
                .map(std::ffi::OsString::from)
                .to_vec()
        );
    }
}
