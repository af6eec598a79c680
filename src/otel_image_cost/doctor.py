"""Why no telemetry appears: the checks `otel-image-cost doctor` runs where the app runs.

Each check reads the same things `opentelemetry-instrument` and the plugin read (installed
distributions, entry points, the environment, the price file), so a failure here is the failure
the app would meet, named, with its fix.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points, version
from typing import Final

from opentelemetry.instrumentation.dependencies import get_dependency_conflicts

from .config import ENV_PRICES, load_settings
from .instrumentor import OpenAIImageCostInstrumentor, configured_models_unpriced
from .prices import PriceFileError, PriceTable, load_price_table

__all__ = ["Check", "doctor"]

ENTRY_POINT_GROUP: Final = "opentelemetry_instrumentor"
ENTRY_POINT_NAME: Final = "openai_image_cost"
_ENTRY_POINT_VALUE: Final = "otel_image_cost:OpenAIImageCostInstrumentor"
_SIGNALS: Final = ("traces", "metrics", "logs")
_OTLP_BY_PROTOCOL: Final = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}
_DISTRO_DEFAULT_PROTOCOL: Final = "grpc"  # what opentelemetry-distro sets when nothing is
# The package that provides each exporter entry point of the OpenTelemetry Python project.
_EXPORTER_PACKAGES: Final = {
    "otlp_proto_grpc": "opentelemetry-exporter-otlp-proto-grpc",
    "otlp_proto_http": "opentelemetry-exporter-otlp-proto-http",
    "prometheus": "opentelemetry-exporter-prometheus",
    "console": "opentelemetry-sdk",
    "zipkin_json": "opentelemetry-exporter-zipkin-json",
    "zipkin_proto": "opentelemetry-exporter-zipkin-proto-http",
}


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the report."""

    name: str
    ok: bool
    detail: str


def doctor(environ: Mapping[str, str] = os.environ) -> list[Check]:
    """Every check, in the order a call's telemetry depends on them; any not `ok` is a failure."""
    checks = [_openai_version(), _entry_point(), _enabled(environ), _configurator()]
    checks += _exporters(environ)
    prices, price_check = _price_file(environ)
    checks.append(price_check)
    checks += _settings(environ, prices)
    return checks


def _openai_version() -> Check:
    requirements = OpenAIImageCostInstrumentor().instrumentation_dependencies()
    conflict = get_dependency_conflicts(requirements)
    supported = ", ".join(requirements)
    if conflict is not None:
        return Check("openai", False, f"{conflict}; the plugin instruments {supported} only")
    return Check("openai", True, f"openai {version('openai')} (supported: {supported})")


def _entry_point() -> Check:
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == ENTRY_POINT_NAME]
    where = f"entry point {ENTRY_POINT_NAME!r} in group {ENTRY_POINT_GROUP!r}"
    if not found:
        return Check("entry point", False, f"no {where}: reinstall otel-image-cost (pip install .)")
    values = sorted({ep.value for ep in found})
    if values != [_ENTRY_POINT_VALUE] or len(found) != 1:
        return Check(
            "entry point",
            False,
            f"{where} registered {len(found)} times ({', '.join(values)}); expected once, "
            f"{_ENTRY_POINT_VALUE}: remove the stale installation",
        )
    try:
        loaded = found[0].load()
    except Exception as exc:  # any import failure is the finding
        return Check("entry point", False, f"{where} does not load: {type(exc).__name__}: {exc}")
    if loaded is not OpenAIImageCostInstrumentor:
        return Check("entry point", False, f"{where} loads {loaded!r}, not this installation's instrumentor")
    return Check("entry point", True, f"{where} -> {_ENTRY_POINT_VALUE}")


def _enabled(environ: Mapping[str, str]) -> Check:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return Check("enabled", False, "OTEL_SDK_DISABLED=true: the SDK records nothing; unset it")
    disabled = environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "")
    # Parsed as opentelemetry-instrument does: comma-separated names, spaces stripped; `*` is all.
    if {ENTRY_POINT_NAME, "*"} & {name.strip() for name in disabled.split(",")}:
        return Check(
            "enabled",
            False,
            f"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS={disabled!r} turns the plugin off: "
            f"remove {ENTRY_POINT_NAME} (or *) from it",
        )
    return Check("enabled", True, "not disabled (OTEL_PYTHON_DISABLED_INSTRUMENTATIONS, OTEL_SDK_DISABLED)")


