"""Robustness to imaging conditions: accuracy when the clinical photo, or separately the dermoscopy
image, is blurred, recompressed, darkened, flattened, colour-cast, zoomed, noisy or missing.

Why: clinical photos vary between sites and devices far more than dermoscopy does, and a model that
leans on one modality inherits that modality's fragility. Every shift is a torchvision
(transforms.v2.functional) operation on the uint8 image before the dataset's own normalisation, at
5 severities (`levels` picks 3-5 of them, spread out), applied to ONE modality while the other stays
clean. Stochastic shifts (noise) draw from a generator seeded by (seed, case index), so a run is
deterministic. Severities are defined at 224 px and scaled with the image side where they are
spatial (blur sigma), so a 48-px demo and a 224-px run see the same relative degradation.

Per (modality, shift, severity) the entry keeps the test accuracies and, per case, the number of
labels right (one digit 0-8) and DIAG right (0/1), so the report can bootstrap the mean relative
drop over seeds and cases without re-running anything.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ssnbench.data.labels import MODALITIES
from ssnbench.explain import NEUTRAL_INPUT

if TYPE_CHECKING:  # torch only where images are shifted: config and the report import this module
    import torch
    from torch import nn


def _tf():
    """torchvision.transforms.v2.functional, imported on first use (keeps this module torch-free)."""
    import torchvision.transforms.v2.functional as tf

    return tf

__all__ = ["SHIFTS", "Shift", "evaluate", "levels_for", "mean_relative_drop", "shift_pair", "summarize"]


@dataclass(frozen=True)
class Shift:
    """One imaging shift: `apply(image uint8 [3, S, S], severity value, generator) -> uint8`."""

    name: str
    description: str
    unit: str
    values: tuple[float, ...]  # 5 severities, mildest first
    apply: Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]


def _float(img: torch.Tensor) -> torch.Tensor:
    import torch

    return _tf().to_dtype(img, torch.float32, scale=True)


def _uint8(img: torch.Tensor) -> torch.Tensor:
    import torch

    return _tf().to_dtype(img.clamp(0.0, 1.0), torch.uint8, scale=True)


def _blur(img: torch.Tensor, sigma_224: float, g: torch.Generator) -> torch.Tensor:
    sigma = sigma_224 * img.shape[-1] / 224.0
    k = 2 * max(1, int(np.ceil(3 * sigma))) + 1
    return _tf().gaussian_blur(img, [k, k], [sigma, sigma])


def _jpeg(img: torch.Tensor, quality: float, g: torch.Generator) -> torch.Tensor:
    # torchvision 0.29 deprecates its image codecs (in favour of TorchCodec) and warns on every call;
    # TF.jpeg still works. When it is removed, PIL's JPEG writer at the same quality is the stand-in.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return _tf().jpeg(img, quality=int(quality))


def _brightness(img: torch.Tensor, factor: float, g: torch.Generator) -> torch.Tensor:
    return _tf().adjust_brightness(img, factor)


def _contrast(img: torch.Tensor, factor: float, g: torch.Generator) -> torch.Tensor:
    return _tf().adjust_contrast(img, factor)


def _colour_cast(img: torch.Tensor, gain: float, g: torch.Generator) -> torch.Tensor:
    """Warm white balance (tungsten light): red times (1 + gain), blue times (1 - gain), as a
    per-channel scaling through torchvision's normalize (mean 0, std 1/gain)."""
    std = [1.0 / (1.0 + gain), 1.0, 1.0 / (1.0 - gain)]
    return _uint8(_tf().normalize(_float(img), mean=[0.0, 0.0, 0.0], std=std))


def _zoom(img: torch.Tensor, keep: float, g: torch.Generator) -> torch.Tensor:
    """Centre crop keeping `keep` of the side, resized back: a closer camera (the lesion looks larger)."""
    size = img.shape[-1]
    crop = max(2, round(keep * size))
    return _tf().resize(_tf().center_crop(img, [crop, crop]), [size, size], antialias=True)


def _noise(img: torch.Tensor, sigma: float, g: torch.Generator) -> torch.Tensor:
    import torch

    x = _float(img)
    return _uint8(x + sigma * torch.randn(x.shape, generator=g))


