"""Acquisition heuristics: pure functions of MC-dropout softmax probabilities.

Every function takes ``probs`` of shape ``[N, C, H, W, T]`` (N images, C classes, T MC samples
last, as in baal) on any device. ``*_map`` functions return per-pixel uncertainty ``[N, H, W]``;
a reduction (``heuristics/reductions.py``) turns a map into one score per image or region
(higher = acquire first). Logs are natural, so scores are in nats.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage


def _entropy(p: torch.Tensor, class_dim: int = 1) -> torch.Tensor:
    return -torch.special.xlogy(p, p).sum(class_dim)


def entropy_map(probs: torch.Tensor) -> torch.Tensor:
    """Max entropy: entropy of the MC-mean prediction (Shannon 1948; as used by Gal et al. 2017)."""
    mean = probs.mean(-1)  # [N, C, H, W]
    return _entropy(mean)  # [N, H, W]


def bald_map(probs: torch.Tensor) -> torch.Tensor:
    """BALD: mutual information between prediction and weights (Houlsby et al. 2011), estimated
    with MC dropout as in Gal, Islam & Ghahramani 2017, "Deep Bayesian Active Learning with Image
    Data", arXiv 1703.02910: H[mean_t p_t] - mean_t H[p_t].
    """
    # Accumulating the expected entropy one sample at a time keeps temporaries at [N, C, H, W]
    # instead of materialising another [N, C, H, W, T] tensor.
    expected_entropy = torch.zeros_like(probs[:, 0, ..., 0])  # [N, H, W]
    for t in range(probs.shape[-1]):
        expected_entropy += _entropy(probs[..., t])
    expected_entropy /= probs.shape[-1]
    # Rounding can make the difference a hair below zero where all samples agree.
    return (entropy_map(probs) - expected_entropy).clamp_min_(0.0)  # [N, H, W]


def variance_map(probs: torch.Tensor) -> torch.Tensor:
    """MC variance: per pixel, the variance over the T samples of the softmax probability of the
    class predicted by the MC mean. Population variance (ddof=0).

    This is the MC-dropout variance of the "MC" heuristic of Lubrano di Scandalea et al. 2019
    (arXiv 1907.05143) and, for C = 2 (where both classes' probabilities vary alike), baal's
    ``Variance`` (the variance over samples, averaged over classes). It is neither of Gal et al.
    2017's: Variation Ratios is the share of samples off the modal class, and Mean STD
    averages the classes' standard deviations (for C = 2 this map is its square, pixel by pixel).
    """
    predicted = probs.mean(-1).argmax(1, keepdim=True)  # [N, 1, H, W]
    index = predicted.unsqueeze(-1).expand(-1, -1, -1, -1, probs.shape[-1])  # [N, 1, H, W, T]
    p_predicted = probs.gather(1, index).squeeze(1)  # [N, H, W, T]
    return p_predicted.var(-1, unbiased=False)  # [N, H, W]


def border_distance_weight(foreground: np.ndarray) -> np.ndarray:
    """Per-pixel Euclidean distance to the nearest predicted object border, divided by its
    maximum: in (0, 1], 1/max on either side of a border.

    ``foreground`` is a boolean ``[H, W]`` mask. Inside objects we take the distance to the
    nearest background pixel, outside the distance to the nearest object pixel, so the weight is
    smallest on either side of a border and grows towards object centres and open background.
    An image with no border (all one class) gets weight 1 everywhere.
    """
    if foreground.all() or not foreground.any():
        return np.ones(foreground.shape, dtype=np.float32)
    distance = ndimage.distance_transform_edt(foreground) + ndimage.distance_transform_edt(
        ~foreground
    )
    return (distance / distance.max()).astype(np.float32)


def variance_edt_map(probs: torch.Tensor) -> torch.Tensor:
    """Distance-weighted MC variance, after the axon-myelin active-learning study of
    Lubrano di Scandalea, Perone, Boudreau & Cohen-Adad 2019, "Deep active learning for axon-myelin
    segmentation on histology data", arXiv 1907.05143.

    Border pixels are uncertain for every model (annotators disagree there too), so their
    variance says little about what an image would teach. We multiply the MC variance by
    ``border_distance_weight`` of the thresholded mean prediction (argmax != background): the
    Euclidean distance (scipy's exact EDT, in pixels) to the nearest predicted border, inside and
    outside objects alike, divided by its per-image maximum so the weight lies in (0, 1]. Two-sided
    distance is used because a one-sided EDT would zero out every background pixel, including
    confidently wrong false negatives far from any predicted gland.
    """
    variance = variance_map(probs)  # [N, H, W]
    foreground = (probs.mean(-1).argmax(1) != 0).cpu().numpy()  # [N, H, W]
    weights = np.stack([border_distance_weight(f) for f in foreground])  # [N, H, W]
    return variance * torch.from_numpy(weights).to(variance.device, variance.dtype)
