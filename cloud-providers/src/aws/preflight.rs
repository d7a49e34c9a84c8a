//! Preflight for AWS configurations: `baton cloud check` ([`check`]) verifies that the
//! IDs of one server's AWS resources and monitors exist and that its credentials may
//! change them (DryRun where the API has it, which changes nothing), and `baton cloud
//! iam-policy` ([`iam_policy`]) prints the least-privilege IAM policy the whole
//! configuration needs.

use crate::aws::AwsServices;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_sdk_ec2::types::{Filter, Tag};
use baton_core::config::Config;
use serde_json::{json, Value};

use super::az::{healthy_state, AwsAzParams};
use super::dns::{zone_id, AwsDnsParams};
use super::eip::AwsEipParams;
use super::events::{is_not_found_code, is_permission_code};
use super::vip::{cidr_contains, AwsVipParams};
use super::{call, AwsClients, AwsFailure};
use crate::params::parse_params;

pub use crate::cloud::{worst, Finding, Status};
use crate::cloud::{PreflightFailure, Report};

impl PreflightFailure for AwsFailure {
    fn not_found(&self) -> bool {
        self.code().is_some_and(is_not_found_code)
    }
    fn denied(&self) -> bool {
        self.code().is_some_and(is_permission_code)
    }
    fn fix(&self) -> &'static str {
        "attach the policy of `baton cloud iam-policy`"
    }
}

impl Report {
    /// The result of a DryRun call: `DryRunOperation` means it would have succeeded.
    fn dry_run<T>(&mut self, op: &str, r: Result<T, AwsFailure>) {
        let check = format!("permission:{op}");
        match r {
            Err(f) if f.code() == Some("DryRunOperation") => {
                self.add(&check, Status::Ok, "allowed (DryRun)");
            }
            Ok(_) => self.add(
                &check,
                Status::Warn,
                "the endpoint ignored DryRun (an emulator?): the call succeeded",
            ),
            Err(f) if f.code().is_some_and(is_permission_code) => self.add(
                &check,
                Status::Fail,
                format!("not authorized: {f} (attach the policy of `baton cloud iam-policy`)"),
            ),
            Err(f) => self.failed(&check, &f),
        }
    }
}

/// Check every AWS resource and monitor `server` runs, with these clients.
pub async fn check(
    cfg: &Config,
    server: &str,
    clients: &AwsClients,
    per_call: Duration,
) -> Vec<Finding> {
    let mut all = Vec::new();
    let ec2 = clients.ec2();
    let r53 = clients.route53();
    for g in &cfg.groups {
        if !g.servers.iter().any(|s| s == server) {
            continue;
        }
        for r in &g.resources {
            let mut rep = Report::new(format!("resource {}/{}", g.name, r.name));
            let params = r.params_for(server);
            match r.kind.as_str() {
                "aws-vip" => match parse_params::<AwsVipParams>(&params) {
                    Ok(p) => check_vip(&mut rep, &ec2, &p, per_call).await,
                    Err(e) => rep.add("config", Status::Fail, e.to_string()),
                },
                "aws-eip" => match parse_params::<AwsEipParams>(&params) {
                    Ok(p) => check_eip(&mut rep, &ec2, &p, per_call).await,
                    Err(e) => rep.add("config", Status::Fail, e.to_string()),
                },
                "aws-dns" => match parse_params::<AwsDnsParams>(&params) {
                    Ok(p) => check_dns(&mut rep, &r53, &p, per_call).await,
                    Err(e) => rep.add("config", Status::Fail, e.to_string()),
                },
                _ => continue,
            }
            all.extend(rep.out);
        }
    }
    for m in &cfg.monitors {
        if m.kind != "aws-az" {
            continue;
        }
        let mut rep = Report::new(format!("monitor {}", m.name));
        match parse_params::<AwsAzParams>(&m.params_for(server)) {
            Ok(AwsAzParams { zone: Some(zone) }) => {
                let r = call(
                    "DescribeAvailabilityZones",
                    per_call,
                    ec2.describe_availability_zones().zone_names(&zone).send(),
                )
                .await;
                match r {
                    Ok(o) => match o
                        .availability_zones()
                        .iter()
                        .find(|z| z.zone_name() == Some(zone.as_str()))
                    {
                        None => rep.add(
                            "zone",
                            Status::Fail,
                            format!("Invalid availability zone: [{zone}]"),
                        ),
                        Some(z) => {
                            let st = z
                                .state()
                                .map(|s| s.as_str().to_string())
                                .unwrap_or_default();
                            let status = if healthy_state(&st) {
                                Status::Ok
                            } else {
                                Status::Warn
                            };
                            rep.add("zone", status, format!("{zone} is {st}"));
                        }
                    },
                    Err(f) if f.code() == Some("InvalidParameterValue") => {
                        rep.add(
                            "zone",
                            Status::Fail,
                            format!("Invalid availability zone: [{zone}]"),
                        );
                    }
                    Err(f) => rep.failed("zone", &f),
                }
            }
            Ok(AwsAzParams { zone: None }) => rep.add(
                "zone",
                Status::Skip,
                "zone not configured: read from the instance metadata at start-up",
            ),
            Err(e) => rep.add("config", Status::Fail, e.to_string()),
        }
        all.extend(rep.out);
    }
    all
}

