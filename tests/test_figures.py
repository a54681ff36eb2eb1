"""Tests for utils.loop.figures: each figure function writes one valid, non-empty PNG that shows
its inputs (read back from the figure's artists before it is saved and closed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

import utils.loop.figures as figures
from utils.loop.figures import draw_boxes, save_score_distribution, save_uncertainty_map

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_valid_png(path: Path, min_bytes: int = 10_000) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > min_bytes
    with Image.open(path) as image:
        image.verify()


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    """The figures the module saves, in order, kept for inspection after they are written."""
    figs: list[Figure] = []
    real_save = figures.save_figure

    def keep_then_save(fig: Figure, path: str | Path) -> Path:
        figs.append(fig)
        return real_save(fig, path)

    monkeypatch.setattr(figures, "save_figure", keep_then_save)
    return figs


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


def test_uncertainty_map_shows_its_inputs(tmp_path: Path, drawn: list[Figure]) -> None:
    sample = fake_sample()
    sample["uncertainty"][0, 0] = np.nan  # left out of the colour scale, not made its bound
    sample["mean_pred"] = 0.2 + 0.5 * sample["mean_pred"]  # short of 0 and 1
    save_uncertainty_map(
        tmp_path / "m.png", **sample, score=0.1234, name="train_7", heuristic="bald"
    )
    (fig,) = drawn
    ax_image, ax_mask, ax_pred, ax_unc = fig.axes[:4]
    panels = {ax: ax.get_images()[0] for ax in (ax_image, ax_mask, ax_pred, ax_unc)}
    np.testing.assert_array_equal(panels[ax_image].get_array(), sample["image"])
    np.testing.assert_array_equal(panels[ax_mask].get_array(), sample["mask"])
    np.testing.assert_array_equal(panels[ax_pred].get_array(), sample["mean_pred"])
    np.testing.assert_array_equal(
        np.ma.filled(panels[ax_unc].get_array(), np.nan), sample["uncertainty"]
    )
    # Probabilities on a fixed scale; the uncertainty on its own finite range.
    assert panels[ax_pred].get_clim() == (0.0, 1.0)
    finite = sample["uncertainty"][np.isfinite(sample["uncertainty"])]
    assert panels[ax_unc].get_clim() == (finite.min(), finite.max())
    assert ax_unc.get_title() == "uncertainty (bald)"
    assert fig.get_suptitle() == "train_7   |   heuristic: bald   |   score: 0.1234"
    assert not ax_image.patches and not ax_unc.patches  # no region: nothing outlined


def test_uncertainty_map_constant_map_gets_a_colour_range(
    tmp_path: Path, drawn: list[Figure]
) -> None:
    sample = fake_sample()
    sample["uncertainty"] = np.full_like(sample["mean_pred"], 0.25)
    save_uncertainty_map(tmp_path / "c.png", **sample, score=0.25, name="x", heuristic="variance")
    low, high = drawn[0].axes[3].get_images()[0].get_clim()
    assert low == 0.25 < high


def test_uncertainty_map_outlines_regions_on_image_and_uncertainty(
    tmp_path: Path, drawn: list[Figure]
) -> None:
    boxes = [(0, 32, 64, 90), (32, 60, 0, 32)]
    save_uncertainty_map(
        tmp_path / "b.png", **fake_sample(), score=0.5, name="t", heuristic="bald", boxes=boxes
    )
    ax_image, ax_mask, ax_pred, ax_unc = drawn[0].axes[:4]
    assert [len(ax.patches) for ax in (ax_image, ax_mask, ax_pred, ax_unc)] == [2, 0, 0, 2]
    assert "2 regions, best score: 0.5" in drawn[0].get_suptitle()

    region_mask = np.zeros((60, 90), dtype=bool)
    region_mask[10:20, 10:30] = True
    save_uncertainty_map(
        tmp_path / "s.png",
        **fake_sample(),
        score=0.5,
        name="t",
        heuristic="bald",
        region_mask=region_mask,
    )
    ax_image, ax_mask, ax_pred, ax_unc = drawn[1].axes[:4]
    # One contour set on each of the two panels, outlining the superpixels' edge.
    assert [len(ax.collections) for ax in (ax_image, ax_mask, ax_pred, ax_unc)] == [1, 0, 0, 1]
    (outline,) = ax_unc.collections[0].get_paths()
    ys, xs = outline.vertices[:, 1], outline.vertices[:, 0]
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == pytest.approx((9.5, 19.5, 9.5, 29.5))
    assert "acquired superpixels outlined" in drawn[1].get_suptitle()


def test_score_distribution_shows_pool_and_picks(tmp_path: Path, drawn: list[Figure]) -> None:
    pool = np.array([0.1, 0.2, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, np.nan, np.inf])
    acquired = np.array([0.8, 0.7, np.nan])
    save_score_distribution(tmp_path / "d.png", pool, acquired, "entropy", 4)
    (ax,) = drawn[0].axes
    heights = [bar.get_height() for bar in ax.patches]
    assert len(heights) == 5  # sqrt(9 finite scores) = 3, raised to the floor of 5 bins
    assert sum(heights) == 9  # every finite pool score, once
    # The vertical lines at the picks (the legend's non-finite entry is a line with no data).
    xs = [line.get_xdata() for line in ax.get_lines() if len(line.get_xdata())]
    assert all(x[0] == x[1] for x in xs)
    assert sorted(x[0] for x in xs) == [0.7, 0.8]
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert sorted(labels) == [
        "3 non-finite scores not shown",
        "acquired (2 images)",
        "pool (9 images)",
    ]
    assert ax.get_title() == "entropy: pool score distribution, cycle 4"
