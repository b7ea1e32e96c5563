"""Synthetic Derm7pt: a `release_v0/`-layout dataset with procedurally rendered image pairs and a
PLANTED, known answer to "what does each modality show?".

Why: tests, CI and the demo suite need data that exercises the exact reader path (19 columns, raw
label strings, index files, mixed .jpg/.JPG names, clinic == derm rows) without the licensed
release, and a benchmark harness must first prove that it recovers known answers. Labels follow
the real class and conditional frequencies (docs/derm7pt.md). What each image shows is set by a
`PlantedDesign` (docs/planted.md):

* per label and modality a *visibility* in [0, 1] that scales how strongly that label's structures
  are drawn (0: not drawn at all, so the image carries no information about it beyond what other
  labels imply);
* clinical-only cues that dermoscopy does not show, as in real practice: the lesion's absolute
  size against the surrounding skin (dermoscopy frames every lesion to fill the field), elevation
  rendered as shading under side light (immersion dermoscopy flattens it), and body-site context
  (hair, acral ridges) in the background. Size, elevation and site are drawn per case from
  DIAG-dependent tables, so they carry DIAG information (and, through DIAG, criteria information);
* `clinic_extra` in [0, 1] scales everything the clinical photo shows beyond dermoscopy (the
  cues, and any clinic visibility above the derm one); 0 means "the clinical photo carries
  nothing extra", the calibration suite's null level;
* `label_noise`: chance per label that the images show another class than meta.csv says.

The generator writes its ground truth to `meta/planted.json` (design, per-label accuracy ceilings
that the label noise allows). Deterministic: labels come from one RNG seeded by `seed`, the
clinical cues from a second one (so the labels are the same for every design), each case's images
from an RNG seeded by (seed, case index); JPEGs are written by PIL at fixed quality, no metadata.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter, map_coordinates

from ssnbench.data.derm7pt import LABEL_COLUMNS, META_COLUMNS, RAW_VALUES
from ssnbench.data.labels import CLASSES, LABELS
from ssnbench.errors import ConfigError, DatasetError

# 2: planted per-modality visibility and clinical-only cues; 3: the DIAG look drawn in the clinical
# photo only, elevation drawn given DIAG and PN
GENERATOR_VERSION = 3
PLANTED = "planted.json"  # in meta/: the planted ground truth (see `planted_truth`)
MARKER = ".synthetic.json"  # in meta/: lets `generate` recognise (and only ever replace) its own output
JPEG_QUALITY = 90
LABEL_NOISE = 0.08  # default chance that the image shows another class than meta.csv says (per label)
REAL_SPLITS = {"train": 413, "valid": 203, "test": 395}

# Grouped DIAG counts over the 1011 real cases (BCC, NEV, MEL, MISC, SK).
DIAG_COUNTS = (42, 575, 252, 97, 45)
# P(criterion class | DIAG), rows in DIAG order, columns in CLASSES order (docs/derm7pt.md).
CONDITIONAL = {
    "PN": ((.93, .05, .02), (.34, .53, .14), (.32, .13, .55), (.54, .38, .08), (.73, .16, .11)),
    "BWV": ((.79, .21), (.89, .11), (.52, .48), (.99, .01), (.96, .04)),
    "VS": ((.36, .62, .02), (.90, .07, .03), (.68, .13, .18), (.86, .10, .04), (.78, .18, .04)),
    "PIG": ((.69, .00, .31), (.65, .14, .21), (.43, .01, .56), (.67, .22, .11), (.22, .33, .44)),
    "STR": ((.93, .00, .07), (.70, .16, .15), (.37, .02, .60), (.81, .10, .08), (.91, .02, .07)),
    "DaG": ((.45, .02, .52), (.20, .51, .30), (.08, .04, .88), (.56, .21, .24), (.49, .27, .24)),
    "RS": ((.83, .17), (.79, .21), (.56, .44), (.90, .10), (.93, .07)),
}
# Relative frequency of each raw string within its grouped class (real release counts for DIAG).
RAW_WEIGHTS: dict[str, dict[str, float]] = {
    "DIAG": {
        "basal cell carcinoma": 42, "blue nevus": 28, "clark nevus": 399, "combined nevus": 13,
        "congenital nevus": 17, "dermal nevus": 33, "recurrent nevus": 6, "reed or spitz nevus": 79,
        "melanoma": 1, "melanoma (in situ)": 64, "melanoma (less than 0.76 mm)": 102,
        "melanoma (0.76 to 1.5 mm)": 53, "melanoma (more than 1.5 mm)": 28, "melanoma metastasis": 4,
        "dermatofibroma": 20, "lentigo": 24, "melanosis": 16, "miscellaneous": 8, "vascular lesion": 29,
        "seborrheic keratosis": 45,
    },
    "VS": {"arborizing": 4, "comma": 3, "hairpin": 3, "within regression": 2, "wreath": 1,
           "dotted": 3, "linear irregular": 2},
    "PIG": {"diffuse regular": 1, "localized regular": 1, "diffuse irregular": 1, "localized irregular": 1},
    "RS": {"blue areas": 2, "white areas": 2, "combinations": 1},
}
SEVEN_POINT_WEIGHTS = {("PN", 2): 2, ("BWV", 1): 2, ("VS", 2): 2, ("PIG", 2): 1, ("STR", 2): 1,
                       ("DaG", 2): 1, ("RS", 1): 1}
LOCATIONS = ("back", "lower limbs", "abdomen", "upper limbs", "chest", "head neck", "acral", "buttocks",
             "genital areas")
ELEVATIONS = ("flat", "palpable", "nodular")

# ----------------------------------------------------------------------------------------------
# The planted design: what each modality shows.
# ----------------------------------------------------------------------------------------------

#: Default visibility of each label in dermoscopy. Why these values: dermoscopy shows the fine
#: criteria (network, dots, streaks, blotches, regression, veil) fully; contact dermoscopy blanches
#: vessels under pressure (VS not shown); the DIAG-specific look (colour, nests, ridges, shape) is
#: not drawn, so that dermoscopy tells the diagnosis only through the criteria and the clinical
#: photo (which draws that look, and has the clinical-only cues) adds to it.
DERM_VISIBILITY: dict[str, float] = {"DIAG": 0.0, "PN": 1.0, "BWV": 1.0, "VS": 0.0, "PIG": 1.0, "STR": 1.0,
                                     "DaG": 1.0, "RS": 1.0}
#: Default visibility in the clinical photo (drawn before the clinic's smaller scale and blur, which
#: remove most fine detail anyway): colour-level structures (vessels, also as a red blush; veil,
#: blotches, the DIAG colour) are visible, fine structures barely.
CLINIC_VISIBILITY: dict[str, float] = {"DIAG": 1.0, "PN": 0.2, "BWV": 0.6, "VS": 1.0, "PIG": 0.5, "STR": 0.3,
                                       "DaG": 0.2, "RS": 0.4}
#: Clinical-only cues, by DIAG (BCC, NEV, MEL, MISC, SK): median lesion diameter (mm; log-normal,
#: sigma SIZE_SIGMA), P(elevation), P(body site) over LOCATIONS. Invented but plausible orderings
#: (melanomas large, nevi small; BCC and SK raised; BCC on the head and neck, MISC on the legs).
SIZE_MM: tuple[float, ...] = (6.0, 4.0, 9.0, 4.5, 8.0)
CLINIC_FIELD_MM = 16.0  # width of skin the clinical photo shows (the lesion's size is read against it)
SIZE_SIGMA = 0.22
ELEVATION_GIVEN_DIAG: tuple[tuple[float, ...], ...] = (
    (.10, .30, .60), (.55, .35, .10), (.50, .30, .20), (.70, .25, .05), (.05, .45, .50))
# columns in LOCATIONS order (back, lower limbs, abdomen, upper limbs, chest, head neck, acral, ...)
LOCATION_GIVEN_DIAG: tuple[tuple[float, ...], ...] = (
    (.10, .03, .03, .08, .08, .64, .01, .02, .01),
    (.36, .08, .16, .14, .16, .04, .02, .03, .01),
    (.34, .26, .06, .10, .08, .08, .06, .01, .01),
    (.08, .52, .06, .18, .04, .06, .03, .02, .01),
    (.30, .04, .10, .04, .26, .24, .00, .01, .01))
#: Elevation also tells the pigment network (clinical only: dermoscopy flattens the lesion): raised,
#: dermal or papillomatous lesions seldom show a network, flat junctional ones often do. P(elevation |
#: DIAG, PN) is ELEVATION_GIVEN_DIAG times these factors (by PN class: ABS, TYP, ATP), renormalised.
ELEVATION_FACTOR_GIVEN_PN: tuple[tuple[float, ...], ...] = ((0.3, 1.0, 3.0), (3.0, 1.0, 0.2), (1.5, 1.5, 0.4))
#: Background context a body site shows in the clinical photo: hair density, acral ridges.
SITE_HAIR = {"head neck": 1.0, "upper limbs": 0.6, "lower limbs": 0.6, "chest": 0.2}
SITE_RIDGES = {"acral"}


def _visibility(name: str, value: object, default: Mapping[str, float]) -> dict[str, float]:
    if value is None:
        return dict(default)
    if not isinstance(value, Mapping):
        raise ConfigError(f"planted.{name}: expected a mapping label -> visibility, got {value!r}")
    out = dict(default)
    for label, v in value.items():
        if label not in LABELS:
            raise ConfigError(f"planted.{name}.{label}: unknown label; expected one of {', '.join(LABELS)}")
        out[label] = _unit(f"planted.{name}.{label}", v)
    return out


def _unit(key: str, v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
        raise ConfigError(f"{key}: expected a number in [0, 1], got {v!r}")
    return float(v)


@dataclass(frozen=True)
class PlantedDesign:
    """What each modality shows (module docstring). All values in [0, 1].

    `derm`/`clinic`: visibility per label; `clinic_extra` scales every piece of information the
    clinical photo has beyond dermoscopy (the clinical-only cues, and clinic visibility above the
    derm one: effective clinic visibility = min(c, d) + clinic_extra * max(0, c - d));
    `label_noise`: chance per label that the images show another class than meta.csv says.
    """

    derm: Mapping[str, float] = field(default_factory=lambda: dict(DERM_VISIBILITY))
    clinic: Mapping[str, float] = field(default_factory=lambda: dict(CLINIC_VISIBILITY))
    clinic_extra: float = 1.0
    label_noise: float = LABEL_NOISE

    @classmethod
    def from_overrides(cls, overrides: Mapping[str, object] | None = None) -> PlantedDesign:
        """The default design with a suite's `dataset.planted` overrides; bad keys or values raise
        one ConfigError line naming the key."""
        overrides = dict(overrides or {})
        allowed = ("derm", "clinic", "clinic_extra", "label_noise")
        for key in overrides:
            if key not in allowed:
                raise ConfigError(f"planted.{key}: unknown key; expected one of {', '.join(allowed)}")
        return cls(
            derm=_visibility("derm", overrides.get("derm"), DERM_VISIBILITY),
            clinic=_visibility("clinic", overrides.get("clinic"), CLINIC_VISIBILITY),
            clinic_extra=_unit("planted.clinic_extra", overrides.get("clinic_extra", 1.0)),
            label_noise=_unit("planted.label_noise", overrides.get("label_noise", LABEL_NOISE)),
        )

    def effective_clinic(self) -> dict[str, float]:
        """Clinic visibility after `clinic_extra` (what the renderer uses)."""
        return {k: min(c, self.derm[k]) + self.clinic_extra * max(0.0, c - self.derm[k])
                for k, c in self.clinic.items()}

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["derm"], d["clinic"] = dict(self.derm), dict(self.clinic)
        return d


DEFAULT_DESIGN = PlantedDesign()


@dataclass(frozen=True)
class SyntheticCase:
    """What the generator decided for one row: recorded labels, what the images show, paths."""

    index: int
    labels: tuple[int, ...]  # grouped, as written to meta.csv
    shown: tuple[int, ...]  # grouped, as rendered (differs where label noise struck)
    raw: tuple[str, ...]  # raw strings written to meta.csv, LABELS order
    shown_raw: tuple[str, ...]  # raw strings the renderer drew
    clinic: str
    derm: str
    split: str
    size_mm: float = 5.0  # clinical-only cues (of the shown DIAG): physical diameter,
    elevation: int = 0  # index into ELEVATIONS,
    site: int = 0  # index into LOCATIONS


def _allocate(n: int, probs, min_each: bool = False) -> list[int]:
    """Integer counts summing to n, proportional to probs (largest remainder)."""
    p = np.asarray(probs, dtype=float)
    p = p / p.sum()
    counts = np.floor(n * p).astype(int)
    if min_each and n >= len(p):
        counts = np.maximum(counts, (p > 0).astype(int))
    order = np.argsort(-(n * p - np.floor(n * p)), kind="stable")
    i = 0
    while counts.sum() < n:
        counts[order[i % len(p)]] += 1
        i += 1
    while counts.sum() > n:
        j = int(np.argmax(counts))
        counts[j] -= 1
    return counts.tolist()


def _quota_draw(rng: np.random.Generator, n: int, probs, min_each: bool = False) -> np.ndarray:
    """n class indices whose counts match probs as closely as integers allow, in random order."""
    counts = _allocate(n, probs, min_each)
    values = np.repeat(np.arange(len(counts)), counts)
    return rng.permutation(values)


def _raw_options(label: str, cls: int) -> tuple[list[str], list[float]]:
    name = CLASSES[label][cls]
    names = [raw for raw, grouped in RAW_VALUES[label].items() if grouped == name]
    weights = [RAW_WEIGHTS.get(label, {}).get(raw, 1.0) for raw in names]
    return names, weights


def _folder_code(f: int) -> str:
    code = chr(65 + (f // 26) % 26) + chr(97 + f % 26) + "l"
    return code.upper() if f % 5 == 3 else code


def plan_cases(cases: int = 1011, seed: int = 0, label_noise: float = LABEL_NOISE) -> list[SyntheticCase]:
    """Draw every row's labels, raw strings, file names, split and clinical cues (no images).
    `generate` writes exactly this plan, so tests can compare what the reader returns with what was
    drawn. The labels do not depend on the planted design (only on cases, seed, label_noise)."""
    if cases < 3:
        raise DatasetError(f"synthetic dataset needs at least 3 cases (one per split), got {cases}")
    rng = np.random.default_rng([seed, 0])
    diag = _quota_draw(rng, cases, DIAG_COUNTS)
    labels = np.zeros((cases, len(LABELS)), dtype=int)
    labels[:, 0] = diag
    for d in range(len(DIAG_COUNTS)):
        rows = np.flatnonzero(diag == d)
        for j, name in enumerate(LABELS[1:], start=1):
            labels[rows, j] = _quota_draw(rng, len(rows), CONDITIONAL[name][d])
    raw = np.empty((cases, len(LABELS)), dtype=object)
    for j, name in enumerate(LABELS):
        for cls in range(len(CLASSES[name])):
            rows = np.flatnonzero(labels[:, j] == cls)
            names, weights = _raw_options(name, cls)
            raw[rows, j] = [names[k] for k in _quota_draw(rng, len(rows), weights, min_each=True)]
    # Label noise: the image shows a class re-drawn from P(. | DIAG) (DIAG: from the priors).
    shown, shown_raw = labels.copy(), raw.copy()
    noisy = rng.random((cases, len(LABELS))) < label_noise
    for i, j in zip(*np.nonzero(noisy), strict=True):
        name = LABELS[j]
        probs = DIAG_COUNTS if j == 0 else CONDITIONAL[name][labels[i, 0]]
        cls = int(rng.choice(len(probs), p=np.asarray(probs) / np.sum(probs)))
        names, weights = _raw_options(name, cls)
        shown[i, j] = cls
        shown_raw[i, j] = names[int(rng.choice(len(names), p=np.asarray(weights) / np.sum(weights)))]
    # Splits: stratified by DIAG, sizes in the real 413/203/395 proportions.
    sizes = _allocate(cases, list(REAL_SPLITS.values()))
    if min(sizes) == 0:
        sizes = [cases - 2, 1, 1]
    order = sorted(range(cases), key=lambda r: (diag[r], rng.random()))
    split_of = [""] * cases
    taken = dict.fromkeys(REAL_SPLITS, 0)
    for k, r in enumerate(order):
        deficits = {s: (k + 1) * size / cases - taken[s] for s, size in zip(REAL_SPLITS, sizes, strict=True)
                    if taken[s] < size}
        s = max(deficits, key=deficits.get)
        taken[s] += 1
        split_of[r] = s
    # File names like the real release: NEL/NEL025.JPG (clinic), NEL/Nel026.jpg (derm).
    n_no_clinic = round(9 * cases / 1011) or (1 if cases >= 20 else 0)
    no_clinic = set(rng.choice(cases, size=n_no_clinic, replace=False).tolist())
    exts = rng.random((cases, 2))
    # Clinical-only cues from their own stream (the label draws above stay as they were).
    crng = np.random.default_rng([seed, 3])
    shown_diag = shown[:, 0]
    size_mm = np.exp(np.log(np.asarray(SIZE_MM)[shown_diag]) + SIZE_SIGMA * crng.standard_normal(cases))
    shown_pn = shown[:, LABELS.index("PN")]
    elevation = [int(crng.choice(3, p=elevation_probs(d, pn)))
                 for d, pn in zip(shown_diag, shown_pn, strict=True)]
    site_p = np.asarray(LOCATION_GIVEN_DIAG) / np.sum(LOCATION_GIVEN_DIAG, axis=1, keepdims=True)
    site = [int(crng.choice(len(LOCATIONS), p=site_p[d])) for d in shown_diag]
    out = []
    for i in range(cases):
        folder, k = divmod(i, 8)
        code = _folder_code(folder)
        clinic_ext = ".JPG" if exts[i, 0] < 0.7 else ".jpg"
        derm_ext = ".jpg" if exts[i, 1] < 0.7 else ".JPG"
        derm = f"{code}/{code.title()}{2 * k + 2:03d}{derm_ext}"
        clinic = derm if i in no_clinic else f"{code}/{code.upper()}{2 * k + 1:03d}{clinic_ext}"
        out.append(SyntheticCase(i, tuple(int(v) for v in labels[i]), tuple(int(v) for v in shown[i]),
                                 tuple(raw[i]), tuple(shown_raw[i]), clinic, derm, split_of[i],
                                 float(size_mm[i]), elevation[i], site[i]))
    return out


def elevation_probs(diag: int, pn: int) -> np.ndarray:
    """P(elevation | DIAG, PN) over ELEVATIONS: the DIAG table times the PN factors, renormalised."""
    p = np.asarray(ELEVATION_GIVEN_DIAG[diag]) * np.asarray(ELEVATION_FACTOR_GIVEN_PN[pn])
    return p / p.sum()


# ----------------------------------------------------------------------------------------------
# Rendering. Coordinates are in "lesion units": the derm frame spans [-1, 1] on both axes.
# ----------------------------------------------------------------------------------------------

def _noise(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, wavelength: float,
           n: int = 6) -> np.ndarray:
    """Smooth random field (sum of random plane waves), roughly zero-mean unit-variance."""
    k = 2 * np.pi / (wavelength * rng.uniform(0.7, 1.4, n))
    a = rng.uniform(0, 2 * np.pi, n)
    ph = rng.uniform(0, 2 * np.pi, n)
    kx, ky, ph = (np.float32(v) for v in (k * np.cos(a), k * np.sin(a), ph))  # float32: 2x faster cos
    out = np.zeros(x.shape, dtype=np.float32)
    for i in range(n):
        out += np.cos(kx[i] * x + ky[i] * y + ph[i])
    return out * np.float32(np.sqrt(2.0 / n))


def _smoothstep(v: np.ndarray) -> np.ndarray:
    v = np.clip(v, 0.0, 1.0)
    return v * v * (3 - 2 * v)


def _discs(x, y, cx, cy, r, soft: float) -> np.ndarray:
    """Max over K soft discs (centres cx, cy, radii r): alpha in [0, 1]."""
    if len(cx) == 0:
        return np.zeros_like(x)
    cx, cy = np.asarray(cx)[:, None, None], np.asarray(cy)[:, None, None]
    d = np.sqrt((x[None] - cx) ** 2 + (y[None] - cy) ** 2)
    return _smoothstep((np.asarray(r)[:, None, None] - d) / soft + 0.5).max(axis=0)


def _segments(x, y, seg: np.ndarray, soft: float) -> np.ndarray:
    """Max over line segments seg[K, 5] = (x0, y0, x1, y1, half_width): alpha in [0, 1]."""
    if len(seg) == 0:
        return np.zeros_like(x)
    x0, y0, x1, y1, w = (seg[:, i, None, None] for i in range(5))
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((x[None] - x0) * dx + (y[None] - y0) * dy) / np.maximum(dx * dx + dy * dy, 1e-9), 0, 1)
    d = np.hypot(x[None] - x0 - t * dx, y[None] - y0 - t * dy)
    return _smoothstep((w - d) / soft + 0.5).max(axis=0)


def _polyline(rng, start, heading, steps, step_len, turn, width, taper=1.0) -> list[list[float]]:
    segs, (px, py) = [], start
    for _ in range(steps):
        heading += rng.normal(0, turn)
        nx, ny = px + step_len * np.cos(heading), py + step_len * np.sin(heading)
        segs.append([px, py, nx, ny, width])
        px, py, width = nx, ny, width * taper
    return segs


def _blend(col: np.ndarray, alpha: np.ndarray, colour) -> np.ndarray:
    a = alpha[..., None]
    return col * (1 - a) + np.asarray(colour, dtype=np.float32) * a


def _jitter(rng, colour, amount: float = 0.05):
    return np.clip(np.asarray(colour) + rng.normal(0, amount, 3), 0, 1)


DIAG_LOOK = {  # radius range, asymmetry, border irregularity, edge softness, base colour
    "BCC": ((0.40, 0.54), 0.06, 0.03, 0.10, (0.84, 0.58, 0.56)),
    "NEV": ((0.34, 0.50), 0.04, 0.012, 0.12, (0.55, 0.36, 0.24)),
    "MEL": ((0.44, 0.60), 0.16, 0.06, 0.05, (0.36, 0.21, 0.15)),
    "MISC": ((0.30, 0.46), 0.06, 0.02, 0.12, (0.68, 0.48, 0.38)),
    "SK": ((0.40, 0.54), 0.05, 0.025, 0.03, (0.60, 0.44, 0.30)),
}
#: What a lesion looks like with DIAG visibility 0: the mean of DIAG_LOOK, one colour for all.
NEUTRAL_LOOK = ((0.38, 0.52), 0.07, 0.03, 0.09, (0.58, 0.40, 0.30))
RAW_BASE = {"blue nevus": (0.33, 0.38, 0.52), "dermal nevus": (0.72, 0.54, 0.45),
            "congenital nevus": (0.42, 0.26, 0.18), "reed or spitz nevus": (0.26, 0.16, 0.12),
            "lentigo": (0.66, 0.48, 0.35), "melanosis": (0.70, 0.52, 0.42),
            "vascular lesion": (0.62, 0.22, 0.30), "dermatofibroma": (0.70, 0.50, 0.40)}


def render_lesion(rng: np.random.Generator, shown: tuple[int, ...], shown_raw: tuple[str, ...], *,
                  x: np.ndarray, y: np.ndarray, vis: Mapping[str, float] | None = None,
                  ) -> tuple[np.ndarray, np.ndarray, float]:
    """Premultiplied lesion colour [H, W, 3], alpha [H, W] and radius on the derm grid (x, y).

    `vis[label]` in [0, 1] scales how strongly that label's structures are drawn (DIAG: the
    class-specific colour, shape and patterns, blended towards a neutral lesion). The random draws
    never depend on `vis`, so two calls with the same RNG state draw the same lesion geometry with
    different visibility (that is how the clinical photo and the dermoscopy image stay one lesion).
    """
    vis = {name: 1.0 for name in LABELS} | dict(vis or {})
    dv = vis["DIAG"]
    diag = CLASSES["DIAG"][shown[0]]
    raw_diag = shown_raw[0]
    cls = {name: CLASSES[name][shown[j]] for j, name in enumerate(LABELS)}
    raw = dict(zip(LABELS, shown_raw, strict=True))
    (r_lo, r_hi), asym, irreg, soft, base = DIAG_LOOK[diag]
    base = RAW_BASE.get(raw_diag, base)
    (n_lo, n_hi), n_asym, n_irreg, n_soft, n_base = NEUTRAL_LOOK
    r_lo, r_hi = n_lo + dv * (r_lo - n_lo), n_hi + dv * (r_hi - n_hi)
    asym, irreg = n_asym + dv * (asym - n_asym), n_irreg + dv * (irreg - n_irreg)
    soft = n_soft + dv * (soft - n_soft)
    base = tuple(nb + dv * (b - nb) for nb, b in zip(n_base, base, strict=True))
    radius = r_lo + rng.random() * (r_hi - r_lo)
    cx, cy = rng.uniform(-0.08, 0.08, 2)
    rot = rng.uniform(0, 2 * np.pi)
    u0, v0 = x - np.float32(cx), y - np.float32(cy)
    cr, sr = np.float32(np.cos(rot)), np.float32(np.sin(rot))
    u, v = u0 * cr + v0 * sr, -u0 * sr + v0 * cr
    elong = 1.0 + rng.random() * (0.25 + (0.2 * dv if diag == "MEL" else 0.0))
    ue, ve = u / elong, v * elong
    rho, theta = np.hypot(ue, ve), np.arctan2(ve, ue)
    shape = np.ones_like(theta)
    for k in range(1, 4):
        shape += asym * rng.uniform(0.4, 1.2) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    for k in range(4, 11):
        shape += irreg * rng.uniform(0.3, 1.2) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    d = rho / (radius * shape)  # < 1 inside the lesion
    body = _smoothstep((1 - d) / (2 * soft) + 0.5)
    inside = _smoothstep((0.92 - d) / 0.1 + 0.5)

    # Base colour with low-frequency variation (melanoma: several colours).
    col = np.empty(x.shape + (3,), dtype=np.float32)
    col[:] = _jitter(rng, base, 0.04)
    n1 = _noise(rng, u, v, radius * 1.2)
    col *= (1 + 0.08 * n1)[..., None]
    if diag == "MEL":
        for colour in ((0.12, 0.08, 0.08), (0.62, 0.42, 0.30), (0.42, 0.42, 0.52)):
            patch = _smoothstep(_noise(rng, u, v, radius * 1.3) - 0.4) * inside
            col = _blend(col, 0.85 * dv * patch, _jitter(rng, colour, 0.03))
    elif diag == "BCC":  # blue-grey ovoid nests, shiny white areas
        k = rng.integers(3, 7)
        ang, rr = rng.uniform(0, 2 * np.pi, k), rng.uniform(0.1, 0.7, k) * radius
        sizes = rng.uniform(0.16, 0.32, k) * radius
        nests = _discs(u, v, rr * np.cos(ang), rr * np.sin(ang), sizes, 0.03)
        col = _blend(col, 0.85 * dv * nests * inside, (0.33, 0.36, 0.47))
    elif diag == "SK":  # cerebriform ridges, milia-like cysts
        warp = _noise(rng, u, v, radius * 0.6) * 0.05
        ridges = 0.5 + 0.5 * np.cos(2 * np.pi * (u + warp) / 0.09) * np.cos(2 * np.pi * (v - warp) / 0.13)
        col = _blend(col, 0.45 * dv * _smoothstep(ridges - 0.3) * inside, (0.38, 0.26, 0.16))
        k = rng.integers(3, 8)
        ang, rr = rng.uniform(0, 2 * np.pi, k), np.sqrt(rng.uniform(0, 0.6, k)) * radius
        milia = _discs(u, v, rr * np.cos(ang), rr * np.sin(ang), np.full(k, 0.025), 0.02)
        col = _blend(col, 0.9 * dv * milia * inside, (0.95, 0.93, 0.85))
    elif raw_diag == "dermatofibroma":
        col = _blend(col, 0.8 * dv * _smoothstep((0.45 - d) / 0.2), (0.93, 0.90, 0.86))
    elif raw_diag == "vascular lesion":
        k = rng.integers(6, 12)
        ang, rr = rng.uniform(0, 2 * np.pi, k), np.sqrt(rng.uniform(0, 0.6, k)) * radius
        lac = _discs(u, v, rr * np.cos(ang), rr * np.sin(ang), rng.uniform(0.06, 0.12, k), 0.03)
        col = _blend(col, 0.9 * dv * lac * inside, (0.55, 0.08, 0.18))

    def blob(centre_r: float, size: float, ragged: float) -> np.ndarray:
        a = rng.uniform(0, 2 * np.pi)
        bx, by = centre_r * radius * np.cos(a), centre_r * radius * np.sin(a)
        dd = np.hypot(u - bx, v - by) / (size * radius) + ragged * _noise(rng, u, v, radius * 0.45)
        return _smoothstep((1 - dd) / 0.25 + 0.5) * inside

    # PIG: structureless dark blotches.
    if cls["PIG"] != "ABS":
        diffuse = raw["PIG"].startswith("diffuse")
        strength = rng.uniform(0.7, 0.95) * vis["PIG"]
        if cls["PIG"] == "REG":
            mask = blob(0.0, 0.62 if diffuse else 0.34, 0.03)
            col = _blend(col, strength * mask, (0.22, 0.13, 0.10))
        else:
            mask = blob(rng.uniform(0.3, 0.5), 0.55 if diffuse else 0.3, 0.35)
            if diffuse:
                mask = np.maximum(mask, blob(rng.uniform(0.2, 0.6), 0.3, 0.4))
            col = _blend(col, strength * mask, (0.07, 0.05, 0.06))

    # PN: reticular lines; typical = thin regular honeycomb fading out, atypical = thick, distorted, broken.
    if cls["PN"] != "ABS":
        typical = cls["PN"] == "TYP"
        period = rng.uniform(0.085, 0.11) if typical else rng.uniform(0.11, 0.16)
        warp = 0.0 if typical else 0.06
        pu = u + warp * _noise(rng, u, v, 0.3)
        pv = v + warp * _noise(rng, u, v, 0.3)
        k = 4 * np.pi / (np.sqrt(3) * period)
        h = sum(np.cos(k * (pu * np.cos(a) + pv * np.sin(a))) for a in (0.0, 2 * np.pi / 3, 4 * np.pi / 3))
        lines = _smoothstep(((0.0 if typical else 0.6) - h) / 0.5 + 0.5)
        if typical:
            lines = lines * _smoothstep((1.0 - d) / 0.3) * body * rng.uniform(0.75, 0.95)
            colour = (0.24, 0.14, 0.09)
        else:
            broken = _smoothstep(_noise(rng, u, v, radius * 0.8) + 0.8)
            lines = lines * inside * broken * rng.uniform(0.75, 0.95)
            colour = (0.12, 0.08, 0.07)
        col = _blend(col, vis["PN"] * lines, colour)

    # DaG: regular = similar dots evenly spread; irregular = varied sizes, clustered off-centre.
    if cls["DaG"] != "ABS":
        if cls["DaG"] == "REG":
            k = int(rng.integers(14, 26))
            golden = np.pi * (3 - np.sqrt(5))
            rr = np.sqrt((np.arange(k) + 0.5) / k) * 0.72 * radius
            ang = np.arange(k) * golden + rng.uniform(0, 2 * np.pi)
            sizes, colour = np.full(k, rng.uniform(0.022, 0.03)), (0.30, 0.18, 0.12)
        else:
            k = int(rng.integers(12, 30))
            ca = rng.uniform(0, 2 * np.pi)
            cxs = 0.45 * radius * np.cos(ca) + rng.normal(0, 0.28 * radius, k)
            cys = 0.45 * radius * np.sin(ca) + rng.normal(0, 0.28 * radius, k)
            rr, ang = np.hypot(cxs, cys), np.arctan2(cys, cxs)
            sizes, colour = rng.uniform(0.012, 0.05, k), (0.10, 0.07, 0.07)
        dots = _discs(u, v, rr * np.cos(ang), rr * np.sin(ang), sizes, 0.012) * body
        col = _blend(col, 0.95 * vis["DaG"] * dots, colour)

    # RS: white scar-like areas and/or blue-grey peppering.
    if cls["RS"] == "PRS":
        kind = raw["RS"]
        if kind in ("white areas", "combinations"):
            scar = blob(rng.uniform(0.1, 0.5), 0.38, 0.3)
            col = _blend(col, rng.uniform(0.75, 0.9) * vis["RS"] * scar, (0.94, 0.91, 0.88))
        if kind in ("blue areas", "combinations"):
            area = blob(rng.uniform(0.1, 0.5), 0.42, 0.3)
            pepper = _smoothstep((_noise(rng, u, v, 0.035, n=8) - 0.3) / 0.6)
            col = _blend(col, vis["RS"] * area * (0.35 + 0.55 * pepper), (0.48, 0.52, 0.62))

    # BWV: a large confluent blue-white haze.
    if cls["BWV"] == "PRS":
        veil = blob(rng.uniform(0.0, 0.4), rng.uniform(0.5, 0.7), 0.25)
        col = _blend(col, rng.uniform(0.7, 0.85) * vis["BWV"] * veil, (0.46, 0.58, 0.76))

    # VS: regular = arborizing/comma/hairpin/wreath vessels; irregular = dotted or linear irregular.
    if cls["VS"] != "ABS":
        kind, segs = raw["VS"], []
        red = (0.78, 0.10, 0.16)
        if kind == "dotted":
            k = int(rng.integers(25, 50))
            rr, ang = np.sqrt(rng.uniform(0, 0.8, k)) * radius, rng.uniform(0, 2 * np.pi, k)
            vessels = _discs(u, v, rr * np.cos(ang), rr * np.sin(ang), rng.uniform(0.014, 0.022, k), 0.01)
        else:
            if kind == "linear irregular":
                for _ in range(int(rng.integers(5, 9))):
                    p = rng.uniform(-0.7, 0.7, 2) * radius
                    segs += _polyline(rng, p, rng.uniform(0, 2 * np.pi), 4, 0.06, 1.2, 0.012)
            elif kind == "wreath":
                for a in np.linspace(0, 2 * np.pi, 10, endpoint=False) + rng.uniform(0, 1):
                    p = (0.7 * radius * np.cos(a), 0.7 * radius * np.sin(a))
                    segs += _polyline(rng, p, a + np.pi / 2, 2, 0.07, 0.3, 0.012)
            elif kind in ("comma", "hairpin", "within regression"):
                for _ in range(int(rng.integers(5, 9))):
                    p = rng.uniform(-0.6, 0.6, 2) * radius
                    h = rng.uniform(0, 2 * np.pi)
                    segs += _polyline(rng, p, h, 3, 0.05, 0.5, 0.013)
                    if kind == "hairpin":
                        off = 0.025 * np.array([-np.sin(h), np.cos(h)])
                        segs += _polyline(rng, p + off, h, 3, 0.05, 0.2, 0.011)
            else:  # arborizing: a few thick trunks with thinner branches
                for _ in range(int(rng.integers(2, 4))):
                    p = rng.uniform(-0.5, 0.5, 2) * radius
                    h = rng.uniform(0, 2 * np.pi)
                    trunk = _polyline(rng, p, h, 5, 0.08, 0.35, 0.022, 0.8)
                    segs += trunk
                    for s in trunk[1::2]:
                        segs += _polyline(rng, (s[2], s[3]), h + rng.choice([-1, 1]) * rng.uniform(0.6, 1.2),
                                          3, 0.05, 0.4, 0.012, 0.8)
            vessels = _segments(u, v, np.asarray(segs, dtype=np.float32), 0.012)
        col = _blend(col, 0.9 * vis["VS"] * vessels * body, red)

    colour = np.clip(col, 0, 1) * body[..., None]  # premultiplied
    alpha = body.copy()
    # STR: radial streaks at the rim, over lesion and skin.
    if cls["STR"] != "ABS":
        regular = cls["STR"] == "REG"
        if regular:
            k = int(rng.integers(18, 28))
            angles = np.linspace(0, 2 * np.pi, k, endpoint=False) + rng.uniform(0, 1)
            lengths = np.full(k, rng.uniform(0.22, 0.32))
        else:
            k = int(rng.integers(6, 14))
            angles = rng.uniform(0, rng.uniform(1.2, 2.6), k) + rng.uniform(0, 2 * np.pi)
            lengths = rng.uniform(0.15, 0.45, k)
        # Streak k: from the lesion edge outwards along its angle (lesion frame), drawn as segments.
        edge = radius * np.interp(angles % (2 * np.pi), np.linspace(0, 2 * np.pi, 360, endpoint=False),
                                  _shape_profile(shape, theta))
        r0, r1 = edge * 0.8, edge * (1 + lengths)
        segs = np.stack([r0 * np.cos(angles) * elong, r0 * np.sin(angles) / elong,
                         r1 * np.cos(angles) * elong, r1 * np.sin(angles) / elong,
                         np.full(k, 0.018 if regular else 0.024)], axis=1)
        streaks = _segments(u, v, segs.astype(np.float32), 0.015) * rng.uniform(0.8, 0.95) * vis["STR"]
        sc = np.asarray((0.24, 0.14, 0.10) if regular else (0.10, 0.06, 0.06), dtype=np.float32)
        colour = colour * (1 - streaks[..., None]) + sc * streaks[..., None]
        alpha = alpha * (1 - streaks) + streaks
    return colour.astype(np.float32), alpha.astype(np.float32), float(radius)


def _shape_profile(shape: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Border radius factor per degree (0..359), read back from the shape field."""
    bins = ((theta % (2 * np.pi)) / (2 * np.pi) * 360).astype(int) % 360
    total = np.bincount(bins.ravel(), weights=shape.ravel(), minlength=360)
    count = np.bincount(bins.ravel(), minlength=360)
    prof = total / np.maximum(count, 1)
    empty = count == 0
    if empty.any():
        prof[empty] = np.interp(np.flatnonzero(empty), np.flatnonzero(~empty), prof[~empty], period=360)
    return prof


