#!/usr/bin/env bash
# A real schema registry for development, the demo and the tests: Apicurio Registry (in-memory
# H2 storage) from its released Maven Central distribution, on loopback. freshet and Confluent's
# serializers talk to its Confluent-compatible API at http://127.0.0.1:PORT/apis/ccompat/v7.
#
#   scripts/schema_registry.sh install             fetch the release (cached in
#                                                  .tools/apicurio-registry-VERSION/)
#   scripts/schema_registry.sh start [PORT]        background registry (default 8081), state
#                                                  in .tools/run/schema-registry-PORT/
#   scripts/schema_registry.sh stop [PORT]
#   scripts/schema_registry.sh status [PORT]       exit 1 if not running
#   scripts/schema_registry.sh url [PORT]          print the Confluent-compatible API's URL
#   scripts/schema_registry.sh run DIR PORT        run in the foreground with its config in DIR
#                                                  (what the tests start)
#
# With SCHEMA_REGISTRY_USER and SCHEMA_REGISTRY_PASSWORD set (start/run), every API request
# needs that HTTP basic-auth pair (401 otherwise); /health stays open. Schemas live in memory:
# a stopped registry forgets them.
# Install also makes a class-data sharing archive (one training start) that halves start-up.
# Needs Java 17+, Maven (`mvn`) and curl. APICURIO_VERSION picks another release that runs on
# Java 17; SCHEMA_REGISTRY_HEAP (default 384m) sets its heap.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# 3.0.x is the newest line built for Java 17 (3.1+ need Java 21, which Debian 12 lacks).
APICURIO_VERSION="${APICURIO_VERSION:-3.0.9}"
HOME_DIR="$ROOT/.tools/apicurio-registry-$APICURIO_VERSION"
RUN="$ROOT/.tools/run"
HOST=127.0.0.1
DEFAULT_PORT=8081
READY_TIMEOUT_S=120
API_PATH=/apis/ccompat/v7
# Serial GC, a modest heap and the quick JIT tier: a single development registry on a
# shared machine, where start-up time matters more than peak throughput.
JAVA_CMD=(java "-Xmx${SCHEMA_REGISTRY_HEAP:-384m}" -Xms64m -XX:+UseSerialGC -XX:TieredStopAtLevel=1)

SERVICE=schema-registry
SERVICE_CMDLINE=apicurio-registry-app
PORT_SPAN=1
# shellcheck source=scripts/service.sh
source "$ROOT/scripts/service.sh"

runner_jar() {
  local jars=("$HOME_DIR"/apicurio-registry-app-*-runner.jar)
  [[ -f "${jars[0]}" ]] || die "no runner jar in ${HOME_DIR#"$ROOT"/} (delete it and install again)"
  echo "${jars[0]}"
}

# ---------------------------------------------------------------------------- install

cmd_install() {
  if ! installed "$HOME_DIR" >/dev/null; then
    fetch
  fi
  ensure_cds_archive
  echo "$HOME_DIR"
}

# Fetches and unpacks the release into HOME_DIR (the caller holds the install lock).
fetch() {
  local work archive
  work="$(mktemp -d)"
  # shellcheck disable=SC2064 # expand now: work is local
  trap "rm -rf '$work'" RETURN
  # The release's `all` archive is the built Quarkus application (runner jar + lib/), as
  # Apicurio's own container images ship it; Maven caches it in ~/.m2 and checks its checksum.
  echo "schema-registry: fetching Apicurio Registry $APICURIO_VERSION from Maven into ${HOME_DIR#"$ROOT"/}" >&2
  if ! mvn -q -B -C dependency:copy \
      -Dartifact="io.apicurio:apicurio-registry-app:$APICURIO_VERSION:tar.gz:all" \
      -DoutputDirectory="$work" >"$work/mvn.log" 2>&1; then
    tail -n 30 "$work/mvn.log" >&2
    die "could not fetch io.apicurio:apicurio-registry-app:$APICURIO_VERSION (tar.gz, all) with mvn"
  fi
  archive="$work/apicurio-registry-app-$APICURIO_VERSION-all.tar.gz"
  [[ -f "$archive" ]] || die "mvn left no $(basename "$archive")"
  rm -rf "$HOME_DIR.partial"
  mkdir -p "$HOME_DIR.partial"
  tar -xzf "$archive" -C "$HOME_DIR.partial" || die "cannot unpack $(basename "$archive")"
  rm -rf "$HOME_DIR"
  mv "$HOME_DIR.partial" "$HOME_DIR"
  runner_jar >/dev/null
  touch "$HOME_DIR/.complete"
}

