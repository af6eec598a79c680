"""Per-worker metrics for a pre-fork (gunicorn) or multi-process (uvicorn --workers) app run under
`opentelemetry-instrument`: each worker process gets its own MeterProvider, Prometheus endpoint,
`service.instance.id` and file service-discovery target. Copy this file next to your app.

Why: `opentelemetry-instrument` sets the SDK up once, in the process it starts. Under gunicorn that
is the master: the Prometheus exporter's HTTP server (a thread, on OTEL_EXPORTER_PROMETHEUS_PORT)
serves the master's empty registry, while every forked worker records into its own copy that
nothing exposes. Under uvicorn every spawned worker sets itself up again on the same port: the
master holds it, the workers' exporters cannot bind. And every worker would have the same
`service.instance.id`. So: run with OTEL_METRICS_EXPORTER=none (the plugin is still patched in
by `opentelemetry-instrument`), and in each worker, once, before it serves (gunicorn `post_fork`,
uvicorn lifespan startup):

    worker_metrics.start()      # and worker_metrics.stop() on the way out

Environment:
    WORKER_METRICS_TARGETS_DIR  directory of Prometheus file_sd target files (required); point a
                                `file_sd_configs` glob at DIR/*.json (deploy/multiworker/prometheus-job.yml)
    WORKER_METRICS_HOST         address to serve /metrics on and to advertise (default 127.0.0.1);
                                the port is a free one, chosen by the kernel

A worker that dies without stop() (SIGKILL, OOM) leaves its file; the next worker to start removes
the files of processes that no longer exist, so its replacement cleans up after it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import uuid
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import make_wsgi_app

from otel_image_cost import OpenAIImageCostInstrumentor

_started: dict[str, object] = {}


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _prune(directory: Path) -> None:
    """Remove the target files of worker processes that are gone."""
    for path in directory.glob("*.json"):
        pid_text = path.stem.split("-")[-2] if path.stem.count("-") >= 2 else ""
        if pid_text.isdigit() and not _alive(int(pid_text)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def start() -> str:
    """Set this worker's metrics up (once per process); returns its service.instance.id."""
    if _started.get("pid") == os.getpid():
        return str(_started["instance_id"])
    directory = Path(os.environ["WORKER_METRICS_TARGETS_DIR"])
    host = os.environ.get("WORKER_METRICS_HOST", "127.0.0.1")
    instance_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    # OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES still apply: Resource.create merges them in
    resource = Resource.create({"service.instance.id": instance_id})
    provider = MeterProvider(metric_readers=[PrometheusMetricReader()], resource=resource)
    server: WSGIServer = make_server(host, 0, make_wsgi_app(), handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="worker-metrics", daemon=True).start()
    # the plugin was patched in before the fork / at start-up against a provider with no reader:
    # patch it again, recording into this worker's provider
    instrumentor = OpenAIImageCostInstrumentor()
    instrumentor.uninstrument()
    instrumentor.instrument(meter_provider=provider)

    directory.mkdir(parents=True, exist_ok=True)
    _prune(directory)
    target = directory / f"{instance_id}.json"
    port = server.server_address[1]
    entry = [{"targets": [f"{host}:{port}"], "labels": {"service_instance_id": instance_id}}]
    temporary = target.with_suffix(".tmp")
    temporary.write_text(json.dumps(entry))
    temporary.replace(target)  # Prometheus never reads a half-written file
    _started.update(pid=os.getpid(), instance_id=instance_id, target=target, server=server, provider=provider)
    return instance_id


def stop() -> None:
    """Withdraw this worker's target (a graceful exit); Prometheus stops scraping it."""
    if _started.get("pid") != os.getpid():
        return
    target = _started["target"]
    assert isinstance(target, Path)
    with contextlib.suppress(FileNotFoundError):
        target.unlink()
    server = _started["server"]
    assert isinstance(server, WSGIServer)
    server.shutdown()
    _started.clear()
