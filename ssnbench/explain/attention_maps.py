"""Where one modality looks in the other (cross-attention probabilities) and what each head used
(Grad-CAM), for CNN and transformer backbones.

Cross-attention: the fused Triton kernel never materialises the softmax probabilities (it keeps only
each row's log-sum-exp for its backward), so `capture_attention` switches every block to the
`reference` core for the duration and records, at each cross-attention stage, the probabilities that
core computes: softmax(q kᵀ/√d) per direction, recomputed from the very q and k the block passes to
it. They are averaged over heads and query positions into one map over the key grid: "where, on
average, the derm queries attend in the clinical photo" (and vice versa). Keys pooled by the block's
`kv_reduction` give a coarser grid than the stage's map.

Grad-CAM: captum's `LayerGradCam` on a tap placed after the encoder's last stage (for a ViT, whose
class token is what gets pooled, before its last block), where every
backbone (NCHW CNN, NHWC Swin, NLC ViT with prefix tokens) is first turned into a [B, C, H, W] map
by its own `to_map`, so one code path serves all of them. SSN's shared encoder runs both images as
one batch of 2B, so its tap yields the clinic CAM (first B) and the derm CAM (last B) in one pass;
the dual model has one tap per encoder.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

__all__ = ["AttentionMaps", "capture_attention", "grad_cam", "require_captum"]

EXTRA_HINT = "pip install 'ssnbench[explain]'"


def require_captum():
    """captum.attr, or a one-line UserError naming the extra that provides it."""
    from ssnbench.errors import UserError

    try:
        import captum.attr as attr
    except ImportError:
        raise UserError(f"Grad-CAM needs captum, which is not installed: {EXTRA_HINT}") from None
    return attr


@dataclass
class AttentionMaps:
    """Per cross-attention stage (sorted), for each direction, the head- and query-averaged attention
    over the OTHER modality's key grid: `to_clinic[s]` is where derm queries attend in the clinical
    photo ([B, h, w]), `to_derm[s]` where clinic queries attend in the dermoscopy image."""

    stages: list[int] = field(default_factory=list)
    to_clinic: dict[int, Tensor] = field(default_factory=dict)
    to_derm: dict[int, Tensor] = field(default_factory=dict)
    kv_reduction: dict[int, int] = field(default_factory=dict)


def _grid(length: int, hint: tuple[int, int] | None) -> tuple[int, int]:
    if hint is not None and hint[0] * hint[1] == length:
        return hint
    side = math.isqrt(length)
    if side * side != length:
        raise ValueError(f"cannot lay {length} key tokens out on a grid")
    return side, side


def _key_grids(
    model: nn.Module, stages: list[int], image_size: int | None
) -> dict[int, tuple[int, int] | None]:
    enc = model.encoder["clinic"] if isinstance(model.encoder, nn.ModuleDict) else model.encoder
    out: dict[int, tuple[int, int] | None] = {}
    for s in stages:
        block = model.cross_attention[str(s)]
        r = getattr(getattr(block, "attn", block), "kv_reduction", 1)
        if image_size is None:
            out[s] = None
            continue
        h, w = enc.stage_grid(s, image_size)
        out[s] = (math.ceil(h / r), math.ceil(w / r))
    return out


@contextlib.contextmanager
def capture_attention(model: nn.Module, image_size: int | None = None) -> Iterator[AttentionMaps]:
    """Inside the block, every forward of `model` records its cross-attention maps (the last forward's
    maps win). Blocks run on the reference core meanwhile; their `impl` is restored afterwards."""
    import ssnbench.kernels.reference as ref

    blocks = getattr(model, "cross_attention", None) or {}
    stages = sorted(int(k) for k in blocks)
    maps = AttentionMaps(stages=stages)
    grids = _key_grids(model, stages, image_size) if stages else {}
    for s in stages:
        b = blocks[str(s)]
        maps.kv_reduction[s] = int(getattr(getattr(b, "attn", b), "kv_reduction", 1))
    impls = {k: b.impl for k, b in blocks.items()}
    original = ref.shared_cross_attention_reference
    calls: list[tuple[Tensor, Tensor]] = []

    def spy(q_c, k_c, v_c, q_d, k_d, v_d, scale=None):
        s = ref.resolve_scale(q_c.shape[-1], scale)
        with torch.no_grad():
            p_c = torch.softmax(q_c.float() @ k_d.float().transpose(-2, -1) * s, dim=-1)  # clinic q -> derm k
            p_d = torch.softmax(q_d.float() @ k_c.float().transpose(-2, -1) * s, dim=-1)  # derm q -> clinic k
            calls.append((p_c.mean(dim=(1, 2)), p_d.mean(dim=(1, 2))))  # [B, L_keys]
        if len(calls) == len(stages):  # one full forward: publish, start over on the next one
            for stage, (to_derm, to_clinic) in zip(stages, calls, strict=True):
                g = grids.get(stage)
                maps.to_derm[stage] = to_derm.reshape(to_derm.shape[0], *_grid(to_derm.shape[1], g))
                maps.to_clinic[stage] = to_clinic.reshape(to_clinic.shape[0], *_grid(to_clinic.shape[1], g))
            calls.clear()
        return original(q_c, k_c, v_c, q_d, k_d, v_d, scale)

    try:
        for b in blocks.values():
            b.impl = "reference"
        ref.shared_cross_attention_reference = spy
        yield maps
    finally:
        ref.shared_cross_attention_reference = original
        for k, b in blocks.items():
            b.impl = impls[k]


# ---------------------------------------------------------------------------------------------
# Grad-CAM


class _Tapped(nn.Module):
    """Wraps the module that produces a backbone's last native output: native -> map -> tap -> native,
    so a hook on `tap` sees a [B, C, H, W] map whatever the backbone's layout."""

    def __init__(self, inner: nn.Module, encoder: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.tap = nn.Identity()
        self._encoder = [encoder]  # a list: not registered as a submodule (no cycle)

    def forward(self, x: Tensor) -> Tensor:
        y = self.inner(x)
        enc = self._encoder[0]
        return enc.from_map(self.tap(enc.to_map(y)), y)


def _encoders(model: nn.Module) -> list[tuple[nn.Module, tuple[str, ...]]]:
    """(staged backbone, the modalities whose images it encodes) for SSN, dual and single models."""
    enc = model.encoder
    if isinstance(enc, nn.ModuleDict):
        return [(enc[m], (m,)) for m in enc]
    return [(enc, tuple(getattr(model, "modalities", ("clinic", "derm"))))]


@contextlib.contextmanager
def _taps(model: nn.Module) -> Iterator[list[tuple[nn.Module, tuple[str, ...]]]]:
    """Install a `_Tapped` wrapper on each encoder's last stage; removed on exit."""
    undo = []
    taps = []
    try:
        for enc, mods in _encoders(model):
            if enc.stages is not None:
                seq, last = enc.stages, len(enc.stages) - 1
            else:  # ViT: pooled from the class token, which reads the patch tokens only through the
                # last block's attention: tap that block's INPUT (the usual ViT Grad-CAM layer)
                seq = enc.vit.blocks
                last = max(0, len(seq) - 2)
            wrapped = _Tapped(seq[last], enc)
            undo.append((seq, last, seq[last]))
            seq[last] = wrapped
            taps.append((wrapped.tap, mods))
        yield taps
    finally:
        for seq, i, inner in undo:
            seq[i] = inner


def grad_cam(
    model: nn.Module, clinic: Tensor, derm: Tensor, head: str, *, target: int, label_index: int = 0
) -> dict[str, Tensor]:
    """Grad-CAM (ReLU'd, upsampled to the image size, scaled to [0, 1] per image) of head `head`'s
    logit for class `target` of label `label_index` (0: DIAG), on each image the model reads:
    {modality: [B, H, W]}."""
    attr = require_captum()
    model.eval()
    out: dict[str, Tensor] = {}
    size = clinic.shape[-2:]

    def forward(c: Tensor, d: Tensor) -> Tensor:
        return model(c, d)[head][label_index]

    with _taps(model) as taps:
        for tap, mods in taps:
            cam = attr.LayerGradCam(forward, tap)
            a = cam.attribute((clinic, derm), target=int(target), relu_attributions=True)
            a = attr.LayerAttribution.interpolate(a.detach(), tuple(size), interpolate_mode="bilinear")[:, 0]
            b = clinic.shape[0]
            parts = [a] if len(mods) == 1 else [a[:b], a[b:]]
            for m, part in zip(mods, parts, strict=True):
                peak = part.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
                out[m] = (part / peak).cpu()
    return out
