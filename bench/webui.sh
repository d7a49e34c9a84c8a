#!/usr/bin/env bash
# Web UI and /metrics figures (not a test: it reports figures, it asserts nothing).
#
#   bash bench/webui.sh                 # release build
#   bash bench/webui.sh --bin PATH      # an existing baton binary (e.g. the debug one)
#
# An 8-server cluster with 50 groups on 127.98.x.y ([metrics.prometheus] allowing
# loopback). Reports: GET /metrics scrape time (30 scrapes of one agent) and size; the
# agent's RSS and CPU over 20 s with no UI open, then over 20 s with one UI "open" (the
# page's poll of /ui/live every 2 s with If-None-Match, as app.js does), and how many
# polls were answered 304.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=""
secs=20
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin="$2"; shift 2 ;;
    --secs) secs="$2"; shift 2 ;;
    *) echo "usage: $0 [--bin PATH] [--secs N]" >&2; exit 2 ;;
  esac
done
if [ -z "$bin" ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/baton-target}"
  cargo build --release --bin baton >&2
  bin="$CARGO_TARGET_DIR/release/baton"
fi
d=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$d"; }
trap cleanup EXIT
"$bin" keygen "$d/cluster.key" >/dev/null
{
  cat <<TOML
[cluster]
name = "bench-ui"
key_file = "cluster.key"
[heartbeat]
interval = "200ms"
timeout = "2s"
[agent]
sysrq_trigger = "$d/sysrq-trigger"
force_reboot_command = 'echo force-reboot >> "$d/fence.log"'
force_poweroff_command = 'echo force-poweroff >> "$d/fence.log"'
reboot_command = 'echo reboot >> "$d/fence.log"'
shutdown_command = 'echo poweroff >> "$d/fence.log"'
[api]
socket_dir = ""
[metrics.prometheus]
allow = ["127.0.0.0/8"]
TOML
  for i in $(seq 1 8); do
    printf '[[server]]\nname = "n%d"\ninterconnects = ["127.98.0.%d"]\napi = "127.98.0.%d:19521"\n' "$i" "$((10 + i))" "$((10 + i))"
  done
  for g in $(seq 1 50); do
    a=$(( (g % 8) + 1 )); b=$(( ((g + 1) % 8) + 1 ))
    printf '[[group]]\nname = "g%d"\nservers = ["n%d", "n%d"]\n[[group.resource]]\nkind = "exec"\nname = "r%d"\nstart = "true"\nstop = "true"\ncheck = "true"\n' "$g" "$a" "$b" "$g"
  done
} > "$d/baton.toml"
"$bin" config check "$d/baton.toml" >&2
for i in $(seq 1 8); do
  "$bin" agent -c "$d/baton.toml" -s "n$i" --state-dir "$d/n$i" >"$d/n$i.log" 2>&1 & pids+=($!)
done
api="http://127.98.0.11:19521"
for _ in $(seq 1 100); do
  n=$("$bin" status -c "$d/baton.toml" -s n1 --json 2>/dev/null | python3 -c 'import json,sys; s=json.load(sys.stdin); print(sum(1 for g in s["local"]["groups"] if g["state"]=="online"))' 2>/dev/null || echo 0)
  [ "$n" = 50 ] && break
  sleep 0.2
done
echo "groups online: $n of 50" >&2
p1=${pids[0]}
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
hz=$(getconf CLK_TCK)

: > "$d/scrape.txt"
for _ in $(seq 1 30); do
  curl -s -o "$d/metrics.txt" -w '%{time_total}\n' "$api/metrics" >> "$d/scrape.txt"
done
size=$(wc -c < "$d/metrics.txt"); series=$(grep -vc '^#' "$d/metrics.txt")

t0=$(ticks "$p1"); sleep "$secs"; closed_cpu=$(( $(ticks "$p1") - t0 )); closed_rss=$(rss_kib "$p1")

token=$("$bin" token --role operator -c "$d/baton.toml")
cookie=$(curl -s -D - -o /dev/null --data-urlencode "user=bench" --data-urlencode "token=$token" "$api/ui/login" | awk -F'[ ;]' 'tolower($1)=="set-cookie:" {print $2}')
etag=""; n304=0; n200=0
t0=$(ticks "$p1")
end=$(( $(date +%s) + secs ))
while [ "$(date +%s)" -lt "$end" ]; do
  code=$(curl -s -o "$d/live.html" -D "$d/live.h" -w '%{http_code}' -H "Cookie: $cookie" ${etag:+-H "If-None-Match: $etag"} "$api/ui/live")
  if [ "$code" = 304 ]; then n304=$((n304 + 1)); else n200=$((n200 + 1)); etag=$(awk 'tolower($1)=="etag:" {print $2}' "$d/live.h" | tr -d '\r'); fi
  sleep 2
done
open_cpu=$(( $(ticks "$p1") - t0 )); open_rss=$(rss_kib "$p1")
live_bytes=$(wc -c < "$d/live.html")

python3 - "$d/scrape.txt" "$size" "$series" "$closed_cpu" "$closed_rss" "$open_cpu" "$open_rss" "$hz" "$secs" "$n200" "$n304" "$live_bytes" <<'PY'
import sys, statistics
f, size, series, ccpu, crss, ocpu, orss, hz, secs, n200, n304, live = sys.argv[1:]
t = sorted(float(x) * 1000 for x in open(f))
hz, secs = float(hz), float(secs)
print(f"/metrics on an 8-server, 50-group cluster: {size} bytes, {series} samples")
print(f"  scrape time (30 scrapes): p50 {t[len(t)//2]:.1f} ms   max {t[-1]:.1f} ms")
print(f"agent n1 over {secs:.0f} s")
print(f"  UI closed: CPU {int(ccpu)/hz/secs*100:.2f} % of one core   RSS {int(crss)/1024:.1f} MiB")
print(f"  UI open (poll every 2 s): CPU {int(ocpu)/hz/secs*100:.2f} %   RSS {int(orss)/1024:.1f} MiB   polls: {n200} answered 200, {n304} answered 304 (live part {live} bytes)")
PY
