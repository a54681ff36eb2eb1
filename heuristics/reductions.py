"""Reductions: a heuristic's pixel map -> one score per image (or per region).

Each takes the map ``[N, H, W]``, the MC probabilities ``[N, C, H, W, T]`` it came from (some
reductions look at the prediction) and its settings; it returns scores ``[N]``. The mean is the
original study's reduction; the others answer a failure seen on GlaS, where every gland border is
uncertain and an image's mean score mostly measures how much border it has.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ReductionSettings:
    topq_percent: float = 10.0  # share of pixels ``topq`` averages
    foreground_band: int = 16  # ``foreground``: band width around predicted glands, in pixels


def mean_reduction(
    pixel_map: torch.Tensor, probs: torch.Tensor, settings: ReductionSettings
) -> torch.Tensor:
    """Mean over all pixels (Gal et al. 2017 and the original study)."""
    return pixel_map.flatten(1).mean(1)  # [N]


def topq_reduction(
    pixel_map: torch.Tensor, probs: torch.Tensor, settings: ReductionSettings
) -> torch.Tensor:
    """Mean of the ``topq_percent`` % most uncertain pixels: an image with one badly understood
    area outranks one with much mildly uncertain border (as in the top-fraction aggregation of
    region-based segmentation AL, e.g. Mackowiak et al., BMVC 2018)."""
    flat = pixel_map.flatten(1)  # [N, H*W]
    k = max(1, round(flat.shape[1] * settings.topq_percent / 100.0))
    return flat.topk(k, dim=1).values.mean(1)  # [N]


def foreground_reduction(
    pixel_map: torch.Tensor, probs: torch.Tensor, settings: ReductionSettings
) -> torch.Tensor:
    """Mean over predicted-gland pixels and a band of ``foreground_band`` pixels around them,
    so that open stroma, which is easy and plentiful, does not dilute the score. An image with
    no predicted gland falls back to its mean over all pixels."""
    gland = (probs.mean(-1).argmax(1) != 0).float().unsqueeze(1)  # [N, 1, H, W]
    band = settings.foreground_band
    if band > 0:
        gland = F.max_pool2d(gland, 2 * band + 1, stride=1, padding=band)  # dilation
    region = gland.squeeze(1)  # [N, H, W]
    area = region.flatten(1).sum(1)  # [N]
    inside = (pixel_map * region).flatten(1).sum(1) / area.clamp_min(1.0)
    return torch.where(area > 0, inside, pixel_map.flatten(1).mean(1))  # [N]


Reduction = Callable[[torch.Tensor, torch.Tensor, ReductionSettings], torch.Tensor]

REDUCTIONS: dict[str, Reduction] = {
    "mean": mean_reduction,
    "topq": topq_reduction,
    "foreground": foreground_reduction,
}


def resolve_reduction(name: str) -> str:
    if name not in REDUCTIONS:
        raise ValueError(f"unknown reduction {name!r}; choose one of: {', '.join(REDUCTIONS)}")
    return name
