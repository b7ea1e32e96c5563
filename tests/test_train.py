"""The fit loop: schedule shape, determinism on CPU, checkpoint selection, NaN detection."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from ssnbench.config import DatasetSpec, TrainSpec
from ssnbench.data.labels import NUM_CLASSES
from ssnbench.losses import MultiHeadLoss
from ssnbench.models.registry import build_model
from ssnbench.runner import Data, open_data
from ssnbench.train import NonFiniteLossError, fit, lr_lambda, seed_everything

TINY = DatasetSpec(kind="synthetic", cases=40, seed=0, source_size=32, image_size=32, border_crop=2)
WEIGHTS = {"clinic": 0.2, "derm": 0.5, "fused": 0.3}


@pytest.fixture(autouse=True)
def one_thread():
    """pytest -n 2 on 2 cores: one thread per worker, or spinning OpenMP threads oversubscribe them."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    return open_data(TINY, cache=tmp_path_factory.mktemp("cache"))


def test_lr_schedule_warms_up_then_decays() -> None:
    f = lr_lambda(total_steps=100, warmup_steps=10, min_ratio=0.01)
    ramp = [f(s) for s in range(10)]
    assert ramp == sorted(ramp) and ramp[0] == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    decay = [f(s) for s in range(10, 101)]
    assert decay == sorted(decay, reverse=True)
    assert f(10) == pytest.approx(1.0) and f(100) == pytest.approx(0.01)


def _fit(data: Data, seed: int, spec: TrainSpec):
    seed_everything(seed)
    model = build_model("ssn", backbone="resnet18", image_size=32)
    return fit(
        model, data.datasets, spec, loss_fn=MultiHeadLoss(WEIGHTS), inference_weights=WEIGHTS,
        device=torch.device("cpu"), seed=seed,
    )


def test_same_seed_same_metrics_and_best_checkpoint(data: Data) -> None:
    spec = TrainSpec(epochs=2, batch_size=8, lr=1e-3, warmup_epochs=0.5)
    a = _fit(data, 3, spec)
    b = _fit(data, 3, spec)
    assert a.test_metrics == b.test_metrics
    assert [r["train_loss"] for r in a.history] == [r["train_loss"] for r in b.history]
    assert a.test.probs[0].tolist() == b.test.probs[0].tolist()
    # the checkpoint is the best validation epoch (ties keep the earlier one)
    accs = [r["valid_acc_avg"] for r in a.history]
    assert a.best_epoch == accs.index(max(accs)) + 1
    assert a.best_valid["acc_avg"] == max(accs)
    assert len(a.test.case_ids) == len(data.datasets["test"]) == a.test.labels.shape[0]
    assert set(a.test_metrics) >= {"acc_avg", "acc_DIAG", "diag_balanced_acc", "mel_sensitivity"}


class _Broken(nn.Module):
    """Outputs NaN logits: the fit loop must stop with a clear error, not train on garbage."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(float("nan")))

    def forward(self, clinic: torch.Tensor, derm: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        b = clinic.shape[0]
        x = clinic.mean(dim=(1, 2, 3), keepdim=False)[:, None] * self.w
        return {h: [x.expand(b, k) for k in NUM_CLASSES] for h in WEIGHTS}


def test_non_finite_loss_raises(data: Data) -> None:
    with pytest.raises(NonFiniteLossError, match="loss diverged at epoch 1, step 1 \\(loss nan"):
        fit(
            _Broken(),
            data.datasets,
            TrainSpec(epochs=1, batch_size=8),
            loss_fn=MultiHeadLoss(WEIGHTS),
            inference_weights=WEIGHTS,
            device=torch.device("cpu"),
            seed=0,
        )


def test_cached_dataset_is_reused(tmp_path: Path) -> None:
    from ssnbench.data.cache import synthetic_root

    root = synthetic_root(TINY, tmp_path)
    stamp = (root / "meta" / "meta.csv").stat().st_mtime_ns
    assert synthetic_root(TINY, tmp_path) == root
    assert (root / "meta" / "meta.csv").stat().st_mtime_ns == stamp
