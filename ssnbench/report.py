"""Result files -> `report.md`, `results.json`, `results.csv` and `figures/*.png`.

The only module that knows about Markdown. It reads nothing but result records (the runner's JSON
files), so `ssnbench report DIR` rebuilds a report without training. Numbers are never shown as a
single run's point estimate: mean ± std over seeds, and bootstrap intervals over test cases.
report.md is one small function per section, listed in `SECTIONS` (how to add one: see there).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shlex
import sys
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ssnbench import stats
from ssnbench.claims import evaluate_claims, finish_verdicts, paired_case_scores
from ssnbench.data.labels import LABELS
from ssnbench.errors import UserError
from ssnbench.preflight import probe_folder
from ssnbench.results import (
    SPEED_ONLY_TRAIN_KEYS,
    json_safe,
    scan_results,
    unpack_classes,
    unpack_probs,
    write_atomic,
)

DIAG_KEYS = ("diag_balanced_acc", "diag_auc_macro", "mel_sensitivity", "mel_specificity")
SYNTHETIC_BANNER = (
    "> **⚠ SYNTHETIC DATA.** Every number in this report comes from ssnbench's generated stand-in for "
    "Derm7pt (random images whose label statistics mimic the release), not from skin lesions. It "
    "shows that the pipeline works end to end; it says nothing about how well any method classifies "
    "real lesions."
)


# ---------------------------------------------------------------------------------------------
# Loading and grouping


def scan_folder(results_dir: str | os.PathLike) -> tuple[list[dict[str, Any]], list[str]]:
    """(every readable result record, one line per unreadable result file) of a folder."""
    folder = Path(results_dir)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such results folder (run `ssnbench run SUITE` first)")
    if not os.access(folder, os.R_OK | os.X_OK):
        raise UserError(f"{folder}: cannot read the results folder (permission denied)")
    records, errors = scan_results(folder)
    return records, [str(err) for err in errors]


def load_results(results_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every readable result record in a folder (the runner's `<model>__seed<k>.json` files); a
    folder with none is a UserError (naming the unreadable ones, if any)."""
    records, problems = scan_folder(results_dir)
    _require_records(Path(results_dir), records, problems)
    return records


def _require_records(folder: Path, records: list[dict], problems: list[str]) -> None:
    if not records and problems:
        raise UserError(
            f"{folder}: no readable result files ({len(problems)} unreadable; first: {problems[0]})"
        )
    if not records:
        raise UserError(
            f"{folder}: no result files in it (expected <model>__seed<k>.json from `ssnbench run`)"
        )


# ---------------------------------------------------------------------------------------------
# Settings: results trained under different settings are not silently put into one table


def settings_of(record: dict) -> dict[str, Any]:
    """The settings a result depends on besides its model and seed, flattened to `section.key`
    (train minus the speed-only keys, the dataset's preparation and the evaluation)."""
    out: dict[str, Any] = {}
    for k, v in (record.get("train") or {}).items():
        if k not in SPEED_ONLY_TRAIN_KEYS:
            out[f"train.{k}"] = v
    ds = record.get("dataset") or {}
    for k in ("kind", "image_size", "border_crop", "drop_no_clinic", "synthetic", "splits"):
        if k in ds:
            out[f"dataset.{k}"] = ds[k]
    for k, v in (record.get("eval") or {}).items():
        out[f"eval.{k}"] = v
    return out


def mixed_settings(records: list[dict]) -> list[dict[str, Any]]:
    """Per run whose settings differ from the most common ones: {job, file, key, value, common}."""
    ok = _ok(records)
    if len(ok) < 2:
        return []
    flat = [settings_of(r) for r in ok]
    keys = sorted({k for f in flat for k in f})
    out = []
    for key in keys:
        values = [json.dumps(f.get(key), sort_keys=True, default=str) for f in flat]
        if len(set(values)) == 1:
            continue
        common = max(set(values), key=lambda v: (values.count(v), -values.index(v)))
        for r, v in zip(ok, values, strict=True):
            if v != common:
                out.append({"job": r.get("job"), "key": key, "value": v, "common": common})
    return out


def check_settings(records: list[dict], folder: str | os.PathLike, allow_mixed: bool) -> list[dict]:
    """`mixed_settings`, or a UserError naming the first difference unless `allow_mixed`."""
    mixed = mixed_settings(records)
    if mixed and not allow_mixed:
        first = mixed[0]
        keys = sorted({m["key"] for m in mixed})
        more = f" ({len(keys) - 1} more setting(s) differ: {', '.join(keys[1:])})" if len(keys) > 1 else ""
        raise UserError(
            f"{folder}: results trained under different settings: {first['key']} is {first['value']} "
            f"in {first['job']}.json but {first['common']} in the others{more}; pass --allow-mixed to "
            "report them in one table (it then lists the runs that differ)"
        )
    return mixed


def _models(records: list[dict]) -> list[tuple[str, list[dict]]]:
    """(model name, its records sorted by seed), in suite order."""
    by_name: dict[str, list[dict]] = {}
    order: dict[str, tuple[int, int]] = {}
    for i, r in enumerate(records):
        name = r["model"]["name"]
        by_name.setdefault(name, []).append(r)
        order.setdefault(name, (int(r.get("model_index", 10**6)), i))
    names = sorted(by_name, key=lambda n: order[n])
    return [(n, sorted(by_name[n], key=lambda r: r["seed"])) for n in names]


def _ok(runs: Iterable[dict]) -> list[dict]:
    return [r for r in runs if r.get("status") == "ok"]


# ---------------------------------------------------------------------------------------------
# Statistics (through metrics.py; per-case scores come from the stored predictions)


def case_scores(record: dict) -> tuple[list[str], np.ndarray]:
    """Per test case: mean correctness over the 8 labels (its mean over cases is acc_avg)."""
    p = record["predictions"]
    correct = unpack_classes(p["pred"]) == unpack_classes(p["labels"])
    return list(p["case_ids"]), correct.mean(axis=1)


def case_correct(record: dict, label_index: int) -> np.ndarray:
    p = record["predictions"]
    return (unpack_classes(p["pred"])[:, label_index] == unpack_classes(p["labels"])[:, label_index]).astype(
        float
    )


def _mean_std(values: list[float]) -> tuple[float, float]:
    from ssnbench.metrics import mean_std

    m, s = mean_std(values)
    return float(m), float(s)


def _ci(scores: np.ndarray, seed: int = 0) -> stats.Interval:
    """95% two-level bootstrap CI (seeds, then cases) of the mean of per-case scores [S, N]."""
    return stats.two_level_bootstrap(scores, seed=seed)


