"""Where generated data lives: the SSNBENCH_CACHE folder and the synthetic release of a dataset spec.

Why a module of its own: the runner (opening a suite's data), the pre-flight (estimating what a
first run will generate), the driver and the Ray launcher (one cache per node) all need these paths;
in runner.py they made the pre-flight import the runner that runs it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ssnbench.config import DatasetSpec
    from ssnbench.progress import Progress


def cache_root() -> Path:
    """Folder of generated synthetic data: SSNBENCH_CACHE, parsed by ssnbench.kernels.knobs but read
    at each use (not once): tests and job launchers set it per process or per suite."""
    from ssnbench.kernels import knobs

    return Path(knobs.from_env().cache)


def synthetic_root_path(spec: DatasetSpec, cache: Path | None = None) -> Path:
    """Where `synthetic_root` keeps the release of `spec` (generated or not yet).

    The key includes the generator's source, so a changed generator produces a new dataset instead
    of silently reusing the old one.
    """
    from ssnbench.data import synthetic

    cache = cache or cache_root()
    source = Path(synthetic.__file__).read_bytes()
    key = json.dumps({"cases": spec.cases, "seed": spec.seed, "size": spec.source_size,
                      "planted": spec.planted or {}}, sort_keys=True)
    digest = hashlib.sha256(key.encode() + source).hexdigest()[:12]
    return cache / f"synthetic-{spec.cases}c-s{spec.seed}-{spec.source_size}px-{digest}"


def synthetic_root(spec: DatasetSpec, cache: Path | None = None, progress: Progress | None = None) -> Path:
    """Generate the synthetic release on first use; reuse it afterwards.

    Generated into a held temp folder and renamed into place, so an interrupted generation is never
    mistaken for a finished one; the temp folders of a killed generation are removed here, by the
    next run (synthetic.clean_stale_dirs).
    """
    from ssnbench.data import synthetic

    cache = cache or cache_root()
    final = synthetic_root_path(spec, cache)
    removed = synthetic.clean_stale_dirs(cache)
    if removed and progress:
        progress.log(
            f"removed {len(removed)} temp folder(s) left by an interrupted data generation: "
            + ", ".join(str(p) for p in removed)
        )
    if (final / "release_v0" / "meta" / "meta.csv").is_file():
        return final / "release_v0"
    with synthetic.working_dir(cache, f".{final.name}.") as tmp:
        synthetic.generate(tmp, cases=spec.cases, seed=spec.seed, image_size=spec.source_size,
                           planted=spec.planted)
        synthetic.release_working_dir(tmp)
        try:
            os.replace(tmp, final)
        except OSError:
            if not (final / "release_v0" / "meta" / "meta.csv").is_file():  # not a concurrent winner
                raise
    return final / "release_v0"
