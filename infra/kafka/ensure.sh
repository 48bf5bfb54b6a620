#!/usr/bin/env bash
# Makes sure an Apache Kafka broker answers on 127.0.0.1:$JIAYI_KAFKA_PORT (default 59092).
# If one already answers, prints its address and exits. Otherwise fetches the broker's jars from
# Maven Central once (cached outside the work tree), writes a single-node KRaft config into the
# data dir, formats the storage on first use, starts the broker in the background and waits
# until it serves requests. Prints `127.0.0.1:<port>` on stdout; all progress goes to stderr.
# When it started the broker it leaves <data dir>/started-by-ensure, so a caller knows to run
# stop.sh afterwards.
#
# Env: JIAYI_KAFKA_PORT (59092), JIAYI_KAFKA_CONTROLLER_PORT (59093),
#      JIAYI_KAFKA_DIR (<repo>/var/kafka), JIAYI_CACHE_DIR (${XDG_CACHE_HOME:-~/.cache}/jiayi),
#      JIAYI_KAFKA_HEAP (1g), JIAYI_KAFKA_START_TIMEOUT (90, seconds), JAVA (java), MVN (mvn).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"

if kafka_answers "$port"; then
  echo "127.0.0.1:$port"
  exit 0
fi

mkdir -p "$dir"
# One ensure at a time per data dir: a second one waits here, then finds the broker answering.
exec 9>"$dir/.ensure.lock"
if ! flock -w $((start_timeout + 300)) 9; then
  die "another ensure.sh holds $dir/.ensure.lock"
fi
if kafka_answers "$port"; then
  echo "127.0.0.1:$port"
  exit 0
fi

pid=$(broker_pid || true)
if [ -n "$pid" ]; then
  # Ours, but not answering yet (still starting, or hung): wait for it like a fresh start.
  log "broker from $dir already running (pid $pid), waiting for it"
else
  if port_open "$port"; then
    die "something that is not a Kafka broker listens on 127.0.0.1:$port (set JIAYI_KAFKA_PORT)"
  fi
  if port_open "$cport"; then
    die "127.0.0.1:$cport (controller port) is in use (set JIAYI_KAFKA_CONTROLLER_PORT)"
  fi
  rm -f "$pidfile" "$marker"

  need_java
  fetch_libs

  mkdir -p "$dir/data" "$dir/logs"
  write_config

  if [ ! -f "$dir/data/meta.properties" ]; then
    cluster_id=$("$JAVA" -cp "$libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
    log "formatting storage in $dir/data (cluster id $cluster_id)"
    "$JAVA" -Dlog4j2.configurationFile="$here/log4j2.xml" -Dkafka.logs.dir="$dir/logs" \
      -cp "$libs/*" kafka.tools.StorageTool format -t "$cluster_id" \
      -c "$dir/server.properties" --standalone >&2
  fi

  # The previous run's log would already hold the "started" line that readiness looks for.
  [ -f "$dir/logs/server.log" ] && mv -f "$dir/logs/server.log" "$dir/logs/server.log.prev"
  log "starting Kafka $kafka_version on 127.0.0.1:$port (controller :$cport, data $dir)"
  # setsid: own session, so the broker outlives the caller's shell and its Ctrl-C.
  # 9>&-: the broker must not inherit (and so hold) the ensure lock.
  # The inner shell writes its own pid and then becomes the JVM (exec), so the pid is java's.
  setsid nohup bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$pidfile" \
    "$JAVA" -Xms256m -Xmx"$heap" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$here/log4j2.xml" -Dkafka.logs.dir="$dir/logs" \
    -cp "$libs/*" kafka.Kafka "$dir/server.properties" \
    </dev/null >"$dir/logs/kafka.out" 2>&1 9>&- &
  for _ in $(seq 50); do [ -s "$pidfile" ] && break; sleep 0.1; done
  pid=$(cat "$pidfile")
  date -u +%Y-%m-%dT%H:%M:%SZ >"$marker"
fi

t0=$SECONDS
while :; do
  if ! alive "$pid"; then
    log "broker (pid $pid) exited during startup; last lines of its logs:"
    show_log_tail
    rm -f "$pidfile" "$marker"
    exit 1
  fi
  # Ready = the started line is logged and the broker answers an ApiVersions request.
  if grep -qs "Kafka Server started" "$dir/logs/server.log" && kafka_answers "$port"; then
    break
  fi
  if [ $((SECONDS - t0)) -ge "$start_timeout" ]; then
    log "broker not ready after ${start_timeout}s; stopping it. Last lines of its logs:"
    show_log_tail
    "$here/stop.sh" || true
    exit 1
  fi
  sleep 0.5
done
log "ready on 127.0.0.1:$port after $((SECONDS - t0))s"
echo "127.0.0.1:$port"
