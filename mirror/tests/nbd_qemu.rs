//! The NBD server against a real client, qemu's (`qemu-io`, `qemu-img`, Debian
//! `qemu-utils`, installed by `tests/run-all.sh`): the handshake qemu negotiates (it asks
//! for structured replies and falls back to simple ones), writes with and without FUA,
//! reads checked against patterns, write-zeroes, discard, flush, the size it reports, an
//! unknown export and a read-only one; and bytes that are not NBD, which are refused
//! without touching the volume.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// The test waits for the server with a real deadline.
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use baton_mirror::nbd::{self, Export};
use baton_mirror::store::{BlockStore, FileStore};

const MIB: u64 = 1 << 20;

struct Server {
    port: u16,
    errors: Arc<Mutex<Vec<String>>>,
    served: Arc<Mutex<Vec<nbd::Served>>>,
    _rt: tokio::runtime::Runtime,
}

fn start(exports: Vec<Export>) -> Server {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let errors = Arc::new(Mutex::new(Vec::new()));
    let served = Arc::new(Mutex::new(Vec::new()));
    let (e2, s2) = (errors.clone(), served.clone());
    let port = rt.block_on(async move {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = l.accept().await else {
                    continue;
                };
                let (exports, e3, s3) = (exports.clone(), e2.clone(), s2.clone());
                tokio::spawn(async move {
                    match nbd::serve(stream, &exports).await {
                        Ok(s) => s3.lock().unwrap().push(s),
                        Err(e) => e3.lock().unwrap().push(format!("{}: {e}", e.code())),
                    }
                });
            }
        });
        port
    });
    Server {
        port,
        errors,
        served,
        _rt: rt,
    }
}

fn volume(dir: &Path, name: &str, size: u64) -> Arc<dyn BlockStore> {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().set_len(size).unwrap();
    Arc::new(FileStore::open(&p).unwrap())
}

fn tool(name: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        baton_tests::skip::skip(
            &baton_tests::skip::current_test("nbd_qemu"),
            &format!("{name} (Debian qemu-utils) is not installed"),
        );
    }
    found
}

fn qemu_io(url: &str, extra: &[&str], cmds: &[&str]) -> (bool, String) {
    let mut c = Command::new("qemu-io");
    c.args(extra).args(["-f", "raw", url]);
    for x in cmds {
        c.args(["-c", x]);
    }
    let out = c.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn qemu_reads_and_writes_through_the_server() {
    if !tool("qemu-io") || !tool("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vol = volume(dir.path(), "vol.img", 16 * MIB);
    let ro = volume(dir.path(), "ro.img", 4 * MIB);
    let srv = start(vec![
        Export {
            name: "vol".into(),
            store: vol,
            read_only: false,
        },
        Export {
            name: "ro".into(),
            store: ro,
            read_only: true,
        },
    ]);
    let url = format!("nbd://127.0.0.1:{}/vol", srv.port);
    let (ok, out) = qemu_io(
        &url,
        &[],
        &[
            "write -P 0xab 0 1M",
            "write -f -P 0xcd 1M 64k",
            "read -P 0xab 0 1M",
            "read -P 0xcd 1M 64k",
            "write -P 0x11 2M 128k",
            "write -z 2M 128k",
            "read -P 0 2M 128k",
            "write -P 0x22 4M 64k",
            "discard 4M 64k",
            "flush",
            "read -P 0 15M 1M",
        ],
    );
    assert!(ok, "{out}");
    assert!(!out.contains("failed") && !out.contains("error"), "{out}");
    // What the client acknowledged is in the file.
    let f = std::fs::File::open(dir.path().join("vol.img")).unwrap();
    let mut b = vec![0u8; 64 * 1024];
    f.read_exact_at(&mut b, 0).unwrap();
    assert!(b.iter().all(|&x| x == 0xab));
    f.read_exact_at(&mut b, MIB).unwrap();
    assert!(b.iter().all(|&x| x == 0xcd));
    f.read_exact_at(&mut b, 2 * MIB).unwrap();
    assert!(b.iter().all(|&x| x == 0), "write-zeroes left data");
    f.read_exact_at(&mut b, 4 * MIB).unwrap();
    assert!(b.iter().all(|&x| x == 0), "discard left data");

    // The size qemu sees.
    let out = Command::new("qemu-img")
        .args(["info", &url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("16777216 bytes"), "{text}");

    // An export that does not exist: qemu is told so and gives up.
    let (ok, out) = qemu_io(
        &format!("nbd://127.0.0.1:{}/nope", srv.port),
        &[],
        &["read 0 4k"],
    );
    assert!(!ok, "{out}");

    // The read-only export: reads work, a write is refused and changes nothing.
    let ro_url = format!("nbd://127.0.0.1:{}/ro", srv.port);
    let (ok, out) = qemu_io(&ro_url, &["-r"], &["read -P 0 0 64k"]);
    assert!(ok, "{out}");
    let (_, out) = qemu_io(&ro_url, &[], &["write -P 0x33 0 4k"]);
    assert!(
        out.to_lowercase().contains("permission denied")
            || out.contains("read-only")
            || out.contains("read only"),
        "{out}"
    );
    let f = std::fs::File::open(dir.path().join("ro.img")).unwrap();
    let mut b = vec![0u8; 4096];
    f.read_exact_at(&mut b, 0).unwrap();
    assert!(b.iter().all(|&x| x == 0));

    let served = srv.served.lock().unwrap().clone();
    let vol_stats: Vec<_> = served
        .iter()
        .filter(|s| s.export.as_deref() == Some("vol"))
        .collect();
    assert!(
        vol_stats.iter().map(|s| s.bytes_written).sum::<u64>() >= MIB + 64 * 1024,
        "{served:?}"
    );
}

#[test]
fn bytes_that_are_not_nbd_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let vol = volume(dir.path(), "vol.img", MIB);
    let srv = start(vec![Export {
        name: "vol".into(),
        store: vol,
        read_only: false,
    }]);
    let connect = || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut greeting = [0u8; 18];
        s.read_exact(&mut greeting).unwrap();
        assert_eq!(&greeting[..8], b"NBDMAGIC");
        assert_eq!(&greeting[8..16], b"IHAVEOPT");
        s
    };
    // An old-style client (no fixed newstyle).
    let mut s = connect();
    s.write_all(&0u32.to_be_bytes()).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");
    // Garbage after the flags, then an option with far too much data.
    let mut s = connect();
    s.write_all(&1u32.to_be_bytes()).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let _ = s.read_to_end(&mut rest);
    let mut s = connect();
    s.write_all(&1u32.to_be_bytes()).unwrap();
    s.write_all(b"IHAVEOPT").unwrap();
    s.write_all(&7u32.to_be_bytes()).unwrap();
    s.write_all(&u32::MAX.to_be_bytes()).unwrap();
    let _ = s.read_to_end(&mut rest);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while srv.errors.lock().unwrap().len() < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let errors = srv.errors.lock().unwrap().clone();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors.iter().all(|e| e.starts_with("nbd-protocol")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("without fixed newstyle")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("option magic")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("bytes of data")),
        "{errors:?}"
    );
    let data = std::fs::read(dir.path().join("vol.img")).unwrap();
    assert!(data.iter().all(|&x| x == 0));
}
