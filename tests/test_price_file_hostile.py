"""A bad price file never makes `instrument()` raise, block or blow up: the plugin stays on, every
image call is unpriced with reason `price_file_error`, and the error message stays short."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from otel_image_cost.prices import MAX_PRICE_FILE_BYTES, PriceFileError, load_price_table

from conftest import Telemetry

ROW = """models:
  m:
    source: {source}
    as_of: {as_of}
    usd_per_1m_tokens:
      input_text: {price}
      input_cached_text: 1
      input_image: 1
      input_cached_image: 1
      output_image: 1
      output_text: 1
"""
# 5 x 10^8 strings once expanded, as the `source` of a row (a string is expected: its error shows it)
LEVELS = ["&a [xxxxxxxxxx, xxxxxxxxxx, xxxxxxxxxx, xxxxxxxxxx, xxxxxxxxxx]"] + [
    f"&{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]" for i in range(8)
]
ALIAS_BOMB = ROW.format(source=f"[{', '.join(LEVELS)}]", as_of='"2026-11-21"', price=1)
HOSTILE_FILES = {
    "impossible_date.yaml": ROW.format(source="s", as_of="2026-02-30", price=1),
    "5000_digit_number.yaml": ROW.format(source="s", as_of='"2026-11-21"', price="9" * 5000),
    "4000_digit_number.yaml": ROW.format(source="s", as_of='"2026-11-21"', price="9" * 4000),
    "5000_digit_number.json": '{"models": {"m": {"usd_per_1m_tokens": {"input_text": ' + "9" * 5000 + "}}}}",
    "deep_nesting.yaml": "models: " + "[" * 100_000 + "]" * 100_000,
    "deep_nesting.json": '{"models": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "alias_bomb.yaml": ALIAS_BOMB,
    "huge_key.yaml": "models:\n  " + "k" * 500_000 + ": 1\n",
}


def hostile_file(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_text(HOSTILE_FILES[name])
    return path


@pytest.mark.parametrize("name", HOSTILE_FILES)
def test_a_hostile_price_file_is_refused_quickly_with_a_short_message(tmp_path: Path, name: str) -> None:
    path = hostile_file(tmp_path, name)
    started = time.monotonic()
    with pytest.raises(PriceFileError) as raised:
        load_price_table(str(path))
    assert time.monotonic() - started < 5
    message = str(raised.value)
    assert message.startswith(f"{path}: ")
    assert len(message) < len(str(path)) + 600, message[:1000]


def test_a_file_over_1_mib_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"#" * (10 * 1024 * 1024))
    with pytest.raises(PriceFileError) as raised:
        load_price_table(str(path))
    assert str(raised.value) == f"{path}: larger than {MAX_PRICE_FILE_BYTES} bytes ({10 * 1024 * 1024})"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "prices.yaml"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []
    worker = threading.Thread(target=lambda: _capture(outcome, str(fifo)), daemon=True)
    worker.start()
    worker.join(5)
    if worker.is_alive():  # unblock the reader before failing, so the test process can exit
        with open(fifo, "wb"):
            pass
        pytest.fail("loading a FIFO blocked")
    assert [str(e) for e in outcome] == [f"{fifo}: not a regular file"]


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PriceFileError) as raised:
        load_price_table(str(tmp_path))
    assert str(raised.value) == f"{tmp_path}: not a regular file"


def _capture(outcome: list[BaseException], path: str) -> None:
    try:
        load_price_table(path)
    except BaseException as exc:
        outcome.append(exc)


@pytest.mark.parametrize("name", HOSTILE_FILES)
def test_instrument_never_raises_and_every_call_is_unpriced(
    tmp_path: Path,
    telemetry: Telemetry,
    instrument: Any,
    client: openai.OpenAI,
    caplog: pytest.LogCaptureFixture,
    name: str,
) -> None:
    caplog.set_level(logging.ERROR, logger="otel_image_cost")
    instrument(prices_path=str(hostile_file(tmp_path, name)))
    client.images.generate(model="gpt-image-1", prompt="a fox", quality="low")
    attributes = dict(telemetry.span().attributes or {})
    assert (attributes["openai.image.cost.source"], attributes["openai.image.unpriced.reason"]) == (
        "unknown",
        "price_file_error",
    )
    assert telemetry.sums("openai.image.cost") == []
    assert [(a["openai.image.unpriced.reason"], v) for a, v in telemetry.sums("openai.image.unpriced")] == [
        ("price_file_error", 1)
    ]
    (record,) = caplog.records
    assert len(record.getMessage()) < 2000