SKIN_TONES = ((0.93, 0.80, 0.72), (0.88, 0.71, 0.60), (0.78, 0.60, 0.47), (0.66, 0.48, 0.36),
              (0.52, 0.36, 0.26), (0.40, 0.27, 0.20))


def render_pair(case: SyntheticCase, seed: int, size: int,
                design: PlantedDesign = DEFAULT_DESIGN) -> tuple[np.ndarray, np.ndarray]:
    """(clinic, derm) uint8 images [S, S, 3] for one case, under a planted design."""
    rng = np.random.default_rng([seed, 1, case.index])
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    x, y = np.meshgrid(c, c)
    colour, alpha, radius = render_lesion(rng, case.shown, case.shown_raw, x=x, y=y, vis=design.derm)
    # The same lesion (a fresh RNG in the same state: the same draws) with the clinic's visibility.
    lesion_rng = np.random.default_rng([seed, 1, case.index])
    c_vis = design.effective_clinic()
    c_colour, c_alpha, _ = render_lesion(lesion_rng, case.shown, case.shown_raw, x=x, y=y, vis=c_vis)
    extra = design.clinic_extra

    # Dermoscopy: immersion-lit pinkish skin, the lesion filling the field whatever its size, a
    # circular dark field-of-view edge; no elevation, no body-site context.
    skin = _jitter(rng, (0.88, 0.70, 0.62), 0.03).astype(np.float32)
    bg = skin * (1 + 0.02 * _noise(rng, x, y, 0.7))[..., None]
    derm = bg * (1 - alpha[..., None]) + colour
    fov = rng.uniform(1.05, 1.3)
    derm *= _smoothstep((fov - np.hypot(x, y)) / 0.12)[..., None]
    derm = gaussian_filter(derm, (0.5, 0.5, 0)) + rng.normal(0, 0.01, derm.shape)

    # Clinic: the same lesion smaller, off-centre, rotated, washed out and blurred, on varied skin and
    # light. Its scale shows the lesion's absolute size (a fixed field, CLINIC_FIELD_MM across) with
    # weight `clinic_extra`, else a random scale.
    s_random = rng.uniform(0.45, 0.85)
    s_size = float(np.clip(case.size_mm / CLINIC_FIELD_MM / radius, 0.25, 1.1))
    s = s_random + extra * (s_size - s_random)
    psi = rng.uniform(0, 2 * np.pi)
    off = rng.uniform(-0.3, 0.3, 2)
    pre = gaussian_filter(np.concatenate([c_colour, c_alpha[..., None]], axis=2), (0.6 / s, 0.6 / s, 0))
    xd = (np.cos(psi) * (x - off[0]) + np.sin(psi) * (y - off[1])) / s
    yd = (-np.sin(psi) * (x - off[0]) + np.cos(psi) * (y - off[1])) / s
    rows, cols = (yd + 1) / 2 * size - 0.5, (xd + 1) / 2 * size - 0.5
    layers = np.stack([map_coordinates(pre[..., i], [rows, cols], order=1, mode="constant", cval=0.0)
                       for i in range(4)], axis=-1)
    a = np.clip(layers[..., 3], 0, 1)
    lesion = layers[..., :3] / np.maximum(a, 1e-3)[..., None]
    px = size / 128  # blur radii are given for 128-px images and scale with the image
    lesion = 0.45 * lesion + 0.55 * gaussian_filter(lesion, (3 * px, 3 * px, 0))
    tone = np.asarray(SKIN_TONES[rng.integers(len(SKIN_TONES))], dtype=np.float32)
    opacity = rng.uniform(0.65, 0.85)
    skin_c = _jitter(rng, tone, 0.03) * (1 + 0.03 * _noise(rng, x, y, 0.6))[..., None]
    # Body-site context (clinical only): acral ridges, hair.
    site = LOCATIONS[case.site]
    ridge_a = rng.uniform(0, np.pi)
    ridges = 0.5 + 0.5 * np.cos(2 * np.pi * (x * np.cos(ridge_a) + y * np.sin(ridge_a)) / 0.09)
    if site in SITE_RIDGES:
        skin_c = skin_c * (1 - 0.22 * extra * ridges)[..., None]
    hairs = []
    for _ in range(24):
        hairs += _polyline(rng, rng.uniform(-1.1, 1.1, 2), rng.uniform(0, 2 * np.pi), 4, 0.12, 0.25, 0.012)
    n_hair = int(round(24 * SITE_HAIR.get(site, 0.0))) * 4
    hair = _segments(x, y, np.asarray(hairs[:n_hair], dtype=np.float32).reshape(-1, 5), 0.01)
    lesion = lesion * (0.6 + 0.4 * tone / 0.8)  # darker skin, darker lesion
    clinic = skin_c * (1 - opacity * a[..., None]) + lesion * opacity * a[..., None]
    clinic = _blend(clinic, 0.8 * extra * hair, (0.16, 0.11, 0.08))
    # Vessels below the clinical photo's resolution show as erythema: a red blush over and around
    # the lesion (patchy when irregular), at the clinic's VS visibility.
    blush = np.clip(2.5 * gaussian_filter(a, 4.0 * px), 0, 1)
    patchy = _smoothstep(_noise(rng, x, y, 0.3) + 0.2)
    vs = CLASSES["VS"][case.shown[LABELS.index("VS")]]
    if vs != "ABS":
        blush = blush * patchy if vs == "IR" else blush
        clinic = _blend(clinic, 0.8 * c_vis["VS"] * blush, (0.78, 0.22, 0.24))
    # Elevation (clinical only): side-lit shading of a raised lesion (lit flank, shaded flank, cast shadow).
    height = gaussian_filter(a, 2.0 * px) * (0.0, 0.5, 1.0)[case.elevation] * extra
    light = rng.uniform(0, 2 * np.pi)
    gy, gx = np.gradient(height)
    slope = (gx * np.cos(light) + gy * np.sin(light)) * size / 8.0
    shadow = np.clip(map_coordinates(height, [np.mgrid[0:size, 0:size][0] - 3 * px * np.sin(light),
                                              np.mgrid[0:size, 0:size][1] - 3 * px * np.cos(light)],
                                     order=1, mode="nearest") - height, 0, 1)
    clinic = clinic * np.clip(1 + 0.9 * slope - 0.5 * shadow, 0.3, 1.6)[..., None]
    gradient = np.cos(psi) * x + np.sin(psi) * y
    light_field = 1 + rng.uniform(0.1, 0.3) * gradient - rng.uniform(0, 0.25) * (x * x + y * y)
    clinic = clinic * light_field[..., None] * rng.uniform(0.92, 1.08, 3)
    blur = rng.uniform(1.0, 1.6) * px
    clinic = gaussian_filter(clinic, (blur, blur, 0)) + rng.normal(0, 0.015, clinic.shape)

    def to_u8(img: np.ndarray) -> np.ndarray:
        return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)

    return to_u8(clinic), to_u8(derm)


