#!/usr/bin/env bash
# Benchmark harness: freshness, ingest throughput, query latency and recall of a release
# freshet against a real (Apache Kafka) broker, over MCP HTTP, side by side with Pathway reading the
# same topic. Results: bench/results/*.json and docs/BENCHMARKS.md (+ docs/img/*.png).
#
#   bash bench/run.sh                      # small scale (10k docs), ~12 minutes
#   bash bench/run.sh --scale medium       # 100k docs
#   bash bench/run.sh --scale large --no-peer --partitions 4   # 1M docs, freshet alone (~16 GB RAM, ~1.5 h)
#   bash bench/run.sh --restart-only --docs 50000   # restart phase alone (persisted collection)
#   bash bench/run.sh --help               # all parameters
#
# Installs what it needs, idempotently: scripts/setup.sh (broker, model), .venv-bench
# (bench/requirements.txt) and .venv-pathway (bench/requirements-pathway.txt, ~1.6 GB).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv() {  # venv DIR REQUIREMENTS: create DIR and install REQUIREMENTS when they changed
  local dir="$1" req="$2" want
  [[ -x "$dir/bin/python" ]] || python3 -m venv "$dir"
  want="$(sha256sum "$req" | cut -d' ' -f1)"
  if [[ "$(cat "$dir/.requirements.sha256" 2>/dev/null)" != "$want" ]]; then
    echo "bench: installing $req into $dir" >&2
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
    echo "$want" >"$dir/.requirements.sha256"
  fi
}
venv .venv-bench bench/requirements.txt
if [[ " $* " != *" --no-peer "* && " $* " != *" --restart-only "* ]]; then
  venv .venv-pathway bench/requirements-pathway.txt
fi
bash scripts/setup.sh
cargo build --locked --release --bins --quiet
out="$(mktemp)"
FRESHET_BIN="$PWD/target/release/freshet" .venv-bench/bin/python bench/harness.py "$@" | tee "$out"
result="$(sed -n 's/^wrote //p' "$out" | tail -1)"
rm -f "$out"
# The restart phase alone, f32 (int8-* before int8 became the default) and uniform runs are
# written up by hand (docs/BENCHMARKS.md).
name="$(basename "${result:-none}")"
if [[ -n "$result" && " $* " != *" --restart-only "* && "$name" != int8-* && "$name" != f32-* && "$name" != uniform-* ]]; then
  .venv-bench/bin/python bench/report.py "$result"
fi
