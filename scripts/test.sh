#!/usr/bin/env bash
# Everything CI checks: lint, types, and the test-suite on both supported openai SDK lines.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
if ! command -v promtool >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
fi
ensure_venv .venv
ensure_venv .venv-openai2 "openai>=2,<3"
.venv/bin/ruff check src tests examples
.venv/bin/ruff format --check src tests examples
.venv/bin/mypy --strict src
echo "== openai $(.venv/bin/python -c 'import openai; print(openai.__version__)')"
.venv/bin/python -m pytest -q "$@"
echo "== openai $(.venv-openai2/bin/python -c 'import openai; print(openai.__version__)')"
.venv-openai2/bin/python -m pytest -q "$@"
