//! Raw HTTP exchanges with an agent for the Web UI, `/metrics` and OpenAPI tests: any
//! method, headers and body, the answer's headers kept; a [`Recorder`] keeps each
//! exchange for the OpenAPI conformance check (`tests/web/openapi_check.py`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

/// An answer: status, headers (names lowercased), body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One request (`Connection: close`); `headers` are sent as given.
pub fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Answer, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    if let Some(b) = body {
        bytes.extend_from_slice(b);
    }
    // A server may answer (413) and close before reading an oversized body.
    let _ = s.write_all(&bytes);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse(&raw).map_err(|e| format!("{method} {path}: {e}"))
}

fn parse(raw: &[u8]) -> Result<Answer, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {:?}", String::from_utf8_lossy(raw)))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("bad status line")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut rest = &raw[split + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        let mut out = Vec::new();
        loop {
            let eol = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or("truncated chunk")?;
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&rest[..eol])
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim(),
                16,
            )
            .map_err(|_| "bad chunk size")?;
            rest = &rest[eol + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[..size.min(rest.len())]);
            rest = rest.get(size + 2..).unwrap_or(&[]);
        }
        out
    } else {
        rest.to_vec()
    };
    Ok(Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    })
}

/// Keeps exchanges for the OpenAPI check.
#[derive(Default)]
pub struct Recorder {
    pub exchanges: Vec<serde_json::Value>,
}

impl Recorder {
    /// Send, record, return the answer.
    pub fn send(
        &mut self,
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Answer {
        let a = exchange(addr, method, path, headers, body.map(str::as_bytes))
            .unwrap_or_else(|e| panic!("{e}"));
        self.exchanges.push(serde_json::json!({
            "method": method,
            "path": path,
            "status": a.status,
            "content_type": a.header("content-type").unwrap_or(""),
            "body": a.body,
        }));
        a
    }

    /// Run `tests/web/openapi_check.py` on what was recorded; panics with its report.
    pub fn check(&self, python: &Path, dir: &Path) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let file = dir.join("exchanges.json");
        std::fs::write(&file, serde_json::to_vec_pretty(&self.exchanges).unwrap()).unwrap();
        let out = std::process::Command::new(python)
            .arg(root.join("web/openapi_check.py"))
            .arg(root.join("../docs/src/openapi.yaml"))
            .arg(&file)
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "OpenAPI conformance:\n{report}");
        eprintln!("{}", report.trim());
    }
}
