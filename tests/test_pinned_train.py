"""Pinned: checkpoint selection when the best validation epoch is NOT the last one.

The model below has no real learning: a buffer counts its training forward passes (a buffer is part
of the state dict, so restoring a checkpoint restores the count), and its prediction depends only on
that count. Which epoch the test metrics come from is then visible in the numbers: predicting
class 0 (every target) is right, class 1 is wrong.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from ssnbench.config import TrainSpec
from ssnbench.data.labels import NUM_CLASSES
from ssnbench.losses import MultiHeadLoss
from ssnbench.train import fit

WEIGHTS = {"clinic": 0.2, "derm": 0.5, "fused": 0.3}


class _Cases(Dataset):
    """`n` cases whose 8 labels are all class 0 (tiny 2x2 images)."""

    def __init__(self, n: int, prefix: str) -> None:
        self.n, self.prefix = n, prefix

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        x = torch.zeros(3, 2, 2)
        return {
            "clinic": x,
            "derm": x,
            "labels": torch.zeros(8, dtype=torch.long),
            "case_id": f"{self.prefix}{i}",
        }


class _Schedule(nn.Module):
    """Predicts class 0 while its training step count is in `good_steps`, else class 1."""

    def __init__(self, good_steps: set[int]) -> None:
        super().__init__()
        self.good_steps = good_steps
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.w = nn.Parameter(torch.zeros(()))  # something for the optimizer (its gradient is 0)

    def forward(self, clinic: torch.Tensor, derm: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        if self.training:
            self.steps += 1
        good = int(self.steps) in self.good_steps
        b = clinic.shape[0]
        out = []
        for k in NUM_CLASSES:
            logits = torch.zeros(b, k)
            logits[:, 0 if good else 1] = 5.0
            out.append(logits + 0.0 * self.w)
        return {h: out for h in WEIGHTS}


def _fit(good_steps: set[int], epochs: int = 3):
    datasets = {"train": _Cases(4, "t"), "valid": _Cases(3, "v"), "test": _Cases(5, "x")}
    spec = TrainSpec(epochs=epochs, batch_size=4, lr=1e-3, warmup_epochs=0, num_workers=0)
    model = _Schedule(good_steps)  # batch 4 of 4 cases: one step per epoch, so steps == epoch
    return model, fit(
        model, datasets, spec, loss_fn=MultiHeadLoss(WEIGHTS), inference_weights=WEIGHTS,
        device=torch.device("cpu"), seed=0,
    )


def test_test_metrics_come_from_the_restored_best_epoch() -> None:
    model, result = _fit({2})  # only epoch 2 is right on valid
    assert [row["valid_acc_avg"] for row in result.history] == [0.0, 1.0, 0.0]
    assert result.best_epoch == 2 and result.best_valid["acc_avg"] == 1.0
    assert int(model.steps) == 2  # the model is left in the restored state
    assert result.test_metrics["acc_avg"] == 1.0 and result.test_metrics["acc_DIAG"] == 1.0
    assert result.test.case_ids == ["x0", "x1", "x2", "x3", "x4"]
    assert (result.test.probs[0].argmax(axis=1) == 0).all()


def test_ties_keep_the_earlier_epoch() -> None:
    model, result = _fit({1, 2})  # epochs 1 and 2 are equally good; the last (3) is not
    assert result.best_epoch == 1 and int(model.steps) == 1
    assert result.test_metrics["acc_avg"] == 1.0 and len(result.history) == 3


def test_fit_reports_its_train_and_test_time() -> None:
    """The timings every result record and the report's cost table carry."""
    _, result = _fit({2})
    assert result.train_seconds >= sum(row["seconds"] for row in result.history) > 0
    assert result.test_seconds > 0
