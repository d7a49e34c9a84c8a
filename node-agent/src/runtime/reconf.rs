//! Taking a pushed configuration live (`baton config push`, checked by
//! [`crate::config_push::handle`]): the drivers and probes it needs are built, the file
//! is stored (the previous one kept), the engine takes it ([`Engine::reconfigure`]), and
//! the shared state, the notifier and the loop's copy follow. Any failure before the
//! engine took it changes nothing (the stored file is put back).

use super::*;
use crate::api_types::ApiError;
use crate::config_push::Reconfigure;

impl Runtime {
    pub(super) fn reconfigure(&mut self, r: Reconfigure) -> Vec<Action> {
        let Reconfigure {
            cfg,
            text,
            changes,
            notifier,
            reply,
        } = r;
        let refuse = |code: &str, message: String| ApiError {
            code: code.into(),
            message,
        };
        // Drivers and probes of the new configuration (existing groups keep theirs).
        let reg = crate::catalog::kinds(&cfg);
        let (drivers, probes) = match build_drivers(&cfg, &self.me, &reg, &self.mirror) {
            Ok(b) => b,
            Err(e) => {
                let _ = reply.send(Err(refuse("build-failed", e.to_string())));
                return Vec::new();
            }
        };
        let path = self.shared.config_file.clone();
        if let Err(e) = crate::config_push::write_config(&path, &text) {
            let _ = reply.send(Err(crate::config_push::write_failed(&path, &e)));
            return Vec::new();
        }
        let now = self.now();
        let actions = match self.engine.reconfigure(now, cfg.clone()) {
            Ok(a) => a,
            Err(e) => {
                if let Err(re) = crate::config_push::restore_prev(&path) {
                    warn!(error = %re, "cannot put the previous configuration file back");
                }
                let _ = reply.send(Err(refuse(e.code(), e.to_string())));
                return Vec::new();
            }
        };
        if let Some(mut events) = reg.providers.take_events() {
            let sh = self.shared.clone();
            tokio::spawn(async move {
                while let Some(ev) = events.recv().await {
                    sh.raise(ev);
                }
            });
        }
        // New resources are prepared as at start (existing ones keep their drivers).
        let new: DriverMap = drivers
            .into_iter()
            .filter(|(k, _)| !self.drivers.contains_key(k))
            .collect();
        super::start::spawn_prepare(&cfg, &self.me, &new);
        self.drivers.extend(new);
        self.probes = probes;
        let before = std::mem::replace(&mut self.cfg, cfg.clone());
        self.shared.set_running(crate::shared::Running {
            config: Arc::new(cfg),
            text: Arc::new(text),
            staged_digest: None,
        });
        if let Some((h, failures)) = notifier {
            let old = self.shared.notifier.replace(h);
            let deadline = before.notify.delivery.shutdown_timeout.0;
            tokio::spawn(async move {
                let _ = old.shutdown(deadline).await;
            });
            for f in &failures {
                self.record(f.event());
            }
        }
        let list: Vec<String> = changes.iter().map(|c| c.path.clone()).collect();
        let ev = Event::new(
            &events::CONFIG_APPLIED,
            format!(
                "configuration {}… applied live (was {}…): {}",
                &self.cfg.digest[..12],
                &before.digest[..12],
                if list.is_empty() {
                    "no key changed".to_string()
                } else {
                    list.join(", ")
                }
            ),
        )
        .field("digest", self.cfg.digest.clone())
        .field("previous_digest", before.digest.clone())
        .field("changes", list.len());
        self.record(ev);
        let _ = reply.send(Ok(()));
        actions
    }
}
