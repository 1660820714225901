"""The jobs on ``datasets`` splits: train f, fit H on f's training split, evaluate f and H on a split.

Each takes a :class:`~timm_introspect.data.images.LabeledImages` split and calls the data-agnostic
functions every path shares (:func:`~timm_introspect.training.fit.train_head`,
:func:`~timm_introspect.training.evaluate.evaluate_head`); the CLI only loads data and parses flags. All
run under ``accelerate``: the same call works on one CPU and under ``accelerate launch`` / ``torchrun``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator, PartialState
from accelerate.utils import set_seed
from timm.data import resolve_model_data_config
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ..data.augment import BatchAugment
from ..data.images import LabeledImages, make_loader
from ..data.outputs import prepare_output, write_json
from ..errors import DataError
from ..io.backbones import load_folder
from ..io.checkpoint import read_json
from ..io.hub import save_backbone
from ..model.head import IntrospectiveHead
from ..nets.cifar import create_model
from .evaluate import evaluate_head
from .fit import train_head
from .loop import Schedule, exclusive_run, make_accelerator, train_loop
from .sources import ImageSource

__all__ = ["check_backbone_data", "evaluate", "evaluate_backbone", "fit_head", "heldout_images", "holdout_record",
           "load_backbone", "save_backbone", "train_backbone"]


# --- f -------------------------------------------------------------------------------------------

def load_backbone(folder: str | Path) -> nn.Module:
    """f from a folder written by :func:`save_backbone` (strict, safetensors only); any timm classifier:
    :func:`~timm_introspect.io.backbones.resolve_backbone`."""
    return load_folder(folder)


def _exclusive(kind: str) -> Callable[[Callable], Callable]:
    """Run the job holding its ``out_dir``'s lock (:func:`~timm_introspect.training.loop.exclusive_run`), once
    ``out_dir`` is checked to be a place for an output of ``kind``: a refused folder is left as it was."""

    def decorate(job: Callable) -> Callable:
        @functools.wraps(job)
        def locked(*args: Any, **kwargs: Any) -> Any:
            out_dir = inspect.signature(job).bind(*args, **kwargs).arguments["out_dir"]
            prepare_output(out_dir, kind, create=False)  # not a folder holding another kind of model
            with exclusive_run(out_dir):
                return job(*args, **kwargs)

        return locked

    return decorate


@_exclusive("backbone")
def train_backbone(
    train: LabeledImages,
    out_dir: str | Path,
    model_name: str = "resnet18",
    cifar_stem: bool = True,
    schedule: Schedule | None = None,
    batch_size: int = 128,
    seed: int = 0,
    mixed_precision: str = "no",
    workers: int = 0,
    test: LabeledImages | None = None,
    on_step: Callable[[int, int], None] | None = None,
    holdout: float = 0.0,
    limit: int | None = None,
    tensor_augment: bool | None = None,
    channels_last: bool = False,
    **model_kwargs: Any,
) -> nn.Module:
    """Train a timm classifier from scratch (f) and save it to ``out_dir`` (timm layout).

    With ``holdout`` > 0, f trains without that (seeded) fraction of ``train``, which is recorded in
    ``training.json``: the images for temperature scaling, or for fitting H on images f did not see
    (paper, Fig. 10). ``limit`` is only recorded (the subset ``train`` was loaded with), to rebuild that
    split later.

    ``tensor_augment`` (default: for inputs of at most 64 px whose images already have that size) decodes
    the images once and augments whole uint8 batches (:class:`~timm_introspect.data.augment.BatchAugment`:
    reflect-padded random crop, flip) instead of per-image PIL transforms: on a CPU that is what keeps
    the cores on the model. ``channels_last`` trains in that memory format.
    """
    out_dir = Path(out_dir).expanduser().absolute()  # checked by @_exclusive
    source_split = train.split
    if holdout:
        train, _ = train.split_holdout(holdout, seed)
    accelerator = make_accelerator(out_dir, seed, mixed_precision)
    schedule = schedule or Schedule(epochs=200)
    train.check_training_labels()
    model = create_model(model_name, train.num_classes, cifar_stem=cifar_stem, **model_kwargs)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    loader, augment = _train_loader(train, model, batch_size, workers, tensor_augment)

    def loss_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        if augment is not None:
            x = augment.to(x.device)(x)
        x = x.contiguous(memory_format=memory_format)
        return F.cross_entropy(model(x), y, label_smoothing=schedule.label_smoothing)

    info = {"model": model_name, "cifar_stem": cifar_stem, "data": train.source, "split": source_split,
            "images": len(train), "limit": limit, "seed": seed, "holdout": holdout, "batch_size": batch_size,
            "tensor_augment": augment is not None, "channels_last": channels_last, "model_kwargs": model_kwargs,
            "columns": [train.image_column, train.label_column]}
    if train.classes is not None:  # a class subset (e.g. CIFAR-6/4), to rebuild the held-out split
        info["classes"] = list(train.classes)
    model = train_loop(accelerator, model, loader, loss_fn, schedule, out_dir / "checkpoints", "f", on_step,
                       signature={**{k: v for k, v in info.items() if k != "images"}, **_data_identity(train)})
    model = model.eval().to(memory_format=torch.contiguous_format)
    info["schedule"] = schedule.__dict__
    if test is not None:  # every rank predicts (gather_for_metrics needs them all); the main one writes
        info["test"] = evaluate_head(model, make_loader(test, model, False, batch_size, workers),
                                     accelerator=accelerator)["f"]
    if accelerator.is_main_process:
        save_backbone(model, out_dir, train.label_names)
        write_json(out_dir / "training.json", info)
    accelerator.wait_for_everyone()
    return model


def _data_identity(images: LabeledImages) -> dict[str, Any]:
    """What defines a run's data beyond its name: the columns read and a fingerprint of the rows' content
    (:meth:`LabeledImages.fingerprint`: other files at the same path are not resumed, a copy of the same files
    is). Part of a run's resume signature."""
    return {"columns": [images.image_column, images.label_column], "data_fingerprint": images.fingerprint()}


