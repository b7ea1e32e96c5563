"""Launchers, claims and the job entry point (issue 16), on a 3-job suite of a tiny timm test model.

Ray and submitit are real here: a local Ray cluster inside the test (2 CPUs, 2 fake GPUs, small
object store, no dashboard) and submitit's local executor. One job dies on purpose (its worker
calls os._exit) to check that a worker that never writes is recorded as failed by the driver.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ssnbench import job as job_mod
from ssnbench.config import load
from ssnbench.data.cache import synthetic_root
from ssnbench.driver import run_suite
from ssnbench.launch import claims
from ssnbench.results import read_result

SUITE = """\
name: tiny3
dataset: {kind: synthetic, cases: 40, seed: 0, source_size: 32, image_size: 32, border_crop: 2}
train: {epochs: 1, batch_size: 8, lr: 1.0e-3, warmup_epochs: 0.5, num_workers: 0, threads: 1}
seeds: [0, 1, 2]
profile: {enabled: false}
model_defaults: {options: {backbone: test_resnet}}
models:
  - {name: single-derm, arch: single, options: {modality: derm}}
"""
JOBS = ["single-derm__seed0", "single-derm__seed1", "single-derm__seed2"]
DIES = "single-derm__seed2"
OVERRIDES = ["train.lr=0.002", "model_defaults.options.drop_path_rate=0.05"]


def _overrides_applied(out: Path, recs: dict[str, dict]) -> None:
    """The jobs that ran in workers trained with the driver's `--set` values and recorded them, and
    wrote their per-epoch history next to their result."""
    ok = [j for j in JOBS if recs[j]["status"] == "ok"]
    assert ok
    for j in ok:
        assert recs[j]["train"]["lr"] == 0.002 and recs[j]["overrides"] == OVERRIDES
        assert recs[j]["model"]["options"]["drop_path_rate"] == 0.05
        assert (out / f"{j}.history.csv").read_text().startswith("epoch,")


def dying_entry(suite_file: str, job_id: str, out: str, opts: job_mod.RunOptions):
    """The worker entry point, except that one job's worker dies without writing anything."""
    if job_id == DIES:
        os._exit(3)
    return job_mod.run_in_worker(suite_file, job_id, out, opts)


def dying_entry_captured(suite_file: str, job_id: str, out: str, opts: job_mod.RunOptions):
    if job_id == DIES:
        os._exit(3)
    return job_mod.run_in_worker_captured(suite_file, job_id, out, opts)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cache")
    suite_path = tmp_path_factory.mktemp("suite") / "tiny3.yaml"
    suite_path.write_text(SUITE)
    synthetic_root(load(suite_path).dataset, root)  # generated once for the whole module
    return root


