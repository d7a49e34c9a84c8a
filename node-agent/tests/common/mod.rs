//! What several agent test binaries share: a `baton witness` process, its key files and
//! the vote requests sent to it.
// Tests measure the real time of real processes and sockets: they read the clock directly.
#![allow(clippy::disallowed_methods)]
// Each test binary compiles this module and uses a part of it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_agent::key::ClusterKey;
use baton_providers::witness::VoteRequest;

/// The cluster key of most witness tests (hex).
pub const KEY: &str = "6b1f0c5e2d9a4f7b8c3e1d0a9f8e7d6c5b4a39281706f5e4d3c2b1a098f7e6d5";

/// Write the key `text` to `dir/name` (mode 0600, as the witness requires).
pub fn key_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{text}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

pub fn key(text: &str) -> ClusterKey {
    ClusterKey::from_bytes(text.as_bytes()).unwrap()
}

/// The vote request of `server` in cluster `cluster`, seeing the servers `partition`,
/// for a lease of `lease`, holding group `g-SERVER` at `epoch`.
pub fn vote_request(
    cluster: &str,
    server: &str,
    partition: &[&str],
    lease: Duration,
    epoch: u64,
) -> VoteRequest {
    VoteRequest {
        cluster: cluster.into(),
        server: server.into(),
        partition: partition.iter().map(|s| s.to_string()).collect(),
        lease,
        epochs: BTreeMap::from([(format!("g-{server}"), epoch)]),
    }
}

/// A running `baton witness`, its address (read from its log) and its log lines.
pub struct WitnessProc {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl WitnessProc {
    /// Run `cmd` (a `baton witness` command line, possibly behind a wrapper such as
    /// `prlimit`) and wait until it says where it listens.
    pub fn spawn(mut cmd: Command) -> WitnessProc {
        let mut child = cmd
            .env("BATON_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start baton witness");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let addr = loop {
            match lines.next() {
                Some(Ok(l)) => {
                    log.lock().unwrap().push(l.clone());
                    if let Some(a) = l.strip_prefix("baton witness: listening on ") {
                        break a.trim().parse().unwrap();
                    }
                }
                _ => {
                    let _ = child.kill();
                    panic!("witness did not start: {:?}", log.lock().unwrap());
                }
            }
        };
        let l2 = log.clone();
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                l2.lock().unwrap().push(l);
            }
        });
        WitnessProc { child, addr, log }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn log_contains(&self, s: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(s))
    }

    /// The first log line containing `s`, waiting up to 5 s for it.
    pub fn log_line(&self, s: &str) -> String {
        let start = Instant::now();
        loop {
            if let Some(l) = self.log.lock().unwrap().iter().find(|l| l.contains(s)) {
                return l.clone();
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "no log line with {s:?}: {:?}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for WitnessProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
