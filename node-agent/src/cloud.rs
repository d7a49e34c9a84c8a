//! `baton cloud`: preflight of a configuration's cloud resources.
//!
//! - `baton cloud check --config F --server S [--json]`: the AWS IDs of server S's
//!   resources and monitors exist, and the credentials on this machine may change them
//!   (DryRun where the API has it). Exit 0 when nothing failed, 1 otherwise.
//! - `baton cloud iam-policy --config F [--json]`: the least-privilege IAM policy the
//!   whole configuration needs (attach it to every server's instance role).

use std::time::Duration;

use baton_providers::aws::preflight::{self, Status};
use baton_providers::aws::AwsClients;
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
            let found = preflight::check(&cfg, &server, &clients, per_call).await;
            let worst = preflight::worst(&found);
            let ok = worst != Status::Fail;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": ok, "server": server, "region": clients.region(), "findings": found})
                );
            } else if found.is_empty() {
                println!("no AWS resources or monitors run on {server}");
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
            let policy = preflight::iam_policy(&cfg);
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
