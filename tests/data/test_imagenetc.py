"""ImageNet-C: the ImageNet generator's parameters, its corruptions restated image by image as
make_imagenet_c.py writes them (on 224 px images), its preprocessing, and its layout of JPEG files."""

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import skimage as sk
from helpers import original_clipped_zoom
from PIL import Image
from scipy.ndimage import map_coordinates
from skimage.filters import gaussian

from timm_introspect import DataError
from timm_introspect.data.cifar10c import (
    CORRUPTIONS,
    IMAGENET_PARAMS,
    PARAMS,
    corrupt,
    imagenet_preprocess,
    load_imagenet_c,
    write_imagenet_c,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
CIFAR = SHARED / "data" / "cifar10"
FROST = SHARED / "data" / "cifar10c-frost"

# make_imagenet_c.py's lists, as the original writes them (ImageNet-C/create_c, hendrycks/robustness)
ORIGINAL = {
    "gaussian_noise": [.08, .12, 0.18, 0.26, 0.38],
    "shot_noise": [60, 25, 12, 5, 3],
    "impulse_noise": [.03, .06, .09, 0.17, 0.27],
    "defocus_blur": [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)],
    "glass_blur": [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)],
    "motion_blur": [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)],
    "zoom_blur": [np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
                  np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03)],
    "snow": [(0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
             (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)],
    "frost": [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)],
    "fog": [(1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)],
    "brightness": [.1, .2, .3, .4, .5],
    "contrast": [0.4, .3, .2, .1, .05],
    "elastic_transform": [(244 * 2, 244 * 0.7, 244 * 0.1), (244 * 2, 244 * 0.08, 244 * 0.2),
                          (244 * 0.05, 244 * 0.01, 244 * 0.02), (244 * 0.07, 244 * 0.01, 244 * 0.02),
                          (244 * 0.12, 244 * 0.01, 244 * 0.02)],
    "pixelate": [0.6, 0.5, 0.4, 0.3, 0.25],
    "jpeg_compression": [25, 18, 15, 10, 7],
    "speckle_noise": [.15, .2, 0.35, 0.45, 0.6],
    "gaussian_blur": [1, 2, 3, 4, 6],
    "spatter": [(0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
                (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1)],
    "saturate": [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)],
}


def as_lists(values):
    return [np.asarray(v).tolist() for v in values]


@pytest.fixture(scope="module")
def clean() -> np.ndarray:
    """8 CIFAR-10 test images through imagenet_preprocess (32 -> 256 -> 224 px), else smooth synthetic ones."""
    if CIFAR.is_dir():
        import datasets

        ds = datasets.load_dataset("parquet", data_files={"test": str(CIFAR / "test-*.parquet")}, split="test")
        small = [ds[i]["img"] for i in range(0, 800, 100)]
    else:
        base = np.random.default_rng(0).integers(30, 220, (8, 4, 4, 3)).astype(np.uint8)
        small = [Image.fromarray(b) for b in np.kron(base, np.ones((1, 8, 8, 1), dtype=np.uint8))]
    return np.stack([imagenet_preprocess(img) for img in small])


def pil(img: np.ndarray) -> Image.Image:
    return Image.fromarray(img)


# --- parameters and the dataset argument ---------------------------------------------------------------


def test_imagenet_params_are_the_originals():
    assert list(IMAGENET_PARAMS) == list(CORRUPTIONS) == list(ORIGINAL) and len(CORRUPTIONS) == 19
    for name, values in ORIGINAL.items():
        assert as_lists(IMAGENET_PARAMS[name]) == as_lists(values), name  # exactly, zoom factors unrounded
    # the ImageNet zoom factors have their own steps; float arange keeps 1.11 at severity 1 (12 zooms, not 11)
    assert [len(v) for v in IMAGENET_PARAMS["zoom_blur"]] == [12, 16, 11, 13, 11]
    assert IMAGENET_PARAMS["zoom_blur"][0][-1] == 1.11 and IMAGENET_PARAMS["zoom_blur"][4][-1] > 1.3
    # every CIFAR list differs from the ImageNet one but saturate's first two (0.3x and 0.1x saturation)
    same = [n for n in CORRUPTIONS if as_lists(PARAMS[n]) == as_lists(IMAGENET_PARAMS[n])]
    assert same == [] and as_lists(PARAMS["saturate"][:2]) == as_lists(IMAGENET_PARAMS["saturate"][:2])


