#!/usr/bin/env bash
# Run the whole rolegate test suite: installs what is missing, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/services.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
