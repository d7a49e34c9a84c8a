//! Loss and delay on the lab's interconnects when the kernel has no `sch_netem` (some
//! VM kernels are built without it): a userspace hub in the switch namespace.
//!
//! The node ports of networks a and b are taken off their bridges; one thread reads
//! every frame that arrives on them (an `AF_PACKET` socket), drops it with the given
//! probability, and sends it out of every other port of the same network after
//! `delay ± jitter` (uniform, like `netem delay D J`; frames may be reordered, as with
//! netem). Each frame crosses the hub once, so each packet between two servers sees
//! the loss and delay once, as with netem on the sender's interface. Stopping the hub
//! puts the ports back on their bridges.

use std::collections::{BTreeMap, BinaryHeap};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::socket::{
    recvfrom, sendto, setsockopt, socket, sockopt, AddressFamily, LinkAddr, MsgFlags, SockFlag,
    SockProtocol, SockType,
};
use nix::sys::time::{TimeVal, TimeValLike};

use super::observer::enter_netns;
use crate::netns;

/// `PACKET_OUTGOING`: a frame this host sent (ours, seen again).
const PACKET_OUTGOING: u8 = 4;

/// What the hub did.
#[derive(Debug, Clone, Copy, Default)]
pub struct HubStats {
    pub frames: u64,
    pub dropped: u64,
    pub sent: u64,
}

#[cfg(test)]
mod tests {
    use super::fix_checksums;

