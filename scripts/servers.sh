#!/usr/bin/env bash
# Real broker servers for Orrery's transport tests, installed and run by the project itself.
#
#   scripts/servers.sh install|start|stop|restart|status|env [--keep] [--for PID] [NAME...]
#
# NAME is redis, redis-spare, nats, nats-spare, kafka, kafka-spare or all (the default:
# every one but the spares).
# Every server binds 127.0.0.1 only,
# on ports no one else uses by default (never Redis's 6379 or NATS's 4222):
#   redis         16379  Debian's redis-server; AOF on, fsync on every write, no RDB snapshots
#   redis-spare   16380  the same, for a test that restarts its server (the shared one must stay up)
#   nats          14222  nats-server, JetStream (default sync), HTTP monitor 18222, WebSocket 18443 (no TLS)
#   nats-spare    14224  the same, fsyncing every write (HTTP 18224, no WebSocket), for a test that
#                        stops, kills or restarts its server
#   kafka         19092  Apache Kafka, single-node KRaft (controller on 19093), -Xmx512m; on 19096 a
#                        SASL_PLAINTEXT listener (PLAIN and SCRAM users, scripts/servers/kafka.properties)
#   kafka-spare   19094  the same (controller on 19095, SASL on 19097), for a test that stops, kills or
#                        restarts its broker
#
# install   puts each server where start finds it; checks first, so it is a fast no-op when current.
#           redis comes from Debian (scripts/setup.sh installs the package); nats-server and the `nats`
#           CLI are built with `go install` and Kafka's jars resolved with Maven, both into
#           ${ORRERY_SERVER_CACHE:-$HOME/.cache/orrery/servers}, outside the clone so a fresh clone
#           (CI) reuses them.
# start     runs each named server in the background, its files under target/servers/<name>/ (data/,
#           server.log, config); the data is wiped first unless --keep. Waits until the server
#           answers; if it dies or does not answer in time, prints its log's tail and fails.
#           A server already running is left as it is. The ports are the machine's, so what says
#           which servers run (pid files, users, a lock) is the machine's too:
#           ${ORRERY_SERVER_STATE:-/tmp/orrery-servers-<uid>}; a server started from another
#           clone is seen, used and stopped from this one alike.
# stop      SIGTERM, up to 15 s to exit, then SIGKILL.
# --for PID (start and stop) shares servers between test runs: `start --for PID` counts the
#           process PID as a user of each server it starts, or joins one an earlier `--for` start
#           left running; `stop --for PID` drops PID (and any user no longer alive) and stops only
#           servers so started that have no user left. A server started without --for is never
#           stopped by `stop --for`. (Used by the vitest global setup; plain stop stops regardless.)
# restart   stop, then start keeping the data (tests of a server restarted mid-stream).
# status    one line per server; exits non-zero if a server named on the command line is not running.
# env       the URLs of the named servers as NAME=value lines (the variables the tests read when
#           ORRERY_SERVERS=external, see test/transports/global-setup.ts).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

CACHE="${ORRERY_SERVER_CACHE:-$HOME/.cache/orrery/servers}"
RUN_DIR="$ROOT/target/servers"
STATE_DIR="${ORRERY_SERVER_STATE:-${TMPDIR:-/tmp}/orrery-servers-$(id -u)}"
CONF_DIR="$ROOT/scripts/servers"
ALL=(redis nats kafka)

NATS_SERVER_VERSION=v2.15.2
NATS_CLI_VERSION=v0.5.0
GO_MIN=1.26.0 # the go line of both modules' go.mod
KAFKA_VERSION=4.4.0
KAFKA_HOME="$CACHE/kafka-$KAFKA_VERSION"
# Pinned so every machine resolves the jars with the same plugin (Maven would pick one otherwise).
MAVEN_DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1

port_of() {
  case "$1" in
    redis) echo 16379 ;; redis-spare) echo 16380 ;; nats) echo 14222 ;; nats-spare) echo 14224 ;; kafka) echo 19092 ;; kafka-spare) echo 19094 ;;
  esac
}
# How long start waits for a server to answer (Kafka takes about 10 s on 2 cores).
start_timeout_of() {
  case "$1" in kafka | kafka-spare) echo 90 ;; *) echo 20 ;; esac
}
# A word of the process's command line: a pid file whose pid now belongs to another program is stale.
cmdline_mark_of() {
  case "$1" in redis | redis-spare) echo redis-server ;; nats | nats-spare) echo nats-server ;; kafka | kafka-spare) echo kafka.Kafka ;; esac
}

