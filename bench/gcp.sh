#!/usr/bin/env bash
# Benchmark of the Google Cloud provider against the Google Cloud fake (tests/gcp): per
# pattern (Cloud DNS record, route VIP, alias IP), the time from "activate" to the
# mutating call arriving at the fake, the activation's total time (with the waits for
# the change or operation to be done, the fake's delays set to 0), the number of API
# calls per failover, and as the reference the raw latency of the same mutating call
# sent with a plain HTTP client in the same run. Prints a table.
#
#   bash bench/gcp.sh            # 20 failovers per pattern
#   BATON_BENCH_ROUNDS=50 bash bench/gcp.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python="$(bash tests/moto/setup.sh | tail -n1)"
export BATON_PYTHON="$python" BATON_REQUIRE_ALL=1
export BATON_BENCH_ROUNDS="${BATON_BENCH_ROUNDS:-20}"
cargo test -q --release -p baton-providers --test gcp -- --ignored --exact bench_failover_per_pattern --nocapture 2>&1 \
  | sed -n '/^Google Cloud failover per pattern/,$p' | grep -v '^test \|^$\|^\.$\|running\|test result'
