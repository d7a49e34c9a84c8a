#!/usr/bin/env bash
# Rebuild node-agent/layout/hot.ld, the list of functions an agent runs, which
# node-agent/build.rs gives the linker so that they sit side by side in `.text.hot` at the
# start of the binary's code (not a test: it writes a file and prints what it found).
#
#   bash bench/layout.sh                  # profile the release and the packaged (dist)
#                                         # builds, rewrite node-agent/layout/hot.ld
#   bash bench/layout.sh --bin PATH ...   # profile existing baton binaries built with
#                                         # their symbols (`cargo rustc --release -p
#                                         # baton-agent --bin baton -- -C strip=none`)
#
# Why: most of an idle agent's RSS is the binary's code. The kernel maps a page of it at a
# fault together with its neighbours (fault-around; a whole large folio of the page cache
# where read-ahead made one), so every place that start-up and the steady state touch
# brings in 64 KiB to a few MiB of code that never runs. The functions an agent runs take
# under 3 MiB of the binary's 30 MiB of code; laid out together they are mapped in a
# handful of faults. docs/src/benchmarks.md ("Code layout") has the figures.
#
# How: for each binary, the cluster of `bench/scale.sh --only 8x50` with the agent of s2
# under valgrind's callgrind (s2 holds its own groups and takes over those of s1 when the
# benchmark kills it: start-up, the steady state, a takeover). Every function of the
# binary that ran becomes a pattern of its symbol name (v0 mangling, set in
# .cargo/config.toml, names each instance of a generic function by its arguments) with
# the crate hashes and back-references left open: those change with the profile, the
# toolchain and the dependencies' versions, the names do not. The list is the union over
# the binaries: link-time optimisation (the packaged build) inlines and merges otherwise,
# so it runs functions the release build does not have, and the other way round. A
# function that later disappears matches nothing; one that is new stays where the linker
# puts it: a stale list costs memory, never correctness. Needs valgrind (installed with
# apt-get when missing and root).
set -euo pipefail
cd "$(dirname "$0")/.."
bins=()
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bins+=("$2"); shift 2 ;;
    *) echo "usage: $0 [--bin PATH]..." >&2; exit 2 ;;
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
if [ ${#bins[@]} -eq 0 ]; then
  for profile in release dist; do
    cargo rustc --profile "$profile" -p baton-agent --bin baton -- -C strip=none >&2
    cp "$CARGO_TARGET_DIR/$profile/baton" "$work/built-$profile"
    bins+=("$work/built-$profile")
  done
fi
runs=()
i=0
for bin in "${bins[@]}"; do
  i=$((i + 1))
  cp "$bin" "$work/baton$i"
  if ! nm "$work/baton$i" >/dev/null 2>&1; then
    echo "$bin has no symbol table; build it with -C strip=none" >&2
    exit 1
  fi
  # s2's agent under callgrind, every other command as it is.
  {
    echo '#!/usr/bin/env bash'
    echo 'prev=""'
    echo 'for a in "$@"; do'
    echo '  if [ "$prev" = "-s" ] && [ "$a" = "s2" ]; then'
    echo "    exec valgrind -q --tool=callgrind --demangle=no --dump-instr=no --callgrind-out-file='$work/callgrind$i.out' '$work/baton$i' \"\$@\""
    echo '  fi'
    echo '  prev="$a"'
    echo 'done'
    echo "exec '$work/baton$i' \"\$@\""
  } > "$work/agent$i"
  chmod +x "$work/agent$i"
  bash bench/scale.sh --bin "$work/agent$i" --only 8x50 --idle 20 --settle 300 >&2
  nm --defined-only -S "$work/baton$i" > "$work/symbols$i"
  runs+=("$bin" "$work/callgrind$i.out" "$work/symbols$i")
done
python3 - node-agent/layout/hot.ld "${runs[@]}" <<'PY'
import os, re, sys

out, args = sys.argv[1], sys.argv[2:]

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

pats, notes = set(), []
for k in range(0, len(args), 3):
    binary, profile, symbols = args[k:k + 3]
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
    hot = [n for n in ran if n in code and re.fullmatch(r"[A-Za-z0-9_.$]+", n)]
    mine = {pattern(n) for n in hot}
    hot_size = sum(code[n] for n in hot)
    note = (f"{os.path.basename(binary)}: {len(hot)} functions ran, {hot_size / 2**20:.1f} MiB of "
            f"{size / 2**20:.1f} MiB of code, {len(mine - pats)} patterns new to the list")
    notes.append(note)
    print(note)
    pats |= mine
pats = sorted(pats)
with open(out, "w") as f:
    f.write("/* The functions a baton agent runs, side by side at the start of its code: generated\n"
            "   by bench/layout.sh from profiled agents, one per binary:\n")
    for note in notes:
        f.write(f"     {note}\n")
    f.write(f"""   ({len(pats)} patterns in all). node-agent/build.rs links `baton` with it; see there
   and docs/src/benchmarks.md ("Code layout"). Edit by running the script.
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
print(f"{len(pats)} patterns written to {out}")
PY
