"""The fit loop: AdamW, per-step cosine schedule with warm-up, bf16 autocast on CUDA, gradient
clipping, validation every epoch, checkpoint chosen by validation average accuracy, and ONE test
evaluation with that checkpoint (choosing on test would flatter every number in the report).

It knows nothing about suites: it takes a model, datasets, a `TrainSpec`, a loss and the inference
head weights, and returns plain data.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ssnbench.config import TrainSpec
from ssnbench.env import amp_autocast


class NonFiniteLossError(RuntimeError):
    """Training diverged: the loss, the gradients or the model's outputs stopped being finite (too
    high a learning rate, usually). The message says "loss diverged at epoch E, step S"."""


@dataclass
class Predictions:
    """Combined per-label probabilities on one split, with the targets and case ids, in split order."""

    probs: list[np.ndarray]  # 8 arrays [N, NUM_CLASSES[i]]
    labels: np.ndarray  # [N, 8] int
    case_ids: list[str]
    loss: float  # mean training-objective loss on the split


@dataclass
class FitResult:
    best_epoch: int  # 1-based
    best_valid: dict[str, float]
    test_metrics: dict[str, float]
    test: Predictions
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0
    test_seconds: float = 0.0


EpochCallback = Callable[[dict[str, float]], None]


def seed_everything(seed: int) -> None:
    """Seed every RNG a run touches (model init, augmentation, shuffling)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _worker_init(worker_id: int) -> None:
    """DataLoader workers get torch seeds from the loader's generator; align python/numpy with it."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


@contextlib.contextmanager
def deterministic(enabled: bool) -> Iterator[None]:
    """Deterministic kernels where cheap (CPU); restores the caller's setting afterwards."""
    before = torch.are_deterministic_algorithms_enabled()
    before_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=before_warn)


def lr_lambda(total_steps: int, warmup_steps: int, min_ratio: float) -> Callable[[int], float]:
    """Linear warm-up to the base lr, then cosine decay to `min_ratio` x base, evaluated per step."""

    def f(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


def make_loader(
    dataset: Dataset, *, batch_size: int, shuffle: bool, num_workers: int, seed: int, device: torch.device
) -> DataLoader:
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        # BatchNorm cannot train on a batch of one; dropping the ragged tail costs < 1 batch per epoch.
        drop_last=shuffle and len(dataset) > batch_size,  # type: ignore[arg-type]
        num_workers=num_workers,
        generator=generator,
        worker_init_fn=_worker_init,
        persistent_workers=num_workers > 0,
        pin_memory=device.type == "cuda",
    )