def test_dataset_argument(clean):
    with pytest.raises(ValueError, match="dataset='cifar10'.*dataset='imagenet'"):
        corrupt(clean, "contrast", 1, dataset="imagenet-c")
    small = clean[:, ::7, ::7]  # 32x32
    with pytest.raises(ValueError, match="224x224 images, got 32x32.*imagenet_preprocess"):
        corrupt(small, "contrast", 1, dataset="imagenet")
    # CIFAR stays the default; the two datasets' parameters differ
    assert np.array_equal(corrupt(small, "contrast", 2), corrupt(small, "contrast", 2, dataset="cifar10"))
    assert not np.array_equal(corrupt(clean, "contrast", 2), corrupt(clean, "contrast", 2, dataset="imagenet"))


def test_preprocess_is_torchvision_resize_256_centercrop_224():
    trn = pytest.importorskip("torchvision.transforms")
    transform = trn.Compose([trn.Resize(256), trn.CenterCrop(224)])
    rng = np.random.default_rng(0)
    for w, h in ((500, 375), (375, 500), (256, 256), (32, 32), (301, 257), (1024, 300)):
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3)).astype(np.uint8))
        expected = np.asarray(transform(img))
        assert np.array_equal(imagenet_preprocess(img), expected), (w, h)
    gray = Image.fromarray(rng.integers(0, 256, (300, 400)).astype(np.uint8))  # the original's loader: RGB
    assert np.array_equal(imagenet_preprocess(gray), np.asarray(transform(gray.convert("RGB"))))
    with pytest.raises(ValueError, match="PIL image"):
        imagenet_preprocess(np.zeros((8, 8, 3), np.float32))


# --- deterministic corruptions: the original's function, image by image --------------------------------


def disk(radius, alias_blur):
    import cv2

    grid = np.arange(-8, 8 + 1) if radius <= 8 else np.arange(-radius, radius + 1)
    xx, yy = np.meshgrid(grid, grid)
    d = np.array((xx**2 + yy**2) <= radius**2, dtype=np.float32)
    d /= np.sum(d)
    return cv2.GaussianBlur(d, ksize=(3, 3) if radius <= 8 else (5, 5), sigmaX=alias_blur)


clipped_zoom = original_clipped_zoom  # the original's, one image at a time


def original_deterministic(name, x: Image.Image, c):
    """make_imagenet_c.py's function (its calls, its 224s) on one PIL image, before np.uint8."""
    import cv2

    if name == "contrast":
        x = np.array(x) / 255.
        means = np.mean(x, axis=(0, 1), keepdims=True)
        return np.clip((x - means) * c + means, 0, 1) * 255
    if name in ("brightness", "saturate"):
        x = sk.color.rgb2hsv(np.array(x) / 255.)
        if name == "brightness":
            x[:, :, 2] = np.clip(x[:, :, 2] + c, 0, 1)
        else:
            x[:, :, 1] = np.clip(x[:, :, 1] * c[0] + c[1], 0, 1)
        return np.clip(sk.color.hsv2rgb(x), 0, 1) * 255
    if name == "jpeg_compression":
        output = io.BytesIO()
        x.save(output, "JPEG", quality=c)
        return Image.open(output)
    if name == "pixelate":
        return x.resize((int(224 * c), int(224 * c)), Image.BOX).resize((224, 224), Image.BOX)
    if name == "gaussian_blur":  # multichannel=True in the skimage of the time
        return np.clip(gaussian(np.array(x) / 255., sigma=c, channel_axis=-1), 0, 1) * 255
    if name == "defocus_blur":
        x = np.array(x) / 255.
        kernel = disk(radius=c[0], alias_blur=c[1])
        channels = np.array([cv2.filter2D(x[:, :, d], -1, kernel) for d in range(3)]).transpose((1, 2, 0))
        return np.clip(channels, 0, 1) * 255
    if name == "zoom_blur":
        x = (np.array(x) / 255.).astype(np.float32)
        out = np.zeros_like(x)
        for factor in c:
            out += clipped_zoom(x, factor)
        return np.clip((x + out) / (len(c) + 1), 0, 1) * 255
    raise AssertionError(name)


@pytest.mark.parametrize("name", ["contrast", "brightness", "saturate", "jpeg_compression", "pixelate",
                                  "gaussian_blur", "defocus_blur", "zoom_blur"])
def test_deterministic_ones_are_the_original_image_by_image(clean, name):
    for severity in range(1, 6):
        c = ORIGINAL[name][severity - 1]
        expected = np.stack([np.uint8(original_deterministic(name, pil(img), c)) for img in clean])
        got = corrupt(clean, name, severity, dataset="imagenet")
        if name == "zoom_blur":
            # each zoom as two matrix products in float64, rounded to float32 as scipy's zoom does: its
            # sums in another order move a value across an integer now and then (the original is float32)
            diff = np.abs(got.astype(int) - expected)
            assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (severity, (diff > 0).mean())
        else:
            assert np.array_equal(got, expected), severity


