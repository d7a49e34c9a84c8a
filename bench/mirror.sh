#!/usr/bin/env bash
# Mirror-disk data path benchmark (not a test: it reports figures, it asserts nothing).
#
#   bash bench/mirror.sh                   # release build, 512 MiB passes, 256 MiB resync
#   bash bench/mirror.sh --size 128 --resync 64 --lat-ios 500    # a quicker run
#   bash bench/mirror.sh --bin PATH        # use an existing baton binary
#   bash bench/mirror.sh --dir DIR         # where the stores live (default /var/tmp)
#
# Two mirror processes (`baton mirror-daemon`, no agents) of one 1 GiB `mirror-disk` on
# 127.98.1.11 / 127.98.1.12, stores are sparse files in a temporary directory, driven
# through their control sockets as the agent drives them. The application is a real NBD
# client on the primary's NBD Unix socket. Every figure has a reference measured in the
# same run, on the same machine, with the same client and request size:
#   1. sequential write (nbdcopy, --flush at the end of each pass) through the mirror in
#      sync and in async mode, against (a) the same nbdcopy into qemu-nbd serving a plain
#      file on the same filesystem over a Unix socket (local write, no replication) and
#      (b) the same nbdcopy into qemu-nbd over TCP on loopback; plus bare loopback TCP.
#      Each mirror pass is paired with reference passes right before it (after a `sync`),
#      and the ratio is the median of the pairs' ratios.
#   2. 4 KiB random write latency, queue depth 1 (fio, nbd engine), sync mode, against
#      the same fio job into qemu-nbd --cache=writethrough (every write durable) plus one
#      4 KiB loopback TCP round trip (measured here too).
#   3. resync: the secondary is shut down, the primary writes alone under a lease to
#      scattered 64 KiB regions (fio, random data, each region once), the secondary returns; time until the primary reports
#      in sync, bytes resynced / bytes dirtied, against nbdcopy of as many bytes into
#      qemu-nbd over loopback TCP.
#   4. peak RSS (VmHWM) of the mirror processes after the load.
# Needs: nbdcopy (Debian libnbd-bin), qemu-nbd (qemu-utils), fio (with its nbd
# engine), python3. A case whose tool is missing is skipped with a message.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=512
resync_mib=256
lat_ios=2000
passes=3
bin=""
quiet=0
base="${TMPDIR:-/var/tmp}"
[ -d /var/tmp ] && base=/var/tmp
while [ $# -gt 0 ]; do
  case "$1" in
    --size) size_mib="$2"; shift 2 ;;
    --resync) resync_mib="$2"; shift 2 ;;
    --lat-ios) lat_ios="$2"; shift 2 ;;
    --passes) passes="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    --dir) base="$2"; shift 2 ;;
    --quiet) quiet=1; shift ;;
    *) echo "usage: $0 [--size MIB] [--resync MIB] [--lat-ios N] [--passes N] [--bin PATH] [--dir DIR] [--quiet]" >&2; exit 2 ;;
  esac
done
if [ -z "$bin" ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/baton-target}"
  cargo build --release --bin baton >&2
  bin="$CARGO_TARGET_DIR/release/baton"
fi
have() { command -v "$1" >/dev/null 2>&1; }
log() { [ "$quiet" = 1 ] || echo "$*" >&2; }
for t in python3 qemu-nbd; do
  have "$t" || { echo "$t is required (python3; qemu-nbd from Debian qemu-utils)" >&2; exit 1; }
done
have nbdcopy || echo "nbdcopy (Debian libnbd-bin) is not installed: throughput and resync reference skipped" >&2
have fio || echo "fio is not installed: the latency and resync cases are skipped" >&2

out=$(mktemp -d "$base/baton-mirror-bench.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$out"
}
trap cleanup EXIT
res="$out/results.txt"
: > "$res"
put() { echo "$*" >> "$res"; }

