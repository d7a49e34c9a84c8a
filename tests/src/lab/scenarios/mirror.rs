//! The mirror-disk scenarios of the lab (11 to 17): a group whose first resource is a
//! `mirror-disk` held by the first two servers (the third only votes), the application
//! played by qemu-io over the NBD socket of the server that runs the group. Besides the
//! lab's usual checks, the observer checks that the mirror was never writable (primary,
//! not fenced, served) on two servers at once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::{ids, server, wait_event, Lab, Options, ScenarioReport, GROUP};

/// One 4 KiB write of `pattern` at `off` through qemu's NBD client; true when it was
/// acknowledged.
fn nbd_write(sock: &std::path::Path, off: u64, pattern: u8) -> bool {
    nbd_io(sock, &format!("write -P {pattern} {off} 4096"), "wrote")
}

/// Does the 4 KiB at `off` read back as `pattern`?
fn nbd_reads(sock: &std::path::Path, off: u64, pattern: u8) -> bool {
    nbd_io(sock, &format!("read -P {pattern} {off} 4096"), "read")
}

fn nbd_io(sock: &std::path::Path, cmd: &str, ok: &str) -> bool {
    std::process::Command::new("qemu-io")
        .args(["-f", "raw"])
        .arg(format!(
            "nbd+unix:///{}?socket={}",
            super::super::MIRROR,
            sock.display()
        ))
        .args(["-c", cmd])
        .output()
        .is_ok_and(|o| {
            let t = String::from_utf8_lossy(&o.stdout).to_string()
                + &String::from_utf8_lossy(&o.stderr);
            o.status.success()
                && t.contains(ok)
                && !t.contains("failed")
                && !t.contains("Pattern verification failed")
        })
}

/// Scenario 11: a group with a sync `mirror-disk` on two of three servers, a writer
/// recording every acknowledged write; the active server crashes (agent and mirror
/// process SIGKILLed); the group fails over, every acknowledged write reads back on the
/// new primary, and when the old server returns it is resynchronised by difference.
/// Besides the lab's usual checks, the observer checks that the mirror was never
/// writable (primary, not fenced, served) on two servers at once.
pub(super) fn s11_kill(lab: &mut Lab, o: &Options, r: &mut ScenarioReport) -> Result<(), String> {
    need_qemu_io()?;
    for round in 0..o.repeat.max(1) {
        let (x, e) = lab.wait_owner(None, Duration::from_secs(30))?;
        lab.wait_converged(Duration::from_secs(20))?;
        wait_mirror_in_sync(lab, x)?;
        let w = MirrorWriter::start(lab.mirror_socket(x), round as u64);
        w.wait_acked(lab, 100)?;
        let t = lab.crash(x)?;
        lab.note(&format!(
            "round {}: {} crashed under writes (agent and mirror process SIGKILLed)",
            round + 1,
            server(x)
        ));
        let acked = w.finish(Duration::from_secs(30))?;
        let (y, e2) = lab.wait_owner(Some(x), Duration::from_secs(30))?;
        if e2 <= e {
            r.fail(format!("epoch did not grow on failover: {e} -> {e2}"));
        }
        let at = wait_event(lab, y, ids::ACTIVATED, t, Duration::from_secs(20))?;
        r.failover_ms.push(at - t);
        let lost = missing_on(&lab.mirror_socket(y), &acked);
        if lost.is_empty() {
            r.fact(format!(
                "round {}: all {} acknowledged writes read back on {}",
                round + 1,
                acked.len(),
                server(y)
            ));
        } else {
            r.fail(format!(
                "{} of {} acknowledged writes lost after the failover (offsets {:?})",
                lost.len(),
                acked.len(),
                &lost[..lost.len().min(8)]
            ));
        }
        lab.note(&format!(
            "{GROUP} online on {} (epoch {e2}) with the mirror, {:.0} ms after the crash",
            server(y),
            at - t
        ));
        lab.start_agent(x)?;
        wait_mirror_in_sync(lab, y)?;
        if !stores_equal(lab, x, y) {
            r.fail("the two stores differ after the resync");
        }
        match lab.sole_owner() {
            Ok((z, e3)) if z == y && e3 == e2 => {}
            other => r.fail(format!(
                "after {} came back the group should stay on {} epoch {e2}: {other:?}",
                server(x),
                server(y)
            )),
        }
    }
    Ok(())
}

