"""Calibration: does the harness detect fusion-vs-derm when (and only when) the data plants it?

Why: a benchmark that says "fusion beats single-derm" is only believable if it says so when the
clinical photo carries extra information and does not say so when it carries none. This runs one
suite (suites/calibration.yaml) at several planted clinical-informativeness levels
(`dataset.planted.clinic_extra`, 0 = "the clinical photo carries nothing extra") and tabulates,
per level, the Claims section's fusion-vs-derm row: detected (supported) or not. Level 0 measures
the false-positive behaviour, the others the power.

    python -m ssnbench.calibration suites/calibration.yaml [--levels 0,0.5,1] [--device cpu]

Each level is an ordinary suite run (results/<suite>-x<level>/, reports/<suite>-x<level>/, resumable);
the table goes to reports/<suite>/calibration.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ssnbench.errors import UserError

__all__ = ["DEFAULT_LEVELS", "level_suite", "main", "table"]

DEFAULT_LEVELS = (0.0, 0.5, 1.0)


def level_suite(suite: Any, level: float) -> Any:
    """The suite with `dataset.planted.clinic_extra = level` and a per-level name."""
    planted = dict(suite.dataset.planted or {})
    planted["clinic_extra"] = float(level)
    dataset = replace(suite.dataset, planted=planted)
    return replace(suite, dataset=dataset, name=f"{suite.name}-x{level:g}")


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one row per level (fusion-vs-derm verdict and numbers)."""
    lines = [
        "| clinic_extra | planted: clinic adds information | A (best two-image) | Δ avg acc vs single-derm "
        "| 95% CI | p (Holm) | verdict | detected | minutes |",
        "| ---: | :--- | :--- | ---: | ---: | ---: | :--- | :--- | ---: |",
    ]
    for r in rows:
        c = r.get("claim") or {}
        d = c.get("diff") or {}

        def pts(x: Any) -> str:
            return "–" if x is None else f"{100 * x:+.1f}"

        lines.append(
            f"| {r['level']:g} | {'yes' if r.get('planted') else 'no'} | {c.get('a', '–')} | "
            f"{pts(d.get('estimate'))} | [{pts(d.get('low'))}, {pts(d.get('high'))}] | "
            f"{c.get('p_holm', float('nan')):.3g} | {c.get('verdict', 'not run')} | "
            f"{'yes' if c.get('verdict') == 'supported' else 'no'} | {r.get('minutes', float('nan')):.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from ssnbench.config import load
    from ssnbench.driver import run_suite
    from ssnbench.env import pick_device

    ap = argparse.ArgumentParser(prog="python -m ssnbench.calibration", description=__doc__.splitlines()[0])
    ap.add_argument("suite", help="suite YAML (synthetic), e.g. suites/calibration.yaml")
    ap.add_argument("--levels", default=",".join(f"{x:g}" for x in DEFAULT_LEVELS),
                    help="comma-separated clinic_extra levels in [0, 1] (default: %(default)s)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default=None)
    args = ap.parse_args(argv)
    try:
        levels = [float(x) for x in args.levels.split(",") if x.strip()]
    except ValueError:
        print(f"calibration: --levels: expected numbers like 0,0.5,1, got {args.levels!r}", file=sys.stderr)
        return 2
    if not levels or any(not 0 <= x <= 1 for x in levels):
        print(f"calibration: --levels: expected numbers in [0, 1], got {args.levels!r}", file=sys.stderr)
        return 2
    try:
        suite = load(args.suite)
        if suite.dataset.kind != "synthetic":
            raise UserError(f"{args.suite}: calibration needs dataset.kind synthetic (it plants the answer)")
    except UserError as err:
        print(f"calibration: {err}", file=sys.stderr)
        return 2
    device = pick_device(args.device)
    rows = []
    status = 0
    for level in levels:
        s = level_suite(suite, level)
        t0 = time.perf_counter()
        status |= run_suite(s, Path("results") / s.name, Path("reports") / s.name, device)
        summary = json.loads((Path("reports") / s.name / "results.json").read_text())
        claim = next((c for c in summary.get("claims") or [] if c["id"] == "fusion_beats_derm"), None)
        planted = ((summary.get("dataset") or {}).get("synthetic") or {}).get("planted") or {}
        rows.append({"level": level, "claim": claim, "minutes": (time.perf_counter() - t0) / 60,
                     "planted": (planted.get("expected") or {}).get("clinic_adds_information")})
    text = (f"# Calibration: {suite.name}\n\nfusion-vs-derm per planted clinical-informativeness level "
            f"(`python -m ssnbench.calibration {args.suite} --levels {args.levels}`; minutes include "
            "data generation, 0 when a level's results were reused).\n\n" + table(rows))
    out = Path("reports") / suite.name / "calibration.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    print(f"calibration table: {out}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
