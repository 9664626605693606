#!/usr/bin/env bash
# Set up (first run only) and start the dashboard: bash scripts/start.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -r requirements.txt
fi
# Sample images are copied from the data root when it is there (they are not tracked in git).
"$VENV/bin/python" -m leukoview sample-data >/dev/null 2>&1 || echo "note: sample images not copied (set LEUKOVIEW_DATA_ROOT; see README)"
exec "$VENV/bin/python" -m streamlit run Home.py "$@"
