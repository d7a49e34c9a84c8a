//! Skipping a test honestly.
//!
//! A test that cannot run because this machine lacks something (not root, no `ip netns`,
//! no nftables, no moto venv) calls [`skip`] and returns. Every skip is recorded, so the
//! suite's summary counts it by name instead of calling it a pass:
//!
//! * `BATON_REQUIRE_ALL=1` (set by `tests/run-all.sh`, and so by CI): a skip is a failure;
//!   [`skip`] panics with the reason.
//! * `BATON_SKIP_LOG=FILE`: each skip appends `TEST<TAB>REASON` to FILE (the summary of
//!   `tests/run-all.sh` reads it).
//!
//! A set-up error that is not "this machine lacks X" (a failed `baton keygen`, a config
//! that `config check` refuses, an `ip` command that fails on a machine where namespaces
//! work) is never a skip: the test fails.

use std::io::Write;

/// Is every skip a failure (`BATON_REQUIRE_ALL=1`)?
pub fn required() -> bool {
    std::env::var("BATON_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// Record that `test` could not run because of `why` (something this machine lacks).
/// Panics under `BATON_REQUIRE_ALL=1`; otherwise prints `SKIPPED TEST: WHY` to stderr
/// and appends it to `BATON_SKIP_LOG`, and the caller returns.
pub fn skip(test: &str, why: &str) {
    let log = std::env::var_os("BATON_SKIP_LOG").map(std::path::PathBuf::from);
    skip_with(required(), log.as_deref(), test, why);
}

/// The running test's name (libtest names each test's thread after it), or `fallback`.
pub fn current_test(fallback: &str) -> String {
    std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .map_or_else(|| fallback.to_string(), str::to_string)
}

/// [`skip`] with the switch and the log file given.
pub fn skip_with(required: bool, log: Option<&std::path::Path>, test: &str, why: &str) {
    assert!(
        !required,
        "{test} could not run, and BATON_REQUIRE_ALL=1 makes that a failure: {why}"
    );
    eprintln!("SKIPPED {test}: {why}");
    if let Some(path) = log {
        let line = format!("{test}\t{}\n", why.replace(['\n', '\t'], " "));
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            eprintln!("cannot record the skip in {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_required_skip_panics_and_names_the_test() {
        let r = std::panic::catch_unwind(|| skip_with(true, None, "some_test", "no frobnicator"));
        let msg = r
            .err()
            .and_then(|e| e.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        assert!(
            msg.contains("some_test") && msg.contains("no frobnicator"),
            "{msg}"
        );
    }

    #[test]
    fn a_skip_is_logged_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("skips.txt");
        skip_with(false, Some(&log), "t1", "no ip\tnetns");
        skip_with(false, Some(&log), "t2", "not root");
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(text, "t1\tno ip netns\nt2\tnot root\n");
    }
}
