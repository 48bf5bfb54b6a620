#!/usr/bin/env bash
# Stops the broker started by ensure.sh from the data dir (JIAYI_KAFKA_DIR, default
# <repo>/var/kafka): SIGTERM (a clean, controlled shutdown), SIGKILL if it has not exited after
# 30 s. Removes the pid file and the started-by-ensure marker. Exits 0 when nothing is running.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"

pid=$(broker_pid || true)
if [ -z "$pid" ]; then
  rm -f "$pidfile" "$marker"
  exit 0
fi
log "stopping broker (pid $pid)"
kill -TERM "$pid" 2>/dev/null || true
for _ in $(seq 300); do
  alive "$pid" || break
  sleep 0.1
done
if alive "$pid"; then
  log "still running after 30s: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  while alive "$pid"; do sleep 0.1; done
fi
rm -f "$pidfile" "$marker"
log "stopped"
