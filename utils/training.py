"""Training one active-learning cycle: SGD on augmented patches, best-validation-loss weights."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler
from tqdm import tqdm

from utils.device import autocast
from utils.metrics import soft_dice_loss


class NonFiniteLossError(FloatingPointError):
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
) -> dict[str, float]:
    """Train ``model`` in place and leave it with the weights of the best validation loss, or,
    with ``val_set=None``, of the last epoch (no validation labels are used at all).

    Returns ``{"best_val_loss", "best_epoch", "last_train_loss"}`` (``best_val_loss`` None
    without a validation set). Raises ``NonFiniteLossError`` on a NaN or infinite loss.
    """
    sampler = RandomSampler(
        train_set, num_samples=settings.repeats_per_epoch * len(train_set), generator=generator
    )
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
    train_loss = math.nan
    bar = tqdm(range(settings.epochs), desc=description, disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        total, count = 0.0, 0
        for images, masks, _, _ in loader:
            with autocast(device, amp_dtype):
                logits = model(to_device(images, device))
            loss = soft_dice_loss(logits, masks.to(device, non_blocking=True))
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"training loss became {float(loss.detach())} at epoch {epoch + 1}; lower lr "
                    "(e.g. lr=0.01) or use precision=fp32"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, count = total + float(loss.detach()) * len(images), count + len(images)
        scheduler.step()
        train_loss = total / count
        if val_set is None:
            bar.set_postfix(train=f"{train_loss:.3f}")
            continue
        val_loss = validation_loss(model, val_set, device, amp_dtype)
        if val_loss < best_loss:
            best_loss, best_epoch = val_loss, epoch
            best_state = copy.deepcopy(model.state_dict())
        bar.set_postfix(train=f"{train_loss:.3f}", val=f"{val_loss:.3f}", best=f"{best_loss:.3f}")
    if val_set is None:
        return {
            "best_val_loss": None,
            "best_epoch": settings.epochs - 1,
            "last_train_loss": train_loss,
        }
    model.load_state_dict(best_state)
    return {"best_val_loss": best_loss, "best_epoch": best_epoch, "last_train_loss": train_loss}
