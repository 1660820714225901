"""AugMix copies of training images (Hendrycks et al., ICLR 2020), with timm's own operations.

For an H that should see the inputs where f errs or hesitates: r_x of augmented training images. The
operations are timm's AugMix ops restricted to the AugMix paper's list, which leaves out everything that is a
CIFAR-10-C / ImageNet-C corruption or close to one (timm's defaults add Contrast, Brightness, Color and
Sharpness; contrast and brightness are corruption families there). What remains is geometric (rotate, shear,
translate: the nearest corruption is elastic_transform, which warps locally, not the whole image) or a tone change
(equalize, posterize, solarize, and autocontrast, which stretches contrast to the full range where the contrast
corruption shrinks it).
"""

from __future__ import annotations

import functools
import hashlib
import random

import numpy as np
from PIL import Image

from ..errors import InvalidArgumentError
from ..log import tqdm

__all__ = ["AUGMIX_OPS", "augmix_image", "augmix_images", "augmix_seed"]

#: the AugMix paper's operations (none is a CIFAR-10-C corruption), by timm's names
AUGMIX_OPS = ("AutoContrast", "Equalize", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing", "ShearX", "ShearY",
              "TranslateXRel", "TranslateYRel")


def augmix_images(images: np.ndarray, seed: int = 0, magnitude: int = 3, width: int = 3,
                  progress: bool = True) -> np.ndarray:
    """One AugMix copy of each uint8 image ``(n, H, W, 3)``: ``width`` chains of 1-3 ops mixed with Dirichlet
    weights, then blended with the original by a Beta(1, 1) weight (timm's ``AugMixAugment``, seeded)."""
    import random

    from timm.data.auto_augment import AugMixAugment, augmix_ops

    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise InvalidArgumentError(f"need uint8 RGB images (n, H, W, 3), got {images.dtype} {images.shape}")
    hparams = {"translate_pct": 0.3, "img_mean": (124, 116, 104)}
    ops = augmix_ops(magnitude=magnitude, hparams=hparams, transforms=list(AUGMIX_OPS))
    augment = AugMixAugment(ops, alpha=1.0, width=width, depth=-1, blended=False)
    state_py, state_np = random.getstate(), np.random.get_state()
    random.seed(seed)  # timm's ops draw from `random`, the mixing weights from numpy's global generator
    np.random.seed(seed)
    try:
        out = np.empty_like(images)
        for i in tqdm(range(len(images)), desc="AugMix", disable=not progress, leave=False):
            out[i] = np.asarray(augment(Image.fromarray(images[i])).convert("RGB"))
    finally:
        random.setstate(state_py)
        np.random.set_state(state_np)
    return out


@functools.lru_cache(maxsize=8)
def _augment(magnitude: int, width: int):
    """timm's ``AugMixAugment`` with :data:`AUGMIX_OPS`, set as :func:`augmix_images` sets it."""
    from timm.data.auto_augment import AugMixAugment, augmix_ops

    hparams = {"translate_pct": 0.3, "img_mean": (124, 116, 104)}
    ops = augmix_ops(magnitude=magnitude, hparams=hparams, transforms=list(AUGMIX_OPS))
    return AugMixAugment(ops, alpha=1.0, width=width, depth=-1, blended=False)


def augmix_seed(image: Image.Image, seed: int = 0, copy: int = 0) -> int:
    """A seed for one image's AugMix draw, from its pixels (mode, size, bytes), ``seed`` and the ``copy`` number.

    The same image gets the same augmentation in any order, batch, worker process or resumed run.
    """
    digest = hashlib.sha256(f"{seed}:{copy}:{image.mode}:{image.size}:".encode())
    digest.update(image.tobytes())
    return int.from_bytes(digest.digest()[:4], "little")


def augmix_image(image: Image.Image, seed: int, magnitude: int = 3, width: int = 3) -> Image.Image:
    """One AugMix draw of ``image`` (the ops and settings of :func:`augmix_images`), seeded by ``seed`` alone.

    ``random``'s and numpy's global states are saved and restored: the call leaves them as it found them.
    A grayscale (or other mode) image is augmented as RGB and returned in its own mode.
    """
    augment = _augment(int(magnitude), int(width))
    state_py, state_np = random.getstate(), np.random.get_state()
    random.seed(seed)  # timm's ops draw from `random`, the mixing weights from numpy's global generator
    np.random.seed(seed % 2**32)
    try:
        out = augment(image if image.mode == "RGB" else image.convert("RGB")).convert("RGB")
    finally:
        random.setstate(state_py)
        np.random.set_state(state_np)
    return out if image.mode == "RGB" else out.convert(image.mode)
