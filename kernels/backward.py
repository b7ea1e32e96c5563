"""Backward kernels of the fused shared cross-attention; each launch covers both directions.

Three paths, all recomputing the probabilities from the forward's saved log-sum-exp rows:
- "small" (`bwd_small_kernel`): the whole backward of one (b, h, direction) in ONE program when all
  queries and all keys fit one tile (<= 64 tokens, the last SSN stage): delta = rowsum(dO*O), P from
  the LSE, dV, dS, dQ and dK without atomics or a preprocess launch.
- "general" (`bwd_preprocess_kernel` + `bwd_kernel`): the FlashAttention-2 backward without atomics.
  Each program computes dK/dV of one key block (looping over the queries) and then dQ of one query
  block (looping over the keys); two launches in all. Tail tiles as in the forward.
- "atomic" (`bwd_preprocess_kernel` + `bwd_atomic_kernel` (+ `cast_pair_kernel` for fp16/bf16)):
  P is computed once per tile for dV, dK and a dQ partial added atomically into an fp32 accumulator
  (zeroed by the preprocess). Fewer exps/matmuls, atomics traffic instead; dQ sums in a
  nondeterministic order. With autotuning the faster of general/atomic is timed once per shape.
No path holds an L_q x L_k matrix in memory. Gradients cross directions: dK_d/dV_d come from the
clinic queries (direction 0), dK_c/dV_c from the derm queries.

Each autotuned kernel has its candidates and their pruning directly above it.
"""

from __future__ import annotations

from typing import Any

import triton
import triton.language as tl

from .forward import NO_SPEC

__all__ = [
    "ATOMIC_CONFIGS", "BWD_CONFIGS", "SMALL_CONFIGS", "bwd_atomic_kernel", "bwd_kernel",
    "bwd_preprocess_kernel", "bwd_small_kernel", "cast_pair_kernel", "prune_atomic", "prune_bwd",
]


def _cover(n: int) -> int:
    """The largest tile worth trying for n tokens: the next power of two >= max(n, 32)."""
    return triton.next_power_of_2(max(int(n), 32))


# ----------------------------------------------------------------------------------------------
# delta = rowsum(dO * O): the preprocess of the general and atomic paths
# ----------------------------------------------------------------------------------------------