fn need_qemu_io() -> Result<(), String> {
    if std::process::Command::new("sh")
        .args(["-c", "command -v qemu-io"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        Ok(())
    } else {
        Err("qemu-io (Debian qemu-utils) is needed for the mirror scenarios".into())
    }
}

/// Wait until server `i` (the primary) reports its mirror connected and in sync.
fn wait_mirror_in_sync(lab: &Lab, i: usize) -> Result<(), String> {
    lab.wait(
        &format!("the mirror of {} is in sync", server(i)),
        Duration::from_secs(60),
        |lab| {
            let ok = lab.status(i).is_some_and(|s| {
                s.mirrors
                    .iter()
                    .any(|m| m.in_sync && m.connection == "connected")
            });
            if ok {
                Ok(())
            } else {
                Err(format!("{:?}", lab.status(i).map(|s| s.mirrors)))
            }
        },
    )
}

fn stores_equal(lab: &Lab, a: usize, b: usize) -> bool {
    matches!(
        (std::fs::read(lab.mirror_store(a)), std::fs::read(lab.mirror_store(b))),
        (Ok(x), Ok(y)) if x == y
    )
}

/// Offsets of `acked` whose last acknowledged pattern does not read back on `sock`.
fn missing_on(sock: &std::path::Path, acked: &BTreeMap<u64, u8>) -> Vec<u64> {
    acked
        .iter()
        .filter(|(off, p)| !nbd_reads(sock, **off, **p))
        .map(|(off, _)| *off)
        .collect()
}

/// A thread writing 4 KiB blocks over the first 2 MiB of the lab's mirror disk through
/// one server's NBD socket, recording the last acknowledged pattern of each offset; it
/// stops at its first failed write (the server stopped serving) or when told to.
struct MirrorWriter {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acked: std::sync::Arc<std::sync::Mutex<BTreeMap<u64, u8>>>,
    /// Writes acknowledged and writes failed, in total.
    writes: std::sync::Arc<std::sync::atomic::AtomicU64>,
    failed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    handle: std::thread::JoinHandle<()>,
}

impl MirrorWriter {
    /// A writer that stops at its first failed write.
    fn start(sock: PathBuf, seed: u64) -> MirrorWriter {
        Self::spawn(sock, seed, true)
    }

    /// A writer that counts failed writes and goes on.
    fn start_counting(sock: PathBuf, seed: u64) -> MirrorWriter {
        Self::spawn(sock, seed, false)
    }

    fn spawn(sock: PathBuf, seed: u64, stop_on_failure: bool) -> MirrorWriter {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::Arc;
        let stop = Arc::new(AtomicBool::new(false));
        let acked: Arc<std::sync::Mutex<BTreeMap<u64, u8>>> = Default::default();
        let writes = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let (s2, a2, w2, f2) = (stop.clone(), acked.clone(), writes.clone(), failed.clone());
        let handle = std::thread::spawn(move || {
            let mut k = 0u64;
            while !s2.load(Ordering::SeqCst) {
                let off = (k % 512) * 4096;
                let pattern = (1 + (k + seed) % 250) as u8;
                if nbd_write(&sock, off, pattern) {
                    a2.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(off, pattern);
                    w2.fetch_add(1, Ordering::SeqCst);
                } else {
                    f2.fetch_add(1, Ordering::SeqCst);
                    if stop_on_failure {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                k += 1;
            }
        });
        MirrorWriter {
            stop,
            acked,
            writes,
            failed,
            handle,
        }
    }

    fn count_writes(&self) -> u64 {
        self.writes.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn failed(&self) -> u64 {
        self.failed.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn count(&self) -> usize {
        self.acked.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn wait_acked(&self, lab: &Lab, n: usize) -> Result<(), String> {
        lab.wait("writes are acknowledged", Duration::from_secs(20), |_| {
            if self.count() >= n {
                Ok(())
            } else {
                Err(format!("{} writes", self.count()))
            }
        })
    }

    /// Stop (a write in progress finishes or fails first, within `timeout`); what was
    /// acknowledged.
    fn finish(self, timeout: Duration) -> Result<BTreeMap<u64, u8>, String> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let start = std::time::Instant::now();
        while !self.handle.is_finished() {
            if start.elapsed() > timeout {
                return Err(format!(
                    "a write through the mirror neither finished nor failed within {} s",
                    timeout.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.handle.join();
        Ok(self.acked.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// Scenario 12: the active server of a group with a sync `mirror-disk` is cut off from
/// every peer (heartbeats and mirror link) while a writer writes through it. It loses
/// quorum and stops; the majority takes over. Whatever the isolated server acknowledged
/// must be on the new primary (sync: it acknowledges nothing the peer does not have, and
/// nothing at all once it has no lease). After the heal it rejoins as secondary and is
/// resynchronised.
pub(super) fn s12_isolated(
    lab: &mut Lab,
    o: &Options,
    r: &mut ScenarioReport,
) -> Result<(), String> {
    need_qemu_io()?;
    let n = lab.spec.servers;
    for round in 0..o.repeat.max(1) {
        let (x, e) = lab.wait_owner(None, Duration::from_secs(30))?;
        lab.wait_converged(Duration::from_secs(20))?;
        wait_mirror_in_sync(lab, x)?;
        let w = MirrorWriter::start(lab.mirror_socket(x), 100 + round as u64);
        w.wait_acked(lab, 50)?;
        let t = lab.now();
        let rest: Vec<usize> = (0..n).filter(|i| *i != x).collect();
        lab.partition(&[vec![x], rest])?;
        lab.note(&format!(
            "round {}: {} isolated under writes",
            round + 1,
            server(x)
        ));
        // (The isolated server's own view is stale: ask the majority.)
        let y = lab.wait(
            "the majority runs the group and the isolated server does not",
            Duration::from_secs(30),
            |lab| match lab.online().as_slice() {
                [y] if *y != x => Ok(*y),
                _ => Err(lab.summary()),
            },
        )?;
        let e2 = lab
            .status(y)
            .and_then(|s| s.groups.iter().find(|g| g.name == GROUP).map(|g| g.epoch))
            .unwrap_or(0);
        if e2 <= e {
            r.fail(format!("epoch did not grow on failover: {e} -> {e2}"));
        }
        if let Err(e) = wait_event(lab, x, ids::DEACTIVATED, t, Duration::from_secs(20)) {
            r.fail(format!("the isolated server did not deactivate: {e}"));
        }
        let acked = w.finish(Duration::from_secs(150))?;
        let lost = missing_on(&lab.mirror_socket(y), &acked);
        if lost.is_empty() {
            r.fact(format!(
                "round {}: all {} writes the isolated {} acknowledged read back on {}",
                round + 1,
                acked.len(),
                server(x),
                server(y)
            ));
        } else {
            r.fail(format!(
                "{} of {} writes acknowledged by the isolated server are not on the new primary (offsets {:?})",
                lost.len(),
                acked.len(),
                &lost[..lost.len().min(8)]
            ));
        }
        lab.heal()?;
        lab.note("partition healed");
        lab.wait_converged(Duration::from_secs(20))?;
        wait_mirror_in_sync(lab, y)?;
        if !stores_equal(lab, x, y) {
            r.fail("the two stores differ after the resync");
        }
        match lab.sole_owner() {
            Ok((z, _)) if z == y => {}
            other => r.fail(format!(
                "after the heal the group should stay on {} alone: {other:?}",
                server(y)
            )),
        }
    }
    Ok(())
}

/// The mirror's region (the default `region_size`): the unit of the dirty bitmap.
const REGION: u64 = 64 << 10;

/// `len` bytes of `pattern` at `off` through qemu's NBD client; true when acknowledged.
fn nbd_write_len(sock: &std::path::Path, off: u64, len: u64, pattern: u8) -> bool {
    nbd_io(sock, &format!("write -P {pattern} {off} {len}"), "wrote")
}

/// `baton mirror ARGS -s SERVER --state-dir DIR` for server `i`, in its namespace.
fn mirror_cli(lab: &Lab, i: usize, args: &[&str]) -> crate::client::CliOut {
    let sd = lab.dir.join("state").join(server(i));
    let sd = sd.to_string_lossy();
    let name = server(i);
    let mut a = vec!["mirror"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-s", &name, "--state-dir", &sd]);
    lab.baton().in_netns(&lab.nodes[i]).ctl(&a)
}

/// The lab mirror's state on server `i`, as `baton mirror status --json` reports it.
fn mirror_state(lab: &Lab, i: usize) -> Result<serde_json::Value, String> {
    let out = mirror_cli(lab, i, &["status", super::super::MIRROR, "--json"])
        .check("baton mirror status")?;
    let v: serde_json::Value = serde_json::from_str(&out.stdout)
        .map_err(|e| format!("mirror status of {}: {e}: {}", server(i), out.stdout))?;
    Ok(v["mirrors"][0].clone())
}

/// Bytes the resync of server `i`'s mirror has sent so far.
fn resync_bytes(lab: &Lab, i: usize) -> Result<u64, String> {
    let s = mirror_state(lab, i)?;
    s["counters"]["resync_bytes"]
        .as_u64()
        .ok_or_else(|| format!("no resync_bytes counter in {s}"))
}

/// Wait until server `i`'s own mirror state satisfies `ok`.
fn wait_mirror(
    lab: &Lab,
    i: usize,
    what: &str,
    timeout: Duration,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> Result<serde_json::Value, String> {
    lab.wait(&format!("{} {what}", server(i)), timeout, |lab| {
        let s = mirror_state(lab, i)?;
        if ok(&s) {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    })
}

/// The other server of the mirror (servers 0 and 1 hold it).
fn peer_of(x: usize) -> usize {
    1 - x
}

/// Is the group on `x` with epoch `e`, by every answering agent?
fn still_on(lab: &Lab, r: &mut ScenarioReport, x: usize, e: u64, when: &str) {
    match lab.sole_owner() {
        Ok((z, e2)) if z == x && e2 == e => {}
        other => r.fail(format!(
            "{when}: the group should have stayed on {} epoch {e}: {other:?}",
            server(x)
        )),
    }
}

/// Cut the mirror link (TCP between the two mirror servers on network b) and nothing
/// else: heartbeats on both networks go on.
fn cut_mirror_link(lab: &mut Lab, x: usize) -> Result<(), String> {
    let y = super::super::node_addr(super::super::NET_B, peer_of(x));
    let ns = lab.nodes[x].clone();
    lab.add_rules(
        &ns,
        &format!(
            "  chain in {{ type filter hook input priority -10; policy accept; ip saddr {y} meta l4proto tcp drop; }}\n  chain out {{ type filter hook output priority -10; policy accept; ip daddr {y} meta l4proto tcp drop; }}\n"
        ),
    )?;
    lab.note(&format!(
        "mirror link cut between {} and {} (heartbeats untouched)",
        server(x),
        server(peer_of(x))
    ));
    Ok(())
}

/// Scenario 13: with the group on `x` and the mirror in sync, the mirror link alone is
/// cut. A sync write must then wait (BTN-7016: the peer's server is up and could take
/// over without it) and not be acknowledged; `baton mirror pause` lets writes go on
/// alone; healed and resumed, the resync copies only the regions written meanwhile (at
/// most 1.1 × the bytes dirtied) and both stores end equal. The group never moves.
pub(super) fn s13_link_cut(
    lab: &mut Lab,
    o: &Options,
    r: &mut ScenarioReport,
) -> Result<(), String> {
    need_qemu_io()?;
    for round in 0..o.repeat.max(1) {
        let (x, e) = lab.wait_owner(None, Duration::from_secs(30))?;
        lab.wait_converged(Duration::from_secs(20))?;
        wait_mirror_in_sync(lab, x)?;
        let before = resync_bytes(lab, x)?;
        let sock = lab.mirror_socket(x);
        // Regions two apart from 2 MiB on, a fresh pattern each round.
        let regions: Vec<u64> = (0..20).map(|k| (2 << 20) + k * 3 * REGION).collect();
        let base = 0x40 + 0x20 * (round as u8 % 4);
        cut_mirror_link(lab, x)?;
        let t = lab.now();
        let (s, first) = (sock.clone(), regions[0]);
        let blocked = std::thread::spawn(move || nbd_write_len(&s, first, REGION, base));
        wait_event(lab, x, "BTN-7016", t, Duration::from_secs(20))?;
        lab.hold(Duration::from_millis(500), "the sync write waits");
        if blocked.is_finished() {
            // Legitimate only if the agent declared the peer's server down meanwhile.
            let down = super::events_after(lab, x, ids::SERVER_DOWN, t);
            if down.is_empty() {
                r.fail("a sync write was acknowledged with the mirror link cut and the peer up");
            } else {
                r.fact("the peer was declared down meanwhile: the write went on alone");
            }
        } else {
            r.fact("with the link cut, the sync write waited (BTN-7016)");
        }
        mirror_cli(lab, x, &["pause", super::super::MIRROR]).check("baton mirror pause")?;
        lab.note("operator: baton mirror pause");
        if !blocked.join().unwrap_or(false) {
            r.fail("the waiting write failed after `baton mirror pause`");
        }
        for (k, off) in regions.iter().enumerate().skip(1) {
            if !nbd_write_len(&sock, *off, REGION, base + k as u8) {
                r.fail(format!(
                    "a write at {off} failed while replication was paused"
                ));
            }
        }
        lab.heal()?;
        mirror_cli(lab, x, &["resume", super::super::MIRROR]).check("baton mirror resume")?;
        lab.note("operator: baton mirror resume");
        wait_mirror(lab, x, "is resynchronised", Duration::from_secs(60), |s| {
            s["in_sync"] == true && s["connection"] == "connected"
        })?;
        let copied = resync_bytes(lab, x)? - before;
        let dirtied = regions.len() as u64 * REGION;
        r.fact(format!(
            "round {}: resync copied {copied} bytes for {dirtied} dirtied ({:.2} x)",
            round + 1,
            copied as f64 / dirtied as f64
        ));
        if copied < dirtied || copied > dirtied * 11 / 10 {
            r.fail(format!(
                "the resync copied {copied} bytes for {dirtied} dirtied (expected at least that and at most 1.1 x)"
            ));
        }
        if !stores_equal(lab, x, peer_of(x)) {
            r.fail("the two stores differ after the resync");
        }
        for (k, off) in regions.iter().enumerate() {
            if !nbd_reads_len(&sock, *off, REGION, base + k as u8) {
                r.fail(format!("the write at {off} does not read back"));
            }
        }
        still_on(lab, r, x, e, "mirror link cut and healed");
    }
    Ok(())
}

/// Does `len` bytes at `off` read back as `pattern`?
fn nbd_reads_len(sock: &std::path::Path, off: u64, len: u64, pattern: u8) -> bool {
    nbd_io(sock, &format!("read -P {pattern} {off} {len}"), "read")
}

/// Scenario 14: the active server crashes while idle; the group fails over; the new
/// primary writes; the old server returns as secondary and is resynchronised by
/// difference, in the other direction: only the regions written on the new primary are
/// copied (at most 1.1 × them), no full copy; both stores end equal; the group stays.
pub(super) fn s14_reverse_resync(
    lab: &mut Lab,
    o: &Options,
    r: &mut ScenarioReport,
) -> Result<(), String> {
    need_qemu_io()?;
    for round in 0..o.repeat.max(1) {
        let (x, _) = lab.wait_owner(None, Duration::from_secs(30))?;
        lab.wait_converged(Duration::from_secs(20))?;
        wait_mirror_in_sync(lab, x)?;
        let t = lab.crash(x)?;
        lab.note(&format!(
            "round {}: {} crashed (agent and mirror process SIGKILLed)",
            round + 1,
            server(x)
        ));
        let (y, e2) = lab.wait_owner(Some(x), Duration::from_secs(30))?;
        let at = wait_event(lab, y, ids::ACTIVATED, t, Duration::from_secs(20))?;
        r.failover_ms.push(at - t);
        let before = resync_bytes(lab, y)?;
        let sock = lab.mirror_socket(y);
        let regions: Vec<u64> = (0..8).map(|k| (12 << 20) + k * 2 * REGION).collect();
        let base = 0x90 + 0x10 * (round as u8 % 4);
        for (k, off) in regions.iter().enumerate() {
            if !nbd_write_len(&sock, *off, REGION, base + k as u8) {
                r.fail(format!(
                    "a write at {off} on the new primary {} failed",
                    server(y)
                ));
            }
        }
        lab.start_agent(x)?;
        lab.note(&format!("{} back", server(x)));
        wait_mirror(
            lab,
            y,
            "has resynchronised its peer",
            Duration::from_secs(60),
            |s| s["in_sync"] == true && s["connection"] == "connected",
        )?;
        let copied = resync_bytes(lab, y)? - before;
        let written = regions.len() as u64 * REGION;
        r.fact(format!(
            "round {}: reverse resync copied {copied} bytes for {written} written on {} ({:.2} x; the disk is {} MiB)",
            round + 1,
            server(y),
            copied as f64 / written as f64,
            16
        ));
        if copied < written || copied > written * 11 / 10 {
            r.fail(format!(
                "the reverse resync copied {copied} bytes for {written} written (expected at least that and at most 1.1 x)"
            ));
        }
        if !stores_equal(lab, x, y) {
            r.fail("the two stores differ after the reverse resync");
        }
        lab.wait_converged(Duration::from_secs(20))?;
        still_on(lab, r, y, e2, "the old primary returned");
    }
    Ok(())
}

/// Scenario 15: replication is paused on the primary `x` (its peer `y` is told it is
/// behind), `x` writes and crashes. `y` must refuse to activate (BTN-7007) and stay
/// secondary. `force-primary` without `--yes` is refused; with it, and the group
/// started again on `y`, `y` activates (BTN-7008) with its older data and writes. Then
/// `x` returns with its own unreplicated write: both sides wrote, a data split brain
/// (BTN-7006) that nothing resolves on its own (`x`'s store stays as it was) until the
/// operator discards `x`'s data; then `x` is resynchronised from `y`.
pub(super) fn s15_stale_and_split_brain(
    lab: &mut Lab,
    r: &mut ScenarioReport,
) -> Result<(), String> {
    need_qemu_io()?;
    let m = super::super::MIRROR;
    let (x, _) = lab.wait_owner(None, Duration::from_secs(30))?;
    lab.wait_converged(Duration::from_secs(20))?;
    wait_mirror_in_sync(lab, x)?;
    let y = peer_of(x);
    let sx = lab.mirror_socket(x);
    if !nbd_write_len(&sx, 0, REGION, 0x11) {
        return Err("the first write failed".into());
    }
    mirror_cli(lab, x, &["pause", m]).check("baton mirror pause")?;
    lab.note(&format!("operator: baton mirror pause on {}", server(x)));
    wait_mirror(lab, y, "knows it is behind", Duration::from_secs(10), |s| {
        s["disk"] == "outdated"
    })?;
    if !nbd_write_len(&sx, REGION, REGION, 0x22) {
        return Err("the write while paused failed".into());
    }
    let t = lab.crash(x)?;
    lab.note(&format!(
        "{} crashed with a write its peer lacks",
        server(x)
    ));
    wait_event(lab, y, "BTN-7007", t, Duration::from_secs(30))?;
    r.fact(format!(
        "{} refused to activate its stale copy (BTN-7007)",
        server(y)
    ));
    lab.hold(Duration::from_secs(1), "the stale side stays passive");
    let s = mirror_state(lab, y)?;
    if s["role"] != "secondary" {
        r.fail(format!("the stale side is not secondary: {s}"));
    }
    if !lab.online().is_empty() {
        r.fail(format!("the group runs somewhere: {}", lab.summary()));
    }
    if mirror_cli(lab, y, &["force-primary", m]).code == 0 {
        r.fail("`force-primary` without --yes was accepted");
    }
    mirror_cli(lab, y, &["force-primary", m, "--yes"]).check("force-primary --yes")?;
    lab.note(&format!(
        "operator: baton mirror force-primary on {}",
        server(y)
    ));
    let via = lab.baton().in_netns(&lab.nodes[y]);
    via.ctl(&["group", "stop", GROUP, "--wait", "30s"])
        .check("baton group stop --wait")?;
    let t2 = lab.now();
    via.ctl(&[
        "group",
        "start",
        GROUP,
        "--server",
        &server(y),
        "--wait",
        "30s",
    ])
    .check("baton group start --wait")?;
    lab.note(&format!("operator: group started on {}", server(y)));
    let (z, _) = lab.wait_owner(None, Duration::from_secs(30))?;
    if z != y {
        r.fail(format!(
            "the group started on {} instead of {}",
            server(z),
            server(y)
        ));
    }
    wait_event(lab, y, "BTN-7008", t2 - 60_000.0, Duration::from_secs(10))?;
    r.fact(format!(
        "forced activation on {} logged (BTN-7008)",
        server(y)
    ));
    let sy = lab.mirror_socket(y);
    if !nbd_reads_len(&sy, 0, REGION, 0x11) {
        r.fail("the replicated write is not on the forced side");
    }
    if !nbd_write_len(&sy, 2 * REGION, REGION, 0x33) {
        r.fail("a write on the forced side failed");
    }
    // x returns with its own write: a split brain, and nothing copied.
    let before = std::fs::read(lab.mirror_store(x)).map_err(|e| e.to_string())?;
    let t3 = lab.now();
    lab.start_agent(x)?;
    lab.note(&format!("{} back with its own write", server(x)));
    wait_event(lab, x, "BTN-7006", t3, Duration::from_secs(30))?;
    r.fact("both sides wrote: split brain reported (BTN-7006)");
    lab.hold(Duration::from_secs(1), "nothing must be copied");
    if std::fs::read(lab.mirror_store(x)).map_err(|e| e.to_string())? != before {
        r.fail("a split-brain side was overwritten without the operator");
    }
    let s = mirror_state(lab, y)?;
    if s["split_brain"] != true {
        r.fail(format!("the primary does not report the split brain: {s}"));
    }
    mirror_cli(lab, x, &["discard-local", m, "--yes"]).check("discard-local --yes")?;
    lab.note(&format!(
        "operator: baton mirror discard-local on {}",
        server(x)
    ));
    wait_mirror(
        lab,
        y,
        "has resynchronised its peer",
        Duration::from_secs(60),
        |s| s["in_sync"] == true && s["split_brain"] == false,
    )?;
    if !stores_equal(lab, x, y) {
        r.fail("the two stores differ after discard-local and the resync");
    }
    if !nbd_reads_len(&sy, 2 * REGION, REGION, 0x33) {
        r.fail("the forced side's write is gone");
    }
    Ok(())
}

/// Scenario 16: from the third server, random bytes, an HTTP request and the mirror's
/// own protocol with another key reach the secondary's mirror port. Each is refused and
/// counted, no data changes, and the real link stays connected and in sync.
pub(super) fn s16_refused_peers(lab: &mut Lab, r: &mut ScenarioReport) -> Result<(), String> {
    let (x, _) = lab.wait_owner(None, Duration::from_secs(30))?;
    lab.wait_converged(Duration::from_secs(20))?;
    wait_mirror_in_sync(lab, x)?;
    let y = peer_of(x);
    let store = std::fs::read(lab.mirror_store(y)).map_err(|e| e.to_string())?;
    let target = std::net::SocketAddr::from((
        super::super::node_addr(super::super::NET_B, y),
        super::super::MIRROR_PORT,
    ));
    let before = mirror_state(lab, y)?;
    let refused = |s: &serde_json::Value| {
        s["counters"]["refused_auth"].as_u64().unwrap_or(0)
            + s["counters"]["refused_protocol"].as_u64().unwrap_or(0)
    };
    let (auth0, all0) = (
        before["counters"]["refused_auth"].as_u64().unwrap_or(0),
        refused(&before),
    );
    // The third server plays the intruder.
    let ns = lab.nodes[2].clone();
    let outcome = in_netns(&ns, move || intrude(target)).map_err(|e| format!("intruder: {e}"))?;
    lab.note(&format!(
        "random bytes, HTTP and a wrong key sent to {}'s mirror port",
        server(y)
    ));
    if outcome.wrong_key_accepted {
        r.fail("a peer with another key was accepted");
    }
    let s = wait_mirror(
        lab,
        y,
        "counts the refusals",
        Duration::from_secs(10),
        |s| refused(s) >= all0 + 3,
    )?;
    let auth = s["counters"]["refused_auth"].as_u64().unwrap_or(0);
    if auth <= auth0 {
        r.fail(format!(
            "the wrong key was not counted as refused_auth: {s}"
        ));
    }
    r.fact(format!(
        "refused: {} ({} for authentication)",
        refused(&s) - all0,
        auth - auth0
    ));
    wait_event(
        lab,
        y,
        "BTN-7009",
        lab.now() - 30_000.0,
        Duration::from_secs(10),
    )?;
    if std::fs::read(lab.mirror_store(y)).map_err(|e| e.to_string())? != store {
        r.fail("the refused peers changed the secondary's data");
    }
    let s = mirror_state(lab, x)?;
    if s["connection"] != "connected" || s["in_sync"] != true {
        r.fail(format!("the real link suffered: {s}"));
    }
    Ok(())
}

struct Intrusion {
    wrong_key_accepted: bool,
}

/// Random bytes, an HTTP request, then the link protocol with a wrong key.
fn intrude(target: std::net::SocketAddr) -> Result<Intrusion, String> {
    use std::io::Write;
    let junk: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for payload in [
        junk.as_slice(),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".as_slice(),
    ] {
        let mut s = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(3))
            .map_err(|e| format!("cannot connect to {target}: {e}"))?;
        let _ = s.write_all(payload);
        std::thread::sleep(Duration::from_millis(300));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let accepted = rt.block_on(async {
        let s = tokio::net::TcpStream::connect(target)
            .await
            .map_err(|e| format!("cannot connect to {target}: {e}"))?;
        Ok::<bool, String>(
            baton_mirror::link::connect(
                s,
                &baton_mirror::link::LinkKey([7u8; 32]),
                b"{}",
                Duration::from_secs(2),
            )
            .await
            .is_ok(),
        )
    })?;
    Ok(Intrusion {
        wrong_key_accepted: accepted,
    })
}

/// Run `f` on a thread of its own that has entered network namespace `ns` (a
/// namespace change is per thread).
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("setns {path}: {e}"))?;
        f()
    })
    .join()
    .map_err(|_| "the namespace thread panicked".to_string())?
}

/// Scenario 17: the agent of the mirror's primary is SIGKILLed and started again while
/// an application writes: the mirror process runs apart from the agent, so every write
/// goes on succeeding (none fails), the same mirror process serves on, the restarted
/// agent adopts it (BTN-7017) and the group stays where it was, same epoch.
pub(super) fn s17_agent_restart(
    lab: &mut Lab,
    o: &Options,
    r: &mut ScenarioReport,
) -> Result<(), String> {
    need_qemu_io()?;
    for round in 0..o.repeat.max(1) {
        let (x, e) = lab.wait_owner(None, Duration::from_secs(30))?;
        lab.wait_converged(Duration::from_secs(20))?;
        wait_mirror_in_sync(lab, x)?;
        let daemons = mirror_pids(lab, x);
        if daemons.len() != 1 {
            return Err(format!(
                "expected one mirror process on {}: {daemons:?}",
                server(x)
            ));
        }
        let w = MirrorWriter::start_counting(lab.mirror_socket(x), 200 + round as u64);
        w.wait_acked(lab, 20)?;
        let t = lab.now();
        lab.signal(x, Signal::SIGKILL)?;
        lab.note(&format!(
            "round {}: agent of {} SIGKILLed under writes",
            round + 1,
            server(x)
        ));
        let n0 = w.count_writes();
        lab.hold(Duration::from_millis(500), "the agent is down");
        lab.start_agent(x)?;
        lab.note(&format!("agent of {} started again", server(x)));
        lab.wait("writes go on", Duration::from_secs(20), |_| {
            if w.count_writes() >= n0 + 20 {
                Ok(())
            } else {
                Err(format!("{} writes", w.count_writes()))
            }
        })?;
        wait_event(lab, x, "BTN-7017", t, Duration::from_secs(20))?;
        let failed = w.failed();
        let acked = w.finish(Duration::from_secs(30))?;
        r.fact(format!(
            "round {}: {} writes acknowledged across the restart, {failed} failed",
            round + 1,
            acked.len()
        ));
        if failed > 0 {
            r.fail(format!("{failed} writes failed while the agent restarted"));
        }
        if mirror_pids(lab, x) != daemons {
            r.fail("the mirror process was replaced by the agent's restart");
        }
        lab.wait_converged(Duration::from_secs(20))?;
        still_on(lab, r, x, e, "after the agent's restart");
        let lost = missing_on(&lab.mirror_socket(x), &acked);
        if !lost.is_empty() {
            r.fail(format!(
                "{} acknowledged writes do not read back",
                lost.len()
            ));
        }
    }
    Ok(())
}

/// Mirror processes running in server `i`'s namespace.
fn mirror_pids(lab: &Lab, i: usize) -> Vec<i32> {
    let Ok(text) = crate::netns::ip(&["netns", "pids", &lab.nodes[i]]) else {
        return Vec::new();
    };
    let mut v: Vec<i32> = text
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("\0mirror-daemon\0"))
        })
        .collect();
    v.sort_unstable();
    v
}

/// Scenario 18: the double failure that the mirror's own generations cannot see. The
/// secondary `y` is cut off from every peer (heartbeats and mirror link); the primary
/// `x` and the third server keep quorum, `x` declares `y` down and, once the cluster
/// has recorded that `x` alone holds the newest data (the data mark), goes on writing
/// alone. Then `x` crashes and the partition heals: `y` regains quorum with the third
/// server, but it must refuse to promote its stale copy (BTN-7007) and the group stays
/// offline. When `x` returns and the operator starts the group there, every write `x`
/// acknowledged alone reads back, and `y` is resynchronised from `x`.
pub(super) fn s18_stale_after_double_failure(
    lab: &mut Lab,
    r: &mut ScenarioReport,
) -> Result<(), String> {
    need_qemu_io()?;
    let (x, _) = lab.wait_owner(None, Duration::from_secs(30))?;
    lab.wait_converged(Duration::from_secs(20))?;
    wait_mirror_in_sync(lab, x)?;
    let y = peer_of(x);
    let z = 2;
    let w = MirrorWriter::start_counting(lab.mirror_socket(x), 300);
    w.wait_acked(lab, 20)?;
    let t = lab.now();
    lab.partition(&[vec![y], vec![x, z]])?;
    lab.note(&format!(
        "{} (the secondary) cut off from every peer under writes",
        server(y)
    ));
    wait_event(lab, x, ids::SERVER_DOWN, t, Duration::from_secs(20))?;
    let n0 = w.count_writes();
    lab.wait("the primary writes alone", Duration::from_secs(30), |_| {
        if w.count_writes() >= n0 + 20 {
            Ok(())
        } else {
            Err(format!("{} writes", w.count_writes()))
        }
    })?;
    let alone = w.count_writes() - n0;
    let acked = w.finish(Duration::from_secs(30))?;
    r.fact(format!(
        "{} wrote alone ({alone} writes acknowledged after declaring {} down)",
        server(x),
        server(y)
    ));
    let t2 = lab.crash(x)?;
    lab.note(&format!("{} crashed", server(x)));
    lab.heal()?;
    wait_event(lab, y, "BTN-7007", t2, Duration::from_secs(30))?;
    r.fact(format!(
        "{} regained quorum and refused to promote its stale copy (BTN-7007)",
        server(y)
    ));
    lab.hold(Duration::from_secs(2), "the stale side stays passive");
    if !lab.online().is_empty() {
        r.fail(format!("the group runs on a stale copy: {}", lab.summary()));
    }
    let s = mirror_state(lab, y)?;
    if s["role"] != "secondary" {
        r.fail(format!("the stale side is not secondary: {s}"));
    }
    // The server with the newest data returns; the operator starts the group there.
    lab.start_agent(x)?;
    lab.note(&format!("{} back", server(x)));
    lab.wait_converged(Duration::from_secs(30))?;
    let via = lab.baton().in_netns(&lab.nodes[z]);
    via.ctl(&["group", "stop", GROUP, "--wait", "30s"])
        .check("baton group stop --wait")?;
    via.ctl(&[
        "group",
        "start",
        GROUP,
        "--server",
        &server(x),
        "--wait",
        "30s",
    ])
    .check("baton group start --wait")?;
    lab.note(&format!("operator: group started on {}", server(x)));
    let (o, _) = lab.wait_owner(None, Duration::from_secs(30))?;
    if o != x {
        r.fail(format!("the group started on {}", server(o)));
    }
    let lost = missing_on(&lab.mirror_socket(x), &acked);
    if lost.is_empty() {
        r.fact(format!(
            "all {} acknowledged writes read back on {}",
            acked.len(),
            server(x)
        ));
    } else {
        r.fail(format!(
            "{} of {} acknowledged writes lost (offsets {:?})",
            lost.len(),
            acked.len(),
            &lost[..lost.len().min(8)]
        ));
    }
    wait_mirror_in_sync(lab, x)?;
    if !stores_equal(lab, x, y) {
        r.fail("the two stores differ after the resync");
    }
    Ok(())
}
