"""Image classification data from ``datasets``, preprocessed for a timm model.

A source is a Hub dataset id (default ``uoft-cs/cifar10``) or a local folder that ``datasets`` can
read (Parquet files such as ``../shared/data/cifar10``, or an image folder). The image and label
columns are found from the dataset's features (``Image`` and ``ClassLabel``) or named explicitly.
Images are decoded here, not by ``datasets``, so that an unreadable one is reported by name; images
are converted to the model's channels (grayscale -> RGB by repetition: ``PIL.Image.convert``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms

from ..errors import DataError, InvalidArgumentError
from .decode import decode_image, local_source, stack_images
from .decode import image_column as find_image_column

__all__ = ["LabeledImages", "batch_images", "batch_labels", "decode_image", "load_images", "make_loader",
           "make_transform", "model_pixels"]


@dataclass
class LabeledImages:
    """A ``datasets.Dataset`` of images with labels, and what is known about its columns."""

    dataset: datasets.Dataset
    image_column: str
    label_column: str
    label_names: list[str] | None
    source: str
    split: str
    #: the class subset this was loaded with (``load_images(classes=...)``): original class indices, or ``None``
    classes: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def num_classes(self) -> int:
        if self.label_names:
            return len(self.label_names)
        return int(max(self.dataset[self.label_column])) + 1

    def labels(self) -> torch.Tensor:
        return torch.as_tensor(self.dataset[self.label_column], dtype=torch.long)

    def arrays(self, model: nn.Module | None = None,
               resize: Callable[[Image.Image], np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """All images as one uint8 RGB array ``(n, H, W, 3)`` and the labels ``(n,)``.

        Without ``model`` the images are as stored (they must all have one size); with it, as that model
        sees them before normalization: its own evaluation resize and crop (:func:`model_pixels`), so an
        ImageNet model gets 224 px center crops of images of any size. ``resize`` maps each image instead
        (e.g. ImageNet-C's :func:`~timm_introspect.data.cifar10c.imagenet_preprocess`).
        """
        if model is not None and resize is not None:
            raise InvalidArgumentError("pass model= or resize=, not both")
        raw = self.dataset.cast_column(self.image_column, datasets.Image(decode=False))[self.image_column]
        resize = model_pixels(model) if model is not None else resize or np.asarray
        where = f"{self.source} [{self.split}]"
        return stack_images(raw, lambda item: resize(decode_image(item, "RGB")), where), self.labels().numpy()

    def fingerprint(self, rows: int = 1024) -> str:
        """An identity of these rows that survives copying the files: a sha256 of the row count, the features,
        and the stored bytes (images undecoded) of ``rows`` rows spread evenly over the split, first and last
        included. ``datasets``' own fingerprint of a local folder follows the files' modification times, so a
        copy, a re-download or a ``touch`` of the same files would look like other data (and a run could not
        resume); this one changes when the rows do, unless every changed row lies between the sampled ones.
        """
        n = len(self.dataset)
        digest = hashlib.sha256(json.dumps([n, self.dataset.features.to_dict()], sort_keys=True).encode())
        if n:
            picked = np.unique(np.linspace(0, n - 1, min(n, rows)).round().astype(np.int64)).tolist()
            table = self.dataset.with_format("arrow")[picked].combine_chunks()
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema.remove_metadata()) as writer:
                writer.write_table(table.replace_schema_metadata(None))
            digest.update(sink.getvalue().to_pybytes())
        return digest.hexdigest()[:16]

    def image_size(self) -> tuple[int, int] | None:
        """``(H, W)`` of the first image (``None`` for an empty dataset)."""
        if not len(self):
            return None
        raw = self.dataset.cast_column(self.image_column, datasets.Image(decode=False))[0][self.image_column]
        width, height = decode_image(raw, "RGB").size
        return height, width

    def pixels(self) -> torch.Tensor:
        """All images decoded once, as one RGB uint8 tensor ``(n, 3, H, W)`` (same-size images)."""
        images, _ = self.arrays()
        return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()

    def split_holdout(self, fraction: float, seed: int = 0) -> tuple[LabeledImages, LabeledImages]:
        """``(rest, held_out)``: a seeded random split, e.g. f on the rest and H on the held-out part
        (paper, Fig. 10)."""
        if not 0 < fraction < 1:
            raise InvalidArgumentError(f"holdout fraction must be in (0, 1), got {fraction}")
        parts = self.dataset.train_test_split(test_size=fraction, seed=seed, shuffle=True)
        return (
            LabeledImages(parts["train"], self.image_column, self.label_column, self.label_names, self.source,
                          f"{self.split} (without {fraction:g} held out, seed {seed})", self.classes),
            LabeledImages(parts["test"], self.image_column, self.label_column, self.label_names, self.source,
                          f"{self.split} (held out {fraction:g}, seed {seed})", self.classes),
        )

    def check_training_labels(self) -> None:
        """Before training a new f: labels are 0..N-1 and, without class names, every class has images (an
        outlier label such as 57 among 0..9 would silently make a 58-way model)."""
        labels = self.labels()
        if labels.numel() and labels.min() < 0:
            raise DataError(f"{self.source} [{self.split}] has negative labels ({labels.min().item()}): class indices "
                            "start at 0; remove or relabel those rows")
        if not self.label_names and labels.numel():
            missing = sorted(set(range(int(labels.max()) + 1)) - set(labels.tolist()))
            if missing:
                raise DataError(
                    f"{self.source} [{self.split}] has integer labels up to {labels.max().item()} but no images of "
                    f"class(es) {missing[:10]}{' ...' if len(missing) > 10 else ''}: an outlier label would add "
                    "classes. Fix the labels, or give the label column a ClassLabel feature with the class names")

    def check_names(self, label_names: list[str] | None) -> None:
        """Raise :class:`DataError` when the dataset's class names differ from a model's (e.g. permuted)."""
        if self.label_names and label_names and list(self.label_names) != list(label_names):
            how = "in another order" if sorted(self.label_names) == sorted(label_names) else "different names"
            raise DataError(
                f"{self.source} [{self.split}] names its classes {self.label_names}, the model {list(label_names)} "
                f"({how}): label i would be scored as the model's class i. Use the dataset the model was trained "
                "on, or map its labels to the model's classes first")

    def check_labels(self, num_classes: int) -> None:
        """Raise :class:`DataError` unless every label is a class index of a ``num_classes``-way model."""
        labels = self.labels()
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            raise DataError(
                f"{self.source} [{self.split}] has labels in [{labels.min().item()}, {labels.max().item()}], "
                "outside the "
                f"model's {num_classes} classes [0, {num_classes - 1}]: use a model with as many classes as the data, "
                "or the dataset it was trained on"
            )

    def torch_dataset(self, transform: Callable[[Image.Image], torch.Tensor], channels: int = 3) -> datasets.Dataset:
        """The dataset yielding ``{"pixel_values": tensor, "label": int}``, decoding images on access."""
        mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(channels, "RGB")
        image_column, label_column = self.image_column, self.label_column

        def apply(batch: dict[str, list[Any]]) -> dict[str, Any]:
            pixels = [transform(decode_image(item, mode)) for item in batch[image_column]]
            return {"pixel_values": pixels, "label": batch[label_column]}

        raw = self.dataset.cast_column(image_column, datasets.Image(decode=False))
        return raw.with_transform(apply)


def load_images(
    source: str = "uoft-cs/cifar10",
    split: str = "train",
    image_column: str | None = None,
    label_column: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    classes: Sequence[int | str] | None = None,
) -> LabeledImages:
    """Load one split of an image classification dataset.

    Args:
        source: a Hub dataset id or a local folder (Parquet files, or an image folder).
        split: the split name (``"train"``, ``"test"``, ...).
        image_column, label_column: column names; found from the features when not given.
        limit: keep a random subset of this many rows (seeded; CIFAR files are sorted by class).
        seed: seed of that subset.
        classes: keep only these classes (indices or names, e.g. CIFAR-6/4's first six), relabeled 0..k-1 in
            the order given, with their names; applied before ``limit``.
    """
    source = local_source(str(source))  # a local folder: absolute (recorded so), and it must exist
    try:  # a Hub id or a local folder: datasets tells them apart
        ds = datasets.load_dataset(source, split=split)
    except ValueError as err:
        if "corresponds to no data" in str(err):  # datasets' word for a split of zero rows
            raise DataError(f"{source} [{split}] has no rows: pass a dataset (or split) with images") from err
        if "split" in str(err).lower():
            raise DataError(f"{source} has no split {split!r} ({err})") from err
        raise
    if not len(ds):
        raise DataError(f"{source} [{split}] has no rows: pass a dataset (or split) with images")
    features = ds.features
    image_column = find_image_column(features, source, image_column)  # with several image columns: named
    if label_column is None:
        label_column = next((k for k, f in features.items() if isinstance(f, datasets.ClassLabel)), None)
        label_column = label_column or next((k for k in ("label", "labels") if k in features), None)
        if label_column is None:
            raise DataError(
                f"{source} has no label column (columns: {list(features)}): training and evaluation need labels; "
                "name the column with label_column="
            )
    elif label_column not in features:
        raise DataError(f"{source} has no column {label_column!r}; its columns are {list(features)}")
    feature = features[label_column]
    label_names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    if not isinstance(feature, datasets.ClassLabel) and not (
        isinstance(feature, datasets.Value) and feature.dtype.startswith("int")
    ):
        raise DataError(f"label column {label_column!r} of {source} holds {feature}, not class indices")
    subset = None
    if classes is not None:
        ds, label_names, subset = _select_classes(ds, label_column, label_names, classes, f"{source} [{split}]")
    if limit is not None and limit < len(ds):
        ds = ds.shuffle(seed=seed).select(range(limit))
    return LabeledImages(ds, image_column, label_column, label_names, source, split, subset)


def _select_classes(ds: datasets.Dataset, label_column: str, label_names: list[str] | None,
                    classes: Sequence[int | str], where: str) -> tuple[datasets.Dataset, list[str] | None, tuple]:
    """Rows of the given classes (names, indices, or digit strings), relabeled 0..k-1 in the order given. A string
    that is one of the class names is that name, even when it is made of digits; only other digit strings are
    indices. Every class given must have images in ``ds``."""
    indices = []
    for c in classes:
        if isinstance(c, str) and label_names and c in label_names:
            indices.append(label_names.index(c))
        elif isinstance(c, str) and not c.strip().isdigit():
            if not label_names or c not in label_names:
                raise DataError(f"{where} has no class named {c!r}"
                                + (f"; its classes are {label_names}" if label_names else ": pass class indices"))
            indices.append(label_names.index(c))
        else:
            indices.append(int(c))
    num = len(label_names) if label_names else None
    bad = [i for i in indices if i < 0 or (num is not None and i >= num)]
    if bad or not indices or len(set(indices)) != len(indices):
        raise DataError(f"classes must be distinct class indices of {where}"
                        + (f" (0..{num - 1})" if num else "") + f"; got {list(classes)}")
    labels = np.asarray(ds[label_column])
    absent = [c for c, i in zip(classes, indices, strict=True) if not np.any(labels == i)]
    if absent:  # a class without images would train a model that never predicts it (or a one-class model)
        raise DataError(f"{where} has no images of the class(es) {absent}"
                        + (f"; its classes are {label_names}" if label_names else ""))
    ds = ds.select(np.flatnonzero(np.isin(labels, indices)))
    mapping = {old: new for new, old in enumerate(indices)}
    names = [label_names[i] for i in indices] if label_names else None
    features = ds.features.copy()
    features[label_column] = datasets.ClassLabel(names=names) if names else datasets.Value("int64")
    ds = ds.map(lambda ys: {label_column: [mapping[y] for y in ys]}, input_columns=label_column, batched=True,
                features=features, desc="select classes")
    return ds, names, tuple(indices)


def make_transform(model: nn.Module, train: bool,
                   cifar_augment: bool | None = None) -> Callable[[Image.Image], torch.Tensor]:
    """Preprocessing from the model's timm data config.

    Models with CIFAR's data config (``cifar_augment`` None: at most 64 px, no crop, i.e. ``crop_pct`` 1,
    bilinear resizing) train with the CIFAR augmentation: random crop with 4 px padding and horizontal
    flip; evaluation resizes to the input size and normalizes (for square images what ``create_transform``
    does with such a config; CIFAR-trained models keep exactly their preprocessing and feature caches).
    Every other model (an ImageNet-style one, of any size) uses its own config through
    ``timm.data.create_transform``: its resize, center crop, mean and std.
    """
    from timm.data import create_transform, resolve_model_data_config

    cfg = resolve_model_data_config(model)
    size = cfg["input_size"][-1]
    if cifar_augment is None:
        cifar_augment = (size <= 64 and cfg.get("crop_pct", 1.0) == 1.0 and cfg.get("crop_mode", "center") == "center"
                         and cfg.get("interpolation", "bilinear") == "bilinear")
    if cifar_augment:
        steps: list[Callable] = [transforms.Resize((size, size))]
        if train:
            steps += [transforms.RandomCrop(size, padding=size // 8), transforms.RandomHorizontalFlip()]
        steps += [transforms.ToTensor(), transforms.Normalize(cfg["mean"], cfg["std"])]
        return transforms.Compose(steps)
    return create_transform(**cfg, is_training=train)


def model_pixels(model: nn.Module) -> Callable[[Image.Image], np.ndarray]:
    """The geometric part of the model's evaluation preprocessing (:func:`make_transform`): PIL image in,
    uint8 ``(H, W, 3)`` at the model's input size out; tensor conversion and normalization left out."""
    transform = make_transform(model, train=False)
    steps = [t for t in getattr(transform, "transforms", [transform])
             if type(t).__name__ not in ("ToTensor", "MaybeToTensor", "Normalize")]

    def resize(img: Image.Image) -> np.ndarray:
        for step in steps:
            img = step(img)
        return np.asarray(img)

    return resize


def batch_images(batch: Any) -> torch.Tensor:
    """The image tensor of a batch: a tensor, the first item of a tuple/list, or a dict entry."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    if isinstance(batch, dict):
        for key in ("pixel_values", "image", "img", "x"):
            if isinstance(batch.get(key), torch.Tensor):
                return batch[key]
    raise DataError(
        "cannot find images in the batch: yield a tensor, an (images, labels) tuple, or a dict with "
        f"'pixel_values', 'image', 'img' or 'x'; got {type(batch).__name__}"
    )


def batch_labels(batch: Any) -> torch.Tensor | None:
    """The labels of a batch: the second item of a tuple/list, or a dict's ``label`` / ``labels``; ``None`` if none."""
    if isinstance(batch, (tuple, list)) and len(batch) >= 2 and batch[1] is not None:
        return torch.as_tensor(batch[1])
    if isinstance(batch, dict):
        for key in ("label", "labels", "y"):
            if batch.get(key) is not None:
                return torch.as_tensor(batch[key])
    return None


def make_loader(images: LabeledImages, model: nn.Module, train: bool, batch_size: int, workers: int = 0) -> DataLoader:
    """A ``DataLoader`` of ``(images, labels)`` batches preprocessed for ``model`` (shuffled when ``train``)."""
    channels = model.pretrained_cfg.get("input_size", (3,))[0]
    ds = images.torch_dataset(make_transform(model, train=train), channels=channels)
    # no persistent workers: their random streams would carry over epochs, which a resumed run cannot replay
    return DataLoader(ds, batch_size=batch_size, shuffle=train, num_workers=workers, drop_last=False,
                      collate_fn=_collate)


def _collate(rows: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([r["pixel_values"] for r in rows]), torch.as_tensor([r["label"] for r in rows])
