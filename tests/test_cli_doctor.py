"""`otel-image-cost doctor`: the real console script, shown one misconfiguration at a time."""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from conftest import run_command

HEALTHY = {
    "OTEL_TRACES_EXPORTER": "console",
    "OTEL_METRICS_EXPORTER": "prometheus",
    "OTEL_LOGS_EXPORTER": "console",
}


def report(env: dict[str, str], *, cwd: Path | None = None) -> tuple[int, dict[str, list[str]]]:
    """Exit status, and the FAIL / ok lines by check name."""
    done = run_command("doctor", env=env, cwd=cwd)
    assert done.stderr == "" and "Traceback" not in done.stdout, done.stderr
    lines: dict[str, list[str]] = {}
    for line in done.stdout.splitlines():
        status, _, rest = line.partition(" ")
        name, _, detail = rest.strip().partition(": ")
        lines.setdefault(name, []).append(f"{status} {detail}")
    return done.returncode, lines


def failures(lines: dict[str, list[str]]) -> dict[str, list[str]]:
    return {
        name: [line.removeprefix("FAIL ") for line in found if line.startswith("FAIL")]
        for name, found in lines.items()
        if any(line.startswith("FAIL") for line in found)
    }


def test_healthy_setup_passes_every_check() -> None:
    status, lines = report(HEALTHY)
    assert status == 0, lines
    assert list(lines) == [
        "openai",
        "entry point",
        "enabled",
        "sdk setup",
        "traces exporter",
        "metrics exporter",
        "logs exporter",
        "price file",
        "settings",
    ]
    assert failures(lines) == {}
    assert lines["metrics exporter"] == ["ok OTEL_METRICS_EXPORTER: prometheus is installed"]
    assert lines["entry point"] == [
        "ok entry point 'openai_image_cost' in group 'opentelemetry_instrumentor' -> "
        "otel_image_cost:OpenAIImageCostInstrumentor"
    ]


def installed(group: str, name: str) -> bool:
    return any(ep.name == name for ep in entry_points(group=group))


@pytest.mark.skipif(
    installed("opentelemetry_traces_exporter", "otlp_proto_grpc"),
    reason="the OTLP/gRPC exporter is installed here",
)
def test_distro_default_otlp_without_its_exporter_is_named_with_the_fix() -> None:
    status, lines = report({})
    assert status == 1
    found = failures(lines)
    assert found["traces exporter"] == [
        "OTEL_TRACES_EXPORTER=otlp (opentelemetry-distro's default) needs 'otlp_proto_grpc', which is not "
        "installed: opentelemetry-instrument fails with \"Requested component 'otlp_proto_grpc' not found in "
        "entry point 'opentelemetry_traces_exporter'\" and exports nothing; fix: pip install "
        "opentelemetry-exporter-otlp-proto-grpc, or set OTEL_TRACES_EXPORTER=console (or none)"
    ]
    assert set(found) == {"traces exporter", "metrics exporter", "logs exporter", "exporters"}


@pytest.mark.parametrize(
    ("env", "check", "named"),
    [
        (
            {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "requests , openai_image_cost"},
            "enabled",
            "turns the plugin off: remove openai_image_cost (or *) from it",
        ),
        (
            {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "*"},
            "enabled",
            "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS='*'",
        ),
        ({"OTEL_SDK_DISABLED": "true"}, "enabled", "OTEL_SDK_DISABLED=true"),
        (
            {"OTEL_TRACES_EXPORTER": "zipkin_json"},
            "traces exporter",
            "pip install opentelemetry-exporter-zipkin-json",
        ),
        (
            {"OTEL_LOGS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            "logs exporter",
            "OTLP protocol 'http/json' is not supported",
        ),
        (
            {"OTEL_IMAGE_COST_PRICES": "/nonexistent/prices.yaml"},
            "price file",
            "OTEL_IMAGE_COST_PRICES: /nonexistent/prices.yaml: cannot read price file",
        ),
        (
            {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "perhaps"},
            "settings",
            "ignoring OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT='perhaps'",
        ),
        (
            {"OTEL_IMAGE_COST_AZURE_DEPLOYMENTS": "prod-images"},
            "settings",
            "ignoring OTEL_IMAGE_COST_AZURE_DEPLOYMENTS='prod-images'",
        ),
        (
            {"OTEL_IMAGE_COST_DEFAULT_IMAGE_MODEL": "gpt-image-9"},
            "settings",
            "OTEL_IMAGE_COST_DEFAULT_IMAGE_MODEL names 'gpt-image-9', which the price table cannot price",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_each_misconfiguration_is_named(env: dict[str, str], check: str, named: str) -> None:
    status, lines = report({**HEALTHY, **env})
    assert status == 1
    found = failures(lines)
    assert list(found) == [check], found
    [line] = found[check]
    assert named in line


def fake_distribution(where: Path, name: str, version: str, entry_points_txt: str = "") -> None:
    """A distribution's metadata as pip writes it, on the test's import path (no code)."""
    info = where / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    if entry_points_txt:
        (info / "entry_points.txt").write_text(entry_points_txt)


def test_unsupported_openai_version_is_named(tmp_path: Path) -> None:
    fake_distribution(tmp_path, "openai", "1.99.0")
    status, lines = report({**HEALTHY, "PYTHONPATH": str(tmp_path)})
    assert status == 1
    [line] = failures(lines)["openai"]
    assert "openai>=2.0,<4" in line.replace(" ", "") and "1.99.0" in line


def test_a_second_registration_of_the_entry_point_is_named(tmp_path: Path) -> None:
    fake_distribution(
        tmp_path,
        "old-image-cost",
        "0.0.1",
        "[opentelemetry_instrumentor]\nopenai_image_cost = old_cost:Instrumentor\n",
    )
    status, lines = report({**HEALTHY, "PYTHONPATH": str(tmp_path)})
    assert status == 1
    [line] = failures(lines)["entry point"]
    assert "registered 2 times (old_cost:Instrumentor, otel_image_cost:OpenAIImageCostInstrumentor)" in line


def test_json_report() -> None:
    done = run_command("doctor", "--json", env={**HEALTHY, "OTEL_SDK_DISABLED": "true"})
    assert done.returncode == 1
    checks = json.loads(done.stdout)
    assert [c["check"] for c in checks if not c["ok"]] == ["enabled"]


def test_doctor_is_a_function_of_the_environment() -> None:
    import otel_image_cost

    checks = otel_image_cost.doctor({**HEALTHY, "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "openai_image_cost"})
    assert [check.name for check in checks if not check.ok] == ["enabled"]
    assert all(check.ok for check in otel_image_cost.doctor(HEALTHY))
