#!/usr/bin/env bash
# Notifier benchmark (not a test: it reports figures, it asserts nothing).
#
#   bash bench/notify.sh                         # 10,000 events at 1,000/s, release build
#   bash bench/notify.sh --events 2000 --rate 500
#   bash bench/notify.sh --debug                 # unoptimized build (quick smoke run)
#
# Publishes the events through the notifier twice in one process (notifier/benches/
# notify.rs): first with the log sink alone (the reference, what an agent without
# [notify.*] sections runs), then with every sink enabled against real local endpoints
# (moto for SNS with an SQS subscriber and for CloudWatch through the CBOR shim, aiosmtpd
# for mail, a local receiver checking webhook signatures). Reports per sink the events
# delivered / dropped and the event-to-publish latency (publish() to the endpoint
# accepting the event) p50 / p99 / max, the process CPU time of each run, and the ratios
# to the reference. Latencies include the emulators' own time (moto is a Python process
# sharing the machine's cores).
set -euo pipefail
cd "$(dirname "$0")/.."
events=10000
rate=1000
profile=(--release)
while [ $# -gt 0 ]; do
  case "$1" in
    --events) events="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --debug) profile=(); shift ;;
    *) echo "usage: $0 [--events N] [--rate PER_SECOND] [--debug]" >&2; exit 2 ;;
  esac
done
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/baton-target}"
BATON_PYTHON="$(bash tests/moto/setup.sh | tail -n 1)"
export BATON_PYTHON
if [ "${#profile[@]}" -gt 0 ]; then
  cargo bench -p baton-notifier --bench notify -- --events "$events" --rate "$rate"
else
  cargo test -p baton-notifier --bench notify --no-run >&2
  bin=$(ls -t "$CARGO_TARGET_DIR"/debug/deps/notify-* | grep -v '\.d$' | head -n 1)
  "$bin" --events "$events" --rate "$rate"
fi
