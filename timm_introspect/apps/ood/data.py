"""OOD image sets as uint8 arrays ``(n, H, W, 3)`` at the model's size: what the OOD benchmark scores.

* :func:`noise_images`: Gaussian and uniform noise, as in the ODIN paper (far OOD);
* :func:`corrupted_images`: CIFAR-10-C at severity 5 (covariate shift; needs the ``[cifar10c]`` extra);
* :func:`open_set_images`: the classes a model was not trained on, from its own dataset (CIFAR-6/4: f and H
  trained on 6 CIFAR-10 classes, the other 4 as near OOD; train them with ``--classes 0 1 2 3 4 5``);
* :func:`load_ood_images`: any ``datasets`` source, a Hub id (``ufldl-stanford/svhn`` with config
  ``cropped_digits``, ``tanganke/dtd``, ``detectors/lsun_c-ood``, ...) or a local folder such as the DTD
  Parquet set, with the image column and split by option. Images of another size are center-cropped to a
  square and resized (bicubic), as the local DTD set was made.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import datasets
import numpy as np
from PIL import Image
from torch import nn

from ...data.images import decode_image, load_images
from ...errors import DataError, InvalidArgumentError

__all__ = ["BUILTIN_SETS", "OODSet", "corrupted_images", "load_ood_images", "noise_images", "open_set_images",
           "set_name"]

#: Set names that are generated or derived rather than loaded: noise, CIFAR-10-C, the open-set split.
BUILTIN_SETS = ("gaussian", "uniform", "cifar10c", "open-set")


@dataclass
class OODSet:
    """One OOD set: a name for the tables, uint8 images ``(n, H, W, 3)``, and where they came from."""

    name: str
    pixels: np.ndarray
    source: str
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.pixels)


def noise_images(kind: Literal["gaussian", "uniform"], n: int, size: tuple[int, int] = (32, 32),
                 seed: int = 0) -> np.ndarray:
    """``n`` noise images, as the ODIN paper's: i.i.d. per pixel and channel, N(0.5, 1) clipped to [0, 1]
    (``"gaussian"``) or U[0, 1] (``"uniform"``); stored as uint8 (rounded)."""
    rng = np.random.default_rng(seed)
    shape = (n, *size, 3)
    if kind == "gaussian":
        x = np.clip(rng.normal(0.5, 1.0, shape), 0, 1)
    elif kind == "uniform":
        x = rng.uniform(0, 1, shape)
    else:
        raise InvalidArgumentError(f"noise kind must be 'gaussian' or 'uniform', got {kind!r}")
    return np.round(x * 255).astype(np.uint8)


def corrupted_images(clean: np.ndarray, severity: int = 5, corruptions: Sequence[str] | None = None, seed: int = 0,
                     frost_dir: str | None = None) -> np.ndarray:
    """CIFAR-10-C images: image ``i`` gets corruption ``corruptions[i % len(corruptions)]`` at ``severity``.

    Default corruptions: the 15 common ones (frost only with ``frost_dir``, its overlay images). 224 px
    images (an ImageNet model's) get ImageNet-C's parameters, any other size CIFAR-10-C's.
    """
    from ...data.cifar10c import COMMON, CORRUPTIONS, IMAGENET_SIZE, corrupt

    dataset = "imagenet" if clean.shape[1:3] == (IMAGENET_SIZE, IMAGENET_SIZE) else "cifar10"

    if corruptions is None:
        corruptions = [c for c in COMMON if c != "frost" or frost_dir]
    out = np.empty_like(clean)
    for k, name in enumerate(corruptions):
        rows = np.arange(k, len(clean), len(corruptions))
        if len(rows):
            rng = np.random.default_rng([seed, CORRUPTIONS.index(name), severity])
            out[rows] = corrupt(clean[rows], name, severity, rng, frost_dir=frost_dir, dataset=dataset)
    return out


def _fit_size(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    if image.size != (size[1], size[0]):
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side)).resize((size[1], size[0]), Image.BICUBIC)
    return np.asarray(image)


def load_ood_images(source: str, split: str = "test", image_column: str | None = None, config: str | None = None,
                    limit: int | None = None, seed: int = 0, size: tuple[int, int] = (32, 32)) -> np.ndarray:
    """Images of a ``datasets`` source (Hub id or local folder), as uint8 RGB ``(n, *size, 3)``; labels ignored.

    Args:
        source: Hub dataset id or local folder (Parquet files, image folder).
        split: the split to read.
        image_column: found from the features (the ``Image`` column) when not given.
        config: the dataset's configuration name (e.g. ``"cropped_digits"`` for SVHN).
        limit: a seeded random subset of this many images.
        size: ``(H, W)`` of the model's input.
    """
    try:
        ds = datasets.load_dataset(str(source), config, split=split)
    except ValueError as err:
        if "split" in str(err).lower():
            raise DataError(f"{source} has no split {split!r} ({err}); choose it with the split option") from err
        raise
    if image_column is None:
        image_column = next((k for k, f in ds.features.items() if isinstance(f, datasets.Image)), None)
        if image_column is None:
            raise DataError(f"{source} has no image column (columns: {list(ds.features)}): name it with image_column")
    elif image_column not in ds.features:
        raise DataError(f"{source} has no column {image_column!r}; its columns are {list(ds.features)}")
    if not len(ds):
        raise DataError(f"{source} [{split}] has no images")
    if limit is not None and limit < len(ds):
        ds = ds.shuffle(seed=seed).select(range(limit))
    raw = ds.cast_column(image_column, datasets.Image(decode=False))[image_column]
    return np.stack([_fit_size(decode_image(item, "RGB"), size) for item in raw])


def open_set_images(source: str, split: str, known: Sequence[str], limit: int | None = None,
                    seed: int = 0, model: nn.Module | None = None) -> tuple[np.ndarray, list[str]]:
    """Images of the classes of ``source`` not in ``known`` (the model's class names): the open-set OOD set.

    Returns the images and the names of those classes. Raises :class:`DataError` when the model knows
    every class of the dataset (train it on a subset: ``--classes``).
    """
    if not known:
        raise DataError("the model records no class names, so the open-set split cannot tell its classes from the "
                        "unseen ones: save f and H with label names (train them on a dataset with class names)")
    names = load_images(source, split).label_names
    if not names:
        raise DataError(f"{source} has no class names: the open-set split needs them to find the unseen classes")
    missing = [c for c in known if c not in names]
    if missing:
        raise DataError(f"the model's classes {missing} are not classes of {source} ({names})")
    unseen = [c for c in names if c not in known]
    if not unseen:
        raise DataError(f"the model was trained on every class of {source}: the open-set split needs f and H trained "
                        "on a class subset, e.g. `timm-introspect run --classes 0 1 2 3 4 5` (CIFAR-6/4)")
    images = load_images(source, split, classes=unseen, limit=limit, seed=seed)
    return images.arrays(model)[0], unseen


def set_name(source: str) -> str:
    """A short name for a loaded set: a local folder's name, or the Hub id."""
    path = Path(source)
    return path.name if path.exists() else str(source)
