#!/usr/bin/env bash
# Set up a virtualenv and run the whole test suite (the README's test command).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev,ray,examples
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
