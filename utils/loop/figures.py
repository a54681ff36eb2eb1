"""Diagnostic figures written during active learning.

``active.py`` calls these with plain numpy arrays so that this module never needs torch. Every
figure is written atomically (temporary file in the same directory, then ``os.replace``) so a run
killed mid-save never leaves a truncated PNG behind, and every figure is closed after saving so a
long run that saves hundreds of maps does not leak memory.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

# Headless: active learning runs on servers without a display.
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from utils.io import save_figure  # noqa: E402

__all__ = ["draw_boxes", "save_score_distribution", "save_uncertainty_map"]


def _check_map_shapes(
    image: np.ndarray, mask: np.ndarray, mean_pred: np.ndarray, uncertainty: np.ndarray
) -> None:
    """Raise ``ValueError`` when the four arrays do not describe the same H x W image."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must have shape [H, W, 3], got {image.shape}")
    height_width = image.shape[:2]
    for label, array in (("mask", mask), ("mean_pred", mean_pred), ("uncertainty", uncertainty)):
        if array.shape != height_width:
            raise ValueError(
                f"{label} must have shape {height_width} like the image, got {array.shape}"
            )


def draw_boxes(ax: Axes, boxes: Sequence[tuple[int, int, int, int]], colour: str) -> None:
    """Outline each region ``(y0, y1, x0, x1)`` (half-open pixel bounds) on an ``imshow`` axis,
    whose pixel centres sit at integer coordinates, so a box's edges are at ``y0 - 0.5`` etc."""
    for y0, y1, x0, x1 in boxes:
        ax.add_patch(
            Rectangle(
                (x0 - 0.5, y0 - 0.5),
                x1 - x0,
                y1 - y0,
                fill=False,
                edgecolor=colour,
                linewidth=1.5,
            )
        )