die() {
  echo "servers.sh: $*" >&2
  exit 1
}

port_open() {
  timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# The server's pid if it is running (checked against /proc, so a zombie or a reused pid is not).
running_pid() {
  local name="$1" pid cmdline
  pid=$(cat "$STATE_DIR/$name.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] || return 1
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ "$cmdline" == *"$(cmdline_mark_of "$name")"* ]] || return 1
  echo "$pid"
}

log_tail() {
  echo "---- last lines of $1 ----" >&2
  tail -n 40 "$1" >&2 2>/dev/null || true
  echo "----" >&2
}

elapsed_since() {
  awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'
}

# Where the running server keeps its files (this clone's target/servers/<name>, or another's).
files_of() { cat "$STATE_DIR/$1.dir" 2>/dev/null || echo "$RUN_DIR/$1"; }

# The users of a server started with --for, one pid a line.
users_file() { echo "$STATE_DIR/$1.users"; }
live_users() { # prints the users still alive
  local pid
  while read -r pid; do
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
  done 2>/dev/null <"$(users_file "$1")" || true
}
add_user() {
  local file
  file=$(users_file "$1")
  { live_users "$1"; echo "$2"; } | sort -u >"$file.tmp"
  mv "$file.tmp" "$file"
}

# ---------------------------------------------------------------------------------------------- install

install_redis() {
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null ||
    die "redis-server is not installed: scripts/setup.sh installs Debian's redis-server package"
}

go_cmd() {
  if command -v go >/dev/null; then command -v go
  elif [ -x /usr/local/go/bin/go ]; then echo /usr/local/go/bin/go
  else return 1; fi
}

