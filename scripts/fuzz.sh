#!/usr/bin/env bash
# Fuzzes freshet's untrusted-input parsers with cargo-fuzz (libFuzzer): the record decoders
# (JSON, Debezium, keys, vectors, event times; the schema registry wire format, Avro and
# Protobuf) and the MCP tool arguments (fuzz/fuzz_targets/). Not part of CI. Each target runs
# for SECONDS (default 120); a crash (any panic, abort, stack overflow, an input taking over
# 10 s or 2 GB) is kept in fuzz/artifacts/TARGET/, the other targets still run, and the
# script exits 1 naming the targets with findings. The corpus is kept in the repository
# (fuzz/corpus/TARGET/): inputs that reach new code are added there and the directory is
# minimised (`cargo fuzz cmin`) after each run, so commit it.
#
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]     # every target when none is named
#
# Needs a nightly toolchain (rustup toolchain install nightly); cargo-fuzz is installed into
# .tools/cargo-fuzz from crates.io on first use.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECONDS_PER_TARGET="${1:-120}"
shift || true
TARGETS=("$@")

FUZZ_ROOT="$ROOT/.tools/cargo-fuzz"
if [[ ! -x "$FUZZ_ROOT/bin/cargo-fuzz" ]]; then
  echo "fuzz: installing cargo-fuzz into $FUZZ_ROOT" >&2
  cargo install --quiet --locked --root "$FUZZ_ROOT" cargo-fuzz
fi
export PATH="$FUZZ_ROOT/bin:$PATH"
cd "$ROOT"
[[ ${#TARGETS[@]} -gt 0 ]] || mapfile -t TARGETS < <(cargo +nightly fuzz list)
# Its own target dir: instrumented builds share nothing with ordinary ones.
export CARGO_TARGET_DIR="$ROOT/fuzz/target"
# Unoptimised and without ASan: the decoders are safe Rust (panics, aborts and stack overflows
# are what is looked for), and an optimised instrumented build of every dependency takes
# longer than the fuzzing itself on a small machine.
FLAGS=(--dev --sanitizer none)
cargo +nightly fuzz build "${FLAGS[@]}"
failed=()
for target in "${TARGETS[@]}"; do
  mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
  before=$(find "fuzz/corpus/$target" -type f | wc -l)
  echo "fuzz: $target for ${SECONDS_PER_TARGET}s from $before inputs" >&2
  if ! cargo +nightly fuzz run "${FLAGS[@]}" "$target" "fuzz/corpus/$target" -- \
      -max_total_time="$SECONDS_PER_TARGET" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 2>"fuzz/artifacts/$target/run.log"; then
    failed+=("$target")
    echo "fuzz: $target: FINDING, input in fuzz/artifacts/$target/; end of its log:" >&2
    tail -25 "fuzz/artifacts/$target/run.log" >&2
  fi
  grep -E "^stat::number_of_executed_units|^Done" "fuzz/artifacts/$target/run.log" >&2 || true
  cargo +nightly fuzz cmin "${FLAGS[@]}" "$target" "fuzz/corpus/$target" >/dev/null 2>&1 || true
  echo "fuzz: $target: corpus $before -> $(find "fuzz/corpus/$target" -type f | wc -l) inputs" >&2
done
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz: findings in: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: no findings in ${TARGETS[*]}" >&2
