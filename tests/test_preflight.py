"""Pre-flight pieces the battery (test_reliability.py) does not reach one by one: the check
registry, the probe leaving nothing behind, the space sums per filesystem, the memory bound and the
held temp folders of the generator."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

import pytest

from ssnbench import preflight
from ssnbench.config import load
from ssnbench.data import synthetic
from ssnbench.errors import UserError
from ssnbench.runner import plan

SUITE = """\
name: pf
dataset: {kind: synthetic, cases: 20, seed: 0, source_size: 16, image_size: 16, border_crop: 0}
train: {epochs: 2, batch_size: 8}
models:
  - {name: m, arch: single, options: {backbone: resnet18, modality: derm}}
"""


@pytest.fixture
def flight(tmp_path: Path) -> preflight.Flight:
    (tmp_path / "s.yaml").write_text(SUITE)
    suite = load(tmp_path / "s.yaml")
    return preflight.Flight(suite, tmp_path / "out" / "deep", tmp_path / "rep", tmp_path / "cache",
                            jobs=plan(suite))


def test_probe_writes_nothing_and_creates_no_folder(flight: preflight.Flight, tmp_path: Path) -> None:
    before = sorted(tmp_path.rglob("*"))
    preflight.run_preflight(flight)
    assert sorted(tmp_path.rglob("*")) == before
    assert flight.params["m"] > 1_000_000  # from the meta-device build
    whats = {what for _, _, what in flight.needs}
    assert whats == {"results", "checkpoints", "report", "synthetic images"}


def test_space_names_the_folder_and_the_parts(flight: preflight.Flight, monkeypatch) -> None:
    usage = shutil.disk_usage(flight.cache.parent)
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda p: usage._replace(free=10 * 2**20))
    parts = r"\(synthetic images .*, results .*, checkpoints .*, report 2.0 MB, margin 64.0 MB\)"
    with pytest.raises(UserError, match=rf"cache, .*deep, .*rep: need about .* {parts}, only 10.0 MB"):
        preflight.run_preflight(flight)


def test_memory_bound(flight: preflight.Flight, monkeypatch) -> None:
    monkeypatch.setattr(preflight, "available_memory", lambda: 1000)
    with pytest.raises(UserError, match=r"dataset.image_size: 16 px x 20 cases needs 30.0 KB"):
        preflight.run_preflight(flight)


def test_registered_checks_run_in_order_and_names_are_unique(flight, monkeypatch) -> None:
    seen = []
    monkeypatch.setattr(preflight, "CHECKS", list(preflight.CHECKS))
    preflight.check("extra")(lambda f: seen.append(len(f.needs)))
    preflight.run_preflight(flight)
    assert seen and seen[0] > 0  # ran after the estimates, before `space`
    with pytest.raises(ValueError, match="registered twice"):
        preflight.check("extra")(lambda f: None)


def test_a_held_working_dir_is_never_cleaned(tmp_path: Path) -> None:
    with synthetic.working_dir(tmp_path, ".synthetic-x.") as held:
        os.utime(held / synthetic.OWNER_LOCK, (0, 0))  # old, but its owner lives
        assert synthetic.clean_stale_dirs(tmp_path) == []
        assert held.is_dir() and (held.stat().st_mode & 0o777) == 0o777 & ~synthetic.current_umask()
    assert not held.exists()


def test_a_dead_owners_working_dir_is_cleaned(tmp_path: Path) -> None:
    dead = tmp_path / ".release_v0.partial-abc"
    dead.mkdir()
    lock = dead / synthetic.OWNER_LOCK
    lock.write_text("")
    os.utime(lock, (0, 0))
    fresh = tmp_path / ".release_v0.partial-new"
    fresh.mkdir()  # no lock file and young: maybe being renamed right now
    other = tmp_path / "keep-me"
    other.mkdir()
    fd = os.open(lock, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert synthetic.clean_stale_dirs(tmp_path) == []  # held by us: alive
    finally:
        os.close(fd)
    assert synthetic.clean_stale_dirs(tmp_path) == [dead]
    assert fresh.is_dir() and other.is_dir()
