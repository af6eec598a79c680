"""Does any of the plugin's work grow with the response's size? Counted in instructions.

Timing a 12 MB call cannot resolve a few microseconds: the SDK's own parsing of it varies by
hundreds from call to call. Valgrind's callgrind counts the instructions executed instead, which
repeat exactly for the same program and input, whatever else the machine is doing. For each
payload (one image of 1 KB, 1.5 MB, 6 MB, 12 MB of base64) it runs the same sync `images.generate`
calls uninstrumented and instrumented (the benchmark's providers: spans, metrics and billing
records all recorded), each in its own process, and reports the instructions ours adds per call.

    python benchmarks/bench_payload_instructions.py          # needs valgrind (Debian: valgrind)
    python benchmarks/bench_payload_instructions.py --cache  # also simulated cache misses (slower)

Only the timed calls are counted: they run inside `operator.call`, the one function callgrind is
told to collect in (`--toggle-collect`); imports, the server and warm-up calls are not counted.
"""

from __future__ import annotations

import argparse
import gc
import operator
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAYLOADS = {"1 KB": 0, "1.5 MB": 1_500_000, "6 MB": 6_000_000, "12 MB": 12_000_000}  # base64 chars
CALLS = 5
SUMMARY_LINE = re.compile(r"(Events|Collected)\s*:\s*(.+)")
# The simulated last level: a core's L2 (1 MiB, 16-way), the cache a megabyte payload sweeps out
# (callgrind would otherwise simulate the whole shared L3, which holds everything here).
LAST_LEVEL = "1048576,16,64"
ARMS = ("plain", "ours")


def child(b64_bytes: int, arm: str, calls: int) -> None:
    """In the process callgrind runs: answer from a recorded body, then make `calls` counted calls."""
    sys.path.insert(0, str(ROOT / "examples"))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_overhead as bench
    import openai

    from local_openai_server import LocalOpenAIServer

    options = {"image_b64_bytes": b64_bytes} if b64_bytes else {}
    with LocalOpenAIServer(**options) as server:
        body = bench.httpx.post(
            f"http://127.0.0.1:{server.port}/v1/images/generations",
            json={
                "model": "gpt-image-1",
                "prompt": bench.SMALL_PROMPT,
                "quality": "low",
                "size": "1024x1024",
            },
            timeout=120,
        ).content

    def answer(request: object) -> object:
        return bench.httpx.Response(200, content=body, headers={"content-type": "application/json"})

    client = openai.OpenAI(
        base_url="http://mock.invalid/v1",
        api_key="sk-local",
        max_retries=0,
        http_client=bench.httpx.Client(transport=bench.httpx.MockTransport(answer)),
    )
    providers = bench.bench_providers()
    if arm == "ours":
        from otel_image_cost import OpenAIImageCostInstrumentor

        OpenAIImageCostInstrumentor().instrument(
            tracer_provider=providers.tracer_provider,
            meter_provider=providers.meter_provider,
            logger_provider=providers.logger_provider,
        )
    for _ in range(3):  # warm: lazy imports, caches, the first-call paths
        bench._generate(client)
    gc.collect()
    gc.freeze()

    def counted() -> None:
        for _ in range(calls):
            bench._generate(client)

    operator.call(counted)


def count(b64_bytes: int, arm: str, calls: int, cache: bool) -> dict[str, int]:
    """Events of `calls` calls (instructions `Ir`; with `cache`, also misses), from callgrind's summary."""
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            *(["--cache-sim=yes", f"--LL={LAST_LEVEL}"] if cache else []),
            "--collect-atstart=no",
            "--toggle-collect=_operator_call",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            str(b64_bytes),
            arm,
            str(calls),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
        check=True,
    )
    summary = dict(SUMMARY_LINE.findall(done.stderr))
    if set(summary) != {"Events", "Collected"}:
        raise RuntimeError(f"callgrind printed no count:\n{done.stderr[-2000:]}")
    return dict(zip(summary["Events"].split(), map(int, summary["Collected"].split()), strict=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=CALLS, help="counted calls per process")
    parser.add_argument("--cache", action="store_true", help="simulate the caches: misses too")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(int(args.child[0]), args.child[1], int(args.child[2]))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    jobs = [(title, arm) for title in PAYLOADS for arm in ARMS]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        found = pool.map(lambda job: count(PAYLOADS[job[0]], job[1], args.calls, args.cache), jobs)
        counts = dict(zip(jobs, found, strict=True))
    print(f"Per sync generate call, {args.calls} counted calls per process (callgrind)")
    print()
    print(
        "| payload (one image) | plain: instructions | ours | ours adds | over the 1 KB call |"
        + (" ours adds: L1 misses (I + D) | L2-sized LL misses |" if args.cache else "")
    )
    print("|---|---|---|---|---|" + ("---|---|" if args.cache else ""))
    base = None
    for title in PAYLOADS:
        plain, ours = (counts[(title, arm)] for arm in ARMS)
        added = (ours["Ir"] - plain["Ir"]) / args.calls
        base = added if base is None else base
        growth = "-" if title == "1 KB" else f"{added - base:+,.0f} ({(added - base) / base:+.2%})"
        cells = [
            title,
            f"{plain['Ir'] / args.calls:,.0f}",
            f"{ours['Ir'] / args.calls:,.0f}",
            f"{added:,.0f}",
            growth,
        ]
        if args.cache:
            for events in (("I1mr", "D1mr", "D1mw"), ("ILmr", "DLmr", "DLmw")):
                misses = sum(ours[e] - plain[e] for e in events) / args.calls
                cells.append(f"{misses:,.0f}")
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
