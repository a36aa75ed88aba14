#!/usr/bin/env bash
# The demo (README): a local broker, the sample knowledge base streaming in with updates and
# deletes, freshet serving it over MCP at http://127.0.0.1:8080/mcp, and a hybrid search
# with freshness metadata every few seconds. Ctrl-C stops everything.
#
#   bash scripts/demo.sh            # run until Ctrl-C
#   bash scripts/demo.sh --once     # one answer, then stop (used by the tests)
# The broker is Apache Kafka (scripts/kafka.sh; it takes BROKER_PORT..BROKER_PORT+3).
# Env: FRESHET_DEMO_PROFILE=dev to use the debug build; FRESHET_DEMO_BROKER_PORT (9092),
#      FRESHET_DEMO_HTTP_PORT (8080).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ONCE=0
[[ "${1:-}" == "--once" ]] && ONCE=1
PROFILE="${FRESHET_DEMO_PROFILE:-release}"
BROKER_PORT="${FRESHET_DEMO_BROKER_PORT:-9092}"
HTTP_PORT="${FRESHET_DEMO_HTTP_PORT:-8080}"
BROKERS="127.0.0.1:$BROKER_PORT"
TOPIC=articles
RUN=.tools/run
mkdir -p "$RUN"

log() { echo "demo: $*" >&2; }

bash scripts/setup.sh
if [[ "$PROFILE" == "release" ]]; then
  log "building freshet (release; the first build takes a few minutes)"
  cargo build --locked --release --bins --quiet
  BIN=target/release/freshet
else
  cargo build --locked --bins --quiet
  BIN=target/debug/freshet
fi

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait "${pids[@]}" 2>/dev/null || true
  bash scripts/kafka.sh stop "$BROKER_PORT" >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM

bash scripts/kafka.sh start "$BROKER_PORT"
bash scripts/kafka.sh create-topic "$TOPIC" 2 "$BROKER_PORT"

log "streaming the sample knowledge base into '$TOPIC' (200 documents, then 2 changes/s)"
.venv/bin/python examples/producer.py --brokers "$BROKERS" --topic "$TOPIC" --docs 200 --rate 2 \
  2>"$RUN/producer.log" &
pids+=($!)

# Every run starts freshet from an empty data directory, so the demo shows a first catch-up
# (the broker keeps its topic in .tools/run/ between runs).
DATA="$RUN/demo-data-$HTTP_PORT"
rm -rf "$DATA"
log "starting freshet serve (log: $RUN/freshet.log)"
FRESHET_KAFKA__BROKERS="$BROKERS" FRESHET_SERVER__HTTP_ADDR="127.0.0.1:$HTTP_PORT" \
  FRESHET_SERVER__DATA_DIR="$DATA" \
  FRESHET_LOG="${FRESHET_LOG:-info,rmcp=warn,hnsw_rs=warn}" \
  "$BIN" serve --config config/demo.toml 2>"$RUN/freshet.log" &
pids+=($!)

for _ in $(seq 1 300); do
  curl -fsS "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null || { tail -20 "$RUN/freshet.log"; exit 1; }
log "freshet is ready at http://127.0.0.1:$HTTP_PORT/mcp"

URL="http://127.0.0.1:$HTTP_PORT/mcp"
queries=("consumer lag keeps growing" "rotate credentials safely" "retry returns the original response"
         "latency spike after a cache stampede")
i=0
while :; do
  q="${queries[$((i % ${#queries[@]}))]}"
  echo
  .venv/bin/python examples/query.py "$q" --url "$URL" --k 3
  [[ $ONCE == 1 ]] && break
  i=$((i + 1))
  sleep 5
done
