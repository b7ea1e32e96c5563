"""Training losses over the heads of a multi-modal Derm7pt model, and how the heads combine at inference.

A model returns `{head: [8 logit tensors]}` with heads among `clinic`, `derm` and `fused`. Per head
the loss is the mean of the 8 label cross-entropies (each optionally class-weighted); the heads'
losses are then combined with per-head weights:

* `equal`: every head present gets the same weight (FusionM4Net trains its clinic, derm and fused
  heads with 1/3 each).
* `prior`: the prior-inspired biased loss of SSN (Tang & Lasser, arXiv 2403.19203): the dermoscopy
  head is weighted above the clinical one, plus the fused head. Defaults, `PRIOR_WEIGHTS`:
  derm 0.5, fused 0.3, clinic 0.2. Reasoning: (1) the paper's prior is that dermoscopy carries
  more diagnostic information than a clinical photo, and all seven checklist criteria are
  *dermoscopic* structures (pigment network, blue-whitish veil, streaks, ...) that a clinical photo
  often does not resolve; Kawahara et al. (2018) report derm-only nets clearly above clinic-only
  ones on Derm7pt. So derm gets the largest single weight (0.5, i.e. as much as the other two
  together). (2) The fused head sees both modalities and is what combines them; it gets the middle
  weight (0.3) so the cross-modal path keeps a strong gradient. (3) Clinic keeps a non-zero weight
  (0.2) so the shared encoder still learns to read clinical photos (the biased loss *prioritises*
  dermoscopy, it does not drop clinic). The ordering derm > fused > clinic is the paper's prior;
  the exact coefficients of the paper's formulation could not be checked here, so they are ours,
  configurable per model (`loss_weights` in a suite) and reported.

Weights are relative: they are renormalised over the heads a model actually has, so a `single`
model's only head gets weight 1 under either scheme.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssnbench.data.labels import LABELS, MODALITIES, NUM_CLASSES
from ssnbench.errors import ConfigError

__all__ = [
    "EQUAL_WEIGHTS",
    "HEADS",
    "LOSS_SCHEMES",
    "PRIOR_WEIGHTS",
    "MultiHeadLoss",
    "class_weights_from_labels",
    "combine_probabilities",
    "describe_combination",
    "head_weights_for",
]

HEADS: tuple[str, ...] = (*MODALITIES, "fused")  # one per modality, plus the fused one
LOSS_SCHEMES: tuple[str, ...] = ("prior", "equal")
PRIOR_WEIGHTS: dict[str, float] = {"clinic": 0.2, "derm": 0.5, "fused": 0.3}
EQUAL_WEIGHTS: dict[str, float] = {"clinic": 1.0 / 3, "derm": 1.0 / 3, "fused": 1.0 / 3}


def head_weights_for(
    scheme: str, heads: Sequence[str], overrides: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Per-head weights (summing to 1) of `scheme` for the heads a model has.

    `overrides` replace the scheme's default for the heads they name (others keep the default);
    the result is renormalised over `heads` so the weights stay comparable across models.
    Raises ConfigError for an unknown scheme/head or a negative, non-finite or all-zero weighting.
    """
    if scheme not in LOSS_SCHEMES:
        raise ConfigError(f"loss: unknown scheme {scheme!r}; expected one of {', '.join(LOSS_SCHEMES)}")
    heads = tuple(heads)
    if not heads:
        raise ValueError("head_weights_for: a model needs at least one head")
    unknown = [h for h in (*heads, *(overrides or {})) if h not in HEADS]
    if unknown:
        raise ConfigError(f"loss_weights: unknown head {unknown[0]!r}; expected among {', '.join(HEADS)}")
    base = dict(PRIOR_WEIGHTS if scheme == "prior" else EQUAL_WEIGHTS)
    for head, value in (overrides or {}).items():
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value < 0
        ):
            raise ConfigError(f"loss_weights: weight of {head!r} must be a finite number >= 0, got {value!r}")
        base[head] = float(value)
    return _normalise({h: base[h] for h in heads})


