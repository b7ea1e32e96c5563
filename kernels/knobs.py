"""Every environment knob of ssnbench, read once, in one place.

Why one place: the knobs used to be read per call, each where it was used, and the benchmark's A/B
rows worked by patching os.environ around a call. Now the environment is read once (at the first
`current()`), code reads `current().<field>` (an attribute load on the hot path, not a dict lookup
in os.environ), and anything that needs another value for a while (a benchmark row, a test) says
so explicitly with `override(field=value)`.

| variable                     | field           | default | effect                                        |
|------------------------------|-----------------|---------|-----------------------------------------------|
| TRITON_INTERPRET             | interpret       | 0       | kernels run in Triton's interpreter: CPU      |
|                              |                 |         | tensors take them (else the reference), fixed |
|                              |                 |         | small tiles, no autotune, no direct launch    |
| SSNBENCH_XATTN_AUTOTUNE      | autotune        | 1       | 0: the fixed config table on CUDA             |
| SSNBENCH_XATTN_BWD_PATH      | bwd_path        | (auto)  | general / atomic: force the > 64-token        |
|                              |                 |         | backward path                                 |
| SSNBENCH_XATTN_POLY_EXP      | poly_exp        | 0       | 1: the fixed forward config uses the FMA-pipe |
|                              |                 |         | exp2 (fp16/bf16)                              |
| SSNBENCH_XATTN_TAILS         | tails           | 1       | 0: full tiles for the ragged last blocks      |
| SSNBENCH_XATTN_DIRECT_LAUNCH | direct_launch   | 1       | 0: every launch through Triton's JIT          |
| SSNBENCH_XATTN_CUSTOM_OP     | custom_op       | 0       | 1: eager calls go through torch.library too   |
| SSNBENCH_BENCH_COMPILE       | bench_compile   | 1       | 0: `bench kernels` skips torch.compile        |
| SSNBENCH_BENCH_GRAPH         | bench_graph     | 1       | 0: `bench kernels` skips CUDA-graph timing    |
| SSNBENCH_PRECOMPILE          | precompile      | 1       | 0: `bench kernels` skips the parallel         |
|                              |                 |         | precompile of the autotune candidates         |
| SSNBENCH_BENCH_THREADS       | bench_threads   | 1       | torch threads of the CPU speed cases          |
| SSNBENCH_CACHE               | cache           | .ssnbench-cache | folder of generated synthetic data    |
|                              |                 |         | (the one knob read at each use, through       |
|                              |                 |         | `from_env()`: tests and launchers set it per  |
|                              |                 |         | process or suite)                             |
| SSNBENCH_SUBMITIT_CLUSTER    | submitit_cluster| slurm   | local / debug: `--launcher slurm` on          |
|                              |                 |         | submitit's local or debug executor            |

docs/interfaces.md has the same table with who reads each knob. Note that Triton itself reads
TRITON_INTERPRET when a kernel is decorated: set it before `ssnbench.kernels` is imported (the test
conftest does); `override(interpret=...)` changes only ssnbench's own dispatch and launch choices.
This module imports nothing heavy, so any part of ssnbench may read it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

__all__ = ["Knobs", "current", "from_env", "override"]

BWD_PATHS = ("general", "atomic")


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    """'0' is off, any other value on; unset or empty gives the default."""
    value = env.get(name)
    if not value:
        return default
    return value != "0"


@dataclasses.dataclass(frozen=True)
class Knobs:
    """The knobs' values; see the module docstring for what each one does."""

    interpret: bool = False
    autotune: bool = True
    bwd_path: str | None = None
    poly_exp: bool = False
    tails: bool = True
    direct_launch: bool = True
    custom_op: bool = False
    bench_compile: bool = True
    bench_graph: bool = True
    precompile: bool = True
    bench_threads: int = 1
    cache: str = ".ssnbench-cache"
    submitit_cluster: str = "slurm"

    def __post_init__(self) -> None:
        if self.bwd_path not in (None, *BWD_PATHS):
            choices = ", ".join(BWD_PATHS)
            raise ValueError(f"SSNBENCH_XATTN_BWD_PATH={self.bwd_path!r}: expected one of {choices}")
        if self.bench_threads < 1:
            raise ValueError(f"SSNBENCH_BENCH_THREADS={self.bench_threads}: expected a positive integer")


def from_env(env: Mapping[str, str] | None = None) -> Knobs:
    """Knobs from an environment mapping (default: os.environ)."""
    env = os.environ if env is None else env
    threads = env.get("SSNBENCH_BENCH_THREADS", "1")
    try:
        bench_threads = int(threads)
    except ValueError:
        raise ValueError(f"SSNBENCH_BENCH_THREADS={threads!r}: expected a positive integer") from None
    return Knobs(
        interpret=_flag(env, "TRITON_INTERPRET", False),
        autotune=_flag(env, "SSNBENCH_XATTN_AUTOTUNE", True),
        bwd_path=env.get("SSNBENCH_XATTN_BWD_PATH") or None,
        poly_exp=_flag(env, "SSNBENCH_XATTN_POLY_EXP", False),
        tails=_flag(env, "SSNBENCH_XATTN_TAILS", True),
        direct_launch=_flag(env, "SSNBENCH_XATTN_DIRECT_LAUNCH", True),
        custom_op=_flag(env, "SSNBENCH_XATTN_CUSTOM_OP", False),
        bench_compile=_flag(env, "SSNBENCH_BENCH_COMPILE", True),
        bench_graph=_flag(env, "SSNBENCH_BENCH_GRAPH", True),
        precompile=_flag(env, "SSNBENCH_PRECOMPILE", True),
        bench_threads=bench_threads,
        cache=env.get("SSNBENCH_CACHE") or ".ssnbench-cache",
        submitit_cluster=env.get("SSNBENCH_SUBMITIT_CLUSTER") or "slurm",
    )


_current: Knobs | None = None


def current() -> Knobs:
    """The knobs in force: the environment as read at the first call, or an `override`'s values."""
    global _current
    if _current is None:
        _current = from_env()
    return _current


@contextmanager
def override(**changes: object) -> Iterator[Knobs]:
    """Other knob values for the duration of a `with` block, e.g. `override(tails=False)` for the
    benchmark's A/B rows or `override(interpret=False)` in a test fixture; the previous values come
    back on exit. This is the one way to change a knob at run time (never patch os.environ)."""
    global _current
    before = current()
    _current = dataclasses.replace(before, **changes)  # type: ignore[arg-type]
    try:
        yield _current
    finally:
        _current = before
