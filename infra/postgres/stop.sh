#!/usr/bin/env bash
# Stops the private development cluster started by ensure.sh (if it is running): the one in
# var/postgres, or the fallback under /var/tmp when the checkout was out of the postgres
# user's reach.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
port=${JIAYI_PG_PORT:-55432}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
for dir in "${JIAYI_PG_DIR:-$root/var/postgres}" "/var/tmp/jiayi-postgres-$port"; do
  [ -f "$dir/postmaster.pid" ] || continue
  if [ "$(id -u)" = 0 ]; then
    (cd / && runuser -u postgres -- "$bin/pg_ctl" -D "$dir" -m fast stop)
  else
    "$bin/pg_ctl" -D "$dir" -m fast stop
  fi
done
