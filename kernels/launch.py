"""Launching a kernel: the autotuned config per shape (kept in a best-config cache) or a fixed one,
and a direct launch of already compiled kernels that skips Triton's per-call JIT work.

`launch(name, kernel, grid, tensors, scalars, meta=..., key=..., fixed=...)` is the one way the
launchers (shared_xattn.py) start a kernel:
- autotuning (CUDA, knob `autotune`): the first call for a (kernel, shape key) runs Triton's
  autotuner over `configs.CANDIDATES[name]` and remembers the winner (`best_configs()`); later calls
  launch the winner directly;
- otherwise `fixed()` gives the config (the interpreter, or knob `autotune=False`);
- direct launch (knob `direct_launch`, never in the interpreter): Triton's `JITFunction.run`
  re-derives the specialisation and cache key of all ~50 arguments on every call, which costs more
  host time than the small SSN stages' kernels take on the GPU. So the first launch of a (kernel,
  shape key, config, specialisation) goes through the JIT and keeps the compiled kernel; later ones
  call its launcher directly. The specialisation is everything Triton keys a compiled kernel on:
  dtypes and constexprs (fixed by `name` and `key`), 16-byte alignment of every pointer (`aligned`;
  any misaligned pointer takes the JIT) and the integer flags of `int_spec` (None: always the JIT).
- `compile_only(...)`: precompile workers compile the requested configs and launch nothing.

The direct path depends on Triton internals (`CompiledKernel.run`'s argument list, launch hooks);
tests/test_kernel_launch.py pins that contract with a fake kernel, test_kernels_gpu.py compares it
bit for bit with the JIT on a GPU.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import triton
from triton import knobs as triton_knobs

from . import configs, knobs
from .backward import (
    bwd_atomic_kernel,
    bwd_kernel,
    bwd_preprocess_kernel,
    bwd_small_kernel,
    cast_pair_kernel,
)
from .forward import fwd_kernel

__all__ = [
    "DIRECT_LAUNCHES", "KERNELS", "LAUNCHES", "TUNING_LOG", "aligned", "autotune_enabled", "best_config",
    "best_configs", "clear_direct_cache", "compile_only", "compiling", "current_device", "current_stream",
    "direct_enabled", "hooks_idle", "int_spec", "launch", "record_best",
]

#: The jit function behind each launch name; tests swap in stand-ins (tests/conftest.py `kernel_stubs`).
KERNELS: dict[str, Any] = {
    "fwd": fwd_kernel,
    "bwd_small": bwd_small_kernel,
    "bwd_pre": bwd_preprocess_kernel,
    "bwd": bwd_kernel,
    "bwd_atomic": bwd_atomic_kernel,
    "bwd_cast": cast_pair_kernel,
}
#: Kernel launches per kind; tests use it to prove the Triton path ran (no silent fallback).
LAUNCHES: collections.Counter[str] = collections.Counter()
#: Launches that took the direct path (tests check that it runs and stays correct).
DIRECT_LAUNCHES: collections.Counter[str] = collections.Counter()
#: Autotune results seen in this process: one record per (kernel, key) with every config's time.
TUNING_LOG: list[dict[str, Any]] = []

_TUNABLE = frozenset(configs.CANDIDATES)
_KEYS = ["Lc", "Lkc", "Ld", "Lkd", "HEAD_DIM"]
_I32_MAX = 2**31 - 1
_AUTOTUNED: dict[str, Any] = {}
_BEST: dict[tuple, dict[str, Any]] = {}  # (kernel, key) -> tuned launch kwargs
_DIRECT: dict[tuple, tuple[Any, ...]] = {}  # compiled kernels launched directly
_COMPILE_ONLY: dict[str, list[dict[str, Any]]] | None = None  # set by `compile_only`


# ----------------------------------------------------------------------------------------------
# Switches and caches
# ----------------------------------------------------------------------------------------------


def autotune_enabled() -> bool:
    """Autotune on CUDA unless knob `autotune` is off; never in the interpreter."""
    k = knobs.current()
    return k.autotune and not k.interpret


def direct_enabled() -> bool:
    """Direct launches unless knob `direct_launch` is off; never in the interpreter."""
    k = knobs.current()
    return k.direct_launch and not k.interpret


def best_config(name: str, key: tuple) -> dict[str, Any] | None:
    """The autotuned launch kwargs of kernel `name` at shape `key`, if tuned in this process."""
    return _BEST.get((name, key))


def record_best(name: str, key: tuple, cfg: dict[str, Any]) -> None:
    """Remember a tuned choice (the backward path choice uses this cache too)."""
    _BEST[(name, key)] = cfg


def best_configs() -> list[dict[str, Any]]:
    """Every tuned choice so far, JSON-able: [{"kernel", "key", "config"}] (for benchmark records)."""
    return [{"kernel": name, "key": [str(k) for k in key], "config": dict(cfg)}
            for (name, key), cfg in _BEST.items()]


def clear_direct_cache() -> None:
    """Forget the compiled kernels kept for direct launch (tests start from a clean cache)."""
    _DIRECT.clear()


@contextmanager
def compile_only(requested: dict[str, list[dict[str, Any]]]) -> Iterator[None]:
    """Within the block, `launch(name, ...)` compiles each config in `requested[name]` (launch
    kwargs) with `kernel.warmup` and launches nothing: the precompile workers' mode."""
    global _COMPILE_ONLY
    before = _COMPILE_ONLY
    _COMPILE_ONLY = requested
    try:
        yield
    finally:
        _COMPILE_ONLY = before


