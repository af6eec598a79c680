"""Where our own time goes inside a real call, piece by piece.

A piece timed alone in a loop runs with its code and data hot in the CPU's caches; inside a call
it runs between the SDK's work and the OpenTelemetry SDK's, and costs two to three times as much.
So each piece is measured in place: an instrumented no-I/O call (the benchmark's mock transport
and providers) is timed with the piece as it is, then with the piece replaced by a stand-in that
returns what the piece returned on its first call. The difference is what the piece costs there.
Variants are interleaved round by round, each round starting one variant further on; the table
gives the median CPU time per call saved, and a variant with nothing replaced shows the noise.

    python benchmarks/bench_pieces.py [--rounds 15] [--calls 200]

Stand-ins return one call's objects to every call, so they are a measuring device only: a piece
whose result decides what happens next would change the call (a Responses call's `response_outcome`
carries the response id, and a kept id is priced only once), so no such piece is listed.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from otel_image_cost import OpenAIImageCostInstrumentor, calls, extract, responses_call, telemetry

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_overhead as bench  # noqa: E402

# (label, module, name): each looked up where the calling code finds it.
PIECES: dict[str, list[tuple[str, Any, str]]] = {
    "sync generate": [
        ("request: call kind (memo)", calls, "images_call_kind"),
        ("request: attribution", calls, "current_attribution"),
        ("response: read (all below)", calls, "images_response_outcome"),
        ("response: usage counts", extract, "image_token_usage"),
        ("response: usage raw JSON", extract, "compact_json"),
        ("cost engine", calls, "price_image_generation"),
        ("span: cost attributes", telemetry, "parts_attributes"),
        ("span: response attributes", calls, "_outcome_attributes"),
        ("metrics: labels", telemetry, "metric_labels"),
        ("metrics: all points recorded (OTel SDK included)", telemetry, "record_success"),
        ("billing record: attributes", calls, "billing_attributes"),
        ("billing record: emitted (OTel SDK included)", calls, "emit_billing_record"),
    ],
    "Responses + image tool": [
        ("request: image tool and model", responses_call, "resolve_tool_model"),
        ("cost engine: image part", calls, "price_image_generation"),
        ("cost engine: split over items", responses_call, "split_cost"),
        ("cost engine: mainline text price", responses_call, "price_text_model"),
        ("span: cost attributes", telemetry, "parts_attributes"),
        ("metrics: labels", telemetry, "metric_labels"),
        ("metrics: all points recorded (OTel SDK included)", telemetry, "record_success"),
        ("billing record: attributes", calls, "billing_attributes"),
        ("billing record: emitted (OTel SDK included)", calls, "emit_billing_record"),
    ],
}


def first_result(piece: Callable[..., Any]) -> Callable[..., Any]:
    """A stand-in for `piece`: calls it once, then returns that result every time."""
    kept: list[Any] = []

    def stand_in(*args: Any, **kwargs: Any) -> Any:
        if not kept:
            kept.append(piece(*args, **kwargs))
        return kept[0]

    return stand_in


def cpu_per_call(call: Callable[[], Any], calls_per_sample: int, module: Any = None, name: str = "") -> float:
    """Thread CPU µs per call, with `module.name` replaced by its stand-in when given."""
    original = getattr(module, name) if module is not None else None
    if module is not None:
        setattr(module, name, first_result(original))  # type: ignore[arg-type]
    try:
        call()  # the stand-in keeps this call's result
        start = time.thread_time_ns()
        for _ in range(calls_per_sample):
            call()
        return (time.thread_time_ns() - start) / calls_per_sample / 1000
    finally:
        if module is not None:
            setattr(module, name, original)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=200, help="calls per sample")
    args = parser.parse_args(argv)
    server = bench.ServerProcess()
    answers = bench.record_answers(server.base_url)
    server.close()
    client = bench.mock_client(answers)
    providers = bench.bench_providers()
    OpenAIImageCostInstrumentor().instrument(
        tracer_provider=providers.tracer_provider,
        meter_provider=providers.meter_provider,
        logger_provider=providers.logger_provider,
    )
    scenarios = {
        "sync generate": lambda: bench._generate(client),
        "Responses + image tool": lambda: bench._responses(client),
    }
    for call in scenarios.values():
        for _ in range(50):
            call()
    gc.collect()
    gc.freeze()
    print("| scenario | piece | CPU µs per call it costs in place, median [quartiles] |")
    print("|---|---|---|")
    for scenario, call in scenarios.items():
        # "as is, again": nothing replaced, so its row shows the noise of the method itself
        variants = [("as is", None, ""), ("as is, again", None, ""), *PIECES[scenario]]
        samples: dict[str, list[float]] = {label: [] for label, _, _ in variants}
        for round_ in range(args.rounds):
            shift = round_ % len(variants)  # each variant takes each place in a round in turn
            for label, module, name in variants[shift:] + variants[:shift]:
                samples[label].append(cpu_per_call(call, args.calls, module, name))
        whole = statistics.median(samples["as is"])
        print(f"| {scenario} | (instrumented call, no I/O: {whole:.1f} µs) | |")
        for label, _, _ in variants[1:]:
            saved = [whole - sample for sample in samples[label]]
            low, mid, high = bench.quartiles(saved)
            print(f"| | {label} | {mid:.1f} [{low:.1f}, {high:.1f}] |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
