//! `[api]`: who may connect to the agent's HTTP API and how much each connection may hold.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::diagnostics::{k, Diags};
use super::Dur;

/// A network written as `ADDRESS/PREFIX` (`10.0.0.0/16`, `fd00::/8`); a bare address is a
/// single host (`/32` or `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The network of one address.
    pub fn host(addr: IpAddr) -> Cidr {
        let addr = addr.to_canonical();
        Cidr {
            addr,
            prefix: if addr.is_ipv4() { 32 } else { 128 },
        }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is inside this network. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`,
    /// as a dual-stack listener reports IPv4 peers) count as their IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let t = s.trim();
        let (a, p) = match t.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (t, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| {
            format!("`{s}` is not a network: write an address and a prefix length, like 10.0.0.0/16 or fd00::/8")
        })?;
        let addr = addr.to_canonical();
        let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && !p.starts_with('+') => n,
                _ => {
                    return Err(format!(
                        "`{s}`: the prefix length must be a number from 0 to {max}"
                    ))
                }
            },
        };
        // Host bits set (10.0.0.1/16) is a likely typo: refuse it rather than guess.
        let net = Cidr { addr, prefix };
        if !net.contains(addr) || net.network() != addr {
            return Err(format!(
                "`{s}` has host bits set: the network is {}/{prefix}",
                net.network()
            ));
        }
        Ok(net)
    }
}

impl Cidr {
    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// Bounds of the connection limits (also used by `baton witness`).
pub const MAX_CONNECTIONS_LIMIT: u32 = 65_536;
/// Shortest and longest header, idle and request timeouts.
pub const MIN_TIMEOUT_MS: u64 = 100;
pub const MAX_TIMEOUT_MS: u64 = 600_000;

/// `[api]`: the agent's HTTP API. Every connection is checked against `allow` before a
/// byte is read; the caps and timeouts bound what a client (or many) can hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSection {
    /// Networks allowed to connect besides the cluster's own servers (their API and
    /// interconnect addresses are always allowed). Default `["127.0.0.0/8", "::1/128"]`
    /// (the local CLI); add admin networks here.
    pub allow: Vec<Cidr>,
    /// Open connections at most (the cluster's servers have their own slots on top).
    /// Default 64. Lowered at start if the open-file limit cannot hold it plus a reserve.
    pub max_connections: u32,
    /// Open connections from one source address at most. Default 8.
    pub max_connections_per_source: u32,
    /// Time a client has to send a request's headers. Default `5s`.
    pub header_timeout: Dur,
    /// An idle connection (no request in progress) is closed after this. Default `30s`.
    pub idle_timeout: Dur,
    /// Time for a whole request: reading its body and answering. Default `10s`.
    pub request_timeout: Dur,
    /// Directory of the agent's Unix socket for the local CLI: the agent listens on
    /// `DIR/CLUSTER-SERVER.sock`, and `baton` uses it when it cannot read the cluster key,
    /// so operators need no access to the key. Empty: no socket. Default `/run/baton`.
    pub socket_dir: std::path::PathBuf,
    /// Permission bits of the socket; whoever may connect gets `socket_role`. Default
    /// `0o660` (owner and `socket_group`); others must not have write access.
    pub socket_mode: u32,
    /// Group that owns the socket (e.g. `baton-operators`). Default: the agent's group.
    pub socket_group: Option<String>,
    /// What a connection through the socket may do: `read` (status, alerts) or
    /// `operator` (also commands). Default `operator`.
    pub socket_role: ApiRole,
    /// Accept the role tokens derived from the cluster key (`baton token --role ROLE`).
    /// Default true; set false to accept only the tokens in the token files.
    pub derived_tokens: bool,
    /// Files of issued tokens, one per line (`#` comments), for the `read` and the
    /// `operator` role; editing a file and restarting the agent revokes or adds tokens.
    /// Like the key file, they must not be readable by others.
    pub read_tokens_file: Option<std::path::PathBuf>,
    pub operator_tokens_file: Option<std::path::PathBuf>,
    /// TLS: the API serves HTTPS with this certificate (PEM, the server's first, then any
    /// intermediates) and private key (PEM, mode 0600). `{server}` in either path is
    /// replaced by the server's name, so one configuration serves every server
    /// (`baton keygen --tls DIR` writes `DIR/SERVER.crt` and `DIR/SERVER.key`). Both or
    /// neither; with them every client (the CLI, the agents asking their peers) uses
    /// HTTPS, so every server of the cluster must have its certificate. The files are read
    /// again when they change (checked every 30 s, and at SIGHUP).
    pub tls_cert_file: Option<std::path::PathBuf>,
    pub tls_key_file: Option<std::path::PathBuf>,
    /// The CA (PEM) whose certificates the clients trust, and only those (`DIR/ca.crt` from
    /// `baton keygen --tls`). Without it, clients trust the public web roots.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// `[api.webui]`: the Web UI served at `/ui/`.
    pub webui: super::web::WebUiSection,
}

