"""`xattn_cuda_graph`: cross-attention blocks replayed as CUDA graphs (models/block_graphs.py).

On CPU: the option, copies, and every call falling back to the eager block. On a GPU: graphed
outputs and gradients equal the eager block's over several steps with accumulating gradients
(AccumulateGrad must not steal the graph's static buffers), a second forward before the first
backward runs eagerly, and a whole SSN / dual training run matches the eager model.
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

from ssnbench.errors import ConfigError
from ssnbench.models import build_model
from ssnbench.models.block_graphs import BlockGraphs
from ssnbench.models.two_image import ProjectedCrossAttention

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _model(arch: str = "ssn", **kw):
    kw.setdefault("xattn", "shared" if arch == "ssn" else "separate")
    return build_model(arch, backbone="resnet18", image_size=64, **kw)


def test_option_builds_one_graph_runner_per_block_and_can_be_switched_off() -> None:
    m = _model(xattn_cuda_graph=True)
    assert sorted(m.block_graphs) == sorted(int(k) for k in m.cross_attention)
    assert all(g.block is m.cross_attention[str(k)] for k, g in m.block_graphs.items())
    assert m.config["xattn_cuda_graph"] is True
    m.set_xattn_cuda_graph(False)
    assert m.block_graphs == {} and m.config["xattn_cuda_graph"] is False
    assert _model(xattn_cuda_graph=False).block_graphs == {}
    assert len(_model().block_graphs) == len(m.cross_attention)  # on by default (CUDA training only)
    assert _model(xattn="none").block_graphs == {}
    with pytest.raises(ConfigError, match="xattn_cuda_graph"):
        _model(xattn_cuda_graph="yes")


def test_copies_point_at_their_own_blocks_and_start_without_captures() -> None:
    m = _model("dual", xattn_cuda_graph=True)
    for other in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        for k, g in other.block_graphs.items():
            assert g.block is other.cross_attention[str(k)] and not g.captures


def test_cpu_calls_run_the_eager_block() -> None:
    """Off CUDA nothing is captured: same numbers as the model without the option."""
    torch.manual_seed(0)
    ref = _model("ssn", xattn_cuda_graph=False)
    m = _model("ssn", xattn_cuda_graph=True)
    m.load_state_dict(ref.state_dict())
    for p in m.cross_attention.parameters():  # open the gates so the blocks matter
        p.data.normal_(0, 0.1)
    ref.load_state_dict(m.state_dict())
    x = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(m(*x)["fused"][0], ref(*x)["fused"][0])
    assert all(g.eager_calls == 1 and g.replays == 0 and not g.captures for g in m.block_graphs.values())


# --------------------------------------------------------------------------------------- GPU ---
def _block(impl: str) -> ProjectedCrossAttention:
    torch.manual_seed(0)
    m = ProjectedCrossAttention(64, 32, num_heads=2, impl=impl, kv_reduction=1).cuda()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.2)
    return m


def _step(run, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().clone().requires_grad_()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = run(x)
    y.backward(g)
    return y.detach().float(), x.grad


@pytest.mark.gpu
@CUDA
@pytest.mark.parametrize("impl", ["triton", "sdpa"])
def test_graphed_block_matches_eager_over_steps_with_accumulating_grads(impl: str) -> None:
    eager = _block(impl).to(memory_format=torch.channels_last)
    graphed_block = copy.deepcopy(eager)
    graphs = BlockGraphs(graphed_block)
    B = 3
    for step in range(4):  # capture on the first call, replays after; grads never zeroed
        x = torch.randn(2 * B, 64, 7, 7, device="cuda").to(memory_format=torch.channels_last)
        g = torch.randn_like(x)
        want_y, want_dx = _step(lambda t: eager.forward_stacked(t, B), x, g)
        got_y, got_dx = _step(lambda t: graphs.stacked(t, B), x, g)
        torch.testing.assert_close(got_y, want_y, rtol=2e-2, atol=2e-2,
                                   msg=lambda e, s=step: f"step {s}: {e}")
        torch.testing.assert_close(got_dx, want_dx, rtol=2e-2, atol=2e-2)
        for (name, p), q in zip(eager.named_parameters(), graphed_block.parameters(), strict=True):
            torch.testing.assert_close(q.grad, p.grad, rtol=2e-2, atol=2e-2,
                                       msg=lambda e, n=name, s=step: f"step {s} {n}.grad: {e}")
            assert q.grad.data_ptr() not in {t.data_ptr() for t in next(iter(graphs.captures.values())).grads
                                             if t is not None}, f"{name}.grad aliases a graph buffer"
    assert graphs.replays == 4 and graphs.eager_calls == 0 and len(graphs.captures) == 1


@pytest.mark.gpu
@CUDA
def test_second_forward_before_backward_runs_eagerly_and_both_backwards_are_right() -> None:
    eager = _block("triton")
    graphed_block = copy.deepcopy(eager)
    graphs = BlockGraphs(graphed_block)
    B = 2
    x1, x2 = (torch.randn(2 * B, 64, 5, 5, device="cuda") for _ in range(2))
    _step(lambda t: graphs.stacked(t, B), x1, torch.randn_like(x1))  # capture
    eager.zero_grad()
    graphed_block.zero_grad()

    def two(run):
        a, b = (x.detach().clone().requires_grad_() for x in (x1, x2))
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y1, y2 = run(a), run(b)  # two forwards, then one backward through both
        (y1.float().square().sum() + 2 * y2.float().sum()).backward()
        return a.grad, b.grad

    want = two(lambda t: eager.forward_stacked(t, B))
    got = two(lambda t: graphs.stacked(t, B))
    assert graphs.eager_calls == 1, "the second forward must not overwrite the first's graph buffers"
    for w, g in zip(want, got, strict=True):
        torch.testing.assert_close(g, w, rtol=2e-2, atol=2e-2)
    for p, q in zip(eager.parameters(), graphed_block.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=2e-2, atol=2e-2)
    # a forward whose graph is dropped without backward frees the capture for the next call
    with torch.autocast("cuda", dtype=torch.bfloat16):
        graphs.stacked(x1.clone().requires_grad_(), B)
    replays = graphs.replays
    _step(lambda t: graphs.stacked(t, B), x2, torch.randn_like(x2))
    assert graphs.replays == replays + 1


@pytest.mark.gpu
@CUDA
@pytest.mark.parametrize("arch", ["ssn", "dual"])
def test_training_with_graphed_blocks_matches_eager(arch: str) -> None:
    torch.manual_seed(0)
    eager = _model(arch, xattn_impl="triton", xattn_cuda_graph=False).cuda()
    eager = eager.to(memory_format=torch.channels_last)
    with torch.no_grad():
        for p in eager.cross_attention.parameters():
            p.normal_(0, 0.1)
    graphed = copy.deepcopy(eager)
    graphed.set_xattn_cuda_graph(True)
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-3) for m in (eager, graphed)]
    for _ in range(3):
        x = [torch.randn(4, 3, 64, 64, device="cuda").to(memory_format=torch.channels_last) for _ in range(2)]
        losses = []
        for m, opt in zip((eager, graphed), opts, strict=True):
            opt.zero_grad()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = m(*x)
            loss = sum(o.float().square().mean() for head in out.values() for o in head)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[1] == pytest.approx(losses[0], rel=2e-2, abs=1e-3)
    assert all(g.replays == 3 for g in graphed.block_graphs.values())
    with torch.no_grad():  # evaluation runs the eager blocks
        graphed.eval()
        graphed(*x)
    assert all(g.replays == 3 and g.eager_calls == 1 for g in graphed.block_graphs.values())


def test_moving_the_model_drops_the_captures() -> None:
    """Captured graphs read the parameters' old storage after .to()/.cpu(): they must go."""
    m = _model(xattn_cuda_graph=True)
    graphs = m.block_graphs[2]
    graphs.captures[("stale",)] = object()  # stands in for a capture made on the GPU
    m.to(torch.float64)
    assert not graphs.captures and m.block_graphs[2] is graphs


