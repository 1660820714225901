"""CIFAR-10-C: the 19 corruptions, checked against formulas and literal per-image versions, and the layout."""

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from skimage.filters import gaussian

from timm_introspect.data.cifar10c import CORRUPTIONS, PARAMS, corrupt, load_official, write_official

SPEC = Path(__file__).resolve().parents[2].parent / "shared" / "specs" / "cifar10c_params.json"
CIFAR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cifar10"
FROST = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cifar10c-frost"


def run(images, name, severity, rng=0):
    if name == "frost" and not FROST.is_dir():
        pytest.skip("../shared/data/cifar10c-frost (the frost overlays) is not beside the project")
    return corrupt(images, name, severity, rng=rng, frost_dir=FROST)


@pytest.fixture(scope="module")
def clean() -> np.ndarray:
    """64 CIFAR-10 test images when ../shared is there, else smooth synthetic ones."""
    if CIFAR.is_dir():
        import datasets

        ds = datasets.load_dataset("parquet", data_files={"test": str(CIFAR / "test-*.parquet")}, split="test")
        return np.stack([np.asarray(ds[i]["img"].convert("RGB")) for i in range(0, 6400, 100)])
    rng = np.random.default_rng(0)
    base = rng.integers(30, 220, (64, 4, 4, 3)).astype(np.uint8)
    return np.kron(base, np.ones((1, 8, 8, 1), dtype=np.uint8))


@pytest.mark.skipif(not SPEC.is_file(), reason="../shared/specs/cifar10c_params.json is not beside the project")
def test_params_follow_the_spec():
    spec = json.loads(SPEC.read_text())
    for name, values in PARAMS.items():
        ours = [list(v) if isinstance(v, tuple) else v for v in values]
        for mine, listed in zip(ours, spec[name]["per_severity"], strict=True):  # listed: rounded for reading
            assert np.allclose(mine, listed, rtol=0, atol=1e-12), name
        # the original's own expression, evaluated: exactly our values (zoom factors included, unrounded)
        original = eval(spec[name]["source_expr"], {"np": np, "IMSIZE": 32})  # noqa: S307  (a local spec file)
        assert [np.asarray(v).tolist() if not np.isscalar(v) else v for v in original] == ours, name


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_uint8_in_uint8_out_and_reproducible(clean, name):
    a = run(clean[:8], name, 3, rng=1)
    b = run(clean[:8], name, 3, rng=1)
    assert a.dtype == np.uint8 and a.shape == clean[:8].shape
    assert np.array_equal(a, b)


# the original's severity is monotone for all but these: saturate goes 0.3x, 0.1x, then 1.5x saturation;
# glass blur's sigma goes 0.05, 0.25, 0.4, 0.25, 0.4 with more iterations; spatter switches from water
# (1-3) to mud (4-5); elastic transform trades a shrinking affine jitter for a growing displacement field
NOT_MONOTONE = ("saturate", "glass_blur", "spatter", "elastic_transform")
MONOTONE = [c for c in CORRUPTIONS if c not in NOT_MONOTONE]


def test_all_19_corruptions():
    assert len(CORRUPTIONS) == 19 and len(set(CORRUPTIONS)) == 19
    assert set(CORRUPTIONS) == set(PARAMS)
    if SPEC.is_file():
        assert set(CORRUPTIONS) == set(json.loads(SPEC.read_text()))


def structure_lost(a: np.ndarray, b: np.ndarray) -> float:
    """1 - mean Pearson correlation of each corrupted image with its clean one."""
    a = a.reshape(len(a), -1).astype(float)
    b = b.reshape(len(b), -1).astype(float)
    a -= a.mean(1, keepdims=True)
    b -= b.mean(1, keepdims=True)
    return 1 - ((a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))).mean()


@pytest.mark.parametrize("name", MONOTONE)
def test_severity_is_monotone(clean, name):
    # mean absolute change; frost also dims the image (0.75 x at severity 5), so for it: structure lost
    if name == "frost":
        dist = [structure_lost(run(clean, name, s), clean) for s in range(1, 6)]
    else:
        dist = [np.abs(run(clean, name, s).astype(float) - clean).mean() for s in range(1, 6)]
    if name == "motion_blur":
        # severities 3 and 4 differ only in 2 more taps of weight < 0.1 % (sigma 2, radius 6 -> 8)
        assert dist[1] > dist[0] and dist[2] > dist[1] and dist[4] > dist[3] >= dist[2] - 0.05, dist
    else:
        assert all(b > a for a, b in zip(dist, dist[1:], strict=False)), dist


