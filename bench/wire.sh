#!/usr/bin/env bash
# Heartbeat wire benchmark (not a test: it reports figures, it asserts nothing).
#
#   bash bench/wire.sh                      # 20,000 iterations per form, release build
#   bash bench/wire.sh --iterations 2000
#
# Encodes and decodes one heartbeat (1, 10 and 50 groups) in each wire form: plain JSON
# (version 1, the reference), compressed (version 2), encrypted ([heartbeat] encrypt,
# version 3), compressed and encrypted; prints the time per heartbeat and the datagram
# size, each as a ratio to the plain form measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/baton-target}"
cargo bench -p baton-agent --bench wire -- "$@"
