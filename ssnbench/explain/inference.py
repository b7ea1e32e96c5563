"""Test passes that keep every head's output and can change the inputs on the way in.

Why not `train.predict`: it returns only the combined prediction of a model, and attribution and
robustness need each head separately, a modality replaced by a neutral input, or an image shifted
before normalisation. Each pass walks the split in order (no DataLoader: the cached uint8 pairs are
already in memory, and a pass is a few batched forwards), so predictions line up with
`dataset.case_ids` and with the result record's `predictions`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ssnbench.data.labels import MODALITIES
from ssnbench.env import amp_autocast
from ssnbench.explain import NEUTRAL_INPUT

__all__ = ["MODALITIES", "NEUTRAL_INPUT", "HeadOutputs", "run_heads", "withheld"]

#: shift(uint8 pair [2, 3, S, S], case index) -> uint8 pair: changes one or both images before the
#: dataset's own (non-augmenting) transform converts and normalises them.
PairShift = Callable[[torch.Tensor, int], torch.Tensor]


@dataclass
class HeadOutputs:
    """Per head, per label, softmax probabilities [N, K_i]; plus the combined prediction."""

    heads: dict[str, list[np.ndarray]]
    combined: list[np.ndarray]
    labels: np.ndarray  # [N, 8]
    case_ids: list[str]

    def pred(self, head: str | None = None) -> np.ndarray:
        """Argmax class per label, [N, 8], of one head (None: the combined prediction)."""
        probs = self.combined if head is None else self.heads[head]
        return np.stack([p.argmax(axis=1) for p in probs], axis=1)


def withheld(
    modality: str | None,
) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """(clinic, derm) -> the same with `modality` replaced by the neutral input (`NEUTRAL_INPUT`)."""
    if modality not in (None, *MODALITIES):
        raise ValueError(f"modality must be one of {MODALITIES} or None, got {modality!r}")

    def apply(clinic: torch.Tensor, derm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if modality == "clinic":
            return torch.zeros_like(clinic), derm
        if modality == "derm":
            return clinic, torch.zeros_like(derm)
        return clinic, derm

    return apply


@torch.no_grad()
def run_heads(
    model: nn.Module,
    dataset,
    inference_weights: dict[str, float] | None,
    device: torch.device | str = "cpu",
    *,
    batch_size: int = 64,
    shift: PairShift | None = None,
    withhold: str | None = None,
    indices: Sequence[int] | None = None,
    amp: bool = False,
) -> HeadOutputs:
    """One pass over `dataset` (a `Derm7ptDataset`, or anything with `pair`, `transform`, `labels`,
    `case_ids`) in split order: `shift` edits each uint8 pair, then the dataset's transform
    normalises it, then `withhold` replaces one modality by the neutral input."""
    from ssnbench.losses import combine_probabilities

    device = torch.device(device)
    was_training = model.training
    model.eval()
    rows = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
    drop = withheld(withhold)
    heads: dict[str, list[list[np.ndarray]]] = {}
    combined: list[list[np.ndarray]] = []
    try:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            clinic, derm = [], []
            for i in chunk:
                pair = dataset.pair(i)
                if shift is not None:
                    pair = shift(pair, i)
                c, d = dataset.transform(pair)
                clinic.append(c)
                derm.append(d)
            c, d = drop(torch.stack(clinic).to(device), torch.stack(derm).to(device))
            with amp_autocast(device, amp):
                outputs = model(c, d)
            for h, logits in outputs.items():
                heads.setdefault(h, []).append([x.float().softmax(-1).cpu().numpy() for x in logits])
            combined.append(
                [p.float().cpu().numpy() for p in combine_probabilities(outputs, inference_weights)]
            )
    finally:
        model.train(was_training)
    labels = np.asarray(dataset.labels, dtype=np.int64)[rows]
    ids = [str(dataset.case_ids[i]) for i in rows]

    def _cat(batches: list[list[np.ndarray]]) -> list[np.ndarray]:
        return [np.concatenate([b[k] for b in batches]) for k in range(len(batches[0]))]

    return HeadOutputs({h: _cat(b) for h, b in heads.items()}, _cat(combined), labels, ids)
