//! Two real `baton agent` processes on `127.0.N.x` against moto server, for the AWS
//! scenarios: [`AwsWorld::create`] builds a VPC in the emulator (two subnets in two
//! zones, an ENI per server, two route tables with a route for the VIP, an Elastic IP,
//! a private hosted zone) with boto3 from the moto venv, and [`AwsCluster::start`]
//! runs the two agents of the groups (`node-1`, `node-2`) and a third, vote-only agent
//! (`node-3`, in no group: a two-server cluster needs a third vote to fail over after
//! a crash) with `[aws] endpoint_url` pointing at the emulator and the test
//! credentials of [`crate::moto::aws_env`] in their environment. Dropping the cluster
//! kills the agents (and prints their logs when the test is failing).

use std::net::SocketAddr;
use std::ops::Deref;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Deserialize;

use crate::client::{tail, Baton};
use crate::cluster::{addr, api_token, pick_port};
use crate::config::ConfigText;
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
/// groups and monitors. Monitors need values for node-3 too (common values do). It is a
/// [`Baton`] client of that configuration (`bin`, `config`, `ctl`, `alerts`, ...).
pub struct AwsCluster {
    pub dir: PathBuf,
    pub nodes: Vec<AwsNode>,
    baton: Baton,
    pub token: String,
    endpoint: String,
    _tmp: tempfile::TempDir,
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
        let config = dir.join("baton.toml");
        let baton = Baton::new(&bin, &config);
        baton.keygen(&key).unwrap_or_else(|e| panic!("{e}"));
        let port = pick_port(net, 3, 1);
        let mut text = ConfigText::new(
            &format!("the baton AWS tests ({name})"),
            &format!("aws-{name}"),
        )
        .heartbeat("100ms", "1s", "")
        .host_safe(&dir, "20s", "")
        .push(&format!(
            r#"[aws]
region = "us-east-1"
endpoint_url = "{ep}"
call_timeout = "3s"
max_attempts = 4
imds = false
"#,
            ep = world.moto.endpoint,
        ));
        for (s, zone) in (1..=3).zip(["us-east-1a", "us-east-1b", "us-east-1c"]) {
            text = text.server(
                &format!("node-{s}"),
                Some(zone),
                &[addr(net, 0, s, port + 1).to_string()],
                &addr(net, 0, s, port).to_string(),
            );
        }
        std::fs::write(&config, text.push("\n").push(body).build()).expect("write config");
        baton.check_config().unwrap_or_else(|e| panic!("{e}"));
        let nodes = (1..=3)
            .map(|s| AwsNode {
                name: format!("node-{s}"),
                api: addr(net, 0, s, port),
                log: dir.join(format!("node-{s}.log")),
                state_dir: dir.join(format!("state-{s}")),
                child: None,
            })
            .collect();
        let mut c = AwsCluster {
            token: api_token(&key),
            dir,
            nodes,
            baton,
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
        let n = &self.nodes[i];
        let child = self
            .baton
            .agent(
                &n.name,
                &self.baton.config,
                &n.state_dir,
                &n.log,
                &format!("=== harness: starting agent {} ===", n.name),
            )
            .unwrap_or_else(|e| panic!("{e}"))
            .envs(aws_env(&self.endpoint))
            .spawn()
            .expect("start agent");
        self.nodes[i].child = Some(child);
    }

    /// Start `server`'s agent again (same state directory).
    pub fn restart(&mut self, server: &str) {
        let i = self.idx(server);
        self.spawn(i);
    }

    /// Wait until each of `server`'s monitors `names` has completed a healthy poll
    /// (state `normal`, which a monitor reaches only from a successful poll).
    pub fn wait_monitors_normal(&self, server: &str, names: &[&str], timeout: Duration) {
        crate::wait_until(
            &format!("{server}'s monitors {names:?} to report normal"),
            timeout,
            || {
                let st = self.try_status_via(Some(server))?;
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

    /// Wait until group `group` is online on `on` alone; returns its epoch.
    pub fn wait_owner(&self, group: &str, on: &str, timeout: Duration) -> u64 {
        self.wait_group_owner(group, Some(on), timeout).1
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

impl Deref for AwsCluster {
    type Target = Baton;

    fn deref(&self) -> &Baton {
        &self.baton
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
