#!/usr/bin/env bash
# The mutation gate alone: each promise in tests/mutations/*.yaml is broken in a scratch copy of the tree,
# and the tests named for it must fail. Also part of scripts/test.sh (tests/mutations/test_gate.py).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/services.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider -rA tests/mutations "$@"
