"""Suite files: YAML -> validated dataclasses.

Every mistake becomes ONE `ConfigError` line naming the file, the key path and what was expected
(e.g. `suites/x.yaml: models[2].options.backbone: unknown timm model 'resnet5'; did you mean
'resnet50'?`), so a typo costs seconds instead of a crashed job an hour into a suite. Models are
validated eagerly through the models' registry (we ask it; we never duplicate its knowledge).
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ssnbench.errors import ConfigError, UserError
from ssnbench.losses import HEADS, LOSS_SCHEMES
from ssnbench.preflight import bound_problem
from ssnbench.validation import (
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_mapping,
    check_str,
    suggest,
    typename,
    utf8_error_at,
)

DATA_HINT = (
    "get the Derm7pt release_v0 from https://derm.cs.sfu.ca (free registration), unpack it and "
    "set DERM7PT_ROOT to the folder holding release_v0/ (or run suites/demo.yaml on synthetic data)"
)


@dataclass(frozen=True)
class DatasetSpec:
    """Where the images come from and how they are prepared (recorded in every report)."""

    kind: str  # "derm7pt" (the real release) or "synthetic" (generated on first use)
    root: str | None = None  # derm7pt: release_v0/ or a folder holding one
    image_size: int = 224  # side of the square network input
    border_crop: int = 25  # pixels cropped from each side before resizing
    drop_no_clinic: bool = False  # drop the rows whose clinic photo is the derm photo
    augment: bool = True
    cases: int = 1011  # synthetic only
    seed: int = 0  # synthetic only
    source_size: int = 128  # synthetic only: side of the generated JPEGs
    # synthetic only: overrides of the planted design (data.synthetic.PlantedDesign: derm, clinic,
    # clinic_extra, label_noise); None = the default design
    planted: dict[str, Any] | None = None


@dataclass(frozen=True)
class TrainSpec:
    """The fit loop's settings; defaults follow the literature recipe (docs/derm7pt.md)."""

    epochs: int = 100
    batch_size: int = 32
    eval_batch_size: int | None = None  # default: 2 x batch_size
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01  # cosine decays to lr * min_lr_ratio
    grad_clip: float | None = 1.0  # max global gradient norm; null disables
    amp: bool = True  # bf16 autocast, CUDA only (ignored on CPU)
    channels_last: bool = False  # CUDA only
    num_workers: int | None = None  # default: 0 on CPU, min(8, cpus) on CUDA
    threads: int | None = None  # torch CPU threads; default: all cores (capped at 8)
    class_weights: bool = False  # inverse-frequency class weights in the cross-entropies


@dataclass(frozen=True)
class ProfileSpec:
    """Throughput/memory measurement, once per model (not per seed)."""

    enabled: bool = True
    batch_size: int = 16
    warmup: int = 2
    iters: int = 5


@dataclass(frozen=True)
class EvalSpec:
    """How the chosen checkpoint is evaluated on test (recorded in every result and the report)."""

    tta: str | None = None  # test-time augmentation: null (none) or "flips" (train.TTA_VIEWS)


@dataclass(frozen=True)
class RobustnessSpec:
    """Robustness to imaging shifts, evaluated in each job after training (explain/robustness.py):
    `robustness: true`, or a mapping with the shifts to apply, how many severities (3-5) and the
    seed of the stochastic shifts."""

    enabled: bool = False
    shifts: tuple[str, ...] | None = None  # default: every shift of explain/robustness.py
    severities: int = 5
    seed: int = 0


