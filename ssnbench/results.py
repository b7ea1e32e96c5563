"""The result record: the one contract between the runner (writer) and the report (reader).

Why a module of its own: the runner writes one JSON file per (model, seed) job and the report, a
later process (`ssnbench report`), reads them back; neither should import the other, and the report
must stay cheap (no torch). The record's fields, its schema version, the validation applied on read
and the ONE atomic writer that every file ssnbench writes goes through all live here, so a change
to the format is a change to this file (and docs/interfaces.md, "Result record").

Torch-free on purpose: only the standard library and numpy.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from ssnbench.errors import UserError

SCHEMA_VERSION = 1
"""Bump when a reader of an older record could misread a newer one (renamed or re-typed field)."""

STATUSES = ("running", "ok", "failed")

SPEED_ONLY_TRAIN_KEYS = ("threads", "num_workers", "eval_batch_size")
"""`train` settings that change how fast a run is, not its numbers: left out of the job hash (a
result stays valid) and of the report's same-settings check."""


class ResultError(UserError):
    """A result file is unreadable, truncated, malformed or of another schema version."""


# ---------------------------------------------------------------------------------------------
# The record


@dataclass
class JobError:
    """Why a job failed: exception type, its first line, and the full traceback."""

    type: str
    message: str
    traceback: str = ""


@dataclass
class Predictions:
    """Test-split predictions, packed (see `pack_classes`/`pack_probs`) to keep files small."""

    case_ids: list[str]
    labels: list[str]
    pred: list[str]
    diag_probs: list[str] = field(default_factory=list)
    labels_order: list[str] = field(default_factory=list)


# Fields written even when None (a reader can rely on the key being there); the other optional
# fields are left out while unset (e.g. `metrics` of a failed job), as the runner always did.
_ALWAYS = frozenset(
    {
        "schema", "suite", "suite_file", "suite_description", "reference", "job", "job_hash",
        "model_index", "model", "seed", "status", "error", "train", "eval", "dataset", "environment",
        "started_at", "finished_at",
    }
)


@dataclass
class ResultRecord:
    """One job's result file. Required: the identity (suite, job, model, seed) and the status; a
    record with status "ok" also has `metrics` and `predictions`. Keys this version does not know
    are kept in `extra` and written back unchanged (a newer writer's additions survive a rewrite)."""

    suite: str
    job: str
    model: dict[str, Any]  # the suite entry (config.ModelSpec.to_dict()): name, arch, loss, options, ...
    seed: int
    status: str  # one of STATUSES
    schema: int = SCHEMA_VERSION
    suite_file: str | None = None
    suite_description: str = ""
    reference: str | None = None
    job_hash: str | None = None
    model_index: int | None = None
    error: JobError | None = None
    train: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)  # evaluation settings (e.g. test-time augmentation)
    stats: dict[str, Any] | None = None  # the suite's statistics settings (stats.margin)
    overrides: list[str] = field(default_factory=list)  # `run --set KEY.PATH=VALUE` applied to the suite
    dataset: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)  # env.Environment.to_dict()
    started_at: str | None = None
    finished_at: str | None = None
    heads: list[str] | None = None
    loss_weights: dict[str, float] | None = None
    inference_weights: dict[str, float] | None = None
    inference_scheme: str | None = None
    inference_description: str | None = None
    metrics: dict[str, float | None] | None = None
    valid_metrics: dict[str, float | None] | None = None
    best_epoch: int | None = None
    history: list[dict[str, Any]] | None = None
    predictions: Predictions | None = None
    timings: dict[str, float] = field(default_factory=dict)
    profile: dict[str, Any] | None = None
    checkpoint: dict[str, Any] | None = None  # {weights, meta, sha256}: files next to the result
    placement: dict[str, Any] | None = None  # where the job ran: ssnbench.job.placement (docs/scale.md)
    weights: dict[str, Any] | None = None  # backbone weights loaded: {tag, source, file, sha256}
    data_config: dict[str, Any] | None = None  # how images reach the model (timm data config, ...)
    optimizer: dict[str, Any] | None = None  # parameter groups (timm create_optimizer_v2)
    attribution: dict[str, Any] | None = None  # two-image models: explain/attribution.compute()
    robustness: dict[str, Any] | None = None  # suite key `robustness`: explain/robustness.evaluate()
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of the file (field order as declared; unset optional fields left out)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is None and f.name not in _ALWAYS:
                continue
            out[f.name] = asdict(value) if isinstance(value, (JobError, Predictions)) else value
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: Any, source: str = "result record") -> ResultRecord:
        """Validate `data` (a parsed JSON file) and build the record; raises `ResultError` naming
        `source` and the first problem found."""
        _check(data, source)
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in data.items() if k in known}
        if isinstance(kwargs.get("error"), dict):
            kwargs["error"] = JobError(**{k: v for k, v in kwargs["error"].items() if k in _ERROR_KEYS})
        if isinstance(kwargs.get("predictions"), dict):
            kwargs["predictions"] = Predictions(
                **{k: v for k, v in kwargs["predictions"].items() if k in _PREDICTION_KEYS}
            )
        return cls(**kwargs, extra={k: v for k, v in data.items() if k not in known})


