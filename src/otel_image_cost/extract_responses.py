"""Facts about a Responses API call that may draw images with the `image_generation` tool.

Pure functions over plain data, like `extract`: a response is an SDK model or its JSON. The
image bytes (`result`, `partial_image_b64`) are never read. Value classes are slotted, not frozen
(see `cost`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .cost import ImageTokenUsage, SvgAuthorUsage, plausible_count
from .extract import (
    compact_json,
    field,
    fields,
    given,
    image_token_usage,
    integer,
    items,
    request_user,
    svg_author_usage,
    text,
    texts,
    token_count,
    token_counts,
)

IMAGE_TOOL = "image_generation"
IMAGE_CALL_ITEM = "image_generation_call"
TERMINAL_STATUSES = frozenset({"completed", "failed", "incomplete", "cancelled"})

FINAL_EVENTS = frozenset({"response.completed", "response.failed", "response.incomplete"})
_ITEM_STARTED = "response.image_generation_call.in_progress"
_ITEM_PARTIAL = "response.image_generation_call.partial_image"
_ITEM_COMPLETED = "response.image_generation_call.completed"
_ITEM_ADDED = "response.output_item.added"
_ITEM_DONE = "response.output_item.done"
IN_PROGRESS = "in_progress"


@dataclass(slots=True)
class ImageTool:
    """The `image_generation` tool entry of a request, or as the response echoes it."""

    model: str | None = None
    quality: str | None = None
    size: str | None = None
    background: str | None = None
    output_format: str | None = None
    moderation: str | None = None
    input_fidelity: str | None = None
    action: str | None = None
    partial_images: int | None = None
    complexity: str | None = None
    frame_count: int | None = None


def image_tool(tools: Any) -> ImageTool | None:
    """The first `image_generation` entry of a `tools` list; None when there is none.

    Only a sequence is read: a one-shot iterable belongs to the SDK, which has yet to send it.
    """
    for tool in tools if isinstance(tools, Sequence) and not isinstance(tools, str | bytes) else ():
        if field(tool, "type") == IMAGE_TOOL:
            *named, partial_images, frame_count = fields(tool, _TOOL_FIELDS)
            model, quality, size, background, output_format, moderation, fidelity, action, complexity = texts(
                named
            )
            return ImageTool(
                model=model,
                quality=quality,
                size=size,
                background=background,
                output_format=output_format,
                moderation=moderation,
                input_fidelity=fidelity,
                action=action,
                partial_images=integer(partial_images),
                complexity=complexity,
                frame_count=integer(frame_count),
            )
    return None


# The tool entry's text fields, then its two counts.
_TOOL_FIELDS = (
    "model",
    "quality",
    "size",
    "background",
    "output_format",
    "moderation",
    "input_fidelity",
    "action",
    "complexity",
    "partial_images",
    "frame_count",
)


@dataclass(slots=True)
class ResponsesRequest:
    """What a `responses.create` / `parse` / `retrieve` call asked for."""

    model: str | None
    tool: ImageTool | None
    stream: bool
    background: bool
    user: str | None
    response_id: str | None
    prompt: str | None


def responses_request(
    args: tuple[Any, ...], kwargs: Mapping[str, Any], tool: ImageTool | None
) -> ResponsesRequest:
    """Read the arguments of a Responses call (`retrieve` takes the response id positionally).

    `tool` is the request's image tool entry as `image_tool` read it: the caller has read it
    already, to decide whether the call concerns images at all."""
    prompt = given(kwargs, "input")
    response_id = given(kwargs, "response_id") or (args[0] if args and isinstance(args[0], str) else None)
    return ResponsesRequest(
        model=text(given(kwargs, "model")),
        tool=tool,
        stream=given(kwargs, "stream") is True,
        background=given(kwargs, "background") is True,
        user=request_user(kwargs),
        response_id=response_id,
        prompt=prompt if isinstance(prompt, str) else None,
    )


@dataclass(slots=True)
class TextUsage:
    """The mainline (text) model's usage."""

    input_tokens: int
    cached_tokens: int
    output_tokens: int

    @property
    def valid(self) -> bool:
        """Rule 11: counts that can be right (integers in 0..10^9, cached within input)."""
        return (
            plausible_count(self.input_tokens)
            and plausible_count(self.cached_tokens)
            and plausible_count(self.output_tokens)
            and self.cached_tokens <= self.input_tokens
        )


