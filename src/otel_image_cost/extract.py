"""Facts about an image call, read from its request arguments and its response.

Pure functions over plain data: a response may be an SDK model or the same JSON as a dict, so
everything here is tested on recorded payloads without the SDK. Nothing keeps a reference to
a payload: only counts and short strings leave this module. Its value classes are slotted, not
frozen, for the reason `cost` gives.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .attribution import MAX_VALUE_CHARS, safe_value
from .cost import INVALID_COUNT, ImageTokenUsage, SvgAuthorUsage
from .memo import BoundedMemo

GENERATE = "generate"
EDIT = "edit"
VARIATION = "variation"

GIF = "gif"
GIF_DEFAULT_FRAMES = 9  # the API's `frame_count` default for `output_format=gif`
_PARTIAL_EVENT_SUFFIX = ".partial_image"
_COMPLETED_EVENT_SUFFIX = ".completed"


def field(obj: Any, name: str) -> Any:
    """`obj[name]` for a dict, `obj.name` for an SDK model; None when absent."""
    if obj is None:
        return None
    kind: type = type(obj)
    if kind is dict:
        return obj.get(name)
    names = _PLAIN_NAMES.get(kind)
    if names is not None and name in names:
        # What pydantic's own lookup would find, without its slow path for an absent name
        # (`getattr(model, missing, None)` builds and discards an AttributeError: ~4 µs).
        value = obj.__dict__.get(name, _ABSENT)
        if value is _ABSENT:
            extra = getattr(obj, "__pydantic_extra__", None)
            value = extra.get(name) if extra else None
        return value
    return _field(obj, name)


def fields(obj: Any, names: tuple[str, ...]) -> tuple[Any, ...] | list[Any]:
    """`field` of several names, in order: one look at the object's storage for all of them."""
    kind: type = type(obj)
    if kind is dict:
        return tuple(map(obj.get, names))
    known = _PLAIN_NAMES.get(kind)
    if known is not None and known.issuperset(names):
        stored = obj.__dict__
        extra = getattr(obj, "__pydantic_extra__", None)
        if not extra:
            return tuple(map(stored.get, names))
        return [stored[name] if name in stored else extra.get(name) for name in names]
    if obj is None:
        return (None,) * len(names)
    return [field(obj, name) for name in names]  # the first time: `field` learns the names


def token_counts(values: tuple[Any, ...] | list[Any]) -> list[int | None]:
    """`token_count` of each value."""
    return [value if value is None or type(value) is int else INVALID_COUNT for value in values]


def _field(obj: Any, name: str) -> Any:
    """`field` the first time a model class is asked for `name`, and for anything but models and dicts."""
    if isinstance(obj, Mapping):
        return obj.get(name)
    kind: type = type(obj)
    if _plain_model_field(kind, name):
        _PLAIN_NAMES.remember(kind, _PLAIN_NAMES.get(kind, frozenset()) | {name})
        return field(obj, name)  # now remembered: the fast path reads it
    return getattr(obj, name, None)


# Per pydantic model class, the names `_plain_model_field` accepted: read from `__dict__` directly.
_PLAIN_NAMES: BoundedMemo[type, frozenset[str]] = BoundedMemo(1024)
_ABSENT = object()


@functools.lru_cache(maxsize=4096)
def _plain_model_field(cls: type, name: str) -> bool:
    """True when `cls` is a pydantic v2 model on which `name` can only be a field or an extra.

    Such a name lives in the instance's `__dict__` (declared fields) or `__pydantic_extra__`;
    a private (`_`) name or one the class defines (property, method) takes pydantic's own path.
    """
    if name.startswith("_") or not hasattr(cls, "__pydantic_fields__"):
        return False
    if not any("__pydantic_extra__" in getattr(base, "__slots__", ()) for base in cls.__mro__):
        return False
    return inspect.getattr_static(cls, name, _ABSENT) is _ABSENT


def integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def token_count(value: Any) -> int | None:
    """A reported count: None when absent, `INVALID_COUNT` when present but not an integer."""
    if value is None:
        return None
    return value if type(value) is int else INVALID_COUNT


def text(value: Any) -> str | None:
    """A short string fact (model, quality, size, id...) made safe for telemetry; None when absent."""
    if value is None:
        return None
    text = getattr(value, "value", value)  # tolerate enums
    return safe_value(text) if text != "" else None


def texts(values: tuple[Any, ...] | list[Any]) -> list[str | None]:
    """`text` of each value; the common one, a short ASCII string, is checked in line (the same
    test as `safe_value`'s own fast path, without a call per value)."""
    return [
        None
        if value is None
        else value
        if type(value) is str and 0 < len(value) <= MAX_VALUE_CHARS and value.isascii()
        else text(value)
        for value in values
    ]


def items(value: Any) -> tuple[Any, ...] | list[Any]:
    """A response's list (`data`, `output`); anything else reported there counts as no items."""
    return value if isinstance(value, list | tuple) else ()


def given(kwargs: Mapping[str, Any], name: str) -> Any:
    """A request argument, treating the SDK's `omit` / `NOT_GIVEN` sentinels as absent."""
    value = kwargs.get(name)
    if value is None or type(value).__name__ in ("Omit", "NotGiven"):
        return None
    return value


