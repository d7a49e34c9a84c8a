//! HTTP client for the agent API, used by the CLI and by agents talking to peers.

use std::net::SocketAddr;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api_types::ErrorBody;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The agent could not be reached (connection refused, timeout).
    #[error("cannot reach the agent at {addr}: {msg}")]
    Unreachable { addr: SocketAddr, msg: String },
    /// The agent took too long to answer: the request may or may not have been applied.
    #[error("no answer from the agent at {addr} in time (the request may have been applied)")]
    Timeout { addr: SocketAddr },
    /// The agent answered with an error.
    #[error("{message} ({code})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("unexpected answer from {addr}: {msg}")]
    Protocol { addr: SocketAddr, msg: String },
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Bearer token; empty through the Unix socket (which needs none).
    token: String,
    /// The agent's Unix socket, when this client talks through it.
    socket: Option<std::path::PathBuf>,
    /// `http` or `https` (`[api] tls_cert_file`).
    scheme: &'static str,
}

impl Client {
    /// A client of the agents' TCP API with `token`, over HTTPS when `tls` says so.
    pub fn new(token: &str, tls: &crate::tls::ClientTls) -> Client {
        Client {
            http: tls
                .apply(reqwest::Client::builder().no_proxy())
                .build()
                .unwrap_or_default(),
            token: token.to_string(),
            socket: None,
            scheme: tls.scheme(),
        }
    }

    /// A client of the agent's Unix socket at `path` (no token: the socket's permissions
    /// decide). Addresses given to its calls only name the server in messages.
    pub fn unix(path: &std::path::Path) -> Client {
        Client {
            http: reqwest::Client::builder()
                .no_proxy()
                .unix_socket(path)
                .build()
                .unwrap_or_default(),
            token: String::new(),
            socket: Some(path.to_path_buf()),
            scheme: "http",
        }
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if self.token.is_empty() {
            req
        } else {
            req.bearer_auth(&self.token)
        }
    }

    fn unreachable(&self, addr: SocketAddr, e: &reqwest::Error) -> ClientError {
        match (unreachable(addr, e), &self.socket) {
            (ClientError::Unreachable { addr, msg }, Some(p)) => ClientError::Unreachable {
                addr,
                msg: format!("{msg} (through the socket {})", p.display()),
            },
            (other, _) => other,
        }
    }

    async fn finish<T: DeserializeOwned>(
        &self,
        addr: SocketAddr,
        r: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<T, ClientError> {
        let resp = r.map_err(|e| self.unreachable(addr, &e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.unreachable(addr, &e))?;
        if status.is_success() {
            serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol {
                addr,
                msg: e.to_string(),
            })
        } else {
            match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(b) => Err(ClientError::Api {
                    status: status.as_u16(),
                    code: b.error.code,
                    message: b.error.message,
                }),
                Err(_) => Err(ClientError::Protocol {
                    addr,
                    msg: format!("HTTP {status}"),
                }),
            }
        }
    }

    /// Whether this client talks through the local agent's Unix socket (every address
    /// then reaches that one agent).
    pub fn is_unix(&self) -> bool {
        self.socket.is_some()
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        addr: SocketAddr,
        path: &str,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let r = self
            .auth(self.http.get(format!("{}://{addr}{path}", self.scheme)))
            .timeout(timeout)
            .send()
            .await;
        self.finish(addr, r).await
    }

    pub async fn post_with_header<B: Serialize, T: DeserializeOwned>(
        &self,
        addr: SocketAddr,
        path: &str,
        body: &B,
        header: (&str, &str),
        timeout: Duration,
    ) -> Result<T, ClientError> {
        self.send(addr, path, body, Some(header), timeout).await
    }

    async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        addr: SocketAddr,
        path: &str,
        body: &B,
        header: Option<(&str, &str)>,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let mut req = self
            .auth(self.http.post(format!("{}://{addr}{path}", self.scheme)))
            .json(body)
            .timeout(timeout);
        if let Some((k, v)) = header {
            req = req.header(k, v);
        }
        self.finish(addr, req.send().await).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        addr: SocketAddr,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        self.send(addr, path, body, None, timeout).await
    }
}

fn unreachable(addr: SocketAddr, e: &reqwest::Error) -> ClientError {
    if e.is_timeout() {
        ClientError::Timeout { addr }
    } else {
        ClientError::Unreachable {
            addr,
            msg: describe(e),
        }
    }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if let Some(tls) = tls_failure(e) {
        format!("TLS handshake failed: {tls} (is `[api] tls_ca_file` the CA that signed the agents' certificates, and does the certificate name this address?)")
    } else if e.is_connect() {
        "connection refused or unreachable (is the agent running?)".into()
    } else {
        e.to_string()
    }
}

/// The TLS error under a failed request, if that is what failed (a certificate not
/// trusted, for another address, expired; a server that does not speak TLS).
fn tls_failure(e: &reqwest::Error) -> Option<String> {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(r) = s.downcast_ref::<rustls::Error>() {
            return Some(r.to_string());
        }
        // An I/O error's `source()` skips the error it wraps: look inside it.
        src = match s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => s.source(),
        };
    }
    None
}
