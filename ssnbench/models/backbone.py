"""A timm backbone, by name, split into feature stages so that blocks can act between stages.

timm's `features_only` wrappers return all stage outputs at the end of one forward; SSN needs to
*change* the features between stages (cross-attention of the two modalities), so we split the
model ourselves:

* hierarchical models with `feature_info` (ResNet, ConvNeXt, EfficientNet, RegNet, DenseNet,
  MobileNet, Swin, ...): the model's children are flattened in order (the same assumption timm's
  FeatureListNet makes: `forward_features` runs its children in sequence) and cut after each
  `feature_info` module. Swin's stages are NHWC; `to_map`/`from_map` convert.
* plain ViTs (timm `VisionTransformer`: vit_*, deit_*): the blocks are grouped into `vit_stages`
  stages of equal depth; the patch tokens are reshaped to a [B, C, H, W] map (prefix tokens are
  carried along untouched).

`StagedBackbone` exposes `forward_stage(i, x)` in the model's native layout, `to_map`/`from_map`
for [B, C, H, W] maps, `pool` (global average, or the ViT's own token pooling) and `channels`,
`reductions` per stage. `encode_pair` runs two images through (one or two) backbones in lock-step
with optional blocks after chosen stages: it is the forward of every two-image model.

Weights (models/weights.py): `pretrained=False` (random init), `True` (timm's pretrained weights
through the Hugging Face cache; `hf-hub:` names too) or a local file through timm's
`pretrained_cfg_overlay=dict(file=...)`; the classifier is dropped and any other missing or
unexpected key is an error. Each backbone keeps timm's data config (normalisation, interpolation),
the weights record and the names timm excludes from weight decay.
"""

from __future__ import annotations

import difflib
import math
from collections import OrderedDict
from collections.abc import Mapping
from fnmatch import fnmatch
from pathlib import Path
from typing import TYPE_CHECKING, Any

import timm
import torch
from torch import Tensor, nn

from ssnbench.errors import ConfigError
from ssnbench.models.weights import create_timm_model, is_hub_name

if TYPE_CHECKING:
    from ssnbench.models.block_graphs import BlockGraphs

__all__ = [
    "KV_TOKEN_BUDGET",
    "StagedBackbone",
    "auto_kv_reduction",
    "backbone_data_config",
    "backbone_weights",
    "create_backbone",
    "encode_pair",
    "no_weight_decay",
]

#: Default K/V token budget per image for cross-attention (28x28): `kv_reduction: auto` pools K/V
#: of larger stages down to at most this many tokens (e.g. the stride-4 stage at 224 px: 3136 -> 784).
KV_TOKEN_BUDGET = 784

def _suggest(name: str) -> str:
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    return f"; close matches: {', '.join(close)}" if close else "; see timm.list_models()"


def _check_backbone_name(name: object) -> str:
    """A timm model name, optionally with a weights tag (`resnet50.a1_in1k`), or `hf-hub:<repo>`."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"backbone: expected a timm model name, got {name!r}")
    if is_hub_name(name):
        if not name.split(":", 1)[1].strip():
            raise ConfigError(f"backbone: {name!r} names no Hugging Face Hub repo (hf-hub:timm/<model>)")
        return name
    if not timm.is_model(name):
        raise ConfigError(f"backbone: unknown timm model {name!r}{_suggest(name)}")
    return name


def _no_weight_decay_params(model: nn.Module) -> set[int]:
    """ids of the parameters timm's `model.no_weight_decay()` names (exact names or fnmatch patterns):
    position embeddings, class tokens, Swin's relative position tables. Ids, because splitting the
    model into stages renames every parameter."""
    fn = getattr(model, "no_weight_decay", None)
    if fn is None:
        return set()
    patterns = set(fn())
    return {
        id(p) for n, p in model.named_parameters() if n in patterns or any(fnmatch(n, q) for q in patterns)
    }


def _flatten_until(model: nn.Module, targets: list[str]) -> list[tuple[str, nn.Module]]:
    """The model's modules in execution order, descending only into containers holding a target."""
    leaves: list[tuple[str, nn.Module]] = []

    def visit(module: nn.Module, prefix: str) -> None:
        for child_name, child in module.named_children():
            q = f"{prefix}{child_name}"
            if q in targets or not any(t.startswith(q + ".") for t in targets):
                leaves.append((q, child))
            else:
                if not isinstance(child, (nn.Sequential, nn.ModuleList)):
                    raise ValueError(f"{q} ({type(child).__name__}) is not a sequential container")
                visit(child, q + ".")

    visit(model, "")
    names = [n for n, _ in leaves]
    last = names.index(targets[-1])
    return leaves[: last + 1]