@dataclass(slots=True)
class ImageCallItem:
    """One `image_generation_call` output item: one image, or one failed attempt."""

    id: str | None
    status: str | None
    action: str | None = None
    quality: str | None = None
    size: str | None = None
    background: str | None = None
    output_format: str | None = None
    error_code: str | None = None
    error_type: str | None = None
    moderation_categories: tuple[str, ...] = ()
    revised_prompt: str | None = None
    svg_usage: SvgAuthorUsage | None = None
    partial_images: int = 0
    started_ns: int | None = None
    completed_ns: int | None = None

    @property
    def failed(self) -> bool:
        return self.status == "failed"


def image_call_item(item: Any) -> ImageCallItem:
    *named, error, revised, svg_usage = fields(item, _ITEM_FIELDS)
    item_id, status, action, quality, size, background, output_format = texts(named)
    categories = None
    error_code = error_type = None
    if error is not None:
        code, kind, moderation = fields(error, _ERROR_FIELDS)
        error_code, error_type = text(code), text(kind)
        categories = field(moderation, "categories")
    return ImageCallItem(
        id=item_id,
        status=status,
        action=action,
        quality=quality,
        size=size,
        background=background,
        output_format=output_format,
        error_code=error_code,
        error_type=error_type,
        moderation_categories=tuple(text(c) or "" for c in items(categories)),
        revised_prompt=revised if isinstance(revised, str) else None,
        svg_usage=svg_author_usage(svg_usage),
    )


# An item's text fields, then its error, revised prompt and SVG usage.
_ITEM_FIELDS = (
    "id",
    "status",
    "action",
    "quality",
    "size",
    "background",
    "output_format",
    "error",
    "revised_prompt",
    "svg_usage",
)
_ERROR_FIELDS = ("code", "type", "moderation_details")


@dataclass(slots=True)
class ResponseOutcome:
    """What a Responses API response reported about its text model and its images."""

    id: str | None
    model: str | None
    status: str | None
    service_tier: str | None
    usage: TextUsage | None
    image_usage: ImageTokenUsage | None
    image_usage_json: str | None
    tool: ImageTool | None
    items: tuple[ImageCallItem, ...]
    user: str | None = None  # the `safety_identifier` (or `user`) the request carried, echoed

    @property
    def terminal(self) -> bool:
        """Whether the response is finished (background responses start `queued`)."""
        return self.status is None or self.status in TERMINAL_STATUSES


def response_outcome(response: Any) -> ResponseOutcome:
    """Read a `Response` (or its JSON)."""
    *named, usage, tool_usage, output, tools = fields(response, _RESPONSE_FIELDS)
    response_id, model, status, service_tier, safety_identifier, user = texts(named)
    image_gen = field(tool_usage, "image_gen")
    text_usage = None
    total_in, total_out, input_details = fields(usage, _TEXT_USAGE_FIELDS)
    input_tokens, output_tokens = token_counts((total_in, total_out))
    if input_tokens is not None and output_tokens is not None:
        cached = token_count(field(input_details, "cached_tokens")) or 0
        text_usage = TextUsage(input_tokens=input_tokens, cached_tokens=cached, output_tokens=output_tokens)
    return ResponseOutcome(
        id=response_id,
        model=model,
        status=status,
        service_tier=service_tier,
        usage=text_usage,
        image_usage=image_token_usage(image_gen),
        image_usage_json=compact_json(image_gen),
        tool=image_tool(tools),
        items=tuple(
            image_call_item(item) for item in items(output) if field(item, "type") == IMAGE_CALL_ITEM
        ),
        user=safety_identifier or user,
    )


