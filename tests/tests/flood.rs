//! Connection exhaustion (issue 9, must-fix 1): a flood of idle TCP connections and a
//! slowloris against the agents' APIs while a group runs, with the agents started under a
//! low open-file limit (`prlimit --nofile=160:160`, soft and hard, so raising the soft
//! limit at start does not help). Before the bounded server, a few hundred idle
//! connections used up every descriptor: the monitor's check and the resource actions
//! failed with `Too many open files` and the group went stuck.
//!
//! Needs `prlimit` (util-linux). Run: `cargo build --bin baton && cargo test -p
//! baton-tests --test flood`.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Tests measure the real time of real processes and sockets: they read the clock directly.
#![allow(clippy::disallowed_methods)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use baton_tests::{serial, wait_until, Cluster, ClusterSpec, MonitorSpec, Signal, GROUP};
use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};

const NET: u8 = 231;
/// The agents' open-file limit, soft and hard.
const NOFILE: u32 = 160;
const T: Duration = Duration::from_secs(20);

/// A TCP connection to `to` from `127.0.NET.host`.
fn connect_from(host: u8, to: SocketAddr) -> std::io::Result<TcpStream> {
    let fd: OwnedFd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::new(127, 0, NET, host), 0)),
    )?;
    let SocketAddr::V4(to) = to else {
        panic!("IPv4 only")
    };
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(to))?;
    Ok(TcpStream::from(fd))
}

/// Whether the server closed `s` (reads nothing pending without blocking).
fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 512];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    }
}

#[derive(Default)]
struct FloodStats {
    opened: AtomicU64,
    closed_by_server: AtomicU64,
    slowloris_cut: AtomicU64,
}

