"""Registry of acquisition heuristics.

``HEURISTICS[name](probs)`` maps MC softmax probabilities ``[N, C, H, W, T]`` to scores ``[N]``
(higher = acquire first); ``PIXEL_MAPS[name](probs)`` gives the per-pixel map ``[N, H, W]`` that
the score averages, for figures.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from heuristics.uncertainty import (
    bald_map,
    entropy_map,
    random_scores,
    variance_edt_map,
    variance_map,
)

PixelMap = Callable[[torch.Tensor], torch.Tensor]
Heuristic = Callable[[torch.Tensor], torch.Tensor]

PIXEL_MAPS: dict[str, PixelMap] = {
    "bald": bald_map,
    "entropy": entropy_map,
    "variance": variance_map,
    "variance_edt": variance_edt_map,
}


def _mean_of(pixel_map: PixelMap) -> Heuristic:
    def score(probs: torch.Tensor) -> torch.Tensor:
        return pixel_map(probs).flatten(1).mean(1)  # [N]

    score.__name__ = pixel_map.__name__.removesuffix("_map")
    score.__doc__ = f"Mean over pixels of ``{pixel_map.__name__}``: scores [N]."
    return score


HEURISTICS: dict[str, Heuristic] = {
    "random": random_scores,
    **{name: _mean_of(pixel_map) for name, pixel_map in PIXEL_MAPS.items()},
}

# Names used by the original study's command lines.
ALIASES: dict[str, str] = {"mc": "variance", "max": "entropy", "rand": "random"}

# Heuristics that need MC samples; random does not look at the model at all.
NEEDS_MC = frozenset(PIXEL_MAPS)


def resolve_heuristic(name: str) -> str:
    """Canonical heuristic name for ``name`` or an alias; ``ValueError`` listing valid names."""
    canonical = ALIASES.get(name, name)
    if canonical not in HEURISTICS:
        valid = ", ".join(sorted(HEURISTICS) + [f"{a} (= {c})" for a, c in ALIASES.items()])
        raise ValueError(f"unknown heuristic {name!r}; choose one of: {valid}")
    return canonical


__all__ = ["ALIASES", "HEURISTICS", "NEEDS_MC", "PIXEL_MAPS", "resolve_heuristic"]
