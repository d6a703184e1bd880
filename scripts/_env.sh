# Shared by demo.sh and test.sh: create .venv if missing and install the
# package (with the extras named in $1) when pyproject.toml changed since the
# last install.
#
# Always source it with its argument, even an empty one
# (`source _env.sh ""`): a file sourced without arguments sees the caller's,
# so `demo.sh --help` once made this `pip install -e .[--help]`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
EXTRAS="${1:-}"
case "$EXTRAS" in
  ""|dev) ;;
  *) echo "scripts/_env.sh: unknown extras '$EXTRAS' (expected nothing or 'dev'); source it as: source _env.sh \"\"" >&2
     exit 2 ;;
esac
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV" >&2
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.installed${EXTRAS:+-$EXTRAS}"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
  echo "installing psi-share${EXTRAS:+[$EXTRAS]} into $VENV" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT${EXTRAS:+[$EXTRAS]}" >&2
  touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
