"""Planted-truth checks of the explanations on the synthetic release (docs/planted.md, docs/explain.md).

Two questions with known answers:

* **Withholding**: does withholding the clinical photo hurt exactly the labels the generator made
  the clinical photo show better than dermoscopy (`meta/planted.json` → expected.clinic_extra_labels)
  and leave the others within noise? `label_drops` gives, per label, the accuracy change when a
  modality is withheld, with a paired CI and test, from the attribution entries of result records.
* **Attention on the lesion**: do the clinic queries of a trained SSN attend to the lesion in the
  dermoscopy image more than chance? The measure, per case and cross-attention stage: the attention
  mass (averaged over heads and clinic query positions) that falls inside the lesion, against the
  lesion's share of the key grid, i.e. what uniform attention would put there. `attention_on_lesion`
  reports the mean mass, the mean share, the fraction of cases with mass > share and a one-sided
  binomial (sign) test of that fraction against 1/2. The lesion mask is the generator's own alpha
  of the dermoscopy lesion, re-rendered from the same seed and cropped/resized like the image. (The
  clinical photo's lesion is warped, blurred and composited in ways the generator does not expose as
  a mask, so the clinic direction is not measured.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ssnbench.errors import DatasetError

__all__ = ["attention_on_lesion", "derm_lesion_masks", "label_drops", "read_planted"]


def read_planted(root: str | Path) -> dict[str, Any]:
    """`meta/planted.json` and the generator's arguments of a synthetic release."""
    from ssnbench.data import synthetic

    meta = Path(root) / "meta"
    try:
        planted = json.loads((meta / synthetic.PLANTED).read_text(encoding="utf-8"))
        args = json.loads((meta / synthetic.MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError, AttributeError) as err:
        raise DatasetError(f"{meta}: not a planted synthetic release ({type(err).__name__}: {err})") from None
    return {"planted": planted, "generator": args}


def label_drops(
    records: list[dict], variant: str = "no_clinic", seed: int = 0
) -> dict[str, dict[str, float]]:
    """Per label: accuracy of `variant` minus the combined prediction, on the same cases, from the
    `attribution` entries of one model's result records (seed s paired with itself)."""
    from ssnbench.data.labels import LABELS
    from ssnbench.explain.attribution import paired_test

    atts = [r["attribution"] for r in records if isinstance(r.get("attribution"), dict)]
    if not atts:
        raise ValueError("no attribution entries in these records")
    ids = atts[0]["case_ids"]

    def correct(att: dict, key: str) -> np.ndarray:
        pos = {c: i for i, c in enumerate(att["case_ids"])}
        order = [pos[c] for c in ids]
        pred = np.asarray([[int(c) for c in row] for row in att["variants"][key]["pred"]])[order]
        labels = np.asarray([[int(c) for c in row] for row in att["labels"]])[order]
        return (pred == labels).astype(float)

    shown = np.stack([correct(a, variant) for a in atts])  # [S, N, 8]
    base = np.stack([correct(a, "combined") for a in atts])
    return {label: paired_test(shown[:, :, j], base[:, :, j], seed=seed) for j, label in enumerate(LABELS)}


def derm_lesion_masks(dataset: Any, root: str | Path | None = None) -> torch.Tensor:
    """[N, S, S] bool: where the dermoscopy lesion is in each case of `dataset`, on the model's input
    grid (the generator's lesion alpha > 0.5, border-cropped and resized like the image)."""
    from ssnbench.data import synthetic

    root = Path(root or dataset.root)
    info = read_planted(root)["generator"]
    design = synthetic.PlantedDesign.from_overrides(info.get("planted") or {})
    plan = synthetic.plan_cases(int(info["cases"]), int(info["seed"]), design.label_noise)
    by_derm = {c.derm: c for c in plan}
    src = int(info["image_size"])
    grid = (np.arange(src, dtype=np.float32) + 0.5) / src * 2 - 1
    x, y = np.meshgrid(grid, grid)
    crop, size = int(dataset.border_crop), int(dataset.image_size)
    masks = []
    for _, derm in dataset.paths:
        rel = Path(derm).resolve().relative_to((root / "images").resolve()).as_posix()
        case = by_derm.get(rel)
        if case is None:
            raise DatasetError(f"{derm}: not a case of this synthetic release's plan")
        rng = np.random.default_rng([int(info["seed"]), 1, case.index])  # render_pair's first draws
        _, alpha, _ = synthetic.render_lesion(rng, case.shown, case.shown_raw, x=x, y=y, vis=design.derm)
        img = Image.fromarray((np.clip(alpha, 0, 1) * 255).astype(np.uint8))
        img = img.crop((crop, crop, src - crop, src - crop)).resize((size, size), Image.BILINEAR)
        masks.append(torch.from_numpy(np.asarray(img) > 127))
    return torch.stack(masks)


def lesion_mass(att: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(attention mass inside the lesion, lesion share of the key grid) per case, for key-grid
    attention maps [B, h, w] (each summing to 1) and input-grid masks [B, S, S]."""
    frac = F.adaptive_avg_pool2d(mask[:, None].float(), att.shape[-2:])[:, 0]  # lesion fraction per key cell
    return (att * frac).flatten(1).sum(1), frac.flatten(1).mean(1)


def attention_on_lesion(
    model: torch.nn.Module,
    dataset: Any,
    masks: torch.Tensor,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
) -> dict[int, dict[str, float]]:
    """Per cross-attention stage: mean attention mass of the clinic queries inside the dermoscopy
    lesion, mean lesion share of the key grid, fraction of cases with mass > share, its one-sided
    binomial p against 1/2 (see the module docstring). Stages whose key grid is a single cell (a
    small image at the last stage) are left out: there attention cannot prefer any place."""
    from scipy.stats import binomtest

    from ssnbench.explain.attention_maps import capture_attention

    model.eval()
    mass: dict[int, list[torch.Tensor]] = {}
    share: dict[int, list[torch.Tensor]] = {}
    for start in range(0, len(dataset), batch_size):
        rows = range(start, min(len(dataset), start + batch_size))
        pairs = [dataset.transform(dataset.pair(i)) for i in rows]
        clinic = torch.stack([p[0] for p in pairs]).to(device)
        derm = torch.stack([p[1] for p in pairs]).to(device)
        with capture_attention(model, int(clinic.shape[-1])) as maps, torch.no_grad():
            model(clinic, derm)
        for s in maps.stages:
            if maps.to_derm[s][0].numel() < 2:  # one key cell: attention has nowhere else to go
                continue
            m, a = lesion_mass(maps.to_derm[s].cpu(), masks[list(rows)])
            mass.setdefault(s, []).append(m)
            share.setdefault(s, []).append(a)
    out = {}
    for s in mass:
        m, a = torch.cat(mass[s]).double().numpy(), torch.cat(share[s]).double().numpy()
        above = int(np.sum(m > a))
        out[s] = {
            "mass_in_lesion": float(m.mean()),
            "lesion_share": float(a.mean()),
            "ratio": float(m.mean() / max(a.mean(), 1e-12)),
            "frac_cases_above_chance": above / len(m),
            "p_sign_test": float(binomtest(above, len(m), 0.5, alternative="greater").pvalue),
            "n_cases": len(m),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m ssnbench.explain.planted RESULTS_DIR [--model NAME] [--checkpoint CKPT --data RELEASE]`:
    per-label withholding drops of a model's runs against the planted truth, and the attention-on-
    lesion measure of a checkpoint; prints Markdown tables (the closing-note numbers)."""
    import argparse

    from ssnbench.report import load_results

    parser = argparse.ArgumentParser(prog="python -m ssnbench.explain.planted")
    parser.add_argument("results", help="a suite's results folder (result records with attribution)")
    parser.add_argument(
        "--model", default=None, help="model name (default: the suite's first two-image model)"
    )
    parser.add_argument("--checkpoint", default=None, help="a checkpoint for the attention-on-lesion measure")
    parser.add_argument("--data", default=None, help="the synthetic release (default: from the records)")
    args = parser.parse_args(argv)
    records = [r for r in load_results(args.results) if isinstance(r.get("attribution"), dict)]
    if not records:
        raise DatasetError(f"{args.results}: no result records with an attribution entry")
    name = args.model or sorted(records, key=lambda r: r.get("model_index", 0))[0]["model"]["name"]
    runs = [r for r in records if r["model"]["name"] == name]
    root = Path(args.data or runs[0]["dataset"]["root"])
    truth = read_planted(root)["planted"]
    extra = set(truth["expected"]["clinic_extra_labels"])
    print(f"## {name}: accuracy change per label when a modality is withheld ({len(runs)} seeds)\n")
    print(
        f"Planted: the clinical photo shows {', '.join(sorted(extra)) or 'nothing'} better than dermoscopy.\n"
    )
    print("| label | planted clinic cue | Δ no clinic (pp) | 95% CI | p | Δ no derm (pp) | 95% CI | p |")
    print("| :--- | :---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    no_c, no_d = label_drops(runs, "no_clinic"), label_drops(runs, "no_derm")
    for label in no_c:
        cells = []
        for t in (no_c[label], no_d[label]):
            cells += [
                f"{100 * t['diff']:+.1f}",
                f"[{100 * t['ci_low']:+.1f}, {100 * t['ci_high']:+.1f}]",
                f"{t['p']:.3g}",
            ]
        print(f"| {label} | {'yes' if label in extra else ''} | " + " | ".join(cells) + " |")
    if args.checkpoint:
        from ssnbench.explain.commands import open_checkpoint

        model, _, data = open_checkpoint(args.checkpoint, root, "test", "cpu")
        result = attention_on_lesion(model, data, derm_lesion_masks(data, root))
        print(f"\n## {args.checkpoint}: clinic-query attention on the dermoscopy lesion (test split)\n")
        print(
            "| stage | mass in lesion | lesion share (chance) | ratio | cases above chance | p (sign test) |"
        )
        print("| ---: | ---: | ---: | ---: | ---: | ---: |")
        for s, v in result.items():
            print(
                f"| {s} | {v['mass_in_lesion']:.3f} | {v['lesion_share']:.3f} | {v['ratio']:.2f} | "
                f"{100 * v['frac_cases_above_chance']:.0f}% of {v['n_cases']} | {v['p_sign_test']:.2g} |"
            )
    return 0


if __name__ == "__main__":
    import sys

    from ssnbench.errors import UserError

    try:
        raise SystemExit(main())
    except UserError as err:
        print(f"ssnbench: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
