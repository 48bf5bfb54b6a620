#!/usr/bin/env bash
# ensure.sh, then makes sure the administrator (jiayi-admin) can log in to the broker of this data
# dir; when it cannot (a data dir reused across many test runs has been seen to refuse the login
# after a restart), the broker is stopped and its data, test data only, formatted afresh.
# Prints `127.0.0.1:<port>` like ensure.sh. Env: as ensure.sh; PYTHON (the repo's .venv python).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"
python=${PYTHON:-$here/../../.venv/bin/python}

address=$("$here/ensure.sh")
if [ ! -f "$admin_password_file" ] || [ -z "$(broker_pid || true)" ] \
  || "$python" "$here/admin_login.py" "$address" "$admin_password_file"; then
  # not ours to judge (started from another data dir), or the login works
  echo "$address"
  exit 0
fi
log "jiayi-admin cannot log in to the broker of $dir: formatting its test data afresh"
"$here/stop.sh" >&2
rm -rf "$dir/data" "$auth_marker"
"$here/ensure.sh"
