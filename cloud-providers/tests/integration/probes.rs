use std::time::Duration;

use baton_providers::local::LocalRegistry;
use baton_providers::{ProviderError, Registry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::{pctx, qp, table};

fn unhealthy(e: ProviderError) -> String {
    match e {
        ProviderError::Unhealthy(m) => m,
        other => panic!("expected unhealthy, got {other:?}"),
    }
}

#[tokio::test]
async fn tcp_open_and_closed() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let p = LocalRegistry
        .build_probe("tcp", &table(&format!("port = {port}")))
        .unwrap();
    let ok = p.probe(&pctx(Duration::from_secs(2))).await.unwrap();
    assert!(ok
        .detail
        .unwrap()
        .starts_with(&format!("connected to 127.0.0.1:{port}")));
    drop(listener);
    let msg = unhealthy(p.probe(&pctx(Duration::from_secs(2))).await.unwrap_err());
    assert!(
        msg.starts_with(&format!("cannot connect to 127.0.0.1:{port}: ")),
        "{msg}"
    );
    assert!(msg.to_lowercase().contains("refused"), "{msg}");
    let e = LocalRegistry
        .build_probe("tcp", &table("port = 0"))
        .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("port"));
    let e = LocalRegistry
        .build_probe("tcp", &table("port = 70000"))
        .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("port"));
    let e = LocalRegistry
        .build_probe("tcp", &table("host = 'x'"))
        .unwrap_err();
    assert_eq!(e.message, "missing required key `port`");
}

/// A one-response-per-connection HTTP server answering every request with `status` and `body`.
async fn http_server(status: &'static str, body: &'static str, delay: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                tokio::time::sleep(delay).await;
                let head = got.starts_with(b"HEAD ");
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                    body.len(),
                    if head { "" } else { body }
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test]
async fn http_status_and_body() {
    let port = http_server("200 OK", "status: all good\n", Duration::ZERO).await;
    let url = format!("http://127.0.0.1:{port}/health");
    let c = pctx(Duration::from_secs(3));

    let p = LocalRegistry
        .build_probe("http", &table(&format!("url = '{url}'")))
        .unwrap();
    assert_eq!(
        p.probe(&c).await.unwrap().detail.as_deref(),
        Some("status 200")
    );

    let p = LocalRegistry
        .build_probe("http", &table(&format!("url = '{url}'\nmethod = 'HEAD'")))
        .unwrap();
    p.probe(&c).await.unwrap();

    let p = LocalRegistry
        .build_probe(
            "http",
            &table(&format!("url = '{url}'\nbody_contains = 'all good'")),
        )
        .unwrap();
    p.probe(&c).await.unwrap();

    let p = LocalRegistry
        .build_probe(
            "http",
            &table(&format!("url = '{url}'\nbody_contains = 'degraded'")),
        )
        .unwrap();
    let msg = unhealthy(p.probe(&c).await.unwrap_err());
    assert_eq!(
        msg,
        format!("GET {url} returned 200 but the body does not contain \"degraded\"")
    );

    let p = LocalRegistry
        .build_probe(
            "http",
            &table(&format!(
                "url = '{url}'\nbody_regex = '^status: (all|some) good$'"
            )),
        )
        .unwrap();
    // Multi-line mode is not on: ^ and $ match the whole body's ends, and the body ends in \n.
    assert!(p.probe(&c).await.is_err());
    let p = LocalRegistry
        .build_probe(
            "http",
            &table(&format!(
                "url = '{url}'\nbody_regex = '(?m)^status: (all|some) good$'"
            )),
        )
        .unwrap();
    p.probe(&c).await.unwrap();

    let p = LocalRegistry
        .build_probe(
            "http",
            &table(&format!("url = '{url}'\nexpect_status = 204")),
        )
        .unwrap();
    let msg = unhealthy(p.probe(&c).await.unwrap_err());
    assert_eq!(msg, format!("GET {url} returned 200, expected 204"));
}

