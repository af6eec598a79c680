"""The repository stands alone: no tracked file reads or links the sibling directory the project
was first developed beside (a plain `git clone` has nothing next to it)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import ROOT

# Spelled in two parts so that this file does not name what it forbids.
FORBIDDEN = ("../" + "shared", "/work/" + "shared")


def tracked_files() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout (an unpacked sdist has no `git ls-files`)")
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30
    ).stdout.decode()
    return [name for name in listed.split("\0") if name]


def test_no_tracked_file_reads_or_links_outside_the_repository() -> None:
    files = tracked_files()
    assert "tests/fixtures/recorded/README.md" in files  # the fixtures are ours, with their provenance
    offenders = [
        f"{name}: {needle}"
        for name in files
        if (ROOT / name).is_file()
        for needle in FORBIDDEN
        if needle in (ROOT / name).read_bytes().decode("utf-8", errors="replace")
    ]
    assert offenders == []
