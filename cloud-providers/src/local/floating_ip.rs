//! The `floating-ip` resource kind: an address on a local network interface.
//!
//! Uses `ip` (iproute2) with JSON output, and `arping` (iputils-arping) for duplicate
//! detection and gratuitous ARP on IPv4. Needs `CAP_NET_ADMIN` (run the agent as root).

use crate::clock::Instant;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use crate::params::{key_error, parse_params};
use crate::process::{duration_ms, execute, find_in_path, run_command, CommandSpec};
use crate::{ActionContext, CheckOutcome, ParamError, Params, ProviderError, ResourceDriver};

/// Keys of a `floating-ip` resource: an address that Baton adds to a network interface
/// of the server where the group runs, announcing it with gratuitous ARP (IPv4).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FloatingIpParams {
    /// Required. The address, IPv4 (`192.0.2.10`) or IPv6 (`2001:db8::10`), without a
    /// prefix length (see `prefix`).
    pub ip: String,
    /// Optional. Prefix length the address is added with. Default: 32 for IPv4, 128 for
    /// IPv6 (a host address, which adds no route).
    pub prefix: Option<u8>,
    /// Optional. The network interface, e.g. `eth0`. Default: the interface that
    /// already has an address in a subnet containing `ip` (longest match), else the
    /// one `ip route get IP` names. Often set per server.
    pub device: Option<String>,
    /// Optional. How many gratuitous ARP packets to send after adding an IPv4 address
    /// (default 3, one per second, sent in the background; 0 sends none).
    #[serde(default = "default_arp_count")]
    pub arp_count: u32,
    /// Optional. Before adding an IPv4 address, ask the network whether another host
    /// already answers for it (`arping -D`) and refuse to activate if one does
    /// (default true).
    #[serde(default = "default_true")]
    pub check_duplicate: bool,
}

fn default_arp_count() -> u32 {
    3
}

fn default_true() -> bool {
    true
}

const IP_HINT: &str = "install the iproute2 package";
const ARPING_HINT: &str = "install the iputils-arping package";
/// Parsed `ip -j` output can be large on hosts with many interfaces.
const IP_JSON_LIMIT: usize = 16 << 20;

/// Driver of a `floating-ip` resource.
#[derive(Debug)]
pub struct FloatingIpDriver {
    pub params: FloatingIpParams,
    ip: IpAddr,
    prefix: u8,
    /// When set, every command runs in this network namespace (`ip netns exec NS ...`).
    /// Settable from code only (tests, embedding), not from config.
    netns: Option<String>,
    /// Whether a usable (iputils) arping is installed; found out once.
    arping: OnceLock<bool>,
    /// The gratuitous ARP announcements still being sent after an activation; stopped on
    /// deactivation so that a server that gave the address up never announces it again.
    announcing: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl FloatingIpDriver {
    pub fn from_params(params: &Params) -> Result<Self, ParamError> {
        let p: FloatingIpParams = parse_params(params)?;
        let ip: IpAddr = match p.ip.trim().parse() {
            Ok(ip) => ip,
            Err(_) if p.ip.contains('/') => {
                return Err(key_error(
                    "ip",
                    format!(
                        "invalid address `{}`: give the address alone and its prefix length in `prefix`",
                        p.ip
                    ),
                ))
            }
            Err(_) => {
                return Err(key_error(
                    "ip",
                    format!(
                        "invalid address `{}`: expected an IPv4 or IPv6 address such as 192.0.2.10",
                        p.ip
                    ),
                ))
            }
        };
        if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
            return Err(key_error(
                "ip",
                format!("`{ip}` cannot be a floating address (unspecified, multicast or loopback)"),
            ));
        }
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = p.prefix.unwrap_or(max);
        if prefix > max {
            return Err(key_error(
                "prefix",
                format!("prefix {prefix} is too long for {ip}: at most {max}"),
            ));
        }
        if let Some(dev) = &p.device {
            let valid = !dev.is_empty()
                && dev.len() <= 15
                && !dev.starts_with('-')
                && dev
                    .chars()
                    .all(|c| !c.is_whitespace() && !c.is_control() && c != '/' && c != ':');
            if !valid {
                return Err(key_error(
                    "device",
                    format!("invalid device name `{dev}`: expected an interface name like eth0"),
                ));
            }
        }
        if p.arp_count > 100 {
            return Err(key_error("arp_count", "arp_count must be at most 100"));
        }
        Ok(FloatingIpDriver {
            params: p,
            ip,
            prefix,
            netns: None,
            arping: OnceLock::new(),
            announcing: std::sync::Mutex::new(None),
        })
    }

