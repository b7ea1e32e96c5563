"""Robustness to imaging shifts: the shifts, determinism, the per-modality effect, the relative drop
and its two-level CI, the suite key and the report section."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from explain_toys import ClinicOnly, ToyPairs

from ssnbench.config import load
from ssnbench.errors import ConfigError
from ssnbench.explain import robustness as R
from ssnbench.report import render_robustness


def test_every_shift_changes_the_image_and_is_seeded() -> None:
    g = torch.Generator().manual_seed(0)
    img = torch.randint(30, 220, (3, 32, 32), generator=g, dtype=torch.uint8)
    for shift in R.SHIFTS.values():
        out = shift.apply(img, shift.values[-1], torch.Generator().manual_seed(1))
        assert out.dtype == torch.uint8 and out.shape == img.shape, shift.name
        assert not torch.equal(out, img), shift.name
    pair = torch.stack([img, img])
    noisy = R.shift_pair("derm", R.SHIFTS["noise"], 0.1, seed=3)
    a, b, c = noisy(pair, 5), noisy(pair, 5), noisy(pair, 6)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[0], img) and not torch.equal(a[1], img)  # only the derm image moved


def test_levels_are_spread_and_bounded() -> None:
    assert R.levels_for(5) == [0, 1, 2, 3, 4] and R.levels_for(3) == [0, 2, 4] and len(R.levels_for(4)) == 4
    with pytest.raises(ValueError):
        R.levels_for(2)


def test_shifting_the_image_the_model_reads_hurts_and_the_other_does_not() -> None:
    data, model = ToyPairs(), ClinicOnly()
    rob = R.evaluate(model, data, None, shifts=["brightness"], severities=3)
    assert rob["clean"]["acc_DIAG"] == 1.0 and len(rob["clean"]["n_right"]) == len(data)
    clinic = rob["modalities"]["clinic"]["shifts"]["brightness"]
    derm = rob["modalities"]["derm"]["shifts"]["brightness"]
    assert [lv["level"] for lv in clinic] == [1, 3, 5]
    assert clinic[-1]["acc_DIAG"] == 0.5  # darkened NEV photos now look like BCC
    assert all(lv["acc_DIAG"] == 1.0 for lv in derm)
    assert rob["modalities"]["clinic"]["missing"]["acc_DIAG"] == 0.5
    assert rob["modalities"]["derm"]["missing"]["acc_DIAG"] == 1.0
    with pytest.raises(ValueError, match="unknown shift"):
        R.evaluate(model, data, None, shifts=["fog"])

    records = [{"status": "ok", "seed": s, "model": {"name": "toy"}, "model_index": 0, "robustness": rob}
               for s in (0, 1)]
    summary = R.summarize(records)
    (m,) = summary["models"]
    assert m["modalities"]["derm"]["drop_DIAG"]["drop"] == 0.0
    d = m["modalities"]["clinic"]["drop_DIAG"]
    assert d["drop"] > 0.1 and d["ci_low"] > 0 and d["seeds"] == 2
    text = render_robustness(summary, {"Robustness: clinic image shifted": "figures/robustness_clinic.png"})
    assert "Robustness to imaging conditions" in text and "| toy | clinic | 2 |" in text
    assert "figures/robustness_clinic.png" in text


def test_relative_drop_ci_carries_seed_variance() -> None:
    rng = np.random.default_rng(0)
    clean = (rng.random(200) < 0.8).astype(float)

    def matrix(acc: float) -> np.ndarray:
        shifted = clean * (rng.random(200) < acc)
        return np.stack([clean, shifted])

    same = R.mean_relative_drop([matrix(0.9), matrix(0.9)], seed=1)
    spread = R.mean_relative_drop([matrix(0.6), matrix(1.0)], seed=1)
    assert 0.0 < same["drop"] < 0.2
    assert spread["ci_high"] - spread["ci_low"] > same["ci_high"] - same["ci_low"]
    flat = R.mean_relative_drop([np.stack([clean, clean])])
    assert flat["drop"] == flat["ci_low"] == flat["ci_high"] == 0.0


SUITE = """\
name: rob
dataset: {kind: synthetic, cases: 40, image_size: 32, source_size: 32, border_crop: 2}
models: [{name: s, arch: single, options: {backbone: test_resnet}}]
"""


def test_robustness_suite_key(tmp_path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(SUITE + "robustness: {severities: 3, shifts: [blur, noise], seed: 2}\n")
    spec = load(path, check_models=False).robustness
    assert spec.enabled and spec.severities == 3 and spec.shifts == ("blur", "noise") and spec.seed == 2
    path.write_text(SUITE + "robustness: true\n")
    assert load(path, check_models=False).robustness.enabled
    path.write_text(SUITE)
    assert not load(path, check_models=False).robustness.enabled
    bad_values = (
        ("{shifts: [fog]}", "robustness.shifts[0]"),
        ("{severities: 7}", "robustness.severities"),
        ("{level: 3}", "level"),
    )
    for bad, where in bad_values:
        path.write_text(SUITE + f"robustness: {bad}\n")
        with pytest.raises(ConfigError, match=where.replace("[", r"\[").replace("]", r"\]")):
            load(path, check_models=False)


def test_suite_key_adds_robustness_to_records_and_report(tmp_path, monkeypatch) -> None:
    from ssnbench.driver import run_suite
    from ssnbench.results import read_result

    monkeypatch.setenv("SSNBENCH_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "s.yaml"
    path.write_text(
        SUITE
        + "train: {epochs: 1, batch_size: 8, warmup_epochs: 0, num_workers: 0, threads: 1}\n"
        + "profile: false\nrobustness: {severities: 3, shifts: [jpeg]}\n"
    )
    suite = load(path)
    assert run_suite(suite, tmp_path / "res", tmp_path / "rep", torch.device("cpu")) == 0
    rob = read_result(tmp_path / "res" / "s__seed0.json")["robustness"]
    assert list(rob["modalities"]) == ["derm"] and rob["modalities"]["derm"]["missing"] is None
    assert [lv["value"] for lv in rob["modalities"]["derm"]["shifts"]["jpeg"]] == [60, 25, 8]
    text = (tmp_path / "rep" / "report.md").read_text()
    assert re.search(r"## \d+\. Robustness to imaging conditions", text) and "| s | derm | 1 |" in text
    assert (tmp_path / "rep" / "figures" / "robustness_derm.png").is_file()
