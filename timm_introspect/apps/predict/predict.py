"""Predictions for images: f's, f+TS's and H's top classes and an OOD score, from one introspective pass.

>>> head = IntrospectiveHead.from_pretrained("runs/main/introspective")                # doctest: +SKIP
>>> [p.h for p in predict_images(head, ["cat.png", "ship.jpg"])]                       # doctest: +SKIP
[[('cat', 0.91), ('dog', 0.05), ('frog', 0.01)], [('ship', 0.83), ...]]

The probabilities are ``softmax(f(x))``, ``softmax(f(x) / T)`` and ``softmax(H(r_x))`` of the head's own pass
(:meth:`IntrospectiveHead.forward`); the OOD score is the energy of H, ``-logsumexp(H(r_x))`` (larger = more out
of distribution; why this detector: :mod:`timm_introspect.training.calibrate`), flagged against the threshold
that keeps 95 % of the model's own held-out images (:func:`calibration_for`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...errors import InvalidArgumentError
from ...model.head import IntrospectiveHead
from ...training.calibrate import OOD_DETECTOR, Calibration, energy_score
from .calibration import calibration_for
from .images import ImageInput, image_batch

__all__ = ["ImagePrediction", "predict_images"]

TopK = list[tuple[str, float]]


@dataclass
class ImagePrediction:
    """What the model says about one image.

    Attributes:
        source: the image's path (as given), or its index in the inputs for an image given in memory.
        f, f_ts, h: the top-k ``(class name, probability)`` pairs of f, of f with temperature scaling (``None``
            when the model has no temperature) and of H, most probable first.
        ood_score: the energy of H (larger = more out of distribution).
        ood_threshold: the score that keeps 95 % of the model's held-out images (``None`` when unknown).
        is_ood: ``ood_score > ood_threshold`` (``None`` without a threshold).
        temperature: f's temperature T (``None`` when unknown).
        ood_detector: the OOD score's detector (``"energy_h"``).
    """

    source: str | int
    f: TopK
    f_ts: TopK | None
    h: TopK
    ood_score: float
    ood_threshold: float | None
    is_ood: bool | None
    temperature: float | None = None
    ood_detector: str = "energy_h"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the top-k lists as ``[{"class": name, "probability": p}, ...]``."""
        def pairs(top: TopK | None) -> list[dict[str, Any]] | None:
            return None if top is None else [{"class": c, "probability": p} for c, p in top]

        return {"source": self.source, "f": pairs(self.f), "f_ts": pairs(self.f_ts), "h": pairs(self.h),
                "ood_score": self.ood_score, "ood_threshold": self.ood_threshold, "is_ood": self.is_ood,
                "temperature": self.temperature, "ood_detector": self.ood_detector}

    def to_row(self) -> dict[str, Any]:
        """One flat row (CSV): ``f_1``, ``f_1_p``, ... per rank, then the OOD columns; empty cells for ``None``."""
        row: dict[str, Any] = {"source": self.source}
        for who, top in (("f", self.f), ("f_ts", self.f_ts), ("h", self.h)):
            for rank, (name, p) in enumerate(top or [(None, None)] * len(self.f), start=1):
                row[f"{who}_{rank}"], row[f"{who}_{rank}_p"] = name, p
        row.update(ood_score=self.ood_score, ood_threshold=self.ood_threshold, is_ood=self.is_ood,
                   temperature=self.temperature, ood_detector=self.ood_detector)
        return {k: "" if v is None else v for k, v in row.items()}


def _top(probs: torch.Tensor, k: int, names: Sequence[str]) -> list[TopK]:
    values, indices = probs.topk(k, dim=-1)
    return [[(names[int(i)], float(v)) for v, i in zip(vs, ix, strict=True)] for vs, ix in zip(values, indices,
                                                                                                 strict=True)]


@torch.no_grad()
def predict_images(model: IntrospectiveHead, images: Sequence[ImageInput], top_k: int = 3,
                   calibration: Calibration | None = None, batch_size: int = 64) -> list[ImagePrediction]:
    """f's, f+TS's and H's top-k classes and the OOD score of each image.

    Args:
        model: an introspective model (:meth:`IntrospectiveHead.from_pretrained`).
        images: file paths, PIL images or numpy arrays (``(H, W)``, ``(H, W, 3)``, ``(H, W, 4)``; uint8, or floats
            in [0, 1]), of any mode and size: converted to the model's channels and preprocessed with its own
            evaluation transform. A file that is no image, or one over PIL's decompression-bomb limit, raises
            :class:`~timm_introspect.errors.DataError` naming it, before the model runs.
        top_k: classes per model (at most the number of classes).
        calibration: f's temperature and the OOD threshold (default :func:`calibration_for`: stored in the model,
            or fitted once on its held-out images).
        batch_size: images per introspective pass (all of them are decoded first).

    Returns:
        One :class:`ImagePrediction` per image, in order.
    """
    if not isinstance(model, IntrospectiveHead):
        raise InvalidArgumentError(f"predict_images takes an IntrospectiveHead, got {type(model).__name__}: load one "
                                   "with IntrospectiveHead.from_pretrained")
    if isinstance(images, (str, Path)) or not isinstance(images, Sequence):
        raise InvalidArgumentError("images must be a list of paths, PIL images or arrays (for one image: [image])")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k:
        raise InvalidArgumentError(f"top_k must be a positive integer, got {top_k!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")
    top_k = min(top_k, model.num_classes)
    sources: list[str | int] = [str(im) if isinstance(im, (str, Path)) else i for i, im in enumerate(images)]
    names = [repr(s) if isinstance(s, str) else f"#{s}" for s in sources]
    x = image_batch(model.model, images, names) if images else None  # every input checked before the model runs
    calibration = calibration if calibration is not None else calibration_for(model)
    labels = model.label_names or [str(i) for i in range(model.num_classes)]
    model.eval()
    out: list[ImagePrediction] = []
    for start in range(0, len(sources), batch_size):
        result = model(x[start : start + batch_size].to(model.device))  # the one introspective pass: f, r_x, H
        f_logits, h_logits = result.base_logits.double(), result.logits.double()
        f = _top(f_logits.softmax(-1), top_k, labels)
        t = calibration.temperature
        f_ts = _top((f_logits / t).softmax(-1), top_k, labels) if t is not None else [None] * len(f)
        h = _top(h_logits.softmax(-1), top_k, labels)
        scores = energy_score(h_logits).tolist()
        thr = calibration.ood_threshold if calibration.ood_detector == OOD_DETECTOR else None  # another score's
        for i, score in enumerate(scores):
            out.append(ImagePrediction(source=sources[start + i], f=f[i], f_ts=f_ts[i], h=h[i], ood_score=score,
                                       ood_threshold=thr, is_ood=None if thr is None else score > thr,
                                       temperature=t, ood_detector=OOD_DETECTOR))
    return out
