#!/usr/bin/env bash
# make test's browser tests (the course site, the explorer in JupyterLab) drive headless Chromium. Debian's package is
# installed here when it can be (root and apt-get: ~60 MB, no browser download); elsewhere make test stops at once,
# with the one line to run, instead of failing at its last step after ten minutes.
set -euo pipefail
for browser in chromium-headless-shell chromium chromium-browser google-chrome; do
  if command -v "$browser" >/dev/null; then exit 0; fi
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian's chromium-headless-shell for the browser tests (~60 MB)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium-headless-shell >/dev/null
  exit 0
fi
echo "make test needs headless Chromium for its browser tests and cannot install it here. Run this once, then make test:" >&2
echo "    sudo apt-get install -y chromium-headless-shell    # Debian/Ubuntu; elsewhere install Chromium or Google Chrome" >&2
exit 1
