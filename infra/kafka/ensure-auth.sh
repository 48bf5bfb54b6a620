#!/usr/bin/env bash
# ensure.sh, then makes sure the administrator (jiayi-admin) can log in to the broker of this data
# dir; when it cannot (a data dir reused across many test runs has been seen to refuse the login
# after a restart), the broker is stopped and its data, test data only, formatted afresh.
# Prints `127.0.0.1:<port>` like ensure.sh. Env: as ensure.sh; PYTHON (the repo's .venv python).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"
python=${PYTHON:-$here/../../.venv/bin/python}

# ensure.sh, tried up to three times: the broker's ports lie in Linux's ephemeral range
# (32768-60999), so an outgoing connection of another program can hold one for a moment and
# the broker then exits at start with "Address already in use".
start() {
  local attempt
  for attempt in 1 2 3; do
    if "$here/ensure.sh"; then
      return 0
    fi
    [ "$attempt" = 3 ] || { log "starting the broker failed; trying again"; sleep 2; }
  done
  return 1
}

address=$(start)
if [ ! -f "$admin_password_file" ] || [ -z "$(broker_pid || true)" ] \
  || "$python" "$here/admin_login.py" "$address" "$admin_password_file"; then
  # not ours to judge (started from another data dir), or the login works
  echo "$address"
  exit 0
fi
log "jiayi-admin cannot log in to the broker of $dir: formatting its test data afresh"
"$here/stop.sh" >&2
rm -rf "$dir/data" "$auth_marker"
start
