"""Shared pieces of the speed cases: device choice, CUDA-synchronised timing, per-case thresholds.

Run modes:
- CI (`make test`): `--benchmark-disable` runs every case once, as a plain test, so they stay correct.
- `make bench`: real timing, saved under .benchmarks/ (`--benchmark-autosave`).
- `make bench-compare`: times again and fails when a case's median is slower than the last saved
  run by more than 10% (`--benchmark-compare-fail=median:10%`), or by more than the case's own
  threshold when it carries `@pytest.mark.benchmark_threshold(PCT)` (noisy cases: sub-millisecond
  CPU work, the data loader). The hook below swaps the global percentage for the case's one.

CPU cases run with one torch thread (SSNBENCH_BENCH_THREADS=N to change) for stable medians.
Shapes: on CUDA the real ones (B=32, 224-px SSN-ResNet50 stages, bf16); on CPU tiny ones so the
whole folder stays well under a minute (they guard correctness and catch gross CPU regressions).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from ssnbench.kernels import knobs

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "benchmark_threshold(pct): allowed median regression in % for this case under "
                   "make bench-compare (default: the global --benchmark-compare-fail)")


class _PerCaseThreshold:
    """Wraps a pytest-benchmark percentage check: a case's `max_regression_pct` extra_info wins."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.field = inner.field

    def fails(self, current: Any, compared: Any) -> str | None:
        from pytest_benchmark.utils import PercentageRegressionCheck

        limit = getattr(current, "extra_info", {}).get("max_regression_pct")
        if limit is None or not isinstance(self.inner, PercentageRegressionCheck):
            return self.inner.fails(current, compared)
        return PercentageRegressionCheck(self.inner.field, limit).fails(current, compared)


def pytest_collection_finish(session: pytest.Session) -> None:
    """After collection (not at session start), so it also applies when this conftest is only
    found while collecting, e.g. `pytest tests --benchmark-compare-fail=...`."""
    bs = getattr(session.config, "_benchmarksession", None)
    if bs is not None and bs.compare_fail:
        bs.compare_fail = [c if isinstance(c, _PerCaseThreshold) else _PerCaseThreshold(c)
                           for c in bs.compare_fail]


CPU_THREADS = knobs.current().bench_threads


@pytest.fixture(autouse=True)
def _cpu_threads() -> Iterator[None]:
    """One intra-op thread per CPU case (SSNBENCH_BENCH_THREADS to change): on a shared box,
    oversubscribed OpenMP threads turn a 1 ms op into 50 ms at random, drowning any regression."""
    if CUDA:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(CPU_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _case_threshold(request: pytest.FixtureRequest) -> None:
    """Copy a `benchmark_threshold` marker into the case's extra_info (saved with the run, too)."""
    marker = request.node.get_closest_marker("benchmark_threshold")
    if marker is not None and "benchmark" in request.fixturenames:
        request.getfixturevalue("benchmark").extra_info["max_regression_pct"] = float(marker.args[0])


def _synced(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Time the work, not the launch: wait for the GPU before the timer stops."""
    if not CUDA:
        return fn

    def run() -> Any:
        out = fn()
        torch.cuda.synchronize()
        return out

    return run


@pytest.fixture
def timed(benchmark: Any) -> Callable[..., Any]:
    """`timed(fn, images=N)`: benchmark `fn` (CUDA-synchronised), record images/s when N is given,
    and return fn's result (so the case can check it)."""

    def run(fn: Callable[[], Any], images: int | None = None) -> Any:
        out = benchmark(_synced(fn))
        if images is not None:
            _images_per_sec(benchmark, images)
        return out

    return run


@pytest.fixture
def reference_dispatch() -> Iterator[None]:
    """On CPU time the op's production CPU path (the PyTorch reference), not the Triton interpreter
    that tests/conftest.py switches on for the correctness tests."""
    if CUDA:
        yield
        return
    with knobs.override(interpret=False):
        yield


@pytest.fixture(scope="session")
def device() -> torch.device:
    return DEVICE


def _images_per_sec(benchmark: Any, images_per_round: int) -> None:
    """Record images/s next to the timing (pytest-benchmark's OPS is rounds/s)."""
    benchmark.extra_info["images_per_round"] = images_per_round
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None and stats.stats.median:
        benchmark.extra_info["images_per_sec"] = round(images_per_round / stats.stats.median, 1)



@pytest.hookimpl(wrapper=True)
def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> Any:
    """A regression found by --benchmark-compare-fail is a failed run (exit 1) with the plugin's
    list of regressed cases, not an internal-error traceback."""
    from pytest_benchmark.session import PerformanceRegression

    try:
        return (yield)
    except PerformanceRegression:
        terminalreporter.write_line("bench-compare: median regression above threshold in the cases "
                                    "listed above", red=True)
        terminalreporter._session.exitstatus = pytest.ExitCode.TESTS_FAILED
        return None
