"""OOD detection metrics as pure functions of two score arrays, with the positive class explicit.

Scores are *outlier scores* (larger = more likely out-of-distribution), as every detector here and in
pytorch-ood returns them. Two conventions are in use and give different numbers for the same scores:

* ``positive="ood"`` (pytorch-ood, OpenOOD): OOD images are the positives, detected when their score is
  high. FPR at 95 % TPR is the share of ID images flagged when 95 % of the OOD ones are.
* ``positive="id"`` (ODIN, Chen et al. 2020 ``cal_metric``, the introspective-learning paper): ID images
  are the positives, accepted when their score is low. FPR at 95 % TPR is the share of OOD images
  accepted when 95 % of the ID ones are.

AUROC, detection error, AUPR-in (ID positive) and AUPR-out (OOD positive) are the same in both
conventions by definition; FPR at 95 % TPR and "the" AUPR of a convention (that of its positive class)
are not. Curves step through every distinct score, as scikit-learn's ``roc_curve`` and
``precision_recall_curve`` (``drop_intermediate=False``); an AUPR is the trapezoidal area under the
precision-recall curve (``sklearn.metrics.auc(recall, precision)``, as OpenOOD and pytorch-ood compute it).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from ...errors import InvalidArgumentError

__all__ = ["METRICS", "aupr", "auroc", "detection_error", "fpr_at_tpr", "ood_metrics", "roc_curve"]

Positive = Literal["id", "ood"]
ArrayLike = np.ndarray | torch.Tensor

#: The keys :func:`ood_metrics` returns, in table order.
METRICS = ("fpr95", "detection_error", "auroc", "aupr", "aupr_in", "aupr_out")


def _array(scores: ArrayLike, what: str) -> np.ndarray:
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu().double().numpy()
    try:
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise InvalidArgumentError(f"{what} scores must be an array of numbers ({err})") from err
    if not scores.size:
        raise InvalidArgumentError(f"no {what} scores: OOD metrics need at least one ID and one OOD score")
    if not np.isfinite(scores).all():
        raise InvalidArgumentError(f"{int((~np.isfinite(scores)).sum())} {what} scores are NaN or infinite")
    return scores


def _positives(id_scores: ArrayLike, ood_scores: ArrayLike, positive: Positive) -> tuple[np.ndarray, np.ndarray]:
    """(scores of the positives, scores of the negatives), oriented so that larger = more likely positive."""
    s_id, s_ood = _array(id_scores, "ID"), _array(ood_scores, "OOD")
    if positive == "ood":
        return s_ood, s_id
    if positive == "id":
        return -s_id, -s_ood
    raise InvalidArgumentError(f"positive must be 'id' or 'ood', got {positive!r}")


def _counts(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives at each distinct threshold, from the highest score down (ties enter together)."""
    scores = np.concatenate([pos, neg])
    is_pos = np.concatenate([np.ones(len(pos), bool), np.zeros(len(neg), bool)])
    order = np.argsort(-scores, kind="mergesort")
    scores, is_pos = scores[order], is_pos[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]  # last index of each group of equal scores
    tps = np.cumsum(is_pos)[last]
    return tps, last + 1 - tps


def roc_curve(id_scores: ArrayLike, ood_scores: ArrayLike, positive: Positive = "ood") -> tuple[np.ndarray, np.ndarray]:
    """``(fpr, tpr)`` from ``(0, 0)`` to ``(1, 1)``, one point per distinct score."""
    pos, neg = _positives(id_scores, ood_scores, positive)
    tps, fps = _counts(pos, neg)
    return np.r_[0.0, fps / len(neg)], np.r_[0.0, tps / len(pos)]


def fpr_at_tpr(id_scores: ArrayLike, ood_scores: ArrayLike, positive: Positive = "ood", tpr: float = 0.95) -> float:
    """The false positive rate at the first threshold (from the top) whose true positive rate is >= ``tpr``."""
    if isinstance(tpr, bool) or not isinstance(tpr, (int, float)) or not 0 < tpr <= 1:
        raise InvalidArgumentError(f"tpr must be a rate in (0, 1], got {tpr!r}")
    fpr_curve, tpr_curve = roc_curve(id_scores, ood_scores, positive)
    return float(fpr_curve[np.searchsorted(tpr_curve, tpr)])


def detection_error(id_scores: ArrayLike, ood_scores: ArrayLike, positive: Positive = "ood") -> float:
    """``min over thresholds of 0.5 (1 - TPR + FPR)``: the error of the best threshold with equal class priors."""
    fpr_curve, tpr_curve = roc_curve(id_scores, ood_scores, positive)
    return float(np.min(0.5 * (1 - tpr_curve + fpr_curve)))


def auroc(id_scores: ArrayLike, ood_scores: ArrayLike, positive: Positive = "ood") -> float:
    """Area under the ROC curve (trapezoidal, so ties count one half)."""
    fpr_curve, tpr_curve = roc_curve(id_scores, ood_scores, positive)
    return float(np.trapezoid(tpr_curve, fpr_curve))


def aupr(id_scores: ArrayLike, ood_scores: ArrayLike, positive: Positive = "ood") -> float:
    """Area under the precision-recall curve of the ``positive`` class (AUPR-in for ``"id"``, AUPR-out for
    ``"ood"``): trapezoidal, over the points of ``sklearn.metrics.precision_recall_curve``."""
    pos, neg = _positives(id_scores, ood_scores, positive)
    tps, fps = _counts(pos, neg)
    # from the highest threshold down: recall rises to 1; the curve starts at (recall 0, precision 1)
    precision, recall = np.r_[1.0, tps / (tps + fps)], np.r_[0.0, tps / len(pos)]
    return float(np.trapezoid(precision, recall))


def ood_metrics(id_scores: ArrayLike, ood_scores: ArrayLike, positive: Positive = "ood") -> dict[str, float]:
    """All metrics of one detector on one ID / OOD pair, in one convention.

    Args:
        id_scores, ood_scores: outlier scores (larger = more OOD) of the in-distribution and OOD images.
        positive: the positive class, ``"ood"`` (pytorch-ood, OpenOOD) or ``"id"`` (the paper, Chen et al.).

    Returns:
        ``fpr95`` (FPR at 95 % TPR of the positive class), ``detection_error``, ``auroc``, ``aupr`` (of the
        positive class), ``aupr_in`` and ``aupr_out``; all in [0, 1].
    """
    _positives(id_scores, ood_scores, positive)  # the arguments checked once, before any metric
    pr_in, pr_out = aupr(id_scores, ood_scores, "id"), aupr(id_scores, ood_scores, "ood")
    return {
        "fpr95": fpr_at_tpr(id_scores, ood_scores, positive),
        "detection_error": detection_error(id_scores, ood_scores, positive),
        "auroc": auroc(id_scores, ood_scores, positive),
        "aupr": pr_in if positive == "id" else pr_out,
        "aupr_in": pr_in,
        "aupr_out": pr_out,
    }