# --- helpers ----------------------------------------------------------------------------
cat > "$out/ctl.py" <<'PY'
import json, socket, sys, time
def call(path, req):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    s.sendall((json.dumps(req) + "\n").encode())
    buf = b""
    while not buf.endswith(b"\n"):
        b = s.recv(65536)
        if not b:
            break
        buf += b
    s.close()
    return json.loads(buf)
def get(d, path):
    for k in path.split("."):
        d = d[k]
    return d
cmd = sys.argv[1]
if cmd == "call":          # call SOCK JSON -> the answer
    print(json.dumps(call(sys.argv[2], json.loads(sys.argv[3]))))
elif cmd == "get":         # get SOCK FIELD.PATH -> a status field
    print(json.dumps(get(call(sys.argv[2], {"op": "status"}), sys.argv[3])))
elif cmd == "wait":        # wait SOCK COND TIMEOUT_S [T0] -> seconds since T0 when COND held
    sock, cond, timeout = sys.argv[2], sys.argv[3], float(sys.argv[4])
    t0 = float(sys.argv[5]) if len(sys.argv) > 5 else time.time()
    last = None
    while time.time() - t0 < timeout:
        try:
            st = call(sock, {"op": "status"})
            last = st
            ok = {
                "up": True,
                "synced": st.get("connection") == "connected" and st.get("in_sync") is True,
                "serving": st.get("nbd_serving") is True,
                "alone": st.get("connection") == "disconnected",
            }[cond]
            if ok:
                print(f"{time.time() - t0:.3f}")
                sys.exit(0)
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    print(f"timeout waiting for {cond} on {sock}: {json.dumps(last)}", file=sys.stderr)
    sys.exit(1)
PY
ctl() { python3 "$out/ctl.py" "$@"; }
now() { python3 -c 'import time; print(f"{time.time():.6f}")'; }
# A port free on every address given.
free_port() {
  python3 - "$@" <<'PY'
import random, socket, sys
for _ in range(200):
    p = random.randint(20000, 40000)
    ok = True
    for a in sys.argv[1:]:
        s = socket.socket()
        try:
            s.bind((a, p))
        except OSError:
            ok = False
        finally:
            s.close()
    if ok:
        print(p); sys.exit(0)
sys.exit(1)
PY
}
# Seconds taken by a command (its output goes to the log).
timed() {
  local t0 t1
  t0=$(now)
  "$@" >> "$out/tools.log" 2>&1 || { echo "failed: $*" >&2; tail -20 "$out/tools.log" >&2; exit 1; }
  t1=$(now)
  python3 -c "print(f'{$t1 - $t0:.4f}')"
}
copy_opts=(--flush --connections=1 --requests=16 --request-size=1048576)
wait_sock() { for _ in $(seq 1 250); do [ -S "$1" ] && return 0; sleep 0.02; done; echo "no socket $1" >&2; exit 1; }
# qemu-nbd serving FILE: qnbd unix SOCK FILE [cache] | qnbd tcp ADDR PORT FILE [cache]
qnbd() {
  local kind="$1"; shift
  if [ "$kind" = unix ]; then
    qemu-nbd -f raw -x data -k "$1" --cache="${3:-writeback}" -t "$2" >>"$out/tools.log" 2>&1 & pids+=($!)
    wait_sock "$1"
  else
    qemu-nbd -f raw -x data -b "$1" -p "$2" --cache="${4:-writeback}" -t "$3" >>"$out/tools.log" 2>&1 & pids+=($!)
    python3 - "$1" "$2" <<'PY'
import socket, sys, time
for _ in range(250):
    try:
        socket.create_connection((sys.argv[1], int(sys.argv[2])), 1).close(); sys.exit(0)
    except OSError:
        time.sleep(0.02)
sys.exit(1)
PY
  fi
  qpid=$!
}
stop_pid() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# --- the data -----------------------------------------------------------------------------
log "writing ${size_mib} MiB of random data as the source"
head -c "$((size_mib << 20))" /dev/urandom > "$out/src.img"
head -c "$((resync_mib << 20))" /dev/urandom > "$out/src-resync.img"
cat "$out/src.img" "$out/src-resync.img" > /dev/null   # in the page cache for every pass

