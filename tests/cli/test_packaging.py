"""Packaging: a non-editable install (the Docker images) ships every sub-package; atomic writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from bigtrain.files import atomic_path, write_text_atomic

ROOT = Path(__file__).resolve().parents[2]


def test_every_subpackage_is_listed_in_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "bigtrain").rglob("__init__.py")}
    assert found - listed == set()
    # The recipe folders too: setuptools would warn about each unlisted one on every install.
    recipe_folders = {f"bigtrain._recipes.{p.name}" for p in (ROOT / "recipes").iterdir() if p.is_dir()}
    assert recipe_folders - listed == set()


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path):
    target = tmp_path / "config.yaml"
    write_text_atomic(target, "old\n")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk gone")
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]
    write_text_atomic(target, "new\n", mode=0o755)
    assert target.read_text() == "new\n" and target.stat().st_mode & 0o777 == 0o755