def _diag_cis(runs: list[dict]) -> dict[str, list[float]]:
    """95% two-level bootstrap CIs of the DIAG metrics (runs on the same cases in the same order)."""
    from ssnbench.data.labels import MEL_INDEX, NUM_CLASSES

    y = unpack_classes(runs[0]["predictions"]["labels"])[:, 0]
    pred = np.stack([unpack_classes(r["predictions"]["pred"])[:, 0] for r in runs])
    metrics = {
        "diag_balanced_acc": (lambda t, p: stats.multiclass_balanced_accuracy(t, p, NUM_CLASSES[0]), pred),
        "mel_sensitivity": (lambda t, p: stats.binary_rates(t, p, MEL_INDEX)[0], pred),
        "mel_specificity": (lambda t, p: stats.binary_rates(t, p, MEL_INDEX)[1], pred),
    }
    if all(r["predictions"].get("diag_probs") for r in runs):
        probs = np.stack([unpack_probs(r["predictions"]["diag_probs"]) for r in runs])
        metrics["diag_auc_macro"] = (stats.ovr_macro_auc, probs)
    out = {}
    for key, (fn, outputs) in metrics.items():
        iv = stats.bootstrap_metric(fn, y, outputs, n_resamples=1000)
        out[key] = [iv.low, iv.high]
    return out


def _paired(a: np.ndarray, b: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """A − B on the same cases ([S, N] per-case scores, seeds paired): two-level bootstrap CI and
    the sign-flip permutation p."""
    res = stats.paired_difference(a, b, seed=seed)
    d = res.diff
    return {"diff": d.estimate, "ci_low": d.low, "ci_high": d.high, "levels": d.levels,
            "p_value": res.p_value}


def summarize(records: list[dict]) -> dict[str, Any]:
    """All aggregates the report shows, as plain data (also written to results.json)."""
    groups = _models(records)
    models = []
    for name, runs in groups:
        ok = _ok(runs)
        entry: dict[str, Any] = {
            "name": name,
            "arch": runs[0]["model"]["arch"],
            "loss": runs[0]["model"]["loss"],
            "options": runs[0]["model"].get("options", {}),
            "seeds": [r["seed"] for r in ok],
            "failed_seeds": [r["seed"] for r in runs if r.get("status") != "ok"],
        }
        if ok:
            keys = [k for k in ok[0]["metrics"] if all(k in r["metrics"] for r in ok)]
            entry["metrics"] = {}
            for k in keys:
                m, s = _mean_std([r["metrics"][k] for r in ok])
                entry["metrics"][k] = {"mean": m, "std": s}
            scores = np.stack([case_scores(r)[1] for r in ok]) if _same_cases(ok) else case_scores(ok[0])[1]
            ci = _ci(scores)
            entry["acc_avg_ci95"] = [ci.low, ci.high]
            entry["ci_levels"] = ci.levels
            if _same_cases(ok):
                entry["diag_ci95"] = _diag_cis(ok)
            entry["best_epochs"] = [r.get("best_epoch") for r in ok]
            entry["train_seconds"] = [r.get("timings", {}).get("train_seconds") for r in ok]
            entry["heads"] = ok[0].get("heads")
            entry["loss_weights"] = ok[0].get("loss_weights")
            entry["inference_weights"] = ok[0].get("inference_weights")
            entry["inference_scheme"] = ok[0].get("inference_scheme")
            entry["inference_description"] = ok[0].get("inference_description")
            entry["profile"] = next((r["profile"] for r in ok if isinstance(r.get("profile"), dict)), None)
        models.append(entry)

    by_name = dict(groups)
    reference = next((r.get("reference") for r in records if r.get("reference")), None)
    paired = []
    if reference in by_name and _ok(by_name[reference]):
        ref_runs = _ok(by_name[reference])
        for name, runs in groups:
            if name == reference or not _ok(runs):
                continue
            row: dict[str, Any] = {"reference": reference, "model": name}
            avg = paired_case_scores(ref_runs, _ok(runs), lambda r: case_scores(r)[1])
            if avg is None:
                row["note"] = "no common seeds or different test cases"
            else:
                a, b, seeds = avg
                row["seeds"] = seeds
                row["acc_avg"] = _paired(a, b)
                diag = paired_case_scores(ref_runs, _ok(runs), lambda r: case_correct(r, 0))
                if diag is not None:
                    row["acc_DIAG"] = _paired(diag[0], diag[1])
                    row["acc_DIAG"]["p_mcnemar"] = stats.mcnemar_exact(diag[0], diag[1])["p_value"]
            paired.append(row)
    dataset = latest_dataset(records)
    planted = ((dataset or {}).get("synthetic") or {}).get("planted")
    margin = float(next((r["stats"]["margin"] for r in records if isinstance(r.get("stats"), dict)
                         and "margin" in r["stats"]), stats.DEFAULT_MARGIN))
    claim_rows = evaluate_claims(models, {n: _ok(r) for n, r in groups}, lambda r: case_scores(r)[1],
                                 planted=planted, margin=margin)
    _holm_all(paired, claim_rows)
    finish_verdicts(claim_rows)

    ok_records = _ok(records)
    latest = max(ok_records or records, key=lambda r: r.get("finished_at", ""))
    commits = sorted({str((r.get("environment") or {}).get("git_commit")) for r in ok_records})
    devices = sorted({str((r.get("environment") or {}).get("device_name")) for r in ok_records})
    failed = [
        {
            "job": r["job"],
            "model": r["model"]["name"],
            "seed": r["seed"],
            "type": (r.get("error") or {}).get("type"),
            "message": (r.get("error") or {}).get("message"),
        }
        for r in records
        if r.get("status") != "ok"
    ]
    return {
        "suite": latest.get("suite"),
        "suite_file": latest.get("suite_file"),
        "description": latest.get("suite_description", ""),
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset": latest.get("dataset"),
        "train": latest.get("train"),
        "eval": latest.get("eval"),
        "overrides": sorted({o for r in records for o in (r.get("overrides") or [])}),
        "environment": latest.get("environment"),
        "commits": commits,
        "devices": devices,
        "reference": reference,
        "models": models,
        "paired": paired,
        "claims": claim_rows,
        "margin": margin,
        "failed": failed,
        "runs": [_run_row(r) for r in sorted(records, key=_run_order)],
        "job_seconds": float(sum((r.get("timings") or {}).get("total_seconds") or 0.0 for r in records)),
        "placement": placement_summary(records),
        "attribution": attribution_summary(records),
        "robustness": robustness_summary(records),
    }


def latest_dataset(records: list[dict]) -> dict | None:
    """The dataset block of the most recent finished run (what the report describes)."""
    ok = _ok(records) or records
    return max(ok, key=lambda r: r.get("finished_at", "")).get("dataset") if ok else None


def _holm_all(paired: list[dict], claim_rows: list[dict]) -> None:
    """Holm across every test the report shows (paired rows: average accuracy sign-flip and DIAG
    McNemar; claims: sign-flip). The same comparison appearing twice is one test of the family."""
    family: dict[tuple, float] = {}
    for p in paired:
        if "acc_avg" in p:
            family[(p["reference"], p["model"], "avg")] = p["acc_avg"]["p_value"]
        if "acc_DIAG" in p:
            family[(p["reference"], p["model"], "diag_mcnemar")] = p["acc_DIAG"]["p_mcnemar"]
    for c in claim_rows:
        if "p_value" in c:
            family[(c["a"], c["b"], "avg")] = c["p_value"]
    keys = list(family)
    adjusted = dict(zip(keys, stats.holm([family[k] for k in keys]), strict=True))
    for p in paired:
        if "acc_avg" in p:
            p["acc_avg"]["p_holm"] = adjusted[(p["reference"], p["model"], "avg")]
        if "acc_DIAG" in p:
            p["acc_DIAG"]["p_mcnemar_holm"] = adjusted[(p["reference"], p["model"], "diag_mcnemar")]
    for c in claim_rows:
        if "p_value" in c:
            c["p_holm"] = adjusted[(c["a"], c["b"], "avg")]
    for row in [*paired, *claim_rows]:
        row["holm_family_size"] = len(keys)


def attribution_summary(records: list[dict]) -> dict[str, Any]:
    """Section numbers of the modality attribution (explain/attribution.py; numpy only)."""
    from ssnbench.explain import attribution

    return attribution.summarize(records)


def robustness_summary(records: list[dict]) -> dict[str, Any]:
    """Section numbers of the robustness evaluation (explain/robustness.py; numpy only)."""
    from ssnbench.explain import robustness

    return robustness.summarize(records)


def _run_order(r: dict) -> tuple:
    """Suite order, then seed: the same rows whether written by `run` or rebuilt by `report`."""
    return (int(r.get("model_index", 10**6)), r["model"]["name"], int(r.get("seed", 0)))


def _same_cases(runs: list[dict]) -> bool:
    first = runs[0]["predictions"]["case_ids"]
    return all(r["predictions"]["case_ids"] == first for r in runs)


def _throughput(profile: dict | None, mode: str, key: str) -> float | None:
    part = (profile or {}).get(mode)
    if isinstance(part, dict) and part.get("status", "ok") == "ok":
        value = part.get(key)
        return float(value) if isinstance(value, (int, float)) else None
    return None


def _run_row(r: dict) -> dict[str, Any]:
    """One flat row per run: results.csv and results.json's `runs`."""
    m = r.get("metrics") or {}
    prof = r.get("profile") or {}
    params = prof.get("params") or {}
    row = {
        "suite": r.get("suite"),
        "job": r.get("job"),
        "model": r["model"]["name"],
        "arch": r["model"]["arch"],
        "loss": r["model"].get("loss"),
        "seed": r.get("seed"),
        "status": r.get("status"),
        "dataset": (r.get("dataset") or {}).get("kind"),
        "best_epoch": r.get("best_epoch"),
    }
    for label in LABELS:
        row[f"acc_{label}"] = m.get(f"acc_{label}")
    row["acc_avg"] = m.get("acc_avg")
    for k in DIAG_KEYS:
        row[k] = m.get(k)
    row["params"] = params.get("total")
    row["gmacs"] = prof.get("gmacs")
    row["train_images_per_s"] = _throughput(prof, "train", "samples_per_sec")
    row["infer_images_per_s"] = _throughput(prof, "infer", "samples_per_sec")
    row["train_peak_memory_mb"] = _throughput(prof, "train", "peak_memory_mb")
    row["train_seconds"] = (r.get("timings") or {}).get("train_seconds")
    row["error"] = (r.get("error") or {}).get("message")
    place = r.get("placement") or {}  # where the job ran (ssnbench.job; docs/scale.md)
    for key in ("launcher", "host", "cuda_visible_devices", "torch_threads", "jobs_on_node"):
        row[key] = place.get(key)
    return row


def placement_summary(records: list[dict]) -> str | None:
    """One line on where the runs trained (launchers, hosts, jobs per node, threads, GPUs)."""
    ok = [r for r in records if r.get("status") == "ok"]
    places = [r["placement"] for r in ok if isinstance(r.get("placement"), dict)]
    if not places:
        return None

    def kinds(key: str) -> list[str]:
        return sorted({str(p.get(key)) for p in places if p.get(key) is not None})

    hosts = kinds("host")
    parts = [
        f"{'/'.join(kinds('launcher'))}: {len(places)} runs on {len(hosts)} host(s) ({', '.join(hosts[:4])}"
        + (", ..." if len(hosts) > 4 else "")
        + ")",
        f"up to {max(int(p.get('jobs_on_node') or 1) for p in places)} at once on a node",
        f"{'/'.join(kinds('torch_threads'))} torch thread(s) per run",
    ]
    if kinds("cuda_visible_devices"):
        parts.append("CUDA_VISIBLE_DEVICES " + ", ".join(kinds("cuda_visible_devices")))
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# Markdown


def _pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f}"


