#!/usr/bin/env bash
# Benchmark of the Azure provider against the Azure fake (tests/azure/fake.py, checked
# against Microsoft's specs): per pattern (DNS record set, route-table VIP in two
# tables, load balancer probe port), the time from "activate" to the change being
# visible (the end of the mutating request in the fake's log; for the probe port, the
# first connection a prober gets), the activation's total time (the route tables'
# long-running operations included, polled at the fake's Retry-After of 1 s), the API
# calls per failover, and as the reference the raw latency of the same mutating calls
# through the client in the same run (for the probe port: bind, listen and connect of a
# plain socket). Prints a table.
#
#   bash bench/azure.sh            # 20 failovers per pattern
#   BATON_BENCH_ROUNDS=50 bash bench/azure.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python="$(bash tests/moto/setup.sh | tail -n1)"
export BATON_PYTHON="$python" BATON_REQUIRE_ALL=1
BATON_AZURE_SPECS="$(bash tests/azure/specs.sh | tail -n 1)"
export BATON_AZURE_SPECS
export BATON_BENCH_ROUNDS="${BATON_BENCH_ROUNDS:-20}"
cargo test -q --release -p baton-providers --test azure -- --ignored --exact bench_failover_per_pattern --nocapture 2>&1 \
  | sed -n '/^Azure failover per pattern/,$p' | grep -v '^test \|^$\|^\.$\|running\|test result'
