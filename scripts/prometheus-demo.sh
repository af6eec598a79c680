#!/usr/bin/env bash
# The offline demo scraped by a real, throw-away Prometheus on loopback; prints each user's spend
# from PromQL beside the demo's own summary.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
if ! command -v prometheus >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
fi
ensure_venv .venv
exec .venv/bin/python examples/prometheus_demo.py "$@"
