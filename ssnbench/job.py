"""One job, wherever it runs: (suite file, job id, out folder) -> its own result file.

Why a separate entry point: a Ray task, a SLURM array task or `python -m ssnbench.job` gets only
these three things, not the driver's objects, and must still produce the same result record as the
in-process loop. The job claims itself in the out folder (ssnbench.launch.claims), opens the data, picks
its device (the driver never touches CUDA), trains through `runner.run_job`, records where it ran
(`record["placement"]`: host, launcher, device, CUDA_VISIBLE_DEVICES, threads, loader workers, how
many jobs of this out folder shared the node) and writes its result atomically before it returns,
so results land even if the driver dies. The local launcher calls `execute` in a loop with one
`Context`, so the data is opened once and a model's profile is measured once, as before.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ssnbench import runner as runner_mod
from ssnbench.config import ModelSpec, Suite
from ssnbench.env import environment, pick_device
from ssnbench.errors import UserError
from ssnbench.launch import claims
from ssnbench.progress import Progress
from ssnbench.results import JobError, ResultRecord, read_result, write_result

if TYPE_CHECKING:  # annotations only (execute imports torch where it uses it, as before)
    import torch

LOGS_DIR = "logs"


@dataclass(frozen=True)
class RunOptions:
    """What the driver passes to every job (plain data: it is pickled to Ray and SLURM workers)."""

    device: str | None = None  # "cpu", "cuda" or None (cuda if the worker sees one)
    cpus_per_run: int | None = None  # torch threads and the cap on DataLoader workers
    force: bool = False
    since: float = 0.0  # driver start (epoch s): a result written after it came from a concurrent run
    launcher: str = "local"
    token: str = field(default_factory=lambda: uuid.uuid4().hex)  # this job's claim token
    # How the driver loaded the suite (`run --set`, `--seeds`, `--models`): a worker re-loads the
    # suite file with the same ones, so every launcher trains exactly the jobs the driver planned.
    overrides: tuple[str, ...] = ()
    only_models: tuple[str, ...] | None = None
    tensorboard: str | None = None  # `run --tensorboard DIR` (absolute: workers have their own cwd)


@dataclass
class Outcome:
    """What a launcher reports back for one job."""

    job: str
    status: str  # "ok" | "failed" | "skipped" (claimed or finished by another run) | "submitted"
    detail: str = ""
    log: str | None = None


def log_path(out: Path, job_id: str) -> Path:
    return Path(out) / LOGS_DIR / f"{job_id}.log"


def find_job(suite: Suite, job_id: str) -> runner_mod.Job:
    jobs = {j.id: j for j in runner_mod.plan(suite)}
    if job_id not in jobs:
        raise UserError(f"{suite.path}: no job {job_id!r} in this suite (jobs: {', '.join(jobs)})")
    return jobs[job_id]


def finished_elsewhere(suite: Suite, job: runner_mod.Job, out: Path, opts: RunOptions) -> bool:
    """After claiming: did another run finish this job meanwhile (so we must not train it again)?"""
    prev, why_rerun = runner_mod.previous_result(suite, job, out, force=False)  # the one resume rule
    if prev is None or why_rerun is not None:
        return False
    if not opts.force:
        return True
    try:  # --force: only a result written during this run
        return runner_mod.result_path(out, job).stat().st_mtime >= opts.since
    except OSError:
        return False


def threads_for(suite: Suite, cpus: int | None, device_type: str) -> tuple[int | None, int | None]:
    """(torch threads, DataLoader workers) for a job given --cpus-per-run (None: the suite's own)."""
    if cpus is None:
        return suite.train.threads, suite.train.num_workers
    default_workers = cpus if device_type == "cuda" else 0
    workers = suite.train.num_workers if suite.train.num_workers is not None else default_workers
    return cpus, min(workers, cpus)


class Context:
    """What the jobs of one process share: the opened data, the environment record, profiles."""

    def __init__(self, suite: Suite, out: Path, device_name: str | None) -> None:
        self.suite, self.out = suite, Path(out)
        self.device = pick_device(device_name)
        self.data: dict[str, runner_mod.Data] = {}  # by resize interpolation (usually one)
        self.env: dict[str, Any] | None = None
        self.profiles: dict[str, dict] = {}

    def open(self, progress: Progress, model: ModelSpec | None = None) -> runner_mod.Data:
        """The datasets resized with `model`'s timm interpolation (opened once per interpolation)."""
        dc = runner_mod.model_data_config(model) if model is not None else {}
        interpolation = str(dc.get("interpolation") or "bicubic")
        if interpolation not in self.data:
            data = runner_mod.open_data(self.suite.dataset, progress, interpolation=interpolation)
            self.data[interpolation] = data
            progress.log(
                f"dataset {data.info['kind']}: splits {data.info['splits']}, "
                f"{self.suite.dataset.image_size}px ({interpolation}), "
                f"border crop {self.suite.dataset.border_crop}px"
            )
            self.env = self.env or environment(self.device).to_dict()
        return self.data[interpolation]

    def reuse_profiles(self, records: list[dict], force: bool) -> None:
        """A profile measured earlier on this device type is reused (one per model, not per seed)."""
        names = {m.name for m in self.suite.models}
        for rec in records:
            p, name = rec.get("profile"), (rec.get("model") or {}).get("name")
            if (
                not force
                and rec.get("status") == "ok"
                and isinstance(p, dict)
                and "error" not in p
                and p.get("device") == self.device.type
                and name in names
                and rec["model"] == self.suite.model(name).to_dict()
            ):
                self.profiles.setdefault(name, p)


def execute(
    job: runner_mod.Job, ctx: Context, opts: RunOptions, progress: Progress, *, log: str | None = None
) -> Outcome:
    """Claim, train, write the result, release. Never trains a job that a live run holds."""
    import torch

    suite, out = ctx.suite, ctx.out
    got = claims.try_claim(out, job.id, token=opts.token, launcher=opts.launcher)
    if not got.ours:
        return Outcome(job.id, "skipped", got.claim.describe(), log)
    try:
        if got.took_over is not None:
            progress.log(f"{job.id}: took over a dead claim ({got.took_over.describe()})")
        for stale in Path(out).glob(f".{job.id}.*.tmp"):  # a killed writer's; we hold the claim now
            stale.unlink(missing_ok=True)
        if finished_elsewhere(suite, job, out, opts):
            return Outcome(job.id, "skipped", "finished by another run meanwhile", log)
        threads, workers = threads_for(suite, opts.cpus_per_run, ctx.device.type)
        threads_before = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        job_suite = replace(suite, train=replace(suite.train, threads=threads, num_workers=workers))
        try:
            with claims.Heartbeat(out, [job.id]) as beat:
                data = ctx.open(progress, job.model)
                profile = ctx.profiles.get(job.model.name)
                record = runner_mod.run_job(
                    job_suite,
                    job,
                    data,
                    device=ctx.device,
                    env=ctx.env or {},
                    profile=profile,
                    progress=progress,
                    out=out,
                    tensorboard=Path(opts.tensorboard) if opts.tensorboard else None,
                    after_fit=end_of_job(job_suite, data, ctx.device),
                )
        finally:
            torch.set_num_threads(threads_before)
        record["train"] = asdict(suite.train)  # the suite's settings; what this job used is below
        used = threads or torch.get_num_threads()
        record["placement"] = placement(
            ctx, opts, threads=used, workers=workers, on_node=beat.max_on_host, log=log
        )
        if record["status"] == "ok" and "error" not in record.get("profile", {}):
            ctx.profiles.setdefault(job.model.name, record["profile"])
        try:
            write_result(runner_mod.result_path(out, job), record)
        except OSError as err:  # e.g. the disk filled up during the job: one line, not a traceback
            raise UserError(
                f"{runner_mod.result_path(out, job)}: cannot write the result file ({err.strerror or err}); "
                "this job's work is lost, the results finished before are kept: free space and run "
                "the same command again"
            ) from None
    finally:
        claims.release(out, job.id, opts.token)
    if record["status"] == "ok":
        m = record["metrics"]
        detail = (
            f"test acc_avg {m['acc_avg']:.4f} (best epoch {record['best_epoch']}, "
            f"{record['timings']['total_seconds']:.0f}s)"
        )
        return Outcome(job.id, "ok", detail, log)
    return Outcome(job.id, "failed", f"{record['error']['type']}: {record['error']['message']}", log)


def end_of_job(
    suite: Suite, data: runner_mod.Data, device: torch.device
) -> Callable[[torch.nn.Module, ResultRecord], None]:
    """The analyses every job runs on its trained model, whichever launcher runs it: modality
    attribution of two-image models (ssnbench.explain.attribution, inference only: three passes over
    the test split) and, with the suite key `robustness`, accuracy under imaging shifts. A failure
    of either is recorded in its entry (`{"error": ...}`) and leaves the job's accuracy result
    standing, as a failed profile does."""

    def after_fit(model: torch.nn.Module, record: ResultRecord) -> None:
        from ssnbench.explain import attribution, robustness

        test = data.datasets["test"]
        kw = {
            "batch_size": suite.train.eval_batch_size or 2 * suite.train.batch_size,
            "amp": suite.train.amp and device.type == "cuda",
        }
        weights = record.inference_weights or {}
        if attribution.is_two_image(model):
            record.attribution = _isolated(attribution.compute, model, test, weights, device, **kw)
        spec = suite.robustness
        if spec.enabled:
            record.robustness = _isolated(
                robustness.evaluate, model, test, weights, device,
                shifts=spec.shifts, severities=spec.severities, seed=spec.seed, **kw,
            )

    return after_fit


def _isolated(fn: Callable[..., dict[str, Any]], *args: Any, **kwargs: Any) -> dict[str, Any]:
    try:
        return fn(*args, **kwargs)
    except Exception as err:  # isolation, as for the profile
        return {"error": f"{type(err).__name__}: {err}"}


def placement(
    ctx: Context, opts: RunOptions, *, threads: int, workers: int | None, on_node: int, log: str | None
) -> dict[str, Any]:
    """Where and how this job ran: the report's 'where jobs ran' table reads this."""
    return {
        "launcher": opts.launcher,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "device": str(ctx.device),
        "device_name": (ctx.env or {}).get("device_name"),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "cpus_per_run": opts.cpus_per_run,
        "torch_threads": threads,
        "num_workers": workers,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "jobs_on_node": on_node,
        "log": log,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
    }


def record_lost(
    suite: Suite,
    job: runner_mod.Job,
    out: Path,
    opts: RunOptions,
    *,
    reason: str,
    log: str | None,
    kind: str = "WorkerLost",
) -> Outcome:
    """The driver's record of a worker that died without writing (crash, OOM kill, timeout).

    Written only when the worker left no result of its own during this run, and the dead worker's
    claim (known by its token) is released so the next run retries the job at once."""
    path = runner_mod.result_path(out, job)
    with contextlib.suppress(OSError):
        if path.stat().st_mtime >= opts.since and read_result(path) is not None:
            prev = read_result(path) or {}
            return Outcome(job.id, str(prev.get("status")), "result written before the worker died", log)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    record = ResultRecord(
        suite=suite.name,
        suite_file=suite.path,
        suite_description=suite.description,
        reference=suite.reference,
        job=job.id,
        job_hash=runner_mod.job_hash(suite, job),
        model_index=job.model_index,
        model=job.model.to_dict(),
        seed=job.seed,
        status="failed",
        error=JobError(kind, f"{reason} (log: {log})" if log else reason),
        train=asdict(suite.train),
        started_at=now,
        finished_at=now,
        placement={"launcher": opts.launcher, "log": log},
    )
    write_result(path, record)
    claims.release(out, job.id, opts.token)
    return Outcome(job.id, "failed", f"{kind}: {reason}", log)


def run_in_worker(suite_file: str, job_id: str, out: str, opts: RunOptions) -> Outcome:
    """The worker's entry point (Ray task, SLURM array task): output goes to `<out>/logs/<job>.log`
    unless the launcher already captures it (`opts` decides nothing here; see `redirect`)."""
    return _worker(suite_file, job_id, out, opts, redirect=True)


def run_in_worker_captured(suite_file: str, job_id: str, out: str, opts: RunOptions) -> Outcome:
    """Same, for launchers that keep their own per-job log files (submitit)."""
    return _worker(suite_file, job_id, out, opts, redirect=False)


def _worker(suite_file: str, job_id: str, out: str, opts: RunOptions, redirect: bool) -> Outcome:
    from ssnbench import config as config_mod

    log = log_path(Path(out), job_id)
    if redirect:
        log.parent.mkdir(parents=True, exist_ok=True)
        fh = open(log, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives as long as the worker
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        sys.stdout = sys.stderr = fh
    suite = config_mod.load(suite_file, overrides=opts.overrides, only_models=opts.only_models)
    job = find_job(suite, job_id)
    ctx = Context(suite, Path(out), opts.device)
    existing = [
        r
        for r in (
            read_result(runner_mod.result_path(Path(out), j)) for j in runner_mod.plan(suite)
        )
        if r is not None
    ]
    ctx.reuse_profiles(existing, opts.force)
    progress = Progress()
    progress.log(f"job {job_id} on {socket.gethostname()} pid {os.getpid()}")
    outcome = execute(job, ctx, opts, progress, log=str(log) if redirect else None)
    progress.log(f"job {job_id}: {outcome.status} {outcome.detail}")
    return outcome


def main(argv: list[str] | None = None) -> int:
    """`python -m ssnbench.job SUITE JOB_ID OUT [--device cpu|cuda|cuda:N] [--cpus-per-run N]
    [--set KEY.PATH=VALUE ...] [--models A,B] [--tensorboard DIR]`: run one job of a suite here (for
    schedulers other than Ray and SLURM), with the same suite options as the `ssnbench run` that
    planned it."""
    import argparse
    import time

    parser = argparse.ArgumentParser(prog="python -m ssnbench.job", description=main.__doc__)
    parser.add_argument("suite")
    parser.add_argument("job_id")
    parser.add_argument("out")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    parser.add_argument("--cpus-per-run", type=int, default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    parser.add_argument("--models", default=None, metavar="A,B")
    parser.add_argument("--tensorboard", default=None, metavar="DIR")
    args = parser.parse_args(argv)
    models = None if args.models is None else tuple(m.strip() for m in args.models.split(",") if m.strip())
    opts = RunOptions(
        device=args.device,
        cpus_per_run=args.cpus_per_run,
        since=time.time(),
        launcher="job",
        overrides=tuple(args.overrides),
        only_models=models,
        tensorboard=str(Path(args.tensorboard).resolve()) if args.tensorboard else None,
    )
    try:
        outcome = _worker(args.suite, args.job_id, args.out, opts, redirect=False)
    except UserError as err:
        print(f"ssnbench: error: {err}", file=sys.stderr)
        return 2
    return 0 if outcome.status in ("ok", "skipped") else 1


if __name__ == "__main__":
    raise SystemExit(main())
