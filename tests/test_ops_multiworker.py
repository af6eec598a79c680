"""Multi-worker deployments, run as users run them: a WSGI app under gunicorn (4 sync workers) and an
ASGI app under uvicorn (--workers 4), both under `opentelemetry-instrument`, with the recipe of
deploy/multiworker (SDK metrics set up in each worker, a per-worker Prometheus port and
service.instance.id, discovered by a real Prometheus through file SD).

200 requests from 20 users, in two halves; between them one worker is killed with SIGKILL and the
server starts another. Prometheus must then hold every user's spend exactly (the truth is computed
by hand from the local server's fixed usage), the killed worker's spend included, no other
worker's lost, and the shipped recording rule must agree after the restart.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path

import openai
import pytest
import yaml
from alerting_demo import AlertingPrometheus
from prometheus_demo import APPS_JOB, free_port
from test_ops_common import DEPLOY, ROOT, require_tool

from local_openai_server import LocalOpenAIServer

RECIPE = DEPLOY / "multiworker"
EXAMPLES = ROOT / "examples"
WORKERS = 4
USERS = [f"u{i:02d}" for i in range(20)]
QUALITIES = ("low", "medium", "high")
# One gpt-image-1 1024x1024 call with the prompt "A fox" (2 input text tokens x $5/1M = $0.00001)
# plus its output image tokens x $40/1M (docs/cost-model.md): low 272 -> $0.01088, medium 1056 ->
# $0.04224, high 4160 -> $0.1664.
CALL_USD = {"low": 0.01089, "medium": 0.04225, "high": 0.16641}
REQUESTS_PER_USER = 10  # 20 users x 10 = 200 requests, 5 per user before the kill and 5 after
# user u<i> asks for quality QUALITIES[i % 3]: 10 x low = $0.1089, 10 x medium = $0.4225, 10 x high = $1.6641
TRUTH = {user: [0.1089, 0.4225, 1.6641][i % 3] for i, user in enumerate(USERS)}


def quality(user: str) -> str:
    return QUALITIES[int(user[1:]) % 3]


def tenant(user: str) -> str:
    return f"t{int(user[1:]) % 4}"


def test_truth_is_ten_calls_per_user() -> None:
    assert all(round(REQUESTS_PER_USER * CALL_USD[quality(u)], 9) == TRUTH[u] for u in USERS)


SERVERS = {
    "gunicorn": [
        "gunicorn",
        "-c",
        str(RECIPE / "gunicorn.conf.py"),
        "--no-control-socket",
        "--bind",
        "127.0.0.1:{port}",
        "wsgi_app:app",
    ],
    "uvicorn": [
        "uvicorn",
        "--workers",
        str(WORKERS),
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "asgi_app:app",
    ],
}


def worker_files(directory: Path) -> dict[int, dict[str, object]]:
    """pid -> the target file entry of each worker that announced itself."""
    found = {}
    for path in directory.glob("*.json"):
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            found[int(path.stem.split("-")[-2])] = json.loads(path.read_text())[0]
    return found


def wait(what: str, check: Callable[[], bool], timeout: float = 45.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


@contextlib.contextmanager
def deployment(
    kind: str, directory: Path, openai_url: str, naive_metrics_port: int = 0
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The server under `opentelemetry-instrument`, as in docs/ops.md; yields its URL once all
    workers have announced their metrics endpoints. With `naive_metrics_port`, gunicorn without
    the recipe: the SDK's Prometheus exporter on that port, as for a single process."""
    if importlib.util.find_spec(kind) is None:
        pytest.skip(f"{kind} is not installed (test extra)")
    port = free_port()
    bin_dir = Path(sys.executable).parent
    command = [str(bin_dir / "opentelemetry-instrument"), str(bin_dir / SERVERS[kind][0])]
    command += [arg.format(port=port) for arg in SERVERS[kind][1:]]
    if naive_metrics_port:
        command[command.index("-c") : command.index("-c") + 2] = ["--workers", str(WORKERS)]
    env = {
        **os.environ,
        "OPENAI_BASE_URL": openai_url,
        "OPENAI_API_KEY": "sk-local",
        "OTEL_SERVICE_NAME": f"image-api-{kind}",
        "OTEL_METRICS_EXPORTER": "none",  # the recipe: metrics are set up per worker
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "openai",  # only this plugin (see examples/demo.py)
        "WORKER_METRICS_TARGETS_DIR": str(directory),
        "PYTHONPATH": os.pathsep.join([str(EXAMPLES), str(RECIPE)]),
        "GUNICORN_WORKERS": str(WORKERS),
    }
    if naive_metrics_port:
        env |= {
            "OTEL_METRICS_EXPORTER": "prometheus",
            "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
            "OTEL_EXPORTER_PROMETHEUS_PORT": str(naive_metrics_port),
        }
    log = (directory.parent / f"{kind}.log").open("wb")
    process = subprocess.Popen(
        command, env=env, cwd=directory.parent, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    log.close()
    try:
        wait(
            f"{WORKERS} {kind} workers",
            lambda: (
                (
                    answers(f"http://127.0.0.1:{port}/")
                    if naive_metrics_port
                    else len(worker_files(directory)) == WORKERS
                )
                or process.poll() is not None
            ),
        )
        assert process.poll() is None, (directory.parent / f"{kind}.log").read_text()[-3000:]
        yield f"http://127.0.0.1:{port}", process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2).close()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def send(url: str, requests: list[str]) -> list[int]:
    """The requests (one user each), 8 at a time on fresh connections; the pids that served them."""

    def one(user: str) -> int:
        query = urllib.parse.urlencode({"user": user, "tenant": tenant(user), "quality": quality(user)})
        with urllib.request.urlopen(f"{url}/generate?{query}", timeout=30) as reply:
            return int(json.loads(reply.read())["pid"])

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, requests))


