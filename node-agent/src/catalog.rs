//! Adapts the providers' [`Registry`] to the config loader's [`KindCatalog`], so that
//! `baton config check` validates kind-specific keys with the same code that runs them.

use baton_core::config::{self, Config, ConfigError, KindCatalog, Loaded};
use baton_providers::Registry;

pub struct ProviderCatalog<'a>(pub &'a dyn Registry);

impl KindCatalog for ProviderCatalog<'_> {
    fn resource_kinds(&self) -> Vec<&'static str> {
        self.0.resource_kinds()
    }
    fn monitor_kinds(&self) -> Vec<&'static str> {
        self.0.monitor_kinds()
    }
    fn check_resource(
        &self,
        kind: &str,
        params: &toml::Table,
    ) -> Result<(), (Option<String>, String)> {
        self.0
            .build_resource(kind, params)
            .map(|_| ())
            .map_err(|e| (e.key, e.message))
    }
    fn check_monitor(
        &self,
        kind: &str,
        params: &toml::Table,
    ) -> Result<(), (Option<String>, String)> {
        self.0
            .build_probe(kind, params)
            .map(|_| ())
            .map_err(|e| (e.key, e.message))
    }
    fn check_group_servers(&self, kind: &str, servers: &[String]) -> Result<(), String> {
        self.0
            .check_group_servers(kind, servers)
            .map_err(|e| e.message)
    }
    fn monitor_needs_resource(&self, kind: &str) -> bool {
        self.0.monitor_needs_resource(kind)
    }
}

/// Every kind this build knows (the providers' and mirroring's), the cloud clients built
/// from the configuration's `[aws]` and `[azure]` on first use.
pub fn kinds(cfg: &Config) -> crate::mirror_kind::Kinds {
    crate::mirror_kind::Kinds::new(baton_providers::registry(&cfg.aws, &cfg.azure))
}

/// [`kinds`] with the default `[aws]` settings (enough to validate configurations).
pub fn default_kinds() -> crate::mirror_kind::Kinds {
    crate::mirror_kind::Kinds::new(baton_providers::default_registry())
}

/// A path of the configuration (`key_file`, `accept_key_files`, token files) as it is
/// meant: a relative one is relative to the configuration file's directory.
pub fn config_path(config_file: &std::path::Path, p: &std::path::Path) -> std::path::PathBuf {
    if p.is_relative() {
        config_file
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join(p)
    } else {
        p.to_path_buf()
    }
}

/// Load and fully validate a configuration file with every kind this build knows. (The
/// agent reads the file; `core` only parses and validates text.)
pub fn load(path: &std::path::Path) -> Result<Loaded, ConfigError> {
    let reg = default_kinds();
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => config::load_str(&file, &text, &ProviderCatalog(&reg)),
        Err(e) => Err(ConfigError::unreadable(&file, &e)),
    }
}

/// Load, returning only the config (warnings are printed by the caller if wanted).
pub fn load_config(path: &std::path::Path) -> Result<Config, ConfigError> {
    load(path).map(|l| l.config)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn an_unreadable_file_is_reported_with_its_path() {
        let e = super::load(std::path::Path::new("/nonexistent/baton.toml")).unwrap_err();
        assert_eq!(e.file, "/nonexistent/baton.toml");
        assert!(e.diagnostics[0]
            .message
            .starts_with("cannot read the configuration file: No such file"));
    }
}
