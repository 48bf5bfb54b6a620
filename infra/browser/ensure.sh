#!/bin/sh
# Headless Chromium for the browser tests: Debian's `chromium` package (browsers are not
# downloaded by Playwright here) and CJK fonts so Chinese labels render in screenshots.
# Idempotent: installs only what is missing. Prints the browser's path.
set -eu

log() { echo "browser/ensure: $*" >&2; }

missing=""
[ -x /usr/bin/chromium ] || missing="chromium"
if ! fc-list 2>/dev/null | grep -qi "noto sans cjk"; then
  missing="$missing fonts-noto-cjk"
fi

if [ -n "$missing" ]; then
  log "installing Debian package(s):$missing"
  export DEBIAN_FRONTEND=noninteractive
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO=sudo; else SUDO=""; fi
  $SUDO apt-get update -qq >&2
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -qq --no-install-recommends $missing >&2
fi

echo /usr/bin/chromium
