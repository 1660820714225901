"""The introspective path x -> f -> r_x -> feature scaling -> H, differentiable w.r.t. the input image.

:class:`~timm_introspect.IntrospectiveHead` computes r_x from a detached copy of f's activations: f is
frozen and nothing upstream of the classifier needs a gradient, so its forward is not differentiable
w.r.t. the image. ODIN's input perturbation on H and an adaptive attack on H need exactly that gradient:
through H, the scaling, r_x = delta(z) h^T (both factors depend on x) and f. :func:`introspective_pass`
runs the same computation as ``head(x)`` (equal outputs, checked in the tests) and keeps the graph when
``x`` requires grad; without it, it costs what ``head(x)`` costs. It also returns what the detectors read:
f's logits and penultimate features, r_x in factored form and H's hidden activations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ...core.features import Factors, weight_grad
from ...core.losses import loss_delta
from ...errors import UnsupportedClassifierError
from ...model.head import IntrospectiveHead, layer_factors

__all__ = ["IntrospectiveHidden", "IntrospectiveLogits", "IntrospectivePass", "Penultimate", "introspective_pass"]


@dataclass
class IntrospectivePass:
    """What one pass of the introspective path gives.

    Attributes:
        base_logits: ``(B, N)`` f's logits.
        logits: ``(B, N)`` H's logits.
        factors: raw (unscaled) r_x per linear / 1x1-conv classifier layer: ``(delta (B, S, N), h (B, S, d))``,
            ``r_x = sum_s delta_s h_s^T``.
        penultimate: ``(B, d)`` f's penultimate features (the input of its classifier) for a model with one
            pooled linear classifier, else ``None``.
        hidden: H's hidden activations, first to last (the inputs of its ``nn.Linear`` layers after the
            first); ``hidden[-1]`` feeds H's output layer.
        head_output_is_linear: whether H's logits are the output of an ``nn.Linear`` fed by ``hidden[-1]``.
    """

    base_logits: torch.Tensor
    logits: torch.Tensor
    factors: Factors
    penultimate: torch.Tensor | None
    hidden: list[torch.Tensor] = field(default_factory=list)
    head_output_is_linear: bool = False


def _run_f(head: IntrospectiveHead, x: torch.Tensor, differentiable: bool):
    """f(x) with each classifier call's ``(input, output)``; without a graph to x, outputs become grad leaves."""
    calls: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {c.name: [] for c in head.classifiers}

    def hook_for(name: str):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            if len(args) != 1 or not isinstance(output, torch.Tensor):
                raise UnsupportedClassifierError(f"classifier {name} must take one tensor and return one tensor")
            if differentiable:
                calls[name].append((args[0], output))
                return None
            leaf = output.detach().requires_grad_(True)
            calls[name].append((args[0].detach(), leaf))
            return leaf

        return hook

    handles = [c.module.register_forward_hook(hook_for(c.name)) for c in head.classifiers]
    try:
        logits = head.model(x)
    finally:
        for handle in handles:
            handle.remove()
    if not any(calls.values()):
        raise UnsupportedClassifierError(f"the classifier layer(s) {list(calls)} were not called by f's forward()")
    return logits, calls


