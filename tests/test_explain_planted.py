"""Planted-truth checks: per-label withholding drops, the dermoscopy lesion masks, the attention-mass
measure."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from explain_toys import ClinicOnly, ToyPairs

from ssnbench.explain import attribution, planted


def test_label_drops_find_the_label_the_clinical_photo_carries() -> None:
    att = attribution.compute(ClinicOnly(), ToyPairs(), {"clinic": 0.2, "derm": 0.5, "fused": 0.3})
    records = [{"seed": s, "attribution": att} for s in (0, 1)]
    drops = planted.label_drops(records, "no_clinic")
    assert drops["DIAG"]["diff"] == pytest.approx(-0.5) and drops["DIAG"]["ci_high"] < 0
    assert all(drops[k]["diff"] == 0.0 for k in ("PN", "BWV", "VS", "PIG", "STR", "DaG", "RS"))
    assert planted.label_drops(records, "no_derm")["DIAG"]["diff"] == 0.0


def test_lesion_mass_against_chance() -> None:
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    mask[:, :4, :4] = True  # a quarter of the image
    on = torch.zeros(2, 2, 2)
    on[:, 0, 0] = 1.0  # all attention on the lesion's key cell
    uniform = torch.full((2, 2, 2), 0.25)
    mass, share = planted.lesion_mass(on, mask)
    assert torch.allclose(mass, torch.ones(2)) and torch.allclose(share, torch.full((2,), 0.25))
    mass, share = planted.lesion_mass(uniform, mask)
    assert torch.allclose(mass, share)


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ssnbench.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("planted"), cases=30, seed=0, image_size=32)


def test_derm_lesion_masks_cover_the_drawn_lesion(release: Path) -> None:
    from ssnbench.data.derm7pt import make_datasets

    data = make_datasets(release, image_size=24, border_crop=2, augment=False)["test"]
    masks = planted.derm_lesion_masks(data)
    assert masks.shape == (len(data), 24, 24) and masks.any(dim=(1, 2)).all()
    c = (torch.arange(24) + 0.5) / 12 - 1
    central = torch.hypot(c[:, None], c[None, :]) < 0.85  # inside the dark field-of-view edge
    darker = 0
    for i in range(len(data)):
        grey = data.pair(i)[1].float().mean(0)  # the dermoscopy image
        skin = ~masks[i] & central
        darker += int(skin.any() and grey[masks[i]].mean() < grey[skin].mean())
    assert darker >= 0.8 * len(data)  # the lesion is darker than the skin around it
    assert planted.read_planted(release)["planted"]["expected"]["clinic_extra_labels"]