# --- random corruptions: the original per image, with a Generator for np.random --------------------------


def test_noise_is_the_original_and_has_its_statistics(clean):
    x = clean.astype(np.float64) / 255
    for severity in (1, 5):
        c = ORIGINAL["gaussian_noise"][severity - 1]
        rng = np.random.default_rng(severity)  # elementwise draws: one image after the other == the batch
        expected = np.stack([np.uint8(np.clip(img + rng.normal(size=img.shape, scale=c), 0, 1) * 255) for img in x])
        assert np.array_equal(corrupt(clean, "gaussian_noise", severity, rng=severity, dataset="imagenet"), expected)
        c = ORIGINAL["speckle_noise"][severity - 1]
        rng = np.random.default_rng(severity)
        expected = np.stack([np.uint8(np.clip(img + img * rng.normal(size=img.shape, scale=c), 0, 1) * 255)
                             for img in x])
        assert np.array_equal(corrupt(clean, "speckle_noise", severity, rng=severity, dataset="imagenet"), expected)
        c = ORIGINAL["shot_noise"][severity - 1]
        rng = np.random.default_rng(severity)
        expected = np.stack([np.uint8(np.clip(rng.poisson(img * c) / c, 0, 1) * 255) for img in x])
        assert np.array_equal(corrupt(clean, "shot_noise", severity, rng=severity, dataset="imagenet"), expected)
    # statistics at ImageNet strengths, where clipping is negligible: mid-grey pixels
    mid = (x > 0.35) & (x < 0.65)
    residual = corrupt(clean, "gaussian_noise", 1, rng=3, dataset="imagenet") / 255 - x
    assert abs(residual[mid].std() - 0.08) < 0.003 and abs(residual[mid].mean()) < 0.003
    shot = corrupt(clean, "shot_noise", 1, rng=3, dataset="imagenet") / 255  # Poisson(60 x) / 60: variance x / 60
    assert abs((shot[mid] - x[mid]).var() / (x[mid] / 60).mean() - 1) < 0.05
    out = corrupt(clean, "impulse_noise", 5, rng=0, dataset="imagenet")
    flipped = (out != clean) & ((out == 0) | (out == 255))
    assert abs(flipped.mean() - 0.27) < 0.01  # salt and pepper on 27 % of the values


def test_glass_blur_is_the_original_loop_over_224(clean):
    for severity in (2, 5):
        sigma, delta, iterations = ORIGINAL["glass_blur"][severity - 1]
        rng = np.random.default_rng(severity)
        x = np.uint8(gaussian(clean[0] / 255., sigma=sigma, channel_axis=-1) * 255)
        for _ in range(iterations):
            for h in range(224 - delta, delta, -1):
                for w in range(224 - delta, delta, -1):
                    dx, dy = rng.integers(-delta, delta, size=(2,))
                    h_prime, w_prime = h + dy, w + dx
                    x[h, w], x[h_prime, w_prime] = x[h_prime, w_prime], x[h, w]  # the original's "swap"
        expected = np.uint8(np.clip(gaussian(x / 255., sigma=sigma, channel_axis=-1), 0, 1) * 255)
        got = corrupt(clean[:1], "glass_blur", severity, rng=severity, dataset="imagenet")[0]
        assert np.array_equal(got, expected), severity


def imagemagick_or_ours():
    """Wand's MagickMotionBlurImage as the original calls it, or (without ImageMagick) the re-implementation
    that test_cifar10c checks against it."""
    import ctypes

    import cv2

    try:
        from wand.api import library
        from wand.image import Image as WandImage
    except ImportError:
        from timm_introspect.data.cifar10c.corruptions import _imagemagick_motion_blur

        def ours(img, radius, sigma, angle):
            return _imagemagick_motion_blur(img[None, ..., None] if img.ndim == 2 else img[None], radius, sigma,
                                            np.array([angle]))[0].squeeze()
        return ours
    library.MagickMotionBlurImage.argtypes = (ctypes.c_void_p, ctypes.c_double, ctypes.c_double, ctypes.c_double)

    def imagemagick(img, radius, sigma, angle):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        with WandImage(blob=buf.getvalue()) as im:
            library.MagickMotionBlurImage(im.wand, radius, sigma, angle)
            out = cv2.imdecode(np.frombuffer(im.make_blob(), np.uint8), cv2.IMREAD_UNCHANGED)
        return out[..., ::-1] if out.ndim == 3 else out
    return imagemagick


def test_motion_blur_is_the_original(clean):
    motion = imagemagick_or_ours()
    for severity in (1, 5):  # 21 and 41 taps
        radius, sigma = ORIGINAL["motion_blur"][severity - 1]
        rng = np.random.default_rng(severity)
        expected = [np.clip(motion(img, radius, sigma, rng.uniform(-45, 45)), 0, 255) for img in clean[:3]]
        got = corrupt(clean[:3], "motion_blur", severity, rng=severity, dataset="imagenet")
        assert np.array_equal(got, np.uint8(expected)), severity


