//! The keys of a `mirror-disk` resource, and what they resolve to on one server.
//!
//! ```toml
//! [[group.resource]]
//! name = "data"
//! kind = "mirror-disk"
//! device = "/var/lib/baton/data.img"   # backing store: a block device or a file
//! size = "10GiB"                        # created sparse when the file does not exist
//! mode = "sync"                         # or "async"
//! port = 7790                           # mirror traffic on interconnect 0's address
//! [group.resource.server.node-2]
//! device = "/dev/nvme1n1"
//! ```
//!
//! A mirror joins exactly two servers: the group's. A group with more servers is refused
//! by `config check` (three-way mirroring is not supported; a third server can still
//! vote in the cluster without being in the group).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use baton_providers::params::{duration, parse_params};
use baton_providers::{ParamError, Params};
use serde::{Deserialize, Deserializer};

/// `mode`: when a write is acknowledged to the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// When both servers have it (FLUSH and FUA: when both have made it durable).
    Sync,
    /// After the local write; the peer follows through a bounded queue.
    Async,
}

/// `compression` of async sending and of resync (sync writes go uncompressed: the
/// latency matters more than the bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CompressionKind {
    None,
    Lz4,
    Zstd,
}

/// `on_peer_loss`, sync mode: what writes do while the peer is away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerLoss {
    /// After `ack_timeout`, go on alone (writes marked out of sync, the data generation
    /// moves on so the peer knows it is behind) while this server holds the group with
    /// quorum; without quorum, writes wait (fencing).
    Continue,
    /// Writes wait until the peer is back (or the group moves): no acknowledged write
    /// exists that the peer does not have, at the price of availability.
    Suspend,
}

/// The keys of a `mirror-disk` resource (after the server's overrides are merged in).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorDiskParams {
    /// Required. The backing store on this server: a block device or a regular file
    /// (override per server with `[group.resource.server.NAME] device = ...`).
    pub device: PathBuf,
    /// The volume's size (`"10GiB"`, `"512MiB"`, bytes as an integer). A file that does
    /// not exist is created sparse with this size; an existing store must be at least
    /// this big. Default: the store's size (then it must exist).
    #[serde(default, deserialize_with = "option_size")]
    pub size: Option<u64>,
    /// Where the metadata (generations, dirty bitmap) lives. Default
    /// `STATE_DIR/mirror/GROUP.RESOURCE.meta`.
    #[serde(default)]
    pub metadata: Option<PathBuf>,
    /// `sync` (default) or `async`.
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// Sync mode: `continue` (default) or `suspend` while the peer is away.
    #[serde(default = "default_peer_loss")]
    pub on_peer_loss: PeerLoss,
    /// This server's mirror address (`IP:PORT`, usually set per server). Default: the
    /// address of interconnect `interconnect` with `port`.
    #[serde(default)]
    pub address: Option<SocketAddr>,
    /// The interconnect whose address carries mirror traffic when `address` is not set
    /// (0-based). Default 0.
    #[serde(default)]
    pub interconnect: usize,
    /// Mirror port when `address` is not set. Default 7790.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Where the application's NBD client connects on the active server: a Unix socket
    /// path. Default `STATE_DIR/mirror/GROUP.RESOURCE.nbd`. Exclusive with `nbd_address`.
    #[serde(default)]
    pub nbd_socket: Option<PathBuf>,
    /// A TCP address for the NBD client instead of the Unix socket (loopback advised:
    /// NBD itself has no authentication).
    #[serde(default)]
    pub nbd_address: Option<SocketAddr>,
    /// The kernel NBD device to attach on activation (`/dev/nbd0`); a filesystem step
    /// (an `exec` or `systemd` mount) follows in the group. Default: none (the
    /// application speaks NBD itself, like qemu).
    #[serde(default)]
    pub nbd_device: Option<PathBuf>,
    /// `none`, `lz4` (default) or `zstd`: async sending and resync.
    #[serde(default = "default_compression")]
    pub compression: CompressionKind,
    /// zstd level (1 fastest .. 19). Default 1.
    #[serde(default = "default_zstd_level")]
    pub zstd_level: i32,
    /// Mirror traffic is authenticated and encrypted, always; `true` is the only value.
    #[serde(default = "default_true")]
    pub encryption: bool,
    /// Bytes per second for resync and async catch-up (`"100MiB"`); 0 = no limit
    /// (default). Synchronous writes are never throttled.
    #[serde(default, deserialize_with = "size")]
    pub bandwidth_limit: u64,
    /// Async mode: bytes of writes waiting for the peer before regions are marked out of
    /// sync instead (default `"64MiB"`).
    #[serde(default = "default_queue", deserialize_with = "size")]
    pub queue_size: u64,
    /// Bytes per bit of the dirty bitmap (power of two, 4KiB..64MiB). Default `"64KiB"`.
    #[serde(default = "default_region", deserialize_with = "size")]
    pub region_size: u64,
    /// Connecting to the peer and the link's handshake. Default `5s`.
    #[serde(default = "default_connect", deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// How long a write waits for the peer's acknowledgement before the peer counts as
    /// away. Default `5s`.
    #[serde(default = "default_ack", deserialize_with = "duration")]
    pub ack_timeout: Duration,
}