def compiling() -> bool:
    """True inside `compile_only` (the launchers then compile every backward path)."""
    return _COMPILE_ONLY is not None


# ----------------------------------------------------------------------------------------------
# Autotuning
# ----------------------------------------------------------------------------------------------


def _tuned(name: str) -> Any:
    """The autotuned wrapper of a kernel (built lazily, CUDA only)."""
    if name not in _AUTOTUNED:
        fn, prune = KERNELS[name], configs.PRUNE[name]
        prune_by = {"early_config_prune": prune} if prune else None
        # the atomic kernel accumulates dQ: zero the accumulators before every timed run
        reset = ["DQAc", "DQAd"] if name == "bwd_atomic" else None
        blocks = {"fwd": ("BLOCK_M", "BLOCK_N"), "bwd": ("BLOCK_M1", "BLOCK_N1", "BLOCK_M2", "BLOCK_N2")}
        if name in blocks:  # tails follow from each candidate's tiles and the token counts
            fn = triton.heuristics(configs.tail_heuristics(blocks[name]))(fn)
        _AUTOTUNED[name] = triton.autotune(
            configs=configs.CANDIDATES[name], key=_KEYS, prune_configs_by=prune_by, reset_to_zero=reset
        )(fn)
    return _AUTOTUNED[name]


def _record_tuning(name: str, tuned: Any, key: tuple) -> None:
    """Keep every config's timing of a fresh autotune (for the benchmark JSON)."""
    timings = getattr(tuned, "configs_timings", None)
    if not timings or getattr(tuned, "_ssn_last_timings", None) is timings:
        return
    tuned._ssn_last_timings = timings
    TUNING_LOG.append(
        {
            "kernel": name,
            "key": [str(k) for k in key],
            "best": str(getattr(tuned, "best_config", "")),
            "timings_ms": {
                str(cfg): (t[0] if isinstance(t, list | tuple) else t) for cfg, t in timings.items()
            },
        }
    )


# ----------------------------------------------------------------------------------------------
# Direct launch
# ----------------------------------------------------------------------------------------------


def int_spec(strides: list[int], H: int) -> tuple[bool, bool] | None:
    """What Triton's JIT specialises our integer arguments on, in two flags, or None when the
    strides are not all multiples of 16 (then every launch goes through the JIT).

    The token counts are `do_not_specialize` (they only differ in i32/i64, and all our integers are
    below 2**31: the launchers check), each stride is specialised on ==1 and %16, which all strides
    divisible by 16 settle at once (gcd); H on ==1 and %16."""
    if math.gcd(*strides) % 16 or max(strides) > _I32_MAX:
        return None
    return H == 1, H % 16 == 0


def aligned(tensors: tuple) -> bool:
    """Every pointer 16-byte aligned. If one is not, which one matters to Triton's specialisation,
    so such launches always take the JIT."""
    ptrs = 0
    for t in tensors:
        ptrs |= t.data_ptr()
    return not ptrs & 15


