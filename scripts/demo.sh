#!/usr/bin/env bash
# Install psi-share into .venv (if needed) and run the three-lab demo:
# synthetic data, three nodes on 127.0.0.1, a joint matching job, results
# checked against ground truth, clean shutdown. Arguments go to scripts/demo.py.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: ./scripts/demo.sh [--out DIR] [--seed N] [--customers N] [--flagged N]

Creates .venv if needed, installs psi-share into it, and runs the three-lab
demo (scripts/demo.py): synthetic data for lab-a, lab-b and lab-c, a
federation CA, three nodes on 127.0.0.1 with mutual TLS, joint matching and
intersection-sum jobs checked against the generator's ground truth, a second
day of data, refusals, and each lab's compliance audit.

Options (passed to scripts/demo.py):
  --out DIR        where the demo's files go (default: demo-out/)
  --seed N         random seed of the synthetic data (default: 7)
  --customers N    customers per lab (default: 30000)
  --flagged N      flagged actors per lab (default: 3000)
  -h, --help       show this help and exit (installs nothing)
USAGE
}

for arg in "$@"; do
  case "$arg" in
    -h|--help) usage; exit 0 ;;
  esac
done

# The empty argument is deliberate: a file sourced without arguments sees
# this script's own ("--seed 3" would become the extras to install).
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh" ""
cd "$ROOT"
exec python scripts/demo.py "$@"