def _train_loader(train: LabeledImages, model: nn.Module, batch_size: int, workers: int,
                  tensor_augment: bool | None) -> tuple[DataLoader, BatchAugment | None]:
    """The training batches: PIL transforms per image, or decoded uint8 tensors and a batch augmentation."""
    cfg = resolve_model_data_config(model)
    size = tuple(cfg["input_size"][1:])
    if tensor_augment is None:  # small RGB images already at the model's size
        tensor_augment = max(size) <= 64 and cfg["input_size"][0] == 3 and train.image_size() == size
    if not tensor_augment:
        return make_loader(train, model, True, batch_size, workers), None
    pixels = train.pixels()
    if tuple(pixels.shape[2:]) != size:
        raise DataError(f"tensor augmentation needs images of the model's size {size}; {train.source} has "
                        f"{tuple(pixels.shape[2:])}: pass tensor_augment=False to resize them per image")
    dataset = TensorDataset(pixels, train.labels())
    augment = BatchAugment(cfg["mean"], cfg["std"], pad=size[-1] // 8).train()
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers), augment


# --- H --------------------------------------------------------------------------------------------

@_exclusive("introspective")
def fit_head(
    backbone: nn.Module,
    train: LabeledImages,
    out_dir: str | Path,
    loss: str = "mse-M",
    schedule: Schedule | None = None,
    batch_size: int = 128,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    mixed_precision: str = "no",
    workers: int = 0,
    on_step: Callable[[int, int], None] | None = None,
    net: str = "mlp",
    calibration: dict[str, Any] | None = None,
    scale: bool | str = True,
    save: bool = True,
    augmix: int = 0,
) -> IntrospectiveHead:
    """Fit H on f's introspective features of ``train`` and save the whole model to ``out_dir`` (``save=False``: the
    caller saves it, once, e.g. after adding its results, as the main job does).

    f is frozen. r_x is extracted once (cached in ``cache_dir``, default ``<out_dir>/feature-cache``),
    M and the feature scale (``scale``: ``"maxabs"``, the paper's [-1, 1], ``"standard"`` or ``"none"``; see
    :class:`IntrospectiveHead`) are estimated on it, and H is trained with :func:`train_loop` (resumable).
    ``net`` is a registered H (:func:`timm_introspect.list_nets`): the paper's MLP (``"mlp"``), or an H on
    the factors (delta, h) of r_x, which are then what is cached and scaled (r_x is never materialized).
    ``calibration`` records held-out images neither f nor H saw (:func:`holdout_record`), for temperature
    scaling in the benchmarks. ``augmix``: H also trains on that many AugMix copies of each image
    (:func:`~timm_introspect.training.fit.train_head`).
    """
    set_seed(seed)  # H's initialization is seeded
    model_names = (getattr(backbone, "pretrained_cfg", None) or {}).get("label_names")  # the dataset's, or f's
    head = IntrospectiveHead.wrap(backbone, loss=loss, label_names=train.label_names or model_names,
                                 introspective_net=net, scale=scale)
    train.check_labels(head.num_classes)
    train.check_names(model_names)
    head = train_head(head, ImageSource(train, backbone, batch_size, workers), out_dir, schedule, batch_size, seed,
                      cache_dir, mixed_precision, on_step=on_step, lock=False,  # fit_head holds the lock
                      augmix=augmix)
    head.dataset = train.source
    head.calibration = calibration
    if save and PartialState().is_main_process:
        head.save_pretrained(out_dir)
    PartialState().wait_for_everyone()
    return head


def evaluate(
    head: IntrospectiveHead,
    images: LabeledImages,
    batch_size: int = 256,
    accelerator: Accelerator | None = None,
    workers: int = 0,
) -> dict[str, dict[str, float]]:
    """Accuracy, ECE, MCE, NLL and Brier of f and of H on a dataset: ``{"f": {...}, "H": {...}}``
    (:func:`~timm_introspect.training.evaluate.evaluate_head` on its loader at f's preprocessing)."""
    images.check_labels(head.num_classes)
    images.check_names(head.label_names)
    return evaluate_head(head, make_loader(images, head.model, False, batch_size, workers), accelerator=accelerator)