_ERROR_KEYS = {f.name for f in fields(JobError)}
_PREDICTION_KEYS = {f.name for f in fields(Predictions)}


def _check(data: Any, source: str) -> None:
    """What every reader may rely on; the first violation is raised as a one-line ResultError."""

    def bad(what: str) -> ResultError:
        return ResultError(f"{source}: malformed result record: {what}")

    if not isinstance(data, dict):
        raise bad(f"expected a JSON object, got {type(data).__name__}")
    schema = data.get("schema")
    if schema != SCHEMA_VERSION:
        raise ResultError(
            f"{source}: result record of schema version {schema!r}, this ssnbench reads version "
            f"{SCHEMA_VERSION} (re-run the job, or read it with the ssnbench that wrote it)"
        )
    for key, kind in (("suite", str), ("job", str), ("model", dict), ("status", str)):
        if not isinstance(data.get(key), kind):
            raise bad(f"'{key}' should be {_KIND_NAMES[kind]}, got {_show(data.get(key))}")
    if not isinstance(data.get("seed"), int) or isinstance(data.get("seed"), bool):
        raise bad(f"'seed' should be an integer, got {_show(data.get('seed'))}")
    for key in ("name", "arch"):
        if not isinstance(data["model"].get(key), str):
            raise bad(f"'model.{key}' should be a string, got {_show(data['model'].get(key))}")
    if data["status"] not in STATUSES:
        raise bad(f"'status' should be one of {', '.join(STATUSES)}, got {data['status']!r}")
    error = data.get("error")
    if error is not None and not (isinstance(error, dict) and isinstance(error.get("message"), str)):
        raise bad("'error' should be null or an object with a 'message' string")
    if data["status"] != "ok":
        return
    if not isinstance(data.get("metrics"), dict):
        raise bad(f"status is ok but 'metrics' is {_show(data.get('metrics'))}")
    for k, v in data["metrics"].items():
        if v is not None and not isinstance(v, (int, float)):
            raise bad(f"'metrics.{k}' should be a number or null, got {_show(v)}")
    pred = data.get("predictions")
    if not isinstance(pred, dict):
        raise bad(f"status is ok but 'predictions' is {_show(pred)}")
    n = None
    for key in ("case_ids", "labels", "pred"):
        if not isinstance(pred.get(key), list):
            raise bad(f"'predictions.{key}' should be a list, got {_show(pred.get(key))}")
        if n is not None and len(pred[key]) != n:
            raise bad(f"'predictions.{key}' has {len(pred[key])} rows, 'predictions.case_ids' {n}")
        n = len(pred[key])


_KIND_NAMES = {str: "a string", dict: "an object", int: "an integer"}


def _show(value: Any) -> str:
    text = "missing" if value is None else f"{type(value).__name__} {value!r}"
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------------------------------------
# Reading


def validate(data: Any, source: str = "result record") -> dict[str, Any]:
    """Check a parsed record and return it unchanged (readers keep working on the JSON dict)."""
    _check(data, source)
    return data


