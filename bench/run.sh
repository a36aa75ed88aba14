#!/usr/bin/env bash
# Benchmark harness: freshness, ingest throughput, query latency and recall of a release
# freshet against a real (tansu) broker, over MCP HTTP. Results: bench/results/*.json and
# docs/BENCHMARKS.md (+ docs/img/*.png).
#
#   bash bench/run.sh                      # small scale (10k docs), ~10 minutes
#   bash bench/run.sh --scale medium       # 100k docs
#   bash bench/run.sh --scale large        # 1M docs (needs ~12 GB RAM, ~1 h)
#   bash bench/run.sh --help               # all parameters
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=.venv-bench
REQ=bench/requirements.txt
if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV"
fi
want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [[ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$want" ]]; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ"
  echo "$want" >"$VENV/.requirements.sha256"
fi
bash scripts/setup.sh
cargo build --locked --release --bins --quiet
FRESHET_BIN="$PWD/target/release/freshet" exec "$VENV/bin/python" bench/harness.py "$@"
