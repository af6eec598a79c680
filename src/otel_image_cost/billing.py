"""Billing records: one OpenTelemetry log record per finished call, the per-call ledger.

Spans may be sampled away and metrics are aggregates; a billing record is emitted for every
call whatever the sampler decided, with the call's span as its context (a span the sampler
dropped still has a trace and span id), so records and any kept spans join on them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry._logs import Logger, SeverityNumber
from opentelemetry.trace import NonRecordingSpan, Span
from opentelemetry.util.types import AttributeValue

from . import telemetry as t

EVENT_NAME = "openai.image.billing"


def billing_attributes(
    call_attributes: Mapping[str, AttributeValue],
    attribution: Mapping[str, str],
    unpriced_reasons: tuple[str, ...],
) -> t.Attributes:
    """What a record carries: the call's attributes (every cost component and part included,
    whatever parts a call kind has) without prompt text, its attribution, and the reasons of
    all its unpriced parts (one reason, or several distinct ones joined by commas, in part order)."""
    # attribution first: its keys never displace the call's own
    record: t.Attributes = {**attribution, **call_attributes} if attribution else dict(call_attributes)
    for key in t.CONTENT_KEYS:
        record.pop(key, None)
    record.pop(t.IMAGE_UNPRICED_REASON, None)
    if unpriced_reasons:
        record[t.IMAGE_UNPRICED_REASON] = ",".join(dict.fromkeys(unpriced_reasons))
    return record


def emit_billing_record(logger: Logger, span: Span, attributes: t.Attributes) -> None:
    """Emit one record in the context of `span` (recording or not). The record holds only the
    span's ids, not the span: a log pipeline that queues records keeps no finished span alive."""
    logger.emit(
        timestamp=time.time_ns(),
        context=trace.set_span_in_context(NonRecordingSpan(span.get_span_context())),
        severity_number=SeverityNumber.INFO,
        severity_text="INFO",
        attributes=attributes,
        event_name=EVENT_NAME,
    )
