"""Pinned: the job hash against every input that changes a result, the resume rule, and the head
weights each inference scheme gives.

The hash test walks every field of the dataset, train and model specs, so a field added later is
covered by default: it must either change the hash or be listed here as speed-only.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import pytest
import torch

from ssnbench import runner
from ssnbench.config import DatasetSpec, ModelSpec, ProfileSpec, Suite, TrainSpec
from ssnbench.driver import run_suite
from ssnbench.losses import combine_probabilities
from ssnbench.progress import Progress
from ssnbench.results import SCHEMA_VERSION
from ssnbench.runner import Job, job_hash, plan, resolve_weights, result_path

SPEED_ONLY = {"threads", "num_workers", "eval_batch_size"}  # TrainSpec fields that change speed only

SUITE = Suite(
    name="pin",
    path="pin.yaml",
    dataset=DatasetSpec(kind="synthetic", cases=40, seed=0, source_size=32, image_size=32, border_crop=2),
    train=TrainSpec(epochs=2, batch_size=8, lr=1e-3, num_workers=0, threads=1),
    seeds=(0, 1),
    models=(
        ModelSpec(name="ssn", arch="ssn", options={"backbone": "resnet18"}),
        ModelSpec(name="single-derm", arch="single", options={"backbone": "resnet18", "modality": "derm"}),
    ),
)


def _other(value: Any) -> Any:
    """A different value of the same kind (validity does not matter to the hash)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 + 0.125
    if isinstance(value, str):
        return value + "-other"
    if isinstance(value, dict):
        return {**value, "other": 1}
    if value is None:
        return 7
    raise AssertionError(f"no other value for {value!r}")


def _hashes(suite: Suite) -> dict[str, str]:
    return {job.id: job_hash(suite, job) for job in plan(suite)}


def test_job_hash_covers_every_dataset_train_and_model_field() -> None:
    base = _hashes(SUITE)
    assert len(set(base.values())) == 4  # 2 models x 2 seeds, all different
    for f in dataclasses.fields(DatasetSpec):
        suite = dataclasses.replace(
            SUITE,
            dataset=dataclasses.replace(SUITE.dataset, **{f.name: _other(getattr(SUITE.dataset, f.name))}),
        )
        changed = _hashes(suite)
        assert all(changed[j] != base[j] for j in base), f"dataset.{f.name} is not in the job hash"
    for f in dataclasses.fields(TrainSpec):
        suite = dataclasses.replace(
            SUITE, train=dataclasses.replace(SUITE.train, **{f.name: _other(getattr(SUITE.train, f.name))})
        )
        changed = _hashes(suite)
        if f.name in SPEED_ONLY:
            assert changed == base, f"train.{f.name} changes speed only, yet it changes the job hash"
        else:
            assert all(changed[j] != base[j] for j in base), f"train.{f.name} is not in the job hash"
    ssn = SUITE.models[0]
    for f in dataclasses.fields(ModelSpec):
        if f.name == "name":
            continue  # the name is the job id itself
        model = dataclasses.replace(ssn, **{f.name: _other(getattr(ssn, f.name))})
        changed = _hashes(dataclasses.replace(SUITE, models=(model, *SUITE.models[1:])))
        assert changed["ssn__seed0"] != base["ssn__seed0"], f"model.{f.name} is not in the job hash"
        assert changed["single-derm__seed0"] == base["single-derm__seed0"]  # other entries untouched


def test_plan_is_seed_major_and_hashes_are_stable_hex() -> None:
    jobs = plan(SUITE)
    assert [(j.id, j.model_index, j.seed) for j in jobs] == [
        ("ssn__seed0", 0, 0),
        ("single-derm__seed0", 1, 0),
        ("ssn__seed1", 0, 1),
        ("single-derm__seed1", 1, 1),
    ]
    h = job_hash(SUITE, jobs[0])
    assert len(h) == 16 and int(h, 16) >= 0  # 16 hex digits, as stored in every result file
    assert h == job_hash(dataclasses.replace(SUITE), jobs[0])  # a rebuilt suite: the same hash


