//! `baton support-bundle`: what a bug report needs from every reachable server, in one
//! `.tar.gz`, without a secret in it.
//!
//! Through the API (with the CLI's token): each server's status, its recent events (the
//! alert log), its running configuration with secrets removed
//! ([`baton_core::config::changes::redact_for_bundle`]), its version and digest, and its
//! agent's recent log lines (`GET /v1/logs`, [`crate::logbuf`]). When run on a server,
//! the local journal of the `baton` unit is added too if `journalctl` gives it (older
//! lines, what the agent's children printed); `README.txt` in the bundle says what was
//! not collected.
//!
//! The archive is written with `flate2` (gzip) and a small ustar writer (a few regular
//! files, names under 100 bytes), so no `tar` program is needed.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use baton_core::config::Config;
use baton_core::events::Event;

use crate::api_types::{AgentStatus, ClusterStatus, RunningConfig};
use crate::client::Client;

/// What was written.
pub struct Bundle {
    pub path: PathBuf,
    /// Servers that answered.
    pub reached: Vec<String>,
    /// What could not be collected, and why.
    pub missing: Vec<String>,
}

/// Events taken from each server's alert log.
const EVENTS: usize = 2000;
/// Agent log lines taken from each server (`GET /v1/logs`).
const LOG_LINES: usize = crate::logbuf::KEPT;
/// The answer of `GET /v1/logs`.
#[derive(serde::Deserialize)]
struct AgentLog {
    lines: Vec<String>,
}
/// Journal lines taken on the local server.
const JOURNAL_LINES: &str = "5000";

/// Collect from `servers` and write the archive (to `output`, else a name with the
/// cluster and the time in the current directory).
pub async fn collect(
    client: &Client,
    cfg: &Config,
    servers: &[(String, SocketAddr)],
    output: Option<PathBuf>,
) -> Result<Bundle, String> {
    let now = crate::clock::unix_ms();
    let stamp = crate::status_view::iso(now).replace(':', "");
    let top = format!("baton-support-{}-{stamp}", cfg.cluster_name);
    let path = output.unwrap_or_else(|| PathBuf::from(format!("{top}.tar.gz")));
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut reached = Vec::new();
    let mut missing = Vec::new();
    let mut summary = Vec::new();
    let t = Duration::from_secs(5);
    let pretty = |v: &dyn erased::Json| v.json();

    if client.is_unix() {
        missing.push(
            "other servers: the CLI reached the agent through its Unix socket (no token), which \
             answers for this server only; pass --token-file to collect from every server"
                .to_string(),
        );
    }
    let mut cluster_done = false;
    let mut logs_ok = 0usize;
    for (name, addr) in servers {
        let dir = format!("{top}/servers/{name}");
        match client.get::<AgentStatus>(*addr, "/v1/status", t).await {
            Ok(st) => {
                reached.push(name.clone());
                summary.push(format!(
                    "{name}: baton {} (pid {}, up {}), config digest {}",
                    st.version,
                    st.pid,
                    crate::status_view::ago(st.uptime_ms),
                    st.engine.digest
                ));
                files.push((
                    format!("{dir}/version.txt"),
                    format!("baton {}\ndigest {}\n", st.version, st.engine.digest).into_bytes(),
                ));
                files.push((format!("{dir}/status.json"), pretty(&st)));
            }
            Err(e) => {
                missing.push(format!("{name}: not reachable ({e})"));
                continue;
            }
        }
        if !cluster_done {
            if let Ok(cs) = client
                .get::<ClusterStatus>(*addr, "/v1/cluster/status", t)
                .await
            {
                let text = crate::status_view::render(&cs, &[], now);
                files.push((format!("{top}/cluster-status.txt"), text.into_bytes()));
                files.push((format!("{top}/cluster-status.json"), pretty(&cs)));
                cluster_done = true;
            }
        }
        match client
            .get::<Vec<Event>>(*addr, &format!("/v1/alerts?tail={EVENTS}"), t)
            .await
        {
            Ok(evs) => files.push((format!("{dir}/events.json"), pretty(&evs))),
            Err(e) => missing.push(format!("{name}: events ({e})")),
        }
        match client
            .get::<AgentLog>(*addr, &format!("/v1/logs?lines={LOG_LINES}"), t)
            .await
        {
            Ok(l) => {
                logs_ok += 1;
                let mut text = l.lines.join("\n");
                text.push('\n');
                files.push((format!("{dir}/agent.log"), text.into_bytes()));
            }
            Err(e) => missing.push(format!(
                "{name}: agent log ({e}; reading it needs the operator role)"
            )),
        }
        match client.get::<RunningConfig>(*addr, "/v1/config", t).await {
            Ok(rc) => {
                match baton_core::config::changes::redact_for_bundle(&rc.text) {
                    Some(text) => files.push((
                        format!("{dir}/config.toml"),
                        format!(
                            "# {} as {name} runs it (digest {}), secrets removed, comments dropped\n{text}",
                            rc.path, rc.digest
                        )
                        .into_bytes(),
                    )),
                    None => missing.push(format!(
                        "{name}: configuration (not TOML, so it could not be cleaned of secrets)"
                    )),
                }
                files.push((
                    format!("{dir}/config-info.json"),
                    pretty(&serde_json::json!({
                        "path": rc.path, "digest": rc.digest, "staged_digest": rc.staged_digest,
                    })),
                ));
            }
            Err(e) => missing.push(format!(
                "{name}: configuration ({e}; reading it needs the operator role)"
            )),
        }
    }
    // The journal adds older lines and what the agent's children printed; without it
    // the logs from the API are enough.
    match local_journal() {
        Ok(j) => files.push((format!("{top}/local/journal.txt"), j)),
        Err(why) if logs_ok == 0 => missing.push(format!("agent logs: {why}")),
        Err(_) => {}
    }
    let mut readme = format!(
        "Baton support bundle of cluster {} made {} by baton {}\n\n\
         servers/NAME/: status.json (GET /v1/status), events.json (its last {EVENTS} alert \
         log events), agent.log (its agent's last log lines), config.toml (its running \
         configuration, secrets removed: inline \
         passwords, secrets and tokens hidden, URLs without credentials, comments dropped; \
         key and token files are never read), config-info.json, version.txt.\n\
         cluster-status.txt / .json: the cluster status as one server saw it.\n\n\
         Servers:\n",
        cfg.cluster_name,
        crate::status_view::iso(now),
        env!("CARGO_PKG_VERSION"),
    );
    for l in &summary {
        readme.push_str(&format!("  {l}\n"));
    }
    readme.push_str("\nNot collected:\n");
    if missing.is_empty() {
        readme.push_str("  nothing\n");
    }
    for m in &missing {
        readme.push_str(&format!("  {m}\n"));
    }
    files.insert(0, (format!("{top}/README.txt"), readme.into_bytes()));
    write_tar_gz(&path, &files, now / 1000).map_err(|e| {
        // Nothing half-written is left behind.
        let _ = std::fs::remove_file(path.with_extension("tmp"));
        format!("{}: {e}", path.display())
    })?;
    Ok(Bundle {
        path,
        reached,
        missing,
    })
}

