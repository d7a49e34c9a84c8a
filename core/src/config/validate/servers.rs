//! `[[server]]`: names, interconnect and API addresses, priorities.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use super::check_name;
use crate::config::diagnostics::{k, Diags, KeyPath, Seg};
use crate::config::raw::RawServer;
use crate::config::{Server, LOCAL_SERVER_TARGET};

/// The servers in file order (every one, even with errors) and the set of their names.
pub(super) fn validate(
    d: &mut Diags<'_>,
    raw: &[RawServer],
    default_port: u16,
) -> (Vec<Server>, BTreeSet<String>) {
    let mut servers = Vec::new();
    let mut names = BTreeSet::new();
    let mut addrs: BTreeMap<SocketAddr, String> = BTreeMap::new();
    if raw.is_empty() {
        d.err(&[k("server")], "no `[[server]]` is defined: a cluster needs at least one server (two or more for failover)");
    }
    let mut npaths: Option<usize> = None;
    for (i, s) in raw.iter().enumerate() {
        let sp = [k("server"), Seg::Index(i)];
        let mut p = sp.to_vec();
        p.push(k("name"));
        check_name(d, &p, "server", &s.name);
        if s.name == LOCAL_SERVER_TARGET {
            d.err(&p, format!("`{LOCAL_SERVER_TARGET}` is reserved"));
        }
        if !names.insert(s.name.clone()) {
            d.err(&p, format!("server name `{}` is used twice", s.name));
        }
        let ics = interconnects(d, &sp, s, default_port, &mut addrs);
        match npaths {
            None => npaths = Some(s.interconnects.len()),
            Some(n) if n != s.interconnects.len() => {
                let mut p = sp.to_vec();
                p.push(k("interconnects"));
                d.err(&p, format!("server `{}` has {} interconnects but the first server has {n}: every server needs one address on each interconnect network, in the same order", s.name, s.interconnects.len()));
            }
            _ => {}
        }
        let api = api_address(d, &sp, s, &servers);
        let priority = priority(d, &sp, i, s, &servers);
        servers.push(Server {
            name: s.name.clone(),
            priority,
            zone: s.zone.clone(),
            interconnects: ics,
            api,
        });
    }
    (servers, names)
}

/// The server's interconnect addresses (those that parse), each used by one server only.
fn interconnects(
    d: &mut Diags<'_>,
    sp: &[Seg],
    s: &RawServer,
    default_port: u16,
    addrs: &mut BTreeMap<SocketAddr, String>,
) -> Vec<SocketAddr> {
    let mut ics = Vec::new();
    if s.interconnects.is_empty() {
        let mut p = sp.to_vec();
        p.push(k("interconnects"));
        d.err(&p, format!("server `{}` has no interconnects: give at least one address (two on separate networks are recommended)", s.name));
    }
    for (j, ic) in s.interconnects.iter().enumerate() {
        let mut p = sp.to_vec();
        p.push(k("interconnects"));
        p.push(Seg::Index(j));
        match parse_interconnect(ic, default_port) {
            Ok(sa) => {
                if let Some(other) = addrs.insert(sa, s.name.clone()) {
                    d.err(
                        &p,
                        format!("interconnect address {sa} is also used by server `{other}`"),
                    );
                }
                ics.push(sa);
            }
            Err(m) => d.err(&p, m),
        }
    }
    ics
}

fn parse_interconnect(s: &str, default_port: u16) -> Result<SocketAddr, String> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(sa);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port));
    }
    Err(format!(
        "`{s}` is not an IP address (write `10.0.110.10` or `10.0.110.10:7421`; host names are not allowed for interconnects)"
    ))
}

/// The API address (`0.0.0.0:0` when it does not parse), not shared with an earlier server.
fn api_address(d: &mut Diags<'_>, sp: &[Seg], s: &RawServer, earlier: &[Server]) -> SocketAddr {
    let mut pa: KeyPath = sp.to_vec();
    pa.push(k("api"));
    let api = match s.api.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            d.err(
                &pa,
                format!(
                    "api `{}` is not an address with a port, like `10.0.110.10:7420`",
                    s.api
                ),
            );
            SocketAddr::from(([0, 0, 0, 0], 0))
        }
    };
    if let Some(other) = earlier
        .iter()
        .find(|o: &&Server| o.api == api && api.port() != 0)
    {
        d.err(
            &pa,
            format!("api address {api} is also used by server `{}`", other.name),
        );
    }
    api
}

/// The priority (default: the position in the file, 1-based), not shared with an earlier
/// server.
fn priority(d: &mut Diags<'_>, sp: &[Seg], i: usize, s: &RawServer, earlier: &[Server]) -> u32 {
    let priority = s
        .priority
        .unwrap_or(u32::try_from(i + 1).unwrap_or(u32::MAX));
    if let Some(other) = earlier.iter().find(|o: &&Server| o.priority == priority) {
        let mut p = sp.to_vec();
        p.push(k(if s.priority.is_some() {
            "priority"
        } else {
            "name"
        }));
        d.err(
            &p,
            format!(
                "priority {priority} is also the priority of server `{}`{}: priorities must differ (two servers holding a group after a partition keep the one with the lower value)",
                other.name,
                if s.priority.is_none() { " (a server without `priority` gets its position in the file)" } else { "" }
            ),
        );
    }
    priority
}
