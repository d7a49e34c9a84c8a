//! The health-check port a load balancer probes (`azure-lb-probe`, `gcp-lb-probe`): while
//! a group is active here, a listener answers it, so the load balancer sends the
//! frontend's traffic to this server alone.
//!
//! [`ProbePort::start`] binds the port (`SO_REUSEADDR`: a restarted agent binds at once,
//! whatever TIME_WAIT the last one left) and accepts in a task; a TCP probe gets the
//! handshake and an immediate close, an HTTP probe `200` (for the configured path, or any
//! path) and `404` for another path. Every connection is a task of the listener's own
//! task, so [`ProbePort::stop`] closes the socket **and** every probe connection in
//! progress, and returns only once they are closed: no probe is answered healthy after
//! the stop returned.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tracing::Instrument as _;

/// Probe connections answered at once; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 64;
/// How long an HTTP prober may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest HTTP request head read.
const MAX_HEAD: usize = 8 * 1024;

/// How the port answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The completed handshake is the answer; the connection is closed at once.
    Tcp,
    /// `200` for a GET or HEAD of `path` (any path when `None`), `404` otherwise.
    Http { path: Option<String> },
}

/// A probe port: stopped until [`ProbePort::start`].
#[derive(Debug)]
pub struct ProbePort {
    addr: SocketAddr,
    answer: Answer,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl ProbePort {
    pub fn new(addr: SocketAddr, answer: Answer) -> ProbePort {
        ProbePort {
            addr,
            answer,
            task: Mutex::new(None),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Is the listener running?
    pub fn running(&self) -> bool {
        self.task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|t| !t.is_finished())
    }

    /// Listen and answer; `Ok(false)` when it was running already.
    pub fn start(&self) -> std::io::Result<bool> {
        let mut guard = self.task.lock().unwrap_or_else(|e| e.into_inner());
        if guard.as_ref().is_some_and(|t| !t.is_finished()) {
            return Ok(false);
        }
        let socket = match self.addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(self.addr)?;
        let listener = socket.listen(1024)?;
        let http = match &self.answer {
            Answer::Tcp => None,
            Answer::Http { path } => Some(Arc::new(path.clone())),
        };
        *guard = Some(tokio::spawn(
            serve(listener, http).instrument(tracing::info_span!("probe-port", addr = %self.addr)),
        ));
        Ok(true)
    }

    /// Stop answering: the socket and every probe connection are closed on return.
    /// `false` when it was not running.
    pub async fn stop(&self) -> bool {
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        match task {
            Some(t) => {
                t.abort();
                // An abort only asks; the task drops its future (the listener and its
                // connections) at its next turn, and the handle resolves after that.
                let _ = t.await;
                true
            }
            None => false,
        }
    }
}

impl Drop for ProbePort {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.abort();
        }
    }
}

/// Accept probe connections until aborted; the connections are tasks of this one, so
/// aborting it closes them all.
async fn serve(listener: tokio::net::TcpListener, http: Option<Arc<Option<String>>>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let (mut stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: pause rather than spin.
                tracing::warn!(error = %e, "probe port: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(path) = http.clone() else {
            // TCP probe: the handshake was the answer.
            drop(stream);
            continue;
        };
        if conns.len() >= MAX_CONNECTIONS {
            drop(stream);
            continue;
        }
        conns.spawn(async move {
            let _ =
                tokio::time::timeout(REQUEST_TIMEOUT, answer_http(&mut stream, path.as_deref()))
                    .await;
        });
    }
}

/// Read one request head and answer `200` for `path` (any path: `None`), `404` otherwise.
async fn answer_http(
    stream: &mut tokio::net::TcpStream,
    path: Option<&str>,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let target = target.split(|&b| b == b'?').next().unwrap_or_default();
    let ok = (method == b"GET" || method == b"HEAD") && path.is_none_or(|p| target == p.as_bytes());
    let reply: &[u8] = if ok {
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 7\r\nConnection: close\r\n\r\nactive\n"
    } else {
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    };
    stream.write_all(reply).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> Option<String> {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.ok()?;
        out.lines().next().map(str::to_string)
    }

    #[tokio::test]
    async fn stop_closes_the_port_and_the_connections_in_progress() {
        let probe = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let port = ProbePort::new(
            probe,
            Answer::Http {
                path: Some("/up".into()),
            },
        );
        assert!(port.start().unwrap());
        assert!(!port.start().unwrap(), "already running");
        assert_eq!(get(probe, "/up").await.as_deref(), Some("HTTP/1.1 200 OK"));
        assert_eq!(
            get(probe, "/other").await.as_deref(),
            Some("HTTP/1.1 404 Not Found")
        );
        // A prober connected, its request not sent yet, when the port is stopped: it
        // must never get its 200.
        let mut pending = tokio::net::TcpStream::connect(probe).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(port.stop().await);
        assert!(!port.running());
        let _ = pending.write_all(b"GET /up HTTP/1.1\r\n\r\n").await;
        let mut out = String::new();
        let _ = pending.read_to_string(&mut out).await;
        assert!(!out.contains("200"), "answered after the stop: {out}");
        assert!(tokio::net::TcpStream::connect(probe).await.is_err());
        // Started again at once on the same address (TIME_WAIT left by the probes).
        assert!(port.start().unwrap());
        assert_eq!(get(probe, "/up").await.as_deref(), Some("HTTP/1.1 200 OK"));
        assert!(port.stop().await);
        assert!(!port.stop().await, "not running");
        let any = ProbePort::new(probe, Answer::Http { path: None });
        any.start().unwrap();
        assert_eq!(
            get(probe, "/whatever").await.as_deref(),
            Some("HTTP/1.1 200 OK")
        );
    }
}