#[tokio::test]
async fn http_status_mismatch_and_lists() {
    let port = http_server("503 Service Unavailable", "down", Duration::ZERO).await;
    let url = format!("http://127.0.0.1:{port}/");
    let c = pctx(Duration::from_secs(3));
    let p = LocalRegistry
        .build_probe("http", &table(&format!("url = '{url}'")))
        .unwrap();
    let msg = unhealthy(p.probe(&c).await.unwrap_err());
    assert_eq!(msg, format!("GET {url} returned 503, expected 200"));
    let p = LocalRegistry
        .build_probe(
            "http",
            &table(&format!("url = '{url}'\nexpect_status = [200, 503]")),
        )
        .unwrap();
    p.probe(&c).await.unwrap();
}

#[tokio::test]
async fn http_refused_and_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let url = format!("http://127.0.0.1:{port}/");
    let p = LocalRegistry
        .build_probe("http", &table(&format!("url = '{url}'")))
        .unwrap();
    let msg = unhealthy(p.probe(&pctx(Duration::from_secs(3))).await.unwrap_err());
    assert!(
        msg.starts_with(&format!("GET {url} cannot connect: ")),
        "{msg}"
    );
    assert!(
        msg.contains("Connection refused") && !msg.contains("client error"),
        "{msg}"
    );

    let port = http_server("200 OK", "slow", Duration::from_secs(5)).await;
    let p = LocalRegistry
        .build_probe("http", &table(&format!("url = 'http://127.0.0.1:{port}/'")))
        .unwrap();
    let e = p
        .probe(&pctx(Duration::from_millis(300)))
        .await
        .unwrap_err();
    assert_eq!(e, ProviderError::Timeout(300));
}

#[test]
fn http_param_errors() {
    let e = LocalRegistry
        .build_probe("http", &table("url = 'ftp://x/'"))
        .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("url"));
    let e = LocalRegistry
        .build_probe("http", &table("url = 'http://x/'\nexpect_status = 99"))
        .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("expect_status"));
    assert_eq!(
        e.message,
        "invalid HTTP status 99: expected a number from 100 to 599"
    );
    let e = LocalRegistry
        .build_probe(
            "http",
            &table("url = 'http://x/'\nexpect_status = [200, 'x']"),
        )
        .unwrap_err();
    assert!(
        e.key.as_deref().unwrap().starts_with("expect_status"),
        "{e:?}"
    );
    let e = LocalRegistry
        .build_probe("http", &table("url = 'http://x/'\nmethod = 'POST'"))
        .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("method"));
    assert!(
        e.message.starts_with("unknown value `POST`"),
        "{}",
        e.message
    );
    let e = LocalRegistry
        .build_probe("http", &table("url = 'http://x/'\nbody_regex = '('"))
        .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("body_regex"));
    let e = LocalRegistry
        .build_probe(
            "http",
            &table("url = 'http://x/'\nmethod = 'HEAD'\nbody_contains = 'x'"),
        )
        .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("method"));
}

#[tokio::test]
async fn process_by_pid_file_and_name() {
    let dir = tempfile::tempdir().unwrap();
    let pidf = dir.path().join("child.pid");
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    std::fs::write(&pidf, format!("{}\n", child.id())).unwrap();
    let c = pctx(Duration::from_secs(2));

    let p = LocalRegistry
        .build_probe("process", &table(&format!("pid_file = {}", qp(&pidf))))
        .unwrap();
    assert_eq!(
        p.probe(&c).await.unwrap().detail,
        Some(format!("pid {}", child.id()))
    );
    let byname = LocalRegistry
        .build_probe("process", &table("name = 'sleep'"))
        .unwrap();
    byname.probe(&c).await.unwrap();

    child.kill().unwrap();
    // Not reaped yet: a zombie does not count as running.
    std::thread::sleep(Duration::from_millis(100));
    let msg = unhealthy(p.probe(&c).await.unwrap_err());
    assert_eq!(
        msg,
        format!(
            "process {} from pid file {} is not running",
            child.id(),
            pidf.display()
        )
    );
    child.wait().unwrap();

    std::fs::remove_file(&pidf).unwrap();
    let msg = unhealthy(p.probe(&c).await.unwrap_err());
    assert!(msg.contains("does not exist"), "{msg}");

    let none = LocalRegistry
        .build_probe("process", &table("name = 'baton-nonexistent-proc'"))
        .unwrap();
    let msg = unhealthy(none.probe(&c).await.unwrap_err());
    assert_eq!(msg, "no process named `baton-nonexistent-proc` is running");

    assert!(LocalRegistry.build_probe("process", &table("")).is_err());
    assert!(LocalRegistry
        .build_probe("process", &table("name = 'a'\npid_file = '/x'"))
        .is_err());
}

