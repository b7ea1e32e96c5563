"""`ssnbench bench models`: inference and training-step throughput of a suite's models, no training.

One row per (model, batch size) with timm benchmark.py's column names prefixed `infer_`/`train_`
(`infer_samples_per_sec`, `infer_step_time`, ...), plus params per part, GMACs and peak memory. The
measurement itself lives in `ssnbench.profiling` so the run report's cost table and this command
can never disagree. Result files carry the environment in their name and header, because a speed
number without its card and versions is not comparable with anything.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ssnbench import profiling
from ssnbench.env import environment, pick_device

METRICS = ("samples_per_sec", "step_time", "step_time_spread", "batch_size", "img_size", "peak_memory_mb",
           "status")
COLUMNS = (
    "model", "arch", "options", "param_count", "params", "params_encoder", "params_cross_attention",
    "params_heads", "infer_gmacs", "modalities",
    *(f"infer_{m}" for m in METRICS), *(f"train_{m}" for m in METRICS),
    "train_speedup_vs_reference", "rounds", "infer_rounds_spread", "train_rounds_spread",
    "memory_kind", "amp", "channels_last", "error",
)
UNITS = {
    "param_count": "millions of parameters (shared weights counted once)",
    "infer_gmacs": profiling.MACS_CONVENTION,
    "samples_per_sec": profiling.IMAGES_CONVENTION,
    "step_time": "median step time, ms (synchronised; after warm-up)",
    "step_time_spread": "interquartile range of the step time, ms",
    "batch_size": "cases per step, per modality",
    "peak_memory_mb": "MiB: torch.cuda.max_memory_allocated on CUDA; peak RSS increase of the process on CPU",
    "train_speedup_vs_reference": "train images/s relative to the suite's reference model, same batch size",
}


# --------------------------------------------------------------------------------------- environment
# (the record itself is ssnbench.env.environment; these label files and tables with it)
def env_tag(env: dict[str, Any]) -> str:
    """File-name-safe environment label, e.g. `NVIDIA-H200_torch2.11.0_triton3.6.0`."""
    device = env["device_name"] if env["device_type"] == "cuda" else "cpu"
    parts = [device, f"torch{env['torch'].split('+')[0]}", f"triton{env['triton'] or 'none'}"]
    return "_".join(re.sub(r"[^A-Za-z0-9.]+", "-", p).strip("-") for p in parts)


def env_line(env: dict[str, Any]) -> str:
    cuda = f", CUDA {env['cuda']}" if env.get("cuda") else ""
    triton = env["triton"] or "not installed"
    return (f"device {env['device_name']}, torch {env['torch']}, triton {triton}{cuda}, "
            f"timm {env['timm']}, python {env['python']}, {env['threads']} CPU threads, "
            f"commit {env['git_commit'] or 'unknown'}, {env['date']}")


# --------------------------------------------------------------------------------------- measuring
def build(arch: str, options: dict[str, Any]) -> torch.nn.Module:
    from ssnbench.models.registry import build_model

    return build_model(arch, **options)


def bench_model(name: str, arch: str, options: dict[str, Any], model: torch.nn.Module, *, image_size: int,
                batch_sizes: Sequence[int], device: torch.device, amp: bool, channels_last: bool,
                warmup: int, iters: int, gmacs: bool = True,
                log: Callable[[str], None] = lambda _: None) -> list[dict[str, Any]]:
    """One row per batch size; an OOM batch size is recorded and the larger ones still run."""
    params = profiling.count_parameters(model)
    macs = profiling.gmacs_report(model, image_size, device="cpu") if gmacs else None
    rows = []
    for batch in batch_sizes:
        row: dict[str, Any] = {
            "model": name, "arch": arch, "options": json.dumps(options, sort_keys=True),
            "param_count": round(params["total"] / 1e6, 3), "params": params["total"],
            "params_encoder": params.get("encoder"), "params_cross_attention": params.get("cross_attention"),
            "params_heads": params.get("heads"),
            "infer_gmacs": None if macs is None or macs["gmacs"] is None else round(macs["gmacs"], 4),
            "gmacs_note": None if macs is None else macs["note"],
            "unsupported_ops": {} if macs is None else macs["unsupported_ops"],
            "error": None,
        }
        for mode in ("infer", "train"):
            log(f"{name}: {mode} batch {batch}")
            try:
                rec = profiling.measure_throughput(model, batch, image_size, device, train=mode == "train",
                                                   amp=amp, channels_last=channels_last, warmup=warmup,
                                                   iters=iters)
            except Exception as err:  # one broken configuration must not end the sweep
                rec = {"status": "error", "error": f"{type(err).__name__}: {err}".splitlines()[0],
                       "batch_size": batch, "img_size": image_size}
            row[f"{mode}_samples_per_sec"] = _round(rec.get("samples_per_sec"), 2)
            row[f"{mode}_step_time"] = _round(rec.get("step_time_ms"), 3)
            row[f"{mode}_step_time_spread"] = _round(rec.get("step_time_spread_ms"), 3)
            row[f"{mode}_batch_size"] = batch
            row[f"{mode}_img_size"] = image_size
            row[f"{mode}_peak_memory_mb"] = _round(rec.get("peak_memory_mb"), 1)
            row[f"{mode}_status"] = rec["status"]
            row["modalities"] = rec.get("modalities", row.get("modalities"))
            row["memory_kind"] = rec.get("memory_kind", row.get("memory_kind"))
            row["amp"] = rec.get("amp", row.get("amp"))
            row["channels_last"] = rec.get("channels_last", row.get("channels_last"))
            if rec.get("error"):
                row["error"] = "; ".join(filter(None, [row["error"], f"{mode}: {rec['error']}"]))
        rows.append(row)
    return rows


def _bench_rounds(specs: Sequence[Any], rounds: int, image_size: int, batch_sizes: Sequence[int],
                  device: torch.device, amp: bool, channels_last: bool, warmup: int, iters: int,
                  log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Every model measured `rounds` times, round-robin, the order rotated each round; per model the
    median over rounds. Why: on a host-bound GPU box the host's speed drifts by ~20% within minutes,
    so models measured minutes apart are not comparable; interleaved rounds spread that drift over
    all of them. Models stay built on their home device between rounds (measure_throughput moves
    them to the device and back), so peak memory still counts one model at a time."""
    built = [(spec, build(spec.arch, dict(spec.options))) for spec in specs]
    per_model: dict[str, list[list[dict[str, Any]]]] = {spec.name: [] for spec in specs}
    for r in range(rounds):
        shift = r % len(built)
        for spec, model in built[shift:] + built[:shift]:
            log(f"round {r + 1}/{rounds}")
            per_model[spec.name].append(
                bench_model(spec.name, spec.arch, dict(spec.options), model, image_size=image_size,
                            batch_sizes=batch_sizes, device=device, amp=amp, channels_last=channels_last,
                            warmup=warmup, iters=iters, gmacs=r == 0, log=log)
            )
            if device.type == "cuda":
                torch.cuda.empty_cache()
    rows = []
    for spec, _ in built:
        runs = per_model[spec.name]  # [round][batch] rows
        for b in range(len(batch_sizes)):
            rows.append(combine_rounds([run[b] for run in runs]))
    return rows


