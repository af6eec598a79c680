"""`extract.field` reads SDK models the way `getattr(model, name, None)` does, on its fast path too."""

from __future__ import annotations

from typing import Any

import pytest
from openai import BaseModel
from openai.types import ImagesResponse

from otel_image_cost.extract import field

_PAYLOAD: dict[str, Any] = {
    "created": 1,
    "quality": "low",
    "usage": {
        "input_tokens": 7,
        "output_tokens": 272,
        "total_tokens": 279,
        "input_tokens_details": {"text_tokens": 7, "image_tokens": 0},
        "future_field": {"nested": 1},
    },
    "data": [{"b64_json": "AAAA"}],
    "brand_new_top_level": "x",
}


class _WithProperty(BaseModel):
    a: int | None = None

    @property
    def doubled(self) -> int:
        return 2 * (self.a or 0)


def _models() -> list[Any]:
    parsed = ImagesResponse.model_validate(_PAYLOAD)
    constructed = ImagesResponse.construct(**_PAYLOAD)
    return [parsed, parsed.usage, constructed, _WithProperty(a=3), _WithProperty.construct()]


@pytest.mark.parametrize("model", _models(), ids=lambda m: type(m).__name__)
@pytest.mark.parametrize(
    "name",
    [
        "created",
        "quality",
        "usage",
        "data",
        "size",
        "input_tokens",
        "input_tokens_details",
        "cached_tokens",
        "future_field",
        "brand_new_top_level",
        "doubled",
        "a",
        "model_fields_set",
        "_request_id",
        "no_such_thing",
    ],
)
def test_field_matches_getattr(model: Any, name: str) -> None:
    assert field(model, name) == getattr(model, name, None)
    assert field(model, name) == getattr(model, name, None)  # again: what the first lookup learned


def test_field_of_dicts_and_none() -> None:
    assert field(_PAYLOAD, "quality") == "low"
    assert field(_PAYLOAD, "size") is None
    assert field(None, "quality") is None