class StagedBackbone(nn.Module):
    """A timm model cut into stages; see the module docstring.

    Attributes: `name`, `fmt` (`NCHW`, `NHWC` or `NLC`), `channels`/`reductions` per stage,
    `num_features` (pooled width), `num_stages`.
    """

    def __init__(self, name: str, model: nn.Module, vit_stages: int = 4) -> None:
        super().__init__()
        self.name = name
        from timm.data import resolve_model_data_config
        from timm.models.vision_transformer import VisionTransformer

        #: normalisation and interpolation the weights expect (timm's pretrained config)
        self.data_config: dict[str, Any] = dict(resolve_model_data_config(model))
        #: what weights were loaded (tag, source, file, sha256); see models/weights.py
        self.weights: dict[str, Any] = dict(getattr(model, "ssnbench_weights", {"tag": None}))
        no_wd = _no_weight_decay_params(model)
        if isinstance(model, VisionTransformer):
            self._init_vit(model, vit_stages)
        else:
            self._init_hierarchical(model)
        self.num_stages = len(self.channels)
        self.num_features = self.channels[-1]
        self._no_weight_decay = frozenset(n for n, p in self.named_parameters() if id(p) in no_wd)

    def no_weight_decay(self) -> set[str]:
        """Names (in this module) of the parameters timm excludes from weight decay."""
        return set(self._no_weight_decay)

    # ----------------------------------------------------------------------------- construction
    def _init_hierarchical(self, model: nn.Module) -> None:
        info = getattr(model, "feature_info", None)
        if not info:
            raise ConfigError(f"backbone: {self.name!r} exposes no feature stages (timm feature_info)")
        targets = [f["module"] for f in info]
        try:
            leaves = _flatten_until(model, targets)
        except ValueError as err:
            raise ConfigError(f"backbone: {self.name!r} cannot be split into stages ({err})") from None
        stages, current = [], []
        for qname, module in leaves:
            current.append((qname.replace(".", "_"), module))
            if qname in targets:
                stages.append(nn.Sequential(OrderedDict(current)))
                current = []
        self.stages = nn.ModuleList(stages)
        self.channels = tuple(int(f["num_chs"]) for f in info)
        self.reductions = tuple(int(f["reduction"]) for f in info)
        fmt = str(getattr(model, "output_fmt", "NCHW"))
        self.fmt = "NHWC" if fmt.endswith("NHWC") else "NCHW"
        self.vit = None

    def _init_vit(self, model: nn.Module, vit_stages: int) -> None:
        depth = len(model.blocks)
        n = int(vit_stages)
        if not 1 <= n <= depth:
            raise ConfigError(f"vit_stages: must be in 1..{depth} for {self.name!r}, got {vit_stages!r}")
        bounds = [round(depth * (i + 1) / n) for i in range(n)]
        self.vit = model  # keeps patch_embed, pos/cls tokens, blocks, norms (its head is Identity)
        self._bounds = [0, *bounds]
        self.stages = None
        dim = int(model.embed_dim)
        patch = model.patch_embed.patch_size
        self.channels = (dim,) * n
        self.reductions = (int(patch[0]),) * n
        self.grid = tuple(int(g) for g in model.patch_embed.grid_size)
        self.num_prefix_tokens = int(model.num_prefix_tokens)
        self.fmt = "NLC"

    # ---------------------------------------------------------------------------------- forward
    def forward_stage(self, i: int, x: Tensor) -> Tensor:
        """Run stage i on x (the image for i = 0, else stage i-1's native output)."""
        if self.vit is None:
            return self.stages[i](x)
        v = self.vit
        if i == 0:
            x = v.norm_pre(v.patch_drop(v._pos_embed(v.patch_embed(x))))
        for blk in v.blocks[self._bounds[i] : self._bounds[i + 1]]:
            x = blk(x)
        return x

    def to_map(self, x: Tensor) -> Tensor:
        """Native stage output -> [B, C, H, W] map."""
        if self.fmt == "NCHW":
            return x
        if self.fmt == "NHWC":
            return x.permute(0, 3, 1, 2)
        tokens = x[:, self.num_prefix_tokens :]
        return tokens.transpose(1, 2).reshape(x.shape[0], x.shape[2], *self.grid)

    def from_map(self, m: Tensor, like: Tensor) -> Tensor:
        """[B, C, H, W] map -> native layout (`like` is the native tensor it came from)."""
        if self.fmt == "NCHW":
            return m
        if self.fmt == "NHWC":
            return m.permute(0, 2, 3, 1)
        return torch.cat([like[:, : self.num_prefix_tokens], m.flatten(2).transpose(1, 2)], dim=1)

    def pool(self, x: Tensor) -> Tensor:
        """Last stage's native output -> pooled features [B, num_features]."""
        if self.fmt == "NCHW":
            return x.mean(dim=(2, 3))
        if self.fmt == "NHWC":
            return x.mean(dim=(1, 2))
        return self.vit.forward_head(self.vit.norm(x), pre_logits=True)

    def forward_maps(self, x: Tensor) -> list[Tensor]:
        """Every stage's output as a [B, C, H, W] map (for inspection and tests)."""
        maps = []
        for i in range(self.num_stages):
            x = self.forward_stage(i, x)
            maps.append(self.to_map(x))
        return maps

    def forward(self, x: Tensor) -> Tensor:
        for i in range(self.num_stages):
            x = self.forward_stage(i, x)
        return self.pool(x)

    def stage_grid(self, i: int, image_size: int) -> tuple[int, int]:
        """Spatial size of stage i's map for a square input of `image_size` pixels."""
        if self.vit is not None:
            return self.grid
        s = math.ceil(image_size / self.reductions[i])
        return s, s