def combine_rounds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from the same measurement repeated in rounds: medians of throughput and step time,
    the spread of the per-round throughputs (max - min) and the largest peak memory."""
    row = dict(runs[0])  # params, GMACs (counted in round 1), batch, options
    row["rounds"] = len(runs)
    for mode in ("infer", "train"):
        bad = [r for r in runs if r.get(f"{mode}_status") != "ok"]
        if bad:
            row.update({k: v for k, v in bad[0].items() if k.startswith(f"{mode}_")})
            continue
        speeds = [r[f"{mode}_samples_per_sec"] for r in runs]
        row[f"{mode}_samples_per_sec"] = _round(statistics.median(speeds), 2)
        row[f"{mode}_step_time"] = _round(statistics.median(r[f"{mode}_step_time"] for r in runs), 3)
        row[f"{mode}_round_samples_per_sec"] = speeds
        row[f"{mode}_rounds_spread"] = _round(max(speeds) - min(speeds), 2)
        peaks = [r[f"{mode}_peak_memory_mb"] for r in runs if r.get(f"{mode}_peak_memory_mb") is not None]
        row[f"{mode}_peak_memory_mb"] = max(peaks) if peaks else None
    errors = sorted({r["error"] for r in runs if r.get("error")})
    row["error"] = "; ".join(errors) or None
    return row


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(value, digits)


def add_relative(rows: list[dict[str, Any]], reference: str | None) -> None:
    """train_speedup_vs_reference: each model's train images/s over the reference's, same batch size."""
    ref = {r["train_batch_size"]: r.get("train_samples_per_sec") for r in rows if r["model"] == reference}
    for row in rows:
        base = ref.get(row["train_batch_size"])
        mine = row.get("train_samples_per_sec")
        row["train_speedup_vs_reference"] = round(mine / base, 3) if mine and base else None


# --------------------------------------------------------------------------------------- output
def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 1e5 else f"{value:,.0f}"
    return str(value)


def _throughput_cell(row: dict[str, Any], mode: str) -> str:
    status = row.get(f"{mode}_status")
    if status == "oom":
        return "OOM"
    if status == "error":
        return "error"
    return _cell(row.get(f"{mode}_samples_per_sec"))


TABLE = (  # (header, how to get the cell)
    ("model", lambda r: r["model"]),
    ("B", lambda r: str(r["infer_batch_size"])),
    ("params (M)", lambda r: _cell(r["param_count"])),
    ("GMACs", lambda r: _cell(r["infer_gmacs"])),
    ("infer img/s", lambda r: _throughput_cell(r, "infer")),
    ("infer ms (IQR)", lambda r: f"{_cell(r['infer_step_time'])} ({_cell(r['infer_step_time_spread'])})"),
    ("train img/s", lambda r: _throughput_cell(r, "train")),
    ("train ms (IQR)", lambda r: f"{_cell(r['train_step_time'])} ({_cell(r['train_step_time_spread'])})"),
    ("train vs ref", lambda r: _cell(r.get("train_speedup_vs_reference"))),
    ("peak train MiB", lambda r: _cell(r["train_peak_memory_mb"])),
)


def markdown(rows: list[dict[str, Any]], env: dict[str, Any], suite: str, reference: str | None) -> str:
    first = rows[0] if rows else {}
    lines = [
        f"# Model benchmark: {suite} on {env['device_name']} "
        f"(torch {env['torch']}, triton {env['triton'] or 'none'})",
        "",
        f"Environment: {env_line(env)}.",
        "",
        f"- GMACs: {profiling.MACS_CONVENTION}.",
        f"- img/s: {profiling.IMAGES_CONVENTION}; B is cases per step (per modality).",
        "- ms: median step time (synchronised, after warm-up); IQR in brackets. A training step is "
        "forward + loss + backward + AdamW step.",
        f"- peak memory: {UNITS['peak_memory_mb']} ({first.get('memory_kind', '-')}).",
        *([f"- rounds: every model measured {first['rounds']} times round-robin (order rotated each "
           "round); img/s and ms are medians over rounds, peak memory the largest."]
          if first.get("rounds", 1) > 1 else []),
        f"- precision: {first.get('amp') or 'fp32'}, channels_last: {first.get('channels_last', '-')}; "
        f"train vs ref: train img/s over `{reference}`'s at the same B.",
        "",
        "| " + " | ".join(h for h, _ in TABLE) + " |",
        "|" + "|".join("---" if h == "model" else "---:" for h, _ in TABLE) + "|",
    ]
    lines += ["| " + " | ".join(get(r) for _, get in TABLE) + " |" for r in rows]
    notes = sorted({f"- {r['model']}: {r['error']}" for r in rows if r.get("error")})
    gm = sorted({f"- {r['model']}: {r['gmacs_note']}" for r in rows if r.get("gmacs_note")})
    unsupported = sorted({f"- {r['model']}: not counted by fvcore: "
                          + ", ".join(f"{k} x{v}" for k, v in sorted(r["unsupported_ops"].items()))
                          for r in rows if r.get("unsupported_ops")})
    if notes:
        lines += ["", "Errors and out-of-memory:", *notes]
    if gm or unsupported:
        lines += ["", "FLOP counting notes:", *gm, *unsupported]
    return "\n".join(lines) + "\n"


def write_outputs(rows: list[dict[str, Any]], env: dict[str, Any], *, suite: str, out_dir: Path,
                  reference: str | None, json_path: Path | None = None) -> dict[str, Path]:
    """CSV, JSON and Markdown named `bench_models_<suite>_<env tag>.*`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"bench_models_{suite}_{env_tag(env)}"
    paths = {ext: out_dir / f"{stem}.{ext}" for ext in ("csv", "json", "md")}
    with paths["csv"].open("w", newline="") as fh:
        fh.write(f"# {env_line(env)}\n")
        writer = csv.DictWriter(fh, fieldnames=list(COLUMNS), extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    payload = {"suite": suite, "environment": env, "reference": reference, "units": UNITS, "rows": rows}
    text = json.dumps(payload, indent=2, default=str) + "\n"
    paths["json"].write_text(text)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(text)
        paths["json_copy"] = json_path
    paths["md"].write_text(markdown(rows, env, suite, reference))
    return paths


def print_table(rows: list[dict[str, Any]], env: dict[str, Any], suite: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{suite}: {env_line(env)}", title_justify="left")
    for header, _ in TABLE:
        table.add_column(header, justify="left" if header == "model" else "right")
    for row in rows:
        table.add_row(*(get(row) for _, get in TABLE))
    Console(width=max(120, Console().width)).print(table)


# --------------------------------------------------------------------------------------- command
def load_suite(path: str) -> Any:
    from ssnbench import config

    loader = getattr(config, "load_suite", None) or config.load
    return loader(path, check_data=False)


def cli(args: argparse.Namespace) -> int:
    """Entry point of `ssnbench bench models`; 0 when every measurement ran (OOM included)."""
    suite = load_suite(args.suite)
    device = pick_device(args.device)
    on_cuda = device.type == "cuda"
    image_size = suite.dataset.image_size
    warmup, iters = suite.profile.warmup, suite.profile.iters
    amp = on_cuda  # bf16 autocast on CUDA only
    channels_last = on_cuda
    env = environment(device).to_dict()

    def log(msg: str) -> None:
        print(f"[bench] {msg}", file=sys.stderr, flush=True)

    rounds = max(1, int(getattr(args, "rounds", 1) or 1))
    if rounds == 1:
        rows: list[dict[str, Any]] = []
        for spec in suite.models:
            model = build(spec.arch, dict(spec.options))
            rows += bench_model(spec.name, spec.arch, dict(spec.options), model, image_size=image_size,
                                batch_sizes=args.batch_sizes, device=device, amp=amp,
                                channels_last=channels_last, warmup=warmup, iters=iters, log=log)
            del model
            if on_cuda:
                torch.cuda.empty_cache()
    else:
        rows = _bench_rounds(suite.models, rounds, image_size, args.batch_sizes, device, amp, channels_last,
                             warmup, iters, log)
    reference = getattr(suite, "reference", None) or suite.models[0].name
    add_relative(rows, reference)
    out_dir = Path(args.out) if args.out else Path("results") / "bench" / suite.name
    paths = write_outputs(rows, env, suite=suite.name, out_dir=out_dir, reference=reference,
                          json_path=Path(args.json) if args.json else None)
    print_table(rows, env, suite.name)
    for kind, path in paths.items():
        print(f"wrote {kind}: {path}")
    return 1 if any(r.get("infer_status") == "error" or r.get("train_status") == "error" for r in rows) else 0
