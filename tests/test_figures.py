"""Tests for utils.loop.figures: each figure function writes one valid, non-empty PNG."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from utils.loop.figures import draw_boxes, save_score_distribution, save_uncertainty_map

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_valid_png(path: Path, min_bytes: int = 10_000) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > min_bytes
    with Image.open(path) as image:
        image.verify()


def fake_sample(height: int = 60, width: int = 90) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:height, :width]
    mask = (((yy - 30) / 20) ** 2 + ((xx - 45) / 30) ** 2 < 1).astype(np.uint8)
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    mean_pred = np.clip(mask * 0.8 + rng.normal(0, 0.1, size=mask.shape), 0, 1)
    uncertainty = mean_pred * (1 - mean_pred)
    return {"image": image, "mask": mask, "mean_pred": mean_pred, "uncertainty": uncertainty}


def test_uncertainty_map_writes_png(tmp_path: Path) -> None:
    path = tmp_path / "maps" / "cycle_3" / "train_12.png"  # parents do not exist yet
    written = save_uncertainty_map(
        path, **fake_sample(), score=0.1234, name="train_12", heuristic="bald"
    )
    assert written == path
    assert_valid_png(path)
    # Figures are closed, so long runs do not accumulate them.
    assert plt.get_fignums() == []
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_uncertainty_map_constant_uncertainty(tmp_path: Path) -> None:
    sample = fake_sample()
    sample["uncertainty"] = np.zeros_like(sample["mean_pred"])
    path = save_uncertainty_map(
        tmp_path / "flat.png", **sample, score=0.0, name="x", heuristic="variance"
    )
    assert_valid_png(path)


def test_uncertainty_map_rejects_mismatched_shapes(tmp_path: Path) -> None:
    sample = fake_sample()
    sample["mask"] = sample["mask"][:-1]
    with pytest.raises(ValueError, match="mask"):
        save_uncertainty_map(tmp_path / "bad.png", **sample, score=0.0, name="x", heuristic="bald")
    assert plt.get_fignums() == []


def test_score_distribution_writes_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    pool = rng.gamma(2.0, 0.05, size=80)
    acquired = np.sort(pool)[-4:]
    path = save_score_distribution(
        tmp_path / "scores" / "bald_cycle2.png", pool, acquired, "bald", 2
    )
    assert_valid_png(path)
    assert plt.get_fignums() == []


@pytest.mark.parametrize(
    ("pool", "acquired"),
    [
        (np.array([]), np.array([])),
        (np.array([0.5, np.nan, 0.5, np.inf]), np.array([0.5])),
    ],
    ids=["empty", "constant-with-non-finite"],
)
def test_score_distribution_degenerate_inputs(
    tmp_path: Path, pool: np.ndarray, acquired: np.ndarray
) -> None:
    path = save_score_distribution(tmp_path / "s.png", pool, acquired, "random", 0)
    assert_valid_png(path, min_bytes=5_000)


def test_region_boxes_are_outlined_on_their_pixels(tmp_path: Path) -> None:
    fig, ax = plt.subplots()
    ax.imshow(np.zeros((60, 90)))
    draw_boxes(ax, [(0, 32, 64, 90), (32, 60, 0, 32)], "cyan")  # y0, y1, x0, x1; edge clipped
    # imshow puts pixel (r, c) at (c, r), its edges half a pixel away.
    outlines = [(p.get_x(), p.get_y(), p.get_width(), p.get_height()) for p in ax.patches]
    assert outlines == [(63.5, -0.5, 26, 32), (-0.5, 31.5, 32, 28)]
    plt.close(fig)
    path = save_uncertainty_map(
        tmp_path / "train_3.png",
        **fake_sample(),
        score=0.5,
        name="train_3",
        heuristic="entropy",
        boxes=[(0, 32, 64, 90)],
    )
    assert_valid_png(path)
    assert plt.get_fignums() == []
