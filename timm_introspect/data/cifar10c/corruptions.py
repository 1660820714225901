"""The 19 CIFAR-10-C / ImageNet-C corruptions, as the original generators apply them, vectorized over a batch.

Hendrycks & Dietterich's CIFAR generator applies each corruption at 5 severities to 32x32 images in
[0, 255] and stores ``np.uint8(result)`` (truncation, not rounding). The parameters below are the CIFAR
ones (``../shared/specs/cifar10c_params.json``; a test checks they agree) and, beside them, those of the
ImageNet generator (``make_imagenet_c.py``, 224x224 images). Its functions are the CIFAR ones with the
image size written as 224 where CIFAR's writes 32 (glass blur's loops, pixelate, fog's plasma map of 256
cropped to the image, snow's reshape, frost's crop), which the functions here read from the images'
shape; beyond the parameters, only frost differs: its overlays are not shrunk by 0.2. Randomness comes
from a seeded ``numpy.random.Generator``, so a run is reproducible (the originals set no seed: regenerated
data matches the releases only in distribution).

Two corruptions called ImageMagick (through Wand) in the original: motion blur and the streaks of snow;
:func:`_imagemagick_motion_blur` re-implements ImageMagick's ``MotionBlurImage`` (its kernel, its sampling
offsets, edge pixels outside the image, its 16-bit rounding).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import color
from skimage.util import random_noise

from ...errors import DataError, InvalidArgumentError

__all__ = ["COMMON", "CORRUPTIONS", "DATASETS", "EXTRA", "FROST_FILES", "IMAGENET_PARAMS", "IMAGENET_SIZE", "PARAMS",
           "TABLE", "Corruption", "corrupt"]


#: The frost overlays the original samples from (frost6 is in its folder but never picked).
FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")


def _unit(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64) / 255.0


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """skimage.filters.gaussian per image, as the original calls it (scipy's filter, mode "nearest",
    truncate 4), over the image axes 1 and 2 of a batch ``(n, H, W[, C])``."""
    return ndimage.gaussian_filter(x, sigma=(0, sigma, sigma, *(0,) * (x.ndim - 3)), mode="nearest", truncate=4.0)


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
    return np.clip(_blur(_unit(x), c), 0, 1) * 255


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


def _zoom_matrix(size: int, factor: float) -> np.ndarray:
    """``(size, size)`` matrix ``Z`` with ``Z @ row == _clipped_zoom`` along one axis (linear, align corners).

    ``scipy.ndimage.zoom(order=1)`` maps output pixel ``o`` of ``m = round(crop * factor)`` to input
    coordinate ``o (crop - 1) / (m - 1)`` and interpolates linearly; the crop and the trim are rows of Z.
    """
    crop = int(np.ceil(size / factor))
    top = (size - crop) // 2
    out = int(round(crop * factor))
    trim = (out - size) // 2
    coords = np.arange(out) * ((crop - 1) / (out - 1))
    low = np.minimum(np.floor(coords).astype(int), crop - 1)
    frac = coords - low
    zoom = np.zeros((out, size))
    zoom[np.arange(out), top + low] += 1 - frac
    upper = frac > 0
    zoom[np.arange(out)[upper], top + low[upper] + 1] += frac[upper]
    return zoom[trim : trim + size]


def _zoom_blur(x, c, rng):
    # each zoom as two small matrix products (same values as _clipped_zoom, 3-4x faster on a batch)
    x = _unit(x).astype(np.float32)
    planes = np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float64)  # (n, 3, H, W)
    out = np.zeros_like(planes, dtype=np.float32)
    for factor in c:
        zoom = _zoom_matrix(x.shape[1], factor)
        out += (zoom @ planes @ zoom.T).astype(np.float32)  # float32 per zoom, as the original accumulates
    return np.clip((x + out.transpose(0, 2, 3, 1)) / (len(c) + 1), 0, 1) * 255


_FROST_CACHE: dict[tuple[str, float], list[np.ndarray]] = {}


def _frost_images(folder: str | Path | None, scale: float = 0.2) -> list[np.ndarray]:
    """The overlays in RGB, resized by ``scale`` as the CIFAR generator does (0.2); ImageNet's keeps them (1)."""
    import cv2

    if folder is None:
        raise InvalidArgumentError(
            "frost needs the frost overlay images: pass frost_dir= (a folder with frost1.png ... frost5.jpg)")
    key = (str(Path(folder).resolve()), scale)
    if key not in _FROST_CACHE:
        images = []
        for name in FROST_FILES:
            img = cv2.imread(str(Path(folder) / name))
            if img is None:
                raise DataError(f"cannot read {Path(folder) / name}: frost_dir must hold {', '.join(FROST_FILES)}")
            if scale != 1:
                img = cv2.resize(img, (0, 0), fx=scale, fy=scale)
            images.append(img[..., ::-1])  # BGR -> RGB
        _FROST_CACHE[key] = images
    return _FROST_CACHE[key]