@pytest.mark.gpu
@CUDA
def test_round_trip_to_cpu_releases_graph_memory_and_recaptures() -> None:
    m = _model(xattn_impl="sdpa", xattn_cuda_graph=True).cuda()
    x = [torch.randn(2, 3, 64, 64, device="cuda") for _ in range(2)]

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = m(*x)
        sum(o.float().sum() for head in out.values() for o in head).backward()

    step()
    assert all(len(g.captures) == 1 for g in m.block_graphs.values())
    m.cpu()
    assert all(not g.captures for g in m.block_graphs.values())
    m.cuda()
    step()
    assert all(len(g.captures) == 1 and g.replays == 2 for g in m.block_graphs.values())


def test_a_failed_capture_raises_naming_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA calls of the capture are stubbed so the warm-up runs on CPU and the capture fails."""
    import contextlib

    from ssnbench.models import block_graphs as bg

    class _Stream:
        def wait_stream(self, other: object) -> None:
            pass

    def failing_graph(*args, **kwargs):
        assert kwargs.get("capture_error_mode") == "thread_local"
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(bg, "warmup_stream", lambda device: _Stream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: _Stream())
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: None)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", object)
    monkeypatch.setattr(torch.cuda, "graph", failing_graph)
    block = ProjectedCrossAttention(16, 8, num_heads=2, impl="reference", kv_reduction=1)
    graphs = BlockGraphs(block)
    x = torch.randn(4, 16, 3, 3, requires_grad=True)
    want = r"ProjectedCrossAttention.*not permitted.*xattn_cuda_graph: false"
    with pytest.raises(RuntimeError, match=want):
        graphs._capture(lambda t: block.forward_stacked(t, 2), (x,), graphs._params(), amp=False)
