//! `baton config push` on the agent's side: check a pushed configuration against the
//! running one, store it next to it (the previous file kept as `FILE.prev`), and take it
//! live in the main loop ([`Reconfigure`]), or store it for the next restart (`stage`).
//!
//! What may change live is decided by [`baton_core::config::changes`]; the engine checks
//! it again ([`baton_core::engine::Engine::reconfigure`]). A refusal changes nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use baton_core::config::changes::{self, Change};
use baton_core::config::Config;
use baton_core::events::{self, Event};
use tokio::sync::oneshot;

use crate::api_types::{ApiError, ConfigPush, PushMode, PushResult};
use crate::shared::{LoopMsg, Shared};

/// A checked configuration for the main loop to take live.
pub struct Reconfigure {
    pub cfg: Config,
    pub text: String,
    pub changes: Vec<Change>,
    /// A new notifier when the sinks or metrics changed (with the sinks that could not
    /// be set up, BTN-5004).
    pub notifier: Option<(
        baton_notifier::NotifierHandle,
        Vec<baton_notifier::build::SinkFailure>,
    )>,
    pub reply: oneshot::Sender<Result<(), ApiError>>,
}

fn refusal(code: &str, message: impl Into<String>) -> ApiError {
    ApiError {
        code: code.into(),
        message: message.into(),
    }
}

/// Check `push` against what this agent runs and, unless it is only a check, store it and
/// take it live (or stage it). Never fails: a refusal is in the result. The caller holds
/// `shared.push_lock`.
pub async fn handle(s: &Arc<Shared>, push: ConfigPush) -> PushResult {
    let running = s.running();
    let before = running.config.digest.clone();
    let mut r = PushResult {
        server: s.server.clone(),
        ok: false,
        outcome: "refused".into(),
        digest_before: before.clone(),
        digest: before.clone(),
        new_digest: None,
        changes: Vec::new(),
        error: None,
        diagnostics: Vec::new(),
    };
    let refuse = |mut r: PushResult, e: ApiError| {
        s.raise(
            Event::new(
                &events::CONFIG_REFUSED,
                format!("configuration push refused: {}", e.message),
            )
            .field("code", e.code.clone()),
        );
        r.error = Some(e);
        r
    };
    let loaded = match crate::catalog::load_text(&s.config_file, &push.text) {
        Ok(l) => l,
        Err(e) => {
            r.diagnostics = e.diagnostics.iter().map(ToString::to_string).collect();
            return refuse(r, refusal("config-invalid", e.to_string()));
        }
    };
    let cfg = loaded.config;
    r.new_digest = Some(cfg.digest.clone());
    if cfg.server(&s.server).is_none() {
        return refuse(
            r,
            refusal(
                "wrong-server",
                format!(
                    "server {} is not in the pushed configuration: this agent could not start with it",
                    s.server
                ),
            ),
        );
    }
    let mut changes = match changes::diff_text(&running.text, &push.text) {
        Ok(c) => c,
        Err(e) => return refuse(r, refusal("config-invalid", e)),
    };
    // A new group with a mirror-disk resource needs its mirror process and watcher,
    // which the agent starts at start.
    if let (Ok(old), Ok(new)) = (
        toml::from_str::<toml::Table>(&running.text),
        toml::from_str::<toml::Table>(&push.text),
    ) {
        for g in changes::added_groups_with_kind(&old, &new, crate::mirror_kind::RESOURCE_KIND) {
            let path = format!("group[{g}]");
            if let Some(c) = changes.iter_mut().find(|c| c.path == path) {
                c.restart = Some("a new group with a mirror-disk resource needs its mirror process, started when the agent starts".into());
            }
        }
    }
    r.changes = changes.clone();
    let stage = push.mode == PushMode::Stage || (push.mode == PushMode::Check && push.stage);
    let restart = changes::restart_needed(&changes);
    if !stage && !restart.is_empty() {
        let msg = format!(
            "{} change(s) need a rolling restart (push with --stage, then restart each agent): {}",
            restart.len(),
            restart.join("; ")
        );
        return refuse(r, refusal("restart-needed", msg));
    }
    if push.mode == PushMode::Check {
        r.ok = true;
        r.outcome = "checked".into();
        return r;
    }
    if changes.is_empty() && push.text == *running.text {
        r.ok = true;
        r.outcome = "unchanged".into();
        return r;
    }
    if stage {
        if let Err(e) = write_config(&s.config_file, &push.text) {
            return refuse(r, write_failed(&s.config_file, &e));
        }
        let mut run = s.running();
        run.staged_digest = (cfg.digest != before).then(|| cfg.digest.clone());
        s.set_running(run);
        s.raise(
            Event::new(
                &events::CONFIG_APPLIED,
                format!(
                    "configuration {}… stored in {} for the next restart ({} change(s)); still running {}…",
                    &cfg.digest[..12],
                    s.config_file.display(),
                    changes.len(),
                    &before[..12.min(before.len())]
                ),
            )
            .field("digest", cfg.digest.clone())
            .field("staged", true),
        );
        r.ok = true;
        r.outcome = "staged".into();
        return r;
    }
    // A new group also gets its Prometheus figures from a new notifier.
    let sinks_changed = changes.iter().any(|c| {
        c.path.starts_with("notify")
            || c.path.starts_with("metrics")
            || (c.path.starts_with("group[") && cfg.metrics.prometheus.is_some())
    });
    let notifier = if sinks_changed {
        let (h, _task, failures) =
            crate::runtime::build_notifier(&cfg, &s.server, &s.config_file).await;
        Some((h, failures))
    } else {
        None
    };
    let digest = cfg.digest.clone();
    let (tx, rx) = oneshot::channel();
    let msg = Reconfigure {
        cfg,
        text: push.text,
        changes,
        notifier,
        reply: tx,
    };
    if s.tx
        .send(LoopMsg::Reconfigure(Box::new(msg)))
        .await
        .is_err()
    {
        return refuse(r, refusal("agent-stopping", "the agent is stopping"));
    }
    match rx.await {
        Ok(Ok(())) => {
            r.ok = true;
            r.outcome = "applied".into();
            r.digest = digest;
            r
        }
        Ok(Err(e)) => refuse(r, e),
        Err(_) => refuse(r, refusal("agent-stopping", "the agent is stopping")),
    }
}

