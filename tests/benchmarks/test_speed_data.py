"""Speed of the data loader: images/s delivered from a small synthetic release (train split, with
augmentation, decoded images cached in memory as in a real run). Compare with the images/s a
training step consumes (test_speed_models / `ssnbench bench models`): the loader must stay ahead."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from torch.utils.data import DataLoader

from ssnbench.data import derm7pt, synthetic

CASES, SOURCE_SIZE, IMAGE_SIZE, BATCH = 60, 128, 96, 16  # demo-like settings, small release


@pytest.fixture(scope="module")
def train_set(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = synthetic.generate(Path(tmp_path_factory.mktemp("synthetic")), cases=CASES, seed=0,
                              image_size=SOURCE_SIZE)
    return derm7pt.make_datasets(root, image_size=IMAGE_SIZE)["train"]


@pytest.mark.benchmark(group="data-loader")
@pytest.mark.benchmark_threshold(25)
def test_loader_epoch(train_set: Any, timed: Callable[..., Any]) -> None:
    loader = DataLoader(train_set, batch_size=BATCH, shuffle=True, num_workers=0, drop_last=False)

    def epoch() -> int:
        seen = 0
        for batch in loader:
            seen += batch["clinic"].shape[0] + batch["derm"].shape[0]
        return seen

    seen = timed(epoch, images=2 * len(train_set))
    assert seen == 2 * len(train_set)
