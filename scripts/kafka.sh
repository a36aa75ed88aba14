#!/usr/bin/env bash
# Apache Kafka for development, the demo, the tests and the benchmarks: a single-node KRaft
# broker (broker and controller in one JVM) run from the official Maven jars, on loopback.
#
#   scripts/kafka.sh install                    fetch the jars (cached in .tools/kafka-VERSION/)
#   scripts/kafka.sh start [PORT]               background broker for the demo (default 9092),
#                                               data in .tools/run/kafka-PORT/ (kept across stops)
#   scripts/kafka.sh stop [PORT]
#   scripts/kafka.sh status [PORT]              exit 1 if not running
#   scripts/kafka.sh create-topic NAME [PARTITIONS] [PORT]
#   scripts/kafka.sh run DIR PORT [--secure]    format DIR if new, then run the broker in the
#                                               foreground (what the tests start)
#
# `run --secure` adds two listeners beside PLAINTEXT on PORT: SASL_PLAINTEXT with
# SCRAM-SHA-512 on PORT+1 (user `freshet`, password `freshet-secret`) and SSL on PORT+2 with a
# certificate signed by a CA made for DIR (DIR/tls/ca.pem). The controller listens on PORT+3.
#
# KAFKA_ADVERTISED_PORT (with `run`) advertises another port for the plain listener (a proxy
# in front of the broker, in the network-fault tests).
# Needs Java 17+ and Maven (`mvn`); the jars come from Maven Central once, then from the cache.
# Set KAFKA_VERSION to try another 4.x release, KAFKA_HEAP (default 1g) for the broker's heap.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KAFKA_VERSION="${KAFKA_VERSION:-4.1.1}"
LOG4J_VERSION="2.24.3"
LIBS="$ROOT/.tools/kafka-$KAFKA_VERSION/libs"
RUN="$ROOT/.tools/run"
HOST=127.0.0.1
DEFAULT_PORT=9092
READY_TIMEOUT_S=60
SCRAM_USER=freshet
SCRAM_PASSWORD=freshet-secret

SERVICE=kafka
SERVICE_CMDLINE=kafka.Kafka
# The plain, SASL and SSL listeners and the controller.
PORT_SPAN=4
# shellcheck source=scripts/service.sh
source "$ROOT/scripts/service.sh"

# ---------------------------------------------------------------------------- install

cmd_install() {
  installed "$LIBS" && return
  local work
  work="$(mktemp -d)"
  # shellcheck disable=SC2064 # expand now: work is local
  trap "rm -rf '$work'" RETURN
  # The broker (kafka_2.13), its command-line tools, and a log4j binding for slf4j so the
  # broker's log reaches its log file.
  cat >"$work/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.freshet</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
EOF
  echo "kafka: fetching Apache Kafka $KAFKA_VERSION jars from Maven into ${LIBS#"$ROOT"/}" >&2
  rm -rf "$LIBS.partial"
  if ! mvn -q -B -f "$work/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$LIBS.partial" >"$work/mvn.log" 2>&1; then
    tail -n 30 "$work/mvn.log" >&2
    die "could not fetch the Kafka jars with mvn"
  fi
  ls "$LIBS.partial"/kafka_2.13-*.jar >/dev/null 2>&1 || die "no kafka_2.13 jar after mvn"
  rm -rf "$LIBS"
  mv "$LIBS.partial" "$LIBS"
  touch "$LIBS/.complete"
  echo "$LIBS"
}

# ---------------------------------------------------------------------------- run

java_cmd() {
  local dir="$1"
  shift
  # Serial GC and a small initial heap: a single test broker, not a production node.
  exec_java=(java "-Xmx${KAFKA_HEAP:-1g}" -Xms256m -XX:+UseSerialGC
    -Dlog4j2.configurationFile="$dir/log4j2.properties"
    -cp "$LIBS/*" "$@")
}

write_tls() {
  # A CA made for this broker's directory and a server certificate for 127.0.0.1/localhost.
  local tls="$1/tls"
  [[ -f "$tls/server.pem" ]] && return
  command -v openssl >/dev/null || die "openssl not found (needed for --secure)"
  mkdir -p "$tls"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=freshet test CA" \
    -keyout "$tls/ca.key" -out "$tls/ca.pem" >/dev/null 2>&1
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$tls/server.key" -out "$tls/server.csr" >/dev/null 2>&1
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$tls/san.ext"
  openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
    -CAcreateserial -days 3650 -extfile "$tls/san.ext" -out "$tls/server.crt" >/dev/null 2>&1
  # Kafka's PEM key store: the key (PKCS#8, unencrypted) followed by the chain.
  openssl pkcs8 -topk8 -nocrypt -in "$tls/server.key" -out "$tls/server.p8" >/dev/null 2>&1
  cat "$tls/server.p8" "$tls/server.crt" "$tls/ca.pem" >"$tls/server.pem"
}

