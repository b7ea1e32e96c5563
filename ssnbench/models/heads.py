"""Multi-label classifier head: one linear classifier per Derm7pt label on a pooled feature vector."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssnbench.data.labels import LABELS, NUM_CLASSES

__all__ = ["MultiLabelHead", "two_image_heads"]


class MultiLabelHead(nn.Module):
    """Predicts all 8 labels (DIAG and the seven criteria) from one feature vector.

    One shared dropout, then one linear classifier per label: the labels share the encoder's features
    (multi-task), and a per-label linear layer is what FusionM4Net/SSN use on top of pooling. The 8
    classifiers are stored stacked and run as ONE GEMM whose output is split per label: the same
    function as 8 `nn.Linear`s (and initialised as 8 of them, in order), with one op instead of 8
    (plus their autocast casts) per head in forward and backward.
    """

    def __init__(
        self, in_features: int, num_classes: Sequence[int] = NUM_CLASSES, drop_rate: float = 0.0
    ) -> None:
        super().__init__()
        self.in_features = int(in_features)
        self.num_classes = tuple(int(k) for k in num_classes)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        per_label = [nn.Linear(self.in_features, k) for k in self.num_classes]
        self.weight = nn.Parameter(torch.cat([fc.weight.detach() for fc in per_label]))
        self.bias = nn.Parameter(torch.cat([fc.bias.detach() for fc in per_label]))

    def forward(self, x: Tensor) -> list[Tensor]:
        """[B, in_features] -> list of 8 logit tensors [B, K_i] in LABELS order."""
        return list(F.linear(self.drop(x), self.weight, self.bias).split(self.num_classes, dim=1))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, labels={','.join(LABELS)}"


def two_image_heads(dim: int, drop_rate: float = 0.0, share: bool = False) -> nn.ModuleDict:
    """The heads of a two-image model on `dim`-wide pooled features: `clinic` and `derm` (or one
    `modality` head serving both when `share`) and `fused` on the concatenated [2*dim] features."""
    names = ("modality",) if share else ("clinic", "derm")
    heads = {name: MultiLabelHead(dim, drop_rate=drop_rate) for name in names}
    return nn.ModuleDict({**heads, "fused": MultiLabelHead(2 * dim, drop_rate=drop_rate)})