def _pm(stat: dict | None) -> str:
    if not stat:
        return "–"
    if math.isnan(stat["mean"]):
        return "–"
    if stat["std"] is None or math.isnan(stat["std"]):  # one seed: no spread to show
        return f"{100 * stat['mean']:.1f}"
    return f"{100 * stat['mean']:.1f} ± {100 * stat['std']:.1f}"


def _num(x: float | None, fmt: str) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _weights(w: dict | None) -> str:
    return ", ".join(f"{k} {v:.3g}" for k, v in (w or {}).items()) or "–"


# ---------------------------------------------------------------------------------------------
# Markdown sections
#
# The report is the concatenation of SECTIONS, in order. Each section is a function
# `(summary, figures) -> str` returning Markdown that ends with a blank line ("" leaves it out).
# A numbered section starts with "## Title": `render` turns it into "## <n>. Title", so inserting
# one renumbers those after it. To add a section: write its function below (it reads `summary`,
# i.e. what `summarize` computed; compute anything new there so results.json carries it too), then
# put it into SECTIONS where it belongs.


def _title(summary: dict[str, Any], figures: dict[str, str]) -> str:
    synthetic = _synthetic(summary)
    text = f"# ssnbench report: {summary.get('suite')}{' (SYNTHETIC DATA)' if synthetic else ''}\n\n"
    if synthetic:
        text += SYNTHETIC_BANNER + "\n\n"
    if summary.get("description"):
        text += summary["description"] + "\n\n"
    rebuild = shlex.quote(str(summary.get("results_dir") or f"results/{summary.get('suite')}"))
    return text + (
        f"Suite file `{summary.get('suite_file')}`; generated {summary['generated_at']} from "
        f"{len(summary['runs'])} result files by `ssnbench report` (rebuild: `ssnbench report "
        f"{rebuild}`).\n\n"
    )


