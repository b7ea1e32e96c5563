"""Without a GPU the CPU kernel tests need Triton's interpreter: an exported TRITON_INTERPRET=0 must
make them fail (exit code 1, an error per test), never skip them silently (issue 18)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU box these tests skip by design")
def test_kernel_tests_fail_when_the_interpreter_is_exported_off() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider",
            "tests/test_kernels.py::test_opcheck",
            "tests/test_kernel_configs.py::test_tail_tile[16-lengths8-16]"]
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-2000:]
    assert "TRITON_INTERPRET=0 is exported on a machine without a GPU" in out
    assert " skipped" not in out and " passed" not in out