def test_simple_ones_match_their_formulas(clean):
    x = clean.astype(np.float64) / 255
    c = PARAMS["contrast"][2]
    means = x.mean(axis=(1, 2), keepdims=True)
    assert np.array_equal(corrupt(clean, "contrast", 3), np.uint8(np.clip((x - means) * c + means, 0, 1) * 255))
    # gaussian blur: skimage's filter image by image, as the original calls it
    sigma = PARAMS["gaussian_blur"][4]
    expected = np.stack([np.uint8(np.clip(gaussian(img / 255.0, sigma=sigma, channel_axis=-1), 0, 1) * 255)
                         for img in clean])
    assert np.array_equal(corrupt(clean, "gaussian_blur", 5), expected)
    # gaussian noise with the same generator: x + N(0, c), clipped, truncated
    rng = np.random.default_rng(5)
    noise = rng.normal(size=x.shape, scale=PARAMS["gaussian_noise"][0])
    assert np.array_equal(corrupt(clean, "gaussian_noise", 1, rng=5), np.uint8(np.clip(x + noise, 0, 1) * 255))
    # truncation, not rounding, as the original's np.uint8: 100 / 255 * 255 = 99.99999999999999 -> 99
    flat = np.full((1, 32, 32, 3), 100, np.uint8)
    assert (corrupt(flat, "contrast", 1) == 99).all()


