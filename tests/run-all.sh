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
#   nftables (cutting one interconnect path in the integration tests), qemu-utils (qemu-io
#   and qemu-img, the NBD clients of the mirror tests), npm (fetches the Azure API specs),
#   prometheus (promtool checks the agent's /metrics and docs' alerting rules), chromium
#   (the Web UI's browser test, driven by playwright-core without a browser download).
need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v ping >/dev/null 2>&1 || need+=(iputils-ping)
command -v arping >/dev/null 2>&1 || need+=(iputils-arping)
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v keepalived >/dev/null 2>&1 || need+=(keepalived)  # the fault lab's VRRP comparison
command -v qemu-io >/dev/null 2>&1 || need+=(qemu-utils)  # NBD client of the mirror tests
command -v npm >/dev/null 2>&1 || need+=(npm)  # fetches the Azure REST API specs (tests/azure/specs.sh)
command -v dpkg-shlibdeps >/dev/null 2>&1 || need+=(dpkg-dev)  # the Debian package's dependencies (packaging/deb)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)  # verifies the package's units
command -v promtool >/dev/null 2>&1 || need+=(prometheus)  # promtool: checks /metrics and the alerting rules
[ -x /usr/bin/chromium ] || need+=(chromium)  # the Web UI's browser test (tests/tests/browser.rs)
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    step "installing Debian packages: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "note: missing ${need[*]} and not root: the tests that need them will say they are skipped"
  fi
fi

# Python tools in a local venv: moto server (AWS API emulator), cbor2, aiosmtpd (SMTP),
# and the cloud fakes' validators (google-api-python-client for its discovery documents).
step "Python test tools (moto server, aiosmtpd, the cloud fakes' validators) in a local venv"
BATON_PYTHON="$(bash tests/moto/setup.sh | tail -n 1)"
export BATON_PYTHON
# From here on a missing emulator fails the AWS tests instead of skipping them, and so
# does every other skip path (not root, no network namespaces, no nftables, no ping):
# a test that cannot run here is a failure, named in cargo's output.
# (BATON_REQUIRE_ALL=0 bash tests/run-all.sh lists such tests as skipped instead.)
export BATON_REQUIRE_MOTO=1
export BATON_REQUIRE_ALL="${BATON_REQUIRE_ALL:-1}"
# Exploration knobs of the simulation are for hand runs only.
unset BATON_SIM_IGNORE BATON_SIM_SCHEDULES BATON_SIM_BASE_SEED BATON_SIM_SEED BATON_SIM_MAX_FAILURES

