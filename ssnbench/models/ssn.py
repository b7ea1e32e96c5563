"""SSN: the single-shared network of Tang & Lasser (arXiv 2403.19203).

ONE encoder reads both the clinical photo and the dermoscopy image (the two run as one batch of
2B), shared cross-attention lets the modalities exchange information after several stages (multi-
scale; by default the last three), and modality-specific classifiers (clinic, derm) plus a fused
classifier on the concatenated pooled features each predict all 8 Derm7pt labels. Sharing the
encoder halves the parameters of the usual two-encoder design (see `dual`).

Ablation switches: `share_heads` (one classifier for both modalities) and `xattn`
(`shared`: one set of attention weights for both directions; `separate`: one per direction;
`none`: no cross-attention).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ssnbench.models.backbone import create_backbone, encode_pair
from ssnbench.models.cross_attention import IMPLS
from ssnbench.models.heads import two_image_heads
from ssnbench.models.registry import register_model
from ssnbench.models.two_image import XATTN_MODES, TwoImageModel, build_cross_attention, resolve_stages
from ssnbench.validation import check_bool, check_choice, check_float, check_int

__all__ = ["SSN", "ssn"]


class SSN(TwoImageModel):
    """Single-shared network; see the module docstring. `forward(clinic, derm) -> {head: [8 logits]}`."""

    modalities: tuple[str, ...] = ("clinic", "derm")
    output_heads: tuple[str, ...] = ("clinic", "derm", "fused")

    def __init__(
        self,
        backbone: str = "resnet50",
        pretrained: bool | str | Path = False,
        image_size: int = 224,
        xattn: str = "shared",
        xattn_stages: Sequence[int] | None = None,
        xattn_heads: int = 8,
        xattn_dim: int | str = "auto",
        xattn_impl: str = "reference",
        kv_reduction: int | str | Sequence[int] = "auto",
        xattn_cuda_graph: bool = True,
        share_heads: bool = False,
        drop_rate: float = 0.0,
        vit_stages: int = 4,
        drop_path_rate: float = 0.0,
        backbone_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        image_size = check_int("image_size", image_size, 8)
        xattn = check_choice("xattn", xattn, XATTN_MODES)
        xattn_impl = check_choice("xattn_impl", xattn_impl, IMPLS)
        xattn_heads = check_int("xattn_heads", xattn_heads, 1)
        self.share_heads = check_bool("share_heads", share_heads)
        drop_rate = check_float("drop_rate", drop_rate, 0.0, 1.0, max_inclusive=False)
        vit_stages = check_int("vit_stages", vit_stages, 1)
        drop_path_rate = check_float("drop_path_rate", drop_path_rate, 0.0, 1.0, max_inclusive=False)
        bb_kw = dict(drop_path_rate=drop_path_rate, backbone_kwargs=backbone_kwargs)

        self.encoder = create_backbone(backbone, pretrained, image_size, vit_stages, **bb_kw)
        stages = resolve_stages(xattn_stages, self.encoder.num_stages)
        self.cross_attention, xinfo = build_cross_attention(
            self.encoder,
            stages=stages,
            mode=xattn,
            num_heads=xattn_heads,
            impl=xattn_impl,
            kv_reduction=kv_reduction,
            image_size=image_size,
            xattn_dim=xattn_dim,
        )
        dim = self.encoder.num_features
        self.heads = two_image_heads(dim, drop_rate, share=self.share_heads)
        self.config = {
            "arch": "ssn",
            "backbone": backbone,
            "pretrained": str(pretrained) if pretrained else False,
            "image_size": image_size,
            "share_heads": self.share_heads,
            "xattn_impl": xattn_impl,
            "drop_rate": drop_rate,
            "drop_path_rate": drop_path_rate,
            "backbone_kwargs": dict(backbone_kwargs or {}),
            **xinfo,
        }
        self.set_xattn_cuda_graph(xattn_cuda_graph)

    def forward(self, clinic: Tensor, derm: Tensor) -> dict[str, list[Tensor]]:
        f_c, f_d = encode_pair(
            self.encoder, self.encoder, clinic, derm, blocks=self.cross_attention, graphs=self.block_graphs
        )
        head_c = self.heads["modality" if self.share_heads else "clinic"]
        head_d = self.heads["modality" if self.share_heads else "derm"]
        return {
            "clinic": head_c(f_c),
            "derm": head_d(f_d),
            "fused": self.heads["fused"](torch.cat([f_c, f_d], 1)),
        }


#: SSN (Tang & Lasser 2024): one shared encoder, shared multi-scale cross-attention, 3 heads.
ssn = register_model(SSN, "ssn")
