#!/usr/bin/env bash
# Failover and idle-agent benchmark (not a test: it reports figures, it asserts nothing).
#
#   bash bench/failover.sh                 # 20 failovers + idle measurement, release build
#   bash bench/failover.sh --runs 5        # fewer failovers
#   bash bench/failover.sh --bin PATH      # use an existing baton binary
#
# Failover: `baton demo --json` starts 3 agents on 127.0.x.y (heartbeat interval 100 ms,
# timeout 500 ms), SIGKILLs the active agent and reports, from the survivors' event log,
# the time from the SIGKILL to BTN-1102 (peer down detected) and to BTN-2102 (group active
# on the new server). Reference measured in the same run: the detection time itself, so
# the report shows how much of a failover is Baton's own work beyond the timeout.
# keepalived: then bench/keepalived.sh, as many runs at the same nominal detection
# (VRRPv3 advert_int 160 ms: master-down 3 x 160 ms + skew, against the 500 ms timeout),
# three keepalived in network namespaces, SIGKILL of the master -> the new master's
# notify_master; the report gives Baton's kill -> BTN-2102 as a ratio of it (p50, p99).
# Needs root, keepalived and `ip netns`; without them the report says why it was skipped.
# Idle: three agents of a steady cluster (one group, one http monitor every second) for
# 10 s: RSS and CPU per agent, against `baton demo-app` (a bare tokio HTTP process) as the
# reference measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=20
bin=""
quiet=0
interval_ms=100
timeout_ms=500
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    --quiet) quiet=1; shift ;;
    *) echo "usage: $0 [--runs N] [--bin PATH] [--quiet]" >&2; exit 2 ;;
  esac
done
if [ -z "$bin" ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/baton-target}"
  cargo build --release --bin baton >&2
  bin="$CARGO_TARGET_DIR/release/baton"
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# --- failover -------------------------------------------------------------------------
for i in $(seq 1 "$runs"); do
  net=$(( 100 + (i % 100) ))
  port=$(( 20000 + (i % 50) * 20 ))
  "$bin" demo --json --net "$net" --port "$port" --interval "${interval_ms}ms" --timeout "${timeout_ms}ms" \
    > "$out/run-$i.json" 2> "$out/run-$i.err" || { echo "run $i failed:"; cat "$out/run-$i.err"; exit 1; }
  [ "$quiet" = 1 ] || echo "run $i: $(cat "$out/run-$i.json")" >&2
done

# --- keepalived at the same nominal detection ----------------------------------------
# bench/keepalived.sh exits 77 (its last line says why) when it cannot run here.
# Its per-run lines (stderr) are shown unless --quiet, and kept for the skip reason.
{
  ka_rc=0
  bash bench/keepalived.sh --runs "$runs" --timeout "$timeout_ms" --json \
    2>&1 > "$out/keepalived.json" || ka_rc=$?
  echo "$ka_rc" > "$out/keepalived.rc"
} | if [ "$quiet" = 1 ]; then cat > "$out/keepalived.err"; else tee "$out/keepalived.err" >&2; fi
ka_rc=$(cat "$out/keepalived.rc")
if [ "$ka_rc" = 77 ]; then
  echo "keepalived skipped: $(tail -n 1 "$out/keepalived.err" | sed 's/^keepalived.sh: skipped: //')" > "$out/keepalived.skip"
elif [ "$ka_rc" != 0 ]; then
  echo "keepalived skipped: bench/keepalived.sh failed (exit $ka_rc): $(tail -n 1 "$out/keepalived.err")" > "$out/keepalived.skip"
fi

# --- idle -----------------------------------------------------------------------------
idle_secs=10
[ "$quiet" = 1 ] && idle_secs=2
idir="$out/idle"
mkdir -p "$idir"
"$bin" keygen "$idir/cluster.key" >/dev/null
cat > "$idir/baton.toml" <<TOML
[cluster]
name = "bench"
key_file = "cluster.key"
[heartbeat]
interval = "100ms"
timeout = "500ms"
[agent]
# The benchmark never resets this machine: the self-fence writes to a file.
sysrq_trigger = "$idir/sysrq-trigger"
force_reboot_command = 'echo force-reboot >> "$idir/fence-commands.log"'
force_poweroff_command = 'echo force-poweroff >> "$idir/fence-commands.log"'
reboot_command = 'echo reboot >> "$idir/fence-commands.log"'
shutdown_command = 'echo poweroff >> "$idir/fence-commands.log"'
[[server]]
name = "n1"
interconnects = ["127.99.0.11", "127.99.1.11"]
api = "127.99.0.11:19421"
[[server]]
name = "n2"
interconnects = ["127.99.0.12", "127.99.1.12"]
api = "127.99.0.12:19422"
[[server]]
name = "n3"
interconnects = ["127.99.0.13", "127.99.1.13"]
api = "127.99.0.13:19423"
[[group]]
name = "g"
servers = ["n1", "n2", "n3"]
[[group.resource]]
kind = "exec"
name = "r"
start = "true"
stop = "true"
check = "true"
[[monitor]]
kind = "http"
name = "ref-app"
interval = "1s"
url = "http://127.99.0.20:19430/health"
TOML
# The binary's pages out of the page cache first, as after a boot (bench/scale.sh does the
# same): a file just written or copied sits there in large folios that a fault maps whole,
# which adds megabytes to RSS that a started service would not have.
python3 -c 'import os, sys; os.sync(); f = open(sys.argv[1], "rb"); os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)' "$bin"
"$bin" demo-app --listen 127.99.0.20:19430 --name ref & ref=$!
pids=()
for n in n1 n2 n3; do
  "$bin" agent -c "$idir/baton.toml" -s "$n" --state-dir "$idir/$n" >"$idir/$n.log" 2>&1 & pids+=($!)