def _configurator() -> Check:
    names = sorted(
        {ep.dist.name if ep.dist else ep.value for ep in entry_points(group="opentelemetry_configurator")}
    )
    if not names:
        return Check(
            "sdk setup",
            False,
            "no OpenTelemetry configurator is installed, so opentelemetry-instrument sets up no SDK and "
            "nothing is exported: pip install opentelemetry-distro (code that passes its own providers "
            "to instrument() does not need it)",
        )
    return Check("sdk setup", True, f"{', '.join(names)} sets up the SDK under opentelemetry-instrument")


def _exporters(environ: Mapping[str, str]) -> Iterator[Check]:
    """What `opentelemetry-instrument` will load per signal, as opentelemetry-distro defaults it."""
    exported: list[str] = []
    for signal in _SIGNALS:
        setting = f"OTEL_{signal.upper()}_EXPORTER"
        names = [name.strip() for name in environ.get(setting, "otlp").split(",") if name.strip()]
        if names in ([], ["none"]):
            yield Check(f"{signal} exporter", True, f"{setting}=none: {signal} are not exported")
            continue
        for name in names:
            check = _exporter(signal, setting, name, environ)
            exported += [signal] if check.ok else []
            yield check
    if not {"traces", "metrics"} & set(exported):
        yield Check(
            "exporters",
            False,
            "neither spans nor metrics leave the process: set OTEL_TRACES_EXPORTER or "
            "OTEL_METRICS_EXPORTER (console, otlp, prometheus)",
        )


def _exporter(signal: str, setting: str, name: str, environ: Mapping[str, str]) -> Check:
    component = name
    if name == "otlp":
        protocol_setting = f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL"
        protocol = (
            environ.get(protocol_setting)
            or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or _DISTRO_DEFAULT_PROTOCOL
        ).strip()
        if protocol not in _OTLP_BY_PROTOCOL:
            return Check(
                f"{signal} exporter",
                False,
                f"OTLP protocol {protocol!r} is not supported (set OTEL_EXPORTER_OTLP_PROTOCOL to "
                f"{' or '.join(_OTLP_BY_PROTOCOL)})",
            )
        component = _OTLP_BY_PROTOCOL[protocol]
    group = f"opentelemetry_{signal}_exporter"
    if any(ep.name == component for ep in entry_points(group=group)):
        shown = name if component == name else f"{name} ({component})"
        return Check(f"{signal} exporter", True, f"{setting}: {shown} is installed")
    package = _EXPORTER_PACKAGES.get(component, f"the package that provides {component!r}")
    default = "" if setting in environ else " (opentelemetry-distro's default)"
    return Check(
        f"{signal} exporter",
        False,
        f"{setting}={name}{default} needs {component!r}, which is not installed: opentelemetry-instrument "
        f"fails with \"Requested component '{component}' not found in entry point '{group}'\" and "
        f"exports nothing; fix: pip install {package}, or set {setting}=console (or none)",
    )


def _price_file(environ: Mapping[str, str]) -> tuple[PriceTable | None, Check]:
    path = environ.get(ENV_PRICES) or None
    try:
        table = load_price_table(path)
    except PriceFileError as exc:
        return None, Check("price file", False, f"{ENV_PRICES}: {exc}; every call would be unpriced")
    origin = f"built-in table with {path} over it" if path else "built-in table"
    return table, Check("price file", True, f"{origin}: version {table.version}, {len(table.models)} models")


def _settings(environ: Mapping[str, str], prices: PriceTable | None) -> Iterator[Check]:
    """The plugin's settings as `instrument()` reads them: every value it would ignore is a failure."""
    rejected = _Collected()
    config_logger = logging.getLogger("otel_image_cost.config")
    config_logger.addHandler(rejected)
    propagate, config_logger.propagate = config_logger.propagate, False
    try:
        settings = load_settings({}, environ)
    finally:
        config_logger.removeHandler(rejected)
        config_logger.propagate = propagate
    for message in rejected.messages:
        yield Check("settings", False, message.removeprefix("otel-image-cost: "))
    unpriced = configured_models_unpriced(settings, prices) if prices is not None else []
    for setting, model in unpriced:
        yield Check("settings", False, f"{setting} names {model!r}, which the price table cannot price")
    if not rejected.messages and not unpriced:
        yield Check("settings", True, "the plugin's settings are valid")


class _Collected(logging.Handler):
    """The warnings `load_settings` logs for values it ignores."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
