"""Suite -> jobs, one per (model, seed); each job trains, evaluates and writes ONE result file.

Why the shape: a suite of 40 runs must survive a crash, a NaN or a Ctrl-C without losing the runs
already done, so every result is a separate JSON written atomically (temp file in the same folder,
then `os.replace`), a finished file means "skip" on the next invocation, and a failure is recorded
in its file (status failed, message, traceback) while the suite goes on. Only this module knows
about suites; training, metrics, profiling and the report take plain data.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# Before torch loads OpenMP: idle worker threads sleep instead of spinning. On a shared or small
# machine (2 cores, other processes busy) spinning threads made CPU training 3-4x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch

from ssnbench.config import DatasetSpec, ModelSpec, Suite
from ssnbench.data.cache import synthetic_root
from ssnbench.data.labels import CLASSES, LABELS
from ssnbench.losses import HEADS
from ssnbench.progress import Progress
from ssnbench.results import (
    SPEED_ONLY_TRAIN_KEYS,
    JobError,
    Predictions,
    ResultRecord,
    pack_classes,
    pack_probs,
)
from ssnbench.tracking import EpochLog


@dataclass(frozen=True)
class Job:
    model: ModelSpec
    model_index: int
    seed: int

    @property
    def id(self) -> str:
        return f"{self.model.name}__seed{self.seed}"


def plan(suite: Suite) -> list[Job]:
    """Seed-major order, so that a partial suite already has every model at its first seed."""
    return [Job(m, i, s) for s in suite.seeds for i, m in enumerate(suite.models)]


# ---------------------------------------------------------------------------------------------
# Files


def result_path(out: Path, job: Job) -> Path:
    return out / f"{job.id}.json"


JOB_FILE_SUFFIXES = (".json", ".safetensors", ".checkpoint.json", ".history.csv")
"""The files one job writes into the results folder (record, checkpoint weights and their JSON,
per-epoch history: tracking.history_path)."""


def keep_aside(out: Path, job: Job, when: datetime | None = None) -> list[tuple[Path, Path]]:
    """Move a job's existing files to `<job>.replaced-<UTC time><suffix>` before it re-runs: no
    result file is ever overwritten or deleted. Returns (old path, new path) pairs."""
    stamp = (when or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    moved = []
    for suffix in JOB_FILE_SUFFIXES:
        src = out / f"{job.id}{suffix}"
        if not src.exists():
            continue
        n, dest = 1, out / f"{job.id}.replaced-{stamp}{suffix}"
        while dest.exists():
            n += 1
            dest = out / f"{job.id}.replaced-{stamp}-{n}{suffix}"
        os.replace(src, dest)
        moved.append((src, dest))
    return moved


def previous_result(suite: Suite, job: Job, out: Path, force: bool) -> tuple[dict | None, str | None]:
    """The record already at the job's path (None when absent or unreadable) and why the job
    re-runs over it (None: it is finished and kept). A record is kept when it is readable, ok and
    of the same suite entry (job hash), unless `force`; anything else at the path is re-run and
    kept aside (`keep_aside`)."""
    from ssnbench.results import ResultError, load_result

    path = result_path(out, job)
    if not path.exists():
        return None, None
    try:
        prev = load_result(path)
    except ResultError as err:
        return None, str(err).removeprefix(f"{path}: ")
    if force:
        return prev, "re-run requested (--force)"
    if prev.get("status") != "ok":
        return prev, f"a {prev.get('status')} run"
    if prev.get("job_hash") != job_hash(suite, job):
        return prev, "its suite entry changed since it was written (stale)"
    return prev, None


def job_hash(suite: Suite, job: Job) -> str:
    """What a result depends on: a changed suite entry invalidates only the affected results."""
    key = {
        "model": job.model.to_dict(),
        "seed": job.seed,
        "train": {k: v for k, v in asdict(suite.train).items() if k not in SPEED_ONLY_TRAIN_KEYS},
        "dataset": asdict(suite.dataset),
    }
    if suite.eval.tta:  # only when set, so results written before `eval:` existed stay valid
        key["eval"] = asdict(suite.eval)
    if suite.robustness.enabled:  # only then: suites without it keep their results' hashes
        key["robustness"] = asdict(suite.robustness)
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Environment and data


def majority_baseline(train_labels: np.ndarray, test_labels: np.ndarray) -> dict[str, Any]:
    """Predict each label's most frequent TRAIN class for every test case: the floor to beat."""
    accs, classes = {}, {}
    for i, label in enumerate(LABELS):
        counts = np.bincount(train_labels[:, i], minlength=len(CLASSES[label]))
        top = int(np.argmax(counts))
        classes[label] = CLASSES[label][top]
        accs[f"acc_{label}"] = float(np.mean(test_labels[:, i] == top))
    accs["acc_avg"] = float(np.mean([accs[f"acc_{label}"] for label in LABELS]))
    return {"class": classes, "metrics": accs}