done
cleanup_idle() { kill "${pids[@]}" "$ref" 2>/dev/null || true; wait 2>/dev/null || true; }
trap 'cleanup_idle; rm -rf "$out"' EXIT
sleep 3
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
declare -A t0
for p in "${pids[@]}" "$ref"; do t0[$p]=$(ticks "$p"); done
sleep "$idle_secs"
hz=$(getconf CLK_TCK)
{
  for p in "${pids[@]}"; do echo "agent $(( $(ticks "$p") - ${t0[$p]} )) $(rss_kib "$p")"; done
  echo "ref $(( $(ticks "$ref") - ${t0[$ref]} )) $(rss_kib "$ref")"
} > "$out/idle.txt"
cleanup_idle

python3 - "$out" "$runs" "$idle_secs" "$hz" <<'PY'
import json, sys, glob, statistics
out, runs, secs, hz = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
rs = [json.load(open(f)) for f in sorted(glob.glob(out + "/run-*.json"))]
def pct(v, p):
    v = sorted(v); k = max(0, min(len(v) - 1, round(p / 100 * len(v) + 0.5) - 1)); return v[k]
tot = [r["total_ms"] for r in rs]
det = [r["detected_ms"] for r in rs if r.get("detected_ms") is not None]
own = [r["total_ms"] - r["detected_ms"] for r in rs if r.get("detected_ms") is not None]
act = [r["activating_ms"] for r in rs if r.get("activating_ms") is not None]
print(f"failover (SIGKILL -> group active elsewhere), {len(rs)} runs, heartbeat 100 ms / timeout 500 ms")
print(f"  total     p50 {pct(tot,50)} ms   p99 {pct(tot,99)} ms   min {min(tot)} ms   max {max(tot)} ms")
if det:
    print(f"  detection p50 {pct(det,50)} ms   p99 {pct(det,99)} ms   (reference: time until the peer is declared down)")
    print(f"  Baton's own work after detection p50 {pct(own,50)} ms   p99 {pct(own,99)} ms   total/detection p50 ratio {pct(tot,50)/max(1,pct(det,50)):.3f}")
fl = [(r["floor_ms"], r["total_ms"]) for r in rs if r.get("floor_ms") is not None]
if fl:
    above = [t - f for f, t in fl]
    share = [(t - f) / f * 100 for f, t in fl]
    print(f"  floor     p50 {pct([f for f, _ in fl],50)} ms   p99 {pct([f for f, _ in fl],99)} ms   (T + W_g after the last heartbeat: when the new owner may activate)")
    print(f"  above the floor p50 {pct(above,50)} ms   p99 {pct(above,99)} ms   ({statistics.median(share):.1f} % of the floor at p50)")
if act:
    print(f"  activation started (BTN-2101, after the takeover wait and the claim) p50 {pct(act,50)} ms   p99 {pct(act,99)} ms")
agents, ref = [], None
for line in open(out + "/idle.txt"):
    kind, ticks, rss = line.split(); t = int(ticks) / hz / secs * 100; r = int(rss) / 1024
    if kind == "agent": agents.append((t, r))
    else: ref = (t, r)
cpu = statistics.mean(a[0] for a in agents); rss = statistics.mean(a[1] for a in agents)
try:
    print(open(out + "/keepalived.skip").read().strip())
except FileNotFoundError:
    ka = json.load(open(out + "/keepalived.json"))
    nom = " / ".join(f"{ka['master_down_ms'][str(p)]:.0f} ms (priority {p})" for p in ka["takeover_priorities"])
    print(f"keepalived (SIGKILL -> new master's notify_master), {ka['runs']} runs, same host, VRRPv3 advert_int {ka['advert_ms']} ms")
    print(f"  nominal detection: master-down 3 x {ka['advert_ms']} ms + skew = {nom}; Baton's timeout {ka['timeout_ms']} ms")
    print(f"  total     p50 {ka['p50_ms']:.0f} ms   p99 {ka['p99_ms']:.0f} ms   min {ka['min_ms']:.0f} ms   max {ka['max_ms']:.0f} ms")
    if ka.get("vip_p50_ms") is not None:
        print(f"  VIP added p50 {ka['vip_p50_ms']:.0f} ms   p99 {ka['vip_p99_ms']:.0f} ms   (notify_master runs {ka['notify_after_vip_p50_ms']:.1f} ms after it at p50, {ka['notify_after_vip_max_ms']:.1f} ms at most)")
    print(f"  Baton / keepalived (kill -> active): p50 {pct(tot,50)/ka['p50_ms']:.2f} p99 {pct(tot,99)/ka['p99_ms']:.2f}")
print(f"idle agent ({secs:.0f} s, 3-server cluster, one group, one 1 s http monitor)")
print(f"  CPU {cpu:.2f} % of one core   RSS {rss:.1f} MiB")
print(f"  reference bare tokio HTTP process: CPU {ref[0]:.2f} %   RSS {ref[1]:.1f} MiB   -> agent/reference RSS ratio {rss/max(ref[1],0.1):.2f}")
PY
