"""Compile every autotune candidate ahead of the autotuner, in parallel worker processes.

Why: on a fresh GPU box the autotuner compiles its candidates one after the other, inside the first
call; compiling is CPU-bound, so `precompile()` spreads it over the cores first and the autotuner
then finds every binary in Triton's disk cache. `ssnbench bench kernels` calls it (knob
`precompile`). Best effort: a candidate that does not compile (out of resources) is the
autotuner's call, reported in `errors`.

    python -m ssnbench.kernels.precompile '[jobs, "bfloat16", heads]'   # one worker (internal)
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import torch

from . import configs, launch, shared_xattn
from .configs import STAGE_TOKENS

__all__ = ["compile_jobs", "jobs", "precompile"]

Job = tuple[int, str, int, int]  # (head dim, kernel, candidate index, token count)


def jobs(dims: tuple[int, ...], lengths: tuple[int, ...] = STAGE_TOKENS) -> list[Job]:
    """(head dim, kernel, candidate index, token count) to compile. Token counts are not specialised,
    but the forward's tail tiles follow from them: one forward job per distinct (candidate, tails)."""
    out = []
    for d in dims:
        for name, cfgs in configs.CANDIDATES.items():
            for i, cfg in enumerate(cfgs):
                if name != "fwd":
                    out.append((d, name, i, 49 if name == "bwd_small" else 256))
                    continue
                seen = set()
                for n in lengths:
                    tails = tuple(configs.tails(cfg.kwargs, n, n, n, n).values())
                    if tails not in seen:
                        seen.add(tails)
                        out.append((d, name, i, n))
    return out


def compile_jobs(todo: list[Job], dtype_name: str, heads: int, errors: list[str] | None = None) -> int:
    """Compile (never run) the given autotune candidates; Triton's disk cache keeps the binaries.
    Returns how many compiled; the first few failures go to `errors`."""
    dtype = getattr(torch, dtype_name)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    done = 0
    for d, name, i, tokens in todo:
        x = [torch.randn(2, heads, tokens, d, device=device, dtype=dtype) for _ in range(6)]
        scale = d**-0.5
        try:
            with launch.compile_only({name: [configs.config_kwargs(configs.CANDIDATES[name][i])]}):
                if name == "fwd":
                    shared_xattn.forward(*x, scale)
                else:
                    o = [torch.randn_like(x[0]), torch.randn_like(x[3])]
                    lse = [torch.zeros(2, heads, tokens, device=device) for _ in range(2)]
                    path = "small" if name == "bwd_small" else None
                    shared_xattn.backward(*o, *x, *o, *lse, scale, path=path)
            done += 1
        except Exception as err:  # a config that does not compile (out of resources) is the autotuner's call
            if errors is not None and len(errors) < 3:
                errors.append(f"{name}[{i}] D={d}: {type(err).__name__}: {str(err).splitlines()[0][:160]}")
    return done


def precompile(dims: tuple[int, ...] = (32, 64), dtype: torch.dtype = torch.bfloat16, heads: int = 8,
               workers: int = 8, timeout: float = 240.0, lengths: tuple[int, ...] = STAGE_TOKENS,
               ) -> dict[str, Any]:
    """Compile every autotune candidate for these head dims (and the forward's tails at these token
    counts) in `workers` processes, so the autotuner finds them in Triton's disk cache (the lent GPU
    box has 16 cores). The workers are plain subprocesses (no multiprocessing re-import of a CLI
    __main__). Returns {"jobs", "compiled", "seconds", "errors"}."""
    todo = jobs(dims, tuple(lengths))
    chunks = [c for c in (todo[i::workers] for i in range(workers)) if c]
    name = str(dtype).split(".")[-1]
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen([sys.executable, "-m", "ssnbench.kernels.precompile", json.dumps([c, name, heads])],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for c in chunks
    ]
    done, errors = 0, []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=max(1.0, timeout - (time.perf_counter() - t0)))
            if proc.returncode == 0 and out.strip():
                report = json.loads(out.strip().splitlines()[-1])
                done += report["done"]
                errors += report["errors"][:1]
            else:
                errors.append(err.strip().splitlines()[-1][:200] if err.strip() else f"rc={proc.returncode}")
        except subprocess.TimeoutExpired:
            proc.kill()
            errors.append("timeout")
    return {"jobs": len(todo), "compiled": done, "seconds": time.perf_counter() - t0, "errors": errors}


def _worker(arg: str) -> None:
    """One worker process: compile its share and print {"done", "errors"} as the last line."""
    todo, dtype_name, heads = json.loads(arg)
    errors: list[str] = []
    done = compile_jobs([tuple(j) for j in todo], dtype_name, heads, errors)
    print(json.dumps({"done": done, "errors": errors}), flush=True)


if __name__ == "__main__":
    _worker(sys.argv[1])