fn default_mode() -> Mode {
    Mode::Sync
}
fn default_peer_loss() -> PeerLoss {
    PeerLoss::Continue
}
fn default_port() -> u16 {
    7790
}
fn default_compression() -> CompressionKind {
    CompressionKind::Lz4
}
fn default_zstd_level() -> i32 {
    1
}
fn default_true() -> bool {
    true
}
fn default_queue() -> u64 {
    64 << 20
}
fn default_region() -> u64 {
    64 << 10
}
fn default_connect() -> Duration {
    Duration::from_secs(5)
}
fn default_ack() -> Duration {
    Duration::from_secs(5)
}

/// Parse a byte size: an integer, or a number with a unit (`B`, `KiB`, `MiB`, `GiB`,
/// `TiB`, and the decimal `KB`, `MB`, `GB`, `TB`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let bad = || format!("invalid size '{s}': use a number and a unit, like 512MiB or 10GiB");
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "TiB" | "T" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => return Err(bad()),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size '{s}' is too large"))
}

struct SizeVisitor;

impl serde::de::Visitor<'_> for SizeVisitor {
    type Value = u64;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a size like \"512MiB\" or a number of bytes")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<u64, E> {
        parse_size(v).map_err(E::custom)
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom(format!("invalid size {v}: must not be negative")))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }
}

fn size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(SizeVisitor)
}

fn option_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    d.deserialize_any(SizeVisitor).map(Some)
}

fn key_error(key: &str, msg: impl Into<String>) -> ParamError {
    ParamError::new(Some(key.to_string()), msg)
}

impl MirrorDiskParams {
    /// Parse and check the keys of one server's view of the resource.
    pub fn from_params(params: &Params) -> Result<MirrorDiskParams, ParamError> {
        let p: MirrorDiskParams = parse_params(params)?;
        if p.device.as_os_str().is_empty() {
            return Err(key_error(
                "device",
                "`device` must name a file or block device",
            ));
        }
        if !p.device.is_absolute() {
            return Err(key_error(
                "device",
                format!(
                    "`device` must be an absolute path (got `{}`)",
                    p.device.display()
                ),
            ));
        }
        if let Some(s) = p.size {
            if s == 0 || s % 4096 != 0 {
                return Err(key_error(
                    "size",
                    format!("`size` must be a positive multiple of 4KiB (got {s} bytes)"),
                ));
            }
        }
        if !p.encryption {
            return Err(key_error(
                "encryption",
                "mirror traffic is always authenticated and encrypted (`encryption = false` is not supported; its cost is measured in bench/mirror.sh)",
            ));
        }
        if !(4096..=(64 << 20)).contains(&p.region_size) || !p.region_size.is_power_of_two() {
            return Err(key_error(
                "region_size",
                format!(
                    "`region_size` must be a power of two from 4KiB to 64MiB (got {} bytes)",
                    p.region_size
                ),
            ));
        }
        if p.queue_size < (1 << 20) {
            return Err(key_error(
                "queue_size",
                "`queue_size` must be at least 1MiB",
            ));
        }
        if p.nbd_socket.is_some() && p.nbd_address.is_some() {
            return Err(key_error(
                "nbd_address",
                "set `nbd_socket` or `nbd_address`, not both",
            ));
        }
        if !(1..=19).contains(&p.zstd_level) {
            return Err(key_error("zstd_level", "`zstd_level` must be 1 to 19"));
        }
        for (key, d) in [
            ("connect_timeout", p.connect_timeout),
            ("ack_timeout", p.ack_timeout),
        ] {
            if d.is_zero() || d > Duration::from_secs(600) {
                return Err(key_error(key, format!("`{key}` must be from 1ms to 10m")));
            }
        }
        if p.port == 0 && p.address.is_none() {
            return Err(key_error("port", "`port` must not be 0"));
        }
        Ok(p)
    }
}

/// Checks that need the group: a mirror joins exactly two servers.
pub fn check_group(servers: &[String]) -> Result<(), ParamError> {
    if servers.len() != 2 {
        return Err(ParamError::new(
            None,
            format!(
                "a mirror-disk resource needs a group of exactly two servers (this group has {}: {}); three-way mirroring is not supported, other servers can still vote in the cluster",
                servers.len(),
                servers.join(", ")
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Params {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_and_sizes() {
        let p = MirrorDiskParams::from_params(&table(r#"device = "/d""#)).unwrap();
        assert_eq!(p.mode, Mode::Sync);
        assert_eq!(p.region_size, 65536);
        assert_eq!(p.port, 7790);
        assert_eq!(parse_size("10GiB").unwrap(), 10 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("10 GiB").is_err());
        assert!(parse_size("ten").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }

    #[test]
    fn bad_keys_name_the_key() {
        for (text, key) in [
            (r#"device = "rel/path""#, "device"),
            ("device = \"/d\"\nsize = \"1000\"", "size"),
            ("device = \"/d\"\nmode = \"fast\"", "mode"),
            ("device = \"/d\"\nencryption = false", "encryption"),
            ("device = \"/d\"\nregion_size = \"3KiB\"", "region_size"),
            ("device = \"/d\"\nack_timeout = \"0s\"", "ack_timeout"),
            (
                "device = \"/d\"\nnbd_socket = \"/s\"\nnbd_address = \"127.0.0.1:1\"",
                "nbd_address",
            ),
            ("device = \"/d\"\ncompresion = \"lz4\"", "compresion"),
        ] {
            let e = MirrorDiskParams::from_params(&table(text)).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{text}: {e:?}");
        }
    }

    #[test]
    fn two_servers_only() {
        assert!(check_group(&["a".into(), "b".into()]).is_ok());
        let e = check_group(&["a".into(), "b".into(), "c".into()]).unwrap_err();
        assert!(e.message.contains("exactly two servers"), "{}", e.message);
    }
}
