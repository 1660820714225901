"""ImageNet-C written from class names that do not sort in class order reads back its labels from the Hub too
(issue 22, group 6): the class order ``manifest.json`` records is used on every read path (a local folder, a Hub
repo in the release's layout, and that repo's copy in the cache when the Hub cannot be reached)."""

from __future__ import annotations

import numpy as np
import pytest

CLASSES = ["zebra", "apple", "mango"]  # sorted: apple, mango, zebra
EXPECTED = [1, 1, 2, 2, 0, 0]  # images come by class folder (sorted names), labelled with their class index


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    pytest.importorskip("cv2")
    from timm_introspect.data.cifar10c import write_imagenet_c

    out = tmp_path_factory.mktemp("names") / "ImageNet-C"
    images = np.random.default_rng(0).integers(0, 255, (6, 224, 224, 3), dtype=np.uint8)
    write_imagenet_c(out, images, np.array([0, 1, 2, 0, 1, 2]), classes=CLASSES, corruptions=("brightness",),
                     severities=(1,), progress=False)
    return out


@pytest.mark.parametrize("prefix", ["", "ImageNet-C/"])
def test_the_recorded_class_order_is_used_on_a_hub_read(written, hub, tmp_path, monkeypatch, prefix):
    from hub_server import Repo
    from huggingface_hub import constants

    from timm_introspect.data.cifar10c import load_imagenet_c

    local_images, local_labels = load_imagenet_c(written, "brightness", 1)
    assert local_labels.tolist() == EXPECTED
    hub.state.repos["datasets/tester/imagenet-c-names"] = Repo(
        files={f"{prefix}{p.relative_to(written)}": p.read_bytes() for p in written.rglob("*") if p.is_file()},
        commits=["f" * 40])
    images, labels = load_imagenet_c("tester/imagenet-c-names", "brightness", 1, cache_dir=tmp_path / "hf")
    assert labels.tolist() == EXPECTED and np.array_equal(images, local_images)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # the Hub out of reach: the cached copy is read
    asked = len(hub.state.requests)
    images, labels = load_imagenet_c("tester/imagenet-c-names", "brightness", 1, cache_dir=tmp_path / "hf")
    assert len(hub.state.requests) == asked  # read from the cache alone
    assert labels.tolist() == EXPECTED and np.array_equal(images, local_images)


def test_explicit_classes_still_win_on_a_hub_read(written, hub, tmp_path):
    from hub_server import Repo

    from timm_introspect.data.cifar10c import load_imagenet_c

    hub.state.repos["datasets/tester/imagenet-c-names"] = Repo(
        files={str(p.relative_to(written)): p.read_bytes() for p in written.rglob("*") if p.is_file()},
        commits=["f" * 40])
    _, labels = load_imagenet_c("tester/imagenet-c-names", "brightness", 1, classes=sorted(CLASSES),
                                cache_dir=tmp_path / "hf")
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]
