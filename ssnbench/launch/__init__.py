"""Where a suite's jobs run: one small interface, three launchers.

A launcher gets a `LaunchPlan` (the suite, its file, the jobs to run, the out folder, the options
every job gets) and returns one `Outcome` per job (`LaunchPlan` and the `Launcher` protocol live in
ssnbench.launch.base). Each job writes its own result file through ssnbench.job, so a launcher only
decides *where* jobs run and records the ones whose worker died.

- `local` (default): the jobs one after another in this process (ssnbench.launch.local);
- `ray`: one Ray core task per job (ssnbench.launch.ray; extra `ssnbench[ray]`);
- `slurm`: a submitit job array (ssnbench.launch.slurm; extra `ssnbench[slurm]`).

Optional launchers import their engine lazily; a missing one is a one-line `UserError` naming the
pip install, so the base install stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from ssnbench.errors import UserError
from ssnbench.launch.base import Launcher, LaunchPlan

__all__ = ["LAUNCHERS", "LaunchPlan", "Launcher", "add_options", "from_args", "make", "require"]

LAUNCHERS = ("local", "ray", "slurm")
_EXTRA = {"ray": ("ray", "ray"), "slurm": ("submitit", "slurm")}  # launcher -> (module, extra)


def require(launcher: str) -> Any:
    """Import the engine of an optional launcher, or fail with the pip install that provides it."""
    module, extra = _EXTRA[launcher]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(
            f"--launcher {launcher} needs the {module} package: pip install 'ssnbench[{extra}]'"
        ) from None


def make(name: str, **options: Any) -> Launcher:
    """The launcher called `name`, built from its CLI options (unused options must be None)."""
    if name == "local":
        from ssnbench.launch.local import LocalLauncher

        return LocalLauncher(**options)
    if name == "ray":
        require("ray")
        from ssnbench.launch.ray import RayLauncher

        return RayLauncher(**options)
    if name == "slurm":
        require("slurm")
        from ssnbench.launch.slurm import SlurmLauncher

        return SlurmLauncher(**options)
    raise UserError(f"--launcher: unknown launcher {name!r} (choose from {', '.join(LAUNCHERS)})")


def _positive(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _count(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def add_options(parser: Any) -> None:
    """The `ssnbench run` options of the launchers (one block, so cli.py stays one line here)."""
    g = parser.add_argument_group("where jobs run (docs/scale.md)")
    g.add_argument(
        "--launcher",
        choices=LAUNCHERS,
        default="local",
        help="local: one after another in this process (default); ray: Ray tasks; "
        "slurm: a submitit job array",
    )
    g.add_argument(
        "--cpus-per-run",
        type=_positive,
        default=None,
        help="CPU threads per job (torch threads; caps DataLoader workers); ray/slurm default 1",
    )
    g.add_argument(
        "--gpus-per-run",
        type=_count,
        default=None,
        help="GPUs per job (ray/slurm; default 1 when CUDA is used, else 0)",
    )
    g.add_argument(
        "--max-parallel",
        type=_positive,
        default=None,
        help="ray: at most this many jobs at once (default: as many as the resources allow)",
    )
    g.add_argument(
        "--ray-address",
        default=None,
        metavar="auto|HOST:PORT",
        help="ray: join this cluster (default: start one on this machine, shut it down after)",
    )
    g.add_argument("--slurm-partition", default=None, help="slurm: partition to submit to")
    g.add_argument(
        "--slurm-timeout-min",
        type=_positive,
        default=60,
        help="slurm: time limit per job in minutes (default: 60)",
    )
    g.add_argument(
        "--slurm-array-parallelism",
        type=_positive,
        default=None,
        help="slurm: at most this many array tasks at once",
    )
    g.add_argument(
        "--slurm-setup",
        action="append",
        default=None,
        metavar="LINE",
        help="slurm: shell line run before each job (repeatable), e.g. 'module load cuda'",
    )
    g.add_argument(
        "--no-wait",
        action="store_true",
        help="slurm: submit and return; run again to re-attach, `ssnbench report` when done",
    )


def from_args(args: Any) -> Launcher:
    """The launcher the `run` options ask for; options of another launcher are a user error."""
    name = args.launcher
    foreign = {
        "--max-parallel": (args.max_parallel, "ray"),
        "--ray-address": (args.ray_address, "ray"),
        "--slurm-partition": (args.slurm_partition, "slurm"),
        "--slurm-array-parallelism": (args.slurm_array_parallelism, "slurm"),
        "--slurm-setup": (args.slurm_setup, "slurm"),
        "--no-wait": (args.no_wait or None, "slurm"),
        "--gpus-per-run": (args.gpus_per_run, "ray or slurm"),
    }
    for flag, (value, owner) in foreign.items():
        if value is not None and name not in owner:
            raise UserError(f"{flag} applies to --launcher {owner}, not --launcher {name}")
    if name == "ray":
        return make(
            "ray", address=args.ray_address, max_parallel=args.max_parallel, gpus_per_run=args.gpus_per_run
        )
    if name == "slurm":
        return make(
            "slurm",
            partition=args.slurm_partition,
            timeout_min=args.slurm_timeout_min,
            array_parallelism=args.slurm_array_parallelism,
            setup=args.slurm_setup or [],
            no_wait=args.no_wait,
            gpus_per_run=args.gpus_per_run,
        )
    return make("local")
