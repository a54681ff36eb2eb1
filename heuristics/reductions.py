"""Reductions: a heuristic's pixel map -> one score per image (or per region).

Each takes the map ``[N, H, W]``, the MC probabilities ``[N, C, H, W, T]`` it came from (some
reductions look at the prediction), its settings and optionally a boolean ``mask`` ``[N, H, W]``
of the pixels that count (an irregular region inside its bounding box; None: all pixels, each
row needs at least one); it returns scores ``[N]``. The mean is the
original study's reduction; the others answer a failure seen on GlaS, where every gland border is
uncertain and an image's mean score mostly measures how much border it has.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ReductionSettings:
    topq_percent: float = 10.0  # share of pixels ``topq`` averages
    foreground_band: int = 16  # ``foreground``: band width around predicted glands, in pixels


def mean_reduction(
    pixel_map: torch.Tensor,
    probs: torch.Tensor,
    settings: ReductionSettings,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over all pixels (the original study, Lubrano di Scandalea et al. 2019)."""
    if mask is None:
        return pixel_map.flatten(1).mean(1)  # [N]
    return _masked_mean(pixel_map, mask)


def _masked_mean(pixel_map: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.flatten(1).to(pixel_map.dtype)  # [N, H*W]
    return (pixel_map.flatten(1) * weights).sum(1) / weights.sum(1)  # [N]


def topq_reduction(
    pixel_map: torch.Tensor,
    probs: torch.Tensor,
    settings: ReductionSettings,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean of the ``topq_percent`` % most uncertain pixels: an image with one badly understood
    area outranks one with much mildly uncertain border (as in the top-fraction aggregation of
    region-based segmentation AL, e.g. Mackowiak et al., BMVC 2018)."""
    flat = pixel_map.flatten(1)  # [N, H*W]
    if mask is None:
        k = max(1, round(flat.shape[1] * settings.topq_percent / 100.0))
        return flat.topk(k, dim=1).values.mean(1)  # [N]
    inside = mask.flatten(1)  # [N, H*W]
    # Pixels outside the mask sort last; each row averages its own top share of its pixels.
    ordered = flat.masked_fill(~inside, -torch.inf).sort(dim=1, descending=True).values
    counts = inside.sum(1)  # [N]
    k = (counts.to(torch.float64) * settings.topq_percent / 100.0).round().clamp_min(1).long()
    ranks = torch.arange(flat.shape[1], device=flat.device).unsqueeze(0)  # [1, H*W]
    top = ranks < k.unsqueeze(1)  # [N, H*W]
    return (ordered.masked_fill(~top, 0.0).sum(1)) / k.to(flat.dtype)


def foreground_reduction(
    pixel_map: torch.Tensor,
    probs: torch.Tensor,
    settings: ReductionSettings,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over predicted-gland pixels and a band of ``foreground_band`` pixels around them (a
    square neighbourhood: max-pool dilation), so that open stroma, which is easy and plentiful,
    does not dilute the score. An image, or a region (``mask``), with no pixel in a gland or its
    band falls back to its mean over all its pixels."""
    gland = (probs.mean(-1).argmax(1) != 0).float().unsqueeze(1)  # [N, 1, H, W]
    band = settings.foreground_band
    if band > 0:
        gland = F.max_pool2d(gland, 2 * band + 1, stride=1, padding=band)  # dilation
    region = gland.squeeze(1)  # [N, H, W]
    if mask is not None:
        # The band is found on every pixel given (a region's box and margin), then cut to the mask.
        region = region * mask.to(region.dtype)
    area = region.flatten(1).sum(1)  # [N]
    inside = (pixel_map * region).flatten(1).sum(1) / area.clamp_min(1.0)
    fallback = pixel_map.flatten(1).mean(1) if mask is None else _masked_mean(pixel_map, mask)
    return torch.where(area > 0, inside, fallback)  # [N]


Reduction = Callable[..., torch.Tensor]  # (pixel_map, probs, settings, mask=None) -> [N]

REDUCTIONS: dict[str, Reduction] = {
    "mean": mean_reduction,
    "topq": topq_reduction,
    "foreground": foreground_reduction,
}


def context_margin(name: str, settings: ReductionSettings) -> int:
    """How many pixels around a region a reduction looks at: ``foreground`` finds its band on
    the pixels within ``foreground_band`` of the region, inside its image, as on a whole image."""
    return settings.foreground_band if name == "foreground" else 0


def resolve_reduction(name: str) -> str:
    if name not in REDUCTIONS:
        raise ValueError(f"unknown reduction {name!r}; choose one of: {', '.join(REDUCTIONS)}")
    return name


def pool_regions(
    pixel_map: torch.Tensor,
    probs: torch.Tensor,
    boxes: list[tuple[int, int, int, int]],  # (y0, y1, x0, x1)
    reduce: Callable[..., torch.Tensor],
    masks: list[torch.Tensor | None] | None = None,
    margin: int = 0,
) -> np.ndarray:
    """One score per box: ``reduce`` (a reduction with its settings bound) over the box's part of
    the map ``[1, H, W]`` and of the probabilities ``[1, C, H, W, T]``: ``[len(boxes)]``.
    ``masks[i]`` (bool ``[h, w]`` of box i, or None for the whole box) limits box i to its
    region's own pixels. With a ``margin`` (``context_margin``) the reduction sees that many
    pixels around the box too, masked out of the score."""
    masks = masks or [None] * len(boxes)
    height, width = pixel_map.shape[-2:]
    scores = []
    for (y0, y1, x0, x1), mask in zip(boxes, masks, strict=True):
        if margin > 0:
            top, bottom = max(0, y0 - margin), min(height, y1 + margin)
            left, right = max(0, x0 - margin), min(width, x1 + margin)
            size = (1, bottom - top, right - left)
            inside = torch.zeros(size, dtype=torch.bool, device=pixel_map.device)
            inside[0, y0 - top : y1 - top, x0 - left : x1 - left] = True if mask is None else mask
            part = pixel_map[:, top:bottom, left:right]
            part_probs = probs[:, :, top:bottom, left:right]
            scores.append(float(reduce(part, part_probs, mask=inside)))
            continue
        part, part_probs = pixel_map[:, y0:y1, x0:x1], probs[:, :, y0:y1, x0:x1]
        if mask is None:
            scores.append(float(reduce(part, part_probs)))
        else:
            scores.append(float(reduce(part, part_probs, mask=mask.unsqueeze(0))))
    return np.asarray(scores, dtype=np.float64)
