//! API roles and the local Unix socket (issue 9): a read token may only read, an
//! operator token may also send commands, issued token files work beside the derived
//! tokens, a wrong token is refused; an operator without access to the cluster key uses
//! the local agent's Unix socket, whose group decides who may connect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use baton_tests::skip::skip;
use baton_tests::CliOut;
use baton_tests::{serial, Cluster, ClusterSpec, GROUP};

const T: Duration = Duration::from_secs(20);
/// An issued operator token (any 32+ visible characters).
const ISSUED: &str = "issued-operator-token-0123456789abcdef";

fn write_secret(path: &Path, text: &str) {
    std::fs::write(path, format!("{text}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn json_code(out: &CliOut) -> String {
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim())
        .or_else(|_| serde_json::from_str(out.stderr.trim()))
        .unwrap_or_else(|_| panic!("no JSON in {out:?}"));
    v["error"]["code"].as_str().unwrap_or_default().to_string()
}

#[test]
fn read_and_operator_tokens_and_issued_tokens() {
    let _serial = serial();
    let secrets = tempfile::tempdir().unwrap();
    let issued = secrets.path().join("operator.tokens");
    write_secret(&issued, &format!("# issued to the on-call rota\n{ISSUED}"));
    let mut spec = ClusterSpec::new("roles", 164);
    spec.api_config = format!("operator_tokens_file = \"{}\"\n", issued.display());
    let c = Cluster::start(spec);
    c.wait_owner(Some("node-1"), T);

    let token = |role: &str| {
        let out = c.ctl(&["token", "--role", role]);
        assert_eq!(out.code, 0, "{out:?}");
        let t = out.stdout.trim().to_string();
        assert_eq!(t.len(), 64, "{t}");
        assert!(t.chars().all(|ch| ch.is_ascii_hexdigit()), "{t}");
        t
    };
    let (read, operator) = (token("read"), token("operator"));
    assert_ne!(read, operator);
    let read_file = secrets.path().join("read.token");
    let op_file = secrets.path().join("op.token");
    let wrong_file = secrets.path().join("wrong.token");
    write_secret(&read_file, &read);
    write_secret(&op_file, &operator);
    write_secret(&wrong_file, &"0".repeat(64));
    let with = |f: &Path, args: &[&str]| {
        let mut v = args.to_vec();
        let f = f.to_string_lossy().to_string();
        v.extend(["--token-file", f.as_str()]);
        c.ctl(&v)
    };

    // Read: status and alerts, no command.
    let out = with(&read_file, &["status", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains(GROUP), "{}", out.stdout);
    assert_eq!(with(&read_file, &["alerts", "--json"]).code, 0);
    let out = with(
        &read_file,
        &["group", "move", GROUP, "--to", "node-2", "--json"],
    );
    assert_eq!(out.code, 6, "{out:?}");
    assert_eq!(json_code(&out), "forbidden");
    assert_eq!(c.wait_owner(Some("node-1"), T).0, "node-1");

    // Operator: the move happens.
    let out = with(&op_file, &["group", "move", GROUP, "--to", "node-2"]);
    assert_eq!(out.code, 0, "{out:?}");
    c.wait_owner(Some("node-2"), T);

    // The issued token is an operator's too.
    let issued_file = secrets.path().join("issued.token");
    write_secret(&issued_file, ISSUED);
    let out = with(&issued_file, &["group", "move", GROUP, "--to", "node-3"]);
    assert_eq!(out.code, 0, "{out:?}");
    c.wait_owner(Some("node-3"), T);

    // A wrong token: unauthorized, nothing changes.
    let out = with(
        &wrong_file,
        &["group", "move", GROUP, "--to", "node-1", "--json"],
    );
    assert_eq!(out.code, 6, "{out:?}");
    assert_eq!(json_code(&out), "unauthorized");
    let out = with(&wrong_file, &["status"]);
    assert_eq!(out.code, 6, "{out:?}");
    assert_eq!(c.wait_owner(Some("node-3"), T).0, "node-3");
}

/// `baton` run as another user (uid 65534) who cannot read the key: it talks to the
/// local agent through the Unix socket when its group may open it, and fails with a
/// clear message when not.
#[test]
fn the_unix_socket_serves_operators_without_the_key() {
    let _serial = serial();
    if !nix::unistd::Uid::effective().is_root() {
        skip(
            "the_unix_socket_serves_operators_without_the_key",
            "needs root to run the CLI as another user",
        );
        return;
    }
    let setpriv = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("setpriv"))
            .find(|f| f.is_file())
    });
    let Some(setpriv) = setpriv else {
        skip(
            "the_unix_socket_serves_operators_without_the_key",
            "setpriv (util-linux) is not installed",
        );
        return;
    };
    let group = nix::unistd::Group::from_gid(65534.into())
        .ok()
        .flatten()
        .map(|g| g.name)
        .expect("a group with gid 65534 (nogroup)");
    let mut spec = ClusterSpec::new("sock", 165);
    spec.api_config = format!("socket_group = \"{group}\"\nsocket_mode = 0o660\n");
    let c = Cluster::start(spec);
    c.wait_owner(Some("node-1"), T);
    // The other user may read the configuration and run a copy of the binary, not the key.
    std::fs::set_permissions(&c.dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(&c.config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let bin = c.dir.join("baton-copy");
    std::fs::copy(baton_tests::bin::baton_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = c.dir.join("run").join("it-sock-node-1.sock");
    let meta = std::fs::metadata(&sock).expect("node-1's socket");
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), 65534);

    let as_user = |gid: u32, args: &[&str]| -> CliOut {
        let cfg = c.config.to_string_lossy().to_string();
        let out = Command::new(&setpriv)
            .args([
                "--reuid=65534",
                &format!("--regid={gid}"),
                "--clear-groups",
                "--",
            ])
            .arg(&bin)
            .args(args)
            .args(["-c", &cfg])
            .env_remove("BATON_CONFIG")
            .env("BATON_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        CliOut {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).to_string(),
        }
    };
    // In the socket's group: status and a command work without the key.
    let out = as_user(65534, &["status", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains(GROUP), "{}", out.stdout);
    let out = as_user(65534, &["group", "move", GROUP, "--to", "node-2"]);
    assert_eq!(out.code, 0, "{out:?}");
    c.wait_owner(Some("node-2"), T);
    // Not in it: no key, no socket, a clear error that names both.
    let out = as_user(1, &["status"]);
    assert_eq!(out.code, 7, "{out:?}");
    assert!(
        out.stderr.contains("Permission denied") || out.stderr.contains("permission"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("socket"), "{}", out.stderr);
    assert!(out.stderr.contains("--token-file"), "{}", out.stderr);
}
