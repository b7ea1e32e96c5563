"""Multi-label classifier head: one linear classifier per Derm7pt label on a pooled feature vector."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ssnbench.data.derm7pt import LABELS, NUM_CLASSES

__all__ = ["MultiLabelHead"]


class MultiLabelHead(nn.Module):
    """Predicts all 8 labels (DIAG and the seven criteria) from one feature vector.

    One shared dropout, then one `nn.Linear` per label: the labels share the encoder's features
    (multi-task), and a per-label linear layer is what FusionM4Net/SSN use on top of pooling.
    """

    def __init__(
        self, in_features: int, num_classes: Sequence[int] = NUM_CLASSES, drop_rate: float = 0.0
    ) -> None:
        super().__init__()
        self.in_features = int(in_features)
        self.num_classes = tuple(int(k) for k in num_classes)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = nn.ModuleList(nn.Linear(self.in_features, k) for k in self.num_classes)

    def forward(self, x: Tensor) -> list[Tensor]:
        """[B, in_features] -> list of 8 logit tensors [B, K_i] in LABELS order."""
        x = self.drop(x)
        return [fc(x) for fc in self.fc]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, labels={','.join(LABELS)}"