def _setup(summary: dict[str, Any], figures: dict[str, str]) -> str:
    ds = summary.get("dataset") or {}
    env = summary.get("environment") or {}
    train = summary.get("train") or {}
    splits = ds.get("splits") or {}
    kind = f"**{ds.get('kind', '?')}**"
    if _synthetic(summary) and ds.get("synthetic"):
        s = ds["synthetic"]
        kind += f" (generated: {s['cases']} cases, seed {s['seed']}, {s['source_size']} px JPEGs)"
    rows = [
        ["dataset", kind],
        ["splits (cases)", " / ".join(f"{k} {v}" for k, v in splits.items())],
        [
            "image size",
            f"{ds.get('image_size')} px (after a border crop of {ds.get('border_crop')} px per side)",
        ],
        [
            "rows without a clinical photo",
            f"{len(ds.get('no_clinic_rows') or [])}"
            + (" (dropped)" if ds.get("drop_no_clinic") else " (kept; the derm photo stands in)"),
        ],
        [
            "training",
            f"{train.get('epochs')} epochs, batch {train.get('batch_size')}, AdamW lr "
            f"{train.get('lr')} wd {train.get('weight_decay')}, cosine with "
            f"{train.get('warmup_epochs')} warm-up epochs, grad clip {train.get('grad_clip')}, "
            f"AMP {'bf16 on CUDA (off on CPU)' if train.get('amp') else 'off'}, "
            f"checkpoint: best validation average accuracy",
        ],
        [
            "test evaluation",
            "test-time augmentation: "
            + (
                f"{(summary.get('eval') or {}).get('tta')} (probabilities averaged over the views)"
                if (summary.get("eval") or {}).get("tta")
                else "none"
            ),
        ],
        ["seeds", ", ".join(str(s) for s in sorted({r["seed"] for r in summary["runs"]}))],
        [
            "command-line overrides",
            ", ".join(f"`--set {o}`" for o in summary.get("overrides") or []) or "none",
        ],
        [
            "compute",
            f"{summary.get('job_seconds', 0) / 60:.1f} min over {len(summary['runs'])} runs "
            "(training, evaluation and profiling; data preparation not included)",
        ],
        [
            "environment",
            f"git {_short(env.get('git_commit'))}{' (dirty tree)' if env.get('git_dirty') else ''}, "
            f"Python {env.get('python')}, torch {env.get('torch')}, timm {env.get('timm')}, "
            f"triton {env.get('triton') or 'not installed'}",
        ],
        ["device", ", ".join(summary.get("devices") or [str(env.get("device_name"))])],
    ]
    if summary.get("placement"):
        rows.append(["where runs trained", summary["placement"]])
    if len(summary.get("commits") or []) > 1:
        rows.append(
            ["note", "runs come from several commits: " + ", ".join(_short(c) for c in summary["commits"])]
        )
    text = "## Setup\n\n" + _table(["", ""], rows, "ll") + "\n\n"
    mixed = summary.get("mixed") or []
    if mixed:
        text += (
            "**Mixed settings** (`--allow-mixed`): these runs were trained under other settings than the "
            "rest, and their models are marked † in the tables below.\n\n"
        )
        rows = [[m["job"], m["key"], m["value"], m["common"]] for m in mixed]
        text += _table(["run", "setting", "this run", "the other runs"], rows, "llll") + "\n\n"
    return text


def _accuracy(summary: dict[str, Any], figures: dict[str, str]) -> str:
    maj = ((summary.get("dataset") or {}).get("majority") or {}).get("metrics") or {}
    marked = {str(m["job"]).rsplit("__seed", 1)[0] for m in summary.get("mixed") or []}  # --allow-mixed
    text = "## Test accuracy (%)\n\n" + (
        "Top-1 accuracy of each label and their unweighted mean on the test split, evaluated once with the "
        "checkpoint chosen on the validation split; mean ± std over seeds. 95% CI of the average accuracy: "
        "two-level bootstrap (seeds, then test cases), so it carries training variance as well as test-set "
        "variance; a model with one seed falls back to test cases only (marked ¹). The last row predicts "
        "each label's most frequent TRAIN class for every test case: the floor any model must clear.\n\n"
    )
    header = ["model", *LABELS, "average", "95% CI", "seeds"]
    rows = []
    for m in _ok_models(summary):
        ci = m.get("acc_avg_ci95") or [None, None]
        rows.append(
            [
                f"{m['name']}" + (" †" if m["name"] in marked else ""),
                *(_pm(m["metrics"].get(f"acc_{lab}")) for lab in LABELS),
                f"**{_pm(m['metrics'].get('acc_avg'))}**",
                f"[{_pct(ci[0])}, {_pct(ci[1])}]" + ("¹" if m.get("ci_levels") == "cases" else ""),
                str(len(m["seeds"])),
            ]
        )
    if maj:
        rows.append(
            [
                "*majority class*",
                *(_pct(maj.get(f"acc_{lab}")) for lab in LABELS),
                f"*{_pct(maj.get('acc_avg'))}*",
                "",
                "",
            ]
        )
    return text + _table(header, rows) + "\n\n"


def _cost(summary: dict[str, Any], figures: dict[str, str]) -> str:
    ok_models = _ok_models(summary)
    text = "## Cost\n\n" + (
        "Parameters counted once when shared (SSN's encoder serves both modalities). GMACs: fvcore "
        "multiply-adds of one forward at batch 1 (1 GMAC = 2 GFLOP), attention counted through our handles. "
        "Images/s count every image a model consumes (two per case for two-image models). "
        "Throughput and peak "
        "memory measured on the run's device"
    )
    prof0 = next((m.get("profile") for m in ok_models if m.get("profile")), None) or {}
    tr0 = prof0.get("train") if isinstance(prof0.get("train"), dict) else {}
    if tr0:
        text += (
            f" at batch {tr0.get('batch_size')} per modality"
            + (f", {tr0.get('amp')} autocast" if tr0.get("amp") else "")
            + (
                ". On CPU peak memory is a sampled resident-set increase (approximate)"
                if tr0.get("memory_kind", "").startswith("cpu")
                else ""
            )
        )
    text += ".\n\n"
    rows = []
    for m in ok_models:
        p = m.get("profile") or {}
        params = p.get("params") or {}
        tot = params.get("total")
        parts = "/".join(
            _num((params.get(k) or 0) / 1e6, ".2f") for k in ("encoder", "cross_attention", "heads")
        )
        rows.append(
            [
                m["name"],
                m["arch"],
                _num(tot / 1e6 if tot else None, ".2f"),
                parts,
                _num(p.get("gmacs"), ".3f"),
                _num(_throughput(p, "train", "samples_per_sec"), ".1f"),
                _num(_throughput(p, "infer", "samples_per_sec"), ".1f"),
                _num(_throughput(p, "train", "peak_memory_mb"), ".0f"),
                _num(
                    float(np.mean([t for t in m.get("train_seconds") or [] if t is not None]))
                    if m.get("train_seconds")
                    else None,
                    ".0f",
                ),
            ]
        )
    header = [
        "model",
        "arch",
        "params (M)",
        "encoder/xattn/heads (M)",
        "GMACs",
        "train img/s",
        "infer img/s",
        "peak train mem (MB)",
        "train time (s/seed)",
    ]
    text += _table(header, rows, "llrrrrrrr") + "\n\n"
    notes = sorted(
        {
            str((m.get("profile") or {}).get("gmacs_note"))
            for m in ok_models
            if (m.get("profile") or {}).get("gmacs") is None and (m.get("profile") or {}).get("gmacs_note")
        }
    )
    return text + "".join(f"GMACs not counted: {note}.\n\n" for note in notes)


