#!/usr/bin/env bash
# Set up (first run only), lint and run the whole test suite: bash scripts/test.sh
# Tests that need the real data set LEUKOVIEW_DATA_ROOT (default here: ../shared/data if it exists).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
if [ -z "${LEUKOVIEW_DATA_ROOT:-}" ] && [ -d ../shared/data ]; then
  export LEUKOVIEW_DATA_ROOT="$(cd ../shared/data && pwd)"
fi
"$VENV/bin/python" -m ruff check .
exec "$VENV/bin/python" -m pytest -q "$@"
