"""The corruption benchmark (benchmarks/cifar10c.py) on ImageNet-C: an f that takes 224 px images, its sets
generated with the ImageNet generator's preprocessing and parameters or read from the release's layout, T
fitted on a held-out share of the test split for a model that records no held-out images."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from helpers import make_images, write_parquet

from timm_introspect import IntrospectiveHead
from timm_introspect.data.cifar10c import corrupt, imagenet_preprocess, load_imagenet_c, write_imagenet_c
from timm_introspect.data.images import load_images
from timm_introspect.jobs.robustness import predict_arrays
from timm_introspect.training.loop import Schedule
from timm_introspect.training.pipeline import fit_head

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "cifar10c.py"


def benchmark():
    spec = importlib.util.spec_from_file_location("corruption_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def imagenet_like(tmp_path_factory):
    """An f with an ImageNet data config (224 px, crop 0.875), H fitted on 24 images; test images of 72 x 60 px."""
    root = tmp_path_factory.mktemp("inc")
    write_parquet(root / "data", "train", *make_images(24, 0, size=64))
    images, labels = make_images(16, 1, size=72)
    write_parquet(root / "data", "test", [img.crop((0, 0, 72, 60)) for img in images], labels)
    torch.manual_seed(0)
    f = timm.create_model("test_resnet", num_classes=3).eval()
    f.pretrained_cfg = {**f.pretrained_cfg, "input_size": (3, 224, 224), "crop_pct": 0.875,
                        "interpolation": "bilinear"}
    fit_head(f, load_images(str(root / "data"), "train"), root / "h", loss="ce",
             schedule=Schedule(epochs=1, lr=0.05), batch_size=8)
    return root


def accuracy(head, images, labels) -> float:
    f, h = predict_arrays(head, images)
    return float((f.argmax(1).numpy() == labels).mean()), float((h.argmax(1).numpy() == labels).mean())


def test_a_model_without_held_out_images_needs_a_calibration_share(imagenet_like, tmp_path):
    with pytest.raises(SystemExit, match="--calibration-holdout"):
        benchmark().main(["--dataset", "imagenetc", "--model", str(imagenet_like / "h"), "--data",
                          str(imagenet_like / "data"), "--corruptions", "contrast", "--out", str(tmp_path)])


def test_generated_imagenet_c_uses_the_imagenet_generator(imagenet_like, tmp_path):
    results = benchmark().main([
        "--dataset", "imagenetc", "--model", str(imagenet_like / "h"), "--data", str(imagenet_like / "data"),
        "--calibration-holdout", "0.25", "--corruptions", "contrast", "gaussian_noise", "--severities", "1", "5",
        "--out", str(tmp_path)])
    assert [(r["corruption"], r["severity"]) for r in results["corrupted"]] == [
        ("contrast", 1), ("contrast", 5), ("gaussian_noise", 1), ("gaussian_noise", 5)]
    assert results["images_per_set"] == 12 and results["calibration_images"] == 4  # disjoint: 16 = 12 + 4
    assert json.loads((tmp_path / "results.json").read_text())["dataset"] == "imagenetc"
    assert "ImageNet-C" in (tmp_path / "results.md").read_text()
    # the sets are the ImageNet generator's: resize 256 / crop 224, then its parameters
    head = IntrospectiveHead.from_pretrained(imagenet_like / "h").eval()
    rest, _ = load_images(str(imagenet_like / "data"), "test").split_holdout(0.25, seed=0)
    clean, labels = rest.arrays(resize=imagenet_preprocess)
    assert clean.shape == (12, 224, 224, 3)
    row = next(r for r in results["corrupted"] if (r["corruption"], r["severity"]) == ("contrast", 5))
    expected = accuracy(head, corrupt(clean, "contrast", 5, dataset="imagenet"), labels)
    assert (row["f"]["accuracy"], row["H"]["accuracy"]) == pytest.approx(expected)
    # (CIFAR's contrast 0.15 at severity 5 would be another set than ImageNet's 0.05)
    assert not np.array_equal(corrupt(clean, "contrast", 5), corrupt(clean, "contrast", 5, dataset="imagenet"))
    assert results["clean"]["f"]["accuracy"] == pytest.approx(accuracy(head, clean, labels)[0])


def test_imagenet_c_release_layout_is_read(imagenet_like, tmp_path):
    head = IntrospectiveHead.from_pretrained(imagenet_like / "h").eval()
    rest, _ = load_images(str(imagenet_like / "data"), "test").split_holdout(0.25, seed=0)
    clean, labels = rest.arrays(resize=imagenet_preprocess)
    wnids = ["n00000001", "n00000002", "n00000003"]  # sorted: label i is wnids[i], as ImageFolder numbers them
    write_imagenet_c(tmp_path / "ImageNet-C", clean, labels, classes=wnids, corruptions=("contrast",),
                     severities=(5,), progress=False)
    results = benchmark().main([
        "--dataset", "imagenetc", "--model", str(imagenet_like / "h"), "--data", str(imagenet_like / "data"),
        "--calibration-holdout", "0.25", "--corrupted", str(tmp_path / "ImageNet-C"), "--corruptions", "contrast",
        "--severities", "5", "--out", str(tmp_path / "out")])
    (row,) = results["corrupted"]
    images, y = load_imagenet_c(tmp_path / "ImageNet-C", "contrast", 5)
    assert sorted(y.tolist()) == sorted(labels.tolist()) and images.shape[1:] == (224, 224, 3)
    assert (row["f"]["accuracy"], row["H"]["accuracy"]) == pytest.approx(accuracy(head, images, y))
    assert row["f"]["count"] == 12 and results["sets_from"] == str(tmp_path / "ImageNet-C")
    # with a limit only a seeded subset of positions is decoded: the same in every set of the release
    few, few_y = load_imagenet_c(tmp_path / "ImageNet-C", "contrast", 5, limit=5, seed=1)
    keep = np.sort(np.random.default_rng(1).permutation(12)[:5])
    assert np.array_equal(few, images[keep]) and np.array_equal(few_y, y[keep])
    assert json.loads((tmp_path / "out" / "results.json").read_text())["corrupted"][0]["f"] == row["f"]


def test_cli_writes_imagenet_c_that_the_loader_reads(imagenet_like, tmp_path):
    from helpers import CLASSES

    from timm_introspect.cli import main

    main(["imagenetc", "--data", str(imagenet_like / "data"), "--split", "test", "--corruptions", "contrast",
          "--severities", "2", "--limit", "6", "--out", str(tmp_path / "ImageNet-C")])
    assert sorted(p.name for p in (tmp_path / "ImageNet-C" / "contrast" / "2").iterdir()) == sorted(CLASSES)
    images, labels = load_imagenet_c(tmp_path / "ImageNet-C", "contrast", 2, classes=CLASSES)
    clean, clean_labels = load_images(str(imagenet_like / "data"), "test", limit=6, seed=0).arrays(
        resize=imagenet_preprocess)
    assert sorted(labels.tolist()) == sorted(clean_labels.tolist()) and images.shape == (6, 224, 224, 3)
    # the files hold the ImageNet generator's contrast (0.3 at severity 2), within JPEG's loss
    expected = corrupt(clean, "contrast", 2, dataset="imagenet")
    by_name = {name: i for i, name in enumerate(CLASSES)}
    # the loader reads by class folder (sorted names), then by file name (the image's number)
    folder_order = sorted(range(6), key=lambda i: (sorted(CLASSES).index(CLASSES[clean_labels[i]]), i))
    assert [by_name[CLASSES[clean_labels[i]]] for i in folder_order] == labels.tolist()
    assert np.abs(images.astype(int) - expected[folder_order].astype(int)).mean() < 3


def test_the_ood_corrupted_set_takes_the_parameters_of_the_image_size():
    from timm_introspect.apps.ood.data import corrupted_images

    rng = np.random.default_rng(0)
    large, small = (rng.integers(0, 256, (2, s, s, 3), dtype=np.uint8) for s in (224, 32))
    assert np.array_equal(corrupted_images(large, 5, ["contrast"]), corrupt(large, "contrast", 5, dataset="imagenet"))
    assert np.array_equal(corrupted_images(small, 5, ["contrast"]), corrupt(small, "contrast", 5))
