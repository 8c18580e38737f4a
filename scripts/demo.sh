#!/usr/bin/env bash
# Set up a virtualenv and run the main demo end to end (the README's demo command):
# record two runs of an MLP on scikit-learn's digits, query them, then add a
# flor.log line and watch a SELECT backfill it for the past runs.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e '.[examples]'
exec .venv/bin/python examples/mlp_digits/demo.py
