#!/bin/sh
# Data-path benchmark; see bench/run.py --help. Extra arguments are passed on.
set -e
cd "$(dirname "$0")/.."
echo "+ .venv/bin/python bench/run.py $*"
exec .venv/bin/python bench/run.py "$@"
