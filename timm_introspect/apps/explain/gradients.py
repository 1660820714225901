"""Gradients of chosen logit combinations at a layer, by autograd: the generic path.

For Grad-CAM only the spatial mean of the gradient is needed (the channel weights alpha). The gradient of
CE(z, Q) w.r.t. the logits is ``softmax(z) - e_Q``, so every contrastive weight is ``a(p) - a(e_Q)``, where
``a(v)`` is the weight vector of the logit combination ``v . z``: one backward pass (over the whole batch)
per class needed and one for ``p``, never one per image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ...errors import InvalidArgumentError

__all__ = ["capture_output", "vjp_weights"]

#: classes per batched backward pass (bounds the memory of is_grads_batched)
CHUNK = 32


@contextmanager
def capture_output(module: nn.Module, name: str) -> Iterator[list[torch.Tensor]]:
    """While active, ``module``'s output is replaced by a grad-enabled copy, collected in the yielded list."""
    outputs: list[torch.Tensor] = []

    def hook(mod: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        if not isinstance(output, torch.Tensor):
            raise InvalidArgumentError(f"target layer {name} returns {type(output).__name__}, not a tensor: name a "
                                       "layer whose output is the feature map (e.g. a block or a norm layer)")
        leaf = output.detach().requires_grad_(True)
        outputs.append(leaf)
        return leaf

    handle = module.register_forward_hook(hook)
    try:
        yield outputs
    finally:
        handle.remove()


def _vjp(out: torch.Tensor, inp: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """``(R, *inp.shape)``: d(v . out)/d inp for each of the R vectors ``(R, *out.shape)``."""
    try:
        (grads,) = torch.autograd.grad(out, inp, vectors, retain_graph=True, is_grads_batched=True, allow_unused=True)
    except RuntimeError:  # an op without a batching rule: one backward per vector
        grads = [torch.autograd.grad(out, inp, v, retain_graph=True, allow_unused=True)[0] for v in vectors]
        grads = None if grads[0] is None else torch.stack(grads)
    if grads is None:
        return torch.zeros(vectors.shape[0], *inp.shape, dtype=inp.dtype, device=inp.device)
    return grads


def vjp_weights(logits: torch.Tensor, inp: torch.Tensor, classes: torch.Tensor, probs: torch.Tensor,
                reduce: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Channel weights of the logit of each class in ``classes`` ``(S,)`` and of ``probs . z``, through autograd.

    Args:
        logits: ``(B, N)``, computed from ``inp`` with the graph kept.
        inp: the tensor the gradients are taken at.
        classes: class indices ``(S,)``.
        probs: ``(B, N)`` softmax of the logits (a constant).
        reduce: maps gradients ``(R, *inp.shape)`` to weights ``(R, B, C)`` (the spatial mean).

    Returns:
        ``(B, S, C)`` weights of ``z_j`` for each class j, and ``(B, C)`` weights of ``sum_j p_j z_j``.
    """
    batch, num_classes = logits.shape
    eye = torch.eye(num_classes, dtype=logits.dtype, device=logits.device)
    rows = []
    for start in range(0, len(classes), CHUNK):
        chosen = classes[start : start + CHUNK]
        vectors = eye[chosen][:, None, :].expand(len(chosen), batch, num_classes)
        rows.append(reduce(_vjp(logits, inp, vectors)))
    p_weights = reduce(_vjp(logits, inp, probs.to(logits.dtype)[None]))[0]
    return torch.cat(rows).transpose(0, 1), p_weights