# Every test run below appends to one output file and every skip to one list; the
# closing line counts both, and is printed even when a step failed.
out="$CARGO_TARGET_DIR/test-output.txt"
export BATON_SKIP_LOG="$CARGO_TARGET_DIR/skipped-tests.txt"
mkdir -p "$CARGO_TARGET_DIR"
: >"$out"
: >"$BATON_SKIP_LOG"
status=0
summary() {
  local passed failed ignored skipped
  passed=$(grep -E '^test result: ' "$out" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
  failed=$(grep -E '^test result: ' "$out" | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
  ignored=$(grep -E '^test result: ' "$out" | grep -Eo '[0-9]+ ignored' | awk '{s+=$1} END {print s+0}')
  # A test may record several reasons: count tests, not lines.
  skipped=$(cut -f1 "$BATON_SKIP_LOG" | sort -u | grep -c . || true)
  echo
  if [ "$skipped" -gt 0 ]; then
    echo "skipped (this machine lacks what they need; they returned early):"
    sed 's/^/  /' "$BATON_SKIP_LOG"
  fi
  grep -E '^test .* \.\.\. FAILED$' "$out" | sed 's/^test /failed: /; s/ \.\.\. FAILED$//' || true
  echo "ignored: ${ignored} (benchmarks and replays run by hand)"
  # Skipped tests are counted by cargo as passed: report them apart.
  if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
    echo "a step failed before or besides the tests (see above)"
  fi
  echo "$((passed - skipped)) passed, ${failed} failed, ${skipped} skipped"
}
trap 'summary' EXIT
# From here on a failing step is recorded and the next one still runs.
set +e

step "browser test packages (playwright-core, axe-core; pinned by tests/browser/package-lock.json)"
BATON_BROWSER_NODE="$(bash tests/browser/setup.sh | tail -n 1)" || status=1
export BATON_BROWSER_NODE

step "Azure fake: Microsoft's API specs, and the fake's self-test against them"
BATON_AZURE_SPECS="$(bash tests/azure/specs.sh | tail -n 1)"
export BATON_AZURE_SPECS
azure_out="$CARGO_TARGET_DIR/azure-fake-selftest.txt"
"$BATON_PYTHON" tests/azure/selftest.py --specs "$BATON_AZURE_SPECS" 2>&1 | tee "$azure_out"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
# Counted in the closing line like cargo's tests.
awk '/^azure-fake: [0-9]+ passed, [0-9]+ failed$/ { printf "test result: %s. %d passed; %d failed; 0 ignored (azure fake self-test)\n", ($4 == 0 ? "ok" : "FAILED"), $2, $4 }' "$azure_out" >>"$out"

step "Google Cloud fake: self-test against Google's discovery documents (tests/gcp)"
"$BATON_PYTHON" tests/gcp/selftest.py 2>&1 | tee -a "$out"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

step "cargo fmt --check"
cargo fmt --all -- --check || { status=1; exit 1; }

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings || { status=1; exit 1; }

step "build the baton binary (the integration tests run it)"
cargo build --bin baton || { status=1; exit 1; }

# A closing "NAME: N passed, N failed" line of a script, counted like cargo's tests.
count_plain() { # count_plain NAME FILE
  awk -v n="$1" '$0 ~ "^" n ": [0-9]+ passed, [0-9]+ failed$" { printf "test result: %s. %d passed; %d failed; 0 ignored (%s)\n", ($4 == 0 ? "ok" : "FAILED"), $2, $4, n }' "$2" >>"$out"
  grep -Eq "^$1: [0-9]+ passed, [0-9]+ failed$" "$2" || { echo "$1: the checks did not run to their end"; status=1; }
}

step "Debian package: build from the debug binary, install, verify the units, upgrade, purge (tests/package)"
pkg_out="$CARGO_TARGET_DIR/package-test.txt"
bash tests/package/test.sh --bin "$CARGO_TARGET_DIR/debug/baton" 2>&1 | tee "$pkg_out"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
count_plain package "$pkg_out"

step "Terraform modules: parse, format, references, docs, checkov, rendered configurations against baton (tests/terraform)"
tf_out="$CARGO_TARGET_DIR/terraform-checks.txt"
if iac_python="$(bash tests/moto/setup.sh --iac | tail -n 1)" && hcltool="$(bash tests/terraform/setup.sh | tail -n 1)"; then
  "$iac_python" tests/terraform/check.py --hcltool "$hcltool" --baton "$CARGO_TARGET_DIR/debug/baton" \
    --schema-cache "$CARGO_TARGET_DIR/tf-schemas" 2>&1 | tee "$tf_out"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  count_plain terraform "$tf_out"
else
  echo "could not set up the Terraform checks' tools"
  status=1
fi

step "docs/src/events.md is generated from the event catalogue"
"$CARGO_TARGET_DIR/debug/baton" events --markdown | diff -u docs/src/events.md - \
  || { echo "docs/src/events.md is stale: run 'baton events --markdown > docs/src/events.md'"; status=1; }

step "bench harness compiles and runs once (smoke)"
bash bench/failover.sh --runs 1 --bin "$CARGO_TARGET_DIR/debug/baton" --quiet || status=1

step "deterministic simulation: 10,000 random fault schedules (optimized build)"
sim_out="$CARGO_TARGET_DIR/sim-output.txt"
cargo test --release -p baton-core --lib sim_random_schedules -- --exact engine::sim::sim_random_schedules 2>&1 | tee "$sim_out"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
# A filter that matches no test is an error, not a pass.
grep -q '^test result: ok. 1 passed' "$sim_out" \
  || { echo "the simulation filter ran no test"; status=1; }
cat "$sim_out" >>"$out"

step "cargo test (unit, property and integration tests)"
cargo test --workspace --no-fail-fast 2>&1 | tee -a "$out"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

exit "$status"