@dataclass
class Data:
    datasets: dict[str, Any]
    info: dict[str, Any]


def open_data(
    spec: DatasetSpec,
    progress: Progress | None = None,
    cache: Path | None = None,
    interpolation: str = "bicubic",
) -> Data:
    """Load (generating if synthetic) the release once per suite and resize interpolation (the
    backbones' timm data config); every job reuses the datasets and sets their normalisation."""
    from ssnbench.data.derm7pt import load_release, make_datasets
    from ssnbench.data.synthetic import generator_args

    if spec.kind == "synthetic":
        t0 = time.perf_counter()
        root = synthetic_root(spec, cache, progress)
        if progress:
            progress.log(f"synthetic data: {root} ({time.perf_counter() - t0:.1f}s)")
    else:
        root = Path(spec.root or "")
    release = load_release(root, drop_no_clinic=spec.drop_no_clinic)
    datasets = make_datasets(
        release,
        image_size=spec.image_size,
        border_crop=spec.border_crop,
        augment=spec.augment,
        drop_no_clinic=spec.drop_no_clinic,
        cache=True,
        interpolation=interpolation,
    )
    train_labels = np.asarray(datasets["train"].labels, dtype=np.int64)
    test_labels = np.asarray(datasets["test"].labels, dtype=np.int64)
    # A release the synthetic generator wrote stays synthetic when a suite reads it as derm7pt
    # (e.g. through DERM7PT_ROOT): its marker says so, and every report must say so too.
    generated = generator_args(release.root)
    info = {
        "kind": "SYNTHETIC" if spec.kind == "synthetic" or generated is not None else "REAL",
        "root": str(root),
        "splits": {k: len(v) for k, v in datasets.items()},
        "image_size": spec.image_size,
        "border_crop": spec.border_crop,
        "drop_no_clinic": spec.drop_no_clinic,
        "interpolation": interpolation,
        "no_clinic_rows": list(getattr(release, "no_clinic_rows", []) or []),
        "majority": majority_baseline(train_labels, test_labels),
    }
    if spec.kind == "synthetic":
        info["synthetic"] = {"cases": spec.cases, "seed": spec.seed, "source_size": spec.source_size}
    elif generated is not None:
        info["synthetic"] = {"cases": generated.get("cases"), "seed": generated.get("seed"),
                             "source_size": generated.get("image_size")}
    if "synthetic" in info:
        planted = Path(release.root) / "meta" / "planted.json"
        if planted.is_file():  # the ground truth the report's Claims section compares verdicts with
            info["synthetic"]["planted"] = json.loads(planted.read_text())
    return Data(datasets, info)


# ---------------------------------------------------------------------------------------------
# One job


def heads_of(model: torch.nn.Module, image_size: int) -> list[str]:
    """The heads a model really has (keys of its output), from one tiny forward pass."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad():
        x = torch.zeros(1, 3, image_size, image_size, device=device)
        outputs = model(x, x)
    model.train(was_training)
    return [h for h in HEADS if h in outputs] + [h for h in outputs if h not in HEADS]


def resolve_weights(spec: ModelSpec, heads: list[str]) -> tuple[dict[str, float], dict[str, float], str]:
    """(loss head weights, inference head weights, inference scheme) for this model's heads."""
    from ssnbench.losses import head_weights_for

    def _only(weights: dict[str, float] | None) -> dict[str, float] | None:
        return None if weights is None else {k: v for k, v in weights.items() if k in heads}

    loss_w = dict(head_weights_for(spec.loss, heads, _only(spec.loss_weights)))
    scheme = spec.loss if spec.inference == "same" else spec.inference
    overrides = spec.inference_weights
    if overrides is None and spec.inference == "same":
        overrides = spec.loss_weights
    infer_w = dict(head_weights_for(scheme, heads, _only(overrides)))
    if spec.inference_weights is not None:
        scheme = "custom"
    return loss_w, infer_w, scheme


