"""What the two-image models (SSN, dual) share: stage resolution, the cross-attention builders and
the `TwoImageModel` base.

Why a module of its own: ssn.py and dual.py are family files in timm's shape (one model class and
its registration); the parts both families build on live here, so neither imports the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ssnbench.errors import ConfigError
from ssnbench.models.backbone import StagedBackbone, auto_kv_reduction, no_weight_decay
from ssnbench.models.block_graphs import BlockGraphs
from ssnbench.models.cross_attention import IMPLS, SharedCrossAttention, add_update
from ssnbench.validation import check_bool, check_choice, check_int

__all__ = [
    "XATTN_DIM_AUTO_CAP",
    "XATTN_MODES",
    "ProjectedCrossAttention",
    "TwoImageModel",
    "build_cross_attention",
    "resolve_stages",
]

XATTN_MODES: tuple[str, ...] = ("shared", "separate", "none")
#: `xattn_dim: auto` attends at min(C, 256) channels. Why: full-width attention costs 4·C² weights
#: per stage, i.e. 16.8M at ResNet-50's last stage (C=2048) and 22M over its last three stages,
#: almost a second encoder, which would erase the parameter saving that is SSN's point
#: (SSN-ResNet50 ≈ half of dual-ResNet50). At 256 channels the three blocks cost ~2.6M.
XATTN_DIM_AUTO_CAP = 256


def resolve_stages(stages: Sequence[int] | None, num_stages: int, key: str = "xattn_stages") -> list[int]:
    """Stage indices (0-based; negative counts from the end) -> sorted non-negative indices.

    None -> the last three stages (for a ResNet at 224 px: strides 8, 16, 32, i.e. 28², 14², 7² maps).
    """
    if stages is None:
        return list(range(max(0, num_stages - 3), num_stages))
    if isinstance(stages, (str, bytes)) or not isinstance(stages, Sequence):
        raise ConfigError(f"{key}: expected a list of stage indices, got {stages!r}")
    out = []
    for s in stages:
        s = check_int(key, s, -num_stages, num_stages - 1)
        out.append(s % num_stages)
    if len(set(out)) != len(out):
        raise ConfigError(f"{key}: stage listed twice in {list(stages)!r}")
    return sorted(out)


def _heads_for(dim: int, num_heads: int) -> int:
    """Largest head count <= num_heads dividing dim (so any backbone width works)."""
    for h in range(min(num_heads, dim), 0, -1):
        if dim % h == 0:
            return h
    return 1


def _kv_reductions(
    kv_reduction: Any, encoder: StagedBackbone, stages: list[int], image_size: int
) -> list[int]:
    if kv_reduction == "auto":
        return [auto_kv_reduction(encoder.stage_grid(s, image_size)) for s in stages]
    if isinstance(kv_reduction, (list, tuple)):
        if len(kv_reduction) != len(stages):
            raise ConfigError(
                f"kv_reduction: expected one value per cross-attention stage ({len(stages)}), "
                f"got {list(kv_reduction)!r}"
            )
        return [check_int("kv_reduction", r, 1) for r in kv_reduction]
    if isinstance(kv_reduction, int) and not isinstance(kv_reduction, bool):
        return [check_int("kv_reduction", kv_reduction, 1)] * len(stages)
    raise ConfigError(
        f"kv_reduction: expected 'auto', an integer >= 1 or a list of them, got {kv_reduction!r}"
    )


def _attn_dim(xattn_dim: Any, channels: int) -> int:
    if xattn_dim == "auto":
        return min(channels, XATTN_DIM_AUTO_CAP)
    if xattn_dim == "full":
        return channels
    return min(channels, check_int("xattn_dim", xattn_dim, 1))


class ProjectedCrossAttention(nn.Module):
    """`SharedCrossAttention` run at a reduced width `attn_dim` < C.

    A 1x1 projection maps each modality's map C -> attn_dim (one projection for both modalities
    when `shared`, one per modality otherwise), the block attends there, and only its update (the
    gated attention term, the block's `updates`) is projected back and added to the full-width map.
    The block's zero-initialised gate therefore still makes the whole thing the identity at init,
    so a pretrained backbone starts unchanged.
    """

    def __init__(self, dim: int, attn_dim: int, shared: bool = True, **kwargs: Any) -> None:
        super().__init__()
        self.dim, self.attn_dim, self.shared = dim, attn_dim, shared
        n = 1 if shared else 2
        self.down = nn.ModuleList(nn.Conv2d(dim, attn_dim, 1, bias=False) for _ in range(n))
        self.up = nn.ModuleList(nn.Conv2d(attn_dim, dim, 1, bias=False) for _ in range(n))
        self.attn = SharedCrossAttention(attn_dim, shared=shared, **kwargs)

    @property
    def impl(self) -> str:
        return self.attn.impl

    @impl.setter
    def impl(self, value: str) -> None:
        self.attn.impl = value

    def forward(self, f_c: Tensor, f_d: Tensor) -> tuple[Tensor, Tensor]:
        u_c, u_d = self.attn.updates(self.down[0](f_c), self.down[-1](f_d))
        return add_update(f_c, self.up[0](u_c)), add_update(f_d, self.up[-1](u_d))

    def forward_stacked(self, x: Tensor, batch: int) -> Tensor:
        """x = cat([f_c, f_d]) -> cat(forward(f_c, f_d)); with shared weights the two modalities stay
        one batch through both 1x1 projections and the block (see SharedCrossAttention)."""
        if not self.shared:
            return torch.cat(self.forward(x[:batch], x[batch:]))
        return add_update(x, self.up[0](self.attn.update_stacked(self.down[0](x), batch)))


def build_cross_attention(
    encoder: StagedBackbone,
    *,
    stages: list[int],
    mode: str,
    num_heads: int,
    impl: str,
    kv_reduction: Any,
    image_size: int,
    xattn_dim: int | str = "auto",
) -> tuple[nn.ModuleDict, dict[str, Any]]:
    """One cross-attention block per chosen stage (keyed by the stage index as a string).

    Blocks attend at `xattn_dim` channels (`auto`: min(C, 256); `full`: C; an int: min(C, int));
    below C they are wrapped in `ProjectedCrossAttention`. Returns the blocks and a description
    (stage, channels, attention width, heads, kv_reduction) for the report.
    `mode="none"` gives an empty ModuleDict.
    """
    if not (
        xattn_dim in ("auto", "full") or (isinstance(xattn_dim, int) and not isinstance(xattn_dim, bool))
    ):
        raise ConfigError(f"xattn_dim: expected 'auto', 'full' or an integer >= 1, got {xattn_dim!r}")
    blocks = nn.ModuleDict()
    keys = ("stages", "channels", "attn_dim", "heads", "kv_reduction")
    info: dict[str, Any] = {"xattn": mode, **{k: [] for k in keys}}
    if mode == "none":
        return blocks, info
    for s, r in zip(stages, _kv_reductions(kv_reduction, encoder, stages, image_size), strict=True):
        dim = encoder.channels[s]
        d = _attn_dim(xattn_dim, dim)
        h = _heads_for(d, num_heads)
        kw = dict(num_heads=h, impl=impl, kv_reduction=r, shared=mode == "shared")
        blocks[str(s)] = (
            SharedCrossAttention(dim, **kw) if d == dim else ProjectedCrossAttention(dim, d, **kw)
        )
        for k, v in zip(keys, (s, dim, d, h, r), strict=True):
            info[k].append(v)
    return blocks, info


class TwoImageModel(nn.Module):
    """What SSN and the dual baseline share: their parts (encoder, cross-attention, heads) for
    per-part parameter counts, and switching the attention core of every block in place."""

    encoder: nn.Module
    cross_attention: nn.ModuleDict
    heads: nn.ModuleDict
    config: dict[str, Any]

    def parts(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "cross_attention": self.cross_attention, "heads": self.heads}

    def no_weight_decay(self) -> set[str]:
        """What timm's optimizer helpers must not decay (the backbones' position tables/tokens)."""
        return no_weight_decay(self)

    def set_xattn_impl(self, impl: str) -> None:
        """Switch every cross-attention block's core (e.g. `triton` on a GPU) without rebuilding."""
        impl = check_choice("xattn_impl", impl, IMPLS)
        for block in self.cross_attention.values():
            block.impl = impl
        self.config["xattn_impl"] = impl

    def set_xattn_cuda_graph(self, enabled: bool) -> None:
        """Replay every cross-attention block as CUDA graphs in CUDA training steps (see
        models/block_graphs.py: why, and where it falls back to eager), or stop doing so."""
        enabled = check_bool("xattn_cuda_graph", enabled)
        self.block_graphs = (
            {int(k): BlockGraphs(b) for k, b in self.cross_attention.items()} if enabled else {}
        )
        self.config["xattn_cuda_graph"] = enabled

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> TwoImageModel:
        """.to()/.cuda()/.cpu()/.half() move the parameters: captured graphs would read the old
        storage (and keep its GPU memory), so they are dropped; the next training call recaptures."""
        for graphs in getattr(self, "block_graphs", {}).values():
            graphs.clear()
        return super()._apply(fn, *args, **kwargs)
