#!/usr/bin/env bash
# The offline demo: a multi-user app under `opentelemetry-instrument`, against the bundled local
# OpenAI-compatible server on loopback, ending with each user's spend read back from the telemetry.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
ensure_venv .venv
exec .venv/bin/python examples/demo.py "$@"
