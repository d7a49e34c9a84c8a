#!/usr/bin/env bash
# Release package figures (not a test: it reports, it asserts nothing).
#
#   bash bench/package.sh                        # [profile.dist] (what ships): build, package, measure
#   bash bench/package.sh --profile release      # the same without LTO, for comparison
#   bash bench/package.sh --bin PATH             # measure a binary already built
#
# Builds `baton` with the profile (CARGO_TARGET_DIR, default ~/.cache/baton-target-release),
# packages it with packaging/deb/build.sh (xz), and prints the package's size, the binary's
# size and its start time: `baton --version` and `baton config check` of the packaged
# example, warm (page cache full, hyperfine --warmup 3) and, as root, cold (page cache
# dropped before each run, as after a boot). Uses hyperfine when it is installed
# (apt-get install hyperfine), else a loop of 20 runs timed with date.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=dist
bin=""
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    *) echo "usage: $0 [--profile dist|release] [--bin PATH]" >&2; exit 2 ;;
  esac
done
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/baton-target-release}"
export CARGO_INCREMENTAL=0
if [ -z "$bin" ]; then
  start=$(date +%s)
  cargo build --profile "$profile" --bin baton
  echo "build: $(( $(date +%s) - start )) s (profile $profile; nothing to do when already built)"
  bin="$CARGO_TARGET_DIR/$profile/baton"
fi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
deb="$(bash packaging/deb/build.sh --bin "$bin" --out "$out" 2>/dev/null | tail -n 1)"
example=packaging/deb/baton.toml.example

mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo "binary:  $(mib "$(stat -c %s "$bin")") ($bin)"
echo "package: $(mib "$(stat -c %s "$deb")") ($(basename "$deb"), xz)"
echo "installed size: $(dpkg-deb -f "$deb" Installed-Size) KiB"

measure() { # measure LABEL PREPARE COMMAND...
  local label="$1" prepare="$2"; shift 2
  if command -v hyperfine >/dev/null 2>&1; then
    local args=(--style basic -N --export-json "$out/h.json" --runs 20)
    if [ -n "$prepare" ]; then args+=(--prepare "$prepare"); else args+=(--warmup 3); fi
    hyperfine "${args[@]}" "$*" >/dev/null 2>&1
    python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['results'][0]; print(f'{sys.argv[2]}: mean {r[\"mean\"]*1000:.1f} ms, median {r[\"median\"]*1000:.1f} ms, min {r[\"min\"]*1000:.1f} ms (hyperfine, 20 runs)')" "$out/h.json" "$label"
  else
    local total=0 t0 t1
    for _ in $(seq 20); do
      [ -n "$prepare" ] && eval "$prepare"
      t0=$(date +%s%N); "$@" >/dev/null 2>&1 || true; t1=$(date +%s%N)
      total=$((total + t1 - t0))
    done
    echo "$label: mean $((total / 20 / 1000000)) ms (20 runs)"
  fi
}
measure "warm start, baton --version" "" "$bin" --version
measure "warm start, baton config check" "" "$bin" config check "$example"
if [ "$(id -u)" = 0 ] && [ -w /proc/sys/vm/drop_caches ]; then
  drop="sh -c 'sync; echo 3 > /proc/sys/vm/drop_caches'"
  measure "cold start, baton --version" "$drop" "$bin" --version
  measure "cold start, baton config check" "$drop" "$bin" config check "$example"
else
  echo "cold start: needs root (drops the page cache before each run)"
fi
