use std::time::{Duration, Instant};

use baton_providers::process::{execute, run_command, CommandSpec, OutputMode};
use baton_providers::ProviderError;

use crate::{alive, kill, read_pid};

#[tokio::test]
async fn captures_output_env_and_dir() {
    let dir = tempfile::tempdir().unwrap();
    let spec = CommandSpec::shell(
        "t",
        "echo out; echo err >&2; echo \"$FOO\"; pwd",
        Duration::from_secs(5),
    )
    .with_env([("FOO", "bar")])
    .with_dir(Some(dir.path().to_path_buf()));
    let out = run_command(&spec).await.unwrap();
    let canon = dir.path().canonicalize().unwrap();
    assert_eq!(out.stdout, format!("out\nbar\n{}\n", canon.display()));
    assert_eq!(out.stderr, "err\n");
    assert!(!out.output_detached);
}

#[tokio::test]
async fn non_zero_exit_is_command_failed() {
    let spec = CommandSpec::shell(
        "the script",
        "echo partial; echo 'it broke' >&2; exit 7",
        Duration::from_secs(5),
    );
    let err = run_command(&spec).await.unwrap_err();
    assert_eq!(
        err,
        ProviderError::CommandFailed {
            what: "the script".into(),
            status: 7,
            stderr: "it broke".into()
        }
    );
    assert_eq!(err.to_string(), "the script exited with status 7: it broke");
    // Without stderr, stdout explains.
    let spec = CommandSpec::shell("s", "echo only-stdout; exit 2", Duration::from_secs(5));
    match run_command(&spec).await.unwrap_err() {
        ProviderError::CommandFailed { stderr, .. } => assert_eq!(stderr, "only-stdout"),
        e => panic!("{e:?}"),
    }
}

#[tokio::test]
async fn signal_death_is_128_plus_signal() {
    let spec = CommandSpec::shell("s", "kill -9 $$", Duration::from_secs(5));
    let out = execute(&spec).await.unwrap();
    assert_eq!(out.status, 137);
}

#[tokio::test]
async fn stderr_is_bounded() {
    let spec = CommandSpec::shell(
        "s",
        "i=0; while [ $i -lt 3000 ]; do echo line-$i >&2; i=$((i+1)); done; exit 1",
        Duration::from_secs(10),
    );
    let out = execute(&spec).await.unwrap();
    assert!(out.stderr.len() <= 4096);
    assert!(out.stderr.ends_with("line-2999\n"));
}

#[tokio::test]
async fn missing_program_is_spawn_error() {
    let spec = CommandSpec::argv(
        "helper",
        "baton-no-such-binary",
        ["x"],
        Duration::from_secs(5),
    )
    .with_missing_hint("install the baton-helpers package");
    match run_command(&spec).await.unwrap_err() {
        ProviderError::Spawn { what, reason } => {
            assert_eq!(what, "helper");
            assert!(reason.contains("not found in PATH"), "{reason}");
            assert!(
                reason.contains("install the baton-helpers package"),
                "{reason}"
            );
        }
        e => panic!("{e:?}"),
    }
    let spec = CommandSpec::shell("s", "true", Duration::from_secs(5))
        .with_dir(Some("/nonexistent/baton".into()));
    let e = run_command(&spec).await.unwrap_err();
    assert_eq!(e.code(), "spawn-failed");
    assert!(e.to_string().contains("working directory"), "{e}");
}

#[tokio::test]
async fn timeout_kills_the_whole_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidf = dir.path().join("grandchild.pid");
    let line = format!("sleep 60 & echo $! > '{}'; sleep 60", pidf.display());
    let spec = CommandSpec::shell("hang", line, Duration::from_millis(500));
    let started = Instant::now();
    let err = run_command(&spec).await.unwrap_err();
    assert_eq!(err, ProviderError::Timeout(500));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let grandchild = read_pid(&pidf);
    let mut dead = false;
    for _ in 0..50 {
        if !alive(grandchild) {
            dead = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if !dead {
        kill(grandchild);
    }
    assert!(dead, "grandchild {grandchild} survived the timeout");
}

#[tokio::test]
async fn timeout_escalates_to_sigkill() {
    // Ignores SIGTERM (and so does the sleep it starts): needs SIGKILL after the grace.
    let spec = CommandSpec::shell(
        "stubborn",
        "trap '' TERM; sleep 60",
        Duration::from_millis(300),
    );
    let started = Instant::now();
    let err = run_command(&spec).await.unwrap_err();
    assert_eq!(err.code(), "timeout");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "{took:?}"
    );
}

#[tokio::test]
async fn background_child_survives_and_does_not_block() {
    let dir = tempfile::tempdir().unwrap();
    let pidf = dir.path().join("daemon.pid");
    // The daemon inherits stdout and stderr and keeps them open.
    let line = format!(
        "echo starting; sleep 30 & echo $! > '{}'; echo started",
        pidf.display()
    );
    let spec = CommandSpec::shell("start", line, Duration::from_secs(10));
    let started = Instant::now();
    let out = run_command(&spec).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.stdout, "starting\nstarted\n");
    assert!(out.output_detached);
    let daemon = read_pid(&pidf);
    std::thread::sleep(Duration::from_millis(300));
    assert!(alive(daemon), "the background process was killed");
    kill(daemon);
}

#[tokio::test]
async fn discard_mode_captures_nothing() {
    let spec = CommandSpec::shell("s", "echo hi; echo err >&2", Duration::from_secs(5))
        .with_output(OutputMode::Discard);
    let out = run_command(&spec).await.unwrap();
    assert_eq!(out.stdout, "");
    assert_eq!(out.stderr, "");
}

#[tokio::test]
async fn dropped_future_kills_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidf = dir.path().join("child.pid");
    let line = format!("echo $$ > '{}'; sleep 60", pidf.display());
    let spec = CommandSpec::shell("s", line, Duration::from_secs(60));
    let r = tokio::time::timeout(Duration::from_millis(500), run_command(&spec)).await;
    assert!(r.is_err());
    let pid = read_pid(&pidf);
    let mut dead = false;
    for _ in 0..50 {
        if !alive(pid) {
            dead = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !dead {
        kill(pid);
    }
    assert!(dead);
}