def test_job_hash_ignores_what_does_not_change_a_result() -> None:
    base = _hashes(SUITE)
    extra = ModelSpec(name="dual", arch="dual", options={"backbone": "resnet18"})
    other = dataclasses.replace(
        SUITE,
        name="renamed",
        path="elsewhere.yaml",
        description="words",
        reference="single-derm",
        profile=ProfileSpec(batch_size=2),
        seeds=(1, 0, 2),
        models=(*SUITE.models, extra),
    )
    assert {j: h for j, h in _hashes(other).items() if j in base} == base
    # the seed is the job's own: the same model at another seed hashes differently
    ssn = SUITE.models[0]
    assert job_hash(SUITE, Job(ssn, 0, 0)) != job_hash(SUITE, Job(ssn, 0, 1))


# ---------------------------------------------------------------------------------------------
# Resume: which jobs run again (run_job replaced by a recorder, so no training happens)


@pytest.fixture()
def fake_jobs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    ran: list[str] = []

    def run_job(
        suite, job, data, device, env, profile, progress, out=None, tensorboard=None, after_fit=None
    ) -> dict:
        ran.append(job.id)
        failing = job.model.options.get("drop_rate") == 0.5  # how the tests below mark a failing model
        return {
            "schema": SCHEMA_VERSION,
            "suite": suite.name,
            "job": job.id,
            "job_hash": job_hash(suite, job),
            "model_index": job.model_index,
            "model": job.model.to_dict(),
            "seed": job.seed,
            "status": "failed" if failing else "ok",
            "error": {"type": "RuntimeError", "message": "boom"} if failing else None,
            "metrics": {"acc_avg": 0.5},
            "predictions": {"case_ids": ["c0"], "labels": ["00000000"], "pred": ["00000000"]},
            "best_epoch": 1,
            "timings": {"total_seconds": 0.0},
            "profile": {"device": "cpu"},
        }

    monkeypatch.setattr(runner, "run_job", run_job)
    monkeypatch.setattr(
        runner,
        "open_data",
        lambda spec, progress=None, cache=None, interpolation="bicubic": runner.Data(
            {}, {"kind": "SYNTHETIC", "splits": {}}
        ),
    )
    return ran


def _run(suite: Suite, out: Path, force: bool = False) -> int:
    return run_suite(suite, out, None, torch.device("cpu"), force=force, progress=Progress(io.StringIO()))


def test_resume_runs_only_what_is_missing_failed_or_changed(fake_jobs: list[str], tmp_path: Path) -> None:
    out = tmp_path / "results"
    everything = [j.id for j in plan(SUITE)]
    assert _run(SUITE, out) == 0 and fake_jobs == everything
    fake_jobs.clear()
    assert _run(SUITE, out) == 0 and fake_jobs == []  # all done: nothing runs

    speed = dataclasses.replace(SUITE, train=dataclasses.replace(SUITE.train, threads=2, num_workers=1))
    assert _run(speed, out) == 0 and fake_jobs == []  # speed-only change: results stand

    image = dataclasses.replace(SUITE, dataset=dataclasses.replace(SUITE.dataset, image_size=48))
    assert _run(image, out) == 0 and fake_jobs == everything  # new image size: every result is stale
    fake_jobs.clear()
    assert _run(SUITE, out) == 0 and fake_jobs == everything  # and back again
    fake_jobs.clear()

    changed = dataclasses.replace(SUITE.models[1], options={**SUITE.models[1].options, "drop_rate": 0.1})
    assert _run(dataclasses.replace(SUITE, models=(SUITE.models[0], changed)), out) == 0
    assert fake_jobs == ["single-derm__seed0", "single-derm__seed1"]  # only the changed entry
    fake_jobs.clear()

    result_path(out, plan(SUITE)[0]).write_text("{ half a file")  # unreadable: runs again
    assert _run(SUITE, out) == 0
    assert fake_jobs == ["ssn__seed0", "single-derm__seed0", "single-derm__seed1"]
    fake_jobs.clear()

    assert _run(SUITE, out, force=True) == 0 and fake_jobs == everything  # --force: all of them


def test_failed_results_run_again(fake_jobs: list[str], tmp_path: Path) -> None:
    out = tmp_path / "results"
    broken = dataclasses.replace(SUITE.models[1], options={**SUITE.models[1].options, "drop_rate": 0.5})
    suite = dataclasses.replace(SUITE, models=(SUITE.models[0], broken), seeds=(0,))
    assert _run(suite, out) == 1 and fake_jobs == ["ssn__seed0", "single-derm__seed0"]
    fake_jobs.clear()
    assert _run(suite, out) == 1 and fake_jobs == ["single-derm__seed0"]  # the ok one stands


