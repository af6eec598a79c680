"""collector-config.yaml, checked structurally (no collector binary can be installed here): it loads,
every pipeline uses defined components of the official contrib distribution, listeners do not share
a port, and the metric names the dashboards and alert rules use come out of it unchanged."""

from __future__ import annotations

import copy
import re
from typing import Any

import yaml
from test_ops_common import (
    COLLECTOR_CONFIG,
    INSTRUMENTS,
    contract_table,
    dashboard_queries,
    docs_snippet,
    exported_series_names,
    load_rules,
    metric_names_in,
    prometheus_name,
)

# Component types this config may use, all shipped in otelcol-contrib (the official
# `otel/opentelemetry-collector-contrib` image). `otlp_grpc`/`otlp_http` are the exporters'
# names from 0.144.0 on; `otlp`/`otlphttp` their older names, still accepted as aliases.
CONTRIB_COMPONENTS: dict[str, frozenset[str]] = {
    "receivers": frozenset({"otlp", "prometheus", "hostmetrics", "filelog"}),
    "processors": frozenset(
        {"memory_limiter", "batch", "resource", "resourcedetection", "attributes", "filter", "k8sattributes"}
    ),
    "exporters": frozenset(
        {
            "debug",
            "otlp",
            "otlp_grpc",
            "otlphttp",
            "otlp_http",
            "prometheus",
            "prometheusremotewrite",
            "file",
            "clickhouse",
        }
    ),
    "extensions": frozenset({"health_check", "pprof", "zpages"}),
    "connectors": frozenset(),
}
SIGNALS = ("traces", "metrics", "logs")
# Processors that can rename metrics or labels: none may sit in the metrics pipeline.
RENAMING_PROCESSORS = frozenset({"transform", "metricstransform", "attributes", "resource", "schema"})
COLLECTOR_OWN_METRICS_PORT = 8888  # service.telemetry default


def load(text: str | None = None) -> dict[str, Any]:
    config = yaml.safe_load(text if text is not None else COLLECTOR_CONFIG.read_text())
    assert isinstance(config, dict)
    return config


def component_type(component_id: str) -> str:
    """`otlp_grpc/traces` -> `otlp_grpc`."""
    return component_id.split("/", 1)[0]


def problems(config: dict[str, Any]) -> list[str]:
    """Everything that would make the collector refuse this config, as far as it can be seen."""
    found: list[str] = []
    unknown_sections = set(config) - {*CONTRIB_COMPONENTS, "service"}
    if unknown_sections:
        found.append(f"unknown top-level sections {sorted(unknown_sections)}")
    for kind, allowed in CONTRIB_COMPONENTS.items():
        for component_id in config.get(kind) or {}:
            if component_type(component_id) not in allowed:
                found.append(f"{kind[:-1]} {component_id!r} is not in the contrib distribution allow-list")
    service = config.get("service") or {}
    for extension in service.get("extensions", []):
        if extension not in (config.get("extensions") or {}):
            found.append(f"service uses undefined extension {extension!r}")
    pipelines = service.get("pipelines") or {}
    if not pipelines:
        found.append("no pipelines")
    for pipeline_id, pipeline in pipelines.items():
        if component_type(pipeline_id) not in SIGNALS:
            found.append(f"pipeline {pipeline_id!r} is not a traces/metrics/logs pipeline")
        for kind in ("receivers", "processors", "exporters"):
            for component_id in pipeline.get(kind, []):
                if component_id not in (config.get(kind) or {}):
                    found.append(f"pipeline {pipeline_id} uses undefined {kind[:-1]} {component_id!r}")
        for kind in ("receivers", "exporters"):
            if not pipeline.get(kind):
                found.append(f"pipeline {pipeline_id} has no {kind}")
    return found


