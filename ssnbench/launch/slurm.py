"""The SLURM launcher: one submitit job array of 1-GPU jobs (extra `ssnbench[slurm]`).

Run from the login node: the driver only submits and watches (no CUDA, no training). Each array
task calls ssnbench.job in the same venv on a shared filesystem and writes its own result, so the
driver may stop at any time: `--no-wait` submits and returns, and a later `ssnbench run` on the
same `--out` re-attaches to the jobs still pending or running (their SLURM ids are kept in
`<out>/.slurm/submitted.json`) and submits only the rest. submitit's folder `<out>/.slurm/` holds
each task's stdout/stderr, which a failed job's record points to.

`SSNBENCH_SUBMITIT_CLUSTER=local` (or `debug`) swaps SLURM for submitit's local executor (one
process per job on this machine, same code path): the tests use it, and so can a user trying the
launcher without a cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from ssnbench import job as job_mod
from ssnbench import runner as runner_mod
from ssnbench.errors import UserError
from ssnbench.job import Outcome
from ssnbench.kernels import knobs
from ssnbench.launch import claims
from ssnbench.launch.base import LaunchPlan
from ssnbench.progress import Progress
from ssnbench.results import read_result, write_json_atomic

POLL_S = 2.0
ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED", "UNKNOWN"}
STATE_FILE = "submitted.json"


def folder_of(out: Path) -> Path:
    return Path(out).resolve() / ".slurm"


class SlurmLauncher:
    name = "slurm"

    def __init__(
        self,
        partition: str | None = None,
        timeout_min: int = 60,
        array_parallelism: int | None = None,
        setup: list[str] | None = None,
        no_wait: bool = False,
        gpus_per_run: int | None = None,
        cluster: str | None = None,
        entry: Any = None,
    ) -> None:
        self.partition, self.timeout_min = partition, timeout_min
        self.array_parallelism, self.setup = array_parallelism, list(setup or [])
        self.no_wait, self.gpus_per_run = no_wait, gpus_per_run
        # SSNBENCH_SUBMITIT_CLUSTER: which submitit backend stands in for SLURM (tests, a laptop).
        self.cluster = cluster or knobs.current().submitit_cluster
        if self.cluster not in ("slurm", "local", "debug"):
            raise UserError(f"SSNBENCH_SUBMITIT_CLUSTER={self.cluster!r}: expected slurm, local or debug")
        if self.cluster == "slurm" and shutil.which("sbatch") is None:
            raise UserError("--launcher slurm: sbatch not found; run on the cluster's login node")
        self.entry = entry or job_mod.run_in_worker_captured

    # -- submission record: which SLURM job runs which suite job --------------------------------

    def _load(self, out: Path) -> dict[str, dict]:
        with contextlib.suppress(OSError, ValueError):
            data = json.loads((folder_of(out) / STATE_FILE).read_text(encoding="utf-8"))
            if isinstance(data, dict):
                return data
        return {}

    def _save(self, out: Path, state: dict[str, dict]) -> None:
        write_json_atomic(folder_of(out) / STATE_FILE, state)

    def _job(self, submitit: Any, out: Path, rec: dict) -> Any:
        if self.cluster == "slurm":
            return submitit.SlurmJob(folder=folder_of(out), job_id=rec["id"])
        return submitit.LocalJob(folder=folder_of(out), job_id=rec["id"])

    def _active(self, submitit: Any, out: Path, rec: dict) -> bool:
        """Still pending or running? SLURM: sacct's state; local executor: the controller pid."""
        if rec.get("cluster") != self.cluster:
            return False
        if self.cluster == "slurm":
            return str(self._job(submitit, out, rec).state).split()[0] in ACTIVE
        if self.cluster == "debug":
            return False  # runs inside the driver: never outlives it
        return _local_running(rec["id"])

    # -- run ------------------------------------------------------------------------------------

    def run(self, plan: LaunchPlan, progress: Progress) -> list[Outcome]:
        import submitit

        out = Path(plan.out)
        state = self._load(out)
        watch: dict[str, tuple[Any, dict]] = {}
        fresh = []
        for job in plan.jobs:
            rec = state.get(job.id)
            if rec is not None and self._active(submitit, out, rec):
                watch[job.id] = (self._job(submitit, out, rec), rec)
                progress.log(
                    f"job {job.id}: re-attached to {self.cluster} job {rec['id']} (still queued/running)"
                )
            else:
                fresh.append(job)
        if fresh:
            jobs = self._submit(submitit, plan, fresh)
            for job, (sjob, rec) in zip(fresh, jobs, strict=True):
                state[job.id] = rec
                watch[job.id] = (sjob, rec)
            self._save(out, state)
            ids = sorted({str(r["id"]).split("_")[0] for _, r in jobs})
            progress.log(
                f"submitted {len(fresh)} jobs to {self.cluster} (job ids {', '.join(ids)}); "
                f"logs in {folder_of(out)}"
            )
        if self.no_wait:
            progress.log(
                f"--no-wait: run the same command again to re-attach, or `ssnbench report {out}` "
                "once they finish"
            )
            return [Outcome(j, "submitted", f"{self.cluster} job {r['id']}") for j, (_, r) in watch.items()]
        return self._wait(plan, watch, progress)

    def _submit(self, submitit: Any, plan: LaunchPlan, jobs: list) -> list[tuple[Any, dict]]:
        opts = plan.opts
        gpus = self.gpus_per_run
        if gpus is None:
            gpus = 0 if (opts.device == "cpu" or self.cluster != "slurm") else 1
        cpus = opts.cpus_per_run or 1
        executor = submitit.AutoExecutor(folder=folder_of(plan.out), cluster=self.cluster)
        params: dict[str, Any] = {
            "timeout_min": self.timeout_min,
            "cpus_per_task": cpus,
            "gpus_per_node": gpus,
            "tasks_per_node": 1,
            "nodes": 1,
            "name": f"ssnbench-{plan.suite.name}",
        }
        if self.cluster == "slurm":
            params.update(slurm_setup=self.setup)
            if self.partition:
                params["slurm_partition"] = self.partition
            if self.array_parallelism:
                params["slurm_array_parallelism"] = self.array_parallelism
        elif self.cluster == "local":
            params["local_setup"] = self.setup
        executor.update_parameters(**params)
        suite_file, out = str(Path(plan.suite_file).resolve()), str(Path(plan.out).resolve())
        submitted_at = time.time()
        all_opts = [
            job_mod.RunOptions(
                **{**opts.__dict__, "token": os.urandom(16).hex(), "launcher": "slurm", "cpus_per_run": cpus}
            )
            for _ in jobs
        ]
        with executor.batch():
            sjobs = [
                executor.submit(self.entry, suite_file, j.id, out, o)
                for j, o in zip(jobs, all_opts, strict=True)
            ]
        return [
            (
                s,
                {
                    "id": str(s.job_id),
                    "cluster": self.cluster,
                    "submitted_at": submitted_at,
                    "token": o.token,
                    "since": opts.since,
                },
            )
            for s, o in zip(sjobs, all_opts, strict=True)
        ]

    def _wait(
        self, plan: LaunchPlan, watch: dict[str, tuple[Any, dict]], progress: Progress
    ) -> list[Outcome]:
        by_id = {j.id: j for j in plan.jobs}
        outcomes: list[Outcome] = []
        while watch:
            for job_id, (sjob, rec) in list(watch.items()):
                if not self._finished(sjob, rec):
                    continue
                del watch[job_id]
                outcomes.append(self._outcome(plan, by_id[job_id], sjob, rec))
                o = outcomes[-1]
                progress.job_end(
                    job_id,
                    "FAILED" if o.status == "failed" else o.status,
                    f"{o.detail} [{len(outcomes)}/{len(plan.jobs)}]",
                )
            if watch:
                time.sleep(POLL_S)
        return outcomes

    def _finished(self, sjob: Any, rec: dict) -> bool:
        if self.cluster == "debug":  # submitit's DebugJob runs in this process when asked for its result
            with contextlib.suppress(Exception):
                sjob.result()
            return True
        if self.cluster == "local" and getattr(sjob, "_process", None) is None:  # re-attached
            return not _local_running(rec["id"])
        return bool(sjob.done())

    def _outcome(self, plan: LaunchPlan, job: Any, sjob: Any, rec: dict) -> Outcome:
        """The job's own result if it wrote one during this submission; else a failed record."""
        log = str(sjob.paths.stderr)
        path = runner_mod.result_path(plan.out, job)
        with contextlib.suppress(OSError):
            if path.stat().st_mtime >= rec["submitted_at"]:
                record = read_result(path) or {}
                if record.get("status") == "ok":
                    m = record.get("metrics", {})
                    return Outcome(job.id, "ok", f"test acc_avg {m.get('acc_avg', float('nan')):.4f}", log)
                if record:
                    err = record.get("error") or {}
                    return Outcome(job.id, "failed", f"{err.get('type')}: {err.get('message')}", log)
        reason = _why(sjob)
        opts = job_mod.RunOptions(
            **{**plan.opts.__dict__, "token": rec["token"], "launcher": "slurm", "since": rec["submitted_at"]}
        )
        try:
            result = sjob.result()
        except Exception:  # the reason is read from the job below
            result = None
        if isinstance(result, Outcome) and result.status == "skipped":
            return Outcome(job.id, "skipped", result.detail, log)
        return job_mod.record_lost(plan.suite, job, plan.out, opts, reason=reason, log=log)


def _local_running(job_id: str) -> bool:
    """A local-executor job's id is its controller's pid: is that process still running?"""
    try:
        return claims.pid_alive(int(job_id))
    except ValueError:
        return False


def _why(sjob: Any) -> str:
    """The scheduler's or Python's one-line reason for a job that left no result."""
    try:
        err = sjob.exception()
    except Exception as e:  # e.g. no result pickle at all (killed, timed out)
        err = e
    state = ""
    with contextlib.suppress(Exception):
        state = str(sjob.state)
    if err is None:
        return f"job ended ({state or 'unknown state'}) without a result"
    lines = [ln for ln in str(err).strip().splitlines() if ln.strip()]
    tail = lines[-1].strip()[:300] if lines else type(err).__name__
    return f"{state + ': ' if state else ''}{tail}"