# ---------------------------------------------------------------------------------------------
# Inference head weights per scheme


HEADS = ["clinic", "derm", "fused"]


@pytest.mark.parametrize(
    ("loss", "inference", "inference_weights", "expected", "scheme"),
    [
        ("prior", "same", None, {"clinic": 0.2, "derm": 0.5, "fused": 0.3}, "prior"),
        ("equal", "same", None, {"clinic": 1 / 3, "derm": 1 / 3, "fused": 1 / 3}, "equal"),
        ("prior", "equal", None, {"clinic": 1 / 3, "derm": 1 / 3, "fused": 1 / 3}, "equal"),
        ("equal", "prior", None, {"clinic": 0.2, "derm": 0.5, "fused": 0.3}, "prior"),
        (
            "prior",
            "same",
            {"clinic": 0, "derm": 3, "fused": 1},
            {"clinic": 0, "derm": 0.75, "fused": 0.25},
            "custom",
        ),
    ],
)
def test_inference_weights_per_scheme(loss, inference, inference_weights, expected, scheme) -> None:
    spec = ModelSpec(
        name="m", arch="ssn", loss=loss, inference=inference, inference_weights=inference_weights
    )
    loss_w, infer_w, got_scheme = resolve_weights(spec, HEADS)
    assert infer_w == pytest.approx(expected) and got_scheme == scheme
    assert loss_w == pytest.approx(
        {"clinic": 0.2, "derm": 0.5, "fused": 0.3} if loss == "prior" else dict.fromkeys(HEADS, 1 / 3)
    )


def test_loss_weight_overrides_follow_into_inference_when_same() -> None:
    spec = ModelSpec(name="m", arch="ssn", loss="prior", loss_weights={"clinic": 0.0})
    loss_w, infer_w, scheme = resolve_weights(spec, HEADS)
    assert loss_w == pytest.approx({"clinic": 0.0, "derm": 0.5 / 0.8, "fused": 0.3 / 0.8})
    assert infer_w == loss_w and scheme == "prior"
    single = resolve_weights(ModelSpec(name="s", arch="single"), ["derm"])
    assert single[1] == {"derm": 1.0}
    # an explicit inference scheme does not inherit the loss's overrides
    other = ModelSpec(name="m", arch="ssn", loss="prior", loss_weights={"clinic": 0.0}, inference="equal")
    assert resolve_weights(other, HEADS)[1:] == (pytest.approx(dict.fromkeys(HEADS, 1 / 3)), "equal")
    # overrides for heads the model does not have are dropped, not an error
    dual = ModelSpec(name="d", arch="dual", loss_weights={"fused": 5.0, "clinic": 1.0})
    assert resolve_weights(dual, ["clinic", "derm"])[0] == pytest.approx(
        {"clinic": 1 / 1.5, "derm": 0.5 / 1.5}
    )


def _outputs() -> dict[str, list[torch.Tensor]]:
    """One case; per label: derm sure of class 0, clinic sure of class 1, fused leaning to class 1."""
    big = 30.0
    derm = torch.tensor([[big, 0.0]])
    clinic = torch.tensor([[0.0, big]])
    fused = torch.log(torch.tensor([[0.4, 0.6]]))
    return {"clinic": [clinic], "derm": [derm], "fused": [fused]}


def test_combined_probabilities_by_hand() -> None:
    prior = combine_probabilities(_outputs())[0]  # default: the prior 0.2 / 0.5 / 0.3
    assert prior[0].tolist() == pytest.approx([0.5 + 0.3 * 0.4, 0.2 + 0.3 * 0.6], abs=1e-6)  # class 0
    equal = combine_probabilities(_outputs(), {"clinic": 1, "derm": 1, "fused": 1})[0]
    assert equal[0].tolist() == pytest.approx([1.4 / 3, 1.6 / 3], abs=1e-6)  # class 1
    derm_only = combine_probabilities(_outputs(), {"derm": 1.0})[0]
    assert derm_only[0].tolist() == pytest.approx([1.0, 0.0], abs=1e-6)
    # a single head is used as is, whatever the weights say
    alone = combine_probabilities({"clinic": _outputs()["clinic"]}, {"derm": 1.0})[0]
    assert alone[0].tolist() == pytest.approx([0.0, 1.0], abs=1e-6)
    with pytest.raises(ValueError, match="all have weight 0"):
        combine_probabilities(_outputs(), {"clinic": 0.0, "derm": 0.0, "fused": 0.0})


