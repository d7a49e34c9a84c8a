#!/usr/bin/env bash
# The Debian package on this machine: packages a built `baton` (by default the debug
# build of this run: CI does no release build), installs it with dpkg -i, runs it, checks
# its files, modes, conffiles and units (systemd-analyze verify), upgrades it over an
# edited conffile, removes and purges it, and checks that nothing is left behind.
#
#   bash tests/package/test.sh [--bin PATH]
#
# Needs root, dpkg-dev and systemd-analyze (tests/run-all.sh installs them). Prints one
# line per check and closes with "N passed, N failed" (tests/run-all.sh counts it).
# Refuses to run where a `baton` package is already installed: it would remove it.
set -uo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
bin="$target/debug/baton"
[ "${1:-}" = "--bin" ] && bin="$2"

passed=0
failed=0
ok() { echo "ok     $*"; passed=$((passed + 1)); }
bad() { echo "FAILED $*"; failed=$((failed + 1)); }
check() { # check NAME COMMAND...
  local name="$1"; shift
  if "$@"; then ok "$name"; else bad "$name"; fi
}
finish() {
  echo "package: ${passed} passed, ${failed} failed"
  [ "$failed" -eq 0 ]
  exit $?
}
# A test that cannot run here is a failure under BATON_REQUIRE_ALL=1 (CI) and a recorded
# skip otherwise, as baton_tests::skip does for the Rust tests.
cannot_run() {
  if [ "${BATON_REQUIRE_ALL:-0}" = 1 ]; then
    bad "package test could not run, and BATON_REQUIRE_ALL=1 makes that a failure: $1"
  else
    echo "SKIPPED package test: $1"
    [ -n "${BATON_SKIP_LOG:-}" ] && printf 'package::install_upgrade_purge\t%s\n' "$1" >>"$BATON_SKIP_LOG"
  fi
  finish
}

[ "$(id -u)" = 0 ] || cannot_run "not root (dpkg -i needs it)"
for tool in dpkg dpkg-deb dpkg-shlibdeps systemd-analyze; do
  command -v "$tool" >/dev/null || cannot_run "$tool is missing"
done
[ -x "$bin" ] || { bad "no baton binary at $bin (cargo build --bin baton first)"; finish; }
# The purge removes /var/lib/baton: never on a machine where an agent keeps its state there.
[ -e /var/lib/baton ] && cannot_run "/var/lib/baton exists (an agent's state): the purge would remove it"
if dpkg-query -W -f='${Status}' baton 2>/dev/null | grep -q 'install ok'; then
  bad "a baton package is already installed here; remove it first (this test would)"
  finish
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Everything the package or its scripts could touch, before: compared after the purge.
# (Only these places: other tests may change the rest of the machine meanwhile.)
snapshot() {
  find /etc/baton /etc/systemd /lib/systemd/system /usr/bin /usr/share/doc/baton /usr/share/man/man1 \
    /usr/share/bash-completion /usr/share/zsh /usr/share/fish /var/lib/baton /var/lib/systemd /run/baton \
    -xdev -print 2>/dev/null | grep -v '^/var/lib/systemd/timers' | sort
}
snapshot >"$work/before"

version="$("$bin" --version | awk '{print $2}')"
deb="$(bash "$repo/packaging/deb/build.sh" --bin "$bin" --out "$work/v1" --compress none | tail -n 1)"
check "build.sh builds a .deb" test -f "$deb"
check "the package is named baton_${version}_$(dpkg --print-architecture).deb" \
  test "$(basename "$deb")" = "baton_${version}_$(dpkg --print-architecture).deb"
check "the conffiles are agent.env and witness.env" \
  test "$(dpkg-deb -f "$deb" Package; dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)" = "baton
/etc/baton/agent.env
/etc/baton/witness.env"
check "Depends lists the C library" bash -c "dpkg-deb -f '$deb' Depends | grep -q libc6"
# Packed relative relocations (node-agent/build.rs) need glibc 2.36's loader, which
# dpkg-shlibdeps does not see: build.sh raises the bound.
if LC_ALL=C readelf -V "$bin" | grep -q GLIBC_ABI_DT_RELR; then
  check "Depends asks for glibc 2.36 (the binary has packed relocations)" \
    bash -c "dpkg-deb -f '$deb' Depends | grep -Eq 'libc6 \(>= 2\.(3[6-9]|[4-9][0-9])'"
fi

# The functions an agent runs sit together ahead of the rest of the code
# (node-agent/layout/hot.ld, linked by node-agent/build.rs unless BATON_NO_LAYOUT is set).
# Patterns that stopped matching the binary's symbols (another mangling, a crate renamed)
# would leave the section missing or nearly empty, and every agent mapping megabytes more.
if [ -z "${BATON_NO_LAYOUT:-}" ]; then
  hot_kib="$(LC_ALL=C readelf -SW "$bin" | python3 -c '
