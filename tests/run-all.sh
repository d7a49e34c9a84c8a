#!/usr/bin/env bash
# Runs Baton's whole test suite on a fresh machine: installs what the tests need (Debian
# packages for the network tests when running as root), checks formatting and lints,
# builds the `baton` binary and runs every unit, property and integration test.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/baton-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# One-shot builds gain nothing from incremental artifacts, which cost gigabytes here.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

step() { printf '\n==> %s\n' "$*"; }

# Debian packages used by the on-host providers and the network tests:
#   iproute2 (ip, namespaces), iputils-ping (ping monitor), iputils-arping (gratuitous ARP),
#   nftables (cutting one interconnect path in the integration tests).
need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v ping >/dev/null 2>&1 || need+=(iputils-ping)
command -v arping >/dev/null 2>&1 || need+=(iputils-arping)
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v keepalived >/dev/null 2>&1 || need+=(keepalived)  # the fault lab's VRRP comparison
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    step "installing Debian packages: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "note: missing ${need[*]} and not root: the tests that need them will say they are skipped"
  fi
fi

# Python tools in a local venv: moto server (AWS API emulator), cbor2, aiosmtpd (SMTP).
step "Python test tools (moto server, aiosmtpd) in a local venv"
BATON_PYTHON="$(bash tests/moto/setup.sh | tail -n 1)"
export BATON_PYTHON
# From here on a missing emulator fails the AWS tests instead of skipping them.
export BATON_REQUIRE_MOTO=1

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

step "build the baton binary (the integration tests run it)"
cargo build --bin baton

step "docs/src/events.md is generated from the event catalogue"
"$CARGO_TARGET_DIR/debug/baton" events --markdown | diff -u docs/src/events.md - \
  || { echo "docs/src/events.md is stale: run 'baton events --markdown > docs/src/events.md'"; exit 1; }

step "bench harness compiles and runs once (smoke)"
bash bench/failover.sh --runs 1 --bin "$CARGO_TARGET_DIR/debug/baton" --quiet

step "deterministic simulation: 10,000 random fault schedules (optimized build)"; cargo test --release -p baton-core --lib sim_random_schedules

step "cargo test (unit, property and integration tests)"
cargo test --workspace --no-fail-fast 2>&1 | tee "$CARGO_TARGET_DIR/test-output.txt"
status=${PIPESTATUS[0]}
passed=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' "$CARGO_TARGET_DIR/test-output.txt" | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$CARGO_TARGET_DIR/test-output.txt" | awk '{s+=$1} END {print s+0}')
ignored=$(grep -Eo '[0-9]+ ignored' "$CARGO_TARGET_DIR/test-output.txt" | awk '{s+=$1} END {print s+0}')
echo
echo "${passed} passed, ${failed} failed, ${ignored} skipped"
exit "$status"
