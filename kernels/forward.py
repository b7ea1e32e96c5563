"""Forward kernel of the fused shared cross-attention: both directions in one launch.

Direction 0 (c->d): queries q_c, keys/values k_d, v_d -> o_c, lse_c.
Direction 1 (d->c): queries q_d, keys/values k_c, v_c -> o_d, lse_d.
Grid axis 2 picks the direction, axis 1 the (batch, head), axis 0 the query block.

What changed from FlashAttention-2's forward (Triton tutorial 06):
- one launch serves both directions (each program selects its pointers by `tl.program_id(2)`);
- token counts are runtime values that differ per direction and are never specialised on
  (`NO_SPEC`), so one binary serves every SSN stage;
- tail tiles: the SSN stage token counts (3136, 784, 196, 49) are not multiples of the power-of-two
  tiles, so the ragged last query block and key block get the smallest power-of-two tile >= 16 that
  covers them (TAIL_M / TAIL_N, derived on the host by `configs.tails`), not a full masked tile;
- POLY_EXP: half of the exps of a key block on the FMA pipes (`_exp2_fma`) instead of the MUFU,
  whose 16 exps/clk/SM bound the forward at head dim 32 (fp16/bf16 only).
The log-sum-exp rows ([B, H, L] fp32, natural log) are saved for the backward.

The autotune candidates and their pruning sit directly above the kernel they tune (the tutorial's
layout); `configs.py` collects them with the fixed configs and the tail arithmetic.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

__all__ = ["FWD_CONFIGS", "NO_SPEC", "fwd_kernel", "prune_fwd"]

#: Integer arguments Triton must not specialise on (token counts: one binary for every stage).
NO_SPEC = ["Lc", "Lkc", "Ld", "Lkd"]


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




# ----------------------------------------------------------------------------------------------
# Autotune candidates (CUDA) and their pruning, then the kernel they tune
# ----------------------------------------------------------------------------------------------

FWD_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "POLY_EXP": poly}, num_warps=w, num_stages=s)
    for bm, bn, w, s, poly in [
        (32, 32, 2, 2, False), (32, 64, 2, 2, False), (64, 64, 2, 2, False), (64, 64, 4, 2, False),
        (64, 64, 4, 3, False), (64, 128, 4, 3, False), (128, 64, 4, 3, False), (128, 64, 8, 3, False),
        (128, 128, 8, 3, False), (64, 64, 4, 4, False), (128, 64, 4, 4, False), (64, 32, 4, 3, False),
        (32, 64, 4, 2, False),
        # small stages (49/196 tokens): more programs per head (BLOCK_M 16/32) and all keys of a
        # head in one masked tile (BLOCK_N 256 when there are at most 256 keys; see prune_fwd)
        (16, 64, 2, 2, False), (32, 128, 4, 2, False), (16, 256, 4, 2, False), (32, 256, 4, 2, False),
        (32, 256, 8, 2, False),
        # half of the exps on the FMA pipes (fp16/bf16, many keys): see _exp2_fma
        (64, 128, 4, 3, True), (128, 128, 8, 3, True), (128, 64, 8, 3, True),
    ]
]


def _cover(n: int) -> int:
    """The largest tile worth trying for n tokens: the next power of two >= max(n, 32)."""
    return triton.next_power_of_2(max(int(n), 32))


def prune_fwd(configs: list, named_args: dict, **kwargs: Any) -> list:
    """Autotune's early_config_prune: drop candidates that cannot pay at these token counts."""
    lq = max(named_args["Lc"], named_args["Ld"])
    lk = max(named_args["Lkc"], named_args["Lkd"])
    bm_max, bn_max = _cover(lq), _cover(lk)
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



@triton.jit(do_not_specialize=NO_SPEC)
def fwd_kernel(
    Qc, Kc, Vc, Qd, Kd, Vd, Oc, Od, LSEc, LSEd,
    sqc_b, sqc_h, sqc_l, skc_b, skc_h, skc_l, svc_b, svc_h, svc_l,
    sqd_b, sqd_h, sqd_l, skd_b, skd_h, skd_l, svd_b, svd_h, svd_l,
    H, Lc, Lkc, Ld, Lkd, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    TAIL_M: tl.constexpr, TAIL_N: tl.constexpr, DOT_PREC: tl.constexpr, POLY_EXP: tl.constexpr = False,
):
    """TAIL_M / TAIL_N (<= BLOCK_M / BLOCK_N, set by `configs.tails`): the tile of the last, ragged
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