def listening_ports(config: dict[str, Any]) -> list[tuple[str, int]]:
    """(component, port) of everything that listens: receivers' protocols, the prometheus exporter,
    extensions, and the collector's own metrics."""
    ports: list[tuple[str, int]] = []

    def port_of(endpoint: str) -> int:
        match = re.fullmatch(r"(?:[\w.\-]+|\[[0-9a-f:]+\])?:(\d+)", endpoint)
        assert match, f"endpoint {endpoint!r} is not host:port"
        return int(match[1])

    for receiver_id, receiver in (config.get("receivers") or {}).items():
        for protocol, settings in ((receiver or {}).get("protocols") or {}).items():
            ports.append((f"receiver {receiver_id} {protocol}", port_of(settings["endpoint"])))
    for exporter_id, exporter in (config.get("exporters") or {}).items():
        if component_type(exporter_id) == "prometheus":
            ports.append((f"exporter {exporter_id}", port_of(exporter["endpoint"])))
    for extension_id, extension in (config.get("extensions") or {}).items():
        if extension and "endpoint" in extension:
            ports.append((f"extension {extension_id}", port_of(extension["endpoint"])))
    ports.append(("service telemetry", COLLECTOR_OWN_METRICS_PORT))
    return ports


def test_config_loads_and_every_pipeline_uses_defined_contrib_components() -> None:
    assert problems(load()) == []


def test_the_checker_catches_broken_configs() -> None:
    """The structural check is only worth something if it fails on the usual mistakes."""
    config = load()
    undefined = copy.deepcopy(config)
    undefined["service"]["pipelines"]["metrics"]["processors"].append("batch/missing")
    foreign = copy.deepcopy(config)
    foreign["exporters"]["datadogish"] = {}
    foreign["service"]["pipelines"]["metrics"]["exporters"].append("datadogish")
    no_receiver = copy.deepcopy(config)
    no_receiver["service"]["pipelines"]["traces"]["receivers"] = []
    assert problems(undefined) == ["pipeline metrics uses undefined processor 'batch/missing'"]
    assert problems(foreign) == ["exporter 'datadogish' is not in the contrib distribution allow-list"]
    assert problems(no_receiver) == ["pipeline traces has no receivers"]


