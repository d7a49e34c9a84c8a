//! Heartbeat encryption (issue 9): with `[heartbeat] encrypt = true` the agents hear each
//! other and fail over as usual, and what they put on the interconnect is version-3
//! datagrams with the encrypted flag in which no server, group or cluster name appears.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Tests measure the real time of real processes and sockets: they read the clock directly.
#![allow(clippy::disallowed_methods)]

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use baton_tests::{serial, Cluster, ClusterSpec, Signal};

const T: Duration = Duration::from_secs(20);

#[test]
fn encrypted_heartbeats_fail_over_and_show_no_names() {
    let _serial = serial();
    let mut spec = ClusterSpec::new("crypt", 167);
    spec.heartbeat_config = "encrypt = true\n".into();
    let mut c = Cluster::start(spec);
    let (_, e1, _) = c.wait_owner(Some("node-1"), T);

    // Listen where node-3 listens: stop its agent and take its path-0 address.
    c.kill("node-3", Signal::SIGKILL);
    c.wait_exit("node-3", T);
    let addr = c.node("node-3").interconnects[0];
    let sock = UdpSocket::bind(addr).expect("bind node-3's interconnect address");
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut got = Vec::new();
    let start = Instant::now();
    let mut buf = [0u8; 65_536];
    while got.len() < 10 && start.elapsed() < Duration::from_secs(5) {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
    }
    drop(sock);
    assert!(got.len() >= 10, "only {} heartbeats received", got.len());
    for d in &got {
        assert_eq!(&d[..4], b"BTN1");
        assert_eq!(d[4], 3, "wire version");
        assert_eq!(d[9] & 2, 2, "encrypted flag: {:#04x}", d[9]);
        let text = String::from_utf8_lossy(d);
        for name in [
            "node-1",
            "node-2",
            "it-crypt",
            "web",
            "online",
            "incarnation",
        ] {
            assert!(!text.contains(name), "`{name}` readable in a heartbeat");
        }
    }
    // Failover works as usual over encrypted heartbeats.
    c.restart("node-3");
    c.kill("node-1", Signal::SIGKILL);
    let (_, e2, _) = c.wait_owner(Some("node-2"), T);
    assert_eq!(e2, e1 + 1);
    for n in ["node-2", "node-3"] {
        let st = c.status_via(n);
        assert_eq!(st.local.packets_rejected.forged, 0, "{n}");
        assert_eq!(st.local.packets_rejected.malformed, 0, "{n}");
    }
}