def test_snow_is_the_original(clean):
    import cv2

    motion = imagemagick_or_ours()
    for severity in (1, 4):
        c = ORIGINAL["snow"][severity - 1]
        rng = np.random.default_rng(severity)
        x = np.array(clean[0], dtype=np.float32) / 255.
        layer = rng.normal(size=x.shape[:2], loc=c[0], scale=c[1])
        layer = clipped_zoom(layer[..., np.newaxis], c[2])
        layer[layer < c[3]] = 0
        layer = (np.clip(layer.squeeze(), 0, 1) * 255).astype(np.uint8)
        layer = (motion(layer, c[4], c[5], rng.uniform(-135, -45)) / 255.)[..., np.newaxis]
        x = c[6] * x + (1 - c[6]) * np.maximum(x, cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).reshape(224, 224, 1) * 1.5 + 0.5)
        expected = np.uint8(np.clip(x + layer + np.rot90(layer, k=2), 0, 1) * 255)
        got = corrupt(clean[:1], "snow", severity, rng=severity, dataset="imagenet")[0]
        assert np.array_equal(got, expected), severity


def test_frost_crops_the_overlays_at_full_size(clean):
    if not FROST.is_dir():
        pytest.skip("../shared/data/cifar10c-frost (the frost overlays) is not beside the project")
    import cv2

    names = ["frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg"]
    for severity in (1, 5):
        c = ORIGINAL["frost"][severity - 1]
        rng = np.random.default_rng(severity)
        expected = []
        for img in clean:  # the original: one of the first five, not resized, a random 224x224 crop
            frost = cv2.imread(str(FROST / names[rng.integers(5)]))
            x_start, y_start = rng.integers(0, frost.shape[0] - 224), rng.integers(0, frost.shape[1] - 224)
            frost = frost[x_start : x_start + 224, y_start : y_start + 224][..., [2, 1, 0]]
            expected.append(np.uint8(np.clip(c[0] * np.array(img) + c[1] * frost, 0, 255)))
        got = corrupt(clean, "frost", severity, rng=severity, frost_dir=FROST, dataset="imagenet")
        assert np.array_equal(got, np.stack(expected)), severity


