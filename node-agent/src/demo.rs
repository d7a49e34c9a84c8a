//! `baton demo`: a local 3-server cluster on 127.0.x.y that fails over in front of you.
//! No root and no cloud: the servers are three agent processes on loopback addresses,
//! the service is a small HTTP app started by an `exec` resource and watched by an
//! `http` monitor.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, UNIX_EPOCH};

use baton_core::engine::GroupState;
use baton_core::events::Event;
use serde::Serialize;
use tokio::process::{Child, Command};

use crate::api_types::ClusterStatus;
use crate::cli::render_status;
use crate::client::Client;
use crate::exit::Exit;
use crate::key::ClusterKey;

pub struct DemoOptions {
    pub dir: Option<PathBuf>,
    pub interval: String,
    pub timeout: String,
    pub net: u8,
    pub port: u16,
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct Timeline {
    pub killed: String,
    pub new_owner: String,
    pub detected_ms: Option<u64>,
    /// The floor: when the new owner may activate, `T + W_g` after the killed server's
    /// last heartbeat (its BTN-1136 plus the wait it announced).
    pub floor_ms: Option<u64>,
    pub activating_ms: Option<u64>,
    pub activated_ms: u64,
    pub total_ms: u64,
    pub app_answer: String,
}

struct Node {
    name: String,
    api: SocketAddr,
    app: SocketAddr,
    child: Option<Child>,
}

fn unix_ms() -> u64 {
    // Wall-clock time, only to line up the demo's kill with the agents' event stamps.
    crate::clock::wall()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
}

fn say(json: bool, s: &str) {
    if !json {
        println!("{s}");
    }
}

pub async fn run(o: DemoOptions) -> Exit {
    let keep = o.dir.is_some();
    let dir = o
        .dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("baton-demo-{}", std::process::id())));
    let result = run_inner(&o, &dir).await;
    if !keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    match result {
        Ok(t) => {
            if o.json {
                println!("{}", serde_json::to_string(&t).unwrap_or_default());
            }
            Exit::Ok
        }
        Err(e) => {
            eprintln!("baton demo: {e}");
            Exit::Failure
        }
    }
}

/// The demo's configuration (its group's timing is checked against the getting-started page by
/// node-agent/tests/docs_drift.rs).
pub fn config_text(o: &DemoOptions, dir: &Path, exe: &Path) -> String {
    let n = o.net;
    let mut s = format!(
        r#"# Written by `baton demo`: three servers on loopback addresses.
[cluster]
name = "demo"
key_file = "cluster.key"

[heartbeat]
interval = "{interval}"
timeout = "{timeout}"

[agent]
shutdown_timeout = "20s"
# The demo never resets this machine: the self-fence writes to a file and the commands
# only log.
sysrq_trigger = "{d}/sysrq-trigger"
force_reboot_command = 'echo force-reboot >> "{d}/fence-commands.log"'
force_poweroff_command = 'echo force-poweroff >> "{d}/fence-commands.log"'
reboot_command = 'echo reboot >> "{d}/fence-commands.log"'
shutdown_command = 'echo poweroff >> "{d}/fence-commands.log"'

# The agents' Unix sockets for the local CLI, in the demo's directory.
[api]
socket_dir = "{d}/run"
"#,
        interval = o.interval,
        timeout = o.timeout,
        d = dir.display(),
    );
    for i in 1..=3u16 {
        s.push_str(&format!(
            "\n[[server]]\nname = \"node-{i}\"\ninterconnects = [\"127.{n}.0.{h}\", \"127.{n}.1.{h}\"]\napi = \"127.{n}.0.{h}:{port}\"\n",
            h = 10 + i,
            port = o.port + i
        ));
    }
    let pid = dir.join("app-$BATON_SERVER.pid");
    let log = dir.join("app-$BATON_SERVER.log");
    s.push_str(&format!(
        r#"
[[group]]
name = "web"
servers = ["node-1", "node-2", "node-3"]
# The app stops with one kill: its self-fence deadline can be the heartbeat interval, so
# the others take it over sooner than the agent-wide bound (docs/src/split-brain.md).
fence_budget = "{interval}"

[[group.resource]]
kind = "exec"
name = "app"
start = '"{exe}" demo-app --listen "$APP_ADDR" --name "$BATON_SERVER" > "{log}" 2>&1 & echo $! > "{pid}"'
stop = 'if [ -f "{pid}" ]; then kill $(cat "{pid}") 2>/dev/null; rm -f "{pid}"; fi; true'
check = '[ -f "{pid}" ] && kill -0 $(cat "{pid}")'
activate_timeout = "10s"
deactivate_timeout = "10s"
"#,
        exe = exe.display(),
        log = log.display(),
        pid = pid.display(),
        interval = o.interval,
    ));
    for i in 1..=3u16 {
        s.push_str(&format!(
            "[group.resource.server.node-{i}]\nenv = {{ APP_ADDR = \"127.{n}.0.{h}:{p}\" }}\n",
            h = 10 + i,
            p = o.port + 10
        ));
    }
    s.push_str(
        r#"
[[monitor]]
kind = "http"
name = "web-http"
group = "web"
interval = "1s"
timeout = "2s"
retries = 1
wait_to_start = "300ms"
recovery = { target = "web", restart_retries = 1, failover_retries = 1 }
"#,
    );
    for i in 1..=3u16 {
        s.push_str(&format!(
            "[monitor.server.node-{i}]\nurl = \"http://127.{n}.0.{h}:{p}/health\"\n",
            h = 10 + i,
            p = o.port + 10
        ));
    }
    s
}