# --- references ---------------------------------------------------------------------------
ref_addr=127.98.2.1
# bare loopback TCP: throughput of SIZE MiB, and 4 KiB request / 8-byte answer round trips
python3 - "$ref_addr" "$size_mib" "$lat_ios" > "$out/tcp.txt" <<'PY'
import socket, sys, threading, time
addr, mib, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((addr, 0)); ls.listen(1); port = ls.getsockname()[1]
def sink():
    c, _ = ls.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        b = c.recv(1 << 20)
        if not b: break
    c.close()
    c, _ = ls.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        got = 0
        while got < 4096:
            b = c.recv(4096 - got)
            if not b: return
            got += len(b)
        c.sendall(b"ack12345")
threading.Thread(target=sink, daemon=True).start()
s = socket.create_connection((addr, port)); buf = b"x" * (1 << 20)
t0 = time.perf_counter()
for _ in range(mib): s.sendall(buf)
s.shutdown(socket.SHUT_WR); s.recv(1); s.close()
print(mib * (1 << 20) / (time.perf_counter() - t0))
s = socket.create_connection((addr, port)); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
m = b"y" * 4096; rtt = []
for _ in range(n):
    t = time.perf_counter(); s.sendall(m); got = 0
    while got < 8: got += len(s.recv(8 - got))
    rtt.append((time.perf_counter() - t) * 1e6)
rtt.sort()
pct = lambda p: rtt[max(0, min(len(rtt) - 1, round(p / 100 * len(rtt) + 0.5) - 1))]
print(pct(50), pct(99))
PY
put "tcp_bps $(sed -n 1p "$out/tcp.txt")"
put "tcp_rtt_us $(sed -n 2p "$out/tcp.txt")"

fio_lat() { # fio_lat URI NAME -> p50_us p99_us
  fio --name="$2" --ioengine=nbd --uri="$1" --rw=randwrite --bs=4k --iodepth=1 \
    --number_ios="$lat_ios" --size=1g --randrepeat=1 --randseed=42 --norandommap \
    --output-format=json > "$out/fio-$2.json" 2>>"$out/tools.log" || { echo "fio $2 failed" >&2; tail "$out/tools.log" >&2; exit 1; }
  python3 - "$out/fio-$2.json" <<'PY'
import json, sys
t = open(sys.argv[1]).read()  # fio prints "connected to NBD server" before the JSON
w = json.loads(t[t.index("{"):])["jobs"][0]["write"]
p = w["clat_ns"]["percentile"]
print(f'{p["50.000000"]/1000:.1f} {p["99.000000"]/1000:.1f} {w["total_ios"]}')
PY
}

# The reference servers run through the whole benchmark: each pass through the mirror is
# paired with a reference pass just before it (same page cache, same disk weather: on a VM
# the local write rate swings by 3x between minutes), and the ratio is taken per pair.
if have nbdcopy; then
  f="$out/ref-unix.img"; truncate -s 1G "$f"
  qnbd unix "$out/ref.sock" "$f"; ref_unix_uri="nbd+unix:///data?socket=$out/ref.sock"
  f="$out/ref-tcp.img"; truncate -s 1G "$f"
  port=$(free_port "$ref_addr"); qnbd tcp "$ref_addr" "$port" "$f"; ref_tcp_uri="nbd://$ref_addr:$port/data"
  s=$(timed nbdcopy "${copy_opts[@]}" "$out/src-resync.img" "$ref_tcp_uri"); put "ref_resync $s"
fi
# One timed pass of the source into URI, after writing back what earlier passes left dirty.
pass() { sync; timed nbdcopy "${copy_opts[@]}" "$out/src.img" "$1"; }
if have fio; then
  f="$out/ref-lat.img"; truncate -s 1G "$f"
  # the same 512 MiB prefix allocated as on the mirror's store when it is measured
  have nbdcopy && nbdcopy "$out/src.img" "$f" 2>>"$out/tools.log" || true
  qnbd unix "$out/lat.sock" "$f" writethrough
  put "lat_ref_durable $(fio_lat "nbd+unix:///data?socket=$out/lat.sock" ref-durable)"
  stop_pid "$qpid"; rm -f "$out/lat.sock"
  qnbd unix "$out/lat.sock" "$f" writeback
  put "lat_ref_cached $(fio_lat "nbd+unix:///data?socket=$out/lat.sock" ref-cached)"
  stop_pid "$qpid"; rm -f "$out/lat.sock"
