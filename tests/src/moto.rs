//! moto server (the AWS API emulator) for tests: started per test on a free port from the
//! venv that `tests/moto/setup.sh` builds, behind `tests/moto/server.py`'s middleware
//! (fault injection, AZ state overrides, call counting, CloudWatch CBOR shim).
//!
//! [`Moto::start`] returns `None` (and says why) when the venv is missing, unless
//! `BATON_REQUIRE_MOTO=1` (set by `tests/run-all.sh`), where a missing emulator fails
//! the test instead of skipping it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::http;

/// A running moto server; killed on drop.
pub struct Moto {
    child: Child,
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`, for `[aws] endpoint_url` and `AWS_ENDPOINT_URL`.
    pub endpoint: String,
}

/// The venv's python, if the venv exists.
pub fn python() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("BATON_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = std::env::var("BATON_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
                .join(".cache/baton-venv")
        });
    let p = venv.join("bin/python");
    p.exists().then_some(p)
}

pub(crate) fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Environment for any AWS SDK client or agent talking to the emulator: fixed test
/// credentials and region, no IMDS lookups.
pub fn aws_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_SESSION_TOKEN", "testing".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_DEFAULT_REGION", "us-east-1".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
    ]
}

/// Start `script` of `dir` (relative to the repository) with the venv's `py` on
/// 127.0.0.1 and a free port (`--host 127.0.0.1 --port 0`, then `extra` arguments); it
/// prints `LISTENING <port>` when it serves. Returns the process and the port; its
/// stdout keeps being drained so it never blocks on a full pipe. Panics naming `what`
/// when it does not start.
pub(crate) fn start_python_server(
    py: &std::path::Path,
    dir: &str,
    script: &str,
    extra: &[&std::ffi::OsStr],
    what: &str,
) -> (Child, u16) {
    let dir = repo_root().join(dir);
    let mut child = Command::new(py)
        .arg(dir.join(script))
        .args(["--host", "127.0.0.1", "--port", "0"])
        .args(extra)
        .current_dir(&dir)
        .env("PYTHONPATH", &dir)
        .env("PYTHONUNBUFFERED", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start the {what} with {}: {e}", py.display()));
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let port: u16 = loop {
        match lines.next() {
            Some(Ok(l)) if l.starts_with("LISTENING ") => {
                break l["LISTENING ".len()..].trim().parse().expect("port number")
            }
            Some(Ok(_)) => continue,
            _ => {
                let _ = child.kill();
                panic!("the {what} did not start (python: {})", py.display());
            }
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, port)
}

impl Moto {
    /// Start moto on 127.0.0.1 (free port). `None` = skipped (message printed).
    pub fn start() -> Option<Moto> {
        let Some(py) = python() else {
            let why = "moto venv not found: run `bash tests/moto/setup.sh` (tests/run-all.sh does)";
            if std::env::var("BATON_REQUIRE_MOTO").is_ok_and(|v| v == "1") {
                panic!("{why}");
            }
            crate::skip::skip(&crate::skip::current_test("moto"), why);
            return None;
        };
        let (child, port) = start_python_server(&py, "tests/moto", "server.py", &[], "moto server");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("socket address");
        Some(Moto {
            child,
            addr,
            endpoint: format!("http://127.0.0.1:{port}"),
        })
    }

    fn control(&self, method: &str, path: &str, body: Option<&str>) -> serde_json::Value {
        let r = http::request(self.addr, method, path, None, body, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("moto control {method} {path}: {e}"));
        r.json().unwrap_or(serde_json::Value::Null)
    }

    /// Fail `operation` (e.g. `ReplaceRoute`, `ec2.ReplaceRoute` or `*`) `count` times
    /// (-1: until cleared) with AWS error `code` and HTTP `status`.
    pub fn fail(&self, operation: &str, code: &str, status: u16, count: i64) {
        let body = serde_json::json!({"operation": operation, "error": code, "status": status, "count": count});
        self.control("POST", "/_baton/faults", Some(&body.to_string()));
    }

    /// Delay `operation` by `latency` (`count` times, -1: until cleared).
    pub fn delay(&self, operation: &str, latency: Duration, count: i64) {
        let body = serde_json::json!({"operation": operation, "error": null, "latency_ms": latency.as_millis() as u64, "count": count});
        self.control("POST", "/_baton/faults", Some(&body.to_string()));
    }

    pub fn clear_faults(&self) {
        self.control("DELETE", "/_baton/faults", None);
    }

    /// Make DescribeAvailabilityZones report `zone` in `state` (`impaired`, `unavailable`).
    pub fn set_zone_state(&self, zone: &str, state: &str) {
        let body = serde_json::json!({"zone": zone, "state": state});
        self.control("POST", "/_baton/az", Some(&body.to_string()));
    }

    pub fn clear_zone_states(&self) {
        self.control("DELETE", "/_baton/az", None);
    }

    /// API calls served so far, by `service.Operation`.
    pub fn calls(&self) -> BTreeMap<String, u64> {
        serde_json::from_value(self.control("GET", "/_baton/calls", None)).unwrap_or_default()
    }

    pub fn reset_calls(&self) {
        self.control("DELETE", "/_baton/calls", None);
    }

    /// Every call served, in order: (unix time in seconds, `service.Operation`, status).
    pub fn log(&self) -> Vec<(f64, String, u16)> {
        let v = self.control("GET", "/_baton/log", None);
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| {
                        Some((
                            e["t"].as_f64()?,
                            e["op"].as_str()?.to_string(),
                            e["status"].as_u64()? as u16,
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
