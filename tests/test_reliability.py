"""The bad-input battery (issue 15): every bad input or fault a realistic user meets, in one table.

Each case sets up a workspace (a suite, a release, a results folder, a fault), runs the CLI (in
process: `cli.main`, so a case costs milliseconds, not an interpreter start) and asserts
- the exit code (docs/reliability.md lists them),
- ONE message line that names the file, key or value (`says`), and no traceback,
- that nothing finished before changed: every file in the workspace keeps its checksum, or was moved
  aside as `*.replaced-<time>.json` with the same bytes; a case that exits 2 writes nothing at all.

Deliberately black-box: only `ssnbench.cli` is imported, and inputs are built with plain file
operations, so the same file runs against an older ssnbench (the before/after tally in
docs/reliability.md). Cases needing a non-root user (permissions) fork and drop to `nobody` when the
tests run as root; cases with absurd sizes run in a forked child with a memory cap (an older
ssnbench would otherwise take the machine down). `slow` cases (real signals against a subprocess)
run with `make test-slow`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ssnbench import cli

ROOT = Path(__file__).resolve().parents[1]
CASE_TIMEOUT = 90  # seconds; an older ssnbench trains "forever" on some inputs
MEM_CAP = 3 << 30  # extra address space for the capped cases (bytes)
AS_ROOT = os.geteuid() == 0

TINY = """\
name: tiny
dataset: {kind: synthetic, cases: 20, seed: 0, source_size: 16, image_size: 16, border_crop: 0}
train: {epochs: 1, batch_size: 8, lr: 1.0e-3, warmup_epochs: 0, num_workers: 0, threads: 1}
seeds: [0, 1]
profile: false
models:
  - {name: m, arch: single, options: {backbone: resnet18, modality: derm}}
"""
REAL = TINY.replace(
    "{kind: synthetic, cases: 20, seed: 0, source_size: 16, image_size: 16, border_crop: 0}",
    "{kind: derm7pt, root: data, image_size: 16, border_crop: 0}",
)
RUN = ("run", "{ws}/suite.yaml", "--out", "{ws}/results", "--report-dir", "{ws}/reports", "--device", "cpu")
RUN_REAL = (
    "run",
    "{ws}/real.yaml",
    "--out",
    "{ws}/results",
    "--report-dir",
    "{ws}/reports",
    "--device",
    "cpu",
)
REPORT = ("report", "{ws}/results", "--report-dir", "{ws}/reports")
CHECK = ("data", "check", "{ws}/data")


# ---------------------------------------------------------------------------------------------
# Workspace helpers (setups)


@dataclass
class Ws:
    """One case's folder, plus the session's shared inputs it may copy."""

    path: Path
    release: Path  # a tiny synthetic release_v0 (session-wide, read only)
    results: Path  # a finished results folder of TINY (session-wide, read only)
    cache: Path  # the session's data cache (TINY's data already generated)
    restore: list[Path] = field(default_factory=list)  # chmod-ed paths to give back
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def set_cache(self, monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
        monkeypatch.setenv("SSNBENCH_CACHE", str(cache))
        _cache_knob(self.stack, cache)

    def suite(self, text: str = TINY, name: str = "suite.yaml") -> Path:
        p = self.path / name
        p.write_text(text)
        return p

    def edit(self, old: str, new: str, name: str = "suite.yaml", base: str = TINY) -> Path:
        assert old in base, old
        return self.suite(base.replace(old, new), name)

    def data(self) -> Path:
        """A private copy of the release under data/release_v0, and the real-kind suite."""
        dest = self.path / "data" / "release_v0"
        if not dest.exists():
            shutil.copytree(self.release, dest)
            _readable(dest)
            self.suite(REAL, "real.yaml")
        return dest

    def copy_results(self) -> Path:
        dest = self.path / "results"
        if not dest.exists():
            shutil.copytree(self.results, dest)
            _readable(dest)
        return dest

    def lock(self, path: Path, mode: int = 0o000) -> None:
        """chmod `path` (given back after the case)."""
        self.restore.append(path)
        path.chmod(mode)


def _readable(root: Path) -> None:
    """Folders 0755, files 0644: a copy's modes do not depend on the ssnbench that made the original
    (only the case's own chmod makes something unreadable)."""
    for p in [root, *root.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)


def _meta(ws: Ws) -> Path:
    return ws.data() / "meta" / "meta.csv"


def _meta_lines(ws: Ws) -> list[str]:
    return _meta(ws).read_text(encoding="utf-8").splitlines(keepends=True)


def _first_image(ws: Ws, column: str = "derm") -> Path:
    header, row = (line.rstrip("\n").split(",") for line in _meta_lines(ws)[:2])
    return ws.data() / "images" / row[header.index(column)]


def _image(path: Path, size: tuple[int, int]) -> None:
    """A valid image of `size` pixels at `path` (1-bit PNG, whatever the extension: PIL sniffs)."""
    from PIL import Image

    with Image.new("1", size) as img:
        img.save(path, format="PNG")


def _record(ws: Ws, name: str = "m__seed1.json") -> Path:
    return ws.copy_results() / name


def _edit_record(ws: Ws, fn: Callable[[dict], object], name: str = "m__seed1.json") -> None:
    path = _record(ws, name)
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data, indent=1))


