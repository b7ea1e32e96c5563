"""Derm7pt reader: round trip of generated data, and every bad-input case (library and CLI)."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch

from ssnbench.cli import main
from ssnbench.data.derm7pt import Release, load_release, make_datasets
from ssnbench.data.labels import CLASSES, LABELS, MEL_INDEX, NUM_CLASSES
from ssnbench.data.synthetic import generate, plan_cases
from ssnbench.errors import DatasetError, UserError

CASES, SEED, SIZE = 40, 3, 40
DERM0 = plan_cases(CASES, SEED)[0].derm  # e.g. Aal/Aal002.jpg (the extension is drawn)


@pytest.fixture(scope="module")
def release_root(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("syn"), cases=CASES, seed=SEED, image_size=SIZE)


@pytest.fixture
def fresh(release_root, tmp_path) -> Path:
    """A private copy of the release that a test may break."""
    return Path(shutil.copytree(release_root, tmp_path / "release_v0"))


def test_constants_match_contract():
    assert LABELS == ("DIAG", "PN", "BWV", "VS", "PIG", "STR", "DaG", "RS")
    assert NUM_CLASSES == (5, 3, 2, 3, 3, 3, 3, 2)
    assert CLASSES["DIAG"][MEL_INDEX] == "MEL"
    assert CLASSES["PN"] == ("ABS", "TYP", "ATP") and CLASSES["RS"] == ("ABS", "PRS")


def test_round_trip_matches_plan(release_root):
    plan = plan_cases(CASES, SEED)
    release = load_release(release_root.parent)  # the folder holding release_v0/ works too
    assert isinstance(release, Release) and release.root == release_root
    assert [c.labels for c in release.cases] == [p.labels for p in plan]
    assert [release.rel(c.derm) for c in release.cases] == [p.derm for p in plan]
    for split, rows in release.splits.items():
        assert rows == [p.index for p in plan if p.split == split]
    assert release.no_clinic_rows == [p.index for p in plan if p.clinic == p.derm]
    assert release.no_clinic_rows, "the generator should include a clinic == derm row"


def test_grouped_counts_equal_generated(release_root):
    plan = plan_cases(CASES, SEED)
    counts = load_release(release_root).class_counts()
    for j, name in enumerate(LABELS):
        drawn = Counter(CLASSES[name][p.labels[j]] for p in plan)
        assert counts[name] == {cls: drawn.get(cls, 0) for cls in CLASSES[name]}


def test_datasets_shapes_labels_and_eval_determinism(release_root):
    data = make_datasets(release_root, image_size=32, border_crop=2)
    release = load_release(release_root)
    assert set(data) == {"train", "valid", "test"}
    for split, ds in data.items():
        assert ds.split == split and len(ds) == len(release.splits[split])
        expected = torch.tensor([release.cases[r].labels for r in release.splits[split]])
        assert torch.equal(ds.labels, expected)
    item = data["valid"][0]
    assert item["clinic"].shape == item["derm"].shape == (3, 32, 32)
    assert item["clinic"].dtype == torch.float32 and item["labels"].dtype == torch.long
    assert item["labels"].shape == (8,) and isinstance(item["case_id"], str)
    again = data["valid"][0]
    assert torch.equal(item["derm"], again["derm"])  # no augmentation outside train
    uncached = make_datasets(release_root, image_size=32, border_crop=2, cache=False)["valid"][0]
    assert torch.equal(item["derm"], uncached["derm"])
    raw = make_datasets(release_root, image_size=32, border_crop=2, normalize=False)["valid"][0]
    assert float(raw["derm"].min()) >= 0.0 and float(raw["derm"].max()) <= 1.0


def test_drop_no_clinic(release_root):
    release = load_release(release_root, drop_no_clinic=True)
    kept = {r for rows in release.splits.values() for r in rows}
    assert release.no_clinic_rows and not kept & set(release.no_clinic_rows)
    assert len(release.cases) == CASES  # rows keep their meta.csv numbers


# --- bad input: each mutation -> expected text in the DatasetError / the CLI's one line ---

def _rewrite(path: Path, edit) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join(edit(lines)) + "\n")


def _set_cell(root: Path, row: int, column: str, value: str) -> None:
    def edit(lines):
        header = lines[0].split(",")
        cells = lines[row + 1].split(",")
        cells[header.index(column)] = value
        lines[row + 1] = ",".join(cells)
        return lines
    _rewrite(root / "meta" / "meta.csv", edit)


def _first_index(root: Path, split: str) -> int:
    return int((root / "meta" / f"{split}_indexes.csv").read_text().split()[1])


BAD_INPUTS = {
    "no_folder": (lambda r: shutil.rmtree(r), "folder not found"),
    "no_meta_csv": (lambda r: (r / "meta" / "meta.csv").unlink(), "meta.csv: file not found"),
    "no_index_file": (lambda r: (r / "meta" / "valid_indexes.csv").unlink(),
                      "valid_indexes.csv: file not found"),
    "no_images_folder": (lambda r: shutil.rmtree(r / "images"), "images: folder not found"),
    "missing_column": (
        lambda r: _rewrite(r / "meta" / "meta.csv",
                           lambda ls: [ln.replace("streaks", "streak", 1) if i == 0 else ln
                                       for i, ln in enumerate(ls)]),
        "missing required column(s) streaks"),
    "unknown_label": (lambda r: _set_cell(r, 3, "diagnosis", "melanomma"),
                      "row 3 (line 5), column 'diagnosis': unknown value 'melanomma'; expected one of "
                      "'basal cell carcinoma'"),
    "unknown_criterion": (lambda r: _set_cell(r, 0, "vascular_structures", "spiral"),
                          "column 'vascular_structures': unknown value 'spiral'; expected one of 'absent', "
                          "'arborizing'"),
    "index_out_of_range": (lambda r: _rewrite(r / "meta" / "test_indexes.csv", lambda ls: [*ls, "999"]),
                           f"index 999 out of range; expected 0..{CASES - 1}"),
    "index_not_integer": (lambda r: _rewrite(r / "meta" / "test_indexes.csv", lambda ls: [*ls, "x1"]),
                          "'x1' is not an integer"),
    "index_duplicated": (lambda r: _rewrite(r / "meta" / "train_indexes.csv", lambda ls: [*ls, ls[1]]),
                         "duplicated (also at row 0)"),
    "index_overlap": (lambda r: _rewrite(r / "meta" / "test_indexes.csv",
                                         lambda ls: [*ls, str(_first_index(r, "train"))]),
                      "in both train_indexes.csv and test_indexes.csv"),
    "index_column": (lambda r: _rewrite(r / "meta" / "train_indexes.csv", lambda ls: ["index", *ls[1:]]),
                     "train_indexes.csv: missing column 'indexes'"),
    "empty_split": (lambda r: (r / "meta" / "valid_indexes.csv").write_text("indexes\n"),
                    "empty split 'valid'"),
    "image_missing": (lambda r: (r / "images" / DERM0).unlink(), f"{DERM0}: image not found"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_library_and_cli(case, fresh, capsys):
    mutate, expected = BAD_INPUTS[case]
    mutate(fresh)
    with pytest.raises(DatasetError) as err:
        load_release(fresh)
    assert isinstance(err.value, UserError)
    assert expected in str(err.value) and "\n" not in str(err.value)
    capsys.readouterr()
    assert main(["data", "check", str(fresh)]) == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and stderr.startswith("ssnbench: error: ")
    assert expected in stderr and "Traceback" not in stderr


def test_unreadable_image(fresh, capsys):
    bad = fresh / "images" / DERM0
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(DatasetError, match=f"{DERM0}: image unreadable"):
        make_datasets(fresh, image_size=16, border_crop=1)
    capsys.readouterr()
    assert main(["data", "check", str(fresh), "--json"]) == 2
    captured = capsys.readouterr()
    assert f'"unreadable_images": [\n    "{DERM0}"' in captured.out
    assert captured.err.count("\n") == 1 and f"{DERM0}: image unreadable" in captured.err
    # a truncated file is caught too
    bad.write_bytes(_jpeg(fresh)[:300])
    assert main(["data", "check", str(fresh)]) == 2
    assert f"{DERM0}: image unreadable" in capsys.readouterr().err


def _jpeg(root: Path) -> bytes:
    return (root / "images" / plan_cases(CASES, SEED)[1].derm).read_bytes()


def test_check_ok_prints_summary(release_root, capsys):
    assert main(["data", "check", str(release_root)]) == 0
    out = capsys.readouterr().out
    assert "MEL" in out and "clinic image equals the derm image" in out
