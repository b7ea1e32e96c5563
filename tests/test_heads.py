"""MultiLabelHead: one stacked GEMM that is exactly 8 per-label linear classifiers."""

from __future__ import annotations

import torch
from torch import nn

from ssnbench.data.labels import NUM_CLASSES
from ssnbench.models.heads import MultiLabelHead


def test_head_is_eight_linears_initialised_in_order() -> None:
    """Same weights as 8 nn.Linear built in order from the same seed, same RNG draws consumed
    (so the rest of a model initialises as before), and the same logits per label."""
    torch.manual_seed(0)
    head = MultiLabelHead(16)
    after_head = torch.rand(1)
    torch.manual_seed(0)
    fcs = [nn.Linear(16, k) for k in NUM_CLASSES]
    assert torch.equal(torch.rand(1), after_head)
    x = torch.randn(5, 16)
    out = head(x)
    assert [t.shape for t in out] == [torch.Size([5, k]) for k in NUM_CLASSES]
    for got, fc in zip(out, fcs, strict=True):
        torch.testing.assert_close(got, fc(x))


def test_each_label_trains_only_its_own_rows() -> None:
    head = MultiLabelHead(8)
    head(torch.randn(3, 8))[2].sum().backward()
    rows = torch.repeat_interleave(torch.arange(len(NUM_CLASSES)), torch.tensor(NUM_CLASSES))
    assert (head.weight.grad[rows == 2] != 0).all()
    assert (head.weight.grad[rows != 2] == 0).all() and (head.bias.grad[rows != 2] == 0).all()
