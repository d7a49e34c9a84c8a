//! A live `baton witness` under a connection flood and a slowloris, started with a low
//! open-file limit (`prlimit --nofile=128:128`, util-linux): it keeps granting votes to
//! legitimate requests, closes connections from outside `--allow` unread, and reports
//! the refusals.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Tests measure the real time of real processes and sockets: they read the clock directly.
#![allow(clippy::disallowed_methods)]

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use baton_agent::witness::HttpWitness;
use baton_providers::witness::WitnessClient;
use common::{key, key_file, vote_request, WitnessProc, KEY};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn start(key_file: &std::path::Path, extra: &[&str]) -> WitnessProc {
    // util-linux's prlimit is needed.
    let mut cmd = Command::new("prlimit");
    cmd.arg("--nofile=128:128")
        .arg(env!("CARGO_BIN_EXE_baton"))
        .args([
            "witness",
            "--listen",
            "127.0.0.1:0",
            "--startup-quiet",
            "300ms",
        ])
        .arg("--key-file")
        .arg(key_file)
        .args(extra);
    WitnessProc::spawn(cmd)
}

async fn connect_from(src: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::from((src, 0)))?;
    s.connect(to).await
}

/// Whether the server closed `s` (without waiting).
fn closed(s: &TcpStream) -> bool {
    let mut b = [0u8; 256];
    match s.try_read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_witness_still_grants_votes() {
    let dir = tempfile::tempdir().unwrap();
    let kf = key_file(dir.path(), "cluster.key", KEY);
    // Servers live in 127.0.0.0/24; 127.0.5.x is outside the allow-list.
    let w = start(
        &kf,
        &[
            "--allow",
            "127.0.0.0/24",
            "--max-connections",
            "256",
            "--max-connections-per-source",
            "4",
            "--header-timeout",
            "1s",
            "--idle-timeout",
            "2s",
        ],
    );
    let pid = w.child.id();
    let addr = w.addr;

    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicU64::new(0));
    let cut = Arc::new(AtomicU64::new(0));
    // 300 idle connections from outside the allow-list, 150 from one allowed source and
    // 20 slowloris connections from another, reopened as the witness closes them.
    let mut tasks = Vec::new();
    for (src, n, slow) in [
        (Ipv4Addr::new(127, 0, 5, 1), 300usize, false),
        (Ipv4Addr::new(127, 0, 0, 7), 150, false),
        (Ipv4Addr::new(127, 0, 0, 8), 20, true),
    ] {
        let (stop, opened, cut) = (stop.clone(), opened.clone(), cut.clone());
        tasks.push(tokio::spawn(async move {
            let mut held: Vec<TcpStream> = Vec::new();
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let mut keep = Vec::new();
                for mut s in held.drain(..) {
                    if closed(&s) {
                        cut.fetch_add(1, Ordering::Relaxed);
                    } else {
                        if slow {
                            let b = b"POST /v1/vote HTTP/1.1\r\nhost: w\r\nx: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
                            let _ = s.write_all(&[b[i % b.len()]]).await;
                        }
                        keep.push(s);
                    }
                }
                held = keep;
                i += 1;
                while held.len() < n {
                    match connect_from(src, addr).await {
                        Ok(s) => {
                            opened.fetch_add(1, Ordering::Relaxed);
                            held.push(s);
                        }
                        Err(_) => break,
                    }
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        }));
    }

    // Legitimate voters from 127.0.0.1: granted throughout the flood.
    let a = HttpWitness::new(&format!("http://{addr}"), &key(KEY)).unwrap();
    let start_t = Instant::now();
    let mut granted = 0;
    let mut max_fds = 0;
    while start_t.elapsed() < Duration::from_secs(6) {
        match a
            .vote(
                &vote_request("flood", "a", &["a"], Duration::from_millis(500), 1),
                Duration::from_secs(2),
            )
            .await
        {
            Ok(r) if r.granted => granted += 1,
            Ok(r) => assert!(
                r.detail.contains("started recently"),
                "denied under the flood: {r:?}"
            ),
            Err(e) => panic!("the witness failed a legitimate vote under the flood: {e}"),
        }
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
        max_fds = max_fds.max(fds);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let (opened, cut) = (opened.load(Ordering::Relaxed), cut.load(Ordering::Relaxed));
    eprintln!("witness flood: {opened} connections opened, {cut} closed by the witness, {granted} votes granted, at most {max_fds} descriptors of 128 in the witness's prlimit process tree");
    assert!(granted >= 20, "only {granted} votes granted in 6 s");
    assert!(opened >= 470, "the flood opened only {opened} connections");
    assert!(cut >= 300, "only {cut} flood connections were closed");
    let log = w.log.lock().unwrap().join("\n");
    assert!(log.contains("BTN-4021"), "refusals not reported:\n{log}");
    assert!(!log.contains("Too many open files"), "{log}");

    // Outside the allow-list: closed before any byte is read, no answer.
    let mut s = connect_from(Ipv4Addr::new(127, 0, 5, 2), addr)
        .await
        .unwrap();
    let _ = s
        .write_all(b"GET /v1/health HTTP/1.1\r\nhost: w\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
    assert!(
        buf.is_empty(),
        "answered: {}",
        String::from_utf8_lossy(&buf)
    );
}

#[test]
fn bad_limit_flags_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let kf = key_file(dir.path(), "cluster.key", KEY);
    for (flag, v, says) in [
        ("--allow", "10.0.0.1/8", "host bits"),
        ("--max-connections", "0", "--max-connections"),
        ("--header-timeout", "1h", "--header-timeout"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(["witness", "--listen", "127.0.0.1:0", flag, v])
            .arg("--key-file")
            .arg(&kf)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag} {v}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{flag} {v}: {err}");
    }
}
