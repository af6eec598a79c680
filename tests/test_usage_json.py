"""`compact_json` (`openai.image.usage.raw`) writes exactly `json.dumps(model_dump(mode="json",
exclude_unset=True), separators=(",", ":"))`, with one kept encoder instead of a new one per call:
on every object the SDK builds from the recorded responses and stream events, on models built by
hand (extras, unset fields, fields set to None, floats, non-ASCII), and on plain JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydantic
import pytest
from openai._models import construct_type
from openai.types import ImageEditStreamEvent, ImageGenStreamEvent, ImagesResponse
from openai.types.responses import Response, ResponseStreamEvent

from otel_image_cost import extract
from otel_image_cost.extract import compact_json

from conftest import RECORDED

RECORDINGS = sorted(RECORDED.glob("*.json"))


def dumped(model: Any) -> str:
    return json.dumps(model.model_dump(mode="json", exclude_unset=True), separators=(",", ":"))


def payloads(recording: dict[str, Any]) -> Iterator[tuple[Any, Any]]:
    """(SDK type, JSON) of the recording's response body or of each of its stream events."""
    path = recording["path"]
    if "response_sse" in recording:
        kind = (
            ResponseStreamEvent
            if path.endswith("/responses")
            else ImageEditStreamEvent
            if path.endswith("/edits")
            else ImageGenStreamEvent
        )
        for line in recording["response_sse"].splitlines():
            if line.startswith("data: ") and line != "data: [DONE]":
                yield kind, json.loads(line.removeprefix("data: "))
    else:
        yield (Response if path.endswith("/responses") else ImagesResponse), recording["response"]


def models_in(value: Any) -> Iterator[pydantic.BaseModel]:
    """Every pydantic model in a tree of models, lists and dicts."""
    if isinstance(value, pydantic.BaseModel):
        yield value
        children: list[Any] = [value.__dict__[name] for name in type(value).model_fields]
        children += list((value.__pydantic_extra__ or {}).values())
        for child in children:
            yield from models_in(child)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from models_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from models_in(item)


_WITH_IMAGE_USAGE = ("ImagesResponse", "ImageGenCompletedEvent", "ImageEditCompletedEvent")
_USAGES_SEEN: list[str] = []


def usage_objects(root: Any) -> Iterator[Any]:
    """The usage objects the plugin turns into `openai.image.usage.raw`."""
    for model in models_in(root):
        usage = model.__dict__.get("usage")
        if type(model).__name__ in _WITH_IMAGE_USAGE and usage is not None:
            yield usage
        image_gen = extract.field(extract.field(model, "tool_usage"), "image_gen")
        if type(model).__name__ == "Response" and image_gen is not None:
            yield image_gen


@pytest.mark.parametrize("path", RECORDINGS, ids=[p.stem for p in RECORDINGS])
@pytest.mark.parametrize("build", ["construct_type", "model_validate"])
def test_every_sdk_model_of_every_recording_dumps_the_same(path: Path, build: str) -> None:
    recording = json.loads(path.read_text())
    seen = 0
    for kind, data in payloads(recording):
        if build == "construct_type":
            root = construct_type(type_=kind, value=data)
        else:  # the SDK itself never validates; some older recordings miss fields it now requires
            try:
                root = pydantic.TypeAdapter(kind).validate_python(data)
            except pydantic.ValidationError:
                continue
        for model in models_in(root):
            assert compact_json(model) == dumped(model)
            seen += 1
        for usage in usage_objects(root):
            if isinstance(usage, pydantic.BaseModel):
                assert compact_json(usage) == dumped(usage)
                _USAGES_SEEN.append(path.stem)
    assert seen > 0 or build == "model_validate"


def test_the_recordings_hold_image_usage_objects() -> None:
    """The check above saw the usage objects themselves (it runs first: same module, file order)."""
    assert len(set(_USAGES_SEEN)) >= 12


class Details(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")
    text_tokens: int | None = None
    image_tokens: int | None = None


class Usage(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")
    input_tokens: int
    output_tokens: int = 0
    total_tokens: int | None = None
    input_tokens_details: Details | None = None
    ratio: float | None = None
    tags: list[Any] | None = None


@pytest.mark.parametrize(
    "data",
    [
        {"input_tokens": 1},
        {"input_tokens": 1, "output_tokens": 2, "total_tokens": None},
        {"output_tokens": 2, "input_tokens": 1, "input_tokens_details": {"image_tokens": 3}},
        {"input_tokens": 1, "input_tokens_details": {"text_tokens": 1, "new": {"a": [1, 2.5, None]}}},
        {"input_tokens": 1, "brand_new": 7, "another": {"x": "y"}},
        {"input_tokens": 1, "ratio": 0.1, "tags": ["a", 1, True, None, {"k": 2}]},
        {"input_tokens": 1, "ratio": float("inf")},
        {"input_tokens": 1, "tags": [float("nan")]},
        {"input_tokens": 1, "tags": [(1, 2)]},
        {"input_tokens": 1, "tags": ["caf\u00e9", "\u2603"], "note": "\u00fc"},
    ],
)
@pytest.mark.parametrize("build", ["model_validate", "model_construct"])
# model_construct leaves a nested dict where a model is declared: pydantic warns while dumping it.
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_hand_built_models_dump_the_same(data: dict[str, Any], build: str) -> None:
    model = Usage.model_validate(data) if build == "model_validate" else Usage.model_construct(**data)
    assert compact_json(model) == dumped(model)


def test_json_written_the_way_json_dumps_writes_it() -> None:
    values: list[Any] = [
        {"a": 1, "b": None, "c": True, "d": [1.5, 1e-05, 1e22, -0.0, float("inf"), float("nan")]},
        {"text": 'caf\u00e9 \u2603 "quoted" \\ \n \t \x00', "\u00fc": {"nested": []}},
        [1, "x", {"k": [None]}],
        "just a string",
        12345678901234567890,
    ]
    for value in values:
        assert compact_json(value) == json.dumps(value, separators=(",", ":"), sort_keys=False)


def test_plain_json_and_none() -> None:
    assert compact_json(None) is None
    assert compact_json({"input_tokens": 1, "x": [1, 2]}) == '{"input_tokens":1,"x":[1,2]}'