def _to(batch: dict[str, Any], device: torch.device, channels_last: bool) -> tuple[Any, ...]:
    """(clinic, derm, labels) on `device`; labels are None for unlabelled pairs (`predict --pairs`)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    clinic = batch["clinic"].to(device, non_blocking=True, memory_format=fmt)
    derm = batch["derm"].to(device, non_blocking=True, memory_format=fmt)
    labels = batch.get("labels")
    return clinic, derm, None if labels is None else labels.to(device, non_blocking=True)


#: Test-time augmentations (`eval: {tta: ...}` in a suite): name -> the views averaged, each a
#: function of an image batch. `flips` (as FusionM4Net): identity, horizontal, vertical and both;
#: both images of a case get the same flip.
TTA_VIEWS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], ...]] = {
    "flips": (
        lambda x: x,
        lambda x: x.flip(-1),
        lambda x: x.flip(-2),
        lambda x: x.flip(-2, -1),
    ),
}


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: DataLoader,
    *,
    loss_fn: Callable | None,
    inference_weights: dict[str, float],
    device: torch.device,
    amp: bool = False,
    channels_last: bool = False,
    tta: str | None = None,
) -> Predictions:
    """Run a split through the model; heads are combined with `inference_weights`.

    `tta` (a `TTA_VIEWS` name) averages the combined probabilities over its views; the loss is the
    plain view's. Without `loss_fn`, or for unlabelled batches, the loss is NaN and labels are empty.
    """
    from ssnbench.losses import combine_probabilities

    views = TTA_VIEWS[tta] if tta else (None,)
    model.eval()
    probs: list[list[torch.Tensor]] = []
    labels, case_ids = [], []
    loss_sum, count = 0.0, 0
    for batch in loader:
        clinic, derm, y = _to(batch, device, channels_last)
        n = len(clinic)
        combined: list[torch.Tensor] | None = None
        for view in views:
            with amp_autocast(device, amp):
                outputs = model(clinic, derm) if view is None else model(view(clinic), view(derm))
            if combined is None and loss_fn is not None and y is not None:
                total, _ = loss_fn(outputs, y)
                loss_sum += float(total) * n
            p = [q.float() for q in combine_probabilities(outputs, inference_weights)]
            combined = p if combined is None else [a + b for a, b in zip(combined, p, strict=True)]
        assert combined is not None
        probs.append([(p / len(views)).cpu() for p in combined])
        if y is not None:
            labels.append(y.cpu())
        count += n
        case_ids.extend(str(c) for c in batch.get("case_id", range(count - n, count)))
    per_label = [torch.cat([b[i] for b in probs]).numpy() for i in range(len(probs[0]))]
    targets = (
        torch.cat(labels).numpy().astype(np.int64) if labels else np.zeros((0, len(per_label)), np.int64)
    )
    loss = loss_sum / max(1, count) if loss_fn is not None and labels else float("nan")
    return Predictions(per_label, targets, case_ids, loss)


def _grad_norm(model: nn.Module) -> torch.Tensor:
    """Global L2 norm of the gradients (what clip_grad_norm_ would compute), without clipping."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return nn.utils.get_total_norm(grads) if grads else torch.zeros(())


def _check_outputs(pred: Predictions, where: str) -> None:
    """Non-finite probabilities (weights gone NaN) are a divergence, not a metrics error."""
    if not all(np.isfinite(p).all() for p in pred.probs):
        raise NonFiniteLossError(
            f"loss diverged at {where}: the model's outputs are not finite; lower train.lr"
        )


def make_optimizer(model: nn.Module, spec: TrainSpec) -> torch.optim.Optimizer:
    """AdamW through timm's optimizer factory: its parameter groups exclude norms, biases, gates and
    whatever `model.no_weight_decay()` names (position embeddings, class tokens, Swin's relative
    position tables) from weight decay, as timm's own training recipes do."""
    from timm.optim import create_optimizer_v2

    return create_optimizer_v2(model, "adamw", lr=spec.lr, weight_decay=spec.weight_decay)


def optimizer_summary(model: nn.Module, spec: TrainSpec) -> dict[str, Any]:
    """What a result file records about the parameter groups (how many tensors decay, which do not
    because timm's `no_weight_decay()` names them)."""
    optimizer = make_optimizer(model, spec)
    groups = [
        {"weight_decay": g["weight_decay"], "tensors": len(g["params"]),
         "params": int(sum(p.numel() for p in g["params"]))}
        for g in optimizer.param_groups
    ]
    named = sorted(getattr(model, "no_weight_decay", set)())
    return {
        "name": "adamw (timm.optim.create_optimizer_v2)",
        "lr": spec.lr,
        "groups": groups,
        "no_weight_decay_named": named,
    }


