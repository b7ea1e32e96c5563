"""Dual-encoder baseline (FusionM4Net-style): one encoder per modality, clinic/derm/fused heads.

The usual multi-modal design that SSN is measured against: two independent backbones (twice the
encoder parameters), optional cross-attention between them with one set of weights per direction
(`xattn: separate`; default `none`, as in FusionM4Net's image stage).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ssnbench.models.backbone import create_backbone, encode_pair
from ssnbench.models.cross_attention import IMPLS
from ssnbench.models.heads import two_image_heads
from ssnbench.models.registry import register_model
from ssnbench.models.two_image import TwoImageModel, build_cross_attention, resolve_stages
from ssnbench.validation import check_choice, check_float, check_int

__all__ = ["DualEncoder", "dual"]

DUAL_XATTN_MODES: tuple[str, ...] = ("none", "separate")


class DualEncoder(TwoImageModel):
    """Two encoders (clinic, derm), optional per-direction cross-attention, three heads."""

    modalities: tuple[str, ...] = ("clinic", "derm")
    output_heads: tuple[str, ...] = ("clinic", "derm", "fused")

    def __init__(
        self,
        backbone: str = "resnet50",
        pretrained: bool | str | Path = False,
        image_size: int = 224,
        xattn: str = "none",
        xattn_stages: Sequence[int] | None = None,
        xattn_heads: int = 8,
        xattn_dim: int | str = "auto",
        xattn_impl: str = "reference",
        kv_reduction: int | str | Sequence[int] = "auto",
        xattn_cuda_graph: bool = True,
        drop_rate: float = 0.0,
        vit_stages: int = 4,
        drop_path_rate: float = 0.0,
        backbone_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        image_size = check_int("image_size", image_size, 8)
        xattn = check_choice("xattn", xattn, DUAL_XATTN_MODES)
        xattn_impl = check_choice("xattn_impl", xattn_impl, IMPLS)
        xattn_heads = check_int("xattn_heads", xattn_heads, 1)
        drop_rate = check_float("drop_rate", drop_rate, 0.0, 1.0, max_inclusive=False)
        vit_stages = check_int("vit_stages", vit_stages, 1)
        drop_path_rate = check_float("drop_path_rate", drop_path_rate, 0.0, 1.0, max_inclusive=False)
        bb_kw = dict(drop_path_rate=drop_path_rate, backbone_kwargs=backbone_kwargs)

        self.encoder = nn.ModuleDict(
            {
                m: create_backbone(backbone, pretrained, image_size, vit_stages, **bb_kw)
                for m in self.modalities
            }
        )
        enc = self.encoder["clinic"]
        stages = resolve_stages(xattn_stages, enc.num_stages)
        self.cross_attention, xinfo = build_cross_attention(
            enc,
            stages=stages,
            mode=xattn,
            num_heads=xattn_heads,
            impl=xattn_impl,
            kv_reduction=kv_reduction,
            image_size=image_size,
            xattn_dim=xattn_dim,
        )
        dim = enc.num_features
        self.heads = two_image_heads(dim, drop_rate)
        self.config = {
            "arch": "dual",
            "backbone": backbone,
            "pretrained": str(pretrained) if pretrained else False,
            "image_size": image_size,
            "xattn_impl": xattn_impl,
            "drop_rate": drop_rate,
            "drop_path_rate": drop_path_rate,
            "backbone_kwargs": dict(backbone_kwargs or {}),
            **xinfo,
        }
        self.set_xattn_cuda_graph(xattn_cuda_graph)

    def forward(self, clinic: Tensor, derm: Tensor) -> dict[str, list[Tensor]]:
        f_c, f_d = encode_pair(
            self.encoder["clinic"], self.encoder["derm"], clinic, derm,
            blocks=self.cross_attention, graphs=self.block_graphs,
        )
        return {
            "clinic": self.heads["clinic"](f_c),
            "derm": self.heads["derm"](f_d),
            "fused": self.heads["fused"](torch.cat([f_c, f_d], 1)),
        }


#: Two encoders (FusionM4Net-style baseline), optional per-direction cross-attention.
dual = register_model(DualEncoder, "dual")
