//! The `baton` command line without a running cluster: usage errors, configuration
//! checks, and an unreachable cluster. Fast; these run in parallel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use baton_tests::bin::baton_bin;
use baton_tests::client::run_cli;
use baton_tests::cluster::config_text;
use baton_tests::{ClusterSpec, MonitorSpec};

fn cli(args: &[&str]) -> baton_tests::CliOut {
    run_cli(&baton_bin(), args)
}

#[test]
fn unknown_arguments_exit_2() {
    for args in [
        &["--no-such-flag"][..],
        &["status", "--bogus"],
        &["group", "frobnicate", "web"],
        &["no-such-command"],
        &["cluster", "suspend", "--json", "extra-argument"],
    ] {
        let out = cli(args);
        assert_eq!(
            out.code,
            2,
            "`baton {}` should exit 2 (usage); stdout: {} stderr: {}",
            args.join(" "),
            out.stdout,
            out.stderr
        );
        assert!(
            out.stderr.contains("Usage"),
            "usage errors print a usage line: {}",
            out.stderr
        );
    }
}

#[test]
fn config_check_reports_file_line_column_and_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    // A TOML syntax error: a duration without quotes on line 6.
    let syntax = dir.path().join("syntax.toml");
    std::fs::write(
        &syntax,
        "[cluster]\nname = \"x\"\nkey_file = \"k\"\n\n[heartbeat]\ninterval = 100ms\n",
    )
    .unwrap();
    let out = cli(&["config", "check", &syntax.to_string_lossy()]);
    assert_eq!(out.code, 3, "stderr: {}", out.stderr);
    let want = format!("{}:6:", syntax.display());
    assert!(
        out.stderr.contains(&want),
        "expected `{want}COL` in stderr: {}",
        out.stderr
    );
    let col = out
        .stderr
        .split(&want)
        .nth(1)
        .and_then(|r| r.split(':').next())
        .and_then(|c| c.parse::<usize>().ok());
    assert!(
        col.is_some_and(|c| (12..=15).contains(&c)),
        "the column should point into `100ms` (12..=15): {}",
        out.stderr
    );

    // A key that does not exist, on line 6, column 1.
    let key = dir.path().join("key.toml");
    std::fs::write(
        &key,
        "[cluster]\nname = \"x\"\nkey_file = \"k\"\n\n[heartbeat]\nintervall = \"100ms\"\n",
    )
    .unwrap();
    let out = cli(&["config", "check", &key.to_string_lossy()]);
    assert_eq!(out.code, 3, "stderr: {}", out.stderr);
    let want = format!("{}:6:1:", key.display());
    assert!(
        out.stderr.contains(&want) && out.stderr.contains("intervall"),
        "expected `{want}` and the key name in stderr: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("did you mean `interval`"),
        "a near miss gets a suggestion: {}",
        out.stderr
    );

    // The JSON form carries the same location.
    let out = cli(&["config", "check", "--json", &key.to_string_lossy()]);
    assert_eq!(out.code, 3);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"]["code"], "config-invalid");
    assert_eq!(v["diagnostics"][0]["line"], 6);
    assert_eq!(v["diagnostics"][0]["column"], 1);
    assert_eq!(v["diagnostics"][0]["key"], "heartbeat.intervall");

    // A missing file is a configuration error too, not a crash.
    let out = cli(&[
        "config",
        "check",
        &dir.path().join("nope.toml").to_string_lossy(),
    ]);
    assert_eq!(out.code, 3, "stderr: {}", out.stderr);
}

#[test]
fn harness_config_is_valid_and_unreachable_cluster_exits_4() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("cluster.key");
    run_cli(&baton_bin(), &["keygen", &key.to_string_lossy()]).ok("keygen");
    // keygen refuses to overwrite a key.
    let again = cli(&["keygen", &key.to_string_lossy()]);
    assert_ne!(again.code, 0, "keygen must not overwrite an existing key");
    let spec = ClusterSpec::new("cli", 199).with_monitor(MonitorSpec::default());
    let cfg = dir.path().join("baton.toml");
    // Nothing listens on 127.0.199.x:29998.
    std::fs::write(&cfg, config_text(&spec, dir.path(), 29_998)).unwrap();
    let out = cli(&["config", "check", &cfg.to_string_lossy()]);
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert!(
        out.stdout.contains("3 servers, 1 groups, 1 monitors"),
        "{}",
        out.stdout
    );

    let out = cli(&["status", "--json", "-c", &cfg.to_string_lossy()]);
    assert_eq!(
        out.code, 4,
        "no agent runs: unreachable; {}{}",
        out.stdout, out.stderr
    );
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"]["code"], "unreachable");

    // An unknown server name given to -s is a usage error.
    let out = cli(&["status", "-c", &cfg.to_string_lossy(), "-s", "node-9"]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);

    // A missing key file: exit 7.
    std::fs::remove_file(&key).unwrap();
    let out = cli(&["status", "-c", &cfg.to_string_lossy()]);
    assert_eq!(out.code, 7, "{}{}", out.stdout, out.stderr);
}

