#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: installs what the tests need
# (Debian packages, the package with its test extras), then lint, types, docs, tests.
# Usage: bash tests/run.sh [pytest arguments...]
set -euo pipefail
cd "$(dirname "$0")/.."

apt_needed=()
command -v chromium >/dev/null || apt_needed+=(chromium)
command -v chromedriver >/dev/null || apt_needed+=(chromium-driver)
command -v redis-server >/dev/null || apt_needed+=(redis-server)
command -v nginx >/dev/null || apt_needed+=(nginx-light)
command -v wrk >/dev/null || apt_needed+=(wrk)
if [ ${#apt_needed[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${apt_needed[@]}"
    else
        sudo apt-get update -q
        sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${apt_needed[@]}"
    fi
fi

PYTHON=${PYTHON:-python3}
"$PYTHON" -m pip install -q --disable-pip-version-check -e ".[test,docs]"

echo "== ruff"
"$PYTHON" -m ruff check .
"$PYTHON" -m ruff format --check .
echo "== mypy"
"$PYTHON" -m mypy
echo "== docs"
"$PYTHON" -m mkdocs build --strict --quiet --site-dir "$(mktemp -d)"
echo "== pytest"
"$PYTHON" -m pytest "$@"