def test_receives_otlp_over_grpc_and_http_on_all_interfaces() -> None:
    protocols = load()["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"


def test_listening_ports_do_not_clash() -> None:
    ports = listening_ports(load())
    assert [component for component, _ in ports] == [
        "receiver otlp grpc",
        "receiver otlp http",
        "exporter prometheus",
        "extension health_check",
        "service telemetry",
    ]
    numbers = [port for _, port in ports]
    assert len(numbers) == len(set(numbers)), ports


def test_every_pipeline_starts_with_memory_limiter_and_ends_with_batch() -> None:
    for pipeline_id, pipeline in load()["service"]["pipelines"].items():
        processors = pipeline["processors"]
        assert processors[0] == "memory_limiter", pipeline_id
        assert processors[-1] == "batch", pipeline_id


def test_metrics_go_to_the_prometheus_exporter_with_resource_attributes_as_labels() -> None:
    config = load()
    pipeline = config["service"]["pipelines"]["metrics"]
    assert pipeline["receivers"] == ["otlp"]
    assert pipeline["exporters"] == ["prometheus"]
    exporter = config["exporters"]["prometheus"]
    assert exporter["resource_to_telemetry_conversion"] == {"enabled": True}


def test_metric_names_pass_through_unchanged() -> None:
    """No processor in the metrics pipeline renames anything, and the exporter adds no namespace
    and keeps the unit/type suffixes the contract's Prometheus names have."""
    config = load()
    processors = config["service"]["pipelines"]["metrics"]["processors"]
    assert not {component_type(p) for p in processors} & RENAMING_PROCESSORS
    exporter = config["exporters"]["prometheus"]
    assert "namespace" not in exporter
    assert exporter.get("add_metric_suffixes", True) is True
    assert (
        exporter.get("translation_strategy", "UnderscoreEscapingWithSuffixes")
        == "UnderscoreEscapingWithSuffixes"
    )


def test_name_translation_gives_the_contracts_prometheus_names() -> None:
    for instrument in INSTRUMENTS:
        assert prometheus_name(instrument.name, instrument.unit, instrument.kind) == instrument.prometheus


def test_contract_table_matches() -> None:
    expected = [(i.name, i.kind, i.unit, i.prometheus) for i in INSTRUMENTS]
    assert contract_table() == expected


def test_every_metric_the_dashboard_and_rules_read_is_exported() -> None:
    rules = load_rules()
    recorded = {rule.name for rule in rules if rule.kind == "record"}  # e.g. the budgets
    exported = exported_series_names()
    used: set[str] = set()
    for _, expr in dashboard_queries():
        used |= metric_names_in(expr)
    for rule in rules:
        used |= metric_names_in(rule.expr)
    used -= recorded
    assert used, "no contract metric found in the dashboard or the rules"
    assert used <= exported, sorted(used - exported)
    # and every instrument is shown somewhere
    families = {name.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count") for name in used}
    assert families == {i.prometheus for i in INSTRUMENTS}


def test_traces_go_to_an_otlp_backend_named_by_an_environment_variable() -> None:
    config = load()
    exporters = config["service"]["pipelines"]["traces"]["exporters"]
    assert len(exporters) == 1
    assert component_type(exporters[0]) in {"otlp_grpc", "otlp", "otlp_http", "otlphttp"}
    endpoint = config["exporters"][exporters[0]]["endpoint"]
    assert re.fullmatch(r"\$\{env:OTEL_IMAGE_COST_TRACES_ENDPOINT(:-[^}]+)?\}", endpoint), endpoint


def test_billing_records_go_to_a_json_lines_file_and_an_otlp_logs_backend() -> None:
    """The logs pipeline carries the billing records: OTLP JSON lines in a file (what the `reprice`
    command reads) and an OTLP backend, both places named by environment variables."""
    config = load()
    pipeline = config["service"]["pipelines"]["logs"]
    assert pipeline["receivers"] == ["otlp"]
    assert pipeline["exporters"] == ["file/billing", "otlp_grpc/logs"]
    billing_file = config["exporters"]["file/billing"]
    assert billing_file["format"] == "json"
    assert re.fullmatch(r"\$\{env:OTEL_IMAGE_COST_BILLING_FILE:-/[^}]+\.jsonl\}", billing_file["path"])
    endpoint = config["exporters"]["otlp_grpc/logs"]["endpoint"]
    assert re.fullmatch(r"\$\{env:OTEL_IMAGE_COST_LOGS_ENDPOINT(:-[^}]+)?\}", endpoint), endpoint
    without_logs = copy.deepcopy(config)
    del without_logs["exporters"]["file/billing"]
    assert problems(without_logs) == ["pipeline logs uses undefined exporter 'file/billing'"]


def test_environment_references_are_well_formed() -> None:
    text = COLLECTOR_CONFIG.read_text()
    references = re.findall(r"\$\{[^}]*\}", "\n".join(line.split("#", 1)[0] for line in text.splitlines()))
    assert references
    for reference in references:
        assert re.fullmatch(r"\$\{env:[A-Z][A-Z0-9_]*(:-[^}]*)?\}", reference), reference


def test_debug_exporter_is_defined_but_off_and_can_be_switched_on() -> None:
    config = load()
    assert "debug" in config["exporters"]
    for pipeline in config["service"]["pipelines"].values():
        assert "debug" not in pipeline["exporters"]
    # docs/ops.md: --config='yaml:service::pipelines::metrics::exporters: [prometheus, debug]'
    switched = copy.deepcopy(config)
    switched["service"]["pipelines"]["metrics"]["exporters"] = ["prometheus", "debug"]
    assert problems(switched) == []


def test_docs_remote_write_snippet_fits_the_config() -> None:
    """docs/ops.md's prometheusremotewrite addition merges into a config the checker accepts."""
    snippet = yaml.safe_load(
        docs_snippet("# collector-config.yaml additions: metrics straight to Mimir/Cortex/Thanos Receive")
    )
    config = load()
    config["exporters"].update(snippet["exporters"])
    config["service"]["pipelines"]["metrics"].update(snippet["service"]["pipelines"]["metrics"])
    assert problems(config) == []
    assert config["service"]["pipelines"]["metrics"]["exporters"] == ["prometheus", "prometheusremotewrite"]


def test_docs_billing_record_snippets_fit_the_config() -> None:
    """docs/ops.md's Loki and ClickHouse additions merge into a config the checker accepts."""
    for first_line, exporters in (
        ("# collector-config.yaml additions: billing records to Loki", ["file/billing", "otlp_http/loki"]),
        (
            "# collector-config.yaml additions: billing records into ClickHouse",
            ["file/billing", "otlp_grpc/logs", "clickhouse"],
        ),
    ):
        snippet = yaml.safe_load(docs_snippet(first_line))
        config = load()
        config["exporters"].update(snippet["exporters"])
        config["service"]["pipelines"]["logs"].update(snippet["service"]["pipelines"]["logs"])
        assert problems(config) == [], first_line
        assert config["service"]["pipelines"]["logs"]["exporters"] == exporters
