"""Price recorded calls again with another price table (a price change after the fact).

Input is OTLP JSON lines, as the collector's `file` exporter writes them: one `resourceLogs`
(billing records, event `openai.image.billing`) or `resourceSpans` document per line. Billing
records are the ledger (one per call, never sampled); when a file holds any, spans are ignored so
no call counts twice. Each call is read by the attribute names of docs/telemetry-contract.md and
priced again by the cost engine from its raw usage (`openai.image.usage.raw`) plus its image
model, quality, size and counts; a DALL-E call from its quality, size and count. An estimate
cannot be repeated exactly (the prompt is not recorded), so it keeps its recorded cost. The
text-model and SVG-author parts of a call are not image prices: they keep theirs too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final

from .cost import ImageGeneration, price_image_generation
from .errors import InputError
from .extract import image_token_usage
from .prices import PriceTable

__all__ = ["RecordedCall", "Repricing", "UserTotals", "read_calls", "reprice"]

BILLING_EVENT: Final = "openai.image.billing"
_USAGE: Final = "usage"
_PER_IMAGE: Final = "per_image"
_ESTIMATE: Final = "estimate"
# Cost components priced from something other than the image price table (they keep their cost).
_OTHER_PARTS: Final = ("openai.image.cost.mainline", "openai.image.cost.svg_author")
_NO_USER: Final = "(no user.id)"


@dataclass(frozen=True, slots=True)
class RecordedCall:
    """One call as a billing record or call span describes it."""

    user: str | None
    source: str | None  # openai.image.cost.source
    cost: Decimal | None  # gen_ai.usage.cost
    other_parts: Decimal  # mainline + svg_author
    model: str | None
    quality: str | None
    size: str | None
    images: int
    partial_images: int
    output_format: str | None
    raw_usage: str | None
    where: str  # "file:line", for error messages


@dataclass(slots=True)
class UserTotals:
    """One user's calls under the recorded prices and the new ones."""

    calls: int = 0
    repriced: int = 0  # priced again from usage or the per-image list
    kept: int = 0  # estimates: recorded cost kept
    unpriced: int = 0  # no cost recorded, or none under the new prices
    old: Decimal = field(default_factory=lambda: Decimal(0))
    new: Decimal = field(default_factory=lambda: Decimal(0))


@dataclass(frozen=True, slots=True)
class Repricing:
    """Per-user totals (key `None` = calls with no `user.id`), and what the input held."""

    users: dict[str | None, UserTotals]
    read_from: str  # "billing records" or "spans"
    pricing_version: str

    @property
    def total(self) -> UserTotals:
        total = UserTotals()
        for user in self.users.values():
            total.calls += user.calls
            total.repriced += user.repriced
            total.kept += user.kept
            total.unpriced += user.unpriced
            total.old += user.old
            total.new += user.new
        return total


def reprice(paths: Iterable[str | Path], prices: PriceTable) -> Repricing:
    """Read every call in `paths` (OTLP JSON lines) and total it per user, old and new."""
    records: list[RecordedCall] = []
    spans: list[RecordedCall] = []
    for path in paths:
        for kind, call in read_calls(path):
            (records if kind == "record" else spans).append(call)
    calls = records or spans
    users: dict[str | None, UserTotals] = {}
    for call in calls:
        totals = users.setdefault(call.user, UserTotals())
        totals.calls += 1
        totals.old += call.cost or 0
        new = _new_cost(call, prices)
        if new is None:
            totals.unpriced += 1
        elif call.source == _ESTIMATE:
            totals.kept += 1
        else:
            totals.repriced += 1
        totals.new += new or 0
    return Repricing(users, "billing records" if records else "spans", prices.version)


def _new_cost(call: RecordedCall, prices: PriceTable) -> Decimal | None:
    """The call's cost under `prices`; None when it has none (unpriced before, or now)."""
    if call.source == _ESTIMATE:
        return call.cost
    if call.source not in (_USAGE, _PER_IMAGE) or call.cost is None:
        return None
    usage = None
    if call.source == _USAGE:
        usage = image_token_usage(_json(call.raw_usage, call.where)) if call.raw_usage else None
        if usage is None:
            raise InputError(f"{call.where}: a usage-priced call without a readable openai.image.usage.raw")
    generation = ImageGeneration(
        model=call.model,
        quality=call.quality,
        size=call.size,
        images=call.images,
        partial_images=call.partial_images,
        usage=usage,
        output_format=call.output_format,
    )
    image = price_image_generation(generation, prices).total
    return None if image is None else image + call.other_parts