def plasma_fractal(rng, mapsize=256, wibbledecay=3):
    """The original's diamond-square (np.random -> rng), as it writes it."""
    maparray = np.empty((mapsize, mapsize), dtype=np.float64)
    maparray[0, 0] = 0
    stepsize, wibble = mapsize, 100

    def wibbledmean(array):
        return array / 4 + wibble * rng.uniform(-wibble, wibble, array.shape)

    while stepsize >= 2:
        cornerref = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        squareaccum = cornerref + np.roll(cornerref, shift=-1, axis=0)
        squareaccum += np.roll(squareaccum, shift=-1, axis=1)
        maparray[stepsize // 2:mapsize:stepsize, stepsize // 2:mapsize:stepsize] = wibbledmean(squareaccum)
        drgrid = maparray[stepsize // 2:mapsize:stepsize, stepsize // 2:mapsize:stepsize]
        ulgrid = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        ltsum = (drgrid + np.roll(drgrid, 1, axis=0)) + (ulgrid + np.roll(ulgrid, -1, axis=1))
        maparray[0:mapsize:stepsize, stepsize // 2:mapsize:stepsize] = wibbledmean(ltsum)
        ttsum = (drgrid + np.roll(drgrid, 1, axis=1)) + (ulgrid + np.roll(ulgrid, -1, axis=0))
        maparray[stepsize // 2:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(ttsum)
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min()
    return maparray / maparray.max()


def test_fog_is_a_256_plasma_map_cropped_to_224(clean):
    for severity in (1, 5):
        c = ORIGINAL["fog"][severity - 1]
        rng = np.random.default_rng(severity)
        x = np.array(clean[0]) / 255.
        max_val = x.max()
        x += c[0] * plasma_fractal(rng, wibbledecay=c[1])[:224, :224][..., np.newaxis]
        expected = np.uint8(np.clip(x * max_val / (max_val + c[0]), 0, 1) * 255)
        got = corrupt(clean[:1], "fog", severity, rng=severity, dataset="imagenet")[0]
        # the diamond step adds its four neighbours in another order: a last-bit difference, rarely a level
        diff = np.abs(got.astype(int) - expected)
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, severity


def test_spatter_is_the_original(clean):
    import cv2

    for severity in range(1, 6):
        c = ORIGINAL["spatter"][severity - 1]
        rng = np.random.default_rng(severity)
        x = np.array(clean[1], dtype=np.float32) / 255.
        liquid_layer = gaussian(rng.normal(size=x.shape[:2], loc=c[0], scale=c[1]), sigma=c[2])
        liquid_layer[liquid_layer < c[3]] = 0
        if c[5] == 0:  # water
            liquid_layer = (liquid_layer * 255).astype(np.uint8)
            dist = cv2.distanceTransform(255 - cv2.Canny(liquid_layer, 50, 150), cv2.DIST_L2, 5)
            _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
            dist = cv2.equalizeHist(cv2.blur(dist, (3, 3)).astype(np.uint8))
            dist = cv2.filter2D(dist, cv2.CV_8U, np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]))
            dist = cv2.blur(dist, (3, 3)).astype(np.float32)
            m = cv2.cvtColor(liquid_layer * dist, cv2.COLOR_GRAY2BGRA)
            m /= np.max(m, axis=(0, 1))
            m *= c[4]
            color = np.concatenate([v / 255. * np.ones_like(m[..., :1]) for v in (175, 238, 238)], axis=2)
            color = cv2.cvtColor(color, cv2.COLOR_BGR2BGRA)
            x = cv2.cvtColor(x, cv2.COLOR_BGR2BGRA)
            expected = cv2.cvtColor(np.clip(x + m * color, 0, 1), cv2.COLOR_BGRA2BGR) * 255
        else:  # mud
            m = gaussian(np.where(liquid_layer > c[3], 1, 0).astype(np.float32), sigma=c[4])
            m[m < 0.8] = 0
            color = np.concatenate([v / 255. * np.ones_like(x[..., :1]) for v in (63, 42, 20)], axis=2)
            color *= m[..., np.newaxis]
            x *= (1 - m[..., np.newaxis])
            expected = np.clip(x + color, 0, 1) * 255
        got = corrupt(clean[1:2], "spatter", severity, rng=severity, dataset="imagenet")[0]
        assert np.array_equal(got, np.uint8(expected)), severity


def test_elastic_transform_is_the_original_with_244(clean):
    import cv2

    for severity in (1, 3):  # 1: sigma 244 * 0.7 = 170.8 px, affine jitter 24.4 px
        c = ORIGINAL["elastic_transform"][severity - 1]
        rng = np.random.default_rng(severity)
        image = np.array(clean[2], dtype=np.float32) / 255.
        shape = image.shape
        center_square = np.float32(shape[:2]) // 2
        square_size = min(shape[:2]) // 3
        pts1 = np.float32([center_square + square_size, [center_square[0] + square_size,
                           center_square[1] - square_size], center_square - square_size])
        pts2 = pts1 + rng.uniform(-c[2], c[2], size=pts1.shape).astype(np.float32)
        image = cv2.warpAffine(image, cv2.getAffineTransform(pts1, pts2), shape[:2][::-1],
                               borderMode=cv2.BORDER_REFLECT_101)
        dx = (gaussian(rng.uniform(-1, 1, size=shape[:2]), c[1], mode="reflect", truncate=3) * c[0]).astype(np.float32)
        dy = (gaussian(rng.uniform(-1, 1, size=shape[:2]), c[1], mode="reflect", truncate=3) * c[0]).astype(np.float32)
        x, y, z = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2]))
        indices = (np.reshape(y + dy[..., None], (-1, 1)), np.reshape(x + dx[..., None], (-1, 1)),
                   np.reshape(z, (-1, 1)))
        expected = np.uint8(np.clip(map_coordinates(image, indices, order=1, mode="reflect").reshape(shape), 0, 1)
                            * 255)
        got = corrupt(clean[2:3], "elastic_transform", severity, rng=severity, dataset="imagenet")[0]
        diff = np.abs(got.astype(int) - expected)
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, severity  # float sums in another order


# --- the layout: <corruption>/<severity>/<wnid>/<file>.JPEG ---------------------------------------------

WNIDS = ["n01440764", "n01443537", "n02102040"]


@pytest.fixture(scope="module")
def release(clean, tmp_path_factory):
    out = tmp_path_factory.mktemp("imagenet-c") / "ImageNet-C"
    wnids = [WNIDS[i % 3] for i in range(len(clean))]
    files = [f"ILSVRC2012_val_{i + 1:08d}.JPEG" for i in range(len(clean))]
    written = write_imagenet_c(out, clean, wnids, files, corruptions=("contrast", "fog"), severities=(1, 3),
                               progress=False)
    return out, wnids, files, written