@triton.jit(do_not_specialize=NO_SPEC)
def bwd_preprocess_kernel(
    Oc, Od, dOc, dOd, DELc, DELd, DQAc, DQAd,
    sgc_b, sgc_h, sgc_l, sgd_b, sgd_h, sgd_l,
    H, Lc, Ld,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, ZERO_DQ: tl.constexpr,
):
    """delta = rowsum(dO * O) for both directions (O contiguous, dO strided); with ZERO_DQ also
    zero the fp32 dQ accumulators of the atomic backward (saves a memset launch)."""
    start_m = tl.program_id(0)
    bh = tl.program_id(1)
    direction = tl.program_id(2)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    if direction == 0:
        o_base = Oc
        do_base = dOc + b * sgc_b + h * sgc_h
        s_gl = sgc_l
        del_base = DELc
        dqa_base = DQAc
        Lq = Lc
    else:
        o_base = Od
        do_base = dOd + b * sgd_b + h * sgd_h
        s_gl = sgd_l
        del_base = DELd
        dqa_base = DQAd
        Lq = Ld
    if start_m * BLOCK_M >= Lq:
        return
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_m[:, None] < Lq) & (offs_d[None, :] < HEAD_DIM)
    row = bh.to(tl.int64) * Lq + offs_m
    o = tl.load(o_base + row[:, None] * HEAD_DIM + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
    do = tl.load(do_base + offs_m[:, None] * s_gl + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
    tl.store(del_base + row, tl.sum(o * do, 1), mask=offs_m < Lq)
    if ZERO_DQ:
        zeros = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
        tl.store(dqa_base + row[:, None] * HEAD_DIM + offs_d[None, :], zeros, mask=mask)


@triton.jit
def _bwd_select(
    Qc, Kc, Vc, Qd, Kd, Vd, dOc, dOd,
    sqc_b, sqc_h, sqc_l, skc_b, skc_h, skc_l, svc_b, svc_h, svc_l,
    sqd_b, sqd_h, sqd_l, skd_b, skd_h, skd_l, svd_b, svd_h, svd_l,
    sgc_b, sgc_h, sgc_l, sgd_b, sgd_h, sgd_l,
    Lc, Lkc, Ld, Lkd, b, h, direction,
):
    """Base pointers, row strides and lengths of one direction (queries, keys, values, dO)."""
    if direction == 0:
        q_base = Qc + b * sqc_b + h * sqc_h
        k_base = Kd + b * skd_b + h * skd_h
        v_base = Vd + b * svd_b + h * svd_h
        do_base = dOc + b * sgc_b + h * sgc_h
        s_ql = sqc_l
        s_kl = skd_l
        s_vl = svd_l
        s_gl = sgc_l
        Lq = Lc
        Lk = Lkd
    else:
        q_base = Qd + b * sqd_b + h * sqd_h
        k_base = Kc + b * skc_b + h * skc_h
        v_base = Vc + b * svc_b + h * svc_h
        do_base = dOd + b * sgd_b + h * sgd_h
        s_ql = sqd_l
        s_kl = skc_l
        s_vl = svc_l
        s_gl = sgd_l
        Lq = Ld
        Lk = Lkc
    return q_base, k_base, v_base, do_base, s_ql, s_kl, s_vl, s_gl, Lq, Lk


# ----------------------------------------------------------------------------------------------
# "small": one program per (b, h, direction), <= 64 queries and keys
# ----------------------------------------------------------------------------------------------


#: The small backward has no tiles to tune, only warps.
SMALL_CONFIGS = [triton.Config({}, num_warps=w, num_stages=1) for w in (2, 4, 8)]


@triton.jit(do_not_specialize=NO_SPEC)
def bwd_small_kernel(
    Qc, Kc, Vc, Qd, Kd, Vd, dOc, dOd, Oc, Od, LSEc, LSEd,
    dQc, dKc, dVc, dQd, dKd, dVd,
    sqc_b, sqc_h, sqc_l, skc_b, skc_h, skc_l, svc_b, svc_h, svc_l,
    sqd_b, sqd_h, sqd_l, skd_b, skd_h, skd_l, svd_b, svd_h, svd_l,
    sgc_b, sgc_h, sgc_l, sgd_b, sgd_h, sgd_l,
    H, Lc, Lkc, Ld, Lkd, qk_scale, sm_scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    DOT_PREC: tl.constexpr,
):
    """Whole backward of one (b, h, direction) in one tile: all queries and all keys in registers."""
    bh = tl.program_id(1)
    direction = tl.program_id(2)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    q_base, k_base, v_base, do_base, s_ql, s_kl, s_vl, s_gl, Lq, Lk = _bwd_select(
        Qc, Kc, Vc, Qd, Kd, Vd, dOc, dOd,
        sqc_b, sqc_h, sqc_l, skc_b, skc_h, skc_l, svc_b, svc_h, svc_l,
        sqd_b, sqd_h, sqd_l, skd_b, skd_h, skd_l, svd_b, svd_h, svd_l,
        sgc_b, sgc_h, sgc_l, sgd_b, sgd_h, sgd_l,
        Lc, Lkc, Ld, Lkd, b, h, direction,
    )
    if direction == 0:  # gradients cross directions: dk_d, dv_d come from the clinic queries
        o_base = Oc
        lse_base = LSEc
        dq_base = dQc
        dk_base = dKd
        dv_base = dVd
    else:
        o_base = Od
        lse_base = LSEd
        dq_base = dQd
        dk_base = dKc
        dv_base = dVc
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d[None, :] < HEAD_DIM
    m_mask = (offs_m[:, None] < Lq) & d_ok
    n_mask = (offs_n[:, None] < Lk) & d_ok
    q = tl.load(q_base + offs_m[:, None] * s_ql + offs_d[None, :], mask=m_mask, other=0.0)
    do = tl.load(do_base + offs_m[:, None] * s_gl + offs_d[None, :], mask=m_mask, other=0.0)
    k = tl.load(k_base + offs_n[:, None] * s_kl + offs_d[None, :], mask=n_mask, other=0.0)
    v = tl.load(v_base + offs_n[:, None] * s_vl + offs_d[None, :], mask=n_mask, other=0.0)
    row_q = bh.to(tl.int64) * Lq + offs_m
    o = tl.load(o_base + row_q[:, None] * HEAD_DIM + offs_d[None, :], mask=m_mask, other=0.0)
    # rows past Lq get lse = +inf, so their probabilities are exactly 0
    lse = tl.load(lse_base + row_q, mask=offs_m < Lq, other=float("inf")) * 1.4426950408889634
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)

    qk = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * qk_scale
    p = tl.math.exp2(qk - lse[:, None])
    p = tl.where(offs_n[None, :] < Lk, p, 0.0)
    dv = tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=DOT_PREC)
    dp = tl.dot(do, tl.trans(v), input_precision=DOT_PREC)
    ds = (p * (dp - delta[:, None])).to(q.dtype)
    dq = tl.dot(ds, k, input_precision=DOT_PREC) * sm_scale
    dk = tl.dot(tl.trans(ds), q, input_precision=DOT_PREC) * sm_scale

    row_k = bh.to(tl.int64) * Lk + offs_n
    tl.store(dq_base + row_q[:, None] * HEAD_DIM + offs_d[None, :], dq.to(q.dtype), mask=m_mask)
    tl.store(dk_base + row_k[:, None] * HEAD_DIM + offs_d[None, :], dk.to(q.dtype), mask=n_mask)
    tl.store(dv_base + row_k[:, None] * HEAD_DIM + offs_d[None, :], dv.to(q.dtype), mask=n_mask)


