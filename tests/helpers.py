"""Helpers the tests share (imported as ``from helpers import ...``; fixtures live in conftest.py)."""

from __future__ import annotations

import functools
from pathlib import Path

import datasets
import numpy as np
import timm
import torch
from PIL import Image
from torch import nn

from timm_introspect import find_classifiers

__all__ = ["CLASSES", "make_images", "original_clipped_zoom", "rel_err", "timm_model", "write_parquet"]


@functools.cache
def timm_model(name: str, dtype: torch.dtype = torch.float64, **kwargs) -> torch.nn.Module:
    """A timm model with random weights and 10 classes, seeded, in eval mode (cached per worker)."""
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10, **kwargs).to(dtype).eval()
    # timm zero-initializes some heads (e.g. MLP-Mixer): give every classifier random weights so that
    # logits, and hence introspective features, are not degenerate.
    for layer in find_classifiers(model):
        nn.init.normal_(layer.weight, std=layer.weight[0].numel() ** -0.5)
        if getattr(layer.module, "bias", None) is not None:
            nn.init.normal_(layer.module.bias, std=0.1)
    return model


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative error ||a - b|| / ||b|| (Frobenius)."""
    return ((a - b).norm() / b.norm().clamp_min(torch.finfo(b.dtype).tiny)).item()


CLASSES = ["red", "green", "blue"]


def make_images(n: int, seed: int, mode: str = "RGB", size: int = 16) -> tuple[list[Image.Image], list[int]]:
    """Noisy images whose dominant colour channel is the class: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(n):
        label = i % 3
        arr = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
        arr[..., label] += 150
        img = Image.fromarray(arr)
        images.append(img.convert(mode))
        labels.append(label)
    return images, labels


def write_parquet(folder: Path, split: str, images, labels=None, label_names=CLASSES) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    data = {"img": images}
    features = {"img": datasets.Image()}
    if labels is not None:
        data["label"] = labels
        features["label"] = datasets.ClassLabel(names=label_names)
    ds = datasets.Dataset.from_dict(data, features=datasets.Features(features))
    ds.to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))


def original_clipped_zoom(img: np.ndarray, factor: float) -> np.ndarray:
    """The CIFAR / ImageNet generators' clipped_zoom, one image ``(H, W, C)`` at a time (the tests' reference)."""
    from scipy.ndimage import zoom

    h = img.shape[0]
    ch = int(np.ceil(h / factor))
    top = (h - ch) // 2
    img = zoom(img[top : top + ch, top : top + ch], (factor, factor, 1), order=1)
    trim = (img.shape[0] - h) // 2
    return img[trim : trim + h, trim : trim + h]


def tiny_cifar_model(num_classes: int = 3) -> nn.Module:
    """timm's ``test_resnet`` with the CIFAR stem, seeded, in eval mode (32 px input: 16 px images are resized)."""
    from timm_introspect.nets.cifar import create_model

    torch.manual_seed(0)
    return create_model("test_resnet", num_classes, cifar_stem=True).eval()
