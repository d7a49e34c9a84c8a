//! `baton notify test [SINK]`: send a test event (BTN-5002) through each configured
//! notification sink, or the one named, and a test datum to CloudWatch, directly from
//! this process (no agent needed), and report what each endpoint answered.
//!
//! Exit codes: 0 every sink delivered; 1 a sink failed or could not be set up; 2 unknown
//! sink name; 3 invalid configuration or unknown server.

use std::path::Path;
use std::time::Duration;

use baton_core::events::{Event, NOTIFY_TEST};
use baton_notifier::build::{build, sink_names};
use baton_notifier::metrics::{Datum, MetricsSink, Unit};
use serde::Serialize;

use crate::exit::Exit;

/// How long one sink may take to answer the test.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(clap::Subcommand, Debug)]
pub enum NotifyOp {
    /// Send a test event through every configured sink (or only SINK: log, sns, mail,
    /// cloudwatch, webhook or a webhook's name) and report what each one answered.
    Test {
        /// Only this sink.
        sink: Option<String>,
        #[command(flatten)]
        cfg: crate::args::ConfigArg,
        #[command(flatten)]
        srv: crate::args::ServerArg,
        #[arg(long)]
        json: bool,
    },
}

/// What one sink did with the test.
#[derive(Debug, Clone, Serialize)]
pub struct SinkResult {
    pub sink: String,
    pub ok: bool,
    pub took_ms: u64,
    /// `sink-transient`, `sink-permanent`, `timeout` or `not-started`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub async fn run(op: NotifyOp) -> Exit {
    let NotifyOp::Test {
        sink,
        cfg: crate::args::ConfigArg { config },
        srv: crate::args::ServerArg { server },
        json,
    } = op;
    test(&config, &server, sink.as_deref(), json).await
}

fn fail(json: bool, exit: Exit, code: &str, msg: &str) -> Exit {
    if json {
        println!(
            "{}",
            serde_json::json!({"ok": false, "error": {"code": code, "message": msg}})
        );
    } else {
        eprintln!("error: {msg}");
    }
    exit
}

async fn test(config: &Path, server: &str, only: Option<&str>, json: bool) -> Exit {
    let cfg = match crate::catalog::load_config(config) {
        Ok(c) => c,
        Err(e) => {
            if !json {
                for d in &e.diagnostics {
                    eprintln!("{d}");
                }
            }
            return fail(json, Exit::ConfigInvalid, e.code(), &e.to_string());
        }
    };
    if cfg.server(server).is_none() {
        let names: Vec<&str> = cfg.servers.iter().map(|s| s.name.as_str()).collect();
        return fail(
            json,
            Exit::ConfigInvalid,
            "unknown-server",
            &format!(
                "server `{server}` is not defined in the configuration; servers: {}",
                names.join(", ")
            ),
        );
    }
    let names = sink_names(&cfg);
    if let Some(s) = only {
        let webhook_alias = s == "webhook" && !cfg.notify.webhook.is_empty();
        if !names.iter().any(|n| n == s) && !webhook_alias {
            return fail(
                json,
                Exit::Usage,
                "unknown-sink",
                &format!(
                    "no sink `{s}` is configured; configured: {}",
                    names.join(", ")
                ),
            );
        }
    }
    let dir = config.parent().unwrap_or(Path::new(".")).to_path_buf();
    let built = build(&cfg, server, &dir, only).await;

    let now_ms = crate::clock::wall()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
    let mut ev = Event::new(
        &NOTIFY_TEST,
        format!("notification test from server {server} (baton notify test)"),
    )
    .field("pid", std::process::id());
    ev.cluster = cfg.cluster_name.clone();
    ev.server = server.to_string();
    ev.time_ms = now_ms;

    let mut results = Vec::new();
    for s in &built.sinks {
        let start = crate::clock::now();
        let r = tokio::time::timeout(TEST_TIMEOUT, s.deliver(std::slice::from_ref(&ev))).await;
        let took_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        results.push(match r {
            Ok(Ok(())) => SinkResult {
                sink: s.name().to_string(),
                ok: true,
                took_ms,
                code: None,
                error: None,
            },
            Ok(Err(e)) => SinkResult {
                sink: s.name().to_string(),
                ok: false,
                took_ms,
                code: Some(e.code().to_string()),
                error: Some(e.to_string()),
            },
            Err(_) => SinkResult {
                sink: s.name().to_string(),
                ok: false,
                took_ms,
                code: Some("timeout".into()),
                error: Some(format!("no answer within {} s", TEST_TIMEOUT.as_secs())),
            },
        });
    }
    if let Some(cw) = &built.cloudwatch {
        let datum = Datum {
            name: "NotifyTest".into(),
            unit: Unit::Count,
            dims: vec![
                ("Cluster".into(), cfg.cluster_name.clone()),
                ("Server".into(), server.to_string()),
            ],
            values: vec![1.0],
            counts: vec![1.0],
            timestamp_ms: now_ms,
            storage_resolution: 60,
        };
        let start = crate::clock::now();
        let r = tokio::time::timeout(TEST_TIMEOUT, cw.put(std::slice::from_ref(&datum))).await;
        let took_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (ok, code, error) = match r {
            Ok(Ok(())) => (true, None, None),
            Ok(Err(e)) => (false, Some(e.code().to_string()), Some(e.to_string())),
            Err(_) => (
                false,
                Some("timeout".to_string()),
                Some("no answer".to_string()),
            ),
        };
        results.push(SinkResult {
            sink: cw.name().to_string(),
            ok,
            took_ms,
            code,
            error,
        });
    }
    for f in &built.failures {
        results.push(SinkResult {
            sink: f.sink.clone(),
            ok: false,
            took_ms: 0,
            code: Some("not-started".into()),
            error: Some(f.message.clone()),
        });
    }
    let all_ok = results.iter().all(|r| r.ok);
    if json {
        println!(
            "{}",
            serde_json::json!({
                "ok": all_ok,
                "cluster": cfg.cluster_name,
                "server": server,
                "event": ev,
                "sinks": results,
            })
        );
    } else {
        println!(
            "notification test from {server} (cluster {}), event {}:",
            cfg.cluster_name, ev.id
        );
        for r in &results {
            println!(
                "  {:<12} {:<6} {:>6} ms  {}",
                r.sink,
                if r.ok { "ok" } else { "FAILED" },
                r.took_ms,
                r.error.as_deref().unwrap_or("")
            );
        }
    }
    if all_ok {
        Exit::Ok
    } else {
        Exit::Failure
    }
}
