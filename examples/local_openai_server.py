"""A local OpenAI-compatible server on loopback, for the offline demo and the test-suite.

The instrumentation must be exercised through the real ``openai`` SDK over real HTTP, without network
access or an API key. This module answers the Images API and the Responses API (with the
``image_generation`` tool) with the response shapes, SSE event sequences and token usage that the real
service sends (as recorded in the project's fixtures), deterministically, so that tests can assert exact
numbers. Standard library only.

Deterministic rules, so tests can choose what happens:

* Images API: ``quality`` auto/absent -> medium, ``size`` auto/absent -> 1024x1024, ``background`` auto
  -> opaque, no ``model`` -> answered as gpt-image-1. Input text tokens are ceil(len(prompt) / 4), edit
  input images 194 tokens each (64 from gpt-image-2 on), both times ``n``; output image tokens follow the
  cost model's tables; gpt-image-1.5 and chatgpt-image-latest add output text tokens (1/5 of the image
  tokens); each streamed partial image adds 100 output image tokens. A prompt containing "moderation"
  is rejected (400 ``moderation_blocked``).
* SVG output (``output_format="svg"``, both APIs): the image part bills as above and the answer adds
  ``svg_usage`` for the SVG author (``svg.model`` as sent, else the ``svg_author_model`` option, which
  may name a model no price list knows): input 500 + ceil(len(prompt) / 4), output 1200 of which
  reasoning 256. GIF output (``output_format="gif"``): output image tokens times ``frame_count``
  (default 9). Neither streams on the Images API (400, as the API documents); SVG requires ``n=1``.
* Responses API, with an ``image_generation`` tool: one image call, two if the input text says "two
  images", none if it says "no image", one ``failed`` call if it says "moderation"; with "one tall" the
  second of two images is 1024x1536 when the tool leaves ``size`` auto. The action is
  ``edit`` with an input image, a ``previous_response_id`` or the tool's ``action: "edit"`` (an edit
  bills at least one input image). "server error" in the text makes the response ``failed``; a
  ``max_output_tokens`` below the answer's length makes it ``incomplete``.
* Responses WebSocket mode (``client.responses.connect()``): ``GET /v1/responses`` upgraded to a WebSocket
  (RFC 6455 handshake and framing, text frames of JSON). Each ``response.create`` message is answered
  with the same events the streamed HTTP call sends, one per frame, echoing its ``stream_id``; responses
  are answered in the order their creates arrive. A rejected create gets an ``error`` event.

Usage::

    with LocalOpenAIServer() as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-local")

or ``python examples/local_openai_server.py --port 8765``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import re
import secrets
import signal
import socket
import struct
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

JSON = dict[str, Any]
UsageShape = Literal["2026", "2025", "no_echo", "none"]

TINY_PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAAC0lEQVR4nGNgAAIAAAUAAXpeqz8AAAAASUVORK5CYII="

# Output image tokens per image of the gpt-image-1 family, by quality and size (shared cost model).
_GPT_IMAGE_1_GRID = {
    "low": {"1024x1024": 272, "1024x1536": 408, "1536x1024": 400},
    "medium": {"1024x1024": 1056, "1024x1536": 1584, "1536x1024": 1568},
    "high": {"1024x1024": 4160, "1024x1536": 6240, "1536x1024": 6208},
}
# Quality factors of the size formula used from gpt-image-2 on.
_SIZE_FORMULA_FACTORS = {
    "gpt-image-2": {"low": 16, "medium": 48, "high": 96},
    "gpt-image-2.5": {"low": 16, "medium": 24, "high": 48, "xhigh": 64, "max": 96},
}
# Billed input image tokens per edit input image, whatever its pixel size (observed).
_INPUT_IMAGE_TOKENS = {"gpt-image-1": 194, "gpt-image-2": 64, "gpt-image-2.5": 64}
_TEXT_OUTPUT_MODELS = ("gpt-image-1.5", "chatgpt-image-latest")
_PARTIAL_IMAGE_TOKENS = 100
_SVG_AUTHOR_BASE_INPUT_TOKENS = 500
_SVG_AUTHOR_OUTPUT_TOKENS = 1200  # reasoning included, as the API counts it
_SVG_AUTHOR_REASONING_TOKENS = 256
_GIF_DEFAULT_FRAMES = 9
_GIF_FRAMES = (2, 16)
_DATE_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")
_DEFAULT_QUALITY = "medium"
_DEFAULT_SIZE = "1024x1024"
_MAX_PIXELS = 3840 * 2160

_MAX_SLEEP_S = 60.0
_RETRY_AFTER_MS = 20
_CLOSE_TIMEOUT_S = 5.0
_MAX_STORED_RESPONSES = 1000
_MAX_RECORDED_STRING = 4096
_BASE_TEXT_INPUT_TOKENS = 1500
_TEXT_TOKENS_PER_IMAGE_CALL = 20
_REASONING_TOKENS = 64
_CACHED_TOKENS_WITH_PREVIOUS = 1024

# RFC 6455: the GUID a server appends to the client's key to prove it speaks WebSocket.
_WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_WS_TEXT, _WS_BINARY, _WS_CLOSE, _WS_PING, _WS_PONG = 0x1, 0x2, 0x8, 0x9, 0xA
_WS_MAX_MESSAGE = 64 * 1024 * 1024

_STATUS_FAULTS = (400, 401, 429, 500, 503)
_NAMED_FAULTS = ("malformed_json", "missing_usage", "extra_fields", "cut_stream", "short_stream")
# Error bodies of injected status faults: (type, message, param, code), as the real API words them.
_FAULT_ERRORS: dict[int, tuple[str, str, str | None, str | None]] = {
    400: (
        "invalid_request_error",
        "Invalid 'prompt': string too long. Expected a string with maximum length 32000, "
        "but got a string with length 32001 instead.",
        "prompt",
        "string_above_max_length",
    ),
    401: (
        "invalid_request_error",
        "Incorrect API key provided: sk-local. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        None,
        "invalid_api_key",
    ),
    429: (
        "requests",
        "Rate limit reached for requests per minute. Please try again in 20ms.",
        None,
        "rate_limit_exceeded",
    ),
    500: (
        "server_error",
        "The server had an error while processing your request. Sorry about that!",
        None,
        None,
    ),
    503: ("server_error", "The server is overloaded or not ready yet.", None, None),
}


class ApiError(Exception):
    """An error answer with the real API's body, raised anywhere while handling a request."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: JSON = {"error": {"message": message, "type": type, "param": param, "code": code}}

    @classmethod
    def invalid(cls, param: str, value: object) -> ApiError:
        return cls(400, f"Invalid value: {value!r}.", param=param, code="invalid_value")

    @classmethod
    def missing(cls, param: str) -> ApiError:
        return cls(
            400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
        )


@dataclass(frozen=True)
class FilePart:
    """A multipart file part as received (the bytes are not kept)."""

    name: str
    filename: str | None
    content_type: str | None
    size: int


