"""Per-case explanation figures and their Markdown index (`ssnbench explain`).

One PNG per case: a row per image the model reads (clinic, derm); the first column is the image,
then, per cross-attention stage, where the OTHER modality's queries attend in this image, then the
Grad-CAM of each head's DIAG prediction on this image. `index.md` lists the cases with their true and
predicted labels and links the figures. Figures are small (they are committed for the demo).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssnbench.explain.attention_maps import capture_attention, grad_cam
from ssnbench.explain.inference import MODALITIES

__all__ = ["ATTENTION_NOTE", "pick_cases", "write_gallery"]

ATTENTION_NOTE = (
    "Attention maps: softmax probabilities recomputed on the reference path (the fused Triton kernel "
    "keeps only their log-sum-exp), averaged over heads and query positions and scaled to their "
    "maximum; 'peak×' is the maximum over the uniform weight 1/keys (1 = attends everywhere alike)."
)
CAM_NOTE = "Grad-CAM (captum LayerGradCam, ReLU) of each head's DIAG logit for its own predicted class."


def pick_cases(dataset: Any, n: int | None = None, ids: Sequence[str] | None = None) -> list[int]:
    """Row indices: the given case ids (in that order), else `n` cases taking each DIAG class in
    turn (so a small gallery shows several diagnoses), in split order within a class."""
    from ssnbench.errors import UserError

    case_ids = [str(c) for c in dataset.case_ids]
    if ids:
        pos = {c: i for i, c in enumerate(case_ids)}
        missing = [c for c in ids if c not in pos]
        if missing:
            raise UserError(
                f"--ids: case {missing[0]!r} is not in this split ({len(case_ids)} cases, e.g. "
                f"{', '.join(case_ids[:3])})"
            )
        return [pos[c] for c in ids]
    n = min(int(n or 4), len(case_ids))
    diag = np.asarray(dataset.labels)[:, 0]
    queues = [list(np.flatnonzero(diag == k)) for k in sorted(set(diag.tolist()))]
    out: list[int] = []
    while len(out) < n:
        for q in queues:
            if q and len(out) < n:
                out.append(int(q.pop(0)))
    return out


def _overlay(ax: Any, image: np.ndarray, heat: np.ndarray | None, title: str) -> None:
    ax.imshow(image)
    if heat is not None:
        ax.imshow(heat, cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0)
    ax.set_title(title, fontsize=6)
    ax.axis("off")


def _up(m: torch.Tensor, size: int) -> np.ndarray:
    """[h, w] -> [size, size] (bilinear), scaled to its maximum."""
    x = F.interpolate(m[None, None].float(), size=(size, size), mode="bilinear", align_corners=False)[0, 0]
    return (x / x.max().clamp_min(1e-12)).numpy()


def _labels_text(labels: Sequence[int]) -> str:
    from ssnbench.data.labels import CLASSES, LABELS

    return " ".join(f"{lab}:{CLASSES[lab][int(c)]}" for lab, c in zip(LABELS, labels, strict=True))


def case_figure(
    model: nn.Module,
    dataset: Any,
    index: int,
    path: Path,
    *,
    inference_weights: dict[str, float] | None,
    device: torch.device,
    heading: str = "",
) -> dict[str, Any]:
    """Write one case's figure to `path`; returns its index row (true/predicted labels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ssnbench.losses import combine_probabilities

    pair = dataset.pair(index)
    clinic, derm = (t[None].to(device) for t in dataset.transform(pair))
    size = int(clinic.shape[-1])
    model.eval()
    with capture_attention(model, size) as maps, torch.no_grad():
        outputs = model(clinic, derm)
    combined = combine_probabilities(outputs, inference_weights)
    pred = [int(p.argmax(-1)) for p in combined]
    heads = list(outputs)
    cams = {h: grad_cam(model, clinic, derm, h, target=int(outputs[h][0].argmax(-1))) for h in heads}
    rows = [m for m in MODALITIES if any(m in c for c in cams.values())]
    images = {m: pair[i].permute(1, 2, 0).numpy() for i, m in enumerate(MODALITIES)}
    cols = 1 + len(maps.stages) + len(heads)
    caption_h, row_h = 0.75, 1.75
    height = row_h * len(rows) + caption_h
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.35 * cols, height), squeeze=False)
    for r, m in enumerate(rows):
        _overlay(axes[r, 0], images[m], None, f"{m} image")
        for j, s in enumerate(maps.stages):
            att = (maps.to_clinic if m == "clinic" else maps.to_derm)[s][0]
            other = "derm" if m == "clinic" else "clinic"
            peak = float(att.max()) * att.numel()
            _overlay(
                axes[r, 1 + j],
                images[m],
                _up(att.cpu(), size),
                f"{other} q → {m}, stage {s}\npeak×{peak:.1f}",
            )
        for j, h in enumerate(heads):
            cam = cams[h].get(m)
            probs = outputs[h][0][0].float().softmax(-1)
            title = f"Grad-CAM {h} head\nDIAG p={float(probs.max()):.2f}"
            _overlay(
                axes[r, 1 + len(maps.stages) + j], images[m], None if cam is None else cam[0].numpy(), title
            )
    true = [int(x) for x in np.asarray(dataset.labels[index])]
    note = [
        f"{heading}case {dataset.case_ids[index]}",
        f"true: {_labels_text(true)}",
        f"pred: {_labels_text(pred)}",
    ]
    if maps.stages:
        note.append(ATTENTION_NOTE)
    note.append(CAM_NOTE)
    fig.text(0.01, 0.01, "\n".join(note), fontsize=5, va="bottom", ha="left", wrap=True)
    fig.subplots_adjust(
        left=0.01, right=0.99, top=1 - 0.3 / height, bottom=caption_h / height, hspace=0.45, wspace=0.05
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    _save_small(fig, path)
    plt.close(fig)
    return {"case": str(dataset.case_ids[index]), "true": true, "pred": pred, "figure": path.name}


def _save_small(fig: Any, path: Path, colours: int = 128) -> None:
    """PNG with a 128-colour palette: the heat-map overlays make a full-colour PNG ~250 KB, and the
    demo's gallery is committed (about 4x smaller this way, no visible loss at this size)."""
    import io

    from PIL import Image

    from ssnbench.results import write_atomic

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
    small = Image.open(io.BytesIO(buf.getvalue())).convert("RGB").quantize(colours, Image.Quantize.MEDIANCUT)
    out = io.BytesIO()
    small.save(out, format="PNG", optimize=True)
    write_atomic(path, out.getvalue())


def write_gallery(
    model: nn.Module,
    dataset: Any,
    indices: Sequence[int],
    out: Path,
    *,
    inference_weights: dict[str, float] | None,
    device: torch.device | str = "cpu",
    title: str = "",
    source: str = "",
) -> Path:
    """One figure per case plus `index.md`; returns the index path."""
    from ssnbench.data.labels import CLASSES, LABELS

    device = torch.device(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in indices:
        name = f"case_{_slug(str(dataset.case_ids[i]))}.png"
        row = case_figure(model, dataset, i, out / name, inference_weights=inference_weights, device=device)
        rows.append(row)
    lines = [f"# {title or 'ssnbench explain'}", ""]
    if source:
        lines += [source, ""]
    lines += [
        "One figure per case: a row per image; columns: the image, where the other modality's queries attend "
        "in it at each cross-attention stage, the Grad-CAM of each head's DIAG prediction. "
        + ATTENTION_NOTE
        + " "
        + CAM_NOTE
        + " How to read them, and what they cannot tell: docs/explain.md.",
        "",
        "| case | true DIAG | predicted DIAG | labels right | true criteria | predicted criteria | figure |",
        "| :--- | :--- | :--- | ---: | :--- | :--- | :--- |",
    ]

    def crit(v: list[int]) -> str:
        return " ".join(CLASSES[lab][c] for lab, c in zip(LABELS[1:], v[1:], strict=True))

    for r in rows:
        right = sum(int(a == b) for a, b in zip(r["true"], r["pred"], strict=True))
        true_d, pred_d = CLASSES["DIAG"][r["true"][0]], CLASSES["DIAG"][r["pred"][0]]
        lines.append(
            f"| {r['case']} | {true_d} | {pred_d} | {right}/8 | {crit(r['true'])} | {crit(r['pred'])} | "
            f"[{r['figure']}]({r['figure']}) |"
        )
    lines += ["", f"Criteria order: {', '.join(LABELS[1:])}.", ""]
    index = out / "index.md"
    index.write_text("\n".join(lines), encoding="utf-8")
    return index


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:60] or "case"