async fn run_inner(o: &DemoOptions, dir: &Path) -> Result<Timeline, String> {
    let json = o.json;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the baton binary: {e}"))?;
    let key_path = dir.join("cluster.key");
    let _ = std::fs::remove_file(&key_path);
    crate::key::generate_key_file(&key_path).map_err(|e| e.to_string())?;
    let cfg_path = dir.join("baton.toml");
    std::fs::write(&cfg_path, config_text(o, dir, &exe))
        .map_err(|e| format!("cannot write the demo config: {e}"))?;
    // Validate it with the same code as `baton config check`.
    let cfg = crate::catalog::load_config(&cfg_path).map_err(|e| {
        let d: Vec<String> = e.diagnostics.iter().map(|d| d.to_string()).collect();
        format!("demo config invalid: {}", d.join("; "))
    })?;
    let key = ClusterKey::load(&key_path).map_err(|e| e.to_string())?;
    let client = Client::new(&key.api_token(), &crate::tls::ClientTls::plain());

    say(json, "Baton demo: a 3-server cluster on loopback, group `web` runs a small HTTP app guarded by an http monitor.");
    say(
        json,
        &format!(
            "  files: {}  (config: baton.toml, agent logs: node-N.log)",
            dir.display()
        ),
    );
    let mut nodes: Vec<Node> = Vec::new();
    for s in &cfg.servers {
        let log = std::fs::File::create(dir.join(format!("{}.log", s.name)))
            .map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(&exe)
            .arg("agent")
            .arg("--config")
            .arg(&cfg_path)
            .arg("--server")
            .arg(&s.name)
            .arg("--state-dir")
            .arg(dir.join(&s.name))
            .env("BATON_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start agent {}: {e}", s.name))?;
        let app: SocketAddr = format!("{}:{}", s.api.ip(), o.port + 10)
            .parse()
            .map_err(|e| format!("{e}"))?;
        nodes.push(Node {
            name: s.name.clone(),
            api: s.api,
            app,
            child: Some(child),
        });
        say(
            json,
            &format!(
                "  started agent {} (pid {}) on {}",
                s.name,
                nodes
                    .last()
                    .and_then(|n| n.child.as_ref())
                    .and_then(|c| c.id())
                    .unwrap_or(0),
                s.api
            ),
        );
    }
    let outcome = demo_body(o, &client, &mut nodes, dir).await;
    // Clean up: stop the agents gracefully (they stop the app), then make sure.
    say(
        json,
        "\nCleaning up: stopping the agents (they stop the app) …",
    );
    for n in &nodes {
        if let Some(c) = &n.child {
            if let Some(pid) = c.id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
    }
    for n in &mut nodes {
        if let Some(c) = &mut n.child {
            if tokio::time::timeout(Duration::from_secs(15), c.wait())
                .await
                .is_err()
            {
                let _ = c.kill().await;
            }
        }
    }
    for n in &nodes {
        kill_app(dir, &n.name);
    }
    say(json, "Done: every process the demo started has exited.");
    outcome
}

