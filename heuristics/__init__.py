"""Registry of acquisition heuristics.

``PIXEL_MAPS[name](probs)`` maps MC softmax probabilities ``[N, C, H, W, T]`` to a per-pixel
uncertainty map ``[N, H, W]``; a reduction (``heuristics.reductions``) turns it into one score per
image, and a strategy (``heuristics.strategies``) selects from the scores. ``random`` is a
heuristic name too: it scores nothing and selects with the ``random`` strategy.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from heuristics.uncertainty import bald_map, entropy_map, variance_edt_map, variance_map

PixelMap = Callable[[torch.Tensor], torch.Tensor]

PIXEL_MAPS: dict[str, PixelMap] = {
    "bald": bald_map,
    "entropy": entropy_map,
    "variance": variance_map,
    "variance_edt": variance_edt_map,
}


RANDOM = "random"
HEURISTIC_NAMES = (*PIXEL_MAPS, RANDOM)

# Names used by the original study's command lines.
ALIASES: dict[str, str] = {"mc": "variance", "max": "entropy", "rand": "random"}


def resolve_heuristic(name: str) -> str:
    """Canonical heuristic name for ``name`` or an alias; ``ValueError`` listing valid names."""
    canonical = ALIASES.get(name, name)
    if canonical not in HEURISTIC_NAMES:
        valid = ", ".join(sorted(HEURISTIC_NAMES) + [f"{a} (= {c})" for a, c in ALIASES.items()])
        raise ValueError(f"unknown heuristic {name!r}; choose one of: {valid}")
    return canonical


__all__ = ["ALIASES", "HEURISTIC_NAMES", "PIXEL_MAPS", "RANDOM", "resolve_heuristic"]
