"""scripts/compile_check.py: the kernels compile for sm_90 on a machine without a GPU.

The CPU tests run the kernels in Triton's interpreter, which executes Python semantics and would not
notice a construct the compiler rejects. This compiles one forward and one backward candidate, with
and without tail tiles, for Hopper (Triton ships ptxas), in a subprocess: the interpreter flag of
this test process is fixed at import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compile_check.py"


def test_forward_and_backward_compile_for_sm90(tmp_path: Path) -> None:
    out = tmp_path / "compile.json"
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    argv = [sys.executable, str(SCRIPT), "--dims", "64", "--lengths", "196", "--indices", "2",
            "--workers", "2", "--json", str(out)]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    records = json.loads(out.read_text())
    assert {r["kernel"] for r in records} == {"fwd", "bwd"}
    assert all(r["ok"] and r["shared"] > 0 for r in records)
    # each kernel compiled twice: full tiles for the last blocks, and 196 tokens' narrower tails
    for kernel in ("fwd", "bwd"):
        recs = [r for r in records if r["kernel"] == kernel]
        narrower = [any(r["tails"][b.replace("BLOCK_", "TAIL_")] < v for b, v in r["blocks"].items())
                    for r in recs]
        assert sorted(narrower) == [False, True]
