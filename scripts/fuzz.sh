#!/usr/bin/env bash
# Fuzzes the record decoders with cargo-fuzz (libFuzzer): the schema registry wire format, Avro
# and Protobuf payloads (fuzz/fuzz_targets/). Each target runs for SECONDS (default 120); a
# crash (any panic, abort, or sanitizer report) fails the script and leaves its input in
# fuzz/artifacts/TARGET/. Corpora grow in fuzz/corpus/TARGET/ (not committed).
#
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Needs a nightly toolchain (rustup toolchain install nightly); cargo-fuzz is installed into
# .tools/cargo-fuzz from crates.io on first use.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECONDS_PER_TARGET="${1:-120}"
shift || true
TARGETS=("$@")
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=(wire_format avro protobuf)

FUZZ_ROOT="$ROOT/.tools/cargo-fuzz"
if [[ ! -x "$FUZZ_ROOT/bin/cargo-fuzz" ]]; then
  echo "fuzz: installing cargo-fuzz into $FUZZ_ROOT" >&2
  cargo install --quiet --locked --root "$FUZZ_ROOT" cargo-fuzz
fi
export PATH="$FUZZ_ROOT/bin:$PATH"
cd "$ROOT"
# Its own target dir: instrumented builds share nothing with ordinary ones.
export CARGO_TARGET_DIR="$ROOT/fuzz/target"
# Unoptimised and without ASan: the decoders are safe Rust (panics, aborts and stack overflows
# are what is looked for), and an optimised instrumented build of every dependency takes
# longer than the fuzzing itself on a small machine.
FLAGS=(--dev --sanitizer none)
cargo +nightly fuzz build "${FLAGS[@]}"
for target in "${TARGETS[@]}"; do
  mkdir -p "fuzz/corpus/$target"
  echo "fuzz: $target for ${SECONDS_PER_TARGET}s" >&2
  cargo +nightly fuzz run "${FLAGS[@]}" "$target" "fuzz/corpus/$target" -- \
    -max_total_time="$SECONDS_PER_TARGET" -max_len=8192 -rss_limit_mb=2048 -print_final_stats=1
done
