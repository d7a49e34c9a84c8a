#!/usr/bin/env bash
# keepalived failover on one host, at Baton's demo timing (not a test: it reports figures,
# it asserts nothing). Root only; bench/failover.sh runs it beside Baton's demo failovers.
#
#   bash bench/keepalived.sh                    # 20 failovers, nominal detection 500 ms
#   bash bench/keepalived.sh --runs 5           # fewer failovers
#   bash bench/keepalived.sh --timeout 500      # Baton's heartbeat timeout to match (ms)
#   bash bench/keepalived.sh --advert 160       # VRRP advert_int (ms) instead of the derived one
#   bash bench/keepalived.sh --json             # the summary as one JSON object on stdout
#   bash bench/keepalived.sh --keep             # keep the work directory (configs, logs)
#
# Topology, all in network namespaces named btnka-<pid>-*, nothing added to the root
# namespace (no interface, address or route of the host is touched):
#
#   btnka-<pid>-sw : a Linux bridge br0 with ports v1, v2, v3
#   btnka-<pid>-nI : node I (1..3), eth0 = 10.239.0.1I/24, veth peer of vI
#
# keepalived (/usr/sbin/keepalived, the Debian package) runs in the foreground in each
# node namespace (`-n -l -D -G -P`, VRRP only, its own config, pid files and log in a
# per-node directory, so the three instances share no file): one VRRPv3 instance over
# multicast on eth0, virtual router 51, VIP 10.239.0.100/24, priorities 200/190/180,
# `state BACKUP` and `nopreempt` on all, and a notify_master script that appends
# `date +%s%N` to the node's own file.
#
# Timing: the same nominal detection as Baton's demo (heartbeat timeout T, default 500 ms).
# A VRRPv3 backup declares the master down after Master_Down_Interval =
# 3 x advert_int + Skew_Time, Skew_Time = (256 - priority) x advert_int / 256. VRRPv3
# carries advert_int in centiseconds, so 3 x advert_int = T exactly is possible only when T
# is a multiple of 30 ms; the default takes the largest centisecond value with
# 3 x advert_int <= T: T = 500 ms -> advert_int 0.16 s (keepalived 2.2.7 accepts it and
# logs "Advert interval = 160 milli-sec"), 3 x 160 = 480 ms, plus a skew of 35 / 41 /
# 48 ms for priorities 200 / 190 / 180: the backup that takes over declares the master
# down 515 or 521 ms after its last advertisement, against Baton's 500 ms after the last
# heartbeat. (0.17 s would give 510 ms + skew = 554 to 558 ms, further from T.) In both
# tools the kill falls at a random point of an interval, so detection after the kill is
# the nominal figure less 0 to one interval.
#
# A run: wait until exactly one node holds the VIP (`ip -n NS addr`) and every node's
# keepalived runs; take the time (bash's EPOCHREALTIME, CLOCK_REALTIME like `date`);
# SIGKILL that node's keepalived (the parent is stopped first, so it neither respawns its
# VRRP child nor makes it leave gracefully through its parent-death signal; then the VRRP
# child and the parent get SIGKILL) and remove its VIP, as when the machine dies; wait
# until another node's notify_master file has a timestamp after the kill. Failover =
# that timestamp - the kill. Beside it, from `ip -ts monitor address` in each node
# namespace: when the VIP was added on the new master (netlink's notification). Then the
# killed node's keepalived is started again; with nopreempt it comes back as a backup, and
# the next run waits for it to enter BACKUP state. Every clock read is on this host.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=20
timeout_ms=500
advert_ms=""
json=0
keep=0
usage() { echo "usage: $0 [--runs N] [--timeout MS] [--advert MS] [--json] [--keep]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="${2:?}"; shift 2 ;;
    --timeout) timeout_ms="${2:?}"; shift 2 ;;
    --advert) advert_ms="${2:?}"; shift 2 ;;
    --json) json=1; shift ;;
    --keep) keep=1; shift ;;
    *) usage ;;
  esac
done
[[ "$runs" =~ ^[1-9][0-9]*$ && "$timeout_ms" =~ ^[1-9][0-9]*$ ]] || usage
if [ -z "$advert_ms" ]; then
  # Whole centiseconds, rounded down: 3 x advert_int <= timeout.
  advert_cs=$(( timeout_ms / 30 ))
  advert_ms=$(( advert_cs * 10 ))
