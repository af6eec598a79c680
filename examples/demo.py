"""The offline demo: the bundled OpenAI-compatible server on loopback, and the multi-user app
run under the real `opentelemetry-instrument` with the Prometheus exporter on.

    python examples/demo.py [--linger SECONDS] [--metrics-port PORT]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

from local_openai_server import LocalOpenAIServer

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--linger", type=float, default=0.0, help="keep the app's /metrics up this long")
    parser.add_argument("--metrics-port", type=int, default=0, help="port of the app's /metrics (0: any)")
    options = parser.parse_args()
    metrics_port = options.metrics_port or free_port()
    instrument = Path(sys.executable).with_name("opentelemetry-instrument")
    with LocalOpenAIServer() as server:
        env = {
            **os.environ,
            "OPENAI_BASE_URL": server.base_url,
            "OPENAI_API_KEY": "sk-local-demo",
            "OTEL_SERVICE_NAME": "image-reseller-demo",
            # Only this plugin: the test extra also installs other OpenAI instrumentations (entry
            # point `openai`) to test coexistence with them.
            "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "openai",
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_METRICS_EXPORTER": "prometheus",
            "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
            "OTEL_EXPORTER_PROMETHEUS_PORT": str(metrics_port),
        }
        print(
            f"local OpenAI-compatible server: {server.base_url}; app metrics: http://127.0.0.1:{metrics_port}/metrics"
        )
        command = [str(instrument), sys.executable, str(HERE / "app.py"), "--linger", str(options.linger)]
        return subprocess.run(command, env=env, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
