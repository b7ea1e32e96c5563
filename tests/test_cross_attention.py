"""The SharedCrossAttention block: shapes, impl equivalence, gate, K/V reduction, errors."""

from __future__ import annotations

import pytest
import torch

from ssnbench.models.cross_attention import IMPLS, SharedCrossAttention


def _block(shared: bool, r: int, impl: str = "reference") -> SharedCrossAttention:
    torch.manual_seed(0)
    m = SharedCrossAttention(32, 4, impl=impl, kv_reduction=r, shared=shared).double()
    with torch.no_grad():  # open the gates so the attention path shows in the output
        for name, p in m.named_parameters():
            if "gate" in name:
                p.normal_()
    return m


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("r", [1, 2])
def test_impls_agree_and_shapes_kept(shared: bool, r: int) -> None:
    m = _block(shared, r)
    f_c = torch.randn(2, 32, 7, 7, dtype=torch.float64)
    f_d = torch.randn(2, 32, 5, 6, dtype=torch.float64)  # L_c != L_d
    ref = m(f_c, f_d)
    assert ref[0].shape == f_c.shape and ref[1].shape == f_d.shape
    for impl in ("sdpa", "triton"):
        m.impl = impl
        out = m(f_c, f_d)
        for a, b in zip(ref, out, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-7)
    m.impl = "reference"
    out = m(f_c.to(memory_format=torch.channels_last), f_d)
    torch.testing.assert_close(out[0], ref[0])
    # float64 always takes the reference core; float32 runs the Triton kernels (interpreter on CPU)
    m = m.float()
    m.impl = "triton"
    out = m(f_c.float(), f_d.float())
    for a, b in zip(ref, out, strict=True):
        torch.testing.assert_close(b, a.float(), rtol=1e-5, atol=1e-5)


def test_zero_gate_is_identity_and_gate_gets_gradient() -> None:
    m = SharedCrossAttention(32, 4)
    f_c, f_d = torch.randn(2, 32, 4, 4), torch.randn(2, 32, 3, 3)
    y_c, y_d = m(f_c, f_d)
    torch.testing.assert_close(y_c, f_c)
    torch.testing.assert_close(y_d, f_d)
    (y_c.square().sum() + y_d.square().sum()).backward()
    assert m.gate.grad is not None and m.gate.grad.abs().sum() > 0


def test_gradients_reach_attention_weights_once_gate_moves() -> None:
    m = _block(True, 1).float()
    f_c, f_d = torch.randn(2, 32, 4, 4), torch.randn(2, 32, 3, 3)
    y_c, y_d = m(f_c, f_d)
    (y_c.square().sum() + y_d.square().sum()).backward()
    assert m.proj_shared.qkv.weight.grad.abs().sum() > 0


def test_shared_has_one_weight_set() -> None:
    n_shared = sum(p.numel() for p in SharedCrossAttention(64, 8).parameters())
    n_sep = sum(p.numel() for p in SharedCrossAttention(64, 8, shared=False).parameters())
    assert n_sep > 1.9 * n_shared


def test_errors() -> None:
    with pytest.raises(ValueError, match="multiple of num_heads"):
        SharedCrossAttention(30, 8)
    with pytest.raises(ValueError, match=", ".join(IMPLS)):
        SharedCrossAttention(32, 8, impl="flash")
    with pytest.raises(ValueError, match="kv_reduction"):
        SharedCrossAttention(32, 8, kv_reduction=0)
    with pytest.raises(ValueError, match="expects f_c, f_d"):
        SharedCrossAttention(32, 8)(torch.randn(1, 16, 2, 2), torch.randn(1, 16, 2, 2))


