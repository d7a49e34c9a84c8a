//! `baton cloud`: preflight of a configuration's cloud resources.
//!
//! - `baton cloud check --config F --server S [--json]`: the AWS IDs and Azure
//!   resources of server S's resources and monitors exist, and the credentials on this
//!   machine may change them (AWS: DryRun where the API has it; Azure: the identity's
//!   permissions on each resource group). Exit 0 when nothing failed, 1 otherwise.
//! - `baton cloud iam-policy --config F [--cloud aws|azure] [--json]`: the
//!   least-privilege IAM policy (AWS) or custom role (Azure) the whole configuration
//!   needs (attach it to every server's instance role or identity).

use std::time::Duration;

use baton_providers::aws::preflight::{self, Status};
use baton_providers::aws::AwsClients;
use baton_providers::azure::preflight as azure_preflight;
use clap::{Subcommand, ValueEnum};

use crate::exit::Exit;

#[derive(Subcommand, Debug)]
pub enum CloudOp {
    /// Check that this server's AWS IDs exist and that its credentials may change them
    /// (run it on that server, `-s`: its credentials are the ones checked).
    Check {
        #[command(flatten)]
        cfg: crate::args::ConfigArg,
        #[command(flatten)]
        srv: crate::args::ServerArg,
        #[arg(long)]
        json: bool,
    },
    /// Print the least-privilege IAM policy (AWS) or custom role (Azure) the
    /// configuration needs.
    IamPolicy {
        #[command(flatten)]
        cfg: crate::args::ConfigArg,
        /// Which cloud's policy (default: the cloud whose kinds the configuration uses;
        /// AWS when it uses none or both).
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
            if uses_aws(&cfg) || !azure_preflight::uses_azure(&cfg) {
                let per_call = Duration::from_millis(cfg.aws.call_timeout.ms());
                found.extend(preflight::check(&cfg, &server, &clients, per_call).await);
            }
            if azure_preflight::uses_azure(&cfg) {
                let per_call = Duration::from_millis(cfg.azure.deadline.ms());
                match baton_cloud_client::azure::AzureClient::new(&cfg.azure) {
                    Ok(client) => {
                        found.extend(azure_preflight::check(&cfg, &server, &client, per_call).await)
                    }
                    Err(e) => found.push(baton_providers::cloud::Finding {
                        subject: "[azure]".into(),
                        check: "identity".into(),
                        status: Status::Fail,
                        detail: e.to_string(),
                    }),
                }
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
            let azure = match cloud {
                Some(c) => c == Cloud::Azure,
                None => azure_preflight::uses_azure(&cfg) && !uses_aws(&cfg),
            };
            let policy = if azure {
                azure_preflight::custom_role(&cfg)
            } else {
                preflight::iam_policy(&cfg)
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
