"""Fitting pytorch-ood's feature detectors with clear errors: what the fit data must hold, checked first.

pytorch-ood's :class:`~pytorch_ood.detector.Mahalanobis` asserts (a bare ``AssertionError``) when a class is
missing from its fit data and its :class:`~pytorch_ood.detector.KNN` raises a plain ``ValueError`` or crashes on
an empty fit. The detectors here (on f and on H) derive from :class:`CheckedMahalanobis` and :class:`CheckedKNN`,
which refuse such fits with a :class:`~timm_introspect.DataError` saying what to pass instead.
"""

from __future__ import annotations

from typing import Any

import torch
from pytorch_ood.detector import KNN, Mahalanobis

from ...errors import DataError

__all__ = ["CheckedKNN", "CheckedMahalanobis", "known_labels"]


def known_labels(labels: Any, detector: str, count: int | None = None) -> torch.Tensor:
    """The mask of in-distribution labels (>= 0) of a fit, refusing a fit with none (or with labels of another
    number of rows than ``count`` features)."""
    if labels is None:
        raise DataError(f"{detector} is fitted on labeled images: pass (images, labels) batches of the training data")
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or (count is not None and len(labels) != count):
        raise DataError(f"{detector}: {tuple(labels.shape)} labels for {count} feature rows")
    known = labels >= 0
    if not bool(known.any()):
        raise DataError(f"{detector} was fitted on no in-distribution images ({len(labels)} given, none with a label "
                        ">= 0): fit it on the training data")
    return known


class _EmptyFitRefused:
    """``fit(loader)`` of a pytorch-ood detector, its error on a loader without in-distribution images reworded."""

    def fit(self, data_loader: Any) -> Any:
        try:
            return super().fit(data_loader)
        except (ValueError, RuntimeError) as err:
            if "No ID" in str(err) or "non-empty" in str(err):
                raise DataError(f"{type(self).__name__} was fitted on no in-distribution images ({err}): pass a "
                                "loader of the training data with labels >= 0") from err
            raise


class CheckedMahalanobis(_EmptyFitRefused, Mahalanobis):
    """Mahalanobis whose fit needs images of every class: ``num_classes`` (set by the subclass, the model's) of
    them, or every class up to the largest label seen when it is ``None``."""

    num_classes: int | None = None

    def fit_features(self, z: torch.Tensor, y: torch.Tensor) -> CheckedMahalanobis:
        detector = getattr(self, "name", "") or type(self).__name__
        known = known_labels(y, detector, len(z))
        z, y = z[known.to(z.device)], torch.as_tensor(y)[known]
        n = self.num_classes if self.num_classes is not None else int(y.max()) + 1
        if bool((y >= n).any()):
            raise DataError(f"{detector}: labels up to {int(y.max())} for a model of {n} classes")
        missing = sorted(set(range(n)) - set(y.unique().tolist()))
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
            raise DataError(f"{detector} estimates a mean per class, and its fit data has no image of {len(missing)} "
                            f"of the {n} classes ({shown}): fit it on the whole training set (images of every class)")
        return super().fit_features(z, y)


class CheckedKNN(_EmptyFitRefused, KNN):
    """KNN whose fit needs at least ``k`` in-distribution images."""

    def fit_features(self, z: torch.Tensor, labels: torch.Tensor) -> CheckedKNN:
        detector = getattr(self, "name", "") or type(self).__name__
        known = known_labels(labels, detector, len(z))
        if int(known.sum()) < self.k:
            raise DataError(f"{detector} scores by the distance to the k-th nearest training image, k={self.k}, and "
                            f"was fitted on {int(known.sum())} in-distribution images: fit on more, or pass a lower k")
        return super().fit_features(z, labels)