def _frost(x, c, rng, frost_dir=None, frost_scale=0.2):
    overlays = _frost_images(frost_dir, frost_scale)
    size = x.shape[1]
    small = [name for name, o in zip(FROST_FILES, overlays, strict=True) if min(o.shape[:2]) <= size]
    if small:
        raise DataError(f"the frost overlays {', '.join(small)} are not larger than the {size}x{size} images: "
                        "frost crops a patch of the image's size from them")
    crops = np.empty(x.shape, dtype=np.float64)
    for i in range(len(x)):
        frost = overlays[rng.integers(len(overlays))]
        top, left = rng.integers(0, frost.shape[0] - size), rng.integers(0, frost.shape[1] - size)
        crops[i] = frost[top : top + size, left : left + size]
    return np.clip(c[0] * x.astype(np.float64) + c[1] * crops, 0, 255)


# --- ImageMagick's motion blur (the original calls MagickMotionBlurImage through Wand) -------------------


def _imagemagick_motion_blur(x: np.ndarray, radius: float, sigma: float, angles: np.ndarray) -> np.ndarray:
    """ImageMagick's ``MotionBlurImage`` on uint8 images ``(n, H, W, C)``, one angle (degrees) per image.

    A one-sided Gaussian of ``2 ceil(radius) + 1`` taps (weight ``exp(-i^2 / 2 sigma^2)``, normalized),
    tap ``i`` read at ``(x + ceil(i cos a - 1/2), y + ceil(i sin a - 1/2))``, edge pixels repeated outside
    the image, summed on the 16-bit scale of a Q16 build and rounded there; the 8-bit PNG the original
    decodes with OpenCV then holds that value truncated to 8 bits. A test compares this with ImageMagick
    itself (through Wand) where it is installed: equal, pixel for pixel.
    """
    n, h, w = x.shape[:3]
    width = int(2 * np.ceil(radius) + 1)
    taps = np.arange(width, dtype=np.float64)
    kernel = np.exp(-(taps**2) / (2 * sigma * sigma))
    kernel /= kernel.sum()
    rad = np.pi * np.asarray(angles, dtype=np.float64) / 180.0
    px, py = width * np.sin(rad), width * np.cos(rad)
    norm = np.hypot(px, py)
    off_x = np.ceil(taps[None] * (py / norm)[:, None] - 0.5).astype(np.int64)  # (n, width)
    off_y = np.ceil(taps[None] * (px / norm)[:, None] - 0.5).astype(np.int64)
    batch = np.arange(n)[:, None, None]
    rows, cols = np.arange(h)[None, :, None], np.arange(w)[None, None, :]
    quantum = np.zeros(x.shape, dtype=np.float64)
    x16 = x.astype(np.float64) * 257.0  # 8-bit -> 16-bit quantum
    for i in range(width):
        r = np.clip(rows + off_y[:, i, None, None], 0, h - 1)
        c = np.clip(cols + off_x[:, i, None, None], 0, w - 1)
        quantum += kernel[i] * x16[batch, r, c]
    q = np.floor(np.clip(quantum, 0, 65535) + 0.5).astype(np.int64)  # ClampToQuantum: rounds to 16 bits
    return (q // 257).astype(np.uint8)  # the 8-bit PNG it writes truncates (bit-exact with ImageMagick 6.9.11 Q16)


def _motion_blur(x, c, rng):
    angles = rng.uniform(-45, 45, size=len(x))
    return _imagemagick_motion_blur(x, c[0], c[1], angles)


def _snow(x, c, rng):
    loc, scale, zoom, threshold, radius, sigma, blend = c
    import cv2

    n, size = x.shape[:2]
    x = x.astype(np.float32) / 255.0
    layer = rng.normal(size=(n, size, size, 1), loc=loc, scale=scale)
    layer = _clipped_zoom(layer, zoom)
    layer[layer < threshold] = 0
    layer = (np.clip(layer, 0, 1) * 255).astype(np.uint8)  # the grayscale PNG handed to ImageMagick
    layer = _imagemagick_motion_blur(layer, radius, sigma, rng.uniform(-135, -45, size=n)) / 255.0
    gray = np.stack([cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) for img in x])[..., None]
    x = blend * x + (1 - blend) * np.maximum(x, gray * 1.5 + 0.5)
    return np.clip(x + layer + np.rot90(layer, k=2, axes=(1, 2)), 0, 1) * 255


