//! Reachability checks of `[quorum] ping` and `[quorum] http`: a server that reaches
//! none of its configured targets gives up its vote. Ping runs `ping` (iputils) through
//! the providers' `ping` probe; HTTP sends `HEAD` and wants status 200 (redirects not
//! followed, proxies ignored). All targets are checked concurrently; one answer is
//! enough.

use std::time::Duration;

use baton_providers::local::probes::{HttpProbe, PingProbe};
use baton_providers::{Probe, ProbeContext};

/// The result of one round of checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReachResult {
    /// At least one target answered, or no target is configured.
    pub ok: bool,
    /// What answered or, when nothing did, why each target failed.
    pub detail: String,
}

/// The configured targets, built once.
#[derive(Debug)]
pub struct Reachability {
    targets: Vec<(String, Box<dyn Probe>)>,
    /// Targets that could not be set up (reported by every check, never reachable).
    invalid: Vec<String>,
}

impl Reachability {
    /// `ping`: host names or addresses; `http`: `http://` or `https://` URLs.
    pub fn new(ping: &[String], http: &[String]) -> Reachability {
        let mut targets: Vec<(String, Box<dyn Probe>)> = Vec::new();
        let mut invalid = Vec::new();
        for h in ping {
            let mut t = toml::Table::new();
            t.insert("host".into(), toml::Value::String(h.clone()));
            match PingProbe::from_params(&t) {
                Ok(p) => targets.push((format!("ping {h}"), Box::new(p))),
                Err(e) => invalid.push(format!("ping {h}: {e}")),
            }
        }
        for u in http {
            let mut t = toml::Table::new();
            t.insert("url".into(), toml::Value::String(u.clone()));
            t.insert("method".into(), toml::Value::String("HEAD".into()));
            t.insert("expect_status".into(), toml::Value::Integer(200));
            match HttpProbe::from_params(&t) {
                Ok(p) => targets.push((format!("HEAD {u}"), Box::new(p))),
                Err(e) => invalid.push(format!("HEAD {u}: {e}")),
            }
        }
        Reachability { targets, invalid }
    }

    /// True when no target is configured (the check always passes).
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty() && self.invalid.is_empty()
    }

    /// Check every target concurrently; returns by `deadline`.
    pub async fn check(&self, deadline: Duration) -> ReachResult {
        if self.is_empty() {
            return ReachResult {
                ok: true,
                detail: "no reachability targets configured".into(),
            };
        }
        let ctx = ProbeContext {
            cluster: String::new(),
            server: String::new(),
            monitor: "quorum-reachability".into(),
            timeout: deadline,
            group_state: None,
        };
        let checks = self.targets.iter().map(|(name, p)| {
            let ctx = &ctx;
            async move {
                let r = tokio::time::timeout(deadline, p.probe(ctx)).await;
                match r {
                    Ok(Ok(_)) => Ok(name.clone()),
                    Ok(Err(e)) => Err(format!("{name}: {e}")),
                    Err(_) => Err(format!(
                        "{name}: no answer within {} ms",
                        deadline.as_millis()
                    )),
                }
            }
        });
        let results = join_all(checks).await;
        let ok: Vec<&String> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        if let Some(first) = ok.first() {
            return ReachResult {
                ok: true,
                detail: format!(
                    "{} of {} targets answered ({first} first listed)",
                    ok.len(),
                    self.targets.len() + self.invalid.len()
                ),
            };
        }
        let mut why: Vec<String> = results.into_iter().filter_map(|r| r.err()).collect();
        why.extend(self.invalid.iter().cloned());
        ReachResult {
            ok: false,
            detail: format!("no reachability target answered: {}", why.join("; ")),
        }
    }
}

/// Await futures concurrently, keeping their order (no extra dependency).
async fn join_all<F: std::future::Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut futs: Vec<std::pin::Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futs.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    async fn http_server(status: u16) -> (String, tokio::task::JoinHandle<()>) {
        use axum::http::StatusCode;
        let app = axum::Router::new().route(
            "/",
            axum::routing::any(move || async move { StatusCode::from_u16(status).unwrap() }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let h = tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        (format!("http://{addr}/"), h)
    }

    #[tokio::test]
    async fn no_targets_is_ok() {
        let r = Reachability::new(&[], &[])
            .check(Duration::from_millis(100))
            .await;
        assert!(r.ok, "{r:?}");
    }

    #[tokio::test]
    async fn http_head_200_is_reachable_other_status_is_not() {
        let (ok_url, h1) = http_server(200).await;
        let (bad_url, h2) = http_server(503).await;
        let r = Reachability::new(&[], std::slice::from_ref(&bad_url))
            .check(Duration::from_secs(2))
            .await;
        assert!(!r.ok, "{r:?}");
        assert!(r.detail.contains("503"), "{}", r.detail);
        let r = Reachability::new(&[], &[bad_url, ok_url])
            .check(Duration::from_secs(2))
            .await;
        assert!(r.ok, "{r:?}");
        h1.abort();
        h2.abort();
    }

    #[tokio::test]
    async fn a_hanging_target_fails_by_the_deadline() {
        // Accepts connections, never answers.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let h = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        let started = crate::clock::now();
        let r = Reachability::new(&[], &[format!("http://{addr}/")])
            .check(Duration::from_millis(300))
            .await;
        assert!(!r.ok, "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
        h.abort();
    }

    #[tokio::test]
    async fn ping_loopback_and_an_invalid_target() {
        let r = Reachability::new(&["127.0.0.1".into()], &[])
            .check(Duration::from_secs(2))
            .await;
        // ping needs iputils and ICMP sockets: a machine without them is a recorded skip
        // (a failure under `BATON_REQUIRE_ALL=1`, as tests/run-all.sh runs).
        if !r.ok && (r.detail.contains("could not run") || r.detail.contains("permitted")) {
            baton_tests::skip::skip("ping_loopback_and_an_invalid_target (ping part)", &r.detail);
        } else {
            assert!(r.ok, "{r:?}");
        }
        let r = Reachability::new(&["-bad host".into()], &[])
            .check(Duration::from_millis(200))
            .await;
        assert!(!r.ok);
        assert!(r.detail.contains("-bad host"), "{}", r.detail);
        // The broadcast address (ping refuses it without -b, sending nothing) and a
        // closed port do not answer.
        let r = Reachability::new(&["255.255.255.255".into()], &["http://127.0.0.1:1/".into()])
            .check(Duration::from_millis(1500))
            .await;
        assert!(!r.ok, "{r:?}");
    }
}
