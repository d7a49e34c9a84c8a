//! The one configuration builder of every harness: the TOML text of `[cluster]`,
//! `[heartbeat]`, the host-safe `[agent]` and `[api]` tables, `[[server]]` and
//! `[[group]]` entries and the marker application, section by section.

use std::path::Path;

/// A configuration being written; [`ConfigText::build`] returns the text.
#[derive(Debug, Clone)]
pub struct ConfigText {
    text: String,
}

impl ConfigText {
    /// `# Written by WHO.` and the `[cluster]` table: `name`, key file `cluster.key`
    /// (next to the configuration).
    pub fn new(written_by: &str, name: &str) -> ConfigText {
        ConfigText {
            text: format!(
                "# Written by {written_by}.\n[cluster]\nname = \"{name}\"\nkey_file = \"cluster.key\"\n\n"
            ),
        }
    }

    /// The `[heartbeat]` table with `interval`, `timeout` and the `extra` keys.
    pub fn heartbeat(mut self, interval: &str, timeout: &str, extra: &str) -> ConfigText {
        self.text.push_str(&format!(
            "[heartbeat]\ninterval = \"{interval}\"\ntimeout = \"{timeout}\"\n{extra}\n"
        ));
        self
    }

    /// The tables of [`host_safe_sections`].
    pub fn host_safe(mut self, dir: &Path, shutdown_timeout: &str, api_extra: &str) -> ConfigText {
        self.text
            .push_str(&host_safe_sections(dir, shutdown_timeout, api_extra));
        self
    }

    /// A `[[server]]` entry (`zone` only if given).
    pub fn server(
        mut self,
        name: &str,
        zone: Option<&str>,
        interconnects: &[String],
        api: &str,
    ) -> ConfigText {
        let zone = zone
            .map(|z| format!("zone = \"{z}\"\n"))
            .unwrap_or_default();
        let ics: Vec<String> = interconnects.iter().map(|a| format!("\"{a}\"")).collect();
        self.text.push_str(&format!(
            "\n[[server]]\nname = \"{name}\"\n{zone}interconnects = [{}]\napi = \"{api}\"\n",
            ics.join(", ")
        ));
        self
    }

    /// A `[[group]]` entry running on `servers` (in that order); its resources follow.
    pub fn group(mut self, name: &str, servers: &[String]) -> ConfigText {
        let servers: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
        self.text.push_str(&format!(
            "\n[[group]]\nname = \"{name}\"\nservers = [{}]\n",
            servers.join(", ")
        ));
        self
    }

    /// The `exec` resource `app` of the group above, depending on `depends_on`: it
    /// backgrounds `sleep SLEEP_SECS`, writes its pid to `dir/app-SERVER.pid` and logs
    /// `start|stop SERVER EPOCH` to `dir/app-events.log`.
    pub fn marker_app(mut self, dir: &Path, depends_on: &str, sleep_secs: u32) -> ConfigText {
        let d = dir.display();
        let pid = format!("{d}/app-$BATON_SERVER.pid");
        let events = format!("{d}/app-events.log");
        self.text.push_str(&format!(
            r#"
[[group.resource]]
kind = "exec"
name = "app"
depends_on = ["{depends_on}"]
start = 'echo "start $BATON_SERVER $BATON_EPOCH" >> "{events}"; sleep {sleep_secs} >/dev/null 2>&1 & echo $! > "{pid}"'
stop = 'if [ -f "{pid}" ]; then kill -9 $(cat "{pid}") 2>/dev/null; rm -f "{pid}"; fi; echo "stop $BATON_SERVER $BATON_EPOCH" >> "{events}"'
check = '[ -f "{pid}" ] && kill -0 $(cat "{pid}") 2>/dev/null'
activate_timeout = "5s"
deactivate_timeout = "5s"
"#
        ));
        self
    }

    /// Any other text, as it is.
    pub fn push(mut self, text: &str) -> ConfigText {
        self.text.push_str(text);
        self
    }

    pub fn build(self) -> String {
        self.text
    }
}

/// The `[agent]` table (with `shutdown_timeout`) of a test cluster in `dir`, which never
/// resets the machine the tests run on: the self-fence writes to the plain file
/// `dir/sysrq-trigger` and the reboot / power-off commands only log to
/// `dir/fence-commands.log`; and the `[api]` table, with the agents' Unix sockets in
/// `dir/run` and the `api_extra` keys.
pub fn host_safe_sections(dir: &Path, shutdown_timeout: &str, api_extra: &str) -> String {
    let d = dir.display();
    format!(
        r#"[agent]
shutdown_timeout = "{shutdown_timeout}"
# Tests never reset this machine: the self-fence writes to a file and the commands
# only log.
sysrq_trigger = "{d}/sysrq-trigger"
force_reboot_command = 'echo force-reboot >> "{d}/fence-commands.log"'
force_poweroff_command = 'echo force-poweroff >> "{d}/fence-commands.log"'
reboot_command = 'echo reboot >> "{d}/fence-commands.log"'
shutdown_command = 'echo poweroff >> "{d}/fence-commands.log"'

# The agents' Unix sockets for the local CLI, in the test's own directory.
[api]
socket_dir = "{d}/run"
{api_extra}
"#
    )
}
