"""Batched augmentation on the device: image and mask move together, seeded, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from active import ex
from data.device_augment import DeviceAugmenter
from tests.conftest import tiny_config


def _black_and_white(seed: int, height: int = 20, width: int = 28):
    mask = torch.rand(height, width, generator=torch.Generator().manual_seed(seed)) < 0.4
    image = (mask * 255).to(torch.uint8).expand(3, -1, -1).clone()  # grey: jitter keeps it grey
    return image, mask.to(torch.uint8)


def test_image_and_mask_are_cropped_turned_and_flipped_together() -> None:
    pairs = [_black_and_white(seed) for seed in range(4)]
    augmenter = DeviceAugmenter(
        [p[0] for p in pairs],
        [p[1] for p in pairs],
        (12, 12),
        torch.device("cpu"),
        torch.Generator().manual_seed(0),
    )
    seen = set()
    for _ in range(20):
        images, masks = augmenter.batch([0, 1, 2, 3, 1])
        assert images.shape == (5, 3, 12, 12) and masks.shape == (5, 12, 12)
        assert images.dtype == torch.float32 and masks.dtype == torch.int64
        assert 0.0 <= images.min() and images.max() <= 1.0
        # Brightness, contrast and saturation of +-10 % keep white above and black below 0.5.
        assert torch.equal((images[:, 0] > 0.5).long(), masks)
        seen.add(masks[1].numpy().tobytes())
    assert len(seen) > 10  # crops, turns and flips vary


def test_same_seed_same_batches() -> None:
    pairs = [_black_and_white(seed) for seed in range(3)]

    def batches(seed: int) -> list[torch.Tensor]:
        augmenter = DeviceAugmenter(
            [p[0] for p in pairs],
            [p[1] for p in pairs],
            (10, 10),
            torch.device("cpu"),
            torch.Generator().manual_seed(seed),
        )
        return [augmenter.batch([0, 1, 2])[0] for _ in range(3)]

    assert all(torch.equal(a, b) for a, b in zip(batches(5), batches(5), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(batches(5), batches(6), strict=True))


def test_colour_jitter_changes_colour_images_within_the_ranges() -> None:
    image = torch.full((3, 16, 16), 128, dtype=torch.uint8)
    image[0] = 200
    augmenter = DeviceAugmenter(
        [image],
        [torch.zeros(16, 16, dtype=torch.uint8)],
        (8, 8),
        torch.device("cpu"),
        torch.Generator().manual_seed(1),
    )
    images, _ = augmenter.batch([0] * 16)
    red = images[:, 0].mean((1, 2))
    assert red.std() > 0  # a factor per image
    assert (red - 200 / 255).abs().max() < 0.2


def test_colour_jitter_equals_torchvisions_adjustments_in_order(monkeypatch) -> None:
    from torchvision.transforms.v2 import functional as TF

    import data.device_augment as device_augment

    factors = iter(
        [
            torch.tensor([0.8, 1.15]),  # brightness
            torch.tensor([1.2, 0.85]),  # contrast
            torch.tensor([0.9, 1.1]),  # saturation
            torch.tensor([0.03, -0.04]),  # hue
        ]
    )
    monkeypatch.setattr(device_augment, "_uniform", lambda *_: next(factors))
    images = torch.rand(2, 3, 6, 5, generator=torch.Generator().manual_seed(0))
    augmenter = DeviceAugmenter(
        [torch.zeros(3, 8, 8, dtype=torch.uint8)],
        [torch.zeros(8, 8, dtype=torch.uint8)],
        (8, 8),
        torch.device("cpu"),
        torch.Generator(),
    )
    jittered = augmenter.jitter(images)
    for i, (b, c, s, h) in enumerate(
        zip([0.8, 1.15], [1.2, 0.85], [0.9, 1.1], [0.03, -0.04], strict=True)
    ):
        expected = TF.adjust_hue(
            TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(images[i], b), c), s), h
        )
        torch.testing.assert_close(jittered[i], expected, atol=1e-6, rtol=0)


def test_a_run_with_device_augmentation_trains_on_the_labelled_images(
    synthetic_root: Path, tmp_path: Path, monkeypatch
) -> None:
    import utils.loop.run

    given = []  # the images each cycle's augmenter crops from

    class Recording(DeviceAugmenter):
        def __init__(self, images, masks, *args) -> None:
            given.append(len(images))
            super().__init__(images, masks, *args)

    monkeypatch.setattr(utils.loop.run, "DeviceAugmenter", Recording)
    config = tiny_config(
        synthetic_root / "GlaS", synthetic_root / "splits", tmp_path, augment_on="device"
    )
    ex.run(config_updates=config)
    record = json.loads((tmp_path / "bald_0.json").read_text())
    assert record["complete"] and np.all(np.isfinite(record["test_dice"]))
    assert all(np.isfinite(t["last_train_loss"]) for t in record["train"])
    assert given == record["n_labelled"] == [4, 6, 8]  # the labelled set, not the pool
