"""A Responses API call whose model may draw with the `image_generation` tool.

The response does not say which image model drew, and before openai 3.41 not what the images
cost; this call resolves the model as well as it can be resolved, prices the image part and
the text (mainline) part separately, and gives each image its own child span.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from . import telemetry as t
from .attribution import USER_ID, valid_text
from .calls import Runtime, TrackedCall, effective
from .cost import Cost, ImageGeneration, SvgAuthorUsage, estimated_output_tokens, split_cost
from .extract import gif_frame_count
from .extract_responses import (
    IN_PROGRESS,
    ImageCallItem,
    ImageTool,
    ResponseOutcome,
    ResponsesRequest,
    ResponsesStreamTally,
    response_outcome,
)
from .safety import report_internal_error
from .text_prices import price_svg_author, price_text_model

RESPONSES_TOOL = "responses_tool"
STREAM_ABANDONED = "stream_abandoned"
EXECUTE_TOOL = "execute_tool"
MIXED = "mixed"


def resolve_tool_model(
    requested: ImageTool | None, echoed: ImageTool | None, sdk_default: str | None
) -> tuple[str | None, str | None]:
    """(image model, source): the request's tool entry, the echoed tools, the SDK's documented default."""
    if requested is not None and requested.model:
        return requested.model, "request"
    if echoed is not None and echoed.model:
        return echoed.model, "response"
    if sdk_default:
        return sdk_default, "default"
    return None, None


def combined(costs: Sequence[Cost], pricing_version: str | None) -> Cost:
    """Several images' costs as one: components summed; unknown if any one is unknown."""
    unknown = next((c for c in costs if c.total is None), None)
    if unknown is not None:
        return unknown
    components: dict[str, Decimal] = {}
    for cost in costs:
        for name, amount in cost.components.items():
            components[name] = components.get(name, Decimal(0)) + amount
    source = costs[0].source if costs else "estimate"
    return Cost(source, MappingProxyType(components), pricing_version)


