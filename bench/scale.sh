#!/usr/bin/env bash
# The cost of scale (not a test: it reports figures, it asserts nothing).
#
#   bash bench/scale.sh                      # everything, release build
#   bash bench/scale.sh --bin PATH           # use an existing baton binary for the agents
#   bash bench/scale.sh --idle 10            # seconds of idle measurement per cluster
#   bash bench/scale.sh --only 8x50          # one cluster (SERVERSxGROUPS)
#   bash bench/scale.sh --settle 300         # seconds allowed for every group to come
#                                            # online (60; bench/layout.sh runs an agent
#                                            # under valgrind)
#   BATON_BENCH_PARSE_EVERY_DATAGRAM=1 bash bench/scale.sh ...
#                                            # reference: agents parse every heartbeat
#                                            # datagram, not once per send (alternate runs)
#   BATON_BENCH_FLATTEN_PARSE=1 bash bench/scale.sh ...
#                                            # reference: bodies parsed through serde's
#                                            # flatten, not in one pass (alternate runs)
#
# 1. The engine alone (`cargo bench -p baton-core --bench scale`): steady-state step time
#    for a heartbeat and a tick, heartbeat body size, and engine time per second of an
#    idle agent, for 3, 5, 8 and 16 servers with 1, 50 and 200 groups (fewer where
#    `config check` refuses 200: the worst-case heartbeat must fit in one datagram), as
#    ratios to 3 servers / 1 group measured in the same run.
# 2. Real agents on 127.95.x.y (heartbeat 200 ms / 1 s, two interconnects, every group one
#    exec resource, one http monitor every second, groups spread over the servers): for
#    each cluster, after every group is online, per agent over the idle window: CPU (% of
#    one core), wake-ups per second (voluntary context switches of all its threads), RSS,
#    its private (anonymous) part and the working set (pages referenced during the
#    window, from /proc/PID/clear_refs and smaps_rollup); heartbeat bytes sent per second
#    per server (nftables counters on the heartbeat port; needs root, else left out); then SIGKILL of the agent of s1 and
#    the time until every group it held is active elsewhere (from the survivors' event
#    logs), beside the floor T + W_g of those groups. Reference in the same run: a bare
#    tokio HTTP process (`baton demo-app`) for CPU and RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=""
idle=10
only=""
settle=60
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin="$2"; shift 2 ;;
    --idle) idle="$2"; shift 2 ;;
    --only) only="$2"; shift 2 ;;
    --settle) settle="$2"; shift 2 ;;
    *) echo "usage: $0 [--bin PATH] [--idle SECONDS] [--only SERVERSxGROUPS] [--settle SECONDS]" >&2; exit 2 ;;
  esac
done
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/baton-target}"
if [ -z "$only" ]; then
  cargo bench -p baton-core --bench scale 2>/dev/null | grep -v '^$'
  echo
fi
if [ -z "$bin" ]; then
  cargo build --release --bin baton >&2
  bin="$CARGO_TARGET_DIR/release/baton"
fi
out=$(mktemp -d "${TMPDIR:-/tmp}/baton-scale.XXXXXX")
trap 'rm -rf "$out"' EXIT
python3 - "$bin" "$out" "$idle" "$only" "$settle" <<'PY'
import json, os, re, signal, subprocess, sys, time
from datetime import datetime

bin_, out, idle, only, settle = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4], float(sys.argv[5])
HZ = os.sysconf("SC_CLK_TCK")
PORT = 7795  # heartbeat port of the benchmark clusters
root = os.geteuid() == 0 and subprocess.run(["sh", "-c", "command -v nft"], capture_output=True).returncode == 0

def ticks(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])

def rss_kib(pid, field="VmRSS:"):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith(field):
            return int(l.split()[1])
    return 0

