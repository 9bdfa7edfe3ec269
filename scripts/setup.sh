#!/usr/bin/env bash
# Everything the suite needs on a fresh Debian/Ubuntu machine: bubblewrap for the sandboxes, uv, and a
# virtual environment with the locked Python dependencies. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v bwrap >/dev/null 2>&1 || ! command -v prlimit >/dev/null 2>&1 \
   || ! command -v slirp4netns >/dev/null 2>&1; then
  echo "setup: installing bubblewrap (the sandbox), slirp4netns (its network) and util-linux (prlimit)"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq bubblewrap slirp4netns util-linux >/dev/null
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "setup: installing Node.js and npm (the test servers: anvil, js-ipfs)"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq nodejs npm >/dev/null
fi
# anvil (a real Ethereum node) and js-ipfs (a real IPFS node), from the npm registry, for the tests
# and the paid demo; about 3.5 minutes the first time, nothing afterwards.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing the test servers from npm (anvil, js-ipfs)"
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
fi

PYTHON=${PYTHON:-python3}
if ! command -v uv >/dev/null 2>&1; then
  echo "setup: installing uv"
  "$PYTHON" -m pip install -q uv
fi
UV=$(command -v uv || echo "$PYTHON -m uv")

if [ ! -x .venv/bin/python ]; then
  $UV venv -q --python "$PYTHON" .venv
fi
echo "setup: installing Python dependencies (requirements.lock)"
$UV pip install -q --python .venv/bin/python -r requirements.lock
$UV pip install -q --python .venv/bin/python --no-deps -e .
echo "setup: done"