#[tokio::test]
async fn exec_probe() {
    let c = pctx(Duration::from_secs(3));
    let p = LocalRegistry
        .build_probe("exec", &table("command = 'echo \"ok from $BATON_MONITOR on $BATON_SERVER $X\"'\nenv = { X = 'y' }"))
        .unwrap();
    assert_eq!(
        p.probe(&c).await.unwrap().detail.as_deref(),
        Some("ok from mon on node-1 y")
    );
    let p = LocalRegistry
        .build_probe(
            "exec",
            &table("command = 'echo first >&2; echo disk full >&2; exit 2'"),
        )
        .unwrap();
    let msg = unhealthy(p.probe(&c).await.unwrap_err());
    assert_eq!(msg, "check command exited with status 2: disk full");
    let p = LocalRegistry
        .build_probe("exec", &table("command = 'sleep 10'"))
        .unwrap();
    let e = p
        .probe(&pctx(Duration::from_millis(200)))
        .await
        .unwrap_err();
    assert_eq!(e, ProviderError::Timeout(200));
}

#[tokio::test]
async fn ping_loopback() {
    use baton_tests::skip::skip;
    // The probe runs ping with the minimal PATH every command gets (process::SCRIPT_PATH).
    let installed = std::env::split_paths(baton_providers::process::SCRIPT_PATH)
        .any(|d| d.join("ping").is_file());
    if !installed {
        skip("ping_loopback", "ping (iputils-ping) is not installed");
        return;
    }
    let p = LocalRegistry
        .build_probe("ping", &table("host = '127.0.0.1'"))
        .unwrap();
    match p.probe(&pctx(Duration::from_secs(3))).await {
        Ok(ok) => {
            let detail = ok.detail.unwrap_or_default();
            assert!(detail.starts_with("rtt avg "), "{detail}");
            assert!(detail.ends_with(" ms"), "{detail}");
        }
        // Unprivileged and without ping_group_range, ping cannot open its socket: the
        // machine lacks the permission, which is a skip (a failure under
        // BATON_REQUIRE_ALL=1). Anything else is a failure.
        Err(e) if e.to_string().contains("not permitted") => {
            skip(
                "ping_loopback",
                &format!("ping cannot open an ICMP socket here: {e}"),
            );
            return;
        }
        Err(e) => panic!("ping 127.0.0.1 failed: {e}"),
    }
    // The broadcast address without -b: ping refuses before sending anything; the
    // probe is unhealthy with ping's own words.
    let p = LocalRegistry
        .build_probe("ping", &table("host = '255.255.255.255'"))
        .unwrap();
    match p.probe(&pctx(Duration::from_secs(3))).await {
        Err(ProviderError::Unhealthy(msg)) => {
            assert!(msg.starts_with("ping 255.255.255.255 failed: "), "{msg}");
            assert!(msg.contains("broadcast"), "{msg}");
        }
        other => panic!("expected unhealthy, got {other:?}"),
    }
    let e = LocalRegistry
        .build_probe("ping", &table("host = '-f'"))
        .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("host"));
    let e = LocalRegistry
        .build_probe("ping", &table("host = 'a'\ncount = 0"))
        .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("count"));
}

#[test]
fn unknown_monitor_kind() {
    let e = LocalRegistry.build_probe("smtp", &table("")).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("kind"));
    assert_eq!(
        e.message,
        "unknown monitor kind `smtp`; known kinds: process, tcp, http, exec, ping"
    );
}
