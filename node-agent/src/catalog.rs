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
}

/// Load and fully validate a configuration file with every kind this build knows.
pub fn load(path: &std::path::Path) -> Result<Loaded, ConfigError> {
    let reg = baton_providers::default_registry();
    config::load_file(path, &ProviderCatalog(&reg))
}

/// Load, returning only the config (warnings are printed by the caller if wanted).
pub fn load_config(path: &std::path::Path) -> Result<Config, ConfigError> {
    load(path).map(|l| l.config)
}
