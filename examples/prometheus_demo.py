"""The offline demo with a real local Prometheus scraping it: per-user spend from a PromQL query.

    python examples/prometheus_demo.py [--prometheus PATH] [--scrape-interval 1s] [--keep-running SECONDS]

It starts a throw-away Prometheus on a free loopback port (temporary storage, the project's scrape
config and rules from deploy/prometheus with short intervals), runs the offline demo
(`examples/demo.py`: the bundled local OpenAI-compatible server and the multi-user app under
`opentelemetry-instrument` with the Prometheus exporter on), waits until Prometheus has scraped the
app after its last call, and prints each user's spend as Prometheus answers

    sum by (user_id) (openai_image_cost_USD_total)

next to the numbers of the demo's own summary (to the summary's 6 decimals). It exits 1 if any
user's spend differs.
Needs the `prometheus` server binary (Debian/Ubuntu: `apt-get install prometheus`).

The module also holds `LocalPrometheus`, which the ops tests use to run Prometheus against any target.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
APPS_JOB = "otel-image-cost-apps"
SPEND_BY_USER = "sum by (user_id) (openai_image_cost_USD_total)"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrometheusError(RuntimeError):
    """Prometheus refused a query, or did not become ready in time."""


def start_until_ready(
    name: str, argv: Sequence[str], url: str, workdir: Path, timeout: float
) -> subprocess.Popen[bytes]:
    """Start a Prometheus-family server (Prometheus, Alertmanager) logging to `workdir/<name>.log`
    and wait for its `/-/ready`; on failure stop it and raise with the end of its log."""
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PrometheusError(f"{name} exited with {process.returncode}: {_tail(log_path)}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/-/ready", timeout=1) as reply:
            if reply.status == 200:
                return process
        time.sleep(0.1)
    stop_process(process)
    raise PrometheusError(f"{name} not ready after {timeout} s: {_tail(log_path)}")


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    """Terminate a server started by `start_until_ready` (kill it if it lingers)."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _tail(log_path: Path) -> str:
    with contextlib.suppress(OSError):
        return log_path.read_text()[-4000:]
    return ""


@dataclass
class LocalPrometheus:
    """A Prometheus server on loopback for one run: temporary storage, stopped on exit.

    The configuration is deploy/prometheus/prometheus.yml with the scrape and evaluation
    intervals shortened, the `otel-image-cost-apps` job pointed at `targets`, the collector job
    dropped, and the rule files (budgets.yml, alerts.yml) copied with every group's interval
    shortened too, so that recording rules and alerts are evaluated within seconds.
    """

    targets: Sequence[str]
    binary: str = "prometheus"
    scrape_interval: str = "1s"
    extra_rule_files: Sequence[Path] = ()
    startup_timeout: float = 30.0
    url: str = ""
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="otel-image-cost-prom-")))
    _process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LocalPrometheus:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def write_config(self) -> Path:
        config: dict[str, Any] = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
        config["global"]["scrape_interval"] = self.scrape_interval
        config["global"]["evaluation_interval"] = self.scrape_interval
        rule_files = [PROMETHEUS_DIR / name for name in config["rule_files"]]
        config["rule_files"] = [str(self._fast_rules(path)) for path in [*rule_files, *self.extra_rule_files]]
        jobs = [job for job in config["scrape_configs"] if job["job_name"] == APPS_JOB]
        targets_file = self.workdir / "targets.yml"
        targets_file.write_text(yaml.safe_dump([{"targets": list(self.targets)}]))
        jobs[0]["file_sd_configs"] = [{"files": [str(targets_file)], "refresh_interval": "1s"}]
        config["scrape_configs"] = jobs
        path = self.workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def _fast_rules(self, source: Path) -> Path:
        rules: dict[str, Any] = yaml.safe_load(source.read_text())
        for group in rules["groups"]:
            group["interval"] = self.scrape_interval
        target = self.workdir / f"rules-{source.name}"
        target.write_text(yaml.safe_dump(rules, sort_keys=False))
        return target

    def start(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = self.write_config()
        argv = [
            self.binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ]
        self._process = start_until_ready("prometheus", argv, self.url, self.workdir, self.startup_timeout)

    def stop(self) -> None:
        process, self._process = self._process, None
        stop_process(process)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; returns `data`, raises PrometheusError on an error answer."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as reply:
                body = json.loads(reply.read())
        except urllib.error.HTTPError as error:
            body = json.loads(error.read() or b"{}")
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query; the result vector (a scalar answer comes back as one sample)."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", **params)
        if data["resultType"] == "vector":
            return list(data["result"])
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        raise PrometheusError(f"unexpected result type {data['resultType']} for {expr}")

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise PrometheusError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.2)

    def last_scrape(self, job: str = APPS_JOB) -> float:
        """Time of the newest successful scrape of `job` (0 if none)."""
        # timestamp() of the selector itself: of `up == 1` it would be the query's own time
        up = f'up{{job="{job}"}}'
        result = self.query(f"max(timestamp({up}) and {up} == 1)")
        return float(result[0]["value"][1]) if result else 0.0


