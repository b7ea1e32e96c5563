"""Modality attribution: withheld modalities, heads alone, disagreement, the report section.

A hand-built model whose DIAG decision reads only the clinical photo gives known answers: withholding
the clinical photo drops DIAG to the base rate, withholding dermoscopy changes nothing, and the
derm head (uniform output) disagrees with the others exactly on the cases it gets wrong.
"""

from __future__ import annotations

import numpy as np
import pytest
from explain_toys import ClinicOnly, N, ToyPairs

from ssnbench.explain import attribution
from ssnbench.explain.inference import run_heads
from ssnbench.report import render_attribution


@pytest.fixture(scope="module")
def toy() -> tuple[ToyPairs, ClinicOnly]:
    return ToyPairs(), ClinicOnly()


def test_run_heads_keeps_every_head_and_withholds(toy) -> None:
    data, model = toy
    full = run_heads(model, data, None, batch_size=5)
    assert set(full.heads) == {"clinic", "derm", "fused"} and full.case_ids == data.case_ids
    assert (full.pred("clinic")[:, 0] == data.diag.numpy()).all()
    gone = run_heads(model, data, None, batch_size=7, withhold="clinic")
    assert (gone.pred("clinic")[:, 0] == 0).all()  # neutral input: mean 0 -> tie -> class 0
    with pytest.raises(ValueError, match="modality"):
        run_heads(model, data, None, withhold="photo")


def test_compute_recovers_a_clinic_only_model(toy) -> None:
    data, model = toy
    att = attribution.compute(model, data, {"clinic": 0.2, "derm": 0.5, "fused": 0.3})
    v = att["variants"]
    assert v["combined"]["acc_DIAG"] == 1.0
    assert v["no_clinic"]["acc_DIAG"] == 0.5  # the base rate of class 0
    assert v["no_derm"]["acc_DIAG"] == 1.0
    assert v["head_clinic"]["acc_DIAG"] == v["head_fused"]["acc_DIAG"] == 1.0
    assert v["head_derm"]["acc_DIAG"] == 0.5
    assert len(v["no_clinic"]["pred"]) == N and len(v["no_clinic"]["pred"][0]) == 8
    d = att["disagreement"]["per_label"]["DIAG"]
    assert d["rate"] == 0.5 and d["n"] == N // 2  # the derm head is wrong on exactly the NEV cases
    assert d["right"] == {"clinic": 1.0, "derm": 0.0, "fused": 1.0, "combined": 1.0}
    assert att["disagreement"]["per_label"]["PN"]["rate"] == 0.0  # a uniform head argmaxes to class 0 too
    assert "zeros after normalisation" in att["neutral_input"]


def _record(att: dict, seed: int, name: str = "toy", index: int = 0) -> dict:
    return {"status": "ok", "seed": seed, "model": {"name": name}, "model_index": index, "attribution": att}


def test_summarize_pairs_seeds_and_holm_adjusts(toy) -> None:
    data, model = toy
    att = attribution.compute(model, data, {"clinic": 0.2, "derm": 0.5, "fused": 0.3})
    records = [_record(att, 0), _record(att, 1), {"status": "ok", "seed": 0, "model": {"name": "single"}}]
    summary = attribution.summarize(records)
    (m,) = summary["models"]
    assert m["seeds"] == [0, 1] and m["n_cases"] == N
    rows = {r["variant"]: r for r in m["variants"]}
    assert list(rows) == list(attribution.VARIANTS)
    no_clinic = rows["no_clinic"]["vs_combined_DIAG"]
    assert no_clinic["diff"] == pytest.approx(-0.5) and no_clinic["ci_high"] < 0 and no_clinic["p"] < 0.05
    assert rows["no_derm"]["vs_combined_DIAG"]["diff"] == 0.0
    assert summary["n_tests"] == 10
    for r in m["variants"][1:]:
        for key in ("vs_combined_avg", "vs_combined_DIAG"):
            t = r[key]
            assert np.isnan(t["p"]) or t["p_holm"] >= t["p"] - 1e-12
    text = render_attribution(summary, {"Modality attribution": "figures/attribution.png"})
    assert text.startswith("## Modality attribution") and "clinical photo withheld" in text
    assert "| toy | clinical photo withheld |" in text and "figures/attribution.png" in text
    assert "No two-image model" in render_attribution(attribution.summarize(records[2:]), {})


def test_summarize_reads_undefined_rates_back_from_json(toy, tmp_path) -> None:
    """A rate with no case to count (heads that never disagree) is NaN in memory and null in the
    result file: the report must read it back, not trace back (found by scripts/bench_launchers.py)."""
    import copy
    import json

    from ssnbench.results import SCHEMA_VERSION, write_result

    data, model = toy
    att = attribution.compute(model, data, {"clinic": 0.2, "derm": 0.5, "fused": 0.3})
    undefined = copy.deepcopy(att)
    undefined["disagreement"]["per_label"]["DIAG"]["right"]["derm"] = float("nan")
    path = tmp_path / "toy__seed1.json"
    failed = {"status": "failed", "error": {"type": "X", "message": "only the writer is tested"}}
    model = {"name": "toy", "arch": "ssn"}
    ident = {"schema": SCHEMA_VERSION, "suite": "t", "job": "toy__seed1", "model": model}
    write_result(path, {**_record(undefined, 1), **failed, **ident})
    assert "NaN" not in path.read_text() and json.loads(path.read_text())
    back = json.loads(path.read_text())["attribution"]
    assert back["disagreement"]["per_label"]["DIAG"]["right"]["derm"] is None
    summary = attribution.summarize([_record(att, 0), _record(back, 1)])
    right = summary["models"][0]["disagreement"]["DIAG_right"]
    assert right["derm"] == att["disagreement"]["per_label"]["DIAG"]["right"]["derm"]  # seed 0 only
    all_undefined = attribution.summarize([_record(back, 1)])
    assert np.isnan(all_undefined["models"][0]["disagreement"]["DIAG_right"]["derm"])
