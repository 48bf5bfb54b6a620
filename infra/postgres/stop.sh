#!/usr/bin/env bash
# Stops the private development cluster started by ensure.sh (if it is running).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=${JIAYI_PG_DIR:-$root/var/postgres}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -f "$dir/postmaster.pid" ] || exit 0
if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$bin/pg_ctl" -D "$dir" -m fast stop; else "$bin/pg_ctl" -D "$dir" -m fast stop; fi
