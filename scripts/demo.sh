#!/usr/bin/env bash
# Set up a virtualenv and run the main demo end to end (the README's demo command):
# record two runs of an MLP on scikit-learn's digits, query them, then add a
# flor.log line and watch a SELECT backfill it for the past runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh examples
exec .venv/bin/python examples/mlp_digits/demo.py
