"""The images of an active-learning run: the unlabeled pool and the test sets (clean, Gaussian noise).

:class:`ActiveData` holds uint8 arrays ``(n, H, W, 3)`` and labels. :func:`corrupted_set` makes a CIFAR-10-C set
from test images with this package's generator (:mod:`timm_introspect.data.cifar10c`, the ``[cifar10c]`` extra),
seeded per corruption and severity as :mod:`timm_introspect.jobs.robustness` does. :func:`load_active_data` builds the
whole thing from a ``datasets`` source (a Hub id or a local Parquet folder).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import safetensors.numpy

from ...errors import DataError, InvalidArgumentError
from ...io.checkpoint import give_default_mode, load_tensors

__all__ = ["ActiveData", "corrupted_set", "load_active_data"]


@dataclass
class ActiveData:
    """The pool (what strategies query, with the labels an oracle would give) and the labeled test sets.

    Args:
        pool_images, pool_labels: uint8 ``(n, H, W, 3)`` and ``(n,)``.
        test_sets: name -> ``(images, labels)``, e.g. ``{"clean": ..., "gaussian_noise": ...}``.
        num_classes: N (default: 1 + the largest label).
        source: where the images came from (recorded in the results).
    """

    pool_images: np.ndarray
    pool_labels: np.ndarray
    test_sets: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    num_classes: int | None = None
    source: str = ""

    def __post_init__(self) -> None:
        arrays = {"pool": (self.pool_images, self.pool_labels), **self.test_sets}
        for name, (images, labels) in arrays.items():
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
                raise DataError(f"{name}: expected uint8 images (n, H, W, 3), got {images.dtype} {images.shape}")
            if len(images) != len(labels):
                raise DataError(f"{name}: {len(images)} images but {len(labels)} labels")
        labels = np.concatenate([np.asarray(y) for _, y in arrays.values()])
        if labels.size and labels.min() < 0:
            raise DataError("labels must be class indices 0 .. N-1; found negative ones")
        self.num_classes = int(self.num_classes or labels.max() + 1)
        if labels.size and labels.max() >= self.num_classes:
            raise DataError(f"labels up to {labels.max()} for {self.num_classes} classes")

    def fingerprint(self) -> str:
        """sha256 of every image and label (a resumed run must see the same data)."""
        digest = hashlib.sha256()
        for name, (images, labels) in sorted({"pool": (self.pool_images, self.pool_labels), **self.test_sets}.items()):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(images).tobytes())
            digest.update(np.asarray(labels, dtype=np.int64).tobytes())
        return digest.hexdigest()

    def save(self, path: str | Path) -> None:
        """One safetensors file (what the benchmark's worker processes read instead of decoding again)."""
        tensors = {"pool:images": self.pool_images, "pool:labels": np.asarray(self.pool_labels, dtype=np.int64)}
        for name, (images, labels) in self.test_sets.items():
            tensors[f"test:{name}:images"] = images
            tensors[f"test:{name}:labels"] = np.asarray(labels, dtype=np.int64)
        safetensors.numpy.save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path),
                                    metadata={"num_classes": str(self.num_classes), "source": self.source})
        give_default_mode(path)  # safetensors writes 0600

    @classmethod
    def load(cls, path: str | Path) -> ActiveData:
        tensors = {k: v.numpy() for k, v in load_tensors(path).items()}
        with safetensors.safe_open(str(path), "np") as f:
            meta = f.metadata() or {}
        names = sorted({k.split(":")[1] for k in tensors if k.startswith("test:")})
        sets = {n: (tensors[f"test:{n}:images"], tensors[f"test:{n}:labels"]) for n in names}
        return cls(tensors["pool:images"], tensors["pool:labels"], sets, int(meta.get("num_classes", 0)) or None,
                   meta.get("source", ""))


def corrupted_set(images: np.ndarray, labels: np.ndarray, corruption: str = "gaussian_noise",
                  severities: Sequence[int] = (1, 2, 3, 4, 5), seed: int = 0,
                  spread: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A CIFAR-10-C set made from test images.

    ``spread=False``: every image at every severity (``len(severities) * n`` images, as the release);
    ``spread=True``: every image once, the severities split evenly over a seeded permutation (``n`` images: an
    unbiased estimate of the same mean accuracy at a fifth of the cost). Each severity's noise comes from a
    generator seeded by ``(seed, corruption, severity)``.
    """
    from ...data.cifar10c import CORRUPTIONS, corrupt

    if corruption not in CORRUPTIONS:
        raise InvalidArgumentError(f"unknown corruption {corruption!r}; choose from {', '.join(CORRUPTIONS)}")
    index = CORRUPTIONS.index(corruption)
    labels = np.asarray(labels)
    if not spread:
        parts = [corrupt(images, corruption, s, np.random.default_rng([seed, index, s])) for s in severities]
        return np.concatenate(parts), np.tile(labels, len(severities))
    out = np.empty_like(images)
    order = np.random.default_rng([seed, index]).permutation(len(images))
    for s, rows in zip(severities, np.array_split(order, len(severities)), strict=True):
        rows = np.sort(rows)
        if len(rows):
            out[rows] = corrupt(images[rows], corruption, s, np.random.default_rng([seed, index, s]))
    return out, labels.copy()


def load_active_data(source: str = "uoft-cs/cifar10", pool: int | None = None, test: int | None = None,
                     noise: str = "spread", data_seed: int = 0, image_column: str | None = None,
                     label_column: str | None = None) -> ActiveData:
    """Pool = a seeded subset of ``pool`` training images (all: ``None``); test sets = a seeded ``test`` of the
    test split, clean and with CIFAR-10-C Gaussian noise (``noise``: ``"all"`` 5 severities of every image,
    ``"spread"`` one severity per image, ``"none"``)."""
    from ...data.images import load_images

    if noise not in ("all", "spread", "none"):
        raise InvalidArgumentError(f"noise must be 'all', 'spread' or 'none', got {noise!r}")
    train = load_images(source, "train", image_column, label_column, limit=pool, seed=data_seed)
    test_split = load_images(source, "test", image_column, label_column, limit=test, seed=data_seed)
    pool_images, pool_labels = train.arrays()
    test_images, test_labels = test_split.arrays()
    sets = {"clean": (test_images, test_labels)}
    if noise != "none":
        sets["gaussian_noise"] = corrupted_set(test_images, test_labels, seed=data_seed, spread=noise == "spread")
    return ActiveData(pool_images, pool_labels, sets, train.num_classes, f"{source} (pool {len(pool_labels)}, "
                      f"test {len(test_labels)}, data seed {data_seed}, noise {noise})")
