"""`make mutation`'s configuration follows the code: every scope names functions that exist, and
every example bug of issue 18 still applies to the code it describes. A refactor that moves one
fails here, in `make test`, instead of leaving `make mutation` to test nothing (yesterday's scopes
pointed at `metrics.paired_bootstrap` and `report._aligned` after both had moved)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mutation():
    spec = importlib.util.spec_from_file_location("mutation_script", ROOT / "scripts" / "mutation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_scopes_and_examples_match_the_code(mutation) -> None:
    assert mutation.stale_config() == []


def test_a_moved_function_is_reported(mutation, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(mutation.SCOPES, "metrics", mutation._functions("metrics", "_paired_bootstrap"))
    assert mutation.stale_config() == ["scope metrics: no function paired_bootstrap in ssnbench/metrics.py"]


def test_every_example_names_a_pinned_test(mutation) -> None:
    for _what, _rel, _edits, test in mutation.EXAMPLES:
        path, _, name = test.partition("::")
        assert f"def {name}(" in (ROOT / path).read_text(), test
