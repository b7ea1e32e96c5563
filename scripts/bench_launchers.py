"""Local loop vs Ray on this machine: a 4-job CPU suite, one thread per job (issue 16's benchmark).

    .venv/bin/python scripts/bench_launchers.py [--epochs 4] [--json out.json]

Runs `ssnbench run` twice on the same suite, in fresh out folders, one after the other:
`--launcher local --cpus-per-run 1` (4 jobs in turn) and `--launcher ray --max-parallel 2
--cpus-per-run 1` (2 jobs at once, each in its own Ray worker). The synthetic data is generated
once before either run, so neither pays for it. Prints wall times, their ratio, Ray's start-up
(from the driver's `ray: local cluster up in ...` line) and the load average before and after:
the machine may be shared, and a busy machine shrinks the ratio. Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ssnbench.results import result_files

SUITE = """\
name: bench-launchers
dataset: {{kind: synthetic, cases: 600, seed: 0, source_size: 64, image_size: 48, border_crop: 3}}
train: {{epochs: {epochs}, batch_size: 32, lr: 3.0e-3, warmup_epochs: 1, num_workers: 0}}
seeds: [0, 1, 2, 3]
profile: {{enabled: false}}
model_defaults: {{options: {{backbone: resnet18}}}}
models:
  - {{name: ssn, arch: ssn}}
"""


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run(cmd: list[str], log: Path) -> float:
    t0 = time.perf_counter()
    with log.open("w") as fh:
        subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs per job (4: about 30 s a job here)")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ssnbench-bench-launchers-"))
    suite = work / "suite.yaml"
    suite.write_text(SUITE.format(epochs=args.epochs))
    os.environ["SSNBENCH_CACHE"] = str(work / "cache")
    from ssnbench.config import load as load_suite
    from ssnbench.data.cache import synthetic_root

    synthetic_root(load_suite(suite).dataset)  # both runs read the same, already generated data
    ssnbench = [sys.executable, "-m", "ssnbench.cli", "run", str(suite), "--device", "cpu"]
    figures: dict[str, object] = {"load_before": load(), "cpus": os.cpu_count()}
    for name, extra in [
        ("local", ["--launcher", "local", "--cpus-per-run", "1"]),
        ("ray", ["--launcher", "ray", "--max-parallel", "2", "--cpus-per-run", "1"]),
    ]:
        out = work / name
        log = work / f"{name}.log"
        figures[f"{name}_load_before"] = load()
        figures[f"{name}_seconds"] = run([*ssnbench, *extra, "--out", str(out), "--report-dir",
                                          str(work / f"report-{name}")], log)
        text = log.read_text()
        per_job = [float(s) for s in re.findall(r"best epoch \d+, (\d+)s\)", text)]
        figures[f"{name}_job_seconds"] = per_job
        if name == "ray":
            up = re.search(r"ray: local cluster up in ([\d.]+)s", text)
            figures["ray_startup_seconds"] = float(up.group(1)) if up else None
        statuses = [json.loads(p.read_text())["status"] for p in result_files(out)]
        figures[f"{name}_statuses"] = statuses
    figures["load_after"] = load()
    figures["ratio_local_over_ray"] = figures["local_seconds"] / figures["ray_seconds"]  # type: ignore[operator]
    print(json.dumps(figures, indent=1))
    print(
        f"local {figures['local_seconds']:.1f}s, ray {figures['ray_seconds']:.1f}s "
        f"(start-up {figures.get('ray_startup_seconds')}s): {figures['ratio_local_over_ray']:.2f}x; "
        f"load {figures['load_before']} -> {figures['load_after']}; logs in {work}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
