"""Where the images H is trained on come from: a ``datasets`` split, or any iterable of ``(images, labels)``.

The feature cache (:mod:`timm_introspect.training.cache`) needs three things of its data: a key saying what
the data is (so a cached entry is reused only for the same images), its size (the cache file is laid out in
advance), and its batches from any row on (an interrupted extraction resumes there). Two sources give them:

* :class:`ImageSource`: a :class:`~timm_introspect.data.images.LabeledImages` split, preprocessed for f; its
  key comes from the dataset's own fingerprint, and a resume decodes only the rows not yet written;
* :class:`LoaderSource`: whatever a user has: a ``DataLoader`` (``ImageFolder``, ``timm.data.create_loader``,
  a Hub dataset with a transform, a ``TensorDataset``), or a list of batches. Its key is a sha256 of every
  image and label it yields, computed in one pass without f; the loader must give the same images in the
  same order every time (``shuffle=False``, test-time transforms): H's training shuffles the cached features.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader, SequentialSampler, Subset

from ..data.images import LabeledImages, batch_images, batch_labels, make_loader, make_transform
from ..errors import DataError

__all__ = ["FeatureSource", "ImageSource", "LoaderSource", "PairsLoader", "as_source", "update_hash"]


class FeatureSource(Protocol):
    """What the feature cache reads: a key, a size, and ``(images, labels)`` batches from any row on."""

    def key(self) -> str: ...

    def __len__(self) -> int: ...

    def batches(self, start: int = 0) -> Iterable[tuple[torch.Tensor, torch.Tensor]]: ...

    def describe(self) -> dict[str, Any]: ...


class ImageSource:
    """A ``datasets`` split at f's evaluation preprocessing (resize, crop, normalization)."""

    def __init__(self, images: LabeledImages, model: nn.Module, batch_size: int = 256, workers: int = 0) -> None:
        self.images, self.model, self.batch_size, self.workers = images, model, batch_size, workers

    def key(self) -> str:
        im = self.images
        return json.dumps([im.source, im.split, im.image_column, im.label_column, im.fingerprint(),
                           repr(make_transform(self.model, train=False))])

    def __len__(self) -> int:
        return len(self.images)

    def labels(self) -> torch.Tensor:
        return self.images.labels()

    def batches(self, start: int = 0) -> DataLoader:
        im = self.images
        rest = im if start == 0 else LabeledImages(im.dataset.select(range(start, len(im))), im.image_column,
                                                   im.label_column, im.label_names, im.source, im.split, im.classes)
        return make_loader(rest, self.model, False, self.batch_size, self.workers)

    def describe(self) -> dict[str, Any]:
        return {"source": self.images.source, "split": self.images.split}


def _pairs(data: Iterable[Any]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for batch in data:
        x, y = batch_images(batch), batch_labels(batch)
        if y is None:
            raise DataError("training H needs labels: yield (images, labels) batches, or dicts with 'label' or "
                            "'labels' (to fit only M and the scale, use IntrospectiveHead.fit_statistics)")
        if len(y) != len(x):
            raise DataError(f"a batch has {len(x)} images and {len(y)} labels")
        yield x, y.long()


class LoaderSource:
    """Any re-iterable of ``(images, labels)`` batches (or dicts with ``pixel_values`` / ``image`` and ``label``).

    Images must already be preprocessed for f (normalized float tensors). Its :meth:`key` reads the data
    once (no f); a ``DataLoader`` over a map-style dataset with a sequential sampler is also sharded across
    processes and resumed without re-reading the rows already cached.
    """

    def __init__(self, data: Iterable[Any]) -> None:
        if iter(data) is data:
            raise DataError("training H reads the data more than once (its key, M, then r_x): pass a re-iterable "
                            "such as a DataLoader or a list of batches, not a generator or iterator")
        self.data = data
        self._key: str | None = None
        self._labels = torch.zeros(0, dtype=torch.long)

    def _scan(self) -> None:
        sha = hashlib.sha256()
        labels = []
        for x, y in _pairs(self.data):
            update_hash(sha, x, y)
            labels.append(y.cpu())
        if not labels or sum(len(y) for y in labels) == 0:
            raise DataError("the data yielded no images: there is nothing to introspect")
        self._key, self._labels = sha.hexdigest(), torch.cat(labels)

    def key(self) -> str:
        if self._key is None:
            self._scan()
        return self._key

    def __len__(self) -> int:
        return len(self.labels())

    def labels(self) -> torch.Tensor:
        """Every label, in the order the data yields them (read once, with the key)."""
        if self._key is None:
            self._scan()
        return self._labels

    def batches(self, start: int = 0) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        loader = self.data
        if isinstance(loader, DataLoader) and isinstance(loader.sampler, SequentialSampler):
            if start == 0:
                return PairsLoader(loader)
            rest = Subset(loader.dataset, range(start, len(loader.dataset)))
            return PairsLoader(DataLoader(rest, batch_size=loader.batch_size, num_workers=loader.num_workers,
                                     collate_fn=loader.collate_fn, pin_memory=loader.pin_memory))
        return _skip(_pairs(loader), start)

    def describe(self) -> dict[str, Any]:
        return {"source": type(self.data).__name__, "split": None}


class PairsLoader:
    """A ``DataLoader`` whose batches come out as ``(images, labels)`` (still a ``DataLoader`` to shard)."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return _pairs(self.loader)

    def __len__(self) -> int:
        return len(self.loader)


def _skip(pairs: Iterator[tuple[torch.Tensor, torch.Tensor]], start: int) -> Iterator[tuple[torch.Tensor, ...]]:
    seen = 0
    for x, y in pairs:
        if seen + len(y) <= start:
            seen += len(y)
            continue
        cut = max(0, start - seen)
        seen += len(y)
        yield x[cut:], y[cut:]


def update_hash(sha: Any, x: torch.Tensor, y: torch.Tensor) -> None:
    """Fold a batch's images and labels (values, dtype, shape) into ``sha``."""
    for t in (x, y):
        t = t.detach().cpu().contiguous()
        sha.update(f"{t.dtype}{tuple(t.shape[1:])}".encode())
        sha.update(t.view(torch.uint8).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes())


def as_source(data: Any, model: nn.Module, batch_size: int = 256, workers: int = 0) -> FeatureSource:
    """``data`` as a :class:`FeatureSource`: a ``LabeledImages`` split, a source, or any iterable of batches."""
    if isinstance(data, LabeledImages):
        return ImageSource(data, model, batch_size, workers)
    if hasattr(data, "key") and hasattr(data, "batches"):
        return data
    return LoaderSource(data)