def _run_h(head: IntrospectiveHead, net_input, hidden: bool) -> tuple[torch.Tensor, list[torch.Tensor], bool]:
    """H's logits, and the inputs of its ``nn.Linear`` layers after the first (its hidden activations)."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    linears = [m for m in head.introspective_net.modules() if isinstance(m, nn.Linear)] if hidden else []
    handles = [m.register_forward_hook(lambda m, a, out: seen.append((a[0], out))) for m in linears]
    try:
        logits = head.introspective_net(net_input)
    finally:
        for handle in handles:
            handle.remove()
    acts = [a for a, _ in seen if a is not net_input]
    return logits, acts, bool(seen) and seen[-1][1] is logits


def introspective_pass(head: IntrospectiveHead, x: torch.Tensor, hidden: bool = True) -> IntrospectivePass:
    """Run f and H on normalized images ``x`` (as ``head(x)``), differentiably when ``x`` requires grad.

    Without a gradient to ``x``, r_x is computed as :class:`IntrospectiveHead` does (f's activations detached);
    H runs in the caller's grad mode either way.

    Args:
        head: a fitted introspective model.
        x: ``(B, C, H, W)`` images, normalized for f.
        hidden: also record H's hidden activations.
    """
    checked = head._check_input(x)  # the head's checks and dtype conversion, on a detached copy
    grad_mode = torch.is_grad_enabled()
    differentiable = bool(x.requires_grad and grad_mode)
    x = x.to(checked.dtype) if differentiable else checked
    target = head._target()
    with torch.inference_mode(False), torch.enable_grad():
        logits, calls = _run_f(head, x, differentiable)
        delta = loss_delta(head.loss, logits.to(torch.promote_types(logits.dtype, torch.float32)), target)
        if not differentiable:
            delta = delta.detach()
        outputs = [y for name in calls for _, y in calls[name]]
        if len(outputs) == 1 and outputs[0] is logits:
            grads: list[torch.Tensor | None] = [delta]
        else:  # dJ/d(output) through what follows the classifier (pooling, averaging of two heads)
            grads = list(torch.autograd.grad(logits, outputs, grad_outputs=delta.to(logits.dtype),
                                             create_graph=differentiable, allow_unused=True))
    grads_iter = iter(grads)
    pairs = {name: [(h, g) for (h, _), g in zip(layer_calls, grads_iter, strict=False) if g is not None]
             for name, layer_calls in calls.items()}
    with torch.set_grad_enabled(grad_mode):  # H (and its parameters) in the caller's grad mode, as in head(x)
        factors: Factors = {}
        for layer in head.classifiers:
            if layer.kind == "functional":
                continue
            factors[layer.name] = layer_factors(layer, pairs[layer.name], x)
        if head.takes_factors:
            if len(factors) != len(head.classifiers):
                raise UnsupportedClassifierError("an H on factors needs linear or 1x1-conv classifiers")
            net_input = head.scaler(factors)
        else:
            parts = []
            for layer in head.classifiers:
                grads_w = [weight_grad(layer, h, g) for h, g in pairs[layer.name]]
                if not grads_w:
                    grads_w = [x.new_zeros(x.shape[0], *layer.weight.shape)]
                parts.append(sum(grads_w[1:], grads_w[0]).flatten(1))
            net_input = head.scaler(torch.cat(parts, 1).to(head.target_value.dtype))
        h_logits, acts, linear_out = _run_h(head, net_input, hidden)
    penultimate = None
    single = head.classifiers[0]
    if len(head.classifiers) == 1 and single.kind == "linear" and len(pairs[single.name]) == 1:
        h = pairs[single.name][0][0]
        penultimate = h if h.dim() == 2 else None
    base = logits if differentiable else logits.detach()
    return IntrospectivePass(base, h_logits, factors, penultimate, acts, linear_out)


class IntrospectiveLogits(nn.Module):
    """H's logits as a model of the image: ``x -> H(scale(r_x(f, x)))``, differentiable w.r.t. ``x``.

    Use it wherever a detector takes a model, e.g. ``pytorch_ood.detector.ODIN(IntrospectiveLogits(head))``.
    """

    def __init__(self, head: IntrospectiveHead) -> None:
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return introspective_pass(self.head, x, hidden=False).logits


class IntrospectiveHidden(nn.Module):
    """H's hidden activations as an encoder of the image (``layer=-1``: the input of H's output layer).

    H's first layer is a learned linear map of the scaled r_x, so ``layer=0`` is a projection of scaled r_x
    (after H's activation): feature-space detectors (Mahalanobis, KNN, ViM) read r_x through it.
    """

    def __init__(self, head: IntrospectiveHead, layer: int = -1) -> None:
        super().__init__()
        self.head = head
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        acts = introspective_pass(self.head, x).hidden
        if not acts:
            raise UnsupportedClassifierError(f"H ({type(self.head.introspective_net).__name__}) has no hidden layer "
                                             "read through nn.Linear: feature detectors on H need one")
        return acts[self.layer]


class Penultimate(nn.Module):
    """f's penultimate features ``(B, d)``, by timm's protocol:
    ``forward_head(forward_features(x), pre_logits=True)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)
