"""Segmentation metrics and the training loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dice_score(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """Dice of two binary masks ``[H, W]``: 2|A∩B| / (|A| + |B|); 1.0 when both are empty."""
    prediction, target = prediction.bool(), target.bool()
    total = int(prediction.sum()) + int(target.sum())
    if total == 0:
        return 1.0
    return 2.0 * int((prediction & target).sum()) / total


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - mean over classes of the soft Dice between softmax(logits) and one-hot(target).

    ``logits`` ``[N, C, H, W]``, ``target`` int64 ``[N, H, W]``. Sums run over the whole batch so a
    patch without glands does not get an undefined per-image Dice; ``eps`` smooths empty classes.
    Pixels whose target is negative (``data.regions.IGNORE``: not annotated) are left out of
    every sum, so their prediction gets no gradient.
    """
    probs = logits.float().softmax(1)  # [N, C, H, W]
    ignored = target < 0  # unannotated pixels (region labelling): outside every sum
    if bool(ignored.any()):
        keep = (~ignored).unsqueeze(1).to(probs.dtype)  # [N, 1, H, W]
        probs = probs * keep
        target = target.clamp_min(0)
        one_hot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype) * keep
    else:
        one_hot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, 2, 3)
    intersection = (probs * one_hot).sum(dims)  # [C]
    denominator = probs.sum(dims) + one_hot.sum(dims)  # [C]
    return 1.0 - ((2.0 * intersection + eps) / (denominator + eps)).mean()


def soft_dice_loss_per_image(
    logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0
) -> torch.Tensor:
    """``soft_dice_loss`` of each image of the batch on its own: ``[N]``.

    Equal to calling ``soft_dice_loss`` on every image separately (batch of one), so a batched
    validation gives the per-image validation losses. Full masks only: validation images are
    labelled whole, so unlike ``soft_dice_loss`` there are no ``IGNORE`` pixels to leave out.
    """
    probs = logits.float().softmax(1)  # [N, C, H, W]
    one_hot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    intersection = (probs * one_hot).sum((2, 3))  # [N, C]
    denominator = probs.sum((2, 3)) + one_hot.sum((2, 3))  # [N, C]
    return 1.0 - ((2.0 * intersection + eps) / (denominator + eps)).mean(1)  # [N]
