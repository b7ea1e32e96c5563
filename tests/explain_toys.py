"""Hand-built data and model with known attribution answers, shared by the tests of ssnbench.explain:
DIAG (BCC=0 / NEV=1) is written into the clinical photo's brightness only, and the model reads it
from there."""

from __future__ import annotations

import torch
from torch import nn

from ssnbench.data.labels import NUM_CLASSES
from ssnbench.data.transforms import PairTransform

N = 24


class ToyPairs:
    """A split whose DIAG (NEV=1 vs BCC=0) is written into the clinical photo's brightness only."""

    def __init__(self, n: int = N, size: int = 8) -> None:
        g = torch.Generator().manual_seed(0)
        self.diag = torch.arange(n) % 2
        clinic = torch.where(self.diag[:, None, None, None] == 1, 200, 50).expand(n, 3, size, size)
        derm = torch.randint(0, 256, (n, 3, size, size), generator=g)
        self.images = torch.stack([clinic, derm], 1).to(torch.uint8)
        self.labels = torch.zeros(n, 8, dtype=torch.long)
        self.labels[:, 0] = self.diag
        self.case_ids = [f"c{i}" for i in range(n)]
        self.transform = PairTransform.default(augment=False)

    def __len__(self) -> int:
        return len(self.case_ids)

    def pair(self, i: int) -> torch.Tensor:
        return self.images[i]


class ClinicOnly(nn.Module):
    """clinic and fused heads: DIAG from the clinical photo's mean (ties, i.e. a neutral input, -> class
    0); derm head: uniform. Other labels: class 0 everywhere."""

    modalities = ("clinic", "derm")

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, clinic: torch.Tensor, derm: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        b = clinic.shape[0]
        m = clinic.mean(dim=(1, 2, 3))
        diag = torch.full((b, 5), -10.0)
        diag[:, 0], diag[:, 1] = -m, m
        rest = [torch.zeros(b, k).index_fill_(1, torch.tensor([0]), 1.0) for k in NUM_CLASSES[1:]]
        uniform = [torch.zeros(b, k) for k in NUM_CLASSES]
        return {"clinic": [diag, *rest], "derm": uniform, "fused": [diag.clone(), *rest]}