# The class-data sharing archive for this JVM (AppCDS): the classes a start loads, stored once
# so that later starts map them instead of loading them (about half the start-up time).
cds_archive() {
  echo "$HOME_DIR/cds-$(java -version 2>&1 | cksum | cut -d' ' -f1).jsa"
}

# Makes the archive with a training start (a schema registered and read back) if this JVM has
# none yet. Without one the registry still runs, only slower to start.
ensure_cds_archive() {
  local archive work port pid
  archive="$(cds_archive)"
  # A JVM that could not make one is not asked again on every start.
  [[ -f "$archive" || -f "$archive.failed" ]] && return
  # Taken again (fd 8 reopened) when `installed` already holds it.
  exec 8>"$ROOT/.tools/.$SERVICE-install.lock"
  flock 8
  [[ -f "$archive" || -f "$archive.failed" ]] && return
  echo "schema-registry: a training start for the class-data archive (once per JVM)" >&2
  work="$(mktemp -d)"
  # shellcheck disable=SC2064 # expand now: work is local
  trap "rm -rf '$work'" RETURN
  for _ in $(seq 20); do
    port=$((20000 + RANDOM % 40000))
    port_open "$port" || break
  done
  (SCHEMA_REGISTRY_USER="" SCHEMA_REGISTRY_PASSWORD="" write_config "$work" "$port")
  (cd "$work" && exec "${JAVA_CMD[@]}" -XX:ArchiveClassesAtExit="$work/app.jsa" -jar "$(runner_jar)") \
    >"$work/training.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do
    service_ready "$port" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if service_ready "$port"; then
    local api="http://$HOST:$port$API_PATH" type="Content-Type: application/vnd.schemaregistry.v1+json"
    curl -sf -H "$type" -d '{"schema": "{\"type\": \"record\", \"name\": \"T\", \"fields\": [{\"name\": \"a\", \"type\": \"string\"}]}"}' \
      "$api/subjects/training-value/versions" >/dev/null || true
    curl -sf "$api/schemas/ids/1" >/dev/null || true
  fi
  # The archive is written as the JVM exits.
  kill "$pid" 2>/dev/null || true
  wait "$pid" || true
  if [[ -s "$work/app.jsa" ]]; then
    mv "$work/app.jsa" "$archive"
  else
    tail -n 20 "$work/training.log" >&2
    cp "$work/training.log" "$archive.failed"
    echo "schema-registry: warning: no class-data archive made (log: ${archive#"$ROOT"/}.failed;" \
      "delete it to try again); starts will be slower" >&2
  fi
}

# ---------------------------------------------------------------------------- run