import re, sys
s = {}
for line in sys.stdin:
    m = re.match(r"\s*\[\s*\d+\]\s+(\S+)\s+\S+\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)", line)
    if m:
        s[m.group(1)] = (int(m.group(2), 16), int(m.group(3), 16))
hot, text = s.get(".text.hot"), s.get(".text")
print(hot[1] // 1024 if hot and text and hot[0] < text[0] else 0)')"
  check "the functions an agent runs are laid out ahead of the rest of the code (.text.hot: ${hot_kib} KiB, at least 1 MiB)" \
    test "$hot_kib" -ge 1024
fi

if ! dpkg -i "$deb" >"$work/install.log" 2>&1; then
  cat "$work/install.log"
  bad "dpkg -i installs the package"
  finish
fi
ok "dpkg -i installs the package"
check "/usr/bin/baton --version prints the package's version and the commit" \
  test "$(/usr/bin/baton --version | cut -d' ' -f1-2)" = "baton $version"
check "baton config check accepts the shipped example" \
  /usr/bin/baton config check /usr/share/doc/baton/examples/baton.toml
check "/etc/baton is a root-owned 0755 directory" test "$(stat -c '%U:%G %a' /etc/baton)" = "root:root 755"
check "agent.env and witness.env are 0644" \
  test "$(stat -c '%a' /etc/baton/agent.env /etc/baton/witness.env | sort -u)" = "644"
check "the binary is 0755" test "$(stat -c '%a' /usr/bin/baton)" = "755"
check "dpkg verifies every installed file" dpkg --verify baton
for unit in baton.service baton-witness.service; do
  check "$unit is installed" test -f "/lib/systemd/system/$unit"
  check "$unit is not enabled by the install" \
    bash -c "! ls /etc/systemd/system/*.wants/$unit >/dev/null 2>&1"
  # --man=no: the units point at a man page only once the binary can print one.
  if systemd-analyze verify --man=no "/lib/systemd/system/$unit" >"$work/verify.log" 2>&1; then
    ok "systemd-analyze verify $unit"
  else
    cat "$work/verify.log"
    bad "systemd-analyze verify $unit"
  fi
done
check "baton.service runs the packaged binary" \
  grep -q '^ExecStart=/usr/bin/baton agent --config /etc/baton/baton.toml$' /lib/systemd/system/baton.service
if "$bin" completions bash >/dev/null 2>&1; then
  check "the bash completion is installed" test -s /usr/share/bash-completion/completions/baton
fi
if "$bin" man >/dev/null 2>&1; then
  check "the man page baton(1) is installed" test -s /usr/share/man/man1/baton.1.gz
  check "the man pages are gzipped roff" bash -c 'for p in /usr/share/man/man1/baton*.1.gz; do zcat "$p" | grep -q "^\.TH " || exit 1; done'
fi
if "$bin" completions bash >/dev/null 2>&1; then
  check "the zsh and fish completions are installed" \
    test -s /usr/share/zsh/vendor-completions/_baton -a -s /usr/share/fish/vendor_completions.d/baton.fish
fi

# Upgrade over an edited conffile: the operator's agent.env stays.
echo 'BATON_SERVER=node-1' >>/etc/baton/agent.env
cp /etc/baton/agent.env "$work/agent.env.edited"
echo 'test-only: a file an operator added' >/etc/baton/baton.toml
deb2="$(bash "$repo/packaging/deb/build.sh" --bin "$bin" --out "$work/v2" --compress none --version "${version}+upgrade1" | tail -n 1)"
if dpkg -i "$deb2" >"$work/upgrade.log" 2>&1; then ok "dpkg -i upgrades the package"; else cat "$work/upgrade.log"; bad "dpkg -i upgrades the package"; fi
check "the upgrade left the edited agent.env as it was" cmp -s /etc/baton/agent.env "$work/agent.env.edited"
check "the upgrade left baton.toml alone" grep -q 'test-only' /etc/baton/baton.toml
check "the upgraded version is installed" \
  test "$(dpkg-query -W -f='${Version}' baton)" = "${version}+upgrade1"

# Remove keeps the conffiles; purge removes them and the state directory.
mkdir -p /var/lib/baton && echo '{}' >/var/lib/baton/epochs.json
rm /etc/baton/baton.toml
check "dpkg -r removes the package" dpkg -r baton >"$work/remove.log" 2>&1
check "remove keeps the conffiles" test -f /etc/baton/agent.env
check "remove takes the binary away" test ! -e /usr/bin/baton
check "dpkg -P purges the package" dpkg -P baton >"$work/purge.log" 2>&1
check "dpkg no longer knows the package" \
  bash -c "! dpkg-query -W -f='\${Status}' baton 2>/dev/null | grep -q installed"
snapshot >"$work/after"
if diff "$work/before" "$work/after" >"$work/left"; then
  ok "nothing is left after the purge"
else
  sed 's/^/  /' "$work/left"
  bad "nothing is left after the purge"
fi
finish
