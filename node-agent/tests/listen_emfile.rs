//! The bounded server keeps serving when `accept` fails for want of file descriptors.
//! Its own test binary: it lowers the process's open-file limit, which would disturb
//! tests running beside it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use baton_agent::listen::{self, Gate, Limits, Notice, Reporter};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test]
async fn out_of_descriptors_on_accept_backs_off_and_keeps_serving() {
    let app = Router::new().route(
        "/peer",
        get(|ConnectInfo(p): ConnectInfo<SocketAddr>| async move { p.to_string() }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Connections waiting in the backlog before the server accepts anything.
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(TcpStream::connect(addr).await.unwrap());
    }
    let gate = Gate::new(Limits {
        allow: Some(vec!["127.0.0.0/8".parse().unwrap()]),
        trusted: vec![],
        max_connections: 8,
        max_per_source: 8,
        header_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
    });
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let report: Reporter = Arc::new(move |n: Notice| s2.lock().unwrap().push(n));

    // Fill the descriptor table: every accept now fails with EMFILE.
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let open_now = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    setrlimit(Resource::RLIMIT_NOFILE, open_now + 4, hard).unwrap();
    let mut hold = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        hold.push(f);
    }
    let server = tokio::spawn(listen::serve(
        listener,
        app,
        gate.clone(),
        report,
        std::future::pending(),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = gate.stats();
    let errors = stats
        .accept_errors
        .load(std::sync::atomic::Ordering::Relaxed);
    // Backed off, not spinning: at 10 ms doubling to 500 ms, a few attempts in 300 ms.
    assert!((1..=10).contains(&errors), "{errors} failed accepts");
    assert!(!server.is_finished(), "the server gave up");
    assert!(
        matches!(
            seen.lock().unwrap().as_slice(),
            [Notice::AcceptFailing { count: 1, .. }]
        ),
        "{:?}",
        seen.lock().unwrap()
    );

    // Descriptors back: the waiting connections are served.
    drop(hold);
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
    for c in &mut clients {
        let me = c.local_addr().unwrap();
        c.write_all(b"GET /peer HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .expect("no answer after the descriptors came back")
            .unwrap();
        let r = String::from_utf8_lossy(&buf[..n]);
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(r.ends_with(&me.to_string()), "{r}");
    }
}
