"""gunicorn settings for an app run under `opentelemetry-instrument` with sync workers:

    OTEL_METRICS_EXPORTER=none WORKER_METRICS_TARGETS_DIR=/run/otel-targets \
    opentelemetry-instrument gunicorn -c deploy/multiworker/gunicorn.conf.py app:app

The SDK's metrics are set up in each worker after the fork (worker_metrics.py says why), never in
the master.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import worker_metrics  # next to this file

workers = int(os.environ.get("GUNICORN_WORKERS", "4"))
worker_class = "sync"


def post_fork(server, worker):
    worker_metrics.start()


def worker_exit(server, worker):
    worker_metrics.stop()
