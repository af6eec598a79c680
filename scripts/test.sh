#!/usr/bin/env bash
# Everything CI checks: lint, types, and the test-suite on both supported openai SDK lines.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
if ! command -v promtool >/dev/null 2>&1 || ! command -v amtool >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus prometheus-alertmanager >/dev/null
fi
ensure_venv .venv
ensure_extra .venv clients  # openai-agents and pydantic-ai need openai 3.x
ensure_venv .venv-openai2 "openai>=2,<3"
ensure_extra .venv-openai2 webapp  # pins an older OTel SDK: kept off the main line (see pyproject.toml)
ensure_oldest_venv .venv-oldest
.venv/bin/ruff check src tests examples
.venv/bin/ruff format --check src tests examples
.venv/bin/mypy --strict src
echo "== openai $(.venv/bin/python -c 'import openai; print(openai.__version__)')"
.venv/bin/python -m pytest -q "$@"
echo "== openai $(.venv-openai2/bin/python -c 'import openai; print(openai.__version__)')"
.venv-openai2/bin/python -m pytest -q "$@"
echo "== oldest supported versions (openai $(.venv-oldest/bin/python -c 'import openai; print(openai.__version__)'))"
# The local server's own tests validate its answers strictly against the newest SDK types; they
# are about the test server, not about the plugin, so they run on the two lines above only.
.venv-oldest/bin/python -m pytest -q --ignore=tests/test_local_server.py "$@"