@pytest.fixture()
def suite_file(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SSNBENCH_CACHE", str(cache))
    # Ray's memory monitor kills workers when the *machine* nears its memory threshold, whoever
    # uses the memory: on a shared CI box that is other processes, not these 40-case jobs, and a
    # killed worker fails the test at random. The launcher itself keeps Ray's default for users.
    monkeypatch.setenv("RAY_memory_monitor_refresh_ms", "0")
    path = tmp_path / "tiny3.yaml"
    path.write_text(SUITE)
    return path


def _records(out: Path) -> dict[str, dict]:
    """The result files present (not the `<job>.checkpoint.json` files next to them)."""
    return {j: read_result(out / f"{j}.json") for j in JOBS if (out / f"{j}.json").is_file()}


def _no_leftovers(out: Path) -> None:
    """No temp files anywhere and no claims once every run has ended."""
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert not (out / claims.CLAIMS_DIR).exists()


def _failed_section(report: Path) -> str:
    """The text of the report's "Failed runs" section."""
    text = report.read_text()
    return text.split("Failed runs", 1)[1].split("\n## ", 1)[0]


def _by_value() -> None:
    """Ship this module's entry points to the workers by value (they cannot import tests/)."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])


# ---------------------------------------------------------------------------------------------
# Ray


def test_ray_runs_a_suite_with_a_dying_worker(suite_file: Path, tmp_path: Path) -> None:
    import ray

    from ssnbench.launch.ray import RayLauncher
    from ssnbench.progress import Progress

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    out, rep = tmp_path / "results", tmp_path / "report"
    launcher = RayLauncher(
        gpus_per_run=1,
        entry=dying_entry,
        init_kwargs={"num_cpus": 2, "num_gpus": 2, "object_store_memory": 80 * 2**20},
    )
    # `run --set/--models` reach the workers, which re-load the suite file (RunOptions carries them)
    suite = load(suite_file, overrides=OVERRIDES, only_models=["single-derm"])
    code = run_suite(suite, out, rep, "cpu", progress=Progress(), launcher=launcher, cpus_per_run=1)
    assert code == 1
    recs = _records(out)
    _overrides_applied(out, recs)
    assert sorted(recs) == JOBS
    assert [recs[j]["status"] for j in JOBS] == ["ok", "ok", "failed"]
    lost = recs[DIES]["error"]
    assert lost["type"] == "WorkerLost" and str(out / "logs" / f"{DIES}.log") in lost["message"]
    # the two jobs that started together held different (fake) GPUs, one CPU thread each
    seen = [recs[j]["placement"] for j in JOBS[:2]]
    assert {p["cuda_visible_devices"] for p in seen} == {"0", "1"}
    assert all(p["launcher"] == "ray" and p["torch_threads"] == 1 and p["device"] == "cpu" for p in seen)
    assert all(p["omp_num_threads"] == "1" and p["jobs_on_node"] >= 1 for p in seen)
    assert DIES in _failed_section(rep / "report.md") and JOBS[0] not in _failed_section(rep / "report.md")
    assert (out / "logs" / "single-derm__seed0.log").read_text().count("job single-derm__seed0") >= 1
    assert launcher.startup_seconds is not None and not ray.is_initialized()
    _no_leftovers(out)


# ---------------------------------------------------------------------------------------------
# Crashes and concurrent runs (through the CLI, in subprocesses)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "ssnbench.cli", "run", *args, "--device", "cpu"]


def test_driver_killed_mid_suite_then_rerun(suite_file: Path, tmp_path: Path) -> None:
    out, rep = tmp_path / "results", tmp_path / "report"
    args = [str(suite_file), "--out", str(out), "--report-dir", str(rep)]
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(
        _cli(*args, "--launcher", "ray", "--max-parallel", "1"),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not _records(out) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert _records(out), (tmp_path / "first.log").read_text()[-2000:]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started (Ray included)
        proc.wait()
    first = {f"{j}.json": out.joinpath(f"{j}.json").stat().st_mtime_ns for j in _records(out)}
    assert 1 <= len(first) < 3

    rerun = subprocess.run(_cli(*args), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert f"3 jobs, {3 - len(first)} to run, {len(first)} already done" in rerun.stdout
    assert all(out.joinpath(n).stat().st_mtime_ns == t for n, t in first.items())  # not re-trained
    assert [r["status"] for r in _records(out).values()] == ["ok"] * 3
    assert "single-derm" not in _failed_section(rep / "report.md")
    _no_leftovers(out)


def test_two_concurrent_runs_train_each_job_once(suite_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    cmds = [
        _cli(str(suite_file), "--out", str(out), "--report-dir", str(tmp_path / f"rep{i}")) for i in (1, 2)
    ]
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for c in cmds]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    trained = [[j for j in JOBS if f"job {j}: ok" in text] for text in logs]
    assert sorted(trained[0] + trained[1]) == JOBS, logs  # every job once, by one of the two runs
    recs = _records(out)
    assert [r["status"] for r in recs.values()] == ["ok"] * 3
    assert len({r["placement"]["pid"] for r in recs.values()}) == len([t for t in trained if t])
    _no_leftovers(out)


# ---------------------------------------------------------------------------------------------
# SLURM through submitit's local executor


def test_submitit_local_no_wait_then_reattach(suite_file: Path, tmp_path: Path) -> None:
    from ssnbench.launch.slurm import SlurmLauncher, folder_of
    from ssnbench.progress import Progress

    _by_value()
    out, rep = tmp_path / "results", tmp_path / "report"
    suite = load(suite_file, overrides=OVERRIDES)

    def launcher(no_wait: bool) -> SlurmLauncher:
        return SlurmLauncher(cluster="local", no_wait=no_wait, timeout_min=5, entry=dying_entry_captured)

    assert run_suite(suite, out, None, "cpu", progress=Progress(), launcher=launcher(True)) == 0
    ids = json.loads((folder_of(out) / "submitted.json").read_text())
    assert sorted(ids) == JOBS
    # a second run re-attaches to the running jobs instead of submitting them again
    code = run_suite(suite, out, rep, "cpu", progress=Progress(), launcher=launcher(False))
    assert code == 1
    assert json.loads((folder_of(out) / "submitted.json").read_text()) == ids
    recs = _records(out)
    assert [recs[j]["status"] for j in JOBS] == ["ok", "ok", "failed"]
    assert all(recs[j]["placement"]["launcher"] == "slurm" for j in JOBS[:2])
    _overrides_applied(out, recs)
    lost = recs[DIES]["error"]
    assert lost["type"] == "WorkerLost" and f"{ids[DIES]['id']}_0_log.err" in lost["message"]
    assert DIES in _failed_section(rep / "report.md")
    assert "where runs trained | slurm: 2 runs on 1 host(s)" in (rep / "report.md").read_text()
    _no_leftovers(out)


# ---------------------------------------------------------------------------------------------
# Claims and the synthetic cache (fast, no training)


def test_claims_are_exclusive_and_dead_ones_are_taken_over(tmp_path: Path) -> None:
    got = claims.try_claim(tmp_path, "a", token="t1")
    assert got.ours and claims.live_claim(tmp_path, "a") == got.claim
    again = claims.try_claim(tmp_path, "a", token="t2")
    assert not again.ours and again.claim.token == "t1" and "pid" in again.claim.describe()
    assert not claims.release(tmp_path, "a", "t2") and claims.release(tmp_path, "a", "t1")
    assert not (tmp_path / claims.CLAIMS_DIR).exists()  # the folder goes with its last claim

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)
    path = claims.claim_path(tmp_path, "b")
    path.parent.mkdir()
    path.write_text(
        json.dumps(
            {
                "job": "b",
                "host": claims.socket.gethostname(),
                "pid": pid,
                "pid_start": "1",
                "started_at": "x",
                "token": "old",
            }
        )
    )
    took = claims.try_claim(tmp_path, "b", token="new")
    assert took.ours and took.took_over is not None and took.took_over.token == "old"
    other_host = dict(json.loads(path.read_text()), host="elsewhere", token="remote")
    path.write_text(json.dumps(other_host))
    assert claims.live_claim(tmp_path, "b") is not None  # fresh heartbeat: alive
    os.utime(path, (time.time() - claims.STALE_S - 1,) * 2)
    assert claims.live_claim(tmp_path, "b") is None  # no heartbeat for STALE_S: dead


def test_claim_race_has_one_winner(tmp_path: Path) -> None:
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def grab(i: int) -> None:
        barrier.wait()
        results.append(claims.try_claim(tmp_path, "job", token=f"t{i}").ours)

    threads = [threading.Thread(target=grab, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]


def test_synthetic_cache_is_safe_with_concurrent_generators(tmp_path: Path) -> None:
    from ssnbench.config import DatasetSpec

    spec = DatasetSpec(kind="synthetic", cases=12, seed=3, source_size=16, image_size=16, border_crop=1)
    roots: list[Path] = []
    threads = [
        threading.Thread(target=lambda: roots.append(synthetic_root(spec, tmp_path))) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(roots)) == 1 and (roots[0] / "meta" / "meta.csv").is_file()
    assert [p.name for p in tmp_path.iterdir()] == [roots[0].parent.name]  # no temp folders left


def test_missing_extra_is_one_line_exit_2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    from ssnbench import cli

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    code = cli.main(["run", "suites/demo.yaml", "--launcher", "ray", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == (
        "ssnbench: error: --launcher ray needs the ray package: pip install 'ssnbench[ray]'"
    )
    assert cli.main(["run", "suites/demo.yaml", "--max-parallel", "2", "--out", str(tmp_path)]) == 2
    assert "--max-parallel applies to --launcher ray" in capsys.readouterr().err


def test_threads_follow_cpus_per_run(suite_file: Path) -> None:
    suite = load(suite_file)
    assert job_mod.threads_for(suite, None, "cpu") == (1, 0)  # the suite's own settings
    assert job_mod.threads_for(suite, 3, "cpu") == (3, 0)
    from dataclasses import replace

    many = replace(suite, train=replace(suite.train, num_workers=8))
    assert job_mod.threads_for(many, 2, "cuda") == (2, 2)  # loader workers capped by the CPUs
    default = replace(suite, train=replace(suite.train, num_workers=None))
    assert job_mod.threads_for(default, 4, "cuda") == (4, 4)


def test_job_entry_point_takes_the_run_suite_options(suite_file: Path, tmp_path: Path, capsys) -> None:
    """`python -m ssnbench.job` (other schedulers) re-loads the suite with the same --set/--models as
    the `ssnbench run` that planned the job: a job that exists only through an override is found."""
    out = tmp_path / "results"
    args = [str(suite_file), "single-derm__seed7", str(out), "--device", "cpu"]
    assert job_mod.main(args) == 2  # the suite file alone has no seed 7
    assert "no job 'single-derm__seed7'" in capsys.readouterr().err
    assert job_mod.main([*args, "--set", "seeds=[7]", *(f"--set={o}" for o in OVERRIDES)]) == 0
    rec = read_result(out / "single-derm__seed7.json")
    assert rec["seed"] == 7 and rec["overrides"] == ["seeds=[7]", *OVERRIDES]
    assert rec["train"]["lr"] == 0.002 and rec["placement"]["launcher"] == "job"


def test_device_index_is_for_the_local_launcher_only(suite_file: Path, tmp_path: Path, capsys) -> None:
    from ssnbench import cli

    args = ["run", str(suite_file), "--launcher", "slurm", "--device", "cuda:1", "--out", str(tmp_path)]
    code = cli.main(args)
    assert code == 2
    assert "--device cuda:1: with --launcher slurm use cpu or cuda" in capsys.readouterr().err
