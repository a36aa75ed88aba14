#!/usr/bin/env bash
# Retrieval quality (nDCG@10, Recall@100) and embedding speed on SciFact, freshet against
# reference implementations, all in one run. Results: bench/results/scifact.json; the
# numbers and how to read them are in docs/BENCHMARKS.md.
#
#   bash bench/scifact.sh [--data DIR] [other bench/scifact.py options]
#
# DIR is a BEIR-layout collection (corpus.jsonl, queries.jsonl, qrels/{train,test}.tsv),
# default ../shared/data/scifact. Installs what it needs into the checkout: scripts/setup.sh
# (broker, model) and .venv-ref/ (sentence-transformers, torch CPU, bm25s; several GB).
# FRESHET_BENCH_BROKERS=host:port uses an existing broker instead of a private Apache Kafka.
# Takes about 20 minutes on 2 cores.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { echo "bench: $*" >&2; }

bash scripts/setup.sh

REF="$ROOT/.venv-ref"
REQ="$ROOT/scripts/requirements-ref.txt"
STAMP="$REF/.requirements.sha256"
if [[ ! -x "$REF/bin/python" ]]; then
  log "creating .venv-ref"
  "${PYTHON:-python3}" -m venv "$REF"
fi
want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [[ "$(cat "$STAMP" 2>/dev/null || true)" != "$want" ]]; then
  log "installing $(basename "$REQ") into .venv-ref (torch is large; this takes a while once)"
  "$REF/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ"
  echo "$want" >"$STAMP"
fi

log "building the release binary"
cargo build --release --locked --bins --example embed_throughput

if [[ -n "${FRESHET_BENCH_BROKERS:-}" ]]; then
  BROKERS="$FRESHET_BENCH_BROKERS"
else
  PORT="$(cd tests && "$REF/bin/python" -c 'from kafka_util import free_port; print(free_port(4))' 2>/dev/null \
    || echo 39092)"
  bash scripts/kafka.sh start "$PORT"
  trap 'bash scripts/kafka.sh stop "$PORT" >/dev/null 2>&1 || true' EXIT
  BROKERS="127.0.0.1:$PORT"
fi

"$REF/bin/python" bench/scifact.py --broker "$BROKERS" "$@"
"$REF/bin/python" bench/report.py "$(
  "$REF/bin/python" -c 'import sys; a = sys.argv[1:]; print(a[a.index("--out") + 1] if "--out" in a else "bench/results/scifact.json")' "$@"
)"
