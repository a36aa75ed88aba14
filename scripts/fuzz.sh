#!/usr/bin/env bash
# Fuzzes freshet's record decoders (JSON, Debezium, keys, vectors, event times) and the MCP
# tool-argument parsing with cargo-fuzz (libFuzzer; needs a nightly toolchain). Not part of
# CI: each target runs for FUZZ_SECONDS (default 180). The corpus is kept in the repository
# (fuzz/corpus/<target>/): new inputs the fuzzer finds are added there, minimised with
# `cargo fuzz cmin` at the end; crashes go to fuzz/artifacts/<target>/ and make this script
# exit 1 (reproduce one with `cargo +nightly fuzz run <target> <file>`).
#
#   bash scripts/fuzz.sh                           # every target, 3 minutes each
#   FUZZ_SECONDS=600 bash scripts/fuzz.sh tool_args decode_json
#   FUZZ_SANITIZER=address bash scripts/fuzz.sh    # with AddressSanitizer (slower)
#
# Installs what is missing: the nightly toolchain (rustup) and cargo-fuzz (cargo install).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SECONDS_EACH="${FUZZ_SECONDS:-180}"
TOOLCHAIN="${FUZZ_TOOLCHAIN:-nightly}"
# Safe Rust mostly panics rather than corrupting memory, so the default is the faster build
# without a sanitizer; libFuzzer still catches panics, aborts, timeouts and memory blow-ups.
SANITIZER="${FUZZ_SANITIZER:-none}"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$PWD/fuzz/target}"

log() { echo "fuzz: $*" >&2; }

rustup toolchain list | grep -q "^$TOOLCHAIN" || rustup toolchain install "$TOOLCHAIN" --profile minimal
cargo +"$TOOLCHAIN" fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked

targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  mapfile -t targets < <(cd fuzz && cargo +"$TOOLCHAIN" fuzz list)
fi

failed=()
for target in "${targets[@]}"; do
  corpus="fuzz/corpus/$target"
  mkdir -p "$corpus" "fuzz/artifacts/$target"
  before=$(find "$corpus" -type f | wc -l)
  log "$target: ${SECONDS_EACH}s from $before corpus inputs"
  # -timeout: one input taking over 10 s is a finding (a stall), as is > 2 GB of memory.
  if ! cargo +"$TOOLCHAIN" fuzz run --sanitizer "$SANITIZER" "$target" "$corpus" -- \
      -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
      -print_final_stats=1 2>"fuzz/artifacts/$target/run.log"; then
    failed+=("$target")
    log "$target: FAILED, see fuzz/artifacts/$target/ (last lines of the log:)"
    tail -20 "fuzz/artifacts/$target/run.log" >&2
  fi
  grep -E "^stat::(number_of_executed_units|peak_rss_mb)|^Done" "fuzz/artifacts/$target/run.log" >&2 || true
  # Keep the corpus small: only inputs that add coverage.
  cargo +"$TOOLCHAIN" fuzz cmin --sanitizer "$SANITIZER" "$target" "$corpus" >/dev/null 2>&1 || true
  log "$target: corpus $before -> $(find "$corpus" -type f | wc -l) inputs"
done
if [[ ${#failed[@]} -gt 0 ]]; then
  log "findings in: ${failed[*]}"
  exit 1
fi
log "no findings"
