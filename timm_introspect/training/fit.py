"""Training H from any data: the one path every job takes (the CLI's ``fit`` and ``run``, the benchmarks).

>>> head = IntrospectiveHead.wrap(model, loss="mse-M", scale="standard")   # doctest: +SKIP
>>> train_head(head, train_loader, out_dir="runs/h")                       # doctest: +SKIP

r_x of every training image is extracted once into the feature cache (streamed to disk, read back
memory-mapped: bounded memory at any dataset size; an interrupted extraction resumes), target M and the
feature scale are fitted on it (:meth:`IntrospectiveHead.fit_statistics`), and H is trained on shuffled
batches of the cached features with ``accelerate`` (one CPU to many GPUs; checkpointed every epoch and
resumed when started again with the same settings and ``out_dir``).
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ..data.images import LabeledImages
from ..errors import InvalidArgumentError
from ..model.head import IntrospectiveHead
from ..nets.registry import net_config
from .augmented import AugMixSource, training_record
from .cache import extract_features, iter_rows
from .loop import Schedule, exclusive_run, make_accelerator, train_loop
from .sources import ImageSource

__all__ = ["train_head"]


def train_head(
    head: IntrospectiveHead,
    data: Any,
    out_dir: str | Path | None = None,
    schedule: Schedule | None = None,
    batch_size: int = 128,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    mixed_precision: str = "no",
    workers: int = 0,
    on_step: Callable[[int, int], None] | None = None,
    lock: bool = True,
    augmix: int = 0,
) -> IntrospectiveHead:
    """Fit the statistics (target M, the feature scale) and train H on f's r_x of ``data``; f stays frozen.

    Args:
        head: f wrapped with its loss, scaling and (untrained) H, e.g. ``IntrospectiveHead.wrap(model)``.
        data: f's training images with their labels: any re-iterable of ``(images, labels)`` batches (a
            ``DataLoader`` over ``ImageFolder``, a ``TensorDataset``, a Hub dataset with a transform, ...;
            images preprocessed for f, in the same order on every pass: no shuffling, no random
            augmentation), or a ``LabeledImages`` split (preprocessed here with ``batch_size`` and
            ``workers``). A ``DataLoader`` is sharded across processes under ``accelerate launch``.
        out_dir: where the feature cache (``<out_dir>/feature-cache``) and the epoch checkpoints
            (``<out_dir>/checkpoints``) go; a run started again with the same settings resumes there.
            ``None``: a temporary folder, removed afterwards (no resume).
        schedule: H's optimizer and lr schedule (default: the paper's, 200 epochs, weight decay 5e-3).
        batch_size: H's training batch (per process), and the extraction batch of a ``LabeledImages``.
        seed: the data order of H's training (and of the Accelerator's RNGs).
        cache_dir: the feature cache (default ``<out_dir>/feature-cache``); shared between runs.
        mixed_precision: accelerate's ``"no"``, ``"fp16"`` or ``"bf16"``.
        on_step: called after every optimizer step with ``(epoch, step)``.
        lock: hold ``out_dir``'s lock for the run, so that a second run writing there is refused
            (:class:`~timm_introspect.RunLockedError`); a job that already holds it passes ``False``.
        augmix: AugMix copies of every training image added to H's training set (0: none): r_x of the images
            and of ``augmix`` copies of each, made with timm's AugMix operations that are no CIFAR-10-C
            corruption and seeded per image by its pixels and ``seed``
            (:class:`~timm_introspect.training.augmented.AugMixSource`). Only for a ``LabeledImages`` split; with
            your own loader, add the copies to it.

    Returns:
        ``head``, with M, the scale and H trained, in eval mode, on the device it came on. ``head.h_training``
        records what H trained on, the images, the rows and the AugMix copies
        (:func:`~timm_introspect.training.augmented.training_record`): saved with the model, stated in its card.
    """
    data = _with_augmix(data, head, augmix, batch_size, seed, workers)  # refused before any work
    if out_dir is None:
        with tempfile.TemporaryDirectory(prefix="timm-introspect-") as tmp:
            return train_head(head, data, tmp, schedule, batch_size, seed, cache_dir, mixed_precision, workers,
                              on_step, lock=False)  # the copies are in `data` now
    with exclusive_run(out_dir) if lock else contextlib.nullcontext():
        return _train_head(head, data, Path(out_dir), schedule, batch_size, seed, cache_dir, mixed_precision,
                           workers, on_step)


def _with_augmix(data: Any, head: IntrospectiveHead, augmix: int, batch_size: int, seed: int, workers: int) -> Any:
    """``data`` with ``augmix`` AugMix copies of each image (a split's source), or as it is for ``augmix=0``."""
    if isinstance(augmix, bool) or not isinstance(augmix, int) or augmix < 0:
        raise InvalidArgumentError(f"augmix is the number of AugMix copies of each training image (0 or more), got "
                                   f"{augmix!r}")
    if not augmix:
        return data
    if isinstance(data, LabeledImages):
        data = ImageSource(data, head.model, batch_size, workers)
    if not isinstance(data, ImageSource):
        raise InvalidArgumentError(
            f"augmix={augmix} makes AugMix copies of a LabeledImages split's images; this data is a "
            f"{type(data).__name__}: add the AugMix copies to your loader (timm's AugMixAugment, seeded, the same "
            "images on every pass) and pass augmix=0")
    return AugMixSource(data, copies=augmix, seed=seed)


def _train_head(head: IntrospectiveHead, data: Any, out_dir: Path, schedule: Schedule | None, batch_size: int,
                seed: int, cache_dir: str | Path | None, mixed_precision: str, workers: int,
                on_step: Callable[[int, int], None] | None) -> IntrospectiveHead:
    device = head.device
    accelerator = make_accelerator(out_dir, seed, mixed_precision)
    schedule = schedule or Schedule(epochs=200, weight_decay=5e-3)
    features, labels, cache_folder = extract_features(
        accelerator, head, data, cache_dir or out_dir / "feature-cache", batch_size=batch_size, workers=workers,
        factored=head.takes_factors)
    # M came with the features; the scale on every cached image, read a block at a time (memory-mapped)
    head.fit_statistics(features=lambda: iter_rows(features), sync=False)
    # raw features in the loader (rows read from the mapped cache), scaled batch by batch on the device
    scaler = copy.deepcopy(head.scaler).to(accelerator.device)
    names = list(features) if head.takes_factors else []
    columns = [t for n in names for t in features[n]] if head.takes_factors else [features]
    loader = DataLoader(TensorDataset(*columns, labels), batch_size=batch_size, shuffle=True)

    def loss_fn(model: nn.Module, batch: list[torch.Tensor]) -> torch.Tensor:
        *x, y = batch
        inputs = {n: (x[2 * i], x[2 * i + 1]) for i, n in enumerate(names)} if names else x[0]
        return F.cross_entropy(model(scaler(inputs)), y)

    signature = {"features": cache_folder.name, "loss": head.loss, "scale": head.scaling, "batch_size": batch_size,
                 "seed": seed, "introspective_net": net_config(head.introspective_net)}
    if isinstance(data, AugMixSource):  # named beside the features' key (only then: older runs still resume)
        signature["augmix"] = data.describe()["augmix"]
    trained = train_loop(accelerator, head.introspective_net, loader, loss_fn, schedule, out_dir / "checkpoints",
                         "H", on_step, signature=signature)
    head.introspective_net = trained.to(device)
    head.h_training = training_record(data, len(labels))  # saved with the model: what H trained on (the card says it)
    return head.to(device).eval()
