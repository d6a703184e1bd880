#!/usr/bin/env bash
# Install psi-share into .venv (if needed) and run the three-lab demo:
# synthetic data, three nodes on 127.0.0.1, a joint matching job, results
# checked against ground truth, clean shutdown. Arguments go to scripts/demo.py.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
exec python scripts/demo.py "$@"
