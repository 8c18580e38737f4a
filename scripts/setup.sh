#!/usr/bin/env bash
# Create .venv and install the project with the given extras (e.g. "dev,ray,examples").
# torch goes first, pinned: the project's own range (torch>=2.1) then installs
# nothing more, so no CUDA packages are pulled.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[${1:-}]"