SHIFTS: dict[str, Shift] = {
    s.name: s
    for s in (
        Shift("blur", "Gaussian blur (defocus, motion)", "sigma px at 224", (1.0, 2.0, 3.0, 4.5, 6.0), _blur),
        Shift("jpeg", "JPEG recompression", "quality", (60, 40, 25, 15, 8), _jpeg),
        Shift("brightness", "under-exposure", "brightness factor", (0.85, 0.7, 0.55, 0.4, 0.3), _brightness),
        Shift(
            "contrast", "flat light, low contrast", "contrast factor", (0.8, 0.65, 0.5, 0.35, 0.2), _contrast
        ),
        Shift("colour_cast", "warm white balance", "R/B gain ±", (0.05, 0.1, 0.15, 0.22, 0.3), _colour_cast),
        Shift("zoom", "closer camera (centre crop, resized)", "side kept", (0.9, 0.8, 0.7, 0.6, 0.5), _zoom),
        Shift(
            "noise",
            "sensor noise (Gaussian, seeded)",
            "sigma (0-1 scale)",
            (0.02, 0.04, 0.07, 0.1, 0.15),
            _noise,
        ),
    )
}


def levels_for(n: int) -> list[int]:
    """Indices of `n` (3-5) severities spread over the 5 defined ones, mildest and worst included."""
    if not 3 <= n <= 5:
        raise ValueError(f"severities must be 3, 4 or 5, got {n}")
    return sorted({int(round(i * 4 / (n - 1))) for i in range(n)})


def shift_pair(
    modality: str, shift: Shift, value: float, seed: int = 0
) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """A `run_heads` shift: `shift` at `value` on `modality`'s image only, seeded by (seed, case)."""
    import torch

    j = MODALITIES.index(modality)

    def apply(pair: torch.Tensor, index: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(index))
        out = pair.clone()
        out[j] = shift.apply(pair[j], value, g)
        return out

    return apply


def _digits(values: np.ndarray) -> str:
    return "".join(str(int(v)) for v in values)


def _condition(outputs, clean_labels: np.ndarray) -> dict[str, Any]:
    correct = outputs.pred() == clean_labels
    return {
        "acc_avg": float(correct.mean()),
        "acc_DIAG": float(correct[:, 0].mean()),
        "n_right": _digits(correct.sum(axis=1)),
        "diag_right": _digits(correct[:, 0]),
    }


def evaluate(
    model: nn.Module,
    dataset: Any,
    inference_weights: dict[str, float] | None,
    device: torch.device | str = "cpu",
    *,
    shifts: Sequence[str] | None = None,
    severities: int = 5,
    modalities: Sequence[str] | None = None,
    seed: int = 0,
    batch_size: int = 64,
    amp: bool = False,
) -> dict[str, Any]:
    """The `robustness` entry of a result record (see the module docstring)."""
    from ssnbench.explain.inference import run_heads

    t0 = time.perf_counter()
    names = list(shifts or SHIFTS)
    unknown = [s for s in names if s not in SHIFTS]
    if unknown:
        raise ValueError(f"unknown shift {unknown[0]!r}; expected some of {', '.join(SHIFTS)}")
    read = tuple(getattr(model, "modalities", MODALITIES))
    mods = [m for m in (modalities or MODALITIES) if m in read]
    kw = dict(device=device, batch_size=batch_size, amp=amp)
    clean = run_heads(model, dataset, inference_weights, **kw)
    labels = clean.labels
    idx = levels_for(severities)
    conditions: dict[str, Any] = {}
    for m in mods:
        per_shift: dict[str, Any] = {}
        for name in names:
            shift = SHIFTS[name]
            per_shift[name] = [
                {
                    "level": i + 1,
                    "value": shift.values[i],
                    **_condition(
                        run_heads(
                            model,
                            dataset,
                            inference_weights,
                            shift=shift_pair(m, shift, shift.values[i], seed),
                            **kw,
                        ),
                        labels,
                    ),
                }
                for i in idx
            ]
        missing = (
            _condition(run_heads(model, dataset, inference_weights, withhold=m, **kw), labels)
            if len(read) > 1
            else None
        )
        conditions[m] = {"shifts": per_shift, "missing": missing}
    return {
        "seed": seed,
        "severities": [i + 1 for i in idx],
        "shifts": {n: {"description": SHIFTS[n].description, "unit": SHIFTS[n].unit} for n in names},
        "neutral_input": NEUTRAL_INPUT,
        "case_ids": clean.case_ids,
        "clean": _condition(clean, labels),
        "modalities": conditions,
        "seconds": time.perf_counter() - t0,
    }


# ---------------------------------------------------------------------------------------------
# Across seeds and models


def _case_matrix(rob: dict, modality: str, metric: str) -> np.ndarray:
    """[1 + C, N] per-case scores: row 0 clean, then every (shift, severity) of `modality`."""
    key, scale = ("n_right", 8.0) if metric == "avg" else ("diag_right", 1.0)
    rows = [rob["clean"][key]]
    for levels in rob["modalities"][modality]["shifts"].values():
        rows += [lv[key] for lv in levels]
    return np.asarray([[int(c) for c in row] for row in rows], dtype=float) / scale