def profile_model(spec: ModelSpec, suite: Suite, device: torch.device) -> dict[str, Any]:
    """Parameters, GMACs (fvcore multiply-adds at batch 1), train/inference throughput and peak
    memory, through profiling.py (the same code as `ssnbench bench models`).

    On a freshly built model so the measurement never disturbs a seeded training run.
    """
    from ssnbench import profiling
    from ssnbench.checkpoint import rebuild_options
    from ssnbench.models.registry import build_model

    model = build_model(spec.arch, **rebuild_options(spec.to_dict()))  # shapes only: no weights needed
    size = suite.dataset.image_size
    cuda = device.type == "cuda"
    amp, cl = suite.train.amp and cuda, suite.train.channels_last and cuda
    if suite.profile.enabled:
        out = profiling.profile_model(
            model,
            size,
            device=device,
            batch_size=suite.profile.batch_size,
            amp=amp,
            channels_last=cl,
            warmup=suite.profile.warmup,
            iters=suite.profile.iters,
        )
    else:
        macs = profiling.gmacs_report(model, size)
        out = {
            "params": profiling.count_parameters(model),
            "gmacs": macs["gmacs"],
            "gmacs_note": macs["note"],
        }
    out = json.loads(json.dumps(out, default=str))  # plain JSON data (no tensors, tuples, devices)
    out["device"] = device.type
    del model
    return out