def requested(kwargs: Mapping[str, Any], name: str) -> Any:
    """A request option sent as an argument or, on SDK versions whose methods lack it, in `extra_body`."""
    value = given(kwargs, name)
    if value is None:
        extra_body = given(kwargs, "extra_body")
        if isinstance(extra_body, Mapping):
            value = given(extra_body, name)
    return value


def gif_frame_count(output_format: str | None, frame_count: int | None) -> int | None:
    """The GIF frames requested: as sent, else the API's default when the output is a GIF."""
    if frame_count is not None:
        return frame_count
    return GIF_DEFAULT_FRAMES if output_format == GIF else None


def svg_author_usage(svg_usage: Any) -> SvgAuthorUsage | None:
    """An SVG output's `svg_usage` (Images response or `image_generation_call` item); None if absent."""
    if svg_usage is None:
        return None
    model, *counts = fields(svg_usage, _SVG_USAGE_FIELDS)
    input_tokens, output_tokens, reasoning_tokens = token_counts(counts)
    if input_tokens is None or output_tokens is None:
        return None
    return SvgAuthorUsage(
        model=text(model),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        reasoning_tokens=reasoning_tokens,
    )


_SVG_USAGE_FIELDS = ("model", "input_tokens", "output_tokens", "reasoning_tokens")


@dataclass(slots=True)
class ImageRequest:
    """What an Images API call asked for, but for its prompt and user (`request_prompt`,
    `request_user`): what calls of one kind share, so it can be read once per kind."""

    operation: str
    model: str | None
    n: int
    quality: str | None
    size: str | None
    background: str | None
    output_format: str | None
    moderation: str | None
    input_fidelity: str | None
    partial_images: int | None
    stream: bool
    complexity: str | None = None
    frame_count: int | None = None  # as sent (see `gif_frame_count` for the default)


# The arguments `image_request` reads: calls that pass the same values ask for the same thing.
IMAGE_REQUEST_ARGUMENTS = (
    "model",
    "n",
    "quality",
    "size",
    "background",
    "output_format",
    "moderation",
    "input_fidelity",
    "partial_images",
    "stream",
    "complexity",
    "frame_count",
    "extra_body",
)


def image_request(operation: str, kwargs: Mapping[str, Any]) -> ImageRequest:
    """Read an `images.generate` / `edit` / `create_variation` call's keyword arguments."""
    return ImageRequest(
        operation=operation,
        model=text(given(kwargs, "model")),
        n=integer(given(kwargs, "n")) or 1,
        quality=text(given(kwargs, "quality")),
        size=text(given(kwargs, "size")),
        background=text(given(kwargs, "background")),
        output_format=text(requested(kwargs, "output_format")),
        moderation=text(given(kwargs, "moderation")),
        input_fidelity=text(given(kwargs, "input_fidelity")),
        partial_images=integer(given(kwargs, "partial_images")),
        stream=given(kwargs, "stream") is True,
        complexity=text(requested(kwargs, "complexity")),
        frame_count=integer(requested(kwargs, "frame_count")),
    )


def request_prompt(kwargs: Mapping[str, Any]) -> str | None:
    prompt = kwargs.get("prompt")
    return prompt if isinstance(prompt, str) else None


def request_user(kwargs: Mapping[str, Any]) -> str | None:
    """Who the request says it is for: `safety_identifier`, else the older `user`."""
    return text(given(kwargs, "safety_identifier")) or text(given(kwargs, "user"))


@dataclass(slots=True)
class ImagesOutcome:
    """What an Images API response (or a whole stream of events) reported."""

    images: int
    partial_images: int = 0
    quality: str | None = None
    size: str | None = None
    background: str | None = None
    output_format: str | None = None
    usage: ImageTokenUsage | None = None
    usage_json: str | None = None
    revised_prompts: tuple[str, ...] = ()
    svg_usage: SvgAuthorUsage | None = None


def image_token_usage(usage: Any) -> ImageTokenUsage | None:
    """An image model's usage object (Images API or Responses `tool_usage.image_gen`)."""
    if usage is None:
        return None
    total_in, total_out, cached, input_details, cached_details, output_details = fields(usage, _USAGE_FIELDS)
    input_tokens, output_tokens, cached = token_counts((total_in, total_out, cached))
    if input_tokens is None or output_tokens is None:
        return None
    text_in, image_in, cached_in, inner_cached_details = fields(input_details, _INPUT_DETAILS_FIELDS)
    text_in, image_in, cached_in = token_counts((text_in, image_in, cached_in))
    # Cached counts sit beside the totals (Responses `tool_usage.image_gen`) or in the input details.
    cached_text, cached_image = token_counts(fields(cached_details or inner_cached_details, _CACHED_FIELDS))
    image_out, text_out = token_counts(fields(output_details, _OUTPUT_DETAILS_FIELDS))
    return ImageTokenUsage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        input_text_tokens=text_in,
        input_image_tokens=image_in,
        cached_tokens=cached if cached is not None else cached_in,
        cached_text_tokens=cached_text,
        cached_image_tokens=cached_image,
        output_image_tokens=image_out,
        output_text_tokens=text_out,
    )


