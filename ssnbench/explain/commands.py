"""`ssnbench explain` and `ssnbench robustness`: apply explanation and robustness to saved checkpoints.

Both read a checkpoint (`ssnbench.checkpoint.load_checkpoint`: the model and the data config the
run used) and a Derm7pt release; a missing, foreign or incompatible checkpoint is one line and exit 2
(the checkpoint module's `CheckpointError`, a UserError).
"""

from __future__ import annotations

import os

# Before torch loads OpenMP (as in runner.py): idle threads sleep instead of spinning on a busy machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path
from typing import Any

from ssnbench.errors import UserError

__all__ = ["cli_explain", "cli_robustness", "open_checkpoint"]


def open_checkpoint(
    checkpoint: str | os.PathLike, data: str | os.PathLike | None, split: str, device: Any
):
    """(model, checkpoint meta, dataset of `split` prepared as the run prepared its test data).
    `data` None: the release the run trained on, as its checkpoint records it."""
    from ssnbench.checkpoint import load_checkpoint
    from ssnbench.predict import split_dataset

    model, meta = load_checkpoint(checkpoint, device)
    if data is None:
        data = (meta.get("dataset") or {}).get("root")
        if not data or not Path(data).is_dir():
            raise UserError(
                f"{checkpoint}: the release it was trained on ({data or 'not recorded'}) is not here; "
                "give --data RELEASE"
            )
    return model, meta, split_dataset(Path(data), split, meta["data"])


def _shown(path: str | os.PathLike) -> str:
    """A path as the reader of a committed report wants it: relative to here when it is below."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def cli_explain(args: Any) -> int:
    """Per-case figures (both images, cross-attention maps per stage, Grad-CAM per head) + index.md."""
    from ssnbench.env import pick_device
    from ssnbench.explain.attention_maps import require_captum
    from ssnbench.explain.gallery import pick_cases, write_gallery

    require_captum()  # before any work: the one-line error naming the extra
    device = pick_device(args.device)
    model, meta, dataset = open_checkpoint(args.checkpoint, args.data, args.split, device)
    ids = [c for part in (args.ids or []) for c in part.split(",") if c]
    indices = pick_cases(dataset, args.cases, ids)
    name = meta.get("job") or Path(args.checkpoint).name
    release = _shown(args.data or meta["dataset"]["root"])
    index = write_gallery(
        model,
        dataset,
        indices,
        Path(args.out),
        inference_weights=meta["inference_weights"],
        device=device,
        title=f"ssnbench explain: {name}",
        source=f"Checkpoint `{args.checkpoint}` (model {meta['model'].get('name')!r}, arch "
        f"{meta['model'].get('arch')!r}), {args.split} split of `{release}`.",
    )
    print(f"{len(indices)} cases -> {index}")
    return 0


def cli_robustness(args: Any) -> int:
    """Robustness of one or more checkpoints on one split: robustness.md, .json and figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ssnbench.env import pick_device
    from ssnbench.explain import robustness
    from ssnbench.report import render_robustness, robustness_figures
    from ssnbench.results import json_safe, write_json_atomic

    device = pick_device(args.device)
    shifts = [s for part in (args.shifts or []) for s in part.split(",") if s] or None
    unknown = [s for s in shifts or [] if s not in robustness.SHIFTS]
    if unknown:
        raise UserError(
            f"--shifts: unknown shift {unknown[0]!r}; expected some of {', '.join(robustness.SHIFTS)}"
        )
    records = []
    for i, checkpoint in enumerate(args.checkpoints):
        model, meta, dataset = open_checkpoint(checkpoint, args.data, args.split, device)
        print(f"{checkpoint}: {len(dataset)} {args.split} cases", flush=True)
        rob = robustness.evaluate(
            model,
            dataset,
            meta["inference_weights"],
            device,
            shifts=shifts,
            severities=args.severities,
            seed=args.seed,
            batch_size=int(meta["data"].get("eval_batch_size") or 64),
        )
        records.append(
            {
                "status": "ok",
                "model": {"name": meta["model"].get("name") or Path(checkpoint).stem},
                "model_index": i,
                "seed": int(meta.get("seed", 0) or 0),
                "checkpoint": str(checkpoint),
                "data": str(args.data or meta["dataset"]["root"]),
                "robustness": rob,
            }
        )
        del model
    section = robustness.summarize(records)
    out = Path(args.out)
    figures = robustness_figures(plt, section, out / "figures")
    text = (
        f"# ssnbench robustness: {args.split} split of `{_shown(args.data or records[0]['data'])}`\n\n"
        + "Checkpoints: "
        + ", ".join(f"`{c}`" for c in args.checkpoints)
        + ".\n\n"
        + render_robustness(section, figures)
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "robustness.md").write_text(text, encoding="utf-8")
    write_json_atomic(out / "robustness.json", json_safe({"summary": section, "records": records}))
    print(f"report: {out / 'robustness.md'}")
    return 0
