"""Triton kernels of the fused shared cross-attention (both directions per launch) + thin launchers.

Direction 0 (c->d): queries q_c, keys/values k_d, v_d -> o_c, lse_c.
Direction 1 (d->c): queries q_d, keys/values k_c, v_c -> o_d, lse_d.
Grid axis 2 picks the direction, axis 1 the (batch, head), axis 0 the query (or key) block.

- `_fwd_kernel`: FlashAttention-2 forward, online softmax in the log2 domain, fp32 accumulation,
  saves the natural-log log-sum-exp rows ([B, H, L] fp32) for the backward.
- `_bwd_small_kernel`: the whole backward of one (b, h, direction) in ONE program when all queries
  and all keys fit one tile (<= 64 tokens, the last SSN stage): delta = rowsum(dO*O), P from the
  LSE, dV, dS, dQ and dK without atomics or a preprocess launch.
- `_bwd_preprocess_kernel` + `_bwd_kernel` ("general"): the FlashAttention-2 backward without
  atomics. Each program of `_bwd_kernel` computes dK/dV of one key block (looping over the queries)
  and then dQ of one query block (looping over the keys); two launches in all.
- `_bwd_preprocess_kernel` + `_bwd_atomic_kernel` (+ `_cast_pair_kernel` for fp16/bf16) ("atomic"):
  P is computed once per tile for dV, dK and a dQ partial added atomically into an fp32 accumulator
  (zeroed by the preprocess). Fewer exps/matmuls, atomics traffic instead; dQ sums in a
  nondeterministic order. With autotuning the faster of the two is timed once per shape and kept.
No path holds an L_q x L_k matrix in memory; each launch covers both directions.

Environment knobs (read per call): SSNBENCH_XATTN_AUTOTUNE=0 (fixed config table on CUDA),
SSNBENCH_XATTN_BWD_PATH=general|atomic (force the > 64-token backward path), SSNBENCH_XATTN_POLY_EXP=1
(the fixed forward config uses `_exp2_fma`, fp16/bf16; autotuning considers it anyway),
SSNBENCH_XATTN_TAILS=0 (full tiles for the ragged last blocks: the A/B of the tail tiles).

Tail tiles: the SSN stage token counts (3136, 784, 196, 49) are not multiples of the power-of-two
tiles. The forward and the general backward give the ragged last block of each loop (and the
program that owns the ragged last block) the smallest power-of-two tile >= 16 that covers it
(`_tail`), instead of a full masked tile.

Inputs may be strided (the block passes views of one QKV GEMM output); the only layout requirement
is a unit stride on the head dim and no unit stride elsewhere (the launchers copy otherwise: a unit
stride would be specialised to a constant and break the per-direction pointer select). Outputs are
contiguous. Block sizes are constexpr: autotuned on CUDA (keyed on token counts, head dim, dtype),
a fixed table under TRITON_INTERPRET=1 (and on CUDA with SSNBENCH_XATTN_AUTOTUNE=0).
"""

from __future__ import annotations

import collections
import math
import os
from functools import partial
from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton import knobs

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
SMALL_MAX_TOKENS = 64  # single-tile fused backward up to this many queries and keys

#: Kernel launches per kind; tests use it to prove the Triton path ran (no silent fallback).
LAUNCHES: collections.Counter[str] = collections.Counter()
#: Autotune results seen in this process: one record per (kernel, key) with every config's time.
TUNING_LOG: list[dict[str, Any]] = []

_NO_SPEC = ["Lc", "Lkc", "Ld", "Lkd"]


# ----------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------


@triton.jit
def _exp2_fma(x):
    """2^x for x <= 0 on the FMA/integer pipes instead of the MUFU (whose 16 exps/clk/SM bound the
    forward at head dim 32): Cody-Waite split x = j + f, f in [-1/2, 1/2], a degree-3 minimax
    polynomial for 2^f (max relative error 7.5e-5, far below fp16/bf16 rounding), and j added to
    the exponent bits. x is clamped at -125 (2^-125 ~ 2e-38 stands in for 0)."""
    x = tl.maximum(x, -125.0)
    t = x + 12582912.0  # 1.5 * 2^23: the low mantissa bits of t now hold round(x)
    f = x - (t - 12582912.0)
    p = 0.05517083778977394 * f + 0.24260935187339783
    p = p * f + 0.6932609677314758
    p = p * f + 0.9999281764030457
    bits = p.to(tl.int32, bitcast=True) + (t.to(tl.int32, bitcast=True) << 23)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _load_kv(
    k_ptrs, v_ptrs, start_n, Lk, s_kl, s_vl, offs_n, offs_d,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, MASK_N: tl.constexpr,
):
    if MASK_N:
        kv_mask = (start_n + offs_n)[:, None] < Lk
        if BLOCK_D != HEAD_DIM:
            kv_mask = kv_mask & (offs_d[None, :] < HEAD_DIM)
        k = tl.load(k_ptrs + start_n * s_kl, mask=kv_mask, other=0.0)
        v = tl.load(v_ptrs + start_n * s_vl, mask=kv_mask, other=0.0)
    elif BLOCK_D != HEAD_DIM:
        k = tl.load(k_ptrs + start_n * s_kl, mask=offs_d[None, :] < HEAD_DIM, other=0.0)
        v = tl.load(v_ptrs + start_n * s_vl, mask=offs_d[None, :] < HEAD_DIM, other=0.0)
    else:
        k = tl.load(k_ptrs + start_n * s_kl)
        v = tl.load(v_ptrs + start_n * s_vl)
    return k, v


