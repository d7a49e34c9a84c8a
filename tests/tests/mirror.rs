//! The `mirror-disk` resource with real agents on 127.0.NET.x: three servers, the
//! mirrored group `db` on node-1 and node-2 (node-3 votes), the application played by
//! qemu-io over the volume's NBD socket (Debian qemu-utils, installed by run-all.sh).
//!
//! - `failover_keeps_every_acknowledged_write`: agent restart during writes (the writes
//!   keep succeeding), the mirror link cut (sync writes wait while the peer is up, go on
//!   after `baton mirror pause`), healed and resumed (the resync copies only the dirty
//!   regions, both stores end equal),
//!   then the primary's agent and mirror process SIGKILLed mid-stream: every write qemu
//!   saw acknowledged reads back from the new primary; the old primary returns and is
//!   resynchronised by difference.
//! - `stale_side_refuses_and_split_brain_is_detected`: replication paused, writes, the
//!   primary lost: the stale side refuses to activate (BTN-7007) until forced (BTN-7008);
//!   the old primary comes back with its own writes: split brain (BTN-7006), no resync,
//!   until `discard-local` on one side.
//! - `isolated_primary_acknowledges_nothing_after_the_takeover`: sync mode, node-1 cut
//!   off from everyone; no write is acknowledged on it after node-2's takeover.
//! - `wrong_key_and_garbage_on_the_mirror_port`: refused, counted, nothing written.
//! - `async_failover_loses_at_most_the_queue`: async mode, the primary killed mid-stream:
//!   the writes missing on the new primary are at most what `queue_size` holds.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::disallowed_methods)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_tests::cluster::{Cluster, ClusterSpec};
use baton_tests::wait_until;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};

const GROUP: &str = "db";
const REGION: u64 = 64 << 10;

fn mirror_config(mode: &str, ack_timeout: &str) -> String {
    format!(
        r#"
[[group]]
name = "{GROUP}"
servers = ["node-1", "node-2"]

[[group.resource]]
kind = "mirror-disk"
name = "data"
size = "16MiB"
mode = "{mode}"
interconnect = 1
port = @PORT@
ack_timeout = "{ack_timeout}"
connect_timeout = "2s"
activate_timeout = "20s"
deactivate_timeout = "20s"
[group.resource.server.node-1]
device = "@DIR@/disk-node-1.img"
nbd_socket = "@DIR@/nbd-node-1.sock"
[group.resource.server.node-2]
device = "@DIR@/disk-node-2.img"
nbd_socket = "@DIR@/nbd-node-2.sock"

[[monitor]]
kind = "mirror-connect"
name = "data-link"
resource = "data"
interval = "1s"
timing = "always"
"#
    )
}

fn tools() -> bool {
    let ok = Command::new("sh")
        .arg("-c")
        .arg("command -v qemu-io")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        baton_tests::skip::skip(
            &baton_tests::skip::current_test("mirror"),
            "qemu-io (Debian qemu-utils) is not installed",
        );
    }
    ok
}

