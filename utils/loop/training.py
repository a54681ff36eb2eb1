"""Training one active-learning cycle: SGD on augmented patches, with the weights chosen by
validation loss, the last epoch, or an EMA of the weights; optionally with an unlabelled term."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler
from tqdm import tqdm

from data.device_augment import DeviceAugmenter
from data.regions import IGNORE
from models import mc_dropout_copy
from utils.errors import UserError
from utils.loop.device import autocast
from utils.loop.metrics import soft_dice_loss, soft_dice_loss_per_image
from utils.loop.semi import (
    EMA_DECAY,
    TEACHER_PASSES,
    PoolCrops,
    consistency_loss,
    ema_model,
    ema_start,
    sigmoid_rampup,
    teacher_predict,
)


class NonFiniteLossError(UserError, FloatingPointError):
    """Training diverged; the caller keeps the last completed cycle."""


@dataclass(frozen=True)
class TrainSettings:
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    nesterov: bool
    weight_decay: float
    lr_step_size: int  # epochs between learning-rate decays
    lr_gamma: float
    repeats_per_epoch: int = 8  # each epoch visits the labelled set this many times
    num_workers: int = 0
    ema_decay: float = EMA_DECAY


@dataclass(frozen=True)
class SemiTraining:
    """The unlabelled term of each step: ``method`` (``pseudo`` or ``mean_teacher``), the pool
    crops it is computed on (with pseudo-labels for ``pseudo``), its weight and, for the mean
    teacher, the final entropy threshold of its mask in nats (ramped up from 3/4 of it)."""

    method: str
    crops: PoolCrops
    weight: float
    threshold: float = math.log(2)


def make_optimizer(
    model: nn.Module, settings: TrainSettings
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=settings.lr,
        momentum=settings.momentum,
        nesterov=settings.nesterov,
        weight_decay=settings.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, settings.lr_step_size, settings.lr_gamma)
    return optimizer, scheduler


def to_device(
    images: torch.Tensor, device: torch.device, channels_last: bool = True
) -> torch.Tensor:
    images = images.to(device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


@torch.inference_mode()
def validation_loss(
    model: nn.Module, dataset: Dataset, device: torch.device, amp_dtype: torch.dtype | None
) -> float:
    """Mean soft-Dice loss over whole validation images, dropout off."""
    model.eval()
    losses = []
    for image, mask, _, _ in DataLoader(dataset, batch_size=1):
        with autocast(device, amp_dtype):
            logits = model(to_device(image, device))
        losses.append(float(soft_dice_loss(logits, mask.to(device))))
    return sum(losses) / len(losses)


@torch.inference_mode()
def validation_loss_batched(
    model: nn.Module,
    dataset: Dataset,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    batch_size: int = 8,
) -> float:
    """``validation_loss`` with images of equal size batched together: one forward pass per
    batch instead of per image, which keeps a GPU busy. Same per-image losses, same mean (up to
    the order of floating-point sums)."""
    model.eval()
    by_size: dict[tuple[int, int], list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for index in range(len(dataset)):
        image, mask, _, _ = dataset[index]
        by_size.setdefault(tuple(image.shape[-2:]), []).append((image, mask))
    losses = []
    for items in by_size.values():
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            images = torch.stack([image for image, _ in chunk])  # [B, 3, H, W]
            masks = torch.stack([mask for _, mask in chunk]).to(device)  # [B, H, W]
            with autocast(device, amp_dtype):
                logits = model(to_device(images, device))
            losses.append(soft_dice_loss_per_image(logits, masks))
    return float(torch.cat(losses).mean())


class _DeviceBatches:
    """An epoch's batches from a ``DeviceAugmenter`` in the sampler's order (re-iterable)."""

    def __init__(self, augmenter: DeviceAugmenter, sampler: RandomSampler, batch_size: int):
        self.augmenter, self.sampler, self.batch_size = augmenter, sampler, batch_size

    def __iter__(self):
        order = list(self.sampler)
        for start in range(0, len(order), self.batch_size):
            images, masks = self.augmenter.batch(order[start : start + self.batch_size])
            yield images, masks, None, None


def train_model(
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset | None,
    settings: TrainSettings,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    generator: torch.Generator,
    progress: bool = True,
    description: str = "train",
    augmenter: DeviceAugmenter | None = None,
    semi: SemiTraining | None = None,
    ema: bool = False,
) -> dict[str, float]:
    """Train ``model`` in place and leave it with the weights of the best validation loss, or,
    with ``val_set=None``, of the last epoch, or with ``ema``, the exponential moving average of
    its weights over the last quarter of the steps (``utils.loop.semi.ema_start``). Neither of
    the last two reads a validation label.

    With ``semi`` every step adds ``weight * unlabelled loss`` on a batch of pool crops as large
    as the labelled one, both through one forward pass (so BatchNorm sees them together):
    soft Dice on pseudo-labels, or the mean teacher's masked consistency, whose weight and
    threshold ramp up over the cycle's steps as in UA-MT.

    Returns ``{"best_val_loss", "best_epoch", "last_train_loss"}`` (``best_val_loss`` None
    without a validation set; with ``semi`` also ``last_unlabelled_loss``). Raises
    ``NonFiniteLossError`` on a NaN or infinite loss.

    With an ``augmenter`` the batches are cropped and augmented on the device from its images
    (the i-th labelled image of ``train_set`` is its i-th), instead of in a DataLoader.
    """
    if ema and val_set is not None:
        raise ValueError("ema and val_set choose the weights two ways; pass one of them")
    sampler = RandomSampler(
        train_set, num_samples=settings.repeats_per_epoch * len(train_set), generator=generator
    )
    if augmenter is not None:
        loader = _DeviceBatches(augmenter, sampler, settings.batch_size)
    else:
        loader = DataLoader(
            train_set,
            batch_size=settings.batch_size,
            sampler=sampler,
            num_workers=settings.num_workers,
            pin_memory=device.type == "cuda",
            persistent_workers=settings.num_workers > 0,
            generator=generator,
        )
    optimizer, scheduler = make_optimizer(model, settings)
    best_loss, best_epoch = math.inf, -1
    best_state = copy.deepcopy(model.state_dict()) if val_set is not None else None
    mean_teacher = semi is not None and semi.method == "mean_teacher"
    teacher = _Teacher(model, settings) if mean_teacher else None
    total_steps = settings.epochs * math.ceil(len(sampler) / settings.batch_size)
    average_from = ema_start(total_steps)
    average: _Teacher | None = None  # model_selection=ema: the late weights' EMA
    step = 0
    train_loss = unlabelled_loss = math.nan
    bar = tqdm(range(settings.epochs), desc=description, disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        total, count, unlabelled_total = 0.0, 0, 0.0
        for images, masks, _, _ in loader:
            if semi is None:
                with autocast(device, amp_dtype):
                    logits = model(to_device(images, device))
                loss = soft_dice_loss(logits, masks.to(device, non_blocking=True))
                full_loss = loss
            else:
                loss, extra = _semi_losses(
                    model,
                    teacher,
                    semi,
                    images,
                    masks,
                    device,
                    amp_dtype,
                    generator,
                    sigmoid_rampup(step, total_steps),
                )
                full_loss = loss + extra
                unlabelled_total += float(extra.detach()) * len(images)
            if not torch.isfinite(full_loss):
                raise NonFiniteLossError(
                    f"training loss became {float(full_loss.detach())} at epoch {epoch + 1}; "
                    "lower lr (e.g. lr=0.01) or use precision=fp32"
                )
            optimizer.zero_grad(set_to_none=True)
            full_loss.backward()
            optimizer.step()
            if teacher is not None:
                teacher.update(model)
            step += 1
            if ema and step == average_from:
                average = _Teacher(model, settings)
            elif average is not None:
                average.update(model)
            total, count = total + float(loss.detach()) * len(images), count + len(images)
        scheduler.step()
        train_loss = total / count
        unlabelled_loss = unlabelled_total / count
        if val_set is None:
            bar.set_postfix(train_loss=f"{train_loss:.3f}")
            continue
        # On a GPU, batching the validation images keeps it busy; on a CPU one image at a time
        # sums in the order the committed CPU results were made with.
        validate = validation_loss_batched if device.type == "cuda" else validation_loss
        val_loss = validate(model, val_set, device, amp_dtype)
        if not math.isfinite(val_loss):
            # Otherwise no epoch would ever be best and the untrained weights would come back.
            raise NonFiniteLossError(
                f"validation loss became {val_loss} at epoch {epoch + 1}; lower lr "
                "(e.g. lr=0.01) or use precision=fp32"
            )
        if val_loss < best_loss:
            best_loss, best_epoch = val_loss, epoch
            best_state = copy.deepcopy(model.state_dict())
        bar.set_postfix(
            train_loss=f"{train_loss:.3f}",
            val_loss=f"{val_loss:.3f}",
            best_val_loss=f"{best_loss:.3f}",
        )
    extra_info = {} if semi is None else {"last_unlabelled_loss": unlabelled_loss}
    if val_set is None:
        if ema:
            model.load_state_dict(average.state_dict())
        return {
            "best_val_loss": None,
            "best_epoch": settings.epochs - 1,
            "last_train_loss": train_loss,
            **extra_info,
        }
    model.load_state_dict(best_state)
    return {
        "best_val_loss": best_loss,
        "best_epoch": best_epoch,
        "last_train_loss": train_loss,
        **extra_info,
    }


class _Teacher:
    """An EMA of the student's weights from the step it is made, kept with dropout on and
    BatchNorm in eval mode: the mean teacher's MC-dropout model, or the weights of
    ``model_selection=ema``."""

    def __init__(self, model: nn.Module, settings: TrainSettings):
        self.average = ema_model(mc_dropout_copy(model), settings.ema_decay)
        self.average.module.eval()
        self.average.update_parameters(model)  # starts from the initial weights

    def update(self, model: nn.Module) -> None:
        self.average.update_parameters(model)

    @property
    def module(self) -> nn.Module:
        return self.average.module

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.average.module.state_dict()


def _semi_losses(
    model: nn.Module,
    teacher: _Teacher | None,
    semi: SemiTraining,
    images: torch.Tensor,
    masks: torch.Tensor,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    generator: torch.Generator,
    ramp: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(supervised loss, weighted unlabelled loss) of one step."""
    pool_images, pool_masks = semi.crops.batch(len(images), generator)
    # On the device: a batch augmented there is not copied back to the host and up again.
    both = torch.cat([to_device(images, device), to_device(pool_images, device)])  # [2B, 3, h, w]
    with autocast(device, amp_dtype):
        logits = model(both)
    labelled, unlabelled = logits[: len(images)], logits[len(images) :]
    loss = soft_dice_loss(labelled, masks.to(device, non_blocking=True))
    if semi.method == "pseudo":
        return loss, semi.weight * soft_dice_loss(unlabelled, pool_masks.to(device))
    threshold = (0.75 + 0.25 * ramp) * semi.threshold
    with autocast(device, amp_dtype):
        target = teacher_predict(
            teacher.module, to_device(pool_images, device), TEACHER_PASSES, threshold, generator
        )
    pool = pool_masks.to(device) != IGNORE  # [B, h, w]
    return loss, semi.weight * ramp * consistency_loss(unlabelled, target, pool)