pub(crate) fn write_failed(path: &Path, e: &std::io::Error) -> ApiError {
    refusal(
        "write-failed",
        format!("cannot store the configuration in {}: {e}", path.display()),
    )
}

/// `FILE.prev`: where the configuration replaced by a push is kept.
pub fn prev_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".prev");
    PathBuf::from(p)
}

/// Store `text` as the configuration file `path`, atomically (temporary file, fsync,
/// rename, fsync of the directory), after keeping the current file as `FILE.prev` the
/// same way. The new file gets the current file's permissions (0640 when there is none).
pub fn write_config(path: &Path, text: &str) -> std::io::Result<()> {
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o640);
    match std::fs::read(path) {
        Ok(old) => crate::files::write_atomic(&prev_path(path), &old, mode)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    crate::files::write_atomic(path, text.as_bytes(), mode)
}

/// Put `FILE.prev` back as `FILE` (a push whose apply failed after the file was stored).
pub fn restore_prev(path: &Path) -> std::io::Result<()> {
    let old = std::fs::read(prev_path(path))?;
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o640);
    crate::files::write_atomic(path, &old, mode)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn write_keeps_the_previous_file_and_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("baton.toml");
        std::fs::write(&f, "old").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        write_config(&f, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "new");
        assert_eq!(std::fs::read_to_string(prev_path(&f)).unwrap(), "old");
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
        restore_prev(&f).unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "old");
        // No temporary file left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
