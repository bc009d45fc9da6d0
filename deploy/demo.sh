#!/usr/bin/env bash
# Run linepulse on embedded defaults: simulated line, local broker, edge agent.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import venv, ensurepip' 2>/dev/null || {
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq python3-venv >/dev/null
}
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[all]'
exec .venv/bin/linepulse demo "$@"
