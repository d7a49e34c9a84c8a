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
    fn uses_interconnect(&self, kind: &str) -> bool {
        self.0.uses_interconnect(kind)
    }
    fn local_fence_stop_ms(&self, kind: &str) -> Option<u64> {
        self.0.local_fence_stop_ms(kind)
    }
}

/// Every kind this build knows (the providers' and mirroring's), the cloud clients built
/// from the configuration's `[aws]`, `[azure]` and `[gcp]` on first use.
pub fn kinds(cfg: &Config) -> crate::mirror_kind::Kinds {
    crate::mirror_kind::Kinds::new(baton_providers::registry(&cfg.aws, &cfg.azure, &cfg.gcp))
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

/// Validate a configuration text as if it were the file at `path` (a pushed
/// configuration: diagnostics name that file, relative paths are relative to it).
pub fn load_text(path: &std::path::Path, text: &str) -> Result<Loaded, ConfigError> {
    let reg = default_kinds();
    config::load_str(&path.display().to_string(), text, &ProviderCatalog(&reg))
}

/// Load, returning only the config (warnings are printed by the caller if wanted).
pub fn load_config(path: &std::path::Path) -> Result<Config, ConfigError> {
    load(path).map(|l| l.config)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    /// An `azure-dns` resource in a three-server file, `keys` its kind keys.
    fn azure(
        keys: &str,
        azure: &str,
    ) -> (
        String,
        Result<baton_core::config::Loaded, baton_core::config::ConfigError>,
    ) {
        let text = format!(
            "[cluster]\nname = \"c\"\nkey_file = \"k\"\n\n\
             [[server]]\nname = \"a\"\ninterconnects = [\"10.0.0.1\"]\napi = \"10.0.0.1:7420\"\n\
             [[server]]\nname = \"b\"\ninterconnects = [\"10.0.0.2\"]\napi = \"10.0.0.2:7420\"\n\
             [[server]]\nname = \"c\"\ninterconnects = [\"10.0.0.3\"]\napi = \"10.0.0.3:7420\"\n\n\
             {azure}\n[[group]]\nname = \"web\"\nservers = [\"a\", \"b\"]\n\n\
             [[group.resource]]\nkind = \"azure-dns\"\nname = \"dns1\"\n{keys}\n"
        );
        let reg = super::default_kinds();
        let r = baton_core::config::load_str("baton.toml", &text, &super::ProviderCatalog(&reg));
        (text, r)
    }

    #[test]
    fn azure_dns_keys_are_checked_with_their_line() {
        let ok = "zone = \"example.com\"\nrecord = \"db\"\n[group.resource.server.a]\nip = \"10.0.0.1\"\n[group.resource.server.b]\nip = \"10.0.0.2\"";
        // The subscription and resource group may be left to [azure].
        azure(ok, "").1.unwrap();
        let (text, r) = azure(
            "zone = \"example.com\"\nrecrod = \"db\"\nip = \"10.0.0.1\"",
            "",
        );
        let e = r.unwrap_err();
        let d = &e.diagnostics[0];
        assert_eq!(d.key, "group[0].resource[0].recrod", "{d}");
        let line = text.lines().position(|l| l.starts_with("recrod")).unwrap() + 1;
        assert_eq!(d.line, line, "{d}");
        assert!(d.message.contains("did you mean `record`?"), "{d}");
        // Per server: the missing address is found for the server that lacks it.
        let e = azure(
            "zone = \"example.com\"\nrecord = \"db\"\n[group.resource.server.a]\nip = \"10.0.0.1\"",
            "",
        )
        .1
        .unwrap_err();
        assert!(
            e.diagnostics
                .iter()
                .any(|d| d.message.contains("missing required key `ip`")),
            "{e}"
        );
        let e = azure(ok, "[azure]\nidentity = \"service-principal\"\n")
            .1
            .unwrap_err();
        assert_eq!(e.diagnostics[0].key, "azure.identity", "{e}");
    }

    /// A `gcp-dns` resource in a three-server file, `keys` its kind keys.
    fn gcp(
        keys: &str,
        gcp: &str,
    ) -> (
        String,
        Result<baton_core::config::Loaded, baton_core::config::ConfigError>,
    ) {
        let text = format!(
            "[cluster]\nname = \"c\"\nkey_file = \"k\"\n\n\
             [[server]]\nname = \"a\"\ninterconnects = [\"10.0.0.1\"]\napi = \"10.0.0.1:7420\"\n\
             [[server]]\nname = \"b\"\ninterconnects = [\"10.0.0.2\"]\napi = \"10.0.0.2:7420\"\n\
             [[server]]\nname = \"c\"\ninterconnects = [\"10.0.0.3\"]\napi = \"10.0.0.3:7420\"\n\n\
             {gcp}\n[[group]]\nname = \"web\"\nservers = [\"a\", \"b\"]\n\n\
             [[group.resource]]\nkind = \"gcp-dns\"\nname = \"dns1\"\n{keys}\n"
        );
        let reg = super::default_kinds();
        let r = baton_core::config::load_str("baton.toml", &text, &super::ProviderCatalog(&reg));
        (text, r)
    }

    #[test]
    fn gcp_dns_keys_are_checked_with_their_line() {
        // The address may come from each VM's metadata server, the project from [gcp].
        gcp(
            "zone = \"public-zone\"\nrecord_name = \"db.example.com.\"",
            "",
        )
        .1
        .unwrap();
        gcp(
            "zone = \"public-zone\"\nrecord_name = \"db.example.com.\"\n[group.resource.server.a]\nip = \"10.0.0.1\"",
            "[gcp]\nproject = \"baton-test\"\n",
        )
        .1
        .unwrap();
        let (text, r) = gcp(
            "zone = \"example.com\"\nrecord_name = \"db.example.com.\"",
            "",
        );
        let e = r.unwrap_err();
        let d = &e.diagnostics[0];
        assert_eq!(d.key, "group[0].resource[0].zone", "{d}");
        let line = text.lines().position(|l| l.starts_with("zone =")).unwrap() + 1;
        assert_eq!(d.line, line, "{d}");
        assert!(d.message.contains("not its DNS name"), "{d}");
        // Per server: the bad address is found for the server that has it.
        let (text, r) = gcp(
            "zone = \"public-zone\"\nrecord_name = \"db.example.com.\"\n[group.resource.server.b]\nip = \"10.0.0.300\"",
            "",
        );
        let e = r.unwrap_err();
        let d = &e.diagnostics[0];
        assert!(d.message.contains("invalid address `10.0.0.300`"), "{d}");
        let line = text.lines().position(|l| l.contains("10.0.0.300")).unwrap() + 1;
        assert_eq!(d.line, line, "{d}");
        let e = gcp(
            "zone = \"public-zone\"\nrecord_name = \"db.example.com.\"",
            "[gcp]\ncredentials = \"service-account\"\n",
        )
        .1
        .unwrap_err();
        assert_eq!(e.diagnostics[0].key, "gcp.credentials", "{e}");
    }

    #[test]
    fn an_unreadable_file_is_reported_with_its_path() {
        let e = super::load(std::path::Path::new("/nonexistent/baton.toml")).unwrap_err();
        assert_eq!(e.file, "/nonexistent/baton.toml");
        assert!(e.diagnostics[0]
            .message
            .starts_with("cannot read the configuration file: No such file"));
    }
}