def _diagnosis(summary: dict[str, Any], figures: dict[str, str]) -> str:
    rows = [
        [m["name"], *(_pm(m["metrics"].get(k)) + _ci_text((m.get("diag_ci95") or {}).get(k))
                      for k in DIAG_KEYS)]
        for m in _ok_models(summary)
    ]
    return (
        "## Diagnosis (DIAG)\n\n"
        "Balanced accuracy over the 5 classes, macro one-vs-rest AUC, melanoma sensitivity and specificity "
        "(%, mean ± std over seeds, then the 95% two-level bootstrap CI in brackets: seeds, then cases).\n\n"
        + _table(["model", "balanced acc", "macro AUC", "MEL sensitivity", "MEL specificity"], rows)
        + "\n\n"
    )


def _paired_differences(summary: dict[str, Any], figures: dict[str, str]) -> str:
    ref = summary.get("reference")
    text = f"## Paired differences: {ref or '(no reference model)'} minus each model\n\n"
    if not summary["paired"]:
        return text + (
            "No paired comparison: the suite has no reference model (`reference:` or an `ssn` model) with "
            "finished runs.\n\n"
        )
    text += (
        "Percentage points, on the same test cases: seed s of the reference is paired with seed s of the "
        "other model. 95% CI: two-level bootstrap of the per-case differences (seeds, then cases). p: "
        "two-sided sign-flip permutation test on the seed-averaged per-case differences (average "
        "accuracy) and exact McNemar test on DIAG correctness; Holm-adjusted over all "
        f"{summary['paired'][0].get('holm_family_size', 0)} tests of this report (paired rows and claims) "
        "in brackets. An interval that excludes 0 is a difference the test split can resolve.\n\n"
    )
    rows = []
    for p in summary["paired"]:
        if "acc_avg" not in p:
            rows.append([f"{p['reference']} − {p['model']}", *["–"] * 6, p.get("note", "")])
            continue
        a, d = p["acc_avg"], p.get("acc_DIAG") or {}
        rows.append(
            [
                f"{p['reference']} − {p['model']}",
                str(len(p["seeds"])),
                _signed(a.get("diff")),
                f"[{_signed(a.get('ci_low'))}, {_signed(a.get('ci_high'))}]",
                _p(a.get("p_value"), a.get("p_holm")),
                _signed(d.get("diff")),
                f"[{_signed(d.get('ci_low'))}, {_signed(d.get('ci_high'))}]",
                _p(d.get("p_mcnemar"), d.get("p_mcnemar_holm")),
            ]
        )
    header = ["comparison", "seeds", "Δ average acc", "95% CI", "p [Holm]", "Δ DIAG acc", "95% CI",
              "McNemar p [Holm]"]
    return text + _table(header, rows) + "\n\n"


def _claims(summary: dict[str, Any], figures: dict[str, str]) -> str:
    """The Claims section: one row per paper claim the suite's models can test (ssnbench.claims)."""
    rows_in = summary.get("claims") or []
    out = ["## Claims\n\n"]
    if not rows_in:
        out.append("No claim of the paper can be tested with this suite's models (see ssnbench/claims.py for "
                   "which models each claim needs).\n\n")
        return "".join(out)
    synthetic = any(r.get("planted") for r in rows_in)
    out.append(
        "Models are matched by what they are (arch, loss, defining options), not by name. Δ: A − B in "
        "average accuracy (points) with its 95% two-level bootstrap CI; p: sign-flip permutation test, raw "
        "and Holm-adjusted over every test in this report. Superiority is *supported* when the CI excludes 0 "
        "and Holm p < 0.05, *contradicted* when it excludes 0 the other way, else *not resolved*. "
        f"Non-inferiority: CI lower bound above −{100 * summary.get('margin', 0.01):g} points (the suite's "
        "`stats.margin`) and SSN at ≤60% of the dual model's parameters."
        + (" *Planted*: what the synthetic data's design makes true (meta/planted.json); a verdict should "
           "agree with it." if synthetic else "")
        + "\n\n"
    )
    header = ["claim", "A", "B", "seeds", "Δ avg acc", "95% CI", "p", "p Holm", "verdict"]
    if synthetic:
        header.append("planted")
    rows = []
    for c in rows_in:
        d = c.get("diff") or {}
        verdict = f"**{c.get('verdict', 'not resolved')}**" + (f" ({c['note']})" if c.get("note") else "")
        row = [
            c["claim"], c["a"], c["b"], str(len(c.get("seeds") or [])),
            _signed(d.get("estimate")), f"[{_signed(d.get('low'))}, {_signed(d.get('high'))}]",
            _num(c.get("p_value"), ".3g"), _num(c.get("p_holm"), ".3g"), verdict,
        ]
        if synthetic:
            row.append(c.get("planted") or "")
        rows.append(row)
    out.append(_table(header, rows, "lll" + "r" * 5 + "l" * (len(header) - 8)) + "\n\n")
    ssn_row = next((c for c in rows_in if c["id"] == "ssn_beats_best_single"), None)
    if ssn_row and ssn_row.get("verdict") != "supported":
        out.append(
            f"**SSN itself does not beat the best single-modality model ({ssn_row['b']}) in this run** "
            f"(verdict: {ssn_row.get('verdict')}).\n\n"
        )
    levels = {(c.get("diff") or {}).get("levels") for c in rows_in if c.get("diff")}
    if "cases" in levels:
        out.append("One seed: these intervals resample test cases only (no training variance).\n\n")
    return "".join(out)


def _p(raw: float | None, adjusted: float | None) -> str:
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return "–"
    return f"{raw:.3g}" + (f" [{adjusted:.3g}]" if adjusted is not None and not math.isnan(adjusted) else "")


