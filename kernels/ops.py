"""The `ssnbench::shared_cross_attention` custom op: autograd, fake (meta) impl and dispatch.

Dispatch (decided per call from the tensors' device):
- CUDA tensors                       -> Triton kernels (kernels/shared_xattn.py launches them)
- CPU tensors, knob `interpret`      -> the same Triton kernels in the interpreter (tests, CI)
  (TRITON_INTERPRET=1, read by knobs.py)
- CPU tensors otherwise              -> the PyTorch reference (kernels/reference.py)
- float64 tensors (any device)       -> the PyTorch reference (the kernels cover fp16/bf16/fp32)

Plain eager calls go through an equivalent torch.autograd.Function (`_EagerFused`, same kernels)
to skip the custom-op Python dispatch overhead; torch.compile, jit tracing, dispatch modes and tensor
subclasses use the registered op (knob `custom_op`, SSNBENCH_XATTN_CUSTOM_OP=1, forces it everywhere).

The op returns four tensors (o_c, o_d, lse_c, lse_d): the log-sum-exp rows are saved for the
backward (a second op, `ssnbench::shared_cross_attention_backward`), which recomputes the
probabilities from them. The public `shared_cross_attention` returns only (o_c, o_d).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils._python_dispatch import _get_current_dispatch_mode

from . import knobs, reference

__all__ = ["backend_for", "shared_cross_attention"]


_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def backend_for(t: Tensor) -> str:
    """'triton' on CUDA, 'interpret' on CPU when knob `interpret` is on, else 'reference'.
    float64 (the test oracle's dtype) always takes the reference: the kernels cover fp16/bf16/fp32."""
    if t.dtype not in _KERNEL_DTYPES:
        return "reference"
    if t.is_cuda:
        return "triton"
    if t.device.type == "cpu" and knobs.current().interpret:
        return "interpret"
    return "reference"


_KERNELS: Any = None


def _kernels() -> Any:
    """Import the Triton module lazily: TRITON_INTERPRET must be set before @triton.jit runs."""
    global _KERNELS
    if _KERNELS is None:
        from . import shared_xattn

        _KERNELS = shared_xattn
    return _KERNELS


def _check(q_c: Tensor, k_c: Tensor, v_c: Tensor, q_d: Tensor, k_d: Tensor, v_d: Tensor) -> None:
    """Shape/dtype contract. The common case is settled by a few direct comparisons (this runs on
    every call, and host time is what the small SSN stages wait on); the messages come from
    `_explain` only once something is wrong."""
    sqc, skc, sqd, skd = q_c.shape, k_c.shape, q_d.shape, k_d.shape
    dt = q_c.dtype
    if (
        len(sqc) == 4 and len(sqd) == 4 and len(skc) == 4 and len(skd) == 4
        and v_c.shape == skc and v_d.shape == skd
        and sqc[0] == sqd[0] == skc[0] == skd[0] and sqc[1] == sqd[1] == skc[1] == skd[1]
        and sqc[3] == sqd[3] == skc[3] == skd[3]
        and k_c.dtype is dt and v_c.dtype is dt and q_d.dtype is dt and k_d.dtype is dt and v_d.dtype is dt
    ):
        return
    _explain(q_c, k_c, v_c, q_d, k_d, v_d)


def _explain(q_c: Tensor, k_c: Tensor, v_c: Tensor, q_d: Tensor, k_d: Tensor, v_d: Tensor) -> None:
    """Raise the error that says which part of the contract the six tensors break."""
    shapes = [tuple(t.shape) for t in (q_c, k_c, v_c, q_d, k_d, v_d)]
    if any(len(sh) != 4 for sh in shapes):
        raise ValueError(f"shared_cross_attention: tensors must be [B, H, L, D], got shapes {shapes}")
    qc, kc, vc, qd, kd, vd = shapes
    # K/V may have fewer tokens than Q (spatial K/V reduction): only k/v pairs must match.
    if kc != vc or kd != vd:
        raise ValueError(f"shared_cross_attention: k and v shapes differ: {kc} vs {vc}, {kd} vs {vd}")
    if any(sh[:2] != qc[:2] or sh[3] != qc[3] for sh in shapes):
        raise ValueError(f"shared_cross_attention: all six tensors must agree on B, H and D, got {shapes}")
    raise TypeError("shared_cross_attention: all six tensors must have the same dtype")


def _forward_impl(
    q_c: Tensor, k_c: Tensor, v_c: Tensor, q_d: Tensor, k_d: Tensor, v_d: Tensor, scale: float,
    eager: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """`eager`: called by `_EagerFused`, whose LSE rows stay internal (may be flat views)."""
    _check(q_c, k_c, v_c, q_d, k_d, v_d)
    if backend_for(q_c) == "reference":
        o_c, o_d, lse_c, lse_d = reference.shared_cross_attention_reference_with_lse(
            q_c, k_c, v_c, q_d, k_d, v_d, scale
        )
        return o_c.contiguous(), o_d.contiguous(), lse_c.float().contiguous(), lse_d.float().contiguous()
    return _kernels().forward(q_c, k_c, v_c, q_d, k_d, v_d, scale, flat_lse=eager)


def _backward_impl(*args: Any, eager: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """args: do_c, do_d, q_c, k_c, v_c, q_d, k_d, v_d, o_c, o_d, lse_c, lse_d, scale. `eager`: the
    gradients may share one allocation (the registered op must return non-aliasing tensors)."""
    if backend_for(args[2]) == "reference":
        grads = reference.shared_cross_attention_reference_backward(*args)
        return tuple(g.contiguous() for g in grads)  # type: ignore[return-value]
    return _kernels().backward(*args, carve=eager)


@torch.library.custom_op("ssnbench::shared_cross_attention", mutates_args=(), device_types=None)
def _sca_fwd(
    q_c: Tensor, k_c: Tensor, v_c: Tensor, q_d: Tensor, k_d: Tensor, v_d: Tensor, scale: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return _forward_impl(q_c, k_c, v_c, q_d, k_d, v_d, scale)


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
    return _backward_impl(do_c, do_d, q_c, k_c, v_c, q_d, k_d, v_d, o_c, o_d, lse_c, lse_d, scale)


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


class _EagerFused(torch.autograd.Function):
    """The same kernels as the registered op, without the custom-op Python dispatch.

    torch.library.custom_op costs ~100 us per forward and ~290 us per forward+backward in Python
    dispatch (measured on the 2-core CI box with a no-op body; autograd.Function: 8 / 100 us), which
    is more than the kernels themselves at the small SSN stages. Plain eager calls take this path;
    torch.compile, jit tracing (fvcore), dispatch modes (FlopCounterMode, FakeTensorMode) and tensor
    subclasses see the registered op.
    """

    @staticmethod
    def forward(ctx: Any, q_c: Tensor, k_c: Tensor, v_c: Tensor, q_d: Tensor, k_d: Tensor, v_d: Tensor,
                scale: float) -> tuple[Tensor, Tensor]:
        o_c, o_d, lse_c, lse_d = _forward_impl(q_c, k_c, v_c, q_d, k_d, v_d, scale, eager=True)
        ctx.save_for_backward(q_c, k_c, v_c, q_d, k_d, v_d, o_c, o_d, lse_c, lse_d)
        ctx.scale = scale
        return o_c, o_d

    @staticmethod
    def backward(ctx: Any, do_c: Tensor, do_d: Tensor) -> tuple:
        q_c, k_c, v_c, q_d, k_d, v_d, o_c, o_d, lse_c, lse_d = ctx.saved_tensors
        grads = _backward_impl(
            do_c, do_d, q_c, k_c, v_c, q_d, k_d, v_d, o_c, o_d, lse_c, lse_d, ctx.scale, eager=True
        )
        return (*grads, None)


_PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)


def _use_registered_op(t: Tensor) -> bool:
    # is_compiling() first: Dynamo folds it to True, so nothing below is traced (fullgraph=True)
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    if type(t) not in _PLAIN_TENSORS or t.is_meta:
        return True  # FakeTensor, FunctionalTensor, DTensor, ...
    if knobs.current().custom_op:
        return True
    return _get_current_dispatch_mode() is not None


def shared_cross_attention(
    q_c: Tensor, k_c: Tensor, v_c: Tensor, q_d: Tensor, k_d: Tensor, v_d: Tensor, scale: float | None = None
) -> tuple[Tensor, Tensor]:
    """o_c = softmax(q_c k_dᵀ s) v_d, o_d = softmax(q_d k_cᵀ s) v_c; tensors [B, H, L, D], s = D^-0.5
    by default. Both directions in one fused call (one kernel launch on CUDA)."""
    s = reference.resolve_scale(q_c.shape[-1], scale)
    if _use_registered_op(q_c):
        o_c, o_d, _, _ = torch.ops.ssnbench.shared_cross_attention(q_c, k_c, v_c, q_d, k_d, v_d, s)
        return o_c, o_d
    if not (torch.is_grad_enabled() and (q_c.requires_grad or k_c.requires_grad or v_c.requires_grad
                                         or q_d.requires_grad or k_d.requires_grad or v_d.requires_grad)):
        # nothing to differentiate (inference, no_grad): skip the autograd.Function's host cost
        o_c, o_d, _, _ = _forward_impl(q_c, k_c, v_c, q_d, k_d, v_d, s, eager=True)
        return o_c, o_d
    return _EagerFused.apply(q_c, k_c, v_c, q_d, k_d, v_d, s)
