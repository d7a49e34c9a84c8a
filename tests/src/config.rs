//! The configuration tables every harness writes alike.

use std::path::Path;

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
