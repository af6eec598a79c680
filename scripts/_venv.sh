# Sourced by the scripts: `ensure_venv DIR [PIP ARGS...]` makes a virtualenv with the project installed.
ensure_venv() {
  local dir="$1"; shift
  local stamp="$dir/.installed"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    python3 -m venv "$dir"
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[test]" "$@"
    touch "$stamp"
  fi
}
