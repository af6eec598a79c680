#!/usr/bin/env bash
# Per-user spend alerts end to end on loopback: the instrumented app, a real Prometheus, a real
# Alertmanager and the budget webhook; prints the alert the webhook received and the latency.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
if ! command -v prometheus >/dev/null 2>&1 || ! command -v prometheus-alertmanager >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus prometheus-alertmanager >/dev/null
fi
ensure_venv .venv
exec .venv/bin/python examples/alerting_demo.py "$@"