class ResponsesCall(TrackedCall):
    """`responses.create` / `parse` / `retrieve` (and the `stream` helper, which calls them)."""

    def __init__(
        self,
        runtime: Runtime,
        client: Any,
        request: ResponsesRequest,
        *,
        retrieve: bool,
    ) -> None:
        """`client` is the SDK client the call goes through (on a WebSocket, what stands for it)."""
        self.request = request
        self._outcome: ResponseOutcome | None = None
        self._tally = ResponsesStreamTally() if request.stream else None
        super().__init__(
            runtime,
            operation_name=t.OPERATION_RESPONSES,
            image_operation=RESPONSES_TOOL,
            request_model=request.model,
            request_user=request.user,
            prompt=request.prompt,
            client=client,
            streaming=request.stream,
            attributes=_tool_attributes(request.tool) if request.tool is not None else {},
            deferred=retrieve,
        )

    def observe_response(self, response: Any) -> None:
        if not self.ended:
            try:
                self._outcome = response_outcome(response)
            except Exception as exc:
                report_internal_error("ResponsesCall.observe_response", exc)

    def observe_event(self, event: Any) -> None:
        if self._tally is not None and not self.ended:
            try:  # per event: a plain try costs nothing, a `with swallowed(...)` block ~0.8 µs
                self._tally.add(event, time.time_ns())
            except Exception as exc:
                report_internal_error("ResponsesCall.observe_event", exc)

    def final_event_seen(self) -> bool:
        return self._tally is None or self._tally.final is not None

    def partial_images_seen(self) -> int | None:
        return self._tally.partial_images if self._tally is not None else None

    def record(self) -> None:
        abandoned = self.outcome == t.OUTCOME_ABANDONED
        tally = self._tally
        outcome = self._outcome or (tally.outcome(abandoned=abandoned) if tally is not None else None)
        if self.span is None:
            if outcome is None or (outcome.tool is None and not outcome.items):
                return  # a retrieved response without the image tool is none of our business
            # A retrieve names neither model nor user: the response echoes both.
            if outcome.model is not None:
                self.span_name = f"{t.OPERATION_RESPONSES} {outcome.model}"
            if outcome.user is not None:
                self.attribution.setdefault(USER_ID, outcome.user)  # already made safe by `text`
            self.open_span()
        if outcome is None:
            self.record_metrics()
            return
        self.set_attributes(_response_attributes(outcome))
        if not outcome.terminal or (abandoned and self.request.background):
            # Queued background work (a background stream left early goes on too): priced when
            # the completed response is retrieved or its stream resumed.
            self.set_attributes({t.IMAGE_COUNT: 0, t.IMAGE_COST_SOURCE: t.SOURCE_DEFERRED})
            self.record_metrics()
        elif not self.runtime.priced_responses.first_time(outcome.id):
            # Priced before: the span still describes the response, at no cost (rule 8).
            self.set_attributes(
                {**self._description(outcome).attributes, t.IMAGE_COST_SOURCE: t.SOURCE_ALREADY_COUNTED}
            )
            self.record_metrics()
        else:
            self._record_priced(outcome, abandoned=abandoned)

    def _description(self, outcome: ResponseOutcome) -> _Description:
        """What the response says about its images, before any pricing."""
        model, source = resolve_tool_model(self.request.tool, outcome.tool, self.runtime.default_tool_model)
        tool = self.request.tool or outcome.tool or ImageTool()
        items = outcome.items
        drawn = [item for item in items if not item.failed]
        quality = _one_or_mixed({_item_quality(i, tool) for i in drawn}, effective(None, tool.quality, None))
        size = _one_or_mixed({_item_size(i, tool) for i in drawn}, effective(None, tool.size, None))
        whole = ImageGeneration(
            model=model,
            quality=quality,
            size=size,
            images=len(drawn),
            partial_images=sum(item.partial_images for item in items),
            usage=outcome.image_usage,
            output_format=tool.output_format,
            unpriced_reason=None if model else "no_model",
        )
        svg_usage = _summed_svg_usage([item.svg_usage for item in items if item.svg_usage])
        received = sum(1 for item in drawn if item.status != IN_PROGRESS)  # not still being drawn
        attributes: t.Attributes = {
            t.IMAGE_QUALITY: quality,
            t.IMAGE_SIZE: size,
            t.IMAGE_COUNT: received,
            t.IMAGE_PARTIAL_IMAGES: whole.partial_images,
            **t.usage_attributes(outcome.image_usage, outcome.image_usage_json),
            **t.svg_attributes(svg_usage),
            **t.present({t.IMAGE_MODEL: model, t.IMAGE_MODEL_SOURCE: source}),
        }
        if self.request.tool is None:
            attributes.update(_format_attributes(tool, None))
        actions = {item.action for item in items if item.action}
        if actions or tool.action:
            attributes[t.IMAGE_ACTION] = _one_or_mixed(actions, tool.action)  # reported, else as sent
        return _Description(attributes, whole, tool, model, source, received, svg_usage)

    def _record_priced(self, outcome: ResponseOutcome, *, abandoned: bool) -> None:
        described = self._description(outcome)
        whole, items = described.whole, outcome.items
        if abandoned and not items:
            # No image generation had begun (rule 12): the image part is unpriced.
            version = self.runtime.prices.version if self.runtime.prices is not None else None
            image_cost = Cost("unknown", MappingProxyType({}), version, STREAM_ABANDONED)
            shares: list[Cost] = []
        else:
            image_cost, shares = self._price_images(whole, described.tool, items)
        item_svg = [price_svg_author(item.svg_usage) if item.svg_usage else None for item in items]
        svg_costs = [cost for cost in item_svg if cost is not None]
        parts = {t.PART_IMAGE: image_cost}
        if svg_costs:
            parts[t.PART_SVG_AUTHOR] = combined(svg_costs, None)
        mainline = self._price_mainline(outcome, abandoned=abandoned)
        parts[t.PART_MAINLINE] = mainline
        self.set_attributes({**described.attributes, **t.parts_attributes(parts)})
        for item, share, svg in zip(items, shares, item_svg, strict=True):
            self._item_span(item, share, svg, described.model, described.source, described.tool)
        self.record_metrics(
            parts=parts,
            images=described.received,
            partial_images=whole.partial_images,
            tokens=t.token_points(t.PART_MAINLINE, outcome.usage)
            + t.token_points(t.PART_IMAGE, outcome.image_usage)
            + t.token_points(t.PART_SVG_AUTHOR, described.svg_usage),
        )

    def _price_images(
        self, whole: ImageGeneration, tool: ImageTool, items: tuple[ImageCallItem, ...]
    ) -> tuple[Cost, list[Cost]]:
        """The image part: reported `tool_usage` split over the items, else an estimate per item."""
        runtime = self.runtime
        model = whole.model
        usage = whole.usage
        if usage is not None and (usage.input_tokens or usage.output_tokens):
            cost = runtime.price(whole)
            if cost.total is None or not items:
                return cost, [cost] * len(items)
            weights = [0 if item.failed else self._weight(model, item, tool) for item in items]
            return cost, split_cost(cost, weights)
        version = runtime.prices.version if runtime.prices is not None else None
        shares = [
            Cost("estimate", MappingProxyType({}), version)
            if item.failed
            else runtime.price(
                replace(
                    whole,
                    quality=_item_quality(item, tool),
                    size=_item_size(item, tool),
                    images=1,
                    partial_images=item.partial_images,
                    prompt_chars=len(item.revised_prompt) if item.revised_prompt else 0,
                    usage=None,
                    output_format=item.output_format or tool.output_format,
                )
            )
            for item in items
        ]
        return combined(shares, version), shares

    def _weight(self, model: str | None, item: ImageCallItem, tool: ImageTool) -> int:
        prices = self.runtime.prices
        if model is None or prices is None:
            return 0
        return estimated_output_tokens(model, _item_quality(item, tool), _item_size(item, tool), prices) or 0

    def _price_mainline(self, outcome: ResponseOutcome, *, abandoned: bool) -> Cost:
        """The text model's part: priced from `usage`, else unpriced with the reason (an abandoned
        stream never saw its usage; a response may report none)."""
        usage = outcome.usage
        if abandoned or usage is None:
            return Cost("unknown", MappingProxyType({}), None, STREAM_ABANDONED if abandoned else "no_usage")
        model = outcome.model or self.request.model
        if not usage.valid:
            return Cost("unknown", MappingProxyType({}), None, "invalid_usage")
        amount = None
        if model is not None:
            try:
                amount = price_text_model(
                    model,
                    input_tokens=usage.input_tokens,
                    cached_tokens=usage.cached_tokens,
                    output_tokens=usage.output_tokens,
                    service_tier=outcome.service_tier,
                )
            except ValueError:
                amount = None
        if amount is None:
            return Cost("unknown", MappingProxyType({}), None, "unknown_text_model")
        return Cost("usage", MappingProxyType({t.PART_MAINLINE: amount}), None)

    def _item_span(
        self,
        item: ImageCallItem,
        share: Cost,
        svg: Cost | None,
        model: str | None,
        source: str | None,
        tool: ImageTool,
    ) -> None:
        parts = {t.PART_IMAGE: share}
        if svg is not None:
            parts[t.PART_SVG_AUTHOR] = svg
        attributes: t.Attributes = {
            t.PROVIDER_NAME: self.attributes[t.PROVIDER_NAME],
            t.OPERATION_NAME: EXECUTE_TOOL,
            t.TOOL_NAME: "image_generation",
            t.IMAGE_OPERATION: RESPONSES_TOOL,
            t.IMAGE_QUALITY: _item_quality(item, tool),
            t.IMAGE_SIZE: _item_size(item, tool),
            t.IMAGE_COUNT: 0 if item.failed else 1,
            t.IMAGE_PARTIAL_IMAGES: item.partial_images,
            **t.parts_attributes(parts),
            **t.svg_attributes(item.svg_usage),
            **_format_attributes(tool, item.output_format),
        }
        optional = {
            t.TOOL_CALL_ID: item.id,
            t.IMAGE_MODEL: model,
            t.IMAGE_MODEL_SOURCE: source,
            t.IMAGE_BACKGROUND: item.background,
            t.IMAGE_OUTPUT_FORMAT: item.output_format,
            t.IMAGE_ACTION: item.action,
            t.IMAGE_STATUS: item.status,
            t.IMAGE_ERROR_CODE: item.error_code,
        }
        attributes.update(t.present(optional))
        if item.moderation_categories:
            attributes[t.IMAGE_MODERATION_CATEGORIES] = list(item.moderation_categories)
        if self.runtime.settings.capture_message_content and item.revised_prompt:
            attributes[t.IMAGE_REVISED_PROMPTS] = [valid_text(item.revised_prompt)]
        parent = trace.set_span_in_context(self.span) if self.span is not None else None
        span = self.runtime.tracer.start_span(
            f"{EXECUTE_TOOL} image_generation",
            context=parent,
            kind=SpanKind.INTERNAL,
            attributes=self.span_attributes(attributes),
            start_time=item.started_ns or self.started_ns,
        )
        if item.failed:
            error = item.error_code or "failed"
            span.set_attribute(t.ERROR_TYPE, error)
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=item.completed_ns)