@dataclass(frozen=True)
class ModelSpec:
    """One model of the suite: a free-text name, a registry arch and its plain options."""

    name: str
    arch: str
    loss: str = "prior"  # head weighting of the training loss: prior | equal
    loss_weights: dict[str, float] | None = None  # per-head overrides of the scheme's defaults
    inference: str = "same"  # how heads combine at inference: same (as the loss) | prior | equal
    inference_weights: dict[str, float] | None = None  # explicit per-head weights (win over `inference`)
    options: dict[str, Any] = field(default_factory=dict)  # passed to build_model(arch, **options)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Suite:
    name: str
    path: str
    dataset: DatasetSpec
    train: TrainSpec
    seeds: tuple[int, ...]
    models: tuple[ModelSpec, ...]
    profile: ProfileSpec = ProfileSpec()
    description: str = ""
    reference: str | None = None  # model name compared (paired) against every other model
    eval: EvalSpec = EvalSpec()
    checkpoint: bool = True  # write <out>/<job>.safetensors + .checkpoint.json (ssnbench predict)
    margin: float = 0.01  # `stats.margin`: non-inferiority margin of the Claims section (fraction)
    overrides: tuple[str, ...] = ()  # `--set KEY.PATH=VALUE` applied on top of the file (recorded)
    only_models: tuple[str, ...] | None = None  # `--models a,b`: the models kept (None: all)
    robustness: RobustnessSpec = RobustnessSpec()

    def model(self, name: str) -> ModelSpec:
        return next(m for m in self.models if m.name == name)


# ---------------------------------------------------------------------------------------------
# Validation helpers: each takes the value and its key path, and raises one line on a mistake.


class _Ctx:
    """File name + key path, so every error message says exactly where the mistake is."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, path: str, message: str) -> ConfigError:
        where = f"{self.file}: {path}: " if path else f"{self.file}: "
        return ConfigError(where + message)


def _checked(ctx: _Ctx, check: Any, path: str, *args: Any, **kwargs: Any) -> Any:
    """Run one of validation.py's checks; its message (`<path>: ...`) gets the file name in front."""
    try:
        return check(path, *args, **kwargs)
    except ConfigError as err:
        raise ConfigError(f"{ctx.file}: {err}") from None


def _mapping(
    ctx: _Ctx, path: str, value: Any, allowed: tuple[str, ...], required: tuple[str, ...] = ()
) -> dict:
    return _checked(ctx, check_mapping, path, value, allowed, required)


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _int(ctx: _Ctx, path: str, value: Any, minimum: int | None = None, bounded: bool = False) -> int:
    """`bounded`: also check `preflight.BOUNDS[path]` (sizes that would exhaust memory or time)."""
    value = _checked(ctx, check_int, path, value, minimum)
    problem = bound_problem(path, value) if bounded else None
    if problem:
        raise ctx.fail(path, problem)
    return value


def _float(ctx: _Ctx, path: str, value: Any, minimum: float | None = None, positive: bool = False) -> float:
    return _checked(ctx, check_float, path, value, minimum, positive=positive, numeric_strings=True)


def _bool(ctx: _Ctx, path: str, value: Any) -> bool:
    return _checked(ctx, check_bool, path, value)


def _str(ctx: _Ctx, path: str, value: Any) -> str:
    return _checked(ctx, check_str, path, value)


def _choice(ctx: _Ctx, path: str, value: Any, choices: tuple[str, ...]) -> str:
    return _checked(ctx, check_choice, path, value, choices)


def _head_weights(ctx: _Ctx, path: str, value: Any) -> dict[str, float] | None:
    if value is None:
        return None
    _mapping(ctx, path, value, HEADS)
    return {k: _float(ctx, _join(path, k), v, minimum=0.0) for k, v in value.items()}


