#!/usr/bin/env bash
# The demo (README): a local broker, the sample knowledge base streaming in with updates and
# deletes, freshet serving it over MCP at http://127.0.0.1:8080/mcp, and a hybrid search
# with freshness metadata every few seconds. Ctrl-C stops everything (exit 0).
#
#   bash scripts/demo.sh            # run until Ctrl-C
#   bash scripts/demo.sh --once     # one answer, then stop (used by the tests)
# The broker is Apache Kafka (scripts/kafka.sh; it takes BROKER_PORT and BROKER_PORT+3).
# Env: FRESHET_DEMO_BROKER_PORT (9092), FRESHET_DEMO_HTTP_PORT (8080);
#      FRESHET_PROFILE (dev) picks the cargo profile, shared with scripts/test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/prereqs.sh

ONCE=0
[[ "${1:-}" == "--once" ]] && ONCE=1
BROKER_PORT="${FRESHET_DEMO_BROKER_PORT:-9092}"
HTTP_PORT="${FRESHET_DEMO_HTTP_PORT:-8080}"
BROKERS="127.0.0.1:$BROKER_PORT"
TOPIC=articles
RUN=.tools/run

log() { echo "demo: $*" >&2; }
die() { log "error: $*"; exit 1; }

# A port someone else listens on is found before anything starts, not after a build and a
# 30 s wait on another program's server.
port_busy() {
  python3 -c 'import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(0)
sys.exit(1)' "$1"
}

require_prereqs demo
[[ "$HTTP_PORT" =~ ^[0-9]+$ ]] || die "FRESHET_DEMO_HTTP_PORT=$HTTP_PORT is not a port number"
[[ "$BROKER_PORT" =~ ^[0-9]+$ ]] || die "FRESHET_DEMO_BROKER_PORT=$BROKER_PORT is not a port number"
if port_busy "$HTTP_PORT"; then
  die "port $HTTP_PORT (freshet's HTTP port) is in use by another program; choose another with FRESHET_DEMO_HTTP_PORT=PORT"
fi
if ! bash scripts/kafka.sh status "$BROKER_PORT" >/dev/null 2>&1; then
  for port in "$BROKER_PORT" $((BROKER_PORT + 3)); do
    if port_busy "$port"; then
      die "port $port (the demo broker uses $BROKER_PORT and $((BROKER_PORT + 3))) is in use by another program; choose another with FRESHET_DEMO_BROKER_PORT=PORT"
    fi
  done
fi

pids=()
waiting=""   # the query or sleep the script is waiting for
cleaned=0
cleanup() {
  ((cleaned)) && return
  cleaned=1
  for pid in "${pids[@]}" $waiting; do kill "$pid" 2>/dev/null || true; done
  wait "${pids[@]}" 2>/dev/null || true
  bash scripts/kafka.sh stop "$BROKER_PORT" >/dev/null 2>&1 || true
}
# Ctrl-C (or SIGTERM) ends the demo quietly: stop what it started, exit 0. The children that
# run while waiting (the query, sleep) are backgrounded so that the trap runs at once; a
# backgrounded command ignores SIGINT, so nothing but the trap reacts to it.
interrupted() {
  trap - INT TERM
  echo >&2
  log "stopping (producer, freshet, broker)"
  cleanup
  log "stopped"
  exit 0
}
trap cleanup EXIT
trap interrupted INT TERM

mkdir -p "$RUN"
bash scripts/setup.sh --demo
log "building freshet ($(profile_name) profile; a first build takes 10-25 minutes on 2 cores, then seconds)"
cargo build --locked --profile "$(profile_name)" --bins
BIN="$(profile_dir)/freshet"

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
  "$BIN" serve --config config/demo.toml 2>"$RUN/freshet.log" &
FRESHET_PID=$!
pids+=("$FRESHET_PID")

log "waiting for freshet to catch up with the topic (/readyz)"
ready=0
for _ in $(seq 1 600); do
  if curl -fsS "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null 2>&1; then ready=1; break; fi
  kill -0 "$FRESHET_PID" 2>/dev/null || break
  sleep 0.1 & waiting=$!
  wait "$waiting"
done
if ((!ready)); then
  tail -20 "$RUN/freshet.log" >&2
  die "freshet did not become ready (log above, in full: $RUN/freshet.log)"
fi
log "freshet is ready at http://127.0.0.1:$HTTP_PORT/mcp (Ctrl-C stops the demo)"

URL="http://127.0.0.1:$HTTP_PORT/mcp"
STATE="$RUN/demo-hits-$HTTP_PORT.json"
rm -f "$STATE"
queries=("consumer lag keeps growing" "rotate credentials safely" "retry returns the original response"
         "latency spike after a cache stampede")
i=0
while :; do
  q="${queries[$((i % ${#queries[@]}))]}"
  echo
  .venv/bin/python examples/query.py "$q" --url "$URL" --k 3 --state "$STATE" &
  waiting=$!
  status=0
  wait "$waiting" || status=$?
  if ! kill -0 "$FRESHET_PID" 2>/dev/null; then
    # freshet handles SIGINT itself, so a terminal's Ctrl-C can stop it before this script's
    # trap runs; it exits 0 only when stopped by a signal, which is then that Ctrl-C.
    freshet_status=0
    wait "$FRESHET_PID" 2>/dev/null || freshet_status=$?
    ((freshet_status == 0)) && interrupted
    tail -20 "$RUN/freshet.log" >&2
    die "freshet stopped (log above, in full: $RUN/freshet.log)"
  fi
  ((ONCE)) && exit "$status"
  i=$((i + 1))
  sleep 5 & waiting=$!
  wait "$waiting"
done
