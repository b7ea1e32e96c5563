"""Progress for a suite run: rich bars (suite, job, epochs) on a terminal, plain log lines otherwise
(CI logs and `| tee` stay readable, and nothing redraws into a file)."""

from __future__ import annotations

import sys
import time
from typing import Any


class Progress:
    """Plain-line reporter; `RichProgress` overrides the display on a TTY."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stdout
        self.t0 = time.perf_counter()

    def _stamp(self) -> str:
        s = int(time.perf_counter() - self.t0)
        return f"[{s // 60:3d}:{s % 60:02d}]"

    def log(self, message: str) -> None:
        print(f"{self._stamp()} {message}", file=self.stream, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def suite_start(self, name: str, jobs: int, todo: int) -> None:
        self.log(f"suite {name}: {jobs} jobs, {todo} to run, {jobs - todo} already done")

    def job_start(self, index: int, total: int, job: str, epochs: int) -> None:
        self.log(f"job {index}/{total} {job}: training {epochs} epochs")

    def epoch_end(self, job: str, row: dict[str, float], epochs: int) -> None:
        done = int(row["epoch"])
        self.log(
            f"  {job} epoch {done}/{epochs} train_loss {row['train_loss']:.4f} "
            f"valid_acc_avg {row['valid_acc_avg']:.4f} ({row['seconds']:.1f}s, "
            f"job ETA {_eta(row['seconds'] * (epochs - done))})"
        )

    def job_end(self, job: str, status: str, detail: str) -> None:
        self.log(f"job {job}: {status} {detail}")


def _eta(seconds: float) -> str:
    s = max(0, int(round(seconds)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class RichProgress(Progress):
    """Live bars for the suite and the current job's epochs; messages print above them."""

    def __init__(self) -> None:
        super().__init__()
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as Bars

        self.console = Console(log_path=False)
        self.bars = Bars(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.suite_task: Any = None
        self.job_task: Any = None

    def log(self, message: str) -> None:
        self.console.log(message)

    def __enter__(self) -> RichProgress:
        self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.stop()

    def suite_start(self, name: str, jobs: int, todo: int) -> None:
        super().suite_start(name, jobs, todo)
        self.suite_task = self.bars.add_task(f"suite {name}", total=jobs, completed=jobs - todo, info="")

    def job_start(self, index: int, total: int, job: str, epochs: int) -> None:
        if self.job_task is not None:
            self.bars.remove_task(self.job_task)
        self.job_task = self.bars.add_task(f"  {job}", total=epochs, info="")

    def epoch_end(self, job: str, row: dict[str, float], epochs: int) -> None:
        self.bars.update(
            self.job_task,
            advance=1,
            info=f"loss {row['train_loss']:.3f} valid acc {row['valid_acc_avg']:.3f}",
        )

    def job_end(self, job: str, status: str, detail: str) -> None:
        super().job_end(job, status, detail)
        if self.suite_task is not None:
            self.bars.update(self.suite_task, advance=1)


def make_progress() -> Progress:
    return RichProgress() if sys.stdout.isatty() else Progress()
