//! Cutting one interconnect path on loopback with nftables (root only).
//!
//! A [`Cut`] owns a dedicated table `inet baton_test_<pid>_<n>` whose input chain drops
//! UDP between two addresses (both directions). Dropping the [`Cut`] deletes the
//! table, also when the test panics.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Why nftables cannot be used here, or `None` when it can.
pub fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not running as root (nftables needs CAP_NET_ADMIN)".into());
    }
    match Command::new("nft")
        .args(["list", "tables"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
    {
        Err(e) => Some(format!("`nft` cannot be run ({e}); install nftables")),
        Ok(o) if !o.status.success() => Some(format!(
            "`nft list tables` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Ok(_) => None,
    }
}

/// An active cut; the rules go away when it is dropped.
pub struct Cut {
    table: String,
    active: bool,
}

static SERIAL: AtomicU32 = AtomicU32::new(0);

fn nft_script(script: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| format!("cannot write to nft: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("nft failed: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft rejected the rules: {}\n{script}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Cut {
    /// Drop every UDP datagram between `a` and `b` (either direction), addressed to the
    /// other's port.
    pub fn udp_between(a: SocketAddr, b: SocketAddr) -> Result<Cut, String> {
        Cut::udp_pairs(&[(a, b)])
    }

    /// Drop UDP between each pair of addresses, both directions.
    pub fn udp_pairs(pairs: &[(SocketAddr, SocketAddr)]) -> Result<Cut, String> {
        let table = format!(
            "baton_test_{}_{}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        );
        let rule = |from: SocketAddr, to: SocketAddr| {
            format!(
                "    ip saddr {} ip daddr {} udp dport {} drop\n",
                from.ip(),
                to.ip(),
                to.port()
            )
        };
        let rules: String = pairs
            .iter()
            .map(|(a, b)| format!("{}{}", rule(*a, *b), rule(*b, *a)))
            .collect();
        let script = format!(
            "table inet {table} {{\n  chain input {{\n    type filter hook input priority -10; policy accept;\n{rules}  }}\n}}\n"
        );
        nft_script(&script)?;
        Ok(Cut {
            table,
            active: true,
        })
    }

    /// Drop every packet (any protocol) between each of `mine` and each of `others`,
    /// both directions: a server with the addresses `mine` is cut off from them.
    pub fn isolate(mine: &[std::net::IpAddr], others: &[std::net::IpAddr]) -> Result<Cut, String> {
        let mut rules = String::new();
        for a in mine {
            for b in others {
                rules.push_str(&format!(
                    "    ip saddr {a} ip daddr {b} drop\n    ip saddr {b} ip daddr {a} drop\n"
                ));
            }
        }
        Cut::script(&rules)
    }

    /// Drop TCP to and from `addr` (its IP and port), both directions: one TCP service
    /// (a mirror link) is cut while everything else on the address goes on.
    pub fn tcp_to(addr: SocketAddr) -> Result<Cut, String> {
        let (ip, port) = (addr.ip(), addr.port());
        Cut::script(&format!(
            "    ip daddr {ip} tcp dport {port} drop\n    ip saddr {ip} tcp sport {port} drop\n"
        ))
    }

    fn script(rules: &str) -> Result<Cut, String> {
        let table = format!(
            "baton_test_{}_{}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        );
        let script = format!(
            "table inet {table} {{\n  chain input {{\n    type filter hook input priority -10; policy accept;\n{rules}  }}\n}}\n"
        );
        nft_script(&script)?;
        Ok(Cut {
            table,
            active: true,
        })
    }

    /// Remove the rules now.
    pub fn restore(&mut self) -> Result<(), String> {
        if !self.active {
            return Ok(());
        }
        let out = Command::new("nft")
            .args(["delete", "table", "inet", &self.table])
            .output()
            .map_err(|e| format!("cannot run nft: {e}"))?;
        if out.status.success() {
            self.active = false;
            Ok(())
        } else {
            Err(format!(
                "cannot delete nft table {}: {}",
                self.table,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        if let Err(e) = self.restore() {
            eprintln!("{e}");
        }
    }
}