def mean_relative_drop(
    matrices: list[np.ndarray], n_resamples: int = 2000, seed: int = 0, confidence: float = 0.95
) -> dict[str, float]:
    """Mean over conditions of 1 − acc(condition)/acc(clean), with a two-level bootstrap CI.

    `matrices`: one [1 + C, N] per-case score matrix per seed (row 0 clean), same cases. The
    resamples are `ssnbench.stats.resample_indices`' (seeds with replacement, then test cases, the
    same cases for every drawn seed), so the CI carries training variance as well as test-set
    variance, as every other CI of the report; with one seed only the cases are resampled. The
    statistic is a ratio of means, so it is recomputed per resample rather than averaged per case."""
    from ssnbench import stats

    stack = np.stack(matrices)  # [S, 1 + C, N]

    def stat(x: np.ndarray) -> np.ndarray:  # x: [..., 1 + C] accuracies
        return np.mean(1.0 - x[..., 1:] / np.maximum(x[..., :1], 1e-12), axis=-1)

    point = float(stat(stack.mean(axis=(0, 2))))
    s, _, n = stack.shape
    seeds, cases = stats.resample_indices(s, n, n_resamples, seed)
    acc = np.empty((len(seeds), stack.shape[1]))  # [R, 1 + C] accuracies per resample
    for start in range(0, len(seeds), 64):  # in chunks: [64, S, 1 + C, N] at a time, not [R, ...]
        si, ci = seeds[start : start + 64], cases[start : start + 64]
        picked = np.take_along_axis(stack[si], ci[:, None, None, :], axis=3)
        acc[start : start + 64] = picked.mean(axis=(1, 3))
    low, high = np.quantile(stat(acc), [(1 - confidence) / 2, (1 + confidence) / 2])
    return {
        "drop": point,
        "ci_low": float(low),
        "ci_high": float(high),
        "seeds": s,
        "levels": "seeds+cases" if s > 1 else "cases",
        "conditions": int(stack.shape[1] - 1),
    }


def summarize(records: list[dict]) -> dict[str, Any]:
    """Per model: accuracy vs severity per (modality, shift) (mean over seeds), the missing-modality
    accuracy, and the mean relative drop per modality with its CI. Plain data for results.json."""
    by_model: dict[str, list[dict]] = {}
    for r in records:
        rob = r.get("robustness")
        if r.get("status") == "ok" and isinstance(rob, dict) and "modalities" in rob:
            by_model.setdefault(r["model"]["name"], []).append(r)
    models = []
    for name in sorted(by_model, key=lambda n: min(int(r.get("model_index", 10**6)) for r in by_model[n])):
        runs = sorted(by_model[name], key=lambda r: r["seed"])
        robs = [r["robustness"] for r in runs]
        ids = robs[0]["case_ids"]
        robs = [
            rb
            for rb in robs
            if rb["case_ids"] == ids and rb["modalities"].keys() == robs[0]["modalities"].keys()
        ]
        entry: dict[str, Any] = {
            "name": name,
            "seeds": len(robs),
            "clean": {k: float(np.mean([rb["clean"][k] for rb in robs])) for k in ("acc_avg", "acc_DIAG")},
            "modalities": {},
        }
        for m, cond in robs[0]["modalities"].items():
            curves = {}
            for shift, levels in cond["shifts"].items():
                curves[shift] = [
                    {
                        "level": lv["level"],
                        "value": lv["value"],
                        "acc_avg": float(
                            np.mean([rb["modalities"][m]["shifts"][shift][i]["acc_avg"] for rb in robs])
                        ),
                        "acc_DIAG": float(
                            np.mean([rb["modalities"][m]["shifts"][shift][i]["acc_DIAG"] for rb in robs])
                        ),
                    }
                    for i, lv in enumerate(levels)
                ]
            missing = None
            if cond.get("missing"):
                missing = {
                    k: float(np.mean([rb["modalities"][m]["missing"][k] for rb in robs]))
                    for k in ("acc_avg", "acc_DIAG")
                }
            entry["modalities"][m] = {
                "curves": curves,
                "missing": missing,
                "drop_avg": mean_relative_drop([_case_matrix(rb, m, "avg") for rb in robs]),
                "drop_DIAG": mean_relative_drop([_case_matrix(rb, m, "DIAG") for rb in robs]),
            }
        models.append(entry)
    shifts = next((r["robustness"]["shifts"] for runs in by_model.values() for r in runs), {})
    return {"models": models, "shifts": shifts, "neutral_input": NEUTRAL_INPUT}