install_nats() {
  if [ "$("$CACHE/bin/nats-server" --version 2>/dev/null)" = "nats-server: $NATS_SERVER_VERSION" ] &&
    [ "$("$CACHE/bin/nats" --version 2>/dev/null)" = "$NATS_CLI_VERSION" ]; then
    return
  fi
  local go version
  # Debian bookworm's golang-go is 1.19, too old for these modules: the machine's Go (go.dev's
  # build in /usr/local/go) is used, and refused by name when missing or too old.
  go=$(go_cmd) || die "Go >= $GO_MIN is needed to build nats-server (go.dev/dl, unpacked in /usr/local/go); none found"
  version=$("$go" env GOVERSION)
  version=${version#go}
  [ "$(printf '%s\n%s\n' "$GO_MIN" "$version" | sort -V | head -n 1)" = "$GO_MIN" ] ||
    die "Go >= $GO_MIN is needed to build nats-server; $go is $version"
  echo "building nats-server $NATS_SERVER_VERSION and nats $NATS_CLI_VERSION with $go ($version) into $CACHE/bin (about 1.5 min, once per machine)"
  local t0 gotmp
  t0=$(date +%s.%N)
  gotmp="$CACHE/go-tmp"
  rm -rf "$gotmp"
  mkdir -p "$CACHE/bin" "$gotmp"
  # Module and build caches of their own, removed afterwards: the cache keeps only the binaries.
  # GOTOOLCHAIN=local: build with this Go rather than download the toolchain a go.mod suggests.
  (
    export GOBIN="$CACHE/bin" GOMODCACHE="$gotmp/mod" GOCACHE="$gotmp/build" GOTOOLCHAIN=local \
      GOFLAGS="-modcacherw -buildvcs=false" CGO_ENABLED=0
    "$go" install "github.com/nats-io/nats-server/v2@$NATS_SERVER_VERSION"
    "$go" install "github.com/nats-io/natscli/nats@$NATS_CLI_VERSION"
  )
  rm -rf "$gotmp"
  [ "$("$CACHE/bin/nats-server" --version 2>/dev/null)" = "nats-server: $NATS_SERVER_VERSION" ] ||
    die "nats-server $NATS_SERVER_VERSION did not build (found: $("$CACHE/bin/nats-server" --version 2>&1 || true))"
  echo "nats-server and nats built in $(elapsed_since "$t0") s"
}

install_kafka() {
  local pom="$CONF_DIR/kafka-pom.xml" want
  want=$(sha256sum "$pom" | cut -d' ' -f1)
  if [ "$(cat "$KAFKA_HOME/pom.sha256" 2>/dev/null)" = "$want" ] && [ -s "$KAFKA_HOME/cluster-id" ]; then
    return
  fi
  command -v java >/dev/null || die "java is not installed: scripts/setup.sh installs Debian's openjdk-17-jre-headless"
  command -v mvn >/dev/null || die "mvn is not installed: scripts/setup.sh installs Debian's maven"
  local major
  major=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
  [ "${major:-0}" -ge 17 ] 2>/dev/null || die "Kafka $KAFKA_VERSION needs Java >= 17; java is ${major:-unknown}"
  echo "resolving Kafka $KAFKA_VERSION's jars with Maven into $KAFKA_HOME (about 15 s, once per machine)"
  local t0
  t0=$(date +%s.%N)
  mkdir -p "$KAFKA_HOME"
  rm -rf "$KAFKA_HOME/libs" "$KAFKA_HOME/libs.tmp" "$KAFKA_HOME/pom.sha256"
  # Maven's own repository in the cache too, so nothing outside it is written.
  mvn -q -B -Dstyle.color=never -f "$pom" -Dmaven.repo.local="$CACHE/m2" \
    "$MAVEN_DEPENDENCY_PLUGIN:copy-dependencies" -DincludeScope=runtime -DoutputDirectory="$KAFKA_HOME/libs.tmp"
  mv "$KAFKA_HOME/libs.tmp" "$KAFKA_HOME/libs"
  # A fixed cluster id per machine: `start` formats fresh data with it (KRaft needs one).
  if [ ! -s "$KAFKA_HOME/cluster-id" ]; then
    java -cp "$KAFKA_HOME/libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1 >"$KAFKA_HOME/cluster-id.tmp"
    [ -s "$KAFKA_HOME/cluster-id.tmp" ] || die "kafka.tools.StorageTool random-uuid printed nothing"
    mv "$KAFKA_HOME/cluster-id.tmp" "$KAFKA_HOME/cluster-id"
  fi
  echo "$want" >"$KAFKA_HOME/pom.sha256"
  echo "Kafka jars resolved in $(elapsed_since "$t0") s ($(ls "$KAFKA_HOME/libs" | wc -l) jars)"
}

install_one() {
  case "$1" in
    redis | redis-spare) install_redis ;;
    nats | nats-spare) install_nats ;;
    kafka | kafka-spare) install_kafka ;;
  esac
}

# ------------------------------------------------------------------------------------------------ start

# Fills the template's @DATA@ with the server's data folder.
write_config() { # write_config <template> <output> <data dir>
  sed "s|@DATA@|$3|g" "$1" >"$2"
}

# Ready means answering, not just listening: redis answers PING (not LOADING) once its AOF is read.
ready() {
  local name="$1"
  case "$name" in
    redis | redis-spare) [ "$(redis-cli -p "$(port_of "$name")" ping 2>/dev/null)" = PONG ] ;;
    nats) curl -sf http://127.0.0.1:18222/healthz >/dev/null ;;
    nats-spare) curl -sf http://127.0.0.1:18224/healthz >/dev/null ;;
    # The port opens a moment before the broker serves; its log says when it has started.
    kafka | kafka-spare) port_open "$(port_of "$name")" && grep -q 'Kafka Server started' "$(files_of "$name")/server.log" ;;
  esac
}