async fn check_eni(
    rep: &mut Report,
    ec2: &aws_sdk_ec2::Client,
    eni: Option<&str>,
    vpc: Option<&str>,
    t: Duration,
) {
    let Some(eni) = eni else {
        rep.add(
            "eni",
            Status::Skip,
            "eni_id not configured: read from the instance metadata at start-up",
        );
        return;
    };
    match call(
        "DescribeNetworkInterfaces",
        t,
        ec2.describe_network_interfaces()
            .network_interface_ids(eni)
            .send(),
    )
    .await
    {
        Ok(o) => match o.network_interfaces().first() {
            None => rep.add(
                "eni",
                Status::Fail,
                format!("The networkInterface ID '{eni}' does not exist"),
            ),
            Some(ni) => {
                if let (Some(want), Some(got)) = (vpc, ni.vpc_id()) {
                    if want != got {
                        rep.add(
                            "eni",
                            Status::Fail,
                            format!("{eni} is in {got}, not in {want}"),
                        );
                        return;
                    }
                }
                rep.add("eni", Status::Ok, format!("{eni} exists"));
                if vpc.is_some() && ni.source_dest_check() == Some(true) {
                    rep.add(
                        "source-dest-check",
                        Status::Warn,
                        format!("{eni} has its source/destination check on: packets to the VIP will be dropped"),
                    );
                }
            }
        },
        Err(f) => rep.failed("eni", &f),
    }
}

async fn check_vip(rep: &mut Report, ec2: &aws_sdk_ec2::Client, p: &AwsVipParams, t: Duration) {
    let ip: Option<std::net::Ipv4Addr> = p.ip.parse().ok();
    match call(
        "DescribeVpcs",
        t,
        ec2.describe_vpcs().vpc_ids(&p.vpc_id).send(),
    )
    .await
    {
        Ok(o) => match o.vpcs().first() {
            None => rep.add(
                "vpc",
                Status::Fail,
                format!("The vpc ID '{}' does not exist", p.vpc_id),
            ),
            Some(v) => {
                let mut cidrs: Vec<&str> = v.cidr_block().into_iter().collect();
                cidrs.extend(
                    v.cidr_block_association_set()
                        .iter()
                        .filter_map(|a| a.cidr_block()),
                );
                match (
                    ip,
                    cidrs
                        .iter()
                        .find(|c| ip.is_some_and(|ip| cidr_contains(c, ip))),
                ) {
                    (_, Some(c)) => rep.add(
                        "vip",
                        Status::Fail,
                        format!(
                            "The VIP address {} belongs to a VPC subnet ({} has {c})",
                            p.ip, p.vpc_id
                        ),
                    ),
                    _ => rep.add(
                        "vpc",
                        Status::Ok,
                        format!(
                            "{} exists; VIP {} is outside {}",
                            p.vpc_id,
                            p.ip,
                            cidrs.join(", ")
                        ),
                    ),
                }
            }
        },
        Err(f) => rep.failed("vpc", &f),
    }
    check_eni(rep, ec2, p.eni_id.as_deref(), Some(&p.vpc_id), t).await;
    let cidr = format!("{}/32", p.ip);
    let mut req = ec2.describe_route_tables();
    if p.route_tables.is_empty() {
        req = req
            .filters(Filter::builder().name("vpc-id").values(&p.vpc_id).build())
            .filters(
                Filter::builder()
                    .name("route.destination-cidr-block")
                    .values(&cidr)
                    .build(),
            );
    } else {
        for id in &p.route_tables {
            req = req.route_table_ids(id);
        }
    }
    let tables = match call("DescribeRouteTables", t, req.send()).await {
        Ok(o) => o.route_tables().to_vec(),
        Err(f) => {
            rep.failed("route-table", &f);
            return;
        }
    };
    if tables.is_empty() {
        rep.add(
            "route-table",
            Status::Fail,
            format!(
                "no route table of {} has a route for {cidr}; add one or set route_tables",
                p.vpc_id
            ),
        );
        return;
    }
    let mut ids = Vec::new();
    for rt in &tables {
        let id = rt.route_table_id().unwrap_or_default().to_string();
        let route = rt
            .routes()
            .iter()
            .find(|r| r.destination_cidr_block() == Some(cidr.as_str()));
        match route.and_then(|r| r.network_interface_id()) {
            Some(target) => {
                rep.add("route-table", Status::Ok, format!("{id}: {cidr} -> {target}"));
                // The same target again: harmless even where DryRun were ignored.
                let r = call(
                    "ReplaceRoute",
                    t,
                    ec2.replace_route()
                        .route_table_id(&id)
                        .destination_cidr_block(&cidr)
                        .network_interface_id(target)
                        .dry_run(true)
                        .send(),
                )
                .await;
                rep.dry_run("ReplaceRoute", r);
            }
            None if route.is_some() => {
                rep.add("route-table", Status::Warn, format!("{id}: {cidr} does not point at an ENI (blackhole or other target)"));
            }
            None => rep.add(
                "route-table",
                Status::Skip,
                format!("{id}: no route for {cidr} yet; it is created at activation (CreateRoute not verified)"),
            ),
        }
        ids.push(id);
    }
    let mut req = ec2
        .create_tags()
        .dry_run(true)
        .tags(Tag::builder().key("baton:preflight").value("1").build());
    for id in &ids {
        req = req.resources(id);
    }
    let r = call("CreateTags", t, req.send()).await;
    rep.dry_run("CreateTags", r);
}

