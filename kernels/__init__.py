"""Triton kernels for ssnbench, imported as ssnbench.kernels (never as a top-level `kernels`).

`shared_cross_attention(q_c, k_c, v_c, q_d, k_d, v_d, scale=None) -> (o_c, o_d)` is the fused
both-directions cross-attention core, a `torch.library.custom_op` named
`ssnbench::shared_cross_attention` (see ops.py for the dispatch rules).

Read the package in this order:
- knobs.py       every environment knob (SSNBENCH_*, TRITON_INTERPRET), read once; `override()`
- forward.py     the forward kernel, its autotune candidates and pruning directly above it
- backward.py    the three backward paths (small, general, atomic), candidates above each kernel
- configs.py     candidate tables collected, tail tiles, fixed configs, kernel constexprs
- launch.py      one `launch()`: best-config cache (`best_configs()`), direct launch, compile-only
- shared_xattn.py  the launchers `forward` / `backward` (input checks, path choice)
- precompile.py  compile every candidate in parallel processes before autotuning
- ops.py         the custom op (autograd, fake impl, dispatch), the eager fast path
- reference.py   the PyTorch oracle and CPU path; flops.py: FLOP/MAC accounting
"""

from .ops import shared_cross_attention

__all__ = ["shared_cross_attention"]