start_one() {
  local name="$1" keep="$2" user="$3" dir="${4:-$RUN_DIR/$1}" port pid t0 deadline
  port=$(port_of "$name")
  if pid=$(running_pid "$name"); then
    # Joined only if it was started for a test run; one started by hand stays the user's.
    if [ -n "$user" ] && [ -f "$(users_file "$name")" ]; then add_user "$name" "$user"; fi
    echo "$name already running (pid $pid, 127.0.0.1:$port, files in $(files_of "$name"))"
    return
  fi
  rm -f "$(users_file "$name")"
  install_one "$name"
  if port_open "$port"; then
    die "$name: 127.0.0.1:$port is taken by a process that is not this script's server: $(ss -ltnpH "sport = :$port" 2>/dev/null | head -n 1)"
  fi
  t0=$(date +%s.%N)
  [ "$keep" = 1 ] || rm -rf "$dir"
  mkdir -p "$dir/data"
  # One log per run (readiness reads it; a kept one would say "started" at once): the last is kept.
  [ ! -f "$dir/server.log" ] || mv "$dir/server.log" "$dir/server.log.prev"
  rm -f "$STATE_DIR/$name.pid" "$STATE_DIR/$name.dir"
  local cmd=()
  case "$name" in
    redis | redis-spare)
      # RDB snapshots off (--save ''), the AOF fsynced before each write is acknowledged.
      cmd=(redis-server --bind 127.0.0.1 --port "$port" --dir "$dir/data" --save '' --appendonly yes
        --appendfsync always --daemonize no --logfile '')
      ;;
    nats | nats-spare)
      write_config "$CONF_DIR/$name.conf" "$dir/nats.conf" "$dir/data"
      cmd=("$CACHE/bin/nats-server" -c "$dir/nats.conf")
      ;;
    kafka | kafka-spare)
      write_config "$CONF_DIR/kafka.properties" "$dir/server.properties" "$dir/data"
      # The spare is the shared broker's config on ports of its own.
      [ "$name" != kafka-spare ] || sed -i 's/:19092/:19094/g; s/:19093/:19095/g; s/:19096/:19097/g' "$dir/server.properties"
      if [ ! -f "$dir/data/meta.properties" ]; then
        # The SCRAM users of the SASL listener (see kafka.properties) are written with the metadata.
        java -cp "$KAFKA_HOME/libs/*" kafka.tools.StorageTool format --standalone \
          -t "$(cat "$KAFKA_HOME/cluster-id")" -c "$dir/server.properties" \
          -S 'SCRAM-SHA-256=[name=orrery-scram256,password=scram256-s3cret]' \
          -S 'SCRAM-SHA-512=[name=orrery-scram512,password=scram512-s3cret]' >"$dir/format.log" 2>&1 ||
          {
            log_tail "$dir/format.log"
            die "kafka: formatting $dir/data failed"
          }
      fi
      cmd=(java -Xmx512m -Xms256m -Dorg.slf4j.simpleLogger.showDateTime=true
        -cp "$KAFKA_HOME/libs/*" kafka.Kafka "$dir/server.properties")
      ;;
  esac
  # Its own session: the server outlives this script and a Ctrl-C in the terminal that ran it;
  # stop ends it by its pid.
  # 9>&-: the server must not inherit this script's lock (it would hold it for its whole life).
  setsid "${cmd[@]}" >>"$dir/server.log" 2>&1 </dev/null 9>&- &
  pid=$!
  echo "$dir" >"$STATE_DIR/$name.dir"
  echo "$pid" >"$STATE_DIR/$name.pid"
  if [ -n "$user" ]; then add_user "$name" "$user"; fi
  deadline=$(($(date +%s) + $(start_timeout_of "$name")))
  until ready "$name"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log_tail "$dir/server.log"
      die "$name exited while starting (see $dir/server.log)"
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      kill -KILL "$pid" 2>/dev/null || true
      log_tail "$dir/server.log"
      die "$name did not answer on 127.0.0.1:$port within $(start_timeout_of "$name") s (killed; see $dir/server.log)"
    fi
    sleep 0.1
  done
  echo "$name up on 127.0.0.1:$port in $(elapsed_since "$t0") s (pid $pid, files in ${dir#"$ROOT"/})"
}

# ------------------------------------------------------------------------------------------------- stop

stop_one() {
  local name="$1" user="$2" pid t0 i
  if [ -n "$user" ]; then
    [ -f "$(users_file "$name")" ] || return 0
    live_users "$name" | grep -vx -- "$user" >"$(users_file "$name").tmp" || true
    mv "$(users_file "$name").tmp" "$(users_file "$name")"
    if [ -s "$(users_file "$name")" ]; then
      echo "$name left running: still used by pid $(paste -sd, "$(users_file "$name")")"
      return
    fi
  fi
  rm -f "$(users_file "$name")"
  if ! pid=$(running_pid "$name"); then
    rm -f "$STATE_DIR/$name.pid" "$STATE_DIR/$name.dir"
    return
  fi
  t0=$(date +%s.%N)
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do
    running_pid "$name" >/dev/null || break
    sleep 0.1
  done
  if running_pid "$name" >/dev/null; then
    echo "$name did not exit 15 s after SIGTERM: SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      running_pid "$name" >/dev/null || break
      sleep 0.1
    done
  fi
  rm -f "$STATE_DIR/$name.pid" "$STATE_DIR/$name.dir"
  echo "$name stopped in $(elapsed_since "$t0") s"
}

