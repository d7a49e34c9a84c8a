#!/usr/bin/env bash
# Fault-lab benchmark (root only; reports figures, asserts nothing):
#   scenario 1's failover time (the VIP holder dies; kill -> a client is answered by the new
#   node) for Baton and keepalived, side by side in the same run and the same network
#   namespaces, same nominal detection time (Baton heartbeat 200 ms / timeout 600 ms,
#   keepalived VRRPv3 advert_int 0.2 s), Baton's time as a ratio of keepalived's (p50, p99);
#   then false failovers of both during a soak of 20 % loss + 50 ± 50 ms delay on every
#   interconnect. See docs/src/lab.md.
#
#   bash bench/lab.sh                       # 20 runs + 120 s soak, debug build
#   bash bench/lab.sh --runs 5 --soak 30    # shorter
#   bash bench/lab.sh --release             # release build of baton and baton-lab
#   bash bench/lab.sh --search --release    # loss-proof search: for each of Baton and
#       keepalived the tightest timing with no false failover, self-fence or double
#       holder in a 600 s soak of 20 % loss + 50 ± 50 ms delay, then 20 failovers of each
#       at those settings (about an hour; --soak SECS and --runs N shorten it)
#   (any other option is passed to `baton-lab bench`: --servers N --interval MS
#    --timeout MS --advert MS --dad --keep)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/baton-target}"
profile=debug
cargo_flags=()
args=()
runs=20
soak=""
cmd=bench
while [ $# -gt 0 ]; do
  case "$1" in
    --release) profile=release; cargo_flags=(--release); shift ;;
    --search) cmd=search; shift ;;
    --runs) runs="$2"; shift 2 ;;
    --soak) soak="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
# The soak: 120 s beside the failover runs, 600 s per candidate in the search.
if [ -z "$soak" ]; then
  if [ "$cmd" = search ]; then soak=600; else soak=120; fi
fi
if [ "$(id -u)" != 0 ]; then
  echo "SKIPPED: the fault lab needs root (network namespaces, nftables)"; exit 0
fi
command -v keepalived >/dev/null 2>&1 || {
  echo "keepalived is missing: apt-get install keepalived (tests/run-all.sh installs it)"; exit 1; }
cargo build "${cargo_flags[@]}" --bin baton >&2
cargo build "${cargo_flags[@]}" -p baton-tests --bin baton-lab >&2
echo "baton-lab $cmd --runs $runs --soak $soak ${args[*]} ($profile build, $(nproc) cores, kernel $(uname -r))"
BATON_LAB_QUIET=1 "$CARGO_TARGET_DIR/$profile/baton-lab" "$cmd" --runs "$runs" --soak "$soak" "${args[@]}"
