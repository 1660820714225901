"""CIFAR-10-C corruptions (those implemented so far) and the official layout."""

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from skimage.filters import gaussian

from timm_introspect.cifar10c import CORRUPTIONS, PARAMS, corrupt, load_official, write_official

SPEC = Path(__file__).resolve().parents[1].parent / "shared" / "specs" / "cifar10c_params.json"
CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10"
FROST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10c-frost"


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
        assert [list(v) if isinstance(v, tuple) else v for v in values] == spec[name]["per_severity"], name


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_uint8_in_uint8_out_and_reproducible(clean, name):
    a = run(clean[:8], name, 3, rng=1)
    b = run(clean[:8], name, 3, rng=1)
    assert a.dtype == np.uint8 and a.shape == clean[:8].shape
    assert np.array_equal(a, b)


# the original's severity is monotone for these (saturate goes 0.3x, 0.1x, then 1.5x saturation; glass
# blur's sigma goes 0.05, 0.25, 0.4, 0.25, 0.4 with more iterations)
MONOTONE = [c for c in CORRUPTIONS if c not in ("saturate", "glass_blur")]


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
    assert all(b > a for a, b in zip(dist, dist[1:])), dist


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
    frosted = corrupt(clean, "frost", 1, rng=0, frost_dir=FROST).astype(float)
    assert (frosted >= clean).all()  # severity 1: x + 0.2 * frost, clipped
    with pytest.raises(ValueError, match="frost_dir"):
        corrupt(clean, "frost", 1)


def test_impulse_noise_rate(clean):
    out = corrupt(clean, "impulse_noise", 5, rng=0)
    changed = (out != clean) & ((out == 0) | (out == 255))
    assert abs(changed.mean() - PARAMS["impulse_noise"][4]) < 0.01


def test_official_layout_round_trip(clean, tmp_path):
    labels = np.arange(len(clean)) % 10
    sums = write_official(tmp_path / "c", clean[:10], labels[:10], corruptions=("contrast", "pixelate"))
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
