#!/usr/bin/env bash
# Rebuild node-agent/layout/hot.ld, the list of functions an agent runs, which
# node-agent/build.rs gives the linker so that they sit side by side in `.text.hot` at the
# start of the binary's code (not a test: it writes a file and prints what it found).
#
#   bash bench/layout.sh              # profile an agent, rewrite node-agent/layout/hot.ld
#   bash bench/layout.sh --bin PATH   # profile an existing baton built with its symbols
#                                     # (`cargo rustc --release -p baton-agent --bin baton
#                                     # -- -C strip=none`)
#
# Why: most of an idle agent's RSS is the binary's code. The kernel maps a page of it at a
# fault together with its neighbours (fault-around; a whole large folio of the page cache
# where read-ahead made one), so every place that start-up and the steady state touch
# brings in 64 KiB to a few MiB of code that never runs. The functions an agent runs take
# under 3 MiB of the binary's 30 MiB of code; laid out together they are mapped in a
# handful of faults. docs/src/benchmarks.md ("Code layout") has the figures.
#
# How: the cluster of `bench/scale.sh --only 8x50` with the agent of s2 under valgrind's
# callgrind (s2 holds its own groups and takes over those of s1 when the benchmark kills
# it: start-up, the steady state, a takeover). Every function of the binary that ran
# becomes a pattern of its symbol name (v0 mangling, set in .cargo/config.toml, names
# each instance of a generic function by its arguments) with the crate hashes and
# back-references left open: those change with the profile, the toolchain and the
# dependencies' versions, the names do not. A function that later disappears matches
# nothing; one that is new stays where the linker puts it: a stale list costs memory,
# never correctness. Needs valgrind (installed with apt-get when missing and root).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin="$2"; shift 2 ;;
    *) echo "usage: $0 [--bin PATH]" >&2; exit 2 ;;
  esac
done
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/baton-target}"
if ! command -v valgrind >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >&2
  else
    echo "bench/layout.sh needs valgrind (apt-get install valgrind)" >&2
    exit 1
  fi
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/baton-layout.XXXXXX")
trap 'rm -rf "$work"' EXIT
if [ -z "$bin" ]; then
  cargo rustc --release -p baton-agent --bin baton -- -C strip=none >&2
  bin="$CARGO_TARGET_DIR/release/baton"
fi
cp "$bin" "$work/baton"
if ! nm "$work/baton" >/dev/null 2>&1; then
  echo "$bin has no symbol table; build it with -C strip=none" >&2
  exit 1
fi
cat > "$work/agent" <<EOF
#!/usr/bin/env bash
# s2's agent under callgrind, every other command as it is.
prev=""
for a in "\$@"; do
  if [ "\$prev" = "-s" ] && [ "\$a" = "s2" ]; then
    exec valgrind -q --tool=callgrind --demangle=no --dump-instr=no \\
      --callgrind-out-file="$work/callgrind.out" "$work/baton" "\$@"
  fi
  prev="\$a"
done
exec "$work/baton" "\$@"
EOF
chmod +x "$work/agent"
bash bench/scale.sh --bin "$work/agent" --only 8x50 --idle 20 --settle 300 >&2
nm --defined-only -S "$work/baton" > "$work/symbols"
python3 - "$work/callgrind.out" "$work/symbols" node-agent/layout/hot.ld <<'PY'
import re, sys

profile, symbols, out = sys.argv[1:]
ran = set()
for line in open(profile, errors="replace"):
    # fn=(12) name, cfn=(12) name: the first mention of a function names it.
    m = re.match(r"c?fn=\(\d+\) (\S+)$", line.rstrip("\n"))
    if m:
        ran.add(m.group(1))
code, size = {}, 0
for line in open(symbols):
    f = line.split()
    if len(f) == 4 and f[2] in "tTwW":
        code[f[3]] = int(f[1], 16)
        size += int(f[1], 16)

def pattern(name):
    """The symbol's name with what changes between builds left open."""
    base = re.sub(r"\.llvm\.\d+$", "", name)
    if base.startswith("_R"):
        # v0: crate roots `Cs<hash>_<len><crate>`, back-references `B<offset>_`.
        base = re.sub(r"Cs[0-9A-Za-z]+_(?=\d)", "Cs*_", base)
        base = re.sub(r"B[0-9A-Za-z]*_", "B*_", base)
    elif base.startswith("_ZN"):
        # Legacy mangling (C++, or Rust built without v0): the trailing hash.
        base = re.sub(r"17h[0-9a-f]{16}E$", "17h*E", base)
    return base

hot = [n for n in ran if n in code and re.fullmatch(r"[A-Za-z0-9_.$]+", n)]
pats = sorted({pattern(n) for n in hot})
hot_size = sum(code[n] for n in hot)
with open(out, "w") as f:
    f.write(f"""/* The functions a baton agent runs, side by side at the start of its code: generated
   by bench/layout.sh from a profiled agent ({len(pats)} patterns, {hot_size / 2**20:.1f} MiB of the
   {size / 2**20:.1f} MiB of code of the binary profiled). node-agent/build.rs links `baton` with
   it; see there and docs/src/benchmarks.md ("Code layout"). Edit by running the script.
   One input section description for all of them: the linker walks every input section
   once per description, so one per function made a link 60 times longer. The trailing `*`
   also takes a function that ThinLTO renamed with a `.llvm.<hash>` suffix; a cold
   function (`#[cold]`, a panic's path) that ran is in `.text.unlikely.`. */
SECTIONS
{{
  .text.hot :
  {{
    *(
""")
    for p in pats:
        f.write(f"      .text.{p}*\n      .text.unlikely.{p}*\n")
    f.write("    )\n  }\n}\nINSERT BEFORE .text;\n")
print(f"{len(hot)} functions of the binary ran ({hot_size / 2**20:.2f} MiB of {size / 2**20:.1f} MiB of code); "
      f"{len(pats)} patterns written to {out}")
PY