fi

# --- the mirror -----------------------------------------------------------------------------
# setup MODE: a 2-server cluster in $out/MODE, its two mirror processes started, n1 primary
setup() {
  local mode="$1" d="$out/$1"
  mkdir -p "$d"
  local port
  port=$(free_port 127.98.1.11 127.98.1.12)
  "$bin" keygen "$d/cluster.key" >/dev/null
  cat > "$d/baton.toml" <<TOML
[cluster]
name = "bench-mirror"
key_file = "cluster.key"
[heartbeat]
interval = "100ms"
timeout = "500ms"
[[server]]
name = "n1"
interconnects = ["127.98.0.11", "127.98.1.11"]
api = "127.98.0.11:$(free_port 127.98.0.11)"
[[server]]
name = "n2"
interconnects = ["127.98.0.12", "127.98.1.12"]
api = "127.98.0.12:$(free_port 127.98.0.12)"
[[group]]
name = "g"
servers = ["n1", "n2"]
[[group.resource]]
kind = "mirror-disk"
name = "data"
size = "1GiB"
mode = "$mode"
interconnect = 1
port = $port
[group.resource.server.n1]
device = "$d/disk-n1.img"
[group.resource.server.n2]
device = "$d/disk-n2.img"
TOML
  "$bin" config check "$d/baton.toml" >> "$out/tools.log" 2>&1 \
    || { echo "baton config check failed:" >&2; tail -20 "$out/tools.log" >&2; exit 1; }
  start_daemon "$mode" n1; start_daemon "$mode" n2
  ctl wait "$(ctlsock "$mode" n1)" up 30 >/dev/null
  ctl wait "$(ctlsock "$mode" n2)" up 30 >/dev/null
  ctl call "$(ctlsock "$mode" n1)" '{"op":"promote","epoch":1}' | grep -q '"ok"' \
    || { echo "promote failed" >&2; exit 1; }
  ctl wait "$(ctlsock "$mode" n1)" serving 30 >/dev/null
  ctl wait "$(ctlsock "$mode" n1)" synced 60 >/dev/null
}
declare -A dpid
start_daemon() { # MODE SERVER
  local d="$out/$1"
  mkdir -p "$d/state-$2"
  "$bin" mirror-daemon --config "$d/baton.toml" --server "$2" --state-dir "$d/state-$2" \
    --group g --resource data >>"$d/$2.log" 2>&1 & pids+=($!)
  dpid[$1.$2]=$!
}
ctlsock() { echo "$out/$1/state-$2/mirror/g.data.ctl"; }
nbdsock() { echo "$out/$1/state-$2/mirror/g.data.nbd"; }
hwm_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
counter() { ctl get "$(ctlsock "$1" "$2")" "counters.$3"; }
teardown() { # MODE: demote the primary, end both processes
  ctl call "$(ctlsock "$1" n1)" '{"op":"demote"}' >/dev/null || true
  for n in n1 n2; do
    ctl call "$(ctlsock "$1" "$n")" '{"op":"shutdown"}' >/dev/null 2>&1 || true
    local p="${dpid[$1.$n]}"
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
    stop_pid "$p"
  done
}

# sync mode
log "sync mode: starting the pair"
setup sync
uri="nbd+unix:///data?socket=$(nbdsock sync n1)"
if have nbdcopy; then
  for i in $(seq 1 "$passes"); do
    a=$(pass "$ref_unix_uri"); b=$(pass "$ref_tcp_uri"); s=$(pass "$uri")
    put "ref_unix $a"; put "ref_tcp $b"; put "sync $s"; put "pair_sync $a $b $s"
    log "pass $i: reference local $a s, reference TCP $b s, sync $s s"
  done
