"""One environment record and one device picker, for `run`, `bench models` and `bench kernels`.

Why: two numbers compare only if they come from the same software, device and code; every file
ssnbench writes carries this record so a reader can tell. One definition keeps the keys the same
everywhere (`device_type` is "cpu"/"cuda", `device_name` the human name; no key means two things).
torch is imported inside the functions so that torch-free readers can import this module.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ssnbench.errors import UserError

if TYPE_CHECKING:
    import torch

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Environment:
    """What a measured number depends on besides the code's arguments."""

    device_type: str  # "cpu" or "cuda"
    device_name: str  # e.g. "NVIDIA H200" or "CPU: AMD EPYC 9654 (8 threads)"
    python: str
    torch: str
    cuda: str | None  # CUDA runtime torch was built with, on a CUDA device; else None
    triton: str | None  # None when absent or broken (CPU-only machines)
    timm: str | None
    git_commit: str | None  # None outside a git checkout (e.g. an installed wheel)
    git_dirty: bool | None  # tracked files modified
    cpu_model: str
    cpu_count: int | None  # logical CPUs of the machine
    threads: int  # torch intra-op threads at the time of recording
    platform: str
    date: str  # UTC, ISO 8601, seconds

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what `platform` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except Exception:  # absent, or broken (triton on a CPU-only machine)
        return None


def environment(device: torch.device | str) -> Environment:
    """The record for work done on `device` (this process, now)."""
    import torch

    device = torch.device(device)
    threads = torch.get_num_threads()
    cuda = device.type == "cuda"
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return Environment(
        device_type=device.type,
        device_name=torch.cuda.get_device_name(device) if cuda else f"CPU: {cpu_model()} ({threads} threads)",
        python=platform.python_version(),
        torch=torch.__version__,
        cuda=torch.version.cuda if cuda else None,
        triton=_version("triton"),
        timm=_version("timm"),
        git_commit=_git("rev-parse", "HEAD"),
        git_dirty=bool(dirty) if dirty is not None else None,
        cpu_model=cpu_model(),
        cpu_count=os.cpu_count(),
        threads=threads,
        platform=platform.platform(),
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def amp_autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when `amp` is set, else nothing (training, evaluation, explain passes)."""
    import torch

    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def pick_device(name: str | None = None) -> torch.device:
    """`None` -> cuda if available else cpu; "cpu"; "cuda" or "cuda:N" (checked to exist).

    A missing device is a user mistake (`UserError`, one line), not a traceback from deep in torch.
    """
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name}: not a device (expected cpu, cuda or cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name}: unsupported device type (expected cpu, cuda or cuda:N)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: no CUDA device is available (use --device cpu)")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise UserError(
                f"--device {name}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})"
            )
    return device
