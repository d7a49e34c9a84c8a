//! Records the commit the binary is built from, for `baton --version` (`baton 0.1.0
//! (3f2a9c1d8e7b)`): `BATON_COMMIT` from the environment when set (a package built
//! outside a git checkout), else `git rev-parse --short=12 HEAD`, else `unknown`.
//!
//! Also links `baton` with packed relative relocations where the toolchain and the C
//! library support them ([`pack_relocations`]), and with the functions an agent runs laid
//! out together ([`hot_layout`]).

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// Link `baton` with `-z pack-relative-relocs` (DT_RELR) when building natively for
/// Linux with glibc 2.36 or later and a linker that accepts it (GNU ld 2.38, lld 15).
///
/// The binary is position-independent, and its 90,000 relative relocations took 2.1 MB
/// of `.rela.dyn`, which the loader reads whole at every start: 2.1 MiB of every agent's
/// RSS for as long as it runs. Packed, they take 25 KB (and the binary 2 MB less); an
/// idle agent's RSS goes from 23.5 to 21.8 MiB (`bench/scale.sh`, 8 × 50). Such a binary
/// needs glibc 2.36 or later (the linker records the `GLIBC_ABI_DT_RELR` version, so an
/// older loader refuses it by name instead of crashing), hence the check of the C
/// library it is built against; elsewhere (or with `BATON_NO_RELR` set, for a binary
/// that must run on an older glibc) the flag is left out and nothing else changes.
fn pack_relocations() {
    println!("cargo:rerun-if-env-changed=BATON_NO_RELR");
    let (target, host) = (std::env::var("TARGET"), std::env::var("HOST"));
    let native_glibc =
        matches!((&target, &host), (Ok(t), Ok(h)) if t == h && t.ends_with("-linux-gnu"));
    if !native_glibc || std::env::var_os("BATON_NO_RELR").is_some() {
        return;
    }
    // `glibc 2.36`
    let glibc = Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let version: Vec<u32> = glibc
        .strip_prefix("glibc ")
        .unwrap_or("")
        .split('.')
        .map_while(|p| p.parse().ok())
        .collect();
    if version.len() < 2 || (version[0], version[1]) < (2, 36) {
        return;
    }
    // rustc links through the C compiler (which drives its own lld on x86-64 Linux): a
    // C compiler and a linker older than the flag refuse it here.
    let Some(out) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        return;
    };
    let src = out.join("relr-probe.c");
    if std::fs::write(&src, "int main(void) { return 0; }\n").is_err() {
        return;
    }
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let linked = Command::new(cc)
        .arg(&src)
        .arg("-o")
        .arg(out.join("relr-probe"))
        .arg("-Wl,-z,pack-relative-relocs")
        .output()
        .is_ok_and(|o| o.status.success());
    if linked {
        println!("cargo:rustc-link-arg-bin=baton=-Wl,-z,pack-relative-relocs");
    }
}

/// Link `baton` with `layout/hot.ld`, which puts the functions an agent runs side by side
/// in `.text.hot`, ahead of the rest of the code, where the linker would otherwise leave
/// them spread over all 30 MiB of it.
///
/// Most of an idle agent's RSS is code: the kernel maps a page of the binary at a fault
/// together with its neighbours (fault-around, and a whole large folio of the page cache
/// where read-ahead made one), so each of the places that start-up and the steady state
/// touch brought in 64 KiB to a few MiB of code that never runs. Laid out together, the
/// functions that run take under 3 MiB (docs/src/benchmarks.md, "Code layout").
///
/// The script only orders input sections (rustc puts every function in its own): a
/// pattern that matches nothing is ignored, a function it misses stays where the linker
/// puts it, and nothing else in the binary changes. Its patterns are v0 symbol names
/// (`.cargo/config.toml`) with the crate hashes left open; `bench/layout.sh` rebuilds
/// them from a profiled agent. Both rustc's lld and GNU ld read `INSERT BEFORE`, which
/// adds to their default layout instead of replacing it. Left out for targets other than
/// Linux, for a path the linker argument cannot carry, or with `BATON_NO_LAYOUT` set.
fn hot_layout() {
    println!("cargo:rerun-if-env-changed=BATON_NO_LAYOUT");
    println!("cargo:rerun-if-changed=layout/hot.ld");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    if !linux || std::env::var_os("BATON_NO_LAYOUT").is_some() {
        return;
    }
    let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR") else {
        return;
    };
    let script = PathBuf::from(dir).join("layout").join("hot.ld");
    let Some(path) = script.to_str() else {
        return;
    };
    // `-Wl,` splits its argument at commas.
    if script.is_file() && !path.contains(',') {
        println!("cargo:rustc-link-arg-bin=baton=-Wl,--script={path}");
    }
}

fn main() {
    pack_relocations();
    hot_layout();
    println!("cargo:rerun-if-env-changed=BATON_COMMIT");
    let commit = std::env::var("BATON_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=BATON_COMMIT={commit}");
    // Built again when HEAD moves (a checkout, a commit on the current branch).
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={dir}/{r}");
        }
        println!("cargo:rerun-if-changed={dir}/packed-refs");
    }
}
