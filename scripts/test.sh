#!/usr/bin/env bash
# Set up a virtualenv and run the whole test suite (the README's test command).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# torch first, pinned: the project's own range (torch>=2.1) then installs nothing more.
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e '.[dev,ray,examples]'
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
