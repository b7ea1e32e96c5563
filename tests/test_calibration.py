"""The calibration driver: per-level suites, its table, one-line errors."""

from __future__ import annotations

from ssnbench import calibration
from ssnbench.config import load


def test_level_suite_sets_the_planted_level_and_a_name_per_level():
    suite = load("suites/calibration.yaml")
    zero = calibration.level_suite(suite, 0.0)
    assert zero.dataset.planted == {"clinic_extra": 0.0} and zero.name == "calibration-x0"
    assert calibration.level_suite(suite, 0.5).name == "calibration-x0.5"
    assert suite.dataset.planted == {"clinic_extra": 1.0}  # the loaded suite is unchanged


def test_table_marks_detection():
    claim = {"a": "ssn", "diff": {"estimate": 0.02, "low": 0.01, "high": 0.03}, "p_holm": 0.001,
             "verdict": "supported"}
    text = calibration.table([{"level": 1.0, "claim": claim, "minutes": 3.0, "planted": True},
                              {"level": 0.0, "claim": {**claim, "verdict": "not resolved"}, "minutes": 3.0,
                               "planted": False}])
    lines = text.splitlines()
    assert "| 1 | yes | ssn | +2.0 | [+1.0, +3.0] | 0.001 | supported | yes | 3.0 |" in lines
    assert lines[-1].startswith("| 0 | no |") and "| not resolved | no |" in lines[-1]


def test_bad_levels_are_one_line_errors(capsys):
    assert calibration.main(["suites/calibration.yaml", "--levels", "0,2"]) == 2
    assert "expected numbers in [0, 1]" in capsys.readouterr().err
    assert calibration.main(["suites/demo.yaml", "--levels", "x"]) == 2
