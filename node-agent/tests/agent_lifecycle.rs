//! One real agent process: activation order, graceful shutdown in reverse order, state
//! that survives a restart (re-adoption without a flap), and systemd notifications.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// Tests measure the real time of real processes and sockets: they read the clock directly.
#![allow(clippy::disallowed_methods)]

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_baton");

struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn start(dir: &Path, envs: &[(&str, String)]) -> Agent {
        let log = dir.join(format!(
            "agent-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let f = std::fs::File::create(&log).unwrap();
        // Through `sh -c exec` so WATCHDOG_PID can name the agent's own pid, as systemd does.
        let mut cmd = Command::new("/bin/sh");
        cmd.args([
            "-c",
            "export WATCHDOG_PID=$$; exec \"$0\" \"$@\"",
            BIN,
            "agent",
            "--config",
        ])
        .arg(dir.join("baton.toml"))
        .args(["--server", "solo", "--state-dir"])
        .arg(dir.join("state"))
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        Agent {
            child: cmd.spawn().unwrap(),
            log,
        }
    }

    fn log(&self) -> String {
        let mut s = String::new();
        let _ = std::fs::File::open(&self.log).and_then(|mut f| f.read_to_string(&mut s));
        s
    }

    fn term(&mut self) -> std::process::ExitStatus {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "agent did not stop after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool, ctx: impl Fn() -> String) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < timeout,
            "timed out waiting for {what}\n{}",
            ctx()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn write_config(dir: &Path, net: u8, port: u16) {
    let order = dir.join("order.log");
    let up = dir.join("up");
    let cfg = format!(
        r#"[cluster]
name = "life"
key_file = "cluster.key"
[heartbeat]
interval = "100ms"
timeout = "500ms"
{safe}
[[server]]
name = "solo"
interconnects = ["127.{net}.0.1"]
api = "127.{net}.0.1:{port}"
[[group]]
name = "g"
servers = ["solo"]
[[group.resource]]
kind = "exec"
name = "db"
start = 'echo "start db $BATON_EPOCH" >> "{order}"; mkdir -p "{up}"; touch "{up}/db"'
stop = 'echo "stop db" >> "{order}"; rm -f "{up}/db"'
check = 'test -f "{up}/db"'
[[group.resource]]
kind = "exec"
name = "app"
depends_on = ["db"]
start = 'echo "start app $BATON_EPOCH" >> "{order}"; touch "{up}/app"'
stop = 'echo "stop app" >> "{order}"; rm -f "{up}/app"'
check = 'test -f "{up}/app"'
"#,
        order = order.display(),
        up = up.display(),
        safe = baton_tests::config::host_safe_sections(dir, "15s", ""),
    );
    std::fs::write(dir.join("baton.toml"), cfg).unwrap();
    let st = Command::new(BIN)
        .arg("keygen")
        .arg(dir.join("cluster.key"))
        .output()
        .unwrap();
    assert!(st.status.success());
}

fn order(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("order.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn activation_order_shutdown_order_and_readoption_without_flap() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    write_config(dir, 201, 18501);

    let mut a = Agent::start(dir, &[]);
    wait_for(
        "both resources to start",
        Duration::from_secs(15),
        || order(dir).len() >= 2,
        || a.log(),
    );
    assert_eq!(
        order(dir),
        vec!["start db 1", "start app 1"],
        "dependencies first"
    );
    let epochs = std::fs::read_to_string(dir.join("state/epochs.json")).unwrap();
    assert!(
        epochs.contains("\"g\"") && epochs.contains('1'),
        "epoch persisted: {epochs}"
    );

    // SIGKILL and restart: the resources are still up, so the agent re-adopts the group
    // without stopping or starting anything and keeps epoch 1.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    drop(a);
    let mut b = Agent::start(dir, &[]);
    let alerts = dir.join("state/alerts/alerts.jsonl");
    wait_for(
        "re-adoption event",
        Duration::from_secs(15),
        || {
            std::fs::read_to_string(&alerts)
                .unwrap_or_default()
                .contains("BTN-1020")
        },
        || b.log(),
    );
    assert_eq!(
        order(dir),
        vec!["start db 1", "start app 1"],
        "no flap on re-adoption"
    );

    // Graceful stop: reverse order.
    let st = b.term();
    assert!(st.success(), "agent exit status {st:?}\n{}", b.log());
    assert_eq!(
        order(dir),
        vec!["start db 1", "start app 1", "stop app", "stop db"]
    );
    let log = std::fs::read_to_string(&alerts).unwrap();
    for id in ["BTN-1002", "BTN-2103", "BTN-2104", "BTN-1003"] {
        assert!(log.contains(id), "{id} missing from the alert log:\n{log}");
    }

    // A third start with the resources down: a normal activation with a new epoch.
    let mut c = Agent::start(dir, &[]);
    wait_for(
        "activation with epoch 2",
        Duration::from_secs(15),
        || order(dir).len() >= 6,
        || c.log(),
    );
    assert_eq!(&order(dir)[4..], ["start db 2", "start app 2"]);
    assert!(c.term().success());
}

#[test]
fn notifies_systemd_ready_and_watchdog() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    write_config(dir, 202, 18502);
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut a = Agent::start(
        dir,
        &[
            ("NOTIFY_SOCKET", sock_path.display().to_string()),
            ("WATCHDOG_USEC", "400000".to_string()),
        ],
    );
    let mut seen = Vec::new();
    let t = Instant::now();
    let mut buf = [0u8; 512];
    while t.elapsed() < Duration::from_secs(15) {
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).to_string());
        }
        if seen.iter().any(|s| s.contains("READY=1"))
            && seen.iter().filter(|s| s.contains("WATCHDOG=1")).count() >= 3
        {
            break;
        }
    }
    assert!(
        seen.iter().any(|s| s.contains("READY=1")),
        "no READY=1: {seen:?}\n{}",
        a.log()
    );
    assert!(
        seen.iter().filter(|s| s.contains("WATCHDOG=1")).count() >= 3,
        "watchdog keep-alives missing: {seen:?}"
    );
    assert!(a.term().success());
    let mut rest = Vec::new();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while let Ok(n) = sock.recv(&mut buf) {
        rest.push(String::from_utf8_lossy(&buf[..n]).to_string());
    }
    assert!(
        rest.iter().any(|s| s.contains("STOPPING=1")),
        "no STOPPING=1 on shutdown: {rest:?}"
    );
}

