"""Learning from the unlabelled pool: pseudo-labels and a mean teacher.

Both add an unlabelled term to each training step, ``loss = supervised + weight * unlabelled``,
computed on a batch of pool crops drawn beside every labelled batch:

- ``pseudo``: the pool's pixels whose MC-dropout prediction is confident get its class as a
  label, the rest are left out of the loss (CEAL, Wang et al. 2016, arXiv 1701.03551; Lee 2013,
  "Pseudo-Label", ICML workshop). The labels come from the MC passes that acquisition already
  ran over the pool at the end of the previous cycle, so they cost no extra pass.
- ``mean_teacher``: the student matches the softmax of an exponential moving average of its own
  weights, on pixels where that teacher is certain (Tarvainen & Valpola, NeurIPS 2017; the
  uncertainty mask of UA-MT, Yu et al., MICCAI 2019, arXiv 1907.07034).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from data.regions import IGNORE
from data.segmentation import ImageStore
from heuristics.uncertainty import entropy_map
from utils.io import atomic_write

# CEAL's initial entropy threshold for "high-confidence" samples, in nats: a binary prediction
# passes when its probability exceeds about 0.9994.
PSEUDO_THRESHOLD = 0.005
# CEAL adds its pseudo-labelled samples to the training set as equals.
PSEUDO_WEIGHT = 1.0
# UA-MT: EMA decay, final consistency weight, MC passes and input noise of the teacher.
EMA_DECAY = 0.99
EMA_START = 0.75  # of a cycle's steps, before which model_selection=ema averages nothing
CONSISTENCY_WEIGHT = 0.1
TEACHER_PASSES = 8
TEACHER_NOISE = (0.1, 0.2)  # standard deviation, clip
POOL_PIXEL = 0  # the mean teacher's crop masks: a pixel of the pool (annotated ones are IGNORE)


# --------------------------------------------------------------------------------------------
# Pseudo-labels
# --------------------------------------------------------------------------------------------


def pseudo_labels(probs: torch.Tensor, threshold: float) -> torch.Tensor:
    """Class of the MC-mean prediction where its entropy is below ``threshold`` (nats), IGNORE
    elsewhere: ``probs`` ``[1, C, H, W, T]`` -> int64 ``[H, W]``."""
    labels = probs.mean(-1)[0].argmax(0)  # [H, W]
    # Not "entropy >= threshold": a NaN probability is no confident prediction either.
    uncertain = ~(entropy_map(probs)[0] < threshold)  # [H, W]
    return labels.masked_fill(uncertain, IGNORE)


class PseudoLabelBank:
    """The pool's pseudo-labels, image index -> int16 ``[H, W]`` (IGNORE = no label); int8 would
    wrap classes from 128 on (up to 255 are allowed) into negative, unannotated values.

    Filled during a cycle's acquisition pass and read by the next cycle's training; saved beside
    the run's state so that a resumed run trains on the same labels.
    """

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.labels: dict[int, torch.Tensor] = {}

    def clear(self) -> None:
        self.labels = {}

    def add(self, image: int, probs: torch.Tensor) -> None:
        self.labels[image] = pseudo_labels(probs, self.threshold).to("cpu", torch.int16)

    def save(self, path: Path) -> None:
        arrays = {str(i): m.numpy() for i, m in self.labels.items()}
        atomic_write(path, lambda f: np.savez_compressed(f, **arrays))

    def load(self, path: Path) -> None:
        with np.load(path) as arrays:
            self.labels = {int(k): torch.from_numpy(arrays[k]) for k in arrays.files}

    def masks(self, annotated: Callable[[int], torch.Tensor | None]) -> dict[int, torch.Tensor]:
        """Pseudo-labels of the images still in the pool, with their annotated pixels (given by
        ``annotated(image)``, None when the image is not annotated at all) left out: those are
        learnt from their real labels. Images with no pseudo-labelled pixel left are dropped."""
        masks = {}
        for image, labels in sorted(self.labels.items()):
            mask = labels.long()
            done = annotated(image)
            if done is not None:
                mask = mask.masked_fill(done, IGNORE)
            if bool((mask != IGNORE).any()):
                masks[image] = mask
        return masks


def pseudo_label_quality(
    labels: Mapping[int, torch.Tensor],
    annotated: Callable[[int], torch.Tensor | None],
    truth: Sequence[torch.Tensor],
    num_classes: int,
) -> dict[str, Any]:
    """How a cycle's pseudo-labels compare with the pool's ground truth, which only a simulated
    run has: ``coverage``, the share of the pool's pixels (those of ``labels``' images not
    ``annotated``) that got a label; ``accuracy``, the share of those labels that are the true
    class (None without any); and ``coverage_per_class``, the share of each true class's pool
    pixels that got a label. Measured only: training never sees ``truth`` of the pool."""
    pool = covered = correct = 0
    per_class = np.zeros((2, num_classes), dtype=np.int64)  # [pool pixels, labelled], by class
    for image, label in labels.items():
        done = annotated(image)
        in_pool = torch.ones_like(label, dtype=torch.bool) if done is None else ~done  # [H, W]
        true = truth[image].long()[in_pool]  # [P]
        given = label.long()[in_pool]  # [P]
        has_label = given != IGNORE
        pool += true.numel()
        covered += int(has_label.sum())
        correct += int((given == true).sum())  # IGNORE is never a class
        per_class[0] += np.bincount(true.numpy(), minlength=num_classes)[:num_classes]
        per_class[1] += np.bincount(true[has_label].numpy(), minlength=num_classes)[:num_classes]
    return {
        "coverage": covered / pool if pool else 0.0,
        "accuracy": correct / covered if covered else None,
        "coverage_per_class": [
            float(labelled / total) if total else None for total, labelled in per_class.T
        ],
    }


# --------------------------------------------------------------------------------------------
# Unlabelled crops
# --------------------------------------------------------------------------------------------


class PoolCrops(Dataset):
    """Augmented crops of pool images: ``(image float [3, h, w], mask int64 [h, w], -1, name)``.

    ``masks`` maps a train image index to its training mask: pseudo-labels with IGNORE, or for
    the mean teacher IGNORE on the pixels annotated already. An image without one is ``fill``
    throughout: IGNORE by default, so nothing of the real mask can leak into an unlabelled
    batch. Crops and augmentation draw from torch's generator, which the loop seeds per cycle.
    """

    def __init__(
        self,
        store: ImageStore,
        images: list[int],
        transform: v2.Transform,
        masks: dict[int, torch.Tensor] | None = None,
        fill: int = IGNORE,
    ):
        if not images:
            raise ValueError("PoolCrops needs at least one pool image")
        self.store, self.images, self.transform = store, images, transform
        self.masks, self.fill = masks or {}, fill

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int, str]:
        image_index = self.images[index]
        image = self.store.images[image_index]
        mask = self.masks.get(image_index)
        if mask is None:
            mask = torch.full(image.shape[1:], self.fill, dtype=torch.int64)
        picture, label = self.transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
        return (
            picture.as_subclass(torch.Tensor).float().div_(255.0),
            label.as_subclass(torch.Tensor).long(),
            -1,
            self.store.names[image_index],
        )

    def batch(self, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``size`` crops of images drawn uniformly with replacement: ``[B, 3, h, w]``,
        ``[B, h, w]``."""
        picks = torch.randint(len(self.images), (size,), generator=generator).tolist()
        items = [self[i] for i in picks]
        return torch.stack([i[0] for i in items]), torch.stack([i[1] for i in items])


