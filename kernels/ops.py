"""The `ssnbench::shared_cross_attention` custom op: autograd, fake (meta) impl and dispatch.

Dispatch (decided per call from the tensors' device):
- CUDA tensors                       -> Triton kernels (kernels/shared_xattn.py)
- CPU tensors, TRITON_INTERPRET=1    -> the same Triton kernels in the interpreter (tests, CI)
- CPU tensors otherwise              -> the PyTorch reference (kernels/reference.py)

The op returns four tensors (o_c, o_d, lse_c, lse_d): the log-sum-exp rows are saved for the
backward (a second op, `ssnbench::shared_cross_attention_backward`), which recomputes the
probabilities from them. The public `shared_cross_attention` returns only (o_c, o_d).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

from . import reference

__all__ = ["backend_for", "shared_cross_attention"]


def _interpret_requested() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def backend_for(t: Tensor) -> str:
    """'triton' on CUDA, 'interpret' on CPU when TRITON_INTERPRET=1, else 'reference'."""
    if t.is_cuda:
        return "triton"
    if t.device.type == "cpu" and _interpret_requested():
        return "interpret"
    return "reference"


def _kernels() -> Any:
    """Import the Triton module lazily: TRITON_INTERPRET must be set before @triton.jit runs."""
    from . import shared_xattn

    return shared_xattn


def _check(q_c: Tensor, k_c: Tensor, v_c: Tensor, q_d: Tensor, k_d: Tensor, v_d: Tensor) -> None:
    names = ("q_c", "k_c", "v_c", "q_d", "k_d", "v_d")
    for name, t in zip(names, (q_c, k_c, v_c, q_d, k_d, v_d), strict=True):
        torch._check(t.dim() == 4, lambda n=name: f"{n} must be [B, H, L, D]")
    # K/V may have fewer tokens than Q (spatial K/V reduction): only k/v pairs must match.
    torch._check(k_c.shape == v_c.shape, lambda: "k_c and v_c must have the same shape")
    torch._check(k_d.shape == v_d.shape, lambda: "k_d and v_d must have the same shape")
    torch._check(
        all(t.shape[0] == q_c.shape[0] and t.shape[1] == q_c.shape[1] for t in (k_c, q_d, k_d))
        and all(t.shape[3] == q_c.shape[3] for t in (k_c, v_c, q_d, k_d, v_d)),
        lambda: "all six tensors must agree on B, H and D",
    )
    torch._check(len({t.dtype for t in (q_c, k_c, v_c, q_d, k_d, v_d)}) == 1, lambda: "dtypes differ")


@torch.library.custom_op("ssnbench::shared_cross_attention", mutates_args=(), device_types=None)
def _sca_fwd(
    q_c: Tensor, k_c: Tensor, v_c: Tensor, q_d: Tensor, k_d: Tensor, v_d: Tensor, scale: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    _check(q_c, k_c, v_c, q_d, k_d, v_d)
    backend = backend_for(q_c)
    if backend == "reference":
        o_c, o_d, lse_c, lse_d = reference.shared_cross_attention_reference_with_lse(
            q_c, k_c, v_c, q_d, k_d, v_d, scale
        )
        return o_c.contiguous(), o_d.contiguous(), lse_c.float().contiguous(), lse_d.float().contiguous()
    return _kernels().forward(q_c, k_c, v_c, q_d, k_d, v_d, scale)


@_sca_fwd.register_fake
def _sca_fwd_fake(q_c, k_c, v_c, q_d, k_d, v_d, scale):
    B, H, Lc, D = q_c.shape
    Ld = q_d.shape[2]
    return (
        q_c.new_empty((B, H, Lc, D)),
        q_d.new_empty((B, H, Ld, D)),
        q_c.new_empty((B, H, Lc), dtype=torch.float32),
        q_d.new_empty((B, H, Ld), dtype=torch.float32),
    )


@torch.library.custom_op("ssnbench::shared_cross_attention_backward", mutates_args=(), device_types=None)
def _sca_bwd(
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
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    backend = backend_for(q_c)
    if backend == "reference":
        grads = reference.shared_cross_attention_reference_backward(
            do_c, do_d, q_c, k_c, v_c, q_d, k_d, v_d, o_c, o_d, lse_c, lse_d, scale
        )
        return tuple(g.contiguous() for g in grads)  # type: ignore[return-value]
    return _kernels().backward(do_c, do_d, q_c, k_c, v_c, q_d, k_d, v_d, o_c, o_d, lse_c, lse_d, scale)


@_sca_bwd.register_fake
def _sca_bwd_fake(do_c, do_d, q_c, k_c, v_c, q_d, k_d, v_d, o_c, o_d, lse_c, lse_d, scale):
    inputs = (q_c, k_c, v_c, q_d, k_d, v_d)
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) for t in inputs)


def _setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
    q_c, k_c, v_c, q_d, k_d, v_d, scale = inputs
    o_c, o_d, lse_c, lse_d = output
    ctx.save_for_backward(q_c, k_c, v_c, q_d, k_d, v_d, o_c, o_d, lse_c, lse_d)
    ctx.scale = scale


def _backward(ctx: Any, do_c: Tensor | None, do_d: Tensor | None, _dlse_c: Any, _dlse_d: Any) -> tuple:
    q_c, k_c, v_c, q_d, k_d, v_d, o_c, o_d, lse_c, lse_d = ctx.saved_tensors
    # A direction whose output is unused gets a zero gradient (its inputs still get the other's).
    do_c = torch.zeros_like(o_c) if do_c is None else do_c
    do_d = torch.zeros_like(o_d) if do_d is None else do_d
    grads = _sca_bwd(do_c, do_d, q_c, k_c, v_c, q_d, k_d, v_d, o_c, o_d, lse_c, lse_d, ctx.scale)
    return (*grads, None)


_sca_fwd.register_autograd(_backward, setup_context=_setup_context)


def shared_cross_attention(
    q_c: Tensor, k_c: Tensor, v_c: Tensor, q_d: Tensor, k_d: Tensor, v_d: Tensor, scale: float | None = None
) -> tuple[Tensor, Tensor]:
    """o_c = softmax(q_c k_dᵀ s) v_d, o_d = softmax(q_d k_cᵀ s) v_c; tensors [B, H, L, D], s = D^-0.5
    by default. Both directions in one fused call (one kernel launch on CUDA)."""
    s = reference.resolve_scale(q_c.shape[-1], scale)
    o_c, o_d, _, _ = torch.ops.ssnbench.shared_cross_attention(q_c, k_c, v_c, q_d, k_d, v_d, s)
    return o_c, o_d