def _stale_temp(ws: Ws, locked: bool, age: float, with_lock_file: bool = True) -> Path:
    """A temp folder as a killed (or, `locked`, a live) data generation leaves it in the cache."""
    cache = ws.path / "cache"
    folder = cache / ".synthetic-20c-s9-16px-000000000000.abc123"
    (folder / "release_v0" / "meta").mkdir(parents=True)
    (folder / "release_v0" / "meta" / "meta.csv").write_text("partial")
    if with_lock_file:
        lock = folder / ".owner.lock"
        lock.write_text("")
        if locked:
            fd = os.open(lock, os.O_RDONLY)
            fcntl.flock(fd, fcntl.LOCK_EX)
            ws.restore.append(Path(f"/proc/self/fd/{fd}"))  # closed after the case
        os.utime(lock, (time.time() - age, time.time() - age))
    os.utime(folder, (time.time() - age, time.time() - age))
    return folder


# ---------------------------------------------------------------------------------------------
# The table


@dataclass(frozen=True)
class Case:
    id: str
    kind: str  # suite | dataset | cli | results | fault
    what: str  # the input or fault, for docs/reliability.md
    argv: tuple[str, ...]
    code: int
    says: tuple[str, ...]  # the message line contains every one of these ("{ws}" expanded)
    setup: Callable[[Ws], object] | None = None
    env: tuple[tuple[str, str], ...] = ()  # extra environment ("{ws}" expanded)
    nonroot: bool = False  # a permission case: run as `nobody` when the tests run as root
    capped: bool = False  # absurd sizes: run in a child with a memory cap
    own_cache: bool = False  # a fresh cache in the workspace instead of the session's
    volatile: tuple[str, ...] = ("reports",)  # workspace paths regenerated by design (not checked)
    check: Callable[[Ws, str], None] | None = None  # extra assertions on the workspace and output
    partial: bool = False  # exit 2 after the pre-flight (a fault mid-run): empty folders (and the
    # job's history CSV) may remain


def _no_file(rel: str) -> Callable[[Ws, str], None]:
    def check(ws: Ws, output: str) -> None:
        assert not (ws.path / rel).exists(), f"{rel} still exists"

    return check


def _file_has(rel: str, *texts: str) -> Callable[[Ws, str], None]:
    def check(ws: Ws, output: str) -> None:
        body = (ws.path / rel).read_text()
        for t in texts:
            assert t.replace("{ws}", str(ws.path)) in body, f"{rel} lacks {t!r}"

    return check


def _modes(*rels: str) -> Callable[[Ws, str], None]:
    def check(ws: Ws, output: str) -> None:
        for rel in rels:
            mode = (ws.path / rel).stat().st_mode & 0o777
            assert mode == 0o644, f"{rel} has mode {mode:o}, expected 644 (umask 022)"

    return check


def _both(*checks: Callable[[Ws, str], None]) -> Callable[[Ws, str], None]:
    def check(ws: Ws, output: str) -> None:
        for c in checks:
            c(ws, output)

    return check


