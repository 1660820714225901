"""CIFAR-10-C: corrupting CIFAR-10 test images as the original generator does, and the official layout.

Hendrycks & Dietterich's CIFAR generator applies each corruption at 5 severities to 32x32 images in
[0, 255] and stores ``np.uint8(result)`` (truncation, not rounding) as ``<corruption>.npy`` of shape
``(5 * n, 32, 32, 3)`` (severity 1 first, blocks of ``n``) next to ``labels.npy``. The parameters below are
the CIFAR ones (``../shared/specs/cifar10c_params.json``; a test checks they agree). Randomness comes from
a seeded ``numpy.random.Generator``, so a run is reproducible (the original sets no seed: regenerated data
matches the release only in distribution).

Corruptions are vectorized over a batch ``(n, 32, 32, 3)`` of uint8 images.

Implemented so far: the noises, gaussian blur and the photometric / digital corruptions (10 of 19);
:data:`PENDING` lists the rest.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import color
from skimage.util import random_noise

__all__ = ["CORRUPTIONS", "PARAMS", "PENDING", "corrupt", "load_official", "write_official"]

#: Per-severity parameters of the CIFAR generator (severity 1..5).
PARAMS: dict[str, list] = {
    "gaussian_noise": [0.04, 0.06, 0.08, 0.09, 0.10],
    "shot_noise": [500, 250, 100, 75, 50],
    "impulse_noise": [0.01, 0.02, 0.03, 0.05, 0.07],
    "speckle_noise": [0.06, 0.1, 0.12, 0.16, 0.2],
    "gaussian_blur": [0.4, 0.6, 0.7, 0.8, 1],
    "contrast": [0.75, 0.5, 0.4, 0.3, 0.15],
    "brightness": [0.05, 0.1, 0.15, 0.2, 0.3],
    "saturate": [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)],
    "jpeg_compression": [80, 65, 58, 50, 40],
    "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],
}

#: Corruptions of the release not implemented yet.
PENDING = ("glass_blur", "defocus_blur", "motion_blur", "zoom_blur", "fog", "frost", "snow", "spatter",
           "elastic_transform")


def _unit(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64) / 255.0


def _gaussian_noise(x, c, rng):
    x = _unit(x)
    return np.clip(x + rng.normal(size=x.shape, scale=c), 0, 1) * 255


def _shot_noise(x, c, rng):
    x = _unit(x)
    return np.clip(rng.poisson(x * c) / c, 0, 1) * 255


def _impulse_noise(x, c, rng):
    # elementwise, so one call covers the batch exactly as per-image calls would
    return np.clip(random_noise(_unit(x), mode="s&p", amount=c, rng=rng), 0, 1) * 255


def _speckle_noise(x, c, rng):
    x = _unit(x)
    return np.clip(x + x * rng.normal(size=x.shape, scale=c), 0, 1) * 255


def _gaussian_blur(x, c, rng):
    # skimage.filters.gaussian(x, sigma=c, channel_axis=-1): scipy's filter, mode "nearest", truncate 4
    return np.clip(ndimage.gaussian_filter(_unit(x), sigma=(0, c, c, 0), mode="nearest", truncate=4.0), 0, 1) * 255


def _contrast(x, c, rng):
    x = _unit(x)
    means = x.mean(axis=(1, 2), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1) * 255


def _brightness(x, c, rng):
    hsv = color.rgb2hsv(_unit(x))
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return np.clip(color.hsv2rgb(hsv), 0, 1) * 255


def _saturate(x, c, rng):
    hsv = color.rgb2hsv(_unit(x))
    hsv[..., 1] = np.clip(hsv[..., 1] * c[0] + c[1], 0, 1)
    return np.clip(color.hsv2rgb(hsv), 0, 1) * 255


def _jpeg_compression(x, c, rng):
    out = np.empty_like(x)
    for i, img in enumerate(x):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=c)
        out[i] = np.asarray(Image.open(buf))
    return out


def _pixelate(x, c, rng):
    size = x.shape[1]
    out = np.empty_like(x)
    for i, img in enumerate(x):
        small = Image.fromarray(img).resize((int(size * c), int(size * c)), Image.BOX)
        out[i] = np.asarray(small.resize((size, size), Image.BOX))
    return out


_FUNCS: dict[str, Callable[[np.ndarray, object, np.random.Generator], np.ndarray]] = {
    "gaussian_noise": _gaussian_noise, "shot_noise": _shot_noise, "impulse_noise": _impulse_noise,
    "speckle_noise": _speckle_noise, "gaussian_blur": _gaussian_blur, "contrast": _contrast,
    "brightness": _brightness, "saturate": _saturate, "jpeg_compression": _jpeg_compression, "pixelate": _pixelate,
}

#: Names of the implemented corruptions, in the release's order.
CORRUPTIONS: tuple[str, ...] = tuple(_FUNCS)


def corrupt(images: np.ndarray, corruption: str, severity: int, rng: np.random.Generator | int = 0) -> np.ndarray:
    """Apply one corruption at one severity (1-5) to uint8 images ``(n, 32, 32, 3)``; uint8 out, truncated."""
    if corruption not in _FUNCS:
        hint = " (not implemented yet)" if corruption in PENDING else ""
        raise ValueError(f"unknown corruption {corruption!r}{hint}; implemented: {', '.join(CORRUPTIONS)}")
    if severity not in range(1, 6):
        raise ValueError(f"severity must be 1..5, got {severity}")
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images of shape (n, H, W, 3), got {images.dtype} {images.shape}")
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    out = _FUNCS[corruption](images, PARAMS[corruption][severity - 1], rng)
    return np.asarray(out).astype(np.uint8)  # truncation, as the original's np.uint8(...)


def write_official(out_dir: str | Path, images: np.ndarray, labels: np.ndarray,
                   corruptions: tuple[str, ...] = CORRUPTIONS, seed: int = 0) -> dict[str, str]:
    """Write ``<corruption>.npy`` (5 severity blocks) and ``labels.npy``; return their md5 sums."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sums = {}
    np.save(out_dir / "labels.npy", np.tile(np.asarray(labels, dtype=np.uint8), 5))
    for name in corruptions:
        np.save(out_dir / f"{name}.npy", np.concatenate([corrupt(images, name, s, rng) for s in range(1, 6)]))
    for path in sorted(out_dir.glob("*.npy")):
        sums[path.name] = hashlib.md5(path.read_bytes()).hexdigest()
    return sums