/// The placeholder replaced by the server's name in `tls_cert_file` and `tls_key_file`.
pub const SERVER_PLACEHOLDER: &str = "{server}";

/// What an API caller may do. The cluster key's own token (the agents' and root's) may do
/// everything, including what only peers do (forwarding `cluster stop`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApiRole {
    /// Status, cluster status, alerts.
    Read,
    /// Also every command (group start/stop/move, suspend, timeouts, cluster stop).
    Operator,
}

impl ApiRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiRole::Read => "read",
            ApiRole::Operator => "operator",
        }
    }
}

impl Default for ApiSection {
    fn default() -> Self {
        ApiSection {
            allow: vec![
                Cidr {
                    addr: IpAddr::V4([127, 0, 0, 0].into()),
                    prefix: 8,
                },
                Cidr::host(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)),
            ],
            max_connections: 64,
            max_connections_per_source: 8,
            header_timeout: Dur::from_ms(5_000),
            idle_timeout: Dur::from_ms(30_000),
            request_timeout: Dur::from_ms(10_000),
            socket_dir: std::path::PathBuf::from("/run/baton"),
            socket_mode: 0o660,
            socket_group: None,
            socket_role: ApiRole::Operator,
            derived_tokens: true,
            read_tokens_file: None,
            operator_tokens_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_ca_file: None,
            webui: super::web::WebUiSection::default(),
        }
    }
}

impl ApiSection {
    /// The Unix socket of `server` in cluster `cluster`, if sockets are on.
    pub fn socket_path(&self, cluster: &str, server: &str) -> Option<std::path::PathBuf> {
        (!self.socket_dir.as_os_str().is_empty())
            .then(|| self.socket_dir.join(format!("{cluster}-{server}.sock")))
    }

    /// Whether the API serves HTTPS (and every client must use it).
    pub fn tls(&self) -> bool {
        self.tls_cert_file.is_some()
    }

    /// `server`'s certificate and key files (`{server}` replaced), if TLS is on; relative
    /// paths are relative to the configuration file, as for the key file.
    pub fn tls_files(&self, server: &str) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
        let sub = |p: &std::path::Path| {
            std::path::PathBuf::from(p.to_string_lossy().replace(SERVER_PLACEHOLDER, server))
        };
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(c), Some(k)) => Some((sub(c), sub(k))),
            _ => None,
        }
    }
}

/// The check of one timeout, shared with `baton witness` (`what` names the key or flag).
pub fn check_timeout(what: &str, d: Dur) -> Result<(), String> {
    if d.ms() < MIN_TIMEOUT_MS || d.ms() > MAX_TIMEOUT_MS {
        return Err(format!(
            "{what} {d} is out of bounds: use between 100ms and 10m"
        ));
    }
    Ok(())
}

