"""Suite files: a good one loads; each kind of mistake is ONE line naming file and key path, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssnbench import cli
from ssnbench.config import load
from ssnbench.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent

GOOD = """\
name: tiny
dataset: {kind: synthetic, cases: 40, seed: 0, source_size: 32, image_size: 32, border_crop: 2}
train: {epochs: 1, batch_size: 8, lr: 1e-3}
seeds: [0, 1]
model_defaults: {options: {backbone: resnet18}}
models:
  - {name: ssn-prior, arch: ssn}
  - {name: dual-equal, arch: dual, loss: equal}
  - {name: single-derm, arch: single, options: {modality: derm}}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


def test_good_suite_loads(tmp_path: Path) -> None:
    suite = load(_write(tmp_path, GOOD))
    assert suite.name == "tiny" and suite.seeds == (0, 1)
    assert suite.train.lr == pytest.approx(1e-3)  # YAML 1.1 reads 1e-3 as a string; accepted
    assert [m.name for m in suite.models] == ["ssn-prior", "dual-equal", "single-derm"]
    assert suite.models[2].options["backbone"] == "resnet18" and suite.models[2].options["modality"] == "derm"
    assert suite.models[1].loss == "equal" and suite.reference == "ssn-prior"
    assert suite.dataset.kind == "synthetic" and suite.dataset.cases == 40


BAD = [
    (
        "unknown key",
        GOOD.replace("train: {epochs: 1", "train: {epoch: 1"),
        "train.epoch: unknown key; did you mean 'epochs'?",
    ),
    ("unknown top key", GOOD.replace("seeds:", "sedes:"), "sedes: unknown key; did you mean 'seeds'?"),
    (
        "wrong type",
        GOOD.replace("batch_size: 8", "batch_size: eight"),
        "train.batch_size: expected an integer",
    ),
    (
        "wrong type bool",
        GOOD.replace("name: ssn-prior, arch: ssn}", "name: ssn-prior, arch: ssn, loss: 3}"),
        "models[0].loss: expected one of prior, equal",
    ),
    ("unknown arch", GOOD.replace("arch: dual", "arch: duel"), "models[1].arch: unknown arch 'duel'"),
    (
        "unknown backbone",
        GOOD.replace("options: {modality: derm}", "options: {modality: derm, backbone: resnet5}"),
        "models[2].options.backbone: unknown timm model 'resnet5'",
    ),
    (
        "unknown option",
        GOOD.replace("options: {modality: derm}", "options: {modalty: derm}"),
        "models[2].options.modalty: unknown option",
    ),
    (
        "missing data",
        GOOD.replace(
            "kind: synthetic, cases: 40, seed: 0, source_size: 32,",
            "kind: derm7pt, root: /nonexistent/derm7pt,",
        ),
        "dataset.root: '/nonexistent/derm7pt' does not exist; get the Derm7pt release_v0 from https://derm.cs.sfu.ca",
    ),
    (
        "unset env var",
        GOOD.replace(
            "kind: synthetic, cases: 40, seed: 0, source_size: 32,",
            "kind: derm7pt, root: '${SSNBENCH_TEST_UNSET_VAR}/x',",
        ),
        "dataset.root: environment variable SSNBENCH_TEST_UNSET_VAR is not set",
    ),
    ("missing models", GOOD.split("models:")[0], "models: missing (required)"),
    (
        "duplicate name",
        GOOD.replace("name: dual-equal", "name: ssn-prior"),
        "models[1].name: duplicate model name",
    ),
    ("bad yaml", GOOD.replace("seeds: [0, 1]", "seeds: [0, 1"), "invalid YAML"),
]


@pytest.mark.parametrize(("case", "text", "expected"), BAD, ids=[b[0] for b in BAD])
def test_bad_suite_is_one_line_exit_2(
    tmp_path: Path, capsys, monkeypatch, case: str, text: str, expected: str
) -> None:
    monkeypatch.delenv("SSNBENCH_TEST_UNSET_VAR", raising=False)
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)
    # through the CLI: one line on stderr, exit 2, nothing trained
    assert cli.main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ssnbench: error: ") and expected in err
    assert not (tmp_path / "out").exists()


def test_env_interpolation(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "data" / "release_v0" / "meta"
    root.mkdir(parents=True)
    (root / "meta.csv").write_text("case_num\n")
    monkeypatch.setenv("SSNBENCH_TEST_ROOT", str(tmp_path / "data"))
    text = GOOD.replace(
        "kind: synthetic, cases: 40, seed: 0, source_size: 32,",
        "kind: derm7pt, root: '${SSNBENCH_TEST_ROOT}',",
    )
    suite = load(_write(tmp_path, text))
    assert suite.dataset.root == str(tmp_path / "data")


def test_shipped_suites_are_valid(monkeypatch, tmp_path: Path) -> None:
    demo = load(REPO / "suites" / "demo.yaml")
    assert demo.dataset.kind == "synthetic" and len(demo.seeds) >= 2
    assert {m.arch for m in demo.models} == {"ssn", "dual", "single"}
    root = tmp_path / "release_v0" / "meta"
    root.mkdir(parents=True)
    (root / "meta.csv").write_text("case_num\n")
    monkeypatch.setenv("DERM7PT_ROOT", str(tmp_path))
    spc = load(REPO / "suites" / "spc.yaml", check_models=False)
    assert spc.dataset.kind == "derm7pt" and spc.dataset.image_size == 224 and len(spc.seeds) >= 3


def test_spc_without_data_says_where_to_get_it(monkeypatch, capsys, tmp_path: Path) -> None:
    monkeypatch.delenv("DERM7PT_ROOT", raising=False)
    assert cli.main(["run", str(REPO / "suites" / "spc.yaml"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "DERM7PT_ROOT" in err and "https://derm.cs.sfu.ca" in err
    monkeypatch.setenv("DERM7PT_ROOT", str(tmp_path / "missing"))
    assert cli.main(["run", str(REPO / "suites" / "spc.yaml"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dataset.root" in err and "does not exist" in err


def test_suite_without_data_check_loads_without_the_data(monkeypatch) -> None:
    """`bench models` reads a suite's models only: the data (and its variable) may be absent."""
    monkeypatch.delenv("DERM7PT_ROOT", raising=False)
    spc = load(REPO / "suites" / "spc.yaml", check_models=False, check_data=False)
    assert spc.dataset.root.endswith("${DERM7PT_ROOT}") and len(spc.models) >= 9
