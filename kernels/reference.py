"""Plain PyTorch reference of the shared cross-attention core: the oracle in tests and the CPU path.

o_c = softmax(q_c k_dᵀ s) v_d  (clinic queries attend to derm keys/values)
o_d = softmax(q_d k_cᵀ s) v_c  (derm queries attend to clinic keys/values)

Tensors are [B, H, L, D]; L_c and L_d may differ. Half-precision inputs are computed in float32 and
cast back (the kernel accumulates in float32 too), float64 stays float64 (the test oracle).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "attention_reference",
    "resolve_scale",
    "shared_cross_attention_reference",
    "shared_cross_attention_reference_backward",
    "shared_cross_attention_reference_with_lse",
]


def resolve_scale(head_dim: int, scale: float | None) -> float:
    """The softmax scale: D^-0.5 unless given."""
    return 1.0 / math.sqrt(head_dim) if scale is None else float(scale)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def attention_reference(q: Tensor, k: Tensor, v: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """One direction: (softmax(q kᵀ s) v, logsumexp of the scaled scores), computed in >= float32."""
    ct = _compute_dtype(q.dtype)
    s = torch.matmul(q.to(ct), k.to(ct).transpose(-2, -1)) * scale
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - lse.unsqueeze(-1))
    o = torch.matmul(p, v.to(ct))
    return o.to(q.dtype), lse.to(torch.float32 if ct == torch.float32 else ct)


def shared_cross_attention_reference_with_lse(
    q_c: Tensor, k_c: Tensor, v_c: Tensor, q_d: Tensor, k_d: Tensor, v_d: Tensor, scale: float | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Both directions plus their log-sum-exp rows ([B, H, L] float32): what the backward needs."""
    s = resolve_scale(q_c.shape[-1], scale)
    o_c, lse_c = attention_reference(q_c, k_d, v_d, s)
    o_d, lse_d = attention_reference(q_d, k_c, v_c, s)
    return o_c, o_d, lse_c, lse_d


def shared_cross_attention_reference(
    q_c: Tensor, k_c: Tensor, v_c: Tensor, q_d: Tensor, k_d: Tensor, v_d: Tensor, scale: float | None = None
) -> tuple[Tensor, Tensor]:
    """Same signature as `ssnbench.kernels.shared_cross_attention`; differentiable by autograd."""
    o_c, o_d, _, _ = shared_cross_attention_reference_with_lse(q_c, k_c, v_c, q_d, k_d, v_d, scale)
    return o_c, o_d


def _attention_backward(
    do: Tensor, q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, scale: float
) -> tuple[Tensor, Tensor, Tensor]:
    """FlashAttention-style gradients of one direction from the saved LSE (materialises P: CPU only)."""
    ct = _compute_dtype(q.dtype)
    q32, k32, v32, do32 = q.to(ct), k.to(ct), v.to(ct), do.to(ct)
    p = torch.exp(torch.matmul(q32, k32.transpose(-2, -1)) * scale - lse.to(ct).unsqueeze(-1))
    delta = (do32 * o.to(ct)).sum(-1, keepdim=True)
    dv = torch.matmul(p.transpose(-2, -1), do32)
    ds = p * (torch.matmul(do32, v32.transpose(-2, -1)) - delta)
    dq = torch.matmul(ds, k32) * scale
    dk = torch.matmul(ds.transpose(-2, -1), q32) * scale
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


def shared_cross_attention_reference_backward(
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
    scale: float | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(dq_c, dk_c, dv_c, dq_d, dk_d, dv_d). The gradients cross directions: dk_d/dv_d come from the
    c->d direction (queries q_c), dk_c/dv_c from the d->c direction."""
    s = resolve_scale(q_c.shape[-1], scale)
    dq_c, dk_d, dv_d = _attention_backward(do_c, q_c, k_d, v_d, o_c, lse_c, s)
    dq_d, dk_c, dv_c = _attention_backward(do_d, q_d, k_c, v_c, o_d, lse_d, s)
    return dq_c, dk_c, dv_c, dq_d, dk_d, dv_d
