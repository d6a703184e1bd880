#!/usr/bin/env bash
# Install psi-share with dev extras into .venv (if needed) and run the whole suite.
# Extra arguments go to pytest, e.g. ./scripts/test.sh -k identifiers
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh" dev
cd "$ROOT"
exec python -m pytest "$@"