def _normalise(weights: Mapping[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    if total <= 0:
        raise ConfigError(
            f"loss_weights: the heads present ({', '.join(weights)}) all have weight 0; "
            "give one a positive weight"
        )
    return {h: w / total for h, w in weights.items()}


def class_weights_from_labels(
    labels: Tensor, num_classes: Sequence[int] = NUM_CLASSES, power: float = 1.0
) -> list[Tensor]:
    """Inverse-frequency class weights per label from the TRAIN targets `labels` [N, 8].

    w_k = (N / (K * n_k)) ** power (scikit-learn's "balanced" for power=1), so a balanced label
    gets all-ones weights; `power=0.5` is a softer variant. A class absent from the train split gets
    weight 1.0 (it never appears as a target, so its value does not matter). Why: Derm7pt is
    imbalanced (e.g. DIAG: 575 NEV vs 42 BCC) and plain CE mostly learns the majority classes.
    """
    labels = torch.as_tensor(labels).long()
    if labels.dim() != 2 or labels.shape[1] != len(num_classes):
        raise ValueError(f"labels must be [N, {len(num_classes)}], got {tuple(labels.shape)}")
    out = []
    for i, k in enumerate(num_classes):
        counts = torch.bincount(labels[:, i], minlength=k)[:k].double()
        w = torch.ones(k, dtype=torch.float64)
        present = counts > 0
        w[present] = (labels.shape[0] / (k * counts[present])) ** power
        out.append(w.float())
    return out


class MultiHeadLoss(nn.Module):
    """Weighted sum over heads of the mean over the 8 labels of the cross-entropy.

    Args:
        head_weights: weight per head; its heads must be exactly the model's output heads
            (use `head_weights_for`).
        class_weights: optional list of 8 per-class weight tensors (see `class_weights_from_labels`),
            kept as buffers so they follow `.to(device)`.
    """

    def __init__(
        self, head_weights: Mapping[str, float], class_weights: Sequence[Tensor] | None = None
    ) -> None:
        super().__init__()
        if not head_weights:
            raise ValueError("MultiHeadLoss needs at least one head weight")
        self.head_weights = {str(h): float(w) for h, w in head_weights.items()}
        self.num_labels = len(LABELS)
        self._has_class_weights = class_weights is not None
        self._layouts: dict[tuple, tuple[Tensor, Tensor, Tensor | None]] = {}
        if class_weights is not None:
            if len(class_weights) != self.num_labels:
                raise ValueError(
                    f"class_weights must hold {self.num_labels} tensors, got {len(class_weights)}"
                )
            for i, w in enumerate(class_weights):
                self.register_buffer(
                    f"class_weight_{i}", torch.as_tensor(w, dtype=torch.float32), persistent=False
                )

    def _layout(self, ks: tuple[int, ...], device: torch.device) -> tuple[Tensor, Tensor, Tensor | None]:
        """For label sizes `ks`: the column index that lays one head's concatenated logits out as
        [8, K_max] rows (missing classes point at a -inf pad column), the row offsets of the labels
        in that layout, and the class weights laid out the same way (None without class weights)."""
        key = (ks, device)
        if key not in self._layouts:
            kmax, pad = max(ks), sum(ks)
            starts = [sum(ks[:i]) for i in range(len(ks))]
            index = [[s + j if j < k else pad for j in range(kmax)] for s, k in zip(starts, ks, strict=True)]
            weights = None
            if self._has_class_weights:
                weights = torch.zeros(len(ks), kmax)
                for i, k in enumerate(ks):
                    w = getattr(self, f"class_weight_{i}")
                    if w.numel() != k:
                        raise ValueError(f"class_weights[{i}]: {w.numel()} weights for a {k}-class label")
                    weights[i, :k] = w
                weights = weights.view(-1).to(device)
            offsets = torch.arange(len(ks), device=device) * kmax
            self._layouts[key] = (torch.tensor(index, device=device).view(-1), offsets, weights)
        return self._layouts[key]

    def head_loss(self, logits: Sequence[Tensor], labels: Tensor) -> Tensor:
        """Mean over the labels of one head's cross-entropies (computed in fp32 for AMP safety).

        All 8 labels in one cross-entropy over a [B*8, K_max] layout of the head's logits (classes a
        label lacks are -inf, so they take no probability): the same value and gradients as 8
        `F.cross_entropy` calls, class weights included, in a dozen ops instead of ~40 per head,
        forward and backward. Labels are trusted to be in range (the dataset reader checks them).
        """
        if len(logits) != self.num_labels:
            raise ValueError(f"a head must give {self.num_labels} logit tensors, got {len(logits)}")
        batch, n = labels.shape[0], self.num_labels
        index, offsets, weights = self._layout(tuple(lg.shape[1] for lg in logits), labels.device)
        flat = torch.cat(list(logits), dim=1).float()
        scores = F.pad(flat, (0, 1), value=float("-inf"))[:, index].view(batch * n, -1)
        nll = F.cross_entropy(scores, labels.reshape(batch * n), reduction="none").view(batch, n)
        if weights is None:
            return nll.mean()
        w = weights[labels + offsets]  # [B, 8]: each case's class weight, per label
        return ((w * nll).sum(0) / w.sum(0)).mean()

    def forward(
        self, outputs: Mapping[str, Sequence[Tensor]], labels: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """(total loss, per-head loss) for a model's outputs and targets `labels` [B, 8]."""
        if set(outputs) != set(self.head_weights):
            raise ValueError(
                f"loss heads {sorted(self.head_weights)} do not match the model's output heads "
                f"{sorted(outputs)}"
            )
        per_head = {h: self.head_loss(outputs[h], labels) for h in outputs}
        total = sum(self.head_weights[h] * per_head[h] for h in per_head)
        return total, per_head


def combine_probabilities(
    outputs: Mapping[str, Sequence[Tensor]], weights: Mapping[str, float] | None = None
) -> list[Tensor]:
    """Per label, the weighted mean over heads of the softmax probabilities ([B, K_i] each).

    `weights` default to the prior (`PRIOR_WEIGHTS`); heads missing from `weights` get 0 and the
    weights are renormalised over the heads present in `outputs`, so a `single` model's only head
    is used as is. Averaging probabilities (not logits) keeps each head's calibration.
    """
    heads = list(outputs)
    w = dict(PRIOR_WEIGHTS if weights is None else weights)
    present = {h: float(w.get(h, 0.0)) for h in heads}
    if sum(present.values()) <= 0:
        if len(heads) == 1:
            present = {heads[0]: 1.0}
        else:
            raise ValueError(f"combine_probabilities: the heads {heads} all have weight 0")
    present = _normalise(present)
    n = len(next(iter(outputs.values())))
    probs = []
    for i in range(n):
        p = None
        for h in heads:
            if present[h] == 0:
                continue
            term = present[h] * outputs[h][i].float().softmax(dim=-1)
            p = term if p is None else p + term
        probs.append(p)
    return probs


def describe_combination(heads: Sequence[str], weights: Mapping[str, float] | None = None) -> str:
    """One line for the report: how a model with `heads` combines them at inference."""
    heads = list(heads)
    if len(heads) == 1:
        return f"{heads[0]} head only"
    w = dict(PRIOR_WEIGHTS if weights is None else weights)
    try:
        norm = _normalise({h: float(w.get(h, 0.0)) for h in heads})
    except ConfigError:
        return "invalid weights (all zero)"
    used = [(h, v) for h, v in sorted(norm.items(), key=lambda kv: -kv[1]) if v > 0]
    if len(used) == 1:
        return f"{used[0][0]} head only"
    terms = ", ".join(f"{h} {v:.2f}" for h, v in used)
    return f"weighted mean of softmax probabilities over {len(used)} heads ({terms})"