def _ci_text(ci: list[float] | None) -> str:
    if not ci or any(v is None or math.isnan(v) for v in ci):
        return ""
    return f" [{_pct(ci[0])}, {_pct(ci[1])}]"


def _head_combination(summary: dict[str, Any], figures: dict[str, str]) -> str:
    rows = [
        [
            m["name"],
            m["arch"],
            ", ".join(m.get("heads") or []),
            f"{m['loss']}: {_weights(m.get('loss_weights'))}",
            m.get("inference_description")
            or f"{m.get('inference_scheme')}: {_weights(m.get('inference_weights'))}",
            _options(m.get("options") or {}),
        ]
        for m in _ok_models(summary)
    ]
    header = ["model", "arch", "heads", "training loss weights", "inference", "options"]
    return (
        "## How each model combines its heads\n\n"
        "Training loss: weighted sum of each head's mean cross-entropy over the 8 labels. Inference: the "
        "heads' softmax probabilities are averaged with the inference weights, per label.\n\n"
        + _table(header, rows, "llllll")
        + "\n\n"
    )


def _failed_runs(summary: dict[str, Any], figures: dict[str, str]) -> str:
    unreadable = ""
    if summary.get("unreadable"):
        unreadable = "**Unreadable result files** (left out of every table above):\n\n" + "".join(
            f"- {line}\n" for line in summary["unreadable"]
        ) + "\n"
    if not summary["failed"]:
        return "## Failed runs\n\nNone.\n\n" + unreadable
    rows = [[f["job"], str(f.get("type")), str(f.get("message"))] for f in summary["failed"]]
    return (
        "## Failed runs\n\n"
        + _table(["job", "error", "message"], rows, "lll")
        + "\n\nFull tracebacks are in the result files.\n\n"
        + unreadable
    )


def _figure_links(summary: dict[str, Any], figures: dict[str, str]) -> str:
    rest = {t: rel for t, rel in figures.items() if not t.startswith((ATTRIBUTION_FIGURE, ROBUSTNESS_FIGURE))}
    if not rest:
        return ""  # the attribution and robustness figures are shown in their own sections
    return "## Figures\n\n" + "".join(f"![{title}]({rel})\n\n" for title, rel in rest.items())


def _footer(summary: dict[str, Any], figures: dict[str, str]) -> str:
    return "---\n*SYNTHETIC data: these numbers validate the pipeline only.*\n" if _synthetic(summary) else ""


ATTRIBUTION_FIGURE = "Modality attribution"


def render_attribution(section: dict[str, Any], figures: dict[str, str]) -> str:
    """Accuracy with a modality withheld and of each head alone, against the combined
    prediction, and how often the heads disagree (two-image models only)."""
    from ssnbench.explain.attribution import VARIANTS

    out = io.StringIO()
    w = out.write
    w("## Modality attribution\n\n")
    models = section.get("models") or []
    if not models:
        w("No two-image model with attribution results in this suite.\n\n")
        return out.getvalue()
    w(
        "Test accuracy (%) of each two-image model when one modality is withheld at inference (replaced by "
        f"{section.get('neutral_input')}) and of each head alone (both images shown), against the model as "
        "deployed (both images, heads combined). Mean over seeds; Δ: paired difference to the combined "
        "prediction on the same cases (seed s paired with seed s) in points, 95% CI: two-level bootstrap "
        "(seeds, then cases); p: two-sided sign-flip permutation test (average accuracy) and exact McNemar "
        f"test (DIAG), Holm-adjusted over the {section.get('n_tests', 0)} tests of this section in brackets "
        "(a family of its own: diagnostics of each model, not comparisons between models). A large drop when "
        "a modality "
        "is withheld means the model relies on it; a head alone close to the combination means the other "
        "heads add little. How to read it, and what it cannot tell: docs/explain.md.\n\n"
    )
    rows = []
    for m in models:
        for row in m["variants"]:
            cells = [m["name"], VARIANTS.get(row["variant"], row["variant"]), _pct(row["acc_avg"])]
            for key, acc in (("vs_combined_avg", None), ("vs_combined_DIAG", row["acc_DIAG"])):
                if acc is not None:
                    cells.append(_pct(acc))
                t = row.get(key)
                if t is None:
                    cells += ["", "", ""]
                else:
                    cells += [
                        _signed(t["diff"]),
                        f"[{_signed(t['ci_low'])}, {_signed(t['ci_high'])}]",
                        _p(t["p"], t.get("p_holm")),
                    ]
            rows.append(cells)
    header = ["model", "inputs / head", "avg acc", "Δ", "95% CI", "p [Holm]", "DIAG acc", "Δ", "95% CI",
              "p [Holm]"]
    w(_table(header, rows, "llrrrrrrrr") + "\n\n")
    w(
        "Heads' disagreement on the test cases (both images shown; mean over seeds): DIAG — fraction of "
        "cases whose clinic, derm and fused heads do not all predict the same class, and on those cases "
        "how often each head (and the combination) was right; all labels — the same disagreement "
        "averaged over the 8 labels, and the fraction of cases with at least one label in dispute.\n\n"
    )
    rows = []
    for m in models:
        d = m["disagreement"]
        right = d.get("DIAG_right") or {}
        rows.append(
            [
                m["name"],
                _pct(d.get("DIAG_rate")),
                *(_pct(right.get(h)) for h in ("clinic", "derm", "fused", "combined")),
                _pct(d.get("rate_avg")),
                _pct(d.get("cases_any_label")),
                _num(m.get("seconds"), ".1f"),
            ]
        )
    w(
        _table(
            ["model", "DIAG disagree", "clinic right", "derm right", "fused right", "combined right",
             "all labels disagree", "cases with a dispute", "extra s/job"],
            rows,
        )
        + "\n\n"
    )
    if ATTRIBUTION_FIGURE in figures:
        w(f"![{ATTRIBUTION_FIGURE}]({figures[ATTRIBUTION_FIGURE]})\n\n")
    return out.getvalue()


ROBUSTNESS_FIGURE = "Robustness"