fi
if have fio; then
  put "lat_sync $(fio_lat "$uri" sync)"
fi
put "sync_replicated $(counter sync n1 writes_replicated) $(counter sync n1 writes_degraded)"
if have fio; then
  # resync: n2 away, n1 alone under the agent's lease, scattered 64 KiB regions written
  log "resync: n2 away, writing ${resync_mib} MiB to scattered 64 KiB regions"
  ctl call "$(ctlsock sync n2)" '{"op":"shutdown"}' | grep -q '"ok"' || { echo "n2 shutdown refused" >&2; exit 1; }
  stop_pid "${dpid[sync.n2]}"
  ctl wait "$(ctlsock sync n1)" alone 30 >/dev/null
  ctl call "$(ctlsock sync n1)" '{"op":"lease","ms":600000,"peer_down":true,"hold_ms":0}' >/dev/null
  rb0=$(counter sync n1 resync_bytes)
  fio --name=dirty --ioengine=nbd --uri="$uri" --rw=randwrite --bs=64k --iodepth=1 \
    --size=1g --io_size="${resync_mib}m" --randrepeat=1 --randseed=7 --refill_buffers \
    --end_fsync=1 --output-format=json > "$out/fio-dirty.json" 2>>"$out/tools.log" \
    || { echo "fio (dirtying) failed" >&2; tail "$out/tools.log" >&2; exit 1; }
  echo $(( resync_mib << 20 )) > "$out/dirtied.txt"   # random map: each region once
  oos=$(ctl get "$(ctlsock sync n1)" out_of_sync_bytes)
  t0=$(now)
  start_daemon sync n2
  el=$(ctl wait "$(ctlsock sync n1)" synced 600 "$t0")
  rb1=$(counter sync n1 resync_bytes)
  # When the primary started copying and was in sync (unix ms): connecting apart from copying.
  rs=$(ctl get "$(ctlsock sync n1)" resync.started_ms)
  rf=$(ctl get "$(ctlsock sync n1)" resync.finished_ms)
  put "resync $el $(( rb1 - rb0 )) $(cat "$out/dirtied.txt") $oos $(python3 -c "print(max($rs / 1000 - $t0, 0), ($rf - $rs) / 1000)")"
fi
put "rss_sync $(hwm_kib "${dpid[sync.n1]}") $(hwm_kib "${dpid[sync.n2]}")"
teardown sync

# async mode
log "async mode: starting the pair"
setup async
uri="nbd+unix:///data?socket=$(nbdsock async n1)"
if have nbdcopy; then
  for i in $(seq 1 "$passes"); do
    a=$(pass "$ref_unix_uri"); s=$(pass "$uri")
    put "ref_unix $a"; put "async $s"; put "pair_async $a $s"
    log "pass $i: reference local $a s, async $s s"
  done
  t0=$(now)
  el=$(ctl wait "$(ctlsock async n1)" synced 600 "$t0")
  put "async_drain $el $(counter async n1 queue_full) $(counter async n1 resync_bytes)"
fi
put "rss_async $(hwm_kib "${dpid[async.n1]}")"
teardown async

# --- report -------------------------------------------------------------------------------
python3 - "$res" "$size_mib" "$resync_mib" "$passes" <<'PY'
import sys, statistics
res, mib, rmib, passes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
r = {}
for line in open(res):
    k, *v = line.split()
    r.setdefault(k, []).append([float(x) for x in v])
MiB = 1 << 20
def rate(k, m=mib):  # median over the passes, MiB/s
    return m / statistics.median(v[0] for v in r[k]) if k in r else None
def f(x, unit=" MiB/s"):
    return "n/a" if x is None else f"{x:.0f}{unit}"
