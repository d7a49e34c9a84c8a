//! `baton cloud`: preflight of a configuration's cloud resources.
//!
//! - `baton cloud check --config F --server S [--json]`: the cloud resources that server
//!   S's resources and monitors name exist, and the credentials on this machine may
//!   change them (AWS: DryRun where the API has it; Azure: the identity's permissions on
//!   each resource group; Google Cloud: testIamPermissions). Exit 0 when nothing
//!   failed, 1 otherwise.
//! - `baton cloud iam-policy --config F [--cloud aws|azure|gcp] [--json]`: the
//!   least-privilege IAM policy (AWS), custom role (Azure, JSON) or custom role (Google
//!   Cloud: YAML for `gcloud iam roles create --file`, or JSON) the whole configuration
//!   needs.

use std::time::Duration;

use baton_providers::aws::preflight::{self, Finding, Status};
use baton_providers::aws::AwsClients;
use baton_providers::azure::preflight as azure_preflight;
use baton_providers::gcp::preflight as gcp_preflight;
use clap::{Subcommand, ValueEnum};

use crate::exit::Exit;

#[derive(Subcommand, Debug)]
pub enum CloudOp {
    /// Check that the cloud resources this server's kinds name exist and that its
    /// credentials may change them (run it on that server, `-s`: its credentials are the
    /// ones checked).
    Check {
        #[command(flatten)]
        cfg: crate::args::ConfigArg,
        #[command(flatten)]
        srv: crate::args::ServerArg,
        #[arg(long)]
        json: bool,
    },
    /// Print the least-privilege IAM policy (AWS) or custom role (Azure, Google Cloud)
    /// the configuration needs.
    IamPolicy {
        #[command(flatten)]
        cfg: crate::args::ConfigArg,
        /// Which cloud's policy (default: the cloud whose kinds the configuration uses;
        /// AWS when it uses none; required when it uses several).
        #[arg(long, value_enum)]
        cloud: Option<Cloud>,
        /// One line of JSON instead of the indented policy.
        #[arg(long)]
        json: bool,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cloud {
    Aws,
    Azure,
    Gcp,
}

/// The clouds whose kinds the configuration uses.
fn used_clouds(cfg: &baton_core::config::Config) -> Vec<Cloud> {
    [
        (uses_aws(cfg), Cloud::Aws),
        (azure_preflight::uses_azure(cfg), Cloud::Azure),
        (gcp_preflight::uses_gcp(cfg), Cloud::Gcp),
    ]
    .into_iter()
    .filter_map(|(used, c)| used.then_some(c))
    .collect()
}

fn uses_aws(cfg: &baton_core::config::Config) -> bool {
    let aws = |k: &str| k.starts_with("aws-");
    cfg.groups
        .iter()
        .flat_map(|g| &g.resources)
        .any(|r| aws(&r.kind))
        || cfg.monitors.iter().any(|m| aws(&m.kind))
}

fn config_error(json: bool, e: &baton_core::config::ConfigError) -> Exit {
    if json {
        println!(
            "{}",
            serde_json::json!({"ok": false, "error": {"code": "config-invalid", "message": e.to_string()}})
        );
    } else {
        for d in &e.diagnostics {
            eprintln!("{d}");
        }
    }
    Exit::ConfigInvalid
}

pub async fn run(op: CloudOp) -> Exit {
    match op {
        CloudOp::Check {
            cfg: crate::args::ConfigArg { config },
            srv: crate::args::ServerArg { server },
            json,
        } => {
            let cfg = match crate::catalog::load_config(&config) {
                Ok(c) => c,
                Err(e) => return config_error(json, &e),
            };
            if cfg.server(&server).is_none() {
                let msg = format!("no server `{server}` in {}", config.display());
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"ok": false, "error": {"code": "unknown-server", "message": msg}})
                    );
                } else {
                    eprintln!("baton: {msg}");
                }
                return Exit::Usage;
            }
            let clients = AwsClients::load(&cfg.aws).await;
            let mut found = Vec::new();
            if uses_aws(&cfg) || used_clouds(&cfg).is_empty() {
                let per_call = Duration::from_millis(cfg.aws.call_timeout.ms());
                found.extend(preflight::check(&cfg, &server, &clients, per_call).await);
            }
            if azure_preflight::uses_azure(&cfg) {
                let per_call = Duration::from_millis(cfg.azure.deadline.ms());
                match baton_cloud_client::azure::AzureClient::new(&cfg.azure) {
                    Ok(client) => {
                        found.extend(azure_preflight::check(&cfg, &server, &client, per_call).await)
                    }
                    Err(e) => found.push(Finding {
                        subject: "[azure]".into(),
                        check: "identity".into(),
                        status: Status::Fail,
                        detail: e.to_string(),
                    }),
                }
            }
            if gcp_preflight::uses_gcp(&cfg) {
                found.extend(gcp_check(&cfg, &server).await);
            }
            let worst = preflight::worst(&found);
            let ok = worst != Status::Fail;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": ok, "server": server, "region": clients.region(), "findings": found})
                );
            } else if found.is_empty() {
                println!("no cloud resources or monitors run on {server}");
            } else {
                let w = found.iter().map(|f| f.subject.len()).max().unwrap_or(0);
                let c = found.iter().map(|f| f.check.len()).max().unwrap_or(0);
                for f in &found {
                    println!(
                        "{:<4}  {:<w$}  {:<c$}  {}",
                        f.status.as_str(),
                        f.subject,
                        f.check,
                        f.detail
                    );
                }
                let n = |s: Status| found.iter().filter(|f| f.status == s).count();
                println!(
                    "{} checks on {server} (region {}): {} ok, {} warnings, {} failed, {} not verifiable",
                    found.len(),
                    clients.region().unwrap_or_else(|| "unknown".into()),
                    n(Status::Ok),
                    n(Status::Warn),
                    n(Status::Fail),
                    n(Status::Skip)
                );
            }
            if ok {
                Exit::Ok
            } else {
                Exit::Failure
            }
        }
        CloudOp::IamPolicy {
            cfg: crate::args::ConfigArg { config },
            cloud,
            json,
        } => {
            let cfg = match crate::catalog::load_config(&config) {
                Ok(c) => c,
                Err(e) => return config_error(json, &e),
            };
            let used = used_clouds(&cfg);
            let cloud = match (cloud, used.as_slice()) {
                (Some(c), _) => c,
                (None, []) => Cloud::Aws,
                (None, [one]) => *one,
                (None, several) => {
                    let names: Vec<String> = several
                        .iter()
                        .map(|c| format!("{c:?}").to_lowercase())
                        .collect();
                    eprintln!(
                        "baton: the configuration uses kinds of several clouds ({}): choose one with --cloud",
                        names.join(", ")
                    );
                    return Exit::Usage;
                }
            };
            let policy = match cloud {
                Cloud::Aws => preflight::iam_policy(&cfg),
                Cloud::Azure => azure_preflight::custom_role(&cfg),
                Cloud::Gcp => {
                    let role = gcp_preflight::custom_role(&cfg);
                    if !json {
                        print!("{}", gcp_preflight::custom_role_yaml(&role));
                        return Exit::Ok;
                    }
                    role
                }
            };
            if json {
                println!("{policy}");
            } else {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&policy).unwrap_or_else(|_| policy.to_string())
                );
            }
            Exit::Ok
        }
    }
}