#[test]
fn keygen_token_and_resource_speak_json() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("cluster.key");
    let keys = key.to_string_lossy().to_string();
    let json = |out: &baton_tests::CliOut| -> serde_json::Value {
        serde_json::from_str(out.stdout.trim())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {out:?}"))
    };
    let out = cli(&["keygen", &keys, "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let v = json(&out);
    assert_eq!(v["ok"], true);
    assert_eq!(v["key_file"], keys.as_str());
    // Refused again, as JSON with a stable code.
    let out = cli(&["keygen", &keys, "--json"]);
    assert_eq!(out.code, 7, "{out:?}");
    let v = json(&out);
    assert_eq!(v["ok"], false);
    assert!(
        v["error"]["code"].as_str().is_some_and(|c| !c.is_empty()),
        "{v}"
    );

    let spec = ClusterSpec::new("clijson", 198);
    let cfg = dir.path().join("baton.toml");
    std::fs::create_dir_all(dir.path().join("claim")).unwrap();
    std::fs::write(&cfg, config_text(&spec, dir.path(), 29_996)).unwrap();
    let cfgs = cfg.to_string_lossy().to_string();

    let out = cli(&["token", "--role", "read", "-c", &cfgs, "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let v = json(&out);
    assert_eq!(v["role"], "read");
    let token = v["token"].as_str().unwrap();
    assert!(
        token.len() == 64 && token.chars().all(|c| c.is_ascii_hexdigit()),
        "{v}"
    );

    let out = cli(&[
        "resource", "check", "web", "claim", "-c", &cfgs, "-s", "node-1", "--json",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let v = json(&out);
    assert_eq!(
        (v["ok"].clone(), v["op"].clone(), v["resource"].clone()),
        (true.into(), "check".into(), "claim".into()),
        "{v}"
    );
    assert!(v["result"].as_str().is_some(), "{v}");
    let out = cli(&[
        "resource", "check", "web", "nope", "-c", &cfgs, "-s", "node-1", "--json",
    ]);
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(json(&out)["error"]["code"], "unknown-resource");

    let tls = dir.path().join("tls");
    let out = cli(&[
        "keygen",
        "--tls",
        &tls.to_string_lossy(),
        "-c",
        &cfgs,
        "--json",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let v = json(&out);
    assert_eq!(v["reused_ca"], false);
    assert_eq!(v["servers"].as_array().map(Vec::len), Some(3), "{v}");
}

#[test]
fn completions_and_man_pages_come_from_the_cli_definition() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = cli(&["completions", shell]);
        assert_eq!(out.code, 0, "{shell}: {}", out.stderr);
        // (fish writes long options as `-l check`.)
        for word in ["status", "group", "mirror", "check"] {
            assert!(out.stdout.contains(word), "{shell} completion lacks {word}");
        }
    }
    // The bash script is valid bash.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("baton.bash");
    std::fs::write(&script, cli(&["completions", "bash"]).stdout).unwrap();
    let syntax = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        syntax.status.success(),
        "{}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    // An unknown shell is a usage error.
    assert_eq!(cli(&["completions", "tcsh"]).code, 2);

    let out = cli(&["man"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains(".TH baton 1"),
        "{}",
        &out.stdout[..200.min(out.stdout.len())]
    );
    let man = dir.path().join("man1");
    let out = cli(&["man", "--dir", &man.to_string_lossy()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for page in [
        "baton.1",
        "baton-status.1",
        "baton-group-move.1",
        "baton-mirror-force-primary.1",
    ] {
        let text = std::fs::read_to_string(man.join(page)).unwrap();
        assert!(text.contains(".TH "), "{page}");
    }
    let status = std::fs::read_to_string(man.join("baton-status.1")).unwrap();
    assert!(status.contains("check"), "the page documents --check");
    // Hidden commands and clap's own help subcommands get no page.
    assert!(!man.join("baton-mirror-daemon.1").exists());
    assert!(!man.join("baton-help.1").exists());
}
