//! Replayed heartbeats after a restart (issue 9, must-fix 3), with real agents.
//!
//! Three agents on `127.0.163.x`. A raw socket records node-2's real heartbeat datagrams
//! to node-1 while all three run (node-2 hears node-1 then). node-2 and node-3 are
//! stopped, node-1 is restarted (its in-memory replay guard starts empty), and the
//! recorded datagrams are sent again to node-1 from node-2's own interconnect addresses.
//! They are authentic and their sequence numbers are new to the restarted node-1, so it
//! accepts them and sees node-2 up; but they echo node-1's previous incarnation, so
//! node-1 must not count node-2's vote: `baton status --json` of node-1 shows no quorum
//! (1 of 3 votes) for as long as the replay lasts. Before the fix it showed quorum.
//! Most of the recorded datagrams leave their group reports out (node-1 held them); the
//! restarted node-1 holds none, drops those, and sees node-2 up from the complete ones.
//!
//! Needs root (CAP_NET_RAW) for the raw socket, as the other process-level tests that
//! touch the network do.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Tests measure the real time of real processes and sockets: they read the clock directly.
#![allow(clippy::disallowed_methods)]

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use baton_tests::{serial, wait_until, Cluster, ClusterSpec, Signal};
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockProtocol, SockType};

const T: Duration = Duration::from_secs(20);

/// One recorded datagram: the path it was sent on and its UDP payload.
type Recorded = (usize, Vec<u8>);

/// Record, for `dur`, the UDP payloads sent from `from[p]` to `to[p]` (any path `p`).
fn record(from: &[SocketAddr], to: &[SocketAddr], dur: Duration) -> Vec<Recorded> {
    let fd = socket(
        AddressFamily::Inet,
        SockType::Raw,
        SockFlag::empty(),
        SockProtocol::Udp,
    )
    .expect("raw UDP socket (needs CAP_NET_RAW)");
    let sock = UdpSocket::from(fd);
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65_536];
    let end = Instant::now() + dur;
    while Instant::now() < end {
        let Ok(n) = sock.recv(&mut buf) else {
            continue;
        };
        let pkt = &buf[..n];
        if n < 28 || pkt[0] >> 4 != 4 {
            continue;
        }
        let ihl = usize::from(pkt[0] & 0x0f) * 4;
        if n < ihl + 8 {
            continue;
        }
        let ip = |o: usize| std::net::Ipv4Addr::new(pkt[o], pkt[o + 1], pkt[o + 2], pkt[o + 3]);
        let port = |o: usize| u16::from_be_bytes([pkt[o], pkt[o + 1]]);
        let src = SocketAddr::from((ip(12), port(ihl)));
        let dst = SocketAddr::from((ip(16), port(ihl + 2)));
        for p in 0..from.len() {
            if src == from[p] && dst == to[p] {
                out.push((p, pkt[ihl + 8..].to_vec()));
            }
        }
    }
    out
}

#[test]
fn replayed_heartbeats_do_not_give_a_vote_after_a_restart() {
    let _serial = serial();
    let mut c = Cluster::start(ClusterSpec::new("replay", 163));
    wait_until("node-1 has quorum with 3 servers up", T, || {
        let st = c.try_status_via(Some("node-1"))?;
        let up = st.local.servers.iter().filter(|s| s.up).count();
        (st.local.quorum && up == 3)
            .then_some(())
            .ok_or_else(|| format!("quorum {} up {up}", st.local.quorum))
    });
    let n1 = c.node("node-1").interconnects.clone();
    let n2 = c.node("node-2").interconnects.clone();
    let recorded = record(&n2, &n1, Duration::from_secs(3));
    assert!(
        recorded.len() >= 10,
        "recorded only {} datagrams of node-2",
        recorded.len()
    );
    // Real agents leave out the group reports the peer holds (they are small enough to
    // go uncompressed here, so the JSON can be read after the header).
    let has = |b: &[u8], what: &[u8]| b.windows(what.len()).any(|w| w == what);
    let brief = recorded
        .iter()
        .filter(|(_, b)| has(b, b"\"brief\":true"))
        .count();
    assert!(
        brief > 0,
        "no brief heartbeat among {} of node-2",
        recorded.len()
    );

    c.kill("node-2", Signal::SIGKILL);
    c.kill("node-3", Signal::SIGKILL);
    c.kill("node-1", Signal::SIGKILL);
    c.restart("node-1");

    // node-2's addresses are free now: replay from them, one datagram every 100 ms (about
    // the pace node-2 sent them at, on two paths), and watch node-1 meanwhile.
    let socks: Vec<UdpSocket> = n2.iter().map(|a| UdpSocket::bind(a).unwrap()).collect();
    let mut saw_node2_up = false;
    let mut checks = 0;
    for (i, (p, bytes)) in recorded.iter().enumerate() {
        socks[*p].send_to(bytes, n1[*p]).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        if i >= 2 && i % 2 == 0 {
            let st = c.status_via("node-1");
            let node2_up = st.local.servers.iter().any(|s| s.name == "node-2" && s.up);
            saw_node2_up |= node2_up;
            checks += 1;
            assert!(
                !st.local.quorum,
                "node-1 counts the replayed vote of node-2 (node-2 up: {node2_up}): {:?}",
                st.local.servers
            );
        }
    }
    let st = c.status_via("node-1");
    assert!(checks >= 3);
    assert!(
        saw_node2_up,
        "the replayed datagrams were not accepted (rejected: {:?}), the test proves nothing",
        st.local.packets_rejected
    );
    assert!(!st.local.quorum);
}
