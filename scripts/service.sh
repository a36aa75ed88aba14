# Sourced by scripts/kafka.sh and scripts/schema_registry.sh: a development server on loopback
# run in the background by the sourcing script's own `run DIR PORT`, with a pid file and log
# in $RUN (start/stop/status).
#
# The sourcing script sets SERVICE (its name in messages and file names), SERVICE_CMDLINE (a
# string the server's command line contains: guards against a stale pid file whose pid was
# reused), HOST, RUN and PORT_SPAN (how many ports from PORT on the server takes), and defines
# `service_ready PORT` (true once the server serves).

die() { echo "$SERVICE: $*" >&2; exit 1; }

# The sourcing script's header comment, then exit 2.
usage() {
  awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0" >&2
  exit 2
}

check_port() {
  if ! [[ "$1" =~ ^[0-9]{1,5}$ ]] || ((10#$1 == 0 || 10#$1 > 65536 - PORT_SPAN)); then
    die "bad port: $1"
  fi
}

# For `install`: true (printing DIR) if DIR is complete. Otherwise checks for java and mvn and
# takes the install lock (held until the script exits: concurrent installs wait for the first
# one), then looks again.
installed() {
  local dir="$1"
  if [[ -f "$dir/.complete" ]]; then
    echo "$dir"
    return 0
  fi
  command -v java >/dev/null || die "java not found ($SERVICE needs Java 17+)"
  command -v mvn >/dev/null || die "mvn not found ($SERVICE is fetched from Maven Central)"
  mkdir -p "$ROOT/.tools"
  exec 8>"$ROOT/.tools/.$SERVICE-install.lock"
  flock 8
  if [[ -f "$dir/.complete" ]]; then
    echo "$dir"
    return 0
  fi
  return 1
}

port_open() {
  (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

# The pid of the server started on PORT, if it still runs.
running_pid() {
  local pidfile="$RUN/$SERVICE-$1.pid" pid
  [[ -f "$pidfile" ]] || return 1
  pid="$(<"$pidfile")"
  [[ "$pid" =~ ^[0-9]+$ ]] && grep -q "$SERVICE_CMDLINE" "/proc/$pid/cmdline" 2>/dev/null || return 1
  echo "$pid"
}

# Starts `$0 run $RUN/$SERVICE-PORT PORT` in the background and waits up to TIMEOUT seconds
# for service_ready. Sets STARTED_PID; returns 1 if it was already running (STARTED_PID is
# then that server's pid).
service_start() {
  local script="$1" port="$2" timeout="$3" dir log deadline
  dir="$RUN/$SERVICE-$port"
  log="$dir.log"
  if STARTED_PID="$(running_pid "$port")"; then
    return 1
  fi
  port_open "$port" && die "port $port is in use by another program"
  mkdir -p "$RUN"
  # setsid: the server outlives this shell and ignores its Ctrl-C.
  setsid bash "$script" run "$dir" "$port" </dev/null >"$log" 2>&1 &
  # The exec'd JVM keeps the pid of the script that started it.
  STARTED_PID=$!
  echo "$STARTED_PID" >"$RUN/$SERVICE-$port.pid"
  deadline=$((SECONDS + timeout))
  until service_ready "$port"; do
    if ! kill -0 "$STARTED_PID" 2>/dev/null; then
      tail -n 30 "$log" >&2
      die "the server exited during startup (log: ${log#"$ROOT"/})"
    fi
    ((SECONDS < deadline)) || { kill "$STARTED_PID"; die "not ready on $HOST:$port after ${timeout}s"; }
    sleep 0.2
  done
}

# Stops the server started on PORT: SIGTERM, then SIGKILL after GRACE seconds.
service_stop() {
  local port="$1" grace="$2" pid
  if ! pid="$(running_pid "$port")"; then
    rm -f "$RUN/$SERVICE-$port.pid"
    echo "$SERVICE: not running on port $port"
    return 0
  fi
  kill "$pid"
  for _ in $(seq $((grace * 10))); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  rm -f "$RUN/$SERVICE-$port.pid"
  echo "$SERVICE: stopped (pid $pid)"
}

# Says whether the server started on PORT runs and serves (exit 1 if not); WHERE says where.
service_status() {
  local port="$1" where="$2" pid
  if pid="$(running_pid "$port")" && service_ready "$port"; then
    echo "$SERVICE: running $where (pid $pid)"
  else
    echo "$SERVICE: not running on port $port"
    return 1
  fi
}