    /// Run every command inside the network namespace `ns` (for tests and embedding;
    /// not a config key).
    /// For a monitor (the `aws-vip` and `azure-vip` monitors): healthy when the address
    /// is on a local interface, unhealthy with the reason otherwise.
    pub async fn probe_local(
        &self,
        ctx: &crate::ProbeContext,
        timeout: Duration,
    ) -> Result<(), ProviderError> {
        let actx = ActionContext {
            cluster: ctx.cluster.clone(),
            group: String::new(),
            resource: ctx.monitor.clone(),
            server: ctx.server.clone(),
            epoch: 0,
            timeout,
        };
        match self.check(&actx).await? {
            CheckOutcome::Active => Ok(()),
            CheckOutcome::Inactive => Err(ProviderError::Unhealthy(format!(
                "the VIP {} is not on a local interface",
                self.ip
            ))),
            CheckOutcome::Degraded(why) => Err(ProviderError::Unhealthy(why)),
        }
    }

    pub fn with_netns(mut self, ns: impl Into<String>) -> Self {
        self.netns = Some(ns.into());
        self
    }

    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    fn cmd(
        &self,
        what: String,
        program: &str,
        args: Vec<String>,
        timeout: Duration,
    ) -> CommandSpec {
        let hint = if program == "arping" {
            ARPING_HINT
        } else {
            IP_HINT
        };
        match &self.netns {
            None => CommandSpec::argv(what, program, args, timeout),
            Some(ns) => {
                let mut full = vec![
                    "netns".to_string(),
                    "exec".into(),
                    ns.clone(),
                    program.into(),
                ];
                full.extend(args);
                CommandSpec::argv(what, "ip", full, timeout)
            }
        }
        .with_missing_hint(hint)
    }

    fn ip_cmd(&self, args: &[&str], timeout: Duration) -> CommandSpec {
        let what = format!("ip {}", args.join(" "));
        self.cmd(
            what,
            "ip",
            args.iter().map(|s| s.to_string()).collect(),
            timeout,
        )
    }

    async fn links(&self, dl: &Deadline) -> Result<Vec<Link>, ProviderError> {
        let spec = self
            .ip_cmd(&["-j", "addr", "show"], dl.remaining()?)
            .with_stdout_limit(IP_JSON_LIMIT);
        let out = run_command(&spec).await?;
        parse_addr_json(&out.stdout).map_err(|e| {
            ProviderError::Other(format!("cannot parse `ip -j addr show` output: {e}"))
        })
    }

    /// The device to add the address to.
    async fn target_device(&self, links: &[Link], dl: &Deadline) -> Result<String, ProviderError> {
        if let Some(dev) = &self.params.device {
            if !links.iter().any(|l| l.ifname == *dev) {
                return Err(ProviderError::Other(format!(
                    "device `{dev}` does not exist on this server"
                )));
            }
            return Ok(dev.clone());
        }
        if let Some(dev) = device_for_subnet(links, self.ip) {
            return Ok(dev);
        }
        let ip = self.ip.to_string();
        let spec = self.ip_cmd(&["-j", "route", "get", &ip], dl.remaining()?);
        let out = execute(&spec).await?;
        if out.success() {
            if let Some(dev) = parse_route_dev(&out.stdout).filter(|d| d != "lo") {
                return Ok(dev);
            }
        }
        Err(ProviderError::Other(format!(
            "cannot find a network device for {}: no interface has an address in a subnet containing it \
             and no route leads to it; set `device`",
            self.ip
        )))
    }

    /// Whether an iputils `arping` is installed (checked once).
    async fn arping_usable(&self, dl: &Deadline) -> bool {
        if let Some(known) = self.arping.get() {
            return *known;
        }
        let usable = match find_in_path("arping") {
            None => {
                tracing::warn!(
                    "arping is not installed: floating IPv4 addresses are added without duplicate \
                     detection or gratuitous ARP; install the iputils-arping package"
                );
                false
            }
            Some(path) => {
                let Ok(t) = dl.remaining() else { return false };
                let spec = self.cmd("arping -V".into(), "arping", vec!["-V".into()], t);
                match execute(&spec).await {
                    Ok(out) if format!("{}{}", out.stdout, out.stderr).contains("iputils") => true,
                    _ => {
                        tracing::warn!(
                            "{} is not the iputils arping: floating IPv4 addresses are added without \
                             duplicate detection or gratuitous ARP; install the iputils-arping package",
                            path.display()
                        );
                        false
                    }
                }
            }
        };
        let _ = self.arping.set(usable);
        usable
    }