fn start(name: &str, net: u8, mode: &str, ack_timeout: &str) -> Cluster {
    let mut spec = ClusterSpec::new(name, net);
    spec.extra_config = mirror_config(mode, ack_timeout);
    let c = Cluster::start(spec);
    c.wait_group_owner(GROUP, Some("node-1"), Duration::from_secs(30));
    wait_until("the mirror is in sync", Duration::from_secs(30), || {
        let s = status(&c, "node-1");
        if s["in_sync"] == true && s["nbd_serving"] == true {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });
    c
}

/// The server dies: its agent and its mirror process are SIGKILLed.
fn crash(c: &mut Cluster, server: &str) {
    c.kill(server, Signal::SIGKILL);
    for pid in c.mirror_pids(Some(server)) {
        kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    }
}

fn socket(c: &Cluster, server: &str) -> PathBuf {
    c.dir.join(format!("nbd-{server}.sock"))
}

fn store(c: &Cluster, server: &str) -> PathBuf {
    c.dir.join(format!("disk-{server}.img"))
}

fn status(c: &Cluster, server: &str) -> serde_json::Value {
    let n = c.node(server);
    let out = c.ctl(&[
        "mirror",
        "status",
        "data",
        "--json",
        "-s",
        server,
        "--state-dir",
        &n.state_dir.to_string_lossy(),
    ]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("mirror status of {server}: {e}: {out:?}"));
    v["mirrors"][0].clone()
}

fn mirror_cmd(c: &Cluster, server: &str, args: &[&str]) -> baton_tests::client::CliOut {
    let n = c.node(server);
    let sd = n.state_dir.to_string_lossy().to_string();
    let mut a = vec!["mirror"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-s", server, "--state-dir", &sd]);
    c.ctl(&a)
}

fn uri(sock: &Path) -> String {
    format!("nbd+unix:///data?socket={}", sock.display())
}

/// One write through qemu-io; true when qemu saw it acknowledged.
fn write(sock: &Path, off: u64, len: u64, pattern: u8) -> bool {
    let out = Command::new("qemu-io")
        .args(["-f", "raw", &uri(sock), "-c"])
        .arg(format!("write -P {pattern} {off} {len}"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.status.success() && text.contains("wrote") && !text.contains("failed")
}

/// Does the volume hold `pattern` over the range (read through qemu-io)?
fn reads_back(sock: &Path, off: u64, len: u64, pattern: u8) -> Result<(), String> {
    let out = Command::new("qemu-io")
        .args(["-r", "-f", "raw", &uri(sock), "-c"])
        .arg(format!("read -P {pattern} {off} {len}"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && text.contains("read ") && !text.contains("failed") {
        Ok(())
    } else {
        Err(text)
    }
}

fn sha(p: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(p).unwrap()))
}

/// A writer in the background: 4 KiB writes over 1 MiB from `base` with a pattern each,
/// recording those qemu saw acknowledged (and when they were sent).
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(u64, u8, Instant)>>>,
    failed: Arc<Mutex<u64>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(sock: PathBuf, base: u64, stop_on_failure: bool) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(0));
        let (s2, a2, f2) = (stop.clone(), acked.clone(), failed.clone());
        let handle = std::thread::spawn(move || {
            let mut i = 0u64;
            while !s2.load(Ordering::SeqCst) {
                // 1 MiB from `base`; a write counts from the moment it was sent.
                let off = base + (i % 256) * 4096;
                let pattern = (1 + (i % 250)) as u8;
                let sent = Instant::now();
                if write(&sock, off, 4096, pattern) {
                    a2.lock().unwrap().push((off, pattern, sent));
                } else {
                    *f2.lock().unwrap() += 1;
                    if stop_on_failure {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                i += 1;
            }
        });
        Writer {
            stop,
            acked,
            failed,
            handle: Some(handle),
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn finish(mut self) -> (Vec<(u64, u8, Instant)>, u64) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
        let a = self.acked.lock().unwrap().clone();
        let f = *self.failed.lock().unwrap();
        (a, f)
    }
}

/// The newest acknowledged pattern of each offset.
fn last_writes(acked: &[(u64, u8, Instant)]) -> std::collections::BTreeMap<u64, u8> {
    acked.iter().map(|(o, p, _)| (*o, *p)).collect()
}

fn ips(c: &Cluster, server: &str) -> Vec<IpAddr> {
    c.node(server)
        .interconnects
        .iter()
        .map(|a| a.ip())
        .collect()
}

fn isolate(c: &Cluster, server: &str) -> baton_tests::nft::Cut {
    let others: Vec<IpAddr> = c
        .nodes
        .iter()
        .filter(|n| n.name != server)
        .flat_map(|n| n.interconnects.iter().map(|a| a.ip()))
        .collect();
    baton_tests::nft::Cut::isolate(&ips(c, server), &others).unwrap_or_else(|e| panic!("{e}"))
}

fn nft_ok() -> bool {
    if let Some(why) = baton_tests::nft::unavailable() {
        baton_tests::skip::skip(&baton_tests::skip::current_test("mirror"), &why);
        return false;
    }
    true
}

#[test]
fn failover_keeps_every_acknowledged_write() {
    if !tools() || !nft_ok() {
        return;
    }
    let mut c = start("mirror-failover", 171, "sync", "1s");
    let s1 = socket(&c, "node-1");

    // 8. The agent restarts during writes: the writes keep succeeding.
    let w = Writer::start(s1.clone(), 0, false);
    wait_until("writes flow", Duration::from_secs(20), || {
        if w.acked() >= 10 {
            Ok(())
        } else {
            Err(format!("{} writes", w.acked()))
        }
    });
    let daemon = c.mirror_pids(Some("node-1"));
    assert_eq!(daemon.len(), 1, "one mirror process on node-1: {daemon:?}");
    c.kill("node-1", Signal::SIGKILL);
    let before = w.acked();
    std::thread::sleep(Duration::from_millis(500));
    c.restart("node-1");
    wait_until("writes go on", Duration::from_secs(20), || {
        if w.acked() >= before + 20 {
            Ok(())
        } else {
            Err(format!("{} writes", w.acked()))
        }
    });
    let (acked, failed) = w.finish();
    assert_eq!(failed, 0, "a write failed while the agent restarted");
    assert_eq!(
        c.mirror_pids(Some("node-1")),
        daemon,
        "the mirror process was replaced"
    );
    c.wait_event("node-1", "BTN-7017", Duration::from_secs(10), |e| {
        e.message.contains("adopted")
    });
    c.wait_group_owner(GROUP, Some("node-1"), Duration::from_secs(10));
    let mut expect = last_writes(&acked);

    // 2. The mirror link is cut (heartbeats go on): sync writes wait (BTN-7016), since
    // the peer's server is up and could take over without them; the operator pauses
    // replication and they go on; healed and resumed, the resync copies only the
    // regions written meanwhile.
    let resync_before = status(&c, "node-1")["counters"]["resync_bytes"]
        .as_u64()
        .unwrap();
    let link = std::net::SocketAddr::new(ips(&c, "node-2")[1], c.port);
    let cut = baton_tests::nft::Cut::tcp_to(link).unwrap_or_else(|e| panic!("{e}"));
    let regions: Vec<u64> = (0..20).map(|i| 2 * (1 << 20) + i * 3 * REGION).collect();
    let s1b = s1.clone();
    let first = regions[0];
    let blocked = std::thread::spawn(move || write(&s1b, first, REGION, 0x40));
    c.wait_event("node-1", "BTN-7016", Duration::from_secs(20), |_| true);
    std::thread::sleep(Duration::from_millis(500));
    if blocked.is_finished() {
        // Only legitimate if node-1's agent declared node-2's server down meanwhile (a
        // loaded machine can miss heartbeats): then sync writes may go on alone.
        let evs = c.alerts("node-1");
        assert!(
            evs.iter()
                .any(|e| e.id == "BTN-1102" && e.message.contains("node-2")),
            "a sync write was acknowledged with the link cut and node-2 up"
        );
    }
    mirror_cmd(&c, "node-1", &["pause", "data"]).ok("mirror pause");
    assert!(
        blocked.join().unwrap(),
        "the waiting write failed after pause"
    );
    for (i, off) in regions.iter().enumerate().skip(1) {
        assert!(
            write(&s1, *off, REGION, 0x40 + i as u8),
            "write at {off} while paused"
        );
    }
    drop(cut);
    mirror_cmd(&c, "node-1", &["resume", "data"]).ok("mirror resume");
    wait_until("the resync is done", Duration::from_secs(60), || {
        let s = status(&c, "node-1");
        if s["in_sync"] == true && s["connection"] == "connected" {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    });
    let s = status(&c, "node-1");
    let copied = s["counters"]["resync_bytes"].as_u64().unwrap() - resync_before;
    let dirtied = regions.len() as u64 * REGION;
    assert!(
        copied <= dirtied * 11 / 10 && copied >= dirtied,
        "resync copied {copied} bytes for {dirtied} dirtied"
    );
    assert_eq!(sha(&store(&c, "node-1")), sha(&store(&c, "node-2")));
    c.wait_event("node-1", "BTN-7004", Duration::from_secs(5), |_| true);

    // 1. Writes in flight; SIGKILL node-1's agent and mirror process; node-2 takes over
    // and holds every write qemu saw acknowledged.
    let w = Writer::start(s1.clone(), 8 << 20, true);
    wait_until("writes flow", Duration::from_secs(20), || {
        if w.acked() >= 30 {
            Ok(())
        } else {
            Err(format!("{} writes", w.acked()))
        }
    });
    crash(&mut c, "node-1");
    let (acked, _) = w.finish();
    c.wait_group_owner(GROUP, Some("node-2"), Duration::from_secs(30));
    let s2 = socket(&c, "node-2");
    wait_until("node-2 serves the volume", Duration::from_secs(10), || {
        reads_back(&s2, 0, 512, 0).map(|_| ()).or_else(
            |e| {
                if s2.exists() {
                    Ok(())
                } else {
                    Err(e)
                }
            },
        )
    });
    for (off, p) in &last_writes(&acked) {
        expect.insert(*off, *p);
    }
    for (i, off) in regions.iter().enumerate() {
        reads_back(&s2, *off, REGION, 0x40 + i as u8).unwrap();
    }
    for (off, p) in &expect {
        reads_back(&s2, *off, 4096, *p)
            .unwrap_or_else(|e| panic!("acknowledged write at {off} (pattern {p}) lost: {e}"));
    }

    // 3. Write on the new primary; the old one comes back: a resync by difference, in the
    // other direction.
    let resync2_before = status(&c, "node-2")["counters"]["resync_bytes"]
        .as_u64()
        .unwrap();
    let back: Vec<u64> = (0..8).map(|i| 12 * (1 << 20) + i * 2 * REGION).collect();
    for (i, off) in back.iter().enumerate() {
        assert!(write(&s2, *off, REGION, 0x90 + i as u8));
    }
    c.restart("node-1");
    wait_until("node-1 is resynchronised", Duration::from_secs(60), || {
        let s = status(&c, "node-2");
        if s["in_sync"] == true && s["connection"] == "connected" {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });
    let copied = status(&c, "node-2")["counters"]["resync_bytes"]
        .as_u64()
        .unwrap()
        - resync2_before;
    let written = back.len() as u64 * REGION;
    // The regions written on node-2, plus those node-1 had in flight when it died (its
    // writer's 16-region window) and those its bitmap had set ahead of that sequential
    // writer (4 MiB = 64 regions, the cost of one bitmap sync per 4 MiB written).
    assert!(
        copied >= written && copied <= written + (16 + 64) * REGION,
        "reverse resync copied {copied} bytes for {written} written"
    );
    assert_eq!(sha(&store(&c, "node-1")), sha(&store(&c, "node-2")));
    c.wait_group_owner(GROUP, Some("node-2"), Duration::from_secs(5));
}

#[test]
fn wrong_key_and_garbage_on_the_mirror_port() {
    if !tools() {
        return;
    }
    let c = start("mirror-key", 172, "sync", "1s");
    let before = sha(&store(&c, "node-2"));
    let port = c.port;
    let target = std::net::SocketAddr::new(ips(&c, "node-2")[1], port);
    // Random bytes.
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(target).unwrap();
        let junk: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let _ = s.write_all(&junk);
        std::thread::sleep(Duration::from_millis(300));
    }
    // An HTTP request.
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(target).unwrap();
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        std::thread::sleep(Duration::from_millis(300));
    }
    // Our own protocol with another key.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = rt.block_on(async {
        let s = tokio::net::TcpStream::connect(target).await.unwrap();
        baton_mirror::link::connect(
            s,
            &baton_mirror::link::LinkKey([7u8; 32]),
            b"{}",
            Duration::from_secs(2),
        )
        .await
    });
    assert!(r.is_err(), "a wrong key was accepted");
    let s = wait_until("the refusals are counted", Duration::from_secs(10), || {
        let s = status(&c, "node-2");
        let n = s["counters"]["refused_auth"].as_u64().unwrap()
            + s["counters"]["refused_protocol"].as_u64().unwrap();
        if n >= 3 {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    });
    assert!(s["counters"]["refused_auth"].as_u64().unwrap() >= 1, "{s}");
    c.wait_event("node-2", "BTN-7009", Duration::from_secs(10), |_| true);
    assert_eq!(
        before,
        sha(&store(&c, "node-2")),
        "the refused peers changed data"
    );
    // The real link is still up and in sync.
    assert_eq!(status(&c, "node-1")["connection"], "connected");
    // `baton status` shows the mirror of both servers.
    let out = c.ctl(&["status"]).ok("baton status");
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .skip_while(|l| *l != "MIRRORS")
        .take(3)
        .collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("db/data") && l.contains("primary") && l.contains("connected")),
        "{}",
        out.stdout
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("secondary") && l.contains("up_to_date")),
        "{}",
        out.stdout
    );
}

