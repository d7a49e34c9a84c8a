//! The floating-ip driver against real interfaces, inside network namespaces this test
//! creates (two namespaces joined by a veth pair; no address leaves them).

use std::process::Command;
use std::time::Duration;

use baton_providers::local::floating_ip::FloatingIpDriver;
use baton_providers::{CheckOutcome, ResourceDriver};

use crate::{ctx, table};

struct Netns {
    names: Vec<String>,
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn must(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn driver(ns: &str, params: &str) -> FloatingIpDriver {
    FloatingIpDriver::from_params(&table(params))
        .unwrap()
        .with_netns(ns)
}

#[tokio::test]
async fn floating_ip_in_network_namespaces() {
    if !is_root() {
        baton_tests::skip::skip(
            "floating_ip_in_network_namespaces",
            "needs root to create network namespaces",
        );
        return;
    }
    let pid = std::process::id();
    let a = format!("batonp-{pid}-a");
    let b = format!("batonp-{pid}-b");
    if !sh(&["ip", "netns", "add", &a]) {
        baton_tests::skip::skip(
            "floating_ip_in_network_namespaces",
            "`ip netns add` does not work here",
        );
        return;
    }
    let _guard = Netns {
        names: vec![a.clone(), b.clone()],
    };
    must(&["ip", "netns", "add", &b]);
    must(&[
        "ip", "-n", &a, "link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns", &b,
    ]);
    for (ns, dev, addr) in [(&a, "v0", "10.99.0.1/24"), (&b, "v1", "10.99.0.2/24")] {
        must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        must(&["ip", "-n", ns, "link", "set", dev, "up"]);
        must(&["ip", "-n", ns, "addr", "add", addr, "dev", dev]);
    }
    let t = Duration::from_secs(10);
    let c = ctx("node-1", 1, t);
    let arping = baton_providers::process::find_in_path("arping").is_some();

    // Device found from the subnet; activate, check, idempotence, deactivate.
    let d = driver(&a, "ip = '10.99.0.10'\narp_count = 1");
    assert_eq!(d.check(&c).await.unwrap(), CheckOutcome::Inactive);
    d.activate(&c).await.unwrap();
    assert_eq!(d.check(&c).await.unwrap(), CheckOutcome::Active);
    d.activate(&c).await.unwrap();
    let shown = Command::new("ip")
        .args(["-n", &a, "-o", "addr", "show", "dev", "v0"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&shown.stdout).contains("10.99.0.10/32"));
    // The other namespace reaches it over the veth.
    if baton_providers::process::find_in_path("ping").is_some() {
        assert!(sh(&[
            "ip",
            "netns",
            "exec",
            &b,
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            "-n",
            "10.99.0.10"
        ]));
    }
    // Device down: degraded.
    must(&["ip", "-n", &a, "link", "set", "v0", "down"]);
    assert!(matches!(d.check(&c).await.unwrap(), CheckOutcome::Degraded(m) if m.contains("down")));
    must(&["ip", "-n", &a, "link", "set", "v0", "up"]);
    d.deactivate(&c).await.unwrap();
    assert_eq!(d.check(&c).await.unwrap(), CheckOutcome::Inactive);
    d.deactivate(&c).await.unwrap();

    // Deactivation stops the gratuitous ARP still being sent after a recent activation:
    // a server that gave the address up must never announce it again.
    if arping {
        let d = driver(&a, "ip = '10.99.0.11'\narp_count = 8");
        let announcing = || sh(&["pgrep", "-f", "arping -U -c 8 -I v0 10.99.0.11"]);
        let eventually = |want: bool| async move {
            for _ in 0..60 {
                if announcing() == want {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        };
        d.activate(&c).await.unwrap();
        assert!(
            eventually(true).await,
            "gratuitous ARP runs after activation"
        );
        d.deactivate(&c).await.unwrap();
        assert!(
            eventually(false).await,
            "gratuitous ARP still running after deactivation"
        );
    }

    // An address another host already answers for is refused (IPv4, needs arping).
    must(&["ip", "-n", &b, "addr", "add", "10.99.0.20/24", "dev", "v1"]);
    let dup = driver(&a, "ip = '10.99.0.20'\ndevice = 'v0'\narp_count = 0");
    if arping {
        let e = dup.activate(&c).await.unwrap_err();
        assert!(
            e.to_string()
                .starts_with("address 10.99.0.20 is already in use on the network"),
            "{e}"
        );
        assert_eq!(dup.check(&c).await.unwrap(), CheckOutcome::Inactive);
    } else {
        eprintln!("arping is not installed: duplicate detection not tested");
    }
    let forced = driver(
        &a,
        "ip = '10.99.0.20'\ndevice = 'v0'\narp_count = 0\ncheck_duplicate = false",
    );
    forced.activate(&c).await.unwrap();
    assert_eq!(forced.check(&c).await.unwrap(), CheckOutcome::Active);
    forced.deactivate(&c).await.unwrap();

    // A configured device that does not exist.
    let bad = driver(&a, "ip = '10.99.0.30'\ndevice = 'nope0'");
    let e = bad.activate(&c).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "device `nope0` does not exist on this server"
    );

    // IPv6 with an explicit prefix.
    let v6 = driver(&a, "ip = '2001:db8:99::10'\nprefix = 64\ndevice = 'v0'");
    v6.activate(&c).await.unwrap();
    assert_eq!(v6.check(&c).await.unwrap(), CheckOutcome::Active);
    v6.deactivate(&c).await.unwrap();
    assert_eq!(v6.check(&c).await.unwrap(), CheckOutcome::Inactive);
}