    /// `arping -D`: does another host answer for our address?
    async fn duplicate_check(&self, dev: &str, dl: &Deadline) -> Result<(), ProviderError> {
        let args = vec![
            "-D".into(),
            "-c".into(),
            "1".into(),
            "-w".into(),
            "1".into(),
            "-I".into(),
            dev.to_string(),
            self.ip.to_string(),
        ];
        let spec = self.cmd(
            format!("arping -D on {dev}"),
            "arping",
            args,
            dl.remaining()?,
        );
        let out = execute(&spec).await?;
        match out.status {
            0 => Ok(()),
            1 => Err(ProviderError::Other(format!(
                "address {} is already in use on the network (another host answered ARP for it on {dev}); \
                 refusing to add it (set check_duplicate = false to skip this check)",
                self.ip
            ))),
            status => {
                tracing::warn!(ip = %self.ip, dev, status,
                    "duplicate address check failed ({}); adding the address anyway",
                    out.failure_text());
                Ok(())
            }
        }
    }

    /// Announce the address with `arping -U`, in the background: the first packet goes
    /// out at once, the others one per second, and activation does not wait for them.
    fn gratuitous_arp(&self, dev: &str) {
        let args = vec![
            "-U".into(),
            "-c".into(),
            self.params.arp_count.to_string(),
            "-I".into(),
            dev.to_string(),
            self.ip.to_string(),
        ];
        let limit = Duration::from_secs(u64::from(self.params.arp_count) + 2);
        let spec = self.cmd(format!("arping -U on {dev}"), "arping", args, limit);
        let ip = self.ip;
        let dev = dev.to_string();
        let task = tokio::spawn(async move {
            if let Err(e) = run_command(&spec).await {
                tracing::warn!(ip = %ip, dev,
                    "gratuitous ARP failed ({e}); neighbours may keep a stale ARP entry until it expires");
            }
        });
        if let Some(old) = self.announcing_slot().replace(task) {
            old.abort();
        }
    }

    fn announcing_slot(&self) -> std::sync::MutexGuard<'_, Option<tokio::task::JoinHandle<()>>> {
        // A poisoned lock only means a panic elsewhere while holding it; the slot is
        // still a valid Option.
        self.announcing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stop announcing (dropping the command kills the arping process group).
    fn stop_announcing(&self) {
        if let Some(task) = self.announcing_slot().take() {
            task.abort();
        }
    }
}

/// The action's deadline, shared by the commands it runs.
struct Deadline {
    end: Instant,
    total: Duration,
}

impl Deadline {
    fn new(total: Duration) -> Self {
        Deadline {
            end: crate::clock::now() + total,
            total,
        }
    }

    fn remaining(&self) -> Result<Duration, ProviderError> {
        let left = self.end.saturating_duration_since(crate::clock::now());
        if left.is_zero() {
            Err(ProviderError::Timeout(duration_ms(self.total)))
        } else {
            Ok(left)
        }
    }
}