write_config() {
  local dir="$1" port="$2" conf="$1/config/application.properties"
  mkdir -p "$dir/config"
  # Quarkus reads config/application.properties from the working directory: settings and
  # credentials stay off the command line.
  (
    umask 077
    cat >"$conf" <<EOF
quarkus.http.host=$HOST
quarkus.http.port=$port
# A development registry: no browser UI origins, quiet logs (no access log per request).
quarkus.http.cors=false
quarkus.http.access-log.enabled=false
quarkus.log.level=WARN
quarkus.log.category."io.quarkus".level=INFO
EOF
    if [[ -n "${SCHEMA_REGISTRY_USER:-}" || -n "${SCHEMA_REGISTRY_PASSWORD:-}" ]]; then
      [[ -n "${SCHEMA_REGISTRY_USER:-}" && -n "${SCHEMA_REGISTRY_PASSWORD:-}" ]] \
        || die "set both SCHEMA_REGISTRY_USER and SCHEMA_REGISTRY_PASSWORD, or neither"
      [[ "$SCHEMA_REGISTRY_USER" =~ ^[A-Za-z0-9._-]+$ ]] \
        || die "SCHEMA_REGISTRY_USER may hold letters, digits, '.', '_' and '-' only"
      # Quarkus would expand '${...}' and unescape '\\' in the value: keep it literal.
      [[ "$SCHEMA_REGISTRY_PASSWORD" =~ ^[^\$\\[:cntrl:]]+$ ]] \
        || die "SCHEMA_REGISTRY_PASSWORD may not hold '\$', '\\' or control characters"
      # Quarkus's embedded users (its properties-file identity provider) behind HTTP basic
      # auth, required on the APIs.
      cat >>"$conf" <<EOF
quarkus.http.auth.basic=true
quarkus.security.users.embedded.enabled=true
quarkus.security.users.embedded.plain-text=true
quarkus.security.users.embedded.users.$SCHEMA_REGISTRY_USER=$SCHEMA_REGISTRY_PASSWORD
quarkus.http.auth.permission.apis.paths=/apis/*
quarkus.http.auth.permission.apis.policy=authenticated
EOF
    fi
  )
}

cmd_run() {
  local dir="${1:-}" port="${2:-}"
  [[ -n "$dir" && -n "$port" ]] || usage
  check_port "$port"
  cmd_install >/dev/null
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  write_config "$dir" "$port"
  cd "$dir"
  local archive
  archive="$(cds_archive)"
  # The server must not inherit the install lock.
  exec 8>&-
  if [[ -f "$archive" ]]; then
    exec "${JAVA_CMD[@]}" -XX:SharedArchiveFile="$archive" -jar "$(runner_jar)"
  fi
  exec "${JAVA_CMD[@]}" -jar "$(runner_jar)"
}

# ---------------------------------------------------------------------------- background registry

# True once the registry answers its readiness check.
service_ready() {
  local answer
  answer="$(
    exec 2>/dev/null
    exec 3<>"/dev/tcp/$HOST/$1" || exit 1
    printf 'GET /health/ready HTTP/1.0\r\nHost: %s\r\n\r\n' "$HOST" >&3
    head -n 1 <&3
  )" || return 1
  [[ "$answer" == *" 200"* ]]
}

cmd_start() {
  local port="${1:-$DEFAULT_PORT}" started=$SECONDS
  check_port "$port"
  cmd_install >/dev/null
  if ! service_start "${BASH_SOURCE[0]}" "$port" "$READY_TIMEOUT_S"; then
    echo "schema-registry: already running at http://$HOST:$port$API_PATH (pid $STARTED_PID)"
    return 0
  fi
  echo "schema-registry: Apicurio Registry $APICURIO_VERSION ready at http://$HOST:$port$API_PATH" \
    "in $((SECONDS - started))s (pid $STARTED_PID, log ${RUN#"$ROOT"/}/schema-registry-$port.log)"
}

cmd_stop() {
  local port="${1:-$DEFAULT_PORT}"
  check_port "$port"
  service_stop "$port" 10
}

cmd_status() {
  local port="${1:-$DEFAULT_PORT}"
  check_port "$port"
  service_status "$port" "at http://$HOST:$port$API_PATH"
}

main() {
  local cmd="${1:-}"
  [[ $# -gt 0 ]] && shift
  case "$cmd" in
    install) cmd_install "$@" ;;
    run) cmd_run "$@" ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    url) check_port "${1:-$DEFAULT_PORT}"; echo "http://$HOST:${1:-$DEFAULT_PORT}$API_PATH" ;;
    *) usage ;;
  esac
}

main "$@"