async fn check_eip(rep: &mut Report, ec2: &aws_sdk_ec2::Client, p: &AwsEipParams, t: Duration) {
    match call(
        "DescribeAddresses",
        t,
        ec2.describe_addresses()
            .allocation_ids(&p.allocation_id)
            .send(),
    )
    .await
    {
        Ok(o) => match o.addresses().first() {
            None => rep.add(
                "allocation",
                Status::Fail,
                format!("The allocation ID '{}' does not exist", p.allocation_id),
            ),
            Some(a) => rep.add(
                "allocation",
                Status::Ok,
                format!(
                    "{} is {} (associated with {})",
                    p.allocation_id,
                    a.public_ip().unwrap_or("?"),
                    a.network_interface_id().unwrap_or("nothing")
                ),
            ),
        },
        Err(f) => {
            rep.failed("allocation", &f);
            return;
        }
    }
    check_eni(rep, ec2, p.eni_id.as_deref(), None, t).await;
    if let Some(eni) = &p.eni_id {
        let mut req = ec2
            .associate_address()
            .allocation_id(&p.allocation_id)
            .network_interface_id(eni)
            .allow_reassociation(true)
            .dry_run(true);
        if let Some(ip) = &p.private_ip {
            req = req.private_ip_address(ip);
        }
        let r = call("AssociateAddress", t, req.send()).await;
        rep.dry_run("AssociateAddress", r);
    }
    let r = call(
        "CreateTags",
        t,
        ec2.create_tags()
            .dry_run(true)
            .resources(&p.allocation_id)
            .tags(Tag::builder().key("baton:preflight").value("1").build())
            .send(),
    )
    .await;
    rep.dry_run("CreateTags", r);
}

async fn check_dns(rep: &mut Report, r53: &aws_sdk_route53::Client, p: &AwsDnsParams, t: Duration) {
    let zone = match zone_id(&p.hosted_zone_id) {
        Ok(z) => z,
        Err(e) => {
            rep.add("hosted-zone", Status::Fail, e.to_string());
            return;
        }
    };
    match call("GetHostedZone", t, r53.get_hosted_zone().id(&zone).send()).await {
        Ok(o) => {
            let name = o
                .hosted_zone()
                .map(|z| z.name().to_string())
                .unwrap_or_default();
            if p.record_name == name || p.record_name.ends_with(&format!(".{name}")) {
                rep.add(
                    "hosted-zone",
                    Status::Ok,
                    format!("{zone} is {name}; {} is inside it", p.record_name),
                );
            } else {
                rep.add(
                    "hosted-zone",
                    Status::Fail,
                    format!("{} is not inside the zone {name} ({zone})", p.record_name),
                );
            }
        }
        Err(f) => {
            rep.failed("hosted-zone", &f);
            return;
        }
    }
    match call(
        "ListResourceRecordSets",
        t,
        r53.list_resource_record_sets()
            .hosted_zone_id(&zone)
            .start_record_name(&p.record_name)
            .max_items(1)
            .send(),
    )
    .await
    {
        Ok(_) => rep.add("permission:ListResourceRecordSets", Status::Ok, "allowed"),
        Err(f) => rep.failed("permission:ListResourceRecordSets", &f),
    }
    rep.add(
        "permission:ChangeResourceRecordSets",
        Status::Skip,
        "Route 53 has no DryRun: not verifiable without a change; attach the policy of `baton cloud iam-policy`",
    );
}