#[test]
fn bad_config_and_unknown_server_fail_clearly() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    write_config(dir, 203, 18503);
    let out = Command::new(BIN)
        .args(["agent", "--config"])
        .arg(dir.join("baton.toml"))
        .args(["--server", "nope", "--state-dir"])
        .arg(dir.join("s"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "an unknown server is a configuration error"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("server `nope` is not defined"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    std::fs::write(
        dir.join("bad.toml"),
        "[cluster]\nname = \"x\"\nkey_file = \"k\"\n[heartbeat]\ninterval = \"soon\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["config", "check"])
        .arg(dir.join("bad.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:5:1: error at `heartbeat.interval`"),
        "{err}"
    );
    assert!(err.contains("invalid duration 'soon'"), "{err}");

    let out = Command::new(BIN)
        .args(["status", "--bogus"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "unknown argument is a usage error"
    );
}

#[test]
fn feeds_the_watchdog_device_stops_while_stopped_and_disarms_on_a_clean_stop() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    write_config(dir, 203, 18503);
    let dev = dir.join("watchdog");
    std::fs::write(&dev, b"").unwrap();
    let cfg = std::fs::read_to_string(dir.join("baton.toml"))
        .unwrap()
        .replace(
            "shutdown_timeout = \"15s\"",
            &format!(
                "shutdown_timeout = \"15s\"\nwatchdog_device = \"{}\"",
                dev.display()
            ),
        );
    std::fs::write(dir.join("baton.toml"), cfg).unwrap();
    let mut a = Agent::start(dir, &[]);
    let size = || std::fs::metadata(&dev).map(|m| m.len()).unwrap_or(0);
    wait_for(
        "the watchdog device to be fed",
        Duration::from_secs(15),
        || size() > 5,
        || a.log(),
    );
    // SIGSTOP: nothing feeds the device (this is what makes the kernel reset a server
    // whose agent is frozen).
    let pid = nix::unistd::Pid::from_raw(a.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let frozen = size();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        size(),
        frozen,
        "the device was fed while the agent was stopped"
    );
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    wait_for(
        "feeding to resume",
        Duration::from_secs(10),
        || size() > frozen,
        || a.log(),
    );
    // The engine noticed its clock jump (BTN-1130) and re-checked quorum.
    wait_for(
        "the pause to be reported",
        Duration::from_secs(10),
        || {
            std::fs::read_dir(dir.join("state/alerts"))
                .map(|rd| {
                    rd.flatten().any(|e| {
                        std::fs::read_to_string(e.path())
                            .unwrap_or_default()
                            .contains("BTN-1130")
                    })
                })
                .unwrap_or(false)
        },
        || a.log(),
    );
    assert!(a.term().success());
    let bytes = std::fs::read(&dev).unwrap();
    assert_eq!(bytes.last(), Some(&b'V'), "no magic close on a clean stop");
}