@dataclass(frozen=True)
class RecordedRequest:
    """What the server received, small enough to keep for every request of a benchmark."""

    method: str
    path: str
    route: str
    deployment: str | None
    query: dict[str, str]
    headers: dict[str, str]
    body: Any = None
    fields: dict[str, str] = field(default_factory=dict)
    files: list[FilePart] = field(default_factory=list)


@dataclass(frozen=True)
class Tokens:
    """Token counts of image work; adding and scaling them keeps every usage shape consistent."""

    text_in: int = 0
    image_in: int = 0
    image_out: int = 0
    text_out: int = 0

    def __add__(self, other: Tokens) -> Tokens:
        return Tokens(
            self.text_in + other.text_in,
            self.image_in + other.image_in,
            self.image_out + other.image_out,
            self.text_out + other.text_out,
        )

    def times(self, count: int) -> Tokens:
        return Tokens(
            self.text_in * count, self.image_in * count, self.image_out * count, self.text_out * count
        )

    def usage(self, *, output_details: bool = True) -> JSON:
        """The ``usage`` object of the Images API and of ``tool_usage.image_gen``."""
        input_tokens = self.text_in + self.image_in
        output_tokens = self.image_out + self.text_out
        usage: JSON = {
            "input_tokens": input_tokens,
            "input_tokens_details": {"image_tokens": self.image_in, "text_tokens": self.text_in},
            "output_tokens": output_tokens,
        }
        if output_details:
            usage["output_tokens_details"] = {"image_tokens": self.image_out, "text_tokens": self.text_out}
        usage["total_tokens"] = input_tokens + output_tokens
        return usage


@dataclass(frozen=True)
class ImageJob:
    """One resolved GPT image request: what is rendered and what one image of it bills."""

    model: str
    quality: str
    size: str
    background: str
    output_format: str
    per_image: Tokens
    svg_usage: JSON | None = None  # the SVG author's usage, for ``output_format="svg"``
    frame_count: int | None = None  # GIF frames, for ``output_format="gif"``

    def tokens(self, images: int, partials_per_image: int = 0) -> Tokens:
        partial = Tokens(image_out=_PARTIAL_IMAGE_TOKENS * partials_per_image)
        return (self.per_image + partial).times(images)

    def echo(self) -> JSON:
        return {
            "background": self.background,
            "output_format": self.output_format,
            "quality": self.quality,
            "size": self.size,
        }


REQUEST_ID_HEADER = "x-request-id"


def new_request_id() -> str:
    """A fresh id for every answer, as the API's `x-request-id` (the plugin's `openai.request.id`)."""
    return f"req_{secrets.token_hex(16)}"


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def text_tokens(text: str) -> int:
    """The server's stand-in tokenizer: one token per four characters."""
    return _ceil_div(len(text), 4)


def model_family(model: str) -> str | None:
    """The pricing family of an image model name (dated snapshots belong to their base model)."""
    base = _DATE_SUFFIX.sub("", model)
    if base in ("dall-e-2", "dall-e-3"):
        return base
    if base in ("gpt-image-1", "gpt-image-1-mini", *_TEXT_OUTPUT_MODELS):
        return "gpt-image-1"
    if base == "gpt-image-2":
        return "gpt-image-2"
    if base.startswith(("gpt-image-2.5-", "gpt-image-2.6-")):
        return "gpt-image-2.5"
    return None


def output_image_tokens(family: str, quality: str, size: str) -> int | None:
    """Output image tokens of one image, or None when the model does not offer that quality or size."""
    if family == "gpt-image-1":
        return _GPT_IMAGE_1_GRID.get(quality, {}).get(size)
    factor = _SIZE_FORMULA_FACTORS[family].get(quality)
    match = re.fullmatch(r"(\d+)x(\d+)", size)
    if factor is None or match is None:
        return None
    width, height = int(match[1]), int(match[2])
    short, long = sorted((width, height))
    if width % 16 or height % 16 or long > 3 * short or width * height > _MAX_PIXELS:
        return None
    scale = (2 * factor * short + long) // (2 * long)  # round half up of factor * short / long
    return _ceil_div(factor * scale * (2_000_000 + width * height), 4_000_000)


def svg_author_usage(model: str, prompt: str) -> JSON:
    """``svg_usage`` of one SVG answer (the author's tokens, apart from the image's)."""
    input_tokens = _SVG_AUTHOR_BASE_INPUT_TOKENS + text_tokens(prompt)
    return {
        "input_tokens": input_tokens,
        "model": model,
        "output_tokens": _SVG_AUTHOR_OUTPUT_TOKENS,
        "reasoning_tokens": _SVG_AUTHOR_REASONING_TOKENS,
        "total_tokens": input_tokens + _SVG_AUTHOR_OUTPUT_TOKENS,
    }


def _svg_model(params: Mapping[str, Any]) -> str | None:
    """The ``svg.model`` sent: a JSON object, or the multipart field ``svg[model]``."""
    svg = params.get("svg")
    model = svg.get("model") if isinstance(svg, dict) else params.get("svg[model]")
    return str(model) if model else None


def resolve_job(
    params: Mapping[str, Any],
    model: str,
    *,
    prompt: str,
    input_images: int,
    svg_author_model: str = "gpt-5-mini",
) -> ImageJob:
    """Resolve ``auto``/absent options as the service reports them and price one image in tokens."""
    family = model_family(model)
    if family is None or family.startswith("dall-e"):
        raise ApiError.invalid("model", model)
    quality = str(params.get("quality") or "auto")
    quality = _DEFAULT_QUALITY if quality == "auto" else quality
    size = str(params.get("size") or "auto")
    size = _DEFAULT_SIZE if size == "auto" else size
    qualities = _GPT_IMAGE_1_GRID if family == "gpt-image-1" else _SIZE_FORMULA_FACTORS[family]
    if quality not in qualities:
        raise ApiError.invalid("quality", quality)
    image_out = output_image_tokens(family, quality, size)
    if image_out is None:
        raise ApiError.invalid("size", size)
    background = str(params.get("background") or "auto")
    output_format = str(params.get("output_format") or "png")
    frames = None
    if output_format == "gif":
        frames = _int_param(params, "frame_count", _GIF_DEFAULT_FRAMES, *_GIF_FRAMES)
        image_out *= frames
    text_out = image_out // 5 if _DATE_SUFFIX.sub("", model) in _TEXT_OUTPUT_MODELS else 0
    per_image = Tokens(text_tokens(prompt), _INPUT_IMAGE_TOKENS[family] * input_images, image_out, text_out)
    svg_usage = None
    if output_format == "svg":
        svg_usage = svg_author_usage(_svg_model(params) or svg_author_model, prompt)
    return ImageJob(
        model=model,
        quality=quality,
        size=size,
        background="opaque" if background == "auto" else background,
        output_format=output_format,
        per_image=per_image,
        svg_usage=svg_usage,
        frame_count=frames,
    )


