"""The semconv histograms use the bucket boundaries GenAI semantic conventions recommend."""

from __future__ import annotations

from typing import Any

import openai

from conftest import Telemetry


def test_duration_and_token_histograms_have_genai_buckets(
    telemetry: Telemetry, instrumented: Any, client: openai.OpenAI
) -> None:
    client.images.generate(model="gpt-image-1", prompt="a cat", quality="high")
    ((_, duration),) = telemetry.points("gen_ai.client.operation.duration")
    assert list(duration.explicit_bounds) == [
        0.01,
        0.02,
        0.04,
        0.08,
        0.16,
        0.32,
        0.64,
        1.28,
        2.56,
        5.12,
        10.24,
        20.48,
        40.96,
        81.92,
    ]
    tokens = {
        attributes["gen_ai.token.type"]: point
        for attributes, point in telemetry.points("gen_ai.client.token.usage")
    }
    assert list(tokens["output"].explicit_bounds) == [4**power for power in range(14)]
    # high 1024x1024: 4160 output tokens, in the bucket (4096, 16384]
    assert tokens["output"].bucket_counts[7] == 1
