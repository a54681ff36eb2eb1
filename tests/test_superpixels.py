"""Superpixel regions (``region_shape=superpixel``): segments, masked pooling and reductions,
partial-mask crops, and a run end to end."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from active import ex
from data.regions import IGNORE, RegionLabels, superpixel_segments
from heuristics.reductions import REDUCTIONS, ReductionSettings, context_margin, pool_regions
from tests.conftest import tiny_config


def two_colour_image() -> torch.Tensor:
    """uint8 [3, 32, 48]: red left of column 20, blue right of it."""
    image = torch.zeros(3, 32, 48, dtype=torch.uint8)
    image[0, :, :20] = 200
    image[2, :, 20:] = 180
    return image


def test_superpixels_follow_a_colour_edge_and_are_numbered_by_appearance() -> None:
    # Two regions' worth of area: SLIC splits at the edge, not at the middle column 24.
    segments = superpixel_segments(two_colour_image(), (32, 24))
    assert segments.dtype == np.int32
    expected = np.zeros((32, 48), dtype=np.int32)
    expected[:, 20:] = 1
    np.testing.assert_array_equal(segments, expected)


def test_region_labels_of_superpixels_count_their_own_pixels() -> None:
    segments = np.zeros((6, 8), dtype=np.int32)
    segments[:, 5:] = 1
    segments[4:, :3] = 2  # an L-shaped segment 0 remains: 6*5 - 2*3 = 24 pixels
    labels = RegionLabels([(6, 8)], (4, 4), [segments])
    assert labels.areas == [[24, 18, 6]]
    assert labels.boxes == [[(0, 6, 0, 5), (0, 6, 5, 8), (4, 6, 0, 3)]]
    assert labels.area((0, 2)) == 6
    np.testing.assert_array_equal(labels.region_mask(0, 0), segments[:, :5] == 0)
    labels.label([(0, 0), (0, 2)])
    assert labels.labelled_pixels() == 30
    np.testing.assert_array_equal(labels.annotated(0), segments != 1)
    assert labels.pool() == [(0, 1)]
    # Tiles fill their boxes: no mask.
    assert RegionLabels([(6, 8)], (4, 4)).region_mask(0, 0) is None


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
def test_a_full_mask_changes_no_reduction(name: str) -> None:
    generator = torch.Generator().manual_seed(0)
    pixel_map = torch.rand(2, 5, 7, generator=generator)
    probs = torch.rand(2, 2, 5, 7, 3, generator=generator).softmax(1)
    settings = ReductionSettings(topq_percent=30.0, foreground_band=1)
    reduce = REDUCTIONS[name]
    full = torch.ones(2, 5, 7, dtype=torch.bool)
    torch.testing.assert_close(
        reduce(pixel_map, probs, settings, mask=full), reduce(pixel_map, probs, settings)
    )


def test_masked_mean_and_topq_by_hand() -> None:
    pixel_map = torch.tensor([[[0.1, 0.9, 0.5], [0.3, 0.7, 0.2]]])  # [1, 2, 3]
    mask = torch.tensor([[[True, False, True], [True, True, False]]])  # 0.1, 0.5, 0.3, 0.7
    probs = torch.full((1, 2, 2, 3, 1), 0.5)
    settings = ReductionSettings(topq_percent=50.0)
    assert float(REDUCTIONS["mean"](pixel_map, probs, settings, mask=mask)) == pytest.approx(0.4)
    # Top half of the 4 masked pixels: 0.7 and 0.5; the unmasked 0.9 is left out.
    assert float(REDUCTIONS["topq"](pixel_map, probs, settings, mask=mask)) == pytest.approx(0.6)
    # No predicted gland (class 0 wins everywhere): foreground falls back to the masked mean.
    probs[:, 0] = 0.9
    probs[:, 1] = 0.1
    got = REDUCTIONS["foreground"](pixel_map, probs, ReductionSettings(foreground_band=0), mask)
    assert float(got) == pytest.approx(0.4)


def test_pooling_over_a_superpixel_sees_only_its_pixels() -> None:
    segments = np.zeros((4, 4), dtype=np.int32)
    segments[1:3, 1:3] = 1  # a square inside the ring of segment 0
    labels = RegionLabels([(4, 4)], (2, 2), [segments])
    pixel_map = torch.arange(16, dtype=torch.float32).reshape(1, 4, 4)
    probs = torch.full((1, 2, 4, 4, 1), 0.5)
    masks = [torch.from_numpy(labels.region_mask(0, i)) for i in range(2)]
    settings = ReductionSettings()
    scores = pool_regions(
        pixel_map,
        probs,
        labels.boxes[0],
        lambda m, p, mask=None: REDUCTIONS["mean"](m, p, settings, mask=mask),
        masks,
    )
    inner = [5.0, 6.0, 9.0, 10.0]
    ring = [v for v in range(16) if v not in inner]
    np.testing.assert_allclose(scores, [np.mean(ring), np.mean(inner)])
    # With a margin (foreground's band) the reduction sees around the box, yet still scores
    # only the superpixel's own pixels: band 1 around a gland predicted at pixel 15 covers
    # 11, 14 and 15 of the ring and 10 of the square.
    probs[0, :, 3, 3] = torch.tensor([[0.1], [0.9]])
    band = ReductionSettings(foreground_band=1)
    banded = pool_regions(
        pixel_map,
        probs,
        labels.boxes[0],
        lambda m, p, mask=None: REDUCTIONS["foreground"](m, p, band, mask=mask),
        masks,
        margin=context_margin("foreground", band),
    )
    np.testing.assert_allclose(banded, [np.mean([11.0, 14.0, 15.0]), 10.0])


def test_training_crops_of_superpixels_hide_everything_else(synthetic_root: Path) -> None:
    from data.glas import ImageStore, read_split
    from data.partial_masks import PartialMaskDataset
    from data.transforms import train_transform

    store = ImageStore(synthetic_root / "GlaS", read_split(synthetic_root / "splits", "train"))
    segments = [superpixel_segments(image, (24, 24)) for image in store.images]
    labels = RegionLabels([tuple(im.shape[1:]) for im in store.images], (24, 24), segments)
    labels.label([(0, 1), (3, 2)])
    altered = copy.copy(store)
    altered.masks = [1 - m for m in store.masks]  # every label flipped...
    for image in (0, 3):  # ...except on the labelled superpixels' own pixels
        keep = torch.from_numpy(labels.annotated(image))
        altered.masks[image][keep] = store.masks[image][keep]
    samples = []
    for source in (store, altered):
        data = PartialMaskDataset(source, labels, (24, 24), train_transform((24, 24), False), 3072)
        torch.manual_seed(5)
        samples.append([data[i] for i in range(20)])
    for (image_a, mask_a, *_), (image_b, mask_b, *_) in zip(*samples, strict=True):
        assert torch.equal(image_a, image_b) and torch.equal(mask_a, mask_b)
        assert (mask_a != IGNORE).any()  # no crop without annotation


def superpixel_config(root: Path, results: Path, **updates) -> dict:
    """A one-cycle superpixel run on the tiny synthetic GlaS."""
    return tiny_config(
        root / "GlaS",
        root / "splits",
        results,
        label_unit="region",
        region_shape="superpixel",
        region_size=[16, 16],
        al_cycles=1,
        **updates,
    )


def test_superpixel_run_end_to_end(synthetic_root: Path, tmp_path: Path) -> None:
    config = superpixel_config(synthetic_root, tmp_path, save_maps=True)
    ex.run(config_updates=config)
    record = json.loads((tmp_path / "bald-superpixel_0.json").read_text())
    assert record["complete"] and record["label_unit"] == "region"
    assert record["labelled_pixels"][1] > record["labelled_pixels"][0]
    chosen = [(a["name"], a["region"]) for a in record["acquired"][0]]
    assert len(chosen) == len(set(chosen)) > 0
    maps = tmp_path / "maps" / "bald-superpixel_0" / "cycle_0"
    assert {p.name for p in maps.iterdir()} == {f"{name}.png" for name, _ in chosen}


def test_unknown_region_shape_is_one_line(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.test_active import expect_exit

    config = tiny_config(synthetic_root / "GlaS", synthetic_root / "splits", tmp_path)
    expect_exit({**config, "region_shape": "hexagon"}, capsys, "region_shape", "superpixel")


def test_resume_refuses_superpixels_that_changed(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.test_active import expect_exit

    config = superpixel_config(synthetic_root, tmp_path, epochs=1)
    ex.run(config_updates=config)
    state_path = tmp_path / "bald-superpixel_0.state.json"
    state = json.loads(state_path.read_text())
    assert len(state["regions_digest"]) == 16
    # As if another scikit-image had segmented the images of an interrupted run differently.
    state.update(regions_digest="0" * 16, finished=False)
    state_path.write_text(json.dumps(state))
    expect_exit(config, capsys, "superpixels differ", "overwrite=True")
