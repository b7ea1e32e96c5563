"""Triton kernels for ssnbench, imported as ssnbench.kernels (never as a top-level `kernels`).

`shared_cross_attention(q_c, k_c, v_c, q_d, k_d, v_d, scale=None) -> (o_c, o_d)` is the fused
both-directions cross-attention core, a `torch.library.custom_op` named
`ssnbench::shared_cross_attention` (see ops.py for the dispatch rules).
"""

from .ops import shared_cross_attention

__all__ = ["shared_cross_attention"]
