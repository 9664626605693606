#!/usr/bin/env bash
# Set up (first run only) and start the dashboard: bash scripts/start.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
# Sample images are copied from the data root when it is there (they are not tracked in git).
"$VENV/bin/python" -m leukoview sample-data >/dev/null 2>&1 || echo "note: sample images not copied (set LEUKOVIEW_DATA_ROOT; see README)"
exec "$VENV/bin/python" -m streamlit run Home.py "$@"