def read_calls(path: str | Path) -> Iterator[tuple[str, RecordedCall]]:
    """("record" or "span", call) for every billing record and call span in an OTLP JSON lines file."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        document = _json(line, where)
        if not isinstance(document, dict) or not ({"resourceLogs", "resourceSpans"} & document.keys()):
            raise InputError(f"{where}: not an OTLP JSON document (no resourceLogs or resourceSpans)")
        for log in _items(document, where, "resourceLogs", "scopeLogs", "logRecords"):
            attributes = _attributes(log, where)
            if log.get("eventName") == BILLING_EVENT or attributes.get("event.name") == BILLING_EVENT:
                yield "record", _call(attributes, where)
        for span in _items(document, where, "resourceSpans", "scopeSpans", "spans"):
            attributes = _attributes(span, where)
            # A call span carries the cost source; a Responses image's child span names the tool.
            if "openai.image.cost.source" in attributes and "gen_ai.tool.name" not in attributes:
                yield "span", _call(attributes, where)


def _items(document: Mapping[str, Any], where: str, *levels: str) -> Iterator[Mapping[str, Any]]:
    """The leaves under resource -> scope -> items, each level a list of objects."""
    found: list[Any] = [document]
    for level in levels:
        nested: list[Any] = []
        for parent in found:
            children = parent.get(level, [])
            if not isinstance(children, list) or not all(isinstance(c, dict) for c in children):
                raise InputError(f"{where}: {level} must be a list of objects")
            nested.extend(children)
        found = nested
    yield from found


def _attributes(item: Mapping[str, Any], where: str) -> dict[str, Any]:
    """OTLP JSON `attributes` ([{key, value: AnyValue}]) as a plain dict."""
    attributes = item.get("attributes", [])
    if not isinstance(attributes, list):
        raise InputError(f"{where}: attributes must be a list")
    plain: dict[str, Any] = {}
    for entry in attributes:
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            raise InputError(f"{where}: malformed attribute {entry!r}")
        plain[entry["key"]] = _any_value(entry.get("value"), where, entry["key"])
    return plain


def _any_value(value: Any, where: str, key: str) -> Any:
    """An OTLP AnyValue: int64 is a JSON string (or number), double a number."""
    if not isinstance(value, dict) or len(value) > 1:
        raise InputError(f"{where}: attribute {key}: malformed value {value!r}")
    if not value:
        return None
    [(kind, inner)] = value.items()
    if kind == "arrayValue" and isinstance(inner, dict) and isinstance(inner.get("values", []), list):
        # An attribute array holds primitives only: one level, so hostile nesting cannot recurse.
        values = [
            item for item in inner.get("values", []) if not (isinstance(item, dict) and "arrayValue" in item)
        ]
        if len(values) != len(inner.get("values", [])):
            raise InputError(f"{where}: attribute {key}: nested arrays")
        return [_any_value(item, where, key) for item in values]
    if kind in ("stringValue", "boolValue", "doubleValue", "intValue", "bytesValue", "kvlistValue"):
        return inner
    raise InputError(f"{where}: attribute {key}: unknown value kind {kind!r}")


def _call(attributes: Mapping[str, Any], where: str) -> RecordedCall:
    return RecordedCall(
        user=_text(attributes, "user.id", where),
        source=_text(attributes, "openai.image.cost.source", where),
        cost=_usd(attributes, "gen_ai.usage.cost", where),
        other_parts=sum((_usd(attributes, key, where) or Decimal(0) for key in _OTHER_PARTS), Decimal(0)),
        model=_text(attributes, "openai.image.model", where),
        quality=_text(attributes, "openai.image.quality", where),
        size=_text(attributes, "openai.image.size", where),
        images=_count(attributes, "openai.image.count", where),
        partial_images=_count(attributes, "openai.image.partial_images", where),
        output_format=_text(attributes, "openai.image.output_format", where),
        raw_usage=_text(attributes, "openai.image.usage.raw", where),
        where=where,
    )


def _text(attributes: Mapping[str, Any], key: str, where: str) -> str | None:
    value = attributes.get(key)
    if value is not None and not isinstance(value, str):
        raise InputError(f"{where}: {key} must be a string, got {value!r}")
    return value


def _usd(attributes: Mapping[str, Any], key: str, where: str) -> Decimal | None:
    value = attributes.get(key)
    if value is None:
        return None
    try:
        amount = (
            Decimal(str(value))
            if isinstance(value, int | float | str) and not isinstance(value, bool)
            else None
        )
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite() or amount < 0:
        raise InputError(f"{where}: {key} must be a finite USD amount >= 0, got {value!r}")
    return amount


def _count(attributes: Mapping[str, Any], key: str, where: str) -> int:
    value = attributes.get(key, 0)
    try:
        count = int(value) if isinstance(value, int | str) and not isinstance(value, bool) else -1
    except ValueError:
        count = -1
    if count < 0:
        raise InputError(f"{where}: {key} must be an integer >= 0, got {value!r}")
    return count


def _json(text: str | None, where: str) -> Any:
    try:
        return json.loads(text or "")
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not JSON: {exc}") from exc
    except RecursionError as exc:
        raise InputError(f"{where}: JSON nested too deeply") from exc