def test_frost_adds_the_overlays(clean):
    if not FROST.is_dir():
        pytest.skip("../shared/data/cifar10c-frost is not beside the project")
    import cv2

    overlays = [cv2.resize(cv2.imread(str(FROST / f)), (0, 0), fx=0.2, fy=0.2)[..., [2, 1, 0]]
                for f in ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")]
    for severity in (1, 5):
        c = PARAMS["frost"][severity - 1]
        rng = np.random.default_rng(7)  # the original, image by image, drawing as it does
        expected = []
        for img in clean:
            frost = overlays[rng.integers(5)]
            top, left = rng.integers(0, frost.shape[0] - 32), rng.integers(0, frost.shape[1] - 32)
            crop = frost[top : top + 32, left : left + 32]
            expected.append(np.uint8(np.clip(c[0] * img.astype(np.float64) + c[1] * crop, 0, 255)))
        assert np.array_equal(corrupt(clean, "frost", severity, rng=7, frost_dir=FROST), np.stack(expected))
    with pytest.raises(ValueError, match="frost_dir"):
        corrupt(clean, "frost", 1)


def test_impulse_noise_rate(clean):
    out = corrupt(clean, "impulse_noise", 5, rng=0)
    changed = (out != clean) & ((out == 0) | (out == 255))
    assert abs(changed.mean() - PARAMS["impulse_noise"][4]) < 0.01


def test_official_layout_round_trip(clean, tmp_path):
    labels = np.arange(len(clean)) % 10
    written = write_official(tmp_path / "c", clean[:10], labels[:10], corruptions=("contrast", "pixelate"), chunk=4)
    sums = written["md5"]
    assert set(written["seconds"]) == {"contrast", "pixelate"} and not list((tmp_path / "c").glob(".*"))
    arr = np.load(tmp_path / "c" / "contrast.npy")
    assert arr.shape == (50, 32, 32, 3) and arr.dtype == np.uint8
    assert np.array_equal(arr[20:30], corrupt(clean[:10], "contrast", 3))  # severity blocks of n, in order
    data, lab = load_official(tmp_path / "c", md5=sums)
    assert set(data) == {"contrast", "pixelate"} and np.array_equal(lab, np.tile(labels[:10], 5))
    with tarfile.open(tmp_path / "c.tar", "w") as tar:
        tar.add(tmp_path / "c", arcname="CIFAR-10-C")
    data_tar, _ = load_official(tmp_path / "c.tar", corruptions=("pixelate",))
    assert np.array_equal(data_tar["pixelate"], data["pixelate"])
    with pytest.raises(ValueError, match="md5"):
        load_official(tmp_path / "c", md5={**sums, "contrast.npy": "0" * 32})
    with pytest.raises(ValueError, match="lacks fog.npy"):
        load_official(tmp_path / "c", corruptions=("fog",))


# --- the five that were last to come: literal per-image versions and hand-made cases -----------------


def motion_kernel(radius, sigma):
    taps = np.arange(2 * int(np.ceil(radius)) + 1)
    k = np.exp(-(taps**2) / (2 * sigma**2))
    return k / k.sum()


def test_motion_blur_follows_imagemagick_taps():
    from timm_introspect.data.cifar10c.corruptions import _imagemagick_motion_blur

    k = motion_kernel(6, 1.5)
    assert len(k) == 13  # ImageMagick's GetOptimalKernelWidth1D: 2 ceil(radius) + 1
    # a single bright pixel: output (y, x) reads x + i at angle 0, so the streak goes left of the dot
    dot = np.zeros((1, 32, 32, 1), np.uint8)
    dot[0, 10, 20] = 200
    out = _imagemagick_motion_blur(dot, 6, 1.5, np.array([0.0]))[0, ..., 0].astype(int)
    level = lambda v: np.floor(v * 257 + 0.5).astype(int) // 257  # noqa: E731  rounded at 16 bits, then 8-bit
    assert np.array_equal(out[10, 8:21][::-1], level(200 * k[:13]))
    assert out.sum() == out[10].sum()
    # at 90 degrees tap i is read at y + i: the streak goes up
    out = _imagemagick_motion_blur(dot, 6, 1.5, np.array([90.0]))[0, ..., 0].astype(int)
    assert np.array_equal(out[:11, 20][::-1], level(200 * k[:11])) and out[:, 19].sum() == 0
    # at 45 degrees tap i is read at (x + ceil(i cos 45 - 1/2), y + ceil(i sin 45 - 1/2)); edge pixels repeat
    img = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3)).astype(np.uint8)
    off = np.ceil(np.arange(13) * np.cos(np.pi / 4) - 0.5).astype(int)
    ref = np.zeros((32, 32, 3))
    for y in range(32):
        for x in range(32):
            for i in range(13):
                ref[y, x] += k[i] * img[0, min(y + off[i], 31), min(x + off[i], 31)]
    out = _imagemagick_motion_blur(img, 6, 1.5, np.array([45.0]))[0]
    assert np.array_equal(out, level(ref))
    flat = np.full((2, 32, 32, 3), 77, np.uint8)  # a flat image stays flat
    assert (_imagemagick_motion_blur(flat, 9, 2.5, np.array([13.0, -40.0])) == 77).all()


def literal_plasma(decay, rng, size=32):
    """Diamond-square written point by point (the wrap-around neighbours spelled out)."""
    m = np.zeros((size, size))
    step, wibble = size, 100.0
    while step >= 2:
        half, k = step // 2, size // step
        noise = rng.uniform(-wibble, wibble, (k, k))
        corner = m[::step, ::step].copy()
        for a in range(k):
            for b in range(k):
                total = (corner[a, b] + corner[(a + 1) % k, b] + corner[a, (b + 1) % k]
                         + corner[(a + 1) % k, (b + 1) % k])
                m[a * step + half, b * step + half] = total / 4 + wibble * noise[a, b]
        centre = m[half::step, half::step].copy()
        for rows in (True, False):
            noise = rng.uniform(-wibble, wibble, (k, k))
            for a in range(k):
                for b in range(k):
                    if rows:  # points (a step, b step + half): centres above and below, corners left and right
                        total = centre[a, b] + centre[a - 1, b] + corner[a, b] + corner[a, (b + 1) % k]
                        m[a * step, b * step + half] = total / 4 + wibble * noise[a, b]
                    else:  # points (a step + half, b step): centres left and right, corners above and below
                        total = centre[a, b] + centre[a, b - 1] + corner[a, b] + corner[(a + 1) % k, b]
                        m[a * step + half, b * step] = total / 4 + wibble * noise[a, b]
        step //= 2
        wibble /= decay
    m -= m.min()
    return m / m.max()


