"""The Claims section on crafted result records: models matched by what they are, verdicts, planted."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ssnbench.claims import model_key
from ssnbench.report import render, summarize
from ssnbench.results import pack_classes, pack_probs

NUM_CLASSES = (5, 3, 2, 3, 3, 3, 3, 2)
LABELS = ("DIAG", "PN", "BWV", "VS", "PIG", "STR", "DaG", "RS")
N = 240
PLANTED = {"expected": {"clinic_adds_information": True, "clinic_extra_labels": ["DIAG", "VS"],
                        "derm_more_informative_than_clinic": True}}


def _record(name: str, arch: str, seed: int, skill: float, loss: str = "prior", params: int = 10**6,
            **options) -> dict:
    labels = np.stack([np.random.default_rng(50 + i).integers(0, k, N) for i, k in enumerate(NUM_CLASSES)], 1)
    u = np.random.default_rng(seed).random(labels.shape)  # shared by all models of a seed: paired
    correct = u < skill
    pred = np.where(correct, labels, (labels + 1) % np.asarray(NUM_CLASSES))
    diag = np.full((N, 5), 0.1)
    diag[np.arange(N), pred[:, 0]] = 0.6
    metrics = {f"acc_{lab}": float(correct[:, i].mean()) for i, lab in enumerate(LABELS)}
    metrics["acc_avg"] = float(correct.mean())
    return {
        "suite": "claims", "job": f"{name}__seed{seed}", "model_index": 0, "seed": seed, "status": "ok",
        "model": {"name": name, "arch": arch, "loss": loss,
                  "options": {"backbone": "test_resnet", **options}},
        "metrics": metrics,
        "predictions": {"case_ids": [f"c{i}" for i in range(N)], "labels": pack_classes(labels),
                        "pred": pack_classes(pred), "diag_probs": pack_probs(diag)},
        "dataset": {"kind": "SYNTHETIC",
                    "synthetic": {"cases": 600, "seed": 0, "source_size": 32, "planted": PLANTED}},
        "stats": {"margin": 0.01},
        "profile": {"params": {"total": params}},
        "finished_at": "2026-01-01T00:00:00",
    }


def _suite(seeds=(0, 1)) -> list[dict]:
    out = []
    for s in seeds:
        out += [
            _record("mine", "ssn", s, 0.80, params=10**6),
            _record("mine-equal", "ssn", s, 0.74, loss="equal"),
            _record("mine-noattn", "ssn", s, 0.80, xattn="none"),
            _record("mine-separate", "ssn", s, 0.86, xattn="separate"),
            _record("two-encoders", "dual", s, 0.80, loss="equal", params=2 * 10**6),
            _record("only-derm", "single", s, 0.70, modality="derm"),
            _record("only-clinic", "single", s, 0.60, modality="clinic"),
        ]
    return out


def test_models_are_identified_by_what_they_are():
    entry = {"arch": "ssn", "loss": "prior", "options": {"backbone": "x", "xattn_impl": "triton"}}
    assert model_key(entry) == {"arch": "ssn", "loss": "prior", "backbone": "x", "xattn": "shared",
                                "share_heads": False}


def test_claims_verdicts_on_crafted_records():
    summary = summarize(_suite())
    rows = {c["id"]: c for c in summary["claims"]}
    # no model with share_heads=True: that claim is omitted, not guessed
    assert set(rows) == {"ssn_noninferior_dual", "prior_beats_equal", "shared_beats_none",
                         "shared_beats_separate", "ssn_beats_best_single", "fusion_beats_derm",
                         "derm_beats_clinic"}
    assert (rows["prior_beats_equal"]["a"], rows["prior_beats_equal"]["b"]) == ("mine", "mine-equal")
    assert rows["prior_beats_equal"]["verdict"] == "supported"
    assert rows["shared_beats_none"]["verdict"] == "not resolved"  # identical skill
    assert rows["shared_beats_separate"]["verdict"] == "contradicted"
    assert rows["ssn_beats_best_single"]["b"] == "only-derm"
    assert rows["ssn_beats_best_single"]["verdict"] == "supported"
    assert rows["fusion_beats_derm"]["a"] == "mine-separate"  # the best two-image model
    ni = rows["ssn_noninferior_dual"]
    assert (ni["a"], ni["b"], ni["param_ratio"]) == ("mine", "two-encoders", 0.5)
    assert ni["verdict"] == "supported"
    for c in rows.values():  # Holm-adjusted p never below raw p; one family for the whole report
        assert c["p_holm"] >= c["p_value"]
        assert c["holm_family_size"] == summary["claims"][0]["holm_family_size"]
    assert "DIAG, VS" in rows["fusion_beats_derm"]["planted"]
    assert rows["derm_beats_clinic"]["verdict"] == "supported"
    assert (rows["derm_beats_clinic"]["a"], rows["derm_beats_clinic"]["b"]) == ("only-derm", "only-clinic")
    assert "not planted" in rows["prior_beats_equal"]["planted"]


def test_noninferiority_needs_the_parameter_saving_and_the_margin():
    recs = [r for r in _suite() if r["model"]["arch"] in ("ssn", "dual")]
    for r in recs:
        if r["model"]["arch"] == "dual":
            r["profile"]["params"]["total"] = 15 * 10**5  # SSN at 67% of dual: not the claimed saving
    rows = {c["id"]: c for c in summarize(recs)["claims"]}
    assert rows["ssn_noninferior_dual"]["verdict"] == "contradicted"
    assert "67%" in rows["ssn_noninferior_dual"]["note"]


def test_claims_section_rendered_with_planted_truth_and_single_seed_note():
    summary = summarize(_suite(seeds=(0,)))
    text = render(summary, {})
    section = text[text.index(". Claims\n"):]
    assert "| planted |" in section.splitlines()[4]
    assert "**supported**" in section and "p Holm" in section
    assert "One seed: these intervals resample test cases only" in section
    assert "SSN itself does not beat" not in section  # it does, in these records
    worse = [r for r in _suite(seeds=(0,)) if r["model"]["name"] != "mine-separate"]
    for r in worse:
        if r["model"]["name"] == "only-derm":
            r.update(_record("only-derm", "single", 0, 0.80, modality="derm"))
    text = render(summarize(worse), {})
    assert "**SSN itself does not beat the best single-modality model (only-derm) in this run**" in text


def test_margin_and_planted_are_suite_keys(tmp_path):
    import pytest

    from ssnbench.config import load
    from ssnbench.errors import ConfigError

    base = "\n".join(line for line in Path("suites/demo.yaml").read_text().splitlines()
                     if not line.startswith("stats:")) + "\n"
    good = tmp_path / "good.yaml"
    good.write_text(base + "stats: {margin: 0.02}\n")
    assert load(good).margin == 0.02
    assert load("suites/demo.yaml").margin == 0.01
    bad = tmp_path / "bad.yaml"
    bad.write_text(base + "stats: {margin: 2}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: stats.margin: expected a fraction below 1"):
        load(bad)
    bad.write_text(base.replace("kind: synthetic", "kind: synthetic\n  planted: {clinic_extra: 3}"))
    with pytest.raises(ConfigError, match=r"dataset.planted.clinic_extra: expected a number in \[0, 1\]"):
        load(bad)