@dataclass
class DemoRun:
    """The demo app's output and the per-user spend of its own summary table."""

    output: list[str] = field(default_factory=list)
    summary: dict[str, float] = field(default_factory=dict)
    summary_total: float | None = None
    summary_done_at: float | None = None
    process: subprocess.Popen[str] | None = None

    def stop(self) -> None:
        """End the demo (it may still be lingering): its whole process group, which it started."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


# Rows of the app's summary table: user, spend from spans, spend from its own /metrics; then the total.
_SUMMARY_ROW = re.compile(r"^(?P<user>\S+)\s+(?P<spans>\d+\.\d+)\s+(?P<metrics>\d+\.\d+|\(exporter off\))$")
_SUMMARY_TOTAL = re.compile(r"^total\s+(?P<spans>\d+\.\d+)$")


@contextlib.contextmanager
def running_demo(
    metrics_port: int, linger: float, echo: bool = False, timeout: float = 120.0
) -> Iterator[DemoRun]:
    """Start examples/demo.py; yield once its summary is printed (it lingers, serving /metrics)."""
    run = DemoRun()
    command = [
        sys.executable,
        str(HERE / "demo.py"),
        "--linger",
        str(linger),
        "--metrics-port",
        str(metrics_port),
    ]
    run.process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # its own process group: demo.py, and the app it runs, end together
    )
    done = threading.Event()

    def read() -> None:
        assert run.process is not None and run.process.stdout is not None
        for line in run.process.stdout:
            line = line.rstrip("\n")
            run.output.append(line)
            if echo:
                print(f"  demo | {line}", flush=True)
            row = _SUMMARY_ROW.match(line)
            if row:
                run.summary[row["user"]] = float(row["spans"])
            total = _SUMMARY_TOTAL.match(line)
            if total:
                run.summary_total = float(total["spans"])
            if line.startswith("serving "):  # the app has made its last call and printed its summary
                run.summary_done_at = time.time()
                done.set()
        done.set()

    reader = threading.Thread(target=read, name="demo-output", daemon=True)
    reader.start()
    try:
        if not done.wait(timeout):
            raise TimeoutError(f"the demo printed no summary within {timeout} s")
        if run.summary_done_at is None or not run.summary:
            raise RuntimeError("the demo ended without its summary:\n" + "\n".join(run.output))
        yield run
    finally:
        run.stop()
        reader.join(timeout=10)


def spend_by_user(prometheus: LocalPrometheus, at: float | None = None) -> dict[str, float]:
    return {
        sample["metric"].get("user_id", "(unattributed)"): float(sample["value"][1])
        for sample in prometheus.query(SPEND_BY_USER, at)
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--prometheus", default=shutil.which("prometheus"), help="the prometheus binary")
    parser.add_argument(
        "--scrape-interval", default="1s", help="Prometheus scrape/rule interval (default 1s)"
    )
    parser.add_argument(
        "--keep-running", type=float, default=0.0, help="leave Prometheus up this many seconds to explore"
    )
    options = parser.parse_args()
    if not options.prometheus:
        print("prometheus not found: install it (apt-get install prometheus) or pass --prometheus PATH")
        return 2

    metrics_port = free_port()
    with LocalPrometheus(
        targets=[f"127.0.0.1:{metrics_port}"],
        binary=options.prometheus,
        scrape_interval=options.scrape_interval,
    ) as prometheus:
        print(
            f"prometheus: {prometheus.url} scraping 127.0.0.1:{metrics_port} every {options.scrape_interval}"
        )
        linger = 30.0 + options.keep_running
        with running_demo(metrics_port, linger, echo=True) as run:
            done_at = run.summary_done_at or time.time()
            prometheus.wait_for(
                "a scrape of the demo after its last call", lambda: prometheus.last_scrape() > done_at
            )
            at = prometheus.last_scrape()
            from_prometheus = spend_by_user(prometheus, at)
            if options.keep_running > 0:
                print(f"Prometheus stays up at {prometheus.url} for {options.keep_running:.0f} s")
                time.sleep(options.keep_running)

    print(f"\nper-user spend from PromQL: {SPEND_BY_USER}")
    print(f"{'user':<16}{'Prometheus (USD)':>20}{'demo summary (USD)':>22}")
    agree = set(from_prometheus) == set(run.summary)
    for user in sorted(set(from_prometheus) | set(run.summary)):
        ours, theirs = from_prometheus.get(user), run.summary.get(user)
        same = ours is not None and theirs is not None and f"{ours:.6f}" == f"{theirs:.6f}"
        agree = agree and same
        ours_text = "-" if ours is None else f"{ours:.6f}"
        theirs_text = "-" if theirs is None else f"{theirs:.6f}"
        print(f"{user:<16}{ours_text:>20}{theirs_text:>22}{'' if same else '   MISMATCH'}")
    total = "-" if run.summary_total is None else f"{run.summary_total:.6f}"
    print(f"{'total':<16}{sum(from_prometheus.values()):>20.6f}{total:>22}")
    print("Prometheus agrees with the demo's summary" if agree else "MISMATCH with the demo's summary")
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