# --------------------------------------------------------------------------------------------
# EMA weights and the mean teacher
# --------------------------------------------------------------------------------------------


def ema_model(model: nn.Module, decay: float = EMA_DECAY) -> AveragedModel:
    """An exponential moving average of ``model``'s weights and BatchNorm statistics.

    ``update_parameters(model)`` after each optimiser step applies
    ``ema = a * ema + (1 - a) * weights`` with ``a = min(decay, 1 - 1 / (n + 1))`` after ``n``
    updates, the warm-up of Tarvainen & Valpola's code: early on the average is a plain mean,
    so the random initial weights fade out instead of dominating a short training.
    """

    def average(averaged: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        if not averaged.is_floating_point():  # BatchNorm's batch counter
            return current
        a = min(decay, 1.0 - 1.0 / (int(n) + 1))
        return averaged * a + current * (1.0 - a)

    return AveragedModel(model, avg_fn=average, use_buffers=True)


def ema_start(total_steps: int) -> int:
    """The step after which ``model_selection=ema`` starts its average: three quarters into the
    cycle, where SWA starts (Izmailov et al., UAI 2018), so that neither the initial weights nor
    early training enter it. From the start of a cycle, an EMA of decay 0.99 over a cycle of
    120 steps (4 GlaS images) would be mostly the plain mean of its warm-up steps. Started here,
    the average is the plain mean of the late steps (as SWA's) while they are fewer than
    1/(1 - decay), and weighs recent steps more only in longer cycles."""
    return max(1, math.ceil(EMA_START * total_steps))


def sigmoid_rampup(step: int, length: int) -> float:
    """``exp(-5 (1 - t)^2)`` for ``t = step / length`` clipped to [0, 1] (Laine & Aila 2017; the
    ramp of UA-MT's consistency weight and threshold)."""
    if length <= 0:
        return 1.0
    t = min(max(step / length, 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)


@dataclass(frozen=True)
class TeacherOutput:
    probs: torch.Tensor  # [B, C, H, W] mean softmax over the teacher's MC passes
    certain: torch.Tensor  # [B, H, W] bool: entropy of the mean below the threshold


@torch.no_grad()
def teacher_predict(
    teacher: nn.Module,
    images: torch.Tensor,
    passes: int,
    threshold: float,
    generator: torch.Generator,
) -> TeacherOutput:
    """The teacher's MC-dropout average over ``passes`` noisy copies of ``images`` (UA-MT):
    each copy gets Gaussian noise, clipped, and its own dropout masks (one batch of B * passes).
    ``teacher`` must have dropout on and BatchNorm in eval mode (``models.mc_dropout_copy``).

    Unlike UA-MT, the consistency target is this MC mean too, not one separate noisy pass of a
    teacher in train mode (BatchNorm on batch statistics) with the MC passes kept for the
    uncertainty alone: the mean of ``passes`` samples is a smoother target than any one of them."""
    std, clip = TEACHER_NOISE
    batch = images.repeat(passes, 1, 1, 1)  # [passes * B, 3, H, W]
    noise = torch.randn(batch.shape, generator=generator).to(batch.device) * std
    logits = teacher(batch + noise.clamp(-clip, clip))  # [passes * B, C, H, W]
    probs = logits.float().softmax(1).unflatten(0, (passes, len(images)))  # [T, B, C, H, W]
    probs = probs.permute(1, 2, 3, 4, 0)  # [B, C, H, W, T]
    return TeacherOutput(probs.mean(-1), entropy_map(probs) < threshold)


def consistency_loss(
    student_logits: torch.Tensor, teacher: TeacherOutput, pool: torch.Tensor | None = None
) -> torch.Tensor:
    """UA-MT's masked consistency: the squared softmax distance averaged over the classes and the
    teacher's certain pixels, ``sum(mask * (p_s - p_t)^2) / (C * sum(mask) + 1e-16)`` (zero when
    none is certain). UA-MT writes ``2 * sum(mask)``: its class count, as Tarvainen & Valpola's
    ``softmax_mse_loss`` divides by the number of classes. ``pool`` (bool ``[B, H, W]``) keeps
    the mask to the pixels not annotated: the others are learnt from their labels."""
    distance = (student_logits.float().softmax(1) - teacher.probs) ** 2  # [B, C, H, W]
    certain = teacher.certain if pool is None else teacher.certain & pool  # [B, H, W]
    mask = certain.unsqueeze(1).to(distance.dtype)  # [B, 1, H, W]
    # C * sum(mask) is exact in float (a count times a small integer), so for C = 2 the loss is
    # bitwise the same as with UA-MT's literal 2.
    return (distance * mask).sum() / (distance.shape[1] * mask.sum() + 1e-16)


__all__ = [
    "CONSISTENCY_WEIGHT",
    "POOL_PIXEL",
    "EMA_DECAY",
    "EMA_START",
    "PSEUDO_THRESHOLD",
    "PSEUDO_WEIGHT",
    "TEACHER_PASSES",
    "consistency_loss",
    "ema_model",
    "ema_start",
    "PoolCrops",
    "pseudo_labels",
    "PseudoLabelBank",
    "sigmoid_rampup",
    "teacher_predict",
]
