//! `baton cloud`: preflight of a configuration's cloud resources.
//!
//! - `baton cloud check --config F --server S [--json]`: the AWS IDs of server S's
//!   resources and monitors exist, and the credentials on this machine may change them
//!   (DryRun where the API has it). Exit 0 when nothing failed, 1 otherwise.
//! - `baton cloud iam-policy --config F [--json]`: the least-privilege IAM policy the
//!   whole configuration needs (attach it to every server's instance role); for Google
//!   Cloud kinds, the custom role (YAML for `gcloud iam roles create --file`, or JSON).
//!
//! Google Cloud kinds are checked too when the configuration has any.

use std::time::Duration;

use baton_providers::aws::preflight::{self, Finding, Status};
use baton_providers::aws::AwsClients;
use baton_providers::gcp::preflight as gcp_preflight;
use clap::Subcommand;

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
    /// Print the least-privilege IAM policy the configuration needs.
    IamPolicy {
        #[command(flatten)]
        cfg: crate::args::ConfigArg,
        /// One line of JSON instead of the indented policy.
        #[arg(long)]
        json: bool,
    },
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
            let per_call = Duration::from_millis(cfg.aws.call_timeout.ms());
            let mut found = preflight::check(&cfg, &server, &clients, per_call).await;
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
                println!("no AWS or Google Cloud resources or monitors run on {server}");
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
            json,
        } => {
            let cfg = match crate::catalog::load_config(&config) {
                Ok(c) => c,
                Err(e) => return config_error(json, &e),
            };
            let mut policy = preflight::iam_policy(&cfg);
            if gcp_preflight::uses_gcp(&cfg) {
                // Google Cloud: a custom role; with AWS kinds too, both.
                let role = gcp_preflight::custom_role(&cfg);
                let no_aws = policy["Statement"].as_array().is_none_or(Vec::is_empty);
                if json {
                    policy = if no_aws {
                        role
                    } else {
                        serde_json::json!({"aws": policy, "gcp": role})
                    };
                } else {
                    if !no_aws {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&policy)
                                .unwrap_or_else(|_| policy.to_string())
                        );
                        println!("---");
                    }
                    print!("{}", gcp_preflight::custom_role_yaml(&role));
                    return Exit::Ok;
                }
            }
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