/// The Google Cloud findings of `server` (a client that cannot be built is one failure).
async fn gcp_check(cfg: &baton_core::config::Config, server: &str) -> Vec<Finding> {
    let per_call = Duration::from_millis(cfg.gcp.call_timeout.ms());
    match baton_cloud_client::gcp::GcpClient::new(&cfg.gcp) {
        Ok(client) => gcp_preflight::check(cfg, server, &client, per_call).await,
        Err(f) => vec![Finding {
            subject: "[gcp]".into(),
            check: "credentials".into(),
            status: Status::Fail,
            detail: f.to_string(),
        }],
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    fn policy(extra: &str) -> String {
        let text = format!(
            "[cluster]\nname = \"orders\"\nkey_file = \"k\"\n\n[aws]\nregion = \"eu-west-1\"\n\n\
             [[server]]\nname = \"a\"\ninterconnects = [\"10.0.0.1\"]\napi = \"10.0.0.1:7420\"\n\
             [[server]]\nname = \"b\"\ninterconnects = [\"10.0.0.2\"]\napi = \"10.0.0.2:7420\"\n\n{extra}"
        );
        let reg = crate::catalog::default_kinds();
        let l = baton_core::config::load_str(
            "baton.toml",
            &text,
            &crate::catalog::ProviderCatalog(&reg),
        )
        .unwrap();
        super::preflight::iam_policy(&l.config).to_string()
    }

    /// `baton cloud iam-policy` covers what the agent calls besides the kinds: the
    /// witness's object or item, the SNS topic, CloudWatch's namespace.
    #[test]
    fn the_policy_covers_the_witness_sns_and_cloudwatch() {
        let p = policy(
            "[quorum]\nwitness = { kind = \"s3\", bucket = \"w\", key = \"baton/orders.lease\" }\n",
        );
        assert!(
            p.contains("\"s3:GetObject\",\"s3:PutObject\"")
                && p.contains("arn:aws:s3:::w/baton/orders.lease")
                && p.contains("\"s3:ListBucket\"")
                && p.contains("\"s3:prefix\":[\"baton/orders.lease\"]"),
            "{p}"
        );
        let p = policy("[quorum]\nwitness = { kind = \"dynamodb\", table = \"bw\" }\n");
        assert!(
            p.contains("arn:aws:dynamodb:eu-west-1:*:table/bw")
                && p.contains("\"dynamodb:LeadingKeys\":[\"orders\"]"),
            "{p}"
        );
        let p = policy(
            "[quorum]\nwitness = { kind = \"dynamodb\", table = \"bw\", item = \"x\", region = \"us-east-2\" }\n\n\
             [notify.sns]\ntopic_arn = \"arn:aws:sns:eu-west-1:123456789012:baton\"\n\n\
             [metrics.cloudwatch]\nnamespace = \"Baton\"\n",
        );
        for want in [
            "arn:aws:dynamodb:us-east-2:*:table/bw",
            "\"dynamodb:LeadingKeys\":[\"x\"]",
            "\"sns:Publish\"",
            "arn:aws:sns:eu-west-1:123456789012:baton",
            "\"cloudwatch:PutMetricData\"",
            "\"cloudwatch:namespace\":\"Baton\"",
        ] {
            assert!(p.contains(want), "{want} missing from {p}");
        }
        // An HTTP witness and no AWS service: nothing of them.
        let p = policy("[quorum]\nwitness = { kind = \"http\", url = \"http://10.0.0.9:7430\" }\n");
        assert!(
            !p.contains("s3:") && !p.contains("sns:") && !p.contains("cloudwatch:"),
            "{p}"
        );
    }
}