@triton.jit
def _scores(q, k, start_n, Lk, offs_n, MASK_N: tl.constexpr, DOT_PREC: tl.constexpr):
    qk = tl.dot(q, tl.trans(k), input_precision=DOT_PREC)
    if MASK_N:
        qk = tl.where((start_n + offs_n)[None, :] < Lk, qk, float("-inf"))
    return qk


@triton.jit
def _fwd_step(
    acc, l_i, m_i, q, k_ptrs, v_ptrs, start_n, Lk, s_kl, s_vl, qk_scale, offs_n, offs_d,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, MASK_N: tl.constexpr, DOT_PREC: tl.constexpr,
    POLY_EXP: tl.constexpr, STEP_N: tl.constexpr,
):
    """One key block of the online softmax (log2 domain). With POLY_EXP the block is two halves of
    STEP_N keys: the first exponentiated on the MUFU, the second by `_exp2_fma`, sharing one
    max/rescale update (two half-width dots each, no register shuffles)."""
    k, v = _load_kv(k_ptrs, v_ptrs, start_n, Lk, s_kl, s_vl, offs_n, offs_d, HEAD_DIM, BLOCK_D, MASK_N)
    qk = _scores(q, k, start_n, Lk, offs_n, MASK_N, DOT_PREC)
    if POLY_EXP:
        k2, v2 = _load_kv(
            k_ptrs, v_ptrs, start_n + STEP_N, Lk, s_kl, s_vl, offs_n, offs_d, HEAD_DIM, BLOCK_D, MASK_N
        )
        qk2 = _scores(q, k2, start_n + STEP_N, Lk, offs_n, MASK_N, DOT_PREC)
        # scale > 0, so max(qk) * scale == max(qk * scale); the scale folds into one FMA per score
        m_ij = tl.maximum(m_i, tl.maximum(tl.max(qk, 1), tl.max(qk2, 1)) * qk_scale)
        p = tl.math.exp2(qk * qk_scale - m_ij[:, None])
        p2 = _exp2_fma(qk2 * qk_scale - m_ij[:, None])
        alpha = tl.math.exp2(m_i - m_ij)
        l_i = l_i * alpha + (tl.sum(p, 1) + tl.sum(p2, 1))
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=DOT_PREC)
        acc = tl.dot(p2.to(v2.dtype), v2, acc, input_precision=DOT_PREC)
    else:
        m_ij = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        p = tl.math.exp2(qk * qk_scale - m_ij[:, None])
        alpha = tl.math.exp2(m_i - m_ij)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=DOT_PREC)
    return acc, l_i, m_ij