# --- fog: a diamond-square plasma fractal per image --------------------------------------------------


def _plasma_fractal(n: int, decay: float, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """``n`` diamond-square height maps in [0, 1] as the original's ``plasma_fractal(32, decay)``.

    Its quirk is kept: each new point is the mean of its neighbours plus ``wibble * U(-wibble, wibble)``.
    """
    maps = np.zeros((n, size, size))
    step, wibble = size, 100.0

    def wibbled(total: np.ndarray) -> np.ndarray:
        return total / 4 + wibble * rng.uniform(-wibble, wibble, total.shape)

    while step >= 2:
        half = step // 2
        corners = maps[:, ::step, ::step]
        squares = corners + np.roll(corners, -1, axis=1)
        squares = squares + np.roll(squares, -1, axis=2)
        maps[:, half::step, half::step] = wibbled(squares)  # square step: cell centres
        centres, corners = maps[:, half::step, half::step], maps[:, ::step, ::step]
        maps[:, ::step, half::step] = wibbled(centres + np.roll(centres, 1, axis=1)
                                              + corners + np.roll(corners, -1, axis=2))
        maps[:, half::step, ::step] = wibbled(centres + np.roll(centres, 1, axis=2)
                                              + corners + np.roll(corners, -1, axis=1))
        step //= 2
        wibble /= decay
    maps -= maps.min(axis=(1, 2), keepdims=True)
    return maps / maps.max(axis=(1, 2), keepdims=True)


def _fog(x, c, rng):
    x = _unit(x)
    peak = x.max(axis=(1, 2, 3), keepdims=True)
    size = x.shape[1]
    x = x + c[0] * _plasma_fractal(len(x), c[1], rng, size=max(32, 1 << (size - 1).bit_length()))[:, :size, :size, None]
    return np.clip(x * peak / (peak + c[0]), 0, 1) * 255


# --- spatter: water (severities 1-3) or mud (4-5) ------------------------------------------------------

# float32 as in the original, where these multiply float32 masks
_WATER = (np.array([175, 238, 238]) / 255.0).astype(np.float32)  # pale turquoise, in the image's channel order
_MUD = (np.array([63, 42, 20]) / 255.0).astype(np.float32)


def _water_mask(liquid: np.ndarray) -> np.ndarray:
    """The original's OpenCV chain on one thresholded liquid layer in [0, 1]: edges, distance, emboss."""
    import cv2

    liquid = (liquid * 255).astype(np.int64).astype(np.uint8)  # astype wraps a (rare) value above 1
    dist = cv2.distanceTransform(255 - cv2.Canny(liquid, 50, 150), cv2.DIST_L2, 5)
    _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
    dist = cv2.equalizeHist(cv2.blur(dist, (3, 3)).astype(np.uint8))
    emboss = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float32)
    dist = cv2.blur(cv2.filter2D(dist, cv2.CV_8U, emboss), (3, 3)).astype(np.float32)
    mask = liquid * dist
    top = mask.max()
    return mask / top if top > 0 else mask  # the original divides 0 by 0 (NaN) for a dry image


def _spatter(x, c, rng):
    loc, scale, sigma, threshold, intensity, mud = c
    x = x.astype(np.float32) / 255.0
    n, size = x.shape[:2]
    liquid = rng.normal(size=(n, size, size), loc=loc, scale=scale)
    liquid = _blur(liquid, sigma)
    liquid[liquid < threshold] = 0
    if not mud:
        mask = np.stack([_water_mask(layer) for layer in liquid])[..., None] * intensity
        return np.clip(x + mask * _WATER, 0, 1) * 255
    mask = _blur((liquid > threshold).astype(np.float32), intensity)
    mask[mask < 0.8] = 0
    mask = mask[..., None]
    return np.clip(x * (1 - mask) + _MUD * mask, 0, 1) * 255


# --- elastic transform: a random affine warp, then a smooth random displacement field -----------------


