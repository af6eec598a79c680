"""An Images call's kind (what it asks for, but prompt and user) is read once per distinct set of
arguments; the memo must never hand one call another's kind, nor grow without bound."""

from __future__ import annotations

from typing import Any

import openai

from otel_image_cost import OpenAIImageCostInstrumentor
from otel_image_cost import instrumentor as patching
from otel_image_cost.calls import Runtime, images_call_kind
from otel_image_cost.extract import IMAGE_REQUEST_ARGUMENTS, image_request


def _runtime() -> Runtime:
    runtime = patching._Active.runtime
    assert runtime is not None
    return runtime


def test_arguments_equal_in_value_but_not_in_type_are_different_kinds(
    instrumented: OpenAIImageCostInstrumentor, client: openai.OpenAI
) -> None:
    runtime = _runtime()
    streamed = images_call_kind(runtime, "generate", client, {"model": "gpt-image-1", "stream": True})
    not_streamed = images_call_kind(runtime, "generate", client, {"model": "gpt-image-1", "stream": 1})
    assert (streamed.request.stream, not_streamed.request.stream) == (True, False)
    two = images_call_kind(runtime, "generate", client, {"model": "gpt-image-1", "n": 2})
    as_float = images_call_kind(runtime, "generate", client, {"model": "gpt-image-1", "n": 2.0})
    assert (two.request.n, as_float.request.n) == (2, 1)  # a non-integer n is not trusted
    assert images_call_kind(runtime, "edit", client, {"model": "gpt-image-1"}).request.operation == "edit"


def test_an_argument_that_cannot_be_a_key_is_read_every_time(
    instrumented: OpenAIImageCostInstrumentor, client: openai.OpenAI
) -> None:
    runtime = _runtime()
    before = len(runtime.images_call_kinds)
    for output_format in ("gif", "png", "gif"):
        kwargs: dict[str, Any] = {"model": "gpt-image-2", "extra_body": {"output_format": output_format}}
        assert images_call_kind(runtime, "generate", client, kwargs).request.output_format == output_format
    assert len(runtime.images_call_kinds) == before


def test_the_memo_is_bounded(instrumented: OpenAIImageCostInstrumentor, client: openai.OpenAI) -> None:
    runtime = _runtime()
    for side in range(1, 1001):
        kind = images_call_kind(
            runtime, "generate", client, {"model": "gpt-image-1", "size": f"{side}x{side}"}
        )
        assert kind.attributes["openai.image.size"] == f"{side}x{side}"
    assert 0 < len(runtime.images_call_kinds) <= 256


def test_calls_of_one_kind_keep_their_own_prompt_and_user(
    instrument: Any, telemetry: Any, client: openai.OpenAI
) -> None:
    instrument(capture_message_content=True)
    for prompt, user in (("a fox", "alice"), ("a much longer prompt about a fox", "bob")):
        client.images.generate(model="gpt-image-1", prompt=prompt, quality="low", size="1024x1024", user=user)
    spans = [dict(span.attributes or {}) for span in telemetry.spans()]
    assert [(s["openai.image.prompt"], s["user.id"]) for s in spans] == [
        ("a fox", "alice"),
        ("a much longer prompt about a fox", "bob"),
    ]


def test_only_small_arguments_are_kept_as_keys(
    instrumented: OpenAIImageCostInstrumentor, client: openai.OpenAI
) -> None:
    """A megabyte model name or a huge `n` is read afresh each time, never held by the memo."""
    runtime = _runtime()
    before = len(runtime.images_call_kinds)
    long_model = "m" * 1_000_000
    kind = images_call_kind(runtime, "generate", client, {"model": long_model})
    assert kind.attributes["openai.image.model"] == "m" * 128  # made safe: cut to 128 characters
    assert (
        images_call_kind(runtime, "generate", client, {"model": "gpt-image-1", "n": 10**30}).request.n
        == 10**30
    )
    assert len(runtime.images_call_kinds) == before
    images_call_kind(runtime, "generate", client, {"model": "gpt-image-1", "n": 2, "stream": False})
    assert len(runtime.images_call_kinds) == before + 1


class _Reads(dict[str, Any]):
    """Arguments that note every name read from them."""

    read: set[str]

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)


def test_the_memo_key_holds_every_argument_the_request_reads() -> None:
    """A call kind is keyed by `IMAGE_REQUEST_ARGUMENTS`: an argument `image_request` reads that is
    not among them would let two calls that ask for different things share a kind."""
    arguments = _Reads(model="gpt-image-1", extra_body=_Reads())
    arguments.read, arguments["extra_body"].read = set(), set()
    image_request("generate", arguments)
    assert arguments.read == set(IMAGE_REQUEST_ARGUMENTS)
    assert arguments["extra_body"].read <= set(IMAGE_REQUEST_ARGUMENTS)
