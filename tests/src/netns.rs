//! Network namespaces for the tests that need real interfaces (root only).
//!
//! A [`Netns`] owns the namespaces it created (named with a prefix unique to the test
//! process, e.g. `btf<pid>-`). Dropping it SIGKILLs every process still inside one of
//! them and deletes them, which also removes every link and address in them; nothing
//! is ever added to the root namespace.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Deserialize;

/// Why network namespaces cannot be used here, or `None` when they can.
pub fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not running as root (network namespaces need CAP_SYS_ADMIN)".into());
    }
    match Command::new("ip")
        .args(["netns", "list"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
    {
        Err(e) => Some(format!("`ip` cannot be run ({e}); install iproute2")),
        Ok(o) if !o.status.success() => Some(format!(
            "`ip netns list` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Ok(_) => None,
    }
}

/// Is `program` on `PATH`?
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// Is the `arping` on `PATH` the iputils one (what the `floating-ip` resource uses for
/// duplicate detection and gratuitous ARP)?
pub fn iputils_arping() -> bool {
    Command::new("arping")
        .arg("-V")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout).contains("iputils")
                || String::from_utf8_lossy(&o.stderr).contains("iputils")
        })
}

/// Run `ip ARGS`; its stdout, or an error with its stderr.
pub fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Run `ip ARGS` and panic if it fails.
pub fn must_ip(args: &[&str]) -> String {
    ip(args).unwrap_or_else(|e| panic!("{e}"))
}

/// A command that runs `program` inside namespace `ns` (`ip netns exec NS PROGRAM`).
/// `ip netns exec` execs the program in place, so the child's pid is the program's.
pub fn command_in(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("ip");
    c.arg("netns").arg("exec").arg(ns).arg(program);
    c
}

#[derive(Debug, Deserialize)]
struct Link {
    #[serde(default)]
    ifname: String,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    addr_info: Vec<AddrInfo>,
}

#[derive(Debug, Deserialize)]
struct AddrInfo {
    #[serde(default)]
    local: Option<String>,
}

/// The interface of namespace `ns` that holds `addr`, if any (`ip -n NS -j addr show`).
pub fn device_with(ns: &str, addr: Ipv4Addr) -> Result<Option<String>, String> {
    let text = ip(&["-n", ns, "-j", "addr", "show"])?;
    let links: Vec<Link> = serde_json::from_str(text.trim())
        .map_err(|e| format!("cannot parse `ip -n {ns} -j addr show` ({e}): {text}"))?;
    let want = addr.to_string();
    Ok(links
        .into_iter()
        .find(|l| {
            l.addr_info
                .iter()
                .any(|a| a.local.as_deref() == Some(want.as_str()))
        })
        .map(|l| l.ifname))
}

/// The MAC address of `dev` in namespace `ns`.
pub fn mac(ns: &str, dev: &str) -> String {
    let text = must_ip(&["-n", ns, "-j", "link", "show", "dev", dev]);
    let links: Vec<Link> = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("cannot parse `ip -j link show` ({e}): {text}"));
    links
        .into_iter()
        .find(|l| l.ifname == dev)
        .and_then(|l| l.address)
        .unwrap_or_else(|| panic!("{dev} in {ns} has no MAC address: {text}"))
}

/// One entry of `ip -j neigh show`.
#[derive(Debug, Clone, Deserialize)]
pub struct Neigh {
    pub dst: String,
    #[serde(default)]
    pub dev: String,
    #[serde(default)]
    pub lladdr: Option<String>,
    #[serde(default)]
    pub state: Vec<String>,
}

/// The neighbour entry namespace `ns` has for `addr`, if any.
pub fn neigh(ns: &str, addr: Ipv4Addr) -> Result<Option<Neigh>, String> {
    let a = addr.to_string();
    let text = ip(&["-n", ns, "-j", "neigh", "show", &a])?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let all: Vec<Neigh> = serde_json::from_str(text)
        .map_err(|e| format!("cannot parse `ip -n {ns} -j neigh show {a}` ({e}): {text}"))?;
    Ok(all.into_iter().find(|n| n.dst == a))
}

/// Namespaces owned by the test; see the module documentation.
#[derive(Debug, Default)]
pub struct Netns {
    names: Vec<String>,
}

impl Netns {
    pub fn new() -> Netns {
        Netns::default()
    }

    /// Create namespace `name` (owned from now on) with `lo` up.
    pub fn add(&mut self, name: &str) -> Result<(), String> {
        ip(&["netns", "add", name])?;
        self.names.push(name.to_string());
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(())
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// SIGKILL every process inside the owned namespaces (`ip netns pids`).
    pub fn kill_all(&self) {
        for n in &self.names {
            let Ok(text) = ip(&["netns", "pids", n]) else {
                continue;
            };
            for pid in text
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.kill_all();
        // Newest first: node namespaces before the switch that their links lead to.
        for n in self.names.iter().rev() {
            if let Err(e) = ip(&["netns", "del", n]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}