#[test]
fn stale_side_refuses_and_split_brain_is_detected() {
    if !tools() {
        return;
    }
    let mut c = start("mirror-stale", 173, "sync", "1s");
    let s1 = socket(&c, "node-1");
    assert!(write(&s1, 0, REGION, 0x11));
    // 4. Replication paused (node-2 is told it is behind), a write, node-1 lost.
    mirror_cmd(&c, "node-1", &["pause", "data"]).ok("mirror pause");
    wait_until("node-2 knows it is behind", Duration::from_secs(10), || {
        let s = status(&c, "node-2");
        if s["disk"] == "outdated" {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });
    assert!(write(&s1, REGION, REGION, 0x22));
    crash(&mut c, "node-1");
    c.wait_event("node-2", "BTN-7007", Duration::from_secs(30), |_| true);
    assert_eq!(status(&c, "node-2")["role"], "secondary");
    // Forced: the operator accepts node-2's data.
    mirror_cmd(&c, "node-2", &["force-primary", "data"])
        .check("without --yes")
        .expect_err("force-primary without --yes must be refused");
    mirror_cmd(&c, "node-2", &["force-primary", "data", "--yes"]).ok("force-primary");
    // The failed activation left the group held (failed) on node-2: stop, then start.
    c.ctl(&["group", "stop", GROUP]).ok("group stop");
    wait_until("the group is stopped", Duration::from_secs(20), || {
        let st = c.try_status_via(Some("node-2"))?;
        if st.group(GROUP).active_on.is_none() && st.sole_owner(GROUP).is_none() {
            Ok(())
        } else {
            Err(st.summary(GROUP))
        }
    });
    c.ctl(&["group", "start", GROUP, "--server", "node-2"])
        .ok("group start");
    c.wait_group_owner(GROUP, Some("node-2"), Duration::from_secs(30));
    c.wait_event("node-2", "BTN-7008", Duration::from_secs(10), |_| true);
    let s2 = socket(&c, "node-2");
    reads_back(&s2, 0, REGION, 0x11).unwrap();
    assert!(write(&s2, 2 * REGION, REGION, 0x33));

    // 5. node-1 comes back with its own write (0x22): both sides wrote: split brain,
    // nothing copied.
    let sha1 = sha(&store(&c, "node-1"));
    c.restart("node-1");
    c.wait_event("node-1", "BTN-7006", Duration::from_secs(30), |_| true);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        sha1,
        sha(&store(&c, "node-1")),
        "a split-brain side was overwritten"
    );
    assert_eq!(status(&c, "node-2")["split_brain"], true);
    // The operator keeps node-2's data.
    mirror_cmd(&c, "node-1", &["discard-local", "data", "--yes"]).ok("discard-local");
    wait_until("node-1 is resynchronised", Duration::from_secs(60), || {
        let s = status(&c, "node-2");
        if s["in_sync"] == true && s["split_brain"] == false {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });
    assert_eq!(sha(&store(&c, "node-1")), sha(&store(&c, "node-2")));
}

#[test]
fn isolated_primary_acknowledges_nothing_after_the_takeover() {
    if !tools() || !nft_ok() {
        return;
    }
    // A short ack timeout: writes stop waiting for the cut-off peer long before node-1's
    // agent notices it lost quorum, so only the fencing rules keep them unacknowledged.
    let c = start("mirror-isolated", 174, "sync", "200ms");
    let s1 = socket(&c, "node-1");
    let w = Writer::start(s1, 0, false);
    wait_until("writes flow", Duration::from_secs(20), || {
        if w.acked() >= 10 {
            Ok(())
        } else {
            Err(format!("{} writes", w.acked()))
        }
    });
    let cut = isolate(&c, "node-1");
    let cut_at = Instant::now();
    // node-2 takes over (node-2 and node-3 are a majority).
    let (_, epoch, _) = wait_until("node-2 takes over", Duration::from_secs(30), || {
        let st = c.try_status_via(Some("node-2"))?;
        let g = st.group(GROUP);
        if g.active_on.as_deref() == Some("node-2") {
            Ok(("node-2".to_string(), g.epoch, st))
        } else {
            Err(st.summary(GROUP))
        }
    });
    let taken = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let (acked, _) = w.finish();
    drop(cut);
    // Writes sent after the cut (one sent just before may still have reached node-2).
    let after: Vec<_> = acked.iter().filter(|(_, _, t)| *t >= cut_at).collect();
    assert!(
        after.iter().all(|(_, _, t)| *t < taken),
        "node-1 acknowledged writes after node-2 took over at epoch {epoch}: {after:?}"
    );
    // In sync mode not even the writes between the cut and the takeover are
    // acknowledged: node-1 could not know node-2 was not taking over.
    assert!(
        after.is_empty(),
        "writes acknowledged after the cut: {after:?}"
    );
}

#[test]
fn async_failover_loses_at_most_the_queue() {
    if !tools() {
        return;
    }
    let mut spec = ClusterSpec::new("mirror-async", 175);
    spec.extra_config = mirror_config("async", "1s").replace(
        "mode = \"async\"",
        "mode = \"async\"\nqueue_size = \"1MiB\"",
    );
    let mut c = Cluster::start(spec);
    c.wait_group_owner(GROUP, Some("node-1"), Duration::from_secs(30));
    wait_until("the mirror is in sync", Duration::from_secs(30), || {
        let s = status(&c, "node-1");
        if s["in_sync"] == true && s["nbd_serving"] == true && s["mode"] == "async" {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });
    let s1 = socket(&c, "node-1");
    let w = Writer::start(s1, 0, true);
    wait_until("writes flow", Duration::from_secs(20), || {
        if w.acked() >= 40 {
            Ok(())
        } else {
            Err(format!("{} writes", w.acked()))
        }
    });
    crash(&mut c, "node-1");
    let (acked, _) = w.finish();
    c.wait_group_owner(GROUP, Some("node-2"), Duration::from_secs(30));
    let s2 = socket(&c, "node-2");
    wait_until("node-2 serves the volume", Duration::from_secs(10), || {
        if s2.exists() {
            Ok(())
        } else {
            Err("no socket yet".into())
        }
    });
    let expect = last_writes(&acked);
    let lost = expect
        .iter()
        .filter(|(off, p)| reads_back(&s2, **off, 4096, **p).is_err())
        .count() as u64;
    // The queue holds at most 1 MiB of writes not yet acknowledged by the peer.
    assert!(
        lost * 4096 <= 1 << 20,
        "{lost} acknowledged 4 KiB writes lost, more than the 1 MiB queue holds"
    );
    eprintln!(
        "async failover: {} distinct offsets acknowledged, {lost} not on the new primary",
        expect.len()
    );
    // The new primary says what may be missing: the old primary's last backlog report.
    c.wait_event("node-2", "BTN-7019", Duration::from_secs(10), |_| true);
    let t = status(&c, "node-2")["takeover"].clone();
    assert!(
        t["peer_backlog_bytes"].as_u64().is_some() && t["peer_report_unix_ms"].as_u64().is_some(),
        "the takeover reports the old primary's last backlog: {t}"
    );
    // The old primary returns: what it wrote that node-2 never confirmed is replaced by
    // node-2's data, counted and reported (BTN-7020) when there was any.
    c.restart("node-1");
    wait_until("node-1 is resynchronised", Duration::from_secs(60), || {
        let s = status(&c, "node-2");
        if s["in_sync"] == true && s["connection"] == "connected" {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });
    let discarded = status(&c, "node-1")["counters"]["async_discarded_bytes"]
        .as_u64()
        .unwrap();
    assert!(
        discarded >= lost * 4096,
        "{lost} writes lost but only {discarded} bytes reported discarded"
    );
    if discarded > 0 {
        c.wait_event("node-1", "BTN-7020", Duration::from_secs(10), |_| true);
    }
    eprintln!("async failover: node-1 reported {discarded} bytes discarded on its return");
    assert_eq!(sha(&store(&c, "node-1")), sha(&store(&c, "node-2")));

    // 2. Writes the peer never gets: the mirror link is cut (heartbeats go on) and node-2
    // writes on alone (async, under its lease), then its server dies. node-1 takes over
    // (BTN-7019); when node-2 returns, the regions it wrote are replaced by node-1's data,
    // counted and reported (BTN-7020).
    if !nft_ok() {
        return;
    }
    let cuts: Vec<_> = ["node-1", "node-2"]
        .iter()
        .map(|n| {
            let link = std::net::SocketAddr::new(ips(&c, n)[1], c.port);
            baton_tests::nft::Cut::tcp_to(link).unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    let alone: Vec<u64> = (0..8).map(|i| 8 * (1 << 20) + i * 2 * REGION).collect();
    for (i, off) in alone.iter().enumerate() {
        assert!(
            write(&s2, *off, REGION, 0xa0 + i as u8),
            "async writes go on without the link"
        );
    }
    crash(&mut c, "node-2");
    drop(cuts);
    c.wait_group_owner(GROUP, Some("node-1"), Duration::from_secs(30));
    c.wait_event("node-1", "BTN-7019", Duration::from_secs(10), |_| true);
    let s1 = socket(&c, "node-1");
    let missing = alone
        .iter()
        .enumerate()
        .filter(|(i, off)| reads_back(&s1, **off, REGION, 0xa0 + *i as u8).is_err())
        .count() as u64;
    c.restart("node-2");
    // (node-1 may still count the cut session as up until its silence timeout.)
    c.wait_event("node-2", "BTN-7020", Duration::from_secs(30), |_| true);
    wait_until("node-2 is resynchronised", Duration::from_secs(60), || {
        let (s1, s2) = (status(&c, "node-1"), status(&c, "node-2"));
        if s1["in_sync"] == true && s2["connection"] == "connected" && s2["disk"] == "up_to_date" {
            Ok(())
        } else {
            Err(format!("{s1}\n{s2}"))
        }
    });
    let discarded = status(&c, "node-2")["counters"]["async_discarded_bytes"]
        .as_u64()
        .unwrap();
    assert!(
        discarded >= missing * REGION && missing > 0,
        "{missing} regions written alone are missing on node-1, {discarded} bytes reported discarded"
    );
    eprintln!(
        "async failover with the link cut: {missing} of {} regions missing on the new primary, {discarded} bytes reported discarded",
        alone.len()
    );
    assert_eq!(sha(&store(&c, "node-1")), sha(&store(&c, "node-2")));
}
