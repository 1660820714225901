"""Running f with hooks on its classifier layer(s): what r_x is computed from.

:func:`run_with_hooks` records, for every call of a classifier layer, its input h and its output as a
grad-enabled leaf; :func:`output_grads` turns the loss derivative delta = dJ/dz into dJ/d(output) per
call, through whatever follows the classifier (pooling, the averaging of two heads). f's parameters
are frozen and x needs no grad, so autograd records only that tail.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import InputShapeError, UnsupportedClassifierError
from .classifier import ClassifierLayer

__all__ = ["Calls", "output_grads", "run_with_hooks"]

#: classifier name -> one ``(h, output leaf)`` per call of the layer
Calls = dict[str, list[tuple[torch.Tensor, torch.Tensor]]]


def run_with_hooks(model: nn.Module, classifiers: Sequence[ClassifierLayer], x: torch.Tensor, num_classes: int,
                   input_size: tuple[int, ...]) -> tuple[torch.Tensor, Calls]:
    """f(x), with each classifier call's input h and its output as a grad-enabled leaf."""
    calls: Calls = {c.name: [] for c in classifiers}
    # the hooks sit on modules other threads may run at the same time (one head or model used from several
    # threads): each call records only its own thread's forward and leaves the others' outputs alone
    owner = threading.get_ident()

    def hook_for(name: str):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            if threading.get_ident() != owner:
                return None
            if len(args) != 1 or not isinstance(output, torch.Tensor):
                raise UnsupportedClassifierError(
                    f"classifier {name} takes {len(args)} inputs / returns {type(output).__name__}; "
                    "introspection needs one tensor in and one tensor out"
                )
            leaf = output.detach().requires_grad_(True)
            calls[name].append((args[0].detach(), leaf))
            return leaf

        return hook

    handles = [c.module.register_forward_hook(hook_for(c.name)) for c in classifiers]
    try:
        with torch.inference_mode(False), torch.enable_grad():
            logits = model(x)
    except Exception as err:
        shape_error = isinstance(err, (RuntimeError, AssertionError, ValueError)) and not isinstance(
            err, (torch.OutOfMemoryError, UnsupportedClassifierError))
        if tuple(x.shape[1:]) != tuple(input_size) and shape_error:
            raise InputShapeError(
                f"the model failed on input of shape {tuple(x.shape)}; it expects "
                f"(B, {', '.join(map(str, input_size))}). "
                "Preprocess images with timm.data.create_transform(**timm.data.resolve_model_data_config(model)). "
                f"The model said: {type(err).__name__}: {err}"
            ) from err
        raise
    finally:
        for handle in handles:
            handle.remove()
    if not isinstance(logits, torch.Tensor) or logits.shape != (x.shape[0], num_classes):
        raise UnsupportedClassifierError(
            f"the model returned {type(logits).__name__} of shape {getattr(logits, 'shape', None)}; "
            f"introspection needs logits of shape (B, {num_classes})"
        )
    if not any(calls.values()):
        raise UnsupportedClassifierError(
            f"the classifier layer(s) {list(calls)} were not called by the model's forward()")
    return logits, calls


def output_grads(logits: torch.Tensor, calls: Calls, delta: torch.Tensor) -> Calls:
    """For each classifier call, ``(h, dJ/d(output))`` given ``delta = dJ/dz``; calls that do not reach the
    logits are dropped."""
    leaves = [leaf for name in calls for _, leaf in calls[name]]
    if len(leaves) == 1 and logits is leaves[0]:
        grads = [delta]  # the classifier output is the logits: dJ/dy = dJ/dz
    else:  # dJ/dy through what follows the classifier (pooling, head averaging): cheap
        grads = torch.autograd.grad(logits, leaves, grad_outputs=delta.to(logits.dtype), allow_unused=True)
    grads_iter = iter(grads)
    return {name: [(h, g) for (h, _), g in zip(layer_calls, grads_iter, strict=False) if g is not None]
            for name, layer_calls in calls.items()}
