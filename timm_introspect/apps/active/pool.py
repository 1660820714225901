"""Which pool images are labeled: the bookkeeping of an active-learning run.

The pool is indexed ``0 .. size - 1`` (the rows of the pool's images). :class:`LabeledPool` keeps the labeled
indices in the order they were acquired, and refuses an index twice, out of range, or already labeled, so a
strategy's query can never relabel an image or pick one outside the pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ...errors import InvalidArgumentError

__all__ = ["LabeledPool"]


class LabeledPool:
    """The labeled / unlabeled split of a pool of ``size`` images.

    Args:
        size: number of images in the pool.
        labeled: indices labeled from the start (in acquisition order).
    """

    def __init__(self, size: int, labeled: Sequence[int] = ()) -> None:
        if int(size) <= 0:
            raise InvalidArgumentError(f"the pool needs at least one image, got size {size}")
        self.size = int(size)
        self._mask = np.zeros(self.size, dtype=bool)
        self._order: list[int] = []
        if len(labeled):
            self.add(labeled)

    @classmethod
    def random(cls, size: int, n: int, seed: int | Sequence[int] = 0) -> LabeledPool:
        """A pool with ``n`` labeled images drawn uniformly without replacement (seeded)."""
        if not 0 < n <= size:
            raise InvalidArgumentError(f"cannot label {n} random images of a pool of {size}: choose 1 to {size}")
        return cls(size, np.random.default_rng(seed).choice(size, n, replace=False))

    def __len__(self) -> int:
        return len(self._order)

    @property
    def labeled(self) -> np.ndarray:
        """Labeled indices, in the order they were acquired."""
        return np.asarray(self._order, dtype=np.int64)

    @property
    def unlabeled(self) -> np.ndarray:
        """Unlabeled indices, ascending."""
        return np.flatnonzero(~self._mask)

    def is_labeled(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        return self._mask[np.asarray(indices, dtype=np.int64)]

    def add(self, indices: Sequence[int] | np.ndarray) -> None:
        """Label ``indices``: distinct, in ``[0, size)``, not labeled yet; all or nothing."""
        idx = np.asarray(indices)
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise InvalidArgumentError(f"pool indices must be a 1-d sequence of integers, got {idx.dtype} {idx.shape}")
        idx = idx.astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.size):
            raise InvalidArgumentError(f"pool indices must be in [0, {self.size}); got [{idx.min()}, {idx.max()}]")
        if len(np.unique(idx)) != len(idx):
            raise InvalidArgumentError("pool indices to label must be distinct; a query returned duplicates")
        again = idx[self._mask[idx]]
        if again.size:
            raise InvalidArgumentError(f"{again.size} of these images are labeled already (e.g. {again[:5].tolist()}): "
                                       "query only from pool.unlabeled")
        self._mask[idx] = True
        self._order.extend(idx.tolist())

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"size", "labeled"}``."""
        return {"size": self.size, "labeled": list(self._order)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> LabeledPool:
        return cls(state["size"], state["labeled"])

    def __repr__(self) -> str:
        return f"LabeledPool(size={self.size}, labeled={len(self)})"
