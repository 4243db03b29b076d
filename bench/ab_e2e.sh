#!/usr/bin/env bash
# A/B of bench/e2e.py scenario 2 (20,000 DMs by default) between a git ref and the working
# tree, through bench/ab.py (which also A/Bs bench/broker.py; see bench/README.md).
# Usage: bench/ab_e2e.sh <base-ref> [rounds] [messages]; PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
ref=${1:?usage: bench/ab_e2e.sh <base-ref> [rounds] [messages]}
exec "${PYTHON:-.venv/bin/python}" bench/ab.py e2e "$ref" --rounds "${2:-3}" -- \
  --sequential 100 --messages "${3:-20000}" --backlog 100
