"""Reader for the Derm7pt `release_v0/` folder: label grouping, validation, torch datasets.

Everything a user can get wrong on disk is checked here and reported as a one-line `DatasetError`
that names the file, row, column and value, because the release is hand-downloaded and often
edited; a silent mismatch would corrupt every benchmark number built on it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ssnbench.data.labels import CLASSES, LABELS
from ssnbench.errors import DatasetError
from ssnbench.validation import utf8_error_at

SPLITS: tuple[str, ...] = ("train", "valid", "test")

# meta.csv column holding each label, in LABELS order.
LABEL_COLUMNS: dict[str, str] = {
    "DIAG": "diagnosis",
    "PN": "pigment_network",
    "BWV": "blue_whitish_veil",
    "VS": "vascular_structures",
    "PIG": "pigmentation",
    "STR": "streaks",
    "DaG": "dots_and_globules",
    "RS": "regression_structures",
}
META_COLUMNS: tuple[str, ...] = (
    "case_num", "diagnosis", "seven_point_score", "pigment_network", "streaks", "pigmentation",
    "regression_structures", "dots_and_globules", "blue_whitish_veil", "vascular_structures",
    "level_of_diagnostic_difficulty", "elevation", "location", "sex", "management", "clinic", "derm",
    "case_id", "notes",
)
REQUIRED_COLUMNS: tuple[str, ...] = ("case_num", *LABEL_COLUMNS.values(), "clinic", "derm")

# Raw meta.csv strings -> grouped class name (Kawahara et al. 2018, "group infrequent").
RAW_VALUES: dict[str, dict[str, str]] = {
    "DIAG": {
        "basal cell carcinoma": "BCC",
        **{f"{kind} nevus": "NEV" for kind in
           ("blue", "clark", "combined", "congenital", "dermal", "recurrent", "reed or spitz")},
        "melanoma": "MEL",
        "melanoma (in situ)": "MEL",
        "melanoma (less than 0.76 mm)": "MEL",
        "melanoma (0.76 to 1.5 mm)": "MEL",
        "melanoma (more than 1.5 mm)": "MEL",
        "melanoma metastasis": "MEL",
        **{name: "MISC" for name in
           ("dermatofibroma", "lentigo", "melanosis", "miscellaneous", "vascular lesion")},
        "seborrheic keratosis": "SK",
    },
    "PN": {"absent": "ABS", "typical": "TYP", "atypical": "ATP"},
    "BWV": {"absent": "ABS", "present": "PRS"},
    "VS": {
        "absent": "ABS",
        **{name: "REG" for name in ("arborizing", "comma", "hairpin", "within regression", "wreath")},
        "dotted": "IR",
        "linear irregular": "IR",
    },
    "PIG": {
        "absent": "ABS",
        "diffuse regular": "REG",
        "localized regular": "REG",
        "diffuse irregular": "IR",
        "localized irregular": "IR",
    },
    "STR": {"absent": "ABS", "regular": "REG", "irregular": "IR"},
    "DaG": {"absent": "ABS", "regular": "REG", "irregular": "IR"},
    "RS": {"absent": "ABS", "blue areas": "PRS", "white areas": "PRS", "combinations": "PRS"},
}


def group_label(label: str, raw: str) -> int:
    """Grouped class index of a raw meta.csv string (KeyError if unknown)."""
    return CLASSES[label].index(RAW_VALUES[label][raw.strip().lower()])


@dataclass(frozen=True)
class Case:
    """One meta.csv row: where its two images are and its 8 grouped labels (ints, LABELS order)."""

    row: int
    case_num: str
    case_id: str
    clinic: Path
    derm: Path
    labels: tuple[int, ...]

    @property
    def no_clinic(self) -> bool:
        return self.clinic == self.derm


@dataclass
class Release:
    """A validated release: rows of meta.csv plus the split row indices into them."""

    root: Path
    cases: list[Case]
    splits: dict[str, list[int]]
    no_clinic_rows: list[int] = field(default_factory=list)
    dropped_rows: list[int] = field(default_factory=list)

    def rel(self, path: Path) -> str:
        """Path relative to images/, as written in meta.csv (for messages and summaries)."""
        try:
            return path.relative_to(self.root / "images").as_posix()
        except ValueError:
            return str(path)

    def class_counts(self, rows: list[int] | None = None) -> dict[str, dict[str, int]]:
        """Grouped class counts per label over `rows` (default: all rows)."""
        rows = range(len(self.cases)) if rows is None else rows
        counts = {name: dict.fromkeys(CLASSES[name], 0) for name in LABELS}
        for r in rows:
            for name, value in zip(LABELS, self.cases[r].labels, strict=True):
                counts[name][CLASSES[name][value]] += 1
        return counts


def find_root(root: str | Path) -> Path:
    """`root` itself if it looks like a release, else `root/release_v0`."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: folder not found (expected a release_v0/ folder or one holding it)")
    if (root / "meta").is_dir() or (root / "images").is_dir():
        return root
    if (root / "release_v0").is_dir():
        return root / "release_v0"
    raise DatasetError(f"{root}: no meta/ or images/ folder and no release_v0/ inside; "
                       "expected the Derm7pt release_v0 layout")


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a CSV file. One line names the file (and the line) when it cannot be
    read, is not UTF-8, or a row has more or fewer columns than the header (csv.DictReader would
    silently drop the extra values or fill the missing ones)."""
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DatasetError(f"{path}: cannot read CSV ({err.strerror or err})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line, _, byte = utf8_error_at(data, err)
        message = f"{path} line {line}: not UTF-8 text (byte {byte}); save the file as UTF-8"
        raise DatasetError(message) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader, [])]
        rows = []
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if len(row) != len(header):
                raise DatasetError(f"{path} line {reader.line_num}: {len(row)} columns, the header has "
                                   f"{len(header)}; expected one value per column")
            rows.append(dict(zip(header, row, strict=True)))
    except csv.Error as err:
        raise DatasetError(f"{path} line {reader.line_num}: cannot read CSV ({err})") from None
    return header, rows


def _read_meta(root: Path) -> list[Case]:
    path = root / "meta" / "meta.csv"
    header, rows = _read_csv(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise DatasetError(f"{path}: missing required column(s) {', '.join(missing)}; "
                           f"expected columns {', '.join(META_COLUMNS)}")
    if not rows:
        raise DatasetError(f"{path}: no data rows (expected one row per case)")
    images = root / "images"
    cases = []
    for r, row in enumerate(rows):
        labels = []
        for name in LABELS:
            column = LABEL_COLUMNS[name]
            value = row[column]
            try:
                labels.append(group_label(name, value))
            except KeyError:
                allowed = ", ".join(repr(v) for v in RAW_VALUES[name])
                raise DatasetError(
                    f"{path} row {r} (line {r + 2}), column {column!r}: unknown value {value!r}; "
                    f"expected one of {allowed}") from None
        for column in ("clinic", "derm"):
            if not row[column].strip():
                raise DatasetError(f"{path} row {r} (line {r + 2}), column {column!r}: empty image path")
        case_num = row["case_num"].strip()
        cases.append(Case(
            row=r,
            case_num=case_num,
            case_id=(row.get("case_id") or "").strip() or case_num,
            clinic=images / row["clinic"].strip(),
            derm=images / row["derm"].strip(),
            labels=tuple(labels),
        ))
    return cases


def _read_index(root: Path, split: str, n_rows: int) -> list[int]:
    path = root / "meta" / f"{split}_indexes.csv"
    header, rows = _read_csv(path)
    if "indexes" not in header:
        raise DatasetError(f"{path}: missing column 'indexes' (found {', '.join(header) or 'no header'})")
    out, seen = [], {}
    for r, row in enumerate(rows):
        text = row["indexes"].strip()
        try:
            value = int(text)
        except ValueError:
            raise DatasetError(f"{path} row {r} (line {r + 2}), column 'indexes': {text!r} is not an integer "
                               f"row number into meta.csv") from None
        if not 0 <= value < n_rows:
            raise DatasetError(f"{path} row {r} (line {r + 2}), column 'indexes': index {value} out of "
                               f"range; expected 0..{n_rows - 1} (meta.csv has {n_rows} rows)")
        if value in seen:
            raise DatasetError(f"{path} row {r} (line {r + 2}), column 'indexes': index {value} duplicated "
                               f"(also at row {seen[value]})")
        seen[value] = r
        out.append(value)
    if not out:
        raise DatasetError(f"{path}: empty split '{split}' (expected at least one row index)")
    return out


def check_image_files(release: Release) -> list[str]:
    """Paths (relative to images/) that are missing; cheap stat only, no decoding."""
    seen: set[Path] = set()
    missing = []
    for case in release.cases:
        for path in (case.clinic, case.derm):
            if path not in seen:
                seen.add(path)
                if not path.is_file():
                    missing.append(release.rel(path))
    return missing


def load_release(root: str | Path, drop_no_clinic: bool = False, *, check_images: bool = True) -> Release:
    """Read and validate a release (layout, columns, label strings, split indices, image files).

    Rows whose clinic path equals their derm path (no clinical photo) are kept and listed in
    `no_clinic_rows`; with `drop_no_clinic` they are removed from the splits (not from `cases`, so
    row numbers stay those of meta.csv).
    """
    root = find_root(root)
    for sub in ("meta", "images"):
        if not (root / sub).is_dir():
            raise DatasetError(f"{root / sub}: folder not found (expected release_v0/{sub}/)")
    cases = _read_meta(root)
    splits = {split: _read_index(root, split, len(cases)) for split in SPLITS}
    owner: dict[int, str] = {}
    for split, rows in splits.items():
        for r in rows:
            if r in owner:
                raise DatasetError(f"{root / 'meta'}: row index {r} is in both {owner[r]}_indexes.csv and "
                                   f"{split}_indexes.csv; expected disjoint splits")
            owner[r] = split
    no_clinic = [c.row for c in cases if c.no_clinic]
    release = Release(root=root, cases=cases, splits=splits, no_clinic_rows=no_clinic)
    if drop_no_clinic and no_clinic:
        drop = set(no_clinic)
        release.dropped_rows = [r for rows in splits.values() for r in rows if r in drop]
        release.splits = {s: [r for r in rows if r not in drop] for s, rows in splits.items()}
        for split, rows in release.splits.items():
            if not rows:
                index_file = root / "meta" / f"{split}_indexes.csv"
                raise DatasetError(f"{index_file}: split '{split}' is empty after dropping rows without a "
                                   "clinical photo")
    if check_images:
        missing = check_image_files(release)
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise DatasetError(f"{root / 'images' / missing[0]}: image not found{more}; "
                               "expected every clinic/derm path of meta.csv under images/")
    return release


class Derm7ptDataset(Dataset):
    """One split: cached uint8 image pairs (or paths) plus labels; augmentation per item only.

    Picklable (plain tensors and a transform object), so DataLoader workers can use it.
    """

    def __init__(self, split: str, cases: list[Case], *, image_size: int, border_crop: int,
                 normalize: bool, augment, cache: bool, root: Path | None = None,
                 interpolation: str = "bilinear", mean: tuple[float, ...] | None = None,
                 std: tuple[float, ...] | None = None) -> None:
        from ssnbench.data.transforms import IMAGENET_MEAN, IMAGENET_STD, PairTransform, load_pair_images

        self.split = split
        self.case_ids = [c.case_id for c in cases]
        self.paths = [(c.clinic, c.derm) for c in cases]
        self.image_size = image_size
        self.border_crop = border_crop
        self.interpolation = interpolation
        self.root = root
        self._labels = torch.tensor([c.labels for c in cases], dtype=torch.long).reshape(-1, len(LABELS))
        if isinstance(augment, PairTransform):
            self.transform = augment
        else:
            self.transform = PairTransform(augment=bool(augment), normalize=normalize,
                                           mean=tuple(mean or IMAGENET_MEAN), std=tuple(std or IMAGENET_STD))
        self.images: torch.Tensor | None = None
        if cache:
            self.images = load_pair_images(self.paths, image_size, border_crop, interpolation=interpolation)

    @property
    def labels(self) -> torch.Tensor:
        return self._labels

    def __len__(self) -> int:
        return len(self.case_ids)

    def pair(self, index: int) -> torch.Tensor:
        """The uint8 pair [2, 3, S, S] (clinic, derm) before augmentation."""
        if self.images is not None:
            return self.images[index]
        from ssnbench.data.transforms import load_pair_images

        return load_pair_images([self.paths[index]], self.image_size, self.border_crop, workers=1,
                                interpolation=self.interpolation)[0]

    def __getitem__(self, index: int) -> dict:
        clinic, derm = self.transform(self.pair(index))
        return {"clinic": clinic, "derm": derm, "labels": self._labels[index],
                "case_id": self.case_ids[index]}


def make_datasets(root_or_release: str | Path | Release, image_size: int = 224, border_crop: int = 25,
                  normalize: bool = True, augment: bool | object = True, drop_no_clinic: bool = False,
                  cache: bool = True, interpolation: str = "bilinear",
                  mean: tuple[float, ...] | None = None,
                  std: tuple[float, ...] | None = None) -> dict[str, Derm7ptDataset]:
    """Train/valid/test datasets of a release; only `train` is augmented.

    `augment` may be a bool or a `PairTransform` (then used for train as is). `interpolation`
    (resize), `mean` and `std` (normalisation) come from the backbone's timm data config.
    """
    if image_size <= 0 or border_crop < 0:
        raise DatasetError(f"image_size must be > 0 and border_crop >= 0, got {image_size} and {border_crop}")
    release = root_or_release
    if not isinstance(release, Release):
        release = load_release(root_or_release, drop_no_clinic=drop_no_clinic)
    elif drop_no_clinic and release.no_clinic_rows and not release.dropped_rows:
        release = load_release(release.root, drop_no_clinic=True)
    out = {}
    for split in SPLITS:
        cases = [release.cases[r] for r in release.splits[split]]
        out[split] = Derm7ptDataset(split, cases, image_size=image_size, border_crop=border_crop,
                                    normalize=normalize, augment=augment if split == "train" else False,
                                    cache=cache, root=release.root,
                                    interpolation=interpolation, mean=mean, std=std)
    return out


def summarize(release: Release) -> Mapping[str, object]:
    """Plain-dict summary for `data check` (JSON-ready)."""
    return {
        "root": str(release.root),
        "cases": len(release.cases),
        "splits": {s: len(rows) for s, rows in release.splits.items()},
        "class_counts": release.class_counts(),
        "class_counts_by_split": {s: release.class_counts(rows) for s, rows in release.splits.items()},
        "no_clinic_rows": list(release.no_clinic_rows),
    }
