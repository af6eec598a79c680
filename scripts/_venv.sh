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

# `ensure_extra DIR EXTRA`: the project's optional dependencies EXTRA too, in a venv made by ensure_venv.
ensure_extra() {
  local dir="$1" extra="$2"
  local stamp="$dir/.installed-$extra"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[test,$extra]"
    touch "$stamp"
  fi
}

# `ensure_oldest_venv DIR`: the project with exactly the lowest dependency versions it admits.
ensure_oldest_venv() {
  local dir="$1"
  local stamp="$dir/.installed"
  if [ ! -f "$stamp" ] || [ tests/oldest-supported.txt -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    python3 -m venv "$dir"
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/oldest-supported.txt
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e .
    touch "$stamp"
  fi
}