def test_layout_as_the_original_saves_it(clean, release):
    out, wnids, files, written = release
    assert set(written["seconds"]) == {"contrast", "fog"} and written["reused"] == [] and written["images"] == 8
    found = sorted(str(p.relative_to(out)) for p in out.rglob("*.JPEG"))
    assert found == sorted(f"{c}/{s}/{w}/{f}" for c in ("contrast", "fog") for s in (1, 3)
                           for w, f in zip(wnids, files, strict=True))
    assert not [p for p in out.rglob(".*") if p.name != "manifest.json"]  # no temporary file left
    # byte for byte what the original writes: Image.fromarray(np.uint8(img)).save(path, quality=85, optimize=True)
    ref = out.parent / "ref.JPEG"
    Image.fromarray(corrupt(clean, "contrast", 3, dataset="imagenet")[4]).save(ref, quality=85, optimize=True)
    assert (out / "contrast" / "3" / wnids[4] / files[4]).read_bytes() == ref.read_bytes()


def test_round_trip(clean, release):
    out, wnids, files, _ = release
    images, labels = load_imagenet_c(out, "contrast", 3)
    order = sorted(range(len(clean)), key=lambda i: (wnids[i], files[i]))  # ImageFolder's: by class, by file
    assert images.shape == (8, 224, 224, 3) and images.dtype == np.uint8
    assert np.array_equal(labels, [sorted(WNIDS).index(wnids[i]) for i in order])
    exact = corrupt(clean, "contrast", 3, dataset="imagenet")[order].astype(int)
    assert np.abs(images - exact).mean() < 2 and np.abs(images - exact).max() < 40  # JPEG at quality 85
    decoded = np.stack([np.asarray(Image.open(out / "contrast" / "3" / wnids[i] / files[i])) for i in order])
    assert np.array_equal(images, decoded)
    # labels as indices in a given class list (e.g. all 1,000 wnids)
    classes = ["n00000001", *WNIDS[::-1]]
    _, labels = load_imagenet_c(out, "fog", 1, classes=classes)
    assert np.array_equal(labels, [classes.index(wnids[i]) for i in order])
    with pytest.raises(DataError, match="not in classes="):
        load_imagenet_c(out, "fog", 1, classes=WNIDS[:2])
    with pytest.raises(DataError, match="lacks fog/5"):
        load_imagenet_c(out, "fog", 5)
    with pytest.raises(ValueError, match="unknown corruption 'fgo'"):
        load_imagenet_c(out, "fgo", 1)


def test_resume_skips_finished_folders(clean, release, tmp_path):
    out, wnids, files, _ = release
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(out, copy)
    probe = copy / "fog" / "3" / wnids[0] / files[0]
    before = probe.stat().st_mtime_ns
    again = write_imagenet_c(copy, clean, wnids, files, corruptions=("fog", "contrast"), severities=(3, 5),
                             progress=False)
    assert again["reused"] == ["fog/3", "contrast/3"] and probe.stat().st_mtime_ns == before
    assert (copy / "contrast" / "5").is_dir() and (copy / "contrast" / "1").is_dir()  # kept, not asked for
    # the same seed makes the same folder: a fresh run equals the resumed one
    fresh = tmp_path / "fresh"
    write_imagenet_c(fresh, clean, wnids, files, corruptions=("fog",), severities=(3,), progress=False)
    assert probe.read_bytes() == (fresh / "fog" / "3" / wnids[0] / files[0]).read_bytes()
    # a damaged folder is made again; another seed replaces every earlier folder
    (copy / "fog" / "3" / wnids[0] / files[0]).unlink()
    assert write_imagenet_c(copy, clean, wnids, files, corruptions=("fog",), severities=(3,),
                            progress=False)["reused"] == []
    reseeded = write_imagenet_c(copy, clean, wnids, files, corruptions=("fog",), severities=(3,), seed=1,
                                progress=False)
    assert reseeded["reused"] == [] and sorted(p.name for p in copy.iterdir()) == ["fog", "manifest.json"]
    assert probe.read_bytes() != (fresh / "fog" / "3" / wnids[0] / files[0]).read_bytes()


def test_an_interrupted_run_resumes(clean, tmp_path, monkeypatch):
    import timm_introspect.data.cifar10c.imagenet as imagenet

    real, calls = imagenet.corrupt, []

    def failing(*args, **kwargs):
        calls.append(args[1:3])
        if len(calls) == 5:  # contrast: 3 chunks of 3 images; brightness: the second chunk
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(imagenet, "corrupt", failing)
    labels = [0, 1, 1, 0, 2, 2, 0, 1]  # integer labels: zero-padded folders
    with pytest.raises(KeyboardInterrupt):
        write_imagenet_c(tmp_path, clean, labels, corruptions=("contrast", "brightness"), severities=(2,), chunk=3,
                         progress=False)
    assert json.loads((tmp_path / "manifest.json").read_text())["writing"] == "brightness/2"
    monkeypatch.setattr(imagenet, "corrupt", real)
    done = write_imagenet_c(tmp_path, clean, labels, corruptions=("contrast", "brightness"), severities=(2,), chunk=3,
                            progress=False)
    assert done["reused"] == ["contrast/2"] and set(done["seconds"]) == {"brightness"}
    images, lab = load_imagenet_c(tmp_path, "brightness", 2)
    assert np.array_equal(lab, sorted(labels)) and sorted(p.name for p in (tmp_path / "brightness" / "2").iterdir()) \
        == ["0", "1", "2"]
    assert len(list((tmp_path / "brightness" / "2").rglob("*"))) == 3 + 8


