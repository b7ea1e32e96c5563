"""Pinned: the Derm7pt reader against a hand-made release (not the synthetic generator).

Every raw meta.csv string and the class it belongs to is written out below by hand from the
dataset's documentation (docs/derm7pt.md: Kawahara et al. 2018, "group infrequent"), so a wrong
entry in the reader's table fails here instead of round-tripping through a generator that draws
its strings from that same table.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from PIL import Image

from ssnbench.data.derm7pt import load_release, make_datasets
from ssnbench.errors import DatasetError

# Class order as the literature uses it (docs/derm7pt.md, "The eight labels and the standard grouping").
ORDER = {
    "DIAG": ["BCC", "NEV", "MEL", "MISC", "SK"],
    "PN": ["ABS", "TYP", "ATP"],
    "BWV": ["ABS", "PRS"],
    "VS": ["ABS", "REG", "IR"],
    "PIG": ["ABS", "REG", "IR"],
    "STR": ["ABS", "REG", "IR"],
    "DaG": ["ABS", "REG", "IR"],
    "RS": ["ABS", "PRS"],
}
LABEL_ORDER = ["DIAG", "PN", "BWV", "VS", "PIG", "STR", "DaG", "RS"]
COLUMN = {
    "DIAG": "diagnosis",
    "PN": "pigment_network",
    "BWV": "blue_whitish_veil",
    "VS": "vascular_structures",
    "PIG": "pigmentation",
    "STR": "streaks",
    "DaG": "dots_and_globules",
    "RS": "regression_structures",
}
HEADER = [
    "case_num",
    "diagnosis",
    "seven_point_score",
    "pigment_network",
    "streaks",
    "pigmentation",
    "regression_structures",
    "dots_and_globules",
    "blue_whitish_veil",
    "vascular_structures",
    "level_of_diagnostic_difficulty",
    "elevation",
    "location",
    "sex",
    "management",
    "clinic",
    "derm",
    "case_id",
    "notes",
]

# Every raw string of the release and its grouped class, one line each, copied from the table.
RAW = {
    "DIAG": [
        ("basal cell carcinoma", "BCC"),
        ("blue nevus", "NEV"),
        ("clark nevus", "NEV"),
        ("combined nevus", "NEV"),
        ("congenital nevus", "NEV"),
        ("dermal nevus", "NEV"),
        ("recurrent nevus", "NEV"),
        ("reed or spitz nevus", "NEV"),
        ("dermatofibroma", "MISC"),
        ("lentigo", "MISC"),
        ("melanosis", "MISC"),
        ("miscellaneous", "MISC"),
        ("vascular lesion", "MISC"),
        ("melanoma", "MEL"),
        ("melanoma (in situ)", "MEL"),
        ("melanoma (less than 0.76 mm)", "MEL"),
        ("melanoma (0.76 to 1.5 mm)", "MEL"),
        ("melanoma (more than 1.5 mm)", "MEL"),
        ("melanoma metastasis", "MEL"),
        ("seborrheic keratosis", "SK"),
    ],
    "PN": [("absent", "ABS"), ("typical", "TYP"), ("atypical", "ATP")],
    "BWV": [("absent", "ABS"), ("present", "PRS")],
    "VS": [
        ("absent", "ABS"),
        ("arborizing", "REG"),
        ("comma", "REG"),
        ("hairpin", "REG"),
        ("within regression", "REG"),
        ("wreath", "REG"),
        ("dotted", "IR"),
        ("linear irregular", "IR"),
    ],
    "PIG": [
        ("absent", "ABS"),
        ("diffuse regular", "REG"),
        ("localized regular", "REG"),
        ("diffuse irregular", "IR"),
        ("localized irregular", "IR"),
    ],
    "STR": [("absent", "ABS"), ("regular", "REG"), ("irregular", "IR")],
    "DaG": [("absent", "ABS"), ("regular", "REG"), ("irregular", "IR")],
    "RS": [("absent", "ABS"), ("blue areas", "PRS"), ("white areas", "PRS"), ("combinations", "PRS")],
}
N_ROWS = len(RAW["DIAG"])  # 20: every label's strings cycle through these rows
NO_CLINIC_ROW = 3


def _raw_row(r: int) -> dict[str, tuple[str, str]]:
    """Label -> (raw string, expected class) of meta.csv row r."""
    return {label: RAW[label][r % len(RAW[label])] for label in LABEL_ORDER}


def _write_release(root: Path, splits: dict[str, list[int]] | None = None) -> Path:
    """A tiny release_v0/: 20 hand-written rows, 16x16 images, hand-chosen splits."""
    (root / "meta").mkdir(parents=True)
    images = root / "images" / "NEL"
    images.mkdir(parents=True)
    rows = []
    for r in range(N_ROWS):
        clinic, derm = f"NEL/Nel{r:03d}.JPG", f"NEL/Nel{r:03d}d.jpg"  # .jpg and .JPG mix, as released
        if r == NO_CLINIC_ROW:
            clinic = derm  # a case without a clinical photo
        row = dict.fromkeys(HEADER, "")
        row.update(
            case_num=str(r + 1), clinic=clinic, derm=derm, case_id=f"case{r:03d}", seven_point_score="0"
        )
        for label, (raw, _) in _raw_row(r).items():
            row[COLUMN[label]] = raw
        rows.append(row)
        for name in {clinic, derm}:
            Image.new("RGB", (16, 16), (10 * r, 100, 200)).save(root / "images" / name, format="JPEG")
    with (root / "meta" / "meta.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=HEADER)
        writer.writeheader()
        writer.writerows(rows)
    splits = splits or {"train": list(range(0, 12)), "valid": [12, 13, 14, 15], "test": [19, 16, 17, 18]}
    for split, index in splits.items():
        text = "indexes\n" + "".join(f"{i}\n" for i in index)
        (root / "meta" / f"{split}_indexes.csv").write_text(text)
    return root


@pytest.fixture(scope="module")
def release_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_release(tmp_path_factory.mktemp("hand") / "release_v0")


def _expected(r: int) -> tuple[int, ...]:
    return tuple(ORDER[label].index(cls) for label, (_, cls) in _raw_row(r).items())


def test_every_raw_string_maps_to_its_documented_class(release_root: Path) -> None:
    release = load_release(release_root)
    assert len(release.cases) == N_ROWS
    for r, case in enumerate(release.cases):
        assert case.labels == _expected(r), f"row {r}: {_raw_row(r)}"
    # each label's strings all appear (a forgotten string would raise in the reader)
    seen = {label: {_raw_row(r)[label][0] for r in range(N_ROWS)} for label in LABEL_ORDER}
    assert all(seen[label] == {raw for raw, _ in RAW[label]} for label in LABEL_ORDER)


def test_class_counts_and_dataset_labels_follow_the_table(release_root: Path) -> None:
    release = load_release(release_root)
    counts = release.class_counts()
    assert counts["DIAG"] == {"BCC": 1, "NEV": 7, "MEL": 6, "MISC": 5, "SK": 1}
    assert counts["VS"] == {"ABS": 3, "REG": 13, "IR": 4}  # rows cycle the 8 VS strings 2.5 times
    assert counts["RS"] == {"ABS": 5, "PRS": 15}
    assert counts["PIG"] == {"ABS": 4, "REG": 8, "IR": 8}
    assert release.class_counts([13, 0, 14])["DIAG"] == {"BCC": 1, "NEV": 0, "MEL": 2, "MISC": 0, "SK": 0}
    assert release.class_counts([])["RS"] == {"ABS": 0, "PRS": 0}
    data = make_datasets(release, image_size=4, border_crop=1, augment=False)
    test = data["test"]
    # split order is the index file's order (19 first), not meta.csv's
    assert test.case_ids == ["case019", "case016", "case017", "case018"]
    assert test.labels.tolist() == [list(_expected(r)) for r in (19, 16, 17, 18)]
    item = test[0]
    assert item["labels"].tolist() == list(_expected(19)) and item["case_id"] == "case019"
    assert tuple(item["clinic"].shape) == (3, 4, 4)


def test_no_clinic_row_is_reported_and_can_be_dropped(release_root: Path) -> None:
    release = load_release(release_root)
    assert release.no_clinic_rows == [NO_CLINIC_ROW]
    dropped = load_release(release_root, drop_no_clinic=True)
    assert dropped.dropped_rows == [NO_CLINIC_ROW]
    assert NO_CLINIC_ROW not in dropped.splits["train"] and len(dropped.splits["train"]) == 11
    assert len(dropped.cases) == N_ROWS  # row numbers stay those of meta.csv


def test_case_and_spacing_of_raw_strings_do_not_matter(tmp_path: Path) -> None:
    root = _write_release(tmp_path / "release_v0")
    text = (root / "meta" / "meta.csv").read_text()
    (root / "meta" / "meta.csv").write_text(text.replace("melanoma (in situ)", " Melanoma (In Situ) "))
    assert load_release(root).cases[14].labels[0] == ORDER["DIAG"].index("MEL")


@pytest.mark.parametrize("index", [0, N_ROWS - 1])
def test_split_index_range_accepts_both_ends(tmp_path: Path, index: int) -> None:
    other = 1 if index == 0 else 0
    rest = [r for r in range(N_ROWS) if r not in (index, other, 5)]
    root = _write_release(tmp_path / "release_v0", {"train": rest, "valid": [index, other], "test": [5]})
    assert load_release(root).splits["valid"] == [index, other]


@pytest.mark.parametrize("index", [N_ROWS, -1])
def test_split_index_range_rejects_one_past_either_end(tmp_path: Path, index: int) -> None:
    root = _write_release(tmp_path / "release_v0", {"train": [0, 1], "valid": [2], "test": [index]})
    with pytest.raises(DatasetError, match=str(index)):
        load_release(root)


def test_unknown_raw_string_is_an_error(tmp_path: Path) -> None:
    root = _write_release(tmp_path / "release_v0")
    text = (root / "meta" / "meta.csv").read_text()
    (root / "meta" / "meta.csv").write_text(text.replace("linear irregular", "linear", 1))
    with pytest.raises(DatasetError, match="'linear'"):
        load_release(root)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("index\n3\n", "valid_indexes.csv: missing column 'indexes' (found index)"),
        ("", "valid_indexes.csv: missing column 'indexes' (found no header)"),
        ("indexes\n12\nx\n", "valid_indexes.csv row 1 (line 3), column 'indexes': 'x' is not an integer"),
        (
            "indexes\n12\n20\n",
            "row 1 (line 3), column 'indexes': index 20 out of range; expected 0..19 (meta.csv has 20 rows)",
        ),
        ("indexes\n12\n13\n12\n", "row 2 (line 4), column 'indexes': index 12 duplicated (also at row 0)"),
        ("indexes\n", "valid_indexes.csv: empty split 'valid' (expected at least one row index)"),
    ],
)
def test_split_index_file_errors_name_file_row_and_value(tmp_path: Path, text: str, message: str) -> None:
    root = _write_release(tmp_path / "release_v0")
    (root / "meta" / "valid_indexes.csv").write_text(text)
    with pytest.raises(DatasetError) as err:
        load_release(root)
    assert message in str(err.value)