@triton.jit
def _fwd_rows(
    q_base, k_base, v_base, o_base, lse_base, bh, start_row, Lq, Lk, s_ql, s_kl, s_vl, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
    TAIL_N: tl.constexpr, DOT_PREC: tl.constexpr, POLY_EXP: tl.constexpr,
):
    """ROWS query rows from `start_row` against all Lk keys: full BLOCK_N key blocks, then the
    ragged rest (Lk % BLOCK_N keys) as one masked block of TAIL_N <= BLOCK_N keys."""
    STEP_N: tl.constexpr = BLOCK_N // 2 if POLY_EXP else BLOCK_N
    offs_m = start_row + tl.arange(0, ROWS)
    offs_n = tl.arange(0, STEP_N)
    offs_d = tl.arange(0, BLOCK_D)
    q_mask = offs_m[:, None] < Lq
    if BLOCK_D != HEAD_DIM:
        q_mask = q_mask & (offs_d[None, :] < HEAD_DIM)
    q = tl.load(q_base + offs_m[:, None] * s_ql + offs_d[None, :], mask=q_mask, other=0.0)
    k_ptrs = k_base + offs_n[:, None] * s_kl + offs_d[None, :]
    v_ptrs = v_base + offs_n[:, None] * s_vl + offs_d[None, :]

    m_i = tl.full([ROWS], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([ROWS], dtype=tl.float32)
    acc = tl.zeros([ROWS, BLOCK_D], dtype=tl.float32)
    n_full = (Lk // BLOCK_N) * BLOCK_N
    for start_n in range(0, n_full, BLOCK_N):
        acc, l_i, m_i = _fwd_step(
            acc, l_i, m_i, q, k_ptrs, v_ptrs, start_n, Lk, s_kl, s_vl, qk_scale, offs_n, offs_d,
            HEAD_DIM, BLOCK_D, False, DOT_PREC, POLY_EXP, STEP_N,
        )
    if n_full < Lk:
        if TAIL_N == BLOCK_N:
            acc, l_i, m_i = _fwd_step(
                acc, l_i, m_i, q, k_ptrs, v_ptrs, n_full, Lk, s_kl, s_vl, qk_scale, offs_n, offs_d,
                HEAD_DIM, BLOCK_D, True, DOT_PREC, POLY_EXP, STEP_N,
            )
        else:  # a narrower last block: no exps or matmul columns spent on keys past Lk
            offs_t = tl.arange(0, TAIL_N)
            acc, l_i, m_i = _fwd_step(
                acc, l_i, m_i, q, k_base + offs_t[:, None] * s_kl + offs_d[None, :],
                v_base + offs_t[:, None] * s_vl + offs_d[None, :], n_full, Lk, s_kl, s_vl, qk_scale,
                offs_t, offs_d, HEAD_DIM, BLOCK_D, True, DOT_PREC, False, TAIL_N,
            )
    acc = acc / l_i[:, None]
    lse = (m_i + tl.math.log2(l_i)) * 0.6931471805599453
    row = bh.to(tl.int64) * Lq + offs_m
    tl.store(lse_base + row, lse, mask=offs_m < Lq)
    tl.store(o_base + row[:, None] * HEAD_DIM + offs_d[None, :], acc.to(o_base.dtype.element_ty), mask=q_mask)


@triton.jit(do_not_specialize=_NO_SPEC)
def _fwd_kernel(
    Qc, Kc, Vc, Qd, Kd, Vd, Oc, Od, LSEc, LSEd,
    sqc_b, sqc_h, sqc_l, skc_b, skc_h, skc_l, svc_b, svc_h, svc_l,
    sqd_b, sqd_h, sqd_l, skd_b, skd_h, skd_l, svd_b, svd_h, svd_l,
    H, Lc, Lkc, Ld, Lkd, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    TAIL_M: tl.constexpr, TAIL_N: tl.constexpr, DOT_PREC: tl.constexpr, POLY_EXP: tl.constexpr = False,
):
    """TAIL_M / TAIL_N (<= BLOCK_M / BLOCK_N, set by `_tails`): the tile of the last, ragged
    query block and key block. The SSN stage token counts (49, 196, 784, 3136) are not multiples of
    the power-of-two tiles, and a full tile over a 4-row or 4-key remainder would cost as much as a
    full block."""
    start_m = tl.program_id(0)
    bh = tl.program_id(1)
    direction = tl.program_id(2)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    if direction == 0:  # clinic queries attend to derm keys/values
        q_base = Qc + b * sqc_b + h * sqc_h
        k_base = Kd + b * skd_b + h * skd_h
        v_base = Vd + b * svd_b + h * svd_h
        s_ql = sqc_l
        s_kl = skd_l
        s_vl = svd_l
        o_base = Oc
        lse_base = LSEc
        Lq = Lc
        Lk = Lkd
    else:  # derm queries attend to clinic keys/values
        q_base = Qd + b * sqd_b + h * sqd_h
        k_base = Kc + b * skc_b + h * skc_h
        v_base = Vc + b * svc_b + h * svc_h
        s_ql = sqd_l
        s_kl = skc_l
        s_vl = svc_l
        o_base = Od
        lse_base = LSEd
        Lq = Ld
        Lk = Lkc
    start_row = start_m * BLOCK_M
    if start_row >= Lq:
        return
    if TAIL_M != BLOCK_M:
        if start_row + BLOCK_M > Lq:
            _fwd_rows(
                q_base, k_base, v_base, o_base, lse_base, bh, start_row, Lq, Lk, s_ql, s_kl, s_vl, qk_scale,
                HEAD_DIM, BLOCK_D, TAIL_M, BLOCK_N, TAIL_N, DOT_PREC, POLY_EXP,
            )
        else:
            _fwd_rows(
                q_base, k_base, v_base, o_base, lse_base, bh, start_row, Lq, Lk, s_ql, s_kl, s_vl, qk_scale,
                HEAD_DIM, BLOCK_D, BLOCK_M, BLOCK_N, TAIL_N, DOT_PREC, POLY_EXP,
            )
    else:
        _fwd_rows(
            q_base, k_base, v_base, o_base, lse_base, bh, start_row, Lq, Lk, s_ql, s_kl, s_vl, qk_scale,
            HEAD_DIM, BLOCK_D, BLOCK_M, BLOCK_N, TAIL_N, DOT_PREC, POLY_EXP,
        )


@triton.jit(do_not_specialize=_NO_SPEC)
def _bwd_preprocess_kernel(
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


@triton.jit(do_not_specialize=_NO_SPEC)
def _bwd_small_kernel(
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


@triton.jit(do_not_specialize=_NO_SPEC)
def _bwd_kernel(
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
    TAIL_* tiles (`_tails`) serve the ragged last block of each of the four loops/blocks."""
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


@triton.jit(do_not_specialize=_NO_SPEC)
def _bwd_atomic_kernel(
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
def _cast_pair_kernel(Xc, Xd, Yc, Yd, Nc, Nd, BLOCK: tl.constexpr):
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


# ----------------------------------------------------------------------------------------------
# Configurations: autotuned on CUDA, a fixed table in the interpreter
# ----------------------------------------------------------------------------------------------


def _np2(n: int, lo: int = 16) -> int:
    """Next power of two >= max(n, lo). Plain int arithmetic: triton.next_power_of_2 is a
    constexpr_function in Triton 3.6, several microseconds per call on the hot path."""
    n = max(int(n), lo)
    return 1 << (n - 1).bit_length()


def _tail(block: int, *lengths: int) -> int:
    """The tile of the ragged last block: the next power of two (>= 16) above the largest remainder
    `length % block` of the directions, or `block` when no remainder needs less (or there is none)."""
    rest = max(n % block for n in lengths)
    return min(block, _np2(rest)) if rest else block


def tails_enabled() -> bool:
    """SSNBENCH_XATTN_TAILS=0 gives the ragged last blocks full tiles (the benchmark's A/B)."""
    return os.environ.get("SSNBENCH_XATTN_TAILS", "1") != "0"


def _tails(cfg: dict[str, Any], lc: int, ld: int, lkc: int, lkd: int) -> dict[str, int]:
    """TAIL_* for every BLOCK_M* / BLOCK_N* tile of a config (forward or backward): M tiles run over
    the queries (lc, ld), N tiles over the keys (lkc, lkd)."""
    on = tails_enabled()
    out = {}
    for name, block in cfg.items():
        if name.startswith(("BLOCK_M", "BLOCK_N")):
            lengths = (lc, ld) if name[6] == "M" else (lkc, lkd)
            out[name.replace("BLOCK_", "TAIL_")] = _tail(block, *lengths) if on else block
    return out


def _tail_heuristics(blocks: tuple[str, ...]) -> dict[str, Any]:
    """triton.heuristics values: each TAIL_* from the candidate's tiles and the launch's token counts."""
    def one(name: str) -> Any:
        return lambda a: _tails({b: a[b] for b in blocks}, a["Lc"], a["Ld"], a["Lkc"], a["Lkd"])[name]

    return {b.replace("BLOCK_", "TAIL_"): one(b.replace("BLOCK_", "TAIL_")) for b in blocks}


def _autotune_enabled() -> bool:
    return not INTERPRET and os.environ.get("SSNBENCH_XATTN_AUTOTUNE", "1") != "0"


_FWD_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "POLY_EXP": poly}, num_warps=w, num_stages=s)
    for bm, bn, w, s, poly in [
        (32, 32, 2, 2, False), (32, 64, 2, 2, False), (64, 64, 2, 2, False), (64, 64, 4, 2, False),
        (64, 64, 4, 3, False), (64, 128, 4, 3, False), (128, 64, 4, 3, False), (128, 64, 8, 3, False),
        (128, 128, 8, 3, False), (64, 64, 4, 4, False), (128, 64, 4, 4, False), (64, 32, 4, 3, False),
        (32, 64, 4, 2, False),
        # small stages (49/196 tokens): more programs per head (BLOCK_M 16/32) and all keys of a
        # head in one masked tile (BLOCK_N 256 when there are at most 256 keys; see _prune_fwd)
        (16, 64, 2, 2, False), (32, 128, 4, 2, False), (16, 256, 4, 2, False), (32, 256, 4, 2, False),
        (32, 256, 8, 2, False),
        # half of the exps on the FMA pipes (fp16/bf16, many keys): see _exp2_fma
        (64, 128, 4, 3, True), (128, 128, 8, 3, True), (128, 64, 8, 3, True),
    ]
]
_BWD_CONFIGS = [
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
_ATOMIC_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
    for bm, bn, w, s in [(32, 64, 4, 2), (64, 64, 4, 3), (32, 128, 4, 3), (64, 128, 8, 3), (32, 128, 8, 2)]
]
_SMALL_CONFIGS = [triton.Config({}, num_warps=w, num_stages=1) for w in (2, 4, 8)]


def _prune_fwd(configs: list, named_args: dict, **kwargs: Any) -> list:
    lq = max(named_args["Lc"], named_args["Ld"])
    lk = max(named_args["Lkc"], named_args["Lkd"])
    bm_max, bn_max = _np2(lq, 32), _np2(lk, 32)
    keep = [c for c in configs if c.kwargs["BLOCK_M"] <= bm_max and c.kwargs["BLOCK_N"] <= bn_max]
    if lk > 256:  # a 256-key tile only pays as a single pass over all keys
        keep = [c for c in keep if c.kwargs["BLOCK_N"] < 256]
    if lq > 256:  # 16-query tiles only for the small stages (more programs); big ones have plenty
        keep = [c for c in keep if c.kwargs["BLOCK_M"] > 16]
    if named_args["Qc"].dtype == torch.float32 or lk < 256:  # fp32 keeps exact exps; few keys: no gain
        keep = [c for c in keep if not c.kwargs["POLY_EXP"]]
    if kwargs.get("HEAD_DIM", named_args.get("HEAD_DIM", 64)) > 64:  # big tiles spill at D=128
        keep = [c for c in keep if c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] <= 128 * 64] or keep
    return keep or configs[:1]


def _prune_atomic(configs: list, named_args: dict, **kwargs: Any) -> list:
    lq = max(named_args["Lc"], named_args["Ld"])
    lk = max(named_args["Lkc"], named_args["Lkd"])
    keep = [c for c in configs if c.kwargs["BLOCK_M"] <= _np2(lq, 32) and c.kwargs["BLOCK_N"] <= _np2(lk, 32)]
    if kwargs.get("HEAD_DIM", named_args.get("HEAD_DIM", 64)) > 64:
        keep = [c for c in keep if c.kwargs["BLOCK_N"] <= 64] or keep
    return keep or configs[:1]


def _prune_bwd(configs: list, named_args: dict, **kwargs: Any) -> list:
    lq = max(named_args["Lc"], named_args["Ld"])
    lk = max(named_args["Lkc"], named_args["Lkd"])
    keep = [
        c for c in configs
        if max(c.kwargs["BLOCK_M2"], c.kwargs["BLOCK_M1"]) <= _np2(lq, 32)
        and max(c.kwargs["BLOCK_N1"], c.kwargs["BLOCK_N2"]) <= _np2(lk, 32)
    ]
    if kwargs.get("HEAD_DIM", named_args.get("HEAD_DIM", 64)) > 64:
        keep = [c for c in keep if c.kwargs["BLOCK_N1"] <= 64 and c.kwargs["BLOCK_M2"] <= 64] or keep
    return keep or configs[:1]


_AUTOTUNED: dict[str, Any] = {}
_KEYS = ["Lc", "Lkc", "Ld", "Lkd", "HEAD_DIM"]


def _tuned(name: str) -> Any:
    """The autotuned wrapper of a kernel (built lazily, CUDA only)."""
    if name not in _AUTOTUNED:
        fn, configs, prune = {
            "fwd": (_fwd_kernel, _FWD_CONFIGS, _prune_fwd),
            "bwd": (_bwd_kernel, _BWD_CONFIGS, _prune_bwd),
            "bwd_atomic": (_bwd_atomic_kernel, _ATOMIC_CONFIGS, _prune_atomic),
            "bwd_small": (_bwd_small_kernel, _SMALL_CONFIGS, None),
        }[name]
        prune_by = {"early_config_prune": prune} if prune else None
        # the atomic kernel accumulates dQ: zero the accumulators before every timed run
        reset = ["DQAc", "DQAd"] if name == "bwd_atomic" else None
        if name == "fwd":  # tails follow from each candidate's tiles and the token counts
            fn = triton.heuristics(_tail_heuristics(("BLOCK_M", "BLOCK_N")))(fn)
        elif name == "bwd":
            fn = triton.heuristics(_tail_heuristics(("BLOCK_M1", "BLOCK_N1", "BLOCK_M2", "BLOCK_N2")))(fn)
        _AUTOTUNED[name] = triton.autotune(
            configs=configs, key=_KEYS, prune_configs_by=prune_by, reset_to_zero=reset
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


_BEST: dict[tuple, dict[str, Any]] = {}  # (kernel, key) -> tuned launch kwargs
_WARMUP_ONLY: dict[str, list[dict[str, Any]]] | None = None  # set by precompile workers

#: Compiled kernels launched directly, skipping Triton's per-call JIT work (see `_launch`).
_DIRECT: dict[tuple, tuple[Any, ...]] = {}
_TUNABLE = frozenset(("fwd", "bwd", "bwd_atomic", "bwd_small"))
#: Launches that took the direct path (tests check that it runs and stays correct).
DIRECT_LAUNCHES: collections.Counter[str] = collections.Counter()
_I32_MAX = 2**31 - 1


def _direct_enabled() -> bool:
    return not INTERPRET and os.environ.get("SSNBENCH_XATTN_DIRECT_LAUNCH", "1") != "0"


def int_spec(strides: list[int], H: int) -> tuple[bool, bool] | None:
    """What Triton's JIT specialises our integer arguments on, in two flags, or None when the
    strides are not all multiples of 16 (then every launch goes through the JIT).

    The token counts are `do_not_specialize` (they only differ in i32/i64, and all our integers are
    below 2**31: `_check_inputs`); each stride is specialised on ==1 and %16, which all strides
    divisible by 16 settle at once (gcd); H on ==1 and %16."""
    if math.gcd(*strides) % 16 or max(strides) > _I32_MAX:
        return None
    return H == 1, H % 16 == 0


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


def _launch(name: str, kernel: Any, grid: Any, tensors: tuple, scalars: tuple, meta: dict[str, Any],
            key: tuple, fixed: Any, spec: tuple | None = None, derive: Any = None) -> None:
    """Launch kernel(*tensors, *scalars) with the autotuned config for `key` (or `fixed()`, the
    fixed config, when not autotuning or for kernels that are never tuned). `derive(cfg)` adds the
    constexprs that follow from a config (the forward's tails; the autotuned wrapper has them as
    `triton.heuristics`).

    Triton's `JITFunction.run` re-derives the specialisation and cache key of all ~50 arguments on
    every call, which costs more host time than the small SSN stages' kernels take on the GPU. So the
    first launch of a (kernel, shape key, config, specialisation) goes through the JIT and keeps the
    compiled kernel; later ones call its launcher directly. The specialisation is everything Triton
    keys a compiled kernel on: dtypes and constexprs (fixed by `name` and `key`), 16-byte alignment
    of every pointer (`_aligned`; any misaligned pointer takes the JIT) and the integer flags of
    `int_spec` (None: always the JIT). SSNBENCH_XATTN_DIRECT_LAUNCH=0 turns this off.
    """
    if _WARMUP_ONLY is not None:  # precompile(): compile the requested configs, launch nothing
        for cfg in _WARMUP_ONLY.get(name, ()):
            extra = derive(cfg) if derive else {}
            kernel.warmup(*tensors, *scalars, grid=grid(cfg), **meta, **cfg, **extra)
        return
    tuning = name in _TUNABLE and _autotune_enabled()
    if tuning:
        cfg = _BEST.get((name, key))
        if cfg is None:  # first call for this shape: tune (launches the best config once)
            tuned = _tuned(name)
            tuned[grid](*tensors, *scalars, **meta)
            _record_tuning(name, tuned, key)
            best = tuned.best_config
            _BEST[(name, key)] = {**best.kwargs, "num_warps": best.num_warps, "num_stages": best.num_stages}
            return
    else:
        cfg = fixed()
    g = grid(cfg)
    if spec is None or not _direct_enabled() or not _hooks_idle() or not _aligned(tensors):
        kernel[g](*tensors, *scalars, **meta, **cfg, **(derive(cfg) if derive else {}))
        return
    device = _current_device()
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
    stream = _current_stream(device)
    run(g[0], g[1], g[2], stream, function, packed, None, None, None, *tensors, *scalars, *tail)
    DIRECT_LAUNCHES[name] += 1


def _aligned(tensors: tuple) -> bool:
    """Every pointer 16-byte aligned. If one is not, which one matters to Triton's specialisation,
    so such launches always take the JIT."""
    ptrs = 0
    for t in tensors:
        ptrs |= t.data_ptr()
    return not ptrs & 15


def _hooks_idle() -> bool:
    """No launch hooks installed (a profiler such as proton adds some): then the direct launch may
    pass None for the hooks and their metadata. Triton 3.6+ keeps them as (empty) HookChains."""
    rt = knobs.runtime
    hooks = (rt.launch_enter_hook, rt.launch_exit_hook)
    return all(h is None or not getattr(h, "calls", True) for h in hooks)


def _current_device() -> int:
    return torch._C._cuda_getDevice()  # torch.cuda.current_device() minus its Python wrapper


def _current_stream(device: int) -> int:
    return torch._C._cuda_getCurrentRawStream(device)


def _fixed_fwd(lq: int, lk: int, d: int, dtype: torch.dtype) -> dict[str, Any]:
    """Fixed forward config; SSNBENCH_XATTN_POLY_EXP=1 turns on `_exp2_fma` for fp16/bf16 (tests)."""
    poly = os.environ.get("SSNBENCH_XATTN_POLY_EXP", "0") == "1" and dtype != torch.float32
    if INTERPRET:  # small blocks: tiny test shapes still cover several blocks, the masks and the tails
        return {"BLOCK_M": 32, "BLOCK_N": 32, "POLY_EXP": poly}
    if poly:
        return {"BLOCK_M": 128, "BLOCK_N": 128, "POLY_EXP": True, "num_warps": 8, "num_stages": 3}
    if lq <= 64 and lk <= 64:
        return {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2}
    if d > 64:
        return {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3}
    return {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8, "num_stages": 3}


def _fixed_atomic(lq: int, lk: int, d: int) -> dict[str, Any]:
    if INTERPRET:
        return {"BLOCK_M": 16, "BLOCK_N": 16}
    if d > 64:  # spill-free at D=128 (ptxas, sm_90)
        return {"BLOCK_M": 32, "BLOCK_N": 128, "num_warps": 8, "num_stages": 2}
    if d > 32:  # spill-free at D=64
        return {"BLOCK_M": 64, "BLOCK_N": 128, "num_warps": 8, "num_stages": 3}
    return {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3}


def _fixed_bwd(lq: int, lk: int, d: int) -> dict[str, Any]:
    if INTERPRET:
        return {"BLOCK_M1": 16, "BLOCK_N1": 16, "BLOCK_M2": 16, "BLOCK_N2": 16}
    if d > 64 or (d > 32 and max(lq, lk) > 256):  # no register spills at D=128 / D=64 (ptxas, sm_90)
        blocks = {"BLOCK_M1": 64, "BLOCK_N1": 64, "BLOCK_M2": 64, "BLOCK_N2": 64}
        return {**blocks, "num_warps": 8, "num_stages": 2}
    if max(lq, lk) <= 256:
        blocks = {"BLOCK_M1": 32, "BLOCK_N1": 64, "BLOCK_M2": 64, "BLOCK_N2": 32}
        return {**blocks, "num_warps": 4, "num_stages": 2}
    blocks = {"BLOCK_M1": 32, "BLOCK_N1": 128, "BLOCK_M2": 128, "BLOCK_N2": 32}
    return {**blocks, "num_warps": 4, "num_stages": 3}


# ----------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------


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


def _dot_prec(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


_META: dict[tuple[int, torch.dtype], dict[str, Any]] = {}


def _meta(d: int, dtype: torch.dtype) -> dict[str, Any]:
    """Constexpr kwargs shared by the attention kernels (cached: built once per head dim/dtype)."""
    meta = _META.get((d, dtype))
    if meta is None:
        meta = _META[(d, dtype)] = {"HEAD_DIM": d, "BLOCK_D": _np2(d), "DOT_PREC": _dot_prec(dtype)}
    return meta


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
    _launch(
        "fwd", _fwd_kernel, lambda m: ((lq + m["BLOCK_M"] - 1) // m["BLOCK_M"], B * H, 2),
        (q_c, k_c, v_c, q_d, k_d, v_d, o_c, o_d, lse_c, lse_d),
        (*strides, H, Lc, Lkc, Ld, Lkd, scale * LOG2E),
        _meta(D, dt), (Lc, Lkc, Ld, Lkd, D, dt, tails_enabled()),
        partial(_fixed_fwd, lq, max(Lkc, Lkd), D, dt), int_spec(strides, H),
        partial(_tails, lc=Lc, ld=Ld, lkc=Lkc, lkd=Lkd),
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
    meta = _meta(D, dt)
    common = (*strides, H, Lc, Lkc, Ld, Lkd, scale * LOG2E, scale)
    key = (Lc, Lkc, Ld, Lkd, D, dt, tails_enabled())
    spec = int_spec(strides, H)
    if path == "small":
        LAUNCHES["bwd_small"] += 1
        small_meta = {**meta, "BLOCK_M": _np2(lq), "BLOCK_N": _np2(lk)}
        fixed = {"num_warps": 8 if D > 64 else 4 if lq * lk > 1024 else 2, "num_stages": 1}
        _launch(
            "bwd_small", _bwd_small_kernel, lambda m: (1, B * H, 2),
            (q_c, k_c, v_c, q_d, k_d, v_d, do_c, do_d, o_c, o_d, lse_c, lse_d, *grads), common,
            small_meta, key, lambda: fixed, spec,
        )
        return tuple(grads)  # type: ignore[return-value]
    if path is None:
        path = os.environ.get("SSNBENCH_XATTN_BWD_PATH") or None
    if path not in (None, "general", "atomic"):
        raise ValueError(f"unknown backward path {path!r}; expected 'small', 'general' or 'atomic'")

    delta_c, delta_d = torch.empty(lse_c.numel() + lse_d.numel(), device=dev).split(
        (lse_c.numel(), lse_d.numel())
    )
    fp32_out = dt == torch.float32
    pre_block = 64 if not INTERPRET else 16
    pre_spec = int_spec(strides[-6:], H)

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
        _launch(
            "bwd_pre_atomic" if atomic else "bwd_pre", _bwd_preprocess_kernel,
            lambda m: ((lq + pre_block - 1) // pre_block, B * H, 2),
            (o_c, o_d, do_c, do_d, delta_c, delta_d, dqa_c, dqa_d), (*strides[-6:], H, Lc, Ld),
            pre_meta, key, dict, pre_spec,
        )
        if not atomic:
            LAUNCHES["bwd"] += 1

            def grid(m: dict[str, Any]) -> tuple[int, int, int]:
                return (max(triton.cdiv(lk, m["BLOCK_N1"]), triton.cdiv(lq, m["BLOCK_M2"])), B * H, 2)

            _launch(
                "bwd", _bwd_kernel, grid,
                (q_c, k_c, v_c, q_d, k_d, v_d, do_c, do_d, lse_c, lse_d, delta_c, delta_d, *grads), common,
                meta, key, partial(_fixed_bwd, lq, lk, D), spec,
                partial(_tails, lc=Lc, ld=Ld, lkc=Lkc, lkd=Lkd),
            )
            return
        LAUNCHES["bwd_atomic"] += 1
        _launch(
            "bwd_atomic", _bwd_atomic_kernel, lambda m: (triton.cdiv(lk, m["BLOCK_N"]), B * H, 2),
            (q_c, k_c, v_c, q_d, k_d, v_d, do_c, do_d, lse_c, lse_d, delta_c, delta_d,
             dqa_c, dk_c, dv_c, dqa_d, dk_d, dv_d), common,
            meta, key, partial(_fixed_atomic, lq, lk, D), spec,
        )
        if not fp32_out:
            LAUNCHES["bwd_cast"] += 1
            n = max(dq_c.numel(), dq_d.numel())
            _cast_pair_kernel[(triton.cdiv(n, 1024), 2)](
                dqa_c, dqa_d, dq_c, dq_d, dq_c.numel(), dq_d.numel(), BLOCK=1024
            )

    if _WARMUP_ONLY is not None:
        run("general")
        run("atomic")
    else:
        run(path or _choose_path(key, run, lq, lk, D))
    return tuple(grads)  # type: ignore[return-value]


DEFAULT_LARGE_PATH = "general"


def _choose_path(key: tuple, run: Any, lq: int, lk: int, d: int) -> str:
    """general (two loops, no atomics) or atomic (P once, dQ by fp32 atomics) for this shape: timed
    once per key when autotuning (each path autotuned first), else DEFAULT_LARGE_PATH."""
    if not _autotune_enabled():
        return DEFAULT_LARGE_PATH
    key = key[:-1]  # without the tails knob: the tails A/B compares the same path
    best = _BEST.get(("bwd_path", key))
    if best is None:
        from triton.testing import do_bench

        times = {}
        for which in ("general", "atomic"):
            run(which)  # autotunes that path's kernel
            times[which] = float(do_bench(lambda w=which: run(w), warmup=5, rep=25, return_mode="median"))
        best = {"path": min(times, key=times.get)}
        _BEST[("bwd_path", key)] = best
        TUNING_LOG.append({"kernel": "bwd_path", "key": [str(k) for k in key], "best": best["path"],
                           "timings_ms": times})
    return best["path"]


def _config_kwargs(cfg: Any) -> dict[str, Any]:
    return {**cfg.kwargs, "num_warps": cfg.num_warps, "num_stages": cfg.num_stages}


def _candidates() -> dict[str, list[Any]]:
    return {
        "fwd": _FWD_CONFIGS, "bwd": _BWD_CONFIGS, "bwd_atomic": _ATOMIC_CONFIGS, "bwd_small": _SMALL_CONFIGS,
    }


#: SSN stage token counts (224x224 input, strides 4/8/16/32): the forward's tails are compiled for these
STAGE_TOKENS = (3136, 784, 196, 49)


def _precompile_jobs(dims: tuple[int, ...], lengths: tuple[int, ...] = STAGE_TOKENS,
                     ) -> list[tuple[int, str, int, int]]:
    """(head dim, kernel, candidate index, token count) to compile. Token counts are not specialised,
    but the forward's tail tiles follow from them: one forward job per distinct (candidate, tails)."""
    jobs = []
    for d in dims:
        for name, cfgs in _candidates().items():
            for i, cfg in enumerate(cfgs):
                if name != "fwd":
                    jobs.append((d, name, i, 49 if name == "bwd_small" else 256))
                    continue
                seen = set()
                for n in lengths:
                    tails = tuple(_tails(cfg.kwargs, n, n, n, n).values())
                    if tails not in seen:
                        seen.add(tails)
                        jobs.append((d, name, i, n))
    return jobs


def _precompile_worker(jobs: list[tuple[int, str, int, int]], dtype_name: str, heads: int,
                       errors: list[str] | None = None) -> int:
    """Compile (never run) the given autotune candidates; Triton's disk cache keeps the binaries."""
    global _WARMUP_ONLY
    dtype = getattr(torch, dtype_name)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    configs = _candidates()
    done = 0
    for d, name, i, tokens in jobs:
        _WARMUP_ONLY = {name: [_config_kwargs(configs[name][i])]}
        x = [torch.randn(2, heads, tokens, d, device=device, dtype=dtype) for _ in range(6)]
        scale = d**-0.5
        try:
            if name == "fwd":
                forward(*x, scale)
            else:
                o = [torch.randn_like(x[0]), torch.randn_like(x[3])]
                lse = [torch.zeros(2, heads, tokens, device=device) for _ in range(2)]
                backward(*o, *x, *o, *lse, scale, path="small" if name == "bwd_small" else None)
            done += 1
        except Exception as err:  # a config that does not compile (out of resources) is the autotuner's call
            if errors is not None and len(errors) < 3:
                errors.append(f"{name}[{i}] D={d}: {type(err).__name__}: {str(err).splitlines()[0][:160]}")
    _WARMUP_ONLY = None
    return done


def precompile(dims: tuple[int, ...] = (32, 64), dtype: torch.dtype = torch.bfloat16, heads: int = 8,
               workers: int = 8, timeout: float = 240.0, lengths: tuple[int, ...] = STAGE_TOKENS,
               ) -> dict[str, Any]:
    """Compile every autotune candidate for these head dims (and the forward's tails at these token
    counts) in `workers` processes, so the autotuner finds them in Triton's disk cache (compiling is
    CPU-bound; the lent GPU box has 16 cores). Best effort: the workers are plain subprocesses (no
    multiprocessing re-import of a CLI __main__)."""
    import json
    import subprocess
    import sys
    import time

    jobs = _precompile_jobs(dims, tuple(lengths))
    chunks = [c for c in (jobs[i::workers] for i in range(workers)) if c]
    code = "import sys; from ssnbench.kernels import shared_xattn as s; s._precompile_main(sys.argv[1])"
    name = str(dtype).split(".")[-1]
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen([sys.executable, "-c", code, json.dumps([c, name, heads])],
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
    return {"jobs": len(jobs), "compiled": done, "seconds": time.perf_counter() - t0, "errors": errors}


def _precompile_main(arg: str) -> None:
    import json

    jobs, dtype_name, heads = json.loads(arg)
    errors: list[str] = []
    done = _precompile_worker([tuple(j) for j in jobs], dtype_name, heads, errors)
    print(json.dumps({"done": done, "errors": errors}), flush=True)


def flops_forward(B: int, H: int, Lc: int, Ld: int, Lkc: int, Lkd: int, D: int) -> float:
    """FLOPs (2 per multiply-add) of the forward, both directions: 4·B·H·Lq·Lk·D each."""
    return 4.0 * B * H * D * (Lc * Lkd + Ld * Lkc)


__all__ = [
    "INTERPRET", "LAUNCHES", "STAGE_TOKENS", "TUNING_LOG", "backward", "flops_forward", "forward",
    "precompile",
]
