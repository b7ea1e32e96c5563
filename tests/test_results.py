"""The result record: round trips, each kind of bad file named as such, one atomic writer."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_model

from ssnbench.results import (
    SCHEMA_VERSION,
    JobError,
    Predictions,
    ResultError,
    ResultRecord,
    load_result,
    pack_classes,
    pack_probs,
    read_result,
    replace_atomic,
    scan_results,
    unpack_classes,
    unpack_probs,
    validate,
    write_atomic,
    write_json_atomic,
    write_result,
)


def _ok_record() -> ResultRecord:
    return ResultRecord(
        suite="tiny",
        job="ssn__seed0",
        model={"name": "ssn", "arch": "ssn", "options": {"backbone": "resnet18"}},
        seed=0,
        status="ok",
        model_index=0,
        environment={"device_type": "cpu", "device_name": "CPU: test"},
        heads=["clinic", "derm", "fused"],
        metrics={"acc_avg": 0.5, "diag_auc_macro": float("nan")},
        predictions=Predictions(
            case_ids=["a", "b"],
            labels=pack_classes(np.zeros((2, 8), dtype=int)),
            pred=pack_classes(np.ones((2, 8), dtype=int)),
            diag_probs=pack_probs(np.full((2, 5), 0.2)),
        ),
        timings={"train_seconds": 1.5},
        finished_at="2026-01-01T00:00:00+00:00",
    )


def test_record_round_trips_through_a_file(tmp_path: Path) -> None:
    path = tmp_path / "ssn__seed0.json"
    record = _ok_record()
    write_result(path, record)
    data = load_result(path)
    assert data["schema"] == SCHEMA_VERSION and data["metrics"] == {"acc_avg": 0.5, "diag_auc_macro": None}
    assert "error" in data and data["error"] is None  # always-present keys are written even when null
    assert "profile" not in data and "history" not in data  # unset optional fields are left out
    again = ResultRecord.from_dict(data, str(path))
    assert again.predictions == record.predictions and again.to_dict() == data
    assert read_result(path) == data


def test_failed_record_and_unknown_keys_survive_a_rewrite(tmp_path: Path) -> None:
    record = ResultRecord(
        suite="tiny", job="x__seed1", model={"name": "x", "arch": "dual"}, seed=1, status="failed",
        error=JobError(type="RuntimeError", message="boom", traceback="Traceback ..."),
    )
    data = {**record.to_dict(), "added_by_a_newer_writer": {"k": 1}}
    parsed = ResultRecord.from_dict(data)
    assert parsed.error == record.error and parsed.extra == {"added_by_a_newer_writer": {"k": 1}}
    assert parsed.to_dict() == data
    write_result(tmp_path / "x.json", parsed)
    assert load_result(tmp_path / "x.json") == data


def _broken(data: dict, **changes) -> dict:
    out = json.loads(json.dumps(data))
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        target = out
        for p in parents:
            target = target[p]
        if value is KeyError:
            target.pop(key)
        else:
            target[key] = value
    return out


GOOD = json.loads(json.dumps(_ok_record().to_dict(), allow_nan=True).replace("NaN", "null"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "empty result file (truncated)"),
        (json.dumps(GOOD)[:-40], "truncated JSON"),
        ("{'schema': 1}", "not valid JSON"),
        ("[1, 2]", "malformed result record: expected a JSON object, got list"),
        (json.dumps({**GOOD, "schema": 2}), "schema version 2, this ssnbench reads version 1"),
        (json.dumps(_broken(GOOD, schema=KeyError)), "schema version None"),
        (json.dumps(_broken(GOOD, job=KeyError)), "'job' should be a string, got missing"),
        (json.dumps(_broken(GOOD, seed="0")), "'seed' should be an integer, got str '0'"),
        (json.dumps(_broken(GOOD, model__arch=KeyError)), "'model.arch' should be a string"),
        (json.dumps(_broken(GOOD, status="done")), "'status' should be one of running, ok, failed"),
        (json.dumps(_broken(GOOD, metrics=KeyError)), "status is ok but 'metrics' is missing"),
        (json.dumps(_broken(GOOD, metrics__acc_avg="high")), "'metrics.acc_avg' should be a number"),
        (json.dumps(_broken(GOOD, predictions__pred=["1"])), "'predictions.pred' has 1 rows"),
        (json.dumps(_broken(GOOD, error="boom")), "'error' should be null or an object"),
    ],
    ids=lambda v: v[:30] if isinstance(v, str) else None,
)
def test_each_bad_file_is_named_with_what_is_wrong(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ResultError) as info:
        load_result(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and expected in message and "\n" not in message
    assert read_result(path) is None  # the runner's view: not a finished job


def test_missing_file_and_scan(tmp_path: Path) -> None:
    with pytest.raises(ResultError, match="cannot read result file"):
        load_result(tmp_path / "absent.json")
    write_result(tmp_path / "a.json", _ok_record())
    (tmp_path / "b.json").write_text("{")
    records, problems = scan_results(tmp_path)
    assert [r["job"] for r in records] == ["ssn__seed0"]
    assert len(problems) == 1 and "b.json: truncated JSON" in str(problems[0])


def test_an_invalid_record_is_never_written(tmp_path: Path) -> None:
    bad = _ok_record()
    bad.metrics = None
    with pytest.raises(ResultError, match="'metrics' is missing"):
        write_result(tmp_path / "r.json", bad)
    assert list(tmp_path.iterdir()) == []
    assert validate(GOOD) is GOOD


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_atomic_writer_honours_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        write_atomic(tmp_path / "a.md", "text")
        write_json_atomic(tmp_path / "b.json", {"x": 1})
        write_atomic(tmp_path / "c.png", b"\x89PNG")
        # A writer that replaces the temp file with a private one, as safetensors' save_model does:
        # the checkpoint must still be readable by whoever may read the results.
        replace_atomic(tmp_path / "d.safetensors", _private_writer)
        replace_atomic(tmp_path / "e.safetensors", lambda tmp: save_model(torch.nn.Linear(2, 1), str(tmp)))
    finally:
        os.umask(old)
    for name in ("a.md", "b.json", "c.png", "d.safetensors", "e.safetensors"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
    assert (tmp_path / "c.png").read_bytes() == b"\x89PNG"
    assert (tmp_path / "d.safetensors").read_bytes() == b"weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.md", "b.json", "c.png", "d.safetensors", "e.safetensors"]  # no temp files


def _private_writer(tmp: Path) -> None:
    fresh = tmp.with_name(tmp.name + ".new")
    os.close(os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    fresh.write_bytes(b"weights")
    os.replace(fresh, tmp)


def test_interrupted_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "r.json"
    write_json_atomic(path, {"old": True})

    def dies(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", dies)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, "new")
    assert json.loads(path.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_prediction_packing_round_trips() -> None:
    classes = np.array([[2, 0, 1, 0, 2, 1, 0, 1], [4, 2, 0, 2, 0, 0, 2, 0]])
    assert pack_classes(classes) == ["20102101", "42020020"]
    assert (unpack_classes(pack_classes(classes)) == classes).all()
    assert (unpack_classes(classes.tolist()) == classes).all()  # plain lists still read
    probs = np.array([[0.1, 0.2, 0.3, 0.25, 0.15]])
    assert np.allclose(unpack_probs(pack_probs(probs)), probs)


def test_placement_is_a_declared_field_not_an_unknown_key() -> None:
    """Where a job ran (ssnbench.job.placement) is part of the schema: a reader gets it as a field."""
    where = {"launcher": "ray", "host": "n1", "cuda_visible_devices": "0"}
    data = {**_ok_record().to_dict(), "placement": where}
    parsed = ResultRecord.from_dict(data)
    assert parsed.placement == where
    assert parsed.extra == {} and parsed.to_dict() == data