#[async_trait]
impl ResourceDriver for FloatingIpDriver {
    fn kind(&self) -> &'static str {
        "floating-ip"
    }

    async fn activate(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        let dl = Deadline::new(ctx.timeout);
        let links = self.links(&dl).await?;
        if let Some(found) = locate(&links, self.ip) {
            return match &self.params.device {
                Some(dev) if *dev != found.dev => Err(ProviderError::Other(format!(
                    "address {} is already on device {}, not {dev}",
                    self.ip, found.dev
                ))),
                _ => Ok(()),
            };
        }
        let dev = self.target_device(&links, &dl).await?;
        let v4 = self.ip.is_ipv4();
        let arping = v4
            && (self.params.check_duplicate || self.params.arp_count > 0)
            && self.arping_usable(&dl).await;
        if arping && self.params.check_duplicate {
            self.duplicate_check(&dev, &dl).await?;
        }

        let addr = format!("{}/{}", self.ip, self.prefix);
        let mut args = vec!["addr", "add", addr.as_str(), "dev", dev.as_str()];
        if !v4 {
            // Usable at once: a failover cannot wait for IPv6 duplicate address detection.
            args.push("nodad");
        }
        if let Err(e) = run_command(&self.ip_cmd(&args, dl.remaining()?)).await {
            // Lost a race with ourselves or an operator? Then it is there, which is fine.
            let again = self.links(&dl).await?;
            match locate(&again, self.ip) {
                Some(found) if found.dev == dev => {}
                _ => return Err(e),
            }
        }
        tracing::info!(ip = %self.ip, dev, "floating address added");
        if arping && self.params.arp_count > 0 {
            self.gratuitous_arp(&dev);
        }
        Ok(())
    }

    async fn deactivate(&self, ctx: &ActionContext) -> Result<(), ProviderError> {
        self.stop_announcing();
        let dl = Deadline::new(ctx.timeout);
        let links = self.links(&dl).await?;
        let Some(found) = locate(&links, self.ip) else {
            return Ok(());
        };
        if let Some(dev) = &self.params.device {
            if *dev != found.dev {
                // It is this resource's address wherever it sits: leaving it would let
                // the next holder add a duplicate.
                tracing::warn!(ip = %self.ip, on = %found.dev, configured = %dev,
                    "address is on another device than configured; removing it there");
            }
        }
        let addr = format!("{}/{}", self.ip, found.prefixlen);
        let args = ["addr", "del", addr.as_str(), "dev", found.dev.as_str()];
        if let Err(e) = run_command(&self.ip_cmd(&args, dl.remaining()?)).await {
            let again = self.links(&dl).await?;
            if locate(&again, self.ip).is_some() {
                return Err(e);
            }
        }
        tracing::info!(ip = %self.ip, dev = %found.dev, "floating address removed");
        Ok(())
    }

    async fn check(&self, ctx: &ActionContext) -> Result<CheckOutcome, ProviderError> {
        let dl = Deadline::new(ctx.timeout);
        let links = self.links(&dl).await?;
        Ok(match locate(&links, self.ip) {
            None => CheckOutcome::Inactive,
            Some(found) => match &self.params.device {
                Some(dev) if *dev != found.dev => CheckOutcome::Degraded(format!(
                    "address {} is on device {}, not {dev}",
                    self.ip, found.dev
                )),
                _ if !found.up => CheckOutcome::Degraded(format!(
                    "address {} is on device {}, which is down",
                    self.ip, found.dev
                )),
                _ => CheckOutcome::Active,
            },
        })
    }
}

/// One interface of `ip -j addr show`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub(crate) struct Link {
    #[serde(default)]
    pub ifname: String,
    #[serde(default)]
    pub flags: Vec<String>,
    #[serde(default)]
    pub addr_info: Vec<AddrInfo>,
}

/// One address of an interface in `ip -j addr show`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub(crate) struct AddrInfo {
    #[serde(default)]
    pub family: Option<String>,
    #[serde(default)]
    pub local: Option<String>,
    #[serde(default)]
    pub prefixlen: Option<u8>,
}

/// Where an address was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    pub dev: String,
    pub prefixlen: u8,
    pub up: bool,
}

pub(crate) fn parse_addr_json(text: &str) -> Result<Vec<Link>, String> {
    let links: Vec<Link> = serde_json::from_str(text.trim()).map_err(|e| e.to_string())?;
    // Some iproute2 versions emit empty objects; they carry nothing.
    Ok(links.into_iter().filter(|l| !l.ifname.is_empty()).collect())
}

/// The device of the first route of `ip -j route get IP`.
pub(crate) fn parse_route_dev(text: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Route {
        dev: Option<String>,
    }
    let routes: Vec<Route> = serde_json::from_str(text.trim()).ok()?;
    routes.into_iter().find_map(|r| r.dev)
}

fn addresses(link: &Link) -> impl Iterator<Item = (IpAddr, u8)> + '_ {
    link.addr_info.iter().filter_map(|a| {
        let ip: IpAddr = a.local.as_deref()?.parse().ok()?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        Some((ip, a.prefixlen.unwrap_or(max)))
    })
}

/// Which device holds `ip`, if any.
pub(crate) fn locate(links: &[Link], ip: IpAddr) -> Option<Found> {
    links.iter().find_map(|l| {
        addresses(l)
            .find(|(a, _)| *a == ip)
            .map(|(_, prefixlen)| Found {
                dev: l.ifname.clone(),
                prefixlen,
                up: l.flags.iter().any(|f| f == "UP"),
            })
    })
}

/// The device with an address whose subnet contains `ip` (longest prefix wins).
pub(crate) fn device_for_subnet(links: &[Link], ip: IpAddr) -> Option<String> {
    links
        .iter()
        .flat_map(|l| addresses(l).map(move |(a, p)| (l, a, p)))
        .filter(|(_, a, p)| {
            let host = if a.is_ipv4() { 32 } else { 128 };
            *p < host && same_subnet(*a, ip, *p)
        })
        .max_by_key(|(_, _, p)| *p)
        .map(|(l, _, _)| l.ifname.clone())
}

