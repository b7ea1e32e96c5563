"""Paired augmentation: one geometric transform for both images, deterministic, picklable datasets."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from ssnbench.data.derm7pt import make_datasets
from ssnbench.data.synthetic import generate
from ssnbench.data.transforms import PairTransform, load_image


def _asymmetric_image(size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8)
    img[:, :4, :10] = 255  # a corner mark, so flips and rotations are all distinguishable
    return img


def test_pair_gets_identical_geometry():
    img = _asymmetric_image()
    pair = torch.stack([img, img])
    transform = PairTransform(photometric=False, normalize=False, ssr_p=0.7)
    changed = 0
    for seed in range(40):
        clinic, derm = transform(pair, torch.Generator().manual_seed(seed))
        assert torch.equal(clinic, derm)
        changed += not torch.allclose(clinic, img.float() / 255)
    assert changed > 30  # and it really transforms


def test_pair_geometry_equals_single_image_geometry():
    """Different images, same draw: each output equals the transform of that image alone."""
    a, b = _asymmetric_image(), _asymmetric_image().flip(-1)
    transform = PairTransform(photometric=False, normalize=False, ssr_p=1.0)
    clinic, derm = transform(torch.stack([a, b]), torch.Generator().manual_seed(5))
    alone_a = transform.geometric(a.float()[None] / 255, torch.Generator().manual_seed(5))[0]
    alone_b = transform.geometric(b.float()[None] / 255, torch.Generator().manual_seed(5))[0]
    assert torch.allclose(clinic, alone_a, atol=1e-6) and torch.allclose(derm, alone_b, atol=1e-6)


def test_photometric_jitter_is_per_image():
    img = _asymmetric_image()
    transform = PairTransform(normalize=False)
    differs = sum(not torch.equal(*transform(torch.stack([img, img]), torch.Generator().manual_seed(s)))
                  for s in range(10))
    assert differs >= 8


def test_no_augment_is_identity_plus_normalisation():
    img = _asymmetric_image()
    clinic, _ = PairTransform(augment=False, normalize=False)(torch.stack([img, img]))
    assert torch.equal(clinic, img.float() / 255)


def test_border_crop_and_resize(tmp_path):
    array = np.zeros((60, 80, 3), dtype=np.uint8)
    array[5:-5, 5:-5] = (200, 100, 50)
    Image.fromarray(array).save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png", 16, border_crop=5)
    assert out.shape == (3, 16, 16) and out.dtype == torch.uint8
    assert torch.equal(out[:, 0, 0], torch.tensor([200, 100, 50], dtype=torch.uint8))


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = generate(tmp_path_factory.mktemp("syn"), cases=24, seed=1, image_size=40)
    return make_datasets(root, image_size=32, border_crop=2)


def test_train_items_deterministic_given_torch_seed(datasets):
    train = datasets["train"]
    torch.manual_seed(123)
    first = train[0]
    torch.manual_seed(123)
    second = train[0]
    assert torch.equal(first["clinic"], second["clinic"]) and torch.equal(first["derm"], second["derm"])
    clone = pickle.loads(pickle.dumps(train))  # DataLoader workers (spawn) need this
    torch.manual_seed(123)
    third = clone[0]
    assert torch.equal(first["derm"], third["derm"]) and first["case_id"] == third["case_id"]


def test_dataloader_batches(datasets):
    loader = torch.utils.data.DataLoader(datasets["train"], batch_size=4, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    batch = next(iter(loader))
    assert batch["clinic"].shape == (4, 3, 32, 32) and batch["labels"].shape == (4, 8)
    assert len(batch["case_id"]) == 4