# ----------------------------------------------------------------------------------------------
# Writing.
# ----------------------------------------------------------------------------------------------

def _jpeg_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image, "RGB").save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=False)
    return buf.getvalue()


def _meta_rows(plan: list[SyntheticCase], seed: int) -> list[list[str]]:
    rng = np.random.default_rng([seed, 2])
    rows = []
    for case in plan:
        raw = dict(zip(LABELS, case.raw, strict=True))
        diag = CLASSES["DIAG"][case.labels[0]]
        score = sum(w for (name, cls), w in SEVEN_POINT_WEIGHTS.items()
                    if case.labels[LABELS.index(name)] == cls)
        malignant = diag in ("MEL", "BCC")
        difficulty = rng.choice(("low", "medium", "high"),
                                p=(0.3, 0.4, 0.3) if malignant else (0.5, 0.35, 0.15))
        management = ("excision" if malignant or rng.random() < 0.3 else
                      rng.choice(("clinical follow up", "no further examination")))
        stem = Path(case.clinic).stem if case.clinic != case.derm else Path(case.derm).stem.upper()
        rows.append({
            "case_num": str(case.index + 1), "seven_point_score": str(score),
            "level_of_diagnostic_difficulty": str(difficulty),
            "elevation": ELEVATIONS[case.elevation], "location": LOCATIONS[case.site],
            "sex": str(rng.choice(("female", "male"))),
            "management": str(management), "clinic": case.clinic, "derm": case.derm, "case_id": stem,
            "notes": "synthetic" if case.clinic == case.derm else "",
            **{LABEL_COLUMNS[name]: raw[name] for name in LABELS},
        })
    return [[row[c] for c in META_COLUMNS] for row in rows]