/// The check of the two caps, shared with `baton witness`.
pub fn check_caps(total: u32, per_source: u32) -> Result<(), (bool, String)> {
    if total == 0 || total > MAX_CONNECTIONS_LIMIT {
        return Err((
            true,
            format!("max_connections {total} is out of bounds: use between 1 and {MAX_CONNECTIONS_LIMIT}"),
        ));
    }
    if per_source == 0 || per_source > total {
        return Err((
            false,
            format!("max_connections_per_source {per_source} is out of bounds: use between 1 and max_connections ({total})"),
        ));
    }
    Ok(())
}

pub(super) fn validate(d: &mut Diags<'_>, api: &ApiSection) {
    if let Err((total, m)) = check_caps(api.max_connections, api.max_connections_per_source) {
        let key = if total {
            "max_connections"
        } else {
            "max_connections_per_source"
        };
        d.err(&[k("api"), k(key)], m);
    }
    for (key, v) in [
        ("header_timeout", api.header_timeout),
        ("idle_timeout", api.idle_timeout),
        ("request_timeout", api.request_timeout),
    ] {
        if let Err(m) = check_timeout(key, v) {
            d.err(&[k("api"), k(key)], m);
        }
    }
    if api.socket_mode > 0o777 {
        d.err(
            &[k("api"), k("socket_mode")],
            format!(
                "socket_mode {:o} is not a permission mode: use an octal number up to 0o777, e.g. 0o660",
                api.socket_mode
            ),
        );
    } else if api.socket_mode & 0o002 != 0 {
        d.err(
            &[k("api"), k("socket_mode")],
            format!(
                "socket_mode 0o{:03o} lets every local user connect as `{}`: remove write access for others (e.g. 0o660 with socket_group)",
                api.socket_mode,
                api.socket_role.as_str()
            ),
        );
    }
    if !api.socket_dir.as_os_str().is_empty() && api.socket_dir.is_relative() {
        d.err(
            &[k("api"), k("socket_dir")],
            format!(
                "socket_dir `{}` must be an absolute path (or \"\" for no socket)",
                api.socket_dir.display()
            ),
        );
    }
    validate_tls(d, api);
    if let Some(g) = &api.socket_group {
        let ok = !g.is_empty()
            && !g.starts_with('-')
            && g.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !ok {
            d.err(
                &[k("api"), k("socket_group")],
                format!("socket_group `{g}` is not a group name"),
            );
        }
    }
}