write_config() {
  local dir="$1" port="$2" secure="$3" controller listeners advertised protocols
  controller=$((port + 3))
  listeners="PLAINTEXT://$HOST:$port,CONTROLLER://$HOST:$controller"
  advertised="PLAINTEXT://$HOST:${KAFKA_ADVERTISED_PORT:-$port}"
  protocols="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
  if [[ "$secure" == 1 ]]; then
    listeners="PLAINTEXT://$HOST:$port,SASL_PLAINTEXT://$HOST:$((port + 1)),SSL://$HOST:$((port + 2)),CONTROLLER://$HOST:$controller"
    advertised="PLAINTEXT://$HOST:${KAFKA_ADVERTISED_PORT:-$port},SASL_PLAINTEXT://$HOST:$((port + 1)),SSL://$HOST:$((port + 2))"
    protocols="$protocols,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL"
  fi
  cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$controller
controller.listener.names=CONTROLLER
listeners=$listeners
advertised.listeners=$advertised
listener.security.protocol.map=$protocols
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# Compaction soon after a segment rolls (the compacted-topic tests wait for it).
log.cleaner.backoff.ms=500
# Deleted topics' files go at once (tests delete and recreate topics).
file.delete.delay.ms=1000
log.segment.delete.delay.ms=1000
EOF
  if [[ "$secure" == 1 ]]; then
    cat >>"$dir/server.properties" <<EOF
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PEM
ssl.keystore.location=$dir/tls/server.pem
ssl.client.auth=none
EOF
  fi
  cat >"$dir/log4j2.properties" <<'EOF'
rootLogger.level=INFO
rootLogger.appenderRef.out.ref=OUT
appender.out.type=Console
appender.out.name=OUT
appender.out.layout.type=PatternLayout
appender.out.layout.pattern=[%d] %p %m (%c)%n
logger.kafka.name=kafka
logger.kafka.level=WARN
logger.apache.name=org.apache
logger.apache.level=WARN
logger.state.name=state.change.logger
logger.state.level=WARN
EOF
}

cmd_run() {
  local dir="${1:-}" port="${2:-}" secure=0
  [[ -n "$dir" && -n "$port" ]] || usage
  [[ "${3:-}" == "--secure" ]] && secure=1
  check_port "$port"
  cmd_install >/dev/null
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  [[ "$secure" == 1 ]] && write_tls "$dir"
  write_config "$dir" "$port" "$secure"
  if [[ ! -f "$dir/data/meta.properties" ]]; then
    local format=(kafka.tools.StorageTool format --config "$dir/server.properties"
      --cluster-id "freshet-test-cluster0" --ignore-formatted)
    if [[ "$secure" == 1 ]]; then
      format+=(--add-scram "SCRAM-SHA-512=[name=$SCRAM_USER,password=$SCRAM_PASSWORD]")
    fi
    java_cmd "$dir" "${format[@]}"
    "${exec_java[@]}" >"$dir/format.log" 2>&1 || { cat "$dir/format.log" >&2; die "formatting $dir failed"; }
  fi
  java_cmd "$dir" kafka.Kafka "$dir/server.properties"
  # The broker must not inherit the install lock.
  exec 8>&-
  exec "${exec_java[@]}"
}

# ---------------------------------------------------------------------------- background broker

service_ready() {
  port_open "$1"
}

topics_cmd() {
  java_cmd "$RUN" org.apache.kafka.tools.TopicCommand --bootstrap-server "$HOST:$1" "${@:2}"
  "${exec_java[@]}"
}

cmd_start() {
  local port="${1:-$DEFAULT_PORT}"
  check_port "$port"
  cmd_install >/dev/null
  if ! service_start "${BASH_SOURCE[0]}" "$port" "$READY_TIMEOUT_S"; then
    echo "kafka: already running on $HOST:$port (pid $STARTED_PID)"
    return 0
  fi
  echo "kafka: Apache Kafka $KAFKA_VERSION started on $HOST:$port (pid $STARTED_PID, log ${RUN#"$ROOT"/}/kafka-$port.log)"
}

cmd_stop() {
  local port="${1:-$DEFAULT_PORT}"
  check_port "$port"
  # A controlled shutdown takes a few seconds; then it is killed.
  service_stop "$port" 15
}

cmd_status() {
  local port="${1:-$DEFAULT_PORT}"
  check_port "$port"
  service_status "$port" "on $HOST:$port"
}

cmd_create_topic() {
  local name="${1:-}" partitions="${2:-1}" port="${3:-$DEFAULT_PORT}" out
  [[ -n "$name" ]] || usage
  [[ "$partitions" =~ ^[1-9][0-9]*$ ]] || die "bad partition count: $partitions"
  check_port "$port"
  port_open "$port" || die "no broker on $HOST:$port (start one: scripts/kafka.sh start $port)"
  cmd_install >/dev/null
  mkdir -p "$RUN"
  [[ -f "$RUN/log4j2.properties" ]] || printf 'rootLogger.level=ERROR\n' >"$RUN/log4j2.properties"
  if out="$(topics_cmd "$port" --create --if-not-exists --topic "$name" --partitions "$partitions" 2>&1)"; then
    echo "kafka: topic $name ($partitions partitions) ready"
  else
    echo "$out" >&2
    die "could not create topic $name on $HOST:$port"
  fi
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
    create-topic) cmd_create_topic "$@" ;;
    *) usage ;;
  esac
}

main "$@"