fn kill_app(dir: &Path, server: &str) {
    if let Ok(s) = std::fs::read_to_string(dir.join(format!("app-{server}.pid"))) {
        if let Ok(pid) = s.trim().parse::<i32>() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

async fn cluster_status(
    client: &Client,
    nodes: &[Node],
    skip: Option<&str>,
) -> Option<ClusterStatus> {
    for n in nodes {
        if Some(n.name.as_str()) == skip {
            continue;
        }
        if let Ok(st) = client
            .get::<ClusterStatus>(n.api, "/v1/cluster/status", Duration::from_millis(1500))
            .await
        {
            return Some(st);
        }
    }
    None
}

fn owner(st: &ClusterStatus) -> Option<String> {
    st.local
        .engine
        .groups
        .iter()
        .find(|g| g.name == "web" && g.state == GroupState::Online)
        .and_then(|g| g.active_on.clone())
}

async fn fetch_app(addr: SocketAddr) -> Result<String, String> {
    let r = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| e.to_string())?
        .get(format!("http://{addr}/"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    r.text()
        .await
        .map(|t| t.trim().to_string())
        .map_err(|e| e.to_string())
}

async fn demo_body(
    o: &DemoOptions,
    client: &Client,
    nodes: &mut [Node],
    dir: &Path,
) -> Result<Timeline, String> {
    let json = o.json;
    // 1. Wait for the group to come up.
    let start = crate::clock::now();
    let first_owner = loop {
        if let Some(st) = cluster_status(client, nodes, None).await {
            if let Some(w) = owner(&st) {
                say(
                    json,
                    &format!(
                        "\nGroup `web` is online on {w} after {} ms. Live status:\n",
                        start.elapsed().as_millis()
                    ),
                );
                say(json, &render_status(&st));
                break w;
            }
        }
        if start.elapsed() > Duration::from_secs(30) {
            return Err(format!(
                "the group did not come up within 30 s; see the agent logs in {}",
                dir.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let victim = nodes
        .iter()
        .position(|n| n.name == first_owner)
        .ok_or("owner is not a demo node")?;
    let app_addr = nodes[victim].app;
    // Let the monitor see the app healthy at least once.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let answer = fetch_app(app_addr)
        .await
        .unwrap_or_else(|e| format!("(no answer: {e})"));
    say(
        json,
        &format!("The app answers at http://{app_addr}/ : {answer}"),
    );

    // 2. Kill the active server's agent (and its app: the whole server is lost).
    say(
        json,
        &format!("\nSimulating the loss of {first_owner}: SIGKILL its agent and its app …"),
    );
    let killed_at = unix_ms();
    if let Some(c) = &mut nodes[victim].child {
        let _ = c.start_kill();
        let _ = c.wait().await;
    }
    nodes[victim].child = None;
    kill_app(dir, &first_owner);

    // 3. Wait for the failover, printing state changes as they happen.
    let t = crate::clock::now();
    let mut last = String::new();
    let new_owner = loop {
        if let Some(st) = cluster_status(client, nodes, Some(&first_owner)).await {
            let g = st.local.engine.groups.iter().find(|g| g.name == "web");
            let line = g
                .map(|g| {
                    format!(
                        "web: {} on {}",
                        g.state.as_str(),
                        g.active_on.as_deref().unwrap_or("-")
                    )
                })
                .unwrap_or_default();
            let down = st
                .local
                .engine
                .servers
                .iter()
                .filter(|s| !s.up)
                .map(|s| s.name.clone())
                .collect::<Vec<_>>();
            let line = format!(
                "{line}; servers down: {}",
                if down.is_empty() {
                    "none".into()
                } else {
                    down.join(",")
                }
            );
            if line != last {
                say(
                    json,
                    &format!("  +{:>5} ms  {line}", t.elapsed().as_millis()),
                );
                last = line;
            }
            if let Some(w) = owner(&st).filter(|w| *w != first_owner) {
                break w;
            }
        }
        if t.elapsed() > Duration::from_secs(30) {
            return Err(format!(
                "no failover within 30 s; see the agent logs in {}",
                dir.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let no = nodes
        .iter()
        .find(|n| n.name == new_owner)
        .ok_or("new owner is not a demo node")?;
    let events: Vec<Event> = client
        .get(
            no.api,
            "/v1/alerts?after=0&limit=10000",
            Duration::from_secs(3),
        )
        .await
        .map_err(|e| e.to_string())?;
    let after_kill = |id: &str| {
        events
            .iter()
            .find(|e| {
                e.id == id
                    && e.time_ms >= killed_at
                    && (e.group.as_deref() == Some("web")
                        || e.peer.as_deref() == Some(first_owner.as_str()))
            })
            .map(|e| e.time_ms - killed_at)
    };
    let detected = after_kill("BTN-1102");
    let floor = events
        .iter()
        .find(|e| e.id == "BTN-1136" && e.time_ms >= killed_at && e.group.as_deref() == Some("web"))
        .and_then(|e| Some(e.time_ms + e.fields.get("wait_ms")?.as_u64()? - killed_at));
    let activating = after_kill("BTN-2101");
    let activated = after_kill("BTN-2102").ok_or("no activation event found on the new owner")?;
    let app = nodes
        .iter()
        .find(|n| n.name == new_owner)
        .map(|n| n.app)
        .ok_or("no app address")?;
    let mut answer = String::new();
    for _ in 0..50 {
        match fetch_app(app).await {
            Ok(a) => {
                answer = a;
                break;
            }
            Err(e) => answer = format!("(no answer: {e})"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    say(
        json,
        "\nFailover timeline (from the agents' event log, ms after the SIGKILL):",
    );
    say(json, &format!("  {:>6}  {first_owner} killed (agent and app); its copy of `web` is abandoned with the server", 0));
    if let Some(d) = detected {
        say(json, &format!("  {d:>6}  {new_owner} detects {first_owner} down on every interconnect path (BTN-1102)"));
    }
    if let Some(a) = activating {
        say(
            json,
            &format!("  {a:>6}  {new_owner} activates `web` with a new epoch (BTN-2101)"),
        );
    }
    say(
        json,
        &format!("  {activated:>6}  `web` is active on {new_owner} (BTN-2102)"),
    );
    say(
        json,
        &format!("  total {activated} ms from SIGKILL to the service running on {new_owner}"),
    );
    say(
        json,
        &format!("\nThe app answers again at http://{app}/ : {answer}"),
    );
    if let Some(st) = cluster_status(client, nodes, Some(&first_owner)).await {
        say(json, "");
        // With the new owner's events: its BTN-1102 explains the server down.
        say(
            json,
            &crate::status_view::render(&st, &events, crate::clock::unix_ms()),
        );
    }
    Ok(Timeline {
        killed: first_owner,
        new_owner,
        detected_ms: detected,
        floor_ms: floor,
        activating_ms: activating,
        activated_ms: activated,
        total_ms: activated,
        app_answer: answer,
    })
}

/// The demo's HTTP app: `GET /` says who serves it, `GET /health` says ok.
pub async fn app(listen: SocketAddr, name: String) -> Exit {
    use axum::routing::get;
    let n2 = name.clone();
    let app = axum::Router::new()
        .route(
            "/",
            get(move || async move { format!("hello from {n2}\n") }),
        )
        .route("/health", get(|| async { "ok\n" }));
    let l = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("demo-app: cannot listen on {listen}: {e}");
            return Exit::Failure;
        }
    };
    let _ = axum::serve(l, app).await;
    Exit::Ok
}
