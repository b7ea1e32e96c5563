"""The fused shared cross-attention's launchers: `forward` and `backward`, both directions per launch.

`forward(q_c, k_c, v_c, q_d, k_d, v_d, scale) -> (o_c, o_d, lse_c, lse_d)` is one launch of
`forward.fwd_kernel`; `backward(...)` picks a path by token count ("small" up to
SMALL_MAX_TOKENS, else "general" or "atomic": see backward.py) and launches it. ops.py wraps both
in the `ssnbench::shared_cross_attention` custom op; call that, not these, from model code.

Inputs may be strided (the block passes views of one QKV GEMM output); the only layout requirement
is a unit stride on the head dim and no unit stride elsewhere (the launchers copy otherwise: a unit
stride would be specialised to a constant and break the per-direction pointer select). Outputs are
contiguous. Block sizes are constexpr: autotuned on CUDA (keyed on token counts, head dim, dtype),
a fixed table in the interpreter and with knob `autotune` off (configs.py); every launch goes
through `launch.launch` (best-config cache, direct launch).

Reading order of the package: knobs -> forward -> backward -> configs -> launch -> this module ->
precompile -> ops (the custom op) -> reference (PyTorch oracle and CPU path) -> flops.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import triton
from torch import Tensor

from . import configs, knobs, launch
from .launch import DIRECT_LAUNCHES, KERNELS, LAUNCHES, TUNING_LOG

__all__ = [
    "DEFAULT_LARGE_PATH", "DIRECT_LAUNCHES", "LAUNCHES", "SMALL_MAX_TOKENS", "TUNING_LOG", "backward",
    "flops_forward", "forward",
]

LOG2E = 1.4426950408889634
SMALL_MAX_TOKENS = 64  # single-tile fused backward up to this many queries and keys
#: The > 64-token backward path when not autotuning (with autotuning: timed once per shape).
DEFAULT_LARGE_PATH = "general"


def _prep(t: Tensor) -> Tensor:
    """Unit stride on the head dim and nowhere else (see module docstring); copies only if needed."""
    if t.stride(-1) != 1 or 1 in t.stride()[:-1]:
        t = t.contiguous()
        if 1 in t.stride()[:-1]:  # size-1 dims may carry any stride: give them a harmless 0
            strides = [0 if n == 1 else st for n, st in zip(t.shape[:-1], t.stride()[:-1], strict=True)]
            if 1 in strides:
                raise ValueError("shared_cross_attention kernels need a head dim of at least 2")
            t = t.as_strided(t.shape, [*strides, 1])
    return t


def _prep_all(ts: tuple[Tensor, ...]) -> tuple[list[Tensor], list[int]]:
    """`_prep` of each tensor and their (batch, head, token) strides, in one pass."""
    out: list[Tensor] = []
    strides: list[int] = []
    for t in ts:
        st = t.stride()
        if st[3] != 1 or 1 in st[:3]:
            t = _prep(t)
            st = t.stride()
        out.append(t)
        strides += st[:3]
    return out, strides


def _check_inputs(*ts: Tensor) -> None:
    """Dtype and size limits of the kernels (shapes themselves are checked by ops._check)."""
    q = ts[0]
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError(f"shared_cross_attention kernels support fp16/bf16/fp32, got {q.dtype}")
    if max(t.numel() for t in ts) >= 2**31:
        raise ValueError("shared_cross_attention kernels support < 2**31 elements per tensor")
    if q.shape[-1] > 256:
        raise ValueError(f"head dim {q.shape[-1]} > 256 is not supported by the Triton kernels")


def forward(
    q_c: Tensor, k_c: Tensor, v_c: Tensor, q_d: Tensor, k_d: Tensor, v_d: Tensor, scale: float,
    flat_lse: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(o_c, o_d, lse_c, lse_d) in ONE kernel launch; o contiguous, lse fp32 [B, H, L] natural log
    (with `flat_lse`: flat [B*H*L] views of one allocation, for callers that only hand them to
    `backward`). Shapes must already agree (ops._check); this is the hot path, kept lean."""
    _check_inputs(q_c, k_c, v_c, q_d, k_d, v_d)
    (q_c, k_c, v_c, q_d, k_d, v_d), strides = _prep_all((q_c, k_c, v_c, q_d, k_d, v_d))
    B, H, Lc, D = q_c.shape
    Ld, Lkc, Lkd = q_d.shape[2], k_c.shape[2], k_d.shape[2]
    dt = q_c.dtype
    o_c = q_c.new_empty((B, H, Lc, D))
    o_d = q_d.new_empty((B, H, Ld, D))
    if flat_lse:
        lse_c, lse_d = q_c.new_empty(B * H * (Lc + Ld), dtype=torch.float32).split((B * H * Lc, B * H * Ld))
    else:
        lse_c = q_c.new_empty((B, H, Lc), dtype=torch.float32)
        lse_d = q_d.new_empty((B, H, Ld), dtype=torch.float32)
    if B * H == 0 or Lc + Ld == 0:
        return o_c, o_d, lse_c, lse_d
    if Lkc == 0 or Lkd == 0:
        raise ValueError("shared_cross_attention needs at least one key per direction")
    if not scale > 0:
        raise ValueError(f"shared_cross_attention kernels need a positive scale, got {scale}")
    lq = Lc if Lc > Ld else Ld
    LAUNCHES["fwd"] += 1
    launch.launch(
        "fwd", KERNELS["fwd"], lambda m: ((lq + m["BLOCK_M"] - 1) // m["BLOCK_M"], B * H, 2),
        (q_c, k_c, v_c, q_d, k_d, v_d, o_c, o_d, lse_c, lse_d),
        (*strides, H, Lc, Lkc, Ld, Lkd, scale * LOG2E),
        meta=configs.kernel_meta(D, dt), key=(Lc, Lkc, Ld, Lkd, D, dt, knobs.current().tails),
        fixed=partial(configs.fixed_fwd, lq, max(Lkc, Lkd), D, dt), spec=launch.int_spec(strides, H),
        derive=partial(configs.tails, lc=Lc, ld=Ld, lkc=Lkc, lkd=Lkd),
    )
    return o_c, o_d, lse_c, lse_d


def _alloc_grads(q_c: Tensor, k_c: Tensor, q_d: Tensor, k_d: Tensor, carve: bool) -> list[Tensor]:
    """dq_c, dk_c, dv_c, dq_d, dk_d, dv_d, contiguous. With `carve` they are views of as few
    allocations as the shapes allow (each CUDA allocation costs ~10 us of host time on the lent
    H200's host, more than the kernels of the small SSN stages take); the custom op must return
    tensors that do not alias each other, so it passes carve=False."""
    sq_c, sk_c, sq_d, sk_d = q_c.shape, k_c.shape, q_d.shape, k_d.shape
    if carve and sq_c == sk_c == sq_d == sk_d:
        return list(q_c.new_empty((6, *sq_c)).unbind(0))
    if carve and sq_c == sk_c and sq_d == sk_d:
        return [*q_c.new_empty((3, *sq_c)).unbind(0), *q_d.new_empty((3, *sq_d)).unbind(0)]
    return [q_c.new_empty(sq_c), k_c.new_empty(sk_c), k_c.new_empty(sk_c),
            q_d.new_empty(sq_d), k_d.new_empty(sk_d), k_d.new_empty(sk_d)]


def backward(
    do_c: Tensor,
    do_d: Tensor,
    q_c: Tensor,
    k_c: Tensor,
    v_c: Tensor,
    q_d: Tensor,
    k_d: Tensor,
    v_d: Tensor,
    o_c: Tensor,
    o_d: Tensor,
    lse_c: Tensor,
    lse_d: Tensor,
    scale: float,
    path: str | None = None,
    carve: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(dq_c, dk_c, dv_c, dq_d, dk_d, dv_d), contiguous. `path` forces 'small' (one fused launch,
    <= 64 tokens) or 'general' (preprocess + one dK/dV/dQ launch); default picks by token count.
    `carve`: the gradients may be views of one allocation (see `_alloc_grads`)."""
    dt = q_c.dtype
    if dt not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError(f"shared_cross_attention kernels support fp16/bf16/fp32, got {dt}")
    if do_c.dtype != dt:
        do_c = do_c.to(dt)
    if do_d.dtype != dt:
        do_d = do_d.to(dt)
    ins, strides = _prep_all((q_c, k_c, v_c, q_d, k_d, v_d, do_c, do_d))
    q_c, k_c, v_c, q_d, k_d, v_d, do_c, do_d = ins
    if not (o_c.is_contiguous() and o_d.is_contiguous()):
        o_c, o_d = o_c.contiguous(), o_d.contiguous()
    if lse_c.dtype != torch.float32 or lse_d.dtype != torch.float32:
        lse_c, lse_d = lse_c.float(), lse_d.float()
    if not (lse_c.is_contiguous() and lse_d.is_contiguous()):
        lse_c, lse_d = lse_c.contiguous(), lse_d.contiguous()
    B, H, Lc, D = q_c.shape
    Ld, Lkc, Lkd = q_d.shape[2], k_c.shape[2], k_d.shape[2]
    dev = q_c.device
    grads = _alloc_grads(q_c, k_c, q_d, k_d, carve)
    dq_c, dk_c, dv_c, dq_d, dk_d, dv_d = grads
    if B * H == 0 or Lc + Ld == 0:
        for g in grads:
            g.zero_()
        return tuple(grads)  # type: ignore[return-value]
    lq, lk = max(Lc, Ld), max(Lkc, Lkd)
    if path is None and lq <= SMALL_MAX_TOKENS and lk <= SMALL_MAX_TOKENS:
        path = "small"
    meta = configs.kernel_meta(D, dt)
    common = (*strides, H, Lc, Lkc, Ld, Lkd, scale * LOG2E, scale)
    k = knobs.current()
    key = (Lc, Lkc, Ld, Lkd, D, dt, k.tails)
    spec = launch.int_spec(strides, H)
    if path == "small":
        LAUNCHES["bwd_small"] += 1
        launch.launch(
            "bwd_small", KERNELS["bwd_small"], lambda m: (1, B * H, 2),
            (q_c, k_c, v_c, q_d, k_d, v_d, do_c, do_d, o_c, o_d, lse_c, lse_d, *grads), common,
            meta={**meta, **configs.small_tiles(lq, lk)}, key=key,
            fixed=partial(configs.fixed_small, lq, lk, D), spec=spec,
        )
        return tuple(grads)  # type: ignore[return-value]
    if path is None:
        path = k.bwd_path
    if path not in (None, "general", "atomic"):
        raise ValueError(f"unknown backward path {path!r}; expected 'small', 'general' or 'atomic'")

    delta_c, delta_d = torch.empty(lse_c.numel() + lse_d.numel(), device=dev).split(
        (lse_c.numel(), lse_d.numel())
    )
    fp32_out = dt == torch.float32
    pre_block = 16 if k.interpret else 64
    pre_spec = launch.int_spec(strides[-6:], H)

    def run(which: str) -> None:
        """One whole backward by `which` path, writing `grads` (idempotent: safe to re-run)."""
        atomic = which == "atomic"
        if atomic:  # fp32 dQ accumulators (the gradients themselves when they are fp32)
            dqa_c = dq_c if fp32_out else torch.empty(dq_c.shape, device=dev, dtype=torch.float32)
            dqa_d = dq_d if fp32_out else torch.empty(dq_d.shape, device=dev, dtype=torch.float32)
        else:
            dqa_c, dqa_d = delta_c, delta_d  # unused
        LAUNCHES["bwd_preprocess"] += 1
        pre_meta = {"HEAD_DIM": D, "BLOCK_D": meta["BLOCK_D"], "BLOCK_M": pre_block, "ZERO_DQ": atomic}
        launch.launch(
            "bwd_pre_atomic" if atomic else "bwd_pre", KERNELS["bwd_pre"],
            lambda m: ((lq + pre_block - 1) // pre_block, B * H, 2),
            (o_c, o_d, do_c, do_d, delta_c, delta_d, dqa_c, dqa_d), (*strides[-6:], H, Lc, Ld),
            meta=pre_meta, key=key, fixed=dict, spec=pre_spec,
        )
        if not atomic:
            LAUNCHES["bwd"] += 1

            def grid(m: dict[str, Any]) -> tuple[int, int, int]:
                return (max(triton.cdiv(lk, m["BLOCK_N1"]), triton.cdiv(lq, m["BLOCK_M2"])), B * H, 2)

            launch.launch(
                "bwd", KERNELS["bwd"], grid,
                (q_c, k_c, v_c, q_d, k_d, v_d, do_c, do_d, lse_c, lse_d, delta_c, delta_d, *grads), common,
                meta=meta, key=key, fixed=partial(configs.fixed_bwd, lq, lk, D), spec=spec,
                derive=partial(configs.tails, lc=Lc, ld=Ld, lkc=Lkc, lkd=Lkd),
            )
            return
        LAUNCHES["bwd_atomic"] += 1
        launch.launch(
            "bwd_atomic", KERNELS["bwd_atomic"], lambda m: (triton.cdiv(lk, m["BLOCK_N"]), B * H, 2),
            (q_c, k_c, v_c, q_d, k_d, v_d, do_c, do_d, lse_c, lse_d, delta_c, delta_d,
             dqa_c, dk_c, dv_c, dqa_d, dk_d, dv_d), common,
            meta=meta, key=key, fixed=partial(configs.fixed_atomic, lq, lk, D), spec=spec,
        )
        if not fp32_out:
            LAUNCHES["bwd_cast"] += 1
            n = max(dq_c.numel(), dq_d.numel())
            KERNELS["bwd_cast"][(triton.cdiv(n, 1024), 2)](
                dqa_c, dqa_d, dq_c, dq_d, dq_c.numel(), dq_d.numel(), BLOCK=1024
            )

    if launch.compiling():  # precompile: both large-token paths
        run("general")
        run("atomic")
    else:
        run(path or _choose_path(key, run, lq, lk, D))
    return tuple(grads)  # type: ignore[return-value]


def _choose_path(key: tuple, run: Any, lq: int, lk: int, d: int) -> str:
    """general (two loops, no atomics) or atomic (P once, dQ by fp32 atomics) for this shape: timed
    once per key when autotuning (each path autotuned first), else DEFAULT_LARGE_PATH."""
    if not launch.autotune_enabled():
        return DEFAULT_LARGE_PATH
    key = key[:-1]  # without the tails knob: the tails A/B compares the same path
    best = launch.best_config("bwd_path", key)
    if best is None:
        from triton.testing import do_bench

        times = {}
        for which in ("general", "atomic"):
            run(which)  # autotunes that path's kernel
            times[which] = float(do_bench(lambda w=which: run(w), warmup=5, rep=25, return_mode="median"))
        best = {"path": min(times, key=times.get)}
        launch.record_best("bwd_path", key, best)
        TUNING_LOG.append({"kernel": "bwd_path", "key": [str(k) for k in key], "best": best["path"],
                           "timings_ms": times})
    return best["path"]


def flops_forward(B: int, H: int, Lc: int, Ld: int, Lkc: int, Lkd: int, D: int) -> float:
    """FLOPs (2 per multiply-add) of the forward, both directions: 4·B·H·Lq·Lk·D each."""
    return 4.0 * B * H * D * (Lc * Lkd + Ld * Lkc)
