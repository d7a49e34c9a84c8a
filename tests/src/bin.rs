//! Locating the `baton` binary.

use std::path::PathBuf;

/// The `baton` binary: `$BATON_BIN`, or `baton` in the target directory of the running
/// test executable (`target/debug/deps/TEST` → `target/debug/baton`).
pub fn baton_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BATON_BIN") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "BATON_BIN={} does not name a file; build it first: cargo build --bin baton",
            p.display()
        );
        return p;
    }
    let exe = std::env::current_exe().expect("cannot find the test executable");
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("baton");
    assert!(
        bin.is_file(),
        "the baton binary is missing at {}: build it first: cargo build --bin baton \
         (with the same CARGO_TARGET_DIR), or point BATON_BIN at it",
        bin.display()
    );
    bin
}