def png_b64(length: int | None) -> str:
    """Base64 of a valid PNG; with ``length``, padded by a private chunk to exactly that many characters."""
    if length is None:
        return TINY_PNG_B64
    png = base64.b64decode(TINY_PNG_B64)
    filler = length // 4 * 3 - len(png) - 12  # a chunk adds length, type and CRC: 12 bytes
    if length % 4 or filler < 0:
        raise ValueError(
            f"image_b64_bytes must be a multiple of 4 and at least {(len(png) + 12) * 4 // 3 + 4}"
        )
    data = b"prVt" + bytes(filler)
    chunk = struct.pack(">I", filler) + data + struct.pack(">I", zlib.crc32(data))
    return base64.b64encode(png[:-12] + chunk + png[-12:]).decode("ascii")


def _int_param(params: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ApiError.invalid(name, raw) from None
    if not low <= value <= high:
        raise ApiError.invalid(name, raw)
    return value


def _bool_param(params: Mapping[str, Any], name: str) -> bool:
    return params.get(name) in (True, "true", "True", "1")


def _summarize(value: Any) -> Any:
    """The value with long strings (base64 images, data URLs) replaced by their length."""
    if isinstance(value, str) and len(value) > _MAX_RECORDED_STRING:
        return f"<{len(value)} chars>"
    if isinstance(value, dict):
        return {key: _summarize(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_summarize(item) for item in value]
    return value


def _parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], list[FilePart]]:
    """Text fields and file parts of a ``multipart/form-data`` body, as the SDK encodes it."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if match is None:
        raise ApiError(400, "Invalid multipart body: no boundary.")
    fields: dict[str, str] = {}
    files: list[FilePart] = []
    for part in body.split(b"--" + match[1].encode("latin-1"))[1:]:
        if part.startswith(b"--"):
            break
        head, _, data = part.partition(b"\r\n\r\n")
        data = data.removesuffix(b"\r\n")
        headers = head.decode("utf-8", "replace")
        name = re.search(r'\bname="([^"]*)"', headers)
        filename = re.search(r'\bfilename="([^"]*)"', headers)
        part_type = re.search(r"content-type:\s*([^\r\n]+)", headers, re.IGNORECASE)
        if name is None:
            raise ApiError(400, "Invalid multipart body: a part has no name.")
        if filename is None and part_type is None:
            fields[name[1]] = data.decode("utf-8", "replace")
        else:
            files.append(
                FilePart(name[1], filename and filename[1], part_type and part_type[1].strip(), len(data))
            )
    return fields, files


def _event(type_: str, **fields: Any) -> JSON:
    return {"type": type_, **fields}


def _strip_usage(payload: JSON) -> JSON:
    """The payload without ``usage``/``tool_usage``, also inside a Responses event's ``response``."""
    stripped = {key: value for key, value in payload.items() if key not in ("usage", "tool_usage")}
    if isinstance(stripped.get("response"), dict):
        stripped["response"] = _strip_usage(stripped["response"])
    return stripped


def _add_unknown_fields(value: Any) -> Any:
    """The value with an unknown field in every object, as a newer API version might send."""
    if isinstance(value, list):
        return [_add_unknown_fields(item) for item in value]
    if not isinstance(value, dict):
        return value
    extended = {key: item if key == "metadata" else _add_unknown_fields(item) for key, item in value.items()}
    extended["x_unreleased_field"] = "extra"
    return extended


def _input_text_and_images(items: Any) -> tuple[str, int]:
    """All user text of a Responses ``input`` and the number of images it carries."""
    if isinstance(items, str):
        return items, 0
    texts: list[str] = []
    images = 0
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        if item.get("type") in ("input_image", "image_generation_call"):
            images += 1
        content = item.get("content")
        parts = [{"type": "input_text", "text": content}] if isinstance(content, str) else content
        for part in parts if isinstance(parts, list) else []:
            if isinstance(part, dict) and part.get("type") in ("input_text", "text"):
                texts.append(str(part.get("text", "")))
            elif isinstance(part, dict) and part.get("type") == "input_image":
                images += 1
    return "\n".join(texts), images


def _schema_example(schema: Any, root: JSON) -> Any:
    """A minimal instance of a JSON schema, so ``responses.parse(text_format=...)`` receives valid JSON."""
    if not isinstance(schema, dict):
        return None
    if "$ref" in schema:
        target: Any = root
        for key in str(schema["$ref"]).removeprefix("#/").split("/"):
            target = target.get(key, {})
        return _schema_example(target, root)
    if "enum" in schema:
        return schema["enum"][0]
    if "anyOf" in schema:
        return _schema_example(schema["anyOf"][0], root)
    kind = schema.get("type")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        return {key: _schema_example(value, root) for key, value in schema.get("properties", {}).items()}
    return {"string": "", "integer": 0, "number": 0, "boolean": False, "array": []}.get(str(kind))


@dataclass(frozen=True)
class Options:
    """How the server behaves; see ``LocalOpenAIServer`` for each option."""

    usage_shape: UsageShape = "2026"
    image_b64_bytes: int | None = None
    deployments: Mapping[str, str] = field(default_factory=dict)
    tool_usage: bool = True
    echo_tool_model: bool = True
    tool_default_model: str = "gpt-image-1.5"
    latency_ms: int = 0
    background_polls: int = 1
    keepalive: bool = False
    svg_author_model: str = "gpt-5-mini"

    def __post_init__(self) -> None:
        if self.usage_shape not in ("2026", "2025", "no_echo", "none"):
            raise ValueError(f"unknown usage_shape {self.usage_shape!r}")
        if self.latency_ms < 0 or self.background_polls < 0:
            raise ValueError("latency_ms and background_polls must not be negative")


@dataclass(frozen=True)
class ImageCall:
    """One ``image_generation_call`` output item of a response."""

    id: str
    action: str
    job: ImageJob
    revised_prompt: str
    partials: int
    failed: bool

    def tokens(self) -> Tokens:
        """What the image model bills for this call: a blocked call bills its input only."""
        if self.failed:
            return replace(self.job.per_image, image_out=0, text_out=0)
        return self.job.tokens(1, self.partials)

    def added_item(self) -> JSON:
        return {"id": self.id, "type": "image_generation_call", "status": "in_progress"}

    def done_item(self, b64: str) -> JSON:
        """The finished item, as ``output_item.done`` and the response's ``output`` show it."""
        item: JSON = {
            "id": self.id,
            "type": "image_generation_call",
            "status": "failed" if self.failed else "completed",
            "action": self.action,
            **self.job.echo(),
            "result": None if self.failed else b64,
            "revised_prompt": self.revised_prompt,
        }
        if self.job.svg_usage is not None and not self.failed:
            item["svg_usage"] = self.job.svg_usage
        if self.failed:
            item["error"] = {
                "code": "moderation_blocked",
                "message": "Your request was rejected by the safety system.",
                "param": None,
                "type": "image_generation_user_error",
                "moderation_details": {"categories": ["violence"], "moderation_stage": "input"},
            }
        return item


