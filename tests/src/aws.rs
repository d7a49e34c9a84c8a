//! Two real `baton agent` processes on `127.0.N.x` against moto server, for the AWS
//! scenarios: [`AwsWorld::create`] builds a VPC in the emulator (two subnets in two
//! zones, an ENI per server, two route tables with a route for the VIP, an Elastic IP,
//! a private hosted zone) with boto3 from the moto venv, and [`AwsCluster::start`]
//! runs the two agents of the groups (`node-1`, `node-2`) and a third, vote-only agent
//! (`node-3`, in no group: a two-server cluster needs a third vote to fail over after
//! a crash) with `[aws] endpoint_url` pointing at the emulator and the test
//! credentials of [`crate::moto::aws_env`] in their environment. Dropping the cluster
//! kills the agents (and prints their logs when the test is failing).

use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Deserialize;

use crate::cloud_cluster::CloudCluster;
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

/// The AWS scenarios' cluster.
pub type AwsCluster = CloudCluster;

impl CloudCluster {
    /// `body` is the TOML of the groups and monitors (group `web` on node-1, node-2).
    pub fn start(world: &AwsWorld, name: &str, net: u8, body: &str) -> CloudCluster {
        Self::start_aws(world, name, net, body, Some(("100ms", "1s")))
    }

    /// As [`CloudCluster::start`] with the heartbeat given (`None`: the defaults).
    pub fn start_aws(
        world: &AwsWorld,
        name: &str,
        net: u8,
        body: &str,
        heartbeat: Option<(&str, &str)>,
    ) -> CloudCluster {
        let preamble = format!(
            r#"[aws]
region = "us-east-1"
endpoint_url = "{ep}"
call_timeout = "3s"
max_attempts = 4
imds = false
"#,
            ep = world.moto.endpoint,
        );
        CloudCluster::start_with_heartbeat(
            "aws",
            name,
            net,
            ["us-east-1a", "us-east-1b", "us-east-1c"],
            &preamble,
            {
                let env: Vec<_> = aws_env(&world.moto.endpoint)
                    .into_iter()
                    .map(|(k, v)| (k, Some(v)))
                    .collect();
                Box::new(move |_: &str| env.clone())
            },
            body,
            heartbeat,
        )
    }
}
