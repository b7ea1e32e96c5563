"""FLOP accounting for the shared cross-attention op (and SDPA, which fvcore does not know).

Two conventions, stated wherever a number is shown:
- fvcore handles count multiply-adds (MACs, fvcore's "flops"): 2·B·H·Lq·Lk·D per direction, i.e.
  QKᵀ (B·H·Lq·Lk·D) plus PV (B·H·Lq·Lk·D). Softmax and scaling are not counted.
- the torch.utils.flop_counter formulas count FLOPs (2 per multiply-add): 4·B·H·Lq·Lk·D per
  direction forward; the backward (QKᵀ recomputed, dV, dP, dQ, dK: 5 matmuls) is 2.5x that.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from . import ops as _ops  # noqa: F401  (registers the ops the formulas refer to)

__all__ = ["attention_macs", "fvcore_handles", "sdpa_macs", "shared_cross_attention_macs"]


def attention_macs(q_shape: Sequence[int], k_shape: Sequence[int], v_shape: Sequence[int]) -> int:
    """Multiply-adds of softmax(q kᵀ) v for [..., Lq, D] x [..., Lk, D] x [..., Lk, Dv]."""
    batch = 1
    for s in q_shape[:-2]:
        batch *= int(s)
    lq, d = int(q_shape[-2]), int(q_shape[-1])
    lk, dv = int(k_shape[-2]), int(v_shape[-1])
    return batch * lq * lk * (d + dv)


def shared_cross_attention_macs(shapes: Sequence[Sequence[int]]) -> int:
    """MACs of both directions from the shapes of (q_c, k_c, v_c, q_d, k_d, v_d)."""
    q_c, k_c, v_c, q_d, k_d, v_d = shapes[:6]
    return attention_macs(q_c, k_d, v_d) + attention_macs(q_d, k_c, v_c)


def sdpa_macs(shapes: Sequence[Sequence[int]]) -> int:
    return attention_macs(shapes[0], shapes[1], shapes[2])


def _jit_shape(value: Any) -> list[int] | None:
    """Shape of a TorchScript value from fvcore's traced graph (None for non-tensors)."""
    t = value.type()
    if isinstance(t, torch._C.TensorType) and t.sizes() is not None:
        return list(t.sizes())
    return None


def _handle(count: Callable[[Sequence[Sequence[int]]], int]) -> Callable[[list, list], int]:
    def handle(inputs: list, outputs: list) -> int:
        return count([_jit_shape(v) for v in inputs])

    return handle


def fvcore_handles() -> dict[str, Callable[[list, list], int]]:
    """Handles for `FlopCountAnalysis.set_op_handle`: our op and aten SDPA, in multiply-adds."""
    return {
        "ssnbench::shared_cross_attention": _handle(shared_cross_attention_macs),
        "aten::scaled_dot_product_attention": _handle(sdpa_macs),
    }


def _register_flop_counter() -> None:
    """Formulas for torch.utils.flop_counter.FlopCounterMode (FLOPs = 2 x MACs)."""
    try:
        from torch.utils.flop_counter import register_flop_formula
    except ImportError:  # very old torch
        return

    @register_flop_formula(torch.ops.ssnbench.shared_cross_attention)
    def _fwd_flops(q_c, k_c, v_c, q_d, k_d, v_d, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
        return 2 * shared_cross_attention_macs([q_c, k_c, v_c, q_d, k_d, v_d])

    @register_flop_formula(torch.ops.ssnbench.shared_cross_attention_backward)
    def _bwd_flops(do_c, do_d, q_c, k_c, v_c, q_d, k_d, v_d, *args: Any, out_shape: Any = None,
                   **kwargs: Any) -> int:
        return 5 * shared_cross_attention_macs([q_c, k_c, v_c, q_d, k_d, v_d])


_register_flop_counter()