def fit(
    model: nn.Module,
    datasets: dict[str, Dataset],
    spec: TrainSpec,
    *,
    loss_fn: Callable,
    inference_weights: dict[str, float],
    device: torch.device,
    seed: int,
    on_epoch: EpochCallback | None = None,
    tta: str | None = None,
) -> FitResult:
    """Train on `train`, select on `valid` (average accuracy), evaluate `test` once (with the
    test-time augmentation `tta`, a `TTA_VIEWS` name, when given; selection never uses it).

    Raises NonFiniteLossError when the loss, the gradients or the outputs stop being finite; the
    runner records it.
    """
    from ssnbench.metrics import evaluate

    cuda = device.type == "cuda"
    amp = spec.amp and cuda
    channels_last = spec.channels_last and cuda
    workers = (
        spec.num_workers if spec.num_workers is not None else (min(8, torch.get_num_threads()) if cuda else 0)
    )
    eval_bs = spec.eval_batch_size or 2 * spec.batch_size
    train_loader = make_loader(datasets["train"], batch_size=spec.batch_size, shuffle=True,
                               num_workers=workers, seed=seed, device=device)
    valid_loader = make_loader(datasets["valid"], batch_size=eval_bs, shuffle=False,
                               num_workers=workers, seed=seed, device=device)
    test_loader = make_loader(datasets["test"], batch_size=eval_bs, shuffle=False,
                              num_workers=workers, seed=seed, device=device)

    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, spec)
    steps_per_epoch = max(1, len(train_loader))
    total_steps = steps_per_epoch * spec.epochs
    warmup = int(round(spec.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(total_steps, warmup, spec.min_lr_ratio)
    )

    best_acc, best_epoch, best_valid, best_state = -1.0, 0, {}, None
    history: list[dict[str, float]] = []
    t_start = time.perf_counter()
    with deterministic(device.type == "cpu"):
        for epoch in range(1, spec.epochs + 1):
            t_epoch = time.perf_counter()
            model.train()
            loss_sum, seen = torch.zeros((), device=device), 0
            for step, batch in enumerate(train_loader):
                clinic, derm, y = _to(batch, device, channels_last)
                with amp_autocast(device, amp):
                    outputs = model(clinic, derm)
                loss, _ = loss_fn(outputs, y)  # in fp32 whatever the logits' dtype (one cast per head)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if spec.grad_clip is not None:
                    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
                else:
                    grad_norm = _grad_norm(model)
                # One host sync per step checks both: a NaN loss gives NaN gradients, and an infinite
                # gradient would turn the weights into NaN at `optimizer.step()`.
                if not torch.isfinite(loss.detach() + grad_norm):
                    bad = (
                        f"loss {float(loss)}"
                        if not torch.isfinite(loss)
                        else f"gradient norm {float(grad_norm)}"
                    )
                    raise NonFiniteLossError(
                        f"loss diverged at epoch {epoch}, step {step + 1} ({bad}, lr "
                        f"{scheduler.get_last_lr()[0]:.3g}); lower train.lr (or check the inputs for NaN)"
                    )
                optimizer.step()
                scheduler.step()
                loss_sum += loss.detach() * len(y)
                seen += len(y)
            train_loss = float(loss_sum) / max(1, seen)
            valid = predict(model, valid_loader, loss_fn=loss_fn, inference_weights=inference_weights,
                            device=device, amp=amp, channels_last=channels_last)
            _check_outputs(valid, f"epoch {epoch}, step {steps_per_epoch} (validation)")
            vm = evaluate(valid.probs, valid.labels)
            row = {
                "epoch": epoch,
                "train_loss": train_loss,
                "valid_loss": valid.loss,
                "valid_acc_avg": float(vm["acc_avg"]),
                "valid_acc_DIAG": float(vm.get("acc_DIAG", float("nan"))),
                "lr": float(scheduler.get_last_lr()[0]),
                "seconds": time.perf_counter() - t_epoch,
            }
            history.append(row)
            if vm["acc_avg"] > best_acc:  # strict: ties keep the earlier (cheaper-to-reach) epoch
                best_acc, best_epoch = float(vm["acc_avg"]), epoch
                best_valid = {k: float(v) for k, v in vm.items()}
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            if on_epoch is not None:
                on_epoch(row)
        train_seconds = time.perf_counter() - t_start

        assert best_state is not None
        model.load_state_dict(best_state)
        t_test = time.perf_counter()
        test = predict(model, test_loader, loss_fn=loss_fn, inference_weights=inference_weights,
                       device=device, amp=amp, channels_last=channels_last, tta=tta)
        _check_outputs(test, f"epoch {best_epoch} (test, chosen checkpoint)")
        test_metrics = {k: float(v) for k, v in evaluate(test.probs, test.labels).items()}
        test_seconds = time.perf_counter() - t_test
    return FitResult(best_epoch, best_valid, test_metrics, test, history, train_seconds, test_seconds)