def _elastic_transform(x, c, rng):
    import cv2

    alpha, sigma, jitter = c
    x = x.astype(np.float32) / 255.0
    n, h, w = x.shape[:3]
    centre = np.float32([h, w]) // 2
    side = min(h, w) // 3
    src = np.float32([centre + side, [centre[0] + side, centre[1] - side], centre - side])
    warped = np.empty_like(x)
    for i in range(n):
        dst = src + rng.uniform(-jitter, jitter, size=src.shape).astype(np.float32)
        warped[i] = cv2.warpAffine(x[i], cv2.getAffineTransform(src, dst), (w, h), borderMode=cv2.BORDER_REFLECT_101)
    # skimage.filters.gaussian(U(-1, 1), sigma, mode="reflect", truncate=3) * alpha, per image
    fields = ndimage.gaussian_filter(rng.uniform(-1, 1, size=(2, n, h, w)), sigma=(0, 0, sigma, sigma),
                                     mode="reflect", truncate=3.0)
    dx, dy = (fields * alpha).astype(np.float32)
    rows = np.arange(h)[None, :, None, None] + dy[..., None] + np.zeros((1, 1, 1, 3))
    cols = np.arange(w)[None, None, :, None] + dx[..., None] + np.zeros((1, 1, 1, 3))
    batch = np.broadcast_to(np.arange(n)[:, None, None, None], rows.shape)
    chans = np.broadcast_to(np.arange(3)[None, None, None, :], rows.shape)
    out = ndimage.map_coordinates(warped, [batch, rows, cols, chans], order=1, mode="reflect")
    return np.clip(out, 0, 1) * 255


@dataclass(frozen=True)
class Corruption:
    """One corruption of the release: its name, its function, whether it is one of the 15 common ones,
    and its parameter at each severity 1..5 for each dataset: ``params`` the CIFAR generator's
    (``make_cifar_c.py``; ``../shared/specs/cifar10c_params.json``), ``imagenet`` the ImageNet one's
    (``make_imagenet_c.py``, for 224x224 images)."""

    name: str
    fn: Callable[..., np.ndarray]
    common: bool
    params: list
    imagenet: list

    def params_for(self, dataset: str) -> list:
        """The per-severity parameters of ``dataset`` (``"cifar10"`` or ``"imagenet"``)."""
        return self.params if _check_dataset(dataset) == "cifar10" else self.imagenet


#: The 19 corruptions in the release's order: the 15 common ones (noise, blur, weather, digital), then
#: the 4 extra ones released for validation. Each line: CIFAR parameters, then ImageNet ones.
TABLE: tuple[Corruption, ...] = (
    Corruption("gaussian_noise", _gaussian_noise, True,
               [0.04, 0.06, 0.08, 0.09, 0.10],
               [0.08, 0.12, 0.18, 0.26, 0.38]),
    Corruption("shot_noise", _shot_noise, True,
               [500, 250, 100, 75, 50],
               [60, 25, 12, 5, 3]),
    Corruption("impulse_noise", _impulse_noise, True,
               [0.01, 0.02, 0.03, 0.05, 0.07],
               [0.03, 0.06, 0.09, 0.17, 0.27]),
    Corruption("defocus_blur", _defocus_blur, True,
               [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
               [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)]),
    Corruption("glass_blur", _glass_blur, True,
               [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
               [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)]),
    Corruption("motion_blur", _motion_blur, True,
               [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
               [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)]),
    # the original's np.arange(1, stop, step) values as they are (1.2500000000000002, not 1.25: the zoomed
    # size round(26 * factor) and so the image depend on it); ImageNet's steps grow with the severity
    Corruption("zoom_blur", _zoom_blur, True,
               [np.arange(1, stop, 0.01).tolist() for stop in (1.06, 1.11, 1.16, 1.21, 1.26)],
               [np.arange(1, stop, step).tolist()
                for stop, step in ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03))]),
    Corruption("snow", _snow, True,
               [(0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
                (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)],
               [(0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
                (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)]),
    # (image weight, overlay weight); CIFAR's overlays are resized by 0.2, ImageNet's used as they are
    Corruption("frost", _frost, True,
               [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
               [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)]),
    Corruption("fog", _fog, True,
               [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
               [(1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)]),
    Corruption("brightness", _brightness, True,
               [0.05, 0.1, 0.15, 0.2, 0.3],
               [0.1, 0.2, 0.3, 0.4, 0.5]),
    Corruption("contrast", _contrast, True,
               [0.75, 0.5, 0.4, 0.3, 0.15],
               [0.4, 0.3, 0.2, 0.1, 0.05]),
    # (alpha, sigma, affine jitter) in pixels, as the original's IMSIZE * fraction with IMSIZE = 32; the
    # ImageNet generator writes 244 * fraction (its comment: "244 should have been 224"), kept as it is
    Corruption("elastic_transform", _elastic_transform, True,
               [(32 * a, 32 * s, 32 * j) for a, s, j in
                ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03))],
               [(244 * a, 244 * s, 244 * j) for a, s, j in
                ((2, 0.7, 0.1), (2, 0.08, 0.2), (0.05, 0.01, 0.02), (0.07, 0.01, 0.02), (0.12, 0.01, 0.02))]),
    Corruption("pixelate", _pixelate, True,
               [0.95, 0.9, 0.85, 0.75, 0.65],
               [0.6, 0.5, 0.4, 0.3, 0.25]),
    Corruption("jpeg_compression", _jpeg_compression, True,
               [80, 65, 58, 50, 40],
               [25, 18, 15, 10, 7]),
    Corruption("speckle_noise", _speckle_noise, False,
               [0.06, 0.1, 0.12, 0.16, 0.2],
               [0.15, 0.2, 0.35, 0.45, 0.6]),
    Corruption("gaussian_blur", _gaussian_blur, False,
               [0.4, 0.6, 0.7, 0.8, 1],
               [1, 2, 3, 4, 6]),
    Corruption("spatter", _spatter, False,
               [(0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0), (0.65, 0.3, 1, 0.69, 0.5, 0),
                (0.65, 0.1, 0.7, 0.69, 0.6, 1), (0.65, 0.1, 0.5, 0.68, 0.6, 1)],
               [(0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
                (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1)]),
    Corruption("saturate", _saturate, False,
               [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)],
               [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)]),
)
_BY_NAME = {c.name: c for c in TABLE}