def render_robustness(section: dict[str, Any], figures: dict[str, str]) -> str:
    """Accuracy under imaging shifts of one modality at a time: mean relative drop per model (table)
    and accuracy vs severity per shift (one figure per modality)."""
    out = io.StringIO()
    w = out.write
    w("## Robustness to imaging conditions\n\n")
    models = section.get("models") or []
    shifts = section.get("shifts") or {}
    w(
        "Test accuracy when ONE image is degraded and the other left clean, through torchvision's "
        "functional transforms at increasing severity (defined at 224 px; spatial ones scale with the "
        "image side), deterministic per seed: "
        + "; ".join(f"{k} ({v['description']}, {v['unit']})" for k, v in shifts.items())
        + f". Missing: the image replaced by {section.get('neutral_input')}. Mean relative drop: "
        "1 − accuracy(shifted)/accuracy(clean) averaged over every shift and severity (missing excluded), "
        "with a 95% two-level bootstrap CI (seeds, then test cases; a model with one seed: test cases only, "
        "so the CI leaves out training variance). Evaluated without test-time augmentation.\n\n"
    )
    rows = []
    for m in models:
        for mod, c in m["modalities"].items():
            da, dd = c["drop_avg"], c["drop_DIAG"]
            miss = c.get("missing") or {}
            rows.append(
                [
                    m["name"],
                    mod,
                    str(m["seeds"]),
                    _pct(m["clean"]["acc_avg"]),
                    f"{_pct(da['drop'])} [{_pct(da['ci_low'])}, {_pct(da['ci_high'])}]",
                    _pct(m["clean"]["acc_DIAG"]),
                    f"{_pct(dd['drop'])} [{_pct(dd['ci_low'])}, {_pct(dd['ci_high'])}]",
                    _pct(miss.get("acc_avg")),
                    _pct(miss.get("acc_DIAG")),
                ]
            )
    header = ["model", "shifted image", "seeds", "clean avg acc", "mean rel. drop avg (%) [95% CI]",
              "clean DIAG acc", "mean rel. drop DIAG (%) [95% CI]", "missing: avg acc", "missing: DIAG acc"]
    w(_table(header, rows, "llrrrrrrr") + "\n\n")
    for title, rel in figures.items():
        if title.startswith(ROBUSTNESS_FIGURE):
            w(f"![{title}]({rel})\n\n")
    return out.getvalue()


