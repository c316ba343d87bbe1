#!/usr/bin/env bash
# What the dashboard's browser tests need: Debian's chromium, and axe-core from npm, unpacked
# into .cache/axe-core (the tests read it from there). Installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi
if [ ! -f .cache/axe-core/package/axe.min.js ]; then
  mkdir -p .cache/axe-core
  tarball=$(cd .cache/axe-core && npm pack axe-core@4 --silent | tail -n 1)
  tar -xzf ".cache/axe-core/$tarball" -C .cache/axe-core
fi