_USAGE_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "input_tokens_details",
    "cached_tokens_details",
    "output_tokens_details",
)
_INPUT_DETAILS_FIELDS = ("text_tokens", "image_tokens", "cached_tokens", "cached_tokens_details")
_CACHED_FIELDS = ("cached_text_tokens", "cached_image_tokens")
_OUTPUT_DETAILS_FIELDS = ("image_tokens", "text_tokens")


def compact_json(obj: Any) -> str | None:
    """A usage object as compact JSON, keeping exactly the fields the response carried."""
    if obj is None:
        return None
    if hasattr(obj, "model_dump"):
        # as reported, even where a field is not of its declared type (no pydantic warning then)
        obj = obj.model_dump(mode="json", exclude_unset=True, warnings=False)
    return _COMPACT.encode(obj)


# What `json.dumps(obj, separators=(",", ":"))` writes; `json.dumps` builds a new encoder for
# every call with non-default options (~1.7 µs), one kept encoder does not.
_COMPACT = json.JSONEncoder(separators=(",", ":"), sort_keys=False)


def add_usage(a: ImageTokenUsage | None, b: ImageTokenUsage | None) -> ImageTokenUsage | None:
    """Sum two usages (a stream reports one per image); a detail absent from either stays absent."""
    if a is None or b is None:
        return a or b

    def total(x: int | None, y: int | None) -> int | None:
        return None if x is None or y is None else x + y

    return ImageTokenUsage(
        input_tokens=a.input_tokens + b.input_tokens,
        output_tokens=a.output_tokens + b.output_tokens,
        input_text_tokens=total(a.input_text_tokens, b.input_text_tokens),
        input_image_tokens=total(a.input_image_tokens, b.input_image_tokens),
        cached_tokens=total(a.cached_tokens, b.cached_tokens),
        cached_text_tokens=total(a.cached_text_tokens, b.cached_text_tokens),
        cached_image_tokens=total(a.cached_image_tokens, b.cached_image_tokens),
        output_image_tokens=total(a.output_image_tokens, b.output_image_tokens),
        output_text_tokens=total(a.output_text_tokens, b.output_text_tokens),
    )


def images_response_outcome(response: Any, *, capture_content: bool = False) -> ImagesOutcome:
    """Read an `ImagesResponse` (or its JSON)."""
    data, usage, quality, size, background, output_format, svg_usage = fields(response, _RESPONSE_FIELDS)
    data = items(data)
    revised: tuple[str, ...] = ()
    if capture_content:
        revised = tuple(p for p in (field(item, "revised_prompt") for item in data) if isinstance(p, str))
    quality, size, background, output_format = texts((quality, size, background, output_format))
    return ImagesOutcome(
        images=len(data),
        quality=quality,
        size=size,
        background=background,
        output_format=output_format,
        usage=image_token_usage(usage),
        usage_json=compact_json(usage),
        revised_prompts=revised,
        svg_usage=svg_author_usage(svg_usage),
    )


_RESPONSE_FIELDS = ("data", "usage", "quality", "size", "background", "output_format", "svg_usage")


_EVENT_FIELDS = ("type", "quality", "size", "background", "output_format")


class ImagesStreamTally:
    """Counts an Images API stream's events as they pass: partials, final images, usage."""

    __slots__ = (
        "_usage_json",
        "background",
        "images",
        "output_format",
        "partial_images",
        "quality",
        "size",
        "usage",
    )

    def __init__(self) -> None:
        self.images = 0
        self.partial_images = 0
        self.quality: str | None = None
        self.size: str | None = None
        self.background: str | None = None
        self.output_format: str | None = None
        self.usage: ImageTokenUsage | None = None
        self._usage_json: list[str] = []

    def add(self, event: Any) -> None:
        kind, quality, size, background, output_format = fields(event, _EVENT_FIELDS)
        if not isinstance(kind, str):
            return
        if kind.endswith(_PARTIAL_EVENT_SUFFIX):
            self.partial_images += 1
        elif kind.endswith(_COMPLETED_EVENT_SUFFIX):
            self.images += 1
            usage = field(event, "usage")
            if usage is not None:
                self.usage = add_usage(self.usage, image_token_usage(usage))
                self._usage_json.append(compact_json(usage) or "null")
        else:
            return
        self.quality = text(quality) or self.quality
        self.size = text(size) or self.size
        self.background = text(background) or self.background
        self.output_format = text(output_format) or self.output_format

    def outcome(self) -> ImagesOutcome | None:
        """What the stream reported; None when it delivered no image event at all (never read)."""
        if not self.images and not self.partial_images:
            return None
        usage_json = None
        if self._usage_json:
            joined = ",".join(self._usage_json)
            usage_json = joined if len(self._usage_json) == 1 else f"[{joined}]"
        return ImagesOutcome(
            images=self.images,
            partial_images=self.partial_images,
            quality=self.quality,
            size=self.size,
            background=self.background,
            output_format=self.output_format,
            usage=self.usage,
            usage_json=usage_json,
        )
