#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers on 127.0.0.1:$JIAYI_PG_PORT (default 55432) with a
# database for jiayi. If none answers, installs PostgreSQL from Debian's packages when it is
# missing, creates a private cluster under var/postgres (trust auth on loopback only) and starts it.
# Prints the URL to use on stdout; progress goes to stderr.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
port=${JIAYI_PG_PORT:-55432}
db=${JIAYI_PG_DB:-jiayi}
dir=${JIAYI_PG_DIR:-$root/var/postgres}
url="postgresql://jiayi@127.0.0.1:${port}/${db}"
log() { echo "[postgres] $*" >&2; }

find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

bin=$(find_bin || true)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  log "PostgreSQL server not installed: installing Debian package 'postgresql'"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
  bin=$(find_bin)
fi

as_owner() {
  # initdb and postgres refuse to run as root: run them as the 'postgres' system user.
  if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

if ! "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"; then
  if [ ! -f "$dir/PG_VERSION" ]; then
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
    chmod 700 "$dir"
    if ! as_owner test -w "$dir"; then
      # The checkout lies where the 'postgres' user cannot reach (e.g. under /root).
      rmdir "$dir" 2>/dev/null || true
      dir=/var/tmp/jiayi-postgres-$port
      mkdir -p "$dir"
      [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
      chmod 700 "$dir"
    fi
  fi
  if [ ! -f "$dir/PG_VERSION" ]; then
    log "creating cluster in $dir"
    as_owner "$bin/initdb" -D "$dir" -U jiayi --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  fi
  log "starting on 127.0.0.1:$port"
  as_owner "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=300" start >&2
fi

if ! "$bin/psql" -h 127.0.0.1 -p "$port" -U jiayi -d postgres -tAc \
     "SELECT 1 FROM pg_database WHERE datname='$db'" | grep -q 1; then
  "$bin/createdb" -h 127.0.0.1 -p "$port" -U jiayi "$db"
fi
echo "$url"
