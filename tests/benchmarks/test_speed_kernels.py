"""Speed of the fused shared cross-attention op and of the SharedCrossAttention block per impl."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from ssnbench import kernels
from ssnbench.models import cross_attention as xattn

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")


# SSN-ResNet50 at 224 px: 3136/784/196/49 tokens per stage; head dims 32 and 64 (8 heads), B=32.
if CUDA:
    B, H, DTYPE = 32, 8, torch.bfloat16
    STAGES = [(tokens, d) for tokens in (3136, 784, 196, 49) for d in (32, 64)]
else:  # the same four stages of a 64-px ResNet, tiny: guards correctness, not speed
    B, H, DTYPE = 2, 2, torch.float32
    STAGES = [(256, 16), (64, 16), (16, 16), (4, 16)]
IDS = [f"L{tokens}-d{d}" for tokens, d in STAGES]


def _qkv(tokens: int, d: int, grad: bool) -> list[torch.Tensor]:
    gen = torch.Generator(device=DEVICE).manual_seed(tokens * d)
    return [torch.randn(B, H, tokens, d, device=DEVICE, dtype=DTYPE, generator=gen).requires_grad_(grad)
            for _ in range(6)]


@pytest.mark.benchmark(group="op-forward")
@pytest.mark.benchmark_threshold(10 if CUDA else 50)  # CPU: sub-ms, dispatcher-bound
@pytest.mark.parametrize(("tokens", "d"), STAGES, ids=IDS)
def test_fused_op_forward(tokens: int, d: int, timed: Callable[..., Any], reference_dispatch: None) -> None:
    qkv = _qkv(tokens, d, grad=False)
    with torch.inference_mode():
        o_c, o_d = timed(lambda: kernels.shared_cross_attention(*qkv))
    assert o_c.shape == o_d.shape == (B, H, tokens, d)
    assert torch.isfinite(o_c.float()).all() and torch.isfinite(o_d.float()).all()


@pytest.mark.benchmark(group="op-forward-backward")
@pytest.mark.benchmark_threshold(10 if CUDA else 50)  # CPU: sub-ms, dispatcher-bound
@pytest.mark.parametrize(("tokens", "d"), STAGES, ids=IDS)
def test_fused_op_forward_backward(tokens: int, d: int, timed: Callable[..., Any],
                                   reference_dispatch: None) -> None:
    qkv = _qkv(tokens, d, grad=True)
    grads_out = [torch.randn(B, H, tokens, d, device=DEVICE, dtype=DTYPE) for _ in range(2)]

    def step() -> tuple[torch.Tensor, ...]:
        outs = kernels.shared_cross_attention(*qkv)
        return torch.autograd.grad(outs, qkv, grads_out)

    grads = timed(step)
    assert len(grads) == 6 and all(torch.isfinite(g.float()).all() for g in grads)


# The block on one stage: 784 tokens (28x28) x 512 channels on CUDA; 8x8 x 32 on CPU.
BLOCK = dict(b=32, c=512, side=28, heads=8) if CUDA else dict(b=2, c=32, side=8, heads=4)


@pytest.mark.benchmark(group="block-forward-backward")
@pytest.mark.benchmark_threshold(10 if CUDA else 50)  # CPU: sub-ms, dispatcher-bound
@pytest.mark.parametrize("path", ["stacked", "pair", "graph"])
@pytest.mark.parametrize("impl", ["reference", "sdpa", "triton"])
def test_block_forward_backward(
    impl: str, path: str, timed: Callable[..., Any], reference_dispatch: None
) -> None:
    """`stacked`: the block on the shared encoder's 2B-image map, as SSN runs it; `pair`: on the two
    modalities' maps, as the dual baseline (and SSN before forward_stacked) runs it; `graph`: stacked,
    replayed as CUDA graphs (`xattn_cuda_graph`, SSN's default training path on CUDA)."""
    if impl == "triton" and not CUDA:
        pytest.skip("impl triton is timed on CUDA only (on CPU it is the interpreter)")
    if path == "graph" and not CUDA:
        pytest.skip("CUDA graphs need a GPU")
    from ssnbench.models.block_graphs import BlockGraphs
    b, c, side, heads = BLOCK["b"], BLOCK["c"], BLOCK["side"], BLOCK["heads"]
    block = xattn.SharedCrossAttention(c, num_heads=heads, impl=impl).to(DEVICE)
    with torch.no_grad():  # the gate starts at zero; open it so the attention path gets gradient
        for name, p in block.named_parameters():
            if "gate" in name:
                p.fill_(0.5)
    fmt = torch.channels_last if CUDA else torch.contiguous_format
    x = torch.randn(2 * b, c, side, side, device=DEVICE).to(memory_format=fmt).requires_grad_()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if CUDA else torch.autocast("cpu", enabled=False)

    graphs = BlockGraphs(block)

    def run() -> torch.Tensor:
        if path == "graph":
            return graphs.stacked(x, b)
        if path == "stacked":
            return block.forward_stacked(x, b)
        return torch.cat(block(x[:b], x[b:]))

    def step() -> None:
        block.zero_grad(set_to_none=True)
        with autocast:
            y = run()
        y.float().square().mean().backward()

    timed(step, images=2 * b)
    assert all(p.grad is not None for p in block.parameters() if p.requires_grad)
    if path == "graph":
        assert graphs.replays > 0 and not graphs.eager_calls


@pytest.mark.skipif(CUDA, reason="on CUDA the op cases above time the host path with the real kernels")
@pytest.mark.benchmark(group="op-host-path")
@pytest.mark.benchmark_threshold(30)  # CPU: tens of microseconds per call
@pytest.mark.parametrize("mode", ["forward", "forward+backward"])
def test_op_host_path_with_stub_kernels(mode: str, timed: Callable[..., Any], kernel_stubs: Any) -> None:
    """The op's production host path per call (shape checks, allocations, launch plumbing, direct
    launch, autograd) with no-op kernels, on CPU. At the small SSN stages this host path, not the
    kernel, is what a GPU call costs (docs/benchmarks.md), so it is guarded here without a GPU."""
    qkv = [torch.randn(2, 2, 49, 32, requires_grad=mode != "forward") for _ in range(6)]
    grads_out = [torch.ones(2, 2, 49, 32) for _ in range(2)]

    def call() -> Any:
        if mode == "forward":
            return kernels.shared_cross_attention(*qkv)
        return torch.autograd.grad(kernels.shared_cross_attention(*qkv), qkv, grads_out)

    call()  # the first launch of each kernel goes through the (stub) JIT; then the direct path
    before = kernel_stubs.DIRECT_LAUNCHES["fwd"]
    out = timed(call)
    assert len(out) == (2 if mode == "forward" else 6)
    assert kernel_stubs.DIRECT_LAUNCHES["fwd"] > before  # the direct launch ran, not the reference