fn validate_tls(d: &mut Diags<'_>, api: &ApiSection) {
    match (&api.tls_cert_file, &api.tls_key_file) {
        (Some(_), None) => d.err(
            &[k("api"), k("tls_cert_file")],
            "tls_cert_file needs tls_key_file (the certificate's private key)",
        ),
        (None, Some(_)) => d.err(
            &[k("api"), k("tls_key_file")],
            "tls_key_file needs tls_cert_file (the certificate of the key)",
        ),
        _ => {}
    }
    if api.tls_ca_file.is_some() && api.tls_cert_file.is_none() {
        d.err(
            &[k("api"), k("tls_ca_file")],
            "tls_ca_file is only used with tls_cert_file and tls_key_file (the API serves plain HTTP without them)",
        );
    }
    for (key, p) in [
        ("tls_cert_file", &api.tls_cert_file),
        ("tls_key_file", &api.tls_key_file),
        ("tls_ca_file", &api.tls_ca_file),
    ] {
        let Some(p) = p else { continue };
        let text = p.to_string_lossy();
        let rest = text.replace(SERVER_PLACEHOLDER, "");
        if text.is_empty() {
            d.err(&[k("api"), k(key)], format!("{key} is empty"));
        } else if rest.contains('{') || rest.contains('}') {
            d.err(
                &[k("api"), k(key)],
                format!("{key} `{text}`: the only placeholder is {SERVER_PLACEHOLDER}"),
            );
        } else if key == "tls_ca_file" && rest.len() != text.len() {
            d.err(
                &[k("api"), k(key)],
                format!("{key} `{text}`: the CA is the same for every server; {SERVER_PLACEHOLDER} is for the certificate and key"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::THREE_SERVERS as BASE;
    use crate::config::{load_str, AnyKind, Level};

    fn net(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_parse_and_match() {
        assert!(net("10.0.0.0/16").contains("10.0.200.7".parse().unwrap()));
        assert!(!net("10.0.0.0/16").contains("10.1.0.1".parse().unwrap()));
        assert!(net("0.0.0.0/0").contains("203.0.113.9".parse().unwrap()));
        assert!(net("192.0.2.5").contains("192.0.2.5".parse().unwrap()));
        assert!(!net("192.0.2.5").contains("192.0.2.6".parse().unwrap()));
        // A dual-stack listener reports IPv4 peers as mapped IPv6 addresses.
        assert!(net("127.0.0.0/8").contains("::ffff:127.0.0.9".parse().unwrap()));
        assert!(net("fd00::/8").contains("fd12::1".parse().unwrap()));
        assert!(!net("fd00::/8").contains("10.0.0.1".parse().unwrap()));
        assert!(!net("10.0.0.0/8").contains("fd00::1".parse().unwrap()));
        assert_eq!(net("10.0.0.0/16").to_string(), "10.0.0.0/16");
        for bad in [
            "10.0.0.0/33",
            "10.0.0.1/16",
            "nonsense",
            "10.0.0.0/",
            "::/129",
            "10.0.0.0/+8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_allow_loopback_only() {
        let l = load_str("baton.toml", BASE, &AnyKind).unwrap();
        let a = &l.config.api;
        assert_eq!(a, &ApiSection::default());
        assert!(a
            .allow
            .iter()
            .any(|n| n.contains("127.0.0.1".parse().unwrap())));
        assert!(a.allow.iter().any(|n| n.contains("::1".parse().unwrap())));
        assert!(!a
            .allow
            .iter()
            .any(|n| n.contains("10.9.9.9".parse().unwrap())));
    }

    #[test]
    fn keys_load_and_bad_values_name_file_line_and_key() {
        let text = format!(
            "{BASE}\n[api]\nallow = [\"10.0.0.0/16\", \"127.0.0.1/32\"]\nmax_connections = 100\nmax_connections_per_source = 4\nheader_timeout = \"2s\"\nidle_timeout = \"20s\"\nrequest_timeout = \"3s\"\n"
        );
        let l = load_str("baton.toml", &text, &AnyKind).unwrap();
        assert_eq!(l.config.api.max_connections, 100);
        assert_eq!(
            l.config.api.allow,
            vec![net("10.0.0.0/16"), net("127.0.0.1/32")]
        );
        assert_eq!(l.config.api.header_timeout, Dur::from_ms(2_000));
        assert_eq!(
            l.config.api.socket_path("c", "a").unwrap(),
            std::path::Path::new("/run/baton/c-a.sock")
        );

        let text = format!(
            "{BASE}\n[api]\nsocket_dir = \"/var/run/b\"\nsocket_mode = 0o640\nsocket_group = \"baton-ops\"\nsocket_role = \"read\"\nderived_tokens = false\nread_tokens_file = \"/etc/baton/read.tokens\"\n"
        );
        let a = load_str("baton.toml", &text, &AnyKind).unwrap().config.api;
        assert_eq!(a.socket_mode, 0o640);
        assert_eq!(a.socket_group.as_deref(), Some("baton-ops"));
        assert_eq!(a.socket_role, ApiRole::Read);
        assert!(!a.derived_tokens);
        assert_eq!(
            a.socket_path("c", "b").unwrap(),
            std::path::Path::new("/var/run/b/c-b.sock")
        );
        let tls = format!("{BASE}\n[api]\ntls_cert_file = \"tls/{{server}}.crt\"\ntls_key_file = \"/etc/baton/tls/{{server}}.key\"\ntls_ca_file = \"tls/ca.crt\"\n");
        let a = load_str("baton.toml", &tls, &AnyKind).unwrap().config.api;
        assert!(a.tls());
        assert_eq!(
            a.tls_files("b").unwrap(),
            ("tls/b.crt".into(), "/etc/baton/tls/b.key".into())
        );
        assert!(!ApiSection::default().tls());
        assert_eq!(ApiSection::default().tls_files("b"), None);
        let off = format!("{BASE}\n[api]\nsocket_dir = \"\"\n");
        let a = load_str("baton.toml", &off, &AnyKind).unwrap().config.api;
        assert_eq!(a.socket_path("c", "a"), None);

        let cases = [
            ("allow = [\"10.0.0.0/40\"]", "api.allow", "prefix length"),
            ("allow = [\"10.0.0.1/8\"]", "api.allow", "host bits"),
            (
                "max_connections = 0",
                "api.max_connections",
                "out of bounds",
            ),
            (
                "max_connections_per_source = 0",
                "api.max_connections_per_source",
                "out of bounds",
            ),
            (
                "max_connections = 4\nmax_connections_per_source = 5",
                "api.max_connections_per_source",
                "out of bounds",
            ),
            (
                "header_timeout = \"0s\"",
                "api.header_timeout",
                "out of bounds",
            ),
            ("idle_timeout = \"2h\"", "api.idle_timeout", "out of bounds"),
            (
                "request_timeout = \"10ms\"",
                "api.request_timeout",
                "out of bounds",
            ),
            ("max_conections = 3", "api", "max_conections"),
            ("socket_mode = 0o666", "api.socket_mode", "every local user"),
            (
                "socket_mode = 0o1777",
                "api.socket_mode",
                "not a permission mode",
            ),
            ("socket_dir = \"run/baton\"", "api.socket_dir", "absolute"),
            (
                "socket_group = \"-x\"",
                "api.socket_group",
                "not a group name",
            ),
            ("socket_role = \"admin\"", "api.socket_role", "admin"),
            (
                "tls_cert_file = \"c.crt\"",
                "api.tls_cert_file",
                "needs tls_key_file",
            ),
            (
                "tls_key_file = \"c.key\"",
                "api.tls_key_file",
                "needs tls_cert_file",
            ),
            (
                "tls_ca_file = \"ca.crt\"",
                "api.tls_ca_file",
                "only used with",
            ),
            (
                "tls_cert_file = \"{host}.crt\"\ntls_key_file = \"k\"",
                "api.tls_cert_file",
                "only placeholder",
            ),
            (
                "tls_cert_file = \"c\"\ntls_key_file = \"k\"\ntls_ca_file = \"{server}.ca\"",
                "api.tls_ca_file",
                "same for every server",
            ),
        ];
        for (line, key, words) in cases {
            let text = format!("{BASE}\n[api]\n{line}\n");
            let e = match load_str("baton.toml", &text, &AnyKind) {
                Ok(_) => panic!("`{line}` loaded"),
                Err(e) => e,
            };
            let errs: Vec<_> = e
                .diagnostics
                .iter()
                .filter(|d| d.level == Level::Error)
                .collect();
            assert_eq!(errs.len(), 1, "{line}: {errs:?}");
            let d = errs[0];
            assert_eq!(d.file, "baton.toml");
            assert!(d.key.starts_with(key), "{line}: key {}", d.key);
            assert!(d.message.contains(words), "{line}: {}", d.message);
            // The line of the [api] table or of the key itself, never line 0.
            let api_line = text.lines().position(|l| l == "[api]").unwrap() + 1;
            assert!(d.line >= api_line, "{line}: line {} < {api_line}", d.line);
        }
    }
}