fi
[[ "$advert_ms" =~ ^[1-9][0-9]*$ ]] || usage
if (( advert_ms < 10 || advert_ms % 10 != 0 || advert_ms > 40950 )); then
  echo "keepalived.sh: advert_int must be whole centiseconds, 10 ms to 40.95 s (got $advert_ms ms)" >&2
  exit 2
fi

# Exit status 77: keepalived cannot run here (failover.sh reports the reason and goes on).
skip() { echo "keepalived.sh: skipped: $*" >&2; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root (network namespaces)"
ka=${KEEPALIVED:-/usr/sbin/keepalived}
[ -x "$ka" ] || [ -n "${KEEPALIVED:-}" ] || ka=$(command -v keepalived || true)
{ [ -n "$ka" ] && [ -x "$ka" ]; } || skip "keepalived not found (${KEEPALIVED:-/usr/sbin/keepalived}; Debian package keepalived)"
command -v ip >/dev/null || skip "ip (iproute2) is not installed"
command -v python3 >/dev/null || skip "python3 is not installed (summary)"

VIP=10.239.0.100
prefix="btnka-$$"
sw="$prefix-sw"
ns() { echo "$prefix-n$1"; }
prio() { echo $(( 210 - 10 * $1 )); }
work=$(mktemp -d /tmp/btnka.XXXXXX)
created=()
declare -a kapid

cleanup() {
  local n p
  set +e
  # Everything left in the namespaces (keepalived, ip monitor, a notify script), then
  # the namespaces; bash's "Killed" notices of its jobs are not news here.
  {
    for n in "${created[@]}"; do
      for p in $(ip netns pids "$n"); do kill -9 "$p"; done
    done
    wait
    for n in "${created[@]}"; do ip netns del "$n"; done
  } 2>/dev/null
  if [ "$keep" = 1 ]; then echo "keepalived.sh: work directory kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

now_ns() { local t=$EPOCHREALTIME; echo "${t//[.,]/}000"; }

# --- the network -----------------------------------------------------------------------
ip netns add "$sw" 2>/dev/null || skip "cannot create a network namespace (ip netns add)"
created+=("$sw")
ip -n "$sw" link set lo up
ip -n "$sw" link add br0 type bridge
ip -n "$sw" link set br0 up
for i in 1 2 3; do
  n=$(ns "$i")
  ip netns add "$n"
  created+=("$n")
  ip -n "$n" link set lo up
  ip -n "$sw" link add "v$i" type veth peer name eth0 netns "$n"
  ip -n "$sw" link set "v$i" master br0
  ip -n "$sw" link set "v$i" up
  ip -n "$n" addr add "10.239.0.1$i/24" dev eth0
  ip -n "$n" link set eth0 up
done

# --- keepalived ------------------------------------------------------------------------
advert_s=$(printf '%d.%02d' $(( advert_ms / 1000 )) $(( advert_ms % 1000 / 10 )))
for i in 1 2 3; do
  d="$work/n$i"
  mkdir -p "$d"
  printf '#!/bin/sh\ndate +%%s%%N >> %s/master\n' "$d" > "$d/notify-master.sh"
  chmod 755 "$d/notify-master.sh"
  : > "$d/master"
  cat > "$d/keepalived.conf" <<CONF
global_defs {
  router_id n$i
  vrrp_version 3
  script_user root
  enable_script_security
}
vrrp_instance bench {
  state BACKUP
  nopreempt
  interface eth0
  virtual_router_id 51
  priority $(prio "$i")
  advert_int $advert_s
  virtual_ipaddress {
    $VIP/24 dev eth0
  }
  notify_master "$d/notify-master.sh"
}
CONF
  # Addresses as netlink reports them, time-stamped when `ip` reads them.
  ip -n "$(ns "$i")" -ts monitor address > "$d/addr.log" 2>&1 &
done

start_ka() {
  local i=$1 d="$work/n$1"
  rm -f "$d/keepalived.pid" "$d/vrrp.pid"
  ip netns exec "$(ns "$i")" "$ka" -n -l -D -G -P -f "$d/keepalived.conf" \
    -p "$d/keepalived.pid" -r "$d/vrrp.pid" </dev/null >>"$d/keepalived.log" 2>&1 &
  kapid[i]=$!
}

# keepalived processes in node i's namespace (the parent and its VRRP child).
ka_pids() {
  local p
  for p in $(ip netns pids "$(ns "$1")"); do
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = keepalived ] && echo "$p"
  done
  return 0
}

backup_lines() { grep -c 'Entering BACKUP STATE' "$work/n$1/keepalived.log" 2>/dev/null || true; }

# Wait until node i's VRRP child runs and has entered BACKUP state more than $2 times.
wait_running() {
  local i=$1 before=$2
  for _ in $(seq 1 500); do
    if [ -s "$work/n$i/vrrp.pid" ] && kill -0 "$(cat "$work/n$i/vrrp.pid")" 2>/dev/null \
      && (( $(backup_lines "$i") > before )); then
      return 0
    fi
    sleep 0.02
  done
  echo "keepalived.sh: keepalived on n$i did not start; its log:" >&2
  tail -n 20 "$work/n$i/keepalived.log" >&2
  exit 1
}

holders() {
  local i
  for i in 1 2 3; do
    ip -n "$(ns "$i")" -4 -o addr show dev eth0 | grep -q " $VIP/" && echo "$i"
  done
  return 0
}

# Wait until exactly one node holds the VIP; print it.
wait_one_holder() {
  local h
  for _ in $(seq 1 1000); do
    mapfile -t h < <(holders)
    if [ "${#h[@]}" = 1 ]; then echo "${h[0]}"; return 0; fi
    sleep 0.01
  done
  echo "keepalived.sh: no single VIP holder within 10 s (holders: ${h[*]:-none})" >&2
  exit 1
}

# First timestamp (ns) in node i's notify_master file later than $2.
master_after() {
  local t
  while read -r t; do
    [[ "$t" =~ ^[0-9]+$ ]] && (( t > $2 )) && { echo "$t"; return 0; }
  done < "$work/n$1/master"
  return 0
}

# When the VIP was added on node i after $2 (ns), from its `ip -ts monitor` log.
vip_added_after() {
  local line stamp t re
  re="^\\[([0-9T:.-]+)\\] [0-9]+: eth0 +inet ${VIP//./\\.}/"
  while read -r line; do
    [[ "$line" =~ $re ]] || continue
    stamp=${BASH_REMATCH[1]}
    t=$(date -d "${stamp/T/ }" +%s%N) || continue
    (( t > $2 )) && { echo "$t"; return 0; }
  done < "$work/n$1/addr.log"
  return 0
}

for i in 1 2 3; do start_ka "$i"; done
for i in 1 2 3; do wait_running "$i" 0; done
wait_one_holder > /dev/null
sleep 0.5

# --- failovers -------------------------------------------------------------------------
: > "$work/runs.txt"
for r in $(seq 1 "$runs"); do
  m=$(wait_one_holder)
  # Kill at a random point of an advertisement interval.
  pause=$(( 300 + RANDOM % advert_ms ))
  sleep "$(printf '%d.%03d' $(( pause / 1000 )) $(( pause % 1000 )))"
  mapfile -t pids < <(ka_pids "$m")
  [ "${#pids[@]}" -ge 2 ] || { echo "keepalived.sh: n$m runs ${#pids[@]} keepalived process(es), expected 2" >&2; exit 1; }
  parent=${kapid[m]}
  kill -STOP "$parent"
  victims=()
  for p in "${pids[@]}"; do [ "$p" = "$parent" ] || victims+=("$p"); done
  t_kill=$(now_ns)
  kill -9 "${victims[@]}" "$parent"
  wait "$parent" 2>/dev/null || true
  # The machine died: its address goes with it, and a reboot leaves no pid files.
  ip -n "$(ns "$m")" addr del "$VIP/24" dev eth0 2>/dev/null || true
  rm -f "$work/n$m/keepalived.pid" "$work/n$m/vrrp.pid"
  new="" t_master=""
  for _ in $(seq 1 2000); do
    for i in 1 2 3; do
      [ "$i" = "$m" ] && continue
      t=$(master_after "$i" "$t_kill")
      if [ -n "$t" ] && { [ -z "$t_master" ] || (( t < t_master )); }; then new=$i; t_master=$t; fi
    done
    [ -n "$new" ] && break
    sleep 0.005
  done
  [ -n "$new" ] || { echo "keepalived.sh: run $r: no new master within 10 s of the kill" >&2; exit 1; }
  t_vip=""
  for _ in $(seq 1 200); do
    t_vip=$(vip_added_after "$new" "$t_kill")
    [ -n "$t_vip" ] && break
    sleep 0.01
  done
  fo_us=$(( (t_master - t_kill) / 1000 ))
  vip_us=-1
  [ -n "$t_vip" ] && vip_us=$(( (t_vip - t_kill) / 1000 ))
  echo "$r $m $new $(prio "$new") $fo_us $vip_us" >> "$work/runs.txt"
  vip_txt="not seen"
  [ "$vip_us" -ge 0 ] && vip_txt="$(( vip_us / 1000 )).$(( vip_us % 1000 / 100 )) ms"
  echo "keepalived run $r: killed n$m (master) -> n$new (priority $(prio "$new")) master: notify_master $(( fo_us / 1000 )).$(( fo_us % 1000 / 100 )) ms after the kill, VIP added $vip_txt" >&2
  # The killed node comes back; nopreempt keeps it a backup.
  before=$(backup_lines "$m")
  start_ka "$m"
  wait_running "$m" "$before"
done

python3 - "$work/runs.txt" "$json" "$runs" "$timeout_ms" "$advert_ms" <<'PY'
import json, sys
path, as_json, runs, timeout, advert = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rows = [l.split() for l in open(path) if l.strip()]
fo = [int(r[4]) / 1000 for r in rows]
vip = [int(r[5]) / 1000 for r in rows if int(r[5]) >= 0]
lag = [(int(r[4]) - int(r[5])) / 1000 for r in rows if int(r[5]) >= 0]
def pct(v, p):
    v = sorted(v); k = max(0, min(len(v) - 1, round(p / 100 * len(v) + 0.5) - 1)); return v[k]
down = {p: 3 * advert + (256 - p) * advert / 256 for p in (200, 190, 180)}
took = sorted({int(r[3]) for r in rows}, reverse=True)
s = {
    "runs": len(rows),
    "timeout_ms": timeout,
    "advert_ms": advert,
    "master_down_ms": {str(p): round(d, 1) for p, d in down.items()},
    "takeover_priorities": took,
    "failover_ms": [round(x, 1) for x in fo],
    "vip_added_ms": [round(x, 1) for x in vip],
    "p50_ms": round(pct(fo, 50), 1), "p99_ms": round(pct(fo, 99), 1),
    "min_ms": round(min(fo), 1), "max_ms": round(max(fo), 1),
    "vip_p50_ms": round(pct(vip, 50), 1) if vip else None,
    "vip_p99_ms": round(pct(vip, 99), 1) if vip else None,
    "notify_after_vip_p50_ms": round(pct(lag, 50), 1) if lag else None,
    "notify_after_vip_max_ms": round(max(lag), 1) if lag else None,
}
if as_json:
    print(json.dumps(s))
    sys.exit(0)
nom = " / ".join(f"{down[p]:.0f} ms (priority {p})" for p in took)
print(f"keepalived failover (SIGKILL -> new master's notify_master), {len(rows)} runs, VRRPv3 advert_int {advert} ms")
print(f"  nominal detection: master-down 3 x {advert} ms + skew = {nom}; Baton's timeout {timeout} ms")
print(f"  total     p50 {s['p50_ms']:.0f} ms   p99 {s['p99_ms']:.0f} ms   min {s['min_ms']:.0f} ms   max {s['max_ms']:.0f} ms")
if vip:
    print(f"  VIP added (ip monitor) p50 {s['vip_p50_ms']:.0f} ms   p99 {s['vip_p99_ms']:.0f} ms   notify_master after the VIP: p50 {s['notify_after_vip_p50_ms']:.1f} ms   max {s['notify_after_vip_max_ms']:.1f} ms")
PY
