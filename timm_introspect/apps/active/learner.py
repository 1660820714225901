"""One round's models: train f on the labeled images, fit H on f's r_x of them, score them on test sets.

f trains with :func:`~timm_introspect.training.loop.train_loop` on uint8 batches augmented by
:class:`~timm_introspect.data.augment.BatchAugment` (reflect-padded random crop, flip), as the CPU recipe does; H is
the paper's MLP trained on the scaled r_x of the labeled images (target M and the scale fitted on them,
as :func:`~timm_introspect.training.pipeline.fit_head` does). Every random draw is seeded by the round's seed.
Both train a fixed schedule, or with ``config.until_train_accuracy`` until they fit the labeled set
(:func:`~timm_introspect.apps.active.until.train_until`); ``stats`` then receives how far they went.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from timm.data import resolve_model_data_config
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ...core.metrics import classification_metrics
from ...data.augment import BatchAugment
from ...io.checkpoint import load_strict
from ...model.head import IntrospectiveHead
from ...nets.mlp import IntrospectiveMLP
from ...training.loop import Schedule, make_accelerator, train_loop
from .config import ActiveConfig
from .until import train_until
from .views import backbone_outputs, introspective_inputs, raw_introspective_features

__all__ = ["evaluate_round", "fit_h", "round_schedule", "train_f"]


def round_schedule(schedule: Schedule, images: int, batch_size: int, min_steps: int) -> Schedule:
    """``schedule`` with enough epochs for at least ``min_steps`` optimizer steps on ``images`` images."""
    batches = max(1, images // batch_size if _drop_last(images, batch_size) else math.ceil(images / batch_size))
    return dataclasses.replace(schedule, epochs=max(schedule.epochs, math.ceil(min_steps / batches)))


def _drop_last(images: int, batch_size: int) -> bool:
    # a last batch of one image would break BatchNorm in training mode
    return images > batch_size and images % batch_size == 1


def _loader(tensors: list[torch.Tensor], batch_size: int) -> DataLoader:
    n = len(tensors[0])
    return DataLoader(TensorDataset(*tensors), batch_size=batch_size, shuffle=True, drop_last=_drop_last(n, batch_size))


def _accuracy(logits: torch.Tensor, labels: np.ndarray) -> float:
    return float((logits.argmax(-1).cpu() == torch.as_tensor(labels, dtype=torch.long)).double().mean())


def train_f(images: np.ndarray, labels: np.ndarray, num_classes: int, config: ActiveConfig, seed: int,
            out_dir: str | Path, init_state: dict[str, torch.Tensor] | None = None, desc: str = "f",
            stats: dict | None = None) -> nn.Module:
    """Train f (``config.model``, timm) on uint8 images ``(n, H, W, 3)``; returns it in eval mode.

    ``init_state``: start from these weights (``reset=False``); otherwise a fresh initialization seeded by ``seed``.
    ``stats``: with ``config.until_train_accuracy``, filled with the epochs trained and the final accuracy on
    ``images`` (:func:`~timm_introspect.apps.active.until.train_until`).
    """
    accelerator = make_accelerator(out_dir, seed, config.mixed_precision)  # seeds torch: f's init is seeded
    model = timm.create_model(config.model, num_classes=num_classes, drop_rate=config.f_drop_rate)
    if init_state is not None:
        load_strict(model, init_state, "f of the previous round")
    cfg = resolve_model_data_config(model)
    augment = BatchAugment(cfg["mean"], cfg["std"], pad=images.shape[1] // 8).train(config.augment)
    pixels = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
    loader = _loader([pixels, torch.as_tensor(labels, dtype=torch.long)], config.batch_size)
    augment = augment.to(accelerator.device)

    def loss_fn(model: nn.Module, batch: list[torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(augment(x)), y, label_smoothing=config.schedule.label_smoothing)

    if config.until_train_accuracy is not None:
        def accuracy(model: nn.Module) -> float:
            return _accuracy(backbone_outputs(model, images, config.eval_batch_size)[0], labels)

        model, info = train_until(accelerator, model, loader, loss_fn, config.schedule, accuracy,
                                  config.until_train_accuracy, config.max_epochs, desc)
        if stats is not None:
            stats.update(info)
        return model
    schedule = round_schedule(config.schedule, len(images), config.batch_size, config.min_steps)
    return train_loop(accelerator, model, loader, loss_fn, schedule, None, desc).eval()


def fit_h(model: nn.Module, images: np.ndarray, labels: np.ndarray, config: ActiveConfig, seed: int,
          out_dir: str | Path, desc: str = "H", stats: dict | None = None) -> IntrospectiveHead:
    """Wrap the trained f and fit H on its r_x of the labeled images: target M, the scale, the MLP.

    ``stats``: as :func:`train_f`'s, for H on the labeled images' r_x.
    """
    z, h = backbone_outputs(model, images, config.eval_batch_size)
    num_classes, dim = z.shape[1], h.shape[1]
    accelerator = make_accelerator(out_dir, seed, config.mixed_precision)  # seeds torch: H's init is seeded
    net = IntrospectiveMLP(num_classes * dim, num_classes, config.hidden, drop_rate=config.h_drop_rate)
    head = IntrospectiveHead.wrap(model, loss=config.loss, introspective_net=net, scale=config.scale).to(z.device)
    # the statistics every H is fitted with (target M, the scale), on the labeled images' r_x
    head.fit_statistics(logits=[z], features=lambda: [raw_introspective_features(head, z, h)], sync=False)
    x = introspective_inputs(head, z, h).cpu()

    def loss_fn(net: nn.Module, batch: list[torch.Tensor]) -> torch.Tensor:
        features, y = batch
        return F.cross_entropy(net(features), y)

    loader = _loader([x, torch.as_tensor(labels, dtype=torch.long)], config.head_batch_size)
    if config.until_train_accuracy is not None:
        def accuracy(net: nn.Module) -> float:
            net.eval()
            with torch.no_grad():
                device = next(net.parameters()).device
                return _accuracy(torch.cat([net(b.to(device)) for b in x.split(config.eval_batch_size)]), labels)

        net, info = train_until(accelerator, net, loader, loss_fn, config.head_schedule, accuracy,
                                config.until_train_accuracy, config.head_max_epochs, desc)
        if stats is not None:
            stats.update(info)
        head.introspective_net = net.to(z.device)
        return head.eval()
    schedule = round_schedule(config.head_schedule, len(x), config.head_batch_size, config.head_min_steps)
    head.introspective_net = train_loop(accelerator, net, loader, loss_fn, schedule, None, desc).to(z.device)
    return head.eval()


@torch.no_grad()
def evaluate_round(head: IntrospectiveHead, sets: dict[str, tuple[np.ndarray, np.ndarray]],
                   batch_size: int = 500) -> dict[str, dict[str, dict[str, float]]]:
    """``{set: {"f": metrics, "H": metrics}}`` (accuracy, ECE, MCE, NLL, Brier) on each test set."""
    out = {}
    head.eval()
    for name, (images, labels) in sets.items():
        z, h = backbone_outputs(head.model, images, batch_size)
        h_logits = head.introspective_net(introspective_inputs(head, z, h))
        y = torch.as_tensor(labels, dtype=torch.long)
        out[name] = {"f": classification_metrics(z.cpu(), y), "H": classification_metrics(h_logits.float().cpu(), y)}
    return out