def robustness_figures(plt: Any, section: dict[str, Any], folder: Path, tag: str = "") -> dict[str, str]:
    """One figure per shifted modality: a panel per shift, average accuracy vs severity, a line per
    model (severity 0 = clean; a dotted line marks the missing-image accuracy)."""
    models = section.get("models") or []
    out: dict[str, str] = {}
    folder.mkdir(parents=True, exist_ok=True)
    mods = [m for m in ("clinic", "derm") if any(m in x["modalities"] for x in models)]
    for mod in mods:
        shifts = list(next(x["modalities"][mod]["curves"] for x in models if mod in x["modalities"]))
        cols = min(4, len(shifts))
        rows_n = -(-len(shifts) // cols)
        fig, axes = plt.subplots(rows_n, cols, figsize=(3.0 * cols, 2.5 * rows_n), squeeze=False)
        for k, shift in enumerate(shifts):
            ax = axes[k // cols, k % cols]
            for j, m in enumerate(x for x in models if mod in x["modalities"]):
                c = m["modalities"][mod]
                curve = c["curves"].get(shift) or []
                xs = [0] + [lv["level"] for lv in curve]
                ys = [100 * m["clean"]["acc_avg"]] + [100 * lv["acc_avg"] for lv in curve]
                line = ax.plot(xs, ys, marker=".", label=m["name"], color=f"C{j}")
                if c.get("missing"):
                    ax.axhline(100 * c["missing"]["acc_avg"], ls=":", lw=1, color=line[0].get_color())
            ax.set_title(shift, fontsize=9)
            ax.set_xlabel("severity (0 = clean)", fontsize=7)
            ax.set_ylabel("avg test acc (%)", fontsize=7)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
        for k in range(len(shifts), rows_n * cols):
            axes[k // cols, k % cols].axis("off")
        axes[0, 0].legend(fontsize=6)
        fig.suptitle(f"{mod} image shifted (dotted: {mod} image missing){tag}", fontsize=10)
        fig.tight_layout()
        name = f"robustness_{mod}.png"
        _save(fig, folder / name)
        plt.close(fig)
        out[f"{ROBUSTNESS_FIGURE}: {mod} image shifted"] = f"{folder.name}/{name}"
    return out


def _attribution(summary: dict[str, Any], figures: dict[str, str]) -> str:
    """Two-image models' modality attribution ("" when the suite has none: no empty section)."""
    section = summary.get("attribution") or {}
    return render_attribution(section, figures) if section.get("models") else ""


def _robustness(summary: dict[str, Any], figures: dict[str, str]) -> str:
    """Robustness to imaging shifts (suites with the `robustness` key)."""
    section = summary.get("robustness") or {}
    return render_robustness(section, figures) if section.get("models") else ""


Section = Callable[[dict[str, Any], dict[str, str]], str]

#: (numbered, section) in report order; see the comment at the top of this part of the file.
SECTIONS: list[tuple[bool, Section]] = [
    (False, _title),
    (False, _setup),
    (True, _accuracy),
    (True, _cost),
    (True, _diagnosis),
    (True, _paired_differences),
    (True, _claims),
    (True, _head_combination),
    (True, _attribution),
    (True, _robustness),
    (True, _failed_runs),
    (False, _figure_links),
    (False, _footer),
]


def render(summary: dict[str, Any], figures: dict[str, str]) -> str:
    """report.md: the SECTIONS in order, numbered sections' "## Title" headings as "## <n>. Title"."""
    parts, number = [], 0
    for numbered, section in SECTIONS:
        text = section(summary, figures)
        if numbered and text.startswith("## "):
            number += 1
            text = f"## {number}. {text[3:]}"
        parts.append(text)
    return "".join(parts)


def _synthetic(summary: dict[str, Any]) -> bool:
    return (summary.get("dataset") or {}).get("kind") == "SYNTHETIC"


def _ok_models(summary: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in summary["models"] if m.get("metrics")]


def _short(commit: Any) -> str:
    return str(commit)[:10] if commit else "unknown"


def _signed(x: float | None) -> str:
    return "–" if x is None or math.isnan(x) else f"{100 * x:+.1f}"


def _options(opts: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in opts.items()) or "–"


# ---------------------------------------------------------------------------------------------
# Figures


def _figures(summary: dict, records: list[dict], folder: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    synthetic = (summary.get("dataset") or {}).get("kind") == "SYNTHETIC"
    tag = " — SYNTHETIC DATA" if synthetic else ""
    figures: dict[str, str] = {}
    ok_models = [m for m in summary["models"] if m.get("metrics")]

    pts = [(m, ((m.get("profile") or {}).get("params") or {}).get("total")) for m in ok_models]
    pts = [(m, p) for m, p in pts if p]
    if pts:
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        for i, (m, p) in enumerate(pts):
            acc = m["metrics"]["acc_avg"]
            std = 0.0 if math.isnan(acc["std"]) else acc["std"]
            ax.errorbar(p / 1e6, 100 * acc["mean"], yerr=100 * std, fmt="o", capsize=3)
            # alternate label offsets: models of equal size (the SSN variants) share one x
            ax.annotate(
                m["name"],
                (p / 1e6, 100 * acc["mean"]),
                textcoords="offset points",
                xytext=(6, 4 if i % 2 == 0 else -11),
                fontsize=8,
            )
        maj = ((summary.get("dataset") or {}).get("majority") or {}).get("metrics", {}).get("acc_avg")
        if maj is not None:
            ax.axhline(100 * maj, ls="--", color="grey", lw=1, label="majority class")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_xlabel("parameters (M, shared counted once)")
        ax.set_ylabel("test average accuracy (%), mean ± std")
        ax.set_title("Accuracy vs parameters" + tag, fontsize=10)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        _save(fig, folder / "accuracy_vs_params.png")
        plt.close(fig)
        figures["Accuracy vs parameters"] = "figures/accuracy_vs_params.png"

    curves = {}
    for name, runs in _models(records):
        hist = [r.get("history") or [] for r in _ok(runs)]
        if not hist or not all(hist):
            continue
        n = min(len(h) for h in hist)
        curves[name] = (
            np.mean([[row["valid_acc_avg"] for row in h[:n]] for h in hist], axis=0),
            np.mean([[row["train_loss"] for row in h[:n]] for h in hist], axis=0),
        )
    if curves:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
        for name, (acc, loss) in curves.items():
            epochs = np.arange(1, len(acc) + 1)
            ax1.plot(epochs, 100 * acc, marker=".", label=name)
            ax2.plot(epochs, loss, marker=".", label=name)
        ax1.set_xlabel("epoch")
        ax1.set_ylabel("validation average accuracy (%)")
        ax2.set_xlabel("epoch")
        ax2.set_ylabel("training loss")
        for ax in (ax1, ax2):
            ax.grid(alpha=0.3)
        ax1.legend(fontsize=7)
        fig.suptitle("Validation curves (mean over seeds)" + tag, fontsize=10)
        fig.tight_layout()
        _save(fig, folder / "validation_curves.png")
        plt.close(fig)
        figures["Validation curves"] = "figures/validation_curves.png"
    if (summary.get("robustness") or {}).get("models"):
        figures.update(robustness_figures(plt, summary["robustness"], folder, tag))
    att = (summary.get("attribution") or {}).get("models") or []
    if att:
        _attribution_figure(plt, att, folder / "attribution.png", tag)
        figures[ATTRIBUTION_FIGURE] = "figures/attribution.png"
    return figures


def _attribution_figure(plt: Any, models: list[dict], path: Path, tag: str) -> None:
    """Per variant, its paired difference to the combined prediction (points, one colour per model)
    with the 95% CI (whiskers): average accuracy left, DIAG accuracy right."""
    from ssnbench.explain.attribution import VARIANTS

    variants = [v for v in VARIANTS if v != "combined" and any(r["variant"] == v for m in models
                                                                for r in m["variants"])]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    step = 0.7 / max(1, len(models))
    x = np.arange(len(variants))
    panels = ((axes[0], "average", "vs_combined_avg"), (axes[1], "DIAG", "vs_combined_DIAG"))
    for ax, what, key in panels:
        for j, m in enumerate(models):
            rows = {r["variant"]: r.get(key) for r in m["variants"]}
            d = [100 * rows[v]["diff"] if rows.get(v) else math.nan for v in variants]
            lo = [100 * (rows[v]["diff"] - rows[v]["ci_low"]) if rows.get(v) else 0.0 for v in variants]
            hi = [100 * (rows[v]["ci_high"] - rows[v]["diff"]) if rows.get(v) else 0.0 for v in variants]
            err = [np.maximum(lo, 0), np.maximum(hi, 0)]
            offset = (j - (len(models) - 1) / 2) * step
            ax.errorbar(x + offset, d, yerr=err, fmt="o", capsize=3, label=m["name"])
        ax.axhline(0, color="grey", lw=1)
        ax.set_xticks(x, [VARIANTS[v] for v in variants], fontsize=7, rotation=20, ha="right")
        ax.set_ylabel(f"Δ {what} test accuracy vs combined (pp)")
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=7)
    fig.suptitle("Modality attribution: each variant minus the combined prediction, paired 95% CI" + tag,
                 fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _save(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    write_atomic(path, buf.getvalue())


# ---------------------------------------------------------------------------------------------
# Entry points


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    k: ("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v))
                    for k, v in row.items()
                }
            )
    return buf.getvalue()


def write_report(
    records: list[dict],
    report_dir: str | os.PathLike,
    results_dir: str | os.PathLike | None = None,
    *,
    unreadable: list[str] | None = None,
    mixed: list[dict] | None = None,
) -> Path:
    """Write report.md, results.json, results.csv and figures/ into `report_dir`; returns report.md.
    `results_dir` (where the records were read) is named in the report's rebuild command;
    `unreadable` (one line per result file that could not be read) and `mixed` (`mixed_settings`)
    are listed in the report."""
    folder = Path(report_dir)
    folder.mkdir(parents=True, exist_ok=True)
    summary = summarize(records)
    if results_dir is not None:
        summary["results_dir"] = str(results_dir)
    summary["unreadable"] = list(unreadable or [])
    summary["mixed"] = list(mixed if mixed is not None else mixed_settings(records))
    figures = _figures(summary, records, folder / "figures")
    write_atomic(folder / "results.json", json.dumps(json_safe(summary), indent=1, default=str) + "\n")
    write_atomic(folder / "results.csv", _csv(summary["runs"]))
    path = folder / "report.md"
    write_atomic(path, render(summary, figures))
    return path


def cli_report(args: Any) -> int:
    """Rebuild a report. Exit 0, or 1 when some result files were unreadable (each named on
    stderr and in the report); results of different settings are refused unless --allow-mixed."""
    records, unreadable = scan_folder(args.results_dir)
    _require_records(Path(args.results_dir), records, unreadable)
    mixed = check_settings(records, args.results_dir, getattr(args, "allow_mixed", False))
    suite = next((r.get("suite") for r in records if r.get("suite")), Path(args.results_dir).name)
    report_dir = Path(args.report_dir) if getattr(args, "report_dir", None) else Path("reports") / str(suite)
    probe_folder(report_dir, "--report-dir" if getattr(args, "report_dir", None) else "report folder")
    try:
        path = write_report(records, report_dir, args.results_dir, unreadable=unreadable, mixed=mixed)
    except OSError as err:
        raise UserError(f"{report_dir}: cannot write the report ({err.strerror or err})") from None
    for line in unreadable:
        print(f"ssnbench: unreadable result file, left out of the report: {line}", file=sys.stderr)
    if mixed:
        print(f"report: {len({m['job'] for m in mixed})} run(s) trained under other settings are marked "
              "in the report (--allow-mixed)")
    print(f"report: {path}")
    return 1 if unreadable else 0