def save_uncertainty_map(
    path: str | os.PathLike[str],
    image: np.ndarray,
    mask: np.ndarray,
    mean_pred: np.ndarray,
    uncertainty: np.ndarray,
    score: float,
    name: str,
    heuristic: str,
    boxes: Sequence[tuple[int, int, int, int]] = (),
    region_mask: np.ndarray | None = None,
) -> Path:
    """Write a 2 x 2 panel PNG explaining why an image was (or was not) acquired.

    Panels: input image, ground-truth gland mask, mean predicted gland probability (fixed 0..1
    colour scale so maps are comparable across images and cycles) and the heuristic's per-pixel
    uncertainty (colour scale fitted to the map, since BALD, entropy and variance live on
    different scales). The title names the image, the heuristic and the image-level score.

    Args:
        path: destination PNG; parent directories are created.
        image: RGB image, shape [H, W, 3], uint8 (floats in [0, 1] also work).
        mask: ground truth, shape [H, W], values in {0, 1}.
        mean_pred: mean predicted gland probability over MC samples, shape [H, W].
        uncertainty: per-pixel uncertainty of ``heuristic``, shape [H, W].
        score: the image-level acquisition score.
        name: image identifier (e.g. ``train_12``).
        heuristic: heuristic name (e.g. ``bald``).
        boxes: regions acquired in this image, ``(y0, y1, x0, x1)``, outlined on the image and
            on the uncertainty map (region labelling); ``score`` is then the best of theirs.
        region_mask: bool ``[H, W]`` of the acquired superpixels' pixels, whose outline is drawn
            like the boxes.

    Returns:
        The path written.
    """
    image = np.asarray(image)
    mask = np.asarray(mask)
    mean_pred = np.asarray(mean_pred, dtype=float)
    uncertainty = np.asarray(uncertainty, dtype=float)
    _check_map_shapes(image, mask, mean_pred, uncertainty)

    height, width = mask.shape
    # Size panels to the image aspect ratio so GlaS's landscape crops are not squashed.
    panel_width = 4.8
    panel_height = panel_width * height / max(width, 1)
    fig, axes = plt.subplots(
        2, 2, figsize=(2 * panel_width + 1.6, 2 * panel_height + 1.2), layout="constrained"
    )
    ax_image, ax_mask, ax_pred, ax_unc = axes.ravel()

    ax_image.imshow(image)
    ax_image.set_title("input image")
    ax_mask.imshow(mask, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax_mask.set_title("ground truth (white = gland)")

    pred_artist = ax_pred.imshow(mean_pred, cmap="viridis", vmin=0.0, vmax=1.0)
    ax_pred.set_title("mean prediction")
    fig.colorbar(pred_artist, ax=ax_pred, shrink=0.9, label="P(gland)")

    finite = uncertainty[np.isfinite(uncertainty)]
    # A constant map (e.g. all zeros) would give vmin == vmax and an empty colour bar.
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if vmax <= vmin:
        vmax = vmin + 1e-12
    unc_artist = ax_unc.imshow(uncertainty, cmap="magma", vmin=vmin, vmax=vmax)
    ax_unc.set_title(f"uncertainty ({heuristic})")
    fig.colorbar(unc_artist, ax=ax_unc, shrink=0.9, label=f"{heuristic} per pixel")

    # Cyan stands out on both the H&E image and magma's dark-to-yellow scale.
    for ax in (ax_image, ax_unc):
        draw_boxes(ax, boxes, "cyan")
        if region_mask is not None and np.any(region_mask):
            ax.contour(np.asarray(region_mask, dtype=float), levels=[0.5], colors="cyan")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    what = f"{len(boxes)} regions, best score" if boxes else "score"
    if region_mask is not None:
        what = "acquired superpixels outlined, best score"
    fig.suptitle(f"{name}   |   heuristic: {heuristic}   |   {what}: {score:.4g}", fontsize=13)
    return save_figure(fig, path)


def save_score_distribution(
    path: str | os.PathLike[str],
    pool_scores: np.ndarray,
    acquired_scores: np.ndarray,
    heuristic: str,
    cycle: int,
) -> Path:
    """Write a histogram of the pool's acquisition scores with the acquired images marked.

    Acquired scores are drawn as vertical lines in a contrasting colour, so one can see whether
    the heuristic picks a clear tail of the distribution or near-ties (where the choice is
    essentially random). Non-finite scores are left out of the histogram and counted in the
    legend instead of silently disappearing.

    Args:
        path: destination PNG; parent directories are created.
        pool_scores: scores of every unlabelled pool image scored this cycle, shape [N].
        acquired_scores: scores of the images acquired this cycle, shape [K].
        heuristic: heuristic name, used in the title and axis label.
        cycle: active-learning cycle index, used in the title.

    Returns:
        The path written.
    """
    pool = np.asarray(pool_scores, dtype=float).ravel()
    acquired = np.asarray(acquired_scores, dtype=float).ravel()
    pool_finite = pool[np.isfinite(pool)]
    acquired_finite = acquired[np.isfinite(acquired)]

    fig, ax = plt.subplots(figsize=(7.5, 4.5), layout="constrained")
    if pool_finite.size:
        # sqrt rule, bounded: a few dozen pool images must not produce one-image bins.
        bins = int(np.clip(np.sqrt(pool_finite.size), 5, 50))
        ax.hist(
            pool_finite,
            bins=bins,
            color="tab:blue",
            alpha=0.75,
            edgecolor="white",
            label=f"pool ({pool_finite.size} images)",
        )
    else:
        ax.text(0.5, 0.5, "no finite pool scores", ha="center", va="center", transform=ax.transAxes)
    for index, value in enumerate(acquired_finite):
        ax.axvline(
            value,
            color="tab:red",
            linewidth=1.5,
            alpha=0.85,
            # One legend entry for all lines, not K of them.
            label=f"acquired ({acquired_finite.size} images)" if index == 0 else None,
        )
    dropped = (pool.size - pool_finite.size) + (acquired.size - acquired_finite.size)
    if dropped:
        ax.plot([], [], linestyle="none", label=f"{dropped} non-finite scores not shown")

    ax.set_xlabel(f"acquisition score ({heuristic})")
    ax.set_ylabel("images in pool")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no 2.5-image ticks
    ax.set_title(f"{heuristic}: pool score distribution, cycle {cycle}")
    ax.grid(axis="y", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best")
    return save_figure(fig, path)
