"""Claims: before a job trains it is claimed in the out folder, so two runs never train it twice.

A claim is `<out>/.claims/<job>.json` (host, pid, process start time, start time, a random token).
It is created with `os.link` from a fully written temp file, which is atomic and fails when the
claim exists (also on NFS, where O_EXCL was historically unreliable); taking over a dead claim and
releasing one happen under an `fcntl.flock` on the `<out>/.claims` folder, so two runs that both see the
same dead claim cannot both take it. Why a pid *and* its start time: pids are reused, and a claim
whose pid now belongs to another process is dead. A claim from another host cannot be checked by
pid, so its owner touches the file every `HEARTBEAT_S` seconds and it is dead after `STALE_S`
without a touch. The token lets a driver release the claim of a worker it knows is dead.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

HEARTBEAT_S = 30.0  # how often a live claim's file is touched
STALE_S = 300.0  # a claim from another host untouched this long is dead (10 missed heartbeats)
CLAIMS_DIR = ".claims"


@dataclass(frozen=True)
class Claim:
    job: str
    host: str
    pid: int
    pid_start: str | None  # /proc/<pid>/stat start time: tells a reused pid from the claimer
    started_at: str
    token: str
    launcher: str = "local"

    def describe(self) -> str:
        return f"claimed by {self.host} pid {self.pid} since {self.started_at} ({self.launcher})"


def claims_dir(out: Path) -> Path:
    return Path(out) / CLAIMS_DIR


def claim_path(out: Path, job: str) -> Path:
    return claims_dir(out) / f"{job}.json"


def _pid_start(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks since boot); None off Linux."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def pid_alive(pid: int) -> bool:
    """Does `pid` run on this host? A zombie (exited, not yet reaped) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def read_claim(path: Path) -> Claim | None:
    try:
        return Claim(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def is_alive(claim: Claim, path: Path | None = None) -> bool:
    """Alive: same host and the same process still runs; other host: touched within STALE_S."""
    if claim.host == socket.gethostname():
        if not pid_alive(claim.pid):
            return False
        now_start = _pid_start(claim.pid)
        return claim.pid_start is None or now_start is None or now_start == claim.pid_start
    if path is None:
        return True
    try:
        return time.time() - path.stat().st_mtime < STALE_S
    except OSError:
        return False


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Hold an exclusive flock on the claims folder itself (no lock file is left behind).

    The folder is removed when its last claim goes (`_tidy`), so after locking we check that the
    folder we locked is still the one at that path, and start over if it was removed meanwhile."""
    d = claims_dir(out)
    while True:
        d.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(d).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                try:
                    yield
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                return
        finally:
            os.close(fd)


def _tidy(out: Path) -> None:
    """Remove the empty claims folder (called under the lock): a finished out folder holds results only."""
    with contextlib.suppress(OSError):
        claims_dir(out).rmdir()


def live_claim(out: Path, job: str) -> Claim | None:
    """The claim on `job` if its owner is alive, else None."""
    path = claim_path(out, job)
    claim = read_claim(path)
    return claim if claim is not None and is_alive(claim, path) else None


@dataclass
class Acquired:
    """What `try_claim` got: our claim, or the live claim that beat us (`ours` False)."""

    claim: Claim
    ours: bool
    took_over: Claim | None = None  # the dead claim we replaced, if any


def try_claim(out: Path, job: str, token: str | None = None, launcher: str = "local") -> Acquired:
    """Claim `job` for this process, or return the live claim that holds it."""
    pid = os.getpid()
    mine = Claim(
        job=job,
        host=socket.gethostname(),
        pid=pid,
        pid_start=_pid_start(pid),
        started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        token=token or uuid.uuid4().hex,
        launcher=launcher,
    )
    path = claim_path(out, job)
    with _locked(out):
        old = read_claim(path)
        took_over = None
        if path.exists():
            if old is not None and is_alive(old, path):
                return Acquired(old, ours=False)
            took_over = old
            path.unlink()
        tmp = path.with_name(f".{path.name}.{mine.token}.tmp")
        tmp.write_text(json.dumps(asdict(mine), indent=1) + "\n", encoding="utf-8")
        try:
            os.link(tmp, path)  # atomic; fails if a claimer that bypassed the lock won
        except FileExistsError:
            winner = read_claim(path)
            return Acquired(winner or mine, ours=False)
        finally:
            tmp.unlink()
    return Acquired(mine, ours=True, took_over=took_over)


def release(out: Path, job: str, token: str) -> bool:
    """Remove the claim on `job` if it is still the one with `token` (ours, or a dead worker's)."""
    path = claim_path(out, job)
    with _locked(out):
        claim = read_claim(path)
        ours = claim is not None and claim.token == token
        if ours:
            path.unlink()
        _tidy(out)
    return ours


def live_on_host(out: Path, host: str | None = None) -> int:
    """How many live claims in `out` belong to `host` (default: this one): jobs sharing the node."""
    host = host or socket.gethostname()
    n = 0
    for path in claims_dir(out).glob("*.json"):
        claim = read_claim(path)
        if claim is not None and claim.host == host and is_alive(claim, path):
            n += 1
    return n


class Heartbeat:
    """Touches our claim files every HEARTBEAT_S seconds (so other hosts see them alive) and keeps
    the largest number of this host's live claims seen while a job ran."""

    def __init__(self, out: Path, jobs: list[str], interval: float = HEARTBEAT_S) -> None:
        self.out, self.jobs, self.interval = Path(out), list(jobs), interval
        self.max_on_host = live_on_host(self.out)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ssnbench-claim-heartbeat", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            for job in self.jobs:
                with contextlib.suppress(OSError):
                    os.utime(claim_path(self.out, job))
            with contextlib.suppress(OSError):
                self.max_on_host = max(self.max_on_host, live_on_host(self.out))

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            self.max_on_host = max(self.max_on_host, live_on_host(self.out))