def test_foreign_folders_and_bad_input_are_refused(clean, tmp_path):
    wnids = [WNIDS[i % 3] for i in range(8)]
    other = tmp_path / "other"
    (other / "contrast" / "1" / "n01440764").mkdir(parents=True)
    Image.fromarray(clean[0]).save(other / "contrast" / "1" / "n01440764" / "x.JPEG")
    with pytest.raises(DataError, match="contrast/1, not written by this generator"):
        write_imagenet_c(other, clean, wnids, corruptions=("contrast",), severities=(2,), progress=False)
    ours = tmp_path / "ours"
    write_imagenet_c(ours, clean, wnids, corruptions=("contrast",), severities=(1,), progress=False)
    stray = ours / "contrast" / "1" / "n01440764" / "stray.JPEG"
    stray.write_bytes(b"x")
    with pytest.raises(DataError, match="n01440764/stray.JPEG, not written by this generator"):
        write_imagenet_c(ours, clean, wnids, corruptions=("contrast",), severities=(1,), seed=2, progress=False)
    assert stray.is_file()  # nothing deleted
    stray.unlink()
    # a class folder replaced by a link to files elsewhere: refused, never deleted through
    import shutil

    victim = tmp_path / "elsewhere"
    shutil.move(ours / "contrast" / "1" / "n01443537", victim)
    (ours / "contrast" / "1" / "n01443537").symlink_to(victim, target_is_directory=True)
    with pytest.raises(DataError, match="holds n01443537, a file or link where"):
        write_imagenet_c(ours, clean, wnids, corruptions=("contrast",), severities=(1,), seed=3, progress=False)
    assert len(list(victim.iterdir())) == 3
    (ours / "manifest.json").write_text('{"done": {"../../x": 1}, "paths": ["../../etc/passwd"]}')
    with pytest.raises(DataError, match="not written by this generator"):  # a damaged manifest vouches for nothing
        write_imagenet_c(ours, clean, wnids, corruptions=("contrast",), severities=(1,), progress=False)
    run = lambda **kw: write_imagenet_c(tmp_path / "new", **{"images": clean, "labels": wnids,  # noqa: E731
                                                              "corruptions": ("contrast",), "progress": False, **kw})
    for kwargs, message in (
        ({"images": clean[:, :32, :32]}, r"\(n, 224, 224, 3\).*imagenet_preprocess"),
        ({"labels": wnids[:7]}, "7 labels for 8 images"),
        ({"labels": ["../x"] * 8}, "cannot be a file or folder name"),
        ({"labels": [0.5] * 8}, "all wnids .* or all class indices"),
        ({"labels": [3] * 8, "classes": WNIDS}, "class index 3 but only 3 classes"),
        ({"files": ["a.png"] * 8}, "files are JPEG"),
        ({"files": ["a.JPEG"] * 8}, "two images would be saved as n01440764/a.JPEG"),
        ({"corruptions": ("fgo",)}, "unknown corruption"),
        ({"severities": (0, 6)}, "severities must be some of 1..5"),
    ):
        with pytest.raises(ValueError, match=message):
            run(**kwargs)


def test_loading_is_torchvision_image_folder(release, tmp_path):
    """The original evaluates a <corruption>/<severity> folder with ImageFolder: same order, same labels
    (an empty class folder still takes its index)."""
    import shutil

    tv = pytest.importorskip("torchvision.datasets")
    out, *_ = release
    folder = tmp_path / "fog" / "1"
    shutil.copytree(out / "fog" / "1", folder)
    (folder / "n00000000").mkdir()  # sorts first: every label moves up by one
    reference = tv.ImageFolder(str(folder), allow_empty=True)
    images, labels = load_imagenet_c(tmp_path, "fog", 1)
    assert np.array_equal(labels, [t for _, t in reference.samples]) and labels.min() == 1
    assert np.array_equal(images, np.stack([np.asarray(reference.loader(p)) for p, _ in reference.samples]))
    with pytest.raises(ValueError, match="frost_dir"):
        write_imagenet_c(tmp_path / "frost", images, labels.tolist(), corruptions=("frost",), progress=False)
    assert not (tmp_path / "frost").exists()  # refused before anything is written