# A response's text fields, then the objects read further.
_RESPONSE_FIELDS = (
    "id",
    "model",
    "status",
    "service_tier",
    "safety_identifier",
    "user",
    "usage",
    "tool_usage",
    "output",
    "tools",
)
_TEXT_USAGE_FIELDS = ("input_tokens", "output_tokens", "input_tokens_details")


class ResponsesStreamTally:
    """Follows a Responses event stream: per image item its partial images and its timing, and
    the final response (from `response.completed`, `.failed` or `.incomplete`)."""

    __slots__ = ("_added", "_completed", "_done_items", "_partials", "_started", "final", "response_id")

    def __init__(self) -> None:
        self._added: dict[str, None] = {}  # image items announced (their drawing starts later)
        self._partials: dict[str, int] = {}
        self._started: dict[str, int] = {}
        self._completed: dict[str, int] = {}
        self._done_items: dict[str, ImageCallItem] = {}
        self.final: ResponseOutcome | None = None
        self.response_id: str | None = None

    def add(self, event: Any, now_ns: int) -> None:
        kind = field(event, "type")
        if kind == _ITEM_PARTIAL:
            item_id = str(field(event, "item_id"))
            self._partials[item_id] = self._partials.get(item_id, 0) + 1
        elif kind == _ITEM_STARTED:
            self._started.setdefault(str(field(event, "item_id")), now_ns)
        elif kind == _ITEM_ADDED:
            item = field(event, "item")
            if field(item, "type") == IMAGE_CALL_ITEM:
                self._added[str(field(item, "id"))] = None
        elif kind == _ITEM_COMPLETED:
            self._completed[str(field(event, "item_id"))] = now_ns
        elif kind == _ITEM_DONE:
            item = field(event, "item")
            if field(item, "type") == IMAGE_CALL_ITEM:
                parsed = image_call_item(item)
                self._done_items[parsed.id or ""] = parsed
                self._completed.setdefault(parsed.id or "", now_ns)
        elif kind in FINAL_EVENTS:
            self.final = response_outcome(field(event, "response"))
        elif kind == "response.created":
            self.response_id = text(field(field(event, "response"), "id"))

    @property
    def partial_images(self) -> int:
        return sum(self._partials.values())

    def outcome(self, *, abandoned: bool = False) -> ResponseOutcome | None:
        """The final response with each item's stream facts; without one, the items seen (done;
        for a stream the application abandoned, also the ones begun, as `in_progress` items)."""
        base = self.final
        items = base.items if base is not None else tuple(self._done_items.values())
        if base is None and abandoned:
            begun = [
                i
                for i in dict.fromkeys([*self._added, *self._started, *self._partials])
                if i not in self._done_items
            ]
            items += tuple(ImageCallItem(id=item_id, status=IN_PROGRESS) for item_id in begun)
        merged = tuple(
            replace(
                item,
                partial_images=self._partials.get(item.id or "", 0),
                started_ns=self._started.get(item.id or ""),
                completed_ns=self._completed.get(item.id or ""),
            )
            for item in items
        )
        if base is None:
            if not merged and not self._partials and not abandoned:
                return None
            return ResponseOutcome(
                id=self.response_id,
                model=None,
                status=None,
                service_tier=None,
                usage=None,
                image_usage=None,
                image_usage_json=None,
                tool=None,
                items=merged,
            )
        return replace(base, items=merged)


_MODEL_DOC = re.compile(r"The image generation model to use\.(.*?)\"\"\"", re.DOTALL)
_DEFAULT = re.compile(r"Default:\s*`([^`]+)`")


def documented_default_tool_model(sdk_tool_source: str) -> str | None:
    """The image tool's default model as the installed SDK documents it (its `tool.py` source):
    the service never reports which model a tool entry without `model` used."""
    doc = _MODEL_DOC.search(sdk_tool_source)
    default = _DEFAULT.search(doc.group(1)) if doc else None
    return default.group(1) if default else None