/// The least-privilege IAM policy for every AWS resource and monitor of `cfg` (on every
/// server). Describe calls cannot be limited to resources in IAM, so they use `*`.
pub fn iam_policy(cfg: &Config) -> Value {
    let region = cfg.aws.region.clone().unwrap_or_else(|| "*".into());
    let ec2_arn = |kind: &str, id: &str| format!("arn:aws:ec2:{region}:*:{kind}/{id}");
    let mut describe: BTreeSet<&str> = BTreeSet::new();
    let mut replace_rt: BTreeSet<String> = BTreeSet::new();
    let mut create_rt: BTreeSet<String> = BTreeSet::new();
    let mut vpc_scoped: BTreeSet<String> = BTreeSet::new();
    let mut eip_res: BTreeSet<String> = BTreeSet::new();
    let mut tag_res: BTreeSet<String> = BTreeSet::new();
    let mut zones: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for g in &cfg.groups {
        for r in &g.resources {
            for s in &g.servers {
                let params = r.params_for(s);
                match r.kind.as_str() {
                    "aws-vip" => {
                        let Ok(p) = parse_params::<AwsVipParams>(&params) else {
                            continue;
                        };
                        describe.extend([
                            "ec2:DescribeVpcs",
                            "ec2:DescribeNetworkInterfaces",
                            "ec2:DescribeRouteTables",
                        ]);
                        if p.route_tables.is_empty() {
                            vpc_scoped.insert(p.vpc_id.clone());
                        } else {
                            for rt in &p.route_tables {
                                replace_rt.insert(ec2_arn("route-table", rt));
                                create_rt.insert(ec2_arn("route-table", rt));
                                tag_res.insert(ec2_arn("route-table", rt));
                            }
                        }
                    }
                    "aws-eip" => {
                        let Ok(p) = parse_params::<AwsEipParams>(&params) else {
                            continue;
                        };
                        describe.insert("ec2:DescribeAddresses");
                        eip_res.insert(ec2_arn("elastic-ip", &p.allocation_id));
                        tag_res.insert(ec2_arn("elastic-ip", &p.allocation_id));
                        eip_res.insert(ec2_arn(
                            "network-interface",
                            p.eni_id.as_deref().unwrap_or("*"),
                        ));
                    }
                    "aws-dns" => {
                        let Ok(p) = parse_params::<AwsDnsParams>(&params) else {
                            continue;
                        };
                        let Ok(z) = zone_id(&p.hosted_zone_id) else {
                            continue;
                        };
                        let names = zones.entry(z).or_default();
                        names.insert(p.record_name.trim_end_matches('.').to_string());
                        names.insert(
                            crate::fencing::record_name(&p.record_name)
                                .trim_end_matches('.')
                                .to_string(),
                        );
                    }
                    _ => {}
                }
            }
        }
    }
    for m in &cfg.monitors {
        match m.kind.as_str() {
            "aws-az" => {
                describe.insert("ec2:DescribeAvailabilityZones");
            }
            "aws-vip" => {
                describe.insert("ec2:DescribeRouteTables");
            }
            "aws-eip" => {
                describe.insert("ec2:DescribeAddresses");
            }
            _ => {}
        }
    }
    let mut st = Vec::new();
    if !describe.is_empty() {
        st.push(json!({"Sid": "BatonDescribe", "Effect": "Allow", "Action": describe.iter().collect::<Vec<_>>(), "Resource": "*"}));
    }
    if !replace_rt.is_empty() {
        st.push(json!({"Sid": "BatonVipRoutes", "Effect": "Allow", "Action": ["ec2:ReplaceRoute", "ec2:CreateRoute"], "Resource": create_rt.iter().collect::<Vec<_>>()}));
    }
    if !vpc_scoped.is_empty() {
        let vpcs: Vec<String> = vpc_scoped.iter().map(|v| ec2_arn("vpc", v)).collect();
        st.push(json!({"Sid": "BatonVipRoutesInVpc", "Effect": "Allow", "Action": ["ec2:ReplaceRoute"],
            "Resource": ec2_arn("route-table", "*"), "Condition": {"ArnLike": {"ec2:Vpc": vpcs.clone()}}}));
        st.push(json!({"Sid": "BatonEpochTagsInVpc", "Effect": "Allow", "Action": ["ec2:CreateTags"],
            "Resource": ec2_arn("route-table", "*"),
            "Condition": {"ArnLike": {"ec2:Vpc": vpcs}, "ForAllValues:StringLike": {"aws:TagKeys": ["baton:*"]}}}));
    }
    if !eip_res.is_empty() {
        st.push(json!({"Sid": "BatonElasticIp", "Effect": "Allow", "Action": ["ec2:AssociateAddress", "ec2:DisassociateAddress"], "Resource": eip_res.iter().collect::<Vec<_>>()}));
    }
    if !tag_res.is_empty() {
        st.push(json!({"Sid": "BatonEpochTags", "Effect": "Allow", "Action": ["ec2:CreateTags"], "Resource": tag_res.iter().collect::<Vec<_>>(),
            "Condition": {"ForAllValues:StringLike": {"aws:TagKeys": ["baton:*"]}}}));
    }
    for (i, (zone, names)) in zones.iter().enumerate() {
        st.push(json!({"Sid": format!("BatonDnsRead{i}"), "Effect": "Allow", "Action": ["route53:GetHostedZone", "route53:ListResourceRecordSets"],
            "Resource": format!("arn:aws:route53:::hostedzone/{zone}")}));
        st.push(json!({"Sid": format!("BatonDnsWrite{i}"), "Effect": "Allow", "Action": ["route53:ChangeResourceRecordSets"],
            "Resource": format!("arn:aws:route53:::hostedzone/{zone}"),
            "Condition": {"ForAllValues:StringEquals": {
                "route53:ChangeResourceRecordSetsNormalizedRecordNames": names.iter().collect::<Vec<_>>(),
                "route53:ChangeResourceRecordSetsRecordTypes": ["A", "TXT"]}}}));
    }
    if !zones.is_empty() {
        st.push(json!({"Sid": "BatonDnsChanges", "Effect": "Allow", "Action": ["route53:GetChange"], "Resource": "arn:aws:route53:::change/*"}));
    }
    st.extend(service_statements(cfg, &region));
    json!({"Version": "2012-10-17", "Statement": st})
}