def test_labels_named_by_classes(clean, tmp_path):
    labels = [2, 0, 1, 2, 0, 1, 2, 0]
    write_imagenet_c(tmp_path, clean, labels, classes=WNIDS, corruptions=("pixelate",), severities=(4,),
                     progress=False)
    assert sorted(p.name for p in (tmp_path / "pixelate" / "4").iterdir()) == sorted(WNIDS)
    _, lab = load_imagenet_c(tmp_path, "pixelate", 4, classes=WNIDS)
    assert np.array_equal(lab, sorted(labels))


# --- rows read by datasets, locally and from the Hub -----------------------------------------------------


def rows_parquet(release, path: Path) -> None:
    import datasets

    out, wnids, files, _ = release
    rows = {"image": [], "label": [], "corruption": [], "severity": [], "index": []}
    for c in ("contrast", "fog"):
        for s in (1, 3):
            for i, (w, f) in enumerate(zip(wnids, files, strict=True)):
                rows["image"].append(Image.fromarray(np.asarray(Image.open(out / c / str(s) / w / f))))  # PNG
                rows["label"].append(WNIDS.index(w))
                rows["corruption"].append(c)
                rows["severity"].append(s)
                rows["index"].append(i)
    ds = datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image()).shuffle(seed=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(path))


def test_rows_from_a_folder_and_the_hub(release, hub, tmp_path):
    from hub_server import Repo

    out, wnids, files, _ = release
    rows_parquet(release, tmp_path / "rows" / "test-00000-of-00001.parquet")
    expected = np.stack([np.asarray(Image.open(out / "fog" / "3" / w / f)) for w, f in zip(wnids, files, strict=True)])
    images, labels = load_imagenet_c(tmp_path / "rows", "fog", 3, cache_dir=tmp_path / "hf")
    assert np.array_equal(images, expected) and np.array_equal(labels, [WNIDS.index(w) for w in wnids])
    with pytest.raises(DataError, match="no rows of 'fog' at severity 2; it has contrast/1, contrast/3, fog/1"):
        load_imagenet_c(tmp_path / "rows", "fog", 2, cache_dir=tmp_path / "hf")
    hub.state.repos["datasets/tester/imagenet-c-rows"] = Repo(
        files={"data/test-00000-of-00001.parquet": (tmp_path / "rows" / "test-00000-of-00001.parquet").read_bytes()},
        commits=["d" * 40])
    images, labels = load_imagenet_c("tester/imagenet-c-rows", "fog", 3, cache_dir=tmp_path / "hf2")
    assert np.array_equal(images, expected) and np.array_equal(labels, [WNIDS.index(w) for w in wnids])


def test_layout_on_the_hub_downloads_one_folder(release, hub):
    from hub_server import Repo

    out, wnids, files, _ = release
    hub.state.repos["datasets/tester/imagenet-c"] = Repo(
        files={f"ImageNet-C/{p.relative_to(out)}": p.read_bytes() for p in out.rglob("*.JPEG")}, commits=["e" * 40])
    images, labels = load_imagenet_c("tester/imagenet-c", "contrast", 1)
    local, local_labels = load_imagenet_c(out, "contrast", 1)
    assert np.array_equal(images, local) and np.array_equal(labels, local_labels)
    fetched = {p.split("/resolve/")[1].split("/", 1)[1] for m, p in hub.state.requests if m == "GET"
               and "/resolve/" in p}
    assert fetched and all(f.startswith("ImageNet-C/contrast/1/") for f in fetched)  # only what was asked for
    with pytest.raises(DataError, match="neither a local path nor a dataset repo"):
        load_imagenet_c("tester/no-such-set", "contrast", 1)


def test_damaged_or_odd_files_are_refused(release, tmp_path):
    import shutil

    out, wnids, files, _ = release
    copy = tmp_path / "c"
    shutil.copytree(out, copy)
    (copy / "fog" / "1" / wnids[0] / files[0]).write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="not a readable image"):
        load_imagenet_c(copy, "fog", 1)
    os.mkfifo(copy / "fog" / "3" / wnids[0] / "odd.JPEG")
    with pytest.raises(DataError, match="not a regular file"):
        load_imagenet_c(copy, "fog", 3)
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(copy / "contrast" / "1" / wnids[0] / "small.JPEG")
    with pytest.raises(DataError, match="images of one size"):
        load_imagenet_c(copy, "contrast", 1)
    with pytest.raises(DataError, match="not a folder"):
        load_imagenet_c(copy / "manifest.json", "contrast", 1)
