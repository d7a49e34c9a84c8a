#![forbid(unsafe_code)]

use std::process::ExitCode;

use baton_agent::cli::{Cli, Cmd};
use baton_agent::exit::Exit;

/// Logs go to stderr; the agent's (`keep`) also into its recent-lines buffer for
/// `GET /v1/logs`.
fn init_tracing(json: bool, keep: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("BATON_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    match (keep, json) {
        (true, true) => b.with_writer(baton_agent::logbuf::Tee).json().init(),
        (true, false) => b.with_writer(baton_agent::logbuf::Tee).init(),
        (false, true) => b.with_writer(std::io::stderr).json().init(),
        (false, false) => b.with_writer(std::io::stderr).init(),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::parse_args(std::env::args_os()) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                Exit::Usage.code()
            } else {
                0
            });
        }
    };
    // The agent runs on one worker: its main loop, socket receivers, timers and API then
    // share the thread epoll wakes, with no hand-off between threads for each heartbeat
    // or tick (an idle agent's largest cost, docs/src/benchmarks.md). Blocking work goes
    // to the blocking pool or threads of its own (state writer, stall watcher).
    let workers = if matches!(cli.cmd, Cmd::Agent { .. }) {
        1
    } else {
        2
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("baton: cannot start the async runtime: {e}");
            return ExitCode::from(Exit::Failure.code());
        }
    };
    let exit = rt.block_on(async move {
        match cli.cmd {
            Cmd::Agent {
                cfg: baton_agent::args::ConfigArg { config },
                srv: baton_agent::args::ServerArg { server },
                state_dir,
                log_format,
            } => {
                init_tracing(log_format == "json", true);
                // On a worker of the runtime, not on this thread: the main loop then runs
                // where the socket receivers and timers wake it (no hand-off to another
                // thread for each heartbeat; measured in docs/src/benchmarks.md).
                let agent = tokio::spawn(baton_agent::runtime::run_agent(
                    baton_agent::runtime::AgentOptions {
                        config,
                        server,
                        state_dir,
                    },
                ));
                let result = match agent.await {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("baton agent: the agent stopped abnormally: {e}");
                        return Exit::Failure;
                    }
                };
                match result {
                    Ok(_) => Exit::Ok,
                    Err(e) => {
                        tracing::error!(code = e.code(), "{e}");
                        eprintln!("baton agent: {e}");
                        if let baton_agent::runtime::AgentError::Config(c) = &e {
                            for d in &c.diagnostics {
                                eprintln!("{d}");
                            }
                        }
                        e.exit()
                    }
                }
            }
            Cmd::Demo {
                dir,
                interval,
                timeout,
                net,
                port,
                json,
            } => {
                baton_agent::demo::run(baton_agent::demo::DemoOptions {
                    dir,
                    interval,
                    timeout,
                    net,
                    port,
                    json,
                })
                .await
            }
            Cmd::DemoApp { listen, name } => baton_agent::demo::app(listen, name).await,
            Cmd::MirrorDaemon { a } => {
                init_tracing(false, false);
                baton_agent::mirror_cmd::daemon(a).await
            }
            Cmd::Witness {
                listen,
                key_file,
                startup_quiet,
                state_file,
                limits,
                log_format,
            } => {
                init_tracing(log_format == "json", false);
                baton_agent::witness::run_cli(listen, key_file, &startup_quiet, state_file, &limits)
                    .await
            }
            _ => baton_agent::cli::run(cli).await,
        }
    });
    ExitCode::from(exit.code())
}