@dataclass(slots=True)
class _Description:
    """A response's images as its span describes them, and what pricing them starts from."""

    attributes: t.Attributes
    whole: ImageGeneration
    tool: ImageTool
    model: str | None
    source: str | None
    received: int  # final images received
    svg_usage: SvgAuthorUsage | None


def _tool_attributes(tool: ImageTool) -> t.Attributes:
    found = {
        t.IMAGE_MODEL: tool.model,
        t.IMAGE_MODEL_SOURCE: "request" if tool.model else None,
        t.IMAGE_QUALITY: tool.quality,
        t.IMAGE_SIZE: tool.size,
        t.IMAGE_BACKGROUND: tool.background,
        t.IMAGE_OUTPUT_FORMAT: tool.output_format,
        t.IMAGE_MODERATION: tool.moderation,
        t.IMAGE_INPUT_FIDELITY: tool.input_fidelity,
        t.IMAGE_ACTION: tool.action,
        t.IMAGE_PARTIAL_IMAGES_REQUESTED: tool.partial_images,
    }
    return {**t.present(found), **_format_attributes(tool, None)}


def _format_attributes(tool: ImageTool, reported_format: str | None) -> t.Attributes:
    """`openai.image.complexity` and, for a GIF, `openai.image.frame_count` (the tool's, else 9)."""
    found = {
        t.IMAGE_COMPLEXITY: tool.complexity,
        t.IMAGE_FRAME_COUNT: gif_frame_count(reported_format or tool.output_format, tool.frame_count),
    }
    return t.present(found)