def switches(pid):
    """Context switches of every thread of the process so far: each voluntary one is a
    wake-up after a sleep (a datagram, a timer), the cost an idle agent pays most for."""
    n = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            for l in open(f"/proc/{pid}/task/{t}/status"):
                if l.startswith("voluntary_ctxt_switches:"):
                    n += int(l.split()[1])
        except OSError:
            pass
    return n

def clear_refs(pid):
    """Clear the referenced bit of every page the process maps (the start of a working-set
    window); False where the kernel does not allow it."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("1")
        return True
    except OSError:
        return False

def referenced_kib(pid):
    """The pages the process touched since clear_refs: its working set over the window."""
    for l in open(f"/proc/{pid}/smaps_rollup"):
        if l.startswith("Referenced:"):
            return int(l.split()[1])
    return 0

def config(d, n, g, net):
    s = f'''[cluster]
name = "scale"
key_file = "cluster.key"
[heartbeat]
interval = "200ms"
timeout = "1s"
port = {PORT}
[agent]
sysrq_trigger = "{d}/sysrq-trigger"
force_reboot_command = 'echo force-reboot >> "{d}/fence.log"'
force_poweroff_command = 'echo force-poweroff >> "{d}/fence.log"'
reboot_command = 'echo reboot >> "{d}/fence.log"'
shutdown_command = 'echo poweroff >> "{d}/fence.log"'
[api]
socket_dir = "{d}/run"
'''
    for i in range(n):
        s += f'''[[server]]
name = "s{i}"
interconnects = ["127.95.{net}.{10 + i}", "127.95.{net + 1}.{10 + i}"]
api = "127.95.{net}.{10 + i}:{19500 + i}"
'''
    for k in range(g):
        order = ", ".join(f'"s{(k + j) % n}"' for j in range(n))
        s += f'''[[group]]
name = "g{k:03}"
servers = [{order}]
fence_budget = "200ms"
[[group.resource]]
kind = "exec"
name = "r{k:03}"
start = "true"
stop = "true"
check = "true"
'''
    s += f'''[[monitor]]
kind = "http"
name = "ref-app"
interval = "1s"
url = "http://127.95.{net}.250:19590/health"
'''
    return s

def accepted(cfgpath):
    r = subprocess.run([bin_, "config", "check", cfgpath], capture_output=True, text=True)
    return r.returncode == 0, r.stdout + r.stderr

def stamp(line):
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z", line)
    return datetime.fromisoformat(m.group(1) + "+00:00").timestamp() if m else None

def nft(*args):
    subprocess.run(["nft", *args], check=True, capture_output=True)

def run(n, g, net):
    d = f"{out}/c{n}x{g}"
    os.makedirs(f"{d}/run", exist_ok=True)
    subprocess.run([bin_, "keygen", f"{d}/cluster.key"], check=True, capture_output=True)
    # Shrink the group count until config check accepts it (the worst-case heartbeat
    # must fit in one datagram).
    asked = g
    while True:
        open(f"{d}/baton.toml", "w").write(config(d, n, g, net))
        ok, why = accepted(f"{d}/baton.toml")
        if ok:
            break
        if "datagram" not in why or g <= 1:
            raise SystemExit(f"config check refused {n} servers x {g} groups:\n{why}")
        g = int(g * 0.9)
    ref = subprocess.Popen([bin_, "demo-app", "--listen", f"127.95.{net}.250:19590", "--name", "ref"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if root:
        subprocess.run(["nft", "delete", "table", "inet", "batonscale"], capture_output=True)
        nft("add", "table", "inet", "batonscale")
        nft("add", "chain", "inet", "batonscale", "out", "{ type filter hook output priority 0 ; }")
        for i in range(n):
            for p in (net, net + 1):
                nft("add", "rule", "inet", "batonscale", "out", "ip", "saddr", f"127.95.{p}.{10 + i}",
                    "udp", "dport", str(PORT), "counter")
    agents = []
    for i in range(n):
        log = open(f"{d}/s{i}.log", "w")
        agents.append(subprocess.Popen([bin_, "agent", "-c", f"{d}/baton.toml", "-s", f"s{i}",
                                        "--state-dir", f"{d}/s{i}"], stdout=log, stderr=log))
    try:
        # Every group online (its BTN-2102 in some agent's log), at most `settle` s.
        t0 = time.time()
        while time.time() - t0 < settle:
            online = set()
            for i in range(n):
                for l in open(f"{d}/s{i}.log", errors="replace"):
                    if "BTN-2102" in l:
                        m = re.search(r'group="(g\d+)"', l)
                        if m:
                            online.add(m.group(1))
            if len(online) >= g:
                break
            time.sleep(0.5)
        else:
            raise SystemExit(f"{n}x{g}: only {len(online)} of {g} groups came online")
        time.sleep(2)
        def counters():
            if not root:
                return None
            r = subprocess.run(["nft", "list", "table", "inet", "batonscale"], capture_output=True, text=True).stdout
            return sum(int(x) for x in re.findall(r"bytes (\d+)", r))
        c0, w0 = counters(), time.time()
        t_a = [ticks(a.pid) for a in agents]
        t_r = ticks(ref.pid)
        ws_ok = all([clear_refs(a.pid) for a in agents])
        s_a = [switches(a.pid) for a in agents]
        time.sleep(idle)
        el = time.time() - w0
        wakes = [(switches(a.pid) - s) / el for a, s in zip(agents, s_a)]
        cpu = [(ticks(a.pid) - t) / HZ / el * 100 for a, t in zip(agents, t_a)]
        rss = [rss_kib(a.pid) / 1024 for a in agents]
        # Private memory: RSS less the pages of the binary and libraries, which the
        # agents of one machine share (and a server runs one agent).
        anon = [rss_kib(a.pid, "RssAnon:") / 1024 for a in agents]
        # The working set: what each agent touched during the idle window (RSS also
        # counts every page of the binary the kernel mapped at a fault, a whole large
        # folio of its page cache at a time, touched or not).
        ws = [referenced_kib(a.pid) / 1024 for a in agents] if ws_ok else None
        rcpu, rrss = (ticks(ref.pid) - t_r) / HZ / el * 100, rss_kib(ref.pid) / 1024
        rrss_anon = rss_kib(ref.pid, "RssAnon:") / 1024
        c1 = counters()
        bps = None if c0 is None else (c1 - c0) / el / n
        # Failover: SIGKILL s1's agent; its groups are those whose order starts with s1.
        mine = [f"g{k:03}" for k in range(g) if k % n == 1]
        kill_at = time.time()
        agents[1].send_signal(signal.SIGKILL)
        agents[1].wait()
        done = {}
        while time.time() - kill_at < 30 and len(done) < len(mine):
            for i in range(n):
                if i == 1:
                    continue
                for l in open(f"{d}/s{i}.log", errors="replace"):
                    if "BTN-2102" in l:
                        m = re.search(r'group="(g\d+)".*epoch=(\d+)', l)
                        if m and m.group(1) in mine and int(m.group(2)) > 1:
                            t = stamp(l)
                            if t and t >= kill_at:
                                done.setdefault(m.group(1), t - kill_at)
            time.sleep(0.2)
        fo = sorted(done.values())
        return dict(n=n, g=g, asked=asked, cpu=cpu, wakes=wakes, rss=rss, anon=anon, ws=ws, rcpu=rcpu, rrss=rrss, rrss_anon=rrss_anon, bps=bps,
                    moved=len(fo), expected=len(mine),
                    fo_p50=fo[len(fo) // 2] * 1000 if fo else None,
                    fo_max=fo[-1] * 1000 if fo else None)
    finally:
        for a in agents:
            if a.poll() is None:
                a.terminate()
        for a in agents:
            try:
                a.wait(timeout=20)
            except subprocess.TimeoutExpired:
                a.kill()
        ref.terminate()
        ref.wait()
        if root:
            subprocess.run(["nft", "delete", "table", "inet", "batonscale"], capture_output=True)

clusters = [(n, g) for n in (3, 5, 8, 16) for g in (1, 50, 200)]
if only:
    a, b = only.split("x")
    clusters = [(int(a), int(b))]
# The floor T + W_g for these groups: T = 1 s, L = 0.5 s, F_g = 200 ms (fence_budget),
# i = 200 ms: the smallest W_g with (T + W_g)·0.99 >= (2L + F_g)·1.01 + i.
import math
# The binary's pages in the page cache as after a boot: RSS counts every page of the
# binary the kernel maps at a fault, and a file just written (built, copied, installed)
# sits in the page cache in large folios that are mapped whole, which adds 3 to 4 MiB to
# an agent's RSS (and to its working set) against the same binary read from disk.
os.sync()
with open(bin_, "rb") as f:
    os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
# How much the kernel reads around a fault in the binary: with a large read-ahead (this
# lab's virtual disk asks for 8 MiB; the kernel's default is 128 KiB) the page cache holds
# larger folios, each mapped whole at a fault, and an agent's RSS is larger for the same
# code. Printed so that RSS figures from two machines can be compared.
def read_ahead_kib(path):
    st = os.stat(path)
    dev = f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    for q in (f"{dev}/queue/read_ahead_kb", f"{dev}/../queue/read_ahead_kb"):
        try:
            return open(q).read().strip()
        except OSError:
            pass
    return "unknown"
print(f"the binary's disk reads ahead {read_ahead_kib(bin_)} KiB")
floor = 1000 + max(0, math.ceil((math.ceil((2 * 500 + 200) * 1.01) + 200) / 0.99) - 1000)
print(f"real agents: heartbeat 200 ms / 1 s, 2 interconnects, exec resources, one 1 s http monitor, {idle:.0f} s idle window")
print(f"{'servers':>7} {'groups':>6}  {'CPU % avg':>9} {'max':>6} {'wake-ups/s':>10}  {'RSS MiB avg':>11} {'max':>6} {'private':>7} {'idle working set':>16}  {'hb bytes/s/server':>17}  {'failover p50 ms':>15} {'max':>6} {'moved':>7}")
ref = None
for k, (n, g) in enumerate(clusters):
    try:
        r = run(n, g, 2 * k)
    except SystemExit as e:
        print(f"{n:>7} {g:>6}  not measured: {e}", flush=True)
        continue
    ref = ref or (r["rcpu"], r["rrss"], r["rrss_anon"])
    note = f"   ({r['asked']} refused by config check)" if r["g"] < r["asked"] else ""
    bps = f"{r['bps']:.0f}" if r["bps"] is not None else "n/a (root)"
    p50 = f"{r['fo_p50']:.0f}" if r["fo_p50"] is not None else "-"
    mx = f"{r['fo_max']:.0f}" if r["fo_max"] is not None else "-"
    ws = f"{sum(r['ws'])/n:.1f}" if r["ws"] is not None else "n/a"
    print(f"{n:>7} {r['g']:>6}  {sum(r['cpu'])/n:>9.2f} {max(r['cpu']):>6.2f} {sum(r['wakes'])/n:>10.0f}  {sum(r['rss'])/n:>11.1f} {max(r['rss']):>6.1f} {sum(r['anon'])/n:>7.1f} {ws:>16}  {bps:>17}  {p50:>15} {mx:>6} {r['moved']:>3}/{r['expected']:<3}{note}", flush=True)
if ref is None:
    raise SystemExit("no cluster was measured")
print(f"reference bare tokio HTTP process (the same binary): CPU {ref[0]:.2f} %   RSS {ref[1]:.1f} MiB, private {ref[2]:.1f} MiB;  failover floor T + W_g = {floor} ms after the last heartbeat")
PY
