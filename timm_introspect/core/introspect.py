"""The introspective pass: r_x of a batch from one forward pass of f (the one place it is computed).

:func:`introspect` runs f with hooks on its classifier layer(s), takes the loss derivative
delta = dJ/dz in closed form, and carries it back to every classifier call's output (through whatever
follows the classifier: pooling, the averaging of two heads). What it returns, :class:`Introspection`,
gives r_x in factored form (``delta``, ``h``) or materialized (``dJ/dW``) on demand.

* f runs in eval mode whatever its mode (BatchNorm uses its running statistics, dropout is off; f's
  modes are restored after the pass);
* by default f's activations are detached: f's parameters are frozen and x needs no gradient, so autograd
  records only the classifier's tail. With ``differentiable=True`` the graph to x is kept (ODIN's input
  perturbation, adversarial attacks on H): both factors of r_x = delta(z) h^T depend on x;
* :func:`introspect_outputs` builds the same :class:`Introspection` from f's logits and its classifier's
  input, already computed (a model with one pooled linear classifier), without running f again.

Everything downstream (the head's forward, H's training features, OOD detectors, active-learning views,
the benchmarks) reads r_x through these two functions.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InputShapeError, UnsupportedClassifierError
from .classifier import ClassifierLayer
from .features import Factors, promote, weight_grad
from .losses import loss_delta

__all__ = ["Calls", "Introspection", "eval_mode", "introspect", "introspect_outputs", "output_grads", "run_with_hooks"]

#: classifier name -> one ``(h, output)`` per call of the layer
Calls = dict[str, list[tuple[torch.Tensor, torch.Tensor]]]


class eval_mode:  # noqa: N801 (a context manager, named like torch.no_grad)
    """``with eval_mode(model):`` f in eval mode, every module's own mode restored after (no-op in eval mode)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modes: dict[nn.Module, bool] | None = None

    def __enter__(self) -> None:
        if any(m.training for m in self.model.modules()):
            self.modes = {m: m.training for m in self.model.modules()}
            self.model.eval()

    def __exit__(self, *exc) -> None:
        if self.modes is not None:
            for m, mode in self.modes.items():
                m.training = mode


def run_with_hooks(model: nn.Module, classifiers: Sequence[ClassifierLayer], x: torch.Tensor, num_classes: int,
                   input_size: tuple[int, ...], differentiable: bool = False) -> tuple[torch.Tensor, Calls]:
    """f(x) in eval mode, with each classifier call's input h and output.

    Without ``differentiable``, h is detached and the output becomes a grad-enabled leaf (only the
    classifier's tail is recorded); with it, both stay in the graph to ``x``.
    """
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
            if differentiable:
                calls[name].append((args[0], output))
                return None
            leaf = output.detach().requires_grad_(True)
            calls[name].append((args[0].detach(), leaf))
            return leaf

        return hook

    handles = [c.module.register_forward_hook(hook_for(c.name)) for c in classifiers]
    try:
        with eval_mode(model), torch.inference_mode(False), torch.enable_grad():
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


def output_grads(logits: torch.Tensor, calls: Calls, delta: torch.Tensor, create_graph: bool = False) -> Calls:
    """For each classifier call, ``(h, dJ/d(output))`` given ``delta = dJ/dz``; calls that do not reach the
    logits are dropped. ``create_graph`` keeps the graph of the result (a differentiable pass)."""
    leaves = [leaf for name in calls for _, leaf in calls[name]]
    if len(leaves) == 1 and logits is leaves[0]:
        grads = [delta]  # the classifier output is the logits: dJ/dy = dJ/dz
    else:  # dJ/dy through what follows the classifier (pooling, head averaging): cheap
        with torch.inference_mode(False), torch.enable_grad():
            grads = torch.autograd.grad(logits, leaves, grad_outputs=delta.to(logits.dtype),
                                        create_graph=create_graph, allow_unused=True)
    grads_iter = iter(grads)
    return {name: [(h, g) for (h, _), g in zip(layer_calls, grads_iter, strict=False) if g is not None]
            for name, layer_calls in calls.items()}


