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
