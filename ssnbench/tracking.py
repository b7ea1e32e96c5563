"""Watching a run while it trains: `<out>/<job>.history.csv` grows by one row per epoch (so `tail -f`
or a spreadsheet shows progress of a 100-epoch job long before its result file exists), and with
`--tensorboard DIR` the same numbers go to TensorBoard under DIR/<suite>/<job>.

TensorBoard is optional (`pip install 'ssnbench[track]'`); asking for it without the package is a
one-line error before any job starts, never a traceback an hour into a suite.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from ssnbench.errors import UserError

__all__ = ["EpochLog", "check_tensorboard", "history_path"]


def history_path(out: Path, job_id: str) -> Path:
    return out / f"{job_id}.history.csv"


def check_tensorboard() -> None:
    """Fail early, in one line, when --tensorboard is asked for but the extra is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise UserError(
            "--tensorboard needs the tensorboard package: pip install 'ssnbench[track]'"
        ) from None


class EpochLog:
    """Appends each epoch's row to the job's history CSV (flushed, so readers see it at once) and,
    when `tensorboard` is a folder, writes the numbers as scalars (step = epoch)."""

    def __init__(self, out: Path | None, job_id: str, suite: str, tensorboard: Path | None = None) -> None:
        self.path = history_path(out, job_id) if out is not None else None
        self._fh: Any = None
        self._writer: Any = None
        self._columns: list[str] | None = None
        if self.path is not None:
            # an earlier attempt's history would mix with this one's; the file is created at the first
            # epoch, so a job stopped before it leaves none
            self.path.unlink(missing_ok=True)
        if tensorboard is not None:
            check_tensorboard()
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(Path(tensorboard) / suite / job_id))

    def __call__(self, row: dict[str, float]) -> None:
        if self.path is not None and self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "w", newline="", encoding="utf-8")  # noqa: SIM115 - closed in close()
        if self._fh is not None:
            if self._columns is None:
                self._columns = list(row)
                self._fh.write(",".join(self._columns) + "\n")
            csv.writer(self._fh).writerow([_fmt(row.get(c)) for c in self._columns])
            self._fh.flush()
        if self._writer is not None:
            step = int(row.get("epoch", 0))
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                    self._writer.add_scalar(key, value, step)
            self._writer.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self.path = None  # closed: later rows are not written
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    return "" if value is None else str(value)
