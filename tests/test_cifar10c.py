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
    a = corrupt(clean[:8], name, 3, rng=1)
    b = corrupt(clean[:8], name, 3, rng=1)
    assert a.dtype == np.uint8 and a.shape == clean[:8].shape
    assert np.array_equal(a, b)


# the original's severity is monotone for these (saturate goes 0.3x, 0.1x, then 1.5x saturation)
MONOTONE = [c for c in CORRUPTIONS if c != "saturate"]


@pytest.mark.parametrize("name", MONOTONE)
def test_severity_is_monotone(clean, name):
    dist = [np.abs(corrupt(clean, name, s, rng=0).astype(float) - clean).mean() for s in range(1, 6)]
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
