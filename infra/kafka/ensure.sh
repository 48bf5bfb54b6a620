#!/usr/bin/env bash
# Makes sure an Apache Kafka broker answers on 127.0.0.1:$JIAYI_KAFKA_PORT (default 59092).
# If one already answers, prints its address and exits. Otherwise fetches the broker's jars from
# Maven Central once (cached outside the work tree), writes a single-node KRaft config into the
# data dir, formats the storage on first use, starts the broker in the background and waits
# until it serves requests. Prints `127.0.0.1:<port>` on stdout; all progress goes to stderr.
# When it started the broker it leaves <data dir>/started-by-ensure, so a caller knows to run
# stop.sh afterwards.
#
# The client listener is SASL_PLAINTEXT with SCRAM-SHA-512, ACLs enforced (StandardAuthorizer,
# nothing allowed without an ACL). The super user jiayi-admin's password is generated once into
# <data dir>/admin.password (mode 600); it is printed nowhere.
#
# Env: JIAYI_KAFKA_PORT (59092), JIAYI_KAFKA_CONTROLLER_PORT (59093),
#      JIAYI_KAFKA_BROKER_PORT (59094, inter-broker listener),
#      JIAYI_KAFKA_SSL_PORT + JIAYI_KAFKA_SSL_KEYSTORE (optional SASL_SSL listener, PEM keystore),
#      JIAYI_KAFKA_DIR (<repo>/var/kafka), JIAYI_CACHE_DIR (${XDG_CACHE_HOME:-~/.cache}/jiayi),
#      JIAYI_KAFKA_HEAP (1g), JIAYI_KAFKA_START_TIMEOUT (90, seconds), JAVA (java), MVN (mvn).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"

# A broker answers and needs nothing done: one started from another data dir (not ours to judge),
# or ours, formatted with authentication.
usable() {
  kafka_answers "$port" || return 1
  [ -f "$auth_marker" ] || [ -z "$(broker_pid || true)" ]
}

if usable; then
  echo "127.0.0.1:$port"
  exit 0
fi

mkdir -p "$dir"
# One ensure at a time per data dir: a second one waits here, then finds the broker answering.
exec 9>"$dir/.ensure.lock"
if ! flock -w $((start_timeout + 300)) 9; then
  die "another ensure.sh holds $dir/.ensure.lock"
fi
if usable; then
  echo "127.0.0.1:$port"
  exit 0
fi

pid=$(broker_pid || true)
if [ -n "$pid" ] && [ ! -f "$auth_marker" ]; then
  log "broker from $dir runs without authentication (older script): restarting it with SCRAM"
  "$here/stop.sh"
  pid=
fi
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
  if port_open "$bport"; then
    die "127.0.0.1:$bport (inter-broker port) is in use (set JIAYI_KAFKA_BROKER_PORT)"
  fi
  if [ -n "$sslport" ]; then
    [ -r "$keystore" ] || die "JIAYI_KAFKA_SSL_PORT needs JIAYI_KAFKA_SSL_KEYSTORE (a PEM file)"
    port_open "$sslport" && die "127.0.0.1:$sslport (SSL port) is in use (set JIAYI_KAFKA_SSL_PORT)"
  fi
  rm -f "$pidfile" "$marker"

  need_java
  fetch_libs

  mkdir -p "$dir/data" "$dir/logs"
  write_config

  if [ -f "$dir/data/meta.properties" ] && [ ! -f "$auth_marker" ]; then
    # Formatted by the older script, without the admin's SCRAM credential (which can only be
    # bootstrapped at format time). The data dir holds test data only: start it afresh.
    log "$dir/data was formatted without authentication: re-formatting (its topics are lost)"
    rm -rf "$dir/data"
    mkdir -p "$dir/data"
  fi
  if [ ! -f "$dir/data/meta.properties" ]; then
    if [ ! -s "$admin_password_file" ]; then
      (
        umask 077
        head -c 30 /dev/urandom | base64 | tr -d '/+=\n' >"$admin_password_file"
      )
    fi
    chmod 600 "$admin_password_file"
    cluster_id=$("$JAVA" -cp "$libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
    log "formatting storage in $dir/data (cluster id $cluster_id, SCRAM user $admin_user)"
    "$JAVA" -Dlog4j2.configurationFile="$here/log4j2.xml" -Dkafka.logs.dir="$dir/logs" \
      -cp "$libs/*" kafka.tools.StorageTool format -t "$cluster_id" \
      -c "$dir/server.properties" --standalone \
      --add-scram "SCRAM-SHA-512=[name=$admin_user,password=$(cat "$admin_password_file")]" \
      >/dev/null
    date -u +%Y-%m-%dT%H:%M:%SZ >"$auth_marker"
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