S = "suite.yaml"
CASES: list[Case] = [
    # ---- suite files
    Case(
        "suite-missing",
        "suite",
        "suite path does not exist",
        ("run", "nope.yaml"),
        2,
        ("nope.yaml", "no such suite file"),
    ),
    Case(
        "suite-is-folder",
        "suite",
        "suite path is a folder",
        ("run", "{ws}"),
        2,
        ("{ws}", "folder"),
    ),
    Case(
        "suite-not-utf8",
        "suite",
        "Latin-1 byte in a suite file",
        RUN,
        2,
        (S, "line 2", "UTF-8"),
        lambda ws: (ws.path / S).write_bytes(
            TINY.replace("name: tiny\n", "name: tiny\ndescription: caf\xe9\n").encode("latin-1")
        ),
    ),
    Case(
        "suite-binary",
        "suite",
        "an image passed as the suite file",
        ("run", "{ws}/suite.png"),
        2,
        ("suite.png", "line 1", "UTF-8"),
        lambda ws: ws.path.joinpath("suite.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe"),
    ),
    Case(
        "suite-unreadable",
        "suite",
        "suite file without read permission",
        RUN,
        2,
        (S, "cannot read", "ermission denied"),
        lambda ws: ws.lock(ws.suite()),
        nonroot=True,
    ),
    Case(
        "suite-duplicate-key",
        "suite",
        "top-level key given twice",
        RUN,
        2,
        (S, "duplicate key 'name'", "line 1", "line 2"),
        lambda ws: ws.suite("name: other\n" + TINY),
    ),
    Case(
        "suite-duplicate-nested",
        "suite",
        "train.epochs given twice (block style)",
        RUN,
        2,
        (S, "duplicate key 'epochs'", "line 4", "line 5"),
        lambda ws: ws.suite(
            TINY.replace(
                "train: {epochs: 1, batch_size: 8,", "train:\n  epochs: 1\n  epochs: 3\n  batch_size: 8\n"
            ).replace(
                " lr: 1.0e-3, warmup_epochs: 0, num_workers: 0, threads: 1}",
                "  lr: 1.0e-3\n  warmup_epochs: 0\n  num_workers: 0\n  threads: 1",
            )
        ),
    ),
    Case(
        "suite-invalid-yaml",
        "suite",
        "unclosed bracket",
        RUN,
        2,
        (S, "line", "invalid YAML"),
        lambda ws: ws.edit("seeds: [0, 1]", "seeds: [0, 1"),
    ),
    Case("suite-empty", "suite", "empty suite file", RUN, 2, (S, "empty"), lambda ws: ws.suite("")),
    Case(
        "suite-list",
        "suite",
        "a YAML list instead of a mapping",
        RUN,
        2,
        (S, "expected a mapping"),
        lambda ws: ws.suite("- a\n- b\n"),
    ),
    Case(
        "suite-recursive-alias",
        "suite",
        "a YAML alias inside itself",
        RUN,
        2,
        (S, "alias"),
        lambda ws: ws.suite(TINY.replace("name: tiny\n", "description: &d [*d]\n")),
    ),
    Case(
        "suite-unknown-key",
        "suite",
        "misspelt key",
        RUN,
        2,
        (S, "train.epoch", "did you mean 'epochs'"),
        lambda ws: ws.edit("{epochs: 1,", "{epoch: 1,"),
    ),
    Case(
        "suite-env-unset",
        "suite",
        "unset ${VAR} in a path",
        RUN,
        2,
        (S, "NOPE_UNSET", "not set"),
        lambda ws: ws.suite(REAL.replace("root: data", "root: \"${NOPE_UNSET}\"")),
    ),
    Case(
        "suite-derm7pt-root",
        "suite",
        "dataset.root does not exist",
        RUN,
        2,
        (S, "dataset.root", "missing"),
        lambda ws: ws.suite(REAL.replace("root: data", "root: missing")),
    ),
    Case(
        "suite-unknown-arch",
        "suite",
        "unknown arch",
        RUN,
        2,
        (S, "models[0].arch", "sinlge"),
        lambda ws: ws.edit("arch: single", "arch: sinlge"),
    ),
    Case(
        "suite-unknown-backbone",
        "suite",
        "unknown timm backbone",
        RUN,
        2,
        (S, "backbone", "resnet5"),
        lambda ws: ws.edit("resnet18", "resnet5"),
    ),
    Case(
        "suite-duplicate-model",
        "suite",
        "two models with one name",
        RUN,
        2,
        (S, "duplicate model name 'm'"),
        lambda ws: ws.suite(TINY + "  - {name: m, arch: single, options: {backbone: resnet18}}\n"),
    ),
    Case(
        "suite-no-models",
        "suite",
        "empty model list",
        RUN,
        2,
        (S, "models"),
        lambda ws: ws.suite(TINY.split("models:")[0] + "models: []\n"),
    ),
    Case(
        "suite-lr-nan",
        "suite",
        "train.lr: .nan",
        RUN,
        2,
        (S, "train.lr", "finite"),
        lambda ws: ws.edit("lr: 1.0e-3", "lr: .nan"),
    ),
    Case(
        "suite-seed-negative",
        "suite",
        "negative seed",
        RUN,
        2,
        (S, "seeds[0]", "-1"),
        lambda ws: ws.edit("seeds: [0, 1]", "seeds: [-1]"),
    ),
    Case(
        "suite-border-crop",
        "suite",
        "border crop larger than the source image",
        RUN,
        2,
        (S, "dataset.border_crop", "16"),
        lambda ws: ws.edit("border_crop: 0", "border_crop: 8"),
    ),
    Case(
        "suite-image-size-huge",
        "suite",
        "dataset.image_size: 100000",
        RUN,
        2,
        (S, "dataset.image_size", "100000", "bound"),
        lambda ws: ws.edit("image_size: 16", "image_size: 100000"),
        capped=True,
    ),
    Case(
        "suite-cases-huge",
        "suite",
        "dataset.cases: 100000000",
        RUN,
        2,
        (S, "dataset.cases", "100000000"),
        lambda ws: ws.edit("cases: 20", "cases: 100000000"),
        capped=True,
        own_cache=True,
    ),
    Case(
        "suite-source-size-huge",
        "suite",
        "dataset.source_size: 100000",
        RUN,
        2,
        (S, "dataset.source_size", "100000"),
        lambda ws: ws.edit("source_size: 16", "source_size: 100000"),
        capped=True,
        own_cache=True,
    ),
    Case(
        "suite-epochs-huge",
        "suite",
        "train.epochs: 1000000000",
        RUN,
        2,
        (S, "train.epochs", "1000000000"),
        lambda ws: ws.edit("epochs: 1,", "epochs: 1000000000,"),
    ),
    Case(
        "suite-batch-huge",
        "suite",
        "train.batch_size: 1000000000",
        RUN,
        2,
        (S, "train.batch_size", "1000000000"),
        lambda ws: ws.edit("batch_size: 8", "batch_size: 1000000000"),
    ),
    Case(
        "suite-eval-batch-huge",
        "suite",
        "train.eval_batch_size: 1000000000",
        RUN,
        2,
        (S, "train.eval_batch_size", "1000000000"),
        lambda ws: ws.edit("threads: 1}", "threads: 1, eval_batch_size: 1000000000}"),
    ),
    Case(
        "suite-profile-batch-huge",
        "suite",
        "profile.batch_size: 1000000000",
        RUN,
        2,
        (S, "profile.batch_size", "1000000000"),
        lambda ws: ws.edit("profile: false", "profile: {batch_size: 1000000000}"),
        capped=True,
    ),
    Case(
        "suite-image-size-vit",
        "suite",
        "dataset.image_size 7 for a ViT (key the user wrote)",
        RUN,
        2,
        (S, "dataset.image_size", "7"),
        lambda ws: ws.suite(
            TINY.replace("image_size: 16", "image_size: 7").replace("resnet18", "vit_tiny_patch16_224")
        ),
    ),
    # ---- datasets
    Case(
        "data-extra-column",
        "dataset",
        "meta.csv row with one value too many",
        CHECK,
        2,
        ("meta.csv line 3", "columns"),
        lambda ws: _meta(ws).write_text(
            "".join(
                line.rstrip("\n") + (",extra\n" if i == 2 else "\n") for i, line in enumerate(_meta_lines(ws))
            )
        ),
    ),
    Case(
        "data-short-row",
        "dataset",
        "meta.csv row with a value missing",
        CHECK,
        2,
        ("meta.csv line 2", "columns"),
        lambda ws: _meta(ws).write_text(
            "".join(
                line.rstrip("\n").rsplit(",", 1)[0] + "\n" if i == 1 else line
                for i, line in enumerate(_meta_lines(ws))
            )
        ),
    ),
    Case(
        "run-extra-column",
        "dataset",
        "meta.csv extra column, through `run`",
        RUN_REAL,
        2,
        ("meta.csv line 3", "columns"),
        lambda ws: _meta(ws).write_text(
            "".join(
                line.rstrip("\n") + (",extra\n" if i == 2 else "\n") for i, line in enumerate(_meta_lines(ws))
            )
        ),
    ),
    Case(
        "data-meta-latin1",
        "dataset",
        "meta.csv saved as Latin-1",
        CHECK,
        2,
        ("meta.csv line 3", "UTF-8"),
        lambda ws: _meta(ws).write_bytes(
            "".join(
                line.rstrip("\n") + "\xe9\n" if i == 2 else line for i, line in enumerate(_meta_lines(ws))
            ).encode("latin-1")
        ),
    ),
    Case(
        "data-meta-unreadable",
        "dataset",
        "meta.csv without read permission",
        CHECK,
        2,
        ("meta.csv", "ermission denied"),
        lambda ws: ws.lock(_meta(ws)),
        nonroot=True,
    ),
    Case(
        "data-meta-missing",
        "dataset",
        "meta/meta.csv missing",
        CHECK,
        2,
        ("meta.csv", "not found"),
        lambda ws: _meta(ws).unlink(),
    ),
    Case(
        "data-image-missing",
        "dataset",
        "an image file missing",
        CHECK,
        2,
        ("image not found",),
        lambda ws: _first_image(ws).unlink(),
    ),
    Case(
        "data-image-corrupt",
        "dataset",
        "a truncated JPEG",
        CHECK,
        2,
        ("unreadable",),
        lambda ws: _first_image(ws).write_bytes(_first_image(ws).read_bytes()[:40]),
    ),
    Case(
        "data-image-1px",
        "dataset",
        "a 1x1 image, `data check`",
        CHECK,
        2,
        ("1x1", "minimum"),
        lambda ws: _image(_first_image(ws), (1, 1)),
    ),
    Case(
        "run-image-1px",
        "dataset",
        "a 1x1 image, through `run`",
        RUN_REAL,
        2,
        ("1x1", "minimum"),
        lambda ws: _image(_first_image(ws), (1, 1)),
    ),
    Case(
        "data-image-huge",
        "dataset",
        "a 14000x14000 image, `data check`",
        CHECK,
        2,
        ("images/",),
        lambda ws: _image(_first_image(ws), (14000, 14000)),
    ),
    Case(
        "run-image-huge",
        "dataset",
        "a 14000x14000 image, through `run`",
        RUN_REAL,
        2,
        ("images/", "bound"),
        lambda ws: _image(_first_image(ws), (14000, 14000)),
    ),
    Case(
        "run-image-100mpx",
        "dataset",
        "a 10000x10000 image (PIL only warns), through `run`",
        RUN_REAL,
        2,
        ("10000x10000", "bound"),
        lambda ws: _image(_first_image(ws), (10000, 10000)),
    ),
    Case(
        "data-index-range",
        "dataset",
        "split index out of range",
        CHECK,
        2,
        ("test_indexes.csv", "out of range"),
        lambda ws: (ws.data() / "meta" / "test_indexes.csv").write_text("indexes\n999\n"),
    ),
    Case(
        "data-index-duplicate",
        "dataset",
        "split index twice",
        CHECK,
        2,
        ("valid_indexes.csv", "duplicated"),
        lambda ws: (ws.data() / "meta" / "valid_indexes.csv").write_text(
            (ws.data() / "meta" / "valid_indexes.csv").read_text()
            + (ws.data() / "meta" / "valid_indexes.csv").read_text().splitlines()[1]
            + "\n"
        ),
    ),
    Case(
        "data-split-overlap",
        "dataset",
        "a row in two splits",
        CHECK,
        2,
        ("both",),
        lambda ws: (ws.data() / "meta" / "test_indexes.csv").write_text(
            "indexes\n" + (ws.data() / "meta" / "train_indexes.csv").read_text().splitlines()[1] + "\n"
        ),
    ),
    Case(
        "data-unknown-label",
        "dataset",
        "unknown diagnosis string",
        CHECK,
        2,
        ("diagnosis", "not-a-lesion"),
        lambda ws: _meta(ws).write_text(
            "".join(
                re.sub(r"^(\d+),[^,]*,", r"\1,not-a-lesion,", line) if i == 1 else line
                for i, line in enumerate(_meta_lines(ws))
            )
        ),
    ),
    Case(
        "data-not-release",
        "dataset",
        "folder without a release",
        ("data", "check", "{ws}/empty"),
        2,
        ("empty", "release_v0"),
        lambda ws: (ws.path / "empty").mkdir(),
    ),
    Case(
        "data-image-is-folder",
        "dataset",
        "an image path that is a folder",
        CHECK,
        2,
        ("image not found",),
        lambda ws: (_first_image(ws).unlink(), _first_image(ws).mkdir()),
    ),
    # ---- command-line arguments
    Case(
        "cli-out-is-file",
        "cli",
        "--out names a file",
        (*RUN[:3], "{ws}/afile", *RUN[4:]),
        2,
        ("--out", "afile", "is a file"),
        lambda ws: (ws.suite(), (ws.path / "afile").write_text("x")),
    ),
    Case(
        "cli-out-under-file",
        "cli",
        "--out below a file",
        (*RUN[:3], "{ws}/afile/sub", *RUN[4:]),
        2,
        ("--out", "afile"),
        lambda ws: (ws.suite(), (ws.path / "afile").write_text("x")),
    ),
    Case(
        "cli-out-readonly",
        "cli",
        "--out in a read-only folder",
        (*RUN[:3], "{ws}/ro/results", *RUN[4:]),
        2,
        ("--out", "ro", "not writable"),
        lambda ws: (ws.suite(), (ws.path / "ro").mkdir(), ws.lock(ws.path / "ro", 0o555)),
        nonroot=True,
    ),
    Case(
        "cli-report-dir-is-file",
        "cli",
        "--report-dir names a file",
        (*RUN[:5], "{ws}/afile", *RUN[6:]),
        2,
        ("--report-dir", "afile", "is a file"),
        lambda ws: (ws.suite(), (ws.path / "afile").write_text("x")),
    ),
    Case(
        "cli-report-dir-readonly",
        "cli",
        "--report-dir in a read-only folder",
        (*RUN[:5], "{ws}/ro/reports", *RUN[6:]),
        2,
        ("--report-dir", "not writable"),
        lambda ws: (ws.suite(), (ws.path / "ro").mkdir(), ws.lock(ws.path / "ro", 0o555)),
        nonroot=True,
    ),
    Case(
        "cli-cache-is-file",
        "cli",
        "SSNBENCH_CACHE names a file",
        RUN,
        2,
        ("SSNBENCH_CACHE", "is a file"),
        lambda ws: (ws.suite(), (ws.path / "cachefile").write_text("x")),
        env=(("SSNBENCH_CACHE", "{ws}/cachefile"),),
    ),
    Case(
        "cli-cache-readonly",
        "cli",
        "SSNBENCH_CACHE read-only",
        RUN,
        2,
        ("SSNBENCH_CACHE", "not writable"),
        lambda ws: (ws.suite(), (ws.path / "rocache").mkdir(), ws.lock(ws.path / "rocache", 0o555)),
        env=(("SSNBENCH_CACHE", "{ws}/rocache"),),
        nonroot=True,
    ),
    Case(
        "cli-disk-full",
        "cli",
        "1 MB free on the results filesystem",
        RUN,
        2,
        ("results", "free"),
        lambda ws: (ws.suite(), _fake_disk_usage(free=1 << 20)),
    ),
    Case(
        "fault-disk-full-mid-run",
        "fault",
        "the disk fills up while the first job trains (every fsync fails with ENOSPC)",
        RUN,
        2,
        ("results", "m__seed0.json", "No space left"),
        lambda ws: (ws.suite(), _no_space()),
        partial=True,
    ),
    Case(
        "cli-device-invalid",
        "cli",
        "--device tpu",
        (*RUN[:7], "tpu"),
        2,
        ("--device", "tpu"),
        lambda ws: ws.suite(),
    ),
    Case(
        "cli-unknown-option",
        "cli",
        "misspelt option",
        (*RUN, "--froce"),
        2,
        ("--froce",),
        lambda ws: ws.suite(),
    ),
    Case("cli-no-command", "cli", "no subcommand", (), 2, ("COMMAND",)),
    Case(
        "cli-make-cases-zero",
        "cli",
        "data make --cases 0",
        ("data", "make", "--out", "{ws}/d", "--cases", "0"),
        2,
        ("--cases", "'0'"),
    ),
    Case(
        "cli-make-cases-huge",
        "cli",
        "data make --cases 100000000",
        ("data", "make", "--out", "{ws}/d", "--cases", "100000000"),
        2,
        ("--cases", "100000000"),
        capped=True,
    ),
    Case(
        "cli-make-size-huge",
        "cli",
        "data make --image-size 100000",
        ("data", "make", "--out", "{ws}/d", "--cases", "20", "--image-size", "100000"),
        2,
        ("--image-size", "100000"),
        capped=True,
    ),
    Case(
        "cli-make-out-is-file",
        "cli",
        "data make --out names a file",
        ("data", "make", "--out", "{ws}/afile", "--cases", "20"),
        2,
        ("--out", "afile"),
        lambda ws: (ws.path / "afile").write_text("x"),
    ),
    Case(
        "cli-make-out-readonly",
        "cli",
        "data make --out read-only",
        ("data", "make", "--out", "{ws}/ro/d", "--cases", "20"),
        2,
        ("--out", "not writable"),
        lambda ws: ((ws.path / "ro").mkdir(), ws.lock(ws.path / "ro", 0o555)),
        nonroot=True,
    ),
    Case(
        "cli-check-file",
        "cli",
        "data check on a file",
        ("data", "check", "{ws}/afile"),
        2,
        ("afile",),
        lambda ws: (ws.path / "afile").write_text("x"),
    ),
    Case(
        "cli-report-missing",
        "cli",
        "report on a missing folder",
        ("report", "{ws}/nothing"),
        2,
        ("nothing", "no such results folder"),
    ),
    Case(
        "cli-report-dir-file",
        "cli",
        "report --report-dir names a file",
        ("report", "{ws}/results", "--report-dir", "{ws}/afile"),
        2,
        ("--report-dir", "afile"),
        lambda ws: (ws.copy_results(), (ws.path / "afile").write_text("x")),
    ),
    Case(
        "cli-device-cuda",
        "cli",
        "--device cuda without a GPU",
        (*RUN[:7], "cuda"),
        2,
        ("--device cuda", "no CUDA device"),
        lambda ws: ws.suite(),
    ),
    # ---- result folders
    Case(
        "results-truncated",
        "results",
        "a truncated result file",
        REPORT,
        1,
        ("m__seed1.json", "truncated"),
        lambda ws: _record(ws).write_text(_record(ws).read_text()[:200]),
    ),
    Case(
        "results-not-json",
        "results",
        "a result file that is not JSON",
        REPORT,
        1,
        ("m__seed1.json", "not valid JSON"),
        lambda ws: _record(ws).write_text("hello"),
    ),
    Case(
        "results-empty-file",
        "results",
        "an empty result file",
        REPORT,
        1,
        ("m__seed1.json", "empty"),
        lambda ws: _record(ws).write_text(""),
    ),
    Case(
        "results-other-schema",
        "results",
        "a record of schema 99",
        REPORT,
        1,
        ("m__seed1.json", "schema", "99"),
        lambda ws: _edit_record(ws, lambda d: d.update(schema=99)),
    ),
    Case(
        "results-malformed",
        "results",
        "status ok without metrics",
        REPORT,
        1,
        ("m__seed1.json", "malformed", "metrics"),
        lambda ws: _edit_record(ws, lambda d: d.pop("metrics")),
    ),
    Case(
        "results-not-object",
        "results",
        "a JSON list instead of a record",
        REPORT,
        1,
        ("m__seed1.json", "malformed"),
        lambda ws: _record(ws).write_text("[1, 2]"),
    ),
    Case(
        "results-unreadable",
        "results",
        "a result file without read permission",
        REPORT,
        1,
        ("m__seed1.json", "ermission denied"),
        lambda ws: ws.lock(_record(ws)),
        nonroot=True,
    ),
    Case(
        "results-all-unreadable",
        "results",
        "every result file unreadable",
        REPORT,
        2,
        ("results", "unreadable"),
        lambda ws: [p.write_text("{") for p in ws.copy_results().glob("*.json")],
    ),
    Case(
        "results-mixed-train",
        "results",
        "two records trained for different epochs",
        REPORT,
        2,
        ("train.epochs", "m__seed1.json", "--allow-mixed"),
        lambda ws: _edit_record(ws, lambda d: d["train"].update(epochs=7)),
    ),
    Case(
        "results-mixed-dataset",
        "results",
        "two records at different image sizes",
        REPORT,
        2,
        ("dataset.image_size", "--allow-mixed"),
        lambda ws: _edit_record(ws, lambda d: d["dataset"].update(image_size=32)),
    ),
    Case(
        "results-mixed-allowed",
        "results",
        "--allow-mixed: the table says which rows differ",
        (*REPORT, "--allow-mixed"),
        0,
        ("report",),
        lambda ws: _edit_record(ws, lambda d: d["train"].update(epochs=7)),
        check=_file_has("reports/report.md", "train.epochs", "m__seed1"),
    ),
    Case(
        "results-rebuild-hint",
        "results",
        "report names the folder it was built from",
        REPORT,
        0,
        ("report",),
        lambda ws: ws.copy_results(),
        check=_file_has("reports/report.md", "ssnbench report {ws}/results"),
    ),
    Case(
        "results-file-modes",
        "results",
        "report files follow the umask (0644)",
        REPORT,
        0,
        ("report",),
        lambda ws: ws.copy_results(),
        check=_modes("reports/report.md", "reports/results.json", "reports/results.csv"),
    ),
    # ---- faults (trained in process, tiny)
    Case(
        "fault-nan-run",
        "fault",
        "lr 1e30: the loss diverges",
        RUN,
        1,
        ("loss diverged at epoch 1, step 1",),
        lambda ws: ws.edit("lr: 1.0e-3", "lr: 1.0e+30"),
        check=_both(
            _file_has("results/m__seed0.json", "loss diverged at epoch 1, step 1"),
            _modes("results/m__seed0.json"),
        ),
    ),
    Case(
        "fault-corrupt-record-rerun",
        "fault",
        "rerun over a truncated record keeps it aside",
        RUN,
        0,
        ("m__seed1.json", "replaced-"),
        lambda ws: (ws.suite(), _record(ws).write_text(_record(ws).read_text()[:99])),
    ),
    Case(
        "fault-stale-record-rerun",
        "fault",
        "rerun after a suite change keeps the old record aside",
        RUN,
        0,
        ("m__seed0.json", "replaced-"),
        lambda ws: (ws.copy_results(), ws.edit("lr: 1.0e-3", "lr: 2.0e-3")),
    ),
    Case(
        "fault-force-rerun",
        "fault",
        "--force keeps the old records aside",
        (*RUN, "--force"),
        0,
        ("m__seed0.json", "replaced-"),
        lambda ws: (ws.copy_results(), ws.suite()),
    ),
    Case(
        "fault-stale-temp",
        "fault",
        "temp folder of a killed generation (lock free)",
        RUN,
        0,
        ("temp folder",),
        lambda ws: (ws.suite(), _stale_temp(ws, locked=False, age=60)),
        own_cache=True,
        check=_no_file("cache/.synthetic-20c-s9-16px-000000000000.abc123"),
    ),
    Case(
        "fault-stale-temp-old",
        "fault",
        "temp folder left by an older ssnbench (no lock, 2 h old)",
        RUN,
        0,
        ("temp folder",),
        lambda ws: (ws.suite(), _stale_temp(ws, locked=False, age=7200, with_lock_file=False)),
        own_cache=True,
        check=_no_file("cache/.synthetic-20c-s9-16px-000000000000.abc123"),
    ),
]


