#!/usr/bin/env bash
# Benchmark of the AWS provider against moto server: per pattern (VIP route tables,
# Elastic IP, Route 53 record), the time from "activate" to the change being visible at
# the emulator (moto's own log of the mutating call), the activation's total time (with
# the epoch read-back), the number of API calls per failover, and as the reference the
# raw SDK latency of the same mutating calls in the same run. Prints a table.
#
#   bash bench/aws.sh            # 20 failovers per pattern, then 20 takeovers of a cluster
#   BATON_BENCH_ROUNDS=50 bash bench/aws.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python="$(bash tests/moto/setup.sh | tail -n1)"
export BATON_PYTHON="$python" BATON_REQUIRE_MOTO=1
export BATON_BENCH_ROUNDS="${BATON_BENCH_ROUNDS:-20}"
cargo test -q --release -p baton-providers --test aws -- --ignored --exact bench_failover_per_pattern --nocapture 2>&1 \
  | sed -n '/^AWS failover per pattern/,$p' | grep -v '^test \|^$\|^\.$\|running\|test result'

# Benchmark 2 of the takeover work: three agents (release build) at the default
# heartbeat, a group of aws-vip + aws-eip + aws-dns, SIGKILL of the owner -> all three
# visible at moto, beside the floor T + W_g (tests/tests/aws.rs, bench_takeover_vip_eip_dns).
cargo build -q --release --bin baton
cargo test -q --release -p baton-tests --test aws -- --ignored --exact bench_takeover_vip_eip_dns --nocapture 2>/dev/null \
  | sed -n '/^AWS takeover/,$p' | grep -v '^test \|^$\|^\.$\|running\|test result'