@dataclass
class ResponseRun:
    """One Responses API response: everything needed to answer create, retrieve and stream identically."""

    id: str
    request: JSON  # the create body without ``input``/``tools``, which may hold large images
    created_at: int
    background: bool
    final_status: str
    calls: list[ImageCall]
    message_id: str
    message: str
    usage: JSON | None
    tools: list[JSON]
    retrievals: int = 0

    def message_item(self, *, done: bool) -> JSON:
        status = "incomplete" if self.final_status == "incomplete" else "completed"
        content = [{"type": "output_text", "annotations": [], "logprobs": [], "text": self.message}]
        return {
            "id": self.message_id,
            "type": "message",
            "status": status if done else "in_progress",
            "content": content if done else [],
            "role": "assistant",
        }

    def snapshot(self, status: str, options: Options, b64: str) -> JSON:
        """The response object in a given status (queued and in_progress carry no output nor usage)."""
        final = status == self.final_status
        output = [call.done_item(b64) for call in self.calls]
        if self.final_status != "failed":
            output.append(self.message_item(done=True))
        body = self.request
        response: JSON = {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": self.background,
            "completed_at": self.created_at if final else None,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"}
            if final and status == "incomplete"
            else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "max_tool_calls": body.get("max_tool_calls"),
            "model": body["model"],
            "output": output if final else [],
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "prompt_cache_key": body.get("prompt_cache_key"),
            "reasoning": {"effort": (body.get("reasoning") or {}).get("effort"), "summary": None},
            "safety_identifier": body.get("safety_identifier"),
            "service_tier": body.get("service_tier") or "default",
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": {"format": {"type": "text"}, "verbosity": "medium", **(body.get("text") or {})},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": self.tools,
            "top_logprobs": body.get("top_logprobs", 0),
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation", "disabled"),
            "usage": self.usage if final else None,
            "user": body.get("user"),
            "metadata": body.get("metadata") or {},
        }
        if final and status == "failed":
            response["error"] = {
                "code": "server_error",
                "message": "The server had an error while processing your request. Sorry about that!",
            }
        if options.tool_usage:
            image_gen = sum((call.tokens() for call in self.calls), Tokens()) if final else Tokens()
            response["tool_usage"] = {"image_gen": image_gen.usage(), "web_search": {"num_requests": 0}}
        return response

    def events(self, options: Options, b64: str) -> list[JSON]:
        """The SSE events of this response, in the order and with the fields the real API sends."""
        events: list[JSON] = []

        def emit(type_: str, **fields: Any) -> None:
            events.append({**_event(type_, **fields), "sequence_number": len(events)})

        emit(
            "response.created",
            response=self.snapshot("queued" if self.background else "in_progress", options, b64),
        )
        if self.background:
            emit("response.queued", response=self.snapshot("queued", options, b64))
        emit("response.in_progress", response=self.snapshot("in_progress", options, b64))
        if self.final_status == "failed":
            emit("response.failed", response=self.snapshot("failed", options, b64))
            return events
        for index, call in enumerate(self.calls):
            ids = {"item_id": call.id, "output_index": index}
            emit("response.output_item.added", output_index=index, item=call.added_item())
            emit("response.image_generation_call.in_progress", **ids)
            if not call.failed:
                emit("response.image_generation_call.generating", **ids)
                for partial in range(call.partials):
                    emit(
                        "response.image_generation_call.partial_image",
                        **ids,
                        **call.job.echo(),
                        partial_image_b64=b64,
                        partial_image_index=partial,
                    )
                if options.keepalive:
                    emit("keepalive")
                emit("response.image_generation_call.completed", **ids)
            emit("response.output_item.done", output_index=index, item=call.done_item(b64))
        index = len(self.calls)
        ids = {"item_id": self.message_id, "output_index": index, "content_index": 0}
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
        emit("response.output_item.added", output_index=index, item=self.message_item(done=False))
        emit("response.content_part.added", **ids, part=part)
        for delta in re.findall(r"\S+\s*", self.message):
            emit("response.output_text.delta", **ids, delta=delta, logprobs=[])
        emit("response.output_text.done", **ids, logprobs=[], text=self.message)
        emit("response.content_part.done", **ids, part={**part, "text": self.message})
        emit("response.output_item.done", output_index=index, item=self.message_item(done=True))
        emit(f"response.{self.final_status}", response=self.snapshot(self.final_status, options, b64))
        return events


def _message_text(calls: Sequence[ImageCall], wanted_image: bool) -> str:
    if any(call.failed for call in calls):
        return "I couldn't create that image: the request was blocked by moderation."
    if len(calls) > 1:
        return f"Here are the {len(calls)} images you asked for."
    if calls:
        return "Here is the image you asked for."
    return "Sure, no image this time." if wanted_image else "Hello from the local OpenAI server."


@dataclass
class _Fault:
    kind: str
    remaining: int
    path_prefix: str | None
    fields: JSON | None = None  # kind "override": top-level fields replacing the answer's own


