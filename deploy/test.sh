#!/usr/bin/env bash
# Run the whole linepulse test suite on a fresh Debian/Ubuntu machine with Python 3.11+.
# Installs what is missing (mosquitto, postgresql, python3-venv) when it can, makes .venv,
# runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
# PostgreSQL server binaries: tests that stop the database run their own cluster, and
# without a reachable PostgreSQL on 127.0.0.1:5432 the suite starts a private one.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  echo "installing ${need[*]} (Debian packages)"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
exec .venv/bin/python -m pytest "$@"
