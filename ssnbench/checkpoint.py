"""A trained model that outlives its run: `<out>/<job>.safetensors` + `<out>/<job>.checkpoint.json`.

Why two files: the weights are safetensors (no pickle: loading a checkpoint someone sent you runs
no code), and everything needed to rebuild and apply the model is a small JSON beside them: the
model spec (arch + options, i.e. the suite entry), how the heads are combined at inference, the
data config (input size, border crop, normalisation, interpolation, evaluation batch size, TTA),
the labels and their class order, and the metrics of the run. `load_checkpoint` rebuilds the model
from the registry (never re-downloading backbone weights: the file holds them all) and loads the
weights strictly, so `ssnbench predict` reproduces the run's test predictions.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ssnbench.errors import UserError
from ssnbench.results import replace_atomic, write_json_atomic

__all__ = [
    "CHECKPOINT_SCHEMA",
    "CheckpointError",
    "checkpoint_paths",
    "file_sha256",
    "load_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_SCHEMA = 1
_KIND = "ssnbench-checkpoint"
_REQUIRED = ("schema", "kind", "model", "weights_file", "labels", "classes", "data", "inference_weights")


class CheckpointError(UserError):
    """A checkpoint is missing, unreadable or does not fit the model its JSON describes."""


def checkpoint_paths(out: Path, job_id: str) -> tuple[Path, Path]:
    """(weights, meta) paths of a job's checkpoint: `<job>.safetensors`, `<job>.checkpoint.json`."""
    return out / f"{job_id}.safetensors", out / f"{job_id}.checkpoint.json"


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in 1 MiB blocks (weights files are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(model: nn.Module, weights_path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Write the model's weights (safetensors) and `meta` (JSON) beside them; returns the meta written.

    `meta` must hold the keys `load_checkpoint` needs (model spec, labels, classes, data config,
    inference weights); the file name, sha256, schema and creation time are added here.
    The weights are written first, so a JSON on disk always describes a complete weights file.
    """
    from safetensors.torch import save_model

    weights_path = Path(weights_path)
    replace_atomic(weights_path, lambda tmp: save_model(model, str(tmp)))
    full = {
        "schema": CHECKPOINT_SCHEMA,
        "kind": _KIND,
        **meta,
        "weights_file": weights_path.name,
        "weights_sha256": file_sha256(weights_path),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    missing = [k for k in _REQUIRED if k not in full]
    if missing:
        raise ValueError(f"save_checkpoint: meta lacks {missing}")
    write_json_atomic(meta_path_for(weights_path), full)
    return full


def meta_path_for(path: Path) -> Path:
    """The JSON beside a weights file (or the JSON itself, or the JSON of a `<out>/<job>` stem)."""
    path = Path(path)
    name = path.name
    if name.endswith(".checkpoint.json"):
        return path
    if name.endswith(".safetensors"):
        return path.with_name(name[: -len(".safetensors")] + ".checkpoint.json")
    return path.with_name(name + ".checkpoint.json")


def read_meta(path: Path) -> dict[str, Any]:
    """The checkpoint's JSON, validated (schema, kind, required keys); one-line CheckpointError otherwise."""
    meta_path = meta_path_for(path)
    if not meta_path.is_file():
        raise CheckpointError(
            f"{path}: no checkpoint here (expected {meta_path.name} beside the .safetensors file; "
            "runs write them unless the suite sets `checkpoint: false`)"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"{meta_path}: unreadable checkpoint JSON ({type(err).__name__}: {err})"
        ) from None
    if not isinstance(meta, dict) or meta.get("kind") != _KIND:
        raise CheckpointError(f"{meta_path}: not an ssnbench checkpoint (kind {_KIND!r} missing)")
    if meta.get("schema") != CHECKPOINT_SCHEMA:
        raise CheckpointError(
            f"{meta_path}: checkpoint schema {meta.get('schema')!r}, this ssnbench reads schema "
            f"{CHECKPOINT_SCHEMA}; use the ssnbench version that wrote it"
        )
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise CheckpointError(f"{meta_path}: incomplete checkpoint JSON, missing {', '.join(missing)}")
    return meta


def _check_labels(meta: dict[str, Any], where: Path) -> None:
    """The checkpoint's label order must be this version's: predictions are written in that order."""
    from ssnbench.data.labels import CLASSES, LABELS

    if list(meta["labels"]) != list(LABELS) or {k: list(v) for k, v in meta["classes"].items()} != {
        k: list(v) for k, v in CLASSES.items()
    }:
        raise CheckpointError(
            f"{where}: the checkpoint's labels/classes ({meta['labels']}) differ from this version's "
            f"({list(LABELS)}); it cannot be applied"
        )


def rebuild_options(model_spec: dict[str, Any]) -> dict[str, Any]:
    """The model's build options with backbone weights switched off: the checkpoint holds every weight,
    so rebuilding must neither download nor need the original weights file."""
    options = dict(model_spec.get("options") or {})
    if "pretrained" in options:
        options["pretrained"] = False
    return options


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """(model in eval mode on `device`, meta) from a checkpoint's .safetensors, .checkpoint.json or
    `<out>/<job>` stem. Missing files, a changed architecture or a foreign file -> CheckpointError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    from ssnbench.models.registry import build_model

    path = Path(path)
    meta = read_meta(path)
    meta_path = meta_path_for(path)
    _check_labels(meta, meta_path)
    weights = meta_path.with_name(meta["weights_file"])
    if not weights.is_file():
        raise CheckpointError(f"{weights}: weights file named by {meta_path.name} not found")
    spec = meta["model"]
    try:
        model = build_model(spec["arch"], **rebuild_options(spec))
    except UserError as err:
        raise CheckpointError(f"{meta_path}: cannot rebuild model {spec.get('name')!r}: {err}") from None
    try:
        missing, unexpected = load_model(model, str(weights), strict=False, device="cpu")
    except (SafetensorError, OSError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{weights}: does not fit model {spec.get('name')!r} (arch {spec.get('arch')!r}): {first[:300]}"
        ) from None
    if missing or unexpected:
        raise CheckpointError(
            f"{weights}: does not fit model {spec.get('name')!r} (arch {spec.get('arch')!r}): "
            f"{len(missing)} missing tensors (e.g. {sorted(missing)[:2]}), "
            f"{len(unexpected)} unexpected (e.g. {sorted(unexpected)[:2]})"
        )
    model.to(device).eval()
    return model, meta
