//! Two mirror processes (the daemon's code, in one test process) on 127.0.0.1, driven
//! through their control sockets as the agent drives them, with qemu-io as the
//! application: sync replication, a peer away (writes go on under the agent's lease,
//! then a differential resync of only the written regions), async mode, fencing by
//! epoch, a stale side's refusal, forced promotion and data split brain.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use baton_mirror::control::{call, Request, Response, Status};
use baton_mirror::daemon::{self, NbdEndpoint, Spec};
use baton_mirror::link::LinkKey;
use baton_mirror::params::MirrorDiskParams;
use sha2::{Digest, Sha256};

const REGION: u64 = 64 << 10;

fn tool() -> bool {
    let ok = Command::new("sh")
        .arg("-c")
        .arg("command -v qemu-io")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        baton_tests::skip::skip(
            &baton_tests::skip::current_test("replication"),
            "qemu-io (Debian qemu-utils) is not installed",
        );
    }
    ok
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Pair {
    dir: tempfile::TempDir,
    specs: [Spec; 2],
}

fn params(dir: &Path, me: &str, mode: &str) -> MirrorDiskParams {
    let t: toml::Table = toml::from_str(&format!(
        "device = \"{}/disk-{me}.img\"\nsize = \"8MiB\"\nmode = \"{mode}\"\nack_timeout = \"500ms\"\nconnect_timeout = \"1s\"\ncompression = \"lz4\"",
        dir.display()
    ))
    .unwrap();
    MirrorDiskParams::from_params(&t).unwrap()
}

fn pair(mode: &str) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let key = LinkKey([42u8; 32]);
    let spec = |me: &str, peer: &str, listen: u16, peer_port: u16| Spec {
        cluster: "c".into(),
        group: "g".into(),
        resource: "data".into(),
        server: me.into(),
        peer: peer.into(),
        params: params(dir.path(), me, mode),
        meta_path: dir.path().join(format!("{me}.meta")),
        listen: SocketAddr::from(([127, 0, 0, 1], listen)),
        peer_addr: SocketAddr::from(([127, 0, 0, 1], peer_port)),
        nbd: NbdEndpoint::Unix(dir.path().join(format!("{me}.nbd"))),
        control: dir.path().join(format!("{me}.ctl")),
        keys: vec![key.clone()],
    };
    let specs = [spec("a", "b", pa, pb), spec("b", "a", pb, pa)];
    Pair { dir, specs }
}

impl Pair {
    fn start(&self, rt: &tokio::runtime::Runtime, i: usize) {
        let s = self.specs[i].clone();
        rt.spawn(async move {
            if let Err(e) = daemon::run(s).await {
                eprintln!("daemon: {e}");
            }
        });
        let ctl = self.specs[i].control.clone();
        wait(rt, "the daemon answers", || {
            rt.block_on(call(&ctl, &Request::Status, Duration::from_secs(1)))
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
    }

    fn ask(&self, rt: &tokio::runtime::Runtime, i: usize, req: Request) -> Response {
        rt.block_on(call(&self.specs[i].control, &req, Duration::from_secs(5)))
            .unwrap()
    }

    fn status(&self, rt: &tokio::runtime::Runtime, i: usize) -> Status {
        match self.ask(rt, i, Request::Status) {
            Response::Status(s) => *s,
            other => panic!("{other:?}"),
        }
    }

    fn sock(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("{}.nbd", ["a", "b"][i]))
    }

    fn store(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("disk-{}.img", ["a", "b"][i]))
    }
}

fn wait<T>(
    _rt: &tokio::runtime::Runtime,
    what: &str,
    mut f: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if start.elapsed() > Duration::from_secs(30) => panic!("{what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn write(sock: &Path, off: u64, len: u64, pattern: u8) -> bool {
    let out = Command::new("qemu-io")
        .args(["-f", "raw"])
        .arg(format!("nbd+unix:///data?socket={}", sock.display()))
        .arg("-c")
        .arg(format!("write -P {pattern} {off} {len}"))
        .output()
        .unwrap();
    let t =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    out.status.success() && t.contains("wrote") && !t.contains("failed")
}

fn sha(p: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(p).unwrap()))
}

