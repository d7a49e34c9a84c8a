use std::time::{Duration, Instant};

use baton_providers::local::LocalRegistry;
use baton_providers::{CheckOutcome, ProviderError, Registry};

use crate::{alive, ctx, kill, qp, read_pid, table};

#[tokio::test]
async fn start_check_stop_with_scripts() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("up");
    let env_out = dir.path().join("env.txt");
    let params = table(&format!(
        r#"
start = "touch {flag} && env | grep -E '^(BATON_|APP_)' | sort > {env}"
stop = "rm -f {flag}"
check = "test -e {flag} || exit 3"
[env]
APP_MODE = "blue"
"#,
        flag = qp(&flag).trim_matches('"'),
        env = qp(&env_out).trim_matches('"'),
    ));
    let d = LocalRegistry.build_resource("exec", &params).unwrap();
    assert_eq!(d.kind(), "exec");
    let c = ctx("node-1", 42, Duration::from_secs(5));
    assert_eq!(d.check(&c).await.unwrap(), CheckOutcome::Inactive);
    d.activate(&c).await.unwrap();
    assert_eq!(d.check(&c).await.unwrap(), CheckOutcome::Active);
    let env = std::fs::read_to_string(&env_out).unwrap();
    for line in [
        "APP_MODE=blue",
        "BATON_ACTION=start",
        "BATON_CLUSTER=test-cluster",
        "BATON_EPOCH=42",
        "BATON_GROUP=web",
        "BATON_RESOURCE=app",
        "BATON_SERVER=node-1",
        "BATON_TIMEOUT_MS=5000",
    ] {
        assert!(env.lines().any(|l| l == line), "missing {line} in:\n{env}");
    }
    d.deactivate(&c).await.unwrap();
    assert_eq!(d.check(&c).await.unwrap(), CheckOutcome::Inactive);
    // Idempotent stop.
    d.deactivate(&c).await.unwrap();
}

#[tokio::test]
async fn check_status_meanings() {
    let c = ctx("node-1", 1, Duration::from_secs(5));
    for (status, want) in [
        (0, CheckOutcome::Active),
        (1, CheckOutcome::Inactive),
        (3, CheckOutcome::Inactive),
        (
            2,
            CheckOutcome::Degraded("check command exited with status 2: half up".into()),
        ),
    ] {
        let p = table(&format!(
            "start = 'true'\nstop = 'true'\ncheck = 'echo half up >&2; exit {status}'"
        ));
        let d = LocalRegistry.build_resource("exec", &p).unwrap();
        assert_eq!(d.check(&c).await.unwrap(), want, "status {status}");
    }
    let p = table("start = 'true'\nstop = 'true'");
    let d = LocalRegistry.build_resource("exec", &p).unwrap();
    assert_eq!(
        d.check(&c).await.unwrap(),
        CheckOutcome::Degraded("no check command or pid_file configured: cannot verify".into())
    );
}

#[tokio::test]
async fn background_daemon_with_pid_file() {
    let dir = tempfile::tempdir().unwrap();
    let pidf = dir.path().join("app.pid");
    let params = table(&format!(
        r#"
start = 'sleep 30 & echo $! > "$BATON_PID_FILE"'
stop = 'if [ -e "$BATON_PID_FILE" ]; then kill $(cat "$BATON_PID_FILE"); rm -f "$BATON_PID_FILE"; fi'
pid_file = {}
"#,
        qp(&pidf)
    ));
    let d = LocalRegistry.build_resource("exec", &params).unwrap();
    let c = ctx("node-1", 1, Duration::from_secs(10));
    assert_eq!(d.check(&c).await.unwrap(), CheckOutcome::Inactive);
    let started = Instant::now();
    d.activate(&c).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let pid = read_pid(&pidf);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(alive(pid), "daemon was killed when start returned");
    assert_eq!(d.check(&c).await.unwrap(), CheckOutcome::Active);
    d.deactivate(&c).await.unwrap();
    for _ in 0..50 {
        if !alive(pid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let still = alive(pid);
    if still {
        kill(pid);
    }
    assert!(!still);
    assert_eq!(d.check(&c).await.unwrap(), CheckOutcome::Inactive);
}

#[tokio::test]
async fn failing_start_reports_stderr() {
    let p = table("start = 'echo no config found >&2; exit 4'\nstop = 'true'");
    let d = LocalRegistry.build_resource("exec", &p).unwrap();
    let e = d
        .activate(&ctx("node-1", 1, Duration::from_secs(5)))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "start command of exec resource `app` exited with status 4: no config found"
    );
}

#[tokio::test]
async fn hanging_start_times_out() {
    let p = table("start = 'sleep 60'\nstop = 'true'");
    let d = LocalRegistry.build_resource("exec", &p).unwrap();
    let started = Instant::now();
    let e = d
        .activate(&ctx("node-1", 1, Duration::from_millis(300)))
        .await
        .unwrap_err();
    assert_eq!(e, ProviderError::Timeout(300));
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[test]
fn param_errors() {
    let e = LocalRegistry
        .build_resource("exec", &table("strat = 'x'\nstop = 'y'"))
        .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("strat"));
    assert_eq!(
        e.message,
        "unknown key `strat` (did you mean `start`?); expected one of start, stop, check, pid_file, dir, env"
    );
    let e = LocalRegistry
        .build_resource("exec", &table("stop = 'y'"))
        .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("start"));
    assert_eq!(e.message, "missing required key `start`");
    let e = LocalRegistry
        .build_resource("exec", &table("start = ' '\nstop = 'y'"))
        .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("start"));
    let e = LocalRegistry
        .build_resource("exec", &table("start = 'x'\nstop = 'y'\n[env]\nA = 1"))
        .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("env.A"));
}