def _write_tree(tmp: Path, plan: list[SyntheticCase], seed: int, image_size: int,
                design: PlantedDesign = DEFAULT_DESIGN) -> None:
    meta = tmp / "meta"
    meta.mkdir(parents=True)
    with (meta / "meta.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(META_COLUMNS)
        writer.writerows(_meta_rows(plan, seed))
    for split in REAL_SPLITS:
        rows = [c.index for c in plan if c.split == split]
        (meta / f"{split}_indexes.csv").write_text("indexes\n" + "".join(f"{r}\n" for r in rows))
    for case in plan:
        clinic, derm = render_pair(case, seed, image_size, design)
        files = [(case.derm, derm)]
        if case.clinic != case.derm:  # else no clinical photo: clinic path equals derm path
            files.append((case.clinic, clinic))
        for rel, image in files:
            path = tmp / "images" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_jpeg_bytes(image))


# ---------------------------------------------------------------------------------------------
# Temp folders that a killed process leaves behind are recognised and removed by the next run


OWNER_LOCK = ".owner.lock"
"""Inside a working folder: flock-ed by the writing process for as long as it lives."""
STALE_AGE = 3600.0
"""Seconds after which a working folder without an owner lock (older ssnbench) counts as stale."""
TEMP_PREFIXES = (".release_v0.partial-", ".release_v0.old-", ".synthetic-")


