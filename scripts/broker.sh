#!/usr/bin/env bash
# A local tansu broker (Kafka protocol, in-memory storage) for development.
#
#   scripts/broker.sh start [PORT]                         default PORT 9092
#   scripts/broker.sh stop [PORT]
#   scripts/broker.sh status [PORT]                        exit 1 if not running
#   scripts/broker.sh create-topic NAME [PARTITIONS] [PORT]   default 1 partition
#
# Listens on 127.0.0.1 only. Data lives in memory: a restart starts empty.
# Needs `scripts/setup.sh` first (it installs .tools/bin/tansu).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TANSU="$ROOT/.tools/bin/tansu"
RUN="$ROOT/.tools/run"
HOST=127.0.0.1
DEFAULT_PORT=9092
READY_TIMEOUT_S=20

die() { echo "broker: $*" >&2; exit 1; }

usage() {
  sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

check_port() {
  if ! [[ "$1" =~ ^[0-9]{1,5}$ ]] || ((10#$1 == 0 || 10#$1 > 65535)); then
    die "bad port: $1"
  fi
}

need_tansu() {
  [[ -x "$TANSU" ]] || die "$TANSU not found; run scripts/setup.sh first"
}

# True if something accepts TCP connections on the port.
port_open() {
  (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

# True if the broker answers a Metadata request (what every client does first).
metadata_ok() {
  timeout 5 "$TANSU" topic list --broker "tcp://$HOST:$1" >/dev/null 2>&1
}

# Pid from the pid file, if that process is still a tansu.
running_pid() {
  local pidfile="$RUN/tansu-$1.pid" pid
  [[ -f "$pidfile" ]] || return 1
  pid="$(<"$pidfile")"
  # Guard against a stale file whose pid was reused by another program.
  [[ "$pid" =~ ^[0-9]+$ ]] && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == tansu ]] || return 1
  echo "$pid"
}

log_tail() {
  local log="$RUN/tansu-$1.log"
  if [[ -s "$log" ]]; then
    echo "--- last lines of $log ---" >&2
    tail -n 30 "$log" >&2
  fi
}

cmd_start() {
  local port="${1:-$DEFAULT_PORT}" pid log pidfile deadline
  check_port "$port"
  need_tansu
  log="$RUN/tansu-$port.log"
  pidfile="$RUN/tansu-$port.pid"

  if port_open "$port"; then
    if metadata_ok "$port"; then
      if pid="$(running_pid "$port")"; then
        echo "broker: already running on $HOST:$port (pid $pid)"
      else
        echo "broker: a Kafka broker not started by this script is already listening on $HOST:$port"
      fi
      return 0
    fi
    die "port $port is in use by something that is not a Kafka broker"
  fi

  mkdir -p "$RUN"
  rm -f "$pidfile"
  # cwd=/ because tansu loads a .env file from its cwd and every parent directory,
  # which could silently change its settings; flags below override the rest of the
  # env, and the unset variables are the ones that have no flag to override them.
  # setsid: the broker outlives this shell and ignores its Ctrl-C.
  (
    cd /
    exec env -u SCHEMA_REGISTRY -u AUTHENTICATION -u OTEL_EXPORTER_OTLP_ENDPOINT \
      setsid "$TANSU" broker \
      --listener-url "tcp://$HOST:$port" \
      --advertised-listener-url "tcp://$HOST:$port" \
      --storage-engine memory://tansu/ \
      </dev/null >"$log" 2>&1
  ) &
  pid=$!
  echo "$pid" >"$pidfile"

  deadline=$((SECONDS + READY_TIMEOUT_S))
  until port_open "$port" && metadata_ok "$port"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$pidfile"
      log_tail "$port"
      die "tansu exited during startup"
    fi
    if ((SECONDS >= deadline)); then
      kill "$pid" 2>/dev/null || true
      rm -f "$pidfile"
      log_tail "$port"
      die "tansu not ready on $HOST:$port after ${READY_TIMEOUT_S}s"
    fi
    sleep 0.1
  done
  echo "broker: started on $HOST:$port (pid $pid, log ${log#"$ROOT"/})"
}

cmd_stop() {
  local port="${1:-$DEFAULT_PORT}" pid
  check_port "$port"
  if ! pid="$(running_pid "$port")"; then
    rm -f "$RUN/tansu-$port.pid"
    echo "broker: not running on port $port"
    return 0
  fi
  # On SIGTERM tansu waits up to 5 s for connected clients to leave; its data is
  # in memory only, so give it a moment and then kill it.
  kill "$pid"
  for _ in $(seq 20); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$RUN/tansu-$port.pid"
  echo "broker: stopped (pid $pid)"
}

cmd_status() {
  local port="${1:-$DEFAULT_PORT}" pid
  check_port "$port"
  if pid="$(running_pid "$port")"; then
    if metadata_ok "$port"; then
      echo "broker: running on $HOST:$port (pid $pid)"
    else
      echo "broker: pid $pid alive but not answering on $HOST:$port"
      return 1
    fi
  elif port_open "$port" && metadata_ok "$port"; then
    echo "broker: a Kafka broker not started by this script is listening on $HOST:$port"
  else
    echo "broker: not running on port $port"
    return 1
  fi
}

cmd_create_topic() {
  local name="${1:-}" partitions="${2:-1}" port="${3:-$DEFAULT_PORT}" out
  [[ -n "$name" ]] || usage
  if ! [[ "$partitions" =~ ^[1-9][0-9]*$ ]]; then
    die "bad partition count: $partitions"
  fi
  check_port "$port"
  need_tansu
  # tansu's client retries a refused connection for a long time: fail fast instead.
  port_open "$port" || die "no broker on $HOST:$port (start one: scripts/broker.sh start $port)"
  if out="$(timeout 15 "$TANSU" topic create "$name" --partitions "$partitions" \
      --broker "tcp://$HOST:$port" 2>&1)"; then
    echo "broker: created topic $name ($partitions partitions)"
  elif [[ "$out" == *"already exists"* ]]; then
    echo "broker: topic $name already exists"
  else
    [[ -z "$out" ]] || echo "$out" >&2
    die "could not create topic $name on $HOST:$port"
  fi
}

main() {
  local cmd="${1:-}"
  [[ $# -gt 0 ]] && shift
  case "$cmd" in
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    create-topic) cmd_create_topic "$@" ;;
    *) usage ;;
  esac
}

main "$@"
