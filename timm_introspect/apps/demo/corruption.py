"""The corruption picker: one of CIFAR-10-C's 19 corruptions at severity 1-5 on the image as f sees it.

Images of at most 64 px get the CIFAR generator's parameters (:func:`~timm_introspect.data.cifar10c.corrupt`,
``dataset="cifar10"``); 224 px images ImageNet-C's; other sizes are corrupted at 224 px with ImageNet-C's
parameters and resized back. Seeded: one image, corruption and severity always give the same pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ...errors import InvalidArgumentError, MissingDependencyError

__all__ = ["NONE", "corruption_choices", "corrupt_pixels"]

#: the picker's "no corruption" entry
NONE = "none (clean)"


def _cifar10c():
    try:
        from ...data import cifar10c
    except MissingDependencyError as err:
        raise MissingDependencyError(f"the corruption picker needs CIFAR-10-C's generator ({err})") from err
    return cifar10c


def corruption_choices() -> list[str]:
    """``[NONE, *CORRUPTIONS]``: the picker's entries."""
    return [NONE, *_cifar10c().CORRUPTIONS]


def corrupt_pixels(pixels: np.ndarray, corruption: str, severity: int, frost_dir: str | Path | None = None,
                   seed: int = 0) -> np.ndarray:
    """``pixels`` (uint8 ``(H, W, 3)``, the model's input size) corrupted; ``NONE`` returns them unchanged.

    Raises:
        InvalidArgumentError: an unknown corruption, a severity outside 1-5, or frost without ``frost_dir``.
    """
    if corruption in (None, "", NONE):
        return pixels
    cifar10c = _cifar10c()
    if corruption not in cifar10c.CORRUPTIONS:
        raise InvalidArgumentError(f"unknown corruption {corruption!r}; choose one of "
                                   f"{', '.join(cifar10c.CORRUPTIONS)}")
    if int(severity) != severity or not 1 <= severity <= 5:
        raise InvalidArgumentError(f"severity must be 1 to 5, got {severity}")
    if corruption == "frost" and frost_dir is None:
        raise InvalidArgumentError("frost needs its overlay images: start the demo with --frost-dir (a folder with "
                                   "frost1.png ... frost5.jpg), or pick another corruption")
    height, width = pixels.shape[:2]
    size = cifar10c.IMAGENET_SIZE
    if max(height, width) <= 64:
        return cifar10c.corrupt(pixels[None], corruption, int(severity), seed, frost_dir)[0]
    resized = (height, width) != (size, size)
    batch = np.asarray(Image.fromarray(pixels).resize((size, size), Image.BILINEAR)) if resized else pixels
    out = cifar10c.corrupt(batch[None], corruption, int(severity), seed, frost_dir, dataset="imagenet")[0]
    return np.asarray(Image.fromarray(out).resize((width, height), Image.BILINEAR)) if resized else out