def test_head_weight_errors_are_one_line_config_errors() -> None:
    from ssnbench.errors import ConfigError
    from ssnbench.losses import head_weights_for

    with pytest.raises(ConfigError, match=r"^loss: unknown scheme 'prio'; expected one of prior, equal$"):
        head_weights_for("prio", HEADS)
    with pytest.raises(ValueError, match=r"^head_weights_for: a model needs at least one head$"):
        head_weights_for("prior", [])
    with pytest.raises(
        ConfigError,
        match=r"^loss_weights: unknown head 'fuse'; expected among clinic, derm, fused$",
    ):
        head_weights_for("prior", HEADS, {"fuse": 1.0})
    for bad in (True, "x", -1.0, float("inf")):
        with pytest.raises(
            ConfigError,
            match=r"^loss_weights: weight of 'derm' must be a finite number >= 0, got ",
        ):
            head_weights_for("prior", HEADS, {"derm": bad})
    with pytest.raises(ConfigError, match=r"all have weight 0"):
        head_weights_for("equal", ["clinic", "derm"], {"clinic": 0, "derm": 0})


def test_job_hash_covers_test_time_augmentation() -> None:
    from ssnbench.config import EvalSpec

    base = _hashes(SUITE)
    flips = _hashes(dataclasses.replace(SUITE, eval=EvalSpec(tta="flips")))
    assert all(flips[j] != base[j] for j in base)
    assert _hashes(dataclasses.replace(SUITE, eval=EvalSpec(tta=None))) == base  # the default: as before


def test_job_hash_covers_the_robustness_evaluation() -> None:
    # The robustness table is part of a result: turning it on or changing its shifts, severities or
    # seed must re-run the job; suites without it keep their hashes.
    from ssnbench.config import RobustnessSpec

    base = _hashes(SUITE)
    assert _hashes(dataclasses.replace(SUITE, robustness=RobustnessSpec(enabled=False, severities=3))) == base
    on = _hashes(dataclasses.replace(SUITE, robustness=RobustnessSpec(enabled=True)))
    assert all(on[j] != base[j] for j in base)
    for change in ({"shifts": ("blur",)}, {"severities": 3}, {"seed": 1}):
        other = _hashes(dataclasses.replace(SUITE, robustness=RobustnessSpec(enabled=True, **change)))
        assert all(other[j] != on[j] for j in on), change


def test_previous_result_says_why_a_job_runs_again(fake_jobs: list[str], tmp_path: Path) -> None:
    """The driver's resume decision itself (the launchers check again after claiming a job, which
    hides a wrong decision from the run-level tests above): what is kept, and the reason shown."""
    out = tmp_path / "results"
    broken = dataclasses.replace(SUITE.models[1], options={**SUITE.models[1].options, "drop_rate": 0.5})
    suite = dataclasses.replace(SUITE, models=(SUITE.models[0], broken), seeds=(0,))
    _run(suite, out)
    ok, failed = plan(suite)
    assert runner.previous_result(suite, ok, tmp_path / "elsewhere", force=False) == (None, None)  # missing

    prev, why = runner.previous_result(suite, ok, out, force=False)
    assert prev is not None and prev["job"] == ok.id and why is None  # finished: kept
    assert runner.previous_result(suite, ok, out, force=True) == (prev, "re-run requested (--force)")
    prev_failed, why = runner.previous_result(suite, failed, out, force=False)
    assert prev_failed is not None and prev_failed["status"] == "failed" and why == "a failed run"
    image = dataclasses.replace(suite, dataset=dataclasses.replace(suite.dataset, image_size=48))
    assert runner.previous_result(image, ok, out, force=False) == (
        prev, "its suite entry changed since it was written (stale)"
    )

    path = result_path(out, ok)
    path.write_text("{ half a file")
    prev, why = runner.previous_result(suite, ok, out, force=False)
    assert prev is None and why and "JSON" in why and not why.startswith(str(path))  # one reason, no path


def test_job_hash_ignores_the_order_of_keys_in_the_suite() -> None:
    """YAML key order means nothing: reordering a model's options keeps every result."""
    model = SUITE.models[1]
    reordered = dataclasses.replace(model, options=dict(reversed(list(model.options.items()))))
    assert list(reordered.options) != list(model.options)
    assert job_hash(SUITE, Job(reordered, 1, 0)) == job_hash(SUITE, Job(model, 1, 0))
