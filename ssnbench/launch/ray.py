"""The Ray launcher: one Ray core task per job (extra `ssnbench[ray]`).

Why Ray core tasks and not Ray Tune: a suite is a fixed list of independent runs with their own
result files and resume logic; all we need from Ray is placement (a GPU and N CPUs per job, on any
node) and process isolation. Each task asks for `num_gpus=--gpus-per-run` and
`num_cpus=--cpus-per-run`, runs in a fresh worker process (`max_calls=1`: CUDA state, leaked
memory and thread settings never carry over to the next job) and is never retried by Ray
(`max_retries=0`): a job that fails is recorded and retried by the next `ssnbench run`, like any
other. Ray gives each task its own CUDA_VISIBLE_DEVICES and sets OMP_NUM_THREADS to its CPUs.

Without `--ray-address` a local cluster is started on this machine's CPUs and GPUs and shut down
at the end; with it (`auto` or HOST:PORT) the driver joins that cluster, whose nodes must see the
suite file and the out folder at the same paths (a shared filesystem).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from ssnbench import job as job_mod
from ssnbench.errors import UserError
from ssnbench.job import Outcome
from ssnbench.launch.base import LaunchPlan
from ssnbench.progress import Progress

POLL_S = 1.0


class RayLauncher:
    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        max_parallel: int | None = None,
        gpus_per_run: int | None = None,
        init_kwargs: dict[str, Any] | None = None,
        entry: Any = None,
    ) -> None:
        self.address = address
        self.max_parallel = max_parallel
        self.gpus_per_run = gpus_per_run
        self.init_kwargs = init_kwargs or {}  # tests: num_cpus, num_gpus, object_store_memory
        self.entry = entry or job_mod.run_in_worker
        self.startup_seconds: float | None = None

    def _gpus(self, device: str | None, cluster: dict[str, float]) -> int:
        if self.gpus_per_run is not None:
            return self.gpus_per_run
        have = cluster.get("GPU", 0)
        if device is not None and device.startswith("cuda"):
            if not have:
                raise UserError("--device cuda: the Ray cluster has no GPU (use --device cpu)")
            return 1
        return 1 if have and device is None else 0

    def run(self, plan: LaunchPlan, progress: Progress) -> list[Outcome]:
        import ray

        t0 = time.perf_counter()
        from ssnbench.data.cache import cache_root

        env = {"SSNBENCH_CACHE": str(cache_root().resolve())}  # one cache per node, whatever the cwd
        kwargs: dict[str, Any] = {"include_dashboard": False, "runtime_env": {"env_vars": env}}
        kwargs.update(self.init_kwargs)
        if self.address:
            kwargs["address"] = self.address
        try:
            ray.init(**kwargs)
        except ConnectionError as err:
            raise UserError(f"--ray-address {self.address}: cannot connect ({err})") from None
        try:
            self.startup_seconds = time.perf_counter() - t0
            cluster = ray.cluster_resources()
            where = f"cluster at {self.address}" if self.address else "local cluster"
            progress.log(
                f"ray: {where} up in {self.startup_seconds:.1f}s "
                f"({cluster.get('CPU', 0):g} CPUs, {cluster.get('GPU', 0):g} GPUs)"
            )
            return self._run(ray, plan, progress, cluster)
        finally:
            ray.shutdown()  # disconnects from a joined cluster; stops the one we started

    def _run(
        self, ray: Any, plan: LaunchPlan, progress: Progress, cluster: dict[str, float]
    ) -> list[Outcome]:
        opts = plan.opts
        cpus = opts.cpus_per_run or 1
        gpus = self._gpus(opts.device, cluster)
        if cpus > cluster.get("CPU", 0) or gpus > cluster.get("GPU", 0):
            raise UserError(
                f"ray: a job asks for {cpus} CPUs and {gpus} GPUs but the cluster has "
                f"{cluster.get('CPU', 0):g} CPUs and {cluster.get('GPU', 0):g} GPUs "
                "(lower --cpus-per-run/--gpus-per-run)"
            )
        task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_calls=1, max_retries=0)(self.entry)
        suite_file, out = str(Path(plan.suite_file).resolve()), str(Path(plan.out).resolve())
        queue = list(plan.jobs)
        running: dict[Any, tuple[Any, job_mod.RunOptions]] = {}
        outcomes: list[Outcome] = []
        limit = self.max_parallel or len(queue)
        done_n = 0
        while queue or running:
            while queue and len(running) < limit:
                job = queue.pop(0)
                jopts = job_mod.RunOptions(
                    **{**opts.__dict__, "token": os.urandom(16).hex(), "cpus_per_run": cpus}
                )
                ref = task.remote(suite_file, job.id, out, jopts)
                running[ref] = (job, jopts)
                progress.log(f"job {job.id}: submitted ({cpus} CPU, {gpus} GPU)")
            ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_S)
            for ref in ready:
                job, jopts = running.pop(ref)
                log = str(job_mod.log_path(plan.out, job.id))
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayError as err:
                    # a Python error raised outside the job's own isolation, or a dead worker
                    kind = "JobError" if isinstance(err, ray.exceptions.RayTaskError) else "WorkerLost"
                    outcome = job_mod.record_lost(
                        plan.suite, job, plan.out, jopts, reason=_reason(err), log=log, kind=kind
                    )
                done_n += 1
                status = "FAILED" if outcome.status == "failed" else outcome.status
                progress.job_end(job.id, status, f"{outcome.detail} [{done_n}/{len(plan.jobs)}; log {log}]")
                outcomes.append(outcome)
        return outcomes


def _reason(err: Exception) -> str:
    """One line for a task that ended without a result (worker crash, OOM kill, task error)."""
    text = str(err).strip().splitlines() or [type(err).__name__]
    first = next((line for line in text if line.strip()), type(err).__name__)
    return f"{type(err).__name__}: {first.strip()[:300]}"
