"""kernels/ ships as ssnbench.kernels only (a top-level `kernels` module would clash with another PyPI
package): checked in a built wheel and in the installed (editable) package."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_installed_package_imports_kernels_from_the_repo(tmp_path):
    code = (
        "import importlib.util, ssnbench.kernels as k; "
        "print(k.__file__); print(importlib.util.find_spec('kernels') is None)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    kernels_file, no_top_level = out.stdout.split()
    assert Path(kernels_file).resolve() == ROOT / "kernels" / "__init__.py"
    assert no_top_level == "True", "a top-level `kernels` module is importable"


@pytest.mark.slow
def test_wheel_maps_kernels_under_ssnbench(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path),
         str(ROOT)],
        check=True, capture_output=True,
    )
    (wheel,) = tmp_path.glob("ssnbench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("__init__", "knobs", "forward", "backward", "configs", "launch", "shared_xattn",
                   "precompile", "ops", "reference", "flops"):
        assert f"ssnbench/kernels/{module}.py" in names
    assert not any(n.startswith("kernels/") for n in names)
    assert "ssnbench/models/cross_attention.py" in names and "ssnbench/data/derm7pt.py" in names
    assert "ssnbench/bench/kernels.py" in names and "ssnbench/bench/models.py" in names