def _summed_svg_usage(usages: Sequence[SvgAuthorUsage]) -> SvgAuthorUsage | None:
    """The call's SVG author usage: its items' summed (model `mixed` when they differ)."""
    if not usages:
        return None
    models = {usage.model for usage in usages}
    reasoning = [usage.reasoning_tokens for usage in usages]
    return SvgAuthorUsage(
        model=usages[0].model if len(models) == 1 else MIXED,
        input_tokens=sum(usage.input_tokens for usage in usages),
        output_tokens=sum(usage.output_tokens for usage in usages),
        reasoning_tokens=None if None in reasoning else sum(r or 0 for r in reasoning),
    )


def _response_attributes(outcome: ResponseOutcome) -> t.Attributes:
    found = {
        t.RESPONSE_ID: outcome.id,
        t.RESPONSE_MODEL: outcome.model,
        t.RESPONSE_STATUS: outcome.status,
    }
    return {**t.present(found), **t.token_attributes(outcome.usage)}


def _item_quality(item: ImageCallItem, tool: ImageTool) -> str:
    return effective(item.quality, tool.quality, None)


def _item_size(item: ImageCallItem, tool: ImageTool) -> str:
    return effective(item.size, tool.size, None)


def _one_or_mixed(values: set[str], fallback: str | None) -> str:
    if len(values) == 1:
        return next(iter(values))
    if values:
        return MIXED
    return fallback or "auto"