    #[test]
    fn tcp_checksum_matches_a_known_frame() {
        // Ethernet + IPv4 (10.0.0.1 -> 10.0.0.2) + TCP SYN, checksum computed by hand
        // with the same pseudo-header rule.
        let mut f = vec![0u8; 14];
        f[12] = 0x08;
        let ip = [
            0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        f.extend_from_slice(&ip);
        let tcp = [
            0x04, 0xd2, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0x72, 0x10, 0xde, 0xad, 0,
            0,
        ];
        f.extend_from_slice(&tcp);
        let out = fix_checksums(f);
        // Verify: the one's complement sum over pseudo-header and segment is 0xffff.
        let mut sum: u32 = 0;
        let mut words = |b: &[u8]| {
            for c in b.chunks(2) {
                sum += (u32::from(c[0]) << 8) | u32::from(*c.get(1).unwrap_or(&0));
            }
        };
        words(&out[26..34]);
        words(&[0, 6, 0, 20]);
        words(&out[34..54]);
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
    }
}

/// A running hub.
pub struct Hub {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<HubStats, String>>>,
    switch: String,
    /// (port, bridge) to re-attach.
    ports: Vec<(String, String)>,
}

/// One port of the hub.
#[derive(Debug, Clone)]
pub struct Port {
    pub name: String,
    pub bridge: String,
}

#[derive(Debug, serde::Deserialize)]
struct LinkInfo {
    ifindex: i32,
    ifname: String,
}

/// Frames read from a veth may carry a partial transport checksum (checksum offload:
/// the kernel never filled it in); sent out again they would be dropped. UDP over
/// IPv4 gets checksum 0 ("none"), TCP over IPv4 a recomputed one.
fn fix_checksums(mut f: Vec<u8>) -> Vec<u8> {
    if f.len() < 34 || f[12] != 0x08 || f[13] != 0x00 {
        return f;
    }
    let ihl = usize::from(f[14] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
    let l4 = 14 + ihl;
    if ihl < 20 || total < ihl || f.len() < 14 + total || f.len() < l4 + 8 {
        return f;
    }
    // Fragments other than the first carry no transport header.
    if u16::from_be_bytes([f[20], f[21]]) & 0x1fff != 0 {
        return f;
    }
    let end = 14 + total;
    match f[23] {
        17 => {
            f[l4 + 6] = 0;
            f[l4 + 7] = 0;
        }
        6 if end >= l4 + 20 => {
            f[l4 + 16] = 0;
            f[l4 + 17] = 0;
            let mut sum: u32 = 0;
            let mut add = |b: &[u8]| {
                for c in b.chunks(2) {
                    let hi = u32::from(c[0]) << 8;
                    let lo = c.get(1).map_or(0, |x| u32::from(*x));
                    sum += hi | lo;
                }
            };
            add(&f[26..34]);
            add(&[0, 6]);
            let len = u16::try_from(end - l4).unwrap_or(0).to_be_bytes();
            add(&len);
            add(&f[l4..end]);
            while sum > 0xffff {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            let c = !(u16::try_from(sum).unwrap_or(0xffff));
            f[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
        }
        _ => {}
    }
    f
}

/// A small xorshift generator (no dependency; quality is plenty for loss and jitter).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(PartialEq, Eq)]
struct Due {
    at: Instant,
    seq: u64,
    from: usize,
    frame: Vec<u8>,
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Earliest first in a max-heap.
        other.at.cmp(&self.at).then(other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Hub {
    /// Take `ports` off their bridges in namespace `switch` and start forwarding.
    pub fn start(
        switch: &str,
        ports: Vec<Port>,
        loss_pct: u32,
        delay_ms: u32,
        jitter_ms: u32,
    ) -> Result<Hub, String> {
        let text = netns::ip(&["-n", switch, "-j", "link", "show"])?;
        let links: Vec<LinkInfo> = serde_json::from_str(text.trim())
            .map_err(|e| format!("cannot parse `ip -j link show` ({e})"))?;
        let index: BTreeMap<String, i32> =
            links.into_iter().map(|l| (l.ifname, l.ifindex)).collect();
        // ifindex -> (port number, bridge name)
        let mut by_ifindex: BTreeMap<usize, (usize, String)> = BTreeMap::new();
        for (k, p) in ports.iter().enumerate() {
            let ix = index
                .get(&p.name)
                .ok_or_else(|| format!("no port {} in {switch}", p.name))?;
            by_ifindex.insert(usize::try_from(*ix).unwrap_or(0), (k, p.bridge.clone()));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stop2 = stop.clone();
        let ns = switch.to_string();
        let n = ports.len();
        let handle = std::thread::Builder::new()
            .name("lab-hub".into())
            .spawn(move || {
                let setup = (|| {
                    enter_netns(&ns)?;
                    let fd = socket(
                        AddressFamily::Packet,
                        SockType::Raw,
                        SockFlag::SOCK_CLOEXEC,
                        SockProtocol::EthAll,
                    )
                    .map_err(|e| format!("AF_PACKET socket: {e}"))?;
                    setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::milliseconds(2))
                        .map_err(|e| format!("SO_RCVTIMEO: {e}"))?;
                    Ok::<_, String>(fd)
                })();
                let fd = match setup {
                    Ok(fd) => {
                        let _ = ready_tx.send(Ok(()));
                        fd
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.clone()));
                        return Err(e);
                    }
                };
                let seed = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
                    | 1;
                let mut rng = Rng(seed);
                let mut link: Vec<Option<LinkAddr>> = vec![None; n];
                let mut heap: BinaryHeap<Due> = BinaryHeap::new();
                let mut stats = HubStats::default();
                let mut seq = 0u64;
                let mut buf = vec![0u8; 65536];
                while !stop2.load(Ordering::Relaxed) {
                    if let Ok((len, Some(addr))) = recvfrom::<LinkAddr>(fd.as_raw_fd(), &mut buf) {
                        if addr.pkttype() != PACKET_OUTGOING {
                            if let Some((k, _)) = by_ifindex.get(&addr.ifindex()) {
                                let k = *k;
                                link[k] = Some(addr);
                                stats.frames += 1;
                                if rng.unit() * 100.0 < f64::from(loss_pct) {
                                    stats.dropped += 1;
                                } else {
                                    let j = (rng.unit() * 2.0 - 1.0) * f64::from(jitter_ms);
                                    let d = (f64::from(delay_ms) + j).max(0.0);
                                    seq += 1;
                                    heap.push(Due {
                                        at: Instant::now() + Duration::from_secs_f64(d / 1000.0),
                                        seq,
                                        from: k,
                                        frame: fix_checksums(buf[..len].to_vec()),
                                    });
                                }
                            }
                        }
                    }
                    let now = Instant::now();
                    while heap.peek().is_some_and(|d| d.at <= now) {
                        let Some(d) = heap.pop() else { break };
                        let net = by_ifindex
                            .values()
                            .find(|(k, _)| *k == d.from)
                            .map(|(_, b)| b.clone());
                        for (k, bridge) in by_ifindex.values() {
                            if *k == d.from || Some(bridge) != net.as_ref() {
                                continue;
                            }
                            if let Some(a) = &link[*k] {
                                if sendto(fd.as_raw_fd(), &d.frame, a, MsgFlags::empty()).is_ok() {
                                    stats.sent += 1;
                                }
                            }
                        }
                    }
                }
                Ok(stats)
            })
            .map_err(|e| format!("cannot start the hub thread: {e}"))?;
        ready_rx
            .recv()
            .map_err(|_| "the hub thread died".to_string())??;
        // Only now take the ports off their bridges: the hub is already reading.
        let mut hub = Hub {
            stop,
            handle: Some(handle),
            switch: switch.to_string(),
            ports: Vec::new(),
        };
        for p in &ports {
            netns::ip(&["-n", switch, "link", "set", &p.name, "nomaster"])?;
            hub.ports.push((p.name.clone(), p.bridge.clone()));
        }
        Ok(hub)
    }

    /// Put the ports back on their bridges and stop the thread.
    pub fn stop(mut self) -> Result<HubStats, String> {
        self.halt()
    }

    fn halt(&mut self) -> Result<HubStats, String> {
        let mut err = None;
        for (port, br) in std::mem::take(&mut self.ports) {
            if let Err(e) = netns::ip(&["-n", &self.switch, "link", "set", &port, "master", &br]) {
                err.get_or_insert(e);
            }
        }
        self.stop.store(true, Ordering::Relaxed);
        let stats = match self.handle.take().map(JoinHandle::join) {
            Some(Ok(r)) => r?,
            Some(Err(_)) => return Err("the hub thread panicked".into()),
            None => HubStats::default(),
        };
        match err {
            Some(e) => Err(e),
            None => Ok(stats),
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}
