//! Two real `baton agent` processes on `127.0.N.x` against moto server, for the AWS
//! scenarios: [`AwsWorld::create`] builds a VPC in the emulator (two subnets in two
//! zones, an ENI per server, two route tables with a route for the VIP, an Elastic IP,
//! a private hosted zone) with boto3 from the moto venv, and [`AwsCluster::start`]
//! runs the two agents of the groups (`node-1`, `node-2`) and a third, vote-only agent
//! (`node-3`, in no group: a two-server cluster needs a third vote to fail over after
//! a crash) with `[aws] endpoint_url` pointing at the emulator and the test
//! credentials of [`crate::moto::aws_env`] in their environment. Dropping the cluster
//! kills the agents (and prints their logs when the test is failing).

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Deserialize;

use crate::cluster::{api_token, run_cli, CliOut};
use crate::model::{ClusterStatus, Event};
use crate::moto::{aws_env, python, Moto};
use crate::wait_until;

/// The VIP of every scenario (outside the VPC's 10.0.0.0/16).
pub const VIP: &str = "10.1.0.20";
/// The record name of the DNS scenarios.
pub const RECORD: &str = "db.example.internal.";

/// boto3 helper run with the moto venv's python: `setup`, `routes`, `eip`, `record`,
/// `replace-route`. Prints JSON.
const HELPER: &str = r#"
import json, sys, boto3
ep, cmd, args = sys.argv[1], sys.argv[2], sys.argv[3:]
kw = dict(endpoint_url=ep, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
ec2 = boto3.client("ec2", **kw)
r53 = boto3.client("route53", **kw)
VIP = "10.1.0.20/32"
if cmd == "setup":
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    out = {"vpc": vpc, "enis": [], "ips": [], "rtbs": []}
    for cidr, az in (("10.0.110.0/24", "us-east-1a"), ("10.0.120.0/24", "us-east-1b")):
        sn = ec2.create_subnet(VpcId=vpc, CidrBlock=cidr, AvailabilityZone=az)["Subnet"]["SubnetId"]
        ni = ec2.create_network_interface(SubnetId=sn)["NetworkInterface"]
        ec2.modify_network_interface_attribute(NetworkInterfaceId=ni["NetworkInterfaceId"], SourceDestCheck={"Value": False})
        out["enis"].append(ni["NetworkInterfaceId"])
        out["ips"].append(ni["PrivateIpAddress"])
    for _ in range(2):
        rt = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
        ec2.create_route(RouteTableId=rt, DestinationCidrBlock=VIP, NetworkInterfaceId=out["enis"][0])
        out["rtbs"].append(rt)
    out["alloc"] = ec2.allocate_address(Domain="vpc")["AllocationId"]
    out["zone"] = r53.create_hosted_zone(Name="example.internal.", CallerReference="baton-it")["HostedZone"]["Id"].split("/")[-1]
    print(json.dumps(out))
elif cmd == "routes":
    rts = ec2.describe_route_tables(RouteTableIds=args)["RouteTables"]
    res = {}
    for rt in rts:
        r = [x for x in rt["Routes"] if x.get("DestinationCidrBlock") == VIP]
        res[rt["RouteTableId"]] = r[0].get("NetworkInterfaceId") if r else None
    print(json.dumps(res))
elif cmd == "eip":
    a = ec2.describe_addresses(AllocationIds=args)["Addresses"][0]
    print(json.dumps(a.get("NetworkInterfaceId") or None))
elif cmd == "record":
    sets = r53.list_resource_record_sets(HostedZoneId=args[0])["ResourceRecordSets"]
    v = [[x["Value"] for x in s["ResourceRecords"]] for s in sets if s["Name"] == args[1] and s["Type"] == "A"]
    print(json.dumps(v[0] if v else None))
elif cmd == "replace-route":
    ec2.replace_route(RouteTableId=args[0], DestinationCidrBlock=VIP, NetworkInterfaceId=args[1])
    print("null")
"#;

/// The emulator and the AWS objects every scenario uses.
#[derive(Debug, Clone, Deserialize)]
pub struct World {
    pub vpc: String,
    /// ENI of node-1 (us-east-1a), node-2 (us-east-1b).
    pub enis: Vec<String>,
    pub ips: Vec<String>,
    pub rtbs: Vec<String>,
    pub alloc: String,
    pub zone: String,
}

/// moto plus the objects in it.
pub struct AwsWorld {
    pub moto: Moto,
    pub w: World,
}

fn helper(endpoint: &str, args: &[&str]) -> Result<serde_json::Value, String> {
    let py = python().ok_or("moto venv missing")?;
    let out = Command::new(py)
        .arg("-c")
        .arg(HELPER)
        .arg(endpoint)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run the boto3 helper: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "boto3 helper {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("helper output: {e}"))
}

impl AwsWorld {
    /// Start moto and build the VPC; `None` when moto is not installed (skipped).
    pub fn create() -> Option<AwsWorld> {
        let moto = Moto::start()?;
        let v = helper(&moto.endpoint, &["setup"]).unwrap_or_else(|e| panic!("{e}"));
        let w: World = serde_json::from_value(v).expect("setup output");
        Some(AwsWorld { moto, w })
    }

    /// Route table -> ENI the VIP route points at.
    pub fn routes(&self) -> Result<Vec<(String, Option<String>)>, String> {
        let mut args = vec!["routes"];
        args.extend(self.w.rtbs.iter().map(String::as_str));
        let v = helper(&self.moto.endpoint, &args)?;
        let m: std::collections::BTreeMap<String, Option<String>> =
            serde_json::from_value(v).map_err(|e| e.to_string())?;
        Ok(m.into_iter().collect())
    }

    /// Wait until every VIP route points at `eni`.
    pub fn wait_routes(&self, eni: &str, timeout: Duration) {
        wait_until(&format!("every VIP route points at {eni}"), timeout, || {
            let r = self.routes()?;
            if r.iter().all(|(_, e)| e.as_deref() == Some(eni)) {
                Ok(())
            } else {
                Err(format!("{r:?}"))
            }
        });
    }

    /// The ENI the Elastic IP is associated with.
    pub fn eip(&self) -> Result<Option<String>, String> {
        let v = helper(&self.moto.endpoint, &["eip", &self.w.alloc])?;
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    /// The values of the A record `RECORD`.
    pub fn record(&self) -> Result<Option<Vec<String>>, String> {
        let v = helper(&self.moto.endpoint, &["record", &self.w.zone, RECORD])?;
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    pub fn replace_route(&self, rtb: &str, eni: &str) {
        helper(&self.moto.endpoint, &["replace-route", rtb, eni]).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// One agent.
pub struct AwsNode {
    pub name: String,
    pub api: SocketAddr,
    pub log: PathBuf,
    pub state_dir: PathBuf,
    child: Option<Child>,
}

/// Three agents (two for the groups, one vote) running a configuration with the given
/// groups and monitors. Monitors need values for node-3 too (common values do).
pub struct AwsCluster {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub nodes: Vec<AwsNode>,
    pub bin: PathBuf,
    pub token: String,
    endpoint: String,
    _tmp: tempfile::TempDir,
}

fn addr(net: u8, server: usize, port: u16) -> SocketAddr {
    SocketAddr::from((
        Ipv4Addr::new(127, 0, net, 10 + u8::try_from(server).unwrap_or(0)),
        port,
    ))
}

fn pick_port(net: u8) -> u16 {
    let mut p = 20_000
        + u16::try_from((std::process::id() * 53 + u32::from(net) * 97) % 18_000).unwrap_or(0);
    p &= !1;
    for _ in 0..200 {
        if (1..=2).all(|s| {
            TcpListener::bind(addr(net, s, p)).is_ok()
                && UdpSocket::bind(addr(net, s, p + 1)).is_ok()
        }) {
            return p;
        }
        p += 2;
    }
    panic!("no free port pair on 127.0.{net}.x");
}

fn tail(path: &std::path::Path, n: usize) -> String {
    let t = std::fs::read_to_string(path).unwrap_or_default();
    let l: Vec<&str> = t.lines().collect();
    l[l.len().saturating_sub(n)..].join("\n")
}

impl AwsCluster {
    /// `body` is the TOML of the groups and monitors (group `web` on node-1, node-2).
    pub fn start(world: &AwsWorld, name: &str, net: u8, body: &str) -> AwsCluster {
        let bin = crate::bin::baton_bin();
        let tmp = tempfile::Builder::new()
            .prefix(&format!("baton-aws-{name}-"))
            .tempdir()
            .expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let key = dir.join("cluster.key");
        run_cli(&bin, &["keygen", &key.to_string_lossy()]).ok("baton keygen");
        let port = pick_port(net);
        let mut text = format!(
            r#"[cluster]
name = "aws-{name}"
key_file = "cluster.key"

[heartbeat]
interval = "100ms"
timeout = "1s"

{safe}
[aws]
region = "us-east-1"
endpoint_url = "{ep}"
call_timeout = "3s"
max_attempts = 4
imds = false
"#,
            ep = world.moto.endpoint,
            safe = crate::config::host_safe_sections(&dir, "20s", ""),
        );
        for s in 1..=3 {
            text.push_str(&format!(
                "\n[[server]]\nname = \"node-{s}\"\nzone = \"{}\"\ninterconnects = [\"{}\"]\napi = \"{}\"\n",
                ["us-east-1a", "us-east-1b", "us-east-1c"][s - 1],
                addr(net, s, port + 1),
                addr(net, s, port)
            ));
        }
        text.push('\n');
        text.push_str(body);
        let config = dir.join("baton.toml");
        std::fs::write(&config, &text).expect("write config");
        run_cli(&bin, &["config", "check", &config.to_string_lossy()]).ok("baton config check");
        let nodes = (1..=3)
            .map(|s| AwsNode {
                name: format!("node-{s}"),
                api: addr(net, s, port),
                log: dir.join(format!("node-{s}.log")),
                state_dir: dir.join(format!("state-{s}")),
                child: None,
            })
            .collect();
        let mut c = AwsCluster {
            token: api_token(&key),
            dir,
            config,
            nodes,
            bin,
            endpoint: world.moto.endpoint.clone(),
            _tmp: tmp,
        };
        for i in 0..3 {
            c.spawn(i);
        }
        c
    }

    fn idx(&self, server: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == server)
            .expect("known server")
    }

    fn spawn(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)
            .expect("log");
        let _ = writeln!(log, "=== harness: starting agent {} ===", n.name);
        let log2 = log.try_clone().expect("log handle");
        let mut cmd = Command::new(&self.bin);
        cmd.args(["agent", "--config"])
            .arg(&self.config)
            .args(["--server", &n.name, "--state-dir"])
            .arg(&n.state_dir)
            .env_remove("BATON_CONFIG")
            .env_remove("BATON_SERVER")
            .env("BATON_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        for (k, v) in aws_env(&self.endpoint) {
            cmd.env(k, v);
        }
        n.child = Some(cmd.spawn().expect("start agent"));
    }

    /// Start `server`'s agent again (same state directory).
    pub fn restart(&mut self, server: &str) {
        let i = self.idx(server);
        self.spawn(i);
    }

    /// Run `baton ARGS -c CONFIG`.
    pub fn ctl(&self, args: &[&str]) -> CliOut {
        let cfg = self.config.to_string_lossy().to_string();
        let mut v = args.to_vec();
        v.extend(["-c", cfg.as_str()]);
        run_cli(&self.bin, &v)
    }

    /// Wait until each of `server`'s monitors `names` has completed a healthy poll
    /// (state `normal`, which a monitor reaches only from a successful poll).
    pub fn wait_monitors_normal(&self, server: &str, names: &[&str], timeout: Duration) {
        crate::wait_until(
            &format!("{server}'s monitors {names:?} to report normal"),
            timeout,
            || {
                let st = self.try_status(Some(server))?;
                for n in names {
                    match st.local.monitors.iter().find(|m| m.name == *n) {
                        Some(m) if m.state == "normal" => {}
                        Some(m) => return Err(format!("{n} is {}", m.state)),
                        None => return Err(format!("no monitor {n} on {server}")),
                    }
                }
                Ok(())
            },
        );
    }

    pub fn try_status(&self, via: Option<&str>) -> Result<ClusterStatus, String> {
        let mut args = vec!["status", "--json"];
        if let Some(s) = via {
            args.extend(["-s", s]);
        }
        let out = self.ctl(&args);
        if out.code != 0 {
            return Err(format!(
                "status exited {}: {}{}",
                out.code, out.stdout, out.stderr
            ));
        }
        serde_json::from_str(&out.stdout).map_err(|e| format!("status json: {e}"))
    }

    /// Wait until group `group` is online on `on` alone; returns its epoch.
    pub fn wait_owner(&self, group: &str, on: &str, timeout: Duration) -> u64 {
        wait_until(&format!("group {group} online on {on}"), timeout, || {
            let st = self.try_status(None)?;
            match st.sole_owner(group) {
                Some(o) if o == on => Ok(st.group(group).epoch),
                _ => Err(st.summary(group)),
            }
        })
    }

    pub fn try_alerts(&self, server: &str) -> Result<Vec<Event>, String> {
        let out = self.ctl(&["alerts", "--json", "--after", "0", "-s", server]);
        if out.code != 0 {
            return Err(format!(
                "alerts exited {}: {}{}",
                out.code, out.stdout, out.stderr
            ));
        }
        crate::parse_event_lines(&out.stdout)
    }

    /// Wait until `server` raised event `id` matching `pred`; returns it.
    pub fn wait_event(
        &self,
        server: &str,
        id: &str,
        timeout: Duration,
        pred: impl Fn(&Event) -> bool,
    ) -> Event {
        wait_until(&format!("{server} raises {id}"), timeout, || {
            let evs = self.try_alerts(server)?;
            evs.iter()
                .find(|e| e.id == id && pred(e))
                .cloned()
                .ok_or_else(|| {
                    evs.iter()
                        .map(|e| format!("{} {}", e.id, e.message))
                        .collect::<Vec<_>>()
                        .join("\n")
                })
        })
    }

    /// Signal `server`'s agent; after SIGKILL also reap it.
    pub fn kill(&mut self, server: &str, sig: Signal) {
        let i = self.idx(server);
        if let Some(c) = self.nodes[i].child.as_mut() {
            let _ = kill(Pid::from_raw(i32::try_from(c.id()).unwrap_or(0)), sig);
            if sig == Signal::SIGKILL {
                let _ = c.wait();
                self.nodes[i].child = None;
            }
        }
    }

    /// Wait for `server`'s agent to exit (after SIGTERM).
    pub fn wait_exit(&mut self, server: &str, timeout: Duration) {
        let i = self.idx(server);
        if let Some(c) = self.nodes[i].child.as_mut() {
            let start = Instant::now();
            while matches!(c.try_wait(), Ok(None)) {
                assert!(
                    start.elapsed() < timeout,
                    "agent {server} did not exit in {timeout:?}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.nodes[i].child = None;
    }

    pub fn dump(&self) {
        for n in &self.nodes {
            eprintln!("--- tail of {} ---\n{}", n.log.display(), tail(&n.log, 80));
        }
    }
}

impl Drop for AwsCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump();
        }
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