def hooks_idle() -> bool:
    """No launch hooks installed (a profiler such as proton adds some): then the direct launch may
    pass None for the hooks and their metadata. Triton 3.6+ keeps them as (empty) HookChains."""
    rt = triton_knobs.runtime
    hooks = (rt.launch_enter_hook, rt.launch_exit_hook)
    return all(h is None or not getattr(h, "calls", True) for h in hooks)


def current_device() -> int:
    """The current CUDA device index (torch.cuda.current_device() minus its Python wrapper)."""
    return torch._C._cuda_getDevice()


def current_stream(device: int) -> int:
    """The raw handle of the current CUDA stream on `device`."""
    return torch._C._cuda_getCurrentRawStream(device)


def _direct_entry(kernel: Any, compiled: Any, n_args: int, kwargs: dict[str, Any]) -> tuple[Any, ...] | None:
    """(launcher, function handle, packed metadata, trailing constexpr values) of a compiled kernel."""
    if hasattr(compiled, "result"):  # an async-compile future (newer Triton)
        compiled = compiled.result()
    params = getattr(kernel, "params", None)
    if compiled is None or params is None:
        return None
    run = compiled.run  # loads the module on first access
    tail = tuple(kwargs.get(p.name, p.default) for p in params[n_args:])
    return run, compiled.function, compiled.packed_metadata, tail


# ----------------------------------------------------------------------------------------------
# The launch
# ----------------------------------------------------------------------------------------------


def launch(name: str, kernel: Any, grid: Callable[[dict[str, Any]], tuple[int, int, int]],
           tensors: tuple, scalars: tuple, *, meta: dict[str, Any], key: tuple,
           fixed: Callable[[], dict[str, Any]], spec: tuple | None = None,
           derive: Callable[[dict[str, Any]], dict[str, int]] | None = None) -> None:
    """Launch kernel(*tensors, *scalars, **meta, **config) on `grid(config)`.

    `key` names the shape for the best-config and direct-launch caches; `fixed()` gives the config
    when not autotuning (and for kernels that are never tuned); `derive(cfg)` adds the constexprs
    that follow from a config (the tails; the autotuned wrapper has them as `triton.heuristics`);
    `spec` is `int_spec(...)` of the integer arguments (None: always through the JIT).
    """
    if _COMPILE_ONLY is not None:  # precompile: compile the requested configs, launch nothing
        for cfg in _COMPILE_ONLY.get(name, ()):
            extra = derive(cfg) if derive else {}
            kernel.warmup(*tensors, *scalars, grid=grid(cfg), **meta, **cfg, **extra)
        return
    tuning = name in _TUNABLE and autotune_enabled()
    if tuning:
        cfg = _BEST.get((name, key))
        if cfg is None:  # first call for this shape: tune (launches the best config once)
            tuned = _tuned(name)
            tuned[grid](*tensors, *scalars, **meta)
            _record_tuning(name, tuned, key)
            _BEST[(name, key)] = configs.config_kwargs(tuned.best_config)
            return
    else:
        cfg = fixed()
    g = grid(cfg)
    if spec is None or not direct_enabled() or not hooks_idle() or not aligned(tensors):
        kernel[g](*tensors, *scalars, **meta, **cfg, **(derive(cfg) if derive else {}))
        return
    device = current_device()
    # derived constexprs follow from cfg and key, so they need not be part of the direct key
    dkey = (name, key, tuning or tuple(cfg.items()), spec, device)
    entry = _DIRECT.get(dkey)
    if entry is None:
        kwargs = {**meta, **cfg, **(derive(cfg) if derive else {})}
        compiled = kernel[g](*tensors, *scalars, **kwargs)
        entry = _direct_entry(kernel, compiled, len(tensors) + len(scalars), kwargs)
        if entry is not None:
            _DIRECT[dkey] = entry
        return
    run, function, packed, tail = entry
    stream = current_stream(device)
    run(g[0], g[1], g[2], stream, function, packed, None, None, None, *tensors, *scalars, *tail)
    DIRECT_LAUNCHES[name] += 1
