"""Single-modality baseline: one encoder, one image (`clinic` or `derm`), one 8-label head.

Answers "what does the second modality add?": its output dict holds only its own modality's key,
and it ignores the other image (which may be None).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ssnbench.data.labels import MODALITIES
from ssnbench.models.backbone import create_backbone, no_weight_decay
from ssnbench.models.heads import MultiLabelHead
from ssnbench.models.registry import register_model
from ssnbench.validation import check_choice, check_float, check_int

__all__ = ["SingleModality", "single"]


class SingleModality(nn.Module):
    """One encoder and one head on one modality."""

    def __init__(
        self,
        modality: str = "derm",
        backbone: str = "resnet50",
        pretrained: bool | str | Path = False,
        image_size: int = 224,
        drop_rate: float = 0.0,
        vit_stages: int = 4,
        drop_path_rate: float = 0.0,
        backbone_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.modality = check_choice("modality", modality, MODALITIES)
        image_size = check_int("image_size", image_size, 8)
        drop_rate = check_float("drop_rate", drop_rate, 0.0, 1.0, max_inclusive=False)
        vit_stages = check_int("vit_stages", vit_stages, 1)
        drop_path_rate = check_float("drop_path_rate", drop_path_rate, 0.0, 1.0, max_inclusive=False)
        bb_kw = dict(drop_path_rate=drop_path_rate, backbone_kwargs=backbone_kwargs)
        self.modalities = (self.modality,)
        self.output_heads = (self.modality,)
        self.encoder = create_backbone(backbone, pretrained, image_size, vit_stages, **bb_kw)
        self.cross_attention = nn.ModuleDict()
        self.heads = nn.ModuleDict(
            {self.modality: MultiLabelHead(self.encoder.num_features, drop_rate=drop_rate)}
        )
        self.config = {
            "arch": "single",
            "modality": self.modality,
            "backbone": backbone,
            "pretrained": str(pretrained) if pretrained else False,
            "image_size": image_size,
            "drop_rate": drop_rate,
            "drop_path_rate": drop_path_rate,
            "backbone_kwargs": dict(backbone_kwargs or {}),
            "xattn": "none",
        }

    def no_weight_decay(self) -> set[str]:
        """What timm's optimizer helpers must not decay (the backbone's position tables/tokens)."""
        return no_weight_decay(self)

    def forward(self, clinic: Tensor | None = None, derm: Tensor | None = None) -> dict[str, list[Tensor]]:
        x = clinic if self.modality == "clinic" else derm
        if x is None:
            raise ValueError(f"single model on {self.modality!r} needs the {self.modality} image")
        return {self.modality: self.heads[self.modality](self.encoder(x))}

    def parts(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "cross_attention": self.cross_attention, "heads": self.heads}


#: One modality only (the clinic-only / derm-only baselines).
single = register_model(SingleModality, "single")