def create_backbone(
    name: str,
    pretrained: bool | str | Path | None = False,
    image_size: int = 224,
    vit_stages: int = 4,
    drop_path_rate: float = 0.0,
    backbone_kwargs: Mapping[str, Any] | None = None,
) -> StagedBackbone:
    """Build timm model `name` (random init, timm's pretrained weights or a local file; see
    models/weights.py) and split it into stages.

    `image_size` is passed to models with a fixed input size (ViT, Swin) as `img_size`;
    `drop_path_rate` (when > 0) and `backbone_kwargs` go to `timm.create_model` as they are.
    Unknown names, missing files, options timm refuses and unsplittable models raise ConfigError.
    """
    name = _check_backbone_name(name)
    if backbone_kwargs is not None and not isinstance(backbone_kwargs, Mapping):
        raise ConfigError(f"backbone_kwargs: expected a mapping of timm options, got {backbone_kwargs!r}")
    kwargs: dict[str, Any] = {"num_classes": 0, **dict(backbone_kwargs or {})}
    if drop_path_rate:
        kwargs["drop_path_rate"] = drop_path_rate
    try:
        try:
            model = create_timm_model(name, pretrained, img_size=image_size, **kwargs)
        except TypeError as err:  # CNNs take any input size and reject img_size
            if "img_size" not in str(err):
                raise
            model = create_timm_model(name, pretrained, **kwargs)
    except TypeError as err:
        extra = ", ".join(sorted(k for k in kwargs if k != "num_classes")) or "these options"
        raise ConfigError(f"backbone_kwargs: timm model {name!r} does not accept {extra}: {err}") from None
    except (AssertionError, ValueError) as err:
        raise ConfigError(f"image_size: {image_size} does not suit backbone {name!r}: {err}") from None
    return StagedBackbone(name, model, vit_stages=vit_stages)


