//! TLS on the API (issue 9): with `[api] tls_*` from `baton keygen --tls`, the CLI and
//! the agents asking their peers use HTTPS and trust only the cluster CA; plain HTTP and
//! a client trusting another CA get nothing; a renewed certificate is taken at SIGHUP
//! (BTN-4025) and a broken one is refused with the old one still served (BTN-4026); an
//! agent whose TLS key is readable by others does not start; a client that opens a
//! connection and never completes the handshake is dropped after the header timeout.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Tests measure the real time of real processes and sockets: they read the clock directly.
#![allow(clippy::disallowed_methods)]

use std::io::Read;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use baton_tests::{http, serial, Cluster, ClusterSpec, GROUP};
use nix::sys::signal::Signal;

const T: Duration = Duration::from_secs(20);

#[test]
fn api_over_tls_with_the_cluster_ca() {
    let _serial = serial();
    let mut spec = ClusterSpec::new("tls", 168);
    spec.servers = 2;
    spec.tls = true;
    spec.api_config = "header_timeout = \"1s\"\n".into();
    let mut c = Cluster::start(spec);
    let tls = c.dir.join("tls");
    for f in [
        "ca.crt",
        "ca.key",
        "node-1.crt",
        "node-1.key",
        "node-2.crt",
        "node-2.key",
    ] {
        assert!(tls.join(f).is_file(), "{f}");
    }

    // The CLI over HTTPS, and each agent asks the other over HTTPS (cluster status).
    c.wait_owner(Some("node-1"), T);
    for via in ["node-1", "node-2"] {
        let st = c.status_via(via);
        assert_eq!(st.peers.len(), 1, "{st:?}");
        let p = &st.peers[0];
        assert!(
            p.status.is_some() && p.error.is_none(),
            "{via} could not ask {} over TLS: {:?}",
            p.server,
            p.error
        );
    }
    // An operator command over HTTPS.
    let out = c.ctl(&["group", "move", GROUP, "--to", "node-2"]);
    assert_eq!(out.code, 0, "{out:?}");
    c.wait_owner(Some("node-2"), T);

    // Plain HTTP on the TLS port: no answer.
    let api = c.node("node-1").api;
    let plain = http::request(
        api,
        "GET",
        "/v1/status",
        Some(c.token()),
        None,
        Duration::from_secs(3),
    );
    assert!(
        plain.as_ref().map_or(true, |r| r.status != 200),
        "plain HTTP answered: {plain:?}"
    );

    // A client trusting another CA (another cluster's, made the same way) is refused.
    let other = c.dir.join("other-ca");
    c.cli(&[
        "keygen",
        "--tls",
        &other.to_string_lossy(),
        "-c",
        &c.config.to_string_lossy(),
    ])
    .ok("keygen --tls for another CA");
    let text = std::fs::read_to_string(&c.config).unwrap();
    let wrong = c.dir.join("wrong-ca.toml");
    std::fs::write(
        &wrong,
        text.replace(
            &format!("{}/ca.crt", tls.display()),
            &format!("{}/ca.crt", other.display()),
        ),
    )
    .unwrap();
    assert_ne!(std::fs::read_to_string(&wrong).unwrap(), text);
    let out = c.cli(&["status", "-s", "node-1", "-c", &wrong.to_string_lossy()]);
    assert_eq!(out.code, 4, "{out:?}");
    assert!(out.stderr.contains("TLS handshake failed"), "{out:?}");

    // Renewal: new certificates from the same CA, taken at SIGHUP.
    let before = c.alerts("node-1").len();
    c.cli(&[
        "keygen",
        "--tls",
        &tls.to_string_lossy(),
        "-c",
        &c.config.to_string_lossy(),
    ])
    .ok("keygen --tls renewal");
    c.kill("node-1", Signal::SIGHUP);
    let evs = c.wait_event("node-1", "BTN-4025", T, |_| true);
    assert!(evs.len() > before);
    assert!(c.is_running("node-1"));
    c.status_via("node-1");

    // A broken renewal: refused, reported once, the previous certificate still served.
    std::fs::write(
        tls.join("node-2.crt"),
        "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    c.kill("node-2", Signal::SIGHUP);
    let evs = c.wait_event("node-2", "BTN-4026", T, |e| {
        e.message.contains("node-2.crt")
    });
    assert!(
        evs.iter()
            .any(|e| e.id == "BTN-4026" && e.message.contains("still served")),
        "{evs:?}"
    );
    c.kill("node-2", Signal::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    let n = c
        .alerts("node-2")
        .iter()
        .filter(|e| e.id == "BTN-4026")
        .count();
    assert_eq!(n, 1, "a broken file is reported once until it changes");
    c.status_via("node-2");

    // A client that connects and never starts the handshake is closed after the
    // header timeout (1 s here).
    let mut s = TcpStream::connect(api).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 16];
    let r = s.read(&mut buf);
    assert!(
        matches!(r, Ok(0)) || r.is_err(),
        "the server sent bytes to a silent client: {r:?}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "a silent TLS client was held {:?}",
        t0.elapsed()
    );

    // A TLS key readable by others: the agent does not start, and says why.
    c.kill("node-1", Signal::SIGKILL);
    let key = tls.join("node-1.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let node = c.node("node-1");
    let out = Command::new(&c.bin)
        .args(["agent", "--config"])
        .arg(&node.config)
        .args(["--server", "node-1", "--state-dir"])
        .arg(&node.state_dir)
        .env_remove("BATON_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("node-1.key") && err.contains("chmod 600"),
        "{err}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    c.restart("node-1");
    c.status_via("node-1");
}