#: All 19 corruption names, in the release's order.
CORRUPTIONS: tuple[str, ...] = tuple(c.name for c in TABLE)
#: The 15 common corruptions (the benchmark's usual mean).
COMMON: tuple[str, ...] = tuple(c.name for c in TABLE if c.common)
#: The 4 extra ones.
EXTRA: tuple[str, ...] = tuple(c.name for c in TABLE if not c.common)
#: Per-severity CIFAR parameters by name (a view of :data:`TABLE`).
PARAMS: dict[str, list] = {c.name: c.params for c in TABLE}
#: Per-severity ImageNet parameters by name (a view of :data:`TABLE`).
IMAGENET_PARAMS: dict[str, list] = {c.name: c.imagenet for c in TABLE}

#: The datasets whose generator :func:`corrupt` follows.
DATASETS: tuple[str, ...] = ("cifar10", "imagenet")
#: The side of the images ImageNet-C's generator corrupts (after Resize(256) and CenterCrop(224)).
IMAGENET_SIZE = 224


def _check_dataset(dataset: str) -> str:
    if dataset not in DATASETS:
        raise InvalidArgumentError(f"unknown dataset {dataset!r}: pass dataset='cifar10' (CIFAR-10-C's parameters, "
                                   "32x32 images) or dataset='imagenet' (ImageNet-C's, 224x224 images)")
    return dataset


def corrupt(
    images: np.ndarray, corruption: str, severity: int, rng: np.random.Generator | int = 0,
    frost_dir: str | Path | None = None, dataset: str = "cifar10",
) -> np.ndarray:
    """Apply one corruption at one severity (1-5) to uint8 images ``(n, H, W, 3)``; uint8 out, truncated.

    ``dataset="cifar10"`` (default) follows the CIFAR generator (images of 32x32); ``dataset="imagenet"``
    the ImageNet one, whose parameters are for 224x224 images (make them with
    :func:`~timm_introspect.data.cifar10c.imagenet_preprocess`). Beyond the parameters, the two differ only in
    frost: CIFAR's overlays are shrunk by 0.2, ImageNet's cropped at full size.
    ``frost_dir``: the folder of the frost overlays (``frost1.png`` ... ``frost5.jpg``), for ``"frost"``.
    """
    _check_dataset(dataset)
    if corruption not in _BY_NAME:
        raise InvalidArgumentError(f"unknown corruption {corruption!r}; choose from {', '.join(CORRUPTIONS)}")
    if severity not in range(1, 6):
        raise InvalidArgumentError(f"severity must be 1..5, got {severity}")
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise InvalidArgumentError(f"expected uint8 images of shape (n, H, W, 3), got {images.dtype} {images.shape}")
    if dataset == "imagenet" and images.shape[1:3] != (IMAGENET_SIZE, IMAGENET_SIZE):
        raise InvalidArgumentError(
            f"ImageNet-C's parameters are for {IMAGENET_SIZE}x{IMAGENET_SIZE} images, got {images.shape[1]}x"
            f"{images.shape[2]}: make them with imagenet_preprocess (Resize(256), CenterCrop(224)) first")
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    extra = {}
    if corruption == "frost":
        extra = {"frost_dir": frost_dir, "frost_scale": 0.2 if dataset == "cifar10" else 1.0}
    entry = _BY_NAME[corruption]
    out = entry.fn(images, entry.params_for(dataset)[severity - 1], rng, **extra)
    return np.asarray(out).astype(np.uint8)  # truncation, as the original's np.uint8(...)
