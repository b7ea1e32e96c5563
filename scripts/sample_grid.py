"""Write docs/synthetic_samples.png: clinic vs derm image pairs of the synthetic generator, per diagnosis.

Usage: python scripts/sample_grid.py [--out docs/synthetic_samples.png] [--per-class 3] [--size 128]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ssnbench.data.labels import CLASSES, LABELS
from ssnbench.data.synthetic import plan_cases, render_pair


def describe(shown: tuple[int, ...]) -> str:
    """Short text of the criteria an image shows, e.g. 'PN:ATP BWV STR:IR'."""
    parts = []
    for j, name in enumerate(LABELS[1:], start=1):
        cls = CLASSES[name][shown[j]]
        if cls != "ABS":
            parts.append(name if cls == "PRS" else f"{name}:{cls}")
    return " ".join(parts) or "no criteria"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/synthetic_samples.png")
    parser.add_argument("--per-class", type=int, default=3)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    plan = plan_cases(1011, args.seed)
    size, pad, head, label_h = args.size, 4, 18, 14
    diags = CLASSES["DIAG"]
    cols = args.per_class
    width = 60 + cols * (2 * size + 3 * pad)
    height = head + len(diags) * (size + label_h + pad)
    grid = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for c in range(cols):
        x = 60 + c * (2 * size + 3 * pad)
        draw.text((x + size // 2 - 14, 3), "clinic", fill=(0, 0, 0))
        draw.text((x + size + pad + size // 2 - 12, 3), "derm", fill=(0, 0, 0))
    for r, diag in enumerate(diags):
        y = head + r * (size + label_h + pad)
        draw.text((4, y + size // 2 - 6), diag, fill=(0, 0, 0))
        picks = [c for c in plan if c.shown == c.labels and c.labels[0] == r and c.clinic != c.derm][:cols]
        for c, case in enumerate(picks):
            clinic, derm = render_pair(case, args.seed, size)
            x = 60 + c * (2 * size + 3 * pad)
            grid.paste(Image.fromarray(clinic), (x, y))
            grid.paste(Image.fromarray(derm), (x + size + pad, y))
            draw.text((x, y + size + 1), f"{case.raw[0][:22]} | {describe(case.shown)}"[:48], fill=(0, 0, 0))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB, {np.prod(grid.size)} px)")


if __name__ == "__main__":
    main()
