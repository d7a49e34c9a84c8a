//! The exit codes of every `baton` command and how a failed command reports itself.

/// Stable exit codes of every `baton` command (documented in docs/src/operations.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Ok = 0,
    /// Anything not covered below.
    Failure = 1,
    /// Unknown command, option or argument (clap's own code).
    Usage = 2,
    /// The configuration file is invalid (or unreadable).
    ConfigInvalid = 3,
    /// No agent could be reached.
    Unreachable = 4,
    /// The agent refused the command (unknown group, no target, ...).
    Refused = 5,
    /// The API token was rejected (wrong key file).
    Unauthorized = 6,
    /// The cluster key file is missing or unusable.
    KeyError = 7,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// Print a failure (`{"ok": false, "error": {...}}` with `--json`, else `baton: MSG` on
/// stderr) and return its exit code.
pub(crate) fn fail(json: bool, exit: Exit, code: &str, msg: &str) -> Exit {
    if json {
        println!(
            "{}",
            serde_json::json!({"ok": false, "error": {"code": code, "message": msg}})
        );
    } else {
        eprintln!("baton: {msg}");
    }
    exit
}