print("mirror-disk, 1 GiB volume, 64 KiB regions, 2 mirror processes on loopback; stores and reference files in one directory")
tcp = r["tcp_bps"][0][0] / MiB
if "sync" in r:
    a, b = rate("ref_unix"), rate("ref_tcp")
    s, y = rate("sync"), rate("async")
    print(f"sequential write, {mib} MiB per pass, nbdcopy 1 MiB requests x16, flush at the end, median of {passes}")
    print(f"  sync   {f(s)}   async {f(y)}")
    print(f"  reference (a) local: qemu-nbd on a plain file, Unix socket   {f(a)}")
    print(f"  reference (b) loopback TCP: qemu-nbd on a plain file over TCP {f(b)}   (bare TCP {tcp:.0f} MiB/s)")
    # Per pair (a reference pass just before each mirror pass), rate ratio = time ratio.
    ps = sorted(max(v[0], v[1]) / v[2] for v in r.get("pair_sync", []))
    pa = sorted(v[0] / v[1] for v in r.get("pair_async", []))
    def span(v):
        return f"{statistics.median(v):.2f} (pairs {v[0]:.2f} to {v[-1]:.2f})" if v else "n/a"
    print(f"  sync/min(a,b) {span(ps)} (target >= 0.8)   async/a {span(pa)} (target >= 0.9)")
    print(f"  (medians of all passes: sync/min(a,b) {s/min(a,b):.2f}, async/a {y/a:.2f})")
    if "sync_replicated" in r:
        w = r["sync_replicated"][0]
        print(f"  sync: {w[0]:.0f} writes replicated, {w[1]:.0f} acknowledged without the peer (counters of the primary)")
    if "async_drain" in r:
        d = r["async_drain"][0]
        print(f"  async: in sync {d[0]:.1f} s after the last pass; queue overflows {d[1]:.0f}, resync after overflow {d[2]/MiB:.0f} MiB")
if "lat_sync" in r:
    m, ref, c = r["lat_sync"][0], r["lat_ref_durable"][0], r["lat_ref_cached"][0]
    rtt = r["tcp_rtt_us"][0]
    print(f"4 KiB random write, queue depth 1, fio nbd engine, {m[2]:.0f} writes over 1 GiB")
    print(f"  sync mirror          p50 {m[0]:.0f} us   p99 {m[1]:.0f} us")
    print(f"  reference: durable local write (qemu-nbd --cache=writethrough) p50 {ref[0]:.0f} us p99 {ref[1]:.0f} us"
          f" + loopback TCP 4 KiB round trip p50 {rtt[0]:.0f} us p99 {rtt[1]:.0f} us")
    print(f"  sync/reference p50 {m[0]/(ref[0]+rtt[0]):.2f}   p99 {m[1]/(ref[1]+rtt[1]):.2f}"
          f"   (non-durable local write, qemu-nbd writeback: p50 {c[0]:.0f} us p99 {c[1]:.0f} us)")
if "resync" in r:
    el, rb, dirt, oos, start, copy = r["resync"][0]
    copy = max(copy, 1e-3)
    rr = rb / MiB / copy
    ref = rate("ref_resync", rmib)
    print(f"resync after {dirt/MiB:.0f} MiB written alone to {dirt/65536:.0f} scattered 64 KiB regions")
    print(f"  in sync {el:.2f} s after the secondary's process started: {start:.2f} s to start and connect,"
          f" {copy:.2f} s copying; resynced {rb/MiB:.1f} MiB -> {rr:.0f} MiB/s while copying"
          f" ({rb/MiB/el:.0f} MiB/s counting the start; out of sync before: {oos/MiB:.1f} MiB)")
    print(f"  reference raw copy (nbdcopy {rmib} MiB into qemu-nbd over loopback TCP) {f(ref)}")
    print(f"  resync rate/raw copy {rr/ref:.2f} (target >= 0.8)   resynced/dirtied {rb/dirt:.3f} (target <= 1.1)")
if "rss_sync" in r:
    p, s2 = r["rss_sync"][0]
    line = f"peak RSS (VmHWM) of the mirror processes: sync primary {p/1024:.1f} MiB, secondary {s2/1024:.1f} MiB"
    if "rss_async" in r:
        line += f", async primary {r['rss_async'][0][0]/1024:.1f} MiB"
    print(line)
PY
