"""What every launcher shares: the plan it gets and the one method it has.

Why a module of its own: the launchers (local.py, ray.py, slurm.py) need these two names and the
package's `make()` imports the launchers, so keeping them in `__init__` made each launcher and the
package import each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ssnbench.config import Suite
    from ssnbench.job import Outcome, RunOptions
    from ssnbench.progress import Progress
    from ssnbench.runner import Job


@dataclass
class LaunchPlan:
    suite: Suite
    suite_file: str
    jobs: list[Job]
    out: Path
    opts: RunOptions


class Launcher(Protocol):
    name: str

    def run(self, plan: LaunchPlan, progress: Progress) -> list[Outcome]:
        """Run (or submit) every job of the plan; one outcome per job."""
        ...
