"""Statistics fitted on training data, with one ``update`` / ``compute`` / ``sync`` protocol.

* :class:`MaxLogitMean`: the target M of the "-M" losses, the mean over the training set of f's
  maximum logit (paper, Appendix C.4.1).
* The scalers (:mod:`timm_introspect.core.scaling`): a running max of absolute values (exact), or float64 sums
  for standardization.

``update`` folds in a batch; ``sync`` reduces across processes when ``torch.distributed`` is
initialized (each process having seen its own shard), ``compute`` gives the result. Both are exact
and independent of batch order and process count: a max is, and M is summed with ``math.fsum`` (an
exactly rounded sum), so ``IntrospectiveHead.fit`` and the training pipeline, on one process or many,
get bitwise the same M and scale from the same images.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.distributed as dist

from ..errors import DataError

__all__ = ["MaxLogitMean", "distributed_world", "fit_target", "sync_max", "sync_sum"]


def distributed_world() -> int:
    """The number of processes ``torch.distributed`` runs (1 when it is not initialized)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def sync_max(tensor: torch.Tensor) -> None:
    """In place: the elementwise max of ``tensor`` over all processes (nothing with one process)."""
    if distributed_world() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)


def sync_sum(tensor: torch.Tensor) -> None:
    """In place: the elementwise sum of ``tensor`` over all processes (nothing with one process)."""
    if distributed_world() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)


def _gather_1d(values: torch.Tensor) -> torch.Tensor:
    """All processes' 1-d ``values`` (of any lengths), concatenated in rank order."""
    world = distributed_world()
    if world == 1:
        return values
    backend_device = values.device
    size = torch.tensor([values.numel()], device=backend_device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros(longest, dtype=values.dtype, device=backend_device)
    padded[: values.numel()] = values
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes, strict=False)])


class MaxLogitMean:
    """Mean over images of the maximum logit, ``mean_i max_j z_ij``: the paper's target M.

    Keeps the per-image maxima (4 bytes per image) and sums them exactly at :meth:`compute`, so the
    result does not depend on how the images were batched or split across processes.

    >>> m = MaxLogitMean()
    >>> m.update(torch.tensor([[1.0, 3.0], [2.0, 0.0]]))
    >>> m.compute()
    2.5
    """

    def __init__(self) -> None:
        self._values: list[torch.Tensor] = []

    def reset(self) -> None:
        self._values = []

    @torch.no_grad()
    def update(self, logits: torch.Tensor) -> None:
        """Fold in a batch of logits ``(B, N)``."""
        if logits.dim() != 2:
            raise DataError(f"expected logits of shape (B, N), got {tuple(logits.shape)}")
        self._values.append(logits.detach().float().amax(-1).cpu())

    def sync(self) -> None:
        """Gather every process's maxima (when ``torch.distributed`` is initialized)."""
        if distributed_world() > 1:
            values = torch.cat(self._values) if self._values else torch.zeros(0)
            device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
            self._values = [_gather_1d(values.to(device)).cpu()]

    @property
    def count(self) -> int:
        return sum(v.numel() for v in self._values)

    def compute(self) -> float:
        """The mean maximum logit, exactly rounded; raises :class:`DataError` when nothing was seen."""
        if self.count == 0:
            raise DataError("M is the mean max-logit over training images, but no images were seen: pass a "
                             "non-empty iterable of training images")
        values = torch.cat(self._values).double()
        if not torch.isfinite(values).all():
            bad = int((~torch.isfinite(values)).sum())
            raise DataError(f"{bad} of {values.numel()} images give a non-finite maximum logit: M cannot be "
                             "estimated; check the images (NaN or inf values) and f's weights")
        return math.fsum(values.tolist()) / values.numel()


@torch.no_grad()
def fit_target(logits: Iterable[torch.Tensor], sync: bool = True) -> float:
    """Target M of the "-M" losses from batches of f's logits ``(B, N)``: :class:`MaxLogitMean` over all of them.

    ``sync`` reduces over processes (each process having seen its own shard); pass ``False`` when every
    process already saw every batch (e.g. gathered logits).
    """
    m = MaxLogitMean()
    for batch in logits:
        m.update(batch)
    if sync:
        m.sync()
    return m.compute()
