"""CIFAR-10-C: corrupting CIFAR-10 test images as the original generator does, and the official layout.

Hendrycks & Dietterich's CIFAR generator applies each corruption at 5 severities to 32x32 images in
[0, 255] and stores ``np.uint8(result)`` (truncation, not rounding) as ``<corruption>.npy`` of shape
``(5 * n, 32, 32, 3)`` (severity 1 first, blocks of ``n``) next to ``labels.npy``. The parameters below are
the CIFAR ones (``../shared/specs/cifar10c_params.json``; a test checks they agree). Randomness comes from
a seeded ``numpy.random.Generator``, so a run is reproducible (the original sets no seed: regenerated data
matches the release only in distribution).

Corruptions are vectorized over a batch ``(n, 32, 32, 3)`` of uint8 images.

Implemented so far: 14 of 19 (noises, gaussian / glass / defocus / zoom blur, frost, photometric and
digital ones); :data:`PENDING` lists the rest.
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
    "glass_blur": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
    "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
    "zoom_blur": [[round(1 + 0.01 * i, 2) for i in range(n)] for n in (7, 12, 16, 21, 26)],
    "frost": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
}

#: Corruptions of the release not implemented yet.
PENDING = ("motion_blur", "fog", "snow", "spatter", "elastic_transform")

#: The frost overlays the original samples from (frost6 is in its folder but never picked).
FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")


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


def _blur(x01: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(x01, sigma=(0, sigma, sigma, 0), mode="nearest", truncate=4.0)


def _glass_blur(x, c, rng):
    sigma, max_delta, iterations = c
    x = np.uint8(_blur(_unit(x), sigma) * 255)
    n, size = x.shape[:2]
    rows = np.arange(n)
    for _ in range(iterations):
        for h in range(size - max_delta, max_delta, -1):
            for w in range(size - max_delta, max_delta, -1):
                # the original "swaps" through numpy views, which copies x[h', w'] onto x[h, w]
                dx, dy = rng.integers(-max_delta, max_delta, size=(2, n))
                x[:, h, w] = x[rows, h + dy, w + dx]
    return np.clip(_blur(x / 255.0, sigma), 0, 1) * 255


def _disk(radius: float, alias_blur: float) -> np.ndarray:
    import cv2

    half, ksize = (8, (3, 3)) if radius <= 8 else (int(radius), (5, 5))
    grid = np.arange(-half, half + 1)
    xx, yy = np.meshgrid(grid, grid)
    disk = np.array(xx**2 + yy**2 <= radius**2, dtype=np.float32)
    disk /= disk.sum()
    return cv2.GaussianBlur(disk, ksize=ksize, sigmaX=alias_blur)


def _defocus_blur(x, c, rng):
    import cv2

    kernel = _disk(*c)
    out = np.empty(x.shape, dtype=np.float64)
    for i, img in enumerate(_unit(x)):
        for d in range(3):  # cv2.filter2D per channel, its default border (reflect 101)
            out[i, :, :, d] = cv2.filter2D(img[:, :, d], -1, kernel)
    return np.clip(out, 0, 1) * 255


def _clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    size = x.shape[1]
    crop = int(np.ceil(size / factor))
    top = (size - crop) // 2
    zoomed = ndimage.zoom(x[:, top : top + crop, top : top + crop], (1, factor, factor, 1), order=1)
    trim = (zoomed.shape[1] - size) // 2
    return zoomed[:, trim : trim + size, trim : trim + size]


def _zoom_blur(x, c, rng):
    x = _unit(x).astype(np.float32)
    out = np.zeros_like(x)
    for factor in c:
        out += _clipped_zoom(x, factor)
    return np.clip((x + out) / (len(c) + 1), 0, 1) * 255


_FROST_CACHE: dict[str, list[np.ndarray]] = {}


def _frost_images(folder: str | Path | None) -> list[np.ndarray]:
    import cv2

    if folder is None:
        raise ValueError("frost needs the frost overlay images: pass frost_dir= (a folder with frost1.png ... frost5.jpg)")
    key = str(Path(folder).resolve())
    if key not in _FROST_CACHE:
        images = []
        for name in FROST_FILES:
            img = cv2.imread(str(Path(folder) / name))
            if img is None:
                raise ValueError(f"cannot read {Path(folder) / name}: frost_dir must hold {', '.join(FROST_FILES)}")
            images.append(cv2.resize(img, (0, 0), fx=0.2, fy=0.2)[..., ::-1])  # BGR -> RGB
        _FROST_CACHE[key] = images
    return _FROST_CACHE[key]


def _frost(x, c, rng, frost_dir=None):
    overlays = _frost_images(frost_dir)
    size = x.shape[1]
    crops = np.empty(x.shape, dtype=np.float64)
    for i in range(len(x)):
        frost = overlays[rng.integers(len(overlays))]
        top, left = rng.integers(0, frost.shape[0] - size), rng.integers(0, frost.shape[1] - size)
        crops[i] = frost[top : top + size, left : left + size]
    return np.clip(c[0] * x.astype(np.float64) + c[1] * crops, 0, 255)


_FUNCS: dict[str, Callable[..., np.ndarray]] = {
    "gaussian_noise": _gaussian_noise, "shot_noise": _shot_noise, "impulse_noise": _impulse_noise,
    "speckle_noise": _speckle_noise, "gaussian_blur": _gaussian_blur, "contrast": _contrast,
    "brightness": _brightness, "saturate": _saturate, "jpeg_compression": _jpeg_compression, "pixelate": _pixelate,
    "glass_blur": _glass_blur, "defocus_blur": _defocus_blur, "zoom_blur": _zoom_blur, "frost": _frost,
}

#: Names of the implemented corruptions, in the release's order.
CORRUPTIONS: tuple[str, ...] = tuple(_FUNCS)


def corrupt(
    images: np.ndarray, corruption: str, severity: int, rng: np.random.Generator | int = 0,
    frost_dir: str | Path | None = None,
) -> np.ndarray:
    """Apply one corruption at one severity (1-5) to uint8 images ``(n, 32, 32, 3)``; uint8 out, truncated.

    ``frost_dir``: the folder of the frost overlays (``frost1.png`` ... ``frost5.jpg``), for ``"frost"``.
    """
    if corruption not in _FUNCS:
        hint = " (not implemented yet)" if corruption in PENDING else ""
        raise ValueError(f"unknown corruption {corruption!r}{hint}; implemented: {', '.join(CORRUPTIONS)}")
    if severity not in range(1, 6):
        raise ValueError(f"severity must be 1..5, got {severity}")
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images of shape (n, H, W, 3), got {images.dtype} {images.shape}")
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    extra = {"frost_dir": frost_dir} if corruption == "frost" else {}
    out = _FUNCS[corruption](images, PARAMS[corruption][severity - 1], rng, **extra)
    return np.asarray(out).astype(np.uint8)  # truncation, as the original's np.uint8(...)


def write_official(out_dir: str | Path, images: np.ndarray, labels: np.ndarray,
                   corruptions: tuple[str, ...] = CORRUPTIONS, seed: int = 0,
                   frost_dir: str | Path | None = None) -> dict[str, str]:
    """Write ``<corruption>.npy`` (5 severity blocks) and ``labels.npy``; return their md5 sums."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sums = {}
    np.save(out_dir / "labels.npy", np.tile(np.asarray(labels, dtype=np.uint8), 5))
    for name in corruptions:
        blocks = [corrupt(images, name, s, rng, frost_dir=frost_dir) for s in range(1, 6)]
        np.save(out_dir / f"{name}.npy", np.concatenate(blocks))
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