# ----------------------------------------------------------------------------------------------
# "general": dK/dV by key block, then dQ by query block, no atomics
# ----------------------------------------------------------------------------------------------


@triton.jit
def _bwd_dq_step(
    dq, q, do, lse, delta, k_ptrs, v_ptrs, start_n, Lk, s_kl, s_vl, qk_scale, offs_n, d_ok,
    MASK_N: tl.constexpr, DOT_PREC: tl.constexpr,
):
    """dQ contribution of one key block."""
    n_idx = start_n + offs_n
    kv_mask = (n_idx[:, None] < Lk) & d_ok if MASK_N else d_ok
    k = tl.load(k_ptrs + start_n * s_kl, mask=kv_mask, other=0.0)
    v = tl.load(v_ptrs + start_n * s_vl, mask=kv_mask, other=0.0)
    qk = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * qk_scale
    p = tl.math.exp2(qk - lse[:, None])
    if MASK_N:
        p = tl.where(n_idx[None, :] < Lk, p, 0.0)
    dp = tl.dot(do, tl.trans(v), input_precision=DOT_PREC)
    ds = p * (dp - delta[:, None])
    return tl.dot(ds.to(k.dtype), k, dq, input_precision=DOT_PREC)


@triton.jit
def _bwd_dkdv_step(
    dk, dv, k, v, q_base, do_base, lse_base, del_base, row0, start_m, Lq, s_ql, s_gl, qk_scale,
    offs_m0, offs_d, d_ok, MASK_M: tl.constexpr, DOT_PREC: tl.constexpr,
):
    """dK/dV contribution of one query block; only the last (partial) block is masked on rows."""
    offs_m = start_m + offs_m0
    q_ptrs = q_base + offs_m[:, None] * s_ql + offs_d[None, :]
    do_ptrs = do_base + offs_m[:, None] * s_gl + offs_d[None, :]
    if MASK_M:
        m_ok = offs_m < Lq
        q = tl.load(q_ptrs, mask=m_ok[:, None] & d_ok, other=0.0)
        do = tl.load(do_ptrs, mask=m_ok[:, None] & d_ok, other=0.0)
        # queries past Lq: lse = +inf -> p = 0, so no mask on the scores is needed
        lse = tl.load(lse_base + row0 + offs_m, mask=m_ok, other=float("inf"))
        delta = tl.load(del_base + row0 + offs_m, mask=m_ok, other=0.0)
    else:
        q = tl.load(q_ptrs, mask=d_ok, other=0.0)
        do = tl.load(do_ptrs, mask=d_ok, other=0.0)
        lse = tl.load(lse_base + row0 + offs_m)
        delta = tl.load(del_base + row0 + offs_m)
    qkT = tl.dot(k, tl.trans(q), input_precision=DOT_PREC) * qk_scale
    pT = tl.math.exp2(qkT - lse[None, :] * 1.4426950408889634)
    dv = tl.dot(pT.to(do.dtype), do, dv, input_precision=DOT_PREC)
    dpT = tl.dot(v, tl.trans(do), input_precision=DOT_PREC)
    dsT = pT * (dpT - delta[None, :])
    dk = tl.dot(dsT.to(q.dtype), q, dk, input_precision=DOT_PREC)
    return dk, dv


