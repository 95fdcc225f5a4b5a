#!/usr/bin/env bash
# Make sure headless Chromium from the Debian package is on this machine (the browser tests drive it with
# Playwright; Playwright's own browser download cannot reach its servers here). Prints the binary's path.
#   scripts/chromium.sh          install `chromium` with apt-get if missing, print /usr/bin/chromium
set -euo pipefail

find_chromium() {
  for c in /usr/bin/chromium /usr/bin/chromium-browser; do
    if [[ -x "$c" ]]; then echo "$c"; return 0; fi
  done
  return 1
}

if ! bin=$(find_chromium); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "chromium is missing and installing it needs root: apt-get install chromium" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
  bin=$(find_chromium)
fi
echo "$bin"
