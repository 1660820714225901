"""Training until the labeled set is fitted: the BADGE code's per-round schedule.

BADGE (Ash et al., ICLR 2020) trains f each round at a constant learning rate until its accuracy on the labeled
images reaches 99 %, however many epochs that takes. :func:`train_until` does that with the optimizer of a
:class:`~timm_introspect.training.loop.Schedule` (SGD with its lr, momentum, Nesterov and weight decay; its
``epochs``, ``kind`` and ``warmup`` are not used): a linear warm-up over the first epoch, then the constant
``lr``; after every epoch one pass of ``accuracy(model)`` (the labeled images in eval mode, without augmentation)
decides whether to stop; ``max_epochs`` caps a round that never gets there. Data order is seeded per epoch as in
:func:`~timm_introspect.training.loop.train_loop`, and the accuracy pass draws no random numbers, so a round is a
function of its seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from ...errors import DivergedError, InvalidArgumentError
from ...log import tqdm
from ...training.loop import Schedule

__all__ = ["train_until"]


def train_until(
    accelerator: Accelerator,
    model: nn.Module,
    loader: torch.utils.data.DataLoader,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor],
    schedule: Schedule,
    accuracy: Callable[[nn.Module], float],
    threshold: float,
    max_epochs: int,
    desc: str = "train",
) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``model`` until ``accuracy(model) >= threshold`` after an epoch, or for ``max_epochs`` epochs.

    Args:
        accelerator: from :func:`~timm_introspect.training.loop.make_accelerator` (it seeds the data order).
        model, loader: not yet prepared; this function prepares them.
        loss_fn: ``loss_fn(model, batch) -> scalar loss``.
        schedule: the optimizer's settings (``lr`` is held constant after a one-epoch warm-up).
        accuracy: the model's accuracy on its training set, called with the unwrapped model after each epoch
            (it may switch the model to eval mode; training switches it back).
        threshold: stop once the accuracy reaches this (the BADGE code's 0.99).
        max_epochs: stop after this many epochs in any case.

    Returns:
        The trained model (unwrapped, in eval mode) and ``{"epochs", "train_accuracy", "reached",
        "accuracy_per_epoch"}``: epochs trained, the last accuracy, whether it reached ``threshold``, and every
        epoch's accuracy.
    """
    if max_epochs < 1:
        raise InvalidArgumentError(f"max_epochs must be at least 1, got {max_epochs}")
    optimizer = schedule.optimizer(model)
    warm = max(1, len(loader))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warm))
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    per_epoch: list[float] = []
    for epoch in range(max_epochs):
        loader.set_epoch(epoch)
        model.train()
        bar = tqdm(loader, desc=f"{desc} epoch {epoch + 1} (until {threshold:.0%}, at most {max_epochs})",
                   leave=False, disable=not accelerator.is_local_main_process)
        for step, batch in enumerate(bar):
            loss = loss_fn(model, batch)
            value = loss.item()
            if not math.isfinite(value):
                raise DivergedError(
                    f"{desc}: the loss is {value} at epoch {epoch + 1}, step {step + 1}: training diverged (a learning "
                    "rate too high for a constant schedule, or non-finite inputs); lower the learning rate")
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            bar.set_postfix(loss=f"{value:.3f}")
        per_epoch.append(float(accuracy(accelerator.unwrap_model(model))))
        if per_epoch[-1] >= threshold:
            break
    model = accelerator.unwrap_model(model).eval()
    return model, {"epochs": len(per_epoch), "train_accuracy": per_epoch[-1], "reached": per_epoch[-1] >= threshold,
                   "accuracy_per_epoch": [round(a, 5) for a in per_epoch]}
