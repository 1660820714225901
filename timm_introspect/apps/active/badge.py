"""BADGE's two parts (Ash et al. 2020): gradient embeddings, and k-means++ seeding over them.

The gradient embedding of an image is the gradient of the cross-entropy loss w.r.t. the last linear layer's
weight, with the model's own prediction as the label: ``(softmax(z) - e_yhat) h^T``. That is r_x for the
``ce`` loss with the one-hot target of the predicted class, so it comes from the project's closed form
(:func:`~timm_introspect.core.losses.loss_delta` and :func:`~timm_introspect.core.features.linear_weight_grad`): one
forward pass, no backward. (BADGE's code writes ``(1[c = yhat] - p_c) h``, the negative; k-means++ depends
only on distances, so the two select the same images.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ...core.features import linear_weight_grad
from ...core.losses import loss_delta
from ...errors import InvalidArgumentError

__all__ = ["gradient_embeddings", "kmeans_pp"]


def gradient_embeddings(logits: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """``(n, N * d)``: per image, ``d CE(z, argmax z) / dW`` of a linear layer ``z = W h + b``, flattened.

    Args:
        logits: ``(n, N)`` the layer's output z.
        features: ``(n, d)`` its input h.
    """
    target = F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
    return linear_weight_grad(loss_delta("ce", logits, target), features).flatten(1)


@torch.no_grad()
def kmeans_pp(points: torch.Tensor, k: int, seed: int | Sequence[int] | np.random.Generator = 0) -> np.ndarray:
    """k-means++ seeding: ``k`` distinct row indices of ``points`` ``(n, D)``.

    As BADGE's ``init_centers``: the first center is the point of largest norm; each next one is drawn with
    probability proportional to its squared distance to the nearest center chosen so far (so chosen points,
    at distance 0, are never drawn again). If every remaining point coincides with a center, the next one is
    drawn uniformly among the points not chosen.
    """
    n = points.shape[0]
    if not 0 < k <= n:
        raise InvalidArgumentError(f"k-means++ cannot pick {k} of {n} points: choose 1 to {n}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    x = points.float()
    norms = (x * x).sum(1)

    def sq_dist(i: int) -> torch.Tensor:
        return (norms + norms[i] - 2 * (x @ x[i])).clamp_min(0)

    chosen = [int(norms.argmax())]
    nearest = sq_dist(chosen[0])
    taken = np.zeros(n, dtype=bool)
    taken[chosen[0]] = True
    for _ in range(k - 1):
        weights = nearest.double().cpu().numpy()
        weights[taken] = 0.0
        total = weights.sum()
        if total > 0:
            cumulative = np.cumsum(weights)
            pick = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
            pick = min(pick, n - 1)
        if total <= 0 or taken[pick]:  # only duplicates of centers left (or a rounding edge): uniform
            pick = int(rng.choice(np.flatnonzero(~taken)))
        chosen.append(pick)
        taken[pick] = True
        nearest = torch.minimum(nearest, sq_dist(pick))
    return np.asarray(chosen, dtype=np.int64)