def test_fog_is_the_plasma_fractal_blend(clean):
    from timm_introspect.data.cifar10c.corruptions import _plasma_fractal

    maps = _plasma_fractal(1, 2.5, np.random.default_rng(3))
    assert np.allclose(maps[0], literal_plasma(2.5, np.random.default_rng(3)), atol=1e-12)
    assert maps.min() == 0 and maps.max() == 1
    c = PARAMS["fog"][2]
    x = clean.astype(np.float64) / 255
    plasma = _plasma_fractal(len(clean), c[1], np.random.default_rng(4))[..., None]
    peak = x.max(axis=(1, 2, 3), keepdims=True)
    expected = np.uint8(np.clip((x + c[0] * plasma) * peak / (peak + c[0]), 0, 1) * 255)
    assert np.array_equal(corrupt(clean, "fog", 3, rng=4), expected)


def test_elastic_transform_matches_the_per_image_original(clean):
    import cv2
    from scipy.ndimage import map_coordinates

    imgs = clean[:6]
    for severity in (1, 3):
        alpha, sigma, jitter = PARAMS["elastic_transform"][severity - 1]
        rng = np.random.default_rng(severity)
        out = corrupt(imgs, "elastic_transform", severity, rng=severity)
        # the original, image by image, with the draws in the order the batch version makes them
        src = np.float32([[16 + 10, 16 + 10], [16 + 10, 16 - 10], [16 - 10, 16 - 10]])
        jitters = [rng.uniform(-jitter, jitter, size=(3, 2)).astype(np.float32) for _ in imgs]
        fields = rng.uniform(-1, 1, size=(2, len(imgs), 32, 32))
        for i, img in enumerate(imgs):
            image = cv2.warpAffine(img.astype(np.float32) / 255, cv2.getAffineTransform(src, src + jitters[i]),
                                   (32, 32), borderMode=cv2.BORDER_REFLECT_101)
            dx = (gaussian(fields[0, i], sigma, mode="reflect", truncate=3) * alpha).astype(np.float32)[..., None]
            dy = (gaussian(fields[1, i], sigma, mode="reflect", truncate=3) * alpha).astype(np.float32)[..., None]
            x, y, z = np.meshgrid(np.arange(32), np.arange(32), np.arange(3))
            idx = np.reshape(y + dy, (-1, 1)), np.reshape(x + dx, (-1, 1)), np.reshape(z, (-1, 1))
            ref = np.uint8(np.clip(map_coordinates(image, idx, order=1, mode="reflect").reshape(32, 32, 3), 0, 1) * 255)
            diff = np.abs(out[i].astype(int) - ref)
            assert diff.max() <= 1 and (diff == 0).mean() > 0.99  # a level at most, from float summation order


def test_spatter_water_and_mud(clean):
    for severity in (1, 2, 3):  # water: adds pale turquoise, never darkens (beyond truncation's one level)
        out = corrupt(clean, "spatter", severity, rng=severity).astype(int)
        assert (out >= clean.astype(int) - 1).all() and (out > clean.astype(int) + 1).any()
        up = out - clean.astype(int)
        wet = up.max(-1) > 8  # where water was added, blue and green rise more than red (175 vs 238)
        assert (up[wet][:, 1] >= up[wet][:, 0] - 1).mean() > 0.95
    for severity in (4, 5):  # mud: pixels untouched or pulled toward (63, 42, 20)
        out = corrupt(clean, "spatter", severity, rng=severity).astype(float)
        changed = np.abs(out - clean).max(-1) > 1
        assert 0 < changed.mean() < 0.5
        mud = np.array([63, 42, 20])
        closer = np.abs(out[changed] - mud).sum(-1) <= np.abs(clean[changed].astype(float) - mud).sum(-1) + 3
        assert closer.all()


def test_snow_adds_flakes(clean):
    for severity in (1, 5):
        out = corrupt(clean, "snow", severity, rng=0).astype(float)
        assert out.mean() > clean.mean() + 5  # brighter: whitened base plus streaks
    # the base blend alone (no flakes) is a lower bound: x <- b x + (1 - b) max(x, 1.5 gray + 0.5)
    b = PARAMS["snow"][0][6]
    x = clean.astype(np.float32) / 255
    gray = (x @ np.float32([0.299, 0.587, 0.114]))[..., None]
    base = np.clip(b * x + (1 - b) * np.maximum(x, gray * 1.5 + 0.5), 0, 1) * 255
    assert (corrupt(clean, "snow", 1, rng=0) >= np.floor(base - 1e-3)).all()


