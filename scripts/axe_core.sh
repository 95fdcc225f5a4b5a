#!/usr/bin/env bash
# Fetch axe-core (the accessibility rules engine the browser tests run on the review page) from the npm
# registry once, into a cache folder; print the path of axe.min.js.
#   scripts/axe_core.sh [CACHE_DIR]     default CACHE_DIR: .venv/axe (ignored by git); AXE_VERSION picks the release
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$root/.venv/axe}
version=${AXE_VERSION:-4}
out="$dir/axe.min.js"
if [[ ! -s "$out" ]]; then
  command -v npm >/dev/null || { echo "npm is missing: apt-get install npm (axe-core comes from the npm registry)" >&2; exit 1; }
  mkdir -p "$dir"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  tarball=$(cd "$tmp" && npm pack --silent "axe-core@$version" | tail -n 1)
  tar -xzf "$tmp/$tarball" -C "$tmp" package/axe.min.js package/package.json
  mv "$tmp/package/package.json" "$dir/package.json"
  mv "$tmp/package/axe.min.js" "$out.part" && mv "$out.part" "$out"
fi
echo "$out"