def run_job(
    suite: Suite,
    job: Job,
    data: Data,
    *,
    device: torch.device,
    env: dict[str, Any],
    profile: dict[str, Any] | None,
    progress: Progress,
    out: Path | None = None,
    tensorboard: Path | None = None,
    after_fit: Callable[[torch.nn.Module, ResultRecord], None] | None = None,
) -> dict[str, Any]:
    """Train/evaluate one (model, seed) and return its result record as written to its file (never
    raises for a model's failure: the error is recorded; KeyboardInterrupt propagates). With `out`,
    the chosen weights are saved there as a checkpoint (unless the suite says `checkpoint: false`).
    `after_fit(model, record)` runs on the trained model before it is freed (job.py's
    end-of-job analyses: modality attribution, robustness)."""
    # imported here, not at the top: tests replace these functions on their modules
    from ssnbench.losses import MultiHeadLoss, class_weights_from_labels, describe_combination
    from ssnbench.models.backbone import backbone_weights
    from ssnbench.models.registry import build_model
    from ssnbench.train import fit, optimizer_summary, seed_everything

    record = ResultRecord(
        suite=suite.name,
        suite_file=suite.path,
        suite_description=suite.description,
        reference=suite.reference,
        stats={"margin": suite.margin},
        job=job.id,
        job_hash=job_hash(suite, job),
        model_index=job.model_index,
        model=job.model.to_dict(),
        seed=job.seed,
        status="running",
        train=asdict(suite.train),
        eval=asdict(suite.eval),
        overrides=list(suite.overrides),
        dataset=data.info,
        environment=env,
        started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    t0 = time.perf_counter()
    epoch_log = None
    try:
        epoch_log = EpochLog(out, job.id, suite.name, tensorboard)

        def on_epoch(row: dict[str, float]) -> None:
            epoch_log(row)
            progress.epoch_end(job.id, row, suite.train.epochs)

        seed_everything(job.seed)
        model = build_model(job.model.arch, **job.model.options).to(device)
        record.weights = backbone_weights(model)
        record.data_config = apply_data_config(model, suite, data)
        record.optimizer = optimizer_summary(model, suite.train)
        heads = heads_of(model, suite.dataset.image_size)
        loss_w, infer_w, scheme = resolve_weights(job.model, heads)
        record.heads = heads
        record.loss_weights = loss_w
        record.inference_weights = infer_w
        record.inference_scheme = scheme
        record.inference_description = describe_combination(heads, infer_w)
        class_w = None
        if suite.train.class_weights:
            class_w = class_weights_from_labels(torch.as_tensor(np.asarray(data.datasets["train"].labels)))
        loss_fn = MultiHeadLoss(loss_w, class_weights=class_w).to(device)
        seed_everything(job.seed)  # the dry forward must not shift the training RNG stream
        result = fit(
            model,
            data.datasets,
            suite.train,
            loss_fn=loss_fn,
            inference_weights=infer_w,
            device=device,
            seed=job.seed,
            on_epoch=on_epoch,
            tta=suite.eval.tta,
        )
        test = result.test
        pred = np.stack([p.argmax(axis=1) for p in test.probs], axis=1)
        record.status = "ok"
        record.metrics = result.test_metrics
        record.valid_metrics = result.best_valid
        record.best_epoch = result.best_epoch
        record.history = result.history
        record.predictions = Predictions(
            labels_order=list(LABELS),
            case_ids=test.case_ids,
            labels=pack_classes(test.labels),
            pred=pack_classes(pred),
            diag_probs=pack_probs(test.probs[0]),
        )
        record.timings = {"train_seconds": result.train_seconds, "test_seconds": result.test_seconds}
        if suite.checkpoint and out is not None:
            record.checkpoint = write_checkpoint(
                model, suite=suite, job=job, record=record.to_dict(), out=out
            )
        if after_fit is not None:
            after_fit(model, record)
        del model
        if profile is None:
            try:
                profile = profile_model(job.model, suite, device)
            except Exception as err:  # the accuracy result stands without a profile
                profile = {"error": f"{type(err).__name__}: {err}"}
        record.profile = profile
    except KeyboardInterrupt:
        raise
    except Exception as err:  # isolation: one model's failure must not stop a suite
        oom = isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()
        record.status = "failed"
        record.error = JobError(
            type=type(err).__name__,
            message=("out of memory: " if oom else "") + (str(err).strip().splitlines() or [""])[0][:500],
            traceback=traceback.format_exc(),
        )
        if device.type == "cuda":
            torch.cuda.empty_cache()
    finally:
        if epoch_log is not None:
            epoch_log.close()
    record.timings["total_seconds"] = time.perf_counter() - t0
    record.finished_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return record.to_dict()


def model_data_config(spec: ModelSpec) -> dict[str, Any]:
    """The backbone's timm data config (mean, std, interpolation) without building weights: the model
    is built on the meta device (as suite validation does)."""
    from ssnbench.checkpoint import rebuild_options
    from ssnbench.models.backbone import backbone_data_config
    from ssnbench.models.registry import build_model

    with torch.device("meta"):
        return backbone_data_config(build_model(spec.arch, **rebuild_options(spec.to_dict())))


def apply_data_config(model: torch.nn.Module, suite: Suite, data: Data) -> dict[str, Any]:
    """Set the datasets' normalisation to the model's timm data config; returns what images go
    through (recorded in the result and the checkpoint)."""
    from dataclasses import replace

    from ssnbench.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from ssnbench.models.backbone import backbone_data_config

    dc = backbone_data_config(model)
    mean = tuple(float(x) for x in dc.get("mean", IMAGENET_MEAN))
    std = tuple(float(x) for x in dc.get("std", IMAGENET_STD))
    for ds in data.datasets.values():
        ds.transform = replace(ds.transform, mean=mean, std=std)
    return {
        "source": "timm.data.resolve_model_data_config",
        "image_size": suite.dataset.image_size,
        "border_crop": suite.dataset.border_crop,
        "drop_no_clinic": suite.dataset.drop_no_clinic,
        "mean": list(mean),
        "std": list(std),
        "interpolation": data.info.get("interpolation", "bicubic"),
        "model_interpolation": dc.get("interpolation"),
        "eval_batch_size": suite.train.eval_batch_size or 2 * suite.train.batch_size,
        "amp": suite.train.amp,  # CUDA only, as in training
        "channels_last": suite.train.channels_last,
        "tta": suite.eval.tta,
    }


def write_checkpoint(
    model: torch.nn.Module, *, suite: Suite, job: Job, record: dict[str, Any], out: Path
) -> dict[str, Any]:
    """Save the job's chosen weights and the JSON `ssnbench predict` needs; returns what the result
    file records about it (file names and sha256)."""
    from ssnbench.checkpoint import checkpoint_paths, save_checkpoint

    weights, meta_path = checkpoint_paths(out, job.id)
    meta = save_checkpoint(
        model,
        weights,
        {
            "job": job.id,
            "suite": suite.name,
            "suite_file": suite.path,
            "seed": job.seed,
            "model": job.model.to_dict(),
            "heads": record["heads"],
            "inference_weights": record["inference_weights"],
            "inference_scheme": record["inference_scheme"],
            "labels": list(LABELS),
            "classes": {k: list(v) for k, v in CLASSES.items()},
            "data": record["data_config"],
            "dataset": {k: record["dataset"].get(k) for k in ("kind", "root", "splits")},
            "metrics": {"test": record["metrics"], "valid": record["valid_metrics"]},
            "best_epoch": record["best_epoch"],
            "environment": record["environment"],
        },
    )
    return {"weights": weights.name, "meta": meta_path.name, "sha256": meta["weights_sha256"]}


# ---------------------------------------------------------------------------------------------
# The suite


def triage(
    suite: Suite, out: Path, force: bool = False
) -> tuple[list[Job], list[Job], dict[str, dict], dict[str, str]]:
    """(every job, the jobs to run, earlier records by job id, why each re-run job replaces the
    file at its path) from `previous_result`; `run` and `run --dry-run` decide the same way."""
    jobs = plan(suite)
    todo: list[Job] = []
    existing: dict[str, dict] = {}
    replacing: dict[str, str] = {}
    for job in jobs:
        prev, why = previous_result(suite, job, out, force)
        if prev is not None:
            existing[job.id] = prev
        if prev is None or why is not None:
            todo.append(job)
        if why is not None:
            replacing[job.id] = why
    return jobs, todo, existing, replacing

