"""`ssnbench predict`: apply a run's checkpoint to a Derm7pt split or to a CSV of image pairs.

The images go through exactly the preparation the run used (the checkpoint's data config: size,
border crop, interpolation, normalisation, evaluation batch size, test-time augmentation), so
predicting a checkpoint's own test split reproduces the accuracies of its result file. Output:
one CSV row per case with the predicted class and every class probability of all 8 labels (and
the true class when the data is labelled).
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ssnbench.data.labels import CLASSES, LABELS
from ssnbench.errors import UserError
from ssnbench.results import write_atomic

__all__ = ["PairsDataset", "cli", "predict_checkpoint", "read_pairs", "split_dataset", "write_predictions"]


class PairsDataset(Dataset):
    """Unlabelled (clinic, derm) image pairs, prepared like the checkpoint's evaluation data."""

    def __init__(self, pairs: list[tuple[str, Path, Path]], data: dict[str, Any]) -> None:
        from ssnbench.data.transforms import PairTransform, load_pair_images

        self.case_ids = [c for c, _, _ in pairs]
        self.paths = [(a, b) for _, a, b in pairs]
        self.images = load_pair_images(
            self.paths, data["image_size"], data["border_crop"], interpolation=data["interpolation"]
        )
        self.transform = PairTransform(augment=False, mean=tuple(data["mean"]), std=tuple(data["std"]))

    def __len__(self) -> int:
        return len(self.case_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        clinic, derm = self.transform(self.images[index])
        return {"clinic": clinic, "derm": derm, "case_id": self.case_ids[index]}


def read_pairs(path: Path) -> list[tuple[str, Path, Path]]:
    """(case id, clinic, derm) from a CSV with columns `clinic,derm` (and optionally `case_id`);
    relative paths are relative to the CSV's folder."""
    if not path.is_file():
        raise UserError(f"{path}: pairs CSV not found")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        if "clinic" not in columns or "derm" not in columns:
            raise UserError(f"{path}: expected a header with columns clinic,derm (got {','.join(columns)})")
        rows = list(reader)
    if not rows:
        raise UserError(f"{path}: no image pairs (only a header)")
    pairs = []
    for i, row in enumerate(rows, start=2):
        files = []
        for col in ("clinic", "derm"):
            p = Path((row.get(col) or "").strip()).expanduser()
            p = p if p.is_absolute() else path.parent / p
            if not p.is_file():
                raise UserError(f"{path}: line {i}: {col} image {str(p)!r} not found")
            files.append(p)
        pairs.append(((row.get("case_id") or "").strip() or str(i - 2), files[0], files[1]))
    return pairs


def split_dataset(root: Path, split: str, data: dict[str, Any]) -> Dataset:
    """One split of a release, prepared as a checkpoint's data config says (also used by
    `ssnbench explain` and `ssnbench robustness`)."""
    from ssnbench.data.derm7pt import SPLITS, Derm7ptDataset, load_release

    # absolute, so the image paths written to the CSV work as a --pairs file from any folder
    release = load_release(root.resolve(), drop_no_clinic=bool(data.get("drop_no_clinic")))
    rows = [r for s in SPLITS for r in release.splits[s]] if split == "all" else release.splits[split]
    return Derm7ptDataset(
        split,
        [release.cases[r] for r in rows],
        image_size=data["image_size"],
        border_crop=data["border_crop"],
        normalize=True,
        augment=False,
        cache=True,
        root=release.root,
        interpolation=data["interpolation"],
        mean=tuple(data["mean"]),
        std=tuple(data["std"]),
    )


def predict_checkpoint(
    checkpoint: Path,
    dataset: Dataset | None = None,
    *,
    data_root: Path | None = None,
    split: str = "test",
    pairs: Path | None = None,
    device: torch.device | None = None,
    tta: str | None = "checkpoint",
) -> tuple[Any, dict[str, Any], list[tuple[Path, Path]]]:
    """(train.Predictions, checkpoint meta, image paths) of a checkpoint on a split, pairs or dataset.

    `tta="checkpoint"` uses the test-time augmentation the run used; None or a TTA name overrides it.
    """
    from ssnbench.checkpoint import load_checkpoint
    from ssnbench.train import deterministic, make_loader, predict

    device = device or torch.device("cpu")
    model, meta = load_checkpoint(checkpoint, device)
    data = meta["data"]
    if dataset is None:
        if pairs is not None:
            dataset = PairsDataset(read_pairs(pairs), data)
        elif data_root is not None:
            dataset = split_dataset(data_root, split, data)
        else:
            raise UserError("predict: give --data RELEASE or --pairs CSV")
    tta_name = data.get("tta") if tta == "checkpoint" else tta
    cuda = device.type == "cuda"
    loader = make_loader(
        dataset, batch_size=int(data["eval_batch_size"]), shuffle=False, num_workers=0, seed=0, device=device
    )
    with deterministic(device.type == "cpu"):
        preds = predict(
            model,
            loader,
            loss_fn=None,
            inference_weights=meta["inference_weights"],
            device=device,
            amp=bool(data.get("amp")) and cuda,
            channels_last=bool(data.get("channels_last")) and cuda,
            tta=tta_name,
        )
    return preds, meta, list(getattr(dataset, "paths", []))


def write_predictions(path: Path, preds: Any, paths: list[tuple[Path, Path]]) -> None:
    """One row per case: case_id, clinic, derm, then per label `<L>_pred`, [`<L>_true`], `<L>_p_<CLASS>`."""
    labelled = len(preds.labels) == len(preds.case_ids) and len(preds.case_ids) > 0
    header = ["case_id", "clinic", "derm"]
    for label in LABELS:
        header.append(f"{label}_pred")
        if labelled:
            header.append(f"{label}_true")
        header += [f"{label}_p_{c}" for c in CLASSES[label]]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    for n, case in enumerate(preds.case_ids):
        clinic, derm = paths[n] if n < len(paths) else ("", "")
        row: list[Any] = [case, str(clinic), str(derm)]
        for i, label in enumerate(LABELS):
            p = preds.probs[i][n]
            row.append(CLASSES[label][int(np.argmax(p))])
            if labelled:
                row.append(CLASSES[label][int(preds.labels[n, i])])
            row += [f"{float(x):.6f}" for x in p]
        writer.writerow(row)
    write_atomic(path, buf.getvalue())


def cli(args: Any) -> int:
    """`ssnbench predict CHECKPOINT (--data RELEASE [--split S] | --pairs CSV) [--out CSV]`."""
    from ssnbench.env import pick_device
    from ssnbench.metrics import evaluate

    if (args.data is None) == (args.pairs is None):
        raise UserError("predict: give exactly one of --data RELEASE or --pairs CSV")
    checkpoint = Path(args.checkpoint)
    device = pick_device(args.device)
    tta = "checkpoint" if args.tta is None else (None if args.tta == "none" else args.tta)
    preds, meta, paths = predict_checkpoint(
        checkpoint,
        data_root=Path(args.data) if args.data else None,
        split=args.split,
        pairs=Path(args.pairs) if args.pairs else None,
        device=device,
        tta=tta,
    )
    what = args.split if args.data else Path(args.pairs).stem
    out = Path(args.out) if args.out else checkpoint.parent / f"{meta['job']}.predictions.{what}.csv"
    write_predictions(out, preds, paths)
    print(f"{len(preds.case_ids)} cases -> {out}")
    if len(preds.labels):
        from ssnbench.data.labels import LABELS

        m = evaluate(preds.probs, preds.labels)
        accs = " ".join(f"{k} {m[f'acc_{k}']:.4f}" for k in LABELS)
        print(f"accuracy: avg {m['acc_avg']:.4f}  {accs}")
        run_test = (meta.get("metrics") or {}).get("test") or {}
        if args.data and args.split == "test" and tta == "checkpoint" and run_test:
            keys = [f"acc_{k}" for k in LABELS] + ["acc_avg"]
            same = all(run_test.get(k) == m[k] for k in keys)
            print(
                "matches the run's test accuracies exactly"
                if same
                else "DIFFERS from the run's test accuracies ("
                + ", ".join(f"{k} {run_test.get(k)} vs {m[k]}" for k in keys if run_test.get(k) != m[k])
                + "): another data release or preparation?"
            )
    sys.stdout.flush()
    return 0