# ---------------------------------------------------------------------------------------------
# Environment interpolation

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(ctx: _Ctx, path: str, value: Any, lenient_data: bool = False) -> Any:
    """Replace `${VAR}` / `${VAR:-default}` in every string; an unset variable is a ConfigError.

    `lenient_data`: under `dataset.`, an unset variable stays as written (`bench models` needs no data).
    """
    if isinstance(value, dict):
        return {k: _interpolate(ctx, _join(path, str(k)), v, lenient_data) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(ctx, _join(path, i), v, lenient_data) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def repl(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ and os.environ[name] != "":
            return os.environ[name]
        if default is not None:
            return default
        if lenient_data and path.startswith("dataset."):
            return match.group(0)
        hint = f"; {DATA_HINT}" if name == "DERM7PT_ROOT" else ""
        raise ctx.fail(path, f"environment variable {name} is not set{hint}")

    whole = _ENV.fullmatch(value.strip())
    out = _ENV.sub(repl, value)
    if whole and out != value:
        # `pretrained: ${R50_WEIGHTS:-false}`: a value that is one variable is read as YAML, so it can be a
        # boolean or a number as well as a path.
        try:
            parsed = yaml.safe_load(out)
        except yaml.YAMLError:
            return out
        return parsed if isinstance(parsed, (bool, int, float)) else out
    return out


# ---------------------------------------------------------------------------------------------
# Sections

_DATASET_KEYS = (
    "kind",
    "root",
    "image_size",
    "border_crop",
    "drop_no_clinic",
    "augment",
    "cases",
    "seed",
    "source_size",
    "planted",
)
_TRAIN_KEYS = tuple(TrainSpec.__dataclass_fields__)
_PROFILE_KEYS = tuple(ProfileSpec.__dataclass_fields__)
_MODEL_KEYS = ("name", "arch", "loss", "loss_weights", "inference", "inference_weights", "options")
_TOP_KEYS = (
    "name",
    "description",
    "dataset",
    "train",
    "seeds",
    "models",
    "model_defaults",
    "profile",
    "reference",
    "eval",
    "checkpoint",
    "stats",
    "robustness",
)
TTA_CHOICES = ("none", "flips")
_ROBUSTNESS_KEYS = ("shifts", "severities", "seed")


def _dataset(ctx: _Ctx, raw: Any, base_dir: Path, check_data: bool) -> DatasetSpec:
    path = "dataset"
    _mapping(ctx, path, raw, _DATASET_KEYS, required=("kind",))
    kind = _choice(ctx, "dataset.kind", raw["kind"], ("derm7pt", "synthetic"))
    kw: dict[str, Any] = {"kind": kind}
    for key in ("image_size", "border_crop", "cases", "seed", "source_size"):
        if key in raw:
            kw[key] = _int(
                ctx,
                _join(path, key),
                raw[key],
                minimum=0 if key in ("border_crop", "seed") else 1,
                bounded=key in ("image_size", "cases", "source_size"),
            )
    for key in ("drop_no_clinic", "augment"):
        if key in raw:
            kw[key] = _bool(ctx, _join(path, key), raw[key])
    if kind == "synthetic":
        for key in ("root",):
            if key in raw:
                raise ctx.fail(
                    _join(path, key), "not used by kind synthetic (data is generated into the cache)"
                )
        if "planted" in raw:
            from ssnbench.data.synthetic import PlantedDesign

            if not isinstance(raw["planted"], dict):
                raise ctx.fail("dataset.planted", f"expected a mapping, got {typename(raw['planted'])}")
            try:
                PlantedDesign.from_overrides(raw["planted"])
            except ConfigError as exc:  # "planted.<key>: <what>"
                key, _, what = str(exc).partition(": ")
                raise ctx.fail(_join("dataset", key), what) from None
            kw["planted"] = raw["planted"]
        if kw.get("cases", 1011) < 20:
            raise ctx.fail(
                "dataset.cases", f"expected at least 20 cases (train/valid/test splits), got {kw['cases']}"
            )
    else:
        for key in ("cases", "seed", "source_size", "planted"):
            if key in raw:
                raise ctx.fail(_join(path, key), "only used by kind synthetic")
        if "root" not in raw:
            raise ctx.fail("dataset.root", f"missing (required for kind derm7pt); {DATA_HINT}")
        root = _str(ctx, "dataset.root", raw["root"])
        root_path = Path(root).expanduser()
        if not root_path.is_absolute():
            root_path = (base_dir / root_path) if not root_path.exists() else root_path
        if check_data and not (
            (root_path / "meta" / "meta.csv").is_file()
            or (root_path / "release_v0" / "meta" / "meta.csv").is_file()
        ):
            what = "does not exist" if not root_path.exists() else "holds no release_v0/meta/meta.csv"
            raise ctx.fail("dataset.root", f"{str(root_path)!r} {what}; {DATA_HINT}")
        kw["root"] = str(root_path)
    spec = DatasetSpec(**kw)
    if kind == "synthetic" and spec.border_crop * 2 >= spec.source_size:
        raise ctx.fail(
            "dataset.border_crop",
            f"{spec.border_crop} px per side leaves nothing of a {spec.source_size}-px image",
        )
    return spec


def _train(ctx: _Ctx, raw: Any) -> TrainSpec:
    if raw is None:
        return TrainSpec()
    _mapping(ctx, "train", raw, _TRAIN_KEYS)
    kw: dict[str, Any] = {}
    for key, value in raw.items():
        p = _join("train", key)
        if key in ("epochs", "batch_size"):
            kw[key] = _int(ctx, p, value, minimum=1, bounded=True)
        elif key in ("eval_batch_size", "threads"):
            kw[key] = None if value is None else _int(ctx, p, value, minimum=1, bounded=key != "threads")
        elif key == "num_workers":
            kw[key] = None if value is None else _int(ctx, p, value, minimum=0)
        elif key == "lr":
            kw[key] = _float(ctx, p, value, positive=True)
        elif key in ("weight_decay", "warmup_epochs", "min_lr_ratio"):
            kw[key] = _float(ctx, p, value, minimum=0.0)
        elif key == "grad_clip":
            kw[key] = None if value is None else _float(ctx, p, value, positive=True)
        else:  # booleans
            kw[key] = _bool(ctx, p, value)
    spec = TrainSpec(**kw)
    if spec.min_lr_ratio > 1:
        raise ctx.fail("train.min_lr_ratio", f"expected a number in [0, 1], got {spec.min_lr_ratio}")
    return spec


def _profile(ctx: _Ctx, raw: Any) -> ProfileSpec:
    if raw is None:
        return ProfileSpec()
    if isinstance(raw, bool):
        return ProfileSpec(enabled=raw)
    _mapping(ctx, "profile", raw, _PROFILE_KEYS)
    kw: dict[str, Any] = {}
    for key, value in raw.items():
        p = _join("profile", key)
        kw[key] = (
            _bool(ctx, p, value)
            if key == "enabled"
            else _int(ctx, p, value, minimum=0 if key == "warmup" else 1, bounded=True)
        )
    return ProfileSpec(**kw)


def _eval(ctx: _Ctx, raw: Any) -> EvalSpec:
    if raw is None:
        return EvalSpec()
    _mapping(ctx, "eval", raw, tuple(EvalSpec.__dataclass_fields__))
    tta = raw.get("tta")
    if tta is None or tta is False:
        return EvalSpec()
    tta = _choice(ctx, "eval.tta", tta, TTA_CHOICES)
    return EvalSpec(tta=None if tta == "none" else tta)


def _select_models(ctx: _Ctx, models: Any, names: tuple[str, ...] | list[str]) -> list:
    if not isinstance(models, list):
        raise ctx.fail("models", f"expected a non-empty list of models, got {typename(models)}")
    known = [m.get("name") for m in models if isinstance(m, dict)]
    for name in names:
        if name not in known:
            raise ConfigError(
                f"--models: no model named {name!r} in {ctx.file}{suggest(name, known)} "
                f"(models: {', '.join(str(k) for k in known)})"
            )
    return [m for m in models if isinstance(m, dict) and m.get("name") in set(names)]


def _robustness(ctx: _Ctx, raw: Any) -> RobustnessSpec:
    from ssnbench.explain.robustness import SHIFTS

    if raw is None or raw is False:
        return RobustnessSpec()
    if raw is True:
        return RobustnessSpec(enabled=True)
    _mapping(ctx, "robustness", raw, _ROBUSTNESS_KEYS)
    shifts = raw.get("shifts")
    if shifts is not None:
        if not isinstance(shifts, list) or not shifts:
            got = typename(shifts)
            raise ctx.fail("robustness.shifts", f"expected a non-empty list of shift names, got {got}")
        names = tuple(SHIFTS)
        shifts = tuple(_choice(ctx, f"robustness.shifts[{i}]", v, names) for i, v in enumerate(shifts))
    severities = _int(ctx, "robustness.severities", raw.get("severities", 5), minimum=3)
    if severities > 5:
        raise ctx.fail("robustness.severities", f"expected 3, 4 or 5, got {severities}")
    seed = _int(ctx, "robustness.seed", raw.get("seed", 0), minimum=0)
    return RobustnessSpec(enabled=True, shifts=shifts, severities=severities, seed=seed)


def _merge(base: dict, over: dict) -> dict:
    """Deep merge for model_defaults: nested mappings (options) merge, everything else replaces."""
    out = dict(base)
    for key, value in over.items():
        out[key] = (
            _merge(out[key], value) if isinstance(out.get(key), dict) and isinstance(value, dict) else value
        )
    return out


def _model(ctx: _Ctx, index: int, raw: Any, defaults: dict) -> ModelSpec:
    path = f"models[{index}]"
    _mapping(ctx, path, raw, _MODEL_KEYS)
    raw = _merge(defaults, raw)
    for key in ("name", "arch"):
        if key not in raw:
            raise ctx.fail(_join(path, key), "missing (required)")
    name = _str(ctx, _join(path, "name"), raw["name"])
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", name):
        raise ctx.fail(
            _join(path, "name"), f"use letters, digits and - _ . + only (it names files), got {name!r}"
        )
    arch = _str(ctx, _join(path, "arch"), raw["arch"])
    loss = _choice(ctx, _join(path, "loss"), raw.get("loss", "prior"), LOSS_SCHEMES)
    inference = _choice(ctx, _join(path, "inference"), raw.get("inference", "same"), ("same", *LOSS_SCHEMES))
    options = raw.get("options") or {}
    if not isinstance(options, dict):
        raise ctx.fail(_join(path, "options"), f"expected a mapping, got {typename(options)}")
    return ModelSpec(
        name=name,
        arch=arch,
        loss=loss,
        loss_weights=_head_weights(ctx, _join(path, "loss_weights"), raw.get("loss_weights")),
        inference=inference,
        inference_weights=_head_weights(ctx, _join(path, "inference_weights"), raw.get("inference_weights")),
        options=dict(options),
    )


def _with_image_size(spec: ModelSpec, image_size: int) -> ModelSpec:
    """Models that need the input size (ViT/Swin position embeddings) get the dataset's, unless set."""
    if "image_size" in spec.options:
        return spec
    try:
        from ssnbench.models.registry import arch_options

        accepts = "image_size" in arch_options(spec.arch)
    except (ImportError, UserError):
        return spec  # an unknown arch is reported by _check_model
    if not accepts:
        return spec
    return replace(spec, options={**spec.options, "image_size": image_size})


def _check_model(ctx: _Ctx, index: int, spec: ModelSpec, image_size_written: bool = True) -> None:
    """Ask the registry whether it can build this model; its ConfigError gets our file and key path.

    Built on the meta device when possible so that validating a 14-model suite costs no memory and
    little time; a model that cannot be built there is built for real (small at validation time).
    An `image_size` the user did not write (passed on from `dataset.image_size`) is reported under
    `dataset.image_size`, the key they did write.
    """
    import torch

    from ssnbench.models.registry import build_model, list_archs

    path = f"models[{index}]"
    archs = list(list_archs())
    if spec.arch not in archs:
        raise ctx.fail(
            _join(path, "arch"),
            f"unknown arch {spec.arch!r}{suggest(spec.arch, archs)} (known: {', '.join(archs)})",
        )
    try:
        try:
            with torch.device("meta"):
                build_model(spec.arch, **spec.options)
        except UserError:
            raise
        except Exception:  # some modules refuse meta tensors; validate for real
            build_model(spec.arch, **spec.options)
    except UserError as err:
        key = _option_path(path, str(err), spec.options)
        message = _strip_prefix(str(err), spec.options)
        if not image_size_written and key.endswith(".options.image_size"):
            key, message = "dataset.image_size", f"{message} (model {spec.name!r}, {path})"
        raise ctx.fail(key, message) from None
    except TypeError as err:  # an unexpected keyword argument
        raise ctx.fail(_join(path, "options"), str(err)) from None


def _option_path(path: str, message: str, options: dict) -> str:
    """Point at `models[i].options.<key>` when the registry's message starts with an option name."""
    head = message.split(":", 1)[0].strip()
    head = head.rsplit(".", 1)[-1]
    if head in options:
        return _join(_join(path, "options"), head)
    for key in options:
        if re.search(rf"\b{re.escape(key)}\b", message):
            return _join(_join(path, "options"), key)
    return _join(path, "options")


def _strip_prefix(message: str, options: dict) -> str:
    head, sep, rest = message.partition(":")
    if sep and head.strip().rsplit(".", 1)[-1] in options:
        return rest.strip()
    return message


# ---------------------------------------------------------------------------------------------


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.epochs=1` -> (["train", "epochs"], 1): the value is read as YAML (numbers, booleans,
    null, lists, mappings), exactly as it would be in the suite file."""
    key, sep, value = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not key.strip() or any(not p.strip() for p in parts):
        raise ConfigError(f"--set {text!r}: expected KEY.PATH=VALUE, e.g. train.epochs=1")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML") from None
    return [p.strip() for p in parts], parsed


def _apply_override(ctx: _Ctx, raw: dict, text: str) -> None:
    """Set one `--set` value in the raw suite mapping (before validation, so it is checked exactly
    like the file). Under `models`, a segment is a model name or `*` (every model)."""
    parts, value = parse_override(text)

    def walk(node: Any, i: int, where: str) -> None:
        key = parts[i]
        last = i == len(parts) - 1
        if isinstance(node, list):  # the models list
            names = [m.get("name") for m in node if isinstance(m, dict)]
            targets = [m for m in node if isinstance(m, dict) and (key == "*" or m.get("name") == key)]
            if not targets:
                raise ConfigError(
                    f"--set {text}: no model named {key!r} in {ctx.file}{suggest(key, names)} "
                    f"(use models.<name>.<key> or models.*.<key>)"
                )
            if last:
                raise ConfigError(f"--set {text}: give a key under the model, e.g. models.{key}.options.X")
            for m in targets:
                walk(m, i + 1, _join(where, key))
            return
        if not isinstance(node, dict):
            raise ConfigError(f"--set {text}: {where or 'the suite'} is not a mapping")
        if last:
            node[key] = value
            return
        if node.get(key) is None:
            node[key] = {}
        walk(node[key], i + 1, _join(where, key))

    walk(raw, 0, "")


def load(
    path: str | os.PathLike,
    check_models: bool = True,
    check_data: bool = True,
    overrides: tuple[str, ...] | list[str] = (),
    only_models: tuple[str, ...] | list[str] | None = None,
) -> Suite:
    """Read and validate a suite file. `check_models` builds each model once (registry validation);
    `check_data` requires a derm7pt root to exist (the runner validates its contents).

    `overrides` (`--set KEY.PATH=VALUE`) change the raw YAML before validation; `only_models`
    (`--models a,b`) keeps those models, in the suite's order, before they are validated."""
    file = str(path)
    p = Path(path)
    raw = read_yaml(p)
    try:
        return _load(p, raw, check_models, check_data, overrides, only_models)
    except RecursionError:
        raise ConfigError(f"{file}: a YAML alias refers to the mapping or list it is in") from None


MAX_SUITE_BYTES = 1 << 20
"""A suite file is a page of YAML; a bigger file is something else passed by mistake."""


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, first: int, again: int) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key, self.first, self.again = key, first, again


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last one,
    silently); merge keys (`<<: *defaults`) may still be overridden."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _DuplicateKey(key, seen[key], line)
            seen[key] = line
        return super().construct_mapping(node, deep)


def read_yaml(p: Path) -> Any:
    """Parse a YAML file; every way it can be unreadable is one ConfigError line naming the file
    (missing, a folder, no permission, too big, not UTF-8 with the line, invalid YAML with the line,
    a duplicate key with both lines)."""
    file = str(p)
    if p.is_dir():
        raise ConfigError(f"{file}: is a folder, expected a suite YAML file")
    if not p.exists():
        raise ConfigError(f"{file}: no such suite file")
    try:
        size = p.stat().st_size
        if size > MAX_SUITE_BYTES:
            raise ConfigError(
                f"{file}: {size} bytes; a suite file is at most {MAX_SUITE_BYTES} bytes of YAML (wrong file?)"
            )
        data = p.read_bytes()
    except OSError as err:
        raise ConfigError(f"{file}: cannot read suite file ({err.strerror or err})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line, column, byte = utf8_error_at(data, err)
        raise ConfigError(
            f"{file}: line {line}: not UTF-8 text (byte {byte} at column {column}); "
            "save the suite file as UTF-8"
        ) from None
    try:
        raw = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except _DuplicateKey as err:
        raise ConfigError(
            f"{file}: line {err.again}: duplicate key {err.key!r} (first given at line {err.first}); "
            "give each key once"
        ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{file}: {where}invalid YAML: {problem}") from None
    if raw is None:
        raise ConfigError(f"{file}: empty suite file")
    return raw


def _load(
    p: Path,
    raw: Any,
    check_models: bool,
    check_data: bool,
    overrides: tuple[str, ...] | list[str] = (),
    only_models: tuple[str, ...] | list[str] | None = None,
) -> Suite:
    file = str(p)
    ctx = _Ctx(file)
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: expected a mapping at the top level, got {typename(raw)}")
    for text in overrides:
        _apply_override(ctx, raw, text)
    _mapping(ctx, "", raw, _TOP_KEYS, required=("dataset", "models"))
    if only_models is not None:
        raw["models"] = _select_models(ctx, raw.get("models"), only_models)
        if raw.get("reference") not in [m.get("name") for m in raw["models"]]:
            raw.pop("reference", None)  # the reference was left out: the default (first SSN) applies
    raw = _interpolate(ctx, "", raw, lenient_data=not check_data)

    name = _str(ctx, "name", raw.get("name", p.stem))
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ctx.fail("name", f"use letters, digits and - _ . only (it names folders), got {name!r}")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise ctx.fail("description", f"expected a string, got {typename(description)}")

    dataset = _dataset(ctx, raw["dataset"], p.parent, check_data)
    train = _train(ctx, raw.get("train"))
    profile = _profile(ctx, raw.get("profile"))
    eval_spec = _eval(ctx, raw.get("eval"))
    checkpoint = _bool(ctx, "checkpoint", raw["checkpoint"]) if "checkpoint" in raw else True
    margin = 0.01
    if raw.get("stats") is not None:
        _mapping(ctx, "stats", raw["stats"], ("margin",))
        if "margin" in raw["stats"]:
            margin = _float(ctx, "stats.margin", raw["stats"]["margin"], minimum=0.0)
            if margin >= 1:
                raise ctx.fail("stats.margin", f"expected a fraction below 1 (0.01 = 1 point), got {margin}")
    robustness = _robustness(ctx, raw.get("robustness"))

    seeds_raw = raw.get("seeds", [0])
    if isinstance(seeds_raw, int) and not isinstance(seeds_raw, bool):
        seeds_raw = [seeds_raw]
    if not isinstance(seeds_raw, list) or not seeds_raw:
        raise ctx.fail("seeds", f"expected a non-empty list of integers, got {typename(seeds_raw)}")
    seeds = tuple(_int(ctx, f"seeds[{i}]", s, minimum=0) for i, s in enumerate(seeds_raw))
    if len(set(seeds)) != len(seeds):
        raise ctx.fail("seeds", f"duplicate seeds in {list(seeds)}")

    defaults = raw.get("model_defaults") or {}
    _mapping(ctx, "model_defaults", defaults, tuple(k for k in _MODEL_KEYS if k != "name"))
    models_raw = raw["models"]
    if not isinstance(models_raw, list) or not models_raw:
        raise ctx.fail("models", f"expected a non-empty list of models, got {typename(models_raw)}")
    models = tuple(_model(ctx, i, m, defaults) for i, m in enumerate(models_raw))
    seen: set[str] = set()
    for i, m in enumerate(models):
        if m.name in seen:
            raise ctx.fail(f"models[{i}].name", f"duplicate model name {m.name!r}")
        seen.add(m.name)

    reference = raw.get("reference")
    if reference is not None:
        reference = _choice(ctx, "reference", reference, tuple(m.name for m in models))
    else:
        reference = next((m.name for m in models if m.arch == "ssn"), None)

    written = [("image_size" in m.options) for m in models]
    models = tuple(_with_image_size(m, dataset.image_size) for m in models)
    if check_models:
        for i, m in enumerate(models):
            _check_model(ctx, i, m, image_size_written=written[i])

    return Suite(
        name=name,
        path=file,
        dataset=dataset,
        train=train,
        seeds=seeds,
        models=models,
        profile=profile,
        description=description.strip(),
        reference=reference,
        eval=eval_spec,
        checkpoint=checkpoint,
        margin=margin,
        overrides=tuple(overrides),
        only_models=None if only_models is None else tuple(only_models),
        robustness=robustness,
    )
