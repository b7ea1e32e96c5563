"""Synthetic generator: determinism, layout, label frequencies and vocabulary, CLI."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ssnbench.cli import main
from ssnbench.data.derm7pt import META_COLUMNS, RAW_VALUES, load_release
from ssnbench.data.labels import CLASSES, LABELS
from ssnbench.data.synthetic import DIAG_COUNTS, generate, plan_cases, render_pair
from ssnbench.errors import DatasetError


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_byte_identical_for_equal_arguments(tmp_path):
    a = generate(tmp_path / "a", cases=12, seed=7, image_size=32)
    b = generate(tmp_path / "b", cases=12, seed=7, image_size=32)
    files_a = _files(a)
    assert files_a == _files(b)
    assert any(name.endswith(".JPG") for name in files_a) and any(name.endswith(".jpg") for name in files_a)
    c = generate(tmp_path / "c", cases=12, seed=8, image_size=32)
    assert _files(c) != files_a
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["release_v0"]  # no partial folders left


def test_layout_and_columns(tmp_path):
    root = generate(tmp_path, cases=10, seed=0, image_size=24)
    with (root / "meta" / "meta.csv").open() as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == META_COLUMNS and len(META_COLUMNS) == 19
    assert len(rows) == 11 and all(len(r) == 19 for r in rows)
    for split in ("train", "valid", "test"):
        assert (root / "meta" / f"{split}_indexes.csv").read_text().startswith("indexes\n")


def test_reuse_and_refuse(tmp_path):
    root = generate(tmp_path, cases=6, seed=0, image_size=24)
    stamp = (root / "meta" / "meta.csv").stat().st_mtime_ns
    assert generate(tmp_path, cases=6, seed=0, image_size=24) == root
    assert (root / "meta" / "meta.csv").stat().st_mtime_ns == stamp  # same arguments: reused
    generate(tmp_path, cases=7, seed=0, image_size=24)
    assert len(load_release(root).cases) == 7  # other arguments: replaced
    foreign = tmp_path / "other" / "release_v0"
    foreign.mkdir(parents=True)
    with pytest.raises(DatasetError, match="refusing to overwrite"):
        generate(tmp_path / "other", cases=6)


def test_full_size_plan_matches_real_frequencies():
    plan = plan_cases(1011, 0)
    diag = Counter(p.labels[0] for p in plan)
    assert tuple(diag[i] for i in range(5)) == DIAG_COUNTS
    splits = Counter(p.split for p in plan)
    assert (splits["train"], splits["valid"], splits["test"]) == (413, 203, 395)
    assert 5 <= sum(p.clinic == p.derm for p in plan) <= 15
    for j, name in enumerate(LABELS):  # every raw string of the real vocabulary is used
        assert {p.raw[j] for p in plan} == set(RAW_VALUES[name]), name
    noisy = np.mean([p.shown != p.labels for p in plan])
    assert 0.2 < noisy < 0.7  # some label noise, on at most a few labels per case


def test_dermoscopy_carries_more_detail_than_clinic():
    plan = plan_cases(30, 0)
    ratio = []
    for case in plan[:10]:
        clinic, derm = render_pair(case, 0, 64)
        def detail(img):
            g = img.astype(float).mean(axis=2)
            return np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean()
        ratio.append(detail(derm) / detail(clinic))
    assert np.median(ratio) > 2


def test_cli_make(tmp_path, capsys):
    assert main(["data", "make", "--out", str(tmp_path), "--cases", "9", "--image-size", "24"]) == 0
    assert "9 cases" in capsys.readouterr().out
    assert len(load_release(tmp_path).cases) == 9
    assert main(["data", "make", "--out", str(tmp_path / "x"), "--cases", "2"]) == 2
    assert "at least 3 cases" in capsys.readouterr().err


def test_grouped_labels_of_plan_use_class_names():
    plan = plan_cases(20, 1)
    for p in plan:
        for j, name in enumerate(LABELS):
            assert RAW_VALUES[name][p.raw[j]] == CLASSES[name][p.labels[j]]


def _probe_auc(design_overrides: dict, label: str, n_each: int = 30, size: int = 24) -> dict[str, float]:
    """Cross-validated AUC of a logistic regression on downsampled pixels, per modality, for a
    binary label. Nevi only, so that no other label (all drawn given DIAG) predicts it; the
    downsampled pixels are sorted per channel so that where the lesion sits does not matter."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    from ssnbench.data.synthetic import PlantedDesign

    design = PlantedDesign.from_overrides(design_overrides)
    j = LABELS.index(label)
    nevi = [c for c in plan_cases(1011, 0) if c.shown[0] == CLASSES["DIAG"].index("NEV")]
    cases = [c for c in nevi if c.shown[j] == 1][:n_each] + [c for c in nevi if c.shown[j] == 0][:n_each]
    feats: dict[str, list[np.ndarray]] = {"clinic": [], "derm": []}
    for case in cases:
        clinic, derm = render_pair(case, 0, size, design)
        for name, image in (("clinic", clinic), ("derm", derm)):
            px = image.reshape(size // 2, 2, size // 2, 2, 3).mean(axis=(1, 3)).reshape(-1, 3) / 255.0
            blue = px[:, 2] - px[:, 0]
            feats[name].append(np.concatenate([np.sort(px, axis=0)[::6].ravel(), np.sort(blue)[::6]]))
    y = np.array([c.shown[j] for c in cases])
    return {name: float(cross_val_score(LogisticRegression(max_iter=3000), np.asarray(x), y, cv=5,
                                        scoring="roc_auc").mean()) for name, x in feats.items()}


def test_planted_visibility_steers_what_a_probe_learns():
    # BWV drawn only in dermoscopy: a pixel probe finds it there and not in the clinical photo ...
    derm_only = _probe_auc({"derm": {"BWV": 1.0}, "clinic": {"BWV": 0.0}}, "BWV")
    assert derm_only["derm"] > 0.85
    assert derm_only["clinic"] < 0.7
    # ... and no longer in dermoscopy once the design hides it there.
    hidden = _probe_auc({"derm": {"BWV": 0.0}, "clinic": {"BWV": 0.0}}, "BWV")
    assert hidden["derm"] < 0.7


def test_planted_json_and_label_statistics_do_not_depend_on_the_design(tmp_path):
    import json

    from ssnbench.data.synthetic import DERM_VISIBILITY, PlantedDesign

    root = generate(tmp_path / "a", cases=20, seed=3, image_size=24, planted={"clinic_extra": 0.0})
    truth = json.loads((root / "meta" / "planted.json").read_text())
    assert truth["visibility"]["derm"] == DERM_VISIBILITY
    assert truth["expected"]["clinic_adds_information"] is False  # nothing extra at clinic_extra 0
    assert all(truth["visibility"]["clinic"][k] <= DERM_VISIBILITY[k] for k in LABELS)
    assert 0.8 < truth["ceiling"]["all"]["avg"] <= 1.0 and truth["label_noise"] == 0.08
    default = generate(tmp_path / "b", cases=20, seed=3, image_size=24)
    assert json.loads((default / "meta" / "planted.json").read_text())["expected"]["clinic_adds_information"]
    assert (root / "meta" / "meta.csv").read_bytes() == (default / "meta" / "meta.csv").read_bytes()
    with pytest.raises(Exception, match=r"planted\.derm\.XYZ: unknown label"):
        PlantedDesign.from_overrides({"derm": {"XYZ": 1.0}})
    with pytest.raises(Exception, match=r"planted\.clinic_extra: expected a number in \[0, 1\]"):
        PlantedDesign.from_overrides({"clinic_extra": 2})


def test_a_generated_release_read_as_derm7pt_stays_synthetic(tmp_path):
    # Pointing a derm7pt suite (DERM7PT_ROOT) at generated data must not turn it into "REAL" data in
    # the results and reports; the real release (no generator marker) stays REAL.
    import shutil

    from ssnbench.config import DatasetSpec
    from ssnbench.data.synthetic import MARKER, generator_args
    from ssnbench.runner import open_data

    root = generate(tmp_path / "gen", cases=24, seed=5, image_size=24)
    spec = DatasetSpec(kind="derm7pt", root=str(root.parent), image_size=16, border_crop=0)
    info = open_data(spec).info
    assert info["kind"] == "SYNTHETIC"
    assert info["synthetic"]["cases"] == 24 and info["synthetic"]["seed"] == 5
    assert info["synthetic"]["source_size"] == 24 and "planted" in info["synthetic"]

    real = tmp_path / "real" / "release_v0"
    shutil.copytree(root, real)
    (real / "meta" / MARKER).unlink()
    assert generator_args(real) is None
    info = open_data(DatasetSpec(kind="derm7pt", root=str(real), image_size=16, border_crop=0)).info
    assert info["kind"] == "REAL" and "synthetic" not in info
    (real / "meta" / MARKER).write_text('{"generator": "someone else"}')
    assert generator_args(real) is None


def test_elevation_is_drawn_given_diag_and_the_pigment_network(tmp_path):
    # The clinical-only cue that tells a criterion (docs/planted.md): among nevi, raised lesions are
    # mostly those without a network. Counted on the full-size plan, so the margin is not chance.
    import json

    from ssnbench.data.synthetic import ELEVATIONS, elevation_probs

    nev, pn = CLASSES["DIAG"].index("NEV"), LABELS.index("PN")
    nevi = [c for c in plan_cases(1011, 0) if c.shown[0] == nev]

    def raised(pn_class: str) -> float:
        rows = [c for c in nevi if CLASSES["PN"][c.shown[pn]] == pn_class]
        return float(np.mean([c.elevation > 0 for c in rows]))

    assert raised("ABS") > raised("TYP") + 0.3
    p_abs, p_typ = elevation_probs(nev, 0), elevation_probs(nev, 1)
    assert p_abs.sum() == pytest.approx(1.0) and len(p_abs) == len(ELEVATIONS)
    assert 1 - p_abs[0] == pytest.approx(raised("ABS"), abs=0.1)
    assert 1 - p_typ[0] == pytest.approx(raised("TYP"), abs=0.1)
    # The ground truth says so, and says nothing of it once the clinical photo carries nothing extra.
    def truth(name: str, **planted) -> dict:
        root = generate(tmp_path / name, cases=20, image_size=24, planted=planted or None)
        return json.loads((root / "meta" / "planted.json").read_text())

    default, flat = truth("default"), truth("flat", clinic_extra=0)
    assert default["clinic_only_cues"]["informs"] == ["DIAG", "PN"]
    assert default["expected"]["clinic_extra_labels"] == ["DIAG", "VS"]  # dermoscopy shows PN in full
    assert flat["clinic_only_cues"]["informs"] == [] and flat["expected"]["clinic_extra_labels"] == []