def _layer_factors(layer: ClassifierLayer, calls: Sequence[tuple[torch.Tensor, torch.Tensor]],
                   batch: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(delta (B, S, N), h (B, S, d))`` of one linear / 1x1-conv layer over the S positions of all its calls."""
    deltas, hs = [], []
    for h, g in calls:
        if layer.kind == "conv1x1":  # positions are the spatial ones: (B, C, H, W) -> (B, HW, C)
            g, h = g.flatten(2).transpose(1, 2), h.flatten(2).transpose(1, 2)
        g, h = promote(g, h)
        deltas.append(g.reshape(g.shape[0], -1, g.shape[-1]))
        hs.append(h.reshape(h.shape[0], -1, h.shape[-1]))
    if not deltas:  # the layer was not called on this input
        n, d = layer.weight.shape[:2]
        deltas, hs = [like.new_zeros(batch, 1, n)], [like.new_zeros(batch, 1, d)]
    return torch.cat(deltas, 1), torch.cat(hs, 1)


@dataclass
class Introspection:
    """One introspective pass over a batch: f's logits and, per classifier layer, ``(h, dJ/d(output))``
    of each of its calls. r_x comes from it on demand, factored or materialized.

    Attributes:
        logits: ``(B, N)`` f's logits (in the graph to x for a differentiable pass, else detached).
        pairs: classifier name -> ``[(h, dJ/d(output))]``, one per call of the layer.
        classifiers: the classifier layers, in timm's order.
    """

    logits: torch.Tensor
    pairs: Calls
    classifiers: Sequence[ClassifierLayer]

    @property
    def batch(self) -> int:
        return self.logits.shape[0]

    def factors(self, skip_functional: bool = False) -> Factors:
        """r_x in factored form: per linear / 1x1-conv layer ``(delta (B, S, N), h (B, S, d))`` over S
        positions, ``r_x = sum_s delta[:, s, :, None] * h[:, s, None, :]``.

        Raises :class:`UnsupportedClassifierError` for a classifier without a rank-one gradient, unless
        ``skip_functional`` leaves such layers out.
        """
        factors: Factors = {}
        for layer in self.classifiers:
            if layer.kind == "functional":
                if skip_functional:
                    continue
                raise UnsupportedClassifierError(
                    f"classifier {layer.name} ({type(layer.module).__name__}) has no rank-one gradient: use a "
                    "materialized H (IntrospectiveMLP) for this model"
                )
            factors[layer.name] = _layer_factors(layer, self.pairs[layer.name], self.batch, self.logits)
        return factors

    def features(self) -> dict[str, torch.Tensor]:
        """r_x per classifier layer: ``(B, *W.shape)``, the per-sample dJ/dW (summed over a layer's calls)."""
        out = {}
        for layer in self.classifiers:
            parts = [weight_grad(layer, h, g) for h, g in self.pairs[layer.name]]
            if not parts:
                parts = [self.logits.new_zeros(self.batch, *layer.weight.shape, dtype=torch.float32)]
            out[layer.name] = sum(parts[1:], parts[0])
        return out

    def flat(self) -> torch.Tensor:
        """r_x flattened and concatenated over classifier layers: ``(B, F)``."""
        return torch.cat([f.flatten(1) for f in self.features().values()], dim=1)

    @property
    def penultimate(self) -> torch.Tensor | None:
        """``(B, d)`` f's penultimate features (its classifier's input) for one pooled linear classifier
        called once, else ``None``."""
        if len(self.classifiers) != 1 or self.classifiers[0].kind != "linear":
            return None
        calls = self.pairs[self.classifiers[0].name]
        return calls[0][0] if len(calls) == 1 and calls[0][0].dim() == 2 else None


def _delta(loss: str, logits: torch.Tensor, target: float | torch.Tensor, differentiable: bool) -> torch.Tensor:
    z = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return loss_delta(loss, z if differentiable else z.detach(), target)


def introspect(model: nn.Module, classifiers: Sequence[ClassifierLayer], x: torch.Tensor, loss: str,
               target: float | torch.Tensor, num_classes: int, input_size: tuple[int, ...],
               differentiable: bool = False) -> Introspection:
    """The introspective pass of f on a batch ``x`` of normalized images.

    Args:
        model: f (frozen); run in eval mode.
        classifiers: its classifier layers (:func:`~timm_introspect.core.classifier.find_classifiers`).
        x: ``(B, C, H, W)``.
        loss, target: the introspection loss J and its target constant c (target vector ``c * 1_N``).
        num_classes, input_size: f's, for the shape checks and error messages.
        differentiable: keep the graph to ``x`` (x must require grad), else r_x is computed from detached
            activations.
    """
    with torch.inference_mode(False), torch.enable_grad():
        logits, calls = run_with_hooks(model, classifiers, x, num_classes, input_size, differentiable)
        delta = _delta(loss, logits, target, differentiable)
        pairs = output_grads(logits, calls, delta, create_graph=differentiable)
    return Introspection(logits if differentiable else logits.detach(), pairs, classifiers)


def introspect_outputs(classifier: ClassifierLayer, logits: torch.Tensor, h: torch.Tensor, loss: str,
                       target: float | torch.Tensor) -> Introspection:
    """The same :class:`Introspection` as :func:`introspect`, from f's logits ``(B, N)`` and its classifier's
    input ``h`` ``(B, d)`` computed earlier, for a model whose logits are one linear classifier's output."""
    if classifier.kind != "linear":
        raise UnsupportedClassifierError(
            f"r_x from f's outputs needs one linear classifier; {classifier.name} is {classifier.kind}: "
            "run the introspective pass on images instead")
    if logits.dim() != 2 or h.dim() != 2 or logits.shape[0] != h.shape[0]:
        raise InputShapeError(f"expected logits (B, N) and classifier inputs (B, d) of one batch; got "
                              f"{tuple(logits.shape)} and {tuple(h.shape)}")
    delta = _delta(loss, logits, target, differentiable=False)
    return Introspection(logits.detach(), {classifier.name: [(h.detach(), delta)]}, [classifier])