def _backbones(model: nn.Module) -> list[tuple[str, StagedBackbone]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, StagedBackbone)]


def no_weight_decay(model: nn.Module) -> set[str]:
    """Full parameter names in `model` that timm's optimizer helpers should not decay (every
    backbone's `no_weight_decay()`, prefixed); two-image models return this from their own
    `no_weight_decay()`, which `timm.optim.create_optimizer_v2` reads."""
    return {f"{prefix}.{n}" if prefix else n for prefix, b in _backbones(model) for n in b.no_weight_decay()}


def backbone_data_config(model: nn.Module) -> dict[str, Any]:
    """The first backbone's timm data config (mean, std, interpolation, ...), {} without a backbone."""
    found = _backbones(model)
    return dict(found[0][1].data_config) if found else {}


def backbone_weights(model: nn.Module) -> dict[str, Any]:
    """The first backbone's weights record (tag, source, file, sha256)."""
    found = _backbones(model)
    return dict(found[0][1].weights) if found else {"tag": None}


def auto_kv_reduction(grid: tuple[int, int], budget: int = KV_TOKEN_BUDGET) -> int:
    """Smallest pooling factor r with ceil(H/r)·ceil(W/r) ≤ budget (1 when the stage is small)."""
    h, w = grid
    r = 1
    while math.ceil(h / r) * math.ceil(w / r) > budget:
        r += 1
    return r


def _apply_stacked(block: nn.Module, m: Tensor, b: int, graphs: BlockGraphs | None = None) -> Tensor:
    """block on a [2B, C, H, W] map holding clinic (first b) then derm: its `forward_stacked` if it
    has one (through `graphs`, its BlockGraphs, when given), else its two-map forward on the
    halves, re-stacked."""
    stacked = getattr(block, "forward_stacked", None)
    if stacked is not None and graphs is not None:
        return graphs.stacked(m, b)
    if stacked is not None:
        return stacked(m, b)
    return torch.cat(block(m[:b], m[b:]))


def encode_pair(
    enc_c: StagedBackbone,
    enc_d: StagedBackbone,
    clinic: Tensor,
    derm: Tensor,
    *,
    blocks: Mapping[int, nn.Module] | nn.ModuleDict | None = None,
    graphs: Mapping[int, BlockGraphs] | None = None,
) -> tuple[Tensor, Tensor]:
    """Pooled features of both images; `blocks[i](f_c, f_d)` acts on the maps after stage i.

    With one shared encoder (`enc_c is enc_d`) and equal image sizes both images run as ONE batch
    of 2B (one pass of the encoder; BatchNorm sees both modalities together, as in SSN); otherwise
    each modality runs on its own. On the one-batch path a block with `forward_stacked(m, b)` gets the
    2B map as is (SharedCrossAttention: no split and re-concatenation around it). `graphs[i]`, a
    `BlockGraphs` of block i, replays that block as CUDA graphs where it can (`xattn_cuda_graph`).
    """
    blocks = {int(k): v for k, v in (blocks or {}).items()}
    graphs = {int(k): v for k, v in (graphs or {}).items()}
    b = clinic.shape[0]
    if enc_c is enc_d and clinic.shape == derm.shape:
        x = torch.cat([clinic, derm])
        for i in range(enc_c.num_stages):
            x = enc_c.forward_stage(i, x)
            if i in blocks:
                x = enc_c.from_map(_apply_stacked(blocks[i], enc_c.to_map(x), b, graphs.get(i)), x)
        f = enc_c.pool(x)
        return f[:b], f[b:]
    x_c, x_d = clinic, derm
    for i in range(enc_c.num_stages):
        x_c, x_d = enc_c.forward_stage(i, x_c), enc_d.forward_stage(i, x_d)
        if i in blocks:
            run = graphs[i].pair if i in graphs else blocks[i]
            m_c, m_d = run(enc_c.to_map(x_c), enc_d.to_map(x_d))
            x_c, x_d = enc_c.from_map(m_c, x_c), enc_d.from_map(m_d, x_d)
    return enc_c.pool(x_c), enc_d.pool(x_d)
