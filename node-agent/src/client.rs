//! HTTP client for the agent API, used by the CLI and by agents talking to peers.

use std::net::SocketAddr;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::ErrorBody;

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
    token: String,
}

impl Client {
    pub fn new(token: &str) -> Client {
        Client {
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap_or_default(),
            token: token.to_string(),
        }
    }

    async fn finish<T: DeserializeOwned>(
        addr: SocketAddr,
        r: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<T, ClientError> {
        let resp = r.map_err(|e| unreachable(addr, &e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| unreachable(addr, &e))?;
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

    pub async fn get<T: DeserializeOwned>(
        &self,
        addr: SocketAddr,
        path: &str,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let r = self
            .http
            .get(format!("http://{addr}{path}"))
            .bearer_auth(&self.token)
            .timeout(timeout)
            .send()
            .await;
        Self::finish(addr, r).await
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
            .http
            .post(format!("http://{addr}{path}"))
            .bearer_auth(&self.token)
            .json(body)
            .timeout(timeout);
        if let Some((k, v)) = header {
            req = req.header(k, v);
        }
        Self::finish(addr, req.send().await).await
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
    } else if e.is_connect() {
        "connection refused or unreachable (is the agent running?)".into()
    } else {
        e.to_string()
    }
}
