"""docs/derm7pt.md is the one dataset reference: it holds the facts the reader and the generator rely
on, and nothing in the code, suites or docs points at the team's notes outside the repository."""

from __future__ import annotations

from pathlib import Path

from ssnbench.data.derm7pt import CLASSES, LABELS, META_COLUMNS

ROOT = Path(__file__).resolve().parents[1]


def test_doc_states_layout_columns_labels_and_splits() -> None:
    text = (ROOT / "docs" / "derm7pt.md").read_text()
    for column in META_COLUMNS:
        assert f"`{column}`" in text, column
    assert "413 train / 203 validation / 395 test" in text and "1011" in text
    assert ", ".join(LABELS) in text.replace("**", "")
    for label, classes in CLASSES.items():
        assert label in text and all(c in text for c in classes), label
    assert "https://derm.cs.sfu.ca" in text and "CC BY-NC-ND 4.0" in text
    assert "drop_no_clinic" in text and "565, 800, 824" in text


def test_no_reference_to_a_derm7pt_md_outside_the_repo() -> None:
    files = [*ROOT.glob("ssnbench/**/*.py"), *ROOT.glob("kernels/*.py"), *ROOT.glob("suites/*.yaml"),
             *ROOT.glob("tests/*.py"), *ROOT.glob("docs/*.md"), ROOT / "README.md"]
    stale = "DERM7PT" + ".md"
    offenders = [str(f.relative_to(ROOT)) for f in files if stale in f.read_text(encoding="utf-8")]
    assert not offenders, f"point these at docs/derm7pt.md: {offenders}"
