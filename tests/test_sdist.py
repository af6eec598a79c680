"""The sdist is a complete source release: built, unpacked, and its own tests pass from it.

The unpacked `src/` goes first on the import path, so the tests (and the console script they run)
exercise the sdist's code, with the sdist's fixtures, examples and docs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import openai
import pytest

from conftest import ROOT

pytestmark = pytest.mark.skipif(
    int(openai.__version__.split(".")[0]) < 3,
    reason="building and unpacking the sdist is slow: it runs on the main line (openai 3.x) only",
)

# A meaningful subset: the cost engine, replayed real recordings, the real SDK against the local
# server (fixtures and examples from the sdist), the command, and the packaging checks.
SUBSET = [
    "tests/test_cost.py",
    "tests/test_recorded_images.py",
    "tests/test_recorded_responses.py",
    "tests/test_images_paths.py",
    "tests/test_cli_quote_prices.py",
    "tests/test_packaging.py",
]


def test_tests_pass_from_the_unpacked_sdist(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--outdir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    [sdist] = tmp_path.glob("otel_image_cost-*.tar.gz")
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path, filter="data")
    unpacked = tmp_path / sdist.name.removesuffix(".tar.gz")
    for needed in [
        "LICENSE",
        "CHANGELOG.md",
        "README.md",
        "docs/cost-model.md",
        "docs/telemetry-contract.md",
        "tests/fixtures/recorded/README.md",
        "examples/local_openai_server.py",
        "src/otel_image_cost/prices.yaml",
    ]:
        assert (unpacked / needed).is_file(), needed
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OPENAI_"))}
    env["PYTHONPATH"] = str(unpacked / "src")
    where = subprocess.run(
        [sys.executable, "-c", "import otel_image_cost; print(otel_image_cost.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(unpacked)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SUBSET],
        cwd=unpacked,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " failed" not in done.stdout and " passed" in done.stdout