mod erased {
    /// Pretty JSON of anything serializable (one closure for every type).
    pub trait Json {
        fn json(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> Vec<u8> {
            let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
            v.push(b'\n');
            v
        }
    }
}

/// The local agent's journal (the `baton` unit), when on a server with systemd.
fn local_journal() -> Result<Vec<u8>, String> {
    let out = std::process::Command::new("journalctl")
        .args([
            "-u",
            "baton",
            "-n",
            JOURNAL_LINES,
            "--no-pager",
            "-o",
            "short-iso",
        ])
        .output()
        .map_err(|e| {
            format!("no agent log came through the API, and journalctl could not run here ({e})")
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.lines().all(|l| l.starts_with("-- ")) {
        return Err(
            "no agent log came through the API, and the local journal has none for unit baton \
             (not run on a server, or the agent logs elsewhere); add the agent's log by hand"
                .into(),
        );
    }
    Ok(out.stdout)
}

/// One ustar header block for a regular file.
fn header(name: &str, size: usize, mtime: u64) -> std::io::Result<[u8; 512]> {
    let mut h = [0u8; 512];
    let (prefix, base) = if name.len() <= 100 {
        ("", name)
    } else {
        // Split at a `/` so that the prefix fits 155 bytes and the name 100.
        let cut = name
            .char_indices()
            .filter(|(i, c)| *c == '/' && *i <= 155 && name.len() - i - 1 <= 100)
            .map(|(i, _)| i)
            .next()
            .ok_or_else(|| std::io::Error::other(format!("name too long for tar: {name}")))?;
        (&name[..cut], &name[cut + 1..])
    };
    h[..base.len()].copy_from_slice(base.as_bytes());
    let oct = |h: &mut [u8; 512], at: usize, len: usize, v: u64| {
        let s = format!("{v:0w$o}\0", w = len - 1);
        h[at..at + len].copy_from_slice(s.as_bytes());
    };
    oct(&mut h, 100, 8, 0o644);
    oct(&mut h, 108, 8, 0);
    oct(&mut h, 116, 8, 0);
    oct(&mut h, 124, 12, size as u64);
    oct(&mut h, 136, 12, mtime);
    h[148..156].copy_from_slice(b"        ");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    Ok(h)
}

/// Write `files` as a gzip-compressed ustar archive, atomically (a temporary file renamed).
fn write_tar_gz(
    path: &std::path::Path,
    files: &[(String, Vec<u8>)],
    mtime: u64,
) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let f = std::fs::File::create(&tmp)?;
    let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::default());
    for (name, data) in files {
        gz.write_all(&header(name, data.len(), mtime)?)?;
        gz.write_all(data)?;
        let pad = (512 - data.len() % 512) % 512;
        gz.write_all(&vec![0u8; pad])?;
    }
    gz.write_all(&[0u8; 1024])?;
    gz.finish()?.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_reads_back() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("b.tar.gz");
        let long = format!("top/{}/file.txt", "x".repeat(110));
        let files = vec![
            ("top/a.txt".to_string(), b"hello\n".to_vec()),
            (long.clone(), vec![7u8; 1000]),
        ];
        write_tar_gz(&p, &files, 1_700_000_000).unwrap();
        let out = std::process::Command::new("tar")
            .arg("-xzf")
            .arg(&p)
            .arg("-C")
            .arg(d.path())
            .output()
            .expect("the tar program (part of every Debian system) reads the archive");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            std::fs::read(d.path().join("top/a.txt")).unwrap(),
            b"hello\n"
        );
        assert_eq!(
            std::fs::read(d.path().join(&long)).unwrap(),
            vec![7u8; 1000]
        );
    }
}
