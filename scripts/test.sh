#!/usr/bin/env bash
# Install psi-share with dev extras into .venv (if needed) and run the whole suite.
# Extra arguments go to pytest, e.g. ./scripts/test.sh -k identifiers
# The suite runs in PSI_SHARE_TEST_WORKERS processes (default 3 on 2 cores: most tests
# wait on real processes, sockets and pools, so a third worker fills the gaps;
# 0 runs it in this process), each test module in one of them.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh" dev
cd "$ROOT"
workers="${PSI_SHARE_TEST_WORKERS:-3}"
if [ "$workers" = "0" ]; then
  exec python -m pytest "$@"
fi
exec python -m pytest -n "$workers" --dist loadfile "$@"
