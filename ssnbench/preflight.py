"""Pre-flight: everything `ssnbench run` can check before the first job trains, checked first.

Why: a read-only `--out`, a `--report-dir` that is a file, a full disk or an absurd image size used
to surface after the first job had trained (its work lost) or as an allocation traceback. Here each
check raises ONE `UserError` line and nothing has been written (the probe files are removed again,
and missing folders are not created: only their nearest existing parent is probed).

The checks run in registration order over one `Flight` (what the run is about to do). Other modules
add theirs with `@check("name")` (e.g. a weights check); a check that estimates disk use calls
`flight.need(folder, nbytes, what)` and the final `space` check compares the sums, per filesystem,
with the free space. The size bounds (`BOUNDS`) are owned here and applied where the values are read
(suite files, `data make`, image files); docs/reliability.md lists them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ssnbench.errors import UserError

if TYPE_CHECKING:
    from ssnbench.config import Suite

# ---------------------------------------------------------------------------------------------
# Size bounds: beyond these a value is a typo or a memory bomb, not an experiment.


@dataclass(frozen=True)
class Bound:
    maximum: int
    unit: str
    why: str


BOUNDS: dict[str, Bound] = {
    "dataset.image_size": Bound(1024, "px", "network input side; Derm7pt photos are 768x512"),
    "dataset.source_size": Bound(2048, "px", "side of the generated synthetic JPEGs"),
    "dataset.cases": Bound(100_000, "cases", "synthetic cases; 100x the real release"),
    "train.epochs": Bound(10_000, "epochs", "the literature recipe uses 100"),
    "train.batch_size": Bound(4096, "cases", "per step; the training split has 413 cases"),
    "train.eval_batch_size": Bound(4096, "cases", "per evaluation step"),
    "profile.batch_size": Bound(4096, "cases", "per timed step"),
    "profile.iters": Bound(10_000, "steps", "timed steps per model"),
    "profile.warmup": Bound(10_000, "steps", "untimed steps per model"),
}
SPACE_MARGIN = 64 * 2**20
"""Free space (bytes) left over after everything planned is written."""
MEMORY_FRACTION = 0.8
"""Share of the available memory the in-memory image cache may take."""


def bound_problem(key: str, value: int) -> str | None:
    """'above the bound of ...' when `value` exceeds `BOUNDS[key]`, else None."""
    b = BOUNDS[key]
    if value > b.maximum:
        return f"{value} is above the bound of {b.maximum} {b.unit} ({b.why}; see docs/reliability.md)"
    return None


# ---------------------------------------------------------------------------------------------
# The flight and the check registry


@dataclass
class Flight:
    """What a run is about to do; checks read it and add disk estimates with `need`."""

    suite: Suite
    out: Path
    report_dir: Path | None
    cache: Path
    device: str = "cpu"
    jobs: list[Any] = field(default_factory=list)  # runner.Job objects still to run
    out_label: str = "--out"
    report_label: str = "--report-dir"
    params: dict[str, int] = field(default_factory=dict)  # model name -> parameter count
    cases: int | None = None  # cases the data will hold (all splits)
    test_cases: int | None = None
    needs: list[tuple[Path, int, str]] = field(default_factory=list)

    def need(self, folder: Path, nbytes: int, what: str) -> None:
        """Record that `nbytes` will be written under `folder` (checked by the `space` check)."""
        self.needs.append((Path(folder), int(nbytes), what))


Check = Callable[[Flight], None]
CHECKS: list[tuple[str, Check]] = []


def check(name: str) -> Callable[[Check], Check]:
    """Register a pre-flight check (run in registration order; `space` always runs last)."""

    def add(fn: Check) -> Check:
        if any(n == name for n, _ in CHECKS):
            raise ValueError(f"pre-flight check {name!r} registered twice")
        CHECKS.append((name, fn))
        return fn

    return add


def run_preflight(flight: Flight) -> Flight:
    """Run every registered check; the first failure raises its one-line UserError."""
    for name, fn in CHECKS:
        if name != "space":
            fn(flight)
    dict(CHECKS)["space"](flight)
    return flight


# ---------------------------------------------------------------------------------------------
# Folders


def existing_parent(path: Path) -> Path:
    """`path` itself if it exists, else its nearest existing ancestor."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def probe_folder(path: Path, label: str) -> None:
    """Fail unless `path` is (or can be created as) a folder we can write to: a probe file is
    created and removed in it, or in its nearest existing parent when it does not exist yet."""
    path = Path(path)
    shown = f"{label} {path}" if label else str(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{shown}: is a file, expected a folder")
    base = existing_parent(path)
    if not base.is_dir():
        raise UserError(f"{shown}: {base} is a file, so the folder cannot be created")
    probe = base / f".ssnbench-probe-{uuid.uuid4().hex[:8]}"
    try:
        with open(probe, "xb") as fh:
            fh.write(b"probe")
    except OSError as err:
        where = "" if base == Path(os.path.abspath(path)) else f" (its parent {base} exists)"
        raise UserError(f"{shown}: not writable{where}: {err.strerror or err}") from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


@check("folders")
def check_folders(flight: Flight) -> None:
    """The results folder, the report folder and the data cache are writable."""
    probe_folder(flight.out, flight.out_label)
    if flight.report_dir is not None:
        probe_folder(flight.report_dir, flight.report_label)
    if flight.suite.dataset.kind == "synthetic":
        probe_folder(flight.cache, "data cache (SSNBENCH_CACHE)")


# ---------------------------------------------------------------------------------------------
# Data


@check("data")
def check_data(flight: Flight) -> None:
    """The release opens (layout, meta.csv, splits, every image's header within the bounds); for
    synthetic data, the generated size is estimated instead (it is made on first use)."""
    spec = flight.suite.dataset
    if not flight.jobs:
        return
    if spec.kind == "synthetic":
        from ssnbench.data.synthetic import REAL_SPLITS

        flight.cases = spec.cases
        flight.test_cases = max(1, spec.cases * REAL_SPLITS["test"] // sum(REAL_SPLITS.values()))
        from ssnbench.data.cache import synthetic_root_path

        if not (synthetic_root_path(spec, flight.cache) / "release_v0" / "meta" / "meta.csv").is_file():
            per_image = 4096 + spec.source_size**2 * 3 // 6  # JPEG q90 of smooth renders, plus a block
            flight.need(flight.cache, spec.cases * 2 * per_image, "synthetic images")
        return
    from ssnbench.data.derm7pt import load_release
    from ssnbench.data.transforms import check_image_header

    release = load_release(spec.root or "", drop_no_clinic=spec.drop_no_clinic)
    flight.cases = sum(len(rows) for rows in release.splits.values())
    flight.test_cases = len(release.splits["test"])
    seen: set[Path] = set()
    for split_rows in release.splits.values():
        for r in split_rows:
            for path in (release.cases[r].clinic, release.cases[r].derm):
                if path not in seen:
                    seen.add(path)
                    check_image_header(path, spec.border_crop)


@check("memory")
def check_memory(flight: Flight) -> None:
    """The in-memory image cache (every case's two images at the input size, uint8) fits."""
    if not flight.jobs or flight.cases is None:
        return
    size = flight.suite.dataset.image_size
    need = flight.cases * 2 * 3 * size * size
    avail = available_memory()
    if avail is not None and need > MEMORY_FRACTION * avail:
        raise UserError(
            f"{flight.suite.path}: dataset.image_size: {size} px x {flight.cases} cases needs "
            f"{_size(need)} of memory for the image cache, only {_size(avail)} available "
            f"(lower dataset.image_size or dataset.cases)"
        )


def available_memory() -> int | None:
    """MemAvailable of /proc/meminfo in bytes (None where unknown)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    with contextlib.suppress(AttributeError, ValueError, OSError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return None


# ---------------------------------------------------------------------------------------------
# Models


def weights_plan(suite: Suite, jobs: list[Any]) -> list[dict[str, Any]]:
    """What each model of `jobs` will load (tag, source, file): its pretrained weights must be in
    the Hugging Face cache, downloadable, or a local file, else one `UserError` line naming the
    model, the weights tag, the cache folder and the local-file alternative (models/weights.py owns
    the rules and the message). Also used by `run --dry-run`."""
    from ssnbench.models.registry import arch_options
    from ssnbench.models.weights import check_weights as can_load

    found, seen = [], set()
    for job in jobs:
        spec = job.model
        if spec.name in seen:
            continue
        seen.add(spec.name)
        defaults = arch_options(spec.arch)
        pretrained = spec.options.get("pretrained", defaults.get("pretrained", False))
        backbone = spec.options.get("backbone", defaults.get("backbone"))
        where = f"{suite.path}: models[{job.model_index}] ({spec.name})"
        found.append({"model": spec.name, **can_load(where, str(backbone), pretrained)})
    return found


@check("weights")
def check_weights(flight: Flight) -> None:
    """Every model still to run can get its pretrained weights (before any job trains)."""
    weights_plan(flight.suite, flight.jobs)


@check("models")
def check_models(flight: Flight) -> None:
    """Every model builds and runs one forward pass at the suite's input size, on the meta device
    (shapes only: no memory, no compute), which also gives the parameter counts for checkpoints."""
    import torch

    from ssnbench.models.registry import build_model

    size = flight.suite.dataset.image_size
    needed = {job.model.name for job in flight.jobs}
    for index, spec in enumerate(flight.suite.models):
        if spec.name not in needed:
            continue
        where = f"{flight.suite.path}: models[{index}] ({spec.name})"
        try:
            with torch.device("meta"):
                model = build_model(spec.arch, **spec.options)
                flight.params[spec.name] = sum(p.numel() for p in model.parameters())
                x = torch.zeros(2, 3, size, size)
                model.eval()
                model(x, x)
        except UserError as err:
            raise UserError(f"{where}: {err}") from None
        except NotImplementedError:
            continue  # an op without a meta kernel: the real run will tell
        except Exception as err:  # a shape mismatch at this input size
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            raise UserError(
                f"{where}: forward pass at dataset.image_size {size} px fails: {type(err).__name__}: {first}"
            ) from None


# ---------------------------------------------------------------------------------------------
# Disk space


RECORD_BYTES = 24_000
"""A result record without its predictions (settings, environment, metrics, profile)."""
CASE_BYTES = 80
"""Per test case in a result record (id, labels, prediction, DIAG probabilities)."""
EPOCH_BYTES = 200
"""Per epoch of history in a result record (and in a history CSV)."""
REPORT_BYTES = 2 * 2**20
"""report.md, results.json/.csv and the figures."""


@check("results")
def estimate_results(flight: Flight) -> None:
    """Result records and checkpoints of the jobs to run, and the report."""
    per_case = CASE_BYTES * (flight.test_cases or 400)
    for job in flight.jobs:
        flight.need(flight.out, RECORD_BYTES + per_case + EPOCH_BYTES * flight.suite.train.epochs, "results")
        if getattr(flight.suite, "checkpoint", True) and job.model.name in flight.params:
            flight.need(flight.out, 4 * flight.params[job.model.name] + 16_384, "checkpoints")
    if flight.report_dir is not None:
        flight.need(flight.report_dir, REPORT_BYTES, "report")


@check("space")
def check_space(flight: Flight) -> None:
    """The planned writes (plus a margin) fit in the free space of each filesystem involved."""
    by_device: dict[int, tuple[list[Path], Path, int, dict[str, int]]] = {}
    for folder, nbytes, what in flight.needs:
        base = existing_parent(folder)
        try:
            dev = base.stat().st_dev
        except OSError:
            continue
        folders, _, total, whats = by_device.get(dev, ([], base, 0, {}))
        if folder not in folders:
            folders.append(folder)
        whats[what] = whats.get(what, 0) + nbytes
        by_device[dev] = (folders, base, total + nbytes, whats)
    for folders, base, total, whats in by_device.values():
        try:
            free = shutil.disk_usage(base).free
        except OSError:
            continue
        if total + SPACE_MARGIN > free:
            parts = ", ".join(f"{what} {_size(n)}" for what, n in whats.items())
            raise UserError(
                f"{', '.join(str(f) for f in folders)}: need about {_size(total + SPACE_MARGIN)} of free "
                f"space ({parts}, margin {_size(SPACE_MARGIN)}), only {_size(free)} free on that filesystem"
            )


def _size(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(nbytes) < 1024 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} TB"
