"""scripts/count_ops.py: the device-independent host-work measure of a training step."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "count_ops.py"


def _load():
    spec = importlib.util.spec_from_file_location("count_ops", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_counts_per_model_and_ssn_dispatches_fewer_ops_than_dual(tmp_path: Path, capsys) -> None:
    out = tmp_path / "ops.json"
    argv = ["--backbone", "resnet18", "--image-size", "32", "--time", "1", "--json", str(out)]
    assert _load().main(argv) == 0
    rows = json.loads(out.read_text())
    assert set(rows) == {"ssn", "ssn-xattn", "dual", "dual-xattn"}
    for r in rows.values():
        assert r["total"] == r["forward+loss"] + r["backward"] > 0 and r["step_ms"] > 0
    # one encoder pass for both images vs two: the reason SSN trains faster on a host-bound box
    assert rows["dual"]["total"] > 1.4 * rows["ssn"]["total"]
    assert rows["ssn"]["total"] < rows["ssn-xattn"]["total"] < rows["dual"]["total"]
    assert "resnet18 at 32 px" in capsys.readouterr().out