def by_labels(prometheus: AlertingPrometheus, expr: str, *labels: str) -> dict[tuple[str, ...], float]:
    return {
        tuple(s["metric"].get(label, "") for label in labels): round(float(s["value"][1]), 9)
        for s in prometheus.query(expr)
    }


def scraped_after(prometheus: AlertingPrometheus, moment: float, targets: int) -> bool:
    """Every one of `targets` current targets has been scraped successfully after `moment`."""
    # timestamp() of the selector itself: applied to `up == 1` it would give the query's time
    up = f'up{{job="{APPS_JOB}"}}'
    result = prometheus.query(f"timestamp({up}) and {up} == 1")
    return len(result) == targets and all(float(s["value"][1]) > moment for s in result)


SAME_SDK_AS_MAIN_LINE = openai.__version__.startswith("2.") and version("opentelemetry-sdk") != "1.38.0"


@pytest.mark.skipif(
    SAME_SDK_AS_MAIN_LINE,
    reason="about 1 min: run on the main openai line and on the oldest OpenTelemetry SDK; this line has "
    "the main line's SDK, and the recipe does not depend on openai",
)
@pytest.mark.parametrize("kind", SERVERS)
def test_four_workers_200_requests_one_killed_sums_exact(kind: str, tmp_path: Path) -> None:
    binary = require_tool("prometheus")
    directory = tmp_path / "targets"
    directory.mkdir()
    half = [user for user in USERS for _ in range(REQUESTS_PER_USER // 2)]
    with (
        LocalOpenAIServer() as openai_server,
        AlertingPrometheus(targets=[], binary=binary, file_sd_glob=str(directory / "*.json")) as prometheus,
        deployment(kind, directory, openai_server.base_url) as (url, _server),
    ):
        first_workers = worker_files(directory)
        # every worker has its own port and service.instance.id
        assert len({tuple(entry["targets"]) for entry in first_workers.values()}) == WORKERS  # type: ignore[arg-type]
        served_before = send(url, half)
        done = time.time()
        wait(
            "a scrape of every worker after the first half", lambda: scraped_after(prometheus, done, WORKERS)
        )
        before = by_labels(
            prometheus,
            "sum by (service_instance_id, user_id) (openai_image_cost_USD_total)",
            "service_instance_id",
            "user_id",
        )
        assert len(set(served_before)) >= 2, "the requests all went to one worker"
        victim = max(set(served_before), key=served_before.count)
        victim_instance = str(first_workers[victim]["labels"]["service_instance_id"])  # type: ignore[index]
        victim_spend = round(sum(v for (instance, _), v in before.items() if instance == victim_instance), 9)
        assert victim_spend > 0

        os.kill(victim, signal.SIGKILL)
        wait(
            f"{kind} to replace worker {victim}",
            lambda: victim not in worker_files(directory) and len(worker_files(directory)) == WORKERS,
        )
        replacement = set(worker_files(directory)) - set(first_workers)
        assert len(replacement) == 1

        served_after = send(url, half)
        done = time.time()
        assert victim not in served_after
        wait(
            "a scrape of every worker after the second half", lambda: scraped_after(prometheus, done, WORKERS)
        )

        # every user's spend, exactly: the killed worker's last scrape included
        spend = by_labels(
            prometheus, "sum by (user_id) (last_over_time(openai_image_cost_USD_total[10m]))", "user_id"
        )
        assert spend == {(user,): TRUTH[user] for user in USERS}
        # no other worker lost anything: each survivor's series only grew
        after = by_labels(
            prometheus,
            "sum by (service_instance_id, user_id) (last_over_time(openai_image_cost_USD_total[10m]))",
            "service_instance_id",
            "user_id",
        )
        assert all(after[key] >= value for key, value in before.items())
        assert after.items() >= {k: v for k, v in before.items() if k[0] == victim_instance}.items()
        # the current series alone miss the dead worker: why the rules read last_over_time
        current = by_labels(prometheus, "sum(openai_image_cost_USD_total)")
        assert current[()] == round(sum(TRUTH.values()) - victim_spend, 9)

        # the shipped recording rule agrees once it has run on the last scrape
        def rule_agrees() -> bool:
            rule = by_labels(prometheus, "user_id:openai_image_cost_USD:increase1h", "user_id")
            return rule == {(user,): TRUTH[user] for user in USERS}

        wait("the hourly spend rule to see the last scrape", rule_agrees, timeout=15)


def test_without_the_recipe_gunicorn_workers_spend_is_exposed_nowhere(tmp_path: Path) -> None:
    """Why the recipe: `opentelemetry-instrument gunicorn` with the Prometheus exporter sets the SDK up
    in the master, whose exporter thread serves the master's empty registry on the port; the
    workers record into their own copies, which nothing serves."""
    directory = tmp_path / "targets"
    directory.mkdir()
    metrics_port = free_port()
    with (
        LocalOpenAIServer() as openai_server,
        deployment("gunicorn", directory, openai_server.base_url, naive_metrics_port=metrics_port) as (
            url,
            _,
        ),
    ):
        served = send(url, USERS)
        assert len(served) == len(USERS)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as reply:
            exposed = reply.read().decode()
    assert "process_start_time_seconds" in exposed  # the master's exporter answers ...
    assert "openai_image_cost_USD_total{" not in exposed  # ... with none of the workers' spend
    assert not list(directory.iterdir())


def test_the_scrape_job_of_the_recipe_is_valid_prometheus_config(tmp_path: Path) -> None:
    """deploy/multiworker/prometheus-job.yml in place of the apps job of deploy/prometheus/prometheus.yml."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    [job] = yaml.safe_load((RECIPE / "prometheus-job.yml").read_text())
    assert job["job_name"] == APPS_JOB  # the name the rules' TelemetryDown alert watches
    config["rule_files"] = []
    config["scrape_configs"] = [job]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [require_tool("promtool"), "check", "config", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
