"""The local launcher: the jobs one after another in this process (the default, as before).

One `Context` for the whole suite: the data is opened once and a model's profile measured once.
"""

from __future__ import annotations

from ssnbench.job import Context, Outcome, execute
from ssnbench.launch.base import LaunchPlan
from ssnbench.progress import Progress


class LocalLauncher:
    name = "local"

    def __init__(self, existing: list[dict] | None = None) -> None:
        self.existing = existing or []

    def run(self, plan: LaunchPlan, progress: Progress) -> list[Outcome]:
        ctx = Context(plan.suite, plan.out, plan.opts.device)
        ctx.reuse_profiles(self.existing, plan.opts.force)
        outcomes = []
        for n, job in enumerate(plan.jobs, 1):
            progress.job_start(n, len(plan.jobs), job.id, plan.suite.train.epochs)
            outcome = execute(job, ctx, plan.opts, progress)
            progress.job_end(
                job.id,
                outcome.status.upper() if outcome.status == "failed" else outcome.status,
                outcome.detail,
            )
            outcomes.append(outcome)
        return outcomes