def evaluate_backbone(
    model: nn.Module,
    images: LabeledImages,
    batch_size: int = 256,
    accelerator: Accelerator | None = None,
    workers: int = 0,
) -> dict[str, dict[str, float]]:
    """Accuracy, ECE, MCE, NLL and Brier of f alone (any timm classifier, preprocessed with its own data
    config): ``{"f": {...}}``."""
    images.check_labels(model.num_classes)
    images.check_names((getattr(model, "pretrained_cfg", None) or {}).get("label_names"))
    return evaluate_head(model, make_loader(images, model, False, batch_size, workers), accelerator=accelerator)


def _training_record(backbone_dir: str | Path) -> dict[str, Any] | None:
    """f's ``training.json`` (written by :func:`train_backbone`), or ``None`` (not a folder, or f trained elsewhere)."""
    path = Path(backbone_dir) / "training.json"
    return read_json(path, "training.json") if path.is_file() else None


def _same_classes(theirs: list[int] | None, ours: Sequence[int] | None) -> bool:
    """Whether each label means the same class under both selections (``None``: every class, in order); a shorter
    selection agreeing on its labels is the same (its other labels are out of f's range, refused elsewhere)."""
    if theirs is None or ours is None:
        given = ours if theirs is None else theirs
        return given is None or list(given) == list(range(len(given)))
    return all(a == b for a, b in zip(theirs, ours, strict=False))


def check_backbone_data(backbone_dir: str | Path, images: LabeledImages) -> None:
    """Refuse fitting (or evaluating) H on f's data read so that its labels mean other classes than f's.

    f's ``training.json`` records the data, the columns and the classes (``classes=``) it was trained on. The same
    data read with another image or label column, or with other classes, raises :class:`DataError` (label i would
    be scored as f's class i). Other data, or an f without that record (an ``hf-hub:`` model, a timm folder), passes:
    class names, when both sides have them, are compared by :meth:`LabeledImages.check_names`.
    """
    info = _training_record(backbone_dir) if Path(backbone_dir).is_dir() else None
    if info is None or info.get("data") != images.source:
        return
    columns = [images.image_column, images.label_column]
    if info.get("columns") is not None and info["columns"] != columns:
        raise DataError(f"f was trained on the columns {info['columns'][0]} (images) and {info['columns'][1]} "
                        f"(labels) of {images.source}; these images come from {columns[0]} and {columns[1]}: the "
                        "labels would mean other classes than f's. Read the data with f's columns")
    theirs, ours = info.get("classes"), list(images.classes) if images.classes is not None else None
    if not _same_classes(theirs, ours):
        shown = lambda c: "all its classes" if c is None else f"classes {c}"  # noqa: E731
        raise DataError(f"f was trained on {shown(theirs)} of {images.source}; these images are {shown(ours)}: "
                        "label i would be scored as f's class i. Load them with f's classes"
                        + (f", classes={theirs}" if theirs is not None else " (no class selection)"))


def holdout_record(backbone_dir: str | Path) -> dict[str, Any] | None:
    """The images f was trained without (``train-backbone --holdout``), as ``training.json`` records them:
    ``{"data", "split", "limit", "seed", "holdout"}``, or ``None``."""
    info = _training_record(backbone_dir) or {}
    if not info.get("holdout"):
        return None
    record = {k: info.get(k) for k in ("data", "split", "limit", "seed", "holdout")}
    return {**record, "classes": info["classes"]} if info.get("classes") is not None else record


def heldout_images(backbone_dir: str | Path, train: LabeledImages, split: str, limit: int | None,
                   seed: int) -> LabeledImages:
    """The training images f did not see (``train-backbone --holdout``), rebuilt from ``training.json``.

    ``train`` must be loaded as f's training set was (same data, split, limit and seed); anything else
    raises :class:`DataError`, since another split would overlap f's training images.
    """
    info = _training_record(backbone_dir)
    if info is None:
        raise DataError(f"{Path(backbone_dir) / 'training.json'} is missing: a held-out split needs a backbone "
                        "trained by `train-backbone --holdout`")
    if not info.get("holdout"):
        raise DataError(f"{backbone_dir} was trained on all its images: train it with a holdout fraction > 0 to fit H "
                        "on held-out images")
    ours = {"data": train.source, "split": split, "limit": limit, "seed": seed,
            "classes": list(train.classes) if train.classes is not None else None}
    theirs = {k: info.get(k) for k in ours}
    if ours != theirs:
        raise DataError(
            f"the held-out images must rebuild f's split exactly: f was trained with {theirs}, these are {ours}; "
            "load the training images as f's were (same data, split, limit and classes) and pass the same seed"
        )
    return train.split_holdout(info["holdout"], info["seed"])[1]