# ----------------------------------------------------------------------------------------- status, env

status_one() {
  local name="$1" pid
  if pid=$(running_pid "$name"); then
    local users files
    users=$(live_users "$name" | paste -sd, -)
    files=$(files_of "$name")
    [ "$files" != "$RUN_DIR/$name" ] || files=
    printf '%-13s running  pid %-8s 127.0.0.1:%s%s%s\n' "$name" "$pid" "$(port_of "$name")" \
      "${users:+ for test runs (pid $users)}" "${files:+, files in $files}"
  else
    printf '%-13s stopped\n' "$name"
    return 1
  fi
}

env_one() {
  case "$1" in
    redis) echo "ORRERY_REDIS_URL=redis://127.0.0.1:16379" ;;
    redis-spare) echo "ORRERY_REDIS_SPARE_URL=redis://127.0.0.1:16380" ;;
    nats)
      echo "ORRERY_NATS_URL=nats://127.0.0.1:14222"
      echo "ORRERY_NATS_WS_URL=ws://127.0.0.1:18443"
      ;;
    nats-spare) echo "ORRERY_NATS_SPARE_URL=nats://127.0.0.1:14224" ;;
    kafka)
      echo "ORRERY_KAFKA_BROKERS=127.0.0.1:19092"
      echo "ORRERY_KAFKA_SASL_BROKERS=127.0.0.1:19096"
      ;;
    kafka-spare) echo "ORRERY_KAFKA_SPARE_BROKERS=127.0.0.1:19094" ;;
  esac
}

# ------------------------------------------------------------------------------------------------- main

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
}

[ $# -ge 1 ] || usage
command="$1"
shift
keep=0
user=
names=()
while [ $# -gt 0 ]; do
  arg="$1"
  shift
  case "$arg" in
    --keep) keep=1 ;;
    --for)
      user="${1:-}"
      shift || true
      [[ "$user" =~ ^[0-9]+$ ]] || die "--for takes a process id"
      ;;
    all) names+=("${ALL[@]}") ;;
    redis | redis-spare | nats | nats-spare | kafka | kafka-spare) names+=("$arg") ;;
    *) die "unknown server or option: $arg (servers: ${ALL[*]} redis-spare nats-spare kafka-spare, all)" ;;
  esac
done
explicit=${#names[@]}
[ ${#names[@]} -gt 0 ] || names=("${ALL[@]}")

# start, stop and restart take turns: two test runs starting redis at once must not both start it.
case "$command" in
  start | stop | restart)
    mkdir -p "$RUN_DIR" "$STATE_DIR"
    exec 9>"$STATE_DIR/lock"
    flock 9
    ;;
esac
case "$command" in
  install) for n in "${names[@]}"; do install_one "$n"; done ;;
  start) for n in "${names[@]}"; do start_one "$n" "$keep" "$user"; done ;;
  stop) for n in "${names[@]}"; do stop_one "$n" "$user"; done ;;
  restart)
    # The users of a shared server stay its users across the restart.
    # A server started from another clone restarts on that clone's data.
    for n in "${names[@]}"; do
      files=$(files_of "$n")
      [ ! -f "$(users_file "$n")" ] || cp "$(users_file "$n")" "$(users_file "$n").keep"
      stop_one "$n" ""
      start_one "$n" 1 "" "$files"
      [ ! -f "$(users_file "$n").keep" ] || mv "$(users_file "$n").keep" "$(users_file "$n")"
    done
    ;;
  status)
    down=0
    for n in "${names[@]}"; do status_one "$n" || down=1; done
    # Without names it is a report; with names, a check.
    [ "$explicit" -eq 0 ] || exit "$down"
    ;;
  env) for n in "${names[@]}"; do env_one "$n"; done ;;
  *) usage ;;
esac
