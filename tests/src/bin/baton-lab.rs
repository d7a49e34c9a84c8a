//! `baton-lab`: the fault lab's command line (root only).
//!
//! ```text
//! baton-lab run --scenario N [--servers N] [--repeat N] [--duration SECS] [--witness] [--keep]
//! baton-lab run --all [...]
//! baton-lab bench [--runs N] [--soak SECS] [--servers N] [--interval MS] [--timeout MS]
//!                 [--advert MS] [--dad] [--keep]
//! baton-lab search [--soak SECS] [--runs N] [--servers N] [--baton MS/MS,...]
//!                  [--adverts MS,...] [--keep]
//! baton-lab list
//! ```
//!
//! The `baton` binary is found next to this one (or through `BATON_BIN`); build both with
//! `cargo build -p baton-tests --bin baton-lab && cargo build --bin baton`.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;
use std::time::Duration;

use baton_tests::lab::bench::{self, BenchOptions, SearchOptions};
use baton_tests::lab::scenarios::{self, Options, SCENARIOS};

const USAGE: &str = "usage:
  baton-lab run --scenario N [--servers N] [--repeat N] [--duration SECS] [--witness] [--keep]
  baton-lab run --all [--servers N] [--repeat N] [--duration SECS] [--witness] [--keep]
  baton-lab bench [--runs N] [--soak SECS] [--servers N] [--interval MS] [--timeout MS] [--advert MS] [--dad] [--keep]
  baton-lab search [--soak SECS] [--runs N] [--servers N] [--baton MS/MS,...] [--adverts MS,...] [--keep]
  baton-lab list

  run       build the lab (network namespaces, root only), run the scenario(s), print
            each report (pass/fail, failover times, timeline); exit 1 if one failed
  --repeat  fault cycles in one lab (scenarios 1, 2, 5, 8, 9, 10, 11, 12) or, with --all, rounds
  --duration  length of the loss/jitter soak of scenario 6 (default 30)
  bench     scenario 1 failover time of Baton and keepalived side by side, then false
            failovers of both under 20% loss + 50±50 ms delay (--soak SECS, 0 = none)
  search    the loss-proof settings: the tightest Baton heartbeat/timeout (--baton, tried
            in order, default 100/300,100/500,200/600,200/1000,300/1500,500/2500,1000/5000)
            and keepalived advert_int (--adverts, all at once, default 200 ms to 40 s)
            with no false failover, self-fence or double holder in a soak of 20% loss +
            50±50 ms delay (--soak SECS, default 600), then --runs failovers of each at
            those settings (default 20)";

fn num<T: std::str::FromStr>(
    args: &mut impl Iterator<Item = String>,
    flag: &str,
) -> Result<T, String> {
    let v = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
    v.parse().map_err(|_| format!("{flag}: not a number: {v}"))
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("baton-lab: {e}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> Result<ExitCode, String> {
    let mut args = std::env::args().skip(1);
    let cmd = args.next().unwrap_or_else(|| "help".into());
    match cmd.as_str() {
        "list" => {
            for (n, t) in SCENARIOS {
                println!("{n:>2}  {t}");
            }
            println!(
                " 0  observer self-check (a VIP added by hand on a second server must be caught)"
            );
            Ok(ExitCode::SUCCESS)
        }
        "run" => {
            let mut o = Options::default();
            let mut which: Vec<u8> = Vec::new();
            let mut all = false;
            while let Some(a) = args.next() {
                match a.as_str() {
                    "--scenario" | "-s" => which.push(num(&mut args, &a)?),
                    "--all" => all = true,
                    "--servers" => o.servers = Some(num(&mut args, &a)?),
                    "--repeat" => o.repeat = num(&mut args, &a)?,
                    "--duration" => o.duration = Duration::from_secs(num(&mut args, &a)?),
                    "--witness" => o.witness = true,
                    "--keep" => o.keep = true,
                    _ => return Err(format!("unknown argument {a}")),
                }
            }
            let mut rounds = 1;
            if all {
                which = SCENARIOS.iter().map(|(n, _)| *n).collect();
                rounds = o.repeat.max(1);
                o.repeat = 1;
            }
            if which.is_empty() {
                return Err("say which scenario: --scenario N or --all".into());
            }
            let mut reports = Vec::new();
            for _ in 0..rounds {
                for &n in &which {
                    println!("=== scenario {n}: {}", scenarios::title(n));
                    let r = if n == 0 {
                        scenarios::self_check()
                    } else {
                        scenarios::run(n, &o)
                    };
                    println!("{r}");
                    reports.push(r);
                }
            }
            println!("=== summary\n{}", scenarios::summary(&reports));
            let failed = reports.iter().any(|r| !r.failures.is_empty());
            let skipped = reports.iter().all(|r| r.skipped.is_some());
            Ok(if failed || skipped {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        "bench" => {
            let mut o = BenchOptions::default();
            while let Some(a) = args.next() {
                match a.as_str() {
                    "--runs" => o.runs = num(&mut args, &a)?,
                    "--soak" => o.soak = Duration::from_secs(num(&mut args, &a)?),
                    "--servers" => o.servers = num(&mut args, &a)?,
                    "--interval" => o.interval_ms = num(&mut args, &a)?,
                    "--timeout" => o.timeout_ms = num(&mut args, &a)?,
                    "--advert" => o.advert_ms = num(&mut args, &a)?,
                    "--dad" => o.dad = true,
                    "--keep" => o.keep = true,
                    _ => return Err(format!("unknown argument {a}")),
                }
            }
            let r = bench::run(&o)?;
            println!("{r}");
            Ok(ExitCode::SUCCESS)
        }
        "search" => {
            let mut o = SearchOptions::default();
            while let Some(a) = args.next() {
                match a.as_str() {
                    "--runs" => o.runs = num(&mut args, &a)?,
                    "--soak" => o.soak = Duration::from_secs(num(&mut args, &a)?),
                    "--servers" => o.servers = num(&mut args, &a)?,
                    "--baton" => {
                        let v = args.next().ok_or("--baton needs a value")?;
                        o.baton = v
                            .split(',')
                            .map(|p| {
                                let (i, t) = p.split_once('/').ok_or_else(|| {
                                    format!("--baton: {p} is not INTERVAL/TIMEOUT")
                                })?;
                                Ok((
                                    i.parse().map_err(|_| format!("--baton: {i}"))?,
                                    t.parse().map_err(|_| format!("--baton: {t}"))?,
                                ))
                            })
                            .collect::<Result<_, String>>()?;
                    }
                    "--adverts" => {
                        let v = args.next().ok_or("--adverts needs a value")?;
                        o.adverts = v
                            .split(',')
                            .map(|x| x.parse().map_err(|_| format!("--adverts: {x}")))
                            .collect::<Result<_, String>>()?;
                    }
                    "--keep" => o.keep = true,
                    _ => return Err(format!("unknown argument {a}")),
                }
            }
            let r = bench::search(&o)?;
            println!("{r}");
            Ok(ExitCode::SUCCESS)
        }
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        _ => Err(format!("unknown command {cmd}")),
    }
}
