#!/usr/bin/env bash
# Decode throughput per record format (JSON, Avro, Protobuf, JSON Schema) on one core:
# examples/decode_throughput.rs decodes the same documents in each encoding, without and with a
# 384-float vector, and prints records/s per format (one JSON line each) into
# bench/results/decode_throughput.jsonl. See docs/BENCHMARKS.md, "Decode throughput per format".
#
#   bash bench/decode_throughput.sh [RECORDS]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RECORDS="${1:-20000}"
cargo build --profile decode-bench --example decode_throughput
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/decode-bench/examples/decode_throughput"
OUT="$ROOT/bench/results/decode_throughput.jsonl"
mkdir -p "$(dirname "$OUT")"
: >"$OUT"
for dim in 0 384; do
  # One core, as the prepare stage decodes on one thread.
  taskset -c 0 "$BIN" "$RECORDS" "$dim" | tee -a "$OUT"
done
