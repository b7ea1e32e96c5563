"""`ssnbench run SUITE --dry-run`: what a run would do, without training anything.

Prints the jobs to run and to skip (and why), the weights each model would load, parameters and
GMACs per model (fvcore multiply-adds at batch 1, the report's convention), and an estimate of the
time to train, when an earlier result of the same model on the same device (same device name) is
in the results folder: its measured seconds per epoch times this suite's epochs. No estimate is
invented when there is no such measurement.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ssnbench.config import ModelSpec, Suite
from ssnbench.errors import UserError

__all__ = ["estimate_seconds", "print_plan"]


def _model_cost(spec: ModelSpec, image_size: int) -> dict[str, Any]:
    from ssnbench import profiling
    from ssnbench.checkpoint import rebuild_options
    from ssnbench.models.registry import build_model

    model = build_model(spec.arch, **rebuild_options(spec.to_dict()))  # shapes only: no weights needed
    macs = profiling.gmacs_report(model, image_size)
    return {"params": profiling.count_parameters(model)["total"], "gmacs": macs.get("gmacs")}


def _same_device(a: str | None, b: str) -> bool:
    """Device names equal up to the CPU thread count a run set (`CPU: X (1 threads)`)."""
    import re

    def strip(name: str) -> str:
        return re.sub(r" \(\d+ threads\)$", "", name)

    return a is not None and strip(a) == strip(b)


def estimate_seconds(records: list[dict], model: str, device_name: str, epochs: int) -> float | None:
    """Seconds per job for `model`: mean measured seconds per epoch of its earlier ok runs on a
    device of the same name, times `epochs`, plus their mean test time; None without such runs."""
    per_epoch, test = [], []
    for r in records:
        if (
            r.get("status") == "ok"
            and (r.get("model") or {}).get("name") == model
            and _same_device((r.get("environment") or {}).get("device_name"), device_name)
            and r.get("history")
        ):
            seconds = [float(h.get("seconds", 0.0)) for h in r["history"]]
            per_epoch.append(sum(seconds) / len(seconds))
            test.append(float((r.get("timings") or {}).get("test_seconds", 0.0)))
    if not per_epoch:
        return None
    return epochs * sum(per_epoch) / len(per_epoch) + sum(test) / len(test)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def print_plan(suite: Suite, out: Path, device: torch.device, force: bool = False) -> int:
    """Print the plan; 0, or 2 when some model's pretrained weights cannot be had (as a run would)."""
    from rich.console import Console
    from rich.table import Table

    from ssnbench.env import environment
    from ssnbench.launch import claims
    from ssnbench.preflight import weights_plan
    from ssnbench.runner import triage

    console = Console(width=140)
    jobs, todo, existing, replacing = triage(suite, out, force)
    held = {j.id: c.describe() for j in todo if (c := claims.live_claim(out, j.id)) is not None}
    todo = [j for j in todo if j.id not in held]
    device_name = environment(device).to_dict()["device_name"]
    console.print(
        f"suite {suite.name} ({suite.path}): {len(jobs)} jobs, {len(todo)} to run, "
        f"{len(jobs) - len(todo)} to skip; results in {out}; device {device} ({device_name})"
    )
    if suite.overrides:
        console.print("overrides: " + " ".join(f"--set {o}" for o in suite.overrides))

    weights_error = None
    try:
        weights = {w["model"]: w for w in weights_plan(suite, todo)}
    except UserError as err:
        weights, weights_error = {}, str(err)

    records = list(existing.values())
    if out.is_dir():
        from ssnbench.results import scan_results

        records = scan_results(out)[0]  # every earlier run here, also of models not in this plan
    models = Table(title="models", title_justify="left")
    for col in ("model", "arch", "backbone", "weights", "params (M)", "GMACs", "est. per job"):
        models.add_column(col, justify="right" if col in ("params (M)", "GMACs", "est. per job") else "left")
    estimates: dict[str, float | None] = {}
    for spec in suite.models:
        cost = _model_cost(spec, suite.dataset.image_size)
        estimates[spec.name] = estimate_seconds(records, spec.name, device_name, suite.train.epochs)
        w = weights.get(spec.name) or {}
        models.add_row(
            spec.name,
            spec.arch,
            str(spec.options.get("backbone", "(default)")),
            str(
                w.get("tag") or w.get("source")
                or ("?" if weights_error else "random init" if w else "- (no job to run)")
            ),
            f"{cost['params'] / 1e6:.2f}",
            "n/a" if cost["gmacs"] is None else f"{cost['gmacs']:.2f}",
            _duration(estimates[spec.name]),
        )
    console.print(models)

    plan = Table(title="jobs (seed-major order)", title_justify="left")
    for col in ("job", "action", "why"):
        plan.add_column(col)
    for job in jobs:
        if job.id in held:
            action, why = "skip", f"running elsewhere: {held[job.id]}"
        elif job in todo:
            action, why = "run", replacing.get(job.id, "no result yet")
        else:
            action, why = "skip", "result exists (same suite entry)"
        plan.add_row(job.id, action, why)
    console.print(plan)
    known = [estimates[j.model.name] for j in todo]
    if todo and all(e is not None for e in known):
        console.print(f"estimated training time: {_duration(sum(known))} (from earlier runs on this device)")
    elif todo:
        console.print(
            "estimated training time: n/a for models without an earlier run on this device "
            f"({', '.join(sorted({j.model.name for j in todo if estimates[j.model.name] is None}))})"
        )
    if weights_error:
        console.print(f"[bold red]weights:[/] {weights_error}")
        return 2
    return 0