@triton.jit
def _bwd_dkdv_block(
    q_base, k_base, v_base, do_base, lse_base, del_base, dk_base, dv_base, bh, row0, start_n, Lq, Lk,
    s_ql, s_kl, s_vl, s_gl, qk_scale, sm_scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, ROWS: tl.constexpr, BLOCK_M1: tl.constexpr,
    TAIL_M1: tl.constexpr, DOT_PREC: tl.constexpr,
):
    """dK/dV of the ROWS keys from `start_n`: a loop over full query blocks, then the ragged rest of
    the queries as one masked block of TAIL_M1 rows."""
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d[None, :] < HEAD_DIM
    offs_n = start_n + tl.arange(0, ROWS)
    n_mask = (offs_n[:, None] < Lk) & d_ok
    k = tl.load(k_base + offs_n[:, None] * s_kl + offs_d[None, :], mask=n_mask, other=0.0)
    v = tl.load(v_base + offs_n[:, None] * s_vl + offs_d[None, :], mask=n_mask, other=0.0)
    dk = tl.zeros([ROWS, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([ROWS, BLOCK_D], dtype=tl.float32)
    offs_m0 = tl.arange(0, BLOCK_M1)
    m_full = (Lq // BLOCK_M1) * BLOCK_M1
    for start_m in range(0, m_full, BLOCK_M1):
        dk, dv = _bwd_dkdv_step(
            dk, dv, k, v, q_base, do_base, lse_base, del_base, row0, start_m, Lq, s_ql, s_gl, qk_scale,
            offs_m0, offs_d, d_ok, False, DOT_PREC,
        )
    if m_full < Lq:
        dk, dv = _bwd_dkdv_step(
            dk, dv, k, v, q_base, do_base, lse_base, del_base, row0, m_full, Lq, s_ql, s_gl, qk_scale,
            tl.arange(0, TAIL_M1), offs_d, d_ok, True, DOT_PREC,
        )
    row_k = bh.to(tl.int64) * Lk + offs_n
    out_k = row_k[:, None] * HEAD_DIM + offs_d[None, :]
    tl.store(dk_base + out_k, (dk * sm_scale).to(dk_base.dtype.element_ty), mask=n_mask)
    tl.store(dv_base + out_k, dv.to(dv_base.dtype.element_ty), mask=n_mask)


@triton.jit
def _bwd_dq_block(
    q_base, k_base, v_base, do_base, lse_base, del_base, dq_base, row0, start_m, Lq, Lk,
    s_ql, s_kl, s_vl, s_gl, qk_scale, sm_scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, ROWS: tl.constexpr, BLOCK_N2: tl.constexpr,
    TAIL_N2: tl.constexpr, DOT_PREC: tl.constexpr,
):
    """dQ of the ROWS queries from `start_m`: a loop over full key blocks, then the ragged rest of
    the keys as one masked block of TAIL_N2 keys."""
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d[None, :] < HEAD_DIM
    offs_m = start_m + tl.arange(0, ROWS)
    m_mask = (offs_m[:, None] < Lq) & d_ok
    q = tl.load(q_base + offs_m[:, None] * s_ql + offs_d[None, :], mask=m_mask, other=0.0)
    do = tl.load(do_base + offs_m[:, None] * s_gl + offs_d[None, :], mask=m_mask, other=0.0)
    lse = tl.load(lse_base + row0 + offs_m, mask=offs_m < Lq, other=0.0) * 1.4426950408889634
    delta = tl.load(del_base + row0 + offs_m, mask=offs_m < Lq, other=0.0)
    offs_n2 = tl.arange(0, BLOCK_N2)
    k_ptrs = k_base + offs_n2[:, None] * s_kl + offs_d[None, :]
    v_ptrs = v_base + offs_n2[:, None] * s_vl + offs_d[None, :]
    dq = tl.zeros([ROWS, BLOCK_D], dtype=tl.float32)
    n_full = (Lk // BLOCK_N2) * BLOCK_N2
    for start_n2 in range(0, n_full, BLOCK_N2):
        dq = _bwd_dq_step(
            dq, q, do, lse, delta, k_ptrs, v_ptrs, start_n2, Lk, s_kl, s_vl, qk_scale, offs_n2, d_ok,
            False, DOT_PREC,
        )
    if n_full < Lk:
        offs_t = tl.arange(0, TAIL_N2)
        dq = _bwd_dq_step(
            dq, q, do, lse, delta, k_base + offs_t[:, None] * s_kl + offs_d[None, :],
            v_base + offs_t[:, None] * s_vl + offs_d[None, :], n_full, Lk, s_kl, s_vl, qk_scale, offs_t, d_ok,
            True, DOT_PREC,
        )
    out_q = (row0 + offs_m)[:, None] * HEAD_DIM + offs_d[None, :]
    tl.store(dq_base + out_q, (dq * sm_scale).to(dq_base.dtype.element_ty), mask=m_mask)


BWD_CONFIGS = [
    triton.Config({"BLOCK_M1": m1, "BLOCK_N1": n1, "BLOCK_M2": m2, "BLOCK_N2": n2}, num_warps=w, num_stages=s)
    for m1, n1, m2, n2, w, s in [
        (32, 64, 64, 32, 4, 2), (32, 64, 64, 32, 4, 3), (64, 64, 64, 64, 4, 3), (32, 128, 128, 32, 4, 3),
        (32, 128, 128, 32, 8, 3), (64, 128, 128, 64, 8, 3), (64, 64, 64, 64, 8, 2),
        # deeper pipelines of the best D=64 shape (H200 autotune, 2026-11-26) and FA2-tutorial tiles
        (32, 128, 128, 32, 4, 4), (32, 128, 128, 32, 4, 5), (32, 128, 128, 64, 4, 3),
        (64, 128, 128, 32, 4, 3), (16, 128, 128, 16, 4, 3),
        # around the best D=32 shape at 784 tokens
        (32, 64, 64, 32, 4, 4), (32, 64, 64, 64, 4, 3), (64, 64, 64, 32, 4, 3),
    ]
]


def prune_bwd(configs: list, named_args: dict, **kwargs: Any) -> list:
    """Autotune's early_config_prune for the general backward."""
    lq = max(named_args["Lc"], named_args["Ld"])
    lk = max(named_args["Lkc"], named_args["Lkd"])
    keep = [
        c for c in configs
        if max(c.kwargs["BLOCK_M2"], c.kwargs["BLOCK_M1"]) <= _cover(lq)
        and max(c.kwargs["BLOCK_N1"], c.kwargs["BLOCK_N2"]) <= _cover(lk)
    ]
    if kwargs.get("HEAD_DIM", named_args.get("HEAD_DIM", 64)) > 64:
        keep = [c for c in keep if c.kwargs["BLOCK_N1"] <= 64 and c.kwargs["BLOCK_M2"] <= 64] or keep
    return keep or configs[:1]


@triton.jit(do_not_specialize=NO_SPEC)
def bwd_kernel(
    Qc, Kc, Vc, Qd, Kd, Vd, dOc, dOd, LSEc, LSEd, DELc, DELd,
    dQc, dKc, dVc, dQd, dKd, dVd,
    sqc_b, sqc_h, sqc_l, skc_b, skc_h, skc_l, svc_b, svc_h, svc_l,
    sqd_b, sqd_h, sqd_l, skd_b, skd_h, skd_l, svd_b, svd_h, svd_l,
    sgc_b, sgc_h, sgc_l, sgd_b, sgd_h, sgd_l,
    H, Lc, Lkc, Ld, Lkd, qk_scale, sm_scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M1: tl.constexpr, BLOCK_N1: tl.constexpr, BLOCK_M2: tl.constexpr, BLOCK_N2: tl.constexpr,
    TAIL_M1: tl.constexpr, TAIL_N1: tl.constexpr, TAIL_M2: tl.constexpr, TAIL_N2: tl.constexpr,
    DOT_PREC: tl.constexpr,
):
    """Program pid: dK/dV of key block pid (loop over queries), then dQ of query block pid. The
    TAIL_* tiles (`configs.tails`) serve the ragged last block of each of the four loops/blocks."""
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    direction = tl.program_id(2)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    q_base, k_base, v_base, do_base, s_ql, s_kl, s_vl, s_gl, Lq, Lk = _bwd_select(
        Qc, Kc, Vc, Qd, Kd, Vd, dOc, dOd,
        sqc_b, sqc_h, sqc_l, skc_b, skc_h, skc_l, svc_b, svc_h, svc_l,
        sqd_b, sqd_h, sqd_l, skd_b, skd_h, skd_l, svd_b, svd_h, svd_l,
        sgc_b, sgc_h, sgc_l, sgd_b, sgd_h, sgd_l,
        Lc, Lkc, Ld, Lkd, b, h, direction,
    )
    if direction == 0:
        lse_base = LSEc
        del_base = DELc
        dq_base = dQc
        dk_base = dKd
        dv_base = dVd
    else:
        lse_base = LSEd
        del_base = DELd
        dq_base = dQd
        dk_base = dKc
        dv_base = dVc
    row0 = bh.to(tl.int64) * Lq

    # ---- dK, dV for keys [pid*BLOCK_N1, +BLOCK_N1) ----
    start_n = pid * BLOCK_N1
    if start_n < Lk:
        if TAIL_N1 != BLOCK_N1:
            if start_n + BLOCK_N1 > Lk:
                _bwd_dkdv_block(
                    q_base, k_base, v_base, do_base, lse_base, del_base, dk_base, dv_base, bh, row0, start_n,
                    Lq, Lk, s_ql, s_kl, s_vl, s_gl, qk_scale, sm_scale,
                    HEAD_DIM, BLOCK_D, TAIL_N1, BLOCK_M1, TAIL_M1, DOT_PREC,
                )
            else:
                _bwd_dkdv_block(
                    q_base, k_base, v_base, do_base, lse_base, del_base, dk_base, dv_base, bh, row0, start_n,
                    Lq, Lk, s_ql, s_kl, s_vl, s_gl, qk_scale, sm_scale,
                    HEAD_DIM, BLOCK_D, BLOCK_N1, BLOCK_M1, TAIL_M1, DOT_PREC,
                )
        else:
            _bwd_dkdv_block(
                q_base, k_base, v_base, do_base, lse_base, del_base, dk_base, dv_base, bh, row0, start_n,
                Lq, Lk, s_ql, s_kl, s_vl, s_gl, qk_scale, sm_scale,
                HEAD_DIM, BLOCK_D, BLOCK_N1, BLOCK_M1, TAIL_M1, DOT_PREC,
            )

    # ---- dQ for queries [pid*BLOCK_M2, +BLOCK_M2) ----
    start_m2 = pid * BLOCK_M2
    if start_m2 < Lq:
        if TAIL_M2 != BLOCK_M2:
            if start_m2 + BLOCK_M2 > Lq:
                _bwd_dq_block(
                    q_base, k_base, v_base, do_base, lse_base, del_base, dq_base, row0, start_m2, Lq, Lk,
                    s_ql, s_kl, s_vl, s_gl, qk_scale, sm_scale,
                    HEAD_DIM, BLOCK_D, TAIL_M2, BLOCK_N2, TAIL_N2, DOT_PREC,
                )
            else:
                _bwd_dq_block(
                    q_base, k_base, v_base, do_base, lse_base, del_base, dq_base, row0, start_m2, Lq, Lk,
                    s_ql, s_kl, s_vl, s_gl, qk_scale, sm_scale,
                    HEAD_DIM, BLOCK_D, BLOCK_M2, BLOCK_N2, TAIL_N2, DOT_PREC,
                )
        else:
            _bwd_dq_block(
                q_base, k_base, v_base, do_base, lse_base, del_base, dq_base, row0, start_m2, Lq, Lk,
                s_ql, s_kl, s_vl, s_gl, qk_scale, sm_scale,
                HEAD_DIM, BLOCK_D, BLOCK_M2, BLOCK_N2, TAIL_N2, DOT_PREC,
            )


# ----------------------------------------------------------------------------------------------
# "atomic": P once per tile, dQ partials added atomically in fp32
# ----------------------------------------------------------------------------------------------


@triton.jit
def _atomic_loop(
    k, v, q_base, do_base, lse_base, del_base, dqa_base, s_ql, s_gl, Lq, row0, n_valid, d_ok, offs_d,
    qk_scale, sm_scale, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, MASK_N: tl.constexpr, DOT_PREC: tl.constexpr,
):
    """Loop over all query blocks for one key block: dK, dV accumulated, dQ partials atomically added."""
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    offs_m0 = tl.arange(0, BLOCK_M)
    for start_m in range(0, Lq, BLOCK_M):
        offs_m = start_m + offs_m0
        m_mask = (offs_m[:, None] < Lq) & d_ok
        q = tl.load(q_base + offs_m[:, None] * s_ql + offs_d[None, :], mask=m_mask, other=0.0)
        do = tl.load(do_base + offs_m[:, None] * s_gl + offs_d[None, :], mask=m_mask, other=0.0)
        # queries past Lq: lse = +inf -> p = 0
        lse = tl.load(lse_base + row0 + offs_m, mask=offs_m < Lq, other=float("inf"))
        delta = tl.load(del_base + row0 + offs_m, mask=offs_m < Lq, other=0.0)
        qkT = tl.dot(k, tl.trans(q), input_precision=DOT_PREC) * qk_scale
        pT = tl.math.exp2(qkT - lse[None, :] * 1.4426950408889634)
        if MASK_N:  # padded keys (k = 0) must not reach dQ, even as inf * 0
            pT = tl.where(n_valid[:, None], pT, 0.0)
        dv = tl.dot(pT.to(do.dtype), do, dv, input_precision=DOT_PREC)
        dpT = tl.dot(v, tl.trans(do), input_precision=DOT_PREC)
        dsT = (pT * (dpT - delta[None, :])).to(q.dtype)
        dk = tl.dot(dsT, q, dk, input_precision=DOT_PREC)
        dq = tl.dot(tl.trans(dsT), k, input_precision=DOT_PREC) * sm_scale
        tl.atomic_add(dqa_base + (row0 + offs_m)[:, None] * HEAD_DIM + offs_d[None, :], dq, mask=m_mask,
                      sem="relaxed")
    return dk, dv


ATOMIC_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
    for bm, bn, w, s in [(32, 64, 4, 2), (64, 64, 4, 3), (32, 128, 4, 3), (64, 128, 8, 3), (32, 128, 8, 2)]
]


def prune_atomic(configs: list, named_args: dict, **kwargs: Any) -> list:
    """Autotune's early_config_prune for the atomic backward."""
    lq = max(named_args["Lc"], named_args["Ld"])
    lk = max(named_args["Lkc"], named_args["Lkd"])
    keep = [c for c in configs if c.kwargs["BLOCK_M"] <= _cover(lq) and c.kwargs["BLOCK_N"] <= _cover(lk)]
    if kwargs.get("HEAD_DIM", named_args.get("HEAD_DIM", 64)) > 64:
        keep = [c for c in keep if c.kwargs["BLOCK_N"] <= 64] or keep
    return keep or configs[:1]


@triton.jit(do_not_specialize=NO_SPEC)
def bwd_atomic_kernel(
    Qc, Kc, Vc, Qd, Kd, Vd, dOc, dOd, LSEc, LSEd, DELc, DELd,
    DQAc, dKc, dVc, DQAd, dKd, dVd,
    sqc_b, sqc_h, sqc_l, skc_b, skc_h, skc_l, svc_b, svc_h, svc_l,
    sqd_b, sqd_h, sqd_l, skd_b, skd_h, skd_l, svd_b, svd_h, svd_l,
    sgc_b, sgc_h, sgc_l, sgd_b, sgd_h, sgd_l,
    H, Lc, Lkc, Ld, Lkd, qk_scale, sm_scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    DOT_PREC: tl.constexpr,
):
    """FlashAttention-2 original: program = one key block; loop over queries computing P once for
    dV, dK and a dQ partial that is atomically added to an fp32 accumulator (zeroed by preprocess)."""
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    direction = tl.program_id(2)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    q_base, k_base, v_base, do_base, s_ql, s_kl, s_vl, s_gl, Lq, Lk = _bwd_select(
        Qc, Kc, Vc, Qd, Kd, Vd, dOc, dOd,
        sqc_b, sqc_h, sqc_l, skc_b, skc_h, skc_l, svc_b, svc_h, svc_l,
        sqd_b, sqd_h, sqd_l, skd_b, skd_h, skd_l, svd_b, svd_h, svd_l,
        sgc_b, sgc_h, sgc_l, sgd_b, sgd_h, sgd_l,
        Lc, Lkc, Ld, Lkd, b, h, direction,
    )
    if direction == 0:
        lse_base = LSEc
        del_base = DELc
        dqa_base = DQAc
        dk_base = dKd
        dv_base = dVd
    else:
        lse_base = LSEd
        del_base = DELd
        dqa_base = DQAd
        dk_base = dKc
        dv_base = dVc
    start_n = pid * BLOCK_N
    if start_n >= Lk:
        return
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d[None, :] < HEAD_DIM
    row0 = bh.to(tl.int64) * Lq
    offs_n = start_n + tl.arange(0, BLOCK_N)
    n_valid = offs_n < Lk
    n_mask = n_valid[:, None] & d_ok
    k = tl.load(k_base + offs_n[:, None] * s_kl + offs_d[None, :], mask=n_mask, other=0.0)
    v = tl.load(v_base + offs_n[:, None] * s_vl + offs_d[None, :], mask=n_mask, other=0.0)
    if start_n + BLOCK_N <= Lk:  # a full key block: no score masking in the hot loop
        dk, dv = _atomic_loop(
            k, v, q_base, do_base, lse_base, del_base, dqa_base, s_ql, s_gl, Lq, row0, n_valid, d_ok, offs_d,
            qk_scale, sm_scale, HEAD_DIM, BLOCK_M, BLOCK_N, BLOCK_D, False, DOT_PREC,
        )
    else:
        dk, dv = _atomic_loop(
            k, v, q_base, do_base, lse_base, del_base, dqa_base, s_ql, s_gl, Lq, row0, n_valid, d_ok, offs_d,
            qk_scale, sm_scale, HEAD_DIM, BLOCK_M, BLOCK_N, BLOCK_D, True, DOT_PREC,
        )
    row_k = bh.to(tl.int64) * Lk + offs_n
    out_k = row_k[:, None] * HEAD_DIM + offs_d[None, :]
    tl.store(dk_base + out_k, (dk * sm_scale).to(dk_base.dtype.element_ty), mask=n_mask)
    tl.store(dv_base + out_k, dv.to(dv_base.dtype.element_ty), mask=n_mask)


@triton.jit(do_not_specialize=["Nc", "Nd"])
def cast_pair_kernel(Xc, Xd, Yc, Yd, Nc, Nd, BLOCK: tl.constexpr):
    """Y = X.to(Y.dtype) for two flat buffers in one launch (the atomic path's dQ accumulators)."""
    pid = tl.program_id(0)
    if tl.program_id(1) == 0:
        x_ptr = Xc
        y_ptr = Yc
        n = Nc
    else:
        x_ptr = Xd
        y_ptr = Yd
        n = Nd
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=mask).to(y_ptr.dtype.element_ty), mask=mask)
