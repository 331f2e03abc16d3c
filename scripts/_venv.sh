# Sourced by the scripts: make .venv hold this checkout's package with the given extras.
# Reinstalls only when pyproject.toml changed, so repeated runs start fast. pip's and
# setuptools' output goes to a log that is shown only if the install fails.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
EXTRAS="${1:-}"
PYTHON="${PYTHON:-python3}"
hash="$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
stamp="$VENV/.installed-$hash${EXTRAS:+-$EXTRAS}"
# An install with extras holds the base install too.
if [ -z "$EXTRAS" ] && compgen -G "$VENV/.installed-$hash*" >/dev/null; then
  stamp="$(compgen -G "$VENV/.installed-$hash*" | head -n1)"
fi
if [ ! -f "$stamp" ]; then
  if [ ! -x "$VENV/bin/python" ]; then
    echo "Installing into .venv (first run, about 30 s)…" >&2
  elif compgen -G "$VENV/.installed-$hash*" >/dev/null; then
    # This pyproject.toml is installed, without these extras (the test tools, say).
    echo "Adding the $EXTRAS extras to .venv…" >&2
  else
    echo "Updating .venv (pyproject.toml changed)…" >&2
  fi
  log="$(mktemp)"
  if ! {
    { [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"; } &&
      "$VENV/bin/python" -m pip install --disable-pip-version-check --upgrade pip &&
      "$VENV/bin/python" -m pip install --disable-pip-version-check -e "$ROOT${EXTRAS:+[$EXTRAS]}"
  } >"$log" 2>&1; then
    cat "$log" >&2
    echo "The install into .venv failed (above); fix it and run the command again." >&2
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
  touch "$stamp"
fi