fn same_subnet(a: IpAddr, b: IpAddr, prefix: u8) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP","LOWER_UP"],"mtu":65536,"qdisc":"noqueue","operstate":"UNKNOWN","group":"default","txqlen":1000,"link_type":"loopback","address":"00:00:00:00:00:00","broadcast":"00:00:00:00:00:00","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host","label":"lo","valid_life_time":4294967295,"preferred_life_time":4294967295}]},
      {},
      {"ifindex":3,"link":"v1","ifname":"v0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1500,"operstate":"UP","addr_info":[{"family":"inet","local":"10.99.0.1","prefixlen":24,"scope":"global","label":"v0"},{"family":"inet","local":"10.99.0.10","prefixlen":32,"scope":"global","label":"v0"},{"family":"inet6","local":"fe80::50c0:c6ff:fe51:5c16","prefixlen":64,"scope":"link","tentative":true}]},
      {"ifindex":4,"ifname":"v2","flags":["BROADCAST","MULTICAST"],"operstate":"DOWN","addr_info":[{"family":"inet","local":"10.99.0.129","prefixlen":25},{"family":"inet6","local":"2001:db8::1","prefixlen":64}]}]"#;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_ip_json() {
        let links = parse_addr_json(SAMPLE).unwrap();
        assert_eq!(links.len(), 3);
        assert_eq!(links[1].ifname, "v0");
        assert_eq!(links[1].addr_info.len(), 3);
        assert!(parse_addr_json("not json").is_err());
        assert_eq!(parse_addr_json("[]\n").unwrap(), vec![]);
    }

    #[test]
    fn locates_addresses() {
        let links = parse_addr_json(SAMPLE).unwrap();
        assert_eq!(
            locate(&links, ip("10.99.0.10")),
            Some(Found {
                dev: "v0".into(),
                prefixlen: 32,
                up: true
            })
        );
        assert_eq!(locate(&links, ip("10.99.0.11")), None);
        let down = locate(&links, ip("2001:db8::1")).unwrap();
        assert_eq!(down.dev, "v2");
        assert!(!down.up);
    }

    #[test]
    fn finds_device_by_subnet() {
        let links = parse_addr_json(SAMPLE).unwrap();
        assert_eq!(
            device_for_subnet(&links, ip("10.99.0.50")).as_deref(),
            Some("v0")
        );
        // The /25 on v2 is longer than the /24 on v0.
        assert_eq!(
            device_for_subnet(&links, ip("10.99.0.200")).as_deref(),
            Some("v2")
        );
        assert_eq!(
            device_for_subnet(&links, ip("2001:db8::77")).as_deref(),
            Some("v2")
        );
        assert_eq!(device_for_subnet(&links, ip("192.0.2.1")), None);
    }

    #[test]
    fn parses_route_get() {
        let out = r#"[{"dst":"10.99.0.7","dev":"v0","prefsrc":"10.99.0.1","flags":[],"uid":0,"cache":[]}]"#;
        assert_eq!(parse_route_dev(out).as_deref(), Some("v0"));
        assert_eq!(parse_route_dev("[]"), None);
        assert_eq!(parse_route_dev("garbage"), None);
    }

    #[test]
    fn subnets() {
        assert!(same_subnet(ip("10.0.0.1"), ip("10.0.0.200"), 24));
        assert!(!same_subnet(ip("10.0.0.1"), ip("10.0.1.1"), 24));
        assert!(same_subnet(ip("10.0.0.1"), ip("192.168.1.1"), 0));
        assert!(!same_subnet(ip("10.0.0.1"), ip("::1"), 0));
    }

    fn table(s: &str) -> Params {
        s.parse::<toml::Table>().unwrap()
    }

    #[test]
    fn params() {
        let d = FloatingIpDriver::from_params(&table("ip = '10.99.0.10'")).unwrap();
        assert_eq!(d.prefix, 32);
        assert_eq!(d.params.arp_count, 3);
        assert!(d.params.check_duplicate);
        let d = FloatingIpDriver::from_params(&table("ip = '2001:db8::5'")).unwrap();
        assert_eq!(d.prefix, 128);
        let e = FloatingIpDriver::from_params(&table("ip = '10.0.0.1/24'")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("ip"));
        assert!(e.message.contains("prefix"), "{}", e.message);
        let e = FloatingIpDriver::from_params(&table("ip = '10.0.0.1'\nprefix = 33")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("prefix"));
        let e = FloatingIpDriver::from_params(&table("ip = 'nope'")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("ip"));
        let e =
            FloatingIpDriver::from_params(&table("ip = '10.0.0.1'\ndevice = 'eth 0'")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("device"));
        let e = FloatingIpDriver::from_params(&table("ip = '10.0.0.1'\nnetns = 'x'")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("netns"));
    }
}