def load_official(source: str | Path, corruptions: tuple[str, ...] | None = None,
                  md5: dict[str, str] | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``({corruption: (5n, 32, 32, 3) uint8}, labels (5n,))`` from a folder of ``.npy`` or the release tar.

    ``md5`` maps file names to expected md5 sums; a mismatch raises ``ValueError``.
    """
    source = Path(source)
    files: dict[str, bytes] = {}
    if source.is_dir():
        files = {p.name: p.read_bytes() for p in source.glob("*.npy")}
    elif tarfile.is_tarfile(source):
        with tarfile.open(source) as tar:
            for member in tar.getmembers():
                if member.isfile() and member.name.endswith(".npy"):
                    files[Path(member.name).name] = tar.extractfile(member).read()
    else:
        raise ValueError(f"{source} is neither a folder of .npy files nor a tar archive of CIFAR-10-C")
    for name, expected in (md5 or {}).items():
        if name in files and hashlib.md5(files[name]).hexdigest() != expected:
            raise ValueError(f"{name} in {source} has md5 {hashlib.md5(files[name]).hexdigest()}, expected {expected}: "
                             "the file is corrupted or from another release; download it again")
    if "labels.npy" not in files:
        raise ValueError(f"{source} has no labels.npy")
    wanted = corruptions or tuple(sorted(n[:-4] for n in files if n != "labels.npy"))
    missing = [c for c in wanted if f"{c}.npy" not in files]
    if missing:
        raise ValueError(f"{source} lacks {', '.join(f'{c}.npy' for c in missing)}")
    data = {c: np.load(io.BytesIO(files[f"{c}.npy"])) for c in wanted}
    return data, np.load(io.BytesIO(files["labels.npy"]))