def _fake_disk_usage(free: int) -> None:
    real = shutil.disk_usage

    def fake(path):  # shutil's signature
        total, used, _ = real(path)
        return type(real(path))(total, used, free)

    _PATCHES.append((shutil, "disk_usage", real))
    shutil.disk_usage = fake


_PATCHES: list[tuple[object, str, object]] = []


def _no_space() -> None:
    """Every fsync (the atomic writers') fails as on a full disk, from now until the case ends."""

    def fail(fd: int) -> None:
        raise OSError(28, "No space left on device")

    _PATCHES.append((os, "fsync", os.fsync))
    os.fsync = fail


SLOW = [
    (
        "slow-sigint-resume",
        "SIGINT after the first result: exit 130, resume keeps finished results",
        signal.SIGINT,
    ),
    ("slow-sigterm-resume", "SIGTERM after the first result: resume keeps finished results", signal.SIGTERM),
    ("slow-sigkill-resume", "SIGKILL after the first result: resume keeps finished results", signal.SIGKILL),
    ("slow-sigkill-generation", "SIGKILL during data generation: the next run removes the temp folder", None),
]


# ---------------------------------------------------------------------------------------------
# Running a case


def _checksums(root: Path, skip: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if rel.split("/")[0] in skip or not p.is_file() or p.is_symlink():
            continue
        try:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        except PermissionError:
            out[rel] = "unreadable"
    return out


class _CaseTimeout(BaseException):
    """Raised in the case's own thread when it runs past CASE_TIMEOUT (an older ssnbench)."""


@contextlib.contextmanager
def _deadline(seconds: int) -> Iterator[None]:
    def fire(signum, frame):
        raise _CaseTimeout(f"case still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _in_child(argv: list[str], nobody: bool, cap: bool) -> tuple[int, str, str]:
    """Run cli.main in a forked child (as `nobody`, and/or with a memory cap); (code, out, err)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 99
            try:
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
                sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
                if cap:
                    vm = int(re.search(r"VmSize:\s+(\d+)", Path("/proc/self/status").read_text())[1]) * 1024
                    resource.setrlimit(resource.RLIMIT_AS, (vm + MEM_CAP, vm + MEM_CAP))
                if nobody:
                    os.setgroups([])
                    os.setgid(65534)
                    os.setuid(65534)
                signal.alarm(CASE_TIMEOUT)
                code = cli.main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 2
            except BaseException:  # report it like an uncaught exception would
                import traceback

                traceback.print_exc()
                code = 98
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return code, out.read().decode(errors="replace"), err.read().decode(errors="replace")


def _invoke(argv: list[str], case: Case, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    nobody = case.nonroot and AS_ROOT
    if nobody or case.capped:
        return _in_child(argv, nobody, case.capped)
    try:
        with _deadline(CASE_TIMEOUT):
            code = cli.main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else 2
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="session")
def shared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny release and a finished results folder of TINY (2 seeds), made once per worker
    through the CLI itself."""
    base = Path(tempfile.mkdtemp(prefix="ssnbench-battery-"))
    base.chmod(0o755)  # readable by `nobody` in the permission cases
    cache = base / "cache"
    before = os.environ.get("SSNBENCH_CACHE")
    os.environ["SSNBENCH_CACHE"] = str(cache)
    stack = contextlib.ExitStack()
    _cache_knob(stack, cache)
    try:
        assert (
            cli.main(["data", "make", "--out", str(base / "data"), "--cases", "20", "--image-size", "24"])
            == 0
        )
        (base / "suite.yaml").write_text(TINY)
        code = cli.main(
            [
                "run",
                str(base / "suite.yaml"),
                "--out",
                str(base / "results"),
                "--report-dir",
                str(base / "reports"),
                "--device",
                "cpu",
            ]
        )
        assert code == 0
    finally:
        stack.close()
        if before is None:
            os.environ.pop("SSNBENCH_CACHE", None)
        else:
            os.environ["SSNBENCH_CACHE"] = before
    _readable(base)  # `nobody` reads the shared inputs in the permission cases
    yield {"release": base / "data" / "release_v0", "results": base / "results", "cache": cache}
    shutil.rmtree(base, ignore_errors=True)


def _cache_knob(stack: contextlib.ExitStack, cache: Path) -> None:
    """Where SSNBENCH_CACHE is read once per process (ssnbench.kernels.knobs), say it through the
    knob's override as well; older versions read the environment at each run."""
    try:
        from ssnbench.kernels import knobs
    except ImportError:
        return
    if hasattr(knobs, "override"):
        stack.enter_context(knobs.override(cache=str(cache)))


@pytest.fixture
def ws(shared: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[Ws]:
    path = Path(tempfile.mkdtemp(prefix="ssnbench-case-"))
    path.chmod(0o777)  # `nobody` may create files in the permission cases
    w = Ws(path, shared["release"], shared["results"], shared["cache"])
    monkeypatch.chdir(path)
    w.set_cache(monkeypatch, shared["cache"])
    old_umask = os.umask(0o022)
    try:
        yield w
    finally:
        w.stack.close()
        os.umask(old_umask)
        for obj, name, value in reversed(_PATCHES):
            setattr(obj, name, value)
        _PATCHES.clear()
        for p in w.restore:
            if str(p).startswith("/proc/self/fd/"):
                with contextlib.suppress(OSError):
                    os.close(int(p.name))
            else:
                with contextlib.suppress(OSError):
                    p.chmod(0o755 if p.is_dir() else 0o644)
        shutil.rmtree(path, ignore_errors=True)


def _expand(text: str, ws: Ws) -> str:
    return text.replace("{ws}", str(ws.path))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(
    case: Case, ws: Ws, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    if case.id == "cli-device-cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("a CUDA device is present")
    if case.own_cache:
        ws.set_cache(monkeypatch, ws.path / "cache")
    for key, value in case.env:
        if key == "SSNBENCH_CACHE":
            ws.set_cache(monkeypatch, Path(_expand(value, ws)))
        else:
            monkeypatch.setenv(key, _expand(value, ws))
    if case.setup is not None:
        case.setup(ws)
    skip = (*case.volatile, "cache")  # the data cache is the run's to fill (and to clean)
    before = _checksums(ws.path, skip)
    listing_before = sorted(p.relative_to(ws.path).as_posix() for p in ws.path.rglob("*"))
    code, out, err = _invoke([_expand(a, ws) for a in case.argv], case, capsys)
    output = out + err

    assert "Traceback" not in output, output[-3000:]
    assert code == case.code, f"exit {code}, expected {case.code}; output:\n{output[-3000:]}"
    says = [_expand(s, ws) for s in case.says]
    if case.code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1, f"expected ONE line on stderr, got:\n{err}"
        assert all(s in lines[0] for s in says), f"{lines[0]!r} should name {says}"
        listing_after = sorted(p.relative_to(ws.path).as_posix() for p in ws.path.rglob("*"))
        if case.partial:  # a fault after the pre-flight: at most empty folders, and the live
            # per-epoch log of the job that trained (`<job>.history.csv`, appended as it trains)
            new = set(listing_after) - set(listing_before)
            assert all((ws.path / p).is_dir() or p.endswith(".history.csv") for p in new), new
        else:
            assert listing_after == listing_before, "a failed command wrote files"
    else:
        assert any(all(s in line for s in says) for line in output.splitlines()), (
            f"no line names {says}; output:\n{output[-3000:]}"
        )
    after = _checksums(ws.path, skip)
    for rel, digest in before.items():
        if after.get(rel) == digest:
            continue
        aside = [r for r, d in after.items() if d == digest and ".replaced-" in r]
        assert aside, f"{rel} changed or vanished (and was not kept aside)"
    if case.check is not None:
        case.check(ws, output)


def test_battery_size() -> None:
    """At least 60 distinct cases across the five kinds (issue 15)."""
    ids = [c.id for c in CASES] + [s[0] for s in SLOW]
    assert len(ids) == len(set(ids)) and len(ids) >= 60
    assert {c.kind for c in CASES} == {"suite", "dataset", "cli", "results", "fault"}


def test_docs_list_every_case() -> None:
    """docs/reliability.md's table is this table (`python tests/test_reliability.py` prints it)."""
    doc = (ROOT / "docs" / "reliability.md").read_text()
    missing = [c.id for c in CASES if f"`{c.id}`" not in doc] + [s[0] for s in SLOW if f"`{s[0]}`" not in doc]
    assert not missing, f"docs/reliability.md lacks {missing}"


# ---------------------------------------------------------------------------------------------
# Slow: real signals against a real process


def _run_proc(suite: Path, ws: Path, cache: Path) -> subprocess.Popen:
    env = {**os.environ, "SSNBENCH_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ssnbench",
            "run",
            str(suite),
            "--out",
            str(ws / "results"),
            "--report-dir",
            str(ws / "reports"),
            "--device",
            "cpu",
        ],
        cwd=ws,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(predicate: Callable[[], bool], proc: subprocess.Popen, timeout: float = 300) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        assert proc.poll() is None, f"finished before the fault: {proc.communicate()}"
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("timed out waiting for the moment of the fault")


@pytest.mark.slow
@pytest.mark.parametrize("name,what,sig", SLOW, ids=[s[0] for s in SLOW])
def test_fault_mid_suite(
    name: str, what: str, sig: signal.Signals | None, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    markexpr = request.config.getoption("markexpr") or ""
    if "slow" not in markexpr or "not slow" in markexpr:
        pytest.skip("slow battery case (subprocesses and real signals): run `make test-slow`")
    cache = tmp_path / "cache"
    suite = tmp_path / "suite.yaml"
    if sig is None:  # kill during generation: a bigger dataset so there is time to hit it
        suite.write_text(
            TINY.replace("cases: 20", "cases: 400").replace("source_size: 16", "source_size: 64")
        )
        proc = _run_proc(suite, tmp_path, cache)
        _wait_for(lambda: any(p.name.startswith(".synthetic-") for p in cache.glob(".*")), proc)
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        left = [p for p in cache.glob(".synthetic-*")]
        assert left, "the kill should have left a temp folder behind"
        again = _run_proc(suite, tmp_path, cache)
        out, err = again.communicate(timeout=600)
        assert again.returncode == 0, err
        assert "temp folder" in out and not list(cache.glob(".synthetic-*")), out
        return
    suite.write_text(TINY.replace("seeds: [0, 1]", "seeds: [0, 1, 2, 3]").replace("epochs: 1,", "epochs: 2,"))
    proc = _run_proc(suite, tmp_path, cache)
    _wait_for(lambda: any((tmp_path / "results").glob("m__seed*.json")), proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert "Traceback" not in err, err
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and err.strip().splitlines()[-1] == "ssnbench: interrupted", err
    done = _checksums(tmp_path / "results", ())
    assert done, "no finished result before the signal"
    again = _run_proc(suite, tmp_path, cache)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    after = _checksums(tmp_path / "results", ())
    for rel, digest in done.items():
        assert after.get(rel) == digest, f"{rel} changed by the resumed run"
    assert sorted(p.name for p in (tmp_path / "results").glob("m__seed*.json")) == [
        f"m__seed{s}.json" for s in range(4)
    ]
    assert not list((tmp_path / "results").glob(".*.tmp")), "a temp file survived"


def table() -> str:
    """The battery as a Markdown table (for docs/reliability.md)."""
    rows = ["| case | kind | input or fault | exit | the line names |", "|---|---|---|---:|---|"]
    for c in CASES:
        says = ", ".join(f"`{s}`" for s in c.says).replace("|", "\\|").replace("{ws}", "…")
        rows.append(f"| `{c.id}` | {c.kind} | {c.what} | {c.code} | {says} |")
    for name, what, sig in SLOW:
        if sig == signal.SIGINT:
            code, says = "130, then 0", "`ssnbench: interrupted`; finished results unchanged"
        elif sig is None:
            code, says = "killed, then 0", "`temp folder(s) left by an interrupted data generation`"
        else:
            code, says = "killed, then 0", "finished results unchanged, no temp file left"
        rows.append(f"| `{name}` | fault (slow) | {what} | {code} | {says} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
