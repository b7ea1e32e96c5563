"""The driver of `ssnbench run`: pre-flight, hand the unfinished jobs to a launcher, write the report.

Why a module of its own: the launchers run jobs through ssnbench.job, which trains through the
runner; the driver calls the launchers. Kept in runner.py, the driver made runner, job and the
launchers import each other. Now the order is one way: driver -> launch -> job -> runner.
Which jobs are unfinished (and why a finished one re-runs) is the runner's `triage`, shared with
`run --dry-run`.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

# Before anything here loads torch (and OpenMP with it), as at the top of runner.py: idle OpenMP
# threads sleep instead of spinning (3-4x slower CPU training on a small shared machine otherwise).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

from ssnbench import config as config_mod
from ssnbench import launch
from ssnbench.config import Suite
from ssnbench.data.cache import cache_root
from ssnbench.env import pick_device
from ssnbench.errors import UserError
from ssnbench.job import RunOptions
from ssnbench.launch import LaunchPlan, claims
from ssnbench.launch.local import LocalLauncher
from ssnbench.preflight import Flight, run_preflight
from ssnbench.progress import Progress, make_progress
from ssnbench.results import read_result
from ssnbench.runner import Job, keep_aside, result_path, triage
from ssnbench.tracking import check_tensorboard


def run_suite(
    suite: Suite,
    out: Path,
    report_dir: Path | None,
    device: torch.device | str | None,
    force: bool = False,
    progress: Progress | None = None,
    launcher: Any = None,
    cpus_per_run: int | None = None,
    *,
    preflight: bool = True,
    labels: tuple[str, str] = ("--out", "--report-dir"),
    tensorboard: Path | None = None,
) -> int:
    """Run every unfinished job through `launcher` (default: the local loop), then write the
    report. Returns 0, or 1 when some job failed. `device` is a name ("cpu", "cuda", None) for
    launchers whose workers pick their own device: the driver never initialises CUDA.

    The pre-flight (preflight.py) runs first: a failed check raises one UserError line before
    anything is written. `labels` name the results and report folders in its messages.
    """
    progress = progress or Progress()
    if tensorboard is not None:
        check_tensorboard()
    jobs, todo, existing, replacing = triage(suite, out, force)

    if preflight:
        run_preflight(
            Flight(
                suite,
                out,
                report_dir,
                cache_root(),
                device.type if isinstance(device, torch.device) else str(device or "cpu").split(":")[0],
                todo,
                out_label=labels[0],
                report_label=labels[1],
            )
        )
    threads_before = torch.get_num_threads()
    if isinstance(device, torch.device) and device.type == "cpu":
        torch.set_num_threads(suite.train.threads or max(1, min(8, os.cpu_count() or 1)))
    try:
        return _run(
            suite,
            jobs=jobs,
            todo=todo,
            existing=existing,
            out=out,
            report_dir=report_dir,
            device=device,
            force=force,
            progress=progress,
            launcher=launcher,
            cpus_per_run=cpus_per_run,
            replacing=replacing,
            tensorboard=tensorboard,
        )
    finally:
        torch.set_num_threads(threads_before)  # the process (a test session) keeps its setting


def _run(
    suite: Suite,
    *,
    jobs: list[Job],
    todo: list[Job],
    existing: dict[str, dict],
    out: Path,
    report_dir: Path | None,
    device: torch.device | str | None,
    force: bool,
    progress: Progress,
    launcher: Any,
    cpus_per_run: int | None,
    replacing: dict[str, str] | None = None,
    tensorboard: Path | None = None,
) -> int:
    """The suite proper (jobs already split into done and to-do by `run_suite`): skip the jobs a
    live run has claimed, hand the rest to the launcher, then report on every result file."""
    launcher = launcher or LocalLauncher()
    if isinstance(launcher, LocalLauncher):
        launcher.existing = list(existing.values())
    with progress:
        progress.suite_start(suite.name, len(jobs), len(todo))
        held = []
        for job in todo:
            claim = claims.live_claim(out, job.id)
            if claim is not None:
                progress.log(f"{job.id}: skipped, {claim.describe()}; still running there")
                held.append(job)
        todo = [j for j in todo if j not in held]
        for job in todo:  # files a rerun replaces are kept aside, never overwritten (keep_aside)
            if job.id in (replacing or {}):
                progress.log(f"{result_path(out, job)}: {replacing[job.id]}; re-running it")
                for src, dest in keep_aside(out, job):
                    progress.log(f"{src}: moved aside to {dest.name} (the re-run writes a new one)")
        outcomes = []
        if todo:
            dev = None if device is None else str(device)
            opts = RunOptions(
                device=dev,
                cpus_per_run=cpus_per_run,
                force=force,
                since=time.time(),
                launcher=launcher.name,
                overrides=suite.overrides,  # a worker re-loads the suite file: same --set, same --models
                only_models=suite.only_models,
                tensorboard=None if tensorboard is None else str(Path(tensorboard).resolve()),
            )
            outcomes = launcher.run(LaunchPlan(suite, suite.path, todo, out, opts), progress)
        skipped = [o for o in outcomes if o.status == "skipped"]  # each said so as it ended
        records = [r for r in (read_result(result_path(out, j)) for j in jobs) if r is not None]
        failed = [r for r in records if r.get("status") != "ok"]
        if report_dir is not None and records:
            from ssnbench.report import write_report  # not at the top: most runs import no matplotlib

            try:
                path = write_report(records, report_dir, out)
            except OSError as err:
                raise UserError(
                    f"{report_dir}: cannot write the report ({err.strerror or err}); the results are "
                    f"complete in {out}: free space, then `ssnbench report {out}`"
                ) from None
            progress.log(f"report: {path}")
        if failed:
            progress.log(f"{len(failed)} of {len(jobs)} jobs failed: " + ", ".join(r["job"] for r in failed))
        pending = len(held) + len(skipped) + sum(o.status == "submitted" for o in outcomes)
        if pending:
            progress.log(
                f"{pending} of {len(jobs)} jobs still running elsewhere or queued; when they finish, "
                f"`ssnbench report {out}` (or run again) completes the report"
            )
    return 1 if failed else 0


def cli_run(args: Any) -> int:
    seeds = getattr(args, "seeds", None)
    overrides = list(getattr(args, "overrides", None) or [])
    if seeds is not None:
        overrides.append(f"seeds={list(seeds)}")
    where = getattr(args, "launcher", "local")
    if where != "local" and args.device not in (None, "cpu", "cuda"):
        # the driver does not touch CUDA, so only the name is checked here; an index would pick a
        # GPU of the worker's own node, where the scheduler already chose (CUDA_VISIBLE_DEVICES)
        raise UserError(
            f"--device {args.device}: with --launcher {where} use cpu or cuda (each worker gets "
            "its GPUs from the scheduler; cuda:N picks a GPU of this machine with --launcher local)"
        )
    launcher = launch.from_args(args)
    suite = config_mod.load(args.suite, overrides=overrides, only_models=getattr(args, "models", None))
    out = Path(args.out) if args.out else Path("results") / suite.name
    report_dir = Path(args.report_dir) if getattr(args, "report_dir", None) else Path("reports") / suite.name
    labels = (
        "--out" if args.out else "results folder",
        "--report-dir" if getattr(args, "report_dir", None) else "report folder",
    )
    if getattr(args, "dry_run", False):
        from ssnbench.dryrun import print_plan

        return print_plan(suite, out, pick_device(args.device), force=args.force)
    tensorboard = Path(args.tensorboard) if getattr(args, "tensorboard", None) else None
    # Only the local launcher trains here; the others' workers pick their device (and the driver
    # never initialises CUDA).
    device = pick_device(args.device) if launcher.name == "local" else args.device
    cpus = args.cpus_per_run if launcher.name == "local" or args.cpus_per_run else 1
    t0 = time.perf_counter()
    progress = make_progress()
    code = run_suite(
        suite, out, report_dir, device, force=args.force, progress=progress, launcher=launcher,
        cpus_per_run=cpus, labels=labels, tensorboard=tensorboard,
    )
    progress.log(f"suite {suite.name} finished in {time.perf_counter() - t0:.0f}s; results in {out}")
    sys.stdout.flush()
    return code
