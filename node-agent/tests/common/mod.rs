//! What several agent test binaries share: a `baton witness` process.
// Tests measure the real time of real processes and sockets: they read the clock directly.
#![allow(clippy::disallowed_methods)]
// Each test binary compiles this module and uses a part of it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
