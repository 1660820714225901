"""H's training images with AugMix copies: ``train_head(..., augmix=N)``.

An H trained on r_x of f's training images *and* of AugMix copies of them sees inputs where f errs or
hesitates, and is more accurate and better calibrated under shift (``benchmarks/fidelity.py``, variant
"augmented"). The copies use timm's AugMix operations restricted to the AugMix paper's list, none of them a
CIFAR-10-C corruption (:mod:`timm_introspect.data.augmix`).

:class:`AugMixSource` is a feature-cache source (:class:`~timm_introspect.training.sources.FeatureSource`):
the split's images, then ``copies`` blocks of one AugMix copy of each (every block in the split's order). Each
image's augmentation is seeded by its own pixels, the run's seed and the copy number
(:func:`~timm_introspect.data.augmix.augmix_seed`), so it is the same in any batch, worker process or resumed
extraction; the copies then get f's evaluation preprocessing, as the originals do.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from PIL import Image
from torch.utils.data import ConcatDataset, DataLoader, Subset

from ..data.augmix import AUGMIX_OPS, augmix_image, augmix_seed
from ..data.images import LabeledImages, make_transform
from ..errors import InvalidArgumentError
from .sources import ImageSource

__all__ = ["SEEDED_BY", "AugMixSource", "AugMixTransform", "training_record"]


class AugMixTransform:
    """One AugMix copy of a PIL image (seeded by its pixels, ``seed`` and ``copy``), then ``after`` (f's
    evaluation preprocessing). A plain object, so that ``DataLoader`` workers can receive it."""

    def __init__(self, after: Any, seed: int, copy: int, magnitude: int = 3, width: int = 3) -> None:
        self.after, self.seed, self.copy, self.magnitude, self.width = after, seed, copy, magnitude, width

    def __call__(self, image: Image.Image) -> torch.Tensor:
        mixed = augmix_image(image, augmix_seed(image, self.seed, self.copy), self.magnitude, self.width)
        return self.after(mixed)

    def __repr__(self) -> str:
        return (f"AugMixTransform(seed={self.seed}, copy={self.copy}, magnitude={self.magnitude}, "
                f"width={self.width}, after={self.after!r})")


class AugMixSource:
    """A split's images, then ``copies`` AugMix copies of each, at f's evaluation preprocessing.

    Args:
        base: the split (an :class:`~timm_introspect.training.sources.ImageSource`: its model, batch size and
            workers are used for the copies too).
        copies: AugMix copies of every image (at least 1).
        magnitude: the operations' strength (timm's 0-10 scale).
        seed: the run's seed, combined with each image's pixels and the copy number.
        width: AugMix's chains mixed per copy.
    """

    def __init__(self, base: ImageSource, copies: int = 1, magnitude: int = 3, seed: int = 0, width: int = 3) -> None:
        if not isinstance(base, ImageSource):
            raise InvalidArgumentError(f"AugMix copies are made of a LabeledImages split's images; got "
                                       f"{type(base).__name__}: add the copies to your own loader instead")
        for name, value, least in (("copies", copies, 1), ("magnitude", magnitude, 0), ("width", width, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise InvalidArgumentError(f"AugMix {name} must be an integer of at least {least}, got {value!r}")
        self.base, self.copies, self.magnitude, self.seed, self.width = base, copies, magnitude, int(seed), width

    def key(self) -> str:
        return json.dumps([self.base.key(), "augmix", self.copies, self.magnitude, self.width, self.seed,
                           list(AUGMIX_OPS)])

    def __len__(self) -> int:
        return len(self.base) * (1 + self.copies)

    def labels(self) -> torch.Tensor:
        """The split's labels, once for the originals and once per copy block."""
        return self.base.labels().repeat(1 + self.copies)

    def batches(self, start: int = 0) -> DataLoader:
        """``(images, labels)`` batches from row ``start`` on (in the originals or in any copy block)."""
        originals = self.base.batches(0)  # the split at f's evaluation preprocessing (make_loader)
        images, model = self.base.images, self.base.model
        channels = model.pretrained_cfg.get("input_size", (3,))[0]
        after = make_transform(model, train=False)
        blocks = [originals.dataset] + [
            images.torch_dataset(AugMixTransform(after, self.seed, c, self.magnitude, self.width), channels=channels)
            for c in range(1, self.copies + 1)]
        rows = ConcatDataset(blocks)
        if start:
            rows = Subset(rows, range(start, len(rows)))
        return DataLoader(rows, batch_size=self.base.batch_size, shuffle=False, num_workers=self.base.workers,
                          collate_fn=originals.collate_fn)

    def describe(self) -> dict[str, Any]:
        return {**self.base.describe(), "augmix": {"copies": self.copies, "magnitude": self.magnitude,
                                                   "width": self.width, "seed": self.seed}}

    def recipe(self) -> dict[str, Any]:
        """What the copies are, for the saved model (``h_training["augmix"]``, :func:`training_record`): their
        number, timm's operations they draw from, the magnitude, the width and how each copy is seeded."""
        return {"copies": self.copies, "operations": list(AUGMIX_OPS), "magnitude": self.magnitude,
                "width": self.width, "seed": self.seed, "seeded_by": SEEDED_BY}


#: how each AugMix copy is seeded (:func:`~timm_introspect.data.augmix.augmix_seed`), as the saved record says it
SEEDED_BY = "each image's pixels, the seed and the copy number"


def training_record(data: Any, rows: int) -> dict[str, Any]:
    """What H trained on, as a saved model records it (``IntrospectiveHead.h_training``, the model card's
    "H trained on" line): ``{"images", "rows", "augmix"}``.

    ``images``: the split's images (``None`` for a caller's own loader, whose images are unknown here); ``rows``: the
    rows of r_x H trained on (the images and their AugMix copies); ``augmix``: :meth:`AugMixSource.recipe`, or
    ``{"copies": 0}`` without copies.
    """
    if isinstance(data, AugMixSource):
        return {"images": len(data.base), "rows": int(rows), "augmix": data.recipe()}
    images = len(data) if isinstance(data, (ImageSource, LabeledImages)) else None
    return {"images": images, "rows": int(rows), "augmix": {"copies": 0}}