def _open_gates(m: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "gate" in name:
                p.normal_()
    return m


def _grads(m: torch.nn.Module, x: torch.Tensor, run) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    m.zero_grad()
    x = x.detach().clone().requires_grad_()
    y = run(x)
    (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
    return y.detach(), {"x": x.grad, **{n: p.grad for n, p in m.named_parameters()}}


@pytest.mark.parametrize("projected", [False, True])
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("r", [1, 2])
@pytest.mark.parametrize("impl", ["reference", "sdpa", "triton"])
def test_stacked_path_matches_two_map_forward(projected: bool, shared: bool, r: int, impl: str) -> None:
    """forward_stacked(cat([f_c, f_d]), B) is cat(forward(f_c, f_d)), outputs and every gradient.
    float32 so that impl=triton runs the kernels (interpreter on CPU); odd 5x7 maps."""
    from ssnbench.models.two_image import ProjectedCrossAttention

    torch.manual_seed(0)
    kw = dict(num_heads=2, impl=impl, kv_reduction=r, shared=shared)
    m = _open_gates(ProjectedCrossAttention(24, 16, **kw) if projected else SharedCrossAttention(16, **kw))
    B, C = 2, 24 if projected else 16
    x = torch.randn(2 * B, C, 5, 7).to(memory_format=torch.channels_last)
    want, want_grads = _grads(m, x, lambda x: torch.cat(m(x[:B], x[B:])))
    got, got_grads = _grads(m, x, lambda x: m.forward_stacked(x, B))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert got_grads.keys() == want_grads.keys()
    for name, g in want_grads.items():
        torch.testing.assert_close(got_grads[name], g, rtol=1e-4, atol=1e-5,
                                   msg=lambda e, n=name: f"{n}: {e}")
    assert want_grads["x"].abs().sum() > 0


def test_stacked_path_rejects_a_batch_that_is_not_two_halves() -> None:
    m = SharedCrossAttention(16, 2)
    with pytest.raises(ValueError, match=r"forward_stacked expects x of shape \[2\*3, 16, H, W\]"):
        m.forward_stacked(torch.randn(5, 16, 3, 3), 3)


def _aten_ops(fn) -> int:
    """How many aten ops fn dispatches: the host work an eager GPU step pays per op."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.n += 1
            return func(*args, **(kwargs or {}))

    with Count():
        fn()
    return Count.n


@pytest.mark.parametrize("projected", [False, True])
def test_stacked_path_dispatches_far_fewer_ops(projected: bool) -> None:
    """The point of forward_stacked: SSN's host-bound GPU step pays per op, and the stacked block
    (no split/re-concatenation, one residual add, no add-then-subtract around the 1x1 projections)
    needs well under 2/3 of the ops of the two-map path for forward+backward (measured: 0.58x, 0.57x)."""
    from ssnbench.models.two_image import ProjectedCrossAttention

    if projected:
        m = ProjectedCrossAttention(24, 16, num_heads=2, impl="sdpa")
    else:
        m = SharedCrossAttention(16, 2, impl="sdpa")
    x = torch.randn(4, m.dim, 3, 3).to(memory_format=torch.channels_last).requires_grad_()
    two_maps = _aten_ops(lambda: torch.cat(m(x[:2], x[2:])).sum().backward())
    stacked = _aten_ops(lambda: m.forward_stacked(x, 2).sum().backward())
    print(f"aten ops fwd+bwd: stacked {stacked}, two maps {two_maps}")
    assert stacked < 0.65 * two_maps, (stacked, two_maps)


def test_ssn_runs_its_blocks_stacked(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shared encoder hands each block the 2B batch (forward_stacked), never the split halves;
    a block without forward_stacked still gets the two maps."""
    from ssnbench.models.backbone import encode_pair
    from ssnbench.models.registry import build_model

    model = build_model("ssn", backbone="resnet18", image_size=32, xattn_impl="sdpa")
    calls = []
    for key, block in model.cross_attention.items():
        monkeypatch.setattr(block, "forward", lambda *a, k=key: calls.append(("pair", k)))
        def spy(x, b, k=key, stacked=block.forward_stacked):
            calls.append(("stacked", k))
            return stacked(x, b)

        monkeypatch.setattr(block, "forward_stacked", spy)
    x = torch.randn(2, 3, 32, 32)
    model(x, x.flip(0))
    assert calls == [("stacked", k) for k in model.cross_attention]

    class TwoMaps(torch.nn.Module):
        def forward(self, f_c, f_d):
            return f_c + 1, f_d - 1

    class Stacked(TwoMaps):
        def forward_stacked(self, x, b):
            return torch.cat([x[:b] + 1, x[b:] - 1])

    enc = model.encoder
    plain = encode_pair(enc, enc, x, x.flip(0))
    pair = encode_pair(enc, enc, x, x.flip(0), blocks={3: TwoMaps()})
    stacked = encode_pair(enc, enc, x, x.flip(0), blocks={3: Stacked()})
    for a, b, c in zip(pair, stacked, plain, strict=True):
        torch.testing.assert_close(a, b)
        assert not torch.allclose(a, c)
