"""Compile every autotune candidate of the forward and general-backward kernels for a GPU target on
a machine without one (Triton ships ptxas), and report compile errors and shared memory.

Why: a lent GPU's minutes are few; a kernel change that fails to compile for sm_90, or a config
whose shared memory outgrows the card (228 KB per SM on H100/H200), is found here first. The
interpreter (the CPU tests) runs Python semantics and proves neither.

    python scripts/compile_check.py [--arch 90] [--dims 32,64] [--lengths 3136,784,196,49]
                                    [--indices 0,4] [--json PATH]

Each (kernel, candidate, head dim) is compiled with the tails of every token count (deduplicated)
and once without tails (SSNBENCH_XATTN_TAILS=0 equivalent), so their shared memory can be compared.
Uses only the kernels' public names: `configs.CANDIDATES`, `launch.KERNELS`, `configs.tails`.
Exits non-zero if any compile fails.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

os.environ["TRITON_INTERPRET"] = "0"  # compile for real, whatever the caller's environment says

SMEM_LIMIT = 232448  # bytes of shared memory one block may use on sm_90 (227 KB)
_SCALARS = {"qk_scale": "fp32", "sm_scale": "fp32"}
_INTS = {"H", "Lc", "Ld", "Lkc", "Lkd"}
_FP32_PTRS = {"LSEc", "LSEd", "DELc", "DELd"}


def _signature(fn: Any, consts: dict[str, Any], dtype: str) -> dict[str, str]:
    sig = {}
    for name in fn.arg_names:
        if name in consts:
            sig[name] = "constexpr"
        elif name in _SCALARS:
            sig[name] = _SCALARS[name]
        elif name in _INTS or (name.startswith("s") and "_" in name):  # counts and strides
            sig[name] = "i32"
        else:
            sig[name] = "*fp32" if name in _FP32_PTRS else f"*{dtype}"
    return sig


def _compile(job: tuple[str, int, int, tuple[tuple[str, int], ...], int]) -> dict[str, Any]:
    import triton
    from ssnbench.kernels import configs, launch
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernel, index, d, tails, arch = job
    cfg = configs.CANDIDATES[kernel][index]
    fn = launch.KERNELS[kernel]
    consts = {"HEAD_DIM": d, "BLOCK_D": configs.np2(d), "DOT_PREC": "tf32", **cfg.kwargs, **dict(tails)}
    if kernel == "fwd":
        consts.setdefault("POLY_EXP", False)
    src = ASTSource(fn=fn, signature=_signature(fn, consts, "bf16"), constexprs=consts)
    rec: dict[str, Any] = {"kernel": kernel, "index": index, "D": d, "config": str(cfg), "tails": dict(tails),
                           "blocks": {k: v for k, v in cfg.kwargs.items() if k.startswith("BLOCK_")}}
    t0 = time.perf_counter()
    try:
        compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                                  options={"num_warps": cfg.num_warps, "num_stages": cfg.num_stages})
        rec["shared"] = compiled.metadata.shared
        rec["ok"] = compiled.metadata.shared <= SMEM_LIMIT
    except Exception as err:  # the error is the result
        rec["ok"] = False
        rec["error"] = f"{type(err).__name__}: {str(err).strip().splitlines()[-1][:200]}"
    rec["seconds"] = round(time.perf_counter() - t0, 2)
    return rec


def _jobs(dims: list[int], lengths: list[int], arch: int, indices: set[int] | None = None) -> list[tuple]:
    from ssnbench.kernels import configs

    jobs = []
    for kernel in ("fwd", "bwd"):
        for i, cfg in enumerate(configs.CANDIDATES[kernel]):
            if indices is not None and i not in indices:
                continue
            blocks = {k: v for k, v in cfg.kwargs.items() if k.startswith("BLOCK_")}
            variants = {tuple(sorted((k.replace("BLOCK_", "TAIL_"), v) for k, v in blocks.items()))}
            for n in lengths:
                variants.add(tuple(sorted(configs.tails(cfg.kwargs, n, n, n, n).items())))
            for d in dims:
                jobs += [(kernel, i, d, tails, arch) for tails in sorted(variants)]
    return jobs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90)
    parser.add_argument("--dims", default="32,64")
    parser.add_argument("--lengths", default="3136,784,196,49")
    parser.add_argument("--indices", default=None, help="candidate indices to compile (default: all)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    dims = [int(x) for x in args.dims.split(",")]
    lengths = [int(x) for x in args.lengths.split(",")]
    indices = {int(x) for x in args.indices.split(",")} if args.indices else None
    jobs = _jobs(dims, lengths, args.arch, indices)
    print(f"compiling {len(jobs)} kernels for sm_{args.arch} with {args.workers} workers", flush=True)
    with ProcessPoolExecutor(args.workers) as pool:
        records = list(pool.map(_compile, jobs))
    bad = [r for r in records if not r["ok"]]
    for r in records:
        status = "ok" if r["ok"] else f"FAIL {r.get('error', 'shared memory over the limit')}"
        tails = " ".join(f"{k[5:]}{v}" for k, v in r["tails"].items())
        print(f"{r['kernel']:3} #{r['index']:2} D={r['D']:3} tails {tails:24} "
              f"shared={r.get('shared', '-'):>6} {r['seconds']:5.1f}s {status}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)
    print(f"{len(records) - len(bad)}/{len(records)} compiled within {SMEM_LIMIT} bytes of shared memory")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