@contextlib.contextmanager
def working_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A fresh temp folder in `parent`, held by this process (an exclusive flock on its owner lock)
    and removed when the block ends, unless it was renamed away. After SIGKILL the folder stays but
    its lock is free, so `clean_stale_dirs` (called at the start of every generation) removes it."""
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp's 0700 would hide a shared cache from others
    fd = os.open(tmp / OWNER_LOCK, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield tmp
    finally:
        os.close(fd)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask can only set)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def release_working_dir(tmp: Path) -> None:
    """Drop the owner lock file before `tmp` is renamed into place (it is no part of the data)."""
    with contextlib.suppress(FileNotFoundError):
        (tmp / OWNER_LOCK).unlink()


def _is_stale(folder: Path, now: float) -> bool:
    lock = folder / OWNER_LOCK
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        with contextlib.suppress(FileNotFoundError):
            return now - folder.stat().st_mtime > STALE_AGE  # no lock: old ssnbench, or being renamed
        return False
    except OSError:
        return False
    try:
        if now - os.fstat(fd).st_mtime < 5:
            return False  # just created: its owner may not hold the lock yet
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # held: a live process is writing it
    finally:
        os.close(fd)
    return True


def clean_stale_dirs(parent: Path, prefixes: tuple[str, ...] = TEMP_PREFIXES) -> list[Path]:
    """Remove the working folders in `parent` whose owner is gone (killed mid-generation); returns
    what was removed. Folders of live processes (lock held) are left alone."""
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    now = time.time()
    for folder in sorted(parent.iterdir()):
        if folder.name.startswith(prefixes) and folder.is_dir() and _is_stale(folder, now):
            shutil.rmtree(folder, ignore_errors=True)
            if not folder.exists():
                removed.append(folder)
    return removed


def ceilings(plan: list[SyntheticCase], split: str | None = None) -> dict[str, float]:
    """Per label: the accuracy a model that reads the images perfectly could reach, i.e. the
    fraction of cases whose images show the class meta.csv records (label noise caps the rest)."""
    rows = [c for c in plan if split is None or c.split == split]
    out = {name: float(np.mean([c.shown[j] == c.labels[j] for c in rows])) if rows else float("nan")
           for j, name in enumerate(LABELS)}
    out["avg"] = float(np.mean([out[name] for name in LABELS]))
    return out


def planted_truth(plan: list[SyntheticCase], design: PlantedDesign) -> dict[str, object]:
    """`meta/planted.json`: the design and what it implies (read by the report's Claims section)."""
    eff = design.effective_clinic()
    # Labels the clinical photo tells more about than dermoscopy: visibility above derm's, and DIAG
    # through the clinical-only cues. Not PN: elevation is drawn from the PN class the dermoscopy
    # image shows in full, so it is a second cue to it (`informs`), not information dermoscopy lacks.
    informs = ["DIAG", "PN"] if design.clinic_extra > 0 else []
    extra_labels = [k for k in LABELS if eff[k] > design.derm[k] or (k == "DIAG" and design.clinic_extra > 0)]
    return {
        "generator_version": GENERATOR_VERSION,
        "design": design.to_dict(),
        "visibility": {"derm": dict(design.derm), "clinic": eff},
        "clinic_only_cues": {
            "strength": design.clinic_extra,
            "cues": ["absolute lesion size (clinic scale)", "elevation shading", "body-site context"],
            "informs": informs,
            "size_mm_median_by_diag": dict(zip(CLASSES["DIAG"], SIZE_MM, strict=True)),
            "elevation_given_diag": {d: dict(zip(ELEVATIONS, p, strict=True))
                                     for d, p in zip(CLASSES["DIAG"], ELEVATION_GIVEN_DIAG, strict=True)},
            "elevation_factor_given_pn": {
                c: dict(zip(ELEVATIONS, f, strict=True))
                for c, f in zip(CLASSES["PN"], ELEVATION_FACTOR_GIVEN_PN, strict=True)
            },
            "location_given_diag": {d: dict(zip(LOCATIONS, p, strict=True))
                                    for d, p in zip(CLASSES["DIAG"], LOCATION_GIVEN_DIAG, strict=True)},
        },
        # What a harness should find on this design (the Claims section shows it next to verdicts).
        "expected": {
            "clinic_adds_information": bool(extra_labels),
            "clinic_extra_labels": extra_labels,
            "derm_more_informative_than_clinic": sum(design.derm.values()) > sum(eff.values()),
        },
        "label_noise": design.label_noise,
        "ceiling": {"all": ceilings(plan), "test": ceilings(plan, "test")},
    }


def _read_marker(root: Path) -> object | None:
    """The parsed marker of a release folder, or None when it has no readable one."""
    try:
        return json.loads((root / "meta" / MARKER).read_text())
    except (OSError, ValueError):
        return None


def generator_args(root: str | Path) -> dict[str, object] | None:
    """The arguments this generator wrote `root` (a release folder) with, or None when it did not
    write it (no readable marker): how a reader tells a synthetic release from the real one."""
    args = _read_marker(Path(root))
    return args if isinstance(args, dict) and args.get("generator") == "ssnbench.data.synthetic" else None


def generate(out: str | Path, cases: int = 1011, seed: int = 0, image_size: int = 128,
             planted: Mapping[str, object] | None = None) -> Path:
    """Write a synthetic dataset to `out/release_v0/` and return that path.

    `planted`: overrides of the default `PlantedDesign` (keys derm, clinic, clinic_extra,
    label_noise); its ground truth is written to `meta/planted.json`.

    The tree is written to a temporary sibling folder and renamed into place, so a crash never
    leaves a plausible half dataset. An existing `release_v0/` written by this generator with the
    same arguments is reused as is; one with other arguments is replaced; anything else is refused.
    """
    if image_size < 16:
        raise DatasetError(f"--image-size must be at least 16 px, got {image_size}")
    out = Path(out)
    target = out / "release_v0"
    design = PlantedDesign.from_overrides(planted)
    args = {"generator": "ssnbench.data.synthetic", "version": GENERATOR_VERSION, "cases": cases,
            "seed": seed, "image_size": image_size, "planted": design.to_dict()}
    if target.exists():
        existing = _read_marker(target)
        if existing is None:
            raise DatasetError(f"{target}: already exists and was not written by `ssnbench data make`; "
                               "refusing to overwrite (choose another --out or remove it)")
        if existing == args:
            return target
    plan = plan_cases(cases, seed, design.label_noise)
    out.mkdir(parents=True, exist_ok=True)
    clean_stale_dirs(out, (".release_v0.partial-", ".release_v0.old-"))
    with working_dir(out, ".release_v0.partial-") as tmp:
        _write_tree(tmp, plan, seed, image_size, design)
        (tmp / "meta" / PLANTED).write_text(json.dumps(planted_truth(plan, design), indent=1) + "\n")
        (tmp / "meta" / MARKER).write_text(json.dumps(args, sort_keys=True) + "\n")
        release_working_dir(tmp)
        if target.exists():
            with working_dir(out, ".release_v0.old-") as trash:
                os.replace(target, trash / "release_v0")
                os.replace(tmp, target)
        else:
            os.replace(tmp, target)
    return target