fn in_sync(p: &Pair, rt: &tokio::runtime::Runtime, i: usize) {
    wait(rt, "in sync", || {
        let s = p.status(rt, i);
        if s.in_sync && s.connection == baton_mirror::volume::Conn::Connected {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    });
}

#[test]
fn sync_replication_and_differential_resync() {
    if !tool() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let p = pair("sync");
    p.start(&rt, 0);
    p.start(&rt, 1);
    assert_eq!(p.ask(&rt, 0, Request::Promote { epoch: 1 }), Response::Ok);
    in_sync(&p, &rt, 0);
    for i in 0..16u64 {
        assert!(write(&p.sock(0), i * REGION, REGION, 1 + i as u8));
    }
    // Sync: acknowledged means on b already.
    assert_eq!(sha(&p.store(0)), sha(&p.store(1)));
    assert_eq!(
        p.status(&rt, 1).disk,
        baton_mirror::meta::DiskState::UpToDate
    );

    // b goes away; without the agent's word a write waits, with it the write goes on.
    let gen_connected = p.status(&rt, 0).generation;
    assert_eq!(p.ask(&rt, 1, Request::Shutdown), Response::Ok);
    wait(&rt, "a sees b gone", || {
        let s = p.status(&rt, 0);
        if s.connection == baton_mirror::volume::Conn::Disconnected {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    });
    let sock = p.sock(0);
    let w = std::thread::spawn(move || write(&sock, 0, 4096, 0x77));
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        !w.is_finished(),
        "a write was acknowledged with the peer away and no lease"
    );
    p.ask(
        &rt,
        0,
        Request::Lease {
            ms: 60_000,
            peer_down: true,
            hold_ms: 0,
        },
    );
    assert!(w.join().unwrap());
    let gen_before = p.status(&rt, 0).generation;
    let dirty: Vec<u64> = (0..10).map(|i| (2 << 20) + i * 2 * REGION).collect();
    for off in &dirty {
        assert!(write(&p.sock(0), *off, REGION, 0x55));
    }
    let s = p.status(&rt, 0);
    assert_eq!(
        s.generation, gen_before,
        "one new generation per disconnected period"
    );
    assert_ne!(
        s.generation, gen_connected,
        "writes alone start a new generation"
    );
    // b returns: only the regions written meanwhile are copied.
    let before = s.counters["resync_bytes"];
    p.start(&rt, 1);
    in_sync(&p, &rt, 0);
    let copied = p.status(&rt, 0).counters["resync_bytes"] - before;
    let expect = (dirty.len() as u64 + 1) * REGION;
    assert!(
        copied >= expect - REGION && copied <= expect * 11 / 10,
        "copied {copied}, expected about {expect}"
    );
    assert_eq!(sha(&p.store(0)), sha(&p.store(1)));
    let sb = p.status(&rt, 1);
    assert_eq!(sb.generation, p.status(&rt, 0).generation);

    // Fencing: b takes over at epoch 2; a's writes are refused from then on.
    assert_eq!(p.ask(&rt, 1, Request::Promote { epoch: 2 }), Response::Ok);
    wait(&rt, "a is fenced", || {
        let s = p.status(&rt, 0);
        if s.fenced {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    });
    assert!(
        !write(&p.sock(0), 0, 4096, 0x99),
        "a fenced side acknowledged a write"
    );
    // A promotion at an older epoch is refused.
    assert!(matches!(
        p.ask(&rt, 0, Request::Promote { epoch: 1 }),
        Response::Error { .. }
    ));
}

#[test]
fn stale_refusal_forced_promotion_and_split_brain() {
    if !tool() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let p = pair("async");
    p.start(&rt, 0);
    p.start(&rt, 1);
    assert_eq!(p.ask(&rt, 0, Request::Promote { epoch: 1 }), Response::Ok);
    in_sync(&p, &rt, 0);
    assert!(write(&p.sock(0), 0, REGION, 0x11));
    // Paused: b is told it is behind.
    assert_eq!(p.ask(&rt, 0, Request::Pause), Response::Ok);
    wait(&rt, "b outdated", || {
        let s = p.status(&rt, 1);
        if s.disk == baton_mirror::meta::DiskState::Outdated {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    });
    p.ask(
        &rt,
        0,
        Request::Lease {
            ms: 60_000,
            peer_down: false,
            hold_ms: 0,
        },
    );
    assert!(write(&p.sock(0), REGION, REGION, 0x22));
    // a is lost (demoted and gone); b refuses with stale data.
    assert_eq!(p.ask(&rt, 0, Request::Demote), Response::Ok);
    assert_eq!(p.ask(&rt, 0, Request::Shutdown), Response::Ok);
    match p.ask(&rt, 1, Request::Promote { epoch: 2 }) {
        Response::Error { code, .. } => assert_eq!(code, "mirror_stale"),
        other => panic!("a stale side became primary: {other:?}"),
    }
    assert_eq!(p.ask(&rt, 1, Request::ForcePrimary), Response::Ok);
    assert_eq!(p.ask(&rt, 1, Request::Promote { epoch: 2 }), Response::Ok);
    p.ask(
        &rt,
        1,
        Request::Lease {
            ms: 60_000,
            peer_down: true,
            hold_ms: 0,
        },
    );
    assert!(write(&p.sock(1), 2 * REGION, REGION, 0x33));
    // a comes back with its own write: split brain, nothing copied.
    let a_before = sha(&p.store(0));
    p.start(&rt, 0);
    wait(&rt, "split brain seen", || {
        let s = p.status(&rt, 0);
        if s.split_brain && s.connection == baton_mirror::volume::Conn::SplitBrain {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(a_before, sha(&p.store(0)));
    // The operator keeps b's data.
    assert_eq!(p.ask(&rt, 0, Request::DiscardLocal), Response::Ok);
    in_sync(&p, &rt, 1);
    assert_eq!(sha(&p.store(0)), sha(&p.store(1)));
    assert!(!p.status(&rt, 1).split_brain);
}

/// A minimal NBD client that sends many requests before reading any reply (the server
/// runs them concurrently), as the kernel's client does with its queue.
struct RawNbd(std::os::unix::net::UnixStream);

impl RawNbd {
    fn connect(sock: &Path) -> RawNbd {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
        let mut hello = [0u8; 18];
        s.read_exact(&mut hello).unwrap();
        assert_eq!(&hello[..8], b"NBDMAGIC");
        let mut o = Vec::new();
        o.extend_from_slice(&3u32.to_be_bytes()); // fixed newstyle, no zeroes
        o.extend_from_slice(b"IHAVEOPT");
        o.extend_from_slice(&1u32.to_be_bytes()); // NBD_OPT_EXPORT_NAME
        o.extend_from_slice(&4u32.to_be_bytes());
        o.extend_from_slice(b"data");
        s.write_all(&o).unwrap();
        let mut size = [0u8; 10];
        s.read_exact(&mut size).unwrap();
        RawNbd(s)
    }

    fn send(&mut self, kind: u16, handle: u64, off: u64, data: &[u8], len: u32) {
        use std::io::Write;
        let mut r = Vec::with_capacity(28 + data.len());
        r.extend_from_slice(&0x2560_9513u32.to_be_bytes());
        r.extend_from_slice(&0u16.to_be_bytes());
        r.extend_from_slice(&kind.to_be_bytes());
        r.extend_from_slice(&handle.to_be_bytes());
        r.extend_from_slice(&off.to_be_bytes());
        r.extend_from_slice(&len.to_be_bytes());
        r.extend_from_slice(data);
        self.0.write_all(&r).unwrap();
    }

    /// (handle, error) of the next simple reply (no read payloads expected).
    fn reply(&mut self) -> (u64, u32) {
        use std::io::Read;
        let mut h = [0u8; 16];
        self.0.read_exact(&mut h).unwrap();
        assert_eq!(h[..4], 0x6744_6698u32.to_be_bytes());
        (
            u64::from_be_bytes(h[8..].try_into().unwrap()),
            u32::from_be_bytes(h[4..8].try_into().unwrap()),
        )
    }
}

/// Overlapping writes in flight at the same time (the NBD server runs them concurrently)
/// end the same on both sides: the peer applies them in the order the local store got
/// them, whichever order the replies come in.
#[test]
fn concurrent_overlapping_writes_end_the_same_on_both_sides() {
    if !tool() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    for mode in ["sync", "async"] {
        let p = pair(mode);
        p.start(&rt, 0);
        p.start(&rt, 1);
        assert_eq!(p.ask(&rt, 0, Request::Promote { epoch: 1 }), Response::Ok);
        in_sync(&p, &rt, 0);
        let mut c = RawNbd::connect(&p.sock(0));
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        // 4 rounds of 24 writes of 4..68 KiB over the same 256 KiB, all in flight.
        let mut handle = 0u64;
        for _ in 0..4 {
            for _ in 0..24 {
                handle += 1;
                let len = 4096 * (1 + next() % 17);
                let off = 4096 * (next() % 48);
                let data = vec![(next() % 251) as u8 + 1; len as usize];
                c.send(1, handle, off, &data, len as u32);
            }
            let mut seen = std::collections::HashSet::new();
            for _ in 0..24 {
                let (h, err) = c.reply();
                assert_eq!(err, 0, "write {h} failed");
                assert!(seen.insert(h), "reply for {h} twice");
            }
        }
        handle += 1;
        c.send(3, handle, 0, &[], 0); // FLUSH
        assert_eq!(c.reply(), (handle, 0));
        in_sync(&p, &rt, 0);
        assert_eq!(
            sha(&p.store(0)),
            sha(&p.store(1)),
            "{mode}: the two sides differ after overlapping concurrent writes"
        );
        assert_eq!(p.ask(&rt, 0, Request::Demote), Response::Ok);
        assert_eq!(p.ask(&rt, 0, Request::Shutdown), Response::Ok);
        assert_eq!(p.ask(&rt, 1, Request::Shutdown), Response::Ok);
    }
}