@pytest.mark.parametrize("factor", [1.0, 1.01, 1.06, 1.11, 1.17, 1.25])
def test_zoom_matrix_equals_scipy_zoom(clean, factor):
    from timm_introspect.data.cifar10c.corruptions import _clipped_zoom, _zoom_matrix

    x = clean[:16].astype(np.float64) / 255
    zoom = _zoom_matrix(32, factor)
    by_matrix = np.einsum("oh,nhwc,pw->nopc", zoom, x, zoom)
    assert np.allclose(by_matrix, _clipped_zoom(x, factor), atol=1e-12)


def test_zoom_blur_is_the_original_average(clean):
    from helpers import original_clipped_zoom as clipped_zoom  # the original's, one image at a time

    for severity, stop in enumerate((1.06, 1.11, 1.16, 1.21, 1.26), start=1):
        factors = np.arange(1, stop, 0.01)  # as the original writes them
        expected = []
        for img in clean[:12]:
            x = (img / 255.0).astype(np.float32)
            out = np.zeros_like(x)
            for f in factors:
                out += clipped_zoom(x, f)
            expected.append(np.uint8(np.clip((x + out) / (len(factors) + 1), 0, 1) * 255))
        got = corrupt(clean[:12], "zoom_blur", severity)
        assert (got != np.stack(expected)).mean() < 1e-4 and np.abs(got.astype(int) - expected).max() <= 1, severity


def test_motion_blur_is_imagemagick_bit_for_bit(clean):
    """The original's path (PNG -> Wand's MagickMotionBlurImage -> PNG -> OpenCV) against ours, where
    ImageMagick is installed (Debian: libmagickwand-dev; pip: Wand)."""
    import ctypes
    import io

    import cv2
    from PIL import Image

    # Wand raises ImportError (not ModuleNotFoundError) when the MagickWand library is missing: skip on both
    wand_image = pytest.importorskip("wand.image", reason="ImageMagick (MagickWand) and Wand are not installed",
                                     exc_type=ImportError)
    from wand.api import library

    from timm_introspect.data.cifar10c.corruptions import _imagemagick_motion_blur

    library.MagickMotionBlurImage.argtypes = (ctypes.c_void_p, ctypes.c_double, ctypes.c_double, ctypes.c_double)

    def imagemagick(img, radius, sigma, angle):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        with wand_image.Image(blob=buf.getvalue()) as im:
            library.MagickMotionBlurImage(im.wand, radius, sigma, angle)
            out = cv2.imdecode(np.frombuffer(im.make_blob(), np.uint8), cv2.IMREAD_UNCHANGED)
        return out[..., ::-1] if out.ndim == 3 else out

    rng = np.random.default_rng(0)
    for radius, sigma in PARAMS["motion_blur"]:
        angles = rng.uniform(-45, 45, 8)
        ours = _imagemagick_motion_blur(clean[:8], radius, sigma, angles)
        for i in range(8):
            assert np.array_equal(ours[i], imagemagick(clean[i], radius, sigma, angles[i])), (radius, sigma, angles[i])
    flakes = rng.integers(0, 256, (4, 32, 32, 1)).astype(np.uint8)  # snow's grayscale layer, its angles
    angles = rng.uniform(-135, -45, 4)
    ours = _imagemagick_motion_blur(flakes, 12, 6, angles)
    for i in range(4):
        assert np.array_equal(ours[i, ..., 0], imagemagick(flakes[i, ..., 0], 12, 6, angles[i]))


def test_missing_extra_names_it():
    """Without the [cifar10c] extra (here: OpenCV hidden), importing CIFAR-10-C says what to install."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['cv2'] = None\n"
            "from timm_introspect import MissingDependencyError\n"
            "try:\n    import timm_introspect.data.cifar10c\nexcept MissingDependencyError as err:\n    print(err)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "pip install 'timm-introspect[cifar10c]'" in proc.stdout, proc.stderr[-2000:]