/// Keep `n` idle connections open to each target from 50 source addresses (reopening
/// those the server closes, every 100 ms) and 4 slowloris connections per target (one header byte every
/// 200 ms, never finishing the head), until `stop`.
fn flood(
    targets: Vec<SocketAddr>,
    n: usize,
    stop: Arc<AtomicBool>,
    stats: Arc<FloodStats>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut idle: Vec<Vec<TcpStream>> = targets.iter().map(|_| Vec::new()).collect();
        let mut slow: Vec<Vec<(TcpStream, usize)>> = targets.iter().map(|_| Vec::new()).collect();
        let head = b"GET /v1/status HTTP/1.1\r\nhost: flood\r\nx-slow: ";
        let mut src = 0usize;
        let mut last_byte = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            for (t, to) in targets.iter().enumerate() {
                idle[t].retain_mut(|s| {
                    let c = closed(s);
                    if c {
                        stats.closed_by_server.fetch_add(1, Ordering::Relaxed);
                    }
                    !c
                });
                while idle[t].len() < n {
                    src += 1;
                    let host = u8::try_from(100 + src % 50).unwrap();
                    match connect_from(host, *to) {
                        Ok(s) => {
                            s.set_nonblocking(true).unwrap();
                            stats.opened.fetch_add(1, Ordering::Relaxed);
                            idle[t].push(s);
                        }
                        Err(_) => break,
                    }
                }
                slow[t].retain_mut(|(s, _)| {
                    let c = closed(s);
                    if c {
                        stats.slowloris_cut.fetch_add(1, Ordering::Relaxed);
                    }
                    !c
                });
                while slow[t].len() < 4 {
                    match connect_from(99, *to) {
                        Ok(s) => {
                            s.set_nonblocking(true).unwrap();
                            slow[t].push((s, 0));
                        }
                        Err(_) => break,
                    }
                }
            }
            if last_byte.elapsed() >= Duration::from_millis(200) {
                last_byte = Instant::now();
                for conns in &mut slow {
                    for (s, i) in conns.iter_mut() {
                        let b = if *i < head.len() { head[*i] } else { b'a' };
                        let _ = s.write(&[b]);
                        *i += 1;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

/// Start every agent of the cluster under `prlimit --nofile=N:N`.
fn start_limited(spec: ClusterSpec) -> (Cluster, tempfile::TempDir) {
    let real = baton_tests::bin::baton_bin();
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("baton");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec prlimit --nofile={NOFILE}:{NOFILE} {} \"$@\"\n",
            real.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // This test binary runs one scenario at a time (`serial`) and sets the variable
    // before any agent or CLI starts.
    std::env::set_var("BATON_BIN", &wrapper);
    let c = Cluster::start(spec);
    std::env::remove_var("BATON_BIN");
    (c, dir)
}

/// The agent's pid, open-file limit and descriptors open.
fn agent_nofile(c: &Cluster, server: &str) -> (u32, u64, usize) {
    let st = c.status_via(server);
    let pid = st.local.pid;
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap();
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    (pid, soft, open)
}

#[test]
fn flood_and_slowloris_leave_the_group_running_and_failover_working() {
    let _g = serial();
    // The flood holds over a thousand sockets in this process.
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    let spec = ClusterSpec::new("flood", NET).with_monitor(MonitorSpec::default());
    let (mut c, _wrapper) = start_limited(spec);
    let (_, e1, _) = c.wait_owner(Some("node-1"), T);
    let (pid, soft, open) = agent_nofile(&c, "node-1");
    assert_eq!(
        soft,
        u64::from(NOFILE),
        "the agent runs under the test's limit"
    );
    eprintln!("node-1: open-file limit {soft}, {open} descriptors open before the flood");
    // The limit cannot hold the default cap (64) plus the reserve: lowered, and said so.
    c.wait_event("node-1", "BTN-4023", T, |_| true);

    let targets: Vec<SocketAddr> = c.nodes.iter().map(|n| n.api).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(FloodStats::default());
    let flooder = flood(targets, 200, stop.clone(), stats.clone());

    // Under the flood: the group stays on node-1 with the same epoch, the monitor keeps
    // polling and passing, and node-1 never runs out of descriptors.
    let polls0 = c.polls("node-1");
    let start = Instant::now();
    let mut max_open = 0;
    while start.elapsed() < Duration::from_secs(8) {
        let claim = c.claim().expect("the claim file");
        assert_eq!(
            (claim.owner.as_str(), claim.epoch),
            ("node-1", e1),
            "the group moved"
        );
        assert!(c.app_pid("node-1").is_some(), "the app stopped on node-1");
        let open = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
        max_open = max_open.max(open);
        std::thread::sleep(Duration::from_millis(250));
    }
    let polls1 = c.polls("node-1");
    assert!(
        polls1 >= polls0 + 20,
        "the monitor (200 ms) polled only {} times in 8 s of flood",
        polls1 - polls0
    );
    let opened = stats.opened.load(Ordering::Relaxed);
    let cut = stats.closed_by_server.load(Ordering::Relaxed);
    let slow_cut = stats.slowloris_cut.load(Ordering::Relaxed);
    eprintln!(
        "flood: {opened} connections opened, {cut} closed by the servers, {slow_cut} slowloris connections cut; node-1 held at most {max_open} descriptors (limit {NOFILE})"
    );
    assert!(opened >= 600, "the flood opened only {opened} connections");
    assert!(cut > 0, "no connection was refused");
    assert!(
        slow_cut > 0,
        "no slowloris connection was cut (header timeout 5s)"
    );
    assert!(
        u64::try_from(max_open).unwrap() < u64::from(NOFILE) - 40,
        "node-1 held {max_open} descriptors of {NOFILE}"
    );

    // Failover under the flood: kill the active agent; another server takes over (the
    // claim file shows it without going through the flooded APIs).
    c.kill("node-1", Signal::SIGKILL);
    let (owner, e2) = wait_until("another server claims the group", T, || match c.claim() {
        Some(cl) if cl.owner != "node-1" && cl.epoch > e1 => Ok((cl.owner, cl.epoch)),
        other => Err(format!("{other:?}")),
    });
    wait_until("the app runs on the new owner", T, || {
        c.app_pid(&owner).ok_or_else(|| "no app pid".to_string())
    });
    let p = c.polls(&owner);
    wait_until("the new owner's monitor polls", T, || {
        (c.polls(&owner) >= p + 5)
            .then_some(())
            .ok_or_else(|| format!("{} polls", c.polls(&owner)))
    });

    // After the flood: the API answers again, and agrees on the owner.
    stop.store(true, Ordering::Relaxed);
    flooder.join().unwrap();
    let (o, e, _) = c.wait_owner(Some(owner.as_str()), T);
    assert_eq!((o.as_str(), e), (owner.as_str(), e2));
    // The refusals were reported (at most once a minute, with the counts).
    c.wait_event(&owner, "BTN-4021", T, |_| true);
    let st = c.status_via(&owner);
    assert_eq!(
        st.local.group(GROUP).active_on.as_deref(),
        Some(owner.as_str()),
        "{}",
        st.summary(GROUP)
    );
}