def load_result(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate one result file. Raises `ResultError` naming the file and saying whether it
    is unreadable, truncated, not JSON, malformed, or of another schema version."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise ResultError(f"{path}: cannot read result file ({reason})") from None
    if not text.strip():
        raise ResultError(f"{path}: empty result file (truncated)")
    try:
        data = json.loads(text)
    except ValueError as err:
        # Every writer ends a record with "}": an object that starts but never closes was cut off
        # (the decoder's position is where the last token began, e.g. an unterminated string).
        body = text.strip()
        ends = getattr(err, "pos", 0) >= len(body) or (body.startswith("{") and not body.endswith("}"))
        kind = "truncated JSON" if ends else "not valid JSON"
        raise ResultError(f"{path}: {kind} ({err})") from None
    return validate(data, str(path))


def read_result(path: str | os.PathLike) -> dict[str, Any] | None:
    """The record at `path`, or None when it is absent or unusable (the runner then re-runs the job)."""
    try:
        return load_result(path)
    except ResultError:
        return None


def result_files(folder: str | os.PathLike) -> list[Path]:
    """The result files of a results folder, sorted: `*.json` except checkpoints' `*.checkpoint.json`
    and the files a rerun kept aside (`*.replaced-<time>.json`, see runner.keep_aside)."""
    return [
        p
        for p in sorted(Path(folder).glob("*.json"))
        if not p.name.endswith(".checkpoint.json") and ".replaced-" not in p.name
    ]


def scan_results(folder: str | os.PathLike) -> tuple[list[dict[str, Any]], list[ResultError]]:
    """Every valid record in a folder (sorted by file name) and the errors of the invalid ones."""
    records, problems = [], []
    for path in result_files(folder):
        try:
            records.append(load_result(path))
        except ResultError as err:
            problems.append(err)
    return records, problems


# ---------------------------------------------------------------------------------------------
# Writing: one atomic writer for every file ssnbench writes


def json_safe(obj: Any) -> Any:
    """NaN/inf -> null (an undefined metric, e.g. the AUC of a class absent from the test split), so
    result files are standard JSON that jq or a browser also read."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def replace_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """`write(tmp)` to a temp file in the same folder, fsync it, then rename it over `path`: readers
    never see half a file, and an interrupt leaves the old file (or none) and no temp file.

    For writers that want a path (safetensors, matplotlib); `write_atomic` for text and bytes.
    The temp file gets mode 0666 minus the umask (0644 normally), as `open()` would give;
    `tempfile.mkstemp` would leave 0600 files that others on a shared machine cannot read.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        mode = os.stat(tmp).st_mode & 0o777
        write(tmp)
        os.chmod(tmp, mode)  # writers that replace the file (safetensors does) leave it 0600
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Write text (UTF-8) or bytes to `path` atomically (see `replace_atomic`)."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    replace_atomic(path, lambda tmp: tmp.write_bytes(payload))


def write_json_atomic(path: str | os.PathLike, obj: Any, **dump_options: Any) -> None:
    """`obj` as standard JSON (NaN/inf written as null), atomically. Serialisation happens before
    the file is touched, so an unserialisable object leaves the old file in place."""
    options = {"indent": 1, "allow_nan": False, **dump_options}
    write_atomic(path, json.dumps(json_safe(obj), **options) + "\n")


def write_result(path: str | os.PathLike, record: ResultRecord | dict[str, Any]) -> None:
    """Write one result file; the record is validated first so a bad one is never written."""
    data = record.to_dict() if isinstance(record, ResultRecord) else record
    validate(json_safe(data), str(path))
    write_json_atomic(path, data)


# ---------------------------------------------------------------------------------------------
# Packed predictions


def pack_classes(classes: np.ndarray) -> list[str]:
    """Per case, one digit per label ("20100121"): 395 cases stay 395 short lines in a result file."""
    return ["".join(str(int(c)) for c in row) for row in np.asarray(classes)]


def unpack_classes(packed: list) -> np.ndarray:
    """Inverse of `pack_classes` (also accepts plain nested lists)."""
    return np.asarray(
        [[int(c) for c in row] if isinstance(row, str) else row for row in packed], dtype=np.int64
    )


def pack_probs(probs: np.ndarray) -> list[str]:
    """Per case, space-separated probabilities with 4 decimals (enough for AUC on 395 cases)."""
    return [" ".join(f"{p:.4f}" for p in row) for row in np.asarray(probs, dtype=np.float64)]


def unpack_probs(packed: list) -> np.ndarray:
    """Inverse of `pack_probs` (also accepts plain nested lists)."""
    return np.asarray([[float(x) for x in row.split()] if isinstance(row, str) else row for row in packed])