class _Exchange:
    """One HTTP request, its route, and the writing of its answer with the faults that apply to it."""

    def __init__(self, handler: _Handler, app: LocalOpenAIServer) -> None:
        self.handler = handler
        self.app = app
        url = urlsplit(handler.path)
        self.path = url.path
        self.query = dict(parse_qsl(url.query, keep_blank_values=True))
        self.headers = {key.lower(): value for key, value in handler.headers.items()}
        match = re.fullmatch(r"/openai/deployments/([^/]+)(/.*)", self.path)
        self.deployment = match[1] if match else None
        route = match[2] if match else self.path
        for prefix in ("/openai/v1", "/openai", "/v1"):
            if route.startswith(prefix + "/"):
                route = route.removeprefix(prefix)
                break
        self.route = route
        self.body = self._read_body()
        self.json: Any = None
        self.fields: dict[str, str] = {}
        self.files: list[FilePart] = []
        self.fault: str | None = None  # a named fault distorting the answer (status faults never get here)
        self.override: JSON = {}  # fields replacing the answer's own (see ``answer_with``)

    def _read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.handler.rfile.readline().split(b";")[0], 16):
                chunks.append(self.handler.rfile.read(size))
                self.handler.rfile.readline()
            while self.handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(chunks)
        return self.handler.rfile.read(int(self.headers.get("content-length") or 0))

    def parse_body(self) -> None:
        """Parse JSON or multipart; a body that cannot be parsed is answered 400 like the real API."""
        content_type = self.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            self.fields, self.files = _parse_multipart(content_type, self.body)
        elif self.body:
            try:
                self.json = json.loads(self.body)
            except ValueError:
                raise ApiError(400, "We could not parse the JSON body of your request.") from None

    def record(self) -> RecordedRequest:
        return RecordedRequest(
            method=self.handler.command,
            path=self.path,
            route=self.route,
            deployment=self.deployment,
            query=self.query,
            headers=self.headers,
            body=_summarize(self.json),
            fields=_summarize(self.fields),
            files=self.files,
        )

    def _encode(self, payload: JSON) -> bytes:
        if self.fault == "missing_usage":
            payload = _strip_usage(payload)
        elif self.fault == "extra_fields":
            payload = _add_unknown_fields(payload)
        return json.dumps(payload, separators=(",", ":")).encode()

    def _start(self, status: int, content_type: str, headers: Mapping[str, str]) -> None:
        self.handler.send_response(status)
        self.handler.send_header("Content-Type", content_type)
        self.handler.send_header(REQUEST_ID_HEADER, new_request_id())
        self.handler.send_header("openai-processing-ms", str(self.app.options.latency_ms))
        for name, value in headers.items():
            self.handler.send_header(name, value)

    def _drop_connection(self) -> None:
        self.handler.close_connection = True
        self.handler.connection.shutdown(socket.SHUT_RDWR)

    def reply_bytes(
        self, status: int, body: bytes, content_type: str, headers: Mapping[str, str] | None = None
    ) -> None:
        """Answer with a Content-Length body; truncating faults send only its first half."""
        truncating = self.fault in ("malformed_json", "short_stream", "cut_stream")
        sent = body[: len(body) // 2] if truncating else body
        self._start(status, content_type, headers or {})
        self.handler.send_header("Content-Length", str(len(body if self.fault == "cut_stream" else sent)))
        self.handler.end_headers()
        self.handler.wfile.write(sent)
        if self.fault == "cut_stream":
            self._drop_connection()

    def reply_json(self, status: int, payload: JSON, headers: Mapping[str, str] | None = None) -> None:
        if status == 200 and self.override:
            payload = {**payload, **self.override}
        self.reply_bytes(status, self._encode(payload), "application/json", headers)

    def reply_sse(self, events: Sequence[JSON]) -> None:
        """Write events as chunked ``text/event-stream``, framed ``event:``/``data:`` like the API."""
        self._start(200, "text/event-stream; charset=utf-8", {"Transfer-Encoding": "chunked"})
        self.handler.end_headers()
        count = len(events) // 2 if self.fault in ("cut_stream", "short_stream") else len(events)
        for index, event in enumerate(events[:count]):
            if self.override and event["type"].startswith("image_") and event["type"].endswith(".completed"):
                event = {**event, **self.override}
            data = self._encode(event)
            if index == 0 and self.fault == "malformed_json":
                data = data[: len(data) // 2]
            frame = b"event: " + event["type"].encode() + b"\ndata: " + data + b"\n\n"
            self.handler.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
        if self.fault == "cut_stream":
            self._drop_connection()
        else:
            self.handler.wfile.write(b"0\r\n\r\n")


class _WebSocket:
    """The server side of one upgraded RFC 6455 connection: masked frames in, unmasked frames out."""

    def __init__(self, handler: _Handler) -> None:
        self._handler = handler

    @classmethod
    def accept(cls, exchange: _Exchange) -> _WebSocket:
        """Answer the opening handshake (101 with the key's digest); no extension, no subprotocol."""
        key = exchange.headers.get("sec-websocket-key")
        if not key or exchange.headers.get("upgrade", "").lower() != "websocket":
            raise ApiError(400, "Expected a WebSocket upgrade request.")
        accept = base64.b64encode(hashlib.sha1((key + _WEBSOCKET_GUID).encode()).digest()).decode()
        handler = exchange.handler
        handler.send_response(101, "Switching Protocols")
        handler.send_header("Upgrade", "websocket")
        handler.send_header("Connection", "Upgrade")
        handler.send_header("Sec-WebSocket-Accept", accept)
        handler.send_header(REQUEST_ID_HEADER, new_request_id())
        handler.end_headers()
        handler.wfile.flush()
        return cls(handler)

    def _read(self, size: int) -> bytes:
        data = self._handler.rfile.read(size)
        if len(data) < size:
            raise ConnectionResetError("the client hung up")
        return data

    def receive(self) -> str | None:
        """The next text message (pings answered on the way); None once the client closes."""
        message = b""
        while True:
            first, second = self._read(2)
            opcode, length = first & 0x0F, second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", self._read(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", self._read(8))
            if length + len(message) > _WS_MAX_MESSAGE:
                raise ConnectionAbortedError("message too large")
            mask = self._read(4) if second & 0x80 else b""
            payload = self._read(length)
            if mask and length:  # unmask in one XOR of two big integers
                key = (mask * (length // 4 + 1))[:length]
                unmasked = int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")
                payload = unmasked.to_bytes(length, "big")
            if opcode == _WS_CLOSE:
                self._frame(_WS_CLOSE, payload[:2])
                return None
            if opcode == _WS_PING:
                self._frame(_WS_PONG, payload)
            elif opcode in (0x0, _WS_TEXT, _WS_BINARY):
                message += payload
                if first & 0x80:
                    return message.decode(errors="replace")

    def send_json(self, payload: JSON) -> None:
        self._frame(_WS_TEXT, json.dumps(payload, separators=(",", ":")).encode())

    def close(self, code: int = 1000) -> None:
        """Send a close frame; the handler then ends the TCP connection."""
        self._frame(_WS_CLOSE, struct.pack("!H", code))

    def drop(self) -> None:
        """End the TCP connection without a close frame, as a network failure would."""
        self._handler.close_connection = True
        self._handler.connection.shutdown(socket.SHUT_RDWR)

    def _frame(self, opcode: int, payload: bytes) -> None:
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, length)
        elif length < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 127, length)
        self._handler.wfile.write(header + payload)


class _Handler(BaseHTTPRequestHandler):
    """Hands every request to the owning ``LocalOpenAIServer`` and keeps the logs quiet."""

    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.app._track(self, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.app._track(self, add=False)

    def do_GET(self) -> None:
        self.server.app._dispatch(self)

    def do_POST(self) -> None:
        self.server.app._dispatch(self)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request log lines that would clutter test output."""


class _HTTPServer(ThreadingHTTPServer):
    block_on_close = False
    request_queue_size = 128  # the default backlog of 5 refuses bursts of concurrent test clients
    app: LocalOpenAIServer

    def server_bind(self) -> None:
        """Bind without the reverse DNS lookup ``HTTPServer`` does, which can stall offline."""
        TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[0], self.server_address[1]  # type: ignore[assignment]

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up (timeouts, cut streams) are expected here, not worth a traceback."""


class LocalOpenAIServer:
    """An OpenAI-compatible server on 127.0.0.1 for the demo and the tests; use it as a context manager.

    Options:
        port: TCP port, 0 picks a free one.
        usage_shape: Images API usage as of "2026" (with ``output_tokens_details``), "2025" (without it),
            "no_echo" (usage, but no quality/size/background/output_format echo), "none" (no usage).
        image_b64_bytes: make every base64 image exactly this long (a multiple of 4), for memory tests.
        deployments: Azure deployment name -> model; a deployment not listed is taken as a model name.
        tool_usage: report ``tool_usage`` on Responses (False emulates 2025 / openai 2.x era responses).
        echo_tool_model: echo the image tool's model in ``response.tools`` (False: no model key).
        tool_default_model: the image model of an ``image_generation`` tool that names none.
        latency_ms: wait this long before every answer.
        background_polls: retrievals of a background response that still report ``in_progress``.
        keepalive: send a ``keepalive`` event after each image's partial images, as the API sometimes does.
        svg_author_model: the SVG author an ``output_format="svg"`` request without ``svg.model`` reports.
    """

    def __init__(self, port: int = 0, **options: Any) -> None:
        self.options = Options(**options)
        self._b64 = png_b64(self.options.image_b64_bytes)
        self._png = base64.b64decode(self._b64)
        self._port = port
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._requests: list[RecordedRequest] = []
        self._faults: list[_Fault] = []
        self._runs: OrderedDict[str, ResponseRun] = OrderedDict()
        self._handlers: dict[_Handler, threading.Thread] = {}
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> LocalOpenAIServer:
        self._httpd = _HTTPServer(("127.0.0.1", self._port), _Handler)
        self._httpd.app = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="local-openai", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop promptly: wake sleeping answers, drop open keep-alive connections, join bounded."""
        if self._httpd is None or self._thread is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        with self._lock:
            handlers = dict(self._handlers)
        for handler in handlers:
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        deadline = time.monotonic() + _CLOSE_TIMEOUT_S
        for thread in [self._thread, *handlers.values()]:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._httpd = None

    def __enter__(self) -> LocalOpenAIServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- public API ------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._httpd is not None, "the server is not running"
        return int(self._httpd.server_address[1])

    @property
    def azure_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.azure_endpoint}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def reset(self) -> None:
        """Forget received requests, pending faults and stored responses."""
        with self._lock:
            self._requests.clear()
            self._faults.clear()
            self._runs.clear()

    def inject(self, fault: int | str, count: int = 1, path_prefix: str | None = None) -> None:
        """Make the next ``count`` requests whose path starts with ``path_prefix`` misbehave.

        ``fault`` is an HTTP status (400, 401, 429, 500, 503) answered with the API's error body,
        "malformed_json", "missing_usage", "extra_fields", "cut_stream" (the body stops half-way and the
        connection is dropped), "short_stream" (the body ends cleanly half-way: a stream without its
        completed event) or "delay:<seconds>". ``path_prefix`` matches the path as sent ("/v1/images")
        or the API route ("/responses").
        """
        kind = str(fault)
        delay = re.fullmatch(r"delay:(\d+(?:\.\d+)?)", kind)
        if fault not in _STATUS_FAULTS and kind not in _NAMED_FAULTS and delay is None:
            raise ValueError(f"unknown fault {fault!r}")
        if count < 1:
            raise ValueError("count must be at least 1")
        if delay is not None and float(delay[1]) > _MAX_SLEEP_S:
            raise ValueError(f"delays are bounded to {_MAX_SLEEP_S} seconds")
        with self._lock:
            self._faults.append(_Fault(kind, count, path_prefix))

    def answer_with(self, fields: JSON, count: int = 1, path_prefix: str | None = None) -> None:
        """Make the next ``count`` successful answers (whose path starts with ``path_prefix``) carry
        ``fields`` in place of their own top-level fields: e.g. ``{"usage": {...}, "size": "0x0"}``
        on an Images answer (or on each ``*.completed`` event of an Images stream), or
        ``{"tool_usage": ..., "output": 5}`` on a Responses answer. For hostile-input tests."""
        if count < 1:
            raise ValueError("count must be at least 1")
        with self._lock:
            self._faults.append(_Fault("override", count, path_prefix, dict(fields)))

    # -- request handling ------------------------------------------------------------------------

    def _track(self, handler: _Handler, *, add: bool) -> None:
        with self._lock:
            if add:
                self._handlers[handler] = threading.current_thread()
            else:
                self._handlers.pop(handler, None)

    def _take_fault(self, exchange: _Exchange) -> str | None:
        with self._lock:
            for fault in self._faults:
                prefix = fault.path_prefix
                if prefix is None or exchange.path.startswith(prefix) or exchange.route.startswith(prefix):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    if fault.fields is not None:
                        exchange.override = fault.fields
                        return None
                    return fault.kind
        return None

    def _sleep(self, seconds: float) -> None:
        """Wait, bounded; a server closing meanwhile drops the request rather than answer it late."""
        if self._stopping.wait(min(seconds, _MAX_SLEEP_S)):
            raise ConnectionAbortedError("the server is closing")

    def _dispatch(self, handler: _Handler) -> None:
        """Record the request, apply latency and any queued fault, then answer it."""
        try:
            exchange = _Exchange(handler, self)
            try:
                self._answer(exchange)
            except ApiError as error:
                headers = (
                    {"retry-after-ms": str(_RETRY_AFTER_MS), "retry-after": "1"}
                    if error.status == 429
                    else {}
                )
                exchange.reply_json(error.status, error.body, headers)
            except Exception as error:  # a bug here must reach the test as a readable 500, not a hang
                exchange.reply_json(
                    500, ApiError(500, f"local server bug: {error!r}", type="server_error").body
                )
        except OSError:  # the client hung up (read timeout, cut stream): nothing left to answer
            handler.close_connection = True

    def _answer(self, exchange: _Exchange) -> None:
        try:
            exchange.parse_body()
        finally:
            with self._lock:
                self._requests.append(exchange.record())
        self._sleep(self.options.latency_ms / 1000)
        fault = self._take_fault(exchange)
        if fault is not None and fault.startswith("delay:"):
            self._sleep(float(fault.removeprefix("delay:")))
        elif fault is not None and fault.isdigit():
            error_type, message, param, code = _FAULT_ERRORS[int(fault)]
            raise ApiError(int(fault), message, type=error_type, param=param, code=code)
        else:
            exchange.fault = fault
        self._route(exchange)

    def _route(self, exchange: _Exchange) -> None:
        method, route = exchange.handler.command, exchange.route
        if method == "POST" and route in ("/images/generations", "/images/edits", "/images/variations"):
            self._images(exchange)
        elif method == "POST" and route == "/responses":
            self._create_response(exchange)
        elif method == "GET" and route == "/responses":
            self._responses_websocket(exchange)
        elif method == "GET" and route.startswith("/responses/"):
            self._retrieve_response(exchange, route.removeprefix("/responses/"))
        elif method == "GET" and route.startswith("/images/files/"):
            exchange.reply_bytes(200, self._png, "image/png")
        else:
            raise ApiError(404, f"Invalid URL ({method} {exchange.path})")

    # -- Images API ------------------------------------------------------------------------------

    def _image_model(self, exchange: _Exchange, params: Mapping[str, Any], default: str) -> str:
        """The model that serves the call: an Azure deployment's model, the ``model`` sent, or the default."""
        if exchange.deployment is not None:
            model = self.options.deployments.get(exchange.deployment, exchange.deployment)
            if model_family(model) is None:
                raise ApiError(
                    404,
                    "The API deployment for this resource does not exist.",
                    type="invalid_request_error",
                    code="DeploymentNotFound",
                )
            return model
        return str(params.get("model") or default)

    def _images(self, exchange: _Exchange) -> None:
        """Generations, edits (multipart or JSON ``images``) and variations, streamed or not."""
        params: dict[str, Any] = exchange.json if isinstance(exchange.json, dict) else dict(exchange.fields)
        kind = exchange.route.removeprefix("/images/")
        input_images = sum(part.name in ("image", "image[]") for part in exchange.files)
        input_images += len(params.get("images") or [])
        model = self._image_model(exchange, params, "dall-e-2" if kind == "variations" else "gpt-image-1")
        family = model_family(model)
        n = _int_param(params, "n", 1, 1, 10)
        prompt = str(params.get("prompt") or "")
        stream = _bool_param(params, "stream")
        if kind != "variations" and not prompt:
            raise ApiError.missing("prompt")
        if kind != "generations" and input_images == 0:
            raise ApiError.missing("image")
        if "moderation" in prompt.lower():
            raise ApiError(
                400,
                "Your request was rejected as a result of our safety system.",
                type="image_generation_user_error",
                code="moderation_blocked",
            )
        created = int(time.time())
        if family in ("dall-e-2", "dall-e-3") or kind == "variations":
            if family != "dall-e-2" and kind == "variations":
                raise ApiError.invalid("model", model)
            if stream:
                raise ApiError.invalid("stream", True)
            exchange.reply_json(200, self._dalle_body(family, params, prompt, n, created))
            return
        job = resolve_job(
            params,
            model,
            prompt=prompt,
            input_images=input_images if kind == "edits" else 0,
            svg_author_model=self.options.svg_author_model,
        )
        if job.output_format in ("svg", "gif") and stream:
            raise ApiError.invalid("stream", True)
        if job.output_format == "svg" and n != 1:
            raise ApiError.invalid("n", n)
        if stream:
            partials = _int_param(params, "partial_images", 0, 0, 3)
            prefix = "image_edit" if kind == "edits" else "image_generation"
            exchange.reply_sse(self._image_events(prefix, job, n, partials, created))
        else:
            exchange.reply_json(200, self._images_body(job, n, created))

    def _dalle_body(
        self, family: str | None, params: Mapping[str, Any], prompt: str, n: int, created: int
    ) -> JSON:
        """DALL·E answers: per-image priced, so no usage and no echo; ``url`` unless b64 was asked."""
        as_b64 = params.get("response_format") == "b64_json"
        data: list[JSON] = []
        for _ in range(n):
            url = f"{self.base_url}/images/files/img-{secrets.token_hex(12)}.png"
            image: JSON = {"b64_json": self._b64} if as_b64 else {"url": url}
            if family == "dall-e-3":
                image["revised_prompt"] = f"A detailed rendering of {prompt}"
            data.append(image)
        return {"created": created, "data": data}

    def _images_body(self, job: ImageJob, n: int, created: int) -> JSON:
        shape = self.options.usage_shape
        echo = {} if shape == "no_echo" else job.echo()
        body: JSON = {"created": created, **echo, "data": [{"b64_json": self._b64} for _ in range(n)]}
        if shape != "none":
            body["usage"] = job.tokens(n).usage(output_details=shape == "2026")
        if job.svg_usage is not None:
            body["svg_usage"] = job.svg_usage
        return body

    def _image_events(self, prefix: str, job: ImageJob, n: int, partials: int, created: int) -> list[JSON]:
        """Each image's partial images then its completed event, which carries that image's own usage."""
        echo = {**job.echo(), "created_at": created, "b64_json": self._b64}
        events: list[JSON] = []
        for _ in range(n):
            for index in range(partials):
                events.append(_event(f"{prefix}.partial_image", **echo, partial_image_index=index))
            completed = _event(f"{prefix}.completed", **echo)
            if self.options.usage_shape != "none":
                completed["usage"] = job.tokens(1, partials).usage(output_details=False)
            events.append(completed)
        return events

    # -- Responses API ---------------------------------------------------------------------------

    def _plan_response(self, body: JSON) -> ResponseRun:
        """Decide deterministically what the "model" does with this request (see the module's rules)."""
        if not body.get("model"):
            raise ApiError.missing("model")
        text, input_images = _input_text_and_images(body.get("input"))
        lowered = text.lower()
        tools = [tool for tool in body.get("tools") or [] if isinstance(tool, dict)]
        image_tool = next((tool for tool in tools if tool.get("type") == "image_generation"), None)
        calls: list[ImageCall] = []
        if image_tool is not None and "no image" not in lowered:
            calls = self._image_calls(body, image_tool, text, input_images)
        final_status = "failed" if "server error" in lowered else "completed"
        message = _message_text(calls, image_tool is not None)
        text_format = (body.get("text") or {}).get("format") or {}
        if text_format.get("type") == "json_schema":
            message = json.dumps(_schema_example(text_format.get("schema"), text_format.get("schema") or {}))
        reasoning = _REASONING_TOKENS if str(body["model"]).startswith(("gpt-5", "o1", "o3", "o4")) else 0
        output_tokens = text_tokens(message) + _TEXT_TOKENS_PER_IMAGE_CALL * len(calls) + reasoning
        limit = body.get("max_output_tokens")
        if final_status == "completed" and isinstance(limit, int) and output_tokens > limit:
            final_status, output_tokens = "incomplete", limit
        input_tokens = _BASE_TEXT_INPUT_TOKENS + text_tokens(text)
        usage = {
            "input_tokens": input_tokens,
            "input_tokens_details": {
                "cache_write_tokens": 0,
                "cached_tokens": _CACHED_TOKENS_WITH_PREVIOUS if body.get("previous_response_id") else 0,
            },
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": min(reasoning, output_tokens)},
            "total_tokens": input_tokens + output_tokens,
        }
        return ResponseRun(
            id=f"resp_{secrets.token_hex(25)}",
            request={key: value for key, value in body.items() if key not in ("input", "tools")},
            created_at=int(time.time()),
            background=bool(body.get("background")),
            final_status=final_status,
            calls=[] if final_status == "failed" else calls,
            message_id=f"msg_{secrets.token_hex(25)}",
            message=message,
            usage=None if final_status == "failed" else usage,
            tools=[self._echo_tool(tool) for tool in tools],
        )

    def _image_calls(self, body: JSON, tool: JSON, text: str, input_images: int) -> list[ImageCall]:
        """One call per image the input asks for: 2 for "two images", 1 failed for "moderation"."""
        lowered = text.lower()
        requested = tool.get("action")
        edit_hint = input_images > 0 or bool(body.get("previous_response_id"))
        action = requested if requested in ("generate", "edit") else ("edit" if edit_hint else "generate")
        revised = f"A detailed illustration of {text.strip() or 'an image'}"
        billed = max(input_images, 1) if action == "edit" else input_images
        job = resolve_job(
            tool,
            str(tool.get("model") or self.options.tool_default_model),
            prompt=revised,
            input_images=billed,
            svg_author_model=self.options.svg_author_model,
        )
        partials = _int_param(tool, "partial_images", 0, 0, 3) if _bool_param(body, "stream") else 0
        failed = "moderation" in lowered
        count = 2 if "two images" in lowered and not failed else 1
        jobs = [job] * count
        if count == 2 and "one tall" in lowered and tool.get("size") in (None, "auto"):
            tall = {**tool, "size": "1024x1536"}
            jobs[1] = resolve_job(
                tall,
                job.model,
                prompt=revised,
                input_images=billed,
                svg_author_model=self.options.svg_author_model,
            )
        return [
            ImageCall(f"ig_{secrets.token_hex(25)}", action, each, revised, partials, failed) for each in jobs
        ]

    def _echo_tool(self, tool: JSON) -> JSON:
        """``response.tools`` entry: the image tool with its defaults filled in, other tools as sent."""
        if tool.get("type") != "image_generation":
            return tool
        echoed: JSON = {"type": "image_generation", "background": tool.get("background") or "auto"}
        if self.options.echo_tool_model:
            echoed["model"] = tool.get("model") or self.options.tool_default_model
        return {
            **echoed,
            "moderation": tool.get("moderation") or "auto",
            "n": 1,
            "output_compression": tool.get("output_compression", 100),
            "output_format": tool.get("output_format") or "png",
            "quality": tool.get("quality") or "auto",
            "size": tool.get("size") or "auto",
            **{key: tool[key] for key in ("frame_count", "frame_duration_ms") if key in tool},
        }

    def _store(self, run: ResponseRun, body: JSON) -> None:
        """Keep a response for later retrieval, as the API does unless ``store`` is false."""
        if body.get("store", True) or run.background:
            with self._lock:
                self._runs[run.id] = run
                while len(self._runs) > _MAX_STORED_RESPONSES:
                    self._runs.popitem(last=False)

    def _create_response(self, exchange: _Exchange) -> None:
        body = exchange.json if isinstance(exchange.json, dict) else {}
        run = self._plan_response(body)
        self._store(run, body)
        if _bool_param(body, "stream"):
            self._stream_run(exchange, run, after=-1)
        else:
            status = "queued" if run.background else run.final_status
            exchange.reply_json(200, run.snapshot(status, self.options, self._b64))

    def _retrieve_response(self, exchange: _Exchange, response_id: str) -> None:
        with self._lock:
            run = self._runs.get(response_id)
            if run is not None and not _bool_param(exchange.query, "stream"):
                run.retrievals += 1
        if run is None:
            raise ApiError(404, f"No response found with id '{response_id}'.", param="response_id")
        if _bool_param(exchange.query, "stream"):
            self._stream_run(
                exchange, run, after=_int_param(exchange.query, "starting_after", -1, -1, 1 << 30)
            )
            return
        done = not run.background or run.retrievals > self.options.background_polls
        status = run.final_status if done else "in_progress"
        exchange.reply_json(200, run.snapshot(status, self.options, self._b64))

    def _stream_run(self, exchange: _Exchange, run: ResponseRun, *, after: int) -> None:
        """Stream a response's events after sequence number ``after``; a finished stream completes it."""
        events = run.events(self.options, self._b64)
        exchange.reply_sse([event for event in events if event["sequence_number"] > after])
        with self._lock:
            run.retrievals = max(run.retrievals, self.options.background_polls)

    # -- Responses WebSocket mode ----------------------------------------------------------------

    def _responses_websocket(self, exchange: _Exchange) -> None:
        """Answer each ``response.create`` message with its streamed events until the client closes.

        A fault injected for ``/responses`` applies to the next create (a named one injected before
        the handshake, to the first; a status fault then refuses the handshake itself): a status
        fault answers the create with an ``error`` event,
        ``cut_stream`` sends half its events and drops the connection, ``short_stream`` sends half
        and closes the connection cleanly (code 1000).
        """
        websocket = _WebSocket.accept(exchange)
        exchange.handler.close_connection = True
        pending_fault = exchange.fault
        while (message := websocket.receive()) is not None:
            try:
                body = json.loads(message)
            except ValueError:
                body = None
            if not isinstance(body, dict) or body.get("type") != "response.create":
                kind = body.get("type") if isinstance(body, dict) else None
                error = ApiError(400, f"Unsupported event type {kind!r}.", param="type", code="invalid_value")
                websocket.send_json({"type": "error", **error.body, "status": error.status})
                continue
            with self._lock:
                self._requests.append(replace(exchange.record(), method="WEBSOCKET", body=_summarize(body)))
            fault, pending_fault = pending_fault or self._take_fault(exchange), None
            lane = {"stream_id": body["stream_id"]} if isinstance(body.get("stream_id"), str) else {}
            request = {key: value for key, value in body.items() if key not in ("type", "stream_id")}
            try:
                self._sleep(self.options.latency_ms / 1000)
                if fault is not None and fault.isdigit():
                    error_type, text, param, code = _FAULT_ERRORS[int(fault)]
                    raise ApiError(int(fault), text, type=error_type, param=param, code=code)
                if request.get("background"):
                    raise ApiError(400, "background is not supported over WebSocket.", param="background")
                run = self._plan_response({**request, "stream": True})
            except ApiError as error:
                websocket.send_json({"type": "error", **error.body, "status": error.status, **lane})
                continue
            self._store(run, request)
            events = run.events(self.options, self._b64)
            cut = fault in ("cut_stream", "short_stream")
            for event in events[: len(events) // 2] if cut else events:
                websocket.send_json({**event, **lane})
            if fault == "cut_stream":
                websocket.drop()
                return
            if fault == "short_stream":
                websocket.close()
                return


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until Ctrl-C or SIGTERM, printing the base URL for the demo to use."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=8765, help="TCP port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--usage-shape", choices=["2026", "2025", "no_echo", "none"], default="2026")
    parser.add_argument("--no-tool-usage", action="store_true", help="omit Responses tool_usage (2025 era)")
    parser.add_argument("--latency-ms", type=int, default=0)
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    options = {
        "usage_shape": args.usage_shape,
        "tool_usage": not args.no_tool_usage,
        "latency_ms": args.latency_ms,
    }
    with LocalOpenAIServer(args.port, **options) as server:
        print(server.base_url, flush=True)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