/// What the agent itself calls besides the kinds: the S3 or DynamoDB witness (the lease
/// object or the cluster's item only), the SNS topic (`PublishBatch` needs
/// `sns:Publish`), CloudWatch metrics (`PutMetricData` cannot be limited to a resource,
/// only to its namespace).
fn service_statements(cfg: &Config, region: &str) -> Vec<Value> {
    use baton_core::config::Witness;
    let mut st = Vec::new();
    match &cfg.quorum.witness {
        Witness::S3 { bucket, key, .. } => {
            st.push(json!({"Sid": "BatonWitnessS3", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
                "Resource": format!("arn:aws:s3:::{bucket}/{key}")}));
            // Without s3:ListBucket, S3 answers a missing object with 403 instead of
            // NoSuchKey, and the first server could never create the lease object.
            st.push(
                json!({"Sid": "BatonWitnessS3List", "Effect": "Allow", "Action": ["s3:ListBucket"],
                "Resource": format!("arn:aws:s3:::{bucket}"),
                "Condition": {"StringEquals": {"s3:prefix": [key]}}}),
            );
        }
        Witness::Dynamodb {
            table,
            item,
            region: r,
        } => {
            let r = r.as_deref().unwrap_or(region);
            let item = item.clone().unwrap_or_else(|| cfg.cluster_name.clone());
            st.push(json!({"Sid": "BatonWitnessDynamoDb", "Effect": "Allow", "Action": ["dynamodb:GetItem", "dynamodb:PutItem"],
                "Resource": format!("arn:aws:dynamodb:{r}:*:table/{table}"),
                "Condition": {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": [item]}}}));
        }
        Witness::None | Witness::Http { .. } => {}
    }
    if let Some(sns) = &cfg.notify.sns {
        st.push(json!({"Sid": "BatonNotifySns", "Effect": "Allow", "Action": ["sns:Publish"], "Resource": sns.topic_arn}));
    }
    if let Some(cw) = &cfg.metrics.cloudwatch {
        st.push(json!({"Sid": "BatonMetricsCloudWatch", "Effect": "Allow", "Action": ["cloudwatch:PutMetricData"], "Resource": "*",
            "Condition": {"StringEquals": {"cloudwatch:namespace": cw.namespace}}}));
    }
    st
}
